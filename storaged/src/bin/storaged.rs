//! storaged's entry point: config, the store, the Unix-socket server.

/// mimalloc rather than glibc's malloc: every request allocates and frees
/// many small buffers (HTTP/2 frames, protobuf messages, futures).
#[global_allocator]
static ALLOC: common::heap_profile::Sampling<mimalloc::MiMalloc> =
    common::heap_profile::Sampling(mimalloc::MiMalloc);

use common::lifecycle::Unstartable;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::proto::storage::storage_server::StorageServer;
use storaged::config::{Config, StoragedOpts};
use storaged::read_fence::{self, ReadFence};
use storaged::{compactor, service::StorageService, store::Store};

fn main() -> ExitCode {
    let loaded = common::config::from_command_line::<StoragedOpts>(
        "storaged",
        "triad's state machine daemon (MVCC store on fjall)",
    );
    let (member, config) = match loaded {
        Ok((m, o)) => (m, Config::resolve(&o)),
        Err(e) => return common::lifecycle::config_error("storaged", e),
    };
    if member.check_only {
        return common::lifecycle::check_member("storaged", &member);
    }
    // One thread by default: every request is a short hop between sockets,
    // and on a small machine cross-thread wake-ups cost more than a second
    // thread gains (see BENCHMARKS.md).
    let runtime = member.runtime(1);
    common::lifecycle::run_daemon("storaged", &runtime, run(member, config))
}

async fn run(member: common::config::Member, cfg: Config) -> anyhow::Result<()> {
    let _claim = common::lifecycle::claim_data_dir(&member, "storaged")?;
    storaged::slow_request::set_threshold(member.warning_apply_duration);
    let dir = member.data_dir.join("storaged");
    // A received snapshot marked for activation replaces the store now.
    storaged::snapshot::settle(&dir).map_err(|e| {
        anyhow::anyhow!(
            "cannot settle a received snapshot in {}: {e}",
            dir.display()
        )
    })?;
    std::fs::create_dir_all(&dir)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
    let clean = read_fence::take_clean_stop(&dir).map_err(|e| {
        anyhow::anyhow!(
            "cannot read the clean-stop marker of {}: {e}",
            dir.display()
        )
    })?;
    let cache = cfg.cache_bytes;
    let store = Arc::new(
        Store::open(&dir, cache)
            .map_err(|e| anyhow::anyhow!("cannot open store in {}: {e}", dir.display()))?,
    );
    let applied = store.applied().map(|a| a.index);
    let fresh = applied.is_none() && !storaged::identity::claimed(&dir);
    let fence = ReadFence::new(clean || fresh);
    if !fence.is_lifted() {
        tracing::warn!(
            applied = applied.unwrap_or(0),
            revision = store.bounds().current,
            "storaged did not stop cleanly (a crash or a power cut): its store is as its disk kept it; \
             raftd re-applies the committed entries after the applied index, and client reads wait \
             until the store has caught up with the cluster"
        );
        tokio::spawn(read_fence::catch_up(
            store.clone(),
            member.raftd_socket(),
            fence.clone(),
        ));
    }
    tokio::spawn(compactor::run(store.clone(), cfg.compaction_batch_limit));
    storaged::metrics::follow(store.clone());
    common::metrics::serve_url(cfg.metrics_url.as_deref(), storaged::metrics::render_url)
        .await
        .map_err(Unstartable::new)?;

    let socket = member.storaged_socket();
    let listener = common::uds::bind(&socket, member.socket_group_access)
        .map_err(|e| Unstartable::new(format!("cannot bind {}: {e}", socket.display())))?;
    tracing::info!(socket = %socket.display(), applied = ?store.applied().map(|a| a.index), revision = store.bounds().current, "storaged serving");
    let shutdown = common::lifecycle::shutdown_signal();
    common::lifecycle::notify_ready("serving");
    let (restart_tx, mut restart_rx) = tokio::sync::watch::channel(false);
    let service = StorageService::new(store.clone(), dir.clone(), restart_tx, fence);
    let service = StorageServer::new(service).max_decoding_message_size(usize::MAX);
    let incoming = common::uds::incoming(listener);
    let restarting = Arc::new(AtomicBool::new(false));
    let mut fatal = storaged::fatal::FATAL.subscribe();
    let stop = {
        let restarting = restarting.clone();
        async move {
            tokio::select! {
                _ = shutdown => {}
                _ = restart_rx.wait_for(|r| *r) => restarting.store(true, Ordering::Relaxed),
                _ = fatal.wait_for(|f| f.is_some()) => {}
            }
        }
    };
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
    if let Some(e) = storaged::fatal::FATAL.borrow().clone() {
        // No persist: the database refuses writes until opened again.
        let _ = std::fs::remove_file(&socket);
        return Err(anyhow::anyhow!("store failed, restarting to recover: {e}"));
    }
    if restarting.load(Ordering::Relaxed) {
        // Activate a received snapshot: start afresh (same pid), and the
        // new process swaps the store directory before opening it.
        store.persist()?;
        // The store it served is synced and the snapshot only moves it
        // forward: no read can go back, so the next start needs no fence.
        read_fence::mark_clean_stop(&dir)?;
        drop(store);
        let _ = std::fs::remove_file(&socket);
        tracing::info!("restarting to activate the received snapshot");
        return Err(common::lifecycle::reexec().into());
    }
    common::lifecycle::notify_stopping();
    store.persist()?;
    read_fence::mark_clean_stop(&dir)?;
    let _ = std::fs::remove_file(&socket);
    tracing::info!("storaged stopped");
    Ok(())
}
