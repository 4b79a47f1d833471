//! etcd's v3electionpb.Election service, as etcd runs clientv3's election
//! recipe server-side: Campaign waits until the caller's key (by lease) is
//! the first created under `name/`; Proclaim and Resign act only while the
//! caller still holds its key; Observe streams each leader and its values.

use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::api::concurrency::{contender_key, Recipes};
use common::proto::etcdserverpb::request_op::Request as Op;
use common::proto::etcdserverpb::{DeleteRangeRequest, PutRequest, ResponseHeader};
use common::proto::mvccpb::event::EventType;
use common::proto::mvccpb::KeyValue;
use common::proto::v3electionpb::election_server::Election;
use common::proto::v3electionpb::*;

const NOT_LEADER: &str = "election: not leader";
const NO_LEADER: &str = "election: no leader";
const MISSING_LEADER: &str = "\"leader\" field must be provided";

pub struct ElectionService {
    recipes: Recipes,
}

impl ElectionService {
    pub fn new(recipes: Recipes) -> Self {
        ElectionService { recipes }
    }
}

fn prefix_of(name: &[u8]) -> Vec<u8> {
    let mut p = name.to_vec();
    p.push(b'/');
    p
}

impl Recipes {
    async fn proclaim(
        &self,
        leader: &LeaderKey,
        value: &[u8],
    ) -> Result<Option<ResponseHeader>, Status> {
        let put = PutRequest {
            key: leader.key.clone(),
            value: value.to_vec(),
            lease: leader.lease,
            ..Default::default()
        };
        let resp = self
            .if_created_at(&leader.key, leader.rev, Op::RequestPut(put))
            .await?;
        if !resp.succeeded {
            return Err(Status::unknown(NOT_LEADER));
        }
        Ok(resp.header)
    }
}

#[tonic::async_trait]
impl Election for ElectionService {
    async fn campaign(
        &self,
        req: Request<CampaignRequest>,
    ) -> Result<Response<CampaignResponse>, Status> {
        let recipes = self.recipes.acting_for(&req).await?;
        let r = req.into_inner();
        let prefix = prefix_of(&r.name);
        let key = contender_key(&prefix, r.lease);
        let (rev, value, mut header) = recipes.create(&key, r.lease, &r.value).await?;
        let leader = LeaderKey {
            name: r.name.clone(),
            key,
            rev,
            lease: r.lease,
        };
        if value != r.value {
            // Campaigning again with the same lease: take the new value.
            recipes.proclaim(&leader, &r.value).await?;
        }
        recipes.wait_deletes(&prefix, rev - 1).await?;
        recipes.backend.fill(&mut header);
        Ok(Response::new(CampaignResponse {
            header,
            leader: Some(leader),
        }))
    }

    async fn proclaim(
        &self,
        req: Request<ProclaimRequest>,
    ) -> Result<Response<ProclaimResponse>, Status> {
        let recipes = self.recipes.acting_for(&req).await?;
        let r = req.into_inner();
        let leader = r.leader.ok_or_else(|| Status::unknown(MISSING_LEADER))?;
        let mut header = recipes.proclaim(&leader, &r.value).await?;
        recipes.backend.fill(&mut header);
        Ok(Response::new(ProclaimResponse { header }))
    }

    async fn leader(
        &self,
        req: Request<LeaderRequest>,
    ) -> Result<Response<LeaderResponse>, Status> {
        let recipes = self.recipes.acting_for(&req).await?;
        let owner = recipes.owner(&prefix_of(&req.into_inner().name)).await?;
        let kv = owner
            .kvs
            .into_iter()
            .next()
            .ok_or_else(|| Status::unknown(NO_LEADER))?;
        let mut header = owner.header;
        recipes.backend.fill(&mut header);
        Ok(Response::new(LeaderResponse {
            header,
            kv: Some(kv),
        }))
    }

    type ObserveStream = ReceiverStream<Result<LeaderResponse, Status>>;

    async fn observe(
        &self,
        req: Request<LeaderRequest>,
    ) -> Result<Response<Self::ObserveStream>, Status> {
        let recipes = self.recipes.acting_for(&req).await?;
        let prefix = prefix_of(&req.into_inner().name);
        let (tx, rx) = mpsc::channel(16);
        let recipes = recipes.clone();
        tokio::spawn(async move {
            if let Err(e) = observe(&recipes, &prefix, &tx).await {
                let _ = tx.send(Err(common::errors::through_inner_client(e))).await;
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn resign(
        &self,
        req: Request<ResignRequest>,
    ) -> Result<Response<ResignResponse>, Status> {
        let recipes = self.recipes.acting_for(&req).await?;
        let leader = req
            .into_inner()
            .leader
            .ok_or_else(|| Status::unknown(MISSING_LEADER))?;
        let delete = Op::RequestDeleteRange(DeleteRangeRequest {
            key: leader.key.clone(),
            ..Default::default()
        });
        let mut header = recipes
            .if_created_at(&leader.key, leader.rev, delete)
            .await?
            .header;
        recipes.backend.fill(&mut header);
        Ok(Response::new(ResignResponse { header }))
    }
}

/// etcd's Election.observe: send the current leader (or wait for one),
/// then each new value of its key, until it is deleted; repeat.
async fn observe(
    recipes: &Recipes,
    prefix: &[u8],
    tx: &mpsc::Sender<Result<LeaderResponse, Status>>,
) -> Result<(), Status> {
    let send = |kv: KeyValue, revision: i64| {
        let header = recipes.backend.header(revision);
        tx.send(Ok(LeaderResponse {
            header,
            kv: Some(kv),
        }))
    };
    loop {
        let (mut live, _) = recipes.hub.subscribe().await;
        let owner = recipes.owner(prefix).await?;
        let seen_at = owner.header.as_ref().map_or(0, |h| h.revision);
        let mut leader = owner.kvs.into_iter().next();
        if let Some(kv) = &leader {
            if send(kv.clone(), seen_at).await.is_err() {
                return Ok(());
            }
        }
        // Follow: the first put under the prefix if there is no leader, then
        // the leader key's new values until it is deleted.
        'follow: loop {
            let batch = match live.recv().await {
                Ok(b) if b.revision <= seen_at => continue,
                Ok(b) => b,
                Err(RecvError::Lagged(_)) => break 'follow,
                Err(RecvError::Closed) => return Ok(()),
            };
            for e in &batch.events {
                let Some(kv) = &e.kv else { continue };
                let is_put = e.r#type == EventType::Put as i32;
                // The revision to report this event at, if it concerns the leader.
                let report = match &leader {
                    None if is_put && kv.key.starts_with(prefix) => {
                        leader = Some(kv.clone());
                        Some(kv.mod_revision)
                    }
                    Some(l) if kv.key == l.key && is_put => Some(batch.revision),
                    Some(l) if kv.key == l.key => break 'follow,
                    _ => None,
                };
                if let Some(revision) = report {
                    if send(kv.clone(), revision).await.is_err() {
                        return Ok(());
                    }
                }
            }
        }
    }
}
