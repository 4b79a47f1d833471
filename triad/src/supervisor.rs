//! Keeps one daemon process running: starts it, restarts it with backoff
//! when it exits unexpectedly, records its pid in `<dir>/pids/<name>.pid`
//! (so tools and tests can signal one daemon), and stops it with SIGTERM
//! (then SIGKILL after a grace period) when asked.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tokio::sync::watch;

/// How a daemon is started.
#[derive(Clone, Debug)]
pub struct DaemonSpec {
    pub name: &'static str,
    pub program: PathBuf,
    pub args: Vec<String>,
    pub log_file: PathBuf,
    pub pid_file: PathBuf,
}

const GRACE: Duration = Duration::from_secs(10);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// A run this long counts as healthy and resets the backoff.
const HEALTHY_RUN: Duration = Duration::from_secs(10);

fn spawn(spec: &DaemonSpec) -> std::io::Result<Child> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&spec.log_file)?;
    let mut cmd = Command::new(&spec.program);
    cmd.args(&spec.args)
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

/// Run `spec` until `stop` turns true.
pub async fn supervise(spec: DaemonSpec, mut stop: watch::Receiver<bool>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let started = tokio::time::Instant::now();
        let mut child = match spawn(&spec) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("triad: cannot start {}: {e}", spec.name);
                if wait_or_stop(&mut stop, backoff).await {
                    return;
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        let exited = tokio::select! {
            status = child.wait() => Some(status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string())),
            _ = stop.wait_for(|s| *s) => None,
        };
        let Some(status) = exited else {
            terminate(&mut child, spec.name).await;
            let _ = std::fs::remove_file(&spec.pid_file);
            return;
        };
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
