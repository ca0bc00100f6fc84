//! Files: create, open, read, write, flush/fsync/release (the upload), truncate and unlink.
//!
//! Each inode being written has one [`FileData`] shared by all its handles: the staged content
//! and whether it differs from the bucket. Data reaches the bucket on flush (every `close`),
//! fsync and release; a failed upload returns EIO to that call and is logged at ERROR with the
//! S3 error, and the data stays staged so a later flush or fsync can retry. Handles that only
//! read fetch ranges from the bucket through an [`ObjectReader`].

use std::ffi::OsStr;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use futures::StreamExt;

use super::{lock, Caller, Errno, FsResult, S3Filesystem, Stat};
use crate::attr::{self, NodeKind};
use crate::fileio::{upload, write_spilled, ObjectReader, Staging, StagingConfig, StreamingUpload};
use crate::namespace::names::check_name;
use crate::store::{PutOptions, StoreError};

/// Write state of one inode, shared by its open handles.
#[derive(Debug, Default)]
pub struct FileData {
    /// The whole content, once anyone wrote or truncated (None: the bucket's copy is current).
    pub staging: Option<Staging>,
    /// The staged content is not in the bucket yet.
    pub dirty: bool,
    /// Every write since the content was emptied (create, `O_TRUNC`) or last uploaded appended
    /// at the end: the file may be uploaded while it is written.
    pub sequential: bool,
    /// The multipart upload fed while the file is written, if one is running.
    pub stream: Option<StreamingUpload>,
    /// An upload of this content failed and the failure was reported to the application.
    pub failed_before: bool,
    /// Times were set explicitly (utimens) since the content was staged: they must be stored
    /// exactly, not left to the server's Last-Modified.
    pub times_set: bool,
    /// Changes made to the staged content or attributes so far (see [`FileData::changed`]).
    pub changes: u64,
}

impl FileData {
    /// Something changed that the next upload must store.
    pub fn changed(&mut self) {
        self.dirty = true;
        self.changes += 1;
    }
}

/// Size of the ranged GETs that stage an existing object larger than the memory limit.
const STAGE_CHUNK: u64 = 8 * 1024 * 1024;
/// Ranged GETs in flight while staging an existing object.
const STAGE_PARALLEL: usize = 4;

/// An object returned fewer bytes than its known size while being staged (it changed meanwhile).
fn short_read(key: &str, want: u64, got: usize) -> Errno {
    tracing::error!(
        "staging {key}: expected {want} bytes, the bucket returned {got}; the object changed meanwhile"
    );
    Errno::EIO
}

/// Parts of a streamed file, beyond those in flight, that may wait in the page cache (sent
/// and not evicted yet, or being filled) before its writes leave the FUSE thread.
const STREAM_BACKLOG_SPARE_PARTS: u64 = 3;

/// One open file handle.
#[derive(Debug)]
pub struct FileHandle {
    /// The inode.
    pub ino: u64,
    /// Opened for writing.
    pub writable: bool,
    /// The process (thread group) that opened it.
    pub opener: u32,
    /// The thread that opened it (a close from that thread needs no /proc lookup).
    pub opener_thread: u32,
    /// The thread that wrote through it last: its close uploads (and reports a failure), even
    /// when it is not the opener (a child writing to a descriptor it inherited).
    pub last_writer: std::sync::atomic::AtomicU32,
    /// Range reader, created on the first read from the bucket.
    pub reader: tokio::sync::Mutex<Option<ObjectReader>>,
}

impl S3Filesystem {
    /// Takes a reference on the write state of `ino` (creating it), for an open handle or a
    /// one-off change. References are counted under the map lock, so a release racing with an
    /// open can never drop state a new handle is about to use.
    fn acquire_file_data(&self, ino: u64) -> Arc<tokio::sync::Mutex<FileData>> {
        let mut files = lock(&self.files);
        let entry = files.entry(ino).or_default();
        entry.refs += 1;
        entry.data.clone()
    }

    /// Drops a reference taken with [`Self::acquire_file_data`]; the last one removes the state.
    async fn release_file_data(&self, ino: u64) {
        match self.files_entry(ino) {
            Some(data) => {
                let mut d = data.lock().await;
                self.drop_file_data_ref(ino, Some(&mut d));
            }
            None => self.drop_file_data_ref(ino, None),
        }
    }

    /// The reference counting of [`Self::release_file_data`], with the state `d` locked by the
    /// caller. When the last reference goes, the staged content is dropped under that lock, so
    /// an attribute change racing with the release sees no staging and stores itself instead of
    /// waiting for an upload that will never come.
    fn drop_file_data_ref(&self, ino: u64, d: Option<&mut FileData>) {
        let last = {
            let mut files = lock(&self.files);
            match files.get_mut(&ino) {
                Some(entry) if entry.refs > 1 => {
                    entry.refs -= 1;
                    false
                }
                Some(_) => files.remove(&ino).is_some(),
                None => false,
            }
        };
        if let (true, Some(d)) = (last, d) {
            let lost = d.dirty;
            d.staging = None;
            d.dirty = false;
            if lost {
                tracing::error!(ino, "discarding staged data that could not be uploaded");
                self.forget_unstored(ino);
            }
        }
    }

    /// Staged content that could not be uploaded was dropped: the node goes back to what the
    /// bucket holds, in this mount and in the kernel's caches. A file never stored leaves its
    /// directory; one stored before is read again from the bucket (the size, times and ETag in
    /// memory were the lost version's) before anything is staged from it, and its pages in the
    /// kernel, which held the lost content, are dropped.
    fn forget_unstored(&self, ino: u64) {
        let Some(node) = self.table.get(ino) else {
            return;
        };
        let path = self.table.path_of(ino);
        self.table.update(ino, |n| {
            n.page_cache_etag = None;
            n.stale = !n.local_only;
        });
        if node.local_only {
            if node.linked {
                self.table.unlink_child(node.parent, &node.name);
                self.entry_removed(node.parent, &node.name);
                if let Some(path) = &path {
                    self.cache.put_absent(path);
                }
                self.kernel_forget_entry(node.parent, &node.name);
            }
        } else if let Some(path) = &path {
            self.cache.invalidate(path);
        }
        self.kernel_forget_inode(ino);
    }

