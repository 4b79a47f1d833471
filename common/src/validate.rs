//! The checks a request passes before it is proposed: etcd's (v3rpc's
//! checkRangeRequest, checkPutRequest, checkTxnRequest, checkIntervals,
//! with the same errors) and triad's bounds on what a member can store.
//! gatewayd runs them on every client request, raftd on every request a
//! peer forwards, and storaged's apply runs `storable` again, so an entry
//! that reached the log anyway is refused identically on every member.

use crate::errors::EtcdError;
use crate::proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use crate::proto::etcdserverpb::request_op::Request;
use crate::proto::etcdserverpb::{
    DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
};
use crate::proto::storage::auth_change::Op as Change;
use crate::proto::storage::raft_request::Op;
use crate::proto::storage::{AuthChange, RaftRequest};

/// The longest key triad stores. etcd has no such bound; storaged's key
/// index (fjall) takes keys of at most 64 KiB, and a key's escaped form
/// with its revision can be twice its length plus 18 bytes.
pub const MAX_KEY_BYTES: usize = 32_000;
/// The longest user or role name (kept as keys of the auth store).
pub const MAX_NAME_BYTES: usize = 32_000;
/// The longest value (fjall's bound is 4 GiB; the request limit is far
/// below it unless raised).
pub const MAX_VALUE_BYTES: usize = u32::MAX as usize - 64;

pub fn check_range(r: &RangeRequest) -> Result<(), EtcdError> {
    if r.key.is_empty() {
        return Err(EtcdError::EmptyKey);
    }
    if SortOrder::try_from(r.sort_order).is_err() || SortTarget::try_from(r.sort_target).is_err() {
        return Err(EtcdError::InvalidSortOption);
    }
    Ok(())
}

pub fn check_put(p: &PutRequest) -> Result<(), EtcdError> {
    if p.key.is_empty() {
        return Err(EtcdError::EmptyKey);
    }
    storable_put(p)?;
    if p.ignore_value && !p.value.is_empty() {
        return Err(EtcdError::ValueProvided);
    }
    if p.ignore_lease && p.lease != 0 {
        return Err(EtcdError::LeaseProvided);
    }
    Ok(())
}

pub fn check_delete(d: &DeleteRangeRequest) -> Result<(), EtcdError> {
    if d.key.is_empty() {
        return Err(EtcdError::EmptyKey);
    }
    Ok(())
}

/// checkTxnRequest followed by checkIntervals on both branches.
pub fn check_txn(t: &TxnRequest, max_ops: usize) -> Result<(), EtcdError> {
    check_txn_ops(t, max_ops)?;
    check_intervals(&t.success)?;
    check_intervals(&t.failure)?;
    Ok(())
}

/// etcd's budget: each level may hold `max_ops` operations less those of
/// the levels around it, so nesting is bounded too.
fn check_txn_ops(t: &TxnRequest, max_ops: usize) -> Result<(), EtcdError> {
    let ops = t.compare.len().max(t.success.len()).max(t.failure.len());
    if ops > max_ops {
        return Err(EtcdError::TooManyOps);
    }
    if t.compare.iter().any(|c| c.key.is_empty()) {
        return Err(EtcdError::EmptyKey);
    }
    for op in t.success.iter().chain(&t.failure) {
        match &op.request {
            Some(Request::RequestRange(r)) => check_range(r)?,
            Some(Request::RequestPut(p)) => check_put(p)?,
            Some(Request::RequestDeleteRange(d)) => check_delete(d)?,
            Some(Request::RequestTxn(n)) => check_txn_ops(n, max_ops - ops)?,
            None => return Err(EtcdError::KeyNotFound),
        }
    }
    Ok(())
}

/// A deleted interval: [start, end), end `None` = a single key, end "\0" =
/// every key from start on.
#[derive(Clone, Debug)]
struct Interval {
    start: Vec<u8>,
    end: Option<Vec<u8>>,
}

