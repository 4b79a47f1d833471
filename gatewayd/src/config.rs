//! gatewayd's configuration: its options (`[gatewayd]`, `TRIAD_*`
//! variables, flags, under etcd's names), every default in one place
//! (`defaults`), and the typed configuration gatewayd runs with
//! (`Resolved`), resolved and checked once at start.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use common::config::Member;

/// Every default of gatewayd's options (etcd's where etcd has the option).
pub mod defaults {
    pub const LISTEN_CLIENT_URLS: &str = "http://localhost:2379";
    pub const ADVERTISE_CLIENT_URLS: &str = "http://localhost:2379";
    pub const PROXY_RETRY_DELAY: &str = "1m";
    pub const WORKER_THREADS: usize = 1;
    pub const WATCH_PROGRESS_NOTIFY_INTERVAL: &str = "10m";
    pub const MAX_CONCURRENT_STREAMS: u32 = u32::MAX;
    pub const BCRYPT_COST: u32 = 10;
    pub const AUTH_TOKEN: &str = "simple";
    pub const AUTH_TOKEN_TTL: u64 = 300;
    /// 0: etcd's default quota (2 GiB).
    pub const QUOTA_BACKEND_BYTES: i64 = 0;
    /// etcd's 5 s + 2 × its default election timeout.
    pub const REQUEST_TIMEOUT_MS: u64 = 7000;
    /// etcd answers /health within its one-second check deadline.
    pub const PROBE_TIMEOUT_MS: u64 = 1000;
    /// The etcd version gatewayd reports (clients gate features on it).
    pub const ETCD_VERSION: &str = "3.5.17";
    /// etcd's (and gRPC's) server keepalive: a ping after 2 hours idle,
    /// the connection closed 20 s after an unanswered one.
    pub const GRPC_KEEPALIVE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(7200);
    pub const GRPC_KEEPALIVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);
    /// etcd's --grpc-keepalive-min-time.
    pub const GRPC_KEEPALIVE_MIN_TIME: std::time::Duration = std::time::Duration::from_secs(5);
}

/// Room for gRPC framing above --max-request-bytes (as etcd allows).
pub const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;

