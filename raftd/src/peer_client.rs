//! Outgoing calls to the other members' raftd over TCP (their peer URLs):
//! openraft's messages postcard-encoded in triad.peer.v1 envelopes that
//! carry the cluster ID and the sender, every call with this member's
//! credentials (`peer_auth`); one lazily connected channel per target. The
//! peers' round-trip times are probed here too.

use std::time::Duration;

use futures::{FutureExt, Stream, StreamExt};
use openraft::base::{BoxFuture, BoxStream};
use openraft::error::{
    NetworkError, RPCError, ReplicationClosed, StreamingError, Timeout, Unreachable,
};
use openraft::network::{RPCOption, RPCTypes, RaftNetworkFactory};
use openraft::raft::StreamAppendResult;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::raft::{TransferLeaderRequest, TransferLeaderResponse};
use openraft::RaftNetworkV2;
use serde::{de::DeserializeOwned, Serialize};
use tonic::transport::{Channel, Endpoint};
use tonic::Code;

use crate::append_mux::AppendMux;
use crate::codec;
use crate::types::{MemberNode, NodeId, Snapshot, StoragedSnapshot, TypeConfig, Vote};
use crate::Raft;
use common::proto::peer::raft_peer_client::RaftPeerClient;
use common::proto::peer::{RaftMessage, SnapshotChunk};
use common::proto::storage::storage_client::StorageClient;
use common::proto::storage::SnapshotRequest;
use openraft::async_runtime::WatchReceiver;
use prost::Message;

/// A lazily connected channel to a member's peer URL (the first one that
/// parses). Connection failures surface on first use.
pub fn peer_channel(urls: &[String]) -> Result<Channel, String> {
    let url = urls
        .first()
        .ok_or_else(|| "member has no peer URL".to_string())?;
    let bad = |e: tonic::transport::Error| format!("bad peer URL {url:?}: {e}");
    if let (Some(rest), Some(config)) = (url.strip_prefix("https://"), UNVERIFIED_PEER_TLS.get()) {
        // tonic adds no TLS to an http URI; the connector does it.
        let endpoint = tune(Endpoint::from_shared(format!("http://{rest}")).map_err(bad)?);
        return Ok(endpoint.connect_with_connector_lazy(common::tls::connector(config.clone())));
    }
    let mut endpoint = tune(Endpoint::from_shared(url.clone()).map_err(bad)?);
    if url.starts_with("https://") {
        let tls = PEER_TLS
            .get()
            .cloned()
            .unwrap_or_else(tonic::transport::ClientTlsConfig::new);
        endpoint = endpoint
            .tls_config(tls)
            .map_err(|e| format!("peer TLS for {url}: {e}"))?;
    }
    Ok(endpoint.connect_lazy())
}

/// Timeouts and keepalives of every peer connection.
fn tune(endpoint: Endpoint) -> Endpoint {
    endpoint
        .connect_timeout(Duration::from_secs(1))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(5))
        .keep_alive_timeout(Duration::from_secs(5))
}

/// With `--peer-auto-tls`: how this member calls https peer URLs, their
/// certificates unverified. Set once at start.
static UNVERIFIED_PEER_TLS: std::sync::OnceLock<common::tls::ClientConfig> =
    std::sync::OnceLock::new();

pub fn set_unverified_peer_tls(config: common::tls::ClientConfig) {
    let _ = UNVERIFIED_PEER_TLS.set(config);
}

/// How this member calls https peer URLs (--peer-* TLS flags), set once at
/// start.
static PEER_TLS: std::sync::OnceLock<tonic::transport::ClientTlsConfig> =
    std::sync::OnceLock::new();

pub fn set_peer_tls(config: tonic::transport::ClientTlsConfig) {
    let _ = PEER_TLS.set(config);
}

/// Creates a client per replication target.
pub struct Peers {
    pub cluster_id: u64,
    pub member_id: NodeId,
    /// This member's storaged: snapshots are streamed from it.
    pub storage: StorageClient<Channel>,
    /// Where a peer's "you were removed" is noted.
    pub removal: std::sync::Arc<crate::removal::Removal>,
}

