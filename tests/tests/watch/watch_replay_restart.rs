//! A watch replaying a long history keeps going when storaged restarts in
//! the middle of it: the client (reading slowly, so the replay is in
//! flight) sees every revision exactly once, in order.

use std::time::Duration;

use triad_tests::etcd_client::WatchOptions;
use triad_tests::Member;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_replay_survives_a_storaged_restart() {
    let m = Member::start();
    let value = "v".repeat(1024);
    // ~5 MB of history: more than the stream's flow-control windows, so a
    // slow reader holds the replay mid-way.
    let writers: Vec<_> = (0..16)
        .map(|w| {
            let (endpoint, value) = (m.endpoint(), value.clone());
            tokio::spawn(async move {
                let mut c = triad_tests::connect(&endpoint).await;
                for i in 0..300 {
                    c.put(format!("r/{w}/{i}"), value.clone(), None)
                        .await
                        .expect("put");
                }
            })
        })
        .collect();
    for w in writers {
        w.await.expect("writer");
    }
    let mut c = m.client().await;
    let last = triad_tests::next_revision(&mut c).await - 1;
    let opts = WatchOptions::new().with_prefix().with_start_revision(2);
    let mut stream = c.watch("r/", Some(opts)).await.expect("watch");
    let mut seen: Vec<i64> = Vec::new();
    let mut killed = false;
    while seen.last().copied().unwrap_or(0) < last {
        let resp = tokio::time::timeout(Duration::from_secs(30), stream.message())
            .await
            .expect("replay stalled")
            .expect("watch stream failed")
            .expect("watch stream ended");
        for e in resp.events() {
            if let Some(kv) = e.kv() {
                seen.push(kv.mod_revision());
            }
        }
        if !killed && !seen.is_empty() {
            // The replay is under way: restart storaged under it.
            let old = m.kill9("storaged");
            m.wait_restarted("storaged", old);
            killed = true;
        }
    }
    let expected: Vec<i64> = (2..=last).collect();
    assert_eq!(seen.len(), expected.len(), "every revision once");
    assert!(seen == expected, "in order, no gap, no duplicate");
}
