//! The robustness suite's fault injector (the nemesis) and its report.
//! Faults come in random order from a seed, one at a time with load
//! running; each is timed, so the report can say how long clients saw no
//! successful operation around each kind of fault.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::cluster::Cluster;
use crate::history::{Op, Outcome};
use crate::netsplit::Link;
use crate::powerloss::MemberDisks;
use crate::{XorShift, DAEMONS};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum FaultKind {
    /// kill -9 of one daemon of one member (the supervisor restarts it).
    Kill9,
    /// SIGSTOP of one daemon past the election timeout, then SIGCONT.
    Pause,
    /// SIGTERM and restart of every daemon of every member, one by one.
    RollingRestart,
    /// Leadership moved five times in quick succession.
    LeaderStorm,
    /// A follower removed and a new member added in its place.
    MemberChange,
    /// The disk of the member on the small filesystem filled, then freed.
    DiskFull,
    /// One member (the leader half of the time) cut off from the others.
    Partition,
    /// The link between the leader and one follower cut, the rest up.
    LinkCut,
    /// Every link of one member slow (50-150 ms) and lossy (5 %).
    SlowNetwork,
    /// The wall clock of the member with the fake clock stepped an hour or
    /// a day forward or back, then back to true time.
    ClockJump,
    /// One member loses power: every daemon killed, its disk's unsynced
    /// data gone, then restarted.
    PowerLoss,
    /// Every member loses power at once.
    PowerLossAll,
    /// One member loses power while its disk writes: the last write of
    /// each file torn at a 4 KiB boundary, the rest unsynced gone.
    TornWrite,
}

impl FaultKind {
    /// The power faults, which need every member on a power-loss disk.
    pub const POWER: [FaultKind; 3] = [
        FaultKind::PowerLoss,
        FaultKind::PowerLossAll,
        FaultKind::TornWrite,
    ];

    pub const ALL: [FaultKind; 13] = [
        FaultKind::Kill9,
        FaultKind::Pause,
        FaultKind::RollingRestart,
        FaultKind::LeaderStorm,
        FaultKind::MemberChange,
        FaultKind::DiskFull,
        FaultKind::Partition,
        FaultKind::LinkCut,
        FaultKind::SlowNetwork,
        FaultKind::ClockJump,
        FaultKind::PowerLoss,
        FaultKind::PowerLossAll,
        FaultKind::TornWrite,
    ];

    /// Faults that need a split cluster (`Cluster::start_split`: links
    /// between members, settings per member).
    pub fn needs_split(self) -> bool {
        matches!(
            self,
            FaultKind::Partition
                | FaultKind::LinkCut
                | FaultKind::SlowNetwork
                | FaultKind::ClockJump
        )
    }
}

/// What the nemesis can work with besides the cluster: a small disk on
/// one member, a fake clock on one member, power-loss disks.
#[derive(Clone, Copy, Default)]
pub struct Instruments<'a> {
    pub small_disk: Option<(&'a SmallDisk, &'a str)>,
    pub clock: Option<(&'a FakeClock, &'a str)>,
    pub power: Option<&'a MemberDisks>,
}

/// One fault as injected.
#[derive(Clone, Debug)]
pub struct Injected {
    pub kind: FaultKind,
    pub what: String,
    pub start: Instant,
    pub end: Instant,
}

/// A small tmpfs for one member's data (the disk-full fault): mounted in a
/// temp dir of its own, reached through a symlink at the member's place.
pub struct SmallDisk {
    pub mount: PathBuf,
    _dir: tempfile::TempDir,
}

impl SmallDisk {
    /// Mount `size_mb` of tmpfs; None where mounting is not allowed.
    pub fn mount(size_mb: u32) -> Option<SmallDisk> {
        let dir = tempfile::tempdir().ok()?;
        let mount = dir.path().join("disk");
        std::fs::create_dir(&mount).ok()?;
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_mb}m"), "tmpfs"])
            .arg(&mount)
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(SmallDisk { mount, _dir: dir })
    }

    /// Make `member_dir` (not yet existing) live on this disk.
    pub fn host(&self, member_dir: &Path) {
        std::os::unix::fs::symlink(&self.mount, member_dir).expect("symlink the member dir");
    }

    fn balloon(&self) -> PathBuf {
        self.mount.join("balloon")
    }

    /// Fill the disk to the last byte.
    pub fn fill(&self) {
        use std::io::Write as _;
        let Ok(mut f) = std::fs::File::create(self.balloon()) else {
            return;
        };
        let chunk = vec![0u8; 1 << 20];
        while f.write_all(&chunk).is_ok() {}
        let small = [0u8; 512];
        while f.write_all(&small).is_ok() {}
    }

    pub fn free(&self) {
        let _ = std::fs::remove_file(self.balloon());
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.mount).status();
    }
}

