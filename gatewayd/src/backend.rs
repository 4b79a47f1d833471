//! gatewayd's links to the member's raftd and storaged over Unix sockets.
//! Calls that cannot reach a daemon (it is restarting) are retried until the
//! request timeout, then fail with etcd's "request timed out"; a call that
//! reached raftd is never retried (it may have been committed).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prost::Message;
use tokio::time::Instant;
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::proposer::Proposer;
use crate::quota::{self, Quota};
use crate::tokens::Tokens;
use common::call_stream::{broke_retryable, CallStream, Opener};
use common::proto::etcdserverpb::alarm_request::AlarmAction;
use common::proto::etcdserverpb::{AlarmRequest, AlarmType};
use common::proto::storage::auth_check_request::Need;
use common::proto::storage::auth_query_request::Query;
use common::proto::storage::auth_query_response::Answer;
use common::proto::storage::raft_request::Op;
use common::proto::storage::{
    AuthCheckRequest, AuthCredentialsRequest, AuthCredentialsResponse, AuthInfo, AuthQueryRequest,
    AuthResolveRequest, AuthResolveResponse, MetricsRequest,
};
use common::read_batch::ReadBatch;
use common::read_index_link::ReadIndexLink;

use common::errors::{status_from_wire, unavailable, EtcdError};
use common::proto::etcdserverpb::{
    DefragmentRequest, HashKvRequest, HashKvResponse, HashRequest, HashResponse, RangeRequest,
    RangeResponse, ResponseHeader,
};
use common::proto::raft::raft_local_client::RaftLocalClient;
use common::proto::raft::{
    PublishRequest, StatusRequest as RaftStatusRequest, StatusResponse as RaftStatus,
};
use common::proto::storage::raft_result::Result as Outcome;
use common::proto::storage::storage_client::StorageClient;
use common::proto::storage::{
    RaftRequest, RaftResult, ReadCall, ReadReply, SnapshotChunk, SnapshotRequest,
    StatusRequest as StorageStatusRequest, StatusResponse as StorageStatus, WaitCompactionRequest,
};

pub struct Backend {
    raft: RaftLocalClient<Channel>,
    proposer: Proposer,
    storage: StorageClient<Channel>,
    /// From raftd once it answers (a joining member learns its IDs from the
    /// cluster); the configured IDs until then.
    cluster_id: AtomicU64,
    member_id: AtomicU64,
    /// Whether raftd last said this member is a learner.
    learner: AtomicBool,
    quota: Arc<Quota>,
    /// Set once raftd says this member was removed from the cluster.
    removed: tokio::sync::watch::Sender<bool>,
    /// Whether raftd last reported a leader (false when it did not answer).
    has_leader: tokio::sync::watch::Sender<bool>,
    term: Arc<AtomicU64>,
    /// How clients' auth tokens are issued and checked.
    tokens: Tokens,
    pub request_timeout: Duration,
    pub max_request_bytes: usize,
    /// Concurrent linearizable reads share one read-index call to raftd
    /// (its outcome: raftd's term).
    reads: Arc<ReadBatch<u64>>,
    /// Where those calls go: raftd's ReadIndexStream.
    read_indexes: Arc<ReadIndexLink>,
    /// Single-key reads go to storaged as messages on one stream.
    point_reads: CallStream<ReadCall, ReadReply>,
    /// storaged predates the Reads stream: every read is its own call.
    point_reads_unsupported: AtomicBool,
}

/// storaged's encoded RaftResult: its outcome, or the etcd error it carries.
pub fn decode_outcome(bytes: &[u8]) -> Result<Outcome, Status> {
    match common::nested_txn::raft_result(bytes) {
        Ok(RaftResult {
            result: Some(Outcome::Error(code)),
        }) => Err(status_from_wire(code)),
        Ok(RaftResult { result: Some(o) }) => Ok(o),
        Ok(RaftResult { result: None }) => Err(unavailable("empty apply result")),
        Err(e) => Err(unavailable(format!("undecodable apply result: {e}"))),
    }
}

