//! L7 proxy mode (etcd's `grpc-proxy`): gatewayd without a local member,
//! serving the etcd v3 gRPC API itself and forwarding to a remote
//! cluster, failing over between its members (`upstream`). On the way it
//! caches serializable ranges (`cache`), coalesces identical watches
//! (`watch`) and concurrent keepalives of a lease (`lease`), and can put
//! its clients in a key namespace (`namespace`). The rest is forwarded as
//! it came (`passthrough`). /health and /metrics are served beside gRPC.

pub mod cache;
pub mod kv;
pub mod lease;
pub mod metrics;
pub mod namespace;
pub mod passthrough;
pub mod upstream;
pub mod watch;

use std::sync::Arc;
use std::time::Duration;

use axum::routing::get;
use common::proto::etcdserverpb::auth_server::AuthServer;
use common::proto::etcdserverpb::cluster_server::ClusterServer;
use common::proto::etcdserverpb::kv_client::KvClient;
use common::proto::etcdserverpb::kv_server::KvServer;
use common::proto::etcdserverpb::lease_server::LeaseServer;
use common::proto::etcdserverpb::maintenance_server::MaintenanceServer;
use common::proto::etcdserverpb::watch_server::WatchServer;
use common::proto::etcdserverpb::RangeRequest;
use common::proto::v3electionpb::election_server::ElectionServer;
use common::proto::v3lockpb::lock_server::LockServer;

use crate::retry::Retry;
use namespace::Namespace;
use upstream::{unary, Upstream, UpstreamError};

pub struct L7Settings {
    /// The cluster's client endpoints (host:port).
    pub endpoints: Vec<String>,
    /// Key prefix for every client of the proxy ("" for none).
    pub namespace: String,
    pub request_timeout: Duration,
    /// The largest request accepted from a client (and watch fragment size).
    pub max_request_bytes: usize,
    /// TLS toward the members, if they serve https.
    pub upstream_tls: Option<tonic::transport::ClientTlsConfig>,
}

/// The proxy's gRPC services and HTTP endpoints, ready to serve.
pub fn routes(s: L7Settings) -> Result<axum::Router, UpstreamError> {
    let upstream = Arc::new(Upstream::new(
        &s.endpoints,
        s.request_timeout,
        s.upstream_tls.as_ref(),
    )?);
    let ns = Namespace::new(&s.namespace);
    let passthrough = passthrough::Passthrough::new(upstream.clone());
    let max = s.max_request_bytes;
    let watch = watch::WatchProxy::new(upstream.clone(), ns.clone(), max, s.request_timeout);
    let mut grpc = tonic::service::Routes::builder();
    grpc.add_service(
        KvServer::new(kv::KvProxy::new(upstream.clone(), ns.clone()))
            .max_decoding_message_size(max),
    )
    .add_service(WatchServer::new(watch::WatchService(watch)).max_decoding_message_size(max))
    .add_service(
        LeaseServer::new(lease::LeaseProxy::new(
            upstream.clone(),
            ns,
            s.request_timeout,
        ))
        .max_decoding_message_size(max),
    )
    .add_service(ClusterServer::from_arc(passthrough.clone()))
    .add_service(MaintenanceServer::from_arc(passthrough.clone()).max_decoding_message_size(max))
    .add_service(AuthServer::from_arc(passthrough.clone()))
    .add_service(LockServer::from_arc(passthrough.clone()))
    .add_service(ElectionServer::from_arc(passthrough));
    let health = move || {
        let upstream = upstream.clone();
        async move {
            let probe = unary!(
                upstream,
                Retry::Idempotent,
                KvClient::range,
                tonic::metadata::MetadataMap::new(),
                RangeRequest {
                    key: b"health".to_vec(),
                    ..Default::default()
                }
            );
            crate::health::health_answer(probe.map(|_| ()))
        }
    };
    let http = axum::Router::new()
        .route("/health", get(health))
        .route("/metrics", get(|| async { metrics::render() }));
    Ok(grpc.routes().into_axum_router().merge(http))
}
