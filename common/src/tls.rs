//! TLS from etcd's flags: a server identity (`--cert-file`/`--key-file`),
//! the CA that client certificates must chain to (`--trusted-ca-file`),
//! whether they must present one (`--client-cert-auth`), the revocation
//! list they are checked against (`--client-crl-file`) and the TLS 1.2
//! cipher suites offered (`--cipher-suites`); the same set with `--peer-`
//! for member-to-member traffic, where each member is also a client of the
//! others. Servers do their own handshakes (`accept`) so the CRL and the
//! suites apply, and hand tonic the TLS streams, whose client certificates
//! reach each request as tonic's `peer_certs`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use rustls::server::danger::ClientCertVerifier;
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

use crate::config::ConfigError;

/// ring's suites, the TLS 1.2 ones narrowed to etcd's `--cipher-suites`
/// list (Go's names; an unknown or unsupported one is an error, as etcd's
/// "unexpected TLS cipher suite").
fn crypto_provider(suites: Option<&str>) -> Result<rustls::crypto::CryptoProvider, ConfigError> {
    let mut provider = rustls::crypto::ring::default_provider();
    let Some(list) = suites.filter(|l| !l.trim().is_empty()) else {
        return Ok(provider);
    };
    let mut chosen: Vec<rustls::SupportedCipherSuite> = provider
        .cipher_suites
        .iter()
        .filter(|s| s.version() == &rustls::version::TLS13)
        .copied()
        .collect();
    for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let suite = provider
            .cipher_suites
            .iter()
            .find(|s| format!("{:?}", s.suite()) == name && s.version() == &rustls::version::TLS12)
            .ok_or_else(|| ConfigError(format!("unexpected TLS cipher suite {name:?}")))?;
        chosen.push(*suite);
    }
    provider.cipher_suites = chosen;
    Ok(provider)
}

/// A client certificate checked as the CA says, then for etcd's allowed
/// CN and hostname (at the handshake, as etcd checks them).
#[derive(Debug)]
struct AllowedNames {
    inner: Arc<dyn ClientCertVerifier>,
    cn: Option<String>,
    hostname: Option<String>,
}

impl ClientCertVerifier for AllowedNames {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }
    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }
    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        self.inner.root_hint_subjects()
    }
    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        let names = crate::cert_names::CertNames::parse(end_entity.as_ref()).ok_or(
            rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding),
        )?;
        let refused = |why: String| {
            rustls::Error::InvalidCertificate(rustls::CertificateError::Other(rustls::OtherError(
                Arc::new(std::io::Error::other(why)),
            )))
        };
        if let Some(cn) = &self.cn {
            if names.common_name.as_deref() != Some(cn.as_str()) {
                return Err(refused(format!("CN is not the allowed {cn:?}")));
            }
        }
        if let Some(host) = &self.hostname {
            if !names.covers(host) {
                return Err(refused(format!(
                    "not valid for the allowed hostname {host:?}"
                )));
            }
        }
        Ok(verified)
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// How long a client may take over its TLS handshake.
const HANDSHAKE: Duration = Duration::from_secs(10);

/// TLS over the connections of `incoming`: each handshake runs on its own
/// task (a slow client holds up no other), and only connections whose
/// handshake succeeded (client certificate and CRL included) come out.
pub fn accept<S, T>(
    incoming: S,
    acceptor: tokio_rustls::TlsAcceptor,
) -> impl futures::Stream<Item = std::io::Result<tokio_rustls::server::TlsStream<T>>>
where
    S: futures::Stream<Item = std::io::Result<T>> + Send + 'static,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use futures::StreamExt;
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        let mut incoming = std::pin::pin!(incoming);
        while let Some(conn) = incoming.next().await {
            let conn = match conn {
                Ok(c) => c,
                Err(e) => {
                    tracing::debug!(error = %e, "accept failed");
                    continue;
                }
            };
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE, acceptor.accept(conn)).await {
                    Ok(Ok(tls)) => {
                        let _ = tx.send(Ok(tls)).await;
                    }
                    Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!("TLS handshake timed out"),
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// The certificate files of one side (clients or peers).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub trusted_ca: Option<PathBuf>,
    pub client_cert_auth: bool,
    /// A PEM file of certificate revocation lists client certificates are
    /// checked against.
    pub crl: Option<PathBuf>,
    /// etcd's comma-separated TLS 1.2 cipher suite names (Go's names);
    /// TLS 1.3 keeps its suites, as in Go.
    pub cipher_suites: Option<String>,
    /// The CN a client certificate must have (`--peer-cert-allowed-cn`).
    pub allowed_cn: Option<String>,
    /// A name or address a client certificate must be valid for
    /// (`--client-cert-allowed-hostname`, `--peer-cert-allowed-hostname`).
    pub allowed_hostname: Option<String>,
}

