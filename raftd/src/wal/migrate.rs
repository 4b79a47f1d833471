//! A raft log kept by an older raftd (entries in the `log` keyspace of
//! raftd's fjall database) moved into segment files, once, at open, so an
//! upgraded member keeps its log.
//!
//! The segments are written in a staging directory, synced, and renamed
//! into place: a segment directory means the copy finished, and only then
//! is the keyspace deleted. A crash at any point leaves either the old log
//! whole or the new one.

use std::io;
use std::path::Path;

use fjall::{Database, KeyspaceCreateOptions, PersistMode};

use super::Wal;
use crate::codec::decode;
use crate::io_err;
use crate::types::{Entry, LogId};

/// Where the older raftd kept entries: index (u64 big-endian) to entry.
pub const LOG_KEYSPACE: &str = "log";

/// Entries copied per append.
const CHUNK: usize = 1024;

/// Move the entries above the purge mark from `db`'s `log` keyspace into
/// a segment directory `wal_dir` (inside `dir`, the database's), if the
/// keyspace is there.
pub fn from_fjall(
    db: &Database,
    dir: &Path,
    wal_dir: &Path,
    purged: Option<LogId>,
    segment_bytes: u64,
) -> io::Result<()> {
    if !db.keyspace_exists(LOG_KEYSPACE) {
        return Ok(());
    }
    let log = db
        .keyspace(LOG_KEYSPACE, KeyspaceCreateOptions::default)
        .map_err(io_err)?;
    if !wal_dir.exists() {
        let staging = dir.join("wal.migrating");
        if staging.exists() {
            std::fs::remove_dir_all(&staging)?;
        }
        let wal = Wal::open(&staging, purged, segment_bytes)?;
        let from = purged.map_or(0, |p| p.index + 1);
        let mut chunk: Vec<(LogId, Vec<u8>)> = Vec::with_capacity(CHUNK);
        let mut copied = 0usize;
        let mut copy = |chunk: &mut Vec<(LogId, Vec<u8>)>| {
            let records: Vec<(LogId, &[u8])> =
                chunk.iter().map(|(id, e)| (*id, e.as_slice())).collect();
            copied += records.len();
            let written = wal.append(&records, || Ok(()));
            chunk.clear();
            written
        };
        for g in log.range(from.to_be_bytes()..) {
            let (_, v) = g.into_inner().map_err(io_err)?;
            let entry: Entry = decode(&v)?;
            chunk.push((entry.log_id, v.to_vec()));
            if chunk.len() == CHUNK {
                copy(&mut chunk)?;
            }
        }
        copy(&mut chunk)?;
        wal.sync_written()?;
        drop(wal);
        common::durable::sync_dir(&staging)?;
        std::fs::rename(&staging, wal_dir)?;
        common::durable::sync_dir(dir)?;
        tracing::info!(
            entries = copied,
            "moved the raft log from raftd's fjall database into segment files"
        );
    }
    db.delete_keyspace(log).map_err(io_err)?;
    db.persist(PersistMode::SyncAll).map_err(io_err)
}
