//! Discovery settings, checked as etcd checks them: etcd 3.6's v3
//! discovery (`--discovery-token`, `--discovery-endpoints` and their
//! transport flags) and etcd 3.4's discovery protocol (`--discovery URL`,
//! `--discovery-proxy`). raftd's `discovery` modules run the protocols.

use std::path::PathBuf;
use std::time::Duration;

use crate::config::{parse_duration, ConfigError};
use crate::tls::TlsFiles;

/// The discovery flags as given (shared by every daemon's `[member]`).
#[derive(Debug, Default, Clone)]
pub struct DiscoveryFlags<'a> {
    /// etcd 3.4's `--discovery` URL and `--discovery-proxy`.
    pub url: Option<&'a str>,
    pub proxy: Option<&'a str>,
    pub token: Option<&'a str>,
    pub endpoints: Option<&'a str>,
    pub dial_timeout: Option<&'a str>,
    pub request_timeout: Option<&'a str>,
    pub keepalive_time: Option<&'a str>,
    pub keepalive_timeout: Option<&'a str>,
    pub insecure_transport: Option<bool>,
    pub insecure_skip_tls_verify: Option<bool>,
    pub cert: Option<&'a str>,
    pub key: Option<&'a str>,
    pub cacert: Option<&'a str>,
    pub user: Option<&'a str>,
    pub password: Option<&'a str>,
}

/// Where and how this member finds its initial cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Discovery {
    V2(V2Discovery),
    V3(Box<V3Discovery>),
}

/// etcd 3.4's discovery: a registry in a v2 keys API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V2Discovery {
    /// The whole `--discovery` URL: it seeds the member IDs.
    pub url: String,
    /// host:port of the discovery service.
    pub authority: String,
    /// The registry's path (`/v2/keys/_etcd/registry/<token>`).
    pub path: String,
    /// host:port of an HTTP proxy to go through.
    pub proxy: Option<String>,
}

/// etcd 3.6's v3 discovery: a registry in a v3 cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V3Discovery {
    /// The token names this cluster's registry and seeds the member IDs.
    pub token: String,
    /// `http(s)://host:port` of the discovery cluster's members.
    pub endpoints: Vec<String>,
    pub dial_timeout: Duration,
    pub request_timeout: Duration,
    pub keepalive_time: Duration,
    pub keepalive_timeout: Duration,
    /// The client certificate and CA, unless `--discovery-insecure-transport`.
    pub tls: Option<TlsFiles>,
    /// `--discovery-user` and `--discovery-password`.
    pub credentials: Option<(String, String)>,
}

fn err(msg: impl Into<String>) -> ConfigError {
    ConfigError(msg.into())
}

fn duration(text: Option<&str>, default: Duration, flag: &str) -> Result<Duration, ConfigError> {
    match text {
        None => Ok(default),
        Some(t) => parse_duration(t).map_err(|e| err(format!("--{flag}: {}", e.0))),
    }
}

/// `http://host:port` (optional path) split in its authority and path.
fn http_url(url: &str) -> Option<(String, String)> {
    let rest = url.strip_prefix("http://")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    crate::config::url_host_port(&format!("http://{authority}")).ok()?;
    Some((
        authority.to_string(),
        path.trim_end_matches('/').to_string(),
    ))
}

impl Discovery {
    /// The settings, or None when no discovery is asked for.
    pub fn from_flags(f: &DiscoveryFlags) -> Result<Option<Discovery>, ConfigError> {
        let v2 = f.url.is_some_and(|u| !u.is_empty()) || f.proxy.is_some_and(|p| !p.is_empty());
        let v3 = [
            f.token,
            f.endpoints,
            f.cert,
            f.key,
            f.cacert,
            f.user,
            f.password,
        ]
        .iter()
        .any(|v| v.is_some_and(|v| !v.is_empty()));
        if v2 && v3 {
            return Err(err(
                "both v2 discovery settings (discovery, discovery-proxy) and v3 discovery settings \
                 (discovery-token, discovery-endpoints, discovery-cert, discovery-key, \
                 discovery-cacert, discovery-user, discovery-password) are set",
            ));
        }
        if v2 {
            return V2Discovery::from_flags(f).map(|d| d.map(Discovery::V2));
        }
        V3Discovery::from_flags(f).map(|d| d.map(|d| Discovery::V3(Box::new(d))))
    }

