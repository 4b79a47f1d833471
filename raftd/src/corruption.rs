//! etcd's corruption checks, on HashKV (storaged's, bit-for-bit etcd's):
//! the periodic one (`--experimental-corrupt-check-time`) runs on the
//! leader and raises CORRUPT through raft for a member whose hash differs
//! from the leader's at the same revision and compaction; the initial one
//! (`--experimental-initial-corrupt-check`) refuses to start a member whose
//! data differs from its peers'.

use std::collections::BTreeSet;
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use tonic::transport::Channel;

use crate::own_proposals::propose;
use crate::peer_client::peer_channel;
use crate::types::NodeId;
use crate::Raft;
use common::proto::etcdserverpb::alarm_request::AlarmAction;
use common::proto::etcdserverpb::{AlarmRequest, AlarmType, HashKvRequest, HashKvResponse};
use common::proto::peer::raft_peer_client::RaftPeerClient;
use common::proto::storage::raft_request::Op;
use common::proto::storage::storage_client::StorageClient;

#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("{0:x} found data inconsistency with peers")]
    Inconsistent(u64),
    #[error("corruption check: {0}")]
    Unavailable(String),
}

/// This member's HashKV at its current revision.
async fn own_hash(storage: &StorageClient<Channel>) -> Result<HashKvResponse, CheckError> {
    storage
        .clone()
        .hash_kv(HashKvRequest { revision: 0 })
        .await
        .map(|r| r.into_inner())
        .map_err(|s| CheckError::Unavailable(s.message().to_string()))
}

/// Every other member's HashKV at `revision` (those that answer).
async fn peer_hashes(raft: &Raft, me: NodeId, revision: i64) -> Vec<(NodeId, HashKvResponse)> {
    let membership = raft.metrics().borrow_watched().membership_config.clone();
    let mut out = Vec::new();
    for (id, node) in membership.membership().nodes() {
        if *id == me {
            continue;
        }
        let Ok(channel) = peer_channel(&node.peer_urls) else {
            continue;
        };
        let asked = RaftPeerClient::new(channel)
            .hash_kv(crate::peer_auth::request(HashKvRequest { revision }))
            .await;
        if let Ok(r) = asked {
            out.push((*id, r.into_inner()));
        }
    }
    out
}

/// The members whose answers cannot be right (etcd's rules): ahead of the
/// leader's revision or compaction as measured *after* asking them
/// (`after`), or at the compaction the leader hashed at (`mine`) with
/// another hash.
fn mismatches(
    mine: &HashKvResponse,
    after: &HashKvResponse,
    peers: &[(NodeId, HashKvResponse)],
) -> BTreeSet<NodeId> {
    let rev_after = after.header.as_ref().map_or(0, |h| h.revision);
    peers
        .iter()
        .filter(|(_, p)| {
            let prev = p.header.as_ref().map_or(0, |h| h.revision);
            prev > rev_after
                || p.compact_revision > after.compact_revision
                || (p.compact_revision == mine.compact_revision && p.hash != mine.hash)
        })
        .map(|(id, _)| *id)
        .collect()
}

/// Refuse to start when this member's data differs from its peers'.
pub async fn initial_check(
    raft: &Raft,
    storage: &StorageClient<Channel>,
    me: NodeId,
) -> Result<(), CheckError> {
    let mine = own_hash(storage).await?;
    let peers = peer_hashes(raft, me, mine.hash_revision).await;
    // Compare from the peers' side: they are the reference here.
    let differs = peers
        .iter()
        .any(|(_, p)| p.compact_revision == mine.compact_revision && p.hash != mine.hash);
    if differs {
        return Err(CheckError::Inconsistent(me));
    }
    tracing::info!(peers = peers.len(), "initial corruption check passed");
    Ok(())
}

/// The leader's periodic check.
pub async fn run(raft: Raft, storage: StorageClient<Channel>, me: NodeId, every: Duration) {
    let mut raised: BTreeSet<NodeId> = BTreeSet::new();
    loop {
        tokio::time::sleep(every).await;
        let leads = raft.metrics().borrow_watched().current_leader == Some(me);
        if !leads {
            continue;
        }
        let Ok(mine) = own_hash(&storage).await else {
            continue;
        };
        let peers = peer_hashes(&raft, me, mine.hash_revision).await;
        // Followers apply after the leader: measured now, none may be ahead.
        let Ok(after) = own_hash(&storage).await else {
            continue;
        };
        for id in mismatches(&mine, &after, &peers) {
            if !raised.insert(id) {
                continue;
            }
            tracing::error!(
                member = format!("{id:x}"),
                "found hash mismatch; raising CORRUPT"
            );
            let alarm = AlarmRequest {
                action: AlarmAction::Activate as i32,
                member_id: id,
                alarm: AlarmType::Corrupt as i32,
            };
            if let Err(e) = propose(&raft, Op::Alarm(alarm)).await {
                tracing::warn!(error = %e.message(), "raising CORRUPT failed; will retry");
                raised.remove(&id);
            }
        }
    }
}
