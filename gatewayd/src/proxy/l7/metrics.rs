//! The L7 proxy's metrics, with etcd grpc-proxy's names where it has one.

use common::metrics::{CounterVec, Gauge, Metric};

pub static WATCHERS_COALESCING: Gauge = Gauge::new(
    "etcd_grpc_proxy_watchers_coalescing_total",
    "Total number of current watchers coalescing",
);
/// A counter in etcd's grpc-proxy.
pub static EVENTS_COALESCING: Gauge = Gauge::counter(
    "etcd_grpc_proxy_events_coalescing_total",
    "Total number of events coalescing",
);
pub static CACHE_KEYS: Gauge = Gauge::new(
    "etcd_grpc_proxy_cache_keys_total",
    "Total number of keys/ranges cached",
);
pub static CACHE_HITS: Gauge = Gauge::new(
    "etcd_grpc_proxy_cache_hits_total",
    "Total number of cache hits",
);
pub static CACHE_MISSES: Gauge = Gauge::new(
    "etcd_grpc_proxy_cache_misses_total",
    "Total number of cache misses",
);
/// Client watchers served, and the upstream watches serving them.
pub static CLIENT_WATCHERS: Gauge = Gauge::new(
    "triad_proxy_client_watchers",
    "Watchers clients have open on the proxy.",
);
pub static UPSTREAM_WATCHES: Gauge = Gauge::new(
    "triad_proxy_upstream_watches",
    "Watches the proxy holds open on the cluster for its clients.",
);
/// Lease keepalives from clients and those sent on to the cluster.
pub static KEEPALIVES: CounterVec = CounterVec::new(
    "triad_proxy_lease_keepalives_total",
    "Lease keepalive requests received from clients and sent to the cluster.",
    &["side"],
);
/// Client watches moved to a group of their own for not reading.
pub static SPLITS: Gauge = Gauge::new(
    "triad_proxy_watch_splits_total",
    "Client watches split off a shared upstream watch because they fell behind.",
);
pub static FAILOVERS: Gauge = Gauge::new(
    "triad_proxy_upstream_failovers_total",
    "Times the proxy moved to another member after a failure.",
);

/// The proxy's /metrics answer, with etcd's content type.
pub fn render() -> axum::response::Response {
    use axum::response::IntoResponse;
    (
        [(
            axum::http::header::CONTENT_TYPE,
            common::metrics::CONTENT_TYPE,
        )],
        render_text(),
    )
        .into_response()
}

fn render_text() -> String {
    WATCHERS_COALESCING.set((CLIENT_WATCHERS.get() - UPSTREAM_WATCHES.get()).max(0));
    let all: [&dyn Metric; 12] = [
        &crate::metrics::GRPC_STARTED,
        &crate::metrics::GRPC_HANDLED,
        &WATCHERS_COALESCING,
        &EVENTS_COALESCING,
        &CACHE_KEYS,
        &CACHE_HITS,
        &CACHE_MISSES,
        &CLIENT_WATCHERS,
        &UPSTREAM_WATCHES,
        &KEEPALIVES,
        &SPLITS,
        &FAILOVERS,
    ];
    common::metrics::render(&all)
}
