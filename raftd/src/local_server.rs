//! The triad.raft.v1 service on the member's Unix socket: gatewayd proposes
//! writes (in batches) and asks for read indexes here. Raft errors become
//! etcd's errors through common::errors. The same service answers other
//! members' forwarded calls on the peer port, where `peer_auth` admitted
//! the caller (a `PeerCaller` extension) and what it forwards is checked
//! again here, as gatewayd checks its clients' requests.

use futures::stream::FuturesUnordered;
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use crate::lessor::Lessor;
use crate::members::Members;
use crate::peer_auth::PeerCaller;
use crate::route::{forwarded as forwarded_request, is_forwarded, Route, Router};
use crate::types::{NodeId, Proposal, Raft, TypeConfig};
use common::errors::EtcdError;
use common::proto::etcdserverpb::{
    LeaseGrantRequest, LeaseKeepAliveRequest, LeaseTimeToLiveRequest, MemberAddRequest,
    MemberAddResponse, MemberListRequest, MemberListResponse, MemberPromoteRequest,
    MemberPromoteResponse, MemberRemoveRequest, MemberRemoveResponse, MemberUpdateRequest,
    MemberUpdateResponse, MoveLeaderRequest, MoveLeaderResponse,
};
use common::proto::raft::propose_outcome::Outcome;
use common::proto::raft::raft_local_client::RaftLocalClient;
use common::proto::raft::raft_local_server::RaftLocal;
use common::proto::raft::{
    HelloRequest, HelloResponse, LeaseLiveness, LeaseRevokeProposal, ProposeBatchRequest,
    ProposeBatchResponse, ProposeOutcome, PublishRequest, PublishResponse, ReadIndexRequest,
    ReadIndexResponse, StatusRequest, StatusResponse,
};
use common::proto::RAFT_PROTOCOL;
use common::read_batch::ReadBatch;
use openraft::async_runtime::WatchReceiver;
use openraft::error::{ClientWriteError, LinearizableReadError, RaftError};
use openraft::ReadPolicy;
use tonic::transport::Channel;

#[derive(Clone)]
pub struct RaftLocalService {
    raft: Raft,
    router: Arc<Router>,
    lessor: Arc<Lessor>,
    members: Arc<Members>,
    cluster_id: u64,
    /// This member's storaged size after its last apply.
    db_size: Arc<AtomicI64>,
    /// Whether this node has been in the membership (or had raft state
    /// when it started): only then does its absence mean it was removed.
    /// A joining node replays older membership configs without itself
    /// before it reaches the one that added it.
    was_member: Arc<std::sync::atomic::AtomicBool>,
    /// A peer told this member it was removed.
    removal: Arc<crate::removal::Removal>,
    /// Read-index rounds shared by this member's clients' reads, and by
    /// reads other members forwarded here.
    local_reads: Arc<ReadBatch<u64>>,
    forwarded_reads: Arc<ReadBatch<u64>>,
    limits: Limits,
}

/// The member's request limits, applied to what peers forward.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_request_bytes: usize,
    pub max_txn_ops: usize,
}

/// The member a call came from over TCP, if it did.
fn peer_caller<T>(req: &Request<T>) -> Option<NodeId> {
    req.extensions().get::<PeerCaller>().map(|c| c.0)
}

/// Calls a member makes only on its own raftd.
fn local_only<T>(req: &Request<T>) -> Result<(), Status> {
    match peer_caller(req) {
        Some(_) => Err(Status::permission_denied("not served to peers")),
        None => Ok(()),
    }
}

/// How often a proposal or read is re-routed when leadership moved under it.
const REROUTES: usize = 3;
/// Pause before routing a read again (a new leader is being elected).
const REROUTE_PAUSE: std::time::Duration = std::time::Duration::from_millis(100);

/// The leader asked was no longer leading, or could not be reached.
fn leadership_moved(e: &Status) -> bool {
    let moved = [
        EtcdError::NotLeader,
        EtcdError::LeaderChanged,
        EtcdError::NoLeader,
    ];
    std::error::Error::source(e).is_some()
        || EtcdError::of_status(e).is_some_and(|k| moved.contains(&k))
}

