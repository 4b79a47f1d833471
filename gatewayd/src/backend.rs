//! gatewayd's view of its member, for the services: the link to raftd, the
//! link to storaged, what raftd last reported of the member, the quota and
//! how tokens are issued. Calls that cannot reach a daemon (it is
//! restarting) are retried until the request timeout (`retry`), then fail
//! with etcd's "request timed out"; a call that reached raftd is never
//! retried (it may have been committed).

use std::sync::Arc;
use std::time::Duration;

use prost::Message;
use tonic::transport::Channel;
use tonic::Status;

use crate::member_state::MemberState;
use crate::quota::{self, Quota};
use crate::raft_link::RaftLink;
pub use crate::retry::Retry;
use crate::storage_link::StorageLink;
use crate::tokens::Tokens;
use common::errors::{status_from_wire, unavailable, EtcdError};
use common::proto::etcdserverpb::alarm_request::AlarmAction;
use common::proto::etcdserverpb::{
    AlarmRequest, AlarmType, HashKvRequest, HashKvResponse, HashResponse, MemberListRequest,
    RangeRequest, RangeResponse, ResponseHeader,
};
use common::proto::raft::raft_local_client::RaftLocalClient;
use common::proto::raft::{PublishRequest, StatusResponse as RaftStatus};
use common::proto::storage::auth_check_request::Need;
use common::proto::storage::auth_query_request::Query;
use common::proto::storage::auth_query_response::Answer;
use common::proto::storage::raft_request::Op;
use common::proto::storage::raft_result::Result as Outcome;
use common::proto::storage::storage_client::StorageClient;
use common::proto::storage::{
    AuthCredentialsResponse, AuthInfo, AuthResolveResponse, EtcdSnapshotChunk, RaftRequest,
    RaftResult, StatusResponse as StorageStatus,
};

pub struct Backend {
    raft: RaftLink,
    storage: StorageLink,
    member: MemberState,
    quota: Arc<Quota>,
    /// How clients' auth tokens are issued and checked.
    tokens: Tokens,
    pub request_timeout: Duration,
    /// How long a health probe waits for raftd or storaged.
    pub probe_timeout: Duration,
    pub max_request_bytes: usize,
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

/// What a Backend is configured with (beside its two daemon links).
pub struct Settings {
    /// The configured IDs (raftd's take over once it answers).
    pub cluster_id: u64,
    pub member_id: u64,
    pub request_timeout: Duration,
    pub probe_timeout: Duration,
    pub max_request_bytes: usize,
    /// --quota-backend-bytes.
    pub quota_bytes: i64,
    pub tokens: Tokens,
}

impl Backend {
    pub fn new(raft: Channel, storage: Channel, settings: Settings) -> Self {
        let member = MemberState::new(settings.cluster_id, settings.member_id);
        let quota = Arc::new(Quota::new(settings.quota_bytes));
        Backend {
            raft: RaftLink::new(
                raft,
                settings.request_timeout,
                member.term.clone(),
                quota.clone(),
            ),
            storage: StorageLink::new(storage, settings.request_timeout),
            member,
            quota,
            tokens: settings.tokens,
            request_timeout: settings.request_timeout,
            probe_timeout: settings.probe_timeout,
            max_request_bytes: settings.max_request_bytes,
        }
    }

    /// Resolves only when raftd or storaged answers that it speaks another
    /// protocol version (checked at start and again every RECHECK).
    pub async fn incompatible_peer(&self) -> common::proto::Incompatible {
        use common::proto::{
            await_compatible, first_incompatible, raft, storaged_compatible, RAFT_PROTOCOL,
        };
        let storage = self.storage.client();
        first_incompatible(|| async {
            await_compatible("raftd", || {
                let mut c = self.raft.client();
                async move {
                    c.hello(raft::HelloRequest {
                        protocol: RAFT_PROTOCOL.into(),
                    })
                    .await
                }
            })
            .await?;
            storaged_compatible(&storage).await
        })
        .await
    }

    pub fn tokens(&self) -> &Tokens {
        &self.tokens
    }

    /// A client of this member's storaged (for the watch feed).
    pub fn storage_client(&self) -> StorageClient<Channel> {
        self.storage.client()
    }

