//! Network faults between members under load: each member's raftd in a
//! network namespace of its own, joined by links the test cuts, slows and
//! makes lossy (`triad_tests::netsplit`). Each run is checked by the
//! history checker (linearizable, no acknowledged write lost), the watch
//! checker and equal HashKV. Also: a wall-clock step moves no lease.
//! Namespaces need root; without it each test says so and ends early
//! (and fails under CI).

use std::time::{Duration, Instant};

use triad_tests::cluster::Cluster;
use triad_tests::nemesis::FakeClock;
use triad_tests::netsplit::Link;

use triad_tests::fault_run::{checked_run, Fault};

const SETTLE: Duration = Duration::from_secs(2);

fn split(member_env: &[(&str, Vec<(String, String)>)]) -> Option<Cluster> {
    let c = Cluster::start_split(3, &[], |_| {}, member_env);
    if c.is_none() {
        triad_tests::prerequisite_missing(
            "this machine does not let the test make network namespaces",
        );
    }
    c
}

/// A split cluster under the fault-test load: `fault`, then the history,
/// watch and HashKV checks; None where namespaces cannot be made.
async fn under_load(fault: Fault) -> Option<Cluster> {
    let mut cluster = split(&[])?;
    let report = checked_run(&mut cluster, SETTLE, fault).await;
    assert!(
        report.acknowledged_puts > 10,
        "too little got through: {report:?}"
    );
    Some(cluster)
}

/// Member i's link slot.
fn slot(c: &Cluster, i: usize) -> usize {
    c.members[i]
        .slot
        .expect("a split cluster's member has a slot")
}

