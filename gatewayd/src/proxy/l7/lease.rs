//! The L7 proxy's Lease service. Grant, revoke, time-to-live and leases
//! are sent on to the cluster; keepalives are coalesced: however many
//! clients keep the same lease alive at once, one keepalive for it is in
//! flight to the cluster on the proxy's single keepalive stream, and its
//! answer goes to all of them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use super::metrics::KEEPALIVES;
use super::namespace::Namespace;
use super::upstream::{forward, unary, Upstream};
use crate::retry::{transport_failure, Retry};
use common::errors::EtcdError;
use common::proto::etcdserverpb::lease_client::LeaseClient;
use common::proto::etcdserverpb::lease_server::Lease;
use common::proto::etcdserverpb::*;

type Answer = Result<LeaseKeepAliveResponse, Status>;

#[derive(Default)]
struct Pending {
    /// Clients waiting for the answer to a keepalive of each lease.
    waiting: HashMap<i64, Vec<oneshot::Sender<Answer>>>,
    /// Requests to the task that owns the upstream keepalive stream.
    stream: Option<mpsc::Sender<i64>>,
}

pub struct KeepAlives {
    upstream: Arc<Upstream>,
    timeout: Duration,
    pending: Mutex<Pending>,
}

impl KeepAlives {
    pub fn new(upstream: Arc<Upstream>, timeout: Duration) -> Arc<KeepAlives> {
        Arc::new(KeepAlives {
            upstream,
            timeout,
            pending: Mutex::default(),
        })
    }

    /// Keep lease `id` alive once, sharing a keepalive already in flight.
    pub async fn keep_alive(self: &Arc<Self>, id: i64) -> Answer {
        KEEPALIVES.inc(&["client"]);
        let (tx, rx) = oneshot::channel();
        let send = {
            let mut p = self
                .pending
                .lock()
                .map_err(|_| Status::internal("keepalive state poisoned"))?;
            let waiting = p.waiting.entry(id).or_default();
            waiting.push(tx);
            (waiting.len() == 1).then(|| self.stream(&mut p))
        };
        if let Some(stream) = send {
            KEEPALIVES.inc(&["upstream"]);
            let _ = stream.send(id).await;
        }
        match tokio::time::timeout(self.timeout, rx).await {
            Ok(Ok(answer)) => answer,
            _ => {
                if let Ok(mut p) = self.pending.lock() {
                    p.waiting.remove(&id);
                }
                Err(EtcdError::Timeout.into())
            }
        }
    }

    /// The running upstream stream's sender, starting it when needed.
    fn stream(self: &Arc<Self>, p: &mut Pending) -> mpsc::Sender<i64> {
        if let Some(s) = p.stream.as_ref().filter(|s| !s.is_closed()) {
            return s.clone();
        }
        let (tx, rx) = mpsc::channel(1024);
        p.stream = Some(tx.clone());
        tokio::spawn(self.clone().run(rx));
        tx
    }

    fn answer(&self, id: i64, answer: Answer) {
        let waiting = match self.pending.lock() {
            Ok(mut p) => p.waiting.remove(&id).unwrap_or_default(),
            Err(_) => return,
        };
        for w in waiting {
            let _ = w.send(answer.clone());
        }
    }

    /// Every lease someone is still waiting for (to send again after the
    /// stream moved to another member).
    fn waiting_ids(&self) -> Vec<i64> {
        self.pending
            .lock()
            .map(|p| p.waiting.keys().copied().collect())
            .unwrap_or_default()
    }

    /// Own the upstream keepalive stream, moving it to another member when
    /// the one in use fails.
    async fn run(self: Arc<Self>, mut asks: mpsc::Receiver<i64>) {
        let mut attempts = 0;
        loop {
            let (i, channel) = self.upstream.channel();
            let (tx, rx) = mpsc::channel(1024);
            for id in self.waiting_ids() {
                let _ = tx.try_send(LeaseKeepAliveRequest { id });
            }
            let mut answers = match LeaseClient::new(channel)
                .lease_keep_alive(ReceiverStream::new(rx))
                .await
            {
                Ok(r) => r.into_inner(),
                Err(s) => {
                    self.upstream.failed(i, &s);
                    attempts += 1;
                    self.upstream.pause_after_round(attempts).await;
                    continue;
                }
            };
            loop {
                tokio::select! {
                    ask = asks.recv() => match ask {
                        Some(id) => {
                            if tx.send(LeaseKeepAliveRequest { id }).await.is_err() {
                                break;
                            }
                        }
                        None => return,
                    },
                    answer = answers.message() => match answer {
                        Ok(Some(a)) => {
                            attempts = 0;
                            self.answer(a.id, Ok(a));
                        }
                        Ok(None) => break,
                        Err(s) => {
                            if !transport_failure(&s) {
                                // The member refused (no leader, ...): the
                                // waiting clients get its answer.
                                for id in self.waiting_ids() {
                                    self.answer(id, Err(s.clone()));
                                }
                            }
                            self.upstream.failed(i, &s);
                            break;
                        }
                    },
                }
            }
        }
    }
}

pub struct LeaseProxy {
    upstream: Arc<Upstream>,
    ns: Namespace,
    keep_alives: Arc<KeepAlives>,
}

impl LeaseProxy {
    pub fn new(upstream: Arc<Upstream>, ns: Namespace, timeout: Duration) -> Self {
        LeaseProxy {
            keep_alives: KeepAlives::new(upstream.clone(), timeout),
            upstream,
            ns,
        }
    }
}

forward! { Lease for LeaseProxy via LeaseClient;
    lease_grant(LeaseGrantRequest) -> LeaseGrantResponse, Retry::OnlyUnsent;
    lease_revoke(LeaseRevokeRequest) -> LeaseRevokeResponse, Retry::OnlyUnsent;
    lease_leases(LeaseLeasesRequest) -> LeaseLeasesResponse, Retry::Idempotent;
    {
        type LeaseKeepAliveStream = ReceiverStream<Result<LeaseKeepAliveResponse, Status>>;

        async fn lease_keep_alive(
            &self,
            req: Request<Streaming<LeaseKeepAliveRequest>>,
        ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
            let mut requests = req.into_inner();
            let (tx, rx) = mpsc::channel(16);
            let keep_alives = self.keep_alives.clone();
            tokio::spawn(async move {
                while let Some(Ok(k)) = requests.next().await {
                    let answer = keep_alives.keep_alive(k.id).await;
                    let failed = answer.is_err();
                    if tx.send(answer).await.is_err() || failed {
                        return;
                    }
                }
            });
            Ok(Response::new(ReceiverStream::new(rx)))
        }

        async fn lease_time_to_live(
            &self,
            req: Request<LeaseTimeToLiveRequest>,
        ) -> Result<Response<LeaseTimeToLiveResponse>, Status> {
            let (md, r) = (req.metadata().clone(), req.into_inner());
            let mut resp = unary!(
                self.upstream,
                Retry::Idempotent,
                LeaseClient::lease_time_to_live,
                md,
                r
            )?;
            // Only the keys in the proxy's namespace, as its clients name them.
            resp.keys.retain(|k| self.ns.contains(k));
            for k in &mut resp.keys {
                self.ns.strip(k);
            }
            Ok(Response::new(resp))
        }
    }
}
