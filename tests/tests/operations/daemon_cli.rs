//! Every daemon's command-line contract: --help and --version, a one-line
//! error and exit status 2 on bad configuration, a stale socket file
//! replaced on start, sd_notify READY=1 once serving, SIGTERM = clean exit;
//! and config layering (file < TRIAD_* env < flags).

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use etcd_client::{Txn, TxnOp};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use triad_tests::{bin, Member};

const BINARIES: [&str; 4] = ["storaged", "raftd", "gatewayd", "triad"];

#[test]
fn help_and_version() {
    for b in BINARIES {
        let help = Command::new(bin(b)).arg("--help").output().unwrap();
        assert!(help.status.success(), "{b} --help");
        assert!(
            String::from_utf8_lossy(&help.stdout).contains("Usage:"),
            "{b} --help prints usage"
        );
        let version = Command::new(bin(b)).arg("--version").output().unwrap();
        assert!(version.status.success(), "{b} --version");
        assert!(String::from_utf8_lossy(&version.stdout).contains(env!("CARGO_PKG_VERSION")));
    }
}

fn one_line_error(daemon: &str, args: &[&str], env: &[(&str, &str)], expect: &str) {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(bin(daemon))
        .arg("--data-dir")
        .arg(dir.path())
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{daemon} {args:?}: {stderr}");
    assert_eq!(
        stderr.trim_end().lines().count(),
        1,
        "{daemon} {args:?} printed more than one line: {stderr}"
    );
    assert!(
        stderr.contains(expect),
        "{daemon} {args:?}: {stderr:?} lacks {expect:?}"
    );
}

#[test]
fn bad_configuration_is_one_line_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let bad_key = dir.path().join("bad-key.toml");
    std::fs::write(&bad_key, "[gatewayd]\nmax-txn-opz = 3\n").unwrap();
    let bad_toml = dir.path().join("bad.toml");
    std::fs::write(&bad_toml, "[member\nname=").unwrap();
    let bad_key = bad_key.to_str().unwrap();
    let bad_toml = bad_toml.to_str().unwrap();

    one_line_error(
        "gatewayd",
        &["--listen-client-urls", "ftp://x:1"],
        &[],
        "invalid value \"ftp://x:1\" for flag -listen-client-urls: URL scheme must be http, https, unix, or unixs: ftp://x:1",
    );
    one_line_error("gatewayd", &["--config-file", bad_key], &[], "max-txn-opz");
    one_line_error("gatewayd", &["--max-txn-ops", "0"], &[], "--max-txn-ops");
    one_line_error(
        "storaged",
        &["--config-file", bad_toml],
        &[],
        "invalid config file",
    );
    one_line_error(
        "storaged",
        &["--config-file", "/nonexistent/triad.toml"],
        &[],
        "cannot read config file",
    );
    one_line_error(
        "raftd",
        &["--election-timeout", "100", "--heartbeat-interval", "100"],
        &[],
        "election-timeout",
    );
    one_line_error(
        "raftd",
        &["--name", "x", "--initial-cluster", "y=http://127.0.0.1:1"],
        &[],
        "couldn't find local name",
    );
    one_line_error(
        "storaged",
        &[],
        &[("TRIAD_LOG_FORMAT", "xml")],
        "--log-format",
    );
    one_line_error("raftd", &["--log-level", "loud"], &[], "--log-level");
    one_line_error(
        "storaged",
        &["--spin-before-sleep", "fast"],
        &[],
        "--spin-before-sleep: invalid duration",
    );
    one_line_error(
        "gatewayd",
        &[],
        &[("TRIAD_SPIN_BEFORE_SLEEP", "-1us")],
        "--spin-before-sleep",
    );
    one_line_error("gatewayd", &["--logger", "syslog"], &[], "--logger");
    one_line_error(
        "raftd",
        &["--election-timeout", "60000"],
        &[],
        "should be set less than 50000ms",
    );
    one_line_error(
        "raftd",
        &["--heartbeat-interval", "18446744073709551615"],
        &[],
        "raftd:",
    );
    one_line_error(
        "gatewayd",
        &[
            "--watch-progress-notify-interval",
            "99999999999999999999999999h",
        ],
        &[],
        "invalid value \"99999999999999999999999999h\" for flag -watch-progress-notify-interval: parse error",
    );
    one_line_error(
        "raftd",
        &["--peer-netns", "/run/netns/triad-no-such-namespace"],
        &[],
        "cannot open network namespace /run/netns/triad-no-such-namespace",
    );
}

