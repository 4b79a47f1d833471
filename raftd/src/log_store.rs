//! The raft log and vote on fjall, in raftd's own database.
//!
//! Appends go into fjall without syncing and are made durable by
//! `group_commit`'s flusher; votes are fsync'd before `save_vote` returns.
//! The committed index (a replay hint) rides along with the next append
//! instead of costing a journal write of its own on every commit. Purging
//! only moves the purge mark (`purge` deletes below it). Reads of the
//! newest entries (applying and replicating what was just appended) are
//! answered from memory (`RecentEntries`).

use std::fmt::Debug;
use std::io;

use crate::io_err;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::{Arc, Mutex};

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};

use crate::group_commit::group_commit;
use crate::handoff::{Closer, HandoffQueue};
use crate::purge::purge_below_marks;
use openraft::storage::{IOFlushed, LogState, RaftLogStorage};
use openraft::{OptionalSend, RaftLogReader};

use crate::recent_entries::RecentEntries;
use crate::types::{Entry, LogId, TypeConfig, Vote};

const META_VOTE: &[u8] = b"vote";
const META_COMMITTED: &[u8] = b"committed";
const META_PURGED: &[u8] = b"purged";
const META_IDENTITY: &[u8] = b"identity";

use crate::apply_notice::ApplyNotice;
use crate::codec::{decode, encode};

#[derive(Clone)]
pub struct LogStore {
    db: Database,
    log: Keyspace,
    meta: Keyspace,
    flusher: Arc<Closer<IOFlushed<TypeConfig>>>,
    /// Purge marks for the purge thread.
    purger: Arc<Closer<u64>>,
    /// The newest committed index openraft reported, not yet written.
    committed: Arc<Mutex<Option<Option<LogId>>>>,
    /// The log's tail in memory, for reading back what was just appended.
    recent: Arc<RecentEntries>,
    /// Tells storaged when entries arrive (an Apply of them follows).
    notice: ApplyNotice,
}

#[derive(Clone)]
pub struct LogReader {
    log: Keyspace,
    meta: Keyspace,
    recent: Arc<RecentEntries>,
}

