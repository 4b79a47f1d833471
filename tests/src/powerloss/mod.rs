//! A disk that can lose power, for tests: a FUSE filesystem that keeps
//! every write not yet fsynced in memory and forgets it on command, as a
//! machine's page cache and disk cache do when power fails. kill -9 keeps
//! the page cache, so only this shows a missing fsync, a missing directory
//! fsync after a rename or create, or a write torn at a page boundary.
//!
//! `sync_file_range` and `syncfs` never reach a FUSE filesystem; neither
//! promises durability on a real disk either (no metadata, no cache
//! flush), so the disk treats what they wrote as unsynced.

pub mod fuse;
pub mod model;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use fuser::{BackgroundSession, Config, MountOption, SessionACL};

use model::{Entries, Model, OpKind, Owner};

/// One mounted power-loss disk; unmounted when dropped.
pub struct PowerDisk {
    model: Arc<Mutex<Model>>,
    mountpoint: PathBuf,
    session: Option<BackgroundSession>,
    _backing: tempfile::TempDir,
}

impl PowerDisk {
    /// Mount an empty disk at `mountpoint` (an existing empty directory).
    /// Top-level directories named in `write_through` lose nothing on a
    /// power cut (for logs a test reads to explain a failure).
    pub fn mount(mountpoint: &Path, write_through: &[&str]) -> io::Result<PowerDisk> {
        if !Path::new("/dev/fuse").exists() {
            return Err(io::Error::new(io::ErrorKind::NotFound, "no /dev/fuse"));
        }
        let backing = tempfile::Builder::new()
            .prefix("triad-powerdisk")
            .tempdir()?;
        let root = Owner {
            uid: nix::unistd::geteuid().as_raw(),
            gid: nix::unistd::getegid().as_raw(),
            perm: 0o700,
        };
        let model = Arc::new(Mutex::new(Model::new(backing.path(), root, write_through)));
        let mut config = Config::default();
        config.mount_options = vec![
            MountOption::FSName("triad-powerdisk".into()),
            MountOption::DefaultPermissions,
        ];
        if nix::unistd::geteuid().is_root() {
            config.acl = SessionACL::All;
        }
        config.n_threads = Some(2);
        let session = fuser::spawn_mount(fuse::Adapter(model.clone()), mountpoint, &config)?;
        Ok(PowerDisk {
            model,
            mountpoint: mountpoint.to_path_buf(),
            session: Some(session),
            _backing: backing,
        })
    }

    /// Whether a power-loss disk can be mounted here: Err says why not.
    pub fn available() -> io::Result<()> {
        let probe = tempfile::tempdir()?;
        let at = probe.path().join("disk");
        std::fs::create_dir(&at)?;
        PowerDisk::mount(&at, &[]).map(drop)
    }

    fn model(&self) -> MutexGuard<'_, Model> {
        self.model.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Power fails: everything unsynced is gone. Whatever used the disk
    /// must be dead already (kill -9 and wait).
    pub fn power_cut(&self) {
        self.model().power_cut();
    }

    /// Power fails while the disk writes: each file's unsynced writes
    /// reached it except the tail of the last one (torn at a 4 KiB
    /// boundary); the rest is lost as in `power_cut`. Returns the number
    /// of files torn.
    pub fn torn_power_cut(&self) -> usize {
        self.model().torn_power_cut()
    }

    /// `power_cut`, or `torn_power_cut` when `torn`; the unsynced bytes
    /// lost.
    pub fn cut(&self, torn: bool) -> u64 {
        let lost = self.unsynced().iter().map(|(_, b)| b).sum();
        if torn {
            self.torn_power_cut();
        } else {
            self.power_cut();
        }
        lost
    }

    /// Only what lies under `path` (relative to the mountpoint) loses its
    /// unsynced state: one daemon's files, while the others keep theirs.
    pub fn drop_unsynced_under(&self, path: &Path) -> io::Result<()> {
        self.model()
            .drop_unsynced_under(path)
            .map_err(|e| io::Error::from_raw_os_error(e as i32))
    }

    /// Cut the power just before the first operation `trap` matches (by
    /// kind and path relative to the mountpoint); every operation fails
    /// with EIO from then on until `power_on`.
    pub fn cut_power_at(&self, trap: impl FnMut(OpKind, &Path) -> bool + Send + 'static) {
        self.model().set_trap(Box::new(trap));
    }

    /// Whether a trap has cut the power.
    pub fn is_off(&self) -> bool {
        self.model().is_off()
    }

    /// Power back on (after a trap cut it; what was unsynced is gone).
    pub fn power_on(&self) {
        self.model().power_on();
    }

    /// Choose when directory entries become durable (by default only at
    /// an fsync of their directory).
    pub fn set_entries(&self, entries: Entries) {
        self.model().set_entries(entries);
    }

    /// Unsynced bytes per file, by path relative to the mountpoint.
    pub fn unsynced(&self) -> Vec<(PathBuf, u64)> {
        self.model().unsynced()
    }
}

impl Drop for PowerDisk {
    /// Unmount, then remove the empty mountpoint that the directory's
    /// owner could not remove while mounted.
    fn drop(&mut self) {
        drop(self.session.take());
        if std::fs::remove_dir(&self.mountpoint).is_err() {
            // Still in use (a process the test did not stop): detach it,
            // to go when the last user does.
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.mountpoint)
                .status();
            let _ = std::fs::remove_dir(&self.mountpoint);
        }
    }
}

/// One power-loss disk per member, each mounted at the member's place
/// (DIR/<name>) before the member first starts, keyed by member name.
#[derive(Default)]
pub struct MemberDisks {
    disks: Vec<(String, PowerDisk)>,
}

impl MemberDisks {
    /// Mount a disk at `cluster_dir/<name>` for each name (the
    /// directory is created); the daemons' logs and pid files are written
    /// through.
    pub fn mount(&mut self, cluster_dir: &Path, names: &[&str]) -> io::Result<()> {
        for name in names {
            let at = cluster_dir.join(name);
            std::fs::create_dir_all(&at)?;
            let disk = PowerDisk::mount(&at, &["logs", "pids"])?;
            self.disks.push((name.to_string(), disk));
        }
        Ok(())
    }

    pub fn has(&self, name: &str) -> bool {
        self.disk(name).is_some()
    }

    /// Choose when directory entries become durable, on every disk.
    pub fn set_entries(&self, entries: Entries) {
        for (_, d) in &self.disks {
            d.set_entries(entries);
        }
    }

    /// Member `name`'s disk.
    pub fn disk(&self, name: &str) -> Option<&PowerDisk> {
        self.disks.iter().find(|(n, _)| n == name).map(|(_, d)| d)
    }

    /// Cut the power of member `name`'s disk (torn: its last writes torn);
    /// the unsynced bytes it lost.
    pub fn cut(&self, name: &str, torn: bool) -> u64 {
        self.disk(name).map_or(0, |d| d.cut(torn))
    }
}
