//! Reading the MVCC key index at a revision, with etcd's Range semantics
//! (limit/more/count, sort, revision filters, keys_only, count_only).
//! Generic over fjall's `Readable`, so the same code serves snapshot reads
//! and reads inside an applying write transaction (which see its writes).

use fjall::{Keyspace, Readable};

use crate::keys::{self, Rev};
use crate::record::Record;
use crate::StoreError;
use common::errors::EtcdError;
use common::proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use common::proto::etcdserverpb::{RangeRequest, RangeResponse, ResponseHeader};
use common::proto::mvccpb::KeyValue;
use common::validate::MAX_KEY_BYTES;

/// Which keys a request names, decoded from etcd's (key, range_end) pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyRange {
    /// range_end empty: exactly `key`.
    Single(Vec<u8>),
    /// range_end "\0": every key >= `key`.
    FromKey(Vec<u8>),
    /// [key, end).
    Until(Vec<u8>, Vec<u8>),
}

impl KeyRange {
    /// Bounds longer than any stored key are cut to one byte more than
    /// the longest: for keys of at most L bytes, `k >= b` and `k < b` give
    /// the same answers with `b` cut to L + 1 bytes, and the cut bound
    /// always fits the key index.
    pub fn new(key: &[u8], range_end: &[u8]) -> Self {
        match range_end {
            [] => KeyRange::Single(key.to_vec()),
            [0] => KeyRange::FromKey(bound(key)),
            end => KeyRange::Until(bound(key), bound(end)),
        }
    }

    pub fn contains(&self, k: &[u8]) -> bool {
        match self {
            KeyRange::Single(key) => k == key.as_slice(),
            KeyRange::FromKey(key) => k >= key.as_slice(),
            KeyRange::Until(key, end) => k >= key.as_slice() && k < end.as_slice(),
        }
    }
}

fn bound(b: &[u8]) -> Vec<u8> {
    b[..b.len().min(MAX_KEY_BYTES + 1)].to_vec()
}

/// The newest revision of `key` at or below `rev`, tombstones included.
pub fn latest<R: Readable>(
    r: &R,
    index: &Keyspace,
    key: &[u8],
    rev: i64,
) -> Result<Option<(Rev, Record)>, StoreError> {
    if key.len() > MAX_KEY_BYTES {
        return Ok(None); // never stored
    }
    let esc = keys::escape(key);
    let lo = keys::index_key(&esc, Rev { main: rev, sub: -1 });
    let hi = keys::index_key(&esc, Rev { main: 0, sub: 0 });
    match r.range(index, lo..=hi).next() {
        None => Ok(None),
        Some(g) => {
            let (k, v) = g.into_inner()?;
            let (_, krev) = keys::split_index_key(&k).ok_or(StoreError::CorruptKey)?;
            Ok(Some((krev, Record::decode(&v)?)))
        }
    }
}

/// Live key-values in `range` at `rev`: up to `limit` of them (0 = all) and
/// the count of all of them. `want_kvs = false` only counts.
pub fn scan<R: Readable>(
    r: &R,
    index: &Keyspace,
    range: &KeyRange,
    rev: i64,
    limit: usize,
    want_kvs: bool,
) -> Result<(Vec<KeyValue>, i64), StoreError> {
    if let KeyRange::Single(key) = range {
        // The point read, without the range walk's re-encoding.
        return Ok(match latest(r, index, key, rev)? {
            Some((krev, rec)) if !rec.tombstone => {
                let kvs = if want_kvs {
                    vec![rec.into_kv(key.clone(), krev)]
                } else {
                    vec![]
                };
                (kvs, 1)
            }
            _ => (vec![], 0),
        });
    }
    let mut kvs = Vec::new();
    let mut count = 0i64;
    visit(r, index, range, rev, |key, krev, v| {
        count += 1;
        if want_kvs && (limit == 0 || kvs.len() < limit) {
            let key = key()?;
            kvs.push(Record::decode(v)?.into_kv(key, krev));
        }
        Ok(true)
    })?;
    Ok((kvs, count))
}

