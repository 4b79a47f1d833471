//! Power loss: a member's disk loses everything not yet fsynced (and, torn,
//! part of the last write) while every process on it dies. Each daemon
//! boots from what is left, and every write acknowledged before the cut is
//! still there at its revision.

use std::path::Path;
use std::time::{Duration, Instant};

use etcd_client::GetOptions;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use triad_tests::cluster::Cluster;
use triad_tests::nemesis::{FaultKind, Instruments};
use triad_tests::power_cuts::{self, EtcdTarget, Tally, TriadTarget};
use triad_tests::powerloss::model::{Entries, OpKind};
use triad_tests::powerloss::{MemberDisks, PowerDisk};
use triad_tests::{power_disk, Member};

use crate::durability::{verify, wait_for_acks, Load};
use crate::nemesis::{env_u64, robustness_run, SUITE_ENV};

/// `rounds` power cuts (torn or not) of one member under load: every
/// write acknowledged before a cut is back at its revision afterwards.
async fn power_cuts_of_one_member(torn: bool, rounds: usize) {
    let Some((dir, disk)) = power_disk() else {
        return;
    };
    let mut member = Member::start_in(dir, &[]);
    for round in 0..rounds {
        let load = Load::start(&member.endpoint(), 8).await;
        wait_for_acks(&load, 300 * (round + 1)).await;
        tokio::task::block_in_place(|| member.crash());
        let acks = load.stop().await;
        disk.cut(torn);
        tokio::task::block_in_place(|| member.launch());
        verify(&member, &acks).await;
    }
}

/// A new member's first power cut must not lose who it is: fjall named
/// its keyspace directories and `triad up` its cluster token without
/// syncing them, and the member came back as another one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_member_keeps_its_identity_and_data_across_power_cuts() {
    power_cuts_of_one_member(false, 2).await;
}

/// A journal whose last write a power cut tore (storaged's is never
/// fsynced on the write path) must not stop the member booting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_journal_tail_does_not_stop_a_member_booting() {
    power_cuts_of_one_member(true, 2).await;
}

/// The robustness suite with power faults: each member on a power-loss
/// disk, power cut on one member, on all at once, and with torn writes,
/// under the suite's load and checks (linearizable history, exact watch,
/// leases, HashKV equal on every member afterwards).
///
/// CI runs a short version; the long one for ROBUSTNESS.md:
/// `TRIAD_POWERLOSS_SECS=900 tests/run --test faults power_faults -- --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_faults_under_load() {
    if let Err(e) = PowerDisk::available() {
        triad_tests::prerequisite_missing(&format!("a FUSE mount for the power-loss disks: {e}"));
        return;
    }
    let seconds = env_u64("TRIAD_POWERLOSS_SECS", 20);
    let seed = env_u64("TRIAD_POWERLOSS_SEED", 0x0070_0c07);
    let mut disks = MemberDisks::default();
    let mut mounted = Ok(());
    let mut cluster = Cluster::start_with_setup(3, &SUITE_ENV, |dir| {
        mounted = disks.mount(dir, &["m0", "m1", "m2"]);
    });
    mounted.expect("mount the members' power-loss disks");
    let with = Instruments {
        power: Some(&disks),
        ..Instruments::default()
    };
    let report = robustness_run(&mut cluster, &FaultKind::POWER, seconds, seed, with).await;
    let cuts = report
        .faults
        .iter()
        .filter(|f| FaultKind::POWER.contains(&f.kind))
        .count();
    assert!(cuts >= 3, "no power cut of each kind: {:?}", report.faults);
}

/// Write `n` keys `key/<i>` (acknowledged one by one); the revision after.
async fn write_keys(member: &Member, n: usize) -> i64 {
    let mut c = member.client().await;
    let mut rev = 0;
    for i in 0..n {
        let r = c
            .put(format!("key/{i:05}"), format!("value {i}"), None)
            .await
            .expect("put");
        rev = r.header().map_or(0, |h| h.revision());
    }
    rev
}

