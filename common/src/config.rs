//! Configuration loading. Each daemon reads the `[member]` section and its
//! own section of one TOML file; `TRIAD_*` environment variables override the
//! file and command-line flags override both. The layering is generic: a
//! section table from the file, overlaid with whatever clap resolved (flags
//! and env), deserialized into the daemon's own typed options once. The
//! config file may instead be etcd's YAML file: then, as for etcd, it alone
//! sets etcd's settings (flags and variables for them are ignored), and
//! each key takes effect as the flag of the same name.

use std::ffi::OsString;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

use serde::{de::DeserializeOwned, Deserialize, Serialize};

/// Journal bound for the fjall databases of storaged and raftd. fjall
/// replays its journals into memtables at start; its default of 512 MiB
/// made the first start after loading 1M keys take ~20 s. At fjall's
/// minimum, 64 MiB, memtables are flushed sooner and a start replays at
/// most that much.
pub const FJALL_MAX_JOURNAL_BYTES: u64 = 64 * 1024 * 1024;

/// Background threads (flushes and compactions) of every fjall database.
/// With more than one, fjall's first worker hands each compaction request
/// back to the queue for the others and takes it again at once: while the
/// others were busy it spun on that queue, about a third of a loaded
/// storaged's CPU. One worker never defers.
pub const FJALL_WORKER_THREADS: usize = 1;

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

fn err(msg: impl Into<String>) -> ConfigError {
    ConfigError(msg.into())
}

/// A config file is read whole; a bigger one is no configuration.
pub const MAX_FILE_BYTES: usize = 1 << 20;

/// A config file, in whichever of the two formats it is written.
#[derive(Debug)]
pub enum ConfigFile {
    /// No file: every section is empty.
    None,
    /// triad's TOML: `[member]` and a section per daemon.
    Toml(toml::Table),
    /// etcd's YAML: its settings by etcd name, as flag text.
    Yaml(Vec<(String, String)>),
}

impl ConfigFile {
    /// Read and parse the file at `path`. `.yml`/`.yaml` files are etcd's
    /// YAML, `.toml` files triad's TOML; any other is TOML if it parses as
    /// TOML, else YAML if it is a YAML mapping.
    pub fn load(path: Option<&Path>) -> Result<ConfigFile, ConfigError> {
        let Some(path) = path else {
            return Ok(ConfigFile::None);
        };
        let text = read_bounded(path)?;
        let invalid = |e: ConfigError| err(format!("invalid config file {}: {e}", path.display()));
        match path.extension().and_then(|e| e.to_str()) {
            Some("yml" | "yaml") => {
                return crate::etcd_yaml::parse(&text)
                    .map(ConfigFile::Yaml)
                    .map_err(invalid)
            }
            Some("toml") => return parse_toml(path, &text).map(ConfigFile::Toml),
            _ => {}
        }
        match parse_toml(path, &text) {
            Ok(t) => Ok(ConfigFile::Toml(t)),
            Err(toml_error) => {
                let mapping = matches!(
                    serde_yaml_ng::from_str::<serde_yaml_ng::Value>(&text),
                    Ok(serde_yaml_ng::Value::Mapping(_))
                );
                if mapping {
                    crate::etcd_yaml::parse(&text)
                        .map(ConfigFile::Yaml)
                        .map_err(invalid)
                } else {
                    Err(toml_error)
                }
            }
        }
    }

    /// The TOML table (empty unless the file is triad's TOML).
    pub fn toml(&self) -> toml::Table {
        match self {
            ConfigFile::Toml(t) => t.clone(),
            _ => toml::Table::new(),
        }
    }
}

fn read_bounded(path: &Path) -> Result<String, ConfigError> {
    use std::io::Read;
    let cannot =
        |e: std::io::Error| err(format!("cannot read config file {}: {e}", path.display()));
    let file = std::fs::File::open(path).map_err(cannot)?;
    let mut text = String::new();
    file.take(MAX_FILE_BYTES as u64 + 1)
        .read_to_string(&mut text)
        .map_err(cannot)?;
    if text.len() > MAX_FILE_BYTES {
        return Err(err(format!(
            "config file {} is larger than {} bytes",
            path.display(),
            MAX_FILE_BYTES
        )));
    }
    Ok(text)
}

fn parse_toml(path: &Path, text: &str) -> Result<toml::Table, ConfigError> {
    text.parse::<toml::Table>().map_err(|e| {
        let line = e.span().map_or(0, |s| {
            text[..s.start.min(text.len())].lines().count().max(1)
        });
        err(format!(
            "invalid config file {} (line {line}): {}",
            path.display(),
            e.message().replace('\n', " ")
        ))
    })
}

/// The config file a command line names: `--config-file` (or Go's
/// `-config-file`), else `TRIAD_CONFIG_FILE`, else etcd's
/// `ETCD_CONFIG_FILE`.
pub fn config_file_path(args: &[OsString]) -> Option<PathBuf> {
    let mut it = args.iter().skip(1);
    while let Some(arg) = it.next() {
        let Some(flag) = arg
            .to_str()
            .and_then(|t| t.strip_prefix("--").or_else(|| t.strip_prefix('-')))
        else {
            continue;
        };
        match flag.split_once('=') {
            Some(("config-file", v)) => return Some(PathBuf::from(v)),
            None if flag == "config-file" => return it.next().map(PathBuf::from),
            _ => {}
        }
    }
    ["TRIAD_CONFIG_FILE", "ETCD_CONFIG_FILE"]
        .iter()
        .find_map(|v| std::env::var_os(v).filter(|p| !p.is_empty()))
        .map(PathBuf::from)
}

