//! Whether a client may do what it asks, judged against the auth store the
//! way etcd's auth applier does: reads need read permission covering the
//! whole range, writes need write permission, prev_kv needs read as well, a
//! put with a lease (and a lease revoke) needs write on every key already
//! attached to that lease, a txn needs all of its compares and of both its
//! branches, and a root-role user may do anything. Writes are judged at
//! apply, so every member refuses the same entries.

use crate::auth::AuthState;
use crate::StoreError;
use common::errors::EtcdError;
use common::proto::authpb::permission::Type as PermType;
use common::proto::authpb::Permission;
use common::proto::etcdserverpb::request_op::Request as TxnOp;
use common::proto::etcdserverpb::{DeleteRangeRequest, PutRequest, TxnRequest};
use common::proto::storage::raft_request::Op;
use common::proto::storage::AuthInfo;

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

/// The keys attached to a lease (None: no such lease), read in the batch.
pub type LeaseKeys<'a> = dyn Fn(i64) -> Result<Option<Vec<Vec<u8>>>, StoreError> + 'a;

/// The permissions `info` has, or why it has none; None means "anything"
/// (auth off, or a root-role user).
fn grants<'s>(
    state: &'s AuthState,
    info: &AuthInfo,
) -> Result<Option<Vec<&'s Permission>>, EtcdError> {
    if !state.enabled {
        return Ok(None);
    }
    if info.user.is_empty() {
        return Err(EtcdError::UserEmpty);
    }
    if info.revision != 0 && info.revision < state.revision {
        return Err(EtcdError::AuthOldRevision);
    }
    let user = state.user(&info.user).ok_or(EtcdError::PermissionDenied)?;
    if state.is_root(user) {
        return Ok(None);
    }
    Ok(Some(
        user.roles
            .iter()
            .filter_map(|r| state.roles.get(r))
            .flat_map(|r| r.key_permission.iter())
            .collect(),
    ))
}

/// May `info` read (or write) `key` .. `range_end` (etcd's range encoding)?
pub fn check_range(
    state: &AuthState,
    info: &AuthInfo,
    key: &[u8],
    range_end: &[u8],
    access: Access,
) -> Result<(), EtcdError> {
    match grants(state, info)? {
        None => Ok(()),
        Some(perms) => judge(&perms, key, range_end, access),
    }
}

fn judge(
    perms: &[&Permission],
    key: &[u8],
    range_end: &[u8],
    access: Access,
) -> Result<(), EtcdError> {
    let usable = perms.iter().copied().filter(|p| allows(p, access));
    if covers(usable, key, range_end) {
        Ok(())
    } else {
        Err(EtcdError::PermissionDenied)
    }
}

fn allows(p: &Permission, access: Access) -> bool {
    match PermType::try_from(p.perm_type) {
        Ok(PermType::Readwrite) => true,
        Ok(PermType::Read) => access == Access::Read,
        Ok(PermType::Write) => access == Access::Write,
        Err(_) => false,
    }
}

/// An interval's end: a key, or open (etcd's "\0" range end).
fn end_of(key: &[u8], range_end: &[u8]) -> Option<Vec<u8>> {
    match range_end {
        [] => Some([key, &[0]].concat()), // a single key: [key, key\0)
        [0] => None,
        end => Some(end.to_vec()),
    }
}

/// Whether the union of `perms` covers the requested range.
fn covers<'p>(perms: impl Iterator<Item = &'p Permission>, key: &[u8], range_end: &[u8]) -> bool {
    let want_end = end_of(key, range_end);
    if want_end.as_deref().is_some_and(|e| e <= key) {
        // An empty range reads nothing; etcd judges its start key alone.
        return covers_point(perms, key);
    }
    let mut spans: Vec<(&[u8], Option<Vec<u8>>)> = perms
        .map(|p| (p.key.as_slice(), end_of(&p.key, &p.range_end)))
        .collect();
    spans.sort_by(|a, b| a.0.cmp(b.0));
    let mut reached = key.to_vec();
    for (start, end) in spans {
        if start > reached.as_slice() {
            break; // a gap before this span
        }
        match end {
            None => return true,
            Some(e) if e > reached => reached = e,
            Some(_) => {}
        }
        if want_end.as_deref().is_some_and(|w| reached.as_slice() >= w) {
            return true;
        }
    }
    false
}

