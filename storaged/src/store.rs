//! The MVCC store on fjall: keyspaces, the applied raft log id and revision
//! counters in `meta`, and batch apply. A batch of committed entries is
//! applied in one fjall write transaction together with the applied log id,
//! so apply is atomic and idempotent (entries at or below `applied` are
//! skipped). Commits are flushed to the OS (not fsync'd): a storaged crash
//! loses nothing, and after a machine crash raftd replays from `applied`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Mutex;

use fjall::{KeyspaceCreateOptions, PersistMode, SingleWriterTxDatabase, SingleWriterTxKeyspace};
use prost::Message;
use std::sync::Arc;

use tokio::sync::{broadcast, watch};

use crate::auth::AuthState;
use crate::permission::Access;
use crate::read::{self, RevBounds};
use crate::write::{self, RevState, WriteTxn};
use crate::StoreError;
use common::errors::EtcdError;
use common::nested_txn::NestedError;
use common::proto::etcdserverpb::{AlarmMember, RangeRequest, RangeResponse};
use common::proto::storage::{
    apply_entry::Payload, raft_request::Op, raft_result::Result as Outcome, ApplyEntry,
    ApplyResponse, AuthChanged, AuthInfo, EventBatch, LogId, RaftRequest, RaftResult,
    StatusResponse,
};

pub(crate) const META_APPLIED: &[u8] = b"applied";
pub(crate) const META_MEMBERSHIP: &[u8] = b"membership";
pub(crate) const META_MEMBERSHIP_LOG_ID: &[u8] = b"membership_log_id";
const META_REVISION: &[u8] = b"revision";
const META_COMPACTED: &[u8] = b"compacted";
pub(crate) const META_COMPACT_DONE: &[u8] = b"compact_done";
const META_PEER_SECRET: &[u8] = b"peer_secret";

/// The keyspaces in snapshot order (a snapshot entry names its keyspace by
/// position here).
pub const KEYSPACES: [&str; 6] = ["index", "revs", "leases", "lease_keys", "meta", "auth"];
/// `meta`'s position in KEYSPACES.
pub const META_KEYSPACE: usize = 4;

pub struct Keyspaces {
    /// (escaped key, inverted revision) → record: the key index with values.
    pub index: SingleWriterTxKeyspace,
    /// revision → escaped key: the change log (compaction, watch history).
    pub revs: SingleWriterTxKeyspace,
    /// lease id → lease record.
    pub leases: SingleWriterTxKeyspace,
    /// lease id ++ key → (): the keys attached to each lease.
    pub lease_keys: SingleWriterTxKeyspace,
    /// applied log id, membership, revision counters.
    pub meta: SingleWriterTxKeyspace,
    /// the auth store: users, roles, enabled, auth revision.
    pub auth: SingleWriterTxKeyspace,
}

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

fn get_i64(ks: &SingleWriterTxKeyspace, key: &[u8]) -> Result<i64, StoreError> {
    match ks.get(key)? {
        None => Ok(0),
        Some(v) => Ok(i64::from_be_bytes(
            v.as_ref().try_into().map_err(|_| StoreError::CorruptKey)?,
        )),
    }
}

