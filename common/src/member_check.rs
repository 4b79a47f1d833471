//! The whole member's etcd settings, checked alike by all three daemons
//! before any of them starts. Every etcd setting, wherever it is given (a
//! flag, an `ETCD_*` or `TRIAD_*` variable, the config file) and whichever
//! daemon takes it, must parse as etcd 3.4's flag of that name does, and
//! the settings etcd checks together must agree; the error is etcd's. So a
//! value only gatewayd uses (`--quota-backend-bytes 8GB`) stops storaged
//! and raftd too, as it stops etcd, instead of leaving part of a member up.

use std::collections::HashMap;
use std::ffi::OsString;

use crate::config::ConfigError;

/// The Go type etcd 3.4 gives a setting (its flag's, and its YAML key's).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Str,
    /// A comma-separated list on the command line, `[]string` in YAML.
    List,
    Bool,
    Int,
    Int64,
    Uint,
    Uint32,
    Uint64,
    Duration,
    /// A comma-separated URL list (a string in YAML).
    Urls,
    /// One of a few words (a string in YAML).
    OneOf(&'static [&'static str]),
}

impl Kind {
    /// The Go type's name, as encoding/json's errors show it.
    pub fn go_type(self) -> &'static str {
        match self {
            Kind::Str | Kind::Urls | Kind::OneOf(_) => "string",
            Kind::List => "[]string",
            Kind::Bool => "bool",
            Kind::Int => "int",
            Kind::Int64 => "int64",
            Kind::Uint => "uint",
            Kind::Uint32 => "uint32",
            Kind::Uint64 => "uint64",
            Kind::Duration => "time.Duration",
        }
    }

    fn is_integer(self) -> bool {
        matches!(
            self,
            Kind::Int | Kind::Int64 | Kind::Uint | Kind::Uint32 | Kind::Uint64 | Kind::Duration
        )
    }
}

/// The kind of etcd server setting `name` (etcd's name), if it is one.
/// (`proxy` is left out: gatewayd's `--proxy` takes l4 and l7 as well.)
pub fn kind(name: &str) -> Option<Kind> {
    use Kind::*;
    Some(match name {
        "name"
        | "data-dir"
        | "wal-dir"
        | "discovery"
        | "discovery-proxy"
        | "discovery-srv"
        | "discovery-srv-name"
        | "initial-cluster"
        | "initial-cluster-token"
        | "auto-compaction-retention"
        | "auto-compaction-mode"
        | "cors"
        | "host-whitelist"
        | "cert-file"
        | "key-file"
        | "trusted-ca-file"
        | "client-crl-file"
        | "client-cert-allowed-hostname"
        | "peer-cert-file"
        | "peer-key-file"
        | "peer-trusted-ca-file"
        | "peer-crl-file"
        | "peer-cert-allowed-cn"
        | "peer-cert-allowed-hostname"
        | "auth-token"
        | "metrics"
        | "logger"
        | "log-level"
        | "log-package-levels"
        | "experimental-enable-v2v3"
        | "experimental-backend-bbolt-freelist-type"
        | "feature-gates" => Str,
        "cipher-suites" | "log-outputs" => List,
        "initial-election-tick-advance"
        | "strict-reconfig-check"
        | "enable-v2"
        | "pre-vote"
        | "client-cert-auth"
        | "auto-tls"
        | "peer-client-cert-auth"
        | "peer-auto-tls"
        | "enable-pprof"
        | "debug"
        | "experimental-initial-corrupt-check"
        | "experimental-enable-lease-checkpoint"
        | "experimental-peer-skip-client-san-verification"
        | "force-new-cluster"
        | "unsafe-no-fsync"
        | "socket-reuse-port"
        | "socket-reuse-address" => Bool,
        "quota-backend-bytes" => Int64,
        "backend-batch-limit"
        | "experimental-compaction-batch-limit"
        | "experimental-max-learners" => Int,
        "heartbeat-interval"
        | "election-timeout"
        | "max-snapshots"
        | "max-wals"
        | "max-txn-ops"
        | "max-request-bytes"
        | "bcrypt-cost"
        | "auth-token-ttl"
        | "proxy-failure-wait"
        | "proxy-refresh-interval"
        | "proxy-dial-timeout"
        | "proxy-write-timeout"
        | "proxy-read-timeout" => Uint,
        "max-concurrent-streams" => Uint32,
        "snapshot-count" => Uint64,
        "backend-batch-interval"
        | "grpc-keepalive-min-time"
        | "grpc-keepalive-interval"
        | "grpc-keepalive-timeout"
        | "experimental-corrupt-check-time"
        | "experimental-watch-progress-notify-interval"
        | "experimental-warning-apply-duration" => Duration,
        "listen-peer-urls"
        | "listen-client-urls"
        | "listen-client-http-urls"
        | "listen-metrics-urls"
        | "initial-advertise-peer-urls"
        | "advertise-client-urls" => Urls,
        "initial-cluster-state" => OneOf(&["new", "existing"]),
        "discovery-fallback" => OneOf(&["exit", "proxy"]),
        _ => return None,
    })
}

