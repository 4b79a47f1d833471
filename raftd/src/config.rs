//! raftd's configuration: its options (`[raftd]` in the config file,
//! `TRIAD_*` variables and flags, under etcd's names), every default in
//! one place (`defaults`), and the typed configuration raftd runs with,
//! resolved and checked once at start (`Config::resolve`).

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::auto_compact::Retention;
use crate::peer_auth::CertPolicy;
use common::config::{ConfigError, Member};
use common::tls::TlsFiles;

/// Every default of raftd's options (etcd's where etcd has the option).
pub mod defaults {
    pub const HEARTBEAT_INTERVAL_MS: u64 = 100;
    pub const ELECTION_TIMEOUT_MS: u64 = 1000;
    pub const SNAPSHOT_COUNT: u64 = 100_000;
    pub const SNAPSHOT_CATCHUP_ENTRIES: u64 = 5000;
    pub const LEASE_CHECKPOINT_INTERVAL: &str = "5m";
    pub const AUTO_COMPACTION_MODE: &str = "periodic";
    pub const AUTO_COMPACTION_RETENTION: &str = "0";
    pub const PRE_VOTE: bool = true;
    pub const STRICT_RECONFIG_CHECK: bool = true;
    pub const INITIAL_CORRUPT_CHECK: bool = false;
    /// How long a call waits for a leader to be elected, in election
    /// timeouts.
    pub const LEADER_WAIT_ELECTIONS: u64 = 3;
    /// How recently a voter must have answered the leader to count as
    /// started (strict reconfig check).
    pub const ACTIVE_WITHIN: std::time::Duration = std::time::Duration::from_secs(5);
}

