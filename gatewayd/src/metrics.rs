//! gatewayd's metrics, served as Prometheus text on /metrics together with
//! raftd's and storaged's (fetched over their sockets), so one scrape of
//! the client port sees the whole member as one of etcd's would. etcd's
//! names where etcd has one; triad's own are `triad_*`. gRPC calls of
//! etcd's registered methods count in a fixed table (no lock, no
//! allocation per call); other methods in locked families.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use common::metrics::{
    Counter, CounterVec, Gauge, Histogram, HistogramHandle, Info, Metric, Series,
};

pub static WATCH_STREAMS: Gauge = Gauge::new(
    "etcd_debugging_mvcc_watch_stream_total",
    "Total number of watch streams.",
);
pub static WATCHERS: Gauge = Gauge::new(
    "etcd_debugging_mvcc_watcher_total",
    "Total number of watchers.",
);
/// Watchers replaying history (new ones in the past, or a stream that fell
/// behind).
pub static SLOW_WATCHERS: Gauge = Gauge::new(
    "etcd_debugging_mvcc_slow_watcher_total",
    "Total number of unsynced slow watchers.",
);
pub static WATCH_EVENTS: Gauge = Gauge::counter(
    "etcd_debugging_mvcc_events_total",
    "Total number of events sent by this member.",
);
/// Events taken from the feed and not yet written to their client stream.
pub static PENDING_EVENTS: Gauge = Gauge::new(
    "etcd_debugging_mvcc_pending_events_total",
    "Total number of pending events to be sent.",
);
/// Events counted in PENDING_EVENTS while it lives (being written to a
/// client stream that may be full).
pub struct PendingEvents(i64);

impl PendingEvents {
    pub fn new(n: usize) -> PendingEvents {
        PENDING_EVENTS.add(n as i64);
        PendingEvents(n as i64)
    }
}

impl Drop for PendingEvents {
    fn drop(&mut self) {
        PENDING_EVENTS.add(-self.0);
    }
}

/// Times a client stream fell behind the live feed and caught up from
/// storaged's history instead (slow consumers).
pub static WATCH_CATCH_UPS: Gauge = Gauge::new(
    "triad_watch_catch_ups_total",
    "Times a watch stream fell behind the live feed and replayed history instead.",
);
pub static GRPC_STARTED: GrpcFamily = GrpcFamily::new(
    Column::Started,
    CounterVec::new(
        "grpc_server_started_total",
        "Total number of RPCs started on the server.",
        &["grpc_type", "grpc_service", "grpc_method"],
    ),
);
pub static GRPC_HANDLED: GrpcFamily = GrpcFamily::new(
    Column::Handled,
    CounterVec::new(
        "grpc_server_handled_total",
        "Total number of RPCs completed on the server, regardless of success or failure.",
        &["grpc_type", "grpc_service", "grpc_method", "grpc_code"],
    ),
);
pub static GRPC_RECEIVED: GrpcFamily = GrpcFamily::new(
    Column::Received,
    CounterVec::new(
        "grpc_server_msg_received_total",
        "Total number of RPC stream messages received on the server.",
        &["grpc_type", "grpc_service", "grpc_method"],
    ),
);
pub static GRPC_SENT: GrpcFamily = GrpcFamily::new(
    Column::Sent,
    CounterVec::new(
        "grpc_server_msg_sent_total",
        "Total number of gRPC stream messages sent by the server.",
        &["grpc_type", "grpc_service", "grpc_method"],
    ),
);
pub static CLIENT_RECEIVED_BYTES: Counter = Counter::new(
    "etcd_network_client_grpc_received_bytes_total",
    "The total number of bytes received from grpc clients.",
);
pub static CLIENT_SENT_BYTES: Counter = Counter::new(
    "etcd_network_client_grpc_sent_bytes_total",
    "The total number of bytes sent to grpc clients.",
);
pub static CLIENT_REQUESTS: ClientRequests = ClientRequests {
    known: [const { AtomicU64::new(0) }; CLIENT_VERSIONS.len() * 2],
    other: CounterVec::new(
        "etcd_server_client_requests_total",
        "The total number of client requests per client version.",
        &["type", "client_api_version"],
    ),
};
pub static HEALTH_SUCCESS: Counter = Counter::new(
    "etcd_server_health_success",
    "The total number of successful health checks",
);
pub static HEALTH_FAILURES: Counter = Counter::new(
    "etcd_server_health_failures",
    "The total number of failed health checks",
);
pub static QUOTA_BYTES: Gauge = Gauge::new(
    "etcd_server_quota_backend_bytes",
    "Current backend storage quota size in bytes.",
);
pub static SERVER_VERSION: Info = Info::new(
    "etcd_server_version",
    "Which version is running. 1 for 'server_version' label with current version.",
    "server_version",
);
pub static CLUSTER_VERSION: Info = Info::new(
    "etcd_cluster_version",
    "Which version is running. 1 for 'cluster_version' label with current cluster version",
    "cluster_version",
);
pub static SCRAPES_IN_FLIGHT: common::metrics::Gauge = Gauge::new(
    "promhttp_metric_handler_requests_in_flight",
    "Current number of scrapes being served.",
);
/// Scrapes answered, by status (etcd's 200, 500 and 503 rows).
static SCRAPES: [AtomicU64; 3] = [const { AtomicU64::new(0) }; 3];
/// Latency of gatewayd's calls to the member's other daemons over their
/// Unix sockets, by call.
pub static LOCAL_RPC: Histogram = Histogram::labelled(
    "triad_gatewayd_local_rpc_duration_seconds",
    "Latency of gatewayd's calls to raftd and storaged over Unix sockets.",
    "call",
    0.0001,
);

