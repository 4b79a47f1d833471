//! etcd's distributed tracing (`--experimental-enable-distributed-tracing`
//! and its address, service name, instance ID and sampling rate): spans
//! exported to an OpenTelemetry collector over OTLP/gRPC. gatewayd opens a
//! server span per client call, sampled as etcd's SDK samples (the
//! caller's decision when it sends a W3C `traceparent`, else a fraction
//! of trace IDs); the sampled call's `traceparent` rides with its raft
//! request and its reads, so raftd and storaged add their spans to the
//! same trace. Spans are queued without blocking and exported in batches;
//! a full queue or an unreachable collector drops spans, never a request.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::config::ConfigError;
use crate::proto::opentelemetry::proto::collector::trace::v1::trace_service_client::TraceServiceClient;
use crate::proto::opentelemetry::proto::collector::trace::v1::ExportTraceServiceRequest;
use crate::proto::opentelemetry::proto::common::v1::{
    any_value, AnyValue, InstrumentationScope, KeyValue,
};
use crate::proto::opentelemetry::proto::resource::v1::Resource;
use crate::proto::opentelemetry::proto::trace::v1::{
    span, status, ResourceSpans, ScopeSpans, Span, Status,
};

/// The tracing flags as given.
#[derive(Debug, Default, Clone)]
pub struct TracingFlags<'a> {
    pub enable: Option<bool>,
    pub address: Option<&'a str>,
    pub service_name: Option<&'a str>,
    pub instance_id: Option<&'a str>,
    pub sampling_rate: Option<i64>,
}

/// Where spans go and which are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TracingSettings {
    /// host:port of the collector's OTLP/gRPC endpoint.
    pub address: String,
    pub service_name: String,
    pub instance_id: String,
    /// Traces kept per million started here (etcd's sampling rate).
    pub per_million: u32,
}

impl TracingSettings {
    /// etcd's defaults: localhost:4317, service "etcd", no sampling.
    pub fn from_flags(f: &TracingFlags) -> Result<Option<TracingSettings>, ConfigError> {
        if f.enable != Some(true) {
            return Ok(None);
        }
        let rate = f.sampling_rate.unwrap_or(0);
        let per_million = u32::try_from(rate)
            .ok()
            .filter(|r| *r <= 1_000_000)
            .ok_or_else(|| {
                ConfigError(format!(
                    "--experimental-distributed-tracing-sampling-rate {rate}: want 0 to 1000000 (samples per million)"
                ))
            })?;
        let address = f.address.unwrap_or("localhost:4317").to_string();
        crate::config::url_host_port(&format!("http://{address}")).map_err(|e| {
            ConfigError(format!(
                "--experimental-distributed-tracing-address: {}",
                e.0
            ))
        })?;
        Ok(Some(TracingSettings {
            address,
            service_name: f.service_name.unwrap_or("etcd").to_string(),
            instance_id: f.instance_id.unwrap_or("").to_string(),
            per_million,
        }))
    }
}

/// A span's place in its trace (W3C trace context).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpanContext {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub sampled: bool,
}