    /// Fill the member part of a response header, keeping its revision.
    pub fn fill(&self, header: &mut Option<ResponseHeader>) {
        self.member.fill(header);
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

    /// Replicate one write through raft; storaged's outcome, or etcd's error.
    pub async fn propose(&self, mut req: RaftRequest) -> Result<Outcome, Status> {
        req.trace_parent = crate::trace::current();
        let bytes = req.encode_to_vec();
        if bytes.len() > self.max_request_bytes {
            return Err(EtcdError::RequestTooLarge.into());
        }
        decode_outcome(&self.raft.propose(bytes).await?)
    }

    /// The backend quota in bytes (`--quota-backend-bytes`, 0 resolved
    /// to etcd's default).
    pub fn quota_limit(&self) -> i64 {
        self.quota.limit()
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
                trace_parent: String::new(),
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
        self.raft.call(retry, call).await
    }

    /// Wait until this member's storaged has applied a quorum-confirmed
    /// read index: what follows reads linearizably.
    pub async fn read_index(&self) -> Result<(), Status> {
        let term = self.raft.read_index().await?;
        self.member.note_term(term);
        Ok(())
    }

    /// A local read on behalf of a client `who` (storaged checks its
    /// permission), or of the member itself (None).
    pub async fn range(
        &self,
        req: RangeRequest,
        who: Option<&AuthInfo>,
    ) -> Result<RangeResponse, Status> {
        self.storage.range(req, who).await
    }

    /// A read stream of its own for one streamed range's chunks.
    pub async fn chunk_reader(&self) -> Result<crate::storage_link::ChunkReader, Status> {
        self.storage.chunk_reader().await
    }

    /// raftd's metrics text.
    pub async fn raftd_metrics(&self) -> Result<String, Status> {
        self.raft.metrics().await
    }

    /// storaged's metrics text.
    pub async fn storaged_metrics(&self) -> Result<String, Status> {
        self.storage.metrics().await
    }

    /// Who a token stands for.
    pub async fn auth_resolve(&self, token: &str) -> Result<AuthResolveResponse, Status> {
        self.storage.auth_resolve(token).await
    }

    /// Refuse unless `who` may read `key`..`range_end`.
    pub async fn check_read(
        &self,
        who: &AuthInfo,
        key: &[u8],
        range_end: &[u8],
    ) -> Result<(), Status> {
        self.storage
            .auth_check(who, Need::Read, key, range_end)
            .await
    }

    /// Refuse unless `who` is an administrator (holds the root role).
    pub async fn check_admin(&self, who: &AuthInfo) -> Result<(), Status> {
        self.storage.auth_check(who, Need::Admin, &[], &[]).await
    }

    pub async fn auth_query(&self, who: &AuthInfo, query: Query) -> Result<Answer, Status> {
        self.storage.auth_query(who, query).await
    }

    pub async fn auth_credentials(&self, name: &str) -> Result<AuthCredentialsResponse, Status> {
        self.storage.auth_credentials(name).await
    }

    /// storaged's point-in-time copy of the whole store as etcd's backend
    /// file, in pieces.
    pub async fn etcd_snapshot(&self) -> Result<tonic::Streaming<EtcdSnapshotChunk>, Status> {
        self.storage.etcd_snapshot().await
    }

    /// storaged's defragmentation (flush and full compaction).
    pub async fn defragment(&self) -> Result<(), Status> {
        self.storage.defragment().await
    }

    pub async fn hash(&self) -> Result<HashResponse, Status> {
        self.storage.hash().await
    }

    pub async fn hash_kv(&self, req: HashKvRequest) -> Result<HashKvResponse, Status> {
        self.storage.hash_kv(req).await
    }

    pub async fn wait_compaction(&self, revision: i64) -> Result<(), Status> {
        self.storage.wait_compaction(revision).await
    }

    pub async fn storage_status(&self) -> Result<StorageStatus, Status> {
        self.storage.status().await
    }

    /// raftd's status, recorded as what this member now is.
    pub async fn raft_status(&self) -> Result<RaftStatus, Status> {
        match self.raft.status().await {
            Ok(s) => {
                self.member.record(&s);
                Ok(s)
            }
            Err(e) => {
                self.member.record_unreachable();
                Err(e)
            }
        }
    }

    /// Follows whether raftd reports a leader (as `publish` keeps asking it).
    pub fn has_leader(&self) -> tokio::sync::watch::Receiver<bool> {
        self.member.has_leader()
    }

    /// Resolves once raftd reports this member removed from the cluster.
    pub async fn removed(&self) {
        self.member.removed().await
    }

    /// Whether this member is a learner. The cached answer is exact for
    /// voters (a voter never becomes a learner again); a cached "learner"
    /// is confirmed with raftd, so a promotion takes effect at once.
    pub async fn is_learner(&self) -> bool {
        if !self.may_be_learner() {
            return false;
        }
        let _ = self.raft_status().await;
        self.member.learner()
    }

    /// Whether this member may be a learner, without asking raftd: false
    /// is exact (see `is_learner`).
    pub fn may_be_learner(&self) -> bool {
        self.member.learner()
    }

    /// etcd's refusal of what learners do not serve.
    pub async fn refuse_learner(&self) -> Result<(), Status> {
        if self.is_learner().await {
            return Err(EtcdError::NotSupportedForLearner.into());
        }
        Ok(())
    }

    pub fn member_id(&self) -> u64 {
        self.member.member_id()
    }

    /// Learn this member's IDs from raftd and publish its name and client
    /// URLs to the cluster (etcd's publish), retrying until it lands or
    /// raftd's own member list already shows them. etcd serves clients only
    /// once published, so a client never sees a serving member without its
    /// client URLs; a restart with unchanged URLs serves at once, even
    /// without a leader.
    pub async fn publish_self(&self, name: &str, client_urls: &[String]) {
        loop {
            let published = async {
                let s = self.raft_status().await?;
                let members = self.local_members().await?;
                if members
                    .iter()
                    .any(|m| m.id == s.member_id && m.name == name && m.client_ur_ls == client_urls)
                {
                    return Ok(());
                }
                let req = PublishRequest {
                    client_urls: client_urls.to_vec(),
                    member_id: s.member_id,
                    name: name.to_string(),
                };
                self.raft.publish(req).await
            };
            match published.await {
                Ok(()) => {
                    tracing::info!(?client_urls, "published this member's client URLs");
                    return;
                }
                Err(e) => tracing::debug!(error = %e.message(), "publish failed; retrying"),
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// The members as this member's raftd knows them (no leader needed).
    pub async fn local_members(&self) -> Result<Vec<common::proto::etcdserverpb::Member>, Status> {
        Ok(self
            .raft_call(Retry::OnlyUnsent, |mut r| async move {
                r.member_list(MemberListRequest {
                    linearizable: false,
                })
                .await
            })
            .await?
            .members)
    }

    /// Keep following raftd's status: promotion of a learner, removal.
    pub async fn follow_raftd(&self) {
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let _ = self.raft_status().await;
        }
    }
}
