//! The workloads: closed loops of clients over shared HTTP/2 connections
//! (each client sends its next request when the last one is answered), a
//! lease keepalive stream per client, and watch latency (one writer at a
//! fixed rate, every watcher timing each event from the put's send time,
//! carried in the value).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use common::proto::etcdserverpb::kv_client::KvClient;
use common::proto::etcdserverpb::lease_client::LeaseClient;
use common::proto::etcdserverpb::request_op::Request as Op;
use common::proto::etcdserverpb::watch_client::WatchClient;
use common::proto::etcdserverpb::watch_request::RequestUnion;
use common::proto::etcdserverpb::{
    LeaseGrantRequest, LeaseKeepAliveRequest, LeaseRevokeRequest, PutRequest, RangeRequest,
    RequestOp, TxnRequest, WatchCreateRequest, WatchRequest,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

use crate::server_usage::Meter;
use crate::stats::{Outcome, Recorder};
use crate::{Command, Common};

/// The longest any run may take, whatever it was asked.
pub(crate) const AT_MOST: Duration = Duration::from_secs(3600);

pub async fn run(cmd: Command) -> anyhow::Result<Outcome> {
    let outcome = match cmd {
        Command::Put { common } => kv(common, Kind::Put, "put").await?,
        Command::Range {
            common,
            serializable,
            no_prefill,
        } => {
            if !no_prefill {
                prefill(&common).await?;
            }
            kv(common, Kind::Get { serializable }, "range").await?
        }
        Command::Mixed {
            common,
            read_ratio,
            no_prefill,
        } => {
            if !no_prefill {
                prefill(&common).await?;
            }
            kv(common, Kind::Mixed { read_ratio }, "mixed").await?
        }
        Command::TxnPut { common, txn_ops } => {
            kv(common, Kind::Txn(txn_ops.max(1)), "txn-put").await?
        }
        Command::LeaseKeepalive { common } => keepalives(common).await?,
        Command::WatchLatency {
            common,
            watchers,
            put_rate,
        } => watch_latency(common, watchers.max(1), put_rate.max(1)).await?,
        Command::Idle { common } => idle(common).await?,
        Command::Failover {
            common,
            fault,
            fault_after,
            put_timeout_ms,
        } => {
            let plan = crate::failover::Plan {
                fault,
                fault_after: Duration::try_from_secs_f64(fault_after)
                    .context("--fault-after is not a number of seconds")?,
                put_timeout: Duration::from_millis(put_timeout_ms.max(1)),
            };
            crate::failover::run(common, plan).await?
        }
        Command::Table { .. } => anyhow::bail!("not a workload"),
    };
    Ok(outcome)
}

/// Loopback endpoints only: a benchmark never leaves the machine.
pub(crate) fn endpoints(common: &Common) -> anyhow::Result<Vec<String>> {
    let eps: Vec<String> = common
        .endpoints
        .split(',')
        .map(|e| e.trim().trim_start_matches("http://").to_string())
        .filter(|e| !e.is_empty())
        .collect();
    anyhow::ensure!(!eps.is_empty(), "--endpoints is empty");
    for e in &eps {
        let host = e.rsplit_once(':').map_or(e.as_str(), |(h, _)| h);
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let loopback = host == "localhost"
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        anyhow::ensure!(loopback, "{e} is not a loopback endpoint");
    }
    Ok(eps)
}

/// `common.conns` connections, spread over the endpoints in turn.
pub(crate) async fn connect(common: &Common) -> anyhow::Result<Vec<Channel>> {
    let eps = endpoints(common)?;
    let mut channels = Vec::new();
    for i in 0..common.conns.max(1) {
        let ep = &eps[i % eps.len()];
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{ep}"))?
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
            .with_context(|| format!("cannot connect to {ep}"))?;
        channels.push(channel);
    }
    Ok(channels)
}

/// When a closed loop stops: after a count of requests, or a time.
struct Budget {
    deadline: Instant,
    left: Option<AtomicU64>,
}

impl Budget {
    fn of(common: &Common) -> Budget {
        let time = match common.total {
            Some(_) => AT_MOST,
            None => Duration::from_secs(common.duration).min(AT_MOST),
        };
        Budget {
            deadline: Instant::now() + time,
            left: common.total.map(AtomicU64::new),
        }
    }

    /// Whether one more request may go.
    fn take(&self) -> bool {
        if Instant::now() >= self.deadline {
            return false;
        }
        match &self.left {
            None => true,
            Some(left) => left
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok(),
        }
    }
}

/// Which keys the clients use: `b/` then the key's number, zero-padded to
/// `size` bytes.
pub(crate) struct Keys {
    space: u64,
    size: usize,
    sequential: bool,
    next: AtomicU64,
}

impl Keys {
    pub(crate) fn of(common: &Common) -> Keys {
        Keys {
            space: common.key_space.max(1),
            size: common.key_size,
            sequential: common.sequential_keys,
            next: AtomicU64::new(0),
        }
    }

    fn index(&self, rng: &mut u64) -> u64 {
        if self.sequential {
            self.next.fetch_add(1, Ordering::Relaxed) % self.space
        } else {
            xorshift(rng) % self.space
        }
    }

    pub(crate) fn key(&self, i: u64) -> Vec<u8> {
        let digits = self.size.saturating_sub(2).max(1);
        format!("b/{i:0digits$}").into_bytes()
    }
}

fn xorshift(s: &mut u64) -> u64 {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    *s
}

fn seed(client: usize) -> u64 {
    0x9e37_79b9_7f4a_7c15 ^ (client as u64 + 1).wrapping_mul(0x2545_f491_4f6c_dd1d)
}

#[derive(Clone, Copy)]
enum Kind {
    Put,
    Get { serializable: bool },
    Mixed { read_ratio: f64 },
    Txn(usize),
}

/// What every client of a key-value run shares.
struct Plan {
    budget: Budget,
    keys: Keys,
    values: Values,
    kind: Kind,
}

/// Values that do not compress: each put takes `size` bytes at its own
/// place in a block of random bytes (a value of one repeated byte, or the
/// same value every time, would flatter any store that compresses).
pub(crate) struct Values {
    block: Vec<u8>,
    size: usize,
    next: AtomicU64,
}

impl Values {
    pub(crate) fn of(size: usize) -> Values {
        let len = (size * 2).max(1 << 20);
        let mut rng = 0x2545_f491_4f6c_dd1d_u64;
        let block = (0..len).map(|_| xorshift(&mut rng) as u8).collect();
        Values {
            block,
            size,
            next: AtomicU64::new(0),
        }
    }

    pub(crate) fn next(&self) -> Vec<u8> {
        let room = (self.block.len() - self.size) as u64 + 1;
        // A stride coprime to most block lengths walks every offset.
        let at = self.next.fetch_add(7919, Ordering::Relaxed) % room;
        self.block[at as usize..at as usize + self.size].to_vec()
    }
}

impl Plan {
    fn put(&self, key: Vec<u8>) -> PutRequest {
        PutRequest {
            key,
            value: self.values.next(),
            ..Default::default()
        }
    }

    /// One request of this run's kind; whether it succeeded.
    async fn step(&self, kv: &mut KvClient<Channel>, rng: &mut u64) -> bool {
        let read = |serializable: bool, rng: &mut u64| RangeRequest {
            key: self.keys.key(self.keys.index(rng)),
            serializable,
            ..Default::default()
        };
        match self.kind {
            Kind::Put => {
                let key = self.keys.key(self.keys.index(rng));
                kv.put(self.put(key)).await.is_ok()
            }
            Kind::Get { serializable } => kv.range(read(serializable, rng)).await.is_ok(),
            Kind::Mixed { read_ratio } => {
                let roll = (xorshift(rng) % 10_000) as f64 / 10_000.0;
                if roll < read_ratio {
                    kv.range(read(false, rng)).await.is_ok()
                } else {
                    let key = self.keys.key(self.keys.index(rng));
                    kv.put(self.put(key)).await.is_ok()
                }
            }
            Kind::Txn(ops) => {
                // Consecutive keys: distinct within the txn.
                let first = self.keys.index(rng);
                let success = (0..ops as u64)
                    .map(|j| RequestOp {
                        request: Some(Op::RequestPut(
                            self.put(self.keys.key((first + j) % self.keys.space)),
                        )),
                    })
                    .collect();
                let txn = TxnRequest {
                    success,
                    ..Default::default()
                };
                kv.txn(txn).await.is_ok()
            }
        }
    }
}

async fn kv(common: Common, kind: Kind, workload: &'static str) -> anyhow::Result<Outcome> {
    let channels = connect(&common).await?;
    let plan = Arc::new(Plan {
        budget: Budget::of(&common),
        keys: Keys::of(&common),
        values: Values::of(common.val_size),
        kind,
    });
    let meter = Meter::start(common.server_pids.as_deref())?;
    let started = Instant::now();
    let clients = common.clients.max(1);
    let pace = Pace::of(common.rate, clients, started);
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let mut kv = KvClient::new(channels[c % channels.len()].clone())
                .max_decoding_message_size(usize::MAX)
                .max_encoding_message_size(usize::MAX);
            let plan = plan.clone();
            tokio::spawn(async move {
                let mut rec = Recorder::default();
                let mut rng = seed(c);
                let mut sent_count = 0u64;
                while plan.budget.take() {
                    if let Some(at) = pace.and_then(|p| p.slot(c, sent_count)) {
                        if at >= plan.budget.deadline {
                            break;
                        }
                        tokio::time::sleep_until(at.into()).await;
                    }
                    sent_count += 1;
                    let sent = Instant::now();
                    let step = plan.step(&mut kv, &mut rng);
                    // A request still in flight when the run ends is left
                    // unanswered, neither timed nor counted.
                    match tokio::time::timeout_at(plan.budget.deadline.into(), step).await {
                        Ok(true) => rec.ok(sent.elapsed()),
                        Ok(false) => rec.failed(),
                        Err(_) => {}
                    }
                }
                rec
            })
        })
        .collect();
    let records = gather(tasks).await?;
    finish(&common, workload, records, started.elapsed(), meter)
}