/// The daemon could not be reached at all (not running, socket missing):
/// safe to retry, nothing was sent.
pub(crate) fn not_connected(s: &Status) -> bool {
    if s.code() != Code::Unavailable {
        return false;
    }
    let mut src: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(s);
    while let Some(e) = src {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::*;
            if matches!(io.kind(), NotFound | ConnectionRefused) {
                return true;
            }
        }
        src = e.source();
    }
    false
}

/// The call failed in the transport, not in the daemon: tonic attaches the
/// transport error as the source; statuses sent by a daemon have none.
pub(crate) fn transport_failure(s: &Status) -> bool {
    std::error::Error::source(s).is_some()
}

/// Whether a call may be sent again after this failure.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Reads: any transport failure (the daemon restarting) is retried.
    Idempotent,
    /// Proposals: only when nothing was sent; a proposal lost in flight may
    /// have been committed, so it fails with etcd's "request timed out".
    OnlyUnsent,
}

const RETRY: Duration = Duration::from_millis(50);

/// Run `call` until it reaches its daemon or the request timeout ends.
pub async fn retrying<T, F, Fut>(deadline: Instant, retry: Retry, mut call: F) -> Result<T, Status>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, Status>>,
{
    loop {
        match tokio::time::timeout_at(deadline, call()).await {
            Err(_) => return Err(EtcdError::Timeout.into()),
            Ok(Err(s))
                if not_connected(&s) || (retry == Retry::Idempotent && transport_failure(&s)) =>
            {
                if Instant::now() + RETRY >= deadline {
                    return Err(EtcdError::Timeout.into());
                }
                tokio::time::sleep(RETRY).await;
            }
            Ok(Err(s)) if transport_failure(&s) => {
                tracing::warn!(error = %s, "daemon connection lost with a request in flight");
                return Err(EtcdError::Timeout.into());
            }
            Ok(r) => return r,
        }
    }
}

/// What a Backend is configured with (beside its two daemon links).
pub struct Settings {
    /// The configured IDs (raftd's take over once it answers).
    pub cluster_id: u64,
    pub member_id: u64,
    pub request_timeout: Duration,
    pub max_request_bytes: usize,
    /// --quota-backend-bytes.
    pub quota_bytes: i64,
    pub tokens: Tokens,
}

impl Backend {
    pub fn new(raft: Channel, storage: Channel, settings: Settings) -> Self {
        let Settings {
            cluster_id,
            member_id,
            request_timeout,
            max_request_bytes,
            quota_bytes,
            tokens,
        } = settings;
        let raft = RaftLocalClient::new(raft).max_decoding_message_size(usize::MAX);
        let storage = StorageClient::new(storage).max_decoding_message_size(usize::MAX);
        let reads_from = storage.clone();
        let opener: Opener<_, _> = Box::new(move |calls| {
            let mut storage = reads_from.clone();
            Box::pin(async move { Ok(storage.reads(calls).await?.into_inner()) })
        });
        let read_indexes = Arc::new(ReadIndexLink::new(raft.clone(), false));
        let term = Arc::new(AtomicU64::new(0));
        let quota = Arc::new(Quota::new(quota_bytes));
        Backend {
            proposer: Proposer::spawn(raft.clone(), request_timeout, term.clone(), quota.clone()),
            raft,
            storage,
            cluster_id: AtomicU64::new(cluster_id),
            member_id: AtomicU64::new(member_id),
            learner: AtomicBool::new(false),
            removed: tokio::sync::watch::Sender::new(false),
            has_leader: tokio::sync::watch::Sender::new(false),
            quota,
            term,
            tokens,
            request_timeout,
            max_request_bytes,
            reads: Arc::default(),
            read_indexes,
            point_reads: CallStream::new(opener, broke_retryable),
            point_reads_unsupported: AtomicBool::new(false),
        }
    }

