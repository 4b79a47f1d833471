//! Purging the raft log: a purge only moves the purge mark (cheap, on
//! raftd's thread); this module's thread deletes the segment files whose
//! entries are all at or below it (an unlink each; a segment holding
//! entries on both sides of the mark stays until a later purge).

use fjall::{Database, PersistMode};

use crate::handoff::HandoffQueue;
use crate::io_err;
use crate::wal::Wal;

/// Delete the segments at or below each purge mark. The mark is made
/// durable first: a segment deleted while a crash could still lose the
/// mark would leave the log starting above the mark recovered, with a hole
/// where the deleted entries were. A deletion lost in a crash is redone
/// from the mark at the next start.
pub fn purge_below_marks(db: &Database, wal: &Wal, queue: &HandoffQueue<u64>) {
    while let Some(marks) = queue.take() {
        let Some(&mark) = marks.iter().max() else {
            continue;
        };
        let purged = db
            .persist(PersistMode::SyncAll)
            .map_err(io_err)
            .and_then(|()| wal.delete_through(mark));
        if let Err(e) = purged {
            tracing::warn!(error = %e, mark, "raft log purge stopped; retried at the next purge");
        }
    }
}
