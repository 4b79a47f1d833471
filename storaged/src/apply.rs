//! The apply chain: one committed entry's effect inside its batch's write
//! transaction, in layers as etcd's appliers wrap each other
//! (`uber_applier.go`):
//!
//! 1. the entry: a request that does not decode, or that storaged could not
//!    store (`common::validate::storable`), is answered with an error
//!    before anything is written;
//! 2. auth (etcd's authApplierV3): whether the caller may do it;
//! 3. alarms (its quota and corrupt appliers): NOSPACE and CORRUPT;
//! 4. backend (its applierV3backend): the write, compaction, auth change,
//!    alarm or peer secret itself.
//!
//! etcd errors are results: the entry is applied, nothing changes, and
//! every member answers the same. Storage errors abort the whole batch.

use std::sync::Arc;

use prost::Message;

use crate::auth::AuthState;
use crate::schema::{Keyspaces, META_MEMBERSHIP, META_MEMBERSHIP_LOG_ID, META_PEER_SECRET};
use crate::write::{self, RevState, WriteTxn};
use crate::StoreError;
use common::errors::EtcdError;
use common::nested_txn::NestedError;
use common::proto::etcdserverpb::AlarmMember;
use common::proto::storage::{
    apply_entry::Payload, raft_request::Op, raft_result::Result as Outcome, AuthChanged, AuthInfo,
    EventBatch, LogId, RaftRequest, RaftResult,
};

/// What one Apply batch works on: its transaction and running state.
pub(crate) struct Batch<'a, 'b> {
    pub tx: &'a mut fjall::SingleWriterWriteTx<'b>,
    pub ks: &'a Keyspaces,
    pub revs: &'a mut RevState,
    pub alarms: &'a mut Vec<AlarmMember>,
    pub published: &'a mut Vec<EventBatch>,
    /// The auth store as of this point in the batch.
    pub auth_state: &'a mut Arc<AuthState>,
    pub auth: &'a crate::auth::Auth,
}

impl Batch<'_, '_> {
    /// One committed entry: its encoded RaftResult (empty for membership
    /// changes and blank entries, which answer nobody).
    pub fn entry(
        &mut self,
        log_id: &LogId,
        payload: Option<&Payload>,
    ) -> Result<Vec<u8>, StoreError> {
        match payload {
            Some(Payload::Request(bytes)) => {
                let outcome = self.request(log_id, bytes)?;
                Ok(RaftResult {
                    result: Some(outcome),
                }
                .encode_to_vec())
            }
            Some(Payload::Membership(m)) => {
                self.tx.insert(&self.ks.meta, META_MEMBERSHIP, m.clone());
                self.tx.insert(
                    &self.ks.meta,
                    META_MEMBERSHIP_LOG_ID,
                    log_id.encode_to_vec(),
                );
                Ok(Vec::new())
            }
            Some(Payload::Blank(_)) | None => Ok(Vec::new()),
        }
    }

    /// Layer 1: what no member can apply is answered with an error before
    /// anything is written.
    fn request(&mut self, log_id: &LogId, bytes: &[u8]) -> Result<Outcome, StoreError> {
        let req = match common::nested_txn::raft_request(bytes) {
            Ok(req) => req,
            Err(e) => {
                tracing::warn!(index = log_id.index, error = %e, "undecodable raft request");
                let refusal = match e {
                    NestedError::TooDeep => EtcdError::TooManyOps,
                    NestedError::Decode(_) => EtcdError::Malformed,
                };
                return Ok(Outcome::Error(refusal.wire_code()));
            }
        };
        let Some(op) = &req.op else {
            return Ok(Outcome::Error(EtcdError::Malformed.wire_code()));
        };
        if let Err(e) = common::validate::storable(&req) {
            return Ok(Outcome::Error(e.wire_code()));
        }
        let span = common::distributed_tracing::start_child(&req.trace_parent);
        let started = std::time::Instant::now();
        let (outcome, error) = match self.guarded(&req, op) {
            Ok(o) => (o, None),
            Err(StoreError::Etcd(e)) => (Outcome::Error(e.wire_code()), Some(e)),
            Err(other) => return Err(other),
        };
        if let Some(span) = span {
            let index = log_id.index.to_string();
            let refused = error.as_ref().map(|e| e.to_string());
            span.finish(
                "storaged.Apply",
                common::distributed_tracing::Kind::Internal,
                &[("raft.index", index.as_str())],
                refused.as_deref(),
            );
        }
        crate::slow_request::check_apply(started, op, error);
        Ok(outcome)
    }

