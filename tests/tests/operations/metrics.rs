//! /metrics with etcd's metric names: the client port shows the whole
//! member (gatewayd's, raftd's and storaged's metrics); each daemon also
//! serves its own on its metrics URL; counters move with the traffic.

use triad_tests::{etcdctl, free_port_pair, http, Member};

/// The value of the first sample of `name` (with labels starting `labels`).
fn sample(text: &str, name: &str, labels: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| l.starts_with(&format!("{name}{labels}")))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn member_metrics_use_etcd_names() {
    let (raftd_port, storaged_port, member_port) =
        (free_port_pair(), free_port_pair(), free_port_pair());
    let url = |p: u16| format!("http://127.0.0.1:{p}");
    let m = Member::start_with_env(&[
        ("TRIAD_RAFTD_METRICS_URL", &url(raftd_port)),
        ("TRIAD_STORAGED_METRICS_URL", &url(storaged_port)),
        ("TRIAD_LISTEN_METRICS_URLS", &url(member_port)),
    ]);
    let ep = m.endpoint();
    for i in 0..20 {
        assert!(etcdctl(&ep, &["put", &format!("k{i}"), "v"])
            .status
            .success());
    }
    assert!(!etcdctl(&ep, &["put", "", "v"]).status.success());
    let (code, text) = http(&ep, "GET", "/metrics", "");
    assert_eq!(code, 200);
    let has = |name: &str, labels: &str| sample(&text, name, labels);
    assert_eq!(has("etcd_server_has_leader", ""), Some(1.0), "{text}");
    assert_eq!(has("etcd_server_is_leader", ""), Some(1.0));
    assert!(has("etcd_server_leader_changes_seen_total", "") >= Some(1.0));
    assert!(has("etcd_server_proposals_committed_total", "") >= Some(20.0));
    assert!(has("etcd_server_proposals_applied_total", "") >= Some(20.0));
    assert_eq!(has("etcd_server_proposals_pending", ""), Some(0.0));
    assert!(has("etcd_server_proposals_failed_total", "").is_some());
    assert!(has("etcd_disk_wal_fsync_duration_seconds_count", "") >= Some(1.0));
    assert!(has(
        "etcd_disk_wal_fsync_duration_seconds_bucket",
        "{le=\"0.001\"}"
    )
    .is_some());
    assert!(has("etcd_disk_backend_commit_duration_seconds_count", "") >= Some(20.0));
    assert!(has("etcd_mvcc_db_total_size_in_bytes", "") > Some(0.0));
    let put_ok = "{grpc_type=\"unary\",grpc_service=\"etcdserverpb.KV\",grpc_method=\"Put\",grpc_code=\"OK\"}";
    assert!(
        has("grpc_server_handled_total", put_ok) >= Some(20.0),
        "{text}"
    );
    let put_bad = "{grpc_type=\"unary\",grpc_service=\"etcdserverpb.KV\",grpc_method=\"Put\",grpc_code=\"InvalidArgument\"}";
    assert_eq!(has("grpc_server_handled_total", put_bad), Some(1.0));
    assert!(
        has(
            "triad_gatewayd_local_rpc_duration_seconds_count",
            "{call=\"propose\"}"
        ) >= Some(20.0)
    );
    assert!(has("etcd_debugging_mvcc_watch_stream_total", "").is_some());

    // Each daemon on its own URL: its metrics only.
    let own = |port: u16| http(&format!("127.0.0.1:{port}"), "GET", "/metrics", "");
    let (code, raftd) = own(raftd_port);
    assert_eq!(code, 200);
    assert!(raftd.contains("etcd_disk_wal_fsync_duration_seconds_count"));
    assert!(!raftd.contains("etcd_disk_backend_commit"));
    let (_, storaged) = own(storaged_port);
    assert!(storaged.contains("etcd_mvcc_db_total_size_in_bytes"));
    // raftd warned storaged of (nearly) every put's Apply: one heads-up per
    // Apply at most, and the stream opens with the first Apply stream, so
    // a few may be missing but not most.
    let heads_ups = sample(&storaged, "triad_storaged_apply_heads_ups_total", "");
    assert!(heads_ups >= Some(10.0), "{storaged}");
    assert!(!storaged.contains("etcd_server_has_leader"));
    let (_, member) = own(member_port);
    assert!(
        member.contains("grpc_server_handled_total") && member.contains("etcd_server_has_leader")
    );
}

#[test]
fn peer_round_trips_are_measured_for_every_peer() {
    let c = triad_tests::cluster::Cluster::start(3);
    let ep = c.endpoints()[0].clone();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (_, text) = http(&ep, "GET", "/metrics", "");
        let peers = text
            .lines()
            .filter(|l| l.starts_with("etcd_network_peer_round_trip_time_seconds_count{To="))
            .filter(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) >= Some(2.0))
            .count();
        if peers == 2 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no round trips measured:\n{text}"
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}
