//! `/debug/vars` on the client port: etcd's expvar document with what a
//! triad member has for each of its variables: `cmdline` and
//! `file_descriptor_limit` (gatewayd's), `memstats` (`Sys`: the resident
//! memory of the member's three daemons), `raft.status` (raftd's view),
//! and `triad.daemons` (each daemon's pid and memory). A daemon that does
//! not answer within a second is left out.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::routing::get;
use axum::Router;

use crate::backend::Backend;
use common::proto::raft::StatusResponse as RaftStatus;

/// What the document is read from: raftd, and the Unix socket of each of
/// the member's other daemons (whose serving process is found by its
/// peer credentials).
#[derive(Clone)]
pub struct Sources {
    pub backend: Arc<Backend>,
    pub raftd_socket: PathBuf,
    pub storaged_socket: PathBuf,
}

pub fn routes(sources: Sources) -> Router {
    Router::new()
        .route("/debug/vars", get(debug_vars))
        .with_state(sources)
}

async fn debug_vars(State(s): State<Sources>) -> ([(&'static str, &'static str); 1], String) {
    (
        [("content-type", "application/json; charset=utf-8")],
        document(&s).await,
    )
}

const WAIT: Duration = Duration::from_secs(1);

/// The expvar document: one variable per line, sorted by name, as Go's
/// expvar handler writes it.
async fn document(s: &Sources) -> String {
    let mut vars: Vec<(&str, String)> = Vec::new();
    let args: Vec<String> = std::env::args().collect();
    vars.push(("cmdline", serde_json::Value::from(args).to_string()));
    if let Some(limit) = fd_limit() {
        vars.push(("file_descriptor_limit", limit.to_string()));
    }
    let mut daemons = vec![("gatewayd", Some(std::process::id()))];
    for (name, socket) in [("raftd", &s.raftd_socket), ("storaged", &s.storaged_socket)] {
        daemons.push((name, serving_pid(socket).await));
    }
    let memory: Vec<(&str, u32, ProcMemory)> = daemons
        .into_iter()
        .filter_map(|(name, pid)| {
            let pid = pid?;
            Some((name, pid, ProcMemory::of(pid)?))
        })
        .collect();
    let sys: u64 = memory.iter().map(|(_, _, m)| m.rss_bytes).sum();
    vars.push(("memstats", format!(r#"{{"Sys":{sys}}}"#)));
    if let Ok(Ok(status)) = tokio::time::timeout(WAIT, s.backend.raft_status()).await {
        vars.push(("raft.status", raft_status(&status)));
    }
    let per_daemon: Vec<String> = memory
        .iter()
        .map(|(name, pid, m)| {
            format!(
                r#""{name}":{{"pid":{pid},"rss_bytes":{},"peak_rss_bytes":{},"threads":{}}}"#,
                m.rss_bytes, m.peak_rss_bytes, m.threads
            )
        })
        .collect();
    vars.push(("triad.daemons", format!("{{{}}}", per_daemon.join(","))));
    vars.sort_by(|a, b| a.0.cmp(b.0));
    let lines: Vec<String> = vars
        .iter()
        .map(|(name, value)| format!("\"{name}\": {value}"))
        .collect();
    format!("{{\n{}\n}}\n", lines.join(",\n"))
}

/// etcd's raft.status object (its fields in etcd's order), from raftd's
/// status. raftd reports neither its vote nor followers' progress: `vote`
/// is the leader this member knows for the term, `progress` is empty.
fn raft_status(s: &RaftStatus) -> String {
    let state = if s.leader != 0 && s.leader == s.member_id {
        "StateLeader"
    } else {
        "StateFollower"
    };
    format!(
        r#"{{"id":"{:x}","term":{},"vote":"{:x}","commit":{},"lead":"{:x}","raftState":"{state}","applied":{},"progress":{{}},"leadtransferee":"0"}}"#,
        s.member_id, s.term, s.leader, s.commit_index, s.leader, s.applied_index
    )
}

/// The pid of the process serving the Unix socket at `path`.
async fn serving_pid(path: &Path) -> Option<u32> {
    let conn = tokio::time::timeout(WAIT, tokio::net::UnixStream::connect(path))
        .await
        .ok()?
        .ok()?;
    let pid = conn.peer_cred().ok()?.pid()?;
    u32::try_from(pid).ok()
}

/// gatewayd's soft limit on open files (Go's expvar reports etcd's).
fn fd_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.trim_start_matches("Max open files")
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

struct ProcMemory {
    rss_bytes: u64,
    peak_rss_bytes: u64,
    threads: u64,
}

impl ProcMemory {
    fn of(pid: u32) -> Option<ProcMemory> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        Some(parse_status(&status))
    }
}

/// The memory lines of a `/proc/<pid>/status` file (kB values in bytes).
fn parse_status(status: &str) -> ProcMemory {
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.trim_start_matches(':').split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    ProcMemory {
        rss_bytes: field("VmRSS") * 1024,
        peak_rss_bytes: field("VmHWM") * 1024,
        threads: field("Threads"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_file_memory() {
        let m = parse_status("Name:\tx\nVmHWM:\t  200 kB\nVmRSS:\t  100 kB\nThreads:\t3\n");
        assert_eq!(
            (m.rss_bytes, m.peak_rss_bytes, m.threads),
            (102_400, 204_800, 3)
        );
    }

    #[test]
    fn raft_status_as_etcd_writes_it() {
        let s = RaftStatus {
            member_id: 0xbac7,
            leader: 0xbac7,
            term: 2,
            commit_index: 30,
            applied_index: 29,
            ..Default::default()
        };
        assert_eq!(
            raft_status(&s),
            r#"{"id":"bac7","term":2,"vote":"bac7","commit":30,"lead":"bac7","raftState":"StateLeader","applied":29,"progress":{},"leadtransferee":"0"}"#
        );
    }
}
