//! `triad ctl`: act on one daemon of a member that `triad up` runs, from
//! another terminal (demos, fault drills): kill it (-9; the supervisor
//! restarts it), restart it gracefully (SIGTERM; restarted), pause or
//! resume it (SIGSTOP/SIGCONT).

use std::path::{Path, PathBuf};

use anyhow::Context;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum Action {
    Kill,
    Restart,
    Pause,
    Resume,
}

impl Action {
    fn signal(self) -> Signal {
        match self {
            Action::Kill => Signal::SIGKILL,
            Action::Restart => Signal::SIGTERM,
            Action::Pause => Signal::SIGSTOP,
            Action::Resume => Signal::SIGCONT,
        }
    }
}

/// The data dir of member `member` of a `triad up` started on `data_dir`
/// (a single member's is the dir itself).
fn member_dir(data_dir: &Path, member: Option<u16>) -> PathBuf {
    match member {
        Some(i) => data_dir.join(format!("m{i}")),
        None => data_dir.to_path_buf(),
    }
}

pub fn run(
    action: Action,
    daemon: &str,
    data_dir: &Path,
    member: Option<u16>,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        ["storaged", "raftd", "gatewayd"].contains(&daemon),
        "unknown daemon {daemon:?} (storaged, raftd or gatewayd)"
    );
    let dir = member_dir(data_dir, member);
    let pid_file = crate::supervisor::pid_file(&dir, daemon);
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .with_context(|| {
            format!(
                "no pid file {} (is triad up running there?)",
                pid_file.display()
            )
        })?
        .trim()
        .parse()
        .with_context(|| format!("bad pid file {}", pid_file.display()))?;
    kill(Pid::from_raw(pid), action.signal())
        .with_context(|| format!("cannot signal {daemon} (pid {pid})"))?;
    println!("{daemon} (pid {pid}) {action:?}");
    Ok(())
}
