//! The triad.peer.v1 service on raftd's peer port: other members' raftd
//! deliver openraft's messages here. Every call is admitted by
//! `peer_auth` (the sender's cluster, member ID, proof and certificate)
//! and its messages must come from that sender; messages from another
//! cluster are refused, as etcd refuses a peer with a different cluster ID.

use std::io;

use tonic::{Request, Response, Status, Streaming};

use std::sync::Arc;

use crate::codec;
use crate::members;
use crate::peer_auth::PeerAuth;
use crate::removal::Removal;
use crate::types::{Snapshot, SnapshotMeta, StoragedSnapshot, Vote};
use crate::Raft;
use common::errors::EtcdError;
use common::proto::etcdserverpb::{HashKvRequest, HashKvResponse};
use common::proto::peer::raft_peer_server::RaftPeer;
use common::proto::peer::{ClusterRequest, ClusterResponse, RaftMessage, SnapshotChunk};
use common::proto::storage::storage_client::StorageClient;
use common::proto::storage::SnapshotChunk as StorageChunk;
use openraft::async_runtime::WatchReceiver;
use prost::Message;
use tonic::transport::Channel;

pub struct RaftPeerService {
    raft: Raft,
    cluster_id: u64,
    member_id: u64,
    /// This member's storaged: a received snapshot is streamed into it.
    storage: StorageClient<Channel>,
    removal: Arc<Removal>,
    auth: Arc<PeerAuth>,
}

impl RaftPeerService {
    pub fn new(
        raft: Raft,
        cluster_id: u64,
        member_id: u64,
        storage: StorageClient<Channel>,
        removal: Arc<Removal>,
        auth: Arc<PeerAuth>,
    ) -> Self {
        RaftPeerService {
            raft,
            cluster_id,
            member_id,
            storage,
            removal,
            auth,
        }
    }

    /// Admit a call whose messages say they come from `from`.
    fn admit<T>(&self, req: &Request<T>, cluster_id: u64, from: u64) -> Result<(), Status> {
        self.check_cluster(cluster_id)?;
        self.auth.admit_raft(req, &self.raft, from)
    }

    /// A removed member campaigning is told so. (Only elections: a leader
    /// that removed itself keeps replicating until the change commits, and
    /// learns of its removal from its own log.)
    fn check_candidate(&self, req: &Request<RaftMessage>) -> Result<(), Status> {
        self.removal.check_sender(&self.raft, req.get_ref().from)
    }

    fn check_cluster(&self, cluster_id: u64) -> Result<(), Status> {
        if cluster_id != self.cluster_id {
            return Err(Status::failed_precondition(format!(
                "request cluster ID mismatch (got {:x} want {:x})",
                cluster_id, self.cluster_id
            )));
        }
        Ok(())
    }

    /// Decode an openraft request from a checked envelope, hand it to
    /// `raft`, and wrap the answer.
    async fn handle<Req, Resp, E, F, Fut>(
        &self,
        req: Request<RaftMessage>,
        raft: F,
    ) -> Result<Response<RaftMessage>, Status>
    where
        Req: serde::de::DeserializeOwned,
        Resp: serde::Serialize,
        E: std::fmt::Display,
        F: FnOnce(Raft, Req) -> Fut,
        Fut: std::future::Future<Output = Result<Resp, E>>,
    {
        self.admit(&req, req.get_ref().cluster_id, req.get_ref().from)?;
        let msg = req.into_inner();
        let traffic = crate::metrics::PeerTraffic::from(msg.from);
        traffic.bytes(msg.body.len());
        let rpc = codec::decode(&msg.body).map_err(|e| {
            traffic.failed();
            bad_body(e)
        })?;
        let resp = raft(self.raft.clone(), rpc).await.map_err(raft_failed)?;
        let reply = self.reply(&resp)?;
        crate::metrics::PeerTraffic::to(msg.from).bytes(reply.get_ref().body.len());
        Ok(reply)
    }

    fn reply<T: serde::Serialize>(&self, v: &T) -> Result<Response<RaftMessage>, Status> {
        let body = codec::encode(v).map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(RaftMessage {
            cluster_id: self.cluster_id,
            from: self.member_id,
            body: body.into(),
        }))
    }
}

fn bad_body(e: io::Error) -> Status {
    Status::invalid_argument(format!("undecodable raft message: {e}"))
}

fn raft_failed(e: impl std::fmt::Display) -> Status {
    Status::unavailable(format!("raft stopped: {e}"))
}

#[tonic::async_trait]
impl RaftPeer for RaftPeerService {
    async fn append_entries(
        &self,
        req: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        self.handle(
            req,
            |raft, rpc| async move { raft.append_entries(rpc).await },
        )
        .await
    }

    type StreamAppendStream =
        std::pin::Pin<Box<dyn futures::Stream<Item = Result<RaftMessage, Status>> + Send>>;

