//! etcd's gRPC-gateway: the v3 API as HTTP/JSON on the client port, under
//! `/v3/` and `/v3beta/` (older clients). Requests are POSTed JSON objects
//! (unknown fields ignored) and answers use etcd's encoding (grpc-gateway's
//! jsonpb with proto field names: int64 as strings, bytes as base64, enums
//! by name, defaults left out); errors are `{"error","message","code"}`
//! with grpc-gateway v1's HTTP statuses. Streaming calls (watch, lease
//! keepalive, election observe, snapshot) answer `{"result": ...}` objects,
//! one per line, flushed as they come; a stream's error is its last object,
//! `{"error": {...}}`. Watch and keepalive requests are read from the body
//! as they arrive (`json_requests.rs`). The `Authorization` header carries
//! an auth token, as etcd's gateway takes it. Every call goes to the same
//! service code as gRPC and is counted as a gRPC call, as etcd's gateway is
//! a gRPC client of its own server.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
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
use crate::api::json_requests::{first_object, ObjectReader};
use crate::api::kv::KvService;
use crate::api::lease::LeaseService;
use crate::api::lock::LockService;
use crate::api::maintenance::MaintenanceService;
use crate::api::watch::WatchService;
use crate::identity::Credentials;
use crate::metrics::GrpcCall;
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

/// grpc-gateway's HTTP status for a gRPC code (`HTTPStatusFromCode` of
/// v1.9, the version etcd 3.4 is built with; later versions answer
/// FailedPrecondition with 400, etcd 3.4 with 412).
fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::Cancelled => StatusCode::REQUEST_TIMEOUT,
        Code::InvalidArgument | Code::OutOfRange => StatusCode::BAD_REQUEST,
        Code::FailedPrecondition => StatusCode::PRECONDITION_FAILED,
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

