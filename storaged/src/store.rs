//! The store's façade: opening it, the revision bounds and applied log id
//! held in memory, batch apply around `apply`'s chain, and reads, history,
//! hashes and status. A batch of committed entries is applied in one fjall
//! write transaction together with the applied log id, so apply is atomic
//! and idempotent (entries at or below `applied` are skipped). Commits are
//! flushed to the OS (not fsync'd): a storaged crash loses nothing, and
//! after a machine crash raftd replays from `applied`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Mutex;

use fjall::{PersistMode, SingleWriterTxDatabase, SingleWriterTxKeyspace};
use prost::Message;
use std::sync::Arc;

use tokio::sync::{broadcast, watch};

use crate::apply::Batch;
use crate::permission::Access;
use crate::read::{self, RevBounds};
use crate::schema::{
    get_i64, Keyspaces, META_APPLIED, META_COMPACTED, META_COMPACT_DONE, META_MEMBERSHIP,
    META_MEMBERSHIP_LOG_ID, META_PEER_SECRET, META_REVISION,
};
use crate::write::RevState;
use crate::StoreError;
use common::errors::EtcdError;
use common::proto::etcdserverpb::{RangeRequest, RangeResponse};
use common::proto::storage::{
    ApplyEntry, ApplyResponse, AuthInfo, EventBatch, LogId, StatusResponse,
};

pub struct Store {
    pub(crate) db: SingleWriterTxDatabase,
    pub(crate) ks: Keyspaces,
    current: AtomicI64,
    compacted: AtomicI64,
    applied: Mutex<Option<LogId>>,
    /// Serializes batches (raftd sends one at a time, but be safe).
    apply_lock: Mutex<()>,
    /// Newest logically compacted revision, for the compactor.
    pub(crate) compact_target: watch::Sender<i64>,
    /// Revision through which old revisions are physically removed.
    pub(crate) compact_done: watch::Sender<i64>,
    /// Every applied revision's events, published after its batch commits.
    pub(crate) events: broadcast::Sender<Arc<EventBatch>>,
    /// Users, roles and tokens.
    pub auth: crate::auth::Auth,
    /// The database directory (its journal files are synced directly).
    dir: PathBuf,
    _writeback: crate::journal_writeback::Writeback,
}

/// Revisions a live-event subscriber may fall behind before it must catch up
/// from the revision log instead.
const LIVE_EVENTS: usize = 4096;

impl Store {
    pub fn open(dir: &Path, cache_bytes: u64) -> Result<Store, StoreError> {
        let db = SingleWriterTxDatabase::builder(dir)
            .cache_size(cache_bytes)
            .max_journaling_size(common::config::FJALL_MAX_JOURNAL_BYTES)
            .worker_threads(common::config::FJALL_WORKER_THREADS)
            // Large values went through lz4 on the apply path, CPU on every
            // write for little space (the raft log already holds them raw).
            .journal_compression(fjall::CompressionType::None)
            .open()?;
        let ks = Keyspaces::open(&db)?;
        common::durable::sync_tree(dir).map_err(fjall::Error::Io)?;
        let auth = crate::auth::Auth::new(crate::auth::AuthState::load(&db.read_tx(), &ks)?);
        let applied = match ks.meta.get(META_APPLIED)? {
            Some(v) => Some(LogId::decode(v.as_ref())?),
            None => None,
        };
        // A fresh store starts at revision 1, like etcd.
        let current = get_i64(&db.read_tx(), &ks.meta, META_REVISION)?.max(1);
        let compacted = get_i64(&db.read_tx(), &ks.meta, META_COMPACTED)?;
        let done = get_i64(&db.read_tx(), &ks.meta, META_COMPACT_DONE)?;
        Ok(Store {
            db,
            ks,
            current: AtomicI64::new(current),
            compacted: AtomicI64::new(compacted),
            applied: Mutex::new(applied),
            apply_lock: Mutex::new(()),
            compact_target: watch::Sender::new(compacted),
            compact_done: watch::Sender::new(done),
            events: broadcast::Sender::new(LIVE_EVENTS),
            auth,
            dir: dir.to_path_buf(),
            // Not a snapshot error (what a bare io::Error converts to).
            _writeback: crate::journal_writeback::Writeback::start(dir)
                .map_err(|e| StoreError::Fjall(fjall::Error::Io(e)))?,
        })
    }

