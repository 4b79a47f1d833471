//! etcd's YAML configuration file (`--config-file`, the keys of etcd 3.4's
//! embed.Config and etcd.conf.yml.sample), read into the settings it
//! makes: etcd names and the text its command-line flag would take. etcd
//! reads the file as JSON after converting it, so a value of the wrong
//! type fails with encoding/json's error, as it does for etcd. Unset keys
//! (null, empty) and keys triad has no use for that keep etcd's default
//! are skipped quietly, so etcd's sample file starts a member without a
//! warning.

use serde_yaml_ng::Value;

use crate::config::ConfigError;
use crate::member_check::{kind, url_list_reason, Kind};

fn err(msg: String) -> ConfigError {
    ConfigError(msg)
}

/// The JSON type of a YAML value, as encoding/json names it.
fn json_type(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(_) => "bool".into(),
        Value::Number(n) => format!("number {n}"),
        Value::String(_) => "string".into(),
        Value::Sequence(_) => "array".into(),
        Value::Mapping(_) => "object".into(),
        Value::Tagged(t) => json_type(&t.value),
    }
}

fn type_error(value: &Value, field: &str, go_type: &str) -> ConfigError {
    // encoding/json names a number's value only when a number was wanted
    // (out of range, or a fraction); otherwise a value by its type alone.
    let numeric =
        go_type.starts_with("int") || go_type.starts_with("uint") || go_type == "time.Duration";
    let full = json_type(value);
    let what = match full.split_once(' ') {
        Some((kind, _)) if !numeric => kind.to_string(),
        _ => full,
    };
    err(format!(
        "error unmarshaling JSON: while decoding JSON: json: cannot unmarshal {what} into Go struct field {field} of type {go_type}"
    ))
}

/// Keys triad has no use for, with the values etcd's sample file and
/// etcd's defaults give them: such a key is no setting to warn about.
fn etcd_default(name: &str, text: &str) -> bool {
    matches!(
        (name, text),
        ("enable-v2", "true")
            | ("initial-election-tick-advance", "true")
            | ("max-snapshots", "5")
            | ("max-wals", "5")
            | ("discovery-fallback", "proxy")
            | ("proxy", "off")
            | ("proxy-failure-wait", "5000")
            | ("proxy-refresh-interval", "30000")
            | ("proxy-dial-timeout", "1000")
            | ("proxy-write-timeout", "5000")
            | ("metrics", "basic")
            | ("log-outputs", "default" | "stderr")
            | ("cors" | "host-whitelist", "*")
    ) || matches!(text, "" | "false" | "0")
}