/// When each client of a paced run sends: client `c` of `clients` sends
/// its k-th request at start + (k * clients + c) / rate.
#[derive(Clone, Copy)]
struct Pace {
    start: Instant,
    period: Duration,
    clients: u64,
}

impl Pace {
    fn of(rate: Option<f64>, clients: usize, start: Instant) -> Option<Pace> {
        let rate = rate.filter(|r| *r > 0.0)?;
        Some(Pace {
            start,
            period: Duration::from_secs_f64(1.0 / rate),
            clients: clients as u64,
        })
    }

    fn slot(&self, client: usize, k: u64) -> Option<Instant> {
        let n = k.checked_mul(self.clients)?.checked_add(client as u64)?;
        let offset = self.period.checked_mul(u32::try_from(n).ok()?)?;
        self.start.checked_add(offset)
    }
}

/// No requests for the run's duration: the servers' idle cost.
async fn idle(common: Common) -> anyhow::Result<Outcome> {
    let meter = Meter::start(common.server_pids.as_deref())?;
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(common.duration).min(AT_MOST)).await;
    finish(&common, "idle", Vec::new(), started.elapsed(), meter)
}

async fn gather(tasks: Vec<tokio::task::JoinHandle<Recorder>>) -> anyhow::Result<Vec<Recorder>> {
    let mut records = Vec::new();
    for t in tasks {
        records.push(t.await.context("a client task failed")?);
    }
    Ok(records)
}