fn covers_point<'p>(mut perms: impl Iterator<Item = &'p Permission>, key: &[u8]) -> bool {
    perms.any(|p| {
        key >= p.key.as_slice() && end_of(&p.key, &p.range_end).is_none_or(|e| key < e.as_slice())
    })
}

/// etcd's permission check of one client write (or txn) at apply.
pub fn check_op(
    state: &AuthState,
    info: &AuthInfo,
    op: &Op,
    lease_keys: &LeaseKeys<'_>,
) -> Result<(), StoreError> {
    if !matches!(
        op,
        Op::Put(_) | Op::DeleteRange(_) | Op::Txn(_) | Op::LeaseRevoke(_)
    ) {
        return Ok(()); // etcd guards nothing else by key permission
    }
    let Some(perms) = grants(state, info)? else {
        return Ok(());
    };
    let judge_lease = |lease: i64| -> Result<(), StoreError> {
        if lease == 0 {
            return Ok(());
        }
        for k in lease_keys(lease)?.unwrap_or_default() {
            judge(&perms, &k, &[], Access::Write)?;
        }
        Ok(())
    };
    match op {
        Op::Put(p) => check_put(&perms, p, &judge_lease),
        Op::DeleteRange(d) => Ok(check_delete(&perms, d)?),
        Op::Txn(t) => check_txn(&perms, t, &judge_lease),
        Op::LeaseRevoke(r) => judge_lease(r.id),
        _ => Ok(()),
    }
}

fn check_put(
    perms: &[&Permission],
    p: &PutRequest,
    judge_lease: &dyn Fn(i64) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    judge(perms, &p.key, &[], Access::Write)?;
    judge_lease(p.lease)?;
    if p.prev_kv {
        judge(perms, &p.key, &[], Access::Read)?;
    }
    Ok(())
}

fn check_delete(perms: &[&Permission], d: &DeleteRangeRequest) -> Result<(), EtcdError> {
    judge(perms, &d.key, &d.range_end, Access::Write)?;
    if d.prev_kv {
        judge(perms, &d.key, &d.range_end, Access::Read)?;
    }
    Ok(())
}

