//! The etcd v3 Maintenance service: Status (from raftd and storaged),
//! Alarm (no alarm can be raised yet, so the list is empty), Defragment
//! (nothing to defragment on fjall: succeeds at once), MoveLeader (raftd
//! transfers leadership), HashKV (storaged's, etcd's algorithm). Hash,
//! Snapshot and Downgrade are not implemented yet.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::backend::{Backend, Retry};
use common::proto::etcdserverpb::alarm_request::AlarmAction;
use common::proto::etcdserverpb::maintenance_server::Maintenance;
use common::proto::etcdserverpb::*;

pub struct MaintenanceService {
    backend: Arc<Backend>,
    version: String,
}

impl MaintenanceService {
    pub fn new(backend: Arc<Backend>, version: String) -> Self {
        MaintenanceService { backend, version }
    }
}

type SnapshotStream =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<SnapshotResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Maintenance for MaintenanceService {
    async fn alarm(&self, req: Request<AlarmRequest>) -> Result<Response<AlarmResponse>, Status> {
        match AlarmAction::try_from(req.into_inner().action) {
            Ok(AlarmAction::Get) | Ok(AlarmAction::Deactivate) => {
                let s = self.backend.storage_status().await?;
                Ok(Response::new(AlarmResponse {
                    header: self.backend.header(s.revision),
                    alarms: vec![],
                }))
            }
            _ => Err(Status::unimplemented(
                "raising alarms by request is not supported yet",
            )),
        }
    }

    async fn status(
        &self,
        _req: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        let storage = self.backend.storage_status().await?;
        let mut errors = Vec::new();
        let raft = match self.backend.raft_status().await {
            Ok(r) => r,
            Err(e) => {
                errors.push(format!("raftd: {}", e.message()));
                Default::default()
            }
        };
        Ok(Response::new(StatusResponse {
            header: self.backend.header(storage.revision),
            version: self.version.clone(),
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
        _req: Request<DefragmentRequest>,
    ) -> Result<Response<DefragmentResponse>, Status> {
        let s = self.backend.storage_status().await?;
        Ok(Response::new(DefragmentResponse {
            header: self.backend.header(s.revision),
        }))
    }

    async fn hash(&self, _req: Request<HashRequest>) -> Result<Response<HashResponse>, Status> {
        Err(Status::unimplemented("Hash is not implemented yet"))
    }

    async fn hash_kv(
        &self,
        req: Request<HashKvRequest>,
    ) -> Result<Response<HashKvResponse>, Status> {
        let req = req.into_inner();
        let mut resp = self.backend.hash_kv(req).await?;
        let revision = resp.header.as_ref().map_or(0, |h| h.revision);
        resp.header = self.backend.header(revision);
        Ok(Response::new(resp))
    }

    type SnapshotStream = SnapshotStream;

    async fn snapshot(
        &self,
        _req: Request<SnapshotRequest>,
    ) -> Result<Response<SnapshotStream>, Status> {
        Err(Status::unimplemented("Snapshot is not implemented yet"))
    }

    async fn move_leader(
        &self,
        req: Request<MoveLeaderRequest>,
    ) -> Result<Response<MoveLeaderResponse>, Status> {
        let req = req.into_inner();
        let mut resp = self
            .backend
            .raft_call(Retry::OnlyUnsent, |mut raft| async move {
                raft.move_leader(req).await
            })
            .await?;
        let s = self.backend.storage_status().await?;
        resp.header = self.backend.header(s.revision);
        Ok(Response::new(resp))
    }

    async fn downgrade(
        &self,
        _req: Request<DowngradeRequest>,
    ) -> Result<Response<DowngradeResponse>, Status> {
        Err(Status::unimplemented("Downgrade is not implemented yet"))
    }
}