fn hex_to(out: &mut [u8], text: &str) -> Option<()> {
    if text.len() != out.len() * 2 {
        return None;
    }
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl SpanContext {
    /// `00-<trace id>-<span id>-<flags>`; None when malformed or all-zero.
    pub fn parse(traceparent: &str) -> Option<SpanContext> {
        let mut parts = traceparent.trim().split('-');
        let version = parts.next()?;
        if version.len() != 2 || version == "ff" {
            return None;
        }
        let mut c = SpanContext {
            trace_id: [0; 16],
            span_id: [0; 8],
            sampled: false,
        };
        hex_to(&mut c.trace_id, parts.next()?)?;
        hex_to(&mut c.span_id, parts.next()?)?;
        let mut flags = [0u8; 1];
        hex_to(&mut flags, parts.next()?)?;
        if c.trace_id == [0; 16] || c.span_id == [0; 8] {
            return None;
        }
        c.sampled = flags[0] & 1 == 1;
        Some(c)
    }

    pub fn traceparent(&self) -> String {
        format!(
            "00-{}-{}-{:02x}",
            hex(&self.trace_id),
            hex(&self.span_id),
            u8::from(self.sampled)
        )
    }
}

/// Random IDs from the process's random hasher keys and a counter.
fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    static KEYS: OnceLock<std::collections::hash_map::RandomState> = OnceLock::new();
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut h = KEYS.get_or_init(Default::default).build_hasher();
    h.write_u64(COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    h.finish()
}

fn new_span_id() -> [u8; 8] {
    loop {
        let id = random_u64().to_be_bytes();
        if id != [0; 8] {
            return id;
        }
    }
}

/// OpenTelemetry's TraceIDRatioBased: the low 63 bits of the trace ID's
/// last 8 bytes below the fraction's share of 2^63.
fn ratio_samples(trace_id: &[u8; 16], per_million: u32) -> bool {
    let mut low = [0u8; 8];
    low.copy_from_slice(&trace_id[8..]);
    let x = u64::from_be_bytes(low) >> 1;
    let bound = ((1u128 << 63) * u128::from(per_million) / 1_000_000) as u64;
    x < bound
}

/// A span being timed.
#[derive(Debug, Clone)]
pub struct ActiveSpan {
    pub context: SpanContext,
    parent: Option<[u8; 8]>,
    start: SystemTime,
}

/// The exporter of this process, once `init` ran.
struct Exporter {
    settings: TracingSettings,
    queue: tokio::sync::mpsc::Sender<Span>,
}

static EXPORTER: OnceLock<Exporter> = OnceLock::new();
/// Spans dropped because the export queue was full.
static DROPPED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Whether this process exports spans.
pub fn enabled() -> bool {
    EXPORTER.get().is_some()
}

/// Start a span under `parent` (a caller's or another daemon's), or a new
/// trace; None when tracing is off or the trace is not sampled.
pub fn start(parent: Option<SpanContext>) -> Option<ActiveSpan> {
    let exporter = EXPORTER.get()?;
    let (trace_id, parent_id, sampled) = match parent {
        Some(p) => (p.trace_id, Some(p.span_id), p.sampled),
        None => {
            let mut id = [0u8; 16];
            id[..8].copy_from_slice(&random_u64().to_be_bytes());
            id[8..].copy_from_slice(&random_u64().to_be_bytes());
            let sampled = ratio_samples(&id, exporter.settings.per_million);
            (id, None, sampled)
        }
    };
    sampled.then(|| ActiveSpan {
        context: SpanContext {
            trace_id,
            span_id: new_span_id(),
            sampled: true,
        },
        parent: parent_id,
        start: SystemTime::now(),
    })
}

/// Start a span under a `traceparent` another daemon passed on (empty:
/// not traced).
pub fn start_child(traceparent: &str) -> Option<ActiveSpan> {
    if traceparent.is_empty() || !enabled() {
        return None;
    }
    start(Some(SpanContext::parse(traceparent)?))
}

/// The `trace_parent` field of an encoded RaftRequest, read without
/// decoding the request (its other fields are skipped whole).
#[derive(Clone, PartialEq, prost::Message)]
struct TraceParentOnly {
    #[prost(string, tag = "16")]
    trace_parent: String,
}

/// A span for an encoded RaftRequest that carries a sampled trace.
pub fn start_for_request(encoded: &[u8]) -> Option<ActiveSpan> {
    if !enabled() {
        return None;
    }
    let only: TraceParentOnly = prost::Message::decode(encoded).ok()?;
    start_child(&only.trace_parent)
}

fn nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn attribute(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_string())),
        }),
    }
}

/// How a finished span is described.
pub enum Kind {
    Server,
    Internal,
}

impl ActiveSpan {
    /// End the span now and queue it for export.
    pub fn finish(self, name: &str, kind: Kind, attributes: &[(&str, &str)], error: Option<&str>) {
        let Some(exporter) = EXPORTER.get() else {
            return;
        };
        let span = Span {
            trace_id: self.context.trace_id.to_vec(),
            span_id: self.context.span_id.to_vec(),
            parent_span_id: self.parent.map(|p| p.to_vec()).unwrap_or_default(),
            flags: 1,
            name: name.to_string(),
            kind: match kind {
                Kind::Server => span::SpanKind::Server,
                Kind::Internal => span::SpanKind::Internal,
            } as i32,
            start_time_unix_nano: nanos(self.start),
            end_time_unix_nano: nanos(SystemTime::now()),
            attributes: attributes.iter().map(|(k, v)| attribute(k, v)).collect(),
            status: error.map(|message| Status {
                message: message.to_string(),
                code: status::StatusCode::Error as i32,
            }),
            ..Default::default()
        };
        if exporter.queue.try_send(span).is_err()
            && DROPPED.fetch_add(1, std::sync::atomic::Ordering::Relaxed) == 0
        {
            tracing::warn!("distributed tracing: the span queue is full; dropping spans");
        }
    }
}

