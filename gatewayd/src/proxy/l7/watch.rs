//! The L7 proxy's Watch service, with coalescing: client watches on the
//! same range (and the same progress-notify choice and credentials) share
//! one upstream watch — a *group* — whose events the proxy filters and
//! hands to each client watch (its own filters, prev_kv, start revision
//! and watch ID). A watch that cannot join a group without missing or
//! repeating an event gets a group of its own.
//!
//! Guarantees carry over from the member: each group resumes its upstream
//! watch after the last revision it delivered when it moves to another
//! member, so clients see no gap and no duplicate across a member failure.
//! A client that does not read is split off into a group of its own
//! (catching up from the member's history) instead of stalling the others.
//! Progress requests are forwarded: every group the client stream uses is
//! asked, and the answer is the lowest revision they all vouch for.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::{mpsc, Notify};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status, Streaming};

use super::metrics;
use super::namespace::Namespace;
use super::upstream::{credentials, request, unary, Upstream};
use crate::retry::transport_failure;
use crate::watch_stream::{fragments, DUPLICATE_ID};
use common::proto::etcdserverpb::maintenance_client::MaintenanceClient;
use common::proto::etcdserverpb::watch_client::WatchClient;
use common::proto::etcdserverpb::watch_create_request::FilterType;
use common::proto::etcdserverpb::watch_request::RequestUnion;
use common::proto::etcdserverpb::watch_server::Watch;
use common::proto::etcdserverpb::*;
use common::proto::mvccpb::event::EventType;

type ClientTx = mpsc::Sender<Result<WatchResponse, Status>>;
/// A client stream's watches: watch ID → (group, receiver ID).
type Registry = Arc<Mutex<HashMap<i64, (Weak<Group>, u64)>>>;

#[derive(Clone, PartialEq, Eq, Hash)]
struct GroupKey {
    key: Vec<u8>,
    range_end: Vec<u8>,
    progress_notify: bool,
    credentials: Option<String>,
}

/// One client watch served by a group.
struct Receiver {
    tx: ClientTx,
    registry: Registry,
    watch_id: i64,
    no_put: bool,
    no_delete: bool,
    prev_kv: bool,
    fragment: bool,
    /// The first revision it still needs (0: from when it is created).
    next: i64,
    created: bool,
}

impl Receiver {
    /// The part of `events` this watch wants, as its client should see it.
    fn pick(&self, events: &[common::proto::mvccpb::Event]) -> Vec<common::proto::mvccpb::Event> {
        events
            .iter()
            .filter(|e| e.kv.as_ref().is_some_and(|kv| kv.mod_revision >= self.next))
            .filter(|e| {
                let put = e.r#type == EventType::Put as i32;
                !(put && self.no_put || !put && self.no_delete)
            })
            .map(|e| {
                let mut e = e.clone();
                if !self.prev_kv {
                    e.prev_kv = None;
                }
                e
            })
            .collect()
    }

    fn response(&self, header: &Option<ResponseHeader>) -> WatchResponse {
        WatchResponse {
            header: *header,
            watch_id: self.watch_id,
            ..Default::default()
        }
    }
}

#[derive(Default)]
struct GroupState {
    receivers: HashMap<u64, Receiver>,
    /// The revision after everything delivered (0 until created).
    next_rev: i64,
    /// The latest header from the member.
    header: Option<ResponseHeader>,
    /// Progress requests sent upstream and not answered yet: each answer
    /// covers the client asks made before its request was sent.
    asked: VecDeque<u64>,
    /// The upstream watch ended for good.
    ended: bool,
}

struct Group {
    key: GroupKey,
    /// The client credentials the upstream watch is opened with.
    metadata: MetadataMap,
    start: i64,
    state: Mutex<GroupState>,
    /// Receivers left: the group may end.
    emptied: Notify,
    /// Client progress asks: count, wake-up, and the answers so far
    /// (asks covered, revision vouched for).
    asks: AtomicU64,
    ask: Notify,
    answered: tokio::sync::watch::Sender<(u64, i64)>,
}

/// A response on its way to a client, and who gets it.
struct Outgoing {
    rid: u64,
    tx: ClientTx,
    responses: Vec<WatchResponse>,
    /// The receiver's `next` before this delivery (to split it off there).
    from: i64,
    /// Whether it had been told it was created before this delivery.
    was_created: bool,
}

