//! triad's older backup format, which `Maintenance.Snapshot` streamed
//! before it sent etcd's bbolt backend (`bbolt`); `triad snapshot restore`
//! and `status` still read it, for files operators saved then. Also the
//! SHA-256 both formats end with. Layout: storaged's snapshot chunks, each framed as a 4-byte
//! big-endian length and an encoded `triad.storage.v1.SnapshotChunk` (the
//! last one marked `last`), zero padding to a multiple of 512 bytes (etcdctl
//! checks that the data before the hash is whole pages, as bolt files
//! are), and then, like etcd's, the SHA-256 of everything before it.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use prost::Message;
use sha2::{Digest, Sha256};

use crate::proto::storage::SnapshotChunk;

pub const HASH_LEN: usize = 32;
/// etcdctl wants the data before the hash to be a multiple of this.
pub const PAGE: usize = 512;

/// Zero bytes that bring `written` bytes of data to a whole page.
pub fn padding(written: usize) -> Vec<u8> {
    vec![0; (PAGE - written % PAGE) % PAGE]
}

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("snapshot file integrity check failed ({0})")]
    Integrity(&'static str),
    #[error("corrupt snapshot file: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// One chunk as it goes into the file.
pub fn frame(chunk: &SnapshotChunk) -> Vec<u8> {
    let body = chunk.encode_to_vec();
    let mut out = Vec::with_capacity(4 + body.len());
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

/// The running hash of a backup being written.
#[derive(Default)]
pub struct Hasher(Sha256);

impl Hasher {
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    pub fn finish(self) -> Vec<u8> {
        self.0.finalize().to_vec()
    }
}

/// Check a backup file's hash, reading it once in bounded pieces.
pub fn verify(path: &Path) -> Result<(), BackupError> {
    let mut f = File::open(path)?;
    let len = f.metadata()?.len();
    if len < HASH_LEN as u64 {
        return Err(BackupError::Integrity("file too short"));
    }
    let mut body = (&mut f).take(len - HASH_LEN as u64);
    let mut hasher = Sha256::new();
    std::io::copy(&mut body, &mut hasher)?;
    let mut stored = [0u8; HASH_LEN];
    f.read_exact(&mut stored)?;
    if hasher.finalize().as_slice() != stored {
        return Err(BackupError::Integrity("sha256 mismatch"));
    }
    Ok(())
}

/// The chunks of a verified backup file, one at a time.
pub fn chunks(path: &Path) -> Result<Chunks, BackupError> {
    let f = File::open(path)?;
    let body = f.metadata()?.len().saturating_sub(HASH_LEN as u64);
    Ok(Chunks {
        reader: BufReader::new(f).take(body),
        done: false,
    })
}

pub struct Chunks {
    reader: std::io::Take<BufReader<File>>,
    done: bool,
}

impl Iterator for Chunks {
    type Item = Result<SnapshotChunk, BackupError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let mut len = [0u8; 4];
        if self.reader.limit() == 0 {
            self.done = true;
            return None;
        }
        let chunk = (|| {
            self.reader.read_exact(&mut len)?;
            let mut frame = vec![0u8; u32::from_be_bytes(len) as usize];
            self.reader.read_exact(&mut frame)?;
            SnapshotChunk::decode(frame.as_slice()).map_err(|e| BackupError::Corrupt(e.to_string()))
        })();
        // After the last chunk only padding remains.
        if chunk.as_ref().map_or(true, |c| c.last) {
            self.done = true;
        }
        Some(chunk)
    }
}
