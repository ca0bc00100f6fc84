//! Recursive walks (`find`, `du`, `ls -R`, `rsync` or `tar -c` from the mount) of trees made by
//! other tools: one flat listing of a subtree instead of one listing per directory.
//!
//! When a directory is about to be listed and its parent was listed moments before, a caller
//! is walking a tree. The parent's subtree is then listed without a delimiter, in the
//! background (the walker goes on meanwhile), up to [`SUBTREE_PAGES`] pages. Every directory
//! whose keys those pages covered entirely becomes known by path: its entries, and whether its
//! marker object (`dir/`) exists. A directory the walker reaches afterwards is then listed
//! from memory (it joins the completely known directories, see
//! [`crate::namespace::complete`]), and one without a marker resolves without a HEAD. Nothing
//! under a subtree that is being listed, or was listed to its end, starts another such
//! listing; below one that was too large, the directories the pages did not reach start their
//! own when they are walked.
//!
//! The knowledge is used only while this mount has changed nothing since the listing began
//! (any own create, unlink or rename anywhere retires it), and for the stat cache TTL, like a
//! listing of one directory.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::{lock, S3Filesystem};
use crate::namespace::complete::ListingTicket;
use crate::namespace::join;
use crate::namespace::names::ListingWalk;
use crate::store::{ListPage, ObjectInfo};

/// Pages of a subtree listing (of 1,000 keys each) before it stops.
pub(super) const SUBTREE_PAGES: usize = 10;
/// Subtree listings running at once.
const IN_FLIGHT: usize = 2;
/// Keys kept over all known directories; past it, older knowledge is dropped.
const TOTAL_KEYS: usize = 200_000;

/// What a subtree listing said of one directory.
#[derive(Debug)]
struct KnownDir {
    /// Its entries as a delimited listing of it would have returned them.
    page: ListPage,
    /// Whether its marker object (`dir/`) exists.
    marker: bool,
    ticket: ListingTicket,
    taken: Instant,
}

/// A subtree listed or being listed.
#[derive(Debug)]
struct Root {
    since: Instant,
    /// None while the listing runs; then whether it reached the end of the subtree.
    finished: Option<bool>,
}

/// Directories known from subtree listings, by path, and the subtrees listed.
#[derive(Debug, Default)]
pub(super) struct SubtreeKnowledge {
    dirs: HashMap<String, KnownDir>,
    /// Subtree roots listed or being listed.
    roots: HashMap<String, Root>,
    in_flight: usize,
}

impl SubtreeKnowledge {
    /// Forgets what listings said of the directory at `path` and below it, and the subtree
    /// listings of those directories (a directory rename moved them). A listing still running
    /// there keeps its place in `in_flight` and finds no root to report to.
    pub(super) fn forget_under(&mut self, path: &str) {
        let below = format!("{path}/");
        let gone = |p: &String| p == path || p.starts_with(&below) || path.is_empty();
        self.dirs.retain(|p, _| !gone(p));
        self.roots.retain(|p, _| !gone(p));
    }

    /// Whether listing the subtree at `path` would repeat one: it was listed itself (to its end
    /// or not), a directory above it is being listed or was listed to its end, or a listing
    /// above it reached past it.
    fn covered(&self, path: &str, ttl: Duration) -> bool {
        if self.dirs.get(path).is_some_and(|d| d.taken.elapsed() < ttl) {
            return true;
        }
        let mut p = path;
        let mut itself = true;
        loop {
            if let Some(r) = self.roots.get(p).filter(|r| r.since.elapsed() < ttl) {
                if itself || r.finished != Some(false) {
                    return true;
                }
            }
            if p.is_empty() {
                return false;
            }
            p = p.rfind('/').map_or("", |i| &p[..i]);
            itself = false;
        }
    }
}

/// The directories a flat listing of `prefix` (the key prefix of directory `root`) shows
/// completely, with their entries as a delimited listing would return them and whether their
/// marker exists. `finished` says whether the listing reached its end; if not, only the
/// directories whose keys all sort before the last key are complete. Keys with an empty path
/// component (`a//b`) make the listing unusable (nothing is returned): such names are shown
/// by delimited listings only.
pub(super) fn complete_dirs(
    root: &str,
    prefix: &str,
    objects: &[ObjectInfo],
    finished: bool,
) -> Vec<(String, ListPage, bool)> {
    // Directories by key prefix relative to `prefix` ("" for the root, "a/b/" below it).
    let mut dirs: HashMap<String, (ListPage, bool)> = HashMap::new();
    dirs.entry(String::new()).or_default();
    for o in objects {
        let Some(rest) = o.key.strip_prefix(prefix) else {
            continue;
        };
        if rest.is_empty() {
            dirs.entry(String::new()).or_default().1 = true;
            continue;
        }
        let parts: Vec<&str> = rest.split('/').collect();
        let (dir_parts, leaf) = match rest.strip_suffix('/') {
            Some(_) => (&parts[..parts.len() - 1], None),
            None => (&parts[..parts.len() - 1], Some(parts[parts.len() - 1])),
        };
        if dir_parts.iter().any(|c| c.is_empty()) {
            return Vec::new();
        }
        let mut rel = String::new();
        for part in dir_parts {
            let child = format!("{rel}{part}/");
            let page = &mut dirs.entry(rel).or_default().0;
            let child_key = format!("{prefix}{child}");
            if page.prefixes.last() != Some(&child_key) {
                page.prefixes.push(child_key);
            }
            rel = child;
        }
        let entry = dirs.entry(rel).or_default();
        match leaf {
            // `rel` itself is the marker `dir/`.
            None => entry.1 = true,
            Some(_) => entry.0.objects.push(o.clone()),
        }
    }
    let last = objects.last().map(|o| o.key.as_str());
    dirs.into_iter()
        .filter(|(rel, _)| {
            finished
                || (!rel.is_empty() && {
                    let key = format!("{prefix}{rel}");
                    last.is_some_and(|l| l > key.as_str() && !l.starts_with(&key))
                })
        })
        .map(|(rel, (page, marker))| {
            let path = match rel.strip_suffix('/') {
                Some(r) => join(root, r),
                None => root.to_string(),
            };
            (path, page, marker)
        })
        .collect()
}

