//! storaged's metrics, with etcd's names: the MVCC store's counts and
//! revisions, backend commit, hash, defrag, snapshot and compaction
//! latencies, leases as applied, and the store's size. Counted where they
//! happen (relaxed atomics); revisions and sizes are read when rendered.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, OnceLock};

use common::metrics::{Alias, Counter, Gauge, Histogram, Metric};

use common::proto::etcdserverpb::response_op::Response;
use common::proto::etcdserverpb::TxnResponse;

use crate::store::Store;

pub static BACKEND_COMMIT: Histogram = Histogram::new(
    "etcd_disk_backend_commit_duration_seconds",
    "The latency distributions of commit called by backend.",
    0.001,
);
pub static DB_SIZE: Gauge = Gauge::new(
    "etcd_mvcc_db_total_size_in_bytes",
    "Total size of the underlying database physically allocated in bytes.",
);
pub static DB_SIZE_DEBUGGING: Gauge = Gauge::new(
    "etcd_debugging_mvcc_db_total_size_in_bytes",
    "Total size of the underlying database physically allocated in bytes.",
);
pub static DB_SIZE_IN_USE: Gauge = Gauge::new(
    "etcd_mvcc_db_total_size_in_use_in_bytes",
    "Total size of the underlying database logically in use in bytes.",
);
pub static OPEN_READS: Gauge = Gauge::new(
    "etcd_mvcc_db_open_read_transactions",
    "The number of currently open read transactions",
);
/// A read transaction open while it lives (etcd_mvcc_db_open_read_transactions).
pub struct OpenRead(());

impl OpenRead {
    pub fn start() -> OpenRead {
        OPEN_READS.add(1);
        OpenRead(())
    }
}

impl Drop for OpenRead {
    fn drop(&mut self) {
        OPEN_READS.add(-1);
    }
}

pub static APPLY_BATCHES: Counter = Counter::new(
    "triad_storaged_apply_batches_total",
    "Batches of raft entries applied (each one commit).",
);
pub static APPLY_HEADS_UPS: Counter = Counter::new(
    "triad_storaged_apply_heads_ups_total",
    "Heads-ups from raftd that an Apply is on its way (storaged spins for it).",
);

// The MVCC operations applied (etcd counts them at its MVCC layer; the
// etcd_debugging_mvcc_* twins carry the same numbers).
pub static PUTS: Counter = Counter::new(
    "etcd_mvcc_put_total",
    "Total number of puts seen by this member.",
);
pub static RANGES: Counter = Counter::new(
    "etcd_mvcc_range_total",
    "Total number of ranges seen by this member.",
);
pub static DELETES: Counter = Counter::new(
    "etcd_mvcc_delete_total",
    "Total number of deletes seen by this member.",
);
pub static TXNS: Counter = Counter::new(
    "etcd_mvcc_txn_total",
    "Total number of txns seen by this member.",
);
static PUTS_DEBUGGING: Alias = Alias::new(
    "etcd_debugging_mvcc_put_total",
    "Total number of puts seen by this member.",
    &PUTS,
);
static RANGES_DEBUGGING: Alias = Alias::new(
    "etcd_debugging_mvcc_range_total",
    "Total number of ranges seen by this member.",
    &RANGES,
);
static DELETES_DEBUGGING: Alias = Alias::new(
    "etcd_debugging_mvcc_delete_total",
    "Total number of deletes seen by this member.",
    &DELETES,
);
static TXNS_DEBUGGING: Alias = Alias::new(
    "etcd_debugging_mvcc_txn_total",
    "Total number of txns seen by this member.",
    &TXNS,
);
pub static PUT_BYTES: Gauge = Gauge::new(
    "etcd_debugging_mvcc_total_put_size_in_bytes",
    "The total size of put kv pairs seen by this member.",
);
pub static SLOW_APPLIES: Counter = Counter::new(
    "etcd_server_slow_apply_total",
    "The total number of slow apply requests (likely overloaded from slow disk).",
);

