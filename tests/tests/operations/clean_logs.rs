//! A normal start logs plainly and calmly: the daemons' log files (stderr
//! is no terminal there) hold no ANSI colour escapes, and neither a single
//! member started by `triad up` nor a three-member cluster logs a warning
//! or an error while starting and serving its first writes. A member that
//! stays down is still warned of, once, as etcd's prober does. etcd's
//! `--log-outputs` sends the lines to a file instead of stderr. Under
//! systemd every line carries its journal priority.

use std::path::Path;
use std::time::{Duration, Instant};

use triad_tests::cluster::Cluster;
use triad_tests::{bin, wait_exit, Member, DAEMONS};

/// The lines of a member's logs that a normal start must not have.
fn complaints(data_dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for d in DAEMONS {
        let path = data_dir.join("logs").join(format!("{d}.log"));
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(!text.is_empty(), "{d} logged nothing");
        for line in text.lines() {
            if line.contains('\u{1b}') || line.contains(" WARN ") || line.contains(" ERROR ") {
                out.push(format!("{d}: {line}"));
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_member_starts_without_warnings_or_colour() {
    let member = Member::start();
    let mut c = member.client().await;
    c.put("k", "v", None).await.expect("put");
    assert_eq!(c.get("k", None).await.expect("get").kvs().len(), 1);
    let bad = complaints(member.data_dir());
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_member_cluster_starts_without_warnings_or_colour() {
    let cluster = Cluster::start(3);
    for i in 0..3 {
        let mut c = cluster.client(i).await;
        c.put(format!("k{i}"), "v", None).await.expect("put");
    }
    for (i, m) in cluster.members.iter().enumerate() {
        let bad = complaints(&m.dir);
        assert!(bad.is_empty(), "member {i}:\n{}", bad.join("\n"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_stays_down_is_warned_of_once() {
    let cluster = Cluster::start(3);
    let raftd_log = cluster.members[0].dir.join("logs").join("raftd.log");
    let warned = |text: &str| text.matches("prober detected unhealthy status").count();
    let held = cluster.hold_down(&[2]);
    // Probes run every 5 s; the second failed one warns.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut text = String::new();
    while Instant::now() < deadline && warned(&text) == 0 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        text = std::fs::read_to_string(&raftd_log).unwrap_or_default();
    }
    assert_eq!(warned(&text), 1, "m0's raftd warns of m2:\n{text}");
    tokio::time::sleep(Duration::from_secs(11)).await;
    cluster.release(held);
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline && !text.contains("peer is reachable again") {
        tokio::time::sleep(Duration::from_millis(200)).await;
        text = std::fs::read_to_string(&raftd_log).unwrap_or_default();
    }
    assert!(text.contains("peer is reachable again"), "{text}");
    assert_eq!(warned(&text), 1, "one warning for one outage:\n{text}");
}

#[test]
fn log_outputs_sends_the_lines_to_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("storaged.log");
    let mut child = std::process::Command::new(bin("storaged"))
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg(format!("--log-outputs={}", log.display()))
        .env_remove("NOTIFY_SOCKET")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let serving = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("storaged serving")
    };
    while Instant::now() < deadline && !serving() {
        std::thread::sleep(Duration::from_millis(50));
    }
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    if !wait_exit(&mut child, Duration::from_secs(20)) {
        let _ = child.kill();
    }
    let out = child.wait_with_output().unwrap();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(text.contains("storaged serving"), "{text}");
    assert!(out.status.success(), "{text}");
    assert!(text.contains("storaged stopped"), "{text}");
    assert!(!text.contains('\u{1b}'), "no colour in a file: {text}");
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Under systemd (stderr is the stream `JOURNAL_STREAM` names), every line
/// carries its syslog priority as journald's `<N>` prefix, so `journalctl
/// -p warning` finds warnings; the storage engine's INFO chatter is not
/// logged at the default level.
#[test]
fn levels_reach_the_journal_as_priorities() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // A data dir others can read: etcd's permission warning.
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    let journal = dir.path().join("journal");
    let stream = std::fs::File::create(&journal).unwrap();
    let meta = stream.metadata().unwrap();
    let mut child = std::process::Command::new(bin("storaged"))
        .arg("--data-dir")
        .arg(&data)
        .env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()))
        .env_remove("NOTIFY_SOCKET")
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::null())
        .stderr(stream)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let text = || std::fs::read_to_string(&journal).unwrap_or_default();
    while Instant::now() < deadline && !text().contains("storaged serving") {
        std::thread::sleep(Duration::from_millis(50));
    }
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    if !wait_exit(&mut child, Duration::from_secs(20)) {
        let _ = child.kill();
    }
    let text = text();
    let lines: Vec<&str> = text.lines().filter(|l| !l.is_empty()).collect();
    assert!(!lines.is_empty(), "nothing logged");
    for line in &lines {
        assert!(
            ["<3>", "<4>", "<6>"].iter().any(|p| line.starts_with(p)),
            "a line without its priority: {line:?}\n{text}"
        );
    }
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("<4>") && l.contains("permission")),
        "the permission warning at priority 4:\n{text}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("<6>") && l.contains("storaged serving")),
        "{text}"
    );
    assert!(
        !text.contains("fjall") && !text.contains("lsm_tree"),
        "the storage engine's INFO lines: {text}"
    );
}
