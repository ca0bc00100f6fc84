//! Which keys can be POSIX names, and how a listing page becomes directory entries.
//!
//! A POSIX name is 1-255 bytes, not `.` or `..`, without `/` or NUL. Keys that cannot be
//! expressed (an empty segment from `a//b`, a `.`/`..` segment, a segment over 255 bytes) are
//! skipped with one warning each, never failing the listing. s3fs's legacy `name_$folder$`
//! marker is read as the directory `name`.

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::sync::Mutex;

use crate::attr::NodeKind;
use crate::store::ListPage;

/// Longest name a POSIX filesystem accepts, in bytes.
pub const NAME_MAX: usize = 255;

/// Suffix of s3fs's legacy directory markers.
pub const FOLDER_SUFFIX: &str = "_$folder$";

/// Why a name cannot be used.
#[derive(Debug, PartialEq, Eq)]
pub enum NameError {
    /// Over 255 bytes (`ENAMETOOLONG`).
    TooLong,
    /// Empty, `.`, `..`, contains `/` or NUL, or is not UTF-8 (`EINVAL`).
    Invalid,
}

/// Checks a name given by the kernel (lookup, create, mkdir ...).
pub fn check_name(name: &OsStr) -> Result<&str, NameError> {
    let bytes = name.as_bytes();
    if bytes.len() > NAME_MAX {
        return Err(NameError::TooLong);
    }
    if bytes.is_empty() || bytes == b"." || bytes == b".." || bytes.contains(&b'/') || bytes.contains(&0) {
        return Err(NameError::Invalid);
    }
    name.to_str().ok_or(NameError::Invalid)
}

/// True if a listed name can be shown as a directory entry.
pub fn is_presentable(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && name.len() <= NAME_MAX && !name.contains('\0')
}

/// Keys already warned about, so a bad key is reported once per mount.
static WARNED: Mutex<Option<HashSet<String>>> = Mutex::new(None);

fn warn_once(key: &str, why: &str) {
    let mut guard = WARNED.lock().unwrap_or_else(|p| p.into_inner());
    let set = guard.get_or_insert_with(HashSet::new);
    if set.len() < 100_000 && set.insert(key.to_string()) {
        tracing::warn!(key, "skipping object in listing: {why}");
    }
}

/// One entry of a directory listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListedEntry {
    /// Name in the directory.
    pub name: OsString,
    /// Kind as far as the listing tells (a file whose metadata says "directory" shows as a file
    /// here; lookup corrects it).
    pub kind: NodeKind,
}

/// What one page of a listing adds.
#[derive(Debug, Default)]
pub struct PageEntries {
    /// Entries not given out by an earlier page of the same walk.
    pub entries: Vec<ListedEntry>,
    /// Names this page shows an s3fs `name_$folder$` marker for (alone, or beside keys under
    /// it; also names given out before): the marker rmdir and rename must remove.
    pub legacy_markers: Vec<OsString>,
}

/// The pages of one delimited listing of a directory, turned into entries one page at a time,
/// each name once. When a file and a directory share a name the directory wins, also across
/// pages: a file whose twin (`name/`, or `name_$folder$`, which sorts after it) would come
/// after everything its page held is kept back until a later page passes that key.
#[derive(Debug, Default)]
pub struct ListingWalk {
    seen: HashSet<OsString>,
    /// Files kept back, as names.
    held: Vec<String>,
}

impl ListingWalk {
    /// Marks `name` as given out; false if it was already.
    pub fn claim(&mut self, name: &OsStr) -> bool {
        self.seen.insert(name.to_os_string())
    }

    /// Files still kept back (the walk stopped before its last page).
    #[cfg(test)]
    fn held(&self) -> usize {
        self.held.len()
    }

