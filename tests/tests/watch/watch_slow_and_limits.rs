//! Watch under pressure and at the limits: a client that stops reading
//! stalls neither writes nor other watchers and later catches up with no
//! gap; large responses are fragmented under a small --max-request-bytes
//! exactly as etcd fragments them; idle watchers get progress notifications.

use std::time::{Duration, Instant};

use etcd_client::{DeleteOptions, WatchOptions, WatchStream};
use triad_tests::{connect, next_revision, reference_etcd, Member};

async fn revisions_until(stream: &mut WatchStream, last: i64) -> Vec<i64> {
    let mut revs = Vec::new();
    while revs.last().is_none_or(|r| *r < last) {
        let msg = tokio::time::timeout(Duration::from_secs(60), stream.message()).await;
        let r = msg
            .expect("watch stalled")
            .expect("watch error")
            .expect("watch ended");
        revs.extend(r.events().iter().map(|e| e.kv().unwrap().mod_revision()));
    }
    revs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_stalls_nobody_and_catches_up() {
    let member = Member::start();
    let mut c = member.client().await;
    let start = next_revision(&mut c).await;
    // The slow client opens its watch and then does not read.
    let mut slow = connect(&member.endpoint())
        .await
        .watch("s/", Some(WatchOptions::new().with_prefix()))
        .await
        .unwrap();
    let mut fast = connect(&member.endpoint())
        .await
        .watch("s/", Some(WatchOptions::new().with_prefix()))
        .await
        .unwrap();
    let value = vec![b'v'; 4096];
    let began = Instant::now();
    let mut last = 0;
    // ~16 MiB of events: far beyond the stream's and gatewayd's buffers.
    for i in 0..4000 {
        last = c
            .put(format!("s/{}", i % 100), value.clone(), None)
            .await
            .unwrap()
            .header()
            .unwrap()
            .revision();
    }
    let write_time = began.elapsed();
    let fast_revs = revisions_until(&mut fast, last).await;
    assert_eq!(
        fast_revs,
        (start..=last).collect::<Vec<_>>(),
        "the reading watcher missed events"
    );
    assert!(
        write_time < Duration::from_secs(60),
        "writes stalled: {write_time:?}"
    );
    // Now the slow client reads: everything, in order, once.
    let slow_revs = revisions_until(&mut slow, last).await;
    assert_eq!(
        slow_revs,
        (start..=last).collect::<Vec<_>>(),
        "the slow watcher has a gap or duplicate"
    );
    // The metrics show that a stream fell behind and caught up.
    let metrics = http_get(&member.endpoint(), "/metrics");
    let catch_ups: i64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("triad_watch_catch_ups_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no catch-up metric in:\n{metrics}"));
    assert!(catch_ups > 0, "{metrics}");
    assert!(
        metrics.contains("etcd_debugging_mvcc_watch_stream_total 2"),
        "{metrics}"
    );
}

/// A plain HTTP GET on the client port; the response body.
fn http_get(endpoint: &str, path: &str) -> String {
    triad_tests::http(endpoint, "GET", path, "").1
}

/// The number of events in each response of a fragmented watch (etcd-client
/// does not expose the fragment flag itself).
async fn fragment_shape(endpoint: &str) -> Vec<usize> {
    let mut c = connect(endpoint).await;
    let opts = WatchOptions::new()
        .with_prefix()
        .with_fragment()
        .with_prev_key();
    let mut w = c.watch("f/", Some(opts)).await.unwrap();
    let created = w.message().await.unwrap().unwrap();
    assert!(created.created());
    for i in 0..10 {
        c.put(format!("f/{i}"), vec![b'x'; 90_000], None)
            .await
            .unwrap();
    }
    // One revision with ten deletes carrying 90 KB prev_kvs: 900 KB, above
    // etcd's fragment threshold of --max-request-bytes (100 KB) + 512 KiB.
    c.delete("f/", Some(DeleteOptions::new().with_prefix()))
        .await
        .unwrap();
    let mut shape = Vec::new();
    while let Ok(Ok(Some(r))) = tokio::time::timeout(Duration::from_millis(1500), w.message()).await
    {
        shape.push(r.events().len());
    }
    shape
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fragments_match_etcd_under_a_small_request_limit() {
    let member = Member::start_with_env(&[("TRIAD_MAX_REQUEST_BYTES", "100000")]);
    let ours = fragment_shape(&member.endpoint()).await;
    assert_eq!(ours.iter().sum::<usize>(), 20);
    assert!(
        ours.len() > 11,
        "the delete's events were not fragmented: {ours:?}"
    );
    let Some(etcd) = reference_etcd(&["--max-request-bytes", "100000"]) else {
        return;
    };
    assert_eq!(ours, fragment_shape(&etcd.endpoint()).await);
}

/// Progress notifications seen by an idle watcher within `within`, with
/// the header revision each carried.
async fn progress_notifications(endpoint: &str, within: Duration) -> Vec<i64> {
    let mut c = connect(endpoint).await;
    let rev = c
        .put("p/k", "v", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    let mut w = c
        .watch(
            "p/",
            Some(WatchOptions::new().with_prefix().with_progress_notify()),
        )
        .await
        .unwrap();
    w.message().await.unwrap().unwrap(); // created
    let deadline = tokio::time::Instant::now() + within;
    let mut got = Vec::new();
    while let Ok(Ok(Some(r))) = tokio::time::timeout_at(deadline, w.message()).await {
        assert!(r.events().is_empty());
        got.push(r.header().unwrap().revision() - rev);
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_watchers_get_progress_notifications_like_etcd() {
    let member = Member::start_with_env(&[("TRIAD_WATCH_PROGRESS_NOTIFY_INTERVAL", "1s")]);
    let ours = progress_notifications(&member.endpoint(), Duration::from_millis(3500)).await;
    assert!((2..=4).contains(&ours.len()), "{ours:?}");
    assert!(
        ours.iter().all(|d| *d == 0),
        "progress carries the current revision: {ours:?}"
    );
    let Some(etcd) = reference_etcd(&["--experimental-watch-progress-notify-interval", "1s"])
    else {
        return;
    };
    let theirs = progress_notifications(&etcd.endpoint(), Duration::from_millis(3500)).await;
    assert!(
        (2..=4).contains(&theirs.len()) && theirs.iter().all(|d| *d == 0),
        "etcd: {theirs:?}"
    );
}
