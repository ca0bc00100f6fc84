//! Resolving paths with as few requests as possible, and metadata prefetch for `ls -l`.
//!
//! * Every resolve of a path goes through one shared in-flight slot, so a lookup and a prefetch
//!   (or two lookups) of the same path make one request between them.
//! * Directory listings are remembered for a while (names and kinds, in listing order). A
//!   lookup of a name a recent listing returned is what `ls -l`, `du` or a file manager does
//!   for every entry, so it starts HEAD requests for the next entries of that listing, several
//!   at once, ahead of the caller. A listed entry needs one request (HEAD of the file, or of the
//!   directory marker), not the two of an unknown name. Listings that nobody stats (`ls`,
//!   `find`) cost nothing extra. Results land in the stat cache with their real metadata, so
//!   per-object modes and owners stay correct.

use std::collections::{HashMap, VecDeque};
use std::ffi::{OsStr, OsString};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use tokio::sync::OnceCell;

use super::{lock, Errno, S3Filesystem};
use crate::attr::NodeKind;
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
}

/// Recent listings, most recently used last.
#[derive(Debug, Default)]
pub(super) struct ListingMemory {
    dirs: HashMap<u64, Arc<Mutex<Listing>>>,
    order: VecDeque<u64>,
}

/// Paths being resolved right now, shared by everyone who asks.
pub(super) type InFlight = Mutex<HashMap<String, Arc<OnceCell<Resolved>>>>;

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

    /// The kind a recent listing of `parent` gave `name`, and the names after it.
    fn listed(&self, parent: u64, name: &OsStr) -> Option<Listed> {
        let listing = lock(&self.listings).dirs.get(&parent).cloned()?;
        let l = lock(&listing);
        if l.taken.elapsed() > self.cfg.ttl {
            return None;
        }
        let i = *l.index.get(name)?;
        let ahead = l.names.iter().skip(i + 1).take(PREFETCH_AHEAD).cloned().collect();
        Some((l.names[i].1, l.path.clone(), ahead))
    }

    /// What `path` is, asking the store at most once however many callers want it now.
    /// `hint` is the kind a listing reported, which allows a single HEAD.
    pub(super) async fn resolve_shared(&self, path: &str, hint: Option<NodeKind>) -> Resolved {
        let cell = lock(&self.resolving).entry(path.to_string()).or_default().clone();
        let result = cell
            .get_or_init(|| self.resolve_uncached(path, hint))
            .await
            .clone();
        {
            let mut inflight = lock(&self.resolving);
            if inflight.get(path).is_some_and(|c| Arc::ptr_eq(c, &cell)) {
                inflight.remove(path);
            }
        }
        result
    }

    async fn resolve_uncached(&self, path: &str, hint: Option<NodeKind>) -> Resolved {
        crate::metrics::global().lookup_miss();
        let key = self.key_for_path(path);
        let now = SystemTime::now();
        let resolved = match hint {
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
        let resolved = match resolved {
            None if lock(&self.legacy_dirs).contains(path) => {
                let marker = format!("{key}{}", crate::namespace::names::FOLDER_SUFFIX);
                match self.store.head(&marker).await? {
                    Some(_) => {
                        let mut state = implicit_dir_state(&self.pres, self.mount_time);
                        state.dir_marker = Some(marker);
                        Some(state)
                    }
                    None => None,
                }
            }
            other => other,
        };
        match &resolved {
            Some(state) => self.cache.put(path, state.clone()),
            None => self.cache.put_absent(path),
        }
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
            // The prefetch is made on behalf of the process that is listing.
            match crate::metrics::CALLER_PID.try_with(|p| *p) {
                Ok(pid) => tokio::spawn(crate::metrics::CALLER_PID.scope(pid, work)),
                Err(_) => tokio::spawn(work),
            };
        }
    }
}
