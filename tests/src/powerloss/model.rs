//! The power-loss disk's state: a tree of inodes whose directory entries
//! and file bytes each have a live version (what processes see) and a
//! durable one (what survives a power cut). fsync/fdatasync make a file's
//! bytes and size durable, fsync of a directory its entries; nothing else
//! does. Durable bytes sit in one backing file per inode; unsynced ones
//! are 4 KiB pages in memory.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Component, Path, PathBuf};
use std::time::SystemTime;

use nix::errno::Errno;

/// The unit the disk writes (and a torn write tears) at.
pub const PAGE: u64 = 4096;
pub type Ino = u64;
pub const ROOT: Ino = 1;

pub type Result<T> = std::result::Result<T, Errno>;

/// What an operation is on, for a trap: a directory entry or an inode.
#[derive(Clone, Copy)]
pub enum PathOf<'a> {
    Entry(Ino, &'a OsStr),
    Inode(Ino),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File,
    Socket,
    Symlink,
}

/// What `attr` reports of an inode.
#[derive(Clone, Debug)]
pub struct Attr {
    pub ino: Ino,
    pub kind: Kind,
    pub size: u64,
    pub perm: u32,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub rdev: u32,
    pub mtime: SystemTime,
    pub ctime: SystemTime,
}

/// The last unsynced write of a file, which a torn power cut splits.
#[derive(Clone, Copy, Debug)]
struct LastWrite {
    offset: u64,
    len: u64,
    /// The file's live size before it.
    size_before: u64,
}

/// A regular file's bytes: durable in the backing file, live on top.
#[derive(Default)]
struct Content {
    durable_len: u64,
    len: u64,
    /// Durable bytes at or past this offset read as zeros (a truncate not
    /// yet synced).
    zero_from: u64,
    dirty: BTreeMap<u64, Box<[u8]>>,
    last_write: Option<LastWrite>,
}

enum Body {
    Dir {
        live: BTreeMap<OsString, Ino>,
        durable: BTreeMap<OsString, Ino>,
    },
    File(Content),
    Socket,
    Symlink(PathBuf),
}

struct Node {
    body: Body,
    perm: u32,
    uid: u32,
    gid: u32,
    rdev: u32,
    mtime: SystemTime,
    ctime: SystemTime,
    /// Live directory entries naming it.
    links: u32,
    /// Durable directory entries naming it.
    durable_links: u32,
    /// Open handles.
    open: u32,
    /// Everything under it is durable at once (the disk's log dirs: what a
    /// test reads after a power cut to explain a failure).
    write_through: bool,
}

impl Node {
    fn kind(&self) -> Kind {
        match self.body {
            Body::Dir { .. } => Kind::Dir,
            Body::File(_) => Kind::File,
            Body::Socket => Kind::Socket,
            Body::Symlink(_) => Kind::Symlink,
        }
    }
}

/// What to create.
pub enum NewNode {
    Dir,
    File,
    Socket { rdev: u32 },
    Symlink(PathBuf),
}

/// Who creates it, with which permission bits.
#[derive(Clone, Copy)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
    pub perm: u32,
}

/// An operation as a trap sees it: what and on which path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpKind {
    Create,
    Mkdir,
    Write,
    Rename,
    Unlink,
    Rmdir,
    Fsync,
}

/// Cuts the power just before the first operation it matches.
pub type Trap = Box<dyn FnMut(OpKind, &Path) -> bool + Send>;

pub struct Model {
    /// Power is off (a trap fired): every operation fails with EIO.
    off: bool,
    trap: Option<Trap>,
    nodes: HashMap<Ino, Node>,
    next_ino: Ino,
    backing: PathBuf,
    /// Names of top-level directories that are written through.
    write_through: Vec<OsString>,
    entries: Entries,
}

/// When a directory entry (a create, rename, unlink) becomes durable.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Entries {
    /// Only at an fsync of its directory: all POSIX promises, and what a
    /// filesystem without an ordered metadata journal gives.
    #[default]
    OnDirFsync,
    /// When the operation returns, as LazyFS (the power-loss filesystem
    /// of Jepsen and of etcd's robustness tests) passes namespace
    /// operations through; close to what ext4's and XFS's metadata
    /// journals give once anything is fsynced.
    AtOnce,
}

fn io_errno(e: std::io::Error) -> Errno {
    e.raw_os_error().map_or(Errno::EIO, Errno::from_raw)
}

impl Model {
    /// An empty disk whose durable bytes live under `backing`; top-level
    /// directories named in `write_through` lose nothing on a power cut.
    pub fn new(backing: &Path, root: Owner, write_through: &[&str]) -> Model {
        let now = SystemTime::now();
        let mut nodes = HashMap::new();
        nodes.insert(
            ROOT,
            Node {
                body: Body::Dir {
                    live: BTreeMap::new(),
                    durable: BTreeMap::new(),
                },
                perm: root.perm,
                uid: root.uid,
                gid: root.gid,
                rdev: 0,
                mtime: now,
                ctime: now,
                links: 1,
                durable_links: 1,
                open: 0,
                write_through: false,
            },
        );
        Model {
            off: false,
            trap: None,
            nodes,
            next_ino: ROOT + 1,
            backing: backing.to_path_buf(),
            write_through: write_through.iter().map(OsString::from).collect(),
            entries: Entries::default(),
        }
    }