/// triad's own options (no etcd name) in each daemon's section: the
/// variable that sets each, and the kind its parser takes. (`[member]`'s
/// options need no entry: every daemon resolves them.)
const OWN: &[(&str, &str, &str, Kind)] = &[
    (
        "storaged",
        "cache-mb",
        "TRIAD_STORAGED_CACHE_MB",
        Kind::Uint64,
    ),
    (
        "storaged",
        "metrics-url",
        "TRIAD_STORAGED_METRICS_URL",
        Kind::Str,
    ),
    ("raftd", "metrics-url", "TRIAD_RAFTD_METRICS_URL", Kind::Str),
    (
        "raftd",
        "lease-checkpoint-interval",
        "TRIAD_LEASE_CHECKPOINT_INTERVAL",
        Kind::Duration,
    ),
    ("raftd", "peer-netns", "TRIAD_PEER_NETNS", Kind::Str),
    (
        "raftd",
        "snapshot-catchup-entries",
        "TRIAD_SNAPSHOT_CATCHUP_ENTRIES",
        Kind::Uint64,
    ),
    (
        "gatewayd",
        "request-timeout-ms",
        "TRIAD_REQUEST_TIMEOUT_MS",
        Kind::Uint64,
    ),
    (
        "gatewayd",
        "probe-timeout-ms",
        "TRIAD_PROBE_TIMEOUT_MS",
        Kind::Uint64,
    ),
    (
        "gatewayd",
        "worker-threads",
        "TRIAD_WORKER_THREADS",
        Kind::Uint,
    ),
    ("gatewayd", "proxy", "TRIAD_PROXY", Kind::Str),
    (
        "gatewayd",
        "proxy-endpoints",
        "TRIAD_PROXY_ENDPOINTS",
        Kind::Str,
    ),
    (
        "gatewayd",
        "proxy-discovery-srv",
        "TRIAD_PROXY_DISCOVERY_SRV",
        Kind::Str,
    ),
    (
        "gatewayd",
        "proxy-dns-server",
        "TRIAD_PROXY_DNS_SERVER",
        Kind::Str,
    ),
    (
        "gatewayd",
        "proxy-retry-delay",
        "TRIAD_PROXY_RETRY_DELAY",
        Kind::Duration,
    ),
    (
        "gatewayd",
        "proxy-namespace",
        "TRIAD_PROXY_NAMESPACE",
        Kind::Str,
    ),
    (
        "gatewayd",
        "proxy-trusted-ca-file",
        "TRIAD_PROXY_TRUSTED_CA_FILE",
        Kind::Str,
    ),
    (
        "gatewayd",
        "proxy-cert-file",
        "TRIAD_PROXY_CERT_FILE",
        Kind::Str,
    ),
    (
        "gatewayd",
        "proxy-key-file",
        "TRIAD_PROXY_KEY_FILE",
        Kind::Str,
    ),
    ("gatewayd", "etcd-version", "TRIAD_ETCD_VERSION", Kind::Str),
];

