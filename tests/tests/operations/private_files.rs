//! A member's files are its user's alone, whatever the umask it starts
//! with, and none holds a credential someone could replay: a simple token
//! reaches the raft log and the store only as its digest. An existing data
//! dir open to others gets etcd's warning. Token checks as etcd's: a
//! LeaseGrant with a token that is not valid is refused.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::proto::etcdserverpb::lease_client::LeaseClient;
use common::proto::etcdserverpb::LeaseGrantRequest;
use triad_tests::{bin, free_port_pair, grpc_channel, login, reference_etcd, with_token};

/// Every file under `dir` with its mode (sockets and the rest).
fn walk(dir: &Path, out: &mut Vec<(std::path::PathBuf, u32, bool)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let Ok(meta) = std::fs::symlink_metadata(e.path()) else {
            continue;
        };
        let mode = meta.permissions().mode() & 0o777;
        out.push((e.path(), mode, meta.file_type().is_socket()));
        if meta.is_dir() {
            walk(&e.path(), out);
        }
    }
}

async fn grant_with_bad_token(endpoint: &str) -> String {
    let mut lease = LeaseClient::new(grpc_channel(endpoint).await);
    let req = with_token(LeaseGrantRequest { ttl: 60, id: 0 }, "not-a-token");
    match lease.lease_grant(req).await {
        Ok(_) => "granted".into(),
        Err(s) => format!("{:?}: {}", s.code(), s.message()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_files_are_private_and_hold_no_replayable_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("member");
    let port = free_port_pair();
    // The most permissive umask there is.
    let mut up = Command::new("sh")
        .arg("-c")
        .arg("umask 000; exec \"$0\" up --data-dir \"$1\" --client-port \"$2\"")
        .arg(bin("triad"))
        .arg(&data)
        .arg(port.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn triad up");
    let stdout = up.stdout.take().expect("stdout");
    let mut first = String::new();
    BufReader::new(stdout)
        .read_line(&mut first)
        .expect("ready line");
    assert!(first.starts_with("ready"), "{first}");
    let endpoint = format!("127.0.0.1:{port}");

    let ch = grpc_channel(&endpoint).await;
    let mut c = triad_tests::connect(&endpoint).await;
    c.user_add("root", "rootpw", None).await.expect("root");
    c.user_grant_role("root", "root").await.expect("grant");
    c.auth_enable().await.expect("enable");
    let token = login(&ch, "root", "rootpw").await;
    assert!(!token.is_empty());
    // Let the log and the store write what they write.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut files = Vec::new();
    walk(&data, &mut files);
    assert!(files.len() > 10, "{files:?}");
    let mode = std::fs::metadata(&data)
        .expect("data dir")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o700, "data dir");
    for (path, mode, _) in &files {
        assert_eq!(mode & 0o077, 0, "{} is {mode:o}", path.display());
    }
    for (path, _, socket) in &files {
        if *socket || path.is_dir() {
            continue;
        }
        let bytes = std::fs::read(path).unwrap_or_default();
        let found = bytes.windows(token.len()).any(|w| w == token.as_bytes());
        assert!(!found, "{} holds the live token", path.display());
    }

    let ours = grant_with_bad_token(&endpoint).await;
    assert_eq!(ours, "Unauthenticated: etcdserver: invalid auth token");
    let _ = up.kill();
    let _ = up.wait();
    if let Some(etcd) = reference_etcd(&[]) {
        assert_eq!(ours, grant_with_bad_token(&etcd.endpoint()).await);
    }
}

#[test]
fn a_data_dir_open_to_others_is_warned_of() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("member");
    std::fs::create_dir(&data).expect("mkdir");
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let mut raftd = Command::new(bin("raftd"))
        .args(["--data-dir", &data.to_string_lossy()])
        .args([
            "--listen-peer-urls",
            &format!("http://127.0.0.1:{}", free_port_pair()),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn raftd");
    let stderr = raftd.stderr.take().expect("stderr");
    let mut line = String::new();
    let mut reader = BufReader::new(stderr);
    let mut warned = String::new();
    for _ in 0..20 {
        line.clear();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            break;
        }
        if line.contains("permission") {
            warned = line.clone();
            break;
        }
    }
    let _ = raftd.kill();
    let _ = raftd.wait();
    assert!(
        warned.contains("\"drwxr-xr-x\"") && warned.contains("-rwx------"),
        "no warning: {warned:?}"
    );
}
