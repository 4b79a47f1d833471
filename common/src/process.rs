//! The process's own resource use, read from /proc/self (Linux), rendered
//! as Prometheus' standard `process_*` families for one daemon and as
//! `triad_process_*{daemon=...}`; and the member's `process_*` (as etcd's
//! one process reports them) from its three daemons' series.

use std::fmt::Write;

/// Clock ticks per second of /proc's CPU times (USER_HZ: 100 on every
/// Linux, and what Prometheus' Go collector assumes too).
const USER_HZ: f64 = 100.0;

/// One reading of the process's resource use.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Usage {
    pub cpu_seconds: f64,
    pub resident_bytes: f64,
    pub virtual_bytes: f64,
    pub virtual_max_bytes: f64,
    pub open_fds: f64,
    pub max_fds: f64,
    pub start_time_seconds: f64,
}

/// The families in the order rendered: (suffix, type, etcd's HELP text).
const FAMILIES: [(&str, &str, &str); 7] = [
    (
        "cpu_seconds_total",
        "counter",
        "Total user and system CPU time spent in seconds.",
    ),
    (
        "max_fds",
        "gauge",
        "Maximum number of open file descriptors.",
    ),
    ("open_fds", "gauge", "Number of open file descriptors."),
    (
        "resident_memory_bytes",
        "gauge",
        "Resident memory size in bytes.",
    ),
    (
        "start_time_seconds",
        "gauge",
        "Start time of the process since unix epoch in seconds.",
    ),
    (
        "virtual_memory_bytes",
        "gauge",
        "Virtual memory size in bytes.",
    ),
    (
        "virtual_memory_max_bytes",
        "gauge",
        "Maximum amount of virtual memory available in bytes.",
    ),
];

impl Usage {
    /// This process now; what cannot be read stays 0.
    pub fn current() -> Usage {
        let mut u = Usage::default();
        let btime = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|s| field_after(&s, "btime"))
            .unwrap_or(0.0);
        if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
            // Fields after the command name (which may hold spaces), from
            // field 3 (state): utime is 14, stime 15, starttime 22.
            let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
            let f: Vec<f64> = rest
                .split_whitespace()
                .map(|v| v.parse().unwrap_or(0.0))
                .collect();
            let at = |n: usize| f.get(n - 3).copied().unwrap_or(0.0);
            u.cpu_seconds = (at(14) + at(15)) / USER_HZ;
            u.start_time_seconds = btime + at(22) / USER_HZ;
        }
        if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
            u.resident_bytes = field_after(&status, "VmRSS:").unwrap_or(0.0) * 1024.0;
            u.virtual_bytes = field_after(&status, "VmSize:").unwrap_or(0.0) * 1024.0;
        }
        if let Ok(limits) = std::fs::read_to_string("/proc/self/limits") {
            u.max_fds = soft_limit(&limits, "Max open files");
            u.virtual_max_bytes = soft_limit(&limits, "Max address space");
        }
        if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
            u.open_fds = dir.count() as f64;
        }
        u
    }

    fn values(&self) -> [f64; 7] {
        [
            self.cpu_seconds,
            self.max_fds,
            self.open_fds,
            self.resident_bytes,
            self.start_time_seconds,
            self.virtual_bytes,
            self.virtual_max_bytes,
        ]
    }

    /// The member's usage from its daemons': CPU, memory and descriptors
    /// add up; the limits are the tightest (the first daemon to reach its
    /// limit fails); the start is the oldest daemon's.
    pub fn member(daemons: &[Usage]) -> Usage {
        let min = |f: fn(&Usage) -> f64| {
            daemons
                .iter()
                .map(f)
                .filter(|v| *v > 0.0)
                .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.min(v))))
                .unwrap_or(0.0)
        };
        let sum = |f: fn(&Usage) -> f64| daemons.iter().map(f).sum();
        Usage {
            cpu_seconds: sum(|u| u.cpu_seconds),
            resident_bytes: sum(|u| u.resident_bytes),
            virtual_bytes: sum(|u| u.virtual_bytes),
            open_fds: sum(|u| u.open_fds),
            virtual_max_bytes: min(|u| u.virtual_max_bytes),
            max_fds: min(|u| u.max_fds),
            start_time_seconds: min(|u| u.start_time_seconds),
        }
    }

    /// Prometheus' `process_*` families and etcd's `os_fd_*` for this usage.
    pub fn render_standard(&self, out: &mut String) {
        for ((suffix, kind, help), v) in FAMILIES.iter().zip(self.values()) {
            let _ = writeln!(
                out,
                "# HELP process_{suffix} {help}\n# TYPE process_{suffix} {kind}\nprocess_{suffix} {v}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP os_fd_limit The file descriptor limit.\n# TYPE os_fd_limit gauge\nos_fd_limit {}",
            self.max_fds
        );
        let _ = writeln!(
            out,
            "# HELP os_fd_used The number of used file descriptors.\n# TYPE os_fd_used gauge\nos_fd_used {}",
            self.open_fds
        );
    }

    /// `triad_process_*{daemon="..."}` for one daemon.
    pub fn render_daemon(&self, daemon: &str, out: &mut String) {
        render_daemons(&[(daemon.to_string(), *self)], out);
    }

    /// Every daemon's usage found in `text` (`triad_process_*` samples).
    pub fn parse_daemons(text: &str) -> Vec<(String, Usage)> {
        let mut found: Vec<(String, Usage)> = Vec::new();
        for line in text.lines() {
            let Some(rest) = line.strip_prefix("triad_process_") else {
                continue;
            };
            let Some((suffix, rest)) = rest.split_once("{daemon=\"") else {
                continue;
            };
            let Some((daemon, rest)) = rest.split_once("\"}") else {
                continue;
            };
            let Ok(v) = rest.trim().parse::<f64>() else {
                continue;
            };
            let i = match found.iter().position(|(d, _)| d == daemon) {
                Some(i) => i,
                None => {
                    found.push((daemon.to_string(), Usage::default()));
                    found.len() - 1
                }
            };
            let u = &mut found[i].1;
            match suffix {
                "cpu_seconds_total" => u.cpu_seconds = v,
                "max_fds" => u.max_fds = v,
                "open_fds" => u.open_fds = v,
                "resident_memory_bytes" => u.resident_bytes = v,
                "start_time_seconds" => u.start_time_seconds = v,
                "virtual_memory_bytes" => u.virtual_bytes = v,
                "virtual_memory_max_bytes" => u.virtual_max_bytes = v,
                _ => {}
            }
        }
        found
    }
}

