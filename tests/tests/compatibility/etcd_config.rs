//! An etcd configuration starts a triad member: the environment file
//! Debian's etcd-server package ships (`/etc/default/etcd`), with only the
//! paths and addresses filled in as `ETCD_*` lines, given to all three
//! daemons; and the same configuration as an etcd command line (Go's
//! `-flag value` form). Options with no meaning for triad are accepted with
//! one warning each and never stop a daemon.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use triad_tests::{bin, etcdctl, free_port_pair};

/// Debian's file when installed, else its text (etcd-server 3.4.23).
fn debian_env_file() -> String {
    std::fs::read_to_string("/etc/default/etcd").unwrap_or_else(|_| {
        "## etcd(1) daemon options\n## See \"/usr/share/doc/etcd-server/op-guide/configuration.md.gz\"\n\
         ## for available options.\n##\n## Use environment to override, for example: ETCD_NAME=default\n"
            .to_string()
    })
}

/// KEY=VALUE lines of an environment file (comments and blanks skipped).
fn parse_env(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().trim_matches('"').to_string()))
        .collect()
}

struct Daemons(Vec<Child>);

impl Drop for Daemons {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn start(dir: &Path, env: &[(String, String)], args: &[String]) -> Daemons {
    let mut children = Vec::new();
    for daemon in ["storaged", "raftd", "gatewayd"] {
        let log = std::fs::File::create(dir.join(format!("{daemon}.log"))).expect("log");
        // In the test's directory: a data dir left to a default lands there.
        let child = Command::new(bin(daemon))
            .current_dir(dir)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(env.iter().cloned())
            .args(args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start daemon");
        children.push(child);
    }
    Daemons(children)
}

fn serves(ep: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if etcdctl(ep, &["put", "from-etcd-config", "yes"])
            .status
            .success()
        {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    false
}

fn logs(dir: &Path, daemon: &str) -> String {
    std::fs::read_to_string(dir.join(format!("{daemon}.log"))).unwrap_or_default()
}

#[test]
fn debian_etcd_environment_file_starts_a_member() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port_pair();
    let (client, peer) = (
        format!("http://127.0.0.1:{port}"),
        format!("http://127.0.0.1:{}", port + 1),
    );
    let file = format!(
        "{}\nETCD_NAME=\"m1\"\nETCD_DATA_DIR=\"{}\"\nETCD_LISTEN_CLIENT_URLS=\"{client}\"\n\
         ETCD_ADVERTISE_CLIENT_URLS=\"{client}\"\nETCD_LISTEN_PEER_URLS=\"{peer}\"\n\
         ETCD_INITIAL_ADVERTISE_PEER_URLS=\"{peer}\"\nETCD_INITIAL_CLUSTER=\"m1={peer}\"\n\
         ETCD_INITIAL_CLUSTER_STATE=\"new\"\nETCD_MAX_WALS=\"5\"\nETCD_ENABLE_V2=\"false\"\n",
        debian_env_file(),
        dir.path().join("data").display()
    );
    let env = parse_env(&file);
    let daemons = start(dir.path(), &env, &[]);
    let ep = format!("127.0.0.1:{port}");
    assert!(
        serves(&ep),
        "gatewayd log:\n{}",
        logs(dir.path(), "gatewayd")
    );
    let list = etcdctl(&ep, &["member", "list"]);
    assert!(
        String::from_utf8_lossy(&list.stdout).contains(", m1, "),
        "the name came from ETCD_NAME"
    );
    drop(daemons);
    for daemon in ["storaged", "raftd", "gatewayd"] {
        let log = logs(dir.path(), daemon);
        for meaningless in ["max-wals", "enable-v2"] {
            let n = log
                .lines()
                .filter(|l| l.contains(&format!("ignoring etcd option {meaningless}")))
                .count();
            assert_eq!(n, 1, "{daemon} warns once of {meaningless}:\n{log}");
        }
        assert!(
            !log.contains("ignoring etcd option listen-peer-urls"),
            "a sibling's option is not warned of"
        );
    }
}

#[test]
fn etcd_command_line_starts_a_member() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port_pair();
    let (client, peer) = (
        format!("http://127.0.0.1:{port}"),
        format!("http://127.0.0.1:{}", port + 1),
    );
    let data = dir.path().join("data").display().to_string();
    let args: Vec<String> = [
        "-name",
        "m1",
        "-data-dir",
        &data,
        "--listen-client-urls",
        &client,
        "--advertise-client-urls",
        &client,
        "-listen-peer-urls",
        &peer,
        "--initial-advertise-peer-urls",
        &peer,
        "--initial-cluster",
        &format!("m1={peer}"),
        "--initial-cluster-token",
        "tok",
        "--initial-cluster-state",
        "new",
        "--heartbeat-interval",
        "100",
        "--election-timeout",
        "1000",
        "--snapshot-count",
        "10000",
        "--max-request-bytes",
        "1572864",
        "--quota-backend-bytes",
        "2147483648",
        "--auto-compaction-retention",
        "1",
        "--pre-vote",
        "--strict-reconfig-check=true",
        "--logger",
        "zap",
        "--log-level",
        "info",
        "--enable-pprof",
        "--max-snapshots",
        "5",
        "--experimental-watch-progress-notify-interval",
        "5s",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let _daemons = start(dir.path(), &[], &args);
    let ep = format!("127.0.0.1:{port}");
    assert!(
        serves(&ep),
        "gatewayd log:\n{}",
        logs(dir.path(), "gatewayd")
    );
    let log = logs(dir.path(), "raftd");
    assert!(log.contains("ignoring etcd option max-snapshots"), "{log}");
    // --logger zap: JSON lines shaped like etcd's, naming daemon and member.
    let line = log
        .lines()
        .find(|l| l.contains("max-snapshots"))
        .expect("the warning line");
    for field in [
        "{\"level\":\"warn\"",
        "\"ts\":\"",
        "\"caller\":\"",
        "\"msg\":\"ignoring etcd option max-snapshots",
        "\"daemon\":\"raftd\"",
        "\"member\":\"",
    ] {
        assert!(line.contains(field), "{field} missing in {line}");
    }
}
