//! Watch against triad and against etcd with the same script gives the same
//! responses per watch id: created/canceled flags, header revisions,
//! events (type, key-values, prev_kv), filters, history replays, duplicate
//! ids, progress responses and compaction cancellation.

use std::collections::BTreeMap;
use std::time::Duration;

use etcd_client::{
    Client, DeleteOptions, EventType, Txn, TxnOp, WatchFilterType, WatchOptions, WatchResponse,
    WatchStream,
};
use triad_tests::{connect, reference_etcd, Member, Proxy};

fn describe(r: &WatchResponse) -> String {
    let events: Vec<String> = r
        .events()
        .iter()
        .map(|e| {
            let kv = e.kv().map(|kv| {
                format!(
                    "{}={}@c{}m{}v{}",
                    String::from_utf8_lossy(kv.key()),
                    String::from_utf8_lossy(kv.value()),
                    kv.create_revision(),
                    kv.mod_revision(),
                    kv.version()
                )
            });
            let prev = e.prev_kv().map(|kv| {
                format!(
                    "{}@m{}",
                    String::from_utf8_lossy(kv.value()),
                    kv.mod_revision()
                )
            });
            let kind = if e.event_type() == EventType::Put {
                "PUT"
            } else {
                "DEL"
            };
            format!("{kind} {kv:?} prev={prev:?}")
        })
        .collect();
    format!(
        "rev={} created={} canceled={} compact={} reason={:?} [{}]",
        r.header().map_or(-1, |h| h.revision()),
        r.created(),
        r.canceled(),
        r.compact_revision(),
        r.cancel_reason(),
        events.join(", ")
    )
}

/// Every response until the stream is idle, grouped by watch id.
async fn drain(stream: &mut WatchStream, into: &mut BTreeMap<i64, Vec<String>>) {
    while let Ok(Ok(Some(r))) =
        tokio::time::timeout(Duration::from_millis(1500), stream.message()).await
    {
        into.entry(r.watch_id()).or_default().push(describe(&r));
    }
}

async fn script(endpoint: &str) -> BTreeMap<i64, Vec<String>> {
    let mut c: Client = connect(endpoint).await;
    let mut seen = BTreeMap::new();
    c.put("w/a", "0", None).await.unwrap(); // revision 2
    let mut s = c
        .watch(
            "w/",
            Some(WatchOptions::new().with_prefix().with_prev_key()),
        )
        .await
        .unwrap();
    s.watch("w/a", None).await.unwrap();
    s.watch(
        "w/b",
        Some(
            WatchOptions::new()
                .with_range("w/d")
                .with_filters([WatchFilterType::NoPut]),
        ),
    )
    .await
    .unwrap();
    s.watch(
        "w/c",
        Some(
            WatchOptions::new()
                .with_from_key()
                .with_filters([WatchFilterType::NoDelete]),
        ),
    )
    .await
    .unwrap();
    s.watch(
        "w/",
        Some(WatchOptions::new().with_prefix().with_start_revision(2)),
    )
    .await
    .unwrap();
    s.watch(
        "w/",
        Some(WatchOptions::new().with_prefix().with_watch_id(100)),
    )
    .await
    .unwrap();
    s.watch(
        "w/",
        Some(WatchOptions::new().with_prefix().with_watch_id(100)),
    )
    .await
    .unwrap();
    s.watch("w/z", Some(WatchOptions::new().with_start_revision(1000)))
        .await
        .unwrap();
    drain(&mut s, &mut seen).await;

    c.put("w/a", "1", None).await.unwrap();
    c.put("w/b", "2", None).await.unwrap();
    c.put("w/c", "3", None).await.unwrap();
    let t = Txn::new().and_then([
        TxnOp::put("w/d", "4", None),
        TxnOp::delete("w/a", None),
        TxnOp::put("x", "-", None),
    ]);
    c.txn(t).await.unwrap();
    c.delete("w/b", Some(DeleteOptions::new().with_range("w/d")))
        .await
        .unwrap();
    c.put("w/c", "5", None).await.unwrap();
    drain(&mut s, &mut seen).await;

    s.request_progress().await.unwrap();
    s.cancel(1).await.unwrap();
    drain(&mut s, &mut seen).await;
    c.put("w/a", "after-cancel", None).await.unwrap();
    drain(&mut s, &mut seen).await;

    // A watch from a compacted revision is created, then canceled.
    c.compact(5, None).await.unwrap();
    let mut old = c
        .watch(
            "w/",
            Some(WatchOptions::new().with_prefix().with_start_revision(3)),
        )
        .await
        .unwrap();
    let mut compacted = BTreeMap::new();
    drain(&mut old, &mut compacted).await;
    for (id, v) in compacted {
        seen.insert(1000 + id, v);
    }
    seen
}

/// The script against `endpoint` gives what it gives against etcd.
async fn matches_etcd(endpoint: &str) {
    let ours = script(endpoint).await;
    assert!(ours.len() >= 8, "{ours:#?}");
    let Some(etcd) = reference_etcd(&[]) else {
        return;
    };
    let theirs = script(&etcd.endpoint()).await;
    assert_eq!(ours, theirs, "\ntriad: {ours:#?}\netcd: {theirs:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_matches_etcd() {
    let member = Member::start();
    matches_etcd(&member.endpoint()).await;
}

/// The same through the L7 proxy, whose watches are coalesced upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_through_the_l7_proxy_matches_etcd() {
    let member = Member::start();
    let proxy = Proxy::in_front_of("l7", &[member.endpoint()], &[]);
    matches_etcd(&proxy.endpoint()).await;
}