impl S3Filesystem {
    /// Called before directory `dir` (at `path`) is listed: if its parent was listed moments
    /// ago, a tree is being walked, and the parent's subtree is listed in the background.
    pub(super) fn start_subtree_listing(&self, dir: u64, path: &str) {
        if !self.complete.enabled() || dir == crate::namespace::ROOT_INO {
            return;
        }
        let Some(parent) = self.table.get(dir).map(|n| n.parent) else {
            return;
        };
        if !self.has_listing(parent) {
            return;
        }
        let Some(root) = self.table.path_of(parent) else {
            return;
        };
        let ttl = self.cfg.ttl;
        {
            let mut k = lock(&self.subtree);
            k.roots.retain(|_, r| r.since.elapsed() < ttl);
            if k.in_flight >= IN_FLIGHT || k.covered(&root, ttl) || k.dirs.contains_key(path) {
                return;
            }
            k.roots.insert(
                root.clone(),
                Root {
                    since: Instant::now(),
                    finished: None,
                },
            );
            k.in_flight += 1;
        }
        let started = self.me.upgrade().is_some_and(|me| {
            self.spawn_for_caller(async move {
                me.list_subtree(&root).await;
                lock(&me.subtree).in_flight -= 1;
            })
        });
        if !started {
            lock(&self.subtree).in_flight -= 1;
        }
    }

    async fn list_subtree(&self, root: &str) {
        let ticket = self.complete.ticket();
        let prefix = self.dir_key(root);
        let mut objects = Vec::new();
        let (mut token, mut finished) = (None, false);
        for _ in 0..SUBTREE_PAGES {
            match self
                .store
                .list(&prefix, false, token.take(), super::dir::PAGE_KEYS)
                .await
            {
                Ok(page) => {
                    objects.extend(page.objects);
                    token = page.next;
                    if token.is_none() {
                        finished = true;
                        break;
                    }
                }
                Err(e) => {
                    // Only an optimization: the walk lists each directory itself.
                    tracing::debug!(prefix, "subtree listing stopped: {e}");
                    if let Some(r) = lock(&self.subtree).roots.get_mut(root) {
                        r.finished = Some(false);
                    }
                    return;
                }
            }
        }
        let found = complete_dirs(root, &prefix, &objects, finished);
        tracing::debug!(
            root,
            keys = objects.len(),
            dirs = found.len(),
            finished,
            "subtree listed"
        );
        let ttl = self.cfg.ttl;
        let mut k = lock(&self.subtree);
        if let Some(r) = k.roots.get_mut(root) {
            r.finished = Some(finished);
        }
        k.dirs.retain(|_, d| d.taken.elapsed() < ttl);
        let kept: usize = k.dirs.values().map(|d| d.page.objects.len()).sum();
        if kept + objects.len() > TOTAL_KEYS {
            k.dirs.clear();
        }
        let taken = Instant::now();
        for (path, page, marker) in found {
            k.dirs.insert(
                path,
                KnownDir {
                    page,
                    marker,
                    ticket,
                    taken,
                },
            );
        }
    }

    /// `read` of what a subtree listing knows of the directory at `path`, if that is fresh
    /// and the mount changed nothing since the listing began.
    fn subtree_known<T>(&self, path: &str, read: impl FnOnce(&KnownDir) -> T) -> Option<(T, ListingTicket)> {
        let (value, ticket) = {
            let k = lock(&self.subtree);
            let d = k.dirs.get(path).filter(|d| d.taken.elapsed() < self.cfg.ttl)?;
            (read(d), d.ticket)
        };
        self.complete.unchanged_since(ticket).then_some((value, ticket))
    }

