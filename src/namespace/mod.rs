//! The namespace: object keys <-> inodes, directory rules, listings and metadata caches.
//!
//! * [`InodeTable`] maps inode numbers to nodes (parent, name, attributes) and `(parent, name)`
//!   to inode numbers. A key keeps its inode number for as long as the kernel remembers it
//!   (lookup count > 0), a handle is open, or a child node still points at it; when all three
//!   are gone the node is dropped, so walking a million objects does not grow memory forever.
//!   Numbers are a hash of the path ([`path_ino`]), so `readdir` shows the `d_ino` that `stat`
//!   shows and a path has the same number in every mount of the bucket (git, rsync and backup
//!   tools compare them); a number held by a live node of another path (one renamed away, a
//!   collision) sends a new node on to the next free number.
//! * [`resolve`] decides what a path is from the bucket (file, explicit or implicit directory,
//!   symlink) following the directory rules in `metadata-and-permissions.md`: a directory wins
//!   over a file of the same name.
//! * [`StatCache`] remembers resolved paths and absent names for `stat_cache_expire`; the mount's
//!   own changes update or invalidate it, changes made by others show after the TTL.
//!
//! Paths here are relative to the mount root, without leading or trailing `/` (`""` is the
//! root); the store key of a file is `prefix + path`, of a directory marker `prefix + path + "/"`.

pub mod complete;
pub mod names;
pub mod resolve;

use std::collections::{BTreeSet, HashMap};
use std::ffi::{OsStr, OsString};
use std::sync::Mutex;
use std::time::Duration;

use crate::attr::{Attributes, NodeKind};

/// Inode number of the mount root.
pub const ROOT_INO: u64 = 1;

/// What the bucket says a path is, as cached between requests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectState {
    /// Stored attributes (before presentation overrides).
    pub attr: Attributes,
    /// ETag of the object holding the attributes (file, symlink, or directory marker).
    pub etag: Option<String>,
    /// Its `Content-Type`.
    pub content_type: Option<String>,
    /// User metadata that is not ours, carried over when the object is rewritten.
    pub foreign_meta: HashMap<String, String>,
    /// Its [`crate::store::CONTENT_HEADERS`] (`Cache-Control`, ...), carried over likewise.
    pub content_headers: Vec<(String, String)>,
    /// For a directory: the store key of the object that marks it (`dir/`, or a `dir` object
    /// with a directory content type or mode); `None` for an implicit directory.
    pub dir_marker: Option<String>,
    /// The object's metadata holds mode, owner and group (this mount wrote them, or a HEAD
    /// found them), so a change that leaves those and the mtime as they are needs no write.
    /// False where they are the mount's defaults or unknown (a listing, an implicit directory).
    pub posix_stored: bool,
    /// The times (mtime, ctime, atime) as the bucket gave them when this state was read;
    /// `None` where not known (a new file, or an upload that stored no times): the next read
    /// sets them. See [`Node::refresh_from`].
    pub bucket_times: Option<[std::time::SystemTime; 3]>,
}

impl ObjectState {
    /// An object this mount just stored, empty or with content it wrote whole, with `attr` in
    /// its metadata (and as its times).
    pub fn just_stored(
        attr: Attributes,
        etag: Option<String>,
        content_type: String,
        dir_marker: Option<String>,
    ) -> Self {
        Self {
            attr,
            etag,
            content_type: Some(content_type),
            foreign_meta: Default::default(),
            content_headers: Vec::new(),
            dir_marker,
            posix_stored: true,
            bucket_times: Some([attr.mtime, attr.ctime, attr.atime]),
        }
    }
}

/// One inode.
#[derive(Clone, Debug)]
pub struct Node {
    /// Inode number.
    pub ino: u64,
    /// Parent's inode number (the root is its own parent).
    pub parent: u64,
    /// Name in the parent (empty for the root).
    pub name: OsString,
    /// What the bucket (or this mount's pending changes) say it is.
    pub state: ObjectState,
    /// Created by this mount and not yet uploaded.
    pub local_only: bool,
    /// False once unlinked or removed; the node lives on while referenced.
    pub linked: bool,
    /// Kernel lookup count.
    pub lookups: u64,
    /// Open file or directory handles.
    pub opens: u32,
    /// Nodes whose parent this is.
    pub children: u32,
    /// ETag of the object version whose data the kernel's page cache holds (set at each open).
    pub page_cache_etag: Option<String>,
    /// Its attributes describe content whose upload failed and was dropped: they are read
    /// from the bucket again before anything uses them.
    pub stale: bool,
    /// Earlier ETags of the content its ETag names, with that ETag: this mount's copies keep
    /// the content but may give it a new ETag (a chmod copies the object onto itself, a rename
    /// to a new key; under SSE-KMS, for a multipart object or one copied in parts the ETag
    /// changes). Valid while that ETag is still the node's.
    pub same_content: Option<(String, Vec<String>)>,
}