/// raftd's own options (`[raftd]`), with etcd's flag names.
#[derive(clap::Args, Serialize, Deserialize, Debug, Clone, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RaftdOpts {
    /// URL to serve this daemon's metrics on (GET /metrics), e.g.
    /// http://127.0.0.1:9101; gatewayd's /metrics shows them too.
    #[arg(long, env = "TRIAD_RAFTD_METRICS_URL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_url: Option<String>,
    /// Time (in milliseconds) of a heartbeat interval.
    #[arg(long, env = "TRIAD_HEARTBEAT_INTERVAL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heartbeat_interval: Option<u64>,
    /// Time (in milliseconds) for an election to timeout.
    #[arg(long, env = "TRIAD_ELECTION_TIMEOUT")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub election_timeout: Option<u64>,
    /// etcd's switch for lease checkpoints: triad always checkpoints
    /// (false is warned of and ignored).
    #[arg(long, env = "TRIAD_EXPERIMENTAL_ENABLE_LEASE_CHECKPOINT", num_args = 0..=1, default_missing_value = "true")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub experimental_enable_lease_checkpoint: Option<bool>,
    /// Interval of lease TTL checkpoints through raft (etcd's
    /// --experimental-lease-checkpoint-interval), e.g. 5m.
    #[arg(long, env = "TRIAD_LEASE_CHECKPOINT_INTERVAL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease_checkpoint_interval: Option<String>,
    /// Directory of the raft log's segment files, e.g. on a device of its
    /// own (etcd's dedicated WAL directory; default: inside the data dir).
    #[arg(long, env = "TRIAD_WAL_DIR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wal_dir: Option<PathBuf>,
    /// Campaign soon after start when no leader is in sight (two
    /// heartbeat intervals, with a pre-vote) rather than after a whole
    /// election timeout (etcd's flag; default true).
    #[arg(long, env = "TRIAD_INITIAL_ELECTION_TICK_ADVANCE", num_args = 0..=1, default_missing_value = "true")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub initial_election_tick_advance: Option<bool>,
    /// The most learners the cluster may have at once (etcd 3.5's flag;
    /// default 1).
    #[arg(long, env = "TRIAD_EXPERIMENTAL_MAX_LEARNERS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub experimental_max_learners: Option<usize>,
    /// URLs to listen on for peer traffic.
    #[arg(long, env = "TRIAD_LISTEN_PEER_URLS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen_peer_urls: Option<String>,
    /// Network namespace (a path such as /run/netns/NAME) to serve and
    /// dial peers in, as systemd's NetworkNamespacePath= would put the
    /// whole daemon; its Unix sockets to storaged and gatewayd still work.
    #[arg(long, env = "TRIAD_PEER_NETNS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer_netns: Option<std::path::PathBuf>,
    /// Path to the peer server TLS cert file.
    #[arg(long, env = "TRIAD_PEER_CERT_FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer_cert_file: Option<std::path::PathBuf>,
    /// Path to the peer server TLS key file.
    #[arg(long, env = "TRIAD_PEER_KEY_FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer_key_file: Option<std::path::PathBuf>,
    /// Path to the peer server TLS trusted CA file.
    #[arg(long, env = "TRIAD_PEER_TRUSTED_CA_FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer_trusted_ca_file: Option<std::path::PathBuf>,
    /// Enable peer client cert authentication: a peer's certificate must
    /// also name the host of one of its member's peer URLs.
    #[arg(long, env = "TRIAD_PEER_CLIENT_CERT_AUTH", num_args = 0..=1, default_missing_value = "true")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer_client_cert_auth: Option<bool>,
    /// Peer TLS with a self-signed certificate made in
    /// DATA_DIR/fixtures/peer when no --peer-cert-file is given; members
    /// then accept each other's certificates unverified (etcd's
    /// --peer-auto-tls).
    #[arg(long, env = "TRIAD_PEER_AUTO_TLS", num_args = 0..=1, default_missing_value = "true")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer_auto_tls: Option<bool>,
    /// Path to the peer certificate revocation list file.
    #[arg(long, env = "TRIAD_PEER_CRL_FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer_crl_file: Option<std::path::PathBuf>,
    /// Allowed CN of peer certificates (others are refused).
    #[arg(long, env = "TRIAD_PEER_CERT_ALLOWED_CN")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer_cert_allowed_cn: Option<String>,
    /// Allowed hostname (a name or address) peer certificates must be
    /// valid for.
    #[arg(long, env = "TRIAD_PEER_CERT_ALLOWED_HOSTNAME")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer_cert_allowed_hostname: Option<String>,
    /// Initial cluster state ('new' or 'existing').
    #[arg(long, env = "TRIAD_INITIAL_CLUSTER_STATE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub initial_cluster_state: Option<String>,
    /// Number of committed transactions to trigger a snapshot to disk.
    #[arg(long, env = "TRIAD_SNAPSHOT_COUNT")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot_count: Option<u64>,
    /// Entries kept in the log after a snapshot, for slow followers to
    /// catch up from (etcd's --experimental-snapshot-catchup-entries).
    #[arg(long, env = "TRIAD_SNAPSHOT_CATCHUP_ENTRIES")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot_catchup_entries: Option<u64>,
    /// Interpret 'auto-compaction-retention' one of: periodic|revision.
    #[arg(long, env = "TRIAD_AUTO_COMPACTION_MODE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auto_compaction_mode: Option<String>,
    /// Auto compaction retention for mvcc key value store. 0 means disable
    /// auto compaction (a bare number is hours in periodic mode).
    #[arg(long, env = "TRIAD_AUTO_COMPACTION_RETENTION")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auto_compaction_retention: Option<String>,
    /// Check data corruption before serving (compare HashKV with peers).
    #[arg(long, env = "TRIAD_EXPERIMENTAL_INITIAL_CORRUPT_CHECK", num_args = 0..=1, default_missing_value = "true")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub experimental_initial_corrupt_check: Option<bool>,
    /// Duration of time between cluster corruption check passes (0: off).
    #[arg(long, env = "TRIAD_EXPERIMENTAL_CORRUPT_CHECK_TIME")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub experimental_corrupt_check_time: Option<String>,
    /// Enable the raft Pre-Vote algorithm to prevent disruption when a
    /// node that has been partitioned away rejoins the cluster (default on).
    #[arg(long, env = "TRIAD_PRE_VOTE", num_args = 0..=1, default_missing_value = "true")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pre_vote: Option<bool>,
    /// Force to create a new one-member cluster from this member's data.
    #[arg(long, env = "TRIAD_FORCE_NEW_CLUSTER", num_args = 0..=1, default_missing_value = "true")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub force_new_cluster: Option<bool>,
    /// Reject reconfiguration requests that would cause quorum loss.
    #[arg(long, env = "TRIAD_STRICT_RECONFIG_CHECK", num_args = 0..=1, default_missing_value = "true")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub strict_reconfig_check: Option<bool>,
}

