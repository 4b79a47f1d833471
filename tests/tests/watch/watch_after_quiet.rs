//! Watches created after a spell of writes nobody watched (gatewayd's feed
//! then carries revisions only) start exactly where they ask: a watch from
//! now sees the next writes, a watch from the past replays without a gap,
//! and response headers keep the current revision. Twice, so the feed also
//! goes quiet again after its watchers leave.

use std::time::{Duration, Instant};

use triad_tests::etcd_client::{Client, WatchOptions, WatchStream};
use triad_tests::{next_revision, Member};

/// Put keys under `q/` for longer than the feed stays loaded with nobody
/// watching.
async fn unwatched_writes(c: &mut Client, round: usize) {
    let until = Instant::now() + Duration::from_secs(3);
    let mut i = 0;
    while Instant::now() < until {
        c.put(format!("q/{round}/{i}"), "v", None)
            .await
            .expect("put");
        i += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The mod revisions of `stream`'s events until one reaches `last`.
async fn revisions_until(stream: &mut WatchStream, last: i64) -> Vec<i64> {
    let mut seen = Vec::new();
    while seen.last().copied().unwrap_or(0) < last {
        let resp = tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .expect("watch stalled")
            .expect("watch stream failed")
            .expect("watch stream ended");
        seen.extend(
            resp.events()
                .iter()
                .filter_map(|e| e.kv())
                .map(|kv| kv.mod_revision()),
        );
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_after_unwatched_writes_start_where_they_ask() {
    let m = Member::start();
    let mut c = m.client().await;
    for round in 0..2 {
        unwatched_writes(&mut c, round).await;
        let now = next_revision(&mut c).await;

        // Response headers still carry the current revision.
        let lease = c.lease_grant(60, None).await.expect("grant");
        let (mut keeper, mut answers) = c.lease_keep_alive(lease.id()).await.expect("keepalive");
        keeper.keep_alive().await.expect("send keepalive");
        let answer = answers
            .message()
            .await
            .expect("keepalive answer")
            .expect("answer");
        assert_eq!(
            answer.header().expect("header").revision(),
            now - 1,
            "round {round}: keepalive header revision"
        );

        let live_opts = WatchOptions::new().with_prefix();
        let mut live = c.watch("q/", Some(live_opts)).await.expect("watch now");
        let past_from = now - 50;
        let past_opts = WatchOptions::new()
            .with_prefix()
            .with_start_revision(past_from);
        let mut past = c.watch("q/", Some(past_opts)).await.expect("watch past");
        for i in 0..10 {
            c.put(format!("q/{round}/after/{i}"), "v", None)
                .await
                .expect("put");
        }
        let last = now + 9;
        assert_eq!(
            revisions_until(&mut live, last).await,
            (now..=last).collect::<Vec<_>>(),
            "round {round}: a watch from now sees the next writes, each once"
        );
        assert_eq!(
            revisions_until(&mut past, last).await,
            (past_from..=last).collect::<Vec<_>>(),
            "round {round}: a watch from the past replays without a gap"
        );
    }
}
