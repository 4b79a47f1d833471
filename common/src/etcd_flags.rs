//! etcd's server flags and `ETCD_*` variables, so an etcd configuration
//! (command line or a `/etc/default/etcd` environment file) starts a triad
//! member. Each daemon takes the flags it implements under etcd's names
//! (Go's `-flag` form too), quietly leaves those a sibling daemon takes,
//! and accepts flags with no meaning for triad with one warning each.
//! `ETCD_FOO` sets what `TRIAD_FOO` sets, unless that is set too.

use std::collections::HashMap;
use std::ffi::OsString;
use std::sync::Mutex;

/// etcd 3.4 server flags some triad daemon implements.
const SUPPORTED: &[&str] = &[
    "name",
    "data-dir",
    "snapshot-count",
    "heartbeat-interval",
    "election-timeout",
    "listen-peer-urls",
    "listen-client-urls",
    "quota-backend-bytes",
    "max-txn-ops",
    "max-request-bytes",
    "max-concurrent-streams",
    "initial-advertise-peer-urls",
    "initial-cluster",
    "initial-cluster-state",
    "initial-cluster-token",
    "advertise-client-urls",
    "strict-reconfig-check",
    "pre-vote",
    "auto-compaction-retention",
    "auto-compaction-mode",
    "cert-file",
    "key-file",
    "client-cert-auth",
    "trusted-ca-file",
    "peer-cert-file",
    "peer-key-file",
    "peer-client-cert-auth",
    "peer-trusted-ca-file",
    "auth-token",
    "bcrypt-cost",
    "auth-token-ttl",
    "experimental-initial-corrupt-check",
    "experimental-corrupt-check-time",
    "experimental-watch-progress-notify-interval",
    "force-new-cluster",
    "listen-metrics-urls",
    "logger",
    "log-level",
    "log-outputs",
    "client-crl-file",
    "client-cert-allowed-hostname",
    "peer-cert-allowed-cn",
    "peer-cert-allowed-hostname",
    "peer-crl-file",
    "cipher-suites",
    "experimental-warning-apply-duration",
    "wal-dir",
    "grpc-keepalive-min-time",
    "grpc-keepalive-interval",
    "grpc-keepalive-timeout",
    "cors",
    "host-whitelist",
    "metrics",
    "experimental-compaction-batch-limit",
    "debug",
    "experimental-enable-lease-checkpoint",
    "auto-tls",
    "peer-auto-tls",
    "enable-pprof",
    "discovery-srv",
    "discovery-srv-name",
    "discovery",
    "discovery-proxy",
    "initial-election-tick-advance",
    // etcd 3.5's.
    "unsafe-no-fsync",
    "socket-reuse-port",
    "socket-reuse-address",
    "experimental-max-learners",
    "listen-client-http-urls",
    "enable-log-rotation",
    "log-rotation-config-json",
    "experimental-enable-distributed-tracing",
    "experimental-distributed-tracing-address",
    "experimental-distributed-tracing-service-name",
    "experimental-distributed-tracing-instance-id",
    "experimental-distributed-tracing-sampling-rate",
    // etcd 3.6's.
    "enable-distributed-tracing",
    "distributed-tracing-address",
    "distributed-tracing-service-name",
    "distributed-tracing-instance-id",
    "distributed-tracing-sampling-rate",
    "feature-gates",
    "discovery-token",
    "discovery-endpoints",
    "discovery-dial-timeout",
    "discovery-request-timeout",
    "discovery-keepalive-time",
    "discovery-keepalive-timeout",
    "discovery-insecure-transport",
    "discovery-insecure-skip-tls-verify",
    "discovery-cert",
    "discovery-key",
    "discovery-cacert",
    "discovery-user",
    "discovery-password",
];

/// etcd 3.4 server flags with no meaning for triad (accepted, warned of).
const UNSUPPORTED: &[&str] = &[
    "max-snapshots",
    "max-wals",
    "backend-batch-interval",
    "backend-batch-limit",
    "discovery-fallback",
    "enable-v2",
    "proxy",
    "proxy-failure-wait",
    "proxy-refresh-interval",
    "proxy-dial-timeout",
    "proxy-write-timeout",
    "proxy-read-timeout",
    "experimental-enable-v2v3",
    "experimental-backend-bbolt-freelist-type",
    "experimental-peer-skip-client-san-verification",
    "log-package-levels",
];

