//! etcd's proxy commands under triad's name: `triad gateway start` and
//! `triad grpc-proxy start` take etcd 3.4's flags for `etcd gateway start`
//! and `etcd grpc-proxy start`, and behave as etcd's do in front of the
//! same member (run side by side here).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use triad_tests::certs::TestCa;
use triad_tests::{bin, etcdctl, free_port_pair, ok_stdout, prerequisite_missing, Member};

/// A proxy process, killed when dropped; its output kept for failures.
struct Running(Child, tempfile::NamedTempFile);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `program args...` listening on `port` once it accepts connections.
fn start(program: &std::path::Path, args: &[String], port: u16) -> Running {
    let log = tempfile::NamedTempFile::new().expect("log file");
    let child = Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(log.reopen().expect("log"))
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", program.display()));
    let running = Running(child, log);
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "{} never listened: {}",
            program.display(),
            std::fs::read_to_string(running.1.path()).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    running
}

/// The same etcd command line run by etcd and by triad, each on its own
/// port: a put and a get through each proxy, and what reached the member.
fn side_by_side(command: &str, flags: &[&str], member: &Member) -> Vec<String> {
    let etcd = std::path::PathBuf::from("etcd");
    let mut seen = Vec::new();
    for (who, program) in [("etcd", etcd), ("triad", bin("triad"))] {
        let port = free_port_pair();
        let mut args: Vec<String> = vec![command.into(), "start".into()];
        args.push(format!("--listen-addr=127.0.0.1:{port}"));
        args.push(format!("--endpoints=http://{}", member.endpoint()));
        args.extend(flags.iter().map(|f| f.to_string()));
        let _proxy = start(&program, &args, port);
        let via = format!("127.0.0.1:{port}");
        ok_stdout(&etcdctl(&via, &["put", &format!("k-{command}"), who]));
        let got = ok_stdout(&etcdctl(
            &via,
            &["get", &format!("k-{command}"), "--print-value-only"],
        ));
        seen.push(format!("{who}: through the proxy {}", got.trim()));
        let direct = ok_stdout(&etcdctl(
            &member.endpoint(),
            &["get", "", "--prefix", "--keys-only"],
        ));
        let keys: Vec<&str> = direct.lines().filter(|l| l.contains(command)).collect();
        seen.push(format!("{who}: at the member {keys:?}"));
        ok_stdout(&etcdctl(&member.endpoint(), &["del", "", "--prefix"]));
    }
    seen
}

#[test]
fn triad_gateway_and_grpc_proxy_take_etcds_command_lines() {
    if Command::new("etcd").arg("--version").output().is_err() {
        return prerequisite_missing("etcd (Debian's etcd-server)");
    }
    let member = Member::start();

    let gateway = side_by_side("gateway", &["--retry-delay=2s"], &member);
    assert_eq!(
        gateway,
        [
            "etcd: through the proxy etcd",
            "etcd: at the member [\"k-gateway\"]",
            "triad: through the proxy triad",
            "triad: at the member [\"k-gateway\"]",
        ]
    );

    let proxy = side_by_side("grpc-proxy", &["--namespace=ns/"], &member);
    assert_eq!(
        proxy,
        [
            "etcd: through the proxy etcd",
            "etcd: at the member [\"ns/k-grpc-proxy\"]",
            "triad: through the proxy triad",
            "triad: at the member [\"ns/k-grpc-proxy\"]",
        ]
    );

    // `--insecure-skip-tls-verify` is refused rather than ignored.
    let refused = Command::new(bin("triad"))
        .args(["grpc-proxy", "start", "--insecure-skip-tls-verify"])
        .output()
        .expect("run triad");
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("not supported"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
}

/// grpc-proxy's `--cacert`, `--cert` and `--key`: the proxy reaches a
/// member that serves https and requires a client certificate, as etcd's
/// proxy does with the same flags.
#[test]
fn grpc_proxy_reaches_a_tls_member_with_etcds_flags() {
    if Command::new("etcd").arg("--version").output().is_err() {
        return prerequisite_missing("etcd (Debian's etcd-server)");
    }
    let certs = tempfile::tempdir().expect("tempdir");
    let ca = TestCa::new(certs.path());
    ca.issue(
        certs.path(),
        "server",
        "triad-member",
        &["localhost", "127.0.0.1"],
        1,
    );
    // etcd's proxy refuses a certificate with a common name (with auth on
    // it would be every client's identity), and so does triad's.
    let sans = ["localhost", "127.0.0.1"];
    ca.issue(certs.path(), "named", "root", &sans, 2);
    ca.issue(certs.path(), "client", "", &sans, 3);
    let file = |n: &str| certs.path().join(n).to_string_lossy().into_owned();
    let member = Member::start_with_env(&[
        ("TRIAD_CERT_FILE", &file("server.pem")),
        ("TRIAD_KEY_FILE", &file("server-key.pem")),
        ("TRIAD_TRUSTED_CA_FILE", &file("ca.pem")),
        ("TRIAD_CLIENT_CERT_AUTH", "true"),
    ]);
    let tls = [
        format!("--cacert={}", file("ca.pem")),
        format!("--cert={}", file("client.pem")),
        format!("--key={}", file("client-key.pem")),
    ];
    let mut seen = Vec::new();
    for (who, program) in [
        ("etcd", std::path::PathBuf::from("etcd")),
        ("triad", bin("triad")),
    ] {
        let port = free_port_pair();
        let mut args: Vec<String> = vec!["grpc-proxy".into(), "start".into()];
        args.push(format!("--listen-addr=127.0.0.1:{port}"));
        args.push(format!("--endpoints=https://{}", member.endpoint()));
        args.extend(tls.iter().cloned());
        let _proxy = start(&program, &args, port);
        let via = format!("127.0.0.1:{port}");
        ok_stdout(&etcdctl(&via, &["put", "through-tls", who]));
        let got = ok_stdout(&etcdctl(
            &via,
            &["get", "through-tls", "--print-value-only"],
        ));
        seen.push(got.trim().to_string());
    }
    assert_eq!(seen, ["etcd", "triad"]);
    for program in [std::path::PathBuf::from("etcd"), bin("triad")] {
        let out = Command::new(&program)
            .args(["grpc-proxy", "start", "--listen-addr=127.0.0.1:1"])
            .arg(format!("--endpoints=https://{}", member.endpoint()))
            .arg(format!("--cacert={}", file("ca.pem")))
            .arg(format!("--cert={}", file("named.pem")))
            .arg(format!("--key={}", file("named-key.pem")))
            .output()
            .expect("run the proxy");
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        let who = program.display();
        assert!(!out.status.success(), "{who}: {text}");
        assert!(
            text.contains("cert has non empty Common Name (root)"),
            "{who}: {text}"
        );
    }
}
