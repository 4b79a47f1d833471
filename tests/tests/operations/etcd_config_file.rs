//! etcd's YAML config file: the file that starts etcd 3.4 starts a triad
//! member's three daemons (each given only `--config-file`, as systemd
//! runs them) with the same name, data dir, URLs and quota, or the same
//! client and peer TLS (`client-transport-security`,
//! `peer-transport-security`); as etcd, a config file makes the daemons
//! ignore other flags and variables for etcd's settings, saying so once.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use triad_tests::certs::TestCa;
use triad_tests::{bin, etcdctl, free_port_pair, prerequisite_missing, DAEMONS};

/// A config file as etcd.conf.yml.sample writes one, for one member on
/// `port` (client) and `port + 1` (peer) with its data in `data`.
fn etcd_yaml(port: u16, data: &Path) -> String {
    let client = format!("http://127.0.0.1:{port}");
    let peer = format!("http://127.0.0.1:{}", port + 1);
    format!(
        "# This is the configuration file for the etcd server.\n\
         name: 'cfgmember'\n\
         data-dir: {data}\n\
         wal-dir:\n\
         snapshot-count: 10000\n\
         heartbeat-interval: 100\n\
         election-timeout: 1000\n\
         # A quota smaller than one 8 KiB write.\n\
         quota-backend-bytes: 4096\n\
         listen-peer-urls: {peer}\n\
         listen-client-urls: {client}\n\
         max-snapshots: 5\n\
         max-wals: 5\n\
         cors:\n\
         initial-advertise-peer-urls: {peer}\n\
         advertise-client-urls: {client}\n\
         discovery:\n\
         discovery-fallback: 'proxy'\n\
         discovery-proxy:\n\
         discovery-srv:\n\
         initial-cluster: cfgmember={peer}\n\
         initial-cluster-token: 'cfg-cluster'\n\
         initial-cluster-state: 'new'\n\
         strict-reconfig-check: false\n\
         enable-v2: true\n\
         proxy: 'off'\n\
         proxy-failure-wait: 5000\n\
         proxy-refresh-interval: 30000\n\
         proxy-dial-timeout: 1000\n\
         proxy-write-timeout: 5000\n\
         proxy-read-timeout: 0\n\
         client-transport-security:\n  cert-file:\n  key-file:\n  client-cert-auth: false\n  trusted-ca-file:\n  auto-tls: false\n\
         peer-transport-security:\n  cert-file:\n  key-file:\n  client-cert-auth: false\n  trusted-ca-file:\n  auto-tls: false\n\
         debug: false\n\
         log-package-levels:\n\
         log-outputs: [default]\n\
         force-new-cluster: false\n",
        data = data.display()
    )
}

/// Processes killed (and reaped) when the test ends, however it ends.
struct Procs(Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Flags and variables a config file makes etcd (and triad) ignore.
const IGNORED_FLAGS: [&str; 4] = ["--name", "flag-name", "--quota-backend-bytes", "0"];
const IGNORED_ENV: [(&str, &str); 2] = [
    ("ETCD_NAME", "env-name"),
    ("ETCD_LISTEN_CLIENT_URLS", "http://127.0.0.1:1"),
];

fn wait_healthy(endpoint: &str, what: &str, logs: &dyn Fn() -> String) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if etcdctl(endpoint, &["endpoint", "health"]).status.success() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{what} did not become healthy on {endpoint}\n{}", logs());
}

/// What a client sees of a server started from the file.
#[derive(Debug, PartialEq)]
struct Seen {
    members: String,
    put_error: String,
    alarms: String,
}

