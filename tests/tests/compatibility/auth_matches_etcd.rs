//! Auth side by side with etcd 3.4.23: one etcdctl script (users, roles,
//! permissions on keys, ranges, prefixes and from-key, enable/disable, root
//! rules, what a non-root user may and may not do on KV, txn, lease, watch,
//! lock, election, maintenance and membership) and one raw-gRPC script
//! (auth revisions, headers, token errors, the watch refusal) must give the
//! same output on both. Token lifetimes and kinds are checked on triad.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use common::proto::etcdserverpb::auth_client::AuthClient;
use common::proto::etcdserverpb::kv_client::KvClient;
use common::proto::etcdserverpb::lease_client::LeaseClient;
use common::proto::etcdserverpb::watch_client::WatchClient;
use common::proto::etcdserverpb::watch_request::RequestUnion;
use common::proto::etcdserverpb::*;
use tonic::Request;
use triad_tests::{grpc_channel, login, reference_etcd, with_token, Member};

/// etcdctl's output (client-side JSON logs dropped) and exit code.
fn ctl(endpoint: &str, args: &[&str], stdin: &str) -> String {
    let mut child = Command::new("timeout")
        .args(["20", "etcdctl"])
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoint}"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("etcdctl");
    if let Some(mut i) = child.stdin.take() {
        i.write_all(stdin.as_bytes()).expect("stdin");
    }
    let out: Output = child.wait_with_output().expect("etcdctl output");
    let err = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| !l.starts_with('{'))
        .collect::<Vec<_>>()
        .join("\n");
    format!(
        "$ {}\n{}{}\n[rc={}]",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        err,
        out.status.code().unwrap_or(-1)
    )
    .replace(endpoint, "<endpoint>")
}

const BOB: &str = "--user=bob:bobpw";
const ROOT: &str = "--user=root:rootpw";