/// Overlay `cli` (only the options actually given) on `[section]` of the
/// file and deserialize the result into the section's typed options.
pub fn layer<T: Serialize + DeserializeOwned>(
    file: &toml::Table,
    section: &str,
    cli: &T,
) -> Result<T, ConfigError> {
    let mut merged = match file.get(section) {
        None => toml::Table::new(),
        Some(toml::Value::Table(t)) => t.clone(),
        Some(_) => return Err(err(format!("config: [{section}] must be a table"))),
    };
    let given = toml::Table::try_from(cli).map_err(|e| err(format!("config: {e}")))?;
    merged.extend(given);
    T::deserialize(toml::Value::Table(merged)).map_err(|e| {
        err(format!(
            "config [{section}]: {}",
            e.message().replace('\n', " ")
        ))
    })
}

/// The defaults a commented example config file documents for `section`:
/// its `# key = value` lines (a trailing `# comment` allowed; `# e.g.`
/// lines are examples, not defaults). Tests hold `systemd/triad.toml` to
/// the daemons' defaults with it.
pub fn documented_defaults(example: &str, section: &str) -> Vec<(String, toml::Value)> {
    let mut current = String::new();
    let mut out = Vec::new();
    for line in example.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = name.to_string();
            continue;
        }
        let Some(rest) = line.strip_prefix('#').map(str::trim) else {
            continue;
        };
        let Some((key, value)) = rest.split_once('=') else {
            continue;
        };
        let key = key.trim();
        let is_key = !key.is_empty() && key.chars().all(|c| c.is_ascii_lowercase() || c == '-');
        if current != section || !is_key {
            continue;
        }
        if let Ok(t) = format!("x = {}", value.trim()).parse::<toml::Table>() {
            if let Some(v) = t.get("x") {
                out.push((key.to_string(), v.clone()));
            }
        }
    }
    out
}

/// How a daemon logs (from --log-format/--logger, --log-level and
/// --log-outputs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogSettings {
    pub json: bool,
    /// A tracing level: error, warn, info or debug.
    pub level: &'static str,
    /// Where log lines go (each line to every one).
    pub outputs: Vec<LogOutput>,
    /// `--enable-log-rotation`: how the log file is rotated.
    pub rotation: Option<crate::log_rotation::Rotation>,
}

impl Default for LogSettings {
    fn default() -> Self {
        LogSettings {
            json: false,
            level: "info",
            outputs: vec![LogOutput::Stderr],
            rotation: None,
        }
    }
}

/// One of etcd's --log-outputs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogOutput {
    /// `default` and `stderr`.
    Stderr,
    /// `systemd/journal`: journald's native protocol.
    Journal,
    Stdout,
    /// Any other value: a file lines are appended to.
    File(PathBuf),
}

/// etcd's --log-outputs: a comma-separated list.
pub fn parse_log_outputs(list: &str) -> Result<Vec<LogOutput>, ConfigError> {
    let mut outputs = Vec::new();
    for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let output = match item {
            "default" | "stderr" => LogOutput::Stderr,
            "systemd/journal" => LogOutput::Journal,
            "stdout" => LogOutput::Stdout,
            path => LogOutput::File(PathBuf::from(path)),
        };
        if !outputs.contains(&output) {
            outputs.push(output);
        }
    }
    if outputs.is_empty() {
        return Err(err("--log-outputs must not be empty"));
    }
    Ok(outputs)
}

/// etcd's --log-level values, as tracing levels.
pub fn parse_level(level: &str) -> Option<&'static str> {
    Some(match level {
        "debug" => "debug",
        "info" => "info",
        "warn" => "warn",
        "error" | "dpanic" | "panic" | "fatal" => "error",
        _ => return None,
    })
}