impl RaftLocalService {
    pub fn new(
        router: Arc<Router>,
        lessor: Arc<Lessor>,
        members: Arc<Members>,
        cluster_id: u64,
        db_size: Arc<AtomicI64>,
        initialized_before: bool,
        removal: Arc<crate::removal::Removal>,
    ) -> Self {
        RaftLocalService {
            limits: Limits {
                max_request_bytes: usize::MAX,
                max_txn_ops: usize::MAX,
            },
            removal,
            was_member: Arc::new(std::sync::atomic::AtomicBool::new(initialized_before)),
            raft: router.raft().clone(),
            router,
            lessor,
            members,
            cluster_id,
            db_size,
            local_reads: Arc::default(),
            forwarded_reads: Arc::default(),
        }
    }

    /// The limits forwarded requests are checked against.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// `read_index_once` in a round shared with concurrent reads.
    async fn shared_read_index(&self, forwarded: bool) -> Result<u64, Status> {
        let batch = if forwarded {
            &self.forwarded_reads
        } else {
            &self.local_reads
        };
        let service = self.clone();
        batch
            .read(move || {
                let service = service.clone();
                async move { service.read_index_once(forwarded).await }
            })
            .await
    }

    /// A read index for a caller here (`forwarded` false) or a member.
    async fn answer_read_index(&self, forwarded: bool) -> Result<ReadIndexResponse, Status> {
        // A read changes nothing: when leadership moved under it (or the
        // old leader went away), it is simply routed again.
        let mut tries = 0;
        let read_index = loop {
            match self.shared_read_index(forwarded).await {
                Err(e) if !forwarded && tries < REROUTES && leadership_moved(&e) => {
                    tries += 1;
                    tokio::time::sleep(REROUTE_PAUSE).await;
                }
                r => break r.map_err(leader_failed)?,
            }
        };
        Ok(ReadIndexResponse {
            read_index,
            raft_term: self.term(),
            ..Default::default()
        })
    }

    fn term(&self) -> u64 {
        self.raft.metrics().borrow_watched().current_term
    }

    /// Propose on this (leading) raftd; outcomes align with `proposals`.
    async fn propose_here(&self, proposals: Vec<Vec<u8>>) -> Result<ProposeBatchResponse, Status> {
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

    /// What `caller` forwarded, checked as gatewayd checks its clients'
    /// requests: bounded, decodable and valid. A request without a caller
    /// identity counts as an anonymous client's, except the two a member
    /// makes on its own: the NOSPACE alarm it raises for itself, and a
    /// simple token it registers after checking a password.
    fn screen(&self, bytes: Vec<u8>, caller: NodeId) -> Result<Vec<u8>, EtcdError> {
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
            _ => false,
        };
        if members_own {
            return Ok(bytes);
        }
        req.auth = Some(common::proto::storage::AuthInfo::default());
        Ok(req.encode_to_vec())
    }

