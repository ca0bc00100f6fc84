//! Directories whose complete contents this mount knows: names and kinds, for the stat TTL.
//!
//! A directory is known completely when this mount created it (empty then), or when a listing
//! of it finished while the mount itself changed nothing in it (a create or unlink racing with
//! the listing could be missing from it, so such a listing is not trusted: every own change
//! bumps a sequence number the listing compares against). From then on the mount's own
//! creates, unlinks and renames keep the entries current. While that knowledge is younger than
//! the stat cache TTL:
//! * looking up a name not in the set needs no request (creating 1,000 files costs 1,000 PUTs,
//!   not 3,000 requests),
//! * `readdir` is answered from memory (a warm `ls -l` sends no LIST).
//!
//! Names added by other clients show up after the TTL, as with the negative cache. Memory is
//! bounded by a total number of names; the least recently marked directories go first.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ffi::{OsStr, OsString};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::attr::NodeKind;

/// Directories tracked at once.
const TRACKED: usize = 1024;
/// Larger directories are not kept as complete knowledge.
const MAX_NAMES: usize = 250_000;
/// Names kept over all directories.
const TOTAL_NAMES: usize = 1_000_000;
/// Own changes remembered per directory before the record is reset (a reset makes listings
/// running at that moment untrusted, which only costs a later request).
const CHANGES_KEPT: usize = 4096;

/// A listing's place in the sequence of own changes, taken before it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListingTicket(u64);

#[derive(Debug)]
struct Known {
    since: Instant,
    names: BTreeMap<OsString, NodeKind>,
    /// Changes whenever `names` does (not when the same names are confirmed again).
    version: u64,
}

#[derive(Debug, Default)]
struct Inner {
    dirs: HashMap<u64, Known>,
    order: VecDeque<u64>,
    total: usize,
    /// Sequence number of the last own change.
    seq: u64,
    /// Last own change per directory.
    changed: HashMap<u64, u64>,
    /// Changes at or before this number were forgotten.
    floor: u64,
    /// Directories found too large for one listing page, and when.
    large: HashMap<u64, Instant>,
    /// Last version handed out.
    versions: u64,
    /// Version of the contents the kernel's readdir cache of a directory was filled with.
    kernel_copy: HashMap<u64, u64>,
}

impl Inner {
    fn drop_dir(&mut self, dir: u64) {
        if let Some(k) = self.dirs.remove(&dir) {
            self.total -= k.names.len();
        }
        self.kernel_copy.remove(&dir);
    }

    fn next_version(&mut self) -> u64 {
        self.versions += 1;
        self.versions
    }

    fn record_change(&mut self, dir: u64) {
        self.seq += 1;
        if self.changed.len() >= CHANGES_KEPT && !self.changed.contains_key(&dir) {
            self.changed.clear();
            self.floor = self.seq - 1;
        }
        self.changed.insert(dir, self.seq);
    }
}

/// The set of completely known directories.
#[derive(Debug)]
pub struct CompleteDirs {
    inner: Mutex<Inner>,
    ttl: Duration,
}

