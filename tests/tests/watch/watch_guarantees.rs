//! Watch guarantees under load and through daemon restarts: every watcher
//! sees exactly the canonical event sequence from its start revision (in
//! revision order, no gap, no duplicate), all events of one revision in one
//! response; kill -9 of storaged or raftd leaves watch streams connected and
//! complete; after a gatewayd restart a client resumes with start_revision.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Client, EventType, Txn, TxnOp, WatchOptions};
use triad_tests::{connect, next_revision, Member};

/// (revision, key, is_put) of one event.
type Seen = (i64, String, bool);
/// Default end marker: a watcher stops once it sees this key put.
const SENTINEL: &str = "g/~end";

/// Collect a prefix watch from `start` until `sentinel` is put.
/// Err(partial) if the stream broke first.
async fn record(c: &mut Client, start: i64) -> Result<Vec<Seen>, Vec<Seen>> {
    record_until(c, start, SENTINEL).await
}

async fn record_until(c: &mut Client, start: i64, sentinel: &str) -> Result<Vec<Seen>, Vec<Seen>> {
    let opts = WatchOptions::new().with_prefix().with_start_revision(start);
    let mut stream = c.watch("g/", Some(opts)).await.map_err(|e| {
        eprintln!("watch not created: {e}");
        Vec::new()
    })?;
    let mut seen: Vec<Seen> = Vec::new();
    let mut revisions_seen_in_responses = BTreeSet::new();
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(60), stream.message()).await;
        let r = match msg {
            Ok(Ok(Some(r))) => r,
            other => {
                eprintln!("watch stream ended: {other:?}");
                return Err(seen);
            }
        };
        let mut revs_here = BTreeSet::new();
        for e in r.events() {
            let kv = e.kv().expect("event kv");
            revs_here.insert(kv.mod_revision());
            seen.push((
                kv.mod_revision(),
                String::from_utf8_lossy(kv.key()).into_owned(),
                e.event_type() == EventType::Put,
            ));
        }
        for rev in revs_here {
            assert!(
                revisions_seen_in_responses.insert(rev),
                "revision {rev} split over two responses"
            );
        }
        if seen.iter().any(|(_, k, put)| *put && k == sentinel) {
            return Ok(seen);
        }
    }
}

