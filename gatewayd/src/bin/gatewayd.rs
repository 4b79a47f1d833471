//! gatewayd's entry point: config, links to raftd and storaged, and the
//! client listeners (etcd gRPC + HTTP on every --listen-client-urls).

/// mimalloc rather than glibc's malloc: every request allocates and frees
/// many small buffers (HTTP/2 frames, protobuf messages, futures).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use common::lifecycle::Unstartable;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use common::config::Member;
use common::proto::etcdserverpb::auth_server::AuthServer;
use common::proto::etcdserverpb::cluster_server::ClusterServer;
use common::proto::etcdserverpb::kv_server::KvServer;
use common::proto::etcdserverpb::lease_server::LeaseServer;
use common::proto::etcdserverpb::maintenance_server::MaintenanceServer;
use common::proto::etcdserverpb::watch_server::WatchServer;
use common::proto::v3electionpb::election_server::ElectionServer;
use common::proto::v3lockpb::lock_server::LockServer;
use gatewayd::auth::AuthService;
use gatewayd::backend::{Backend, Settings};
use gatewayd::cluster::ClusterService;
use gatewayd::concurrency::Recipes;
use gatewayd::election::ElectionService;
use gatewayd::kv::KvService;
use gatewayd::lease::LeaseService;
use gatewayd::lock::LockService;
use gatewayd::maintenance::MaintenanceService;
use gatewayd::watch::WatchService;
use gatewayd::watch_hub::WatchHub;

/// Room for gRPC framing above --max-request-bytes (as etcd allows).
const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;

