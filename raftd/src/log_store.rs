//! The raft log and vote: entries in append-only segment files (`wal`, in
//! `wal/` inside raftd's directory), and the vote, committed hint, purge
//! mark and identity in the `meta` keyspace of raftd's small fjall
//! database.
//!
//! Appends are written to the segments without syncing and made durable by
//! `group_commit`'s flusher, which then writes the newest committed index
//! (a replay hint) into meta; votes are fsync'd before `save_vote` returns.
//! Purging only moves the purge mark (`purge` deletes the segments below
//! it). Reads of the newest entries (applying and replicating what was just
//! appended) are answered from memory (`RecentEntries`).

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use openraft::storage::{IOFlushed, LogState, RaftLogStorage};
use openraft::{OptionalSend, RaftLogReader};

use crate::apply_notice::ApplyNotice;
use crate::codec::{decode, encode};
use crate::group_commit::{group_commit, CommittedHint};
use crate::handoff::{Closer, HandoffQueue};
use crate::io_err;
use crate::purge::purge_below_marks;
use crate::recent_entries::RecentEntries;
use crate::types::{Entry, LogId, TypeConfig, Vote};
use crate::wal::{migrate, Wal, SEGMENT_BYTES};

const META_VOTE: &[u8] = b"vote";
pub(crate) const META_COMMITTED: &[u8] = b"committed";
const META_PURGED: &[u8] = b"purged";
const META_IDENTITY: &[u8] = b"identity";
/// Where the segment files are (absent: `WAL_DIR` inside raftd's dir).
const META_WAL_DIR: &[u8] = b"wal_dir";

/// The segment files' directory, inside raftd's unless `--wal-dir` names
/// another.
pub const WAL_DIR: &str = "wal";

#[derive(Clone)]
pub struct LogStore {
    pub(crate) db: Database,
    pub(crate) meta: Keyspace,
    wal: Arc<Wal>,
    flusher: Arc<Closer<IOFlushed<TypeConfig>>>,
    /// Purge marks for the purge thread.
    purger: Arc<Closer<u64>>,
    committed: Arc<CommittedHint>,
    /// The log's tail in memory, for reading back what was just appended.
    recent: Arc<RecentEntries>,
    /// Tells storaged when entries arrive (an Apply of them follows).
    notice: ApplyNotice,
}

/// The segment files' directory: `configured` (else `WAL_DIR` in `dir`),
/// recorded on first use. A log that has segments where it was recorded
/// stays there: moving it is the operator's, and starting on an empty
/// directory instead would lose every entry.
fn settle_wal_dir(meta: &Keyspace, dir: &Path, configured: Option<&Path>) -> io::Result<PathBuf> {
    let chosen = configured.map_or_else(|| dir.join(WAL_DIR), Path::to_path_buf);
    let recorded = match meta.get(META_WAL_DIR).map_err(io_err)? {
        Some(v) => PathBuf::from(std::ffi::OsStr::from_bytes(&v)),
        None => dir.join(WAL_DIR),
    };
    if recorded != chosen && crate::wal::has_segments(&recorded)? {
        return Err(io::Error::other(format!(
            "the raft log is in {}, not in {} (--wal-dir): move its files there, or set --wal-dir to it",
            recorded.display(),
            chosen.display()
        )));
    }
    if recorded != chosen || configured.is_some() {
        meta.insert(META_WAL_DIR, chosen.as_os_str().as_bytes())
            .map_err(io_err)?;
    }
    Ok(chosen)
}

#[derive(Clone)]
pub struct LogReader {
    wal: Arc<Wal>,
    meta: Keyspace,
    recent: Arc<RecentEntries>,
}

impl LogStore {
    pub fn open(dir: &Path) -> io::Result<LogStore> {
        LogStore::open_with(dir, None, SEGMENT_BYTES)
    }

    /// `open` with the segment files in `wal_dir` (etcd's `--wal-dir`).
    pub fn open_in(dir: &Path, wal_dir: Option<&Path>) -> io::Result<LogStore> {
        LogStore::open_with(dir, wal_dir, SEGMENT_BYTES)
    }

