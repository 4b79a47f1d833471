//! The history checker: concurrent clients record every operation (invoke
//! and completion times, result or failure) on a key-value register model,
//! and `check` proves the history linearizable against the cluster's own
//! change log, as etcd's robustness tests do with revisions:
//!
//! - every acknowledged write (put, compare-and-swap txn, delete) is in the
//!   log at the revision it was told (no acknowledged write lost); every
//!   value is applied at most once and every logged change was made by
//!   someone (no phantom, no duplicate); a write whose outcome is unknown
//!   may or may not be there;
//! - a compare-and-swap took effect exactly when its compare held: the
//!   key's mod revision just before its revision was the one it expected;
//!   one that failed saw another mod revision at its header revision;
//! - every read (linearizable or serializable, and the read in a failed
//!   txn) saw exactly the newest logged change to its key at or below the
//!   revision it was told (or nothing, after a delete);
//! - real time: if A completed before B was invoked, rev(A) ≤ rev(B), where
//!   a write's revision is where the log has it and a read's is the
//!   revision in its header (serializable reads, which may be stale by
//!   definition, are left out);
//! - the log's prev_kv values are the key's previous values.
//!
//! Watch streams are checked against the same log: strictly increasing
//! revisions, no gap, no duplicate, the same prev_kv.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// A change in the cluster's log: a key put (value) or deleted (None) at a
/// revision, with the value it had before (prev_kv).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Logged {
    pub revision: i64,
    pub key: String,
    pub value: Option<String>,
    pub prev: Option<String>,
}

/// What a client asked for.
#[derive(Clone, Debug)]
pub enum Kind {
    /// Put a value (unique across the whole history).
    Put(String),
    /// Put a value if the key's mod revision is `expect` (0: absent), else
    /// read the key.
    Cas {
        value: String,
        expect: i64,
    },
    Delete,
    Get,
    SerialGet,
}

#[derive(Clone, Debug)]
pub enum Outcome {
    /// A write (put, or a txn whose compare held) at this revision.
    Written { revision: i64 },
    /// A delete at `revision` that removed `deleted` keys (0: none, and the
    /// revision is just the header's).
    Deleted { revision: i64, deleted: i64 },
    /// A read (or a txn whose compare failed) at header revision
    /// `revision` that saw `value` (with its mod revision) or no key.
    Read {
        revision: i64,
        value: Option<(String, i64)>,
    },
    /// No answer, or an error: the operation may or may not have happened.
    Unknown,
}

#[derive(Clone, Debug)]
pub struct Op {
    pub client: usize,
    pub key: String,
    pub kind: Kind,
    pub invoke: Instant,
    pub complete: Instant,
    pub outcome: Outcome,
}

/// Shared recorder for concurrent clients.
#[derive(Clone, Default)]
pub struct History {
    ops: Arc<Mutex<Vec<Op>>>,
}

impl History {
    pub fn record(&self, op: Op) {
        self.ops.lock().expect("history lock").push(op);
    }

    pub fn ops(&self) -> Vec<Op> {
        self.ops.lock().expect("history lock").clone()
    }
}

/// What `check` found: counts for the test's report, or the first violation.
#[derive(Debug, Default, Clone)]
pub struct Report {
    pub acknowledged_puts: usize,
    pub acknowledged_cas: usize,
    pub failed_cas: usize,
    pub deletes: usize,
    pub reads: usize,
    pub serializable_reads: usize,
    pub unknown: usize,
    pub unknown_applied: usize,
}

/// The log indexed per key: revision → (value or None, mod revision).
struct KeyStates<'a> {
    per_key: HashMap<&'a str, BTreeMap<i64, Option<&'a str>>>,
}

impl<'a> KeyStates<'a> {
    fn new(log: &'a [Logged]) -> Self {
        let mut per_key: HashMap<&str, BTreeMap<i64, Option<&str>>> = HashMap::new();
        for l in log {
            per_key
                .entry(l.key.as_str())
                .or_default()
                .insert(l.revision, l.value.as_deref());
        }
        KeyStates { per_key }
    }

