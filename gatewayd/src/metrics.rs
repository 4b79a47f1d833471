//! gatewayd's metrics, served as Prometheus text on /metrics together with
//! raftd's and storaged's (fetched over their sockets), so one scrape of
//! the client port sees the whole member as one of etcd's would. etcd's
//! names where etcd has one; triad's own are `triad_*`.

use common::metrics::{CounterVec, Gauge, Histogram, Metric};

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
pub static WATCH_EVENTS: Gauge = Gauge::new(
    "etcd_debugging_mvcc_events_total",
    "Total number of events sent by this member.",
);
/// Times a client stream fell behind the live feed and caught up from
/// storaged's history instead (slow consumers).
pub static WATCH_CATCH_UPS: Gauge = Gauge::new(
    "triad_watch_catch_ups_total",
    "Times a watch stream fell behind the live feed and replayed history instead.",
);
pub static GRPC_STARTED: CounterVec = CounterVec::new(
    "grpc_server_started_total",
    "Total number of RPCs started on the server.",
    &["grpc_type", "grpc_service", "grpc_method"],
);
pub static GRPC_HANDLED: CounterVec = CounterVec::new(
    "grpc_server_handled_total",
    "Total number of RPCs completed on the server, regardless of success or failure.",
    &["grpc_type", "grpc_service", "grpc_method", "grpc_code"],
);
/// Latency of gatewayd's calls to the member's other daemons over their
/// Unix sockets, by call.
pub static LOCAL_RPC: Histogram = Histogram::labelled(
    "triad_gatewayd_local_rpc_duration_seconds",
    "Latency of gatewayd's calls to raftd and storaged over Unix sockets.",
    "call",
    0.0001,
);

pub fn render_own() -> String {
    let all: [&dyn Metric; 9] = [
        common::logging::dropped("gatewayd"),
        &WATCH_STREAMS,
        &WATCHERS,
        &SLOW_WATCHERS,
        &WATCH_EVENTS,
        &WATCH_CATCH_UPS,
        &GRPC_STARTED,
        &GRPC_HANDLED,
        &LOCAL_RPC,
    ];
    common::metrics::render(&all)
}

/// Time one local call under `call`.
pub async fn timed<T>(call: &str, f: impl std::future::Future<Output = T>) -> T {
    let started = std::time::Instant::now();
    let r = f.await;
    LOCAL_RPC.observe_for(call, started.elapsed());
    r
}

/// One gRPC call counted as go-grpc-prometheus counts it: started, then
/// "handled" with the status its response headers carry (an error) or OK.
pub struct GrpcCall {
    /// The call's URI (shared, cheap to clone): its path names the labels.
    uri: axum::http::Uri,
}

impl GrpcCall {
    pub fn start(uri: &axum::http::Uri) -> GrpcCall {
        let (kind, service, method) = grpc_labels(uri.path());
        GRPC_STARTED.inc(&[kind, service, method]);
        GrpcCall { uri: uri.clone() }
    }

    /// The path called (`/<service>/<method>`).
    pub fn path(&self) -> &str {
        self.uri.path()
    }

    pub fn finish(self, headers: &axum::http::HeaderMap) {
        let (kind, service, method) = grpc_labels(self.uri.path());
        let code = headers
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<i32>().ok())
            .map_or("OK", code_name);
        GRPC_HANDLED.inc(&[kind, service, method, code]);
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
    match (service, method) {
        ("etcdserverpb.Watch", "Watch") | ("etcdserverpb.Lease", "LeaseKeepAlive") => "bidi_stream",
        ("etcdserverpb.Maintenance", "Snapshot") | ("v3electionpb.Election", "Observe") => {
            "server_stream"
        }
        _ => "unary",
    }
}

fn code_name(code: i32) -> &'static str {
    const NAMES: [&str; 17] = [
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
    usize::try_from(code)
        .ok()
        .and_then(|i| NAMES.get(i))
        .copied()
        .unwrap_or("Unknown")
}
