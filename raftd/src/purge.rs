//! Purging the raft log: a purge only moves the purge mark (cheap, on
//! raftd's thread); this module's thread deletes the entries below it (a
//! snapshot's purge is ~100,000 deletions, which on raftd's one runtime
//! thread held every write up for tens of milliseconds).

use std::io;

use crate::io_err;

use fjall::{Database, Keyspace};

use crate::handoff::HandoffQueue;

/// Deletions per batch on the purge thread: small enough that an append
/// waiting for the journal behind one is not held up noticeably.
pub(crate) const PURGE_CHUNK: usize = 1024;

/// Delete the entries at or below each purge mark, in ascending order (so
/// the log never has a hole), a chunk per batch. Not synced: a deletion
/// lost in a crash is redone from the mark at the next start.
pub fn purge_below_marks(db: &Database, log: &Keyspace, queue: &HandoffQueue<u64>) {
    let mut from = 0u64;
    while let Some(marks) = queue.take() {
        let Some(&mark) = marks.iter().max() else {
            continue;
        };
        while from <= mark {
            match purge_chunk(db, log, from, mark) {
                Ok(Some(last)) => from = last.saturating_add(1),
                Ok(None) => from = mark.saturating_add(1),
                Err(e) => {
                    tracing::warn!(error = %e, mark, "raft log purge stopped; retried at the next purge");
                    break;
                }
            }
        }
    }
}

/// Delete up to `PURGE_CHUNK` entries in `from..=mark`; the last index
/// deleted, or None when there were none.
fn purge_chunk(db: &Database, log: &Keyspace, from: u64, mark: u64) -> io::Result<Option<u64>> {
    let mut batch = db.batch();
    let mut last = None;
    for g in log
        .range(from.to_be_bytes()..=mark.to_be_bytes())
        .take(PURGE_CHUNK)
    {
        let k = g.key().map_err(io_err)?;
        last = Some(u64::from_be_bytes(k.as_ref().try_into().map_err(io_err)?));
        batch.remove(log, k);
    }
    if last.is_some() {
        batch.commit().map_err(io_err)?;
    }
    Ok(last)
}