fn finish(
    common: &Common,
    workload: &'static str,
    records: Vec<Recorder>,
    took: Duration,
    meter: Option<Meter>,
) -> anyhow::Result<Outcome> {
    let mut outcome = Outcome::from(&common.label, workload, records, took);
    outcome.val_size = common.val_size;
    outcome.server = meter.map(Meter::finish);
    if !common.json_only {
        eprintln!("{}", outcome.human());
    }
    Ok(outcome)
}

/// Every key of the key space written once, before a read workload.
async fn prefill(common: &Common) -> anyhow::Result<()> {
    let channels = connect(common).await?;
    let plan = Arc::new(Plan {
        budget: Budget {
            deadline: Instant::now() + AT_MOST,
            left: Some(AtomicU64::new(common.key_space.max(1))),
        },
        keys: Keys {
            sequential: true,
            ..Keys::of(common)
        },
        values: Values::of(common.val_size),
        kind: Kind::Put,
    });
    let tasks: Vec<_> = (0..64)
        .map(|c| {
            let mut kv = KvClient::new(channels[c % channels.len()].clone());
            let plan = plan.clone();
            tokio::spawn(async move {
                let mut rec = Recorder::default();
                let mut rng = seed(c);
                while plan.budget.take() {
                    if !plan.step(&mut kv, &mut rng).await {
                        rec.failed();
                    }
                }
                rec
            })
        })
        .collect();
    let failed: u64 = gather(tasks).await?.iter().map(|r| r.errors).sum();
    anyhow::ensure!(failed == 0, "{failed} puts of the prefill failed");
    Ok(())
}