/// Inject every fault of `kinds` once, then random ones until `duration`
/// has passed, with `pause` of load between them.
pub async fn run(
    cluster: &mut Cluster,
    kinds: &[FaultKind],
    duration: Duration,
    pause: Duration,
    seed: u64,
    with: Instruments<'_>,
) -> Vec<Injected> {
    let mut rng = XorShift(seed | 1);
    let mut injected = Vec::new();
    let until = Instant::now() + duration;
    let mut member_changes = 0;
    // Every kind once first (in random order), then random ones.
    let mut first: Vec<FaultKind> = kinds.to_vec();
    for i in (1..first.len()).rev() {
        first.swap(i, (rng.next_u64() % (i as u64 + 1)) as usize);
    }
    while !first.is_empty() || Instant::now() < until {
        let mut kind = first
            .pop()
            .unwrap_or_else(|| kinds[(rng.next_u64() % kinds.len() as u64) as usize]);
        // One membership change per run keeps the disk member in place and
        // the cluster at three members.
        if kind == FaultKind::MemberChange && member_changes > 0
            || kind == FaultKind::DiskFull && with.small_disk.is_none()
            || kind.needs_split() && cluster.net.is_none()
            || kind == FaultKind::ClockJump && with.clock.is_none()
            || FaultKind::POWER.contains(&kind) && with.power.is_none()
        {
            kind = FaultKind::Kill9;
        }
        let start = Instant::now();
        let what = inject(cluster, kind, &mut rng, with).await;
        if kind == FaultKind::MemberChange {
            member_changes += 1;
        }
        injected.push(Injected {
            kind,
            what,
            start,
            end: Instant::now(),
        });
        tokio::time::sleep(pause).await;
    }
    injected
}

