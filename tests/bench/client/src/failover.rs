//! How long writes stop when a member fails: one writer puts one small
//! value at a time, over one connection per endpoint (the members that
//! survive the fault), each put with a timeout; on an error or a timeout it
//! moves to the next endpoint and sends again at once. After a while it
//! runs the fault command (say, SIGKILL or SIGSTOP of the leader), and
//! writes on until the run's end. The outage is the time from the fault
//! command's start to the answer of the first successful put sent after
//! the command exited (its signal sent): the gap in successful writes
//! that the fault caused.

use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context;
use common::proto::etcdserverpb::kv_client::KvClient;
use common::proto::etcdserverpb::PutRequest;

use crate::stats::{Outcome, Recorder};
use crate::workloads::{connect, endpoints, Keys, Values, AT_MOST};
use crate::Common;

/// How long the fault command may run before it is killed (it normally
/// only sends a signal).
const FAULT_AT_MOST: Duration = Duration::from_secs(30);

pub struct Plan {
    /// Run with `sh -c`.
    pub fault: String,
    /// From the run's start to the fault's.
    pub fault_after: Duration,
    /// How long one put may take before the writer gives up on it.
    pub put_timeout: Duration,
}

/// One put of the writer: when it was sent, when it was answered or given
/// up on, and whether it succeeded.
#[derive(Clone, Copy, Debug)]
pub struct Put {
    pub sent: Instant,
    pub done: Instant,
    pub ok: bool,
}

/// When the fault command ran: it started at `began` and had made its
/// fault (sent its signal, say) when it exited at `ended`.
#[derive(Clone, Copy, Debug)]
pub struct Fault {
    pub began: Instant,
    pub ended: Instant,
}

/// From the fault's start to the answer of the first put that succeeded
/// and was sent once the fault was made (a put sent earlier, while the
/// signal was on its way or before, proves nothing, whatever its answer);
/// None when no such put succeeded.
pub fn outage(fault: Fault, puts: &[Put]) -> Option<Duration> {
    puts.iter()
        .filter(|p| p.ok && p.sent >= fault.ended)
        .map(|p| p.done)
        .min()
        .map(|done| done.saturating_duration_since(fault.began))
}

pub async fn run(common: Common, plan: Plan) -> anyhow::Result<Outcome> {
    let run_for = Duration::from_secs(common.duration).min(AT_MOST);
    anyhow::ensure!(
        plan.fault_after < run_for,
        "--fault-after ({:?}) must be shorter than --duration ({run_for:?})",
        plan.fault_after
    );
    // One connection per endpoint.
    let eps = endpoints(&common)?;
    let channels = connect(&Common {
        conns: eps.len(),
        ..common.clone()
    })
    .await?;
    let mut kvs: Vec<KvClient<_>> = channels.into_iter().map(KvClient::new).collect();
    let keys = Keys::of(&common);
    let space = common.key_space.max(1);
    let values = Values::of(common.val_size);

    let started = Instant::now();
    let deadline = started + run_for;
    let fault_cmd = plan.fault.clone();
    let fault_at = started + plan.fault_after;
    let fault = tokio::spawn(async move {
        tokio::time::sleep_until(fault_at.into()).await;
        let began = Instant::now();
        let status = run_fault(&fault_cmd).await;
        let made = Fault {
            began,
            ended: Instant::now(),
        };
        (made, status)
    });

    let mut rec = Recorder::default();
    let mut puts: Vec<Put> = Vec::new();
    let (mut at, mut n) = (0usize, 0u64);
    loop {
        let sent = Instant::now();
        if sent >= deadline {
            break;
        }
        let put = PutRequest {
            key: keys.key(n % space),
            value: values.next(),
            ..Default::default()
        };
        n += 1;
        let limit = (sent + plan.put_timeout).min(deadline);
        let answer = tokio::time::timeout_at(limit.into(), kvs[at].put(put)).await;
        let done = Instant::now();
        let ok = match answer {
            Ok(Ok(_)) => true,
            // A put still in flight when the run ends is neither timed
            // nor counted.
            Err(_) if done >= deadline => break,
            Ok(Err(_)) | Err(_) => false,
        };
        if ok {
            rec.ok(done - sent);
        } else {
            rec.failed();
            at = (at + 1) % kvs.len();
        }
        puts.push(Put { sent, done, ok });
    }
    let took = started.elapsed();
    let (made, status) = fault.await.context("the fault task failed")?;
    let status = status?;
    anyhow::ensure!(
        status.success(),
        "the fault command {:?} failed: {status}",
        plan.fault
    );

    let outage = outage(made, &puts);
    let mut outcome = Outcome::from(&common.label, "failover", vec![rec], took);
    outcome.val_size = common.val_size;
    outcome.extra.insert(
        "outage_ms".into(),
        outage.map_or(serde_json::Value::Null, |d| {
            serde_json::json!((d.as_secs_f64() * 10_000.0).round() / 10.0)
        }),
    );
    outcome.extra.insert(
        "fault_after_s".into(),
        serde_json::json!(
            (made.began.duration_since(started).as_secs_f64() * 1000.0).round() / 1000.0
        ),
    );
    if !common.json_only {
        eprintln!("{}", outcome.human());
        if outage.is_none() {
            eprintln!("{}: no put sent after the fault succeeded", common.label);
        }
    }
    Ok(outcome)
}