/// gatewayd's own options (`[gatewayd]`), with etcd's flag names.
#[derive(clap::Args, Serialize, Deserialize, Debug, Clone, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct GatewaydOpts {
    /// List of URLs to listen on for client traffic.
    #[arg(long, env = "TRIAD_LISTEN_CLIENT_URLS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen_client_urls: Option<String>,
    /// URLs that serve the HTTP endpoints (/health, /metrics, the JSON
    /// gateway, ...) alone, taking them off --listen-client-urls (etcd
    /// 3.5's flag).
    #[arg(long, env = "TRIAD_LISTEN_CLIENT_HTTP_URLS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen_client_http_urls: Option<String>,
    /// List of this member's client URLs to advertise to the public.
    #[arg(long, env = "TRIAD_ADVERTISE_CLIENT_URLS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advertise_client_urls: Option<String>,
    /// Raise alarms when backend size exceeds the given quota (0 defaults
    /// to low space quota, 2 GiB; negative: no quota).
    #[arg(long, env = "TRIAD_QUOTA_BACKEND_BYTES", allow_negative_numbers = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quota_backend_bytes: Option<i64>,
    /// Path to the client server TLS cert file.
    #[arg(long, env = "TRIAD_CERT_FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<std::path::PathBuf>,
    /// Path to the client server TLS key file.
    #[arg(long, env = "TRIAD_KEY_FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_file: Option<std::path::PathBuf>,
    /// Path to the client server TLS trusted CA cert file.
    #[arg(long, env = "TRIAD_TRUSTED_CA_FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trusted_ca_file: Option<std::path::PathBuf>,
    /// Path to the client certificate revocation list file.
    #[arg(long, env = "TRIAD_CLIENT_CRL_FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_crl_file: Option<std::path::PathBuf>,
    /// Allowed TLS hostname (a name or address) client certificates must
    /// be valid for.
    #[arg(long, env = "TRIAD_CLIENT_CERT_ALLOWED_HOSTNAME")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_cert_allowed_hostname: Option<String>,
    /// Enable client cert authentication.
    #[arg(long, env = "TRIAD_CLIENT_CERT_AUTH", num_args = 0..=1, default_missing_value = "true")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_cert_auth: Option<bool>,
    /// Maximum concurrent streams that each client can open at a time.
    #[arg(long, env = "TRIAD_MAX_CONCURRENT_STREAMS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_concurrent_streams: Option<u32>,
    /// How long (ms) a request may wait for raftd/storaged before failing with
    /// "etcdserver: request timed out" (etcd: 5s + 2 x election timeout).
    #[arg(long, env = "TRIAD_REQUEST_TIMEOUT_MS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_timeout_ms: Option<u64>,
    /// How long (ms) /health, /livez and /readyz wait for raftd or storaged
    /// before answering 503 with the daemon that did not answer.
    #[arg(long, env = "TRIAD_PROBE_TIMEOUT_MS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probe_timeout_ms: Option<u64>,
    /// Interval of progress notifications to watchers that asked for them
    /// and saw no events (etcd's --experimental-watch-progress-notify-interval).
    #[arg(long, env = "TRIAD_WATCH_PROGRESS_NOTIFY_INTERVAL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub watch_progress_notify_interval: Option<String>,
    /// Threads serving clients: 1 (the default) runs everything on one
    /// thread, which is fastest on small machines; more use a thread pool.
    #[arg(long, env = "TRIAD_WORKER_THREADS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker_threads: Option<usize>,
    /// Proxy mode instead of serving a local member: "l4" forwards client
    /// connections to --proxy-endpoints (etcd's `etcd gateway`), "l7"
    /// serves the gRPC API and forwards requests (etcd's `grpc-proxy`).
    #[arg(long, env = "TRIAD_PROXY")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy: Option<String>,
    /// The remote cluster's client endpoints (host:port,...) in proxy mode.
    #[arg(long, env = "TRIAD_PROXY_ENDPOINTS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy_endpoints: Option<String>,
    /// Find the remote cluster's client endpoints in DNS SRV records of
    /// this domain (_etcd-client._tcp and _etcd-client-ssl._tcp), as etcd's
    /// gateway --discovery-srv.
    #[arg(long, env = "TRIAD_PROXY_DISCOVERY_SRV")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy_discovery_srv: Option<String>,
    /// Name server for --proxy-discovery-srv (default: /etc/resolv.conf's).
    #[arg(long, env = "TRIAD_PROXY_DNS_SERVER")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy_dns_server: Option<String>,
    /// How long an unreachable endpoint is skipped before it is tried again
    /// (etcd gateway's --retry-delay).
    #[arg(long, env = "TRIAD_PROXY_RETRY_DELAY")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy_retry_delay: Option<String>,
    /// L7 proxy: a key prefix for every client of the proxy (etcd
    /// grpc-proxy's --namespace).
    #[arg(long, env = "TRIAD_PROXY_NAMESPACE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy_namespace: Option<String>,
    /// L7 proxy: TLS toward the cluster's members (etcd grpc-proxy's
    /// --cacert, --cert and --key): the CA their certificates are checked
    /// against, and the certificate and key the proxy presents.
    #[arg(long, env = "TRIAD_PROXY_TRUSTED_CA_FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy_trusted_ca_file: Option<std::path::PathBuf>,
    #[arg(long, env = "TRIAD_PROXY_CERT_FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy_cert_file: Option<std::path::PathBuf>,
    #[arg(long, env = "TRIAD_PROXY_KEY_FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy_key_file: Option<std::path::PathBuf>,
    /// URLs to serve the member's metrics on (GET /metrics), besides the
    /// client URLs.
    #[arg(long, env = "TRIAD_LISTEN_METRICS_URLS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen_metrics_urls: Option<String>,
    /// Authentication token type and its options: 'simple' or
    /// 'jwt,pub-key=PATH,priv-key=PATH,sign-method=RS256,ttl=5m'.
    #[arg(long, env = "TRIAD_AUTH_TOKEN")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_token: Option<String>,
    /// Time (in seconds) a simple token lives after its last use.
    #[arg(long, env = "TRIAD_AUTH_TOKEN_TTL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_token_ttl: Option<u64>,
    /// Cost of bcrypt when hashing auth passwords (4 to 31).
    #[arg(long, env = "TRIAD_BCRYPT_COST")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bcrypt_cost: Option<u32>,
    /// Serve https client URLs with a self-signed certificate made in the
    /// data dir when no --cert-file/--key-file is given (etcd's flag).
    #[arg(long, env = "TRIAD_AUTO_TLS", num_args = 0..=1, default_missing_value = "true")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auto_tls: Option<bool>,
    /// Frequency of server-to-client pings on idle connections (etcd's
    /// default 2h; 0: gRPC's default).
    #[arg(long, env = "TRIAD_GRPC_KEEPALIVE_INTERVAL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grpc_keepalive_interval: Option<String>,
    /// How long to wait for a ping's answer before closing the connection
    /// (etcd's default 20s; 0: gRPC's default).
    #[arg(long, env = "TRIAD_GRPC_KEEPALIVE_TIMEOUT")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grpc_keepalive_timeout: Option<String>,
    /// Minimum interval a client should wait between pings (etcd's
    /// default 5s). Accepted for etcd's configurations; HTTP/2 here answers
    /// every ping.
    #[arg(long, env = "TRIAD_GRPC_KEEPALIVE_MIN_TIME")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grpc_keepalive_min_time: Option<String>,
    /// Comma-separated origins allowed in CORS on the HTTP endpoints ("*":
    /// any, the default).
    #[arg(long, env = "TRIAD_CORS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cors: Option<String>,
    /// Comma-separated Host header values plain-HTTP requests may carry
    /// ("*": any, the default): protection against DNS rebinding.
    #[arg(long, env = "TRIAD_HOST_WHITELIST")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_whitelist: Option<String>,
    /// Detail of the gRPC metrics: basic, or extensive (adds the
    /// grpc_server_handling_seconds histogram).
    #[arg(long, env = "TRIAD_METRICS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics: Option<String>,
    /// etcd server version to report to clients (/version, Status).
    #[arg(long, env = "TRIAD_ETCD_VERSION")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub etcd_version: Option<String>,
}

