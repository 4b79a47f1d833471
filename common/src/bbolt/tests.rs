//! Property tests: random bucket trees written by `write` read back the
//! same by `read`; corrupted files give errors, never panics.

use std::collections::BTreeMap;
use std::io::Cursor;

use super::read::{Db, Value};
use super::write::{Bucket, Writer};
use super::*;

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn bytes(&mut self, max: u64) -> Vec<u8> {
        let len = self.below(max + 1);
        (0..len).map(|_| self.next() as u8).collect()
    }
}

#[derive(Debug, PartialEq)]
enum Node {
    Value(Vec<u8>),
    Bucket(BTreeMap<Vec<u8>, Node>),
}

fn random_tree(rng: &mut Rng, depth: u32) -> BTreeMap<Vec<u8>, Node> {
    let mut tree = BTreeMap::new();
    let n = match rng.below(4) {
        0 => 0,
        1 => rng.below(5),
        2 => rng.below(300),
        _ => rng.below(3000),
    };
    for _ in 0..n {
        let mut key = rng.bytes(40);
        key.push(1); // never empty
                     // Sub-buckets only in small buckets, so trees stay small.
        let node = if depth < 3 && n < 20 && rng.below(4) == 0 {
            Node::Bucket(random_tree(rng, depth + 1))
        } else {
            // Mostly small values, some spanning several pages.
            let max = if rng.below(50) == 0 { 20_000 } else { 100 };
            Node::Value(rng.bytes(max))
        };
        tree.insert(key, node);
    }
    tree
}

fn write_tree<W: std::io::Write + std::io::Seek>(
    w: &mut Writer<W>,
    tree: &BTreeMap<Vec<u8>, Node>,
) -> BucketHeader {
    let mut b = Bucket::new();
    for (k, node) in tree {
        match node {
            Node::Value(v) => b.put(w, k, v).unwrap(),
            Node::Bucket(sub) => {
                let h = write_tree(w, sub);
                b.put_bucket(w, k, h).unwrap();
            }
        }
    }
    b.finish(w).unwrap()
}

fn read_tree(db: &Db, b: &read::BucketRef) -> Result<BTreeMap<Vec<u8>, Node>, read::ReadError> {
    let mut out = BTreeMap::new();
    let mut subs = Vec::new();
    db.for_each(b, &mut |k, v| {
        match v {
            Value::Plain(v) => {
                out.insert(k.to_vec(), Node::Value(v.to_vec()));
            }
            Value::Bucket(r) => subs.push((k.to_vec(), r)),
        }
        Ok::<(), read::ReadError>(())
    })?;
    for (k, r) in subs {
        out.insert(k, Node::Bucket(read_tree(db, &r)?));
    }
    Ok(out)
}

fn file_of(tree: &BTreeMap<Vec<u8>, Node>) -> Vec<u8> {
    let mut w = Writer::new(Cursor::new(Vec::new())).unwrap();
    let root = write_tree(&mut w, tree);
    w.finish(root).unwrap().into_inner()
}

fn open(bytes: &[u8]) -> (tempfile::TempDir, Result<Db, read::ReadError>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    std::fs::write(&path, bytes).unwrap();
    let db = Db::open(&path);
    (dir, db)
}

#[test]
fn random_trees_round_trip() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for _ in 0..40 {
        let tree = random_tree(&mut rng, 0);
        let bytes = file_of(&tree);
        assert_eq!(bytes.len() % PAGE_SIZE, 0);
        let (_dir, db) = open(&bytes);
        let db = db.unwrap();
        assert_eq!(db.size(), bytes.len() as u64);
        assert_eq!(read_tree(&db, &db.root()).unwrap(), tree);
    }
}

#[test]
fn out_of_order_keys_are_refused() {
    let mut w = Writer::new(Cursor::new(Vec::new())).unwrap();
    let mut b = Bucket::new();
    b.put(&mut w, b"b", b"").unwrap();
    assert!(b.put(&mut w, b"a", b"").is_err());
    assert!(b.put(&mut w, b"b", b"").is_err());
    assert!(b.put(&mut w, b"", b"").is_err());
}

#[test]
fn inline_buckets_are_read() {
    // A root leaf holding one inline bucket ("in") with one key, laid out
    // by hand as bbolt writes small buckets.
    let mut inline = BucketHeader::default().encode().to_vec();
    let (k, v) = (b"key", b"value");
    inline.extend_from_slice(&page_header(0, LEAF_PAGE, 1, 0));
    for f in [0u32, ELEMENT as u32, k.len() as u32, v.len() as u32] {
        inline.extend_from_slice(&f.to_le_bytes());
    }
    inline.extend_from_slice(k);
    inline.extend_from_slice(v);
    let mut w = Writer::new(Cursor::new(Vec::new())).unwrap();
    let mut root = Bucket::new();
    root.add_raw_for_test(&mut w, b"in", &inline);
    let root = root.finish(&mut w).unwrap();
    let bytes = w.finish(root).unwrap().into_inner();
    let (_dir, db) = open(&bytes);
    let db = db.unwrap();
    let tree = read_tree(&db, &db.root()).unwrap();
    let mut want = BTreeMap::new();
    want.insert(k.to_vec(), Node::Value(v.to_vec()));
    let mut top = BTreeMap::new();
    top.insert(b"in".to_vec(), Node::Bucket(want));
    assert_eq!(tree, top);
}

