//! `triad up` fails loudly and a member has one owner: a daemon that
//! cannot start for a reason a restart will not cure (a port taken, a bad
//! configuration) stops the whole member with the daemon's own error and a
//! non-zero exit, `ready` is never printed for a port another server
//! answers on, and a second instance on a running member's data dir exits
//! at once, changing nothing.

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use triad_tests::{bin, free_port_pair, wait_exit, Member, DAEMONS};

/// Run `triad up` to its end (at most `limit`): exit status, stdout, stderr.
fn run_up(args: &[&str], env: &[(&str, &str)], limit: Duration) -> (Option<i32>, String, String) {
    let mut child = Command::new(bin("triad"))
        .arg("up")
        .args(args)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn triad up");
    if !wait_exit(&mut child, limit) {
        let _ = child.kill();
        let out = child.wait_with_output().expect("output");
        panic!(
            "triad up still running after {limit:?}\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = child.wait_with_output().expect("output");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_port_in_use_stops_the_member_with_the_bind_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port_pair();
    // Another server already answers on the client port (it accepts TCP,
    // so a readiness probe that only connects would be fooled).
    let _squatter = TcpListener::bind(("127.0.0.1", port)).expect("bind");
    let data = dir.path().join("m");
    let started = Instant::now();
    let (code, stdout, stderr) = run_up(
        &[
            "--data-dir",
            &data.to_string_lossy(),
            "--client-port",
            &port.to_string(),
        ],
        &[],
        Duration::from_secs(30),
    );
    assert_ne!(code, Some(0), "stderr: {stderr}");
    assert!(!stdout.contains("ready"), "printed ready: {stdout}");
    assert!(
        stderr.contains("gatewayd") && stderr.contains("Address already in use"),
        "the bind error is not shown: {stderr}"
    );
    assert!(started.elapsed() < Duration::from_secs(30));
    // Everything it started is gone.
    for d in DAEMONS {
        let pid = std::fs::read_to_string(data.join("pids").join(format!("{d}.pid")));
        if let Ok(pid) = pid {
            let pid: i32 = pid.trim().parse().expect("pid");
            let alive = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok();
            assert!(!alive, "{d} ({pid}) still runs");
        }
    }
}

#[test]
fn a_bad_configuration_stops_the_member_with_the_daemons_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    let conf = dir.path().join("bad.toml");
    std::fs::write(&conf, "[raftd]\nelection-timeout = \"soon\"\n").expect("config");
    let data = dir.path().join("m");
    let (code, stdout, stderr) = run_up(
        &[
            "--data-dir",
            &data.to_string_lossy(),
            "--client-port",
            &free_port_pair().to_string(),
        ],
        &[("TRIAD_CONFIG_FILE", &conf.to_string_lossy())],
        Duration::from_secs(30),
    );
    assert_ne!(code, Some(0));
    assert!(!stdout.contains("ready"));
    assert!(
        // Every daemon checks the whole member's settings: whichever
        // reports first names the bad one.
        stderr.contains(": config [raftd]: election-timeout must be an integer, not \"soon\""),
        "the daemon's own message is not shown: {stderr}"
    );
}

#[test]
fn a_second_instance_on_a_data_dir_changes_nothing() {
    let member = Member::start();
    let data = member.data_dir().to_path_buf();
    let pids: Vec<String> = DAEMONS
        .iter()
        .map(|d| std::fs::read_to_string(data.join("pids").join(format!("{d}.pid"))).expect("pid"))
        .collect();
    let before = member.etcdctl(&["member", "list"]);
    assert!(before.status.success());
    let (code, stdout, stderr) = run_up(
        &[
            "--data-dir",
            &data.to_string_lossy(),
            "--client-port",
            &free_port_pair().to_string(),
        ],
        &[],
        Duration::from_secs(10),
    );
    assert_ne!(code, Some(0));
    assert!(!stdout.contains("ready"));
    assert!(stderr.contains("already running"), "{stderr}");
    // The daemons alone refuse too (as under systemd, without triad up).
    for d in DAEMONS {
        let out = Command::new(bin(d))
            .args(["--data-dir", &data.to_string_lossy()])
            .output()
            .expect("run daemon");
        assert_eq!(out.status.code(), Some(2), "{d}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("already running"),
            "{d}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let after_pids: Vec<String> = DAEMONS
        .iter()
        .map(|d| std::fs::read_to_string(data.join("pids").join(format!("{d}.pid"))).expect("pid"))
        .collect();
    assert_eq!(pids, after_pids, "pid files changed");
    let after = member.etcdctl(&["member", "list"]);
    assert_eq!(before.stdout, after.stdout, "the member list changed");
    assert!(member.etcdctl(&["put", "k", "v"]).status.success());
}
