//! etcd's command forms of its proxies, `etcd gateway start` and `etcd
//! grpc-proxy start`, taking etcd's flags for those commands and running
//! gatewayd's L4 or L7 proxy mode in this process's place, so an etcd
//! proxy's unit file or script works with the binary name changed. Flags
//! etcd has that mean nothing here are accepted with a warning, as the
//! daemons treat etcd's server flags.

use std::os::unix::process::CommandExt;

use anyhow::Context;
use clap::{Args, Subcommand};

/// The flags both of etcd's proxy commands have.
#[derive(Args, Debug)]
pub struct CommonArgs {
    /// The address to listen on.
    #[arg(long, default_value = "127.0.0.1:23790")]
    listen_addr: String,
    /// The cluster's client endpoints, comma separated.
    #[arg(long, default_value = "127.0.0.1:2379")]
    endpoints: String,
    /// A DNS domain whose SRV records list the cluster's endpoints.
    #[arg(long)]
    discovery_srv: Option<String>,
    /// A service name suffix for the SRV records (not supported: warned).
    #[arg(long, default_value = "")]
    discovery_srv_name: String,
}

impl CommonArgs {
    /// gatewayd's proxy mode, listener and cluster for these flags.
    fn gatewayd_args(&self, mode: &str, scheme: &str) -> Vec<String> {
        let mut args = vec![
            "--proxy".to_string(),
            mode.to_string(),
            format!("--listen-client-urls={scheme}://{}", self.listen_addr),
        ];
        match &self.discovery_srv {
            Some(domain) => args.push(format!("--proxy-discovery-srv={domain}")),
            None => args.push(format!("--proxy-endpoints={}", host_ports(&self.endpoints))),
        }
        args
    }
}

/// etcd's `gateway` command (etcd 3.4's flags and defaults).
#[derive(Subcommand, Debug)]
pub enum GatewayCommand {
    /// Start an L4 gateway: TCP connections passed through to the cluster's
    /// members, TLS included.
    Start(GatewayArgs),
}

#[derive(Args, Debug)]
pub struct GatewayArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Accept insecure SRV records (nothing to check here: warned).
    #[arg(long)]
    insecure_discovery: bool,
    /// A CA to verify discovered endpoints with (TLS passes through the
    /// gateway untouched: warned).
    #[arg(long)]
    trusted_ca_file: Option<String>,
    /// How long a failed endpoint is skipped before it is tried again.
    #[arg(long, default_value = "1m0s")]
    retry_delay: String,
}

/// etcd's `grpc-proxy` command (etcd 3.4's flags and defaults).
#[derive(Subcommand, Debug)]
pub enum GrpcProxyCommand {
    /// Start an L7 proxy: the gRPC API served here, requests forwarded to
    /// the cluster.
    Start(Box<GrpcProxyArgs>),
}

#[derive(Args, Debug)]
pub struct GrpcProxyArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Where to serve /metrics besides the listen address (a URL).
    #[arg(long)]
    metrics_addr: Option<String>,
    /// A prefix the proxy puts before every key of its clients.
    #[arg(long)]
    namespace: Option<String>,
    /// Serving TLS: certificate, key and the CA clients' certificates are
    /// checked against.
    #[arg(long)]
    cert_file: Option<String>,
    #[arg(long)]
    key_file: Option<String>,
    #[arg(long)]
    trusted_ca_file: Option<String>,
    /// Log at debug level.
    #[arg(long)]
    debug: bool,
    /// TLS toward the cluster: the certificate and key the proxy presents
    /// and the CA the members' certificates are checked against.
    #[arg(long)]
    cert: Option<String>,
    #[arg(long)]
    key: Option<String>,
    #[arg(long)]
    cacert: Option<String>,
    /// Not supported (refused): trust must come from --cacert.
    #[arg(long)]
    insecure_skip_tls_verify: bool,
    /// etcd's flags without a meaning for triad's proxy: warned.
    #[arg(long)]
    advertise_client_url: Option<String>,
    #[arg(long)]
    resolver_prefix: Option<String>,
    #[arg(long)]
    resolver_ttl: Option<String>,
    #[arg(long)]
    leasing: Option<String>,
    #[arg(long)]
    enable_pprof: bool,
    #[arg(long)]
    data_dir: Option<String>,
    #[arg(long)]
    max_send_bytes: Option<String>,
    #[arg(long)]
    max_recv_bytes: Option<String>,
    #[arg(long)]
    experimental_serializable_ordering: bool,
}

/// Comma-separated endpoints as host:port (etcd takes URLs there too).
fn host_ports(endpoints: &str) -> String {
    endpoints
        .split(',')
        .map(|e| {
            let e = e.trim();
            e.strip_prefix("http://")
                .or_else(|| e.strip_prefix("https://"))
                .unwrap_or(e)
                .trim_end_matches('/')
        })
        .filter(|e| !e.is_empty())
        .collect::<Vec<_>>()
        .join(",")
}

fn warn_ignored(command: &str, flags: &[(&str, bool)]) {
    for (flag, given) in flags {
        if *given {
            eprintln!("triad {command}: --{flag} has no meaning for triad's proxy; ignored");
        }
    }
}

/// gatewayd's arguments for `gateway start`.
pub fn gateway_args(a: &GatewayArgs) -> Vec<String> {
    warn_ignored(
        "gateway",
        &[
            (
                "discovery-srv-name",
                !a.common.discovery_srv_name.is_empty(),
            ),
            ("insecure-discovery", a.insecure_discovery),
            ("trusted-ca-file", a.trusted_ca_file.is_some()),
        ],
    );
    let mut args = a.common.gatewayd_args("l4", "http");
    args.push(format!("--proxy-retry-delay={}", a.retry_delay));
    args
}

