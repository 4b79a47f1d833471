//! etcd's warning for a request that took too long to apply or to read
//! (`--experimental-warning-apply-duration`): one warning line shaped as
//! etcd's ("apply request took too long", with the request summarised as
//! etcd prints it, never a value) and `etcd_server_slow_apply_total`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::errors::EtcdError;
use common::proto::etcdserverpb::{
    compare, request_op, DeleteRangeRequest, PutRequest, RangeRequest, RangeResponse, TxnRequest,
};
use common::proto::storage::raft_request::Op;

/// etcd's default (100ms), in nanoseconds, until `set_threshold`.
static THRESHOLD_NANOS: AtomicU64 = AtomicU64::new(100_000_000);

/// The member's `--experimental-warning-apply-duration`.
pub fn set_threshold(d: Duration) {
    THRESHOLD_NANOS.store(d.as_nanos().min(u64::MAX as u128) as u64, Ordering::Relaxed);
}

pub fn threshold() -> Duration {
    Duration::from_nanos(THRESHOLD_NANOS.load(Ordering::Relaxed))
}

/// Warn of (and count) an apply of `op` that started at `started`, if it
/// took longer than the threshold.
pub fn check_apply(started: Instant, op: &Op, error: Option<EtcdError>) {
    let took = started.elapsed();
    if took > threshold() {
        let error = error.map(|e| e.to_string());
        warn(took, "", &summary(op), String::new(), error.as_deref());
    }
}

/// The same for a serializable range read (etcd's "read-only range ").
pub fn check_range(started: Instant, req: &RangeRequest, resp: Option<&RangeResponse>) {
    let took = started.elapsed();
    if took > threshold() {
        let response = resp.map_or_else(String::new, |r| {
            format!(
                "range_response_count:{} size:{}",
                r.kvs.len(),
                prost::Message::encoded_len(r)
            )
        });
        warn(
            took,
            "read-only range ",
            &range_summary(req),
            response,
            None,
        );
    }
}

fn warn(took: Duration, prefix: &str, request: &str, response: String, error: Option<&str>) {
    crate::metrics::SLOW_APPLIES.inc();
    tracing::warn!(
        took = ?took,
        expected_duration = ?threshold(),
        prefix,
        request,
        response,
        error = error.unwrap_or(""),
        "apply request took too long"
    );
}

/// A key as Go's `%q` prints bytes: printable ASCII as is, the rest escaped.
fn quoted(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() + 2);
    s.push('"');
    for &b in bytes {
        match b {
            b'"' => s.push_str("\\\""),
            b'\\' => s.push_str("\\\\"),
            0x20..=0x7e => s.push(b as char),
            _ => s.push_str(&format!("\\{b:03o}")),
        }
    }
    s.push('"');
    s
}

/// etcd's `key:"a" range_end:"b" ` prefix of a request's text form.
fn keys(key: &[u8], range_end: &[u8]) -> String {
    let mut s = format!("key:{} ", quoted(key));
    if !range_end.is_empty() {
        s.push_str(&format!("range_end:{} ", quoted(range_end)));
    }
    s
}

fn range_summary(r: &RangeRequest) -> String {
    let mut s = keys(&r.key, &r.range_end);
    if r.limit != 0 {
        s.push_str(&format!("limit:{} ", r.limit));
    }
    if r.revision != 0 {
        s.push_str(&format!("revision:{} ", r.revision));
    }
    if r.serializable {
        s.push_str("serializable:true ");
    }
    if r.keys_only {
        s.push_str("keys_only:true ");
    }
    if r.count_only {
        s.push_str("count_only:true ");
    }
    s
}

/// etcd's request stringer: the value's size, never the value.
fn put_summary(p: &PutRequest) -> String {
    let mut s = format!("key:{} value_size:{} ", quoted(&p.key), p.value.len());
    if p.lease != 0 {
        s.push_str(&format!("lease:{} ", p.lease));
    }
    s
}

fn delete_summary(d: &DeleteRangeRequest) -> String {
    keys(&d.key, &d.range_end)
}

fn txn_summary(t: &TxnRequest) -> String {
    let compares: Vec<String> = t
        .compare
        .iter()
        .map(|c| {
            let target = match &c.target_union {
                Some(compare::TargetUnion::Version(v)) => format!("version:{v}"),
                Some(compare::TargetUnion::CreateRevision(v)) => format!("create_revision:{v}"),
                Some(compare::TargetUnion::ModRevision(v)) => format!("mod_revision:{v}"),
                Some(compare::TargetUnion::Value(v)) => format!("value_size:{}", v.len()),
                Some(compare::TargetUnion::Lease(v)) => format!("lease:{v}"),
                None => String::new(),
            };
            format!("compare:<{}{}> ", keys(&c.key, &c.range_end), target)
        })
        .collect();
    let ops = |list: &[common::proto::etcdserverpb::RequestOp]| -> String {
        list.iter()
            .map(|op| match &op.request {
                Some(request_op::Request::RequestRange(r)) => {
                    format!("request_range:<{}>", range_summary(r))
                }
                Some(request_op::Request::RequestPut(p)) => {
                    format!("request_put:<{}>", put_summary(p))
                }
                Some(request_op::Request::RequestDeleteRange(d)) => {
                    format!("request_delete_range:<{}>", delete_summary(d))
                }
                Some(request_op::Request::RequestTxn(t)) => {
                    format!("request_txn:<{}>", txn_summary(t))
                }
                None => String::new(),
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    format!(
        "{}success:<{}> failure:<{}>",
        compares.concat(),
        ops(&t.success),
        ops(&t.failure)
    )
}

/// What etcd's `InternalRaftStringer` prints for a request.
fn summary(op: &Op) -> String {
    match op {
        Op::Put(p) => format!("put:<{}>", put_summary(p)),
        Op::DeleteRange(d) => format!("delete_range:<{}>", delete_summary(d)),
        Op::Txn(t) => format!("txn:<{}>", txn_summary(t)),
        Op::Compaction(c) => format!("compaction:<revision:{} >", c.revision),
        Op::LeaseGrant(g) => format!("lease_grant:<ttl:{}-second id:{:016x}>", g.ttl, g.id),
        Op::LeaseRevoke(r) => format!("lease_revoke:<id:{:016x}>", r.id),
        Op::LeaseCheckpoint(_) => "lease_checkpoint:<>".into(),
        Op::Alarm(a) => format!("alarm:<action:{} alarm:{}>", a.action, a.alarm),
        Op::AuthChange(_) => "auth:<>".into(),
        Op::PeerSecret(_) => "peer_secret:<>".into(),
        Op::ClusterVersion(v) => format!("cluster_version_set:<ver:{} >", quoted(v.as_bytes())),
        Op::Downgrade(d) => format!(
            "downgrade_info_set:<enabled:{} ver:{} >",
            d.enabled,
            quoted(d.target_version.as_bytes())
        ),
        Op::MemberVersion(m) => format!(
            "member_version:<id:{:x} ver:{} >",
            m.member_id,
            quoted(m.version.as_bytes())
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_print_as_etcd_prints_them_without_values() {
        let put = Op::Put(PutRequest {
            key: b"foo\x01".to_vec(),
            value: b"secret".to_vec(),
            ..Default::default()
        });
        assert_eq!(summary(&put), r#"put:<key:"foo\001" value_size:6 >"#);
        let range = RangeRequest {
            key: b"a".to_vec(),
            range_end: b"b".to_vec(),
            limit: 3,
            ..Default::default()
        };
        assert_eq!(range_summary(&range), r#"key:"a" range_end:"b" limit:3 "#);
    }
}
