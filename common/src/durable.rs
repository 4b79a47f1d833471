//! Making files and directories survive a power cut: a file's bytes are
//! durable after its fsync, and its name only after an fsync of the
//! directory that holds it (POSIX promises no more; a journaling
//! filesystem often gives more, a power cut on another one does not).

use std::io::{self, Write};
use std::path::Path;

/// fsync a directory: the entries it holds now are durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// fsync `dir`, every directory below it, and the directory holding it:
/// a tree created without directory fsyncs (fjall names a new keyspace's
/// directory without syncing its parent) is all named durably after this.
pub fn sync_tree(dir: &Path) -> io::Result<()> {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d)? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                stack.push(entry.path());
            }
        }
        sync_dir(&d)?;
    }
    match dir.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => sync_dir(parent),
        _ => Ok(()),
    }
}

/// Replace `path` with `bytes` so that a power cut leaves either the old
/// file or the new one whole: write a temporary beside it, fsync it,
/// rename it over `path`, fsync the directory.
pub fn write_file(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_with_mode(path, bytes, 0o666)
}

/// `write_file` for a file only its owner may read (mode 0600).
pub fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_with_mode(path, bytes, 0o600)
}

fn write_with_mode(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = Path::new(&tmp_name);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(tmp, path)?;
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => sync_dir(dir),
        _ => sync_dir(Path::new(".")),
    }
}

/// `--unsafe-no-fsync`: the raft log and storaged's journals are never
/// fsynced (etcd's flag: faster, and a crash of the machine loses
/// acknowledged writes). Files' names are still made durable.
static UNSAFE_NO_FSYNC: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

pub fn set_unsafe_no_fsync(on: bool) {
    UNSAFE_NO_FSYNC.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// Whether data fsyncs are skipped (`--unsafe-no-fsync`).
pub fn unsafe_no_fsync() -> bool {
    UNSAFE_NO_FSYNC.load(std::sync::atomic::Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_file_replaces_whole_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("token");
        write_file(&path, b"one").expect("write");
        write_file(&path, b"two").expect("rewrite");
        assert_eq!(std::fs::read(&path).expect("read"), b"two");
        assert_eq!(std::fs::read_dir(dir.path()).expect("ls").count(), 1);
        std::fs::create_dir_all(dir.path().join("a/b")).expect("mkdir");
        sync_tree(dir.path()).expect("sync tree");
    }
}
