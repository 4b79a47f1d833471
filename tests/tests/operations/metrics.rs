//! /metrics with etcd's metric names: the client port shows the whole
//! member (gatewayd's, raftd's and storaged's metrics); each daemon also
//! serves its own on its metrics URL; counters move with the traffic.
//! Every family a reference etcd 3.4 serves is served by triad too (same
//! type, label names and buckets) unless it is listed below as without
//! meaning for triad; the peer families are checked on a 3-member cluster.

use std::collections::{BTreeMap, BTreeSet};

use triad_tests::{etcdctl, free_port_pair, http, metric_sample as sample, reference_etcd, Member};

/// etcd families that mean nothing for triad, by name or name prefix, and
/// why.
const WITHOUT_MEANING: &[(&str, &str)] = &[
    ("go_", "the Go runtime's; triad is not a Go program"),
    (
        "etcd_server_go_version",
        "the Go version etcd was built with; triad is not built with Go",
    ),
    (
        "etcd_debugging_store_",
        "the v2 store, which triad does not have",
    ),
    (
        "etcd_debugging_disk_backend_commit_",
        "bbolt's commit phases (rebalance, spill, write); fjall has none of them",
    ),
    (
        "etcd_grpc_proxy_",
        "etcd registers its grpc-proxy's families in every process; they count only in \
         grpc-proxy mode, which is triad's L7 proxy (gatewayd --proxy l7 serves them)",
    ),
];

/// The peer families (etcd's rafthttp): a single etcd member has none of
/// their series, so they are checked on a 3-member triad against this list
/// (name, type, label names; series only once a snapshot moved or a peer
/// failed for the ones marked false), and the list against a 3-member etcd.
const PEER_FAMILIES: &[(&str, &str, &[&str], bool)] = &[
    (
        "etcd_network_active_peers",
        "gauge",
        &["Local", "Remote"],
        true,
    ),
    (
        "etcd_network_disconnected_peers_total",
        "counter",
        &["Local", "Remote"],
        false,
    ),
    (
        "etcd_network_peer_sent_bytes_total",
        "counter",
        &["To"],
        true,
    ),
    (
        "etcd_network_peer_received_bytes_total",
        "counter",
        &["From"],
        true,
    ),
    (
        "etcd_network_peer_sent_failures_total",
        "counter",
        &["To"],
        false,
    ),
    (
        "etcd_network_peer_received_failures_total",
        "counter",
        &["From"],
        false,
    ),
    (
        "etcd_network_peer_round_trip_time_seconds",
        "histogram",
        &["To"],
        true,
    ),
    (
        "etcd_network_snapshot_send_success",
        "counter",
        &["To"],
        false,
    ),
    (
        "etcd_network_snapshot_send_failures",
        "counter",
        &["To"],
        false,
    ),
    (
        "etcd_network_snapshot_send_inflights_total",
        "gauge",
        &["To"],
        false,
    ),
    (
        "etcd_network_snapshot_send_total_duration_seconds",
        "histogram",
        &["To"],
        false,
    ),
    (
        "etcd_network_snapshot_receive_success",
        "counter",
        &["From"],
        false,
    ),
    (
        "etcd_network_snapshot_receive_failures",
        "counter",
        &["From"],
        false,
    ),
    (
        "etcd_network_snapshot_receive_inflights_total",
        "gauge",
        &["From"],
        false,
    ),
    (
        "etcd_network_snapshot_receive_total_duration_seconds",
        "histogram",
        &["From"],
        false,
    ),
];

fn without_meaning(name: &str) -> bool {
    WITHOUT_MEANING
        .iter()
        .any(|(p, _)| name == *p || (p.ends_with('_') && name.starts_with(p)))
}

/// One family of a scrape: its type, the label names its series carry
/// (`le` aside), its bucket bounds (histograms) and whether it has series.
#[derive(Debug, Default)]
struct Family {
    kind: String,
    labels: BTreeSet<String>,
    buckets: BTreeSet<String>,
    has_series: bool,
}

