//! The etcd v3 Watch service. Each client stream owns its watchers and
//! runs inside the response stream's own poll (an `InlineStream`): it
//! answers create/cancel/progress requests, delivers live batches from the
//! watch hub to every watcher whose range and filters match, replays
//! history from storaged for watchers that start in the past (and for the
//! whole stream when it fell behind the live channel), and sends progress
//! notifications. Events of one revision always go out in
//! one response (or in fragments of it, when asked for).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use crate::backend::Backend;
use crate::identity::Credentials;
use crate::metrics;
use crate::watch_hub::WatchHub;
use crate::watch_stream::{fragments, DUPLICATE_ID, EMPTY_RANGE};
use common::inline_stream::{InlineStream, Outbox};
use common::proto::etcdserverpb::watch_create_request::FilterType;
use common::proto::etcdserverpb::watch_request::RequestUnion;
use common::proto::etcdserverpb::watch_server::Watch;
use common::proto::etcdserverpb::{WatchCreateRequest, WatchRequest, WatchResponse};
use common::proto::mvccpb::{event::EventType, Event};
use common::proto::storage::EventBatch;

/// Responses buffered toward one client before its stream waits.
const OUT_BUFFER: usize = 128;
/// Revisions of history per response when a watcher replays the past.
/// How long a history replay waits out a storaged restart (50 × 100 ms).
const HISTORY_RETRIES: usize = 50;
const HISTORY_RETRY: Duration = Duration::from_millis(100);
const REPLAY_REVISIONS: usize = 1000;

pub struct WatchService {
    backend: Arc<Backend>,
    hub: Arc<WatchHub>,
    max_request_bytes: usize,
    progress_interval: Duration,
}

impl WatchService {
    pub fn new(
        backend: Arc<Backend>,
        hub: Arc<WatchHub>,
        max_request_bytes: usize,
        progress_interval: Duration,
    ) -> Self {
        WatchService {
            backend,
            hub,
            max_request_bytes,
            progress_interval,
        }
    }
}

#[tonic::async_trait]
impl Watch for WatchService {
    type WatchStream = InlineStream<Result<WatchResponse, Status>>;

    async fn watch(
        &self,
        req: Request<Streaming<WatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let creds = Credentials::of(&req);
        Ok(Response::new(self.open(creds, req.into_inner()).await))
    }
}

impl WatchService {
    /// Serve one client stream of watch requests (gRPC's, or the JSON
    /// gateway's) sent by a client with `creds`.
    pub async fn open<S>(
        &self,
        creds: Credentials,
        requests: S,
    ) -> InlineStream<Result<WatchResponse, Status>>
    where
        S: futures::Stream<Item = Result<WatchRequest, Status>> + Send + Unpin + 'static,
    {
        let (live, delivered) = self.hub.subscribe().await;
        let backend = self.backend.clone();
        let hub = self.hub.clone();
        let max_request_bytes = self.max_request_bytes;
        let progress_interval = self.progress_interval;
        InlineStream::new(OUT_BUFFER, move |out| {
            metrics::WATCH_STREAMS.add(1);
            let stream = ClientStream {
                creds,
                backend,
                hub,
                max_request_bytes,
                out,
                live,
                delivered,
                watchers: BTreeMap::new(),
                next_id: 0,
            };
            stream.run(requests, progress_interval)
        })
    }
}

/// One watcher on a client stream.
struct Watcher {
    key: Vec<u8>,
    /// None: only `key`; Some(empty): every key >= `key`; else [key, end).
    end: Option<Vec<u8>>,
    no_put: bool,
    no_delete: bool,
    prev_kv: bool,
    progress_notify: bool,
    fragment: bool,
    /// The next revision this watcher has not been given yet.
    next: i64,
    /// Whether anything was sent since the last progress tick.
    active: bool,
}

impl Watcher {
    fn from_request(c: &WatchCreateRequest) -> Watcher {
        // etcd: an empty key means "\0", the smallest key.
        let key = if c.key.is_empty() {
            vec![0]
        } else {
            c.key.clone()
        };
        let end = match c.range_end.as_slice() {
            [] => None,
            [0] => Some(Vec::new()),
            e => Some(e.to_vec()),
        };
        let has = |f: FilterType| c.filters.contains(&(f as i32));
        Watcher {
            key,
            end,
            no_put: has(FilterType::Noput),
            no_delete: has(FilterType::Nodelete),
            prev_kv: c.prev_kv,
            progress_notify: c.progress_notify,
            fragment: c.fragment,
            next: 0,
            active: false,
        }
    }