    /// openraft's pipelined append: requests are handed over as they
    /// arrive, results sent back in order.
    async fn stream_append(
        &self,
        req: Request<Streaming<RaftMessage>>,
    ) -> Result<Response<Self::StreamAppendStream>, Status> {
        use futures::StreamExt;
        let expected = self.cluster_id;
        let sender = self.auth.caller_id(&req);
        self.admit(&req, expected, sender)?;
        // Undecodable or foreign messages end the input; the leader sees
        // the stream end and starts over.
        let traffic = crate::metrics::PeerTraffic::from(sender);
        let input = tokio_stream::StreamExt::map_while(req.into_inner(), move |m| {
            let Ok(m) = m else {
                traffic.failed();
                return None;
            };
            traffic.bytes(m.body.len());
            if m.cluster_id != expected || m.from != sender {
                traffic.failed();
                return None;
            }
            codec::decode::<openraft::raft::AppendEntriesRequest<crate::types::TypeConfig>>(&m.body)
                .ok()
        });
        let (cluster_id, member_id) = (self.cluster_id, self.member_id);
        let replies = crate::metrics::PeerTraffic::to(sender);
        let out = self.raft.stream_append(input).map(move |r| match r {
            Ok(result) => codec::encode(&result)
                .map(|body| {
                    replies.bytes(body.len());
                    RaftMessage {
                        cluster_id,
                        from: member_id,
                        body: body.into(),
                    }
                })
                .map_err(|e| Status::internal(e.to_string())),
            Err(fatal) => Err(raft_failed(fatal)),
        });
        Ok(Response::new(Box::pin(out)))
    }

    async fn vote(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        self.check_candidate(&req)?;
        self.handle(req, |raft, rpc| async move { raft.vote(rpc).await })
            .await
    }

    async fn pre_vote(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        self.check_candidate(&req)?;
        self.handle(req, |raft, rpc| async move { raft.pre_vote(rpc).await })
            .await
    }

    async fn transfer_leader(
        &self,
        req: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        self.handle(req, |raft, rpc| async move {
            raft.handle_transfer_leader(rpc).await
        })
        .await
    }

    async fn install_snapshot(
        &self,
        req: Request<Streaming<SnapshotChunk>>,
    ) -> Result<Response<RaftMessage>, Status> {
        let sender = self.auth.caller_id(&req);
        self.admit(&req, self.cluster_id, sender)?;
        let started = std::time::Instant::now();
        let _inflight =
            crate::metrics::InFlight::new(&crate::metrics::SNAPSHOT_RECEIVES_INFLIGHT, sender);
        let received = self.receive_snapshot(req).await;
        crate::metrics::snapshot_received(sender, received.is_ok(), started.elapsed());
        received
    }

    async fn hash_kv(
        &self,
        req: Request<HashKvRequest>,
    ) -> Result<Response<HashKvResponse>, Status> {
        self.admit(&req, self.cluster_id, self.auth.caller_id(&req))?;
        let req = req.into_inner();
        // The asking leader may be ahead: give this member a moment to
        // apply the revision.
        let mut storage = self.storage.clone();
        for _ in 0..40 {
            match storage.hash_kv(req).await {
                Err(s) if s.message() == EtcdError::FutureRev.to_string() => {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
                other => return other,
            }
        }
        Err(EtcdError::FutureRev.into())
    }

    async fn cluster(
        &self,
        _req: Request<ClusterRequest>,
    ) -> Result<Response<ClusterResponse>, Status> {
        let members = members::list(&self.raft);
        let members = serde_json::to_vec(&members).map_err(|e| Status::internal(e.to_string()))?;
        let last_log_index = self.raft.metrics().borrow_watched().last_log_index;
        Ok(Response::new(ClusterResponse {
            cluster_id: self.cluster_id,
            members,
            last_log_index: last_log_index.unwrap_or(0),
        }))
    }
}

impl RaftPeerService {
    /// A snapshot streamed into storaged's staging area, then installed.
    async fn receive_snapshot(
        &self,
        req: Request<Streaming<SnapshotChunk>>,
    ) -> Result<Response<RaftMessage>, Status> {
        let sender = self.auth.caller_id(&req);
        let traffic = crate::metrics::PeerTraffic::from(sender);
        let saving = std::time::Instant::now();
        let mut chunks = req.into_inner();
        let head = chunks
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("empty snapshot stream"))?;
        self.check_cluster(head.cluster_id)?;
        if head.from != sender {
            return Err(Status::permission_denied(
                "a snapshot sent for another member",
            ));
        }
        let vote: Vote = codec::decode(&head.vote).map_err(bad_body)?;
        let meta: SnapshotMeta = codec::decode(&head.meta).map_err(bad_body)?;
        tracing::info!(last = ?meta.last_log_id, from = format!("{:x}", head.from), "receiving a snapshot");
        // Into storaged's staging area as it arrives.
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        let pump = async move {
            while let Some(c) = chunks.message().await? {
                traffic.bytes(c.data.len());
                let chunk = StorageChunk::decode(c.data.as_slice())
                    .map_err(|e| Status::invalid_argument(format!("bad snapshot chunk: {e}")))?;
                if tx.send(chunk).await.is_err() {
                    break;
                }
            }
            Ok::<(), Status>(())
        };
        let mut storage = self.storage.clone();
        let receive = storage.receive_snapshot(tokio_stream::wrappers::ReceiverStream::new(rx));
        let (pumped, received) = tokio::join!(pump, receive);
        pumped?;
        let staged = received?.into_inner();
        tracing::info!(applied = ?staged.applied, "snapshot staged in storaged");
        crate::metrics::SNAP_DB_SAVE.observe(saving.elapsed());
        let snapshot = Snapshot {
            meta,
            snapshot: StoragedSnapshot,
        };
        let resp = self
            .raft
            .install_full_snapshot(vote, snapshot)
            .await
            .map_err(raft_failed)?;
        self.reply(&resp)
    }
}
