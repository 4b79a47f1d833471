//! raftd's metrics, with etcd's names: leadership, proposals, WAL fsync
//! latency and peer round trips. Leadership follows openraft's server
//! metrics (which change only with leadership and membership); the raft
//! indices are read when the metrics are rendered; the rest are counted
//! where they happen.

use std::sync::OnceLock;
use std::time::Duration;

use common::metrics::{Counter, Gauge, Histogram, Metric};
use openraft::async_runtime::WatchReceiver;

use crate::Raft;

pub static HAS_LEADER: Gauge = Gauge::new(
    "etcd_server_has_leader",
    "Whether or not a leader exists. 1 is existence, 0 is not.",
);
pub static IS_LEADER: Gauge = Gauge::new(
    "etcd_server_is_leader",
    "Whether or not this member is a leader. 1 if is, 0 otherwise.",
);
pub static LEADER_CHANGES: Counter = Counter::new(
    "etcd_server_leader_changes_seen_total",
    "The number of leader changes seen.",
);
pub static PROPOSALS_COMMITTED: Gauge = Gauge::new(
    "etcd_server_proposals_committed_total",
    "The total number of consensus proposals committed.",
);
pub static PROPOSALS_APPLIED: Gauge = Gauge::new(
    "etcd_server_proposals_applied_total",
    "The total number of consensus proposals applied.",
);
pub static PROPOSALS_PENDING: Gauge = Gauge::new(
    "etcd_server_proposals_pending",
    "The current number of pending proposals to commit.",
);
pub static PROPOSALS_FAILED: Counter = Counter::new(
    "etcd_server_proposals_failed_total",
    "The total number of failed proposals seen.",
);
pub static WAL_FSYNC: Histogram = Histogram::new(
    "etcd_disk_wal_fsync_duration_seconds",
    "The latency distributions of fsync called by WAL.",
    0.001,
);
pub static PEER_RTT: Histogram = Histogram::labelled(
    "etcd_network_peer_round_trip_time_seconds",
    "Round-Trip-Time histogram between peers",
    "To",
    0.0001,
);

/// The raft whose indices `render` reports (set by `follow`).
static RAFT: OnceLock<Raft> = OnceLock::new();

pub fn render() -> String {
    if let Some(raft) = RAFT.get() {
        let m = raft.metrics();
        let m = m.borrow_watched();
        PROPOSALS_COMMITTED.set(m.last_log_index.unwrap_or(0) as i64);
        PROPOSALS_APPLIED.set(m.last_applied.map_or(0, |l| l.index) as i64);
    }
    let all: [&dyn Metric; 10] = [
        common::logging::dropped("raftd"),
        &HAS_LEADER,
        &IS_LEADER,
        &LEADER_CHANGES,
        &PROPOSALS_COMMITTED,
        &PROPOSALS_APPLIED,
        &PROPOSALS_PENDING,
        &PROPOSALS_FAILED,
        &WAL_FSYNC,
        &PEER_RTT,
    ];
    common::metrics::render(&all)
}

/// Keep the leadership gauges in step with openraft. Server metrics, not
/// the full ones: those change with every write, and waking a task for
/// each would cost every write some CPU on raftd's one thread.
pub async fn follow(raft: Raft, me: u64) {
    let _ = RAFT.set(raft.clone());
    let mut rx = raft.server_metrics();
    let mut leader = None;
    loop {
        let current = rx.borrow_watched().current_leader;
        if current != leader {
            if current.is_some() {
                LEADER_CHANGES.inc();
            }
            leader = current;
        }
        HAS_LEADER.set(i64::from(leader.is_some()));
        IS_LEADER.set(i64::from(leader == Some(me)));
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// Proposals in flight (etcd_server_proposals_pending) while it lives.
pub struct Pending(i64);

impl Pending {
    pub fn new(n: usize) -> Pending {
        PROPOSALS_PENDING.add(n as i64);
        Pending(n as i64)
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        PROPOSALS_PENDING.add(-self.0);
    }
}

pub fn peer_round_trip(target: u64, d: Duration) {
    PEER_RTT.observe_for(&format!("{target:x}"), d);
}