impl CompleteDirs {
    /// Knowledge is trusted for `ttl`.
    pub fn new(ttl: Duration) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            ttl,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn fresh<'a>(&self, inner: &'a Inner, dir: u64) -> Option<&'a Known> {
        inner.dirs.get(&dir).filter(|k| k.since.elapsed() < self.ttl)
    }

    /// `dir` holds exactly `entries` now (it was just created, or its listing is trusted).
    pub fn mark(&self, dir: u64, entries: impl IntoIterator<Item = (OsString, NodeKind)>) {
        let names: BTreeMap<OsString, NodeKind> = entries.into_iter().take(MAX_NAMES + 1).collect();
        Self::mark_locked(&mut self.lock(), dir, names);
    }

    /// The kernel's readdir cache of `dir` now holds the contents of `version` (a listing
    /// of them was read to its end).
    pub fn kernel_filled(&self, dir: u64, version: u64) {
        let mut inner = self.lock();
        if inner.dirs.get(&dir).is_some_and(|k| k.version == version) {
            inner.kernel_copy.insert(dir, version);
        }
    }

    /// True if the contents of `dir` are known and the kernel's readdir cache holds exactly
    /// them, so the kernel may keep that cache across opens.
    pub fn kernel_copy_current(&self, dir: u64) -> bool {
        let inner = self.lock();
        self.fresh(&inner, dir)
            .is_some_and(|k| inner.kernel_copy.get(&dir) == Some(&k.version))
    }

    fn mark_locked(inner: &mut Inner, dir: u64, names: BTreeMap<OsString, NodeKind>) -> Option<u64> {
        // The same names again keep their version, and with it the kernel's copy of them.
        let same = inner
            .dirs
            .get(&dir)
            .filter(|k| k.names == names)
            .map(|k| k.version);
        let kernel_copy = same.and(inner.kernel_copy.get(&dir).copied());
        inner.drop_dir(dir);
        inner.order.retain(|d| *d != dir);
        inner.large.remove(&dir);
        if names.len() > MAX_NAMES {
            return None;
        }
        if let Some(k) = kernel_copy {
            inner.kernel_copy.insert(dir, k);
        }
        let version = same.unwrap_or_else(|| inner.next_version());
        inner.total += names.len();
        inner.dirs.insert(
            dir,
            Known {
                since: Instant::now(),
                names,
                version,
            },
        );
        inner.order.push_back(dir);
        while inner.order.len() > TRACKED || inner.total > TOTAL_NAMES {
            let Some(old) = inner.order.pop_front() else { break };
            inner.drop_dir(old);
        }
        inner.dirs.get(&dir).map(|k| k.version)
    }

    /// Call before listing `dir` for [`Self::mark_listed`].
    pub fn ticket(&self) -> ListingTicket {
        ListingTicket(self.lock().seq)
    }

    /// True if the mount changed nothing anywhere since `ticket` was taken.
    pub fn unchanged_since(&self, ticket: ListingTicket) -> bool {
        self.lock().seq == ticket.0
    }

    /// Marks `dir` as holding `entries` if the mount changed nothing in it since `ticket` was
    /// taken. Returns whether it did.
    pub fn mark_listed(
        &self,
        dir: u64,
        ticket: ListingTicket,
        entries: impl IntoIterator<Item = (OsString, NodeKind)>,
    ) -> bool {
        self.mark_listed_version(dir, ticket, entries).is_some()
    }

    /// [`Self::mark_listed`], returning the version of the contents when it marked them.
    pub fn mark_listed_version(
        &self,
        dir: u64,
        ticket: ListingTicket,
        entries: impl IntoIterator<Item = (OsString, NodeKind)>,
    ) -> Option<u64> {
        let names: BTreeMap<OsString, NodeKind> = entries.into_iter().take(MAX_NAMES + 1).collect();
        let mut inner = self.lock();
        let unchanged = ticket.0 >= inner.floor && inner.changed.get(&dir).is_none_or(|c| *c <= ticket.0);
        if unchanged {
            Self::mark_locked(&mut inner, dir, names)
        } else {
            None
        }
    }

    /// `dir` itself moved: a listing of it running now may have read its old place.
    pub fn moved(&self, dir: u64) {
        self.lock().record_change(dir);
    }

    /// `name` (of `kind`) now exists in `dir`.
    pub fn added(&self, dir: u64, name: &OsStr, kind: NodeKind) {
        let mut inner = self.lock();
        inner.record_change(dir);
        let version = inner.next_version();
        if let Some(k) = inner.dirs.get_mut(&dir) {
            match k.names.insert(name.to_os_string(), kind) {
                None => {
                    k.version = version;
                    inner.total += 1;
                }
                Some(old) if old != kind => k.version = version,
                Some(_) => {}
            }
        }
    }

    /// `name` no longer exists in `dir`.
    pub fn removed(&self, dir: u64, name: &OsStr) {
        let mut inner = self.lock();
        inner.record_change(dir);
        let version = inner.next_version();
        if let Some(k) = inner.dirs.get_mut(&dir) {
            if k.names.remove(name).is_some() {
                k.version = version;
                inner.total -= 1;
            }
        }
    }

    /// False when nothing is ever trusted (a zero TTL).
    pub fn enabled(&self) -> bool {
        !self.ttl.is_zero()
    }

    /// True if the contents of `dir` are known now.
    pub fn is_known(&self, dir: u64) -> bool {
        self.fresh(&self.lock(), dir).is_some()
    }

    /// True if `name` is known not to exist in `dir`.
    pub fn knows_absent(&self, dir: u64, name: &OsStr) -> bool {
        self.fresh(&self.lock(), dir)
            .is_some_and(|k| !k.names.contains_key(name))
    }

    /// The kind of `name` in `dir`, if the contents of `dir` are known and hold it.
    pub fn kind_of(&self, dir: u64, name: &OsStr) -> Option<NodeKind> {
        self.fresh(&self.lock(), dir)?.names.get(name).copied()
    }

    /// All entries of `dir` in name order, if known, and the version of those contents.
    pub fn entries(&self, dir: u64) -> Option<(Vec<(OsString, NodeKind)>, u64)> {
        let inner = self.lock();
        let k = self.fresh(&inner, dir)?;
        Some((k.names.iter().map(|(n, k)| (n.clone(), *k)).collect(), k.version))
    }

    /// `dir` did not fit one listing page; [`Self::seems_large`] says so for the TTL.
    pub fn note_large(&self, dir: u64) {
        let mut inner = self.lock();
        if inner.large.len() >= TRACKED {
            inner.large.clear();
        }
        inner.large.insert(dir, Instant::now());
    }

    /// True if `dir` recently did not fit one listing page.
    pub fn seems_large(&self, dir: u64) -> bool {
        self.lock()
            .large
            .get(&dir)
            .is_some_and(|t| t.elapsed() < self.ttl)
    }

    /// Forgets what is known of `dir`.
    pub fn forget(&self, dir: u64) {
        let mut inner = self.lock();
        if !inner.dirs.contains_key(&dir) && !inner.large.contains_key(&dir) {
            return;
        }
        inner.drop_dir(dir);
        inner.order.retain(|d| *d != dir);
        inner.large.remove(&dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(name: &str) -> (OsString, NodeKind) {
        (name.into(), NodeKind::File)
    }

    #[test]
    fn tracks_names_and_expires() {
        let c = CompleteDirs::new(Duration::from_secs(60));
        assert!(!c.knows_absent(1, OsStr::new("a")), "unknown directory: no claim");
        c.mark(1, []);
        assert!(c.knows_absent(1, OsStr::new("a")));
        c.added(1, OsStr::new("a"), NodeKind::File);
        assert!(!c.knows_absent(1, OsStr::new("a")));
        assert_eq!(c.kind_of(1, OsStr::new("a")), Some(NodeKind::File));
        c.removed(1, OsStr::new("a"));
        assert!(c.knows_absent(1, OsStr::new("a")));
        let short = CompleteDirs::new(Duration::ZERO);
        short.mark(1, []);
        assert!(
            !short.knows_absent(1, OsStr::new("a")),
            "expired knowledge is not used"
        );
        assert!(short.entries(1).is_none());
    }

    #[test]
    fn the_kernel_copy_is_current_only_while_the_names_are_the_ones_it_was_filled_with() {
        let c = CompleteDirs::new(Duration::from_secs(60));
        assert!(!c.kernel_copy_current(1), "unknown directory");
        c.mark(1, [f("a")]);
        let (_, v1) = c.entries(1).unwrap();
        assert!(!c.kernel_copy_current(1), "the kernel has not read this listing");
        c.kernel_filled(1, v1);
        assert!(c.kernel_copy_current(1));
        let t = c.ticket();
        assert_eq!(
            c.mark_listed_version(1, t, [f("a")]),
            Some(v1),
            "the same names again"
        );
        assert!(
            c.kernel_copy_current(1),
            "confirming the same names keeps the kernel's copy"
        );
        let v2 = c.mark_listed_version(1, t, [f("a"), f("b")]).unwrap();
        assert_ne!(v2, v1);
        assert!(
            !c.kernel_copy_current(1),
            "another client added b: the kernel's copy is stale"
        );
        c.kernel_filled(1, v1);
        assert!(
            !c.kernel_copy_current(1),
            "a listing of old contents fills nothing"
        );
        c.kernel_filled(1, v2);
        assert!(c.kernel_copy_current(1));
        c.removed(1, OsStr::new("zzz"));
        assert!(
            c.kernel_copy_current(1),
            "removing a name that is not there changes nothing"
        );
        c.added(1, OsStr::new("c"), NodeKind::File);
        assert!(!c.kernel_copy_current(1));
        c.forget(1);
        c.mark(1, [f("a"), f("b"), f("c")]);
        assert!(
            !c.kernel_copy_current(1),
            "forgotten knowledge forgets the kernel's copy"
        );
    }

    #[test]
    fn a_listing_racing_with_own_changes_is_not_trusted() {
        let c = CompleteDirs::new(Duration::from_secs(60));
        let t = c.ticket();
        c.added(7, OsStr::new("new"), NodeKind::File);
        assert!(
            !c.mark_listed(7, t, [f("old")]),
            "a create ran during the listing"
        );
        assert!(!c.is_known(7));
        let t = c.ticket();
        c.added(8, OsStr::new("elsewhere"), NodeKind::File);
        assert!(
            c.mark_listed(7, t, [f("old"), f("new")]),
            "changes elsewhere do not matter"
        );
        assert_eq!(c.entries(7).map(|e| e.0.len()), Some(2));
        let t = c.ticket();
        c.removed(7, OsStr::new("old"));
        assert!(!c.mark_listed(7, t, [f("old"), f("new")]));
        assert!(
            c.knows_absent(7, OsStr::new("old")),
            "the marked set follows the unlink"
        );
    }

    #[test]
    fn forgotten_changes_make_running_listings_untrusted() {
        let c = CompleteDirs::new(Duration::from_secs(60));
        let t = c.ticket();
        for d in 0..(CHANGES_KEPT as u64 + 10) {
            c.added(1000 + d, OsStr::new("x"), NodeKind::File);
        }
        assert!(!c.mark_listed(1, t, [f("a")]), "the record of changes was reset");
        let t = c.ticket();
        assert!(c.mark_listed(1, t, [f("a")]));
    }

    #[test]
    fn entries_come_in_name_order_and_memory_is_bounded() {
        let c = CompleteDirs::new(Duration::from_secs(60));
        c.mark(1, [f("c"), f("a"), f("b"), f("d")]);
        let names: Vec<_> = c.entries(1).unwrap().0.into_iter().map(|e| e.0).collect();
        assert_eq!(names, ["a", "b", "c", "d"].map(OsString::from));
        c.mark(2, (0..MAX_NAMES + 1).map(|i| f(&i.to_string())));
        assert!(!c.is_known(2), "too large to keep");
        for d in 10..(10 + TRACKED as u64 + 5) {
            c.mark(d, [f("x")]);
        }
        assert!(!c.is_known(1), "least recently marked directory went first");
        assert!(c.is_known(10 + TRACKED as u64 + 4));
        c.note_large(3);
        assert!(c.seems_large(3));
        c.forget(3);
        assert!(!c.seems_large(3));
    }
}