/// The kind of triad's own option `name` of daemon `section`.
fn own_kind(section: &str, name: &str) -> Option<Kind> {
    OWN.iter()
        .find(|(s, n, _, _)| *s == section && *n == name)
        .map(|(_, _, _, k)| *k)
}

/// The options of daemon `section` (its clap arguments, `--config-file`
/// and `[member]`'s left out) this check does not know, or knows under
/// another variable: each daemon's tests keep the tables whole.
pub fn unknown_options(section: &str, options: &clap::Command) -> Vec<String> {
    options
        .get_arguments()
        .filter_map(|a| {
            let long = a.get_long()?;
            let env = a.get_env().map(|e| e.to_string_lossy().into_owned());
            let known = if kind(etcd_name(long)).is_some() {
                env.as_deref() == Some(triad_var(etcd_name(long)).as_str())
            } else {
                OWN.iter()
                    .any(|(s, n, v, _)| *s == section && *n == long && env.as_deref() == Some(*v))
            };
            (!known).then(|| long.to_string())
        })
        .collect()
}

/// etcd's name of an option triad names differently.
pub fn etcd_name(name: &str) -> &str {
    match name {
        "watch-progress-notify-interval" => "experimental-watch-progress-notify-interval",
        other => other,
    }
}

/// triad's name of an etcd option.
pub fn triad_name(etcd: &str) -> &str {
    match etcd {
        "experimental-watch-progress-notify-interval" => "watch-progress-notify-interval",
        other => other,
    }
}

/// The `TRIAD_*` variable of an etcd setting.
fn triad_var(etcd: &str) -> String {
    format!("TRIAD_{}", env_suffix(triad_name(etcd)))
}

/// The `ETCD_*` variable of an etcd setting.
fn etcd_var(etcd: &str) -> String {
    format!("ETCD_{}", env_suffix(etcd))
}

fn env_suffix(name: &str) -> String {
    name.to_ascii_uppercase().replace('-', "_")
}

/// Whether etcd's setting `name` (or triad's name for it) is a number or
/// a duration: a value that `normalized` may rewrite.
pub fn is_number(name: &str) -> bool {
    kind(etcd_name(name)).is_some_and(Kind::is_integer)
}

/// A value as triad's parsers take it: Go's spellings of booleans (`t`,
/// `1`, ...) and numbers (`0x10`, `1_000`) in their plain form; any other
/// text as it is.
pub fn normalized(name: &str, text: &str) -> String {
    let plain = match kind(etcd_name(name)) {
        Some(Kind::Bool) => go_bool(text).map(|b| b.to_string()),
        Some(Kind::Int | Kind::Int64) => go_int(text).ok().map(|n| n.to_string()),
        Some(Kind::Uint | Kind::Uint32 | Kind::Uint64) => {
            go_uint(text, 64).ok().map(|n| n.to_string())
        }
        // Go's bare zero duration, which triad's parser wants with a unit.
        Some(Kind::Duration) => matches!(text, "0" | "+0" | "-0").then(|| "0s".to_string()),
        _ => None,
    };
    plain.unwrap_or_else(|| text.to_string())
}

/// Why `text` is no value of `kind`, in Go's flag package's words.
pub fn flag_reason(kind: Kind, text: &str) -> Option<String> {
    let num = |r: Result<(), NumError>| match r {
        Ok(()) => None,
        Err(NumError::Syntax) => Some("parse error".to_string()),
        Err(NumError::Range) => Some("value out of range".to_string()),
    };
    match kind {
        Kind::Str | Kind::List => None,
        Kind::Bool => go_bool(text).is_none().then(|| "parse error".into()),
        Kind::Int | Kind::Int64 => num(go_int(text).map(drop)),
        Kind::Uint | Kind::Uint64 => num(go_uint(text, 64).map(drop)),
        // etcd's own flag type: strconv's error as it is.
        Kind::Uint32 => match go_uint(text, 32) {
            Ok(_) => None,
            Err(NumError::Syntax) => Some(format!(
                "strconv.ParseUint: parsing \"{text}\": invalid syntax"
            )),
            Err(NumError::Range) => Some(format!(
                "strconv.ParseUint: parsing \"{text}\": value out of range"
            )),
        },
        Kind::Duration => (!go_duration_ok(text)).then(|| "parse error".into()),
        Kind::Urls => url_list_reason(text),
        Kind::OneOf(words) => (!words.contains(&text)).then(|| "invalid value".into()),
    }
}

