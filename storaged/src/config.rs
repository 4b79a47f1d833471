//! storaged's configuration: its options (`[storaged]`, `TRIAD_*`
//! variables, flags), their defaults in one place, and the typed
//! configuration storaged runs with.

use serde::{Deserialize, Serialize};

/// Every default of storaged's options.
pub mod defaults {
    /// The block cache of the store, in MiB.
    pub const CACHE_MB: u64 = 256;
    /// Revisions a physical compaction examines per write transaction
    /// (etcd's --experimental-compaction-batch-limit; etcd's default is
    /// 1000: a smaller batch holds applies back for less time).
    pub const COMPACTION_BATCH_LIMIT: usize = 512;
}

/// storaged's own options (`[storaged]`).
#[derive(clap::Args, Serialize, Deserialize, Debug, Clone, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct StoragedOpts {
    /// Block cache size in MiB.
    #[arg(long, env = "TRIAD_STORAGED_CACHE_MB")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_mb: Option<u64>,
    /// URL to serve this daemon's metrics on (GET /metrics), e.g.
    /// http://127.0.0.1:9102; gatewayd's /metrics shows them too.
    #[arg(long, env = "TRIAD_STORAGED_METRICS_URL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_url: Option<String>,
    /// Revisions physical compaction examines per batch (0: the default).
    #[arg(long, env = "TRIAD_EXPERIMENTAL_COMPACTION_BATCH_LIMIT")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub experimental_compaction_batch_limit: Option<i64>,
}

/// What storaged runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub cache_bytes: u64,
    pub metrics_url: Option<String>,
    pub compaction_batch_limit: usize,
}

impl Config {
    pub fn resolve(opts: &StoragedOpts) -> Config {
        Config {
            cache_bytes: opts
                .cache_mb
                .unwrap_or(defaults::CACHE_MB)
                .saturating_mul(1024 * 1024),
            metrics_url: opts.metrics_url.clone(),
            compaction_batch_limit: match opts.experimental_compaction_batch_limit {
                Some(n) if n > 0 => usize::try_from(n).unwrap_or(usize::MAX),
                _ => defaults::COMPACTION_BATCH_LIMIT,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every option is known to the whole member's check, under its
    /// variable, so a sibling daemon refuses a bad value for it too.
    #[test]
    fn every_option_is_checked_by_the_whole_member() {
        use clap::Args;
        let options = StoragedOpts::augment_args(clap::Command::new("storaged"));
        let unknown = common::member_check::unknown_options("storaged", &options);
        assert!(unknown.is_empty(), "add to member_check: {unknown:?}");
    }

    /// Every default systemd/triad.toml shows for [storaged] is the default.
    #[test]
    fn the_example_config_shows_storageds_defaults() {
        let example = include_str!("../../systemd/triad.toml");
        let documented = common::config::documented_defaults(example, "storaged");
        assert!(!documented.is_empty());
        let default = Config::resolve(&StoragedOpts::default());
        for (key, value) in documented {
            let mut t = toml::Table::new();
            t.insert(key.clone(), value);
            let opts = StoragedOpts::deserialize(toml::Value::Table(t))
                .unwrap_or_else(|e| panic!("{key}: {e}"));
            assert_eq!(Config::resolve(&opts), default, "{key}");
        }
    }
}