pub struct PeerClient {
    target: NodeId,
    cluster_id: u64,
    member_id: NodeId,
    client: Result<RaftPeerClient<Channel>, String>,
    storage: StorageClient<Channel>,
    removal: std::sync::Arc<crate::removal::Removal>,
    /// Where single requests (heartbeats) go.
    singles: AppendMux,
    traffic: crate::metrics::PeerTraffic,
    /// The target's replies (bytes received from it).
    replies: crate::metrics::PeerTraffic,
}

impl RaftNetworkFactory<TypeConfig> for Peers {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &MemberNode) -> PeerClient {
        PeerClient {
            target,
            cluster_id: self.cluster_id,
            member_id: self.member_id,
            client: peer_channel(&node.peer_urls)
                .map(|c| RaftPeerClient::new(c).max_decoding_message_size(usize::MAX)),
            storage: self.storage.clone(),
            removal: self.removal.clone(),
            singles: AppendMux::default(),
            traffic: crate::metrics::PeerTraffic::to(target),
            replies: crate::metrics::PeerTraffic::from(target),
        }
    }
}

impl PeerClient {
    /// Send one openraft message with `method` and decode the reply.
    async fn call<Req, Resp, F, Fut>(
        &mut self,
        action: RPCTypes,
        req: &Req,
        option: &RPCOption,
        method: F,
    ) -> Result<Resp, RPCError<TypeConfig>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        F: FnOnce(RaftPeerClient<Channel>, tonic::Request<RaftMessage>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<RaftMessage>, tonic::Status>>,
    {
        let client = match &self.client {
            Ok(c) => c.clone(),
            Err(e) => return Err(RPCError::Unreachable(Unreachable::from_string(e))),
        };
        let body = codec::encode(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        self.traffic.bytes(body.len());
        let msg = RaftMessage {
            cluster_id: self.cluster_id,
            from: self.member_id,
            body: body.into(),
        };
        let ttl = option.hard_ttl();
        let started = std::time::Instant::now();
        let call = method(client, crate::peer_auth::request(msg));
        let answered = tokio::time::timeout(ttl, call).await;
        if matches!(answered, Ok(Ok(_))) {
            self.traffic.round_trip(started.elapsed());
        } else {
            self.traffic.failed();
        }
        let reply = match answered {
            Err(_) => {
                return Err(RPCError::Timeout(Timeout {
                    action,
                    id: self.member_id,
                    target: self.target,
                    timeout: ttl,
                }))
            }
            Ok(Err(s)) => {
                self.removal.note_refusal(&s);
                return Err(status_error(&s));
            }
            Ok(Ok(r)) => r.into_inner(),
        };
        self.replies.bytes(reply.body.len());
        codec::decode(&reply.body).map_err(|e| RPCError::Network(NetworkError::new(&e)))
    }
}

/// A peer that cannot be reached is backed off; anything else is retried.
fn status_error(s: &tonic::Status) -> RPCError<TypeConfig> {
    let msg = format!("{:?}: {}", s.code(), s.message());
    match s.code() {
        Code::Unavailable | Code::FailedPrecondition => {
            RPCError::Unreachable(Unreachable::from_string(msg))
        }
        _ => RPCError::Network(NetworkError::from_string(msg)),
    }
}

impl RaftNetworkV2<TypeConfig> for PeerClient {
    type SnapshotData = StoragedSnapshot;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(
            RPCTypes::AppendEntries,
            &rpc,
            &option,
            |mut c, m| async move { c.append_entries(m).await },
        )
        .await
    }

    /// Replication on one bidi stream: requests go out as openraft produces
    /// them (pipelined), results come back in order.
    fn stream_append<'s, S>(
        &'s mut self,
        input: S,
        _option: RPCOption,
    ) -> BoxFuture<
        's,
        Result<
            BoxStream<'s, Result<StreamAppendResult<TypeConfig>, RPCError<TypeConfig>>>,
            RPCError<TypeConfig>,
        >,
    >
    where
        S: Stream<Item = AppendEntriesRequest<TypeConfig>> + Send + Unpin + 'static,
    {
        let (cluster_id, from) = (self.cluster_id, self.member_id);
        let client = self.client.clone();
        let traffic = self.traffic.clone();
        let replies = self.replies.clone();
        Box::pin(async move {
            let mut client =
                client.map_err(|e| RPCError::Unreachable(Unreachable::from_string(e)))?;
            let mut input = input;
            let Some(first) = input.next().await else {
                let none: BoxStream<'s, _> = Box::pin(futures::stream::empty());
                return Ok(none);
            };
            // A stream that ends right after its first request (openraft's
            // heartbeats) goes on the long-lived call for single requests.
            let prefix = match input.next().now_or_never() {
                Some(None) => {
                    let msg = RaftMessage {
                        cluster_id,
                        from,
                        body: codec::encode(&first)
                            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?
                            .into(),
                    };
                    traffic.bytes(msg.body.len());
                    let result = match self.singles.call(&mut client, msg).await {
                        Ok(reply) => {
                            replies.bytes(reply.body.len());
                            codec::decode::<StreamAppendResult<TypeConfig>>(&reply.body)
                                .map_err(|e| RPCError::Network(NetworkError::new(&e)))
                        }
                        Err(s) => {
                            traffic.failed();
                            crate::metrics::HEARTBEAT_FAILURES.inc();
                            Err(status_error(&s))
                        }
                    };
                    let one: BoxStream<'s, _> = Box::pin(futures::stream::once(async { result }));
                    return Ok(one);
                }
                Some(Some(second)) => vec![first, second],
                None => vec![first],
            };
            // An unencodable request ends the stream on the receiver, which
            // the results then report.
            let sent = traffic.clone();
            let outgoing = futures::stream::iter(prefix).chain(input).map(move |req| {
                let body = codec::encode(&req).unwrap_or_default();
                sent.bytes(body.len());
                RaftMessage {
                    cluster_id,
                    from,
                    body: body.into(),
                }
            });
            let answers = client
                .stream_append(crate::peer_auth::request(outgoing))
                .await
                .map_err(|s| {
                    traffic.failed();
                    status_error(&s)
                })?
                .into_inner();
            let results = answers.map(move |reply| match reply {
                Ok(msg) => {
                    replies.bytes(msg.body.len());
                    codec::decode::<StreamAppendResult<TypeConfig>>(&msg.body)
                        .map_err(|e| RPCError::Network(NetworkError::new(&e)))
                }
                Err(s) => Err(status_error(&s)),
            });
            let results: BoxStream<'s, _> = Box::pin(results);
            Ok(results)
        })
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(RPCTypes::Vote, &rpc, &option, |mut c, m| async move {
            c.vote(m).await
        })
        .await
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(RPCTypes::Vote, &rpc, &option, |mut c, m| async move {
            c.pre_vote(m).await
        })
        .await
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(
            RPCTypes::TransferLeader,
            &req,
            &option,
            |mut c, m| async move { c.transfer_leader(m).await },
        )
        .await
    }

