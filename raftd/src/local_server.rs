//! The triad.raft.v1 service on the member's Unix socket: gatewayd proposes
//! writes (in batches) and asks for read indexes here. Raft errors become
//! etcd's errors through common::errors.

use futures::StreamExt;
use tonic::{Request, Response, Status};

use std::sync::Arc;

use crate::lessor::Lessor;
use crate::types::{Proposal, Raft, TypeConfig};
use common::errors::EtcdError;
use common::proto::etcdserverpb::{
    LeaseGrantRequest, LeaseKeepAliveRequest, LeaseRevokeRequest, LeaseTimeToLiveRequest,
};
use common::proto::raft::propose_outcome::Outcome;
use common::proto::raft::raft_local_server::RaftLocal;
use common::proto::raft::{
    HelloRequest, HelloResponse, LeaseLiveness, ProposeBatchRequest, ProposeBatchResponse,
    ProposeOutcome, ReadIndexRequest, ReadIndexResponse, StatusRequest, StatusResponse,
};
use common::proto::RAFT_PROTOCOL;
use openraft::async_runtime::WatchReceiver;
use openraft::error::{ClientWriteError, LinearizableReadError, RaftError};
use openraft::ReadPolicy;

pub struct RaftLocalService {
    raft: Raft,
    lessor: Arc<Lessor>,
    member_id: u64,
    cluster_id: u64,
}

impl RaftLocalService {
    pub fn new(raft: Raft, lessor: Arc<Lessor>, member_id: u64, cluster_id: u64) -> Self {
        RaftLocalService {
            raft,
            lessor,
            member_id,
            cluster_id,
        }
    }

    fn term(&self) -> u64 {
        self.raft.metrics().borrow_watched().current_term
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
        let proposals = req.into_inner().requests.into_iter().map(Proposal);
        let stopped = |_| Status::from(EtcdError::Stopped);
        let mut results = self
            .raft
            .client_write_many(proposals)
            .await
            .map_err(stopped)?;
        let mut outcomes = Vec::new();
        let mut raft_term = self.term();
        while let Some(r) = results.next().await {
            let outcome = match r.map_err(stopped)? {
                Ok(w) => {
                    raft_term = raft_term.max(w.log_id.leader_id.term);
                    Outcome::Result(w.response.0)
                }
                Err(e) => Outcome::Error(write_error(&e).wire_code()),
            };
            outcomes.push(ProposeOutcome {
                outcome: Some(outcome),
            });
        }
        Ok(Response::new(ProposeBatchResponse {
            outcomes,
            raft_term,
        }))
    }

    async fn read_index(
        &self,
        _req: Request<ReadIndexRequest>,
    ) -> Result<Response<ReadIndexResponse>, Status> {
        let read = self
            .raft
            .ensure_linearizable(ReadPolicy::ReadIndex)
            .await
            .map_err(read_error)?;
        Ok(Response::new(ReadIndexResponse {
            read_index: read.index(),
            raft_term: self.term(),
        }))
    }

    async fn status(
        &self,
        _req: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        let m = self.raft.metrics().borrow_watched().clone();
        Ok(Response::new(StatusResponse {
            member_id: self.member_id,
            leader: m.current_leader.unwrap_or(0),
            term: m.current_term,
            last_log_index: m.last_log_index.unwrap_or(0),
            commit_index: m.cluster_committed.map_or(0, |l| l.index),
            applied_index: m.last_applied.map_or(0, |l| l.index),
            cluster_id: self.cluster_id,
        }))
    }

    async fn lease_grant(
        &self,
        req: Request<LeaseGrantRequest>,
    ) -> Result<Response<ProposeOutcome>, Status> {
        let result = self.lessor.grant(req.into_inner()).await?;
        Ok(Response::new(ProposeOutcome {
            outcome: Some(Outcome::Result(result)),
        }))
    }

    async fn lease_revoke(
        &self,
        req: Request<LeaseRevokeRequest>,
    ) -> Result<Response<ProposeOutcome>, Status> {
        let result = self.lessor.revoke(req.into_inner()).await?;
        Ok(Response::new(ProposeOutcome {
            outcome: Some(Outcome::Result(result)),
        }))
    }

    async fn lease_keep_alive(
        &self,
        req: Request<LeaseKeepAliveRequest>,
    ) -> Result<Response<LeaseLiveness>, Status> {
        let id = req.into_inner().id;
        let ttl = self.lessor.keep_alive(id).await?;
        Ok(Response::new(LeaseLiveness {
            id,
            ttl: ttl.unwrap_or(-1),
            granted_ttl: ttl.unwrap_or(-1),
        }))
    }

    async fn lease_time_to_live(
        &self,
        req: Request<LeaseTimeToLiveRequest>,
    ) -> Result<Response<LeaseLiveness>, Status> {
        let id = req.into_inner().id;
        let (ttl, granted_ttl) = self
            .lessor
            .get(id)
            .await?
            .map_or((-1, -1), |l| (l.remaining, l.granted));
        Ok(Response::new(LeaseLiveness {
            id,
            ttl,
            granted_ttl,
        }))
    }
}
