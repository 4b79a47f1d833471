//! Batches concurrent client writes into ProposeBatch calls to raftd: one
//! task takes whatever proposals are queued (up to MAX_BATCH) as soon as a
//! slot among IN_FLIGHT concurrent calls is free. A lone writer sends
//! batches of one, so its latency is unchanged; many writers share RPCs.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::time::Instant;
use tonic::transport::Channel;
use tonic::Status;

use crate::backend::{retrying, Retry};
use common::errors::{status_from_wire, unavailable, EtcdError};
use common::proto::raft::propose_outcome::Outcome;
use common::proto::raft::raft_local_client::RaftLocalClient;
use common::proto::raft::ProposeBatchRequest;

const MAX_BATCH: usize = 1024;
const IN_FLIGHT: usize = 4;

type Reply = oneshot::Sender<Result<Vec<u8>, Status>>;

pub struct Proposer {
    queue: mpsc::UnboundedSender<(Vec<u8>, Reply)>,
}

impl Proposer {
    pub fn spawn(
        raft: RaftLocalClient<Channel>,
        request_timeout: Duration,
        term: Arc<AtomicU64>,
    ) -> Proposer {
        let (queue, rx) = mpsc::unbounded_channel();
        tokio::spawn(collect(rx, raft, request_timeout, term));
        Proposer { queue }
    }

    /// Replicate one encoded RaftRequest; storaged's encoded RaftResult.
    pub async fn propose(&self, request: Vec<u8>) -> Result<Vec<u8>, Status> {
        let (tx, rx) = oneshot::channel();
        self.queue
            .send((request, tx))
            .map_err(|_| Status::from(EtcdError::Stopped))?;
        rx.await.unwrap_or_else(|_| Err(EtcdError::Stopped.into()))
    }
}

async fn collect(
    mut rx: mpsc::UnboundedReceiver<(Vec<u8>, Reply)>,
    raft: RaftLocalClient<Channel>,
    request_timeout: Duration,
    term: Arc<AtomicU64>,
) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    while let Some(first) = rx.recv().await {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        // Everything that queued up while waiting for a slot goes together.
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        let (raft, term) = (raft.clone(), term.clone());
        tokio::spawn(async move {
            send(raft, batch, Instant::now() + request_timeout, &term).await;
            drop(slot);
        });
    }
}

async fn send(
    raft: RaftLocalClient<Channel>,
    batch: Vec<(Vec<u8>, Reply)>,
    deadline: Instant,
    term: &AtomicU64,
) {
    let (requests, replies): (Vec<Vec<u8>>, Vec<Reply>) = batch.into_iter().unzip();
    let sent = retrying(deadline, Retry::OnlyUnsent, || {
        let mut raft = raft.clone();
        let requests = requests.clone();
        async move { raft.propose_batch(ProposeBatchRequest { requests }).await }
    })
    .await;
    match sent {
        Ok(resp) => {
            let resp = resp.into_inner();
            term.fetch_max(resp.raft_term, Ordering::Relaxed);
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
