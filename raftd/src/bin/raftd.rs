//! raftd's entry point: config, the raft log, the openraft node (bootstrapped
//! from --initial-cluster on first start), and the local Unix-socket server.

/// mimalloc rather than glibc's malloc: every request allocates and frees
/// many small buffers (HTTP/2 frames, protobuf messages, futures).
#[global_allocator]
static ALLOC: common::heap_profile::Sampling<mimalloc::MiMalloc> =
    common::heap_profile::Sampling(mimalloc::MiMalloc);

use common::discovery::Discovery;
use common::lifecycle::Unstartable;
use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use openraft::storage::RaftLogStorage;

use common::config::Member;
use common::proto::peer::raft_peer_server::RaftPeerServer;
use common::proto::raft::raft_local_server::RaftLocalServer;
use common::proto::storage::storage_client::StorageClient;
use raftd::config::{Config, RaftdOpts};
use raftd::lessor::Lessor;
use raftd::local_server::RaftLocalService;
use raftd::log_store::LogStore;
use raftd::members::Members;
use raftd::peer_auth::PeerAuth;
use raftd::peer_client::Peers;
use raftd::peer_server::RaftPeerService;
use raftd::route::Router;
use raftd::state_machine::StateMachine;
use raftd::types::MemberNode;
use raftd::Raft;

/// How long a removed raftd keeps answering its gatewayd before it stops.
const REMOVED_LINGER: Duration = Duration::from_secs(3);