/// Options every daemon of a member shares (`[member]`).
#[derive(clap::Args, Serialize, Deserialize, Debug, Clone, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct MemberOpts {
    /// Human-readable name of this member.
    #[arg(long, env = "TRIAD_NAME")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Path to the member's data directory (each daemon uses a subdirectory).
    #[arg(long, env = "TRIAD_DATA_DIR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    /// Directory for the member-local Unix sockets (default: $RUNTIME_DIRECTORY or DATA_DIR/run).
    #[arg(long, env = "TRIAD_RUNTIME_DIR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime_dir: Option<PathBuf>,
    /// This member's peer URLs to advertise to the rest of the cluster.
    #[arg(long, env = "TRIAD_INITIAL_ADVERTISE_PEER_URLS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub initial_advertise_peer_urls: Option<String>,
    /// Initial cluster configuration for bootstrapping (name=peerURL,...).
    #[arg(long, env = "TRIAD_INITIAL_CLUSTER")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub initial_cluster: Option<String>,
    /// Bootstrap the initial cluster from DNS SRV records of this domain
    /// (`_etcd-server-ssl._tcp` and `_etcd-server._tcp`), as etcd.
    #[arg(long, env = "TRIAD_DISCOVERY_SRV")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub discovery_srv: Option<String>,
    /// Suffix of the SRV names queried (`_etcd-server-<name>._tcp`).
    #[arg(long, env = "TRIAD_DISCOVERY_SRV_NAME")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub discovery_srv_name: Option<String>,
    /// Name server (ip:port) for --discovery-srv (default: the first of
    /// /etc/resolv.conf).
    #[arg(long, env = "TRIAD_DISCOVERY_DNS_SERVER")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub discovery_dns_server: Option<String>,
    /// Bootstrap through etcd 3.4's discovery protocol: the registry's URL
    /// in a v2 keys API (http://host:port/v2/keys/_etcd/registry/TOKEN).
    #[arg(long, env = "TRIAD_DISCOVERY")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub discovery: Option<String>,
    /// HTTP proxy (host:port) to reach --discovery through.
    #[arg(long, env = "TRIAD_DISCOVERY_PROXY")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub discovery_proxy: Option<String>,
    /// Bootstrap through etcd 3.6's v3 discovery: the token naming this
    /// cluster's registry in the discovery cluster.
    #[arg(long, env = "TRIAD_DISCOVERY_TOKEN")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub discovery_token: Option<String>,
    /// The discovery cluster's client endpoints (host:port or URLs).
    #[arg(long, env = "TRIAD_DISCOVERY_ENDPOINTS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub discovery_endpoints: Option<String>,
    /// How long connecting to the discovery cluster may take (default 2s).
    #[arg(long, env = "TRIAD_DISCOVERY_DIAL_TIMEOUT")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub discovery_dial_timeout: Option<String>,
    /// How long one discovery request may take (default 5s).
    #[arg(long, env = "TRIAD_DISCOVERY_REQUEST_TIMEOUT")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub discovery_request_timeout: Option<String>,
    /// HTTP/2 ping interval on the discovery connection (default 2s).
    #[arg(long, env = "TRIAD_DISCOVERY_KEEPALIVE_TIME")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub discovery_keepalive_time: Option<String>,
    /// How long an unanswered ping keeps the discovery connection (default 6s).
    #[arg(long, env = "TRIAD_DISCOVERY_KEEPALIVE_TIMEOUT")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub discovery_keepalive_timeout: Option<String>,
    /// Plain HTTP to the discovery cluster (default true).
    #[arg(long, env = "TRIAD_DISCOVERY_INSECURE_TRANSPORT", num_args = 0..=1, default_missing_value = "true")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub discovery_insecure_transport: Option<bool>,
    /// Skip verifying the discovery cluster's certificate (refused).
    #[arg(long, env = "TRIAD_DISCOVERY_INSECURE_SKIP_TLS_VERIFY", num_args = 0..=1, default_missing_value = "true")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub discovery_insecure_skip_tls_verify: Option<bool>,
    /// Client certificate for the discovery cluster.
    #[arg(long, env = "TRIAD_DISCOVERY_CERT")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub discovery_cert: Option<String>,
    /// Client key for the discovery cluster.
    #[arg(long, env = "TRIAD_DISCOVERY_KEY")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub discovery_key: Option<String>,
    /// CA that signed the discovery cluster's certificates.
    #[arg(long, env = "TRIAD_DISCOVERY_CACERT")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub discovery_cacert: Option<String>,
    /// User for the discovery cluster's auth.
    #[arg(long, env = "TRIAD_DISCOVERY_USER")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub discovery_user: Option<String>,
    /// Password for the discovery cluster's auth.
    #[arg(long, env = "TRIAD_DISCOVERY_PASSWORD")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub discovery_password: Option<String>,
    /// Initial cluster token for the cluster during bootstrap.
    #[arg(long, env = "TRIAD_INITIAL_CLUSTER_TOKEN")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub initial_cluster_token: Option<String>,
    /// Let the socket's group connect too (mode 0660 instead of 0600).
    #[arg(long, env = "TRIAD_SOCKET_GROUP_ACCESS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub socket_group_access: Option<bool>,
    /// Log format: text or json.
    #[arg(long, env = "TRIAD_LOG_FORMAT")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_format: Option<String>,
    /// etcd's --logger: "zap" logs JSON lines, "capnslog" text (when
    /// --log-format is not given).
    #[arg(long, env = "TRIAD_LOGGER")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logger: Option<String>,
    /// Lowest level logged: debug, info, warn or error (etcd's
    /// --log-level; dpanic, panic and fatal mean error).
    #[arg(long, env = "TRIAD_LOG_LEVEL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_level: Option<String>,
    /// Debug-level logging (etcd 3.4's --debug, which --log-level
    /// replaced).
    #[arg(long, env = "TRIAD_DEBUG", num_args = 0..=1, default_missing_value = "true")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub debug: Option<bool>,
    /// Where logs go (etcd's --log-outputs): default, stderr, stdout,
    /// systemd/journal (journald's native protocol), or files to append
    /// to; comma-separated.
    #[arg(long, env = "TRIAD_LOG_OUTPUTS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_outputs: Option<String>,
    /// Export spans of client requests to an OpenTelemetry collector
    /// (OTLP/gRPC), as etcd's distributed tracing.
    #[arg(long, alias = "enable-distributed-tracing", env = "TRIAD_EXPERIMENTAL_ENABLE_DISTRIBUTED_TRACING", num_args = 0..=1, default_missing_value = "true")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub experimental_enable_distributed_tracing: Option<bool>,
    /// The collector's host:port (default localhost:4317).
    #[arg(
        long,
        alias = "distributed-tracing-address",
        env = "TRIAD_EXPERIMENTAL_DISTRIBUTED_TRACING_ADDRESS"
    )]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub experimental_distributed_tracing_address: Option<String>,
    /// The spans' service.name (default etcd).
    #[arg(
        long,
        alias = "distributed-tracing-service-name",
        env = "TRIAD_EXPERIMENTAL_DISTRIBUTED_TRACING_SERVICE_NAME"
    )]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub experimental_distributed_tracing_service_name: Option<String>,
    /// The spans' service.instance.id.
    #[arg(
        long,
        alias = "distributed-tracing-instance-id",
        env = "TRIAD_EXPERIMENTAL_DISTRIBUTED_TRACING_INSTANCE_ID"
    )]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub experimental_distributed_tracing_instance_id: Option<String>,
    /// Traces sampled per million client calls that bring no decision of
    /// their own (default 0).
    #[arg(
        long,
        alias = "distributed-tracing-sampling-rate",
        env = "TRIAD_EXPERIMENTAL_DISTRIBUTED_TRACING_SAMPLING_RATE"
    )]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub experimental_distributed_tracing_sampling_rate: Option<i64>,
    /// Serve CPU and heap profiles of the member's daemons at /debug/pprof
    /// on the client URLs (etcd's --enable-pprof).
    #[arg(long, env = "TRIAD_ENABLE_PPROF", num_args = 0..=1, default_missing_value = "true")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enable_pprof: Option<bool>,
    /// Rotate the log file (etcd 3.5's --enable-log-rotation; needs one
    /// file among --log-outputs).
    #[arg(long, env = "TRIAD_ENABLE_LOG_ROTATION", num_args = 0..=1, default_missing_value = "true")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enable_log_rotation: Option<bool>,
    /// lumberjack's settings as etcd takes them: {"maxsize": MiB, "maxage":
    /// days, "maxbackups": n, "localtime": bool, "compress": bool}.
    #[arg(long, env = "TRIAD_LOG_ROTATION_CONFIG_JSON")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_rotation_config_json: Option<String>,
    /// How long a daemon thread about to sleep first watches for more work
    /// while its recent waits were shorter than this (e.g. 300us; 0 = never).
    /// Keeps a virtual machine's vCPUs from halting between the hops of a
    /// request, at the price of some CPU while requests stream in.
    #[arg(long, env = "TRIAD_SPIN_BEFORE_SLEEP")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spin_before_sleep: Option<String>,
    /// Maximum client request size in bytes the server will accept
    /// (gatewayd checks clients' requests, raftd those other members
    /// forward).
    #[arg(long, env = "TRIAD_MAX_REQUEST_BYTES")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_request_bytes: Option<usize>,
    /// Maximum number of operations permitted in a transaction.
    #[arg(long, env = "TRIAD_MAX_TXN_OPS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_txn_ops: Option<usize>,
    /// Comma-separated list of supported TLS 1.2 cipher suites between
    /// client/server and peers (Go's names; TLS 1.3's are always offered).
    #[arg(long, env = "TRIAD_CIPHER_SUITES")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cipher_suites: Option<String>,
    /// Applies and reads that take longer than this are logged as "apply
    /// request took too long" and counted in etcd_server_slow_apply_total
    /// (default 100ms).
    #[arg(long, env = "TRIAD_EXPERIMENTAL_WARNING_APPLY_DURATION")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub experimental_warning_apply_duration: Option<String>,
    /// etcd 3.6's feature gates, e.g. InitialCorruptCheck=true (see
    /// `feature_gates`).
    #[arg(long, env = "TRIAD_FEATURE_GATES")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub feature_gates: Option<String>,
    /// Never fsync the raft log or storaged's journals: faster, and a crash
    /// of the machine loses acknowledged writes (etcd's flag, for tests).
    #[arg(long, env = "TRIAD_UNSAFE_NO_FSYNC", num_args = 0..=1, default_missing_value = "true")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unsafe_no_fsync: Option<bool>,
    /// Set SO_REUSEPORT on the client, peer and metrics listeners, so
    /// another process may listen on the same ports.
    #[arg(long, env = "TRIAD_SOCKET_REUSE_PORT", num_args = 0..=1, default_missing_value = "true")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub socket_reuse_port: Option<bool>,
    /// Set SO_REUSEADDR on the listeners (always set, as Go's listeners
    /// do; accepted for etcd's configurations).
    #[arg(long, env = "TRIAD_SOCKET_REUSE_ADDRESS", num_args = 0..=1, default_missing_value = "true")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub socket_reuse_address: Option<bool>,
}

