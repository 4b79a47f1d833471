//! Prometheus metrics with etcd's names where etcd has one: counters,
//! gauges, histograms and labelled families kept in statics, rendered as
//! Prometheus text, and a minimal HTTP endpoint for a daemon's
//! `--listen-metrics-urls` (GET /metrics).
//!
//! Counting is relaxed atomics. A labelled family takes a lock only to
//! find or add a series; hot paths hold a resolved series (`handle`) and
//! count on it without one.

use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// The content type etcd's /metrics answers with (promhttp's text format).
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

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
    pub fn add(&self, n: u64) {
        self.value.fetch_add(n, Ordering::Relaxed);
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

/// A second name for a counter: etcd 3.4 serves some counters under an
/// `etcd_debugging_*` name as well.
pub struct Alias {
    name: &'static str,
    help: &'static str,
    of: &'static Counter,
}

impl Alias {
    pub const fn new(name: &'static str, help: &'static str, of: &'static Counter) -> Alias {
        Alias { name, help, of }
    }
}

impl Metric for Alias {
    fn render(&self, out: &mut String) {
        head(out, self.name, self.help, "counter");
        let _ = writeln!(out, "{} {}", self.name, self.of.get());
    }
}

pub struct Gauge {
    name: &'static str,
    help: &'static str,
    /// etcd declares some running totals as gauges, some as counters:
    /// the type rendered is etcd's.
    kind: &'static str,
    value: AtomicI64,
}

impl Gauge {
    pub const fn new(name: &'static str, help: &'static str) -> Gauge {
        Gauge {
            name,
            help,
            kind: "gauge",
            value: AtomicI64::new(0),
        }
    }
    /// A value kept as a gauge (it may be set) that etcd declares a counter.
    pub const fn counter(name: &'static str, help: &'static str) -> Gauge {
        Gauge {
            name,
            help,
            kind: "counter",
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
        head(out, self.name, self.help, self.kind);
        let _ = writeln!(out, "{} {}", self.name, self.get());
    }
}

/// etcd's `name{label="value"} 1` gauges (server version, member ID):
/// nothing is rendered until the value is known.
pub struct Info {
    name: &'static str,
    help: &'static str,
    label: &'static str,
    value: OnceLock<String>,
}

impl Info {
    pub const fn new(name: &'static str, help: &'static str, label: &'static str) -> Info {
        Info {
            name,
            help,
            label,
            value: OnceLock::new(),
        }
    }
    /// The first value set stays.
    pub fn set(&self, value: String) {
        let _ = self.value.set(value);
    }
}

impl Metric for Info {
    fn render(&self, out: &mut String) {
        head(out, self.name, self.help, "gauge");
        if let Some(v) = self.value.get() {
            let _ = writeln!(out, "{}{{{}=\"{}\"}} 1", self.name, self.label, escape(v));
        }
    }
}

/// A label value as Prometheus' text format needs it.
fn escape(v: &str) -> std::borrow::Cow<'_, str> {
    if v.contains(['\\', '"', '\n']) {
        v.replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n")
            .into()
    } else {
        v.into()
    }
}

/// The most buckets any of etcd's histograms has (lease TTLs: 24).
const MAX_BUCKETS: usize = 24;

/// One histogram series: cumulative bucket counts, count and sum, each a
/// relaxed atomic (the sum an f64's bits).
pub struct HistogramSeries {
    buckets: [AtomicU64; MAX_BUCKETS],
    count: AtomicU64,
    sum: AtomicU64,
}

impl HistogramSeries {
    const fn new() -> HistogramSeries {
        HistogramSeries {
            buckets: [const { AtomicU64::new(0) }; MAX_BUCKETS],
            count: AtomicU64::new(0),
            sum: AtomicU64::new(0),
        }
    }

    fn observe(&self, v: f64, start: f64, buckets: usize) {
        let mut bound = start;
        for b in self.buckets.iter().take(buckets) {
            if v <= bound {
                b.fetch_add(1, Ordering::Relaxed);
            }
            bound *= 2.0;
        }
        let _ = self
            .sum
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                Some((f64::from_bits(bits) + v).to_bits())
            });
        self.count.fetch_add(1, Ordering::Relaxed);
    }
}

/// A histogram series resolved once, to observe on without a lock.
#[derive(Clone)]
pub struct HistogramHandle {
    series: Arc<HistogramSeries>,
    start: f64,
    buckets: usize,
}

impl HistogramHandle {
    pub fn observe(&self, d: Duration) {
        self.series
            .observe(d.as_secs_f64(), self.start, self.buckets);
    }
}

