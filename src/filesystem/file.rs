//! Files: create, open, read, write, flush/fsync/release (the upload), truncate and unlink.
//!
//! Each inode being written has one [`FileData`] shared by all its handles: the staged content
//! and whether it differs from the bucket. Data reaches the bucket on flush (every `close`),
//! fsync and release; a failed upload returns EIO to that call and is logged at ERROR with the
//! S3 error, and the data stays staged so a later flush or fsync can retry. Handles that only
//! read fetch ranges from the bucket through an [`ObjectReader`].

use std::ffi::OsStr;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;

use super::{lock, Caller, Errno, FsResult, S3Filesystem, Stat};
use crate::attr::{self, NodeKind};
use crate::fileio::{upload, ObjectReader, Staging};
use crate::namespace::names::check_name;
use crate::store::PutOptions;

/// Write state of one inode, shared by its open handles.
#[derive(Debug, Default)]
pub struct FileData {
    /// The whole content, once anyone wrote or truncated (None: the bucket's copy is current).
    pub staging: Option<Staging>,
    /// The staged content is not in the bucket yet.
    pub dirty: bool,
    /// Open handles on this inode.
    pub opens: u32,
}

/// One open file handle.
#[derive(Debug)]
pub struct FileHandle {
    /// The inode.
    pub ino: u64,
    /// Opened for writing.
    pub writable: bool,
    /// Range reader, created on the first read from the bucket.
    pub reader: tokio::sync::Mutex<Option<ObjectReader>>,
}

impl S3Filesystem {
    fn file_data(&self, ino: u64) -> Arc<tokio::sync::Mutex<FileData>> {
        lock(&self.files).entry(ino).or_default().clone()
    }

    fn handle(&self, fh: u64) -> FsResult<Arc<FileHandle>> {
        lock(&self.file_handles).get(&fh).cloned().ok_or(Errno::EBADF)
    }

    fn register_handle(&self, ino: u64, writable: bool) -> u64 {
        let fh = self.new_fh();
        let handle = Arc::new(FileHandle {
            ino,
            writable,
            reader: tokio::sync::Mutex::new(None),
        });
        lock(&self.file_handles).insert(fh, handle);
        self.table.open(ino);
        fh
    }

    /// If the inode's content is staged (open for writing), marks it for upload at the next
    /// flush and returns true: attribute changes then travel with the data.
    pub(super) async fn mark_pending_upload(&self, ino: u64) -> bool {
        let data = lock(&self.files).get(&ino).cloned();
        match data {
            Some(d) => {
                let mut d = d.lock().await;
                if d.staging.is_some() {
                    d.dirty = true;
                }
                d.staging.is_some()
            }
            None => false,
        }
    }

    /// Loads the object's current content into staging, if not staged yet.
    async fn ensure_staged(&self, ino: u64, data: &mut FileData) -> FsResult<()> {
        if data.staging.is_some() {
            return Ok(());
        }
        let node = self.node(ino)?;
        let content = if node.local_only || node.state.attr.size == 0 {
            Vec::new()
        } else {
            let path = self.table.path_of(ino).ok_or(Errno::ENOENT)?;
            let key = self.key_for_path(&path);
            let bytes = self.store.get_range(&key, 0, node.state.attr.size).await?;
            bytes.to_vec()
        };
        data.staging = Some(Staging::from_vec(content, &self.cfg.staging)?);
        Ok(())
    }

    /// `create`: a new empty file, visible in this mount at once and uploaded on close.
    pub async fn create(
        &self,
        parent: u64,
        name: &OsStr,
        mode: u32,
        caller: Caller,
        flags: i32,
    ) -> FsResult<(Stat, u64)> {
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
        let attrs = self.new_attributes(&parent_node, caller, NodeKind::File, mode);
        let state = crate::namespace::ObjectState {
            attr: attrs,
            etag: None,
            content_type: None,
            foreign_meta: Default::default(),
            dir_marker: None,
        };
        self.cache.invalidate(&path);
        let ino = self.table.upsert_child(parent, name, state, true);
        self.table.inc_lookup(ino);
        {
            let data = self.file_data(ino);
            let mut d = data.lock().await;
            d.staging = Some(Staging::from_vec(Vec::new(), &self.cfg.staging)?);
            d.dirty = true;
            d.opens += 1;
        }
        let writable = flags & libc::O_ACCMODE != libc::O_RDONLY;
        let fh = self.register_handle(ino, writable);
        self.touch_dir(parent);
        Ok((self.stat_of(&self.node(ino)?), fh))
    }

