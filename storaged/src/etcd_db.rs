//! etcd 3.4's backend layout inside a bbolt file (what `etcdctl snapshot
//! save` gets and `etcdctl snapshot restore` reads): bucket and key names,
//! the revision encoding of the `key` bucket and the lease record.
//!
//! | bucket | key | value |
//! |---|---|---|
//! | `key` | main (u64 BE) `_` sub (u64 BE), `t` appended for a tombstone | `mvccpb.KeyValue` (tombstone: key only) |
//! | `meta` | `consistent_index`, `finishedCompactRev`, `scheduledCompactRev` | u64 BE, revision bytes |
//! | `lease` | lease ID (i64 BE) | `leasepb.Lease` |
//! | `auth` | `authEnabled`, `authRevision` | [0 or 1], u64 BE |
//! | `authUsers`, `authRoles` | name | `authpb.User`, `authpb.Role` |
//! | `members`, `members_removed` | member ID (hex) | JSON raft attributes |
//! | `cluster` | `clusterVersion` | version text |
//! | `alarm` | `etcdserverpb.AlarmMember` | (empty) |

use crate::keys::Rev;

pub const ALARM: &[u8] = b"alarm";
pub const AUTH: &[u8] = b"auth";
pub const AUTH_ROLES: &[u8] = b"authRoles";
pub const AUTH_USERS: &[u8] = b"authUsers";
pub const CLUSTER: &[u8] = b"cluster";
pub const KEY: &[u8] = b"key";
pub const LEASE: &[u8] = b"lease";
pub const MEMBERS: &[u8] = b"members";
pub const MEMBERS_REMOVED: &[u8] = b"members_removed";
pub const META: &[u8] = b"meta";

pub const AUTH_ENABLED: &[u8] = b"authEnabled";
pub const AUTH_REVISION: &[u8] = b"authRevision";
pub const CLUSTER_VERSION: &[u8] = b"clusterVersion";
pub const CONSISTENT_INDEX: &[u8] = b"consistent_index";
pub const FINISHED_COMPACT: &[u8] = b"finishedCompactRev";
pub const SCHEDULED_COMPACT: &[u8] = b"scheduledCompactRev";

/// The cluster version a triad snapshot declares (etcd 3.4's API).
pub const VERSION: &[u8] = b"3.4.0";

const REV_BYTES: usize = 17;
const TOMBSTONE_MARK: u8 = b't';

/// etcd's revision bytes, marked as a tombstone if asked.
pub fn rev_bytes(rev: Rev, tombstone: bool) -> Vec<u8> {
    let mut b = Vec::with_capacity(REV_BYTES + 1);
    b.extend_from_slice(&(rev.main as u64).to_be_bytes());
    b.push(b'_');
    b.extend_from_slice(&(rev.sub as u64).to_be_bytes());
    if tombstone {
        b.push(TOMBSTONE_MARK);
    }
    b
}

/// A `key` bucket key: (revision, tombstone), or None if malformed.
pub fn parse_rev_bytes(b: &[u8]) -> Option<(Rev, bool)> {
    let tombstone = match b.len() {
        REV_BYTES => false,
        18 if b[REV_BYTES] == TOMBSTONE_MARK => true,
        _ => return None,
    };
    if b[8] != b'_' {
        return None;
    }
    let main = u64::from_be_bytes(b[..8].try_into().ok()?) as i64;
    let sub = u64::from_be_bytes(b[9..17].try_into().ok()?) as i64;
    Some((Rev { main, sub }, tombstone))
}

/// etcd's `leasepb.Lease`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Lease {
    #[prost(int64, tag = "1")]
    pub id: i64,
    #[prost(int64, tag = "2")]
    pub ttl: i64,
    #[prost(int64, tag = "3")]
    pub remaining_ttl: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revision_bytes_round_trip_and_sort_by_revision() {
        let a = rev_bytes(Rev { main: 2, sub: 1 }, false);
        let b = rev_bytes(Rev { main: 2, sub: 1 }, true);
        let c = rev_bytes(Rev { main: 10, sub: 0 }, false);
        assert_eq!(a.len(), 17);
        assert!(a < b && b < c);
        assert_eq!(parse_rev_bytes(&b), Some((Rev { main: 2, sub: 1 }, true)));
        assert_eq!(parse_rev_bytes(&c), Some((Rev { main: 10, sub: 0 }, false)));
        assert_eq!(parse_rev_bytes(b"short"), None);
        let mut bad = a.clone();
        bad[8] = b'x';
        assert_eq!(parse_rev_bytes(&bad), None);
    }
}