/// Spans kept waiting for export at most; more are dropped.
const QUEUE: usize = 4096;
const BATCH: usize = 512;
const INTERVAL: Duration = Duration::from_secs(1);

/// Start exporting this daemon's spans (inside the daemon's runtime).
pub fn init(settings: TracingSettings, daemon: &str) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Span>(QUEUE);
    let mut attributes = vec![
        attribute("service.name", &settings.service_name),
        attribute("triad.daemon", daemon),
    ];
    if !settings.instance_id.is_empty() {
        attributes.push(attribute("service.instance.id", &settings.instance_id));
    }
    let resource = Resource {
        attributes,
        dropped_attributes_count: 0,
    };
    let address = settings.address.clone();
    if EXPORTER
        .set(Exporter {
            settings,
            queue: tx,
        })
        .is_err()
    {
        return;
    }
    let channel = match tonic::transport::Endpoint::from_shared(format!("http://{address}")) {
        Ok(e) => e.connect_timeout(Duration::from_secs(5)).connect_lazy(),
        Err(e) => {
            tracing::warn!(error = %e, "distributed tracing: bad collector address");
            return;
        }
    };
    tokio::spawn(async move {
        let mut client = TraceServiceClient::new(channel);
        let mut warned_at: Option<std::time::Instant> = None;
        loop {
            let Some(first) = rx.recv().await else {
                return;
            };
            let mut spans = vec![first];
            let deadline = tokio::time::Instant::now() + INTERVAL;
            while spans.len() < BATCH {
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(s)) => spans.push(s),
                    Ok(None) | Err(_) => break,
                }
            }
            let req = ExportTraceServiceRequest {
                resource_spans: vec![ResourceSpans {
                    resource: Some(resource.clone()),
                    scope_spans: vec![ScopeSpans {
                        scope: Some(InstrumentationScope {
                            name: "triad".into(),
                            version: env!("CARGO_PKG_VERSION").into(),
                            ..Default::default()
                        }),
                        spans,
                        schema_url: String::new(),
                    }],
                    schema_url: String::new(),
                }],
            };
            let sent = tokio::time::timeout(Duration::from_secs(10), client.export(req)).await;
            let failure = match sent {
                Ok(Ok(_)) => None,
                Ok(Err(status)) => Some(status.message().to_string()),
                Err(_) => Some("timed out".to_string()),
            };
            if let Some(why) = failure {
                // One warning a minute while the collector stays away.
                if warned_at.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
                    tracing::warn!(%address, error = %why, "distributed tracing: spans not exported");
                    warned_at = Some(std::time::Instant::now());
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_round_trips_and_rejects_malformed() {
        let text = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let c = SpanContext::parse(text).unwrap();
        assert!(c.sampled);
        assert_eq!(c.traceparent(), text);
        assert!(
            SpanContext::parse("00-00000000000000000000000000000000-00f067aa0ba902b7-01").is_none()
        );
        assert!(SpanContext::parse("00-4bf92f35-00f067aa0ba902b7-01").is_none());
        assert!(SpanContext::parse("garbage").is_none());
        let unsampled =
            SpanContext::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00");
        assert!(!unsampled.unwrap().sampled);
    }

    #[test]
    fn the_trace_field_is_read_from_an_encoded_raft_request() {
        use crate::proto::storage::RaftRequest;
        let req = RaftRequest {
            trace_parent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
            auth: Some(Default::default()),
            ..Default::default()
        };
        let only: TraceParentOnly =
            prost::Message::decode(&prost::Message::encode_to_vec(&req)[..]).unwrap();
        assert_eq!(only.trace_parent, req.trace_parent);
    }

    #[test]
    fn sampling_follows_the_rate() {
        let mut id = [0u8; 16];
        assert!(!ratio_samples(&id, 0));
        assert!(ratio_samples(&id, 1));
        id[8..].fill(0xff);
        assert!(!ratio_samples(&id, 999_999));
        assert!(ratio_samples(&id, 1_000_000));
        let f = TracingFlags {
            enable: Some(true),
            sampling_rate: Some(2_000_000),
            ..Default::default()
        };
        assert!(TracingSettings::from_flags(&f).is_err());
        let d = TracingSettings::from_flags(&TracingFlags {
            enable: Some(true),
            ..Default::default()
        })
        .unwrap()
        .unwrap();
        assert_eq!(
            (d.address.as_str(), d.service_name.as_str(), d.per_million),
            ("localhost:4317", "etcd", 0)
        );
    }
}
