//! gatewayd's link to the member's storaged: single-key reads as messages
//! on one Reads stream (unary calls to a storaged that predates it), other
//! reads, auth checks and maintenance calls, all idempotent, retried while
//! storaged restarts, under the request timeout.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::time::Instant;
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::retry::{retrying, Retry};
use common::call_stream::{broke_retryable, CallStream, Opener};
use common::errors::unavailable;
use common::proto::etcdserverpb::{
    DefragmentRequest, HashKvRequest, HashKvResponse, HashRequest, HashResponse, RangeRequest,
    RangeResponse,
};
use common::proto::storage::auth_check_request::Need;
use common::proto::storage::auth_query_request::Query;
use common::proto::storage::auth_query_response::Answer;
use common::proto::storage::storage_client::StorageClient;
use common::proto::storage::{
    AuthCheckRequest, AuthCredentialsRequest, AuthCredentialsResponse, AuthInfo, AuthQueryRequest,
    AuthResolveRequest, AuthResolveResponse, EtcdSnapshotChunk, MetricsRequest, ReadCall,
    ReadReply, SnapshotRequest, StatusRequest, StatusResponse, WaitCompactionRequest,
};

pub struct StorageLink {
    storage: StorageClient<Channel>,
    /// Single-key reads go to storaged as messages on one stream.
    point_reads: CallStream<ReadCall, ReadReply>,
    /// storaged predates the Reads stream: every read is its own call.
    point_reads_unsupported: AtomicBool,
    request_timeout: Duration,
}

impl StorageLink {
    pub fn new(channel: Channel, request_timeout: Duration) -> StorageLink {
        let storage = StorageClient::new(channel).max_decoding_message_size(usize::MAX);
        let reads_from = storage.clone();
        let opener: Opener<_, _> = Box::new(move |calls| {
            let mut storage = reads_from.clone();
            Box::pin(async move { Ok(storage.reads(calls).await?.into_inner()) })
        });
        StorageLink {
            storage,
            point_reads: CallStream::new(opener, broke_retryable),
            point_reads_unsupported: AtomicBool::new(false),
            request_timeout,
        }
    }

    pub fn client(&self) -> StorageClient<Channel> {
        self.storage.clone()
    }

    fn deadline(&self) -> Instant {
        Instant::now() + self.request_timeout
    }

