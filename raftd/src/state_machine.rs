//! The openraft state machine is this member's storaged, reached over its
//! Unix socket. Each batch of committed entries becomes one storaged Apply;
//! while storaged is down raftd keeps retrying (applying pauses, nothing is
//! lost). If storaged reports a gap (it lost lazily-persisted entries in a
//! machine crash), the missing entries are re-read from the raft log and
//! sent first. A snapshot is storaged's own state: building one makes
//! storaged's applied state durable (so raftd may purge its log up to it),
//! installing one activates what storaged received from the leader.

use std::io;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, RaftLogReader, RaftSnapshotBuilder};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::apply_notice::ApplyNotice;
use crate::log_store::LogReader;
use crate::types::{
    from_wire, to_wire, Applied, Entry, LogId, Membership, Snapshot, SnapshotMeta,
    StoragedSnapshot, StoredMembership, TypeConfig,
};
use common::proto::storage::storage_client::StorageClient;
use common::proto::storage::{
    apply_entry::Payload, ActivateSnapshotRequest, ApplyEntry, ApplyRequest, ApplyResponse,
    StatusRequest, StatusResponse,
};

pub struct StateMachine {
    storage: StorageClient<Channel>,
    /// storaged's size after the last batch it applied.
    db_size: Arc<AtomicI64>,
    log: LogReader,
    apply_stream: Option<ApplyStream>,
    /// Heads-ups to storaged that an Apply is coming.
    notice: ApplyNotice,
}

/// The open Apply stream to storaged: batches go in, responses come back in order.
struct ApplyStream {
    tx: mpsc::Sender<ApplyRequest>,
    responses: tonic::Streaming<ApplyResponse>,
}

const RETRY: Duration = Duration::from_millis(100);
/// storaged ended its Apply stream cleanly: it answered every batch it
/// read (it is stopping), so the next batch simply waits for its restart.
const APPLY_STREAM_ENDED: &str = "storaged apply stream ended";

impl StateMachine {
    pub fn new(
        storage: StorageClient<Channel>,
        log: LogReader,
        db_size: Arc<AtomicI64>,
        notice: ApplyNotice,
    ) -> Self {
        StateMachine {
            storage,
            db_size,
            log,
            apply_stream: None,
            notice,
        }
    }

    /// storaged's status, waiting for storaged to come (back) up.
    async fn status(&mut self) -> StatusResponse {
        let mut warned = false;
        loop {
            match self.storage.status(StatusRequest {}).await {
                Ok(r) => return r.into_inner(),
                Err(e) => {
                    if !warned {
                        // Normal while storaged starts beside raftd or
                        // restarts; an apply that cannot reach it warns.
                        tracing::info!(error = %e.message(), "storaged unavailable; waiting");
                        warned = true;
                    }
                    tokio::time::sleep(RETRY).await;
                }
            }
        }
    }

    /// Apply `entries` on storaged, retrying through storaged restarts and
    /// filling gaps from the raft log. Results align with `entries`. The
    /// common case is one Apply call; storaged's applied index is consulted
    /// only when it reports a gap.
    async fn apply_batch(&mut self, entries: Vec<ApplyEntry>) -> io::Result<Vec<Vec<u8>>> {
        let first = entries
            .first()
            .and_then(|e| e.log_id)
            .map_or(0, |l| l.index);
        let mut replay: Vec<ApplyEntry> = Vec::new();
        let mut warned = false;
        loop {
            let replayed = replay.len();
            let mut batch = std::mem::take(&mut replay);
            batch.extend(entries.iter().cloned());
            let req = ApplyRequest { entries: batch };
            match self.apply_on_stream(req).await {
                Ok(r) => {
                    let ApplyResponse {
                        mut results,
                        db_size,
                        ..
                    } = r;
                    self.db_size.store(db_size, Ordering::Relaxed);
                    results.drain(..replayed.min(results.len()));
                    results.resize(entries.len(), Vec::new());
                    return Ok(results);
                }
                Err(s) if s.code() == Code::Internal => {
                    return Err(io::Error::other(format!(
                        "storaged failed to apply: {}",
                        s.message()
                    )));
                }
                Err(s) if s.code() == Code::FailedPrecondition => {
                    // storaged is behind this batch: send what it misses first.
                    replay = self.missing_before(first).await?;
                }
                Err(s) => {
                    if !warned {
                        if s.message() == APPLY_STREAM_ENDED {
                            // A stopping storaged answered all it took.
                            tracing::info!("storaged stopping; applying on its restart");
                        } else {
                            tracing::warn!(code = ?s.code(), error = %s.message(), "apply on storaged failed; retrying");
                        }
                        warned = true;
                    }
                    tokio::time::sleep(RETRY).await;
                }
            }
        }
    }

    /// One Apply over the long-lived stream to storaged (opened on first use
    /// and again after any failure; re-sending a batch is safe, Apply is
    /// idempotent).
    async fn apply_on_stream(&mut self, req: ApplyRequest) -> Result<ApplyResponse, Status> {
        let stream = match self.apply_stream.take() {
            Some(s) => s,
            None => {
                let (tx, rx) = mpsc::channel(4);
                let responses = self
                    .storage
                    .apply(ReceiverStream::new(rx))
                    .await?
                    .into_inner();
                self.notice.open(self.storage.clone());
                ApplyStream { tx, responses }
            }
        };
        let ApplyStream { tx, mut responses } = stream;
        self.notice.applying();
        if tx.send(req).await.is_err() {
            return Err(Status::unavailable("storaged apply stream closed"));
        }
        let resp = match responses.message().await? {
            Some(r) => r,
            None => return Err(Status::unavailable(APPLY_STREAM_ENDED)),
        };
        self.apply_stream = Some(ApplyStream { tx, responses });
        Ok(resp)
    }

