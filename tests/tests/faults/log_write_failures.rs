//! A daemon whose log cannot be written (stderr on a full disk) keeps
//! running: the lines are counted and dropped, never a panic.

use std::process::{Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use triad_tests::{bin, free_port_pair};

#[test]
fn daemons_logging_to_a_full_disk_keep_running() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("member");
    let full = || {
        std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .expect("/dev/full")
    };
    let peer = format!("http://127.0.0.1:{}", free_port_pair() + 1);
    let start = |daemon: &str, extra: &[&str]| {
        Command::new(bin(daemon))
            .args(["--data-dir", &data.to_string_lossy()])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("default={peer}")])
            .args(extra)
            .env("RUST_LOG", "debug")
            .stdout(Stdio::null())
            .stderr(full())
            .spawn()
            .expect("spawn")
    };
    let mut storaged = start("storaged", &[]);
    let mut raftd = start("raftd", &["--listen-peer-urls", &peer]);
    // Both log at start (debug: plenty) and while raftd elects itself.
    std::thread::sleep(Duration::from_secs(3));
    for (name, child) in [("storaged", &mut storaged), ("raftd", &mut raftd)] {
        assert!(
            child.try_wait().expect("wait").is_none(),
            "{name} died logging to a full disk"
        );
    }
    for (name, child) in [("raftd", &mut raftd), ("storaged", &mut storaged)] {
        kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).expect("sigterm");
        let status = child.wait().expect("wait");
        assert!(status.success(), "{name} exited {status}");
    }
}
