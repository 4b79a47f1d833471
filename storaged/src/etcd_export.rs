//! The store as etcd 3.4's backend: one consistent read snapshot written as
//! a bbolt file (`etcd_db`'s layout) that `etcdctl snapshot status` and
//! `restore` read. Streaming: the `key` bucket is written in revision order
//! from the revision log, one page at a time, so memory does not grow with
//! the store. Revisions at or below the compacted revision are kept as
//! etcd's compaction keeps them: per key the newest one, unless it is a
//! tombstone (physical compaction here may not have caught up yet).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Read, Seek, Write};
use std::path::Path;

use fjall::Readable;
use prost::Message;

use crate::auth::AuthState;
use crate::etcd_db::{self as etcd, Lease};
use crate::keys::{self, Rev};
use crate::record::Record;
use crate::snapshot::ExportFile;
use crate::store::Store;
use crate::StoreError;
use common::bbolt::write::{Bucket, Writer};
use common::bbolt::BucketHeader;
use common::proto::mvccpb::KeyValue;
use common::proto::storage::{EtcdSnapshotChunk, LeaseRecord};
use tokio::sync::mpsc;

/// Bytes per streamed piece: etcd's snapshot send buffer.
pub const PIECE: usize = 32 * 1024;

/// Build the file and stream it into `tx` in `PIECE`s; the file goes when
/// this returns (done, failed, or the receiver went away). Blocking.
pub fn send(
    store: &Store,
    file: ExportFile,
    tx: mpsc::Sender<Result<EtcdSnapshotChunk, tonic::Status>>,
) {
    let result = (|| -> Result<(), StoreError> {
        let total = write_file(store, &file.0)?;
        let mut f = File::open(&file.0)?;
        let mut sent = 0u64;
        while sent < total {
            let mut data = vec![0u8; PIECE.min((total - sent) as usize)];
            f.read_exact(&mut data)?;
            sent += data.len() as u64;
            let chunk = EtcdSnapshotChunk {
                total_size: total,
                data,
            };
            if tx.blocking_send(Ok(chunk)).is_err() {
                return Ok(()); // the client went away
            }
        }
        Ok(())
    })();
    if let Err(e) = result {
        tracing::warn!(error = %e, "etcd-format snapshot failed");
        let _ = tx.blocking_send(Err(e.into()));
    }
    drop(file);
}

/// Write the store into a new file at `path` (0600); returns its size.
pub fn write_file(store: &Store, path: &Path) -> Result<u64, StoreError> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    let mut w = Writer::new(BufWriter::with_capacity(1 << 16, file))?;
    let snap = store.db.read_tx();
    let root = write_buckets(store, &snap, &mut w)?;
    let out = w.finish(root)?;
    let file = out.into_inner().map_err(|e| e.into_error())?;
    Ok(file.metadata()?.len())
}

fn write_buckets<R: Readable, W: Write + Seek>(
    store: &Store,
    snap: &R,
    w: &mut Writer<W>,
) -> Result<BucketHeader, StoreError> {
    let ks = &store.ks;
    let status = store.status_at(snap)?;
    let auth = AuthState::load(snap, ks)?;
    let mut root = Bucket::new();

    let mut alarms: Vec<Vec<u8>> = status.alarms.iter().map(|a| a.encode_to_vec()).collect();
    alarms.sort();
    alarms.dedup();
    let mut b = Bucket::new();
    for a in &alarms {
        b.put(w, a, b"")?;
    }
    let h = b.finish(w)?;
    root.put_bucket(w, etcd::ALARM, h)?;

    let mut b = Bucket::new();
    b.put(w, etcd::AUTH_ENABLED, &[u8::from(auth.enabled)])?;
    b.put(w, etcd::AUTH_REVISION, &auth.revision.to_be_bytes())?;
    let h = b.finish(w)?;
    root.put_bucket(w, etcd::AUTH, h)?;
    let mut b = Bucket::new();
    for (name, role) in &auth.roles {
        b.put(w, name.as_bytes(), &role.encode_to_vec())?;
    }
    let h = b.finish(w)?;
    root.put_bucket(w, etcd::AUTH_ROLES, h)?;
    let mut b = Bucket::new();
    for (name, user) in &auth.users {
        b.put(w, name.as_bytes(), &user.encode_to_vec())?;
    }
    let h = b.finish(w)?;
    root.put_bucket(w, etcd::AUTH_USERS, h)?;

    let mut b = Bucket::new();
    b.put(w, etcd::CLUSTER_VERSION, etcd::VERSION)?;
    let h = b.finish(w)?;
    root.put_bucket(w, etcd::CLUSTER, h)?;

    let key = write_keys(store, snap, w, status.compact_revision)?;
    root.put_bucket(w, etcd::KEY, key)?;

    let mut b = Bucket::new();
    for g in snap.iter(&ks.leases) {
        let (k, v) = g.into_inner()?;
        let id = i64::from_be_bytes(k.as_ref().try_into().map_err(|_| StoreError::CorruptKey)?);
        let rec = LeaseRecord::decode(v.as_ref())?;
        let lease = Lease {
            id,
            ttl: rec.ttl,
            remaining_ttl: rec.remaining_ttl,
        };
        b.put(w, &k, &lease.encode_to_vec())?;
    }
    let h = b.finish(w)?;
    root.put_bucket(w, etcd::LEASE, h)?;

    // etcdctl snapshot restore replaces the membership with the new
    // cluster's, as it does with etcd's own snapshots.
    let mut b = Bucket::new();
    for (id, attributes) in members(&status.membership) {
        b.put(w, id.as_bytes(), attributes.as_bytes())?;
    }
    let h = b.finish(w)?;
    root.put_bucket(w, etcd::MEMBERS, h)?;
    let h = Bucket::new().finish(w)?;
    root.put_bucket(w, etcd::MEMBERS_REMOVED, h)?;

    let mut b = Bucket::new();
    let applied = status.applied.map_or(0, |a| a.index);
    b.put(w, etcd::CONSISTENT_INDEX, &applied.to_be_bytes())?;
    if status.compact_revision > 0 {
        let at = etcd::rev_bytes(
            Rev {
                main: status.compact_revision,
                sub: 0,
            },
            false,
        );
        b.put(w, etcd::FINISHED_COMPACT, &at)?;
        b.put(w, etcd::SCHEDULED_COMPACT, &at)?;
    }
    let h = b.finish(w)?;
    root.put_bucket(w, etcd::META, h)?;
    Ok(root.finish(w)?)
}