fn check_txn(
    perms: &[&Permission],
    t: &TxnRequest,
    judge_lease: &dyn Fn(i64) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    for c in &t.compare {
        judge(perms, &c.key, &c.range_end, Access::Read)?;
    }
    for op in t.success.iter().chain(&t.failure) {
        match &op.request {
            Some(TxnOp::RequestRange(r)) => judge(perms, &r.key, &r.range_end, Access::Read)?,
            Some(TxnOp::RequestPut(p)) => check_put(perms, p, judge_lease)?,
            Some(TxnOp::RequestDeleteRange(d)) => check_delete(perms, d)?,
            Some(TxnOp::RequestTxn(inner)) => check_txn(perms, inner, judge_lease)?,
            None => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn perm(t: PermType, key: &str, end: &[u8]) -> Permission {
        Permission {
            perm_type: t as i32,
            key: key.as_bytes().to_vec(),
            range_end: end.to_vec(),
        }
    }

    fn ok(perms: &[Permission], key: &str, end: &[u8], a: Access) -> bool {
        let refs: Vec<&Permission> = perms.iter().collect();
        judge(&refs, key.as_bytes(), end, a).is_ok()
    }

    #[test]
    fn ranges_must_be_covered_by_the_union() {
        let perms = [
            perm(PermType::Read, "foo", b""),
            perm(PermType::Readwrite, "bar/", b"bar0"),
            perm(PermType::Write, "baz", b"qux"),
            perm(PermType::Read, "zz", b"\0"),
            perm(PermType::Read, "a", b"c"),
            perm(PermType::Read, "c", b"e"),
        ];
        assert!(ok(&perms, "foo", b"", Access::Read));
        assert!(ok(&perms, "foo", b"", Access::Write), "inside [baz, qux)");
        assert!(!ok(&perms, "zz", b"", Access::Write));
        assert!(!ok(&perms, "foo", b"foo0", Access::Read));
        assert!(ok(&perms, "bar/", b"bar0", Access::Read));
        assert!(ok(&perms, "bar/x", b"", Access::Write));
        assert!(ok(&perms, "b", b"d", Access::Read));
        assert!(!ok(&perms, "e", b"foo", Access::Read), "a gap before foo");
        assert!(ok(&perms, "bb", b"", Access::Read));
        assert!(ok(&perms, "a", b"e", Access::Read), "adjacent spans join");
        assert!(!ok(&perms, "a", b"e\0", Access::Read));
        assert!(ok(&perms, "zz", b"\0", Access::Read));
        assert!(ok(&perms, "zzz", b"zzzz", Access::Read));
        assert!(!ok(&perms, "z", b"\0", Access::Read));
        assert!(!ok(&perms, "baz", b"qux", Access::Read));
        assert!(ok(&perms, "baz", b"qux", Access::Write));
        assert!(!ok(&perms, "baz", b"\0", Access::Write));
    }

    /// Keys over {a, b} of up to 3 bytes (ranges are drawn from these),
    /// and the universe checked: these, each with "\0" after it (the end
    /// of a single-key interval) and one key above all. Every interval end
    /// is in the universe, so a gap in coverage always starts at one of its
    /// keys and checking them all is exact.
    fn keys_and_universe() -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
        let mut keys: Vec<Vec<u8>> = vec![Vec::new()];
        for len in 1..=3u32 {
            for n in 0..2u32.pow(len) {
                keys.push((0..len).map(|i| b'a' + ((n >> i) & 1) as u8).collect());
            }
        }
        let mut universe = keys.clone();
        universe.extend(keys.iter().map(|k| [k.as_slice(), &[0]].concat()));
        universe.push(vec![0xff]);
        universe.sort();
        universe.dedup();
        (keys, universe)
    }

    #[test]
    fn coverage_agrees_with_brute_force() {
        let (keys, universe) = keys_and_universe();
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        for _ in 0..3000 {
            let pick_range = |next: &mut dyn FnMut(usize) -> usize| {
                let k = keys[next(keys.len())].clone();
                let end = match next(4) {
                    0 => Vec::new(),
                    1 => vec![0],
                    _ => keys[next(keys.len())].clone(),
                };
                (k, end)
            };
            let perms: Vec<Permission> = (0..next(4))
                .map(|_| {
                    let (key, range_end) = pick_range(&mut next);
                    Permission {
                        perm_type: PermType::Read as i32,
                        key,
                        range_end,
                    }
                })
                .collect();
            let (key, end) = pick_range(&mut next);
            let holds = |u: &[u8]| {
                perms.iter().any(|p| {
                    u >= p.key.as_slice()
                        && end_of(&p.key, &p.range_end).is_none_or(|e| u < e.as_slice())
                })
            };
            let want_end = end_of(&key, &end);
            let expected = if want_end.as_deref().is_some_and(|e| e <= key.as_slice()) {
                holds(&key)
            } else {
                universe
                    .iter()
                    .filter(|u| u.as_slice() >= key.as_slice())
                    .filter(|u| want_end.as_deref().is_none_or(|e| u.as_slice() < e))
                    .all(|u| holds(u))
            };
            let got = covers(perms.iter(), &key, &end);
            assert_eq!(got, expected, "perms {perms:?} range {key:?}..{end:?}");
        }
    }
}