/// While the member restarts, serializable reads as fast as it answers
/// them; the lowest revision any of them showed.
fn lowest_revision_while_restarting(endpoint: String) -> tokio::task::JoinHandle<Option<i64>> {
    tokio::spawn(async move {
        let mut lowest: Option<i64> = None;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let opts = || {
            Some(
                etcd_client::ConnectOptions::new()
                    .with_connect_timeout(std::time::Duration::from_millis(200))
                    .with_timeout(std::time::Duration::from_secs(6)),
            )
        };
        while std::time::Instant::now() < deadline {
            if let Ok(mut c) = etcd_client::Client::connect([endpoint.as_str()], opts()).await {
                let get = etcd_client::GetOptions::new().with_serializable();
                if let Ok(r) = c.get("key/00000", Some(get)).await {
                    let rev = r.header().map_or(0, |h| h.revision());
                    lowest = Some(lowest.map_or(rev, |l| l.min(rev)));
                    if lowest.is_some_and(|l| l > 0) && r.count() == 1 {
                        // Served: later reads are checked by the caller.
                        break;
                    }
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        lowest
    })
}

/// storaged loses everything it had not synced while raftd keeps its log
/// (snapshots every 100 entries, so raftd purged its log meanwhile):
/// storaged boots, says it stopped uncleanly, catches up exactly from
/// raftd's log, and no client read in between shows an older revision.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_storaged_never_serves_a_revision_older_than_it_served() {
    let Some((dir, disk)) = power_disk() else {
        return;
    };
    let mut member = Member::start_in(dir, &[("TRIAD_SNAPSHOT_COUNT", "100")]);
    let rev = write_keys(&member, 1000).await;
    let before = {
        let mut c = member.client().await;
        let h = c.hash_kv(rev).await.expect("hash_kv");
        h.hash()
    };
    tokio::task::block_in_place(|| member.crash());
    let dropped: u64 = disk
        .unsynced()
        .iter()
        .filter(|(p, _)| p.starts_with("storaged"))
        .map(|(_, b)| b)
        .sum();
    disk.drop_unsynced_under(std::path::Path::new("storaged"))
        .expect("drop storaged's unsynced state");
    assert!(dropped > 0, "storaged had nothing unsynced to lose");
    let reads = lowest_revision_while_restarting(member.endpoint());
    tokio::task::block_in_place(|| member.launch());
    let lowest = reads.await.expect("reader");
    assert!(
        lowest.is_none_or(|l| l >= rev),
        "a read showed revision {lowest:?}, older than {rev}, after the restart"
    );
    let logs = member.logs();
    assert!(
        logs.contains("storaged did not stop cleanly"),
        "storaged said nothing of its unclean stop:\n{logs}"
    );
    let mut c = member.client().await;
    let all = c
        .get("key/", Some(etcd_client::GetOptions::new().with_prefix()))
        .await
        .expect("read back");
    assert_eq!(all.count(), 1000);
    let after = c.hash_kv(rev).await.expect("hash_kv after");
    assert_eq!(
        after.hash(),
        before,
        "the store is not what it was at {rev}"
    );
}

/// raftd's purge never passes what storaged made durable: with snapshots
/// (and purges) every 100 entries, a power cut of the whole member leaves
/// raftd's log holding every entry after storaged's durable state, so the
/// member boots with every acknowledged write. Were the log purged past
/// it, the member would come back without the writes in between (or not
/// at all).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raftds_purge_never_passes_storageds_durable_state() {
    let Some((dir, disk)) = power_disk() else {
        return;
    };
    let mut member = Member::start_in(dir, &[("TRIAD_SNAPSHOT_COUNT", "100")]);
    for round in 1..=3 {
        let rev = write_keys(&member, 400 * round).await;
        tokio::task::block_in_place(|| member.crash());
        disk.power_cut();
        tokio::task::block_in_place(|| member.launch());
        let mut c = member.client().await;
        let all = c
            .get("key/", Some(etcd_client::GetOptions::new().with_prefix()))
            .await
            .expect("read back");
        assert_eq!(
            all.count() as usize,
            400 * round,
            "round {round}\n{}",
            member.logs()
        );
        let now = all.header().map_or(0, |h| h.revision());
        assert!(now >= rev, "revision went back from {rev} to {now}");
    }
}

/// Where a snapshot install is cut: its name, and the operation on m2's
/// disk that the power fails just before.
type Step = (&'static str, fn(OpKind, &Path) -> bool);

const SNAPSHOT_STEPS: [Step; 5] = [
    ("received (first write of the staged store)", |k, p| {
        k == OpKind::Write && p.starts_with("storaged.snapshot")
    }),
    ("staged (before its activation marker)", |k, p| {
        k == OpKind::Create && p == Path::new("storaged.snapshot/ACTIVATE")
    }),
    ("marked (before the live store moves aside)", |k, p| {
        k == OpKind::Rename && p == Path::new("storaged")
    }),
    ("renamed (before the renames are synced)", |k, p| {
        k == OpKind::Unlink && p == Path::new("storaged/ACTIVATE")
    }),
    ("activated (removing the old store)", |k, p| {
        matches!(k, OpKind::Unlink | OpKind::Rmdir) && p.starts_with("storaged.old")
    }),
];

/// The processes of the member whose data dir is `dir`: its `triad up`
/// and its daemons (by their command lines).
fn processes_of(dir: &Path) -> (Vec<i32>, Vec<i32>) {
    let (mut supervisors, mut daemons) = (Vec::new(), Vec::new());
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return (supervisors, daemons);
    };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|p| p.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        let on_dir = args
            .windows(2)
            .any(|w| w[0] == b"--data-dir" && w[1] == dir.as_os_str().as_encoded_bytes());
        if !on_dir {
            continue;
        }
        if args.first().is_some_and(|a| a.ends_with(b"/triad")) {
            supervisors.push(pid);
        } else {
            daemons.push(pid);
        }
    }
    (supervisors, daemons)
}

