//! The raft log's entries in append-only segment files, as etcd's WAL and
//! raft-engine keep theirs: an entry is one sequential write, made durable
//! by the flusher's fdatasync (one per group commit), and nothing rewrites
//! it afterwards (a key-value store journals it, flushes it to a table,
//! compacts it, then does the same for its deletion).
//!
//! Segments (`segment`) hold consecutive entries, are named by the first
//! one's index and preallocated to `SEGMENT_BYTES`; an entry that does not
//! fit in the last starts a new one (sized to fit if it is larger). Records
//! (`record`) carry their index and a checksum, so recovery finds where the
//! log ends: at the first record that is torn, damaged, zeros, or not the
//! entry after the one before.
//!
//! Rules that keep recovery from reading back what was never durable or
//! was removed:
//! - a segment is synced whole before the next one is created, so a later
//!   segment holding anything durable means the earlier ones are whole;
//! - truncation cuts the file (zeros from the cut on) and deletes the later
//!   segments durably before it returns, so no stale record follows the
//!   tail; recovery cuts the tail segment the same way after its last
//!   valid record, so a torn write's remains are gone before appends
//!   continue;
//! - a segment that does not continue the one before (an append past a
//!   snapshot) is kept only if everything before it is at or below the
//!   purge mark (the caller makes the mark durable before such an append,
//!   and before purging deletes any segment).
//!
//! Reads of the entries below the purge mark are never answered; whole
//! segments below it are deleted by the purge thread.

pub mod migrate;
pub mod record;
pub mod segment;

use std::collections::{BTreeMap, VecDeque};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::codec::decode;
use crate::io_err;
use crate::types::{Entry, LogId};
use segment::Segment;

/// A segment's preallocated size (etcd's too).
pub const SEGMENT_BYTES: u64 = 64 << 20;

/// Framed records gathered before one write.
const WRITE_BYTES: usize = 1 << 20;

pub struct Wal {
    dir: PathBuf,
    segment_bytes: u64,
    state: Mutex<State>,
}

struct State {
    /// Oldest first; consecutive except where a segment starts past the
    /// purge mark.
    segments: VecDeque<Segment>,
    /// The last entry's log id; None when no segment holds any.
    last: Option<LogId>,
    /// The purge mark.
    purged: Option<LogId>,
    /// Segments written since the flusher last synced them, by first index.
    unsynced: BTreeMap<u64, Arc<File>>,
    /// Every entry up to this index is durable.
    synced_through: Option<u64>,
    /// Moves whenever records are cut or deleted: a read that failed while
    /// it moved is planned again.
    generation: u64,
}

/// Records `from..to` of one segment file: its bytes at `offset..+len`.
struct Span {
    file: Arc<File>,
    from: u64,
    to: u64,
    offset: u64,
    len: u64,
}