    /// Cut the power just before the first operation `trap` matches; until
    /// `power_on`, every operation then fails with EIO, as on a machine
    /// whose power failed.
    pub fn set_trap(&mut self, trap: Trap) {
        self.trap = Some(trap);
    }

    /// Whether a trap has cut the power (and it is still off).
    pub fn is_off(&self) -> bool {
        self.off
    }

    pub fn power_on(&mut self) {
        self.off = false;
    }

    /// Before an operation on `path` (relative to the root, when the
    /// caller knows it) or on inode `ino`: EIO while the power is off, or
    /// a power cut now if the trap matches.
    pub fn check_power(&mut self, kind: OpKind, at: PathOf<'_>) -> Result<()> {
        if self.off {
            return Err(Errno::EIO);
        }
        if self.trap.is_none() {
            return Ok(());
        }
        let path = match at {
            PathOf::Entry(parent, name) => self.path_of(parent).map(|p| p.join(name)),
            PathOf::Inode(ino) => self.path_of(ino),
        };
        let Some(path) = path else {
            return Ok(());
        };
        if self.trap.as_mut().is_some_and(|t| t(kind, &path)) {
            self.trap = None;
            self.power_cut();
            self.off = true;
            return Err(Errno::EIO);
        }
        Ok(())
    }

    /// One live path of `ino` (None when no live entry reaches it).
    fn path_of(&self, ino: Ino) -> Option<PathBuf> {
        if ino == ROOT {
            return Some(PathBuf::new());
        }
        let mut found = None;
        self.walk_live(ROOT, PathBuf::new(), &mut |p, at, _| {
            if found.is_none() && at == ino {
                found = Some(p.to_path_buf());
            }
        });
        found
    }

    /// Where the durable bytes live.
    pub fn backing_dir(&self) -> &Path {
        &self.backing
    }

    fn node(&self, ino: Ino) -> Result<&Node> {
        self.nodes.get(&ino).ok_or(Errno::ENOENT)
    }

    fn node_mut(&mut self, ino: Ino) -> Result<&mut Node> {
        self.nodes.get_mut(&ino).ok_or(Errno::ENOENT)
    }

    fn backing_path(&self, ino: Ino) -> PathBuf {
        self.backing.join(ino.to_string())
    }

    fn live_entries(&self, dir: Ino) -> Result<&BTreeMap<OsString, Ino>> {
        match &self.node(dir)?.body {
            Body::Dir { live, .. } => Ok(live),
            _ => Err(Errno::ENOTDIR),
        }
    }

    fn live_entries_mut(&mut self, dir: Ino) -> Result<&mut BTreeMap<OsString, Ino>> {
        match &mut self.node_mut(dir)?.body {
            Body::Dir { live, .. } => Ok(live),
            _ => Err(Errno::ENOTDIR),
        }
    }

    pub fn lookup(&self, parent: Ino, name: &OsStr) -> Result<Ino> {
        self.live_entries(parent)?
            .get(name)
            .copied()
            .ok_or(Errno::ENOENT)
    }

    /// The inode at `path` (relative to the disk's root) in the live tree.
    pub fn resolve(&self, path: &Path) -> Result<Ino> {
        let mut ino = ROOT;
        for c in path.components() {
            match c {
                Component::Normal(name) => ino = self.lookup(ino, name)?,
                Component::RootDir | Component::CurDir => {}
                _ => return Err(Errno::EINVAL),
            }
        }
        Ok(ino)
    }

    pub fn attr(&self, ino: Ino) -> Result<Attr> {
        let n = self.node(ino)?;
        let size = match &n.body {
            Body::File(c) => c.len,
            Body::Symlink(t) => t.as_os_str().len() as u64,
            Body::Dir { live, .. } => live.len() as u64,
            Body::Socket => 0,
        };
        Ok(Attr {
            ino,
            kind: n.kind(),
            size,
            perm: n.perm,
            nlink: if n.kind() == Kind::Dir { 2 } else { n.links },
            uid: n.uid,
            gid: n.gid,
            rdev: n.rdev,
            mtime: n.mtime,
            ctime: n.ctime,
        })
    }

    pub fn readlink(&self, ino: Ino) -> Result<PathBuf> {
        match &self.node(ino)?.body {
            Body::Symlink(t) => Ok(t.clone()),
            _ => Err(Errno::EINVAL),
        }
    }

    /// The live entries of a directory, in name order.
    pub fn readdir(&self, dir: Ino) -> Result<Vec<(OsString, Ino, Kind)>> {
        let entries = self.live_entries(dir)?;
        Ok(entries
            .iter()
            .filter_map(|(name, &ino)| Some((name.clone(), ino, self.nodes.get(&ino)?.kind())))
            .collect())
    }