pub struct WatchProxy {
    upstream: Arc<Upstream>,
    ns: Namespace,
    groups: Mutex<HashMap<GroupKey, Vec<Arc<Group>>>>,
    max_bytes: usize,
    timeout: Duration,
}

static RECEIVER_IDS: AtomicU64 = AtomicU64::new(1);

impl WatchProxy {
    pub fn new(
        upstream: Arc<Upstream>,
        ns: Namespace,
        max_bytes: usize,
        timeout: Duration,
    ) -> Arc<Self> {
        Arc::new(WatchProxy {
            upstream,
            ns,
            groups: Mutex::default(),
            max_bytes,
            timeout,
        })
    }

    /// Serve one client watch stream until the client closes it.
    async fn serve(
        self: Arc<Self>,
        metadata: MetadataMap,
        mut requests: Streaming<WatchRequest>,
        tx: ClientTx,
    ) {
        let registry: Registry = Arc::default();
        let mut next_id = 0;
        while let Some(Ok(req)) = requests.next().await {
            match req.request_union {
                Some(RequestUnion::CreateRequest(c)) => {
                    let taken =
                        |id: &i64| registry.lock().map(|r| r.contains_key(id)).unwrap_or(true);
                    let id = if c.watch_id != 0 {
                        if taken(&c.watch_id) {
                            let header = self.current_header(&metadata).await;
                            let _ = tx.send(Ok(refusal(header, DUPLICATE_ID))).await;
                            continue;
                        }
                        c.watch_id
                    } else {
                        while taken(&next_id) {
                            next_id += 1;
                        }
                        next_id += 1;
                        next_id - 1
                    };
                    if let Err(refused) = self.create(&metadata, c, id, &tx, &registry).await {
                        let header = self.current_header(&metadata).await;
                        let _ = tx.send(Ok(refusal(header, refused.message()))).await;
                    }
                }
                Some(RequestUnion::CancelRequest(c)) => {
                    let member = registry.lock().ok().and_then(|mut r| r.remove(&c.watch_id));
                    if let Some((group, rid)) = member {
                        if let Some(g) = group.upgrade() {
                            g.leave(rid);
                        }
                        let header = self.current_header(&metadata).await;
                        let _ = tx
                            .send(Ok(WatchResponse {
                                header,
                                watch_id: c.watch_id,
                                canceled: true,
                                ..Default::default()
                            }))
                            .await;
                    }
                }
                Some(RequestUnion::ProgressRequest(_)) => {
                    tokio::spawn(self.clone().progress(
                        metadata.clone(),
                        registry.clone(),
                        tx.clone(),
                    ));
                }
                None => {}
            }
        }
        let left: Vec<(Weak<Group>, u64)> = registry
            .lock()
            .map(|mut r| r.drain().map(|(_, m)| m).collect())
            .unwrap_or_default();
        for (group, rid) in left {
            if let Some(g) = group.upgrade() {
                g.leave(rid);
            }
        }
    }

    /// A header at the member's current revision, for answers that are not
    /// about any group's events (etcd sends its store's revision).
    async fn current_header(&self, metadata: &MetadataMap) -> Option<ResponseHeader> {
        let status = unary!(
            self.upstream,
            crate::retry::Retry::Idempotent,
            MaintenanceClient::status,
            metadata,
            StatusRequest {}
        );
        status.ok().and_then(|s| s.header)
    }

    /// Start client watch `id` on this stream: join a group or start one.
    async fn create(
        self: &Arc<Self>,
        metadata: &MetadataMap,
        c: WatchCreateRequest,
        id: i64,
        tx: &ClientTx,
        registry: &Registry,
    ) -> Result<(), Status> {
        let (mut key, mut range_end) = (c.key, c.range_end);
        self.ns.interval(&mut key, &mut range_end)?;
        let has = |f: FilterType| c.filters.contains(&(f as i32));
        let receiver = Receiver {
            tx: tx.clone(),
            registry: registry.clone(),
            watch_id: id,
            no_put: has(FilterType::Noput),
            no_delete: has(FilterType::Nodelete),
            prev_kv: c.prev_kv,
            fragment: c.fragment,
            next: c.start_revision.max(0),
            created: false,
        };
        let key = GroupKey {
            key,
            range_end,
            progress_notify: c.progress_notify,
            credentials: credentials(metadata),
        };
        metrics::CLIENT_WATCHERS.add(1);
        self.attach(key, metadata.clone(), receiver).await;
        Ok(())
    }