/// Whether `dir` holds any segment file (a missing dir holds none).
pub fn has_segments(dir: &Path) -> io::Result<bool> {
    match std::fs::read_dir(dir) {
        Ok(entries) => {
            for e in entries {
                if segment::parse_name(&e?.file_name()).is_some() {
                    return Ok(true);
                }
            }
            Ok(false)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

impl Wal {
    /// Open the log in `dir` (created if missing), recovering it.
    pub fn open(dir: &Path, purged: Option<LogId>, segment_bytes: u64) -> io::Result<Wal> {
        if !dir.exists() {
            std::fs::create_dir_all(dir)?;
            if let Some(parent) = dir.parent() {
                common::durable::sync_dir(parent)?;
            }
        }
        let mut names = BTreeMap::new();
        for e in std::fs::read_dir(dir)? {
            let e = e?;
            if let Some(first) = segment::parse_name(&e.file_name()) {
                names.insert(first, e.path());
            }
        }
        let mark = purged.map(|p| p.index);
        // Only the last segment can hold unsynced writes (each is synced
        // whole before the next is created): its records are checked
        // whole, the others' headers only.
        let newest = names.keys().next_back().copied();
        let mut segments: VecDeque<Segment> = VecDeque::new();
        let mut ended = false;
        let mut doomed = Vec::new();
        for (first, path) in names {
            if ended {
                doomed.push(path);
                continue;
            }
            let (seg, torn) = Segment::open(path, first, Some(first) == newest)?;
            if seg.offsets.is_empty() {
                // Nothing durable here, so nothing after it either.
                doomed.push(seg.path);
                ended = true;
                continue;
            }
            if let Some(prev) = segments.back() {
                if prev.next_index() != first {
                    if prev.last_index() <= mark {
                        doomed.extend(segments.drain(..).map(|s| s.path));
                    } else {
                        tracing::warn!(
                            after = prev.next_index() - 1,
                            next = first,
                            "raft log segment does not follow the one before; the log ends there"
                        );
                        doomed.push(seg.path);
                        ended = true;
                        continue;
                    }
                }
            }
            if torn {
                tracing::warn!(
                    segment = %seg.path.display(),
                    at = seg.end,
                    "raft log ends at a torn or damaged record; dropping what follows"
                );
                ended = true;
            }
            segments.push_back(seg);
        }
        for path in &doomed {
            remove(path)?;
        }
        if !doomed.is_empty() {
            common::durable::sync_dir(dir)?;
        }
        let mut st = State {
            segments,
            last: None,
            purged,
            unsynced: BTreeMap::new(),
            synced_through: None,
            generation: 0,
        };
        // The cut syncs the tail, and the segments before it were synced
        // whole: every entry recovered is durable (some may have been only
        // in the page cache of a process that was killed).
        if let Some(tail) = st.segments.back_mut() {
            let next = tail.next_index();
            tail.cut(next)?;
        }
        st.last = st.read_last()?;
        st.synced_through = st.last.map(|l| l.index);
        Ok(Wal {
            dir: dir.to_path_buf(),
            segment_bytes,
            state: Mutex::new(st),
        })
    }

    fn state(&self) -> io::Result<MutexGuard<'_, State>> {
        self.state
            .lock()
            .map_err(|_| io_err("raft log state poisoned"))
    }

    /// The last entry's log id, if any segment holds one.
    pub fn last(&self) -> io::Result<Option<LogId>> {
        Ok(self.state()?.last)
    }

    pub fn purged(&self) -> io::Result<Option<LogId>> {
        Ok(self.state()?.purged)
    }

    /// Move the purge mark (in memory: the caller keeps it durable).
    pub fn set_purged(&self, mark: LogId) -> io::Result<()> {
        self.state()?.purged = Some(mark);
        Ok(())
    }

    /// Write `records` (consecutive entries, each with its encoding) after
    /// the log's last entry, unsynced. Records at or below the last entry
    /// replace it and those after it (a durable truncation first). Before
    /// records that do not follow the last entry (the first ones, or ones
    /// past a snapshot) `before_start` runs: the purge mark that covers
    /// the gap must be durable first. Returns the bytes written.
    pub fn append(
        &self,
        records: &[(LogId, &[u8])],
        before_start: impl FnOnce() -> io::Result<()>,
    ) -> io::Result<u64> {
        let Some((first, _)) = records.first() else {
            return Ok(0);
        };
        let mut st = self.state()?;
        if st.last.is_some_and(|l| l.index >= first.index) {
            self.truncate_locked(&mut st, first.index)?;
        }
        let mut fresh = st.last.is_none_or(|l| l.index + 1 != first.index);
        if fresh {
            before_start()?;
        }
        let (mut pending, mut starts) = (Vec::new(), Vec::new());
        let mut written = 0;
        for (i, (id, payload)) in records.iter().enumerate() {
            if id.index != first.index + i as u64 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("raft log append is not consecutive at {}", id.index),
                ));
            }
            let size = record::size(payload.len());
            let fits = st
                .segments
                .back()
                .is_some_and(|s| s.fits(pending.len() as u64 + size));
            if fresh || !fits || pending.len() >= WRITE_BYTES {
                written += write_pending(&mut st, &mut pending, &mut starts)?;
            }
            if fresh || !fits {
                self.start_segment(&mut st, id.index, size)?;
                fresh = false;
            }
            starts.push(pending.len() as u64);
            record::frame(id.index, payload, &mut pending)?;
        }
        written += write_pending(&mut st, &mut pending, &mut starts)?;
        st.last = records.last().map(|(id, _)| *id);
        Ok(written)
    }

    /// A new last segment for entries from `first`, room for at least
    /// `size` bytes. The one before is synced whole first.
    fn start_segment(&self, st: &mut State, first: u64, size: u64) -> io::Result<()> {
        if let Some(prev) = st.segments.back() {
            // Even when not in `unsynced`: the flusher may be syncing it
            // right now, and the new segment's pages must not reach the
            // disk before all of this one's.
            st.unsynced.remove(&prev.first);
            prev.file.sync_data()?;
        }
        let seg = Segment::create(&self.dir, first, self.segment_bytes.max(size))?;
        st.segments.push_back(seg);
        Ok(())
    }

    /// Delete the entries from `from` on, durably.
    pub fn truncate_from(&self, from: u64) -> io::Result<()> {
        let mut st = self.state()?;
        self.truncate_locked(&mut st, from)
    }

    fn truncate_locked(&self, st: &mut State, from: u64) -> io::Result<()> {
        let mut deleted = false;
        while let Some(seg) = st.segments.pop_back() {
            if seg.first < from {
                st.segments.push_back(seg);
                break;
            }
            st.unsynced.remove(&seg.first);
            remove(&seg.path)?;
            deleted = true;
        }
        if deleted {
            common::durable::sync_dir(&self.dir)?;
        }
        st.generation += 1;
        st.last = None;
        st.synced_through = st.synced_through.min(from.checked_sub(1));
        if let Some(tail) = st.segments.back_mut() {
            if tail.next_index() > from {
                tail.cut(from)?;
            }
        }
        st.last = st.read_last()?;
        Ok(())
    }

    /// Make every record written so far durable: fdatasync each segment
    /// written since the last call (normally one). Returns the index up to
    /// which every entry is durable now (those up to the purge mark count:
    /// a snapshot holds them).
    pub fn sync_written(&self) -> io::Result<Option<u64>> {
        let (files, last, generation) = {
            let mut st = self.state()?;
            let files = std::mem::take(&mut st.unsynced);
            (files, st.last.map(|l| l.index), st.generation)
        };
        if !common::durable::unsafe_no_fsync() {
            for file in files.values() {
                file.sync_data()?;
            }
        }
        let mut st = self.state()?;
        // Entries truncated and written again meanwhile may be among those
        // up to `last` and not synced: the next sync covers them.
        if st.generation == generation {
            st.synced_through = st.synced_through.max(last);
        }
        Ok(st.synced_through.max(st.purged.map(|p| p.index)))
    }

    /// Delete every segment whose entries are all at or below `mark`; the
    /// one holding entries on both sides stays.
    pub fn delete_through(&self, mark: u64) -> io::Result<()> {
        let mut doomed = Vec::new();
        {
            let mut st = self.state()?;
            while st
                .segments
                .front()
                .is_some_and(|s| s.last_index().is_some_and(|l| l <= mark))
            {
                if let Some(seg) = st.segments.pop_front() {
                    st.unsynced.remove(&seg.first);
                    doomed.push(seg.path);
                }
            }
            if st.segments.is_empty() {
                st.last = None;
            }
            if !doomed.is_empty() {
                st.generation += 1;
            }
        }
        for path in &doomed {
            remove(path)?;
        }
        if !doomed.is_empty() {
            common::durable::sync_dir(&self.dir)?;
        }
        Ok(())
    }

    /// Entries `start..end` (`end` None: to the last), those the log holds
    /// above the purge mark.
    pub fn read(&self, start: u64, end: Option<u64>) -> io::Result<Vec<Entry>> {
        loop {
            let (spans, generation) = self.plan(start, end)?;
            let mut entries = Vec::new();
            match spans.iter().try_for_each(|s| s.read(&mut entries)) {
                Ok(()) => return Ok(entries),
                // Cut or deleted under the read: read what is there now.
                Err(_) if self.state()?.generation != generation => continue,
                Err(e) => return Err(e),
            }
        }
    }

    fn plan(&self, start: u64, end: Option<u64>) -> io::Result<(Vec<Span>, u64)> {
        let st = self.state()?;
        let start = start.max(st.purged.map_or(0, |p| p.index + 1));
        let mut spans = Vec::new();
        for seg in &st.segments {
            let from = start.max(seg.first);
            let to = end.map_or(seg.next_index(), |e| e.min(seg.next_index()));
            if from < to {
                spans.push(Span::of(seg, from, to));
            }
        }
        Ok((spans, st.generation))
    }
}

