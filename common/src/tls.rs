//! TLS from etcd's flags: a server identity (`--cert-file`/`--key-file`),
//! the CA that client certificates must chain to (`--trusted-ca-file`) and
//! whether they must present one (`--client-cert-auth`); the same set with
//! `--peer-` for member-to-member traffic, where each member is also a
//! client of the others.

use std::path::{Path, PathBuf};

use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

use crate::config::ConfigError;

/// The certificate files of one side (clients or peers).
#[derive(Debug, Clone, Default)]
pub struct TlsFiles {
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub trusted_ca: Option<PathBuf>,
    pub client_cert_auth: bool,
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

    /// The server side, or None without a certificate.
    pub fn server(&self) -> Result<Option<ServerTlsConfig>, ConfigError> {
        let Some(identity) = self.identity()? else {
            return Ok(None);
        };
        let mut config = ServerTlsConfig::new().identity(identity);
        if let Some(ca) = self.ca()? {
            config = config
                .client_ca_root(ca)
                .client_auth_optional(!self.client_cert_auth);
        }
        Ok(Some(config))
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
