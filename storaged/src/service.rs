//! The triad.storage.v1 gRPC service on storaged's Unix socket.

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use crate::permission::{check_range, Access};
use crate::read_fence::ReadFence;
use crate::store::Store;
use common::proto::etcdserverpb::{
    DefragmentRequest, DefragmentResponse, HashKvRequest, HashKvResponse, HashRequest,
    HashResponse, RangeRequest, RangeResponse, ResponseHeader,
};
use common::proto::storage::auth_check_request::Need;
use common::proto::storage::storage_server::Storage;
use common::proto::storage::{
    ActivateSnapshotRequest, ActivateSnapshotResponse, ApplyEntry, ApplyRequest, ApplyResponse,
    EtcdSnapshotChunk, EventsRequest, HelloRequest, HelloResponse, LeaseKeysRequest,
    LeaseKeysResponse, LeasesRequest, LeasesResponse, SnapshotChunk, SnapshotRequest,
    StatusRequest, StatusResponse, WaitCompactionRequest, WaitCompactionResponse,
};
use common::proto::storage::{ApplySoonNotice, ApplySoonResponse, ReadCall, ReadReply};
use common::proto::storage::{
    AuthCheckRequest, AuthCheckResponse, AuthCredentialsRequest, AuthCredentialsResponse,
    AuthQueryRequest, AuthQueryResponse, AuthResolveRequest, AuthResolveResponse, MetricsRequest,
    MetricsResponse,
};
use common::proto::storage::{IdentifyRequest, IdentifyResponse};
use common::proto::STORAGE_PROTOCOL;

pub struct StorageService {
    store: Arc<Store>,
    /// The live store's directory (a received snapshot is staged beside it).
    dir: PathBuf,
    /// Asks main to restart storaged (to activate a staged snapshot).
    restart: watch::Sender<bool>,
    /// One snapshot received at a time.
    receiving: tokio::sync::Mutex<()>,
    /// Client reads wait behind it after an unclean stop.
    fence: Arc<ReadFence>,
}

impl StorageService {
    pub fn new(
        store: Arc<Store>,
        dir: PathBuf,
        restart: watch::Sender<bool>,
        fence: Arc<ReadFence>,
    ) -> Self {
        StorageService {
            store,
            dir,
            restart,
            receiving: tokio::sync::Mutex::new(()),
            fence,
        }
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Store) -> Result<T, crate::StoreError> + Send + 'static,
    ) -> Result<T, Status> {
        let store = self.store.clone();
        match tokio::task::spawn_blocking(move || f(&store)).await {
            Ok(r) => r.map_err(Status::from),
            Err(e) => Err(Status::internal(format!("storaged task failed: {e}"))),
        }
    }
}

/// How long after raftd's heads-up the Apply is waited for awake: a
/// commit takes a quorum's fsync and a round trip, rarely over 2 ms here.
const APPLY_SOON_WINDOW: std::time::Duration = std::time::Duration::from_millis(2);

/// Apply a batch for raftd, letting its watch events out first: the
/// apply wakes the event feeds, and this task yields before answering, so
/// the feeds (and the HTTP/2 tasks writing to gatewayd) run first and a
/// watcher's event is not queued behind raftd's answer and the work it
/// sets off in raftd.
async fn apply_events_first(
    store: &Store,
    entries: &[ApplyEntry],
) -> Result<ApplyResponse, Status> {
    let response = store.apply(entries)?;
    // Resumes once every task made ready meanwhile has run.
    tokio::task::yield_now().await;
    Ok(response)
}

#[tonic::async_trait]
impl Storage for StorageService {
    async fn hello(&self, req: Request<HelloRequest>) -> Result<Response<HelloResponse>, Status> {
        common::proto::check_protocol("storaged", STORAGE_PROTOCOL, &req.into_inner().protocol)?;
        Ok(Response::new(HelloResponse {
            protocol: STORAGE_PROTOCOL.to_string(),
            daemon_version: common::VERSION.to_string(),
        }))
    }

    type ApplyStream = ReceiverStream<Result<ApplyResponse, Status>>;

