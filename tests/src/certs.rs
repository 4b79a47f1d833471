//! Test certificates: a CA that signs certificates for members and clients
//! and revokes them, written as PEM files into a test's directory.

use std::path::Path;

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, CertificateRevocationListParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyIdMethod, KeyPair, KeyUsagePurpose, RevokedCertParams,
    SerialNumber,
};

pub struct TestCa {
    cert: Certificate,
    key: KeyPair,
}

impl TestCa {
    /// A new CA, written to `dir/ca.pem`.
    pub fn new(dir: &Path) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params
            .distinguished_name
            .push(DnType::CommonName, "triad test CA");
        let key = KeyPair::generate().expect("ca key");
        let cert = params.self_signed(&key).expect("ca cert");
        std::fs::write(dir.join("ca.pem"), cert.pem()).expect("write ca");
        TestCa { cert, key }
    }

    /// A server-and-client certificate for `cn` (none when empty), valid
    /// for `sans`, written
    /// to `dir/NAME.pem` and `dir/NAME-key.pem`.
    pub fn issue(&self, dir: &Path, name: &str, cn: &str, sans: &[&str], serial: u64) {
        let sans = sans.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let mut p = CertificateParams::new(sans).expect("params");
        // rcgen names every certificate "rcgen self signed cert" unless told.
        p.distinguished_name = rcgen::DistinguishedName::new();
        if !cn.is_empty() {
            p.distinguished_name.push(DnType::CommonName, cn);
        }
        p.serial_number = Some(SerialNumber::from(serial));
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate().expect("key");
        let cert = p.signed_by(&key, &self.cert, &self.key).expect("sign");
        std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).expect("write cert");
        std::fs::write(dir.join(format!("{name}-key.pem")), key.serialize_pem())
            .expect("write key");
    }

    /// A revocation list of the certificates with `serials`, written to
    /// `dir/crl.pem`.
    pub fn revoke(&self, dir: &Path, serials: &[u64]) {
        let crl = CertificateRevocationListParams {
            this_update: rcgen::date_time_ymd(2024, 1, 1),
            next_update: rcgen::date_time_ymd(2099, 1, 1),
            crl_number: SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: serials
                .iter()
                .map(|s| RevokedCertParams {
                    serial_number: SerialNumber::from(*s),
                    revocation_time: rcgen::date_time_ymd(2024, 6, 1),
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        }
        .signed_by(&self.cert, &self.key)
        .expect("crl");
        std::fs::write(dir.join("crl.pem"), crl.pem().expect("crl pem")).expect("write crl");
    }
}
