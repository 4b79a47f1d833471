//! Bounded concurrent load for fault tests: clients put unique values,
//! compare-and-swap with txns, delete, and read linearizably and
//! serializably, recording everything in a `History`; a watcher (with
//! prev_kv) follows the same keys, resuming after stream failures from the
//! next revision as etcd clients do; a lease client attaches keys to leases
//! it never keeps alive and times when each key goes; afterwards the
//! cluster's change log is read back for the checker.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, PutOptions, Txn, TxnOp,
    TxnOpResponse, WatchOptions,
};

use crate::history::{History, Kind, Logged, Op, Outcome};
use crate::XorShift;

pub const PREFIX: &str = "hist/";
pub const LEASE_PREFIX: &str = "lease/";
const KEYS: u64 = 8;
const OP_TIMEOUT: Duration = Duration::from_secs(10);

async fn connect_all(endpoints: &[String]) -> Option<Client> {
    let opts = ConnectOptions::new()
        .with_timeout(OP_TIMEOUT)
        .with_connect_timeout(Duration::from_secs(2));
    Client::connect(endpoints, Some(opts)).await.ok()
}

/// Concurrent clients until `stop` is set (or `max_ops` each). Client c
/// talks to endpoint c mod n first, so every member serves some clients.
pub struct Load {
    pub history: History,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    pub fn start(endpoints: &[String], clients: usize, max_ops: usize) -> Load {
        let history = History::default();
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..clients)
            .map(|c| {
                let mut eps = endpoints.to_vec();
                eps.rotate_left(c % endpoints.len());
                let (history, stop) = (history.clone(), stop.clone());
                tokio::spawn(async move { client_loop(c, eps, history, stop, max_ops).await })
            })
            .collect();
        Load {
            history,
            stop,
            tasks,
        }
    }

    /// Stop the clients and wait for them.
    pub async fn finish(self) -> History {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            let _ = t.await;
        }
        self.history
    }
}

fn read_value(kv: Option<&etcd_client::KeyValue>) -> Option<(String, i64)> {
    kv.map(|kv| {
        (
            String::from_utf8_lossy(kv.value()).into_owned(),
            kv.mod_revision(),
        )
    })
}

/// One operation of `kind` on `key`: its outcome.
async fn run_op(cl: &mut Client, key: &str, kind: &Kind) -> Outcome {
    let header_rev = |h: Option<&etcd_client::ResponseHeader>| h.map_or(0, |h| h.revision());
    let r = match kind {
        Kind::Put(v) => tokio::time::timeout(OP_TIMEOUT, cl.put(key, v.as_str(), None))
            .await
            .map(|r| {
                r.map(|r| Outcome::Written {
                    revision: header_rev(r.header()),
                })
            }),
        Kind::Cas { value, expect } => {
            let txn = Txn::new()
                .when([Compare::mod_revision(key, CompareOp::Equal, *expect)])
                .and_then([TxnOp::put(key, value.as_str(), None)])
                .or_else([TxnOp::get(key, None)]);
            tokio::time::timeout(OP_TIMEOUT, cl.txn(txn))
                .await
                .map(|r| {
                    r.map(|t| {
                        let revision = header_rev(t.header());
                        if t.succeeded() {
                            return Outcome::Written { revision };
                        }
                        let value = match t.op_responses().into_iter().next() {
                            Some(TxnOpResponse::Get(g)) => read_value(g.kvs().first()),
                            _ => None,
                        };
                        Outcome::Read { revision, value }
                    })
                })
        }
        Kind::Delete => tokio::time::timeout(OP_TIMEOUT, cl.delete(key, None))
            .await
            .map(|r| {
                r.map(|d| Outcome::Deleted {
                    revision: header_rev(d.header()),
                    deleted: d.deleted(),
                })
            }),
        Kind::Get | Kind::SerialGet => {
            let opts =
                matches!(kind, Kind::SerialGet).then(|| GetOptions::new().with_serializable());
            tokio::time::timeout(OP_TIMEOUT, cl.get(key, opts))
                .await
                .map(|r| {
                    r.map(|g| Outcome::Read {
                        revision: header_rev(g.header()),
                        value: read_value(g.kvs().first()),
                    })
                })
        }
    };
    match r {
        Ok(Ok(outcome)) => outcome,
        _ => Outcome::Unknown,
    }
}

