//! How a removed member learns that it was removed, as etcd's do: a member
//! cut out of the membership gets no more entries, so it cannot see its
//! own removal; when it campaigns, its peers refuse its (pre-)votes
//! instead (it is no longer a member, though it was one), and the refusal
//! tells it. Status then reports it removed, and raftd and gatewayd exit
//! with `EXIT_REMOVED`: neither systemd nor `triad up` restarts a member
//! that the cluster no longer has, as a removed etcd exits.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use tonic::{Code, Status};

use openraft::async_runtime::WatchReceiver;

use crate::types::NodeId;
use crate::Raft;

/// etcd's words for it (its peers answer a removed member so).
pub use common::lifecycle::REMOVED_FROM_CLUSTER as REMOVED;

#[derive(Default)]
pub struct Removal {
    /// A peer refused this member as removed.
    told: AtomicBool,
    /// Every member this raftd has seen in the membership since it started.
    seen: Mutex<BTreeSet<NodeId>>,
    /// Wakes `removed` once told.
    told_notify: tokio::sync::Notify,
}

impl Removal {
    /// Remember every member of every membership this raftd sees, for the
    /// life of the process (a leader receives few messages, so this cannot
    /// wait for them).
    pub async fn follow(self: std::sync::Arc<Self>, raft: Raft) {
        // Server metrics change with membership, not with every write.
        let mut metrics = raft.server_metrics();
        loop {
            let current = Self::members(&raft);
            if let Ok(mut seen) = self.seen.lock() {
                seen.extend(current);
            }
            if metrics.changed().await.is_err() {
                return;
            }
        }
    }

    fn members(raft: &Raft) -> BTreeSet<NodeId> {
        let metrics = raft.server_metrics();
        let metrics = metrics.borrow_watched();
        let membership = metrics.membership_config.membership();
        membership.nodes().map(|(id, _)| *id).collect()
    }

    /// Refuse a message from `from` if it was a member (as `follow` saw)
    /// and is no more.
    pub fn check_sender(&self, raft: &Raft, from: NodeId) -> Result<(), Status> {
        let was_member = self.seen.lock().is_ok_and(|seen| seen.contains(&from));
        if was_member && !Self::members(raft).contains(&from) {
            return Err(Status::failed_precondition(REMOVED));
        }
        Ok(())
    }

    /// Note a peer's refusal of this member's message.
    pub fn note_refusal(&self, s: &Status) {
        if s.code() == Code::FailedPrecondition
            && s.message() == REMOVED
            && !self.told.swap(true, Ordering::Relaxed)
        {
            // Said once, as raftd's exit error.
            tracing::debug!("a peer says: {REMOVED}");
            self.told_notify.notify_waiters();
        }
    }

    /// Resolves once a peer has told this member it was removed.
    pub async fn removed(&self) {
        loop {
            // Registered before the check: a notification in between is kept.
            let told = self.told_notify.notified();
            if self.told() {
                return;
            }
            told.await;
        }
    }

    pub fn told(&self) -> bool {
        self.told.load(Ordering::Relaxed)
    }
}