/// What raftd runs with: every option resolved and checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub metrics_url: Option<String>,
    /// `--wal-dir`: the raft log's segment files (None: in the data dir).
    pub wal_dir: Option<PathBuf>,
    pub max_learners: usize,
    pub initial_election_tick_advance: bool,
    pub heartbeat_interval_ms: u64,
    pub election_timeout_ms: u64,
    pub lease_checkpoint_interval: Duration,
    pub listen_peer_urls: Vec<String>,
    pub peer_netns: Option<PathBuf>,
    pub peer_tls: TlsFiles,
    /// `--peer-auto-tls` is in effect: peers' certificates go unverified.
    pub peer_auto_tls: bool,
    pub peer_certs: CertPolicy,
    /// `--initial-cluster-state existing`: join a running cluster.
    pub joining: bool,
    pub snapshot_count: u64,
    pub snapshot_catchup_entries: u64,
    pub auto_compaction: Option<Retention>,
    pub initial_corrupt_check: bool,
    /// Between corruption check passes (None: off).
    pub corrupt_check_every: Option<Duration>,
    pub pre_vote: bool,
    pub force_new_cluster: bool,
    pub strict_reconfig_check: bool,
}

fn err(msg: impl Into<String>) -> ConfigError {
    ConfigError(msg.into())
}

