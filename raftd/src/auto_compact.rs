//! etcd's auto compaction, run by the leader: `--auto-compaction-mode
//! periodic` keeps `--auto-compaction-retention` worth of history (a
//! duration; a bare number is hours), `revision` keeps that many revisions.
//! Compactions are proposed through raft like a client's.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use openraft::async_runtime::WatchReceiver;
use tonic::transport::Channel;

use crate::own_proposals::propose;
use crate::Raft;
use common::proto::etcdserverpb::CompactionRequest;
use common::proto::storage::raft_request::Op;
use common::proto::storage::storage_client::StorageClient;
use common::proto::storage::StatusRequest;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retention {
    /// Keep history younger than this.
    Periodic(Duration),
    /// Keep this many revisions.
    Revisions(i64),
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct RetentionError(String);

/// etcd's flags: mode and retention ("0" turns auto compaction off).
pub fn parse(
    mode: Option<&str>,
    retention: Option<&str>,
) -> Result<Option<Retention>, RetentionError> {
    let retention = retention.unwrap_or("0").trim();
    match mode.unwrap_or("periodic") {
        "periodic" => {
            let d = match retention.parse::<u64>() {
                Ok(hours) => Duration::from_secs(hours.saturating_mul(3600)),
                Err(_) => common::config::parse_duration(retention)
                    .map_err(|e| RetentionError(format!("--auto-compaction-retention: {e}")))?,
            };
            Ok((!d.is_zero()).then_some(Retention::Periodic(d)))
        }
        "revision" => {
            let n: i64 = retention
                .parse()
                .map_err(|_| RetentionError(format!("invalid revision retention {retention:?}")))?;
            Ok((n > 0).then_some(Retention::Revisions(n)))
        }
        other => Err(RetentionError(format!(
            "unknown auto-compaction-mode {other:?} (want periodic or revision)"
        ))),
    }
}

/// How often to look: a tenth of the retention period (at most an hour's
/// tenth), and every 5 minutes for revision retention, as etcd does.
fn tick(r: Retention) -> Duration {
    match r {
        Retention::Periodic(d) => d.min(Duration::from_secs(3600)) / 10,
        Retention::Revisions(_) => Duration::from_secs(300),
    }
    .max(Duration::from_millis(100))
}

pub async fn run(raft: Raft, storage: StorageClient<Channel>, retention: Retention) {
    let every = tick(retention);
    let mut samples: VecDeque<(Instant, i64)> = VecDeque::new();
    let mut compacted = 0;
    loop {
        tokio::time::sleep(every).await;
        let m = raft.metrics().borrow_watched().clone();
        if m.current_leader != Some(m.id) {
            samples.clear();
            continue;
        }
        let Ok(status) = storage.clone().status(StatusRequest {}).await else {
            continue;
        };
        let status = status.into_inner();
        let current = status.revision;
        compacted = compacted.max(status.compact_revision);
        let target = match retention {
            Retention::Revisions(n) => current - n,
            Retention::Periodic(keep) => {
                samples.push_back((Instant::now(), current));
                // The newest revision observed at least `keep` ago.
                let mut target = 0;
                while let Some((at, rev)) = samples.front().copied() {
                    if at.elapsed() < keep {
                        break;
                    }
                    target = rev;
                    samples.pop_front();
                }
                target
            }
        };
        if target > compacted {
            let req = CompactionRequest {
                revision: target,
                physical: false,
            };
            match propose(&raft, Op::Compaction(req)).await {
                Ok(_) => {
                    tracing::info!(revision = target, "auto-compacted");
                    compacted = target;
                }
                Err(e) => {
                    tracing::warn!(error = %e.message(), "auto compaction failed; will retry")
                }
            }
        }
    }
}
