//! etcd's certificate checks at the TLS handshake: `--client-crl-file`
//! (a revoked client certificate is refused), `--client-cert-allowed-hostname`
//! (only certificates valid for that name), `--cipher-suites` (TLS 1.2
//! offers only the listed suites) and, on the peer port,
//! `--peer-cert-allowed-cn` (a certificate from the right CA with another
//! CN is refused).

use std::path::Path;
use std::process::{Command, Stdio};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyIdMethod, KeyPair, KeyUsagePurpose, RevokedCertParams,
    SerialNumber,
};
use triad_tests::{etcdctl, Member};

/// A CA, a server certificate, client certificates (name: CN, SAN, serial)
/// and a CRL revoking serial 66.
fn make_certs(dir: &Path) {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "triad test CA");
    let ca_key = KeyPair::generate().expect("ca key");
    let ca = ca_params.self_signed(&ca_key).expect("ca cert");
    std::fs::write(dir.join("ca.pem"), ca.pem()).expect("write ca");
    let certs = [
        ("server", "triad-member", "127.0.0.1", 1u64),
        ("good", "root", "allowed.example", 65),
        ("revoked", "root", "allowed.example", 66),
        ("elsewhere", "root", "other.example", 67),
        ("peer-ok", "triad-member", "127.0.0.1", 68),
    ];
    for (name, cn, san, serial) in certs {
        // The member's own certificate also serves `triad up`'s readiness
        // probe as a client: it must pass the allowed hostname too.
        let mut sans = vec![san.to_string(), "localhost".to_string()];
        if name == "server" {
            sans.push("allowed.example".to_string());
        }
        let mut p = CertificateParams::new(sans).expect("params");
        p.distinguished_name.push(DnType::CommonName, cn);
        p.serial_number = Some(SerialNumber::from(serial));
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate().expect("key");
        let cert = p.signed_by(&key, &ca, &ca_key).expect("sign");
        std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).expect("write cert");
        std::fs::write(dir.join(format!("{name}-key.pem")), key.serialize_pem())
            .expect("write key");
    }
    let crl = CertificateRevocationListParams {
        this_update: rcgen::date_time_ymd(2024, 1, 1),
        next_update: rcgen::date_time_ymd(2099, 1, 1),
        crl_number: SerialNumber::from(1u64),
        issuing_distribution_point: None,
        revoked_certs: vec![RevokedCertParams {
            serial_number: SerialNumber::from(66u64),
            revocation_time: rcgen::date_time_ymd(2024, 6, 1),
            reason_code: None,
            invalidity_date: None,
        }],
        key_identifier_method: KeyIdMethod::Sha256,
    }
    .signed_by(&ca, &ca_key)
    .expect("crl");
    std::fs::write(dir.join("crl.pem"), crl.pem().expect("crl pem")).expect("write crl");
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
