//! etcd's v3 services as gatewayd serves them, one file per service (as
//! etcd's `v3rpc/`), and the JSON gateway over the same service instances.

pub mod auth;
pub mod cluster;
pub mod concurrency;
pub mod election;
pub mod json_gateway;
pub mod json_requests;
pub mod kv;
pub mod lease;
pub mod lock;
pub mod maintenance;
pub mod range_stream;
pub mod watch;
