//! The lessor: lease liveness on the raft leader. Grants and revokes go
//! through raft (storaged keeps the lease data); expiry times live here, in
//! memory, loaded from storaged when this node becomes leader (remaining TTL
//! from the last checkpoint, else the full TTL). Keepalives and TTL queries
//! are answered from memory, without a raft proposal. Expired leases are
//! revoked through raft; remaining TTLs are checkpointed through raft every
//! checkpoint interval, so a leader change or raftd restart neither extends
//! nor shortens a lease by more than one interval.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use prost::Message;
use tonic::transport::Channel;
use tonic::Status;

use crate::types::{Proposal, Raft};
use common::errors::EtcdError;
use common::proto::etcdserverpb::{
    LeaseCheckpoint, LeaseCheckpointRequest, LeaseGrantRequest, LeaseRevokeRequest,
};
use common::proto::raft::LeaseRevokeProposal;
use common::proto::storage::raft_request::Op;
use common::proto::storage::raft_result::Result as Outcome;
use common::proto::storage::storage_client::StorageClient;
use common::proto::storage::{LeasesRequest, RaftRequest, RaftResult};
use openraft::async_runtime::WatchReceiver;
use openraft::error::RaftError;

/// Propose one request through raft on this (leading) raftd; storaged's
/// encoded result. For raftd's own proposals (lessor, auto-compaction).
pub async fn propose(raft: &Raft, op: Op) -> Result<Vec<u8>, Status> {
    propose_request(
        raft,
        RaftRequest {
            op: Some(op),
            auth: None,
        },
    )
    .await
}

/// Replicate one request (with a client's identity, if it carries one).
pub async fn propose_request(raft: &Raft, req: RaftRequest) -> Result<Vec<u8>, Status> {
    let bytes = req.encode_to_vec();
    match raft.client_write(Proposal(bytes)).await {
        Ok(r) => Ok(r.data.0),
        Err(RaftError::APIError(e)) => Err(crate::local_server::write_error(&e).into()),
        Err(RaftError::Fatal(_)) => Err(EtcdError::Stopped.into()),
    }
}

/// etcd's MaxLeaseTTL (seconds).
pub const MAX_LEASE_TTL: i64 = 9_000_000_000;
const TICK: Duration = Duration::from_millis(250);

struct Lease {
    ttl: i64,
    expiry: Instant,
    revoking: bool,
}

#[derive(Default)]
struct State {
    /// Loaded from storaged and in charge (this node leads).
    primary: bool,
    leases: HashMap<i64, Lease>,
}

pub struct Lessor {
    raft: Raft,
    storage: StorageClient<Channel>,
    min_ttl: i64,
    checkpoint_interval: Duration,
    state: Mutex<State>,
    promoting: tokio::sync::Mutex<()>,
}

/// What `get` found: remaining seconds and granted TTL.
pub struct Liveness {
    pub remaining: i64,
    pub granted: i64,
}

impl Lessor {
    pub fn new(
        raft: Raft,
        storage: StorageClient<Channel>,
        min_ttl: i64,
        checkpoint_interval: Duration,
    ) -> Lessor {
        Lessor {
            raft,
            storage,
            min_ttl,
            checkpoint_interval,
            state: Mutex::new(State::default()),
            promoting: tokio::sync::Mutex::new(()),
        }
    }

