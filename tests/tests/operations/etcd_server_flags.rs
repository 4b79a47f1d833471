//! etcd server flags beyond the basics, each shown by what it does on a
//! running member, next to etcd 3.4 where etcd 3.4 has the flag.

use std::path::Path;

use triad_tests::{
    bin, etcdctl, http, http_exchange, metric_sample, ok_stdout, reference_etcd, Member,
};

fn slow_applies(endpoint: &str) -> f64 {
    let (status, text) = http(endpoint, "GET", "/metrics", "");
    assert_eq!(status, 200, "{text}");
    metric_sample(&text, "etcd_server_slow_apply_total", "").unwrap_or(0.0)
}

/// `--experimental-warning-apply-duration`: an apply or read over the
/// threshold is logged as etcd logs it (the request summarised, never its
/// value) and counted in `etcd_server_slow_apply_total`; at etcd's default
/// (100ms) a quiet member counts none.
#[test]
fn slow_applies_are_warned_of_and_counted() {
    let quick = Member::start();
    ok_stdout(&quick.etcdctl(&["put", "foo", "bar"]));
    assert_eq!(slow_applies(&quick.endpoint()), 0.0, "{}", quick.logs());
    drop(quick);

    let m = Member::start_with_env(&[("ETCD_EXPERIMENTAL_WARNING_APPLY_DURATION", "1ns")]);
    let before = slow_applies(&m.endpoint());
    ok_stdout(&m.etcdctl(&["put", "foo", "secret-value"]));
    ok_stdout(&m.etcdctl(&["get", "foo"]));
    let counted = slow_applies(&m.endpoint()) - before;
    assert!(counted >= 2.0, "put and get counted {counted}");
    let logs = m.logs();
    assert!(
        logs.contains("apply request took too long")
            && logs.contains(r#"put:<key:\"foo\" value_size:12 >"#)
            && logs.contains("read-only range "),
        "{logs}"
    );
    assert!(!logs.contains("secret-value"), "a value was logged: {logs}");

    let Some(etcd) = reference_etcd(&["--experimental-warning-apply-duration=1ns"]) else {
        return;
    };
    let before = slow_applies(&etcd.endpoint());
    ok_stdout(&etcdctl(&etcd.endpoint(), &["put", "foo", "secret-value"]));
    ok_stdout(&etcdctl(&etcd.endpoint(), &["get", "foo"]));
    assert!(slow_applies(&etcd.endpoint()) - before >= 2.0);
}

/// The `.wal` files directly in `dir`.
fn wal_files(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |entries| {
        entries
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().ends_with(".wal"))
            .count()
    })
}

/// `--wal-dir`: the raft log's files live there (the data dir keeps none),
/// a restart finds them, and a member pointed at an empty directory while
/// its log is elsewhere refuses to start instead of starting empty.
#[test]
fn wal_dir_holds_the_raft_log() {
    let wal = tempfile::tempdir().expect("tempdir");
    let wal_dir = wal.path().join("wal");
    let mut m = Member::start_with_env(&[("ETCD_WAL_DIR", wal_dir.to_str().expect("utf-8"))]);
    for i in 0..50 {
        ok_stdout(&m.etcdctl(&["put", &format!("k{i}"), "v"]));
    }
    assert!(wal_files(&wal_dir) > 0, "no log files in --wal-dir");
    assert_eq!(wal_files(&m.data_dir().join("raftd/wal")), 0);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&wal_dir)
        .expect("wal dir")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700);
    m.stop();
    m.launch();
    assert!(ok_stdout(&m.etcdctl(&["get", "k49"])).contains("k49"));
    m.stop();

    let elsewhere = wal.path().join("empty");
    let out = std::process::Command::new(bin("raftd"))
        .arg("--data-dir")
        .arg(m.data_dir())
        .arg("--wal-dir")
        .arg(&elsewhere)
        .output()
        .expect("run raftd");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("the raft log is in"), "{stderr}");

    let etcd_wal = tempfile::tempdir().expect("tempdir");
    let wal_arg = format!("--wal-dir={}", etcd_wal.path().join("wal").display());
    let Some(etcd) = reference_etcd(&[&wal_arg]) else {
        return;
    };
    ok_stdout(&etcdctl(&etcd.endpoint(), &["put", "k", "v"]));
    assert!(wal_files(&etcd_wal.path().join("wal")) > 0);
}