/// The `members` bucket from the applied membership (raftd's JSON of
/// openraft's: voter sets and nodes by ID): member ID in hex → etcd's raft
/// attributes as JSON. Nothing if it does not parse (a snapshot is not
/// refused for it).
pub(crate) fn members(membership: &[u8]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    if membership.is_empty() {
        return out;
    }
    let Ok(m) = serde_json::from_slice::<serde_json::Value>(membership) else {
        tracing::warn!("snapshot: membership does not parse; members bucket left empty");
        return out;
    };
    let voters: Vec<u64> = m["configs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c.as_array())
        .flatten()
        .filter_map(|v| v.as_u64())
        .collect();
    for (id, node) in m["nodes"].as_object().into_iter().flatten() {
        let Ok(id) = id.parse::<u64>() else { continue };
        let urls = serde_json::to_string(&node["peer_urls"]).unwrap_or_else(|_| "[]".into());
        let urls = if urls == "null" { "[]".into() } else { urls };
        let learner = if voters.contains(&id) {
            ""
        } else {
            ",\"isLearner\":true"
        };
        out.insert(
            format!("{id:x}"),
            format!("{{\"peerURLs\":{urls}{learner}}}"),
        );
    }
    out
}

/// The `key` bucket: every stored revision in revision order, compacted
/// ones as etcd keeps them.
fn write_keys<R: Readable, W: Write + Seek>(
    store: &Store,
    snap: &R,
    w: &mut Writer<W>,
    compacted: i64,
) -> Result<BucketHeader, StoreError> {
    let ks = &store.ks;
    let mut b = Bucket::new();
    for g in snap.iter(&ks.revs) {
        let (rk, esc) = g.into_inner()?;
        let rev = keys::parse_rev_key(&rk).ok_or(StoreError::CorruptKey)?;
        let stored = snap
            .get(&ks.index, keys::index_key(&esc, rev))?
            .ok_or(StoreError::CorruptKey)?;
        let tombstone = Record::is_tombstone(&stored);
        if rev.main <= compacted
            && (tombstone || !newest_at_or_below(snap, store, &esc, rev, compacted)?)
        {
            continue;
        }
        let key = keys::unescape(&esc).ok_or(StoreError::CorruptKey)?;
        let kv = if tombstone {
            KeyValue {
                key,
                ..Default::default()
            }
        } else {
            Record::decode(&stored)?.into_kv(key, rev)
        };
        b.put(w, &etcd::rev_bytes(rev, tombstone), &kv.encode_to_vec())?;
    }
    Ok(b.finish(w)?)
}

/// Whether `rev` is the newest revision of the key at or below `at`.
fn newest_at_or_below<R: Readable>(
    snap: &R,
    store: &Store,
    esc: &[u8],
    rev: Rev,
    at: i64,
) -> Result<bool, StoreError> {
    let lo = keys::index_key(esc, Rev { main: at, sub: -1 });
    let hi = keys::index_key(esc, Rev { main: 0, sub: 0 });
    match snap.range(&store.ks.index, lo..=hi).next() {
        None => Ok(false),
        Some(g) => {
            let k = g.key()?;
            let (_, newest) = keys::split_index_key(&k).ok_or(StoreError::CorruptKey)?;
            Ok(newest == rev)
        }
    }
}