    /// After the upload of a truncate failed with no handle open for writing: drops the
    /// truncated copy unless it changed since (`this_change`, its count of changes: a handle
    /// opened meanwhile wrote to it), and the node, the stat cache and the kernel go back to
    /// what the bucket holds.
    async fn drop_unstored_truncate(&self, ino: u64, data: &tokio::sync::Mutex<FileData>, this_change: u64) {
        if self.node(ino).is_ok_and(|n| n.local_only) {
            return;
        }
        let mut d = data.lock().await;
        if !d.dirty || d.changes != this_change {
            return;
        }
        d.staging = None;
        d.dirty = false;
        drop(d);
        self.forget_unstored(ino);
    }

    /// Inodes of the files open under the directory at `path`.
    pub(super) fn open_files_under(&self, path: &str) -> Vec<u64> {
        let below = format!("{path}/");
        let inos: Vec<u64> = lock(&self.files).keys().copied().collect();
        inos.into_iter()
            .filter(|ino| self.table.path_of(*ino).is_some_and(|p| p.starts_with(&below)))
            .collect()
    }

    /// Locks the write states of those of `inos` that have one, in inode order: every caller
    /// that holds more than one takes them in that order, so two never wait on each other.
    pub(super) async fn lock_write_states(
        &self,
        mut inos: Vec<u64>,
    ) -> Vec<(u64, tokio::sync::OwnedMutexGuard<FileData>)> {
        inos.sort_unstable();
        inos.dedup();
        let mut held = Vec::with_capacity(inos.len());
        for ino in inos {
            if let Some(data) = self.files_entry(ino) {
                held.push((ino, data.lock_owned().await));
            }
        }
        held
    }

    /// Number of references on the write state of `ino`.
    fn file_data_refs(&self, ino: u64) -> usize {
        lock(&self.files).get(&ino).map_or(0, |e| e.refs)
    }

    /// Whether a handle open for writing holds `ino`: only then may a change to the file wait
    /// for a close to reach the bucket (a handle that only reads never uploads).
    pub(super) fn has_writer(&self, ino: u64) -> bool {
        lock(&self.files).get(&ino).is_some_and(|e| e.writers > 0)
    }

    /// Forgets the handle `fh` (a release): it no longer counts as a writer of its inode.
    fn remove_handle(&self, fh: u64) -> Option<Arc<FileHandle>> {
        let handle = lock(&self.file_handles).remove(&fh)?;
        if handle.writable {
            if let Some(e) = lock(&self.files).get_mut(&handle.ino) {
                e.writers = e.writers.saturating_sub(1);
            }
        }
        Some(handle)
    }

    /// The write state of `ino`, if any handle has it open.
    pub(super) fn files_entry(&self, ino: u64) -> Option<Arc<tokio::sync::Mutex<FileData>>> {
        lock(&self.files).get(&ino).map(|e| e.data.clone())
    }

    /// Points the range reader of every handle of `ino` (every handle when `None`, after a
    /// directory moved) at the object's current key, after a rename moved it. A reader keeps
    /// the version it read: it takes the node's ETag only where that names the same content
    /// (the rename's copy of that version), so a version another client stored meanwhile
    /// fails its reads instead of following the old one's bytes. A read holding a reader
    /// meanwhile retries at the new key on a 404.
    pub(super) async fn reset_readers(&self, ino: Option<u64>) {
        let handles: Vec<Arc<FileHandle>> = lock(&self.file_handles)
            .values()
            .filter(|h| ino.is_none_or(|i| h.ino == i))
            .cloned()
            .collect();
        for h in handles {
            if let Some(r) = h.reader.lock().await.as_mut() {
                self.retarget_reader(h.ino, r);
            }
        }
    }

    /// [`Self::reset_readers`] for one reader of `ino`; false if the file has no key now
    /// (unlinked).
    fn retarget_reader(&self, ino: u64, r: &mut ObjectReader) -> bool {
        let Some(node) = self.table.get(ino).filter(|n| n.linked) else {
            return false;
        };
        let Some(path) = self.table.path_of(ino) else {
            return false;
        };
        let etag = if node.same_content_as(r.etag()) {
            node.state.etag.clone()
        } else {
            r.etag().map(str::to_string)
        };
        r.retarget(self.key_for_path(&path), etag);
        true
    }

    /// The inode of a handle opened for writing (EBADF otherwise).
    pub(super) fn writable_handle_ino(&self, fh: u64) -> FsResult<u64> {
        let h = self.handle(fh)?;
        if h.writable {
            Ok(h.ino)
        } else {
            Err(Errno::EBADF)
        }
    }

    fn handle(&self, fh: u64) -> FsResult<Arc<FileHandle>> {
        lock(&self.file_handles).get(&fh).cloned().ok_or(Errno::EBADF)
    }

    fn register_handle(&self, ino: u64, writable: bool, opener: u32) -> u64 {
        let fh = self.new_fh();
        let handle = Arc::new(FileHandle {
            ino,
            writable,
            opener: process_of(opener),
            opener_thread: opener,
            last_writer: std::sync::atomic::AtomicU32::new(opener),
            reader: tokio::sync::Mutex::new(None),
        });
        lock(&self.file_handles).insert(fh, handle);
        if writable {
            if let Some(e) = lock(&self.files).get_mut(&ino) {
                e.writers += 1;
            }
        }
        self.table.open(ino);
        fh
    }

    /// If the inode's content is staged and a handle open for writing will upload it, marks it
    /// for upload at that flush and returns true: attribute changes then travel with the data.
    /// False: the caller stores the change itself.
    pub(super) async fn mark_pending_upload(&self, ino: u64, times_set: bool) -> bool {
        if !self.has_writer(ino) {
            return false;
        }
        let data = self.files_entry(ino);
        match data {
            Some(d) => {
                let mut d = d.lock().await;
                if d.staging.is_some() {
                    d.changed();
                    d.times_set |= times_set;
                }
                d.staging.is_some()
            }
            None => false,
        }
    }

    /// Whether the content of `ino` is staged here (written, or loaded for writing).
    pub(super) async fn is_staged(&self, ino: u64) -> bool {
        match self.files_entry(ino) {
            Some(d) => d.lock().await.staging.is_some(),
            None => false,
        }
    }

