//! The segment log through restarts, rotations, truncations, torn writes,
//! purges and the move from an older raftd's fjall log.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use openraft::storage::{IOFlushed, RaftLogStorage};
use openraft::RaftLogReader;

use super::{record, segment, Wal};
use crate::codec::encode;
use crate::log_store::{LogStore, WAL_DIR};
use crate::types::{Entry, LogId, Proposal};

/// Small segments, so a few entries rotate through several.
const SMALL: u64 = 4096;

fn id(term: u64, index: u64) -> LogId {
    openraft::LogId::new(
        openraft::impls::leader_id_adv::LeaderId { term, node_id: 1 },
        index,
    )
}

/// Entry `index` of `term` carrying `size` bytes.
fn entry(term: u64, index: u64, size: usize) -> Entry {
    Entry {
        log_id: id(term, index),
        payload: openraft::EntryPayload::Normal(Proposal(vec![index as u8; size].into())),
    }
}

fn entries(term: u64, indexes: std::ops::RangeInclusive<u64>, size: usize) -> Vec<Entry> {
    indexes.map(|i| entry(term, i, size)).collect()
}

/// Append straight to a `Wal`, as the store does, unsynced.
fn write(wal: &Wal, entries: &[Entry]) {
    let encoded: Vec<(LogId, Vec<u8>)> = entries
        .iter()
        .map(|e| (e.log_id, encode(e).expect("encode")))
        .collect();
    let records: Vec<(LogId, &[u8])> = encoded.iter().map(|(i, v)| (*i, v.as_slice())).collect();
    wal.append(&records, || Ok(())).expect("append");
}

/// `write`, then sync.
fn append(wal: &Wal, entries: &[Entry]) {
    write(wal, entries);
    wal.sync_written().expect("sync");
}

/// The segment files in `dir`, by first index.
fn segments(dir: &Path) -> Vec<(u64, PathBuf)> {
    let mut out: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
        .expect("ls")
        .filter_map(|e| {
            let e = e.expect("entry");
            segment::parse_name(&e.file_name()).map(|first| (first, e.path()))
        })
        .collect();
    out.sort();
    out
}

/// Open the store in `dir`, waiting for a dropped one's threads to let
/// go of the database.
fn open(dir: &Path) -> LogStore {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match LogStore::open_with(dir, None, SMALL) {
            Ok(store) => return store,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("open: {e}"),
        }
    }
}

