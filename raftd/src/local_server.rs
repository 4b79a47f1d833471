//! The triad.raft.v1 service on the member's Unix socket: gatewayd proposes
//! writes and asks for read indexes here. Raft errors become etcd's errors
//! through common::errors.

use tonic::{Request, Response, Status};

use crate::types::{Proposal, Raft, TypeConfig};
use common::errors::EtcdError;
use common::proto::raft::raft_local_server::RaftLocal;
use common::proto::raft::{
    HelloRequest, HelloResponse, ProposeRequest, ProposeResponse, ReadIndexRequest,
    ReadIndexResponse, StatusRequest, StatusResponse,
};
use common::proto::RAFT_PROTOCOL;
use openraft::async_runtime::WatchReceiver;
use openraft::error::{ClientWriteError, LinearizableReadError, RaftError};
use openraft::ReadPolicy;

pub struct RaftLocalService {
    raft: Raft,
    member_id: u64,
    cluster_id: u64,
}

impl RaftLocalService {
    pub fn new(raft: Raft, member_id: u64, cluster_id: u64) -> Self {
        RaftLocalService {
            raft,
            member_id,
            cluster_id,
        }
    }

    fn term(&self) -> u64 {
        self.raft.metrics().borrow_watched().current_term
    }
}

fn write_error(e: RaftError<TypeConfig, ClientWriteError<TypeConfig>>) -> Status {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) if f.leader_id.is_none() => {
            EtcdError::NoLeader.into()
        }
        RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => EtcdError::NotLeader.into(),
        RaftError::APIError(ClientWriteError::LogEntryDiscarded(_)) => {
            EtcdError::LeaderChanged.into()
        }
        RaftError::APIError(other) => Status::failed_precondition(other.to_string()),
        RaftError::Fatal(_) => EtcdError::Stopped.into(),
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
        let asked = req.into_inner().protocol;
        if asked != RAFT_PROTOCOL {
            return Err(Status::failed_precondition(format!(
                "raftd speaks {RAFT_PROTOCOL}, caller wants {asked}"
            )));
        }
        Ok(Response::new(HelloResponse {
            protocol: RAFT_PROTOCOL.to_string(),
            daemon_version: common::VERSION.to_string(),
        }))
    }

    async fn propose(
        &self,
        req: Request<ProposeRequest>,
    ) -> Result<Response<ProposeResponse>, Status> {
        let proposal = Proposal(req.into_inner().request);
        let resp = self
            .raft
            .client_write(proposal)
            .await
            .map_err(write_error)?;
        Ok(Response::new(ProposeResponse {
            result: resp.data.0,
            raft_term: resp.log_id.leader_id.term,
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
        let index = read.index();
        Ok(Response::new(ReadIndexResponse {
            read_index: index,
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
}
