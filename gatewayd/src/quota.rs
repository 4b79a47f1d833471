//! etcd's backend quota: a write that would take the member's store past
//! `--quota-backend-bytes` raises the NOSPACE alarm through raft and fails
//! with "database space exceeded"; while the alarm is raised every member
//! refuses such writes at apply (storaged's `alarm.rs`). Sizes are
//! storaged's, read at most every SIZE_TTL.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::proto::etcdserverpb::request_op::Request as TxnOp;
use common::proto::etcdserverpb::TxnRequest;
use common::proto::storage::raft_request::Op;

/// etcd's default quota (2 GiB), used for 0.
pub const DEFAULT_QUOTA_BYTES: i64 = 2 * 1024 * 1024 * 1024;
/// etcd's per-key and per-lease bookkeeping estimates.
const KV_OVERHEAD: usize = 256;
const LEASE_OVERHEAD: usize = 64;
const SIZE_TTL: Duration = Duration::from_millis(200);

/// What a write adds to the store, as etcd's quota counts it.
pub fn cost(op: &Op) -> usize {
    match op {
        Op::Put(p) => KV_OVERHEAD + p.key.len() + p.value.len(),
        Op::Txn(t) => txn_cost(t),
        Op::LeaseGrant(_) => LEASE_OVERHEAD,
        _ => 0,
    }
}

fn txn_cost(t: &TxnRequest) -> usize {
    t.success
        .iter()
        .chain(&t.failure)
        .map(|op| match &op.request {
            Some(TxnOp::RequestPut(p)) => KV_OVERHEAD + p.key.len() + p.value.len(),
            Some(TxnOp::RequestTxn(inner)) => txn_cost(inner),
            _ => 0,
        })
        .sum()
}

pub struct Quota {
    /// The limit in bytes; negative: no limit (as etcd's).
    max: i64,
    size: AtomicI64,
    measured: Mutex<Option<Instant>>,
}

impl Quota {
    pub fn new(configured: i64) -> Quota {
        let max = if configured == 0 {
            DEFAULT_QUOTA_BYTES
        } else {
            configured
        };
        crate::metrics::QUOTA_BYTES.set(max);
        Quota {
            max,
            size: AtomicI64::new(0),
            measured: Mutex::new(None),
        }
    }

    /// The limit in bytes (etcd's default for 0; negative: none).
    pub fn limit(&self) -> i64 {
        self.max
    }

    /// Whether the last size measured is too old to decide with.
    pub fn stale(&self) -> bool {
        self.measured
            .lock()
            .map(|m| m.is_none_or(|t| t.elapsed() > SIZE_TTL))
            .unwrap_or(true)
    }

    pub fn record(&self, size: i64) {
        self.size.store(size, Ordering::Relaxed);
        if let Ok(mut m) = self.measured.lock() {
            *m = Some(Instant::now());
        }
    }

    /// Whether `cost` more bytes fit (etcd: size + cost < quota).
    pub fn fits(&self, cost: usize) -> bool {
        self.max < 0 || cost == 0 || self.size.load(Ordering::Relaxed) + (cost as i64) < self.max
    }
}
