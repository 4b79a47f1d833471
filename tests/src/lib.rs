//! Process-level test fixture: starts real triad members through `triad up`
//! (the supervisor and all three daemons as real processes on loopback, in a
//! temp dir), can kill -9 / SIGSTOP / restart any one daemon, and runs the
//! reference etcd for side-by-side comparisons. Tests talk to both with the
//! etcd-client crate and with etcdctl.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

pub use etcd_client;

/// Where cargo put the workspace binaries (target/<profile>).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> → target/<profile>
    exe.parent()
        .and_then(Path::parent)
        .expect("target dir")
        .to_path_buf()
}

pub fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.exists(),
        "{} missing: run `cargo build --bins` before the tests (tests/run does)",
        p.display()
    );
    p
}

/// A free client port P on 127.0.0.1 whose P+1 is free too.
pub fn free_port_pair() -> u16 {
    for _ in 0..100 {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let p = l.local_addr().expect("addr").port();
        if p < 65000 && TcpListener::bind(("127.0.0.1", p + 1)).is_ok() {
            return p;
        }
    }
    panic!("no free port pair");
}

pub const DAEMONS: [&str; 3] = ["storaged", "raftd", "gatewayd"];

/// A tiny deterministic generator for load and fuzz tests (no dependency
/// needed for coin flips and random bytes).
pub struct XorShift(pub u64);

impl XorShift {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Up to `max` random bytes.
    pub fn bytes(&mut self, max: usize) -> Vec<u8> {
        let n = (self.next_u64() % (max as u64 + 1)) as usize;
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}

/// One supervised triad member (`triad up`).
pub struct Member {
    pub dir: tempfile::TempDir,
    pub port: u16,
    up: Option<Child>,
    /// Extra environment for `triad up` and so for its daemons (TRIAD_*).
    env: Vec<(String, String)>,
}

impl Member {
    pub fn start() -> Member {
        Member::start_with_env(&[])
    }

    /// Start with `TRIAD_*` settings that `triad up`'s daemons inherit.
    pub fn start_with_env(env: &[(&str, &str)]) -> Member {
        let dir = tempfile::Builder::new()
            .prefix("triad-test")
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .tempdir()
            .expect("tempdir");
        Member::start_in(dir, env)
    }

    /// Start with client port `port` (the peer port is the next one).
    pub fn start_at(port: u16, env: &[(&str, &str)]) -> Member {
        let dir = tempfile::Builder::new()
            .prefix("triad-test")
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .tempdir()
            .expect("tempdir");
        Member::start_in_at(dir, port, env)
    }

    /// Start on `dir` (say, a power-loss disk mounted there).
    pub fn start_in(dir: tempfile::TempDir, env: &[(&str, &str)]) -> Member {
        Member::start_in_at(dir, free_port_pair(), env)
    }

    fn start_in_at(dir: tempfile::TempDir, port: u16, env: &[(&str, &str)]) -> Member {
        let env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut m = Member {
            dir,
            port,
            up: None,
            env,
        };
        m.launch();
        m
    }

    /// A member on data restored from a backup file with `triad snapshot
    /// restore` (a new one-member cluster).
    pub fn start_restored(backup: &Path) -> Member {
        let dir = tempfile::Builder::new()
            .prefix("triad-restored")
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .tempdir()
            .expect("tempdir");
        let out = Command::new(bin("triad"))
            .args(["snapshot", "restore"])
            .arg(backup)
            .arg("--data-dir")
            .arg(dir.path())
            .output()
            .expect("run triad snapshot restore");
        assert!(
            out.status.success(),
            "restore failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut m = Member {
            dir,
            port: free_port_pair(),
            up: None,
            env: Vec::new(),
        };
        m.launch();
        m
    }