    /// Propose a batch a local gatewayd sent, or one `caller` forwarded
    /// (screened first; refused proposals are answered with their error).
    async fn propose_from(
        &self,
        proposals: Vec<Vec<u8>>,
        forwarded: bool,
        caller: Option<NodeId>,
    ) -> Result<ProposeBatchResponse, Status> {
        let Some(caller) = caller else {
            return self.propose(proposals, forwarded).await;
        };
        let screened: Vec<Result<Vec<u8>, EtcdError>> = proposals
            .into_iter()
            .map(|p| self.screen(p, caller))
            .collect();
        let admitted: Vec<Vec<u8>> = screened.iter().filter_map(|s| s.clone().ok()).collect();
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
        proposals: Vec<Vec<u8>>,
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

    /// Run a request with `here` when this raftd leads, else send it to
    /// the leader's raftd with `leader` (marked as forwarded).
    async fn routed<Req, Resp, H, HF, L, LF>(
        &self,
        req: Request<Req>,
        here: H,
        leader: L,
    ) -> Result<Response<Resp>, Status>
    where
        H: FnOnce(Req) -> HF,
        HF: std::future::Future<Output = Result<Resp, Status>>,
        L: FnOnce(RaftLocalClient<Channel>, Request<Req>) -> LF,
        LF: std::future::Future<Output = Result<Response<Resp>, Status>>,
    {
        let forwarded = is_forwarded(&req);
        let req = req.into_inner();
        match self.router.route(forwarded).await? {
            Route::Here => here(req).await.map(Response::new),
            Route::Leader(link) => leader(link.client.clone(), forwarded_request(req))
                .await
                .map_err(leader_failed),
        }
    }

    /// A quorum-confirmed read index, here or from the leader (then
    /// applied here before answering).
    async fn read_index_once(&self, forwarded: bool) -> Result<u64, Status> {
        Ok(match self.router.route(forwarded).await? {
            // A forwarded read index is applied by the asking member.
            Route::Here if forwarded => self
                .raft
                .get_read_log_id(ReadPolicy::ReadIndex)
                .await
                .map_err(read_error)?
                .0
                .index(),
            Route::Here => self
                .raft
                .ensure_linearizable(ReadPolicy::ReadIndex)
                .await
                .map_err(read_error)?
                .index(),
            Route::Leader(link) => {
                let index = link.read_indexes.read_index().await?.read_index;
                self.router.wait_applied(index).await?;
                index
            }
        })
    }

    async fn propose_once(
        &self,
        proposals: Vec<Vec<u8>>,
        forwarded: bool,
    ) -> Result<ProposeBatchResponse, Status> {
        match self.router.route(forwarded).await? {
            Route::Here => self.propose_here(proposals).await,
            Route::Leader(link) => {
                // Batches go as they are unless over what a peer decodes.
                let calls = split_batch(proposals, crate::peer_auth::FORWARDED_BATCH_BYTES)
                    .into_iter()
                    .map(|requests| link.proposals.call(ProposeBatchRequest { requests, id: 0 }));
                let mut resp = ProposeBatchResponse::default();
                for part in futures::future::join_all(calls).await {
                    let part = part.map_err(leader_failed)?;
                    resp.outcomes.extend(part.outcomes);
                    resp.raft_term = resp.raft_term.max(part.raft_term);
                    resp.raft_index = resp.raft_index.max(part.raft_index);
                }
                self.router.wait_applied(resp.raft_index).await?;
                Ok(resp)
            }
        }
    }
}

/// `proposals` in consecutive batches of at most `bytes` each (a single
/// larger proposal goes alone).
fn split_batch(proposals: Vec<Vec<u8>>, bytes: usize) -> Vec<Vec<Vec<u8>>> {
    let mut batches: Vec<Vec<Vec<u8>>> = Vec::new();
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

/// Answer each message of a call stream as its own request, concurrently;
/// `answer` puts the request's id (and any failure) into its reply.
fn answer_each<Req, Resp, F, Fut>(
    mut calls: Streaming<Req>,
    answer: F,
) -> ReceiverStream<Result<Resp, Status>>
where
    Req: Send + 'static,
    Resp: Send + 'static,
    F: Fn(Req) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Resp> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(64);
    // One task runs every answer of the stream (a task per message cost an
    // allocation, a copy of the future and a hand-off per call).
    tokio::spawn(async move {
        let mut answering = FuturesUnordered::new();
        let mut open = true;
        loop {
            tokio::select! {
                call = calls.message(), if open => match call {
                    Ok(Some(call)) => answering.push(answer(call)),
                    _ => open = false,
                },
                Some(reply) = answering.next(), if !answering.is_empty() => {
                    if tx.send(Ok(reply)).await.is_err() {
                        return;
                    }
                }
                else => return,
            }
        }
    });
    ReceiverStream::new(rx)
}

/// A raft result as a proposal outcome.
fn applied(result: Vec<u8>) -> ProposeOutcome {
    ProposeOutcome {
        outcome: Some(Outcome::Result(result)),
    }
}

/// The leader could not be asked or failed to answer: etcd's unavailability
/// (a proposal may or may not have been committed, as with etcd).
fn leader_failed(s: Status) -> Status {
    if std::error::Error::source(&s).is_some() {
        tracing::warn!(error = %s, "forwarding to the leader failed");
        EtcdError::Timeout.into()
    } else {
        s
    }
}

/// etcd's error for a proposal that was not committed through this node.
pub(crate) fn write_error(e: &ClientWriteError<TypeConfig>) -> EtcdError {
    match e {
        ClientWriteError::ForwardToLeader(f) if f.leader_id.is_none() => EtcdError::NoLeader,
        ClientWriteError::ForwardToLeader(_) => EtcdError::NotLeader,
        ClientWriteError::LogEntryDiscarded(_) => EtcdError::LeaderChanged,
        ClientWriteError::ChangeMembershipError(_) | ClientWriteError::PreconditionFailed(_) => {
            EtcdError::NotCapable
        }
    }
}

fn read_error(e: RaftError<TypeConfig, LinearizableReadError<TypeConfig>>) -> Status {
    match e {
        RaftError::APIError(LinearizableReadError::ForwardToLeader(f)) if f.leader_id.is_none() => {
            EtcdError::NoLeader.into()
        }
        RaftError::APIError(LinearizableReadError::ForwardToLeader(_)) => {
            EtcdError::NotLeader.into()
        }
        RaftError::APIError(LinearizableReadError::QuorumNotEnough(_)) => EtcdError::Timeout.into(),
        RaftError::Fatal(_) => EtcdError::Stopped.into(),
    }
}

#[tonic::async_trait]
impl RaftLocal for RaftLocalService {
    async fn metrics(
        &self,
        req: Request<common::proto::storage::MetricsRequest>,
    ) -> Result<Response<common::proto::storage::MetricsResponse>, Status> {
        local_only(&req)?;
        Ok(Response::new(common::proto::storage::MetricsResponse {
            text: crate::metrics::render(),
        }))
    }

