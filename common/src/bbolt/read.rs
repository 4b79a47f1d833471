//! Reading a bbolt file without trusting it: pages are read with bounds
//! checked against the file and the meta's high-water mark, every offset
//! and count inside a page against the page, tree depth is bounded, a page
//! (overflow pages included) is visited at most once per walk (no cycle or
//! shared subtree repeats work, pages in memory never overlap) and the
//! whole `Db` reads at most a few times its page count. Any
//! violation is an error naming the page, never a panic.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use super::{
    u16_at, u32_at, u64_at, BucketHeader, Meta, BRANCH_PAGE, BUCKET_LEAF, ELEMENT, LEAF_PAGE,
    NO_FREELIST, PAGE_HEADER, PAGE_SIZE,
};

/// Deepest B+tree a walk follows (bbolt's trees are a few levels deep).
const MAX_DEPTH: usize = 64;
/// Sub-buckets nested deeper than this are refused.
pub const MAX_NESTING: usize = 64;
/// Page sizes accepted in a meta page.
const MIN_PAGE: u32 = 512;
const MAX_PAGE: u32 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("file size too small")]
    TooSmall,
    #[error("invalid database: {0}")]
    Meta(&'static str),
    #[error("corrupt database: page {pgid}: {what}")]
    Corrupt { pgid: u64, what: String },
    #[error("corrupt database: too many page reads (pages shared between trees)")]
    Budget,
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

fn corrupt(pgid: u64, what: impl Into<String>) -> ReadError {
    ReadError::Corrupt {
        pgid,
        what: what.into(),
    }
}

/// A bucket to walk: its root page, or its inline page (root 0).
#[derive(Debug, Clone)]
pub struct BucketRef {
    pub header: BucketHeader,
    inline: Option<Arc<[u8]>>,
    nesting: usize,
}

/// One element of a bucket.
pub enum Value<'a> {
    Plain(&'a [u8]),
    Bucket(BucketRef),
}

/// What `Db::for_each` calls with each key and value.
pub type Visitor<'f, E> = dyn FnMut(&[u8], Value<'_>) -> Result<(), E> + 'f;

/// An open bbolt file.
pub struct Db {
    file: File,
    len: u64,
    page_size: usize,
    meta: Meta,
    reads_left: std::cell::Cell<u64>,
}

impl Db {
    pub fn open(path: &Path) -> Result<Db, ReadError> {
        let file = File::open(path)?;
        let len = file.metadata()?.len();
        let mut first = vec![0u8; PAGE_HEADER + super::META_SIZE];
        if len < first.len() as u64 {
            return Err(ReadError::TooSmall);
        }
        file.read_exact_at(&mut first, 0)?;
        let meta0 = Meta::decode(&first[PAGE_HEADER..]);
        // bbolt takes the page size from meta 0, else the OS page size.
        let page_size = match &meta0 {
            Ok(m) if (MIN_PAGE..=MAX_PAGE).contains(&m.page_size) => m.page_size as usize,
            Ok(_) => return Err(ReadError::Meta("invalid page size")),
            Err(_) => PAGE_SIZE,
        };
        if len < 2 * page_size as u64 {
            return Err(ReadError::TooSmall);
        }
        file.read_exact_at(&mut first, page_size as u64)?;
        let meta1 = Meta::decode(&first[PAGE_HEADER..]);
        let meta = match (meta0, meta1) {
            (Ok(a), Ok(b)) => {
                if b.txid > a.txid && b.page_size == a.page_size {
                    b
                } else {
                    a
                }
            }
            (Ok(a), Err(_)) => a,
            (Err(_), Ok(b)) if b.page_size as usize == page_size => b,
            (Err(e), _) => return Err(ReadError::Meta(e)),
        };
        if meta.pgid < 2 || meta.pgid.saturating_mul(page_size as u64) > len {
            return Err(ReadError::Meta(
                "high-water mark beyond the end of the file",
            ));
        }
        if meta.root.root < 2 || meta.root.root >= meta.pgid {
            return Err(ReadError::Meta("root bucket page out of range"));
        }
        if meta.freelist != NO_FREELIST && (meta.freelist < 2 || meta.freelist >= meta.pgid) {
            return Err(ReadError::Meta("freelist page out of range"));
        }
        Ok(Db {
            file,
            len,
            page_size,
            meta,
            reads_left: std::cell::Cell::new(meta.pgid.saturating_mul(4).saturating_add(1024)),
        })
    }