#[test]
fn stale_socket_is_replaced_ready_is_notified_and_sigterm_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    std::fs::create_dir_all(&run).unwrap();
    // A stale socket left behind by a crashed storaged.
    let stale = run.join("storaged.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    assert!(stale.exists());
    let notify_path = dir.path().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();

    let mut child = Command::new(bin("storaged"))
        .arg("--data-dir")
        .arg(dir.path())
        .env("NOTIFY_SOCKET", &notify_path)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 512];
    let n = notify.recv(&mut buf).expect("sd_notify message");
    let msg = String::from_utf8_lossy(&buf[..n]);
    assert!(msg.contains("READY=1"), "{msg}");
    // The socket now accepts connections.
    std::os::unix::net::UnixStream::connect(&stale)
        .expect("storaged listens on the replaced socket");

    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "storaged did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "storaged exit status {status}");
    assert!(!stale.exists(), "socket removed on clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_file_env_and_flags_layer_as_documented() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("triad.toml");
    std::fs::write(
        &conf,
        "[member]\nmax-txn-ops = 2\n[gatewayd]\nrequest-timeout-ms = 3000\n",
    )
    .unwrap();
    let conf = conf.to_str().unwrap().to_string();

    let txn = |n: usize| {
        Txn::new().and_then(
            (0..n)
                .map(|i| TxnOp::put(format!("k{i}"), "v", None))
                .collect::<Vec<_>>(),
        )
    };
    let too_many = "etcdserver: too many operations in txn request";

    // From the file alone: 2 ops allowed, 3 refused.
    let m = Member::start_with_env(&[("TRIAD_CONFIG_FILE", &conf)]);
    let mut c = m.client().await;
    c.txn(txn(2)).await.expect("2 ops within the file's limit");
    let e = c
        .txn(txn(3))
        .await
        .expect_err("3 ops over the file's limit");
    assert!(e.to_string().contains(too_many), "{e}");
    drop(m);

    // The environment beats the file.
    let m = Member::start_with_env(&[("TRIAD_CONFIG_FILE", &conf), ("TRIAD_MAX_TXN_OPS", "3")]);
    let mut c = m.client().await;
    c.txn(txn(3)).await.expect("env raises the limit to 3");
    assert!(c.txn(txn(4)).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn triad_up_stops_all_daemons_cleanly_on_sigterm() {
    let mut m = Member::start();
    // A long-lived watch stream must not hold up the stop.
    let mut c = m.client().await;
    let _watch = c.watch("w", None).await.unwrap();
    let started = std::time::Instant::now();
    let pids: Vec<i32> = triad_tests::DAEMONS
        .iter()
        .map(|d| m.pid(d).unwrap())
        .collect();
    let status = tokio::task::block_in_place(|| m.stop()).expect("supervisor status");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "stopping took {:?}",
        started.elapsed()
    );
    assert!(status.success(), "triad up exit {status}");
    for (d, p) in triad_tests::DAEMONS.iter().zip(pids) {
        assert!(kill(Pid::from_raw(p), None).is_err(), "{d} still running");
    }
    let logs = m.logs();
    for d in triad_tests::DAEMONS {
        assert!(
            logs.contains(&format!("{d} stopped")),
            "{d} did not log a clean stop:\n{logs}"
        );
    }
}

#[test]
fn triad_ctl_kills_one_daemon_and_it_is_restarted() {
    let m = triad_tests::Member::start();
    let old = m.pid("raftd").expect("raftd pid");
    let out = std::process::Command::new(triad_tests::bin("triad"))
        .args(["ctl", "kill", "raftd", "--data-dir"])
        .arg(m.data_dir())
        .output()
        .expect("triad ctl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    m.wait_restarted("raftd", old);
    let bad = std::process::Command::new(triad_tests::bin("triad"))
        .args(["ctl", "kill", "nothing", "--data-dir"])
        .arg(m.data_dir())
        .output()
        .expect("triad ctl");
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown daemon"));
    let put = m.etcdctl(&["put", "after", "ctl"]);
    assert!(
        put.status.success(),
        "{}",
        String::from_utf8_lossy(&put.stderr)
    );
}

/// Every daemon turns transparent huge pages off for itself at start
/// (`lifecycle::run_daemon`): with them on, fresh 2 MiB pages were zeroed
/// and compacted inside page faults and stalled writes (BENCHMARKS.md).
#[test]
fn daemons_run_without_transparent_huge_pages() {
    let m = triad_tests::Member::start();
    for daemon in ["storaged", "raftd", "gatewayd"] {
        let pid = m
            .pid(daemon)
            .unwrap_or_else(|| panic!("no pid for {daemon}"));
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap_or_else(|e| panic!("{daemon}'s status: {e}"));
        let thp = status
            .lines()
            .find_map(|l| l.strip_prefix("THP_enabled:"))
            .unwrap_or_else(|| panic!("no THP_enabled line for {daemon}:\n{status}"));
        assert_eq!(thp.trim(), "0", "{daemon} still allows huge pages");
    }
}