/// etcd's check of a URL list (types.NewURLs).
pub fn url_list_reason(text: &str) -> Option<String> {
    for url in text.split(',').map(str::trim) {
        let Some((scheme, rest)) = url.split_once("://") else {
            return Some(format!(
                "URL scheme must be http, https, unix, or unixs: {url}"
            ));
        };
        if !matches!(scheme, "http" | "https" | "unix" | "unixs") {
            return Some(format!(
                "URL scheme must be http, https, unix, or unixs: {url}"
            ));
        }
        let (host, path) = match rest.find(['/', '?', '#']) {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        let has_port = match host.rsplit_once(':') {
            Some((h, _)) if h.starts_with('[') => h.ends_with(']'),
            Some((h, _)) => !h.contains(':'),
            None => false,
        };
        if !has_port {
            return Some(format!(
                "URL address does not have the form \"host:port\": {url}"
            ));
        }
        if !path.is_empty() && !path.starts_with(['?', '#']) {
            return Some(format!("URL must not contain a path: {url}"));
        }
    }
    None
}

#[derive(Debug, PartialEq, Eq)]
enum NumError {
    Syntax,
    Range,
}

/// Go's strconv.ParseBool.
pub fn go_bool(text: &str) -> Option<bool> {
    match text {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// Go's strconv.ParseUint(text, 0, bits): 0x, 0o, 0b and 0 prefixes,
/// underscores between digits.
fn go_uint(text: &str, bits: u32) -> Result<u64, NumError> {
    let lower = text.to_ascii_lowercase();
    let (radix, digits) = if let Some(d) = lower.strip_prefix("0x") {
        (16, d)
    } else if let Some(d) = lower.strip_prefix("0o") {
        (8, d)
    } else if let Some(d) = lower.strip_prefix("0b") {
        (2, d)
    } else if lower.len() > 1 && lower.starts_with('0') {
        (8, &lower[1..])
    } else {
        (10, lower.as_str())
    };
    if digits.is_empty()
        || digits.starts_with('_')
        || digits.ends_with('_')
        || digits.contains("__")
        || !digits.chars().all(|c| c == '_' || c.is_digit(radix))
    {
        return Err(NumError::Syntax);
    }
    let digits = digits.replace('_', "");
    let value = u64::from_str_radix(&digits, radix).map_err(|_| NumError::Range)?;
    if bits < 64 && value >> bits != 0 {
        return Err(NumError::Range);
    }
    Ok(value)
}

/// Go's strconv.ParseInt(text, 0, 64).
fn go_int(text: &str) -> Result<i64, NumError> {
    let (negative, magnitude) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let m = go_uint(magnitude, 64)?;
    if negative {
        if m > 1 << 63 {
            return Err(NumError::Range);
        }
        Ok((m as i64).wrapping_neg())
    } else {
        i64::try_from(m).map_err(|_| NumError::Range)
    }
}

/// Whether Go's time.ParseDuration takes `text`.
pub fn go_duration_ok(text: &str) -> bool {
    let mut rest = text.strip_prefix(['-', '+']).unwrap_or(text);
    if rest == "0" {
        return true;
    }
    if rest.is_empty() {
        return false;
    }
    let mut nanos = 0f64;
    while !rest.is_empty() {
        let end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number = &rest[..end];
        if number.is_empty() || number == "." || number.matches('.').count() > 1 {
            return false;
        }
        let Ok(value) = number.parse::<f64>() else {
            return false;
        };
        rest = &rest[end..];
        let end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..end] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return false,
        };
        nanos += value * scale;
        rest = &rest[end..];
    }
    nanos <= i64::MAX as f64
}

/// The config file's etcd settings, by etcd name, for the check.
pub enum FileSettings<'a> {
    None,
    /// triad's TOML: every section's keys.
    Toml(&'a toml::Table),
    /// etcd's YAML, already type-checked: the file alone decides, flags
    /// and variables are ignored (as etcd does).
    Yaml(&'a [(String, String)]),
}

/// A flag as written: its name (without dashes) and its value, if any.
fn flags(args: &[OsString]) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    let mut it = args.iter().skip(1).peekable();
    while let Some(arg) = it.next() {
        let Some(text) = arg.to_str() else { continue };
        if text == "--" {
            break;
        }
        let Some(flag) = text.strip_prefix("--").or_else(|| text.strip_prefix('-')) else {
            continue;
        };
        let (name, value) = match flag.split_once('=') {
            Some((n, v)) => (n.to_string(), Some(v.to_string())),
            None => (flag.to_string(), None),
        };
        let value = match (value, kind(etcd_name(&name))) {
            (Some(v), _) => Some(v),
            // Go takes a boolean flag's value only after '='.
            (None, Some(Kind::Bool)) | (None, None) => None,
            (None, Some(_)) => it.next().and_then(|v| v.to_str()).map(str::to_string),
        };
        out.push((name, value));
    }
    out
}

/// Check the whole member's settings: each as etcd parses it, then the
/// ones etcd checks together. `env` reads a variable.
pub fn check(
    args: &[OsString],
    env: &dyn Fn(&str) -> Option<String>,
    file: &FileSettings<'_>,
) -> Result<(), ConfigError> {
    let bad = |msg: String| Err(ConfigError(msg));
    // Effective values by etcd name: flag, then TRIAD_*, ETCD_*, the file.
    let mut effective: HashMap<String, String> = HashMap::new();
    // etcd parses its flags even when a config file makes it ignore them.
    for (given, value) in flags(args) {
        let name = etcd_name(&given).to_string();
        let Some(k) = kind(&name) else { continue };
        let text = value.unwrap_or_else(|| "true".into());
        if let Some(reason) = flag_reason(k, &text) {
            return bad(if k == Kind::Bool {
                format!("invalid boolean value \"{text}\" for -{given}: {reason}")
            } else {
                format!("invalid value \"{text}\" for flag -{given}: {reason}")
            });
        }
        effective.insert(name, text);
    }
    match file {
        FileSettings::Yaml(settings) => {
            effective = settings.iter().cloned().collect();
        }
        FileSettings::None | FileSettings::Toml(_) => {
            let mut all: Vec<&'static str> = ALL.to_vec();
            all.sort_unstable();
            for name in all {
                if effective.contains_key(name) {
                    continue;
                }
                let Some(k) = kind(name) else { continue };
                for var in [triad_var(name), etcd_var(name)] {
                    let Some(text) = env(&var) else { continue };
                    if let Some(reason) = flag_reason(k, &text) {
                        return bad(format!("invalid value \"{text}\" for {var}: {reason}"));
                    }
                    effective.insert(name.to_string(), text);
                    break;
                }
            }
            // triad's own options, which have no flag in a sibling.
            for (_, _, var, k) in OWN {
                if let Some(text) = env(var) {
                    if let Some(reason) = flag_reason(*k, &text) {
                        return bad(format!("invalid value \"{text}\" for {var}: {reason}"));
                    }
                }
            }
            if let FileSettings::Toml(table) = file {
                check_toml(table, &mut effective)?;
            }
        }
    }
    together(&effective)
}

/// Every name `kind` knows (for the variables' scan).
const ALL: &[&str] = &[
    "name",
    "data-dir",
    "wal-dir",
    "snapshot-count",
    "heartbeat-interval",
    "election-timeout",
    "initial-election-tick-advance",
    "listen-peer-urls",
    "listen-client-urls",
    "listen-metrics-urls",
    "max-snapshots",
    "max-wals",
    "quota-backend-bytes",
    "backend-batch-interval",
    "backend-batch-limit",
    "max-txn-ops",
    "max-request-bytes",
    "max-concurrent-streams",
    "grpc-keepalive-min-time",
    "grpc-keepalive-interval",
    "grpc-keepalive-timeout",
    "initial-advertise-peer-urls",
    "advertise-client-urls",
    "discovery",
    "discovery-fallback",
    "discovery-proxy",
    "discovery-srv",
    "discovery-srv-name",
    "initial-cluster",
    "initial-cluster-token",
    "initial-cluster-state",
    "strict-reconfig-check",
    "enable-v2",
    "pre-vote",
    "auto-compaction-retention",
    "auto-compaction-mode",
    "cors",
    "host-whitelist",
    "cert-file",
    "key-file",
    "client-cert-auth",
    "client-crl-file",
    "client-cert-allowed-hostname",
    "trusted-ca-file",
    "auto-tls",
    "peer-cert-file",
    "peer-key-file",
    "peer-client-cert-auth",
    "peer-trusted-ca-file",
    "peer-auto-tls",
    "peer-cert-allowed-cn",
    "peer-cert-allowed-hostname",
    "peer-crl-file",
    "cipher-suites",
    "auth-token",
    "bcrypt-cost",
    "auth-token-ttl",
    "enable-pprof",
    "metrics",
    "logger",
    "log-outputs",
    "log-level",
    "debug",
    "log-package-levels",
    "experimental-initial-corrupt-check",
    "experimental-corrupt-check-time",
    "experimental-enable-v2v3",
    "experimental-backend-bbolt-freelist-type",
    "experimental-enable-lease-checkpoint",
    "experimental-compaction-batch-limit",
    "experimental-peer-skip-client-san-verification",
    "experimental-watch-progress-notify-interval",
    "experimental-warning-apply-duration",
    "force-new-cluster",
    "proxy-failure-wait",
    "proxy-refresh-interval",
    "proxy-dial-timeout",
    "proxy-write-timeout",
    "proxy-read-timeout",
];

/// The etcd settings in every section of triad's TOML file: TOML's types
/// for etcd's (an integer for a number, a boolean for a flag), and the
/// text etcd would parse.
fn check_toml(
    table: &toml::Table,
    effective: &mut HashMap<String, String>,
) -> Result<(), ConfigError> {
    for section in ["member", "storaged", "raftd", "gatewayd"] {
        let Some(toml::Value::Table(keys)) = table.get(section) else {
            continue;
        };
        for (key, value) in keys {
            let name = etcd_name(key);
            let Some(k) = kind(name).or_else(|| own_kind(section, key)) else {
                continue;
            };
            let text = match (k, value) {
                (Kind::Bool, toml::Value::Boolean(b)) => b.to_string(),
                (Kind::Bool, _) => {
                    return Err(ConfigError(format!(
                        "config [{section}]: {key} must be true or false"
                    )))
                }
                (k, toml::Value::Integer(n)) if k.is_integer() && k != Kind::Duration => {
                    n.to_string()
                }
                (k, _) if k.is_integer() && k != Kind::Duration => {
                    return Err(ConfigError(format!(
                        "config [{section}]: {key} must be an integer, not {value}"
                    )))
                }
                (_, toml::Value::String(s)) => s.clone(),
                _ => {
                    return Err(ConfigError(format!(
                        "config [{section}]: {key} must be a string, not {value}"
                    )))
                }
            };
            if let Some(reason) = flag_reason(k, &text) {
                return Err(ConfigError(format!(
                    "config [{section}]: invalid value \"{text}\" for {key}: {reason}"
                )));
            }
            if kind(name).is_some() {
                effective.entry(name.to_string()).or_insert(text);
            }
        }
    }
    Ok(())
}

/// etcd's checks of settings together (embed.Config.Validate), for the
/// ones triad takes.
fn together(settings: &HashMap<String, String>) -> Result<(), ConfigError> {
    let uint = |name: &str, default: u64| {
        settings
            .get(name)
            .and_then(|t| go_uint(t, 64).ok())
            .unwrap_or(default)
    };
    let hb = uint("heartbeat-interval", 100);
    let el = uint("election-timeout", 1000);
    let bad = |msg: String| Err(ConfigError(msg));
    if hb == 0 {
        return bad(format!("--heartbeat-interval must be >0 (set to {hb}ms)"));
    }
    if el == 0 {
        return bad(format!("--election-timeout must be >0 (set to {el}ms)"));
    }
    if u128::from(hb) * 5 > u128::from(el) {
        return bad(format!(
            "--election-timeout[{el}ms] should be at least as 5 times as --heartbeat-interval[{hb}ms]"
        ));
    }
    if el > 50_000 {
        return bad(format!(
            "--election-timeout[{el}ms] is too long, and should be set less than 50000ms"
        ));
    }
    if let Some(state) = settings.get("initial-cluster-state") {
        if state != "new" && state != "existing" {
            return bad(format!("unexpected clusterState {state:?}"));
        }
    }
    if let Some(mode) = settings.get("auto-compaction-mode") {
        if !matches!(mode.as_str(), "" | "periodic" | "revision") {
            return bad(format!("unknown auto-compaction-mode {mode:?}"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<OsString> {
        std::iter::once("daemon")
            .chain(a.iter().copied())
            .map(OsString::from)
            .collect()
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn check_args(a: &[&str]) -> Result<(), String> {
        check(&args(a), &no_env, &FileSettings::None).map_err(|e| e.0)
    }

    #[test]
    fn flag_values_fail_with_etcds_text() {
        assert_eq!(
            check_args(&["--quota-backend-bytes", "8GB"]).unwrap_err(),
            "invalid value \"8GB\" for flag -quota-backend-bytes: parse error"
        );
        assert_eq!(
            check_args(&["--pre-vote=maybe"]).unwrap_err(),
            "invalid boolean value \"maybe\" for -pre-vote: parse error"
        );
        assert_eq!(
            check_args(&["-heartbeat-interval", "-1"]).unwrap_err(),
            "invalid value \"-1\" for flag -heartbeat-interval: parse error"
        );
        assert_eq!(
            check_args(&["--max-concurrent-streams", "99999999999"]).unwrap_err(),
            "invalid value \"99999999999\" for flag -max-concurrent-streams: strconv.ParseUint: parsing \"99999999999\": value out of range"
        );
        assert_eq!(
            check_args(&["--listen-client-urls", "ftp://x:1"]).unwrap_err(),
            "invalid value \"ftp://x:1\" for flag -listen-client-urls: URL scheme must be http, https, unix, or unixs: ftp://x:1"
        );
        assert_eq!(
            check_args(&["--listen-client-urls", "http://x"]).unwrap_err(),
            "invalid value \"http://x\" for flag -listen-client-urls: URL address does not have the form \"host:port\": http://x"
        );
        assert_eq!(
            check_args(&["--initial-cluster-state", "bogus"]).unwrap_err(),
            "invalid value \"bogus\" for flag -initial-cluster-state: invalid value"
        );
        assert_eq!(
            check_args(&["--experimental-corrupt-check-time", "5"]).unwrap_err(),
            "invalid value \"5\" for flag -experimental-corrupt-check-time: parse error"
        );
        assert_eq!(
            check_args(&["--election-timeout", "200"]).unwrap_err(),
            "--election-timeout[200ms] should be at least as 5 times as --heartbeat-interval[100ms]"
        );
        assert_eq!(
            check_args(&["--auto-compaction-mode", "x"]).unwrap_err(),
            "unknown auto-compaction-mode \"x\""
        );
    }

    #[test]
    fn good_values_pass() {
        check_args(&[
            "--quota-backend-bytes",
            "0x10",
            "--pre-vote",
            "--strict-reconfig-check=F",
            "--snapshot-count=1_000",
            "--experimental-watch-progress-notify-interval",
            "1m30s",
            "--listen-client-urls",
            "http://127.0.0.1:2379,https://[::1]:2379",
            "--cache-mb",
            "7",
        ])
        .unwrap();
    }

    #[test]
    fn variables_are_checked_unless_a_flag_wins() {
        let env = |k: &str| (k == "ETCD_QUOTA_BACKEND_BYTES").then(|| "8GB".to_string());
        let e = check(&args(&[]), &env, &FileSettings::None).unwrap_err();
        assert_eq!(
            e.0,
            "invalid value \"8GB\" for ETCD_QUOTA_BACKEND_BYTES: parse error"
        );
        check(
            &args(&["--quota-backend-bytes", "8"]),
            &env,
            &FileSettings::None,
        )
        .unwrap();
    }

    #[test]
    fn every_section_of_the_toml_file_is_checked() {
        let t: toml::Table = "[gatewayd]\nquota-backend-bytes = \"8GB\"\n"
            .parse()
            .unwrap();
        let e = check(&args(&[]), &no_env, &FileSettings::Toml(&t)).unwrap_err();
        assert!(e.0.contains("quota-backend-bytes"), "{e}");
        let t: toml::Table = "[gatewayd]\nworker-threads = \"two\"\n".parse().unwrap();
        let e = check(&args(&[]), &no_env, &FileSettings::Toml(&t)).unwrap_err();
        assert!(e.0.contains("worker-threads"), "{e}");
        let env = |k: &str| (k == "TRIAD_STORAGED_CACHE_MB").then(|| "lots".to_string());
        let e = check(&args(&[]), &env, &FileSettings::None).unwrap_err();
        assert_eq!(
            e.0,
            "invalid value \"lots\" for TRIAD_STORAGED_CACHE_MB: parse error"
        );
        let t: toml::Table = "[raftd]\nelection-timeout = 200\n".parse().unwrap();
        let e = check(&args(&[]), &no_env, &FileSettings::Toml(&t)).unwrap_err();
        assert!(e.0.contains("at least as 5 times"), "{e}");
    }

    #[test]
    fn options_missing_from_the_tables_are_named() {
        let cmd = clap::Command::new("gatewayd")
            .arg(
                clap::Arg::new("a")
                    .long("worker-threads")
                    .env("TRIAD_WORKER_THREADS"),
            )
            .arg(
                clap::Arg::new("b")
                    .long("max-txn-ops")
                    .env("TRIAD_MAX_TXN_OPS"),
            )
            .arg(clap::Arg::new("c").long("new-knob").env("TRIAD_NEW_KNOB"))
            .arg(clap::Arg::new("d").long("cache-mb").env("TRIAD_CACHE_MB"));
        assert_eq!(unknown_options("gatewayd", &cmd), ["new-knob", "cache-mb"]);
    }

    #[test]
    fn go_spellings_become_plain() {
        assert_eq!(normalized("pre-vote", "t"), "true");
        assert_eq!(normalized("pre-vote", "0"), "false");
        assert_eq!(normalized("quota-backend-bytes", "0x10"), "16");
        assert_eq!(normalized("snapshot-count", "1_000"), "1000");
        assert_eq!(normalized("name", "0x10"), "0x10");
        assert!(is_number("max-txn-ops"));
        assert!(is_number("watch-progress-notify-interval"));
        assert!(!is_number("pre-vote"));
        assert_eq!(normalized("experimental-corrupt-check-time", "0"), "0s");
    }

    #[test]
    fn go_numbers_and_durations() {
        assert_eq!(go_int("-9223372036854775808"), Ok(i64::MIN));
        assert_eq!(go_int("9223372036854775808"), Err(NumError::Range));
        assert_eq!(go_uint("0b101", 64), Ok(5));
        assert_eq!(go_uint("010", 64), Ok(8));
        assert_eq!(go_uint("+1", 64), Err(NumError::Syntax));
        assert_eq!(go_uint("4294967296", 32), Err(NumError::Range));
        assert!(go_duration_ok("0"));
        assert!(go_duration_ok("-1.5h"));
        assert!(go_duration_ok("300ms"));
        assert!(!go_duration_ok("5"));
        assert!(!go_duration_ok("99999999999999999999h"));
        assert!(!go_duration_ok(""));
    }
}
