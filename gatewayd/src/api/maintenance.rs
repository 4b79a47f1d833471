//! The etcd v3 Maintenance service: Status (from raftd and storaged, alarms
//! as errors),
//! Alarm (list from storaged; activate/deactivate through raft), Defragment
//! (storaged flushes and compacts fully, off the apply path), MoveLeader (raftd
//! transfers leadership), HashKV (storaged's, etcd's algorithm), Snapshot
//! (storaged's point-in-time copy as etcd's bbolt backend file),
//! Hash (of storaged's whole store), Downgrade (etcd 3.6's validate,
//! enable and cancel; the version monitor does the rest).

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::backend::{Backend, Retry};
use common::errors::maintenance_auth_status;
use common::proto::etcdserverpb::alarm_request::AlarmAction;
use common::proto::etcdserverpb::downgrade_request::DowngradeAction;
use common::proto::etcdserverpb::maintenance_server::Maintenance;
use common::proto::etcdserverpb::*;
use common::proto::storage::raft_request::Op;
use common::proto::storage::raft_result::Result as Outcome;
use common::proto::storage::{DowngradeSet, RaftRequest, StatusResponse as StorageStatus};
use common::versions::{self, Version};

pub struct MaintenanceService {
    backend: Arc<Backend>,
    version: String,
}

impl MaintenanceService {
    pub fn new(backend: Arc<Backend>, version: String) -> Self {
        MaintenanceService { backend, version }
    }

    /// etcd's guard on Defragment, Hash, HashKV and Snapshot: only an
    /// administrator, refused with the auth store's own error text.
    async fn admin_only<T>(&self, req: &Request<T>) -> Result<(), Status> {
        let who = self.backend.who(req).await?;
        self.backend
            .check_admin(&who)
            .await
            .map_err(maintenance_auth_status)
    }
}

impl MaintenanceService {
    /// storaged's status once it has applied a quorum-confirmed index.
    async fn linearized_status(&self) -> Result<StorageStatus, Status> {
        self.backend.read_index().await?;
        self.backend.storage_status().await
    }

    /// The cluster version as this member's etcd version names it in a
    /// Downgrade response: `3.6` from 3.6 on, `3.5.0` before.
    fn cluster_version_text(&self, cluster: &str) -> String {
        let newer = Version::parse(&self.version).is_some_and(Version::is_3_6_or_later);
        match Version::parse(cluster) {
            Some(cv) if newer => cv.major_minor(),
            Some(cv) => cv.to_string(),
            None => String::new(),
        }
    }
}

