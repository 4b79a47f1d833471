//! A local multi-member cluster as real processes: `triad up --members N`
//! (one supervisor, N × three daemons on loopback), plus members that join
//! later through their own `triad up --join`. Any daemon of any member can
//! be killed, stopped or continued; the supervisor restarts killed ones.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::netsplit::{self, Net};
use crate::{connect, etcdctl, free_port_pair, spawn_up, DAEMONS};

/// A client port base P with P + 10000*i and the port above it free for
/// every member i.
fn free_cluster_base(n: u16) -> u16 {
    // Tests in one binary start clusters concurrently: every call starts
    // from a different place, so two clusters never pick the same ports
    // (a port being free now does not keep it free).
    static CALLS: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    for attempt in 0..200u16 {
        let seed = (std::process::id() as u16)
            .wrapping_mul(7)
            .wrapping_add(call.wrapping_mul(1009))
            .wrapping_add(attempt.wrapping_mul(131));
        // Below the kernel's ephemeral range (32768+), where outgoing
        // connections could take a member's port first.
        let span = 32_766u16.saturating_sub(10_000 * n).max(1);
        let base = 10_000 + seed % span;
        let all_free = (0..n).all(|i| {
            let p = base + 10_000 * i;
            TcpListener::bind(("127.0.0.1", p)).is_ok()
                && TcpListener::bind(("127.0.0.1", p + 1)).is_ok()
        });
        if all_free {
            return base;
        }
    }
    panic!("no free port range for a {n}-member cluster");
}

/// One member's place: its data dir and client port.
#[derive(Clone)]
pub struct Place {
    pub name: String,
    pub dir: PathBuf,
    pub port: u16,
    /// Its link slot when its raftd lives behind the cluster's `Net`.
    pub slot: Option<usize>,
}

impl Place {
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
    pub fn peer_url(&self) -> String {
        let host = self
            .slot
            .map_or(std::net::Ipv4Addr::LOCALHOST, netsplit::address);
        format!("http://{host}:{}", self.port + 1)
    }
}

/// Daemons `Cluster::hold_down` killed: (member, daemon, old pid).
pub struct Held {
    killed: Vec<(usize, &'static str, i32)>,
}

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub members: Vec<Place>,
    /// TRIAD_* settings every member's daemons get.
    env: Vec<(String, String)>,
    /// `triad up` processes: the cluster's, then one per joined member.
    ups: Vec<Child>,
    /// The links between members, for clusters started by `start_split`.
    pub net: Option<Net>,
    /// Settings for one member's daemons only, by member name.
    member_env: Vec<(String, Vec<(String, String)>)>,
}

/// Start `triad up` with `args` and wait for its ready line.
fn launch(args: &[String], env: &[(String, String)], logs_hint: &Path) -> Child {
    let (mut child, first) = spawn_up(args, env, Duration::from_secs(90));
    match first {
        Ok(line) if line.starts_with("ready ") => child,
        other => {
            let _ = child.kill();
            panic!(
                "triad up did not become ready ({other:?}); logs under {}",
                logs_hint.display()
            );
        }
    }
}

impl Cluster {
    pub fn start(n: u16) -> Cluster {
        Cluster::start_with_env(n, &[])
    }

    /// Start with `TRIAD_*` settings that every member's daemons inherit.
    pub fn start_with_env(n: u16, env: &[(&str, &str)]) -> Cluster {
        Cluster::start_with_setup(n, env, |_| {})
    }

    /// `start_with_env`, calling `setup` with the cluster's directory
    /// before the members start (member i lives in DIR/m<i>; a test may
    /// put one on a filesystem of its own there).
    pub fn start_with_setup(n: u16, env: &[(&str, &str)], setup: impl FnOnce(&Path)) -> Cluster {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let dir = tempfile::Builder::new()
            .prefix("triad-cluster")
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .tempdir()
            .expect("tempdir");
        let base = free_cluster_base(n);
        let members = (0..n)
            .map(|i| Place {
                name: format!("m{i}"),
                dir: dir.path().join(format!("m{i}")),
                port: base + 10_000 * i,
                slot: None,
            })
            .collect();
        let args = vec![
            "--data-dir".to_string(),
            dir.path().to_string_lossy().into_owned(),
            "--client-port".into(),
            base.to_string(),
            "--members".into(),
            n.to_string(),
        ];
        setup(dir.path());
        let up = launch(&args, &env, dir.path());
        Cluster {
            dir,
            members,
            env,
            ups: vec![up],
            net: None,
            member_env: Vec::new(),
        }
    }

