//! raftd's entry point: config, the raft log, the openraft node (bootstrapped
//! from --initial-cluster on first start), and the local Unix-socket server.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use common::config::Member;
use common::proto::raft::raft_local_server::RaftLocalServer;
use common::proto::storage::storage_client::StorageClient;
use raftd::lessor::Lessor;
use raftd::local_server::RaftLocalService;
use raftd::log_store::LogStore;
use raftd::network::Peers;
use raftd::state_machine::StateMachine;
use raftd::types::Raft;

/// raftd's own options (`[raftd]`), with etcd's flag names.
#[derive(clap::Args, Serialize, Deserialize, Debug, Clone, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RaftdOpts {
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
}

fn main() -> ExitCode {
    let loaded = common::config::from_command_line("raftd", "triad's consensus daemon (openraft)")
        .map_err(|e| e.to_string())
        .and_then(|(m, o)| check(&m, &o).map(|()| (m, o)).map_err(|e| e.to_string()));
    let (member, opts) = match loaded {
        Ok(c) => c,
        Err(e) => return common::lifecycle::config_error("raftd", e),
    };
    // One thread by default: every request is a short hop between sockets,
    // and on a small machine cross-thread wake-ups cost more than a second
    // thread gains (see BENCHMARKS.md).
    common::lifecycle::run_daemon("raftd", member.log_json, 1, run(member, opts))
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
    if member.initial_cluster.len() != 1 {
        anyhow::bail!(
            "this raftd runs single-member clusters only; --initial-cluster names {} members",
            member.initial_cluster.len()
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
    Ok(())
}

async fn run(member: Member, opts: RaftdOpts) -> anyhow::Result<()> {
    let dir = member.data_dir.join("raftd");
    std::fs::create_dir_all(&dir)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
    let log = LogStore::open(&dir)
        .map_err(|e| anyhow::anyhow!("cannot open raft log in {}: {e}", dir.display()))?;

    let hb = opts.heartbeat_interval.unwrap_or(100);
    let el = opts.election_timeout.unwrap_or(1000);
    let config = openraft::Config {
        cluster_name: format!("{:x}", member.cluster_id),
        heartbeat_interval: hb,
        election_timeout_min: el,
        election_timeout_max: el * 2,
        snapshot_policy: openraft::SnapshotPolicy::Never,
        enable_pre_vote: Some(true),
        ..Default::default()
    };
    let config = Arc::new(config.validate()?);

    let storage = StorageClient::new(common::uds::channel(&member.storaged_socket()))
        .max_decoding_message_size(usize::MAX);
    let storage_check = storage.clone();
    let sm = StateMachine::new(storage, log.reader());
    tracing::info!("waiting for storaged's applied state");
    let raft = Raft::new(member.member_id, config, Peers, log, sm).await?;

    if !raft.is_initialized().await? {
        let mut members = BTreeMap::new();
        for (_, urls) in &member.initial_cluster {
            let id = common::ids::member_id(urls, &member.cluster_token);
            members.insert(
                id,
                openraft::impls::BasicNode {
                    addr: urls.join(","),
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

    let socket = member.raftd_socket();
    let listener = common::uds::bind(&socket, member.socket_group_access)
        .map_err(|e| anyhow::anyhow!("cannot bind {}: {e}", socket.display()))?;
    tracing::info!(socket = %socket.display(), member = format!("{:x}", member.member_id), "raftd serving");
    let shutdown = common::lifecycle::shutdown_signal();
    // Stop serving (and fail) if storaged speaks another protocol version.
    let incompatible = Arc::new(std::sync::Mutex::new(None));
    let stop = {
        let (incompatible, storage) = (incompatible.clone(), storage_check);
        async move {
            tokio::select! {
                _ = shutdown => {}
                e = common::proto::first_incompatible(|| common::proto::storaged_compatible(&storage)) => {
                    if let Ok(mut slot) = incompatible.lock() {
                        *slot = Some(e);
                    }
                }
            }
        }
    };
    common::lifecycle::notify_ready("serving");
    let service = RaftLocalService::new(raft.clone(), lessor, member.member_id, member.cluster_id);
    tonic::transport::Server::builder()
        .add_service(RaftLocalServer::new(service).max_decoding_message_size(usize::MAX))
        .serve_with_incoming_shutdown(common::uds::incoming(listener), stop)
        .await?;
    common::lifecycle::notify_stopping();
    let _ = raft.shutdown().await;
    let _ = std::fs::remove_file(&socket);
    tracing::info!("raftd stopped");
    match incompatible.lock().ok().and_then(|mut e| e.take()) {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}
