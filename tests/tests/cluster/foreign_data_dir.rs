//! A member's data belongs to one cluster: a member started on another
//! cluster's data dir refuses to start, saying so, and the cluster it was
//! started in keeps its data and serves on.

use std::path::Path;

use triad_tests::cluster::Cluster;

/// Copy the regular files and directories of `from` into `to`.
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read_dir").flatten() {
        let ty = e.file_type().expect("file type");
        let dest = to.join(e.file_name());
        if ty.is_dir() {
            copy_tree(&e.path(), &dest);
        } else if ty.is_file() {
            std::fs::copy(e.path(), &dest).expect("copy");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_on_another_clusters_data_dir_refuses_to_start() {
    let mut a = Cluster::start(3);
    let mut b = Cluster::start(3);
    let mut ca = a.client(0).await;
    for i in 0..20 {
        ca.put(format!("a{i}"), "from a", None)
            .await
            .expect("put a");
    }
    let mut cb = b.client(0).await;
    for i in 0..50 {
        cb.put(format!("b{i}"), "from b", None)
            .await
            .expect("put b");
    }
    drop((ca, cb));
    b.crash_all();
    a.crash_all();

    // Member 1 of cluster a gets member 1 of cluster b's data dir.
    let m1 = a.members[1].dir.clone();
    std::fs::remove_dir_all(&m1).expect("remove");
    copy_tree(&b.members[1].dir, &m1);

    a.restart_members(&[0, 2]);
    let (code, stderr) = a.start_member_expecting_failure(1);
    assert_ne!(code, Some(0), "it started: {stderr}");
    assert!(
        stderr.contains("another cluster's data dir"),
        "no clear message: {stderr}"
    );

    // Cluster a still has exactly its data, on both members that run (once
    // they have a leader: the refused member's start may overlap their
    // first election on a busy machine).
    a.leader().await;
    for i in [0, 2] {
        let mut c = a.client(i).await;
        let all = c
            .get("", Some(etcd_client::GetOptions::new().with_all_keys()))
            .await
            .unwrap_or_else(|e| panic!("get all on member {i}: {e}\n{}", a.logs(i)));
        assert_eq!(all.count(), 20, "member {i}");
        assert!(all.kvs().iter().all(|kv| kv.value() == b"from a"));
    }
    let mut c = a.client(2).await;
    c.put("after", "ok", None).await.expect("cluster a writes");
}
