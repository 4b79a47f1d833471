//! etcd's gRPC-gateway: the v3 API as HTTP/JSON on the client port, under
//! `/v3/` and `/v3beta/` (older clients). Requests are POSTed JSON objects
//! and answers use etcd's encoding (grpc-gateway's jsonpb with proto field
//! names: int64 as strings, bytes as base64, enums by name, defaults left
//! out); errors are `{"error","message","code"}` with grpc-gateway's HTTP
//! statuses. Streaming calls (watch, lease keepalive, election observe,
//! snapshot) answer newline-separated `{"result": ...}` objects. The
//! `Authorization` header carries an auth token, as etcd's gateway takes it.
//! Every call goes to the same service code as gRPC.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use futures::{Stream, StreamExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::{Code, Status};

use crate::api::auth::AuthService;
use crate::api::cluster::ClusterService;
use crate::api::election::ElectionService;
use crate::api::kv::KvService;
use crate::api::lease::LeaseService;
use crate::api::lock::LockService;
use crate::api::maintenance::MaintenanceService;
use crate::api::watch::WatchService;
use crate::identity::Credentials;
use common::proto::etcdserverpb::auth_server::Auth;
use common::proto::etcdserverpb::cluster_server::Cluster;
use common::proto::etcdserverpb::kv_server::Kv;
use common::proto::etcdserverpb::lease_server::Lease;
use common::proto::etcdserverpb::maintenance_server::Maintenance;
use common::proto::etcdserverpb::{LeaseKeepAliveRequest, WatchRequest};
use common::proto::v3electionpb::election_server::Election;
use common::proto::v3lockpb::lock_server::Lock;

/// The services the gateway calls (the same instances gRPC serves).
pub struct Services {
    pub kv: Arc<KvService>,
    pub watch: Arc<WatchService>,
    pub lease: Arc<LeaseService>,
    pub cluster: Arc<ClusterService>,
    pub maintenance: Arc<MaintenanceService>,
    pub auth: Arc<AuthService>,
    pub lock: Arc<LockService>,
    pub election: Arc<ElectionService>,
}

type S = State<Arc<Services>>;

/// grpc-gateway's HTTP status for a gRPC code.
fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::Cancelled => StatusCode::REQUEST_TIMEOUT,
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
            StatusCode::BAD_REQUEST
        }
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn json_response(status: StatusCode, body: String) -> Response {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Body::from(body))
        .unwrap_or_default()
}

/// grpc-gateway's error object, its fields in its order.
fn error_response(s: &Status) -> Response {
    let msg = serde_json::Value::from(s.message()).to_string();
    let body = format!(
        r#"{{"error":{msg},"message":{msg},"code":{}}}"#,
        s.code() as i32
    );
    json_response(http_status(s.code()), body)
}

/// The request object in the body (an empty body is the empty message).
pub fn decode_body<T: DeserializeOwned + Default>(body: &[u8]) -> Result<T, Status> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| Status::invalid_argument(e.to_string()))
}

/// Every request object in the body of a streaming call, as a stream that
/// ends with the body (the client's close-send).
fn decode_stream<T: DeserializeOwned + Send + 'static>(
    body: &[u8],
) -> Result<futures::stream::Iter<std::vec::IntoIter<Result<T, Status>>>, Status> {
    // Decoded up front: a malformed object fails the whole call.
    let msgs = serde_json::Deserializer::from_slice(body)
        .into_iter::<T>()
        .map(|m| {
            m.map(Ok)
                .map_err(|e| Status::invalid_argument(e.to_string()))
        })
        .collect::<Result<Vec<_>, Status>>()?;
    Ok(futures::stream::iter(msgs))
}

fn token(headers: &HeaderMap) -> Option<String> {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

fn request<T>(headers: &HeaderMap, msg: T) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    if let Some(v) = token(headers).and_then(|t| t.parse().ok()) {
        req.metadata_mut().insert("authorization", v);
    }
    req
}