    async fn apply(
        &self,
        req: Request<Streaming<ApplyRequest>>,
    ) -> Result<Response<Self::ApplyStream>, Status> {
        let mut batches = req.into_inner();
        let (tx, rx) = mpsc::channel(4);
        let store = self.store.clone();
        let mut stopping = common::lifecycle::stopping();
        tokio::spawn(async move {
            // Stopping: every batch read is applied and answered, then the
            // stream ends cleanly and raftd sends the rest to the restarted
            // storaged. Cut after a batch applied and before its answer
            // left, the batch came back as a replay, whose results are gone:
            // a client saw "empty apply result" for a write that was made.
            while !*stopping.borrow_and_update() {
                let next = tokio::select! {
                    next = batches.next() => next,
                    _ = stopping.changed() => continue,
                };
                let Some(Ok(batch)) = next else { break };
                common::park_spin::expected_work_arrived();
                // Inline, not spawn_blocking: a batch applies in tens of
                // microseconds and a thread hand-off would cost more.
                let result = apply_events_first(&store, &batch.entries).await;
                let failed = result.is_err();
                if tx.send(result).await.is_err() || failed {
                    break;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn apply_soon(
        &self,
        req: Request<Streaming<ApplySoonNotice>>,
    ) -> Result<Response<ApplySoonResponse>, Status> {
        let mut notices = req.into_inner();
        while let Some(Ok(_)) = notices.next().await {
            crate::metrics::APPLY_HEADS_UPS.inc();
            common::park_spin::expect_work_within(APPLY_SOON_WINDOW);
        }
        Ok(Response::new(ApplySoonResponse {}))
    }

    async fn range(&self, req: Request<RangeRequest>) -> Result<Response<RangeResponse>, Status> {
        let who = common::proto::auth_of(&req);
        let span = req
            .metadata()
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .and_then(common::distributed_tracing::start_child);
        self.fence.admit(who.as_ref()).await?;
        let req = req.into_inner();
        let read = self.store.range(&req, who.as_ref());
        traced_read(span, &read);
        read.map(Response::new).map_err(Status::from)
    }

    type ReadsStream = ReceiverStream<Result<ReadReply, Status>>;

    /// Ranges as messages on one stream, answered in order.
    async fn reads(
        &self,
        req: Request<Streaming<ReadCall>>,
    ) -> Result<Response<Self::ReadsStream>, Status> {
        let mut calls = req.into_inner();
        let (tx, rx) = mpsc::channel(64);
        let (store, fence) = (self.store.clone(), self.fence.clone());
        tokio::spawn(async move {
            while let Some(Ok(call)) = calls.next().await {
                let request = call.request.unwrap_or_default();
                let span = common::distributed_tracing::start_child(&call.trace_parent);
                let read = match fence.admit(call.auth.as_ref()).await {
                    Ok(()) if call.chunk_bytes > 0 => store.range_chunk(
                        &request,
                        call.auth.as_ref(),
                        usize::try_from(call.chunk_bytes).unwrap_or(usize::MAX),
                    ),
                    Ok(()) => store.range(&request, call.auth.as_ref()),
                    Err(e) => Err(e.into()),
                };
                traced_read(span, &read);
                let reply = match read {
                    Ok(response) => ReadReply {
                        id: call.id,
                        response: Some(response),
                        failure: None,
                    },
                    Err(e) => ReadReply {
                        id: call.id,
                        response: None,
                        failure: Some((&Status::from(e)).into()),
                    },
                };
                if tx.send(Ok(reply)).await.is_err() {
                    break;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn wait_compaction(
        &self,
        req: Request<WaitCompactionRequest>,
    ) -> Result<Response<WaitCompactionResponse>, Status> {
        let rev = req.into_inner().revision;
        let mut done = self.store.compact_done.subscribe();
        done.wait_for(|d| *d >= rev)
            .await
            .map_err(|_| Status::unavailable("storaged is shutting down"))?;
        Ok(Response::new(WaitCompactionResponse {}))
    }

    async fn status(
        &self,
        _req: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        self.blocking(|s| s.status()).await.map(Response::new)
    }

    type EventsStream = crate::event_feed::EventStream;

    async fn events(
        &self,
        req: Request<EventsRequest>,
    ) -> Result<Response<Self::EventsStream>, Status> {
        let r = req.into_inner();
        let store = self.store.clone();
        Ok(Response::new(if r.revisions_only {
            crate::event_feed::revisions(store)
        } else {
            crate::event_feed::stream(store, r.start_revision, r.end_revision)
        }))
    }

    async fn leases(
        &self,
        _req: Request<LeasesRequest>,
    ) -> Result<Response<LeasesResponse>, Status> {
        let (leases, revision) = self.store.leases()?;
        Ok(Response::new(LeasesResponse { leases, revision }))
    }

    async fn lease_keys(
        &self,
        req: Request<LeaseKeysRequest>,
    ) -> Result<Response<LeaseKeysResponse>, Status> {
        let keys = self.store.lease_keys(req.into_inner().id)?;
        Ok(Response::new(LeaseKeysResponse {
            found: keys.is_some(),
            keys: keys.unwrap_or_default(),
        }))
    }

    async fn hash_kv(
        &self,
        req: Request<HashKvRequest>,
    ) -> Result<Response<HashKvResponse>, Status> {
        let revision = req.into_inner().revision;
        // Hash what every member keeps: wait out physical compaction.
        let compacted = self.store.bounds().compacted;
        let mut done = self.store.compact_done.subscribe();
        done.wait_for(|d| *d >= compacted)
            .await
            .map_err(|_| Status::unavailable("storaged is shutting down"))?;
        let (hash, current, compact_revision, hash_revision) = self.store.hash_kv(revision)?;
        Ok(Response::new(HashKvResponse {
            header: Some(ResponseHeader {
                revision: current,
                ..Default::default()
            }),
            hash,
            compact_revision,
            hash_revision,
        }))
    }

    async fn auth_resolve(
        &self,
        req: Request<AuthResolveRequest>,
    ) -> Result<Response<AuthResolveResponse>, Status> {
        let token = req.into_inner().token;
        let user = self.store.auth.resolve(&token).unwrap_or_default();
        Ok(Response::new(AuthResolveResponse { user }))
    }

    async fn auth_check(
        &self,
        req: Request<AuthCheckRequest>,
    ) -> Result<Response<AuthCheckResponse>, Status> {
        let r = req.into_inner();
        let need = r.need();
        let who = r.auth.unwrap_or_default();
        let state = self.store.auth.state();
        match need {
            Need::Admin => state.check_admin(&who.user)?,
            Need::Read => {
                check_range(&state, &who, &r.key, &r.range_end, Access::Read)?;
            }
        }
        Ok(Response::new(AuthCheckResponse {}))
    }

    async fn auth_query(
        &self,
        req: Request<AuthQueryRequest>,
    ) -> Result<Response<AuthQueryResponse>, Status> {
        let r = req.into_inner();
        let who = r.auth.unwrap_or_default();
        let state = self.store.auth.state();
        let revision = self.store.bounds().current;
        let answer = crate::auth::query(&state, &who.user, r.query, revision)?;
        Ok(Response::new(AuthQueryResponse {
            answer: Some(answer),
        }))
    }

    async fn auth_credentials(
        &self,
        req: Request<AuthCredentialsRequest>,
    ) -> Result<Response<AuthCredentialsResponse>, Status> {
        let name = req.into_inner().name;
        let state = self.store.auth.state();
        let user = state.user(&name);
        Ok(Response::new(AuthCredentialsResponse {
            enabled: state.enabled,
            found: user.is_some(),
            no_password: user
                .and_then(|u| u.options.as_ref())
                .is_some_and(|o| o.no_password),
            password_hash: user
                .map(|u| String::from_utf8_lossy(&u.password).into_owned())
                .unwrap_or_default(),
            auth_revision: state.revision,
        }))
    }

    async fn metrics(
        &self,
        _req: Request<MetricsRequest>,
    ) -> Result<Response<MetricsResponse>, Status> {
        Ok(Response::new(MetricsResponse {
            text: crate::metrics::render(),
        }))
    }

    async fn checkpoint(
        &self,
        _req: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        // Status first: what is persisted next includes at least this.
        let status = self
            .blocking(|store| {
                let s = store.status()?;
                store.persist()?;
                Ok(s)
            })
            .await?;
        Ok(Response::new(status))
    }

    type SnapshotStream = ReceiverStream<Result<SnapshotChunk, Status>>;

    async fn snapshot(
        &self,
        _req: Request<SnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        let (tx, rx) = mpsc::channel(2);
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || timed_snapshot(|| crate::snapshot::send(&store, tx)));
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    type EtcdSnapshotStream = ReceiverStream<Result<EtcdSnapshotChunk, Status>>;

    async fn etcd_snapshot(
        &self,
        _req: Request<SnapshotRequest>,
    ) -> Result<Response<Self::EtcdSnapshotStream>, Status> {
        let (tx, rx) = mpsc::channel(4);
        let store = self.store.clone();
        let file = crate::snapshot::export_file(&self.dir);
        tokio::task::spawn_blocking(move || {
            timed_snapshot(|| crate::etcd_export::send(&store, file, tx))
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn receive_snapshot(
        &self,
        req: Request<Streaming<SnapshotChunk>>,
    ) -> Result<Response<StatusResponse>, Status> {
        let _one = self.receiving.lock().await;
        let mut chunks = req.into_inner();
        let dir = self.dir.clone();
        let mut staging =
            tokio::task::spawn_blocking(move || crate::snapshot::Staging::create(&dir))
                .await
                .map_err(|e| Status::internal(e.to_string()))??;
        while let Some(chunk) = chunks.message().await? {
            staging = tokio::task::spawn_blocking(move || staging.write(chunk).map(|()| staging))
                .await
                .map_err(|e| Status::internal(e.to_string()))??;
        }
        let status = tokio::task::spawn_blocking(move || staging.finish())
            .await
            .map_err(|e| Status::internal(e.to_string()))??;
        tracing::info!(applied = ?status.applied, "received a snapshot");
        Ok(Response::new(status))
    }

    async fn activate_snapshot(
        &self,
        req: Request<ActivateSnapshotRequest>,
    ) -> Result<Response<ActivateSnapshotResponse>, Status> {
        let want = req.into_inner().applied;
        let applied = self.store.applied();
        if applied.map(|a| a.index) >= want.map(|w| w.index) {
            // Already this far (the snapshot was activated before a retry).
            return Ok(Response::new(ActivateSnapshotResponse {}));
        }
        crate::snapshot::mark_for_activation(&self.dir)?;
        tracing::info!(applied = ?want, "restarting to activate the received snapshot");
        let _ = self.restart.send(true);
        Ok(Response::new(ActivateSnapshotResponse {}))
    }

    async fn defragment(
        &self,
        _req: Request<DefragmentRequest>,
    ) -> Result<Response<DefragmentResponse>, Status> {
        self.blocking(|store| store.defragment()).await?;
        Ok(Response::new(DefragmentResponse { header: None }))
    }

    async fn identify(
        &self,
        req: Request<IdentifyRequest>,
    ) -> Result<Response<IdentifyResponse>, Status> {
        let r = req.into_inner();
        crate::identity::claim(&self.dir, r.cluster_id, r.member_id)
            .map_err(|e| Status::failed_precondition(e.to_string()))?;
        Ok(Response::new(IdentifyResponse {}))
    }

    async fn hash(&self, _req: Request<HashRequest>) -> Result<Response<HashResponse>, Status> {
        let (hash, revision) = self.blocking(|store| store.hash()).await?;
        Ok(Response::new(HashResponse {
            header: Some(ResponseHeader {
                revision,
                ..Default::default()
            }),
            hash,
        }))
    }
}

/// Stream a snapshot out, timed as etcd times its backend's snapshots
/// (the raft catch-up copy and a client's backup alike).
fn timed_snapshot(send: impl FnOnce()) {
    let started = std::time::Instant::now();
    send();
    crate::metrics::SNAPSHOT.observe(started.elapsed());
}

/// End a traced read's span.
fn traced_read<T, E: std::fmt::Display>(
    span: Option<common::distributed_tracing::ActiveSpan>,
    read: &Result<T, E>,
) {
    if let Some(span) = span {
        let error = read.as_ref().err().map(|e| e.to_string());
        span.finish(
            "storaged.Range",
            common::distributed_tracing::Kind::Internal,
            &[],
            error.as_deref(),
        );
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    use super::apply_events_first;
    use crate::store::Store;
    use crate::store_tests::put;

    #[tokio::test(flavor = "current_thread")]
    async fn a_batch_is_answered_only_after_its_event_feeds_ran() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        let mut events = store.subscribe();
        let seen = Arc::new(AtomicBool::new(false));
        let feed_saw = seen.clone();
        tokio::spawn(async move {
            if events.recv().await.is_ok() {
                feed_saw.store(true, Ordering::SeqCst);
            }
        });
        tokio::task::yield_now().await; // the feed waits for events now
        apply_events_first(&store, &[put(0, "k", "v")])
            .await
            .unwrap();
        assert!(
            seen.load(Ordering::SeqCst),
            "the feed had the event before the answer"
        );
    }
}
