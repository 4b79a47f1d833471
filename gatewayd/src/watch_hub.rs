//! gatewayd's one upstream event feed: a single storaged Events stream,
//! fanned out to every client watch stream through a broadcast channel.
//! When storaged restarts, the feed is re-opened from the revision after
//! the last one published, so watchers see no gap and no duplicate.
//!
//! With nobody subscribed for a while the feed carries revisions only:
//! every put's events (its value and previous value) were encoded by
//! storaged, copied over the socket and decoded here for nobody. The first
//! subscriber switches it back to events, from the revision after the last
//! one seen, before it is handed its receiver.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{broadcast, watch, Notify};
use tonic::transport::Channel;
use tonic::Status;

use common::proto::storage::storage_client::StorageClient;
use common::proto::storage::{EventBatch, EventsRequest, StatusRequest};

/// Revisions a client stream may fall behind before it catches up from
/// storaged's history instead (bounds gatewayd's memory per slow reader).
const LIVE_REVISIONS: usize = 1024;
const RECONNECT: Duration = Duration::from_millis(100);
/// How long the feed keeps carrying events with nobody subscribed (watch
/// streams come and go; each switch re-opens the feed).
const QUIET_AFTER: Duration = Duration::from_secs(2);

/// What the open feed carries.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
struct Feed {
    /// `last` is the store's revision (read once storaged answers).
    ready: bool,
    /// The feed carries events and publishes them on `live`.
    events: bool,
}

pub struct WatchHub {
    live: broadcast::Sender<Arc<EventBatch>>,
    /// The newest revision seen (the current revision as gatewayd knows it).
    last: AtomicI64,
    feed: watch::Sender<Feed>,
    /// A subscriber is waiting for events (set under `switch`).
    wanted: AtomicBool,
    demand: Notify,
    /// Subscribing and going quiet decide under this lock, so nobody
    /// subscribes to a feed that is about to stop carrying events.
    switch: Mutex<()>,
    storage: StorageClient<Channel>,
}

impl WatchHub {
    pub fn spawn(storage: StorageClient<Channel>) -> Arc<WatchHub> {
        let hub = Arc::new(WatchHub {
            live: broadcast::Sender::new(LIVE_REVISIONS),
            last: AtomicI64::new(0),
            feed: watch::Sender::new(Feed::default()),
            wanted: AtomicBool::new(false),
            demand: Notify::new(),
            switch: Mutex::new(()),
            storage,
        });
        tokio::spawn(hub.clone().follow());
        hub
    }

    /// Live batches from now on, and the revision they continue from: every
    /// revision above it arrives on the receiver (subscribed before reading).
    pub async fn subscribe(&self) -> (broadcast::Receiver<Arc<EventBatch>>, i64) {
        loop {
            {
                let _switch = self.switch.lock().unwrap_or_else(|p| p.into_inner());
                let feed = *self.feed.borrow();
                if feed.ready && feed.events {
                    let rx = self.live.subscribe();
                    return (rx, self.last.load(Ordering::Acquire));
                }
                self.wanted.store(true, Ordering::Release);
            }
            self.demand.notify_one();
            let mut feed = self.feed.subscribe();
            let _ = feed.wait_for(|f| f.ready && f.events).await;
        }
    }