    pub fn create(
        &mut self,
        parent: Ino,
        name: &OsStr,
        what: NewNode,
        owner: Owner,
    ) -> Result<Ino> {
        if self.live_entries(parent)?.contains_key(name) {
            return Err(Errno::EEXIST);
        }
        let write_through = self.node(parent)?.write_through
            || (parent == ROOT && self.write_through.iter().any(|w| w == name));
        let ino = self.next_ino;
        self.next_ino += 1;
        let (body, rdev) = match what {
            NewNode::Dir => (
                Body::Dir {
                    live: BTreeMap::new(),
                    durable: BTreeMap::new(),
                },
                0,
            ),
            NewNode::File => {
                std::fs::File::create(self.backing_path(ino)).map_err(io_errno)?;
                (
                    Body::File(Content {
                        zero_from: u64::MAX,
                        ..Content::default()
                    }),
                    0,
                )
            }
            NewNode::Socket { rdev } => (Body::Socket, rdev),
            NewNode::Symlink(target) => (Body::Symlink(target), 0),
        };
        let now = SystemTime::now();
        self.nodes.insert(
            ino,
            Node {
                body,
                perm: owner.perm,
                uid: owner.uid,
                gid: owner.gid,
                rdev,
                mtime: now,
                ctime: now,
                links: 0,
                durable_links: 0,
                open: 0,
                write_through,
            },
        );
        self.set_entry(parent, name, Some(ino))?;
        if write_through {
            // The write-through tree's own entry is durable at once too.
            self.make_entry_durable(parent, name, ino)?;
        }
        Ok(ino)
    }

    /// Point `parent`'s live entry `name` at `ino` (None: remove it),
    /// keeping link counts; an inode no entry names any more is freed.
    fn set_entry(&mut self, parent: Ino, name: &OsStr, ino: Option<Ino>) -> Result<()> {
        let old = match ino {
            Some(ino) => self
                .live_entries_mut(parent)?
                .insert(name.to_os_string(), ino),
            None => self.live_entries_mut(parent)?.remove(name),
        };
        if let Some(ino) = ino {
            self.node_mut(ino)?.links += 1;
        }
        if let Some(old) = old {
            if let Ok(n) = self.node_mut(old) {
                n.links = n.links.saturating_sub(1);
            }
            self.free_if_unused(old);
        }
        let entries_at_once = self.entries == Entries::AtOnce;
        let n = self.node_mut(parent)?;
        n.mtime = SystemTime::now();
        if n.write_through || entries_at_once {
            self.sync_dir(parent)?;
        }
        Ok(())
    }

    /// Choose when directory entries become durable.
    pub fn set_entries(&mut self, entries: Entries) {
        self.entries = entries;
    }

    /// Make one live entry durable without the rest of its directory.
    fn make_entry_durable(&mut self, parent: Ino, name: &OsStr, ino: Ino) -> Result<()> {
        let old = match &mut self.node_mut(parent)?.body {
            Body::Dir { durable, .. } => durable.insert(name.to_os_string(), ino),
            _ => return Err(Errno::ENOTDIR),
        };
        self.node_mut(ino)?.durable_links += 1;
        if let Some(old) = old {
            if let Some(n) = self.nodes.get_mut(&old) {
                n.durable_links = n.durable_links.saturating_sub(1);
            }
            self.free_if_unused(old);
        }
        Ok(())
    }

    fn free_if_unused(&mut self, ino: Ino) {
        let unused = self
            .nodes
            .get(&ino)
            .is_some_and(|n| n.links == 0 && n.durable_links == 0 && n.open == 0);
        if unused && ino != ROOT {
            if let Some(n) = self.nodes.remove(&ino) {
                if matches!(n.body, Body::File(_)) {
                    let _ = std::fs::remove_file(self.backing_path(ino));
                }
            }
        }
    }

    pub fn unlink(&mut self, parent: Ino, name: &OsStr) -> Result<()> {
        let ino = self.lookup(parent, name)?;
        if self.node(ino)?.kind() == Kind::Dir {
            return Err(Errno::EISDIR);
        }
        self.set_entry(parent, name, None)
    }

    pub fn rmdir(&mut self, parent: Ino, name: &OsStr) -> Result<()> {
        let ino = self.lookup(parent, name)?;
        if !self.live_entries(ino)?.is_empty() {
            return Err(Errno::ENOTEMPTY);
        }
        self.set_entry(parent, name, None)
    }

    pub fn link(&mut self, ino: Ino, parent: Ino, name: &OsStr) -> Result<()> {
        if self.node(ino)?.kind() == Kind::Dir {
            return Err(Errno::EPERM);
        }
        if self.live_entries(parent)?.contains_key(name) {
            return Err(Errno::EEXIST);
        }
        self.set_entry(parent, name, Some(ino))
    }

