//! gatewayd's L4 proxy mode (etcd's `etcd gateway`) in front of a 3-member
//! cluster: etcdctl and etcd-client work through it unchanged; when the
//! member it forwards to dies, new connections fail over to the others and
//! clients continue.

use std::time::{Duration, Instant};

use triad_tests::cluster::Cluster;
use triad_tests::{etcdctl, Proxy};

fn start_proxy(endpoints: &[String]) -> Proxy {
    Proxy::in_front_of("l4", endpoints, &["--proxy-retry-delay", "1s"])
}

fn until_ok(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f() {
        assert!(Instant::now() < deadline, "{what} never succeeded");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn l4_proxy_forwards_and_fails_over() {
    let c = Cluster::start(3);
    let proxy = start_proxy(&c.endpoints());
    let ep = proxy.endpoint();
    until_ok("a put through the proxy", || {
        etcdctl(&ep, &["put", "via-proxy", "1"]).status.success()
    });
    let get = etcdctl(&ep, &["get", "via-proxy", "--print-value-only"]);
    assert_eq!(String::from_utf8_lossy(&get.stdout).trim(), "1");

    // Every member's gatewayd goes away but one: connections fail over.
    for i in [0, 1] {
        c.pause_supervisor(true);
        c.signal(i, "gatewayd", nix::sys::signal::Signal::SIGKILL);
    }
    for n in 0..10 {
        let out = etcdctl(&ep, &["put", &format!("after-{n}"), "v"]);
        assert!(
            out.status.success(),
            "put {n} through the proxy after the failover: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let all = etcdctl(&ep, &["get", "after-", "--prefix", "--keys-only"]);
    let keys = String::from_utf8_lossy(&all.stdout)
        .lines()
        .filter(|l| l.starts_with("after-"))
        .count();
    assert_eq!(keys, 10);
    c.pause_supervisor(false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_client_through_the_proxy_survives_its_member_dying() {
    let c = Cluster::start(3);
    // The proxy knows two members; the first is the one it will use.
    let eps = c.endpoints();
    let proxy = start_proxy(&eps[..2]);
    let ep = proxy.endpoint();
    until_ok("the proxy serving", || {
        etcdctl(&ep, &["get", "k"]).status.success()
    });
    let mut client = triad_tests::connect(&ep).await;
    client
        .put("k", "1", None)
        .await
        .expect("put through the proxy");
    c.pause_supervisor(true);
    c.signal(0, "gatewayd", nix::sys::signal::Signal::SIGKILL);
    c.signal(1, "gatewayd", nix::sys::signal::Signal::SIGKILL);
    // Both known members' client ports are gone for a while.
    tokio::time::sleep(Duration::from_secs(2)).await;
    // One comes back: the proxy finds it (retry delay 1 s) and clients go on.
    c.pause_supervisor(false);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(mut again) = triad_tests::etcd_client::Client::connect([ep.clone()], None).await {
            if again.put("k", "2", None).await.is_ok() {
                let v = again.get("k", None).await.expect("get");
                assert_eq!(v.kvs()[0].value(), b"2");
                break;
            }
        }
        assert!(Instant::now() < deadline, "the proxy never recovered");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// A DNS server answering `_etcd-client._tcp.*` with `localhost:<port>`
/// for each port (the TLS name gets none).
fn fake_dns(ports: Vec<u16>) -> std::net::SocketAddr {
    triad_tests::dns::serve(move |name| {
        if name.starts_with("_etcd-client._tcp.") {
            ports
                .iter()
                .map(|p| ("localhost".to_string(), *p))
                .collect()
        } else {
            Vec::new()
        }
    })
}

#[test]
fn l4_proxy_finds_members_by_dns_srv() {
    let m = triad_tests::Member::start();
    let dns = fake_dns(vec![m.port]).to_string();
    let proxy = Proxy::start(
        "l4",
        &[
            "--proxy-discovery-srv",
            "example.test",
            "--proxy-dns-server",
            &dns,
        ],
    );
    let ep = proxy.endpoint();
    until_ok("a put through the SRV-discovered member", || {
        etcdctl(&ep, &["put", "srv", "found"]).status.success()
    });
    let got = etcdctl(&m.endpoint(), &["get", "srv", "--print-value-only"]);
    assert_eq!(String::from_utf8_lossy(&got.stdout).trim(), "found");
}