    pub fn bounds(&self) -> RevBounds {
        RevBounds {
            current: self.current.load(Ordering::Acquire),
            compacted: self.compacted.load(Ordering::Acquire),
        }
    }

    pub fn applied(&self) -> Option<LogId> {
        self.applied.lock().map(|a| *a).unwrap_or(None)
    }

    /// A serializable read at the request's revision, by a client (`who`)
    /// or by the member itself (None).
    pub fn range(
        &self,
        req: &RangeRequest,
        who: Option<&AuthInfo>,
    ) -> Result<RangeResponse, StoreError> {
        self.read_checked(req, who, |snapshot, index, bounds| {
            read::range_request(snapshot, index, req, bounds)
        })
    }

    /// One chunk of a streamed range (see `read::range_chunk`), checked as
    /// `range` checks the caller.
    pub fn range_chunk(
        &self,
        req: &RangeRequest,
        who: Option<&AuthInfo>,
        max_bytes: usize,
    ) -> Result<RangeResponse, StoreError> {
        self.read_checked(req, who, |snapshot, index, bounds| {
            read::range_chunk(snapshot, index, req, bounds, max_bytes)
        })
    }

    /// A read of `req`'s keys by `who` (permission checked first) in a
    /// fresh snapshot, timed for etcd's slow-request warning.
    fn read_checked(
        &self,
        req: &RangeRequest,
        who: Option<&AuthInfo>,
        read: impl FnOnce(
            &fjall::Snapshot,
            &fjall::Keyspace,
            read::RevBounds,
        ) -> Result<RangeResponse, StoreError>,
    ) -> Result<RangeResponse, StoreError> {
        if let Some(info) = who {
            let state = self.auth.state();
            crate::permission::check_range(&state, info, &req.key, &req.range_end, Access::Read)?;
        }
        let started = std::time::Instant::now();
        let bounds = self.bounds();
        let _open = crate::metrics::OpenRead::start();
        let snapshot = self.db.read_tx();
        let resp = read(&snapshot, self.ks.index.as_ref(), bounds);
        crate::slow_request::check_range(started, req, resp.as_ref().ok());
        resp
    }

    /// Apply a batch of committed entries atomically with the applied id.
    pub fn apply(&self, entries: &[ApplyEntry]) -> Result<ApplyResponse, StoreError> {
        let _serial = self.apply_lock.lock().map_err(|_| StoreError::Poisoned)?;
        let mut applied = self.applied();
        let mut revs = RevState {
            current: self.current.load(Ordering::Acquire),
            compacted: self.compacted.load(Ordering::Acquire),
        };
        let mut tx = self.db.write_tx().durability(Some(PersistMode::Buffer));
        let mut results = Vec::with_capacity(entries.len());
        let mut published = Vec::new();
        let mut alarms = crate::alarm::list(&tx, &self.ks)?;
        let mut auth = self.auth.state();
        let mut batch = Batch {
            tx: &mut tx,
            ks: &self.ks,
            revs: &mut revs,
            alarms: &mut alarms,
            published: &mut published,
            auth_state: &mut auth,
            auth: &self.auth,
        };
        for entry in entries {
            let log_id = entry.log_id.ok_or(StoreError::MissingLogId)?;
            let next = applied.map_or(0, |a| a.index + 1);
            if log_id.index < next {
                results.push(Vec::new()); // a replay of something already applied
                continue;
            }
            if log_id.index > next {
                return Err(StoreError::Gap {
                    applied: applied.map(|a| a.index),
                    got: log_id.index,
                });
            }
            results.push(batch.entry(&log_id, entry.payload.as_ref())?);
            applied = Some(log_id);
        }
        if let Some(a) = applied {
            tx.insert(&self.ks.meta, META_APPLIED, a.encode_to_vec());
        }
        tx.insert(&self.ks.meta, META_REVISION, revs.current.to_be_bytes());
        tx.insert(&self.ks.meta, META_COMPACTED, revs.compacted.to_be_bytes());
        let started = std::time::Instant::now();
        tx.commit()?;
        crate::metrics::BACKEND_COMMIT.observe(started.elapsed());
        crate::metrics::APPLY_BATCHES.inc();
        self.auth.publish(auth);
        // Publish only after the commit is visible to readers.
        self.current.store(revs.current, Ordering::Release);
        self.compacted.store(revs.compacted, Ordering::Release);
        if let Ok(mut a) = self.applied.lock() {
            *a = applied;
        }
        self.compact_target.send_if_modified(|t| {
            let changed = *t != revs.compacted;
            *t = revs.compacted;
            changed
        });
        // Watch events go out only once readers can see them (see `events`).
        for batch in published {
            let _ = self.events.send(Arc::new(batch));
        }
        let db_size = self.data_size() as i64;
        crate::metrics::DB_SIZE.set(db_size);
        crate::metrics::DB_SIZE_IN_USE.set(db_size);
        Ok(ApplyResponse {
            results,
            applied,
            db_size,
        })
    }

