//! Directories: opendir/readdir (paged listings), mkdir and rmdir.
//!
//! A directory handle lists lazily: each `readdir` that needs more entries fetches the next
//! LIST page (1,000 keys), so a directory of 100,000 objects streams without a long first
//! call. Offsets are positions in the handle's entry list (`.` and `..` first); children
//! created by this mount and not uploaded yet are appended at the end. A directory whose
//! contents are known (created by this mount, or listed completely within the stat TTL) is
//! answered from memory without a LIST.

use std::ffi::{OsStr, OsString};
use std::sync::Arc;

use super::{lock, Caller, Errno, FsResult, Node, S3Filesystem, Stat};
use crate::attr::{self, NodeKind};
use crate::namespace::complete::ListingTicket;
use crate::namespace::names::{check_name, ListingWalk};
use crate::namespace::{child_ino, join, ObjectState};
use crate::store::{ListPage, PutOptions};

/// Keys per listing page.
pub(super) const PAGE_KEYS: i32 = 1000;
/// Entries resolved together for one `readdirplus` reply (a 32 KiB reply holds ~200).
const PLUS_BATCH: usize = 128;
/// Resolves of one `readdirplus` batch in flight at once.
const PLUS_PARALLEL: usize = 32;

/// One directory entry as readdir returns it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntry {
    /// Inode number (a stable hash for entries the kernel has not looked up).
    pub ino: u64,
    /// Kind.
    pub kind: NodeKind,
    /// Name.
    pub name: OsString,
}

/// State of one open directory handle.
#[derive(Debug)]
pub struct DirHandle {
    ino: u64,
    path: String,
    entries: Vec<DirEntry>,
    token: Option<String>,
    started: bool,
    done: bool,
    /// The pages so far (names given out, files kept back).
    walk: ListingWalk,
    /// This mount's files not uploaded yet when the listing started: listed at its end even
    /// if an upload lands meanwhile, after the page that would have shown it was read.
    local_at_start: Vec<(OsString, NodeKind)>,
    /// Taken when the listing started, to trust it as the complete contents at the end.
    ticket: Option<ListingTicket>,
    /// The next page, requested as soon as the previous one arrived (the kernel is usually
    /// still consuming that one), so a long listing costs about one LIST round trip per page.
    next_page: Option<PageFetch>,
    /// Version of the known contents these entries are (see
    /// [`crate::namespace::complete::CompleteDirs`]), if they are.
    version: Option<u64>,
}

type PageFetch = tokio::task::JoinHandle<Result<ListPage, crate::store::StoreError>>;

impl Drop for DirHandle {
    fn drop(&mut self) {
        if let Some(p) = self.next_page.take() {
            p.abort();
        }
    }
}

impl S3Filesystem {
    /// `opendir`: the handle, and whether what the kernel cached of an earlier listing is
    /// still right: the contents are known and are the ones that listing returned. (Knowledge
    /// is also renewed without a readdir, by a lookup that lists the directory; a kernel cache
    /// filled before that would otherwise be kept after another client changed the directory.)
    pub fn opendir(&self, ino: u64) -> FsResult<(u64, bool)> {
        let node = self.dir_node(ino)?;
        let path = self.table.path_of(ino).ok_or(Errno::ENOENT)?;
        let entries = vec![
            DirEntry {
                ino,
                kind: NodeKind::Dir,
                name: ".".into(),
            },
            DirEntry {
                ino: node.parent,
                kind: NodeKind::Dir,
                name: "..".into(),
            },
        ];
        let fh = self.new_fh();
        let handle = DirHandle {
            ino,
            path,
            entries,
            token: None,
            started: false,
            done: false,
            walk: ListingWalk::default(),
            local_at_start: Vec::new(),
            ticket: None,
            next_page: None,
            version: None,
        };
        lock(&self.dir_handles).insert(fh, Arc::new(tokio::sync::Mutex::new(handle)));
        self.table.open(ino);
        Ok((fh, self.complete.kernel_copy_current(ino)))
    }

    /// `releasedir`.
    pub fn releasedir(&self, fh: u64) {
        if let Some(h) = lock(&self.dir_handles).remove(&fh) {
            if let Ok(h) = h.try_lock() {
                self.table.close(h.ino);
            } else {
                tracing::warn!("directory handle {fh} released while in use");
            }
        }
    }

