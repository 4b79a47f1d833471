//! What gatewayd knows of its member, as raftd last reported it: the
//! cluster and member IDs (the configured ones until raftd answers; a
//! joining member learns its IDs from the cluster), the raft term for
//! response headers, whether it is a learner, has a leader, or was removed.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::watch;

use common::proto::etcdserverpb::ResponseHeader;
use common::proto::raft::StatusResponse as RaftStatus;

pub struct MemberState {
    cluster_id: AtomicU64,
    member_id: AtomicU64,
    /// The highest raft term seen (the proposer records it too).
    pub term: Arc<AtomicU64>,
    /// Whether raftd last said this member is a learner.
    learner: AtomicBool,
    /// Set once raftd says this member was removed from the cluster.
    removed: watch::Sender<bool>,
    /// Whether raftd last reported a leader (false when it did not answer).
    has_leader: watch::Sender<bool>,
}

impl MemberState {
    pub fn new(cluster_id: u64, member_id: u64) -> MemberState {
        MemberState {
            cluster_id: AtomicU64::new(cluster_id),
            member_id: AtomicU64::new(member_id),
            term: Arc::new(AtomicU64::new(0)),
            learner: AtomicBool::new(false),
            removed: watch::Sender::new(false),
            has_leader: watch::Sender::new(false),
        }
    }

    /// Fill the member part of a response header, keeping its revision.
    pub fn fill(&self, header: &mut Option<ResponseHeader>) {
        let h = header.get_or_insert_with(ResponseHeader::default);
        h.cluster_id = self.cluster_id.load(Ordering::Relaxed);
        h.member_id = self.member_id.load(Ordering::Relaxed);
        h.raft_term = self.term.load(Ordering::Relaxed);
    }

    pub fn note_term(&self, term: u64) {
        self.term.fetch_max(term, Ordering::Relaxed);
    }

    /// What raftd's status says of this member.
    pub fn record(&self, s: &RaftStatus) {
        self.has_leader
            .send_if_modified(|h| std::mem::replace(h, s.leader != 0) != (s.leader != 0));
        self.note_term(s.term);
        self.cluster_id.store(s.cluster_id, Ordering::Relaxed);
        self.member_id.store(s.member_id, Ordering::Relaxed);
        self.learner.store(s.is_learner, Ordering::Relaxed);
        if s.removed {
            self.removed.send_replace(true);
        }
    }

    /// raftd did not answer: no leader as far as this member knows.
    pub fn record_unreachable(&self) {
        self.has_leader
            .send_if_modified(|h| std::mem::replace(h, false));
    }

    pub fn member_id(&self) -> u64 {
        self.member_id.load(Ordering::Relaxed)
    }

    /// Whether raftd last said this member is a learner.
    pub fn learner(&self) -> bool {
        self.learner.load(Ordering::Relaxed)
    }

    pub fn has_leader(&self) -> watch::Receiver<bool> {
        self.has_leader.subscribe()
    }

    /// Resolves once raftd reports this member removed from the cluster.
    pub async fn removed(&self) {
        let mut rx = self.removed.subscribe();
        let _ = rx.wait_for(|r| *r).await;
    }
}
