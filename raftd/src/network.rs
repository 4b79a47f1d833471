//! Outgoing raft RPCs to other members. This raftd runs single-voter
//! clusters only, so no peer is ever contacted: every RPC reports the peer
//! unreachable. Peer transport over TCP replaces this with multi-member
//! support.

use openraft::error::{RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::RaftNetworkV2;

use crate::types::{NodeId, TypeConfig, Vote};

type Snapshot = openraft::alias::SnapshotOf<TypeConfig, Vec<u8>>;

pub struct Peers;

pub struct NoPeer {
    target: NodeId,
}

impl NoPeer {
    fn unreachable(&self) -> Unreachable<TypeConfig> {
        Unreachable::new(&std::io::Error::other(format!(
            "no transport to member {:x}",
            self.target
        )))
    }
}

impl RaftNetworkFactory<TypeConfig> for Peers {
    type Network = NoPeer;

    async fn new_client(&mut self, target: NodeId, _node: &openraft::impls::BasicNode) -> NoPeer {
        NoPeer { target }
    }
}

impl RaftNetworkV2<TypeConfig> for NoPeer {
    type SnapshotData = Vec<u8>;

    async fn append_entries(
        &mut self,
        _rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        Err(RPCError::Unreachable(self.unreachable()))
    }

    async fn vote(
        &mut self,
        _rpc: VoteRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        Err(RPCError::Unreachable(self.unreachable()))
    }

    async fn full_snapshot(
        &mut self,
        _vote: Vote,
        _snapshot: Snapshot,
        _cancel: impl std::future::Future<Output = ReplicationClosed> + Send + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        Err(StreamingError::Unreachable(self.unreachable()))
    }
}