    /// `open`: a handle for reading and/or writing. Opening for writing stages the current
    /// content (none with `O_TRUNC`) so writes may land at any offset.
    pub async fn open(&self, ino: u64, flags: i32) -> FsResult<u64> {
        let node = self.node(ino)?;
        if node.state.attr.kind == NodeKind::Dir {
            return Err(Errno::EISDIR);
        }
        let writable = flags & libc::O_ACCMODE != libc::O_RDONLY;
        if writable {
            self.ensure_writable()?;
        }
        let data = self.file_data(ino);
        {
            let mut d = data.lock().await;
            if writable {
                if flags & libc::O_TRUNC != 0 {
                    d.staging = Some(Staging::from_vec(Vec::new(), &self.cfg.staging)?);
                    d.dirty = true;
                    self.set_size(ino, 0);
                } else if let Err(e) = self.ensure_staged(ino, &mut d).await {
                    if d.opens == 0 {
                        drop(d);
                        self.drop_file_data_if_unused(ino).await;
                    }
                    return Err(e);
                }
            }
            d.opens += 1;
        }
        Ok(self.register_handle(ino, writable))
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
        let handle = self.handle(fh)?;
        let ino = handle.ino;
        let data = lock(&self.files).get(&ino).cloned();
        if let Some(data) = data {
            let d = data.lock().await;
            if let Some(staging) = &d.staging {
                return Ok(Bytes::from(staging.read_at(offset, size as usize)?));
            }
        }
        let mut reader = handle.reader.lock().await;
        if reader.is_none() {
            let node = self.node(ino)?;
            if node.local_only {
                return Ok(Bytes::new());
            }
            let path = self.table.path_of(ino).ok_or(Errno::ENOENT)?;
            *reader = Some(ObjectReader::new(
                self.store.clone(),
                self.key_for_path(&path),
                node.state.attr.size,
                self.cfg.parallel,
            ));
        }
        match reader.as_mut() {
            Some(r) => Ok(r.read(offset, size).await?),
            None => Err(Errno::EIO),
        }
    }

    /// `write`: into the staging area; returns the bytes written.
    pub async fn write(&self, fh: u64, offset: u64, bytes: &[u8]) -> FsResult<u32> {
        let handle = self.handle(fh)?;
        if !handle.writable {
            return Err(Errno::EBADF);
        }
        let ino = handle.ino;
        let data = self.file_data(ino);
        let mut d = data.lock().await;
        self.ensure_staged(ino, &mut d).await?;
        let staging = d.staging.as_mut().ok_or(Errno::EIO)?;
        staging.write_at(&self.cfg.staging, offset, bytes)?;
        let len = staging.len();
        d.dirty = true;
        self.set_size(ino, len);
        Ok(bytes.len() as u32)
    }

    /// Truncates (or extends) a file; a file nobody has open is uploaded at once.
    pub(super) async fn truncate(&self, ino: u64, size: u64) -> FsResult<()> {
        let data = self.file_data(ino);
        let open = {
            let mut d = data.lock().await;
            if size == 0 {
                d.staging = Some(Staging::from_vec(Vec::new(), &self.cfg.staging)?);
            } else {
                self.ensure_staged(ino, &mut d).await?;
            }
            if let Some(s) = d.staging.as_mut() {
                s.truncate(&self.cfg.staging, size)?;
            }
            d.dirty = true;
            d.opens > 0
        };
        self.set_size(ino, size);
        if !open {
            let result = self.flush_inode(ino).await;
            self.drop_file_data_if_unused(ino).await;
            result?;
        }
        Ok(())
    }