/// A histogram, optionally with one label (etcd's peer round trip has
/// `To`); the buckets are etcd's exponential ones: `start` doubling, 14 of
/// them unless `buckets` says otherwise. An unlabelled one observes
/// without a lock; a labelled one finds its series under a lock unless the
/// caller holds a `handle`.
pub struct Histogram {
    name: &'static str,
    help: &'static str,
    label: Option<&'static str>,
    start: f64,
    buckets: usize,
    single: HistogramSeries,
    series: Mutex<Vec<(String, Arc<HistogramSeries>)>>,
}

impl Histogram {
    pub const fn new(name: &'static str, help: &'static str, start: f64) -> Histogram {
        Histogram {
            name,
            help,
            label: None,
            start,
            buckets: 14,
            single: HistogramSeries::new(),
            series: Mutex::new(Vec::new()),
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
            buckets: 14,
            single: HistogramSeries::new(),
            series: Mutex::new(Vec::new()),
        }
    }

    /// `n` buckets instead of 14 (at most 24).
    pub const fn buckets(mut self, n: usize) -> Histogram {
        self.buckets = if n > MAX_BUCKETS { MAX_BUCKETS } else { n };
        self
    }

    pub fn observe(&self, d: Duration) {
        self.observe_value(d.as_secs_f64());
    }

    /// An observation in the histogram's own unit (milliseconds, a TTL).
    pub fn observe_value(&self, v: f64) {
        self.single.observe(v, self.start, self.buckets);
    }

    pub fn observe_for(&self, label_value: &str, d: Duration) {
        self.handle(label_value).observe(d);
    }

    /// The series for `label_value`, to observe on without a lock.
    pub fn handle(&self, label_value: &str) -> HistogramHandle {
        let series = match self.series.lock() {
            Ok(mut all) => match all.iter().find(|(l, _)| l == label_value) {
                Some((_, s)) => s.clone(),
                None if all.len() >= MAX_SERIES => Arc::new(HistogramSeries::new()),
                None => {
                    let s = Arc::new(HistogramSeries::new());
                    all.push((label_value.to_string(), s.clone()));
                    s
                }
            },
            Err(_) => Arc::new(HistogramSeries::new()),
        };
        HistogramHandle {
            series,
            start: self.start,
            buckets: self.buckets,
        }
    }

    fn render_series(&self, out: &mut String, label_value: Option<&str>, o: &HistogramSeries) {
        let labels = |extra: &str| match (self.label.zip(label_value), extra.is_empty()) {
            (Some((l, v)), true) => format!("{{{l}=\"{}\"}}", escape(v)),
            (Some((l, v)), false) => format!("{{{l}=\"{}\",{extra}}}", escape(v)),
            (None, true) => String::new(),
            (None, false) => format!("{{{extra}}}"),
        };
        // Count first: an observation under way shows in no bucket above it.
        let count = o.count.load(Ordering::Relaxed);
        let mut bound = self.start;
        for b in o.buckets.iter().take(self.buckets) {
            let n = b.load(Ordering::Relaxed).min(count);
            // Rounded as Go prints them: 0.1 doubled is 0.2, not 0.2000000001.
            let le = format!("le=\"{}\"", round_bound(bound));
            let _ = writeln!(out, "{}_bucket{} {n}", self.name, labels(&le));
            bound *= 2.0;
        }
        let _ = writeln!(out, "{}_bucket{} {count}", self.name, labels("le=\"+Inf\""));
        let sum = f64::from_bits(o.sum.load(Ordering::Relaxed));
        let _ = writeln!(out, "{}_sum{} {sum}", self.name, labels(""));
        let _ = writeln!(out, "{}_count{} {count}", self.name, labels(""));
    }
}

impl Metric for Histogram {
    fn render(&self, out: &mut String) {
        head(out, self.name, self.help, "histogram");
        if self.label.is_none() {
            self.render_series(out, None, &self.single);
            return;
        }
        let Ok(series) = self.series.lock().map(|s| s.clone()) else {
            return;
        };
        let mut all = series;
        all.sort_by(|a, b| a.0.cmp(&b.0));
        for (value, o) in all {
            self.render_series(out, Some(&value), &o);
        }
    }
}

/// A bucket bound with float noise from repeated doubling trimmed.
fn round_bound(b: f64) -> f64 {
    let scale = 1e9;
    (b * scale).round() / scale
}

/// One series of a labelled family: counted without a lock.
pub type Series = Arc<AtomicI64>;

/// The most series a labelled family keeps: label values come from peers
/// and clients, so their number is bounded; later ones count in the last.
const MAX_SERIES: usize = 1024;

/// A family with labels: series found (or added) under a lock, counted as
/// relaxed atomics.
struct Labelled {
    name: &'static str,
    help: &'static str,
    labels: &'static [&'static str],
    series: Mutex<Vec<(Vec<String>, Series)>>,
}