    /// Events of revisions `from..=to` from the revision log (at most
    /// `max_revs` revisions), or etcd's compacted error.
    pub fn history(
        &self,
        from: i64,
        to: i64,
        max_revs: usize,
    ) -> Result<Vec<EventBatch>, StoreError> {
        let snapshot = self.db.read_tx();
        let batches = crate::events::history(&snapshot, &self.ks, from, to, max_revs)?;
        // Compaction may have removed part of what was read meanwhile.
        if from < self.bounds().compacted {
            return Err(EtcdError::Compacted.into());
        }
        Ok(batches)
    }

    /// Live events from now on: subscribe *before* reading `bounds().current`;
    /// every revision above that current arrives on the receiver.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<EventBatch>> {
        self.events.subscribe()
    }

    /// Every lease, and the revision they were read at.
    pub fn leases(&self) -> Result<(Vec<common::proto::storage::LeaseInfo>, i64), StoreError> {
        let revision = self.bounds().current;
        Ok((crate::lease::all(&self.db.read_tx(), &self.ks)?, revision))
    }

    /// The keys attached to `lease`; None if there is no such lease.
    /// etcd's HashKV at `revision` (0 = current): (hash, current revision,
    /// compacted revision, revision hashed). Physical compaction must have caught up first
    /// so members hash the same stored revisions.
    pub fn hash_kv(&self, revision: i64) -> Result<(u32, i64, i64, i64), StoreError> {
        let bounds = self.bounds();
        if revision > 0 && revision <= bounds.compacted {
            return Err(EtcdError::Compacted.into());
        }
        if revision > bounds.current {
            return Err(EtcdError::FutureRev.into());
        }
        let upto = if revision == 0 {
            bounds.current
        } else {
            revision
        };
        let started = std::time::Instant::now();
        let hash = crate::hash::hash_kv(&self.db.read_tx(), &self.ks, upto, bounds.compacted)?;
        crate::metrics::HASH_REV.observe(started.elapsed());
        // etcd reports -1 before the first compaction.
        let compacted = if bounds.compacted == 0 {
            -1
        } else {
            bounds.compacted
        };
        Ok((hash, bounds.current, compacted, upto))
    }

    /// etcd's Hash of the whole store: (hash, current revision).
    pub fn hash(&self) -> Result<(u32, i64), StoreError> {
        let started = std::time::Instant::now();
        let snap = self.db.read_tx();
        let hash = crate::hash::hash_all(&snap, &self.keyspaces())?;
        crate::metrics::HASH.observe(started.elapsed());
        Ok((hash, self.status_at(&snap)?.revision))
    }

    pub fn lease_keys(&self, lease: i64) -> Result<Option<Vec<Vec<u8>>>, StoreError> {
        crate::lease::keys_of(&self.db.read_tx(), &self.ks, lease)
    }

    /// Flush and fully compact every keyspace: deleted and compacted data
    /// leave the disk and the journals can go. Blocking; writes continue.
    pub fn defragment(&self) -> Result<(), StoreError> {
        let started = std::time::Instant::now();
        crate::metrics::DEFRAG_INFLIGHT.set(1);
        let done = self.keyspaces().into_iter().try_for_each(|ks| {
            let ks: &fjall::Keyspace = ks.as_ref();
            ks.rotate_memtable_and_wait()?;
            ks.major_compact()
        });
        crate::metrics::DEFRAG_INFLIGHT.set(0);
        crate::metrics::DEFRAG.observe(started.elapsed());
        Ok(done?)
    }

    /// The live keys at a snapshot, and the key changes apply had counted
    /// (`metrics::KEYS_CHANGED`) when it was taken. Reads every key once.
    pub fn count_keys(&self) -> Result<(i64, i64), StoreError> {
        let (snapshot, bounds, changed) = {
            let _serial = self.apply_lock.lock().map_err(|_| StoreError::Poisoned)?;
            let changed = crate::metrics::KEYS_CHANGED.load(Ordering::Relaxed);
            (self.db.read_tx(), self.bounds(), changed)
        };
        let all = read::KeyRange::new(&[0], &[0]);
        let (_, count) = read::scan(
            &snapshot,
            self.ks.index.as_ref(),
            &all,
            bounds.current,
            0,
            false,
        )?;
        Ok((count, changed))
    }

    /// The auth store's revision.
    pub fn auth_revision(&self) -> u64 {
        self.auth.state().revision
    }

    /// Make everything applied so far durable (a checkpoint; graceful
    /// shutdown). fjall's buffer is flushed under its journal lock, the
    /// journal files are fsync'd outside it: an fsync under the lock would
    /// hold up every apply meanwhile.
    pub fn persist(&self) -> Result<(), StoreError> {
        self.db.persist(PersistMode::Buffer)?;
        crate::journal_writeback::sync_journals(&self.dir).map_err(StoreError::JournalSync)
    }

    pub fn status(&self) -> Result<StatusResponse, StoreError> {
        let mut s = self.status_at(&self.db.read_tx())?;
        let db_size = self.data_size() as i64;
        s.db_size = db_size;
        s.db_size_in_use = db_size;
        Ok(s)
    }

    /// The applied state as a read snapshot `r` sees it (sizes left out).
    pub fn status_at<R: fjall::Readable>(&self, r: &R) -> Result<StatusResponse, StoreError> {
        let meta = &self.ks.meta;
        let membership = r
            .get(meta, META_MEMBERSHIP)?
            .map(|v| v.to_vec())
            .unwrap_or_default();
        let membership_log_id = match r.get(meta, META_MEMBERSHIP_LOG_ID)? {
            Some(v) => Some(LogId::decode(v.as_ref())?),
            None => None,
        };
        let applied = match r.get(meta, META_APPLIED)? {
            Some(v) => Some(LogId::decode(v.as_ref())?),
            None => None,
        };
        let peer_secret = r
            .get(meta, META_PEER_SECRET)?
            .map(|v| v.to_vec())
            .unwrap_or_default();
        let (cluster_version, downgrade, member_versions) = crate::versions::read(r, &self.ks)?;
        Ok(StatusResponse {
            cluster_version,
            downgrade,
            member_versions,
            peer_secret,
            applied,
            membership_log_id,
            membership,
            revision: get_i64(r, meta, META_REVISION)?.max(1),
            compact_revision: get_i64(r, meta, META_COMPACTED)?,
            db_size: 0,
            db_size_in_use: 0,
            alarms: crate::alarm::list(r, &self.ks)?,
        })
    }

    /// The store's size as etcd's quota and Status see a backend's: the
    /// keyspaces' tables plus what is still in memtables (not fjall's
    /// preallocated journal files).
    pub fn data_size(&self) -> u64 {
        let tables: u64 = self
            .keyspaces()
            .iter()
            .map(|ks| AsRef::<fjall::Keyspace>::as_ref(*ks).disk_space())
            .sum();
        tables + self.db.write_buffer_size()
    }

    /// Every keyspace, in KEYSPACES order.
    pub fn keyspaces(&self) -> [&SingleWriterTxKeyspace; 6] {
        self.ks.all()
    }
}
