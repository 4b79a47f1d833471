//! The etcd v3 Auth service. Changes to users and roles go through raft
//! (storaged applies them, judging the caller's right to make them, so
//! every member agrees); passwords are hashed here with bcrypt before they
//! are proposed, so no plaintext password reaches the log. Reads are
//! linearizable (read index, then this member's storaged). Authenticate
//! checks the password here, then issues a simple token (registered on
//! every member through raft) or a JWT.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::backend::Backend;
use crate::tokens::{simple_token, Tokens};
use common::errors::{unavailable, EtcdError};
use common::proto::etcdserverpb::auth_server::Auth;
use common::proto::etcdserverpb::*;
use common::proto::storage::auth_change::Op as Change;
use common::proto::storage::auth_query_request::Query;
use common::proto::storage::auth_query_response::Answer;
use common::proto::storage::raft_request::Op;
use common::proto::storage::raft_result::Result as Outcome;
use common::proto::storage::{AuthChange, AuthInfo, RaftRequest, SimpleToken};

pub struct AuthService {
    backend: Arc<Backend>,
    bcrypt_cost: u32,
}

/// How often Authenticate starts over when the auth store changed between
/// its password check and its token registration.
const AUTHENTICATE_ATTEMPTS: usize = 3;

impl AuthService {
    pub fn new(backend: Arc<Backend>, bcrypt_cost: u32) -> Self {
        AuthService {
            backend,
            bcrypt_cost,
        }
    }

    /// Propose one auth change on behalf of `who`; the header of the
    /// response (etcd's auth responses carry nothing else).
    async fn change(
        &self,
        op: Change,
        who: Option<AuthInfo>,
    ) -> Result<Option<ResponseHeader>, Status> {
        let req = RaftRequest {
            op: Some(Op::AuthChange(AuthChange { op: Some(op) })),
            auth: who,
            trace_parent: String::new(),
        };
        match self.backend.propose(req).await? {
            Outcome::AuthChanged(c) => Ok(self.backend.header(c.revision)),
            _ => Err(unavailable("apply returned a result of the wrong kind")),
        }
    }

    /// A change requested by the sender of `req`.
    async fn change_by<T>(
        &self,
        req: &Request<T>,
        op: Change,
    ) -> Result<Option<ResponseHeader>, Status> {
        let who = self.backend.who(req).await?;
        self.change(op, Some(who)).await
    }

    async fn hash(&self, password: String) -> Result<String, Status> {
        let cost = self.bcrypt_cost;
        tokio::task::spawn_blocking(move || bcrypt::hash(password, cost))
            .await
            .map_err(|e| unavailable(format!("bcrypt task failed: {e}")))?
            .map_err(|e| unavailable(format!("bcrypt: {e}")))
    }

    async fn query<T>(&self, req: &Request<T>, q: Query) -> Result<Answer, Status> {
        let who = self.backend.who(req).await?;
        self.backend.read_index().await?;
        self.backend.auth_query(&who, q).await
    }

    /// Check `name`'s password; the auth revision it was checked at.
    async fn check_password(&self, name: &str, password: String) -> Result<u64, Status> {
        self.backend.read_index().await?;
        let creds = self.backend.auth_credentials(name).await?;
        if !creds.enabled {
            return Err(EtcdError::AuthNotEnabled.into());
        }
        if !creds.found || creds.no_password {
            return Err(EtcdError::AuthFailed.into());
        }
        let hash = creds.password_hash;
        let matches = tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash))
            .await
            .map_err(|e| unavailable(format!("bcrypt task failed: {e}")))?
            .unwrap_or(false);
        if matches {
            Ok(creds.auth_revision)
        } else {
            Err(EtcdError::AuthFailed.into())
        }
    }
}

/// Fill the header of an auth read's answer with this member's fields.
fn answered<R>(
    backend: &Backend,
    answer: Answer,
    pick: fn(Answer) -> Option<R>,
    header: fn(&mut R) -> &mut Option<ResponseHeader>,
) -> Result<Response<R>, Status> {
    let mut resp = pick(answer).ok_or_else(|| unavailable("auth query answered the wrong kind"))?;
    backend.fill(header(&mut resp));
    Ok(Response::new(resp))
}