async fn read_all(store: &mut LogStore) -> Vec<Entry> {
    store.try_get_log_entries(0..).await.expect("read")
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[tokio::test]
async fn appends_survive_a_restart_across_segment_rotations() {
    let dir = tempfile::tempdir().expect("tempdir");
    let written = entries(1, 1..=200, 100);
    {
        let mut store = open(dir.path());
        for batch in written.chunks(7) {
            store
                .append(batch.to_vec(), IOFlushed::noop())
                .await
                .expect("append");
        }
        assert_eq!(read_all(&mut store).await, written);
    }
    let wal_dir = dir.path().join(WAL_DIR);
    assert!(segments(&wal_dir).len() > 5, "rotated through segments");
    let mut store = open(dir.path());
    assert_eq!(read_all(&mut store).await, written, "read back from disk");
    let state = store.get_log_state().await.expect("state");
    assert_eq!(state.last_log_id, Some(id(1, 200)));
    let more = entries(1, 201..=230, 100);
    store
        .append(more.clone(), IOFlushed::noop())
        .await
        .expect("append after restart");
    drop(store);
    let mut store = open(dir.path());
    assert_eq!(
        read_all(&mut store).await,
        [written, more].concat(),
        "appends after a restart continue the log"
    );
    assert_eq!(
        store.try_get_log_entries(40..43).await.expect("read"),
        entries(1, 40..=42, 100)
    );
}

#[tokio::test]
async fn truncated_entries_never_come_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let mut store = open(dir.path());
        store
            .append(entries(1, 1..=100, 100), IOFlushed::noop())
            .await
            .expect("append");
        // Within a segment, several segments before the tail.
        store
            .truncate_after(Some(id(1, 30)))
            .await
            .expect("truncate");
        store
            .append(entries(2, 31..=40, 50), IOFlushed::noop())
            .await
            .expect("append");
    }
    let expected = [entries(1, 1..=30, 100), entries(2, 31..=40, 50)].concat();
    let mut store = open(dir.path());
    assert_eq!(read_all(&mut store).await, expected);
    let state = store.get_log_state().await.expect("state");
    assert_eq!(state.last_log_id, Some(id(2, 40)));

    // Back to a segment's first entry, then an append that overwrites.
    let wal_dir = dir.path().join(WAL_DIR);
    let firsts: Vec<u64> = segments(&wal_dir).iter().map(|(f, _)| *f).collect();
    let cut = firsts[1];
    store
        .truncate_after(Some(id(1, cut - 1)))
        .await
        .expect("truncate at a segment start");
    assert_eq!(
        segments(&wal_dir).last().map(|(f, _)| *f),
        Some(firsts[0]),
        "later segments deleted"
    );
    store
        .append(entries(3, cut..=cut + 2, 10), IOFlushed::noop())
        .await
        .expect("append");
    store
        .append(entries(4, cut + 1..=cut + 1, 10), IOFlushed::noop())
        .await
        .expect("an append at or below the tail replaces it");
    drop(store);
    let mut store = open(dir.path());
    let expected = [
        expected[..(cut - 1) as usize].to_vec(),
        entries(3, cut..=cut, 10),
        entries(4, cut + 1..=cut + 1, 10),
    ]
    .concat();
    assert_eq!(read_all(&mut store).await, expected);
    store.truncate_after(None).await.expect("truncate all");
    drop(store);
    let mut store = open(dir.path());
    assert_eq!(read_all(&mut store).await, vec![]);
    assert_eq!(
        store.get_log_state().await.expect("state").last_log_id,
        None
    );
}

/// The offset where the tail segment's records end, and its path.
fn tail(wal: &Wal) -> (u64, PathBuf) {
    let st = wal.state().expect("state");
    let seg = st.segments.back().expect("a segment");
    (seg.end, seg.path.clone())
}

fn write_at(path: &Path, offset: u64, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .expect("open segment");
    f.write_all_at(bytes, offset).expect("write");
    f.sync_all().expect("sync");
}

fn framed(e: &Entry) -> Vec<u8> {
    let mut out = Vec::new();
    record::frame(e.log_id.index, &encode(e).expect("encode"), &mut out).expect("frame");
    out
}

#[test]
fn a_torn_tail_is_dropped_and_appends_go_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let open = || Wal::open(dir.path(), None, 1 << 20).expect("open");
    let mut log = entries(1, 1..=20, 100);
    let wal = open();
    append(&wal, &log);
    let (end, path) = tail(&wal);
    drop(wal);

    // Garbage after the last record.
    let mut garbage = vec![0u8; 300];
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for b in &mut garbage {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = (x as u8) | 1;
    }
    write_at(&path, end, &garbage);
    let wal = open();
    assert_eq!(wal.last().expect("last"), Some(id(1, 20)));
    assert_eq!(wal.read(0, None).expect("read"), log);
    log.extend(entries(1, 21..=25, 100));
    append(&wal, &log[20..]);
    let (end, path) = tail(&wal);
    drop(wal);

    // A record cut in half.
    let half = framed(&entry(1, 26, 100));
    write_at(&path, end, &half[..half.len() / 2]);
    let wal = open();
    assert_eq!(wal.read(0, None).expect("read"), log);
    let (end, path) = tail(&wal);

    // A whole record of an older write past a hole of zeros (the pages
    // between lost): it must not come back once appends reach it.
    let size = (0..4096)
        .find(|&n| framed(&entry(2, 26, n)).len() == 4096)
        .expect("a size that frames to a page");
    write_at(&path, end + 4096, &framed(&entry(1, 27, 10)));
    drop(wal);
    let wal = open();
    assert_eq!(
        wal.last().expect("last"),
        Some(id(1, 25)),
        "stops at the hole"
    );
    log.push(entry(2, 26, size));
    append(&wal, &log[25..]);
    drop(wal);
    let wal = open();
    assert_eq!(wal.read(0, None).expect("read"), log, "27 stayed gone");
    assert_eq!(wal.last().expect("last"), Some(id(2, 26)));
}