/// The fault command under `sh -c`, its output on stderr (stdout carries
/// the result line).
async fn run_fault(cmd: &str) -> anyhow::Result<std::process::ExitStatus> {
    use std::os::fd::AsFd;
    let out = std::io::stderr().as_fd().try_clone_to_owned()?;
    let mut child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot run the fault command {cmd:?}"))?;
    tokio::time::timeout(FAULT_AT_MOST, child.wait())
        .await
        .with_context(|| format!("the fault command {cmd:?} ran over {FAULT_AT_MOST:?}"))?
        .context("the fault command")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(base: Instant, ms: u64) -> Instant {
        base + Duration::from_millis(ms)
    }

    #[test]
    fn outage_runs_to_the_first_success_sent_after_the_fault() {
        let t = Instant::now();
        let put = |sent, done, ok| Put {
            sent: at(t, sent),
            done: at(t, done),
            ok,
        };
        // The fault command runs from 100 to 104 ms.
        let fault = |began, ended| Fault {
            began: at(t, began),
            ended: at(t, ended),
        };
        let puts = [
            put(0, 5, true),
            // In flight when the fault was made, and answered: not a
            // sign that writes go on.
            put(98, 103, true),
            // Sent while the fault command ran, before its signal landed.
            put(103, 105, true),
            put(105, 605, false), // timed out
            put(605, 606, false), // no leader yet
            put(606, 1250, true),
            put(1250, 1254, true),
        ];
        assert_eq!(
            outage(fault(100, 104), &puts),
            Some(Duration::from_millis(1150))
        );
        // A fault that writes do not notice costs about one put's latency.
        assert_eq!(
            outage(fault(1249, 1250), &puts),
            Some(Duration::from_millis(5))
        );
        // Writes never came back.
        assert_eq!(outage(fault(100, 104), &puts[..5]), None);
    }

    #[test]
    fn the_outage_is_in_the_result_line() {
        let mut r = Recorder::default();
        r.ok(Duration::from_millis(2));
        r.failed();
        let mut o = Outcome::from(
            "etcd-3/failover-kill",
            "failover",
            vec![r],
            Duration::from_secs(8),
        );
        o.extra
            .insert("outage_ms".into(), serde_json::json!(1234.5));
        let line: serde_json::Value = serde_json::from_str(&o.json()).expect("json");
        assert_eq!(line["outage_ms"], 1234.5);
        assert_eq!(line["label"], "etcd-3/failover-kill");
        assert_eq!(line["ops"], 1);
        assert_eq!(line["errors"], 1);
        assert_eq!(line["lat_us"]["max"], 2000);
        assert!(o.human().contains("outage_ms 1234.5"));
    }
}
