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

use crate::local_server::write_error;
use crate::types::{MemberNode, NodeId, Raft, TypeConfig};
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
}

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

impl Members {
    pub fn new(raft: Raft, active_within: Duration, strict_reconfig_check: bool) -> Self {
        Members {
            raft,
            active_within,
            strict_reconfig_check,
        }
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

    /// etcd's strict reconfig check: after the change, the started voters
    /// must still form a quorum of the voters.
    fn check_quorum_after(&self, voters_after: &BTreeSet<NodeId>) -> Result<(), Status> {
        if !self.strict_reconfig_check {
            return Ok(());
        }
        let started = self.started_voters().intersection(voters_after).count();
        if started < voters_after.len() / 2 + 1 {
            return Err(EtcdError::MemberNotEnoughStarted.into());
        }
        Ok(())
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
        if urls.is_empty() || common::config::parse_urls(&urls.join(","), "peer-urls").is_err() {
            return Err(EtcdError::MemberBadUrls.into());
        }
        let current = list(&self.raft);
        if current
            .iter()
            .any(|m| m.peer_urls.iter().any(|u| urls.contains(u)))
        {
            return Err(EtcdError::PeerUrlExist.into());
        }
        let id = new_member_id(&urls);
        if current.iter().any(|m| m.id == id) {
            return Err(EtcdError::MemberExist.into());
        }
        if req.is_learner {
            if current.iter().any(|m| m.is_learner) {
                return Err(EtcdError::TooManyLearners.into());
            }
        } else {
            let mut after = self.voters();
            after.insert(id);
            // The new member has not started: it counts against the quorum.
            self.check_quorum_after(&after)?;
        }
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
        if urls.is_empty() || common::config::parse_urls(&urls.join(","), "peer-urls").is_err() {
            return Err(EtcdError::MemberBadUrls.into());
        }
        if list(&self.raft)
            .iter()
            .any(|m| m.id != req.id && m.peer_urls.iter().any(|u| urls.contains(u)))
        {
            return Err(EtcdError::PeerUrlExist.into());
        }
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
        if (matched as f64) < (leader_last as f64) * READY_PERCENT {
            return Err(EtcdError::LearnerNotReady.into());
        }
        self.raft
            .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([req.id])), true)
            .await
            .map_err(change_error)?;
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
