//! Migrations through snapshot files, both ways: `etcdctl snapshot save`
//! against etcd 3.4.23, `triad snapshot restore`, a member serving it;
//! then `etcdctl snapshot save` against that member, `etcdctl snapshot
//! status` and `restore`, and etcd serving it. Every key (deleted ones
//! too), create/mod revision, version and lease, the header revision, the
//! compaction point, leases, users and roles come out as they went in.
//! Also: etcd's bbolt reader on random files triad's writer made, triad's
//! reader on damaged etcd files, and the temporary file a stream leaves.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use triad_tests::{bin, etcdctl, free_port_pair, ok_stdout, reference_etcd, Member, XorShift};

const ROOT: &str = "--user=root:pw";

/// Writes, deletes, a txn, leases with keys, a compaction and auth, through
/// etcdctl; returns the compacted revision.
fn populate(endpoint: &str) -> i64 {
    let run = |args: &[&str]| ok_stdout(&etcdctl(endpoint, args));
    for i in 0..30 {
        run(&["put", &format!("k{:02}", i % 12), &format!("v{i}")]);
    }
    run(&["del", "k03"]);
    run(&["del", "k1", "--prefix"]);
    // A value larger than a bbolt page (overflow pages).
    run(&["put", "big", &"xy".repeat(4500)]);
    let lease = run(&["lease", "grant", "600"]);
    let lease = lease
        .split_whitespace()
        .nth(1)
        .expect("lease id")
        .to_string();
    run(&["put", "leased/a", "1", &format!("--lease={lease}")]);
    run(&["put", "leased/b", "2", &format!("--lease={lease}")]);
    run(&["lease", "grant", "900"]);
    // A key whose lease is replaced by none keeps no attachment.
    run(&["put", "leased/c", "3", &format!("--lease={lease}")]);
    run(&["put", "leased/c", "4"]);
    let header = run(&["get", "k00", "-w", "json"]);
    let compact = revision_of(&header) - 3;
    run(&["compact", &compact.to_string()]);
    run(&["put", "k00", "after-compaction"]);
    run(&["del", "k05"]);
    run(&["put", "k03", "back"]);
    run(&["user", "add", "root:pw"]);
    run(&["user", "add", "reader:secret"]);
    run(&["role", "add", "readers"]);
    run(&["role", "grant-permission", "readers", "read", "k", "l"]);
    run(&["user", "grant-role", "reader", "readers"]);
    run(&["auth", "enable"]);
    compact
}

/// The header revision of etcdctl's JSON output.
fn revision_of(json: &str) -> i64 {
    let at = json.find("\"revision\":").expect("revision") + "\"revision\":".len();
    json[at..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect::<String>()
        .parse()
        .expect("number")
}

/// What must be identical on both sides: every key with its fields, the
/// header revision, a read before the compaction point, history after it,
/// leases with their keys, users and roles, and what a user may read.
fn view(endpoint: &str, compact: i64) -> Vec<String> {
    let run = |args: &[&str]| {
        let mut all = vec![ROOT];
        all.extend_from_slice(args);
        let out = etcdctl(endpoint, &all);
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            // Only the error line: etcdctl's retry log differs by run.
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .filter(|l| l.starts_with("Error"))
                .collect::<Vec<_>>()
                .join("\n")
        )
    };
    let all = run(&["get", "", "--prefix", "-w", "json"]);
    let kvs = all[all.find("\"kvs\"").expect("kvs")..].to_string();
    let mut v = vec![
        format!("revision {}", revision_of(&all)),
        kvs,
        run(&["get", "k0", "--prefix", &format!("--rev={}", compact - 1)]),
        run(&[
            "get",
            "",
            "--prefix",
            &format!("--rev={compact}"),
            "-w",
            "json",
        ])
        .split("\"kvs\"")
        .nth(1)
        .unwrap_or("")
        .to_string(),
        run(&["user", "list"]),
        run(&["role", "list"]),
        run(&["role", "get", "readers"]),
        run(&["user", "get", "reader"]),
        run(&["auth", "status"])
            .lines()
            .filter(|l| l.contains("Enabled"))
            .collect(),
    ];
    let leases = run(&["lease", "list"]);
    v.push(leases.clone());
    for id in leases.lines().skip(1) {
        let ttl = run(&["lease", "timetolive", id, "--keys"]);
        // The remaining TTL ticks; the granted TTL and keys must match.
        v.push(ttl.split("remaining").next().unwrap_or("").to_string());
        // etcd lists attached keys in no particular order.
        let keys = ttl.split("attached keys").nth(1).unwrap_or("");
        let mut keys: Vec<&str> = keys
            .split(|c: char| c.is_whitespace() || "([])".contains(c))
            .filter(|k| !k.is_empty())
            .collect();
        keys.sort();
        v.push(keys.join(" "));
    }
    let reader = etcdctl(endpoint, &["--user=reader:secret", "get", "k00"]);
    v.push(String::from_utf8_lossy(&reader.stdout).into_owned());
    v
}

