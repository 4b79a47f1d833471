//! raftd: consensus for one member. Owns the raft log and vote (its own
//! fjall database, fsync'd with group commit), runs the openraft node whose
//! state machine is this member's storaged, and serves Propose/ReadIndex to
//! gatewayd on the member's Unix socket. Only raftd fsyncs on the write path.

pub mod lessor;
pub mod local_server;
pub mod log_store;
pub mod network;
pub mod state_machine;
pub mod types;
