//! The Debian package on a booted Debian: a bookworm root (debootstrap,
//! cached under target/container) boots a fresh copy of itself under
//! systemd-nspawn with systemd as its PID 1, sharing the host's network.
//! In it the package's whole life is checked against the real service
//! manager: a first install enables the units and starts nothing; the
//! started member serves the host's etcdctl; restarting each daemon alone
//! fails no write and loses or repeats no watch event; warnings reach the
//! journal at their priority; the probes answer at once with raftd
//! stopped, naming it; a member that cannot start (a data dir the sandbox
//! cannot write) fails triad.target; stopping triad.target stops it; an
//! upgrade restarts every daemon on the new binary while writes go on; a
//! reinstall keeps a disabled target disabled; a learner started on the
//! host is listed started, and once promoted removes the container's
//! member, whose raftd and gatewayd exit for good; a purge leaves no unit
//! link, data or user behind.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use triad_tests::{bin_dir, etcdctl, free_port_pair, prerequisite_missing, wait_exit, DAEMONS};

const SUITE: &str = "bookworm";
/// minbase has no init: systemd as PID 1, and what the package depends on.
const INCLUDE: &str = "systemd,systemd-sysv,dbus,adduser,init-system-helpers";
/// The container's PATH (nsenter would pass on the test's own).
const PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
const SERVICES: [&str; 3] = [
    "triad-storaged.service",
    "triad-raftd.service",
    "triad-gatewayd.service",
];
const UNITS: [&str; 6] = [
    "triad.target",
    "triad-check.service",
    "triad-storaged.service",
    "triad-raftd.service",
    "triad-gatewayd.socket",
    "triad-gatewayd.service",
];
/// etcdctl's limits for one put: a daemon restart must fit well inside.
const PUT_TIMEOUTS: [&str; 2] = ["--command-timeout=15s", "--dial-timeout=5s"];
/// A writer stops here even if nobody stops it.
const MAX_PUTS: usize = 5000;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// The cached root and the per-run copies live here (same filesystem, so
/// the finished cache is renamed into place and copies can share blocks).
fn cache_dir() -> PathBuf {
    repo().join("target").join("container")
}