/// Each client grants a lease and keeps it alive on its own stream, one
/// keepalive in flight at a time.
async fn keepalives(common: Common) -> anyhow::Result<Outcome> {
    let channels = connect(&common).await?;
    let meter = Meter::start(common.server_pids.as_deref())?;
    let budget = Arc::new(Budget::of(&common));
    let started = Instant::now();
    let tasks: Vec<_> = (0..common.clients.max(1))
        .map(|c| {
            let mut lease = LeaseClient::new(channels[c % channels.len()].clone());
            let budget = budget.clone();
            tokio::spawn(async move {
                let mut rec = Recorder::default();
                let Ok(granted) = lease
                    .lease_grant(LeaseGrantRequest { ttl: 60, id: 0 })
                    .await
                else {
                    rec.failed();
                    return rec;
                };
                let id = granted.into_inner().id;
                // The first keepalive goes with the call: a server may send
                // its headers only with its first answer (grpc-go does).
                let (tx, rx) = mpsc::channel(1);
                let mut sent = Instant::now();
                if !budget.take() || tx.send(LeaseKeepAliveRequest { id }).await.is_err() {
                    return rec;
                }
                let opened = tokio::time::timeout_at(
                    budget.deadline.into(),
                    lease.lease_keep_alive(ReceiverStream::new(rx)),
                );
                let Ok(Ok(answers)) = opened.await else {
                    rec.failed();
                    return rec;
                };
                let mut answers = answers.into_inner();
                loop {
                    let answer = tokio::time::timeout_at(budget.deadline.into(), answers.message());
                    match answer.await {
                        Ok(Ok(Some(_))) => rec.ok(sent.elapsed()),
                        Err(_) => break, // the run ended while waiting
                        Ok(_) => {
                            rec.failed();
                            break;
                        }
                    }
                    if !budget.take() {
                        break;
                    }
                    sent = Instant::now();
                    if tx.send(LeaseKeepAliveRequest { id }).await.is_err() {
                        rec.failed();
                        break;
                    }
                }
                // Leave no lease behind to expire during the next run.
                drop(tx);
                let revoke = LeaseRevokeRequest { id };
                let _ =
                    tokio::time::timeout(Duration::from_secs(5), lease.lease_revoke(revoke)).await;
                rec
            })
        })
        .collect();
    let records = gather(tasks).await?;
    finish(
        &common,
        "lease-keepalive",
        records,
        started.elapsed(),
        meter,
    )
}

