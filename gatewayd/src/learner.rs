//! What a learner serves: like etcd, only Maintenance.Status and
//! serializable Range; everything else (streams included) is refused with
//! "etcdserver: rpc not supported for learner". Whether this member is a
//! learner comes from raftd's status, refreshed by Backend.

use axum::http::Response;
use tonic::body::Body;

use common::errors::EtcdError;

/// gRPC methods a learner answers (Range only when serializable, which
/// KvService checks itself since it needs the decoded request).
const LEARNER_METHODS: [&str; 2] = ["/etcdserverpb.Maintenance/Status", "/etcdserverpb.KV/Range"];

/// Whether a learner serves calls to `path`.
pub fn serves(path: &str) -> bool {
    LEARNER_METHODS.contains(&path)
}

/// The answer to a call a learner does not serve.
pub fn refusal() -> Response<Body> {
    tonic::Status::from(EtcdError::NotSupportedForLearner).into_http()
}
