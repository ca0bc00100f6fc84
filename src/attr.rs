//! POSIX attributes and the object-metadata dialect that stores them.
//!
//! Reading: mode, uid, gid and times come from user metadata in the priority order of
//! s3fs/ossfs (`mode`, `uid`, `gid`, `mtime`, `ctime`, `atime`), s3sync (`permissions`, `owner`,
//! `group`) and GCS (`goog-reserved-posix-*`), falling back to `Last-Modified` and to the mount's
//! defaults. Writing: the s3fs dialect exactly (decimal `st_mode` with the type bits, decimal ids,
//! times as `sec.nnnnnnnnn`). Presentation: [`Presentation`] applies the mount's `uid=`, `gid=`,
//! `umask=`, `mp_umask=` overrides to what is stored, without changing what is stored.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Type bits of `st_mode`.
pub const S_IFMT: u32 = 0o170000;
/// Directory.
pub const S_IFDIR: u32 = 0o040000;
/// Regular file.
pub const S_IFREG: u32 = 0o100000;
/// Symbolic link.
pub const S_IFLNK: u32 = 0o120000;
/// Named pipe.
pub const S_IFIFO: u32 = 0o010000;
/// Socket.
pub const S_IFSOCK: u32 = 0o140000;
/// Character device.
pub const S_IFCHR: u32 = 0o020000;
/// Block device.
pub const S_IFBLK: u32 = 0o060000;

/// User-metadata names rossfs writes (s3fs dialect).
pub mod keys {
    /// `st_mode`, decimal, with type bits.
    pub const MODE: &str = "mode";
    /// Owner uid, decimal.
    pub const UID: &str = "uid";
    /// Owner gid, decimal.
    pub const GID: &str = "gid";
    /// Modification time, `sec.nnnnnnnnn`.
    pub const MTIME: &str = "mtime";
    /// Status change time, `sec.nnnnnnnnn`.
    pub const CTIME: &str = "ctime";
    /// Access time, `sec.nnnnnnnnn`.
    pub const ATIME: &str = "atime";
    /// Device number of a device node, decimal.
    pub const RDEV: &str = "rdev";
    /// Every key this module reads or writes; other user metadata is carried over untouched.
    pub const ALL_POSIX: &[&str] = &[
        MODE,
        UID,
        GID,
        MTIME,
        CTIME,
        ATIME,
        "permissions",
        "owner",
        "group",
        "goog-reserved-posix-mode",
        "goog-reserved-posix-uid",
        "goog-reserved-posix-gid",
        "goog-reserved-file-mtime",
    ];
}

/// What kind of inode an object is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NodeKind {
    /// Regular file.
    File,
    /// Directory (explicit `dir/` object, directory content type or mode, or implicit prefix).
    Dir,
    /// Symbolic link (mode with `S_IFLNK`, target in the body).
    Symlink,
    /// Named pipe, stored as an empty object carrying its mode.
    Fifo,
    /// Unix socket, stored as an empty object carrying its mode.
    Socket,
    /// Character device (mode and `rdev` metadata).
    CharDevice,
    /// Block device (mode and `rdev` metadata).
    BlockDevice,
}

impl NodeKind {
    /// The `st_mode` type bits.
    pub fn type_bits(self) -> u32 {
        match self {
            NodeKind::File => S_IFREG,
            NodeKind::Dir => S_IFDIR,
            NodeKind::Symlink => S_IFLNK,
            NodeKind::Fifo => S_IFIFO,
            NodeKind::Socket => S_IFSOCK,
            NodeKind::CharDevice => S_IFCHR,
            NodeKind::BlockDevice => S_IFBLK,
        }
    }

