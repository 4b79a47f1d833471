//! `triad snapshot`: offline tools for snapshot files (etcdutl's
//! counterparts). Two formats are read: etcd's (a bbolt backend followed by
//! its SHA-256, what `etcdctl snapshot save` gets from etcd and from triad)
//! and triad's older backup format (`common::backup`, framed storaged
//! chunks), which earlier triad versions streamed.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use anyhow::Context;
use common::bbolt::read::{Db, Value};
use sha2::{Digest, Sha256};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    /// etcd's: a bbolt file (meta page magic at offset 16).
    Etcd,
    /// triad's older backup format.
    Triad,
}

impl Format {
    fn name(self) -> &'static str {
        match self {
            Format::Etcd => "etcd (bbolt)",
            Format::Triad => "triad backup",
        }
    }
}

fn format_of(file: &Path) -> anyhow::Result<Format> {
    let mut head = [0u8; 20];
    let mut f = File::open(file).with_context(|| format!("cannot open {}", file.display()))?;
    let n = f.read(&mut head)?;
    let magic = head.get(16..20).filter(|_| n == 20);
    if magic == Some(&common::bbolt::MAGIC.to_le_bytes()[..]) {
        Ok(Format::Etcd)
    } else {
        Ok(Format::Triad)
    }
}

/// etcd's check of a snapshot's trailing SHA-256: present when the size
/// is 32 past a multiple of 512 (a bbolt file's pages), as etcdctl decides.
fn check_etcd_hash(file: &Path, skip: bool) -> anyhow::Result<()> {
    let len = std::fs::metadata(file)?.len();
    if len % 512 != common::backup::HASH_LEN as u64 {
        anyhow::ensure!(skip, "snapshot missing hash but --skip-hash-check=false");
        return Ok(());
    }
    let mut f = File::open(file)?;
    let mut body = (&mut f).take(len - common::backup::HASH_LEN as u64);
    let mut hasher = Sha256::new();
    std::io::copy(&mut body, &mut hasher)?;
    let mut stored = [0u8; common::backup::HASH_LEN];
    f.read_exact(&mut stored)?;
    let got = hasher.finalize();
    // etcd's message, the digests printed as Go prints byte slices.
    let go = |b: &[u8]| {
        let bytes: Vec<String> = b.iter().map(u8::to_string).collect();
        format!("[{}]", bytes.join(" "))
    };
    anyhow::ensure!(
        got.as_slice() == stored,
        "expected sha256 {}, got {}",
        go(&stored),
        go(got.as_slice())
    );
    Ok(())
}

/// Restore a snapshot into a new member's data directory, for a new
/// cluster: the member's storaged starts with the snapshot's data and
/// revisions; raft state starts afresh from `--initial-cluster` when the
/// member first starts (as `etcdctl snapshot restore` prepares a member).
pub fn restore(file: &Path, data_dir: &Path, skip_hash_check: bool) -> anyhow::Result<()> {
    let live = data_dir.join("storaged");
    for sub in ["storaged", "storaged.snapshot", "raftd"] {
        anyhow::ensure!(
            !data_dir.join(sub).exists(),
            "data-dir {:?} exists",
            data_dir.display().to_string()
        );
    }
    let format = format_of(file)?;
    match format {
        Format::Etcd => check_etcd_hash(file, skip_hash_check),
        Format::Triad => common::backup::verify(file).map_err(Into::into),
    }
    .with_context(|| format!("cannot restore {}", file.display()))?;
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create {}", data_dir.display()))?;
    let staged = (|| -> anyhow::Result<i64> {
        let mut staging = storaged::snapshot::Staging::create(&live)?;
        match format {
            Format::Etcd => {
                storaged::etcd_import::import(file, &mut staging)
                    .with_context(|| format!("cannot restore {}", file.display()))?;
            }
            Format::Triad => {
                for chunk in common::backup::chunks(file)? {
                    staging.write(chunk?)?;
                }
            }
        }
        staging.forget_raft_state()?;
        Ok(staging.finish()?.revision)
    })();
    let revision = match staged {
        Ok(r) => r,
        Err(e) => {
            let _ = std::fs::remove_dir_all(storaged::snapshot::staging_dir(&live));
            return Err(e);
        }
    };
    storaged::snapshot::mark_for_activation(&live)?;
    println!(
        "restored snapshot {} ({}) into {} (revision {})",
        file.display(),
        format.name(),
        data_dir.display(),
        revision
    );
    Ok(())
}

/// etcdctl's snapshot status fields.
struct Status {
    hash: u32,
    revision: i64,
    total_key: u64,
    total_size: u64,
}

/// What a snapshot holds, printed as etcdctl prints it (`simple`, `table`
/// or `json`), with the file's format.
pub fn status(file: &Path, write_out: &str) -> anyhow::Result<()> {
    let format = format_of(file)?;
    let s = match format {
        Format::Etcd => etcd_status(file),
        Format::Triad => triad_status(file),
    }
    .with_context(|| format!("cannot read {}", file.display()))?;
    let size = humanize_bytes(s.total_size);
    match write_out {
        "json" => println!(
            "{{\"hash\":{},\"revision\":{},\"totalKey\":{},\"totalSize\":{},\"format\":\"{}\"}}",
            s.hash,
            s.revision,
            s.total_key,
            s.total_size,
            format.name()
        ),
        "table" => {
            let rows = [
                ["HASH", "REVISION", "TOTAL KEYS", "TOTAL SIZE"].map(String::from),
                [
                    format!("{:x}", s.hash),
                    s.revision.to_string(),
                    s.total_key.to_string(),
                    size,
                ],
            ];
            print!("{}", table(&rows));
            println!("format: {}", format.name());
        }
        _ => println!(
            "{:x}, {}, {}, {} ({})",
            s.hash,
            s.revision,
            s.total_key,
            size,
            format.name()
        ),
    }
    Ok(())
}

