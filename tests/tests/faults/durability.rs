//! Durability and independent restarts: every acknowledged write survives
//! kill -9 of the whole member or of any one daemon under load, nothing is
//! half-applied, revisions continue without reuse; while raftd is down,
//! serializable reads work and writes fail with etcd's error in bounded time.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etcd_client::{GetOptions, Txn, TxnOp};
use triad_tests::{connect, Member};

/// (key, revision) of every write the client saw acknowledged.
pub(crate) type Acks = Arc<Mutex<Vec<(String, i64)>>>;

/// Writers that each alternate plain puts and two-key txns until stopped.
pub(crate) struct Load {
    stop: Arc<AtomicBool>,
    acks: Acks,
    tasks: Vec<tokio::task::JoinHandle<u64>>,
}

impl Load {
    pub(crate) async fn start(endpoint: &str, writers: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let acks: Acks = Arc::default();
        let mut tasks = Vec::new();
        for w in 0..writers {
            let mut c = connect(endpoint).await;
            let (stop, acks) = (stop.clone(), acks.clone());
            tasks.push(tokio::spawn(async move {
                let mut errors = 0u64;
                let mut seq = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    seq += 1;
                    let result = if seq.is_multiple_of(2) {
                        let k = format!("put/{w}/{seq}");
                        c.put(k.clone(), seq.to_string(), None)
                            .await
                            .map(|r| vec![(k, r.header().map_or(0, |h| h.revision()))])
                    } else {
                        let (a, b) = (format!("pair-a/{w}/{seq}"), format!("pair-b/{w}/{seq}"));
                        let t = Txn::new().and_then([
                            TxnOp::put(a.clone(), "x", None),
                            TxnOp::put(b.clone(), "x", None),
                        ]);
                        c.txn(t).await.map(|r| {
                            let rev = r.header().map_or(0, |h| h.revision());
                            vec![(a, rev), (b, rev)]
                        })
                    };
                    match result {
                        Ok(done) => acks.lock().unwrap().extend(done),
                        Err(_) => {
                            errors += 1;
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                }
                errors
            }));
        }
        Load { stop, acks, tasks }
    }

    pub(crate) async fn stop(self) -> Vec<(String, i64)> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            let _ = t.await;
        }
        let acks = self.acks.lock().unwrap().clone();
        acks
    }

    pub(crate) fn acked(&self) -> usize {
        self.acks.lock().unwrap().len()
    }
}

pub(crate) async fn wait_for_acks(load: &Load, at_least: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while load.acked() < at_least {
        assert!(Instant::now() < deadline, "load made no progress");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every acknowledged write is present at its revision; both keys of every
/// pair txn exist or neither; a new write gets the next unused revision.
pub(crate) async fn verify(member: &Member, acks: &[(String, i64)]) {
    let mut c = member.client().await;
    let all = c
        .get("\0", Some(GetOptions::new().with_from_key()))
        .await
        .expect("read back");
    let found: HashMap<String, i64> = all
        .kvs()
        .iter()
        .map(|kv| {
            (
                String::from_utf8_lossy(kv.key()).into_owned(),
                kv.mod_revision(),
            )
        })
        .collect();
    for (k, rev) in acks {
        assert_eq!(
            found.get(k),
            Some(rev),
            "acknowledged write {k}@{rev} lost or changed\n{}",
            member.logs()
        );
    }
    for k in found.keys().filter(|k| k.starts_with("pair-a/")) {
        let b = k.replacen("pair-a/", "pair-b/", 1);
        assert_eq!(found.get(k), found.get(&b), "txn {k} half-applied");
    }
    for k in found.keys().filter(|k| k.starts_with("pair-b/")) {
        assert!(
            found.contains_key(&k.replacen("pair-b/", "pair-a/", 1)),
            "txn {k} half-applied"
        );
    }
    let current = all.header().map_or(0, |h| h.revision());
    let max_seen = found.values().copied().max().unwrap_or(0);
    assert!(current >= max_seen);
    let next = c
        .put("after-restart", "x", None)
        .await
        .expect("write after restart");
    assert_eq!(
        next.header().map(|h| h.revision()),
        Some(current + 1),
        "revision reused or skipped"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_of_whole_member_under_load_loses_no_acknowledged_write() {
    let mut member = Member::start();
    for round in 0..2 {
        let load = Load::start(&member.endpoint(), 8).await;
        wait_for_acks(&load, 300 * (round + 1)).await;
        tokio::task::block_in_place(|| member.crash());
        let acks = load.stop().await;
        tokio::task::block_in_place(|| member.launch());
        verify(&member, &acks).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_of_each_daemon_under_load_loses_no_acknowledged_write() {
    let member = Member::start();
    for daemon in ["storaged", "raftd", "gatewayd"] {
        let load = Load::start(&member.endpoint(), 8).await;
        wait_for_acks(&load, 200).await;
        let old = member.kill9(daemon);
        tokio::task::block_in_place(|| member.wait_restarted(daemon, old));
        // The member serves writes again after the restart.
        let before = load.acked();
        wait_for_acks(&load, before + 200).await;
        let acks = load.stop().await;
        verify(&member, &acks).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_raftd_is_down_serializable_reads_work_and_writes_time_out() {
    let member = Member::start_with_env(&[("TRIAD_REQUEST_TIMEOUT_MS", "1500")]);
    let mut c = member.client().await;
    c.put("k", "v", None).await.expect("put");

    member.pause_supervisor(true); // so raftd stays down
    let old = member.kill9("raftd");

    let got = c
        .get("k", Some(GetOptions::new().with_serializable()))
        .await
        .expect("serializable read");
    assert_eq!(got.kvs()[0].value(), b"v");

    let started = Instant::now();
    let err = c
        .put("k", "w", None)
        .await
        .expect_err("write must fail while raftd is down");
    let waited = started.elapsed();
    match err {
        etcd_client::Error::GRpcStatus(s) => {
            assert_eq!(s.code(), tonic::Code::Unavailable, "{s:?}");
            assert_eq!(s.message(), "etcdserver: request timed out");
        }
        other => panic!("unexpected error {other}"),
    }
    // Within the request timeout (1.5 s) plus slack, never hanging. It may
    // be sooner: a proposal whose connection broke is failed at once rather
    // than re-sent, since it might have been committed.
    assert!(waited < Duration::from_secs(5), "waited {waited:?}");

    let lin = c
        .get("k", None)
        .await
        .expect_err("linearizable read needs raftd");
    assert!(lin.to_string().contains("request timed out"), "{lin}");

    member.pause_supervisor(false);
    tokio::task::block_in_place(|| member.wait_restarted("raftd", old));
    let put = c
        .put("k", "w", None)
        .await
        .expect("write after raftd is back");
    assert!(put.header().unwrap().revision() > 2);
    assert_eq!(c.get("k", None).await.unwrap().kvs()[0].value(), b"w");
}