    /// The key's value and mod revision at `revision` (None: absent). The
    /// prefix is empty when the log starts, so no entry means absent.
    fn at(&self, key: &str, revision: i64) -> Option<(String, i64)> {
        let (r, v) = self.per_key.get(key)?.range(..=revision).next_back()?;
        v.map(|v| (v.to_string(), *r))
    }

    /// The key's mod revision (0: absent) just before `revision`.
    fn mod_before(&self, key: &str, revision: i64) -> i64 {
        self.at(key, revision - 1).map_or(0, |(_, m)| m)
    }
}

pub fn check(ops: &[Op], log: &[Logged]) -> Result<Report, String> {
    let mut report = Report::default();
    for w in log.windows(2) {
        if w[1].revision <= w[0].revision {
            return Err(format!("log not increasing: {:?} then {:?}", w[0], w[1]));
        }
    }
    let states = KeyStates::new(log);
    // The log's prev_kv: the key's value just before.
    for l in log {
        let before = states.at(&l.key, l.revision - 1).map(|(v, _)| v);
        if l.prev != before {
            return Err(format!("prev_kv of {l:?} should be {before:?}"));
        }
    }
    let mut by_value: HashMap<&str, &Logged> = HashMap::new();
    // Deletes in the log per (key, revision), to be claimed by acknowledged
    // deletes; the rest by deletes with unknown outcomes.
    let mut deletes: HashMap<(&str, i64), bool> = HashMap::new();
    for l in log {
        match &l.value {
            Some(v) => {
                if by_value.insert(v.as_str(), l).is_some() {
                    return Err(format!("value applied twice: {l:?}"));
                }
            }
            None => {
                deletes.insert((l.key.as_str(), l.revision), false);
            }
        }
    }
    let mut unknown_deletes: HashMap<&str, usize> = HashMap::new();
    let mut written: HashMap<&str, &Op> = HashMap::new();
    // (invoke, complete, revision, op index, is a write)
    let mut timed: Vec<(Instant, Instant, i64, usize, bool)> = Vec::new();
    let read = |op: &Op, revision: i64, value: &Option<(String, i64)>| -> Result<(), String> {
        let newest = states.at(&op.key, revision);
        if newest != *value {
            return Err(format!(
                "{op:?} at revision {revision} saw {value:?}, but the newest write then was {newest:?}"
            ));
        }
        Ok(())
    };
    for (i, op) in ops.iter().enumerate() {
        match (&op.kind, &op.outcome) {
            (Kind::Put(v) | Kind::Cas { value: v, .. }, outcome) => {
                written.insert(v.as_str(), op);
                let logged = by_value.get(v.as_str());
                if let (Kind::Cas { expect, .. }, Some(l)) = (&op.kind, logged) {
                    let before = states.mod_before(&l.key, l.revision);
                    if before != *expect {
                        return Err(format!(
                            "{op:?} applied at {} though the key's mod revision was {before}",
                            l.revision
                        ));
                    }
                }
                match (outcome, logged) {
                    (Outcome::Written { revision }, Some(l)) => {
                        if l.revision != *revision || l.key != op.key {
                            return Err(format!(
                                "{op:?} acknowledged at {revision} but the log has {l:?}"
                            ));
                        }
                        match op.kind {
                            Kind::Cas { .. } => report.acknowledged_cas += 1,
                            _ => report.acknowledged_puts += 1,
                        }
                        timed.push((op.invoke, op.complete, *revision, i, true));
                    }
                    (Outcome::Written { revision }, None) => {
                        let there = log.iter().find(|l| l.revision == *revision);
                        return Err(format!(
                            "acknowledged write lost: {op:?}; the log has {there:?} at that revision ({} entries)",
                            log.len()
                        ));
                    }
                    (Outcome::Read { revision, value }, None) => {
                        // A compare that failed: the key was not as expected.
                        let Kind::Cas { expect, .. } = op.kind else {
                            return Err(format!("put with a read outcome: {op:?}"));
                        };
                        read(op, *revision, value)?;
                        let at = value.as_ref().map_or(0, |(_, m)| *m);
                        if at == expect {
                            return Err(format!(
                                "{op:?} failed at {revision} though the key's mod revision was {at}"
                            ));
                        }
                        report.failed_cas += 1;
                        timed.push((op.invoke, op.complete, *revision, i, false));
                    }
                    (Outcome::Read { .. }, Some(l)) => {
                        return Err(format!("{op:?} reported failed but was applied: {l:?}"));
                    }
                    (Outcome::Unknown, Some(l)) => {
                        report.unknown += 1;
                        report.unknown_applied += 1;
                        // It took effect at some point after its invocation.
                        timed.push((op.invoke, Instant::now(), l.revision, i, true));
                    }
                    (Outcome::Unknown, None) => report.unknown += 1,
                    (Outcome::Deleted { .. }, _) => {
                        return Err(format!("put with a delete outcome: {op:?}"))
                    }
                }
            }
            (Kind::Delete, Outcome::Deleted { revision, deleted }) => {
                report.deletes += 1;
                if *deleted > 0 {
                    match deletes.get_mut(&(op.key.as_str(), *revision)) {
                        Some(claimed) if !*claimed => *claimed = true,
                        _ => {
                            return Err(format!(
                                "acknowledged delete {op:?} is not in the log at {revision}"
                            ))
                        }
                    }
                    timed.push((op.invoke, op.complete, *revision, i, true));
                } else {
                    // Nothing to delete: the key was absent at `revision`.
                    read(op, *revision, &None)?;
                    timed.push((op.invoke, op.complete, *revision, i, false));
                }
            }
            (Kind::Delete, Outcome::Unknown) => {
                report.unknown += 1;
                *unknown_deletes.entry(op.key.as_str()).or_default() += 1;
            }
            (Kind::Get | Kind::SerialGet, Outcome::Read { revision, value }) => {
                read(op, *revision, value)?;
                if matches!(op.kind, Kind::Get) {
                    report.reads += 1;
                    timed.push((op.invoke, op.complete, *revision, i, false));
                } else {
                    report.serializable_reads += 1;
                }
            }
            (Kind::Get | Kind::SerialGet, Outcome::Unknown) => report.unknown += 1,
            (kind, outcome) => {
                return Err(format!("{kind:?} cannot end as {outcome:?}: {op:?}"));
            }
        }
    }
    for l in log {
        match &l.value {
            Some(v) if !written.contains_key(v.as_str()) => {
                return Err(format!("phantom write in the log: {l:?}"));
            }
            None if !deletes[&(l.key.as_str(), l.revision)] => {
                // Only a delete whose outcome is unknown can explain it.
                let left = unknown_deletes.entry(l.key.as_str()).or_default();
                if *left == 0 {
                    return Err(format!("phantom delete in the log: {l:?}"));
                }
                *left -= 1;
            }
            _ => {}
        }
    }
    check_real_time(ops, &timed)?;
    Ok(report)
}