#[test]
fn corrupt_files_give_errors_not_panics() {
    let mut rng = Rng(42);
    let tree = random_tree(&mut rng, 0);
    let good = file_of(&tree);
    for round in 0..400 {
        let mut bytes = good.clone();
        match round % 4 {
            // Flip random bytes anywhere.
            0 => {
                for _ in 0..1 + rng.below(8) {
                    let at = rng.below(bytes.len() as u64) as usize;
                    bytes[at] = rng.next() as u8;
                }
            }
            // Overwrite a page header field (ids, counts, overflow).
            1 => {
                let page = rng.below((bytes.len() / PAGE_SIZE) as u64) as usize;
                let at = page * PAGE_SIZE + rng.below(16) as usize;
                bytes[at] = rng.next() as u8;
            }
            // Overwrite element fields of a page.
            2 => {
                let page = 2 + rng.below((bytes.len() / PAGE_SIZE - 2) as u64) as usize;
                let at = page * PAGE_SIZE + 16 + rng.below(256) as usize;
                bytes[at] = 0xFF;
            }
            // Truncate.
            _ => bytes.truncate(rng.below(bytes.len() as u64) as usize),
        }
        // Keep the meta valid sometimes so corruption reaches the pages.
        if round % 2 == 0 && bytes.len() >= 2 * PAGE_SIZE {
            for m in [0usize, 1] {
                let at = m * PAGE_SIZE + PAGE_HEADER;
                if let Ok(meta) = Meta::decode(&good[at..]) {
                    bytes[at..at + META_SIZE].copy_from_slice(&meta.encode());
                }
            }
        }
        let (_dir, db) = open(&bytes);
        if let Ok(db) = db {
            let _ = read_tree(&db, &db.root());
        }
    }
}

#[test]
fn cycles_and_shared_pages_are_errors() {
    // A branch page whose children are itself.
    let mut bytes = vec![0u8; 4 * PAGE_SIZE];
    let mut branch = page_header(2, BRANCH_PAGE, 2, 0).to_vec();
    for i in 0..2u32 {
        branch.extend_from_slice(&((2 - i) * 16).to_le_bytes());
        branch.extend_from_slice(&1u32.to_le_bytes());
        branch.extend_from_slice(&2u64.to_le_bytes());
    }
    branch.extend_from_slice(b"ab");
    bytes[2 * PAGE_SIZE..2 * PAGE_SIZE + branch.len()].copy_from_slice(&branch);
    for txid in [0u64, 1] {
        let meta = Meta {
            page_size: PAGE_SIZE as u32,
            flags: 0,
            root: BucketHeader {
                root: 2,
                sequence: 0,
            },
            freelist: 3,
            pgid: 4,
            txid,
        };
        let at = txid as usize * PAGE_SIZE;
        bytes[at..at + 16].copy_from_slice(&page_header(txid, META_PAGE, 0, 0));
        bytes[at + 16..at + 16 + META_SIZE].copy_from_slice(&meta.encode());
    }
    let (_dir, db) = open(&bytes);
    let db = db.unwrap();
    let err = read_tree(&db, &db.root()).unwrap_err();
    assert!(err.to_string().contains("reached twice"), "{err}");
}

#[test]
fn small_files_are_too_small() {
    let (_dir, db) = open(&[0u8; 100]);
    assert_eq!(db.err().unwrap().to_string(), "file size too small");
    let (_dir, db) = open(&vec![0u8; 3 * PAGE_SIZE]);
    assert!(db.is_err());
}

#[test]
fn large_buckets_get_several_branch_levels() {
    let mut tree = BTreeMap::new();
    for i in 0..60_000u32 {
        let key = format!("key/{:08}", i.wrapping_mul(2_654_435_761)).into_bytes();
        tree.insert(key, Node::Value(i.to_be_bytes().to_vec()));
    }
    let bytes = file_of(&tree);
    let (_dir, db) = open(&bytes);
    let db = db.unwrap();
    // The root is a branch whose children are branches.
    let root = db.meta().root.root as usize * PAGE_SIZE;
    assert_eq!(u16_at(&bytes, root + 8), Some(BRANCH_PAGE));
    let first_child = u64_at(&bytes, root + PAGE_HEADER + 8).unwrap() as usize * PAGE_SIZE;
    assert_eq!(u16_at(&bytes, first_child + 8), Some(BRANCH_PAGE));
    assert_eq!(read_tree(&db, &db.root()).unwrap(), tree);
}
