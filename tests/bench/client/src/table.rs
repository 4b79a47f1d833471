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
    for case in cases {
        let (Some(b), Some(o)) = (last(base, &case), last(other, &case)) else {
            continue;
        };
        println!(
            "| {case} | {} | {} | {} |",
            ratio(&b["ops_per_s"], &o["ops_per_s"]),
            ratio(&b["lat_us"]["p50"], &o["lat_us"]["p50"]),
            ratio(&b["lat_us"]["p99"], &o["lat_us"]["p99"])
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn thousands_are_grouped() {
        assert_eq!(super::thousands(1234567.4), "1,234,567");
        assert_eq!(super::thousands(999.0), "999");
        assert_eq!(super::thousands(0.0), "0");
    }
}