impl Store {
    pub fn open(dir: &Path, cache_bytes: u64) -> Result<Store, StoreError> {
        let db = SingleWriterTxDatabase::builder(dir)
            .cache_size(cache_bytes)
            .max_journaling_size(common::config::FJALL_MAX_JOURNAL_BYTES)
            .open()?;
        let [index, revs, leases, lease_keys, meta, auth] =
            KEYSPACES.map(|name| db.keyspace(name, KeyspaceCreateOptions::default));
        let ks = Keyspaces {
            index: index?,
            revs: revs?,
            leases: leases?,
            lease_keys: lease_keys?,
            meta: meta?,
            auth: auth?,
        };
        let auth = crate::auth::Auth::new(crate::auth::AuthState::load(&db.read_tx(), &ks)?);
        let applied = match ks.meta.get(META_APPLIED)? {
            Some(v) => Some(LogId::decode(v.as_ref())?),
            None => None,
        };
        // A fresh store starts at revision 1, like etcd.
        let current = get_i64(&ks.meta, META_REVISION)?.max(1);
        let compacted = get_i64(&ks.meta, META_COMPACTED)?;
        let done = get_i64(&ks.meta, META_COMPACT_DONE)?;
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
        if let Some(info) = who {
            let state = self.auth.state();
            crate::permission::check_range(&state, info, &req.key, &req.range_end, Access::Read)?;
        }
        let bounds = self.bounds();
        let snapshot = self.db.read_tx();
        read::range_request(&snapshot, self.ks.index.as_ref(), req, bounds)
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
            let result = match &entry.payload {
                Some(Payload::Request(bytes)) => {
                    let outcome = match common::nested_txn::raft_request(bytes) {
                        Ok(req) => {
                            let mut batch = Batch {
                                tx: &mut tx,
                                ks: &self.ks,
                                revs: &mut revs,
                                alarms: &mut alarms,
                                published: &mut published,
                                auth_state: &mut auth,
                                auth: &self.auth,
                            };
                            batch.apply(&req)?
                        }
                        Err(e) => {
                            tracing::warn!(index = log_id.index, error = %e, "undecodable raft request");
                            let refusal = match e {
                                NestedError::TooDeep => EtcdError::TooManyOps,
                                NestedError::Decode(_) => EtcdError::Malformed,
                            };
                            Some(Outcome::Error(refusal.wire_code()))
                        }
                    };
                    outcome
                        .map(|o| RaftResult { result: Some(o) }.encode_to_vec())
                        .unwrap_or_default()
                }
                Some(Payload::Membership(m)) => {
                    tx.insert(&self.ks.meta, META_MEMBERSHIP, m.clone());
                    tx.insert(
                        &self.ks.meta,
                        META_MEMBERSHIP_LOG_ID,
                        log_id.encode_to_vec(),
                    );
                    Vec::new()
                }
                Some(Payload::Blank(_)) | None => Vec::new(),
            };
            results.push(result);
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
        let hash = crate::hash::hash_kv(&self.db.read_tx(), &self.ks, upto, bounds.compacted)?;
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
        let snap = self.db.read_tx();
        let hash = crate::hash::hash_all(&snap, &self.keyspaces())?;
        Ok((hash, self.status_at(&snap)?.revision))
    }

    pub fn lease_keys(&self, lease: i64) -> Result<Option<Vec<Vec<u8>>>, StoreError> {
        crate::lease::keys_of(&self.db.read_tx(), &self.ks, lease)
    }