    /// Turns the next listing page of the directory at `dir_path` into entries (see
    /// [`ListingWalk`]), noting what the page proves exists (clearing negative cache entries,
    /// legacy `_$folder$` markers).
    pub(super) fn absorb_page(
        &self,
        dir_path: &str,
        prefix: &str,
        page: &ListPage,
        walk: &mut ListingWalk,
    ) -> Vec<(OsString, NodeKind)> {
        let found = walk.next_page(prefix, page);
        for name in found.legacy_markers.iter().filter_map(|n| n.to_str()) {
            lock(&self.legacy_dirs).insert(join(dir_path, name));
        }
        let mut listed = Vec::new();
        for e in found.entries {
            let Some(name) = e.name.to_str() else { continue };
            self.cache.clear_absent(&join(dir_path, name));
            listed.push((e.name, e.kind));
        }
        listed
    }

    fn push_entries(&self, h: &mut DirHandle, listed: &[(OsString, NodeKind)]) {
        for (name, kind) in listed {
            let ino = self
                .table
                .child(h.ino, name)
                .map(|n| n.ino)
                // The number the entry will have once looked up (unless a live node of
                // another path holds it).
                .unwrap_or_else(|| child_ino(&h.path, name));
            h.entries.push(DirEntry {
                ino,
                kind: *kind,
                name: name.clone(),
            });
        }
    }

    /// Fetches the next listing page into the handle, or all entries from memory when the
    /// directory's contents are known (see [`crate::namespace::complete`]).
    async fn fetch_page(&self, h: &mut DirHandle) -> FsResult<()> {
        // The directory was renamed since the handle was opened: list its new prefix. Names
        // already returned are not returned again, and the listing is not trusted as complete.
        if let Some(now) = self.table.path_of(h.ino).filter(|p| *p != h.path) {
            h.path = now;
            h.token = None;
            h.ticket = None;
            if let Some(p) = h.next_page.take() {
                p.abort();
            }
        }
        if !h.started {
            if !self.complete.is_known(h.ino) {
                self.adopt_subtree_listing(h.ino, &h.path);
            }
            if let Some((known, version)) = self.complete.entries(h.ino) {
                h.started = true;
                h.done = true;
                h.version = Some(version);
                self.push_entries(h, &known);
                self.remember_listing(h.ino, &h.path, true, &known);
                return Ok(());
            }
            h.ticket = Some(self.complete.ticket());
            h.local_at_start = self
                .table
                .local_children(h.ino)
                .into_iter()
                .map(|(n, _, k)| (n, k))
                .collect();
            self.start_subtree_listing(h.ino, &h.path);
        }
        let prefix = self.dir_key(&h.path);
        let first_page = h.token.is_none();
        let page = match h.next_page.take() {
            Some(fetch) => match fetch.await {
                Ok(page) => page?,
                Err(e) => return Err(crate::store::StoreError::local("ListObjectsV2", &prefix, e).into()),
            },
            None => self.store.list(&prefix, true, h.token.take(), PAGE_KEYS).await?,
        };
        h.started = true;
        h.token = page.next.clone();
        if let Some(token) = h.token.clone() {
            let (store, prefix) = (self.store.clone(), prefix.clone());
            h.next_page = Some(tokio::spawn(async move {
                store.list(&prefix, true, Some(token), PAGE_KEYS).await
            }));
        }
        let listed = self.absorb_page(&h.path, &prefix, &page, &mut h.walk);
        self.push_entries(h, &listed);
        self.remember_listing(h.ino, &h.path, first_page, &listed);
        if h.token.is_none() {
            h.done = true;
            // This mount's files the pages did not show: not uploaded yet, or uploaded after
            // the page that would have shown them was read (still here, then).
            let local = self
                .table
                .local_children(h.ino)
                .into_iter()
                .map(|(n, _, k)| (n, k));
            for (name, kind) in std::mem::take(&mut h.local_at_start).into_iter().chain(local) {
                let (ino, kind) = match self.table.child(h.ino, &name) {
                    Some(node) => (node.ino, node.state.attr.kind),
                    // Uploaded, then dropped from the table (nothing held it): the stat
                    // cache has it if it is still there.
                    None if name
                        .to_str()
                        .is_some_and(|n| self.cache.get(&join(&h.path, n)).is_some()) =>
                    {
                        (child_ino(&h.path, &name), kind)
                    }
                    None => continue,
                };
                if h.walk.claim(&name) {
                    h.entries.push(DirEntry { ino, kind, name });
                }
            }
            if let Some(ticket) = h.ticket.take() {
                let all = h.entries[2..].iter().map(|e| (e.name.clone(), e.kind));
                h.version = self.complete.mark_listed_version(h.ino, ticket, all);
            }
        }
        Ok(())
    }