    /// The kind for `st_mode` type bits, if it is one rossfs can store.
    pub fn from_type_bits(mode: u32) -> Option<Self> {
        match mode & S_IFMT {
            S_IFREG => Some(NodeKind::File),
            S_IFDIR => Some(NodeKind::Dir),
            S_IFLNK => Some(NodeKind::Symlink),
            S_IFIFO => Some(NodeKind::Fifo),
            S_IFSOCK => Some(NodeKind::Socket),
            S_IFCHR => Some(NodeKind::CharDevice),
            S_IFBLK => Some(NodeKind::BlockDevice),
            _ => None,
        }
    }
}

/// Attributes of one inode as stored (before the mount's presentation overrides).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attributes {
    /// Kind of inode.
    pub kind: NodeKind,
    /// Permission bits including setuid/setgid/sticky (`0o7777` mask).
    pub perm: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Size in bytes.
    pub size: u64,
    /// Last access.
    pub atime: SystemTime,
    /// Last modification.
    pub mtime: SystemTime,
    /// Last status change.
    pub ctime: SystemTime,
    /// Device number (device nodes only).
    pub rdev: u32,
}

/// POSIX values found in an object's user metadata; `None` where nothing usable was found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoredPosix {
    /// Full `st_mode` (type bits may be missing: 0).
    pub mode: Option<u32>,
    /// Owner.
    pub uid: Option<u32>,
    /// Group.
    pub gid: Option<u32>,
    /// Modification time.
    pub mtime: Option<SystemTime>,
    /// Change time.
    pub ctime: Option<SystemTime>,
    /// Access time.
    pub atime: Option<SystemTime>,
    /// Device number.
    pub rdev: Option<u32>,
}

/// Parses an integer the way C's `strtol(s, 0)` does: `0x` hex, leading `0` octal, else decimal.
pub fn parse_base0(s: &str) -> Option<u64> {
    let s = s.trim();
    let s = s.strip_prefix('+').unwrap_or(s);
    if let Some(hex) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        u64::from_str_radix(hex, 16).ok()
    } else if s.len() > 1 && s.starts_with('0') {
        u64::from_str_radix(&s[1..], 8).ok()
    } else {
        s.parse().ok()
    }
}

/// Parses `sec` or `sec.fraction` (a real decimal fraction: `.5` is half a second).
pub fn parse_time(s: &str) -> Option<SystemTime> {
    let s = s.trim();
    let (secs, frac) = match s.split_once('.') {
        Some((a, b)) => (a, b),
        None => (s, ""),
    };
    let negative = secs.starts_with('-');
    let secs: i64 = secs.parse().ok()?;
    let mut nanos: u64 = 0;
    if !frac.is_empty() {
        if !frac.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let digits: String = frac.chars().chain(std::iter::repeat('0')).take(9).collect();
        nanos = digits.parse().ok()?;
    }
    if negative || secs < 0 {
        let back = Duration::from_secs(secs.unsigned_abs())
            - Duration::from_nanos(nanos).min(Duration::from_secs(secs.unsigned_abs()));
        return UNIX_EPOCH.checked_sub(back);
    }
    UNIX_EPOCH.checked_add(Duration::new(secs as u64, nanos as u32))
}

/// Formats a time as `sec.nnnnnnnnn`, the form rossfs writes.
pub fn format_time(t: SystemTime) -> String {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => format!("{}.{:09}", d.as_secs(), d.subsec_nanos()),
        Err(e) => {
            let d = e.duration();
            if d.subsec_nanos() == 0 {
                format!("-{}.000000000", d.as_secs())
            } else {
                format!("-{}.{:09}", d.as_secs() + 1, 1_000_000_000 - d.subsec_nanos())
            }
        }
    }
}

/// Alias names other tools also use for their own purposes (a user name, a permission text):
/// taken as POSIX values only when they parse as such, and otherwise left alone (no warning,
/// carried over as the tool's metadata).
const LOOSE_ALIASES: &[&str] = &["permissions", "owner", "group"];

