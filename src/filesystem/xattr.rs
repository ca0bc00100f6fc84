//! Extended attributes (`user.` namespace) stored in the object's `xattr` metadata.
//!
//! Reads answer from the attributes read with the object's metadata; changes are persisted like
//! chmod (a metadata copy guarded by the ETag), or travel with the data of a file open for
//! writing. `security.`, `system.` and `trusted.` names are not emulated (ENOTSUP).

use std::collections::BTreeMap;
use std::ffi::OsStr;

use super::{Errno, FsResult, S3Filesystem};
use crate::xattrs::{self, LATER_METADATA_ROOM, USER_METADATA_LIMIT, XATTR_KEY};

/// What `getxattr`/`listxattr` return: the size asked for, or the bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum XattrReply {
    /// The caller asked for the size (buffer size 0).
    Size(u32),
    /// The value (or the NUL-separated names).
    Data(Vec<u8>),
}

fn user_name(name: &OsStr) -> FsResult<&str> {
    let name = name.to_str().ok_or(Errno::EINVAL)?;
    if name.starts_with("user.") && name.len() > 5 {
        Ok(name)
    } else if name == "user." {
        Err(Errno::EINVAL)
    } else if name.len() > 255 {
        Err(Errno::ERANGE)
    } else {
        Err(Errno::ENOTSUP)
    }
}

fn sized(data: Vec<u8>, size: u32) -> FsResult<XattrReply> {
    if size == 0 {
        Ok(XattrReply::Size(data.len() as u32))
    } else if data.len() > size as usize {
        Err(Errno::ERANGE)
    } else {
        Ok(XattrReply::Data(data))
    }
}

impl S3Filesystem {
    fn xattrs_of(&self, ino: u64) -> FsResult<BTreeMap<String, Vec<u8>>> {
        let node = self.node(ino)?;
        Ok(node
            .state
            .foreign_meta
            .get(XATTR_KEY)
            .map(|v| xattrs::decode(v))
            .unwrap_or_default())
    }

    /// `getxattr`.
    pub fn getxattr(&self, ino: u64, name: &OsStr, size: u32) -> FsResult<XattrReply> {
        let name = user_name(name)?;
        let value = self.xattrs_of(ino)?.remove(name).ok_or(Errno::ENODATA)?;
        sized(value, size)
    }

    /// `listxattr`: the `user.` names, the only ones `getxattr` answers (names of other
    /// namespaces that s3fs stored stay in the metadata, unlisted).
    pub fn listxattr(&self, ino: u64, size: u32) -> FsResult<XattrReply> {
        let mut out = Vec::new();
        let xattrs = self.xattrs_of(ino)?;
        for name in xattrs.keys().filter(|n| user_name(OsStr::new(n)).is_ok()) {
            out.extend_from_slice(name.as_bytes());
            out.push(0);
        }
        sized(out, size)
    }

    /// `setxattr` with `XATTR_CREATE`/`XATTR_REPLACE` flags.
    pub async fn setxattr(&self, ino: u64, name: &OsStr, value: &[u8], flags: i32) -> FsResult<()> {
        self.ensure_writable()?;
        let name = user_name(name)?;
        let mut all = self.xattrs_of(ino)?;
        let exists = all.contains_key(name);
        if flags & libc::XATTR_CREATE != 0 && exists {
            return Err(Errno::EEXIST);
        }
        if flags & libc::XATTR_REPLACE != 0 && !exists {
            return Err(Errno::ENODATA);
        }
        all.insert(name.to_string(), value.to_vec());
        self.store_xattrs(ino, &all, name, Some(value)).await
    }

    /// `removexattr`.
    pub async fn removexattr(&self, ino: u64, name: &OsStr) -> FsResult<()> {
        self.ensure_writable()?;
        let name = user_name(name)?;
        let mut all = self.xattrs_of(ino)?;
        if all.remove(name).is_none() {
            return Err(Errno::ENODATA);
        }
        self.store_xattrs(ino, &all, name, None).await
    }

    /// Stores `all` as the attributes of `ino`, the result of setting `name` to `value` (or
    /// removing it, `None`): that change is what is made again on the attributes another
    /// client stored, if it changed the object meanwhile.
    async fn store_xattrs(
        &self,
        ino: u64,
        all: &BTreeMap<String, Vec<u8>>,
        name: &str,
        value: Option<&[u8]>,
    ) -> FsResult<()> {
        if ino == crate::namespace::ROOT_INO && self.prefix.is_empty() {
            return Err(Errno::ENOTSUP); // the bucket root has no object to hold them
        }
        let node = self.node(ino)?;
        let mut meta = node.state.foreign_meta.clone();
        if all.is_empty() {
            meta.remove(XATTR_KEY);
        } else {
            meta.insert(XATTR_KEY.to_string(), xattrs::encode(all));
        }
        let mut full = meta.clone();
        full.extend(crate::attr::posix_metadata(&node.state.attr));
        if xattrs::metadata_size(&full) + LATER_METADATA_ROOM > USER_METADATA_LIMIT {
            return Err(Errno::E2BIG);
        }
        let previous = node.state.foreign_meta.clone();
        let now = std::time::SystemTime::now();
        self.table.update(ino, |n| {
            n.state.foreign_meta = meta;
            n.state.attr.ctime = now;
        });
        let result = if node.state.attr.kind == crate::attr::NodeKind::File
            && self.mark_pending_upload(ino, false).await
        {
            Ok(())
        } else {
            self.persist_metadata_with(ino, |foreign| {
                let mut theirs = foreign
                    .get(XATTR_KEY)
                    .map(|v| xattrs::decode(v))
                    .unwrap_or_default();
                match value {
                    Some(v) => theirs.insert(name.to_string(), v.to_vec()),
                    None => theirs.remove(name),
                };
                if theirs.is_empty() {
                    foreign.remove(XATTR_KEY);
                } else {
                    foreign.insert(XATTR_KEY.to_string(), xattrs::encode(&theirs));
                }
            })
            .await
        };
        if result.is_err() {
            self.table.update(ino, |n| n.state.foreign_meta = previous);
        }
        result
    }
}
