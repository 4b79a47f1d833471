//! The L7 proxy's link to the remote cluster: one lazily connected gRPC
//! channel per member endpoint. Calls go to the current member until it
//! fails in the transport, then the proxy moves on to the next one, so
//! clients keep being served while a member is down.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tonic::metadata::MetadataMap;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tonic::{Request, Status};

use crate::retry::{not_connected, transport_failure, Retry};
use common::errors::EtcdError;

/// How long connecting to a member may take before the next is tried.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Pause after every member failed once, before trying them all again.
const ROUND_PAUSE: Duration = Duration::from_millis(200);

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("invalid proxy endpoint {0:?}: {1}")]
    BadEndpoint(String, String),
    #[error("the L7 proxy needs at least one endpoint")]
    NoEndpoints,
}

pub struct Upstream {
    members: Vec<(String, Channel)>,
    current: AtomicUsize,
    /// How long a call may keep failing over before the client is answered.
    timeout: Duration,
}

impl Upstream {
    /// Channels to `endpoints` (host:port), over TLS with `tls` when given.
    pub fn new(
        endpoints: &[String],
        timeout: Duration,
        tls: Option<&ClientTlsConfig>,
    ) -> Result<Upstream, UpstreamError> {
        if endpoints.is_empty() {
            return Err(UpstreamError::NoEndpoints);
        }
        let scheme = if tls.is_some() { "https" } else { "http" };
        let mut members = Vec::new();
        for addr in endpoints {
            let bad = |e: tonic::transport::Error| {
                UpstreamError::BadEndpoint(addr.clone(), e.to_string())
            };
            let mut endpoint = Endpoint::from_shared(format!("{scheme}://{addr}")).map_err(bad)?;
            if let Some(tls) = tls {
                endpoint = endpoint.tls_config(tls.clone()).map_err(bad)?;
            }
            let channel = endpoint
                .connect_timeout(CONNECT_TIMEOUT)
                .tcp_nodelay(true)
                // A member that stops answering (paused, cut off) is noticed
                // by keepalive pings, failing the calls waiting on it.
                .http2_keep_alive_interval(Duration::from_secs(1))
                .keep_alive_timeout(Duration::from_secs(3))
                .keep_alive_while_idle(true)
                .connect_lazy();
            members.push((addr.clone(), channel));
        }
        Ok(Upstream {
            members,
            current: AtomicUsize::new(0),
            timeout,
        })
    }

    /// The member in use and a channel to it.
    pub fn channel(&self) -> (usize, Channel) {
        let i = self.current.load(Ordering::Relaxed) % self.members.len();
        (i, self.members[i].1.clone())
    }

    /// Member `i` failed: move to the next one (unless another call
    /// already moved on).
    pub fn failed(&self, i: usize, error: &Status) {
        let next = (i + 1) % self.members.len();
        if self
            .current
            .compare_exchange(i, next, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            super::metrics::FAILOVERS.add(1);
            tracing::warn!(
                member = %self.members[i].0,
                next = %self.members[next].0,
                error = %error.message(),
                "upstream member failed; failing over"
            );
        }
    }

    /// Whether a round of every member has been tried since `attempts`
    /// began, and so a pause is due before the next round.
    pub async fn pause_after_round(&self, attempts: usize) {
        if attempts.is_multiple_of(self.members.len()) {
            tokio::time::sleep(ROUND_PAUSE).await;
        }
    }

    /// Run a unary call on the current member, failing over to the others
    /// on transport failures within the timeout. Writes (`OnlyUnsent`) are
    /// sent again only when nothing reached the member; one lost in flight
    /// may have been applied and fails with etcd's "request timed out".
    pub async fn call<T, F, Fut>(&self, retry: Retry, mut call: F) -> Result<T, Status>
    where
        F: FnMut(Channel) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let deadline = tokio::time::Instant::now() + self.timeout;
        let mut attempts = 0;
        loop {
            let (i, channel) = self.channel();
            match tokio::time::timeout_at(deadline, call(channel)).await {
                Err(_) => return Err(EtcdError::Timeout.into()),
                Ok(Ok(r)) => return Ok(r.into_inner()),
                Ok(Err(s)) if transport_failure(&s) => {
                    self.failed(i, &s);
                    if retry == Retry::OnlyUnsent && !not_connected(&s) {
                        return Err(EtcdError::Timeout.into());
                    }
                    attempts += 1;
                    self.pause_after_round(attempts).await;
                }
                Ok(Err(s)) => return Err(s),
            }
        }
    }
}

/// A request to the cluster carrying the client's credentials.
pub fn request<T>(from: &MetadataMap, message: T) -> Request<T> {
    let mut r = Request::new(message);
    for key in ["token", "authorization"] {
        if let Some(v) = from.get(key) {
            r.metadata_mut().insert(key, v.clone());
        }
    }
    r
}

/// The client's credentials, as a cache and coalescing key.
pub fn credentials(from: &MetadataMap) -> Option<String> {
    ["token", "authorization"].iter().find_map(|k| {
        from.get(*k)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    })
}

/// One unary call to the cluster through `$upstream` (failing over as
/// `Upstream::call` does) with the client's credentials from `$md`.
macro_rules! unary {
    ($upstream:expr, $retry:expr, $client:ident :: $method:ident, $md:expr, $req:expr) => {{
        let (md, req) = (&$md, &$req);
        $upstream
            .call($retry, |ch| {
                let mut client = $client::new(ch).max_decoding_message_size(usize::MAX);
                let req = $crate::proxy::l7::upstream::request(md, req.clone());
                async move { client.$method(req).await }
            })
            .await
    }};
}
pub(crate) use unary;

/// An impl of a service trait whose unary methods each forward one call
/// (other methods, when any, given in the trailing block).
macro_rules! forward {
    ($service:ident for $ty:ident via $client:ident;
     $($method:ident($req:ty) -> $resp:ty, $retry:expr;)*
     $({ $($extra:tt)* })?) => {
        #[tonic::async_trait]
        impl $service for $ty {
            $(
                async fn $method(&self, req: Request<$req>) -> Result<Response<$resp>, Status> {
                    let (md, r) = (req.metadata().clone(), req.into_inner());
                    $crate::proxy::l7::upstream::unary!(self.upstream, $retry, $client::$method, md, r)
                        .map(Response::new)
                }
            )*
            $($($extra)*)?
        }
    };
}
pub(crate) use forward;