/// Whether the loose alias `name` holds a value this module reads (see [`LOOSE_ALIASES`]).
fn loose_alias_parses(name: &str, value: &str) -> bool {
    match name {
        "permissions" => parse_base0(value).is_some_and(|m| m <= 0o177777),
        _ => value.trim().parse::<u32>().is_ok(),
    }
}

fn first<'a>(meta: &'a HashMap<String, String>, names: &[&'a str]) -> Option<(&'a str, &'a str)> {
    names.iter().find_map(|n| meta.get(*n).map(|v| (*n, v.as_str())))
}

/// Reads the POSIX values from user metadata. An unparseable value is skipped with a warning
/// naming the key, so the next alias or the default applies; it never fails the lookup.
pub fn parse_stored(meta: &HashMap<String, String>, key: &str) -> StoredPosix {
    let warn = |name: &str, value: &str| {
        if !LOOSE_ALIASES.contains(&name) {
            tracing::warn!(object = key, "ignoring unparseable metadata {name}={value:?}");
        }
    };
    let mut out = StoredPosix::default();
    for name in ["mode", "permissions", "goog-reserved-posix-mode"] {
        if let Some(v) = meta.get(name) {
            let parsed = if name == "goog-reserved-posix-mode" {
                u32::from_str_radix(v.trim(), 8).ok()
            } else {
                parse_base0(v).and_then(|m| u32::try_from(m).ok())
            };
            match parsed {
                Some(m) if m <= 0o177777 => {
                    out.mode = Some(m);
                    break;
                }
                _ => warn(name, v),
            }
        }
    }
    for (slot, names) in [
        (&mut out.uid, ["uid", "owner", "goog-reserved-posix-uid"]),
        (&mut out.gid, ["gid", "group", "goog-reserved-posix-gid"]),
    ] {
        for name in names {
            if let Some(v) = meta.get(name) {
                match v.trim().parse::<u32>() {
                    Ok(id) => {
                        *slot = Some(id);
                        break;
                    }
                    Err(_) => warn(name, v),
                }
            }
        }
    }
    if let Some(v) = meta.get(keys::RDEV) {
        match v.trim().parse::<u32>() {
            Ok(r) => out.rdev = Some(r),
            Err(_) => warn(keys::RDEV, v),
        }
    }
    for (slot, names) in [
        (&mut out.mtime, &["mtime", "goog-reserved-file-mtime"][..]),
        (&mut out.ctime, &["ctime"][..]),
        (&mut out.atime, &["atime"][..]),
    ] {
        if let Some((name, v)) = first(meta, names) {
            match parse_time(v) {
                Some(t) => *slot = Some(t),
                None => warn(name, v),
            }
        }
    }
    out
}

/// `perm` without the set-ID bits Linux clears when a caller without `CAP_FSETID` writes to,
/// truncates or chowns a file: the set-user-ID bit always; the set-group-ID bit if the group
/// may execute, and also without group execute (where it means mandatory locking) if the
/// caller is not in the file's group. `in_group` says whether it is, and is asked only in that
/// last case (set-group-ID without group execute).
pub fn without_setid(perm: u32, in_group: impl FnOnce() -> bool) -> u32 {
    let mut perm = perm & !0o4000;
    if perm & 0o2000 != 0 && (perm & 0o010 != 0 || !in_group()) {
        perm &= !0o2000;
    }
    perm
}

/// Whether the thread `pid`, whose filesystem uid and gid are `fsuid` and `fsgid`, is in group
/// `gid`: its own gid or one of the supplementary groups `/proc/<pid>/status` lists. A thread
/// procfs does not show, or shows with other ids (a pid of another pid namespace: FUSE reports
/// pids as the mounter sees them, pid 0 for a thread it cannot see), counts by its gid alone.
pub fn process_in_group(pid: u32, fsuid: u32, fsgid: u32, gid: u32) -> bool {
    if fsgid == gid {
        return true;
    }
    if pid == 0 {
        return false;
    }
    std::fs::read_to_string(format!("/proc/{pid}/status")).is_ok_and(|status| {
        status_is_of(&status, fsuid, fsgid) && supplementary_groups(&status).contains(&gid)
    })
}