macro_rules! pick {
    ($variant:ident) => {
        |a| match a {
            Answer::$variant(r) => Some(r),
            _ => None,
        }
    };
}

#[tonic::async_trait]
impl Auth for AuthService {
    async fn auth_enable(
        &self,
        req: Request<AuthEnableRequest>,
    ) -> Result<Response<AuthEnableResponse>, Status> {
        let header = self.change_by(&req, Change::Enable(*req.get_ref())).await?;
        Ok(Response::new(AuthEnableResponse { header }))
    }

    async fn auth_disable(
        &self,
        req: Request<AuthDisableRequest>,
    ) -> Result<Response<AuthDisableResponse>, Status> {
        let header = self
            .change_by(&req, Change::Disable(*req.get_ref()))
            .await?;
        Ok(Response::new(AuthDisableResponse { header }))
    }

    async fn auth_status(
        &self,
        req: Request<AuthStatusRequest>,
    ) -> Result<Response<AuthStatusResponse>, Status> {
        let a = self
            .query(&req, Query::Status(AuthStatusRequest {}))
            .await?;
        answered(&self.backend, a, pick!(Status), |r| &mut r.header)
    }

    async fn authenticate(
        &self,
        req: Request<AuthenticateRequest>,
    ) -> Result<Response<AuthenticateResponse>, Status> {
        let r = req.into_inner();
        for _ in 0..AUTHENTICATE_ATTEMPTS {
            let checked = self.check_password(&r.name, r.password.clone()).await?;
            let (token, simple) = match self.backend.tokens() {
                Tokens::Simple { ttl } => {
                    let token = simple_token();
                    let simple = SimpleToken {
                        user: r.name.clone(),
                        token: common::secrets::digest(token.as_bytes()),
                        ttl_seconds: ttl.as_secs() as i64,
                        checked_revision: checked,
                    };
                    (token, simple)
                }
                Tokens::Jwt(jwt) => {
                    let token = jwt
                        .issue(&r.name, checked)
                        .ok_or_else(|| unavailable("this member has no key to sign tokens"))?;
                    // Still through raft: the check is linearized with
                    // changes to the user (and answers with the revision).
                    let probe = SimpleToken {
                        user: r.name.clone(),
                        token: String::new(),
                        ttl_seconds: 0,
                        checked_revision: checked,
                    };
                    (token, probe)
                }
            };
            match self.change(Change::Authenticate(simple), None).await {
                Ok(header) => return Ok(Response::new(AuthenticateResponse { header, token })),
                Err(s) if EtcdError::of_status(&s) == Some(EtcdError::AuthOldRevision) => continue,
                Err(s) => return Err(s),
            }
        }
        Err(EtcdError::AuthOldRevision.into())
    }

    async fn user_add(
        &self,
        req: Request<AuthUserAddRequest>,
    ) -> Result<Response<AuthUserAddResponse>, Status> {
        let mut r = req.get_ref().clone();
        let no_password = r.options.as_ref().is_some_and(|o| o.no_password);
        if !no_password && r.hashed_password.is_empty() {
            r.hashed_password = self.hash(std::mem::take(&mut r.password)).await?;
        }
        r.password.clear();
        let header = self.change_by(&req, Change::UserAdd(r)).await?;
        Ok(Response::new(AuthUserAddResponse { header }))
    }

    async fn user_get(
        &self,
        req: Request<AuthUserGetRequest>,
    ) -> Result<Response<AuthUserGetResponse>, Status> {
        let a = self
            .query(&req, Query::UserGet(req.get_ref().clone()))
            .await?;
        answered(&self.backend, a, pick!(UserGet), |r| &mut r.header)
    }

