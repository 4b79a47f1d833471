//! etcd's `--strict-reconfig-check` (on by default): a leader that took
//! over moments ago has not been in touch with its members for etcd's
//! health interval (5 s), so a membership change is refused with etcd's
//! "unhealthy cluster" until it has; then the same change goes through.

use std::time::{Duration, Instant};

use triad_tests::cluster::Cluster;
use triad_tests::etcdctl;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_right_after_a_leader_change_is_refused_as_unhealthy() {
    let cluster = Cluster::start(3);
    let leader = cluster.leader().await;
    let next = (leader + 1) % 3;
    let target = format!("{:x}", cluster.member_id(next).await);
    let moved = cluster.etcdctl(leader, &["move-leader", &target]);
    assert!(moved.status.success(), "{moved:?}");

    let place = cluster.new_place();
    let url = format!("--peer-urls={}", place.peer_url());
    let via = cluster.members[next].endpoint();
    // Straight after the transfer, without the helper's retries.
    let refused = etcdctl(&via, &["member", "add", &place.name, "--learner", &url]);
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("etcdserver: unhealthy cluster"), "{err}");

    // Once the new leader has been in touch for 5 s, the change is made.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = etcdctl(&via, &["member", "add", &place.name, "--learner", &url]);
        if out.status.success() {
            break;
        }
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(err.contains("unhealthy cluster"), "{err}");
        assert!(Instant::now() < deadline, "still refused: {err}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let list =
        String::from_utf8_lossy(&cluster.etcdctl(0, &["member", "list"]).stdout).into_owned();
    assert_eq!(list.lines().count(), 4, "{list}");
}