    /// Resolves only when raftd or storaged answers that it speaks another
    /// protocol version (checked at start and again every RECHECK).
    pub async fn incompatible_peer(&self) -> common::proto::Incompatible {
        use common::proto::{
            await_compatible, first_incompatible, raft, storaged_compatible, RAFT_PROTOCOL,
        };
        first_incompatible(|| async {
            await_compatible("raftd", || {
                let mut c = self.raft.clone();
                async move {
                    c.hello(raft::HelloRequest {
                        protocol: RAFT_PROTOCOL.into(),
                    })
                    .await
                }
            })
            .await?;
            storaged_compatible(&self.storage).await
        })
        .await
    }

    pub fn tokens(&self) -> &Tokens {
        &self.tokens
    }

    /// A client of this member's storaged (for the watch feed).
    pub fn storage_client(&self) -> StorageClient<Channel> {
        self.storage.clone()
    }

    /// When a request started now must have finished.
    fn deadline(&self) -> Instant {
        Instant::now() + self.request_timeout
    }

    /// Fill the member part of a response header, keeping its revision.
    pub fn fill(&self, header: &mut Option<ResponseHeader>) {
        let h = header.get_or_insert_with(ResponseHeader::default);
        h.cluster_id = self.cluster_id.load(Ordering::Relaxed);
        h.member_id = self.member_id.load(Ordering::Relaxed);
        h.raft_term = self.term.load(Ordering::Relaxed);
    }

    /// Take the expected response out of storaged's outcome and fill its
    /// header's member fields.
    pub fn respond<R>(
        &self,
        outcome: Outcome,
        pick: fn(Outcome) -> Option<R>,
        header: fn(&mut R) -> &mut Option<ResponseHeader>,
    ) -> Result<R, Status> {
        let mut resp = pick(outcome)
            .ok_or_else(|| unavailable("apply returned a result of the wrong kind"))?;
        self.fill(header(&mut resp));
        Ok(resp)
    }

    pub fn header(&self, revision: i64) -> Option<ResponseHeader> {
        let mut h = Some(ResponseHeader {
            revision,
            ..Default::default()
        });
        self.fill(&mut h);
        h
    }

    fn note_term(&self, term: u64) {
        self.term.fetch_max(term, Ordering::Relaxed);
    }

    /// Replicate one write through raft; storaged's outcome, or etcd's error.
    pub async fn propose(&self, req: RaftRequest) -> Result<Outcome, Status> {
        let bytes = req.encode_to_vec();
        if bytes.len() > self.max_request_bytes {
            return Err(EtcdError::RequestTooLarge.into());
        }
        let proposed = crate::metrics::timed("propose", self.proposer.propose(bytes));
        let result = tokio::time::timeout(self.request_timeout, proposed)
            .await
            .map_err(|_| Status::from(EtcdError::Timeout))??;
        decode_outcome(&result)
    }

    /// etcd's quota check before a write that grows the store: over the
    /// quota, raise NOSPACE for this member and refuse.
    pub async fn check_quota(&self, op: &Op) -> Result<(), Status> {
        let cost = quota::cost(op);
        if cost == 0 {
            return Ok(());
        }
        if self.quota.stale() {
            let s = self.storage_status().await?;
            self.quota.record(s.db_size);
        }
        if self.quota.fits(cost) {
            return Ok(());
        }
        let raise = AlarmRequest {
            action: AlarmAction::Activate as i32,
            member_id: self.member_id(),
            alarm: AlarmType::Nospace as i32,
        };
        if let Err(e) = self
            .propose(RaftRequest {
                op: Some(Op::Alarm(raise)),
                auth: None, // the member's own alarm
            })
            .await
        {
            tracing::warn!(error = %e.message(), "could not raise the NOSPACE alarm");
        }
        Err(EtcdError::NoSpace.into())
    }

