//! Writing a bbolt file in one pass: buckets are built bottom-up from keys
//! given in order, each page written as soon as it is full, so memory holds
//! one page per tree level (never the data). Meta pages come first in the
//! file but are known last: they are written at the end, by seeking back.
//! Every bucket gets pages of its own (none inline), which bbolt reads as
//! it reads its own.

use std::io::{self, Seek, SeekFrom, Write};

use super::{
    page_header, BucketHeader, Meta, BRANCH_PAGE, BUCKET_LEAF, ELEMENT, FREELIST_PAGE, LEAF_PAGE,
    META_PAGE, PAGE_HEADER, PAGE_SIZE,
};

/// bbolt's limits on a key and a value.
pub const MAX_KEY: usize = 32768;
pub const MAX_VALUE: usize = (1 << 31) - 2;

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("bbolt: keys must be given in increasing order")]
    Unordered,
    #[error("bbolt: key required")]
    EmptyKey,
    #[error("bbolt: key too large")]
    KeyTooLarge,
    #[error("bbolt: value too large")]
    ValueTooLarge,
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// The file being written: pages are allocated in order from page 2.
pub struct Writer<W: Write + Seek> {
    out: W,
    next: u64,
}

impl<W: Write + Seek> Writer<W> {
    pub fn new(mut out: W) -> Result<Self, WriteError> {
        out.seek(SeekFrom::Start(2 * PAGE_SIZE as u64))?;
        Ok(Writer { out, next: 2 })
    }

    /// Write one page (and its overflow) with `body` after the header.
    fn page(&mut self, flags: u16, count: u16, body: &[u8]) -> Result<u64, WriteError> {
        let len = PAGE_HEADER + body.len();
        let pages = len.div_ceil(PAGE_SIZE).max(1);
        let overflow = u32::try_from(pages - 1).map_err(|_| WriteError::ValueTooLarge)?;
        let id = self.next;
        self.out
            .write_all(&page_header(id, flags, count, overflow))?;
        self.out.write_all(body)?;
        self.out.write_all(&vec![0u8; pages * PAGE_SIZE - len])?;
        self.next += pages as u64;
        Ok(id)
    }

    /// Finish the file with `root` (the root bucket, built with `Bucket`):
    /// an empty freelist page, then both meta pages. Returns the output.
    pub fn finish(mut self, root: BucketHeader) -> Result<W, WriteError> {
        let freelist = self.page(FREELIST_PAGE, 0, &[])?;
        let pgid = self.next;
        for txid in [0u64, 1] {
            let meta = Meta {
                page_size: PAGE_SIZE as u32,
                flags: 0,
                root,
                freelist,
                pgid,
                txid,
            };
            let mut page = vec![0u8; PAGE_SIZE];
            page[..PAGE_HEADER].copy_from_slice(&page_header(txid, META_PAGE, 0, 0));
            page[PAGE_HEADER..PAGE_HEADER + super::META_SIZE].copy_from_slice(&meta.encode());
            self.out.seek(SeekFrom::Start(txid * PAGE_SIZE as u64))?;
            self.out.write_all(&page)?;
        }
        self.out.seek(SeekFrom::Start(pgid * PAGE_SIZE as u64))?;
        self.out.flush()?;
        Ok(self.out)
    }
}

/// One level of a tree being built: the elements of the page not yet
/// written.
#[derive(Default)]
struct Level {
    /// (flags, key, value) for leaves; (0, key, child pgid) for branches.
    elements: Vec<(u32, Vec<u8>, Vec<u8>)>,
    /// Bytes the page would take.
    bytes: usize,
    /// Pages of this level written so far.
    written: usize,
}

/// A bucket being built from keys in increasing order.
pub struct Bucket {
    /// Level 0 holds leaf elements, the others branch elements.
    levels: Vec<Level>,
    last: Option<Vec<u8>>,
}

impl Default for Bucket {
    fn default() -> Self {
        Self::new()
    }
}

impl Bucket {
    pub fn new() -> Bucket {
        Bucket {
            levels: vec![Level::default()],
            last: None,
        }
    }

    /// Add a key and its value; keys must come in increasing order.
    pub fn put<W: Write + Seek>(
        &mut self,
        w: &mut Writer<W>,
        key: &[u8],
        value: &[u8],
    ) -> Result<(), WriteError> {
        self.add(w, 0, key, value)
    }

    /// Add a sub-bucket (built and finished before) under `name`.
    pub fn put_bucket<W: Write + Seek>(
        &mut self,
        w: &mut Writer<W>,
        name: &[u8],
        header: BucketHeader,
    ) -> Result<(), WriteError> {
        self.add(w, BUCKET_LEAF, name, &header.encode())
    }