    /// Hand `r` to a group that can serve it from its `next` revision on,
    /// or to a new one. A watch joining a group already created is told
    /// it was created here, before the group can send it anything.
    async fn attach(self: &Arc<Self>, key: GroupKey, metadata: MetadataMap, mut r: Receiver) {
        loop {
            if !r.created {
                if let Some((group, rev)) = self.created_group(&key, r.next) {
                    let header = group.header_at(rev);
                    let created = WatchResponse {
                        created: true,
                        ..r.response(&header)
                    };
                    if r.tx.send(Ok(created)).await.is_err() {
                        metrics::CLIENT_WATCHERS.add(-1);
                        return;
                    }
                    r.created = true;
                    r.next = r.next.max(rev + 1);
                    match group.join(r) {
                        Ok(()) => return,
                        Err(back) => r = back,
                    }
                }
            }
            let group = self.pending_group(&key, &metadata, r.next);
            match group.join(r) {
                Ok(()) => return,
                Err(back) => r = back,
            }
        }
    }

    /// A created group on `key` that a watch starting at `start` can join,
    /// and the revision it has delivered up to.
    fn created_group(&self, key: &GroupKey, start: i64) -> Option<(Arc<Group>, i64)> {
        let groups = self.groups.lock().ok()?;
        groups.get(key)?.iter().find_map(|g| {
            let rev = g.created_at()?;
            (start == 0 || start > rev).then(|| (g.clone(), rev))
        })
    }

    /// A group on `key` not created yet that starts at `start`, or a new
    /// one (its upstream watch started).
    fn pending_group(
        self: &Arc<Self>,
        key: &GroupKey,
        metadata: &MetadataMap,
        start: i64,
    ) -> Arc<Group> {
        let mut groups = match self.groups.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let list = groups.entry(key.clone()).or_default();
        if let Some(g) = list.iter().find(|g| g.start == start && g.pending()) {
            return g.clone();
        }
        let group = Arc::new(Group {
            key: key.clone(),
            metadata: metadata.clone(),
            start,
            state: Mutex::default(),
            emptied: Notify::new(),
            asks: AtomicU64::new(0),
            ask: Notify::new(),
            answered: tokio::sync::watch::Sender::new((0, 0)),
        });
        list.push(group.clone());
        tokio::spawn(group.clone().run(self.clone()));
        group
    }

    /// Forget an ended group.
    fn remove(&self, group: &Arc<Group>) {
        if let Ok(mut groups) = self.groups.lock() {
            forget(&mut groups, group);
        }
    }

    /// The group has no receivers left: end it (unless one joined).
    fn retire(&self, group: &Arc<Group>) -> bool {
        let Ok(mut groups) = self.groups.lock() else {
            return false;
        };
        {
            let Ok(mut s) = group.state.lock() else {
                return false;
            };
            if !s.receivers.is_empty() {
                return false;
            }
            s.ended = true;
        }
        forget(&mut groups, group);
        true
    }

    /// Answer a client's progress request: the lowest revision every group
    /// of its stream vouches for (all events up to it delivered), or the
    /// member's current revision when the stream watches nothing.
    async fn progress(self: Arc<Self>, metadata: MetadataMap, registry: Registry, tx: ClientTx) {
        let mut groups: Vec<Arc<Group>> = registry
            .lock()
            .map(|r| r.values().filter_map(|(g, _)| g.upgrade()).collect())
            .unwrap_or_default();
        groups.sort_by_key(|g| Arc::as_ptr(g) as usize);
        groups.dedup_by(|a, b| Arc::ptr_eq(a, b));
        let mut header: Option<ResponseHeader> = None;
        if groups.is_empty() {
            header = self.current_header(&metadata).await;
        }
        for g in groups {
            let Ok(answer) = tokio::time::timeout(self.timeout, g.progress()).await else {
                return;
            };
            let Some(h) = answer else { continue };
            if header.as_ref().is_none_or(|min| h.revision < min.revision) {
                header = Some(h);
            }
        }
        if header.is_none() {
            header = self.current_header(&metadata).await;
        }
        let _ = tx
            .send(Ok(WatchResponse {
                header,
                watch_id: -1,
                ..Default::default()
            }))
            .await;
    }
}

