//! Batches concurrent client writes into batches for raftd: one task takes
//! whatever proposals are queued (up to MAX_BATCH) as soon as a slot among
//! IN_FLIGHT concurrent batches is free. A lone writer sends batches of
//! one, so its latency is unchanged; many writers share messages. Batches
//! travel on one long-lived Propose stream (`Link`, a `CallStream`),
//! answered by id, so the hot path pays no call set-up.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tonic::transport::Channel;
use tonic::Status;

use crate::quota::Quota;
use crate::retry::{retrying, Retry};
use common::call_stream::{CallStream, Opener};
use common::errors::{status_from_wire, unavailable, EtcdError};
use common::proto::raft::propose_outcome::Outcome;
use common::proto::raft::raft_local_client::RaftLocalClient;
use common::proto::raft::{ProposeBatchRequest, ProposeBatchResponse};

const MAX_BATCH: usize = 1024;
const IN_FLIGHT: usize = 4;

type Reply = oneshot::Sender<Result<Vec<u8>, Status>>;

pub struct Proposer {
    queue: mpsc::UnboundedSender<(Bytes, Reply)>,
}

/// The Propose stream to raftd. A batch sent on a stream that then breaks
/// has an unknown outcome (it may have committed): it fails with etcd's
/// "request timed out", like a unary call lost in flight.
pub struct Link {
    calls: CallStream<ProposeBatchRequest, ProposeBatchResponse>,
}

impl Link {
    pub fn new(raft: RaftLocalClient<Channel>) -> Link {
        let opener: Opener<_, _> = Box::new(move |requests| {
            let mut raft = raft.clone();
            Box::pin(async move { Ok(raft.propose(requests).await?.into_inner()) })
        });
        Link {
            calls: CallStream::new(opener, || EtcdError::Timeout.into()),
        }
    }

    /// Propose one batch over the stream.
    pub async fn call(&self, requests: Vec<Bytes>) -> Result<ProposeBatchResponse, Status> {
        self.calls
            .call(ProposeBatchRequest { requests, id: 0 })
            .await
    }
}

impl Proposer {
    pub fn spawn(
        raft: RaftLocalClient<Channel>,
        request_timeout: Duration,
        term: Arc<AtomicU64>,
        quota: Arc<Quota>,
    ) -> Proposer {
        let (queue, rx) = mpsc::unbounded_channel();
        let link = Arc::new(Link::new(raft));
        tokio::spawn(collect(rx, link, request_timeout, term, quota));
        Proposer { queue }
    }

    /// Replicate one encoded RaftRequest; storaged's encoded RaftResult.
    pub async fn propose(&self, request: Vec<u8>) -> Result<Vec<u8>, Status> {
        let (tx, rx) = oneshot::channel();
        let _awaiting = common::park_spin::AwaitingReply::new();
        self.queue
            .send((Bytes::from(request), tx))
            .map_err(|_| Status::from(EtcdError::Stopped))?;
        rx.await.unwrap_or_else(|_| Err(EtcdError::Stopped.into()))
    }
}

async fn collect(
    mut rx: mpsc::UnboundedReceiver<(Bytes, Reply)>,
    link: Arc<Link>,
    request_timeout: Duration,
    term: Arc<AtomicU64>,
    quota: Arc<Quota>,
) {
    // The batches in flight run inside this task: a task per batch cost an
    // allocation and one more hand-off on every write.
    let mut in_flight = FuturesUnordered::new();
    let mut open = true;
    loop {
        tokio::select! {
            first = rx.recv(), if open && in_flight.len() < IN_FLIGHT => {
                let Some(first) = first else {
                    open = false;
                    continue;
                };
                // Everything that queued up while waiting for a slot goes together.
                let mut batch = vec![first];
                while batch.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(p) => batch.push(p),
                        Err(_) => break,
                    }
                }
                let deadline = Instant::now() + request_timeout;
                in_flight.push(send(&link, batch, deadline, &term, &quota));
            }
            Some(()) = in_flight.next(), if !in_flight.is_empty() => {}
            else => return,
        }
    }
}

async fn send(
    link: &Link,
    batch: Vec<(Bytes, Reply)>,
    deadline: Instant,
    term: &AtomicU64,
    quota: &Quota,
) {
    let (requests, replies): (Vec<Bytes>, Vec<Reply>) = batch.into_iter().unzip();
    let sent = retrying(deadline, Retry::OnlyUnsent, || link.call(requests.clone())).await;
    match sent {
        Ok(resp) => {
            term.fetch_max(resp.raft_term, Ordering::Relaxed);
            quota.record(resp.db_size);
            let mut outcomes = resp.outcomes.into_iter();
            for reply in replies {
                let result = match outcomes.next().and_then(|o| o.outcome) {
                    Some(Outcome::Result(bytes)) => Ok(bytes),
                    Some(Outcome::Error(code)) => Err(status_from_wire(code)),
                    None => Err(unavailable("raftd returned too few outcomes")),
                };
                let _ = reply.send(result);
            }
        }
        Err(s) => {
            for reply in replies {
                let _ = reply.send(Err(Status::new(s.code(), s.message())));
            }
        }
    }
}
