//! The L7 proxy's services that need nothing of it but forwarding:
//! Cluster, Maintenance, Auth, Lock and Election calls go to the cluster
//! as they came (credentials included), failing over like every call.
//! As in etcd's grpc-proxy, the namespace does not apply to lock and
//! election names.

use std::sync::Arc;

use tonic::{Request, Response, Status, Streaming};

use super::upstream::{forward, unary, Upstream};
use crate::retry::Retry::{Idempotent, OnlyUnsent};
use common::proto::etcdserverpb::auth_client::AuthClient;
use common::proto::etcdserverpb::auth_server::Auth;
use common::proto::etcdserverpb::cluster_client::ClusterClient;
use common::proto::etcdserverpb::cluster_server::Cluster;
use common::proto::etcdserverpb::maintenance_client::MaintenanceClient;
use common::proto::etcdserverpb::maintenance_server::Maintenance;
use common::proto::etcdserverpb::*;
use common::proto::v3electionpb::election_client::ElectionClient;
use common::proto::v3electionpb::election_server::Election;
use common::proto::v3electionpb::*;
use common::proto::v3lockpb::lock_client::LockClient;
use common::proto::v3lockpb::lock_server::Lock;
use common::proto::v3lockpb::*;

pub struct Passthrough {
    upstream: Arc<Upstream>,
}

impl Passthrough {
    pub fn new(upstream: Arc<Upstream>) -> Arc<Self> {
        Arc::new(Passthrough { upstream })
    }
}

forward! { Cluster for Passthrough via ClusterClient;
    member_add(MemberAddRequest) -> MemberAddResponse, OnlyUnsent;
    member_remove(MemberRemoveRequest) -> MemberRemoveResponse, OnlyUnsent;
    member_update(MemberUpdateRequest) -> MemberUpdateResponse, OnlyUnsent;
    member_list(MemberListRequest) -> MemberListResponse, Idempotent;
    member_promote(MemberPromoteRequest) -> MemberPromoteResponse, OnlyUnsent;
}

forward! { Maintenance for Passthrough via MaintenanceClient;
    alarm(AlarmRequest) -> AlarmResponse, OnlyUnsent;
    status(StatusRequest) -> StatusResponse, Idempotent;
    defragment(DefragmentRequest) -> DefragmentResponse, OnlyUnsent;
    hash(HashRequest) -> HashResponse, Idempotent;
    hash_kv(HashKvRequest) -> HashKvResponse, Idempotent;
    move_leader(MoveLeaderRequest) -> MoveLeaderResponse, OnlyUnsent;
    downgrade(DowngradeRequest) -> DowngradeResponse, OnlyUnsent;
    {
        type SnapshotStream = Streaming<SnapshotResponse>;

        async fn snapshot(
            &self,
            req: Request<SnapshotRequest>,
        ) -> Result<Response<Self::SnapshotStream>, Status> {
            let (md, r) = (req.metadata().clone(), req.into_inner());
            unary!(self.upstream, Idempotent, MaintenanceClient::snapshot, md, r).map(Response::new)
        }
    }
}

forward! { Auth for Passthrough via AuthClient;
    auth_enable(AuthEnableRequest) -> AuthEnableResponse, OnlyUnsent;
    auth_disable(AuthDisableRequest) -> AuthDisableResponse, OnlyUnsent;
    auth_status(AuthStatusRequest) -> AuthStatusResponse, Idempotent;
    authenticate(AuthenticateRequest) -> AuthenticateResponse, Idempotent;
    user_add(AuthUserAddRequest) -> AuthUserAddResponse, OnlyUnsent;
    user_get(AuthUserGetRequest) -> AuthUserGetResponse, Idempotent;
    user_list(AuthUserListRequest) -> AuthUserListResponse, Idempotent;
    user_delete(AuthUserDeleteRequest) -> AuthUserDeleteResponse, OnlyUnsent;
    user_change_password(AuthUserChangePasswordRequest) -> AuthUserChangePasswordResponse, OnlyUnsent;
    user_grant_role(AuthUserGrantRoleRequest) -> AuthUserGrantRoleResponse, OnlyUnsent;
    user_revoke_role(AuthUserRevokeRoleRequest) -> AuthUserRevokeRoleResponse, OnlyUnsent;
    role_add(AuthRoleAddRequest) -> AuthRoleAddResponse, OnlyUnsent;
    role_get(AuthRoleGetRequest) -> AuthRoleGetResponse, Idempotent;
    role_list(AuthRoleListRequest) -> AuthRoleListResponse, Idempotent;
    role_delete(AuthRoleDeleteRequest) -> AuthRoleDeleteResponse, OnlyUnsent;
    role_grant_permission(AuthRoleGrantPermissionRequest) -> AuthRoleGrantPermissionResponse, OnlyUnsent;
    role_revoke_permission(AuthRoleRevokePermissionRequest) -> AuthRoleRevokePermissionResponse, OnlyUnsent;
}

forward! { Lock for Passthrough via LockClient;
    lock(LockRequest) -> LockResponse, OnlyUnsent;
    unlock(UnlockRequest) -> UnlockResponse, OnlyUnsent;
}

forward! { Election for Passthrough via ElectionClient;
    campaign(CampaignRequest) -> CampaignResponse, OnlyUnsent;
    proclaim(ProclaimRequest) -> ProclaimResponse, OnlyUnsent;
    leader(LeaderRequest) -> LeaderResponse, Idempotent;
    resign(ResignRequest) -> ResignResponse, OnlyUnsent;
    {
        type ObserveStream = Streaming<LeaderResponse>;

        async fn observe(
            &self,
            req: Request<LeaderRequest>,
        ) -> Result<Response<Self::ObserveStream>, Status> {
            let (md, r) = (req.metadata().clone(), req.into_inner());
            unary!(self.upstream, Idempotent, ElectionClient::observe, md, r).map(Response::new)
        }
    }
}
