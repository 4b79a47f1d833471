//! The robustness suite: a 3-member cluster under concurrent clients
//! (puts, compare-and-swap txns, deletes, linearizable and serializable
//! reads, a prev_kv watcher, keys on leases nobody keeps alive) while the
//! nemesis injects random faults: kill -9 and SIGSTOP of any daemon,
//! rolling restarts, leader-transfer storms, a membership change, a full
//! disk on one member, and network partitions, single cut links and slow,
//! lossy links between members (`netsplit`), and wall-clock steps on one
//! member (libfaketime). Afterwards: the history must be linearizable,
//! the watch exact (order, no gap, no duplicate, prev_kv), no acknowledged
//! write lost, every leased key gone within its TTL plus the allowance,
//! every member's HashKV equal, and no daemon's memory past a bound.
//!
//! CI runs a short version. The long one, with its report:
//! `TRIAD_NEMESIS_SECS=600 tests/run --test nemesis -- --nocapture`
//! (TRIAD_NEMESIS_SEED picks another fault order.)

use std::time::Duration;

use triad_tests::cluster::Cluster;
use triad_tests::history::{check, check_watch};
use triad_tests::load::{read_log, LeaseLoad, Load, Watcher};
use triad_tests::nemesis::{self, FaultKind, Instruments, RunReport, SmallDisk};

const CLIENTS: usize = 6;
/// Load before the first fault and after the last.
const SETTLE: Duration = Duration::from_secs(3);
/// Lease checkpoints every 2 s: a leader change may add that much to a
/// lease, plus the time without a leader.
const CHECKPOINT: &str = "2s";
const LEASE_TTL_SECS: i64 = 3;
const LEASE_ALLOWANCE: Duration = Duration::from_secs(8);
/// Every member's settings in the suite: frequent lease checkpoints and
/// snapshots (so restarts and new members install them).
pub(crate) const SUITE_ENV: [(&str, &str); 2] = [
    ("TRIAD_LEASE_CHECKPOINT_INTERVAL", CHECKPOINT),
    ("TRIAD_SNAPSHOT_COUNT", "2000"),
];
/// No daemon may grow past this under the suite's load (MiB).
const RSS_BOUND_MIB: u64 = 512;

pub(crate) fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_faults_under_load() {
    let seconds = env_u64("TRIAD_NEMESIS_SECS", 45);
    let seed = env_u64("TRIAD_NEMESIS_SEED", 0x0072_19ad);
    // TRIAD_NEMESIS_KINDS=Kill9,Pause,... narrows the faults to those.
    let kinds: Vec<FaultKind> = match std::env::var("TRIAD_NEMESIS_KINDS") {
        Ok(list) => FaultKind::ALL
            .into_iter()
            .filter(|k| list.split(',').any(|n| n.trim() == format!("{k:?}")))
            .filter(|k| !FaultKind::POWER.contains(k))
            .collect(),
        // The power faults run in their own suite, on power-loss disks.
        Err(_) => FaultKind::ALL
            .into_iter()
            .filter(|k| !FaultKind::POWER.contains(k))
            .collect(),
    };
    assert!(!kinds.is_empty(), "TRIAD_NEMESIS_KINDS names no fault");
    // Member 2 keeps its data on a small disk when this machine lets the
    // test mount one (root); the disk-full fault needs it.
    let disk = SmallDisk::mount(512);
    if disk.is_none() {
        triad_tests::prerequisite_missing("mounting a small disk needs root: no disk-full fault");
    }
    let env = SUITE_ENV;
    let host = |dir: &std::path::Path| {
        if let Some(d) = &disk {
            d.host(&dir.join("m2"));
        }
    };
    // Raft traffic through links the nemesis can cut and slow where this
    // machine lets the test make network namespaces (root).
    // Member 1's wall clock can be stepped (libfaketime).
    let clock = nemesis::FakeClock::new();
    if clock.is_none() {
        triad_tests::prerequisite_missing("libfaketime is not installed: no clock steps");
    }
    let clock_env: Vec<(&str, Vec<(String, String)>)> =
        clock.iter().map(|c| ("m1", c.env())).collect();
    let mut cluster = match Cluster::start_split(3, &env, host, &clock_env) {
        Some(c) => c,
        None => {
            triad_tests::prerequisite_missing("no network namespaces here: no network faults");
            Cluster::start_with_setup(3, &env, host)
        }
    };
    let with = Instruments {
        small_disk: disk.as_ref().map(|d| (d, "m2")),
        clock: clock.as_ref().map(|c| (c, "m1")),
        power: None,
    };
    robustness_run(&mut cluster, &kinds, seconds, seed, with).await;
}

