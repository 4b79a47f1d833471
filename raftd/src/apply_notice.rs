//! The heads-up raftd gives storaged when entries reach the log: an Apply
//! of them follows within about a millisecond (once a quorum has them).
//!
//! storaged is the last hop before a watcher's event and the only daemon
//! that waits idle through a write's fsync and replication; on a virtual
//! machine its runtime threads would have halted by the time the Apply
//! arrives, and waking one costs a hypervisor round trip on every write
//! (BENCHMARKS.md). A heads-up, a message on storaged's ApplySoon stream,
//! lets storaged spin through that wait instead
//! (`common::park_spin::expect_work_within`). At most one is outstanding
//! per Apply, so a busy log adds at most one message per batch applied.
//! An older storaged answers ApplySoon with Unimplemented: it gets none.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use common::proto::storage::storage_client::StorageClient;
use common::proto::storage::ApplySoonNotice;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

/// Heads-ups waiting to be written; more would mean storaged is behind
/// and has work anyway.
const QUEUE: usize = 4;

#[derive(Clone, Default)]
pub struct ApplyNotice {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    /// The open ApplySoon stream's sender, when there is one.
    stream: Mutex<Option<mpsc::Sender<ApplySoonNotice>>>,
    /// A heads-up was sent and no Apply has followed yet.
    outstanding: AtomicBool,
}

impl ApplyNotice {
    /// Open a new ApplySoon stream to storaged (raftd opens its Apply
    /// stream anew for the same reasons: first use, storaged restarted);
    /// heads-ups go on it from now on. The call runs in its own task until
    /// storaged ends it or a newer stream replaces this one.
    pub fn open(&self, mut storage: StorageClient<Channel>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(async move {
            if let Err(e) = storage.apply_soon(ReceiverStream::new(rx)).await {
                tracing::debug!(error = %e.message(), "storaged takes no apply heads-ups");
            }
        });
        self.attach(tx);
    }

    fn attach(&self, stream: mpsc::Sender<ApplySoonNotice>) {
        if let Ok(mut s) = self.inner.stream.lock() {
            *s = Some(stream);
        }
        self.applying();
    }

    /// Entries were appended to the log: tell storaged, unless it was
    /// already told and has not been sent an Apply since. Never waits: a
    /// full stream means storaged has work queued anyway.
    pub fn entries_appended(&self) {
        if self.inner.outstanding.swap(true, Ordering::AcqRel) {
            return;
        }
        let sent = self
            .inner
            .stream
            .lock()
            .ok()
            .and_then(|s| s.as_ref().map(|tx| tx.try_send(ApplySoonNotice {}).is_ok()));
        if sent != Some(true) {
            self.inner.outstanding.store(false, Ordering::Release);
        }
    }

    /// An Apply is being sent: the next appended entries earn a heads-up.
    pub fn applying(&self) {
        self.inner.outstanding.store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_heads_up_per_apply_and_none_without_a_stream() {
        let notice = ApplyNotice::default();
        notice.entries_appended(); // no stream yet: nothing to send on
        let (tx, mut rx) = mpsc::channel(4);
        notice.attach(tx);
        notice.entries_appended();
        notice.entries_appended();
        assert!(rx.try_recv().is_ok(), "a heads-up");
        assert!(rx.try_recv().is_err(), "one until the Apply is sent");
        notice.applying();
        notice.entries_appended();
        assert!(rx.try_recv().is_ok(), "the next heads-up");
    }

    #[test]
    fn a_full_or_closed_stream_drops_the_heads_up_without_waiting() {
        let notice = ApplyNotice::default();
        let (tx, mut rx) = mpsc::channel(1);
        tx.try_send(ApplySoonNotice {}).expect("fill");
        notice.attach(tx);
        notice.entries_appended();
        assert!(rx.try_recv().is_ok(), "the filler");
        notice.entries_appended();
        assert!(
            rx.try_recv().is_ok(),
            "a dropped heads-up is not counted as outstanding"
        );
        drop(rx);
        notice.entries_appended();
        notice.entries_appended(); // returns at once: storaged went away
    }
}
