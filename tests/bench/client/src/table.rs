//! Markdown tables of result lines (one JSON object per line, as the
//! workloads print them): every run, and optionally the ratio of one
//! system's runs to another's, case by case (labels are SYSTEM/CASE).

use std::path::PathBuf;

use anyhow::Context;
use serde_json::Value;

fn ms(v: &Value) -> String {
    v.as_f64()
        .map_or("-".into(), |us| format!("{:.2}", us / 1000.0))
}

fn thousands(v: f64) -> String {
    let s = format!("{:.0}", v);
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

pub fn print(files: &[PathBuf], ratio: Option<&[String]>) -> anyhow::Result<()> {
    let mut rows: Vec<Value> = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(f).with_context(|| format!("{}", f.display()))?;
        for line in text.lines().filter(|l| l.starts_with('{')) {
            if let Ok(v) = serde_json::from_str::<Value>(line) {
                if v["tool"] == "triad-bench" {
                    rows.push(v);
                }
            }
        }
    }
    println!("| label | ops/s | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | errors |");
    println!("|---|--:|--:|--:|--:|--:|--:|--:|");
    for r in &rows {
        let l = &r["lat_us"];
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            r["label"].as_str().unwrap_or("?"),
            thousands(r["ops_per_s"].as_f64().unwrap_or(0.0)),
            ms(&l["p50"]),
            ms(&l["p90"]),
            ms(&l["p99"]),
            ms(&l["p999"]),
            ms(&l["max"]),
            r["errors"]
        );
    }
    let Some([base, other]) = ratio else {
        return Ok(());
    };
    // Case by case, in the order the base system ran them (a case run
    // twice: the last run counts).
    let split = |r: &Value| -> Option<(String, String)> {
        let (system, case) = r["label"].as_str()?.split_once('/')?;
        Some((system.to_string(), case.to_string()))
    };
    let mut cases: Vec<String> = Vec::new();
    for r in &rows {
        if let Some((system, case)) = split(r) {
            if system == *base && !cases.contains(&case) {
                cases.push(case);
            }
        }
    }
    let last = |system: &str, case: &str| {
        rows.iter()
            .rev()
            .find(|r| split(r).is_some_and(|(s, c)| s == system && c == case))
    };
    let ratio = |b: &Value, o: &Value| match (b.as_f64(), o.as_f64()) {
        (Some(b), Some(o)) if b > 0.0 => format!("{:.2}", o / b),
        _ => "-".into(),
    };
    println!();
    println!("| case | ops/s {other}/{base} | p50 ratio | p99 ratio |");
    println!("|---|--:|--:|--:|");
    for case in &cases {
        let (Some(b), Some(o)) = (last(base, case), last(other, case)) else {
            continue;
        };
        println!(
            "| {case} | {} | {} | {} |",
            ratio(&b["ops_per_s"], &o["ops_per_s"]),
            ratio(&b["lat_us"]["p50"], &o["lat_us"]["p50"]),
            ratio(&b["lat_us"]["p99"], &o["lat_us"]["p99"])
        );
    }
    server_table(&rows, &cases, base, other, &last);
    failover_table(&cases, base, other, &last);
    Ok(())
}

/// How long writes stopped in the failover cases (runs that report an
/// `outage_ms`), where both systems ran them.
fn failover_table<'a>(
    cases: &[String],
    base: &str,
    other: &str,
    last: &dyn Fn(&str, &str) -> Option<&'a Value>,
) {
    let runs: Vec<(&String, &Value, &Value)> = cases
        .iter()
        .filter_map(|case| {
            let (b, o) = (last(base, case)?, last(other, case)?);
            (b.get("outage_ms").is_some() && o.get("outage_ms").is_some()).then_some((case, b, o))
        })
        .collect();
    if runs.is_empty() {
        return;
    }
    println!();
    println!("Failover: one writer on the members that survive, each put given up after its");
    println!("timeout and sent again to the next member; the outage runs from the fault's start");
    println!("to the answer of the first successful put sent once the fault was made.");
    println!();
    println!("| case | outage ms {base} | {other} | ratio |");
    println!("|---|--:|--:|--:|");
    for (case, b, o) in runs {
        println!("{}", outage_row(case, b, o));
    }
}

/// One failover case's row: both outages and their ratio (other/base);
/// a run whose writes did not come back has no outage figure.
fn outage_row(case: &str, b: &Value, o: &Value) -> String {
    let outage = |r: &Value| {
        r["outage_ms"]
            .as_f64()
            .map_or("not resumed".into(), |ms| format!("{ms:.0}"))
    };
    let ratio = match (b["outage_ms"].as_f64(), o["outage_ms"].as_f64()) {
        (Some(b), Some(o)) if b > 0.0 => format!("{:.2}", o / b),
        _ => "-".into(),
    };
    format!("| {case} | {} | {} | {ratio} |", outage(b), outage(o))
}

