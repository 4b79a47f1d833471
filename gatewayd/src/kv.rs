//! The etcd v3 KV service: validate as etcd does, then writes through raft
//! and reads from storaged (after a read index unless serializable).

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::backend::Backend;
use crate::validate;
use common::errors::unavailable;
use common::proto::etcdserverpb::kv_server::Kv;
use common::proto::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, PutRequest,
    PutResponse, RangeRequest, RangeResponse, TxnRequest, TxnResponse,
};
use common::proto::storage::raft_request::Op;
use common::proto::storage::raft_result::Result as Outcome;
use common::proto::storage::RaftRequest;

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

    async fn write(&self, op: Op) -> Result<Outcome, Status> {
        self.backend.propose(RaftRequest { op: Some(op) }).await
    }
}

fn mismatched(what: &str) -> Status {
    unavailable(format!(
        "apply returned a result of the wrong kind for {what}"
    ))
}

#[tonic::async_trait]
impl Kv for KvService {
    async fn range(&self, req: Request<RangeRequest>) -> Result<Response<RangeResponse>, Status> {
        let r = req.into_inner();
        validate::check_range(&r)?;
        if !r.serializable {
            self.backend.read_index().await?;
        }
        let mut resp = self.backend.range(r).await?;
        self.backend.fill(&mut resp.header);
        Ok(Response::new(resp))
    }

    async fn put(&self, req: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        let p = req.into_inner();
        validate::check_put(&p)?;
        match self.write(Op::Put(p)).await? {
            Outcome::Put(mut resp) => {
                self.backend.fill(&mut resp.header);
                Ok(Response::new(resp))
            }
            _ => Err(mismatched("put")),
        }
    }

    async fn delete_range(
        &self,
        req: Request<DeleteRangeRequest>,
    ) -> Result<Response<DeleteRangeResponse>, Status> {
        let d = req.into_inner();
        validate::check_delete(&d)?;
        match self.write(Op::DeleteRange(d)).await? {
            Outcome::DeleteRange(mut resp) => {
                self.backend.fill(&mut resp.header);
                Ok(Response::new(resp))
            }
            _ => Err(mismatched("delete range")),
        }
    }

    async fn txn(&self, req: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        let t = req.into_inner();
        validate::check_txn(&t, self.max_txn_ops)?;
        match self.write(Op::Txn(t)).await? {
            Outcome::Txn(mut resp) => {
                self.backend.fill(&mut resp.header);
                Ok(Response::new(resp))
            }
            _ => Err(mismatched("txn")),
        }
    }

    async fn compact(
        &self,
        req: Request<CompactionRequest>,
    ) -> Result<Response<CompactionResponse>, Status> {
        let c = req.into_inner();
        let (revision, physical) = (c.revision, c.physical);
        match self.write(Op::Compaction(c)).await? {
            Outcome::Compaction(mut resp) => {
                if physical {
                    self.backend.wait_compaction(revision).await?;
                }
                self.backend.fill(&mut resp.header);
                Ok(Response::new(resp))
            }
            _ => Err(mismatched("compaction")),
        }
    }
}
