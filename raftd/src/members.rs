//! Cluster membership as etcd's Cluster service presents it, kept in
//! raft's membership config (voters, learners, and each member's name and
//! URLs). Changes run on the leader with etcd's checks: strict reconfig
//! (a change must leave a quorum of started members), one learner at most,
//! promote only a learner that is in sync.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use openraft::async_runtime::WatchReceiver;
use openraft::error::{ClientWriteError, RaftError};
use openraft::ChangeMembers;
use serde::{Deserialize, Serialize};
use tonic::Status;

use crate::raft_errors::write_error;
use crate::types::{MemberNode, NodeId, TypeConfig};
use crate::Raft;
use common::errors::EtcdError;
use common::proto::etcdserverpb::{
    Member, MemberAddRequest, MemberAddResponse, MemberListResponse, MemberPromoteRequest,
    MemberPromoteResponse, MemberRemoveRequest, MemberRemoveResponse, MemberUpdateRequest,
    MemberUpdateResponse, MoveLeaderRequest, MoveLeaderResponse,
};
use common::proto::raft::PublishRequest;

/// One member as the Cluster service reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    pub id: u64,
    pub name: String,
    pub peer_urls: Vec<String>,
    pub client_urls: Vec<String>,
    pub is_learner: bool,
}

impl From<&MemberInfo> for Member {
    fn from(m: &MemberInfo) -> Member {
        Member {
            id: m.id,
            name: m.name.clone(),
            peer_ur_ls: m.peer_urls.clone(),
            client_ur_ls: m.client_urls.clone(),
            is_learner: m.is_learner,
        }
    }
}

/// The members in the latest membership config this raftd knows, by ID.
pub fn list(raft: &Raft) -> Vec<MemberInfo> {
    let m = raft.metrics().borrow_watched().membership_config.clone();
    let membership = m.membership();
    let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
    membership
        .nodes()
        .map(|(id, node)| MemberInfo {
            id: *id,
            name: node.name.clone(),
            peer_urls: node.peer_urls.clone(),
            client_urls: node.client_urls.clone(),
            is_learner: !voters.contains(id),
        })
        .collect()
}

/// A learner is in sync once it has matched this share of the leader's log
/// (etcd's readyPercent).
const READY_PERCENT: f64 = 0.9;

pub struct Members {
    raft: Raft,
    /// A member counts as started if it acknowledged the leader this recently.
    active_within: Duration,
    strict_reconfig_check: bool,
    /// `--experimental-max-learners`.
    max_learners: usize,
    /// When this node last became leader (None while it is not).
    leader_since: std::sync::Mutex<Option<std::time::Instant>>,
}

/// etcd's HealthInterval: a leader must have been in touch with the
/// members a change depends on for this long before it makes the change.
const HEALTH_INTERVAL: Duration = Duration::from_secs(5);

fn change_error(e: RaftError<TypeConfig, ClientWriteError<TypeConfig>>) -> Status {
    match e {
        RaftError::APIError(e) => write_error(&e).into(),
        RaftError::Fatal(_) => EtcdError::Stopped.into(),
    }
}

/// etcd's ID for an added member: derived from its peer URLs and the time
/// of the request, so a re-added member gets a new ID.
fn new_member_id(peer_urls: &[String]) -> u64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let ids = common::ids::member_id(peer_urls, &now.to_string());
    // 0 is "no member" on etcd's wire.
    ids.max(1)
}

/// etcd's checks on an added member's peer URLs against the current
/// members: well-formed, unused, a fresh ID, at most `max_learners`
/// learners.
fn check_add(
    current: &[MemberInfo],
    urls: &[String],
    id: u64,
    is_learner: bool,
    max_learners: usize,
) -> Result<(), EtcdError> {
    check_urls(current, None, urls)?;
    if current.iter().any(|m| m.id == id) {
        return Err(EtcdError::MemberExist);
    }
    if is_learner && current.iter().filter(|m| m.is_learner).count() >= max_learners {
        return Err(EtcdError::TooManyLearners);
    }
    Ok(())
}

/// Peer URLs well-formed and used by no member other than `except`.
fn check_urls(
    current: &[MemberInfo],
    except: Option<u64>,
    urls: &[String],
) -> Result<(), EtcdError> {
    if urls.is_empty() || common::config::parse_urls(&urls.join(","), "peer-urls").is_err() {
        return Err(EtcdError::MemberBadUrls);
    }
    let taken = current
        .iter()
        .filter(|m| Some(m.id) != except)
        .any(|m| m.peer_urls.iter().any(|u| urls.contains(u)));
    if taken {
        return Err(EtcdError::PeerUrlExist);
    }
    Ok(())
}