fn look(endpoint: &str) -> Seen {
    let text = |o: &Output| String::from_utf8_lossy(&o.stdout).trim().to_string();
    let members = etcdctl(endpoint, &["member", "list"]);
    assert!(members.status.success(), "member list: {members:?}");
    let value = "v".repeat(8192);
    let put = etcdctl(endpoint, &["put", "k", &value]);
    assert!(
        !put.status.success(),
        "an 8 KiB put under a 4 KiB quota succeeded"
    );
    let put_error = String::from_utf8_lossy(&put.stderr)
        .lines()
        .find(|l| l.starts_with("Error:"))
        .unwrap_or_default()
        .to_string();
    let alarms = etcdctl(endpoint, &["alarm", "list"]);
    Seen {
        members: text(&members),
        put_error,
        alarms: text(&alarms),
    }
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

fn daemon_logs(dir: &Path) -> String {
    DAEMONS
        .iter()
        .map(|d| format!("--- {d}\n{}", read(&dir.join(format!("{d}.log")))))
        .collect()
}

#[test]
fn etcds_yaml_config_file_starts_a_member_as_it_starts_etcd() {
    if Command::new("etcd").arg("--version").output().is_err() {
        return prerequisite_missing("etcd 3.4 (the reference)");
    }
    let dir = tempfile::tempdir().unwrap();
    let port = free_port_pair();
    let endpoint = format!("127.0.0.1:{port}");
    let data: PathBuf = dir.path().join("data");
    let conf = dir.path().join("etcd.conf.yml");
    std::fs::write(&conf, etcd_yaml(port, &data)).unwrap();

    // etcd first, from the file.
    let etcd_log = dir.path().join("etcd.log");
    let etcd = Command::new("etcd")
        .arg("--config-file")
        .arg(&conf)
        .args(IGNORED_FLAGS)
        .envs(IGNORED_ENV)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&etcd_log).unwrap())
        .spawn()
        .expect("start etcd");
    let mut procs = Procs(vec![etcd]);
    wait_healthy(&endpoint, "etcd", &|| read(&etcd_log));
    let from_etcd = look(&endpoint);
    assert!(
        data.join("member").is_dir(),
        "etcd used the file's data-dir"
    );
    drop(procs);
    std::fs::remove_dir_all(&data).unwrap();

    // Then the three daemons, from the same file.
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    procs = Procs(Vec::new());
    for d in DAEMONS {
        let child = Command::new(bin(d))
            .arg("--config-file")
            .arg(&conf)
            .args(IGNORED_FLAGS)
            .envs(IGNORED_ENV)
            .env_remove("NOTIFY_SOCKET")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(logs.join(format!("{d}.log"))).unwrap())
            .spawn()
            .expect("start daemon");
        procs.0.push(child);
    }
    wait_healthy(&endpoint, "triad", &|| daemon_logs(&logs));
    let from_triad = look(&endpoint);
    assert_eq!(
        from_triad,
        from_etcd,
        "same file, same member\n{}",
        daemon_logs(&logs)
    );
    assert!(from_triad.members.contains("cfgmember"), "{from_triad:?}");
    assert!(
        from_triad.alarms.contains("NOSPACE"),
        "the file's quota took effect: {from_triad:?}"
    );
    for sub in ["storaged", "raftd"] {
        assert!(
            data.join(sub).is_dir(),
            "triad used the file's data-dir ({sub})"
        );
    }
    let all = daemon_logs(&logs);
    let etcd_said = read(&etcd_log);
    for said in [&all, &etcd_said] {
        assert!(
            said.to_lowercase().contains(
                "other configuration command line flags and environment variables will be ignored"
            ),
            "the notice etcd gives: {said}"
        );
    }
    assert!(
        !all.contains(" WARN "),
        "etcd's sample keys start triad without a warning:\n{all}"
    );
    drop(procs);
}

#[test]
fn a_yaml_value_of_the_wrong_type_stops_every_daemon_with_etcds_error() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("etcd.conf.yml");
    std::fs::write(
        &conf,
        format!(
            "name: bad\ndata-dir: {}\nquota-backend-bytes: 8GB\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let want = "error unmarshaling JSON: while decoding JSON: json: cannot unmarshal string into Go struct field configYAML.quota-backend-bytes of type int64";
    for d in DAEMONS {
        let out = Command::new(bin(d))
            .arg("--config-file")
            .arg(&conf)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{d}: {stderr}");
        assert!(stderr.contains(want), "{d}: {stderr}");
    }
    if Command::new("etcd").arg("--version").output().is_err() {
        return prerequisite_missing("etcd 3.4 (the reference)");
    }
    let out = Command::new("etcd")
        .arg("--config-file")
        .arg(&conf)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(want), "etcd: {stderr}");
}

#[test]
fn triad_up_refuses_an_etcd_yaml_file_it_would_override() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("etcd.conf.yml");
    std::fs::write(&conf, "name: x\n").unwrap();
    let mut up = Command::new(bin("triad"))
        .arg("up")
        .arg("--data-dir")
        .arg(dir.path().join("m"))
        .args(["--client-port", &free_port_pair().to_string()])
        .env("ETCD_CONFIG_FILE", &conf)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let exited = triad_tests::wait_exit(&mut up, Duration::from_secs(20));
    if !exited {
        let _ = up.kill();
    }
    let out = up.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(exited && !out.status.success(), "{stderr}");
    assert!(stderr.contains("is an etcd YAML config file"), "{stderr}");
    assert!(
        !dir.path().join("m").join("pids").exists(),
        "no daemon was started"
    );
}