    /// Loads the object's current content into staging, if not staged yet. Content larger than
    /// the memory limit goes straight to the spill file in ranged GETs of [`STAGE_CHUNK`], a few
    /// at a time, so staging a large object never holds it in RAM.
    pub(super) async fn ensure_staged(&self, ino: u64, data: &mut FileData) -> FsResult<()> {
        match self.stage_from_bucket(ino, data).await {
            Err(e) if e == Errno::ESTALE => Err(Errno::EIO),
            other => other,
        }
    }

    /// [`Self::ensure_staged`] for a file about to lose its name (unlink, a rename over it),
    /// so its open handles keep their content: if another client replaced the object, the
    /// version they read is gone from the bucket, nothing is staged, and the name goes anyway.
    pub(super) async fn stage_before_removal(&self, ino: u64, data: &mut FileData) -> FsResult<()> {
        match self.stage_from_bucket(ino, data).await {
            // Replaced, or deleted, by another client: nothing of that version to keep.
            Err(e) if e == Errno::ESTALE || e == Errno::ENOENT => Ok(()),
            other => other,
        }
    }

    /// [`Self::ensure_staged`], with ESTALE when another client replaced the object.
    async fn stage_from_bucket(&self, ino: u64, data: &mut FileData) -> FsResult<()> {
        if data.staging.is_some() {
            return Ok(());
        }
        let mut node = self.node(ino)?;
        if !node.local_only
            && node.linked
            && (node.stale
                || self
                    .table
                    .path_of(ino)
                    .is_some_and(|p| self.cache.get(&p).is_none()))
        {
            // What the node says of the object is not known to be current (it expired, or the
            // node still describes content whose upload failed): the copy starts from the object.
            self.refresh(ino).await?;
            node = self.node(ino)?;
        }
        let size = node.state.attr.size;
        if node.local_only || size == 0 {
            data.staging = Some(Staging::from_vec(Vec::new(), &self.cfg.staging)?);
            return Ok(());
        }
        if !node.linked {
            // Removed without a copy (another client had replaced it): its content is gone,
            // and its old key may hold another file now.
            return Err(Errno::EIO);
        }
        let path = self.table.path_of(ino).ok_or(Errno::ENOENT)?;
        let key = self.key_for_path(&path);
        // Every range from the version the node describes: a copy mixing two versions would
        // be uploaded as the file's content.
        let etag = node.state.etag.clone();
        let replaced = |e: StoreError| {
            if e.is_precondition_failed() {
                tracing::error!(
                    "{key}: another client replaced the object since this mount last read it: \
                     a write to it fails, an unlink or a rename over it goes on without a copy \
                     for the descriptors still open (open the file again to write to the new \
                     version)"
                );
                self.learn_replaced(ino, etag.as_deref());
                return Errno::ESTALE;
            }
            Errno::from(e)
        };
        let mut staging = Staging::from_vec(Vec::new(), &self.cfg.staging)?;
        match staging.disk_target(&self.cfg.staging, size)? {
            None => {
                let bytes = self
                    .store
                    .get_range(&key, 0, size, etag.as_deref())
                    .await
                    .map_err(replaced)?;
                if bytes.len() as u64 != size {
                    return Err(short_read(&key, size, bytes.len()));
                }
                staging.write_at(&self.cfg.staging, 0, &bytes)?;
            }
            Some(file) => {
                let chunks = (0..size.div_ceil(STAGE_CHUNK)).map(|i| {
                    let (start, end) = (i * STAGE_CHUNK, ((i + 1) * STAGE_CHUNK).min(size));
                    let (file, key, etag, replaced) = (file.clone(), key.clone(), etag.clone(), &replaced);
                    async move {
                        let bytes = self
                            .store
                            .get_range(&key, start, end, etag.as_deref())
                            .await
                            .map_err(replaced)?;
                        if bytes.len() as u64 != end - start {
                            return Err(short_read(&key, end - start, bytes.len()));
                        }
                        tokio::task::spawn_blocking(move || file.write_all_at(&bytes, start))
                            .await
                            .map_err(|_| Errno::EIO)??;
                        Ok::<(), Errno>(())
                    }
                });
                let mut done = futures::stream::iter(chunks)
                    .buffer_unordered(self.cfg.parallel.clamp(1, STAGE_PARALLEL));
                while let Some(r) = done.next().await {
                    r?;
                }
                staging.grew_to(size);
            }
        }
        data.staging = Some(staging);
        Ok(())
    }

    /// `create`: a new empty file, visible in this mount at once and uploaded on close.
    pub async fn create(
        &self,
        parent: u64,
        name: &OsStr,
        mode: u32,
        caller: Caller,
    ) -> FsResult<(Stat, u64)> {
        let ino = self.create_node(parent, name, mode, caller)?;
        let data = self.acquire_file_data(ino);
        start_empty(&mut *data.lock().await, &self.cfg.staging)?;
        self.created(parent, name, ino, caller)
    }

    /// [`Self::create`] done in memory on the calling thread (it needs no request), for a name
    /// the inode table does not hold; `None` sends the caller to [`Self::create`].
    pub fn create_now(
        &self,
        parent: u64,
        name: &OsStr,
        mode: u32,
        caller: Caller,
    ) -> Option<FsResult<(Stat, u64)>> {
        if self.table.child(parent, name).is_some() {
            return None;
        }
        Some((|| {
            let ino = self.create_node(parent, name, mode, caller)?;
            let data = self.acquire_file_data(ino);
            // A fresh inode: no handle exists that could hold its write state.
            let Ok(mut d) = data.try_lock() else {
                tracing::error!(ino, "the write state of a new file is in use");
                return Err(Errno::EIO);
            };
            start_empty(&mut d, &self.cfg.staging)?;
            drop(d);
            self.created(parent, name, ino, caller)
        })())
    }

