//! When a call to one of the member's daemons (or, in proxy mode, to a
//! remote member) may be sent again: a daemon that could not be reached
//! (restarting) is asked again until the request's deadline; a call that
//! reached it and broke in flight is retried only if it changes nothing
//! (a proposal lost in flight may have been committed, so it fails with
//! etcd's "request timed out").

use std::time::Duration;

use tokio::time::Instant;
use tonic::{Code, Status};

use common::errors::EtcdError;

/// The daemon could not be reached at all (not running, socket missing),
/// or a call stream ended before the call was sent: safe to retry.
pub fn not_connected(s: &Status) -> bool {
    if common::call_stream::not_sent(s) {
        return true;
    }
    if s.code() != Code::Unavailable {
        return false;
    }
    let mut src: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(s);
    while let Some(e) = src {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::*;
            if matches!(io.kind(), NotFound | ConnectionRefused) {
                return true;
            }
        }
        src = e.source();
    }
    false
}

/// The call failed in the transport, not in the daemon: tonic attaches the
/// transport error as the source; statuses sent by a daemon have none.
pub fn transport_failure(s: &Status) -> bool {
    std::error::Error::source(s).is_some()
}

/// Whether a call may be sent again after this failure.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Reads: any transport failure (the daemon restarting) is retried.
    Idempotent,
    /// Proposals: only when nothing was sent; a proposal lost in flight may
    /// have been committed, so it fails with etcd's "request timed out".
    OnlyUnsent,
}

const RETRY: Duration = Duration::from_millis(50);

/// Run `call` until it reaches its daemon or the request timeout ends.
pub async fn retrying<T, F, Fut>(deadline: Instant, retry: Retry, mut call: F) -> Result<T, Status>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, Status>>,
{
    loop {
        match tokio::time::timeout_at(deadline, call()).await {
            Err(_) => return Err(EtcdError::Timeout.into()),
            Ok(Err(s))
                if not_connected(&s) || (retry == Retry::Idempotent && transport_failure(&s)) =>
            {
                if Instant::now() + RETRY >= deadline {
                    return Err(EtcdError::Timeout.into());
                }
                tokio::time::sleep(RETRY).await;
            }
            Ok(Err(s)) if transport_failure(&s) => {
                tracing::warn!(error = %s, "daemon connection lost with a request in flight");
                return Err(EtcdError::Timeout.into());
            }
            Ok(r) => return r,
        }
    }
}