/// One unary call: decode, call the service, encode its answer or error.
async fn unary<Req, Resp, F, Fut>(headers: HeaderMap, body: Bytes, call: F) -> Response
where
    Req: DeserializeOwned + Default,
    Resp: Serialize,
    F: FnOnce(tonic::Request<Req>) -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<Resp>, Status>>,
{
    let msg = match decode_body::<Req>(&body) {
        Ok(m) => m,
        Err(s) => return error_response(&s),
    };
    match call(request(&headers, msg)).await {
        Ok(r) => match serde_json::to_string(r.get_ref()) {
            Ok(json) => json_response(StatusCode::OK, json),
            Err(e) => error_response(&Status::internal(e.to_string())),
        },
        Err(s) => error_response(&s),
    }
}

/// A streaming answer: `{"result": ...}` per message, one per line; an
/// error ends it as grpc-gateway reports one.
fn streamed<T, St>(answers: St) -> Response
where
    T: Serialize,
    St: Stream<Item = Result<T, Status>> + Send + 'static,
{
    let lines = answers
        .map(|item| {
            let line = match item {
                // Serialized directly: field order as etcd's (a Value
                // would sort the keys).
                Ok(msg) => match serde_json::to_string(&msg) {
                    Ok(json) => format!(r#"{{"result":{json}}}"#),
                    Err(e) => format!(r#"{{"error":{}}}"#, serde_json::Value::from(e.to_string())),
                },
                Err(s) => {
                    let status = http_status(s.code());
                    let msg = serde_json::Value::from(s.message()).to_string();
                    let reason = status.canonical_reason().unwrap_or("");
                    return Ok::<Bytes, Infallible>(Bytes::from(format!(
                        r#"{{"error":{{"grpc_code":{},"http_code":{},"message":{msg},"http_status":"{reason}"}}}}"#,
                        s.code() as i32,
                        status.as_u16()
                    ) + "\n"));
                }
            };
            Ok::<Bytes, Infallible>(Bytes::from(format!("{line}\n")))
        })
        .boxed();
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .body(Body::from_stream(lines))
        .unwrap_or_default()
}

macro_rules! unary_route {
    ($router:expr, $path:expr, $svc:ident, $method:ident) => {
        $router.route(
            $path,
            post(|State(s): S, headers: HeaderMap, body: Bytes| async move {
                unary(headers, body, |r| async move { s.$svc.$method(r).await }).await
            }),
        )
    };
}

async fn watch(State(s): S, headers: HeaderMap, body: Bytes) -> Response {
    match decode_stream::<WatchRequest>(&body) {
        Ok(requests) => {
            // A watch outlives its requests (etcd keeps the stream open
            // after the client's close-send); a keepalive stream does not.
            let requests = requests.chain(futures::stream::pending());
            let creds = Credentials::token(token(&headers));
            streamed(s.watch.open(creds, requests).await)
        }
        Err(e) => error_response(&e),
    }
}

async fn keep_alive(State(s): S, body: Bytes) -> Response {
    match decode_stream::<LeaseKeepAliveRequest>(&body) {
        Ok(requests) => streamed(s.lease.keep_alive(requests)),
        Err(e) => error_response(&e),
    }
}

async fn observe(State(s): S, headers: HeaderMap, body: Bytes) -> Response {
    let msg = match decode_body(&body) {
        Ok(m) => m,
        Err(e) => return error_response(&e),
    };
    match s.election.observe(request(&headers, msg)).await {
        Ok(r) => streamed(r.into_inner()),
        Err(e) => error_response(&e),
    }
}

async fn snapshot(State(s): S, headers: HeaderMap, body: Bytes) -> Response {
    let msg = match decode_body(&body) {
        Ok(m) => m,
        Err(e) => return error_response(&e),
    };
    match s.maintenance.snapshot(request(&headers, msg)).await {
        Ok(r) => streamed(r.into_inner()),
        Err(e) => error_response(&e),
    }
}

/// The routes of one API prefix ("/v3" or "/v3beta").
fn api(p: &str) -> Router<Arc<Services>> {
    let r = Router::new();
    let r = unary_route!(r, &format!("{p}/kv/range"), kv, range);
    let r = unary_route!(r, &format!("{p}/kv/put"), kv, put);
    let r = unary_route!(r, &format!("{p}/kv/deleterange"), kv, delete_range);
    let r = unary_route!(r, &format!("{p}/kv/txn"), kv, txn);
    let r = unary_route!(r, &format!("{p}/kv/compaction"), kv, compact);
    let r = unary_route!(r, &format!("{p}/lease/grant"), lease, lease_grant);
    let r = unary_route!(r, &format!("{p}/lease/revoke"), lease, lease_revoke);
    let r = unary_route!(r, &format!("{p}/kv/lease/revoke"), lease, lease_revoke);
    let r = unary_route!(
        r,
        &format!("{p}/lease/timetolive"),
        lease,
        lease_time_to_live
    );
    let r = unary_route!(
        r,
        &format!("{p}/kv/lease/timetolive"),
        lease,
        lease_time_to_live
    );
    let r = unary_route!(r, &format!("{p}/lease/leases"), lease, lease_leases);
    let r = unary_route!(r, &format!("{p}/kv/lease/leases"), lease, lease_leases);
    let r = unary_route!(r, &format!("{p}/cluster/member/add"), cluster, member_add);
    let r = unary_route!(
        r,
        &format!("{p}/cluster/member/remove"),
        cluster,
        member_remove
    );
    let r = unary_route!(
        r,
        &format!("{p}/cluster/member/update"),
        cluster,
        member_update
    );
    let r = unary_route!(r, &format!("{p}/cluster/member/list"), cluster, member_list);
    let r = unary_route!(
        r,
        &format!("{p}/cluster/member/promote"),
        cluster,
        member_promote
    );
    let r = unary_route!(r, &format!("{p}/maintenance/alarm"), maintenance, alarm);
    let r = unary_route!(r, &format!("{p}/maintenance/status"), maintenance, status);
    let r = unary_route!(
        r,
        &format!("{p}/maintenance/defragment"),
        maintenance,
        defragment
    );
    let r = unary_route!(r, &format!("{p}/maintenance/hash"), maintenance, hash);
    let r = unary_route!(
        r,
        &format!("{p}/maintenance/transfer-leadership"),
        maintenance,
        move_leader
    );
    let r = unary_route!(r, &format!("{p}/auth/enable"), auth, auth_enable);
    let r = unary_route!(r, &format!("{p}/auth/disable"), auth, auth_disable);
    let r = unary_route!(r, &format!("{p}/auth/status"), auth, auth_status);
    let r = unary_route!(r, &format!("{p}/auth/authenticate"), auth, authenticate);
    let r = unary_route!(r, &format!("{p}/auth/user/add"), auth, user_add);
    let r = unary_route!(r, &format!("{p}/auth/user/get"), auth, user_get);
    let r = unary_route!(r, &format!("{p}/auth/user/list"), auth, user_list);
    let r = unary_route!(r, &format!("{p}/auth/user/delete"), auth, user_delete);
    let r = unary_route!(
        r,
        &format!("{p}/auth/user/changepw"),
        auth,
        user_change_password
    );
    let r = unary_route!(r, &format!("{p}/auth/user/grant"), auth, user_grant_role);
    let r = unary_route!(r, &format!("{p}/auth/user/revoke"), auth, user_revoke_role);
    let r = unary_route!(r, &format!("{p}/auth/role/add"), auth, role_add);
    let r = unary_route!(r, &format!("{p}/auth/role/get"), auth, role_get);
    let r = unary_route!(r, &format!("{p}/auth/role/list"), auth, role_list);
    let r = unary_route!(r, &format!("{p}/auth/role/delete"), auth, role_delete);
    let r = unary_route!(
        r,
        &format!("{p}/auth/role/grant"),
        auth,
        role_grant_permission
    );
    let r = unary_route!(
        r,
        &format!("{p}/auth/role/revoke"),
        auth,
        role_revoke_permission
    );
    let r = unary_route!(r, &format!("{p}/lock/lock"), lock, lock);
    let r = unary_route!(r, &format!("{p}/lock/unlock"), lock, unlock);
    let r = unary_route!(r, &format!("{p}/election/campaign"), election, campaign);
    let r = unary_route!(r, &format!("{p}/election/proclaim"), election, proclaim);
    let r = unary_route!(r, &format!("{p}/election/leader"), election, leader);
    let r = unary_route!(r, &format!("{p}/election/resign"), election, resign);
    r.route(&format!("{p}/watch"), post(watch))
        .route(&format!("{p}/lease/keepalive"), post(keep_alive))
        .route(&format!("{p}/election/observe"), post(observe))
        .route(&format!("{p}/maintenance/snapshot"), post(snapshot))
}

pub fn routes(services: Arc<Services>) -> Router {
    api("/v3").merge(api("/v3beta")).with_state(services)
}