/// Default of `--spin-before-sleep`: longer than a hop's round trip and an
/// SSD's fsync, so a lone client's request runs with no vCPU halting.
pub const DEFAULT_SPIN_BEFORE_SLEEP: std::time::Duration = std::time::Duration::from_micros(300);

/// The member options with defaults applied and IDs derived.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    pub name: String,
    pub data_dir: PathBuf,
    pub runtime_dir: PathBuf,
    pub peer_urls: Vec<String>,
    /// (name, peer URLs) of the initial cluster, this member included.
    pub initial_cluster: Vec<(String, Vec<String>)>,
    pub cluster_token: String,
    pub member_id: u64,
    pub cluster_id: u64,
    pub socket_group_access: bool,
    pub log: LogSettings,
    pub spin_before_sleep: std::time::Duration,
    pub max_request_bytes: usize,
    pub max_txn_ops: usize,
    pub cipher_suites: Option<String>,
    /// Slower applies and reads are warned of (etcd's
    /// --experimental-warning-apply-duration).
    pub warning_apply_duration: std::time::Duration,
    /// `--unsafe-no-fsync`.
    pub unsafe_no_fsync: bool,
    /// `--feature-gates`.
    pub feature_gates: crate::feature_gates::FeatureGates,
    /// `--socket-reuse-port`: SO_REUSEPORT on the member's TCP listeners.
    pub socket_reuse_port: bool,
    /// `--check-config`: check, then exit instead of serving.
    pub check_only: bool,
    /// etcd's discovery (v2 or v3): the initial cluster comes from a
    /// discovery service (raftd asks it on first start); `initial_cluster`
    /// then holds this member alone.
    pub discovery: Option<crate::discovery::Discovery>,
    /// `--enable-pprof`: storaged and raftd serve `Profiler`, gatewayd
    /// `/debug/pprof`.
    pub enable_pprof: bool,
    /// etcd's distributed tracing, when enabled.
    pub tracing: Option<crate::distributed_tracing::TracingSettings>,
}

/// What a daemon's runtime is set up with (see `lifecycle::run_daemon`).
#[derive(Debug, Clone)]
pub struct RuntimeSettings {
    pub member_name: String,
    /// Export spans (etcd's distributed tracing).
    pub tracing: Option<crate::distributed_tracing::TracingSettings>,
    /// Sample allocations for heap profiles (`--enable-pprof`).
    pub heap_profile: bool,
    pub unsafe_no_fsync: bool,
    pub log: LogSettings,
    /// Runtime worker threads (1: a single-threaded runtime).
    pub threads: usize,
    pub spin_before_sleep: std::time::Duration,
}

impl Member {
    /// This member with the initial cluster discovery found: the cluster
    /// ID follows the members' IDs, as etcd's.
    pub fn with_initial_cluster(self, initial_cluster: Vec<(String, Vec<String>)>) -> Member {
        let ids: Vec<u64> = initial_cluster
            .iter()
            .map(|(_, urls)| crate::ids::member_id(urls, &self.cluster_token))
            .collect();
        Member {
            cluster_id: crate::ids::cluster_id(&ids),
            initial_cluster,
            ..self
        }
    }

