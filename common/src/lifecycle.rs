//! Process lifecycle shared by the daemons: logging set-up, systemd
//! readiness/watchdog notifications, and the graceful-shutdown signal.

use std::time::Duration;

/// Tell systemd (if it supervises us) that the daemon serves, and start the
/// watchdog pings when `WatchdogSec=` is configured.
pub fn notify_ready(status: &str) {
    let _ = sd_notify::notify(
        false,
        &[
            sd_notify::NotifyState::Ready,
            sd_notify::NotifyState::Status(status),
        ],
    );
    let mut usec = 0u64;
    if sd_notify::watchdog_enabled(false, &mut usec) && usec > 0 {
        let period = Duration::from_micros(usec / 2);
        tokio::spawn(async move {
            loop {
                let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]);
                tokio::time::sleep(period).await;
            }
        });
    }
}

pub fn notify_stopping() {
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
}

/// Resolves on the first SIGTERM or SIGINT. The handlers are installed when
/// this is called (not when first polled): call it before announcing
/// readiness, so a stop request right after READY=1 is never lost.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    async move {
        match (term, int) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            _ => std::future::pending::<()>().await,
        }
        tracing::info!("shutdown signal received");
    }
}

/// How long a stopping daemon lets in-flight requests finish before it
/// drops what is still open (long-lived streams: watch feeds, apply
/// streams, keepalives), like etcd's bounded graceful stop.
pub const SHUTDOWN_DRAIN: std::time::Duration = std::time::Duration::from_secs(2);

/// Set once this daemon begins to stop. Long-lived call streams then
/// answer the calls they took and end without reading more, so a caller
/// sends the rest again (to the restarted daemon, or to another member)
/// instead of losing them with the process.
static STOPPING: std::sync::LazyLock<tokio::sync::watch::Sender<bool>> =
    std::sync::LazyLock::new(|| tokio::sync::watch::Sender::new(false));

/// Whether (and from when on) this daemon is stopping.
pub fn stopping() -> tokio::sync::watch::Receiver<bool> {
    STOPPING.subscribe()
}

/// Tells the servers `serve_with_bounded_stop` started to stop accepting
/// (one per listener may hold a clone).
#[derive(Clone)]
pub struct Drain(tokio::sync::watch::Receiver<bool>);

impl Drain {
    /// Resolves when the servers are to stop accepting.
    pub async fn wait(mut self) {
        let _ = self.0.wait_for(|s| *s).await;
    }
}

/// Run the server(s) `serve` starts (given the `Drain` that tells them to
/// stop accepting) until `stop` fires, then let them drain for at most
/// SHUTDOWN_DRAIN. Streams held open by clients or by the other daemons
/// would otherwise hold the stop forever; they reconnect to the restarted
/// daemon.
pub async fn serve_with_bounded_stop<F, E>(
    serve: impl FnOnce(Drain) -> F,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), E>
where
    F: std::future::Future<Output = Result<(), E>>,
{
    let (tx, rx) = tokio::sync::watch::channel(false);
    let server = serve(Drain(rx));
    tokio::pin!(server);
    tokio::select! {
        r = &mut server => return r,
        _ = stop => {}
    }
    STOPPING.send_replace(true);
    let _ = tx.send(true);
    match tokio::time::timeout(SHUTDOWN_DRAIN, server).await {
        Ok(r) => r,
        Err(_) => {
            tracing::info!("closing streams still open after {SHUTDOWN_DRAIN:?}");
            Ok(())
        }
    }
}

/// Replace this process with a fresh start of the same program and
/// arguments (same pid, so systemd and supervisors see no exit). Returns
/// only on failure.
pub fn reexec() -> std::io::Error {
    use std::os::unix::process::CommandExt;
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => return e,
    };
    std::process::Command::new(exe)
        .args(args.iter().skip(1))
        .exec()
}

