//! Symlinks (target in the object body, mode `S_IFLNK`), `mknod` (regular files, FIFOs,
//! sockets and device nodes stored as empty objects carrying their mode and `rdev`, as s3fs
//! does) and `fallocate`.

use std::ffi::OsStr;

use bytes::Bytes;

use super::{Caller, Errno, FsResult, S3Filesystem, Stat};
use crate::attr::{self, NodeKind};
use crate::namespace::names::check_name;
use crate::namespace::ObjectState;
use crate::store::PutOptions;

/// ossfs may keep a symlink's target in this metadata entry instead of the body.
const OSSFS_SYMLINK_KEY: &str = "symlink-target";

impl S3Filesystem {
    /// Fails with EEXIST if `name` exists in `parent` (or the lookup's own error).
    async fn ensure_absent(&self, parent: u64, name: &OsStr) -> FsResult<()> {
        match self.find_child(parent, name).await {
            Ok(_) => Err(Errno::EEXIST),
            Err(e) if e == Errno::ENOENT => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Writes a new object with `body` for a new inode and registers it.
    async fn create_object(
        &self,
        parent: u64,
        name: &OsStr,
        attrs: attr::Attributes,
        body: Bytes,
    ) -> FsResult<Stat> {
        let name_str = check_name(name)?;
        let path = self.table.child_path(parent, name_str).ok_or(Errno::ENOENT)?;
        Self::check_key_len(self.key_for_path(&path).len())?;
        let kind = attrs.kind;
        let put = PutOptions {
            content_type: if attrs.kind == NodeKind::File {
                self.mime.for_name(name_str).to_string()
            } else {
                crate::fileio::mime::OCTET_STREAM.to_string()
            },
            metadata: attr::posix_metadata(&attrs),
            content_headers: Vec::new(),
        };
        let etag = self.store.put(&self.key_for_path(&path), body, &put).await?;
        let state = ObjectState::just_stored(attrs, etag, put.content_type, None);
        self.cache.put(&path, state.clone());
        let ino = self.place_child(parent, name, state, false);
        self.table.inc_lookup(ino);
        self.entry_added(parent, name, kind);
        self.touch_dir(parent);
        Ok(self.stat_of(&self.node(ino)?))
    }

    /// `symlink`: the target is the object's body.
    pub async fn symlink(&self, parent: u64, name: &OsStr, target: &OsStr, caller: Caller) -> FsResult<Stat> {
        self.moves
            .work(|| self.paths_of(&[parent]), async {
                self.ensure_writable()?;
                check_name(name)?;
                let parent_node = self.dir_node(parent)?;
                let target = target.as_encoded_bytes();
                if target.is_empty() {
                    return Err(Errno::ENOENT);
                }
                if target.len() > 4095 {
                    return Err(Errno::ENAMETOOLONG);
                }
                self.ensure_absent(parent, name).await?;
                let mut attrs = self.new_attributes(&parent_node, caller, NodeKind::Symlink, 0o777);
                attrs.perm = 0o777;
                attrs.size = target.len() as u64;
                self.create_object(parent, name, attrs, Bytes::copy_from_slice(target))
                    .await
            })
            .await
    }

    /// `readlink`: the body of the object (or ossfs's `symlink-target` metadata).
    pub async fn readlink(&self, ino: u64) -> FsResult<Bytes> {
        let node = self.node(ino)?;
        if node.state.attr.kind != NodeKind::Symlink {
            return Err(Errno::EINVAL);
        }
        if let Some(t) = node.state.foreign_meta.get(OSSFS_SYMLINK_KEY) {
            return Ok(Bytes::from(t.clone().into_bytes()));
        }
        let path = self.table.path_of(ino).ok_or(Errno::ENOENT)?;
        // As much as a target can hold (PATH_MAX), not the size this mount knows: another
        // client may have pointed the link elsewhere since, and a prefix of its new target
        // would lead somewhere else again.
        Ok(self
            .store
            .get_range(&self.key_for_path(&path), 0, libc::PATH_MAX as u64, None)
            .await?)
    }

    /// `mknod`: a regular file, FIFO, socket or device node as an empty object with its mode.
    /// (The kernel already refused device nodes to callers without CAP_MKNOD.)
    pub async fn mknod(
        &self,
        parent: u64,
        name: &OsStr,
        mode: u32,
        rdev: u32,
        caller: Caller,
    ) -> FsResult<Stat> {
        self.moves
            .work(|| self.paths_of(&[parent]), async {
                self.ensure_writable()?;
                check_name(name)?;
                let parent_node = self.dir_node(parent)?;
                let kind = match NodeKind::from_type_bits(mode) {
                    Some(NodeKind::Dir) | Some(NodeKind::Symlink) | None => return Err(Errno::EINVAL),
                    Some(k) => k,
                };
                self.ensure_absent(parent, name).await?;
                let mut attrs = self.new_attributes(&parent_node, caller, kind, mode & 0o7777);
                if matches!(kind, NodeKind::CharDevice | NodeKind::BlockDevice) {
                    attrs.rdev = rdev;
                }
                self.create_object(parent, name, attrs, Bytes::new()).await
            })
            .await
    }

    /// `fallocate`: mode 0 makes sure the file is at least `offset + length` long; other modes
    /// (punching holes, collapsing ranges) have no meaning for objects: EOPNOTSUPP. A `killer`
    /// (a caller without `CAP_FSETID`) clears the set-ID bits as a write does.
    pub async fn fallocate(
        &self,
        fh: u64,
        offset: u64,
        length: u64,
        mode: i32,
        killer: Option<Caller>,
    ) -> FsResult<()> {
        if mode != 0 {
            return Err(Errno(libc::EOPNOTSUPP));
        }
        let end = offset.checked_add(length).ok_or(Errno(libc::EFBIG))?;
        let ino = self.writable_handle_ino(fh)?;
        let before = self.node(ino)?.state.attr;
        let cleared = killer.and_then(|who| self.clear_setid_for_write(fh, &who));
        let done = if before.size < end {
            // The new mode travels with the content.
            self.truncate(ino, end).await
        } else if cleared.is_some() && !self.mark_pending_upload(ino, false).await {
            self.persist_metadata(ino).await
        } else {
            Ok(())
        };
        if let (Err(_), Some(cleared)) = (&done, cleared) {
            // A fallocate that failed changes nothing.
            self.update_attributes(ino, |a| {
                if a.perm == cleared {
                    a.perm = before.perm;
                }
            });
        }
        done
    }
}
