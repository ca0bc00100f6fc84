//! Resolving paths with as few requests as possible, and metadata prefetch for `ls -l`.
//!
//! * Every resolve of a path goes through one shared in-flight slot, so a lookup and a prefetch
//!   (or two lookups) of the same path make one request between them.
//! * Directory listings are remembered for a while (names and kinds, in listing order). A
//!   lookup of a name a recent listing returned is what `ls -l`, `du` or a file manager does
//!   for every entry, so it starts HEAD requests for the next entries of that listing, several
//!   at once, ahead of the caller, keeping that window full as the caller walks on (also when
//!   its lookups are answered from the cache). A listed entry needs one request (HEAD of the
//!   file, or of the directory marker), not the LIST and HEAD of an unknown name. Listings that
//!   nobody stats (`ls`, `find`) cost nothing extra. Results land in the stat cache with their
//!   real metadata, so per-object modes and owners stay correct.
//! * A lookup miss in a directory nobody listed lists one page of it first
//!   (`learn_directory`): small directories become known completely, so later
//!   misses cost nothing.

use std::collections::{HashMap, VecDeque};
use std::ffi::{OsStr, OsString};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use tokio::sync::OnceCell;

use super::{lock, Errno, S3Filesystem};
use crate::attr::NodeKind;
use crate::namespace::names::ListingWalk;
use crate::namespace::resolve::{implicit_dir_state, resolve_key, state_from_head};
use crate::namespace::{join, ObjectState};

/// Directories whose listing is remembered.
const REMEMBERED_LISTINGS: usize = 16;
/// Entries prefetched ahead of the one being looked up.
pub(super) const PREFETCH_AHEAD: usize = 64;
/// Prefetch requests in flight at once, for the whole mount.
pub(super) const PREFETCH_PARALLEL: usize = 32;

type Resolved = Result<Option<ObjectState>, Errno>;

/// What a recent listing says of a name: its kind, the directory's path, the names after it.
type Listed = (NodeKind, String, Vec<(OsString, NodeKind)>);

/// One directory's recent listing.
#[derive(Debug)]
struct Listing {
    path: String,
    taken: Instant,
    names: Vec<(OsString, NodeKind)>,
    index: HashMap<OsString, usize>,
    /// Entries before this index have been prefetched (or looked up).
    prefetched_to: usize,
}

/// Recent listings, most recently used last.
#[derive(Debug, Default)]
pub(super) struct ListingMemory {
    dirs: HashMap<u64, Arc<Mutex<Listing>>>,
    order: VecDeque<u64>,
}

impl ListingMemory {
    /// Forgets the listings of the directory at `path` and of every directory below it (a
    /// directory rename moved them: their paths and names are no longer what was listed).
    pub(super) fn forget_under(&mut self, path: &str) {
        let below = format!("{path}/");
        self.dirs.retain(|_, l| {
            let l = lock(l);
            l.path != path && !l.path.starts_with(&below)
        });
        let dirs = &self.dirs;
        self.order.retain(|d| dirs.contains_key(d));
    }
}

/// Paths being resolved right now, shared by everyone who asks.
/// Each answer carries the stat cache ticket taken before its request.
pub(super) type InFlight = Mutex<HashMap<String, Arc<OnceCell<(u64, Resolved)>>>>;

/// Directories being listed to answer lookups, shared by everyone who asks.
pub(super) type Learning = Mutex<HashMap<u64, Arc<OnceCell<Result<(), Errno>>>>>;

impl S3Filesystem {
    /// Records entries of directory `dir` (at `path`) as a listing returns them.
    pub(super) fn remember_listing(
        &self,
        dir: u64,
        path: &str,
        fresh: bool,
        entries: &[(OsString, NodeKind)],
    ) {
        let listing = {
            let mut mem = lock(&self.listings);
            if fresh || !mem.dirs.contains_key(&dir) {
                mem.dirs.insert(
                    dir,
                    Arc::new(Mutex::new(Listing {
                        path: path.to_string(),
                        taken: Instant::now(),
                        names: Vec::new(),
                        index: HashMap::new(),
                        prefetched_to: 0,
                    })),
                );
            }
            mem.order.retain(|d| *d != dir);
            mem.order.push_back(dir);
            while mem.order.len() > REMEMBERED_LISTINGS {
                if let Some(old) = mem.order.pop_front() {
                    mem.dirs.remove(&old);
                }
            }
            mem.dirs.get(&dir).cloned()
        };
        if let Some(listing) = listing {
            let mut l = lock(&listing);
            for (name, kind) in entries {
                let i = l.names.len();
                l.index.insert(name.clone(), i);
                l.names.push((name.clone(), *kind));
            }
        }
    }

    /// The mount's own change put `name` in directory `parent` (create, mkdir, rename into
    /// it): the known contents of `parent` gain it, and what a recent listing said the name
    /// was no longer counts.
    pub(super) fn entry_added(&self, parent: u64, name: &OsStr, kind: NodeKind) {
        self.complete.added(parent, name, kind);
        self.forget_listed(parent, name);
    }

