//! Reads never go back in time across an unclean stop. storaged does not
//! fsync its journal on the write path (raftd's log is the durable copy),
//! so after a crash of the machine or a power cut its store may be behind
//! what it served before: raftd re-applies the lost entries from its log.
//! Until storaged has applied up to the commit index a leader gave raftd
//! (which covers everything any member applied before the cut), client
//! reads wait. A graceful stop, and the restart that activates a received
//! snapshot, sync the store and leave a marker: the next start needs no
//! fence.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::store::Store;
use common::errors::EtcdError;
use common::proto::raft::raft_local_client::RaftLocalClient;
use common::proto::raft::StatusRequest;
use common::proto::storage::AuthInfo;

/// How long a client read waits for the fence before failing as etcd's
/// timed-out request (the client retries, or asks another member).
const READ_WAIT: Duration = Duration::from_secs(5);

/// The marker of a graceful stop, beside the store directory.
fn marker(store_dir: &Path) -> PathBuf {
    store_dir.with_extension("clean-stop")
}

/// At a graceful stop, once the store is synced: the next start is clean.
pub fn mark_clean_stop(store_dir: &Path) -> std::io::Result<()> {
    common::durable::write_file(&marker(store_dir), b"")
}

/// At start, before anything is applied: whether the last stop was
/// graceful. The marker is removed (durably), so a crash from here on is
/// not mistaken for a clean stop.
pub fn take_clean_stop(store_dir: &Path) -> std::io::Result<bool> {
    let path = marker(store_dir);
    match std::fs::remove_file(&path) {
        Ok(()) => {
            if let Some(dir) = path.parent() {
                common::durable::sync_dir(dir)?;
            }
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Whether client reads are served yet.
pub struct ReadFence {
    lifted: watch::Sender<bool>,
}

impl ReadFence {
    pub fn new(lifted: bool) -> Arc<ReadFence> {
        Arc::new(ReadFence {
            lifted: watch::Sender::new(lifted),
        })
    }

    pub fn is_lifted(&self) -> bool {
        *self.lifted.borrow()
    }

    /// Admit a read by `who`: the member's own reads (None) at once, a
    /// client's once the fence is lifted (waiting a bounded time).
    pub async fn admit(&self, who: Option<&AuthInfo>) -> Result<(), EtcdError> {
        if who.is_none() || self.is_lifted() {
            return Ok(());
        }
        let mut rx = self.lifted.subscribe();
        let lifted = tokio::time::timeout(READ_WAIT, rx.wait_for(|l| *l))
            .await
            .is_ok_and(|r| r.is_ok());
        if lifted {
            Ok(())
        } else {
            Err(EtcdError::Timeout)
        }
    }

    fn lift(&self) {
        self.lifted.send_replace(true);
    }
}

/// Ask raftd (on its local socket) for the commit index once it has heard
/// from a leader; wait until the store has applied up to it; lift the
/// fence.
pub async fn catch_up(store: Arc<Store>, raftd_socket: PathBuf, fence: Arc<ReadFence>) {
    let mut raftd = RaftLocalClient::new(common::uds::channel(&raftd_socket));
    let target = loop {
        if let Ok(s) = raftd.status(StatusRequest {}).await {
            let s = s.into_inner();
            if s.leader != 0 && s.commit_index > 0 {
                break s.commit_index;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    while store.applied().map_or(0, |a| a.index) < target {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tracing::info!(
        index = target,
        "caught up with the cluster's commit index after an unclean stop: serving reads"
    );
    fence.lift();
}
