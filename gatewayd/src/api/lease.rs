//! The etcd v3 Lease service. Grant and revoke go through raftd's lessor
//! (and raft); keepalives are answered by the lessor from memory, so many
//! clients keeping leases alive cost no raft proposals; time-to-live adds
//! the attached keys from storaged.

use std::sync::Arc;

use common::proto::raft::LeaseRevokeProposal;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use crate::backend::{decode_outcome, Backend, Retry};
use crate::watch_hub::WatchHub;
use common::errors::{status_from_wire, unavailable};
use common::proto::etcdserverpb::lease_server::Lease;
use common::proto::etcdserverpb::ResponseHeader;
use common::proto::etcdserverpb::{
    LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveRequest, LeaseKeepAliveResponse,
    LeaseLeasesRequest, LeaseLeasesResponse, LeaseRevokeRequest, LeaseRevokeResponse, LeaseStatus,
    LeaseTimeToLiveRequest, LeaseTimeToLiveResponse,
};
use common::proto::raft::propose_outcome::Outcome as Proposed;
use common::proto::raft::ProposeOutcome;
use common::proto::storage::raft_request::Op;
use common::proto::storage::raft_result::Result as Outcome;
use common::proto::storage::{LeaseKeysRequest, LeasesRequest};

pub struct LeaseService {
    backend: Arc<Backend>,
    hub: Arc<WatchHub>,
}

impl LeaseService {
    /// Answer a stream of keepalives (gRPC's, or the JSON gateway's).
    pub fn keep_alive<S>(
        &self,
        requests: S,
    ) -> ReceiverStream<Result<LeaseKeepAliveResponse, Status>>
    where
        S: futures::Stream<Item = Result<LeaseKeepAliveRequest, Status>> + Send + Unpin + 'static,
    {
        let mut requests = requests;
        let (tx, rx) = mpsc::channel(16);
        let (backend, hub) = (self.backend.clone(), self.hub.clone());
        tokio::spawn(async move {
            while let Some(Ok(k)) = requests.next().await {
                let answer = backend
                    .raft_call(Retry::Idempotent, |mut r| async move {
                        r.lease_keep_alive(k).await
                    })
                    .await
                    .map(|l| {
                        // etcd answers a keepalive for an unknown lease with TTL 0.
                        LeaseKeepAliveResponse {
                            header: backend.header(hub.revision()),
                            id: l.id,
                            ttl: l.ttl.max(0),
                        }
                    });
                let failed = answer.is_err();
                if tx.send(answer).await.is_err() || failed {
                    return;
                }
            }
        });
        ReceiverStream::new(rx)
    }
    pub fn new(backend: Arc<Backend>, hub: Arc<WatchHub>) -> Self {
        LeaseService { backend, hub }
    }
}

impl LeaseService {
    /// The response in the outcome of a lease change the lessor proposed,
    /// with the header's member fields filled in.
    fn applied<R>(
        &self,
        p: ProposeOutcome,
        pick: fn(Outcome) -> Option<R>,
        header: fn(&mut R) -> &mut Option<ResponseHeader>,
    ) -> Result<Response<R>, Status> {
        let outcome = match p.outcome {
            Some(Proposed::Result(bytes)) => decode_outcome(&bytes)?,
            Some(Proposed::Error(code)) => return Err(status_from_wire(code)),
            None => return Err(unavailable("empty lease outcome")),
        };
        self.backend
            .respond(outcome, pick, header)
            .map(Response::new)
    }
}

#[tonic::async_trait]
impl Lease for LeaseService {
    async fn lease_grant(
        &self,
        req: Request<LeaseGrantRequest>,
    ) -> Result<Response<LeaseGrantResponse>, Status> {
        // Any user may grant a lease, but a token that is not valid is
        // refused, as etcd refuses it on every proposal.
        self.backend.who(&req).await?;
        let g = req.into_inner();
        self.backend.check_quota(&Op::LeaseGrant(g)).await?;
        let out = self
            .backend
            .raft_call(
                Retry::OnlyUnsent,
                |mut r| async move { r.lease_grant(g).await },
            )
            .await?;
        let pick = |o| {
            if let Outcome::LeaseGrant(r) = o {
                Some(r)
            } else {
                None
            }
        };
        self.applied(out, pick, |r| &mut r.header)
    }

    async fn lease_revoke(
        &self,
        req: Request<LeaseRevokeRequest>,
    ) -> Result<Response<LeaseRevokeResponse>, Status> {
        let who = self.backend.who(&req).await?;
        // storaged checks at apply that `who` may delete the lease's keys.
        let r = LeaseRevokeProposal {
            id: req.into_inner().id,
            auth: Some(who),
        };
        let out = self
            .backend
            .raft_call(Retry::OnlyUnsent, |mut c| {
                let r = r.clone();
                async move { c.lease_revoke(r).await }
            })
            .await?;
        let pick = |o| {
            if let Outcome::LeaseRevoke(r) = o {
                Some(r)
            } else {
                None
            }
        };
        self.applied(out, pick, |r| &mut r.header)
    }

    type LeaseKeepAliveStream = ReceiverStream<Result<LeaseKeepAliveResponse, Status>>;

    async fn lease_keep_alive(
        &self,
        req: Request<Streaming<LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        Ok(Response::new(self.keep_alive(req.into_inner())))
    }

    async fn lease_time_to_live(
        &self,
        req: Request<LeaseTimeToLiveRequest>,
    ) -> Result<Response<LeaseTimeToLiveResponse>, Status> {
        let t = req.into_inner();
        let l = self
            .backend
            .raft_call(Retry::Idempotent, |mut r| async move {
                r.lease_time_to_live(t).await
            })
            .await?;
        let mut resp = LeaseTimeToLiveResponse {
            header: self.backend.header(self.hub.revision()),
            id: t.id,
            ttl: l.ttl,
            granted_ttl: if l.ttl < 0 { 0 } else { l.granted_ttl },
            keys: Vec::new(),
        };
        if t.keys && l.ttl >= 0 {
            let mut storage = self.backend.storage_client();
            resp.keys = storage
                .lease_keys(LeaseKeysRequest { id: t.id })
                .await?
                .into_inner()
                .keys;
        }
        Ok(Response::new(resp))
    }

    async fn lease_leases(
        &self,
        _req: Request<LeaseLeasesRequest>,
    ) -> Result<Response<LeaseLeasesResponse>, Status> {
        let mut storage = self.backend.storage_client();
        let all = storage.leases(LeasesRequest {}).await?.into_inner();
        let leases = all
            .leases
            .iter()
            .map(|l| LeaseStatus { id: l.id })
            .collect();
        Ok(Response::new(LeaseLeasesResponse {
            header: self.backend.header(all.revision),
            leases,
        }))
    }
}
