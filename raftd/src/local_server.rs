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
pub use crate::proposals::Limits;
use crate::proposals::Proposals;
use crate::raft_errors::leader_failed;
use crate::read_indexes::ReadIndexes;
use crate::route::{forwarded as forwarded_request, is_forwarded, Route, Router};
use crate::types::NodeId;
use crate::Raft;
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
use openraft::async_runtime::WatchReceiver;
use tonic::transport::Channel;

#[derive(Clone)]
pub struct RaftLocalService {
    raft: Raft,
    router: Arc<Router>,
    proposals: Arc<Proposals>,
    reads: ReadIndexes,
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
}

/// What a `RaftLocalService` is made of.
pub struct Parts {
    pub router: Arc<Router>,
    pub lessor: Arc<Lessor>,
    pub members: Arc<Members>,
    pub cluster_id: u64,
    pub db_size: Arc<AtomicI64>,
    pub initialized_before: bool,
    pub removal: Arc<crate::removal::Removal>,
    pub limits: Limits,
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

impl RaftLocalService {
    pub fn new(p: Parts) -> Self {
        RaftLocalService {
            raft: p.router.raft().clone(),
            proposals: Arc::new(Proposals::new(p.router.clone(), p.limits)),
            reads: ReadIndexes::new(p.router.clone()),
            router: p.router,
            lessor: p.lessor,
            members: p.members,
            cluster_id: p.cluster_id,
            db_size: p.db_size,
            was_member: Arc::new(std::sync::atomic::AtomicBool::new(p.initialized_before)),
            removal: p.removal,
        }
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
            // Given up on once another member leads; it may have been
            // carried out, as with a call lost in flight.
            Route::Leader(link) => self
                .router
                .while_leading(link.id, leader(link.client.clone(), forwarded_request(req)))
                .await
                .ok_or_else(|| Status::from(EtcdError::Timeout))?
                .map_err(leader_failed),
        }
    }
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
    let mut stopping = common::lifecycle::stopping();
    // One task runs every answer of the stream (a task per message cost an
    // allocation, a copy of the future and a hand-off per call).
    tokio::spawn(async move {
        let mut answering = FuturesUnordered::new();
        let mut open = !*stopping.borrow_and_update();
        loop {
            tokio::select! {
                call = calls.message(), if open => match call {
                    Ok(Some(call)) => answering.push(answer(call)),
                    _ => open = false,
                },
                // Stopping: no call is read any more; once those read are
                // answered the stream ends cleanly, which tells the caller
                // that the calls it sent since were not taken.
                _ = stopping.changed(), if open => open = !*stopping.borrow_and_update(),
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
                let spans: Vec<_> = if common::distributed_tracing::enabled() {
                    batch
                        .requests
                        .iter()
                        .filter_map(|r| common::distributed_tracing::start_for_request(r))
                        .collect()
                } else {
                    Vec::new()
                };
                let answer = this
                    .proposals
                    .propose_from(batch.requests, forwarded, caller)
                    .await;
                for span in spans {
                    let error = answer.as_ref().err().map(|s| s.message().to_string());
                    span.finish(
                        "raftd.Propose",
                        common::distributed_tracing::Kind::Internal,
                        &[("raft.forwarded", if forwarded { "true" } else { "false" })],
                        error.as_deref(),
                    );
                }
                match answer {
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
                match this.reads.answer_read_index(forwarded).await {
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
        self.reads
            .answer_read_index(is_forwarded(&req))
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