    pub fn runtime(&self, threads: usize) -> RuntimeSettings {
        RuntimeSettings {
            member_name: self.name.clone(),
            tracing: self.tracing.clone(),
            heap_profile: self.enable_pprof,
            unsafe_no_fsync: self.unsafe_no_fsync,
            log: self.log.clone(),
            threads,
            spin_before_sleep: self.spin_before_sleep,
        }
    }
}

/// etcd's refusal of two ways to name the initial cluster (3.4's words,
/// and 3.6's once v3 discovery is one of them).
const CONFLICTING_BOOTSTRAP: &str = "multiple discovery or bootstrap flags are set. Choose one of \"initial-cluster\", \"discovery\" or \"discovery-srv\"";
const CONFLICTING_BOOTSTRAP_3_6: &str = "multiple discovery or bootstrap flags are set. Choose one of \"initial-cluster\", \"discovery\", \"discovery-endpoints\" or \"discovery-srv\"";

impl MemberOpts {
    /// etcd's `--enable-log-rotation`: one file among the outputs, and
    /// lumberjack's settings from `--log-rotation-config-json`.
    fn log_rotation(
        &self,
        outputs: &[LogOutput],
    ) -> Result<Option<crate::log_rotation::Rotation>, ConfigError> {
        if self.enable_log_rotation != Some(true) {
            return Ok(None);
        }
        let files = outputs
            .iter()
            .filter(|o| matches!(o, LogOutput::File(_) | LogOutput::Journal))
            .count();
        if (outputs.len() == 1 && files == 0) || files > 1 {
            return Err(err(
                "--log-outputs requires a single file path when --log-rotate-config-json is defined",
            ));
        }
        let json = self
            .log_rotation_config_json
            .as_deref()
            .unwrap_or(crate::log_rotation::DEFAULT_CONFIG);
        crate::log_rotation::Rotation::parse(json).map(Some)
    }

    fn discovery_flags(&self) -> crate::discovery::DiscoveryFlags<'_> {
        crate::discovery::DiscoveryFlags {
            url: self.discovery.as_deref(),
            proxy: self.discovery_proxy.as_deref(),
            token: self.discovery_token.as_deref(),
            endpoints: self.discovery_endpoints.as_deref(),
            dial_timeout: self.discovery_dial_timeout.as_deref(),
            request_timeout: self.discovery_request_timeout.as_deref(),
            keepalive_time: self.discovery_keepalive_time.as_deref(),
            keepalive_timeout: self.discovery_keepalive_timeout.as_deref(),
            insecure_transport: self.discovery_insecure_transport,
            insecure_skip_tls_verify: self.discovery_insecure_skip_tls_verify,
            cert: self.discovery_cert.as_deref(),
            key: self.discovery_key.as_deref(),
            cacert: self.discovery_cacert.as_deref(),
            user: self.discovery_user.as_deref(),
            password: self.discovery_password.as_deref(),
        }
    }

    pub fn resolve(&self) -> Result<Member, ConfigError> {
        let name = self.name.clone().unwrap_or_else(|| "default".to_string());
        let data_dir = self
            .data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("{name}.triad")));
        let runtime_dir = match (&self.runtime_dir, std::env::var_os("RUNTIME_DIRECTORY")) {
            (Some(d), _) => d.clone(),
            (None, Some(d)) => PathBuf::from(d),
            (None, None) => data_dir.join("run"),
        };
        let peer_urls = parse_urls(
            self.initial_advertise_peer_urls
                .as_deref()
                .unwrap_or("http://localhost:2380"),
            "initial-advertise-peer-urls",
        )?;
        let cluster_token = self
            .initial_cluster_token
            .clone()
            .unwrap_or_else(|| "etcd-cluster".into());
        let discovery = crate::discovery::Discovery::from_flags(&self.discovery_flags())?;
        if let Some(d) = &discovery {
            if self.initial_cluster.is_some() || self.discovery_srv.is_some() {
                return Err(err(match d {
                    crate::discovery::Discovery::V3(_) => CONFLICTING_BOOTSTRAP_3_6,
                    crate::discovery::Discovery::V2(_) => CONFLICTING_BOOTSTRAP,
                }));
            }
        }
        // The discovery URL or token seeds the member IDs, as etcd's.
        let cluster_token = match &discovery {
            Some(d) => d.id_seed().to_string(),
            None => cluster_token,
        };
        let initial_cluster = match (&self.initial_cluster, &self.discovery_srv) {
            (Some(_), Some(_)) => return Err(err(CONFLICTING_BOOTSTRAP)),
            (Some(spec), None) => parse_initial_cluster(spec)?,
            (None, Some(domain)) => {
                let server = match &self.discovery_dns_server {
                    Some(a) => a.parse().map_err(|_| {
                        err(format!(
                            "invalid --discovery-dns-server {a:?} (want ip:port)"
                        ))
                    })?,
                    None => crate::dns_srv::system_name_server(),
                };
                let lookup = |q: &str| crate::dns_srv::lookup(q, server);
                srv_cluster(
                    &name,
                    &peer_urls,
                    domain,
                    self.discovery_srv_name.as_deref(),
                    &lookup,
                )?
            }
            (None, None) => vec![(name.clone(), peer_urls.clone())],
        };
        if !initial_cluster.iter().any(|(n, _)| *n == name) {
            return Err(err(format!(
                "couldn't find local name \"{name}\" in the initial cluster configuration"
            )));
        }
        let ids: Vec<u64> = initial_cluster
            .iter()
            .map(|(_, urls)| crate::ids::member_id(urls, &cluster_token))
            .collect();
        // The ID comes from the URLs the cluster lists for this name (as
        // etcd's), which DNS may spell differently from the advertised.
        let own_urls = initial_cluster
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(&peer_urls, |(_, urls)| urls);
        let member_id = crate::ids::member_id(own_urls, &cluster_token);
        let json = match (self.log_format.as_deref(), self.logger.as_deref()) {
            (Some("text"), _) | (None, None | Some("capnslog")) => false,
            (Some("json"), _) | (None, Some("zap")) => true,
            (None, Some(other)) => {
                return Err(err(format!(
                    "invalid --logger {other:?} (want zap or capnslog)"
                )))
            }
            (Some(other), _) => {
                return Err(err(format!(
                    "invalid --log-format {other:?} (want text or json)"
                )))
            }
        };
        let level = match (self.log_level.as_deref(), self.debug) {
            (Some(level), _) => level,
            (None, Some(true)) => "debug",
            (None, _) => "info",
        };
        let level = parse_level(level).ok_or_else(|| {
            err(format!(
                "invalid --log-level {level:?} (want debug, info, warn or error)"
            ))
        })?;
        let outputs = parse_log_outputs(self.log_outputs.as_deref().unwrap_or("default"))?;
        let spin_before_sleep = match self.spin_before_sleep.as_deref().map(str::trim) {
            None => DEFAULT_SPIN_BEFORE_SLEEP,
            Some("0") => std::time::Duration::ZERO,
            Some(text) => {
                parse_duration(text).map_err(|e| err(format!("--spin-before-sleep: {}", e.0)))?
            }
        };
        let max_txn_ops = self.max_txn_ops.unwrap_or(128);
        if max_txn_ops == 0 {
            return Err(err("--max-txn-ops must be at least 1"));
        }
        let warning_apply_duration = match &self.experimental_warning_apply_duration {
            None => std::time::Duration::from_millis(100),
            Some(text) => parse_duration(text)
                .map_err(|e| err(format!("--experimental-warning-apply-duration: {}", e.0)))?,
        };
        let feature_gates =
            crate::feature_gates::FeatureGates::parse(self.feature_gates.as_deref().unwrap_or(""))?;
        for w in feature_gates.without_effect() {
            crate::etcd_flags::warn(w);
        }
        Ok(Member {
            check_only: false,
            discovery,
            enable_pprof: self.enable_pprof.unwrap_or(false),
            tracing: crate::distributed_tracing::TracingSettings::from_flags(
                &crate::distributed_tracing::TracingFlags {
                    enable: self.experimental_enable_distributed_tracing,
                    address: self.experimental_distributed_tracing_address.as_deref(),
                    service_name: self
                        .experimental_distributed_tracing_service_name
                        .as_deref(),
                    instance_id: self.experimental_distributed_tracing_instance_id.as_deref(),
                    sampling_rate: self.experimental_distributed_tracing_sampling_rate,
                },
            )?,
            warning_apply_duration,
            unsafe_no_fsync: self.unsafe_no_fsync.unwrap_or(false),
            feature_gates,
            socket_reuse_port: self.socket_reuse_port.unwrap_or(false),
            max_request_bytes: self.max_request_bytes.unwrap_or(1536 * 1024),
            max_txn_ops,
            cipher_suites: self.cipher_suites.clone(),
            cluster_id: crate::ids::cluster_id(&ids),
            name,
            data_dir,
            runtime_dir,
            peer_urls,
            initial_cluster,
            cluster_token,
            member_id,
            socket_group_access: self.socket_group_access.unwrap_or(false),
            log: LogSettings {
                json,
                level,
                rotation: self.log_rotation(&outputs)?,
                outputs,
            },
            spin_before_sleep,
        })
    }
}