    /// The current revision as gatewayd knows it (the newest one seen).
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
            revisions_only: false,
        };
        Ok(storage.events(req).await?.into_inner())
    }

    async fn follow(self: Arc<Self>) {
        let mut storage = self.storage.clone();
        loop {
            if !self.feed.borrow().ready {
                match storage.status(StatusRequest {}).await {
                    Ok(s) => {
                        self.last.store(s.into_inner().revision, Ordering::Release);
                        self.feed.send_modify(|f| f.ready = true);
                    }
                    Err(_) => {
                        tokio::time::sleep(RECONNECT).await;
                        continue;
                    }
                }
            }
            // Decided under `switch`: a feed re-opened without events is
            // never left looking as if it carried them. `wanted` stays set
            // until an events feed is open (storaged may be down meanwhile).
            let events = {
                let _switch = self.switch.lock().unwrap_or_else(|p| p.into_inner());
                let events = self.wanted.load(Ordering::Acquire) || self.live.receiver_count() > 0;
                if !events {
                    self.feed.send_modify(|f| f.events = false);
                }
                events
            };
            let req = EventsRequest {
                start_revision: self.last.load(Ordering::Acquire) + 1,
                end_revision: 0,
                revisions_only: !events,
            };
            match storage.events(req).await {
                Ok(stream) if events => {
                    {
                        let _switch = self.switch.lock().unwrap_or_else(|p| p.into_inner());
                        self.wanted.store(false, Ordering::Release);
                        self.feed.send_modify(|f| f.events = true);
                    }
                    if self.publish(stream.into_inner()).await == Ended::Quiet {
                        continue;
                    }
                }
                Ok(stream) => {
                    if self.track(stream.into_inner()).await == Ended::Wanted {
                        continue;
                    }
                }
                Err(e) => tracing::debug!(error = %e, "storaged event feed unavailable; retrying"),
            }
            tokio::time::sleep(RECONNECT).await;
        }
    }

    /// Publish the feed's events until it ends, or until nobody has been
    /// subscribed for `QUIET_AFTER` (the feed then stops carrying events).
    async fn publish(&self, mut stream: tonic::Streaming<EventBatch>) -> Ended {
        let mut unwatched_since: Option<Instant> = None;
        loop {
            match stream.message().await {
                Ok(Some(b)) if b.compact_revision > 0 => {
                    // Revisions were compacted while the feed was down: they
                    // cannot be replayed; continue from what exists now.
                    tracing::error!(
                        compacted = b.compact_revision,
                        "event feed resumed past a compaction"
                    );
                    self.feed.send_modify(|f| f.ready = false);
                    return Ended::Interrupted;
                }
                Ok(Some(b)) => {
                    self.last.store(b.revision, Ordering::Release);
                    if self.live.send(Arc::new(b)).is_ok() {
                        unwatched_since = None;
                        continue;
                    }
                    let since = *unwatched_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= QUIET_AFTER && self.go_quiet() {
                        return Ended::Quiet;
                    }
                }
                Ok(None) => return Ended::Interrupted,
                Err(e) => {
                    tracing::warn!(error = %e.message(), "storaged event feed interrupted; resuming");
                    return Ended::Interrupted;
                }
            }
        }
    }

    /// Stop carrying events, unless somebody subscribed meanwhile.
    fn go_quiet(&self) -> bool {
        let _switch = self.switch.lock().unwrap_or_else(|p| p.into_inner());
        if self.live.receiver_count() > 0 || self.wanted.load(Ordering::Acquire) {
            return false;
        }
        self.feed.send_modify(|f| f.events = false);
        true
    }

    /// Follow a revisions-only feed until it ends or a subscriber wants
    /// events.
    async fn track(&self, mut stream: tonic::Streaming<EventBatch>) -> Ended {
        loop {
            tokio::select! {
                _ = self.demand.notified() => return Ended::Wanted,
                message = stream.message() => match message {
                    // An older storaged sends events anyway: only the
                    // revision is kept.
                    Ok(Some(b)) => self.last.fetch_max(b.revision, Ordering::AcqRel),
                    Ok(None) => return Ended::Interrupted,
                    Err(e) => {
                        tracing::warn!(error = %e.message(), "storaged revision feed interrupted; resuming");
                        return Ended::Interrupted;
                    }
                },
            };
        }
    }
}

/// Why a feed was left.
#[derive(PartialEq, Eq)]
enum Ended {
    /// It broke or ended: re-opened after a pause.
    Interrupted,
    /// Nobody subscribed for a while: re-opened at once, revisions only.
    Quiet,
    /// A subscriber wants events: re-opened at once, with events.
    Wanted,
}
