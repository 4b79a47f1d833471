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

async fn version_info(State(s): State<HttpState>) -> ([(&'static str, &'static str); 1], String) {
    let cluster: String = s.version.split('.').take(2).collect::<Vec<_>>().join(".") + ".0";
    let body = serde_json::json!({ "etcdserver": s.version, "etcdcluster": cluster });
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