impl Group {
    fn pending(&self) -> bool {
        self.state
            .lock()
            .map(|s| s.next_rev == 0 && !s.ended)
            .unwrap_or(false)
    }

    /// The revision everything is delivered up to, once created.
    fn created_at(&self) -> Option<i64> {
        let s = self.state.lock().ok()?;
        (s.next_rev > 0 && !s.ended).then_some(s.next_rev - 1)
    }

    fn header_at(&self, revision: i64) -> Option<ResponseHeader> {
        let s = self.state.lock().ok()?;
        let mut h = s.header.unwrap_or_default();
        h.revision = revision;
        Some(h)
    }

    /// Take `r` in if this group can serve it without a gap: a pending
    /// group that starts where it does, or a created one that has not
    /// delivered past its start. Otherwise it is handed back.
    fn join(self: &Arc<Self>, r: Receiver) -> Result<(), Receiver> {
        let Ok(mut s) = self.state.lock() else {
            return Err(r);
        };
        let fits = if s.ended {
            false
        } else if s.next_rev == 0 {
            r.next == self.start
        } else {
            r.created && r.next >= s.next_rev
        };
        if !fits {
            return Err(r);
        }
        let rid = RECEIVER_IDS.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut reg) = r.registry.lock() {
            reg.insert(r.watch_id, (Arc::downgrade(self), rid));
        }
        s.receivers.insert(rid, r);
        Ok(())
    }

    /// A client watch ends.
    fn leave(&self, rid: u64) {
        let Ok(mut s) = self.state.lock() else {
            return;
        };
        if s.receivers.remove(&rid).is_some() {
            metrics::CLIENT_WATCHERS.add(-1);
        }
        if s.receivers.is_empty() {
            self.emptied.notify_one();
        }
    }

    /// Ask the member for progress; the header of its answer.
    async fn progress(&self) -> Option<ResponseHeader> {
        let mut answered = self.answered.subscribe();
        let ticket = self.asks.fetch_add(1, Ordering::Relaxed) + 1;
        self.ask.notify_one();
        let (covered, rev) = *answered
            .wait_for(|(covered, _)| *covered >= ticket)
            .await
            .ok()?;
        // An ended group (its watches cancelled meanwhile) vouches for
        // nothing on the stream any more.
        if covered == u64::MAX {
            return None;
        }
        self.header_at(rev)
    }

    fn create_request(&self, start: i64) -> WatchRequest {
        WatchRequest {
            request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
                key: self.key.key.clone(),
                range_end: self.key.range_end.clone(),
                start_revision: start,
                progress_notify: self.key.progress_notify,
                prev_kv: true,
                ..Default::default()
            })),
        }
    }

    /// Own the upstream watch: open it (again after a failure, from the
    /// revision after the last one delivered) and deliver what it sends.
    async fn run(self: Arc<Self>, proxy: Arc<WatchProxy>) {
        metrics::UPSTREAM_WATCHES.add(1);
        let progress_request = || WatchRequest {
            request_union: Some(RequestUnion::ProgressRequest(WatchProgressRequest {})),
        };
        let mut attempts = 0;
        'connect: loop {
            let (i, channel) = proxy.upstream.channel();
            let (tx, rx) = mpsc::channel(16);
            {
                let Ok(mut s) = self.state.lock() else {
                    break;
                };
                let resume = if s.next_rev > 0 {
                    s.next_rev
                } else {
                    self.start
                };
                let _ = tx.try_send(self.create_request(resume));
                // Asks in flight on the failed stream are asked again.
                if !s.asked.is_empty() {
                    s.asked.clear();
                    s.asked.push_back(self.asks.load(Ordering::Relaxed));
                    let _ = tx.try_send(progress_request());
                }
            }
            let call = WatchClient::new(channel)
                .max_decoding_message_size(usize::MAX)
                .watch(request(&self.metadata, ReceiverStream::new(rx)))
                .await;
            let mut inbound = match call {
                Ok(r) => r.into_inner(),
                Err(e) => {
                    proxy.upstream.failed(i, &e);
                    attempts += 1;
                    proxy.upstream.pause_after_round(attempts).await;
                    continue;
                }
            };
            loop {
                tokio::select! {
                    m = inbound.message() => match m {
                        Ok(Some(resp)) => {
                            attempts = 0;
                            if !self.deliver(&proxy, resp).await {
                                break 'connect;
                            }
                        }
                        Ok(None) | Err(_) => {
                            let why = match m {
                                Err(e) => e,
                                _ => Status::unavailable("watch stream closed by the member"),
                            };
                            if !transport_failure(&why) {
                                tracing::warn!(error = %why, "upstream watch failed");
                            }
                            proxy.upstream.failed(i, &why);
                            attempts += 1;
                            proxy.upstream.pause_after_round(attempts).await;
                            continue 'connect;
                        }
                    },
                    _ = self.ask.notified() => {
                        if let Ok(mut s) = self.state.lock() {
                            s.asked.push_back(self.asks.load(Ordering::Relaxed));
                        }
                        if tx.send(progress_request()).await.is_err() {
                            continue 'connect;
                        }
                    },
                    _ = self.emptied.notified() => {
                        if proxy.retire(&self) {
                            break 'connect;
                        }
                    },
                }
            }
        }
        // Progress asks still waiting are answered at what was delivered.
        let delivered = self.state.lock().map(|s| s.next_rev - 1).unwrap_or(0);
        self.answered.send_replace((u64::MAX, delivered));
        metrics::UPSTREAM_WATCHES.add(-1);
    }

    /// Hand one upstream response to the receivers; false when the group
    /// has ended.
    async fn deliver(self: &Arc<Self>, proxy: &Arc<WatchProxy>, mut resp: WatchResponse) -> bool {
        let mut out: Vec<Outgoing> = Vec::new();
        let shared;
        {
            let Ok(mut s) = self.state.lock() else {
                return false;
            };
            if resp.header.is_some() {
                s.header = resp.header;
            }
            let rev = resp.header.as_ref().map_or(0, |h| h.revision);
            let header = resp.header;
            shared = s.receivers.len() > 1;
            if resp.canceled {
                // Refused when created (watch ID -1), or compacted away:
                // every client watch is told, and the group ends.
                s.ended = true;
                for (_, r) in s.receivers.drain() {
                    metrics::CLIENT_WATCHERS.add(-1);
                    if let Ok(mut reg) = r.registry.lock() {
                        reg.remove(&r.watch_id);
                    }
                    let told = WatchResponse {
                        watch_id: if resp.watch_id == -1 { -1 } else { r.watch_id },
                        created: !r.created,
                        canceled: true,
                        compact_revision: resp.compact_revision,
                        cancel_reason: resp.cancel_reason.clone(),
                        ..r.response(&header)
                    };
                    let tx = r.tx.clone();
                    tokio::spawn(async move { tx.send(Ok(told)).await });
                }
                drop(s);
                proxy.remove(self);
                return false;
            }
            if resp.created {
                if s.next_rev == 0 {
                    s.next_rev = if self.start > 0 { self.start } else { rev + 1 };
                }
                let next_rev = s.next_rev;
                for (rid, r) in s.receivers.iter_mut().filter(|(_, r)| !r.created) {
                    r.created = true;
                    r.next = r.next.max(next_rev);
                    out.push(Outgoing {
                        rid: *rid,
                        tx: r.tx.clone(),
                        responses: vec![WatchResponse {
                            created: true,
                            ..r.response(&header)
                        }],
                        from: 0,
                        was_created: false,
                    });
                }
            } else if resp.events.is_empty() {
                // A progress answer (ID -1) or notification: nothing up to
                // `rev` is left to deliver.
                s.next_rev = s.next_rev.max(rev + 1);
                if resp.watch_id == -1 {
                    if let Some(covered) = s.asked.pop_front() {
                        self.answered.send_replace((covered, rev));
                    }
                } else {
                    for (rid, r) in s.receivers.iter_mut().filter(|(_, r)| r.created) {
                        let from = r.next;
                        r.next = r.next.max(rev + 1);
                        out.push(Outgoing {
                            rid: *rid,
                            tx: r.tx.clone(),
                            responses: vec![r.response(&header)],
                            from,
                            was_created: true,
                        });
                    }
                }
            } else {
                proxy.ns.events(&mut resp.events);
                let last = resp
                    .events
                    .last()
                    .and_then(|e| e.kv.as_ref())
                    .map_or(rev, |kv| kv.mod_revision);
                let n = s.receivers.len() as i64;
                if n > 1 {
                    metrics::EVENTS_COALESCING.add(resp.events.len() as i64 * (n - 1));
                }
                for (rid, r) in s.receivers.iter_mut().filter(|(_, r)| r.created) {
                    let events = r.pick(&resp.events);
                    let from = r.next;
                    r.next = r.next.max(last + 1);
                    if events.is_empty() {
                        continue;
                    }
                    let whole = WatchResponse {
                        events,
                        ..r.response(&header)
                    };
                    out.push(Outgoing {
                        rid: *rid,
                        tx: r.tx.clone(),
                        responses: fragments(whole, r.fragment, proxy.max_bytes),
                        from,
                        was_created: true,
                    });
                }
                s.next_rev = s.next_rev.max(last + 1);
            }
        }
        for o in out {
            self.send(proxy, o, shared).await;
        }
        true
    }

    /// Send to one client watch. Alone in the group it is simply awaited;
    /// sharing the group, a client that is not reading is split off into
    /// a group of its own from where it stopped, so the others go on.
    async fn send(self: &Arc<Self>, proxy: &Arc<WatchProxy>, o: Outgoing, shared: bool) {
        for (k, resp) in o.responses.into_iter().enumerate() {
            let sent = if shared && k == 0 {
                match o.tx.try_send(Ok(resp)) {
                    Ok(()) => Ok(()),
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        self.split(proxy, o.rid, o.from, o.was_created);
                        return;
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => Err(()),
                }
            } else {
                o.tx.send(Ok(resp)).await.map_err(|_| ())
            };
            if sent.is_err() {
                self.leave(o.rid);
                return;
            }
        }
    }

    /// Move a lagging client watch to a group of its own, resuming at
    /// `from` (and announcing its creation there if it was not yet).
    fn split(self: &Arc<Self>, proxy: &Arc<WatchProxy>, rid: u64, from: i64, was_created: bool) {
        let Some(mut r) = self
            .state
            .lock()
            .ok()
            .and_then(|mut s| s.receivers.remove(&rid))
        else {
            return;
        };
        if self
            .state
            .lock()
            .map(|s| s.receivers.is_empty())
            .unwrap_or(false)
        {
            self.emptied.notify_one();
        }
        metrics::SPLITS.add(1);
        r.created = was_created;
        if was_created {
            r.next = from;
        }
        let (proxy, key, metadata) = (proxy.clone(), self.key.clone(), self.metadata.clone());
        tokio::spawn(async move { proxy.attach(key, metadata, r).await });
    }
}

/// Take `group` out of the proxy's map (and its key, when it was the last).
fn forget(groups: &mut HashMap<GroupKey, Vec<Arc<Group>>>, group: &Arc<Group>) {
    if let Some(list) = groups.get_mut(&group.key) {
        list.retain(|g| !Arc::ptr_eq(g, group));
        if list.is_empty() {
            groups.remove(&group.key);
        }
    }
}

/// A watch refused before it started.
fn refusal(header: Option<ResponseHeader>, reason: &str) -> WatchResponse {
    WatchResponse {
        header,
        watch_id: -1,
        created: true,
        canceled: true,
        cancel_reason: reason.to_string(),
        ..Default::default()
    }
}

/// The Watch service over a shared proxy (its groups outlive requests).
pub struct WatchService(pub Arc<WatchProxy>);

#[tonic::async_trait]
impl Watch for WatchService {
    type WatchStream = ReceiverStream<Result<WatchResponse, Status>>;

    async fn watch(
        &self,
        req: Request<Streaming<WatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let metadata = req.metadata().clone();
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(self.0.clone().serve(metadata, req.into_inner(), tx));
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}