/// The text a flag of `kind` takes for a YAML value already of the
/// right JSON type; None for a value of the wrong type.
fn flag_text(k: Kind, v: &Value) -> Option<String> {
    match (k, v) {
        (Kind::Str | Kind::Urls | Kind::OneOf(_), Value::String(s)) => Some(s.clone()),
        (Kind::Bool, Value::Bool(b)) => Some(b.to_string()),
        (Kind::List, Value::Sequence(items)) => items
            .iter()
            .map(|i| i.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .map(|l| l.join(",")),
        (Kind::Int | Kind::Int64, Value::Number(n)) => n.as_i64().map(|n| n.to_string()),
        (Kind::Uint | Kind::Uint64, Value::Number(n)) => n.as_u64().map(|n| n.to_string()),
        (Kind::Uint32, Value::Number(n)) => n
            .as_u64()
            .filter(|n| u32::try_from(*n).is_ok())
            .map(|n| n.to_string()),
        // A time.Duration in JSON is a count of nanoseconds.
        (Kind::Duration, Value::Number(n)) => n.as_i64().map(|n| format!("{n}ns")),
        (_, Value::Tagged(t)) => flag_text(k, &t.value),
        _ => None,
    }
}

/// One key of the file (`field` as encoding/json names it in errors):
/// its setting, or None when it is unset or a default triad ignores.
fn setting(name: &str, field: &str, v: &Value) -> Result<Option<(String, String)>, ConfigError> {
    if v.is_null() {
        return Ok(None);
    }
    let Some(k) = kind(name) else {
        if name == "proxy" {
            // etcd's v2 proxy mode: a string; gatewayd has a --proxy too.
            let text = v
                .as_str()
                .ok_or_else(|| type_error(v, field, "string"))?
                .to_string();
            return Ok((!etcd_default(name, &text)).then(|| (name.to_string(), text)));
        }
        // embed.Config's keys that are no flag, at their defaults.
        let quiet = match (name, v) {
            ("enable-grpc-gateway", Value::Bool(true)) => true,
            ("log-output", Value::Sequence(l)) => l
                .iter()
                .all(|o| matches!(o.as_str(), Some("default" | "stderr"))),
            _ => false,
        };
        if !quiet {
            crate::etcd_flags::warn(format!(
                "ignoring key {name} in the config file: it has no meaning for triad"
            ));
        }
        return Ok(None);
    };
    let text = flag_text(k, v).ok_or_else(|| type_error(v, field, k.go_type()))?;
    if let Kind::Urls = k {
        if let Some(reason) = url_list_reason(&text) {
            return Err(err(format!("unexpected error setting up {name}: {reason}")));
        }
    }
    if name == "initial-cluster-state" && text != "new" && text != "existing" {
        return Err(err(format!("unexpected clusterState {text:?}")));
    }
    if text.is_empty() || (crate::etcd_flags::is_unsupported(name) && etcd_default(name, &text)) {
        return Ok(None);
    }
    Ok(Some((name.to_string(), text)))
}

/// The settings of an etcd YAML config file, by etcd name, in file order.
pub fn parse(text: &str) -> Result<Vec<(String, String)>, ConfigError> {
    let doc: Value = serde_yaml_ng::from_str(text)
        .map_err(|e| err(format!("error converting YAML to JSON: {e}")))?;
    let map = match doc {
        Value::Null => return Ok(Vec::new()),
        Value::Mapping(m) => m,
        other => {
            return Err(err(format!(
                "error unmarshaling JSON: while decoding JSON: json: cannot unmarshal {} into Go value of type embed.configYAML",
                json_type(&other).split(' ').next().unwrap_or_default()
            )))
        }
    };
    let mut out = Vec::new();
    for (key, value) in &map {
        let Some(key) = key.as_str() else {
            crate::etcd_flags::warn(format!(
                "ignoring a key that is no string in the config file: {key:?}"
            ));
            continue;
        };
        let prefix = match key {
            "client-transport-security" => "",
            "peer-transport-security" => "peer-",
            _ => {
                out.extend(setting(key, &format!("configYAML.{key}"), value)?);
                continue;
            }
        };
        let inner = match value {
            Value::Null => continue,
            Value::Mapping(m) => m,
            other => {
                return Err(type_error(
                    other,
                    &format!("configYAML.{key}"),
                    "embed.securityConfig",
                ))
            }
        };
        for (field, v) in inner {
            let Some(field) = field.as_str() else {
                continue;
            };
            let name = match field {
                "cert-file" | "key-file" | "trusted-ca-file" | "client-cert-auth" | "auto-tls" => {
                    format!("{prefix}{field}")
                }
                other => {
                    crate::etcd_flags::warn(format!(
                        "ignoring unknown key {key}.{other} in the config file"
                    ));
                    continue;
                }
            };
            out.extend(setting(&name, &format!("securityConfig.{key}.{field}"), v)?);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etcds_keys_become_its_flags() {
        let got = parse(
            "name: 'm1'\n\
             data-dir: /var/lib/etcd\n\
             snapshot-count: 10000\n\
             quota-backend-bytes: 8589934592\n\
             listen-client-urls: http://127.0.0.1:2379\n\
             experimental-watch-progress-notify-interval: 5000000000\n\
             cipher-suites: [TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384]\n\
             wal-dir:\n\
             max-wals: 5\n\
             enable-v2: true\n\
             proxy: 'off'\n\
             client-transport-security:\n  cert-file: /c.pem\n  client-cert-auth: true\n  auto-tls: false\n\
             peer-transport-security:\n  trusted-ca-file: /ca.pem\n  client-cert-auth: false\n",
        )
        .unwrap();
        let want: Vec<(String, String)> = [
            ("name", "m1"),
            ("data-dir", "/var/lib/etcd"),
            ("snapshot-count", "10000"),
            ("quota-backend-bytes", "8589934592"),
            ("listen-client-urls", "http://127.0.0.1:2379"),
            (
                "experimental-watch-progress-notify-interval",
                "5000000000ns",
            ),
            (
                "cipher-suites",
                "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
            ),
            ("cert-file", "/c.pem"),
            ("client-cert-auth", "true"),
            ("auto-tls", "false"),
            ("peer-trusted-ca-file", "/ca.pem"),
            ("peer-client-cert-auth", "false"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn wrong_types_fail_as_encoding_json_does() {
        let e = parse("quota-backend-bytes: 8GB\n").unwrap_err();
        assert_eq!(e.0, "error unmarshaling JSON: while decoding JSON: json: cannot unmarshal string into Go struct field configYAML.quota-backend-bytes of type int64");
        let e = parse("heartbeat-interval: -1\n").unwrap_err();
        assert!(
            e.0.ends_with("cannot unmarshal number -1 into Go struct field configYAML.heartbeat-interval of type uint"),
            "{e}"
        );
        let e = parse("client-transport-security:\n  cert-file: 3\n").unwrap_err();
        assert!(e.0.ends_with("cannot unmarshal number into Go struct field securityConfig.client-transport-security.cert-file of type string"), "{e}");
        let e = parse("snapshot-count: 1.5\n").unwrap_err();
        assert!(
            e.0.ends_with("cannot unmarshal number 1.5 into Go struct field configYAML.snapshot-count of type uint64"),
            "{e}"
        );
        let e = parse("listen-peer-urls: ftp://x:1\n").unwrap_err();
        assert_eq!(e.0, "unexpected error setting up listen-peer-urls: URL scheme must be http, https, unix, or unixs: ftp://x:1");
        assert!(parse("- a\n- b\n").is_err());
        assert!(parse("a: [\n").is_err());
        assert!(parse("").unwrap().is_empty());
    }
}