pub static HASH: Histogram = Histogram::new(
    "etcd_mvcc_hash_duration_seconds",
    "The latency distribution of storage hash operation.",
    0.01,
)
.buckets(15);
pub static HASH_REV: Histogram = Histogram::new(
    "etcd_mvcc_hash_rev_duration_seconds",
    "The latency distribution of storage hash by revision operation.",
    0.01,
)
.buckets(15);
pub static DEFRAG: Histogram = Histogram::new(
    "etcd_disk_backend_defrag_duration_seconds",
    "The latency distribution of backend defragmentation.",
    0.1,
)
.buckets(13);
pub static DEFRAG_INFLIGHT: Gauge = Gauge::new(
    "etcd_disk_defrag_inflight",
    "Whether or not defrag is active on the member. 1 means active, 0 means not.",
);
pub static SNAPSHOT: Histogram = Histogram::new(
    "etcd_disk_backend_snapshot_duration_seconds",
    "The latency distribution of backend snapshots.",
    0.01,
)
.buckets(17);

pub static INDEX_COMPACTION_PAUSE: Histogram = Histogram::new(
    "etcd_debugging_mvcc_index_compaction_pause_duration_milliseconds",
    "Bucketed histogram of index compaction pause duration.",
    0.5,
);
pub static DB_COMPACTION_PAUSE: Histogram = Histogram::new(
    "etcd_debugging_mvcc_db_compaction_pause_duration_milliseconds",
    "Bucketed histogram of db compaction pause duration.",
    1.0,
)
.buckets(13);
pub static DB_COMPACTION_TOTAL: Histogram = Histogram::new(
    "etcd_debugging_mvcc_db_compaction_total_duration_milliseconds",
    "Bucketed histogram of db compaction total duration.",
    100.0,
);
pub static DB_COMPACTION_KEYS: Counter = Counter::new(
    "etcd_debugging_mvcc_db_compaction_keys_total",
    "Total number of db keys compacted.",
);

// Leases as applied (every member counts, as etcd's lessor does).
pub static LEASES_GRANTED: Counter = Counter::new(
    "etcd_debugging_lease_granted_total",
    "The total number of granted leases.",
);
pub static LEASES_REVOKED: Counter = Counter::new(
    "etcd_debugging_lease_revoked_total",
    "The total number of revoked leases.",
);
pub static LEASE_TTL: Histogram = Histogram::new(
    "etcd_debugging_lease_ttl_total",
    "Bucketed histogram of lease TTLs.",
    1.0,
)
.buckets(24);

static CURRENT_REVISION: Gauge = Gauge::new(
    "etcd_debugging_mvcc_current_revision",
    "The current revision of store.",
);
static COMPACT_REVISION: Gauge = Gauge::new(
    "etcd_debugging_mvcc_compact_revision",
    "The revision of the last compaction in store.",
);
static AUTH_REVISION: Gauge = Gauge::new(
    "etcd_debugging_auth_revision",
    "The current revision of auth store.",
);
static KEYS: Gauge = Gauge::new("etcd_debugging_mvcc_keys_total", "Total number of keys.");

/// Live keys created minus deleted since start; with `KEYS_BASE` (the
/// count at a snapshot, less the changes already counted then) the total.
pub static KEYS_CHANGED: AtomicI64 = AtomicI64::new(0);
static KEYS_BASE: AtomicI64 = AtomicI64::new(0);
static KEYS_COUNTED: AtomicBool = AtomicBool::new(false);

/// A put of `size` bytes (key and value) applied.
pub fn put(size: usize) {
    PUTS.inc();
    PUT_BYTES.add(size as i64);
}

/// A key written: created (was not live, is now), deleted, or neither.
pub fn key_changed(was_live: bool, is_live: bool) {
    match (was_live, is_live) {
        (false, true) => KEYS_CHANGED.fetch_add(1, Ordering::Relaxed),
        (true, false) => KEYS_CHANGED.fetch_sub(1, Ordering::Relaxed),
        _ => 0,
    };
}

