//! storaged's apply path: committed entries built from the fuzzer's bytes
//! (garbage, oversized keys and names, transactions nested past every
//! limit, every request kind, with and without a caller) never panic a
//! store, and two stores fed the same entries give the same answers and
//! end with the same HashKV, as every member of a cluster must.
#![no_main]

use std::sync::{LazyLock, Mutex};

use common::proto::etcdserverpb::compare::TargetUnion;
use common::proto::etcdserverpb::request_op::Request;
use common::proto::etcdserverpb::*;
use common::proto::storage::auth_change::Op as Change;
use common::proto::storage::raft_request::Op;
use common::proto::storage::{
    apply_entry::Payload, ApplyEntry, AuthChange, AuthInfo, LogId, RaftRequest, SimpleToken,
};
use common::validate::{MAX_KEY_BYTES, MAX_NAME_BYTES};
use libfuzzer_sys::fuzz_target;
use prost::Message;
use storaged::store::Store;

/// Two stores that have applied the same entries, and the next log index.
struct Twins {
    stores: [Store; 2],
    next: u64,
    _dirs: [tempfile::TempDir; 2],
}

static TWINS: LazyLock<Mutex<Twins>> = LazyLock::new(|| {
    let dirs = [0, 1].map(|_| tempfile::tempdir().expect("tempdir"));
    let stores = [0, 1].map(|i| Store::open(dirs[i].path(), 8 << 20).expect("open store"));
    Mutex::new(Twins {
        stores,
        next: 0,
        _dirs: dirs,
    })
});

/// Reads choices off the fuzzer's bytes (zeros once they run out).
struct Gen<'a>(&'a [u8]);

impl Gen<'_> {
    fn done(&self) -> bool {
        self.0.is_empty()
    }
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }
    fn int(&mut self) -> i64 {
        match self.byte() % 8 {
            0 => 0,
            1 => -1,
            2 => i64::MAX,
            3 => i64::MIN,
            _ => i64::from(self.byte() % 16),
        }
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.byte()).collect()
    }
    /// Keys from a small alphabet (so they collide), or of the lengths
    /// around the store's bounds.
    fn key(&mut self) -> Vec<u8> {
        match self.byte() % 10 {
            0 => vec![b'x'; MAX_KEY_BYTES],
            1 => vec![0; MAX_KEY_BYTES + 1],
            2 => vec![b'y'; 70_000],
            3 => vec![0xff; 40_000],
            _ => {
                let n = usize::from(self.byte() % 4);
                (0..n)
                    .map(|_| [0, b'a', b'b', 0xff][usize::from(self.byte() % 4)])
                    .collect()
            }
        }
    }
    fn range_end(&mut self) -> Vec<u8> {
        match self.byte() % 4 {
            0 => vec![],
            1 => vec![0],
            _ => self.key(),
        }
    }
    fn name(&mut self) -> String {
        match self.byte() % 6 {
            0 => "x".repeat(MAX_NAME_BYTES + 1),
            1 => "root".into(),
            2 => String::new(),
            _ => ["u", "r", "w"][usize::from(self.byte() % 3)].into(),
        }
    }
}

fn range(g: &mut Gen) -> RangeRequest {
    RangeRequest {
        key: g.key(),
        range_end: g.range_end(),
        limit: g.int(),
        revision: g.int(),
        sort_order: i32::from(g.byte() % 5),
        sort_target: i32::from(g.byte() % 7),
        serializable: true,
        keys_only: g.byte() % 2 == 0,
        count_only: g.byte() % 4 == 0,
        min_mod_revision: g.int(),
        max_mod_revision: g.int(),
        min_create_revision: g.int(),
        max_create_revision: g.int(),
    }
}

fn put(g: &mut Gen) -> PutRequest {
    PutRequest {
        key: g.key(),
        value: {
            let n = usize::from(g.byte() % 8);
            g.bytes(n)
        },
        lease: g.int(),
        prev_kv: g.byte() % 2 == 0,
        ignore_value: g.byte() % 6 == 0,
        ignore_lease: g.byte() % 6 == 0,
    }
}

fn delete(g: &mut Gen) -> DeleteRangeRequest {
    DeleteRangeRequest {
        key: g.key(),
        range_end: g.range_end(),
        prev_kv: g.byte() % 2 == 0,
    }
}

fn txn(g: &mut Gen, depth: usize) -> TxnRequest {
    let compares = usize::from(g.byte() % 3);
    let compare = (0..compares)
        .map(|_| Compare {
            result: i32::from(g.byte() % 6),
            target: i32::from(g.byte() % 7),
            key: g.key(),
            range_end: g.range_end(),
            target_union: Some(match g.byte() % 5 {
                0 => TargetUnion::Version(g.int()),
                1 => TargetUnion::CreateRevision(g.int()),
                2 => TargetUnion::ModRevision(g.int()),
                3 => TargetUnion::Lease(g.int()),
                _ => TargetUnion::Value(g.bytes(2)),
            }),
        })
        .collect();
    let ops = |g: &mut Gen| -> Vec<RequestOp> {
        let n = usize::from(g.byte() % 4);
        (0..n)
            .map(|_| RequestOp {
                request: match g.byte() % 6 {
                    0 => None,
                    1 => Some(Request::RequestRange(range(g))),
                    2 => Some(Request::RequestDeleteRange(delete(g))),
                    3 if depth > 0 => Some(Request::RequestTxn(txn(g, depth - 1))),
                    _ => Some(Request::RequestPut(put(g))),
                },
            })
            .collect()
    };
    let success = ops(g);
    let failure = ops(g);
    TxnRequest {
        compare,
        success,
        failure,
    }
}

