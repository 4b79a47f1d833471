//! Proposals through this member: batches its gatewayd sends, and batches
//! a follower forwards (screened first: `screen`), proposed here when this
//! raftd leads and sent on to the leader otherwise (split to fit what a
//! peer decodes). Proposals refused because leadership moved (never
//! appended, so never committed) are routed again.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures::StreamExt;
use openraft::async_runtime::WatchReceiver;
use tonic::Status;

use crate::raft_errors::{leader_failed, never_sent, write_error};
use crate::route::{Route, Router, REROUTES, REROUTE_PAUSE};
use crate::types::{NodeId, Proposal};
use crate::Raft;
use common::errors::EtcdError;
use common::proto::raft::propose_outcome::Outcome;
use common::proto::raft::{ProposeBatchRequest, ProposeBatchResponse, ProposeOutcome};

/// The member's request limits, applied to what peers forward.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_request_bytes: usize,
    pub max_txn_ops: usize,
}

pub struct Proposals {
    raft: Raft,
    router: Arc<Router>,
    limits: Limits,
}

impl Proposals {
    pub fn new(router: Arc<Router>, limits: Limits) -> Self {
        Proposals {
            raft: router.raft().clone(),
            router,
            limits,
        }
    }

    pub fn term(&self) -> u64 {
        self.raft.metrics().borrow_watched().current_term
    }

    /// What `caller` forwarded, checked as gatewayd checks its clients'
    /// requests: bounded, decodable and valid. A request without a caller
    /// identity counts as an anonymous client's, except the two a member
    /// makes on its own: the NOSPACE alarm it raises for itself, and a
    /// simple token it registers after checking a password.
    fn screen(&self, bytes: Bytes, caller: NodeId) -> Result<Bytes, EtcdError> {
        use common::proto::storage::auth_change::Op as Change;
        use common::proto::storage::raft_request::Op;
        use prost::Message;
        if bytes.len() > self.limits.max_request_bytes {
            return Err(EtcdError::RequestTooLarge);
        }
        let mut req = common::nested_txn::raft_request(&bytes).map_err(|e| match e {
            common::nested_txn::NestedError::TooDeep => EtcdError::TooManyOps,
            common::nested_txn::NestedError::Decode(_) => EtcdError::Malformed,
        })?;
        common::validate::check_raft_request(&req, self.limits.max_txn_ops)?;
        if req.auth.is_some() {
            return Ok(bytes);
        }
        let members_own = match &req.op {
            Some(Op::Alarm(a)) => a.member_id == caller,
            Some(Op::AuthChange(c)) => matches!(c.op, Some(Change::Authenticate(_))),
            // The leader's version monitor: the cluster version, and the
            // end of a downgrade every member has made.
            Some(Op::ClusterVersion(_)) => true,
            Some(Op::Downgrade(d)) => !d.enabled,
            Some(Op::MemberVersion(m)) => m.member_id == caller,
            _ => false,
        };
        if members_own {
            return Ok(bytes);
        }
        req.auth = Some(common::proto::storage::AuthInfo::default());
        Ok(req.encode_to_vec().into())
    }

    /// Propose a batch a local gatewayd sent, or one `caller` forwarded
    /// (screened first; refused proposals are answered with their error).
    pub async fn propose_from(
        &self,
        proposals: Vec<Bytes>,
        forwarded: bool,
        caller: Option<NodeId>,
    ) -> Result<ProposeBatchResponse, Status> {
        let Some(caller) = caller else {
            return self.propose(proposals, forwarded).await;
        };
        let screened: Vec<Result<Bytes, EtcdError>> = proposals
            .into_iter()
            .map(|p| self.screen(p, caller))
            .collect();
        let admitted: Vec<Bytes> = screened.iter().filter_map(|s| s.clone().ok()).collect();
        let mut resp = if admitted.is_empty() {
            ProposeBatchResponse {
                raft_term: self.term(),
                ..Default::default()
            }
        } else {
            self.propose(admitted, forwarded).await?
        };
        let mut proposed = std::mem::take(&mut resp.outcomes).into_iter();
        resp.outcomes = screened
            .into_iter()
            .map(|s| match s {
                Ok(_) => proposed.next().unwrap_or_default(),
                Err(e) => ProposeOutcome {
                    outcome: Some(Outcome::Error(e.wire_code())),
                },
            })
            .collect();
        Ok(resp)
    }

