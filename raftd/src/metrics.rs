//! raftd's metrics, with etcd's names: leadership, proposals, read
//! indexes, the WAL, raft snapshots, lease liveness and the peer network.
//! Leadership follows openraft's server metrics (which change only with
//! leadership and membership); the raft indices are read when the metrics
//! are rendered; the rest are counted where they happen. Per-peer series
//! are resolved once per peer client or stream, then counted lock-free.

use std::sync::atomic::Ordering;
use std::sync::OnceLock;
use std::time::Duration;

use common::metrics::{
    Counter, CounterVec, Gauge, GaugeVec, Histogram, HistogramHandle, Info, Metric, Series,
};
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
)
.buckets(16);
pub static IS_LEARNER: Gauge = Gauge::new(
    "etcd_server_is_learner",
    "Whether or not this member is a learner. 1 if is, 0 otherwise.",
);
pub static SERVER_ID: Info = Info::new(
    "etcd_server_id",
    "Server or member ID in hexadecimal format. 1 for 'server_id' label with current ID.",
    "server_id",
);
pub static PROMOTIONS: Counter = Counter::new(
    "etcd_server_learner_promote_successes",
    "The total number of successful learner promotions while this member is leader.",
);
pub static HEARTBEAT_FAILURES: Counter = Counter::new(
    "etcd_server_heartbeat_send_failures_total",
    "The total number of leader heartbeat send failures (likely overloaded from slow disk).",
);
pub static READ_INDEXES_FAILED: Counter = Counter::new(
    "etcd_server_read_indexes_failed_total",
    "The total number of failed read indexes seen.",
);
pub static SLOW_READ_INDEXES: Counter = Counter::new(
    "etcd_server_slow_read_indexes_total",
    "The total number of pending read indexes not in sync with leader's or timed out read index requests.",
);
/// How long a read index may take before it counts as slow: etcd retries
/// (and counts) a read index unanswered after 500 ms.
pub const SLOW_READ_INDEX: Duration = Duration::from_millis(500);
/// A gauge in etcd 3.4, though it only grows.
pub static WAL_BYTES: Gauge = Gauge::new(
    "etcd_disk_wal_write_bytes_total",
    "Total number of bytes written in WAL.",
);
pub static SNAPSHOT_APPLYING: Gauge = Gauge::new(
    "etcd_server_snapshot_apply_in_progress_total",
    "1 if the server is applying the incoming snapshot. 0 if none.",
);
pub static LEASES_RENEWED: Counter = Counter::new(
    "etcd_debugging_lease_renewed_total",
    "The number of renewed leases seen by the leader.",
);
pub static LEASES_EXPIRED: Counter = Counter::new(
    "etcd_debugging_server_lease_expired_total",
    "The total number of expired leases.",
);

// Raft snapshots: one taken is a storaged checkpoint (its fsync is the
// snapshot's), one received is streamed into storaged and activated.
pub static SNAP_SAVE: Histogram = Histogram::new(
    "etcd_debugging_snap_save_total_duration_seconds",
    "The total latency distributions of save called by snapshot.",
    0.001,
);
pub static SNAP_MARSHALLING: Histogram = Histogram::new(
    "etcd_debugging_snap_save_marshalling_duration_seconds",
    "The marshalling cost distributions of save called by snapshot.",
    0.001,
);
pub static SNAP_FSYNC: Histogram = Histogram::new(
    "etcd_snap_fsync_duration_seconds",
    "The latency distributions of fsync called by snap.",
    0.001,
);
pub static SNAP_DB_FSYNC: Histogram = Histogram::new(
    "etcd_snap_db_fsync_duration_seconds",
    "The latency distributions of fsyncing .snap.db file",
    0.001,
);
pub static SNAP_DB_SAVE: Histogram = Histogram::new(
    "etcd_snap_db_save_total_duration_seconds",
    "The total latency distributions of v3 snapshot save",
    0.1,
)
.buckets(10);