/// Writers putting single keys and two-key txns under g/ until stopped.
fn start_writers(
    endpoint: String,
    n: usize,
    stop: Arc<AtomicBool>,
    per_writer: usize,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..n)
        .map(|w| {
            let (endpoint, stop) = (endpoint.clone(), stop.clone());
            tokio::spawn(async move {
                let mut c = connect(&endpoint).await;
                let mut i = 0;
                while i < per_writer && !stop.load(Ordering::Relaxed) {
                    let ok = if i % 5 == 0 {
                        let t = Txn::new().and_then([
                            TxnOp::put(format!("g/{w}/t{i}a"), "x", None),
                            TxnOp::put(format!("g/{w}/t{i}b"), "x", None),
                        ]);
                        c.txn(t).await.is_ok()
                    } else {
                        c.put(format!("g/{w}/{}", i % 50), i.to_string(), None)
                            .await
                            .is_ok()
                    };
                    if ok {
                        i += 1;
                    } else {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            })
        })
        .collect()
}

/// The canonical sequence: a watcher replaying everything from revision 1.
async fn canonical(endpoint: &str, sentinel: &str) -> Vec<Seen> {
    let mut c = connect(endpoint).await;
    record_until(&mut c, 1, sentinel)
        .await
        .expect("history replay")
}

fn suffix_from(all: &[Seen], start: i64) -> Vec<Seen> {
    all.iter()
        .filter(|(r, _, _)| *r >= start)
        .cloned()
        .collect()
}

fn assert_complete(name: &str, got: &[Seen], all: &[Seen], start: i64) {
    let want = suffix_from(all, start);
    assert_eq!(
        got.len(),
        want.len(),
        "{name}: {} events, want {}",
        got.len(),
        want.len()
    );
    assert!(
        got == want.as_slice(),
        "{name}: events differ from the canonical sequence"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_watchers_see_every_event_once_in_order() {
    let member = Member::start();
    let ep = member.endpoint();
    let mut c = member.client().await;
    // Some history first, so that watchers can start in the past.
    for i in 0..200 {
        c.put(format!("g/pre/{}", i % 20), i.to_string(), None)
            .await
            .unwrap();
    }
    let mut watchers = Vec::new();
    for i in 0..24i64 {
        let ep = ep.clone();
        // Starts: the future (0 = next revision), and several past revisions.
        let start = if i % 3 == 0 { 0 } else { 2 + i * 7 };
        watchers.push(tokio::spawn(async move {
            let mut c = connect(&ep).await;
            let start = if start == 0 {
                next_revision(&mut c).await
            } else {
                start
            };
            (start, record(&mut c, start).await)
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stop = Arc::new(AtomicBool::new(false));
    for w in start_writers(ep.clone(), 4, stop, 600) {
        w.await.unwrap();
    }
    c.put(SENTINEL, "", None).await.unwrap();
    let all = canonical(&ep, SENTINEL).await;
    assert!(all.len() > 2800, "only {} events", all.len());
    for (i, w) in watchers.into_iter().enumerate() {
        let (start, got) = w.await.unwrap();
        let got = got
            .unwrap_or_else(|partial| panic!("watcher {i} broke after {} events", partial.len()));
        assert_complete(&format!("watcher {i} from {start}"), &got, &all, start);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_of_storaged_or_raftd_keeps_watches_complete() {
    let member = Member::start();
    let ep = member.endpoint();
    for daemon in ["storaged", "raftd"] {
        let mut c = member.client().await;
        let start = next_revision(&mut c).await;
        let sentinel = format!("g/~end-{daemon}");
        let watchers: Vec<_> = (0..4)
            .map(|_| {
                let (ep, sentinel) = (ep.clone(), sentinel.clone());
                tokio::spawn(async move {
                    record_until(&mut connect(&ep).await, start, &sentinel).await
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let stop = Arc::new(AtomicBool::new(false));
        let writers = start_writers(ep.clone(), 3, stop.clone(), 300);
        tokio::time::sleep(Duration::from_millis(400)).await;
        let old = member.kill9(daemon);
        tokio::task::block_in_place(|| member.wait_restarted(daemon, old));
        for w in writers {
            w.await.unwrap();
        }
        c.put(sentinel.clone(), daemon, None).await.unwrap();
        let all = canonical(&ep, &sentinel).await;
        for (i, w) in watchers.into_iter().enumerate() {
            let got = w
                .await
                .unwrap()
                .unwrap_or_else(|p| panic!("{daemon}: watch {i} broke after {} events", p.len()));
            assert_complete(&format!("{daemon} kill: watcher {i}"), &got, &all, start);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_gatewayd_restart_clients_resume_from_the_next_revision() {
    let member = Member::start();
    let ep = member.endpoint();
    let mut c = member.client().await;
    let start = next_revision(&mut c).await;
    let stop = Arc::new(AtomicBool::new(false));
    let writers = start_writers(ep.clone(), 2, stop.clone(), 400);
    let mut w = connect(&ep).await;
    let watch = tokio::spawn(async move { record(&mut w, start).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let old = member.kill9("gatewayd");
    let first = watch
        .await
        .unwrap()
        .expect_err("the stream breaks with gatewayd");
    tokio::task::block_in_place(|| member.wait_restarted("gatewayd", old));
    // Resume as etcd clients do: from the revision after the last one seen.
    // The new gatewayd may still be binding its port: retry the watch as
    // etcd clients do until it is created.
    let resume = first.last().map_or(start, |(r, _, _)| r + 1);
    let rest = tokio::spawn(async move {
        for _ in 0..100 {
            let mut w = connect(&ep).await;
            match record(&mut w, resume).await {
                Err(partial) if partial.is_empty() => {
                    tokio::time::sleep(Duration::from_millis(100)).await
                }
                done => return done,
            }
        }
        Err(Vec::new())
    });
    for wr in writers {
        wr.await.unwrap();
    }
    let mut c = member.client().await;
    c.put(SENTINEL, "", None).await.unwrap();
    let mut got = first;
    got.extend(rest.await.unwrap().expect("resumed watch"));
    let all = canonical(&member.endpoint(), SENTINEL).await;
    assert_complete("resumed watcher", &got, &all, start);
}
