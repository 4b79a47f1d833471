//! Whole-store snapshots, for raftd to catch up a member that is far
//! behind or new. The sender streams a point-in-time copy of every
//! keyspace in bounded chunks from a blocking thread (never the whole
//! store in memory). The receiver writes them into a staging database next
//! to the live one; activation marks the staging complete and storaged
//! restarts itself, swapping the directories before it opens the store, so
//! a crash at any point leaves either the old store or the new one.

use std::path::{Path, PathBuf};

use fjall::{KeyspaceCreateOptions, PersistMode, Readable, SingleWriterTxDatabase};
use tokio::sync::mpsc;

use crate::keys;
use crate::record::Record;
use crate::schema::{
    lease_attachment, KEYSPACES, META_ALARMS, META_APPLIED, META_KEYSPACE, META_MEMBERSHIP,
    META_MEMBERSHIP_LOG_ID,
};
use crate::store::Store;
use crate::StoreError;
use common::proto::storage::{SnapshotChunk, SnapshotEntry, StatusResponse};

/// Bytes of entries per chunk.
const CHUNK_BYTES: usize = 1 << 20;
/// Marks a staged snapshot as complete and to be activated.
const ACTIVATE: &str = "ACTIVATE";

pub fn staging_dir(live: &Path) -> PathBuf {
    live.with_extension("snapshot")
}

/// Stream a point-in-time copy of `store` into `tx`, first chunk with the
/// copy's applied state. Runs on a blocking thread.
pub fn send(store: &Store, tx: mpsc::Sender<Result<SnapshotChunk, tonic::Status>>) {
    let result = (|| -> Result<(), StoreError> {
        let snap = store.db.read_tx();
        let status = store.status_at(&snap)?;
        let mut chunk = SnapshotChunk {
            status: Some(status),
            ..Default::default()
        };
        let mut bytes = 0;
        for (i, ks) in store.keyspaces().iter().enumerate() {
            for g in snap.iter(ks) {
                let (k, v) = g.into_inner()?;
                bytes += k.len() + v.len();
                chunk.entries.push(SnapshotEntry {
                    keyspace: i as u32,
                    key: k.to_vec(),
                    value: v.to_vec(),
                });
                if bytes >= CHUNK_BYTES {
                    let full = std::mem::take(&mut chunk);
                    if tx.blocking_send(Ok(full)).is_err() {
                        return Ok(()); // the receiver went away
                    }
                    bytes = 0;
                }
            }
        }
        chunk.last = true;
        let _ = tx.blocking_send(Ok(chunk));
        Ok(())
    })();
    if let Err(e) = result {
        let _ = tx.blocking_send(Err(e.into()));
    }
}

/// A snapshot being received into the staging directory.
pub struct Staging {
    db: SingleWriterTxDatabase,
    keyspaces: Vec<fjall::SingleWriterTxKeyspace>,
    status: Option<StatusResponse>,
    complete: bool,
}