    /// The node of a file being created (visible in this mount at once), with one kernel
    /// reference.
    fn create_node(&self, parent: u64, name: &OsStr, mode: u32, caller: Caller) -> FsResult<u64> {
        self.ensure_writable()?;
        let name_str = check_name(name)?;
        let parent_node = self.dir_node(parent)?;
        if let Some(existing) = self.table.child(parent, name) {
            if existing.local_only
                || self
                    .cache
                    .get(&self.table.child_path(parent, name_str).unwrap_or_default())
                    .is_some()
            {
                return Err(Errno::EEXIST);
            }
        }
        let path = self.table.child_path(parent, name_str).ok_or(Errno::ENOENT)?;
        Self::check_key_len(self.key_for_path(&path).len())?;
        let attrs = self.new_attributes(&parent_node, caller, NodeKind::File, mode);
        let state = crate::namespace::ObjectState {
            attr: attrs,
            etag: None,
            content_type: None,
            foreign_meta: Default::default(),
            content_headers: Vec::new(),
            dir_marker: None,
            posix_stored: false,
            bucket_times: None,
        };
        self.cache.invalidate(&path);
        let ino = self.place_child(parent, name, state, true);
        self.table.inc_lookup(ino);
        Ok(ino)
    }

    /// The handle of a file just created, and its attributes.
    fn created(&self, parent: u64, name: &OsStr, ino: u64, caller: Caller) -> FsResult<(Stat, u64)> {
        // The handle that created the file stores it at its close whatever its access mode
        // (`open(O_RDONLY|O_CREAT)`, as flock(1) makes lock files), so that close reports a
        // failed upload; the kernel sends no write through a read-only descriptor.
        let fh = self.register_handle(ino, true, caller.pid);
        self.entry_added(parent, name, NodeKind::File);
        self.touch_dir(parent);
        Ok((self.stat_of(&self.node(ino)?), fh))
    }

    /// `open`: a handle for reading and/or writing, and whether the kernel may keep the pages
    /// it cached for this file (the object is unchanged since the last open). The content of a
    /// file opened for writing is staged at its first write (empty with `O_TRUNC`), so writes
    /// may land anywhere.
    pub async fn open(&self, ino: u64, flags: i32, pid: u32) -> FsResult<(u64, bool)> {
        let writable = flags & libc::O_ACCMODE != libc::O_RDONLY;
        let data = self
            .open_checks(ino, writable)
            .map(|()| self.acquire_file_data(ino))?;
        if writable && flags & libc::O_TRUNC != 0 {
            // Without O_TRUNC nothing is fetched yet: the first write stages the content, and
            // a truncate to zero (how the kernel often delivers O_TRUNC) never needs it.
            let mut d = data.lock().await;
            self.abort_stream(&mut d).await;
            let emptied = start_empty(&mut d, &self.cfg.staging);
            if emptied.is_ok() {
                self.set_size(ino, 0);
            }
            drop(d);
            if let Err(e) = emptied {
                self.release_file_data(ino).await;
                return Err(e);
            }
        }
        Ok(self.opened(ino, writable, pid))
    }

    /// [`Self::open`] on the calling thread: everything but `O_TRUNC` for writing is memory
    /// work. `None` sends the caller to [`Self::open`].
    pub fn open_now(&self, ino: u64, flags: i32, pid: u32) -> Option<FsResult<(u64, bool)>> {
        let writable = flags & libc::O_ACCMODE != libc::O_RDONLY;
        if writable && flags & libc::O_TRUNC != 0 {
            return None;
        }
        Some(self.open_checks(ino, writable).map(|()| {
            self.acquire_file_data(ino);
            self.opened(ino, writable, pid)
        }))
    }

    fn open_checks(&self, ino: u64, writable: bool) -> FsResult<()> {
        let node = self.node(ino)?;
        if node.state.attr.kind == NodeKind::Dir {
            return Err(Errno::EISDIR);
        }
        if !node.linked && node.opens == 0 {
            // Only a kernel entry not yet dropped leads here (a new file whose upload was lost
            // left its directory): ESTALE has the kernel look the name up again.
            return Err(Errno::ESTALE);
        }
        if writable {
            self.ensure_writable()?;
        }
        Ok(())
    }

    /// Registers the handle of an open file (holding a reference on its write state); true
    /// when the kernel may keep the pages it cached (the object is unchanged since the last
    /// open and the handle only reads).
    fn opened(&self, ino: u64, writable: bool, pid: u32) -> (u64, bool) {
        let etag = self.node(ino).ok().and_then(|n| n.state.etag);
        let keep_cache = etag.is_some()
            && self
                .table
                .update(ino, |n| std::mem::replace(&mut n.page_cache_etag, etag.clone()))
                .flatten()
                == etag;
        (self.register_handle(ino, writable, pid), keep_cache && !writable)
    }

    fn set_size(&self, ino: u64, size: u64) {
        let now = SystemTime::now();
        self.table.update(ino, |n| {
            n.state.attr.size = size;
            n.state.attr.mtime = now;
            n.state.attr.ctime = now;
        });
    }

    /// `read`: from the staged content if the file is being written, else from the bucket.
    pub async fn read(&self, fh: u64, offset: u64, size: u32) -> FsResult<Bytes> {
        self.read_open_file(fh, offset, size)
            .await
            .map_err(|e| on_descriptor(e, "read"))
    }

