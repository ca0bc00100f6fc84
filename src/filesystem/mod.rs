//! The filesystem core: POSIX operations on top of the namespace, attributes and file I/O.
//!
//! [`S3Filesystem`] implements each operation as an `async fn` returning plain data or an
//! [`Errno`]; it knows nothing about the FUSE wire protocol (the adapter in `fuse_adapter`
//! translates). It owns the open handles and the per-inode write state, decides when data is
//! uploaded (flush, fsync, close, setattr on a closed file) and keeps the namespace caches in
//! step with its own changes. Anything that may wait on the network is `async`; the inode table
//! and caches are only touched under short synchronous locks.

mod dir;
mod file;
mod moves;
mod prefetch;
mod rename;
mod special;
mod subtree;
mod xattr;

use std::collections::HashMap;
use std::ffi::OsStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use crate::attr::{self, Attributes, NodeKind, Presentation};
use crate::fileio::{MimeTypes, StagingConfig};
use crate::namespace::names::{check_name, NameError};
use crate::namespace::resolve::{implicit_dir_state, state_from_head};
use crate::namespace::{InodeTable, Node, StatCache, ROOT_INO};
use crate::options::{HardlinkErrno, MountOptions, MountSource};
use crate::store::{ObjectStore, PutOptions, StoreError};

pub use dir::DirHandle;
pub use file::{FileData, FileHandle};
pub use xattr::XattrReply;

/// An errno to return to the caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Errno(pub i32);

/// Longest key S3 accepts, in bytes.
const MAX_KEY_LEN: usize = 1024;

impl Errno {
    /// Operation not permitted.
    pub const EPERM: Errno = Errno(libc::EPERM);
    /// No such file or directory.
    pub const ENOENT: Errno = Errno(libc::ENOENT);
    /// I/O error.
    pub const EIO: Errno = Errno(libc::EIO);
    /// Bad file handle.
    pub const EBADF: Errno = Errno(libc::EBADF);
    /// Already exists.
    pub const EEXIST: Errno = Errno(libc::EEXIST);
    /// Not a directory.
    pub const ENOTDIR: Errno = Errno(libc::ENOTDIR);
    /// Is a directory.
    pub const EISDIR: Errno = Errno(libc::EISDIR);
    /// Invalid argument.
    pub const EINVAL: Errno = Errno(libc::EINVAL);
    /// Read-only filesystem.
    pub const EROFS: Errno = Errno(libc::EROFS);
    /// Name too long.
    pub const ENAMETOOLONG: Errno = Errno(libc::ENAMETOOLONG);
    /// The kernel's entry led to a file that is gone: it looks the name up again.
    pub const ESTALE: Errno = Errno(libc::ESTALE);
    /// Directory not empty.
    pub const ENOTEMPTY: Errno = Errno(libc::ENOTEMPTY);
    /// Operation not supported.
    pub const ENOTSUP: Errno = Errno(libc::ENOTSUP);
    /// No such attribute.
    pub const ENODATA: Errno = Errno(libc::ENODATA);
    /// Buffer too small.
    pub const ERANGE: Errno = Errno(libc::ERANGE);
    /// Argument list (here: metadata) too long.
    pub const E2BIG: Errno = Errno(libc::E2BIG);
    /// Function not implemented.
    pub const ENOSYS: Errno = Errno(libc::ENOSYS);
}

impl From<StoreError> for Errno {
    fn from(e: StoreError) -> Self {
        if !e.is_not_found() {
            tracing::warn!("{e}");
        }
        Errno(e.errno())
    }
}

impl From<std::io::Error> for Errno {
    fn from(e: std::io::Error) -> Self {
        tracing::error!("local staging I/O failed: {e}");
        Errno(e.raw_os_error().unwrap_or(libc::EIO))
    }
}

impl From<NameError> for Errno {
    fn from(e: NameError) -> Self {
        match e {
            NameError::TooLong => Errno::ENAMETOOLONG,
            NameError::Invalid => Errno::EINVAL,
        }
    }
}

/// Result of a filesystem operation.
pub type FsResult<T> = Result<T, Errno>;

/// Attributes as the kernel should see them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stat {
    /// Inode number.
    pub ino: u64,
    /// Kind.
    pub kind: NodeKind,
    /// Permission bits shown (after presentation overrides).
    pub perm: u32,
    /// Owner shown.
    pub uid: u32,
    /// Group shown.
    pub gid: u32,
    /// Size.
    pub size: u64,
    /// Access time.
    pub atime: SystemTime,
    /// Modification time.
    pub mtime: SystemTime,
    /// Change time.
    pub ctime: SystemTime,
    /// Device number (device nodes).
    pub rdev: u32,
    /// Links: 0 once unlinked or removed (a descriptor still open on it), else 2 for a
    /// directory and 1 for anything else.
    pub nlink: u32,
}

/// Who is asking, from the FUSE request header.
#[derive(Clone, Copy, Debug)]
pub struct Caller {
    /// Effective uid.
    pub uid: u32,
    /// Effective gid.
    pub gid: u32,
    /// The calling thread's id.
    pub pid: u32,
}

