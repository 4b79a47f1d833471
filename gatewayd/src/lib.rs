//! gatewayd: every client connection of the member. Serves the etcd v3 gRPC
//! API and HTTP endpoints on the client port, validates requests as etcd
//! does, proposes writes to raftd, reads from storaged (after a read index
//! for linearizable reads). gatewayd holds no durable state. Without a
//! member it runs as an L4 or L7 proxy in front of a remote cluster
//! (`proxy`), which uses nothing member-only.

pub mod access;
pub mod api;
pub mod backend;
pub mod config;
pub mod debug_vars;
pub mod grpc_front;
pub mod health;
pub mod http;
pub mod identity;
pub mod learner;
pub mod member_state;
pub mod metrics;
pub mod pprof;
pub mod probes;
pub mod proposer;
pub mod proxy;
pub mod quota;
pub mod raft_link;
pub mod retry;
pub mod storage_link;
pub mod tokens;
pub mod trace;
pub mod version_monitor;
pub mod watch_hub;
pub mod watch_stream;