    async fn read_open_file(&self, fh: u64, offset: u64, size: u32) -> FsResult<Bytes> {
        let handle = self.handle(fh)?;
        let ino = handle.ino;
        if let Some(data) = self.files_entry(ino) {
            let d = data.lock().await;
            if let Some(staging) = &d.staging {
                let end = offset.saturating_add(u64::from(size));
                return Ok(staging.range(offset, end, None).load(None).await?);
            }
        }
        let mut reader = handle.reader.lock().await;
        // A reader made before this mount renamed the file may still use the old key: on a
        // 404 it starts over once at the file's current key.
        for fresh in [false, true] {
            if reader.is_none() {
                let mut node = self.node(ino)?;
                if node.local_only {
                    return Ok(Bytes::new());
                }
                if !node.linked {
                    // Removed without a copy (another client had replaced it): its content is
                    // gone, and its old key may hold another file now.
                    return Err(Errno::EIO);
                }
                if node.stale {
                    // A replaced version was noticed: read the current one.
                    self.refresh(ino).await?;
                    node = self.node(ino)?;
                }
                let path = self.table.path_of(ino).ok_or(Errno::ENOENT)?;
                *reader = Some(ObjectReader::new(
                    self.store.clone(),
                    self.read_budget.clone(),
                    self.key_for_path(&path),
                    node.state.etag.clone(),
                    node.state.attr.size,
                    self.cfg.parallel,
                ));
            }
            let Some(r) = reader.as_mut() else {
                return Err(Errno::EIO);
            };
            match r.read(offset, size).await {
                // Moved by a rename meanwhile: on at the new key, the same version.
                Err(e) if e.is_not_found() && !fresh && self.retarget_reader(ino, r) => {}
                // This mount's own copy (a chmod, touch or xattr change, a rename) gave the same
                // content a new ETag: read on with that one.
                Err(e)
                    if e.is_precondition_failed()
                        && !fresh
                        && self.node(ino).is_ok_and(|n| n.same_content_as(r.etag()))
                        && self.retarget_reader(ino, r) => {}
                Err(e) if e.is_precondition_failed() => {
                    // Another client replaced the object (this mount's own changes are read
                    // from the staged content while anything has the file open): bytes of the
                    // new version must not follow those of the old one. The descriptor keeps
                    // failing; a new open reads the new version.
                    tracing::warn!(
                        "{}: another client replaced the object while it was open here; reads of \
                         this descriptor fail with EIO, open the file again to read the new version",
                        r.key()
                    );
                    self.learn_replaced(ino, r.etag());
                    return Err(Errno::EIO);
                }
                other => return Ok(other?),
            }
        }
        Err(Errno::ENOENT)
    }

    /// The object of `ino` is no longer the version `etag` (another client replaced it): unless
    /// the node has moved on already, it and the kernel forget what they know of it, so the
    /// next read or stat asks the bucket.
    fn learn_replaced(&self, ino: u64, etag: Option<&str>) {
        let knows_that_version = self
            .node(ino)
            .is_ok_and(|n| n.state.etag.as_deref() == etag && !n.local_only);
        if knows_that_version {
            // As for content whose upload was dropped: read again from the bucket.
            self.forget_unstored(ino);
        }
    }

    /// Before a write the kernel asks it for (a caller without `CAP_FSETID`, see the FUSE
    /// adapter): clears the set-ID bits as Linux does (see [`attr::without_setid`]; `who` is
    /// the writer). The new mode is stored with the file's upload, and the kernel drops the
    /// attributes it holds.
    /// Returns the new permission bits, or `None` if there were none to clear.
    pub fn clear_setid_for_write(&self, fh: u64, who: &Caller) -> Option<u32> {
        let handle = self.handle(fh).ok()?;
        // On every such write: a look at the bits, not a copy of the node.
        let (perm, gid) = self
            .table
            .update(handle.ino, |n| (n.state.attr.perm, n.state.attr.gid))?;
        let in_group = perm & 0o2010 == 0o2000 && attr::process_in_group(who.pid, who.uid, who.gid, gid);
        let cleared = attr::without_setid(perm, || in_group);
        if cleared == perm {
            return None;
        }
        let now = SystemTime::now();
        self.update_attributes(handle.ino, |a| {
            a.perm = attr::without_setid(a.perm, || in_group);
            a.ctime = now;
        });
        self.kernel_forget_inode(handle.ino);
        Some(cleared)
    }

    /// `write`: into the staging area; returns the bytes written.
    pub async fn write(&self, fh: u64, offset: u64, bytes: Vec<u8>, pid: u32) -> FsResult<u32> {
        let handle = self.handle(fh)?;
        if !handle.writable {
            return Err(Errno::EBADF);
        }
        handle
            .last_writer
            .store(pid, std::sync::atomic::Ordering::Relaxed);
        let ino = handle.ino;
        let data = self.files_entry(ino).ok_or(Errno::EBADF)?;
        let mut d = data.lock().await;
        self.ensure_staged(ino, &mut d)
            .await
            .map_err(|e| on_descriptor(e, "written"))?;
        let appending = d.staging.as_ref().is_some_and(|s| s.len() == offset);
        if !appending {
            // A write before the end: parts already sent may be stale, so the file will be
            // uploaded whole at close.
            d.sequential = false;
            self.abort_stream(&mut d).await;
        }
        let written = bytes.len() as u32;
        let end = offset.checked_add(bytes.len() as u64).ok_or(Errno(libc::EFBIG))?;
        let staging = d.staging.as_mut().ok_or(Errno::EIO)?;
        match staging.disk_target(&self.cfg.staging, end)? {
            Some(file) => {
                // Copying a large write into the page cache is blocking work: it runs beside
                // the I/O threads (which keep hashing and sending parts meanwhile).
                let len = staging.len();
                tokio::task::spawn_blocking(move || write_spilled(&file, &bytes, offset, len))
                    .await
                    .map_err(|_| Errno::EIO)??;
                staging.grew_to(end);
            }
            None => staging.write_at(&self.cfg.staging, offset, &bytes)?,
        }
        let len = staging.len();
        d.changed();
        self.set_size(ino, len);
        if d.sequential {
            self.feed_stream(ino, &mut d).await;
        }
        Ok(written)
    }

    /// [`Self::write`] on the calling thread when it is a copy that hands nothing to the
    /// upload: into staged content held in memory, or the next bytes of a file being streamed
    /// while the disk keeps up with its uploaded parts (see [`Self::streams_to_page_cache`]).
    /// `None` sends the caller to [`Self::write`]: content not staged yet or spilled to disk
    /// otherwise, a write that starts the streamed upload or completes one of its parts, or
    /// the write state busy.
    pub fn write_now(&self, fh: u64, offset: u64, bytes: &[u8], pid: u32) -> Option<FsResult<u32>> {
        let handle = match self.handle(fh) {
            Ok(h) if h.writable => h,
            Ok(_) => return Some(Err(Errno::EBADF)),
            Err(e) => return Some(Err(e)),
        };
        handle
            .last_writer
            .store(pid, std::sync::atomic::Ordering::Relaxed);
        let data = self.files_entry(handle.ino)?;
        let mut d = data.try_lock().ok()?;
        let end = offset.checked_add(bytes.len() as u64)?;
        let in_memory = d.stream.is_none()
            && end <= self.cfg.staging.memory_limit
            && end < 2 * self.cfg.part_size
            && matches!(d.staging, Some(Staging::Memory(_)));
        if !in_memory && !self.streams_to_page_cache(&d, offset, end) {
            return None;
        }
        let staging = d.staging.as_mut()?;
        let appending = staging.len() == offset;
        let written = staging
            .write_at(&self.cfg.staging, offset, bytes)
            .map(|()| staging.len());
        Some(written.map_err(Errno::from).map(|len| {
            if !appending {
                d.sequential = false;
            }
            d.changed();
            self.set_size(handle.ino, len);
            bytes.len() as u32
        }))
    }

