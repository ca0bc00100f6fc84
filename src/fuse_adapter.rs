//! The FUSE adapter: translates `fuser` requests into [`S3Filesystem`] calls.
//!
//! It is deliberately thin. Every handler that may touch the network moves its reply into a
//! task on the tokio runtime and returns at once, so the FUSE threads never wait on S3 and many
//! requests are in flight together; handlers that only touch memory (forget, opendir, statfs,
//! link, lookup/getattr answered from the caches, create, open, writes into content staged in
//! memory, attribute changes of files being written, and flush/release with nothing to
//! upload) answer inline, which spares a thread
//! hand-off per `stat` and several per small file written. Directory listings use READDIRPLUS
//! when the caller stats what it lists, so an `ls -l` costs no lookup per entry. Errors arrive
//! as errnos from the core.

use std::ffi::OsStr;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use fuser::{
    AccessFlags, BsdFileFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation,
    INodeNo, InitFlags, KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite,
    ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use tokio::runtime::Handle;

use crate::attr::NodeKind;
use crate::filesystem::{AttrChange, Caller, FsResult, S3Filesystem, Stat, XattrReply};
use crate::metrics::{self, CALLER_PID};

/// The kernel's caches of the mount, reached through the FUSE session's notifications.
pub struct KernelNotifier(pub fuser::Notifier);

impl crate::filesystem::KernelCache for KernelNotifier {
    fn forget_inode(&self, ino: u64) {
        // Offset 0, length 0: the attributes and every page. An inode the kernel no longer
        // holds is ENOENT, which leaves nothing to drop.
        if let Err(e) = self.0.inval_inode(INodeNo(ino), 0, 0) {
            tracing::debug!(ino, "kernel inode invalidation: {e}");
        }
    }

    fn forget_entry(&self, parent: u64, name: &OsStr) {
        if let Err(e) = self.0.inval_entry(INodeNo(parent), name) {
            tracing::debug!(parent, ?name, "kernel entry invalidation: {e}");
        }
    }
}

/// The `fuser::Filesystem` implementation.
pub struct FuseAdapter {
    fs: Arc<S3Filesystem>,
    rt: Handle,
    /// `direct_io`: files are opened with `FOPEN_DIRECT_IO`, so the kernel passes each read and
    /// write straight through instead of filling its page cache.
    direct_io: bool,
    /// The kernel leaves clearing the set-user-ID and set-group-ID bits to rossfs
    /// (`FUSE_HANDLE_KILLPRIV_V2`, Linux 5.11+): it then neither asks for a file's
    /// attributes before each chown nor checks `security.capability` before every write.
    kills_setid: bool,
}

impl std::fmt::Debug for FuseAdapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FuseAdapter").field("fs", &self.fs).finish()
    }
}

impl FuseAdapter {
    /// An adapter that runs `fs` operations on the runtime behind `rt`; `direct_io` as the
    /// mount option.
    pub fn new(fs: Arc<S3Filesystem>, rt: Handle, direct_io: bool) -> Self {
        Self {
            fs,
            rt,
            direct_io,
            kills_setid: false,
        }
    }

    /// Replies at once when memory could answer (`answer` is `Some`), timed as `name`; gives
    /// the reply back otherwise, for a request to the store.
    fn answer_now<R: ErrorReply, T>(
        &self,
        name: &'static str,
        start: Instant,
        answer: Option<FsResult<T>>,
        reply: R,
        done: impl FnOnce(R, T, &S3Filesystem),
    ) -> Option<R> {
        let Some(result) = answer else {
            return Some(reply);
        };
        metrics::global().fuse_op(name, start.elapsed(), result.is_err());
        match result {
            Ok(v) => done(reply, v, &self.fs),
            Err(e) => reply.fail(Errno::from_i32(e.0)),
        }
        None
    }

    /// Runs `op` on the runtime and hands its result to `done`, or its errno to the reply. The
    /// task carries the caller's pid (for traffic attribution) and is timed as `name`.
    fn spawn<R, T, F, Fut>(
        &self,
        req: &Request,
        name: &'static str,
        reply: R,
        op: F,
        done: impl FnOnce(R, T, &S3Filesystem) + Send + 'static,
    ) where
        R: ErrorReply + Send + 'static,
        T: Send + 'static,
        F: FnOnce(Arc<S3Filesystem>) -> Fut + Send + 'static,
        Fut: Future<Output = FsResult<T>> + Send + 'static,
    {
        let fs = self.fs.clone();
        let start = Instant::now();
        tracing::trace!(op = name, pid = req.pid(), "FUSE request");
        self.rt.spawn(CALLER_PID.scope(req.pid(), async move {
            let result = op(fs.clone()).await;
            metrics::global().fuse_op(name, start.elapsed(), result.is_err());
            match result {
                Ok(v) => done(reply, v, &fs),
                Err(e) => reply.fail(Errno::from_i32(e.0)),
            }
        }));
    }
}

