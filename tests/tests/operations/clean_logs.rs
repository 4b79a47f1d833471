//! A normal start logs plainly and calmly: the daemons' log files (stderr
//! is no terminal there) hold no ANSI colour escapes, and neither a single
//! member started by `triad up` nor a three-member cluster logs a warning
//! or an error while starting and serving its first writes.

use std::path::Path;

use triad_tests::cluster::Cluster;
use triad_tests::{Member, DAEMONS};

/// The lines of a member's logs that a normal start must not have.
fn complaints(data_dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for d in DAEMONS {
        let path = data_dir.join("logs").join(format!("{d}.log"));
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(!text.is_empty(), "{d} logged nothing");
        for line in text.lines() {
            if line.contains('\u{1b}') || line.contains(" WARN ") || line.contains(" ERROR ") {
                out.push(format!("{d}: {line}"));
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_member_starts_without_warnings_or_colour() {
    let member = Member::start();
    let mut c = member.client().await;
    c.put("k", "v", None).await.expect("put");
    assert_eq!(c.get("k", None).await.expect("get").kvs().len(), 1);
    let bad = complaints(member.data_dir());
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_member_cluster_starts_without_warnings_or_colour() {
    let cluster = Cluster::start(3);
    for i in 0..3 {
        let mut c = cluster.client(i).await;
        c.put(format!("k{i}"), "v", None).await.expect("put");
    }
    for (i, m) in cluster.members.iter().enumerate() {
        let bad = complaints(&m.dir);
        assert!(bad.is_empty(), "member {i}:\n{}", bad.join("\n"));
    }
}
