//! Leases as etcd: grant (client- and server-chosen IDs, minimum TTL,
//! duplicate and too-large errors), attach keys, time-to-live with keys,
//! keepalive, revoke, expiry that deletes attached keys (with delete
//! events), and leases surviving kill -9 of raftd or storaged.

use std::time::{Duration, Instant};

use etcd_client::{
    Client, EventType, GetOptions, LeaseTimeToLiveOptions, PutOptions, WatchOptions,
};
use triad_tests::{connect, reference_etcd, Member};

fn err(e: etcd_client::Error) -> String {
    match e {
        etcd_client::Error::GRpcStatus(s) => format!("ERR {:?} {}", s.code(), s.message()),
        other => format!("ERR {other}"),
    }
}

async fn transcript(endpoint: &str) -> Vec<String> {
    let mut c: Client = connect(endpoint).await;
    let mut out = Vec::new();
    let auto = c.lease_grant(30, None).await.unwrap();
    out.push(format!("auto id>0={} ttl={}", auto.id() > 0, auto.ttl()));
    let short = c
        .lease_grant(1, Some(etcd_client::LeaseGrantOptions::new().with_id(1000)))
        .await
        .unwrap();
    out.push(format!("min ttl: id={} ttl={}", short.id(), short.ttl()));
    out.push(
        match c
            .lease_grant(
                30,
                Some(etcd_client::LeaseGrantOptions::new().with_id(1000)),
            )
            .await
        {
            Ok(r) => format!("dup ok {}", r.id()),
            Err(e) => err(e),
        },
    );
    out.push(match c.lease_grant(9_000_000_001, None).await {
        Ok(r) => format!("too large ok {}", r.ttl()),
        Err(e) => err(e),
    });
    let l = c
        .lease_grant(
            60,
            Some(etcd_client::LeaseGrantOptions::new().with_id(2000)),
        )
        .await
        .unwrap();
    c.put("l/b", "1", Some(PutOptions::new().with_lease(l.id())))
        .await
        .unwrap();
    c.put("l/a", "2", Some(PutOptions::new().with_lease(l.id())))
        .await
        .unwrap();
    let t = c
        .lease_time_to_live(2000, Some(LeaseTimeToLiveOptions::new().with_keys()))
        .await
        .unwrap();
    // etcd lists a lease's keys in Go map order (unspecified): compare sorted.
    let mut keys: Vec<String> = t
        .keys()
        .iter()
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .collect();
    keys.sort();
    out.push(format!(
        "ttl: id={} granted={} left>=58={} keys={keys:?}",
        t.id(),
        t.granted_ttl(),
        t.ttl() >= 58
    ));
    out.push(
        match c
            .put("l/x", "1", Some(PutOptions::new().with_lease(77)))
            .await
        {
            Ok(_) => "put with unknown lease ok".into(),
            Err(e) => err(e),
        },
    );
    let (mut keeper, mut stream) = c.lease_keep_alive(2000).await.unwrap();
    keeper.keep_alive().await.unwrap();
    let k = stream.message().await.unwrap().unwrap();
    out.push(format!("keepalive: id={} ttl={}", k.id(), k.ttl()));
    // etcd answers TTL 0 for an unknown lease; the client reports it as an error.
    out.push(match c.lease_keep_alive(4242).await {
        Ok(_) => "keepalive unknown: accepted".into(),
        Err(e) => format!("keepalive unknown: {e}"),
    });
    let rev = c
        .lease_revoke(2000)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    let left = c
        .get("l/", Some(GetOptions::new().with_prefix()))
        .await
        .unwrap();
    out.push(format!(
        "revoked at rev {rev}: {} keys left",
        left.kvs().len()
    ));
    let gone = c.lease_time_to_live(2000, None).await.unwrap();
    out.push(format!(
        "ttl after revoke: {} granted {}",
        gone.ttl(),
        gone.granted_ttl()
    ));
    out.push(match c.lease_revoke(2000).await {
        Ok(_) => "revoke again ok".into(),
        Err(e) => err(e),
    });
    let mut listed: Vec<i64> = c
        .leases()
        .await
        .unwrap()
        .leases()
        .iter()
        .map(|l| l.id())
        .filter(|id| *id == 1000)
        .collect();
    listed.sort();
    out.push(format!("listed: {listed:?}"));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_operations_match_etcd() {
    let member = Member::start();
    let ours = transcript(&member.endpoint()).await;
    let Some(etcd) = reference_etcd(&[]) else {
        return;
    };
    let theirs = transcript(&etcd.endpoint()).await;
    assert_eq!(ours, theirs);
}

/// Wait for the delete events of `keys` on `watch`; returns when they came.
async fn expiry_deletes(member: &Member, ttl: i64) -> Duration {
    let mut c = member.client().await;
    let lease = c.lease_grant(ttl, None).await.unwrap().id();
    let mut w = c
        .watch("e/", Some(WatchOptions::new().with_prefix()))
        .await
        .unwrap();
    w.message().await.unwrap();
    c.put("e/1", "x", Some(PutOptions::new().with_lease(lease)))
        .await
        .unwrap();
    c.put("e/2", "x", Some(PutOptions::new().with_lease(lease)))
        .await
        .unwrap();
    let granted = Instant::now();
    let mut deleted = Vec::new();
    while deleted.len() < 2 {
        let r = tokio::time::timeout(Duration::from_secs(ttl as u64 + 20), w.message())
            .await
            .expect("expiry")
            .unwrap()
            .unwrap();
        for e in r.events() {
            if e.event_type() == EventType::Delete {
                deleted.push((
                    e.kv().unwrap().mod_revision(),
                    String::from_utf8_lossy(e.kv().unwrap().key()).into_owned(),
                ));
            }
        }
    }
    assert_eq!(
        deleted[0].0, deleted[1].0,
        "attached keys are deleted in one revision"
    );
    assert!(c
        .get("e/", Some(GetOptions::new().with_prefix()))
        .await
        .unwrap()
        .kvs()
        .is_empty());
    assert_eq!(c.lease_time_to_live(lease, None).await.unwrap().ttl(), -1);
    granted.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_deletes_attached_keys_with_delete_events() {
    let member = Member::start();
    let took = expiry_deletes(&member, 2).await;
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(5),
        "expired after {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalive_keeps_a_lease_alive_until_it_stops() {
    let member = Member::start();
    let mut c = member.client().await;
    let lease = c.lease_grant(2, None).await.unwrap().id();
    c.put("ka", "x", Some(PutOptions::new().with_lease(lease)))
        .await
        .unwrap();
    let (mut keeper, mut stream) = c.lease_keep_alive(lease).await.unwrap();
    for _ in 0..10 {
        keeper.keep_alive().await.unwrap();
        assert_eq!(stream.message().await.unwrap().unwrap().ttl(), 2);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(
        c.get("ka", None).await.unwrap().kvs().len(),
        1,
        "kept alive for 5 s past a 2 s TTL"
    );
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(
        c.get("ka", None).await.unwrap().kvs().is_empty(),
        "expired once keepalives stopped"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_survive_kill9_of_raftd_and_storaged_and_still_expire() {
    let member = Member::start();
    for daemon in ["raftd", "storaged"] {
        let mut c = member.client().await;
        let keep = c.lease_grant(30, None).await.unwrap().id();
        c.put(
            format!("r/{daemon}"),
            "x",
            Some(PutOptions::new().with_lease(keep)),
        )
        .await
        .unwrap();
        let (mut keeper, mut stream) = c.lease_keep_alive(keep).await.unwrap();
        keeper.keep_alive().await.unwrap();
        stream.message().await.unwrap().unwrap();
        let old = member.kill9(daemon);
        tokio::task::block_in_place(|| member.wait_restarted(daemon, old));
        // The keepalive stream at gatewayd is still open and works again.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            keeper.keep_alive().await.unwrap();
            match stream.message().await {
                Ok(Some(r)) if r.ttl() == 30 => break,
                Ok(Some(_)) | Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(200)).await
                }
                other => panic!("{daemon}: keepalive after restart: {other:?}"),
            }
        }
        let t = c.lease_time_to_live(keep, None).await.unwrap();
        assert!(
            t.ttl() > 20 && t.granted_ttl() == 30,
            "{daemon}: lease kept: {}",
            t.ttl()
        );
        assert_eq!(
            c.get(format!("r/{daemon}"), None)
                .await
                .unwrap()
                .kvs()
                .len(),
            1
        );
        // Expiry still works after the restart.
        let took = expiry_deletes(&member, 2).await;
        assert!(
            took < Duration::from_secs(8),
            "{daemon}: expired after {took:?}"
        );
        c.lease_revoke(keep).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_keep_a_raftd_restart_from_extending_a_lease() {
    // With checkpoints every second, a lease's remaining TTL survives a raftd
    // restart to within one interval; without them it would reset to 30 s.
    let member = Member::start_with_env(&[("TRIAD_LEASE_CHECKPOINT_INTERVAL", "1s")]);
    let mut c = member.client().await;
    let lease = c.lease_grant(30, None).await.unwrap().id();
    let granted = Instant::now();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let old = member.kill9("raftd");
    tokio::task::block_in_place(|| member.wait_restarted("raftd", old));
    let deadline = Instant::now() + Duration::from_secs(20);
    let left = loop {
        match c.lease_time_to_live(lease, None).await {
            Ok(t) => break t.ttl(),
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => panic!("time-to-live after restart: {e}"),
        }
    };
    let elapsed = granted.elapsed().as_secs() as i64;
    assert!(
        left <= 30 - elapsed + 2,
        "lease extended by the restart: {left}s left after {elapsed}s"
    );
    assert!(
        left >= 30 - elapsed - 3,
        "lease shortened by the restart: {left}s left after {elapsed}s"
    );
}
