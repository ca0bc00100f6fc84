//! Directories whose complete contents this mount knows.
//!
//! A directory is known completely when this mount created it (empty then); from then on the
//! mount's own creates, unlinks and renames keep the set of names current. (A listing is not
//! used as complete knowledge: a create racing with it could be missed.) While that knowledge is younger than the stat cache TTL, looking up a name that is
//! not in the set needs no request: creating 1,000 files in a new directory costs 1,000 PUTs,
//! not 3,000 requests. Names added by other clients show up after the TTL, as with the
//! negative cache.

use std::collections::{HashMap, HashSet, VecDeque};
use std::ffi::{OsStr, OsString};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Directories tracked at once.
const TRACKED: usize = 256;
/// Larger listings are not kept as complete knowledge.
const MAX_NAMES: usize = 100_000;

#[derive(Debug, Default)]
struct Inner {
    dirs: HashMap<u64, (Instant, HashSet<OsString>)>,
    order: VecDeque<u64>,
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

    /// `dir` holds exactly `names` now.
    pub fn mark(&self, dir: u64, names: impl IntoIterator<Item = OsString>) {
        let names: HashSet<OsString> = names.into_iter().take(MAX_NAMES + 1).collect();
        let mut inner = self.lock();
        if names.len() > MAX_NAMES {
            inner.dirs.remove(&dir);
            return;
        }
        inner.dirs.insert(dir, (Instant::now(), names));
        inner.order.retain(|d| *d != dir);
        inner.order.push_back(dir);
        while inner.order.len() > TRACKED {
            if let Some(old) = inner.order.pop_front() {
                inner.dirs.remove(&old);
            }
        }
    }

    /// `name` now exists in `dir`.
    pub fn added(&self, dir: u64, name: &OsStr) {
        if let Some((_, names)) = self.lock().dirs.get_mut(&dir) {
            names.insert(name.to_os_string());
        }
    }

    /// `name` no longer exists in `dir`.
    pub fn removed(&self, dir: u64, name: &OsStr) {
        if let Some((_, names)) = self.lock().dirs.get_mut(&dir) {
            names.remove(name);
        }
    }

    /// True if `name` is known not to exist in `dir`.
    pub fn knows_absent(&self, dir: u64, name: &OsStr) -> bool {
        match self.lock().dirs.get(&dir) {
            Some((since, names)) => since.elapsed() < self.ttl && !names.contains(name),
            None => false,
        }
    }

    /// Forgets what is known of `dir`.
    pub fn forget(&self, dir: u64) {
        self.lock().dirs.remove(&dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracks_names_and_expires() {
        let c = CompleteDirs::new(Duration::from_secs(60));
        assert!(!c.knows_absent(1, OsStr::new("a")), "unknown directory: no claim");
        c.mark(1, []);
        assert!(c.knows_absent(1, OsStr::new("a")));
        c.added(1, OsStr::new("a"));
        assert!(!c.knows_absent(1, OsStr::new("a")));
        c.removed(1, OsStr::new("a"));
        assert!(c.knows_absent(1, OsStr::new("a")));
        let short = CompleteDirs::new(Duration::ZERO);
        short.mark(1, []);
        assert!(
            !short.knows_absent(1, OsStr::new("a")),
            "expired knowledge is not used"
        );
    }
}