/// What a server does on an idle HTTP/2 connection whose client never
/// answers a ping, over `watch`: when its first PING came and when it
/// closed the connection (GOAWAY or end of stream), from the handshake.
fn idle_connection(
    endpoint: &str,
    watch: std::time::Duration,
) -> (Option<std::time::Duration>, Option<std::time::Duration>) {
    use std::io::{Read, Write};
    use std::time::Instant;
    let mut s = std::net::TcpStream::connect(endpoint).expect("connect");
    let start = Instant::now();
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .expect("preface");
    let (mut ping, mut closed) = (None, None);
    let mut buf = Vec::new();
    while start.elapsed() < watch && closed.is_none() {
        let left = watch
            .saturating_sub(start.elapsed())
            .max(std::time::Duration::from_millis(1));
        s.set_read_timeout(Some(left)).expect("timeout");
        let mut chunk = [0u8; 4096];
        match s.read(&mut chunk) {
            Ok(0) | Err(_) if start.elapsed() < watch => {
                closed.get_or_insert(start.elapsed());
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => break,
        }
        while buf.len() >= 9 {
            let len = u32::from_be_bytes([0, buf[0], buf[1], buf[2]]) as usize;
            if buf.len() < 9 + len {
                break;
            }
            let (kind, flags) = (buf[3], buf[4]);
            match kind {
                // SETTINGS: acknowledge, as a client does.
                4 if flags & 1 == 0 => s.write_all(b"\0\0\0\x04\x01\0\0\0\0").expect("ack"),
                6 if flags & 1 == 0 => {
                    ping.get_or_insert(start.elapsed());
                }
                7 => {
                    closed.get_or_insert(start.elapsed());
                }
                _ => {}
            }
            buf.drain(..9 + len);
        }
    }
    (ping, closed)
}

/// `--grpc-keepalive-interval`/`-timeout`: an idle client connection is
/// pinged after the interval and closed when the ping goes unanswered for
/// the timeout, as etcd does it; at the defaults (2 hours) nothing
/// happens within seconds.
#[test]
fn idle_connections_are_pinged_and_dead_ones_closed() {
    use std::time::Duration;
    let quiet = Member::start();
    let (ping, closed) = idle_connection(&quiet.endpoint(), Duration::from_secs(3));
    assert_eq!((ping, closed), (None, None));
    drop(quiet);

    let keepalive = [
        ("ETCD_GRPC_KEEPALIVE_INTERVAL", "1s"),
        ("ETCD_GRPC_KEEPALIVE_TIMEOUT", "1s"),
    ];
    let m = Member::start_with_env(&keepalive);
    let (ping, closed) = idle_connection(&m.endpoint(), Duration::from_secs(6));
    let ping = ping.expect("no ping on an idle connection");
    let closed = closed.expect("a dead connection was kept");
    assert!(
        ping >= Duration::from_millis(900) && ping < Duration::from_secs(3),
        "{ping:?}"
    );
    assert!(
        closed > ping && closed < ping + Duration::from_secs(3),
        "{closed:?}"
    );

    let Some(etcd) = reference_etcd(&[
        "--grpc-keepalive-interval=1s",
        "--grpc-keepalive-timeout=1s",
    ]) else {
        return;
    };
    let (ping, closed) = idle_connection(&etcd.endpoint(), Duration::from_secs(6));
    assert!(
        ping.is_some() && closed.is_some(),
        "etcd: {ping:?} {closed:?}"
    );
}

/// A client that pings every `every` and sends nothing else, for at most
/// `watch`: how long until the server closed the connection, if it did.
fn pinging_client(
    endpoint: &str,
    every: std::time::Duration,
    watch: std::time::Duration,
) -> Option<std::time::Duration> {
    use std::io::{Read, Write};
    use std::time::Instant;
    let mut s = std::net::TcpStream::connect(endpoint).expect("connect");
    let start = Instant::now();
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .expect("preface");
    s.write_all(b"\0\0\0\x04\x01\0\0\0\0")
        .expect("settings ack");
    s.set_read_timeout(Some(std::time::Duration::from_millis(20)))
        .expect("timeout");
    let mut next_ping = start;
    let mut chunk = [0u8; 4096];
    while start.elapsed() < watch {
        if Instant::now() >= next_ping {
            let ping = b"\0\0\x08\x06\0\0\0\0\0pingpong";
            if s.write_all(ping).is_err() {
                return Some(start.elapsed());
            }
            next_ping += every;
        }
        match s.read(&mut chunk) {
            Ok(0) => return Some(start.elapsed()),
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return Some(start.elapsed()),
        }
    }
    None
}

/// `--grpc-keepalive-min-time` (etcd's default 5s): a client that pings
/// more often than that with nothing else to send is disconnected on its
/// third early ping, as etcd's gRPC server does; one that keeps to it
/// stays connected.
#[test]
fn clients_pinging_too_often_are_disconnected() {
    use std::time::Duration;
    let m = Member::start_with_env(&[("ETCD_GRPC_KEEPALIVE_MIN_TIME", "1s")]);
    let closed = pinging_client(
        &m.endpoint(),
        Duration::from_millis(100),
        Duration::from_secs(5),
    );
    let closed = closed.expect("an abusive pinger was kept");
    assert!(closed < Duration::from_secs(2), "{closed:?}");
    let kept = pinging_client(
        &m.endpoint(),
        Duration::from_millis(1300),
        Duration::from_secs(5),
    );
    assert_eq!(kept, None, "a client keeping to the minimum was closed");
    let Some(etcd) = reference_etcd(&["--grpc-keepalive-min-time=1s"]) else {
        return;
    };
    let closed = pinging_client(
        &etcd.endpoint(),
        Duration::from_millis(100),
        Duration::from_secs(5),
    );
    assert!(
        closed.is_some_and(|c| c < Duration::from_secs(2)),
        "etcd: {closed:?}"
    );
}

fn has_header(head: &str, name: &str, value: &str) -> bool {
    head.lines().any(|l| {
        l.split_once(':')
            .is_some_and(|(n, v)| n.trim().eq_ignore_ascii_case(name) && v.trim() == value)
    })
}

/// `--cors` and `--host-whitelist` on the HTTP endpoints, compared with
/// etcd's answers: CORS headers for any origin by default and for listed
/// ones when set, OPTIONS answered at once, and an unlisted Host refused
/// with etcd's 421 and its text.
#[test]
fn cors_and_host_checks_answer_as_etcd_does() {
    let origin = ("Origin", "http://ok.example:8080");
    let cors_headers = |head: &str, origin: &str| {
        has_header(head, "access-control-allow-origin", origin)
            && has_header(
                head,
                "access-control-allow-methods",
                "POST, GET, OPTIONS, PUT, DELETE",
            )
            && has_header(
                head,
                "access-control-allow-headers",
                "accept, content-type, authorization",
            )
    };
    let member = Member::start();
    let restricted = Member::start_with_env(&[
        ("ETCD_CORS", "http://ok.example:8080"),
        ("ETCD_HOST_WHITELIST", "good.example,127.0.0.1"),
    ]);
    let etcd_pair = reference_etcd(&[]).zip(reference_etcd(&[
        "--cors=http://ok.example:8080",
        "--host-whitelist=good.example,127.0.0.1",
    ]));
    let mut pairs = vec![("triad", member.endpoint(), restricted.endpoint())];
    if let Some((open, closed)) = &etcd_pair {
        pairs.push(("etcd", open.endpoint(), closed.endpoint()));
    }
    let mut refusals = Vec::new();
    for (who, open, closed) in &pairs {
        let (status, head, _) = http_exchange(open, "GET", "/health", "", &[origin]);
        assert!(status == 200 && cors_headers(&head, "*"), "{who}: {head}");
        let (status, head, body) = http_exchange(open, "OPTIONS", "/v3/kv/range", "", &[origin]);
        assert!(
            status == 200 && body.is_empty() && cors_headers(&head, "*"),
            "{who}: {head}"
        );

        let (status, head, _) = http_exchange(closed, "GET", "/health", "", &[origin]);
        assert!(
            status == 200 && cors_headers(&head, origin.1),
            "{who}: {head}"
        );
        let other = ("Origin", "http://evil.example:1");
        let (status, head, _) = http_exchange(closed, "GET", "/health", "", &[other]);
        assert!(
            status == 200 && !head.to_ascii_lowercase().contains("access-control"),
            "{who}: {head}"
        );
        let (status, _, _) = http_exchange(
            closed,
            "GET",
            "/version",
            "",
            &[("Host", "good.example:2379")],
        );
        assert_eq!(status, 200, "{who}");
        let (status, head, body) = http_exchange(
            closed,
            "GET",
            "/version",
            "",
            &[("Host", "evil.example:2379")],
        );
        assert_eq!(status, 421, "{who}: {head}");
        assert!(
            has_header(&head, "content-type", "text/plain; charset=utf-8"),
            "{who}: {head}"
        );
        refusals.push(body);
    }
    assert!(refusals[0].contains("\"evil.example\""), "{}", refusals[0]);
    if refusals.len() == 2 {
        assert_eq!(
            refusals[0], refusals[1],
            "the refusal's text differs from etcd's"
        );
    }
}

fn wal_fsyncs(endpoint: &str) -> f64 {
    let (_, text) = http(endpoint, "GET", "/metrics", "");
    metric_sample(&text, "etcd_disk_wal_fsync_duration_seconds_count", "").unwrap_or(0.0)
}

/// `--unsafe-no-fsync` (etcd 3.5): the raft log is never fsynced (etcd's
/// WAL fsync histogram stays empty) and each daemon says so at start.
#[test]
fn unsafe_no_fsync_syncs_nothing_and_says_so() {
    let safe = Member::start();
    ok_stdout(&safe.etcdctl(&["put", "k", "v"]));
    assert!(wal_fsyncs(&safe.endpoint()) > 0.0);
    drop(safe);
    let m = Member::start_with_env(&[("ETCD_UNSAFE_NO_FSYNC", "true")]);
    for i in 0..20 {
        ok_stdout(&m.etcdctl(&["put", &format!("k{i}"), "v"]));
    }
    assert_eq!(wal_fsyncs(&m.endpoint()), 0.0);
    assert!(ok_stdout(&m.etcdctl(&["get", "k19"])).contains("k19"));
    assert!(m.logs().contains("--unsafe-no-fsync: nothing is fsynced"));
}

/// Whether a socket with SO_REUSEPORT can bind 127.0.0.1:`port` now.
fn reuse_port_binds(port: u16) -> bool {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_reuseport(true).expect("SO_REUSEPORT");
    socket.bind(([127, 0, 0, 1], port).into()).is_ok()
}

/// `--socket-reuse-port` (etcd 3.5): another socket with SO_REUSEPORT may
/// bind the member's client port; without it, it may not.
#[test]
fn socket_reuse_port_shares_the_client_port() {
    let plain = Member::start();
    assert!(!reuse_port_binds(plain.port));
    drop(plain);
    let m = Member::start_with_env(&[("ETCD_SOCKET_REUSE_PORT", "true")]);
    assert!(reuse_port_binds(m.port));
    ok_stdout(&m.etcdctl(&["put", "k", "v"]));
}

/// `--experimental-max-learners` (etcd 3.5): as many learners as it says
/// (one by default, as etcd 3.4 allows), then etcd's refusal.
#[test]
fn max_learners_bounds_the_learners() {
    let add_learners = |ctl: &dyn Fn(&[&str]) -> std::process::Output, n: usize| {
        (0..n)
            .map(|i| {
                let url = format!("http://127.0.0.{}:2380", 10 + i);
                let name = format!("l{i}");
                let out = ctl(&["member", "add", &name, "--learner", "--peer-urls", &url]);
                // etcdctl's last line (its client logs retries before it).
                let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
                let last = stderr.trim().lines().last().unwrap_or("").to_string();
                (out.status.success(), last)
            })
            .collect::<Vec<_>>()
    };
    let refusal = "Error: etcdserver: too many learner members in cluster".to_string();
    let default = Member::start();
    let got = add_learners(&|a| default.etcdctl(a), 2);
    assert_eq!(got, vec![(true, String::new()), (false, refusal.clone())]);
    drop(default);
    let m = Member::start_with_env(&[("ETCD_EXPERIMENTAL_MAX_LEARNERS", "2")]);
    let got = add_learners(&|a| m.etcdctl(a), 3);
    assert_eq!(
        got,
        vec![
            (true, String::new()),
            (true, String::new()),
            (false, refusal.clone())
        ]
    );
    let Some(etcd) = reference_etcd(&[]) else {
        return;
    };
    let got = add_learners(&|a| etcdctl(&etcd.endpoint(), a), 2);
    assert_eq!(got, vec![(true, String::new()), (false, refusal)]);
}

/// The `le` bounds and the count of grpc_server_handling_seconds for
/// KV.Range in a metrics page (labels in any order).
fn range_handling(text: &str) -> (Vec<String>, f64) {
    let range = |l: &&str| {
        l.contains("grpc_method=\"Range\"") && l.contains("grpc_service=\"etcdserverpb.KV\"")
    };
    let bounds = text
        .lines()
        .filter(|l| l.starts_with("grpc_server_handling_seconds_bucket{"))
        .filter(range)
        .filter_map(|l| l.split("le=\"").nth(1))
        .filter_map(|rest| rest.split('"').next())
        .map(str::to_string)
        .collect();
    let count = text
        .lines()
        .filter(|l| l.starts_with("grpc_server_handling_seconds_count{"))
        .find(range)
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    (bounds, count)
}

/// `--metrics extensive`: gRPC handling times per method, with etcd's
/// buckets; basic (the default) has none.
#[test]
fn extensive_metrics_time_each_call() {
    let basic = Member::start();
    ok_stdout(&basic.etcdctl(&["get", "k"]));
    let (_, text) = http(&basic.endpoint(), "GET", "/metrics", "");
    assert!(!text.contains("grpc_server_handling_seconds"));
    drop(basic);
    let m = Member::start_with_env(&[("ETCD_METRICS", "extensive")]);
    ok_stdout(&m.etcdctl(&["get", "k"]));
    let (_, text) = http(&m.endpoint(), "GET", "/metrics", "");
    let (bounds, count) = range_handling(&text);
    assert!(count >= 1.0, "{text}");
    let Some(etcd) = reference_etcd(&["--metrics=extensive"]) else {
        return;
    };
    ok_stdout(&etcdctl(&etcd.endpoint(), &["get", "k"]));
    let (_, text) = http(&etcd.endpoint(), "GET", "/metrics", "");
    let (etcd_bounds, etcd_count) = range_handling(&text);
    assert!(etcd_count >= 1.0);
    assert_eq!(bounds, etcd_bounds);
}

/// Batches a physical compaction of `writes` revisions took on a member
/// or etcd (etcd's db compaction pause histogram counts one per batch).
async fn compaction_batches(endpoint: &str, writes: usize) -> f64 {
    let pauses = |ep: &str| {
        let (_, text) = http(ep, "GET", "/metrics", "");
        metric_sample(
            &text,
            "etcd_debugging_mvcc_db_compaction_pause_duration_milliseconds_count",
            "",
        )
        .unwrap_or(0.0)
    };
    let before = pauses(endpoint);
    let mut c = triad_tests::connect(endpoint).await;
    let mut revision = 0;
    for i in 0..writes {
        let r = c
            .put(format!("k{}", i % 10), format!("v{i}"), None)
            .await
            .expect("put");
        revision = r.header().expect("header").revision();
    }
    c.compact(
        revision,
        Some(etcd_client::CompactionOptions::new().with_physical()),
    )
    .await
    .expect("compact");
    pauses(endpoint) - before
}

/// `--experimental-compaction-batch-limit`: a physical compaction goes in
/// batches of that many revisions, on triad as on etcd.
#[tokio::test]
async fn compaction_goes_in_batches_of_the_limit() {
    let m = Member::start_with_env(&[("ETCD_EXPERIMENTAL_COMPACTION_BATCH_LIMIT", "100")]);
    let batches = compaction_batches(&m.endpoint(), 1000).await;
    assert!(
        batches >= 9.0,
        "{batches} batches of 100 for 1000 revisions"
    );
    let default = Member::start();
    let batches = compaction_batches(&default.endpoint(), 1000).await;
    assert!(batches <= 3.0, "{batches} batches at the default");
    let Some(etcd) = reference_etcd(&["--experimental-compaction-batch-limit=100"]) else {
        return;
    };
    let batches = compaction_batches(&etcd.endpoint(), 1000).await;
    assert!(batches >= 9.0, "etcd: {batches}");
}

/// etcd 3.4's `--debug` logs at debug level; lease checkpoints, which
/// triad always makes, take `--experimental-enable-lease-checkpoint`
/// quietly and warn when it is turned off.
#[test]
fn debug_and_lease_checkpoint_switches() {
    let m = Member::start_with_env(&[("ETCD_DEBUG", "true")]);
    ok_stdout(&m.etcdctl(&["put", "k", "v"]));
    assert!(m.logs().contains(" DEBUG "));
    drop(m);
    let m = Member::start_with_env(&[("ETCD_EXPERIMENTAL_ENABLE_LEASE_CHECKPOINT", "false")]);
    let logs = m.logs();
    assert!(
        logs.contains("triad always checkpoints lease TTLs"),
        "{logs}"
    );
    drop(m);
    let m = Member::start_with_env(&[("ETCD_EXPERIMENTAL_ENABLE_LEASE_CHECKPOINT", "true")]);
    let logs = m.logs();
    assert!(
        !logs.contains(" DEBUG ") && !logs.contains("lease-checkpoint"),
        "{logs}"
    );
}

/// `--listen-client-http-urls` (etcd 3.5): the HTTP endpoints move to
/// their own addresses, which serve no gRPC; the client URLs serve gRPC
/// alone.
#[test]
fn client_http_urls_take_the_http_endpoints() {
    let port = triad_tests::free_port_pair();
    let http_ep = format!("127.0.0.1:{port}");
    let m =
        Member::start_with_env(&[("ETCD_LISTEN_CLIENT_HTTP_URLS", &format!("http://{http_ep}"))]);
    ok_stdout(&m.etcdctl(&["put", "foo", "bar"]));
    let (status, body) = http(&http_ep, "GET", "/health", "");
    assert_eq!(status, 200, "{body}");
    let (status, body) = http(&http_ep, "POST", "/v3/kv/range", r#"{"key":"Zm9v"}"#);
    assert!(status == 200 && body.contains("YmFy"), "{status} {body}");
    let (status, _) = http(&m.endpoint(), "GET", "/health", "");
    assert_ne!(status, 200, "HTTP still served on the gRPC address");
    let out = etcdctl(
        &http_ep,
        &["get", "foo", "--dial-timeout=2s", "--command-timeout=3s"],
    );
    assert!(!out.status.success(), "gRPC served on the HTTP address");
}

/// `--feature-gates` (etcd 3.6): InitialCorruptCheck runs raftd's initial
/// check; a gate with no effect in triad is warned of with the reason; an
/// unknown gate or a bad value stops the member with etcd's error.
#[test]
fn feature_gates_as_etcd_names_them() {
    let m = Member::start_with_env(&[(
        "ETCD_FEATURE_GATES",
        "InitialCorruptCheck=true,StopGRPCServiceOnDefrag=true",
    )]);
    let logs = m.logs();
    assert!(logs.contains("initial corruption check passed"), "{logs}");
    assert!(
        logs.contains("feature gate StopGRPCServiceOnDefrag has no effect in triad"),
        "{logs}"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    for (gates, error) in [
        ("Nope=true", "unrecognized feature gate: Nope"),
        (
            "LeaseCheckpoint=yes",
            "invalid value of LeaseCheckpoint=yes, err: strconv.ParseBool: parsing \"yes\": invalid syntax",
        ),
    ] {
        for daemon in ["storaged", "raftd", "gatewayd"] {
            let out = std::process::Command::new(bin(daemon))
                .arg("--check-config")
                .arg("--data-dir")
                .arg(dir.path())
                .arg(format!("--feature-gates={gates}"))
                .output()
                .expect("run the daemon");
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{daemon}: {stderr}");
            assert!(stderr.contains(error), "{daemon}: {stderr}");
        }
    }
}

/// What `openssl x509 -text` says of a certificate file.
fn certificate_text(path: &Path) -> String {
    let out = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in"])
        .arg(path)
        .output()
        .expect("openssl (tests/run installs it)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `--auto-tls`: https client URLs served with a self-signed certificate
/// made in `<data-dir>/fixtures/client` (its key private) and kept across
/// restarts, which clients take with --insecure-skip-tls-verify, as
/// etcd's.
#[test]
fn auto_tls_serves_https_with_a_self_signed_certificate() {
    let mut m = Member::start_with_env(&[("ETCD_AUTO_TLS", "true")]);
    let url = format!("https://{}", m.endpoint());
    // etcdctl 3.4 speaks TLS to an https endpoint only without
    // --insecure-transport.
    let tls = "--insecure-transport=false";
    let skip = "--insecure-skip-tls-verify";
    ok_stdout(&etcdctl(&url, &[tls, skip, "put", "k", "v"]));
    let verified = etcdctl(
        &url,
        &[tls, "--dial-timeout=2s", "--command-timeout=3s", "get", "k"],
    );
    assert!(
        !verified.status.success(),
        "a self-signed certificate was trusted"
    );
    let dir = m.data_dir().join("fixtures/client");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.join("key.pem"))
        .expect("key")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let cert = std::fs::read(dir.join("cert.pem")).expect("cert");
    let text = certificate_text(&dir.join("cert.pem"));
    assert!(
        text.contains("O = etcd") && text.contains("IP Address:127.0.0.1"),
        "{text}"
    );
    m.stop();
    m.launch();
    assert_eq!(std::fs::read(dir.join("cert.pem")).expect("cert"), cert);
    assert!(ok_stdout(&etcdctl(&url, &[tls, skip, "get", "k"])).contains('v'));

    // etcd's own, for the certificate's shape.
    let Some(etcd) = triad_tests::RefEtcd::start_https(&["--auto-tls"]) else {
        triad_tests::prerequisite_missing("etcd (Debian package etcd-server) is not installed");
        return;
    };
    let etcd_url = format!("https://{}", etcd.endpoint());
    ok_stdout(&etcdctl(
        &etcd_url,
        &[etcd.tls_flags(), &["put", "k", "v"]].concat(),
    ));
    let etcd_text = certificate_text(&etcd.data_dir().join("fixtures/client/cert.pem"));
    assert!(
        etcd_text.contains("O = etcd") && etcd_text.contains("IP Address:127.0.0.1"),
        "{etcd_text}"
    );
}

/// `--peer-auto-tls`: each member serves its peer URL over TLS with a
/// self-signed certificate made in `<data-dir>/fixtures/peer`, and the
/// members take each other's unverified, as etcd's do: a 3-member cluster
/// forms and replicates over https peer URLs.
#[test]
fn peer_auto_tls_joins_members_over_self_signed_tls() {
    use triad_tests::cluster::Cluster;
    let c = Cluster::start_with_env(3, &[("ETCD_PEER_AUTO_TLS", "true")]);
    ok_stdout(&c.etcdctl(0, &["put", "k", "over-tls"]));
    assert!(ok_stdout(&c.etcdctl(2, &["get", "k"])).contains("over-tls"));
    let list = ok_stdout(&c.etcdctl(1, &["member", "list"]));
    for place in &c.members {
        let peer = format!("https://127.0.0.1:{}", place.port + 1);
        assert!(list.contains(&peer), "{list}");
        let dir = place.dir.join("fixtures/peer");
        let text = certificate_text(&dir.join("cert.pem"));
        assert!(
            text.contains("O = etcd") && text.contains("IP Address:127.0.0.1"),
            "{text}"
        );
        // The peer port speaks TLS only.
        let hello = std::process::Command::new("openssl")
            .args([
                "s_client",
                "-connect",
                &format!("127.0.0.1:{}", place.port + 1),
            ])
            .args(["-alpn", "h2"])
            .stdin(std::process::Stdio::null())
            .output()
            .expect("openssl s_client (tests/run installs it)");
        let shown = String::from_utf8_lossy(&hello.stdout);
        assert!(shown.contains("O = etcd"), "{shown}");
        let (status, _) = http(&format!("127.0.0.1:{}", place.port + 1), "GET", "/", "");
        assert_ne!(status, 200, "plain HTTP on a TLS peer port");
    }
}

/// `--discovery-srv`: the initial cluster comes from the domain's
/// `_etcd-server._tcp` records (asked of a name server of the test's
/// own), this member found among them by its address.
#[test]
fn discovery_srv_names_the_initial_cluster() {
    let port = triad_tests::free_port_pair();
    let dns = triad_tests::dns::serve(move |name| match name {
        "_etcd-server._tcp.example.test" => vec![("127.0.0.1".to_string(), port + 1)],
        _ => Vec::new(),
    });
    let m = Member::start_at(
        port,
        &[
            ("ETCD_DISCOVERY_SRV", "example.test"),
            ("TRIAD_DISCOVERY_DNS_SERVER", &dns.to_string()),
        ],
    );
    let list = ok_stdout(&m.etcdctl(&["member", "list"]));
    assert!(
        list.contains(&format!("http://127.0.0.1:{}", port + 1)),
        "{list}"
    );
    ok_stdout(&m.etcdctl(&["put", "k", "v"]));

    // A domain without records, or both ways at once, stop a daemon with
    // etcd's words.
    let dir = tempfile::tempdir().expect("tempdir");
    let nothing = std::process::Command::new(bin("raftd"))
        .arg("--check-config")
        .arg("--data-dir")
        .arg(dir.path())
        .args(["--discovery-srv", "nothing.test", "--discovery-dns-server"])
        .arg(dns.to_string())
        .output()
        .expect("raftd");
    let stderr = String::from_utf8_lossy(&nothing.stderr);
    assert_eq!(nothing.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("cannot find any DNS SRV records"),
        "{stderr}"
    );
    let both = std::process::Command::new(bin("raftd"))
        .arg("--check-config")
        .arg("--data-dir")
        .arg(dir.path())
        .args([
            "--discovery-srv",
            "example.test",
            "--initial-cluster",
            "default=http://localhost:2380",
        ])
        .output()
        .expect("raftd");
    let stderr = String::from_utf8_lossy(&both.stderr);
    assert!(
        stderr.contains("multiple discovery or bootstrap flags are set"),
        "{stderr}"
    );
}

/// `--initial-election-tick-advance` (etcd's default true): members that
/// restart and see no leader campaign after two heartbeats (with a
/// pre-vote) instead of waiting out an election timeout (10 s here, so
/// its shortest draw is 2 s); off, they wait. Returns how long the whole
/// cluster took to take a write again after all its members restarted,
/// and whether a member said it campaigned early.
fn restart_all(env: &[(&str, &str)]) -> (std::time::Duration, bool) {
    use std::time::{Duration, Instant};
    use triad_tests::cluster::Cluster;
    let c = Cluster::start_with_env(3, env);
    ok_stdout(&c.etcdctl(0, &["put", "k", "v"]));
    let held = c.hold_down(&[0, 1, 2]);
    let t = Instant::now();
    c.release(held);
    while !c
        .etcdctl(0, &["put", "k", "w", "--command-timeout=1s"])
        .status
        .success()
    {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "no leader after a minute"
        );
    }
    let took = t.elapsed();
    let logs: String = (0..3).map(|i| c.logs(i)).collect();
    (
        took,
        logs.contains("campaigning now (initial election tick advance)"),
    )
}

#[test]
fn initial_election_tick_advance_campaigns_early() {
    let slow = ("ETCD_ELECTION_TIMEOUT", "10000");
    let (advanced, said) = restart_all(&[slow]);
    assert!(said, "no member campaigned early");
    let (waited, said) = restart_all(&[slow, ("ETCD_INITIAL_ELECTION_TICK_ADVANCE", "false")]);
    assert!(!said);
    assert!(
        waited > advanced + std::time::Duration::from_secs(1),
        "writes again after {advanced:?} advancing, {waited:?} waiting"
    );
}

/// The log file and its lumberjack-named backups (`<stem>-<time><ext>`).
fn log_files(dir: &Path) -> (u64, Vec<(String, u64)>) {
    let mut current = 0;
    let mut backups = Vec::new();
    for e in std::fs::read_dir(dir).expect("log dir").flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let len = e.metadata().map_or(0, |m| m.len());
        if name == "member.log" {
            current = len;
        } else if name.starts_with("member-") && name.ends_with(".log") {
            backups.push((name, len));
        }
    }
    (current, backups)
}

/// etcd 3.5's `--enable-log-rotation`: the member's log file (shared by
/// its three daemons) is rotated before it passes `maxsize` MiB, the
/// backups are named as lumberjack names them, and only `maxbackups` stay;
/// rotation without a file among the outputs is refused with etcd's words.
#[test]
fn log_rotation_keeps_the_log_file_bounded() {
    let logs = tempfile::tempdir().expect("tempdir");
    let file = logs.path().join("member.log");
    let m = Member::start_with_env(&[
        ("ETCD_LOG_OUTPUTS", &file.display().to_string()),
        ("ETCD_ENABLE_LOG_ROTATION", "true"),
        (
            "ETCD_LOG_ROTATION_CONFIG_JSON",
            r#"{"maxsize": 1, "maxage": 0, "maxbackups": 2, "localtime": false, "compress": false}"#,
        ),
        // Every apply logs its request, key included: 16 KiB a put.
        ("ETCD_EXPERIMENTAL_WARNING_APPLY_DURATION", "1ns"),
    ]);
    let key = "k".repeat(16 * 1024);
    for i in 0..320 {
        ok_stdout(&m.etcdctl(&["put", &format!("{key}{i}"), "v"]));
    }
    const MIB: u64 = 1024 * 1024;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let (current, backups) = loop {
        let (current, backups) = log_files(logs.path());
        if backups.len() <= 2 || std::time::Instant::now() > deadline {
            break (current, backups);
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert!(current > 0 && current <= MIB, "{current}");
    assert_eq!(backups.len(), 2, "{backups:?}");
    for (name, len) in &backups {
        // member-2006-01-02T15-04-05.000.log
        let stamp = &name["member-".len()..name.len() - ".log".len()];
        assert_eq!(stamp.len(), 23, "{name}");
        assert_eq!(&stamp[10..11], "T", "{name}");
        // A sibling may finish a line in the file just renamed.
        assert!(*len <= MIB + 256 * 1024, "{name}: {len}");
    }
    let text = std::fs::read_to_string(&file).unwrap_or_default();
    assert!(text.contains("apply request took too long"), "{text:.300}");

    let dir = tempfile::tempdir().expect("tempdir");
    let refused = std::process::Command::new(bin("storaged"))
        .arg("--check-config")
        .arg("--data-dir")
        .arg(dir.path())
        .args(["--enable-log-rotation", "--log-outputs", "stderr"])
        .output()
        .expect("storaged");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(
            "--log-outputs requires a single file path when --log-rotate-config-json is defined"
        ),
        "{stderr}"
    );
}

/// GET `path` on `endpoint` and the whole answer: status line and
/// headers, and the body as bytes (a profile is binary).
fn get_bytes(endpoint: &str, path: &str) -> (String, Vec<u8>) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(endpoint).expect("connect");
    s.set_read_timeout(Some(std::time::Duration::from_secs(60)))
        .expect("timeout");
    write!(s, "GET {path} HTTP/1.0\r\nHost: {endpoint}\r\n\r\n").expect("send");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read");
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a head");
    (
        String::from_utf8_lossy(&raw[..split]).into_owned(),
        raw[split + 4..].to_vec(),
    )
}

/// A gzipped pprof profile, decoded.
fn decode_profile(body: &[u8]) -> common::cpu_profile::pprof_format::Profile {
    use std::io::Read;
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(body)
        .read_to_end(&mut raw)
        .expect("gzip");
    prost::Message::decode(&raw[..]).expect("profile.proto")
}

/// `--enable-pprof`: `/debug/pprof/profile` answers one CPU profile of the
/// member's three daemons in Go's pprof format (etcd 3.4's profile decodes
/// with the same schema), each sample labelled with its daemon, and
/// `/debug/pprof/heap` their sampled allocations; without the flag there
/// is no such path, as in etcd.
#[test]
fn pprof_profiles_the_members_daemons() {
    let m = Member::start_with_env(&[("ETCD_ENABLE_PPROF", "true")]);
    // Work for every daemon while the profile runs (bounded by time and count).
    let endpoint = m.endpoint();
    let load = std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        rt.block_on(async {
            let mut c = etcd_client::Client::connect([endpoint.as_str()], None)
                .await
                .expect("connect");
            let until = std::time::Instant::now() + std::time::Duration::from_secs(3);
            for i in 0..100_000u32 {
                if std::time::Instant::now() > until {
                    break;
                }
                c.put(format!("k{}", i % 1000), vec![b'v'; 256], None)
                    .await
                    .expect("put");
            }
        })
    });
    let (head, body) = get_bytes(&m.endpoint(), "/debug/pprof/profile?seconds=2");
    load.join().expect("load");
    assert!(
        head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
        "{head}"
    );
    let lower = head.to_ascii_lowercase();
    assert!(
        lower.contains("content-type: application/octet-stream"),
        "{head}"
    );
    assert!(
        lower.contains("content-disposition: attachment; filename=\"profile\""),
        "{head}"
    );
    let p = decode_profile(&body);
    let s = |i: i64| p.string_table[i as usize].clone();
    let types: Vec<String> = p.sample_type.iter().map(|t| s(t.r#type)).collect();
    assert_eq!(types, ["samples", "cpu"]);
    let mut daemons: Vec<String> = p
        .sample
        .iter()
        .flat_map(|x| x.label.iter())
        .filter(|l| s(l.key) == "daemon")
        .map(|l| s(l.str))
        .collect();
    daemons.sort();
    daemons.dedup();
    assert_eq!(daemons, ["gatewayd", "raftd", "storaged"]);
    assert!(
        p.function.iter().any(|f| s(f.name).contains("tokio")),
        "stacks are symbolized"
    );
    let (head, body) = get_bytes(&m.endpoint(), "/debug/pprof/heap");
    assert!(head.contains(" 200 "), "{head}");
    let heap = decode_profile(&body);
    let s = |i: i64| heap.string_table[i as usize].clone();
    let types: Vec<String> = heap.sample_type.iter().map(|t| s(t.r#type)).collect();
    assert_eq!(
        types,
        [
            "alloc_objects",
            "alloc_space",
            "inuse_objects",
            "inuse_space"
        ]
    );
    let mut daemons: Vec<String> = heap
        .sample
        .iter()
        .flat_map(|x| x.label.iter())
        .map(|l| s(l.str))
        .collect();
    daemons.sort();
    daemons.dedup();
    assert_eq!(daemons, ["gatewayd", "raftd", "storaged"]);
    let inuse: i64 = heap.sample.iter().map(|x| x.value[3]).sum();
    assert!(inuse > 1 << 20, "live heap {inuse}");
    assert!(
        heap.function.iter().any(|f| s(f.name).contains("fjall")),
        "storaged's allocations are attributed to their code"
    );
    let (head, _) = get_bytes(&m.endpoint(), "/debug/pprof/goroutine");
    assert!(head.contains(" 404 "), "{head}");
    drop(m);
    let plain = Member::start();
    let (head, _) = get_bytes(&plain.endpoint(), "/debug/pprof/profile?seconds=1");
    assert!(head.contains(" 404 "), "{head}");

    let Some(etcd) = reference_etcd(&["--enable-pprof"]) else {
        return;
    };
    let (head, body) = get_bytes(&etcd.endpoint(), "/debug/pprof/profile?seconds=1");
    assert!(head.contains(" 200 "), "{head}");
    let theirs = decode_profile(&body);
    let s = |i: i64| theirs.string_table[i as usize].clone();
    let types: Vec<String> = theirs.sample_type.iter().map(|t| s(t.r#type)).collect();
    assert_eq!(types, ["samples", "cpu"]);
    assert_eq!(
        theirs.period_type.as_ref().map(|t| s(t.unit)).as_deref(),
        Some("nanoseconds")
    );
    drop(etcd);
    let Some(etcd) = reference_etcd(&[]) else {
        return;
    };
    let (head, _) = get_bytes(&etcd.endpoint(), "/debug/pprof/profile?seconds=1");
    assert!(head.contains(" 404 "), "{head}");
}

/// etcd's distributed tracing: with a sampling rate of one in one, each
/// client call is one trace across the member's daemons, exported over
/// OTLP/gRPC (to the test's own collector): gatewayd's server span, with
/// raftd's proposal and storaged's apply (or storaged's read) beneath it,
/// each daemon named in its resource; a caller's sampled `traceparent`
/// makes the call part of the caller's trace, an unsampled one keeps it
/// out.
#[test]
fn distributed_tracing_follows_a_call_across_the_daemons() {
    use triad_tests::otlp::{Collector, Received};
    let collector = Collector::start();
    let address = collector.addr.to_string();
    let m = Member::start_with_env(&[
        ("ETCD_EXPERIMENTAL_ENABLE_DISTRIBUTED_TRACING", "true"),
        ("ETCD_EXPERIMENTAL_DISTRIBUTED_TRACING_ADDRESS", &address),
        (
            "ETCD_EXPERIMENTAL_DISTRIBUTED_TRACING_SERVICE_NAME",
            "triad-test",
        ),
        (
            "ETCD_EXPERIMENTAL_DISTRIBUTED_TRACING_INSTANCE_ID",
            "member-1",
        ),
        (
            "ETCD_EXPERIMENTAL_DISTRIBUTED_TRACING_SAMPLING_RATE",
            "1000000",
        ),
    ]);
    ok_stdout(&m.etcdctl(&["put", "traced", "v"]));
    ok_stdout(&m.etcdctl(&["get", "traced"]));
    let is = |r: &Received, name: &str| r.span.name == name;
    let all = |names: &'static [&'static str]| {
        move |spans: &[Received]| names.iter().all(|n| spans.iter().any(|r| is(r, n)))
    };
    let spans = collector.wait_until(all(&[
        "etcdserverpb.KV/Put",
        "raftd.Propose",
        "storaged.Apply",
    ]));
    let put = spans
        .iter()
        .find(|r| is(r, "etcdserverpb.KV/Put"))
        .unwrap_or_else(|| panic!("no Put span: {spans:#?}"));
    assert_eq!(put.resource["service.name"], "triad-test");
    assert_eq!(put.resource["service.instance.id"], "member-1");
    assert_eq!(put.resource["triad.daemon"], "gatewayd");
    assert!(put.span.parent_span_id.is_empty(), "a new trace");
    for (name, daemon) in [("raftd.Propose", "raftd"), ("storaged.Apply", "storaged")] {
        let child = spans
            .iter()
            .find(|r| is(r, name) && r.span.trace_id == put.span.trace_id)
            .unwrap_or_else(|| panic!("no {name} in the Put's trace: {spans:#?}"));
        assert_eq!(child.span.parent_span_id, put.span.span_id, "{name}");
        assert_eq!(child.resource["triad.daemon"], daemon);
        assert!(child.span.start_time_unix_nano >= put.span.start_time_unix_nano);
        assert!(child.span.end_time_unix_nano <= put.span.end_time_unix_nano);
    }
    let spans = collector.wait_until(all(&["etcdserverpb.KV/Range", "storaged.Range"]));
    let range = spans
        .iter()
        .find(|r| is(r, "etcdserverpb.KV/Range"))
        .unwrap_or_else(|| panic!("no Range span: {spans:#?}"));
    assert!(
        spans.iter().any(|r| is(r, "storaged.Range")
            && r.span.trace_id == range.span.trace_id
            && r.span.parent_span_id == range.span.span_id),
        "{spans:#?}"
    );

    // A caller's own trace context.
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let call = |flags: &str, key: &str| {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        let endpoint = format!("http://{}", m.endpoint());
        let parent = format!("00-{trace}-00f067aa0ba902b7-{flags}");
        rt.block_on(async move {
            use common::proto::etcdserverpb::kv_client::KvClient;
            use common::proto::etcdserverpb::PutRequest;
            let mut kv = KvClient::connect(endpoint).await.expect("connect");
            let mut req = tonic::Request::new(PutRequest {
                key: key.as_bytes().to_vec(),
                value: b"v".to_vec(),
                ..Default::default()
            });
            req.metadata_mut()
                .insert("traceparent", parent.parse().expect("metadata"));
            kv.put(req).await.expect("put");
        });
    };
    call("00", "unsampled");
    call("01", "sampled");
    let ours = |r: &Received| hex(&r.span.trace_id) == trace;
    let spans = collector.wait_until(|spans| {
        ["etcdserverpb.KV/Put", "raftd.Propose", "storaged.Apply"]
            .iter()
            .all(|n| spans.iter().any(|r| ours(r) && is(r, n)))
    });
    let puts: Vec<&Received> = spans
        .iter()
        .filter(|r| ours(r) && is(r, "etcdserverpb.KV/Put"))
        .collect();
    assert_eq!(puts.len(), 1, "only the sampled call is traced: {spans:#?}");
    assert_eq!(hex(&puts[0].span.parent_span_id), "00f067aa0ba902b7");

    // Sampling rate 0 (etcd's default): nothing without a caller's say.
    drop(m);
    let quiet = Collector::start();
    let address = quiet.addr.to_string();
    let m = Member::start_with_env(&[
        ("ETCD_EXPERIMENTAL_ENABLE_DISTRIBUTED_TRACING", "true"),
        ("ETCD_EXPERIMENTAL_DISTRIBUTED_TRACING_ADDRESS", &address),
    ]);
    ok_stdout(&m.etcdctl(&["put", "k", "v"]));
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert!(quiet.spans().is_empty(), "{:#?}", quiet.spans());
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