/// Earlier ETags of one content kept per node.
const SAME_CONTENT_KEPT: usize = 8;

impl Node {
    /// Takes `etag`, the ETag of this mount's copy of the content the node's ETag names.
    pub fn take_copy_etag(&mut self, etag: Option<String>) {
        let old = std::mem::replace(&mut self.state.etag, etag);
        let (Some(old), Some(new)) = (old, self.state.etag.clone()) else {
            return;
        };
        if old == new {
            return;
        }
        let mut earlier = match self.same_content.take() {
            Some((current, list)) if current == old => list,
            _ => Vec::new(),
        };
        earlier.push(old);
        if earlier.len() > SAME_CONTENT_KEPT {
            earlier.remove(0);
        }
        self.same_content = Some((new, earlier));
    }

    /// Whether `etag` is an earlier ETag of the content the node's ETag names.
    pub fn same_content_as(&self, etag: Option<&str>) -> bool {
        match (&self.same_content, etag, &self.state.etag) {
            (Some((current, earlier)), Some(etag), Some(now)) => {
                current == now && earlier.iter().any(|e| e == etag)
            }
            _ => false,
        }
    }

    /// Takes `state`, just read from the bucket. While the bucket holds what this mount last
    /// read there (the same ETag, or no marker for a directory, and the same stored times), the
    /// later of each time is kept: the bucket does not hold every time this mount moved
    /// forward. A file uploaded while it was written stores no mtime (its object's
    /// Last-Modified is when the upload started), and a directory's marker is not rewritten
    /// when entries come and go. Times another client stored, earlier ones too (`touch -d`,
    /// `rsync -t`), are taken as they are; so is everything when the node is marked stale.
    pub fn refresh_from(&mut self, state: ObjectState) {
        let same_version = !self.stale
            && self.state.etag == state.etag
            && (state.etag.is_some() || state.attr.kind == NodeKind::Dir)
            && self
                .state
                .bucket_times
                .is_none_or(|t| Some(t) == state.bucket_times);
        let known = self.state.attr;
        self.state = state;
        self.stale = false;
        if same_version {
            let a = &mut self.state.attr;
            a.mtime = a.mtime.max(known.mtime);
            a.ctime = a.ctime.max(known.ctime);
            a.atime = a.atime.max(known.atime);
        }
    }
}

#[derive(Debug)]
struct TableInner {
    nodes: HashMap<u64, Node>,
    names: HashMap<(u64, OsString), u64>,
    local_children: HashMap<u64, BTreeSet<OsString>>,
}

/// Largest inode number handed out: numbers stay below 2^63, so a program that stores them
/// signed still sees them positive.
const MAX_INO: u64 = u64::MAX >> 1;

/// splitmix64's finalizer: every input bit moves about half the output bits.
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A mixed value as an inode number: below 2^63 and never 0 (invalid) or 1 (the root).
fn as_ino(h: u64) -> u64 {
    let ino = mix64(h) & MAX_INO;
    if ino <= ROOT_INO {
        ino + 2
    } else {
        ino
    }
}

