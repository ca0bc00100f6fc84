//! `rename(2)`: server-side copies then deletes, since S3 has no rename.
//!
//! A file is copied to its new key (CopyObject, or UploadPartCopy past the single-copy limit)
//! with its attributes and a Content-Type that follows the new name's extension, then the old
//! key is deleted; a file with staged data is uploaded straight to the new key instead. A directory
//! moves every object under its prefix, copies in parallel (bounded), its marker last, then
//! deletes the old keys, marker last. This is not atomic: a failure part-way leaves both names
//! (never neither), and the error is returned. The inode keeps its number and open handles keep
//! working.

use std::ffi::OsStr;

use futures::stream::{self, StreamExt};

use super::{lock, Errno, FileData, FsResult, S3Filesystem};
use crate::attr::{self, NodeKind};
use crate::namespace::names::check_name;
use crate::namespace::Node;
use crate::store::{ListPage, PutOptions, StoreError};

/// Copies or deletes in flight at once while moving a directory.
const TREE_PARALLEL: usize = 16;

/// One object a directory rename copied.
struct Copied {
    /// The copy's ETag, when the server gave it.
    etag: Option<String>,
    /// The ETag of the version copied, when the copy was guarded by it.
    of: Option<String>,
}

/// The copies of a directory rename, by new key.
type TreeCopies = std::collections::HashMap<String, Copied>;

