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

use crate::own_proposals::{propose, propose_request};
use crate::Raft;
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

/// etcd's MaxLeaseTTL (seconds).
pub const MAX_LEASE_TTL: i64 = 9_000_000_000;
const TICK: Duration = Duration::from_millis(250);

struct Lease {
    ttl: i64,
    expiry: Instant,
    revoking: bool,
}

/// The leader's lease table: pure bookkeeping over explicit instants, so
/// each rule (renewal, expiry, checkpoint rounding) is testable alone.
#[derive(Default)]
struct State {
    /// Loaded from storaged and in charge (this node leads).
    primary: bool,
    leases: HashMap<i64, Lease>,
}

impl State {
    /// Take charge with the leases storaged holds: each runs for its last
    /// checkpointed remaining TTL, else its full TTL.
    fn load(&mut self, records: Vec<(i64, i64, i64)>, now: Instant) {
        self.leases = records
            .into_iter()
            .map(|(id, ttl, remaining)| {
                let left = if remaining > 0 { remaining } else { ttl };
                (id, Lease::new(ttl, now + secs(left)))
            })
            .collect();
        self.primary = true;
    }

    fn granted(&mut self, id: i64, ttl: i64, now: Instant) {
        self.leases.insert(id, Lease::new(ttl, now + secs(ttl)));
    }

    /// Renew `id` for its full TTL; None if unknown or being revoked.
    fn renew(&mut self, id: i64, now: Instant) -> Option<i64> {
        self.leases.get_mut(&id).filter(|l| !l.revoking).map(|l| {
            l.expiry = now + secs(l.ttl);
            l.ttl
        })
    }

    fn liveness(&self, id: i64, now: Instant) -> Option<Liveness> {
        self.leases.get(&id).map(|l| Liveness {
            remaining: l.expiry.saturating_duration_since(now).as_secs() as i64,
            granted: l.ttl,
        })
    }

    /// The leases due at `now`, each marked as being revoked so the next
    /// tick does not propose its revoke again.
    fn take_expired(&mut self, now: Instant) -> Vec<i64> {
        self.leases
            .iter_mut()
            .filter(|(_, l)| !l.revoking && l.expiry <= now)
            .map(|(id, l)| {
                l.revoking = true;
                *id
            })
            .collect()
    }

    /// A revoke did not commit: the next tick tries again.
    fn revoke_failed(&mut self, id: i64) {
        if let Some(l) = self.leases.get_mut(&id) {
            l.revoking = false;
        }
    }

    /// Remaining TTLs rounded up, as etcd does: a new leader must never
    /// expire a lease before its time.
    fn checkpoints(&self, now: Instant) -> Vec<LeaseCheckpoint> {
        self.leases
            .iter()
            .map(|(id, l)| LeaseCheckpoint {
                id: *id,
                remaining_ttl: (l.expiry.saturating_duration_since(now).as_secs_f64().ceil()
                    as i64)
                    .max(1),
            })
            .collect()
    }

    /// A positive lease ID not in use, drawn from `seed` (etcd picks them
    /// from a time-seeded generator; any unused positive ID will do).
    fn fresh_id(&self, mut seed: u64) -> i64 {
        loop {
            // splitmix64
            seed = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = seed;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            let id = ((z ^ (z >> 31)) >> 1) as i64;
            if id != 0 && !self.leases.contains_key(&id) {
                return id;
            }
        }
    }
}

impl Lease {
    fn new(ttl: i64, expiry: Instant) -> Lease {
        Lease {
            ttl,
            expiry,
            revoking: false,
        }
    }
}