/// A chain of transactions `depth` deep (prost alone decodes about 50).
fn chain(depth: usize) -> TxnRequest {
    let mut t = TxnRequest::default();
    for _ in 0..depth {
        t = TxnRequest {
            success: vec![RequestOp {
                request: Some(Request::RequestTxn(t)),
            }],
            ..Default::default()
        };
    }
    t
}

fn auth_change(g: &mut Gen) -> Change {
    match g.byte() % 12 {
        0 => Change::Enable(AuthEnableRequest {}),
        1 => Change::Disable(AuthDisableRequest {}),
        2 => Change::UserAdd(AuthUserAddRequest {
            name: g.name(),
            hashed_password: "$2b$04$abcdefghijklmnopqrstuu".into(),
            options: Some(common::proto::authpb::UserAddOptions {
                no_password: g.byte() % 2 == 0,
            }),
            ..Default::default()
        }),
        3 => Change::UserDelete(AuthUserDeleteRequest { name: g.name() }),
        4 => Change::UserChangePassword(AuthUserChangePasswordRequest {
            name: g.name(),
            hashed_password: "x".into(),
            ..Default::default()
        }),
        5 => Change::UserGrantRole(AuthUserGrantRoleRequest {
            user: g.name(),
            role: g.name(),
        }),
        6 => Change::UserRevokeRole(AuthUserRevokeRoleRequest {
            name: g.name(),
            role: g.name(),
        }),
        7 => Change::RoleAdd(AuthRoleAddRequest { name: g.name() }),
        8 => Change::RoleDelete(AuthRoleDeleteRequest { role: g.name() }),
        9 => Change::RoleGrantPermission(AuthRoleGrantPermissionRequest {
            name: g.name(),
            perm: Some(common::proto::authpb::Permission {
                perm_type: i32::from(g.byte() % 4),
                key: g.key(),
                range_end: g.range_end(),
            }),
        }),
        10 => Change::RoleRevokePermission(AuthRoleRevokePermissionRequest {
            role: g.name(),
            key: g.key(),
            range_end: g.range_end(),
        }),
        _ => Change::Authenticate(SimpleToken {
            user: g.name(),
            token: "digest".into(),
            ttl_seconds: g.int(),
            checked_revision: g.byte().into(),
        }),
    }
}

fn payload(g: &mut Gen) -> Payload {
    let op = match g.byte() % 14 {
        0 => {
            let n = usize::from(g.byte() % 32);
            return Payload::Request(g.bytes(n).into());
        }
        1 => return Payload::Blank(true),
        2 => Op::DeleteRange(delete(g)),
        3 => Op::Txn(txn(g, 3)),
        4 => Op::Txn(chain([40, 60, 128, 300][usize::from(g.byte() % 4)])),
        5 => Op::Compaction(CompactionRequest {
            revision: g.int(),
            physical: false,
        }),
        6 => Op::LeaseGrant(LeaseGrantRequest {
            ttl: g.int(),
            id: g.int(),
        }),
        7 => Op::LeaseRevoke(LeaseRevokeRequest { id: g.int() }),
        8 => Op::LeaseCheckpoint(LeaseCheckpointRequest {
            checkpoints: vec![LeaseCheckpoint {
                id: g.int(),
                remaining_ttl: g.int(),
            }],
        }),
        9 => Op::Alarm(AlarmRequest {
            action: i32::from(g.byte() % 4),
            member_id: u64::from(g.byte() % 3),
            alarm: i32::from(g.byte() % 4),
        }),
        10 | 11 => Op::AuthChange(AuthChange {
            op: Some(auth_change(g)),
        }),
        _ => Op::Put(put(g)),
    };
    let auth = match g.byte() % 4 {
        0 => None,
        _ => Some(AuthInfo {
            user: g.name(),
            revision: g.byte().into(),
        }),
    };
    Payload::Request(
        RaftRequest {
            op: Some(op),
            auth,
            trace_parent: String::new(),
        }
        .encode_to_vec()
        .into(),
    )
}

fuzz_target!(|data: &[u8]| {
    let mut g = Gen(data);
    let mut payloads = Vec::new();
    while !g.done() && payloads.len() < 16 {
        payloads.push(payload(&mut g));
    }
    let mut twins = TWINS.lock().unwrap_or_else(|p| p.into_inner());
    let first = twins.next;
    let entries: Vec<ApplyEntry> = payloads
        .into_iter()
        .zip(first..)
        .map(|(payload, index)| ApplyEntry {
            log_id: Some(LogId {
                term: 1,
                node_id: 1,
                index,
            }),
            payload: Some(payload),
        })
        .collect();
    let [a, b] = &twins.stores;
    match (a.apply(&entries), b.apply(&entries)) {
        (Ok(x), Ok(y)) => assert_eq!(x.results, y.results, "same entries, other results"),
        (x, y) => panic!("apply failed: {:?} / {:?}", x.err(), y.err()),
    }
    assert_eq!(a.hash_kv(0).ok(), b.hash_kv(0).ok(), "stores diverged");
    twins.next = first + entries.len() as u64;
});