impl Member {
    pub fn storaged_socket(&self) -> PathBuf {
        self.runtime_dir.join("storaged.sock")
    }
    pub fn raftd_socket(&self) -> PathBuf {
        self.runtime_dir.join("raftd.sock")
    }
}

/// A comma-separated URL list; each must be http(s)://host:port.
pub fn parse_urls(list: &str, flag: &str) -> Result<Vec<String>, ConfigError> {
    let urls: Vec<String> = list
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    if urls.is_empty() {
        return Err(err(format!("--{flag} must not be empty")));
    }
    for u in &urls {
        url_host_port(u).map_err(|e| err(format!("--{flag}: {e}")))?;
    }
    Ok(urls)
}

/// `name=url,name=url` (a name may repeat for several URLs).
pub fn parse_initial_cluster(spec: &str) -> Result<Vec<(String, Vec<String>)>, ConfigError> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (name, url) = part
            .split_once('=')
            .ok_or_else(|| err(format!("--initial-cluster: {part:?} is not name=url")))?;
        url_host_port(url).map_err(|e| err(format!("--initial-cluster: {e}")))?;
        match out.iter_mut().find(|(n, _)| n == name) {
            Some((_, urls)) => urls.push(url.to_string()),
            None => out.push((name.to_string(), vec![url.to_string()])),
        }
    }
    if out.is_empty() {
        return Err(err("--initial-cluster must not be empty"));
    }
    Ok(out)
}

/// The `host:port` of an `http://` or `https://` URL.
pub fn url_host_port(url: &str) -> Result<&str, ConfigError> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .or_else(|| url.strip_prefix("unix://"))
        .ok_or_else(|| err(format!("URL scheme must be http or https: {url:?}")))?;
    let hostport = rest.trim_end_matches('/');
    if hostport.is_empty() || !hostport.contains(':') {
        return Err(err(format!(
            "URL address does not have the form \"host:port\": {url:?}"
        )));
    }
    Ok(hostport)
}

/// A URL's host (an IPv6 literal without its brackets), None when the URL
/// has no `host:port`.
pub fn url_host(url: &str) -> Option<String> {
    let hostport = url_host_port(url).ok()?;
    let (host, _) = hostport.rsplit_once(':')?;
    Some(
        host.trim_start_matches('[')
            .trim_end_matches(']')
            .to_string(),
    )
}