/// The servers' cost per request, case by case, where both systems' runs
/// were metered: CPU µs per request (per second of an idle run), bytes
/// written per request and per byte of value (puts), resident MiB at the end.
fn server_table<'a>(
    rows: &[Value],
    cases: &[String],
    base: &str,
    other: &str,
    last: &dyn Fn(&str, &str) -> Option<&'a Value>,
) {
    let metered: Vec<(&String, &Value, &Value)> = cases
        .iter()
        .filter_map(|case| {
            let (b, o) = (last(base, case)?, last(other, case)?);
            (b["server"].is_object() && o["server"].is_object()).then_some((case, b, o))
        })
        .collect();
    if metered.is_empty() || rows.is_empty() {
        return;
    }
    println!();
    println!("Server cost (all processes of all members, from /proc): CPU per request, bytes");
    println!(
        "written to storage per request and per byte of value written, resident memory at the end."
    );
    println!();
    println!("| case | CPU µs/req {base} | {other} | ratio | written B/req {base} | {other} | ratio | per value byte {base} | {other} | RSS MiB {base} | {other} |");
    println!("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|");
    for (case, b, o) in metered {
        let (cb, co) = (cpu_per_request(b), cpu_per_request(o));
        let (wb, wo) = (written_per_request(b), written_per_request(o));
        let amp = |r: &Value| match (written_per_request(r), r["val_size"].as_f64()) {
            (Some(w), Some(v)) if v > 0.0 && r["workload"] == "put" => format!("{:.1}", w / v),
            _ => "-".into(),
        };
        let rss = |r: &Value| {
            r["server"]["rss_bytes"]
                .as_f64()
                .map_or("-".into(), |b| format!("{:.0}", b / (1 << 20) as f64))
        };
        let num = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.0}"));
        let ratio = |b: Option<f64>, o: Option<f64>| match (b, o) {
            (Some(b), Some(o)) if b > 0.0 => format!("{:.2}", o / b),
            _ => "-".into(),
        };
        println!(
            "| {case} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            num(cb),
            num(co),
            ratio(cb, co),
            num(wb),
            num(wo),
            ratio(wb, wo),
            amp(b),
            amp(o),
            rss(b),
            rss(o)
        );
    }
}

/// CPU µs per request; for a run without requests (idle), per second.
fn cpu_per_request(r: &Value) -> Option<f64> {
    let cpu_us = r["server"]["cpu_s"].as_f64()? * 1e6;
    match r["ops"].as_f64()? {
        ops if ops > 0.0 => Some(cpu_us / ops),
        _ => Some(cpu_us / r["secs"].as_f64().filter(|s| *s > 0.0)?),
    }
}

fn written_per_request(r: &Value) -> Option<f64> {
    let bytes = r["server"]["write_bytes"].as_f64()?;
    let ops = r["ops"].as_f64().filter(|o| *o > 0.0)?;
    Some(bytes / ops)
}

#[cfg(test)]
mod tests {
    #[test]
    fn server_cost_is_per_request_or_per_second() {
        let put = serde_json::json!({"ops": 1000.0, "secs": 10.0, "workload": "put", "val_size": 1024,
            "server": {"cpu_s": 0.5, "write_bytes": 4_096_000.0, "rss_bytes": 0}});
        assert_eq!(super::cpu_per_request(&put), Some(500.0));
        assert_eq!(super::written_per_request(&put), Some(4096.0));
        let idle = serde_json::json!({"ops": 0, "secs": 10.0, "server": {"cpu_s": 0.2}});
        assert_eq!(super::cpu_per_request(&idle), Some(20_000.0));
        assert_eq!(super::written_per_request(&idle), None);
    }

    #[test]
    fn outage_rows_compare_the_systems() {
        let etcd = serde_json::json!({"label": "etcd-3/failover-kill", "outage_ms": 1600.4});
        let triad = serde_json::json!({"label": "triad-3/failover-kill", "outage_ms": 1200.0});
        assert_eq!(
            super::outage_row("failover-kill", &etcd, &triad),
            "| failover-kill | 1600 | 1200 | 0.75 |"
        );
        let stuck = serde_json::json!({"outage_ms": null});
        assert_eq!(
            super::outage_row("failover-freeze", &etcd, &stuck),
            "| failover-freeze | 1600 | not resumed | - |"
        );
    }

    #[test]
    fn thousands_are_grouped() {
        assert_eq!(super::thousands(1234567.4), "1,234,567");
        assert_eq!(super::thousands(999.0), "999");
        assert_eq!(super::thousands(0.0), "0");
    }
}
