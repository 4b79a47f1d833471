//! A member's data directory: private, and owned by one instance. Every
//! daemon and `triad up` create what they write with mode 0700/0600
//! whatever the umask, warn (as etcd does) when an existing data dir is
//! open to others, and hold an exclusive lock on a file of their own in
//! it while they run: a second instance on the same data dir fails at
//! once, before it binds a port, writes a pid file or publishes anything.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

/// Files and directories this process creates are private to its user
/// (0600/0700); call before any thread starts.
pub fn private_umask() {
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
}

/// Create `dir` (and its parents) with mode 0700.
pub fn create_private(dir: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// etcd's warning for a data dir others can read, or None. `group` allows
/// the group's read and search bits (a packaged member's 0750 directory).
pub fn permission_warning(dir: &Path, group: bool) -> Option<String> {
    let mode = std::fs::metadata(dir).ok()?.permissions().mode() & 0o777;
    let allowed = if group { 0o750 } else { 0o700 };
    (mode & !allowed != 0).then(|| {
        format!(
            "directory {:?} exist, but the permission is {:?}. The recommended permission is \
             \"-rwx------\" to prevent possible unprivileged access to the data.",
            dir.display().to_string(),
            go_mode(mode)
        )
    })
}

/// A directory's mode as Go prints it (drwxr-xr-x).
fn go_mode(mode: u32) -> String {
    let mut s = String::from("d");
    for shift in [6, 3, 0] {
        let bits = (mode >> shift) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        s.push(if bits & 1 != 0 { 'x' } else { '-' });
    }
    s
}

/// What to do about a data dir on a read-only filesystem: the usual cause
/// is systemd's sandbox (`ProtectSystem=strict`), which leaves only
/// /var/lib/triad writable to the units.
fn read_only_hint(e: &std::io::Error) -> &'static str {
    if e.raw_os_error() == Some(nix::libc::EROFS) {
        " (under systemd the units may write only /var/lib/triad: put the data dir there, \
         or add it to the daemons' units and triad-check.service with `systemctl edit` and ReadWritePaths=)"
    } else {
        ""
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    #[error("cannot create data dir {dir}: {source}{}", read_only_hint(source))]
    Create {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write in {dir}: {source}{}", read_only_hint(source))]
    Write {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot lock {path}: {source}{}", read_only_hint(source))]
    Lock {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{who} of the member in {dir} is already running{pid} (it holds {lock}); \
         a member's data dir has one owner"
    )]
    Held {
        who: String,
        dir: PathBuf,
        lock: PathBuf,
        pid: String,
    },
}

/// Create `dir` privately if needed and write (then remove) a file in it:
/// what a daemon does first, without taking any daemon's lock.
pub fn check_writable(dir: &Path) -> Result<(), ClaimError> {
    create_private(dir).map_err(|source| ClaimError::Create {
        dir: dir.to_path_buf(),
        source,
    })?;
    let probe = dir.join(format!(".check-config.{}", std::process::id()));
    std::fs::write(&probe, b"")
        .and_then(|()| std::fs::remove_file(&probe))
        .map_err(|source| ClaimError::Write {
            dir: dir.to_path_buf(),
            source,
        })
}

/// This process's claim on a member's data dir (released on drop or exit).
#[derive(Debug)]
pub struct Claim {
    _lock: Flock<File>,
}

/// Create `dir` privately and take `who`'s lock in it (`<who>.lock`),
/// with this process's pid inside for the next one's message.
pub fn claim(dir: &Path, who: &str) -> Result<Claim, ClaimError> {
    create_private(dir).map_err(|source| ClaimError::Create {
        dir: dir.to_path_buf(),
        source,
    })?;
    let path = dir.join(format!("{who}.lock"));
    let lock_error = |source| ClaimError::Lock {
        path: path.clone(),
        source,
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(lock_error)?;
    let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => lock,
        Err((mut file, nix::errno::Errno::EWOULDBLOCK)) => {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            let pid = pid.trim();
            return Err(ClaimError::Held {
                who: who.to_string(),
                dir: dir.to_path_buf(),
                lock: path.clone(),
                pid: if pid.is_empty() {
                    String::new()
                } else {
                    format!(" (pid {pid})")
                },
            });
        }
        Err((_, errno)) => return Err(lock_error(errno.into())),
    };
    let pid = format!("{}\n", std::process::id());
    lock.set_len(0)
        .and_then(|()| lock.rewind())
        .and_then(|()| lock.write_all(pid.as_bytes()))
        .map_err(lock_error)?;
    Ok(Claim { _lock: lock })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_only_data_dir_says_what_to_change() {
        let err = ClaimError::Create {
            dir: PathBuf::from("/srv/etcd"),
            source: std::io::Error::from_raw_os_error(nix::libc::EROFS),
        };
        let text = err.to_string();
        assert!(
            text.starts_with("cannot create data dir /srv/etcd: Read-only file system"),
            "{text}"
        );
        assert!(text.contains("ReadWritePaths="), "{text}");
        let other = ClaimError::Create {
            dir: PathBuf::from("/srv/etcd"),
            source: std::io::Error::from_raw_os_error(nix::libc::ENOSPC),
        };
        assert!(!other.to_string().contains("ReadWritePaths"));
    }

    #[test]
    fn a_second_claim_on_the_same_dir_fails_with_the_holder() {
        let dir = tempfile::tempdir().expect("tempdir");
        let member = dir.path().join("member");
        let first = claim(&member, "raftd").expect("first claim");
        let mode = std::fs::metadata(&member)
            .expect("dir")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
        let e = claim(&member, "raftd").expect_err("second claim");
        let text = e.to_string();
        assert!(text.contains("already running"), "{text}");
        assert!(
            text.contains(&format!("pid {}", std::process::id())),
            "{text}"
        );
        // Another owner's lock is its own.
        let _other = claim(&member, "storaged").expect("storaged's claim");
        drop(first);
        claim(&member, "raftd").expect("claim after release");
    }

    #[test]
    fn wide_data_dirs_get_etcds_warning() {
        let dir = tempfile::tempdir().expect("tempdir");
        let set = |m| std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(m));
        set(0o700).expect("chmod");
        assert_eq!(permission_warning(dir.path(), false), None);
        set(0o750).expect("chmod");
        assert_eq!(permission_warning(dir.path(), true), None);
        let w = permission_warning(dir.path(), false).expect("warning");
        assert!(w.contains("\"drwxr-x---\""), "{w}");
        set(0o755).expect("chmod");
        assert!(permission_warning(dir.path(), true).is_some());
    }
}