/// `triad_process_*{daemon="..."}` for several daemons, each family once.
pub fn render_daemons(daemons: &[(String, Usage)], out: &mut String) {
    for (i, (suffix, kind, help)) in FAMILIES.iter().enumerate() {
        let _ = writeln!(
            out,
            "# HELP triad_process_{suffix} {help} (one daemon)\n# TYPE triad_process_{suffix} {kind}"
        );
        for (daemon, u) in daemons {
            let _ = writeln!(
                out,
                "triad_process_{suffix}{{daemon=\"{daemon}\"}} {}",
                u.values()[i]
            );
        }
    }
}

/// `text` without its `triad_process_*` lines (to render them again, one
/// family each, with `render_daemons`).
pub fn without_daemon_lines(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let family = line
            .strip_prefix("# HELP ")
            .or_else(|| line.strip_prefix("# TYPE "))
            .unwrap_or(line);
        if !family.starts_with("triad_process_") {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// The number after `key` in a /proc file (`btime 1700000000`,
/// `VmRSS:   1234 kB`).
fn field_after(text: &str, key: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// The soft limit of a /proc/self/limits row; "unlimited" is u64::MAX as
/// Prometheus' Go collector reports it.
fn soft_limit(limits: &str, row: &str) -> f64 {
    limits
        .lines()
        .find_map(|l| l.strip_prefix(row))
        .and_then(|r| r.split_whitespace().next())
        .map_or(0.0, |v| match v {
            "unlimited" => u64::MAX as f64,
            v => v.parse().unwrap_or(0.0),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_read() {
        let u = Usage::current();
        assert!(u.cpu_seconds >= 0.0);
        assert!(u.resident_bytes > 0.0 && u.virtual_bytes >= u.resident_bytes);
        assert!(u.open_fds >= 3.0 && u.max_fds >= u.open_fds);
        assert!(u.start_time_seconds > 1.0e9);
        assert!(u.virtual_max_bytes > 0.0);
    }

    #[test]
    fn the_member_sums_use_and_takes_the_tightest_limit_and_oldest_start() {
        let d = |cpu, fds, max, start| Usage {
            cpu_seconds: cpu,
            resident_bytes: 10.0,
            virtual_bytes: 20.0,
            virtual_max_bytes: 100.0,
            open_fds: fds,
            max_fds: max,
            start_time_seconds: start,
        };
        let mut text = String::new();
        d(1.5, 10.0, 1024.0, 200.0).render_daemon("storaged", &mut text);
        d(2.0, 20.0, 512.0, 100.0).render_daemon("raftd", &mut text);
        d(0.5, 30.0, 2048.0, 300.0).render_daemon("gatewayd", &mut text);
        let daemons = Usage::parse_daemons(&text);
        assert_eq!(daemons.len(), 3);
        let mut again = without_daemon_lines(&text);
        assert!(again.is_empty(), "{again}");
        render_daemons(&daemons, &mut again);
        assert_eq!(
            again.matches("# TYPE triad_process_open_fds gauge").count(),
            1
        );
        assert_eq!(Usage::parse_daemons(&again), daemons);
        let daemons: Vec<Usage> = daemons.into_iter().map(|(_, u)| u).collect();
        let m = Usage::member(&daemons);
        assert_eq!(m.cpu_seconds, 4.0);
        assert_eq!(m.open_fds, 60.0);
        assert_eq!(m.resident_bytes, 30.0);
        assert_eq!(m.max_fds, 512.0);
        assert_eq!(m.start_time_seconds, 100.0);
        let mut out = String::new();
        m.render_standard(&mut out);
        assert!(out.contains("\nprocess_open_fds 60\n"), "{out}");
        assert!(out.contains("\nos_fd_limit 512\n"), "{out}");
    }
}
