//! Keeps storaged's fjall journal from piling up data the disk has not seen.
//!
//! storaged does not fsync on the write path (raftd's log is the durable
//! copy, contract 2), so its journal collects dirty pages until something
//! syncs them: fjall's journal rotation, which fsyncs under the journal
//! lock on the applying thread, or a Checkpoint. With tens of MiB waiting,
//! that one fsync held up every apply and read for a few hundred
//! milliseconds (max 339-452 ms with 64 writers on one member). So a
//! thread starts writeback of the journal files every 100 ms without
//! waiting for it (etcd's backend likewise commits every 100 ms), and a
//! checkpoint flushes fjall's buffer under its lock but fsyncs the files
//! through descriptors of its own, outside that lock.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

const PERIOD: Duration = Duration::from_millis(100);

/// The journal files (`*.jnl`) in a fjall database directory.
fn journal_files(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "jnl") {
            files.push(path);
        }
    }
    Ok(files)
}

/// Run `op` on each journal file; one deleted meanwhile (its contents were
/// flushed into tables) is skipped.
fn each_journal(dir: &Path, op: impl Fn(&File) -> io::Result<()>) -> io::Result<()> {
    for path in journal_files(dir)? {
        match File::open(&path) {
            Ok(f) => op(&f)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// fsync every journal file: everything written to them so far is durable.
pub fn sync_journals(dir: &Path) -> io::Result<()> {
    if common::durable::unsafe_no_fsync() {
        return Ok(());
    }
    each_journal(dir, File::sync_data)
}

/// Start writing the journals' dirty pages out, without waiting.
fn start_writeback(dir: &Path) -> io::Result<()> {
    each_journal(dir, |f| {
        // SAFETY: a plain system call on a descriptor `f` keeps open.
        let r = unsafe {
            nix::libc::sync_file_range(f.as_raw_fd(), 0, 0, nix::libc::SYNC_FILE_RANGE_WRITE)
        };
        if r == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    })
}

/// The writeback thread; it stops when this is dropped.
pub struct Writeback {
    stop: Arc<AtomicBool>,
}

impl Writeback {
    pub fn start(dir: &Path) -> io::Result<Writeback> {
        let stop = Arc::new(AtomicBool::new(false));
        let (dir, flag) = (dir.to_path_buf(), stop.clone());
        std::thread::Builder::new()
            .name("journal-writeback".into())
            .spawn(move || {
                let mut warned = false;
                loop {
                    std::thread::sleep(PERIOD);
                    // Checked after the sleep: the store may be gone (and
                    // its directory with it) by the time it ends.
                    if flag.load(Ordering::Relaxed) {
                        break;
                    }
                    if let Err(e) = start_writeback(&dir) {
                        if !warned {
                            tracing::warn!(error = %e, "journal writeback failed");
                            warned = true;
                        }
                    }
                }
            })?;
        Ok(Writeback { stop })
    }
}

impl Drop for Writeback {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn finds_and_syncs_only_journal_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        for name in ["0.jnl", "7.jnl", "version", "tables"] {
            let mut f = File::create(dir.path().join(name)).expect("create");
            f.write_all(b"data").expect("write");
        }
        let mut found = journal_files(dir.path()).expect("list");
        found.sort();
        assert_eq!(
            found,
            vec![dir.path().join("0.jnl"), dir.path().join("7.jnl")]
        );
        sync_journals(dir.path()).expect("sync");
        start_writeback(dir.path()).expect("writeback");
    }
}