/// What a `setattr` changes (`None`: left as it is).
#[derive(Clone, Copy, Debug, Default)]
pub struct AttrChange {
    /// Permission bits (the file type bits are ignored).
    pub mode: Option<u32>,
    /// Owner.
    pub uid: Option<u32>,
    /// Group.
    pub gid: Option<u32>,
    /// New length (truncate or extend).
    pub size: Option<u64>,
    /// Access time.
    pub atime: Option<SystemTime>,
    /// Modification time.
    pub mtime: Option<SystemTime>,
    /// Also clear the set-ID bits as Linux does (see [`attr::without_setid`]) on a chown and
    /// on a truncate by a caller without `CAP_FSETID`: set when the kernel leaves that to
    /// rossfs. A directory keeps its bits.
    pub kill_setid: bool,
    /// Who clears them where it matters: `None` for root, or once [`Self::for_file`] found the
    /// caller in the file's group, keeps a set-group-ID bit without group execute.
    pub killer: Option<Caller>,
    /// The request changes nothing else: a `chown(path, -1, -1)`, or the kernel clearing the
    /// bits before a write by someone other than root. The bits go then only if `killer` owns
    /// the file (or is root). (ext4 refuses such a chown by anyone else with EPERM; rossfs
    /// cannot tell it from a write's clearing, and the write that follows clears them itself.)
    pub kill_only_for_owner: bool,
}

impl AttrChange {
    /// This change as it applies to the file `a` is about (owner and group as before it):
    /// see [`AttrChange::kill_only_for_owner`], and whether the killer is in its group
    /// (asked here, not under the inode table's lock).
    /// A clearing that would change nothing (no set-ID bits, a directory) is dropped, so it
    /// costs no request and marks nothing for upload.
    fn for_file(mut self, a: &attr::Attributes) -> Self {
        if !self.kill_setid {
            return self;
        }
        if let Some(c) = self.killer {
            if self.kill_only_for_owner && c.uid != a.uid {
                self.kill_setid = false;
                return self;
            }
            if a.perm & 0o2010 == 0o2000 && attr::process_in_group(c.pid, c.uid, c.gid, a.gid) {
                self.killer = None;
            }
        }
        if a.kind == NodeKind::Dir || self.without_setid(a.perm) == a.perm {
            self.kill_setid = false;
        }
        self
    }

    /// Changes nothing at all (what is left of a `chown(path, -1, -1)` of a file without
    /// set-ID bits).
    fn is_empty(&self) -> bool {
        self.size.is_none() && !self.is_metadata()
    }

    /// `perm` without the set-ID bits this change clears.
    fn without_setid(&self, perm: u32) -> u32 {
        attr::without_setid(perm, || self.killer.is_none())
    }

    /// Changes attributes other than the size (clearing the set-ID bits is a mode change).
    fn is_metadata(&self) -> bool {
        self.mode.is_some()
            || self.uid.is_some()
            || self.gid.is_some()
            || self.kill_setid
            || self.sets_times()
    }

    /// Sets a time explicitly.
    fn sets_times(&self) -> bool {
        self.atime.is_some() || self.mtime.is_some()
    }
}

/// Settings of the core taken from the mount options.
#[derive(Clone, Debug)]
pub struct FsConfig {
    /// Refuse every change with EROFS.
    pub read_only: bool,
    /// Multipart part size.
    pub part_size: u64,
    /// Parts (or prefetch chunks) in flight per file.
    pub parallel: usize,
    /// Where writes are staged.
    pub staging: StagingConfig,
    /// How long the kernel may cache entries and attributes.
    pub ttl: Duration,
    /// Errno for `link(2)`.
    pub hardlink_errno: HardlinkErrno,
}

/// Filesystem-wide numbers for `statfs`; object storage has no real limits, so these are large.
#[derive(Clone, Copy, Debug)]
pub struct FsStats {
    /// Block size.
    pub bsize: u32,
    /// Total blocks.
    pub blocks: u64,
    /// Free blocks.
    pub bfree: u64,
    /// Total inodes.
    pub files: u64,
    /// Free inodes.
    pub ffree: u64,
    /// Longest name.
    pub namelen: u32,
}

/// A counted reference to an inode's write state.
#[derive(Default)]
struct FileDataRef {
    /// Open handles plus one-off changes holding the state.
    refs: usize,
    /// Of those, handles open for writing (only they upload at a close).
    writers: usize,
    data: Arc<tokio::sync::Mutex<FileData>>,
}

