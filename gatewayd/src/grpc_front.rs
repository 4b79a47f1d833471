//! The client port's dispatch: a gRPC call goes straight to its etcd
//! service, found by the service name in its path, counted as
//! go-grpc-prometheus counts it and refused on a learner as etcd refuses
//! it; every other request (the HTTP endpoints, the JSON gateway) goes to
//! the axum router. Dispatching here keeps gRPC calls out of axum's router
//! (which they would cross twice) and out of middleware layers that box
//! and clone per call, which saves gatewayd CPU on every call
//! (BENCHMARKS.md).

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::http::{Request, Response};
use futures::future::BoxFuture;
use tonic::body::Body;
use tonic::server::NamedService;
use tower::util::BoxCloneSyncService;
use tower::{Layer, Service};

use crate::backend::Backend;
use crate::learner;
use crate::metrics::{service_and_method, GrpcCall};

/// One gRPC service as the front calls it.
type GrpcService = BoxCloneSyncService<Request<Body>, Response<Body>, Infallible>;

/// The gRPC services by name (`etcdserverpb.KV`, ...) and whom to ask
/// whether this member is a learner. Empty for a proxy, whose axum router
/// serves and counts its own gRPC routes.
#[derive(Clone, Default)]
pub struct GrpcFront {
    /// Shared: the server clones its service for every call it serves.
    services: Arc<Vec<(&'static str, GrpcService)>>,
    backend: Option<Arc<Backend>>,
}

impl GrpcFront {
    pub fn new(backend: Arc<Backend>) -> GrpcFront {
        GrpcFront {
            services: Arc::default(),
            backend: Some(backend),
        }
    }

    /// Serve a generated tonic server (`KvServer::from_arc(..)`, ...) for
    /// calls to its service.
    pub fn serve<S>(mut self, server: S) -> GrpcFront
    where
        S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>
            + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        Arc::make_mut(&mut self.services).push((S::NAME, BoxCloneSyncService::new(server)));
        self
    }
}

impl<H> Layer<H> for GrpcFront {
    type Service = Front<H>;
    fn layer(&self, http: H) -> Front<H> {
        Front {
            grpc: self.clone(),
            http,
        }
    }
}

/// The front in place, with the server's own routes (axum) behind it.
#[derive(Clone)]
pub struct Front<H> {
    grpc: GrpcFront,
    http: H,
}

impl<H> Service<Request<Body>> for Front<H>
where
    H: Service<Request<Body>, Response = Response<Body>, Error = Infallible>,
    H::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response<Body>, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // The gRPC services are tonic's generated servers, always ready.
        self.http.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let path = req.uri().path();
        let (name, _) = service_and_method(path);
        let Some(mut service) = self
            .grpc
            .services
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, s)| s.clone())
        else {
            let grpc = req
                .headers()
                .get(axum::http::header::CONTENT_TYPE)
                .is_some_and(|t| t.as_bytes().starts_with(b"application/grpc"));
            if grpc && self.grpc.backend.is_some() {
                // As grpc-go answers a service it does not have.
                let status = tonic::Status::unimplemented(format!("unknown service {name}"));
                return Box::pin(std::future::ready(Ok(status.into_http())));
            }
            return Box::pin(self.http.call(req));
        };
        let call = GrpcCall::start(req.uri());
        let check_learner = self
            .grpc
            .backend
            .as_ref()
            .filter(|b| b.may_be_learner() && !learner::serves(path))
            .cloned();
        let span = crate::trace::start(&req);
        let answer = crate::trace::within(span.as_ref(), service.call(call.counted_request(req)));
        Box::pin(async move {
            let mut resp = match check_learner {
                Some(backend) if backend.is_learner().await => learner::refusal(),
                _ => answer.await?,
            };
            if is_unknown_method(&resp) {
                resp = unknown_method(call.path());
            } else if let Some(status) = refused_as_out_of_range(&resp) {
                resp = common::errors::as_grpc_go(status).into_http();
            } else if let Some(status) = recipe_refusal(call.path(), &resp) {
                resp = common::errors::through_inner_client(status).into_http();
            }
            let resp = call.counted_response(resp);
            if let Some(span) = span {
                crate::trace::finish(span, call.path(), resp.headers());
            }
            call.finish(resp.headers());
            Ok(resp)
        })
    }
}

/// tonic's answer to a method its service does not have: Unimplemented
/// with no message (the services' own Unimplemented answers carry one).
fn is_unknown_method(resp: &Response<Body>) -> bool {
    let h = resp.headers();
    h.get("grpc-status").is_some_and(|s| s == "12") && !h.contains_key("grpc-message")
}

/// A trailers-only OutOfRange answer: tonic's refusal of an oversized
/// request (etcd's own OutOfRange answers pass through unchanged).
fn refused_as_out_of_range(resp: &Response<Body>) -> Option<tonic::Status> {
    let h = resp.headers();
    if h.get("grpc-status")? != "11" {
        return None;
    }
    tonic::Status::from_header_map(h)
}

/// A trailers-only refusal from the lock or election service.
fn recipe_refusal(path: &str, resp: &Response<Body>) -> Option<tonic::Status> {
    let recipe = path.starts_with("/v3lockpb.Lock/") || path.starts_with("/v3electionpb.Election/");
    if !recipe || resp.headers().get("grpc-status")? == "0" {
        return None;
    }
    tonic::Status::from_header_map(resp.headers())
}

/// grpc-go's answer to a method its service does not have.
fn unknown_method(path: &str) -> Response<Body> {
    let (service, method) = service_and_method(path);
    tonic::Status::unimplemented(format!("unknown method {method} for service {service}"))
        .into_http()
}