/// etcd's strict reconfig check: after the change, the started voters
/// must still form a quorum of the voters.
fn quorum_after(
    started: &BTreeSet<NodeId>,
    voters_after: &BTreeSet<NodeId>,
) -> Result<(), EtcdError> {
    let up = started.intersection(voters_after).count();
    if voters_after.is_empty() || up < voters_after.len() / 2 + 1 {
        return Err(EtcdError::MemberNotEnoughStarted);
    }
    Ok(())
}

/// A learner may be promoted once it matched READY_PERCENT of the leader's
/// log.
fn learner_ready(matched: u64, leader_last: u64) -> bool {
    (matched as f64) >= (leader_last as f64) * READY_PERCENT
}

impl Members {
    pub fn new(
        raft: Raft,
        active_within: Duration,
        strict_reconfig_check: bool,
        max_learners: usize,
    ) -> Self {
        Members {
            raft,
            active_within,
            strict_reconfig_check,
            max_learners,
            leader_since: std::sync::Mutex::new(None),
        }
    }

    /// Note when this node becomes leader, for `connected_since`.
    pub async fn follow_leadership(self: std::sync::Arc<Self>) {
        // Server metrics change with the server's state, not every write.
        let mut metrics = self.raft.server_metrics();
        loop {
            let leading = metrics.borrow_watched().state == openraft::ServerState::Leader;
            if let Ok(mut since) = self.leader_since.lock() {
                match (leading, *since) {
                    (true, None) => *since = Some(std::time::Instant::now()),
                    (false, Some(_)) => *since = None,
                    _ => {}
                }
            }
            if metrics.changed().await.is_err() {
                return;
            }
        }
    }

    /// etcd's isConnectedFullySince / isConnectedToQuorumSince under
    /// strict reconfig: this leader has led for HEALTH_INTERVAL and `need`
    /// of `voters` (itself counted) acknowledged it recently. Right after
    /// an election, or with a member out of touch, a change is refused.
    fn connected_since(&self, voters: &BTreeSet<NodeId>, need: usize) -> Result<(), EtcdError> {
        let me = self.raft.metrics().borrow_watched().id;
        if !self.strict_reconfig_check || voters.iter().all(|v| *v == me) {
            return Ok(());
        }
        let led_long_enough = self
            .leader_since
            .lock()
            .ok()
            .and_then(|s| *s)
            .is_some_and(|t| t.elapsed() >= HEALTH_INTERVAL);
        let in_touch = self.started_voters().intersection(voters).count();
        if !led_long_enough || in_touch < need {
            return Err(EtcdError::Unhealthy);
        }
        Ok(())
    }

    pub fn list_response(&self) -> MemberListResponse {
        MemberListResponse {
            header: None,
            members: self.members(),
        }
    }

    fn members(&self) -> Vec<Member> {
        list(&self.raft).iter().map(Member::from).collect()
    }

    /// Voters that acknowledged this leader recently (the leader counts).
    fn started_voters(&self) -> BTreeSet<NodeId> {
        let m = self.raft.metrics().borrow_watched().clone();
        let mut started: BTreeSet<NodeId> = BTreeSet::from([m.id]);
        if let Some(hb) = &m.heartbeat {
            for (id, at) in hb {
                if at
                    .as_ref()
                    .is_some_and(|t| openraft::Instant::elapsed(&**t) <= self.active_within)
                {
                    started.insert(*id);
                }
            }
        }
        let voters: BTreeSet<NodeId> = m.membership_config.membership().voter_ids().collect();
        started.intersection(&voters).copied().collect()
    }

    fn check_quorum_after(&self, voters_after: &BTreeSet<NodeId>) -> Result<(), Status> {
        if !self.strict_reconfig_check {
            return Ok(());
        }
        Ok(quorum_after(&self.started_voters(), voters_after)?)
    }

    fn voters(&self) -> BTreeSet<NodeId> {
        self.raft
            .metrics()
            .borrow_watched()
            .membership_config
            .membership()
            .voter_ids()
            .collect()
    }

    fn find(&self, id: u64) -> Result<MemberInfo, Status> {
        list(&self.raft)
            .into_iter()
            .find(|m| m.id == id)
            .ok_or_else(|| EtcdError::MemberNotFound.into())
    }