#[tokio::test]
async fn purging_deletes_whole_segments_and_a_restart_keeps_the_mark() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wal_dir = dir.path().join(WAL_DIR);
    let log = entries(1, 1..=200, 100);
    let mut store = open(dir.path());
    store
        .append(log.clone(), IOFlushed::noop())
        .await
        .expect("append");
    store.purge(id(1, 120)).await.expect("purge");
    let state = store.get_log_state().await.expect("state");
    assert_eq!(state.last_purged_log_id, Some(id(1, 120)));
    assert_eq!(state.last_log_id, Some(id(1, 200)));
    // Only the segment holding 121 (and maybe entries below it) stays of
    // those that start at or below it.
    wait_until("purge thread deleted the segments below the mark", || {
        segments(&wal_dir).iter().filter(|(f, _)| *f <= 121).count() == 1
    });
    assert_eq!(read_all(&mut store).await, log[120..].to_vec());
    assert_eq!(
        store.try_get_log_entries(100..125).await.expect("read"),
        log[120..124].to_vec(),
        "never below the mark"
    );
    drop(store);

    let mut store = open(dir.path());
    let state = store.get_log_state().await.expect("state");
    assert_eq!(state.last_purged_log_id, Some(id(1, 120)));
    assert_eq!(state.last_log_id, Some(id(1, 200)));
    assert_eq!(read_all(&mut store).await, log[120..].to_vec());

    // Purged through the last entry: the mark is the last log id, and the
    // log goes on after it.
    store.purge(id(1, 200)).await.expect("purge all");
    let state = store.get_log_state().await.expect("state");
    assert_eq!(state.last_log_id, Some(id(1, 200)));
    wait_until("every segment deleted", || segments(&wal_dir).is_empty());
    let state = store.get_log_state().await.expect("state");
    assert_eq!(state.last_log_id, Some(id(1, 200)));
    store
        .append(entries(1, 201..=201, 10), IOFlushed::noop())
        .await
        .expect("append");
    // Past a snapshot: the log starts again further on.
    store.purge(id(2, 1000)).await.expect("purge past the log");
    store
        .append(entries(2, 1001..=1010, 10), IOFlushed::noop())
        .await
        .expect("append past a snapshot");
    drop(store);
    let mut store = open(dir.path());
    let state = store.get_log_state().await.expect("state");
    assert_eq!(state.last_purged_log_id, Some(id(2, 1000)));
    assert_eq!(state.last_log_id, Some(id(2, 1010)));
    assert_eq!(read_all(&mut store).await, entries(2, 1001..=1010, 10));
}

/// A purge mark made durable whose deletions a crash lost: the next open
/// deletes them.
#[tokio::test]
async fn a_restart_finishes_a_cut_short_purge() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wal_dir = dir.path().join(WAL_DIR);
    {
        let mut store = open(dir.path());
        store
            .append(entries(1, 1..=200, 100), IOFlushed::noop())
            .await
            .expect("append");
        store
            .meta
            .insert(b"purged", encode(&id(1, 150)).expect("encode"))
            .expect("mark");
        store.sync_meta().expect("sync");
    }
    let mut store = open(dir.path());
    wait_until("segments below the mark deleted at open", || {
        segments(&wal_dir).iter().filter(|(f, _)| *f <= 151).count() == 1
    });
    assert_eq!(read_all(&mut store).await, entries(1, 151..=200, 100));
}

#[tokio::test]
async fn a_record_larger_than_a_segment_gets_one_of_its_own() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wal_dir = dir.path().join(WAL_DIR);
    let log = vec![
        entry(1, 1, 10),
        entry(1, 2, 3 * SMALL as usize),
        entry(1, 3, 10),
    ];
    {
        let mut store = open(dir.path());
        for e in &log {
            store
                .append([e.clone()], IOFlushed::noop())
                .await
                .expect("append");
        }
    }
    let segs = segments(&wal_dir);
    assert_eq!(
        segs.iter().map(|(f, _)| *f).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    let big = std::fs::metadata(&segs[1].1).expect("stat").len();
    assert!(big > 3 * SMALL, "sized to fit: {big}");
    let mut store = open(dir.path());
    assert_eq!(read_all(&mut store).await, log);
}

