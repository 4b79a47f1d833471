//! gatewayd's one upstream event feed: a single storaged Events stream,
//! fanned out to every client watch stream through a broadcast channel.
//! When storaged restarts, the feed is re-opened from the revision after
//! the last one published, so watchers see no gap and no duplicate.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, watch};
use tonic::transport::Channel;
use tonic::Status;

use common::proto::storage::storage_client::StorageClient;
use common::proto::storage::{EventBatch, EventsRequest, StatusRequest};

/// Revisions a client stream may fall behind before it catches up from
/// storaged's history instead (bounds gatewayd's memory per slow reader).
const LIVE_REVISIONS: usize = 1024;
const RECONNECT: Duration = Duration::from_millis(100);

pub struct WatchHub {
    live: broadcast::Sender<Arc<EventBatch>>,
    /// The newest revision published (the current revision as gatewayd knows it).
    last: AtomicI64,
    ready: watch::Sender<bool>,
    storage: StorageClient<Channel>,
}

impl WatchHub {
    pub fn spawn(storage: StorageClient<Channel>) -> Arc<WatchHub> {
        let hub = Arc::new(WatchHub {
            live: broadcast::Sender::new(LIVE_REVISIONS),
            last: AtomicI64::new(0),
            ready: watch::Sender::new(false),
            storage,
        });
        tokio::spawn(hub.clone().follow());
        hub
    }

    /// Live batches from now on, and the revision they continue from: every
    /// revision above it arrives on the receiver (subscribed before reading).
    pub async fn subscribe(&self) -> (broadcast::Receiver<Arc<EventBatch>>, i64) {
        let mut ready = self.ready.subscribe();
        let _ = ready.wait_for(|r| *r).await;
        let rx = self.live.subscribe();
        (rx, self.last.load(Ordering::Acquire))
    }

    /// The current revision as gatewayd knows it (the newest one published).
    pub fn revision(&self) -> i64 {
        self.last.load(Ordering::Acquire)
    }

    /// Events of `from..=to` from storaged's history.
    pub async fn history(
        &self,
        from: i64,
        to: i64,
    ) -> Result<tonic::Streaming<EventBatch>, Status> {
        let mut storage = self.storage.clone();
        let req = EventsRequest {
            start_revision: from,
            end_revision: to,
        };
        Ok(storage.events(req).await?.into_inner())
    }

    async fn follow(self: Arc<Self>) {
        let mut storage = self.storage.clone();
        loop {
            if !*self.ready.borrow() {
                match storage.status(StatusRequest {}).await {
                    Ok(s) => {
                        self.last.store(s.into_inner().revision, Ordering::Release);
                        self.ready.send_replace(true);
                    }
                    Err(_) => {
                        tokio::time::sleep(RECONNECT).await;
                        continue;
                    }
                }
            }
            let start = self.last.load(Ordering::Acquire) + 1;
            let req = EventsRequest {
                start_revision: start,
                end_revision: 0,
            };
            match storage.events(req).await {
                Ok(stream) => self.publish(stream.into_inner()).await,
                Err(e) => tracing::debug!(error = %e, "storaged event feed unavailable; retrying"),
            }
            tokio::time::sleep(RECONNECT).await;
        }
    }

    async fn publish(&self, mut stream: tonic::Streaming<EventBatch>) {
        loop {
            match stream.message().await {
                Ok(Some(b)) if b.compact_revision > 0 => {
                    // Revisions were compacted while the feed was down: they
                    // cannot be replayed; continue from what exists now.
                    tracing::error!(
                        compacted = b.compact_revision,
                        "event feed resumed past a compaction"
                    );
                    self.ready.send_replace(false);
                    return;
                }
                Ok(Some(b)) => {
                    self.last.store(b.revision, Ordering::Release);
                    let _ = self.live.send(Arc::new(b));
                }
                Ok(None) => return,
                Err(e) => {
                    tracing::warn!(error = %e.message(), "storaged event feed interrupted; resuming");
                    return;
                }
            }
        }
    }
}