async fn client_loop(
    c: usize,
    endpoints: Vec<String>,
    history: History,
    stop: Arc<AtomicBool>,
    max_ops: usize,
) {
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15 ^ (c as u64 + 1));
    let mut client = None;
    // The mod revision this client last saw per key, for its CAS txns.
    let mut seen: HashMap<String, i64> = HashMap::new();
    for seq in 0..max_ops {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        if client.is_none() {
            client = connect_all(&endpoints).await;
            if client.is_none() {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        }
        let Some(cl) = client.as_mut() else { continue };
        let key = format!("{PREFIX}{}", rng.next_u64() % KEYS);
        let value = format!("c{c}-{seq}");
        let kind = match rng.next_u64() % 100 {
            0..35 => Kind::Put(value),
            35..55 => Kind::Get,
            55..65 => Kind::SerialGet,
            65..75 => Kind::Delete,
            _ => Kind::Cas {
                value,
                expect: seen.get(&key).copied().unwrap_or(0),
            },
        };
        let invoke = Instant::now();
        let outcome = run_op(cl, &key, &kind).await;
        match &outcome {
            Outcome::Read { value, .. } => {
                seen.insert(key.clone(), value.as_ref().map_or(0, |(_, m)| *m));
            }
            Outcome::Written { revision } => {
                seen.insert(key.clone(), *revision);
            }
            _ => {}
        }
        let failed = matches!(outcome, Outcome::Unknown);
        history.record(Op {
            client: c,
            key,
            kind,
            invoke,
            complete: Instant::now(),
            outcome,
        });
        if failed {
            // Reconnect after a failure (the member may have restarted).
            client = None;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn logged(e: &etcd_client::Event) -> Option<Logged> {
    let kv = e.kv()?;
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    Some(Logged {
        revision: kv.mod_revision(),
        key: text(kv.key()),
        value: (e.event_type() == EventType::Put).then(|| text(kv.value())),
        prev: e.prev_kv().map(|p| text(p.value())),
    })
}

/// A watcher on a prefix from `start`, with prev_kv, that resumes from the
/// next revision after any stream failure, until stopped. Each event is
/// kept with the time it arrived.
pub struct Watcher {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<(Logged, Instant)>>>,
    /// Each (re)connection: when, to which endpoint, from which revision,
    /// and why the previous one ended.
    pub connections: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Watcher {
    pub fn start(endpoints: &[String], start: i64) -> Watcher {
        Watcher::on(endpoints, PREFIX, start)
    }

    pub fn on(endpoints: &[String], prefix: &str, start: i64) -> Watcher {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn(watch_loop(
            endpoints.to_vec(),
            prefix.to_string(),
            start,
            stop.clone(),
            seen.clone(),
            connections.clone(),
        ));
        Watcher {
            stop,
            seen,
            connections,
            task,
        }
    }

    /// Stop once the watcher has seen revision `until` (or after 30 s).
    pub async fn finish(self, until: i64) -> Vec<Logged> {
        self.finish_timed(until)
            .await
            .into_iter()
            .map(|(l, _)| l)
            .collect()
    }

    /// `finish`, with arrival times.
    pub async fn finish_timed(self, until: i64) -> Vec<(Logged, Instant)> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let last = self.seen.lock().expect("seen").last().map(|l| l.0.revision);
            if last.unwrap_or(0) >= until {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
        let seen = self.seen.lock().expect("seen").clone();
        seen
    }
}

/// Watch through one member at a time, moving to the next one after any
/// failure (so where each stretch of events came from is known).
async fn watch_loop(
    endpoints: Vec<String>,
    prefix: String,
    start: i64,
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<(Logged, Instant)>>>,
    connections: Arc<Mutex<Vec<String>>>,
) {
    let began = Instant::now();
    let mut next = start;
    let mut turn = 0;
    while !stop.load(Ordering::Relaxed) {
        let endpoint = endpoints[turn % endpoints.len()].clone();
        turn += 1;
        let Some(mut client) = connect_all(std::slice::from_ref(&endpoint)).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        if let Ok(mut c) = connections.lock() {
            c.push(format!(
                "{:.1}s: {endpoint} from {next}",
                began.elapsed().as_secs_f64()
            ));
        }
        let opts = WatchOptions::new()
            .with_prefix()
            .with_prev_key()
            .with_start_revision(next);
        let Ok(mut stream) = client.watch(prefix.as_str(), Some(opts)).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        loop {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            let msg = tokio::time::timeout(Duration::from_millis(200), stream.message()).await;
            match msg {
                Err(_) => continue,
                Ok(Ok(Some(resp))) => {
                    let mut seen = seen.lock().expect("seen");
                    for l in resp.events().iter().filter_map(logged) {
                        next = l.revision + 1;
                        seen.push((l, Instant::now()));
                    }
                }
                Ok(_) => break,
            }
        }
    }
}

/// The cluster's change log under PREFIX from `start`: every put and
/// delete in revision order (with prev_kv), read back with a watch up to
/// the cluster's current revision (a progress answer at or past it proves
/// nothing is left).
pub async fn read_log(endpoints: &[String], start: i64) -> Vec<Logged> {
    let mut client = connect_all(endpoints).await.expect("connect for the log");
    let current = client
        .get(PREFIX, None)
        .await
        .expect("current revision")
        .header()
        .map_or(0, |h| h.revision());
    let mut log = Vec::new();
    if current < start {
        return log;
    }
    let opts = WatchOptions::new()
        .with_prefix()
        .with_prev_key()
        .with_start_revision(start);
    let mut stream = client
        .watch(PREFIX, Some(opts))
        .await
        .expect("watch the log");
    // A member replaying much history on a loaded machine may be slow:
    // wait for all of it (bounded), never return part of it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let _ = stream.request_progress().await;
        let resp = match tokio::time::timeout_at(deadline, stream.message()).await {
            Ok(Ok(Some(resp))) => resp,
            other => panic!(
                "reading the log back stopped at {:?} of {current}: {other:?}",
                log.last().map(|l: &Logged| l.revision)
            ),
        };
        let progress = resp.events().is_empty() && !resp.created();
        log.extend(resp.events().iter().filter_map(logged));
        if progress && resp.header().is_some_and(|h| h.revision() >= current) {
            return log;
        }
    }
}

/// Keys attached to leases nobody keeps alive: when each was written and
/// when its deletion (the lease's expiry) was seen.
pub struct LeaseLoad {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Vec<LeasedKey>>,
    watcher: Watcher,
}

#[derive(Clone, Debug)]
pub struct LeasedKey {
    pub key: String,
    pub ttl: Duration,
    /// When the grant was sent: the lease cannot expire before this + TTL.
    pub granted: Instant,
    /// When the put attaching the key was acknowledged.
    pub written: Instant,
}

/// How the leased keys went: the latest a key was deleted after its
/// lease's TTL ran out, and keys deleted too early or never.
#[derive(Debug, Default)]
pub struct LeaseReport {
    pub keys: usize,
    /// The latest deletion past the TTL among keys judged.
    pub max_overstay: Duration,
    /// Keys that outlived the allowance while faults were under way.
    pub extended_by_faults: usize,
    pub violations: Vec<String>,
}

impl LeaseLoad {
    pub fn start(endpoints: &[String], start: i64, ttl_secs: i64) -> LeaseLoad {
        let stop = Arc::new(AtomicBool::new(false));
        let watcher = Watcher::on(endpoints, LEASE_PREFIX, start);
        let task = tokio::spawn(lease_loop(endpoints.to_vec(), ttl_secs, stop.clone()));
        LeaseLoad {
            stop,
            task,
            watcher,
        }
    }

    /// Stop granting, wait until every key should be gone (`allowed` past
    /// its TTL), and judge each key's deletion time. A key that stayed
    /// longer while `disturbed(from, to)` (faults that stop the lessor:
    /// leader changes, restarts) is counted, not judged: etcd's leases are
    /// extended by a leader change too.
    pub async fn finish(
        self,
        allowed: Duration,
        disturbed: impl Fn(Instant, Instant) -> bool,
    ) -> LeaseReport {
        self.stop.store(true, Ordering::Relaxed);
        let keys = self.task.await.unwrap_or_default();
        let last_due = keys.iter().map(|k| k.written + k.ttl + allowed).max();
        if let Some(due) = last_due {
            tokio::time::sleep_until(due.into()).await;
        }
        // Every deletion up to now has been delivered once the watcher is
        // stopped after a short grace.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let seen = self.watcher.finish_timed(i64::MAX).await;
        let deleted: HashMap<&str, Instant> = seen
            .iter()
            .filter(|(l, _)| l.value.is_none())
            .map(|(l, at)| (l.key.as_str(), *at))
            .collect();
        let mut report = LeaseReport {
            keys: keys.len(),
            ..Default::default()
        };
        for k in &keys {
            let expiry = k.written + k.ttl;
            match deleted.get(k.key.as_str()) {
                None if disturbed(expiry, Instant::now()) => report.extended_by_faults += 1,
                None => report.violations.push(format!(
                    "{} outlived its lease by more than {allowed:?}",
                    k.key
                )),
                Some(at) if *at < k.granted + k.ttl => report.violations.push(format!(
                    "{} deleted {:?} before its TTL ran out",
                    k.key,
                    k.granted + k.ttl - *at
                )),
                Some(at) => {
                    let over = at.saturating_duration_since(expiry);
                    if over > allowed && disturbed(expiry, *at) {
                        report.extended_by_faults += 1;
                        continue;
                    }
                    report.max_overstay = report.max_overstay.max(over);
                    if over > allowed {
                        report
                            .violations
                            .push(format!("{} outlived its lease by {over:?}", k.key));
                    }
                }
            }
        }
        report
    }
}

async fn lease_loop(
    endpoints: Vec<String>,
    ttl_secs: i64,
    stop: Arc<AtomicBool>,
) -> Vec<LeasedKey> {
    let mut keys = Vec::new();
    let mut client = None;
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        if client.is_none() {
            client = connect_all(&endpoints).await;
        }
        let Some(cl) = client.as_mut() else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let granted = Instant::now();
        let key = format!("{LEASE_PREFIX}{n}");
        n += 1;
        let attached = async {
            let lease = cl.lease_grant(ttl_secs, None).await?.id();
            cl.put(key.as_str(), "v", Some(PutOptions::new().with_lease(lease)))
                .await
        };
        match tokio::time::timeout(OP_TIMEOUT, attached).await {
            Ok(Ok(_)) => keys.push(LeasedKey {
                key,
                ttl: Duration::from_secs(ttl_secs as u64),
                granted,
                written: Instant::now(),
            }),
            // Unknown outcome: such a key is not judged.
            _ => client = None,
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    keys
}