/// gatewayd's own options (`[gatewayd]`), with etcd's flag names.
#[derive(clap::Args, Serialize, Deserialize, Debug, Clone, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct GatewaydOpts {
    /// List of URLs to listen on for client traffic.
    #[arg(long, env = "TRIAD_LISTEN_CLIENT_URLS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    listen_client_urls: Option<String>,
    /// List of this member's client URLs to advertise to the public.
    #[arg(long, env = "TRIAD_ADVERTISE_CLIENT_URLS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    advertise_client_urls: Option<String>,
    /// Raise alarms when backend size exceeds the given quota (0 defaults
    /// to low space quota, 2 GiB; negative: no quota).
    #[arg(long, env = "TRIAD_QUOTA_BACKEND_BYTES", allow_negative_numbers = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    quota_backend_bytes: Option<i64>,
    /// Path to the client server TLS cert file.
    #[arg(long, env = "TRIAD_CERT_FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    cert_file: Option<std::path::PathBuf>,
    /// Path to the client server TLS key file.
    #[arg(long, env = "TRIAD_KEY_FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    key_file: Option<std::path::PathBuf>,
    /// Path to the client server TLS trusted CA cert file.
    #[arg(long, env = "TRIAD_TRUSTED_CA_FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    trusted_ca_file: Option<std::path::PathBuf>,
    /// Path to the client certificate revocation list file.
    #[arg(long, env = "TRIAD_CLIENT_CRL_FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    client_crl_file: Option<std::path::PathBuf>,
    /// Allowed TLS hostname (a name or address) client certificates must
    /// be valid for.
    #[arg(long, env = "TRIAD_CLIENT_CERT_ALLOWED_HOSTNAME")]
    #[serde(skip_serializing_if = "Option::is_none")]
    client_cert_allowed_hostname: Option<String>,
    /// Enable client cert authentication.
    #[arg(long, env = "TRIAD_CLIENT_CERT_AUTH", num_args = 0..=1, default_missing_value = "true")]
    #[serde(skip_serializing_if = "Option::is_none")]
    client_cert_auth: Option<bool>,
    /// Maximum concurrent streams that each client can open at a time.
    #[arg(long, env = "TRIAD_MAX_CONCURRENT_STREAMS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    max_concurrent_streams: Option<u32>,
    /// How long (ms) a request may wait for raftd/storaged before failing with
    /// "etcdserver: request timed out" (etcd: 5s + 2 x election timeout).
    #[arg(long, env = "TRIAD_REQUEST_TIMEOUT_MS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    request_timeout_ms: Option<u64>,
    /// Interval of progress notifications to watchers that asked for them
    /// and saw no events (etcd's --experimental-watch-progress-notify-interval).
    #[arg(long, env = "TRIAD_WATCH_PROGRESS_NOTIFY_INTERVAL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    watch_progress_notify_interval: Option<String>,
    /// Threads serving clients: 1 (the default) runs everything on one
    /// thread, which is fastest on small machines; more use a thread pool.
    #[arg(long, env = "TRIAD_WORKER_THREADS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    worker_threads: Option<usize>,
    /// Proxy mode instead of serving a local member: "l4" forwards client
    /// connections to --proxy-endpoints (etcd's `etcd gateway`), "l7"
    /// serves the gRPC API and forwards requests (etcd's `grpc-proxy`).
    #[arg(long, env = "TRIAD_PROXY")]
    #[serde(skip_serializing_if = "Option::is_none")]
    proxy: Option<String>,
    /// The remote cluster's client endpoints (host:port,...) in proxy mode.
    #[arg(long, env = "TRIAD_PROXY_ENDPOINTS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    proxy_endpoints: Option<String>,
    /// Find the remote cluster's client endpoints in DNS SRV records of
    /// this domain (_etcd-client._tcp and _etcd-client-ssl._tcp), as etcd's
    /// gateway --discovery-srv.
    #[arg(long, env = "TRIAD_PROXY_DISCOVERY_SRV")]
    #[serde(skip_serializing_if = "Option::is_none")]
    proxy_discovery_srv: Option<String>,
    /// Name server for --proxy-discovery-srv (default: /etc/resolv.conf's).
    #[arg(long, env = "TRIAD_PROXY_DNS_SERVER")]
    #[serde(skip_serializing_if = "Option::is_none")]
    proxy_dns_server: Option<String>,
    /// How long an unreachable endpoint is skipped before it is tried again
    /// (etcd gateway's --retry-delay).
    #[arg(long, env = "TRIAD_PROXY_RETRY_DELAY")]
    #[serde(skip_serializing_if = "Option::is_none")]
    proxy_retry_delay: Option<String>,
    /// L7 proxy: a key prefix for every client of the proxy (etcd
    /// grpc-proxy's --namespace).
    #[arg(long, env = "TRIAD_PROXY_NAMESPACE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    proxy_namespace: Option<String>,
    /// URLs to serve the member's metrics on (GET /metrics), besides the
    /// client URLs.
    #[arg(long, env = "TRIAD_LISTEN_METRICS_URLS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    listen_metrics_urls: Option<String>,
    /// Authentication token type and its options: 'simple' or
    /// 'jwt,pub-key=PATH,priv-key=PATH,sign-method=RS256,ttl=5m'.
    #[arg(long, env = "TRIAD_AUTH_TOKEN")]
    #[serde(skip_serializing_if = "Option::is_none")]
    auth_token: Option<String>,
    /// Time (in seconds) a simple token lives after its last use.
    #[arg(long, env = "TRIAD_AUTH_TOKEN_TTL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    auth_token_ttl: Option<u64>,
    /// Cost of bcrypt when hashing auth passwords (4 to 31).
    #[arg(long, env = "TRIAD_BCRYPT_COST")]
    #[serde(skip_serializing_if = "Option::is_none")]
    bcrypt_cost: Option<u32>,
    /// etcd server version to report to clients (/version, Status).
    #[arg(long, env = "TRIAD_ETCD_VERSION")]
    #[serde(skip_serializing_if = "Option::is_none")]
    etcd_version: Option<String>,
}

/// Where a proxy forwards to, and how.
#[derive(Clone)]
struct ProxySpec {
    /// L7 (gRPC) rather than L4 (TCP).
    l7: bool,
    /// L7: the clients' key namespace.
    namespace: String,
    endpoints: Vec<String>,
    /// DNS SRV domain and name server, when endpoints are discovered.
    srv: Option<(String, std::net::SocketAddr)>,
    retry_delay: Duration,
}

struct Resolved {
    client: Listening,
    watch_progress_interval: Duration,
    worker_threads: usize,
    max_request_bytes: usize,
    max_txn_ops: usize,
    request_timeout: Duration,
    version: String,
    advertise: Vec<String>,
    quota_backend_bytes: i64,
    tokens: gatewayd::tokens::Tokens,
    bcrypt_cost: u32,
    metrics_listen: Vec<std::net::SocketAddr>,
    /// L4 proxy mode.
    proxy: Option<ProxySpec>,
}

