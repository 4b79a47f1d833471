//! The JSON gateway as an operator drives it, side by side with etcd
//! 3.4.23: a watch whose request body stays open (create, then a cancel on
//! the same body) sees a put made meanwhile and is cancelled; errors carry
//! grpc-gateway v1's HTTP statuses (FailedPrecondition is 412) and bodies;
//! unknown request fields are ignored; /debug/vars is etcd's expvar
//! document; a gateway call is counted in `grpc_server_*` as a gRPC call.
//!
//! etcd's gateway serves HTTP/1.1 through Go's net/http, which holds a
//! response until the request body ends: etcd handles each request as it
//! arrives but writes the answers when the body closes. triad writes them
//! as they come, so the test checks that triad's arrive while the body is
//! open, and that both give the same answers. Go's server also discards
//! what is left of the body once it writes an answer, racing the gateway's
//! reader for it, so etcd handles a request sent after its first answer
//! (the cancel here) only when its reader wins; triad handles every one.
//! The body's end is a close-send: the watch goes on delivering events
//! after it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use triad_tests::{http, http_with_headers, reference_etcd, Member};

use crate::json_gateway::mask;

/// A POST /v3/watch whose chunked request body stays open until `close`.
struct OpenWatch {
    conn: TcpStream,
    reader: BufReader<TcpStream>,
    /// Response bytes read but not yet split into lines.
    pending: String,
    head_read: bool,
}

impl OpenWatch {
    fn open(ep: &str) -> OpenWatch {
        let mut conn = TcpStream::connect(ep).expect("connect");
        // Each chunk leaves at once, whole (see `open_body_watch`).
        conn.set_nodelay(true).expect("nodelay");
        write!(
            conn,
            "POST /v3/watch HTTP/1.1\r\nHost: {ep}\r\nContent-Type: application/json\r\n\
             Transfer-Encoding: chunked\r\n\r\n"
        )
        .expect("send head");
        let reader = BufReader::new(conn.try_clone().expect("clone"));
        OpenWatch {
            conn,
            reader,
            pending: String::new(),
            head_read: false,
        }
    }

    /// One request object, as one chunk of the body.
    fn send(&mut self, object: &str) {
        let chunk = format!("{:x}\r\n{object}\r\n", object.len());
        self.conn.write_all(chunk.as_bytes()).expect("send chunk");
    }

    /// The body's last chunk: the client's close-send.
    fn close(&mut self) {
        self.conn.write_all(b"0\r\n\r\n").expect("send last chunk");
    }