/// The version this member reports (/version, Status) for the version
/// gauges: the cluster's is its major.minor, as etcd's.
pub fn set_version(version: &str) {
    SERVER_VERSION.set(version.to_string());
}

/// The cluster version as applied (etcd's label is major.minor).
pub fn set_cluster_version(version: common::versions::Version) {
    CLUSTER_VERSION.set(version.major_minor());
}

pub fn render_own() -> String {
    let all: &[&dyn Metric] = &[
        common::logging::dropped("gatewayd"),
        &WATCH_STREAMS,
        &WATCHERS,
        &SLOW_WATCHERS,
        &WATCH_EVENTS,
        &PENDING_EVENTS,
        &WATCH_CATCH_UPS,
        &GRPC_STARTED,
        &GRPC_HANDLED,
        &GrpcHandling,
        &GRPC_RECEIVED,
        &GRPC_SENT,
        &CLIENT_RECEIVED_BYTES,
        &CLIENT_SENT_BYTES,
        &CLIENT_REQUESTS,
        &HEALTH_SUCCESS,
        &HEALTH_FAILURES,
        &QUOTA_BYTES,
        &SERVER_VERSION,
        &CLUSTER_VERSION,
        &LOCAL_RPC,
    ];
    let mut out = common::metrics::render(all);
    common::process::Usage::current().render_daemon("gatewayd", &mut out);
    out
}

/// The member's metrics as the client port (or gatewayd's metrics URL)
/// serves them: gatewayd's, raftd's and storaged's (`member`), the
/// member's process families summed over its daemons, and the scrape
/// counters, with etcd's content type.
pub fn scrape_answer(member: String) -> axum::response::Response {
    use axum::response::IntoResponse;
    SCRAPES_IN_FLIGHT.add(1);
    // Each daemon rendered its own triad_process_* families: one family
    // each, with every daemon's series, then the member's sum.
    let daemons = common::process::Usage::parse_daemons(&member);
    let mut out = common::process::without_daemon_lines(&member);
    common::process::render_daemons(&daemons, &mut out);
    let usage: Vec<_> = daemons.into_iter().map(|(_, u)| u).collect();
    common::process::Usage::member(&usage).render_standard(&mut out);
    out.push_str(&scrape_families());
    SCRAPES_IN_FLIGHT.add(-1);
    SCRAPES[0].fetch_add(1, Ordering::Relaxed);
    (
        [(
            axum::http::header::CONTENT_TYPE,
            common::metrics::CONTENT_TYPE,
        )],
        out,
    )
        .into_response()
}