/// The families of a Prometheus text scrape, by name.
fn families(text: &str) -> BTreeMap<String, Family> {
    let mut out: BTreeMap<String, Family> = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut it = rest.split_whitespace();
            if let (Some(name), Some(kind)) = (it.next(), it.next()) {
                out.entry(name.to_string()).or_default().kind = kind.to_string();
            }
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (series, _) = line.rsplit_once(' ').unwrap_or((line, ""));
        let (name, labels) = series.split_once('{').unwrap_or((series, ""));
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                name.strip_suffix(s)
                    .filter(|f| out.get(*f).is_some_and(|f| f.kind == "histogram"))
            })
            .unwrap_or(name);
        let f = out.entry(family.to_string()).or_default();
        f.has_series = true;
        for pair in labels
            .trim_end_matches('}')
            .split("\",")
            .filter(|p| !p.is_empty())
        {
            let Some((label, value)) = pair.split_once('=') else {
                continue;
            };
            if label == "le" {
                // Bounds as numbers: Go prints 1.048576e+06 for 1048576.
                let v = value.trim_matches('"');
                let bound = v.parse::<f64>().map_or(v.to_string(), |b| format!("{b}"));
                f.buckets.insert(bound);
            } else {
                f.labels.insert(label.to_string());
            }
        }
    }
    out
}

/// What keeps `text` from being one valid Prometheus text exposition:
/// a family typed twice, or a sample away from its family's lines.
fn malformed(text: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let mut typed: BTreeMap<&str, &str> = BTreeMap::new();
    let mut current = "";
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut it = rest.split_whitespace();
            let (name, kind) = (it.next().unwrap_or(""), it.next().unwrap_or(""));
            if typed.insert(name, kind).is_some() {
                problems.push(format!("{name} typed twice"));
            }
            current = name;
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let series = line.split(['{', ' ']).next().unwrap_or("");
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                series
                    .strip_suffix(s)
                    .filter(|f| matches!(typed.get(f), Some(&"histogram" | &"summary")))
            })
            .unwrap_or(series);
        if family != current {
            problems.push(format!("{line}: away from its family's lines"));
        }
    }
    problems
}

/// A scrape's status line, head and body.
fn scrape(endpoint: &str) -> (String, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(endpoint).expect("connect");
    let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(30)));
    let req = format!("GET /metrics HTTP/1.1\r\nHost: {endpoint}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).expect("send");
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, _) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let (_, body) = http(endpoint, "GET", "/metrics", "");
    (head.to_ascii_lowercase(), body)
}

/// The same traffic on a member of either kind: puts, a read, a txn, a
/// delete, a lease granted and renewed, a compaction, a defragmentation,
/// a hash, a snapshot saved, a health check.
fn traffic(ep: &str, dir: &std::path::Path) {
    for args in [
        &["put", "k1", "v"][..],
        &["put", "k2", "v"],
        &["get", "k", "--prefix"],
        &["del", "k2"],
        &["compact", "2"],
        &["defrag"],
        &["endpoint", "hashkv"],
    ] {
        assert!(etcdctl(ep, args).status.success(), "{args:?} on {ep}");
    }
    let granted = etcdctl(ep, &["lease", "grant", "60"]);
    let granted = String::from_utf8_lossy(&granted.stdout).into_owned();
    let id = granted.split_whitespace().nth(1).expect("lease id");
    let renewed = etcdctl(ep, &["lease", "keep-alive", "--once", id]);
    assert!(renewed.status.success(), "{granted}");
    let file = dir.join(format!("{}.db", ep.replace([':', '.'], "-")));
    let saved = etcdctl(ep, &["snapshot", "save", &file.to_string_lossy()]);
    assert!(saved.status.success(), "{saved:?}");
    let (code, _) = http(ep, "GET", "/health", "");
    assert_eq!(code, 200);
    let txn = std::process::Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={ep}"))
        .arg("txn")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            if let Some(mut i) = c.stdin.take() {
                // Two operations: etcd counts a txn only when it runs more
                // than one.
                i.write_all(b"value(\"k1\") = \"v\"\n\nput k3 v\nget k1\n\n\n")?;
            }
            c.wait()
        })
        .expect("etcdctl txn");
    assert!(txn.success());
}