    /// Whether writing `[offset, end)` is an append to a file being streamed that completes
    /// no part, while at most [`STREAM_BACKLOG_SPARE_PARTS`] parts more than those in flight
    /// are in the page cache.
    /// Then the write is a copy into pages the last evicted parts freed, on a disk that keeps
    /// up: cheaper on the FUSE thread than a further copy and two thread hand-offs (W1 back to
    /// back 0.87-0.93x -> 0.96-0.98x raw). Behind a slower disk, or for any other write to a
    /// staging file, the copy goes to a blocking thread, where the kernel may throttle it
    /// without holding a FUSE thread.
    fn streams_to_page_cache(&self, d: &FileData, offset: u64, end: u64) -> bool {
        let (Some(stream), Some(Staging::Disk { len, .. })) = (&d.stream, &d.staging) else {
            return false;
        };
        let part = stream.part_len();
        offset == *len
            && end < stream.covered() + part
            && end.saturating_sub(stream.evicted())
                <= (self.cfg.parallel as u64 + STREAM_BACKLOG_SPARE_PARTS) * part
    }

    /// Sends the parts a sequential writer has filled; starts the upload once the file is
    /// clearly large (two parts). A failure only stops streaming: the close uploads the file
    /// whole and reports any error then.
    async fn feed_stream(&self, ino: u64, d: &mut FileData) {
        let Some(len) = d.staging.as_ref().map(Staging::len) else {
            return;
        };
        if d.stream.is_none() && len >= 2 * self.cfg.part_size {
            // An unlinked file's data goes nowhere: no upload to start.
            let Some(node) = self.node(ino).ok().filter(|n| n.linked) else {
                return;
            };
            let Some(path) = self.table.path_of(ino) else {
                return;
            };
            // The times keep changing while the file is written: they are left out of the
            // upload's metadata, so the object's Last-Modified (its completion, right after
            // the last write) stands for them and closing needs no metadata copy. Times set
            // explicitly are stored exactly (see upload_staged).
            let mut put = self.put_options(&node, &path, len, None);
            attr::drop_times(&mut put.metadata);
            match StreamingUpload::start(
                &self.store,
                &self.key_for_path(&path),
                put,
                self.cfg.part_size,
                self.cfg.parallel,
            )
            .await
            {
                Ok(s) => d.stream = Some(s),
                Err(e) => {
                    tracing::warn!("cannot start the upload of {path} while it is written ({e}); it is uploaded at close");
                    d.sequential = false;
                    return;
                }
            }
        }
        let result = match (d.stream.as_mut(), d.staging.as_ref()) {
            (Some(stream), Some(staging)) => stream.send_full_parts(staging).await,
            _ => Ok(()),
        };
        if let Err(e) = result {
            tracing::warn!("a part upload failed ({e}); the file is uploaded whole at close");
            d.sequential = false;
            self.abort_stream(d).await;
        }
    }

    /// Abandons a running streamed upload (its parts are aborted).
    pub(super) async fn abort_stream(&self, d: &mut FileData) {
        if let Some(stream) = d.stream.take() {
            stream.abort().await;
        }
    }

    /// Headers for uploading the node's staged content of `size` bytes as `path`.
    fn put_options(
        &self,
        node: &crate::namespace::Node,
        path: &str,
        size: u64,
        content_type: Option<String>,
    ) -> PutOptions {
        let mut meta = node.state.foreign_meta.clone();
        let mut attrs = node.state.attr;
        attrs.size = size;
        meta.extend(attr::posix_metadata(&attrs));
        let name = path.rsplit('/').next().unwrap_or(path);
        let content_type = content_type
            .or_else(|| node.state.content_type.clone())
            .unwrap_or_else(|| self.mime.for_name(name).to_string());
        PutOptions {
            content_type,
            metadata: meta,
            content_headers: node.state.content_headers.clone(),
        }
    }

    /// Truncates (or extends) a file; a file nobody has open is uploaded at once.
    pub(super) async fn truncate(&self, ino: u64, size: u64) -> FsResult<()> {
        let data = self.acquire_file_data(ino);
        // Whether staged changes were waiting for an upload before this one.
        let changed = async {
            let mut d = data.lock().await;
            let was_dirty = d.dirty;
            self.abort_stream(&mut d).await;
            d.sequential = size == 0;
            if size == 0 {
                d.staging = Some(Staging::from_vec(Vec::new(), &self.cfg.staging)?);
            } else {
                self.ensure_staged(ino, &mut d).await?;
            }
            if let Some(s) = d.staging.as_mut() {
                s.truncate(&self.cfg.staging, size)?;
            }
            d.changed();
            Ok::<(bool, u64), Errno>((was_dirty, d.changes))
        }
        .await;
        if changed.is_ok() {
            self.set_size(ino, size);
        }
        // No handle open for writing will upload the file: the change goes to the bucket now
        // (readers keep the staged copy, as they would keep the truncated inode on a disk).
        let result = match changed {
            Ok((was_dirty, this_change)) if !self.has_writer(ino) => {
                let stored = self.flush_inode(ino).await;
                if stored.is_err() && !was_dirty {
                    // A truncate that failed changes nothing: the truncated copy must not
                    // reach the bucket later, at the release of another handle.
                    self.drop_unstored_truncate(ino, &data, this_change).await;
                }
                stored
            }
            other => other.map(|_| ()),
        };
        self.release_file_data(ino).await;
        result
    }