    /// What seeds the member IDs instead of `--initial-cluster-token`.
    pub fn id_seed(&self) -> &str {
        match self {
            Discovery::V2(d) => &d.url,
            Discovery::V3(d) => &d.token,
        }
    }
}

impl V2Discovery {
    fn from_flags(f: &DiscoveryFlags) -> Result<Option<V2Discovery>, ConfigError> {
        let Some(url) = f.url.filter(|u| !u.is_empty()) else {
            return Ok(None);
        };
        let (authority, path) = http_url(url).ok_or_else(|| {
            err(format!(
                "--discovery {url:?}: want http://host:port/path (https discovery is not supported)"
            ))
        })?;
        let proxy = match f.proxy.filter(|p| !p.is_empty()) {
            None => None,
            Some(p) => {
                let with_scheme = if p.contains("://") {
                    p.to_string()
                } else {
                    format!("http://{p}")
                };
                let (authority, _) = http_url(&with_scheme).ok_or_else(|| {
                    err(format!(
                        "invalid proxy address {p:?}: want http://host:port"
                    ))
                })?;
                Some(authority)
            }
        };
        Ok(Some(V2Discovery {
            url: url.to_string(),
            authority,
            path,
            proxy,
        }))
    }
}

impl V3Discovery {
    /// The settings, or None when v3 discovery is not asked for. etcd's
    /// rules: token and endpoints go together, no endpoint is empty.
    fn from_flags(f: &DiscoveryFlags) -> Result<Option<V3Discovery>, ConfigError> {
        let (token, endpoints) = match (f.token, f.endpoints) {
            (None | Some(""), None | Some("")) => return Ok(None),
            (Some(t), Some(e)) if !t.is_empty() && !e.is_empty() => (t, e),
            _ => {
                return Err(err(
                    "both --discovery-token and --discovery-endpoints must be set",
                ))
            }
        };
        let listed: Vec<&str> = endpoints.split(',').map(str::trim).collect();
        if listed.iter().any(|e| e.is_empty()) {
            return Err(err(
                "--discovery-endpoints must not contain empty endpoints",
            ));
        }
        if f.insecure_skip_tls_verify == Some(true) {
            return Err(err(
                "--discovery-insecure-skip-tls-verify is not supported: give the discovery \
                 cluster's CA with --discovery-cacert",
            ));
        }
        let insecure = f.insecure_transport.unwrap_or(true);
        let tls = (!insecure).then(|| TlsFiles {
            cert: f.cert.map(PathBuf::from),
            key: f.key.map(PathBuf::from),
            trusted_ca: f.cacert.map(PathBuf::from),
            ..TlsFiles::default()
        });
        if let Some(t) = &tls {
            if t.cert.is_some() != t.key.is_some() {
                return Err(err(
                    "--discovery-cert and --discovery-key must be given together",
                ));
            }
        }
        let scheme = if insecure { "http" } else { "https" };
        let endpoints = listed
            .iter()
            .map(|e| {
                let url = if e.contains("://") {
                    e.to_string()
                } else {
                    format!("{scheme}://{e}")
                };
                crate::config::url_host_port(&url)
                    .map_err(|why| err(format!("--discovery-endpoints: {why}")))?;
                Ok(url)
            })
            .collect::<Result<Vec<_>, ConfigError>>()?;
        let credentials = match (f.user, f.password) {
            (None | Some(""), _) => None,
            (Some(user), password) => Some((user.to_string(), password.unwrap_or("").to_string())),
        };
        Ok(Some(V3Discovery {
            token: token.to_string(),
            endpoints,
            dial_timeout: duration(
                f.dial_timeout,
                Duration::from_secs(2),
                "discovery-dial-timeout",
            )?,
            request_timeout: duration(
                f.request_timeout,
                Duration::from_secs(5),
                "discovery-request-timeout",
            )?,
            keepalive_time: duration(
                f.keepalive_time,
                Duration::from_secs(2),
                "discovery-keepalive-time",
            )?,
            keepalive_timeout: duration(
                f.keepalive_timeout,
                Duration::from_secs(6),
                "discovery-keepalive-timeout",
            )?,
            tls,
            credentials,
        }))
    }