/// Replies that can carry an errno.
trait ErrorReply {
    fn fail(self, e: Errno);
}

macro_rules! error_reply {
    ($($t:ty),*) => { $(impl ErrorReply for $t { fn fail(self, e: Errno) { self.error(e) } })* };
}
error_reply!(
    ReplyEntry,
    ReplyAttr,
    ReplyData,
    ReplyOpen,
    ReplyWrite,
    ReplyEmpty,
    ReplyCreate,
    ReplyDirectory
);

fn file_type(kind: NodeKind) -> FileType {
    match kind {
        NodeKind::Dir => FileType::Directory,
        NodeKind::File => FileType::RegularFile,
        NodeKind::Symlink => FileType::Symlink,
        NodeKind::Fifo => FileType::NamedPipe,
        NodeKind::Socket => FileType::Socket,
        NodeKind::CharDevice => FileType::CharDevice,
        NodeKind::BlockDevice => FileType::BlockDevice,
    }
}

fn file_attr(s: &Stat) -> FileAttr {
    let kind = file_type(s.kind);
    FileAttr {
        ino: INodeNo(s.ino),
        size: s.size,
        blocks: s.size.div_ceil(512),
        atime: s.atime,
        mtime: s.mtime,
        ctime: s.ctime,
        crtime: s.ctime,
        kind,
        perm: (s.perm & 0o7777) as u16,
        nlink: s.nlink,
        uid: s.uid,
        gid: s.gid,
        rdev: s.rdev,
        blksize: 4096,
        flags: 0,
    }
}

fn caller(req: &Request) -> Caller {
    Caller {
        uid: req.uid(),
        gid: req.gid(),
        pid: req.pid(),
    }
}

fn time_of(t: Option<TimeOrNow>) -> Option<SystemTime> {
    t.map(|t| match t {
        TimeOrNow::SpecificTime(t) => t,
        TimeOrNow::Now => SystemTime::now(),
    })
}

fn xattr_reply(reply: ReplyXattr, result: FsResult<XattrReply>) {
    match result {
        Ok(XattrReply::Size(n)) => reply.size(n),
        Ok(XattrReply::Data(d)) => reply.data(&d),
        Err(e) => reply.error(Errno::from_i32(e.0)),
    }
}

fn entry(reply: ReplyEntry, s: Stat, fs: &S3Filesystem) {
    reply.entry(&fs.ttl(), &file_attr(&s), Generation(0));
}

/// Flags of an opened file: `keep_cache` when the kernel's pages of the file still hold its
/// content (an unchanged object), unless the mount bypasses the page cache (`direct_io`).
fn open_flags(direct_io: bool, keep_cache: bool) -> FopenFlags {
    if direct_io {
        FopenFlags::FOPEN_DIRECT_IO
    } else if keep_cache {
        FopenFlags::FOPEN_KEEP_CACHE
    } else {
        FopenFlags::empty()
    }
}