    /// Uploads the inode's staged content if it changed. On failure the data stays staged and
    /// the error is logged at ERROR and returned as EIO (or the S3 error's errno).
    pub(super) async fn flush_inode(&self, ino: u64) -> FsResult<()> {
        self.moves
            .work(|| self.paths_of(&[ino]), async {
                let Some(data) = self.files_entry(ino) else {
                    return Ok(());
                };
                let mut d = data.lock().await;
                if !d.dirty {
                    return Ok(());
                }
                let node = self.node(ino)?;
                if !node.linked {
                    // Unlinked while open: the data has nowhere to go, nor do parts already sent.
                    self.abort_stream(&mut d).await;
                    d.dirty = false;
                    return Ok(());
                }
                let path = self.table.path_of(ino).ok_or(Errno::ENOENT)?;
                self.upload_staged(ino, &mut d, &path, None).await
            })
            .await
    }

    /// Uploads the staged content of `ino` as the object at `path` with the node's attributes
    /// (and `content_type`, else the node's, else one from the name's extension); on success
    /// the node and the stat cache describe the new object.
    pub(super) async fn upload_staged(
        &self,
        ino: u64,
        d: &mut FileData,
        path: &str,
        content_type: Option<String>,
    ) -> FsResult<()> {
        let node = self.node(ino)?;
        if d.staging.is_none() {
            return Ok(());
        }
        let key = self.key_for_path(path);
        let size = d.staging.as_ref().map_or(0, Staging::len);
        let put = self.put_options(&node, path, size, content_type);
        let mut result = None;
        // Whether the object gets the node's times (a streamed upload stores none unless they
        // were set explicitly).
        let mut times_stored = true;
        if let Some(stream) = d.stream.take() {
            if stream.key() == key {
                let sent = stream.sent.clone();
                let streamed = match d.staging.as_ref() {
                    Some(staging) => stream.finish(staging).await,
                    None => Err(StoreError::local(
                        "CompleteMultipartUpload",
                        &key,
                        "staging vanished",
                    )),
                };
                let mut implied = put.metadata.clone();
                if !d.times_set {
                    attr::drop_times(&mut implied);
                }
                match streamed {
                    Ok(etag)
                        if sent.metadata == implied
                            && sent.content_type == put.content_type
                            && sent.content_headers == put.content_headers =>
                    {
                        times_stored = d.times_set;
                        result = Some(Ok(etag))
                    }
                    // The attributes changed while the file was written (its mtime, at least):
                    // store the final ones on the object.
                    Ok(etag) => {
                        let fixed = self.store.replace_metadata(&key, size, &put, etag.as_deref());
                        result = Some(fixed.await)
                    }
                    Err(e) => tracing::warn!(
                        "finishing the streamed upload of {key} failed ({e}); uploading it whole"
                    ),
                }
            } else {
                stream.abort().await;
            }
        }
        let Some(staging) = d.staging.as_ref() else {
            d.sequential = false;
            return Ok(());
        };
        let result = match result {
            Some(r) => r,
            None => {
                upload(
                    &self.store,
                    &key,
                    staging,
                    &put,
                    self.cfg.part_size,
                    self.cfg.parallel,
                )
                .await
            }
        };
        match result {
            Ok(etag) => {
                d.dirty = false;
                d.times_set = false;
                // The bucket now holds exactly the staged content and no parts are out: writes
                // that append from here may stream again (dd closes a duplicate of its new
                // descriptor before writing, which flushes the empty file).
                d.sequential = true;
                if std::mem::take(&mut d.failed_before) {
                    tracing::warn!(
                        "upload of {key} ({size} bytes) succeeded on a later attempt, after an earlier failure was reported"
                    );
                }
                let state = self.table.update(ino, |n| {
                    n.state.etag = etag;
                    n.state.posix_stored = true;
                    let a = &n.state.attr;
                    n.state.bucket_times = times_stored.then_some([a.mtime, a.ctime, a.atime]);
                    n.state.attr.size = size;
                    n.state.content_type = Some(put.content_type.clone());
                    n.state.clone()
                });
                if let Some((parent, name)) = self.table.mark_uploaded(ino) {
                    // Its directory changed as a listing sees it: one that ran during the upload
                    // (without the object, and no longer seeing it as created here) cannot be
                    // trusted to hold every name.
                    self.complete.added(parent, &name, node.state.attr.kind);
                }
                if let Some(state) = state {
                    self.cache.put(path, state);
                }
                tracing::debug!(key, size, "uploaded");
                Ok(())
            }
            Err(e) => {
                d.failed_before = true;
                d.sequential = false;
                tracing::error!("upload of {key} ({size} bytes) failed, the data is NOT stored: {e}");
                Err(upload_errno(e.errno()))
            }
        }
    }

    /// `flush` (every close of a file descriptor): uploads changed data when the process that
    /// opened the file, or the thread that wrote last, closes it. A flush from another process
    /// that did not write is a descriptor it inherited being closed, most often by exec in a
    /// child the writer forked: uploading then would publish a half-written file, so that data
    /// goes up at the writer's own close or at the final release.
    pub async fn flush(&self, fh: u64, pid: u32) -> FsResult<()> {
        let handle = self.handle(fh)?;
        if !handle.writable {
            return Ok(());
        }
        if pid != handle.opener_thread
            && pid != handle.last_writer.load(std::sync::atomic::Ordering::Relaxed)
            && process_of(pid) != handle.opener
        {
            tracing::trace!(
                fh,
                pid,
                opener = handle.opener,
                "flush by another process: upload deferred"
            );
            return Ok(());
        }
        self.flush_inode(handle.ino).await
    }

    /// [`Self::flush`] on the calling thread when there is nothing to upload (a handle that
    /// only reads, a close by another process, unchanged content); `None` sends the caller to
    /// [`Self::flush`].
    pub fn flush_now(&self, fh: u64) -> Option<FsResult<()>> {
        let handle = match self.handle(fh) {
            Ok(h) => h,
            Err(e) => return Some(Err(e)),
        };
        if !handle.writable {
            return Some(Ok(()));
        }
        match self.files_entry(handle.ino) {
            Some(data) if !data.try_lock().ok()?.dirty => Some(Ok(())),
            Some(_) => None,
            None => Some(Ok(())),
        }
    }