    /// The mount's own change took `name` out of directory `parent` (unlink, rmdir, rename
    /// away). A recent listing's word for the name goes too: taken as a hint, "directory"
    /// would make a later lookup of the name find an implied directory where none is left.
    pub(super) fn entry_removed(&self, parent: u64, name: &OsStr) {
        self.complete.removed(parent, name);
        self.forget_listed(parent, name);
    }

    fn forget_listed(&self, parent: u64, name: &OsStr) {
        let listing = lock(&self.listings).dirs.get(&parent).cloned();
        if let Some(listing) = listing {
            lock(&listing).index.remove(name);
        }
    }

    /// True if a recent listing of `dir` is remembered (a readdir is going through it).
    pub(super) fn has_listing(&self, dir: u64) -> bool {
        let listing = lock(&self.listings).dirs.get(&dir).cloned();
        listing.is_some_and(|l| lock(&l).taken.elapsed() <= self.cfg.ttl)
    }

    /// The kind a recent listing of `parent` gave `name`, the directory's path, and the
    /// entries to prefetch now: the window of the next PREFETCH_AHEAD entries is topped up
    /// whenever fewer than half of them are left, so a caller walking the listing in order
    /// rarely waits for a request.
    fn listed_in_memory(&self, parent: u64, name: &OsStr) -> Option<Listed> {
        let listing = lock(&self.listings).dirs.get(&parent).cloned()?;
        let mut l = lock(&listing);
        if l.taken.elapsed() > self.cfg.ttl {
            return None;
        }
        let i = *l.index.get(name)?;
        let ahead = if l.prefetched_to < i + 1 + PREFETCH_AHEAD / 2 {
            let from = l.prefetched_to.max(i + 1);
            let to = (i + 1 + PREFETCH_AHEAD).min(l.names.len());
            l.prefetched_to = to;
            l.names.get(from..to).map(<[_]>::to_vec).unwrap_or_default()
        } else {
            Vec::new()
        };
        Some((l.names[i].1, l.path.clone(), ahead))
    }

    /// Like [`Self::listed_in_memory`], falling back to the known contents of `parent` for
    /// the kind alone (nobody is walking a listing there, so nothing is prefetched).
    fn listed(&self, parent: u64, name: &OsStr) -> Option<Listed> {
        self.listed_in_memory(parent, name).or_else(|| {
            let kind = self.complete.kind_of(parent, name)?;
            let path = self.table.path_of(parent)?;
            Some((kind, path, Vec::new()))
        })
    }

    /// Called when a lookup of `name` in `parent` was answered from the cache: keeps the
    /// prefetch window of a listing being walked ahead of the caller.
    pub(super) fn walked(&self, parent: u64, name: &OsStr) {
        if let Some((_, dir_path, ahead)) = self.listed_in_memory(parent, name) {
            if !ahead.is_empty() {
                self.prefetch(&dir_path, ahead);
            }
        }
    }

    /// Makes the contents of directory `dir` (at `path`) known from one LIST page when they
    /// fit in one: a lookup miss in it is then answered without a request, a hit with one
    /// HEAD, and later misses (a loop creating files, a tool probing names) cost nothing. A
    /// directory larger than a page is remembered as such for the TTL and its names are
    /// resolved one by one. Concurrent lookups share one listing.
    pub(super) async fn learn_directory(&self, dir: u64, path: &str) -> Result<(), Errno> {
        if !self.complete.enabled() || self.complete.is_known(dir) {
            return Ok(());
        }
        self.adopt_subtree_listing(dir, path);
        if self.complete.is_known(dir) || self.complete.seems_large(dir) || self.has_listing(dir) {
            return Ok(());
        }
        let cell = lock(&self.learning).entry(dir).or_default().clone();
        let result = cell
            .get_or_init(|| async {
                let ticket = self.complete.ticket();
                let prefix = self.dir_key(path);
                let page = self
                    .store
                    .list(&prefix, true, None, super::dir::PAGE_KEYS)
                    .await?;
                // Not remembered as a listing being walked: one lookup in a directory says
                // nothing about its neighbours, so it starts no prefetch.
                let listed = self.absorb_page(path, &prefix, &page, &mut ListingWalk::default());
                if page.next.is_some() {
                    self.complete.note_large(dir);
                } else {
                    let local = self.table.local_children(dir).into_iter().map(|(n, _, k)| (n, k));
                    self.complete
                        .mark_listed(dir, ticket, listed.into_iter().chain(local));
                }
                Ok(())
            })
            .await;
        let result = *result;
        let mut learning = lock(&self.learning);
        if learning.get(&dir).is_some_and(|c| Arc::ptr_eq(c, &cell)) {
            learning.remove(&dir);
        }
        result
    }

