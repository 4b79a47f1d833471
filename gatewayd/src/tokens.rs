//! Auth tokens as etcd issues them (`--auth-token`): simple tokens (random,
//! registered on every member through raft, expiring `--auth-token-ttl`
//! after their last use) or JWTs (`jwt,pub-key=...,priv-key=...,
//! sign-method=RS256,ttl=5m`) carrying the user name and the auth revision
//! they were issued at, checked here without asking anyone.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::Rng;
use serde::{Deserialize, Serialize};

use common::config::ConfigError;

/// Shown without keys (a configuration's Debug text may be logged).
impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Tokens::Simple { ttl } => write!(f, "Simple {{ ttl: {ttl:?} }}"),
            Tokens::Jwt(_) => f.write_str("Jwt(..)"),
        }
    }
}

pub enum Tokens {
    Simple { ttl: Duration },
    Jwt(Box<Jwt>),
}

pub struct Jwt {
    algorithm: Algorithm,
    /// Without a private key this member verifies tokens but issues none.
    sign: Option<EncodingKey>,
    verify: DecodingKey,
    ttl: Duration,
}

/// etcd's JWT claims.
#[derive(Serialize, Deserialize)]
struct Claims {
    username: String,
    revision: u64,
    exp: u64,
}

fn err(msg: impl Into<String>) -> ConfigError {
    ConfigError(msg.into())
}

fn read(path: &str, what: &str) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path).map_err(|e| err(format!("--auth-token: cannot read {what} {path}: {e}")))
}

impl Tokens {
    /// From `--auth-token` and `--auth-token-ttl` (seconds).
    pub fn parse(spec: &str, ttl_secs: u64) -> Result<Tokens, ConfigError> {
        let mut parts = spec.split(',');
        match parts.next().unwrap_or_default() {
            "simple" => {
                if ttl_secs == 0 {
                    return Err(err("--auth-token-ttl must be positive"));
                }
                Ok(Tokens::Simple {
                    ttl: Duration::from_secs(ttl_secs),
                })
            }
            "jwt" => Ok(Tokens::Jwt(Box::new(Jwt::parse(parts)?))),
            other => Err(err(format!("unknown token type: {other}"))),
        }
    }
}

impl Jwt {
    fn parse<'a>(options: impl Iterator<Item = &'a str>) -> Result<Jwt, ConfigError> {
        let (mut public, mut private, mut method, mut ttl) = (None, None, None, None);
        for opt in options {
            let (k, v) = opt
                .split_once('=')
                .ok_or_else(|| err(format!("--auth-token: malformed option {opt}")))?;
            match k {
                "pub-key" => public = Some(v),
                "priv-key" => private = Some(v),
                "sign-method" => method = Some(v),
                "ttl" => ttl = Some(common::config::parse_duration(v)?),
                other => return Err(err(format!("--auth-token: unknown option {other}"))),
            }
        }
        let method = method.ok_or_else(|| err("--auth-token jwt needs sign-method"))?;
        let algorithm: Algorithm = method
            .parse()
            .map_err(|_| err(format!("--auth-token: unsupported sign-method {method}")))?;
        let (sign, verify) = match algorithm {
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
                let secret = read(
                    private.ok_or_else(|| err("--auth-token: HMAC needs priv-key"))?,
                    "key",
                )?;
                (
                    Some(EncodingKey::from_secret(&secret)),
                    DecodingKey::from_secret(&secret),
                )
            }
            Algorithm::ES256 | Algorithm::ES384 => key_pair(
                public,
                private,
                DecodingKey::from_ec_pem,
                EncodingKey::from_ec_pem,
            )?,
            Algorithm::EdDSA => key_pair(
                public,
                private,
                DecodingKey::from_ed_pem,
                EncodingKey::from_ed_pem,
            )?,
            _ => key_pair(
                public,
                private,
                DecodingKey::from_rsa_pem,
                EncodingKey::from_rsa_pem,
            )?,
        };
        Ok(Jwt {
            algorithm,
            sign,
            verify,
            ttl: ttl.unwrap_or(Duration::from_secs(300)),
        })
    }

    /// A token for `user` at auth revision `revision`; None if this member
    /// has no private key.
    pub fn issue(&self, user: &str, revision: u64) -> Option<String> {
        let key = self.sign.as_ref()?;
        let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?;
        let claims = Claims {
            username: user.to_string(),
            revision,
            exp: (now + self.ttl).as_secs(),
        };
        jsonwebtoken::encode(&Header::new(self.algorithm), &claims, key).ok()
    }

    /// The user and auth revision of a valid, unexpired token.
    pub fn check(&self, token: &str) -> Option<(String, u64)> {
        let mut v = Validation::new(self.algorithm);
        v.leeway = 0;
        v.required_spec_claims = ["exp".to_string()].into_iter().collect();
        let data = jsonwebtoken::decode::<Claims>(token, &self.verify, &v).ok()?;
        Some((data.claims.username, data.claims.revision))
    }
}

type KeyResult<K> = jsonwebtoken::errors::Result<K>;

/// An asymmetric key pair from PEM files: the public key verifies (it is
/// required), the private key, when given, signs.
fn key_pair(
    public: Option<&str>,
    private: Option<&str>,
    decoding: fn(&[u8]) -> KeyResult<DecodingKey>,
    encoding: fn(&[u8]) -> KeyResult<EncodingKey>,
) -> Result<(Option<EncodingKey>, DecodingKey), ConfigError> {
    let public = public.ok_or_else(|| err("--auth-token: missing pub-key"))?;
    let verify = decoding(&read(public, "public key")?)
        .map_err(|e| err(format!("--auth-token: {public}: {e}")))?;
    let sign = private
        .map(|p| {
            encoding(&read(p, "private key")?).map_err(|e| err(format!("--auth-token: {p}: {e}")))
        })
        .transpose()?;
    Ok((sign, verify))
}

/// etcd's simple token shape: 16 random letters, a dot, a number.
pub fn simple_token() -> String {
    let mut rng = rand::thread_rng();
    let letters: String = (0..16)
        .map(|_| {
            let c = rng.gen_range(0..52u8);
            (if c < 26 { b'a' + c } else { b'A' + c - 26 }) as char
        })
        .collect();
    format!("{letters}.{}", rng.gen_range(1..u32::MAX))
}