type SnapshotStream =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<SnapshotResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Maintenance for MaintenanceService {
    async fn alarm(&self, req: Request<AlarmRequest>) -> Result<Response<AlarmResponse>, Status> {
        let who = self.backend.who(&req).await?;
        let req = req.into_inner();
        match AlarmAction::try_from(req.action) {
            Ok(AlarmAction::Get) => {
                let s = self.backend.storage_status().await?;
                let wanted =
                    |a: &AlarmMember| req.alarm == AlarmType::None as i32 || a.alarm == req.alarm;
                // etcd answers a GET without a header.
                Ok(Response::new(AlarmResponse {
                    header: None,
                    alarms: s.alarms.into_iter().filter(wanted).collect(),
                }))
            }
            Ok(AlarmAction::Activate) | Ok(AlarmAction::Deactivate) => {
                let outcome = self
                    .backend
                    .propose(RaftRequest {
                        op: Some(Op::Alarm(req)),
                        auth: Some(who),
                        trace_parent: String::new(),
                    })
                    .await?;
                let mut resp = self.backend.respond(
                    outcome,
                    |o| match o {
                        Outcome::Alarm(a) => Some(a),
                        _ => None,
                    },
                    |r| &mut r.header,
                )?;
                let s = self.backend.storage_status().await?;
                if let Some(h) = resp.header.as_mut() {
                    h.revision = s.revision;
                }
                Ok(Response::new(resp))
            }
            Err(_) => Err(Status::invalid_argument("unknown alarm action")),
        }
    }

    async fn status(
        &self,
        _req: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        let storage = self.backend.storage_status().await?;
        // etcd lists raised alarms as errors, in protobuf text form.
        let mut errors: Vec<String> = storage
            .alarms
            .iter()
            .map(|a| {
                let name = AlarmType::try_from(a.alarm).map_or("UNKNOWN", |t| t.as_str_name());
                format!("memberID:{} alarm:{} ", a.member_id, name)
            })
            .collect();
        let raft = match self.backend.raft_status().await {
            Ok(r) => r,
            Err(e) => {
                errors.push(format!("raftd: {}", e.message()));
                Default::default()
            }
        };
        let downgrade = storage.downgrade.clone().unwrap_or_default();
        Ok(Response::new(StatusResponse {
            header: self.backend.header(storage.revision),
            version: self.version.clone(),
            storage_version: storage.cluster_version.clone(),
            db_size_quota: self.backend.quota_limit(),
            downgrade_info: Some(DowngradeInfo {
                enabled: downgrade.enabled,
                target_version: downgrade.target_version,
            }),
            db_size: storage.db_size,
            leader: raft.leader,
            raft_index: raft.commit_index.max(raft.last_log_index),
            raft_term: raft.term,
            raft_applied_index: storage.applied.map_or(0, |a| a.index),
            errors,
            db_size_in_use: storage.db_size_in_use,
            is_learner: raft.is_learner,
        }))
    }

    async fn defragment(
        &self,
        req: Request<DefragmentRequest>,
    ) -> Result<Response<DefragmentResponse>, Status> {
        self.admin_only(&req).await?;
        self.backend.defragment().await?;
        // etcd answers a defragmentation without a header.
        Ok(Response::new(DefragmentResponse { header: None }))
    }

    async fn hash(&self, req: Request<HashRequest>) -> Result<Response<HashResponse>, Status> {
        self.admin_only(&req).await?;
        let mut resp = self.backend.hash().await?;
        let revision = resp.header.as_ref().map_or(0, |h| h.revision);
        resp.header = self.backend.header(revision);
        Ok(Response::new(resp))
    }

    async fn hash_kv(
        &self,
        req: Request<HashKvRequest>,
    ) -> Result<Response<HashKvResponse>, Status> {
        self.admin_only(&req).await?;
        let req = req.into_inner();
        let mut resp = self.backend.hash_kv(req).await?;
        let revision = resp.header.as_ref().map_or(0, |h| h.revision);
        resp.header = self.backend.header(revision);
        Ok(Response::new(resp))
    }

    type SnapshotStream = SnapshotStream;

    async fn snapshot(
        &self,
        req: Request<SnapshotRequest>,
    ) -> Result<Response<SnapshotStream>, Status> {
        self.admin_only(&req).await?;
        // storaged builds the file from one read snapshot; it goes to the
        // client as etcd sends its backend: pieces counting down the
        // remaining bytes, then the SHA-256 of the whole file. etcd 3.4
        // sets no header on these messages.
        let mut pieces = self.backend.etcd_snapshot().await?;
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            let mut hash = common::backup::Hasher::default();
            let mut sent = 0u64;
            loop {
                let piece = match pieces.message().await {
                    Ok(Some(piece)) => piece,
                    Ok(None) => break,
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                };
                sent += piece.data.len() as u64;
                hash.update(&piece.data);
                let resp = SnapshotResponse {
                    header: None,
                    remaining_bytes: piece.total_size.saturating_sub(sent),
                    blob: piece.data,
                    version: String::new(),
                };
                // A client that went away drops the stream from storaged,
                // which then removes its file.
                if tx.send(Ok(resp)).await.is_err() {
                    return;
                }
            }
            let last = SnapshotResponse {
                header: None,
                remaining_bytes: 0,
                blob: hash.finish(),
                version: String::new(),
            };
            let _ = tx.send(Ok(last)).await;
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn move_leader(
        &self,
        req: Request<MoveLeaderRequest>,
    ) -> Result<Response<MoveLeaderResponse>, Status> {
        let who = self.backend.who(&req).await?;
        self.backend.check_admin(&who).await?;
        let req = req.into_inner();
        let mut resp = self
            .backend
            .raft_call(Retry::OnlyUnsent, |mut raft| async move {
                raft.move_leader(req).await
            })
            .await?;
        // etcd answers a leader transfer without a header.
        resp.header = None;
        Ok(Response::new(resp))
    }

    /// etcd 3.6's Downgrade: administrators only; VALIDATE and ENABLE
    /// check the target (one minor below the cluster version, no
    /// downgrade already enabled) on a linearizable view, ENABLE records
    /// it through raft, CANCEL ends the one enabled.
    async fn downgrade(
        &self,
        req: Request<DowngradeRequest>,
    ) -> Result<Response<DowngradeResponse>, Status> {
        let who = self.backend.who(&req).await?;
        self.backend
            .check_admin(&who)
            .await
            .map_err(maintenance_auth_status)?;
        let req = req.into_inner();
        let action = DowngradeAction::try_from(req.action)
            .map_err(|_| Status::unknown("etcdserver: unknown method"))?;
        let change = match action {
            DowngradeAction::Validate | DowngradeAction::Enable => {
                let target = Version::parse_target(&req.version)?;
                let s = self.linearized_status().await?;
                let enabled = s.downgrade.as_ref().is_some_and(|d| d.enabled);
                versions::check_downgrade(Version::parse(&s.cluster_version), target, enabled)?;
                (action == DowngradeAction::Enable).then(|| DowngradeSet {
                    enabled: true,
                    target_version: target.to_string(),
                })
            }
            DowngradeAction::Cancel => {
                let s = self.linearized_status().await?;
                if !s.downgrade.as_ref().is_some_and(|d| d.enabled) {
                    return Err(common::errors::EtcdError::NoInflightDowngrade.into());
                }
                Some(DowngradeSet::default())
            }
        };
        if let Some(change) = change {
            self.backend
                .propose(RaftRequest {
                    op: Some(Op::Downgrade(change)),
                    auth: Some(who),
                    trace_parent: String::new(),
                })
                .await?;
        }
        let s = self.backend.storage_status().await?;
        Ok(Response::new(DowngradeResponse {
            header: self.backend.header(s.revision),
            version: self.cluster_version_text(&s.cluster_version),
        }))
    }
}