    /// What `path` is, asking the store at most once however many callers want it now.
    /// `hint` is the kind a listing reported, which allows a single HEAD. An answer to
    /// requests sent before this mount changed the path (a prefetch overtaken by an overwrite,
    /// rename or unlink) is not used: what the change left in the cache is, or the path is
    /// asked again.
    pub(super) async fn resolve_shared(&self, path: &str, hint: Option<NodeKind>) -> Resolved {
        let mut attempts = 0;
        loop {
            attempts += 1;
            let cell = lock(&self.resolving).entry(path.to_string()).or_default().clone();
            let (ticket, result) = cell
                .get_or_init(|| async {
                    let ticket = self.cache.ticket();
                    (ticket, self.resolve_uncached(path, hint, ticket).await)
                })
                .await
                .clone();
            {
                let mut inflight = lock(&self.resolving);
                if inflight.get(path).is_some_and(|c| Arc::ptr_eq(c, &cell)) {
                    inflight.remove(path);
                }
            }
            if attempts >= 3 || !self.cache.changed_since(path, ticket) {
                return result;
            }
            if let Some(state) = self.cache.get(path) {
                return Ok(Some(state));
            }
            if self.cache.is_absent(path) {
                return Ok(None);
            }
        }
    }

    /// Asks the store what `path` is; the answer goes to the stat cache unless this mount
    /// changed the path after `ticket`.
    async fn resolve_uncached(&self, path: &str, hint: Option<NodeKind>, ticket: u64) -> Resolved {
        crate::metrics::global().lookup_miss();
        let key = self.key_for_path(path);
        let now = SystemTime::now();
        let resolved = match hint {
            Some(NodeKind::Dir) if self.subtree_says_implicit(path) => {
                Some(implicit_dir_state(&self.pres, self.mount_time))
            }
            Some(NodeKind::Dir) => {
                // The listing showed keys under it: a directory, explicit if its marker exists.
                match self.store.head(&format!("{key}/")).await? {
                    Some(info) => Some(state_from_head(&info, &self.pres, now)),
                    None => Some(implicit_dir_state(&self.pres, self.mount_time)),
                }
            }
            Some(_) => match self.store.head(&key).await? {
                Some(info) => {
                    let state = state_from_head(&info, &self.pres, now);
                    if state.attr.kind == NodeKind::Dir {
                        // A directory object without a slash: check the full rules.
                        resolve_key(&self.store, &self.pres, &key, self.mount_time).await?
                    } else {
                        Some(state)
                    }
                }
                None => resolve_key(&self.store, &self.pres, &key, self.mount_time).await?,
            },
            None => resolve_key(&self.store, &self.pres, &key, self.mount_time).await?,
        };
        let resolved = match (resolved, self.legacy_marker(path)) {
            // Keys live under it and a listing showed its s3fs `name_$folder$` marker: that
            // marker is the one rmdir and rename remove.
            (Some(mut state), Some(marker))
                if state.attr.kind == NodeKind::Dir && state.dir_marker.is_none() =>
            {
                state.dir_marker = Some(marker);
                Some(state)
            }
            (None, Some(marker)) => match self.store.head(&marker).await? {
                Some(_) => {
                    let mut state = implicit_dir_state(&self.pres, self.mount_time);
                    state.dir_marker = Some(marker);
                    Some(state)
                }
                None => None,
            },
            (other, _) => other,
        };
        self.cache.put_observed(path, resolved.clone(), ticket);
        Ok(resolved)
    }

    /// Resolves `name` in `parent` (at `path`) from the store, prefetching the entries a recent
    /// listing shows after it.
    pub(super) async fn resolve_child(&self, parent: u64, name: &OsStr, path: &str) -> Resolved {
        let listed = self.listed(parent, name);
        let hint = listed.as_ref().map(|l| l.0);
        if let Some((_, dir_path, ahead)) = listed {
            self.prefetch(&dir_path, ahead);
        }
        self.resolve_shared(path, hint).await
    }

    /// Starts resolving listed entries that are neither cached nor already being resolved.
    fn prefetch(&self, dir_path: &str, ahead: Vec<(OsString, NodeKind)>) {
        let Some(me) = self.me.upgrade() else { return };
        for (name, kind) in ahead {
            let Some(name) = name.to_str() else { continue };
            let path = join(dir_path, name);
            if self.cache.get(&path).is_some()
                || self.cache.is_absent(&path)
                || lock(&self.resolving).contains_key(&path)
            {
                continue;
            }
            let fs = me.clone();
            let permits = self.prefetch_permits.clone();
            let work = async move {
                let Ok(_permit) = permits.acquire_owned().await else {
                    return;
                };
                if fs.cache.get(&path).is_none() {
                    let _ = fs.resolve_shared(&path, Some(kind)).await;
                }
            };
            self.spawn_for_caller(work);
        }
    }

    /// Runs `work` in the background on behalf of the process whose request is being served
    /// (its traffic counts as that process's). False if there is no runtime to run it.
    pub(super) fn spawn_for_caller(
        &self,
        work: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> bool {
        // Lookups answered from memory run on a FUSE thread, outside the runtime.
        let Some(rt) = tokio::runtime::Handle::try_current()
            .ok()
            .or_else(|| self.rt.clone())
        else {
            return false;
        };
        match crate::metrics::CALLER_PID.try_with(|p| *p) {
            Ok(pid) => rt.spawn(crate::metrics::CALLER_PID.scope(pid, work)),
            Err(_) => rt.spawn(work),
        };
        true
    }
}
