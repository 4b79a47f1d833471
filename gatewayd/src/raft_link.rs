//! gatewayd's link to the member's raftd: proposals (batched by the
//! proposer on one Propose stream), read-index rounds shared by concurrent
//! reads, and raftd's other calls under the request timeout.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tonic::transport::Channel;
use tonic::Status;

use crate::proposer::Proposer;
use crate::quota::Quota;
use crate::retry::{retrying, Retry};
use common::errors::EtcdError;
use common::proto::raft::raft_local_client::RaftLocalClient;
use common::proto::raft::{
    PublishRequest, StatusRequest as RaftStatusRequest, StatusResponse as RaftStatus,
};
use common::proto::storage::MetricsRequest;
use common::read_batch::ReadBatch;
use common::read_index_link::ReadIndexLink;

pub struct RaftLink {
    raft: RaftLocalClient<Channel>,
    proposer: Proposer,
    /// Concurrent linearizable reads share one read-index call to raftd
    /// (its outcome: raftd's term).
    reads: Arc<ReadBatch<u64>>,
    /// Where those calls go: raftd's ReadIndexStream.
    read_indexes: Arc<ReadIndexLink>,
    request_timeout: Duration,
}

impl RaftLink {
    /// A link over `channel`; `term` follows the highest raft term seen.
    pub fn new(
        channel: Channel,
        request_timeout: Duration,
        term: Arc<AtomicU64>,
        quota: Arc<Quota>,
    ) -> RaftLink {
        let raft = RaftLocalClient::new(channel).max_decoding_message_size(usize::MAX);
        RaftLink {
            proposer: Proposer::spawn(raft.clone(), request_timeout, term, quota),
            read_indexes: Arc::new(ReadIndexLink::new(raft.clone(), false)),
            reads: Arc::default(),
            raft,
            request_timeout,
        }
    }

    pub fn client(&self) -> RaftLocalClient<Channel> {
        self.raft.clone()
    }

    fn deadline(&self) -> Instant {
        Instant::now() + self.request_timeout
    }

    /// Replicate one encoded request; storaged's encoded result.
    pub async fn propose(&self, bytes: Vec<u8>) -> Result<Vec<u8>, Status> {
        let proposed = crate::metrics::timed("propose", self.proposer.propose(bytes));
        tokio::time::timeout(self.request_timeout, proposed)
            .await
            .map_err(|_| Status::from(EtcdError::Timeout))?
    }

    /// A raftd call under the request timeout, retried as `retry` allows
    /// while raftd is unreachable or restarting.
    pub async fn call<T, F, Fut>(&self, retry: Retry, call: F) -> Result<T, Status>
    where
        F: Fn(RaftLocalClient<Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, Status>>,
    {
        retrying(self.deadline(), retry, || call(self.raft.clone()))
            .await
            .map(|r| r.into_inner())
    }

    /// A quorum-confirmed read index, applied by this member's storaged
    /// when it returns; raftd's term.
    pub async fn read_index(&self) -> Result<u64, Status> {
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
        crate::metrics::timed("read_index", read).await
    }

    pub async fn status(&self) -> Result<RaftStatus, Status> {
        self.call(Retry::Idempotent, |mut raft| async move {
            raft.status(RaftStatusRequest {}).await
        })
        .await
    }

    /// raftd's metrics text.
    pub async fn metrics(&self) -> Result<String, Status> {
        let mut raft = self.raft.clone();
        Ok(raft.metrics(MetricsRequest {}).await?.into_inner().text)
    }

    /// etcd's publish: this member's name and client URLs, once.
    pub async fn publish(&self, req: PublishRequest) -> Result<(), Status> {
        self.raft.clone().publish(req).await.map(|_| ())
    }
}
