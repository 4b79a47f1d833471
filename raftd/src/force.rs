//! `--force-new-cluster`: turn a surviving member into a one-member
//! cluster keeping its data, as etcd does, by appending a membership entry
//! with only this member to its own log (under a vote for itself in a new
//! term) before raft starts. With itself as the only voter it elects itself
//! and commits everything in its log. A member that already is alone is left
//! untouched, so keeping the flag across restarts changes nothing.

use std::collections::{BTreeMap, BTreeSet};

use openraft::entry::RaftEntry;
use openraft::storage::RaftLogStorage;
use openraft::{EntryPayload, RaftLogReader};

use crate::log_store::LogStore;
use crate::types::{Entry, MemberNode, Membership, NodeId, Vote};

#[derive(Debug, thiserror::Error)]
pub enum ForceError {
    #[error("raft log: {0}")]
    Io(#[from] std::io::Error),
    #[error("this member is not in its own membership; nothing to keep")]
    NotAMember,
}

/// The newest membership this member knows: from its log, else from what
/// storaged applied (`applied` is storaged's serialized membership).
async fn newest_membership(
    log: &mut LogStore,
    applied: Option<Membership>,
) -> Result<Option<Membership>, ForceError> {
    let entries = log.try_get_log_entries(..).await?;
    let in_log = entries.iter().rev().find_map(|e| match &e.payload {
        EntryPayload::Membership(m) => Some(m.clone()),
        _ => None,
    });
    Ok(in_log.or(applied))
}

/// Make `me` the only voter. Returns whether anything was changed.
pub async fn force_new_cluster(
    log: &mut LogStore,
    me: NodeId,
    applied: Option<Membership>,
) -> Result<bool, ForceError> {
    let Some(current) = newest_membership(log, applied).await? else {
        return Err(ForceError::NotAMember);
    };
    let node: MemberNode = current
        .get_node(&me)
        .cloned()
        .ok_or(ForceError::NotAMember)?;
    let voters: BTreeSet<NodeId> = current.voter_ids().collect();
    if voters == BTreeSet::from([me]) && current.nodes().count() == 1 {
        return Ok(false);
    }
    let state = log.get_log_state().await?;
    let vote = log.read_vote().await?;
    let last_term = state.last_log_id.map_or(0, |l| l.leader_id.term);
    let term = vote.map_or(0, |v| v.leader_id.term).max(last_term) + 1;
    let index = state.last_log_id.map_or(0, |l| l.index + 1);
    let alone = Membership::new(vec![BTreeSet::from([me])], BTreeMap::from([(me, node)]))
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let leader = openraft::impls::leader_id_adv::LeaderId { term, node_id: me };
    let entry = Entry::new_membership(openraft::LogId::new(leader, index), alone);
    log.append_now(entry)?;
    log.save_vote(&Vote::new_committed(term, me)).await?;
    tracing::warn!(
        term,
        index,
        "forced a new one-member cluster from this member's data"
    );
    Ok(true)
}