/// promhttp's own families; this scrape counts as in flight and, like
/// promhttp's, not yet among the answered ones.
fn scrape_families() -> String {
    let mut out = String::new();
    SCRAPES_IN_FLIGHT.render(&mut out);
    out.push_str(
        "# HELP promhttp_metric_handler_requests_total Total number of scrapes by HTTP status code.\n\
         # TYPE promhttp_metric_handler_requests_total counter\n",
    );
    for (code, n) in ["200", "500", "503"].iter().zip(&SCRAPES) {
        out.push_str(&format!(
            "promhttp_metric_handler_requests_total{{code=\"{code}\"}} {}\n",
            n.load(Ordering::Relaxed)
        ));
    }
    out
}

/// etcd's /health outcome counted (the member's and the proxy's).
pub fn health_checked(ok: bool) {
    if ok {
        HEALTH_SUCCESS.inc();
    } else {
        HEALTH_FAILURES.inc();
    }
}

/// The gRPC methods etcd registers (and so reports, zeros included), with
/// their grpc_type.
const METHODS: [(&str, &str, &str); 41] = [
    ("etcdserverpb.Auth", "AuthDisable", "unary"),
    ("etcdserverpb.Auth", "AuthEnable", "unary"),
    ("etcdserverpb.Auth", "Authenticate", "unary"),
    ("etcdserverpb.Auth", "RoleAdd", "unary"),
    ("etcdserverpb.Auth", "RoleDelete", "unary"),
    ("etcdserverpb.Auth", "RoleGet", "unary"),
    ("etcdserverpb.Auth", "RoleGrantPermission", "unary"),
    ("etcdserverpb.Auth", "RoleList", "unary"),
    ("etcdserverpb.Auth", "RoleRevokePermission", "unary"),
    ("etcdserverpb.Auth", "UserAdd", "unary"),
    ("etcdserverpb.Auth", "UserChangePassword", "unary"),
    ("etcdserverpb.Auth", "UserDelete", "unary"),
    ("etcdserverpb.Auth", "UserGet", "unary"),
    ("etcdserverpb.Auth", "UserGrantRole", "unary"),
    ("etcdserverpb.Auth", "UserList", "unary"),
    ("etcdserverpb.Auth", "UserRevokeRole", "unary"),
    ("etcdserverpb.Cluster", "MemberAdd", "unary"),
    ("etcdserverpb.Cluster", "MemberList", "unary"),
    ("etcdserverpb.Cluster", "MemberPromote", "unary"),
    ("etcdserverpb.Cluster", "MemberRemove", "unary"),
    ("etcdserverpb.Cluster", "MemberUpdate", "unary"),
    ("etcdserverpb.KV", "Compact", "unary"),
    ("etcdserverpb.KV", "DeleteRange", "unary"),
    ("etcdserverpb.KV", "Put", "unary"),
    ("etcdserverpb.KV", "Range", "unary"),
    ("etcdserverpb.KV", "Txn", "unary"),
    ("etcdserverpb.Lease", "LeaseGrant", "unary"),
    ("etcdserverpb.Lease", "LeaseKeepAlive", "bidi_stream"),
    ("etcdserverpb.Lease", "LeaseLeases", "unary"),
    ("etcdserverpb.Lease", "LeaseRevoke", "unary"),
    ("etcdserverpb.Lease", "LeaseTimeToLive", "unary"),
    ("etcdserverpb.Maintenance", "Alarm", "unary"),
    ("etcdserverpb.Maintenance", "Defragment", "unary"),
    ("etcdserverpb.Maintenance", "Hash", "unary"),
    ("etcdserverpb.Maintenance", "HashKV", "unary"),
    ("etcdserverpb.Maintenance", "MoveLeader", "unary"),
    ("etcdserverpb.Maintenance", "Snapshot", "server_stream"),
    ("etcdserverpb.Maintenance", "Status", "unary"),
    ("etcdserverpb.Watch", "Watch", "bidi_stream"),
    ("grpc.health.v1.Health", "Check", "unary"),
    ("grpc.health.v1.Health", "Watch", "server_stream"),
];

const CODES: [&str; 17] = [
    "OK",
    "Canceled",
    "Unknown",
    "InvalidArgument",
    "DeadlineExceeded",
    "NotFound",
    "AlreadyExists",
    "PermissionDenied",
    "ResourceExhausted",
    "FailedPrecondition",
    "Aborted",
    "OutOfRange",
    "Unimplemented",
    "Internal",
    "Unavailable",
    "DataLoss",
    "Unauthenticated",
];

