//! etcd's concurrency recipes, run server-side for the Lock (and Election)
//! services exactly as etcd's v3lock runs clientv3's mutex: each contender
//! creates `prefix + lease-id-in-hex` under its lease, and owns the prefix
//! once every key created before its own is gone.

use std::sync::Arc;

use tokio::sync::broadcast::error::RecvError;
use tonic::Status;

use crate::backend::Backend;
use crate::watch_hub::WatchHub;
use common::errors::unavailable;
use common::keys::prefix_end;
use common::proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use common::proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use common::proto::etcdserverpb::request_op::Request as Op;
use common::proto::etcdserverpb::response_op::Response as OpResponse;
use common::proto::etcdserverpb::{
    Compare, PutRequest, RangeRequest, RangeResponse, RequestOp, ResponseHeader, TxnRequest,
    TxnResponse,
};
use common::proto::mvccpb::event::EventType;
use common::proto::storage::raft_request::Op as RaftOp;
use common::proto::storage::raft_result::Result as Outcome;
use common::proto::storage::{AuthInfo, RaftRequest};

/// The recipes, run with the permissions of one client (`who`).
#[derive(Clone)]
pub struct Recipes {
    pub backend: Arc<Backend>,
    pub hub: Arc<WatchHub>,
    pub who: AuthInfo,
}

/// The key a contender creates: etcd's `fmt.Sprintf("%s%x", prefix, lease)`.
pub fn contender_key(prefix: &[u8], lease: i64) -> Vec<u8> {
    let mut k = prefix.to_vec();
    k.extend_from_slice(format!("{lease:x}").as_bytes());
    k
}

impl Recipes {
    /// These recipes acting for the sender of `req`.
    pub async fn acting_for<T>(&self, req: &tonic::Request<T>) -> Result<Recipes, Status> {
        Ok(Recipes {
            who: self.backend.who(req).await?,
            ..self.clone()
        })
    }

    pub async fn txn(&self, t: TxnRequest) -> Result<TxnResponse, Status> {
        match self
            .backend
            .propose(RaftRequest {
                op: Some(RaftOp::Txn(t)),
                auth: Some(self.who.clone()),
                trace_parent: String::new(),
            })
            .await?
        {
            Outcome::Txn(r) => Ok(r),
            _ => Err(unavailable("apply returned a result of the wrong kind")),
        }
    }

    async fn range(&self, r: RangeRequest) -> Result<RangeResponse, Status> {
        self.backend.read_index().await?;
        self.backend.range(r, Some(&self.who)).await
    }

    /// Create `key` (under `lease`, with `value`) unless it exists. Returns
    /// the key's create revision, its current value and the txn's header.
    pub async fn create(
        &self,
        key: &[u8],
        lease: i64,
        value: &[u8],
    ) -> Result<(i64, Vec<u8>, Option<ResponseHeader>), Status> {
        let absent = Compare {
            result: CompareResult::Equal as i32,
            target: CompareTarget::Create as i32,
            key: key.to_vec(),
            target_union: Some(TargetUnion::CreateRevision(0)),
            range_end: Vec::new(),
        };
        let put = PutRequest {
            key: key.to_vec(),
            value: value.to_vec(),
            lease,
            ..Default::default()
        };
        let get = RangeRequest {
            key: key.to_vec(),
            ..Default::default()
        };
        let resp = self
            .txn(TxnRequest {
                compare: vec![absent],
                success: vec![
                    RequestOp {
                        request: Some(Op::RequestPut(put)),
                    },
                    RequestOp {
                        request: Some(Op::RequestRange(get.clone())),
                    },
                ],
                failure: vec![RequestOp {
                    request: Some(Op::RequestRange(get)),
                }],
            })
            .await?;
        let kv = resp.responses.iter().find_map(|r| match &r.response {
            Some(OpResponse::ResponseRange(rr)) => rr.kvs.first().cloned(),
            _ => None,
        });
        let kv = kv.ok_or_else(|| unavailable("contender key vanished"))?;
        Ok((kv.create_revision, kv.value, resp.header))
    }

    /// Run `then` only if `key` still has create revision `rev` (the caller
    /// still holds that key): etcd's leader-guarded Proclaim and Resign.
    pub async fn if_created_at(
        &self,
        key: &[u8],
        rev: i64,
        then: Op,
    ) -> Result<TxnResponse, Status> {
        let held = Compare {
            result: CompareResult::Equal as i32,
            target: CompareTarget::Create as i32,
            key: key.to_vec(),
            target_union: Some(TargetUnion::CreateRevision(rev)),
            range_end: Vec::new(),
        };
        self.txn(TxnRequest {
            compare: vec![held],
            success: vec![RequestOp {
                request: Some(then),
            }],
            failure: vec![],
        })
        .await
    }

    /// The first-created key under `prefix` (the owner), if any.
    pub async fn owner(&self, prefix: &[u8]) -> Result<RangeResponse, Status> {
        self.range(RangeRequest {
            key: prefix.to_vec(),
            range_end: prefix_end(prefix),
            sort_order: SortOrder::Ascend as i32,
            sort_target: SortTarget::Create as i32,
            limit: 1,
            ..Default::default()
        })
        .await
    }

    /// etcd's waitDeletes: until no key under `prefix` was created at or
    /// before `max_create`. Returns the header of the last check.
    pub async fn wait_deletes(
        &self,
        prefix: &[u8],
        max_create: i64,
    ) -> Result<Option<ResponseHeader>, Status> {
        loop {
            // Subscribe before looking, so no delete can slip in between.
            let (mut live, _) = self.hub.subscribe().await;
            let last = self
                .range(RangeRequest {
                    key: prefix.to_vec(),
                    range_end: prefix_end(prefix),
                    max_create_revision: max_create,
                    sort_order: SortOrder::Descend as i32,
                    sort_target: SortTarget::Create as i32,
                    limit: 1,
                    ..Default::default()
                })
                .await?;
            let Some(kv) = last.kvs.first() else {
                return Ok(last.header);
            };
            let seen_at = last.header.as_ref().map_or(0, |h| h.revision);
            'wait: loop {
                match live.recv().await {
                    Ok(b) if b.revision <= seen_at => {}
                    Ok(b) => {
                        let gone = b.events.iter().any(|e| {
                            e.r#type == EventType::Delete as i32
                                && e.kv.as_ref().is_some_and(|d| d.key == kv.key)
                        });
                        if gone {
                            break 'wait;
                        }
                    }
                    Err(RecvError::Lagged(_)) => break 'wait, // look again
                    Err(RecvError::Closed) => return Err(unavailable("watch feed closed")),
                }
            }
        }
    }
}