    /// The registry every member of this token registers under.
    pub fn registry(&self) -> String {
        format!("/_etcd/registry/{}", self.token)
    }

    /// Where the members register, one key each.
    pub fn members_prefix(&self) -> String {
        format!("{}/members", self.registry())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_and_endpoints_go_together_as_in_etcd() {
        let none = DiscoveryFlags::default();
        assert_eq!(Discovery::from_flags(&none).unwrap(), None);
        let only_token = DiscoveryFlags {
            token: Some("t"),
            ..Default::default()
        };
        assert_eq!(
            Discovery::from_flags(&only_token).unwrap_err().0,
            "both --discovery-token and --discovery-endpoints must be set"
        );
        let empty = DiscoveryFlags {
            token: Some("t"),
            endpoints: Some("127.0.0.1:2379,"),
            ..Default::default()
        };
        assert_eq!(
            Discovery::from_flags(&empty).unwrap_err().0,
            "--discovery-endpoints must not contain empty endpoints"
        );
    }

    #[test]
    fn endpoints_take_the_transport_scheme_and_defaults_are_etcds() {
        let f = DiscoveryFlags {
            token: Some("tok"),
            endpoints: Some("127.0.0.1:2379, http://10.0.0.2:2379"),
            ..Default::default()
        };
        let Some(Discovery::V3(d)) = Discovery::from_flags(&f).unwrap() else {
            panic!("v3 discovery expected");
        };
        assert_eq!(
            d.endpoints,
            ["http://127.0.0.1:2379", "http://10.0.0.2:2379"]
        );
        assert_eq!(d.registry(), "/_etcd/registry/tok");
        assert_eq!(d.request_timeout, Duration::from_secs(5));
        assert_eq!(d.tls, None);
        let secure = DiscoveryFlags {
            insecure_transport: Some(false),
            cacert: Some("/ca.pem"),
            ..f
        };
        let Some(Discovery::V3(d)) = Discovery::from_flags(&secure).unwrap() else {
            panic!("v3 discovery expected");
        };
        assert_eq!(d.endpoints[0], "https://127.0.0.1:2379");
        assert_eq!(d.tls.unwrap().trusted_ca, Some(PathBuf::from("/ca.pem")));
    }

    #[test]
    fn a_v2_discovery_url_is_split_and_seeds_the_ids() {
        let f = DiscoveryFlags {
            url: Some("http://127.0.0.1:2379/v2/keys/_etcd/registry/abc"),
            proxy: Some("127.0.0.1:8080"),
            ..Default::default()
        };
        let Some(Discovery::V2(d)) = Discovery::from_flags(&f).unwrap() else {
            panic!("v2 discovery expected");
        };
        assert_eq!(d.authority, "127.0.0.1:2379");
        assert_eq!(d.path, "/v2/keys/_etcd/registry/abc");
        assert_eq!(d.proxy.as_deref(), Some("127.0.0.1:8080"));
        assert_eq!(
            Discovery::V2(d).id_seed(),
            "http://127.0.0.1:2379/v2/keys/_etcd/registry/abc"
        );
        let both = DiscoveryFlags {
            token: Some("t"),
            ..f
        };
        assert!(Discovery::from_flags(&both)
            .unwrap_err()
            .0
            .starts_with("both v2 discovery settings"));
    }
}