/// Resolve a listen URL to the socket address to bind.
pub fn listen_addr(url: &str) -> Result<SocketAddr, ConfigError> {
    let hostport = url_host_port(url)?;
    hostport
        .to_socket_addrs()
        .map_err(|e| err(format!("cannot resolve {url:?}: {e}")))?
        .next()
        .ok_or_else(|| err(format!("cannot resolve {url:?}")))
}

/// etcd's `--discovery-srv` bootstrap (`srv.GetCluster`): every server
/// the SRV records of `domain` name (TLS ones first), as name=URL; the
/// one that resolves to an address of `own_urls` is `name`, the others
/// are numbered. `lookup` answers one SRV question with (target, port).
fn srv_cluster(
    name: &str,
    own_urls: &[String],
    domain: &str,
    srv_name: Option<&str>,
    lookup: &dyn Fn(&str) -> crate::dns_srv::Records,
) -> Result<Vec<(String, Vec<String>)>, ConfigError> {
    let suffix = srv_name.map_or_else(String::new, |n| format!("-{n}"));
    let resolve = |host_port: &str| -> Vec<SocketAddr> {
        host_port
            .to_socket_addrs()
            .map(|a| a.collect())
            .unwrap_or_default()
    };
    let own: Vec<SocketAddr> = own_urls
        .iter()
        .filter_map(|u| url_host_port(u).ok())
        .flat_map(resolve)
        .collect();
    let mut cluster: Vec<(String, Vec<String>)> = Vec::new();
    let mut numbered = 0;
    for (scheme, service) in [("https", "_etcd-server-ssl"), ("http", "_etcd-server")] {
        let question = format!("{service}{suffix}._tcp.{domain}");
        let Ok(records) = lookup(&question) else {
            continue;
        };
        for (target, port) in records {
            let host = target.trim_end_matches('.');
            let host_port = if host.contains(':') {
                format!("[{host}]:{port}")
            } else {
                format!("{host}:{port}")
            };
            let addrs = resolve(&host_port);
            if addrs.is_empty() {
                return Err(err(format!("cannot resolve {host_port} (from {question})")));
            }
            let member = if addrs.iter().any(|a| own.contains(a)) {
                name.to_string()
            } else {
                numbered += 1;
                (numbered - 1).to_string()
            };
            let url = format!("{scheme}://{host_port}");
            match cluster.iter_mut().find(|(n, _)| *n == member) {
                Some((_, urls)) => urls.push(url),
                None => cluster.push((member, vec![url])),
            }
        }
    }
    if cluster.is_empty() {
        return Err(err(format!(
            "cannot find any DNS SRV records of the cluster's servers for {domain}"
        )));
    }
    Ok(cluster)
}

/// A Go-style duration as etcd's flags take it: "10m", "1m30s", "500ms".
pub fn parse_duration(text: &str) -> Result<std::time::Duration, ConfigError> {
    let bad = || {
        err(format!(
            "invalid duration {text:?} (want e.g. 10m, 30s, 500ms)"
        ))
    };
    let mut total = 0f64;
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let value: f64 = rest[..num_len].parse().map_err(|_| bad())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        total += value * scale;
        rest = &rest[unit_len..];
    }
    std::time::Duration::try_from_secs_f64(total).map_err(|_| bad())
}

/// A daemon's command line: the config file, the member options and the
/// daemon's own options.
#[derive(clap::Parser, Debug)]
pub struct DaemonCli<T: clap::Args> {
    /// Path to the member's config file: triad's TOML, or etcd's YAML
    /// (then it alone sets etcd's settings, as for etcd).
    #[arg(long, env = "TRIAD_CONFIG_FILE")]
    pub config_file: Option<PathBuf>,
    /// Check the member's settings and that its data and socket directories
    /// are writable, then exit: 0 when this daemon would start, 2 when it
    /// could not (triad-check.service runs it before the daemons start).
    #[arg(long)]
    pub check_config: bool,
    #[command(flatten)]
    pub member: MemberOpts,
    #[command(flatten)]
    pub opts: T,
}

/// Parse the command line of daemon `name` (clap prints help, version and
/// usage errors itself), check the whole member's settings, and load the
/// daemon's layered configuration.
pub fn from_command_line<T>(
    name: &'static str,
    about: &'static str,
) -> Result<(Member, T), ConfigError>
where
    T: clap::Args + Serialize + DeserializeOwned,
{
    use clap::{CommandFactory, FromArgMatches};
    let command = || {
        DaemonCli::<T>::command()
            .name(name)
            .about(about)
            .version(crate::VERSION)
    };
    // etcd's flags and ETCD_* variables, for the options this daemon has.
    let known: std::collections::HashMap<String, Option<String>> = command()
        .get_arguments()
        .filter_map(|a| {
            let env = a.get_env().map(|e| e.to_string_lossy().into_owned());
            a.get_long().map(|l| (l.to_string(), env))
        })
        .collect();
    let args: Vec<OsString> = std::env::args_os().collect();
    // --help and --version answer whatever the configuration says.
    let asks = |f: &str| args.iter().skip(1).any(|a| a == f);
    let file = if asks("--help") || asks("-h") || asks("--version") || asks("-V") {
        ConfigFile::None
    } else {
        let path = config_file_path(&args);
        let file = ConfigFile::load(path.as_deref())?;
        let settings = match &file {
            ConfigFile::None => crate::member_check::FileSettings::None,
            ConfigFile::Toml(t) => crate::member_check::FileSettings::Toml(t),
            ConfigFile::Yaml(s) => crate::member_check::FileSettings::Yaml(s),
        };
        let env = |var: &str| std::env::var(var).ok();
        crate::member_check::check(&args, &env, &settings)?;
        if let (Some(path), ConfigFile::Yaml(_)) = (&path, &file) {
            crate::etcd_flags::notice(format!(
                "loaded server configuration from {:?}; other configuration command line flags and environment variables will be ignored if provided",
                path.display().to_string()
            ));
        }
        file
    };
    let args = match &file {
        ConfigFile::Yaml(settings) => {
            // As etcd: the file alone sets etcd's settings. Variables for
            // them are dropped before clap reads them.
            for (long, env) in &known {
                if let Some(env) = env {
                    if crate::etcd_flags::is_etcd_setting(long) {
                        std::env::remove_var(env);
                    }
                }
            }
            std::env::remove_var("TRIAD_CONFIG_FILE");
            let mut args = crate::etcd_flags::without_etcd_flags(args);
            args.extend(
                settings
                    .iter()
                    .map(|(k, v)| OsString::from(format!("--{k}={v}"))),
            );
            crate::etcd_flags::adapt_args(args, &known)
        }
        ConfigFile::None | ConfigFile::Toml(_) => {
            crate::etcd_flags::adapt_env(&known);
            crate::etcd_flags::adapt_args(args, &known)
        }
    };
    // Built again: clap reads an option's variable when the option is made.
    let command = command();
    let matches = command.get_matches_from(args);
    let cli = DaemonCli::<T>::from_arg_matches(&matches).map_err(|e| err(e.to_string()))?;
    let table = file.toml();
    let mut member = layer(&table, "member", &cli.member)?.resolve()?;
    member.check_only = cli.check_config;
    let own = layer(&table, name, &cli.opts)?;
    Ok((member, own))
}

