//! The HTTP/JSON gateway side by side with etcd 3.4.23's: the same POSTs
//! (KV, txn, errors, leases, auth with the Authorization header, /v3beta)
//! give the same JSON once member IDs are masked; a watch streams
//! `{"result": ...}` lines like etcd's; and etcd3gw, a Python client of
//! etcd's gateway, runs the same script against both with the same output
//! (a FailedPrecondition answer is its PreconditionFailedError).

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use triad_tests::{http, http_with_headers, reference_etcd, Member};

/// Mask what differs between two clusters: IDs, terms, lease IDs, tokens.
pub(crate) fn mask(s: &str) -> String {
    let mut out = s.to_string();
    for field in ["cluster_id", "member_id", "raft_term", "ID", "token"] {
        let pat = format!("\"{field}\":\"");
        let mut from = 0;
        while let Some(i) = out[from..].find(&pat) {
            let start = from + i + pat.len();
            let Some(len) = out[start..].find('"') else {
                break;
            };
            out.replace_range(start..start + len, "X");
            from = start + 1;
        }
    }
    out
}

fn script(ep: &str) -> Vec<String> {
    let mut t = Vec::new();
    let mut post = |path: &str, body: &str, auth: Option<&str>| -> String {
        let (code, resp) = match auth {
            None => http(ep, "POST", path, body),
            Some(token) => http_with_headers(ep, "POST", path, body, &[("Authorization", token)]),
        };
        let line = format!("{path} {body} -> {code} {}", mask(&resp));
        t.push(line);
        resp
    };
    post("/v3/kv/put", r#"{"key":"YQ==","value":"YmFy"}"#, None);
    post(
        "/v3/kv/put",
        r#"{"key":"YQ==","value":"YmF6","prev_kv":true}"#,
        None,
    );
    post("/v3/kv/range", r#"{"key":"YQ=="}"#, None);
    post(
        "/v3/kv/range",
        r#"{"key":"YQ==","range_end":"Yg==","count_only":true}"#,
        None,
    );
    post(
        "/v3beta/kv/range",
        r#"{"key":"YQ==","keys_only":true}"#,
        None,
    );
    post("/v3/kv/range", r#"{"key":""}"#, None);
    post("/v3/kv/range", r#"{"key":"YQ==","revision":"100"}"#, None);
    post(
        "/v3/kv/txn",
        r#"{"compare":[{"key":"YQ==","result":"EQUAL","target":"VALUE","value":"YmF6"}],"success":[{"request_put":{"key":"Yg==","value":"MQ=="}},{"request_range":{"key":"YQ=="}}],"failure":[]}"#,
        None,
    );
    post(
        "/v3/kv/txn",
        r#"{"compare":[{"key":"YQ==","result":"GREATER","target":"VERSION","version":"5"}],"failure":[{"request_delete_range":{"key":"Yg==","prev_kv":true}}]}"#,
        None,
    );
    post("/v3/kv/compaction", r#"{"revision":"2"}"#, None);
    post("/v3/kv/range", r#"{"key":"YQ==","revision":"1"}"#, None);
    post(
        "/v3/kv/deleterange",
        r#"{"key":"YQ==","prev_kv":true}"#,
        None,
    );
    post("/v3/lease/grant", r#"{"TTL":"60"}"#, None);
    post("/v3/lease/timetolive", r#"{"ID":"1"}"#, None);
    post("/v3/lease/revoke", r#"{"ID":"1"}"#, None);
    post("/v3/maintenance/alarm", r#"{"action":"GET"}"#, None);
    // Auth over HTTP: the token goes in the Authorization header.
    post(
        "/v3/auth/user/add",
        r#"{"name":"root","password":"pw"}"#,
        None,
    );
    post(
        "/v3/auth/user/grant",
        r#"{"user":"root","role":"root"}"#,
        None,
    );
    post("/v3/auth/enable", "{}", None);
    post("/v3/kv/range", r#"{"key":"YQ=="}"#, None);
    let login = post(
        "/v3/auth/authenticate",
        r#"{"name":"root","password":"pw"}"#,
        None,
    );
    let token = login
        .split("\"token\":\"")
        .nth(1)
        .and_then(|t| t.split('"').next())
        .unwrap_or("none")
        .to_string();
    post(
        "/v3/kv/put",
        r#"{"key":"YQ==","value":"YmFy"}"#,
        Some(&token),
    );
    post("/v3/auth/user/list", "{}", Some(&token));
    post(
        "/v3/kv/put",
        r#"{"key":"YQ==","value":"YmFy"}"#,
        Some("bad.token"),
    );
    post("/v3/auth/disable", "{}", Some(&token));
    t
}

/// Open a watch over HTTP, put a key, and read the first two lines.
fn watch_lines(ep: &str) -> Vec<String> {
    let mut s = TcpStream::connect(ep).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    let body = r#"{"create_request":{"key":"dw==","prev_kv":true}}"#;
    write!(
        s,
        "POST /v3/watch HTTP/1.1\r\nHost: {ep}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .expect("send");
    let mut reader = BufReader::new(s);
    let mut lines = Vec::new();
    let mut put_done = false;
    let mut line = String::new();
    while lines.len() < 2 {
        line.clear();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            break;
        }
        let l = line.trim();
        if l.starts_with('{') {
            lines.push(mask(l));
            if !put_done {
                http(ep, "POST", "/v3/kv/put", r#"{"key":"dw==","value":"MQ=="}"#);
                http(ep, "POST", "/v3/kv/put", r#"{"key":"dw==","value":"Mg=="}"#);
                put_done = true;
            }
        }
    }
    lines
}

const ETCD3GW_SCRIPT: &str = r#"
import sys, threading, time, etcd3gw
c = etcd3gw.client(host='127.0.0.1', port=int(sys.argv[1]))
print(c.put('foo', 'bar'), c.get('foo'))
lease = c.lease(ttl=30)
print(c.put('lk', 'v', lease=lease), lease.keys(), lease.refresh() > 0, lease.revoke())
print(c.get('lk'))
print(c.replace('x', 'a', 'b'), c.create('x', '1'), c.replace('x', '1', '2'), c.get('x'))
events, cancel = c.watch_prefix('w')
def writer():
    time.sleep(0.5); c.put('w1', 'a'); c.delete('w1')
threading.Thread(target=writer).start()
got = []
for e in events:
    got.append((e.get('type', 'PUT'), e['kv']['key'], e['kv'].get('value')))
    if len(got) == 2: break
cancel()
print(got)
l = c.lock('l1', ttl=10)
print(l.acquire(), l.is_acquired(), l.release())
print(c.delete('foo'), c.get_prefix('f'))
try:
    c.post(c.get_url('/auth/user/get'), json={'name': 'nobody', 'unknown': 1})
except Exception as e:
    print(type(e).__name__)
"#;

fn etcd3gw(port: u16) -> Option<String> {
    let out = Command::new("timeout")
        .args(["60", "python3", "-c", ETCD3GW_SCRIPT, &port.to_string()])
        .output()
        .ok()?;
    assert!(
        out.status.success(),
        "etcd3gw script: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn have_etcd3gw() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import etcd3gw"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        triad_tests::prerequisite_missing("etcd3gw (pip) is not installed");
    }
    ok
}

#[test]
fn json_gateway_matches_etcd() {
    let triad = Member::start();
    let ours = script(&triad.endpoint());
    let our_watch = watch_lines(&triad.endpoint());
    let our_client = have_etcd3gw().then(|| etcd3gw(triad.port)).flatten();
    if let Some(out) = &our_client {
        assert!(out.contains("PreconditionFailedError"), "{out}");
    }
    let Some(etcd) = reference_etcd(&[]) else {
        return;
    };
    let theirs = script(&etcd.endpoint());
    for (o, t) in ours.iter().zip(&theirs) {
        assert_eq!(o, t, "triad's gateway differs from etcd's");
    }
    assert_eq!(ours.len(), theirs.len());
    assert_eq!(our_watch, watch_lines(&etcd.endpoint()));
    if let Some(ours) = our_client {
        assert_eq!(Some(ours), etcd3gw(etcd.port), "etcd3gw's view differs");
    }
}
