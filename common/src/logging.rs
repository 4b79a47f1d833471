//! Daemon logs on stderr (or etcd's --log-outputs: stdout, files): text for
//! people, or JSON lines shaped like etcd's zap logger (`level`, `ts`, `caller`, `msg`, then the event's
//! fields) so log pipelines and greps written for etcd keep working. Every
//! JSON line also names its `daemon` and `member`, since a member's three
//! daemons usually log into one journal; there each line carries its level
//! as a syslog priority.

use std::fmt;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::metrics::Counter;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

pub use crate::config::{parse_level, LogOutput, LogSettings};

/// Log lines each daemon could not write (stderr closed, a full disk
/// under its log file): counted and dropped, never a panic.
pub static DROPPED: [Counter; 3] = [
    Counter::new(
        "triad_storaged_log_lines_dropped_total",
        "Log lines storaged could not write.",
    ),
    Counter::new(
        "triad_raftd_log_lines_dropped_total",
        "Log lines raftd could not write.",
    ),
    Counter::new(
        "triad_gatewayd_log_lines_dropped_total",
        "Log lines gatewayd could not write.",
    ),
];

/// This process's count of dropped log lines.
pub fn dropped(daemon: &str) -> &'static Counter {
    match daemon {
        "storaged" => &DROPPED[0],
        "raftd" => &DROPPED[1],
        _ => &DROPPED[2],
    }
}

/// The log outputs, never failing a write: a line that cannot be written
/// to one of them is counted in `DROPPED` instead (tracing's own
/// fallback, eprintln!, panics when stderr fails).
#[derive(Clone)]
struct Outputs {
    sinks: Arc<[Sink]>,
    dropped: &'static Counter,
}

enum Sink {
    Stderr,
    Stdout,
    File(std::fs::File),
    Rotating(crate::log_rotation::RotatingFile),
    Journal(crate::journal::Journal),
}

impl std::io::Write for Outputs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        for sink in self.sinks.iter() {
            let written = match sink {
                Sink::Stderr => std::io::stderr().write_all(buf),
                Sink::Stdout => std::io::stdout().write_all(buf),
                Sink::File(f) => (&*f).write_all(buf),
                Sink::Rotating(f) => f.write(buf),
                Sink::Journal(j) => j.send(buf),
            };
            if written.is_err() {
                self.dropped.inc();
            }
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        let _ = std::io::stderr().flush();
        let _ = std::io::stdout().flush();
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Outputs {
    type Writer = Outputs;
    fn make_writer(&'a self) -> Outputs {
        self.clone()
    }
}

/// Open the outputs (files appended to, created private; journald's
/// socket, which must be there).
fn open(daemon: &str, settings: &LogSettings) -> Result<Vec<Sink>, String> {
    settings
        .outputs
        .iter()
        .map(|o| {
            Ok(match (o, &settings.rotation) {
                (LogOutput::Stderr, _) => Sink::Stderr,
                (LogOutput::Stdout, _) => Sink::Stdout,
                (LogOutput::Journal, _) => Sink::Journal(
                    crate::journal::Journal::connect(
                        std::path::Path::new(crate::journal::SOCKET),
                        daemon,
                    )
                    .map_err(|e| {
                        format!(
                            "cannot log to systemd/journal ({}): {e}",
                            crate::journal::SOCKET
                        )
                    })?,
                ),
                (LogOutput::File(path), Some(rotation)) => Sink::Rotating(
                    crate::log_rotation::RotatingFile::open(path, rotation.clone())
                        .map_err(|e| format!("cannot open log output {}: {e}", path.display()))?,
                ),
                (LogOutput::File(path), None) => Sink::File(
                    std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(path)
                        .map_err(|e| format!("cannot open log output {}: {e}", path.display()))?,
                ),
            })
        })
        .collect()
}

/// Install the process's logger. `RUST_LOG` overrides the level. Fails
/// only when a log file cannot be opened.
pub fn init(daemon: &'static str, member: &str, settings: &LogSettings) -> Result<(), String> {
    use std::io::IsTerminal;
    let sinks = open(daemon, settings)?;
    // Colour only for a person at a terminal (and not with NO_COLOR):
    // escape codes in files and the journal break greps and log shippers.
    let ansi = std::env::var_os("NO_COLOR").is_none()
        && sinks.iter().all(|s| match s {
            Sink::Stderr => std::io::stderr().is_terminal(),
            Sink::Stdout => std::io::stdout().is_terminal(),
            Sink::File(_) | Sink::Rotating(_) | Sink::Journal(_) => false,
        });
    // Under systemd, each line's level reaches the journal as a `<N>`
    // syslog priority prefix (which journald reads and strips), so
    // `journalctl -p warning` finds warnings and errors.
    // Natively, the journal sink takes the priority from that prefix too.
    let journal = match sinks.as_slice() {
        [Sink::Stderr] => stderr_is_journal(),
        [Sink::Journal(_)] => true,
        _ => false,
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(directives(settings.level)));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .log_internal_errors(false)
        .with_writer(Outputs {
            sinks: sinks.into(),
            dropped: dropped(daemon),
        });
    if settings.json {
        let json = EtcdJson {
            daemon,
            member: member.to_string(),
        };
        builder
            .event_format(Priority {
                journal,
                inner: json,
            })
            .init();
    } else {
        let text = tracing_subscriber::fmt::format::Format::default();
        builder
            .event_format(Priority {
                journal,
                inner: text,
            })
            .init();
    }
    Ok(())
}

/// Whether stderr is the journal: systemd names the stream it gives a
/// unit in `JOURNAL_STREAM` (`device:inode`).
fn stderr_is_journal() -> bool {
    use std::os::unix::fs::MetadataExt;
    let Some(stream) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = stream.to_str().and_then(|s| s.split_once(':')) else {
        return false;
    };
    let Ok(stderr) = std::fs::metadata("/proc/self/fd/2") else {
        return false;
    };
    dev.parse() == Ok(stderr.dev()) && ino.parse() == Ok(stderr.ino())
}

/// A line's syslog priority as sd-daemon's prefix: error 3, warning 4,
/// info 6, debug and trace 7.
fn priority(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        _ => 7,
    }
}