fn json_response(status: StatusCode, body: impl Into<Body>) -> Response {
    let mut resp = Response::new(body.into());
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/json"));
    resp
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

/// grpc-gateway's error object ending a stream (no newline after it).
fn stream_error(s: &Status) -> String {
    let status = http_status(s.code());
    let mut fields = format!(
        r#"{{"grpc_code":{},"http_code":{}"#,
        s.code() as i32,
        status.as_u16()
    );
    // jsonpb leaves an empty message out.
    if !s.message().is_empty() {
        fields.push_str(r#","message":"#);
        fields.push_str(&serde_json::Value::from(s.message()).to_string());
    }
    let reason = status.canonical_reason().unwrap_or("");
    format!(r#"{{"error":{fields},"http_status":"{reason}"}}}}"#)
}

/// The request object in a unary call's body (an empty body is the empty
/// message).
pub fn decode_body<T: DeserializeOwned + Default>(body: &[u8]) -> Result<T, Status> {
    first_object(body)
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

/// A gateway call counted as the gRPC call it makes (`path` is
/// `/<service>/<method>`).
fn count_start(path: &'static str) -> GrpcCall {
    GrpcCall::start(&Uri::from_static(path))
}

/// The call's end, as its gRPC status would be reported.
fn count_finish(call: GrpcCall, code: Code) {
    let mut headers = HeaderMap::new();
    if code != Code::Ok {
        headers.insert("grpc-status", HeaderValue::from(code as i32));
    }
    call.finish(&headers);
}

/// One unary call: decode, call the service, encode its answer or error.
async fn unary<Req, Resp, F, Fut>(
    path: &'static str,
    headers: HeaderMap,
    body: Bytes,
    call: F,
) -> Response
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
    let mut counted = CountedCall::start(path, Code::Cancelled);
    let answer = call(request(&headers, msg)).await;
    counted.finish(answer.as_ref().err().map_or(Code::Ok, Status::code));
    match answer {
        Ok(r) => match serde_json::to_string(r.get_ref()) {
            Ok(json) => json_response(StatusCode::OK, json),
            Err(e) => error_response(&Status::internal(e.to_string())),
        },
        Err(s) => error_response(&s),
    }
}

/// A gateway call being counted. A unary call ends with its answer; a
/// stream at its end (OK) or at its first error (which ends it). Either
/// may end first because the client went away (dropped): the gateway
/// cancels the call, which etcd's server ends as Canceled, but a
/// keepalive as Unavailable ("no leader").
struct CountedCall {
    call: Option<GrpcCall>,
    gone: Code,
}

impl CountedCall {
    fn start(path: &'static str, gone: Code) -> CountedCall {
        CountedCall {
            call: Some(count_start(path)),
            gone,
        }
    }

    fn finish(&mut self, code: Code) {
        if let Some(call) = self.call.take() {
            count_finish(call, code);
        }
    }
}

impl Drop for CountedCall {
    fn drop(&mut self) {
        self.finish(self.gone);
    }
}

/// A streaming call's answers, counted by `call`.
struct Counted<St> {
    answers: St,
    call: CountedCall,
}

impl<T, St> Stream for Counted<St>
where
    St: Stream<Item = Result<T, Status>> + Unpin,
{
    type Item = Result<T, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.call.call.is_none() {
            return Poll::Ready(None);
        }
        let item = std::task::ready!(self.answers.poll_next_unpin(cx));
        match &item {
            None => self.call.finish(Code::Ok),
            Some(Err(s)) => self.call.finish(s.code()),
            Some(Ok(_)) => {}
        }
        Poll::Ready(item)
    }
}

/// One answer of a stream as its line: `{"result": ...}` and a newline;
/// an error object ends the stream without one.
fn stream_line<T: Serialize>(item: Result<T, Status>) -> Bytes {
    match item {
        // Serialized directly: field order as etcd's (a Value would sort
        // the keys).
        Ok(msg) => match serde_json::to_string(&msg) {
            Ok(json) => Bytes::from(format!("{{\"result\":{json}}}\n")),
            Err(e) => Bytes::from(stream_error(&Status::internal(e.to_string()))),
        },
        Err(s) => Bytes::from(stream_error(&s)),
    }
}

/// A streaming answer, written as grpc-gateway's ForwardResponseStream
/// writes it: the status is sent with the first answer (an error before
/// any answer gives the error's HTTP status), then each answer as it
/// comes.
async fn streamed<T, St>(answers: St, call: CountedCall) -> Response
where
    T: Serialize + Send + 'static,
    St: Stream<Item = Result<T, Status>> + Send + Unpin + 'static,
{
    let mut answers = Counted { answers, call };
    let Some(first) = answers.next().await else {
        return json_response(StatusCode::OK, Body::empty());
    };
    if let Err(s) = &first {
        return json_response(http_status(s.code()), stream_error(s));
    }
    let lines = futures::stream::once(std::future::ready(first))
        .chain(answers)
        .map(|item| Ok::<Bytes, std::convert::Infallible>(stream_line(item)));
    json_response(StatusCode::OK, Body::from_stream(lines))
}

/// A server-streaming call's answer: its stream, or its failure as the
/// stream's only answer (grpc-gateway sees a call's error on its first
/// receive).
async fn server_streamed<T, St>(
    answer: Result<tonic::Response<St>, Status>,
    call: CountedCall,
) -> Response
where
    T: Serialize + Send + 'static,
    St: Stream<Item = Result<T, Status>> + Send + Unpin + 'static,
{
    match answer {
        Ok(r) => streamed(r.into_inner().boxed(), call).await,
        Err(s) => streamed(futures::stream::iter([Err::<T, Status>(s)]).boxed(), call).await,
    }
}

/// Routes to one service's unary methods: `"path" => method("Method")`,
/// the path under the API prefix, the service's method, and the gRPC
/// method name the call is counted under.
macro_rules! unary_routes {
    ($router:expr, $prefix:expr, $svc:ident, $service:literal,
     { $($path:literal => $method:ident($grpc:literal)),* $(,)? }) => {{
        let r = $router;
        $(
            let r = r.route(
                &format!("{}/{}", $prefix, $path),
                post(|State(s): S, headers: HeaderMap, body: Bytes| async move {
                    let call = |r| async move { s.$svc.$method(r).await };
                    unary(concat!("/", $service, "/", $grpc), headers, body, call).await
                }),
            );
        )*
        r
    }};
}

/// The first request object of a bidi stream's body. grpc-gateway opens
/// the call first (so it is counted) and passes a decoding error on
/// untyped, so etcd answers it as Unknown (500).
async fn first_request<T: DeserializeOwned>(
    reader: &mut ObjectReader,
    call: CountedCall,
) -> Result<(Option<T>, CountedCall), Response> {
    match reader.next::<T>().await {
        Ok(first) => Ok((first, call)),
        // The call ends as the gateway cancels it (`call` dropped).
        Err(e) => Err(error_response(&Status::unknown(e.message().to_string()))),
    }
}

async fn watch(State(s): S, headers: HeaderMap, body: Body) -> Response {
    let mut reader = ObjectReader::new(body);
    let call = CountedCall::start("/etcdserverpb.Watch/Watch", Code::Cancelled);
    let (first, call) = match first_request::<WatchRequest>(&mut reader, call).await {
        Ok(first) => first,
        Err(resp) => return resp,
    };
    // Each request is handled as it arrives. A watch outlives its
    // requests: etcd keeps the stream open after the client's close-send
    // (the body's end).
    let requests = futures::stream::iter(first.map(Ok))
        .chain(reader.into_stream())
        .chain(futures::stream::pending());
    let creds = Credentials::token(token(&headers));
    streamed(s.watch.open(creds, requests).await, call).await
}

async fn keep_alive(State(s): S, body: Body) -> Response {
    let mut reader = ObjectReader::new(body);
    let call = CountedCall::start("/etcdserverpb.Lease/LeaseKeepAlive", Code::Unavailable);
    let (first, call) = match first_request::<LeaseKeepAliveRequest>(&mut reader, call).await {
        Ok(first) => first,
        Err(resp) => return resp,
    };
    // A keepalive stream ends with its requests.
    let requests = futures::stream::iter(first.map(Ok)).chain(reader.into_stream());
    streamed(s.lease.keep_alive(requests), call).await
}

async fn observe(State(s): S, headers: HeaderMap, body: Bytes) -> Response {
    let msg = match decode_body(&body) {
        Ok(m) => m,
        Err(e) => return error_response(&e),
    };
    let call = CountedCall::start("/v3electionpb.Election/Observe", Code::Cancelled);
    server_streamed(s.election.observe(request(&headers, msg)).await, call).await
}

async fn snapshot(State(s): S, headers: HeaderMap, body: Bytes) -> Response {
    let msg = match decode_body(&body) {
        Ok(m) => m,
        Err(e) => return error_response(&e),
    };
    let call = CountedCall::start("/etcdserverpb.Maintenance/Snapshot", Code::Cancelled);
    server_streamed(s.maintenance.snapshot(request(&headers, msg)).await, call).await
}

/// The routes of one API prefix ("/v3" or "/v3beta").
fn api(p: &str) -> Router<Arc<Services>> {
    let r = Router::new();
    let r = unary_routes!(r, p, kv, "etcdserverpb.KV", {
        "kv/range" => range("Range"),
        "kv/put" => put("Put"),
        "kv/deleterange" => delete_range("DeleteRange"),
        "kv/txn" => txn("Txn"),
        "kv/compaction" => compact("Compact"),
    });
    let r = unary_routes!(r, p, lease, "etcdserverpb.Lease", {
        "lease/grant" => lease_grant("LeaseGrant"),
        "lease/revoke" => lease_revoke("LeaseRevoke"),
        "kv/lease/revoke" => lease_revoke("LeaseRevoke"),
        "lease/timetolive" => lease_time_to_live("LeaseTimeToLive"),
        "kv/lease/timetolive" => lease_time_to_live("LeaseTimeToLive"),
        "lease/leases" => lease_leases("LeaseLeases"),
        "kv/lease/leases" => lease_leases("LeaseLeases"),
    });
    let r = unary_routes!(r, p, cluster, "etcdserverpb.Cluster", {
        "cluster/member/add" => member_add("MemberAdd"),
        "cluster/member/remove" => member_remove("MemberRemove"),
        "cluster/member/update" => member_update("MemberUpdate"),
        "cluster/member/list" => member_list("MemberList"),
        "cluster/member/promote" => member_promote("MemberPromote"),
    });
    let r = unary_routes!(r, p, maintenance, "etcdserverpb.Maintenance", {
        "maintenance/alarm" => alarm("Alarm"),
        "maintenance/status" => status("Status"),
        "maintenance/defragment" => defragment("Defragment"),
        "maintenance/hash" => hash("Hash"),
        "maintenance/transfer-leadership" => move_leader("MoveLeader"),
        "maintenance/downgrade" => downgrade("Downgrade"),
    });
    let r = unary_routes!(r, p, auth, "etcdserverpb.Auth", {
        "auth/enable" => auth_enable("AuthEnable"),
        "auth/disable" => auth_disable("AuthDisable"),
        "auth/status" => auth_status("AuthStatus"),
        "auth/authenticate" => authenticate("Authenticate"),
        "auth/user/add" => user_add("UserAdd"),
        "auth/user/get" => user_get("UserGet"),
        "auth/user/list" => user_list("UserList"),
        "auth/user/delete" => user_delete("UserDelete"),
        "auth/user/changepw" => user_change_password("UserChangePassword"),
        "auth/user/grant" => user_grant_role("UserGrantRole"),
        "auth/user/revoke" => user_revoke_role("UserRevokeRole"),
        "auth/role/add" => role_add("RoleAdd"),
        "auth/role/get" => role_get("RoleGet"),
        "auth/role/list" => role_list("RoleList"),
        "auth/role/delete" => role_delete("RoleDelete"),
        "auth/role/grant" => role_grant_permission("RoleGrantPermission"),
        "auth/role/revoke" => role_revoke_permission("RoleRevokePermission"),
    });
    let r = unary_routes!(r, p, lock, "v3lockpb.Lock", {
        "lock/lock" => lock("Lock"),
        "lock/unlock" => unlock("Unlock"),
    });
    let r = unary_routes!(r, p, election, "v3electionpb.Election", {
        "election/campaign" => campaign("Campaign"),
        "election/proclaim" => proclaim("Proclaim"),
        "election/leader" => leader("Leader"),
        "election/resign" => resign("Resign"),
    });
    r.route(&format!("{p}/watch"), post(watch))
        .route(&format!("{p}/lease/keepalive"), post(keep_alive))
        .route(&format!("{p}/election/observe"), post(observe))
        .route(&format!("{p}/maintenance/snapshot"), post(snapshot))
}

pub fn routes(services: Arc<Services>) -> Router {
    api("/v3").merge(api("/v3beta")).with_state(services)
}
