//! Client TLS on gatewayd with etcd's flags: https on the client port with
//! the member's certificate; with --client-cert-auth a client must present
//! a certificate from the trusted CA. etcdctl talks to it with --cacert,
//! --cert and --key, as to etcd.

use std::path::Path;

use triad_tests::certs::TestCa;
use triad_tests::{etcdctl, Member};

/// A CA, and certificates it signed for the member and for clients.
fn make_certs(dir: &Path) {
    let ca = TestCa::new(dir);
    for (serial, (name, cn)) in [
        ("server", "triad-member"),
        ("client", "root"),
        ("dave", "dave"),
    ]
    .into_iter()
    .enumerate()
    {
        ca.issue(
            dir,
            name,
            cn,
            &["localhost", "127.0.0.1"],
            serial as u64 + 1,
        );
    }
}

/// A member on https whose clients must present a certificate from the
/// test CA; the certificates' directory with it.
fn member_requiring_client_certificates() -> (tempfile::TempDir, Member) {
    let certs = tempfile::tempdir().expect("tempdir");
    make_certs(certs.path());
    let file = |n: &str| certs.path().join(n).to_string_lossy().into_owned();
    let m = Member::start_with_env(&[
        ("TRIAD_CERT_FILE", &file("server.pem")),
        ("TRIAD_KEY_FILE", &file("server-key.pem")),
        ("TRIAD_TRUSTED_CA_FILE", &file("ca.pem")),
        ("TRIAD_CLIENT_CERT_AUTH", "true"),
    ]);
    (certs, m)
}

#[test]
fn client_tls_with_client_certificates() {
    let (certs, m) = member_requiring_client_certificates();
    let file = |n: &str| certs.path().join(n).to_string_lossy().into_owned();
    let ca = format!("--cacert={}", file("ca.pem"));
    let cert = format!("--cert={}", file("client.pem"));
    let key = format!("--key={}", file("client-key.pem"));
    let ep = m.endpoint();
    let put = etcdctl(&ep, &[&ca, &cert, &key, "put", "secure", "yes"]);
    assert!(
        put.status.success(),
        "{}",
        String::from_utf8_lossy(&put.stderr)
    );
    let get = etcdctl(
        &ep,
        &[&ca, &cert, &key, "get", "secure", "--print-value-only"],
    );
    assert_eq!(String::from_utf8_lossy(&get.stdout).trim(), "yes");
    // Without a client certificate the handshake is refused.
    let anonymous = etcdctl(
        &ep,
        &[
            &ca,
            "--dial-timeout=2s",
            "--command-timeout=3s",
            "get",
            "secure",
        ],
    );
    assert!(
        !anonymous.status.success(),
        "a client without a certificate got in"
    );
    // Plain text on the TLS port is refused too.
    let plain = etcdctl(
        &ep,
        &["--dial-timeout=2s", "--command-timeout=3s", "get", "secure"],
    );
    assert!(!plain.status.success(), "plain text got in");
}

/// With --client-cert-auth and no token, the certificate's common name is
/// the user (etcd's CN-based identity): users without passwords, judged by
/// their roles like any other.
#[test]
fn client_certificate_common_name_is_the_user() {
    let (certs, m) = member_requiring_client_certificates();
    let file = |n: &str| certs.path().join(n).to_string_lossy().into_owned();
    let ca = format!("--cacert={}", file("ca.pem"));
    let ep = m.endpoint();
    let as_user = |who: &str, args: &[&str]| {
        let (cert, key) = match who {
            "root" => (file("client.pem"), file("client-key.pem")),
            other => (
                file(&format!("{other}.pem")),
                file(&format!("{other}-key.pem")),
            ),
        };
        let mut all = vec![ca.clone(), format!("--cert={cert}"), format!("--key={key}")];
        all.extend(args.iter().map(|a| a.to_string()));
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        let out = etcdctl(&ep, &refs);
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    for args in [
        &["user", "add", "root", "--no-password"][..],
        &["user", "add", "dave", "--no-password"],
        &["role", "add", "d"],
        &[
            "role",
            "grant-permission",
            "d",
            "--prefix",
            "readwrite",
            "d/",
        ],
        &["user", "grant-role", "dave", "d"],
        &["auth", "enable"],
    ] {
        let (ok, out) = as_user("root", args);
        assert!(ok, "{args:?}: {out}");
    }
    let (ok, out) = as_user("dave", &["put", "d/1", "v"]);
    assert!(ok, "dave writes d/: {out}");
    let (ok, out) = as_user("dave", &["put", "e", "v"]);
    assert!(
        !ok && out.contains("etcdserver: permission denied"),
        "{out}"
    );
    let (ok, out) = as_user("dave", &["user", "list"]);
    assert!(
        !ok && out.contains("etcdserver: permission denied"),
        "{out}"
    );
    let (ok, out) = as_user("root", &["put", "e", "v"]);
    assert!(ok, "root writes anywhere: {out}");
    // A user without a password cannot log in with one.
    let (ok, out) = as_user("root", &["--user=dave:x", "get", "d/1"]);
    assert!(!ok && out.contains("authentication failed"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_tls_between_members() {
    let certs = tempfile::tempdir().expect("tempdir");
    make_certs(certs.path());
    let file = |n: &str| certs.path().join(n).to_string_lossy().into_owned();
    let cluster = triad_tests::cluster::Cluster::start_with_env(
        3,
        &[
            ("TRIAD_PEER_CERT_FILE", &file("server.pem")),
            ("TRIAD_PEER_KEY_FILE", &file("server-key.pem")),
            ("TRIAD_PEER_TRUSTED_CA_FILE", &file("ca.pem")),
            ("TRIAD_PEER_CLIENT_CERT_AUTH", "true"),
        ],
    );
    let list = triad_tests::ok_stdout(&cluster.etcdctl(1, &["member", "list"]));
    assert_eq!(list.matches("https://127.0.0.1:").count(), 3, "{list}");
    let mut c0 = cluster.client(0).await;
    let rev = c0
        .put("over", "tls", None)
        .await
        .expect("put")
        .header()
        .expect("h")
        .revision();
    let mut c2 = cluster.client(2).await;
    let got = c2
        .get("over", None)
        .await
        .expect("linearizable get elsewhere");
    assert_eq!(got.kvs()[0].mod_revision(), rev);
}