/// Where a proxy forwards to, and how.
#[derive(Clone, Debug)]
pub struct ProxySpec {
    /// L7 (gRPC) rather than L4 (TCP).
    pub l7: bool,
    /// L7: the clients' key namespace.
    pub namespace: String,
    pub endpoints: Vec<String>,
    /// DNS SRV domain and name server, when endpoints are discovered.
    pub srv: Option<(String, std::net::SocketAddr)>,
    pub retry_delay: Duration,
    /// L7: TLS toward the members, when any of its files is given.
    pub upstream_tls: Option<common::tls::TlsFiles>,
}

#[derive(Debug)]
pub struct Resolved {
    pub client: Listening,
    pub watch_progress_interval: Duration,
    pub worker_threads: usize,
    pub max_request_bytes: usize,
    pub max_txn_ops: usize,
    pub request_timeout: Duration,
    pub probe_timeout: Duration,
    pub version: String,
    pub advertise: Vec<String>,
    pub quota_backend_bytes: i64,
    pub tokens: crate::tokens::Tokens,
    pub bcrypt_cost: u32,
    pub metrics_listen: Vec<std::net::SocketAddr>,
    /// `--metrics extensive`.
    pub extensive_metrics: bool,
    /// L4 proxy mode.
    pub proxy: Option<ProxySpec>,
}