    /// `fsync`: uploads changed data.
    pub async fn fsync(&self, fh: u64) -> FsResult<()> {
        let handle = self.handle(fh)?;
        self.flush_inode(handle.ino).await
    }

    /// `release`: the last reference to a handle is gone.
    pub async fn release(&self, fh: u64) -> FsResult<()> {
        let handle = self.remove_handle(fh).ok_or(Errno::EBADF)?;
        let ino = handle.ino;
        let mut result = Ok(());
        // The last handle uploads what is still staged and changed, even one that only read
        // (the content of an upload that failed for the writer gets a last attempt).
        if handle.writable || self.file_data_refs(ino) <= 1 {
            result = self.flush_inode(ino).await;
        }
        self.release_file_data(ino).await;
        self.table.close(ino);
        result
    }

    /// [`Self::release`] on the calling thread when there is nothing to upload; `None` sends
    /// the caller to [`Self::release`].
    pub fn release_now(&self, fh: u64) -> Option<FsResult<()>> {
        let handle = match self.handle(fh) {
            Ok(h) => h,
            Err(e) => return Some(Err(e)),
        };
        let data = self.files_entry(handle.ino);
        let mut guard = match &data {
            Some(data) => Some(data.try_lock().ok()?),
            None => None,
        };
        let last = self.file_data_refs(handle.ino) <= 1;
        if guard
            .as_ref()
            .is_some_and(|d| ((handle.writable || last) && d.dirty) || d.stream.is_some())
        {
            return None;
        }
        self.remove_handle(fh);
        self.drop_file_data_ref(handle.ino, guard.as_deref_mut());
        drop(guard);
        self.table.close(handle.ino);
        Some(Ok(()))
    }

    /// `unlink`: deletes the object; open handles keep their staged data.
    pub async fn unlink(&self, parent: u64, name: &OsStr) -> FsResult<()> {
        self.moves
            .work(|| self.paths_of(&[parent]), async {
                self.ensure_writable()?;
                let node = self.find_child(parent, name).await?;
                if node.state.attr.kind == NodeKind::Dir {
                    return Err(Errno::EISDIR);
                }
                let path = self.table.path_of(node.ino).ok_or(Errno::ENOENT)?;
                if !node.local_only {
                    self.keep_implicit_dir(parent).await?;
                }
                // Open handles keep reading and writing their data after the name is gone: stage the
                // content before the object disappears, and keep the write state locked until the node
                // is unlinked so a concurrent flush cannot upload it again in between.
                let data = self.files_entry(node.ino);
                let guard = match &data {
                    Some(data) => {
                        let mut d = data.lock().await;
                        self.stage_before_removal(node.ino, &mut d).await?;
                        self.abort_stream(&mut d).await;
                        d.sequential = false;
                        Some(d)
                    }
                    None => None,
                };
                // A close may have uploaded a new file while this waited for its write state: what
                // the node says now decides whether there is an object to delete.
                let uploaded_meanwhile = node.local_only && {
                    let now = self.node(node.ino)?;
                    now.linked && !now.local_only
                };
                if uploaded_meanwhile {
                    self.keep_implicit_dir(parent).await?;
                }
                if !node.local_only || uploaded_meanwhile {
                    self.store.delete(&self.key_for_path(&path)).await?;
                }
                self.table.unlink_child(parent, name);
                self.entry_removed(parent, name);
                drop(guard);
                self.cache.put_absent(&path);
                self.touch_dir(parent);
                Ok(())
            })
            .await
    }
}

/// Empty content, to be uploaded, written sequentially so far.
fn start_empty(d: &mut FileData, cfg: &StagingConfig) -> FsResult<()> {
    d.staging = Some(Staging::from_vec(Vec::new(), cfg)?);
    d.changed();
    d.sequential = true;
    Ok(())
}

/// The thread group (process) of a thread id, as FUSE requests carry thread ids.
///
/// Most files are opened by a process's main thread, whose id is the process id: `pidfd_open`
/// accepts exactly those ids (without `PIDFD_THREAD`), which costs two system calls where
/// reading `/proc/TID/status` costs a path walk and the formatting of the whole file (6% of the
/// daemon's CPU in a loop creating small files). Other threads, and kernels or sandboxes
/// without `pidfd_open`, take the `/proc` way.
fn process_of(tid: u32) -> u32 {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor (closed here) or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, tid as libc::pid_t, 0) };
    if fd >= 0 {
        // SAFETY: `fd` was just opened by this thread and nothing else holds it.
        unsafe { libc::close(fd as libc::c_int) };
        return tid;
    }
    std::fs::read_to_string(format!("/proc/{tid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Tgid:").and_then(|v| v.trim().parse().ok()))
        })
        .unwrap_or(tid)
}

/// Upload failures are EIO unless a more precise errno applies (denied, timed out, too big).
fn upload_errno(errno: i32) -> Errno {
    match errno {
        libc::EACCES | libc::ETIMEDOUT | libc::EFBIG | libc::ENOSPC => Errno(errno),
        _ => Errno::EIO,
    }
}

/// The errno of a read or write through a descriptor whose object is gone from the bucket
/// (another client deleted it): EIO, as ENOENT means nothing to read(2) or write(2).
fn on_descriptor(e: Errno, doing: &str) -> Errno {
    if e == Errno::ENOENT {
        tracing::warn!("an open file could not be {doing}: another client deleted its object");
        Errno::EIO
    } else {
        e
    }
}

#[cfg(test)]
mod tests {
    use super::process_of;

    #[test]
    fn thread_ids_map_to_their_process() {
        let pid = std::process::id();
        assert_eq!(process_of(pid), pid, "the main thread");
        let (tid, seen) = std::thread::spawn(|| {
            // SAFETY: gettid has no preconditions.
            let tid = unsafe { libc::gettid() } as u32;
            (tid, process_of(tid))
        })
        .join()
        .unwrap();
        assert_ne!(tid, pid);
        assert_eq!(seen, pid, "another thread of this process");
        // A thread id nobody has: itself (the caller is treated as its own process).
        assert_eq!(process_of(u32::MAX >> 2), u32::MAX >> 2);
    }
}