/// Sweep ops by invocation: every op completed before one's invocation
/// must have a revision no larger than its own.
fn check_real_time(
    ops: &[Op],
    timed: &[(Instant, Instant, i64, usize, bool)],
) -> Result<(), String> {
    let mut by_complete: Vec<(Instant, i64, usize)> =
        timed.iter().map(|(_, c, r, i, _)| (*c, *r, *i)).collect();
    by_complete.sort_by_key(|(c, _, _)| *c);
    let mut by_invoke = timed.to_vec();
    by_invoke.sort_by_key(|(inv, _, _, _, _)| *inv);
    let mut j = 0;
    let mut max_done: Option<(i64, usize)> = None;
    for (invoke, _, rev, i, write) in by_invoke {
        while j < by_complete.len() && by_complete[j].0 < invoke {
            let (_, r, k) = by_complete[j];
            if max_done.is_none_or(|(m, _)| r > m) {
                max_done = Some((r, k));
            }
            j += 1;
        }
        if let Some((m, k)) = max_done {
            // A read may share the revision of what it follows; a write
            // must come strictly after everything that preceded it.
            if m > rev || (write && m == rev) {
                return Err(format!(
                    "real-time order violated: {:?} completed (revision {m}) before {:?} was invoked (revision {rev})",
                    ops[k], ops[i]
                ));
            }
        }
    }
    Ok(())
}

