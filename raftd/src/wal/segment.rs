//! One segment file of the raft log: named by the index of its first
//! record, preallocated, and where each of its records starts.

use std::ffi::OsStr;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::record;

const SUFFIX: &str = ".wal";

/// `first` in zero-padded hex, so names sort as the indexes do.
pub fn file_name(first: u64) -> String {
    format!("{first:016x}{SUFFIX}")
}

/// The first index a segment file's name gives, if it is one's.
pub fn parse_name(name: &OsStr) -> Option<u64> {
    let hex = name.to_str()?.strip_suffix(SUFFIX)?;
    (hex.len() == 16)
        .then(|| u64::from_str_radix(hex, 16).ok())
        .flatten()
}

pub struct Segment {
    pub first: u64,
    pub path: PathBuf,
    pub file: Arc<File>,
    /// Where each record starts: entry `first + i`'s at `offsets[i]`.
    pub offsets: Vec<u64>,
    /// Where the next record goes.
    pub end: u64,
    /// The file's preallocated size.
    pub capacity: u64,
}

impl Segment {
    /// A new empty segment for entries from `first` on, `capacity` bytes
    /// allocated, its name durable.
    pub fn create(dir: &Path, first: u64, capacity: u64) -> io::Result<Segment> {
        let path = dir.join(file_name(first));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)?;
        preallocate(&file, capacity)?;
        file.sync_all()?;
        common::durable::sync_dir(dir)?;
        Ok(Segment {
            first,
            path,
            file: Arc::new(file),
            offsets: Vec::new(),
            end: 0,
            capacity,
        })
    }

    /// The segment file at `path`, holding its valid records (`verify`:
    /// see `record::scan`), and whether they stopped at a torn or damaged
    /// write.
    pub fn open(path: PathBuf, first: u64, verify: bool) -> io::Result<(Segment, bool)> {
        let file = OpenOptions::new().read(true).write(true).open(&path)?;
        let scan = record::scan(&file, first, verify)?;
        let capacity = file.metadata()?.len();
        let segment = Segment {
            first,
            path,
            file: Arc::new(file),
            offsets: scan.offsets,
            end: scan.end,
            capacity,
        };
        Ok((segment, scan.torn))
    }

    /// The index the next record here would have.
    pub fn next_index(&self) -> u64 {
        self.first + self.offsets.len() as u64
    }

    /// The index of the last record here.
    pub fn last_index(&self) -> Option<u64> {
        self.next_index()
            .checked_sub(1)
            .filter(|_| !self.offsets.is_empty())
    }

    /// Whether `bytes` more fit.
    pub fn fits(&self, bytes: u64) -> bool {
        self.end + bytes <= self.capacity
    }

    /// Write `records` (framed, starting at `starts` within them) after
    /// the last record, unsynced.
    pub fn append(&mut self, records: &[u8], starts: &[u64]) -> io::Result<()> {
        self.file.write_all_at(records, self.end)?;
        let end = self.end;
        self.offsets.extend(starts.iter().map(|s| end + s));
        self.end += records.len() as u64;
        Ok(())
    }

    /// Where records `from..to` are: their offset and length in bytes.
    pub fn span(&self, from: u64, to: u64) -> (u64, u64) {
        let at = |index: u64| {
            usize::try_from(index.saturating_sub(self.first))
                .ok()
                .and_then(|i| self.offsets.get(i).copied())
                .unwrap_or(self.end)
        };
        let start = at(from);
        (start, at(to) - start)
    }

    /// Keep only the records before `index`: the file is cut there and
    /// preallocated again (zeros after the last record, so nothing cut
    /// can be read back), durably.
    pub fn cut(&mut self, index: u64) -> io::Result<()> {
        let (at, _) = self.span(index, index);
        self.offsets
            .truncate(usize::try_from(index.saturating_sub(self.first)).unwrap_or(usize::MAX));
        self.end = at;
        self.file.set_len(at)?;
        preallocate(&self.file, self.capacity)?;
        // fsync, not fdatasync: the size comes back to what it was, and
        // the freed blocks must stay freed.
        self.file.sync_all()
    }
}

/// Give `file` `capacity` bytes of disk: allocated for real where the
/// filesystem can (so appends do not run out of space half-written, and
/// the file is laid out in one piece), else as a sparse length. A full
/// disk is an error here.
fn preallocate(file: &File, capacity: u64) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use nix::errno::Errno;
        use std::os::fd::AsRawFd;
        let len =
            i64::try_from(capacity).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        match nix::fcntl::fallocate(
            file.as_raw_fd(),
            nix::fcntl::FallocateFlags::empty(),
            0,
            len,
        ) {
            Ok(()) => return Ok(()),
            Err(Errno::EOPNOTSUPP | Errno::ENOSYS) => {}
            Err(e) => return Err(e.into()),
        }
    }
    if file.metadata()?.len() < capacity {
        file.set_len(capacity)?;
    }
    Ok(())
}
