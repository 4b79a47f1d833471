//! On-disk key layout of the MVCC store.
//!
//! The key index stores `escape(user_key) ++ !main ++ !sub`: `escape` keeps
//! byte order and is prefix-free (0x00 → 0x00 0xFF, terminated by 0x00 0x01),
//! and the inverted big-endian revision puts a key's newest revision first,
//! so "latest at or below revision R" is one seek and key ranges are scans.
//! The revision log stores `main ++ sub` (big-endian) → escaped user key.

/// Bytes of revision suffix after the escaped user key.
pub const REV_SUFFIX: usize = 16;

/// A (main, sub) revision: `main` is the etcd revision, `sub` orders the
/// changes inside one revision (one txn).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Rev {
    pub main: i64,
    pub sub: i64,
}

/// Order-preserving, prefix-free encoding of a user key.
pub fn escape(key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() + 2 + REV_SUFFIX);
    escape_into(key, &mut out);
    out.extend_from_slice(&[0x00, 0x01]);
    out
}

/// The escaped bytes without the terminator: every escaped key that decodes
/// to a user key >= `key` sorts at or after this, every smaller one before.
pub fn escape_bound(key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() + 2);
    escape_into(key, &mut out);
    out
}

fn escape_into(key: &[u8], out: &mut Vec<u8>) {
    for &b in key {
        out.push(b);
        if b == 0 {
            out.push(0xFF);
        }
    }
}

/// Decode an escaped user key (terminator included); `None` if malformed.
pub fn unescape(enc: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(enc.len());
    let mut i = 0;
    while i < enc.len() {
        let b = enc[i];
        if b == 0 {
            match enc.get(i + 1) {
                Some(0xFF) => out.push(0),
                Some(0x01) if i + 2 == enc.len() => return Some(out),
                _ => return None,
            }
            i += 2;
        } else {
            out.push(b);
            i += 1;
        }
    }
    None
}

/// Key-index key for `escaped` (from `escape`) at `rev`.
pub fn index_key(escaped: &[u8], rev: Rev) -> Vec<u8> {
    let mut k = Vec::with_capacity(escaped.len() + REV_SUFFIX);
    k.extend_from_slice(escaped);
    k.extend_from_slice(&(!(rev.main as u64)).to_be_bytes());
    k.extend_from_slice(&(!(rev.sub as u64)).to_be_bytes());
    k
}

/// Split a key-index key into (escaped user key, revision).
pub fn split_index_key(k: &[u8]) -> Option<(&[u8], Rev)> {
    let cut = k.len().checked_sub(REV_SUFFIX)?;
    let (enc, suffix) = k.split_at(cut);
    let main = !u64::from_be_bytes(suffix[..8].try_into().ok()?);
    let sub = !u64::from_be_bytes(suffix[8..].try_into().ok()?);
    Some((
        enc,
        Rev {
            main: main as i64,
            sub: sub as i64,
        },
    ))
}

/// Revision-log key: sorts by (main, sub).
pub fn rev_key(rev: Rev) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&(rev.main as u64).to_be_bytes());
    k[8..].copy_from_slice(&(rev.sub as u64).to_be_bytes());
    k
}

pub fn parse_rev_key(k: &[u8]) -> Option<Rev> {
    if k.len() != 16 {
        return None;
    }
    let main = u64::from_be_bytes(k[..8].try_into().ok()?) as i64;
    let sub = u64::from_be_bytes(k[8..].try_into().ok()?) as i64;
    Some(Rev { main, sub })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_preserves_order_and_round_trips() {
        let keys: Vec<&[u8]> = vec![
            b"",
            b"\x00",
            b"\x00\x00",
            b"\x00\x01",
            b"a",
            b"a\x00",
            b"a\x00b",
            b"ab",
            b"a\xff",
            b"b",
        ];
        for w in keys.windows(2) {
            assert!(escape(w[0]) < escape(w[1]), "{:?} < {:?}", w[0], w[1]);
        }
        for k in &keys {
            assert_eq!(unescape(&escape(k)).as_deref(), Some(*k));
        }
        assert_eq!(unescape(b"a\x00"), None);
        assert_eq!(unescape(b"a\x00\x02"), None);
    }

    #[test]
    fn bound_splits_smaller_from_larger_keys() {
        let end = b"b\x00c";
        let bound = escape_bound(end);
        for k in [&b"b"[..], b"b\x00", b"b\x00b", b"a\xff\xff"] {
            assert!(escape(k) < bound, "{k:?}");
        }
        for k in [&b"b\x00c"[..], b"b\x00c\x00", b"b\x00d", b"c"] {
            assert!(escape(k) >= bound, "{k:?}");
        }
    }

    #[test]
    fn newest_revision_sorts_first_within_a_key() {
        let e = escape(b"k");
        let newer = index_key(&e, Rev { main: 5, sub: 0 });
        let older = index_key(&e, Rev { main: 4, sub: 3 });
        let older_sub = index_key(&e, Rev { main: 5, sub: 1 });
        assert!(older_sub < newer);
        assert!(newer < older);
        assert!(older < index_key(&escape(b"k\x00"), Rev { main: 9, sub: 0 }));
        assert_eq!(
            split_index_key(&newer),
            Some((&e[..], Rev { main: 5, sub: 0 }))
        );
        assert_eq!(
            parse_rev_key(&rev_key(Rev { main: 7, sub: 2 })),
            Some(Rev { main: 7, sub: 2 })
        );
    }
}
