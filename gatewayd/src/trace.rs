//! gatewayd's part of distributed tracing: a server span per client gRPC
//! call (under the caller's `traceparent`, if it sent one), named and
//! described as OpenTelemetry's gRPC instrumentation names them, and the
//! call's trace context kept for the requests it makes of raftd and
//! storaged (`current`).

use std::future::Future;

use axum::http::{HeaderMap, Request};
use common::distributed_tracing::{self, ActiveSpan, Kind, SpanContext};
use futures::future::Either;

tokio::task_local! {
    /// The sampled span of the call this task serves.
    static CURRENT: SpanContext;
}

/// A span for this call, when tracing is on and the call is sampled.
pub fn start<B>(req: &Request<B>) -> Option<ActiveSpan> {
    if !distributed_tracing::enabled() {
        return None;
    }
    let parent = req
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(SpanContext::parse);
    distributed_tracing::start(parent)
}

/// Run the call's handler with its span as the current trace context
/// (an untraced call runs as it is).
pub fn within<F: Future>(
    span: Option<&ActiveSpan>,
    handler: F,
) -> Either<tokio::task::futures::TaskLocalFuture<SpanContext, F>, F> {
    match span {
        Some(s) => Either::Left(CURRENT.scope(s.context, handler)),
        None => Either::Right(handler),
    }
}

/// The `traceparent` to pass on from the call this task serves; empty
/// when it is not traced.
pub fn current() -> String {
    CURRENT.try_with(|c| c.traceparent()).unwrap_or_default()
}

/// End the call's span with its gRPC status.
pub fn finish(span: ActiveSpan, path: &str, headers: &HeaderMap) {
    let name = path.trim_start_matches('/');
    let (service, method) = name.split_once('/').unwrap_or((name, ""));
    let code = headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("0");
    let message = headers
        .get("grpc-message")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let error = (code != "0").then_some(message);
    span.finish(
        name,
        Kind::Server,
        &[
            ("rpc.system", "grpc"),
            ("rpc.service", service),
            ("rpc.method", method),
            ("rpc.grpc.status_code", code),
        ],
        error,
    );
}
