//! raftd: consensus for one member. Owns the raft log and vote (its own
//! fjall database, fsync'd with group commit), runs the openraft node whose
//! state machine is this member's storaged, talks to the other members'
//! raftd over TCP (peer URLs), and serves proposals, read indexes, leases
//! and membership to gatewayd on the member's Unix socket, forwarding to
//! the leader when this member does not lead. Only raftd fsyncs on the
//! write path.

pub mod append_mux;
pub mod auto_compact;
pub mod codec;
pub mod corruption;
pub mod force;
pub mod join;
pub mod lessor;
pub mod local_server;
pub mod log_store;
pub mod members;
pub mod metrics;
pub mod network;
pub mod peer_server;
pub mod removal;
pub mod route;
pub mod state_machine;
pub mod types;

/// Resolves with openraft's fatal error once its core has stopped (a
/// storage error, a panic); pending forever while it runs.
pub async fn fatal(raft: &types::Raft) -> String {
    let stopped = raft
        .wait(None)
        .metrics(|m| m.running_state.is_err(), "raft core stopped")
        .await;
    match stopped {
        Ok(m) => match m.running_state {
            Err(e) => e.to_string(),
            Ok(()) => "unknown".to_string(),
        },
        // The metrics channel closed: the core is gone too.
        Err(e) => e.to_string(),
    }
}