impl LogStore {
    pub fn open(dir: &Path) -> Result<LogStore, fjall::Error> {
        let db = Database::builder(dir)
            .max_journaling_size(common::config::FJALL_MAX_JOURNAL_BYTES)
            .open()?;
        let log = db.keyspace("log", KeyspaceCreateOptions::default)?;
        let meta = db.keyspace("meta", KeyspaceCreateOptions::default)?;
        common::durable::sync_tree(dir).map_err(fjall::Error::Io)?;
        let flushes = Arc::new(HandoffQueue::default());
        let (flush_db, flush_queue) = (db.clone(), flushes.clone());
        std::thread::Builder::new()
            .name("raft-log-fsync".into())
            .spawn(move || group_commit(flush_db, &flush_queue))
            .map_err(fjall::Error::Io)?;
        let purges = Arc::new(HandoffQueue::default());
        // Entries a crash left below the mark are deleted now.
        if let Some(mark) = meta.get(META_PURGED)? {
            let mark: LogId = decode(&mark).map_err(fjall::Error::Io)?;
            let _ = purges.push(mark.index);
        }
        let (purge_db, purge_log, purge_queue) = (db.clone(), log.clone(), purges.clone());
        std::thread::Builder::new()
            .name("raft-log-purge".into())
            .spawn(move || purge_below_marks(&purge_db, &purge_log, &purge_queue))
            .map_err(fjall::Error::Io)?;
        Ok(LogStore {
            db,
            log,
            meta,
            flusher: Arc::new(Closer(flushes)),
            purger: Arc::new(Closer(purges)),
            committed: Arc::default(),
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
            log: self.log.clone(),
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
        self.sync()
    }

    /// Append one entry durably, outside openraft (before it starts).
    pub fn append_now(&self, entry: Entry) -> io::Result<()> {
        self.recent.truncated_from(entry.log_id.index);
        self.log
            .insert(entry.log_id.index.to_be_bytes(), encode(&entry)?)
            .map_err(io_err)?;
        self.sync()
    }

    fn sync(&self) -> io::Result<()> {
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
        let iter = match end {
            Some(end) => {
                if let Some(entries) = self.recent.get(start, end) {
                    return Ok(entries);
                }
                self.log.range(start.to_be_bytes()..end.to_be_bytes())
            }
            None => self.log.range(start.to_be_bytes()..),
        };
        let mut out = Vec::new();
        for g in iter {
            let (_, v) = g.into_inner().map_err(io_err)?;
            out.push(decode(&v)?);
        }
        Ok(out)
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
        let last_purged_log_id: Option<LogId> = match self.meta.get(META_PURGED).map_err(io_err)? {
            Some(v) => Some(decode(&v)?),
            None => None,
        };
        // Entries at or below the purge mark may still be waiting for the
        // purge thread: the mark is the last log id then.
        let last = match self.log.last_key_value() {
            Some(g) => {
                let (_, v) = g.into_inner().map_err(io_err)?;
                let e: Entry = decode(&v)?;
                match last_purged_log_id {
                    Some(p) if p.index >= e.log_id.index => Some(p),
                    _ => Some(e.log_id),
                }
            }
            None => last_purged_log_id,
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
        self.sync()
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        // A hint for replay, not synced on its own: it is written with the
        // next append (and made durable by that append's fsync); losing it
        // only means replaying less eagerly after a restart.
        if let Ok(mut pending) = self.committed.lock() {
            *pending = Some(committed);
        }
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        if let Some(pending) = self.committed.lock().ok().and_then(|p| *p) {
            return Ok(pending);
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
        let mut batch = self.db.batch();
        let mut written = Vec::new();
        for e in entries {
            let encoded = encode(&e)?;
            let size = encoded.len();
            batch.insert(&self.log, e.log_id.index.to_be_bytes(), encoded);
            written.push((e, size));
        }
        if !written.is_empty() {
            // Before the write and the fsync: storaged has their length to wake.
            self.notice.entries_appended();
        }
        let committed = self.committed.lock().ok().and_then(|mut p| p.take());
        match committed {
            Some(Some(c)) => batch.insert(&self.meta, META_COMMITTED, encode(&c)?),
            Some(None) => batch.remove(&self.meta, META_COMMITTED),
            None => {}
        }
        batch.commit().map_err(io_err)?;
        crate::metrics::wal_written(written.iter().map(|(_, size)| *size).sum());
        for (e, size) in written {
            self.recent.appended(e, size);
        }
        self.flusher.0.push(callback)
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let from = last_log_id.map_or(0, |l| l.index + 1);
        self.recent.truncated_from(from);
        let mut batch = self.db.batch();
        for g in self.log.range(from.to_be_bytes()..) {
            let k = g.key().map_err(io_err)?;
            batch.remove(&self.log, k);
        }
        batch.commit().map_err(io_err)?;
        self.sync()
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        // Only the mark, unsynced: entries at or below it are never read
        // again, and a crash that loses it leaves them all in place, as if
        // this purge had not happened. The purge thread's deletions are
        // journaled after the mark, so none outlives a crash without it.
        self.recent.purged_through(log_id.index);
        self.meta
            .insert(META_PURGED, encode(&log_id)?)
            .map_err(io_err)?;
        self.purger.0.push(log_id.index)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;
    /// What the in-memory tail answers is what fjall holds, through
    /// appends, an overwriting append and a truncation.
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
            let mut out = Vec::new();
            for g in store
                .log
                .range(range.start.to_be_bytes()..range.end.to_be_bytes())
            {
                let (_, v) = g.into_inner().expect("read");
                out.push(super::decode::<crate::types::Entry>(&v).expect("decode"));
            }
            out
        };
        store
            .append((1..=6).map(|i| entry(1, i)), IOFlushed::noop())
            .await
            .expect("append");
        store
            .append([entry(2, 5)], IOFlushed::noop())
            .await
            .expect("overwrite");
        store
            .log
            .remove(6u64.to_be_bytes())
            .expect("as openraft truncates first");
        for range in [1..6, 3..5, 5..6] {
            let read = reader
                .try_get_log_entries(range.clone())
                .await
                .expect("read");
            assert_eq!(read, from_disk(&store, range.clone()), "{range:?}");
        }
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

    /// A purge moves the mark at once; the purge thread then deletes the
    /// entries below it, and a store opened again finishes a purge that was
    /// cut short.
    #[tokio::test]
    async fn purging_moves_the_mark_then_deletes_below_it() {
        use openraft::storage::RaftLogStorage;
        use openraft::RaftLogReader;

        let dir = tempfile::tempdir().expect("tempdir");
        let leader = openraft::impls::leader_id_adv::LeaderId {
            term: 1,
            node_id: 1,
        };
        let id = |index| openraft::LogId::new(leader, index);
        let entry = |index| crate::types::Entry {
            log_id: id(index),
            payload: openraft::EntryPayload::Blank,
        };
        let last = 3 * crate::purge::PURGE_CHUNK as u64;
        let mark = last - 10;
        {
            let mut store = super::LogStore::open(dir.path()).expect("open");
            for i in 1..=last {
                let e = super::encode(&entry(i)).expect("encode");
                store.log.insert(i.to_be_bytes(), e).expect("insert");
            }
            store.purge(id(mark)).await.expect("purge");
            let state = store.get_log_state().await.expect("state");
            assert_eq!(state.last_purged_log_id, Some(id(mark)));
            assert_eq!(state.last_log_id, Some(id(last)));
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while store
                .log
                .first_key_value()
                .map(|g| g.key().expect("key").to_vec())
                != Some((mark + 1).to_be_bytes().to_vec())
            {
                assert!(
                    std::time::Instant::now() < deadline,
                    "purge thread did not finish"
                );
                std::thread::sleep(Duration::from_millis(10));
            }
            let rest = store.try_get_log_entries(0..).await.expect("read");
            assert_eq!(rest.len() as u64, last - mark);

            // Entries left below the mark, as by a crash mid-purge.
            for i in 1..=5u64 {
                let e = super::encode(&entry(i)).expect("encode");
                store.log.insert(i.to_be_bytes(), e).expect("insert");
            }
            store.sync().expect("sync");
        }
        std::thread::sleep(Duration::from_millis(100));
        let mut store = super::LogStore::open(dir.path()).expect("reopen");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while store.try_get_log_entries(0..).await.expect("read").len() as u64 != last - mark {
            assert!(
                std::time::Instant::now() < deadline,
                "leftovers were not purged"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        // Every entry purged and none after: the mark is the last log id.
        store.purge(id(last)).await.expect("purge all");
        let state = store.get_log_state().await.expect("state");
        assert_eq!(state.last_log_id, Some(id(last)));
    }
}