    async fn user_list(
        &self,
        req: Request<AuthUserListRequest>,
    ) -> Result<Response<AuthUserListResponse>, Status> {
        let a = self
            .query(&req, Query::UserList(AuthUserListRequest {}))
            .await?;
        answered(&self.backend, a, pick!(UserList), |r| &mut r.header)
    }

    async fn user_delete(
        &self,
        req: Request<AuthUserDeleteRequest>,
    ) -> Result<Response<AuthUserDeleteResponse>, Status> {
        let header = self
            .change_by(&req, Change::UserDelete(req.get_ref().clone()))
            .await?;
        Ok(Response::new(AuthUserDeleteResponse { header }))
    }

    async fn user_change_password(
        &self,
        req: Request<AuthUserChangePasswordRequest>,
    ) -> Result<Response<AuthUserChangePasswordResponse>, Status> {
        let mut r = req.get_ref().clone();
        if r.hashed_password.is_empty() {
            r.hashed_password = self.hash(std::mem::take(&mut r.password)).await?;
        }
        r.password.clear();
        let header = self.change_by(&req, Change::UserChangePassword(r)).await?;
        Ok(Response::new(AuthUserChangePasswordResponse { header }))
    }

    async fn user_grant_role(
        &self,
        req: Request<AuthUserGrantRoleRequest>,
    ) -> Result<Response<AuthUserGrantRoleResponse>, Status> {
        let header = self
            .change_by(&req, Change::UserGrantRole(req.get_ref().clone()))
            .await?;
        Ok(Response::new(AuthUserGrantRoleResponse { header }))
    }

    async fn user_revoke_role(
        &self,
        req: Request<AuthUserRevokeRoleRequest>,
    ) -> Result<Response<AuthUserRevokeRoleResponse>, Status> {
        let header = self
            .change_by(&req, Change::UserRevokeRole(req.get_ref().clone()))
            .await?;
        Ok(Response::new(AuthUserRevokeRoleResponse { header }))
    }

    async fn role_add(
        &self,
        req: Request<AuthRoleAddRequest>,
    ) -> Result<Response<AuthRoleAddResponse>, Status> {
        let header = self
            .change_by(&req, Change::RoleAdd(req.get_ref().clone()))
            .await?;
        Ok(Response::new(AuthRoleAddResponse { header }))
    }

    async fn role_get(
        &self,
        req: Request<AuthRoleGetRequest>,
    ) -> Result<Response<AuthRoleGetResponse>, Status> {
        let a = self
            .query(&req, Query::RoleGet(req.get_ref().clone()))
            .await?;
        answered(&self.backend, a, pick!(RoleGet), |r| &mut r.header)
    }

    async fn role_list(
        &self,
        req: Request<AuthRoleListRequest>,
    ) -> Result<Response<AuthRoleListResponse>, Status> {
        let a = self
            .query(&req, Query::RoleList(AuthRoleListRequest {}))
            .await?;
        answered(&self.backend, a, pick!(RoleList), |r| &mut r.header)
    }

    async fn role_delete(
        &self,
        req: Request<AuthRoleDeleteRequest>,
    ) -> Result<Response<AuthRoleDeleteResponse>, Status> {
        let header = self
            .change_by(&req, Change::RoleDelete(req.get_ref().clone()))
            .await?;
        Ok(Response::new(AuthRoleDeleteResponse { header }))
    }

    async fn role_grant_permission(
        &self,
        req: Request<AuthRoleGrantPermissionRequest>,
    ) -> Result<Response<AuthRoleGrantPermissionResponse>, Status> {
        let op = Change::RoleGrantPermission(req.get_ref().clone());
        let header = self.change_by(&req, op).await?;
        Ok(Response::new(AuthRoleGrantPermissionResponse { header }))
    }

    async fn role_revoke_permission(
        &self,
        req: Request<AuthRoleRevokePermissionRequest>,
    ) -> Result<Response<AuthRoleRevokePermissionResponse>, Status> {
        let op = Change::RoleRevokePermission(req.get_ref().clone());
        let header = self.change_by(&req, op).await?;
        Ok(Response::new(AuthRoleRevokePermissionResponse { header }))
    }
}