impl S3Filesystem {
    /// `rename` with `flags` (`RENAME_NOREPLACE` honoured, `RENAME_EXCHANGE` refused with EINVAL).
    pub async fn rename(
        &self,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
        flags: u32,
    ) -> FsResult<()> {
        self.moves
            .work(|| self.paths_of(&[parent, newparent]), async {
                self.ensure_writable()?;
                if flags & libc::RENAME_EXCHANGE != 0
                    || flags & !(libc::RENAME_NOREPLACE | libc::RENAME_EXCHANGE) != 0
                {
                    return Err(Errno::EINVAL);
                }
                let newname_str = check_name(newname)?;
                let src = self.find_child(parent, name).await?;
                self.dir_node(newparent)?;
                let dst = match self.find_child(newparent, newname).await {
                    Ok(n) => Some(n),
                    Err(e) if e == Errno::ENOENT => None,
                    Err(e) => return Err(e),
                };
                if let Some(d) = &dst {
                    if d.ino == src.ino {
                        return Ok(());
                    }
                    if flags & libc::RENAME_NOREPLACE != 0 {
                        return Err(Errno::EEXIST);
                    }
                }
                let src_path = self.table.path_of(src.ino).ok_or(Errno::ENOENT)?;
                let dst_path = self
                    .table
                    .child_path(newparent, newname_str)
                    .ok_or(Errno::ENOENT)?;
                Self::check_key_len(if src.state.attr.kind == NodeKind::Dir {
                    self.dir_key(&dst_path).len()
                } else {
                    self.key_for_path(&dst_path).len()
                })?;
                if src.state.attr.kind == NodeKind::Dir {
                    if self.table.is_ancestor(src.ino, newparent) {
                        return Err(Errno::EINVAL);
                    }
                    if let Some(d) = &dst {
                        if d.state.attr.kind != NodeKind::Dir {
                            return Err(Errno::ENOTDIR);
                        }
                        self.check_empty_dir(d).await?;
                    }
                    if parent != newparent {
                        self.keep_implicit_dir(parent).await?;
                    }
                    // Operations under either name wait until the keys have moved and the namespace
                    // shows the new name; the move waits for those already at work there.
                    self.moves
                        .moving(&src_path, &dst_path, async {
                            // Files open inside wait with their uploads until the tree has moved, then upload
                            // under the new name (a close meanwhile would write to the old prefix).
                            let held = self.lock_write_states(self.open_files_under(&src_path)).await;
                            let moved = self.move_tree(&src, &src_path, &dst_path).await;
                            // Listings of the directory and below it named paths that changed (or, after a
                            // failure, keys that may now be under both names or only the new one).
                            lock(&self.listings).forget_under(&src_path);
                            lock(&self.subtree).forget_under(&src_path);
                            lock(&self.subtree).forget_under(&dst_path);
                            let copies = match moved {
                                Ok(copies) => copies,
                                Err(e) => {
                                    // What this mount knew of both trees is no longer true: both are listed again.
                                    self.cache.invalidate_tree(&src_path);
                                    self.cache.invalidate_tree(&dst_path);
                                    self.complete.forget(src.ino);
                                    self.complete.forget(newparent);
                                    self.forget_contents_below(src.ino);
                                    return Err(e);
                                }
                            };
                            // Markers of directories below it moved with the other keys; s3fs-style markers
                            // listed below it moved too.
                            self.table
                                .rekey_dir_markers(&self.dir_key(&src_path), &self.dir_key(&dst_path));
                            self.rekey_legacy_dirs(&src_path, &dst_path);
                            // The empty directory replaced keeps its marker until the tree is in its place, so
                            // a move that fails leaves it as it was. A marker the move wrote over is gone already.
                            if let Some(d) = &dst {
                                let written = self.node(src.ino)?.state.dir_marker;
                                if let Some(old) = d
                                    .state
                                    .dir_marker
                                    .as_ref()
                                    .filter(|m| Some(*m) != written.as_ref())
                                {
                                    if let Err(e) = self.store.delete(old).await {
                                        tracing::error!(
                                    "renamed {src_path} over the empty directory {dst_path}, but its old \
                                     marker {old} could not be deleted (it still carries the \
                                     replaced directory's attributes): {e}"
                                );
                                    }
                                }
                            }
                            self.table.rename(parent, name, newparent, newname);
                            drop(held);
                            self.complete.moved(src.ino);
                            // A listing below it taken while its keys moved may miss names: none counts.
                            self.forget_contents_below(src.ino);
                            self.take_copied_etags(src.ino, &copies);
                            Ok(())
                        })
                        .await?;
                } else {
                    if let Some(d) = &dst {
                        if d.state.attr.kind == NodeKind::Dir {
                            return Err(Errno::EISDIR);
                        }
                    }
                    let was_local = src.local_only;
                    if parent != newparent && !was_local {
                        self.keep_implicit_dir(parent).await?;
                    }
                    // Hold the file's write state while it moves, so no flush uploads to the old name
                    // between the move and the namespace change. The file it replaces, if open, keeps
                    // its content for its handles (staged, as unlink does) and is held too, so none of
                    // them uploads over the moved file.
                    let mut held = self
                        .lock_write_states(
                            std::iter::once(src.ino)
                                .chain(dst.as_ref().map(|d| d.ino))
                                .collect(),
                        )
                        .await;
                    // A close may have uploaded a new file while this waited for its write state (and
                    // its release may have dropped that state): the node now says where the data is.
                    let src = self.node(src.ino)?;
                    if !src.linked {
                        // Its upload failed and the file left the directory meanwhile.
                        return Err(Errno::ENOENT);
                    }
                    if parent != newparent && src.local_only != was_local {
                        self.keep_implicit_dir(parent).await?;
                    }
                    let mut moving = None;
                    for (ino, d) in held.iter_mut() {
                        if *ino == src.ino {
                            moving = Some(&mut **d);
                        } else {
                            self.stage_before_removal(*ino, d).await?;
                            self.abort_stream(d).await;
                            d.sequential = false;
                        }
                    }
                    self.move_file(&src, &src_path, &dst_path, newname_str, moving)
                        .await?;
                    self.table.rename(parent, name, newparent, newname);
                    drop(held);
                }
                self.entry_removed(parent, name);
                self.entry_added(newparent, newname, src.state.attr.kind);
                let now = std::time::SystemTime::now();
                self.table.update(src.ino, |n| n.state.attr.ctime = now);
                if src.state.attr.kind == NodeKind::Dir {
                    self.cache.invalidate_tree(&src_path);
                    self.cache.invalidate_tree(&dst_path);
                } else {
                    // Nothing lives below a file: no scan of the whole cache per renamed file.
                    self.cache.invalidate(&dst_path);
                }
                self.cache.put_absent(&src_path);
                self.touch_dir(parent);
                self.touch_dir(newparent);
                let moved = (src.state.attr.kind != NodeKind::Dir).then_some(src.ino);
                self.reset_readers(moved).await;
                Ok(())
            })
            .await
    }

    /// ENOTEMPTY unless the directory about to be replaced is empty.
    async fn check_empty_dir(&self, dir: &Node) -> FsResult<()> {
        if !self.table.local_children(dir.ino).is_empty() {
            return Err(Errno::ENOTEMPTY);
        }
        let path = self.table.path_of(dir.ino).ok_or(Errno::ENOENT)?;
        let prefix = self.dir_key(&path);
        let page = self.store.list(&prefix, false, None, 2).await?;
        if page.objects.iter().any(|o| o.key != prefix) {
            return Err(Errno::ENOTEMPTY);
        }
        Ok(())
    }