    fn matches(&self, e: &Event) -> bool {
        let Some(kv) = &e.kv else { return false };
        let k = kv.key.as_slice();
        let in_range = match &self.end {
            None => k == self.key.as_slice(),
            Some(end) if end.is_empty() => k >= self.key.as_slice(),
            Some(end) => k >= self.key.as_slice() && k < end.as_slice(),
        };
        let filtered = if e.r#type == EventType::Delete as i32 {
            self.no_delete
        } else {
            self.no_put
        };
        in_range && !filtered
    }

    /// This watcher's events of a batch, prev_kv kept only if asked for.
    fn select(&self, batch: &EventBatch) -> Vec<Event> {
        batch
            .events
            .iter()
            .filter(|e| self.matches(e))
            .map(|e| Event {
                r#type: e.r#type,
                kv: e.kv.clone(),
                // Cloned only when asked for: with fan-out every event is
                // copied once per watcher.
                prev_kv: if self.prev_kv {
                    e.prev_kv.clone()
                } else {
                    None
                },
            })
            .collect()
    }
}

struct ClientStream {
    /// What the client proved its identity with; each create is judged.
    creds: Credentials,
    backend: Arc<Backend>,
    hub: Arc<WatchHub>,
    max_request_bytes: usize,
    out: Outbox<Result<WatchResponse, Status>>,
    live: broadcast::Receiver<Arc<EventBatch>>,
    /// Every revision up to this one has been dispatched to the watchers.
    delivered: i64,
    watchers: BTreeMap<i64, Watcher>,
    next_id: i64,
}

/// The stream is over: the client went away, or it ended with an error.
struct Gone;

impl Drop for ClientStream {
    // Also when the client goes away and the response stream, with this
    // in it, is dropped mid-step.
    fn drop(&mut self) {
        metrics::WATCH_STREAMS.add(-1);
        metrics::WATCHERS.add(-(self.watchers.len() as i64));
    }
}

/// Counts watchers as slow (replaying history) while it lives.
struct Replaying(i64);

impl Replaying {
    fn start(watchers: i64) -> Replaying {
        metrics::SLOW_WATCHERS.add(watchers);
        Replaying(watchers)
    }
}

impl Drop for Replaying {
    fn drop(&mut self) {
        metrics::SLOW_WATCHERS.add(-self.0);
    }
}

impl ClientStream {
    async fn run<S>(mut self, mut requests: S, progress_interval: Duration)
    where
        S: futures::Stream<Item = Result<WatchRequest, Status>> + Unpin,
    {
        let mut ticker = tokio::time::interval(progress_interval);
        ticker.tick().await;
        // A client that closes its side has made its last request; as in
        // etcd, its watchers keep delivering until it goes away.
        let mut requests_open = true;
        loop {
            let step = tokio::select! {
                req = requests.next(), if requests_open => match req {
                    Some(Ok(r)) => self.handle(r).await,
                    Some(Err(status)) => self.fail(common::errors::as_grpc_go(status)).await,
                    None => {
                        requests_open = false;
                        Ok(())
                    }
                },
                batch = self.live.recv() => match batch {
                    Ok(b) => self.dispatch(&b).await,
                    Err(RecvError::Lagged(_)) => self.catch_up().await,
                    Err(RecvError::Closed) => Err(Gone),
                },
                _ = ticker.tick() => self.progress_tick().await,
            };
            if step.is_err() {
                break;
            }
        }
    }

    fn response(&self, watch_id: i64, revision: i64) -> WatchResponse {
        WatchResponse {
            header: self.backend.header(revision),
            watch_id,
            ..Default::default()
        }
    }

    /// Never fails itself (a client that leaves drops this stream with its
    /// response body); Result so callers chain it with the steps that can.
    async fn send(&self, r: WatchResponse) -> Result<(), Gone> {
        self.out.send(Ok(r)).await;
        Ok(())
    }

    /// End the stream with `status`.
    async fn fail(&self, status: Status) -> Result<(), Gone> {
        self.out.send(Err(status)).await;
        Err(Gone)
    }

    async fn handle(&mut self, req: WatchRequest) -> Result<(), Gone> {
        match req.request_union {
            Some(RequestUnion::CreateRequest(c)) => self.create(c).await,
            Some(RequestUnion::CancelRequest(c)) => {
                if self.watchers.remove(&c.watch_id).is_some() {
                    metrics::WATCHERS.add(-1);
                    let mut r = self.response(c.watch_id, self.delivered);
                    r.canceled = true;
                    self.send(r).await?;
                }
                Ok(())
            }
            Some(RequestUnion::ProgressRequest(_)) => {
                self.send(self.response(-1, self.delivered)).await
            }
            None => Ok(()),
        }
    }

    /// etcd's isWatchPermitted: read permission on the watched range.
    async fn permitted(&self, c: &WatchCreateRequest) -> Result<(), Status> {
        let who = self.backend.resolve(&self.creds).await?;
        self.backend.check_read(&who, &c.key, &c.range_end).await
    }