impl State {
    /// The last entry's log id, read from its record.
    fn read_last(&self) -> io::Result<Option<LogId>> {
        let Some((tail, last)) = self
            .segments
            .back()
            .and_then(|s| s.last_index().map(|l| (s, l)))
        else {
            return Ok(None);
        };
        let mut entries = Vec::new();
        Span::of(tail, last, last + 1).read(&mut entries)?;
        Ok(entries.pop().map(|e| e.log_id))
    }
}

impl Span {
    /// Records `from..to` of `seg`, which holds them.
    fn of(seg: &Segment, from: u64, to: u64) -> Span {
        let (offset, len) = seg.span(from, to);
        Span {
            file: seg.file.clone(),
            from,
            to,
            offset,
            len,
        }
    }

    /// Read, check and decode the records, appending them to `out`.
    fn read(&self, out: &mut Vec<Entry>) -> io::Result<()> {
        let len = usize::try_from(self.len).map_err(io_err)?;
        let mut bytes = vec![0u8; len];
        self.file.read_exact_at(&mut bytes, self.offset)?;
        let mut at = 0;
        for index in self.from..self.to {
            let (payload, size) = bytes
                .get(at..)
                .and_then(|b| record::parse(b, index))
                .ok_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("raft log record {index} is damaged"),
                    )
                })?;
            out.push(decode(payload)?);
            at += size;
        }
        Ok(())
    }
}

/// Unlink `path`; one already gone is fine.
fn remove(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Write the records gathered in `pending` to the last segment.
fn write_pending(st: &mut State, pending: &mut Vec<u8>, starts: &mut Vec<u64>) -> io::Result<u64> {
    if pending.is_empty() {
        return Ok(0);
    }
    let tail = st
        .segments
        .back_mut()
        .ok_or_else(|| io_err("raft log has no segment to write to"))?;
    tail.append(pending, starts)?;
    st.unsynced.insert(tail.first, tail.file.clone());
    let written = pending.len() as u64;
    pending.clear();
    starts.clear();
    Ok(written)
}

#[cfg(test)]
mod tests;