    /// Stream storaged's point-in-time copy to the target: the first peer
    /// chunk carries vote and meta, then storaged's chunks as they come
    /// (bounded buffering on both ends).
    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl std::future::Future<Output = ReplicationClosed> + Send + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let unreachable = |e: String| StreamingError::Unreachable(Unreachable::from_string(e));
        let mut client = self.client.clone().map_err(unreachable)?;
        let head = SnapshotChunk {
            cluster_id: self.cluster_id,
            from: self.member_id,
            vote: codec::encode(&vote).map_err(|e| unreachable(e.to_string()))?,
            meta: codec::encode(&snapshot.meta).map_err(|e| unreachable(e.to_string()))?,
            data: Vec::new(),
        };
        let mut source = self
            .storage
            .snapshot(SnapshotRequest {})
            .await
            .map_err(|s| unreachable(format!("local storaged: {}", s.message())))?
            .into_inner();
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        let (cluster_id, from) = (self.cluster_id, self.member_id);
        let pump = async move {
            tx.send(head)
                .await
                .map_err(|_| "receiver closed".to_string())?;
            while let Some(chunk) = source
                .message()
                .await
                .map_err(|s| format!("local storaged: {}", s.message()))?
            {
                let wrapped = SnapshotChunk {
                    cluster_id,
                    from,
                    data: chunk.encode_to_vec(),
                    ..Default::default()
                };
                tx.send(wrapped)
                    .await
                    .map_err(|_| "receiver closed".to_string())?;
            }
            Ok::<(), String>(())
        };
        let traffic = self.traffic.clone();
        let chunks = tokio_stream::wrappers::ReceiverStream::new(rx).map(move |c| {
            traffic.bytes(c.data.len() + c.meta.len() + c.vote.len());
            c
        });
        let call = client.install_snapshot(crate::peer_auth::request(chunks));
        let transfer = async { tokio::join!(pump, call) };
        let started = std::time::Instant::now();
        let _inflight =
            crate::metrics::InFlight::new(&crate::metrics::SNAPSHOT_SENDS_INFLIGHT, self.target);
        let sent = tokio::select! {
            closed = cancel => Err(StreamingError::Closed(closed)),
            (pumped, reply) = transfer => (|| {
                let reply = reply.map_err(|s| unreachable(format!("{:?}: {}", s.code(), s.message())))?;
                pumped.map_err(unreachable)?;
                codec::decode(&reply.into_inner().body).map_err(|e| unreachable(e.to_string()))
            })(),
        };
        crate::metrics::snapshot_sent(self.target, sent.is_ok(), started.elapsed());
        sent
    }
}

