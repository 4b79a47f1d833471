//! The space quota and alarms, side by side with etcd 3.4.23 run with the
//! same --quota-backend-bytes: writes past the quota raise NOSPACE and fail
//! with etcd's error; reads, deletes, delete-only txns and compaction still
//! work; defragment gives the space back and disarming lets writes in again.

use std::process::Output;

use triad_tests::{etcdctl, reference_etcd, Member};

const QUOTA: &str = "1000000";

/// etcdctl's combined output with member IDs (decimal or hex) masked.
fn text(out: &Output, ids: &[String]) -> String {
    let mut s = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
            .lines()
            .filter(|l| !l.starts_with('{')) // client-side retry logs
            .collect::<Vec<_>>()
            .join("\n")
    );
    for id in ids {
        s = s.replace(id.as_str(), "<member>");
    }
    s.trim().to_string()
}

/// The member ID in decimal and in hex.
fn ids(endpoint: &str) -> Vec<String> {
    let out = etcdctl(endpoint, &["endpoint", "status", "-w", "fields"]);
    let s = String::from_utf8_lossy(&out.stdout);
    let dec = s
        .lines()
        .find(|l| l.starts_with("\"MemberID\""))
        .and_then(|l| l.split(':').nth(1))
        .map(|v| v.trim().to_string())
        .expect("member id");
    let hex = format!("{:x}", dec.parse::<u64>().expect("numeric id"));
    vec![dec, hex]
}

/// The script: fill until the quota bites, then everything etcd still
/// allows or refuses. Returns (puts that succeeded, transcript after).
fn script(endpoint: &str) -> (usize, Vec<String>) {
    let ids = ids(endpoint);
    let run = |args: &[&str]| text(&etcdctl(endpoint, args), &ids);
    let value = "x".repeat(100_000);
    let mut ok = 0;
    let mut first_error = String::new();
    for i in 0..20 {
        let out = etcdctl(endpoint, &["put", &format!("k{i:02}"), &value]);
        if out.status.success() {
            ok += 1;
        } else {
            first_error = text(&out, &ids);
            break;
        }
    }
    let mut t = vec![first_error];
    t.push(run(&["alarm", "list"]));
    let status = run(&["endpoint", "status", "-w", "fields"]);
    t.push(
        status
            .lines()
            .filter(|l| l.starts_with("\"Errors\""))
            .collect::<Vec<_>>()
            .join("\n"),
    );
    t.push(run(&["get", "k00", "--print-value-only"]).len().to_string());
    t.push(run(&["del", "k00"]));
    t.push(run(&["lease", "grant", "100"]));
    t.push(run(&["txn"]));
    for stdin_txn in ["\n\ndel k01\n\n", "\n\nput k01 v\n\n"] {
        let out = std::process::Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={endpoint}"))
            .arg("txn")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                if let Some(mut i) = c.stdin.take() {
                    i.write_all(stdin_txn.as_bytes())?;
                }
                c.wait_with_output()
            })
            .expect("etcdctl txn");
        t.push(text(&out, &ids));
    }
    t.push(run(&["del", "--prefix", "k"]).is_empty().to_string());
    // Compact everything, so the deleted values can go.
    let header = run(&["get", "none", "-w", "json"]);
    let revision = header
        .split("\"revision\":")
        .nth(1)
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .expect("revision in the header")
        .to_string();
    t.push(run(&["compact", &revision]));
    t.push(run(&["defrag"]).replace(endpoint, "<endpoint>"));
    t.push(run(&["alarm", "disarm"]));
    t.push(run(&["alarm", "list"]));
    t.push(run(&["put", "after", "disarm"]));
    (ok, t)
}

#[test]
fn quota_and_alarms_match_etcd() {
    let triad = Member::start_with_env(&[("TRIAD_QUOTA_BACKEND_BYTES", QUOTA)]);
    let (ok, ours) = script(&triad.endpoint());
    assert!(
        ok > 0 && ok < 20,
        "the quota must bite after some puts: {ok}"
    );
    assert_eq!(ours[0], "Error: etcdserver: mvcc: database space exceeded");
    assert_eq!(ours[1], "memberID:<member> alarm:NOSPACE");
    assert_eq!(ours.last().map(String::as_str), Some("OK"), "{ours:#?}");
    let Some(etcd) = reference_etcd(&["--quota-backend-bytes", QUOTA]) else {
        return;
    };
    let (etcd_ok, theirs) = script(&etcd.endpoint());
    // Sizes are counted on different engines (bolt grows by pages): the
    // quota bites a few puts earlier or later; both near 1 MB of values.
    // (bolt's growth varies from run to run: etcd has taken 15).
    for n in [ok, etcd_ok] {
        assert!((6..=18).contains(&n), "triad {ok} puts, etcd {etcd_ok}");
    }
    // The compaction revision follows the number of puts: mask it.
    let mask = |t: Vec<String>| -> Vec<String> {
        t.into_iter()
            .map(|l| {
                if l.starts_with("compacted revision") {
                    "compacted revision N".to_string()
                } else {
                    l
                }
            })
            .collect()
    };
    assert_eq!(mask(ours), mask(theirs));
}
