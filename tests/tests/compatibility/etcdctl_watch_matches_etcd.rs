//! `etcdctl watch` (prefix, --rev, --prev-kv, interactive) prints the same
//! against triad as against etcd 3.4.23 for the same writes.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use triad_tests::{etcdctl, ok_stdout, reference_etcd, Member};

/// Run `etcdctl watch ARGS` for a while (feeding `stdin` for interactive
/// mode) while `writes` happen, and return what it printed.
fn watch_output(endpoint: &str, args: &[&str], stdin: &str, writes: &[&[&str]]) -> String {
    let mut child = Command::new("timeout")
        .args(["4", "etcdctl"])
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoint}"))
        .arg("watch")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("etcdctl");
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.as_bytes()).unwrap();
    std::thread::sleep(Duration::from_millis(1000));
    for w in writes {
        ok_stdout(&etcdctl(endpoint, w));
    }
    drop(input);
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn session(endpoint: &str) -> Vec<String> {
    ok_stdout(&etcdctl(endpoint, &["put", "foo", "0"])); // revision 2
    let writes: &[&[&str]] = &[
        &["put", "foo", "1"],
        &["put", "foo/bar", "2"],
        &["del", "foo"],
        &["put", "zzz", "x"],
    ];
    vec![
        watch_output(endpoint, &["foo", "--prefix"], "", writes),
        watch_output(endpoint, &["foo", "--rev=2", "--prev-kv"], "", &[]),
        watch_output(
            endpoint,
            &["foo", "--prefix", "--rev=3", "-w", "fields"],
            "",
            &[],
        )
        .lines()
        .filter(|l| !l.contains("ClusterID") && !l.contains("MemberID") && !l.contains("RaftTerm"))
        .collect::<Vec<_>>()
        .join("\n"),
        watch_output(
            endpoint,
            &["-i"],
            "watch foo\nwatch zzz\n",
            &[&["put", "foo", "3"], &["put", "zzz", "y"]],
        ),
    ]
}

#[test]
fn etcdctl_watch_matches_etcd() {
    let member = Member::start();
    let ours = session(&member.endpoint());
    assert!(ours[0].contains("foo/bar"), "{ours:?}");
    let Some(etcd) = reference_etcd(&[]) else {
        return;
    };
    let theirs = session(&etcd.endpoint());
    for (a, b) in ours.iter().zip(&theirs) {
        assert_eq!(a, b, "\ntriad:\n{a}\netcd:\n{b}");
    }
}
