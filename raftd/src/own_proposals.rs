//! Requests the member proposes on its own, on the raftd that leads:
//! lease grants, revokes and checkpoints, auto compaction, alarms, the
//! peer secret. Never forwarded: a raftd that no longer leads answers
//! etcd's "not leader" and the caller tries again where it leads.

use prost::Message;
use tonic::Status;

use crate::types::Proposal;
use crate::Raft;
use common::errors::EtcdError;
use common::proto::storage::raft_request::Op;
use common::proto::storage::RaftRequest;
use openraft::error::RaftError;

/// Propose one request through raft on this (leading) raftd; storaged's
/// encoded result. For raftd's own proposals (lessor, auto-compaction).
pub async fn propose(raft: &Raft, op: Op) -> Result<Vec<u8>, Status> {
    propose_request(
        raft,
        RaftRequest {
            op: Some(op),
            auth: None,
            trace_parent: String::new(),
        },
    )
    .await
}

/// Replicate one request (with a client's identity, if it carries one).
pub async fn propose_request(raft: &Raft, req: RaftRequest) -> Result<Vec<u8>, Status> {
    let bytes = req.encode_to_vec();
    match raft.client_write(Proposal(bytes.into())).await {
        Ok(r) => Ok(r.data.0),
        Err(RaftError::APIError(e)) => Err(crate::raft_errors::write_error(&e).into()),
        Err(RaftError::Fatal(_)) => Err(EtcdError::Stopped.into()),
    }
}
