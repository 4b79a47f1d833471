//! etcdctl's `--cluster` commands against a 3-member cluster: etcdctl
//! lists the members, then dials each member's client URL with the URL
//! itself (scheme included) as the HTTP/2 authority, which Go's gRPC
//! server accepts and triad's must too. Each command must reach every
//! member and answer as it does against etcd.

use triad_tests::cluster::Cluster;
use triad_tests::ok_stdout;

#[test]
fn endpoint_status_hashkv_health_and_defrag_reach_every_member() {
    let cluster = Cluster::start(3);
    cluster.etcdctl(0, &["put", "k", "v"]);
    let urls: Vec<String> = cluster
        .endpoints()
        .iter()
        .map(|e| format!("http://{e}"))
        .collect();
    let via = urls[0].as_str();

    let status =
        ok_stdout(&cluster.etcdctl(0, &["--endpoints", via, "endpoint", "status", "--cluster"]));
    // etcdctl's simple output: url, id, version, size, leader, learner, ...
    let rows: Vec<Vec<&str>> = status.lines().map(|l| l.split(", ").collect()).collect();
    assert_eq!(rows.len(), 3, "{status}");
    assert_eq!(
        rows.iter().filter(|r| r.get(4) == Some(&"true")).count(),
        1,
        "one leader: {status}"
    );
    for url in &urls {
        assert!(
            rows.iter().any(|r| r[0] == url.as_str()),
            "{url} missing from {status}"
        );
    }

    let hashes =
        ok_stdout(&cluster.etcdctl(0, &["--endpoints", via, "endpoint", "hashkv", "--cluster"]));
    let values: Vec<&str> = hashes
        .lines()
        .filter_map(|l| l.split(", ").nth(1))
        .collect();
    assert_eq!(values.len(), 3, "{hashes}");
    assert!(
        values.iter().all(|h| *h == values[0]),
        "members' hashes differ: {hashes}"
    );

    let health = cluster.etcdctl(0, &["--endpoints", via, "endpoint", "health", "--cluster"]);
    let health_out = String::from_utf8_lossy(&health.stdout).to_string()
        + &String::from_utf8_lossy(&health.stderr);
    assert!(health.status.success(), "{health_out}");
    assert_eq!(health_out.matches("is healthy").count(), 3, "{health_out}");

    let defrag = ok_stdout(&cluster.etcdctl(0, &["--endpoints", via, "defrag", "--cluster"]));
    for url in &urls {
        assert!(
            defrag.contains(&format!("Finished defragmenting etcd member[{url}]")),
            "{defrag}"
        );
    }
}
