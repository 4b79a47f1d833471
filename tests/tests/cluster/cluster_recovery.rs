//! Recovering from the loss of a quorum: `--force-new-cluster` turns one
//! survivor into a one-member cluster that keeps every acknowledged write.

use triad_tests::cluster::Cluster;
use triad_tests::ok_stdout;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn force_new_cluster_keeps_the_survivors_data() {
    let mut cluster = Cluster::start(3);
    let mut acked = Vec::new();
    {
        let mut c = cluster.client(1).await;
        for i in 0..50 {
            let key = format!("k{i:02}");
            c.put(key.clone(), format!("v{i}"), None)
                .await
                .expect("put");
            acked.push(key);
        }
    }
    cluster.crash_all();
    cluster.force_new_cluster(2);
    let out = ok_stdout(&cluster.etcdctl(0, &["member", "list"]));
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(out.contains(", m2, "), "{out}");
    let mut c = cluster.client(0).await;
    let got = c
        .get(
            "k",
            Some(triad_tests::etcd_client::GetOptions::new().with_prefix()),
        )
        .await
        .expect("get");
    let keys: Vec<String> = got
        .kvs()
        .iter()
        .map(|kv| String::from_utf8_lossy(kv.key()).into_owned())
        .collect();
    assert_eq!(keys, acked, "every acknowledged write survives");
    c.put("after", "yes", None)
        .await
        .expect("the new cluster takes writes");
    let status = c.status().await.expect("status");
    assert_eq!(
        status.leader(),
        status.header().expect("header").member_id()
    );
}