impl Interval {
    fn contains(&self, k: &[u8]) -> bool {
        match &self.end {
            None => k == self.start.as_slice(),
            Some(e) if e.as_slice() == [0] => k >= self.start.as_slice(),
            Some(e) => k >= self.start.as_slice() && k < e.as_slice(),
        }
    }
}

/// Puts and deletes of one branch (and, merged, of the branches of its
/// nested txns); a key put twice or put inside a deleted range is an error,
/// except that a nested txn's then/else branches may put the same key.
fn check_intervals(ops: &[RequestOp]) -> Result<(Vec<Vec<u8>>, Vec<Interval>), EtcdError> {
    let mut dels: Vec<Interval> = ops
        .iter()
        .filter_map(|op| match &op.request {
            Some(Request::RequestDeleteRange(d)) => Some(Interval {
                start: d.key.clone(),
                end: (!d.range_end.is_empty()).then(|| d.range_end.clone()),
            }),
            _ => None,
        })
        .collect();
    let deleted = |dels: &[Interval], k: &[u8]| dels.iter().any(|i| i.contains(k));
    let mut puts: Vec<Vec<u8>> = Vec::new();
    for op in ops {
        let Some(Request::RequestTxn(n)) = &op.request else {
            continue;
        };
        let (puts_then, dels_then) = check_intervals(&n.success)?;
        let (puts_else, dels_else) = check_intervals(&n.failure)?;
        for k in &puts_then {
            if puts.contains(k) || deleted(&dels, k) {
                return Err(EtcdError::DuplicateKey);
            }
            puts.push(k.clone());
        }
        for k in &puts_else {
            if (puts.contains(k) && !puts_then.contains(k)) || deleted(&dels, k) {
                return Err(EtcdError::DuplicateKey);
            }
            puts.push(k.clone());
        }
        dels.extend(dels_then);
        dels.extend(dels_else);
    }
    for op in ops {
        let Some(Request::RequestPut(p)) = &op.request else {
            continue;
        };
        if puts.contains(&p.key) || deleted(&dels, &p.key) {
            return Err(EtcdError::DuplicateKey);
        }
        puts.push(p.key.clone());
    }
    Ok((puts, dels))
}

/// A proposal as raftd receives it from a peer: only what a member's
/// gatewayd proposes (leases, checkpoints and the peer secret are proposed
/// by the leader's raftd itself), with the checks gatewayd ran on it
/// (etcd's, and `storable`'s) run again.
pub fn check_raft_request(req: &RaftRequest, max_txn_ops: usize) -> Result<(), EtcdError> {
    match &req.op {
        Some(Op::Put(p)) => check_put(p),
        Some(Op::DeleteRange(d)) => check_delete(d),
        Some(Op::Txn(t)) => check_txn(t, max_txn_ops),
        Some(Op::AuthChange(c)) => check_auth_change(c),
        Some(Op::Compaction(_) | Op::Alarm(_)) => Ok(()),
        Some(op @ (Op::ClusterVersion(_) | Op::Downgrade(_) | Op::MemberVersion(_))) => {
            check_versions(op)
        }
        Some(
            Op::LeaseGrant(_) | Op::LeaseRevoke(_) | Op::LeaseCheckpoint(_) | Op::PeerSecret(_),
        ) => Err(EtcdError::NotCapable),
        None => Err(EtcdError::Malformed),
    }
}

/// Version settings hold versions every member parses the same way.
fn check_versions(op: &Op) -> Result<(), EtcdError> {
    use crate::versions::Version;
    let parses = |v: &str| Version::parse(v).map(|_| ()).ok_or(EtcdError::Malformed);
    match op {
        Op::ClusterVersion(v) => parses(v),
        Op::MemberVersion(m) => parses(&m.version),
        Op::Downgrade(d) if d.enabled => parses(&d.target_version),
        Op::Downgrade(d) if d.target_version.is_empty() => Ok(()),
        Op::Downgrade(_) => Err(EtcdError::Malformed),
        _ => Ok(()),
    }
}

