//! The power-loss disk as a FUSE filesystem: each kernel request becomes
//! one call on the model. Entries and attributes are never cached (TTL 0),
//! writes go through to the model at once (no writeback cache), and every
//! open drops the kernel's cached pages of the file (no keep-cache), so a
//! process started after a power cut sees what the disk kept. Files are
//! not opened for direct I/O: etcd's bbolt maps its database shared, which
//! FUSE refuses on direct-I/O files.

use std::ffi::OsStr;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner,
    OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};

use super::model::{self, Attr, Ino, Kind, Model, NewNode, OpKind, Owner, PathOf};

const TTL: Duration = Duration::ZERO;

/// The model behind a lock, shared by the kernel's requests and the test.
pub struct Adapter(pub Arc<Mutex<Model>>);

fn errno(e: nix::errno::Errno) -> Errno {
    Errno::from_i32(e as i32)
}

fn file_type(k: Kind) -> FileType {
    match k {
        Kind::Dir => FileType::Directory,
        Kind::File => FileType::RegularFile,
        Kind::Socket => FileType::Socket,
        Kind::Symlink => FileType::Symlink,
    }
}

fn file_attr(a: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(a.ino),
        size: a.size,
        blocks: a.size.div_ceil(512),
        atime: a.mtime,
        mtime: a.mtime,
        ctime: a.ctime,
        crtime: a.ctime,
        kind: file_type(a.kind),
        perm: (a.perm & 0o7777) as u16,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: a.rdev,
        blksize: model::PAGE as u32,
        flags: 0,
    }
}

/// O_SYNC and O_DSYNC make every write durable.
fn syncs_each_write(flags: OpenFlags) -> bool {
    flags.0 & (nix::libc::O_SYNC | nix::libc::O_DSYNC) != 0
}

impl Adapter {
    fn sync(&self, ino: INodeNo, reply: ReplyEmpty) {
        let mut m = self.model();
        let r = m.check_power(OpKind::Fsync, PathOf::Inode(ino.0));
        empty(r.and_then(|()| m.sync(ino.0)), reply);
    }