/// Inode number of the path `path` (relative to the mount root, as [`InodeTable::path_of`]
/// gives it): FNV-1a over its bytes, mixed. The same in every mount and every rossfs version.
fn path_ino(path: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in path {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    as_ino(h)
}

/// The inode table. All methods take a short lock and never wait on the network.
#[derive(Debug)]
pub struct InodeTable {
    inner: Mutex<TableInner>,
}

impl InodeTable {
    /// A table holding only the root, with the given state.
    pub fn new(root: ObjectState) -> Self {
        let mut nodes = HashMap::new();
        nodes.insert(
            ROOT_INO,
            Node {
                ino: ROOT_INO,
                parent: ROOT_INO,
                name: OsString::new(),
                state: root,
                local_only: false,
                linked: true,
                lookups: 1,
                opens: 0,
                children: 0,
                page_cache_etag: None,
                stale: false,
                same_content: None,
            },
        );
        Self {
            inner: Mutex::new(TableInner {
                nodes,
                names: HashMap::new(),
                local_children: HashMap::new(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, TableInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A copy of the node.
    pub fn get(&self, ino: u64) -> Option<Node> {
        self.lock().nodes.get(&ino).cloned()
    }

    /// Number of nodes held (for tests and metrics).
    pub fn len(&self) -> usize {
        self.lock().nodes.len()
    }

    /// True when only the root is held.
    pub fn is_empty(&self) -> bool {
        self.len() <= 1
    }

    /// Path of the node relative to the mount root (`""` for the root).
    pub fn path_of(&self, ino: u64) -> Option<String> {
        let inner = self.lock();
        path_locked(&inner, ino)
    }

    /// Path of `name` inside directory `parent`.
    pub fn child_path(&self, parent: u64, name: &str) -> Option<String> {
        let p = self.path_of(parent)?;
        Some(join(&p, name))
    }

    /// The child inode called `name` in `parent`, if this mount knows one.
    pub fn child(&self, parent: u64, name: &OsStr) -> Option<Node> {
        let inner = self.lock();
        let ino = inner.names.get(&(parent, name.to_os_string()))?;
        inner.nodes.get(ino).cloned()
    }

    /// Inserts or refreshes the child `name` of `parent` from `state`, returning its inode and
    /// whether the node is new. A node with pending local changes keeps its state; one whose
    /// kind changed is replaced by a new inode.
    pub fn upsert_child(
        &self,
        parent: u64,
        name: &OsStr,
        state: ObjectState,
        local_only: bool,
    ) -> (u64, bool) {
        let mut inner = self.lock();
        let key = (parent, name.to_os_string());
        if let Some(&ino) = inner.names.get(&key) {
            if let Some(node) = inner.nodes.get_mut(&ino) {
                if node.local_only {
                    return (ino, false);
                }
                if node.state.attr.kind == state.attr.kind {
                    // An open file keeps the attributes its handles work with.
                    if node.opens == 0 || node.state.attr.kind != NodeKind::File || node.stale {
                        node.refresh_from(state);
                    }
                    return (ino, false);
                }
            }
            detach_locked(&mut inner, parent, name);
        }
        let ino = free_ino_locked(&inner, parent, name);
        inner.nodes.insert(
            ino,
            Node {
                ino,
                parent,
                name: name.to_os_string(),
                state,
                local_only,
                linked: true,
                lookups: 0,
                opens: 0,
                children: 0,
                page_cache_etag: None,
                stale: false,
                same_content: None,
            },
        );
        inner.names.insert(key, ino);
        if let Some(p) = inner.nodes.get_mut(&parent) {
            p.children += 1;
        }
        if local_only {
            inner
                .local_children
                .entry(parent)
                .or_default()
                .insert(name.to_os_string());
        }
        (ino, true)
    }

    /// Runs `f` on the node, if present.
    pub fn update<R>(&self, ino: u64, f: impl FnOnce(&mut Node) -> R) -> Option<R> {
        let mut inner = self.lock();
        inner.nodes.get_mut(&ino).map(f)
    }

    /// Marks a node as uploaded (no longer local-only); returns its parent and name if it was.
    pub fn mark_uploaded(&self, ino: u64) -> Option<(u64, OsString)> {
        let mut inner = self.lock();
        let node = inner.nodes.get_mut(&ino)?;
        if !node.local_only {
            return None;
        }
        node.local_only = false;
        let (parent, name) = (node.parent, node.name.clone());
        if let Some(set) = inner.local_children.get_mut(&parent) {
            set.remove(&name);
            if set.is_empty() {
                inner.local_children.remove(&parent);
            }
        }
        evict_locked(&mut inner, ino);
        Some((parent, name))
    }

    /// Names and inodes of children created here and not yet uploaded.
    pub fn local_children(&self, parent: u64) -> Vec<(OsString, u64, NodeKind)> {
        let inner = self.lock();
        let Some(set) = inner.local_children.get(&parent) else {
            return Vec::new();
        };
        set.iter()
            .filter_map(|name| {
                let ino = *inner.names.get(&(parent, name.clone()))?;
                let node = inner.nodes.get(&ino)?;
                Some((name.clone(), ino, node.state.attr.kind))
            })
            .collect()
    }

    /// The kernel took a reference (lookup, create, mkdir ...).
    pub fn inc_lookup(&self, ino: u64) {
        if let Some(n) = self.lock().nodes.get_mut(&ino) {
            n.lookups += 1;
        }
    }

    /// The kernel took a reference on `node` as resolved a moment ago (lookup, readdirplus).
    /// A FORGET handled in between may have dropped the node from the table (the kernel let go
    /// of its old inode while looking the name up again); the kernel now holds the number all
    /// the same, so the node is put back rather than left unknown.
    pub fn acquire(&self, node: &Node) {
        let mut inner = self.lock();
        if let Some(n) = inner.nodes.get_mut(&node.ino) {
            n.lookups += 1;
            return;
        }
        let key = (node.parent, node.name.clone());
        if !inner.nodes.contains_key(&node.parent) {
            return;
        }
        let named = match inner.names.get(&key) {
            Some(_) => false, // a newer node has the name: this one lives on detached
            None => {
                inner.names.insert(key, node.ino);
                true
            }
        };
        let mut back = node.clone();
        back.lookups = 1;
        back.opens = 0;
        back.children = 0;
        back.local_only = false;
        back.linked = named && node.linked;
        inner.nodes.insert(node.ino, back);
        if let Some(p) = inner.nodes.get_mut(&node.parent) {
            p.children += 1;
        }
    }

    /// The kernel dropped `n` references.
    pub fn forget(&self, ino: u64, n: u64) {
        let mut inner = self.lock();
        if let Some(node) = inner.nodes.get_mut(&ino) {
            node.lookups = node.lookups.saturating_sub(n);
        }
        evict_locked(&mut inner, ino);
    }

    /// A handle was opened on the node.
    pub fn open(&self, ino: u64) {
        if let Some(n) = self.lock().nodes.get_mut(&ino) {
            n.opens += 1;
        }
    }

    /// A handle was released.
    pub fn close(&self, ino: u64) {
        let mut inner = self.lock();
        if let Some(node) = inner.nodes.get_mut(&ino) {
            node.opens = node.opens.saturating_sub(1);
        }
        evict_locked(&mut inner, ino);
    }

    /// Removes `name` from `parent` (unlink, rmdir): the name is gone at once, the inode lives
    /// on while referenced.
    pub fn unlink_child(&self, parent: u64, name: &OsStr) {
        let mut inner = self.lock();
        detach_locked(&mut inner, parent, name);
    }

    /// Moves `name` in `parent` to `newname` in `newparent`, replacing (detaching) whatever was
    /// there. The inode keeps its number; children follow since paths are computed from parents.
    pub fn rename(&self, parent: u64, name: &OsStr, newparent: u64, newname: &OsStr) -> Option<u64> {
        let mut inner = self.lock();
        let ino = *inner.names.get(&(parent, name.to_os_string()))?;
        if (parent, name) == (newparent, newname) {
            return Some(ino);
        }
        detach_locked(&mut inner, newparent, newname);
        inner.names.remove(&(parent, name.to_os_string()));
        let was_local = inner
            .local_children
            .get_mut(&parent)
            .is_some_and(|set| set.remove(name));
        if inner.local_children.get(&parent).is_some_and(BTreeSet::is_empty) {
            inner.local_children.remove(&parent);
        }
        if was_local {
            inner
                .local_children
                .entry(newparent)
                .or_default()
                .insert(newname.to_os_string());
        }
        inner.names.insert((newparent, newname.to_os_string()), ino);
        if let Some(node) = inner.nodes.get_mut(&ino) {
            node.parent = newparent;
            node.name = newname.to_os_string();
        }
        if let Some(p) = inner.nodes.get_mut(&newparent) {
            p.children += 1;
        }
        if let Some(p) = inner.nodes.get_mut(&parent) {
            p.children = p.children.saturating_sub(1);
        }
        evict_locked(&mut inner, parent);
        Some(ino)
    }

    /// True if `ancestor` is `ino` or one of its parents.
    pub fn is_ancestor(&self, ancestor: u64, mut ino: u64) -> bool {
        let inner = self.lock();
        for _ in 0..4096 {
            if ino == ancestor {
                return true;
            }
            if ino == ROOT_INO {
                return false;
            }
            match inner.nodes.get(&ino) {
                Some(n) => ino = n.parent,
                None => return false,
            }
        }
        false
    }

    /// Inodes of every node under (and including) `ino` that is still linked: used when the
    /// whole table must be walked (flush on shutdown).
    pub fn all_inodes(&self) -> Vec<u64> {
        self.lock().nodes.keys().copied().collect()
    }

    /// After the keys under `from` were moved to `to` (a directory rename): every directory
    /// marker this table knows under `from` now has its key under `to`.
    pub fn rekey_dir_markers(&self, from: &str, to: &str) {
        for node in self.lock().nodes.values_mut() {
            if let Some(rest) = node
                .state
                .dir_marker
                .as_deref()
                .and_then(|m| m.strip_prefix(from))
            {
                node.state.dir_marker = Some(format!("{to}{rest}"));
            }
        }
    }
}

fn path_locked(inner: &TableInner, mut ino: u64) -> Option<String> {
    let mut parts: Vec<&OsStr> = Vec::new();
    while ino != ROOT_INO {
        let node = inner.nodes.get(&ino)?;
        parts.push(&node.name);
        ino = node.parent;
        if parts.len() > 4096 {
            return None;
        }
    }
    let mut out = String::new();
    for (i, part) in parts.iter().rev().enumerate() {
        if i > 0 {
            out.push('/');
        }
        out.push_str(part.to_str()?);
    }
    Some(out)
}

/// The number for a new node `name` in `parent`: its path's number, or the next free one in
/// a fixed sequence after it when a live node holds that (one renamed away from the path, whose
/// kernel inode still has the number, or a hash collision).
fn free_ino_locked(inner: &TableInner, parent: u64, name: &OsStr) -> u64 {
    let mut ino = match path_locked(inner, parent) {
        Some(dir) => child_ino(&dir, name),
        // Not reachable from the root (cannot happen for a parent the kernel holds).
        None => as_ino(parent ^ path_ino(name.as_encoded_bytes())),
    };
    while inner.nodes.contains_key(&ino) {
        ino = as_ino(ino);
    }
    ino
}

/// The number of the entry `name` in the directory at `dir`: its path's number ([`path_ino`]),
/// what `readdir` shows for it and what a new node for it takes when free.
pub fn child_ino(dir: &str, name: &OsStr) -> u64 {
    path_ino(join(dir, &name.to_string_lossy()).as_bytes())
}

fn detach_locked(inner: &mut TableInner, parent: u64, name: &OsStr) {
    let key = (parent, name.to_os_string());
    let Some(ino) = inner.names.remove(&key) else {
        return;
    };
    if let Some(set) = inner.local_children.get_mut(&parent) {
        set.remove(name);
        if set.is_empty() {
            inner.local_children.remove(&parent);
        }
    }
    if let Some(node) = inner.nodes.get_mut(&ino) {
        node.linked = false;
        node.local_only = false;
    }
    evict_locked(inner, ino);
}

fn evict_locked(inner: &mut TableInner, mut ino: u64) {
    loop {
        if ino == ROOT_INO {
            return;
        }
        let Some(node) = inner.nodes.get(&ino) else { return };
        if node.lookups > 0 || node.opens > 0 || node.children > 0 || node.local_only {
            return;
        }
        let (parent, name) = (node.parent, node.name.clone());
        inner.nodes.remove(&ino);
        let key = (parent, name);
        if inner.names.get(&key) == Some(&ino) {
            inner.names.remove(&key);
        }
        match inner.nodes.get_mut(&parent) {
            Some(p) => p.children = p.children.saturating_sub(1),
            None => return,
        }
        ino = parent;
    }
}

/// Joins a directory path and a name.
pub fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

/// Own changes remembered before the record is reset (a reset makes every answer in flight at
/// that moment count as stale, which only costs it a repeated request).
const CHANGES_KEPT: usize = 65_536;

/// This mount's own changes to paths, numbered, so that an answer from the bucket to a request
/// sent before a change cannot bring back what the change replaced (a prefetched HEAD of a file
/// that is overwritten, renamed over or deleted while the HEAD is out).
#[derive(Debug, Default)]
struct ChangeLog {
    /// Number of the last change.
    seq: u64,
    /// Last change of each path.
    paths: HashMap<String, u64>,
    /// Last change of each directory tree (renamed or removed with everything below it).
    trees: HashMap<String, u64>,
    /// Changes at or before this number were forgotten.
    floor: u64,
}

impl ChangeLog {
    fn note(&mut self, path: &str, tree: bool) {
        self.seq += 1;
        if self.paths.len() + self.trees.len() >= CHANGES_KEPT {
            self.paths.clear();
            self.trees.clear();
            self.floor = self.seq - 1;
        }
        let map = if tree { &mut self.trees } else { &mut self.paths };
        map.insert(path.to_string(), self.seq);
    }

    /// True if `path`, or a tree holding it, changed after `ticket` was taken.
    fn changed_since(&self, path: &str, ticket: u64) -> bool {
        if ticket < self.floor {
            return true;
        }
        let after = |seq: Option<&u64>| seq.is_some_and(|s| *s > ticket);
        if after(self.paths.get(path)) || after(self.trees.get(path)) || after(self.trees.get("")) {
            return true;
        }
        path.match_indices('/')
            .any(|(i, _)| after(self.trees.get(&path[..i])))
    }
}

/// Resolved paths and absent names, each trusted for the stat cache TTL.
///
/// Two kinds of writers: the mount's own changes ([`Self::put`], [`Self::put_absent`],
/// [`Self::invalidate`], [`Self::invalidate_tree`]) always win and are numbered; answers read
/// from the bucket ([`Self::put_observed`]) carry the [`Self::ticket`] taken before their request
/// and are dropped if the path changed here since.
pub struct StatCache {
    present: moka::sync::Cache<String, ObjectState>,
    absent: Option<moka::sync::Cache<String, ()>>,
    changes: Mutex<ChangeLog>,
}

impl std::fmt::Debug for StatCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatCache")
            .field("entries", &self.present.entry_count())
            .finish()
    }
}

impl StatCache {
    /// A cache of at most `capacity` paths, each trusted for `ttl`; `negative` enables the
    /// cache of absent names.
    pub fn new(capacity: u64, ttl: Duration, negative: bool) -> Self {
        let ttl = ttl.max(Duration::from_millis(1));
        Self {
            present: moka::sync::Cache::builder()
                .max_capacity(capacity)
                .time_to_live(ttl)
                .build(),
            absent: negative.then(|| {
                moka::sync::Cache::builder()
                    .max_capacity(capacity)
                    .time_to_live(ttl)
                    .build()
            }),
            changes: Mutex::new(ChangeLog::default()),
        }
    }

    fn log(&self) -> std::sync::MutexGuard<'_, ChangeLog> {
        self.changes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The cached state of `path`, if fresh.
    pub fn get(&self, path: &str) -> Option<ObjectState> {
        self.present.get(path)
    }

    /// True if `path` is known to be absent.
    pub fn is_absent(&self, path: &str) -> bool {
        self.absent.as_ref().is_some_and(|c| c.contains_key(path))
    }

    /// Taken before a request whose answer goes to [`Self::put_observed`].
    pub fn ticket(&self) -> u64 {
        self.log().seq
    }

    /// True if this mount changed `path` (or a directory above it) after `ticket`: an answer
    /// to a request sent before then may describe what the change replaced.
    pub fn changed_since(&self, path: &str, ticket: u64) -> bool {
        self.log().changed_since(path, ticket)
    }

    /// Remembers what the bucket answered for `path` (`None`: absent) to a request sent when
    /// `ticket` was taken, unless this mount changed the path since; false if dropped.
    pub fn put_observed(&self, path: &str, state: Option<ObjectState>, ticket: u64) -> bool {
        let log = self.log();
        if log.changed_since(path, ticket) {
            return false;
        }
        match state {
            Some(state) => self.insert_present(path, state),
            None => self.insert_absent(path),
        }
        drop(log);
        true
    }

    /// Remembers what `path` is after this mount changed it.
    pub fn put(&self, path: &str, state: ObjectState) {
        let mut log = self.log();
        log.note(path, false);
        self.insert_present(path, state);
    }

    /// Remembers that `path` does not exist after this mount removed it.
    pub fn put_absent(&self, path: &str) {
        let mut log = self.log();
        log.note(path, false);
        self.insert_absent(path);
    }

    /// Forgets anything about `path`, which this mount is changing.
    pub fn invalidate(&self, path: &str) {
        let mut log = self.log();
        log.note(path, false);
        self.forget(path);
    }

    /// Forgets everything about `path` and the paths below it (a directory renamed or removed).
    pub fn invalidate_tree(&self, path: &str) {
        let mut log = self.log();
        log.note(path, true);
        self.forget(path);
        let below = format!("{path}/");
        // Settle pending inserts first so every cached key is visible to the scan.
        self.present.run_pending_tasks();
        for (k, _) in self.present.iter() {
            if k.starts_with(&below) {
                self.present.invalidate(k.as_str());
            }
        }
        if let Some(a) = &self.absent {
            a.run_pending_tasks();
            for (k, _) in a.iter() {
                if k.starts_with(&below) {
                    a.invalidate(k.as_str());
                }
            }
        }
        drop(log);
    }

    fn insert_present(&self, path: &str, state: ObjectState) {
        if let Some(a) = &self.absent {
            a.invalidate(path);
        }
        self.present.insert(path.to_string(), state);
    }

    fn insert_absent(&self, path: &str) {
        self.present.invalidate(path);
        if let Some(a) = &self.absent {
            a.insert(path.to_string(), ());
        }
    }

    fn forget(&self, path: &str) {
        self.present.invalidate(path);
        if let Some(a) = &self.absent {
            a.invalidate(path);
        }
    }

    /// Number of cached present paths.
    pub fn len(&self) -> u64 {
        self.present.run_pending_tasks();
        self.present.entry_count()
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets that `path` is absent (a listing shows something there).
    pub fn clear_absent(&self, path: &str) {
        if let Some(a) = &self.absent {
            a.invalidate(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn state(kind: NodeKind) -> ObjectState {
        ObjectState {
            attr: Attributes {
                kind,
                perm: 0o644,
                uid: 0,
                gid: 0,
                size: 0,
                atime: UNIX_EPOCH,
                mtime: UNIX_EPOCH,
                ctime: UNIX_EPOCH,
                rdev: 0,
            },
            etag: None,
            content_type: None,
            foreign_meta: HashMap::new(),
            content_headers: Vec::new(),
            bucket_times: None,
            dir_marker: None,
            posix_stored: false,
        }
    }

    #[test]
    fn earlier_etags_of_copies_name_the_same_content_until_the_etag_moves_on_otherwise() {
        let t = InodeTable::new(state(NodeKind::Dir));
        let mut f = state(NodeKind::File);
        f.etag = Some("\"a\"".into());
        let (ino, _) = t.upsert_child(ROOT_INO, OsStr::new("f"), f, false);
        let same = |etag: &str| t.get(ino).unwrap().same_content_as(Some(etag));
        assert!(!same("\"a\""), "the current ETag is no earlier one");
        // A chmod's copy onto itself gives a new ETag (SSE-KMS), then a rename's copy another.
        t.update(ino, |n| n.take_copy_etag(Some("\"b\"".into())));
        t.update(ino, |n| n.take_copy_etag(Some("\"c\"".into())));
        assert!(same("\"a\"") && same("\"b\"") && !same("\"c\"") && !same("\"x\""));
        // A copy that kept the ETag changes nothing.
        t.update(ino, |n| n.take_copy_etag(Some("\"c\"".into())));
        assert!(same("\"a\""));
        // New content (an upload, another client's version read from the bucket): the earlier
        // ETags name other content now.
        t.update(ino, |n| n.state.etag = Some("\"d\"".into()));
        assert!(!same("\"a\"") && !same("\"c\""));
        // Only the last few are kept.
        for i in 0..20 {
            t.update(ino, |n| n.take_copy_etag(Some(format!("\"e{i}\""))));
        }
        assert!(same("\"e18\"") && !same("\"d\""));
    }

    #[test]
    fn inode_numbers_are_stable_while_referenced() {
        let t = InodeTable::new(state(NodeKind::Dir));
        let d = t
            .upsert_child(ROOT_INO, OsStr::new("d"), state(NodeKind::Dir), false)
            .0;
        t.inc_lookup(d);
        let f = t.upsert_child(d, OsStr::new("f"), state(NodeKind::File), false).0;
        t.inc_lookup(f);
        assert_eq!(
            t.upsert_child(d, OsStr::new("f"), state(NodeKind::File), false).0,
            f
        );
        assert_eq!(t.path_of(f).as_deref(), Some("d/f"));
        // The directory is forgotten first, but its child keeps it alive.
        t.forget(d, 1);
        assert!(t.get(d).is_some());
        t.forget(f, 1);
        assert!(t.get(f).is_none() && t.get(d).is_none());
        assert!(t.is_empty());
    }

    #[test]
    fn inode_numbers_are_path_hashes_and_never_shared_by_live_nodes() {
        let t = InodeTable::new(state(NodeKind::Dir));
        let (d, new) = t.upsert_child(ROOT_INO, OsStr::new("d"), state(NodeKind::Dir), false);
        assert!(new);
        assert_eq!(d, path_ino(b"d"));
        t.inc_lookup(d);
        let f = t.upsert_child(d, OsStr::new("f"), state(NodeKind::File), false).0;
        assert_eq!(f, path_ino(b"d/f"), "the number of a path, in any mount");
        assert!(f > ROOT_INO && f <= MAX_INO);
        t.inc_lookup(f);
        assert_eq!(
            t.upsert_child(d, OsStr::new("f"), state(NodeKind::File), false),
            (f, false)
        );
        // Renamed, the node keeps its number; a new file at the old path, created while the
        // kernel still knows the renamed one, gets another.
        t.rename(d, OsStr::new("f"), d, OsStr::new("g"));
        let (again, new) = t.upsert_child(d, OsStr::new("f"), state(NodeKind::File), false);
        assert!(new && again != f && again > ROOT_INO);
        assert_eq!(t.child(d, OsStr::new("g")).map(|n| n.ino), Some(f));
        // Once the kernel forgets both, the paths get their own numbers back.
        t.forget(f, 1);
        t.inc_lookup(again);
        t.forget(again, 1);
        assert_eq!(
            t.upsert_child(d, OsStr::new("g"), state(NodeKind::File), false).0,
            path_ino(b"d/g")
        );
        assert_eq!(
            t.upsert_child(d, OsStr::new("f"), state(NodeKind::File), false).0,
            f
        );
        // A FORGET that dropped a node between its resolution and the kernel's new reference:
        // the node comes back under its number and name.
        let g = t.child(d, OsStr::new("g")).unwrap();
        t.forget(g.ino, 0);
        t.inc_lookup(g.ino);
        t.forget(g.ino, 1);
        assert!(t.get(g.ino).is_none());
        t.acquire(&g);
        assert_eq!(t.get(g.ino).map(|n| n.lookups), Some(1));
        assert_eq!(t.child(d, OsStr::new("g")).map(|n| n.ino), Some(g.ino));
        t.forget(g.ino, 1);
        assert!(t.get(g.ino).is_none());
        // Numbers are spread and distinct over many paths.
        let mut seen = std::collections::HashSet::new();
        for i in 0..100_000 {
            let ino = path_ino(format!("dir{}/file{}", i % 100, i).as_bytes());
            assert!(ino > ROOT_INO && ino <= MAX_INO && seen.insert(ino));
        }
    }

    #[test]
    fn kind_change_gets_a_new_inode_and_unlink_keeps_open_node() {
        let t = InodeTable::new(state(NodeKind::Dir));
        let f = t
            .upsert_child(ROOT_INO, OsStr::new("x"), state(NodeKind::File), false)
            .0;
        t.inc_lookup(f);
        t.open(f);
        let d = t
            .upsert_child(ROOT_INO, OsStr::new("x"), state(NodeKind::Dir), false)
            .0;
        assert_ne!(f, d);
        assert!(t.get(f).is_some_and(|n| !n.linked));
        t.forget(f, 1);
        assert!(t.get(f).is_some(), "open handle keeps it");
        t.close(f);
        assert!(t.get(f).is_none());
    }

    #[test]
    fn local_children_are_listed_until_uploaded() {
        let t = InodeTable::new(state(NodeKind::Dir));
        let f = t
            .upsert_child(ROOT_INO, OsStr::new("new"), state(NodeKind::File), true)
            .0;
        assert_eq!(t.local_children(ROOT_INO).len(), 1);
        t.mark_uploaded(f);
        assert!(t.local_children(ROOT_INO).is_empty());
        assert!(t.get(f).is_none(), "no reference left once uploaded");
    }

    #[test]
    fn rename_moves_subtrees_and_replaces_targets() {
        let t = InodeTable::new(state(NodeKind::Dir));
        let a = t
            .upsert_child(ROOT_INO, OsStr::new("a"), state(NodeKind::Dir), false)
            .0;
        t.inc_lookup(a);
        let f = t.upsert_child(a, OsStr::new("f"), state(NodeKind::File), false).0;
        t.inc_lookup(f);
        let b = t
            .upsert_child(ROOT_INO, OsStr::new("b"), state(NodeKind::Dir), false)
            .0;
        t.inc_lookup(b);
        let old = t.upsert_child(b, OsStr::new("c"), state(NodeKind::Dir), false).0;
        t.inc_lookup(old);
        assert_eq!(t.rename(ROOT_INO, OsStr::new("a"), b, OsStr::new("c")), Some(a));
        assert_eq!(t.path_of(f).as_deref(), Some("b/c/f"));
        assert!(t.get(old).is_some_and(|n| !n.linked));
        assert!(t.is_ancestor(b, f) && !t.is_ancestor(f, b));
        assert!(t.child(ROOT_INO, OsStr::new("a")).is_none());
    }

    #[test]
    fn stat_cache_tree_invalidation() {
        let c = StatCache::new(10, Duration::from_secs(60), true);
        c.put("d", state(NodeKind::Dir));
        c.put("d/x", state(NodeKind::File));
        c.put("dx", state(NodeKind::File));
        c.invalidate_tree("d");
        assert!(c.get("d").is_none(), "d");
        assert!(c.get("d/x").is_none(), "d/x");
        assert!(c.get("dx").is_some(), "dx");
    }

    #[test]
    fn stat_cache_positive_and_negative() {
        let c = StatCache::new(10, Duration::from_secs(60), true);
        c.put_absent("a");
        assert!(c.is_absent("a"));
        c.put("a", state(NodeKind::File));
        assert!(!c.is_absent("a") && c.get("a").is_some());
        let off = StatCache::new(10, Duration::from_secs(60), false);
        off.put_absent("a");
        assert!(!off.is_absent("a"));
    }

    #[test]
    fn answers_sent_before_an_own_change_are_dropped() {
        let c = StatCache::new(10, Duration::from_secs(60), true);
        let mut big = state(NodeKind::File);
        big.attr.size = 95_012;
        let mut small = state(NodeKind::File);
        small.attr.size = 40_860;
        // A HEAD goes out, the mount overwrites the file, then the HEAD's answer arrives.
        let ticket = c.ticket();
        c.put("w/r155", small.clone());
        assert!(c.changed_since("w/r155", ticket));
        assert!(!c.put_observed("w/r155", Some(big.clone()), ticket));
        assert_eq!(c.get("w/r155").map(|s| s.attr.size), Some(40_860));
        // Nor may an old "absent" answer hide a file just created.
        assert!(!c.put_observed("w/r155", None, ticket));
        assert!(!c.is_absent("w/r155"));
        // Answers to requests sent after the change are kept; other paths are unaffected.
        let later = c.ticket();
        assert!(c.put_observed("w/r155", Some(big), later));
        assert!(c.put_observed("w/other", None, ticket));
        // A directory renamed away invalidates answers for everything below it, not beside it.
        let before_move = c.ticket();
        c.invalidate_tree("w");
        assert!(c.changed_since("w/a/b", before_move));
        assert!(!c.changed_since("wx/a", before_move));
        assert!(!c.put_observed("w/a/b", Some(small), before_move));
    }

    #[test]
    fn change_log_reset_counts_older_answers_as_stale() {
        let c = StatCache::new(10, Duration::from_secs(60), true);
        let ticket = c.ticket();
        for i in 0..=CHANGES_KEPT {
            c.invalidate(&format!("p{i}"));
        }
        // The record of p0 was forgotten: an answer older than the reset is not trusted.
        assert!(c.changed_since("p0", ticket));
        assert!(!c.changed_since("p0", c.ticket()));
    }
}