    /// An idempotent storaged call under the request timeout.
    pub async fn call<T, F, Fut>(&self, call: F) -> Result<T, Status>
    where
        F: Fn(StorageClient<Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, Status>>,
    {
        retrying(self.deadline(), Retry::Idempotent, || {
            call(self.storage.clone())
        })
        .await
        .map(|r| r.into_inner())
    }

    /// A local read on behalf of a client `who` (storaged checks its
    /// permission), or of the member itself (None).
    pub async fn range(
        &self,
        req: RangeRequest,
        who: Option<&AuthInfo>,
    ) -> Result<RangeResponse, Status> {
        if req.range_end.is_empty() && !self.point_reads_unsupported.load(Ordering::Relaxed) {
            let read = retrying(self.deadline(), Retry::Idempotent, || {
                self.point_reads.call(ReadCall {
                    id: 0,
                    request: Some(req.clone()),
                    auth: who.cloned(),
                    chunk_bytes: 0,
                    trace_parent: crate::trace::current(),
                })
            });
            match crate::metrics::timed("range", read).await {
                Ok(ReadReply {
                    response: Some(r), ..
                }) => return Ok(r),
                Ok(_) => return Err(unavailable("storaged sent an empty read reply")),
                Err(s) if s.code() == Code::Unimplemented => {
                    self.point_reads_unsupported.store(true, Ordering::Relaxed);
                }
                Err(s) => return Err(s),
            }
        }
        let read = self.call(|mut storage| {
            let mut req = tonic::Request::new(req.clone());
            if let Some(who) = who {
                common::proto::attach_auth(&mut req, who);
            }
            if let Ok(tp) = crate::trace::current().parse() {
                req.metadata_mut().insert("traceparent", tp);
            }
            async move { storage.range(req).await }
        });
        crate::metrics::timed("range", read).await
    }

    /// A Reads stream of its own for the chunks of one streamed range, so
    /// they never queue point reads behind them.
    pub async fn chunk_reader(&self) -> Result<ChunkReader, Status> {
        let (calls, rx) = tokio::sync::mpsc::channel(1);
        let mut storage = self.storage.clone();
        let replies = tokio::time::timeout(
            self.request_timeout,
            storage.reads(tokio_stream::wrappers::ReceiverStream::new(rx)),
        )
        .await
        .map_err(|_| unavailable("storaged did not open a read stream in time"))??
        .into_inner();
        Ok(ChunkReader {
            calls,
            replies,
            request_timeout: self.request_timeout,
        })
    }

    /// storaged's metrics text.
    pub async fn metrics(&self) -> Result<String, Status> {
        let mut storage = self.storage.clone();
        Ok(storage.metrics(MetricsRequest {}).await?.into_inner().text)
    }

    /// Who a token stands for.
    pub async fn auth_resolve(&self, token: &str) -> Result<AuthResolveResponse, Status> {
        self.call(|mut s| {
            let token = token.to_string();
            async move { s.auth_resolve(AuthResolveRequest { token }).await }
        })
        .await
    }

    pub async fn auth_check(
        &self,
        who: &AuthInfo,
        need: Need,
        key: &[u8],
        range_end: &[u8],
    ) -> Result<(), Status> {
        self.call(|mut s| {
            let req = AuthCheckRequest {
                auth: Some(who.clone()),
                need: need as i32,
                key: key.to_vec(),
                range_end: range_end.to_vec(),
            };
            async move { s.auth_check(req).await }
        })
        .await
        .map(|_| ())
    }

    pub async fn auth_query(&self, who: &AuthInfo, query: Query) -> Result<Answer, Status> {
        let resp = self
            .call(|mut s| {
                let req = AuthQueryRequest {
                    auth: Some(who.clone()),
                    query: Some(query.clone()),
                };
                async move { s.auth_query(req).await }
            })
            .await?;
        resp.answer
            .ok_or_else(|| unavailable("storaged answered an auth query with nothing"))
    }

    pub async fn auth_credentials(&self, name: &str) -> Result<AuthCredentialsResponse, Status> {
        self.call(|mut s| {
            let name = name.to_string();
            async move { s.auth_credentials(AuthCredentialsRequest { name }).await }
        })
        .await
    }

    /// storaged's point-in-time copy of the whole store as etcd's backend
    /// file, in pieces.
    pub async fn etcd_snapshot(&self) -> Result<tonic::Streaming<EtcdSnapshotChunk>, Status> {
        self.call(|mut storage| async move { storage.etcd_snapshot(SnapshotRequest {}).await })
            .await
    }

    /// storaged's defragmentation (flush and full compaction).
    pub async fn defragment(&self) -> Result<(), Status> {
        let mut storage = self.storage.clone();
        storage.defragment(DefragmentRequest {}).await?;
        Ok(())
    }

    pub async fn hash(&self) -> Result<HashResponse, Status> {
        self.call(|mut storage| async move { storage.hash(HashRequest {}).await })
            .await
    }

    pub async fn hash_kv(&self, req: HashKvRequest) -> Result<HashKvResponse, Status> {
        self.call(|mut storage| async move { storage.hash_kv(req).await })
            .await
    }

    pub async fn wait_compaction(&self, revision: i64) -> Result<(), Status> {
        let mut storage = self.storage.clone();
        storage
            .wait_compaction(WaitCompactionRequest { revision })
            .await?;
        Ok(())
    }

    pub async fn status(&self) -> Result<StatusResponse, Status> {
        self.call(|mut storage| async move { storage.status(StatusRequest {}).await })
            .await
    }
}

/// One streamed range's reads from storaged, a chunk at a time.
pub struct ChunkReader {
    calls: tokio::sync::mpsc::Sender<ReadCall>,
    replies: tonic::Streaming<ReadReply>,
    request_timeout: Duration,
}

impl ChunkReader {
    /// The live keys from `req.key`, up to `req.limit`, within `max_bytes`
    /// of response (storaged's `range_chunk`).
    pub async fn next(
        &mut self,
        req: RangeRequest,
        who: Option<&AuthInfo>,
        max_bytes: usize,
    ) -> Result<RangeResponse, Status> {
        let call = ReadCall {
            id: 0,
            request: Some(req),
            auth: who.cloned(),
            chunk_bytes: max_bytes as u64,
            trace_parent: crate::trace::current(),
        };
        let gone = || unavailable("storaged ended the read stream");
        self.calls.send(call).await.map_err(|_| gone())?;
        let mut reply = tokio::time::timeout(self.request_timeout, self.replies.message())
            .await
            .map_err(|_| unavailable("storaged did not answer a read in time"))??
            .ok_or_else(gone)?;
        if let Some(failure) = common::call_stream::TaggedReply::take_failure(&mut reply) {
            return Err(failure);
        }
        reply
            .response
            .ok_or_else(|| unavailable("storaged sent an empty read reply"))
    }
}
