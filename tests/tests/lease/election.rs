//! The server-side Election service (v3electionpb) against etcd: campaign,
//! leader, proclaim, observe, resign, leadership handover to a waiting
//! candidate, and etcd's errors for no leader and a stale leader.

use std::time::Duration;

use etcd_client::{LeaseGrantOptions, ProclaimOptions, ResignOptions};
use triad_tests::{connect, reference_etcd, Member};

fn err(e: etcd_client::Error) -> String {
    match e {
        etcd_client::Error::GRpcStatus(s) => format!("ERR {:?} {}", s.code(), s.message()),
        other => format!("ERR {other}"),
    }
}

async fn transcript(endpoint: &str) -> Vec<String> {
    let mut c = connect(endpoint).await;
    let mut out = Vec::new();
    let a = c
        .lease_grant(30, Some(LeaseGrantOptions::new().with_id(0xa1)))
        .await
        .unwrap()
        .id();
    let b = c
        .lease_grant(30, Some(LeaseGrantOptions::new().with_id(0xb2)))
        .await
        .unwrap()
        .id();
    out.push(match c.leader("e").await {
        Ok(r) => format!("leader before: {:?}", r.kv().map(|kv| kv.value().to_vec())),
        Err(e) => format!("leader before: {}", err(e)),
    });
    let won = c.campaign("e", "alice", a).await.unwrap();
    let alice = won.leader().unwrap().clone();
    out.push(format!(
        "alice: key={} rev={} lease={:x}",
        String::from_utf8_lossy(alice.key()),
        alice.rev(),
        alice.lease()
    ));
    c.proclaim(
        "alice2",
        Some(ProclaimOptions::new().with_leader(alice.clone())),
    )
    .await
    .unwrap();
    let l = c.leader("e").await.unwrap();
    out.push(format!(
        "leader: {}",
        String::from_utf8_lossy(l.kv().unwrap().value())
    ));

    let mut observer = connect(endpoint).await.observe("e").await.unwrap();
    let first = observer.message().await.unwrap().unwrap();
    out.push(format!(
        "observed: {}",
        String::from_utf8_lossy(first.kv().unwrap().value())
    ));

    let ep = endpoint.to_string();
    let bob =
        tokio::spawn(async move { connect(&ep).await.campaign("e", "bob", b).await.unwrap() });
    tokio::time::sleep(Duration::from_millis(500)).await;
    out.push(format!("bob still waiting: {}", !bob.is_finished()));
    c.resign(Some(ResignOptions::new().with_leader(alice.clone())))
        .await
        .unwrap();
    let bob = tokio::time::timeout(Duration::from_secs(10), bob)
        .await
        .expect("bob wins")
        .unwrap();
    let bob_key = bob.leader().unwrap().clone();
    out.push(format!(
        "bob: key={} rev={}",
        String::from_utf8_lossy(bob_key.key()),
        bob_key.rev()
    ));
    let next = tokio::time::timeout(Duration::from_secs(10), observer.message())
        .await
        .expect("observe")
        .unwrap()
        .unwrap();
    out.push(format!(
        "observed: {}",
        String::from_utf8_lossy(next.kv().unwrap().value())
    ));
    out.push(
        match c
            .proclaim("stale", Some(ProclaimOptions::new().with_leader(alice)))
            .await
        {
            Ok(_) => "stale proclaim ok".into(),
            Err(e) => format!("stale proclaim: {}", err(e)),
        },
    );
    let l = c.leader("e").await.unwrap();
    out.push(format!(
        "leader: {}",
        String::from_utf8_lossy(l.kv().unwrap().value())
    ));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn election_matches_etcd() {
    let member = Member::start();
    let ours = transcript(&member.endpoint()).await;
    assert!(ours.contains(&"leader: bob".to_string()), "{ours:#?}");
    let Some(etcd) = reference_etcd(&[]) else {
        return;
    };
    let theirs = transcript(&etcd.endpoint()).await;
    assert_eq!(ours, theirs);
}
