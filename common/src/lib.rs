//! Shared by triad's daemons: the protos, config loading, Unix-socket gRPC
//! plumbing, readiness/shutdown signalling, and the one mapping from internal
//! errors to etcd's gRPC statuses. No daemon logic lives here.

pub mod activation;
pub mod backup;
pub mod bbolt;
pub mod call_stream;
pub mod cert_names;
pub mod codec;
pub mod config;
pub mod cpu_profile;
pub mod discovery;
pub mod distributed_tracing;
pub mod dns_srv;
pub mod durable;
pub mod errors;
pub mod etcd_flags;
pub mod etcd_yaml;
pub mod feature_gates;
pub mod h2_authority;
pub mod heap_profile;
pub mod ids;
pub mod inline_stream;
pub mod journal;
pub mod keys;
pub mod lifecycle;
pub mod log_rotation;
pub mod logging;
pub mod member_check;
pub mod member_dir;
pub mod metrics;
pub mod nested_txn;
pub mod park_spin;
pub mod process;
pub mod proto;
pub mod read_batch;
pub mod read_index_link;
pub mod secrets;
pub mod tcp;
pub mod tls;
pub mod uds;
pub mod uds_stream;
pub mod validate;
pub mod versions;

/// The version every daemon reports for `--version`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