    /// rename(2), with RENAME_NOREPLACE when `noreplace`.
    pub fn rename(
        &mut self,
        parent: Ino,
        name: &OsStr,
        new_parent: Ino,
        new_name: &OsStr,
        noreplace: bool,
    ) -> Result<()> {
        let ino = self.lookup(parent, name)?;
        if let Ok(target) = self.lookup(new_parent, new_name) {
            if noreplace {
                return Err(Errno::EEXIST);
            }
            if target == ino {
                return Ok(());
            }
            let (moving, replaced) = (self.node(ino)?.kind(), self.node(target)?.kind());
            match (moving == Kind::Dir, replaced == Kind::Dir) {
                (true, false) => return Err(Errno::ENOTDIR),
                (false, true) => return Err(Errno::EISDIR),
                (true, true) if !self.live_entries(target)?.is_empty() => {
                    return Err(Errno::ENOTEMPTY)
                }
                _ => {}
            }
        }
        if self.node(ino)?.kind() == Kind::Dir && self.is_under(new_parent, ino) {
            return Err(Errno::EINVAL);
        }
        // Named twice for a moment, so the inode is never unused in between.
        self.set_entry(new_parent, new_name, Some(ino))?;
        self.set_entry(parent, name, None)
    }

    /// Whether `dir` is `ancestor` or lies below it in the live tree.
    fn is_under(&self, dir: Ino, ancestor: Ino) -> bool {
        let mut stack = vec![ancestor];
        while let Some(d) = stack.pop() {
            if d == dir {
                return true;
            }
            if let Ok(entries) = self.live_entries(d) {
                stack.extend(entries.values().copied());
            }
        }
        false
    }

    pub fn set_perm(&mut self, ino: Ino, perm: u32) -> Result<()> {
        let n = self.node_mut(ino)?;
        n.perm = perm & 0o7777;
        n.ctime = SystemTime::now();
        Ok(())
    }

    pub fn set_owner(&mut self, ino: Ino, uid: Option<u32>, gid: Option<u32>) -> Result<()> {
        let n = self.node_mut(ino)?;
        n.uid = uid.unwrap_or(n.uid);
        n.gid = gid.unwrap_or(n.gid);
        n.ctime = SystemTime::now();
        Ok(())
    }

    pub fn set_mtime(&mut self, ino: Ino, mtime: SystemTime) -> Result<()> {
        self.node_mut(ino)?.mtime = mtime;
        Ok(())
    }

    pub fn opened(&mut self, ino: Ino) -> Result<()> {
        self.node_mut(ino)?.open += 1;
        Ok(())
    }

    pub fn released(&mut self, ino: Ino) {
        if let Some(n) = self.nodes.get_mut(&ino) {
            n.open = n.open.saturating_sub(1);
        }
        self.free_if_unused(ino);
    }

    fn content(&self, ino: Ino) -> Result<&Content> {
        match &self.node(ino)?.body {
            Body::File(c) => Ok(c),
            Body::Dir { .. } => Err(Errno::EISDIR),
            _ => Err(Errno::EINVAL),
        }
    }

    fn content_mut(&mut self, ino: Ino) -> Result<&mut Content> {
        match &mut self.node_mut(ino)?.body {
            Body::File(c) => Ok(c),
            Body::Dir { .. } => Err(Errno::EISDIR),
            _ => Err(Errno::EINVAL),
        }
    }

    /// Bytes `offset..offset+buf.len()` as the durable state has them
    /// (zeros where it holds none).
    fn read_durable(&self, ino: Ino, c: &Content, offset: u64, buf: &mut [u8]) -> Result<()> {
        buf.fill(0);
        let end = c.durable_len.min(c.zero_from);
        if offset >= end {
            return Ok(());
        }
        let n = (end - offset).min(buf.len() as u64) as usize;
        let f = std::fs::File::open(self.backing_path(ino)).map_err(io_errno)?;
        f.read_exact_at(&mut buf[..n], offset).map_err(io_errno)
    }

    pub fn read(&self, ino: Ino, offset: u64, size: u32) -> Result<Vec<u8>> {
        let c = self.content(ino)?;
        if offset >= c.len {
            return Ok(Vec::new());
        }
        let end = c.len.min(offset.saturating_add(u64::from(size)));
        let mut buf = vec![0u8; (end - offset) as usize];
        self.read_durable(ino, c, offset, &mut buf)?;
        for (&page, bytes) in c.dirty.range(offset / PAGE..=(end - 1) / PAGE) {
            let start = (page * PAGE).max(offset);
            let stop = ((page + 1) * PAGE).min(end);
            buf[(start - offset) as usize..(stop - offset) as usize].copy_from_slice(
                &bytes[(start - page * PAGE) as usize..(stop - page * PAGE) as usize],
            );
        }
        Ok(buf)
    }