/// The mounted bucket.
pub struct S3Filesystem {
    store: Arc<ObjectStore>,
    prefix: String,
    table: InodeTable,
    cache: StatCache,
    pres: Presentation,
    cfg: FsConfig,
    mount_time: SystemTime,
    /// Write state per inode, with the number of references (open handles, one-off changes).
    files: Mutex<HashMap<u64, FileDataRef>>,
    file_handles: Mutex<HashMap<u64, Arc<FileHandle>>>,
    dir_handles: Mutex<HashMap<u64, Arc<tokio::sync::Mutex<DirHandle>>>>,
    next_fh: AtomicU64,
    /// Content types by extension, for new objects.
    mime: MimeTypes,
    /// Directories whose complete contents the mount knows (misses need no request).
    complete: crate::namespace::complete::CompleteDirs,
    /// Recent directory listings, for metadata prefetch.
    listings: Mutex<prefetch::ListingMemory>,
    /// Paths being resolved, shared by lookups and prefetches.
    resolving: prefetch::InFlight,
    /// Directories being listed to answer lookup misses.
    learning: prefetch::Learning,
    /// Read-ahead memory shared by all open files.
    read_budget: crate::fileio::ReadBudget,
    /// Bounds the prefetch requests in flight.
    prefetch_permits: Arc<tokio::sync::Semaphore>,
    /// This filesystem, for tasks that outlive a request.
    me: std::sync::Weak<S3Filesystem>,
    /// The runtime, for tasks started from a FUSE thread (construct inside the runtime's
    /// context to have one).
    rt: Option<tokio::runtime::Handle>,
    /// Paths seen in listings only as s3fs `name_$folder$` markers.
    legacy_dirs: Mutex<std::collections::HashSet<String>>,
    /// Directories known from flat listings of subtrees being walked.
    subtree: Mutex<subtree::SubtreeKnowledge>,
    /// The kernel's caches of this mount, once the FUSE session exists.
    kernel: std::sync::OnceLock<Box<dyn KernelCache>>,
    /// Directory renames in progress, and the operations writing under some directory.
    moves: moves::TreeMoves,
}

/// What the kernel caches of the mount (entries, attributes, pages), for the rare change that
/// reaches it other than as the answer to a request: the daemon hands the FUSE session's
/// notification channel in through [`S3Filesystem::set_kernel_cache`].
pub trait KernelCache: Send + Sync {
    /// Drops the attributes and pages the kernel holds for inode `ino`.
    fn forget_inode(&self, ino: u64);
    /// Drops the kernel's entry for `name` in directory `parent`.
    fn forget_entry(&self, parent: u64, name: &OsStr);
}

