//! The fault-test driver shared by the cluster tests: a watcher and
//! concurrent clients on every member, a fault in the middle, then the
//! history checked for linearizability, the watch for order/gaps/
//! duplicates, and every member's HashKV compared.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use crate::cluster::Cluster;
use crate::history::{check, check_watch, Report};
use crate::load::{read_log, Load, Watcher};

pub type Fault = for<'a> fn(&'a mut Cluster) -> Pin<Box<dyn Future<Output = ()> + 'a>>;

pub fn no_fault(_: &mut Cluster) -> Pin<Box<dyn Future<Output = ()> + '_>> {
    Box::pin(async {})
}

pub const CLIENTS: usize = 6;

/// Load for `settle`, the fault, load for `settle` again, then check.
pub async fn checked_run(cluster: &mut Cluster, settle: Duration, fault: Fault) -> Report {
    let endpoints = cluster.endpoints();
    let start = {
        let mut c = cluster.client(0).await;
        crate::next_revision(&mut c).await
    };
    let watcher = Watcher::start(&endpoints, start);
    let load = Load::start(&endpoints, CLIENTS, 1_000_000);
    tokio::time::sleep(settle).await;
    fault(cluster).await;
    tokio::time::sleep(settle).await;
    let history = load.finish().await;
    // The log and the hashes come from the members as they are now (a
    // member added by the fault included).
    let endpoints = cluster.endpoints();
    let log = read_log(&endpoints, start).await;
    let last = log.last().map_or(start, |l| l.revision);
    let seen = watcher.finish(last).await;
    let ops = history.ops();
    let report = match check(&ops, &log) {
        Ok(r) => r,
        Err(e) => panic!("history not linearizable: {e}"),
    };
    if let Err(e) = check_watch(&seen, &log) {
        panic!("watch stream broken: {e}");
    }
    assert_eq!(seen.len(), log.len(), "the watcher saw the whole log");
    cluster.assert_equal_hashes(last).await;
    report
}
