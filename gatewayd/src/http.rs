//! Plain-HTTP endpoints on the client port, beside gRPC (as etcd serves
//! them): /health (a linearizable read must succeed, as etcd checks),
//! /livez and /readyz (`probes.rs`), /version and /metrics.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;

use crate::backend::Backend;
use crate::health::{health_answer, within};
use common::proto::etcdserverpb::RangeRequest;

#[derive(Clone)]
struct HttpState {
    backend: Arc<Backend>,
    version: String,
}

/// Only /metrics (gatewayd's --listen-metrics-urls).
pub fn metrics_routes(backend: Arc<Backend>) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(|State(b): State<Arc<Backend>>| async move {
                crate::metrics::scrape_answer(member_metrics(&b).await)
            }),
        )
        .with_state(backend)
}

pub fn routes(backend: Arc<Backend>, version: String) -> Router {
    let probes = Router::new()
        .route("/livez", get(crate::probes::livez))
        .route("/readyz", get(crate::probes::readyz))
        .with_state(backend.clone());
    Router::new()
        .route("/health", get(health))
        .route("/version", get(version_info))
        .with_state(HttpState {
            backend: backend.clone(),
            version,
        })
        .merge(probes)
        .merge(metrics_routes(backend))
}

async fn health(
    State(s): State<HttpState>,
) -> (StatusCode, [(&'static str, &'static str); 1], String) {
    let deadline = s.backend.probe_timeout;
    let probe = async {
        within(deadline, "raftd", s.backend.read_index()).await?;
        let read = RangeRequest {
            key: b"health".to_vec(),
            ..Default::default()
        };
        within(deadline, "storaged", s.backend.range(read, None)).await
    };
    health_answer(probe.await.map(|_| ()))
}

/// etcd's /version: this member's server version and the cluster
/// version the leader decided ("not_decided" before), and from 3.6 on
/// the storage version.
async fn version_info(State(s): State<HttpState>) -> ([(&'static str, &'static str); 1], String) {
    let wait = s.backend.probe_timeout;
    let cluster = match tokio::time::timeout(wait, s.backend.storage_status()).await {
        Ok(Ok(status)) if !status.cluster_version.is_empty() => status.cluster_version,
        _ => "not_decided".to_string(),
    };
    let mut body = serde_json::json!({ "etcdserver": s.version, "etcdcluster": cluster });
    let newer = common::versions::Version::parse(&s.version)
        .is_some_and(common::versions::Version::is_3_6_or_later);
    if newer {
        let storage = if cluster == "not_decided" {
            "unknown"
        } else {
            cluster.as_str()
        };
        body["storage"] = serde_json::Value::from(storage);
    }
    ([("content-type", "application/json")], body.to_string())
}

/// The whole member's metrics: gatewayd's, then raftd's and storaged's
/// (a daemon that does not answer within a second is left out).
pub async fn member_metrics(backend: &Backend) -> String {
    let mut out = crate::metrics::render_own();
    let wait = std::time::Duration::from_secs(1);
    if let Ok(Ok(text)) = tokio::time::timeout(wait, backend.raftd_metrics()).await {
        out.push_str(&text);
    }
    if let Ok(Ok(text)) = tokio::time::timeout(wait, backend.storaged_metrics()).await {
        out.push_str(&text);
    }
    out
}
