//! etcd 3.5's /livez and /readyz, in Kubernetes' healthz format: each
//! check reports `[+]name ok` or `[-]name failed: reason`; the answer is
//! `ok` (200) or `<probe> check failed` (503), with every line shown under
//! `?verbose` and checks skipped with `?exclude=name`. /readyz aggregates
//! the member's three daemons: storaged must read, raftd must have a leader
//! and confirm a read index, and no CORRUPT alarm may be raised.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;

use crate::backend::Backend;
use crate::health::within;
use common::proto::etcdserverpb::{AlarmType, RangeRequest};

#[derive(Clone, Copy)]
enum Check {
    /// storaged answers a local read.
    SerializableRead,
    /// raftd has a leader that confirms a read index, and storaged has
    /// applied up to it.
    LinearizableRead,
    /// No member has raised CORRUPT.
    DataCorruption,
}

impl Check {
    fn name(self) -> &'static str {
        match self {
            Check::SerializableRead => "serializable_read",
            Check::LinearizableRead => "linearizable_read",
            Check::DataCorruption => "data_corruption",
        }
    }

    async fn run(self, b: &Backend) -> Result<(), String> {
        self.check(b).await.map_err(|e| e.message().to_string())
    }

    async fn check(self, b: &Backend) -> Result<(), tonic::Status> {
        let probe = RangeRequest {
            key: b"health".to_vec(),
            serializable: true,
            ..Default::default()
        };
        let deadline = b.probe_timeout;
        match self {
            Check::SerializableRead => within(deadline, "storaged", b.range(probe, None))
                .await
                .map(|_| ()),
            Check::LinearizableRead => {
                within(deadline, "raftd", b.read_index()).await?;
                within(deadline, "storaged", b.range(probe, None))
                    .await
                    .map(|_| ())
            }
            Check::DataCorruption => {
                let s = within(deadline, "storaged", b.storage_status()).await?;
                if s.alarms
                    .iter()
                    .any(|a| a.alarm == AlarmType::Corrupt as i32)
                {
                    return Err(tonic::Status::data_loss("Alarm active: CORRUPT"));
                }
                Ok(())
            }
        }
    }
}

const LIVEZ: [Check; 1] = [Check::SerializableRead];
const READYZ: [Check; 3] = [
    Check::DataCorruption,
    Check::SerializableRead,
    Check::LinearizableRead,
];

async fn probe(
    backend: &Backend,
    probe: &str,
    checks: &[Check],
    params: &HashMap<String, String>,
) -> (StatusCode, String) {
    let verbose = params.contains_key("verbose");
    let excluded: Vec<&str> = params
        .get("exclude")
        .map(|e| e.split(',').collect())
        .unwrap_or_default();
    let mut lines = Vec::new();
    let mut failed = false;
    for c in checks {
        if excluded.contains(&c.name()) {
            lines.push(format!("[+]{} excluded: ok", c.name()));
            continue;
        }
        match c.run(backend).await {
            Ok(()) => lines.push(format!("[+]{} ok", c.name())),
            Err(why) => {
                failed = true;
                lines.push(format!("[-]{} failed: {why}", c.name()));
            }
        }
    }
    if failed {
        lines.push(format!("{probe} check failed"));
        (StatusCode::SERVICE_UNAVAILABLE, lines.join("\n"))
    } else if verbose {
        lines.push("ok".to_string());
        (StatusCode::OK, lines.join("\n"))
    } else {
        (StatusCode::OK, "ok".to_string())
    }
}

pub async fn livez(
    State(b): State<Arc<Backend>>,
    Query(params): Query<HashMap<String, String>>,
) -> (StatusCode, String) {
    probe(&b, "livez", &LIVEZ, &params).await
}

pub async fn readyz(
    State(b): State<Arc<Backend>>,
    Query(params): Query<HashMap<String, String>>,
) -> (StatusCode, String) {
    probe(&b, "readyz", &READYZ, &params).await
}

/// The gRPC health service's answer for the whole server (""): SERVING
/// while raftd reports a leader, NOT_SERVING otherwise. It follows the
/// raftd status that `Backend::publish` already polls each second.
pub async fn follow_grpc_health(b: Arc<Backend>, reporter: tonic_health::server::HealthReporter) {
    use tonic_health::ServingStatus;
    let mut leader = b.has_leader();
    loop {
        let status = if *leader.borrow_and_update() {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        reporter.set_service_status("", status).await;
        if leader.changed().await.is_err() {
            return;
        }
    }
}
