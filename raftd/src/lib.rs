//! raftd: consensus for one member. Owns the raft log (append-only segment
//! files, fsync'd with group commit) and vote (a small fjall database), runs
//! the openraft node whose state machine is this member's storaged, talks to
//! the other members' raftd over TCP (peer URLs), and serves proposals, read
//! indexes, leases and membership to gatewayd on the member's Unix socket,
//! forwarding to the leader when this member does not lead. Only raftd
//! fsyncs on the write path.

pub mod append_mux;
pub mod apply_notice;
pub mod auto_compact;
pub mod belonging;
pub mod codec;
pub mod config;
pub mod corruption;
pub mod discovery;
pub mod discovery_v2;
pub mod election_advance;
pub mod force;
pub mod group_commit;
pub mod handoff;
pub mod join;
pub mod lessor;
pub mod local_server;
pub mod log_store;
pub mod members;
pub mod metrics;
pub mod own_proposals;
pub mod peer_auth;
pub mod peer_client;

pub mod peer_server;
pub mod proposals;
pub mod purge;
pub mod raft_errors;
pub mod read_indexes;
pub mod recent_entries;
pub mod removal;
pub mod route;
pub mod state_machine;
pub mod types;
pub mod wal;

/// The openraft node: triad's type configuration, storaged as the state
/// machine.
pub type Raft = openraft::Raft<types::TypeConfig, state_machine::StateMachine>;

/// An I/O error carrying `e`'s text (fjall's and openraft's errors, where
/// openraft's storage traits want io::Error).
pub(crate) fn io_err(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

/// Resolves with openraft's fatal error once its core has stopped (a
/// storage error, a panic); pending forever while it runs. The error is
/// looked for on a tick and when the server metrics change or close, not
/// on every metrics change: those come with every write.
pub async fn fatal(raft: &Raft) -> String {
    use openraft::async_runtime::WatchReceiver;
    let mut server = raft.server_metrics();
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(200));
    loop {
        let closed = tokio::select! {
            changed = server.changed() => changed.is_err(),
            _ = tick.tick() => false,
        };
        if let Err(e) = &raft.metrics().borrow_watched().running_state {
            return e.to_string();
        }
        if closed {
            // The metrics channel closed: the core is gone too.
            return "raft core stopped".to_string();
        }
    }
}