    async fn create(&mut self, c: WatchCreateRequest) -> Result<(), Gone> {
        if let Err(refused) = self.permitted(&c).await {
            // etcd answers a refusal so, with the status in Go's text form.
            let mut r = self.response(-1, self.delivered);
            r.created = true;
            r.canceled = true;
            r.cancel_reason = common::errors::go_status_text(&refused);
            return self.send(r).await;
        }
        let w = Watcher::from_request(&c);
        if w.end
            .as_ref()
            .is_some_and(|end| !end.is_empty() && w.key >= *end)
        {
            let mut r = self.response(-1, self.delivered);
            r.created = true;
            r.canceled = true;
            r.cancel_reason = EMPTY_RANGE.to_string();
            return self.send(r).await;
        }
        let id = if c.watch_id != 0 {
            if self.watchers.contains_key(&c.watch_id) {
                let mut r = self.response(-1, self.delivered);
                r.created = true;
                r.canceled = true;
                r.cancel_reason = DUPLICATE_ID.to_string();
                return self.send(r).await;
            }
            c.watch_id
        } else {
            while self.watchers.contains_key(&self.next_id) {
                self.next_id += 1;
            }
            self.next_id += 1;
            self.next_id - 1
        };
        let mut w = w;
        let mut created = self.response(id, self.delivered);
        created.created = true;
        self.send(created).await?;
        let start = c.start_revision;
        if start < 0 {
            return self.start_before_history(id, w, start).await;
        }
        if start == 0 || start > self.delivered {
            w.next = if start <= 0 {
                self.delivered + 1
            } else {
                start
            };
            self.watchers.insert(id, w);
            metrics::WATCHERS.add(1);
            return Ok(());
        }
        // Starts in the past: replay history up to what this stream has
        // delivered, then follow live batches with the others.
        w.next = start;
        self.watchers.insert(id, w);
        metrics::WATCHERS.add(1);
        self.replay(start, self.delivered, Some(id)).await
    }

    /// A watcher asking for a negative revision, as etcd's store treats
    /// it: its compaction point reads -1 when nothing was compacted, a
    /// watcher older than that point is cancelled with it, and -1 itself
    /// replays the whole history.
    async fn start_before_history(
        &mut self,
        id: i64,
        mut w: Watcher,
        start: i64,
    ) -> Result<(), Gone> {
        w.next = start;
        self.watchers.insert(id, w);
        metrics::WATCHERS.add(1);
        if start == -1 {
            return self.replay(1, self.delivered, Some(id)).await;
        }
        let compacted = match self.hub.history(1, 1).await {
            Ok(mut h) => match h.message().await {
                Ok(Some(b)) if b.compact_revision > 0 => b.compact_revision,
                Ok(_) => -1,
                Err(e) => return self.fail(e).await,
            },
            Err(e) => return self.fail(e).await,
        };
        self.compacted(compacted, Some(id)).await
    }

    /// Replay storaged's history of `from..=to` to one watcher, or to all.
    async fn replay(&mut self, from: i64, to: i64, only: Option<i64>) -> Result<(), Gone> {
        let _slow = Replaying::start(if only.is_some() {
            1
        } else {
            self.watchers.len() as i64
        });
        self.replay_history(from, to, only).await
    }