// The peer network (etcd's rafthttp families).
pub static PEER_SENT_BYTES: CounterVec = CounterVec::new(
    "etcd_network_peer_sent_bytes_total",
    "The total number of bytes sent to peers.",
    &["To"],
);
pub static PEER_RECEIVED_BYTES: CounterVec = CounterVec::new(
    "etcd_network_peer_received_bytes_total",
    "The total number of bytes received from peers.",
    &["From"],
);
pub static PEER_SENT_FAILURES: CounterVec = CounterVec::new(
    "etcd_network_peer_sent_failures_total",
    "The total number of send failures from peers.",
    &["To"],
);
pub static PEER_RECEIVED_FAILURES: CounterVec = CounterVec::new(
    "etcd_network_peer_received_failures_total",
    "The total number of receive failures from peers.",
    &["From"],
);
pub static ACTIVE_PEERS: GaugeVec = GaugeVec::new(
    "etcd_network_active_peers",
    "The current number of active peer connections.",
    &["Local", "Remote"],
);
pub static DISCONNECTED_PEERS: CounterVec = CounterVec::new(
    "etcd_network_disconnected_peers_total",
    "The total number of disconnected peers.",
    &["Local", "Remote"],
);
pub static SNAPSHOT_SENT: CounterVec = CounterVec::new(
    "etcd_network_snapshot_send_success",
    "Total number of successful snapshot sends",
    &["To"],
);
pub static SNAPSHOT_SEND_FAILURES: CounterVec = CounterVec::new(
    "etcd_network_snapshot_send_failures",
    "Total number of snapshot send failures",
    &["To"],
);
pub static SNAPSHOT_SENDS_INFLIGHT: GaugeVec = GaugeVec::new(
    "etcd_network_snapshot_send_inflights_total",
    "Total number of inflight snapshot sends",
    &["To"],
);
pub static SNAPSHOT_SEND_SECONDS: Histogram = Histogram::labelled(
    "etcd_network_snapshot_send_total_duration_seconds",
    "Total latency distributions of v3 snapshot sends",
    "To",
    0.1,
)
.buckets(10);
pub static SNAPSHOT_RECEIVED: CounterVec = CounterVec::new(
    "etcd_network_snapshot_receive_success",
    "Total number of successful snapshot receives",
    &["From"],
);
pub static SNAPSHOT_RECEIVE_FAILURES: CounterVec = CounterVec::new(
    "etcd_network_snapshot_receive_failures",
    "Total number of snapshot receive failures",
    &["From"],
);
pub static SNAPSHOT_RECEIVES_INFLIGHT: GaugeVec = GaugeVec::new(
    "etcd_network_snapshot_receive_inflights_total",
    "Total number of inflight snapshot receives",
    &["From"],
);
pub static SNAPSHOT_RECEIVE_SECONDS: Histogram = Histogram::labelled(
    "etcd_network_snapshot_receive_total_duration_seconds",
    "Total latency distributions of v3 snapshot receives",
    "From",
    0.1,
)
.buckets(10);

/// The raft whose indices `render` reports (set by `follow`).
static RAFT: OnceLock<Raft> = OnceLock::new();

pub fn render() -> String {
    if let Some(raft) = RAFT.get() {
        let m = raft.metrics();
        let m = m.borrow_watched();
        PROPOSALS_COMMITTED.set(m.last_log_index.unwrap_or(0) as i64);
        PROPOSALS_APPLIED.set(m.last_applied.map_or(0, |l| l.index) as i64);
    }
    let all: &[&dyn Metric] = &[
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
        &IS_LEARNER,
        &SERVER_ID,
        &PROMOTIONS,
        &HEARTBEAT_FAILURES,
        &READ_INDEXES_FAILED,
        &SLOW_READ_INDEXES,
        &WAL_BYTES,
        &SNAPSHOT_APPLYING,
        &LEASES_RENEWED,
        &LEASES_EXPIRED,
        &SNAP_SAVE,
        &SNAP_MARSHALLING,
        &SNAP_FSYNC,
        &SNAP_DB_FSYNC,
        &SNAP_DB_SAVE,
        &PEER_SENT_BYTES,
        &PEER_RECEIVED_BYTES,
        &PEER_SENT_FAILURES,
        &PEER_RECEIVED_FAILURES,
        &ACTIVE_PEERS,
        &DISCONNECTED_PEERS,
        &SNAPSHOT_SENT,
        &SNAPSHOT_SEND_FAILURES,
        &SNAPSHOT_SENDS_INFLIGHT,
        &SNAPSHOT_SEND_SECONDS,
        &SNAPSHOT_RECEIVED,
        &SNAPSHOT_RECEIVE_FAILURES,
        &SNAPSHOT_RECEIVES_INFLIGHT,
        &SNAPSHOT_RECEIVE_SECONDS,
    ];
    let mut out = common::metrics::render(all);
    common::process::Usage::current().render_daemon("raftd", &mut out);
    out
}