    async fn move_file(
        &self,
        src: &Node,
        src_path: &str,
        dst_path: &str,
        newname: &str,
        data: Option<&mut FileData>,
    ) -> FsResult<()> {
        let content_type = self.mime.for_name(newname).to_string();
        let src_key = self.key_for_path(src_path);
        if let Some(d) = data {
            // Staged content not stored yet goes straight to the new name; a stored copy
            // (kept for readers) is the object's content, which a server-side copy moves.
            if d.staging.is_some() && (d.dirty || src.local_only) {
                self.upload_staged(src.ino, d, dst_path, Some(content_type))
                    .await?;
                if !src.local_only {
                    self.store.delete(&src_key).await?;
                }
                return Ok(());
            }
        }
        if src.local_only {
            return Ok(());
        }
        let mut meta = src.state.foreign_meta.clone();
        let mut attrs = src.state.attr;
        attrs.ctime = std::time::SystemTime::now();
        meta.extend(attr::posix_metadata(&attrs));
        let put = PutOptions {
            content_type: content_type.clone(),
            metadata: meta,
            content_headers: src.state.content_headers.clone(),
        };
        // Guarded by the ETag this mount knows, so the copy's ETag names the same content
        // (readers of the file go on with it); a version another client stored meanwhile moves
        // all the same, and its readers here then fail rather than mix the two.
        let dst_key = self.key_for_path(dst_path);
        let known = src.state.etag.as_deref();
        let size = src.state.attr.size;
        let (etag, same_content) = match self.store.copy(&src_key, &dst_key, size, &put, known).await {
            Ok(etag) => (etag, known.is_some()),
            Err(e) if e.is_precondition_failed() => (
                self.store.copy(&src_key, &dst_key, size, &put, None).await?,
                false,
            ),
            Err(e) => return Err(e.into()),
        };
        self.store.delete(&src_key).await?;
        self.table.update(src.ino, |n| {
            if same_content {
                n.take_copy_etag(etag);
            } else {
                n.state.etag = etag;
            }
            n.state.posix_stored = true;
            n.state.content_type = Some(content_type);
        });
        Ok(())
    }

    /// Directories below `dir` (moved, or partly moved): what this mount knew of their
    /// contents no longer counts, nor does a listing of them that started before now.
    fn forget_contents_below(&self, dir: u64) {
        for ino in self.table.all_inodes() {
            let is_dir = self
                .table
                .get(ino)
                .is_some_and(|n| n.state.attr.kind == NodeKind::Dir);
            if is_dir && ino != dir && self.table.is_ancestor(dir, ino) {
                self.complete.forget(ino);
                self.complete.moved(ino);
            }
        }
    }

    /// Files below the directory `dir`, just moved: a copy may have a new ETag (SSE-KMS, a
    /// multipart object copied whole, one copied in parts), which the node takes (`copies`, by
    /// new key): as the same content when the copy was of the version the node knows, else as
    /// another version (readers of the old one then fail instead of mixing the two); where
    /// the server gave none, the node asks the bucket at its next use.
    fn take_copied_etags(&self, dir: u64, copies: &TreeCopies) {
        for ino in self.table.all_inodes() {
            let moved_file = self
                .table
                .get(ino)
                .is_some_and(|n| n.linked && n.state.attr.kind != NodeKind::Dir);
            if !moved_file || !self.table.is_ancestor(dir, ino) {
                continue;
            }
            let Some(copy) = self
                .table
                .path_of(ino)
                .and_then(|p| copies.get(&self.key_for_path(&p)))
            else {
                continue;
            };
            self.table.update(ino, |n| {
                let same = match (&copy.of, &n.state.etag) {
                    (Some(of), Some(known)) => crate::store::etags_match(of, known),
                    _ => false,
                };
                match &copy.etag {
                    Some(etag) if same => n.take_copy_etag(Some(etag.clone())),
                    Some(etag) => n.state.etag = Some(etag.clone()),
                    None => n.stale = !n.local_only,
                }
            });
        }
    }

    /// The s3fs `name_$folder$` markers listed below `src` moved with the other keys to `dst`.
    fn rekey_legacy_dirs(&self, src: &str, dst: &str) {
        let mut legacy = lock(&self.legacy_dirs);
        let below = format!("{src}/");
        let moved: Vec<String> = legacy.iter().filter(|p| p.starts_with(&below)).cloned().collect();
        for p in moved {
            legacy.remove(&p);
            legacy.insert(format!("{dst}/{}", &p[below.len()..]));
        }
    }

