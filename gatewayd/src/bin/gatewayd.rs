//! gatewayd's entry point: config, links to raftd and storaged, and the
//! client listeners (etcd gRPC + HTTP on every --listen-client-urls).

/// mimalloc rather than glibc's malloc: every request allocates and frees
/// many small buffers (HTTP/2 frames, protobuf messages, futures).
#[global_allocator]
static ALLOC: common::heap_profile::Sampling<mimalloc::MiMalloc> =
    common::heap_profile::Sampling(mimalloc::MiMalloc);

use common::lifecycle::Unstartable;
use std::process::ExitCode;
use std::sync::Arc;

use common::config::Member;
use common::proto::etcdserverpb::auth_server::AuthServer;
use common::proto::etcdserverpb::cluster_server::ClusterServer;
use common::proto::etcdserverpb::kv_server::KvServer;
use common::proto::etcdserverpb::lease_server::LeaseServer;
use common::proto::etcdserverpb::maintenance_server::MaintenanceServer;
use common::proto::etcdserverpb::watch_server::WatchServer;
use common::proto::v3electionpb::election_server::ElectionServer;
use common::proto::v3lockpb::lock_server::LockServer;
use gatewayd::api::auth::AuthService;
use gatewayd::api::cluster::ClusterService;
use gatewayd::api::concurrency::Recipes;
use gatewayd::api::election::ElectionService;
use gatewayd::api::kv::KvService;
use gatewayd::api::lease::LeaseService;
use gatewayd::api::lock::LockService;
use gatewayd::api::maintenance::MaintenanceService;
use gatewayd::api::watch::WatchService;
use gatewayd::backend::{Backend, Settings};
use gatewayd::watch_hub::WatchHub;

use gatewayd::config::{
    resolve, GatewaydOpts, Listening, ProxySpec, Resolved, GRPC_OVERHEAD_BYTES,
};

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
    if member.check_only {
        return common::lifecycle::check_member("gatewayd", &member);
    }
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
    let http = router.layer(axum::middleware::from_fn_with_state(
        Arc::new(cfg.access.clone()),
        gatewayd::access::check,
    ));
    // With HTTP addresses of their own, the client URLs serve gRPC alone.
    let grpc_alone = !cfg.http_only.is_empty();
    let (interval, timeout) = cfg.keepalive;
    let mut prepared = Vec::new();
    let all = cfg
        .listen
        .iter()
        .map(|l| (l, false))
        .chain(cfg.http_only.iter().map(|l| (l, true)));
    for ((addr, https), http_alone) in all {
        let listener = listen(inherited, *addr, cfg.reuse_port).await?;
        let tls = match (*https, &server_tls) {
            (true, Some(tls)) => Some(tls.clone()),
            _ => None,
        };
        let base = common::tcp::server()
            .accept_http1(!grpc_alone || http_alone)
            .max_concurrent_streams(Some(cfg.max_concurrent_streams))
            .http2_keepalive_interval(Some(interval))
            .http2_keepalive_timeout(Some(timeout));
        // An empty front sends every request to the HTTP routes.
        let (front, routes, serves) = match (http_alone, grpc_alone) {
            (true, _) => (
                gatewayd::grpc_front::GrpcFront::default(),
                http.clone(),
                "http",
            ),
            (false, true) => (grpc.clone(), axum::Router::new(), "grpc"),
            (false, false) => (grpc.clone(), http.clone(), "grpc+http"),
        };
        let server = base
            .layer(front)
            .add_routes(tonic::service::Routes::from(routes));
        prepared.push((server, listener, tls));
        tracing::info!(%addr, tls = *https, serves, "gatewayd serving clients");
    }
    Ok(prepared)
}

