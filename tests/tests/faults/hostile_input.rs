//! Bad input on every door: garbage bytes on the client port, on raftd's
//! peer port and on the member's Unix sockets get an error or a closed
//! connection, never a crash; a process of another uid cannot use the
//! local sockets at all; random requests through the etcd API get etcd's
//! errors, never a panic (a bounded fuzz pass run in CI).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::Duration;

use triad_tests::etcd_client::{Compare, CompareOp, GetOptions, SortOrder, SortTarget, Txn, TxnOp};
use triad_tests::{Member, XorShift, DAEMONS};

fn throw_garbage(mut conn: impl Read + Write, rng: &mut XorShift) {
    let _ = conn.write_all(&rng.bytes(4096));
    let _ = conn.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut sink = [0u8; 1024];
    let _ = conn.read(&mut sink);
}

#[test]
fn garbage_on_every_port_crashes_nothing() {
    let m = Member::start();
    let pids: Vec<i32> = DAEMONS.iter().map(|d| m.pid(d).expect("pid")).collect();
    let mut rng = XorShift(0x1234_5678_9abc_def1);
    let run = m.data_dir().join("run");
    for _ in 0..20 {
        for port in [m.port, m.port + 1] {
            if let Ok(c) = TcpStream::connect(("127.0.0.1", port)) {
                let _ = c.set_read_timeout(Some(Duration::from_millis(200)));
                throw_garbage(c, &mut rng);
            }
        }
        for sock in ["storaged.sock", "raftd.sock"] {
            if let Ok(c) = UnixStream::connect(run.join(sock)) {
                let _ = c.set_read_timeout(Some(Duration::from_millis(200)));
                throw_garbage(c, &mut rng);
            }
        }
    }
    // Nobody crashed or restarted, and the member still serves.
    for (d, pid) in DAEMONS.iter().zip(pids) {
        assert_eq!(m.pid(d), Some(pid), "{d} restarted\n{}", m.logs());
    }
    let out = m.etcdctl(&["put", "still", "here"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn another_uid_cannot_use_the_local_sockets() {
    let m = Member::start();
    // Let the other uid reach the directory: only the sockets' own mode
    // (0600) and the daemons' peer-uid check stand in its way.
    let run = m.data_dir().join("run");
    for dir in [m.data_dir(), run.as_path()] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    for sock in ["storaged.sock", "raftd.sock"] {
        let path = run.join(sock);
        let mode = std::fs::metadata(&path)
            .expect("socket")
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "{sock} mode");
        let script = format!(
            "import socket\ns = socket.socket(socket.AF_UNIX)\ntry:\n    s.connect({:?})\n    print('connected')\nexcept PermissionError:\n    print('denied')\n",
            path.to_string_lossy()
        );
        let out = Command::new("python3")
            .args(["-c", &script])
            .uid(65534)
            .gid(65534)
            .output()
            .expect("python3 as nobody");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "denied",
            "{sock}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_requests_get_errors_never_crashes() {
    let m = Member::start();
    let pids: Vec<i32> = DAEMONS.iter().map(|d| m.pid(d).expect("pid")).collect();
    let mut c = m.client().await;
    let mut rng = XorShift(0xfeed_beef_cafe_f00d);
    // Bounded: a fixed number of random requests of every kind.
    for _ in 0..300 {
        let key = rng.bytes(40);
        let end = rng.bytes(40);
        let rev = (rng.next_u64() % 100) as i64 - 50;
        let mut opts = GetOptions::new()
            .with_range(end.clone())
            .with_revision(rev)
            .with_limit((rng.next_u64() % 10) as i64 - 3);
        if rng.next_u64().is_multiple_of(2) {
            opts = opts.with_sort(SortTarget::Mod, SortOrder::Descend);
        }
        let _ = c.get(key.clone(), Some(opts)).await;
        let _ = c.put(key.clone(), rng.bytes(200), None).await;
        let _ = c.delete(key.clone(), None).await;
        let txn = Txn::new()
            .when([Compare::version(key.clone(), CompareOp::Greater, rev)])
            .and_then([
                TxnOp::put(end.clone(), rng.bytes(10), None),
                TxnOp::delete(key.clone(), None),
            ])
            .or_else([TxnOp::get(end.clone(), None)]);
        let _ = c.txn(txn).await;
        let _ = c.compact(rev, None).await;
        let _ = c.lease_grant(rev, None).await;
        let _ = c.lease_time_to_live(rev, None).await;
    }
    for (d, pid) in DAEMONS.iter().zip(pids) {
        assert_eq!(m.pid(d), Some(pid), "{d} restarted\n{}", m.logs());
    }
    c.put("alive", "yes", None).await.expect("still serving");
}

/// A call to a service the member does not have, or to a method its
/// service does not have, gets gRPC's Unimplemented with etcd's (grpc-go's)
/// message, not an HTTP error; a plain HTTP request to a path nothing
/// serves gets a 404, as from etcd.
#[tokio::test]
async fn unknown_services_and_methods_are_unimplemented() {
    use tonic::codegen::http::uri::PathAndQuery;
    use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};
    let m = Member::start();
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", m.endpoint()))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    for (path, message) in [
        (
            "/etcdserverpb.Nothing/Range",
            "unknown service etcdserverpb.Nothing",
        ),
        (
            "/etcdserverpb.KV/Nothing",
            "unknown method Nothing for service etcdserverpb.KV",
        ),
    ] {
        let mut grpc = tonic::client::Grpc::new(channel.clone());
        grpc.ready().await.expect("ready");
        let answer: Result<tonic::Response<HealthCheckResponse>, tonic::Status> = grpc
            .unary(
                tonic::Request::new(HealthCheckRequest::default()),
                PathAndQuery::from_static(path),
                tonic_prost::ProstCodec::default(),
            )
            .await;
        let status = answer.expect_err(path);
        assert_eq!(
            status.code(),
            tonic::Code::Unimplemented,
            "{path}: {status:?}"
        );
        assert_eq!(status.message(), message, "{path}");
    }
    let ep = m.endpoint();
    let (code, _) =
        tokio::task::spawn_blocking(move || triad_tests::http(&ep, "GET", "/nothing", ""))
            .await
            .expect("http");
    assert_eq!(code, 404);
}