    async fn hello(&self, req: Request<HelloRequest>) -> Result<Response<HelloResponse>, Status> {
        common::proto::check_protocol("raftd", RAFT_PROTOCOL, &req.into_inner().protocol)?;
        Ok(Response::new(HelloResponse {
            protocol: RAFT_PROTOCOL.to_string(),
            daemon_version: common::VERSION.to_string(),
        }))
    }

    async fn propose_batch(
        &self,
        req: Request<ProposeBatchRequest>,
    ) -> Result<Response<ProposeBatchResponse>, Status> {
        let (forwarded, caller) = (is_forwarded(&req), peer_caller(&req));
        let mut resp = self
            .propose_from(req.into_inner().requests, forwarded, caller)
            .await?;
        resp.db_size = self.db_size.load(Ordering::Relaxed);
        Ok(Response::new(resp))
    }

    type ProposeStream = ReceiverStream<Result<ProposeBatchResponse, Status>>;

    /// Batches on one stream, each proposed as it arrives (concurrently)
    /// and answered when committed.
    async fn propose(
        &self,
        req: Request<Streaming<ProposeBatchRequest>>,
    ) -> Result<Response<Self::ProposeStream>, Status> {
        let (forwarded, caller) = (is_forwarded(&req), peer_caller(&req));
        let this = self.clone();
        Ok(Response::new(answer_each(req.into_inner(), move |batch| {
            let this = this.clone();
            async move {
                let id = batch.id;
                match this.propose_from(batch.requests, forwarded, caller).await {
                    Ok(r) => ProposeBatchResponse {
                        id,
                        db_size: this.db_size.load(Ordering::Relaxed),
                        ..r
                    },
                    Err(s) => ProposeBatchResponse {
                        id,
                        failure: Some((&s).into()),
                        ..Default::default()
                    },
                }
            }
        })))
    }

    type ReadIndexStreamStream = ReceiverStream<Result<ReadIndexResponse, Status>>;

    /// Read indexes on one stream, each answered (by id) when its round is.
    async fn read_index_stream(
        &self,
        req: Request<Streaming<ReadIndexRequest>>,
    ) -> Result<Response<Self::ReadIndexStreamStream>, Status> {
        let forwarded = is_forwarded(&req);
        let this = self.clone();
        Ok(Response::new(answer_each(req.into_inner(), move |call| {
            let this = this.clone();
            async move {
                match this.answer_read_index(forwarded).await {
                    Ok(r) => ReadIndexResponse { id: call.id, ..r },
                    Err(s) => ReadIndexResponse {
                        id: call.id,
                        failure: Some((&s).into()),
                        ..Default::default()
                    },
                }
            }
        })))
    }

    async fn read_index(
        &self,
        req: Request<ReadIndexRequest>,
    ) -> Result<Response<ReadIndexResponse>, Status> {
        self.answer_read_index(is_forwarded(&req))
            .await
            .map(Response::new)
    }

