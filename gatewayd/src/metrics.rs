//! gatewayd's metrics, served as Prometheus text on /metrics. Watch metrics
//! use etcd's names where etcd has one, so existing dashboards work; the
//! rest of etcd's metric set arrives with the operations work.

use std::fmt::Write;
use std::sync::atomic::{AtomicI64, Ordering};

pub struct Gauge(AtomicI64);

impl Gauge {
    const fn new() -> Gauge {
        Gauge(AtomicI64::new(0))
    }
    pub fn add(&self, n: i64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Open client watch streams.
pub static WATCH_STREAMS: Gauge = Gauge::new();
/// Watchers on those streams.
pub static WATCHERS: Gauge = Gauge::new();
/// Watchers currently replaying history (new ones in the past, or a stream
/// that fell behind).
pub static SLOW_WATCHERS: Gauge = Gauge::new();
/// Events sent to watchers.
pub static WATCH_EVENTS: Gauge = Gauge::new();
/// Times a client stream fell behind the live feed and caught up from
/// storaged's history instead (slow consumers).
pub static WATCH_CATCH_UPS: Gauge = Gauge::new();

const METRICS: [(&str, &str, &str, &Gauge); 5] = [
    (
        "etcd_debugging_mvcc_watch_stream_total",
        "gauge",
        "Total number of watch streams.",
        &WATCH_STREAMS,
    ),
    (
        "etcd_debugging_mvcc_watcher_total",
        "gauge",
        "Total number of watchers.",
        &WATCHERS,
    ),
    (
        "etcd_debugging_mvcc_slow_watcher_total",
        "gauge",
        "Total number of unsynced slow watchers.",
        &SLOW_WATCHERS,
    ),
    (
        "etcd_debugging_mvcc_events_total",
        "counter",
        "Total number of events sent by this member.",
        &WATCH_EVENTS,
    ),
    (
        "triad_watch_catch_ups_total",
        "counter",
        "Times a watch stream fell behind the live feed and replayed history instead.",
        &WATCH_CATCH_UPS,
    ),
];

pub fn render() -> String {
    let mut out = String::new();
    for (name, kind, help, value) in METRICS {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {}",
            value.get()
        );
    }
    out
}
