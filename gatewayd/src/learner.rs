//! What a learner serves: like etcd, only Maintenance.Status and
//! serializable Range; everything else (streams included) is refused with
//! "etcdserver: rpc not supported for learner". Whether this member is a
//! learner comes from raftd's status, refreshed by Backend.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::backend::Backend;
use common::errors::EtcdError;

/// gRPC methods a learner answers (Range only when serializable, which
/// KvService checks itself since it needs the decoded request).
const LEARNER_METHODS: [&str; 2] = ["/etcdserverpb.Maintenance/Status", "/etcdserverpb.KV/Range"];

pub async fn guard(State(backend): State<Arc<Backend>>, req: Request, next: Next) -> Response {
    if !LEARNER_METHODS.contains(&req.uri().path()) && backend.is_learner().await {
        let status = tonic::Status::from(EtcdError::NotSupportedForLearner);
        return status.into_http::<axum::body::Body>().into_response();
    }
    next.run(req).await
}
