//! The etcd v3 Cluster service: membership lives in raft, so every call is
//! raftd's (forwarded to the leader there); gatewayd fills the headers.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::backend::{Backend, Retry};
use common::proto::etcdserverpb::cluster_server::Cluster;
use common::proto::etcdserverpb::*;

pub struct ClusterService {
    backend: Arc<Backend>,
}

impl ClusterService {
    pub fn new(backend: Arc<Backend>) -> Self {
        ClusterService { backend }
    }

    /// One raftd call; the response gets this member's header. A
    /// membership change is for administrators only (etcd's
    /// checkMembershipOperationPermission) and is never resent once sent.
    async fn call<Req, Resp, F, Fut>(
        &self,
        req: Request<Req>,
        change: Membership,
        call: F,
        header: fn(&mut Resp) -> &mut Option<ResponseHeader>,
    ) -> Result<Response<Resp>, Status>
    where
        Req: Clone,
        F: Fn(
            common::proto::raft::raft_local_client::RaftLocalClient<tonic::transport::Channel>,
            Req,
        ) -> Fut,
        Fut: std::future::Future<Output = Result<Response<Resp>, Status>>,
    {
        let retry = match change {
            Membership::Change => {
                let who = self.backend.who(&req).await?;
                self.backend.check_admin(&who).await?;
                Retry::OnlyUnsent
            }
            Membership::Read => Retry::Idempotent,
        };
        let req = req.into_inner();
        let mut resp = self
            .backend
            .raft_call(retry, |raft| call(raft, req.clone()))
            .await?;
        // etcd's cluster service heads its answers without a revision.
        *header(&mut resp) = self.backend.header(0);
        Ok(Response::new(resp))
    }
}

enum Membership {
    Read,
    Change,
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn member_add(
        &self,
        req: Request<MemberAddRequest>,
    ) -> Result<Response<MemberAddResponse>, Status> {
        self.call(
            req,
            Membership::Change,
            |mut r, q| async move { r.member_add(q).await },
            |r| &mut r.header,
        )
        .await
    }

    async fn member_remove(
        &self,
        req: Request<MemberRemoveRequest>,
    ) -> Result<Response<MemberRemoveResponse>, Status> {
        self.call(
            req,
            Membership::Change,
            |mut r, q| async move { r.member_remove(q).await },
            |r| &mut r.header,
        )
        .await
    }

    async fn member_update(
        &self,
        req: Request<MemberUpdateRequest>,
    ) -> Result<Response<MemberUpdateResponse>, Status> {
        self.call(
            req,
            Membership::Change,
            |mut r, q| async move { r.member_update(q).await },
            |r| &mut r.header,
        )
        .await
    }

    async fn member_list(
        &self,
        req: Request<MemberListRequest>,
    ) -> Result<Response<MemberListResponse>, Status> {
        self.call(
            req,
            Membership::Read,
            |mut r, q| async move { r.member_list(q).await },
            |r| &mut r.header,
        )
        .await
    }

    async fn member_promote(
        &self,
        req: Request<MemberPromoteRequest>,
    ) -> Result<Response<MemberPromoteResponse>, Status> {
        self.call(
            req,
            Membership::Change,
            |mut r, q| async move { r.member_promote(q).await },
            |r| &mut r.header,
        )
        .await
    }
}