/// One registered method's counts.
struct MethodCounts {
    started: AtomicU64,
    handled: [AtomicU64; CODES.len()],
    received: AtomicU64,
    sent: AtomicU64,
}

static TABLE: [MethodCounts; METHODS.len()] = [const {
    MethodCounts {
        started: AtomicU64::new(0),
        handled: [const { AtomicU64::new(0) }; CODES.len()],
        received: AtomicU64::new(0),
        sent: AtomicU64::new(0),
    }
}; METHODS.len()];

fn method_index(service: &str, method: &str) -> Option<usize> {
    METHODS
        .iter()
        .position(|(s, m, _)| *m == method && *s == service)
}

fn code_index(code: &str) -> Option<usize> {
    CODES.iter().position(|c| *c == code)
}

#[derive(Clone, Copy)]
pub enum Column {
    Started,
    Handled,
    Received,
    Sent,
}

/// One of go-grpc-prometheus' server families: etcd's registered methods
/// from the table, any other method from `other`.
pub struct GrpcFamily {
    column: Column,
    other: CounterVec,
}

impl GrpcFamily {
    const fn new(column: Column, other: CounterVec) -> GrpcFamily {
        GrpcFamily { column, other }
    }

    /// Count one for labels in this family's order (grpc_type,
    /// grpc_service, grpc_method[, grpc_code]).
    pub fn inc(&self, values: &[&str]) {
        let row = match values {
            [_, service, method, ..] => method_index(service, method),
            _ => None,
        };
        let cell = row.and_then(|i| {
            let m = &TABLE[i];
            match self.column {
                Column::Started => Some(&m.started),
                Column::Received => Some(&m.received),
                Column::Sent => Some(&m.sent),
                Column::Handled => values
                    .get(3)
                    .and_then(|c| code_index(c))
                    .map(|c| &m.handled[c]),
            }
        });
        match cell {
            Some(c) => {
                c.fetch_add(1, Ordering::Relaxed);
            }
            None => self.other.inc(values),
        }
    }
}

impl Metric for GrpcFamily {
    fn render(&self, out: &mut String) {
        use std::fmt::Write;
        self.other.render(out);
        for (m, (service, method, kind)) in TABLE.iter().zip(METHODS) {
            let labels =
                format!("grpc_type=\"{kind}\",grpc_service=\"{service}\",grpc_method=\"{method}\"");
            let name = self.other.name();
            let one = |n: &AtomicU64| n.load(Ordering::Relaxed);
            match self.column {
                Column::Handled => {
                    for (code, n) in CODES.iter().zip(&m.handled) {
                        let _ = writeln!(out, "{name}{{{labels},grpc_code=\"{code}\"}} {}", one(n));
                    }
                }
                Column::Started => {
                    let _ = writeln!(out, "{name}{{{labels}}} {}", one(&m.started));
                }
                Column::Received => {
                    let _ = writeln!(out, "{name}{{{labels}}} {}", one(&m.received));
                }
                Column::Sent => {
                    let _ = writeln!(out, "{name}{{{labels}}} {}", one(&m.sent));
                }
            }
        }
    }
}

/// `--metrics extensive`: go-grpc-prometheus' handling-time histogram,
/// per registered method, with Prometheus' default buckets (etcd's).
static EXTENSIVE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

pub fn set_extensive(on: bool) {
    EXTENSIVE.store(on, Ordering::Relaxed);
}

