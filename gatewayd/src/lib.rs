//! gatewayd: every client connection of the member. Serves the etcd v3 gRPC
//! API and HTTP endpoints on the client port, validates requests as etcd
//! does, proposes writes to raftd, reads from storaged (after a read index
//! for linearizable reads). gatewayd holds no durable state.

pub mod auth;
pub mod backend;
pub mod cluster;
pub mod concurrency;
pub mod election;
pub mod grpc_front;
pub mod http;
pub mod identity;
pub mod json_gateway;
pub mod kv;
pub mod learner;
pub mod lease;
pub mod lock;
pub mod maintenance;
pub mod metrics;
pub mod probes;
pub mod proposer;
pub mod proxy_l4;
pub mod proxy_l7;
pub mod quota;
pub mod srv;
pub mod tokens;
pub mod watch;
pub mod watch_hub;
