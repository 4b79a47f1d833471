//! HashKV as etcd computes it, so members can be compared with each other
//! (and with etcd): CRC-32C over the bucket name "key", then every stored
//! revision up to the requested one in revision order, each as etcd's
//! backend key (main and sub revision, big-endian, joined by '_', a 't'
//! appended for tombstones) followed by the marshaled mvccpb.KeyValue (only
//! the key for a tombstone). Like etcd, revisions at or below the compacted
//! one count only if they are still their key's live revision at the
//! hashed revision (etcd's `Keep`), unless no key is live at all.

use fjall::Readable;
use prost::Message;

use crate::keys::{self, Rev};
use crate::read;
use crate::record::Record;
use crate::schema::Keyspaces;
use crate::StoreError;
use common::proto::mvccpb::KeyValue;

/// etcd's on-disk key for a revision.
fn backend_key(rev: Rev, tombstone: bool) -> Vec<u8> {
    let mut k = Vec::with_capacity(18);
    k.extend_from_slice(&rev.main.to_be_bytes());
    k.push(b'_');
    k.extend_from_slice(&rev.sub.to_be_bytes());
    if tombstone {
        k.push(b't');
    }
    k
}

pub fn hash_kv<R: Readable>(
    r: &R,
    ks: &Keyspaces,
    upto: i64,
    compacted: i64,
) -> Result<u32, StoreError> {
    let everything = read::KeyRange::FromKey(Vec::new());
    let (_, live) = read::scan(r, ks.index.as_ref(), &everything, upto, 0, false)?;
    let mut crc = crc32c::crc32c(b"key");
    let hi = keys::rev_key(Rev {
        main: upto.saturating_add(1),
        sub: 0,
    });
    for g in r.range(&ks.revs, ..hi) {
        let (rk, esc) = g.into_inner()?;
        let rev = keys::parse_rev_key(&rk).ok_or(StoreError::CorruptKey)?;
        let value = r
            .get(&ks.index, keys::index_key(&esc, rev))?
            .ok_or(StoreError::CorruptKey)?;
        let key = keys::unescape(&esc).ok_or(StoreError::CorruptKey)?;
        if rev.main <= compacted && live > 0 {
            let kept = read::latest(r, ks.index.as_ref(), &key, upto)?;
            if !kept.is_some_and(|(krev, rec)| krev == rev && !rec.tombstone) {
                continue;
            }
        }
        let rec = Record::decode(&value)?;
        let tombstone = rec.tombstone;
        let kv = if tombstone {
            KeyValue {
                key,
                ..Default::default()
            }
        } else {
            rec.into_kv(key, rev)
        };
        crc = crc32c::crc32c_append(crc, &backend_key(rev, tombstone));
        crc = crc32c::crc32c_append(crc, &kv.encode_to_vec());
    }
    Ok(crc)
}

/// etcd's Hash: CRC-32C over every keyspace's entries (name, then keys and
/// values in order), without the raft bookkeeping in `meta` that differs
/// between members holding the same data (applied log id, membership).
pub fn hash_all<R: Readable>(
    r: &R,
    keyspaces: &[&fjall::SingleWriterTxKeyspace],
) -> Result<u32, StoreError> {
    let skip: [&[u8]; 3] = [
        crate::schema::META_APPLIED,
        crate::schema::META_MEMBERSHIP,
        crate::schema::META_MEMBERSHIP_LOG_ID,
    ];
    let mut crc = 0;
    for (name, ks) in crate::schema::KEYSPACES.iter().zip(keyspaces) {
        crc = crc32c::crc32c_append(crc, name.as_bytes());
        for g in r.iter(ks) {
            let (k, v) = g.into_inner()?;
            if *name == "meta" && skip.contains(&k.as_ref()) {
                continue;
            }
            crc = crc32c::crc32c_append(crc, &k);
            crc = crc32c::crc32c_append(crc, &v);
        }
    }
    Ok(crc)
}
