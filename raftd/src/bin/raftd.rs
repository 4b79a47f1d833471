//! raftd's entry point: config, the raft log, the openraft node (bootstrapped
//! from --initial-cluster on first start), and the local Unix-socket server.

/// mimalloc rather than glibc's malloc: every request allocates and frees
/// many small buffers (HTTP/2 frames, protobuf messages, futures).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use common::lifecycle::Unstartable;
use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use openraft::storage::RaftLogStorage;

use serde::{Deserialize, Serialize};

use common::config::Member;
use common::proto::peer::raft_peer_server::RaftPeerServer;
use common::proto::raft::raft_local_server::RaftLocalServer;
use common::proto::storage::storage_client::StorageClient;
use raftd::lessor::Lessor;
use raftd::local_server::RaftLocalService;
use raftd::log_store::LogStore;
use raftd::members::Members;
use raftd::network::Peers;
use raftd::peer_auth::PeerAuth;
use raftd::peer_server::RaftPeerService;
use raftd::route::Router;
use raftd::state_machine::StateMachine;
use raftd::types::MemberNode;
use raftd::types::Raft;

/// raftd's own options (`[raftd]`), with etcd's flag names.
#[derive(clap::Args, Serialize, Deserialize, Debug, Clone, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RaftdOpts {
    /// URL to serve this daemon's metrics on (GET /metrics), e.g.
    /// http://127.0.0.1:9101; gatewayd's /metrics shows them too.
    #[arg(long, env = "TRIAD_RAFTD_METRICS_URL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    metrics_url: Option<String>,
    /// Time (in milliseconds) of a heartbeat interval.
    #[arg(long, env = "TRIAD_HEARTBEAT_INTERVAL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    heartbeat_interval: Option<u64>,
    /// Time (in milliseconds) for an election to timeout.
    #[arg(long, env = "TRIAD_ELECTION_TIMEOUT")]
    #[serde(skip_serializing_if = "Option::is_none")]
    election_timeout: Option<u64>,
    /// Interval of lease TTL checkpoints through raft (etcd's
    /// --experimental-lease-checkpoint-interval), e.g. 5m.
    #[arg(long, env = "TRIAD_LEASE_CHECKPOINT_INTERVAL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    lease_checkpoint_interval: Option<String>,
    /// URLs to listen on for peer traffic.
    #[arg(long, env = "TRIAD_LISTEN_PEER_URLS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    listen_peer_urls: Option<String>,
    /// Network namespace (a path such as /run/netns/NAME) to serve and
    /// dial peers in, as systemd's NetworkNamespacePath= would put the
    /// whole daemon; its Unix sockets to storaged and gatewayd still work.
    #[arg(long, env = "TRIAD_PEER_NETNS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    peer_netns: Option<std::path::PathBuf>,
    /// Path to the peer server TLS cert file.
    #[arg(long, env = "TRIAD_PEER_CERT_FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    peer_cert_file: Option<std::path::PathBuf>,
    /// Path to the peer server TLS key file.
    #[arg(long, env = "TRIAD_PEER_KEY_FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    peer_key_file: Option<std::path::PathBuf>,
    /// Path to the peer server TLS trusted CA file.
    #[arg(long, env = "TRIAD_PEER_TRUSTED_CA_FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    peer_trusted_ca_file: Option<std::path::PathBuf>,
    /// Enable peer client cert authentication: a peer's certificate must
    /// also name the host of one of its member's peer URLs.
    #[arg(long, env = "TRIAD_PEER_CLIENT_CERT_AUTH", num_args = 0..=1, default_missing_value = "true")]
    #[serde(skip_serializing_if = "Option::is_none")]
    peer_client_cert_auth: Option<bool>,
    /// Path to the peer certificate revocation list file.
    #[arg(long, env = "TRIAD_PEER_CRL_FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    peer_crl_file: Option<std::path::PathBuf>,
    /// Allowed CN of peer certificates (others are refused).
    #[arg(long, env = "TRIAD_PEER_CERT_ALLOWED_CN")]
    #[serde(skip_serializing_if = "Option::is_none")]
    peer_cert_allowed_cn: Option<String>,
    /// Allowed hostname (a name or address) peer certificates must be
    /// valid for.
    #[arg(long, env = "TRIAD_PEER_CERT_ALLOWED_HOSTNAME")]
    #[serde(skip_serializing_if = "Option::is_none")]
    peer_cert_allowed_hostname: Option<String>,
    /// Initial cluster state ('new' or 'existing').
    #[arg(long, env = "TRIAD_INITIAL_CLUSTER_STATE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    initial_cluster_state: Option<String>,
    /// Number of committed transactions to trigger a snapshot to disk.
    #[arg(long, env = "TRIAD_SNAPSHOT_COUNT")]
    #[serde(skip_serializing_if = "Option::is_none")]
    snapshot_count: Option<u64>,
    /// Entries kept in the log after a snapshot, for slow followers to
    /// catch up from (etcd's --experimental-snapshot-catchup-entries).
    #[arg(long, env = "TRIAD_SNAPSHOT_CATCHUP_ENTRIES")]
    #[serde(skip_serializing_if = "Option::is_none")]
    snapshot_catchup_entries: Option<u64>,
    /// Interpret 'auto-compaction-retention' one of: periodic|revision.
    #[arg(long, env = "TRIAD_AUTO_COMPACTION_MODE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    auto_compaction_mode: Option<String>,
    /// Auto compaction retention for mvcc key value store. 0 means disable
    /// auto compaction (a bare number is hours in periodic mode).
    #[arg(long, env = "TRIAD_AUTO_COMPACTION_RETENTION")]
    #[serde(skip_serializing_if = "Option::is_none")]
    auto_compaction_retention: Option<String>,
    /// Check data corruption before serving (compare HashKV with peers).
    #[arg(long, env = "TRIAD_EXPERIMENTAL_INITIAL_CORRUPT_CHECK", num_args = 0..=1, default_missing_value = "true")]
    #[serde(skip_serializing_if = "Option::is_none")]
    experimental_initial_corrupt_check: Option<bool>,
    /// Duration of time between cluster corruption check passes (0: off).
    #[arg(long, env = "TRIAD_EXPERIMENTAL_CORRUPT_CHECK_TIME")]
    #[serde(skip_serializing_if = "Option::is_none")]
    experimental_corrupt_check_time: Option<String>,
    /// Enable the raft Pre-Vote algorithm to prevent disruption when a
    /// node that has been partitioned away rejoins the cluster (default on).
    #[arg(long, env = "TRIAD_PRE_VOTE", num_args = 0..=1, default_missing_value = "true")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pre_vote: Option<bool>,
    /// Force to create a new one-member cluster from this member's data.
    #[arg(long, env = "TRIAD_FORCE_NEW_CLUSTER", num_args = 0..=1, default_missing_value = "true")]
    #[serde(skip_serializing_if = "Option::is_none")]
    force_new_cluster: Option<bool>,
    /// Reject reconfiguration requests that would cause quorum loss.
    #[arg(long, env = "TRIAD_STRICT_RECONFIG_CHECK", num_args = 0..=1, default_missing_value = "true")]
    #[serde(skip_serializing_if = "Option::is_none")]
    strict_reconfig_check: Option<bool>,
}

