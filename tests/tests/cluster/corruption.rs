//! Corruption checks: one member's stored data is changed behind its back;
//! the leader's periodic HashKV comparison raises CORRUPT for it (etcd's
//! alarm), after which the cluster refuses writes with etcd's error; and a
//! member started with the initial check refuses to start on bad data.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use triad_tests::cluster::Cluster;
use triad_tests::ok_stdout;

/// Change one stored value of member i's storaged (which must be stopped).
fn corrupt_store(cluster: &Cluster, i: usize) {
    let dir = cluster.members[i].dir.join("storaged");
    let db = fjall::SingleWriterTxDatabase::builder(&dir)
        .open()
        .expect("open the member's store");
    let index = db
        .keyspace("index", fjall::KeyspaceCreateOptions::default)
        .expect("index keyspace");
    let (key, mut value) = {
        let first = index.first_key_value().expect("a stored record");
        let (k, v) = first.into_inner().expect("read record");
        (k.to_vec(), v.to_vec())
    };
    // Past the record header: the value itself.
    let last = value.len() - 1;
    value[last] ^= 0x55;
    let mut tx = db.write_tx();
    tx.insert(&index, key, value);
    tx.commit().expect("commit");
    db.persist(fjall::PersistMode::SyncAll).expect("persist");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_with_changed_data_raises_corrupt() {
    let cluster = Cluster::start_with_env(
        3,
        &[
            ("TRIAD_EXPERIMENTAL_CORRUPT_CHECK_TIME", "500ms"),
            ("TRIAD_EXPERIMENTAL_INITIAL_CORRUPT_CHECK", "true"),
        ],
    );
    let mut c = cluster.client(0).await;
    for i in 0..20 {
        c.put(format!("k{i}"), format!("value-{i}"), None)
            .await
            .expect("put");
    }
    let leader = cluster.leader().await;
    let victim = (leader + 1) % 3;
    let victim_id = cluster.member_id(victim).await;
    // Make sure the victim has everything, then change its data offline.
    let mut v = cluster.client(victim).await;
    v.get("k19", None).await.expect("victim caught up");
    cluster.pause_supervisor(true);
    let pid = cluster.signal(victim, "storaged", Signal::SIGKILL);
    cluster.wait_dead(pid);
    corrupt_store(&cluster, victim);
    cluster.pause_supervisor(false);
    cluster.wait_restarted(victim, "storaged", pid);

    let deadline = Instant::now() + Duration::from_secs(30);
    let want = format!("memberID:{victim_id} alarm:CORRUPT");
    loop {
        let list = ok_stdout(&cluster.etcdctl(leader, &["alarm", "list"]));
        if list.contains(&want) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no CORRUPT alarm: {list:?}\n{}",
            cluster.logs(leader)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let refused = cluster.etcdctl(0, &["put", "after", "corruption"]);
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("etcdserver: corrupt cluster"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    // Restarted with the initial check, the victim's raftd refuses to run.
    let old = cluster.signal(victim, "raftd", Signal::SIGKILL);
    cluster.wait_restarted(victim, "raftd", old);
    let log = cluster.members[victim].dir.join("logs/raftd.log");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("found data inconsistency with peers") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "initial check did not refuse:\n{}",
            cluster.logs(victim)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