    pub fn meta(&self) -> &Meta {
        &self.meta
    }

    /// bbolt's `Tx.Size`: the bytes up to the high-water mark.
    pub fn size(&self) -> u64 {
        self.meta.pgid * self.page_size as u64
    }

    pub fn root(&self) -> BucketRef {
        BucketRef {
            header: self.meta.root,
            inline: None,
            nesting: 0,
        }
    }

    /// The sub-bucket `name` of `parent`, if there is one.
    pub fn bucket(&self, parent: &BucketRef, name: &[u8]) -> Result<Option<BucketRef>, ReadError> {
        let mut found = None;
        self.for_each(parent, &mut |k, v| {
            if k == name {
                if let Value::Bucket(b) = v {
                    found = Some(b);
                }
            }
            Ok::<(), ReadError>(())
        })?;
        Ok(found)
    }

    /// Every element of `bucket` in stored order.
    pub fn for_each<E: From<ReadError>>(
        &self,
        bucket: &BucketRef,
        f: &mut Visitor<'_, E>,
    ) -> Result<(), E> {
        if let Some(page) = &bucket.inline {
            return self.visit_leaf(0, page, bucket.nesting, f);
        }
        let mut visited = vec![0u64; (self.meta.pgid as usize).div_ceil(64)];
        // (pgid, page, next element) for the branch pages on the path.
        let mut stack: Vec<(u64, Vec<u8>, usize)> = Vec::new();
        let mut next = Some(bucket.header.root);
        loop {
            if let Some(pgid) = next.take() {
                let bit = &mut visited[(pgid / 64) as usize];
                if *bit & (1 << (pgid % 64)) != 0 {
                    return Err(corrupt(pgid, "page reached twice").into());
                }
                *bit |= 1 << (pgid % 64);
                let page = self.page(pgid)?;
                // Overflow pages belong to this page alone: pages held on
                // the stack never overlap, so they never add up past the
                // file's size.
                for p in pgid + 1..pgid + (page.len() / self.page_size) as u64 {
                    let bit = &mut visited[(p / 64) as usize];
                    if *bit & (1 << (p % 64)) != 0 {
                        return Err(corrupt(pgid, format!("overflow overlaps page {p}")).into());
                    }
                    *bit |= 1 << (p % 64);
                }
                let flags = u16_at(&page, 8).unwrap_or(0);
                if flags & LEAF_PAGE != 0 {
                    self.visit_leaf(pgid, &page, bucket.nesting, f)?;
                } else if flags & BRANCH_PAGE != 0 {
                    if stack.len() >= MAX_DEPTH {
                        return Err(corrupt(pgid, "tree too deep").into());
                    }
                    stack.push((pgid, page, 0));
                } else {
                    return Err(
                        corrupt(pgid, format!("not a branch or leaf (flags {flags:#x})")).into(),
                    );
                }
            }
            let Some((pgid, page, i)) = stack.last_mut() else {
                return Ok(());
            };
            let count = element_count(*pgid, page)?;
            if *i >= count {
                stack.pop();
                continue;
            }
            let at = PAGE_HEADER + *i * ELEMENT;
            *i += 1;
            let child = u64_at(page, at + 8).ok_or_else(|| corrupt(*pgid, "short element"))?;
            if child < 2 || child >= self.meta.pgid {
                return Err(corrupt(*pgid, format!("child page {child} out of range")).into());
            }
            next = Some(child);
        }
    }