const HANDLING_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// One method's handling times: a count per bucket (not cumulative),
/// those past the last, and the sum in nanoseconds.
struct HandlingTimes {
    buckets: [AtomicU64; HANDLING_BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
}

static HANDLING: [HandlingTimes; METHODS.len()] = [const {
    HandlingTimes {
        buckets: [const { AtomicU64::new(0) }; HANDLING_BUCKETS.len() + 1],
        sum_nanos: AtomicU64::new(0),
    }
}; METHODS.len()];

fn observe_handling(row: usize, took: std::time::Duration) {
    let secs = took.as_secs_f64();
    let at = HANDLING_BUCKETS
        .iter()
        .position(|b| secs <= *b)
        .unwrap_or(HANDLING_BUCKETS.len());
    let h = &HANDLING[row];
    h.buckets[at].fetch_add(1, Ordering::Relaxed);
    h.sum_nanos.fetch_add(
        took.as_nanos().min(u64::MAX as u128) as u64,
        Ordering::Relaxed,
    );
}

/// grpc_server_handling_seconds, when `--metrics extensive`.
pub struct GrpcHandling;

impl Metric for GrpcHandling {
    fn render(&self, out: &mut String) {
        use std::fmt::Write;
        if !EXTENSIVE.load(Ordering::Relaxed) {
            return;
        }
        let name = "grpc_server_handling_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Histogram of response latency (seconds) of gRPC that had been \
             application-level handled by the server.\n# TYPE {name} histogram"
        );
        for (h, (service, method, kind)) in HANDLING.iter().zip(METHODS) {
            let labels =
                format!("grpc_type=\"{kind}\",grpc_service=\"{service}\",grpc_method=\"{method}\"");
            let mut total = 0;
            for (i, n) in h.buckets.iter().enumerate() {
                total += n.load(Ordering::Relaxed);
                let le = HANDLING_BUCKETS
                    .get(i)
                    .map_or_else(|| "+Inf".to_string(), |b| b.to_string());
                let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {total}");
            }
            let sum = h.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
            let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
            let _ = writeln!(out, "{name}_count{{{labels}}} {total}");
        }
    }
}

/// Client API versions counted without a lock (etcdctl and clientv3 send
/// their major.minor); others, and requests without one ("unknown"), in a
/// locked family.
const CLIENT_VERSIONS: [&str; 7] = ["3.0", "3.1", "3.2", "3.3", "3.4", "3.5", "3.6"];

/// Client versions past this many distinct ones count as "unknown": the
/// label comes from clients.
const MAX_OTHER_VERSIONS: usize = 64;

/// etcd_server_client_requests_total{type, client_api_version}.
pub struct ClientRequests {
    /// [unary per version..., stream per version...]
    known: [AtomicU64; CLIENT_VERSIONS.len() * 2],
    other: CounterVec,
}

impl ClientRequests {
    fn count(&self, stream: bool, version: Option<&str>) {
        let kind = if stream { "stream" } else { "unary" };
        let version = version.filter(|v| v.len() <= 16 && !v.is_empty());
        match version.and_then(|v| CLIENT_VERSIONS.iter().position(|k| *k == v)) {
            Some(i) => {
                let at = i + if stream { CLIENT_VERSIONS.len() } else { 0 };
                self.known[at].fetch_add(1, Ordering::Relaxed);
            }
            None => {
                let v = match version {
                    Some(v) if self.other.len() < MAX_OTHER_VERSIONS => v,
                    _ => "unknown",
                };
                self.other.inc(&[kind, v]);
            }
        }
    }
}

impl Metric for ClientRequests {
    fn render(&self, out: &mut String) {
        use std::fmt::Write;
        self.other.render(out);
        for (i, n) in self.known.iter().enumerate() {
            let n = n.load(Ordering::Relaxed);
            if n == 0 {
                continue; // as etcd: a series appears with its first request
            }
            let kind = if i < CLIENT_VERSIONS.len() {
                "unary"
            } else {
                "stream"
            };
            let version = CLIENT_VERSIONS[i % CLIENT_VERSIONS.len()];
            let _ = writeln!(
                out,
                "etcd_server_client_requests_total{{type=\"{kind}\",client_api_version=\"{version}\"}} {n}"
            );
        }
    }
}

/// Time one local call under `call`.
pub async fn timed<T>(call: &str, f: impl std::future::Future<Output = T>) -> T {
    let started = std::time::Instant::now();
    let r = f.await;
    match local_call(call) {
        Some(h) => h.observe(started.elapsed()),
        None => LOCAL_RPC.observe_for(call, started.elapsed()),
    }
    r
}

/// The local calls timed on every request, resolved once.
fn local_call(call: &str) -> Option<&'static HistogramHandle> {
    static KNOWN: std::sync::OnceLock<Vec<(&'static str, HistogramHandle)>> =
        std::sync::OnceLock::new();
    KNOWN
        .get_or_init(|| {
            ["propose", "range", "read_index"]
                .into_iter()
                .map(|c| (c, LOCAL_RPC.handle(c)))
                .collect()
        })
        .iter()
        .find(|(c, _)| *c == call)
        .map(|(_, h)| h)
}