    /// Makes the contents of directory `dir` (at `path`) known from a subtree listing that
    /// covered it, if there is one.
    pub(super) fn adopt_subtree_listing(&self, dir: u64, path: &str) {
        let Some((page, ticket)) = self.subtree_known(path, |d| d.page.clone()) else {
            return;
        };
        let prefix = self.dir_key(path);
        let listed = self.absorb_page(path, &prefix, &page, &mut ListingWalk::default());
        let local = self.table.local_children(dir).into_iter().map(|(n, _, k)| (n, k));
        self.complete
            .mark_listed(dir, ticket, listed.into_iter().chain(local));
    }

    /// True if a subtree listing showed that the directory at `path` has no marker object
    /// (it exists because keys live under it), so resolving it needs no HEAD.
    pub(super) fn subtree_says_implicit(&self, path: &str) -> bool {
        self.subtree_known(path, |d| d.marker)
            .is_some_and(|(marker, _)| !marker)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(key: &str) -> ObjectInfo {
        ObjectInfo {
            key: key.to_string(),
            size: 1,
            etag: None,
            last_modified: None,
            content_type: None,
            metadata: Default::default(),
            content_headers: Vec::new(),
        }
    }

    fn keys_of(page: &ListPage) -> (Vec<&str>, Vec<&str>) {
        (
            page.objects.iter().map(|o| o.key.as_str()).collect(),
            page.prefixes.iter().map(String::as_str).collect(),
        )
    }

    fn by_path(found: Vec<(String, ListPage, bool)>) -> HashMap<String, (ListPage, bool)> {
        found.into_iter().map(|(p, page, m)| (p, (page, m))).collect()
    }

    #[test]
    fn a_finished_flat_listing_describes_every_directory_below() {
        // In the store's order ('.' sorts before '/').
        let keys = [
            "m/t/a.txt",
            "m/t/a/",
            "m/t/a/f1",
            "m/t/a/x/deep",
            "m/t/b/g",
            "m/t/b/g2",
            "m/t/top",
        ];
        let objects: Vec<_> = keys.iter().map(|k| obj(k)).collect();
        let dirs = by_path(complete_dirs("t", "m/t/", &objects, true));
        let mut paths: Vec<&str> = dirs.keys().map(String::as_str).collect();
        paths.sort();
        assert_eq!(paths, ["t", "t/a", "t/a/x", "t/b"]);
        let (t, t_marker) = &dirs["t"];
        assert_eq!(
            keys_of(t),
            (vec!["m/t/a.txt", "m/t/top"], vec!["m/t/a/", "m/t/b/"])
        );
        assert!(!t_marker);
        let (a, a_marker) = &dirs["t/a"];
        assert_eq!(keys_of(a), (vec!["m/t/a/f1"], vec!["m/t/a/x/"]));
        assert!(a_marker, "m/t/a/ exists");
        assert!(!dirs["t/b"].1, "b has no marker");
        assert_eq!(keys_of(&dirs["t/a/x"].0), (vec!["m/t/a/x/deep"], vec![]));
    }

    #[test]
    fn an_unfinished_listing_describes_only_directories_it_went_past() {
        let keys = ["a/1", "b/c/1", "b/c/2", "b/d/1", "b/e/1"];
        let objects: Vec<_> = keys.iter().map(|k| obj(k)).collect();
        // The root mounted without a prefix: its path is "" and its key prefix too.
        let dirs = by_path(complete_dirs("", "", &objects, false));
        let mut paths: Vec<&str> = dirs.keys().map(String::as_str).collect();
        paths.sort();
        // Not the root, not b (b/e may go on), not b/e (the last key is in it).
        assert_eq!(paths, ["a", "b/c", "b/d"]);
    }

    #[test]
    fn empty_path_components_make_the_listing_unusable() {
        let objects = vec![obj("t/a/1"), obj("t/a//odd")];
        assert!(complete_dirs("t", "t/", &objects, true).is_empty());
    }

    fn root(finished: Option<bool>) -> Root {
        Root {
            since: Instant::now(),
            finished,
        }
    }

    #[test]
    fn coverage_runs_up_the_path_unless_a_listing_stopped_short() {
        let mut k = SubtreeKnowledge::default();
        let ttl = Duration::from_secs(60);
        k.roots.insert("a/b".into(), root(None));
        assert!(k.covered("a/b", ttl));
        assert!(k.covered("a/b/c/d", ttl), "under a listing that runs");
        assert!(!k.covered("a", ttl));
        assert!(!k.covered("a/bc", ttl));
        k.roots.insert("a/b".into(), root(Some(true)));
        assert!(k.covered("a/b/c/d", ttl), "under a listing that reached its end");
        // A listing that stopped short: not again itself, but the directories below it that
        // it did not reach may start their own; those it reached are known.
        k.roots.insert("a/b".into(), root(Some(false)));
        assert!(k.covered("a/b", ttl));
        assert!(!k.covered("a/b/z", ttl));
        k.dirs.insert(
            "a/b/c".into(),
            KnownDir {
                page: ListPage::default(),
                marker: false,
                ticket: crate::namespace::complete::CompleteDirs::new(ttl).ticket(),
                taken: Instant::now(),
            },
        );
        assert!(k.covered("a/b/c", ttl));
        k.roots.insert(String::new(), root(None));
        assert!(k.covered("x/y", ttl));
    }
}