    async fn replay_history(&mut self, from: i64, to: i64, only: Option<i64>) -> Result<(), Gone> {
        // As etcd syncs unsynced watchers: up to REPLAY_REVISIONS revisions
        // per response, each response headed with the current revision.
        let mut pending: BTreeMap<i64, (Vec<Event>, usize)> = BTreeMap::new();
        // storaged may restart under a long replay (a snapshot being
        // activated, an operator): resume after the last revision read.
        let mut next = from;
        let mut retries = 0;
        'read: loop {
            let mut history = match self.hub.history(next, to).await {
                Ok(h) => h,
                Err(e) if retries < HISTORY_RETRIES => {
                    retries += 1;
                    tracing::debug!(error = %e.message(), "history unavailable; retrying");
                    tokio::time::sleep(HISTORY_RETRY).await;
                    continue 'read;
                }
                Err(e) => return self.fail(e).await,
            };
            loop {
                match history.message().await {
                    Ok(Some(b)) if b.compact_revision > 0 => {
                        return self.compacted(b.compact_revision, only).await
                    }
                    Ok(Some(b)) => {
                        next = b.revision + 1;
                        for (id, events) in self.select(&b, only) {
                            let entry = pending.entry(id).or_default();
                            entry.0.extend(events);
                            entry.1 += 1;
                            if entry.1 == REPLAY_REVISIONS {
                                let (events, _) = pending.remove(&id).unwrap_or_default();
                                self.send_events(id, to, events).await?;
                            }
                        }
                    }
                    Ok(None) => break 'read,
                    Err(e) if retries < HISTORY_RETRIES => {
                        retries += 1;
                        tracing::debug!(error = %e.message(), "history read interrupted; resuming");
                        tokio::time::sleep(HISTORY_RETRY).await;
                        continue 'read;
                    }
                    Err(e) => return self.fail(e).await,
                }
            }
        }
        for (id, (events, _)) in pending {
            self.send_events(id, to, events).await?;
        }
        for (id, w) in self.watchers.iter_mut() {
            if only.is_none_or(|o| o == *id) && w.next <= to {
                w.next = to + 1;
            }
        }
        Ok(())
    }

    /// Cancel watchers whose history was compacted away, as etcd does.
    async fn compacted(&mut self, compact_revision: i64, only: Option<i64>) -> Result<(), Gone> {
        let victims: Vec<i64> = self
            .watchers
            .iter()
            .filter(|(id, w)| only.is_none_or(|o| o == **id) && w.next < compact_revision)
            .map(|(id, _)| *id)
            .collect();
        for id in victims {
            self.watchers.remove(&id);
            metrics::WATCHERS.add(-1);
            // etcd's compaction notice carries no revision in its header.
            let mut r = self.response(id, 0);
            r.compact_revision = compact_revision;
            r.canceled = true;
            self.send(r).await?;
        }
        Ok(())
    }

    async fn dispatch(&mut self, batch: &EventBatch) -> Result<(), Gone> {
        for (id, events) in self.select(batch, None) {
            self.send_events(id, batch.revision, events).await?;
        }
        self.delivered = self.delivered.max(batch.revision);
        Ok(())
    }

    /// Each (or one) watcher's events of `batch`, for watchers that have not
    /// seen its revision yet; marks them as having seen it.
    fn select(&mut self, batch: &EventBatch, only: Option<i64>) -> Vec<(i64, Vec<Event>)> {
        let mut out = Vec::new();
        for (id, w) in self.watchers.iter_mut() {
            if only.is_some_and(|o| o != *id) || w.next > batch.revision {
                continue;
            }
            w.next = batch.revision + 1;
            let events = w.select(batch);
            if !events.is_empty() {
                w.active = true;
                out.push((*id, events));
            }
        }
        out
    }

    /// Send one watcher's events, fragmented if it asked and they are large.
    async fn send_events(&self, id: i64, revision: i64, events: Vec<Event>) -> Result<(), Gone> {
        let fragment = self.watchers.get(&id).is_some_and(|w| w.fragment);
        let mut r = self.response(id, revision);
        metrics::WATCH_EVENTS.add(events.len() as i64);
        let _pending = metrics::PendingEvents::new(events.len());
        r.events = events;
        for part in fragments(r, fragment, self.max_request_bytes) {
            self.send(part).await?;
        }
        Ok(())
    }

    /// The stream fell behind the live channel: replay what it missed from
    /// storaged, then follow live batches again.
    async fn catch_up(&mut self) -> Result<(), Gone> {
        metrics::WATCH_CATCH_UPS.add(1);
        let (live, last) = self.hub.subscribe().await;
        self.live = live;
        if last > self.delivered {
            self.replay(self.delivered + 1, last, None).await?;
            self.delivered = last;
        }
        Ok(())
    }

    async fn progress_tick(&mut self) -> Result<(), Gone> {
        let due: Vec<i64> = self
            .watchers
            .iter_mut()
            .filter_map(|(id, w)| {
                let idle = !std::mem::replace(&mut w.active, false);
                (w.progress_notify && idle && w.next > self.delivered).then_some(*id)
            })
            .collect();
        for id in due {
            self.send(self.response(id, self.delivered)).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::watch_stream::tests::ev;

    #[test]
    fn watcher_ranges_and_filters() {
        let mut c = WatchCreateRequest {
            key: b"a".to_vec(),
            range_end: b"c".to_vec(),
            ..Default::default()
        };
        let w = Watcher::from_request(&c);
        assert!(w.matches(&ev("a", 0)) && w.matches(&ev("b", 0)) && !w.matches(&ev("c", 0)));
        c.range_end = vec![0];
        assert!(Watcher::from_request(&c).matches(&ev("zzz", 0)));
        c.filters = vec![FilterType::Noput as i32];
        assert!(!Watcher::from_request(&c).matches(&ev("b", 0)));
        c = WatchCreateRequest {
            key: b"a".to_vec(),
            ..Default::default()
        };
        assert!(!Watcher::from_request(&c).matches(&ev("ab", 0)));
    }
}