#[cfg(test)]
mod tests {
    /// Every default systemd/triad.toml shows for [member] is the default.
    #[test]
    fn the_example_config_shows_the_member_defaults() {
        let example = include_str!("../../systemd/triad.toml");
        let documented = documented_defaults(example, "member");
        assert!(documented.len() >= 5, "{documented:?}");
        let default = MemberOpts::default().resolve().expect("defaults resolve");
        for (key, value) in documented {
            let mut t = toml::Table::new();
            t.insert(key.clone(), value);
            let opts = MemberOpts::deserialize(toml::Value::Table(t))
                .unwrap_or_else(|e| panic!("{key}: {e}"));
            assert_eq!(opts.resolve().expect(&key), default, "{key}");
        }
    }

    use super::*;

    #[derive(clap::Args, Serialize, Deserialize, Default, Debug)]
    #[serde(deny_unknown_fields, rename_all = "kebab-case")]
    struct Opts {
        #[arg(long)]
        #[serde(skip_serializing_if = "Option::is_none")]
        max_txn_ops: Option<u32>,
        #[arg(long)]
        #[serde(skip_serializing_if = "Option::is_none")]
        name: Option<String>,
    }

    #[test]
    fn flags_override_file_and_file_fills_the_rest() {
        let file: toml::Table = "[gatewayd]\nmax-txn-ops = 7\nname = \"a\"\n"
            .parse()
            .unwrap();
        let cli = Opts {
            max_txn_ops: None,
            name: Some("b".into()),
        };
        let got = layer(&file, "gatewayd", &cli).unwrap();
        assert_eq!(got.max_txn_ops, Some(7));
        assert_eq!(got.name.as_deref(), Some("b"));
    }

    #[test]
    fn unknown_keys_and_bad_types_are_errors() {
        let file: toml::Table = "[gatewayd]\nmax-txn-opz = 7\n".parse().unwrap();
        let e = layer(&file, "gatewayd", &Opts::default()).unwrap_err();
        assert!(e.0.contains("max-txn-opz"), "{e}");
        let file: toml::Table = "[gatewayd]\nmax-txn-ops = \"x\"\n".parse().unwrap();
        assert!(layer(&file, "gatewayd", &Opts::default()).is_err());
    }

    #[test]
    fn urls_and_initial_cluster_parse() {
        assert_eq!(
            url_host_port("http://127.0.0.1:2379").unwrap(),
            "127.0.0.1:2379"
        );
        assert!(url_host_port("ftp://x:1").is_err());
        assert!(url_host_port("http://nohost").is_err());
        let c = parse_initial_cluster("a=http://h:1,b=http://h:2,a=http://h:3").unwrap();
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].1.len(), 2);
        assert!(parse_initial_cluster("a").is_err());
    }

    #[test]
    fn srv_records_name_this_member_and_number_the_others() {
        let lookup = |q: &str| -> crate::dns_srv::Records {
            match q {
                "_etcd-server._tcp.example.test" => Ok(vec![
                    ("127.0.0.2.".to_string(), 2380),
                    ("127.0.0.1.".to_string(), 2380),
                    ("127.0.0.3.".to_string(), 2380),
                ]),
                _ => Err(crate::dns_srv::SrvError::NoRecords(q.to_string())),
            }
        };
        let own = vec!["http://127.0.0.1:2380".to_string()];
        let got = srv_cluster("m1", &own, "example.test", None, &lookup).unwrap();
        let url = |h: &str| vec![format!("http://{h}:2380")];
        assert_eq!(
            got,
            vec![
                ("0".to_string(), url("127.0.0.2")),
                ("m1".to_string(), url("127.0.0.1")),
                ("1".to_string(), url("127.0.0.3")),
            ]
        );
        assert!(srv_cluster("m1", &own, "other.test", None, &lookup).is_err());
    }

    #[test]
    fn go_durations() {
        use std::time::Duration;
        assert_eq!(parse_duration("10m").unwrap(), Duration::from_secs(600));
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("99999999999999999999999999h").is_err());
        assert!(parse_duration("x").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn etcds_log_outputs() {
        assert_eq!(
            parse_log_outputs("default,systemd/journal,stdout,/var/log/m.log").unwrap(),
            [
                LogOutput::Stderr,
                LogOutput::Journal,
                LogOutput::Stdout,
                LogOutput::File("/var/log/m.log".into())
            ]
        );
        assert!(parse_log_outputs(" , ").is_err());
    }

    #[test]
    fn member_must_be_in_initial_cluster() {
        let opts = MemberOpts {
            name: Some("x".into()),
            initial_cluster: Some("y=http://127.0.0.1:2380".into()),
            ..Default::default()
        };
        assert!(opts.resolve().is_err());
    }
}
