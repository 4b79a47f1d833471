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
    ///
    /// A member that applies a membership without itself, having been in
    /// one, was removed (a removed leader commits its own removal and
    /// never campaigns again, so no peer would ever tell it): it stops, as
    /// etcd's member stops on applying its own removal.
    pub async fn follow(self: std::sync::Arc<Self>, raft: Raft) {
        // Server metrics change with membership, not with every write.
        let mut metrics = raft.server_metrics();
        let me = metrics.borrow_watched().id;
        loop {
            let (current, at) = Self::membership(&raft);
            let was_member = self.seen.lock().is_ok_and(|seen| seen.contains(&me));
            if was_member && !current.contains(&me) {
                // Only once applied: an uncommitted membership may be cut.
                let wait = raft.wait(None);
                let applied = wait.applied_index_at_least(Some(at), "own removal");
                tokio::select! {
                    done = applied => {
                        if done.is_err() {
                            return; // raft stopped
                        }
                        if !Self::membership(&raft).0.contains(&me) {
                            self.tell();
                            return;
                        }
                    }
                    changed = metrics.changed() => {
                        if changed.is_err() {
                            return;
                        }
                    }
                }
                continue;
            }
            if let Ok(mut seen) = self.seen.lock() {
                seen.extend(current);
            }
            if metrics.changed().await.is_err() {
                return;
            }
        }
    }

    /// The members of the newest membership, and its log index.
    fn membership(raft: &Raft) -> (BTreeSet<NodeId>, u64) {
        let metrics = raft.server_metrics();
        let metrics = metrics.borrow_watched();
        let config = &metrics.membership_config;
        let members = config.membership().nodes().map(|(id, _)| *id).collect();
        (members, config.log_id().as_ref().map_or(0, |l| l.index))
    }

    /// Refuse a message from `from` if it was a member (as `follow` saw)
    /// and is no more.
    pub fn check_sender(&self, raft: &Raft, from: NodeId) -> Result<(), Status> {
        let was_member = self.seen.lock().is_ok_and(|seen| seen.contains(&from));
        if was_member && !Self::membership(raft).0.contains(&from) {
            return Err(Status::failed_precondition(REMOVED));
        }
        Ok(())
    }

    /// Note a peer's refusal of this member's message.
    pub fn note_refusal(&self, s: &Status) {
        if s.code() == Code::FailedPrecondition && s.message() == REMOVED {
            // Said once, as raftd's exit error.
            tracing::debug!("a peer says: {REMOVED}");
            self.tell();
        }
    }

    fn tell(&self) {
        if !self.told.swap(true, Ordering::Relaxed) {
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