    /// Turns the next page of the listing of `prefix` (ending in `/` or empty) into entries,
    /// skipping the directory's own marker and names POSIX cannot hold.
    pub fn next_page(&mut self, prefix: &str, page: &ListPage) -> PageEntries {
        let mut dirs: Vec<(String, bool)> = Vec::new();
        for p in &page.prefixes {
            let Some(rest) = p.strip_prefix(prefix) else {
                continue;
            };
            let name = rest.strip_suffix('/').unwrap_or(rest);
            if is_presentable(name) {
                dirs.push((name.to_string(), false));
            } else {
                warn_once(p, "its name is empty, '.', '..' or longer than 255 bytes");
            }
        }
        let mut files: Vec<String> = std::mem::take(&mut self.held);
        for o in &page.objects {
            let Some(rest) = o.key.strip_prefix(prefix) else {
                continue;
            };
            if rest.is_empty() {
                continue; // the directory's own marker
            }
            if let Some(dir) = rest.strip_suffix(FOLDER_SUFFIX).filter(|_| o.size == 0) {
                if is_presentable(dir) {
                    dirs.push((dir.to_string(), true));
                }
                continue;
            }
            if is_presentable(rest) {
                files.push(rest.to_string());
            } else {
                warn_once(&o.key, "its name is empty, '.', '..' or longer than 255 bytes");
            }
        }
        dirs.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)));
        dirs.dedup_by(|later, kept| {
            if later.0 == kept.0 {
                kept.1 |= later.1;
                true
            } else {
                false
            }
        });
        // The last key this page covers: a twin sorting after it may be on a later page.
        let last_key = match (page.objects.last(), page.prefixes.last()) {
            (Some(o), Some(p)) => Some(o.key.as_str().max(p.as_str())),
            (Some(o), None) => Some(o.key.as_str()),
            (None, p) => p.map(String::as_str),
        };
        let twin_may_follow = |name: &str| {
            page.next.is_some()
                && last_key.is_none_or(|last| format!("{prefix}{name}{FOLDER_SUFFIX}").as_str() > last)
        };
        let dir_set: HashSet<&str> = dirs.iter().map(|d| d.0.as_str()).collect();
        let mut out = PageEntries::default();
        for name in files {
            if dir_set.contains(name.as_str()) {
                warn_once(
                    &format!("{prefix}{name}"),
                    "a directory of the same name exists; showing the directory",
                );
            } else if twin_may_follow(&name) {
                self.held.push(name);
            } else if self.seen.insert(OsString::from(&name)) {
                out.entries.push(ListedEntry {
                    name: name.into(),
                    kind: NodeKind::File,
                });
            }
        }
        for (name, legacy_marker) in dirs {
            if legacy_marker {
                out.legacy_markers.push(OsString::from(&name));
            }
            if self.seen.insert(OsString::from(&name)) {
                out.entries.push(ListedEntry {
                    name: name.into(),
                    kind: NodeKind::Dir,
                });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::ObjectInfo;

    fn page(objects: &[&str], prefixes: &[&str]) -> ListPage {
        ListPage {
            objects: objects
                .iter()
                .map(|k| ObjectInfo {
                    key: k.to_string(),
                    ..Default::default()
                })
                .collect(),
            prefixes: prefixes.iter().map(|p| p.to_string()).collect(),
            next: None,
        }
    }

    fn names(v: &[ListedEntry]) -> Vec<(String, NodeKind)> {
        let mut n: Vec<_> = v
            .iter()
            .map(|e| (e.name.to_string_lossy().into_owned(), e.kind))
            .collect();
        n.sort_by(|a, b| a.0.cmp(&b.0));
        n
    }

    #[test]
    fn check_names() {
        assert_eq!(check_name(OsStr::new("ok.txt")), Ok("ok.txt"));
        assert_eq!(check_name(OsStr::new(&"x".repeat(256))), Err(NameError::TooLong));
        assert!(check_name(OsStr::new(&"x".repeat(255))).is_ok());
        assert_eq!(check_name(OsStr::new("..")), Err(NameError::Invalid));
    }

    #[test]
    fn page_to_entries_with_awkward_keys() {
        let long = format!("d/{}", "y".repeat(300));
        let p = page(
            &[
                "d/",
                "d/a.txt",
                "d/clash",
                "d/legacy_$folder$",
                "d/sub_$folder$",
                "d/.",
                long.as_str(),
            ],
            &["d/sub/", "d/clash/", "d//", "d/../"],
        );
        let mut walk = ListingWalk::default();
        let e = walk.next_page("d/", &p);
        assert_eq!(
            names(&e.entries),
            vec![
                ("a.txt".into(), NodeKind::File),
                ("clash".into(), NodeKind::Dir),
                ("legacy".into(), NodeKind::Dir),
                ("sub".into(), NodeKind::Dir),
            ]
        );
        assert_eq!(
            e.legacy_markers,
            ["legacy", "sub"],
            "a legacy marker beside a prefix is kept in mind"
        );
        // A second page repeating a name does not list it twice.
        let e2 = walk.next_page("d/", &page(&["d/a.txt"], &[]));
        assert!(e2.entries.is_empty());
    }

    #[test]
    fn root_listing_has_no_prefix() {
        let e = ListingWalk::default().next_page("", &page(&["top"], &["dir/"]));
        assert_eq!(
            names(&e.entries),
            vec![("dir".into(), NodeKind::Dir), ("top".into(), NodeKind::File)]
        );
    }

    /// A file and a directory of one name on different pages: the directory, once, as within
    /// a page; a legacy marker on a later page is still noted.
    #[test]
    fn a_directory_twin_on_a_later_page_wins() {
        let mut first = page(&["d/a", "d/a-1", "d/b"], &[]);
        first.next = Some("t1".into());
        let mut walk = ListingWalk::default();
        let e = walk.next_page("d/", &first);
        // The twins of "a" and "a-1" sort before "d/b", so this page would hold them; those
        // of "b" ("d/b/", "d/b_$folder$") after it.
        assert_eq!(
            names(&e.entries),
            vec![("a".into(), NodeKind::File), ("a-1".into(), NodeKind::File)]
        );
        assert_eq!(walk.held(), 1);
        let mut second = page(&["d/c"], &["d/b/"]);
        second.next = Some("t2".into());
        let e = walk.next_page("d/", &second);
        assert_eq!(
            names(&e.entries),
            vec![("b".into(), NodeKind::Dir)],
            "'b' is a directory"
        );
        assert_eq!(walk.held(), 1, "'c' waits");
        let e = walk.next_page("d/", &page(&["d/c_$folder$", "d/x"], &["d/c/"]));
        assert_eq!(
            names(&e.entries),
            vec![("c".into(), NodeKind::Dir), ("x".into(), NodeKind::File)]
        );
        assert_eq!(e.legacy_markers, ["c"]);
        assert_eq!(walk.held(), 0);
        // A marker of a name given out on an earlier page.
        let mut w = ListingWalk::default();
        let mut p1 = page(&[], &["d/e/"]);
        p1.next = Some("t".into());
        assert_eq!(
            names(&w.next_page("d/", &p1).entries),
            vec![("e".into(), NodeKind::Dir)]
        );
        let e = w.next_page("d/", &page(&["d/e_$folder$"], &[]));
        assert!(e.entries.is_empty());
        assert_eq!(e.legacy_markers, ["e"]);
    }

    /// Only an empty `name_$folder$` object is a marker; one with content is a file.
    #[test]
    fn a_file_named_like_a_legacy_marker_is_a_file() {
        let mut p = page(&["d/notes_$folder$"], &[]);
        p.objects[0].size = 12;
        let e = ListingWalk::default().next_page("d/", &p);
        assert_eq!(names(&e.entries), vec![("notes_$folder$".into(), NodeKind::File)]);
        assert!(e.legacy_markers.is_empty());
    }
}