    /// `open_in` with segments of `segment_bytes`.
    pub fn open_with(
        dir: &Path,
        wal_dir: Option<&Path>,
        segment_bytes: u64,
    ) -> io::Result<LogStore> {
        let db = Database::builder(dir)
            .max_journaling_size(common::config::FJALL_MAX_JOURNAL_BYTES)
            .worker_threads(common::config::FJALL_WORKER_THREADS)
            .open()
            .map_err(io_err)?;
        let meta = db
            .keyspace("meta", KeyspaceCreateOptions::default)
            .map_err(io_err)?;
        let purged: Option<LogId> = match meta.get(META_PURGED).map_err(io_err)? {
            Some(v) => Some(decode(&v)?),
            None => None,
        };
        let wal_dir = settle_wal_dir(&meta, dir, wal_dir)?;
        migrate::from_fjall(&db, dir, &wal_dir, purged, segment_bytes)?;
        let wal = Arc::new(Wal::open(&wal_dir, purged, segment_bytes)?);
        common::durable::sync_tree(dir)?;
        if !wal_dir.starts_with(dir) {
            common::durable::sync_tree(&wal_dir)?;
        }
        let committed = Arc::new(CommittedHint::default());
        let flushes = Arc::new(HandoffQueue::default());
        let (flush_wal, flush_meta, flush_hint, flush_queue) = (
            wal.clone(),
            meta.clone(),
            committed.clone(),
            flushes.clone(),
        );
        std::thread::Builder::new()
            .name("raft-log-fsync".into())
            .spawn(move || group_commit(&flush_wal, &flush_meta, &flush_hint, &flush_queue))?;
        let purges = Arc::new(HandoffQueue::default());
        // Segments a crash left below the mark are deleted now.
        if let Some(mark) = purged {
            let _ = purges.push(mark.index);
        }
        let (purge_db, purge_wal, purge_queue) = (db.clone(), wal.clone(), purges.clone());
        std::thread::Builder::new()
            .name("raft-log-purge".into())
            .spawn(move || purge_below_marks(&purge_db, &purge_wal, &purge_queue))?;
        Ok(LogStore {
            db,
            meta,
            wal,
            flusher: Arc::new(Closer(flushes)),
            purger: Arc::new(Closer(purges)),
            committed,
            recent: Arc::default(),
            notice: ApplyNotice::default(),
        })
    }

    /// Give storaged a heads-up through `notice` whenever entries are
    /// appended.
    pub fn with_apply_notice(self, notice: ApplyNotice) -> LogStore {
        LogStore { notice, ..self }
    }

    pub fn reader(&self) -> LogReader {
        LogReader {
            wal: self.wal.clone(),
            meta: self.meta.clone(),
            recent: self.recent.clone(),
        }
    }

    /// (member ID, cluster ID) this raftd settled on when it first started.
    pub fn identity(&self) -> io::Result<Option<(u64, u64)>> {
        match self.meta.get(META_IDENTITY).map_err(io_err)? {
            Some(v) => Ok(Some(decode(&v)?)),
            None => Ok(None),
        }
    }

    pub fn save_identity(&self, identity: (u64, u64)) -> io::Result<()> {
        self.meta
            .insert(META_IDENTITY, encode(&identity)?)
            .map_err(io_err)?;
        self.sync_meta()
    }

    /// Append one entry durably, outside openraft (before it starts).
    pub fn append_now(&self, entry: Entry) -> io::Result<()> {
        self.recent.truncated_from(entry.log_id.index);
        let bytes = encode(&entry)?;
        self.write(&[(entry, bytes)])?;
        self.wal.sync_written().map(drop)
    }

    /// Write `entries` (each with its encoding) to the log, unsynced.
    /// Returns the bytes written.
    fn write(&self, entries: &[(Entry, Vec<u8>)]) -> io::Result<u64> {
        let records: Vec<(LogId, &[u8])> = entries
            .iter()
            .map(|(e, v)| (e.log_id, v.as_slice()))
            .collect();
        // Entries that do not follow the log's last (past a snapshot) are
        // written once the purge mark covering the gap is durable: see
        // `wal`'s recovery rules.
        self.wal.append(&records, || self.sync_meta())
    }

    pub(crate) fn sync_meta(&self) -> io::Result<()> {
        self.db.persist(PersistMode::SyncAll).map_err(io_err)
    }
}

impl RaftLogReader<TypeConfig> for LogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        let start = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => i.saturating_add(1),
            Bound::Unbounded => 0,
        };
        // Exclusive; None when unbounded (an inclusive u64::MAX is too).
        let end = match range.end_bound() {
            Bound::Included(i) => i.checked_add(1),
            Bound::Excluded(i) => Some(*i),
            Bound::Unbounded => None,
        };
        if let Some(entries) = end.and_then(|end| self.recent.get(start, end)) {
            return Ok(entries);
        }
        self.wal.read(start, end)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        match self.meta.get(META_VOTE).map_err(io_err)? {
            Some(v) => Ok(Some(decode(&v)?)),
            None => Ok(None),
        }
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        self.reader().try_get_log_entries(range).await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        self.reader().read_vote().await
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogReader;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let last_purged_log_id = self.wal.purged()?;
        // Entries at or below the purge mark may still be waiting for the
        // purge thread: the mark is the last log id then.
        let last = match (self.wal.last()?, last_purged_log_id) {
            (Some(last), Some(p)) if p.index >= last.index => Some(p),
            (Some(last), _) => Some(last),
            (None, p) => p,
        };
        Ok(LogState {
            last_purged_log_id,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.reader()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        self.meta.insert(META_VOTE, encode(vote)?).map_err(io_err)?;
        self.sync_meta()
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        // A hint for replay, not synced on its own: the flusher writes it
        // after a sync of the entries it names (see `CommittedHint`).
        self.committed.report(committed);
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        if let Some(newest) = self.committed.newest() {
            return Ok(newest);
        }
        match self.meta.get(META_COMMITTED).map_err(io_err)? {
            Some(v) => Ok(Some(decode(&v)?)),
            None => Ok(None),
        }
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<TypeConfig>,
    ) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut encoded = Vec::new();
        for e in entries {
            let bytes = encode(&e)?;
            encoded.push((e, bytes));
        }
        if !encoded.is_empty() {
            // Before the write and the fsync: storaged has their length to wake.
            self.notice.entries_appended();
        }
        let written = self.write(&encoded)?;
        crate::metrics::wal_written(usize::try_from(written).unwrap_or(usize::MAX));
        for (e, bytes) in encoded {
            self.recent.appended(e, bytes.len());
        }
        self.flusher.0.push(callback)
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let from = last_log_id.map_or(0, |l| l.index + 1);
        self.recent.truncated_from(from);
        self.wal.truncate_from(from)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        // Only the mark, unsynced: entries at or below it are never read
        // again, and a crash that loses it leaves them all in place, as if
        // this purge had not happened. The purge thread makes it durable
        // before it deletes any segment.
        self.recent.purged_through(log_id.index);
        self.wal.set_purged(log_id)?;
        self.meta
            .insert(META_PURGED, encode(&log_id)?)
            .map_err(io_err)?;
        self.purger.0.push(log_id.index)
    }
}

