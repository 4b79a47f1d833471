//! The value stored under each key-index entry: one revision of one key.
//! Layout: flags (1 byte, bit 0 = tombstone), create_revision, version,
//! lease (each i64 big-endian), then the value bytes. Decoding checks the
//! length and never panics on corrupt input.

use crate::keys::Rev;
use common::proto::mvccpb::KeyValue;

const HEADER: usize = 25;
const TOMBSTONE: u8 = 1;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub tombstone: bool,
    pub create_revision: i64,
    pub version: i64,
    pub lease: i64,
    pub value: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
#[error("corrupt MVCC record ({0} bytes)")]
pub struct CorruptRecord(pub usize);

impl Record {
    pub fn tombstone() -> Self {
        Record {
            tombstone: true,
            create_revision: 0,
            version: 0,
            lease: 0,
            value: Vec::new(),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER + self.value.len());
        out.push(if self.tombstone { TOMBSTONE } else { 0 });
        out.extend_from_slice(&self.create_revision.to_be_bytes());
        out.extend_from_slice(&self.version.to_be_bytes());
        out.extend_from_slice(&self.lease.to_be_bytes());
        out.extend_from_slice(&self.value);
        out
    }

    pub fn decode(b: &[u8]) -> Result<Self, CorruptRecord> {
        if b.len() < HEADER || b[0] & !TOMBSTONE != 0 {
            return Err(CorruptRecord(b.len()));
        }
        let i64_at = |at: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&b[at..at + 8]);
            i64::from_be_bytes(w)
        };
        Ok(Record {
            tombstone: b[0] & TOMBSTONE != 0,
            create_revision: i64_at(1),
            version: i64_at(9),
            lease: i64_at(17),
            value: b[HEADER..].to_vec(),
        })
    }

    /// Whether a stored entry is a tombstone, without copying the value.
    pub fn is_tombstone(b: &[u8]) -> bool {
        b.first().is_some_and(|f| f & TOMBSTONE != 0)
    }

    pub fn into_kv(self, key: Vec<u8>, rev: Rev) -> KeyValue {
        KeyValue {
            key,
            create_revision: self.create_revision,
            mod_revision: rev.main,
            version: self.version,
            value: self.value,
            lease: self.lease,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_corruption() {
        let r = Record {
            tombstone: false,
            create_revision: 3,
            version: 2,
            lease: 99,
            value: b"v".to_vec(),
        };
        assert_eq!(Record::decode(&r.encode()).unwrap(), r);
        let t = Record::tombstone();
        assert!(Record::is_tombstone(&t.encode()));
        assert!(Record::decode(&[0u8; 5]).is_err());
        assert!(Record::decode(&[0x80; 30]).is_err());
    }
}