impl std::fmt::Debug for S3Filesystem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Filesystem")
            .field("bucket", &self.store.bucket())
            .field("prefix", &self.prefix)
            .field("inodes", &self.table.len())
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl S3Filesystem {
    /// A filesystem over `store` rooted at `source.prefix`, presenting objects as `opts` say.
    pub fn new(
        store: Arc<ObjectStore>,
        source: &MountSource,
        opts: &MountOptions,
        mime: MimeTypes,
    ) -> Arc<Self> {
        // SAFETY: geteuid/getegid have no preconditions.
        let (euid, egid) = unsafe { (libc::geteuid(), libc::getegid()) };
        let root_perm = if opts.allow_other {
            0o777 & !opts.mp_umask.unwrap_or(0)
        } else {
            0o700
        };
        let pres = Presentation {
            default_uid: euid,
            default_gid: egid,
            file_mode: opts.file_mode & 0o7777,
            dir_mode: opts.dir_mode & 0o7777,
            force_uid: opts.uid,
            force_gid: opts.gid,
            umask: opts.umask,
            root_perm,
        };
        let mount_time = SystemTime::now();
        let mut root = implicit_dir_state(&pres, mount_time);
        root.attr.perm = root_perm;
        let cfg = FsConfig {
            read_only: opts.read_only,
            part_size: opts.multipart_size,
            parallel: opts.parallel_count,
            staging: StagingConfig {
                memory_limit: opts.memory_staging_limit,
                dir: opts.cache_dir.clone().unwrap_or_else(std::env::temp_dir),
            },
            ttl: opts.stat_cache_expire,
            hardlink_errno: opts.hardlink_errno,
        };
        Arc::new_cyclic(|me| Self {
            store,
            prefix: source.prefix.clone(),
            table: InodeTable::new(root),
            cache: StatCache::new(
                opts.max_stat_cache_size,
                opts.stat_cache_expire,
                opts.negative_cache,
            ),
            pres,
            cfg,
            mount_time,
            files: Mutex::new(HashMap::new()),
            file_handles: Mutex::new(HashMap::new()),
            dir_handles: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            legacy_dirs: Mutex::new(Default::default()),
            subtree: Mutex::new(Default::default()),
            mime,
            listings: Mutex::new(Default::default()),
            // Knowing a directory's contents means knowing which names are absent: without
            // the negative cache, every lookup and listing asks the store.
            complete: crate::namespace::complete::CompleteDirs::new(if opts.negative_cache {
                opts.stat_cache_expire
            } else {
                Duration::ZERO
            }),
            resolving: Mutex::new(Default::default()),
            learning: Mutex::new(Default::default()),
            prefetch_permits: Arc::new(tokio::sync::Semaphore::new(prefetch::PREFETCH_PARALLEL)),
            me: me.clone(),
            rt: tokio::runtime::Handle::try_current().ok(),
            read_budget: crate::fileio::ReadBudget::new(opts.max_memory),
            kernel: std::sync::OnceLock::new(),
            moves: Default::default(),
        })
    }

    /// Connects the mount to the kernel's caches (once; later calls are ignored).
    pub fn set_kernel_cache(&self, kernel: Box<dyn KernelCache>) {
        let _ = self.kernel.set(kernel);
    }

    /// Has the kernel drop what it caches of inode `ino`. The notification waits for the
    /// kernel (which may wait for pages being read), so it is sent from a blocking thread.
    fn kernel_forget_inode(&self, ino: u64) {
        self.notify_kernel(move |k| k.forget_inode(ino));
    }

    /// Has the kernel drop its entry for `name` in `parent` (see [`Self::kernel_forget_inode`]).
    fn kernel_forget_entry(&self, parent: u64, name: &OsStr) {
        let name = name.to_os_string();
        self.notify_kernel(move |k| k.forget_entry(parent, &name));
    }

    fn notify_kernel(&self, send: impl FnOnce(&dyn KernelCache) + Send + 'static) {
        let (Some(me), Some(rt)) = (
            self.me.upgrade(),
            tokio::runtime::Handle::try_current()
                .ok()
                .or_else(|| self.rt.clone()),
        ) else {
            return;
        };
        if me.kernel.get().is_some() {
            rt.spawn_blocking(move || {
                if let Some(k) = me.kernel.get() {
                    send(k.as_ref());
                }
            });
        }
    }

    /// How long the kernel may cache entries and attributes.
    pub fn ttl(&self) -> Duration {
        self.cfg.ttl
    }

    /// Number of inodes currently held.
    pub fn inode_count(&self) -> usize {
        self.table.len()
    }

    fn new_fh(&self) -> u64 {
        self.next_fh.fetch_add(1, Ordering::Relaxed)
    }

    /// The paths of inodes `inos` (`None` if one is gone), for [`moves::TreeMoves::work`].
    fn paths_of(&self, inos: &[u64]) -> Option<Vec<String>> {
        inos.iter().map(|&ino| self.table.path_of(ino)).collect()
    }

    fn key_for_path(&self, path: &str) -> String {
        format!("{}{}", self.prefix, path)
    }

    /// The s3fs `name_$folder$` marker of the directory at `path`, if a listing showed one.
    fn legacy_marker(&self, path: &str) -> Option<String> {
        lock(&self.legacy_dirs).contains(path).then(|| {
            format!(
                "{}{}",
                self.key_for_path(path),
                crate::namespace::names::FOLDER_SUFFIX
            )
        })
    }

    /// Deletes the directory at `path`'s s3fs `name_$folder$` marker, if a listing showed one
    /// and it is not `marker` (deleted by the caller).
    async fn delete_legacy_marker(&self, path: &str, marker: Option<&str>) -> FsResult<()> {
        if let Some(legacy) = self.legacy_marker(path) {
            if marker != Some(legacy.as_str()) {
                self.store.delete(&legacy).await?;
            }
            lock(&self.legacy_dirs).remove(path);
        }
        Ok(())
    }

    /// ENAMETOOLONG for a key of `len` bytes, which S3 would refuse (over 1024 bytes, the
    /// mount's prefix included), before anything is written under it.
    fn check_key_len(len: usize) -> FsResult<()> {
        if len > MAX_KEY_LEN {
            tracing::warn!(
                "refusing a name whose S3 key would be {len} bytes: S3 allows {MAX_KEY_LEN} (the mount's prefix counts); use a shorter name or a shorter path"
            );
            Err(Errno::ENAMETOOLONG)
        } else {
            Ok(())
        }
    }

    /// Key of a directory's marker object (`prefix/path/`; the prefix itself for the root).
    fn dir_key(&self, path: &str) -> String {
        if path.is_empty() {
            self.prefix.clone()
        } else {
            format!("{}{}/", self.prefix, path)
        }
    }

    fn stat_of(&self, node: &Node) -> Stat {
        let a = &node.state.attr;
        let (perm, uid, gid) = self.pres.shown(a, node.ino == ROOT_INO);
        Stat {
            ino: node.ino,
            kind: a.kind,
            perm,
            uid,
            gid,
            size: a.size,
            atime: a.atime,
            mtime: a.mtime,
            ctime: a.ctime,
            rdev: a.rdev,
            nlink: match (node.linked, a.kind) {
                (false, _) => 0,
                (true, NodeKind::Dir) => 2,
                (true, _) => 1,
            },
        }
    }

    fn node(&self, ino: u64) -> FsResult<Node> {
        self.table.get(ino).ok_or(Errno::ENOENT)
    }

    fn dir_node(&self, ino: u64) -> FsResult<Node> {
        let n = self.node(ino)?;
        if n.state.attr.kind != NodeKind::Dir {
            return Err(Errno::ENOTDIR);
        }
        Ok(n)
    }

    fn ensure_writable(&self) -> FsResult<()> {
        if self.cfg.read_only {
            Err(Errno::EROFS)
        } else {
            Ok(())
        }
    }

    /// Marks a directory's contents as changed now (mtime and ctime), as the mount presents it.
    fn touch_dir(&self, ino: u64) {
        let now = SystemTime::now();
        self.update_attributes(ino, |a| {
            a.mtime = now;
            a.ctime = now;
        });
    }

    /// Changes a node's attributes in memory and puts the new state in the stat cache at once:
    /// a lookup answered from the cache (or a HEAD of the not yet updated object) while the
    /// change is being stored must not bring the old attributes back into the node.
    fn update_attributes(&self, ino: u64, change: impl FnOnce(&mut crate::attr::Attributes)) {
        let state = self.table.update(ino, |n| {
            change(&mut n.state.attr);
            n.state.clone()
        });
        if let (Some(state), Some(path)) = (state, self.table.path_of(ino)) {
            if ino != ROOT_INO {
                self.cache.put(&path, state);
            }
        }
    }

    /// Resolves `name` in `parent` from memory alone; `None` if that needs the store.
    fn find_child_in_memory(&self, parent: u64, name: &OsStr) -> Option<FsResult<Node>> {
        let name_str = match check_name(name) {
            Ok(n) => n,
            Err(NameError::TooLong) => return Some(Err(Errno::ENAMETOOLONG)),
            Err(NameError::Invalid) => return Some(Err(Errno::ENOENT)),
        };
        if let Err(e) = self.dir_node(parent) {
            return Some(Err(e));
        }
        if let Some(child) = self.table.child(parent, name) {
            if child.local_only
                || (child.opens > 0 && child.state.attr.kind == NodeKind::File && !child.stale)
            {
                return Some(Ok(child));
            }
        }
        let Some(path) = self.table.child_path(parent, name_str) else {
            return Some(Err(Errno::ENOENT));
        };
        if let Some(state) = self.cache.get(&path) {
            crate::metrics::global().stat_cache_hit();
            self.walked(parent, name);
            let ino = self.place_child(parent, name, state, false);
            return Some(self.node(ino));
        }
        if self.cache.is_absent(&path) || self.complete.knows_absent(parent, name) {
            crate::metrics::global().negative_cache_hit();
            return Some(Err(Errno::ENOENT));
        }
        None
    }

    /// `lookup` when memory can answer it (no request); `None` if the store is needed.
    pub fn lookup_in_memory(&self, parent: u64, name: &OsStr) -> Option<FsResult<Stat>> {
        Some(self.find_child_in_memory(parent, name)?.map(|node| {
            self.table.acquire(&node);
            self.stat_of(&node)
        }))
    }

    /// Resolves `name` in `parent` without taking a kernel reference.
    async fn find_child(&self, parent: u64, name: &OsStr) -> FsResult<Node> {
        if let Some(found) = self.find_child_in_memory(parent, name) {
            return found;
        }
        let name_str = check_name(name).map_err(|_| Errno::ENOENT)?;
        let path = self.table.child_path(parent, name_str).ok_or(Errno::ENOENT)?;
        if let Some(parent_path) = self.table.path_of(parent) {
            self.learn_directory(parent, &parent_path).await?;
            if self.complete.knows_absent(parent, name) {
                return Err(Errno::ENOENT);
            }
        }
        let resolved = self.resolve_child(parent, name, &path).await?;
        match resolved {
            Some(state) => {
                let ino = self.place_child(parent, name, state, false);
                self.node(ino)
            }
            None => {
                if let Some(stale) = self.table.child(parent, name) {
                    if !stale.local_only && stale.opens == 0 {
                        self.table.unlink_child(parent, name);
                    }
                }
                // Another client deleted it: readdir should stop showing it too.
                if self.complete.kind_of(parent, name).is_some() {
                    self.complete.removed(parent, name);
                }
                Err(Errno::ENOENT)
            }
        }
    }

    /// `lookup`: resolves a name and takes a kernel reference on it.
    pub async fn lookup(&self, parent: u64, name: &OsStr) -> FsResult<Stat> {
        let node = self.find_child(parent, name).await?;
        self.table.acquire(&node);
        Ok(self.stat_of(&node))
    }

    /// `forget`: the kernel dropped `n` references.
    pub fn forget(&self, ino: u64, n: u64) {
        self.table.forget(ino, n);
    }

    /// `getattr` when memory can answer it; `None` if the store is needed.
    pub fn getattr_in_memory(&self, ino: u64) -> Option<FsResult<Stat>> {
        let node = match self.node(ino) {
            Ok(n) => n,
            Err(e) => return Some(Err(e)),
        };
        if !node.linked {
            // Its old path may name another object now: only memory describes it.
            return Some(Ok(self.stat_of(&node)));
        }
        if node.stale {
            return None;
        }
        if node.state.attr.kind == NodeKind::Dir || node.local_only || node.opens > 0 {
            return Some(Ok(self.stat_of(&node)));
        }
        let path = self.table.path_of(ino)?;
        self.cache.get(&path).is_some().then(|| Ok(self.stat_of(&node)))
    }

    /// `getattr`: directories and files with local changes answer from memory; other files are
    /// re-read from the bucket once their cached attributes expire.
    pub async fn getattr(&self, ino: u64) -> FsResult<Stat> {
        if let Some(answer) = self.getattr_in_memory(ino) {
            return answer;
        }
        self.refresh(ino).await
    }

    /// Reads a file's attributes from the bucket into its node (HEAD).
    async fn refresh(&self, ino: u64) -> FsResult<Stat> {
        let node = self.node(ino)?;
        if !node.linked {
            // Its old path may name another object now.
            return Ok(self.stat_of(&node));
        }
        let path = self.table.path_of(ino).ok_or(Errno::ENOENT)?;
        let key = self.key_for_path(&path);
        let ticket = self.cache.ticket();
        let head = self.store.head(&key).await?;
        if self.cache.changed_since(&path, ticket) {
            // This mount changed the file (or moved it) while the HEAD was out: the node
            // already describes the change.
            return Ok(self.stat_of(&self.node(ino)?));
        }
        match head {
            Some(info) => {
                let state = state_from_head(&info, &self.pres, SystemTime::now());
                if state.attr.kind != node.state.attr.kind {
                    // It became something else: the kernel must look it up again.
                    return Err(Errno::ENOENT);
                }
                if self.cache.put_observed(&path, Some(state.clone()), ticket) {
                    self.table.update(ino, |n| n.refresh_from(state));
                }
                Ok(self.stat_of(&self.node(ino)?))
            }
            None => Err(Errno::ENOENT),
        }
    }

    /// `setattr`: size (truncate), mode, owner and times. Data changes go through the staging
    /// area and are uploaded at close (or now, for a file nobody has open); metadata-only
    /// changes are persisted with a metadata copy of the object.
    pub async fn setattr(&self, ino: u64, change: AttrChange) -> FsResult<Stat> {
        self.ensure_writable()?;
        if self.node(ino)?.stale {
            self.refresh(ino).await?;
        }
        let node = self.node(ino)?;
        let kind = node.state.attr.kind;
        if change.size.is_some() && kind == NodeKind::Dir {
            return Err(Errno::EISDIR);
        }
        let mut change = change.for_file(&node.state.attr);
        if change.is_empty() {
            return Ok(self.stat_of(&node));
        }
        let before = node.state.attr;
        if change.size.is_some_and(|size| size > 0 && size == before.size) && !self.is_staged(ino).await {
            // The same length and nothing staged: only the times move, as on ext4, stored with
            // a metadata copy rather than a download and upload of the content.
            change.size = None;
            change.mtime.get_or_insert_with(SystemTime::now);
        }
        self.apply_attributes(ino, &change);
        if let Some(new_size) = change.size {
            if let Err(e) = self.truncate(ino, new_size).await {
                // The mode, owner or set-ID bits of a truncate that failed stay as they were.
                self.undo_attributes(ino, &change, &before);
                return Err(e);
            }
        } else if change.is_metadata()
            && kind != NodeKind::Dir
            && self.mark_pending_upload(ino, change.sets_times()).await
        {
            // The file is staged: the new attributes travel with its data at the next flush.
        } else if change.is_metadata() && !self.object_holds_already(ino, &before) {
            if let Err(e) = self.persist_metadata(ino).await {
                // A failed chmod/chown/utimens changes nothing, here as on a local disk (and
                // a retry of it must not look like a change already made).
                self.undo_attributes(ino, &change, &before);
                return Err(e);
            }
        }
        Ok(self.stat_of(&self.node(ino)?))
    }

    /// [`Self::setattr`] on the calling thread when it is memory work: a mode, owner or time
    /// change of a file open for writing, which travels with its data. `None` sends the caller
    /// to [`Self::setattr`].
    pub fn setattr_now(&self, ino: u64, change: &AttrChange) -> Option<FsResult<Stat>> {
        if change.size.is_some() || !change.is_metadata() || self.cfg.read_only {
            return None;
        }
        let node = self.node(ino).ok()?;
        if node.state.attr.kind == NodeKind::Dir {
            return None;
        }
        let change = &change.for_file(&node.state.attr);
        if change.is_empty() {
            return Some(Ok(self.stat_of(&node)));
        }
        if !self.has_writer(ino) {
            return None;
        }
        let data = self.files_entry(ino)?;
        let mut d = data.try_lock().ok()?;
        d.staging.as_ref()?;
        self.apply_attributes(ino, change);
        d.changed();
        d.times_set |= change.sets_times();
        drop(d);
        Some(self.node(ino).map(|n| self.stat_of(&n)))
    }

    /// After a metadata change: whether the object already holds every attribute it stores
    /// (a chown to the current owner, as `tar` does for each directory it made; an atime
    /// change is stored). Only the ctime moved then, and the mount shows it without a copy of
    /// the object.
    fn object_holds_already(&self, ino: u64, before: &attr::Attributes) -> bool {
        let Ok(node) = self.node(ino) else {
            return false;
        };
        let now = &node.state.attr;
        node.state.posix_stored
            && now.perm == before.perm
            && now.uid == before.uid
            && now.gid == before.gid
            && now.mtime == before.mtime
            && now.atime == before.atime
    }

    /// Puts back what [`Self::apply_attributes`] set for `change` to its value in `before`,
    /// where nothing changed it again since. The stat cache is only corrected, not refilled:
    /// a failure may have dropped the entry (the object vanished).
    fn undo_attributes(&self, ino: u64, change: &AttrChange, before: &attr::Attributes) {
        let state = self.table.update(ino, |n| {
            let a = &mut n.state.attr;
            let mut perm_set = change.mode.map(|m| m & 0o7777);
            if change.kill_setid && a.kind != NodeKind::Dir {
                perm_set = Some(change.without_setid(perm_set.unwrap_or(before.perm)));
            }
            if perm_set == Some(a.perm) {
                a.perm = before.perm;
            }
            if change.uid == Some(a.uid) {
                a.uid = before.uid;
            }
            if change.gid == Some(a.gid) {
                a.gid = before.gid;
            }
            if change.atime == Some(a.atime) {
                a.atime = before.atime;
            }
            if change.mtime == Some(a.mtime) {
                a.mtime = before.mtime;
            }
            n.state.clone()
        });
        if let (Some(state), Some(path)) = (state, self.table.path_of(ino)) {
            if ino != ROOT_INO && self.cache.get(&path).is_some() {
                self.cache.put(&path, state);
            }
        }
    }

    fn apply_attributes(&self, ino: u64, change: &AttrChange) {
        let now = SystemTime::now();
        let c = change;
        self.update_attributes(ino, |a| {
            if let Some(m) = c.mode {
                a.perm = m & 0o7777;
            }
            if c.kill_setid && a.kind != NodeKind::Dir {
                a.perm = c.without_setid(a.perm);
            }
            if let Some(u) = c.uid {
                a.uid = u;
            }
            if let Some(g) = c.gid {
                a.gid = g;
            }
            if let Some(t) = c.atime {
                a.atime = t;
            }
            if let Some(t) = c.mtime {
                a.mtime = t;
            }
            if c.is_metadata() || c.size.is_some() {
                a.ctime = now;
            }
        });
    }

    /// Puts the child `name` of `parent` in the inode table from `state` (see
    /// [`InodeTable::upsert_child`]); returns its inode. A new node may take the number of an
    /// earlier one at the same path (numbers are path hashes), so nothing learned about that
    /// earlier directory's contents is carried over to it.
    pub(super) fn place_child(
        &self,
        parent: u64,
        name: &OsStr,
        state: crate::namespace::ObjectState,
        local_only: bool,
    ) -> u64 {
        let is_dir = state.attr.kind == NodeKind::Dir;
        let (ino, new) = self.table.upsert_child(parent, name, state, local_only);
        if new && is_dir {
            self.complete.forget(ino);
        }
        ino
    }

    /// Before an entry leaves directory `dir`: if `dir` is implicit (no marker object; it
    /// exists only because keys live under it), writes its marker, so it stays when its last
    /// entry goes, as an empty directory on a local disk does. One PUT per such directory.
    pub(super) async fn keep_implicit_dir(&self, dir: u64) -> FsResult<()> {
        if dir == ROOT_INO {
            return Ok(());
        }
        let node = self.node(dir)?;
        if node.state.dir_marker.is_some() || node.local_only || !node.linked {
            return Ok(());
        }
        self.persist_metadata(dir).await
    }

    /// Writes the node's attributes to its object (or creates the marker of an implicit
    /// directory), guarded by the ETag last seen.
    async fn persist_metadata(&self, ino: u64) -> FsResult<()> {
        self.persist_metadata_with(ino, |_| {}).await
    }

    /// [`Self::persist_metadata`] of a change to the object's own (non-POSIX) metadata, which
    /// `redo` makes again on the metadata another client stored meanwhile, if it did.
    pub(super) async fn persist_metadata_with(
        &self,
        ino: u64,
        redo: impl Fn(&mut HashMap<String, String>),
    ) -> FsResult<()> {
        self.moves
            .work(|| self.paths_of(&[ino]), async {
            let node = self.node(ino)?;
            if ino == ROOT_INO && self.prefix.is_empty() {
                return Ok(()); // the bucket root has no object to hold attributes
            }
            if node.local_only || !node.linked {
                return Ok(());
            }
            let path = self.table.path_of(ino).ok_or(Errno::ENOENT)?;
            let mut meta = node.state.foreign_meta.clone();
            meta.extend(attr::posix_metadata(&node.state.attr));
            let is_dir = node.state.attr.kind == NodeKind::Dir;
            let key = match (&node.state.dir_marker, is_dir) {
                (Some(marker), true) => marker.clone(),
                (None, true) => self.dir_key(&path),
                (_, false) => self.key_for_path(&path),
            };
            let put = PutOptions {
                content_type: node
                    .state
                    .content_type
                    .clone()
                    .unwrap_or_else(|| "application/octet-stream".into()),
                metadata: meta,
                content_headers: node.state.content_headers.clone(),
            };
            // What another client stored meanwhile, when the guarded copy found the object changed.
            let mut current = None;
            let etag = if is_dir && node.state.dir_marker.is_none() {
                self.store.put(&key, bytes::Bytes::new(), &put).await?
            } else {
                match self
                    .store
                    .replace_metadata(&key, node.state.attr.size, &put, node.state.etag.as_deref())
                    .await
                {
                    Ok(etag) => etag,
                    Err(e) if e.is_precondition_failed() => {
                        // Someone else changed the object since we read it: take its current
                        // content type and foreign metadata, apply our change on top, once.
                        let Some(info) = self.store.head(&key).await? else {
                            self.cache.invalidate(&path);
                            return Err(Errno::ENOENT);
                        };
                        let mut foreign = attr::foreign_metadata(&info.metadata);
                        redo(&mut foreign);
                        let mut meta = foreign.clone();
                        meta.extend(attr::posix_metadata(&node.state.attr));
                        let put = PutOptions {
                            content_type: info
                                .content_type
                                .clone()
                                .unwrap_or_else(|| "application/octet-stream".into()),
                            metadata: meta,
                            content_headers: info.content_headers.clone(),
                        };
                        match self
                            .store
                            .replace_metadata(&key, info.size, &put, info.etag.as_deref())
                            .await
                        {
                            Ok(etag) => {
                                current = Some((info, foreign));
                                etag
                            }
                            Err(e) if e.is_precondition_failed() => {
                                tracing::error!(
                                    key,
                                    "object keeps changing while its attributes are being changed; not overwriting"
                                );
                                self.cache.invalidate(&path);
                                return Err(Errno::EIO);
                            }
                            Err(e) => return Err(e.into()),
                        }
                    }
                    Err(e) => return Err(e.into()),
                }
            };
            let copied_onto_itself = current.is_none();
            let state = self.table.update(ino, |n| {
                if let Some((info, foreign)) = current {
                    // The object is the other client's with our attributes on top: its size,
                    // content type, headers and foreign metadata now, so a later copy copies all
                    // of it.
                    if !is_dir {
                        n.state.attr.size = info.size;
                    }
                    n.state.foreign_meta = foreign;
                    n.state.content_type = info.content_type;
                    n.state.content_headers = info.content_headers;
                }
                if copied_onto_itself {
                    // The guarded copy kept the content this mount read.
                    n.take_copy_etag(etag);
                } else {
                    n.state.etag = etag;
                }
                n.state.posix_stored = true;
                if is_dir {
                    n.state.dir_marker = Some(key.clone());
                }
                n.state.clone()
            });
            if let Some(state) = state {
                self.cache.put(&path, state);
            }
            Ok(())
            })
            .await
    }

    /// `statfs`: large constant numbers, as object storage has no fixed capacity.
    pub fn statfs(&self) -> FsStats {
        FsStats {
            bsize: 4096,
            blocks: 1 << 36,
            bfree: 1 << 36,
            files: 1 << 32,
            ffree: 1 << 32,
            namelen: 255,
        }
    }

    /// `link`: object storage has no hard links.
    pub fn link(&self, ino: u64) -> FsResult<Stat> {
        let node = self.node(ino)?;
        if node.state.attr.kind == NodeKind::Dir {
            return Err(Errno::EPERM);
        }
        Err(match self.cfg.hardlink_errno {
            HardlinkErrno::Enotsup => Errno::ENOTSUP,
            HardlinkErrno::Eperm => Errno::EPERM,
        })
    }

    /// Attributes for a new inode created by `caller` in `parent` with `mode` (umask already
    /// applied): the caller's ids, or the parent's group (and setgid bit, for directories) when
    /// the parent directory is setgid.
    fn new_attributes(&self, parent: &Node, caller: Caller, kind: NodeKind, mode: u32) -> Attributes {
        let now = SystemTime::now();
        let mut perm = mode & 0o7777;
        let mut gid = caller.gid;
        if parent.state.attr.perm & 0o2000 != 0 {
            gid = parent.state.attr.gid;
            if kind == NodeKind::Dir {
                perm |= 0o2000;
            }
        }
        Attributes {
            kind,
            perm,
            uid: caller.uid,
            gid,
            size: 0,
            atime: now,
            mtime: now,
            ctime: now,
            rdev: 0,
        }
    }

    /// A one-line summary of what the mount holds (logged on SIGUSR1).
    pub fn stats(&self) -> String {
        format!(
            "inodes={} open_files={} open_dirs={} staged_files={} stat_cache_entries={}",
            self.table.len(),
            lock(&self.file_handles).len(),
            lock(&self.dir_handles).len(),
            lock(&self.files).len(),
            self.cache.len()
        )
    }

    /// Gauges for the metrics endpoint: dirty bytes waiting for upload, inodes, open handles.
    pub fn gauges(&self) -> Vec<(&'static str, &'static str, f64)> {
        let entries: Vec<Arc<tokio::sync::Mutex<FileData>>> =
            lock(&self.files).values().map(|e| e.data.clone()).collect();
        let mut dirty = 0u64;
        let mut busy = 0u64;
        for e in entries {
            match e.try_lock() {
                Ok(d) if d.dirty => dirty += d.staging.as_ref().map_or(0, |s| s.len()),
                Ok(_) => {}
                // Being uploaded right now: its bytes are on their way.
                Err(_) => busy += 1,
            }
        }
        vec![
            (
                "rossfs_dirty_bytes",
                "Bytes written but not yet uploaded",
                dirty as f64,
            ),
            (
                "rossfs_files_uploading",
                "Files whose upload is in progress",
                busy as f64,
            ),
            (
                "rossfs_inodes",
                "Inodes held in the inode table",
                self.table.len() as f64,
            ),
            (
                "rossfs_open_files",
                "Open file handles",
                lock(&self.file_handles).len() as f64,
            ),
            (
                "rossfs_read_ahead_bytes",
                "Bytes of read-ahead held (fetched or in flight), out of max_memory",
                self.read_budget.held() as f64,
            ),
        ]
    }

    /// Uploads every file with unsaved data (shutdown): returns how many failed.
    pub async fn flush_all(&self) -> usize {
        let inos: Vec<u64> = lock(&self.files).keys().copied().collect();
        let mut failed = 0;
        for ino in inos {
            if self.flush_inode(ino).await.is_err() {
                failed += 1;
            }
        }
        failed
    }
}