#[cfg(test)]
mod tests {
    /// What the in-memory tail answers is what the segment files hold,
    /// through appends, an overwriting append and a truncation.
    #[tokio::test]
    async fn reads_of_the_newest_entries_match_the_log() {
        use openraft::storage::{IOFlushed, RaftLogStorage};
        use openraft::RaftLogReader;

        let dir = tempfile::tempdir().expect("tempdir");
        let id = |term, index| {
            openraft::LogId::new(
                openraft::impls::leader_id_adv::LeaderId { term, node_id: 1 },
                index,
            )
        };
        let entry = |term, index| crate::types::Entry {
            log_id: id(term, index),
            payload: openraft::EntryPayload::Blank,
        };
        let mut store = super::LogStore::open(dir.path()).expect("open");
        let mut reader = store.get_log_reader().await;
        let from_disk = |store: &super::LogStore, range: std::ops::Range<u64>| {
            store.wal.read(range.start, Some(range.end)).expect("read")
        };
        store
            .append((1..=6).map(|i| entry(1, i)), IOFlushed::noop())
            .await
            .expect("append");
        store
            .append([entry(2, 5)], IOFlushed::noop())
            .await
            .expect("overwrite");
        for range in [1..6, 3..5, 5..6] {
            let read = reader
                .try_get_log_entries(range.clone())
                .await
                .expect("read");
            assert_eq!(read, from_disk(&store, range.clone()), "{range:?}");
        }
        assert_eq!(
            from_disk(&store, 1..10).len(),
            5,
            "6 went with the overwrite"
        );
        assert!(store.recent.get(5, 6).is_some(), "served from memory");
        store
            .truncate_after(Some(id(1, 3)))
            .await
            .expect("truncate");
        assert_eq!(store.recent.get(4, 5), None, "truncated entries are gone");
        let read = reader.try_get_log_entries(1..10).await.expect("read");
        assert_eq!(read, from_disk(&store, 1..10));
        assert_eq!(read.len(), 3);
    }

    /// The committed hint is written after a sync covering the entries it
    /// names, never before.
    #[tokio::test]
    async fn the_committed_hint_waits_for_its_entries() {
        use openraft::storage::{IOFlushed, RaftLogStorage};

        let dir = tempfile::tempdir().expect("tempdir");
        let id = |index| {
            openraft::LogId::new(
                openraft::impls::leader_id_adv::LeaderId {
                    term: 1,
                    node_id: 1,
                },
                index,
            )
        };
        let entry = |index| crate::types::Entry {
            log_id: id(index),
            payload: openraft::EntryPayload::Blank,
        };
        let written = |store: &super::LogStore| {
            store
                .meta
                .get(super::META_COMMITTED)
                .expect("get")
                .map(|v| super::decode::<crate::types::LogId>(&v).expect("decode"))
        };
        let mut store = super::LogStore::open(dir.path()).expect("open");
        store
            .append((1..=3).map(entry), IOFlushed::noop())
            .await
            .expect("append");
        // Named before its entry is in the log (as no caller does): held.
        store.save_committed(Some(id(4))).await.expect("hint");
        store.append([], IOFlushed::noop()).await.expect("a flush");
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert_eq!(written(&store), None, "ahead of the log: not written");
        assert_eq!(store.read_committed().await.expect("read"), Some(id(4)));
        store
            .append([entry(4)], IOFlushed::noop())
            .await
            .expect("append");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while written(&store) != Some(id(4)) {
            assert!(std::time::Instant::now() < deadline, "hint never written");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}