    /// Entries between storaged's applied index and `first` (exclusive).
    async fn missing_before(&mut self, first: u64) -> io::Result<Vec<ApplyEntry>> {
        let applied = self.status().await.applied.map(|a| a.index);
        let from = applied.map_or(0, |a| a + 1);
        if from >= first {
            return Ok(Vec::new());
        }
        tracing::warn!(
            from,
            to = first,
            "storaged is behind; replaying from the raft log"
        );
        let entries = self.log.try_get_log_entries(from..first).await?;
        entries.iter().map(to_apply_entry).collect()
    }
}

fn to_apply_entry(e: &Entry) -> io::Result<ApplyEntry> {
    let payload = match &e.payload {
        EntryPayload::Blank => Payload::Blank(true),
        EntryPayload::Normal(p) => Payload::Request(p.0.clone()),
        EntryPayload::Membership(m) => {
            Payload::Membership(serde_json::to_vec(m).map_err(io::Error::other)?)
        }
    };
    Ok(ApplyEntry {
        log_id: Some(to_wire(&e.log_id)),
        payload: Some(payload),
    })
}

/// openraft's view of storaged's applied state: the snapshot it amounts to.
fn snapshot_meta(status: &StatusResponse) -> io::Result<Option<SnapshotMeta>> {
    let Some(applied) = status.applied.as_ref().map(from_wire) else {
        return Ok(None);
    };
    Ok(Some(SnapshotMeta {
        last_log_id: Some(applied),
        last_membership: membership_of(status)?,
    }))
}

fn membership_of(status: &StatusResponse) -> io::Result<StoredMembership> {
    if status.membership.is_empty() {
        return Ok(StoredMembership::default());
    }
    let m: Membership = serde_json::from_slice(&status.membership).map_err(io::Error::other)?;
    Ok(StoredMembership::new(
        status.membership_log_id.as_ref().map(from_wire),
        m,
    ))
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotData = StoragedSnapshot;
    type SnapshotBuilder = Checkpointer;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        let status = self.status().await;
        Ok((
            status.applied.as_ref().map(from_wire),
            membership_of(&status)?,
        ))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + Send,
    {
        let mut batch = Vec::new();
        let mut responders = Vec::new();
        while let Some(item) = entries.next().await {
            let (entry, responder) = item?;
            batch.push(to_apply_entry(&entry)?);
            responders.push(responder);
        }
        if batch.is_empty() {
            return Ok(());
        }
        let results = self.apply_batch(batch).await?;
        for (responder, result) in responders.into_iter().zip(results) {
            if let Some(r) = responder {
                r.send(Applied(result));
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        Checkpointer {
            storage: self.storage.clone(),
        }
    }

    /// storaged has received the snapshot (the peer server streamed it into
    /// its staging area): activate it and wait until storaged is back with
    /// at least that state.
    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        _snapshot: StoragedSnapshot,
    ) -> Result<(), io::Error> {
        let want = meta.last_log_id.as_ref().map(to_wire);
        let want_index = want.map_or(0, |w| w.index);
        self.apply_stream = None;
        let _applying = crate::metrics::SnapshotApplying::start();
        let activating = std::time::Instant::now();
        self.storage
            .activate_snapshot(ActivateSnapshotRequest { applied: want })
            .await
            .inspect(|_| crate::metrics::SNAP_DB_FSYNC.observe(activating.elapsed()))
            .map_err(|s| {
                io::Error::other(format!(
                    "storaged cannot activate the snapshot: {}",
                    s.message()
                ))
            })?;
        loop {
            let applied = self.status().await.applied.map_or(0, |a| a.index);
            if applied >= want_index {
                tracing::info!(applied, "snapshot installed");
                return Ok(());
            }
            tokio::time::sleep(RETRY).await;
        }
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        let status = self.status().await;
        Ok(snapshot_meta(&status)?.map(|meta| Snapshot {
            meta,
            snapshot: StoragedSnapshot,
        }))
    }
}

/// Builds a snapshot by making storaged's applied state durable.
pub struct Checkpointer {
    storage: StorageClient<Channel>,
}

impl RaftSnapshotBuilder<TypeConfig> for Checkpointer {
    type SnapshotData = StoragedSnapshot;

    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        let started = std::time::Instant::now();
        let status = self
            .storage
            .checkpoint(StatusRequest {})
            .await
            .map_err(|s| io::Error::other(format!("storaged checkpoint failed: {}", s.message())))?
            .into_inner();
        crate::metrics::SNAP_FSYNC.observe(started.elapsed());
        let marshalling = std::time::Instant::now();
        let meta = snapshot_meta(&status)?
            .ok_or_else(|| io::Error::other("nothing applied yet to snapshot"))?;
        crate::metrics::SNAP_MARSHALLING.observe(marshalling.elapsed());
        crate::metrics::SNAP_SAVE.observe(started.elapsed());
        tracing::info!(last = ?meta.last_log_id, "snapshot taken (storaged checkpointed)");
        Ok(Snapshot {
            meta,
            snapshot: StoragedSnapshot,
        })
    }
}
