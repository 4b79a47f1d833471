//! etcd's certificate checks at the TLS handshake: `--client-crl-file`
//! (a revoked client certificate is refused), `--client-cert-allowed-hostname`
//! (only certificates valid for that name), `--cipher-suites` (TLS 1.2
//! offers only the listed suites) and, on the peer port,
//! `--peer-cert-allowed-cn` (a certificate from the right CA with another
//! CN is refused).

use std::path::Path;
use std::process::{Command, Stdio};

use triad_tests::certs::TestCa;
use triad_tests::{etcdctl, Member};

/// A CA, a server certificate, client certificates (name: CN, SAN,
/// serial) and a CRL revoking serial 66.
fn make_certs(dir: &Path) {
    let ca = TestCa::new(dir);
    // The member's own certificate also serves `triad up`'s readiness
    // probe as a client: it must pass the allowed hostname too.
    let member = ["127.0.0.1", "localhost", "allowed.example"];
    ca.issue(dir, "server", "triad-member", &member, 1);
    ca.issue(dir, "good", "root", &["allowed.example"], 65);
    ca.issue(dir, "revoked", "root", &["allowed.example"], 66);
    ca.issue(dir, "elsewhere", "root", &["other.example"], 67);
    ca.issue(dir, "peer-ok", "triad-member", &["127.0.0.1"], 68);
    ca.revoke(dir, &[66]);
}

/// Whether a TLS 1.2 handshake with `cipher` (OpenSSL's name) and the
/// client certificate `name` succeeds on `port`.
fn handshake(dir: &Path, port: u16, cipher: &str, name: &str) -> bool {
    let file = |n: &str| dir.join(n).to_string_lossy().into_owned();
    let out = Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
        .args(["-tls1_2", "-cipher", cipher])
        .args(["-cert", &file(&format!("{name}.pem"))])
        .args(["-key", &file(&format!("{name}-key.pem"))])
        .args(["-CAfile", &file("ca.pem"), "-alpn", "h2"])
        .stdin(Stdio::null())
        .output()
        .expect("openssl s_client (Debian's openssl)");
    let text = String::from_utf8_lossy(&out.stdout);
    out.status.success() && text.contains(&format!("Cipher is {cipher}"))
}

#[test]
fn revoked_foreign_and_unlisted_are_refused_at_the_handshake() {
    let certs = tempfile::tempdir().expect("tempdir");
    make_certs(certs.path());
    let file = |n: &str| certs.path().join(n).to_string_lossy().into_owned();
    let m = Member::start_with_env(&[
        ("TRIAD_CERT_FILE", &file("server.pem")),
        ("TRIAD_KEY_FILE", &file("server-key.pem")),
        ("TRIAD_TRUSTED_CA_FILE", &file("ca.pem")),
        ("TRIAD_CLIENT_CERT_AUTH", "true"),
        ("TRIAD_CLIENT_CRL_FILE", &file("crl.pem")),
        ("TRIAD_CLIENT_CERT_ALLOWED_HOSTNAME", "allowed.example"),
        (
            "TRIAD_CIPHER_SUITES",
            "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
        ),
        ("TRIAD_PEER_CERT_FILE", &file("server.pem")),
        ("TRIAD_PEER_KEY_FILE", &file("server-key.pem")),
        ("TRIAD_PEER_TRUSTED_CA_FILE", &file("ca.pem")),
        ("TRIAD_PEER_CLIENT_CERT_AUTH", "true"),
        ("TRIAD_PEER_CERT_ALLOWED_CN", "triad-member"),
    ]);
    let ca = format!("--cacert={}", file("ca.pem"));
    let put_as = |name: &str| {
        let cert = format!("--cert={}", file(&format!("{name}.pem")));
        let key = format!("--key={}", file(&format!("{name}-key.pem")));
        etcdctl(
            &m.endpoint(),
            &[&ca, &cert, &key, "--dial-timeout=3s", "put", "k", name],
        )
        .status
        .success()
    };
    assert!(put_as("good"), "a valid client certificate was refused");
    assert!(!put_as("revoked"), "a revoked client certificate was taken");
    assert!(
        !put_as("elsewhere"),
        "a certificate for another host was taken"
    );

    let port = m.port;
    assert!(handshake(
        certs.path(),
        port,
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "good"
    ));
    assert!(
        !handshake(certs.path(), port, "ECDHE-ECDSA-AES256-GCM-SHA384", "good"),
        "an unlisted TLS 1.2 suite was negotiated"
    );
    // The peer port: the right CA, but only the allowed CN.
    let peer = port + 1;
    assert!(handshake(
        certs.path(),
        peer,
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "peer-ok"
    ));
    assert!(
        !handshake(certs.path(), peer, "ECDHE-ECDSA-AES128-GCM-SHA256", "good"),
        "a peer certificate with another CN was taken"
    );
}