async fn inject(
    c: &mut Cluster,
    kind: FaultKind,
    rng: &mut XorShift,
    with: Instruments<'_>,
) -> String {
    let (disk, clock) = (with.small_disk, with.clock);
    let n = c.members.len();
    let member = (rng.next_u64() % n as u64) as usize;
    let daemon = DAEMONS[(rng.next_u64() % 3) as usize];
    match kind {
        FaultKind::Kill9 => {
            c.kill9(member, daemon);
            format!("kill -9 {daemon} of {}", c.members[member].name)
        }
        FaultKind::Pause => {
            let ms = 1000 + rng.next_u64() % 2000;
            c.signal(member, daemon, Signal::SIGSTOP);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            c.signal(member, daemon, Signal::SIGCONT);
            format!("SIGSTOP {daemon} of {} for {ms} ms", c.members[member].name)
        }
        FaultKind::RollingRestart => {
            for i in 0..n {
                for d in DAEMONS {
                    let old = c.signal(i, d, Signal::SIGTERM);
                    c.wait_restarted(i, d, old);
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
            }
            "rolling restart of every daemon".into()
        }
        FaultKind::LeaderStorm => {
            let mut moves = 0;
            for _ in 0..5 {
                let leader = c.leader().await;
                let target = (leader + 1 + (rng.next_u64() % (n as u64 - 1)) as usize) % n;
                let id = c.member_id(target).await;
                let mut client = c.client(leader).await;
                if client.move_leader(id).await.is_ok() {
                    moves += 1;
                }
            }
            format!("{moves} leader transfers")
        }
        FaultKind::MemberChange => {
            let leader = c.leader().await;
            // A follower that is not on the small disk.
            let victim = (0..n)
                .find(|i| *i != leader && disk.is_none_or(|(_, d)| c.members[*i].name != d))
                .unwrap_or((leader + 1) % n);
            let name = c.members[victim].name.clone();
            c.member_remove(victim, leader).await;
            let place = c.new_place();
            c.member_add(&place);
            let new = place.name.clone();
            c.join(place);
            wait_serving(c, c.members.len() - 1).await;
            format!("removed {name}, added {new}")
        }
        FaultKind::DiskFull => {
            let Some((disk, name)) = disk else {
                return "no small disk".into();
            };
            let Some(on) = c.members.iter().position(|m| m.name == name) else {
                return format!("{name} is no longer a member");
            };
            disk.fill();
            tokio::time::sleep(Duration::from_secs(3)).await;
            disk.free();
            // Its daemons may have stopped on the full disk; they are
            // restarted with backoff and catch up.
            wait_serving(c, on).await;
            format!("disk of {} full for 3 s", c.members[on].name)
        }
        FaultKind::Partition | FaultKind::LinkCut | FaultKind::SlowNetwork => {
            let leader = c.leader().await;
            let target = if rng.next_u64().is_multiple_of(2) {
                leader
            } else {
                member
            };
            let (Some(net), Some(slot)) = (&c.net, c.members[target].slot) else {
                return "no network to fault".into();
            };
            let name = &c.members[target].name;
            let ms = 3000 + rng.next_u64() % 3000;
            let what = match kind {
                FaultKind::Partition => {
                    net.isolate(slot);
                    format!("{name} cut off for {ms} ms")
                }
                FaultKind::LinkCut => {
                    let other = (leader + 1 + (rng.next_u64() % (n as u64 - 1)) as usize) % n;
                    let Some(other_slot) = c.members[other].slot else {
                        return "no network to fault".into();
                    };
                    let lead = c.members[leader].slot.unwrap_or(slot);
                    net.cut(lead, other_slot);
                    format!(
                        "link {}-{} cut for {ms} ms",
                        c.members[leader].name, c.members[other].name
                    )
                }
                _ => {
                    let delay = Duration::from_millis(50 + rng.next_u64() % 100);
                    net.around(slot, Link::Slow { delay, loss: 0.05 });
                    format!("{name}'s links {delay:?} late, 5 % lost, for {ms} ms")
                }
            };
            tokio::time::sleep(Duration::from_millis(ms)).await;
            net.heal();
            for i in 0..n {
                wait_serving(c, i).await;
            }
            what
        }
        FaultKind::ClockJump => {
            let Some((clock, name)) = clock else {
                return "no fake clock".into();
            };
            let step: i64 = match rng.next_u64() % 4 {
                0 => 3600,
                1 => -3600,
                2 => 86_400,
                _ => -86_400,
            };
            clock.step(step);
            // libfaketime re-reads its file once a second.
            tokio::time::sleep(Duration::from_secs(5)).await;
            clock.step(0);
            tokio::time::sleep(Duration::from_millis(1500)).await;
            if let Some(on) = c.members.iter().position(|m| m.name == name) {
                wait_serving(c, on).await;
            }
            format!("wall clock of {name} stepped {step:+} s for 5 s")
        }
        FaultKind::PowerLoss | FaultKind::PowerLossAll | FaultKind::TornWrite => {
            let Some(power) = with.power else {
                return "no power-loss disks".into();
            };
            let on: Vec<usize> = if kind == FaultKind::PowerLossAll {
                (0..n).filter(|&i| power.has(&c.members[i].name)).collect()
            } else {
                (0..n)
                    .map(|k| (member + k) % n)
                    .find(|&i| power.has(&c.members[i].name))
                    .into_iter()
                    .collect()
            };
            let torn = kind == FaultKind::TornWrite;
            let mut lost = 0;
            c.power_cycle(&on, |name| lost += power.cut(name, torn));
            for &i in &on {
                wait_serving(c, i).await;
            }
            let names: Vec<&str> = on.iter().map(|&i| c.members[i].name.as_str()).collect();
            let how = if torn { "torn writes" } else { "power loss" };
            format!(
                "{how} on {}: {lost} unsynced bytes dropped",
                names.join(", ")
            )
        }
    }
}

/// One member's wall clock, stepped by libfaketime (LD_PRELOAD into its
/// daemons) through a file it re-reads every second. Monotonic time is
/// left alone, as an NTP step leaves it.
pub struct FakeClock {
    file: PathBuf,
    _dir: tempfile::TempDir,
}

impl FakeClock {
    const LIBRARY: &'static str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";

    /// None where libfaketime is not installed (Debian's libfaketime).
    pub fn new() -> Option<FakeClock> {
        if !Path::new(Self::LIBRARY).exists() {
            return None;
        }
        let dir = tempfile::tempdir().ok()?;
        let clock = FakeClock {
            file: dir.path().join("offset"),
            _dir: dir,
        };
        clock.step(0);
        Some(clock)
    }

    /// The settings that put a member's daemons on this clock.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("LD_PRELOAD", Self::LIBRARY),
            ("FAKETIME_TIMESTAMP_FILE", &self.file.to_string_lossy()),
            ("FAKETIME_CACHE_DURATION", "1"),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    /// Set the clock `seconds` away from true time.
    pub fn step(&self, seconds: i64) {
        let _ = std::fs::write(&self.file, format!("{seconds:+}\n"));
    }
}

/// Wait (bounded) until member i answers a linearizable read.
async fn wait_serving(c: &Cluster, i: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ep = c.members[i].endpoint();
        if let Ok(mut client) = etcd_client::Client::connect([ep], None).await {
            if client.get("probe", None).await.is_ok() {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "member {i} not serving again\n{}",
            c.logs(i)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Resident memory of every daemon of every member, in MiB.
pub fn rss_mib(c: &Cluster) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for (i, m) in c.members.iter().enumerate() {
        for d in DAEMONS {
            let Some(pid) = c.pid(i, d) else { continue };
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            let kb: u64 = status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .unwrap_or(0);
            out.insert(format!("{} {d}", m.name), kb / 1024);
        }
    }
    out
}

/// What one run did and found.
#[derive(Debug, Default)]
pub struct RunReport {
    pub seconds: u64,
    pub operations: usize,
    pub failed_operations: usize,
    pub faults: Vec<Injected>,
    pub violations: Vec<String>,
    pub leased_keys: usize,
    /// Leased keys that outlived the allowance while faults stopped the
    /// lessor (not judged).
    pub leases_extended_by_faults: usize,
    pub max_lease_overstay: Duration,
    pub rss_start: BTreeMap<String, u64>,
    pub rss_end: BTreeMap<String, u64>,
}

impl RunReport {
    /// Per fault kind: (count, the longest time no operation succeeded
    /// while such a fault was under way or within `settle` after it).
    pub fn unavailability(
        &self,
        ops: &[Op],
        settle: Duration,
    ) -> BTreeMap<FaultKind, (usize, Duration)> {
        let mut ok: Vec<Instant> = ops
            .iter()
            .filter(|o| !matches!(o.outcome, Outcome::Unknown))
            .map(|o| o.complete)
            .collect();
        ok.sort();
        let mut out: BTreeMap<FaultKind, (usize, Duration)> = BTreeMap::new();
        for f in &self.faults {
            let (from, to) = (f.start, f.end + settle);
            // The longest gap between successive successes that overlaps
            // the window, clipped at its end.
            let mut prev = ok.iter().copied().rfind(|t| *t <= from).unwrap_or(from);
            let mut worst = Duration::ZERO;
            for t in ok.iter().copied().filter(|t| *t > from) {
                worst = worst.max(t.min(to) - prev);
                prev = t;
                if t >= to {
                    break;
                }
            }
            if prev < to {
                worst = worst.max(to - prev);
            }
            let e = out.entry(f.kind).or_default();
            e.0 += 1;
            e.1 = e.1.max(worst);
        }
        out
    }

    /// The report as a Markdown section.
    pub fn markdown(&self, ops: &[Op], settle: Duration) -> String {
        let mut s = String::new();
        let rate = if self.operations == 0 {
            0.0
        } else {
            100.0 * self.failed_operations as f64 / self.operations as f64
        };
        let _ = writeln!(
            s,
            "{} s, {} operations, {} failed or unknown ({rate:.2} %), {} faults, {} violations; {} leased keys, latest deletion {:.1} s after its TTL ({} more kept longer by faults)",
            self.seconds,
            self.operations,
            self.failed_operations,
            self.faults.len(),
            self.violations.len(),
            self.leased_keys,
            self.max_lease_overstay.as_secs_f64(),
            self.leases_extended_by_faults
        );
        let _ = writeln!(
            s,
            "\n| fault | injected | max unavailability |\n|---|---|---|"
        );
        for (kind, (count, worst)) in self.unavailability(ops, settle) {
            let _ = writeln!(s, "| {kind:?} | {count} | {:.2} s |", worst.as_secs_f64());
        }
        let _ = writeln!(
            s,
            "\n| daemon | RSS at start (MiB) | RSS at end (MiB) |\n|---|---|---|"
        );
        for (d, end) in &self.rss_end {
            let start = self
                .rss_start
                .get(d)
                .map_or("-".to_string(), |v| v.to_string());
            let _ = writeln!(s, "| {d} | {start} | {end} |");
        }
        for v in &self.violations {
            let _ = writeln!(s, "- VIOLATION: {v}");
        }
        s
    }
}