    pub async fn add(&self, req: MemberAddRequest) -> Result<MemberAddResponse, Status> {
        let urls = req.peer_ur_ls;
        let id = new_member_id(&urls);
        check_add(
            &list(&self.raft),
            &urls,
            id,
            req.is_learner,
            self.max_learners,
        )?;
        let voters = self.voters();
        if !req.is_learner {
            let mut after = voters.clone();
            after.insert(id);
            // The new member has not started: it counts against the quorum.
            self.check_quorum_after(&after)?;
        }
        // Then, as etcd's mayAddMember: in touch with every voter.
        self.connected_since(&voters, voters.len())?;
        let node = MemberNode {
            name: String::new(),
            peer_urls: urls.clone(),
            client_urls: Vec::new(),
        };
        self.raft
            .add_learner(id, node, false)
            .await
            .map_err(change_error)?;
        if !req.is_learner {
            self.raft
                .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), true)
                .await
                .map_err(change_error)?;
        }
        let added = MemberInfo {
            id,
            name: String::new(),
            peer_urls: urls,
            client_urls: Vec::new(),
            is_learner: req.is_learner,
        };
        Ok(MemberAddResponse {
            header: None,
            member: Some(Member::from(&added)),
            members: self.members(),
        })
    }

    pub async fn remove(&self, req: MemberRemoveRequest) -> Result<MemberRemoveResponse, Status> {
        let member = self.find(req.id)?;
        if member.is_learner {
            self.raft
                .change_membership(ChangeMembers::RemoveNodes(BTreeSet::from([req.id])), false)
                .await
                .map_err(change_error)?;
        } else {
            let mut after = self.voters();
            after.remove(&req.id);
            if after.is_empty() {
                return Err(EtcdError::MemberNotEnoughStarted.into());
            }
            self.connected_since(&after, after.len() / 2 + 1)?;
            self.check_quorum_after(&after)?;
            self.raft
                .change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([req.id])), false)
                .await
                .map_err(change_error)?;
        }
        Ok(MemberRemoveResponse {
            header: None,
            members: self.members(),
        })
    }

    pub async fn update(&self, req: MemberUpdateRequest) -> Result<MemberUpdateResponse, Status> {
        let member = self.find(req.id)?;
        let urls = req.peer_ur_ls;
        check_urls(&list(&self.raft), Some(req.id), &urls)?;
        let node = MemberNode {
            name: member.name,
            peer_urls: urls,
            client_urls: member.client_urls,
        };
        self.set_node(req.id, node).await?;
        Ok(MemberUpdateResponse {
            header: None,
            members: self.members(),
        })
    }

    async fn set_node(&self, id: NodeId, node: MemberNode) -> Result<(), Status> {
        self.raft
            .change_membership(ChangeMembers::SetNodes(BTreeMap::from([(id, node)])), true)
            .await
            .map_err(change_error)?;
        Ok(())
    }

    pub async fn promote(
        &self,
        req: MemberPromoteRequest,
    ) -> Result<MemberPromoteResponse, Status> {
        let member = self.find(req.id)?;
        if !member.is_learner {
            return Err(EtcdError::MemberNotLearner.into());
        }
        let m = self.raft.metrics().borrow_watched().clone();
        let leader_last = m.last_log_index.unwrap_or(0);
        let matched = m
            .replication
            .as_ref()
            .and_then(|r| r.get(&req.id).cloned().flatten())
            .map_or(0, |l| l.index);
        if !learner_ready(matched, leader_last) {
            return Err(EtcdError::LearnerNotReady.into());
        }
        self.raft
            .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([req.id])), true)
            .await
            .map_err(change_error)?;
        crate::metrics::PROMOTIONS.inc();
        Ok(MemberPromoteResponse {
            header: None,
            members: self.members(),
        })
    }

    pub async fn move_leader(&self, req: MoveLeaderRequest) -> Result<MoveLeaderResponse, Status> {
        let m = self.raft.metrics().borrow_watched().clone();
        if m.current_leader != Some(m.id) {
            return Err(EtcdError::NotLeader.into());
        }
        let target = req.target_id;
        if !self.voters().contains(&target) {
            return Err(EtcdError::BadLeaderTransferee.into());
        }
        if target == m.id {
            return Ok(MoveLeaderResponse { header: None });
        }
        self.raft
            .trigger()
            .transfer_leader(target)
            .await
            .map_err(|_| Status::from(EtcdError::Stopped))?;
        // etcd waits for the transfer, bounded by its request timeout.
        let moved = self
            .raft
            .wait(Some(self.active_within))
            .metrics(|m| m.current_leader == Some(target), "leader moved")
            .await;
        match moved {
            Ok(_) => Ok(MoveLeaderResponse { header: None }),
            Err(_) => Err(Status::unavailable(
                "etcdserver: request timed out, leader transfer took too long",
            )),
        }
    }

    /// Record the member's name and client URLs once it serves (etcd's
    /// publish); a no-op when nothing changed.
    pub async fn publish(&self, req: PublishRequest) -> Result<(), Status> {
        let member = self.find(req.member_id)?;
        if member.name == req.name && member.client_urls == req.client_urls {
            return Ok(());
        }
        let node = MemberNode {
            name: req.name,
            peer_urls: member.peer_urls,
            client_urls: req.client_urls,
        };
        self.set_node(req.member_id, node).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: u64, url: &str, is_learner: bool) -> MemberInfo {
        MemberInfo {
            id,
            name: format!("m{id}"),
            peer_urls: vec![url.to_string()],
            client_urls: Vec::new(),
            is_learner,
        }
    }

    fn urls(u: &[&str]) -> Vec<String> {
        u.iter().map(|s| s.to_string()).collect()
    }

    fn ids(i: &[u64]) -> BTreeSet<NodeId> {
        i.iter().copied().collect()
    }

    #[test]
    fn an_added_member_needs_good_unused_urls_and_a_fresh_id() {
        let current = [
            member(1, "http://127.0.0.1:2380", false),
            member(2, "http://127.0.0.2:2380", false),
        ];
        let new = urls(&["http://127.0.0.3:2380"]);
        assert_eq!(check_add(&current, &new, 3, false, 1), Ok(()));
        assert_eq!(
            check_add(&current, &[], 3, false, 1),
            Err(EtcdError::MemberBadUrls)
        );
        assert_eq!(
            check_add(&current, &urls(&["not a url"]), 3, false, 1),
            Err(EtcdError::MemberBadUrls)
        );
        assert_eq!(
            check_add(&current, &urls(&["http://127.0.0.2:2380"]), 3, false, 1),
            Err(EtcdError::PeerUrlExist)
        );
        assert_eq!(
            check_add(&current, &new, 2, false, 1),
            Err(EtcdError::MemberExist)
        );
    }

    #[test]
    fn a_cluster_has_max_learners_at_most() {
        let mut current = vec![member(1, "http://127.0.0.1:2380", false)];
        let new = urls(&["http://127.0.0.3:2380"]);
        assert_eq!(check_add(&current, &new, 3, true, 1), Ok(()));
        current.push(member(2, "http://127.0.0.2:2380", true));
        assert_eq!(
            check_add(&current, &new, 3, true, 1),
            Err(EtcdError::TooManyLearners)
        );
        assert_eq!(
            check_add(&current, &new, 3, false, 1),
            Ok(()),
            "a voter may join"
        );
        assert_eq!(check_add(&current, &new, 3, true, 2), Ok(()));
    }

    #[test]
    fn an_update_may_keep_its_own_urls_but_not_take_anothers() {
        let current = [
            member(1, "http://127.0.0.1:2380", false),
            member(2, "http://127.0.0.2:2380", false),
        ];
        assert_eq!(
            check_urls(&current, Some(1), &urls(&["http://127.0.0.1:2380"])),
            Ok(())
        );
        assert_eq!(
            check_urls(&current, Some(1), &urls(&["http://127.0.0.2:2380"])),
            Err(EtcdError::PeerUrlExist)
        );
    }

    #[test]
    fn a_change_must_leave_a_started_quorum() {
        // Three voters, one down: adding a fourth (not started) leaves 2 of 4.
        let started = ids(&[1, 2]);
        assert_eq!(
            quorum_after(&started, &ids(&[1, 2, 3, 4])),
            Err(EtcdError::MemberNotEnoughStarted)
        );
        assert_eq!(quorum_after(&ids(&[1, 2, 3]), &ids(&[1, 2, 3, 4])), Ok(()));
        // Removing the down member leaves 2 of 2; removing an up one, 1 of 2.
        assert_eq!(quorum_after(&started, &ids(&[1, 2])), Ok(()));
        assert_eq!(
            quorum_after(&started, &ids(&[1, 3])),
            Err(EtcdError::MemberNotEnoughStarted)
        );
        assert_eq!(
            quorum_after(&started, &ids(&[])),
            Err(EtcdError::MemberNotEnoughStarted)
        );
    }

    #[test]
    fn a_learner_is_ready_at_ninety_percent_of_the_leaders_log() {
        assert!(learner_ready(90, 100));
        assert!(!learner_ready(89, 100));
        assert!(learner_ready(0, 0));
    }
}