    /// Make page `page` of the file dirty (loading what it holds now).
    fn dirty_page(&mut self, ino: Ino, page: u64) -> Result<&mut [u8]> {
        if !self.content(ino)?.dirty.contains_key(&page) {
            let c = self.content(ino)?;
            let mut bytes = vec![0u8; PAGE as usize];
            if page * PAGE < c.len {
                let n = (c.len - page * PAGE).min(PAGE) as usize;
                self.read_durable(ino, c, page * PAGE, &mut bytes[..n])?;
            }
            self.content_mut(ino)?
                .dirty
                .insert(page, bytes.into_boxed_slice());
        }
        self.content_mut(ino)?
            .dirty
            .get_mut(&page)
            .map(|b| &mut b[..])
            .ok_or(Errno::EIO)
    }

    /// write(2) at `offset`; `sync` makes it durable at once (O_SYNC,
    /// O_DSYNC).
    pub fn write(&mut self, ino: Ino, offset: u64, data: &[u8], sync: bool) -> Result<u32> {
        let size_before = self.content(ino)?.len;
        let end = offset.checked_add(data.len() as u64).ok_or(Errno::EFBIG)?;
        let mut at = offset;
        while at < end {
            let page = at / PAGE;
            let in_page = (at - page * PAGE) as usize;
            let n = ((page + 1) * PAGE).min(end) - at;
            let from = (at - offset) as usize;
            self.dirty_page(ino, page)?[in_page..in_page + n as usize]
                .copy_from_slice(&data[from..from + n as usize]);
            at += n;
        }
        let c = self.content_mut(ino)?;
        c.len = c.len.max(end);
        c.last_write = Some(LastWrite {
            offset,
            len: data.len() as u64,
            size_before,
        });
        let n = self.node_mut(ino)?;
        n.mtime = SystemTime::now();
        if sync || n.write_through {
            self.sync_file(ino)?;
        }
        u32::try_from(data.len()).map_err(|_| Errno::EFBIG)
    }

    /// truncate(2)/ftruncate(2).
    pub fn set_size(&mut self, ino: Ino, size: u64) -> Result<()> {
        let len = self.content(ino)?.len;
        if size < len {
            if !size.is_multiple_of(PAGE) {
                let keep = (size % PAGE) as usize;
                self.dirty_page(ino, size / PAGE)?[keep..].fill(0);
            }
            let c = self.content_mut(ino)?;
            let first_gone = size.div_ceil(PAGE);
            c.dirty.retain(|&p, _| p < first_gone);
            c.zero_from = c.zero_from.min(size);
        }
        let c = self.content_mut(ino)?;
        c.len = size;
        c.last_write = None;
        let n = self.node_mut(ino)?;
        n.mtime = SystemTime::now();
        if n.write_through {
            self.sync_file(ino)?;
        }
        Ok(())
    }

    /// fallocate(2) mode 0: the size grows to cover the range.
    pub fn allocate(&mut self, ino: Ino, offset: u64, len: u64) -> Result<()> {
        let end = offset.checked_add(len).ok_or(Errno::EFBIG)?;
        if end > self.content(ino)?.len {
            self.set_size(ino, end)?;
        }
        Ok(())
    }

    /// fsync of a file: its bytes and size become durable.
    pub fn sync_file(&mut self, ino: Ino) -> Result<()> {
        let path = self.backing_path(ino);
        let c = self.content_mut(ino)?;
        let dirty = std::mem::take(&mut c.dirty);
        let f = OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(io_errno)?;
        if c.zero_from < c.durable_len {
            f.set_len(c.zero_from).map_err(io_errno)?;
        }
        for (page, bytes) in &dirty {
            let start = page * PAGE;
            if start >= c.len {
                continue;
            }
            let n = (c.len - start).min(PAGE) as usize;
            f.write_all_at(&bytes[..n], start).map_err(io_errno)?;
        }
        f.set_len(c.len).map_err(io_errno)?;
        c.durable_len = c.len;
        c.zero_from = u64::MAX;
        c.last_write = None;
        Ok(())
    }

    /// fsync of a directory: its entries become durable.
    pub fn sync_dir(&mut self, dir: Ino) -> Result<()> {
        let (old, new) = match &mut self.node_mut(dir)?.body {
            Body::Dir { live, durable } => (std::mem::replace(durable, live.clone()), live.clone()),
            _ => return Err(Errno::ENOTDIR),
        };
        for ino in new.values() {
            self.node_mut(*ino)?.durable_links += 1;
        }
        for ino in old.values() {
            if let Some(n) = self.nodes.get_mut(ino) {
                n.durable_links = n.durable_links.saturating_sub(1);
            }
            self.free_if_unused(*ino);
        }
        Ok(())
    }

    /// fsync(2)/fdatasync(2) of any inode.
    pub fn sync(&mut self, ino: Ino) -> Result<()> {
        match self.node(ino)?.kind() {
            Kind::Dir => self.sync_dir(ino),
            Kind::File => self.sync_file(ino),
            _ => Ok(()),
        }
    }