    /// The next answer line, waiting at most `wait`.
    fn line(&mut self, wait: Duration) -> Option<String> {
        let deadline = Instant::now() + wait;
        loop {
            if let Some(i) = self.pending.find('\n') {
                let line: String = self.pending.drain(..=i).collect();
                return Some(mask(line.trim()));
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            self.conn
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .ok();
            if !self.head_read {
                let mut head = String::new();
                while self.reader.read_line(&mut head).ok()? > 0 && !head.ends_with("\r\n\r\n") {}
                assert!(head.starts_with("HTTP/1.1 200"), "watch answered {head}");
                self.head_read = true;
                continue;
            }
            // One chunk of the response: its size line, data, CRLF.
            let mut size = String::new();
            if self.reader.read_line(&mut size).ok()? == 0 {
                return None;
            }
            let n = usize::from_str_radix(size.trim(), 16).ok()?;
            let mut data = vec![0; n + 2];
            self.reader.read_exact(&mut data).ok()?;
            self.pending.push_str(&String::from_utf8_lossy(&data[..n]));
        }
    }
}

fn put(ep: &str, key: &str, value: &str) {
    let body = format!(r#"{{"key":"{key}","value":"{value}"}}"#);
    assert_eq!(http(ep, "POST", "/v3/kv/put", &body).0, 200);
}

/// Two watchers created, a put, the first cancelled, a put, all while
/// the body is open; then the body closed (the client's close-send) and a
/// put for the second, which stays. Returns the answers and whether the
/// first put's event came before the close. `first_wait` bounds the wait
/// for the first answer while the body is open (etcd sends none).
fn open_body_watch(ep: &str, first_wait: Duration) -> (Vec<String>, bool) {
    let mut w = OpenWatch::open(ep);
    // Both creates in one chunk, so that etcd reads both before its first
    // answer (after it, Go's server may discard the rest of the body).
    w.send(r#"{"create_request":{"key":"b3Blbg=="}} {"create_request":{"key":"bGF0ZXI="}}"#);
    let mut lines = Vec::new();
    let early = w.line(first_wait);
    let streamed = early.is_some();
    lines.extend(early);
    if streamed {
        lines.extend(w.line(Duration::from_secs(10)));
    }
    put(ep, "b3Blbg==", "MQ==");
    if streamed {
        lines.extend(w.line(Duration::from_secs(10)));
    }
    let event_before_close = lines.iter().any(|l| l.contains(r#""events""#));
    w.send(r#"{"cancel_request":{"watch_id":"0"}}"#);
    if streamed {
        lines.extend(w.line(Duration::from_secs(10)));
    }
    // Time for the cancel to be handled before the next put.
    std::thread::sleep(Duration::from_millis(500));
    put(ep, "b3Blbg==", "Mg==");
    w.close();
    // What etcd held until the close (nothing more for triad).
    while let Some(l) = w.line(Duration::from_secs(2)) {
        lines.push(l);
        assert!(lines.len() < 10, "unexpected answers: {lines:?}");
    }
    put(ep, "bGF0ZXI=", "Mw==");
    lines.extend(w.line(Duration::from_secs(10)));
    (lines, event_before_close)
}

#[test]
fn open_body_watch_matches_etcd() {
    let triad = Member::start();
    let (ours, streamed) = open_body_watch(&triad.endpoint(), Duration::from_secs(10));
    assert!(streamed, "triad held the watch's answers: {ours:?}");
    let expected = [
        r#""created":true"#,
        r#""watch_id":"1","created":true"#,
        r#""value":"MQ==""#,
        r#""canceled":true"#,
        r#""watch_id":"1","events":[{"kv":{"key":"bGF0ZXI=""#,
    ];
    assert_eq!(ours.len(), expected.len(), "{ours:?}");
    for (line, want) in ours.iter().zip(expected) {
        assert!(line.contains(want), "{want} not in {line}");
    }
    let Some(etcd) = reference_etcd(&[]) else {
        return;
    };
    // etcd writes nothing before the body closes: wait a little only.
    let (theirs, _) = open_body_watch(&etcd.endpoint(), Duration::from_secs(2));
    // The creates, the first put's event, and after the close the second
    // watcher's event: the same on both.
    assert!(theirs.len() >= 4, "etcd's answers: {theirs:?}");
    assert_eq!(ours[..3], theirs[..3], "triad's watch differs from etcd's");
    assert_eq!(ours.last(), theirs.last(), "after the close-send");
    // The cancel, unless etcd's server discarded it with the rest of the
    // body (the race described above): then the first watcher saw the
    // second put instead.
    let middle = &theirs[3..theirs.len() - 1];
    assert!(
        middle == &ours[3..4] || (middle.len() == 1 && middle[0].contains(r#""value":"Mg==""#)),
        "etcd's answers: {theirs:?}"
    );
}

/// (status, masked body) of each request; `loose` ones keep only the
/// status and the gRPC code (Go's and serde's JSON errors differ).
fn error_script(ep: &str) -> Vec<String> {
    let mut t = Vec::new();
    let mut post = |path: &str, body: &str, loose: bool| -> String {
        let (code, resp) = http(ep, "POST", path, body);
        let shown = if loose {
            resp.split("\"code\":").nth(1).unwrap_or("").to_string()
        } else {
            mask(&resp)
        };
        t.push(format!("{path} {body} -> {code} {shown}"));
        resp
    };
    // FailedPrecondition is 412 (etcd3gw's PreconditionFailedError).
    post("/v3/auth/user/get", r#"{"name":"nobody"}"#, false);
    post("/v3/auth/role/get", r#"{"role":"nobody"}"#, false);
    post(
        "/v3/auth/authenticate",
        r#"{"name":"a","password":"b"}"#,
        false,
    );
    post("/v3/lease/revoke", r#"{"ID":"7"}"#, false);
    post("/v3/kv/range", r#"{"key":"YQ==","revision":"100"}"#, false);
    post("/v3/auth/user/add", r#"{"name":""}"#, false);
    // Unknown fields are ignored, at any depth; what follows the object
    // is not read.
    post(
        "/v3/kv/put",
        r#"{"key":"YQ==","value":"Yg==","bogus":1,"more":{"x":[1]}}"#,
        false,
    );
    post(
        "/v3/kv/txn",
        r#"{"compare":[],"success":[{"request_range":{"key":"YQ==","extra":true}}]}"#,
        false,
    );
    post(
        "/v3/kv/range",
        r#"{"key":"YQ==","keysOnly":true} junk"#,
        false,
    );
    post("/v3/kv/range", "junk", true);
    // A stream's malformed first request is Unknown (500).
    post("/v3/watch", "junk", true);
    post("/v3/lease/keepalive", "junk", true);
    // ResourceExhausted is 429.
    let header = post("/v3/kv/range", r#"{"key":"YQ=="}"#, false);
    let member = header
        .split("\"member_id\":\"")
        .nth(1)
        .and_then(|t| t.split('"').next())
        .unwrap_or("0")
        .to_string();
    let alarm = |action: &str| {
        format!(r#"{{"action":"{action}","memberID":"{member}","alarm":"NOSPACE"}}"#)
    };
    let (code, _) = http(ep, "POST", "/v3/maintenance/alarm", &alarm("ACTIVATE"));
    assert_eq!(code, 200);
    post("/v3/kv/put", r#"{"key":"YQ==","value":"Yg=="}"#, false);
    let (code, _) = http(ep, "POST", "/v3/maintenance/alarm", &alarm("DEACTIVATE"));
    assert_eq!(code, 200);
    // A stream's error: grpc-gateway's stream error object, its status.
    for (path, body) in [
        ("/v3/auth/user/add", r#"{"name":"root","password":"pw"}"#),
        ("/v3/auth/user/grant", r#"{"user":"root","role":"root"}"#),
        ("/v3/auth/enable", "{}"),
    ] {
        assert_eq!(http(ep, "POST", path, body).0, 200, "{path}");
    }
    post("/v3/maintenance/snapshot", "{}", false);
    post("/v3/kv/put", r#"{"key":"YQ==","value":"Yg=="}"#, false);
    let (code, resp) = http_with_headers(
        ep,
        "POST",
        "/v3/kv/put",
        r#"{"key":"YQ==","value":"Yg=="}"#,
        &[("Authorization", "bad.token")],
    );
    t.push(format!("bad token -> {code} {}", mask(&resp)));
    t
}

#[test]
fn gateway_errors_match_etcd() {
    let triad = Member::start();
    let ours = error_script(&triad.endpoint());
    assert!(
        ours[0].contains(" -> 412 "),
        "FailedPrecondition: {}",
        ours[0]
    );
    let Some(etcd) = reference_etcd(&[]) else {
        return;
    };
    let theirs = error_script(&etcd.endpoint());
    for (o, t) in ours.iter().zip(&theirs) {
        assert_eq!(o, t, "triad's gateway differs from etcd's");
    }
    assert_eq!(ours.len(), theirs.len());
}

/// /debug/vars, parsed, with its content type.
fn debug_vars(ep: &str) -> serde_json::Map<String, serde_json::Value> {
    let (code, body) = http(ep, "GET", "/debug/vars", "");
    assert_eq!(code, 200, "{body}");
    match serde_json::from_str(&body) {
        Ok(serde_json::Value::Object(vars)) => vars,
        other => panic!("/debug/vars is not a JSON object: {other:?}\n{body}"),
    }
}

/// A `grpc_server_*` counter's value for a call, whatever the label order.
fn grpc_count(ep: &str, metric: &str, labels: &[&str]) -> u64 {
    let (code, text) = http(ep, "GET", "/metrics", "");
    assert_eq!(code, 200);
    text.lines()
        .filter(|l| l.starts_with(&format!("{metric}{{")))
        .filter(|l| labels.iter().all(|want| l.contains(want)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// How much a gateway Put (OK), UserGet (FailedPrecondition), Watch
/// (started), a watch with a malformed body (Canceled) and a keepalive
/// with one (Unavailable) move the gRPC counters.
fn counted_calls(ep: &str, expect: Option<&[u64]>) -> Vec<u64> {
    let put = [
        r#"grpc_service="etcdserverpb.KV""#,
        r#"grpc_method="Put""#,
        r#"grpc_type="unary""#,
        r#"grpc_code="OK""#,
    ];
    let user_get = [
        r#"grpc_method="UserGet""#,
        r#"grpc_code="FailedPrecondition""#,
    ];
    let watch = [
        r#"grpc_service="etcdserverpb.Watch""#,
        r#"grpc_method="Watch""#,
        r#"grpc_type="bidi_stream""#,
    ];
    let watch_canceled = [r#"grpc_method="Watch""#, r#"grpc_code="Canceled""#];
    let keepalive_gone = [
        r#"grpc_method="LeaseKeepAlive""#,
        r#"grpc_code="Unavailable""#,
    ];
    let counts = || {
        [
            grpc_count(ep, "grpc_server_handled_total", &put),
            grpc_count(ep, "grpc_server_handled_total", &user_get),
            grpc_count(ep, "grpc_server_started_total", &watch),
            grpc_count(ep, "grpc_server_handled_total", &watch_canceled),
            grpc_count(ep, "grpc_server_handled_total", &keepalive_gone),
        ]
    };
    let before = counts();
    put_key(ep);
    http(ep, "POST", "/v3/auth/user/get", r#"{"name":"nobody"}"#);
    let mut w = OpenWatch::open(ep);
    w.send(r#"{"create_request":{"key":"YQ=="}}"#);
    w.close();
    assert!(w.line(Duration::from_secs(10)).is_some(), "watch created");
    assert_eq!(http(ep, "POST", "/v3/watch", "junk").0, 500);
    assert_eq!(http(ep, "POST", "/v3/lease/keepalive", "junk").0, 500);
    // A cancelled call is counted once its handler has returned, which
    // under load can take a while: wait until the counts reach `expect`
    // (when given), else until every call shows and two reads agree.
    let deltas =
        |after: &[u64; 5]| -> Vec<u64> { before.iter().zip(after).map(|(b, a)| a - b).collect() };
    let mut after = counts();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        if expect.is_some_and(|e| deltas(&after) == e) {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
        let again = counts();
        // Every call here is counted at least once.
        let settled = expect.is_none() && again == after && deltas(&again).iter().all(|d| *d > 0);
        after = again;
        if settled || std::time::Instant::now() > deadline {
            break;
        }
    }
    deltas(&after)
}

fn put_key(ep: &str) {
    put(ep, "YQ==", "Yg==");
}

#[test]
fn debug_vars_and_call_counts_match_etcd() {
    let triad = Member::start();
    let ep = triad.endpoint();
    let ours = debug_vars(&ep);
    let ours_counted = counted_calls(&ep, None);
    assert_eq!(
        ours_counted,
        [1, 1, 2, 1, 1],
        "gateway calls counted as gRPC calls"
    );
    let member = http(&ep, "POST", "/v3/kv/range", r#"{"key":"YQ=="}"#).1;
    let member: u64 = member
        .split("\"member_id\":\"")
        .nth(1)
        .and_then(|t| t.split('"').next())
        .and_then(|id| id.parse().ok())
        .expect("member_id");
    let raft = &ours["raft.status"];
    assert_eq!(raft["id"], format!("{member:x}"), "{raft}");
    assert_eq!(raft["lead"], format!("{member:x}"), "{raft}");
    assert_eq!(raft["raftState"], "StateLeader", "{raft}");
    assert!(raft["applied"].as_u64() > Some(0), "{raft}");
    assert!(ours["memstats"]["Sys"].as_u64() > Some(0), "{ours:?}");
    assert!(
        ours["cmdline"][0]
            .as_str()
            .is_some_and(|c| c.ends_with("gatewayd")),
        "{ours:?}"
    );
    for daemon in ["gatewayd", "raftd", "storaged"] {
        assert!(
            ours["triad.daemons"][daemon]["rss_bytes"].as_u64() > Some(0),
            "{daemon}: {ours:?}"
        );
    }
    let Some(etcd) = reference_etcd(&[]) else {
        return;
    };
    let theirs = debug_vars(&etcd.endpoint());
    for var in [
        "cmdline",
        "file_descriptor_limit",
        "memstats",
        "raft.status",
    ] {
        assert!(theirs.contains_key(var), "etcd's /debug/vars has {var}");
        assert!(ours.contains_key(var), "triad's /debug/vars lacks {var}");
    }
    assert!(ours["file_descriptor_limit"].as_u64() > Some(0), "{ours:?}");
    let keys = |v: &serde_json::Value| -> Vec<String> {
        v.as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default()
    };
    assert_eq!(keys(&ours["raft.status"]), keys(&theirs["raft.status"]));
    // etcd's counts are awaited until they reach triad's (or 15 s pass).
    // Whether etcd counts a keepalive whose first request was malformed
    // depends on a race in its gateway (seen 0 and 1); triad counts it.
    let theirs_counted = counted_calls(&etcd.endpoint(), Some(&ours_counted));
    assert_eq!(theirs_counted[..4], ours_counted[..4]);
    assert!(theirs_counted[4] <= 1, "{theirs_counted:?}");
    assert_eq!(ours_counted[4], 1, "{ours_counted:?}");
}