    /// `readdir`: calls `add(entry, next_offset)` for entries from `offset` until it returns
    /// true (buffer full) or the listing ends.
    pub async fn readdir(
        &self,
        fh: u64,
        offset: u64,
        add: impl FnMut(&DirEntry, u64) -> bool,
    ) -> FsResult<()> {
        let handle = lock(&self.dir_handles).get(&fh).cloned().ok_or(Errno::EBADF)?;
        self.readdir_locked(&handle, offset, add).await
    }

    async fn readdir_locked(
        &self,
        handle: &tokio::sync::Mutex<DirHandle>,
        offset: u64,
        mut add: impl FnMut(&DirEntry, u64) -> bool,
    ) -> FsResult<()> {
        let mut h = handle.lock().await;
        if offset == 0 && h.started {
            // rewinddir: list afresh.
            h.entries.truncate(2);
            h.token = None;
            h.started = false;
            h.done = false;
            h.walk = ListingWalk::default();
            h.local_at_start.clear();
            h.ticket = None;
            h.version = None;
            if let Some(p) = h.next_page.take() {
                p.abort();
            }
        }
        let mut i = offset as usize;
        loop {
            while i >= h.entries.len() && !h.done {
                self.fetch_page(&mut h).await?;
            }
            if i >= h.entries.len() {
                // An empty reply at the end: the kernel's cache, filled from this handle's
                // entries, is complete now.
                if let (true, Some(v)) = (i == offset as usize, h.version) {
                    self.complete.kernel_filled(h.ino, v);
                }
                return Ok(());
            }
            if add(&h.entries[i], (i + 1) as u64) {
                return Ok(());
            }
            i += 1;
        }
    }

    /// `readdirplus`: [`Self::readdir`] with each entry's attributes, so an `ls -l` needs no
    /// lookup per entry. `add(entry, attributes, next_offset)` returns true when the reply is
    /// full (that entry is not sent). Every entry sent other than `.` and `..` takes a kernel
    /// reference, as a lookup does. Entries are resolved a batch at a time, concurrently (the
    /// prefetch window keeps HEAD requests running ahead of the batch); a name that vanished
    /// since the listing is left out.
    pub async fn readdirplus(
        &self,
        fh: u64,
        offset: u64,
        mut add: impl FnMut(&DirEntry, &Stat, u64) -> bool,
    ) -> FsResult<()> {
        let handle = lock(&self.dir_handles).get(&fh).cloned().ok_or(Errno::EBADF)?;
        // The kernel asks for the first reply with attributes whoever is listing; it asks
        // again with attributes only if the caller then stats entries. So the first reply sends
        // only what memory knows (at least `.` and `..`): a `find` or `ls` of many small
        // directories then costs no HEAD per entry, and an `ls -l` gets the rest with
        // attributes once it has looked up the first entries.
        let first_call = offset == 0;
        let dir = handle.lock().await.ino;
        let mut i = offset as usize;
        let mut sent = 0usize;
        loop {
            let mut batch = Vec::with_capacity(PLUS_BATCH);
            let listed = self
                .readdir_locked(&handle, i as u64, |e, _| {
                    batch.push(e.clone());
                    batch.len() == PLUS_BATCH
                })
                .await
                .and_then(|()| self.node(dir));
            let dir_node = &match listed {
                Ok(node) if !batch.is_empty() => node,
                Ok(_) => return Ok(()),
                // Entries already in the reply took kernel references: it must reach the
                // kernel (which forgets them in time); the error comes with the next call.
                Err(_) if sent > 0 => return Ok(()),
                Err(e) => return Err(e),
            };
            let mut resolved = Vec::with_capacity(batch.len());
            if first_call {
                resolved.extend(
                    batch
                        .iter()
                        .map(|e| self.node_for_plus_in_memory(dir_node, &e.name)),
                );
            } else {
                for group in batch.chunks(PLUS_PARALLEL) {
                    let names = group.iter().map(|e| self.node_for_plus(dir_node, &e.name));
                    resolved.extend(futures::future::join_all(names).await.into_iter().map(Some));
                }
            }
            for (e, node) in batch.iter().zip(resolved) {
                // The first reply stops at the first entry memory cannot describe.
                let Some(node) = node else { return Ok(()) };
                i += 1;
                let node = match node {
                    Ok(Some(node)) => node,
                    Ok(None) => continue,
                    // Send what is resolved; the error reaches the caller on its next call.
                    Err(_) if sent > 0 => return Ok(()),
                    Err(err) => return Err(err),
                };
                let dot = matches!(e.name.as_encoded_bytes(), b"." | b"..");
                let entry = DirEntry {
                    ino: node.ino,
                    kind: node.state.attr.kind,
                    name: e.name.clone(),
                };
                if add(&entry, &self.stat_of(&node), i as u64) {
                    return Ok(());
                }
                sent += 1;
                if !dot {
                    self.table.acquire(&node);
                }
            }
        }
    }

