//! A member's data belongs to one cluster. At start raftd claims its
//! storaged's data for the member its log says it is (a data dir mixed
//! from two members is refused), then asks the other members it knows of
//! (the configured initial cluster and the last applied membership) who
//! they are: a member of another cluster answering at one of those URLs,
//! or this data dir having applied more than every other member's log
//! holds (a committed entry is in a quorum's logs), means the data dir is
//! not this cluster's, and raftd refuses to start
//! rather than diverge (etcd panics there: "tocommit is out of range").
//! Members that do not answer prove nothing; the check passes.

use std::time::Duration;

use tonic::transport::Channel;

use crate::peer_client::peer_channel;
use crate::types::{Membership, NodeId};
use common::config::Member;
use common::proto::peer::raft_peer_client::RaftPeerClient;
use common::proto::peer::ClusterRequest;
use common::proto::storage::storage_client::StorageClient;
use common::proto::storage::IdentifyRequest;

/// How long a member that may be down is waited for.
const ASK: Duration = Duration::from_millis(1500);

#[derive(Debug, thiserror::Error)]
pub enum NotOurs {
    #[error("{0}")]
    Storaged(String),
    #[error(
        "this data dir belongs to cluster {ours:x}, but the member at {url} belongs to \
         cluster {theirs:x}: it is another cluster's data dir (start the member on its own \
         data dir, or on an empty one to join)"
    )]
    OtherCluster { ours: u64, theirs: u64, url: String },
    #[error(
        "this data dir has applied log index {ours}, beyond every other member's log \
         (last index {theirs}): it holds a history this cluster never committed (start the member on its own data \
         dir, or on an empty one to join)"
    )]
    Ahead { ours: u64, theirs: u64 },
}

/// Claim storaged's data for (cluster, member).
pub async fn claim_storaged(
    storage: &StorageClient<Channel>,
    cluster_id: u64,
    member_id: NodeId,
) -> Result<(), NotOurs> {
    let mut storage = storage.clone();
    loop {
        let claimed = storage
            .identify(IdentifyRequest {
                cluster_id,
                member_id,
            })
            .await;
        match claimed {
            Ok(_) => return Ok(()),
            Err(s) if s.code() == tonic::Code::FailedPrecondition => {
                return Err(NotOurs::Storaged(s.message().to_string()))
            }
            // storaged is starting (or predates Identify): ask again.
            Err(s) if s.code() == tonic::Code::Unimplemented => return Ok(()),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// What one other member answered.
struct Answer {
    url: String,
    cluster_id: u64,
    last_log_index: u64,
}

async fn ask(urls: Vec<String>) -> Option<Answer> {
    let channel = peer_channel(&urls).ok()?;
    let reply = tokio::time::timeout(ASK, RaftPeerClient::new(channel).cluster(ClusterRequest {}))
        .await
        .ok()?
        .ok()?
        .into_inner();
    Some(Answer {
        url: urls.join(","),
        cluster_id: reply.cluster_id,
        last_log_index: reply.last_log_index,
    })
}

/// Ask the other members this data dir (at `applied`) and the
/// configuration know of whether it is theirs.
pub async fn check_peers(
    member: &Member,
    membership: Option<&Membership>,
    cluster_id: u64,
    member_id: NodeId,
    applied: u64,
) -> Result<(), NotOurs> {
    // The applied membership's other members first, then the configured
    // ones it does not name.
    let mut targets: Vec<Vec<String>> = Vec::new();
    if let Some(m) = membership {
        for (id, node) in m.nodes() {
            if *id != member_id && !node.peer_urls.is_empty() {
                targets.push(node.peer_urls.clone());
            }
        }
    }
    let others_in_membership = targets.len();
    for (_, urls) in &member.initial_cluster {
        let own = urls.iter().any(|u| member.peer_urls.contains(u));
        if !own && !targets.iter().any(|t| t == urls) {
            targets.push(urls.clone());
        }
    }
    let answers: Vec<Option<Answer>> =
        futures::future::join_all(targets.into_iter().map(ask)).await;
    if let Some(a) = answers
        .iter()
        .flatten()
        .find(|a| a.cluster_id != cluster_id)
    {
        return Err(NotOurs::OtherCluster {
            ours: cluster_id,
            theirs: a.cluster_id,
            url: a.url.clone(),
        });
    }
    // Ahead of the cluster only if every other member answered: one that
    // is down may hold what this member applied.
    let members = &answers[..others_in_membership];
    if others_in_membership > 0 && members.iter().all(Option::is_some) {
        let theirs = members
            .iter()
            .flatten()
            .map(|a| a.last_log_index)
            .max()
            .unwrap_or(0);
        if applied > theirs {
            return Err(NotOurs::Ahead {
                ours: applied,
                theirs,
            });
        }
    }
    Ok(())
}

/// The membership storaged applied last and its applied log index.
pub async fn applied_state(
    storage: &StorageClient<Channel>,
) -> Result<(Option<Membership>, u64), serde_json::Error> {
    let mut storage = storage.clone();
    loop {
        match storage
            .status(common::proto::storage::StatusRequest {})
            .await
        {
            Ok(s) => {
                let s = s.into_inner();
                let applied = s.applied.map_or(0, |a| a.index);
                if s.membership.is_empty() {
                    return Ok((None, applied));
                }
                return Ok((Some(serde_json::from_slice(&s.membership)?), applied));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}
