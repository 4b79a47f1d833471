//! etcd-format snapshots at the store level: the export keeps compacted
//! revisions as etcd's compaction does even before physical compaction ran
//! here, and an import of the file is a store with the same reads,
//! revisions and compaction point.

use prost::Message;

use crate::etcd_db;
use crate::store::Store;
use crate::store_tests::{entry, put};
use common::bbolt::read::{Db, Value};
use common::proto::etcdserverpb::{CompactionRequest, DeleteRangeRequest, RangeRequest};
use common::proto::mvccpb::KeyValue;
use common::proto::storage::raft_request::Op;

fn all(store: &Store, revision: i64) -> Vec<(String, i64, i64, i64)> {
    let r = store
        .range(
            &RangeRequest {
                key: vec![0],
                range_end: vec![0],
                revision,
                ..Default::default()
            },
            None,
        )
        .unwrap();
    r.kvs
        .iter()
        .map(|kv| {
            (
                String::from_utf8_lossy(&kv.value).into_owned(),
                kv.create_revision,
                kv.mod_revision,
                kv.version,
            )
        })
        .collect()
}

#[test]
fn export_then_import_keeps_reads_revisions_and_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("a"), 8 << 20).unwrap();
    let delete = |i, k: &str| {
        entry(
            i,
            Op::DeleteRange(DeleteRangeRequest {
                key: k.into(),
                ..Default::default()
            }),
        )
    };
    let compact = entry(
        5,
        Op::Compaction(CompactionRequest {
            revision: 5,
            physical: false,
        }),
    );
    store
        .apply(&[
            put(0, "a", "1"), // rev 2
            put(1, "b", "1"), // rev 3
            put(2, "a", "2"), // rev 4
            delete(3, "b"),   // rev 5
            put(4, "c", "1"), // rev 6
            compact,
            put(6, "a", "3"), // rev 7
        ])
        .unwrap();

    let file = dir.path().join("snap.db");
    let size = crate::etcd_export::write_file(&store, &file).unwrap();
    assert_eq!(size % 4096, 0);
    // The key bucket holds what etcd's compaction at 5 keeps: a@4 (the
    // newest at or below 5), c@6, a@7; b's revisions end in a tombstone.
    let db = Db::open(&file).unwrap();
    let key = db.bucket(&db.root(), etcd_db::KEY).unwrap().unwrap();
    let mut revs = Vec::new();
    db.for_each(&key, &mut |k, v| {
        let (rev, tombstone) = etcd_db::parse_rev_bytes(k).unwrap();
        let Value::Plain(v) = v else { panic!("bucket") };
        let kv = KeyValue::decode(v).unwrap();
        revs.push((
            rev.main,
            tombstone,
            String::from_utf8_lossy(&kv.key).into_owned(),
        ));
        Ok::<(), common::bbolt::read::ReadError>(())
    })
    .unwrap();
    let want = [(4, false, "a"), (6, false, "c"), (7, false, "a")];
    assert_eq!(revs, want.map(|(r, t, k)| (r, t, k.to_string())).to_vec());

    let live = dir.path().join("b");
    let mut staging = crate::snapshot::Staging::create(&live).unwrap();
    let status = crate::etcd_import::import(&file, &mut staging).unwrap();
    assert_eq!((status.revision, status.compact_revision), (7, 5));
    staging.finish().unwrap();
    crate::snapshot::mark_for_activation(&live).unwrap();
    crate::snapshot::settle(&live).unwrap();
    let restored = Store::open(&live, 8 << 20).unwrap();
    assert_eq!(restored.bounds().current, 7);
    assert_eq!(restored.bounds().compacted, 5);
    for rev in [0, 5, 6, 7] {
        assert_eq!(all(&restored, rev), all(&store, rev), "at revision {rev}");
    }
    assert!(restored
        .range(
            &RangeRequest {
                key: b"a".to_vec(),
                revision: 4,
                ..Default::default()
            },
            None
        )
        .is_err());
}

#[test]
fn members_come_from_the_applied_membership() {
    let json = br#"{"configs":[[10,11]],"nodes":{"10":{"name":"a","peer_urls":["http://h:2380"],"client_urls":[]},"11":{"name":"b","peer_urls":["http://i:2380"]},"255":{"name":"","peer_urls":["http://j:2380"]}}}"#;
    let m = crate::etcd_export::members(json);
    let got: Vec<(&str, &str)> = m.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert_eq!(
        got,
        [
            ("a", r#"{"peerURLs":["http://h:2380"]}"#),
            ("b", r#"{"peerURLs":["http://i:2380"]}"#),
            ("ff", r#"{"peerURLs":["http://j:2380"],"isLearner":true}"#),
        ]
    );
    assert!(crate::etcd_export::members(b"not json").is_empty());
}