/// User and role names short enough to be keys of the auth store.
pub fn check_auth_change(c: &AuthChange) -> Result<(), EtcdError> {
    let user = |n: &str| {
        (n.len() <= MAX_NAME_BYTES)
            .then_some(())
            .ok_or(EtcdError::UserNameTooLarge)
    };
    let role = |n: &str| {
        (n.len() <= MAX_NAME_BYTES)
            .then_some(())
            .ok_or(EtcdError::RoleNameTooLarge)
    };
    match &c.op {
        Some(Change::UserAdd(r)) => user(&r.name),
        Some(Change::UserDelete(r)) => user(&r.name),
        Some(Change::UserChangePassword(r)) => user(&r.name),
        Some(Change::UserGrantRole(r)) => user(&r.user).and(role(&r.role)),
        Some(Change::UserRevokeRole(r)) => user(&r.name).and(role(&r.role)),
        Some(Change::RoleAdd(r)) => role(&r.name),
        Some(Change::RoleDelete(r)) => role(&r.role),
        Some(Change::RoleGrantPermission(r)) => role(&r.name),
        Some(Change::RoleRevokePermission(r)) => role(&r.role),
        Some(Change::Authenticate(t)) => user(&t.user),
        Some(Change::Enable(_) | Change::Disable(_)) | None => Ok(()),
    }
}

/// What storaged can store: keys, values and names within its bounds.
/// Apply answers a request that is not with this error on every member.
pub fn storable(req: &RaftRequest) -> Result<(), EtcdError> {
    match &req.op {
        Some(Op::Put(p)) => storable_put(p),
        Some(Op::Txn(t)) => storable_txn(t),
        Some(Op::AuthChange(c)) => check_auth_change(c),
        Some(op) => check_versions(op),
        None => Ok(()),
    }
}

fn storable_put(p: &PutRequest) -> Result<(), EtcdError> {
    if p.key.len() > MAX_KEY_BYTES {
        return Err(EtcdError::KeyTooLarge);
    }
    if p.value.len() > MAX_VALUE_BYTES {
        return Err(EtcdError::RequestTooLarge);
    }
    Ok(())
}