fn main() -> ExitCode {
    let loaded = common::config::from_command_line("raftd", "triad's consensus daemon (openraft)")
        .map_err(|e| e.to_string())
        .and_then(|(m, o): (Member, RaftdOpts)| {
            let config = Config::resolve(&m, &o).map_err(|e| e.to_string())?;
            Ok((m, config))
        });
    let (member, config) = match loaded {
        Ok(c) => c,
        Err(e) => return common::lifecycle::config_error("raftd", e),
    };
    if let Some(ns) = &config.peer_netns {
        if let Err(e) = common::lifecycle::enter_network_namespace(ns) {
            return common::lifecycle::config_error("raftd", e);
        }
    }
    if member.check_only {
        if let Some(wal) = &config.wal_dir {
            if let Err(e) = common::member_dir::check_writable(wal) {
                return common::lifecycle::config_error("raftd", e);
            }
        }
        return common::lifecycle::check_member("raftd", &member);
    }
    // One thread by default: every request is a short hop between sockets,
    // and on a small machine cross-thread wake-ups cost more than a second
    // thread gains (see BENCHMARKS.md).
    let runtime = member.runtime(1);
    common::lifecycle::run_daemon("raftd", &runtime, run(member, config))
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

async fn run(member: Member, cfg: Config) -> anyhow::Result<()> {
    let _claim = common::lifecycle::claim_data_dir(&member, "raftd")?;
    let dir = member.data_dir.join("raftd");
    std::fs::create_dir_all(&dir)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
    let notice = raftd::apply_notice::ApplyNotice::default();
    if let Some(wal) = &cfg.wal_dir {
        common::member_dir::create_private(wal)
            .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", wal.display()))?;
    }
    let log = LogStore::open_in(&dir, cfg.wal_dir.as_deref())
        .map_err(|e| anyhow::anyhow!("cannot open raft log in {}: {e}", dir.display()))?
        .with_apply_notice(notice.clone());

    let (hb, el) = (cfg.heartbeat_interval_ms, cfg.election_timeout_ms);
    let (election_timeout_min, election_timeout_max) = cfg.raft_election_timeouts();
    let config = openraft::Config {
        cluster_name: format!("{:x}", member.cluster_id),
        heartbeat_interval: hb,
        election_timeout_min,
        election_timeout_max,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(cfg.snapshot_count),
        max_in_snapshot_log_to_keep: cfg.snapshot_catchup_entries,
        enable_pre_vote: Some(cfg.pre_vote),
        // A restarted leader must win an election (and commit a blank entry
        // of its term) before it answers read indexes: the committed index
        // is persisted lazily, so a leader restored at once could take a
        // committed index older than what followers already served
        // (a stale linearizable read; seen in kill9_everything_on_the_leader).
        enable_leader_restore: Some(false),
        ..Default::default()
    };
    let config = Arc::new(config.validate()?);

    if cfg.peer_auto_tls {
        raftd::peer_client::set_unverified_peer_tls(cfg.peer_tls.unverified_client()?);
    } else {
        raftd::peer_client::set_peer_tls(cfg.peer_tls.client()?);
    }
    let peer_server_tls = cfg.peer_tls.acceptor()?;

    let initialized_before = log.clone().get_log_state().await?.last_log_id.is_some();
    // With discovery, a member that never started learns its initial
    // cluster from the discovery service (again after a stop before its
    // first entry: its registration stands).
    let member = match &member.discovery {
        Some(_) if initialized_before => {
            tracing::warn!(
                "discovery token is ignored since cluster already initialized; valid logs are found"
            );
            member
        }
        Some(d) if !cfg.joining => {
            let found = match d {
                Discovery::V2(v2) => raftd::discovery_v2::join_cluster(&member, v2).await,
                Discovery::V3(v3) => raftd::discovery::join_cluster(&member, v3).await,
            };
            let cluster = found.map_err(|e| {
                if matches!(e, raftd::discovery::DiscoveryError::FullCluster) {
                    tracing::error!("failed to bootstrap; discovery token was already used");
                    tracing::error!(
                        "do not reuse discovery token; generate a new one to bootstrap a cluster"
                    );
                }
                Unstartable::new(format!("failed to join discovery cluster ({e})"))
            })?;
            member.with_initial_cluster(cluster)
        }
        _ => member,
    };
    // Who this member is: settled on first start and kept (a joining member
    // learns its IDs from the cluster).
    let (member_id, cluster_id) = match log.identity()? {
        Some(ids) => ids,
        None => {
            let ids = if cfg.joining {
                tracing::info!("joining an existing cluster; asking its members");
                raftd::join::discover(&member, Duration::from_secs(60)).await?
            } else {
                (member.member_id, member.cluster_id)
            };
            log.save_identity(ids)?;
            ids
        }
    };
    if cfg.force_new_cluster && initialized_before {
        let applied = storaged_membership(&member).await?;
        raftd::force::force_new_cluster(&mut log.clone(), member_id, applied).await?;
    }

    let peer_auth = PeerAuth::install(cluster_id, member_id, cfg.peer_certs);
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
        let last = log
            .clone()
            .get_log_state()
            .await?
            .last_log_id
            .map_or(0, |l| l.index);
        let committed = log.clone().read_committed().await?.map_or(0, |c| c.index);
        if applied < committed {
            tracing::warn!(
                applied,
                committed,
                last,
                "storaged is behind this member's committed log (it stopped uncleanly or before \
                 applying them): re-applying {} entries",
                committed - applied
            );
        } else {
            tracing::info!(
                applied,
                committed,
                last,
                "storaged has applied this member's committed log"
            );
        }
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

    if !cfg.joining && !initialized_before && !raft.is_initialized().await? {
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

    tokio::spawn(raftd::election_advance::run(
        raft.clone(),
        member_id,
        Duration::from_millis(hb),
        cfg.initial_election_tick_advance,
    ));

    let lessor = Arc::new(Lessor::new(
        raft.clone(),
        storage_check.clone(),
        cfg.min_lease_ttl_secs(),
        cfg.lease_checkpoint_interval,
    ));
    tokio::spawn({
        let lessor = lessor.clone();
        async move { lessor.run().await }
    });
    if let Some(retention) = cfg.auto_compaction {
        tokio::spawn(raftd::auto_compact::run(
            raft.clone(),
            storage_check.clone(),
            retention,
        ));
    }
    if cfg.initial_corrupt_check {
        raftd::corruption::initial_check(&raft, &storage_check, member_id)
            .await
            .map_err(Unstartable::new)?;
    }
    if let Some(every) = cfg.corrupt_check_every {
        tokio::spawn(raftd::corruption::run(
            raft.clone(),
            storage_check.clone(),
            member_id,
            every,
        ));
    }
    let router = Arc::new(Router::new(
        raft.clone(),
        member_id,
        Duration::from_millis(el * raftd::config::defaults::LEADER_WAIT_ELECTIONS),
    ));
    let members = Arc::new(Members::new(
        raft.clone(),
        raftd::config::defaults::ACTIVE_WITHIN,
        cfg.strict_reconfig_check,
        cfg.max_learners,
    ));
    tokio::spawn(members.clone().follow_leadership());
    tokio::spawn(
        peer_auth
            .clone()
            .learn_secret(storage_check.clone(), raft.clone()),
    );
    let local = RaftLocalService::new(raftd::local_server::Parts {
        router,
        lessor,
        members,
        cluster_id,
        db_size,
        initialized_before,
        removal: removal.clone(),
        limits: raftd::local_server::Limits {
            max_request_bytes: member.max_request_bytes,
            max_txn_ops: member.max_txn_ops,
        },
    });
    let local = Arc::new(local);

    // Peers: raft messages, and forwarded client work.
    for url in &cfg.listen_peer_urls {
        let addr = common::config::listen_addr(url)?;
        let listener = common::tcp::bind(addr, member.socket_reuse_port)
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
        let mut builder = common::tcp::server();
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
        let (raft, removal) = (raft.clone(), removal.clone());
        async move {
            let failure = tokio::select! {
                _ = shutdown => None,
                // A removed member stops for good, as etcd's exits; first
                // its gatewayd (asking raftd's status every second) learns
                // of it, and stops too.
                _ = async {
                    removal.removed().await;
                    tokio::time::sleep(REMOVED_LINGER).await;
                } => Some(common::lifecycle::RemovedFromCluster::stop().to_string()),
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
    tokio::spawn(raftd::peer_client::probe_peers(raft.clone(), member_id));
    common::metrics::serve_url(cfg.metrics_url.as_deref(), raftd::metrics::render_url)
        .await
        .map_err(Unstartable::new)?;
    common::lifecycle::notify_ready("serving");
    let service = RaftLocalServer::from_arc(local).max_decoding_message_size(usize::MAX);
    let incoming = common::uds::incoming(listener);
    common::lifecycle::serve_with_bounded_stop(
        |drain| {
            common::uds::server()
                .add_service(service)
                .add_optional_service(member.enable_pprof.then(common::cpu_profile::server))
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
