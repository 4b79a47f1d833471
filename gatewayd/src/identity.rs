//! Who a client request comes from, as etcd decides it: the user its auth
//! token stands for (metadata `token`), else the common name of its
//! verified TLS client certificate, else nobody, which every guarded
//! request is refused for once auth is enabled. A token that is not valid
//! is refused even while auth is disabled, as etcd refuses it.

use tonic::{Request, Status};

use crate::backend::Backend;
use crate::tokens::Tokens;
use common::errors::EtcdError;
use common::proto::storage::AuthInfo;

/// What a request presents to prove who it is.
#[derive(Clone, Debug, Default)]
pub struct Credentials {
    token: Option<String>,
    common_name: Option<String>,
}

impl Credentials {
    pub fn of<T>(req: &Request<T>) -> Credentials {
        let md = req.metadata();
        let token = ["token", "authorization"]
            .iter()
            .find_map(|k| md.get(*k))
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let common_name = req
            .peer_certs()
            .and_then(|certs| certs.first().and_then(|c| common_name(c.as_ref())));
        Credentials { token, common_name }
    }
}

impl Credentials {
    /// A bare token (the JSON gateway's `Authorization` header).
    pub fn token(token: Option<String>) -> Credentials {
        Credentials {
            token,
            common_name: None,
        }
    }
}

fn common_name(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let cn = cert.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_string)
}

impl Backend {
    /// The identity of the request's sender (see the module doc).
    pub async fn who<T>(&self, req: &Request<T>) -> Result<AuthInfo, Status> {
        self.resolve(&Credentials::of(req)).await
    }

    pub async fn resolve(&self, c: &Credentials) -> Result<AuthInfo, Status> {
        let Some(token) = &c.token else {
            return Ok(AuthInfo {
                user: c.common_name.clone().unwrap_or_default(),
                revision: 0,
            });
        };
        if let Tokens::Jwt(jwt) = self.tokens() {
            if let Some((user, revision)) = jwt.check(token) {
                return Ok(AuthInfo { user, revision });
            }
        }
        // A simple token (or a JWT that did not verify): storaged knows
        // which simple tokens are live.
        let resolved = self.auth_resolve(token).await?;
        if resolved.user.is_empty() {
            return Err(EtcdError::InvalidAuthToken.into());
        }
        Ok(AuthInfo {
            user: resolved.user,
            revision: 0,
        })
    }
}
