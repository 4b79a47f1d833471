//! Profiles for etcd's `--enable-pprof`: each daemon samples its own
//! threads' CPU (SIGPROF, pprof-rs) or reports its sampled allocations
//! (`heap_profile`), and answers symbolized stacks over its member-local
//! socket (`Profiler`); gatewayd merges the three daemons' stacks into one
//! profile in Go's pprof format (gzipped profile.proto), each sample
//! labelled with its `daemon`.

use std::collections::HashMap;
use std::io::Write;
use std::time::Duration;

use tonic::{Request, Response, Status};

use crate::proto::profile::profiler_server::{Profiler, ProfilerServer};
use crate::proto::profile::{
    CpuRequest, CpuResponse, Frame, HeapRequest, HeapResponse, StackSample,
};

/// Go's default profile length and sampling rate.
pub const DEFAULT_SECONDS: u32 = 30;
pub const FREQUENCY: i32 = 100;
/// The longest profile taken: a bound on how long a request holds a thread.
pub const MAX_SECONDS: u32 = 600;

/// Why no profile was taken.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// Go's words when a profile is already running.
    #[error("Could not enable CPU profiling: cpu profiling already in use")]
    InUse,
    #[error("profile duration exceeds {MAX_SECONDS}s")]
    TooLong,
    #[error("CPU profiling failed: {0}")]
    Failed(String),
}

impl From<ProfileError> for Status {
    fn from(e: ProfileError) -> Status {
        match e {
            ProfileError::InUse => Status::resource_exhausted(e.to_string()),
            ProfileError::TooLong => Status::invalid_argument(e.to_string()),
            ProfileError::Failed(_) => Status::internal(e.to_string()),
        }
    }
}

/// Sample this process's threads for `seconds` (on a blocking thread: the
/// profiler's guard stays on the thread that started it).
pub async fn sample(seconds: u32, frequency: i32) -> Result<CpuResponse, ProfileError> {
    if seconds > MAX_SECONDS {
        return Err(ProfileError::TooLong);
    }
    tokio::task::spawn_blocking(move || {
        let guard = pprof::ProfilerGuardBuilder::default()
            .frequency(frequency)
            // Unwinding inside these while a signal lands can deadlock.
            .blocklist(&["libc", "libgcc", "pthread", "vdso"])
            .build()
            .map_err(|e| match e {
                pprof::Error::Running => ProfileError::InUse,
                other => ProfileError::Failed(other.to_string()),
            })?;
        std::thread::sleep(Duration::from_secs(u64::from(seconds)));
        let report = guard
            .report()
            .build()
            .map_err(|e| ProfileError::Failed(e.to_string()))?;
        let samples = report
            .data
            .iter()
            .map(|(frames, count)| StackSample {
                frames: frames
                    .frames
                    .iter()
                    .flatten()
                    .map(|s| Frame {
                        name: s.name(),
                        system_name: s.sys_name().into_owned(),
                        file: s.filename().into_owned(),
                        line: i64::from(s.lineno()),
                    })
                    .collect(),
                thread: frames.thread_name_or_id(),
                count: *count as i64,
            })
            .collect();
        Ok(CpuResponse { samples })
    })
    .await
    .map_err(|e| ProfileError::Failed(e.to_string()))?
}

/// The `Profiler` service storaged and raftd serve.
#[derive(Debug, Default, Clone)]
pub struct ProfilerService;

#[tonic::async_trait]
impl Profiler for ProfilerService {
    async fn cpu(&self, req: Request<CpuRequest>) -> Result<Response<CpuResponse>, Status> {
        let req = req.into_inner();
        let frequency = if req.frequency > 0 {
            req.frequency
        } else {
            FREQUENCY
        };
        Ok(Response::new(sample(req.seconds, frequency).await?))
    }

    async fn heap(&self, _req: Request<HeapRequest>) -> Result<Response<HeapResponse>, Status> {
        heap().await.map(Response::new).map_err(Status::from)
    }
}

/// This process's heap profile (symbolizing takes a while: off the runtime).
pub async fn heap() -> Result<HeapResponse, ProfileError> {
    tokio::task::spawn_blocking(crate::heap_profile::snapshot)
        .await
        .map_err(|e| ProfileError::Failed(e.to_string()))
}