impl RaftdOpts {
    fn peer_tls(&self, member: &Member) -> common::tls::TlsFiles {
        common::tls::TlsFiles {
            cert: self.peer_cert_file.clone(),
            key: self.peer_key_file.clone(),
            trusted_ca: self.peer_trusted_ca_file.clone(),
            client_cert_auth: self.peer_client_cert_auth.unwrap_or(false),
            crl: self.peer_crl_file.clone(),
            cipher_suites: member.cipher_suites.clone(),
            allowed_cn: self.peer_cert_allowed_cn.clone(),
            allowed_hostname: self.peer_cert_allowed_hostname.clone(),
        }
    }

    fn peer_cert_policy(&self) -> raftd::peer_auth::CertPolicy {
        raftd::peer_auth::CertPolicy {
            required: self.peer_client_cert_auth.unwrap_or(false),
        }
    }

    fn joining(&self) -> bool {
        self.initial_cluster_state.as_deref() == Some("existing")
    }
}

fn main() -> ExitCode {
    let loaded = common::config::from_command_line("raftd", "triad's consensus daemon (openraft)")
        .map_err(|e| e.to_string())
        .and_then(|(m, o)| check(&m, &o).map(|()| (m, o)).map_err(|e| e.to_string()));
    let (member, opts) = match loaded {
        Ok(c) => c,
        Err(e) => return common::lifecycle::config_error("raftd", e),
    };
    if let Some(ns) = &opts.peer_netns {
        if let Err(e) = common::lifecycle::enter_network_namespace(ns) {
            return common::lifecycle::config_error("raftd", e);
        }
    }
    // One thread by default: every request is a short hop between sockets,
    // and on a small machine cross-thread wake-ups cost more than a second
    // thread gains (see BENCHMARKS.md).
    let runtime = member.runtime(1);
    common::lifecycle::run_daemon("raftd", &runtime, run(member, opts))
}

