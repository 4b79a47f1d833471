//! A member started with `--initial-cluster-state existing` joins a cluster
//! that already added it (MemberAdd): like etcd, it asks the other members
//! for the cluster and takes the cluster ID and its own member ID (the one
//! with its peer URLs) from the answer.

use std::time::Duration;

use common::config::Member;
use common::proto::peer::raft_peer_client::RaftPeerClient;
use common::proto::peer::ClusterRequest;

use crate::members::MemberInfo;
use crate::network::peer_channel;

#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error("cannot fetch cluster info from peer URLs: {0}")]
    NoPeer(String),
    #[error(
        "member with peer URLs {0:?} has not been added to the cluster (run member add first)"
    )]
    NotAdded(Vec<String>),
}

fn same_urls(a: &[String], b: &[String]) -> bool {
    let (mut a, mut b) = (a.to_vec(), b.to_vec());
    a.sort();
    b.sort();
    a == b
}

/// (member ID, cluster ID) from the first other member that answers,
/// retrying for `patience`.
pub async fn discover(member: &Member, patience: Duration) -> Result<(u64, u64), JoinError> {
    let deadline = tokio::time::Instant::now() + patience;
    let mut last = String::from("no other member in --initial-cluster");
    loop {
        for (_, urls) in &member.initial_cluster {
            if same_urls(urls, &member.peer_urls) {
                continue;
            }
            let channel = match peer_channel(urls) {
                Ok(c) => c,
                Err(e) => {
                    last = e;
                    continue;
                }
            };
            let reply = RaftPeerClient::new(channel)
                .cluster(ClusterRequest {})
                .await;
            match reply {
                Ok(r) => {
                    let r = r.into_inner();
                    let members: Vec<MemberInfo> = serde_json::from_slice(&r.members)
                        .map_err(|e| JoinError::NoPeer(e.to_string()))?;
                    return members
                        .iter()
                        .find(|m| same_urls(&m.peer_urls, &member.peer_urls))
                        .map(|m| (m.id, r.cluster_id))
                        .ok_or_else(|| JoinError::NotAdded(member.peer_urls.clone()));
                }
                Err(e) => last = format!("{}: {}", urls.join(","), e.message()),
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(JoinError::NoPeer(last));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
