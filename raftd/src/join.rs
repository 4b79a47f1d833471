//! A member started with `--initial-cluster-state existing` joins a cluster
//! that already added it (MemberAdd): like etcd, it asks the other members
//! for the cluster and takes the cluster ID and its own member ID (the one
//! with its peer URLs) from the answer.

use std::time::Duration;

use common::config::Member;
use common::proto::peer::raft_peer_client::RaftPeerClient;
use common::proto::peer::ClusterRequest;

use crate::members::MemberInfo;
use crate::peer_client::peer_channel;

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

/// (member ID, cluster ID) from the first other member that answers and
/// lists this member, retrying for `patience`: a member that has not
/// applied the MemberAdd yet, or does not answer, is asked again later.
pub async fn discover(member: &Member, patience: Duration) -> Result<(u64, u64), JoinError> {
    // One call never takes the whole patience (a peer may be stopped).
    const CALL: Duration = Duration::from_secs(2);
    // Long enough for every member to apply a MemberAdd just committed;
    // a member nobody added still fails fast, as in etcd.
    const NOT_ADDED: Duration = Duration::from_secs(5);
    let started = tokio::time::Instant::now();
    let deadline = started + patience;
    let mut last = JoinError::NoPeer("no other member in --initial-cluster".into());
    loop {
        for (_, urls) in &member.initial_cluster {
            if same_urls(urls, &member.peer_urls) {
                continue;
            }
            let channel = match peer_channel(urls) {
                Ok(c) => c,
                Err(e) => {
                    last = JoinError::NoPeer(e);
                    continue;
                }
            };
            let mut client = RaftPeerClient::new(channel);
            let reply = tokio::time::timeout(CALL, client.cluster(ClusterRequest {})).await;
            let answer = match reply {
                Ok(Ok(r)) => r.into_inner(),
                Ok(Err(e)) => {
                    last = JoinError::NoPeer(format!("{}: {}", urls.join(","), e.message()));
                    continue;
                }
                Err(_) => {
                    last =
                        JoinError::NoPeer(format!("{}: no answer within {CALL:?}", urls.join(",")));
                    continue;
                }
            };
            let members: Vec<MemberInfo> = serde_json::from_slice(&answer.members)
                .map_err(|e| JoinError::NoPeer(e.to_string()))?;
            match members
                .iter()
                .find(|m| same_urls(&m.peer_urls, &member.peer_urls))
            {
                Some(m) => return Ok((m.id, answer.cluster_id)),
                None if started.elapsed() >= NOT_ADDED => {
                    return Err(JoinError::NotAdded(member.peer_urls.clone()))
                }
                None => last = JoinError::NotAdded(member.peer_urls.clone()),
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(last);
        }
        tracing::warn!(error = %last, "cannot join yet; asking again");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