    /// SIGSTOP / SIGCONT the supervisor itself (so it restarts nothing).
    pub fn pause_supervisor(&self, paused: bool) {
        let up = self.up.as_ref().expect("member is running");
        let sig = if paused {
            Signal::SIGSTOP
        } else {
            Signal::SIGCONT
        };
        kill(Pid::from_raw(up.id() as i32), sig).expect("signal supervisor");
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Set (or replace) a `TRIAD_*` setting for the next `launch`.
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_string(), value.to_string()));
    }

    /// Start `triad up` on this member's dir and wait for its ready line.
    pub fn launch(&mut self) {
        let args = [
            "--data-dir".to_string(),
            self.dir.path().to_string_lossy().into_owned(),
            "--client-port".into(),
            self.port.to_string(),
        ];
        let (mut child, first) = spawn_up(&args, &self.env, Duration::from_secs(60));
        match first {
            Ok(line) => assert_eq!(
                line,
                format!("ready {}", self.endpoint()),
                "unexpected first line"
            ),
            Err(e) => {
                let _ = child.kill();
                panic!("triad up did not become ready: {e}\n{}", self.logs());
            }
        }
        self.up = Some(child);
    }

    /// The daemons' logs, for failure messages.
    pub fn logs(&self) -> String {
        log_tails(self.dir.path(), "")
    }

    pub fn pid(&self, daemon: &str) -> Option<i32> {
        let p = self.dir.path().join("pids").join(format!("{daemon}.pid"));
        std::fs::read_to_string(p).ok()?.trim().parse().ok()
    }

    pub fn signal(&self, daemon: &str, sig: Signal) -> i32 {
        let pid = self
            .pid(daemon)
            .unwrap_or_else(|| panic!("no pid for {daemon}"));
        kill(Pid::from_raw(pid), sig).unwrap_or_else(|e| panic!("signal {daemon}: {e}"));
        pid
    }

    /// kill -9 one daemon; the supervisor restarts it.
    pub fn kill9(&self, daemon: &str) -> i32 {
        self.signal(daemon, Signal::SIGKILL)
    }

    /// Wait until the supervisor has restarted `daemon` (new pid).
    pub fn wait_restarted(&self, daemon: &str, old_pid: i32) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if self.pid(daemon).is_some_and(|p| p != old_pid) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("{daemon} was not restarted\n{}", self.logs());
    }

    /// kill -9 the supervisor and every daemon at once (a crash of the
    /// whole member); `launch` brings it back on the same data.
    pub fn crash(&mut self) {
        if let Some(mut up) = self.up.take() {
            let _ = up.kill();
            let _ = up.wait();
        }
        for d in DAEMONS {
            if let Some(pid) = self.pid(d) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
        // Daemons die with the supervisor (parent-death signal); wait until gone.
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline && DAEMONS.iter().any(|d| self.alive(d)) {
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn alive(&self, daemon: &str) -> bool {
        self.pid(daemon)
            .is_some_and(|p| kill(Pid::from_raw(p), None).is_ok())
    }

    /// Graceful stop (SIGTERM to the supervisor); returns its exit status.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut up = self.up.take()?;
        let _ = kill(Pid::from_raw(up.id() as i32), Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = up.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = up.kill();
        up.wait().ok()
    }

    pub async fn client(&self) -> etcd_client::Client {
        connect(&self.endpoint()).await
    }

    pub fn etcdctl(&self, args: &[&str]) -> Output {
        etcdctl(&self.endpoint(), args)
    }
}

/// The last lines of every daemon's log under a member's data dir, each
/// headed with `label` and the daemon's name (for failure messages).
pub fn log_tails(data_dir: &Path, label: &str) -> String {
    DAEMONS
        .iter()
        .map(|d| {
            let p = data_dir.join("logs").join(format!("{d}.log"));
            let text = std::fs::read_to_string(&p).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(30).collect();
            format!(
                "--- {label}{d} ---\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Start `triad up` with `args` and `env`: the child, and its first line
/// on stdout (the ready line) or why none came within `wait`.
pub fn spawn_up(
    args: &[String],
    env: &[(String, String)],
    wait: Duration,
) -> (Child, Result<String, String>) {
    let mut child = Command::new(bin("triad"))
        .arg("up")
        .args(args)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn triad up");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let first = rx.recv_timeout(wait).map_err(|e| e.to_string());
    (child, first)
}

impl Drop for Member {
    fn drop(&mut self) {
        self.crash();
    }
}

pub async fn connect(endpoint: &str) -> etcd_client::Client {
    let opts = etcd_client::ConnectOptions::new().with_timeout(Duration::from_secs(10));
    etcd_client::Client::connect([endpoint], Some(opts))
        .await
        .expect("connect")
}

/// Run etcdctl (v3 API) against `endpoint`.
pub fn etcdctl(endpoint: &str, args: &[&str]) -> Output {
    Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoint}"))
        .args(args)
        .output()
        .expect("etcdctl must be installed (Debian package etcd-client)")
}

/// etcdctl's stdout as a string, asserting success.
pub fn ok_stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "etcdctl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Wait up to `limit` for `child` to exit; whether it did.
pub fn wait_exit(child: &mut Child, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether process `pid` still runs: not gone, and not a zombie (a
/// paused supervisor cannot reap it, but its files and locks are
/// released).
pub fn alive(pid: i32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The state follows the parenthesised command name.
    let state = stat
        .rsplit(')')
        .next()
        .and_then(|r| r.trim_start().chars().next());
    !matches!(state, None | Some('Z') | Some('X'))
}

/// Wait (up to 10 s) until process `pid` has exited (see `alive`).
pub fn wait_dead(pid: i32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline && alive(pid) {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A throwaway real etcd (the reference implementation) on loopback.
pub struct RefEtcd {
    dir: tempfile::TempDir,
    pub port: u16,
    child: Child,
    /// etcdctl flags to reach it (TLS ones for an https etcd).
    tls: &'static [&'static str],
}

impl RefEtcd {
    /// Start etcd with `extra` flags; None when etcd is not installed.
    pub fn start(extra: &[&str]) -> Option<RefEtcd> {
        RefEtcd::launch("http", &[], extra)
    }

    /// `start` with https client URLs (give it `--auto-tls` or
    /// certificates), reached without verifying its certificate.
    pub fn start_https(extra: &[&str]) -> Option<RefEtcd> {
        RefEtcd::launch(
            "https",
            &["--insecure-transport=false", "--insecure-skip-tls-verify"],
            extra,
        )
    }

    fn launch(scheme: &str, tls: &'static [&'static str], extra: &[&str]) -> Option<RefEtcd> {
        Command::new("etcd").arg("--version").output().ok()?;
        let dir = tempfile::Builder::new().prefix("etcd-ref").tempdir().ok()?;
        let port = free_port_pair();
        let client = format!("{scheme}://127.0.0.1:{port}");
        let peer = format!("http://127.0.0.1:{}", port + 1);
        let child = Command::new("etcd")
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--initial-cluster", &format!("default={peer}")])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let r = RefEtcd {
            dir,
            port,
            child,
            tls,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        let health = [tls, &["endpoint", "health"]].concat();
        while Instant::now() < deadline {
            if etcdctl(&r.url(scheme), &health).status.success() {
                return Some(r);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("reference etcd did not become healthy");
    }

    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn url(&self, scheme: &str) -> String {
        format!("{scheme}://{}", self.endpoint())
    }

    /// Its data dir (etcd's --data-dir).
    pub fn data_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("data")
    }

    /// etcdctl's flags to reach it.
    pub fn tls_flags(&self) -> &'static [&'static str] {
        self.tls
    }
}

impl Drop for RefEtcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A test cannot run here because `what` is missing. Under `CI` that is a
/// failure (`tests/run` installs every prerequisite and CI runs as root);
/// elsewhere the test says so and ends early.
pub fn prerequisite_missing(what: &str) {
    assert!(
        std::env::var_os("CI").is_none(),
        "{what}: CI must provide it (tests/run installs every prerequisite)"
    );
    eprintln!("skipped: {what}");
}

/// A power-loss disk mounted on a new private directory, with the
/// daemons' logs written through; None (after `prerequisite_missing`)
/// where FUSE cannot be mounted.
pub fn power_disk() -> Option<(tempfile::TempDir, powerloss::PowerDisk)> {
    let dir = tempfile::Builder::new()
        .prefix("triad-powerloss")
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .tempdir()
        .expect("tempdir");
    match powerloss::PowerDisk::mount(dir.path(), &["logs"]) {
        Ok(disk) => Some((dir, disk)),
        Err(e) => {
            prerequisite_missing(&format!(
                "a FUSE mount (/dev/fuse, root or fusermount3 from Debian's fuse3): {e}"
            ));
            None
        }
    }
}

/// Start the reference etcd, or explain loudly why a comparison is skipped.
pub fn reference_etcd(extra: &[&str]) -> Option<RefEtcd> {
    let r = RefEtcd::start(extra);
    if r.is_none() {
        prerequisite_missing("etcd (Debian package etcd-server) is not installed");
    }
    r
}

/// The revision the next write will get (current revision + 1).
pub async fn next_revision(c: &mut etcd_client::Client) -> i64 {
    let r = c
        .get("\0", Some(etcd_client::GetOptions::new().with_count_only()))
        .await
        .expect("read revision");
    r.header().expect("header").revision() + 1
}

/// The value of the first sample of `name` (with labels starting `labels`)
/// in a Prometheus text page.
pub fn metric_sample(text: &str, name: &str, labels: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| l.starts_with(&format!("{name}{labels}")))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// One plain HTTP/1.1 request on a client port: (status, body). Chunked
/// bodies are reassembled.
pub fn http(endpoint: &str, method: &str, path: &str, body: &str) -> (u16, String) {
    http_with_headers(endpoint, method, path, body, &[])
}

/// `http` with extra request headers.
pub fn http_with_headers(
    endpoint: &str,
    method: &str,
    path: &str,
    body: &str,
    headers: &[(&str, &str)],
) -> (u16, String) {
    let (status, _, body) = http_exchange(endpoint, method, path, body, headers);
    (status, body)
}

/// `http_with_headers` that also returns the response's head (status
/// line and headers); a `Host` among `headers` replaces the default one.
pub fn http_exchange(
    endpoint: &str,
    method: &str,
    path: &str,
    body: &str,
    headers: &[(&str, &str)],
) -> (u16, String, String) {
    use std::io::{Read, Write};
    let mut extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        extra.insert_str(0, &format!("Host: {endpoint}\r\n"));
    }
    let mut s = std::net::TcpStream::connect(endpoint).expect("connect");
    let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
    let request = format!(
        "{method} {path} HTTP/1.1\r\nContent-Type: application/json\r\n\
         {extra}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(request.as_bytes()).expect("send request");
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let body = if chunked {
        dechunk(rest)
    } else {
        rest.to_string()
    };
    (status, head.to_string(), body)
}

fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || after.len() < n {
            out.push_str(&after[..after.len().min(n)]);
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
    out
}

/// A raw gRPC channel to a client endpoint (host:port).
pub async fn grpc_channel(endpoint: &str) -> tonic::transport::Channel {
    tonic::transport::Channel::from_shared(format!("http://{endpoint}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect")
}

/// Authenticate over `ch`: the token (panics if refused).
pub async fn login(ch: &tonic::transport::Channel, name: &str, password: &str) -> String {
    use common::proto::etcdserverpb::{auth_client::AuthClient, AuthenticateRequest};
    AuthClient::new(ch.clone())
        .authenticate(AuthenticateRequest {
            name: name.into(),
            password: password.into(),
        })
        .await
        .expect("authenticate")
        .into_inner()
        .token
}

/// A gRPC request carrying an etcd auth token (metadata `token`).
pub fn with_token<T>(msg: T, token: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    if let Ok(v) = token.parse() {
        r.metadata_mut().insert("token", v);
    }
    r
}

pub mod certs;
pub mod cluster;
pub mod dns;
pub mod fault_run;
pub mod history;
pub mod load;
pub mod nemesis;
pub mod netsplit;
pub mod otlp;
pub mod power_cuts;
pub mod powerloss;

/// gatewayd in proxy mode on 127.0.0.1 (killed when dropped); its stderr
/// log stays in its temp dir for failure messages.
pub struct Proxy {
    child: Child,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl Proxy {
    /// `gatewayd --proxy <mode> <args>` on a free port; returns once the
    /// port accepts connections.
    pub fn start(mode: &str, args: &[&str]) -> Proxy {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port_pair();
        let log = std::fs::File::create(dir.path().join("proxy.log")).expect("proxy log");
        let child = Command::new(bin("gatewayd"))
            .args(["--proxy", mode])
            .args(args)
            .arg(format!("--listen-client-urls=http://127.0.0.1:{port}"))
            .arg("--data-dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start the proxy");
        let proxy = Proxy { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "proxy never listened\n{}",
                proxy.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        proxy
    }

    /// A proxy in front of `endpoints`.
    pub fn in_front_of(mode: &str, endpoints: &[String], args: &[&str]) -> Proxy {
        let endpoints = format!("--proxy-endpoints={}", endpoints.join(","));
        let all: Vec<&str> = [endpoints.as_str()]
            .into_iter()
            .chain(args.iter().copied())
            .collect();
        Proxy::start(mode, &all)
    }

    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("proxy.log")).unwrap_or_default()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