fn storable_txn(t: &TxnRequest) -> Result<(), EtcdError> {
    for op in t.success.iter().chain(&t.failure) {
        match &op.request {
            Some(Request::RequestPut(p)) => storable_put(p)?,
            Some(Request::RequestTxn(n)) => storable_txn(n)?,
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(k: &str) -> RequestOp {
        RequestOp {
            request: Some(Request::RequestPut(PutRequest {
                key: k.into(),
                ..Default::default()
            })),
        }
    }
    fn del(k: &str, end: &str) -> RequestOp {
        RequestOp {
            request: Some(Request::RequestDeleteRange(DeleteRangeRequest {
                key: k.into(),
                range_end: end.into(),
                ..Default::default()
            })),
        }
    }
    fn txn(success: Vec<RequestOp>, failure: Vec<RequestOp>) -> TxnRequest {
        TxnRequest {
            compare: vec![],
            success,
            failure,
        }
    }

    #[test]
    fn duplicate_puts_and_put_in_deleted_range_are_rejected() {
        assert_eq!(
            check_txn(&txn(vec![put("a"), put("a")], vec![]), 128),
            Err(EtcdError::DuplicateKey)
        );
        assert_eq!(
            check_txn(&txn(vec![del("a", "c"), put("b")], vec![]), 128),
            Err(EtcdError::DuplicateKey)
        );
        assert_eq!(
            check_txn(&txn(vec![del("a", "\0"), put("z")], vec![]), 128),
            Err(EtcdError::DuplicateKey)
        );
        assert_eq!(
            check_txn(&txn(vec![del("a", ""), put("b")], vec![]), 128),
            Ok(())
        );
        // Different branches never both run.
        assert_eq!(check_txn(&txn(vec![put("a")], vec![put("a")]), 128), Ok(()));
    }

    #[test]
    fn nested_txn_branches_may_share_keys_but_not_with_the_parent() {
        let nested = RequestOp {
            request: Some(Request::RequestTxn(txn(vec![put("a")], vec![put("a")]))),
        };
        assert_eq!(check_txn(&txn(vec![nested.clone()], vec![]), 128), Ok(()));
        assert_eq!(
            check_txn(&txn(vec![nested, put("a")], vec![]), 128),
            Err(EtcdError::DuplicateKey)
        );
    }

    #[test]
    fn op_limits_and_empty_keys() {
        let many: Vec<RequestOp> = (0..129).map(|i| put(&format!("k{i}"))).collect();
        assert_eq!(
            check_txn(&txn(many, vec![]), 128),
            Err(EtcdError::TooManyOps)
        );
        assert_eq!(
            check_txn(&txn(vec![put("")], vec![]), 128),
            Err(EtcdError::EmptyKey)
        );
        let p = PutRequest {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
            ignore_value: true,
            ..Default::default()
        };
        assert_eq!(check_put(&p), Err(EtcdError::ValueProvided));
    }

    fn nested(depth: usize) -> TxnRequest {
        let mut t = txn(vec![put("k")], vec![]);
        for _ in 1..depth {
            t = txn(
                vec![RequestOp {
                    request: Some(Request::RequestTxn(t)),
                }],
                vec![],
            );
        }
        t
    }

    #[test]
    fn nesting_spends_the_ops_budget_as_etcd_does() {
        assert_eq!(check_txn(&nested(128), 128), Ok(()));
        assert_eq!(check_txn(&nested(129), 128), Err(EtcdError::TooManyOps));
        assert_eq!(check_txn(&nested(4), 3), Err(EtcdError::TooManyOps));
    }

    #[test]
    fn keys_and_names_beyond_the_store_bounds_are_refused() {
        let long = "k".repeat(MAX_KEY_BYTES + 1);
        let req = |op| RaftRequest {
            op: Some(op),
            auth: None,
            trace_parent: String::new(),
        };
        let big = PutRequest {
            key: long.clone().into(),
            ..Default::default()
        };
        assert_eq!(check_put(&big), Err(EtcdError::KeyTooLarge));
        let fits = PutRequest {
            key: long[1..].into(),
            ..Default::default()
        };
        assert_eq!(check_put(&fits), Ok(()));
        let in_txn = nested(3);
        let mut deep = in_txn.clone();
        if let Some(Request::RequestTxn(t)) = &mut deep.success[0].request {
            t.failure.push(put(&long));
        }
        assert_eq!(storable(&req(Op::Txn(in_txn))), Ok(()));
        assert_eq!(storable(&req(Op::Txn(deep))), Err(EtcdError::KeyTooLarge));
        let user = AuthChange {
            op: Some(Change::UserAdd(
                crate::proto::etcdserverpb::AuthUserAddRequest {
                    name: "u".repeat(MAX_NAME_BYTES + 1),
                    ..Default::default()
                },
            )),
        };
        assert_eq!(
            storable(&req(Op::AuthChange(user))),
            Err(EtcdError::UserNameTooLarge)
        );
        let role = AuthChange {
            op: Some(Change::RoleAdd(
                crate::proto::etcdserverpb::AuthRoleAddRequest {
                    name: "r".repeat(MAX_NAME_BYTES + 1),
                },
            )),
        };
        assert_eq!(
            check_raft_request(&req(Op::AuthChange(role)), 128),
            Err(EtcdError::RoleNameTooLarge)
        );
        // A long key to delete names nothing storable: no error.
        let del = DeleteRangeRequest {
            key: long.into(),
            ..Default::default()
        };
        assert_eq!(check_raft_request(&req(Op::DeleteRange(del)), 128), Ok(()));
    }
}