    /// [`Self::node_for_plus`] from memory alone; `None` if that needs a request.
    fn node_for_plus_in_memory(&self, dir: &Node, name: &OsStr) -> Option<FsResult<Option<Node>>> {
        match name.as_encoded_bytes() {
            b"." => Some(Ok(Some(dir.clone()))),
            b".." => Some(self.node(dir.parent).map(Some)),
            _ => match self.find_child_in_memory(dir.ino, name)? {
                Ok(node) => Some(Ok(Some(node))),
                Err(e) if e == Errno::ENOENT => Some(Ok(None)),
                Err(e) => Some(Err(e)),
            },
        }
    }

    /// The node `readdirplus` sends for `name` in the directory `dir` (None: it vanished).
    async fn node_for_plus(&self, dir: &Node, name: &OsStr) -> FsResult<Option<Node>> {
        match name.as_encoded_bytes() {
            b"." => Ok(Some(dir.clone())),
            b".." => self.node(dir.parent).map(Some),
            _ => match self.find_child(dir.ino, name).await {
                Ok(node) => Ok(Some(node)),
                Err(e) if e == Errno::ENOENT => Ok(None),
                Err(e) => Err(e),
            },
        }
    }

    /// `mkdir`: writes the `dir/` marker with the caller's ids and mode.
    pub async fn mkdir(&self, parent: u64, name: &OsStr, mode: u32, caller: Caller) -> FsResult<Stat> {
        self.moves
            .work(|| self.paths_of(&[parent]), async {
                self.ensure_writable()?;
                let name_str = check_name(name)?;
                let parent_node = self.dir_node(parent)?;
                match self.find_child(parent, name).await {
                    Ok(_) => return Err(Errno::EEXIST),
                    Err(e) if e == Errno::ENOENT => {}
                    Err(e) => return Err(e),
                }
                let path = self.table.child_path(parent, name_str).ok_or(Errno::ENOENT)?;
                let attrs = self.new_attributes(&parent_node, caller, NodeKind::Dir, mode);
                let key = self.dir_key(&path);
                Self::check_key_len(key.len())?;
                let put = PutOptions {
                    content_type: "application/octet-stream".into(),
                    metadata: attr::posix_metadata(&attrs),
                    content_headers: Vec::new(),
                };
                let etag = self.store.put(&key, bytes::Bytes::new(), &put).await?;
                let state = ObjectState::just_stored(attrs, etag, put.content_type, Some(key));
                self.cache.put(&path, state.clone());
                let ino = self.place_child(parent, name, state, false);
                self.table.inc_lookup(ino);
                self.complete.mark(ino, []);
                self.entry_added(parent, name, NodeKind::Dir);
                self.touch_dir(parent);
                Ok(self.stat_of(&self.node(ino)?))
            })
            .await
    }

    /// `rmdir`: ENOTEMPTY while any key lives under the prefix (or a local child is pending).
    pub async fn rmdir(&self, parent: u64, name: &OsStr) -> FsResult<()> {
        self.moves
            .work(|| self.paths_of(&[parent]), async {
                self.ensure_writable()?;
                let node = self.find_child(parent, name).await?;
                if node.state.attr.kind != NodeKind::Dir {
                    return Err(Errno::ENOTDIR);
                }
                if !self.table.local_children(node.ino).is_empty() {
                    return Err(Errno::ENOTEMPTY);
                }
                let path = self.table.path_of(node.ino).ok_or(Errno::ENOENT)?;
                let prefix = self.dir_key(&path);
                let page = self.store.list(&prefix, false, None, 2).await?;
                if page.objects.iter().any(|o| o.key != prefix) {
                    return Err(Errno::ENOTEMPTY);
                }
                self.keep_implicit_dir(parent).await?;
                if let Some(marker) = &node.state.dir_marker {
                    self.store.delete(marker).await?;
                }
                if node.state.dir_marker.as_deref() != Some(prefix.as_str())
                    && page.objects.iter().any(|o| o.key == prefix)
                {
                    self.store.delete(&prefix).await?;
                }
                self.delete_legacy_marker(&path, node.state.dir_marker.as_deref())
                    .await?;
                self.table.unlink_child(parent, name);
                self.entry_removed(parent, name);
                self.complete.forget(node.ino);
                self.cache.put_absent(&path);
                self.touch_dir(parent);
                Ok(())
            })
            .await
    }
}