    async fn status(
        &self,
        req: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        local_only(&req)?;
        let m = self.raft.metrics().borrow_watched().clone();
        let membership = m.membership_config.membership();
        let me = self.router.id();
        let is_learner = !membership.voter_ids().any(|v| v == me);
        // Was in the membership, has one, and is not in it: removed.
        let present = membership.get_node(&me).is_some();
        if present {
            self.was_member
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        // Or a peer refused it as removed (it never saw its removal).
        let removed = self.removal.told()
            || !present
                && membership.nodes().next().is_some()
                && self.was_member.load(std::sync::atomic::Ordering::Relaxed);
        Ok(Response::new(StatusResponse {
            member_id: self.router.id(),
            leader: m.current_leader.unwrap_or(0),
            term: m.current_term,
            last_log_index: m.last_log_index.unwrap_or(0),
            commit_index: m.cluster_committed.map_or(0, |l| l.index),
            applied_index: m.last_applied.map_or(0, |l| l.index),
            cluster_id: self.cluster_id,
            is_learner,
            removed,
        }))
    }

    async fn lease_grant(
        &self,
        req: Request<LeaseGrantRequest>,
    ) -> Result<Response<ProposeOutcome>, Status> {
        self.routed(
            req,
            |r| async move { Ok(applied(self.lessor.grant(r).await?)) },
            |mut l, r| async move { l.lease_grant(r).await },
        )
        .await
    }

    async fn lease_revoke(
        &self,
        mut req: Request<LeaseRevokeProposal>,
    ) -> Result<Response<ProposeOutcome>, Status> {
        // A revoke deletes keys: over TCP it is always some client's.
        if peer_caller(&req).is_some() && req.get_ref().auth.is_none() {
            req.get_mut().auth = Some(common::proto::storage::AuthInfo::default());
        }
        self.routed(
            req,
            |r| async move { Ok(applied(self.lessor.revoke(r).await?)) },
            |mut l, r| async move { l.lease_revoke(r).await },
        )
        .await
    }

    async fn lease_keep_alive(
        &self,
        req: Request<LeaseKeepAliveRequest>,
    ) -> Result<Response<LeaseLiveness>, Status> {
        self.routed(
            req,
            |r| async move {
                let ttl = self.lessor.keep_alive(r.id).await?.unwrap_or(-1);
                Ok(LeaseLiveness {
                    id: r.id,
                    ttl,
                    granted_ttl: ttl,
                })
            },
            |mut l, r| async move { l.lease_keep_alive(r).await },
        )
        .await
    }

    async fn lease_time_to_live(
        &self,
        req: Request<LeaseTimeToLiveRequest>,
    ) -> Result<Response<LeaseLiveness>, Status> {
        self.routed(
            req,
            |r| async move {
                let (ttl, granted_ttl) = self
                    .lessor
                    .get(r.id)
                    .await?
                    .map_or((-1, -1), |l| (l.remaining, l.granted));
                Ok(LeaseLiveness {
                    id: r.id,
                    ttl,
                    granted_ttl,
                })
            },
            |mut l, r| async move { l.lease_time_to_live(r).await },
        )
        .await
    }

    async fn member_list(
        &self,
        req: Request<MemberListRequest>,
    ) -> Result<Response<MemberListResponse>, Status> {
        if !req.get_ref().linearizable {
            return Ok(Response::new(self.members.list_response()));
        }
        self.routed(
            req,
            |_| async move { Ok(self.members.list_response()) },
            |mut l, r| async move { l.member_list(r).await },
        )
        .await
    }

    async fn member_add(
        &self,
        req: Request<MemberAddRequest>,
    ) -> Result<Response<MemberAddResponse>, Status> {
        self.routed(
            req,
            |r| self.members.add(r),
            |mut l, r| async move { l.member_add(r).await },
        )
        .await
    }

    async fn member_remove(
        &self,
        req: Request<MemberRemoveRequest>,
    ) -> Result<Response<MemberRemoveResponse>, Status> {
        self.routed(
            req,
            |r| self.members.remove(r),
            |mut l, r| async move { l.member_remove(r).await },
        )
        .await
    }

    async fn member_update(
        &self,
        req: Request<MemberUpdateRequest>,
    ) -> Result<Response<MemberUpdateResponse>, Status> {
        self.routed(
            req,
            |r| self.members.update(r),
            |mut l, r| async move { l.member_update(r).await },
        )
        .await
    }

    async fn member_promote(
        &self,
        req: Request<MemberPromoteRequest>,
    ) -> Result<Response<MemberPromoteResponse>, Status> {
        self.routed(
            req,
            |r| self.members.promote(r),
            |mut l, r| async move { l.member_promote(r).await },
        )
        .await
    }

    async fn move_leader(
        &self,
        req: Request<MoveLeaderRequest>,
    ) -> Result<Response<MoveLeaderResponse>, Status> {
        // etcd: only the leader transfers leadership; no forwarding.
        local_only(&req)?;
        let req = req.into_inner();
        Ok(Response::new(self.members.move_leader(req).await?))
    }

    async fn publish(
        &self,
        req: Request<PublishRequest>,
    ) -> Result<Response<PublishResponse>, Status> {
        // A member publishes only itself.
        if peer_caller(&req).is_some_and(|c| c != req.get_ref().member_id) {
            return Err(Status::permission_denied("a member publishes only itself"));
        }
        self.routed(
            req,
            |r| async move { self.members.publish(r).await.map(|()| PublishResponse {}) },
            |mut l, r| async move { l.publish(r).await },
        )
        .await
    }
}