    fn visit_leaf<E: From<ReadError>>(
        &self,
        pgid: u64,
        page: &[u8],
        nesting: usize,
        f: &mut Visitor<'_, E>,
    ) -> Result<(), E> {
        let flags = u16_at(page, 8).unwrap_or(0);
        if flags & LEAF_PAGE == 0 {
            return Err(corrupt(pgid, "inline bucket page is not a leaf").into());
        }
        let count = element_count(pgid, page)?;
        for i in 0..count {
            let at = PAGE_HEADER + i * ELEMENT;
            let field = |o: usize| u32_at(page, at + o).map(|v| v as usize);
            let (Some(eflags), Some(pos), Some(ksize), Some(vsize)) =
                (field(0), field(4), field(8), field(12))
            else {
                return Err(corrupt(pgid, "short element").into());
            };
            let start = at.checked_add(pos);
            let kend = start.and_then(|s| s.checked_add(ksize));
            let vend = kend.and_then(|k| k.checked_add(vsize));
            let (Some(start), Some(kend), Some(vend)) = (start, kend, vend) else {
                return Err(corrupt(pgid, "element out of range").into());
            };
            let (Some(key), Some(value)) = (page.get(start..kend), page.get(kend..vend)) else {
                return Err(corrupt(pgid, format!("element {i} out of the page")).into());
            };
            if eflags as u32 & BUCKET_LEAF != 0 {
                let sub = self.sub_bucket(pgid, value, nesting)?;
                f(key, Value::Bucket(sub))?;
            } else {
                f(key, Value::Plain(value))?;
            }
        }
        Ok(())
    }

    fn sub_bucket(&self, pgid: u64, value: &[u8], nesting: usize) -> Result<BucketRef, ReadError> {
        if nesting >= MAX_NESTING {
            return Err(corrupt(pgid, "buckets nested too deep"));
        }
        let header =
            BucketHeader::decode(value).ok_or_else(|| corrupt(pgid, "short bucket header"))?;
        let inline = if header.root == 0 {
            let page = &value[BucketHeader::SIZE..];
            if page.len() < PAGE_HEADER {
                return Err(corrupt(pgid, "short inline bucket"));
            }
            Some(Arc::from(page))
        } else if header.root < 2 || header.root >= self.meta.pgid {
            return Err(corrupt(
                pgid,
                format!("bucket root {} out of range", header.root),
            ));
        } else {
            None
        };
        Ok(BucketRef {
            header,
            inline,
            nesting: nesting + 1,
        })
    }

    /// Page `pgid` with its overflow pages.
    fn page(&self, pgid: u64) -> Result<Vec<u8>, ReadError> {
        let left = self.reads_left.get();
        if left == 0 {
            return Err(ReadError::Budget);
        }
        self.reads_left.set(left - 1);
        let ps = self.page_size as u64;
        let mut header = [0u8; PAGE_HEADER];
        self.file.read_exact_at(&mut header, pgid * ps)?;
        if u64_at(&header, 0) != Some(pgid) {
            return Err(corrupt(pgid, "page id mismatch"));
        }
        let overflow = u64::from(u32_at(&header, 12).unwrap_or(0));
        let end = pgid + overflow + 1;
        if end > self.meta.pgid || end.saturating_mul(ps) > self.len {
            return Err(corrupt(
                pgid,
                format!("overflow {overflow} beyond the file"),
            ));
        }
        // Every page read counts, overflow pages included.
        let left = self.reads_left.get();
        if left < overflow {
            return Err(ReadError::Budget);
        }
        self.reads_left.set(left - overflow);
        let mut page = vec![0u8; ((overflow + 1) * ps) as usize];
        self.file.read_exact_at(&mut page, pgid * ps)?;
        Ok(page)
    }
}

/// A page's element count, checked against its size.
fn element_count(pgid: u64, page: &[u8]) -> Result<usize, ReadError> {
    let count = usize::from(u16_at(page, 10).unwrap_or(0));
    if PAGE_HEADER + count * ELEMENT > page.len() {
        return Err(corrupt(
            pgid,
            format!("{count} elements do not fit the page"),
        ));
    }
    Ok(count)
}