fn output_text(out: &Output) -> String {
    format!(
        "{}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// stdout of a host command that must succeed.
fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run");
    assert!(out.status.success(), "{cmd:?}: {}", output_text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A system tool by name, also in the sbin directories a non-login PATH
/// may lack.
fn tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// The mirror the host's apt takes bookworm from (deb822 `.sources` or
/// one-line `.list` files), else Debian's own.
fn mirror() -> String {
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(dir) = std::fs::read_dir("/etc/apt/sources.list.d") {
        let mut more: Vec<PathBuf> = dir.flatten().map(|e| e.path()).collect();
        more.sort();
        files.extend(more);
    }
    for file in files {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        if file.extension().is_some_and(|e| e == "sources") {
            for stanza in text.split("\n\n") {
                let field = |name: &str| {
                    stanza
                        .lines()
                        .find_map(|l| l.strip_prefix(name))
                        .map(str::trim)
                };
                let ours =
                    field("Suites:").is_some_and(|s| s.split_whitespace().any(|s| s == SUITE));
                if let Some(uri) = field("URIs:").and_then(|u| u.split_whitespace().next()) {
                    if ours {
                        return uri.trim_end_matches('/').to_string();
                    }
                }
            }
        } else {
            for line in text.lines() {
                let Some(rest) = line.trim().strip_prefix("deb ") else {
                    continue;
                };
                // `[arch=... signed-by=...]` options come before the URI.
                let rest = match rest.trim_start().strip_prefix('[') {
                    Some(opts) => opts.split_once(']').map_or("", |(_, r)| r),
                    None => rest,
                };
                let mut words = rest.split_whitespace();
                if let (Some(uri), Some(SUITE)) = (words.next(), words.next()) {
                    return uri.trim_end_matches('/').to_string();
                }
            }
        }
    }
    "http://deb.debian.org/debian".to_string()
}

/// Whether `mirror` answers for the suite within seconds (an HTTP HEAD of
/// its Release file; for https a TCP connection); Err says why not.
fn mirror_answers(mirror: &str) -> Result<(), String> {
    let (rest, port, tls) = match mirror.split_once("://") {
        Some(("http", rest)) => (rest, 80, false),
        Some(("https", rest)) => (rest, 443, true),
        _ => return Err(format!("{mirror}: not an http(s) URI")),
    };
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let hostport = if host.contains(':') {
        host.to_string()
    } else {
        format!("{host}:{port}")
    };
    let addr = hostport
        .to_socket_addrs()
        .map_err(|e| format!("{hostport}: {e}"))?
        .next()
        .ok_or_else(|| format!("{hostport}: no address"))?;
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
        .map_err(|e| format!("{hostport}: {e}"))?;
    if tls {
        return Ok(());
    }
    let timeout = Some(Duration::from_secs(10));
    s.set_read_timeout(timeout).map_err(|e| e.to_string())?;
    s.set_write_timeout(timeout).map_err(|e| e.to_string())?;
    let release: Vec<&str> = [path, "dists", SUITE, "Release"]
        .into_iter()
        .filter(|p| !p.is_empty())
        .collect();
    write!(
        s,
        "HEAD /{} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n",
        release.join("/")
    )
    .map_err(|e| format!("{hostport}: {e}"))?;
    let mut head = [0u8; 64];
    let n = s.read(&mut head).map_err(|e| format!("{hostport}: {e}"))?;
    let status = String::from_utf8_lossy(&head[..n]).into_owned();
    match status.split_whitespace().nth(1) {
        Some(code) if code.starts_with('2') || code.starts_with('3') => Ok(()),
        _ => Err(format!("{hostport} answered {status:?}")),
    }
}

/// The cached bookworm root, built on first use; None (after
/// `prerequisite_missing`) when it cannot be built here. A build goes to a
/// temporary directory renamed into place when complete, so an interrupted
/// build is never taken for a cache.
fn bookworm_root() -> Option<PathBuf> {
    let cache = cache_dir().join("bookworm-root");
    if cache.is_dir() {
        return Some(cache);
    }
    let Some(debootstrap) = tool("debootstrap") else {
        prerequisite_missing("debootstrap (Debian package debootstrap) is not installed");
        return None;
    };
    let mirror = mirror();
    if let Err(why) = mirror_answers(&mirror) {
        prerequisite_missing(&format!("the Debian mirror is unreachable: {why}"));
        return None;
    }
    std::fs::create_dir_all(cache_dir()).expect("create target/container");
    let building = tempfile::Builder::new()
        .prefix("bookworm-root.building-")
        .tempdir_in(cache_dir())
        .expect("tempdir");
    let root = building.path().join("root");
    let started = Instant::now();
    let out = Command::new("timeout")
        .args(["--kill-after=10", "1200"])
        .arg(debootstrap)
        .args(["--variant=minbase", &format!("--include={INCLUDE}"), SUITE])
        .arg(&root)
        .arg(&mirror)
        .stdin(Stdio::null())
        .output()
        .expect("debootstrap");
    if !out.status.success() {
        let log =
            std::fs::read_to_string(root.join("debootstrap/debootstrap.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(30).collect();
        panic!(
            "debootstrap {SUITE} from {mirror} failed: {}\nlog tail (newest first):\n{}",
            output_text(&out),
            tail.join("\n")
        );
    }
    // The downloaded packages would only make every copy bigger.
    if let Ok(debs) = std::fs::read_dir(root.join("var/cache/apt/archives")) {
        for deb in debs.flatten() {
            if deb.path().extension().is_some_and(|e| e == "deb") {
                let _ = std::fs::remove_file(deb.path());
            }
        }
    }
    match std::fs::rename(&root, &cache) {
        Ok(()) => {}
        // Another run finished its build first: use that one.
        Err(_) if cache.is_dir() => {}
        Err(e) => panic!("{} -> {}: {e}", root.display(), cache.display()),
    }
    eprintln!(
        "built the {SUITE} root from {mirror} in {:.0?}",
        started.elapsed()
    );
    Some(cache)
}

/// A booted copy of the cached root. Dropping it powers the container off
/// (bounded, then killed) and deletes the copy.
struct Container {
    nspawn: Child,
    /// The container's PID 1 as the host sees it (0 until found).
    leader: i32,
    console: PathBuf,
    /// Declared last: removed only after `drop` has stopped the container.
    dir: tempfile::TempDir,
}

impl Container {
    fn boot(cache: &Path, nspawn: &Path) -> Container {
        let dir = tempfile::Builder::new()
            .prefix("run-")
            .tempdir_in(cache_dir())
            .expect("tempdir");
        let root = dir.path().join("root");
        run(Command::new("cp")
            .args(["-a", "--reflink=auto"])
            .arg(cache)
            .arg(&root));
        let console = dir.path().join("console.log");
        let log = File::create(&console).expect("console log");
        let mut cmd = Command::new(nspawn);
        cmd.arg("--boot")
            .arg(format!("--directory={}", root.display()))
            .arg(format!("--machine=triad-pkg-{}", std::process::id()))
            // No machined registration: the host need not run systemd.
            .arg("--register=no")
            .arg("--link-journal=no")
            .arg("--console=read-only");
        if !Path::new("/run/systemd/system").exists() {
            // Without a host systemd there is no scope to create: the
            // container stays in the cgroup the test runs in.
            cmd.arg("--keep-unit");
        }
        let nspawn = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .expect("systemd-nspawn");
        let mut c = Container {
            nspawn,
            leader: 0,
            console,
            dir,
        };
        c.leader = c.find_leader();
        c.wait_booted();
        c
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    fn console_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.console).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    fn exited(&mut self) -> bool {
        matches!(self.nspawn.try_wait(), Ok(Some(_)))
    }

    /// The container's init: nspawn's child in a PID namespace of its own.
    fn find_leader(&mut self) -> i32 {
        let nspawn = self.nspawn.id().to_string();
        let own_ns = std::fs::read_link("/proc/self/ns/pid").expect("own pid namespace");
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            assert!(
                !self.exited(),
                "systemd-nspawn exited while starting the container:\n{}",
                self.console_tail()
            );
            for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
                let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                    continue;
                };
                let status =
                    std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
                let ppid = status.lines().find_map(|l| l.strip_prefix("PPid:"));
                if ppid.map(str::trim) != Some(nspawn.as_str()) {
                    continue;
                }
                let ns = std::fs::read_link(format!("/proc/{pid}/ns/pid"));
                if ns.is_ok_and(|ns| ns != own_ns) {
                    return pid;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "no container init under systemd-nspawn after 30 s:\n{}",
            self.console_tail()
        );
    }

    /// Until systemd inside has finished booting: "running", or "degraded"
    /// with its failed units logged (a unit unfit for a container fails
    /// there without concerning triad).
    fn wait_booted(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            assert!(
                !self.exited(),
                "the container stopped while booting:\n{}",
                self.console_tail()
            );
            let out = self.sh_within(60, "systemctl is-system-running --wait");
            let state = String::from_utf8_lossy(&out.stdout).trim().to_string();
            match state.as_str() {
                "running" => return,
                "degraded" => {
                    let failed = self.sh("systemctl --failed --no-legend --plain --no-pager");
                    eprintln!(
                        "the container booted degraded; failed units:\n{}",
                        String::from_utf8_lossy(&failed.stdout)
                    );
                    return;
                }
                _ => {}
            }
            assert!(
                Instant::now() < deadline,
                "the container did not finish booting in 120 s (state {state:?}: {})\n{}",
                output_text(&out),
                self.console_tail()
            );
            // Its systemd may not be listening yet.
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// A shell script run inside the container (all its namespaces, a
    /// clean environment), killed after `secs`.
    fn sh_within(&self, secs: u64, script: &str) -> Output {
        Command::new("timeout")
            .args(["--kill-after=5", &secs.to_string(), "nsenter"])
            .arg(format!("--target={}", self.leader))
            .args(["--all", "--", "/usr/bin/env", "-i", PATH, "LANG=C.UTF-8"])
            .args(["DEBIAN_FRONTEND=noninteractive", "/bin/sh", "-c", script])
            .stdin(Stdio::null())
            .output()
            .expect("nsenter (util-linux)")
    }

    fn sh(&self, script: &str) -> Output {
        self.sh_within(120, script)
    }

    /// stdout of a script that must succeed inside.
    fn ok(&self, script: &str) -> String {
        let out = self.sh(script);
        assert!(
            out.status.success(),
            "in the container: {script}: {}",
            output_text(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `systemctl is-active` of each unit (it fails unless all are active).
    fn active(&self, units: &[&str]) -> Vec<String> {
        let out = self.sh(&format!("systemctl is-active {}", units.join(" ")));
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn is_enabled(&self, unit: &str) -> String {
        let out = self.sh(&format!("systemctl is-enabled {unit}"));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn main_pid(&self, unit: &str) -> u32 {
        let pid = self.ok(&format!("systemctl show --property=MainPID --value {unit}"));
        pid.trim().parse().expect("MainPID")
    }

    fn main_pids(&self) -> Vec<u32> {
        SERVICES.iter().map(|s| self.main_pid(s)).collect()
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        if std::thread::panicking() && self.leader > 0 {
            let journal = self.sh_within(20, "journalctl --no-pager -n 60 -u 'triad-*'");
            eprintln!(
                "the member's journal, last lines:\n{}",
                String::from_utf8_lossy(&journal.stdout)
            );
        }
        // nspawn passes SIGTERM on as SIGRTMIN+3: the container's systemd
        // powers off.
        let _ = kill(Pid::from_raw(self.nspawn.id() as i32), Signal::SIGTERM);
        let started = Instant::now();
        if wait_exit(&mut self.nspawn, Duration::from_secs(30)) {
            eprintln!("container powered off in {:.1?}", started.elapsed());
        } else {
            eprintln!("the container did not power off within 30 s: killed");
            if self.leader > 0 {
                // Its PID 1 gone, the kernel ends the whole namespace.
                let _ = kill(Pid::from_raw(self.leader), Signal::SIGKILL);
            }
            let _ = self.nspawn.kill();
            let _ = self.nspawn.wait();
        }
    }
}

/// Build the package from the test binaries; its path.
fn build_deb(out: &Path, version: Option<&str>) -> PathBuf {
    let mut cmd = Command::new(repo().join("systemd/build-deb"));
    cmd.arg("--bin-dir")
        .arg(bin_dir())
        .arg("--out")
        .arg(out)
        .arg("--fast");
    if let Some(v) = version {
        cmd.args(["--version", v]);
    }
    PathBuf::from(run(&mut cmd).trim())
}

/// Point the installed member at `port` (client) and `port + 1` (peer),
/// as an administrator would: triad.toml edited, and the socket's
/// ListenStream= replaced by a drop-in like `systemctl edit` writes.
fn configure(root: &Path, port: u16) {
    let client = format!("127.0.0.1:{port}");
    let peer = format!("127.0.0.1:{}", port + 1);
    let toml = root.join("etc/triad/triad.toml");
    let text = std::fs::read_to_string(&toml).expect("installed triad.toml");
    for wanted in ["127.0.0.1:2379", "127.0.0.1:2380", "\n[storaged]"] {
        assert!(
            text.contains(wanted),
            "the shipped triad.toml has no {wanted:?} to adapt:\n{text}"
        );
    }
    let text = text
        .replace("127.0.0.1:2379", &client)
        .replace("127.0.0.1:2380", &peer)
        .replacen(
            "\n[storaged]",
            &format!("initial-cluster = \"default=http://{peer}\"\n\n[storaged]"),
            1,
        );
    std::fs::write(&toml, text).expect("write triad.toml");
    let dropin = root.join("etc/systemd/system/triad-gatewayd.socket.d");
    std::fs::create_dir_all(&dropin).expect("drop-in dir");
    std::fs::write(
        dropin.join("override.conf"),
        format!("[Socket]\nListenStream=\nListenStream={client}\n"),
    )
    .expect("socket drop-in");
}

/// The value of `"Name" : value` in etcdctl's `-w fields` output.
fn field<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    let prefix = format!("\"{name}\" : ");
    text.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .map(str::trim)
}

/// Put until the member answers (it may still be electing itself).
fn wait_serving(ep: &str, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let out = etcdctl(ep, &["--command-timeout=5s", "put", "probe", "up"]);
        if out.status.success() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the member on {ep} does not serve: {}",
            output_text(&out)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A member `triad up` runs on the host, stopped when dropped.
struct HostMember(Option<Child>);

impl HostMember {
    fn stop(&mut self) {
        if let Some(mut up) = self.0.take() {
            let _ = kill(Pid::from_raw(up.id() as i32), Signal::SIGTERM);
            if !wait_exit(&mut up, Duration::from_secs(20)) {
                let _ = up.kill();
                let _ = up.wait();
            }
        }
    }
}

impl Drop for HostMember {
    fn drop(&mut self) {
        self.stop();
    }
}

fn port_closed(port: u16) -> bool {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_err()
}

/// One put of a writer: when it started, how long it took, and its
/// revision or etcdctl's complaint.
struct Put {
    key: String,
    at: Instant,
    took: Duration,
    result: Result<i64, String>,
}

/// Puts from the host, one etcdctl process each (so each put dials the
/// client port anew, as short-lived clients do), until stopped.
struct Writer {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<Vec<Put>>,
}

impl Writer {
    fn start(ep: &str, prefix: &str) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let (ep, prefix, halt) = (ep.to_string(), prefix.to_string(), stop.clone());
        let handle = std::thread::spawn(move || {
            let mut puts = Vec::new();
            for i in 0..MAX_PUTS {
                if halt.load(Ordering::Relaxed) {
                    break;
                }
                let key = format!("{prefix}{i:06}");
                let at = Instant::now();
                let mut args = PUT_TIMEOUTS.to_vec();
                let value = i.to_string();
                args.extend(["-w", "fields", "put", &key, &value]);
                let out = etcdctl(&ep, &args);
                let took = at.elapsed();
                let text = String::from_utf8_lossy(&out.stdout);
                let result = match field(&text, "Revision").map(str::parse::<i64>) {
                    Some(Ok(rev)) if out.status.success() => Ok(rev),
                    _ => Err(output_text(&out)),
                };
                puts.push(Put {
                    key,
                    at,
                    took,
                    result,
                });
            }
            puts
        });
        Writer { stop, handle }
    }

    fn finish(self) -> Vec<Put> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().expect("writer thread")
    }
}

/// The puts that failed, described against `t0`.
fn failures(puts: &[Put], t0: Instant) -> Vec<String> {
    puts.iter()
        .filter_map(|p| {
            p.result.as_ref().err().map(|e| {
                format!(
                    "{} at +{:.2?} after {:.2?}: {e}",
                    p.key,
                    p.at.saturating_duration_since(t0),
                    p.took
                )
            })
        })
        .collect()
}

/// `etcdctl watch` on the host from a revision; a reader thread collects
/// its events as (key, mod revision) in the order they arrive.
struct Watch {
    child: Child,
    events: Arc<Mutex<Vec<(String, i64)>>>,
    reader: JoinHandle<()>,
    stderr: File,
}

impl Watch {
    fn start(ep: &str, prefix: &str, rev: i64) -> Watch {
        let stderr = tempfile::tempfile().expect("stderr file");
        let mut child = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={ep}"))
            .args(["-w", "fields", "watch", "--prefix", prefix])
            .arg(format!("--rev={rev}"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr.try_clone().expect("stderr fd"))
            .spawn()
            .expect("etcdctl watch");
        let stdout = child.stdout.take().expect("watch stdout");
        let events = Arc::new(Mutex::new(Vec::new()));
        let seen = events.clone();
        let reader = std::thread::spawn(move || {
            let mut key = None;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(k) = line.strip_prefix("\"Key\" : ") {
                    key = Some(k.trim().trim_matches('"').to_string());
                } else if let Some(r) = line.strip_prefix("\"ModRevision\" : ") {
                    if let (Some(k), Ok(r)) = (key.take(), r.trim().parse::<i64>()) {
                        seen.lock().unwrap_or_else(|e| e.into_inner()).push((k, r));
                    }
                }
            }
        });
        Watch {
            child,
            events,
            reader,
            stderr,
        }
    }

    fn seen(&self, key: &str) -> bool {
        let events = self.events.lock().unwrap_or_else(|e| e.into_inner());
        events.iter().any(|(k, _)| k == key)
    }

    /// Stop watching: the events, and what etcdctl said on stderr.
    fn finish(mut self) -> (Vec<(String, i64)>, String) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = self.reader.join();
        let mut said = String::new();
        let _ = self.stderr.rewind();
        let _ = self.stderr.read_to_string(&mut said);
        let events = self.events.lock().unwrap_or_else(|e| e.into_inner());
        (events.clone(), said)
    }
}

/// A span of time writes went through: what happened, from, to.
type Window = (&'static str, Instant, Instant);

/// Finish a writer and check it against a watch from before its first
/// put: no put failed, and the watch saw every put once, in order (the
/// writer is sequential, so its acknowledgements are in revision order).
/// How the puts fared in each window is printed first. Returns the puts.
fn check_writes(
    ep: &str,
    writer: Writer,
    watch: Watch,
    t0: Instant,
    what: &str,
    windows: &[Window],
) -> Vec<Put> {
    let puts = writer.finish();
    for (event, from, to) in windows {
        let overlapping: Vec<&Put> = puts
            .iter()
            .filter(|p| p.at < *to && p.at + p.took > *from)
            .collect();
        let longest = overlapping.iter().map(|p| p.took).max().unwrap_or_default();
        eprintln!(
            "{event}: took {:.2?}; {} puts overlapped it, the longest {longest:.2?}",
            *to - *from,
            overlapping.len()
        );
    }
    let sentinel = format!("{what}/~end");
    let mut args = PUT_TIMEOUTS.to_vec();
    args.extend(["put", &sentinel, "done"]);
    let out = etcdctl(ep, &args);
    assert!(out.status.success(), "sentinel put: {}", output_text(&out));
    let deadline = Instant::now() + Duration::from_secs(30);
    while !watch.seen(&sentinel) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let (events, said) = watch.finish();
    assert!(
        events.iter().any(|(k, _)| *k == sentinel),
        "{what}: the watch did not see the final put in 30 s ({} events; etcdctl said: {said})",
        events.len()
    );
    let failed = failures(&puts, t0);
    if !failed.is_empty() {
        // Whether a failed put took effect all the same (an ambiguous
        // "request timed out") or not: the watch knows.
        let applied: Vec<&str> = puts
            .iter()
            .filter(|p| p.result.is_err() && events.iter().any(|(k, _)| *k == p.key))
            .map(|p| p.key.as_str())
            .collect();
        let windows: Vec<String> = windows
            .iter()
            .map(|(e, from, to)| {
                format!(
                    "{e} from +{:.2?} to +{:.2?}",
                    from.saturating_duration_since(t0),
                    to.saturating_duration_since(t0)
                )
            })
            .collect();
        panic!(
            "{what}: {} of {} puts failed ({}; applied all the same: {applied:?}):\n{}",
            failed.len(),
            puts.len(),
            windows.join(", "),
            failed.join("\n")
        );
    }
    let acked: Vec<(String, i64)> = puts
        .iter()
        .filter_map(|p| p.result.as_ref().ok().map(|r| (p.key.clone(), *r)))
        .collect();
    let watched: Vec<(String, i64)> = events.into_iter().filter(|(k, _)| *k != sentinel).collect();
    if watched != acked {
        let first = watched
            .iter()
            .zip(&acked)
            .position(|(w, a)| w != a)
            .unwrap_or(watched.len().min(acked.len()));
        panic!(
            "{what}: the watch saw {} events for {} acknowledged puts; first difference at \
             {first}: watched {:?}, put {:?} (etcdctl said: {said})",
            watched.len(),
            acked.len(),
            watched.get(first),
            acked.get(first)
        );
    }
    puts
}

/// The revision of a put made now (a watch from the next one sees only
/// what follows).
fn put_revision(ep: &str, key: &str) -> i64 {
    let out = etcdctl(ep, &["-w", "fields", "put", key, "x"]);
    assert!(out.status.success(), "put {key}: {}", output_text(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    field(&text, "Revision")
        .and_then(|r| r.parse().ok())
        .unwrap_or_else(|| panic!("no revision in {text}"))
}

#[test]
fn the_package_on_a_booted_debian() {
    if !nix::unistd::Uid::effective().is_root() {
        prerequisite_missing("booting a container needs root");
        return;
    }
    let Some(nspawn) = tool("systemd-nspawn") else {
        prerequisite_missing("systemd-nspawn (Debian package systemd-container) is not installed");
        return;
    };
    let mut timings: Vec<(&str, Duration)> = Vec::new();
    let t = Instant::now();
    let Some(cache) = bookworm_root() else {
        return;
    };
    timings.push(("bookworm root (cached or built)", t.elapsed()));

    let t = Instant::now();
    let debs = tempfile::tempdir().expect("tempdir");
    let deb = build_deb(debs.path(), None);
    let version = run(Command::new("dpkg-deb").arg("-f").arg(&deb).arg("Version"));
    let upgrade_version = format!("{}+upgrade1", version.trim());
    let upgrade = build_deb(debs.path(), Some(&upgrade_version));
    timings.push(("two packages built", t.elapsed()));

    let t = Instant::now();
    let c = Container::boot(&cache, &nspawn);
    timings.push(("copy and boot", t.elapsed()));
    std::fs::copy(&deb, c.root().join("root/triad.deb")).expect("copy the package in");
    std::fs::copy(&upgrade, c.root().join("root/triad-upgrade.deb")).expect("copy the upgrade in");

    // a. A first install: the user, enabled units, nothing running.
    let t = Instant::now();
    c.ok("dpkg -i /root/triad.deb");
    let user = c.ok("getent passwd triad");
    assert!(user.contains(":/var/lib/triad:"), "{user}");
    for unit in UNITS {
        assert_eq!(
            c.is_enabled(unit),
            "enabled",
            "{unit} after a first install"
        );
    }
    assert_eq!(
        c.active(&UNITS),
        ["inactive"; 6],
        "a first install starts nothing"
    );
    timings.push(("a. install", t.elapsed()));

    // a'. A member that cannot start (its data dir is where the units'
    // sandbox cannot write, as Debian's etcd keeps its data) fails
    // triad.target at the member check, and no daemon runs.
    let t = Instant::now();
    let port = free_port_pair();
    let ep = format!("127.0.0.1:{port}");
    configure(&c.root(), port);
    let defaults = c.root().join("etc/default/triad");
    let shipped = std::fs::read_to_string(&defaults).expect("/etc/default/triad");
    std::fs::write(
        &defaults,
        format!("{shipped}TRIAD_DATA_DIR=/var/lib/etcd/default\n"),
    )
    .expect("write /etc/default/triad");
    let start = c.sh("systemctl daemon-reload && systemctl start triad.target");
    assert!(
        !start.status.success(),
        "the target started with an unusable data dir"
    );
    // (The socket, which sockets.target also wants and must not wait for
    // a service, keeps listening; the gatewayd it would start cannot.)
    let units = ["triad.target", "triad-check.service"]
        .into_iter()
        .chain(SERVICES)
        .collect::<Vec<_>>();
    let states = c.active(&units);
    assert!(
        states.iter().all(|s| s != "active" && s != "activating"),
        "a failed member check left units running: {units:?} {states:?}"
    );
    assert_eq!(
        c.sh("systemctl is-failed triad-check.service")
            .status
            .code(),
        Some(0)
    );
    let why = c.ok("journalctl --no-pager -q -u triad-check.service");
    assert!(
        why.contains("/var/lib/etcd") && why.contains("ReadWritePaths="),
        "the check's journal does not say why: {why}"
    );
    std::fs::write(&defaults, shipped).expect("restore /etc/default/triad");
    c.ok("systemctl reset-failed");
    timings.push(("a'. unusable data dir fails the target", t.elapsed()));

    // b. Configured and started, it serves the host's etcdctl.
    let t = Instant::now();
    // Only what this start logs: the journal's position before it.
    let cursor = c.ok("journalctl -q -n 0 --show-cursor");
    let cursor = cursor
        .trim()
        .strip_prefix("-- cursor: ")
        .unwrap_or_else(|| panic!("journalctl --show-cursor said {cursor}"))
        .to_string();
    c.ok("systemctl daemon-reload && systemctl start triad.target");
    assert_eq!(c.active(&UNITS), ["active"; 6]);
    wait_serving(&ep, Duration::from_secs(60));
    let got = etcdctl(&ep, &["get", "probe", "--print-value-only"]);
    assert_eq!(triad_tests::ok_stdout(&got).trim(), "up");
    // A normal start under the units warns of nothing.
    let warnings = c.ok(&format!(
        "journalctl --no-pager -q -p warning -u 'triad-*' --after-cursor '{cursor}'"
    ));
    assert!(
        warnings.trim().is_empty(),
        "a clean start warned:\n{warnings}"
    );
    timings.push(("b. start until serving", t.elapsed()));

    // c. Each daemon restarted alone under a writer and a watch.
    let t = Instant::now();
    let start = put_revision(&ep, "restarts-start");
    let watch = Watch::start(&ep, "c/", start + 1);
    let writer = Writer::start(&ep, "c/");
    let mut windows = Vec::new();
    for (i, service) in SERVICES.iter().enumerate() {
        std::thread::sleep(Duration::from_secs(1));
        let before = c.main_pids();
        let from = Instant::now();
        c.ok(&format!("systemctl restart {service}"));
        let to = Instant::now();
        let after = c.main_pids();
        for (j, other) in SERVICES.iter().enumerate() {
            if i == j {
                assert_ne!(before[j], after[j], "{service} was not restarted");
            } else {
                assert_eq!(
                    before[j], after[j],
                    "restarting {service} restarted {other}"
                );
            }
        }
        assert_eq!(
            c.active(&UNITS),
            ["active"; 6],
            "after restarting {service}"
        );
        windows.push((*service, from, to));
    }
    std::thread::sleep(Duration::from_secs(1));
    let puts = check_writes(&ep, writer, watch, t, "c", &windows);
    eprintln!(
        "{} puts through the restarts, none failed, all watched once in order",
        puts.len()
    );
    timings.push(("c. restarts under writes", t.elapsed()));

    // d. A warning reaches the journal at its priority: storaged killed
    // outright warns, when it comes back, that it did not stop cleanly.
    let t = Instant::now();
    const JOURNAL: &str = "journalctl --no-pager -q -p warning -u 'triad-*'";
    let earlier = c.ok(JOURNAL);
    eprintln!("warnings before the kill:\n{earlier}");
    let old = c.main_pid(SERVICES[0]);
    c.ok("systemctl kill --signal=SIGKILL triad-storaged.service");
    let deadline = Instant::now() + Duration::from_secs(30);
    let warned = loop {
        let journal = c.ok(JOURNAL);
        if journal.contains("did not stop cleanly") {
            break journal;
        }
        assert!(
            Instant::now() < deadline,
            "no warning from the restarted storaged in 30 s:\n{journal}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let new = c.main_pid(SERVICES[0]);
    assert!(new != old && new != 0, "systemd restarted storaged");
    for line in warned.lines() {
        assert!(
            !line.contains(" INFO ") && !line.contains("<4>"),
            "journalctl -p warning shows {line}"
        );
    }
    wait_serving(&ep, Duration::from_secs(30));
    timings.push(("d. warning in the journal", t.elapsed()));

    // d'. With raftd stopped the probes answer at once, naming it.
    let t = Instant::now();
    c.ok("systemctl stop triad-raftd.service");
    for path in ["/health", "/readyz"] {
        let asked = Instant::now();
        let (status, body) = triad_tests::http(&ep, "GET", path, "");
        let took = asked.elapsed();
        assert!(
            status == 503 && took < Duration::from_secs(3),
            "{path} with raftd stopped, after {took:?}: {status} {body}"
        );
        if path == "/readyz" {
            assert!(body.contains("raftd"), "{path} does not name raftd: {body}");
        }
    }
    c.ok("systemctl start triad-raftd.service");
    wait_serving(&ep, Duration::from_secs(30));
    timings.push(("d'. probes with raftd stopped", t.elapsed()));

    // d''. etcd's --log-outputs systemd/journal: storaged writes to
    // journald natively, each line with its priority and daemon name.
    let t = Instant::now();
    c.ok("mkdir -p /etc/systemd/system/triad-storaged.service.d && \
         printf '[Service]\nEnvironment=ETCD_LOG_OUTPUTS=systemd/journal\n' \
           > /etc/systemd/system/triad-storaged.service.d/journal.conf && \
         systemctl daemon-reload && \
         systemctl kill --signal=SIGKILL triad-storaged.service");
    let deadline = Instant::now() + Duration::from_secs(30);
    let native = loop {
        let entries = c.ok(
            "journalctl --no-pager -q -o json -p warning -u triad-storaged.service \
             _TRANSPORT=journal",
        );
        if let Some(line) = entries.lines().find(|l| l.contains("did not stop cleanly")) {
            break line.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "no native journal entry from storaged in 30 s:\n{entries}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let entry: serde_json::Value = serde_json::from_str(&native).expect("journal JSON");
    assert_eq!(entry["PRIORITY"], "4", "{native}");
    assert_eq!(entry["SYSLOG_IDENTIFIER"], "storaged", "{native}");
    c.ok(
        "rm /etc/systemd/system/triad-storaged.service.d/journal.conf && \
         systemctl daemon-reload && systemctl restart triad-storaged.service",
    );
    wait_serving(&ep, Duration::from_secs(30));
    timings.push(("d''. native journal", t.elapsed()));

    // e. Stopping the target stops the whole member, its socket included.
    // systemctl waits for the target's own job only: the daemons (PartOf)
    // stop after it, in reverse start order, each draining its requests.
    let t = Instant::now();
    c.ok("systemctl stop triad.target");
    let returned = t.elapsed();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let states = c.active(&UNITS);
        if states == ["inactive"; 6] {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "60 s after stopping triad.target: {states:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "systemctl stop triad.target returned after {returned:.2?}, the member was down after \
         {:.2?}",
        t.elapsed()
    );
    assert!(port_closed(port), "the client port is still open");
    timings.push(("e. stop", t.elapsed()));

    // f. An upgrade of a running member, with writes going on: every
    // daemon restarts on the new binary and the member serves on.
    let t = Instant::now();
    c.ok("systemctl start triad.target");
    wait_serving(&ep, Duration::from_secs(60));
    let before = c.main_pids();
    let start = put_revision(&ep, "upgrade-start");
    let watch = Watch::start(&ep, "u/", start + 1);
    let writer = Writer::start(&ep, "u/");
    std::thread::sleep(Duration::from_secs(1));
    let from = Instant::now();
    c.ok("dpkg -i /root/triad-upgrade.deb");
    let to = Instant::now();
    std::thread::sleep(Duration::from_secs(1));
    let puts = check_writes(
        &ep,
        writer,
        watch,
        t,
        "u",
        &[("dpkg -i of the upgrade", from, to)],
    );
    eprintln!("{} puts through the upgrade, none failed", puts.len());
    let installed = c.ok("dpkg-query -W -f='${Version}' triad");
    assert_eq!(installed.trim(), upgrade_version);
    let after = c.main_pids();
    for ((service, b), a) in SERVICES.iter().zip(&before).zip(&after) {
        assert_ne!(b, a, "the upgrade did not restart {service}");
    }
    for (daemon, pid) in DAEMONS.iter().zip(&after) {
        let exe = c.ok(&format!("readlink /proc/{pid}/exe"));
        assert_eq!(
            exe.trim(),
            format!("/usr/bin/{daemon}"),
            "{daemon} runs {exe}"
        );
    }
    assert_eq!(c.active(&UNITS), ["active"; 6], "after the upgrade");
    let got = etcdctl(&ep, &["get", "c/000000", "--print-value-only"]);
    assert_eq!(triad_tests::ok_stdout(&got).trim(), "0", "data kept");
    timings.push(("f. upgrade under writes", t.elapsed()));

    // g. What the administrator disabled stays disabled on a reinstall.
    let t = Instant::now();
    c.ok("systemctl disable triad.target");
    assert_eq!(c.is_enabled("triad.target"), "disabled");
    c.ok("dpkg -i /root/triad-upgrade.deb");
    assert_eq!(
        c.is_enabled("triad.target"),
        "disabled",
        "a reinstall re-enabled it"
    );
    assert_eq!(c.is_enabled("triad-raftd.service"), "enabled");
    timings.push(("g. reinstall keeps disabled", t.elapsed()));

    // g'. Member lifecycle under systemd: a member started on the host
    // joins as a learner (listed started, with its name), is promoted, and
    // removes the container's member, whose raftd and gatewayd then exit
    // with status 3, which the units do not restart.
    let t = Instant::now();
    let host = tempfile::tempdir().expect("host member dir");
    let host_port = free_port_pair();
    let host_ep = format!("127.0.0.1:{host_port}");
    let host_peer = format!("http://127.0.0.1:{}", host_port + 1);
    let added = etcdctl(
        &ep,
        &[
            "member",
            "add",
            "m2",
            "--learner",
            &format!("--peer-urls={host_peer}"),
        ],
    );
    triad_tests::ok_stdout(&added);
    let cluster = format!("default=http://127.0.0.1:{},m2={host_peer}", port + 1);
    let args: Vec<String> = [
        "--data-dir",
        &host.path().to_string_lossy(),
        "--client-port",
        &host_port.to_string(),
        "--name",
        "m2",
        "--join",
        &cluster,
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    let (up, ready) = triad_tests::spawn_up(&args, &[], Duration::from_secs(60));
    let mut host_member = HostMember(Some(up));
    ready.unwrap_or_else(|e| panic!("the host member did not start: {e}"));
    let members = |ep: &str| -> Vec<serde_json::Value> {
        let out = triad_tests::ok_stdout(&etcdctl(ep, &["member", "list", "-w", "json"]));
        let list: serde_json::Value = serde_json::from_str(&out).expect("member list JSON");
        list["members"].as_array().cloned().unwrap_or_default()
    };
    let named = |ep: &str, name: &str| members(ep).into_iter().find(|m| m["name"] == name);
    let deadline = Instant::now() + Duration::from_secs(30);
    let learner = loop {
        match named(&ep, "m2") {
            Some(m) if m["clientURLs"].as_array().is_some_and(|u| !u.is_empty()) => break m,
            other => assert!(
                Instant::now() < deadline,
                "the learner is not listed started with its name: {other:?}"
            ),
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(learner["isLearner"], true, "{learner}");
    let id = |m: &serde_json::Value| format!("{:x}", m["ID"].as_u64().expect("member ID"));
    let deadline = Instant::now() + Duration::from_secs(30);
    while !etcdctl(&ep, &["member", "promote", &id(&learner)])
        .status
        .success()
    {
        assert!(Instant::now() < deadline, "the learner was never promoted");
        std::thread::sleep(Duration::from_millis(500));
    }
    let container_member = named(&ep, "default").expect("the container's member");
    // The leader removes itself: the answer can be lost as it steps down
    // after committing the change, so a failed call is checked against
    // the member list (a removal made answers "member not found" after).
    let removed = |ep: &str| {
        let out = etcdctl(ep, &["member", "list", "-w", "json"]);
        out.status.success()
            && serde_json::from_slice::<serde_json::Value>(&out.stdout).is_ok_and(|l| {
                l["members"]
                    .as_array()
                    .is_some_and(|m| !m.iter().any(|m| m["name"] == "default"))
            })
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = etcdctl(&host_ep, &["member", "remove", &id(&container_member)]);
        if out.status.success() || removed(&host_ep) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the container's member was never removed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    for service in ["triad-raftd.service", "triad-gatewayd.service"] {
        let shown = loop {
            let shown = c.ok(&format!(
                "systemctl show -p ActiveState -p ExecMainStatus -p NRestarts {service}"
            ));
            if shown.contains("ActiveState=failed") || shown.contains("ActiveState=inactive") {
                break shown;
            }
            assert!(
                Instant::now() < deadline,
                "{service} still runs after its removal: {shown}"
            );
            std::thread::sleep(Duration::from_millis(200));
        };
        assert!(
            shown.contains("ExecMainStatus=3") && shown.contains("NRestarts=0"),
            "{service} after its member's removal: {shown}"
        );
    }
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        c.active(&["triad-raftd.service", "triad-gatewayd.service"]),
        ["failed", "failed"],
        "a removed member's daemons were restarted"
    );
    let served = triad_tests::ok_stdout(&etcdctl(&host_ep, &["put", "after-removal", "yes"]));
    assert!(
        served.contains("OK"),
        "the remaining member serves: {served}"
    );
    host_member.stop();
    c.ok("systemctl stop triad.target; systemctl reset-failed");
    timings.push(("g'. learner, promotion, removal", t.elapsed()));

    // h. A purge stops the member and leaves no link, state, data or user.
    // The administrator's own drop-in (from `configure`) is theirs to keep.
    let t = Instant::now();
    c.ok("dpkg -P triad");
    let links = c.ok(
        "find /etc/systemd/system -type l \\( -name 'triad*' -o -lname '*triad*' \\); \
         find /var/lib/systemd/deb-systemd-helper-enabled \
              /var/lib/systemd/deb-systemd-helper-masked -name '*triad*' 2>/dev/null; true",
    );
    assert!(links.trim().is_empty(), "left after purge: {links}");
    c.ok("test ! -e /var/lib/triad && test ! -e /etc/triad && test ! -e /usr/bin/raftd");
    for db in ["passwd", "group"] {
        let out = c.sh(&format!("getent {db} triad"));
        assert!(
            !out.status.success(),
            "purge left the {db} entry: {}",
            output_text(&out)
        );
    }
    let states = c.active(&UNITS);
    assert!(
        states.iter().all(|s| s == "inactive"),
        "after purge: {states:?}"
    );
    assert!(port_closed(port), "the client port is open after purge");
    timings.push(("h. purge", t.elapsed()));

    let t = Instant::now();
    drop(c);
    timings.push(("power off and delete the copy", t.elapsed()));
    for (step, took) in timings {
        eprintln!("{step}: {took:.1?}");
    }
}