    fn model(&self) -> MutexGuard<'_, Model> {
        // A panicking test thread must not wedge every process on the disk.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn reply_entry(&self, m: &Model, ino: Ino, reply: ReplyEntry) {
        match m.attr(ino) {
            Ok(a) => reply.entry(&TTL, &file_attr(&a), Generation(0)),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn make(&self, parent: INodeNo, name: &OsStr, what: NewNode, owner: Owner, reply: ReplyEntry) {
        let mut m = self.model();
        let kind = match what {
            NewNode::Dir => OpKind::Mkdir,
            _ => OpKind::Create,
        };
        let made = m
            .check_power(kind, PathOf::Entry(parent.0, name))
            .and_then(|()| m.create(parent.0, name, what, owner));
        match made {
            Ok(ino) => self.reply_entry(&m, ino, reply),
            Err(e) => reply.error(errno(e)),
        }
    }
}

/// The creating process's IDs, with mode bits less its umask.
fn owner(req: &Request, mode: u32, umask: u32) -> Owner {
    Owner {
        uid: req.uid(),
        gid: req.gid(),
        perm: mode & !umask & 0o7777,
    }
}

fn empty(r: model::Result<()>, reply: ReplyEmpty) {
    match r {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(errno(e)),
    }
}

impl Filesystem for Adapter {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let m = self.model();
        match m.lookup(parent.0, name) {
            Ok(ino) => self.reply_entry(&m, ino, reply),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.model().attr(ino.0) {
            Ok(a) => reply.attr(&TTL, &file_attr(&a)),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let mut m = self.model();
        let ino = ino.0;
        let mut r = if m.is_off() {
            Err(nix::errno::Errno::EIO)
        } else {
            Ok(())
        };
        if let Some(mode) = mode {
            r = r.and_then(|()| m.set_perm(ino, mode));
        }
        if uid.is_some() || gid.is_some() {
            r = r.and_then(|()| m.set_owner(ino, uid, gid));
        }
        if let Some(size) = size {
            r = r.and_then(|()| m.set_size(ino, size));
        }
        if let Some(t) = mtime {
            let t = match t {
                TimeOrNow::SpecificTime(t) => t,
                TimeOrNow::Now => SystemTime::now(),
            };
            r = r.and_then(|()| m.set_mtime(ino, t));
        }
        match r.and_then(|()| m.attr(ino)) {
            Ok(a) => reply.attr(&TTL, &file_attr(&a)),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.model().readlink(ino.0) {
            Ok(t) => reply.data(std::os::unix::ffi::OsStrExt::as_bytes(t.as_os_str())),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let what = match mode & nix::libc::S_IFMT {
            nix::libc::S_IFREG => NewNode::File,
            nix::libc::S_IFSOCK => NewNode::Socket { rdev },
            _ => return reply.error(Errno::EPERM),
        };
        self.make(parent, name, what, owner(req, mode, umask), reply);
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        self.make(parent, name, NewNode::Dir, owner(req, mode, umask), reply);
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let what = NewNode::Symlink(target.to_path_buf());
        self.make(parent, link_name, what, owner(req, 0o777, 0), reply);
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let mut m = self.model();
        let r = m.check_power(OpKind::Unlink, PathOf::Entry(parent.0, name));
        empty(r.and_then(|()| m.unlink(parent.0, name)), reply);
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let mut m = self.model();
        let r = m.check_power(OpKind::Rmdir, PathOf::Entry(parent.0, name));
        empty(r.and_then(|()| m.rmdir(parent.0, name)), reply);
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        if flags.intersects(RenameFlags::RENAME_EXCHANGE | RenameFlags::RENAME_WHITEOUT) {
            return reply.error(Errno::EINVAL);
        }
        let noreplace = flags.contains(RenameFlags::RENAME_NOREPLACE);
        let mut m = self.model();
        let r = m.check_power(OpKind::Rename, PathOf::Entry(parent.0, name));
        empty(
            r.and_then(|()| m.rename(parent.0, name, newparent.0, newname, noreplace)),
            reply,
        );
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let mut m = self.model();
        match m.link(ino.0, newparent.0, newname) {
            Ok(()) => self.reply_entry(&m, ino.0, reply),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.model().opened(ino.0) {
            Ok(()) => reply.opened(FileHandle(ino.0), FopenFlags::empty()),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let mut m = self.model();
        let made = m
            .check_power(OpKind::Create, PathOf::Entry(parent.0, name))
            .and_then(|()| m.create(parent.0, name, NewNode::File, owner(req, mode, umask)))
            .and_then(|ino| m.opened(ino).and_then(|()| m.attr(ino)));
        match made {
            Ok(a) => reply.created(
                &TTL,
                &file_attr(&a),
                Generation(0),
                FileHandle(a.ino),
                FopenFlags::empty(),
            ),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let m = self.model();
        if m.is_off() {
            return reply.error(Errno::EIO);
        }
        match m.read(ino.0, offset, size) {
            Ok(bytes) => reply.data(&bytes),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let mut m = self.model();
        let written = m
            .check_power(OpKind::Write, PathOf::Inode(ino.0))
            .and_then(|()| m.write(ino.0, offset, data, syncs_each_write(flags)));
        match written {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.model().released(ino.0);
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.sync(ino, reply);
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.model().attr(ino.0) {
            Ok(a) if a.kind == Kind::Dir => reply.opened(FileHandle(ino.0), FopenFlags::empty()),
            Ok(_) => reply.error(Errno::ENOTDIR),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let entries = match self.model().readdir(ino.0) {
            Ok(e) => e,
            Err(e) => return reply.error(errno(e)),
        };
        let dots = [
            (OsStr::new(".").to_os_string(), ino.0, Kind::Dir),
            (OsStr::new("..").to_os_string(), ino.0, Kind::Dir),
        ];
        let all = dots.into_iter().chain(entries);
        for (i, (name, child, kind)) in all.enumerate().skip(offset as usize) {
            if reply.add(INodeNo(child), (i + 1) as u64, file_type(kind), &name) {
                break;
            }
        }
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.sync(ino, reply);
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        // The backing filesystem's room is the disk's room.
        match nix::sys::statvfs::statvfs(self.model().backing_dir()) {
            Ok(s) => reply.statfs(
                s.blocks(),
                s.blocks_free(),
                s.blocks_available(),
                s.files(),
                s.files_free(),
                s.block_size() as u32,
                255,
                s.fragment_size() as u32,
            ),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        reply.ok();
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        if mode != 0 {
            return reply.error(Errno::EOPNOTSUPP);
        }
        empty(self.model().allocate(ino.0, offset, length), reply);
    }
}