pub fn resolve(
    member: &Member,
    opts: &GatewaydOpts,
) -> Result<Resolved, common::config::ConfigError> {
    let urls = common::config::parse_urls(
        opts.listen_client_urls
            .as_deref()
            .unwrap_or(defaults::LISTEN_CLIENT_URLS),
        "listen-client-urls",
    )?;
    let proxy = match opts.proxy.as_deref() {
        None | Some("off") => None,
        Some(mode @ ("l4" | "l7")) => {
            let endpoints: Vec<String> = opts
                .proxy_endpoints
                .as_deref()
                .unwrap_or("")
                .split(',')
                .map(|e| {
                    e.trim()
                        .trim_start_matches("http://")
                        .trim_start_matches("https://")
                })
                .filter(|e| !e.is_empty())
                .map(str::to_string)
                .collect();
            let srv = match &opts.proxy_discovery_srv {
                None => None,
                Some(domain) => {
                    let server = match &opts.proxy_dns_server {
                        None => crate::proxy::srv::system_name_server(),
                        Some(a) => a.parse().map_err(|_| {
                            common::config::ConfigError(format!(
                                "invalid --proxy-dns-server {a:?} (want ip:port)"
                            ))
                        })?,
                    };
                    Some((domain.clone(), server))
                }
            };
            if endpoints.is_empty() && srv.is_none() {
                return Err(common::config::ConfigError(format!(
                    "--proxy {mode} needs --proxy-endpoints or --proxy-discovery-srv"
                )));
            }
            let retry_delay = common::config::parse_duration(
                opts.proxy_retry_delay
                    .as_deref()
                    .unwrap_or(defaults::PROXY_RETRY_DELAY),
            )?;
            if mode == "l4" && opts.proxy_namespace.is_some() {
                return Err(common::config::ConfigError(
                    "--proxy-namespace needs --proxy l7".into(),
                ));
            }
            let upstream_tls = common::tls::TlsFiles {
                cert: opts.proxy_cert_file.clone(),
                key: opts.proxy_key_file.clone(),
                trusted_ca: opts.proxy_trusted_ca_file.clone(),
                ..Default::default()
            };
            let upstream_tls =
                (upstream_tls != common::tls::TlsFiles::default()).then_some(upstream_tls);
            if let Some(t) = &upstream_tls {
                if mode == "l4" {
                    return Err(common::config::ConfigError(
                        "--proxy-cert-file, --proxy-key-file and --proxy-trusted-ca-file need --proxy l7 (an L4 proxy passes TLS through)".into(),
                    ));
                }
                // Every file readable and well formed before serving.
                t.client()?;
                // As etcd's grpc-proxy: with auth on, a common name would
                // make the proxy's own identity every client's.
                if let Some(cn) = t.common_name()? {
                    return Err(common::config::ConfigError(format!(
                        "cert has non empty Common Name ({cn})"
                    )));
                }
            }
            Some(ProxySpec {
                l7: mode == "l7",
                namespace: opts.proxy_namespace.clone().unwrap_or_default(),
                endpoints,
                srv,
                retry_delay,
                upstream_tls,
            })
        }
        Some(other) => {
            return Err(common::config::ConfigError(format!(
                "unknown --proxy mode {other:?} (want l4 or l7)"
            )))
        }
    };
    let (cert, key) = match (opts.auto_tls, &opts.cert_file, &opts.key_file) {
        // etcd's --auto-tls: a self-signed certificate for the client
        // URLs' hosts when no certificate is given.
        (Some(true), None, None) if urls.iter().any(|u| u.starts_with("https://")) => {
            let hosts: Vec<String> = urls
                .iter()
                .filter_map(|u| common::config::url_host(u))
                .collect();
            let dir = member.data_dir.join("fixtures").join("client");
            let (cert, key) = common::tls::self_signed(&dir, &hosts)?;
            (Some(cert), Some(key))
        }
        (Some(true), Some(_), _) | (Some(true), _, Some(_)) => {
            common::etcd_flags::warn("ignoring client auto TLS since certs given".into());
            (opts.cert_file.clone(), opts.key_file.clone())
        }
        _ => (opts.cert_file.clone(), opts.key_file.clone()),
    };
    let tls = common::tls::TlsFiles {
        cert,
        key,
        trusted_ca: opts.trusted_ca_file.clone(),
        client_cert_auth: opts.client_cert_auth.unwrap_or(false),
        crl: opts.client_crl_file.clone(),
        cipher_suites: member.cipher_suites.clone(),
        allowed_cn: None,
        allowed_hostname: opts.client_cert_allowed_hostname.clone(),
    };
    tls.check("")?;
    tls.acceptor()?;
    let addresses = |urls: &[String]| {
        urls.iter()
            .map(|u| {
                let https = u.starts_with("https://");
                // An L4 proxy passes TLS through; it needs no certificate.
                let l4 = proxy.as_ref().is_some_and(|p| !p.l7);
                if https && !tls.enabled() && !l4 {
                    return Err(common::config::ConfigError(format!(
                        "TLS key/cert (--cert-file, --key-file) must be provided for the url {u}"
                    )));
                }
                common::config::listen_addr(u).map(|a| (a, https))
            })
            .collect::<Result<Vec<_>, _>>()
    };
    let listen = addresses(&urls)?;
    let http_only = match &opts.listen_client_http_urls {
        Some(list) => addresses(&common::config::parse_urls(
            list,
            "listen-client-http-urls",
        )?)?,
        None => Vec::new(),
    };
    let advertise = common::config::parse_urls(
        opts.advertise_client_urls
            .as_deref()
            .unwrap_or(defaults::ADVERTISE_CLIENT_URLS),
        "advertise-client-urls",
    )?;
    let worker_threads = opts.worker_threads.unwrap_or(defaults::WORKER_THREADS);
    if worker_threads == 0 {
        return Err(common::config::ConfigError(
            "--worker-threads must be at least 1".into(),
        ));
    }
    let keepalive = (
        keepalive_setting(
            &opts.grpc_keepalive_interval,
            defaults::GRPC_KEEPALIVE_INTERVAL,
        )?,
        keepalive_setting(
            &opts.grpc_keepalive_timeout,
            defaults::GRPC_KEEPALIVE_TIMEOUT,
        )?,
    );
    let ping_min_time = keepalive_setting(
        &opts.grpc_keepalive_min_time,
        defaults::GRPC_KEEPALIVE_MIN_TIME,
    )?;
    let version = opts
        .etcd_version
        .clone()
        .unwrap_or_else(|| defaults::ETCD_VERSION.into());
    if common::versions::Version::parse(&version).is_none() {
        return Err(common::config::ConfigError(format!(
            "--etcd-version {version:?} is not a version (want major.minor.patch, e.g. 3.5.17)"
        )));
    }
    let watch_progress_interval = common::config::parse_duration(
        opts.watch_progress_notify_interval
            .as_deref()
            .unwrap_or(defaults::WATCH_PROGRESS_NOTIFY_INTERVAL),
    )?;
    if watch_progress_interval.is_zero() {
        return Err(common::config::ConfigError(
            "--watch-progress-notify-interval must be positive".into(),
        ));
    }
    let max_concurrent_streams = opts
        .max_concurrent_streams
        .unwrap_or(defaults::MAX_CONCURRENT_STREAMS);
    if max_concurrent_streams == 0 {
        return Err(common::config::ConfigError(
            "--max-concurrent-streams must be at least 1".into(),
        ));
    }
    let bcrypt_cost = opts.bcrypt_cost.unwrap_or(defaults::BCRYPT_COST);
    if !(4..=31).contains(&bcrypt_cost) {
        return Err(common::config::ConfigError(format!(
            "invalid bcrypt-cost: {bcrypt_cost} (valid values are between 4 and 31)"
        )));
    }
    let tokens = crate::tokens::Tokens::parse(
        opts.auth_token.as_deref().unwrap_or(defaults::AUTH_TOKEN),
        opts.auth_token_ttl.unwrap_or(defaults::AUTH_TOKEN_TTL),
    )?;
    let metrics_listen = match &opts.listen_metrics_urls {
        None => Vec::new(),
        Some(urls) => common::config::parse_urls(urls, "listen-metrics-urls")?
            .iter()
            .map(|u| common::config::listen_addr(u))
            .collect::<Result<_, _>>()?,
    };
    Ok(Resolved {
        proxy,
        metrics_listen,
        // As etcd, any other word means basic.
        extensive_metrics: opts.metrics.as_deref() == Some("extensive"),
        tokens,
        bcrypt_cost,
        client: Listening {
            listen,
            http_only,
            tls,
            max_concurrent_streams,
            keepalive,
            ping_min_time,
            reuse_port: member.socket_reuse_port,
            access: crate::access::Access::parse(
                opts.cors.as_deref(),
                opts.host_whitelist.as_deref(),
            )?,
        },
        quota_backend_bytes: opts
            .quota_backend_bytes
            .unwrap_or(defaults::QUOTA_BACKEND_BYTES),
        advertise,
        watch_progress_interval,
        worker_threads,
        max_request_bytes: member.max_request_bytes,
        max_txn_ops: member.max_txn_ops,
        request_timeout: Duration::from_millis(
            opts.request_timeout_ms
                .unwrap_or(defaults::REQUEST_TIMEOUT_MS),
        ),
        probe_timeout: Duration::from_millis(
            opts.probe_timeout_ms.unwrap_or(defaults::PROBE_TIMEOUT_MS),
        ),
        version,
    })
}

