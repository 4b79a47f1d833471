//! bbolt's file format, the database etcd keeps its state in and saves as
//! its snapshot: constants, the meta page and the bucket header shared by
//! `write` (a streaming B+tree builder) and `read` (a bounded reader that
//! answers every file, corrupt ones included, with data or an error).
//!
//! A file is pages of `page_size` bytes. Pages 0 and 1 are meta pages (the
//! valid one with the higher txid wins), then a freelist page, branch and
//! leaf pages. Every page starts with a 16-byte header: id u64, flags u16,
//! count u16, overflow u32 (the page continues over `overflow` more pages).
//! Integers are little-endian (bbolt writes the machine's order; every
//! platform etcd ships for is little-endian).

pub mod read;
pub mod write;

pub const MAGIC: u32 = 0xED0C_DAED;
pub const VERSION: u32 = 2;
pub const PAGE_SIZE: usize = 4096;
pub const PAGE_HEADER: usize = 16;
/// Leaf elements (flags, pos, ksize, vsize: u32 each) and branch elements
/// (pos, ksize: u32, pgid: u64) are both 16 bytes.
pub const ELEMENT: usize = 16;

pub const BRANCH_PAGE: u16 = 0x01;
pub const LEAF_PAGE: u16 = 0x02;
pub const META_PAGE: u16 = 0x04;
pub const FREELIST_PAGE: u16 = 0x10;

/// A leaf element whose value is a sub-bucket's header.
pub const BUCKET_LEAF: u32 = 0x01;
/// The meta's freelist page id when the freelist is not stored.
pub const NO_FREELIST: u64 = u64::MAX;

/// Meta page body: magic, version, page size, flags (u32 each), root
/// bucket (16), freelist, high-water pgid, txid, checksum (u64 each).
pub const META_SIZE: usize = 64;
const CHECKSUM_AT: usize = 56;

/// A bucket's header, the value of its leaf element: the root page (0 for
/// an inline bucket, whose page follows the header) and its sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BucketHeader {
    pub root: u64,
    pub sequence: u64,
}

impl BucketHeader {
    pub const SIZE: usize = 16;

    pub fn encode(&self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&self.root.to_le_bytes());
        b[8..].copy_from_slice(&self.sequence.to_le_bytes());
        b
    }

    pub fn decode(b: &[u8]) -> Option<BucketHeader> {
        Some(BucketHeader {
            root: u64_at(b, 0)?,
            sequence: u64_at(b, 8)?,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    pub page_size: u32,
    pub flags: u32,
    pub root: BucketHeader,
    pub freelist: u64,
    /// The high-water mark: pages at or above it are not part of the file.
    pub pgid: u64,
    pub txid: u64,
}

impl Meta {
    pub fn encode(&self) -> [u8; META_SIZE] {
        let mut b = [0u8; META_SIZE];
        b[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        b[4..8].copy_from_slice(&VERSION.to_le_bytes());
        b[8..12].copy_from_slice(&self.page_size.to_le_bytes());
        b[12..16].copy_from_slice(&self.flags.to_le_bytes());
        b[16..32].copy_from_slice(&self.root.encode());
        b[32..40].copy_from_slice(&self.freelist.to_le_bytes());
        b[40..48].copy_from_slice(&self.pgid.to_le_bytes());
        b[48..56].copy_from_slice(&self.txid.to_le_bytes());
        let sum = fnv1a64(&b[..CHECKSUM_AT]);
        b[CHECKSUM_AT..].copy_from_slice(&sum.to_le_bytes());
        b
    }

    /// A meta page body, checked as bbolt's `meta.validate` does.
    pub fn decode(b: &[u8]) -> Result<Meta, &'static str> {
        if b.len() < META_SIZE {
            return Err("meta page too short");
        }
        if u32_at(b, 0) != Some(MAGIC) {
            return Err("invalid database");
        }
        if u32_at(b, 4) != Some(VERSION) {
            return Err("version mismatch");
        }
        if u64_at(b, CHECKSUM_AT) != Some(fnv1a64(&b[..CHECKSUM_AT])) {
            return Err("checksum error");
        }
        let field = |at| u64_at(b, at).ok_or("meta page too short");
        Ok(Meta {
            page_size: u32_at(b, 8).ok_or("meta page too short")?,
            flags: u32_at(b, 12).ok_or("meta page too short")?,
            root: BucketHeader::decode(&b[16..32]).ok_or("meta page too short")?,
            freelist: field(32)?,
            pgid: field(40)?,
            txid: field(48)?,
        })
    }
}

/// FNV-1a, 64 bits: the meta page checksum.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

pub(crate) fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(
        b.get(at..at.checked_add(2)?)?.try_into().ok()?,
    ))
}

pub(crate) fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        b.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}

pub(crate) fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        b.get(at..at.checked_add(8)?)?.try_into().ok()?,
    ))
}

/// A page header.
pub(crate) fn page_header(id: u64, flags: u16, count: u16, overflow: u32) -> [u8; PAGE_HEADER] {
    let mut h = [0u8; PAGE_HEADER];
    h[..8].copy_from_slice(&id.to_le_bytes());
    h[8..10].copy_from_slice(&flags.to_le_bytes());
    h[10..12].copy_from_slice(&count.to_le_bytes());
    h[12..16].copy_from_slice(&overflow.to_le_bytes());
    h
}

#[cfg(test)]
mod tests;
