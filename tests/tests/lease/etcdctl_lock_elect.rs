//! `etcdctl lock` and `etcdctl elect` (clientv3's recipes over KV, Lease
//! and Watch) work against triad: two concurrent lock holders never
//! overlap, and an observer sees the elected value.

use std::process::{Command, Stdio};
use std::time::Duration;

use triad_tests::Member;

fn etcdctl_cmd(endpoint: &str) -> Command {
    let mut c = Command::new("etcdctl");
    c.env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoint}"));
    c
}

/// Run a timed critical section under `etcdctl lock L`.
fn hold_lock(endpoint: &str) -> std::process::Child {
    etcdctl_cmd(endpoint)
        .args([
            "lock",
            "L",
            "--",
            "sh",
            "-c",
            "date +%s%N; sleep 0.5; date +%s%N",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap()
}

/// The (start, end) in ns the critical section printed.
fn interval(out: std::process::Output) -> (u128, u128) {
    assert!(
        out.status.success(),
        "etcdctl lock failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let nums: Vec<u128> = text.lines().filter_map(|l| l.trim().parse().ok()).collect();
    assert_eq!(nums.len(), 2, "{text}");
    (nums[0], nums[1])
}

#[test]
fn etcdctl_lock_excludes_and_elect_is_observed() {
    let member = Member::start();
    let ep = member.endpoint();
    let a = hold_lock(&ep);
    let b = hold_lock(&ep);
    let (a, b) = (
        interval(a.wait_with_output().unwrap()),
        interval(b.wait_with_output().unwrap()),
    );
    assert!(
        a.1 <= b.0 || b.1 <= a.0,
        "critical sections overlap: {a:?} {b:?}"
    );

    let mut candidate = etcdctl_cmd(&ep)
        .args(["elect", "E", "v1"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let observer = Command::new("timeout")
        .args(["2", "etcdctl"])
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={ep}"))
        .args(["elect", "-l", "E"])
        .output()
        .unwrap();
    let _ = candidate.kill();
    let _ = candidate.wait();
    let seen = String::from_utf8_lossy(&observer.stdout).into_owned();
    let lines: Vec<&str> = seen.lines().collect();
    assert!(
        lines.len() >= 2 && lines[0].starts_with("E/") && lines[1] == "v1",
        "observer saw: {seen:?}"
    );
}