/// Whether a `/proc/<pid>/status` text is of a thread with these filesystem ids (the fourth
/// number of its `Uid:` and `Gid:` lines).
fn status_is_of(status: &str, fsuid: u32, fsgid: u32) -> bool {
    let fs_id = |prefix: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(prefix))
            .and_then(|ids| ids.split_whitespace().nth(3))
            .and_then(|id| id.parse::<u32>().ok())
    };
    fs_id("Uid:") == Some(fsuid) && fs_id("Gid:") == Some(fsgid)
}

/// The `Groups:` line of a `/proc/<pid>/status` text.
fn supplementary_groups(status: &str) -> Vec<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Groups:"))
        .map(|groups| groups.split_whitespace().filter_map(|g| g.parse().ok()).collect())
        .unwrap_or_default()
}

/// The s3fs-dialect metadata for `attrs`.
pub fn posix_metadata(attrs: &Attributes) -> HashMap<String, String> {
    let mut m = HashMap::new();
    m.insert(
        keys::MODE.into(),
        (attrs.kind.type_bits() | (attrs.perm & 0o7777)).to_string(),
    );
    m.insert(keys::UID.into(), attrs.uid.to_string());
    m.insert(keys::GID.into(), attrs.gid.to_string());
    m.insert(keys::MTIME.into(), format_time(attrs.mtime));
    m.insert(keys::CTIME.into(), format_time(attrs.ctime));
    // Read back as the mtime when absent (see `Presentation::from_object`).
    if attrs.atime != attrs.mtime {
        m.insert(keys::ATIME.into(), format_time(attrs.atime));
    }
    if matches!(attrs.kind, NodeKind::CharDevice | NodeKind::BlockDevice) {
        m.insert(keys::RDEV.into(), attrs.rdev.to_string());
    }
    m
}

/// Removes the time keys (`mtime`, `ctime`, `atime`) from POSIX metadata: the object's
/// Last-Modified then stands for them, as for objects written by other tools.
pub fn drop_times(meta: &mut HashMap<String, String>) {
    meta.remove(keys::MTIME);
    meta.remove(keys::CTIME);
    meta.remove(keys::ATIME);
}

