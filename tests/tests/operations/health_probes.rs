//! /health, /livez and /readyz (etcd's semantics, healthz format) and the
//! gRPC health service: all healthy on a serving member; with raftd stopped
//! (SIGSTOP) the member is alive (storaged still reads) but not ready, and
//! the gRPC health service says NOT_SERVING; all recover when it resumes.
//! A frozen daemon fails each probe within the probe deadline, named.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use triad_tests::{http, Member};

async fn grpc_health(ep: &str) -> Option<ServingStatus> {
    let ch = tonic::transport::Channel::from_shared(format!("http://{ep}"))
        .ok()?
        .connect()
        .await
        .ok()?;
    let r = HealthClient::new(ch)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .ok()?;
    ServingStatus::try_from(r.into_inner().status).ok()
}

async fn wait_grpc_health(ep: &str, want: ServingStatus) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while grpc_health(ep).await != Some(want) {
        assert!(
            Instant::now() < deadline,
            "gRPC health never became {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_follow_the_member() {
    let m = Member::start();
    let ep = m.endpoint();
    assert_eq!(http(&ep, "GET", "/livez", ""), (200, "ok".to_string()));
    assert_eq!(http(&ep, "GET", "/readyz", ""), (200, "ok".to_string()));
    assert_eq!(
        http(&ep, "GET", "/readyz?verbose", "").1,
        "[+]data_corruption ok\n[+]serializable_read ok\n[+]linearizable_read ok\nok"
    );
    let (code, body) = http(&ep, "GET", "/health", "");
    assert_eq!(
        (code, body.as_str()),
        (200, r#"{"health":"true","reason":""}"#)
    );
    wait_grpc_health(&ep, ServingStatus::Serving).await;

    m.pause_supervisor(true);
    m.signal("raftd", Signal::SIGSTOP);
    // A frozen raftd fails each probe within the probe deadline (1 s),
    // naming it, as etcd answers /health within a second.
    let (code, body, took) = timed_get(&ep, "/readyz?verbose").await;
    assert_eq!(code, 503, "{body}");
    assert!(
        body.contains("[-]linearizable_read failed: raftd did not answer within 1000 ms"),
        "{body}"
    );
    assert!(body.ends_with("readyz check failed"), "{body}");
    assert!(took < Duration::from_secs(3), "/readyz took {took:?}");
    let (code, body, took) = timed_get(&ep, "/health").await;
    assert_eq!(
        (code, body.as_str()),
        (
            503,
            r#"{"health":"false","reason":"raftd did not answer within 1000 ms"}"#
        )
    );
    assert!(took < Duration::from_secs(3), "/health took {took:?}");
    let (code, body) = http(&ep, "GET", "/readyz?exclude=linearizable_read", "");
    assert_eq!(code, 200, "{body}");
    assert_eq!(http(&ep, "GET", "/livez", ""), (200, "ok".to_string()));
    wait_grpc_health(&ep, ServingStatus::NotServing).await;

    m.signal("raftd", Signal::SIGCONT);
    wait_grpc_health(&ep, ServingStatus::Serving).await;
    assert_eq!(http(&ep, "GET", "/readyz", ""), (200, "ok".to_string()));

    // A frozen storaged: not even alive, said within the deadline.
    m.signal("storaged", Signal::SIGSTOP);
    let (code, body, took) = timed_get(&ep, "/livez?verbose").await;
    assert_eq!(code, 503, "{body}");
    assert!(
        body.contains("[-]serializable_read failed: storaged did not answer within 1000 ms"),
        "{body}"
    );
    assert!(took < Duration::from_secs(3), "/livez took {took:?}");
    m.signal("storaged", Signal::SIGCONT);
    m.pause_supervisor(false);
    let deadline = Instant::now() + Duration::from_secs(30);
    while http(&ep, "GET", "/readyz", "") != (200, "ok".to_string()) {
        assert!(Instant::now() < deadline, "never ready again");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// GET `path`, and how long the answer took.
async fn timed_get(ep: &str, path: &'static str) -> (u16, String, Duration) {
    let ep = ep.to_string();
    tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let (code, body) = http(&ep, "GET", path, "");
        (code, body, started.elapsed())
    })
    .await
    .expect("probe")
}