    /// Unsynced bytes per file (dirty pages, by one live path of each).
    pub fn unsynced(&self) -> Vec<(PathBuf, u64)> {
        let mut out = Vec::new();
        self.walk_live(ROOT, PathBuf::new(), &mut |path, _, node| {
            if let Body::File(c) = &node.body {
                let bytes = c.dirty.len() as u64 * PAGE;
                if bytes > 0 || c.len != c.durable_len {
                    out.push((path.to_path_buf(), bytes.max(c.len.abs_diff(c.durable_len))));
                }
            }
        });
        out
    }

    fn walk_live(&self, dir: Ino, path: PathBuf, f: &mut impl FnMut(&Path, Ino, &Node)) {
        let Ok(entries) = self.live_entries(dir) else {
            return;
        };
        for (name, &ino) in entries {
            let Some(node) = self.nodes.get(&ino) else {
                continue;
            };
            let p = path.join(name);
            f(&p, ino, node);
            if node.kind() == Kind::Dir {
                self.walk_live(ino, p, f);
            }
        }
    }

    /// Power is cut: every unsynced byte and directory entry is gone, and
    /// so is every inode no durable entry names. No handle stays open.
    pub fn power_cut(&mut self) {
        for node in self.nodes.values_mut() {
            node.open = 0;
            revert(node);
        }
        self.recount_links();
        let reachable = self.reachable();
        let gone: Vec<Ino> = self
            .nodes
            .keys()
            .copied()
            .filter(|i| !reachable.contains(i))
            .collect();
        for ino in gone {
            if let Some(n) = self.nodes.get_mut(&ino) {
                n.links = 0;
                n.durable_links = 0;
            }
            self.free_if_unused(ino);
        }
        self.recount_links();
        for node in self.nodes.values_mut() {
            node.durable_links = node.links;
        }
    }

    /// A power cut while the disk was writing: each file's unsynced writes
    /// reached the disk except the tail of its last one, cut at a 4 KiB
    /// boundary (nothing of it when it fits in one page). Then power is
    /// cut as by `power_cut`. Returns how many files were torn.
    pub fn torn_power_cut(&mut self) -> usize {
        let mut torn = 0;
        let inos: Vec<Ino> = self.nodes.keys().copied().collect();
        for ino in inos {
            let Ok(c) = self.content_mut(ino) else {
                continue;
            };
            let Some(w) = c.last_write.take() else {
                continue;
            };
            let first_boundary = (w.offset / PAGE + 1) * PAGE;
            let split = if first_boundary < w.offset + w.len {
                first_boundary
            } else {
                w.offset / PAGE * PAGE
            };
            let split_page = split / PAGE;
            c.dirty
                .retain(|&p, _| p < split_page || p * PAGE >= w.offset + w.len);
            c.len = c.len.min(w.size_before.max(split));
            if self.sync_file(ino).is_ok() {
                torn += 1;
            }
        }
        self.power_cut();
        torn
    }

    /// Drop the unsynced bytes and entries of everything under `path` (a
    /// directory), as if only that part of the disk lost power; its files
    /// must not be open.
    pub fn drop_unsynced_under(&mut self, path: &Path) -> Result<()> {
        let top = self.resolve(path)?;
        let mut stack = vec![top];
        let mut seen = HashSet::new();
        while let Some(ino) = stack.pop() {
            if !seen.insert(ino) {
                continue;
            }
            if let Ok(entries) = self.live_entries(ino) {
                stack.extend(entries.values().copied());
            }
            if let Some(node) = self.nodes.get_mut(&ino) {
                node.open = 0;
                revert(node);
            }
        }
        self.recount_links();
        for ino in seen {
            self.free_if_unused(ino);
        }
        Ok(())
    }

    /// Recount live links from the directories' live entries.
    fn recount_links(&mut self) {
        let mut counts: HashMap<Ino, u32> = HashMap::new();
        for node in self.nodes.values() {
            if let Body::Dir { live, .. } = &node.body {
                for ino in live.values() {
                    *counts.entry(*ino).or_default() += 1;
                }
            }
        }
        for (ino, node) in &mut self.nodes {
            node.links = if *ino == ROOT {
                1
            } else {
                counts.get(ino).copied().unwrap_or(0)
            };
        }
    }

    fn reachable(&self) -> HashSet<Ino> {
        let mut seen = HashSet::new();
        let mut stack = vec![ROOT];
        while let Some(ino) = stack.pop() {
            if seen.insert(ino) {
                if let Ok(entries) = self.live_entries(ino) {
                    stack.extend(entries.values().copied());
                }
            }
        }
        seen
    }
}

