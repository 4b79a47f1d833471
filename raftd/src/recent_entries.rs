//! The newest raft log entries, kept in memory as they are appended.
//!
//! openraft reads back what was just appended: the state machine worker
//! reads each committed entry to apply it, and the leader's replication
//! reads each new entry to send it. Reading those back from the segment
//! files (a system call, a checksum and a decode each) would be on every
//! write's path, after the fsync. Reads the window covers are answered
//! here; anything else (older entries, after a restart) comes from the
//! segment files (`wal`).
//!
//! The window mirrors the log's tail exactly: appends extend it (an append
//! that overwrites or skips ahead restarts it there), truncation and purge
//! cut it, and it keeps at most `MAX_ENTRIES` entries or `MAX_BYTES` of
//! encoded entries, dropping the oldest.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};

use crate::types::Entry;

/// Entries kept at most.
const MAX_ENTRIES: usize = 4096;
/// Encoded bytes kept at most (the newest entry is kept whatever its size).
const MAX_BYTES: usize = 8 << 20;

#[derive(Default)]
pub struct RecentEntries {
    window: Mutex<Window>,
}

#[derive(Default)]
struct Window {
    /// Contiguous by index, oldest first, with each entry's encoded size.
    entries: VecDeque<(Entry, usize)>,
    bytes: usize,
}

impl Window {
    fn first_index(&self) -> Option<u64> {
        self.entries.front().map(|(e, _)| e.log_id.index)
    }

    fn last_index(&self) -> Option<u64> {
        self.entries.back().map(|(e, _)| e.log_id.index)
    }

    fn pop_back(&mut self) {
        if let Some((_, size)) = self.entries.pop_back() {
            self.bytes -= size;
        }
    }

    fn pop_front(&mut self) {
        if let Some((_, size)) = self.entries.pop_front() {
            self.bytes -= size;
        }
    }
}

impl RecentEntries {
    fn window(&self) -> MutexGuard<'_, Window> {
        // Every change leaves the window consistent before it can panic.
        self.window.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `entry` (encoded in `size` bytes) was written to the log.
    pub fn appended(&self, entry: Entry, size: usize) {
        let mut w = self.window();
        let index = entry.log_id.index;
        // An append at or below the tail replaced the entries from there on.
        while w.last_index().is_some_and(|last| last >= index) {
            w.pop_back();
        }
        if w.last_index().is_some_and(|last| last + 1 != index) {
            *w = Window::default();
        }
        w.entries.push_back((entry, size));
        w.bytes += size;
        while w.entries.len() > MAX_ENTRIES || (w.bytes > MAX_BYTES && w.entries.len() > 1) {
            w.pop_front();
        }
    }

    /// The log's entries from `index` on were deleted.
    pub fn truncated_from(&self, index: u64) {
        let mut w = self.window();
        while w.last_index().is_some_and(|last| last >= index) {
            w.pop_back();
        }
    }

    /// The log's entries up to and including `index` were purged.
    pub fn purged_through(&self, index: u64) {
        let mut w = self.window();
        while w.first_index().is_some_and(|first| first <= index) {
            w.pop_front();
        }
    }

    /// Entries `start..end`, if the window holds every one of them.
    pub fn get(&self, start: u64, end: u64) -> Option<Vec<Entry>> {
        let w = self.window();
        if start >= end {
            return Some(Vec::new());
        }
        let first = w.first_index()?;
        let last = w.last_index()?;
        if start < first || end - 1 > last {
            return None;
        }
        let from = usize::try_from(start - first).ok()?;
        let to = usize::try_from(end - first).ok()?;
        Some(w.entries.range(from..to).map(|(e, _)| e.clone()).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(term: u64, index: u64) -> Entry {
        let leader = openraft::impls::leader_id_adv::LeaderId { term, node_id: 1 };
        Entry {
            log_id: openraft::LogId::new(leader, index),
            payload: openraft::EntryPayload::Blank,
        }
    }

    fn indexes(entries: Option<Vec<Entry>>) -> Option<Vec<(u64, u64)>> {
        entries.map(|v| {
            v.iter()
                .map(|e| (e.log_id.leader_id.term, e.log_id.index))
                .collect()
        })
    }

    #[test]
    fn serves_only_ranges_it_holds_whole() {
        let recent = RecentEntries::default();
        assert_eq!(indexes(recent.get(1, 2)), None, "empty");
        for i in 5..10 {
            recent.appended(entry(1, i), 10);
        }
        assert_eq!(indexes(recent.get(6, 8)), Some(vec![(1, 6), (1, 7)]));
        assert_eq!(indexes(recent.get(5, 10)).map(|v| v.len()), Some(5));
        assert_eq!(indexes(recent.get(4, 6)), None, "starts before the window");
        assert_eq!(indexes(recent.get(9, 11)), None, "ends after the window");
        assert_eq!(indexes(recent.get(7, 7)), Some(vec![]));
    }

    #[test]
    fn overwrites_truncation_and_purge_keep_it_equal_to_the_log() {
        let recent = RecentEntries::default();
        for i in 1..=5 {
            recent.appended(entry(1, i), 10);
        }
        // A new leader's entry 4 replaces 4 and 5.
        recent.appended(entry(2, 4), 10);
        assert_eq!(indexes(recent.get(3, 5)), Some(vec![(1, 3), (2, 4)]));
        assert_eq!(indexes(recent.get(5, 6)), None, "5 is gone");
        recent.truncated_from(3);
        assert_eq!(indexes(recent.get(2, 3)), Some(vec![(1, 2)]));
        assert_eq!(indexes(recent.get(3, 4)), None);
        recent.purged_through(1);
        assert_eq!(indexes(recent.get(1, 2)), None);
        assert_eq!(indexes(recent.get(2, 3)), Some(vec![(1, 2)]));
        // An append past a gap (after a snapshot) starts over there.
        recent.appended(entry(3, 100), 10);
        assert_eq!(indexes(recent.get(2, 3)), None);
        assert_eq!(indexes(recent.get(100, 101)), Some(vec![(3, 100)]));
    }

    #[test]
    fn keeps_a_bounded_window_of_the_newest() {
        let recent = RecentEntries::default();
        for i in 0..(MAX_ENTRIES as u64 + 10) {
            recent.appended(entry(1, i), 1);
        }
        assert_eq!(indexes(recent.get(9, 10)), None, "oldest dropped");
        assert!(recent.get(10, MAX_ENTRIES as u64 + 10).is_some());

        let recent = RecentEntries::default();
        recent.appended(entry(1, 1), MAX_BYTES / 2);
        recent.appended(entry(1, 2), MAX_BYTES / 2);
        recent.appended(entry(1, 3), MAX_BYTES / 2);
        assert_eq!(indexes(recent.get(1, 2)), None, "over the byte bound");
        assert!(recent.get(2, 4).is_some());
        recent.appended(entry(1, 4), MAX_BYTES * 2);
        assert_eq!(
            indexes(recent.get(4, 5)).map(|v| v.len()),
            Some(1),
            "the newest stays"
        );
    }
}