/// What client servers are set up from.
/// A gRPC keepalive duration; 0 (or unset) leaves gRPC's default, which
/// is etcd's.
fn keepalive_setting(
    given: &Option<String>,
    default: Duration,
) -> Result<Duration, common::config::ConfigError> {
    let d = match given.as_deref().map(str::trim) {
        None | Some("0") => default,
        Some(text) => common::config::parse_duration(text)?,
    };
    Ok(if d.is_zero() { default } else { d })
}

#[derive(Debug)]
pub struct Listening {
    /// Each listen address, and whether it is an https URL (TLS).
    pub listen: Vec<(std::net::SocketAddr, bool)>,
    /// `--listen-client-http-urls`: addresses that serve the HTTP
    /// endpoints alone; when there are any, `listen` serves gRPC alone.
    pub http_only: Vec<(std::net::SocketAddr, bool)>,
    pub tls: common::tls::TlsFiles,
    pub max_concurrent_streams: u32,
    /// Server pings on idle connections: (interval, timeout).
    pub keepalive: (Duration, Duration),
    /// Clients pinging more often than this (with nothing else to send)
    /// are disconnected (`--grpc-keepalive-min-time`).
    pub ping_min_time: Duration,
    /// CORS and Host checks on the HTTP endpoints.
    pub access: crate::access::Access,
    /// `--socket-reuse-port`.
    pub reuse_port: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every option is known to the whole member's check, under its
    /// variable, so a sibling daemon refuses a bad value for it too.
    #[test]
    fn every_option_is_checked_by_the_whole_member() {
        use clap::Args;
        let options = GatewaydOpts::augment_args(clap::Command::new("gatewayd"));
        let unknown = common::member_check::unknown_options("gatewayd", &options);
        assert!(unknown.is_empty(), "add to member_check: {unknown:?}");
    }

    /// Every default systemd/triad.toml shows for [gatewayd] is the default.
    #[test]
    fn the_example_config_shows_gatewayds_defaults() {
        let example = include_str!("../../systemd/triad.toml");
        let documented = common::config::documented_defaults(example, "gatewayd");
        assert!(documented.len() >= 5, "{documented:?}");
        let member = common::config::MemberOpts::default()
            .resolve()
            .expect("member defaults");
        let default = format!(
            "{:?}",
            resolve(&member, &GatewaydOpts::default()).expect("defaults")
        );
        for (key, value) in documented {
            let mut t = toml::Table::new();
            t.insert(key.clone(), value);
            let opts = GatewaydOpts::deserialize(toml::Value::Table(t))
                .unwrap_or_else(|e| panic!("{key}: {e}"));
            let resolved = resolve(&member, &opts).expect(&key);
            assert_eq!(format!("{resolved:?}"), default, "{key}");
        }
    }
}
