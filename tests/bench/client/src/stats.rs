//! What one run measured: requests done, errors, and the latency of every
//! request (kept whole and sorted at the end: a 10 s run holds a few
//! hundred thousand of them), summarized as throughput and percentiles.

use std::time::Duration;

use crate::server_usage::Usage;

/// One client's record.
#[derive(Default)]
pub struct Recorder {
    pub latencies_us: Vec<u32>,
    pub errors: u64,
}

impl Recorder {
    pub fn ok(&mut self, took: Duration) {
        let us = u32::try_from(took.as_micros()).unwrap_or(u32::MAX);
        self.latencies_us.push(us);
    }
    pub fn failed(&mut self) {
        self.errors += 1;
    }
}

pub struct Outcome {
    pub label: String,
    pub workload: &'static str,
    pub ops: u64,
    pub errors: u64,
    pub secs: f64,
    /// p50, p90, p99, p99.9 and max, in µs.
    pub percentiles: [u32; 5],
    /// The value size the run wrote (for bytes written per value byte).
    pub val_size: usize,
    /// What the servers spent, when their pids were given.
    pub server: Option<Usage>,
    /// A workload's own figures, added to the JSON line as they are (the
    /// failover workload's `outage_ms`).
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl Outcome {
    pub fn from(
        label: &str,
        workload: &'static str,
        records: Vec<Recorder>,
        took: Duration,
    ) -> Self {
        let errors = records.iter().map(|r| r.errors).sum();
        let mut all: Vec<u32> = records.into_iter().flat_map(|r| r.latencies_us).collect();
        all.sort_unstable();
        let at = |q: f64| -> u32 {
            if all.is_empty() {
                return 0;
            }
            let i = ((all.len() as f64 * q).ceil() as usize).clamp(1, all.len()) - 1;
            all[i]
        };
        Outcome {
            label: label.to_string(),
            workload,
            ops: all.len() as u64,
            errors,
            secs: took.as_secs_f64(),
            percentiles: [
                at(0.5),
                at(0.9),
                at(0.99),
                at(0.999),
                all.last().copied().unwrap_or(0),
            ],
            val_size: 0,
            server: None,
            extra: serde_json::Map::new(),
        }
    }

    pub fn ops_per_s(&self) -> f64 {
        if self.secs > 0.0 {
            self.ops as f64 / self.secs
        } else {
            0.0
        }
    }

    pub fn json(&self) -> String {
        let [p50, p90, p99, p999, max] = self.percentiles;
        let mut line = serde_json::json!({
            "tool": "triad-bench",
            "label": self.label,
            "workload": self.workload,
            "ops": self.ops,
            "errors": self.errors,
            "secs": (self.secs * 1000.0).round() / 1000.0,
            "ops_per_s": (self.ops_per_s() * 10.0).round() / 10.0,
            "lat_us": {"p50": p50, "p90": p90, "p99": p99, "p999": p999, "max": max},
            "val_size": self.val_size,
        });
        if let Some(u) = &self.server {
            line["server"] = serde_json::json!({
                "cpu_s": (u.cpu_s * 100.0).round() / 100.0,
                "write_bytes": u.write_bytes,
                "rss_bytes": u.rss_bytes,
            });
        }
        for (k, v) in &self.extra {
            line[k] = v.clone();
        }
        line.to_string()
    }

    pub fn human(&self) -> String {
        let [p50, p90, p99, p999, max] = self.percentiles;
        let mut line = format!(
            "{}: {} ops in {:.1} s = {:.0}/s, {} errors; latency µs p50 {p50} p90 {p90} p99 {p99} p99.9 {p999} max {max}",
            self.label,
            self.ops,
            self.secs,
            self.ops_per_s(),
            self.errors
        );
        for (k, v) in &self.extra {
            line.push_str(&format!("; {k} {v}"));
        }
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let mut r = Recorder::default();
        for us in 1..=1000u64 {
            r.ok(Duration::from_micros(us));
        }
        r.failed();
        let o = Outcome::from(
            "x",
            "put",
            vec![r, Recorder::default()],
            Duration::from_secs(2),
        );
        assert_eq!(o.ops, 1000);
        assert_eq!(o.errors, 1);
        assert_eq!(o.percentiles, [500, 900, 990, 999, 1000]);
        assert_eq!(o.ops_per_s(), 500.0);
        let line: serde_json::Value = serde_json::from_str(&o.json()).expect("json");
        assert_eq!(line["lat_us"]["p99"], 990);
    }
}
