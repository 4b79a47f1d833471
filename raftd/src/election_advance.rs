//! etcd's initial election tick advance: a member that starts and sees no
//! leader campaigns after two heartbeat intervals instead of a whole
//! election timeout (a lone voter at once, as etcd always does). It
//! campaigns with a pre-vote, so a member that merely missed the leader's
//! first heartbeats is refused and disturbs nobody.

use std::time::Duration;

use openraft::async_runtime::WatchReceiver;

use crate::types::NodeId;
use crate::Raft;

/// Once, at start: `enabled` is `--initial-election-tick-advance`.
pub async fn run(raft: Raft, me: NodeId, heartbeat: Duration, enabled: bool) {
    // The membership shows in the metrics once the log is read (or the
    // bootstrap applied); etcd waits as long for its peers.
    let mut voters: Vec<NodeId> = Vec::new();
    for _ in 0..100 {
        voters = raft
            .metrics()
            .borrow_watched()
            .membership_config
            .membership()
            .voter_ids()
            .collect();
        if !voters.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (alone, voter) = (voters == [me], voters.contains(&me));
    if !voter || !(alone || enabled) {
        return;
    }
    if !alone {
        tokio::time::sleep(heartbeat * 2).await;
    }
    if raft.metrics().borrow_watched().current_leader.is_some() {
        return;
    }
    tracing::info!(
        alone,
        "no leader in sight at start: campaigning now (initial election tick advance)"
    );
    if let Err(e) = raft.trigger().elect(true).await {
        tracing::debug!(error = %e, "could not trigger the first election");
    }
}