fn pem_error(what: &str, path: &Path, e: rustls::pki_types::pem::Error) -> ConfigError {
    ConfigError(format!("cannot read {what} {}: {e}", path.display()))
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path)
        .map_err(|e| ConfigError(format!("cannot read {what} {}: {e}", path.display())))
}

impl TlsFiles {
    /// Whether a certificate and key are configured.
    pub fn enabled(&self) -> bool {
        self.cert.is_some() && self.key.is_some()
    }

    /// Check the flags go together (as etcd: a cert needs its key, client
    /// certificate auth needs a CA).
    pub fn check(&self, prefix: &str) -> Result<(), ConfigError> {
        if self.cert.is_some() != self.key.is_some() {
            return Err(ConfigError(format!(
                "--{prefix}cert-file and --{prefix}key-file must be given together"
            )));
        }
        if self.client_cert_auth && self.trusted_ca.is_none() {
            return Err(ConfigError(format!(
                "--{prefix}client-cert-auth needs --{prefix}trusted-ca-file"
            )));
        }
        Ok(())
    }

    fn identity(&self) -> Result<Option<Identity>, ConfigError> {
        match (&self.cert, &self.key) {
            (Some(c), Some(k)) => Ok(Some(Identity::from_pem(
                read(c, "certificate")?,
                read(k, "key")?,
            ))),
            _ => Ok(None),
        }
    }

    fn ca(&self) -> Result<Option<Certificate>, ConfigError> {
        self.trusted_ca
            .as_deref()
            .map(|p| read(p, "trusted CA").map(Certificate::from_pem))
            .transpose()
    }

    /// The common name of the certificate this side presents (its first
    /// certificate), if it has one.
    pub fn common_name(&self) -> Result<Option<String>, ConfigError> {
        let Some(cert) = &self.cert else {
            return Ok(None);
        };
        let first = CertificateDer::pem_slice_iter(&read(cert, "certificate")?)
            .next()
            .transpose()
            .map_err(|e| ConfigError(format!("cannot read certificate {}: {e}", cert.display())))?;
        Ok(first
            .and_then(|der| crate::cert_names::CertNames::parse(&der))
            .and_then(|names| names.common_name)
            .filter(|cn| !cn.is_empty()))
    }

    /// This side's certificate chain and key as rustls takes them, or None
    /// without a certificate.
    fn chain_and_key(
        &self,
    ) -> Result<Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>, ConfigError> {
        let (Some(cert), Some(key)) = (&self.cert, &self.key) else {
            return Ok(None);
        };
        let chain = CertificateDer::pem_slice_iter(&read(cert, "certificate")?)
            .collect::<Result<_, _>>()
            .map_err(|e| pem_error("certificate", cert, e))?;
        let key_der = PrivateKeyDer::from_pem_slice(&read(key, "key")?)
            .map_err(|e| pem_error("key", key, e))?;
        Ok(Some((chain, key_der)))
    }

    /// The server side, or None without a certificate.
    pub fn acceptor(&self) -> Result<Option<tokio_rustls::TlsAcceptor>, ConfigError> {
        let (Some(cert), Some((chain, key_der))) = (&self.cert, self.chain_and_key()?) else {
            return Ok(None);
        };
        let provider = Arc::new(crypto_provider(self.cipher_suites.as_deref())?);
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| ConfigError(format!("TLS: {e}")))?;
        let builder = match &self.trusted_ca {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                for c in CertificateDer::pem_slice_iter(&read(ca, "trusted CA")?) {
                    let c = c.map_err(|e| pem_error("trusted CA", ca, e))?;
                    roots
                        .add(c)
                        .map_err(|e| ConfigError(format!("trusted CA {}: {e}", ca.display())))?;
                }
                let mut verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider,
                );
                if let Some(crl) = &self.crl {
                    let crls = CertificateRevocationListDer::pem_slice_iter(&read(crl, "CRL")?)
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(|e| pem_error("CRL", crl, e))?;
                    verifier = verifier.with_crls(crls);
                }
                if !self.client_cert_auth {
                    verifier = verifier.allow_unauthenticated();
                }
                let verifier = verifier
                    .build()
                    .map_err(|e| ConfigError(format!("client certificate checks: {e}")))?;
                let verifier: Arc<dyn ClientCertVerifier> =
                    if self.allowed_cn.is_some() || self.allowed_hostname.is_some() {
                        Arc::new(AllowedNames {
                            inner: verifier,
                            cn: self.allowed_cn.clone(),
                            hostname: self.allowed_hostname.clone(),
                        })
                    } else {
                        verifier
                    };
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder
            .with_single_cert(chain, key_der)
            .map_err(|e| ConfigError(format!("certificate {}: {e}", cert.display())))?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Some(tokio_rustls::TlsAcceptor::from(Arc::new(config))))
    }

    /// The client side (a member calling its peers): trust the CA (else
    /// the system's roots) and present this member's certificate.
    pub fn client(&self) -> Result<ClientTlsConfig, ConfigError> {
        let mut config = ClientTlsConfig::new();
        if let Some(ca) = self.ca()? {
            config = config.ca_certificate(ca);
        }
        if let Some(id) = self.identity()? {
            config = config.identity(id);
        }
        Ok(config)
    }
}

