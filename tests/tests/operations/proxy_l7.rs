//! gatewayd's L7 proxy mode (etcd's `grpc-proxy`): identical client watches
//! share one upstream watch and keep receiving every event, without gap or
//! duplicate, when the member the proxy uses dies; concurrent keepalives
//! of a lease are coalesced; serializable reads are cached and a write
//! through the proxy is seen at once; a namespace gives clients their own
//! keyspace; progress requests are answered. (KV and watch transcripts
//! through the proxy are compared with etcd in kv_matches_etcd and
//! watch_matches_etcd.)

use std::time::{Duration, Instant};

use etcd_client::{GetOptions, WatchOptions, WatchStream};
use triad_tests::cluster::Cluster;
use triad_tests::{connect, etcdctl, http, ok_stdout, Member, Proxy};

/// A metric's value on the proxy's /metrics (0 when absent).
fn metric(proxy: &Proxy, series: &str) -> f64 {
    let (_, text) = http(&proxy.endpoint(), "GET", "/metrics", "");
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Keys of the next `n` PUT events on `stream`, with their revisions.
async fn next_puts(stream: &mut WatchStream, n: usize) -> Vec<(String, i64)> {
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        let msg = tokio::time::timeout(left, stream.message()).await;
        let Ok(Ok(Some(resp))) = msg else {
            panic!(
                "watch ended or stalled after {} events: {msg:?}",
                seen.len()
            );
        };
        for e in resp.events() {
            let kv = e.kv().expect("event kv");
            seen.push((kv.key_str().expect("utf8").to_string(), kv.mod_revision()));
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coalesced_watches_survive_the_proxys_member_dying() {
    let c = Cluster::start(3);
    let proxy = Proxy::in_front_of("l7", &c.endpoints(), &[]);
    let ep = proxy.endpoint();
    let mut client = connect(&ep).await;
    // Ten clients watch the same prefix through the proxy.
    let mut streams = Vec::new();
    for _ in 0..10 {
        let mut watcher = connect(&ep).await;
        let s = watcher
            .watch("w/", Some(WatchOptions::new().with_prefix()))
            .await
            .expect("watch through the proxy");
        streams.push((watcher, s));
    }
    assert_eq!(metric(&proxy, "triad_proxy_client_watchers"), 10.0);
    assert_eq!(
        metric(&proxy, "triad_proxy_upstream_watches"),
        1.0,
        "identical watches share one upstream watch\n{}",
        proxy.log()
    );
    assert_eq!(
        metric(&proxy, "etcd_grpc_proxy_watchers_coalescing_total"),
        9.0
    );
    for n in 0..20 {
        client
            .put(format!("w/{n:02}"), "v", None)
            .await
            .expect("put");
    }
    // The proxy uses the first endpoint: that member's gatewayd dies (and
    // stays down).
    c.pause_supervisor(true);
    c.signal(0, "gatewayd", nix::sys::signal::Signal::SIGKILL);
    // A write in flight when the member died may fail (and may or may not
    // have been applied, as with etcd's grpc-proxy): the client retries.
    for n in 20..40 {
        let mut tries = 0;
        while let Err(e) = client.put(format!("w/{n:02}"), "v", None).await {
            tries += 1;
            assert!(
                tries < 3,
                "put {n} after the failover: {e}\n{}",
                proxy.log()
            );
        }
    }
    // What the cluster holds, from a surviving member: every revision since
    // the first is one put under w/.
    let mut direct = connect(&c.endpoints()[1]).await;
    let last = direct
        .get("w/39", None)
        .await
        .expect("get")
        .header()
        .expect("header")
        .revision();
    let mut history = direct
        .watch(
            "w/",
            Some(WatchOptions::new().with_prefix().with_start_revision(2)),
        )
        .await
        .expect("history");
    let expected = next_puts(&mut history, (last - 1) as usize).await;
    for (_, s) in &mut streams {
        let got = next_puts(s, expected.len()).await;
        assert_eq!(got, expected, "every event once, in order");
    }
    assert!(metric(&proxy, "triad_proxy_upstream_failovers_total") >= 1.0);
    // Cancelled watches release the upstream watch.
    drop(streams);
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(&proxy, "triad_proxy_upstream_watches") != 0.0 {
        assert!(Instant::now() < deadline, "upstream watch never released");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    c.pause_supervisor(false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalives_of_one_lease_are_coalesced() {
    let m = Member::start();
    let proxy = Proxy::in_front_of("l7", &[m.endpoint()], &[]);
    let ep = proxy.endpoint();
    let mut client = connect(&ep).await;
    let lease = client.lease_grant(30, None).await.expect("grant").id();
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let ep = ep.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = connect(&ep).await;
            let (mut keeper, mut answers) = c.lease_keep_alive(lease).await.expect("keepalive");
            for _ in 0..10 {
                keeper.keep_alive().await.expect("send keepalive");
                let a = answers
                    .message()
                    .await
                    .expect("answer")
                    .expect("stream open");
                assert_eq!(a.id(), lease);
                assert!(a.ttl() > 0 && a.ttl() <= 30, "ttl {}", a.ttl());
            }
        }));
    }
    for t in tasks {
        t.await.expect("keepalive task");
    }
    let from_clients = metric(
        &proxy,
        "triad_proxy_lease_keepalives_total{side=\"client\"}",
    );
    let upstream = metric(
        &proxy,
        "triad_proxy_lease_keepalives_total{side=\"upstream\"}",
    );
    // etcd-client sends one keepalive when the stream opens, then ours.
    assert_eq!(from_clients, 16.0 * 11.0);
    assert!(
        upstream >= 1.0 && upstream < from_clients,
        "{upstream} upstream keepalives for {from_clients} from clients"
    );
    // The lease really is kept alive on the member.
    let ttl = connect(&m.endpoint())
        .await
        .lease_time_to_live(lease, None)
        .await
        .expect("ttl");
    assert!(ttl.ttl() > 20, "lease ttl {}", ttl.ttl());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serializable_reads_are_cached_and_writes_invalidate() {
    let m = Member::start();
    let proxy = Proxy::in_front_of("l7", &[m.endpoint()], &[]);
    let ep = proxy.endpoint();
    let get = |args: &[&str]| {
        let mut all = vec!["get", "--consistency=s", "--print-value-only"];
        all.extend_from_slice(args);
        ok_stdout(&etcdctl(&ep, &all)).trim().to_string()
    };
    ok_stdout(&etcdctl(&ep, &["put", "k", "1"]));
    assert_eq!(get(&["k"]), "1");
    let hits = metric(&proxy, "etcd_grpc_proxy_cache_hits_total");
    assert_eq!(get(&["k"]), "1");
    assert_eq!(
        metric(&proxy, "etcd_grpc_proxy_cache_hits_total"),
        hits + 1.0
    );
    assert!(metric(&proxy, "etcd_grpc_proxy_cache_keys_total") >= 1.0);
    // Writes through the proxy are read back at once: put, txn, delete.
    ok_stdout(&etcdctl(&ep, &["put", "k", "2"]));
    assert_eq!(get(&["k"]), "2");
    let mut c = connect(&ep).await;
    c.txn(etcd_client::Txn::new().and_then([etcd_client::TxnOp::put("k", "3", None)]))
        .await
        .expect("txn through the proxy");
    assert_eq!(get(&["k"]), "3");
    ok_stdout(&etcdctl(&ep, &["del", "k"]));
    assert_eq!(get(&["k"]), "");
    // A linearizable read is never answered from the cache.
    ok_stdout(&etcdctl(&m.endpoint(), &["put", "k", "behind-the-proxy"]));
    let lin = ok_stdout(&etcdctl(&ep, &["get", "k", "--print-value-only"]));
    assert_eq!(lin.trim(), "behind-the-proxy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_is_a_keyspace_of_its_own() {
    let m = Member::start();
    let proxy = Proxy::in_front_of("l7", &[m.endpoint()], &["--proxy-namespace", "/tenant/"]);
    let ep = proxy.endpoint();
    let direct = m.endpoint();
    ok_stdout(&etcdctl(&direct, &["put", "outside", "x"]));
    let mut c = connect(&ep).await;
    let mut watch = c
        .watch(
            "",
            Some(WatchOptions::new().with_from_key().with_prev_key()),
        )
        .await
        .expect("watch all keys of the namespace");
    let lease = c.lease_grant(60, None).await.expect("grant").id();
    c.put(
        "a",
        "1",
        Some(etcd_client::PutOptions::new().with_lease(lease)),
    )
    .await
    .expect("put");
    c.put("b", "2", None).await.expect("put");
    // Members see the prefix; the proxy's clients do not.
    assert_eq!(
        ok_stdout(&etcdctl(
            &direct,
            &["get", "/tenant/a", "--print-value-only"]
        ))
        .trim(),
        "1"
    );
    let all = c
        .get("", Some(GetOptions::new().with_from_key()))
        .await
        .expect("get all");
    let keys: Vec<&str> = all
        .kvs()
        .iter()
        .map(|kv| kv.key_str().expect("utf8"))
        .collect();
    assert_eq!(keys, ["a", "b"]);
    let prefixed = c
        .get("", Some(GetOptions::new().with_prefix()))
        .await
        .expect("get prefix");
    assert_eq!(prefixed.kvs().len(), 2);
    let txn = etcd_client::Txn::new()
        .when([etcd_client::Compare::value(
            "a",
            etcd_client::CompareOp::Equal,
            "1",
        )])
        .and_then([etcd_client::TxnOp::delete(
            "b",
            Some(etcd_client::DeleteOptions::new().with_prev_key()),
        )]);
    let t = c.txn(txn).await.expect("txn");
    assert!(t.succeeded());
    let Some(etcd_client::TxnOpResponse::Delete(d)) = t.op_responses().into_iter().next() else {
        panic!("delete response expected");
    };
    assert_eq!(d.prev_kvs()[0].key(), b"b");
    let events = next_puts(&mut watch, 2).await;
    assert_eq!(
        events.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
        ["a", "b"]
    );
    let ttl = c
        .lease_time_to_live(
            lease,
            Some(etcd_client::LeaseTimeToLiveOptions::new().with_keys()),
        )
        .await
        .expect("ttl");
    assert_eq!(ttl.keys(), [b"a".to_vec()]);
    // An empty key is refused as etcd's namespaced client refuses it.
    let err = c.put("", "v", None).await.expect_err("empty key");
    assert!(err.to_string().contains("key is not provided"), "{err}");
    // Outside keys stay invisible.
    let outside = c.get("outside", None).await.expect("get");
    assert!(outside.kvs().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_requests_are_answered() {
    let m = Member::start();
    let proxy = Proxy::in_front_of("l7", &[m.endpoint()], &[]);
    let mut c = connect(&proxy.endpoint()).await;
    let mut s = c.watch("p", None).await.expect("watch");
    let created = s.message().await.expect("created").expect("open");
    assert!(created.created());
    // Writes elsewhere move the revision; the watched key sees none.
    for n in 0..5 {
        c.put(format!("other{n}"), "v", None).await.expect("put");
    }
    let rev = c
        .get("other4", None)
        .await
        .expect("get")
        .header()
        .expect("header")
        .revision();
    s.request_progress().await.expect("progress request");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let r = tokio::time::timeout(left, s.message())
            .await
            .expect("progress answered")
            .expect("stream")
            .expect("open");
        if r.events().is_empty() && !r.created() {
            let at = r.header().expect("header").revision();
            assert!(at >= rev, "progress at {at}, writes up to {rev}");
            break;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_does_not_read_does_not_stall_the_others() {
    let m = Member::start();
    let proxy = Proxy::in_front_of("l7", &[m.endpoint()], &[]);
    let ep = proxy.endpoint();
    let mut reader = connect(&ep).await;
    let mut stalled = connect(&ep).await;
    let mut fast = reader
        .watch("s/", Some(WatchOptions::new().with_prefix()))
        .await
        .expect("watch");
    let mut slow = stalled
        .watch("s/", Some(WatchOptions::new().with_prefix()))
        .await
        .expect("watch");
    assert_eq!(metric(&proxy, "triad_proxy_upstream_watches"), 1.0);
    // Far more than the transport buffers between the proxy and a client
    // that does not read; the reader keeps up meanwhile.
    let value = "x".repeat(4096);
    let writer = {
        let ep = ep.clone();
        tokio::spawn(async move {
            let mut c = connect(&ep).await;
            for n in 0..800 {
                c.put(format!("s/{n:04}"), value.clone(), None)
                    .await
                    .expect("put");
            }
        })
    };
    let read = next_puts(&mut fast, 800).await;
    writer.await.expect("writer");
    assert!(
        metric(&proxy, "triad_proxy_watch_splits_total") >= 1.0,
        "the stalled watch was split off\n{}",
        proxy.log()
    );
    // The stalled client catches up later with everything, once each.
    let caught_up = next_puts(&mut slow, 800).await;
    assert_eq!(caught_up, read);
}
