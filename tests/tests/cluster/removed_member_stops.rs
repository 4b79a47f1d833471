//! A removed member stops for good, as a removed etcd exits: once its
//! peers tell it, its raftd and gatewayd exit with the status neither
//! systemd (`RestartPreventExitStatus=2 3`) nor `triad up` restarts, the
//! supervisor stops the rest of that member (and only that member), and
//! the reason is logged once. The remaining members keep serving.

use std::time::{Duration, Instant};

use triad_tests::alive;
use triad_tests::cluster::Cluster;
use triad_tests::ok_stdout;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_member_stops_and_is_not_restarted() {
    let mut cluster = Cluster::start(3);
    let removed = 2;
    let place = cluster.members[removed].clone();
    let pids: Vec<(&str, i32)> = ["storaged", "raftd", "gatewayd"]
        .into_iter()
        .map(|d| (d, cluster.pid(removed, d).expect("pid")))
        .collect();
    cluster.member_remove(removed, 0).await;

    let deadline = Instant::now() + Duration::from_secs(60);
    while pids.iter().any(|(_, p)| alive(*p)) {
        assert!(
            Instant::now() < deadline,
            "the removed member still runs {:?}\n{}",
            pids.iter().filter(|(_, p)| alive(*p)).collect::<Vec<_>>(),
            cluster.logs_of(&place.name)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Nothing came back: the supervisor gave up instead of restarting.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let pid_dir = place.dir.join("pids");
    for (daemon, old) in &pids {
        let now = std::fs::read_to_string(pid_dir.join(format!("{daemon}.pid")))
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok());
        assert!(
            now.is_none_or(|p| p == *old || !alive(p)),
            "{daemon} was restarted ({now:?})"
        );
    }
    // Said once by whichever daemon learned it first (raftd from its
    // peers' refusal, or gatewayd from raftd's status once the removal
    // reached this member's own log), never repeated.
    let log = |d: &str| {
        std::fs::read_to_string(place.dir.join(format!("logs/{d}.log"))).unwrap_or_default()
    };
    let said = |d: &str| {
        log(d)
            .lines()
            .filter(|l| l.contains(" ERROR ") && l.contains("permanently removed from the cluster"))
            .count()
    };
    let (raftd, gatewayd) = (said("raftd"), said("gatewayd"));
    assert!(
        raftd + gatewayd >= 1 && raftd <= 1 && gatewayd <= 1,
        "raftd said it {raftd} times, gatewayd {gatewayd}\n{}\n{}",
        log("raftd"),
        log("gatewayd")
    );

    let put = cluster.etcdctl(0, &["put", "after-removal", "ok"]);
    assert!(
        put.status.success(),
        "{put:?}\n{}\n{}",
        cluster.logs(0),
        cluster.logs(1)
    );
    let members = ok_stdout(&cluster.etcdctl(1, &["member", "list"]));
    assert_eq!(members.lines().count(), 2, "{members}");
}