    fn add<W: Write + Seek>(
        &mut self,
        w: &mut Writer<W>,
        flags: u32,
        key: &[u8],
        value: &[u8],
    ) -> Result<(), WriteError> {
        if key.is_empty() {
            return Err(WriteError::EmptyKey);
        }
        if key.len() > MAX_KEY {
            return Err(WriteError::KeyTooLarge);
        }
        if value.len() > MAX_VALUE {
            return Err(WriteError::ValueTooLarge);
        }
        if self.last.as_deref().is_some_and(|l| l >= key) {
            return Err(WriteError::Unordered);
        }
        self.last = Some(key.to_vec());
        self.push(w, 0, (flags, key.to_vec(), value.to_vec()))
    }

    /// Add an element to `level`, writing that level's page first if the
    /// element would not fit in it.
    fn push<W: Write + Seek>(
        &mut self,
        w: &mut Writer<W>,
        level: usize,
        element: (u32, Vec<u8>, Vec<u8>),
    ) -> Result<(), WriteError> {
        let size = ELEMENT + element.1.len() + if level == 0 { element.2.len() } else { 0 };
        let l = &self.levels[level];
        if !l.elements.is_empty()
            && (PAGE_HEADER + l.bytes + size > PAGE_SIZE || l.elements.len() == u16::MAX as usize)
        {
            self.flush(w, level)?;
        }
        let l = &mut self.levels[level];
        l.bytes += size;
        l.elements.push(element);
        Ok(())
    }

    /// Write `level`'s page and add it to the level above.
    fn flush<W: Write + Seek>(
        &mut self,
        w: &mut Writer<W>,
        level: usize,
    ) -> Result<(), WriteError> {
        let l = &mut self.levels[level];
        let elements = std::mem::take(&mut l.elements);
        l.bytes = 0;
        l.written += 1;
        let first = elements.first().map(|e| e.1.clone()).unwrap_or_default();
        let pgid = write_elements(w, level == 0, &elements)?;
        if self.levels.len() == level + 1 {
            self.levels.push(Level::default());
        }
        self.push(w, level + 1, (0, first, pgid.to_le_bytes().to_vec()))
    }

    /// An element with bbolt's bucket flag and any value (an inline bucket).
    #[cfg(test)]
    pub(crate) fn add_raw_for_test<W: Write + Seek>(
        &mut self,
        w: &mut Writer<W>,
        key: &[u8],
        value: &[u8],
    ) {
        if let Err(e) = self.add(w, BUCKET_LEAF, key, value) {
            panic!("{e}");
        }
    }

    /// Write what is left and return the bucket's header.
    pub fn finish<W: Write + Seek>(
        mut self,
        w: &mut Writer<W>,
    ) -> Result<BucketHeader, WriteError> {
        let mut level = 0;
        loop {
            let l = &self.levels[level];
            if level > 0 && l.written == 0 && l.elements.len() == 1 {
                let root = super::u64_at(&l.elements[0].2, 0).unwrap_or_default();
                return Ok(BucketHeader { root, sequence: 0 });
            }
            self.flush(w, level)?;
            level += 1;
        }
    }
}

/// Write one leaf or branch page holding `elements`.
fn write_elements<W: Write + Seek>(
    w: &mut Writer<W>,
    leaf: bool,
    elements: &[(u32, Vec<u8>, Vec<u8>)],
) -> Result<u64, WriteError> {
    let count = elements.len();
    let mut head = Vec::with_capacity(count * ELEMENT);
    let mut data = Vec::new();
    for (i, (flags, key, value)) in elements.iter().enumerate() {
        // pos: from this element to its key.
        let pos = (count - i) * ELEMENT + data.len();
        let pos = u32::try_from(pos).map_err(|_| WriteError::ValueTooLarge)?;
        if leaf {
            head.extend_from_slice(&flags.to_le_bytes());
            head.extend_from_slice(&pos.to_le_bytes());
            head.extend_from_slice(&(key.len() as u32).to_le_bytes());
            head.extend_from_slice(&(value.len() as u32).to_le_bytes());
            data.extend_from_slice(key);
            data.extend_from_slice(value);
        } else {
            head.extend_from_slice(&pos.to_le_bytes());
            head.extend_from_slice(&(key.len() as u32).to_le_bytes());
            head.extend_from_slice(value); // the child's pgid
            data.extend_from_slice(key);
        }
    }
    head.extend_from_slice(&data);
    let flags = if leaf { LEAF_PAGE } else { BRANCH_PAGE };
    w.page(flags, count as u16, &head)
}
