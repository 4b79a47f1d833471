//! Faults under load on a 3-member cluster, each checked by the history
//! checker (linearizable, no acknowledged write lost), the watch checker
//! (ordered, no gap, no duplicate) and equal HashKV on every member.

use std::time::Duration;

use nix::sys::signal::Signal;
use triad_tests::cluster::Cluster;
use triad_tests::DAEMONS;

use triad_tests::fault_run::checked_run;

const SETTLE: Duration = Duration::from_secs(2);

async fn run(fault: triad_tests::fault_run::Fault) {
    let mut cluster = Cluster::start(3);
    let report = checked_run(&mut cluster, SETTLE, fault).await;
    eprintln!("{report:?}");
    assert!(
        report.acknowledged_puts > 20,
        "too little got through: {report:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_leader_raftd() {
    run(|c| {
        Box::pin(async move {
            let l = c.leader().await;
            c.kill9(l, "raftd");
        })
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_follower_storaged() {
    run(|c| {
        Box::pin(async move {
            let f = (c.leader().await + 1) % 3;
            c.kill9(f, "storaged");
        })
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_everything_on_the_leader() {
    run(|c| {
        Box::pin(async move {
            let l = c.leader().await;
            c.kill9_member(l);
        })
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigstop_leader_raftd_past_the_election_timeout() {
    run(|c| {
        Box::pin(async move {
            let l = c.leader().await;
            c.signal(l, "raftd", Signal::SIGSTOP);
            // Election timeout is 1 s (up to 2 s randomized): stay stopped
            // well past it so the others elect a new leader.
            tokio::time::sleep(Duration::from_secs(3)).await;
            c.signal(l, "raftd", Signal::SIGCONT);
        })
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_restart_of_every_daemon() {
    run(|c| {
        Box::pin(async move {
            for i in 0..3 {
                for d in DAEMONS {
                    let old = c.signal(i, d, Signal::SIGTERM);
                    c.wait_restarted(i, d, old);
                    // Let it come back into service before the next one.
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        })
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remove_the_leader() {
    run(|c| {
        Box::pin(async move {
            let l = c.leader().await;
            let id = format!("{:x}", c.member_id(l).await);
            let other = (l + 1) % 3;
            let out = c.etcdctl(other, &["member", "remove", &id]);
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            // The removed member no longer counts: drop it from the checks.
            c.members.remove(l);
        })
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_a_member_under_load_caught_up_by_snapshot() {
    // Small snapshot settings: the log is purged long before the new member
    // arrives, so only a snapshot can bring it up to date.
    let mut cluster = Cluster::start_with_env(
        3,
        &[
            ("TRIAD_SNAPSHOT_COUNT", "100"),
            ("TRIAD_SNAPSHOT_CATCHUP_ENTRIES", "20"),
        ],
    );
    let report = checked_run(&mut cluster, SETTLE, |c| {
        Box::pin(async move {
            // Well past a snapshot and the entries kept after it, so the
            // log a new member would need is gone.
            let mut writer = c.client(0).await;
            for i in 0..300 {
                writer
                    .put(format!("fill{i}"), "x", None)
                    .await
                    .expect("fill put");
            }
            let place = c.new_place();
            let url = format!("--peer-urls={}", place.peer_url());
            let out = c.etcdctl(0, &["member", "add", &place.name, "--learner", &url]);
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let name = place.name.clone();
            c.join(place);
            // A running learner is listed as etcd lists one: started, with
            // its name and client URLs.
            let listed = std::time::Instant::now() + Duration::from_secs(60);
            loop {
                let list = c.etcdctl(0, &["member", "list"]);
                let list = String::from_utf8_lossy(&list.stdout).into_owned();
                let row = format!(", started, {name}, ");
                if list
                    .lines()
                    .any(|l| l.contains(&row) && l.ends_with(", true"))
                {
                    break;
                }
                assert!(std::time::Instant::now() < listed, "{list}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            // A learner serves what etcd's learners serve.
            let refused = c.etcdctl(3, &["get", "k"]);
            assert!(
                String::from_utf8_lossy(&refused.stderr)
                    .contains("etcdserver: rpc not supported for learner"),
                "{}",
                String::from_utf8_lossy(&refused.stderr)
            );
            let local = c.etcdctl(3, &["get", "k", "--consistency=s"]);
            assert!(
                local.status.success(),
                "{}",
                String::from_utf8_lossy(&local.stderr)
            );
            let id = format!("{:x}", c.member_id(3).await);
            // Promote once it is in sync (etcd refuses before).
            let deadline = std::time::Instant::now() + Duration::from_secs(60);
            loop {
                let out = c.etcdctl(0, &["member", "promote", &id]);
                if out.status.success() {
                    break;
                }
                let err = String::from_utf8_lossy(&out.stderr).into_owned();
                assert!(err.contains("in sync with leader"), "{err}");
                assert!(std::time::Instant::now() < deadline, "never in sync: {err}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            // Like etcd's, the new member serves as a voter once it has
            // applied its promotion.
            let mut client = c.client(3).await;
            while client.status().await.expect("status").is_learner() {
                assert!(
                    std::time::Instant::now() < deadline,
                    "promotion never applied"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    })
    .await;
    assert!(report.acknowledged_puts > 20, "{report:?}");
    let log = std::fs::read_to_string(cluster.members[3].dir.join("logs/storaged.log"))
        .expect("new member's storaged log");
    assert!(
        log.contains("activated the received snapshot"),
        "the new member was not caught up by a snapshot:\n{}",
        cluster.logs(3)
    );
}
