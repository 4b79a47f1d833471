//! storaged's entry point: config, the store, the Unix-socket server.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use serde::{Deserialize, Serialize};

use common::config::MemberOpts;
use common::proto::storage::storage_server::StorageServer;
use storaged::{compactor, service::StorageService, store::Store};

/// storaged's own options (`[storaged]`).
#[derive(clap::Args, Serialize, Deserialize, Debug, Clone, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct StoragedOpts {
    /// Block cache size in MiB.
    #[arg(long, env = "TRIAD_STORAGED_CACHE_MB")]
    #[serde(skip_serializing_if = "Option::is_none")]
    cache_mb: Option<u64>,
}

#[derive(Parser, Debug)]
#[command(
    name = "storaged",
    version,
    about = "triad's state machine daemon (MVCC store on fjall)"
)]
struct Cli {
    /// Path to the member's TOML config file.
    #[arg(long, env = "TRIAD_CONFIG_FILE")]
    config_file: Option<PathBuf>,
    #[command(flatten)]
    member: MemberOpts,
    #[command(flatten)]
    opts: StoragedOpts,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (member, opts) = match common::config::load_daemon(
        cli.config_file.as_deref(),
        &cli.member,
        "storaged",
        &cli.opts,
    ) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("storaged: {e}");
            return ExitCode::from(2);
        }
    };
    common::lifecycle::init_logging(member.log_json);
    // One thread: every request is a short hop between sockets, and on a
    // small machine cross-thread wake-ups cost more than they parallelize.
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("storaged: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(member, opts)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("storaged: {e:#}");
            eprintln!("storaged: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(member: common::config::Member, opts: StoragedOpts) -> anyhow::Result<()> {
    let dir = member.data_dir.join("storaged");
    std::fs::create_dir_all(&dir)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
    let cache = opts.cache_mb.unwrap_or(256) * 1024 * 1024;
    let store = Arc::new(
        Store::open(&dir, cache)
            .map_err(|e| anyhow::anyhow!("cannot open store in {}: {e}", dir.display()))?,
    );
    tokio::spawn(compactor::run(store.clone()));

    let socket = member.storaged_socket();
    let listener = common::uds::bind(&socket, member.socket_group_access)
        .map_err(|e| anyhow::anyhow!("cannot bind {}: {e}", socket.display()))?;
    tracing::info!(socket = %socket.display(), applied = ?store.applied().map(|a| a.index), revision = store.bounds().current, "storaged serving");
    let shutdown = common::lifecycle::shutdown_signal();
    common::lifecycle::notify_ready("serving");
    tonic::transport::Server::builder()
        .add_service(
            StorageServer::new(StorageService::new(store.clone()))
                .max_decoding_message_size(usize::MAX),
        )
        .serve_with_incoming_shutdown(common::uds::incoming(listener), shutdown)
        .await?;
    common::lifecycle::notify_stopping();
    store.persist()?;
    let _ = std::fs::remove_file(&socket);
    tracing::info!("storaged stopped");
    Ok(())
}
