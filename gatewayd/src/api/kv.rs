//! The etcd v3 KV service: validate as etcd does, then writes through raft
//! and reads from storaged (after a read index unless serializable).

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::range_stream;
use crate::backend::Backend;
use common::proto::etcdserverpb::kv_server::Kv;
use common::proto::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, PutRequest,
    PutResponse, RangeRequest, RangeResponse, ResponseHeader, TxnRequest, TxnResponse,
};
use common::proto::storage::raft_request::Op;
use common::proto::storage::raft_result::Result as Outcome;
use common::proto::storage::{AuthInfo, RaftRequest};
use common::validate;

pub struct KvService {
    backend: Arc<Backend>,
    max_txn_ops: usize,
}

impl KvService {
    pub fn new(backend: Arc<Backend>, max_txn_ops: usize) -> Self {
        KvService {
            backend,
            max_txn_ops,
        }
    }

    /// A range request checked as etcd checks it, on a member that may
    /// serve it, after a read index unless it is serializable.
    async fn checked_range(
        &self,
        req: Request<RangeRequest>,
    ) -> Result<(AuthInfo, RangeRequest), Status> {
        let who = self.backend.who(&req).await?;
        let r = req.into_inner();
        validate::check_range(&r)?;
        if !r.serializable {
            self.backend.refuse_learner().await?;
            self.backend.read_index().await?;
        }
        Ok((who, r))
    }

    /// Propose `op` and take its response out of storaged's outcome, with
    /// the header's member fields filled in.
    async fn write<R>(
        &self,
        who: AuthInfo,
        op: Op,
        pick: fn(Outcome) -> Option<R>,
        header: fn(&mut R) -> &mut Option<ResponseHeader>,
    ) -> Result<R, Status> {
        self.backend.check_quota(&op).await?;
        let req = RaftRequest {
            op: Some(op),
            auth: Some(who),
            trace_parent: String::new(),
        };
        let outcome = self.backend.propose(req).await?;
        self.backend.respond(outcome, pick, header)
    }
}

#[tonic::async_trait]
impl Kv for KvService {
    async fn range(&self, req: Request<RangeRequest>) -> Result<Response<RangeResponse>, Status> {
        let (who, r) = self.checked_range(req).await?;
        let mut resp = self.backend.range(r, Some(&who)).await?;
        self.backend.fill(&mut resp.header);
        Ok(Response::new(resp))
    }

    type RangeStreamStream = range_stream::Chunks;

    async fn range_stream(
        &self,
        req: Request<RangeRequest>,
    ) -> Result<Response<range_stream::Chunks>, Status> {
        // etcd's order: the request's own checks, then what streams lack.
        validate::check_range(req.get_ref())?;
        range_stream::check_streamable(req.get_ref())?;
        let (who, r) = self.checked_range(req).await?;
        let max_bytes = self.backend.max_request_bytes;
        Ok(Response::new(range_stream::serve(
            self.backend.clone(),
            who,
            r,
            max_bytes,
        )))
    }

    async fn put(&self, req: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        let who = self.backend.who(&req).await?;
        let p = req.into_inner();
        validate::check_put(&p)?;
        let pick = |o| {
            if let Outcome::Put(r) = o {
                Some(r)
            } else {
                None
            }
        };
        self.write(who, Op::Put(p), pick, |r| &mut r.header)
            .await
            .map(Response::new)
    }

    async fn delete_range(
        &self,
        req: Request<DeleteRangeRequest>,
    ) -> Result<Response<DeleteRangeResponse>, Status> {
        let who = self.backend.who(&req).await?;
        let d = req.into_inner();
        validate::check_delete(&d)?;
        let pick = |o| {
            if let Outcome::DeleteRange(r) = o {
                Some(r)
            } else {
                None
            }
        };
        self.write(who, Op::DeleteRange(d), pick, |r| &mut r.header)
            .await
            .map(Response::new)
    }

    async fn txn(&self, req: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        let who = self.backend.who(&req).await?;
        let t = req.into_inner();
        validate::check_txn(&t, self.max_txn_ops)?;
        let pick = |o| {
            if let Outcome::Txn(r) = o {
                Some(r)
            } else {
                None
            }
        };
        self.write(who, Op::Txn(t), pick, |r| &mut r.header)
            .await
            .map(Response::new)
    }

    async fn compact(
        &self,
        req: Request<CompactionRequest>,
    ) -> Result<Response<CompactionResponse>, Status> {
        let who = self.backend.who(&req).await?;
        let c = req.into_inner();
        let (revision, physical) = (c.revision, c.physical);
        let pick = |o| {
            if let Outcome::Compaction(r) = o {
                Some(r)
            } else {
                None
            }
        };
        let resp = self
            .write(who, Op::Compaction(c), pick, |r| &mut r.header)
            .await?;
        if physical {
            self.backend.wait_compaction(revision).await?;
        }
        Ok(Response::new(resp))
    }
}
