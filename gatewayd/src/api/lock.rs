//! etcd's v3lockpb.Lock service: Lock waits until the caller (by lease)
//! owns `name`, Unlock deletes the returned key.

use tonic::{Request, Response, Status};

use crate::api::concurrency::{contender_key, Recipes};
use common::proto::etcdserverpb::DeleteRangeRequest;
use common::proto::storage::raft_request::Op;
use common::proto::storage::raft_result::Result as Outcome;
use common::proto::storage::RaftRequest;
use common::proto::v3lockpb::lock_server::Lock;
use common::proto::v3lockpb::{LockRequest, LockResponse, UnlockRequest, UnlockResponse};

pub struct LockService {
    recipes: Recipes,
}

impl LockService {
    pub fn new(recipes: Recipes) -> Self {
        LockService { recipes }
    }
}

#[tonic::async_trait]
impl Lock for LockService {
    async fn lock(&self, req: Request<LockRequest>) -> Result<Response<LockResponse>, Status> {
        let recipes = self.recipes.acting_for(&req).await?;
        let r = req.into_inner();
        let mut prefix = r.name.clone();
        prefix.push(b'/');
        let key = contender_key(&prefix, r.lease);
        let (my_rev, _, mut header) = recipes.create(&key, r.lease, b"").await?;
        let owner = recipes.owner(&prefix).await?;
        if owner.kvs.first().map(|kv| kv.create_revision) != Some(my_rev) {
            header = recipes.wait_deletes(&prefix, my_rev - 1).await?;
        }
        recipes.backend.fill(&mut header);
        Ok(Response::new(LockResponse { header, key }))
    }

    async fn unlock(
        &self,
        req: Request<UnlockRequest>,
    ) -> Result<Response<UnlockResponse>, Status> {
        let who = self.recipes.backend.who(&req).await?;
        let key = req.into_inner().key;
        let op = Op::DeleteRange(DeleteRangeRequest {
            key,
            ..Default::default()
        });
        let backend = &self.recipes.backend;
        let outcome = backend
            .propose(RaftRequest {
                op: Some(op),
                auth: Some(who),
                trace_parent: String::new(),
            })
            .await?;
        let pick = |o| {
            if let Outcome::DeleteRange(d) = o {
                Some(d)
            } else {
                None
            }
        };
        let deleted = backend.respond(outcome, pick, |d| &mut d.header)?;
        Ok(Response::new(UnlockResponse {
            header: deleted.header,
        }))
    }
}