fn check(member: &Member, opts: &RaftdOpts) -> anyhow::Result<()> {
    let hb = opts.heartbeat_interval.unwrap_or(100);
    let el = opts.election_timeout.unwrap_or(1000);
    if hb == 0 || el < hb.saturating_mul(5) {
        anyhow::bail!("--election-timeout[{el}ms] should be at least as 5 times as --heartbeat-interval[{hb}ms]");
    }
    // etcd's bound, which also keeps the timer arithmetic far from overflow.
    if el >= 50_000 {
        anyhow::bail!(
            "--election-timeout[{el}ms] is too long, and should be set less than 50000ms"
        );
    }
    match opts.initial_cluster_state.as_deref() {
        None | Some("new") | Some("existing") => {}
        Some(other) => anyhow::bail!(
            "invalid value \"{other}\" for flag -initial-cluster-state: valid values are \"new\" or \"existing\""
        ),
    }
    raftd::auto_compact::parse(
        opts.auto_compaction_mode.as_deref(),
        opts.auto_compaction_retention.as_deref(),
    )?;
    if let Some(t) = &opts.experimental_corrupt_check_time {
        common::config::parse_duration(t)?;
    }
    if opts.snapshot_count == Some(0) {
        anyhow::bail!("--snapshot-count must be at least 1");
    }
    if opts.joining() && member.initial_cluster.len() < 2 {
        anyhow::bail!(
            "--initial-cluster-state existing needs the other members in --initial-cluster"
        );
    }
    if let Some(i) = &opts.lease_checkpoint_interval {
        if common::config::parse_duration(i)?.is_zero() {
            anyhow::bail!("--lease-checkpoint-interval must be positive");
        }
    }
    if let Some(urls) = &opts.listen_peer_urls {
        common::config::parse_urls(urls, "listen-peer-urls")?;
    }
    let tls = opts.peer_tls(member);
    tls.check("peer-")?;
    tls.acceptor()?;
    let listen = opts
        .listen_peer_urls
        .clone()
        .unwrap_or_else(|| member.peer_urls.join(","));
    if listen.contains("https://") && !tls.enabled() {
        anyhow::bail!(
            "TLS key/cert (--peer-cert-file, --peer-key-file) must be provided for https peer URLs"
        );
    }
    Ok(())
}

