//! A 3-member cluster from `triad up --members 3`: every member serves
//! every request (writes forwarded to the leader, reads linearizable from
//! any member), membership and status as etcd reports them, and a history
//! of concurrent clients on all members is linearizable with equal HashKV.

use std::time::Duration;

use triad_tests::cluster::Cluster;
use triad_tests::etcd_client::GetOptions;
use triad_tests::ok_stdout;

use triad_tests::fault_run::{checked_run, no_fault};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_member_serves_reads_and_writes() {
    let cluster = Cluster::start(3);
    // A write through each member is visible at once on every member,
    // linearizably, and serializably on the member that took it (etcd's
    // members answer a forwarded write once they applied it themselves).
    for i in 0..3 {
        let mut c = cluster.client(i).await;
        let key = format!("k{i}");
        let put = c
            .put(key.clone(), format!("v{i}"), None)
            .await
            .expect("put");
        let rev = put.header().expect("header").revision();
        let local = c
            .get(key.clone(), Some(GetOptions::new().with_serializable()))
            .await
            .expect("serializable get");
        assert_eq!(local.kvs()[0].value(), format!("v{i}").as_bytes());
        for j in 0..3 {
            let mut other = cluster.client(j).await;
            let got = other.get(key.clone(), None).await.expect("get");
            assert_eq!(
                got.kvs()[0].mod_revision(),
                rev,
                "member {j} after a put via {i}"
            );
        }
    }
    // Leases and their keys work through any member.
    let mut c2 = cluster.client(2).await;
    let lease = c2.lease_grant(30, None).await.expect("grant").id();
    let mut c1 = cluster.client(1).await;
    c1.put(
        "leased",
        "x",
        Some(triad_tests::etcd_client::PutOptions::new().with_lease(lease)),
    )
    .await
    .expect("put with lease");
    let ttl = c2
        .lease_time_to_live(
            lease,
            Some(triad_tests::etcd_client::LeaseTimeToLiveOptions::new().with_keys()),
        )
        .await
        .expect("ttl");
    assert_eq!(ttl.keys(), [b"leased".to_vec()]);
    c1.lease_revoke(lease)
        .await
        .expect("revoke via another member");
    let gone = c2.get("leased", None).await.expect("get");
    assert!(gone.kvs().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_and_status_as_etcd_reports_them() {
    let cluster = Cluster::start(3);
    let out = ok_stdout(&cluster.etcdctl(1, &["member", "list"]));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    for (i, m) in cluster.members.iter().enumerate() {
        let line = lines
            .iter()
            .find(|l| l.contains(&format!(", m{i}, ")))
            .unwrap_or_else(|| panic!("m{i} missing: {out}"));
        assert!(line.contains(", started, "), "{line}");
        assert!(line.contains(&m.peer_url()), "{line}");
        assert!(line.contains(&format!("http://{}", m.endpoint())), "{line}");
        assert!(line.ends_with(", false"), "{line}");
    }
    // One leader, the same term everywhere, IDs as member list has them.
    let mut leaders = Vec::new();
    for i in 0..3 {
        let mut c = cluster.client(i).await;
        let s = c.status().await.expect("status");
        let id = format!("{:x}", s.header().expect("header").member_id());
        assert!(out.contains(&id), "status ID {id} not in member list");
        leaders.push((s.leader(), s.raft_term()));
        assert!(!s.is_learner());
    }
    assert!(leaders.windows(2).all(|w| w[0] == w[1]), "{leaders:?}");
    // etcd's errors for membership mistakes.
    let dup = cluster.etcdctl(
        0,
        &[
            "member",
            "add",
            "x",
            &format!("--peer-urls={}", cluster.members[1].peer_url()),
        ],
    );
    assert!(
        String::from_utf8_lossy(&dup.stderr).contains("etcdserver: Peer URLs already exists"),
        "{}",
        String::from_utf8_lossy(&dup.stderr)
    );
    let missing = cluster.etcdctl(0, &["member", "remove", "1234"]);
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("etcdserver: member not found"),
        "{}",
        String::from_utf8_lossy(&missing.stderr)
    );
    // A voter that never starts: added while the others are in touch,
    // but from then on the leader is not in touch with every voter, and
    // etcd's strict reconfig check refuses the next add as unhealthy.
    let add = cluster.etcdctl(
        0,
        &["member", "add", "ghost", "--peer-urls=http://127.0.0.1:9"],
    );
    assert!(
        add.status.success(),
        "{}{}",
        String::from_utf8_lossy(&add.stdout),
        String::from_utf8_lossy(&add.stderr)
    );
    let add = triad_tests::etcdctl(
        &cluster.members[0].endpoint(),
        &["member", "add", "ghost2", "--peer-urls=http://127.0.0.1:10"],
    );
    assert!(
        String::from_utf8_lossy(&add.stderr).contains("etcdserver: unhealthy cluster"),
        "{}",
        String::from_utf8_lossy(&add.stderr)
    );
    // Promote refuses a voter.
    let voter = ok_stdout(&cluster.etcdctl(0, &["member", "list", "-w", "simple"]));
    let id = voter
        .lines()
        .next()
        .and_then(|l| l.split(',').next())
        .expect("id")
        .to_string();
    let promote = cluster.etcdctl(0, &["member", "promote", &id]);
    assert!(
        String::from_utf8_lossy(&promote.stderr)
            .contains("etcdserver: can only promote a learner member"),
        "{}",
        String::from_utf8_lossy(&promote.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_clients_on_all_members_are_linearizable() {
    let mut cluster = Cluster::start(3);
    let report = checked_run(&mut cluster, Duration::from_secs(3), no_fault).await;
    assert!(report.acknowledged_puts > 50, "{report:?}");
    assert!(report.reads > 50, "{report:?}");
    assert_eq!(report.unknown, 0, "no failures without faults: {report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn move_leader_and_member_update() {
    let cluster = Cluster::start(3);
    let leader = cluster.leader().await;
    let target = (leader + 1) % 3;
    let target_id = format!("{:x}", cluster.member_id(target).await);
    // etcd: only the leader moves leadership.
    let refused = cluster.etcdctl(target, &["move-leader", &target_id]);
    assert!(!refused.status.success());
    let moved = cluster.etcdctl(leader, &["move-leader", &target_id]);
    assert!(
        moved.status.success(),
        "{}",
        String::from_utf8_lossy(&moved.stderr)
    );
    assert_eq!(cluster.leader().await, target);
    let bad = cluster.etcdctl(target, &["move-leader", "1234"]);
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("etcdserver: bad leader transferee"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    // MemberUpdate changes a member's peer URLs (here an added member that
    // never started); unknown IDs get etcd's error.
    let add = ok_stdout(&cluster.etcdctl(
        0,
        &["member", "add", "later", "--peer-urls=http://127.0.0.1:9"],
    ));
    let id = add
        .split_whitespace()
        .nth(1)
        .expect("member add prints the new ID")
        .to_string();
    ok_stdout(&cluster.etcdctl(
        1,
        &["member", "update", &id, "--peer-urls=http://127.0.0.1:10"],
    ));
    let list = ok_stdout(&cluster.etcdctl(2, &["member", "list"]));
    assert!(
        list.contains("http://127.0.0.1:10") && !list.contains("http://127.0.0.1:9,"),
        "{list}"
    );
    let missing = cluster.etcdctl(
        0,
        &[
            "member",
            "update",
            "1234",
            "--peer-urls=http://127.0.0.1:11",
        ],
    );
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("etcdserver: member not found"),
        "{}",
        String::from_utf8_lossy(&missing.stderr)
    );
}