    fn state(&self) -> Result<std::sync::MutexGuard<'_, State>, Status> {
        self.state
            .lock()
            .map_err(|_| Status::internal("lessor lock poisoned"))
    }

    fn is_leader(&self) -> bool {
        let m = self.raft.metrics();
        let m = m.borrow_watched();
        m.current_leader == Some(m.id)
    }

    async fn propose(&self, op: Op) -> Result<Vec<u8>, Status> {
        propose(&self.raft, op).await
    }

    fn outcome(bytes: &[u8]) -> Option<Outcome> {
        RaftResult::decode(bytes).ok().and_then(|r| r.result)
    }

    pub async fn grant(&self, mut g: LeaseGrantRequest) -> Result<Vec<u8>, Status> {
        if !self.is_leader() {
            return Err(EtcdError::NotLeader.into());
        }
        if g.ttl > MAX_LEASE_TTL {
            return Err(EtcdError::LeaseTtlTooLarge.into());
        }
        g.ttl = g.ttl.max(self.min_ttl);
        if g.id == 0 {
            g.id = self.fresh_id()?;
        }
        let result = self.propose(Op::LeaseGrant(g)).await?;
        if let Some(Outcome::LeaseGrant(r)) = Self::outcome(&result) {
            let lease = Lease {
                ttl: r.ttl,
                expiry: Instant::now() + secs(r.ttl),
                revoking: false,
            };
            self.state()?.leases.insert(r.id, lease);
        }
        Ok(result)
    }

    /// A positive lease ID not in use (etcd picks them from a time-seeded
    /// generator; any unused positive ID will do).
    fn fresh_id(&self) -> Result<i64, Status> {
        let state = self.state()?;
        let mut seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
        loop {
            // splitmix64
            seed = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = seed;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            let id = ((z ^ (z >> 31)) >> 1) as i64;
            if id != 0 && !state.leases.contains_key(&id) {
                return Ok(id);
            }
        }
    }

    /// A client's revoke: storaged checks at apply that `r.auth` may write
    /// every attached key. The lease is forgotten only once it is gone.
    pub async fn revoke(&self, r: LeaseRevokeProposal) -> Result<Vec<u8>, Status> {
        if !self.is_leader() {
            return Err(EtcdError::NotLeader.into());
        }
        let id = r.id;
        let req = RaftRequest {
            op: Some(Op::LeaseRevoke(LeaseRevokeRequest { id })),
            auth: r.auth,
        };
        let result = propose_request(&self.raft, req).await?;
        // Refused (auth): the lease lives on. Otherwise it is gone.
        let refused = matches!(Self::outcome(&result), Some(Outcome::Error(code))
            if code != EtcdError::LeaseNotFound.wire_code());
        if !refused {
            self.state()?.leases.remove(&id);
        }
        Ok(result)
    }

    /// Be in charge before answering: load the leases now if this node
    /// leads but has not taken over yet (just started, just elected).
    async fn ensure_primary(&self) -> Result<(), Status> {
        if self.state()?.primary {
            return Ok(());
        }
        if !self.is_leader() {
            return Err(EtcdError::NotLeader.into());
        }
        self.promote().await
    }

    /// Renew `id`; its TTL, or None if there is no such lease.
    pub async fn keep_alive(&self, id: i64) -> Result<Option<i64>, Status> {
        self.ensure_primary().await?;
        let mut state = self.state()?;
        Ok(state.leases.get_mut(&id).filter(|l| !l.revoking).map(|l| {
            l.expiry = Instant::now() + secs(l.ttl);
            l.ttl
        }))
    }

    pub async fn get(&self, id: i64) -> Result<Option<Liveness>, Status> {
        self.ensure_primary().await?;
        let state = self.state()?;
        let now = Instant::now();
        Ok(state.leases.get(&id).map(|l| Liveness {
            remaining: l.expiry.saturating_duration_since(now).as_secs() as i64,
            granted: l.ttl,
        }))
    }

    /// Take charge on becoming leader, let go on losing it, revoke what
    /// expired, checkpoint remaining TTLs. Runs for the life of raftd.
    pub async fn run(&self) {
        let mut last_checkpoint = Instant::now();
        loop {
            tokio::time::sleep(TICK).await;
            let leader = self.is_leader();
            let primary = self.state.lock().map(|s| s.primary).unwrap_or(false);
            if leader && !primary {
                if let Err(e) = self.promote().await {
                    tracing::warn!(error = %e, "lessor cannot load leases yet");
                }
                last_checkpoint = Instant::now();
                continue;
            }
            if !leader {
                if primary {
                    if let Ok(mut s) = self.state.lock() {
                        *s = State::default();
                    }
                }
                continue;
            }
            for id in self.expired() {
                if let Err(e) = self
                    .propose(Op::LeaseRevoke(LeaseRevokeRequest { id }))
                    .await
                {
                    tracing::warn!(lease = id, error = %e.message(), "revoking an expired lease failed; will retry");
                    if let Ok(mut s) = self.state.lock() {
                        if let Some(l) = s.leases.get_mut(&id) {
                            l.revoking = false;
                        }
                    }
                } else if let Ok(mut s) = self.state.lock() {
                    s.leases.remove(&id);
                }
            }
            if last_checkpoint.elapsed() >= self.checkpoint_interval {
                last_checkpoint = Instant::now();
                self.checkpoint().await;
            }
        }
    }

    async fn promote(&self) -> Result<(), Status> {
        // Serialize take-overs (the tick and an on-demand one may race).
        let _one = self.promoting.lock().await;
        if self.state()?.primary {
            return Ok(());
        }
        let mut storage = self.storage.clone();
        let leases = storage.leases(LeasesRequest {}).await?.into_inner().leases;
        let now = Instant::now();
        let mut state = self.state()?;
        state.leases = leases
            .into_iter()
            .filter_map(|l| {
                let rec = l.lease?;
                let left = if rec.remaining_ttl > 0 {
                    rec.remaining_ttl
                } else {
                    rec.ttl
                };
                Some((
                    l.id,
                    Lease {
                        ttl: rec.ttl,
                        expiry: now + secs(left),
                        revoking: false,
                    },
                ))
            })
            .collect();
        state.primary = true;
        tracing::info!(leases = state.leases.len(), "lessor in charge");
        Ok(())
    }

    fn expired(&self) -> Vec<i64> {
        let now = Instant::now();
        let Ok(mut state) = self.state.lock() else {
            return Vec::new();
        };
        state
            .leases
            .iter_mut()
            .filter(|(_, l)| !l.revoking && l.expiry <= now)
            .map(|(id, l)| {
                l.revoking = true;
                *id
            })
            .collect()
    }

    async fn checkpoint(&self) {
        let now = Instant::now();
        let checkpoints: Vec<LeaseCheckpoint> = match self.state.lock() {
            Ok(s) => s
                .leases
                .iter()
                .map(|(id, l)| LeaseCheckpoint {
                    id: *id,
                    // Rounded up, as etcd does: a new leader must never
                    // expire the lease before its time.
                    remaining_ttl: (l.expiry.saturating_duration_since(now).as_secs_f64().ceil()
                        as i64)
                        .max(1),
                })
                .collect(),
            Err(_) => return,
        };
        if checkpoints.is_empty() {
            return;
        }
        if let Err(e) = self
            .propose(Op::LeaseCheckpoint(LeaseCheckpointRequest { checkpoints }))
            .await
        {
            tracing::warn!(error = %e.message(), "lease checkpoint failed");
        }
    }
}

fn secs(s: i64) -> Duration {
    Duration::from_secs(s.max(0) as u64)
}
