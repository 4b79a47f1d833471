//! Backups: `etcdctl snapshot save` against a member while writes go on
//! gives a consistent copy; `triad snapshot restore` turns it into a new
//! cluster that serves the same data at the same revisions (same HashKV),
//! leases included, and takes new writes after them.

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use triad_tests::etcd_client::{GetOptions, PutOptions};
use triad_tests::{bin, ok_stdout, Member};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saved_snapshot_restores_into_a_cluster_with_the_same_data() {
    let source = Member::start();
    let mut c = source.client().await;
    for i in 0..200 {
        c.put(format!("k{:03}", i % 50), format!("v{i}"), None)
            .await
            .expect("put");
    }
    c.delete("k007", None).await.expect("delete");
    let lease = c.lease_grant(600, None).await.expect("lease").id();
    c.put("leased", "x", Some(PutOptions::new().with_lease(lease)))
        .await
        .expect("put with lease");

    // Writes continue while the snapshot streams.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, mut c) = (stop.clone(), source.client().await);
        tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) && n < 10_000 {
                let _ = c.put(format!("during/{n}"), "x", None).await;
                n += 1;
            }
        })
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("backup.db");
    let file_arg = file.to_string_lossy().into_owned();
    let saved = source.etcdctl(&["snapshot", "save", &file_arg]);
    stop.store(true, Ordering::Relaxed);
    let _ = writer.await;
    assert!(
        String::from_utf8_lossy(&saved.stdout).contains("Snapshot saved at"),
        "{}{}",
        String::from_utf8_lossy(&saved.stdout),
        String::from_utf8_lossy(&saved.stderr)
    );

    let restored = Member::start_restored(&file);
    let mut r = restored.client().await;
    // The copy is one point in time: its revision is the restored
    // member's, and every key matches the source at that revision.
    let at = r
        .get("\0", Some(GetOptions::new().with_count_only()))
        .await
        .expect("revision")
        .header()
        .expect("header")
        .revision();
    let all = |rev| GetOptions::new().with_from_key().with_revision(rev);
    let theirs = c
        .get("\0", Some(all(at)))
        .await
        .expect("source at revision");
    let ours = r.get("\0", Some(all(at))).await.expect("restored");
    let view = |kvs: &[triad_tests::etcd_client::KeyValue]| -> Vec<String> {
        kvs.iter()
            .map(|kv| {
                format!(
                    "{:?}={:?} c{} m{} v{} l{}",
                    kv.key(),
                    kv.value(),
                    kv.create_revision(),
                    kv.mod_revision(),
                    kv.version(),
                    kv.lease()
                )
            })
            .collect()
    };
    assert_eq!(view(ours.kvs()), view(theirs.kvs()));
    assert!(ours
        .kvs()
        .iter()
        .any(|kv| kv.key() == b"leased" && kv.lease() == lease));
    let h1 = c.hash_kv(at).await.expect("source hash").hash();
    let h2 = r.hash_kv(at).await.expect("restored hash").hash();
    assert_eq!(h1, h2, "HashKV at the snapshot revision");
    let leases = r.leases().await.expect("leases");
    assert!(leases.leases().iter().any(|l| l.id() == lease));
    let next = r.put("after", "restore", None).await.expect("put");
    assert_eq!(next.header().expect("header").revision(), at + 1);

    // A damaged file and an occupied data dir are refused, as etcd does.
    let mut bytes = std::fs::read(&file).expect("read backup");
    bytes[10] ^= 0xff;
    let damaged = dir.path().join("damaged.db");
    std::fs::write(&damaged, bytes).expect("write");
    let restore = |f: &std::path::Path, d: &std::path::Path| {
        Command::new(bin("triad"))
            .args(["snapshot", "restore"])
            .arg(f)
            .arg("--data-dir")
            .arg(d)
            .output()
            .expect("triad snapshot restore")
    };
    let out = restore(&damaged, &dir.path().join("d1"));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("expected sha256"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = restore(&file, restored.data_dir());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("exists"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status = Command::new(bin("triad"))
        .args(["snapshot", "status"])
        .arg(&file)
        .output()
        .expect("triad snapshot status");
    // etcdctl's simple form: hash, revision, total keys, size (format).
    let status = ok_stdout(&status);
    assert!(status.contains(&format!(", {at}, ")), "{status}");
    assert!(status.contains("etcd (bbolt)"), "{status}");
}