impl Staging {
    /// A fresh staging database (any earlier one is discarded).
    pub fn create(live: &Path) -> Result<Staging, StoreError> {
        let dir = staging_dir(live);
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        let db = SingleWriterTxDatabase::builder(&dir)
            .cache_size(16 << 20)
            .worker_threads(common::config::FJALL_WORKER_THREADS)
            .open()?;
        let keyspaces = KEYSPACES
            .iter()
            .map(|name| db.keyspace(name, KeyspaceCreateOptions::default))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Staging {
            db,
            keyspaces,
            status: None,
            complete: false,
        })
    }

    pub fn write(&mut self, chunk: SnapshotChunk) -> Result<(), StoreError> {
        if let Some(s) = chunk.status {
            self.status = Some(s);
        }
        let mut tx = self.db.write_tx();
        for e in chunk.entries {
            let ks = self
                .keyspaces
                .get(e.keyspace as usize)
                .ok_or(StoreError::CorruptKey)?;
            tx.insert(ks, e.key, e.value);
        }
        tx.commit()?;
        self.complete |= chunk.last;
        Ok(())
    }

    /// For a restore into a new cluster: drop what belongs to the old
    /// cluster's raft (applied log id, membership) and its alarms; the data
    /// and revisions stay. The new cluster's log starts at index 1.
    pub fn forget_raft_state(&mut self) -> Result<(), StoreError> {
        let meta = &self.keyspaces[META_KEYSPACE];
        let mut tx = self.db.write_tx();
        for key in [
            META_APPLIED,
            META_MEMBERSHIP,
            META_MEMBERSHIP_LOG_ID,
            META_ALARMS,
        ] {
            tx.remove(meta, key);
        }
        tx.commit()?;
        if let Some(s) = self.status.as_mut() {
            s.applied = None;
            s.membership.clear();
            s.membership_log_id = None;
            s.alarms.clear();
        }
        Ok(())
    }

    /// Attach every key whose newest revision is live and names an existing
    /// lease to that lease (`lease_keys`), as etcd does when it restores
    /// its store. One pass over the staged key index, in bounded batches.
    pub fn attach_leases(&mut self) -> Result<(), StoreError> {
        let [index, _, leases, lease_keys, _, _] = &self.keyspaces[..] else {
            return Err(StoreError::CorruptKey);
        };
        let snap = self.db.read_tx();
        let mut batch = Vec::new();
        let mut last: Option<Vec<u8>> = None;
        for g in snap.iter(index) {
            let (k, v) = g.into_inner()?;
            let (esc, _) = keys::split_index_key(&k).ok_or(StoreError::CorruptKey)?;
            if last.as_deref() == Some(esc) {
                continue; // an older revision of the same key
            }
            last = Some(esc.to_vec());
            let rec = Record::decode(&v)?;
            if rec.tombstone
                || rec.lease == 0
                || !snap.contains_key(leases, rec.lease.to_be_bytes())?
            {
                continue;
            }
            let key = keys::unescape(esc).ok_or(StoreError::CorruptKey)?;
            batch.push(lease_attachment(rec.lease, &key));
            if batch.len() >= 4096 {
                self.insert_all(lease_keys, std::mem::take(&mut batch))?;
            }
        }
        self.insert_all(lease_keys, batch)
    }

    fn insert_all(
        &self,
        ks: &fjall::SingleWriterTxKeyspace,
        keys: Vec<Vec<u8>>,
    ) -> Result<(), StoreError> {
        let mut tx = self.db.write_tx();
        for k in keys {
            tx.insert(ks, k, b"");
        }
        tx.commit()?;
        Ok(())
    }

    /// Make the staging durable; its applied state.
    pub fn finish(self) -> Result<StatusResponse, StoreError> {
        if !self.complete {
            return Err(StoreError::IncompleteSnapshot);
        }
        self.db.persist(PersistMode::SyncAll)?;
        self.status.ok_or(StoreError::IncompleteSnapshot)
    }
}

/// Mark the staged snapshot for activation at the next start.
pub fn mark_for_activation(live: &Path) -> Result<(), StoreError> {
    let dir = staging_dir(live);
    if !dir.exists() {
        return Err(StoreError::IncompleteSnapshot);
    }
    let marker = dir.join(ACTIVATE);
    std::fs::write(&marker, b"")?;
    // The staging tree and its name in the data dir, with the marker: fjall
    // leaves its keyspace directories' names unsynced.
    common::durable::sync_tree(&dir)?;
    Ok(())
}

/// At start, before the store opens: a staged snapshot marked for
/// activation replaces the live store; an unmarked one is discarded.
pub fn settle(live: &Path) -> Result<(), StoreError> {
    let staged = staging_dir(live);
    let old = live.with_extension("old");
    if staged.exists() && staged.join(ACTIVATE).exists() {
        if old.exists() {
            std::fs::remove_dir_all(&old)?;
        }
        if live.exists() {
            std::fs::rename(live, &old)?;
        }
        std::fs::rename(&staged, live)?;
        std::fs::remove_file(live.join(ACTIVATE))?;
        common::durable::sync_dir(live)?;
        if let Some(parent) = live.parent() {
            common::durable::sync_dir(parent)?;
        }
        tracing::info!(dir = %live.display(), "activated the received snapshot");
    } else if staged.exists() {
        std::fs::remove_dir_all(&staged)?;
    }
    if old.exists() {
        std::fs::remove_dir_all(&old)?;
    }
    remove_exports(live);
    Ok(())
}

/// Where an etcd-format snapshot is built before it is streamed: a file
/// beside the store, removed when the returned guard drops.
pub fn export_file(live: &Path) -> ExportFile {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    ExportFile(live.with_extension(format!("{EXPORT_EXTENSION}{n}")))
}

const EXPORT_EXTENSION: &str = "etcd-snapshot.";

/// A temporary snapshot file, deleted on drop (after an error or a client
/// that went away too).
pub struct ExportFile(pub PathBuf);

impl Drop for ExportFile {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.0) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(file = %self.0.display(), error = %e, "cannot remove a snapshot file");
            }
        }
    }
}

/// Snapshot files a crash left behind.
fn remove_exports(live: &Path) {
    let (Some(dir), Some(name)) = (live.parent(), live.file_name()) else {
        return;
    };
    let prefix = format!("{}.{EXPORT_EXTENSION}", name.to_string_lossy());
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        if e.file_name().to_string_lossy().starts_with(&prefix) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}
