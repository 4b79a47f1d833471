//! Group commit: appends reach the segment files unsynced and their
//! completion callbacks this module's flusher thread, which fdatasyncs
//! once for everything written since its last sync and only then reports
//! the entries durable (many proposals per fsync). After each sync it
//! writes the newest committed index into meta.

use std::io;
use std::sync::Mutex;

use fjall::Keyspace;
use openraft::storage::IOFlushed;

use crate::codec::encode;
use crate::handoff::HandoffQueue;
use crate::io_err;
use crate::log_store::META_COMMITTED;
use crate::types::{LogId, TypeConfig};
use crate::wal::Wal;

/// The newest committed index openraft reported (a replay hint), and
/// whether meta has it yet.
///
/// The hint must never be durable ahead of the entries it names: a restart
/// would re-apply up to it from a log that lacks them. The entries are in
/// the segment files, the hint in fjall, and nothing orders two files'
/// syncs; so the flusher writes the hint into meta only once an fdatasync
/// has covered every entry it names (`Wal::sync_written` says through
/// which index), and keeps it for a later sync otherwise. Unsynced in
/// meta, it becomes durable with meta's next sync; losing it only means
/// replaying less eagerly after a restart.
#[derive(Default)]
pub struct CommittedHint(Mutex<Hint>);

#[derive(Default)]
struct Hint {
    newest: Option<Option<LogId>>,
    unwritten: bool,
}

impl CommittedHint {
    pub fn report(&self, committed: Option<LogId>) {
        if let Ok(mut h) = self.0.lock() {
            *h = Hint {
                newest: Some(committed),
                unwritten: true,
            };
        }
    }

    /// The newest reported since this raftd started.
    pub fn newest(&self) -> Option<Option<LogId>> {
        self.0.lock().ok().and_then(|h| h.newest)
    }

    /// The newest, if meta does not have it yet and every entry it names
    /// is durable (`durable`: the highest index that is).
    fn take_unwritten(&self, durable: Option<u64>) -> Option<Option<LogId>> {
        let mut h = self.0.lock().ok()?;
        let newest = h.newest?;
        let covered = newest.is_none_or(|c| Some(c.index) <= durable);
        (h.unwritten && covered).then(|| {
            h.unwritten = false;
            newest
        })
    }
}

/// Fdatasync once per wake-up for every append queued so far.
pub fn group_commit(
    wal: &Wal,
    meta: &Keyspace,
    committed: &CommittedHint,
    queue: &HandoffQueue<IOFlushed<TypeConfig>>,
) {
    while let Some(waiting) = queue.take() {
        let started = std::time::Instant::now();
        let result = wal.sync_written();
        if !common::durable::unsafe_no_fsync() {
            crate::metrics::WAL_FSYNC.observe(started.elapsed());
        }
        let result = result.and_then(|durable| match committed.take_unwritten(durable) {
            Some(c) => write_hint(meta, c),
            None => Ok(()),
        });
        for cb in waiting {
            cb.io_completed(
                result
                    .as_ref()
                    .map(|_| ())
                    .map_err(|e| io::Error::new(e.kind(), e.to_string())),
            );
        }
    }
}

fn write_hint(meta: &Keyspace, committed: Option<LogId>) -> io::Result<()> {
    match committed {
        Some(c) => meta.insert(META_COMMITTED, encode(&c)?),
        None => meta.remove(META_COMMITTED),
    }
    .map_err(io_err)
}
