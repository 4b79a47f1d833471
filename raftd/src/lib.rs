//! raftd: consensus for one member. Owns the raft log and vote (its own
//! fjall database, fsync'd with group commit), runs the openraft node whose
//! state machine is this member's storaged, talks to the other members'
//! raftd over TCP (peer URLs), and serves proposals, read indexes, leases
//! and membership to gatewayd on the member's Unix socket, forwarding to
//! the leader when this member does not lead. Only raftd fsyncs on the
//! write path.

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
pub mod route;
pub mod state_machine;
pub mod types;