fn etcdctl_script(ep: &str) -> Vec<String> {
    let mut t = Vec::new();
    let mut run = |args: &[&str]| t.push(ctl(ep, args, ""));
    for args in [
        &["user", "add", "root:rootpw"][..],
        &["user", "add", "root:x"],
        &["user", "add", "alice", "--no-password"],
        &["user", "add", "bob:bobpw"],
        &["user", "get", "alice"],
        &["user", "get", "nobody"],
        &["user", "list"],
        &["role", "add", "reader"],
        &["role", "add", "reader"],
        &["role", "add", ""],
        &["role", "get", "root"],
        &["role", "grant-permission", "reader", "read", "foo"],
        &[
            "role",
            "grant-permission",
            "reader",
            "--prefix",
            "readwrite",
            "bar/",
        ],
        &["role", "grant-permission", "reader", "write", "baz", "qux"],
        &[
            "role",
            "grant-permission",
            "reader",
            "read",
            "--from-key",
            "zz",
        ],
        &["role", "get", "reader"],
        &["role", "grant-permission", "reader", "write", "foo"],
        &["role", "get", "reader"],
        &["role", "revoke-permission", "reader", "nothere"],
        &["role", "revoke-permission", "reader", "foo"],
        &["user", "grant-role", "bob", "reader"],
        &["user", "grant-role", "bob", "reader"],
        &["user", "grant-role", "bob", "nope"],
        &["user", "get", "bob"],
        &["user", "revoke-role", "bob", "nope"],
        &["auth", "enable"],
        &["role", "list"],
        &["get", "foo"],
        &["--user=bob:wrong", "get", "foo"],
        &[BOB, "get", "foo"],
        &[BOB, "put", "foo", "2"],
        &[BOB, "put", "bar/y", "2"],
        &[BOB, "put", "bar/y", "3", "--prev-kv"],
        &[BOB, "put", "baz", "3"],
        &[BOB, "put", "baz", "4", "--prev-kv"],
        &[BOB, "get", "baz"],
        &[BOB, "get", "bar/", "--prefix"],
        &[BOB, "get", "", "--from-key"],
        &[BOB, "get", "zz", "--from-key"],
        &[BOB, "get", "zzz", "zzzz"],
        &[BOB, "get", "b", "--prefix"],
        &[BOB, "del", "bar/y"],
        &[BOB, "del", "bar/", "--prefix", "--prev-kv"],
        &[BOB, "del", "baz", "--prev-kv"],
        &[BOB, "del", "baz"],
    ] {
        run(args);
    }
    for txn in [
        "value(\"foo\") = \"1\"\n\nput bar/z 1\n\nput zzz 1\n\n",
        "value(\"bar/z\") = \"1\"\n\nput bar/z 1\n\nput bar/q 1\n\n",
        "value(\"bar/z\") = \"1\"\n\nget foo\n\nput bar/q 1\n\n",
        "value(\"zz\") = \"1\"\n\nget bar/q\n\ndel bar/z\n\n",
    ] {
        t.push(ctl(ep, &[BOB, "txn"], txn));
    }
    // A lease that holds a key bob may not write: bob may neither attach
    // to it nor revoke it.
    let granted = ctl(ep, &[ROOT, "lease", "grant", "100"], "");
    let lease = granted
        .lines()
        .find_map(|l| l.strip_prefix("lease "))
        .and_then(|l| l.split_whitespace().next())
        .expect("lease id in etcdctl's output")
        .to_string();
    t.push(granted.replace(&lease, "<lease>"));
    let mut run = |args: &[&str]| t.push(ctl(ep, args, "").replace(&lease, "<lease>"));
    for args in [
        &[ROOT, "put", "qux1", "v", "--lease", &lease][..],
        &[BOB, "put", "bar/l", "v", "--lease", &lease],
        &[BOB, "lease", "revoke", &lease],
        &[ROOT, "put", "bar/m", "v", "--lease", &lease],
        &[ROOT, "lease", "revoke", &lease],
        &[BOB, "compaction", "3"],
        &[BOB, "endpoint", "hashkv"],
        &["endpoint", "hashkv"],
        &[BOB, "endpoint", "hash"],
        &[BOB, "defrag"],
        &[BOB, "alarm", "list"],
        &[BOB, "alarm", "disarm"],
        &[
            BOB,
            "member",
            "add",
            "x",
            "--peer-urls",
            "http://127.0.0.1:9",
        ],
        &["member", "add", "x", "--peer-urls", "http://127.0.0.1:9"],
        &[BOB, "user", "list"],
        &[BOB, "role", "list"],
        &[BOB, "role", "get", "reader"],
        &[BOB, "role", "get", "root"],
        &[BOB, "user", "get", "bob"],
        &[BOB, "user", "get", "root"],
        &[BOB, "user", "add", "mallory:x"],
        &[BOB, "watch", "foo"],
        &[BOB, "watch", "bar/", "zzzz"],
        &[BOB, "lock", "mylock"],
        &[BOB, "elect", "e1", "p"],
        &[ROOT, "user", "revoke-role", "root", "root"],
        &[ROOT, "user", "delete", "root"],
        &[ROOT, "role", "delete", "root"],
    ] {
        run(args);
    }
    // Anyone may grant a lease (its ID is random on both).
    let granted = ctl(ep, &[BOB, "lease", "grant", "100"], "");
    let id = granted
        .lines()
        .find_map(|l| l.strip_prefix("lease "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or("-")
        .to_string();
    t.push(granted.replace(&id, "<lease>"));
    t.push(ctl(
        ep,
        &[ROOT, "user", "passwd", "bob", "--interactive=false"],
        "pw2\n",
    ));
    let mut run = |args: &[&str]| t.push(ctl(ep, args, ""));
    for args in [
        &[BOB, "get", "bar/q"][..],
        &["--user=bob:pw2", "get", "bar/", "--prefix"],
        &[ROOT, "role", "delete", "reader"],
        &[ROOT, "user", "get", "bob"],
        &["--user=bob:pw2", "get", "bar/q"],
        &[ROOT, "user", "delete", "alice"],
        &[ROOT, "user", "delete", "alice"],
        &[ROOT, "user", "list"],
        &[ROOT, "role", "list"],
        &[ROOT, "auth", "disable"],
        &["--user=bob:wrong", "get", "bar/q"],
        &["auth", "disable"],
        &["user", "list"],
    ] {
        run(args);
    }
    t
}

#[test]
fn etcdctl_auth_transcript_matches_etcd() {
    let triad = Member::start();
    let ours = etcdctl_script(&triad.endpoint());
    assert!(
        ours.iter()
            .any(|l| l.contains("etcdserver: permission denied")),
        "{ours:#?}"
    );
    let Some(etcd) = reference_etcd(&[]) else {
        return;
    };
    let theirs = etcdctl_script(&etcd.endpoint());
    for (o, t) in ours.iter().zip(&theirs) {
        assert_eq!(o, t, "triad differs from etcd");
    }
    assert_eq!(ours.len(), theirs.len());
}

/// A call's result as text: the response (headers masked to their
/// revision) or the status code and message.
fn shown<T: std::fmt::Debug>(r: Result<tonic::Response<T>, tonic::Status>) -> String {
    match r {
        Ok(resp) => {
            let s = format!("{:?}", resp.into_inner());
            mask_header(&s)
        }
        Err(s) => format!("{:?}: {}", s.code(), s.message()),
    }
}

/// Keep a header's revision, drop its member-specific fields.
fn mask_header(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find("ResponseHeader {") {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        let end = tail.find('}').map_or(tail.len(), |e| e + 1);
        let rev = tail
            .split("revision: ")
            .nth(1)
            .and_then(|r| r.split(',').next())
            .unwrap_or("?");
        out.push_str(&format!("Header(rev {rev})"));
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

async fn api_script(ep: &str) -> Vec<String> {
    let ch = grpc_channel(ep).await;
    let mut auth = AuthClient::new(ch.clone());
    let mut kv = KvClient::new(ch.clone());
    let mut lease = LeaseClient::new(ch.clone());
    let mut t = Vec::new();
    let root_login = AuthenticateRequest {
        name: "root".into(),
        password: "pw".into(),
    };
    t.push(shown(auth.authenticate(root_login.clone()).await));
    t.push(shown(auth.auth_enable(AuthEnableRequest {}).await));
    let add = |name: &str| AuthUserAddRequest {
        name: name.into(),
        password: "pw".into(),
        ..Default::default()
    };
    t.push(shown(auth.user_add(add("root")).await));
    t.push(shown(auth.auth_enable(AuthEnableRequest {}).await));
    t.push(shown(
        auth.user_grant_role(AuthUserGrantRoleRequest {
            user: "root".into(),
            role: "root".into(),
        })
        .await,
    ));
    t.push(shown(auth.role_list(AuthRoleListRequest {}).await));
    t.push(shown(auth.auth_enable(AuthEnableRequest {}).await));
    t.push(shown(auth.auth_enable(AuthEnableRequest {}).await));
    t.push(shown(auth.user_add(add("carol")).await));
    let root = login(&ch, "root", "pw").await;
    let bad = AuthenticateRequest {
        name: "root".into(),
        password: "nope".into(),
    };
    t.push(shown(auth.authenticate(bad).await));
    let nobody = AuthenticateRequest {
        name: "nobody".into(),
        password: "pw".into(),
    };
    t.push(shown(auth.authenticate(nobody).await));
    t.push(shown(auth.user_add(with_token(add("carol"), &root)).await));
    t.push(shown(auth.user_add(with_token(add(""), &root)).await));
    t.push(shown(
        auth.user_get(with_token(
            AuthUserGetRequest {
                name: "carol".into(),
            },
            &root,
        ))
        .await,
    ));
    t.push(shown(
        auth.role_add(with_token(
            AuthRoleAddRequest {
                name: "cats".into(),
            },
            &root,
        ))
        .await,
    ));
    let grant = |perm_type, key: &str, range_end: &[u8]| AuthRoleGrantPermissionRequest {
        name: "cats".into(),
        perm: Some(common::proto::authpb::Permission {
            perm_type,
            key: key.into(),
            range_end: range_end.to_vec(),
        }),
    };
    for g in [
        grant(2, "c/", b"c0"),
        grant(0, "d", b""),
        grant(1, "d", b""),
        grant(0, "a", b"b"),
    ] {
        t.push(shown(
            auth.role_grant_permission(with_token(g, &root)).await,
        ));
    }
    t.push(shown(
        auth.role_get(with_token(
            AuthRoleGetRequest {
                role: "cats".into(),
            },
            &root,
        ))
        .await,
    ));
    t.push(shown(
        auth.user_grant_role(with_token(
            AuthUserGrantRoleRequest {
                user: "carol".into(),
                role: "cats".into(),
            },
            &root,
        ))
        .await,
    ));
    let carol = login(&ch, "carol", "pw").await;
    let put = |key: &str| PutRequest {
        key: key.into(),
        value: b"v".to_vec(),
        ..Default::default()
    };
    let range = |key: &str, end: &[u8]| RangeRequest {
        key: key.into(),
        range_end: end.to_vec(),
        ..Default::default()
    };
    t.push(shown(kv.put(with_token(put("c/1"), &carol)).await));
    t.push(shown(kv.put(with_token(put("d"), &carol)).await));
    t.push(shown(kv.put(with_token(put("a"), &carol)).await));
    t.push(shown(kv.range(with_token(range("a", b"b"), &carol)).await));
    t.push(shown(kv.range(with_token(range("a", b"c"), &carol)).await));
    t.push(shown(
        kv.range(with_token(range("c/", b"c0"), &carol)).await,
    ));
    t.push(shown(kv.put(with_token(put("c/1"), "bogus.token")).await));
    t.push(shown(kv.put(Request::new(put("c/1"))).await));
    t.push(shown(
        kv.compact(Request::new(CompactionRequest {
            revision: 2,
            physical: false,
        }))
        .await,
    ));
    t.push(shown(
        lease
            .lease_grant(Request::new(LeaseGrantRequest { ttl: 60, id: 7 }))
            .await,
    ));
    t.push(shown(
        lease
            .lease_revoke(with_token(LeaseRevokeRequest { id: 7 }, &carol))
            .await,
    ));
    // Simple tokens are judged against the store as it is now.
    t.push(shown(
        auth.user_revoke_role(with_token(
            AuthUserRevokeRoleRequest {
                name: "carol".into(),
                role: "cats".into(),
            },
            &root,
        ))
        .await,
    ));
    t.push(shown(kv.put(with_token(put("c/1"), &carol)).await));
    t.push(shown(
        auth.user_delete(with_token(
            AuthUserDeleteRequest {
                name: "carol".into(),
            },
            &root,
        ))
        .await,
    ));
    t.push(shown(kv.put(with_token(put("c/1"), &carol)).await));
    // A watch its creator may not read is refused in the create response.
    let mut watch = WatchClient::new(ch.clone());
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let create = |key: &str, watch_id| WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
            key: key.into(),
            watch_id,
            ..Default::default()
        })),
    };
    tx.send(create("c/1", 0)).await.expect("send");
    tx.send(create("c/1", 5)).await.expect("send");
    let mut stream = watch
        .watch(with_token(
            tokio_stream::wrappers::ReceiverStream::new(rx),
            "bogus.token",
        ))
        .await
        .expect("watch")
        .into_inner();
    for _ in 0..2 {
        let r = tokio::time::timeout(std::time::Duration::from_secs(10), stream.message())
            .await
            .expect("watch answer in time");
        t.push(shown(r.map(tonic::Response::new).and_then(|m| {
            m.into_inner()
                .map(tonic::Response::new)
                .ok_or_else(|| tonic::Status::unknown("stream ended"))
        })));
    }
    t.push(shown(
        auth.auth_disable(with_token(AuthDisableRequest {}, &root))
            .await,
    ));
    t.push(shown(kv.put(with_token(put("c/1"), "bogus.token")).await));
    t.push(shown(auth.authenticate(root_login).await));
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_api_matches_etcd() {
    let triad = Member::start();
    let ours = api_script(&triad.endpoint()).await;
    let Some(etcd) = reference_etcd(&[]) else {
        return;
    };
    let theirs = api_script(&etcd.endpoint()).await;
    for (i, (o, t)) in ours.iter().zip(&theirs).enumerate() {
        assert_eq!(o, t, "step {i}: triad differs from etcd");
    }
    assert_eq!(ours.len(), theirs.len());
}
