//! The bbolt reader on damaged files: a valid file (buckets, a sub-bucket,
//! a value over a page, branch pages) with the input's bytes patched in at
//! the offsets it names. Opening it and walking every bucket must give data
//! or an error, never a panic, a hang or unbounded memory.
#![no_main]

use std::io::Cursor;
use std::sync::OnceLock;

use common::bbolt::read::{BucketRef, Db, ReadError, Value};
use common::bbolt::write::{Bucket, Writer};
use common::bbolt::{fnv1a64, PAGE_HEADER, PAGE_SIZE};
use libfuzzer_sys::fuzz_target;

fn base() -> &'static [u8] {
    static BASE: OnceLock<Vec<u8>> = OnceLock::new();
    BASE.get_or_init(|| {
        let mut w = Writer::new(Cursor::new(Vec::new())).expect("writer");
        let mut a = Bucket::new();
        for i in 0..400u32 {
            a.put(&mut w, format!("key{i:05}").as_bytes(), &i.to_be_bytes())
                .expect("put");
        }
        let a = a.finish(&mut w).expect("a");
        let mut c = Bucket::new();
        c.put(&mut w, b"big", &[7u8; 9000]).expect("big");
        c.put(&mut w, b"small", b"v").expect("small");
        let c = c.finish(&mut w).expect("c");
        let mut b = Bucket::new();
        b.put_bucket(&mut w, b"c", c).expect("c in b");
        let b = b.finish(&mut w).expect("b");
        let mut root = Bucket::new();
        root.put_bucket(&mut w, b"a", a).expect("a in root");
        root.put_bucket(&mut w, b"b", b).expect("b in root");
        let root = root.finish(&mut w).expect("root");
        w.finish(root).expect("file").into_inner()
    })
}

fn walk(db: &Db, b: &BucketRef) -> Result<(), ReadError> {
    let mut subs = Vec::new();
    db.for_each(b, &mut |_, v| {
        if let Value::Bucket(s) = v {
            subs.push(s);
        }
        Ok::<(), ReadError>(())
    })?;
    for s in subs {
        walk(db, &s)?;
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let mut file = base().to_vec();
    // Each patch: a 3-byte offset (little-endian, wrapped) and a byte.
    for p in data.chunks_exact(4) {
        let at = u32::from_le_bytes([p[0], p[1], p[2], 0]) as usize % file.len();
        file[at] = p[3];
    }
    // Usually keep the meta checksums valid so the damage reaches pages.
    if data.first().is_some_and(|b| b & 1 == 0) {
        for m in 0..2 {
            let at = m * PAGE_SIZE + PAGE_HEADER;
            let sum = fnv1a64(&file[at..at + 56]);
            file[at + 56..at + 64].copy_from_slice(&sum.to_le_bytes());
        }
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("db");
    std::fs::write(&path, &file).expect("write");
    if let Ok(db) = Db::open(&path) {
        let _ = walk(&db, &db.root());
    }
});