/// The membership storaged applied last (waits for storaged to answer).
async fn storaged_membership(member: &Member) -> anyhow::Result<Option<raftd::types::Membership>> {
    let mut storage = StorageClient::new(common::uds::channel(&member.storaged_socket()));
    loop {
        match storage
            .status(common::proto::storage::StatusRequest {})
            .await
        {
            Ok(s) if s.get_ref().membership.is_empty() => return Ok(None),
            Ok(s) => return Ok(Some(serde_json::from_slice(&s.get_ref().membership)?)),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

async fn run(member: Member, opts: RaftdOpts) -> anyhow::Result<()> {
    let _claim = common::lifecycle::claim_data_dir(&member, "raftd")?;
    let dir = member.data_dir.join("raftd");
    std::fs::create_dir_all(&dir)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
    let notice = raftd::apply_notice::ApplyNotice::default();
    let log = LogStore::open(&dir)
        .map_err(|e| anyhow::anyhow!("cannot open raft log in {}: {e}", dir.display()))?
        .with_apply_notice(notice.clone());

    let hb = opts.heartbeat_interval.unwrap_or(100);
    let el = opts.election_timeout.unwrap_or(1000);
    let snapshot_count = opts.snapshot_count.unwrap_or(100_000);
    let catchup_entries = opts.snapshot_catchup_entries.unwrap_or(5000);
    let config = openraft::Config {
        cluster_name: format!("{:x}", member.cluster_id),
        heartbeat_interval: hb,
        election_timeout_min: el,
        election_timeout_max: el * 2,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(snapshot_count),
        max_in_snapshot_log_to_keep: catchup_entries,
        enable_pre_vote: Some(opts.pre_vote.unwrap_or(true)),
        // A restarted leader must win an election (and commit a blank entry
        // of its term) before it answers read indexes: the committed index
        // is persisted lazily, so a leader restored at once could take a
        // committed index older than what followers already served
        // (a stale linearizable read; seen in kill9_everything_on_the_leader).
        enable_leader_restore: Some(false),
        ..Default::default()
    };
    let config = Arc::new(config.validate()?);

    let peer_tls = opts.peer_tls(&member);
    raftd::network::set_peer_tls(peer_tls.client()?);
    let peer_server_tls = peer_tls.acceptor()?;

    // Who this member is: settled on first start and kept (a joining member
    // learns its IDs from the cluster).
    let (member_id, cluster_id) = match log.identity()? {
        Some(ids) => ids,
        None => {
            let ids = if opts.joining() {
                tracing::info!("joining an existing cluster; asking its members");
                raftd::join::discover(&member, Duration::from_secs(60)).await?
            } else {
                (member.member_id, member.cluster_id)
            };
            log.save_identity(ids)?;
            ids
        }
    };
    let initialized_before = log.clone().get_log_state().await?.last_log_id.is_some();
    if opts.force_new_cluster.unwrap_or(false) && initialized_before {
        let applied = storaged_membership(&member).await?;
        raftd::force::force_new_cluster(&mut log.clone(), member_id, applied).await?;
    }

    let peer_auth = PeerAuth::install(cluster_id, member_id, opts.peer_cert_policy());
    let storage = StorageClient::new(common::uds::channel(&member.storaged_socket()))
        .max_decoding_message_size(usize::MAX);
    let storage_check = storage.clone();
    // Whose data this is, before this member serves anything.
    raftd::belonging::claim_storaged(&storage, cluster_id, member_id)
        .await
        .map_err(Unstartable::new)?;
    // A restarted member proves itself to its peers from the start.
    peer_auth.recall(&storage).await;
    if initialized_before {
        let (membership, applied) = raftd::belonging::applied_state(&storage).await?;
        raftd::belonging::check_peers(&member, membership.as_ref(), cluster_id, member_id, applied)
            .await
            .map_err(Unstartable::new)?;
    }
    let db_size = Arc::new(std::sync::atomic::AtomicI64::new(0));
    let sm = StateMachine::new(storage, log.reader(), db_size.clone(), notice);
    tracing::info!("waiting for storaged's applied state");
    let removal = Arc::new(raftd::removal::Removal::default());
    let peers = Peers {
        cluster_id,
        member_id,
        storage: storage_check.clone(),
        removal: removal.clone(),
    };
    let raft = Raft::new(member_id, config, peers, log, sm).await?;

    if !opts.joining() && !initialized_before && !raft.is_initialized().await? {
        let mut members = BTreeMap::new();
        for (name, urls) in &member.initial_cluster {
            let id = common::ids::member_id(urls, &member.cluster_token);
            members.insert(
                id,
                MemberNode {
                    name: name.clone(),
                    peer_urls: urls.clone(),
                    client_urls: Vec::new(),
                },
            );
        }
        tracing::info!(?members, "bootstrapping a new cluster");
        raft.initialize(members).await?;
    }

    // etcd's minimum lease TTL: 1.5 election timeouts, in whole seconds up.
    let min_ttl_ms = (3 * (el / hb)) / 2 * hb;
    let checkpoint = opts.lease_checkpoint_interval.as_deref().unwrap_or("5m");
    let lessor = Arc::new(Lessor::new(
        raft.clone(),
        storage_check.clone(),
        min_ttl_ms.div_ceil(1000) as i64,
        common::config::parse_duration(checkpoint)?,
    ));
    tokio::spawn({
        let lessor = lessor.clone();
        async move { lessor.run().await }
    });
    if let Some(retention) = raftd::auto_compact::parse(
        opts.auto_compaction_mode.as_deref(),
        opts.auto_compaction_retention.as_deref(),
    )? {
        tokio::spawn(raftd::auto_compact::run(
            raft.clone(),
            storage_check.clone(),
            retention,
        ));
    }
    if opts.experimental_initial_corrupt_check.unwrap_or(false) {
        raftd::corruption::initial_check(&raft, &storage_check, member_id)
            .await
            .map_err(Unstartable::new)?;
    }
    if let Some(t) = &opts.experimental_corrupt_check_time {
        let every = common::config::parse_duration(t)?;
        if !every.is_zero() {
            tokio::spawn(raftd::corruption::run(
                raft.clone(),
                storage_check.clone(),
                member_id,
                every,
            ));
        }
    }
    let router = Arc::new(Router::new(
        raft.clone(),
        member_id,
        Duration::from_millis(el * 3),
    ));
    let members = Arc::new(Members::new(
        raft.clone(),
        Duration::from_secs(5),
        opts.strict_reconfig_check.unwrap_or(true),
    ));
    tokio::spawn(
        peer_auth
            .clone()
            .learn_secret(storage_check.clone(), raft.clone()),
    );
    let local = RaftLocalService::new(
        router,
        lessor,
        members,
        cluster_id,
        db_size,
        initialized_before,
        removal.clone(),
    )
    .with_limits(raftd::local_server::Limits {
        max_request_bytes: member.max_request_bytes,
        max_txn_ops: member.max_txn_ops,
    });
    let local = Arc::new(local);

    // Peers: raft messages, and forwarded client work.
    let peer_urls = match &opts.listen_peer_urls {
        Some(urls) => common::config::parse_urls(urls, "listen-peer-urls")?,
        None => member.peer_urls.clone(),
    };
    for url in &peer_urls {
        let addr = common::config::listen_addr(url)?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| Unstartable::new(format!("cannot listen on {url}: {e}")))?;
        tracing::info!(%url, "listening for peers");
        let peer = RaftPeerService::new(
            raft.clone(),
            cluster_id,
            member_id,
            storage_check.clone(),
            removal.clone(),
            peer_auth.clone(),
        );
        let builder = tonic::transport::Server::builder();
        let tls = match (url.starts_with("https://"), &peer_server_tls) {
            (true, Some(tls)) => Some(tls.clone()),
            _ => None,
        };
        tracing::info!(%url, tls = url.starts_with("https://"), "serving peers");
        // Nothing arriving over TCP is trusted: forwarded client work is
        // admitted by peer_auth before its body is read (an interceptor
        // runs on the headers), and every message is bounded.
        let limits = raftd::peer_auth::message_limits(member.max_request_bytes);
        let admit = {
            let (auth, raft) = (peer_auth.clone(), raft.clone());
            move |mut req: tonic::Request<()>| {
                let from = auth.admit_forwarded(&req, &raft)?;
                req.extensions_mut()
                    .insert(raftd::peer_auth::PeerCaller(from));
                common::proto::mark_forwarded(&mut req);
                Ok(req)
            }
        };
        let forwarded =
            RaftLocalServer::from_arc(local.clone()).max_decoding_message_size(limits.forwarded);
        let router = builder
            .tcp_nodelay(true)
            .add_service(RaftPeerServer::new(peer).max_decoding_message_size(limits.raft))
            .add_service(tonic::service::interceptor::InterceptedService::new(
                forwarded, admit,
            ));
        let incoming = common::tcp::nodelay_batched_connections(listener);
        tokio::spawn(async move {
            let served = match tls {
                Some(tls) => {
                    let incoming = common::tls::accept(incoming, tls);
                    router.serve_with_incoming(incoming).await
                }
                None => router.serve_with_incoming(incoming).await,
            };
            if let Err(e) = served {
                tracing::error!(error = %e, "peer server failed");
            }
        });
    }

    let socket = member.raftd_socket();
    let listener = common::uds::bind(&socket, member.socket_group_access)
        .map_err(|e| Unstartable::new(format!("cannot bind {}: {e}", socket.display())))?;
    tracing::info!(socket = %socket.display(), member = format!("{member_id:x}"), "raftd serving");
    let shutdown = common::lifecycle::shutdown_signal();
    // Stop serving (and fail) if storaged speaks another protocol version.
    let incompatible = Arc::new(std::sync::Mutex::new(None));
    let stop = {
        let (incompatible, storage) = (incompatible.clone(), storage_check);
        let raft = raft.clone();
        async move {
            let failure = tokio::select! {
                _ = shutdown => None,
                e = common::proto::first_incompatible(|| common::proto::storaged_compatible(&storage)) => Some(e.to_string()),
                // openraft stops for good on a storage error (a full disk,
                // say): exit, so the supervisor starts raftd again and it
                // recovers from its log once the cause is gone.
                fatal = raftd::fatal(&raft) => Some(format!("raft stopped: {fatal}")),
            };
            if let (Some(e), Ok(mut slot)) = (failure, incompatible.lock()) {
                *slot = Some(e);
            }
        }
    };
    tokio::spawn(raftd::metrics::follow(raft.clone(), member_id));
    tokio::spawn(removal.clone().follow(raft.clone()));
    tokio::spawn(raftd::metrics::probe_peers(raft.clone(), member_id));
    common::metrics::serve_url(opts.metrics_url.as_deref(), raftd::metrics::render)
        .await
        .map_err(Unstartable::new)?;
    common::lifecycle::notify_ready("serving");
    let service = RaftLocalServer::from_arc(local).max_decoding_message_size(usize::MAX);
    let incoming = common::uds::incoming(listener);
    common::lifecycle::serve_with_bounded_stop(
        |drain| {
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(incoming, drain.wait())
        },
        stop,
    )
    .await?;
    common::lifecycle::notify_stopping();
    let _ = raft.shutdown().await;
    let _ = std::fs::remove_file(&socket);
    tracing::info!("raftd stopped");
    match incompatible.lock().ok().and_then(|mut e| e.take()) {
        Some(e) => Err(anyhow::anyhow!(e)),
        None => Ok(()),
    }
}
