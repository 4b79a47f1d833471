//! etcdctl (the Debian etcd-client package) against triad prints what it
//! prints against etcd 3.4.23 for the same commands on a fresh cluster.

use triad_tests::{etcdctl, reference_etcd, Member};

/// Normalize what legitimately differs: member/cluster ids and raft term
/// in JSON output, and etcdctl's own client-side retry log lines (they
/// carry timestamps, client ids and ports).
fn normalize(s: &str) -> String {
    s.lines()
        .filter(|l| !l.starts_with("{\"level\":"))
        .map(|l| {
            let mut l = l.to_string();
            for f in ["cluster_id", "member_id", "raft_term"] {
                let pat = format!("\"{f}\":");
                let mut from = 0;
                while let Some(i) = l[from..].find(&pat).map(|i| i + from) {
                    let start = i + pat.len();
                    let end = l[start..].find([',', '}']).map_or(l.len(), |e| start + e);
                    l.replace_range(start..end, "_");
                    from = start;
                }
            }
            l
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn session(endpoint: &str) -> Vec<String> {
    let cmds: Vec<Vec<&str>> = vec![
        vec!["put", "foo", "bar"],
        vec!["put", "foo2", "baz", "--prev-kv"],
        vec!["put", "foo2", "qux", "--prev-kv"],
        vec!["get", "foo"],
        vec!["get", "foo", "--prefix"],
        vec!["get", "foo", "--prefix", "--keys-only"],
        vec!["get", "foo", "--prefix", "--limit=1", "-w", "json"],
        vec![
            "get",
            "foo",
            "--prefix",
            "--sort-by=VALUE",
            "--order=DESCEND",
        ],
        vec!["get", "foo", "--rev=2"],
        vec!["get", "", "--from-key", "--count-only", "-w", "fields"],
        vec!["get", "missing"],
        vec!["del", "foo2", "--prev-kv"],
        vec!["del", "nothing"],
        vec!["compaction", "3"],
        vec!["compaction", "3"],
        vec!["compaction", "1000"],
        vec!["get", "foo", "--rev=2"],
        vec!["put", "foo", "--ignore-value", "bad"],
        vec!["get", "foo", "-w", "json"],
    ];
    let mut out = Vec::new();
    for c in cmds {
        let o = etcdctl(endpoint, &c);
        out.push(format!(
            "$ etcdctl {}\n{}{}[exit {}]",
            c.join(" "),
            normalize(&String::from_utf8_lossy(&o.stdout)),
            normalize(&String::from_utf8_lossy(&o.stderr)),
            o.status.code().unwrap_or(-1)
        ));
    }
    // An interactive txn: compare, success ops, failure ops.
    let mut txn = std::process::Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoint}"))
        .args(["txn"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    txn.stdin
        .take()
        .unwrap()
        .write_all(b"value(\"foo\") = \"bar\"\n\nput foo new\nget foo\n\nput foo other\n\n")
        .unwrap();
    let o = txn.wait_with_output().unwrap();
    out.push(format!(
        "$ etcdctl txn\n{}",
        String::from_utf8_lossy(&o.stdout)
    ));
    out
}

#[test]
fn etcdctl_output_matches_etcd() {
    let member = Member::start();
    let ours = session(&member.endpoint());
    let Some(etcd) = reference_etcd(&[]) else {
        return;
    };
    let theirs = session(&etcd.endpoint());
    for (a, b) in ours.iter().zip(&theirs) {
        assert_eq!(a, b, "\ntriad:\n{a}\netcd:\n{b}");
    }
}
