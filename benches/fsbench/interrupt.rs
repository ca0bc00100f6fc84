//! Cleanup after an interrupted run (Ctrl-C, `kill`, a closed terminal). The run's scratch
//! directories hold the local Garage's data (gigabytes after W1, W2 and W8), the peers' mounts
//! and caches, and the W7 tree. Each is made with [`scratch_dir`], which also records it; on
//! SIGINT, SIGTERM or SIGHUP the mounts below those directories are detached, the directories
//! removed, and the process exits. The server and the mount daemons die with it (they are
//! started with `PR_SET_PDEATHSIG`).

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Scratch directories of this run, to remove if it is interrupted.
static SCRATCH: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// A new temporary directory whose name starts with `prefix`: removed when dropped, as any
/// `TempDir`, and also when the run is interrupted.
pub fn scratch_dir(prefix: &str) -> Result<tempfile::TempDir, String> {
    let dir =
        tempfile::TempDir::with_prefix(prefix).map_err(|e| format!("create a temporary directory: {e}"))?;
    SCRATCH
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(dir.path().to_path_buf());
    Ok(dir)
}

/// Makes SIGINT, SIGTERM and SIGHUP clean up ([`clean_up`]) and exit with 128 + the signal.
/// Call it first thing in `main`, before any other thread starts: the signals are blocked in
/// the calling thread, every thread started later inherits that, and one thread waits for
/// them. (Child processes start with no signal blocked: the standard library resets the mask.)
pub fn install() -> Result<(), String> {
    // SAFETY: plain signal-set manipulation on a local set.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::sigaddset(&mut set, sig);
        }
        let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        if rc != 0 {
            return Err(format!(
                "block signals: {}",
                std::io::Error::from_raw_os_error(rc)
            ));
        }
        set
    };
    std::thread::Builder::new()
        .name("fsbench-signals".into())
        .spawn(move || {
            let mut sig = 0;
            // SAFETY: waits for one of the signals of `set`, blocked in every thread.
            let rc = unsafe { libc::sigwait(&set, &mut sig) };
            if rc != 0 {
                return;
            }
            // Not eprintln!: after a hangup stderr fails (EIO, EPIPE), which must not stop
            // the cleanup.
            let _ = writeln!(
                std::io::stderr(),
                "fsbench: interrupted by signal {sig}: unmounting and removing the run's scratch directories"
            );
            let dirs = SCRATCH.lock().unwrap_or_else(|p| p.into_inner()).clone();
            clean_up(&dirs);
            std::process::exit(128 + sig);
        })
        .map(drop)
        .map_err(|e| format!("start the signal thread: {e}"))
}

/// Detaches every mount below `dirs` (deepest first), then removes the directories without
/// ever walking into a mount (one that appeared meanwhile stays, with its mount point), so
/// nothing is deleted through a mount from a bucket.
pub fn clean_up(dirs: &[PathBuf]) {
    let mut mounts: Vec<PathBuf> = mount_points()
        .into_iter()
        .filter(|m| dirs.iter().any(|d| m.starts_with(d)))
        .collect();
    mounts.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
    for m in &mounts {
        let status = std::process::Command::new("umount").arg("-l").arg(m).status();
        if !matches!(status, Ok(s) if s.success()) {
            let _ = writeln!(
                std::io::stderr(),
                "fsbench: umount -l {}: {status:?}",
                m.display()
            );
        }
    }
    for d in dirs {
        if let Ok(md) = std::fs::symlink_metadata(d) {
            remove_on_one_filesystem(d, md.dev());
            let _ = std::fs::remove_dir(d);
        }
    }
}

/// Removes what `dir` holds on the filesystem `dev`, skipping directories on any other (a
/// mount), which are neither entered nor removed.
fn remove_on_one_filesystem(dir: &Path, dev: u64) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        match std::fs::symlink_metadata(&path) {
            Ok(md) if md.is_dir() => {
                if md.dev() == dev {
                    remove_on_one_filesystem(&path, dev);
                    let _ = std::fs::remove_dir(&path);
                }
            }
            Ok(_) => {
                let _ = std::fs::remove_file(&path);
            }
            Err(_) => {}
        }
    }
}

/// Mount points of this mount namespace, unescaped (`\040` for a space and the like).
fn mount_points() -> Vec<PathBuf> {
    let Ok(text) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|field| PathBuf::from(unescape(field)))
        .collect()
}

/// Whether `path` is a mount point of this mount namespace.
pub fn is_mount_point(path: &Path) -> bool {
    mount_points().iter().any(|m| m == path)
}

/// Undoes the kernel's octal escapes in a mountinfo path.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match (bytes[i], octal) {
            (b'\\', Some(d)) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
