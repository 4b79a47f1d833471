//! storaged's on-disk record decoding: any stored bytes must decode or be
//! reported corrupt, never panic; what decodes must encode back to the
//! same bytes (MVCC records, escaped keys, key-index and revision keys).
#![no_main]

use libfuzzer_sys::fuzz_target;
use storaged::keys;
use storaged::record::Record;

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = Record::decode(data) {
        assert_eq!(r.encode(), data, "record round trip");
    }
    let _ = Record::is_tombstone(data);
    if let Some(key) = keys::unescape(data) {
        assert_eq!(keys::escape(&key), data, "key escaping round trip");
    }
    if let Some((escaped, rev)) = keys::split_index_key(data) {
        assert_eq!(keys::index_key(escaped, rev), data, "index key round trip");
    }
    if let Some(rev) = keys::parse_rev_key(data) {
        assert_eq!(keys::rev_key(rev).as_slice(), data, "revision key round trip");
    }
});
