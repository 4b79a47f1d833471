//! An etcd 3.4 backend (a bbolt file, e.g. saved with `etcdctl snapshot
//! save`) turned into a staged store: every stored revision of every key
//! with its create/mod revision, version and lease, the leases, the auth
//! store and the compaction point. Read in one pass, page by page, and
//! written in bounded chunks; raft state and membership are the new
//! cluster's.

use std::path::Path;

use prost::Message;

use crate::etcd_db::{self as etcd, Lease};
use crate::keys;
use crate::record::Record;
use crate::schema::{
    AUTH_ENABLED, AUTH_REVISION, META_COMPACTED, META_COMPACT_DONE, META_REVISION, ROLE_PREFIX,
    USER_PREFIX,
};
use crate::snapshot::Staging;
use crate::StoreError;
use common::bbolt::read::{BucketRef, Db, Value};
use common::proto::authpb::{Role, User};
use common::proto::mvccpb::KeyValue;
use common::proto::storage::{LeaseRecord, SnapshotChunk, SnapshotEntry, StatusResponse};

/// Bytes of entries per chunk written to the staging store.
const CHUNK_BYTES: usize = 1 << 20;

// Positions in `schema::KEYSPACES`.
const INDEX: u32 = 0;
const REVS: u32 = 1;
const LEASES: u32 = 2;
const META: u32 = 4;
const AUTH: u32 = 5;

fn bad(what: impl Into<String>) -> StoreError {
    StoreError::EtcdSnapshot(what.into())
}

/// Entries on their way into the staging store, in bounded chunks.
struct Sink<'a> {
    staging: &'a mut Staging,
    chunk: SnapshotChunk,
    bytes: usize,
}

impl Sink<'_> {
    fn put(&mut self, keyspace: u32, key: Vec<u8>, value: Vec<u8>) -> Result<(), StoreError> {
        self.bytes += key.len() + value.len();
        self.chunk.entries.push(SnapshotEntry {
            keyspace,
            key,
            value,
        });
        if self.bytes >= CHUNK_BYTES {
            self.staging.write(std::mem::take(&mut self.chunk))?;
            self.bytes = 0;
        }
        Ok(())
    }
}

/// Stage the etcd backend at `path`; returns the staged state.
pub fn import(path: &Path, staging: &mut Staging) -> Result<StatusResponse, StoreError> {
    let db = Db::open(path)?;
    let root = db.root();
    let bucket =
        |name: &[u8]| -> Result<Option<BucketRef>, StoreError> { Ok(db.bucket(&root, name)?) };
    let key = bucket(etcd::KEY)?.ok_or_else(|| bad("no key bucket: not an etcd backend"))?;
    let mut sink = Sink {
        staging,
        chunk: SnapshotChunk::default(),
        bytes: 0,
    };

    let mut newest = 0i64;
    db.for_each(&key, &mut |k, v| {
        let Value::Plain(v) = v else {
            return Err(bad("a bucket inside the key bucket"));
        };
        let (rev, tombstone) =
            etcd::parse_rev_bytes(k).ok_or_else(|| bad(format!("malformed revision {k:?}")))?;
        let kv = KeyValue::decode(v)?;
        let record = if tombstone {
            Record::tombstone()
        } else {
            if kv.mod_revision != rev.main {
                return Err(bad(format!(
                    "revision {} holds mod revision {}",
                    rev.main, kv.mod_revision
                )));
            }
            Record {
                tombstone: false,
                create_revision: kv.create_revision,
                version: kv.version,
                lease: kv.lease,
                value: kv.value,
            }
        };
        let esc = keys::escape(&kv.key);
        sink.put(INDEX, keys::index_key(&esc, rev), record.encode())?;
        sink.put(REVS, keys::rev_key(rev).to_vec(), esc)?;
        newest = newest.max(rev.main);
        Ok(())
    })?;

    if let Some(lease) = bucket(etcd::LEASE)? {
        db.for_each(&lease, &mut |k, v| {
            let Value::Plain(v) = v else {
                return Err(bad("a bucket inside the lease bucket"));
            };
            let l = Lease::decode(v)?;
            if k != l.id.to_be_bytes() {
                return Err(bad(format!("lease {:x} stored under {k:?}", l.id)));
            }
            let rec = LeaseRecord {
                ttl: l.ttl,
                remaining_ttl: l.remaining_ttl,
            };
            sink.put(LEASES, k.to_vec(), rec.encode_to_vec())
        })?;
    }

    if let Some(auth) = bucket(etcd::AUTH)? {
        db.for_each(&auth, &mut |k, v| {
            let Value::Plain(v) = v else {
                return Ok(());
            };
            if k == etcd::AUTH_ENABLED {
                sink.put(AUTH, AUTH_ENABLED.to_vec(), vec![u8::from(v == [1])])?;
            } else if k == etcd::AUTH_REVISION {
                let r: [u8; 8] = v.try_into().map_err(|_| bad("malformed authRevision"))?;
                sink.put(AUTH, AUTH_REVISION.to_vec(), r.to_vec())?;
            }
            Ok::<(), StoreError>(())
        })?;
    }
    for (name, prefix) in [
        (etcd::AUTH_USERS, USER_PREFIX),
        (etcd::AUTH_ROLES, ROLE_PREFIX),
    ] {
        let Some(b) = bucket(name)? else { continue };
        db.for_each(&b, &mut |k, v| {
            let Value::Plain(v) = v else {
                return Err(bad("a bucket inside an auth bucket"));
            };
            if std::str::from_utf8(k).is_err() {
                return Err(bad("a user or role name that is not UTF-8"));
            }
            // Checked to decode; kept as etcd wrote it.
            if prefix == USER_PREFIX {
                User::decode(v)?;
            } else {
                Role::decode(v)?;
            }
            sink.put(AUTH, [prefix, k].concat(), v.to_vec())
        })?;
    }

    let (mut finished, mut scheduled) = (0i64, 0i64);
    if let Some(meta) = bucket(etcd::META)? {
        db.for_each(&meta, &mut |k, v| {
            let Value::Plain(v) = v else { return Ok(()) };
            let slot = if k == etcd::FINISHED_COMPACT {
                &mut finished
            } else if k == etcd::SCHEDULED_COMPACT {
                &mut scheduled
            } else {
                return Ok(());
            };
            let (rev, _) =
                etcd::parse_rev_bytes(v).ok_or_else(|| bad("malformed compaction revision"))?;
            *slot = rev.main;
            Ok::<(), StoreError>(())
        })?;
    }
    // etcd finishes a scheduled compaction at start; so will the compactor.
    let compacted = finished.max(scheduled);
    let revision = newest.max(compacted).max(1);
    sink.put(
        META,
        META_REVISION.to_vec(),
        revision.to_be_bytes().to_vec(),
    )?;
    sink.put(
        META,
        META_COMPACTED.to_vec(),
        compacted.to_be_bytes().to_vec(),
    )?;
    sink.put(
        META,
        META_COMPACT_DONE.to_vec(),
        finished.to_be_bytes().to_vec(),
    )?;

    let status = StatusResponse {
        revision,
        compact_revision: compacted,
        ..Default::default()
    };
    let mut last = std::mem::take(&mut sink.chunk);
    last.status = Some(status.clone());
    last.last = true;
    sink.staging.write(last)?;
    sink.staging.attach_leases()?;
    Ok(status)
}