#[tokio::test]
async fn an_older_raftds_fjall_log_moves_into_segments() {
    use fjall::{Database, KeyspaceCreateOptions, PersistMode};
    let dir = tempfile::tempdir().expect("tempdir");
    let log = entries(1, 1..=300, 50);
    let vote = crate::types::Vote::new_committed(1, 1);
    {
        // As the older raftd left it: a purge cut short below its mark.
        let db = Database::builder(dir.path()).open().expect("fjall");
        let keyspace = db
            .keyspace("log", KeyspaceCreateOptions::default)
            .expect("log");
        let meta = db
            .keyspace("meta", KeyspaceCreateOptions::default)
            .expect("meta");
        for e in &log[5..] {
            keyspace
                .insert(e.log_id.index.to_be_bytes(), encode(e).expect("encode"))
                .expect("insert");
        }
        meta.insert(b"purged", encode(&id(1, 10)).expect("encode"))
            .expect("mark");
        meta.insert(b"committed", encode(&id(1, 290)).expect("encode"))
            .expect("committed");
        meta.insert(b"vote", encode(&vote).expect("encode"))
            .expect("vote");
        db.persist(PersistMode::SyncAll).expect("persist");
    }
    for _ in 0..2 {
        let mut store = open(dir.path());
        let state = store.get_log_state().await.expect("state");
        assert_eq!(state.last_purged_log_id, Some(id(1, 10)));
        assert_eq!(state.last_log_id, Some(id(1, 300)));
        assert_eq!(read_all(&mut store).await, log[10..].to_vec());
        assert_eq!(store.read_vote().await.expect("vote"), Some(vote));
        assert_eq!(
            store.read_committed().await.expect("committed"),
            Some(id(1, 290))
        );
        assert!(!store.db.keyspace_exists("log"), "the old log is gone");
        assert!(segments(&dir.path().join(WAL_DIR)).len() > 1);
        store
            .append(entries(1, 301..=301, 50), IOFlushed::noop())
            .await
            .expect("append");
        store.truncate_after(Some(id(1, 300))).await.expect("undo");
    }
}

/// Damage in a segment before the newest (synced whole, so never torn) is
/// not taken for the log's end: the read that reaches it fails.
#[test]
fn damage_before_the_newest_segment_fails_the_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wal = Wal::open(dir.path(), None, SMALL).expect("open");
    append(&wal, &entries(1, 1..=100, 100));
    drop(wal);
    let segs = segments(dir.path());
    assert!(segs.len() > 2);
    let second = &segs[1];
    write_at(&second.1, record::HEADER + 20, b"\xff\xff");
    let wal = Wal::open(dir.path(), None, SMALL).expect("reopen");
    assert_eq!(
        wal.last().expect("last"),
        Some(id(1, 100)),
        "nothing dropped"
    );
    let err = wal
        .read(second.0, Some(second.0 + 1))
        .expect_err("a damaged record");
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
    assert_eq!(
        wal.read(1, Some(second.0)).expect("read").len() as u64,
        second.0 - 1
    );
}

/// What the flusher may call durable (and so name in the committed hint)
/// drops with a truncation and rises only with a sync.
#[test]
fn truncation_lowers_what_counts_as_durable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wal = Wal::open(dir.path(), None, SMALL).expect("open");
    append(&wal, &entries(1, 1..=10, 10));
    assert_eq!(wal.sync_written().expect("sync"), Some(10));
    wal.truncate_from(6).expect("truncate");
    write(&wal, &entries(2, 6..=8, 10));
    assert_eq!(wal.state().expect("state").synced_through, Some(5));
    assert_eq!(wal.sync_written().expect("sync"), Some(8));
    wal.set_purged(id(2, 20)).expect("purge");
    assert_eq!(wal.sync_written().expect("sync"), Some(20), "purged counts");
}