/// Forget a node's unsynced state.
fn revert(node: &mut Node) {
    match &mut node.body {
        Body::Dir { live, durable } => *live = durable.clone(),
        Body::File(c) => {
            c.dirty.clear();
            c.len = c.durable_len;
            c.zero_from = u64::MAX;
            c.last_write = None;
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: Owner = Owner {
        uid: 0,
        gid: 0,
        perm: 0o700,
    };

    fn disk() -> (tempfile::TempDir, Model) {
        let backing = tempfile::tempdir().expect("tempdir");
        let m = Model::new(backing.path(), ME, &["logs"]);
        (backing, m)
    }

    fn file(m: &mut Model, dir: Ino, name: &str) -> Ino {
        m.create(dir, OsStr::new(name), NewNode::File, ME)
            .expect("create")
    }

    fn dir(m: &mut Model, parent: Ino, name: &str) -> Ino {
        m.create(parent, OsStr::new(name), NewNode::Dir, ME)
            .expect("mkdir")
    }

    fn contents(m: &Model, path: &str) -> Option<Vec<u8>> {
        let ino = m.resolve(Path::new(path)).ok()?;
        m.read(ino, 0, u32::MAX).ok()
    }

    #[test]
    fn only_fsynced_bytes_survive_a_power_cut() {
        let (_b, mut m) = disk();
        let f = file(&mut m, ROOT, "f");
        m.sync_dir(ROOT).expect("fsync dir");
        m.write(f, 0, b"durable", false).expect("write");
        m.sync(f).expect("fsync");
        m.write(f, 7, b" and lost", false).expect("write");
        m.write(f, 0, b"D", false).expect("write");
        assert_eq!(contents(&m, "f").as_deref(), Some(&b"Durable and lost"[..]));
        m.power_cut();
        assert_eq!(contents(&m, "f").as_deref(), Some(&b"durable"[..]));
        assert!(m.unsynced().is_empty());
    }

    #[test]
    fn a_new_file_needs_its_directory_fsynced() {
        let (_b, mut m) = disk();
        let d = dir(&mut m, ROOT, "d");
        m.sync_dir(ROOT).expect("fsync root");
        let f = file(&mut m, d, "new");
        m.write(f, 0, b"synced data", false).expect("write");
        m.sync(f).expect("fsync file");
        m.power_cut();
        assert_eq!(contents(&m, "d/new"), None, "entry was never made durable");
        let f = file(&mut m, d, "new");
        m.write(f, 0, b"synced data", false).expect("write");
        m.sync(f).expect("fsync file");
        m.sync_dir(d).expect("fsync dir");
        m.power_cut();
        assert_eq!(contents(&m, "d/new").as_deref(), Some(&b"synced data"[..]));
    }

    #[test]
    fn a_rename_is_durable_only_after_the_directory_fsync() {
        let (_b, mut m) = disk();
        let f = file(&mut m, ROOT, "tmp");
        m.write(f, 0, b"x", false).expect("write");
        m.sync(f).expect("fsync");
        m.sync_dir(ROOT).expect("fsync dir");
        m.rename(ROOT, OsStr::new("tmp"), ROOT, OsStr::new("live"), false)
            .expect("rename");
        m.power_cut();
        assert_eq!(contents(&m, "tmp").as_deref(), Some(&b"x"[..]));
        assert_eq!(contents(&m, "live"), None);
        m.rename(ROOT, OsStr::new("tmp"), ROOT, OsStr::new("live"), false)
            .expect("rename");
        m.sync_dir(ROOT).expect("fsync dir");
        m.power_cut();
        assert_eq!(contents(&m, "tmp"), None);
        assert_eq!(contents(&m, "live").as_deref(), Some(&b"x"[..]));
    }

    #[test]
    fn an_unlinked_file_comes_back_until_the_unlink_is_durable() {
        let (_b, mut m) = disk();
        let f = file(&mut m, ROOT, "f");
        m.write(f, 0, b"old", false).expect("write");
        m.sync(f).expect("fsync");
        m.sync_dir(ROOT).expect("fsync dir");
        m.unlink(ROOT, OsStr::new("f")).expect("unlink");
        assert_eq!(contents(&m, "f"), None);
        m.power_cut();
        assert_eq!(contents(&m, "f").as_deref(), Some(&b"old"[..]));
        m.unlink(ROOT, OsStr::new("f")).expect("unlink");
        m.sync_dir(ROOT).expect("fsync dir");
        m.power_cut();
        assert_eq!(contents(&m, "f"), None);
        assert_eq!(std::fs::read_dir(m.backing_dir()).expect("ls").count(), 0);
    }

    #[test]
    fn truncates_read_as_zeros_and_revert_on_a_power_cut() {
        let (_b, mut m) = disk();
        let f = file(&mut m, ROOT, "f");
        m.sync_dir(ROOT).expect("fsync dir");
        m.write(f, 0, &[7u8; 10_000], false).expect("write");
        m.sync(f).expect("fsync");
        m.set_size(f, 5_000).expect("truncate");
        m.set_size(f, 9_000).expect("extend");
        let now = contents(&m, "f").expect("read");
        assert_eq!(now.len(), 9_000);
        assert!(now[..5_000].iter().all(|&b| b == 7));
        assert!(now[5_000..].iter().all(|&b| b == 0));
        m.power_cut();
        assert_eq!(contents(&m, "f").expect("read"), vec![7u8; 10_000]);
        m.set_size(f, 5_000).expect("truncate");
        m.sync(f).expect("fsync");
        m.set_size(f, 9_000).expect("extend");
        m.sync(f).expect("fsync");
        m.power_cut();
        let after = contents(&m, "f").expect("read");
        assert!(after[..5_000].iter().all(|&b| b == 7) && after[5_000..].iter().all(|&b| b == 0));
    }

    #[test]
    fn a_torn_power_cut_keeps_the_head_of_the_last_write() {
        let (_b, mut m) = disk();
        let f = file(&mut m, ROOT, "journal");
        m.sync_dir(ROOT).expect("fsync dir");
        m.write(f, 0, &[1u8; 100], false).expect("first write");
        m.write(f, 100, &[2u8; 3 * PAGE as usize], false)
            .expect("last write");
        assert_eq!(m.torn_power_cut(), 1);
        let after = contents(&m, "journal").expect("read");
        // Everything before the last write's first page boundary landed.
        assert_eq!(after.len(), PAGE as usize);
        assert!(after[..100].iter().all(|&b| b == 1));
        assert!(after[100..].iter().all(|&b| b == 2));
        // A last write within one page is lost whole.
        m.write(f, PAGE, &[3u8; 10], false).expect("small write");
        m.torn_power_cut();
        assert_eq!(contents(&m, "journal").expect("read").len(), PAGE as usize);
    }

    #[test]
    fn dropping_one_tree_keeps_the_others_unsynced_state() {
        let (_b, mut m) = disk();
        let a = dir(&mut m, ROOT, "a");
        let b = dir(&mut m, ROOT, "b");
        m.sync_dir(ROOT).expect("fsync root");
        let fa = file(&mut m, a, "f");
        let fb = file(&mut m, b, "f");
        m.write(fa, 0, b"a", false).expect("write");
        m.write(fb, 0, b"b", false).expect("write");
        assert_eq!(m.unsynced().len(), 2);
        m.drop_unsynced_under(Path::new("a")).expect("drop");
        assert_eq!(contents(&m, "a/f"), None);
        assert_eq!(contents(&m, "b/f").as_deref(), Some(&b"b"[..]));
        assert_eq!(m.unsynced(), vec![(PathBuf::from("b/f"), PAGE)]);
    }

    #[test]
    fn write_through_directories_lose_nothing() {
        let (_b, mut m) = disk();
        let logs = dir(&mut m, ROOT, "logs");
        let inner = dir(&mut m, logs, "daemon");
        let f = file(&mut m, inner, "log");
        m.write(f, 0, b"last words", false).expect("write");
        let other = file(&mut m, ROOT, "other");
        m.write(other, 0, b"gone", false).expect("write");
        m.power_cut();
        assert_eq!(
            contents(&m, "logs/daemon/log").as_deref(),
            Some(&b"last words"[..])
        );
        assert_eq!(contents(&m, "other"), None);
    }

    #[test]
    fn a_synchronous_write_is_durable_at_once() {
        let (_b, mut m) = disk();
        let f = file(&mut m, ROOT, "f");
        m.sync_dir(ROOT).expect("fsync dir");
        m.write(f, 0, b"o_dsync", true).expect("write");
        m.power_cut();
        assert_eq!(contents(&m, "f").as_deref(), Some(&b"o_dsync"[..]));
    }

    #[test]
    fn a_trap_cuts_the_power_just_before_its_operation() {
        let (_b, mut m) = disk();
        let f = file(&mut m, ROOT, "staged");
        m.write(f, 0, b"whole", false).expect("write");
        m.sync(f).expect("fsync");
        m.sync_dir(ROOT).expect("fsync dir");
        m.write(f, 0, b"W", false).expect("unsynced write");
        m.set_trap(Box::new(|kind, path| {
            kind == OpKind::Rename && path == Path::new("staged")
        }));
        assert_eq!(
            m.check_power(OpKind::Write, PathOf::Inode(f)),
            Ok(()),
            "only the rename trips it"
        );
        let at = PathOf::Entry(ROOT, OsStr::new("staged"));
        assert_eq!(m.check_power(OpKind::Rename, at), Err(Errno::EIO));
        assert!(m.is_off());
        assert_eq!(
            m.check_power(OpKind::Fsync, PathOf::Inode(ROOT)),
            Err(Errno::EIO)
        );
        m.power_on();
        assert_eq!(contents(&m, "staged").as_deref(), Some(&b"whole"[..]));
    }

    #[test]
    fn with_entries_at_once_only_file_bytes_are_lost() {
        let (_b, mut m) = disk();
        m.set_entries(Entries::AtOnce);
        let d = dir(&mut m, ROOT, "d");
        let f = file(&mut m, d, "f");
        m.write(f, 0, b"unsynced", false).expect("write");
        m.rename(d, OsStr::new("f"), ROOT, OsStr::new("g"), false)
            .expect("rename");
        m.power_cut();
        assert_eq!(contents(&m, "g").as_deref(), Some(&b""[..]));
        assert_eq!(contents(&m, "d/f"), None);
    }
}