/// One gRPC call counted as go-grpc-prometheus counts it: started, then
/// "handled" with the status its response headers carry (an error) or OK;
/// its messages and bytes as its bodies pass.
pub struct GrpcCall {
    /// The call's URI (shared, cheap to clone): its path names the labels.
    uri: axum::http::Uri,
    /// Its row in the table of etcd's methods, if it has one.
    row: Option<usize>,
    started: std::time::Instant,
}

impl GrpcCall {
    pub fn start(uri: &axum::http::Uri) -> GrpcCall {
        let (kind, service, method) = grpc_labels(uri.path());
        let row = method_index(service, method);
        match row {
            Some(i) => {
                TABLE[i].started.fetch_add(1, Ordering::Relaxed);
            }
            None => GRPC_STARTED.other.inc(&[kind, service, method]),
        }
        GrpcCall {
            uri: uri.clone(),
            row,
            started: std::time::Instant::now(),
        }
    }

    /// The path called (`/<service>/<method>`).
    pub fn path(&self) -> &str {
        self.uri.path()
    }

    pub fn finish(self, headers: &axum::http::HeaderMap) {
        let code = headers
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(0);
        if let Some(row) = self.row {
            if EXTENSIVE.load(Ordering::Relaxed) {
                observe_handling(row, self.started.elapsed());
            }
        }
        match (self.row, CODES.get(code)) {
            (Some(i), Some(_)) => {
                TABLE[i].handled[code].fetch_add(1, Ordering::Relaxed);
            }
            (_, name) => {
                let (kind, service, method) = grpc_labels(self.uri.path());
                let name = name.copied().unwrap_or("Unknown");
                GRPC_HANDLED.other.inc(&[kind, service, method, name]);
            }
        }
    }

    /// Count the call's client (etcd's client_requests_total) and its
    /// request messages and bytes as they are read.
    pub fn counted_request(
        &self,
        req: axum::http::Request<tonic::body::Body>,
    ) -> axum::http::Request<tonic::body::Body> {
        let (kind, service, method) = grpc_labels(self.uri.path());
        let version = req
            .headers()
            .get("client-api-version")
            .and_then(|v| v.to_str().ok());
        CLIENT_REQUESTS.count(kind != "unary", version);
        let messages = match self.row {
            Some(i) => Messages::Table(&TABLE[i].received),
            None => Messages::Other(GRPC_RECEIVED.other.handle(&[kind, service, method])),
        };
        req.map(|b| tonic::body::Body::new(Counted::new(b, messages, &CLIENT_RECEIVED_BYTES)))
    }

    /// Count the response's messages and bytes as they are written.
    pub fn counted_response(
        &self,
        resp: axum::http::Response<tonic::body::Body>,
    ) -> axum::http::Response<tonic::body::Body> {
        let messages = match self.row {
            Some(i) => Messages::Table(&TABLE[i].sent),
            None => {
                let (kind, service, method) = grpc_labels(self.uri.path());
                Messages::Other(GRPC_SENT.other.handle(&[kind, service, method]))
            }
        };
        resp.map(|b| tonic::body::Body::new(Counted::new(b, messages, &CLIENT_SENT_BYTES)))
    }
}