pub fn server() -> ProfilerServer<ProfilerService> {
    ProfilerServer::new(ProfilerService).max_encoding_message_size(usize::MAX)
}

/// Go's pprof profile.proto, as far as a CPU profile uses it.
pub mod pprof_format {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Profile {
        #[prost(message, repeated, tag = "1")]
        pub sample_type: Vec<ValueType>,
        #[prost(message, repeated, tag = "2")]
        pub sample: Vec<Sample>,
        #[prost(message, repeated, tag = "4")]
        pub location: Vec<Location>,
        #[prost(message, repeated, tag = "5")]
        pub function: Vec<Function>,
        #[prost(string, repeated, tag = "6")]
        pub string_table: Vec<String>,
        #[prost(int64, tag = "9")]
        pub time_nanos: i64,
        #[prost(int64, tag = "10")]
        pub duration_nanos: i64,
        #[prost(message, optional, tag = "11")]
        pub period_type: Option<ValueType>,
        #[prost(int64, tag = "12")]
        pub period: i64,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ValueType {
        #[prost(int64, tag = "1")]
        pub r#type: i64,
        #[prost(int64, tag = "2")]
        pub unit: i64,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Sample {
        #[prost(uint64, repeated, tag = "1")]
        pub location_id: Vec<u64>,
        #[prost(int64, repeated, tag = "2")]
        pub value: Vec<i64>,
        #[prost(message, repeated, tag = "3")]
        pub label: Vec<Label>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Label {
        #[prost(int64, tag = "1")]
        pub key: i64,
        #[prost(int64, tag = "2")]
        pub str: i64,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Location {
        #[prost(uint64, tag = "1")]
        pub id: u64,
        #[prost(message, repeated, tag = "4")]
        pub line: Vec<Line>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Line {
        #[prost(uint64, tag = "1")]
        pub function_id: u64,
        #[prost(int64, tag = "2")]
        pub line: i64,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Function {
        #[prost(uint64, tag = "1")]
        pub id: u64,
        #[prost(int64, tag = "2")]
        pub name: i64,
        #[prost(int64, tag = "3")]
        pub system_name: i64,
        #[prost(int64, tag = "4")]
        pub filename: i64,
    }
}

/// Builds one pprof profile: interned strings, one location per frame.
#[derive(Default)]
struct Builder {
    profile: pprof_format::Profile,
    strings: HashMap<String, i64>,
    locations: HashMap<(String, String, i64), u64>,
}

impl Builder {
    fn string(&mut self, s: &str) -> i64 {
        if let Some(i) = self.strings.get(s) {
            return *i;
        }
        let i = self.profile.string_table.len() as i64;
        self.profile.string_table.push(s.to_string());
        self.strings.insert(s.to_string(), i);
        i
    }

    fn location(&mut self, f: &Frame) -> u64 {
        let key = (f.name.clone(), f.file.clone(), f.line);
        if let Some(id) = self.locations.get(&key) {
            return *id;
        }
        let id = self.profile.location.len() as u64 + 1;
        let function = pprof_format::Function {
            id,
            name: self.string(&f.name),
            system_name: self.string(&f.system_name),
            filename: self.string(&f.file),
        };
        self.profile.function.push(function);
        self.profile.location.push(pprof_format::Location {
            id,
            line: vec![pprof_format::Line {
                function_id: id,
                line: f.line,
            }],
        });
        self.locations.insert(key, id);
        id
    }
}

/// One sample of a profile: its stack, values and labels.
pub struct Labelled<'a> {
    pub frames: &'a [Frame],
    pub values: Vec<i64>,
    pub labels: Vec<(&'static str, &'a str)>,
}

/// What a profile measures: its sample types and period, as (type, unit).
pub struct Kinds<'a> {
    pub sample_types: &'a [(&'a str, &'a str)],
    pub period_type: (&'a str, &'a str),
    pub period: i64,
    pub started: std::time::SystemTime,
    pub duration_nanos: i64,
}

/// Samples as one gzipped pprof profile.
pub fn encode_samples<'a>(
    kinds: &Kinds,
    samples: impl Iterator<Item = Labelled<'a>>,
) -> std::io::Result<Vec<u8>> {
    let mut b = Builder::default();
    b.string("");
    let value_type = |b: &mut Builder, (t, u): (&str, &str)| pprof_format::ValueType {
        r#type: b.string(t),
        unit: b.string(u),
    };
    b.profile.sample_type = kinds
        .sample_types
        .iter()
        .map(|t| value_type(&mut b, *t))
        .collect();
    b.profile.period_type = Some(value_type(&mut b, kinds.period_type));
    b.profile.period = kinds.period;
    b.profile.time_nanos = kinds
        .started
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64);
    b.profile.duration_nanos = kinds.duration_nanos;
    for s in samples {
        let location_id = s.frames.iter().map(|f| b.location(f)).collect();
        let label = s
            .labels
            .iter()
            .map(|(k, v)| pprof_format::Label {
                key: b.string(k),
                str: b.string(v),
            })
            .collect();
        b.profile.sample.push(pprof_format::Sample {
            location_id,
            value: s.values,
            label,
        });
    }
    let bytes = prost::Message::encode_to_vec(&b.profile);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&bytes)?;
    gz.finish()
}

/// The daemons' stacks as one gzipped pprof CPU profile.
pub fn encode(
    parts: &[(&str, CpuResponse)],
    started: std::time::SystemTime,
    seconds: u32,
    frequency: i32,
) -> std::io::Result<Vec<u8>> {
    let period = 1_000_000_000 / i64::from(frequency.max(1));
    let kinds = Kinds {
        sample_types: &[("samples", "count"), ("cpu", "nanoseconds")],
        period_type: ("cpu", "nanoseconds"),
        period,
        started,
        duration_nanos: i64::from(seconds) * 1_000_000_000,
    };
    let samples = parts.iter().flat_map(|(daemon, part)| {
        part.samples.iter().map(move |s| Labelled {
            frames: &s.frames,
            values: vec![s.count, s.count.saturating_mul(period)],
            labels: vec![("daemon", *daemon), ("thread", s.thread.as_str())],
        })
    });
    encode_samples(&kinds, samples)
}

/// The daemons' sampled allocations as one gzipped pprof heap profile.
pub fn encode_heap(parts: &[(&str, HeapResponse)]) -> std::io::Result<Vec<u8>> {
    let kinds = Kinds {
        sample_types: &[
            ("alloc_objects", "count"),
            ("alloc_space", "bytes"),
            ("inuse_objects", "count"),
            ("inuse_space", "bytes"),
        ],
        period_type: ("space", "bytes"),
        period: crate::heap_profile::RATE as i64,
        started: std::time::SystemTime::now(),
        duration_nanos: 0,
    };
    let samples = parts.iter().flat_map(|(daemon, part)| {
        part.samples.iter().map(move |s| Labelled {
            frames: &s.frames,
            values: s.values.clone(),
            labels: vec![("daemon", *daemon)],
        })
    });
    encode_samples(&kinds, samples)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stacks_from_each_daemon_become_one_labelled_profile() {
        let frame = |name: &str| Frame {
            name: name.into(),
            system_name: name.into(),
            file: "src/x.rs".into(),
            line: 7,
        };
        let part = |names: &[&str], count| CpuResponse {
            samples: vec![StackSample {
                frames: names.iter().map(|n| frame(n)).collect(),
                thread: "tokio-runtime-worker".into(),
                count,
            }],
        };
        let gz = encode(
            &[
                ("storaged", part(&["apply", "main"], 3)),
                ("raftd", part(&["append", "main"], 2)),
            ],
            std::time::UNIX_EPOCH,
            1,
            100,
        )
        .unwrap();
        let mut raw = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&gz[..]), &mut raw).unwrap();
        let p: pprof_format::Profile = prost::Message::decode(&raw[..]).unwrap();
        let s = |i: i64| p.string_table[i as usize].as_str();
        assert_eq!(s(0), "");
        assert_eq!(s(p.sample_type[1].r#type), "cpu");
        assert_eq!(p.period, 10_000_000);
        assert_eq!(p.sample.len(), 2);
        assert_eq!(p.sample[0].value, vec![3, 30_000_000]);
        assert_eq!(s(p.sample[1].label[0].str), "raftd");
        // "main" is one location shared by both stacks.
        assert_eq!(p.location.len(), 3);
        assert_eq!(p.sample[0].location_id[1], p.sample[1].location_id[1]);
    }
}
