//! openraft type configuration: entries carry opaque encoded etcd writes
//! (raftd never looks inside); responses are storaged's encoded results.

use std::fmt;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// An encoded `triad.storage.v1.RaftRequest`: a shared buffer, as openraft
/// clones entries to replicate and apply them, and serialized as one byte
/// string (serde's `Vec<u8>` goes byte by byte; the encoding is the same).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal(pub Bytes);

impl fmt::Display for Proposal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "proposal({} bytes)", self.0.len())
    }
}

/// An encoded `triad.storage.v1.RaftResult` (empty for replays).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied(pub Vec<u8>);

/// What the cluster knows of a member besides its ID: etcd's member fields.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct MemberNode {
    /// Empty until the member has started and published itself.
    pub name: String,
    pub peer_urls: Vec<String>,
    /// Published by the member's gatewayd once it serves.
    pub client_urls: Vec<String>,
}

impl fmt::Display for MemberNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.name, self.peer_urls.join(","))
    }
}

/// openraft's snapshot data. A snapshot lives in storaged: the leader
/// streams it from its storaged to the follower's, which stages it; raftd
/// only passes this marker to openraft.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoragedSnapshot;

openraft::declare_raft_types!(
    pub TypeConfig:
        D = Proposal,
        R = Applied,
        Node = MemberNode,
);

pub type NodeId = u64;
pub type LogId = openraft::alias::LogIdOf<TypeConfig>;
pub type Entry = openraft::alias::EntryOf<TypeConfig>;
pub type Vote = openraft::alias::VoteOf<TypeConfig>;
pub type StoredMembership = openraft::alias::StoredMembershipOf<TypeConfig>;
pub type Membership = openraft::Membership<NodeId, MemberNode>;
pub type Snapshot = openraft::alias::SnapshotOf<TypeConfig, StoragedSnapshot>;
pub type SnapshotMeta = openraft::alias::SnapshotMetaOf<TypeConfig>;

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

#[cfg(test)]
mod tests {
    /// A proposal encodes exactly as the `Vec<u8>` it used to be, so logs
    /// written and peers running before it became a shared buffer agree.
    #[test]
    fn a_proposal_encodes_as_a_byte_vector() {
        #[derive(serde::Serialize)]
        struct Before(Vec<u8>);
        for len in [0usize, 1, 127, 128, 70_000] {
            let value: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let now = crate::codec::encode(&super::Proposal(value.clone().into())).expect("encode");
            assert_eq!(
                now,
                crate::codec::encode(&Before(value.clone())).expect("encode")
            );
            let back: super::Proposal = crate::codec::decode(&now).expect("decode");
            assert_eq!(back.0.as_ref(), value.as_slice());
        }
    }
}
