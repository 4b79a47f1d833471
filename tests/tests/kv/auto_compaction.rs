//! etcd's auto compaction: with `--auto-compaction-mode periodic` and a
//! short retention, history older than the retention is compacted away by
//! the leader while recent history stays readable.

use std::time::{Duration, Instant};

use triad_tests::etcd_client::GetOptions;
use triad_tests::Member;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn periodic_retention_compacts_old_history() {
    let m = Member::start_with_env(&[
        ("TRIAD_AUTO_COMPACTION_MODE", "periodic"),
        ("TRIAD_AUTO_COMPACTION_RETENTION", "2s"),
    ]);
    let mut c = m.client().await;
    let first = c
        .put("k", "1", None)
        .await
        .expect("put")
        .header()
        .expect("h")
        .revision();
    for i in 2..20 {
        c.put("k", i.to_string(), None).await.expect("put");
    }
    // Right away, all of it is still there.
    c.get("k", Some(GetOptions::new().with_revision(first)))
        .await
        .expect("old revision readable before the retention passes");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let old = c
            .get("k", Some(GetOptions::new().with_revision(first)))
            .await;
        match old {
            Err(e)
                if e.to_string()
                    .contains("required revision has been compacted") =>
            {
                break
            }
            _ => assert!(
                Instant::now() < deadline,
                "history older than 2 s never compacted"
            ),
        }
    }
    // The latest value is never compacted.
    let now = c.get("k", None).await.expect("get");
    assert_eq!(now.kvs()[0].value(), b"19");
}

#[test]
fn bad_auto_compaction_flags_are_one_line_errors() {
    let out = std::process::Command::new(triad_tests::bin("raftd"))
        .args(["--auto-compaction-mode", "sometimes"])
        .output()
        .expect("raftd");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown auto-compaction-mode"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}