/// Once `disk`'s power has been cut by its trap (within 60 s): the
/// machine dies (every daemon of the member on `dir` killed while its
/// supervisor is held), the power comes back, and the supervisor restarts
/// the daemons. Whether the trap fired.
fn reboot_when_power_fails(disk: &PowerDisk, dir: &Path) -> bool {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !disk.is_off() {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let (supervisors, daemons) = processes_of(dir);
    for &pid in &supervisors {
        let _ = kill(Pid::from_raw(pid), Signal::SIGSTOP);
    }
    for &pid in &daemons {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
    for &pid in &daemons {
        triad_tests::wait_dead(pid);
    }
    disk.power_on();
    for &pid in &supervisors {
        let _ = kill(Pid::from_raw(pid), Signal::SIGCONT);
    }
    true
}

/// A new member needs a snapshot (the leader purged its log); its power
/// fails at each step of installing it, one new member per step. Every
/// time it boots afterwards and ends up with exactly the cluster's data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_install_cut_by_power_loss_at_every_step_recovers() {
    if let Err(e) = PowerDisk::available() {
        triad_tests::prerequisite_missing(&format!("a FUSE mount for the power-loss disks: {e}"));
        return;
    }
    let env = [
        ("TRIAD_SNAPSHOT_COUNT", "100"),
        ("TRIAD_SNAPSHOT_CATCHUP_ENTRIES", "10"),
    ];
    // Dropped after the cluster: no process is left on a disk unmounted.
    let mut disks = MemberDisks::default();
    let mut cluster = Cluster::start_with_env(3, &env);
    let mut written = 0;
    for (step, trap) in SNAPSHOT_STEPS {
        // Enough writes that the leader snapshots and purges its log.
        let mut c = cluster.client(0).await;
        for _ in 0..300 {
            c.put(format!("key/{written:05}"), "v", None)
                .await
                .expect("put");
            written += 1;
        }
        let place = cluster.new_place();
        disks
            .mount(cluster.dir.path(), &[&place.name])
            .expect("mount the new member's power-loss disk");
        let disk = disks.disk(&place.name).expect("the new disk");
        disk.cut_power_at(trap);
        cluster.member_add(&place);
        let dir = place.dir.clone();
        let fired = std::thread::scope(|s| {
            let reboot = s.spawn(|| reboot_when_power_fails(disk, &dir));
            tokio::task::block_in_place(|| cluster.join(place));
            reboot.join().expect("reboot thread")
        });
        let new = cluster.members.len() - 1;
        assert!(
            fired,
            "the snapshot install never got to {step}\n{}",
            cluster.logs(new)
        );
        let mut m = cluster.client(new).await;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let got = m
                .get(
                    "key/",
                    Some(GetOptions::new().with_prefix().with_count_only()),
                )
                .await;
            if got.as_ref().is_ok_and(|r| r.count() == written) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "after a power cut at {step}, the new member has {got:?} of {written} keys\n{}",
                cluster.logs(new)
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        eprintln!("power cut at {step}: the new member recovered");
        let rev = triad_tests::next_revision(&mut c).await - 1;
        cluster.assert_equal_hashes(rev).await;
        // Back to three members for the next step.
        cluster.member_remove(new, 0).await;
    }
}

/// The power-loss disk through the kernel: what fsync and a directory
/// fsync keep across a power cut, and a trap on a write.
#[test]
fn the_power_loss_disk_keeps_only_what_was_synced() {
    use std::io::Write;
    let Some((dir, disk)) = power_disk() else {
        return;
    };
    let root = dir.path();
    std::fs::create_dir(root.join("a")).expect("mkdir");
    let mut f = std::fs::File::create(root.join("a/synced")).expect("create");
    f.write_all(b"kept").expect("write");
    f.sync_all().expect("fsync");
    std::fs::File::open(root.join("a"))
        .and_then(|d| d.sync_all())
        .expect("fsync a");
    std::fs::File::open(root)
        .and_then(|d| d.sync_all())
        .expect("fsync root");
    f.write_all(b" and lost").expect("write more");
    drop(f);
    std::fs::write(root.join("a/unsynced"), b"gone").expect("write");
    assert_eq!(disk.unsynced().len(), 2, "{:?}", disk.unsynced());
    disk.power_cut();
    assert_eq!(std::fs::read(root.join("a/synced")).expect("read"), b"kept");
    assert!(!root.join("a/unsynced").exists());

    disk.cut_power_at(|kind, path| kind == OpKind::Write && path.starts_with("a"));
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(root.join("a/synced"))
        .expect("open");
    let err = f
        .write_all(b"x")
        .expect_err("the trap cuts the power at this write");
    assert_eq!(err.raw_os_error(), Some(nix::libc::EIO));
    assert!(disk.is_off());
    drop(f);
    disk.power_on();
    assert_eq!(std::fs::read(root.join("a/synced")).expect("read"), b"kept");
}

/// One system under the power-cut harness with directory entries durable
/// as `entries` says.
async fn etcd_under_power_cuts(entries: Entries, cuts: usize, seed: u64) -> Option<Tally> {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut disks = MemberDisks::default();
    disks.mount(dir.path(), &NAMES).expect("mount etcd's disks");
    disks.set_entries(entries);
    let mut target = EtcdTarget::start(dir.path(), &disks)?;
    Some(power_cuts::run(&mut target, cuts, CUT_EVERY, seed).await)
}

async fn triad_under_power_cuts(entries: Entries, cuts: usize, seed: u64) -> Tally {
    let mut disks = MemberDisks::default();
    let mut mounted = Ok(());
    let cluster = Cluster::start_with_setup(3, &[], |dir| {
        mounted = disks.mount(dir, &NAMES);
        disks.set_entries(entries);
    });
    mounted.expect("mount triad's disks");
    let mut target = TriadTarget {
        cluster: &cluster,
        disks: &disks,
    };
    power_cuts::run(&mut target, cuts, CUT_EVERY, seed).await
}

const NAMES: [&str; 3] = ["m0", "m1", "m2"];
const CUT_EVERY: Duration = Duration::from_millis(1500);

/// The same power cuts, by the same harness, for Debian's etcd and for
/// triad, with directory entries durable only at a directory fsync (what
/// POSIX promises) and at once (LazyFS's model, close to ext4's and XFS's
/// journals): acknowledged writes lost and members that did not boot.
/// Prints ROBUSTNESS.md's comparison rows; triad must lose nothing and
/// always boot. The long run for ROBUSTNESS.md:
/// `TRIAD_POWER_CUTS=100 tests/run --test faults power_cuts_compared -- --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_cuts_compared_with_etcd() {
    if let Err(e) = PowerDisk::available() {
        triad_tests::prerequisite_missing(&format!("a FUSE mount for the power-loss disks: {e}"));
        return;
    }
    let cuts = env_u64("TRIAD_POWER_CUTS", 3) as usize;
    let seed = env_u64("TRIAD_POWER_CUTS_SEED", 0x00e7_cd00);
    let mut rows = Vec::new();
    for (entries, label) in [
        (Entries::OnDirFsync, "at a directory fsync"),
        (Entries::AtOnce, "at once"),
    ] {
        let Some(etcd) = etcd_under_power_cuts(entries, cuts, seed).await else {
            triad_tests::prerequisite_missing("etcd (Debian package etcd-server) is not installed");
            return;
        };
        for f in &etcd.failures {
            eprintln!("an etcd member did not boot (entries durable {label}):\n{f}");
        }
        let triad = triad_under_power_cuts(entries, cuts, seed).await;
        rows.push(etcd.row(&format!("etcd 3.4.23, entries durable {label}")));
        rows.push(triad.row(&format!("triad, entries durable {label}")));
        assert_eq!(
            triad.lost,
            Some(0),
            "triad lost acknowledged writes: {triad:?}"
        );
        assert_eq!(
            triad.boot_failures, 0,
            "a triad member did not boot: {triad:?}"
        );
        assert!(!triad.stopped_early && triad.acknowledged > 0, "{triad:?}");
    }
    eprintln!(
        "| system | PowerLoss | PowerLossAll | TornWrite | acknowledged writes | lost | failed boots | power cuts |\n|---|---|---|---|---|---|---|---|\n{}",
        rows.join("\n")
    );
}