/// etcdctl over TLS with `cert` (a name of the test CA's files) or none.
fn etcdctl_tls(endpoint: &str, certs: &Path, cert: Option<&str>, args: &[&str]) -> Output {
    let file = |n: String| certs.join(n).display().to_string();
    let mut cmd = Command::new("etcdctl");
    cmd.env("ETCDCTL_API", "3")
        .arg(format!("--endpoints=https://{endpoint}"))
        .arg(format!("--cacert={}", file("ca.pem".into())))
        .arg("--dial-timeout=2s")
        .arg("--command-timeout=5s");
    if let Some(c) = cert {
        cmd.arg(format!("--cert={}", file(format!("{c}.pem"))))
            .arg(format!("--key={}", file(format!("{c}-key.pem"))));
    }
    cmd.args(args).output().expect("etcdctl")
}

/// Start `program` (etcd, or each daemon) from `conf`; logs in `logs`.
fn start_from(conf: &Path, logs: &Path, programs: &[(&str, PathBuf)]) -> Procs {
    let mut procs = Procs(Vec::new());
    for (name, program) in programs {
        let child = Command::new(program)
            .arg("--config-file")
            .arg(conf)
            .env_remove("NOTIFY_SOCKET")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(logs.join(format!("{name}.log"))).unwrap())
            .spawn()
            .expect("start");
        procs.0.push(child);
    }
    procs
}

#[test]
fn client_and_peer_tls_from_the_yaml_file_as_etcd() {
    if Command::new("etcd").arg("--version").output().is_err() {
        return prerequisite_missing("etcd 3.4 (the reference)");
    }
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    let ca = TestCa::new(&certs);
    ca.issue(&certs, "server", "member", &["localhost", "127.0.0.1"], 1);
    ca.issue(&certs, "client", "root", &["localhost", "127.0.0.1"], 2);
    let file = |n: &str| certs.join(n).display().to_string();
    let port = free_port_pair();
    let endpoint = format!("127.0.0.1:{port}");
    let (client, peer) = (
        format!("https://127.0.0.1:{port}"),
        format!("https://127.0.0.1:{}", port + 1),
    );
    let data = dir.path().join("data");
    let security = format!(
        "  cert-file: {}\n  key-file: {}\n  client-cert-auth: true\n  trusted-ca-file: {}\n  auto-tls: false\n",
        file("server.pem"),
        file("server-key.pem"),
        file("ca.pem")
    );
    let conf = dir.path().join("etcd.conf.yml");
    std::fs::write(
        &conf,
        format!(
            "name: tlsmember\ndata-dir: {}\nlisten-client-urls: {client}\nadvertise-client-urls: {client}\n\
             listen-peer-urls: {peer}\ninitial-advertise-peer-urls: {peer}\n\
             initial-cluster: tlsmember={peer}\ninitial-cluster-token: tls-cluster\n\
             client-transport-security:\n{security}peer-transport-security:\n{security}",
            data.display()
        ),
    )
    .unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let read_logs = || {
        ["etcd", "storaged", "raftd", "gatewayd"]
            .iter()
            .map(|n| format!("--- {n}\n{}", read(&logs.join(format!("{n}.log")))))
            .collect::<String>()
    };
    let serve = |what: &str| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            let health = etcdctl_tls(&endpoint, &certs, Some("client"), &["endpoint", "health"]);
            if health.status.success() {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("{what} did not serve over TLS\n{}", read_logs());
    };
    // What a client sees: the member list with a certificate, and a
    // refusal without one.
    let look = || {
        let with = etcdctl_tls(&endpoint, &certs, Some("client"), &["member", "list"]);
        assert!(with.status.success(), "{with:?}\n{}", read_logs());
        let without = etcdctl_tls(&endpoint, &certs, None, &["get", "k"]);
        (
            String::from_utf8_lossy(&with.stdout).trim().to_string(),
            without.status.success(),
        )
    };

    let procs = start_from(&conf, &logs, &[("etcd", PathBuf::from("etcd"))]);
    serve("etcd");
    let from_etcd = look();
    drop(procs);
    std::fs::remove_dir_all(&data).unwrap();

    let daemons: Vec<(&str, PathBuf)> = DAEMONS.iter().map(|d| (*d, bin(d))).collect();
    let procs = start_from(&conf, &logs, &daemons);
    serve("triad");
    let from_triad = look();
    assert_eq!(from_triad, from_etcd, "{}", read_logs());
    assert!(from_triad.0.contains(&peer), "{from_triad:?}");
    assert!(!from_triad.1, "a client without a certificate is refused");
    drop(procs);
}