/// etcd's boolean flags: Go takes them as `--flag` or `--flag=value`, never
/// with the value in the next argument.
const BOOLEAN: &[&str] = &[
    "initial-election-tick-advance",
    "unsafe-no-fsync",
    "socket-reuse-port",
    "socket-reuse-address",
    "strict-reconfig-check",
    "pre-vote",
    "client-cert-auth",
    "peer-client-cert-auth",
    "experimental-initial-corrupt-check",
    "force-new-cluster",
    "enable-v2",
    "auto-tls",
    "peer-auto-tls",
    "enable-pprof",
    "experimental-enable-v2v3",
    "experimental-enable-lease-checkpoint",
    "experimental-peer-skip-client-san-verification",
    "debug",
    "discovery-insecure-transport",
    "discovery-insecure-skip-tls-verify",
    "enable-log-rotation",
    "experimental-enable-distributed-tracing",
    "enable-distributed-tracing",
];

use crate::member_check::{etcd_name, triad_name};

/// Whether `name` is an etcd 3.4 flag with no meaning for triad.
pub fn is_unsupported(name: &str) -> bool {
    UNSUPPORTED.contains(&name)
}

/// Whether `name` (etcd's or triad's name) is one of etcd's settings.
pub fn is_etcd_setting(name: &str) -> bool {
    let etcd = etcd_name(name);
    SUPPORTED.contains(&etcd) || UNSUPPORTED.contains(&etcd)
}

/// Warnings found while reading the command line, logged once logging runs.
static WARNINGS: Mutex<Vec<String>> = Mutex::new(Vec::new());
/// Notices (logged at info) found while reading the configuration.
static NOTICES: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn remember(list: &Mutex<Vec<String>>, msg: String) {
    if let Ok(mut w) = list.lock() {
        if !w.contains(&msg) {
            w.push(msg);
        }
    }
}

/// A warning about the configuration, logged once logging runs.
pub fn warn(msg: String) {
    remember(&WARNINGS, msg);
}

pub(crate) fn notice(msg: String) {
    remember(&NOTICES, msg);
}

/// The warnings collected so far (each once).
pub fn take_warnings() -> Vec<String> {
    WARNINGS
        .lock()
        .map(|mut w| std::mem::take(&mut *w))
        .unwrap_or_default()
}

/// The notices collected so far (each once).
pub fn take_notices() -> Vec<String> {
    NOTICES
        .lock()
        .map(|mut w| std::mem::take(&mut *w))
        .unwrap_or_default()
}

/// The arguments less every etcd setting (flag and value) and
/// `--config-file`: what an etcd config file leaves to the command line.
pub fn without_etcd_flags(args: Vec<OsString>) -> Vec<OsString> {
    let mut out = Vec::with_capacity(args.len());
    let mut it = args.into_iter();
    if let Some(program) = it.next() {
        out.push(program);
    }
    while let Some(arg) = it.next() {
        let Some(flag) = arg
            .to_str()
            .and_then(|t| t.strip_prefix("--").or_else(|| t.strip_prefix('-')))
        else {
            out.push(arg);
            continue;
        };
        let (name, has_value) = match flag.split_once('=') {
            Some((n, _)) => (n, true),
            None => (flag, false),
        };
        if !is_etcd_setting(name) && name != "config-file" {
            out.push(arg);
            continue;
        }
        if !has_value && !BOOLEAN.contains(&etcd_name(name)) {
            it.next(); // its value
        }
    }
    out
}

/// What to do with one etcd flag in this daemon.
enum Fate {
    /// This daemon's: pass it on under this (triad) name.
    Keep(String),
    /// A sibling daemon's, or meaningless: drop it (warning for the latter).
    Drop,
    /// Not an etcd flag: leave it to the daemon's own parser.
    NotEtcd,
}

fn fate(name: &str, known: &HashMap<String, Option<String>>) -> Fate {
    let ours = triad_name(name);
    if known.contains_key(ours) {
        return Fate::Keep(ours.to_string());
    }
    if SUPPORTED.contains(&name) {
        return Fate::Drop; // a sibling daemon takes it
    }
    if UNSUPPORTED.contains(&name) {
        warn(format!(
            "ignoring etcd option {name}: it has no meaning for triad"
        ));
        return Fate::Drop;
    }
    Fate::NotEtcd
}

