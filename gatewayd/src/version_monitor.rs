//! The member's server version and etcd's version monitor: each member
//! publishes the version it reports to the cluster; the leader's gatewayd
//! sets the cluster version the members' versions allow and ends a
//! downgrade once every member runs its target.

use std::sync::Arc;
use std::time::Duration;

use common::proto::storage::raft_request::Op;
use common::proto::storage::{DowngradeSet, MemberVersion, RaftRequest};
use common::versions::{self, Version};
use tonic::Status;

use crate::backend::Backend;

/// How often the leader decides (etcd's monitorVersionInterval).
const INTERVAL: Duration = Duration::from_secs(4);
/// The first decisions come sooner, so a new cluster has its version soon.
const FIRST: Duration = Duration::from_millis(500);

/// Runs for the life of gatewayd; `version` is the server version this
/// member reports (`--etcd-version`).
pub async fn run(backend: Arc<Backend>, version: String) {
    let Some(own) = Version::parse(&version) else {
        tracing::warn!(%version, "the reported version is not major.minor.patch: not published");
        return;
    };
    let mut warned_low = false;
    let mut wait = FIRST;
    loop {
        tokio::time::sleep(wait).await;
        match round(&backend, &version, own, &mut warned_low).await {
            Ok(settled) => {
                if settled {
                    wait = INTERVAL;
                }
            }
            Err(e) => tracing::debug!(error = %e.message(), "version monitor round failed"),
        }
    }
}

/// One round; whether nothing was left to change.
async fn round(
    backend: &Backend,
    version: &str,
    own: Version,
    warned_low: &mut bool,
) -> Result<bool, Status> {
    let raft = backend.raft_status().await?;
    if raft.member_id == 0 {
        return Ok(false);
    }
    let storage = backend.storage_status().await?;
    let published = |id: u64| {
        storage
            .member_versions
            .iter()
            .find(|m| m.member_id == id)
            .map(|m| m.version.as_str())
    };
    if published(raft.member_id) != Some(version) {
        propose(
            backend,
            Op::MemberVersion(MemberVersion {
                member_id: raft.member_id,
                version: version.to_string(),
            }),
        )
        .await?;
        tracing::info!(%version, "published this member's server version");
        return Ok(false);
    }
    let cluster = Version::parse(&storage.cluster_version);
    let target = storage
        .downgrade
        .as_ref()
        .filter(|d| d.enabled)
        .and_then(|d| Version::parse(&d.target_version));
    if let Some(cv) = cluster {
        crate::metrics::set_cluster_version(cv);
        if own.cluster() < cv && target != Some(own.cluster()) && !*warned_low {
            // etcd refuses to start here; triad serves on and says why.
            tracing::error!(
                current_server_version = %version,
                determined_cluster_version = %cv,
                "invalid downgrade; server version is lower than determined cluster version"
            );
            *warned_low = true;
        }
    }
    if raft.leader != raft.member_id {
        return Ok(true);
    }
    let members = backend.local_members().await?;
    let versions: Vec<Option<Version>> = members
        .iter()
        .map(|m| published(m.id).and_then(Version::parse))
        .collect();
    if let Some(next) = versions::decide(cluster, &versions, target) {
        propose(backend, Op::ClusterVersion(next.to_string())).await?;
        crate::metrics::set_cluster_version(next);
        match cluster {
            None => tracing::info!(cluster_version = %next, "set initial cluster version"),
            Some(from) => {
                tracing::info!(from = %from, to = %next, "updated cluster version")
            }
        }
        return Ok(false);
    }
    if let Some(target) = target {
        if cluster == Some(target) && versions::downgrade_finished(&versions, target) {
            propose(
                backend,
                Op::Downgrade(DowngradeSet {
                    enabled: false,
                    target_version: String::new(),
                }),
            )
            .await?;
            tracing::info!(target_version = %target, "the cluster has been downgraded");
            return Ok(false);
        }
    }
    Ok(true)
}

/// A version setting, as the member's own request.
async fn propose(backend: &Backend, op: Op) -> Result<(), Status> {
    backend
        .propose(RaftRequest {
            op: Some(op),
            auth: None,
            trace_parent: String::new(),
        })
        .await
        .map(|_| ())
}