/// The two views differ nowhere; a difference is shown cut short.
fn assert_same(got: &[String], want: &[String], what: &str) {
    let cut = |s: &str| s.chars().take(400).collect::<String>();
    assert_eq!(got.len(), want.len(), "{what}");
    for (g, w) in got.iter().zip(want) {
        assert!(g == w, "{what}:\n got: {}\nwant: {}", cut(g), cut(w));
    }
}

/// etcd on a data dir `etcdctl snapshot restore` prepared.
struct RestoredEtcd {
    child: Child,
    endpoint: String,
}

impl RestoredEtcd {
    fn start(file: &Path, dir: &Path) -> RestoredEtcd {
        let port = free_port_pair();
        let client = format!("http://127.0.0.1:{port}");
        let peer = format!("http://127.0.0.1:{}", port + 1);
        let cluster = format!("default={peer}");
        let out = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args(["snapshot", "restore"])
            .arg(file)
            .arg("--data-dir")
            .arg(dir)
            .args(["--initial-cluster", &cluster])
            .args(["--initial-advertise-peer-urls", &peer])
            .output()
            .expect("etcdctl snapshot restore");
        assert!(
            out.status.success(),
            "etcdctl snapshot restore: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let child = Command::new("etcd")
            .arg("--data-dir")
            .arg(dir)
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &cluster])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start etcd");
        let r = RestoredEtcd {
            child,
            endpoint: format!("127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !etcdctl(&r.endpoint, &[ROOT, "endpoint", "health"])
            .status
            .success()
        {
            assert!(Instant::now() < deadline, "restored etcd did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        r
    }
}

impl Drop for RestoredEtcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn save(endpoint: &str, file: &Path) {
    let out = etcdctl(
        endpoint,
        &[ROOT, "snapshot", "save", &file.to_string_lossy()],
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("Snapshot saved at"),
        "snapshot save: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn etcd_to_triad_to_etcd_keeps_every_revision_lease_and_user() {
    let Some(source) = reference_etcd(&[]) else {
        return;
    };
    let compact = populate(&source.endpoint());
    let want = view(&source.endpoint(), compact);
    assert!(
        want[2].contains("required revision has been compacted"),
        "{want:?}"
    );
    let dir = tempfile::tempdir().expect("tempdir");

    // etcd to triad.
    let from_etcd = dir.path().join("from-etcd.db");
    save(&source.endpoint(), &from_etcd);
    let member = Member::start_restored(&from_etcd);
    let got = view(&member.endpoint(), compact);
    assert_same(&got, &want, "triad restored from etcd");

    // triad to etcd: etcd's own tools read the file.
    let from_triad = dir.path().join("from-triad.db");
    save(&member.endpoint(), &from_triad);
    let status = ok_stdout(
        &Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args(["snapshot", "status", "-w", "json"])
            .arg(&from_triad)
            .output()
            .expect("etcdctl snapshot status"),
    );
    assert_eq!(format!("revision {}", revision_of(&status)), want[0]);
    let ours = ok_stdout(
        &Command::new(bin("triad"))
            .args(["snapshot", "status", "-w", "json"])
            .arg(&from_triad)
            .output()
            .expect("triad snapshot status"),
    );
    let fields = |s: &str| s[..s.find(",\"format\"").unwrap_or(s.trim_end().len() - 1)].to_string();
    assert_eq!(
        fields(&ours),
        fields(status.trim_end()),
        "status of a triad snapshot"
    );
    assert!(ours.contains("\"format\":\"etcd (bbolt)\""), "{ours}");
    // The file storaged built for the stream is gone.
    let leftovers: Vec<_> = std::fs::read_dir(member.data_dir())
        .expect("data dir")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains("etcd-snapshot"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    let restored = RestoredEtcd::start(&from_triad, &dir.path().join("etcd-restored"));
    let got = view(&restored.endpoint, compact);
    assert_same(&got, &want, "etcd restored from triad");

    // And the status etcdctl reads from etcd's own file, triad reads alike.
    let theirs = ok_stdout(
        &Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args(["snapshot", "status", "-w", "json"])
            .arg(&from_etcd)
            .output()
            .expect("etcdctl snapshot status"),
    );
    let ours = ok_stdout(
        &Command::new(bin("triad"))
            .args(["snapshot", "status", "-w", "json"])
            .arg(&from_etcd)
            .output()
            .expect("triad snapshot status"),
    );
    assert_eq!(
        fields(&ours),
        fields(theirs.trim_end()),
        "status of an etcd snapshot"
    );

    damaged_etcd_files_are_refused_cleanly(&from_etcd, dir.path());
}

/// etcd's file with bytes overwritten (the trailing hash made to match, so
/// the damage reaches the bbolt reader): `triad snapshot status` and
/// `restore` answer with data or an error, never a panic.
fn damaged_etcd_files_are_refused_cleanly(file: &Path, dir: &Path) {
    let good = std::fs::read(file).expect("read snapshot");
    let body = good.len() - 32;
    let mut rng = XorShift(0x5eed_cafe);
    let mut refused = 0;
    for round in 0..40 {
        let mut bytes = good[..body].to_vec();
        for _ in 0..1 + rng.next_u64() % 6 {
            // Mostly page headers and element fields, where offsets live.
            let page = (rng.next_u64() % (body as u64 / 4096)) as usize;
            let at = page * 4096 + (rng.next_u64() % 96) as usize;
            bytes[at] = rng.next_u64() as u8;
        }
        let mut hash = common::backup::Hasher::default();
        hash.update(&bytes);
        bytes.extend(hash.finish());
        let damaged = dir.join(format!("damaged-{round}.db"));
        std::fs::write(&damaged, &bytes).expect("write");
        let status = Command::new(bin("triad"))
            .args(["snapshot", "status"])
            .arg(&damaged)
            .output()
            .expect("triad snapshot status");
        let restore = Command::new(bin("triad"))
            .args(["snapshot", "restore"])
            .arg(&damaged)
            .arg("--data-dir")
            .arg(dir.join(format!("damaged-data-{round}")))
            .output()
            .expect("triad snapshot restore");
        for out in [&status, &restore] {
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                matches!(out.status.code(), Some(0) | Some(1)) && !err.contains("panicked"),
                "round {round}: {:?} {err}",
                out.status
            );
        }
        refused += usize::from(!restore.status.success());
    }
    assert!(refused > 0, "no damage was noticed");
}

/// The file storaged builds for a snapshot stream, in the data dir.
fn snapshot_files(member: &Member) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(member.data_dir())
        .expect("data dir")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains("etcd-snapshot"))
        .map(|e| e.path())
        .collect()
}

/// A client that leaves mid-stream: the temporary file goes, and the
/// pieces it got are etcd's (32 KiB, the remaining bytes counting down, no
/// header).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_client_that_leaves_leaves_no_file_behind() {
    let member = Member::start();
    let mut c = member.client().await;
    let value = "v".repeat(100_000);
    for i in 0..40 {
        c.put(format!("big/{i}"), value.as_str(), None)
            .await
            .expect("put");
    }
    let mut stream = c.snapshot().await.expect("snapshot");
    let first = stream.message().await.expect("first piece").expect("piece");
    assert_eq!(first.blob().len(), 32 * 1024);
    assert!(
        first.remaining_bytes() > 4_000_000,
        "{}",
        first.remaining_bytes()
    );
    assert!(first.header().is_none());
    let second = stream
        .message()
        .await
        .expect("second piece")
        .expect("piece");
    assert_eq!(
        second.remaining_bytes(),
        first.remaining_bytes() - 32 * 1024
    );
    assert_eq!(snapshot_files(&member).len(), 1, "the file being streamed");
    drop(stream);
    drop(c);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !snapshot_files(&member).is_empty() {
        assert!(
            Instant::now() < deadline,
            "left behind: {:?}",
            snapshot_files(&member)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Random bucket trees written by triad's bbolt writer: etcd's own reader
/// (`etcdctl snapshot status`, bbolt underneath) walks every bucket and
/// gets the hash, key count and size triad's reader gets. Sub-buckets,
/// values over a page (overflow) and trees of several branch levels.
#[test]
fn etcd_reads_random_files_written_by_triad() {
    use common::bbolt::write::{Bucket, Writer};
    use common::bbolt::BucketHeader;
    type W = Writer<std::io::BufWriter<std::fs::File>>;

    fn bucket(w: &mut W, rng: &mut XorShift, depth: u32) -> BucketHeader {
        let n = match rng.next_u64() % 4 {
            0 => 0,
            1 => rng.next_u64() % 8,
            2 => rng.next_u64() % 500,
            _ => 5_000 + rng.next_u64() % 20_000,
        };
        let mut keys: Vec<Vec<u8>> = (0..n)
            .map(|_| {
                let mut k = rng.bytes(24);
                k.push(b'.');
                k
            })
            .collect();
        keys.sort();
        keys.dedup();
        let mut b = Bucket::new();
        for k in keys {
            if depth < 2 && n < 8 && rng.next_u64().is_multiple_of(3) {
                let sub = bucket(w, rng, depth + 1);
                b.put_bucket(w, &k, sub).expect("sub-bucket");
            } else {
                let big = rng.next_u64().is_multiple_of(100);
                let v = rng.bytes(if big { 20_000 } else { 60 });
                b.put(w, &k, &v).expect("put");
            }
        }
        b.finish(w).expect("finish bucket")
    }

    if Command::new("etcdctl").arg("version").output().is_err() {
        triad_tests::prerequisite_missing("etcdctl (Debian package etcd-client) is not installed");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let mut rng = XorShift(0x0b01_7db5);
    let mut largest = 0;
    for round in 0..6 {
        let path = dir.path().join(format!("random-{round}.db"));
        let file = std::fs::File::create(&path).expect("create");
        let mut w = Writer::new(std::io::BufWriter::new(file)).expect("writer");
        let mut root = Bucket::new();
        for i in 0..1 + rng.next_u64() % 5 {
            let h = bucket(&mut w, &mut rng, 0);
            root.put_bucket(&mut w, format!("bucket{i}").as_bytes(), h)
                .expect("root entry");
        }
        let root = root.finish(&mut w).expect("root");
        w.finish(root).expect("file");
        let theirs = ok_stdout(
            &Command::new("etcdctl")
                .env("ETCDCTL_API", "3")
                .args(["snapshot", "status", "-w", "json"])
                .arg(&path)
                .output()
                .expect("etcdctl snapshot status"),
        );
        let ours = ok_stdout(
            &Command::new(bin("triad"))
                .args(["snapshot", "status", "-w", "json"])
                .arg(&path)
                .output()
                .expect("triad snapshot status"),
        );
        let theirs = theirs.trim_end().trim_end_matches('}');
        assert!(
            ours.starts_with(theirs),
            "round {round}: etcd {theirs}, triad {ours}"
        );
        largest = largest.max(std::fs::metadata(&path).expect("size").len());
    }
    // Some bucket was large enough for branch pages above branch pages.
    assert!(largest > 2_000_000, "largest file {largest} bytes");
}
