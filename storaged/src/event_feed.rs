//! The Events stream: from a start revision, every applied revision's
//! events in order with no gap and no duplicate. It reads the revision log
//! until it reaches what is applied, then follows live batches; a reader
//! that falls too far behind the live channel goes back to the log. The
//! live channel is subscribed before `current` is read, so every revision
//! above the one caught up to arrives live.
//!
//! The feed runs inside its response stream (`InlineStream`): a batch the
//! apply publishes is encoded by the HTTP/2 stream's own task, with no
//! feed task and channel hop between the apply and gatewayd.

use std::sync::Arc;

use common::inline_stream::{InlineStream, Outbox};
use tokio::sync::broadcast::error::RecvError;
use tonic::Status;

use crate::store::Store;
use crate::StoreError;
use common::errors::EtcdError;
use common::proto::storage::EventBatch;

/// Revisions read from the log per step while catching up.
const CATCH_UP_REVS: usize = 256;
/// Batches buffered toward the reader before the feed waits for it.
const BUFFERED: usize = 64;

pub type EventStream = InlineStream<Result<EventBatch, Status>>;

/// Stream the events of `start..=end` (`start` 0 = from the next revision;
/// `end` 0 = follow forever).
pub fn stream(store: Arc<Store>, start: i64, end: i64) -> EventStream {
    InlineStream::new(BUFFERED, move |out| async move {
        if let Err(s) = feed(&store, start, end, &out).await {
            out.send(Err(s)).await;
        }
    })
}

/// The revision as it moves, without events: the current one first, then
/// each applied one (a reader that lags gets the newest only).
pub fn revisions(store: Arc<Store>) -> EventStream {
    InlineStream::new(BUFFERED, move |out| async move {
        let revision = |revision| EventBatch {
            revision,
            ..Default::default()
        };
        // Subscribed before `current` is read: nothing above it is missed,
        // and what arrives at or below it is not sent again.
        let mut live = store.subscribe();
        let mut sent = store.bounds().current;
        out.send(Ok(revision(sent))).await;
        loop {
            match live.recv().await {
                Ok(b) if b.revision <= sent => {}
                Ok(b) => {
                    sent = b.revision;
                    out.send(Ok(revision(sent))).await;
                }
                Err(RecvError::Lagged(_)) => {
                    live = store.subscribe();
                    let current = store.bounds().current;
                    if current > sent {
                        sent = current;
                        out.send(Ok(revision(sent))).await;
                    }
                }
                Err(RecvError::Closed) => {
                    out.send(Err(Status::unavailable("storaged is shutting down")))
                        .await;
                    return;
                }
            }
        }
    })
}

fn compacted_batch(store: &Store) -> EventBatch {
    EventBatch {
        revision: 0,
        events: Vec::new(),
        compact_revision: store.bounds().compacted,
    }
}

/// Ok(()) when done (a reader that goes away drops the feed with it).
async fn feed(
    store: &Store,
    start: i64,
    end: i64,
    out: &Outbox<Result<EventBatch, Status>>,
) -> Result<(), Status> {
    let mut live = store.subscribe();
    let bounds = store.bounds();
    if start > 0 && start < bounds.compacted {
        out.send(Ok(compacted_batch(store))).await;
        return Ok(());
    }
    let mut next = if start <= 0 {
        bounds.current + 1
    } else {
        start
    };
    let finished = |next: i64| end > 0 && next > end;
    loop {
        // Catch up from the revision log to what is applied now.
        loop {
            let current = store.bounds().current;
            let to = if end > 0 { end.min(current) } else { current };
            if next > to {
                break;
            }
            let batches = match store.history(next, to, CATCH_UP_REVS) {
                Ok(b) => b,
                Err(StoreError::Etcd(EtcdError::Compacted)) => {
                    out.send(Ok(compacted_batch(store))).await;
                    return Ok(());
                }
                Err(e) => return Err(e.into()),
            };
            if batches.is_empty() {
                next = to + 1;
                break;
            }
            for b in batches {
                next = b.revision + 1;
                out.send(Ok(b)).await;
            }
        }
        if finished(next) {
            return Ok(());
        }
        // Follow live events.
        loop {
            match live.recv().await {
                Ok(b) if b.revision < next => continue,
                Ok(b) => {
                    if end > 0 && b.revision > end {
                        return Ok(());
                    }
                    next = b.revision + 1;
                    out.send(Ok((*b).clone())).await;
                    if finished(next) {
                        return Ok(());
                    }
                }
                Err(RecvError::Lagged(_)) => {
                    live = store.subscribe();
                    break; // back to the log for what was missed
                }
                Err(RecvError::Closed) => {
                    return Err(Status::unavailable("storaged is shutting down"))
                }
            }
        }
    }
}
