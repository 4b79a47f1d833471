//! A bad value for a setting only one daemon uses stops the whole member:
//! every daemon checks the whole member's etcd settings at start, with
//! etcd's error text, so `--quota-backend-bytes 8GB` (gatewayd's) stops
//! storaged and raftd too, given on the command line or as `ETCD_*`
//! variable, run by hand or by `triad up`, as it stops etcd.

use std::process::{Command, Stdio};
use std::time::Duration;

use triad_tests::{bin, free_port_pair, prerequisite_missing, wait_dead, wait_exit, DAEMONS};

/// etcd's first stderr line for `args` and `env`, and its exit status.
fn etcd_error(args: &[&str], env: &[(&str, &str)]) -> Option<(String, Option<i32>)> {
    if Command::new("etcd").arg("--version").output().is_err() {
        prerequisite_missing("etcd 3.4 (the reference)");
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new("etcd")
        .arg("--data-dir")
        .arg(dir.path())
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    Some((stderr, out.status.code()))
}

#[test]
fn a_bad_quota_flag_stops_every_daemon_with_etcds_error() {
    let want = "invalid value \"8GB\" for flag -quota-backend-bytes: parse error";
    let dir = tempfile::tempdir().unwrap();
    let port = free_port_pair();
    let client = format!("http://127.0.0.1:{port}");
    let peer = format!("http://127.0.0.1:{}", port + 1);
    // One etcd command line for all three daemons, as for etcd.
    let args = [
        "--name",
        "m",
        "--listen-client-urls",
        &client,
        "--advertise-client-urls",
        &client,
        "--listen-peer-urls",
        &peer,
        "--initial-advertise-peer-urls",
        &peer,
        "--initial-cluster",
        &format!("m={peer}"),
        "--quota-backend-bytes",
        "8GB",
    ];
    let mut children = Vec::new();
    for d in DAEMONS {
        let child = Command::new(bin(d))
            .arg("--data-dir")
            .arg(dir.path())
            .args(args)
            .env_remove("NOTIFY_SOCKET")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        children.push((d, child));
    }
    for (d, mut child) in children {
        let exited = wait_exit(&mut child, Duration::from_secs(20));
        if !exited {
            let _ = child.kill();
        }
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(exited, "{d} kept running with a bad quota: {stderr}");
        assert_eq!(out.status.code(), Some(2), "{d}: {stderr}");
        assert_eq!(stderr.trim_end(), format!("{d}: {want}"));
    }
    if let Some((etcd, code)) = etcd_error(&args, &[]) {
        assert!(etcd.starts_with(want), "etcd said: {etcd}");
        assert_eq!(code, Some(2));
    }
}

#[test]
fn a_bad_quota_variable_stops_triad_up_with_no_daemon_left() {
    let env = [("ETCD_QUOTA_BACKEND_BYTES", "8GB")];
    let want = "invalid value \"8GB\" for ETCD_QUOTA_BACKEND_BYTES: parse error";
    let dir = tempfile::tempdir().unwrap();
    let port = free_port_pair().to_string();
    let mut up = Command::new(bin("triad"))
        .arg("up")
        .arg("--data-dir")
        .arg(dir.path())
        .args(["--client-port", &port])
        .envs(env)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let exited = wait_exit(&mut up, Duration::from_secs(60));
    if !exited {
        let _ = up.kill();
    }
    let out = up.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(exited, "triad up kept running: {stderr}");
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains(want), "triad up's error: {stderr}");
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("ready"),
        "never ready"
    );
    // Every daemon that was started is gone.
    for d in DAEMONS {
        let pid_file = dir.path().join("pids").join(format!("{d}.pid"));
        if let Some(pid) = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok())
        {
            wait_dead(pid);
            let alive = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok();
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            assert!(
                !alive || stat.contains(") Z"),
                "{d} (pid {pid}) left running"
            );
        }
    }
    if let Some((etcd, code)) = etcd_error(&[], &env) {
        assert!(etcd.contains(want), "etcd said: {etcd}");
        assert_ne!(code, Some(0));
    }
}

#[test]
fn a_bad_value_in_one_daemons_section_stops_its_siblings_too() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("triad.toml");
    std::fs::write(
        &conf,
        "[gatewayd]\nworker-threads = \"two\"\n[raftd]\nsnapshot-count = 1000\n",
    )
    .unwrap();
    for d in DAEMONS {
        let out = Command::new(bin(d))
            .arg("--data-dir")
            .arg(dir.path())
            .arg("--config-file")
            .arg(&conf)
            .env_remove("NOTIFY_SOCKET")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{d}: {stderr}");
        assert_eq!(
            stderr.trim_end(),
            format!("{d}: config [gatewayd]: worker-threads must be an integer, not \"two\"")
        );
    }
}
