//! Group commit: appends reach fjall unsynced and their completion
//! callbacks this module's flusher thread, which fsyncs once for
//! everything queued since its last fsync and only then reports the
//! entries durable (many proposals per fsync).

use fjall::{Database, PersistMode};
use openraft::storage::IOFlushed;

use crate::handoff::HandoffQueue;
use crate::types::TypeConfig;

/// Fsync once per wake-up for every append queued so far.
pub fn group_commit(db: Database, queue: &HandoffQueue<IOFlushed<TypeConfig>>) {
    while let Some(waiting) = queue.take() {
        let started = std::time::Instant::now();
        let result = db.persist(PersistMode::SyncData);
        crate::metrics::WAL_FSYNC.observe(started.elapsed());
        for cb in waiting {
            cb.io_completed(
                result
                    .as_ref()
                    .map(|_| ())
                    .map_err(|e| std::io::Error::other(e.to_string())),
            );
        }
    }
}