fn resolve(member: &Member, opts: &GatewaydOpts) -> Result<Resolved, common::config::ConfigError> {
    let urls = common::config::parse_urls(
        opts.listen_client_urls
            .as_deref()
            .unwrap_or("http://localhost:2379"),
        "listen-client-urls",
    )?;
    let proxy = match opts.proxy.as_deref() {
        None | Some("off") => None,
        Some(mode @ ("l4" | "l7")) => {
            let endpoints: Vec<String> = opts
                .proxy_endpoints
                .as_deref()
                .unwrap_or("")
                .split(',')
                .map(|e| {
                    e.trim()
                        .trim_start_matches("http://")
                        .trim_start_matches("https://")
                })
                .filter(|e| !e.is_empty())
                .map(str::to_string)
                .collect();
            let srv = match &opts.proxy_discovery_srv {
                None => None,
                Some(domain) => {
                    let server = match &opts.proxy_dns_server {
                        None => gatewayd::srv::system_name_server(),
                        Some(a) => a.parse().map_err(|_| {
                            common::config::ConfigError(format!(
                                "invalid --proxy-dns-server {a:?} (want ip:port)"
                            ))
                        })?,
                    };
                    Some((domain.clone(), server))
                }
            };
            if endpoints.is_empty() && srv.is_none() {
                return Err(common::config::ConfigError(format!(
                    "--proxy {mode} needs --proxy-endpoints or --proxy-discovery-srv"
                )));
            }
            let retry_delay =
                common::config::parse_duration(opts.proxy_retry_delay.as_deref().unwrap_or("1m"))?;
            if mode == "l4" && opts.proxy_namespace.is_some() {
                return Err(common::config::ConfigError(
                    "--proxy-namespace needs --proxy l7".into(),
                ));
            }
            Some(ProxySpec {
                l7: mode == "l7",
                namespace: opts.proxy_namespace.clone().unwrap_or_default(),
                endpoints,
                srv,
                retry_delay,
            })
        }
        Some(other) => {
            return Err(common::config::ConfigError(format!(
                "unknown --proxy mode {other:?} (want l4 or l7)"
            )))
        }
    };
    let tls = common::tls::TlsFiles {
        cert: opts.cert_file.clone(),
        key: opts.key_file.clone(),
        trusted_ca: opts.trusted_ca_file.clone(),
        client_cert_auth: opts.client_cert_auth.unwrap_or(false),
        crl: opts.client_crl_file.clone(),
        cipher_suites: member.cipher_suites.clone(),
        allowed_cn: None,
        allowed_hostname: opts.client_cert_allowed_hostname.clone(),
    };
    tls.check("")?;
    tls.acceptor()?;
    let listen = urls
        .iter()
        .map(|u| {
            let https = u.starts_with("https://");
            // An L4 proxy passes TLS through; it needs no certificate.
            let l4 = proxy.as_ref().is_some_and(|p| !p.l7);
            if https && !tls.enabled() && !l4 {
                return Err(common::config::ConfigError(format!(
                    "TLS key/cert (--cert-file, --key-file) must be provided for the url {u}"
                )));
            }
            common::config::listen_addr(u).map(|a| (a, https))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let advertise = common::config::parse_urls(
        opts.advertise_client_urls
            .as_deref()
            .unwrap_or("http://localhost:2379"),
        "advertise-client-urls",
    )?;
    let worker_threads = opts.worker_threads.unwrap_or(1);
    if worker_threads == 0 {
        return Err(common::config::ConfigError(
            "--worker-threads must be at least 1".into(),
        ));
    }
    let watch_progress_interval = common::config::parse_duration(
        opts.watch_progress_notify_interval
            .as_deref()
            .unwrap_or("10m"),
    )?;
    if watch_progress_interval.is_zero() {
        return Err(common::config::ConfigError(
            "--watch-progress-notify-interval must be positive".into(),
        ));
    }
    let max_concurrent_streams = opts.max_concurrent_streams.unwrap_or(u32::MAX);
    if max_concurrent_streams == 0 {
        return Err(common::config::ConfigError(
            "--max-concurrent-streams must be at least 1".into(),
        ));
    }
    let bcrypt_cost = opts.bcrypt_cost.unwrap_or(10);
    if !(4..=31).contains(&bcrypt_cost) {
        return Err(common::config::ConfigError(format!(
            "invalid bcrypt-cost: {bcrypt_cost} (valid values are between 4 and 31)"
        )));
    }
    let tokens = gatewayd::tokens::Tokens::parse(
        opts.auth_token.as_deref().unwrap_or("simple"),
        opts.auth_token_ttl.unwrap_or(300),
    )?;
    let metrics_listen = match &opts.listen_metrics_urls {
        None => Vec::new(),
        Some(urls) => common::config::parse_urls(urls, "listen-metrics-urls")?
            .iter()
            .map(|u| common::config::listen_addr(u))
            .collect::<Result<_, _>>()?,
    };
    Ok(Resolved {
        proxy,
        metrics_listen,
        tokens,
        bcrypt_cost,
        client: Listening {
            listen,
            tls,
            max_concurrent_streams,
        },
        quota_backend_bytes: opts.quota_backend_bytes.unwrap_or(0),
        advertise,
        watch_progress_interval,
        worker_threads,
        max_request_bytes: member.max_request_bytes,
        max_txn_ops: member.max_txn_ops,
        request_timeout: Duration::from_millis(opts.request_timeout_ms.unwrap_or(7000)),
        version: opts.etcd_version.clone().unwrap_or_else(|| "3.5.17".into()),
    })
}

fn main() -> ExitCode {
    let loaded = common::config::from_command_line::<GatewaydOpts>(
        "gatewayd",
        "triad's client gateway (etcd v3 API)",
    )
    .and_then(|(m, o)| Ok((m.clone(), resolve(&m, &o)?)));
    let (member, opts) = match loaded {
        Ok(c) => c,
        Err(e) => return common::lifecycle::config_error("gatewayd", e),
    };
    // One thread by default: every request is a short hop between sockets,
    // and on a small machine cross-thread wake-ups cost more than a second
    // thread gains (see BENCHMARKS.md).
    // Before any thread starts: taking them clears systemd's variables.
    let inherited = common::activation::inherited_listeners();
    let runtime = member.runtime(opts.worker_threads);
    match opts.proxy.clone() {
        Some(spec) if spec.l7 => {
            common::lifecycle::run_daemon("gatewayd", &runtime, run_l7_proxy(opts, spec, inherited))
        }
        Some(spec) => {
            common::lifecycle::run_daemon("gatewayd", &runtime, run_l4_proxy(opts, spec, inherited))
        }
        None => common::lifecycle::run_daemon("gatewayd", &runtime, run(member, opts, inherited)),
    }
}

/// What client servers are set up from.
struct Listening {
    /// Each listen address, and whether it is an https URL (TLS).
    listen: Vec<(std::net::SocketAddr, bool)>,
    tls: common::tls::TlsFiles,
    max_concurrent_streams: u32,
}

/// A client server: gRPC calls through the front, the rest to axum.
type ClientServer = tonic::transport::server::Router<
    tower::layer::util::Stack<gatewayd::grpc_front::GrpcFront, tower::layer::util::Identity>,
>;

/// A server, its listener, and its TLS when it serves https.
type Prepared = (
    ClientServer,
    tokio::net::TcpListener,
    Option<tokio_rustls::TlsAcceptor>,
);

/// A gRPC+HTTP server for each client URL, on its listener: `grpc`'s
/// services, and `router` for every other request.
async fn prepare_servers(
    router: axum::Router,
    grpc: gatewayd::grpc_front::GrpcFront,
    cfg: &Listening,
    inherited: &mut Vec<(std::net::SocketAddr, std::net::TcpListener)>,
) -> anyhow::Result<Vec<Prepared>> {
    let server_tls = cfg.tls.acceptor()?;
    let mut prepared = Vec::new();
    for (addr, https) in &cfg.listen {
        let listener = listen(inherited, *addr).await?;
        let tls = match (*https, &server_tls) {
            (true, Some(tls)) => Some(tls.clone()),
            _ => None,
        };
        let server = tonic::transport::Server::builder()
            .accept_http1(true)
            .tcp_nodelay(true)
            .max_concurrent_streams(Some(cfg.max_concurrent_streams))
            .layer(grpc.clone())
            .add_routes(tonic::service::Routes::from(router.clone()));
        prepared.push((server, listener, tls));
        tracing::info!(%addr, tls = *https, "gatewayd serving clients");
    }
    Ok(prepared)
}

/// Serve until `stop`: in-flight requests finish; long-lived client
/// streams (watches, keepalives, observers) are dropped after the bounded
/// drain.
async fn serve_prepared(
    prepared: Vec<Prepared>,
    stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    common::lifecycle::serve_with_bounded_stop(
        |drain| {
            let servers: Vec<_> = prepared
                .into_iter()
                .map(|(server, listener, tls)| {
                    let incoming = common::tcp::nodelay_batched_connections(listener);
                    let stop = drain.clone().wait();
                    match tls {
                        Some(tls) => tokio::spawn(server.serve_with_incoming_shutdown(
                            common::tls::accept(incoming, tls),
                            stop,
                        )),
                        None => tokio::spawn(server.serve_with_incoming_shutdown(incoming, stop)),
                    }
                })
                .collect();
            async move {
                for r in futures::future::join_all(servers).await {
                    r??;
                }
                Ok::<(), anyhow::Error>(())
            }
        },
        stop,
    )
    .await
}

/// The client listener for `addr`: the one systemd passed (socket
/// activation: the port stays open across restarts), else a new one.
async fn listen(
    inherited: &mut Vec<(std::net::SocketAddr, std::net::TcpListener)>,
    addr: std::net::SocketAddr,
) -> anyhow::Result<tokio::net::TcpListener> {
    match common::activation::take_listener(inherited, addr) {
        Some(l) => l
            .set_nonblocking(true)
            .and_then(|()| tokio::net::TcpListener::from_std(l))
            .map_err(|e| anyhow::anyhow!("socket passed for {addr}: {e}")),
        None => tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| Unstartable::new(format!("cannot listen on {addr}: {e}")).into()),
    }
}

/// A proxy's endpoints: the configured ones and those found by DNS SRV.
async fn proxy_endpoints(spec: &ProxySpec) -> anyhow::Result<Vec<String>> {
    let mut endpoints = spec.endpoints.clone();
    if let Some((domain, server)) = &spec.srv {
        let found = gatewayd::srv::client_endpoints(domain, *server).await?;
        tracing::info!(%domain, endpoints = ?found, "discovered endpoints by DNS SRV");
        endpoints.extend(found);
    }
    Ok(endpoints)
}

/// L7 proxy mode: the gRPC API served here, requests sent on to a remote
/// cluster.
async fn run_l7_proxy(
    cfg: Resolved,
    spec: ProxySpec,
    mut inherited: Vec<(std::net::SocketAddr, std::net::TcpListener)>,
) -> anyhow::Result<()> {
    let endpoints = proxy_endpoints(&spec).await?;
    tracing::info!(?endpoints, namespace = %spec.namespace, "L7 proxy");
    let router = gatewayd::proxy_l7::routes(gatewayd::proxy_l7::L7Settings {
        endpoints,
        namespace: spec.namespace,
        request_timeout: cfg.request_timeout,
        max_request_bytes: cfg.max_request_bytes + GRPC_OVERHEAD_BYTES,
    })?
    .layer(axum::middleware::from_fn(gatewayd::metrics::count_grpc));
    let prepared = prepare_servers(
        router,
        gatewayd::grpc_front::GrpcFront::default(),
        &cfg.client,
        &mut inherited,
    )
    .await?;
    common::lifecycle::notify_ready("proxying");
    serve_prepared(prepared, common::lifecycle::shutdown_signal()).await?;
    tracing::info!("gatewayd (proxy) stopped");
    Ok(())
}

/// L4 proxy mode: no local member, connections forwarded to a remote one.
async fn run_l4_proxy(
    cfg: Resolved,
    spec: ProxySpec,
    mut inherited: Vec<(std::net::SocketAddr, std::net::TcpListener)>,
) -> anyhow::Result<()> {
    let endpoints = proxy_endpoints(&spec).await?;
    let retry_delay = spec.retry_delay;
    let mut listeners = Vec::new();
    for (addr, _) in &cfg.client.listen {
        listeners.push((*addr, listen(&mut inherited, *addr).await?));
    }
    common::lifecycle::notify_ready("proxying");
    let proxy = gatewayd::proxy_l4::L4Proxy::new(endpoints, retry_delay);
    proxy
        .serve(listeners, common::lifecycle::shutdown_signal())
        .await;
    tracing::info!("gatewayd (proxy) stopped");
    Ok(())
}

async fn run(
    member: Member,
    cfg: Resolved,
    mut inherited: Vec<(std::net::SocketAddr, std::net::TcpListener)>,
) -> anyhow::Result<()> {
    let _claim = common::lifecycle::claim_data_dir(&member, "gatewayd")?;
    let backend = Arc::new(Backend::new(
        common::uds::channel(&member.raftd_socket()),
        common::uds::channel(&member.storaged_socket()),
        Settings {
            cluster_id: member.cluster_id,
            member_id: member.member_id,
            request_timeout: cfg.request_timeout,
            max_request_bytes: cfg.max_request_bytes,
            quota_bytes: cfg.quota_backend_bytes,
            tokens: cfg.tokens,
        },
    ));
    let max_recv = cfg.max_request_bytes + GRPC_OVERHEAD_BYTES;
    let hub = WatchHub::spawn(backend.storage_client());
    let recipes = || Recipes {
        backend: backend.clone(),
        hub: hub.clone(),
        who: Default::default(),
    };
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    tokio::spawn(gatewayd::probes::follow_grpc_health(
        backend.clone(),
        health_reporter,
    ));
    // One instance of each service, served by gRPC and the JSON gateway.
    let services = Arc::new(gatewayd::json_gateway::Services {
        kv: Arc::new(KvService::new(backend.clone(), cfg.max_txn_ops)),
        watch: Arc::new(WatchService::new(
            backend.clone(),
            hub.clone(),
            // etcd fragments watch responses above the request limit plus
            // the same gRPC overhead allowance.
            cfg.max_request_bytes + GRPC_OVERHEAD_BYTES,
            cfg.watch_progress_interval,
        )),
        lease: Arc::new(LeaseService::new(backend.clone(), hub.clone())),
        cluster: Arc::new(ClusterService::new(backend.clone())),
        maintenance: Arc::new(MaintenanceService::new(
            backend.clone(),
            cfg.version.clone(),
        )),
        auth: Arc::new(AuthService::new(backend.clone(), cfg.bcrypt_cost)),
        lock: Arc::new(LockService::new(recipes())),
        election: Arc::new(ElectionService::new(recipes())),
    });
    let s = &services;
    let grpc = gatewayd::grpc_front::GrpcFront::new(backend.clone())
        .serve(health_service)
        .serve(KvServer::from_arc(s.kv.clone()).max_decoding_message_size(max_recv))
        .serve(WatchServer::from_arc(s.watch.clone()).max_decoding_message_size(max_recv))
        .serve(LeaseServer::from_arc(s.lease.clone()).max_decoding_message_size(max_recv))
        .serve(LockServer::from_arc(s.lock.clone()))
        .serve(ElectionServer::from_arc(s.election.clone()))
        .serve(ClusterServer::from_arc(s.cluster.clone()))
        .serve(AuthServer::from_arc(s.auth.clone()))
        .serve(
            MaintenanceServer::from_arc(s.maintenance.clone()).max_decoding_message_size(max_recv),
        );
    let router = gatewayd::http::routes(backend.clone(), cfg.version.clone())
        .merge(gatewayd::json_gateway::routes(services.clone()));

    let shutdown = common::lifecycle::shutdown_signal();
    let prepared = prepare_servers(router, grpc, &cfg.client, &mut inherited).await?;
    for addr in &cfg.metrics_listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| Unstartable::new(format!("cannot serve metrics on {addr}: {e}")))?;
        let routes = gatewayd::http::metrics_routes(backend.clone());
        tokio::spawn(async move { axum::serve(listener, routes).await });
        tracing::info!(%addr, "serving metrics");
    }
    common::lifecycle::notify_ready("serving");
    tokio::spawn({
        let (backend, name, urls) = (backend.clone(), member.name.clone(), cfg.advertise.clone());
        async move { backend.publish(name, urls).await }
    });
    // Why gatewayd stops, when it is not asked to.
    let failure: Arc<std::sync::Mutex<Option<String>>> = Arc::default();
    let stop = {
        let (backend, failure) = (backend.clone(), failure.clone());
        async move {
            let why = tokio::select! {
                _ = shutdown => None,
                e = backend.incompatible_peer() => Some(e.to_string()),
                // Like a removed etcd member, stop serving: clients go elsewhere.
                _ = backend.removed() => Some("the member has been permanently removed from the cluster".to_string()),
            };
            common::lifecycle::notify_stopping();
            if let Ok(mut slot) = failure.lock() {
                *slot = why;
            }
        }
    };
    serve_prepared(prepared, stop).await?;
    tracing::info!("gatewayd stopped");
    match failure.lock().ok().and_then(|mut f| f.take()) {
        Some(why) => Err(anyhow::anyhow!(why)),
        None => Ok(()),
    }
}
