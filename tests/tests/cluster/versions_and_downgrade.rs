//! The cluster version as etcd negotiates it (the lowest of the members'
//! server versions, major.minor), shown in /version, Status and the
//! etcd_cluster_version metric; and etcd 3.6's Downgrade: validate,
//! enable (the cluster version steps down to the target), cancel, the
//! downgrade ending by itself once every member runs the target, with
//! etcd's errors for every refusal.

use std::time::{Duration, Instant};

use common::proto::etcdserverpb as pb;
use pb::downgrade_request::DowngradeAction;
use pb::maintenance_client::MaintenanceClient;
use tonic::transport::Channel;
use tonic::Code;
use triad_tests::cluster::Cluster;
use triad_tests::{grpc_channel, http, login, metric_sample, with_token, Member};

/// /version's cluster version, once it is `want` (within 20 s).
fn wait_cluster_version(endpoint: &str, want: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = http(endpoint, "GET", "/version", "");
        assert_eq!(status, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        if v["etcdcluster"] == want {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "cluster version never became {want}: {body}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

async fn downgrade(
    m: &mut MaintenanceClient<Channel>,
    action: DowngradeAction,
    version: &str,
) -> Result<pb::DowngradeResponse, tonic::Status> {
    m.downgrade(pb::DowngradeRequest {
        action: action as i32,
        version: version.into(),
    })
    .await
    .map(|r| r.into_inner())
}

async fn status(m: &mut MaintenanceClient<Channel>) -> pb::StatusResponse {
    m.status(pb::StatusRequest {}).await.unwrap().into_inner()
}

fn refused(r: Result<pb::DowngradeResponse, tonic::Status>) -> (Code, String) {
    let e = r.expect_err("refused");
    (e.code(), e.message().to_string())
}

#[tokio::test]
async fn the_cluster_version_is_the_lowest_members() {
    let older = vec![("TRIAD_ETCD_VERSION".to_string(), "3.4.23".to_string())];
    let Some(c) = Cluster::start_split(3, &[], |_| {}, &[("m2", older)]) else {
        triad_tests::prerequisite_missing(
            "this machine does not let the test make network namespaces",
        );
        return;
    };
    for (i, ep) in c.endpoints().iter().enumerate() {
        let v = wait_cluster_version(ep, "3.4.0");
        let server = if i == 2 { "3.4.23" } else { "3.5.17" };
        assert_eq!(v["etcdserver"], server, "{v}");
        let mut m = MaintenanceClient::new(grpc_channel(ep).await);
        let s = status(&mut m).await;
        assert_eq!(
            (s.version.as_str(), s.storage_version.as_str()),
            (server, "3.4.0")
        );
    }
}

#[tokio::test]
async fn downgrades_go_as_etcd_takes_them() {
    let mut member = Member::start();
    let ep = member.endpoint();
    let v = wait_cluster_version(&ep, "3.5.0");
    assert_eq!(v["etcdserver"], "3.5.17");
    let (_, metrics) = http(&ep, "GET", "/metrics", "");
    assert_eq!(
        metric_sample(
            &metrics,
            "etcd_cluster_version",
            "{cluster_version=\"3.5\"}"
        ),
        Some(1.0)
    );
    let mut m = MaintenanceClient::new(grpc_channel(&ep).await);
    let s = status(&mut m).await;
    assert_eq!(s.storage_version, "3.5.0");
    assert_eq!(s.db_size_quota, 2 << 30);
    assert_eq!(s.downgrade_info, Some(pb::DowngradeInfo::default()));

    let invalid = (
        Code::InvalidArgument,
        "etcdserver: invalid downgrade target version".to_string(),
    );
    for bad in ["3.5", "3.3", "3.6.0", "2.4"] {
        assert_eq!(
            refused(downgrade(&mut m, DowngradeAction::Validate, bad).await),
            invalid
        );
    }
    for bad in ["", "3", "3.4.x", "three"] {
        assert_eq!(
            refused(downgrade(&mut m, DowngradeAction::Enable, bad).await),
            (
                Code::InvalidArgument,
                "etcdserver: wrong downgrade target version format".to_string()
            )
        );
    }
    assert_eq!(
        refused(downgrade(&mut m, DowngradeAction::Cancel, "").await),
        (
            Code::FailedPrecondition,
            "etcdserver: no inflight downgrade job".to_string()
        )
    );
    let ok = downgrade(&mut m, DowngradeAction::Validate, "3.4")
        .await
        .unwrap();
    assert_eq!(ok.version, "3.5.0");
    assert!(ok
        .header
        .is_some_and(|h| h.revision > 0 && h.member_id != 0));
    // The JSON gateway's route (etcd 3.5's).
    let (code, body) = http(
        &ep,
        "POST",
        "/v3/maintenance/downgrade",
        r#"{"action":"VALIDATE","version":"3.4"}"#,
    );
    assert!(
        code == 200 && body.contains(r#""version":"3.5.0""#),
        "{code} {body}"
    );

    // Enable, then cancel: the cluster version stays where it went.
    let ok = downgrade(&mut m, DowngradeAction::Enable, "3.4.7")
        .await
        .unwrap();
    assert_eq!(ok.version, "3.5.0");
    let s = status(&mut m).await;
    assert_eq!(
        s.downgrade_info,
        Some(pb::DowngradeInfo {
            enabled: true,
            target_version: "3.4.0".into()
        })
    );
    wait_cluster_version(&ep, "3.4.0");
    assert_eq!(
        refused(downgrade(&mut m, DowngradeAction::Enable, "3.4").await),
        invalid
    );
    let ok = downgrade(&mut m, DowngradeAction::Cancel, "")
        .await
        .unwrap();
    assert_eq!(ok.version, "3.4.0");
    assert_eq!(
        status(&mut m).await.downgrade_info,
        Some(pb::DowngradeInfo::default())
    );
    // With no downgrade enabled, the members' 3.5 brings it back up.
    wait_cluster_version(&ep, "3.5.0");

    // Enabled again, and the member restarted at the target: done.
    downgrade(&mut m, DowngradeAction::Enable, "3.4")
        .await
        .unwrap();
    wait_cluster_version(&ep, "3.4.0");
    member.stop();
    member.set_env("TRIAD_ETCD_VERSION", "3.4.23");
    member.launch();
    let mut m = MaintenanceClient::new(grpc_channel(&ep).await);
    let deadline = Instant::now() + Duration::from_secs(20);
    while status(&mut m).await.downgrade_info != Some(pb::DowngradeInfo::default()) {
        assert!(Instant::now() < deadline, "the downgrade never ended");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let v = wait_cluster_version(&ep, "3.4.0");
    assert_eq!(v["etcdserver"], "3.4.23");
    assert!(member.logs().contains("the cluster has been downgraded"));

    // Administrators only, once auth is on.
    let ctl = |args: &[&str]| triad_tests::ok_stdout(&member.etcdctl(args));
    ctl(&["user", "add", "root:rootpw"]);
    ctl(&["user", "add", "alice:alicepw"]);
    ctl(&["auth", "enable"]);
    let ch = grpc_channel(&ep).await;
    let mut m = MaintenanceClient::new(ch.clone());
    let alice = login(&ch, "alice", "alicepw").await;
    let req = pb::DowngradeRequest {
        action: DowngradeAction::Validate as i32,
        version: "3.3".into(),
    };
    let e = m
        .downgrade(with_token(req.clone(), &alice))
        .await
        .expect_err("alice is no administrator");
    assert_eq!(e.message(), "auth: permission denied", "{e:?}");
    let root = login(&ch, "root", "rootpw").await;
    let ok = m
        .downgrade(with_token(req, &root))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ok.version, "3.4.0");
}