/// gatewayd's arguments for `grpc-proxy start`.
pub fn grpc_proxy_args(a: &GrpcProxyArgs) -> anyhow::Result<Vec<String>> {
    anyhow::ensure!(
        !a.insecure_skip_tls_verify,
        "--insecure-skip-tls-verify is not supported: give the cluster's CA with --cacert"
    );
    warn_ignored(
        "grpc-proxy",
        &[
            (
                "discovery-srv-name",
                !a.common.discovery_srv_name.is_empty(),
            ),
            ("advertise-client-url", a.advertise_client_url.is_some()),
            ("resolver-prefix", a.resolver_prefix.is_some()),
            ("resolver-ttl", a.resolver_ttl.is_some()),
            ("leasing", a.leasing.is_some()),
            ("enable-pprof", a.enable_pprof),
            ("data-dir", a.data_dir.is_some()),
            ("max-send-bytes", a.max_send_bytes.is_some()),
            ("max-recv-bytes", a.max_recv_bytes.is_some()),
            (
                "experimental-serializable-ordering",
                a.experimental_serializable_ordering,
            ),
        ],
    );
    let tls = a.cert_file.is_some() && a.key_file.is_some();
    let scheme = if tls { "https" } else { "http" };
    let mut args = a.common.gatewayd_args("l7", scheme);
    let optional = [
        ("--proxy-namespace", &a.namespace),
        ("--listen-metrics-urls", &a.metrics_addr),
        ("--cert-file", &a.cert_file),
        ("--key-file", &a.key_file),
        ("--trusted-ca-file", &a.trusted_ca_file),
        ("--proxy-trusted-ca-file", &a.cacert),
        ("--proxy-cert-file", &a.cert),
        ("--proxy-key-file", &a.key),
    ];
    for (flag, value) in optional {
        if let Some(v) = value {
            args.push(format!("{flag}={v}"));
        }
    }
    if a.trusted_ca_file.is_some() && tls {
        args.push("--client-cert-auth=true".to_string());
    }
    if a.debug {
        args.push("--log-level=debug".to_string());
    }
    Ok(args)
}

/// Become gatewayd with `args` (its signals and exit status are the
/// command's).
pub fn exec_gatewayd(args: Vec<String>) -> anyhow::Result<()> {
    let gatewayd = crate::up::sibling_binary("gatewayd")?;
    let err = std::process::Command::new(&gatewayd).args(&args).exec();
    Err(err).with_context(|| format!("cannot run {}", gatewayd.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Gateway {
        #[command(subcommand)]
        cmd: GatewayCommand,
    }

    #[derive(Parser)]
    struct GrpcProxy {
        #[command(subcommand)]
        cmd: GrpcProxyCommand,
    }

    #[test]
    fn etcd_gateway_flags_become_gatewayds() {
        let Gateway {
            cmd: GatewayCommand::Start(a),
        } = Gateway::parse_from([
            "gateway",
            "start",
            "--endpoints=http://10.0.0.1:2379,10.0.0.2:2379",
            "--retry-delay",
            "5s",
        ]);
        assert_eq!(
            gateway_args(&a),
            [
                "--proxy",
                "l4",
                "--listen-client-urls=http://127.0.0.1:23790",
                "--proxy-endpoints=10.0.0.1:2379,10.0.0.2:2379",
                "--proxy-retry-delay=5s"
            ]
        );
    }

    #[test]
    fn etcd_grpc_proxy_flags_become_gatewayds() {
        let GrpcProxy {
            cmd: GrpcProxyCommand::Start(a),
        } = GrpcProxy::parse_from([
            "grpc-proxy",
            "start",
            "--listen-addr=127.0.0.1:5000",
            "--discovery-srv=example.com",
            "--namespace=ns/",
            "--metrics-addr=http://127.0.0.1:5001",
            "--cert-file=c.pem",
            "--key-file=k.pem",
            "--debug",
            "--leasing=leases/",
        ]);
        let args = grpc_proxy_args(&a).expect("args");
        assert_eq!(
            args,
            [
                "--proxy",
                "l7",
                "--listen-client-urls=https://127.0.0.1:5000",
                "--proxy-discovery-srv=example.com",
                "--proxy-namespace=ns/",
                "--listen-metrics-urls=http://127.0.0.1:5001",
                "--cert-file=c.pem",
                "--key-file=k.pem",
                "--log-level=debug"
            ]
        );
        let GrpcProxy {
            cmd: GrpcProxyCommand::Start(upstream_tls),
        } = GrpcProxy::parse_from([
            "grpc-proxy",
            "start",
            "--cacert=ca.pem",
            "--cert=c",
            "--key=k",
        ]);
        let args = grpc_proxy_args(&upstream_tls).expect("args");
        assert!(
            args.contains(&"--proxy-trusted-ca-file=ca.pem".to_string()),
            "{args:?}"
        );
        assert!(
            args.contains(&"--proxy-cert-file=c".to_string()),
            "{args:?}"
        );
        let GrpcProxy {
            cmd: GrpcProxyCommand::Start(skip),
        } = GrpcProxy::parse_from(["grpc-proxy", "start", "--insecure-skip-tls-verify"]);
        assert!(grpc_proxy_args(&skip).is_err());
    }
}