/// User metadata other than the POSIX keys, to carry over when an object is rewritten (a
/// loose alias whose value is not a POSIX value is another tool's, and is carried over too).
pub fn foreign_metadata(meta: &HashMap<String, String>) -> HashMap<String, String> {
    meta.iter()
        .filter(|(k, v)| {
            !keys::ALL_POSIX.contains(&k.as_str())
                || (LOOSE_ALIASES.contains(&k.as_str()) && !loose_alias_parses(k, v))
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Content types that mark a directory object.
pub fn is_directory_content_type(ct: Option<&str>) -> bool {
    matches!(
        ct.map(|c| c.split(';').next().unwrap_or("").trim()),
        Some("application/x-directory") | Some("httpd/unix-directory")
    )
}

/// The kind of an object found by HEAD of `key` (no trailing slash): a directory when its mode
/// says so or it has a directory content type, a symlink when its mode says so, else a file.
pub fn kind_of_object(stored: &StoredPosix, content_type: Option<&str>) -> NodeKind {
    match stored.mode.and_then(NodeKind::from_type_bits) {
        Some(kind) => kind,
        None if is_directory_content_type(content_type) => NodeKind::Dir,
        None => NodeKind::File,
    }
}

/// Defaults and overrides that turn stored attributes into what the mount shows.
#[derive(Clone, Debug)]
pub struct Presentation {
    /// Owner of objects without uid metadata (the mounting user).
    pub default_uid: u32,
    /// Group of objects without gid metadata (the mounting user's group).
    pub default_gid: u32,
    /// Permission bits of files without mode metadata.
    pub file_mode: u32,
    /// Permission bits of directories without mode metadata.
    pub dir_mode: u32,
    /// `uid=`: every inode shown as owned by it.
    pub force_uid: Option<u32>,
    /// `gid=`: every inode shown with this group.
    pub force_gid: Option<u32>,
    /// `umask=`: bits shown are `0777 & !umask` (plus the special bits stored).
    pub umask: Option<u32>,
    /// Mode of the mount root: `0777 & !mp_umask` with `allow_other`, else 0700.
    pub root_perm: u32,
}

impl Presentation {
    /// Builds stored attributes of an object from what HEAD returned.
    pub fn from_object(
        &self,
        kind: NodeKind,
        stored: &StoredPosix,
        size: u64,
        last_modified: Option<SystemTime>,
        fallback_time: SystemTime,
    ) -> Attributes {
        let lm = last_modified.unwrap_or(fallback_time);
        let perm = match stored.mode {
            Some(m) => m & 0o7777,
            None if kind == NodeKind::Dir => self.dir_mode,
            None if kind == NodeKind::Symlink => 0o777,
            None => self.file_mode,
        };
        let rdev = stored.rdev.unwrap_or(0);
        let mtime = stored.mtime.unwrap_or(lm);
        Attributes {
            kind,
            perm,
            uid: stored.uid.unwrap_or(self.default_uid),
            gid: stored.gid.unwrap_or(self.default_gid),
            size: if kind == NodeKind::Dir { 0 } else { size },
            atime: stored.atime.unwrap_or(mtime),
            mtime,
            ctime: stored.ctime.unwrap_or(lm),
            rdev,
        }
    }

    /// Attributes of a directory that exists only as a prefix of other keys.
    pub fn implicit_dir(&self, mount_time: SystemTime) -> Attributes {
        Attributes {
            kind: NodeKind::Dir,
            perm: self.dir_mode,
            uid: self.default_uid,
            gid: self.default_gid,
            size: 0,
            atime: mount_time,
            mtime: mount_time,
            ctime: mount_time,
            rdev: 0,
        }
    }

    /// Applies the overrides: `(perm, uid, gid)` as shown to the kernel.
    pub fn shown(&self, attrs: &Attributes, is_root: bool) -> (u32, u32, u32) {
        let uid = self.force_uid.unwrap_or(attrs.uid);
        let gid = self.force_gid.unwrap_or(attrs.gid);
        if is_root {
            // Starts as `root_perm`; a chmod of the root changes it for the mount's life.
            return (attrs.perm, uid, gid);
        }
        let perm = match (self.umask, attrs.kind) {
            (_, NodeKind::Symlink) => 0o777,
            (Some(mask), _) => (attrs.perm & 0o7000) | (0o777 & !mask),
            (None, _) => attrs.perm,
        };
        (perm, uid, gid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn base0_integers() {
        assert_eq!(parse_base0("33188"), Some(33188));
        assert_eq!(parse_base0("0100644"), Some(0o100644));
        assert_eq!(parse_base0("0x81a4"), Some(0x81a4));
        assert_eq!(parse_base0("0"), Some(0));
        assert_eq!(parse_base0("abc"), None);
    }

    #[test]
    fn times_are_real_fractions() {
        let t = parse_time("1700000000.5").unwrap();
        assert_eq!(
            t.duration_since(UNIX_EPOCH).unwrap(),
            Duration::new(1_700_000_000, 500_000_000)
        );
        let t = parse_time("1700000000").unwrap();
        assert_eq!(
            t.duration_since(UNIX_EPOCH).unwrap(),
            Duration::from_secs(1_700_000_000)
        );
        let t = parse_time("1700000000.000000001").unwrap();
        assert_eq!(format_time(t), "1700000000.000000001");
        assert_eq!(parse_time("12x"), None);
        assert_eq!(parse_time("1.2.3"), None);
    }

    #[test]
    fn s3fs_file_and_dir_modes() {
        let s = parse_stored(&meta(&[("mode", "33188"), ("uid", "1000"), ("gid", "1001")]), "k");
        assert_eq!(s.mode, Some(0o100644));
        assert_eq!((s.uid, s.gid), (Some(1000), Some(1001)));
        assert_eq!(kind_of_object(&s, None), NodeKind::File);
        let d = parse_stored(&meta(&[("mode", "16877")]), "k");
        assert_eq!(kind_of_object(&d, None), NodeKind::Dir);
        let l = parse_stored(&meta(&[("mode", "41471")]), "k");
        assert_eq!(kind_of_object(&l, None), NodeKind::Symlink);
    }

    #[test]
    fn alias_priority_and_fallbacks() {
        // s3sync names are used only when the s3fs ones are absent.
        let s = parse_stored(
            &meta(&[("permissions", "33261"), ("owner", "5"), ("group", "6")]),
            "k",
        );
        assert_eq!((s.mode, s.uid, s.gid), (Some(0o100755), Some(5), Some(6)));
        let s = parse_stored(&meta(&[("mode", "33188"), ("permissions", "33261")]), "k");
        assert_eq!(s.mode, Some(0o100644));
        // GCS mode is octal.
        let s = parse_stored(
            &meta(&[
                ("goog-reserved-posix-mode", "755"),
                ("goog-reserved-posix-uid", "7"),
            ]),
            "k",
        );
        assert_eq!((s.mode, s.uid), (Some(0o755), Some(7)));
        // A bad value falls through to the next alias.
        let s = parse_stored(
            &meta(&[("mode", "garbage"), ("permissions", "33188"), ("uid", "-1")]),
            "k",
        );
        assert_eq!((s.mode, s.uid), (Some(0o100644), None));
        // rclone's mtime.
        let s = parse_stored(&meta(&[("mtime", "1700000000.25")]), "k");
        assert_eq!(
            s.mtime.unwrap().duration_since(UNIX_EPOCH).unwrap(),
            Duration::new(1_700_000_000, 250_000_000)
        );
    }

    #[test]
    fn directory_content_types() {
        assert!(is_directory_content_type(Some("application/x-directory")));
        assert!(is_directory_content_type(Some(
            "httpd/unix-directory; charset=UTF-8"
        )));
        assert!(!is_directory_content_type(Some("application/octet-stream")));
        assert_eq!(
            kind_of_object(&StoredPosix::default(), Some("application/x-directory")),
            NodeKind::Dir
        );
    }

    fn pres() -> Presentation {
        Presentation {
            default_uid: 0,
            default_gid: 0,
            file_mode: 0o640,
            dir_mode: 0o750,
            force_uid: None,
            force_gid: None,
            umask: None,
            root_perm: 0o700,
        }
    }

    #[test]
    fn round_trip_through_s3fs_dialect() {
        let t = UNIX_EPOCH + Duration::new(1_600_000_000, 123_456_789);
        let a = Attributes {
            kind: NodeKind::File,
            perm: 0o4755,
            uid: 1000,
            gid: 3000,
            size: 5,
            atime: t,
            mtime: t,
            ctime: t,
            rdev: 0,
        };
        let m = posix_metadata(&a);
        assert_eq!(m["mode"], (0o104755u32).to_string());
        assert_eq!(m["mtime"], "1600000000.123456789");
        let stored = parse_stored(&m, "k");
        let back = pres().from_object(kind_of_object(&stored, None), &stored, 5, None, UNIX_EPOCH);
        assert_eq!(back, a);
        // An atime of its own is stored too (and only then).
        assert!(!m.contains_key("atime"));
        let read = Attributes {
            atime: t + Duration::from_secs(60),
            ..a
        };
        let m = posix_metadata(&read);
        assert_eq!(m["atime"], "1600000060.123456789");
        let stored = parse_stored(&m, "k");
        let back = pres().from_object(kind_of_object(&stored, None), &stored, 5, None, UNIX_EPOCH);
        assert_eq!(back, read);
    }

    #[test]
    fn other_tools_owner_group_and_permissions_are_theirs_unless_numeric() {
        let meta: HashMap<String, String> = [
            ("owner", "alice"),
            ("group", "1000"),
            ("permissions", "rw-r--r--"),
            ("project", "x"),
            ("mode", "33188"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let stored = parse_stored(&meta, "k");
        assert_eq!(
            (stored.uid, stored.gid, stored.mode),
            (None, Some(1000), Some(0o100644))
        );
        let mut kept: Vec<_> = foreign_metadata(&meta).into_iter().collect();
        kept.sort();
        let want = [("owner", "alice"), ("permissions", "rw-r--r--"), ("project", "x")];
        assert_eq!(kept, want.map(|(k, v)| (k.to_string(), v.to_string())));
    }

    #[test]
    fn defaults_without_metadata_and_overrides() {
        let p = pres();
        let f = p.from_object(
            NodeKind::File,
            &StoredPosix::default(),
            3,
            Some(UNIX_EPOCH),
            UNIX_EPOCH,
        );
        assert_eq!(f.perm, 0o640);
        let d = p.from_object(NodeKind::Dir, &StoredPosix::default(), 0, None, UNIX_EPOCH);
        assert_eq!(d.perm, 0o750);
        let mut p2 = pres();
        p2.umask = Some(0o022);
        p2.force_uid = Some(1000);
        assert_eq!(p2.shown(&f, false), (0o755, 1000, 0));
        // The root shows its own bits (root_perm at mount, a chmod after), whatever umask=.
        let root = Attributes {
            perm: p2.root_perm,
            ..d
        };
        assert_eq!(p2.shown(&root, true), (0o700, 1000, 0));
    }

    #[test]
    fn foreign_metadata_is_kept_apart() {
        let m = meta(&[("mode", "33188"), ("xattr", "%7B%7D"), ("custom", "v")]);
        let f = foreign_metadata(&m);
        assert_eq!(f.len(), 2);
        assert!(f.contains_key("xattr") && f.contains_key("custom"));
    }

    #[test]
    fn set_id_bits_go_as_on_linux() {
        let never = || -> bool { panic!("group membership asked where it does not matter") };
        assert_eq!(without_setid(0o4755, never), 0o755);
        assert_eq!(without_setid(0o6755, never), 0o755);
        assert_eq!(without_setid(0o2710, never), 0o710);
        assert_eq!(without_setid(0o644, never), 0o644);
        // Set-group-ID without group execute: only for a caller outside the group.
        assert_eq!(without_setid(0o6745, || true), 0o2745);
        assert_eq!(without_setid(0o6745, || false), 0o745);
        assert_eq!(without_setid(0o2700, || false), 0o700);
    }

    #[test]
    fn supplementary_groups_come_from_proc_status() {
        let status = "Name:\tbash\nUid:\t1000\t1000\t1000\t1000\nGid:\t100\t100\t100\t100\n\
                      FDSize:\t256\nGroups:\t4 24 27 1001 \nNStgid:\t7\n";
        assert_eq!(supplementary_groups(status), vec![4, 24, 27, 1001]);
        assert!(status_is_of(status, 1000, 100));
        assert!(!status_is_of(status, 1000, 101), "another thread's status");
        assert!(!status_is_of("Name:\tx\n", 0, 0));
        assert!(supplementary_groups("Name:\tx\nGroups:\t\n").is_empty());
        assert!(supplementary_groups("").is_empty());
        // This process: its own gid, and nothing it is not in.
        let me = std::process::id();
        // SAFETY: geteuid and getegid have no preconditions.
        let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
        assert!(process_in_group(me, uid, gid, gid));
        assert!(!process_in_group(me, uid, gid, 4_000_000_000));
        assert!(!process_in_group(0, uid, gid, 4_000_000_000));
    }
}