impl Config {
    pub fn resolve(member: &Member, opts: &RaftdOpts) -> Result<Config, ConfigError> {
        use defaults::*;
        let hb = opts.heartbeat_interval.unwrap_or(HEARTBEAT_INTERVAL_MS);
        let el = opts.election_timeout.unwrap_or(ELECTION_TIMEOUT_MS);
        if hb == 0 || el < hb.saturating_mul(5) {
            return Err(err(format!(
                "--election-timeout[{el}ms] should be at least as 5 times as --heartbeat-interval[{hb}ms]"
            )));
        }
        // etcd's bound, which also keeps the timer arithmetic far from overflow.
        if el >= 50_000 {
            return Err(err(format!(
                "--election-timeout[{el}ms] is too long, and should be set less than 50000ms"
            )));
        }
        let joining = match opts.initial_cluster_state.as_deref() {
            None | Some("new") => false,
            Some("existing") => true,
            Some(other) => {
                return Err(err(format!(
                    "invalid value \"{other}\" for flag -initial-cluster-state: valid values are \"new\" or \"existing\""
                )))
            }
        };
        if joining && member.initial_cluster.len() < 2 {
            return Err(err(
                "--initial-cluster-state existing needs the other members in --initial-cluster",
            ));
        }
        let auto_compaction = crate::auto_compact::parse(
            Some(
                opts.auto_compaction_mode
                    .as_deref()
                    .unwrap_or(AUTO_COMPACTION_MODE),
            ),
            Some(
                opts.auto_compaction_retention
                    .as_deref()
                    .unwrap_or(AUTO_COMPACTION_RETENTION),
            ),
        )
        .map_err(|e| err(e.to_string()))?;
        let corrupt_check_every = match &opts.experimental_corrupt_check_time {
            None => None,
            Some(t) => Some(common::config::parse_duration(t)?).filter(|d| !d.is_zero()),
        };
        let snapshot_count = opts.snapshot_count.unwrap_or(SNAPSHOT_COUNT);
        if snapshot_count == 0 {
            return Err(err("--snapshot-count must be at least 1"));
        }
        let lease_checkpoint_interval = common::config::parse_duration(
            opts.lease_checkpoint_interval
                .as_deref()
                .unwrap_or(LEASE_CHECKPOINT_INTERVAL),
        )?;
        if lease_checkpoint_interval.is_zero() {
            return Err(err("--lease-checkpoint-interval must be positive"));
        }
        let listen_peer_urls = match &opts.listen_peer_urls {
            Some(urls) => common::config::parse_urls(urls, "listen-peer-urls")?,
            None => member.peer_urls.clone(),
        };
        let https = listen_peer_urls
            .iter()
            .chain(&member.peer_urls)
            .any(|u| u.starts_with("https://"));
        let given = opts.peer_cert_file.is_some() || opts.peer_key_file.is_some();
        let peer_auto_tls = opts.peer_auto_tls == Some(true) && https && !given;
        if opts.peer_auto_tls == Some(true) && given {
            common::etcd_flags::warn("ignoring peer auto TLS since certs given".into());
        }
        let (cert, key) = if peer_auto_tls {
            let hosts: Vec<String> = listen_peer_urls
                .iter()
                .chain(&member.peer_urls)
                .filter_map(|u| common::config::url_host(u))
                .collect();
            let dir = member.data_dir.join("fixtures").join("peer");
            let (cert, key) = common::tls::self_signed(&dir, &hosts)?;
            (Some(cert), Some(key))
        } else {
            (opts.peer_cert_file.clone(), opts.peer_key_file.clone())
        };
        let peer_tls = TlsFiles {
            cert,
            key,
            trusted_ca: opts.peer_trusted_ca_file.clone(),
            client_cert_auth: opts.peer_client_cert_auth.unwrap_or(false),
            crl: opts.peer_crl_file.clone(),
            cipher_suites: member.cipher_suites.clone(),
            allowed_cn: opts.peer_cert_allowed_cn.clone(),
            allowed_hostname: opts.peer_cert_allowed_hostname.clone(),
        };
        peer_tls.check("peer-")?;
        peer_tls.acceptor()?;
        if listen_peer_urls.iter().any(|u| u.starts_with("https://")) && !peer_tls.enabled() {
            return Err(err(
                "TLS key/cert (--peer-cert-file, --peer-key-file) must be provided for https peer URLs",
            ));
        }
        if opts.experimental_enable_lease_checkpoint == Some(false) {
            common::etcd_flags::warn(
                "--experimental-enable-lease-checkpoint=false: triad always checkpoints lease TTLs, \
                 so a leader change never extends a lease"
                    .into(),
            );
        }
        Ok(Config {
            metrics_url: opts.metrics_url.clone(),
            wal_dir: opts.wal_dir.clone(),
            max_learners: opts.experimental_max_learners.unwrap_or(1),
            initial_election_tick_advance: opts.initial_election_tick_advance.unwrap_or(true),
            heartbeat_interval_ms: hb,
            election_timeout_ms: el,
            lease_checkpoint_interval,
            listen_peer_urls,
            peer_netns: opts.peer_netns.clone(),
            peer_certs: CertPolicy {
                required: peer_tls.client_cert_auth,
            },
            peer_tls,
            peer_auto_tls,
            joining,
            snapshot_count,
            snapshot_catchup_entries: opts
                .snapshot_catchup_entries
                .unwrap_or(SNAPSHOT_CATCHUP_ENTRIES),
            auto_compaction,
            initial_corrupt_check: opts
                .experimental_initial_corrupt_check
                .unwrap_or(INITIAL_CORRUPT_CHECK)
                || member.feature_gates.enabled("InitialCorruptCheck"),
            corrupt_check_every,
            pre_vote: opts.pre_vote.unwrap_or(PRE_VOTE),
            force_new_cluster: opts.force_new_cluster.unwrap_or(false),
            strict_reconfig_check: opts.strict_reconfig_check.unwrap_or(STRICT_RECONFIG_CHECK),
        })
    }