    /// Layers 2 and 3: the caller's permission (etcd's auth applier), then
    /// the raised alarms (its quota and corrupt appliers).
    fn guarded(&mut self, req: &RaftRequest, op: &Op) -> Result<Outcome, StoreError> {
        let refused = match &req.auth {
            Some(who) => self.refused_by_auth(who, op)?,
            None => None,
        };
        if let Some(refused) = crate::alarm::refuse(self.alarms, op).or(refused) {
            return Err(StoreError::Etcd(refused));
        }
        self.backend(req, op)
    }

    /// Layer 4: the operation itself (etcd's backend applier).
    fn backend(&mut self, req: &RaftRequest, op: &Op) -> Result<Outcome, StoreError> {
        match op {
            Op::AuthChange(c) => {
                let who = req.auth.as_ref().map(|a| a.user.as_str());
                let mut changer = crate::auth::Changer {
                    tx: self.tx,
                    ks: self.ks,
                    state: self.auth_state,
                    auth: self.auth,
                };
                changer
                    .apply(c, who)
                    .map(|auth_revision| {
                        Outcome::AuthChanged(AuthChanged {
                            revision: self.revs.current,
                            auth_revision,
                        })
                    })
                    .map_err(StoreError::Etcd)
            }
            Op::Compaction(c) => {
                crate::metrics::index_compaction(|| write::compaction(self.revs, c))
                    .map(Outcome::Compaction)
            }
            Op::Alarm(a) => {
                crate::alarm::apply(self.tx, self.ks, self.alarms, a).map(Outcome::Alarm)
            }
            Op::PeerSecret(secret) => self.keep_peer_secret(req, secret),
            Op::ClusterVersion(_) | Op::Downgrade(_) | Op::MemberVersion(_) => {
                crate::versions::apply(self.tx, self.ks, req, op)
            }
            op => self.write(op),
        }
    }

    /// The first peer secret applied stays (only the member's own request,
    /// never a client's, may propose one).
    fn keep_peer_secret(
        &mut self,
        req: &RaftRequest,
        secret: &[u8],
    ) -> Result<Outcome, StoreError> {
        if req.auth.is_some() || secret.is_empty() {
            return Err(EtcdError::NotCapable.into());
        }
        if fjall::Readable::contains_key(&*self.tx, &self.ks.meta, META_PEER_SECRET)? {
            return Ok(Outcome::PeerSecret(false));
        }
        self.tx.insert(&self.ks.meta, META_PEER_SECRET, secret);
        Ok(Outcome::PeerSecret(true))
    }

    /// etcd's auth applier: whether `who` may do `op` (auth changes judge
    /// themselves).
    fn refused_by_auth(&self, who: &AuthInfo, op: &Op) -> Result<Option<EtcdError>, StoreError> {
        let tx: &fjall::SingleWriterWriteTx<'_> = self.tx;
        let lease_keys = |lease| crate::lease::keys_of(tx, self.ks, lease);
        match crate::permission::check_op(self.auth_state, who, op, &lease_keys) {
            Ok(()) => Ok(None),
            Err(StoreError::Etcd(e)) => Ok(Some(e)),
            Err(other) => Err(other),
        }
    }

    /// A write to the key space: a new revision (and its events) if any.
    fn write(&mut self, op: &Op) -> Result<Outcome, StoreError> {
        let mut w = WriteTxn::new(self.tx, self.ks, *self.revs);
        let out = match op {
            Op::Put(p) => w.put(p).map(Outcome::Put),
            Op::DeleteRange(d) => w.delete_range(d).map(Outcome::DeleteRange),
            Op::Txn(t) => w.txn(t).map(Outcome::Txn),
            Op::LeaseGrant(g) => w.lease_grant(g).map(Outcome::LeaseGrant),
            Op::LeaseRevoke(r) => w.lease_revoke(r).map(Outcome::LeaseRevoke),
            Op::LeaseCheckpoint(c) => w.lease_checkpoint(c).map(Outcome::LeaseCheckpoint),
            Op::Compaction(_)
            | Op::Alarm(_)
            | Op::AuthChange(_)
            | Op::PeerSecret(_)
            | Op::ClusterVersion(_)
            | Op::Downgrade(_)
            | Op::MemberVersion(_) => unreachable_op(),
        };
        if out.is_ok() {
            self.revs.current = w.rev();
            let events = w.take_events();
            if !events.is_empty() {
                self.published.push(EventBatch {
                    revision: self.revs.current,
                    events,
                    compact_revision: 0,
                });
            }
        }
        out
    }
}

fn unreachable_op() -> Result<Outcome, StoreError> {
    Err(StoreError::Etcd(EtcdError::NotCapable))
}