    /// Propose here or on the leader. Proposals refused because leadership
    /// moved (never appended, so never committed) are routed again.
    async fn propose(
        &self,
        proposals: Vec<Bytes>,
        forwarded: bool,
    ) -> Result<ProposeBatchResponse, Status> {
        let not_appended = [
            EtcdError::NotLeader.wire_code(),
            EtcdError::NoLeader.wire_code(),
        ];
        let mut resp = self.propose_once(proposals.clone(), forwarded).await?;
        for _ in 0..REROUTES {
            if forwarded {
                break;
            }
            let retry: Vec<usize> = resp
                .outcomes
                .iter()
                .enumerate()
                .filter(|(_, o)| matches!(o.outcome, Some(Outcome::Error(c)) if not_appended.contains(&c)))
                .map(|(i, _)| i)
                .collect();
            if retry.is_empty() {
                break;
            }
            let again = retry.iter().map(|&i| proposals[i].clone()).collect();
            let more = self.propose_once(again, false).await?;
            for (i, o) in retry.into_iter().zip(more.outcomes) {
                resp.outcomes[i] = o;
            }
            resp.raft_term = resp.raft_term.max(more.raft_term);
            resp.raft_index = resp.raft_index.max(more.raft_index);
        }
        Ok(resp)
    }

    /// Propose on this (leading) raftd; outcomes align with `proposals`.
    async fn propose_here(&self, proposals: Vec<Bytes>) -> Result<ProposeBatchResponse, Status> {
        let stopped = |_| Status::from(EtcdError::Stopped);
        let _pending = crate::metrics::Pending::new(proposals.len());
        let _awaiting = common::park_spin::AwaitingReply::new();
        let mut results = self
            .raft
            .client_write_many(proposals.into_iter().map(Proposal))
            .await
            .map_err(stopped)?;
        let mut outcomes = Vec::new();
        let mut raft_term = self.term();
        let mut raft_index = 0;
        while let Some(r) = results.next().await {
            let outcome = match r.map_err(stopped)? {
                Ok(w) => {
                    raft_term = raft_term.max(w.log_id.leader_id.term);
                    raft_index = raft_index.max(w.log_id.index);
                    Outcome::Result(w.response.0)
                }
                Err(e) => {
                    crate::metrics::PROPOSALS_FAILED.inc();
                    Outcome::Error(write_error(&e).wire_code())
                }
            };
            outcomes.push(ProposeOutcome {
                outcome: Some(outcome),
            });
        }
        Ok(ProposeBatchResponse {
            outcomes,
            raft_term,
            raft_index,
            ..Default::default()
        })
    }

    async fn propose_once(
        &self,
        proposals: Vec<Bytes>,
        forwarded: bool,
    ) -> Result<ProposeBatchResponse, Status> {
        let deadline = Instant::now() + self.router.leader_wait();
        loop {
            let link = match self.router.route(forwarded).await? {
                Route::Here => return self.propose_here(proposals).await,
                Route::Leader(link) => link,
            };
            // Batches go as they are unless over what a peer decodes.
            let calls = split_batch(proposals.clone(), crate::peer_auth::FORWARDED_BATCH_BYTES)
                .into_iter()
                .map(|requests| link.proposals.call(ProposeBatchRequest { requests, id: 0 }));
            // Given up on once another member leads: it may have been
            // committed, as with a call lost in flight.
            let parts = self
                .router
                .while_leading(link.id, futures::future::join_all(calls))
                .await
                .ok_or_else(|| Status::from(EtcdError::Timeout))?;
            // A leader that cannot be reached at all (it died: nothing was
            // sent) is about to be replaced: the writes wait for the next
            // leader, as etcd's do, instead of each failing at once (a
            // writer retrying saw hundreds of errors per failover).
            let unreachable = parts.iter().all(|p| p.as_ref().is_err_and(never_sent));
            if unreachable && Instant::now() < deadline {
                self.router.leader_moved_from(link.id, REROUTE_PAUSE).await;
                continue;
            }
            return self.joined(parts).await;
        }
    }

    /// The parts of a forwarded batch as one answer, once applied here.
    async fn joined(
        &self,
        parts: Vec<Result<ProposeBatchResponse, Status>>,
    ) -> Result<ProposeBatchResponse, Status> {
        let mut resp = ProposeBatchResponse::default();
        for part in parts {
            let part = part.map_err(leader_failed)?;
            resp.outcomes.extend(part.outcomes);
            resp.raft_term = resp.raft_term.max(part.raft_term);
            resp.raft_index = resp.raft_index.max(part.raft_index);
        }
        self.router.wait_applied(resp.raft_index).await?;
        Ok(resp)
    }
}

/// `proposals` in consecutive batches of at most `bytes` each (a single
/// larger proposal goes alone).
fn split_batch(proposals: Vec<Bytes>, bytes: usize) -> Vec<Vec<Bytes>> {
    let mut batches: Vec<Vec<Bytes>> = Vec::new();
    let mut size = 0;
    for p in proposals {
        match batches.last_mut() {
            Some(last) if size + p.len() <= bytes => {
                size += p.len();
                last.push(p);
            }
            _ => {
                size = p.len();
                batches.push(vec![p]);
            }
        }
    }
    batches
}