/// The send time of a warm-up put's value: its events are not timed.
const WARM_UP: u64 = 0;
/// How long the writer writes, at its rate, before puts are timed.
const WARM_UP_FOR: Duration = Duration::from_secs(1);

/// `watchers` watch `w/`; one writer puts to it at `put_rate` through the
/// first connection; each event's latency is its arrival minus its put's
/// send time (nanoseconds since `epoch`, the value's first 8 bytes).
async fn watch_latency(common: Common, watchers: usize, put_rate: u64) -> anyhow::Result<Outcome> {
    let channels = connect(&common).await?;
    let meter = Meter::start(common.server_pids.as_deref())?;
    let epoch = Instant::now();
    let run_for = Duration::from_secs(common.duration).min(AT_MOST);
    let created = Arc::new(AtomicUsize::new(0));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    for w in 0..watchers {
        let mut client = WatchClient::new(channels[w % channels.len()].clone());
        let (tx, rx) = mpsc::channel(1);
        let create = WatchRequest {
            request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
                key: b"w/".to_vec(),
                range_end: b"w0".to_vec(),
                ..Default::default()
            })),
        };
        tx.send(create).await.context("watch request")?;
        let opened = tokio::time::timeout(
            Duration::from_secs(30),
            client.watch(ReceiverStream::new(rx)),
        );
        let mut events = opened
            .await
            .context("a watch was not opened within 30 s")?
            .context("open a watch")?
            .into_inner();
        let (created, mut stop) = (created.clone(), stop_rx.clone());
        tasks.push(tokio::spawn(async move {
            let _keep_open = tx;
            let mut rec = Recorder::default();
            loop {
                let next = tokio::select! {
                    m = events.message() => m,
                    _ = stop.changed() => break,
                };
                let Ok(Some(resp)) = next else {
                    rec.failed();
                    break;
                };
                if resp.created {
                    created.fetch_add(1, Ordering::Relaxed);
                }
                let now = epoch.elapsed();
                for ev in &resp.events {
                    let Some(kv) = &ev.kv else { continue };
                    let Some(stamp) = kv.value.get(..8) else {
                        continue;
                    };
                    let sent = u64::from_be_bytes(stamp.try_into().unwrap_or_default());
                    if sent != WARM_UP {
                        rec.ok(now.saturating_sub(Duration::from_nanos(sent)));
                    }
                }
            }
            rec
        }));
    }
    let ready_by = Instant::now() + Duration::from_secs(30);
    while created.load(Ordering::Relaxed) < watchers {
        anyhow::ensure!(
            Instant::now() < ready_by,
            "watchers were not created within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The writer, at a fixed rate (a slow put delays the next, never
    // piles them up). Its first second is not timed: the first writes
    // after the watches are created pay set-up costs no later write does.
    let mut kv = KvClient::new(channels[0].clone());
    let mut writer = Recorder::default();
    let warm_until = Instant::now() + WARM_UP_FOR;
    let mut started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_nanos(1_000_000_000 / put_rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let warm = Instant::now() < warm_until;
        if warm {
            started = Instant::now();
        } else if started.elapsed() >= run_for {
            break;
        }
        tick.tick().await;
        let stamp = if warm {
            WARM_UP
        } else {
            epoch.elapsed().as_nanos() as u64
        };
        let mut value = stamp.to_be_bytes().to_vec();
        value.resize(common.val_size.max(8), b'v');
        let put = PutRequest {
            key: b"w/k".to_vec(),
            value,
            ..Default::default()
        };
        if kv.put(put).await.is_err() {
            writer.failed();
        }
    }
    // The last events' time to arrive.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let took = started.elapsed();
    let _ = stop_tx.send(true);
    let mut records = gather(tasks).await?;
    records.push(writer);
    finish(&common, "watch-latency", records, took, meter)
}