#[test]
fn every_etcd_family_with_a_meaning_is_served_as_etcd_serves_it() {
    let Some(etcd) = reference_etcd(&[]) else {
        return;
    };
    let m = Member::start();
    let (etcd_ep, triad_ep) = (etcd.endpoint(), m.endpoint());
    let (_, etcd_before) = scrape(&etcd_ep);
    let (_, triad_before) = scrape(&triad_ep);
    let dir = tempfile::tempdir().expect("tempdir");
    traffic(&etcd_ep, dir.path());
    traffic(&triad_ep, dir.path());
    let (etcd_head, etcd_text) = scrape(&etcd_ep);
    let (triad_head, triad_text) = scrape(&triad_ep);
    let content_type = "content-type: text/plain; version=0.0.4; charset=utf-8";
    assert!(etcd_head.contains(content_type), "{etcd_head}");
    assert!(triad_head.contains(content_type), "{triad_head}");

    assert_eq!(malformed(&etcd_text), Vec::<String>::new());
    let mut problems = malformed(&triad_text);
    let (theirs, ours) = (families(&etcd_text), families(&triad_text));
    for (name, e) in &theirs {
        if without_meaning(name) {
            continue;
        }
        let Some(t) = ours.get(name) else {
            problems.push(format!("{name}: missing"));
            continue;
        };
        if t.kind != e.kind {
            problems.push(format!("{name}: type {} (etcd: {})", t.kind, e.kind));
        }
        if e.has_series && t.has_series && t.labels != e.labels {
            problems.push(format!(
                "{name}: labels {:?} (etcd: {:?})",
                t.labels, e.labels
            ));
        }
        if e.kind == "histogram" && t.buckets != e.buckets {
            problems.push(format!(
                "{name}: buckets {:?} (etcd: {:?})",
                t.buckets, e.buckets
            ));
        }
    }
    // triad's own names are triad_*; any other family is etcd's (the peer
    // families, whose series a single etcd lacks).
    for name in ours.keys() {
        let peer = PEER_FAMILIES.iter().any(|(p, ..)| p == name);
        if !name.starts_with("triad_") && !theirs.contains_key(name) && !peer {
            problems.push(format!("{name}: not one of etcd's families"));
        }
    }
    assert!(problems.is_empty(), "{problems:#?}\n{triad_text}");

    // The same traffic moves the same counters on both.
    let moved = |before: &str, after: &str, name: &str, labels: &str| {
        let v = |t: &str| sample(t, name, labels).unwrap_or(0.0);
        v(after) - v(before)
    };
    for (name, labels) in [
        ("etcd_mvcc_put_total", ""),
        ("etcd_debugging_mvcc_put_total", ""),
        ("etcd_mvcc_range_total", ""),
        ("etcd_mvcc_delete_total", ""),
        ("etcd_mvcc_txn_total", ""),
        ("etcd_debugging_mvcc_current_revision", ""),
        ("etcd_debugging_mvcc_total_put_size_in_bytes", ""),
        ("etcd_debugging_lease_granted_total", ""),
        ("etcd_debugging_lease_ttl_total_count", ""),
        ("etcd_debugging_lease_renewed_total", ""),
        ("etcd_debugging_mvcc_compact_revision", ""),
        ("etcd_disk_backend_defrag_duration_seconds_count", ""),
        ("etcd_mvcc_hash_rev_duration_seconds_count", ""),
        ("etcd_disk_backend_snapshot_duration_seconds_count", ""),
        ("etcd_server_health_success", ""),
        ("etcd_network_client_grpc_received_bytes_total", ""),
        ("etcd_network_client_grpc_sent_bytes_total", ""),
        ("etcd_disk_wal_write_bytes_total", ""),
        ("etcd_server_proposals_committed_total", ""),
        ("process_cpu_seconds_total", ""),
        (
            "grpc_server_msg_received_total",
            "{grpc_type=\"unary\",grpc_service=\"etcdserverpb.KV\",grpc_method=\"Put\"}",
        ),
        (
            "grpc_server_msg_sent_total",
            "{grpc_type=\"unary\",grpc_service=\"etcdserverpb.KV\",grpc_method=\"Put\"}",
        ),
    ] {
        // etcd orders labels by name; triad keeps go-grpc-prometheus' order.
        let etcd_labels = if labels.is_empty() {
            String::new()
        } else {
            "{grpc_method=\"Put\",grpc_service=\"etcdserverpb.KV\",grpc_type=\"unary\"}".into()
        };
        let e = moved(&etcd_before, &etcd_text, name, &etcd_labels);
        let t = moved(&triad_before, &triad_text, name, labels);
        assert!(e > 0.0, "{name} did not move on etcd\n{etcd_text}");
        assert!(
            t > 0.0,
            "{name} did not move on triad (etcd: +{e})\n{triad_text}"
        );
    }
    // Exact where both count the same thing.
    for name in [
        "etcd_mvcc_put_total",
        "etcd_mvcc_delete_total",
        "etcd_debugging_lease_granted_total",
        "etcd_debugging_lease_renewed_total",
        "etcd_debugging_mvcc_compact_revision",
        "etcd_disk_backend_defrag_duration_seconds_count",
        "etcd_server_health_success",
    ] {
        assert_eq!(
            moved(&triad_before, &triad_text, name, ""),
            moved(&etcd_before, &etcd_text, name, ""),
            "{name}"
        );
    }
    // etcdctl 3.4 names its API version on every call.
    for kind in ["unary", "stream"] {
        let triad = sample(
            &triad_text,
            "etcd_server_client_requests_total",
            &format!("{{type=\"{kind}\",client_api_version=\"3.4\"}}"),
        );
        let etcd = sample(
            &etcd_text,
            "etcd_server_client_requests_total",
            &format!("{{client_api_version=\"3.4\",type=\"{kind}\"}}"),
        );
        assert!(
            triad > Some(0.0) && etcd > Some(0.0),
            "{kind}\n{triad_text}"
        );
    }
    let keys = sample(&triad_text, "etcd_debugging_mvcc_keys_total", "");
    assert_eq!(
        keys,
        sample(&etcd_text, "etcd_debugging_mvcc_keys_total", "")
    );
    let listed = etcdctl(&triad_ep, &["member", "list"]).stdout;
    let listed = String::from_utf8_lossy(&listed);
    let id = listed.split(',').next().unwrap_or_default().trim();
    assert!(
        triad_text.contains(&format!("etcd_server_id{{server_id=\"{id}\"}} 1")),
        "{id}\n{triad_text}"
    );
    for gauge in [
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_max_fds",
        "process_start_time_seconds",
        "os_fd_used",
        "os_fd_limit",
    ] {
        assert!(sample(&triad_text, gauge, "") > Some(0.0), "{gauge}");
    }
    // The member's memory is its three daemons'.
    let daemons: f64 = ["storaged", "raftd", "gatewayd"]
        .iter()
        .map(|d| {
            sample(
                &triad_text,
                "triad_process_resident_memory_bytes",
                &format!("{{daemon=\"{d}\"}}"),
            )
            .expect("a daemon's memory")
        })
        .sum();
    assert_eq!(
        sample(&triad_text, "process_resident_memory_bytes", ""),
        Some(daemons)
    );

    // The compaction ran: at apply (the index) and in the background.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    for name in [
        "etcd_debugging_mvcc_index_compaction_pause_duration_milliseconds_count",
        "etcd_debugging_mvcc_db_compaction_pause_duration_milliseconds_count",
        "etcd_debugging_mvcc_db_compaction_total_duration_milliseconds_count",
    ] {
        while sample(&http(&triad_ep, "GET", "/metrics", "").1, name, "") < Some(1.0) {
            assert!(std::time::Instant::now() < deadline, "{name} never moved");
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    // etcd's grpc-proxy families are the L7 proxy's.
    let proxy = triad_tests::Proxy::in_front_of("l7", std::slice::from_ref(&triad_ep), &[]);
    let (proxy_head, proxy_text) = scrape(&proxy.endpoint());
    assert!(proxy_head.contains(content_type), "{proxy_head}");
    assert_eq!(malformed(&proxy_text), Vec::<String>::new());
    let proxied = families(&proxy_text);
    let grpc_proxy: Vec<_> = theirs
        .iter()
        .filter(|(n, _)| n.starts_with("etcd_grpc_proxy_"))
        .collect();
    assert!(!grpc_proxy.is_empty());
    for (name, e) in grpc_proxy {
        let p = proxied
            .get(name)
            .unwrap_or_else(|| panic!("{name} not on the proxy\n{proxy_text}"));
        assert_eq!(p.kind, e.kind, "{name}");
    }
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
    assert_eq!(malformed(&raftd), Vec::<String>::new(), "{raftd}");
    assert!(raftd.contains("etcd_disk_wal_fsync_duration_seconds_count"));
    assert!(!raftd.contains("etcd_disk_backend_commit"));
    let (_, storaged) = own(storaged_port);
    assert_eq!(malformed(&storaged), Vec::<String>::new(), "{storaged}");
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
    assert!(etcdctl(&ep, &["put", "k", "v"]).status.success());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let text = loop {
        let (_, text) = http(&ep, "GET", "/metrics", "");
        let peers = text
            .lines()
            .filter(|l| l.starts_with("etcd_network_peer_round_trip_time_seconds_count{To="))
            .filter(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) >= Some(2.0))
            .count();
        let active = text
            .lines()
            .filter(|l| l.starts_with("etcd_network_active_peers{") && l.ends_with(" 1"))
            .count();
        if peers == 2 && active == 2 {
            break text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no round trips measured:\n{text}"
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    };
    let ours = families(&text);
    for (name, kind, labels, always) in PEER_FAMILIES {
        let f = ours
            .get(*name)
            .unwrap_or_else(|| panic!("{name} missing\n{text}"));
        assert_eq!(f.kind, *kind, "{name}");
        assert!(f.has_series || !always, "{name} has no series\n{text}");
        if f.has_series {
            let want: BTreeSet<String> = labels.iter().map(|l| l.to_string()).collect();
            assert_eq!(f.labels, want, "{name}\n{text}");
        }
    }
    // Bytes flow both ways between the members.
    for name in [
        "etcd_network_peer_sent_bytes_total",
        "etcd_network_peer_received_bytes_total",
    ] {
        let moving = text
            .lines()
            .filter(|l| l.starts_with(&format!("{name}{{")))
            .filter(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) > Some(0.0))
            .count();
        assert_eq!(moving, 2, "{name}\n{text}");
    }
}

