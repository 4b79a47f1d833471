//! Store-level tests: batch apply is idempotent and refuses gaps,
//! revisions continue across reopen, and physical compaction removes every
//! superseded revision (and newest tombstones) while keeping what reads at
//! or after the compacted revision need.

use std::sync::Arc;

use prost::Message;

use crate::compactor;
use crate::keys;
use crate::store::Store;
use crate::StoreError;
use common::proto::etcdserverpb::{
    CompactionRequest, DeleteRangeRequest, PutRequest, RangeRequest,
};
use common::proto::storage::{
    apply_entry::Payload, raft_request::Op, ApplyEntry, LogId, RaftRequest,
};

pub(crate) fn entry(index: u64, op: Op) -> ApplyEntry {
    ApplyEntry {
        log_id: Some(LogId {
            term: 1,
            node_id: 1,
            index,
        }),
        payload: Some(Payload::Request(
            RaftRequest {
                op: Some(op),
                auth: None,
                trace_parent: String::new(),
            }
            .encode_to_vec()
            .into(),
        )),
    }
}

pub(crate) fn put(index: u64, k: &str, v: &str) -> ApplyEntry {
    entry(
        index,
        Op::Put(PutRequest {
            key: k.into(),
            value: v.into(),
            ..Default::default()
        }),
    )
}

fn get(store: &Store, k: &str, rev: i64) -> Result<Vec<String>, StoreError> {
    let r = store.range(
        &RangeRequest {
            key: k.into(),
            revision: rev,
            ..Default::default()
        },
        None,
    )?;
    Ok(r.kvs
        .iter()
        .map(|kv| String::from_utf8_lossy(&kv.value).into_owned())
        .collect())
}

fn index_entries(store: &Store) -> usize {
    store.ks.index.inner().iter().count()
}

#[test]
fn apply_is_idempotent_and_refuses_gaps() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 1 << 20).unwrap();
    let batch = vec![put(0, "a", "1"), put(1, "b", "2")];
    let first = store.apply(&batch).unwrap();
    assert!(first.results.iter().all(|r| !r.is_empty()));
    assert_eq!(store.bounds().current, 3);
    // The same batch again (a replay after a crash) changes nothing.
    let again = store.apply(&batch).unwrap();
    assert!(again.results.iter().all(|r| r.is_empty()));
    assert_eq!(store.bounds().current, 3);
    // A batch that skips index 2 is refused.
    assert!(matches!(
        store.apply(&[put(3, "c", "3")]),
        Err(StoreError::Gap {
            applied: Some(1),
            got: 3
        })
    ));
    assert_eq!(store.applied().map(|a| a.index), Some(1));
}

#[test]
fn revisions_and_applied_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        store.apply(&[put(0, "a", "1"), put(1, "a", "2")]).unwrap();
    }
    let store = Store::open(dir.path(), 1 << 20).unwrap();
    assert_eq!(store.applied().map(|a| a.index), Some(1));
    assert_eq!(store.bounds().current, 3);
    assert_eq!(get(&store, "a", 0).unwrap(), ["2"]);
    assert_eq!(get(&store, "a", 2).unwrap(), ["1"]);
    store.apply(&[put(2, "b", "x")]).unwrap();
    assert_eq!(store.bounds().current, 4);
}

#[tokio::test]
async fn physical_compaction_removes_superseded_revisions() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path(), 1 << 20).unwrap());
    tokio::spawn(compactor::run(
        store.clone(),
        crate::config::defaults::COMPACTION_BATCH_LIMIT,
    ));
    // a@2 a@3 a@4, b@5, b deleted @6, c@7 → compact at 6.
    let mut batch = vec![
        put(0, "a", "1"),
        put(1, "a", "2"),
        put(2, "a", "3"),
        put(3, "b", "x"),
    ];
    batch.push(entry(
        4,
        Op::DeleteRange(DeleteRangeRequest {
            key: "b".into(),
            ..Default::default()
        }),
    ));
    batch.push(put(5, "c", "y"));
    batch.push(entry(
        6,
        Op::Compaction(CompactionRequest {
            revision: 6,
            physical: true,
        }),
    ));
    store.apply(&batch).unwrap();
    assert_eq!(index_entries(&store), 6);
    let mut done = store.compact_done.subscribe();
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        done.wait_for(|d| *d >= 6),
    )
    .await
    .expect("compaction finishes")
    .unwrap();
    // Left: a@4 (newest at or below 6) and c@7; b's revisions and tombstone are gone.
    assert_eq!(index_entries(&store), 2);
    let revs: Vec<i64> = store
        .ks
        .revs
        .inner()
        .iter()
        .map(|g| keys::parse_rev_key(&g.key().unwrap()).unwrap().main)
        .collect();
    assert_eq!(revs, [4, 7]);
    assert_eq!(get(&store, "a", 6).unwrap(), ["3"]);
    assert!(matches!(
        get(&store, "a", 5),
        Err(StoreError::Etcd(common::errors::EtcdError::Compacted))
    ));
    assert_eq!(get(&store, "b", 0).unwrap(), Vec::<String>::new());
    assert_eq!(get(&store, "c", 0).unwrap(), ["y"]);
}