    /// Moves every object under the directory's prefix: children first (in parallel), the
    /// marker last; then deletes the old keys, the marker last.
    /// Returns the ETags the copies got, by new key (`None` where the server gave none).
    async fn move_tree(&self, src: &Node, src_path: &str, dst_path: &str) -> FsResult<TreeCopies> {
        let src_prefix = self.dir_key(src_path);
        let dst_prefix = self.dir_key(dst_path);
        let mut keys: Vec<(String, u64)> = Vec::new();
        let mut listed: std::collections::HashMap<String, Option<String>> = Default::default();
        let mut token = None;
        loop {
            let ListPage { objects, next, .. } = self.store.list(&src_prefix, false, token, 1000).await?;
            for o in objects {
                keys.push((o.key.clone(), o.size));
                listed.insert(o.key, o.etag);
            }
            match next {
                Some(t) => token = Some(t),
                None => break,
            }
        }
        // A child whose new key S3 would refuse: nothing is copied.
        let longest = keys.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        Self::check_key_len((longest + dst_prefix.len()).saturating_sub(src_prefix.len()))?;
        let marker = src.state.dir_marker.clone();
        let is_marker = |k: &str| k == src_prefix || marker.as_deref() == Some(k);
        let children: Vec<(String, u64)> = keys.iter().filter(|(k, _)| !is_marker(k)).cloned().collect();
        let listed = &listed;
        let results: Vec<Result<(String, Copied), StoreError>> = stream::iter(children.clone())
            .map(|(key, size)| {
                let dst = format!("{dst_prefix}{}", &key[src_prefix.len()..]);
                async move {
                    // Guarded by the listed ETag: the copy is then that version, under a new
                    // ETag perhaps. One another client replaced since moves all the same.
                    let source = listed.get(&key).cloned().flatten();
                    let copied = match self.store.copy_as_is(&key, &dst, size, source.as_deref()).await {
                        Ok(etag) => Copied { etag, of: source },
                        Err(e) if e.is_precondition_failed() => Copied {
                            etag: self.store.copy_as_is(&key, &dst, size, None).await?,
                            of: None,
                        },
                        Err(e) => return Err(e),
                    };
                    Ok((dst, copied))
                }
            })
            .buffer_unordered(TREE_PARALLEL)
            .collect()
            .await;
        let copies = match results.into_iter().collect::<Result<_, StoreError>>() {
            Ok(copies) => copies,
            Err(e) => {
                tracing::error!(
                    "moving {src_prefix} to {dst_prefix} failed part-way, both names remain: {e}"
                );
                return Err(e.into());
            }
        };
        // The marker, with the directory's attributes (a new ctime), under the new name. The
        // node takes it once the old keys are gone: until then the old marker is its own.
        let mut new_marker = None;
        if marker.is_some() || keys.iter().any(|(k, _)| k == &src_prefix) {
            let mut attrs = src.state.attr;
            attrs.ctime = std::time::SystemTime::now();
            let mut meta = src.state.foreign_meta.clone();
            meta.extend(attr::posix_metadata(&attrs));
            let put = PutOptions {
                content_type: src
                    .state
                    .content_type
                    .clone()
                    .unwrap_or_else(|| "application/octet-stream".into()),
                metadata: meta,
                content_headers: src.state.content_headers.clone(),
            };
            let etag = self.store.put(&dst_prefix, bytes::Bytes::new(), &put).await?;
            new_marker = Some((dst_prefix.clone(), etag));
        }
        let deletes: Vec<Result<(), StoreError>> = stream::iter(children)
            .map(|(key, _)| async move { self.store.delete(&key).await })
            .buffer_unordered(TREE_PARALLEL)
            .collect()
            .await;
        if let Some(e) = deletes.into_iter().find_map(Result::err) {
            tracing::error!(
                "moving {src_prefix} to {dst_prefix}: everything was copied, but deleting the old keys failed part-way, so some remain under the old name too: {e}"
            );
            return Err(e.into());
        }
        for (key, _) in keys.iter().filter(|(k, _)| is_marker(k)) {
            self.store.delete(key).await?;
        }
        if let Some(m) = &marker {
            if !keys.iter().any(|(k, _)| k == m) {
                self.store.delete(m).await?;
            }
        }
        self.delete_legacy_marker(src_path, marker.as_deref()).await?;
        if let Some((dst_marker, etag)) = new_marker {
            self.table.update(src.ino, |n| {
                n.state.etag = etag;
                n.state.posix_stored = true;
                n.state.dir_marker = Some(dst_marker);
            });
        }
        Ok(copies)
    }
}
