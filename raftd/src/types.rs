//! openraft type configuration: entries carry opaque encoded etcd writes
//! (raftd never looks inside); responses are storaged's encoded results.

use std::fmt;

use serde::{Deserialize, Serialize};

/// An encoded `triad.storage.v1.RaftRequest`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal(pub Vec<u8>);

impl fmt::Display for Proposal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "proposal({} bytes)", self.0.len())
    }
}

/// An encoded `triad.storage.v1.RaftResult` (empty for replays).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied(pub Vec<u8>);

openraft::declare_raft_types!(
    pub TypeConfig:
        D = Proposal,
        R = Applied,
);

pub type NodeId = u64;
pub type Raft = openraft::Raft<TypeConfig, crate::state_machine::StateMachine>;
pub type LogId = openraft::alias::LogIdOf<TypeConfig>;
pub type Entry = openraft::alias::EntryOf<TypeConfig>;
pub type Vote = openraft::alias::VoteOf<TypeConfig>;
pub type StoredMembership = openraft::alias::StoredMembershipOf<TypeConfig>;
pub type Membership = openraft::Membership<NodeId, openraft::impls::BasicNode>;

/// Between openraft's log ids and the wire form storaged keeps.
pub fn to_wire(id: &LogId) -> common::proto::storage::LogId {
    common::proto::storage::LogId {
        term: id.leader_id.term,
        node_id: id.leader_id.node_id,
        index: id.index,
    }
}

pub fn from_wire(id: &common::proto::storage::LogId) -> LogId {
    openraft::LogId::new(
        openraft::impls::leader_id_adv::LeaderId {
            term: id.term,
            node_id: id.node_id,
        },
        id.index,
    )
}
