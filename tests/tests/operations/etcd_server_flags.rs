//! etcd server flags beyond the basics, each shown by what it does on a
//! running member, next to etcd 3.4 where etcd 3.4 has the flag.

use std::path::Path;

use triad_tests::{bin, etcdctl, http, metric_sample, ok_stdout, reference_etcd, Member};

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