impl Labelled {
    const fn new(
        name: &'static str,
        help: &'static str,
        labels: &'static [&'static str],
    ) -> Labelled {
        Labelled {
            name,
            help,
            labels,
            series: Mutex::new(Vec::new()),
        }
    }

    fn handle(&self, values: &[&str]) -> Series {
        let Ok(mut all) = self.series.lock() else {
            return Series::default();
        };
        if let Some((_, s)) = all
            .iter()
            .find(|(k, _)| k.iter().map(String::as_str).eq(values.iter().copied()))
        {
            return s.clone();
        }
        if all.len() >= MAX_SERIES {
            return all.last().map(|(_, s)| s.clone()).unwrap_or_default();
        }
        let s = Series::default();
        all.push((values.iter().map(|v| v.to_string()).collect(), s.clone()));
        s
    }

    fn render(&self, out: &mut String, kind: &str) {
        head(out, self.name, self.help, kind);
        let Ok(mut values) = self.series.lock().map(|v| {
            v.iter()
                .map(|(k, s)| (k.clone(), s.load(Ordering::Relaxed)))
                .collect::<Vec<_>>()
        }) else {
            return;
        };
        values.sort();
        for (vals, n) in values.iter() {
            let labels: Vec<String> = self
                .labels
                .iter()
                .zip(vals)
                .map(|(l, v)| format!("{l}=\"{}\"", escape(v)))
                .collect();
            let _ = writeln!(out, "{}{{{}}} {n}", self.name, labels.join(","));
        }
    }
}

/// A counter with labels (etcd's grpc_server_handled_total and friends).
pub struct CounterVec(Labelled);

impl CounterVec {
    pub const fn new(
        name: &'static str,
        help: &'static str,
        labels: &'static [&'static str],
    ) -> CounterVec {
        CounterVec(Labelled::new(name, help, labels))
    }

    /// Count one (takes the family's lock: for cold paths).
    pub fn inc(&self, values: &[&str]) {
        self.add(values, 1);
    }

    pub fn add(&self, values: &[&str], n: u64) {
        self.0.handle(values).fetch_add(n as i64, Ordering::Relaxed);
    }

    /// The series for `values`, to count on without a lock.
    pub fn handle(&self, values: &[&str]) -> Series {
        self.0.handle(values)
    }

    pub fn name(&self) -> &'static str {
        self.0.name
    }

    /// How many series the family has.
    pub fn len(&self) -> usize {
        self.0.series.lock().map_or(0, |s| s.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Metric for CounterVec {
    fn render(&self, out: &mut String) {
        self.0.render(out, "counter");
    }
}

/// A gauge with labels (etcd's active peers).
pub struct GaugeVec(Labelled);

impl GaugeVec {
    pub const fn new(
        name: &'static str,
        help: &'static str,
        labels: &'static [&'static str],
    ) -> GaugeVec {
        GaugeVec(Labelled::new(name, help, labels))
    }

    pub fn set(&self, values: &[&str], v: i64) {
        self.0.handle(values).store(v, Ordering::Relaxed);
    }

    pub fn handle(&self, values: &[&str]) -> Series {
        self.0.handle(values)
    }
}

impl Metric for GaugeVec {
    fn render(&self, out: &mut String) {
        self.0.render(out, "gauge");
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
                    "HTTP/1.1 {status}\r\nContent-Type: {CONTENT_TYPE}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_render_etcds_cumulative_buckets() {
        static H: Histogram = Histogram::new("h", "A histogram.", 0.5).buckets(3);
        for v in [0.4, 1.5, 10.0] {
            H.observe_value(v);
        }
        let text = render(&[&H]);
        let want = "# HELP h A histogram.\n# TYPE h histogram\n\
                    h_bucket{le=\"0.5\"} 1\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"2\"} 2\n\
                    h_bucket{le=\"+Inf\"} 3\nh_sum 11.9\nh_count 3\n";
        assert_eq!(text, want);
    }

    #[test]
    fn labelled_series_are_counted_on_their_handles() {
        static H: Histogram = Histogram::labelled("rtt", "Round trips.", "To", 0.1).buckets(2);
        static C: CounterVec = CounterVec::new("sent", "Sent.", &["To"]);
        let (h, c) = (H.handle("b"), C.handle(&["b"]));
        h.observe(Duration::from_millis(150));
        c.fetch_add(2, Ordering::Relaxed);
        C.inc(&["a"]);
        H.observe_for("a", Duration::from_millis(50));
        let text = render(&[&H, &C]);
        assert!(
            text.contains("rtt_bucket{To=\"a\",le=\"0.1\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("rtt_bucket{To=\"b\",le=\"0.2\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("rtt_count{To=\"b\"} 1\n"), "{text}");
        assert!(
            text.contains("sent{To=\"a\"} 1\nsent{To=\"b\"} 2\n"),
            "{text}"
        );
    }
}