/// A line on stderr that is dropped if stderr fails (eprintln! panics).
fn say(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// Exit status of a daemon that cannot start as configured (a bad
/// configuration, a port in use, another instance on its data dir, a data
/// dir of another cluster): a restart would fail the same way, so `triad
/// up` stops the member and systemd does not restart it
/// (`RestartPreventExitStatus=2`). Any other failure exits with 1.
pub const EXIT_UNSTARTABLE: u8 = 2;

/// Exit status of a daemon whose member was removed from the cluster: it
/// stops for good, as a removed etcd exits. Neither systemd
/// (`RestartPreventExitStatus=`) nor `triad up` restarts it; `triad up`
/// stops the rest of that member and keeps the others.
pub const EXIT_REMOVED: u8 = 3;

/// The exit status an error that ends the daemon gets: 1 unless one of
/// the errors below was made (the higher status wins).
static EXIT_STATUS: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(1);

fn decide_exit_status(status: u8) {
    EXIT_STATUS.fetch_max(status, std::sync::atomic::Ordering::Relaxed);
}

/// etcd's words for a removed member, which its peers answer it with.
pub const REMOVED_FROM_CLUSTER: &str = "the member has been permanently removed from the cluster";

/// This member was removed from the cluster. Making one (`stop`) decides the
/// daemon's exit status (`EXIT_REMOVED`) should it end the daemon.
#[derive(Debug, thiserror::Error)]
#[error("{REMOVED_FROM_CLUSTER}")]
pub struct RemovedFromCluster;

impl RemovedFromCluster {
    pub fn stop() -> RemovedFromCluster {
        decide_exit_status(EXIT_REMOVED);
        RemovedFromCluster
    }
}

/// An error a restart will not cure. Creating one decides the daemon's
/// exit status (`EXIT_UNSTARTABLE`) should it end the daemon.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Unstartable(String);

impl Unstartable {
    pub fn new(e: impl std::fmt::Display) -> Unstartable {
        decide_exit_status(EXIT_UNSTARTABLE);
        Unstartable(e.to_string())
    }
}

/// Claim a member's data dir for `who` (see `member_dir`), warning as
/// etcd does when it is open to others.
pub fn claim_data_dir(
    member: &crate::config::Member,
    who: &str,
) -> Result<crate::member_dir::Claim, Unstartable> {
    if let Some(w) =
        crate::member_dir::permission_warning(&member.data_dir, member.socket_group_access)
    {
        tracing::warn!("{w}");
    }
    crate::member_dir::claim(&member.data_dir, who).map_err(Unstartable::new)
}

/// `--check-config`: the settings parsed (the caller got this far), so
/// check that the member's data dir and socket dir can be created and
/// written by this user under these sandbox rules. Exit 0 when `daemon`
/// would start, else etcd-style one line and status 2.
pub fn check_member(daemon: &str, member: &crate::config::Member) -> std::process::ExitCode {
    for dir in [&member.data_dir, &member.runtime_dir] {
        if let Err(e) = crate::member_dir::check_writable(dir) {
            return config_error(daemon, e);
        }
    }
    std::process::ExitCode::SUCCESS
}

/// A configuration error: one line on stderr and exit status 2.
pub fn config_error(daemon: &str, e: impl std::fmt::Display) -> std::process::ExitCode {
    say(format_args!("{daemon}: {e}"));
    std::process::ExitCode::from(EXIT_UNSTARTABLE)
}

/// Turn transparent huge pages off for this process. The allocator asks
/// for them, and the first touch of a fresh 2 MiB page zeroes all of it
/// and, once memory is fragmented, first compacts memory synchronously
/// (the kernel's default `defrag=madvise`): measured here as a fifth of a
/// loaded raftd's CPU spent clearing pages and writes stalled for tenths
/// of a second (BENCHMARKS.md). Best effort: a kernel without the switch
/// leaves huge pages as they were.
fn opt_out_of_huge_pages() {
    if let Err(e) = nix::sys::prctl::set_thp_disable(true) {
        tracing::warn!(error = %e, "cannot turn transparent huge pages off");
    }
}

/// Run a daemon's async main on a tokio runtime (single-threaded when
/// `settings.threads` is 1) with logging set up; a failure is one line on
/// stderr and in the log, and exit status 1.
pub fn run_daemon<F, E>(
    daemon: &'static str,
    settings: &crate::config::RuntimeSettings,
    main: F,
) -> std::process::ExitCode
where
    F: std::future::Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    crate::member_dir::private_umask();
    if let Err(e) = crate::logging::init(daemon, &settings.member_name, &settings.log) {
        return config_error(daemon, e);
    }
    for n in crate::etcd_flags::take_notices() {
        tracing::info!("{n}");
    }
    for w in crate::etcd_flags::take_warnings() {
        tracing::warn!("{w}");
    }
    if settings.unsafe_no_fsync {
        crate::durable::set_unsafe_no_fsync(true);
        tracing::warn!(
            "--unsafe-no-fsync: nothing is fsynced; a crash of this machine loses acknowledged writes"
        );
    }
    opt_out_of_huge_pages();
    if settings.heap_profile {
        crate::heap_profile::activate();
    }
    let mut builder = if settings.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(settings.threads);
        b
    };
    let spin = (!settings.spin_before_sleep.is_zero()).then_some(crate::park_spin::SpinPolicy {
        budget: settings.spin_before_sleep,
    });
    if let Some(policy) = spin {
        builder.on_thread_park(move || policy.before_park());
        builder.on_thread_unpark(move || policy.after_unpark());
    }
    let rt = match builder.enable_all().build() {
        Ok(rt) => {
            if let Some(policy) = spin {
                let found = crate::park_spin::capture_epoll_fds();
                tracing::debug!(
                    budget = ?policy.budget,
                    epoll_fds = found,
                    "spinning before sleep (off when no epoll descriptor was found)"
                );
            }
            rt
        }
        Err(e) => {
            say(format_args!("{daemon}: cannot start runtime: {e}"));
            return std::process::ExitCode::FAILURE;
        }
    };
    if let Some(t) = settings.tracing.clone() {
        let _runtime = rt.enter();
        crate::distributed_tracing::init(t, daemon);
    }
    match rt.block_on(main) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{daemon}: {e:#}");
            say(format_args!("{daemon}: {e:#}"));
            std::process::ExitCode::from(EXIT_STATUS.load(std::sync::atomic::Ordering::Relaxed))
        }
    }
}

/// Move this process into the network namespace at `path` (e.g.
/// /run/netns/NAME), as systemd's `NetworkNamespacePath=` does for a unit.
/// Call it before any thread starts: threads created later inherit it, and
/// sockets opened before stay where they were. Unix sockets are files and
/// work across namespaces, so only TCP traffic moves.
pub fn enter_network_namespace(path: &std::path::Path) -> Result<(), String> {
    let ns = std::fs::File::open(path)
        .map_err(|e| format!("cannot open network namespace {}: {e}", path.display()))?;
    nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET)
        .map_err(|e| format!("cannot enter network namespace {}: {e}", path.display()))
}