/// Keep the leadership gauges in step with openraft. Server metrics, not
/// the full ones: those change with every write, and waking a task for
/// each would cost every write some CPU on raftd's one thread.
pub async fn follow(raft: Raft, me: u64) {
    let _ = RAFT.set(raft.clone());
    SERVER_ID.set(format!("{me:x}"));
    let mut rx = raft.server_metrics();
    let mut leader = None;
    loop {
        let learner = !rx
            .borrow_watched()
            .membership_config
            .membership()
            .voter_ids()
            .any(|id| id == me);
        IS_LEARNER.set(i64::from(learner));
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

/// One peer's traffic counters, resolved once (a peer client, a stream).
#[derive(Clone)]
pub struct PeerTraffic {
    bytes: Series,
    failures: Series,
    /// Round trips (to a peer only).
    rtt: Option<HistogramHandle>,
}

impl PeerTraffic {
    /// What this member sends to `peer`.
    pub fn to(peer: u64) -> PeerTraffic {
        let to = format!("{peer:x}");
        PeerTraffic {
            bytes: PEER_SENT_BYTES.handle(&[&to]),
            failures: PEER_SENT_FAILURES.handle(&[&to]),
            rtt: Some(PEER_RTT.handle(&to)),
        }
    }

    /// What this member receives from `peer`.
    pub fn from(peer: u64) -> PeerTraffic {
        let from = format!("{peer:x}");
        PeerTraffic {
            bytes: PEER_RECEIVED_BYTES.handle(&[&from]),
            failures: PEER_RECEIVED_FAILURES.handle(&[&from]),
            rtt: None,
        }
    }

    pub fn bytes(&self, n: usize) {
        self.bytes.fetch_add(n as i64, Ordering::Relaxed);
    }

    pub fn failed(&self) {
        self.failures.fetch_add(1, Ordering::Relaxed);
    }

    pub fn round_trip(&self, d: Duration) {
        if let Some(h) = &self.rtt {
            h.observe(d);
        }
    }
}

/// Whether `peer` answered the last probe: etcd's active peers (1 while
/// reachable) and disconnections (each time it stops answering).
pub fn peer_reachable(me: u64, peer: u64, reachable: bool) {
    let (local, remote) = (format!("{me:x}"), format!("{peer:x}"));
    let active = ACTIVE_PEERS.handle(&[&local, &remote]);
    let was = active.swap(i64::from(reachable), Ordering::Relaxed);
    if was == 1 && !reachable {
        DISCONNECTED_PEERS.inc(&[&local, &remote]);
    }
}

/// A snapshot sent to `peer` (or not), and how long it took.
pub fn snapshot_sent(peer: u64, ok: bool, took: Duration) {
    let to = format!("{peer:x}");
    if ok {
        SNAPSHOT_SENT.inc(&[&to]);
        SNAPSHOT_SEND_SECONDS.observe_for(&to, took);
    } else {
        SNAPSHOT_SEND_FAILURES.inc(&[&to]);
    }
}

/// A snapshot received from `peer` (or not), and how long it took.
pub fn snapshot_received(peer: u64, ok: bool, took: Duration) {
    let from = format!("{peer:x}");
    if ok {
        SNAPSHOT_RECEIVED.inc(&[&from]);
        SNAPSHOT_RECEIVE_SECONDS.observe_for(&from, took);
    } else {
        SNAPSHOT_RECEIVE_FAILURES.inc(&[&from]);
    }
}

/// A gauge series raised while it lives (snapshots in flight).
pub struct InFlight(Series);

impl InFlight {
    pub fn new(family: &GaugeVec, peer: u64) -> InFlight {
        let s = family.handle(&[&format!("{peer:x}")]);
        s.fetch_add(1, Ordering::Relaxed);
        InFlight(s)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The raftd half of a daemon metrics URL: its own families plus the
/// standard process ones for raftd alone.
pub fn render_url() -> String {
    let mut out = render();
    common::process::Usage::current().render_standard(&mut out);
    out
}

pub fn wal_written(bytes: usize) {
    WAL_BYTES.add(bytes as i64);
}

/// Times a client's read index: one slower than `SLOW_READ_INDEX` counts.
pub struct ReadIndexTimer(std::time::Instant);

impl ReadIndexTimer {
    pub fn start() -> ReadIndexTimer {
        ReadIndexTimer(std::time::Instant::now())
    }
}

impl Drop for ReadIndexTimer {
    fn drop(&mut self) {
        if self.0.elapsed() > SLOW_READ_INDEX {
            SLOW_READ_INDEXES.inc();
        }
    }
}

/// Count a read index that failed; the error passes through.
pub fn read_index_failed<E>(e: E) -> E {
    READ_INDEXES_FAILED.inc();
    e
}

/// etcd_server_snapshot_apply_in_progress_total is 1 while it lives.
pub struct SnapshotApplying(());

impl SnapshotApplying {
    pub fn start() -> SnapshotApplying {
        SNAPSHOT_APPLYING.set(1);
        SnapshotApplying(())
    }
}

impl Drop for SnapshotApplying {
    fn drop(&mut self) {
        SNAPSHOT_APPLYING.set(0);
    }
}