/// Each live key in `range` at `rev`, in key order, until `each` says
/// stop: it gets the key (decoded on demand), its revision and its stored
/// record.
fn visit<R: Readable>(
    r: &R,
    index: &Keyspace,
    range: &KeyRange,
    rev: i64,
    mut each: impl FnMut(
        &dyn Fn() -> Result<Vec<u8>, StoreError>,
        Rev,
        &[u8],
    ) -> Result<bool, StoreError>,
) -> Result<(), StoreError> {
    let (start, end) = match range {
        KeyRange::Single(key) => {
            if let Some((krev, rec)) = latest(r, index, key, rev)? {
                if !rec.tombstone {
                    let raw = rec.encode();
                    each(&|| Ok(key.clone()), krev, &raw)?;
                }
            }
            return Ok(());
        }
        KeyRange::FromKey(key) => (key, None),
        KeyRange::Until(key, end) => {
            if end <= key {
                return Ok(());
            }
            (key, Some(keys::escape_bound(end)))
        }
    };
    let lo = keys::escape_bound(start);
    let iter = match end {
        Some(hi) => r.range(index, lo..hi),
        None => r.range(index, lo..),
    };
    let mut resolved: Vec<u8> = Vec::new();
    let mut have_resolved = false;
    for g in iter {
        let (k, v) = g.into_inner()?;
        let (enc, krev) = keys::split_index_key(&k).ok_or(StoreError::CorruptKey)?;
        if have_resolved && enc == resolved.as_slice() {
            continue; // an older revision of a key already decided
        }
        if krev.main > rev {
            continue; // too new for this read; an older one may follow
        }
        resolved.clear();
        resolved.extend_from_slice(enc);
        have_resolved = true;
        if Record::is_tombstone(&v) {
            continue;
        }
        let key = || keys::unescape(enc).ok_or(StoreError::CorruptKey);
        if !each(&key, krev, &v)? {
            break;
        }
    }
    Ok(())
}

/// One chunk of a streamed range (etcd 3.7's RangeStream): the live keys
/// from `req.key` at `req.revision` (0: current), up to `req.limit` of
/// them (0: no limit) and as many as fit in `max_bytes` of response (at
/// least one); `more` says whether a live key follows. No total count:
/// a chunk reads only what it returns, plus one key.
pub fn range_chunk<R: Readable>(
    r: &R,
    index: &Keyspace,
    req: &RangeRequest,
    bounds: RevBounds,
    max_bytes: usize,
) -> Result<RangeResponse, StoreError> {
    crate::metrics::RANGES.inc();
    let rev = bounds.resolve(req.revision)?;
    let range = KeyRange::new(&req.key, &req.range_end);
    let limit = usize::try_from(req.limit).unwrap_or(0);
    let mut kvs: Vec<KeyValue> = Vec::new();
    let (mut size, mut more) = (0usize, false);
    visit(r, index, &range, rev, |key, krev, v| {
        if limit != 0 && kvs.len() == limit {
            more = true;
            return Ok(false);
        }
        let mut kv = Record::decode(v)?.into_kv(key()?, krev);
        if req.keys_only {
            kv.value.clear();
        }
        // A repeated field's tag and length prefix, at most 6 bytes.
        let cost = prost::Message::encoded_len(&kv) + 6;
        if !kvs.is_empty() && size + cost > max_bytes {
            more = true;
            return Ok(false);
        }
        size += cost;
        kvs.push(kv);
        Ok(true)
    })?;
    Ok(RangeResponse {
        header: Some(ResponseHeader {
            revision: bounds.current,
            ..Default::default()
        }),
        count: kvs.len() as i64,
        kvs,
        more,
    })
}

/// Revision bounds a read is checked against.
#[derive(Debug, Clone, Copy)]
pub struct RevBounds {
    /// The revision a read with revision 0 sees (also the header revision).
    pub current: i64,
    /// Reads below this revision fail with ErrCompacted.
    pub compacted: i64,
}

impl RevBounds {
    /// The revision to read at, or etcd's error for an unreadable one.
    pub fn resolve(&self, requested: i64) -> Result<i64, EtcdError> {
        if requested <= 0 {
            return Ok(self.current);
        }
        if requested > self.current {
            return Err(EtcdError::FutureRev);
        }
        if requested < self.compacted {
            return Err(EtcdError::Compacted);
        }
        Ok(requested)
    }
}

