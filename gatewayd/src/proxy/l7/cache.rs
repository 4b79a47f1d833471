//! The L7 proxy's cache of serializable range responses (etcd
//! grpc-proxy's cache): a bounded map from the exact request (and the
//! client's credentials) to the member's answer. A write through the proxy
//! drops every entry whose range it touches before it is answered, so a
//! client reads its own writes through the proxy; writes made elsewhere
//! show up once an entry is evicted, within what a serializable read may
//! return anyway. A compaction drops entries for compacted revisions.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use common::proto::etcdserverpb::{RangeRequest, RangeResponse};
use prost::Message;

use super::metrics;

/// etcd's default number of cached responses.
const CAPACITY: usize = 2048;

struct Entry {
    response: RangeResponse,
    key: Vec<u8>,
    range_end: Vec<u8>,
    revision: i64,
}

#[derive(Default)]
struct Entries {
    map: HashMap<Vec<u8>, Entry>,
    /// Insertion order, for eviction.
    order: VecDeque<Vec<u8>>,
    /// Bumped by every invalidation: a read that began before one must not
    /// store what it read.
    generation: u64,
}

#[derive(Default)]
pub struct RangeCache {
    entries: Mutex<Entries>,
}

/// Where a cache lookup leaves a read: the key to store the answer under
/// and the generation it started in.
pub struct Miss {
    id: Vec<u8>,
    generation: u64,
}

/// The half-open interval [key, end) a request names, `None` meaning to
/// the end of the keyspace.
fn interval<'a>(key: &'a [u8], range_end: &'a [u8]) -> (&'a [u8], Option<Vec<u8>>) {
    match range_end {
        [] => {
            let mut end = key.to_vec();
            end.push(0);
            (key, Some(end))
        }
        [0] => (key, None),
        end => (key, Some(end.to_vec())),
    }
}

fn overlaps(a: (&[u8], Option<Vec<u8>>), b: (&[u8], Option<Vec<u8>>)) -> bool {
    let a_before_b_ends = b.1.as_deref().is_none_or(|end| a.0 < end);
    let b_before_a_ends = a.1.as_deref().is_none_or(|end| b.0 < end);
    a_before_b_ends && b_before_a_ends
}

impl RangeCache {
    /// The cached answer to `req` from a client with `credentials`, or how
    /// to store the answer once read.
    pub fn get(
        &self,
        req: &RangeRequest,
        credentials: Option<&str>,
    ) -> Result<RangeResponse, Miss> {
        let mut id = req.encode_to_vec();
        if let Some(c) = credentials {
            id.push(0xff);
            id.extend_from_slice(c.as_bytes());
        }
        let Ok(e) = self.entries.lock() else {
            return Err(Miss { id, generation: 0 });
        };
        match e.map.get(&id) {
            Some(hit) => {
                metrics::CACHE_HITS.add(1);
                Ok(hit.response.clone())
            }
            None => {
                metrics::CACHE_MISSES.add(1);
                Err(Miss {
                    id,
                    generation: e.generation,
                })
            }
        }
    }

    /// Store what a missed read returned, unless a write came in between.
    pub fn put(&self, miss: Miss, req: &RangeRequest, response: &RangeResponse) {
        let Ok(mut e) = self.entries.lock() else {
            return;
        };
        if e.generation != miss.generation || e.map.contains_key(&miss.id) {
            return;
        }
        while e.map.len() >= CAPACITY {
            let Some(old) = e.order.pop_front() else {
                break;
            };
            e.map.remove(&old);
        }
        e.order.push_back(miss.id.clone());
        e.map.insert(
            miss.id,
            Entry {
                response: response.clone(),
                key: req.key.clone(),
                range_end: req.range_end.clone(),
                revision: req.revision,
            },
        );
        metrics::CACHE_KEYS.set(e.map.len() as i64);
    }

    fn drop_where(&self, gone: impl Fn(&Entry) -> bool) {
        let Ok(mut e) = self.entries.lock() else {
            return;
        };
        e.generation += 1;
        let Entries { map, order, .. } = &mut *e;
        map.retain(|_, entry| !gone(entry));
        order.retain(|id| map.contains_key(id));
        metrics::CACHE_KEYS.set(map.len() as i64);
    }

    /// A write to [key, range_end) went through the proxy.
    pub fn invalidate(&self, key: &[u8], range_end: &[u8]) {
        let written = interval(key, range_end);
        self.drop_where(|entry| {
            overlaps(
                (written.0, written.1.clone()),
                interval(&entry.key, &entry.range_end),
            )
        });
    }

    /// The cluster was compacted up to `revision`.
    pub fn compacted(&self, revision: i64) {
        self.drop_where(|entry| entry.revision > 0 && entry.revision < revision);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(key: &str, end: &str) -> RangeRequest {
        RangeRequest {
            key: key.into(),
            range_end: end.into(),
            serializable: true,
            ..Default::default()
        }
    }

    fn cached(c: &RangeCache, r: &RangeRequest) -> bool {
        c.get(r, None).is_ok()
    }

    fn fill(c: &RangeCache, r: &RangeRequest) {
        if let Err(miss) = c.get(r, None) {
            c.put(miss, r, &RangeResponse::default());
        }
    }

    #[test]
    fn writes_drop_overlapping_ranges_only() {
        let c = RangeCache::default();
        let (a, ab, from_b, all) = (
            range("a", ""),
            range("a", "c"),
            range("b", "\0"),
            range("\0", "\0"),
        );
        for r in [&a, &ab, &from_b, &all] {
            fill(&c, r);
            assert!(cached(&c, r));
        }
        c.invalidate(b"z", b"");
        assert!(cached(&c, &a) && cached(&c, &ab));
        assert!(!cached(&c, &from_b) && !cached(&c, &all));
        c.invalidate(b"a", b"");
        assert!(!cached(&c, &a) && !cached(&c, &ab));
    }

    #[test]
    fn credentials_and_stale_reads_are_kept_apart() {
        let c = RangeCache::default();
        let r = range("k", "");
        let Err(miss) = c.get(&r, Some("alice")) else {
            panic!("empty cache hit");
        };
        assert!(c.get(&r, None).is_err());
        // a write lands while the read is in flight: its answer is not kept
        c.invalidate(b"k", b"");
        c.put(miss, &r, &RangeResponse::default());
        assert!(c.get(&r, Some("alice")).is_err());
    }

    #[test]
    fn compaction_drops_old_revisions() {
        let c = RangeCache::default();
        let old = RangeRequest {
            revision: 3,
            ..range("k", "")
        };
        fill(&c, &old);
        fill(&c, &range("k", ""));
        c.compacted(5);
        assert!(!cached(&c, &old));
        assert!(cached(&c, &range("k", "")));
    }
}
