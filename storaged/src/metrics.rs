//! storaged's metrics, with etcd's names: backend commit latency and the
//! store's size.

use common::metrics::{Counter, Gauge, Histogram, Metric};

pub static BACKEND_COMMIT: Histogram = Histogram::new(
    "etcd_disk_backend_commit_duration_seconds",
    "The latency distributions of commit called by backend.",
    0.001,
);
pub static DB_SIZE: Gauge = Gauge::new(
    "etcd_mvcc_db_total_size_in_bytes",
    "Total size of the underlying database physically allocated in bytes.",
);
pub static DB_SIZE_IN_USE: Gauge = Gauge::new(
    "etcd_mvcc_db_total_size_in_use_in_bytes",
    "Total size of the underlying database logically in use in bytes.",
);
pub static APPLY_BATCHES: Counter = Counter::new(
    "triad_storaged_apply_batches_total",
    "Batches of raft entries applied (each one commit).",
);

pub static APPLY_HEADS_UPS: Counter = Counter::new(
    "triad_storaged_apply_heads_ups_total",
    "Heads-ups from raftd that an Apply is on its way (storaged spins for it).",
);

pub fn render() -> String {
    let all: [&dyn Metric; 6] = [
        common::logging::dropped("storaged"),
        &BACKEND_COMMIT,
        &DB_SIZE,
        &DB_SIZE_IN_USE,
        &APPLY_BATCHES,
        &APPLY_HEADS_UPS,
    ];
    common::metrics::render(&all)
}
