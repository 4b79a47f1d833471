//! Prometheus metrics with etcd's names where etcd has one: counters,
//! gauges and histograms (optionally labelled) kept in statics, rendered as
//! Prometheus text, and a minimal HTTP endpoint for a daemon's
//! `--listen-metrics-urls` (GET /metrics).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// One metric family that can render itself.
pub trait Metric: Sync {
    fn render(&self, out: &mut String);
}

fn head(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

pub struct Counter {
    name: &'static str,
    help: &'static str,
    value: AtomicU64,
}

impl Counter {
    pub const fn new(name: &'static str, help: &'static str) -> Counter {
        Counter {
            name,
            help,
            value: AtomicU64::new(0),
        }
    }
    pub fn inc(&self) {
        self.value.fetch_add(1, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.value.load(Ordering::Relaxed)
    }
}

impl Metric for Counter {
    fn render(&self, out: &mut String) {
        head(out, self.name, self.help, "counter");
        let _ = writeln!(out, "{} {}", self.name, self.get());
    }
}

pub struct Gauge {
    name: &'static str,
    help: &'static str,
    value: AtomicI64,
}

impl Gauge {
    pub const fn new(name: &'static str, help: &'static str) -> Gauge {
        Gauge {
            name,
            help,
            value: AtomicI64::new(0),
        }
    }
    pub fn set(&self, v: i64) {
        self.value.store(v, Ordering::Relaxed);
    }
    pub fn add(&self, n: i64) {
        self.value.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> i64 {
        self.value.load(Ordering::Relaxed)
    }
}

impl Metric for Gauge {
    fn render(&self, out: &mut String) {
        head(out, self.name, self.help, "gauge");
        let _ = writeln!(out, "{} {}", self.name, self.get());
    }
}

/// etcd's disk and network latency buckets: `start` doubling 14 times.
const BUCKETS: usize = 14;

#[derive(Default, Clone)]
struct Observed {
    buckets: [u64; BUCKETS],
    count: u64,
    sum: f64,
}

/// A histogram, optionally with one label (etcd's peer round trip has
/// `To`); the buckets are etcd's exponential ones from `start` seconds.
pub struct Histogram {
    name: &'static str,
    help: &'static str,
    label: Option<&'static str>,
    start: f64,
    series: Mutex<BTreeMap<String, Observed>>,
}

impl Histogram {
    pub const fn new(name: &'static str, help: &'static str, start: f64) -> Histogram {
        Histogram {
            name,
            help,
            label: None,
            start,
            series: Mutex::new(BTreeMap::new()),
        }
    }

    pub const fn labelled(
        name: &'static str,
        help: &'static str,
        label: &'static str,
        start: f64,
    ) -> Histogram {
        Histogram {
            name,
            help,
            label: Some(label),
            start,
            series: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn observe(&self, d: Duration) {
        self.observe_for("", d);
    }

    pub fn observe_for(&self, label_value: &str, d: Duration) {
        let secs = d.as_secs_f64();
        let Ok(mut series) = self.series.lock() else {
            return;
        };
        // No allocation on the hot path once the series exists.
        if !series.contains_key(label_value) {
            series.insert(label_value.to_string(), Observed::default());
        }
        let Some(o) = series.get_mut(label_value) else {
            return;
        };
        let mut bound = self.start;
        for b in o.buckets.iter_mut() {
            if secs <= bound {
                *b += 1;
            }
            bound *= 2.0;
        }
        o.count += 1;
        o.sum += secs;
    }
}

impl Metric for Histogram {
    fn render(&self, out: &mut String) {
        head(out, self.name, self.help, "histogram");
        let Ok(series) = self.series.lock() else {
            return;
        };
        let mut all = series.clone();
        if self.label.is_none() {
            all.entry(String::new()).or_default();
        }
        for (value, o) in all {
            let labels = |extra: &str| match (self.label, extra.is_empty()) {
                (Some(l), true) => format!("{{{l}=\"{value}\"}}"),
                (Some(l), false) => format!("{{{l}=\"{value}\",{extra}}}"),
                (None, true) => String::new(),
                (None, false) => format!("{{{extra}}}"),
            };
            let mut bound = self.start;
            for b in o.buckets {
                let le = format!("le=\"{bound}\"");
                let _ = writeln!(out, "{}_bucket{} {b}", self.name, labels(&le));
                bound *= 2.0;
            }
            let _ = writeln!(
                out,
                "{}_bucket{} {}",
                self.name,
                labels("le=\"+Inf\""),
                o.count
            );
            let _ = writeln!(out, "{}_sum{} {}", self.name, labels(""), o.sum);
            let _ = writeln!(out, "{}_count{} {}", self.name, labels(""), o.count);
        }
    }
}

/// A counter with labels (etcd's grpc_server_handled_total and friends).
pub struct CounterVec {
    name: &'static str,
    help: &'static str,
    labels: &'static [&'static str],
    /// (label values, count); found by a scan, so counting allocates
    /// nothing once a series exists.
    values: Mutex<Vec<(Vec<String>, u64)>>,
}

impl CounterVec {
    pub const fn new(
        name: &'static str,
        help: &'static str,
        labels: &'static [&'static str],
    ) -> CounterVec {
        CounterVec {
            name,
            help,
            labels,
            values: Mutex::new(Vec::new()),
        }
    }

    pub fn inc(&self, values: &[&str]) {
        let Ok(mut all) = self.values.lock() else {
            return;
        };
        match all
            .iter_mut()
            .find(|(k, _)| k.iter().map(String::as_str).eq(values.iter().copied()))
        {
            Some((_, n)) => *n += 1,
            None => all.push((values.iter().map(|s| s.to_string()).collect(), 1)),
        }
    }
}

impl Metric for CounterVec {
    fn render(&self, out: &mut String) {
        head(out, self.name, self.help, "counter");
        let Ok(mut values) = self.values.lock().map(|v| v.clone()) else {
            return;
        };
        values.sort();
        for (vals, n) in values.iter() {
            let labels: Vec<String> = self
                .labels
                .iter()
                .zip(vals)
                .map(|(l, v)| format!("{l}=\"{v}\""))
                .collect();
            let _ = writeln!(out, "{}{{{}}} {n}", self.name, labels.join(","));
        }
    }
}

/// Prometheus text for `metrics`.
pub fn render(metrics: &[&dyn Metric]) -> String {
    let mut out = String::new();
    for m in metrics {
        m.render(&mut out);
    }
    out
}

/// Serve `GET /metrics` on `addr` (a daemon's --listen-metrics-urls) until
/// the process ends. Only that path; anything else gets 404.
pub async fn serve(addr: std::net::SocketAddr, render: fn() -> String) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                // The whole request head (bounded), then the answer.
                let mut buf = Vec::with_capacity(1024);
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 16 * 1024 {
                    match tokio::time::timeout(Duration::from_secs(5), conn.read(&mut chunk)).await
                    {
                        Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                        _ => return,
                    }
                }
                let request = String::from_utf8_lossy(&buf);
                let path = request.split_whitespace().nth(1).unwrap_or("");
                let (status, body) = if path == "/metrics" || path.starts_with("/metrics?") {
                    ("200 OK", render())
                } else {
                    ("404 Not Found", "404 page not found\n".to_string())
                };
                let response = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = conn.write_all(response.as_bytes()).await;
            });
        }
    });
    Ok(())
}

/// Start serving `GET /metrics` on `url` when one is configured (a
/// daemon's metrics URL); a bad URL or a busy port is a startup error.
pub async fn serve_url(url: Option<&str>, render: fn() -> String) -> Result<(), String> {
    let Some(url) = url else {
        return Ok(());
    };
    let addr = crate::config::listen_addr(url).map_err(|e| e.to_string())?;
    serve(addr, render)
        .await
        .map_err(|e| format!("cannot serve metrics on {url}: {e}"))?;
    tracing::info!(%addr, "serving metrics");
    Ok(())
}
