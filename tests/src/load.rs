//! Bounded concurrent load for fault tests: clients put unique values and
//! read keys linearizably, recording everything in a `History`; a watcher
//! follows the same keys (resuming after stream failures from the next
//! revision, as etcd clients do); afterwards the cluster's change log is
//! read back for the checker.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etcd_client::{Client, ConnectOptions, GetOptions, SortOrder, SortTarget, WatchOptions};

use crate::history::{History, Logged, Op, Outcome};
use crate::XorShift;

pub const PREFIX: &str = "hist/";
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

async fn client_loop(
    c: usize,
    endpoints: Vec<String>,
    history: History,
    stop: Arc<AtomicBool>,
    max_ops: usize,
) {
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15 ^ (c as u64 + 1));
    let mut client = None;
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
        let is_put = rng.next_u64().is_multiple_of(2);
        let invoke = Instant::now();
        let (put, outcome) = if is_put {
            let value = format!("c{c}-{seq}");
            let r =
                tokio::time::timeout(OP_TIMEOUT, cl.put(key.clone(), value.clone(), None)).await;
            let outcome = match r {
                Ok(Ok(resp)) => match resp.header() {
                    Some(h) => Outcome::Put {
                        revision: h.revision(),
                    },
                    None => Outcome::Unknown,
                },
                _ => Outcome::Unknown,
            };
            (Some(value), outcome)
        } else {
            let r = tokio::time::timeout(OP_TIMEOUT, cl.get(key.clone(), None)).await;
            let outcome = match r {
                Ok(Ok(resp)) => Outcome::Get {
                    revision: resp.header().map_or(0, |h| h.revision()),
                    value: resp.kvs().first().map(|kv| {
                        (
                            String::from_utf8_lossy(kv.value()).into_owned(),
                            kv.mod_revision(),
                        )
                    }),
                },
                _ => Outcome::Unknown,
            };
            (None, outcome)
        };
        let failed = matches!(outcome, Outcome::Unknown);
        history.record(Op {
            client: c,
            key,
            put,
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

/// A watcher on PREFIX from `start` that resumes from the next revision
/// after any stream failure, until stopped.
pub struct Watcher {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<Logged>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Watcher {
    pub fn start(endpoints: &[String], start: i64) -> Watcher {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn(watch_loop(
            endpoints.to_vec(),
            start,
            stop.clone(),
            seen.clone(),
        ));
        Watcher { stop, seen, task }
    }

    /// Stop once the watcher has seen revision `until` (or after 30 s).
    pub async fn finish(self, until: i64) -> Vec<Logged> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let last = self.seen.lock().expect("seen").last().map(|l| l.revision);
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

async fn watch_loop(
    endpoints: Vec<String>,
    start: i64,
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<Logged>>>,
) {
    let mut next = start;
    while !stop.load(Ordering::Relaxed) {
        let Some(mut client) = connect_all(&endpoints).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let opts = WatchOptions::new().with_prefix().with_start_revision(next);
        let Ok(mut stream) = client.watch(PREFIX, Some(opts)).await else {
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
                    for e in resp.events() {
                        if let Some(kv) = e.kv() {
                            seen.push(Logged {
                                revision: kv.mod_revision(),
                                key: String::from_utf8_lossy(kv.key()).into_owned(),
                                value: String::from_utf8_lossy(kv.value()).into_owned(),
                            });
                            next = kv.mod_revision() + 1;
                        }
                    }
                }
                Ok(_) => break,
            }
        }
    }
}

/// The cluster's change log under PREFIX from `start`: every put in
/// revision order, read back with a watch up to the newest put there.
pub async fn read_log(endpoints: &[String], start: i64) -> Vec<Logged> {
    let mut client = connect_all(endpoints).await.expect("connect for the log");
    // The newest revision under PREFIX (the tests only put there).
    let newest = client
        .get(
            PREFIX,
            Some(
                GetOptions::new()
                    .with_prefix()
                    .with_sort(SortTarget::Mod, SortOrder::Descend)
                    .with_limit(1),
            ),
        )
        .await
        .expect("newest revision under the prefix")
        .kvs()
        .first()
        .map_or(0, |kv| kv.mod_revision());
    let mut log = Vec::new();
    if newest < start {
        return log;
    }
    let opts = WatchOptions::new().with_prefix().with_start_revision(start);
    let mut stream = client
        .watch(PREFIX, Some(opts))
        .await
        .expect("watch the log");
    // A member replaying much history on a loaded machine may be slow:
    // wait for all of it (bounded), never return part of it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while log.last().is_none_or(|l: &Logged| l.revision < newest) {
        let resp = match tokio::time::timeout_at(deadline, stream.message()).await {
            Ok(Ok(Some(resp))) => resp,
            other => panic!(
                "reading the log back stopped at {:?} of {newest}: {other:?}",
                log.last().map(|l| l.revision)
            ),
        };
        for e in resp.events() {
            if let Some(kv) = e.kv() {
                log.push(Logged {
                    revision: kv.mod_revision(),
                    key: String::from_utf8_lossy(kv.key()).into_owned(),
                    value: String::from_utf8_lossy(kv.value()).into_owned(),
                });
            }
        }
    }
    log
}