    /// A raftd call (lessor requests) under the request timeout, retried
    /// as `retry` allows while raftd is unreachable or restarting.
    pub async fn raft_call<T, F, Fut>(&self, retry: Retry, call: F) -> Result<T, Status>
    where
        F: Fn(RaftLocalClient<Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, Status>>,
    {
        retrying(self.deadline(), retry, || call(self.raft.clone()))
            .await
            .map(|r| r.into_inner())
    }

    /// Wait until this member's storaged has applied a quorum-confirmed
    /// read index: what follows reads linearizably.
    pub async fn read_index(&self) -> Result<(), Status> {
        let (link, timeout) = (self.read_indexes.clone(), self.request_timeout);
        let round = move || {
            let link = link.clone();
            async move {
                let read = retrying(Instant::now() + timeout, Retry::Idempotent, || {
                    link.read_index()
                });
                Ok(read.await?.raft_term)
            }
        };
        // Within this request's own deadline, whichever round answers it.
        let read = async {
            tokio::time::timeout_at(self.deadline(), self.reads.read(round))
                .await
                .map_err(|_| Status::from(EtcdError::Timeout))?
        };
        let term = crate::metrics::timed("read_index", read).await?;
        self.note_term(term);
        Ok(())
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
        let read = self.storage_call(|mut storage| {
            let mut req = tonic::Request::new(req.clone());
            if let Some(who) = who {
                common::proto::attach_auth(&mut req, who);
            }
            async move { storage.range(req).await }
        });
        crate::metrics::timed("range", read).await
    }

    /// An idempotent storaged call under the request timeout.
    async fn storage_call<T, F, Fut>(&self, call: F) -> Result<T, Status>
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

    /// raftd's metrics text.
    pub async fn raftd_metrics(&self) -> Result<String, Status> {
        let mut raft = self.raft.clone();
        Ok(raft.metrics(MetricsRequest {}).await?.into_inner().text)
    }

    /// storaged's metrics text.
    pub async fn storaged_metrics(&self) -> Result<String, Status> {
        let mut storage = self.storage.clone();
        Ok(storage.metrics(MetricsRequest {}).await?.into_inner().text)
    }

    /// Who a token stands for.
    pub async fn auth_resolve(&self, token: &str) -> Result<AuthResolveResponse, Status> {
        self.storage_call(|mut s| {
            let token = token.to_string();
            async move { s.auth_resolve(AuthResolveRequest { token }).await }
        })
        .await
    }

    /// Refuse unless `who` may read `key`..`range_end`.
    pub async fn check_read(
        &self,
        who: &AuthInfo,
        key: &[u8],
        range_end: &[u8],
    ) -> Result<(), Status> {
        self.auth_check(who, Need::Read, key, range_end).await
    }

    /// Refuse unless `who` is an administrator (holds the root role).
    pub async fn check_admin(&self, who: &AuthInfo) -> Result<(), Status> {
        self.auth_check(who, Need::Admin, &[], &[]).await
    }

    async fn auth_check(
        &self,
        who: &AuthInfo,
        need: Need,
        key: &[u8],
        range_end: &[u8],
    ) -> Result<(), Status> {
        self.storage_call(|mut s| {
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
            .storage_call(|mut s| {
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
        self.storage_call(|mut s| {
            let name = name.to_string();
            async move { s.auth_credentials(AuthCredentialsRequest { name }).await }
        })
        .await
    }

    /// storaged's point-in-time copy of the whole store, in chunks.
    pub async fn snapshot(&self) -> Result<tonic::Streaming<SnapshotChunk>, Status> {
        self.storage_call(|mut storage| async move { storage.snapshot(SnapshotRequest {}).await })
            .await
    }

    /// storaged's defragmentation (flush and full compaction).
    pub async fn defragment(&self) -> Result<(), Status> {
        let mut storage = self.storage.clone();
        storage.defragment(DefragmentRequest {}).await?;
        Ok(())
    }

    pub async fn hash(&self) -> Result<HashResponse, Status> {
        self.storage_call(|mut storage| async move { storage.hash(HashRequest {}).await })
            .await
    }

    pub async fn hash_kv(&self, req: HashKvRequest) -> Result<HashKvResponse, Status> {
        self.storage_call(|mut storage| async move { storage.hash_kv(req).await })
            .await
    }

    pub async fn wait_compaction(&self, revision: i64) -> Result<(), Status> {
        let mut storage = self.storage.clone();
        storage
            .wait_compaction(WaitCompactionRequest { revision })
            .await?;
        Ok(())
    }

    pub async fn raft_status(&self) -> Result<RaftStatus, Status> {
        let asked = retrying(self.deadline(), Retry::Idempotent, || {
            let mut raft = self.raft.clone();
            async move { raft.status(RaftStatusRequest {}).await }
        })
        .await;
        let s = match asked {
            Ok(s) => s.into_inner(),
            Err(e) => {
                self.has_leader
                    .send_if_modified(|h| std::mem::replace(h, false));
                return Err(e);
            }
        };
        self.has_leader
            .send_if_modified(|h| std::mem::replace(h, s.leader != 0) != (s.leader != 0));
        self.note_term(s.term);
        self.cluster_id.store(s.cluster_id, Ordering::Relaxed);
        self.member_id.store(s.member_id, Ordering::Relaxed);
        self.learner.store(s.is_learner, Ordering::Relaxed);
        if s.removed {
            self.removed.send_replace(true);
        }
        Ok(s)
    }

    /// Follows whether raftd reports a leader (as `publish` keeps asking it).
    pub fn has_leader(&self) -> tokio::sync::watch::Receiver<bool> {
        self.has_leader.subscribe()
    }

    /// Resolves once raftd reports this member removed from the cluster.
    pub async fn removed(&self) {
        let mut rx = self.removed.subscribe();
        let _ = rx.wait_for(|r| *r).await;
    }

    /// Whether this member is a learner. The cached answer is exact for
    /// voters (a voter never becomes a learner again); a cached "learner"
    /// is confirmed with raftd, so a promotion takes effect at once.
    pub async fn is_learner(&self) -> bool {
        if !self.may_be_learner() {
            return false;
        }
        let _ = self.raft_status().await;
        self.learner.load(Ordering::Relaxed)
    }

    /// Whether this member may be a learner, without asking raftd: false
    /// is exact (see `is_learner`).
    pub fn may_be_learner(&self) -> bool {
        self.learner.load(Ordering::Relaxed)
    }

    /// etcd's refusal of what learners do not serve.
    pub async fn refuse_learner(&self) -> Result<(), Status> {
        if self.is_learner().await {
            return Err(EtcdError::NotSupportedForLearner.into());
        }
        Ok(())
    }

    pub fn member_id(&self) -> u64 {
        self.member_id.load(Ordering::Relaxed)
    }

    /// Learn this member's IDs from raftd, then publish its name and client
    /// URLs to the cluster (etcd's publish), retrying until both succeed;
    /// then keep following raftd's status (a learner may be promoted).
    pub async fn publish(&self, name: String, client_urls: Vec<String>) {
        loop {
            let published = async {
                let s = self.raft_status().await?;
                let req = PublishRequest {
                    client_urls: client_urls.clone(),
                    member_id: s.member_id,
                    name: name.clone(),
                };
                self.raft.clone().publish(req).await
            };
            match published.await {
                Ok(_) => {
                    tracing::info!(?client_urls, "published this member's client URLs");
                    break;
                }
                Err(e) => tracing::debug!(error = %e.message(), "publish failed; retrying"),
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        // Keep following raftd: promotion of a learner, removal.
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let _ = self.raft_status().await;
        }
    }

    pub async fn storage_status(&self) -> Result<StorageStatus, Status> {
        self.storage_call(
            |mut storage| async move { storage.status(StorageStatusRequest {}).await },
        )
        .await
    }
}