/// How often every other member's round trip is measured.
const PROBE_EVERY: Duration = Duration::from_secs(5);

/// Measure the round trip to every other member now and then with a
/// cheap peer call (etcd probes its peers the same way), for
/// etcd_network_peer_round_trip_time_seconds. A peer the probe cannot
/// reach is warned of once (and its return noted), as etcd's prober does:
/// openraft's own per-call complaints are below the default log level.
pub async fn probe_peers(raft: Raft, me: u64) {
    use common::proto::peer::raft_peer_client::RaftPeerClient;
    use common::proto::peer::ClusterRequest;
    let mut channels: std::collections::HashMap<u64, tonic::transport::Channel> =
        Default::default();
    // Failed probes in a row, by peer: the second is warned of (a peer
    // still starting misses one at most).
    let mut failed: std::collections::HashMap<u64, u32> = Default::default();
    loop {
        tokio::time::sleep(PROBE_EVERY).await;
        let membership = raft.metrics().borrow_watched().membership_config.clone();
        for (id, node) in membership.membership().nodes() {
            if *id == me {
                continue;
            }
            let channel = match channels.get(id) {
                Some(c) => c.clone(),
                None => match crate::peer_client::peer_channel(&node.peer_urls) {
                    Ok(c) => {
                        channels.insert(*id, c.clone());
                        c
                    }
                    Err(_) => continue,
                },
            };
            let started = std::time::Instant::now();
            let asked = tokio::time::timeout(
                PROBE_EVERY,
                RaftPeerClient::new(channel).cluster(ClusterRequest {}),
            )
            .await;
            let answered = matches!(asked, Ok(Ok(_)));
            let failure = match asked {
                Ok(Ok(_)) => {
                    crate::metrics::peer_round_trip(*id, started.elapsed());
                    None
                }
                Ok(Err(s)) => Some(s.message().to_string()),
                Err(_) => Some(format!("no answer within {PROBE_EVERY:?}")),
            };
            let peer = format!("{id:x}");
            match failure {
                Some(error) => {
                    let n = failed.entry(*id).or_default();
                    *n = n.saturating_add(1);
                    if *n == 2 {
                        tracing::warn!(%peer, %error, "prober detected unhealthy status");
                    }
                }
                None => {
                    if failed.remove(id).is_some_and(|n| n >= 2) {
                        tracing::info!(%peer, "peer is reachable again");
                    }
                }
            }
            crate::metrics::peer_reachable(me, *id, answered);
        }
    }
}