/// The member that member i names as leader, once it names one other
/// than `not` (bounded).
async fn leader_seen_by(c: &Cluster, i: usize, not: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let mut client = c.client(i).await;
        if let Ok(s) = client.status().await {
            if s.leader() != 0 && s.leader() != not {
                return s.leader();
            }
        }
        assert!(Instant::now() < deadline, "member {i} saw no new leader");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_isolated_leader_is_replaced_and_catches_up() {
    let Some(cluster) = under_load(|c| {
        Box::pin(async move {
            let l = c.leader().await;
            let old = c.member_id(l).await;
            let net = c.net.as_ref().expect("split cluster");
            net.isolate(slot(c, l));
            let others: Vec<usize> = (0..3).filter(|i| *i != l).collect();
            let new = leader_seen_by(c, others[0], old).await;
            assert_ne!(new, old);
            // The majority writes; the cut-off member answers with an
            // error in bounded time, never with success.
            let mut majority = c.client(others[1]).await;
            majority
                .put("partition/majority", "yes", None)
                .await
                .expect("a put on the majority side");
            let mut minority = c.client(l).await;
            let put = tokio::time::timeout(
                Duration::from_secs(15),
                minority.put("partition/minority", "no", None),
            )
            .await;
            assert!(
                matches!(put, Ok(Err(_))),
                "the cut-off member must fail the put: {put:?}"
            );
            let get = tokio::time::timeout(
                Duration::from_secs(15),
                minority.get("partition/majority", None),
            )
            .await;
            assert!(
                matches!(get, Ok(Err(_))),
                "a linearizable read on the cut-off member must fail: {get:?}"
            );
            net.heal();
        })
    })
    .await
    else {
        return;
    };
    // The write the cut-off member refused never appears.
    let mut c = cluster.client(0).await;
    let got = c.get("partition/minority", None).await.expect("get");
    assert!(got.kvs().is_empty(), "a refused write was applied");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_cut_link_moves_no_leader() {
    under_load(|c| {
        Box::pin(async move {
            let l = c.leader().await;
            let old = c.member_id(l).await;
            let net = c.net.as_ref().expect("split cluster");
            net.cut(slot(c, l), slot(c, (l + 1) % 3));
            tokio::time::sleep(Duration::from_secs(4)).await;
            // The follower cut from the leader cannot win a pre-vote: the
            // other follower still hears the leader.
            let mut other = c.client((l + 2) % 3).await;
            let s = other.status().await.expect("status");
            assert_eq!(s.leader(), old, "a single cut link moved leadership");
            other
                .put("cut/through-the-other", "yes", None)
                .await
                .expect("a put through the connected follower");
            net.heal();
        })
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_lossy_links_slow_writes_and_lose_nothing() {
    under_load(|c| {
        Box::pin(async move {
            let l = c.leader().await;
            let net = c.net.as_ref().expect("split cluster");
            let delay = Duration::from_millis(100);
            net.around(slot(c, l), Link::Slow { delay, loss: 0.1 });
            // A commit needs a follower's answer: out and back, both late.
            let mut client = c.client(l).await;
            let mut slowest = Duration::ZERO;
            for i in 0..5 {
                let t = Instant::now();
                client
                    .put(format!("slow/{i}"), "v", None)
                    .await
                    .expect("a put over slow links");
                slowest = slowest.max(t.elapsed());
            }
            assert!(
                slowest >= delay * 2,
                "puts were not slowed by the links: {slowest:?}"
            );
            tokio::time::sleep(Duration::from_secs(3)).await;
            net.heal();
        })
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wall_clock_step_moves_no_lease() {
    let Some(clock) = FakeClock::new() else {
        triad_tests::prerequisite_missing("libfaketime is not installed");
        return;
    };
    // Every member on the stepped clock: whoever leads keeps the leases.
    let env: Vec<(&str, Vec<(String, String)>)> = ["m0", "m1", "m2"]
        .iter()
        .map(|m| (*m, clock.env()))
        .collect();
    let Some(cluster) = split(&env) else { return };
    let mut c = cluster.client(0).await;
    for step in [86_400, -86_400] {
        let lease = c.lease_grant(4, None).await.expect("grant").id();
        let opts = etcd_client::PutOptions::new().with_lease(lease);
        c.put("clock/leased", "v", Some(opts)).await.expect("put");
        let granted = Instant::now();
        clock.step(step);
        // libfaketime picks the step up within a second.
        tokio::time::sleep(Duration::from_secs(2)).await;
        // The members' wall clock did move: gatewayd's HTTP Date header.
        // (Forward only: hyper refreshes its cached Date once the wall clock
        // passes the next refresh, so after a step back it holds the old one.)
        if step > 0 {
            let date = http_date(&cluster.members[0].endpoint());
            let expected = shifted_day(step);
            assert!(
                date.contains(&expected),
                "Date {date:?}, expected the day {expected}"
            );
        }
        let got = c.get("clock/leased", None).await.expect("get");
        assert_eq!(
            got.kvs().len(),
            1,
            "a {step:+} s clock step expired a lease"
        );
        let ttl = c.lease_time_to_live(lease, None).await.expect("ttl").ttl();
        assert!((0..=4).contains(&ttl), "TTL after a {step:+} s step: {ttl}");
        // Gone within its TTL plus a checkpoint-free allowance.
        loop {
            let got = c.get("clock/leased", None).await.expect("get");
            if got.kvs().is_empty() {
                break;
            }
            assert!(
                granted.elapsed() < Duration::from_secs(4 + 3),
                "the leased key outlived its TTL after a {step:+} s step"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(granted.elapsed() >= Duration::from_secs(3), "expired early");
        clock.step(0);
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
}

/// The Date header of the member's /health answer.
fn http_date(endpoint: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(endpoint).expect("connect");
    s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .expect("request");
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    answer
        .lines()
        .find_map(|l| {
            l.strip_prefix("date: ")
                .or_else(|| l.strip_prefix("Date: "))
        })
        .unwrap_or_default()
        .to_string()
}

/// Today `step` seconds away, as an HTTP date writes it ("30 Nov 2026").
fn shifted_day(step: i64) -> String {
    let out = std::process::Command::new("date")
        .args(["-u", "-d", &format!("{step:+} seconds"), "+%d %b %Y"])
        .output()
        .expect("date");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}