/// etcd's Range, applied to the index.
pub fn range_request<R: Readable>(
    r: &R,
    index: &Keyspace,
    req: &RangeRequest,
    bounds: RevBounds,
) -> Result<RangeResponse, StoreError> {
    crate::metrics::RANGES.inc();
    let rev = bounds.resolve(req.revision)?;
    let sort_order =
        SortOrder::try_from(req.sort_order).map_err(|_| EtcdError::InvalidSortOption)?;
    let sort_target =
        SortTarget::try_from(req.sort_target).map_err(|_| EtcdError::InvalidSortOption)?;
    let filtered = req.min_mod_revision != 0
        || req.max_mod_revision != 0
        || req.min_create_revision != 0
        || req.max_create_revision != 0;
    // Sorting or filtering needs every match before truncating to limit.
    let fetch = if sort_order != SortOrder::None || filtered || req.limit <= 0 {
        0
    } else {
        req.limit as usize + 1
    };
    let range = KeyRange::new(&req.key, &req.range_end);
    let (mut kvs, count) = scan(r, index, &range, rev, fetch, !req.count_only)?;

    kvs.retain(|kv| {
        !(req.max_mod_revision != 0 && kv.mod_revision > req.max_mod_revision
            || req.min_mod_revision != 0 && kv.mod_revision < req.min_mod_revision
            || req.max_create_revision != 0 && kv.create_revision > req.max_create_revision
            || req.min_create_revision != 0 && kv.create_revision < req.min_create_revision)
    });
    // etcd sorts ascending by default when the target is not the key.
    let order = if sort_target != SortTarget::Key && sort_order == SortOrder::None {
        SortOrder::Ascend
    } else {
        sort_order
    };
    if order != SortOrder::None {
        sort_kvs(&mut kvs, sort_target, order == SortOrder::Descend);
    }
    let mut more = false;
    if req.limit > 0 && kvs.len() > req.limit as usize {
        kvs.truncate(req.limit as usize);
        more = true;
    }
    if req.keys_only {
        for kv in &mut kvs {
            kv.value.clear();
        }
    }
    Ok(RangeResponse {
        header: Some(ResponseHeader {
            revision: bounds.current,
            ..Default::default()
        }),
        kvs,
        more,
        count,
    })
}

/// Stable in both directions: ties keep key order, as etcd's results do.
fn sort_kvs(kvs: &mut [KeyValue], target: SortTarget, descending: bool) {
    let by = |a: &KeyValue, b: &KeyValue| match target {
        SortTarget::Key => a.key.cmp(&b.key),
        SortTarget::Version => a.version.cmp(&b.version),
        SortTarget::Create => a.create_revision.cmp(&b.create_revision),
        SortTarget::Mod => a.mod_revision.cmp(&b.mod_revision),
        SortTarget::Value => a.value.cmp(&b.value),
    };
    if descending {
        kvs.sort_by(|a, b| by(b, a));
    } else {
        kvs.sort_by(by);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_range_decoding() {
        assert_eq!(KeyRange::new(b"a", b""), KeyRange::Single(b"a".to_vec()));
        assert_eq!(KeyRange::new(b"a", b"\0"), KeyRange::FromKey(b"a".to_vec()));
        let r = KeyRange::new(b"a", b"c");
        assert!(r.contains(b"a") && r.contains(b"b\xff") && !r.contains(b"c"));
    }

    #[test]
    fn bounds_beyond_the_longest_key_keep_their_meaning() {
        let long = |c: u8, n: usize| vec![c; n];
        let end = long(b'b', MAX_KEY_BYTES + 50);
        let r = KeyRange::new(b"a", &end);
        assert!(matches!(&r, KeyRange::Until(_, e) if e.len() == MAX_KEY_BYTES + 1));
        for k in [
            long(b'b', MAX_KEY_BYTES),
            long(b'a', MAX_KEY_BYTES),
            b"b".to_vec(),
        ] {
            assert_eq!(r.contains(&k), k >= b"a".to_vec() && k < end, "{}", k.len());
        }
        let start = long(b'b', MAX_KEY_BYTES + 50);
        let r = KeyRange::new(&start, b"\0");
        for k in [long(b'b', MAX_KEY_BYTES), long(b'c', 1), long(b'b', 3)] {
            assert_eq!(r.contains(&k), k >= start, "{}", k.len());
        }
    }

    #[test]
    fn revision_bounds_follow_etcd() {
        let b = RevBounds {
            current: 10,
            compacted: 4,
        };
        assert_eq!(b.resolve(0), Ok(10));
        assert_eq!(b.resolve(4), Ok(4));
        assert_eq!(b.resolve(3), Err(EtcdError::Compacted));
        assert_eq!(b.resolve(11), Err(EtcdError::FutureRev));
    }
}
