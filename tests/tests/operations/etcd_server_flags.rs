//! etcd server flags beyond the basics, each shown by what it does on a
//! running member, next to etcd 3.4 where etcd 3.4 has the flag.

use triad_tests::{etcdctl, http, metric_sample, ok_stdout, reference_etcd, Member};

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
