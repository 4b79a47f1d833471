//! etcd's /health reply, shared by the member and the L7 proxy (each
//! probes with a read of its own).

use std::future::Future;
use std::time::Duration;

use axum::http::StatusCode;

/// A probe's call to one of the member's daemons, bounded: a daemon that
/// is stopped, frozen or restarting fails the probe after `deadline` with
/// its name, instead of holding the probe until the request timeout.
pub async fn within<T>(
    deadline: Duration,
    daemon: &str,
    call: impl Future<Output = Result<T, tonic::Status>>,
) -> Result<T, tonic::Status> {
    match tokio::time::timeout(deadline, call).await {
        Ok(answer) => answer,
        Err(_) => Err(tonic::Status::unavailable(format!(
            "{daemon} did not answer within {} ms",
            deadline.as_millis()
        ))),
    }
}

/// etcd's /health reply to the outcome of a read.
pub fn health_answer(
    probe: Result<(), tonic::Status>,
) -> (StatusCode, [(&'static str, &'static str); 1], String) {
    let json = [("content-type", "application/json")];
    crate::metrics::health_checked(probe.is_ok());
    match probe {
        Ok(()) => (
            StatusCode::OK,
            json,
            r#"{"health":"true","reason":""}"#.to_string(),
        ),
        Err(e) => {
            let reason = serde_json::to_string(e.message()).unwrap_or_else(|_| "\"\"".into());
            (
                StatusCode::SERVICE_UNAVAILABLE,
                json,
                format!(r#"{{"health":"false","reason":{reason}}}"#),
            )
        }
    }
}
