//! The server-side Lock service (v3lockpb): mutual exclusion among
//! concurrent contenders (checked), release by Unlock and by the holder's
//! lease expiring, and the same lock keys as etcd.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::LockOptions;
use triad_tests::{connect, reference_etcd, Member};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_gives_mutual_exclusion_to_concurrent_contenders() {
    let member = Member::start();
    let holders = Arc::new(AtomicUsize::new(0));
    let acquired = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..5 {
        let (ep, holders, acquired) = (member.endpoint(), holders.clone(), acquired.clone());
        tasks.push(tokio::spawn(async move {
            let mut c = connect(&ep).await;
            let lease = c.lease_grant(30, None).await.unwrap().id();
            for _ in 0..4 {
                let key = c
                    .lock("m", Some(LockOptions::new().with_lease(lease)))
                    .await
                    .unwrap()
                    .key()
                    .to_vec();
                assert_eq!(
                    holders.fetch_add(1, Ordering::SeqCst),
                    0,
                    "two holders at once"
                );
                acquired.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(30)).await;
                holders.fetch_sub(1, Ordering::SeqCst);
                c.unlock(key).await.unwrap();
            }
        }));
    }
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(60), t)
            .await
            .expect("lock contention finished")
            .unwrap();
    }
    assert_eq!(acquired.load(Ordering::SeqCst), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_is_released_when_its_holders_lease_expires() {
    let member = Member::start();
    let mut a = member.client().await;
    let short = a.lease_grant(2, None).await.unwrap().id();
    a.lock("x", Some(LockOptions::new().with_lease(short)))
        .await
        .unwrap();
    let mut b = member.client().await;
    let long = b.lease_grant(30, None).await.unwrap().id();
    let started = Instant::now();
    let got = tokio::time::timeout(
        Duration::from_secs(15),
        b.lock("x", Some(LockOptions::new().with_lease(long))),
    )
    .await
    .expect("B gets the lock once A's lease expires")
    .unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(1000),
        "B got the lock while A held it"
    );
    assert_eq!(got.key(), format!("x/{long:x}").as_bytes());
}

async fn keys(endpoint: &str) -> Vec<String> {
    let mut c = connect(endpoint).await;
    let lease = c
        .lease_grant(
            30,
            Some(etcd_client::LeaseGrantOptions::new().with_id(0xabc)),
        )
        .await
        .unwrap()
        .id();
    let k = c
        .lock("name", Some(LockOptions::new().with_lease(lease)))
        .await
        .unwrap()
        .key()
        .to_vec();
    let held = c
        .get("name/", Some(etcd_client::GetOptions::new().with_prefix()))
        .await
        .unwrap()
        .kvs()
        .len();
    c.unlock(k.clone()).await.unwrap();
    let after = c
        .get("name/", Some(etcd_client::GetOptions::new().with_prefix()))
        .await
        .unwrap()
        .kvs()
        .len();
    vec![
        String::from_utf8_lossy(&k).into_owned(),
        format!("held {held} after {after}"),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_keys_match_etcd() {
    let member = Member::start();
    let ours = keys(&member.endpoint()).await;
    assert_eq!(ours, ["name/abc", "held 1 after 0"]);
    let Some(etcd) = reference_etcd(&[]) else {
        return;
    };
    assert_eq!(ours, keys(&etcd.endpoint()).await);
}
