//! The L7 proxy's KV service: requests namespaced and sent to the cluster;
//! serializable ranges answered from the cache when they can be; every
//! write invalidates what it touches before its answer goes back.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::cache::RangeCache;
use super::namespace::Namespace;
use super::upstream::{credentials, unary, Upstream};
use crate::retry::Retry;
use common::proto::etcdserverpb::kv_client::KvClient;
use common::proto::etcdserverpb::kv_server::Kv;
use common::proto::etcdserverpb::request_op::Request as Op;
use common::proto::etcdserverpb::*;

pub struct KvProxy {
    upstream: Arc<Upstream>,
    ns: Namespace,
    cache: RangeCache,
}

impl KvProxy {
    pub fn new(upstream: Arc<Upstream>, ns: Namespace) -> Self {
        KvProxy {
            upstream,
            ns,
            cache: RangeCache::default(),
        }
    }

    /// Drop cached ranges every write of a txn (either branch) may touch.
    fn invalidate_txn(&self, t: &TxnRequest) {
        for op in t.success.iter().chain(&t.failure) {
            match &op.request {
                Some(Op::RequestPut(p)) => self.cache.invalidate(&p.key, b""),
                Some(Op::RequestDeleteRange(d)) => self.cache.invalidate(&d.key, &d.range_end),
                Some(Op::RequestTxn(t)) => self.invalidate_txn(t),
                Some(Op::RequestRange(_)) | None => {}
            }
        }
    }
}

type RangeChunks = std::pin::Pin<
    Box<dyn futures::Stream<Item = Result<RangeStreamResponse, Status>> + Send + 'static>,
>;

#[tonic::async_trait]
impl Kv for KvProxy {
    type RangeStreamStream = RangeChunks;

    /// As etcd's grpc-proxy: streamed ranges are the cluster's alone.
    async fn range_stream(
        &self,
        _req: Request<RangeRequest>,
    ) -> Result<Response<RangeChunks>, Status> {
        Err(Status::unimplemented(
            "RangeStream is not supported by the grpc proxy",
        ))
    }

    async fn range(&self, req: Request<RangeRequest>) -> Result<Response<RangeResponse>, Status> {
        let (md, mut r) = (req.metadata().clone(), req.into_inner());
        self.ns.range(&mut r)?;
        let who = credentials(&md);
        let miss = if r.serializable {
            match self.cache.get(&r, who.as_deref()) {
                Ok(mut hit) => {
                    self.ns.strip_kvs(&mut hit.kvs);
                    return Ok(Response::new(hit));
                }
                Err(miss) => Some(miss),
            }
        } else {
            None
        };
        let mut resp = unary!(self.upstream, Retry::Idempotent, KvClient::range, md, r)?;
        if let Some(miss) = miss {
            self.cache.put(miss, &r, &resp);
        }
        self.ns.strip_kvs(&mut resp.kvs);
        Ok(Response::new(resp))
    }

    async fn put(&self, req: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        let (md, mut r) = (req.metadata().clone(), req.into_inner());
        self.ns.put(&mut r)?;
        let result = unary!(self.upstream, Retry::OnlyUnsent, KvClient::put, md, r);
        // Also on failure: a write lost in flight may have been applied.
        self.cache.invalidate(&r.key, b"");
        let mut resp = result?;
        if let Some(kv) = &mut resp.prev_kv {
            self.ns.strip(&mut kv.key);
        }
        Ok(Response::new(resp))
    }

    async fn delete_range(
        &self,
        req: Request<DeleteRangeRequest>,
    ) -> Result<Response<DeleteRangeResponse>, Status> {
        let (md, mut r) = (req.metadata().clone(), req.into_inner());
        self.ns.delete(&mut r)?;
        let result = unary!(
            self.upstream,
            Retry::OnlyUnsent,
            KvClient::delete_range,
            md,
            r
        );
        self.cache.invalidate(&r.key, &r.range_end);
        let mut resp = result?;
        self.ns.strip_kvs(&mut resp.prev_kvs);
        Ok(Response::new(resp))
    }

    async fn txn(&self, req: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        let (md, mut r) = (req.metadata().clone(), req.into_inner());
        self.ns.txn(&mut r)?;
        let result = unary!(self.upstream, Retry::OnlyUnsent, KvClient::txn, md, r);
        self.invalidate_txn(&r);
        let mut resp = result?;
        self.ns.txn_response(&mut resp);
        Ok(Response::new(resp))
    }

    async fn compact(
        &self,
        req: Request<CompactionRequest>,
    ) -> Result<Response<CompactionResponse>, Status> {
        let (md, r) = (req.metadata().clone(), req.into_inner());
        let resp = unary!(self.upstream, Retry::OnlyUnsent, KvClient::compact, md, r)?;
        self.cache.compacted(r.revision);
        Ok(Response::new(resp))
    }
}