    /// openraft's (election_timeout_min, election_timeout_max) for etcd's
    /// election timeout `el`. openraft takes its leader lease from the
    /// max, and a follower campaigns only once lease + a random timeout in
    /// [min, max) have passed since it last heard from its leader: with
    /// (el, 2el) that was 3 to 4 election timeouts, and a follower refused
    /// every vote for 2 (measured: elections 3.8 s after a leader froze,
    /// and a killed leader restarted in 0.4 s waited out its followers'
    /// 2 s leases). Splitting `el` between the two keeps etcd's bound (no
    /// follower campaigns within `el` of its leader's last heartbeat) and
    /// makes the campaign start between `el` and 1.6 `el` after it, like
    /// etcd's randomized `el` to 2 `el`; the lease, which a follower's
    /// vote and a leader's writes also wait on, is 0.8 `el`. min stays
    /// above the heartbeat interval, as openraft requires (`el` is at
    /// least 5 heartbeats).
    pub fn raft_election_timeouts(&self) -> (u64, u64) {
        let (hb, el) = (self.heartbeat_interval_ms, self.election_timeout_ms);
        let min = (el / 5).max(hb + 1);
        (min, el - min)
    }

    /// etcd's minimum lease TTL: 1.5 election timeouts, in whole seconds up.
    pub fn min_lease_ttl_secs(&self) -> i64 {
        let (hb, el) = (self.heartbeat_interval_ms, self.election_timeout_ms);
        let min_ttl_ms = (3 * (el / hb)) / 2 * hb;
        min_ttl_ms.div_ceil(1000) as i64
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
        let options = RaftdOpts::augment_args(clap::Command::new("raftd"));
        let unknown = common::member_check::unknown_options("raftd", &options);
        assert!(unknown.is_empty(), "add to member_check: {unknown:?}");
    }

    #[test]
    fn a_follower_campaigns_one_to_two_election_timeouts_after_its_leader() {
        let member = common::config::MemberOpts::default()
            .resolve()
            .expect("member defaults");
        for (hb, el) in [
            (100, 1000),
            (1, 5),
            (10, 50),
            (50, 250),
            (100, 2000),
            (3, 17),
        ] {
            let opts = RaftdOpts {
                heartbeat_interval: Some(hb),
                election_timeout: Some(el),
                ..Default::default()
            };
            let config = Config::resolve(&member, &opts).expect("valid");
            let (min, max) = config.raft_election_timeouts();
            assert!(hb < min && min < max, "{hb} {el}: {min} {max}");
            // Campaigns start at max + [min, max): from el on, before 2 el.
            assert_eq!(max + min, el, "{hb} {el}");
            let raft = openraft::Config {
                heartbeat_interval: hb,
                election_timeout_min: min,
                election_timeout_max: max,
                ..Default::default()
            };
            assert!(raft.validate().is_ok(), "{hb} {el}");
        }
        let default = Config::resolve(&member, &RaftdOpts::default()).expect("defaults");
        assert_eq!(default.raft_election_timeouts(), (200, 800));
    }

    /// Every default systemd/triad.toml shows for [raftd] is the default.
    #[test]
    fn the_example_config_shows_raftds_defaults() {
        let example = include_str!("../../systemd/triad.toml");
        let documented = common::config::documented_defaults(example, "raftd");
        assert!(documented.len() >= 8, "{documented:?}");
        let member = common::config::MemberOpts::default()
            .resolve()
            .expect("member defaults");
        let default = Config::resolve(&member, &RaftdOpts::default()).expect("defaults");
        for (key, value) in documented {
            let mut t = toml::Table::new();
            t.insert(key.clone(), value);
            let opts = RaftdOpts::deserialize(toml::Value::Table(t))
                .unwrap_or_else(|e| panic!("{key}: {e}"));
            assert_eq!(
                Config::resolve(&member, &opts).expect(&key),
                default,
                "{key}"
            );
        }
    }
}
