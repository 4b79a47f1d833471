//! Keeps one daemon process running: starts it, restarts it with backoff
//! when it exits unexpectedly, records its pid in `<dir>/pids/<name>.pid`
//! (so tools and tests can signal one daemon), and stops it with SIGTERM
//! (then SIGKILL after a grace period) when asked. It listens on a
//! notify socket of the daemon's own (`NOTIFY_SOCKET`, as systemd's
//! Type=notify) to learn when the daemon serves, and gives up, reporting
//! the daemon's last lines, when the daemon says it cannot start
//! (`EXIT_UNSTARTABLE`) or fails again and again right after starting.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, watch};

/// How a daemon is started.
#[derive(Clone, Debug)]
pub struct DaemonSpec {
    pub name: &'static str,
    /// Which member of `triad up` it belongs to.
    pub member: usize,
    pub program: PathBuf,
    pub args: Vec<String>,
    pub log_file: PathBuf,
    pub pid_file: PathBuf,
    /// Where the daemon's sd_notify messages arrive.
    pub notify_socket: PathBuf,
}

/// What a supervisor tells `triad up`.
#[derive(Debug)]
pub struct Report {
    pub member: usize,
    pub daemon: &'static str,
    pub event: Event,
}

#[derive(Debug)]
pub enum Event {
    /// The daemon told its notify socket it serves (READY=1).
    Ready,
    /// The daemon cannot run; supervising it stopped. Why, with its last
    /// log lines.
    GaveUp(String),
    /// The daemon's member was removed from the cluster; supervising it
    /// stopped.
    Removed,
}

const GRACE: Duration = Duration::from_secs(10);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// A run this long counts as healthy and resets the backoff.
const HEALTHY_RUN: Duration = Duration::from_secs(10);
/// A run that fails sooner than this failed right after starting ...
const FAST_FAILURE: Duration = Duration::from_secs(5);
/// ... and this many of those in a row mean it will not start (about 16 s
/// of backoff; a full disk for a few seconds costs fewer).
const FAST_FAILURES_TO_GIVE_UP: u32 = 8;
/// Log lines of the failed run shown when giving up.
const LAST_LINES: usize = 8;

fn spawn(spec: &DaemonSpec) -> std::io::Result<Child> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&spec.log_file)?;
    let mut cmd = Command::new(&spec.program);
    cmd.args(&spec.args)
        .env("NOTIFY_SOCKET", &spec.notify_socket)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // SAFETY: pre_exec runs in the forked child before exec; prctl is
    // async-signal-safe. The daemon dies with the supervisor, never orphaned.
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)
        });
    }
    let child = cmd.spawn()?;
    if let Some(pid) = child.id() {
        std::fs::write(&spec.pid_file, format!("{pid}\n"))?;
    }
    Ok(child)
}

/// Forward the daemon's READY=1 messages as reports, for as long as the
/// returned task runs.
fn listen_for_ready(
    spec: &DaemonSpec,
    reports: mpsc::UnboundedSender<Report>,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let _ = std::fs::remove_file(&spec.notify_socket);
    let socket = tokio::net::UnixDatagram::bind(&spec.notify_socket)?;
    let (member, daemon) = (spec.member, spec.name);
    Ok(tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        while let Ok(n) = socket.recv(&mut buf).await {
            let text = String::from_utf8_lossy(&buf[..n]);
            if text.lines().any(|l| l == "READY=1") {
                let event = Event::Ready;
                if reports
                    .send(Report {
                        member,
                        daemon,
                        event,
                    })
                    .is_err()
                {
                    return;
                }
            }
        }
    }))
}

/// The last lines the daemon wrote to its log since offset `from`.
fn last_lines(log: &Path, from: u64) -> String {
    let mut text = String::new();
    if let Ok(mut f) = std::fs::File::open(log) {
        let _ = f.seek(SeekFrom::Start(from));
        let _ = f.read_to_string(&mut text);
    }
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(LAST_LINES)..].join("\n")
}

/// Run `spec` until `stop` turns true or the daemon cannot run.
pub async fn supervise(
    spec: DaemonSpec,
    mut stop: watch::Receiver<bool>,
    reports: mpsc::UnboundedSender<Report>,
) {
    let give_up = |why: String| {
        let event = Event::GaveUp(why);
        let (member, daemon) = (spec.member, spec.name);
        let _ = reports.send(Report {
            member,
            daemon,
            event,
        });
    };
    let _ready = match listen_for_ready(&spec, reports.clone()) {
        Ok(task) => AbortOnDrop(task),
        Err(e) => {
            let socket = spec.notify_socket.display();
            return give_up(format!("cannot listen on {socket}: {e}"));
        }
    };
    let mut backoff = Duration::from_millis(100);
    let mut fast_failures = 0;
    loop {
        let started = tokio::time::Instant::now();
        let log_start = std::fs::metadata(&spec.log_file).map_or(0, |m| m.len());
        let mut child = match spawn(&spec) {
            Ok(c) => c,
            Err(e) => return give_up(format!("cannot start {}: {e}", spec.program.display())),
        };
        let exited = tokio::select! {
            status = child.wait() => Some(status),
            _ = stop.wait_for(|s| *s) => None,
        };
        let Some(status) = exited else {
            terminate(&mut child, spec.name).await;
            let _ = std::fs::remove_file(&spec.pid_file);
            return;
        };
        let status = match status {
            Ok(s) => s,
            Err(e) => return give_up(format!("cannot wait for it: {e}")),
        };
        // Exit codes, not signals: a daemon killed by a fault, a test or
        // an operator is restarted whatever happens.
        let code = status.code();
        if code == Some(i32::from(common::lifecycle::EXIT_UNSTARTABLE)) {
            return give_up(last_lines(&spec.log_file, log_start));
        }
        if code == Some(i32::from(common::lifecycle::EXIT_REMOVED)) {
            let (member, daemon) = (spec.member, spec.name);
            let event = Event::Removed;
            let _ = reports.send(Report {
                member,
                daemon,
                event,
            });
            return;
        }
        if code.is_some_and(|c| c != 0) && started.elapsed() < FAST_FAILURE {
            fast_failures += 1;
        } else {
            fast_failures = 0;
        }
        if fast_failures >= FAST_FAILURES_TO_GIVE_UP {
            let lines = last_lines(&spec.log_file, log_start);
            return give_up(format!(
                "it failed {fast_failures} times right after starting; last:\n{lines}"
            ));
        }
        eprintln!("triad: {} exited ({status}); restarting", spec.name);
        if started.elapsed() >= HEALTHY_RUN {
            backoff = Duration::from_millis(100);
        }
        if wait_or_stop(&mut stop, backoff).await {
            return;
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Ends the notify listener with the supervisor.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Sleep for `d` unless asked to stop first; true when stopping.
async fn wait_or_stop(stop: &mut watch::Receiver<bool>, d: Duration) -> bool {
    let stopped = tokio::select! {
        _ = tokio::time::sleep(d) => false,
        _ = stop.wait_for(|s| *s) => true,
    };
    stopped || *stop.borrow()
}

async fn terminate(child: &mut Child, name: &str) {
    if let Some(pid) = child.id() {
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
    }
    if tokio::time::timeout(GRACE, child.wait()).await.is_err() {
        eprintln!("triad: {name} did not stop within {GRACE:?}; killing it");
        let _ = child.kill().await;
    }
}

/// The pid file of daemon `name` under a member's data dir.
pub fn pid_file(data_dir: &Path, name: &str) -> PathBuf {
    data_dir.join("pids").join(format!("{name}.pid"))
}
