//! etcd 3.6's v3 discovery: members started with a token and a discovery
//! cluster's endpoints (here etcd 3.4, as an operator's existing etcd
//! would be) register there, wait for `_config/size` of them, and form
//! that cluster; a member too many is refused with etcd's words, and a
//! started member never asks again.

use triad_tests::cluster::Cluster;
use triad_tests::{bin, etcdctl, ok_stdout, reference_etcd};

#[test]
fn members_find_each_other_through_a_discovery_cluster() {
    let Some(registry) = reference_etcd(&[]) else {
        return;
    };
    let ep = registry.endpoint();
    let at_registry = |args: &[&str]| etcdctl(&ep, args);
    ok_stdout(&at_registry(&[
        "put",
        "/_etcd/registry/tok-3/_config/size",
        "3",
    ]));

    let c = Cluster::start_with_env(
        3,
        &[
            ("ETCD_DISCOVERY_TOKEN", "tok-3"),
            ("ETCD_DISCOVERY_ENDPOINTS", ep.as_str()),
        ],
    );
    ok_stdout(&c.etcdctl(0, &["put", "k", "v"]));
    assert_eq!(
        ok_stdout(&c.etcdctl(2, &["get", "k", "--print-value-only"])).trim(),
        "v"
    );

    // The members are the three registered, under the IDs they registered.
    let list = ok_stdout(&c.etcdctl(0, &["member", "list"]));
    let mut listed: Vec<String> = list
        .lines()
        .map(|l| l.split(", ").next().unwrap_or("").to_string())
        .collect();
    listed.sort();
    let registered = ok_stdout(&at_registry(&[
        "get",
        "--prefix",
        "/_etcd/registry/tok-3/members/",
        "--keys-only",
    ]));
    let mut ids: Vec<String> = registered
        .lines()
        .filter(|l| !l.is_empty())
        .map(|k| k.rsplit('/').next().unwrap_or("").to_string())
        .collect();
    ids.sort();
    assert_eq!(listed, ids, "member list:\n{list}\nregistry:\n{registered}");
    for place in &c.members {
        assert!(list.contains(&place.peer_url()), "{list}");
    }
    let values = ok_stdout(&at_registry(&[
        "get",
        "--prefix",
        "/_etcd/registry/tok-3/members/",
        "--print-value-only",
    ]));
    assert!(
        values.contains(&format!("m0={}", c.members[0].peer_url())),
        "{values}"
    );

    // A fourth member with the same token finds the cluster full.
    let dir = tempfile::tempdir().expect("tempdir");
    let port = triad_tests::free_port_pair();
    let late = std::process::Command::new(bin("raftd"))
        .arg("--data-dir")
        .arg(dir.path())
        .args(["--name", "m3", "--initial-advertise-peer-urls"])
        .arg(format!("http://127.0.0.1:{port}"))
        .args(["--discovery-token", "tok-3", "--discovery-endpoints", &ep])
        .output()
        .expect("raftd");
    let stderr = String::from_utf8_lossy(&late.stderr);
    assert!(!late.status.success(), "{stderr}");
    assert!(
        stderr.contains("failed to join discovery cluster (discovery: cluster is full)"),
        "{stderr}"
    );
    // A token nobody sized is refused at once.
    let no_size = std::process::Command::new(bin("raftd"))
        .arg("--data-dir")
        .arg(dir.path())
        .args([
            "--discovery-token",
            "never-sized",
            "--discovery-endpoints",
            &ep,
        ])
        .output()
        .expect("raftd");
    let stderr = String::from_utf8_lossy(&no_size.stderr);
    assert!(
        stderr.contains("failed to join discovery cluster (discovery: size key not found)"),
        "{stderr}"
    );
    // etcd's flag rules.
    let half = std::process::Command::new(bin("raftd"))
        .arg("--check-config")
        .arg("--data-dir")
        .arg(dir.path())
        .args(["--discovery-token", "t"])
        .output()
        .expect("raftd");
    let stderr = String::from_utf8_lossy(&half.stderr);
    assert!(
        stderr.contains("both --discovery-token and --discovery-endpoints must be set"),
        "{stderr}"
    );

    // Once started, a member does not need the discovery cluster again.
    drop(registry);
    let old = c.pid(1, "raftd").expect("raftd pid");
    c.kill9(1, "raftd");
    c.wait_restarted(1, "raftd", old);
    let put = (0..100).find_map(|_| {
        let out = c.etcdctl(1, &["put", "after", "restart", "--command-timeout=2s"]);
        if out.status.success() {
            Some(out)
        } else {
            std::thread::sleep(std::time::Duration::from_millis(200));
            None
        }
    });
    assert!(put.is_some(), "{}", c.logs(1));
    assert!(
        c.logs(1)
            .contains("discovery token is ignored since cluster already initialized"),
        "{}",
        c.logs(1)
    );
}

/// etcd 3.4's discovery protocol: the registry in etcd's v2 keys API
/// (etcd 3.4 with `--enable-v2`), the size set with a v2 PUT as etcd's
/// documentation does it.
#[test]
fn members_find_each_other_through_a_v2_discovery_service() {
    let Some(registry) = reference_etcd(&["--enable-v2"]) else {
        return;
    };
    let ep = registry.endpoint();
    let (status, body) = triad_tests::http(
        &ep,
        "PUT",
        "/v2/keys/_etcd/registry/tok-v2/_config/size?value=3",
        "",
    );
    assert!(status == 200 || status == 201, "{status} {body}");
    let url = format!("http://{ep}/v2/keys/_etcd/registry/tok-v2");
    let c = Cluster::start_with_env(3, &[("ETCD_DISCOVERY", url.as_str())]);
    ok_stdout(&c.etcdctl(1, &["put", "k", "v"]));
    let list = ok_stdout(&c.etcdctl(0, &["member", "list"]));
    for place in &c.members {
        assert!(
            list.contains(&format!("{}, {}", place.name, place.peer_url())),
            "{list}"
        );
    }
    let (status, body) = triad_tests::http(&ep, "GET", "/v2/keys/_etcd/registry/tok-v2", "");
    assert_eq!(status, 200, "{body}");
    for place in &c.members {
        assert!(
            body.contains(&format!("{}={}", place.name, place.peer_url())),
            "{body}"
        );
    }
    // The registered IDs are the members' IDs.
    let mut listed: Vec<String> = list
        .lines()
        .map(|l| l.split(", ").next().unwrap_or("").to_string())
        .collect();
    listed.sort();
    for id in &listed {
        assert!(
            body.contains(&format!("/_etcd/registry/tok-v2/{id}\"")),
            "{id} not registered: {body}"
        );
    }

    let dir = tempfile::tempdir().expect("tempdir");
    let late = std::process::Command::new(bin("raftd"))
        .arg("--data-dir")
        .arg(dir.path())
        .args(["--name", "m3", "--initial-advertise-peer-urls"])
        .arg(format!(
            "http://127.0.0.1:{}",
            triad_tests::free_port_pair()
        ))
        .args(["--discovery", &url])
        .output()
        .expect("raftd");
    let stderr = String::from_utf8_lossy(&late.stderr);
    assert!(
        stderr.contains("failed to join discovery cluster (discovery: cluster is full)"),
        "{stderr}"
    );
}