/// Serve until `stop`: in-flight requests finish; long-lived client
/// streams (watches, keepalives, observers) are dropped after the bounded
/// drain.
async fn serve_prepared(
    prepared: Vec<Prepared>,
    ping_min_time: std::time::Duration,
    stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    common::lifecycle::serve_with_bounded_stop(
        |drain| {
            let servers: Vec<_> = prepared
                .into_iter()
                .map(|(server, listener, tls)| {
                    use common::h2_authority::AuthorityRepair;
                    use futures::StreamExt;
                    let incoming = common::tcp::nodelay_batched_connections(listener);
                    let stop = drain.clone().wait();
                    match tls {
                        Some(tls) => tokio::spawn(server.serve_with_incoming_shutdown(
                            common::tls::accept(incoming, tls).map(move |conn| {
                                conn.map(|io| {
                                    AuthorityRepair::new(io).with_ping_min_time(ping_min_time)
                                })
                            }),
                            stop,
                        )),
                        None => tokio::spawn(server.serve_with_incoming_shutdown(
                            incoming.map(move |conn| {
                                conn.map(|io| {
                                    AuthorityRepair::new(io).with_ping_min_time(ping_min_time)
                                })
                            }),
                            stop,
                        )),
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
    reuse_port: bool,
) -> anyhow::Result<tokio::net::TcpListener> {
    match common::activation::take_listener(inherited, addr) {
        Some(l) => l
            .set_nonblocking(true)
            .and_then(|()| tokio::net::TcpListener::from_std(l))
            .map_err(|e| anyhow::anyhow!("socket passed for {addr}: {e}")),
        None => common::tcp::bind(addr, reuse_port)
            .map_err(|e| Unstartable::new(format!("cannot listen on {addr}: {e}")).into()),
    }
}

/// A proxy's endpoints: the configured ones and those found by DNS SRV.
async fn proxy_endpoints(spec: &ProxySpec) -> anyhow::Result<Vec<String>> {
    let mut endpoints = spec.endpoints.clone();
    if let Some((domain, server)) = &spec.srv {
        let found = gatewayd::proxy::srv::client_endpoints(domain, *server).await?;
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
    let router = gatewayd::proxy::l7::routes(gatewayd::proxy::l7::L7Settings {
        endpoints,
        namespace: spec.namespace,
        request_timeout: cfg.request_timeout,
        max_request_bytes: cfg.max_request_bytes + GRPC_OVERHEAD_BYTES,
        upstream_tls: spec.upstream_tls.as_ref().map(|t| t.client()).transpose()?,
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
    serve_prepared(
        prepared,
        cfg.client.ping_min_time,
        common::lifecycle::shutdown_signal(),
    )
    .await?;
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
        listeners.push((
            *addr,
            listen(&mut inherited, *addr, cfg.client.reuse_port).await?,
        ));
    }
    common::lifecycle::notify_ready("proxying");
    let proxy = gatewayd::proxy::l4::L4Proxy::new(endpoints, retry_delay);
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
            probe_timeout: cfg.probe_timeout,
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
    let services = Arc::new(gatewayd::api::json_gateway::Services {
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
    gatewayd::metrics::set_version(&cfg.version);
    gatewayd::metrics::set_extensive(cfg.extensive_metrics);
    let mut router = gatewayd::http::routes(backend.clone(), cfg.version.clone())
        .merge(gatewayd::api::json_gateway::routes(services.clone()))
        .merge(gatewayd::debug_vars::routes(
            gatewayd::debug_vars::Sources {
                backend: backend.clone(),
                raftd_socket: member.raftd_socket(),
                storaged_socket: member.storaged_socket(),
            },
        ));

    if member.enable_pprof {
        router = router.merge(gatewayd::pprof::routes(gatewayd::pprof::Daemons {
            raftd_socket: member.raftd_socket(),
            storaged_socket: member.storaged_socket(),
        }));
    }
    let shutdown = common::lifecycle::shutdown_signal();
    let prepared = prepare_servers(router, grpc, &cfg.client, &mut inherited).await?;
    for addr in &cfg.metrics_listen {
        let listener = common::tcp::bind(*addr, member.socket_reuse_port)
            .map_err(|e| Unstartable::new(format!("cannot serve metrics on {addr}: {e}")))?;
        let routes = gatewayd::http::metrics_routes(backend.clone());
        tokio::spawn(async move { axum::serve(listener, routes).await });
        tracing::info!(%addr, "serving metrics");
    }
    tokio::spawn({
        let backend = backend.clone();
        async move { backend.follow_raftd().await }
    });
    tokio::spawn(gatewayd::version_monitor::run(
        backend.clone(),
        cfg.version.clone(),
    ));
    // Why gatewayd stops, when it is not asked to.
    let failure: Arc<std::sync::Mutex<Option<String>>> = Arc::default();
    let stop = {
        let (backend, failure) = (backend.clone(), failure.clone());
        async move {
            let why = tokio::select! {
                _ = shutdown => None,
                e = backend.incompatible_peer() => Some(e.to_string()),
                // Like a removed etcd member, stop for good: clients go
                // elsewhere.
                _ = backend.removed() => Some(common::lifecycle::RemovedFromCluster::stop().to_string()),
            };
            common::lifecycle::notify_stopping();
            if let Ok(mut slot) = failure.lock() {
                *slot = why;
            }
        }
    };
    // Clients wait (their connections queue on the bound listeners) until
    // this member is published, as etcd's do.
    tokio::pin!(stop);
    let stopped = tokio::select! {
        () = backend.publish_self(&member.name, &cfg.advertise) => false,
        () = &mut stop => true,
    };
    if !stopped {
        common::lifecycle::notify_ready("serving");
        serve_prepared(prepared, cfg.client.ping_min_time, stop).await?;
    }
    tracing::info!("gatewayd stopped");
    match failure.lock().ok().and_then(|mut f| f.take()) {
        Some(why) => Err(anyhow::anyhow!(why)),
        None => Ok(()),
    }
}