/// etcdctl's status of a bbolt file: CRC-32C over bucket names, keys and
/// values; the revision of the last `key` entry; every element counted;
/// the size up to the high-water mark.
fn etcd_status(file: &Path) -> anyhow::Result<Status> {
    let db = Db::open(file)?;
    let mut crc = 0u32;
    let mut revision = 0i64;
    let mut total_key = 0u64;
    let mut buckets = Vec::new();
    db.for_each(&db.root(), &mut |name, v| {
        if let Value::Bucket(b) = v {
            buckets.push((name.to_vec(), b));
        }
        Ok::<(), common::bbolt::read::ReadError>(())
    })?;
    for (name, b) in buckets {
        crc = crc32c::crc32c_append(crc, &name);
        let is_key = name == b"key";
        db.for_each(&b, &mut |k, v| {
            crc = crc32c::crc32c_append(crc, k);
            if let Value::Plain(v) = v {
                crc = crc32c::crc32c_append(crc, v);
            }
            if is_key && k.len() >= 8 {
                revision = i64::from_be_bytes(k[..8].try_into().unwrap_or_default());
            }
            total_key += 1;
            Ok::<(), common::bbolt::read::ReadError>(())
        })?;
    }
    Ok(Status {
        hash: crc,
        revision,
        total_key,
        total_size: db.size(),
    })
}

fn triad_status(file: &Path) -> anyhow::Result<Status> {
    common::backup::verify(file)?;
    let mut s = Status {
        hash: 0,
        revision: 0,
        total_key: 0,
        total_size: std::fs::metadata(file)?.len(),
    };
    for chunk in common::backup::chunks(file)? {
        let chunk = chunk?;
        if let Some(st) = &chunk.status {
            s.revision = st.revision;
        }
        for e in &chunk.entries {
            s.hash = crc32c::crc32c_append(s.hash, &e.key);
            s.hash = crc32c::crc32c_append(s.hash, &e.value);
            s.total_key += 1;
        }
    }
    Ok(s)
}

/// go-humanize's `Bytes` (SI units), as etcdctl prints sizes.
fn humanize_bytes(n: u64) -> String {
    if n < 10 {
        return format!("{n} B");
    }
    const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    let e = ((n as f64).ln() / 1000f64.ln()).floor() as usize;
    let e = e.min(UNITS.len() - 1);
    let val = ((n as f64) / 1000f64.powi(e as i32) * 10.0 + 0.5).floor() / 10.0;
    if val < 10.0 {
        format!("{val:.1} {}", UNITS[e])
    } else {
        format!("{val:.0} {}", UNITS[e])
    }
}

/// A bordered table as etcdctl's: headers centred, cells right-aligned.
fn table(rows: &[[String; 4]]) -> String {
    let widths: Vec<usize> = (0..4)
        .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    let line = {
        let mut l = String::from("+");
        for w in &widths {
            l.push_str(&"-".repeat(w + 2));
            l.push('+');
        }
        l.push('\n');
        l
    };
    let mut out = line.clone();
    for (i, row) in rows.iter().enumerate() {
        out.push('|');
        for (c, cell) in row.iter().enumerate() {
            let w = widths[c];
            let cell = if i == 0 {
                let pad = w - cell.len();
                format!(
                    "{}{}{}",
                    " ".repeat(pad / 2),
                    cell,
                    " ".repeat(pad - pad / 2)
                )
            } else {
                format!("{cell:>w$}")
            };
            out.push_str(&format!(" {cell} |"));
        }
        out.push('\n');
        out.push_str(&line);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_go_humanize_prints_them() {
        assert_eq!(humanize_bytes(5), "5 B");
        assert_eq!(humanize_bytes(20480), "20 kB");
        assert_eq!(humanize_bytes(2_100_000), "2.1 MB");
        assert_eq!(humanize_bytes(999), "999 B");
    }

    /// A file in the older triad backup format (as triad streamed it
    /// before): still recognised and read.
    #[test]
    fn older_triad_backups_are_read() {
        use common::proto::storage::{SnapshotChunk, SnapshotEntry, StatusResponse};
        let chunk = SnapshotChunk {
            status: Some(StatusResponse {
                revision: 7,
                ..Default::default()
            }),
            entries: vec![SnapshotEntry {
                keyspace: 1,
                key: b"k".to_vec(),
                value: b"v".to_vec(),
            }],
            last: true,
        };
        let mut body = common::backup::frame(&chunk);
        body.extend(common::backup::padding(body.len()));
        let mut h = common::backup::Hasher::default();
        h.update(&body);
        body.extend(h.finish());
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("old.db");
        std::fs::write(&file, &body).unwrap();
        assert_eq!(format_of(&file).unwrap(), Format::Triad);
        let s = triad_status(&file).unwrap();
        assert_eq!((s.revision, s.total_key), (7, 1));
        let data = dir.path().join("data");
        restore(&file, &data, false).unwrap();
        assert!(storaged::snapshot::staging_dir(&data.join("storaged")).exists());
    }
}