    /// Flush and fully compact every keyspace: deleted and compacted data
    /// leave the disk and the journals can go. Blocking; writes continue.
    pub fn defragment(&self) -> Result<(), StoreError> {
        for ks in self.keyspaces() {
            let ks: &fjall::Keyspace = ks.as_ref();
            ks.rotate_memtable_and_wait()?;
            ks.major_compact()?;
        }
        Ok(())
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
        Ok(StatusResponse {
            peer_secret,
            applied,
            membership_log_id,
            membership,
            revision: get_i64_at(r, meta, META_REVISION)?.max(1),
            compact_revision: get_i64_at(r, meta, META_COMPACTED)?,
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
        let ks = &self.ks;
        [
            &ks.index,
            &ks.revs,
            &ks.leases,
            &ks.lease_keys,
            &ks.meta,
            &ks.auth,
        ]
    }
}

fn get_i64_at<R: fjall::Readable>(
    r: &R,
    ks: &SingleWriterTxKeyspace,
    key: &[u8],
) -> Result<i64, StoreError> {
    match r.get(ks, key)? {
        None => Ok(0),
        Some(v) => Ok(i64::from_be_bytes(
            v.as_ref().try_into().map_err(|_| StoreError::CorruptKey)?,
        )),
    }
}

/// What one Apply batch works on: its transaction and running state.
struct Batch<'a, 'b> {
    tx: &'a mut fjall::SingleWriterWriteTx<'b>,
    ks: &'a Keyspaces,
    revs: &'a mut RevState,
    alarms: &'a mut Vec<AlarmMember>,
    published: &'a mut Vec<EventBatch>,
    /// The auth store as of this point in the batch.
    auth_state: &'a mut Arc<AuthState>,
    auth: &'a crate::auth::Auth,
}

impl Batch<'_, '_> {
    /// One request's effect inside the batch transaction. Etcd errors are
    /// results (the entry is applied, nothing changes); storage errors
    /// abort the whole batch.
    fn apply(&mut self, req: &RaftRequest) -> Result<Option<Outcome>, StoreError> {
        let Some(op) = &req.op else {
            return Ok(Some(Outcome::Error(EtcdError::Malformed.wire_code())));
        };
        // Refused before anything is written, identically on every member.
        if let Err(e) = common::validate::storable(req) {
            return Ok(Some(Outcome::Error(e.wire_code())));
        }
        let refused = match &req.auth {
            Some(who) => self.refused_by_auth(who, op)?,
            None => None,
        };
        let outcome = match (crate::alarm::refuse(self.alarms, op).or(refused), op) {
            (Some(refused), _) => Err(StoreError::Etcd(refused)),
            (None, Op::AuthChange(c)) => {
                let who = req.auth.as_ref().map(|a| a.user.as_str());
                let mut changer = crate::auth::Changer {
                    tx: self.tx,
                    ks: self.ks,
                    state: self.auth_state,
                    auth: self.auth,
                };
                changer
                    .apply(c, who)
                    .map(|auth_revision| {
                        Outcome::AuthChanged(AuthChanged {
                            revision: self.revs.current,
                            auth_revision,
                        })
                    })
                    .map_err(StoreError::Etcd)
            }
            (None, Op::Compaction(c)) => write::compaction(self.revs, c).map(Outcome::Compaction),
            (None, Op::Alarm(a)) => {
                crate::alarm::apply(self.tx, self.ks, self.alarms, a).map(Outcome::Alarm)
            }
            (None, Op::PeerSecret(secret)) => self.keep_peer_secret(req, secret),
            (None, op) => self.write(op),
        };
        match outcome {
            Ok(o) => Ok(Some(o)),
            Err(StoreError::Etcd(e)) => Ok(Some(Outcome::Error(e.wire_code()))),
            Err(other) => Err(other),
        }
    }

    /// The first peer secret applied stays (only the member's own request,
    /// never a client's, may propose one).
    fn keep_peer_secret(
        &mut self,
        req: &RaftRequest,
        secret: &[u8],
    ) -> Result<Outcome, StoreError> {
        if req.auth.is_some() || secret.is_empty() {
            return Err(EtcdError::NotCapable.into());
        }
        if fjall::Readable::contains_key(&*self.tx, &self.ks.meta, META_PEER_SECRET)? {
            return Ok(Outcome::PeerSecret(false));
        }
        self.tx.insert(&self.ks.meta, META_PEER_SECRET, secret);
        Ok(Outcome::PeerSecret(true))
    }

    /// etcd's auth applier: whether `who` may do `op` (auth changes judge
    /// themselves).
    fn refused_by_auth(&self, who: &AuthInfo, op: &Op) -> Result<Option<EtcdError>, StoreError> {
        let tx: &fjall::SingleWriterWriteTx<'_> = self.tx;
        let lease_keys = |lease| crate::lease::keys_of(tx, self.ks, lease);
        match crate::permission::check_op(self.auth_state, who, op, &lease_keys) {
            Ok(()) => Ok(None),
            Err(StoreError::Etcd(e)) => Ok(Some(e)),
            Err(other) => Err(other),
        }
    }

    /// A write to the key space: a new revision (and its events) if any.
    fn write(&mut self, op: &Op) -> Result<Outcome, StoreError> {
        let mut w = WriteTxn::new(self.tx, self.ks, *self.revs);
        let out = match op {
            Op::Put(p) => w.put(p).map(Outcome::Put),
            Op::DeleteRange(d) => w.delete_range(d).map(Outcome::DeleteRange),
            Op::Txn(t) => w.txn(t).map(Outcome::Txn),
            Op::LeaseGrant(g) => w.lease_grant(g).map(Outcome::LeaseGrant),
            Op::LeaseRevoke(r) => w.lease_revoke(r).map(Outcome::LeaseRevoke),
            Op::LeaseCheckpoint(c) => w.lease_checkpoint(c).map(Outcome::LeaseCheckpoint),
            Op::Compaction(_) | Op::Alarm(_) | Op::AuthChange(_) | Op::PeerSecret(_) => {
                unreachable_op()
            }
        };
        if out.is_ok() {
            self.revs.current = w.rev();
            let events = w.take_events();
            if !events.is_empty() {
                self.published.push(EventBatch {
                    revision: self.revs.current,
                    events,
                    compact_revision: 0,
                });
            }
        }
        out
    }
}

fn unreachable_op() -> Result<Outcome, StoreError> {
    Err(StoreError::Etcd(EtcdError::NotCapable))
}
