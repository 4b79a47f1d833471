//! The triad.peer.v1 service on raftd's peer port: other members' raftd
//! deliver openraft's messages here. Messages from another cluster are
//! refused, as etcd refuses a peer with a different cluster ID.

use std::io;

use tonic::{Request, Response, Status, Streaming};

use crate::codec;
use crate::members;
use crate::types::Raft;
use common::proto::peer::raft_peer_server::RaftPeer;
use common::proto::peer::{ClusterRequest, ClusterResponse, RaftMessage, SnapshotChunk};

pub struct RaftPeerService {
    raft: Raft,
    cluster_id: u64,
    member_id: u64,
}

impl RaftPeerService {
    pub fn new(raft: Raft, cluster_id: u64, member_id: u64) -> Self {
        RaftPeerService {
            raft,
            cluster_id,
            member_id,
        }
    }

    fn check(&self, msg: &RaftMessage) -> Result<(), Status> {
        if msg.cluster_id != self.cluster_id {
            return Err(Status::failed_precondition(format!(
                "request cluster ID mismatch (got {:x} want {:x})",
                msg.cluster_id, self.cluster_id
            )));
        }
        Ok(())
    }

    fn reply<T: serde::Serialize>(&self, v: &T) -> Result<Response<RaftMessage>, Status> {
        let body = codec::encode(v).map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(RaftMessage {
            cluster_id: self.cluster_id,
            from: self.member_id,
            body,
        }))
    }
}

fn bad_body(e: io::Error) -> Status {
    Status::invalid_argument(format!("undecodable raft message: {e}"))
}

fn raft_failed(e: impl std::fmt::Display) -> Status {
    Status::unavailable(format!("raft stopped: {e}"))
}

#[tonic::async_trait]
impl RaftPeer for RaftPeerService {
    async fn append_entries(
        &self,
        req: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        let msg = req.into_inner();
        self.check(&msg)?;
        let rpc = codec::decode(&msg.body).map_err(bad_body)?;
        let resp = self.raft.append_entries(rpc).await.map_err(raft_failed)?;
        self.reply(&resp)
    }

    async fn vote(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let msg = req.into_inner();
        self.check(&msg)?;
        let rpc = codec::decode(&msg.body).map_err(bad_body)?;
        let resp = self.raft.vote(rpc).await.map_err(raft_failed)?;
        self.reply(&resp)
    }

    async fn pre_vote(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let msg = req.into_inner();
        self.check(&msg)?;
        let rpc = codec::decode(&msg.body).map_err(bad_body)?;
        let resp = self.raft.pre_vote(rpc).await.map_err(raft_failed)?;
        self.reply(&resp)
    }

    async fn transfer_leader(
        &self,
        req: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        let msg = req.into_inner();
        self.check(&msg)?;
        let rpc = codec::decode(&msg.body).map_err(bad_body)?;
        let resp = self
            .raft
            .handle_transfer_leader(rpc)
            .await
            .map_err(raft_failed)?;
        self.reply(&resp)
    }

    async fn install_snapshot(
        &self,
        _req: Request<Streaming<SnapshotChunk>>,
    ) -> Result<Response<RaftMessage>, Status> {
        Err(Status::unimplemented(
            "snapshot install is not implemented yet",
        ))
    }

    async fn cluster(
        &self,
        _req: Request<ClusterRequest>,
    ) -> Result<Response<ClusterResponse>, Status> {
        let members = members::list(&self.raft);
        let members = serde_json::to_vec(&members).map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(ClusterResponse {
            cluster_id: self.cluster_id,
            members,
        }))
    }
}