/// The TTL a grant asks for as the lease will have it: etcd refuses more
/// than MaxLeaseTTL and raises less than the minimum to the minimum.
fn grant_ttl(asked: i64, min_ttl: i64) -> Result<i64, EtcdError> {
    if asked > MAX_LEASE_TTL {
        return Err(EtcdError::LeaseTtlTooLarge);
    }
    Ok(asked.max(min_ttl))
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
        g.ttl = grant_ttl(g.ttl, self.min_ttl)?;
        if g.id == 0 {
            let seed = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64);
            g.id = self.state()?.fresh_id(seed);
        }
        let result = self.propose(Op::LeaseGrant(g)).await?;
        if let Some(Outcome::LeaseGrant(r)) = Self::outcome(&result) {
            self.state()?.granted(r.id, r.ttl, Instant::now());
        }
        Ok(result)
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
            trace_parent: String::new(),
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
        let renewed = self.state()?.renew(id, Instant::now());
        if renewed.is_some() {
            crate::metrics::LEASES_RENEWED.inc();
        }
        Ok(renewed)
    }

    pub async fn get(&self, id: i64) -> Result<Option<Liveness>, Status> {
        self.ensure_primary().await?;
        Ok(self.state()?.liveness(id, Instant::now()))
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
                        s.revoke_failed(id);
                    }
                } else if let Ok(mut s) = self.state.lock() {
                    crate::metrics::LEASES_EXPIRED.inc();
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
        let records = leases
            .into_iter()
            .filter_map(|l| l.lease.map(|rec| (l.id, rec.ttl, rec.remaining_ttl)))
            .collect();
        let mut state = self.state()?;
        state.load(records, Instant::now());
        tracing::info!(leases = state.leases.len(), "lessor in charge");
        Ok(())
    }

    fn expired(&self) -> Vec<i64> {
        self.state
            .lock()
            .map(|mut s| s.take_expired(Instant::now()))
            .unwrap_or_default()
    }

    async fn checkpoint(&self) {
        let checkpoints = match self.state.lock() {
            Ok(s) => s.checkpoints(Instant::now()),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn at(start: Instant, secs: u64) -> Instant {
        start + Duration::from_secs(secs)
    }

    #[test]
    fn grants_are_clamped_as_etcd_clamps_them() {
        assert_eq!(grant_ttl(1, 5), Ok(5));
        assert_eq!(grant_ttl(60, 5), Ok(60));
        assert_eq!(grant_ttl(MAX_LEASE_TTL, 5), Ok(MAX_LEASE_TTL));
        assert_eq!(
            grant_ttl(MAX_LEASE_TTL + 1, 5),
            Err(EtcdError::LeaseTtlTooLarge)
        );
    }

    #[test]
    fn a_lease_expires_at_its_ttl_and_a_renewal_restarts_it() {
        let t = Instant::now();
        let mut s = State::default();
        s.granted(7, 10, t);
        assert!(s.take_expired(at(t, 9)).is_empty());
        assert_eq!(s.renew(7, at(t, 9)), Some(10));
        assert!(s.take_expired(at(t, 18)).is_empty(), "renewed at 9 s");
        let live = s.liveness(7, at(t, 14)).expect("lease");
        assert_eq!((live.remaining, live.granted), (5, 10));
        assert_eq!(s.take_expired(at(t, 19)), vec![7]);
    }

    #[test]
    fn an_expired_lease_is_revoked_once_and_retried_after_a_failure() {
        let t = Instant::now();
        let mut s = State::default();
        s.granted(1, 2, t);
        s.granted(2, 100, t);
        assert_eq!(s.take_expired(at(t, 3)), vec![1]);
        assert!(s.take_expired(at(t, 4)).is_empty(), "revoke in flight");
        assert_eq!(s.renew(1, at(t, 4)), None, "no keepalive while revoking");
        s.revoke_failed(1);
        assert_eq!(s.take_expired(at(t, 5)), vec![1]);
        assert_eq!(s.renew(404, t), None);
        assert!(s.liveness(404, t).is_none());
    }

    #[test]
    fn a_new_leader_resumes_from_the_last_checkpoint() {
        let t = Instant::now();
        let mut s = State::default();
        // (id, ttl, remaining at the last checkpoint; 0 = never checkpointed)
        s.load(vec![(1, 60, 5), (2, 60, 0)], t);
        assert!(s.primary);
        assert_eq!(s.take_expired(at(t, 5)), vec![1]);
        assert!(s.take_expired(at(t, 59)).is_empty());
        assert_eq!(s.take_expired(at(t, 60)), vec![2]);
    }

    #[test]
    fn checkpoints_round_up_and_never_say_zero() {
        let t = Instant::now();
        let mut s = State::default();
        s.granted(1, 10, t);
        s.granted(2, 1, t);
        let now = t + Duration::from_millis(2_500);
        let mut cps: Vec<(i64, i64)> = s
            .checkpoints(now)
            .iter()
            .map(|c| (c.id, c.remaining_ttl))
            .collect();
        cps.sort();
        // 7.5 s left rounds up to 8; an overdue lease still says 1.
        assert_eq!(cps, vec![(1, 8), (2, 1)]);
    }

    #[test]
    fn fresh_ids_are_positive_and_unused() {
        let mut s = State::default();
        let first = s.fresh_id(42);
        assert!(first > 0);
        s.granted(first, 10, Instant::now());
        let second = s.fresh_id(42);
        assert!(second > 0 && second != first, "same seed skips a used id");
    }
}