/// Rewrite a daemon's arguments: etcd flags this daemon takes are kept
/// (as `--name`), the others dropped; `known` maps this daemon's long
/// option names to their environment variables.
pub fn adapt_args(args: Vec<OsString>, known: &HashMap<String, Option<String>>) -> Vec<OsString> {
    let mut out = Vec::with_capacity(args.len());
    let mut it = args.into_iter();
    if let Some(program) = it.next() {
        out.push(program);
    }
    while let Some(arg) = it.next() {
        let Some(text) = arg.to_str() else {
            out.push(arg);
            continue;
        };
        let Some(flag) = text.strip_prefix("--").or_else(|| text.strip_prefix('-')) else {
            out.push(arg);
            continue;
        };
        let (name, value) = match flag.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (flag, None),
        };
        match fate(name, known) {
            Fate::NotEtcd => out.push(arg),
            Fate::Keep(ours) => match value {
                Some(v) => out.push(OsString::from(format!(
                    "--{ours}={}",
                    crate::member_check::normalized(name, v)
                ))),
                None => {
                    out.push(OsString::from(format!("--{ours}")));
                    if crate::member_check::is_number(name) {
                        if let Some(next) = it.next() {
                            out.push(match next.to_str() {
                                Some(v) => crate::member_check::normalized(name, v).into(),
                                None => next,
                            });
                        }
                    }
                }
            },
            Fate::Drop => {
                if value.is_none() && !BOOLEAN.contains(&name) {
                    it.next(); // its value
                }
            }
        }
    }
    out
}

/// `ETCD_*` variables: each that this daemon takes sets its `TRIAD_*`
/// variable (unless that is set); meaningless or unknown ones are warned
/// of. Call before any thread starts (it sets environment variables).
pub fn adapt_env(known: &HashMap<String, Option<String>>) {
    let vars: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| k.starts_with("ETCD_"))
        .collect();
    for (key, value) in vars {
        let name = key["ETCD_".len()..].to_ascii_lowercase().replace('_', "-");
        match fate(&name, known) {
            Fate::Keep(ours) => {
                if let Some(Some(env)) = known.get(&ours) {
                    if std::env::var_os(env).is_none() {
                        std::env::set_var(env, crate::member_check::normalized(&name, &value));
                    }
                }
            }
            Fate::Drop => {}
            Fate::NotEtcd => warn(format!("unrecognized environment variable {key}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known() -> HashMap<String, Option<String>> {
        [
            ("name", "TRIAD_NAME"),
            ("listen-client-urls", "TRIAD_LISTEN_CLIENT_URLS"),
            ("client-cert-auth", "TRIAD_CLIENT_CERT_AUTH"),
            (
                "watch-progress-notify-interval",
                "TRIAD_WATCH_PROGRESS_NOTIFY_INTERVAL",
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), Some(v.to_string())))
        .collect()
    }

    fn args(a: &[&str]) -> Vec<OsString> {
        a.iter().map(OsString::from).collect()
    }

    #[test]
    fn etcd_command_lines_are_rewritten_for_one_daemon() {
        let got = adapt_args(
            args(&[
                "gatewayd",
                "-name",
                "m1",
                "--listen-peer-urls",
                "http://x:2380",
                "--client-cert-auth",
                "--pre-vote",
                "--enable-v2=true",
                "--max-wals",
                "5",
                "--experimental-watch-progress-notify-interval=5s",
                "--listen-client-urls=http://x:2379",
                "--cache-mb",
                "7",
            ]),
            &known(),
        );
        assert_eq!(
            got,
            args(&[
                "gatewayd",
                "--name",
                "m1",
                "--client-cert-auth",
                "--watch-progress-notify-interval=5s",
                "--listen-client-urls=http://x:2379",
                "--cache-mb",
                "7",
            ])
        );
        let warnings = take_warnings();
        assert!(
            warnings.iter().any(|w| w.contains("enable-v2")),
            "{warnings:?}"
        );
        assert!(
            warnings.iter().any(|w| w.contains("max-wals")),
            "{warnings:?}"
        );
        assert!(!warnings.iter().any(|w| w.contains("listen-peer-urls")));
    }
}