    /// Uploads the inode's staged content if it changed. On failure the data stays staged and
    /// the error is logged at ERROR and returned as EIO (or the S3 error's errno).
    pub(super) async fn flush_inode(&self, ino: u64) -> FsResult<()> {
        let Some(data) = lock(&self.files).get(&ino).cloned() else {
            return Ok(());
        };
        let mut d = data.lock().await;
        if !d.dirty {
            return Ok(());
        }
        let node = self.node(ino)?;
        if !node.linked {
            // Unlinked while open: the data has nowhere to go.
            d.dirty = false;
            return Ok(());
        }
        let Some(staging) = d.staging.as_ref() else {
            return Ok(());
        };
        let path = self.table.path_of(ino).ok_or(Errno::ENOENT)?;
        let key = self.key_for_path(&path);
        let mut meta = node.state.foreign_meta.clone();
        let mut attrs = node.state.attr;
        attrs.size = staging.len();
        meta.extend(attr::posix_metadata(&attrs));
        let put = PutOptions {
            content_type: node
                .state
                .content_type
                .clone()
                .unwrap_or_else(|| "application/octet-stream".to_string()),
            metadata: meta,
        };
        let size = staging.len();
        let result = upload(
            &self.store,
            &key,
            staging,
            &put,
            self.cfg.part_size,
            self.cfg.parallel,
        )
        .await;
        match result {
            Ok(etag) => {
                d.dirty = false;
                let state = self.table.update(ino, |n| {
                    n.state.etag = etag;
                    n.state.attr.size = size;
                    n.state.content_type = Some(put.content_type.clone());
                    n.state.clone()
                });
                self.table.mark_uploaded(ino);
                if let Some(state) = state {
                    self.cache.put(&path, state);
                }
                tracing::debug!(key, size, "uploaded");
                Ok(())
            }
            Err(e) => {
                tracing::error!("upload of {key} ({size} bytes) failed, the data is NOT stored: {e}");
                Err(upload_errno(e.errno()))
            }
        }
    }

    /// `flush` (every close of a file descriptor): uploads changed data.
    pub async fn flush(&self, fh: u64) -> FsResult<()> {
        let handle = self.handle(fh)?;
        if !handle.writable {
            return Ok(());
        }
        self.flush_inode(handle.ino).await
    }

    /// `fsync`: uploads changed data.
    pub async fn fsync(&self, fh: u64) -> FsResult<()> {
        let handle = self.handle(fh)?;
        self.flush_inode(handle.ino).await
    }

    /// `release`: the last reference to a handle is gone.
    pub async fn release(&self, fh: u64) -> FsResult<()> {
        let handle = lock(&self.file_handles).remove(&fh).ok_or(Errno::EBADF)?;
        let ino = handle.ino;
        let mut result = Ok(());
        if handle.writable {
            result = self.flush_inode(ino).await;
        }
        let data = lock(&self.files).get(&ino).cloned();
        if let Some(data) = data {
            let mut d = data.lock().await;
            d.opens = d.opens.saturating_sub(1);
        }
        self.drop_file_data_if_unused(ino).await;
        self.table.close(ino);
        result
    }

    async fn drop_file_data_if_unused(&self, ino: u64) {
        let Some(data) = lock(&self.files).get(&ino).cloned() else {
            return;
        };
        let d = data.lock().await;
        if d.opens == 0 {
            if d.dirty {
                tracing::error!(ino, "discarding staged data that could not be uploaded");
            }
            drop(d);
            lock(&self.files).remove(&ino);
        }
    }

    /// `unlink`: deletes the object; open handles keep their staged data.
    pub async fn unlink(&self, parent: u64, name: &OsStr) -> FsResult<()> {
        self.ensure_writable()?;
        let node = self.find_child(parent, name).await?;
        if node.state.attr.kind == NodeKind::Dir {
            return Err(Errno::EISDIR);
        }
        let path = self.table.path_of(node.ino).ok_or(Errno::ENOENT)?;
        if !node.local_only {
            self.store.delete(&self.key_for_path(&path)).await?;
        }
        self.table.unlink_child(parent, name);
        self.cache.put_absent(&path);
        self.touch_dir(parent);
        Ok(())
    }
}

/// Upload failures are EIO unless a more precise errno applies (denied, timed out, too big).
fn upload_errno(errno: i32) -> Errno {
    match errno {
        libc::EACCES | libc::ETIMEDOUT | libc::EFBIG | libc::ENOSPC => Errno(errno),
        _ => Errno::EIO,
    }
}