/// A 3-member reference etcd on loopback.
struct EtcdCluster {
    _dir: tempfile::TempDir,
    children: Vec<std::process::Child>,
    client_ports: Vec<u16>,
}

impl EtcdCluster {
    fn start() -> Option<EtcdCluster> {
        use std::process::{Command, Stdio};
        if Command::new("etcd").arg("--version").output().is_err() {
            triad_tests::prerequisite_missing("etcd (Debian package etcd-server) is not installed");
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("etcd-ref3")
            .tempdir()
            .ok()?;
        let ports: Vec<u16> = (0..3).map(|_| free_port_pair()).collect();
        let peer = |p: u16| format!("http://127.0.0.1:{}", p + 1);
        let initial: Vec<String> = ports
            .iter()
            .enumerate()
            .map(|(i, p)| format!("m{i}={}", peer(*p)))
            .collect();
        let mut cluster = EtcdCluster {
            _dir: dir,
            children: Vec::new(),
            client_ports: ports.clone(),
        };
        for (i, p) in ports.iter().enumerate() {
            let client = format!("http://127.0.0.1:{p}");
            let child = Command::new("etcd")
                .args(["--name", &format!("m{i}")])
                .arg("--data-dir")
                .arg(cluster._dir.path().join(format!("m{i}")))
                .args(["--listen-client-urls", &client])
                .args(["--advertise-client-urls", &client])
                .args(["--listen-peer-urls", &peer(*p)])
                .args(["--initial-advertise-peer-urls", &peer(*p)])
                .args(["--initial-cluster", &initial.join(",")])
                .args(["--initial-cluster-token", "metrics-ref"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .ok()?;
            cluster.children.push(child);
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        for ep in cluster.endpoints() {
            while !etcdctl(&ep, &["endpoint", "health"]).status.success() {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the 3-member reference etcd did not become healthy"
                );
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        }
        Some(cluster)
    }

    fn endpoints(&self) -> Vec<String> {
        self.client_ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect()
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[test]
fn the_peer_families_are_a_3_member_etcds() {
    let Some(etcd) = EtcdCluster::start() else {
        return;
    };
    let ep = etcd.endpoints()[0].clone();
    assert!(etcdctl(&ep, &["put", "k", "v"]).status.success());
    // etcd probes its peers' round trips every few seconds.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let text = loop {
        let (_, text) = http(&ep, "GET", "/metrics", "");
        let theirs = families(&text);
        let ready = PEER_FAMILIES
            .iter()
            .filter(|(.., always)| *always)
            .all(|(name, ..)| theirs.get(*name).is_some_and(|f| f.has_series));
        if ready {
            break text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the reference etcd shows no peer series:\n{text}"
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    };
    let theirs = families(&text);
    let peer_families: Vec<&String> = theirs
        .keys()
        .filter(|n| n.starts_with("etcd_network_") && !n.starts_with("etcd_network_client_"))
        .collect();
    for name in peer_families {
        let f = &theirs[name];
        let listed = PEER_FAMILIES.iter().find(|(n, ..)| n == name);
        let Some((_, kind, labels, _)) = listed else {
            panic!("{name} is not on the list of peer families\n{text}");
        };
        assert_eq!(f.kind, *kind, "{name}");
        if f.has_series {
            let want: BTreeSet<String> = labels.iter().map(|l| l.to_string()).collect();
            assert_eq!(f.labels, want, "{name}");
        }
    }
    // The round trip's buckets are etcd's.
    let rtt = "etcd_network_peer_round_trip_time_seconds";
    let c = triad_tests::cluster::Cluster::start(3);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let ours = loop {
        let (_, text) = http(&c.endpoints()[0], "GET", "/metrics", "");
        let ours = families(&text);
        if ours.get(rtt).is_some_and(|f| f.has_series) {
            break ours;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no round trips:\n{text}"
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    };
    assert_eq!(ours[rtt].buckets, theirs[rtt].buckets);
}

/// The value of `name{labels}` on member `i`'s /metrics (0 when absent).
fn value_on(c: &triad_tests::cluster::Cluster, i: usize, name: &str, labels: &str) -> f64 {
    let (_, text) = http(&c.endpoints()[i], "GET", "/metrics", "");
    sample(&text, name, labels).unwrap_or(0.0)
}

/// Wait (bounded) until `name{labels}` on member `i` reaches `at_least`.
fn wait_value(
    c: &triad_tests::cluster::Cluster,
    i: usize,
    name: &str,
    labels: &str,
    at_least: f64,
) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while value_on(c, i, name, labels) < at_least {
        assert!(
            std::time::Instant::now() < deadline,
            "{name}{labels} on member {i} never reached {at_least}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_and_a_learner_move_their_families() {
    // A log purged long before a new member arrives: a snapshot brings it
    // up to date.
    let mut c = triad_tests::cluster::Cluster::start_with_env(
        3,
        &[
            ("TRIAD_SNAPSHOT_COUNT", "100"),
            ("TRIAD_SNAPSHOT_CATCHUP_ENTRIES", "20"),
        ],
    );
    let mut writer = c.client(0).await;
    for i in 0..300 {
        writer
            .put(format!("fill{i}"), "x", None)
            .await
            .expect("fill put");
    }
    let leader = c.leader().await;
    wait_value(
        &c,
        leader,
        "etcd_debugging_snap_save_total_duration_seconds_count",
        "",
        1.0,
    );
    assert!(value_on(&c, leader, "etcd_snap_fsync_duration_seconds_count", "") >= 1.0);
    let place = c.new_place();
    let url = format!("--peer-urls={}", place.peer_url());
    let added = c.etcdctl(0, &["member", "add", &place.name, "--learner", &url]);
    assert!(added.status.success(), "{added:?}");
    c.join(place);
    let new = c.members.len() - 1;
    let new_id = format!("{:x}", c.member_id(new).await);
    let leader_id = format!("{:x}", c.member_id(leader).await);
    wait_value(&c, new, "etcd_server_is_learner", "", 1.0);
    let from = format!("{{From=\"{leader_id}\"}}");
    wait_value(&c, new, "etcd_network_snapshot_receive_success", &from, 1.0);
    assert!(
        value_on(
            &c,
            new,
            "etcd_snap_db_save_total_duration_seconds_count",
            ""
        ) >= 1.0
    );
    assert!(value_on(&c, new, "etcd_snap_db_fsync_duration_seconds_count", "") >= 1.0);
    let to = format!("{{To=\"{new_id}\"}}");
    assert!(value_on(&c, leader, "etcd_network_snapshot_send_success", &to) >= 1.0);
    assert!(
        value_on(
            &c,
            leader,
            "etcd_disk_backend_snapshot_duration_seconds_count",
            ""
        ) >= 1.0
    );
    // Promoted once in sync (etcd refuses before).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !c
        .etcdctl(leader, &["member", "promote", &new_id])
        .status
        .success()
    {
        assert!(std::time::Instant::now() < deadline, "never promoted");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(
        value_on(&c, leader, "etcd_server_learner_promote_successes", ""),
        1.0
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while value_on(&c, new, "etcd_server_is_learner", "") != 0.0 {
        assert!(std::time::Instant::now() < deadline, "still a learner");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}
