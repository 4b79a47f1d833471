//! What the servers spent during a run, read from /proc for the server
//! processes named by `--server-pids`: CPU time (user + system), bytes
//! written to storage (`write_bytes` of /proc/PID/io: what reached the
//! block layer, not what sat in the page cache) and resident memory at the
//! end. A process that is gone by the end counts what it had last.

use anyhow::Context;

/// Clock ticks per second of /proc/PID/stat's times (USER_HZ, fixed at
/// 100 on Linux whatever the kernel's HZ).
const TICKS_PER_S: f64 = 100.0;

#[derive(Clone, Copy, Default, Debug, PartialEq)]
pub struct Sample {
    pub cpu_ticks: u64,
    pub write_bytes: u64,
    pub rss_bytes: u64,
}

/// What the servers used between `start` and `finish`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Usage {
    pub cpu_s: f64,
    pub write_bytes: u64,
    pub rss_bytes: u64,
}

pub struct Meter {
    pids: Vec<u32>,
    start: Vec<Sample>,
}

impl Meter {
    /// Start metering `pids` (comma separated); None when none are given.
    pub fn start(pids: Option<&str>) -> anyhow::Result<Option<Meter>> {
        let Some(pids) = pids.filter(|p| !p.trim().is_empty()) else {
            return Ok(None);
        };
        let pids: Vec<u32> = pids
            .split(',')
            .map(|p| p.trim().parse().with_context(|| format!("bad pid {p:?}")))
            .collect::<anyhow::Result<_>>()?;
        let start = pids
            .iter()
            .map(|&p| sample(p).with_context(|| format!("cannot read /proc/{p}")))
            .collect::<anyhow::Result<_>>()?;
        Ok(Some(Meter { pids, start }))
    }

    pub fn finish(self) -> Usage {
        let mut usage = Usage {
            cpu_s: 0.0,
            write_bytes: 0,
            rss_bytes: 0,
        };
        for (pid, before) in self.pids.iter().zip(&self.start) {
            let after = sample(*pid).unwrap_or(*before);
            usage.cpu_s += after.cpu_ticks.saturating_sub(before.cpu_ticks) as f64 / TICKS_PER_S;
            usage.write_bytes += after.write_bytes.saturating_sub(before.write_bytes);
            usage.rss_bytes += after.rss_bytes;
        }
        usage
    }
}

fn sample(pid: u32) -> anyhow::Result<Sample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let io = std::fs::read_to_string(format!("/proc/{pid}/io"))?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    Ok(Sample {
        cpu_ticks: cpu_ticks(&stat).context("unexpected /proc/PID/stat")?,
        write_bytes: field(&io, "write_bytes:").context("no write_bytes in /proc/PID/io")?,
        rss_bytes: field(&status, "VmRSS:").map_or(0, |kib| kib * 1024),
    })
}

/// utime + stime: fields 14 and 15, counted after the command name (which
/// may hold spaces, inside parentheses).
fn cpu_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// The number after `name` on its line (`write_bytes: 123`, `VmRSS: 12 kB`).
fn field(text: &str, name: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(name))?;
    line[name.len()..].split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_fields_are_read() {
        let stat = "42 (tokio runtime) S 1 42 42 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 9 0 5 0 0";
        assert_eq!(cpu_ticks(stat), Some(325));
        assert_eq!(
            field("rchar: 1\nwrite_bytes: 8192\n", "write_bytes:"),
            Some(8192)
        );
        assert_eq!(field("VmRSS:\t  2048 kB\n", "VmRSS:"), Some(2048));
    }

    #[test]
    fn this_process_can_be_metered() {
        let me = std::process::id().to_string();
        let meter = Meter::start(Some(&me)).expect("meter").expect("some");
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let usage = meter.finish();
        assert!(usage.cpu_s >= 0.0 && usage.rss_bytes > 0, "{usage:?}");
        assert!(Meter::start(None).expect("none").is_none());
        assert!(Meter::start(Some("x")).is_err());
    }
}