impl Filesystem for FuseAdapter {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // READDIRPLUS_AUTO: the kernel asks for attributes with the listing when the caller
        // stats what it lists (`ls -l`), and lists by name only otherwise (`ls`, `find`).
        let mut wanted = InitFlags::FUSE_PARALLEL_DIROPS
            | InitFlags::FUSE_ASYNC_READ
            | InitFlags::FUSE_BIG_WRITES
            | InitFlags::FUSE_DO_READDIRPLUS
            | InitFlags::FUSE_READDIRPLUS_AUTO
            // rossfs clears the set-ID bits on write, truncate and chown itself (see
            // `kill_setid`): the kernel then makes no GETATTR before a chown and no GETXATTR
            // of `security.capability` before every write(2) (rossfs stores no security.*
            // attributes, so there is no capability to drop).
            | InitFlags::FUSE_HANDLE_KILLPRIV_V2;
        if self.direct_io {
            // Without it the kernel refuses shared mappings of direct-I/O files (ENODEV);
            // with it (Linux 6.6+) a mapping uses the page cache and the kernel keeps it
            // coherent with the direct reads and writes.
            wanted |= InitFlags::FUSE_DIRECT_IO_ALLOW_MMAP;
        }
        let supported = config.capabilities() & wanted;
        if let Err(e) = config.add_capabilities(supported) {
            tracing::debug!("kernel refused capabilities {e:?}");
        }
        self.kills_setid = supported.contains(InitFlags::FUSE_HANDLE_KILLPRIV_V2);
        tracing::debug!(offered = ?config.capabilities(), asked = ?supported, "FUSE capabilities");
        if self.direct_io && !supported.contains(InitFlags::FUSE_DIRECT_IO_ALLOW_MMAP) {
            tracing::warn!(
                "direct_io: this kernel cannot map direct-I/O files shared (Linux 6.6 can); \
                 mmap(MAP_SHARED) of files on this mount fails with ENODEV, private mappings work"
            );
        }
        let _ = config.set_max_background(64);
        let _ = config.set_congestion_threshold(48);
        let _ = config.set_max_write(1024 * 1024);
        Ok(())
    }

    fn destroy(&mut self) {
        tracing::debug!("FUSE session ends");
    }

    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let start = Instant::now();
        let cached = CALLER_PID.sync_scope(req.pid(), || self.fs.lookup_in_memory(parent.0, name));
        let Some(reply) = self.answer_now("lookup", start, cached, reply, entry) else {
            return;
        };
        let name = name.to_owned();
        self.spawn(
            req,
            "lookup",
            reply,
            move |fs| async move { fs.lookup(parent.0, &name).await },
            entry,
        );
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.fs.forget(ino.0, nlookup);
    }

    fn getattr(&self, req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let start = Instant::now();
        let cached = self.fs.getattr_in_memory(ino.0);
        let attr = |r: ReplyAttr, s: Stat, fs: &S3Filesystem| r.attr(&fs.ttl(), &file_attr(&s));
        let Some(reply) = self.answer_now("getattr", start, cached, reply, attr) else {
            return;
        };
        self.spawn(
            req,
            "getattr",
            reply,
            move |fs| async move { fs.getattr(ino.0).await },
            |r, s, fs| r.attr(&fs.ttl(), &file_attr(&s)),
        );
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        tracing::trace!(ino = ino.0, ?mode, ?uid, ?gid, ?size, "setattr");
        // With KILLPRIV_V2 the kernel flags a chown of a file (always) and a truncate by a
        // caller without CAP_FSETID for clearing the set-ID bits; fuser does not pass the flag
        // on, so a truncate is taken to clear them unless root makes it. A request that
        // changes nothing is a chown(path, -1, -1), or the kernel clearing them before a write
        // (it strips the flags and sends what is left), which clear them too; the filesystem
        // leaves a directory's alone.
        let changes_nothing = [mode, uid, gid].iter().all(Option::is_none)
            && size.is_none()
            && atime.is_none()
            && mtime.is_none();
        let kill_setid = self.kills_setid
            && (uid.is_some() || gid.is_some() || changes_nothing || (size.is_some() && req.uid() != 0));
        let change = AttrChange {
            mode,
            uid,
            gid,
            size,
            atime: time_of(atime),
            mtime: time_of(mtime),
            kill_setid,
            killer: (req.uid() != 0).then(|| caller(req)),
            kill_only_for_owner: changes_nothing,
        };
        let attr = |r: ReplyAttr, s: Stat, fs: &S3Filesystem| r.attr(&fs.ttl(), &file_attr(&s));
        let start = Instant::now();
        let now = self.fs.setattr_now(ino.0, &change);
        let Some(reply) = self.answer_now("setattr", start, now, reply, attr) else {
            return;
        };
        self.spawn(
            req,
            "setattr",
            reply,
            move |fs| async move { fs.setattr(ino.0, change).await },
            attr,
        );
    }

    fn mkdir(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, reply: ReplyEntry) {
        let (name, who) = (name.to_owned(), caller(req));
        self.spawn(
            req,
            "mkdir",
            reply,
            move |fs| async move { fs.mkdir(parent.0, &name, mode & !umask, who).await },
            entry,
        );
    }

    fn unlink(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let name = name.to_owned();
        self.spawn(
            req,
            "unlink",
            reply,
            move |fs| async move { fs.unlink(parent.0, &name).await },
            |r, (), _| r.ok(),
        );
    }

    fn rmdir(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let name = name.to_owned();
        self.spawn(
            req,
            "rmdir",
            reply,
            move |fs| async move { fs.rmdir(parent.0, &name).await },
            |r, (), _| r.ok(),
        );
    }

    fn symlink(&self, req: &Request, parent: INodeNo, name: &OsStr, target: &Path, reply: ReplyEntry) {
        let (name, target, who) = (name.to_owned(), target.as_os_str().to_owned(), caller(req));
        self.spawn(
            req,
            "symlink",
            reply,
            move |fs| async move { fs.symlink(parent.0, &name, &target, who).await },
            entry,
        );
    }

    fn readlink(&self, req: &Request, ino: INodeNo, reply: ReplyData) {
        self.spawn(
            req,
            "readlink",
            reply,
            move |fs| async move { fs.readlink(ino.0).await },
            |r, data, _| r.data(&data),
        );
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
        let (name, who) = (name.to_owned(), caller(req));
        let mode = (mode & !0o7777) | (mode & 0o7777 & !umask);
        self.spawn(
            req,
            "mknod",
            reply,
            move |fs| async move { fs.mknod(parent.0, &name, mode, rdev, who).await },
            entry,
        );
    }

    fn rename(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let (name, newname) = (name.to_owned(), newname.to_owned());
        self.spawn(
            req,
            "rename",
            reply,
            move |fs| async move {
                fs.rename(parent.0, &name, newparent.0, &newname, flags.bits())
                    .await
            },
            |r, (), _| r.ok(),
        );
    }

    fn setxattr(
        &self,
        req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        let (name, value) = (name.to_owned(), value.to_vec());
        self.spawn(
            req,
            "setxattr",
            reply,
            move |fs| async move { fs.setxattr(ino.0, &name, &value, flags).await },
            |r, (), _| r.ok(),
        );
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        // In memory: answered inline (the kernel asks for security.capability on writes).
        xattr_reply(reply, self.fs.getxattr(ino.0, name, size));
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        xattr_reply(reply, self.fs.listxattr(ino.0, size));
    }

    fn removexattr(&self, req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let name = name.to_owned();
        self.spawn(
            req,
            "removexattr",
            reply,
            move |fs| async move { fs.removexattr(ino.0, &name).await },
            |r, (), _| r.ok(),
        );
    }

    fn fallocate(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        // As a write (the kernel sends no flag with a fallocate; root keeps the bits).
        let killer = (self.kills_setid && req.uid() != 0).then(|| caller(req));
        self.spawn(
            req,
            "fallocate",
            reply,
            move |fs| async move { fs.fallocate(fh.0, offset, length, mode, killer).await },
            |r, (), _| r.ok(),
        );
    }

    fn link(&self, _req: &Request, ino: INodeNo, _newparent: INodeNo, _newname: &OsStr, reply: ReplyEntry) {
        match self.fs.link(ino.0) {
            Ok(s) => entry(reply, s, &self.fs),
            Err(e) => reply.error(Errno::from_i32(e.0)),
        }
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let pid = req.pid();
        tracing::trace!(ino = ino.0, flags = format!("{:#o}", flags.0), "open");
        let direct_io = self.direct_io;
        let opened = move |r: ReplyOpen, (fh, keep_cache): (u64, bool), _: &S3Filesystem| {
            r.opened(FileHandle(fh), open_flags(direct_io, keep_cache))
        };
        let start = Instant::now();
        let now = self.fs.open_now(ino.0, flags.0, pid);
        let Some(reply) = self.answer_now("open", start, now, reply, opened) else {
            return;
        };
        self.spawn(
            req,
            "open",
            reply,
            move |fs| async move { fs.open(ino.0, flags.0, pid).await },
            opened,
        );
    }

    fn read(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        self.spawn(
            req,
            "read",
            reply,
            move |fs| async move { fs.read(fh.0, offset, size).await },
            |r, data, _| r.data(&data),
        );
    }

    fn write(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let start = Instant::now();
        let pid = req.pid();
        // The kernel flags a write by a caller without CAP_FSETID when it leaves the set-ID
        // bits to rossfs (KILLPRIV_V2, and every direct_io write); a kernel without the flag
        // on direct_io writes gets the same for anyone but root.
        let kernel_asks = write_flags.contains(WriteFlags::FUSE_WRITE_KILL_SUIDGID);
        if kernel_asks || (self.direct_io && !self.kills_setid && req.uid() != 0) {
            let _ = self.fs.clear_setid_for_write(fh.0, &caller(req));
        }
        let now = self.fs.write_now(fh.0, offset, data, pid);
        let Some(reply) = self.answer_now("write", start, now, reply, |r, n, _| r.written(n)) else {
            return;
        };
        let data = data.to_vec();
        self.spawn(
            req,
            "write",
            reply,
            move |fs| async move { fs.write(fh.0, offset, data, pid).await },
            |r, n, _| r.written(n),
        );
    }

    fn flush(&self, req: &Request, _ino: INodeNo, fh: FileHandle, _lock_owner: LockOwner, reply: ReplyEmpty) {
        let start = Instant::now();
        let now = self.fs.flush_now(fh.0);
        let Some(reply) = self.answer_now("flush", start, now, reply, |r, (), _| r.ok()) else {
            return;
        };
        let pid = req.pid();
        self.spawn(
            req,
            "flush",
            reply,
            move |fs| async move { fs.flush(fh.0, pid).await },
            |r, (), _| r.ok(),
        );
    }

    fn release(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let start = Instant::now();
        let now = self.fs.release_now(fh.0);
        let Some(reply) = self.answer_now("release", start, now, reply, |r, (), _| r.ok()) else {
            return;
        };
        self.spawn(
            req,
            "release",
            reply,
            move |fs| async move { fs.release(fh.0).await },
            |r, (), _| r.ok(),
        );
    }

    fn fsync(&self, req: &Request, _ino: INodeNo, fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        self.spawn(
            req,
            "fsync",
            reply,
            move |fs| async move { fs.fsync(fh.0).await },
            |r, (), _| r.ok(),
        );
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.fs.opendir(ino.0) {
            // The kernel may cache what readdir returns; it keeps that cache across opens only
            // while the mount knows the directory's contents (own changes through the kernel
            // invalidate it anyway), so a warm `ls` is served without a request to us.
            Ok((fh, known)) => reply.opened(
                FileHandle(fh),
                if known {
                    FopenFlags::FOPEN_CACHE_DIR | FopenFlags::FOPEN_KEEP_CACHE
                } else {
                    FopenFlags::FOPEN_CACHE_DIR
                },
            ),
            Err(e) => reply.error(Errno::from_i32(e.0)),
        }
    }

    fn readdir(&self, req: &Request, _ino: INodeNo, fh: FileHandle, offset: u64, reply: ReplyDirectory) {
        let fs = self.fs.clone();
        let start = Instant::now();
        self.rt.spawn(CALLER_PID.scope(req.pid(), async move {
            let mut reply = reply;
            let result = fs
                .readdir(fh.0, offset, |e, next| {
                    reply.add(INodeNo(e.ino), next, file_type(e.kind), &e.name)
                })
                .await;
            metrics::global().fuse_op("readdir", start.elapsed(), result.is_err());
            match result {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(Errno::from_i32(e.0)),
            }
        }));
    }

    fn readdirplus(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        reply: ReplyDirectoryPlus,
    ) {
        let fs = self.fs.clone();
        let start = Instant::now();
        self.rt.spawn(CALLER_PID.scope(req.pid(), async move {
            let mut reply = reply;
            let ttl = fs.ttl();
            let result = fs
                .readdirplus(fh.0, offset, |e, s, next| {
                    reply.add(INodeNo(e.ino), next, &e.name, &ttl, &file_attr(s), Generation(0))
                })
                .await;
            metrics::global().fuse_op("readdirplus", start.elapsed(), result.is_err());
            match result {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(Errno::from_i32(e.0)),
            }
        }));
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.fs.releasedir(fh.0);
        reply.ok();
    }

    fn fsyncdir(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let s = self.fs.statfs();
        reply.statfs(
            s.blocks, s.bfree, s.bfree, s.files, s.ffree, s.bsize, s.namelen, s.bsize,
        );
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        // The kernel checks permissions itself (default_permissions).
        reply.ok();
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
        let who = caller(req);
        let opened_as = open_flags(self.direct_io, false);
        let created = move |r: ReplyCreate, (s, fh): (Stat, u64), fs: &S3Filesystem| {
            r.created(
                &fs.ttl(),
                &file_attr(&s),
                Generation(0),
                FileHandle(fh),
                opened_as,
            )
        };
        let start = Instant::now();
        let now = CALLER_PID.sync_scope(req.pid(), || {
            self.fs.create_now(parent.0, name, mode & !umask, who)
        });
        let Some(reply) = self.answer_now("create", start, now, reply, created) else {
            return;
        };
        let name = name.to_owned();
        self.spawn(
            req,
            "create",
            reply,
            move |fs| async move { fs.create(parent.0, &name, mode & !umask, who).await },
            created,
        );
    }
}