/// A watch stream's events must be exactly the log's, in order (a stream
/// that was cut short may stop early, never skip or repeat).
pub fn check_watch(events: &[Logged], log: &[Logged]) -> Result<(), String> {
    if events.len() > log.len() {
        return Err(format!(
            "watch saw {} events, the log has {}",
            events.len(),
            log.len()
        ));
    }
    for (i, (e, l)) in events.iter().zip(log).enumerate() {
        if e != l {
            return Err(format!("watch event {i} is {e:?}, the log has {l:?}"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logged(revision: i64, key: &str, value: Option<&str>, prev: Option<&str>) -> Logged {
        Logged {
            revision,
            key: key.into(),
            value: value.map(Into::into),
            prev: prev.map(Into::into),
        }
    }

    fn op(kind: Kind, outcome: Outcome) -> Op {
        let now = Instant::now();
        Op {
            client: 0,
            key: "k".into(),
            kind,
            invoke: now,
            complete: now,
            outcome,
        }
    }

    fn put(v: &str, revision: i64) -> Op {
        op(Kind::Put(v.into()), Outcome::Written { revision })
    }

    #[test]
    fn a_consistent_history_passes() {
        let log = [
            logged(2, "k", Some("a"), None),
            logged(3, "k", None, Some("a")),
            logged(4, "k", Some("b"), None),
        ];
        let ops = [
            put("a", 2),
            op(
                Kind::Delete,
                Outcome::Deleted {
                    revision: 3,
                    deleted: 1,
                },
            ),
            op(
                Kind::Cas {
                    value: "b".into(),
                    expect: 0,
                },
                Outcome::Written { revision: 4 },
            ),
            op(
                Kind::Cas {
                    value: "c".into(),
                    expect: 2,
                },
                Outcome::Read {
                    revision: 4,
                    value: Some(("b".into(), 4)),
                },
            ),
            op(
                Kind::SerialGet,
                Outcome::Read {
                    revision: 3,
                    value: None,
                },
            ),
        ];
        let r = check(&ops, &log).expect("consistent");
        assert_eq!((r.acknowledged_cas, r.failed_cas, r.deletes), (1, 1, 1));
    }

    #[test]
    fn violations_are_found() {
        let log = [
            logged(2, "k", Some("a"), None),
            logged(3, "k", Some("b"), Some("a")),
        ];
        // A CAS that expected the key absent yet was applied over "a".
        let bad_cas = [
            put("a", 2),
            op(
                Kind::Cas {
                    value: "b".into(),
                    expect: 0,
                },
                Outcome::Written { revision: 3 },
            ),
        ];
        assert!(check(&bad_cas, &log).is_err());
        // A read of a value that was already overwritten.
        let stale = [
            put("a", 2),
            put("b", 3),
            op(
                Kind::SerialGet,
                Outcome::Read {
                    revision: 3,
                    value: Some(("a".into(), 2)),
                },
            ),
        ];
        assert!(check(&stale, &log).is_err());
        // A delete in the log nobody asked for.
        let phantom = [
            logged(2, "k", Some("a"), None),
            logged(3, "k", None, Some("a")),
        ];
        assert!(check(&[put("a", 2)], &phantom).is_err());
        // A wrong prev_kv.
        let wrong_prev = [logged(2, "k", Some("a"), Some("zzz"))];
        assert!(check(&[put("a", 2)], &wrong_prev).is_err());
    }
}
