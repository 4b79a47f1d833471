//! The history checker: concurrent clients record every operation (invoke
//! and completion times, result or failure) on a key-value register model,
//! and `check` proves the history linearizable against the cluster's own
//! change log, as etcd's robustness tests do with revisions:
//!
//! - every acknowledged put is in the log at the revision it was told, with
//!   its value (no acknowledged write lost); every value is applied at most
//!   once and every logged value was put by someone (no phantom, no
//!   duplicate); a put whose outcome is unknown may or may not be there;
//! - every read saw exactly the newest logged write to its key at or below
//!   the revision it was told (or nothing);
//! - real time: if A completed before B was invoked, rev(A) ≤ rev(B), where
//!   a put's revision is where the log has it and a read's is the revision
//!   in its header.
//!
//! Watch streams are checked against the same log: strictly increasing
//! revisions, no gap, no duplicate.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// A change in the cluster's log: key and value put at a revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Logged {
    pub revision: i64,
    pub key: String,
    pub value: String,
}

#[derive(Clone, Debug)]
pub enum Outcome {
    /// A put acknowledged at this revision.
    Put { revision: i64 },
    /// A read at header revision `revision` that saw `value` (with its mod
    /// revision) or no key.
    Get {
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
    /// Some for puts (values are unique across the whole history).
    pub put: Option<String>,
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
#[derive(Debug, Default)]
pub struct Report {
    pub acknowledged_puts: usize,
    pub reads: usize,
    pub unknown: usize,
    pub unknown_applied: usize,
}

pub fn check(ops: &[Op], log: &[Logged]) -> Result<Report, String> {
    let mut report = Report::default();
    // The log itself: strictly increasing revisions, each value once.
    let mut by_value: HashMap<&str, &Logged> = HashMap::new();
    for w in log.windows(2) {
        if w[1].revision <= w[0].revision {
            return Err(format!("log not increasing: {:?} then {:?}", w[0], w[1]));
        }
    }
    for l in log {
        if by_value.insert(l.value.as_str(), l).is_some() {
            return Err(format!("value applied twice: {l:?}"));
        }
    }
    // Per key: revision → value, to answer "newest write at or below R".
    let mut per_key: HashMap<&str, BTreeMap<i64, &str>> = HashMap::new();
    for l in log {
        per_key
            .entry(l.key.as_str())
            .or_default()
            .insert(l.revision, l.value.as_str());
    }
    let mut put_values: HashMap<&str, &Op> = HashMap::new();
    // Each op's revision for the real-time check (None: never happened).
    // (invoke, complete, revision, op index, is a write)
    let mut timed: Vec<(Instant, Instant, i64, usize, bool)> = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        if let Some(v) = &op.put {
            put_values.insert(v.as_str(), op);
            let logged = by_value.get(v.as_str());
            match (&op.outcome, logged) {
                (Outcome::Put { revision }, Some(l)) => {
                    report.acknowledged_puts += 1;
                    if l.revision != *revision || l.key != op.key {
                        return Err(format!(
                            "put {op:?} acknowledged at {revision} but the log has {l:?}"
                        ));
                    }
                    timed.push((op.invoke, op.complete, *revision, i, true));
                }
                (Outcome::Put { revision }, None) => {
                    let there = log.iter().find(|l| l.revision == *revision);
                    let first = log.first();
                    return Err(format!(
                        "acknowledged put lost: {op:?}; the log has {there:?} at that revision and starts with {first:?} ({} entries)",
                        log.len()
                    ));
                }
                (Outcome::Unknown, Some(l)) => {
                    report.unknown += 1;
                    report.unknown_applied += 1;
                    // It took effect at some point after its invocation.
                    timed.push((op.invoke, Instant::now(), l.revision, i, true));
                }
                (Outcome::Unknown, None) => report.unknown += 1,
                (Outcome::Get { .. }, _) => return Err(format!("put with a read outcome: {op:?}")),
            }
            continue;
        }
        match &op.outcome {
            Outcome::Get { revision, value } => {
                report.reads += 1;
                let newest = per_key
                    .get(op.key.as_str())
                    .and_then(|m| m.range(..=*revision).next_back())
                    .map(|(r, v)| (v.to_string(), *r));
                if newest != *value {
                    return Err(format!(
                        "read {op:?} at revision {revision} saw {value:?}, but the newest write then was {newest:?}"
                    ));
                }
                timed.push((op.invoke, op.complete, *revision, i, false));
            }
            Outcome::Unknown => report.unknown += 1,
            Outcome::Put { .. } => return Err(format!("read with a put outcome: {op:?}")),
        }
    }
    for l in log {
        if !put_values.contains_key(l.value.as_str()) {
            return Err(format!("phantom write in the log: {l:?}"));
        }
    }
    // Real time: sweep ops by invocation; every op completed before one's
    // invocation must have a revision no larger than its own.
    let mut by_complete: Vec<(Instant, i64, usize)> =
        timed.iter().map(|(_, c, r, i, _)| (*c, *r, *i)).collect();
    by_complete.sort_by_key(|(c, _, _)| *c);
    let mut by_invoke = timed.clone();
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
    Ok(report)
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