/// A txn executed: etcd counts one in etcd_mvcc_txn_total when it ran
/// more than one operation (ranges, puts, deletes, nested ones included).
pub fn txn_done(r: &TxnResponse) {
    fn ops(r: &TxnResponse) -> usize {
        r.responses
            .iter()
            .map(|op| match &op.response {
                Some(Response::ResponseTxn(t)) => ops(t),
                Some(_) => 1,
                None => 0,
            })
            .sum()
    }
    if ops(r) > 1 {
        TXNS.inc();
    }
}

pub fn lease_granted(ttl: i64) {
    LEASES_GRANTED.inc();
    LEASE_TTL.observe_value(ttl as f64);
}

/// The logical part of a compaction (etcd's index compaction), timed.
pub fn index_compaction<T>(f: impl FnOnce() -> T) -> T {
    let started = std::time::Instant::now();
    let r = f();
    INDEX_COMPACTION_PAUSE.observe_value(started.elapsed().as_secs_f64() * 1000.0);
    r
}

/// The store whose revisions `render` reports (set at start).
static STORE: OnceLock<Arc<Store>> = OnceLock::new();

/// Report `store`'s revisions, and count its live keys once in the
/// background (the count is then kept by apply): start is not delayed by
/// the key count.
pub fn follow(store: Arc<Store>) {
    let _ = STORE.set(store.clone());
    tokio::task::spawn_blocking(move || match store.count_keys() {
        Ok((count, changed_then)) => {
            KEYS_BASE.store(count - changed_then, Ordering::Relaxed);
            KEYS_COUNTED.store(true, Ordering::Relaxed);
        }
        Err(e) => tracing::warn!(error = %e, "cannot count the store's keys for metrics"),
    });
}

pub fn render() -> String {
    if let Some(store) = STORE.get() {
        let bounds = store.bounds();
        CURRENT_REVISION.set(bounds.current);
        // etcd reports -1 before the first compaction.
        COMPACT_REVISION.set(if bounds.compacted == 0 {
            -1
        } else {
            bounds.compacted
        });
        AUTH_REVISION.set(store.auth_revision() as i64);
    }
    if KEYS_COUNTED.load(Ordering::Relaxed) {
        KEYS.set(KEYS_BASE.load(Ordering::Relaxed) + KEYS_CHANGED.load(Ordering::Relaxed));
    }
    DB_SIZE_DEBUGGING.set(DB_SIZE.get());
    DB_SIZE_IN_USE.set(DB_SIZE.get());
    let all: &[&dyn Metric] = &[
        common::logging::dropped("storaged"),
        &BACKEND_COMMIT,
        &DB_SIZE,
        &DB_SIZE_DEBUGGING,
        &DB_SIZE_IN_USE,
        &OPEN_READS,
        &APPLY_BATCHES,
        &APPLY_HEADS_UPS,
        &PUTS,
        &RANGES,
        &DELETES,
        &TXNS,
        &PUT_BYTES,
        &SLOW_APPLIES,
        &HASH,
        &HASH_REV,
        &DEFRAG,
        &DEFRAG_INFLIGHT,
        &SNAPSHOT,
        &INDEX_COMPACTION_PAUSE,
        &DB_COMPACTION_PAUSE,
        &DB_COMPACTION_TOTAL,
        &DB_COMPACTION_KEYS,
        &LEASES_GRANTED,
        &LEASES_REVOKED,
        &LEASE_TTL,
        &CURRENT_REVISION,
        &COMPACT_REVISION,
        &AUTH_REVISION,
        &KEYS,
        &PUTS_DEBUGGING,
        &RANGES_DEBUGGING,
        &DELETES_DEBUGGING,
        &TXNS_DEBUGGING,
    ];
    let mut out = common::metrics::render(all);
    common::process::Usage::current().render_daemon("storaged", &mut out);
    out
}

/// storaged's metrics URL: its own families plus the standard process ones
/// for storaged alone.
pub fn render_url() -> String {
    let mut out = render();
    common::process::Usage::current().render_standard(&mut out);
    out
}
