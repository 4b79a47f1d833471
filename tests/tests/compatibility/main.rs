//! Side by side with etcd 3.4.23: the API, etcdctl's transcripts, the JSON gateway and etcd's configuration give the same results and errors.
//! One scenario per file; every test starts the real daemon binaries.

mod auth_matches_etcd;
mod etcd_config;
mod etcdctl_matches_etcd;
mod etcdctl_watch_matches_etcd;
mod grpc_edges_match_etcd;
mod json_gateway;
mod json_gateway_streams;
mod kv_matches_etcd;
mod snapshot_migration;
mod watch_matches_etcd;
