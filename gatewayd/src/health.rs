//! etcd's /health reply, shared by the member and the L7 proxy (each
//! probes with a read of its own).

use axum::http::StatusCode;

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