fn outcome(
    resp: &common::proto::storage::ApplyResponse,
    i: usize,
) -> common::proto::storage::raft_result::Result {
    common::proto::storage::RaftResult::decode(resp.results[i].as_slice())
        .unwrap()
        .result
        .unwrap()
}

#[test]
fn leases_attach_keys_and_revoke_deletes_them_in_one_revision() {
    use common::proto::etcdserverpb::{
        LeaseCheckpoint, LeaseCheckpointRequest, LeaseGrantRequest, LeaseRevokeRequest,
    };
    use common::proto::storage::raft_result::Result as Outcome;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 1 << 20).unwrap();
    let with_lease = |index, k: &str, lease| {
        entry(
            index,
            Op::Put(PutRequest {
                key: k.into(),
                value: b"v".to_vec(),
                lease,
                ..Default::default()
            }),
        )
    };
    let resp = store
        .apply(&[
            entry(0, Op::LeaseGrant(LeaseGrantRequest { ttl: 30, id: 7 })),
            entry(1, Op::LeaseGrant(LeaseGrantRequest { ttl: 30, id: 7 })),
            with_lease(2, "b", 7),
            with_lease(3, "a", 7),
            with_lease(4, "c", 7),
            put(5, "c", "no lease now"),
            with_lease(6, "x", 8),
        ])
        .unwrap();
    assert!(matches!(outcome(&resp, 0), Outcome::LeaseGrant(g) if g.id == 7 && g.ttl == 30));
    assert!(
        matches!(outcome(&resp, 1), Outcome::Error(c) if c == common::errors::EtcdError::LeaseExist.wire_code())
    );
    assert!(
        matches!(outcome(&resp, 6), Outcome::Error(c) if c == common::errors::EtcdError::LeaseNotFound.wire_code())
    );
    assert_eq!(
        store.lease_keys(7).unwrap().unwrap(),
        [b"a".to_vec(), b"b".to_vec()]
    );
    assert_eq!(store.lease_keys(8).unwrap(), None);

    let mut events = store.subscribe();
    let before = store.bounds().current;
    let resp = store
        .apply(&[
            entry(
                7,
                Op::LeaseCheckpoint(LeaseCheckpointRequest {
                    checkpoints: vec![LeaseCheckpoint {
                        id: 7,
                        remaining_ttl: 12,
                    }],
                }),
            ),
            entry(8, Op::LeaseRevoke(LeaseRevokeRequest { id: 7 })),
            entry(9, Op::LeaseRevoke(LeaseRevokeRequest { id: 7 })),
        ])
        .unwrap();
    assert!(
        matches!(outcome(&resp, 2), Outcome::Error(c) if c == common::errors::EtcdError::LeaseNotFound.wire_code())
    );
    // Both attached keys went in one revision, in key order; "c" stays.
    assert_eq!(store.bounds().current, before + 1);
    let batch = events.try_recv().unwrap();
    let deleted: Vec<&[u8]> = batch
        .events
        .iter()
        .map(|e| e.kv.as_ref().unwrap().key.as_slice())
        .collect();
    assert_eq!(deleted, [b"a".as_slice(), b"b".as_slice()]);
    assert_eq!(get(&store, "a", 0).unwrap(), Vec::<String>::new());
    assert_eq!(get(&store, "c", 0).unwrap(), ["no lease now"]);
    assert_eq!(store.lease_keys(7).unwrap(), None);
    assert!(store.leases().unwrap().0.is_empty());
}

#[test]
fn checkpoints_record_the_remaining_ttl() {
    use common::proto::etcdserverpb::{LeaseCheckpoint, LeaseCheckpointRequest, LeaseGrantRequest};
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 1 << 20).unwrap();
    store
        .apply(&[
            entry(0, Op::LeaseGrant(LeaseGrantRequest { ttl: 60, id: 1 })),
            entry(
                1,
                Op::LeaseCheckpoint(LeaseCheckpointRequest {
                    checkpoints: vec![
                        LeaseCheckpoint {
                            id: 1,
                            remaining_ttl: 42,
                        },
                        LeaseCheckpoint {
                            id: 2,
                            remaining_ttl: 5,
                        },
                    ],
                }),
            ),
        ])
        .unwrap();
    let (leases, _) = store.leases().unwrap();
    assert_eq!(leases.len(), 1);
    let rec = leases[0].lease.unwrap();
    assert_eq!((leases[0].id, rec.ttl, rec.remaining_ttl), (1, 60, 42));
}