/// The child side of `a_journal_torn_inside_an_entrys_lengths_opens`:
/// a synced write, then a batch whose second entry's header lands near a
/// page boundary, written to the OS but not synced, then death (a
/// dropped database would sync its journal).
fn write_a_journal_and_die(dir: &str, size: usize) -> ! {
    let db = fjall::Database::builder(dir).open().expect("open");
    let ks = db
        .keyspace("k", fjall::KeyspaceCreateOptions::default)
        .expect("keyspace");
    ks.insert("synced", "x").expect("insert");
    db.persist(fjall::PersistMode::SyncAll).expect("sync");
    let mut batch = db.batch();
    batch.insert(&ks, "a", vec![1u8; size]);
    batch.insert(&ks, "b", [2u8; 8]);
    batch.commit().expect("commit");
    db.persist(fjall::PersistMode::Buffer).expect("write out");
    // Gone without dropping the database (no core dump, unlike abort).
    std::process::exit(WRITER_DIED);
}

/// The writer's exit status.
const WRITER_DIED: i32 = 3;

/// fjall's journal torn by a power cut inside an entry's length fields
/// (found by the suite's TornWrite: fjall's dev builds asserted on it and
/// storaged never booted): a process writes a journal and dies unsynced,
/// its last write is torn at the 4 KiB boundary, and the database opens
/// with what was synced. The batch size moves the boundary across the
/// second entry's header, so some tear falls inside its length fields.
#[test]
fn a_journal_torn_inside_an_entrys_lengths_opens() {
    if let (Ok(dir), Ok(size)) = (
        std::env::var("TRIAD_TORN_JOURNAL_DIR"),
        std::env::var("TRIAD_TORN_JOURNAL_SIZE"),
    ) {
        write_a_journal_and_die(&dir, size.parse().expect("size"));
    }
    let Some((dir, disk)) = power_disk() else {
        return;
    };
    // Only file bytes are lost here: the names are not what is tested.
    disk.set_entries(Entries::AtOnce);
    let me = std::env::current_exe().expect("test binary");
    for size in (3000..4100).step_by(4) {
        let db_dir = dir.path().join(format!("db{size}"));
        let status = std::process::Command::new(&me)
            .args([
                "--exact",
                "power_loss::a_journal_torn_inside_an_entrys_lengths_opens",
                "--test-threads=1",
            ])
            .env("TRIAD_TORN_JOURNAL_DIR", &db_dir)
            .env("TRIAD_TORN_JOURNAL_SIZE", size.to_string())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .expect("run the writer");
        assert_eq!(status.code(), Some(WRITER_DIED), "the writer failed");
        disk.torn_power_cut();
        let db = fjall::Database::builder(&db_dir)
            .open()
            .unwrap_or_else(|e| {
                panic!("a torn journal (batch of {size} bytes) does not open: {e}")
            });
        let ks = db
            .keyspace("k", fjall::KeyspaceCreateOptions::default)
            .expect("keyspace");
        assert!(
            ks.get("synced").expect("read").is_some(),
            "the synced write is gone (batch of {size} bytes)"
        );
    }
}