/// An event format with the journal's priority prefix when logging to it.
struct Priority<F> {
    journal: bool,
    inner: F,
}

impl<S, N, F> FormatEvent<S, N> for Priority<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        if self.journal {
            write!(writer, "<{}>", priority(event.metadata().level()))?;
        }
        self.inner.format_event(ctx, writer, event)
    }
}

/// The filter for `level`. openraft logs a warning for every RPC to a peer
/// that is not up yet (votes, heartbeats, replication: what a cluster's
/// start is made of) and an error for a membership change it hands back
/// to raftd anyway; those are debug matters, shown from --log-level debug
/// on. Its other warnings and errors stay.
fn directives(level: &str) -> String {
    // openraft no chattier than the rest.
    let openraft = if level == "error" { "error" } else { "warn" };
    if level == "debug" {
        return format!("{level},openraft={openraft}");
    }
    // fjall's and lsm-tree's INFO lines (every keyspace opened, every
    // ingestion finished) are a storage engine's internals: debug.
    let storage = if level == "error" { "error" } else { "warn" };
    format!(
        "{level},openraft={openraft},fjall={storage},lsm_tree={storage},\
         openraft::core::raft_core=error,\
         openraft::core::heartbeat=error,\
         openraft::replication=error,\
         openraft::engine::handler::replication_handler=error,\
         openraft::raft::api::management=off"
    )
}

struct EtcdJson {
    daemon: &'static str,
    member: String,
}

impl<S, N> FormatEvent<S, N> for EtcdJson
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let mut line = Fields(Vec::new());
        let level = match *meta.level() {
            Level::ERROR => "error",
            Level::WARN => "warn",
            Level::INFO => "info",
            Level::DEBUG | Level::TRACE => "debug",
        };
        line.push("level", level.into());
        line.push("ts", iso8601(SystemTime::now()).into());
        let caller = match (meta.file(), meta.line()) {
            (Some(file), Some(n)) => format!("{file}:{n}"),
            _ => meta.target().to_string(),
        };
        line.push("caller", caller.into());
        line.push("msg", "".into());
        line.push("daemon", self.daemon.into());
        line.push("member", self.member.clone().into());
        event.record(&mut line);
        // Written by hand: zap's field order (serde_json's map would sort).
        let mut out = String::from("{");
        for (i, (name, value)) in line.0.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(&Value::from(name.as_str()).to_string());
            out.push(':');
            out.push_str(&value.to_string());
        }
        out.push('}');
        writeln!(writer, "{out}")
    }
}

/// A JSON line's fields in order; an event's `message` fills `msg`, a
/// field recorded twice keeps its place.
struct Fields(Vec<(String, Value)>);

impl Fields {
    fn push(&mut self, name: &str, value: Value) {
        match self.0.iter_mut().find(|(n, _)| n == name) {
            Some((_, v)) => *v = value,
            None => self.0.push((name.to_string(), value)),
        }
    }

    fn put(&mut self, field: &Field, value: Value) {
        let name = match field.name() {
            "message" => "msg",
            other => other,
        };
        self.push(name, value);
    }
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, format!("{value:?}").into());
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, value.into());
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, value.to_string().into());
    }
}

/// UTC time as zap writes it: 2006-01-02T15:04:05.000Z.
fn iso8601(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps_are_utc_iso8601() {
        let at = |s: u64, ms: u64| {
            iso8601(UNIX_EPOCH + Duration::from_secs(s) + Duration::from_millis(ms))
        };
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(at(951_782_400, 5), "2000-02-29T00:00:00.005Z");
        assert_eq!(at(1_795_944_321, 999), "2026-11-29T09:25:21.999Z");
    }

    #[test]
    fn the_filter_parses_at_every_level() {
        for level in ["debug", "info", "warn", "error"] {
            let d = directives(level);
            assert!(tracing_subscriber::EnvFilter::try_new(&d).is_ok(), "{d}");
        }
        assert!(directives("info").contains("openraft::core::raft_core=error"));
    }

    #[test]
    fn etcd_levels_map_to_tracing_levels() {
        assert_eq!(parse_level("warn"), Some("warn"));
        assert_eq!(parse_level("fatal"), Some("error"));
        assert_eq!(parse_level("loud"), None);
    }
}