/// Accepts any server certificate, as Go's InsecureSkipVerify: what etcd's
/// `--peer-auto-tls` members do with each other's self-signed
/// certificates. The handshake's signatures are still checked.
#[derive(Debug)]
struct AnyServerCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyServerCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A client TLS configuration for `connector`.
pub type ClientConfig = Arc<rustls::ClientConfig>;

/// The TLS stream an unverifying connector hands tonic.
pub type ClientStream =
    hyper_util::rt::TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

impl TlsFiles {
    /// A client that presents this side's certificate and accepts any
    /// server's (etcd's self-signed peers); HTTP/2 by ALPN.
    pub fn unverified_client(&self) -> Result<ClientConfig, ConfigError> {
        let provider = Arc::new(crypto_provider(self.cipher_suites.as_deref())?);
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| ConfigError(format!("TLS: {e}")))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyServerCertificate(provider)));
        let mut config = match self.chain_and_key()? {
            Some((chain, key_der)) => builder
                .with_client_auth_cert(chain, key_der)
                .map_err(|e| ConfigError(format!("client certificate: {e}")))?,
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(config))
    }
}

/// A tonic connector doing TLS with `config` to the URI's host and port,
/// whatever its scheme (give tonic an `http://` URI so it adds no TLS of
/// its own).
pub fn connector(
    config: ClientConfig,
) -> impl tower::Service<
    http::Uri,
    Response = ClientStream,
    Error = std::io::Error,
    Future: Send + 'static,
> + Clone
       + Send
       + 'static {
    tower::service_fn(move |uri: http::Uri| {
        let config = config.clone();
        async move {
            let bad =
                || std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("bad URI {uri}"));
            let host = uri
                .host()
                .ok_or_else(bad)?
                .trim_matches(['[', ']'])
                .to_string();
            let port = uri.port_u16().ok_or_else(bad)?;
            let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
            tcp.set_nodelay(true)?;
            let name = rustls::pki_types::ServerName::try_from(host).map_err(|_| bad())?;
            let tls = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await?;
            Ok(hyper_util::rt::TokioIo::new(tls))
        }
    })
}

/// etcd's `--auto-tls`: a self-signed certificate for `hosts` (names or
/// addresses) in `dir` (`<data-dir>/fixtures/client`), made on first use
/// and reused after (as etcd's `SelfCert`); the key file is private.
pub fn self_signed(dir: &Path, hosts: &[String]) -> Result<(PathBuf, PathBuf), ConfigError> {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    if cert.exists() && key.exists() {
        return Ok((cert, key));
    }
    let fail = |e: &dyn std::fmt::Display| {
        ConfigError(format!(
            "cannot make a self-signed certificate in {}: {e}",
            dir.display()
        ))
    };
    crate::member_dir::create_private(dir).map_err(|e| fail(&e))?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(|e| fail(&e))?;
    params.subject_alt_names = hosts
        .iter()
        .map(|h| match h.parse::<std::net::IpAddr>() {
            Ok(ip) => Ok(rcgen::SanType::IpAddress(ip)),
            Err(_) => rcgen::Ia5String::try_from(h.as_str()).map(rcgen::SanType::DnsName),
        })
        .collect::<Result<_, _>>()
        .map_err(|e| fail(&e))?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "etcd");
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyEncipherment,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    params.extended_key_usages = vec![
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.is_ca = rcgen::IsCa::ExplicitNoCa;
    let now = std::time::SystemTime::now();
    params.not_before = now.into();
    params.not_after = (now + std::time::Duration::from_secs(365 * 24 * 3600)).into();
    let key_pair = rcgen::KeyPair::generate().map_err(|e| fail(&e))?;
    let made = params.self_signed(&key_pair).map_err(|e| fail(&e))?;
    crate::durable::write_private(&key, key_pair.serialize_pem().as_bytes())
        .map_err(|e| fail(&e))?;
    crate::durable::write_private(&cert, made.pem().as_bytes()).map_err(|e| fail(&e))?;
    Ok((cert, key))
}