/// Load `cluster` with the suite's clients, inject `kinds` of faults for
/// `seconds`, then check the history, the watch, the leases, memory and
/// HashKV; panics with the report on any violation.
pub(crate) async fn robustness_run(
    cluster: &mut Cluster,
    kinds: &[FaultKind],
    seconds: u64,
    seed: u64,
    with: Instruments<'_>,
) -> RunReport {
    let endpoints = cluster.endpoints();
    let endpoints_at_start = endpoints.clone();
    let start = {
        let mut c = cluster.client(0).await;
        triad_tests::next_revision(&mut c).await
    };
    let rss_start = nemesis::rss_mib(cluster);
    let watcher = Watcher::start(&endpoints, start);
    let leases = LeaseLoad::start(&endpoints, start, LEASE_TTL_SECS);
    let load = Load::start(&endpoints, CLIENTS, 10_000_000);
    let began = std::time::Instant::now();
    tokio::time::sleep(SETTLE).await;
    let faults = nemesis::run(
        cluster,
        kinds,
        Duration::from_secs(seconds),
        Duration::from_secs(2),
        seed,
        with,
    )
    .await;
    tokio::time::sleep(SETTLE).await;
    let history = load.finish().await;
    let lease_report = leases
        .finish(LEASE_ALLOWANCE, |from, to| {
            faults
                .iter()
                .any(|f| f.start < to && f.end + LEASE_ALLOWANCE > from)
        })
        .await;
    let endpoints = cluster.endpoints();
    let log = read_log(&endpoints, start).await;
    let last = log.last().map_or(start, |l| l.revision);
    let connections = watcher.connections.clone();
    let seen = watcher.finish(last).await;
    let ops = history.ops();

    let mut report = RunReport {
        seconds: began.elapsed().as_secs(),
        operations: ops.len(),
        failed_operations: ops
            .iter()
            .filter(|o| matches!(o.outcome, triad_tests::history::Outcome::Unknown))
            .count(),
        faults,
        leased_keys: lease_report.keys,
        leases_extended_by_faults: lease_report.extended_by_faults,
        max_lease_overstay: lease_report.max_overstay,
        rss_start,
        rss_end: nemesis::rss_mib(cluster),
        ..Default::default()
    };
    match check(&ops, &log) {
        Ok(r) => eprintln!("history: {r:?}"),
        Err(e) => report.violations.push(format!("history: {e}")),
    }
    if let Err(e) = check_watch(&seen, &log) {
        report.violations.push(format!("watch: {e}"));
    }
    if seen.len() != log.len() {
        eprintln!("{}", cluster.logs_of("m0"));
        for ep in &endpoints_at_start {
            let status = triad_tests::etcdctl(ep, &["endpoint", "status", "--command-timeout=2s"]);
            let members = triad_tests::etcdctl(ep, &["member", "list", "--command-timeout=2s"]);
            eprintln!(
                "{ep}: {} {}{}",
                String::from_utf8_lossy(&status.stdout).trim(),
                String::from_utf8_lossy(&status.stderr).trim(),
                String::from_utf8_lossy(&members.stdout).trim()
            );
        }
        report.violations.push(format!(
            "the watcher saw {} of {} changes (the next was {:?}); its connections: {:?}",
            seen.len(),
            log.len(),
            log.get(seen.len()),
            connections.lock().map(|c| c.clone()).unwrap_or_default()
        ));
    }
    report.violations.extend(lease_report.violations);
    for (daemon, mib) in &report.rss_end {
        if *mib > RSS_BOUND_MIB {
            report
                .violations
                .push(format!("{daemon} uses {mib} MiB (bound {RSS_BOUND_MIB})"));
        }
    }
    for f in &report.faults {
        eprintln!(
            "fault: {:?} {} ({:.1} s)",
            f.kind,
            f.what,
            (f.end - f.start).as_secs_f64()
        );
    }
    eprintln!("{}", report.markdown(&ops, SETTLE));
    assert!(report.violations.is_empty(), "{:#?}", report.violations);
    cluster.assert_equal_hashes(last).await;
    assert!(
        report.operations > 100 && report.faults.len() >= kinds.len(),
        "too little happened: {report:?}"
    );
    report
}