    /// `n` members whose raft traffic crosses a `Net` the test controls
    /// (each member its own `triad up`, its raftd in a network namespace);
    /// None where this machine does not allow namespaces (not root).
    /// `setup` as for `start_with_setup`; `member_env` adds settings for
    /// the named members' daemons only.
    pub fn start_split(
        n: u16,
        env: &[(&str, &str)],
        setup: impl FnOnce(&Path),
        member_env: &[(&str, Vec<(String, String)>)],
    ) -> Option<Cluster> {
        let base = free_cluster_base(n);
        let ports: Vec<u16> = (0..n).map(|i| base + 10_000 * i + 1).collect();
        let net = Net::create(&ports)?;
        let dir = tempfile::Builder::new()
            .prefix("triad-split")
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .tempdir()
            .expect("tempdir");
        let members: Vec<Place> = (0..n as usize)
            .map(|i| Place {
                name: format!("m{i}"),
                dir: dir.path().join(format!("m{i}")),
                port: ports[i] - 1,
                slot: Some(i),
            })
            .collect();
        let mut cluster = Cluster {
            dir,
            members: members.clone(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ups: Vec::new(),
            net: Some(net),
            member_env: member_env
                .iter()
                .map(|(name, env)| (name.to_string(), env.clone()))
                .collect(),
        };
        setup(cluster.dir.path());
        let initial = cluster.initial_cluster(None);
        // All at once: none is ready before a quorum runs.
        let launches: Vec<_> = members
            .iter()
            .map(|place| {
                let (args, env) = cluster.up_args(place, &["--initial-cluster", &initial]);
                let hint = place.dir.clone();
                std::thread::spawn(move || launch(&args, &env, &hint))
            })
            .collect();
        for l in launches {
            cluster.ups.push(l.join().expect("launch"));
        }
        Some(cluster)
    }

    /// name=peerURL of every member, plus `extra`.
    fn initial_cluster(&self, extra: Option<&Place>) -> String {
        self.members
            .iter()
            .chain(extra)
            .map(|m| format!("{}={}", m.name, m.peer_url()))
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(Place::endpoint).collect()
    }

    pub async fn client(&self, i: usize) -> etcd_client::Client {
        connect(&self.members[i].endpoint()).await
    }

    /// etcdctl through member i. A membership change refused with etcd's
    /// "unhealthy cluster" (a leader elected or a member back less than 5 s
    /// ago) is tried again for up to 30 s, as an operator would.
    pub fn etcdctl(&self, i: usize, args: &[&str]) -> std::process::Output {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = etcdctl(&self.members[i].endpoint(), args);
            let unhealthy = args.first() == Some(&"member")
                && String::from_utf8_lossy(&out.stderr).contains("etcdserver: unhealthy cluster");
            if !unhealthy || Instant::now() > deadline {
                return out;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// A new member's place (not yet added to the cluster), named after
    /// the first index no member directory uses yet.
    pub fn new_place(&self) -> Place {
        let i = (self.members.len()..)
            .find(|i| !self.dir.path().join(format!("m{i}")).exists())
            .unwrap_or(self.members.len());
        let port = free_port_pair();
        let slot = self.net.as_ref().map(|net| {
            net.add(port + 1)
                .unwrap_or_else(|e| panic!("a link slot for a new member: {e}"))
        });
        Place {
            name: format!("m{i}"),
            dir: self.dir.path().join(format!("m{i}")),
            port,
            slot,
        }
    }

    /// Arguments and environment of `triad up` for the member at `place`.
    fn up_args(&self, place: &Place, extra: &[&str]) -> (Vec<String>, Vec<(String, String)>) {
        let mut args = vec![
            "--data-dir".to_string(),
            place.dir.to_string_lossy().into_owned(),
            "--client-port".into(),
            place.port.to_string(),
            "--name".into(),
            place.name.clone(),
        ];
        let mut env = self.env.clone();
        for (_, extra) in self.member_env.iter().filter(|(n, _)| *n == place.name) {
            env.extend(extra.iter().cloned());
        }
        if let (Some(net), Some(slot)) = (&self.net, place.slot) {
            args.extend(["--peer-url".into(), place.peer_url()]);
            env.push((
                "TRIAD_PEER_NETNS".into(),
                net.namespace(slot).to_string_lossy().into_owned(),
            ));
        }
        args.extend(extra.iter().map(|a| a.to_string()));
        (args, env)
    }

    /// `triad up` for one member at `place`, with `extra` arguments.
    fn launch_one(&mut self, place: &Place, extra: &[&str]) {
        let (args, env) = self.up_args(place, extra);
        self.ups.push(launch(&args, &env, &place.dir));
    }

    /// `etcdctl member add` of the member at `place` (through member 0).
    pub fn member_add(&self, place: &Place) {
        let peer_urls = format!("--peer-urls={}", place.peer_url());
        let out = self.etcdctl(0, &["member", "add", &place.name, &peer_urls]);
        assert!(out.status.success(), "member add: {out:?}");
    }

    /// `etcdctl member remove` of member i (through member `via`); it is
    /// no longer one of `members`.
    pub async fn member_remove(&mut self, i: usize, via: usize) {
        let id = format!("{:x}", self.member_id(i).await);
        let out = self.etcdctl(via, &["member", "remove", &id]);
        assert!(out.status.success(), "member remove: {out:?}");
        self.members.remove(i);
    }

    /// Start a member that was added with `member add`: its own `triad up`
    /// joining the cluster.
    pub fn join(&mut self, place: Place) {
        let cluster = self.initial_cluster(Some(&place));
        self.launch_one(&place, &["--join", &cluster]);
        self.members.push(place);
    }

    pub fn pid(&self, i: usize, daemon: &str) -> Option<i32> {
        let p = self.members[i]
            .dir
            .join("pids")
            .join(format!("{daemon}.pid"));
        std::fs::read_to_string(p).ok()?.trim().parse().ok()
    }

    /// Send `sig` to a daemon of member i; returns the pid signalled. A
    /// daemon that is down already (it stopped itself, say on a full disk,
    /// and its supervisor has not restarted it yet) is signalled once it is
    /// back.
    pub fn signal(&self, i: usize, daemon: &str, sig: Signal) -> i32 {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let pid = self
                .pid(i, daemon)
                .unwrap_or_else(|| panic!("no pid for {daemon} of member {i}"));
            match kill(Pid::from_raw(pid), sig) {
                Ok(()) => return pid,
                Err(Errno::ESRCH) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Err(e) => panic!("signal {daemon} of member {i}: {e}\n{}", self.logs(i)),
            }
        }
    }

    /// SIGSTOP / SIGCONT the cluster's supervisor (so it restarts nothing).
    pub fn pause_supervisor(&self, paused: bool) {
        let up = self.ups.first().expect("cluster is running");
        let sig = if paused {
            Signal::SIGSTOP
        } else {
            Signal::SIGCONT
        };
        kill(Pid::from_raw(up.id() as i32), sig).expect("signal supervisor");
    }

    /// SIGSTOP / SIGCONT every `triad up` of the cluster.
    fn pause_supervisors(&self, paused: bool) {
        let sig = if paused {
            Signal::SIGSTOP
        } else {
            Signal::SIGCONT
        };
        for up in &self.ups {
            let _ = kill(Pid::from_raw(up.id() as i32), sig);
        }
    }

    /// Take the members at `which` down: with every supervisor held,
    /// kill -9 their daemons and wait until they are gone. `release`
    /// restarts them.
    pub fn hold_down(&self, which: &[usize]) -> Held {
        self.pause_supervisors(true);
        let mut killed = Vec::new();
        for &i in which {
            for d in DAEMONS {
                if let Some(pid) = self.pid(i, d) {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                    killed.push((i, d, pid));
                }
            }
        }
        for (_, _, pid) in &killed {
            crate::wait_dead(*pid);
        }
        Held { killed }
    }

    /// Let the supervisors restart what `hold_down` took down; returns
    /// once every daemon of those members has a new process.
    pub fn release(&self, held: Held) {
        self.pause_supervisors(false);
        for (i, d, pid) in held.killed {
            self.wait_restarted(i, d, pid);
        }
    }

    /// A power cut of the members at `which`: down as by `hold_down`,
    /// `cut` called with each one's name (drop what its disk had not
    /// synced), then restarted.
    pub fn power_cycle(&self, which: &[usize], mut cut: impl FnMut(&str)) {
        let held = self.hold_down(which);
        for &i in which {
            cut(&self.members[i].name);
        }
        self.release(held);
    }

    /// Wait until the process `pid` is gone (after a kill).
    pub fn wait_dead(&self, pid: i32) {
        crate::wait_dead(pid);
    }

    /// kill -9 one daemon of member i and wait until it is restarted.
    pub fn kill9(&self, i: usize, daemon: &str) {
        let old = self.signal(i, daemon, Signal::SIGKILL);
        self.wait_restarted(i, daemon, old);
    }

    /// kill -9 every daemon of member i at once; all are restarted.
    pub fn kill9_member(&self, i: usize) {
        let old: Vec<i32> = DAEMONS
            .iter()
            .map(|d| self.signal(i, d, Signal::SIGKILL))
            .collect();
        for (d, pid) in DAEMONS.iter().zip(old) {
            self.wait_restarted(i, d, pid);
        }
    }

    pub fn wait_restarted(&self, i: usize, daemon: &str, old_pid: i32) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if self.pid(i, daemon).is_some_and(|p| p != old_pid) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("{daemon} of member {i} was not restarted\n{}", self.logs(i));
    }

    /// The index of the member whose raftd leads (asked via member 0..n).
    pub async fn leader(&self) -> usize {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            for (i, m) in self.members.iter().enumerate() {
                let Ok(mut c) = etcd_client::Client::connect([m.endpoint()], None).await else {
                    continue;
                };
                if let Ok(s) = c.status().await {
                    let leader = s.leader();
                    if leader != 0 && s.header().map(|h| h.member_id()) == Some(leader) {
                        return i;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("no leader within 30 s");
    }

    /// Member IDs by index, from member list.
    pub async fn member_id(&self, i: usize) -> u64 {
        let mut c = self.client(i).await;
        c.status()
            .await
            .expect("status")
            .header()
            .expect("header")
            .member_id()
    }

    /// The tail of the daemon logs of the member once named `name` (also
    /// one removed since), for failure messages.
    pub fn logs_of(&self, name: &str) -> String {
        crate::log_tails(&self.dir.path().join(name), &format!("{name} "))
    }

    /// The tail of member i's daemon logs, for failure messages.
    pub fn logs(&self, i: usize) -> String {
        crate::log_tails(&self.members[i].dir, &format!("m{i} "))
    }

    /// HashKV of every member at one revision (all must be equal).
    pub async fn hash_kvs(&self, revision: i64) -> Vec<u32> {
        let mut out = Vec::new();
        for i in 0..self.members.len() {
            let mut c = self.client(i).await;
            let h = c.hash_kv(revision).await.expect("hash_kv");
            out.push(h.hash());
        }
        out
    }

    /// Every member's HashKV at `revision`, once each has applied it.
    pub async fn assert_equal_hashes(&self, revision: i64) {
        // Generous: a follower on a loaded 2-core machine may trail.
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut hashes = Vec::new();
        for i in 0..self.members.len() {
            loop {
                let mut c = self.client(i).await;
                match c.hash_kv(revision).await {
                    Ok(h) => {
                        hashes.push(h.hash());
                        break;
                    }
                    Err(e) if Instant::now() < deadline => {
                        let _ = e;
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Err(e) => panic!("hash_kv on member {i}: {e}\n{}", self.logs(i)),
                }
            }
        }
        assert!(
            hashes.windows(2).all(|w| w[0] == w[1]),
            "members' HashKV differ at {revision}: {hashes:?}"
        );
        // Once every member has applied everything, the whole stores agree too.
        loop {
            let mut whole = Vec::new();
            for i in 0..self.members.len() {
                let mut c = self.client(i).await;
                if let Ok(h) = c.hash().await {
                    whole.push(h.hash());
                }
            }
            if whole.len() == self.members.len() && whole.windows(2).all(|w| w[0] == w[1]) {
                return;
            }
            assert!(Instant::now() < deadline, "members' Hash differ: {whole:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// kill -9 every supervisor and every daemon (all members crash).
    pub fn crash_all(&mut self) {
        for up in &mut self.ups {
            let _ = up.kill();
            let _ = up.wait();
        }
        self.ups.clear();
        for i in 0..self.members.len() {
            for d in DAEMONS {
                if let Some(pid) = self.pid(i, d) {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                }
            }
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        let alive = |c: &Cluster| {
            (0..c.members.len()).any(|i| {
                DAEMONS.iter().any(|d| {
                    c.pid(i, d)
                        .is_some_and(|p| kill(Pid::from_raw(p), None).is_ok())
                })
            })
        };
        while Instant::now() < deadline && alive(self) {
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// After `crash_all`: bring member i back alone as a new one-member
    /// cluster on its data (etcd's --force-new-cluster); it becomes the
    /// cluster's only member.
    pub fn force_new_cluster(&mut self, i: usize) {
        let place = self.members[i].clone();
        self.launch_one(&place, &["--force-new-cluster"]);
        self.members = vec![place];
    }

    /// After `crash_all`: the members at `which` back, each under a `triad
    /// up` of its own, all at once (none is ready before a quorum runs).
    pub fn restart_members(&mut self, which: &[usize]) {
        let initial = self.initial_cluster(None);
        let launches: Vec<_> = which
            .iter()
            .map(|&i| {
                let place = self.members[i].clone();
                let (args, env) = self.up_args(&place, &["--initial-cluster", &initial]);
                std::thread::spawn(move || launch(&args, &env, &place.dir))
            })
            .collect();
        for l in launches {
            self.ups.push(l.join().expect("launch"));
        }
    }

    /// `triad up` for member i where it is expected to fail: its exit
    /// status and what it printed on stderr (it must end within 60 s).
    pub fn start_member_expecting_failure(&self, i: usize) -> (Option<i32>, String) {
        let initial = self.initial_cluster(None);
        let (args, env) = self.up_args(&self.members[i], &["--initial-cluster", &initial]);
        let mut child = std::process::Command::new(crate::bin("triad"))
            .arg("up")
            .args(&args)
            .envs(env)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn triad up");
        crate::wait_exit(&mut child, Duration::from_secs(60));
        let _ = child.kill();
        let out = child.wait_with_output().expect("triad up output");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Stop everything: SIGTERM every `triad up` (graceful).
    pub fn stop(&mut self) {
        for up in &mut self.ups {
            let _ = kill(Pid::from_raw(up.id() as i32), Signal::SIGTERM);
        }
        for up in &mut self.ups {
            crate::wait_exit(up, Duration::from_secs(30));
            let _ = up.kill();
            let _ = up.wait();
        }
        self.ups.clear();
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for up in &mut self.ups {
            let _ = up.kill();
            let _ = up.wait();
        }
        // Daemons die with their supervisor (parent-death signal); make sure.
        for i in 0..self.members.len() {
            for d in DAEMONS {
                if let Some(pid) = self.pid(i, d) {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                }
            }
        }
    }
}
