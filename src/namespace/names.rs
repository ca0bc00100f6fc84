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

/// One entry of a directory listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListedEntry {
    /// Name in the directory.
    pub name: OsString,
    /// Kind as far as the listing tells (a file whose metadata says "directory" shows as a file
    /// here; lookup corrects it).
    pub kind: NodeKind,
    /// An s3fs `name_$folder$` marker of this name exists (alone, or beside keys under it).
    pub legacy_marker: bool,
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

/// Turns one delimited listing page of `prefix` (ending in `/` or empty) into entries, skipping
/// the directory's own marker and names POSIX cannot hold. `seen` de-duplicates across pages:
/// when a file and a directory share a name the directory wins within a page, and the first
/// one listed wins across pages.
pub fn entries_from_page(prefix: &str, page: &ListPage, seen: &mut HashSet<OsString>) -> Vec<ListedEntry> {
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
    let mut files: Vec<(String, NodeKind)> = Vec::new();
    for o in &page.objects {
        let Some(rest) = o.key.strip_prefix(prefix) else {
            continue;
        };
        if rest.is_empty() {
            continue; // the directory's own marker
        }
        if let Some(dir) = rest.strip_suffix(FOLDER_SUFFIX) {
            if is_presentable(dir) {
                dirs.push((dir.to_string(), true));
            }
            continue;
        }
        if is_presentable(rest) {
            files.push((rest.to_string(), NodeKind::File));
        } else {
            warn_once(&o.key, "its name is empty, '.', '..' or longer than 255 bytes");
        }
    }
    // One entry per name, flagged if a legacy marker of that name exists (beside a prefix, it
    // is the marker rmdir and rename must remove).
    dirs.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)));
    dirs.dedup_by(|later, kept| {
        if later.0 == kept.0 {
            kept.1 |= later.1;
            true
        } else {
            false
        }
    });
    let dir_set: HashSet<&str> = dirs.iter().map(|d| d.0.as_str()).collect();
    let mut out = Vec::with_capacity(dirs.len() + files.len());
    for (name, kind) in files {
        if dir_set.contains(name.as_str()) {
            warn_once(
                &format!("{prefix}{name}"),
                "a directory of the same name exists; showing the directory",
            );
            continue;
        }
        if seen.insert(OsString::from(&name)) {
            out.push(ListedEntry {
                name: name.into(),
                kind,
                legacy_marker: false,
            });
        }
    }
    for (name, legacy_marker) in dirs {
        if seen.insert(OsString::from(&name)) {
            out.push(ListedEntry {
                name: name.into(),
                kind: NodeKind::Dir,
                legacy_marker,
            });
        }
    }
    out
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
        let mut seen = HashSet::new();
        let e = entries_from_page("d/", &p, &mut seen);
        assert_eq!(
            names(&e),
            vec![
                ("a.txt".into(), NodeKind::File),
                ("clash".into(), NodeKind::Dir),
                ("legacy".into(), NodeKind::Dir),
                ("sub".into(), NodeKind::Dir),
            ]
        );
        let legacy: Vec<_> = e
            .iter()
            .filter(|x| x.legacy_marker)
            .map(|x| x.name.clone())
            .collect();
        assert_eq!(
            legacy,
            ["legacy", "sub"],
            "a legacy marker beside a prefix is kept in mind"
        );
        // A second page repeating a name does not list it twice.
        let e2 = entries_from_page("d/", &page(&["d/a.txt"], &[]), &mut seen);
        assert!(e2.is_empty());
    }

    #[test]
    fn root_listing_has_no_prefix() {
        let mut seen = HashSet::new();
        let e = entries_from_page("", &page(&["top"], &["dir/"]), &mut seen);
        assert_eq!(
            names(&e),
            vec![("dir".into(), NodeKind::Dir), ("top".into(), NodeKind::File)]
        );
    }
}