/// Where a body's gRPC messages are counted.
enum Messages {
    Table(&'static AtomicU64),
    Other(Series),
}

/// A gRPC body whose data passes through a count of its bytes and of the
/// length-prefixed messages in it.
struct Counted<B> {
    inner: B,
    messages: Messages,
    bytes: &'static Counter,
    framer: Framer,
}

impl<B> Counted<B> {
    fn new(inner: B, messages: Messages, bytes: &'static Counter) -> Counted<B> {
        Counted {
            inner,
            messages,
            bytes,
            framer: Framer::default(),
        }
    }
}

impl<B> http_body::Body for Counted<B>
where
    B: http_body::Body<Data = bytes::Bytes> + Unpin,
{
    type Data = bytes::Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<bytes::Bytes>, B::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                this.bytes.add(data.len() as u64);
                let n = this.framer.feed(data);
                if n > 0 {
                    match &this.messages {
                        Messages::Table(c) => c.fetch_add(n, Ordering::Relaxed),
                        Messages::Other(s) => s.fetch_add(n as i64, Ordering::Relaxed) as u64,
                    };
                }
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Finds gRPC message boundaries (a flag byte and a 4-byte big-endian
/// length before each message) in data arriving in arbitrary pieces.
#[derive(Default)]
struct Framer {
    /// Bytes of the current message body still to come.
    remaining: u64,
    /// The prefix read so far.
    prefix: [u8; 5],
    have: usize,
}

impl Framer {
    /// Messages whose prefix completes in `data`.
    fn feed(&mut self, mut data: &[u8]) -> u64 {
        let mut messages = 0;
        while !data.is_empty() {
            if self.remaining > 0 {
                let n = data
                    .len()
                    .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
                self.remaining -= n as u64;
                data = &data[n..];
                continue;
            }
            let n = data.len().min(5 - self.have);
            self.prefix[self.have..self.have + n].copy_from_slice(&data[..n]);
            self.have += n;
            data = &data[n..];
            if self.have == 5 {
                let [_, a, b, c, d] = self.prefix;
                self.remaining = u64::from(u32::from_be_bytes([a, b, c, d]));
                self.have = 0;
                messages += 1;
            }
        }
        messages
    }
}

/// Count the gRPC calls of an axum router (the L7 proxy's).
pub async fn count_grpc(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let call = GrpcCall::start(req.uri());
    let resp = next.run(req).await;
    call.finish(resp.headers());
    resp
}

/// grpc_type, grpc_service and grpc_method of a call to `path`.
fn grpc_labels(path: &str) -> (&'static str, &str, &str) {
    let (service, method) = service_and_method(path);
    (grpc_type(service, method), service, method)
}

/// The service and method a gRPC call's path (`/<service>/<method>`)
/// names; empty strings for a path that names none.
pub fn service_and_method(path: &str) -> (&str, &str) {
    path.trim_start_matches('/')
        .split_once('/')
        .unwrap_or(("", ""))
}

fn grpc_type(service: &str, method: &str) -> &'static str {
    if let Some(i) = method_index(service, method) {
        return METHODS[i].2;
    }
    match (service, method) {
        ("v3electionpb.Election", "Observe") => "server_stream",
        _ => "unary",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_found_across_any_split() {
        let mut wire = Vec::new();
        for body in [&b"abc"[..], b"", b"0123456789"] {
            wire.push(0);
            wire.extend_from_slice(&(body.len() as u32).to_be_bytes());
            wire.extend_from_slice(body);
        }
        for step in 1..wire.len() {
            let mut f = Framer::default();
            let n: u64 = wire.chunks(step).map(|c| f.feed(c)).sum();
            assert_eq!(n, 3, "pieces of {step}");
        }
    }

    #[test]
    fn etcds_methods_count_in_the_table_and_others_aside() {
        // Labels no other test counts under (the families are statics).
        GRPC_STARTED.inc(&["unary", "etcdserverpb.Maintenance", "MoveLeader"]);
        GRPC_HANDLED.inc(&[
            "unary",
            "etcdserverpb.Maintenance",
            "MoveLeader",
            "DataLoss",
        ]);
        GRPC_STARTED.inc(&["unary", "triad.test.Only", "Counted"]);
        let mut out = String::new();
        GRPC_STARTED.render(&mut out);
        GRPC_HANDLED.render(&mut out);
        let has = |line: &str| out.lines().any(|l| l == line);
        assert!(has("grpc_server_started_total{grpc_type=\"unary\",grpc_service=\"etcdserverpb.Maintenance\",grpc_method=\"MoveLeader\"} 1"), "{out}");
        assert!(has("grpc_server_started_total{grpc_type=\"unary\",grpc_service=\"triad.test.Only\",grpc_method=\"Counted\"} 1"), "{out}");
        assert!(has("grpc_server_handled_total{grpc_type=\"unary\",grpc_service=\"etcdserverpb.Maintenance\",grpc_method=\"MoveLeader\",grpc_code=\"DataLoss\"} 1"), "{out}");
        assert_eq!(
            out.matches("# TYPE grpc_server_handled_total counter")
                .count(),
            1
        );
        let rows = |prefix: &str| out.lines().filter(|l| l.starts_with(prefix)).count();
        assert!(rows("grpc_server_handled_total{") >= 41 * 17);
    }
}
