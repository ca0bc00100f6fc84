//! Running a mount: mountpoint checks, the preflight request, daemonizing, the FUSE session,
//! and a clean shutdown on unmount or SIGTERM/SIGINT.
//!
//! Order matters for honest errors: the mountpoint is checked and (in the daemon) the bucket is
//! probed with one request before the command returns, so `rossfs` exits non-zero with one line
//! naming the cause and the fix. Without `-f` the command re-executes itself as a detached
//! daemon and exits 0 only after the daemon reports that the mount answers; the daemon's
//! failure text travels back through a pipe and is printed by the waiting parent.

use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use fuser::{Config, MountOption, Session, SessionACL};

use crate::filesystem::S3Filesystem;
use crate::fuse_adapter::{FuseAdapter, KernelNotifier};
use crate::logging::{self, LogTarget};
use crate::options::{MountOptions, MountSource};
use crate::store::ObjectStore;

/// Environment variable through which a daemon child learns its readiness pipe.
const READY_FD_ENV: &str = "ROSSFS_READY_FD";

/// Everything needed to run one mount.
#[derive(Debug, Clone)]
pub struct MountRequest {
    /// The source as typed (`bucket:/prefix`), shown in /proc/mounts.
    pub source_spec: String,
    /// Bucket and prefix.
    pub source: MountSource,
    /// Where to mount.
    pub mountpoint: PathBuf,
    /// Parsed options.
    pub options: MountOptions,
    /// Stay in the foreground (`-f`).
    pub foreground: bool,
}

/// Undoes the escaping of /proc/self/mountinfo (`\040` for a space, ...).
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The filesystem type and source mounted exactly at `path`, if any.
pub fn mounted_at(path: &Path) -> Option<(String, String)> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let want = path.to_string_lossy();
    let mut found = None;
    for line in text.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(sep) = fields.iter().position(|f| *f == "-") else {
            continue;
        };
        if fields.len() < sep + 3 || fields.len() < 5 {
            continue;
        }
        if unescape_mountinfo(fields[4]) == want {
            found = Some((fields[sep + 1].to_string(), unescape_mountinfo(fields[sep + 2])));
        }
    }
    found
}

/// True if the filesystem mounted at `path` answers statfs (a dead FUSE daemon does not).
fn answers(path: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return true;
    };
    // SAFETY: statfs into a zeroed struct on a valid path.
    unsafe {
        let mut st: libc::statfs = std::mem::zeroed();
        libc::statfs(c.as_ptr(), &mut st) == 0
    }
}

/// Makes sure `cache_dir` is an existing directory that can hold staging files.
pub fn check_cache_dir(opts: &MountOptions) -> Result<(), String> {
    let Some(dir) = &opts.cache_dir else { return Ok(()) };
    if !dir.is_dir() {
        return Err(format!(
            "cache_dir {} is not an existing directory: create it (mkdir -p) or choose another",
            dir.display()
        ));
    }
    tempfile::tempfile_in(dir).map(drop).map_err(|e| {
        format!(
            "cache_dir {} cannot hold staging files: {e} (give a writable directory)",
            dir.display()
        )
    })
}

/// [`check_mountpoint`], given up after `timeout`: a mount at that path whose server hangs
/// (a stopped FUSE daemon, an unreachable NFS server) blocks every look at it.
pub fn check_mountpoint_within(path: &Path, nonempty: bool, timeout: Duration) -> Result<PathBuf, String> {
    let (tx, rx) = std::sync::mpsc::channel();
    let owned = path.to_path_buf();
    let spawned = std::thread::Builder::new()
        .name("mountpoint-check".into())
        .spawn(move || {
            let _ = tx.send(check_mountpoint(&owned, nonempty));
        });
    if let Err(e) = spawned {
        return Err(format!("cannot check mountpoint {}: {e}", path.display()));
    }
    // A thread still stuck in the kernel is left behind: the process exits on this error.
    rx.recv_timeout(timeout).unwrap_or_else(|_| {
        Err(format!(
            "mountpoint {shown} does not answer within {} s (mount_timeout=): a mount there hangs \
             (its FUSE daemon is stopped or stuck, or its server is unreachable); detach it with \
             'umount -l {shown}' and mount again",
            timeout.as_secs(),
            shown = path.display()
        ))
    })
}

/// Checks the mountpoint: exists, is a directory, is not a dead or live mount already, and is
/// empty unless `nonempty` (a mount hides what the directory holds, as s3fs and rclone warn).
/// Returns its canonical path.
pub fn check_mountpoint(path: &Path, nonempty: bool) -> Result<PathBuf, String> {
    let shown = path.display();
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) => {
            return Err(match e.raw_os_error() {
                Some(libc::ENOENT) => {
                    format!("mountpoint {shown} does not exist: create it with 'mkdir -p {shown}'")
                }
                Some(libc::ENOTCONN) | Some(libc::ECONNABORTED) => format!(
                    "mountpoint {shown} is a FUSE mount whose daemon is gone (transport endpoint is not \
                     connected): run 'fusermount3 -u {shown}' (or 'umount -l {shown}') and mount again"
                ),
                Some(libc::EACCES) => format!(
                "mountpoint {shown} cannot be accessed (permission denied): mount as a user who can enter it"
            ),
                _ => format!("mountpoint {shown} cannot be used: {e}"),
            })
        }
    };
    if !meta.is_dir() {
        return Err(format!(
            "mountpoint {shown} is not a directory: give an (empty) directory to mount on"
        ));
    }
    let canonical =
        std::fs::canonicalize(path).map_err(|e| format!("mountpoint {shown} cannot be resolved: {e}"))?;
    if let Some((fstype, source)) = mounted_at(&canonical) {
        if fstype == "autofs" {
            // An automount point (systemd's `x-systemd.automount`, autofs): its mount goes on
            // top of it, which is what it waits for. Listing it would wait for this very mount.
            return Ok(canonical);
        }
        if fstype.starts_with("fuse") && !answers(&canonical) {
            return Err(format!(
                "mountpoint {} is a {fstype} mount whose daemon is gone (transport endpoint is not \
                 connected): run 'fusermount3 -u {}' (or 'umount -l {}') and mount again",
                canonical.display(),
                canonical.display(),
                canonical.display()
            ));
        }
        return Err(format!(
            "mountpoint {} is already mounted ({fstype} from {source}): unmount it first ('umount {}') or choose another directory",
            canonical.display(),
            canonical.display()
        ));
    }
    // A directory this user cannot list is taken as it is.
    let has_entries = std::fs::read_dir(&canonical).is_ok_and(|mut d| d.next().is_some());
    if has_entries && !nonempty {
        return Err(format!(
            "mountpoint {} is not empty: what it holds would be hidden while the bucket is \
             mounted; empty it or choose another directory, or pass -o nonempty to mount over it",
            canonical.display()
        ));
    }
    Ok(canonical)
}

/// `MOUNTPOINT` given as `/dev/fd/N`: serve FUSE descriptor N, already opened and mounted by
/// a privileged parent (the Kubernetes node plugin, a test helper). `None` for a plain path.
pub fn handed_over_fd(mountpoint: &Path) -> Option<Result<RawFd, String>> {
    let n = mountpoint.to_str()?.strip_prefix("/dev/fd/")?;
    let fd: RawFd = match n.parse() {
        Ok(fd) if fd > 2 => fd,
        _ => {
            return Some(Err(format!(
                "'{}' is not a usable FUSE descriptor: give /dev/fd/N with N > 2",
                mountpoint.display()
            )))
        }
    };
    // SAFETY: F_GETFD only inspects the descriptor table.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Some(Err(format!(
            "descriptor {fd} is not open: the process that mounted /dev/fuse must pass it to rossfs without O_CLOEXEC"
        )));
    }
    Some(Ok(fd))
}

/// Reports the daemon's state to the waiting parent (no-op in the foreground).
struct Readiness {
    pipe: Option<std::fs::File>,
}

impl Readiness {
    fn from_env() -> Self {
        let fd = std::env::var(READY_FD_ENV)
            .ok()
            .and_then(|v| v.parse::<RawFd>().ok());
        std::env::remove_var(READY_FD_ENV);
        // SAFETY: the parent passed us this descriptor for our exclusive use.
        let pipe = fd
            .filter(|fd| *fd > 2)
            .map(|fd| unsafe { std::fs::File::from_raw_fd(fd) });
        Self { pipe }
    }

    fn is_daemon(&self) -> bool {
        self.pipe.is_some()
    }

    fn fail(&mut self, msg: &str) {
        match self.pipe.take() {
            Some(mut p) => {
                // Also in the log (syslog or logfile=, once set up): the command that waits
                // for this answer may have been interrupted meanwhile.
                tracing::error!("mount failed: {msg}");
                let _ = writeln!(p, "ERR {msg}");
            }
            None => eprintln!("rossfs: {msg}"),
        }
    }

    fn ready(&mut self) {
        if let Some(mut p) = self.pipe.take() {
            let _ = writeln!(p, "OK");
        }
    }
}

/// Starts the daemon child and waits until it reports, at most `timeout` (`mount_timeout=`):
/// past it the daemon is stopped, whatever it mounted is detached, and the mount fails, so a
/// credentials source or server that never answers cannot hang `mount`, a boot's fstab or a
/// pod's volume setup. Returns the exit code for the parent.
fn spawn_daemon(mountpoint: &Path, timeout: Duration) -> i32 {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: fds is a valid array of two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        eprintln!(
            "rossfs: cannot create a pipe to the daemon: {}",
            std::io::Error::last_os_error()
        );
        return 1;
    }
    let (read_fd, write_fd) = (fds[0], fds[1]);
    let exe = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("rossfs: cannot find my own executable to start the daemon: {e}");
            return 1;
        }
    };
    let mut cmd = Command::new(exe);
    cmd.args(std::env::args_os().skip(1))
        .env(READY_FD_ENV, write_fd.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let flags = libc::fcntl(write_fd, libc::F_GETFD);
            if flags < 0 || libc::fcntl(write_fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn();
    // SAFETY: we own both ends; the child has its own copy of the write end.
    unsafe { libc::close(write_fd) };
    // SAFETY: read_fd is ours.
    let mut reader = unsafe { std::fs::File::from_raw_fd(read_fd) };
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            eprintln!("rossfs: cannot start the daemon: {e}");
            return 1;
        }
    };
    let Some(report) = read_report(&mut reader, timeout) else {
        stop_daemon(&mut child);
        // It may have mounted and then hung before answering a stat of the mount root.
        let _ = unmount(mountpoint);
        eprintln!(
            "rossfs: the daemon was not ready after {} s (mount_timeout=), so it was stopped: it \
             was waiting on the credentials source, the endpoint or the new mount; run with -f to \
             see where, or allow it longer with mount_timeout=SECS",
            timeout.as_secs()
        );
        return 1;
    };
    let line = report.lines().next().unwrap_or("");
    if line == "OK" {
        return 0;
    }
    if let Some(msg) = line.strip_prefix("ERR ") {
        eprintln!("rossfs: {msg}");
    } else {
        let status = child.wait().map(|s| s.to_string()).unwrap_or_default();
        eprintln!("rossfs: the daemon exited before the mount was ready ({status}); run with -f to see why");
    }
    let _ = child.wait();
    1
}

/// The daemon's first line through the readiness pipe, or whatever it wrote before closing
/// the pipe; `None` if neither happened within `timeout`.
fn read_report(reader: &mut std::fs::File, timeout: Duration) -> Option<String> {
    use std::os::fd::AsRawFd;
    let deadline = std::time::Instant::now() + timeout;
    let mut report = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return None;
        }
        let mut pfd = libc::pollfd {
            fd: reader.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = libc::c_int::try_from(left.as_millis().max(1)).unwrap_or(libc::c_int::MAX);
        // SAFETY: pfd is one valid pollfd.
        let ready = unsafe { libc::poll(&mut pfd, 1, ms) };
        if ready < 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            // Without poll, wait as before: the daemon closes the pipe when it is done.
            let _ = reader.read_to_end(&mut report);
            return Some(String::from_utf8_lossy(&report).into_owned());
        }
        if ready == 0 {
            continue;
        }
        match reader.read(&mut buf) {
            Ok(0) => return Some(String::from_utf8_lossy(&report).into_owned()),
            Ok(n) => {
                report.extend_from_slice(&buf[..n]);
                if report.contains(&b'\n') {
                    return Some(String::from_utf8_lossy(&report).into_owned());
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return Some(String::from_utf8_lossy(&report).into_owned()),
        }
    }
}

/// Stops a daemon that did not report: SIGTERM, and SIGKILL if it is still there 5 s later.
fn stop_daemon(child: &mut std::process::Child) {
    if let Ok(pid) = libc::pid_t::try_from(child.id()) {
        // SAFETY: the child is ours and not yet reaped, so the pid is still its.
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while std::time::Instant::now() < deadline {
        match child.try_wait() {
            Ok(Some(_)) | Err(_) => return,
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Kernel mount flags for the options (`nosuid,nodev` by default, as fusermount does). Of two
/// that contradict each other (`suid` and `nosuid`, `atime` and `noatime` ...) the later wins.
fn mount_flags(opts: &MountOptions) -> libc::c_ulong {
    let mut flags = libc::MS_NOSUID | libc::MS_NODEV;
    if opts.read_only {
        flags |= libc::MS_RDONLY;
    }
    for f in &opts.kernel_flags {
        let (set, clear) = match f.as_str() {
            "nosuid" => (libc::MS_NOSUID, 0),
            "suid" => (0, libc::MS_NOSUID),
            "nodev" => (libc::MS_NODEV, 0),
            "dev" => (0, libc::MS_NODEV),
            "noexec" => (libc::MS_NOEXEC, 0),
            "exec" => (0, libc::MS_NOEXEC),
            "noatime" => (libc::MS_NOATIME, libc::MS_RELATIME),
            "relatime" => (libc::MS_RELATIME, libc::MS_NOATIME),
            "atime" => (0, libc::MS_NOATIME | libc::MS_RELATIME),
            "nodiratime" => (libc::MS_NODIRATIME, 0),
            "sync" => (libc::MS_SYNCHRONOUS, 0),
            "async" => (0, libc::MS_SYNCHRONOUS),
            "dirsync" => (libc::MS_DIRSYNC, 0),
            _ => (0, 0),
        };
        flags = (flags & !clear) | set;
    }
    flags
}

/// The kernel flags of the options as `fusermount3` takes them, for a mount by another user
/// than root. Of two that contradict each other (`exec`, `noexec`) the later wins, as for
/// root; `suid` and `dev`, which fusermount3 ignores for other users, are refused with the
/// reason; `nodiratime` and `relatime`, which older fusermount3 (Debian 12's 3.14) does not
/// take, are left out (FUSE keeps no access times of its own anyway).
fn fusermount_flags(opts: &MountOptions) -> Result<Vec<MountOption>, String> {
    // The last word of each pair, in the order first given.
    let mut chosen: Vec<(&str, MountOption)> = Vec::new();
    for f in &opts.kernel_flags {
        let (pair, option) = match f.as_str() {
            "suid" | "dev" => {
                return Err(format!(
                    "option '{f}' needs root: fusermount3 does not let other users mount with it"
                ))
            }
            "nosuid" | "nodev" | "relatime" | "nodiratime" => continue,
            "noexec" => ("exec", MountOption::NoExec),
            "exec" => ("exec", MountOption::Exec),
            "noatime" => ("atime", MountOption::NoAtime),
            "atime" => ("atime", MountOption::Atime),
            "sync" => ("sync", MountOption::Sync),
            "async" => ("sync", MountOption::Async),
            "dirsync" => ("dirsync", MountOption::DirSync),
            other => return Err(format!("option '{other}' is not a kernel flag fusermount3 takes")),
        };
        match chosen.iter_mut().find(|(p, _)| *p == pair) {
            Some(slot) => slot.1 = option,
            None => chosen.push((pair, option)),
        }
    }
    Ok(chosen.into_iter().map(|(_, o)| o).collect())
}

/// What to do about a failed mount by a user other than root, from the error and the system.
fn user_mount_fix(e: &std::io::Error, allow_other: bool) -> String {
    let dev = Path::new("/dev/fuse");
    if !dev.exists() {
        return "there is no /dev/fuse: load the module with 'modprobe fuse' (as root); in a \
                container, pass the device with --device /dev/fuse"
            .into();
    }
    // SAFETY: access(2) on a NUL-terminated constant path.
    if unsafe { libc::access(c"/dev/fuse".as_ptr(), libc::R_OK | libc::W_OK) } != 0 {
        return "this user may not open /dev/fuse: most distributions make it mode 0666 \
                ('chmod 0666 /dev/fuse' as root), or mount as root"
            .into();
    }
    let in_path = |name: &str| {
        std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
    };
    if !in_path("fusermount3") {
        return "other users mount through the setuid fusermount3, which is not installed: \
                apt-get install fuse3"
            .into();
    }
    if allow_other && e.to_string().contains("allow_other") {
        return "allow_other for a user other than root needs 'user_allow_other' in /etc/fuse.conf".into();
    }
    "fusermount3 refused: see its message".into()
}

/// Mounts the filesystem and performs the FUSE handshake. As root, rossfs opens `/dev/fuse` and
/// calls mount(2) itself so the filesystem type reads `fuse.rossfs` (what `mount -t`, fstab and
/// updatedb's PRUNEFS match on); other users go through the setuid `fusermount3`.
fn open_session(
    adapter: FuseAdapter,
    mountpoint: &Path,
    req: &MountRequest,
    config: &Config,
) -> Result<Session<FuseAdapter>, String> {
    let shown = mountpoint.display();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        let mut cfg = config.clone();
        cfg.mount_options = vec![
            MountOption::FSName(req.source_spec.clone()),
            MountOption::Subtype("rossfs".into()),
            MountOption::DefaultPermissions,
            MountOption::NoSuid,
            MountOption::NoDev,
        ];
        if req.options.read_only {
            cfg.mount_options.push(MountOption::RO);
        }
        cfg.mount_options.extend(fusermount_flags(&req.options)?);
        return Session::new(adapter, mountpoint, &cfg).map_err(|e| {
            format!(
                "cannot mount at {shown}: {e} ({})",
                user_mount_fix(&e, req.options.allow_other)
            )
        });
    }
    let dev = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
        .map_err(|e| {
            format!("cannot open /dev/fuse: {e} (install fuse3, or give the container the /dev/fuse device)")
        })?;
    let fd = std::os::fd::AsRawFd::as_raw_fd(&dev);
    // SAFETY: getuid/getgid have no preconditions.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let mut data = format!("fd={fd},rootmode=40000,user_id={uid},group_id={gid},default_permissions");
    if req.options.allow_other {
        data.push_str(",allow_other");
    }
    let c = |s: &str| std::ffi::CString::new(s).map_err(|_| format!("'{s}' contains a NUL byte"));
    let source = c(&req.source_spec)?;
    let target = c(&mountpoint.to_string_lossy())?;
    let fstype = c("fuse.rossfs")?;
    let data = c(&data)?;
    // SAFETY: all pointers are valid NUL-terminated strings that outlive the call.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            mount_flags(&req.options),
            data.as_ptr().cast(),
        )
    };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        return Err(match e.raw_os_error() {
            Some(libc::EBUSY) => format!("cannot mount at {shown}: it is busy (already mounted?)"),
            Some(libc::ENODEV) => {
                format!("cannot mount at {shown}: the kernel has no FUSE support (modprobe fuse)")
            }
            Some(libc::EPERM) => format!(
                "cannot mount at {shown}: mount(2) failed: {e} (in a container, run it with \
                 --cap-add SYS_ADMIN --device /dev/fuse, and with an AppArmor profile that allows \
                 mounts, e.g. --security-opt apparmor=unconfined)"
            ),
            _ => format!("cannot mount at {shown}: mount(2) failed: {e}"),
        });
    }
    Session::from_fd(adapter, dev.into(), config.acl, config.clone()).map_err(|e| {
        let _ = unmount(mountpoint);
        format!("FUSE handshake at {shown} failed: {e}")
    })
}

/// Sets the kernel read-ahead of the mounted filesystem with device number `dev`. The FUSE
/// handshake can only lower it below the kernel's 128 KiB; the backing device's sysfs knob raises
/// it, so a sequential reader's pages are asked for in 1 MiB requests, several at once, instead
/// of 128 KiB ones. Needs root; elsewhere the kernel's default stays: a warning when the user
/// asked for a value (`asked`), a note at info level for the default.
fn set_read_ahead(dev: u64, kib: u32, asked: bool) {
    if kib == 0 {
        return;
    }
    let path = format!(
        "/sys/class/bdi/{}:{}/read_ahead_kb",
        libc::major(dev),
        libc::minor(dev)
    );
    match std::fs::write(&path, kib.to_string()) {
        Ok(()) => tracing::debug!("read-ahead set to {kib} KiB ({path})"),
        Err(e) if asked => tracing::warn!(
            "read_ahead_kb={kib} not applied, the kernel's default stays: cannot write {path}: {e} \
             (it needs root; mount as root or leave the option out)"
        ),
        Err(e) => tracing::info!("read-ahead left at the kernel's default: cannot write {path}: {e}"),
    }
}

/// Detaches the mount (lazily, so open files do not keep it busy).
fn unmount(mountpoint: &Path) -> std::io::Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        let out = Command::new("fusermount3")
            .arg("-u")
            .arg("-z")
            .arg(mountpoint)
            .output()?;
        if !out.status.success() {
            return Err(std::io::Error::other(
                String::from_utf8_lossy(&out.stderr).trim().to_string(),
            ));
        }
        return Ok(());
    }
    let target =
        std::ffi::CString::new(mountpoint.as_os_str().as_encoded_bytes()).map_err(std::io::Error::other)?;
    // SAFETY: target is a valid NUL-terminated path.
    if unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Runs the mount to completion; returns the process exit code.
pub fn run(mut req: MountRequest) -> i32 {
    let mut readiness = Readiness::from_env();
    // The daemon starts in the caller's directory so relative paths mean what the caller
    // meant; they are made absolute here, before it leaves for `/`.
    if let Err(e) = req.options.make_paths_absolute() {
        readiness.fail(&format!("cannot resolve a relative path option: {e}"));
        return 1;
    }
    if !req.mountpoint.starts_with("/dev/fd/") {
        if let Ok(abs) = std::path::absolute(&req.mountpoint) {
            req.mountpoint = abs;
        }
    }
    if readiness.is_daemon() {
        // Do not keep the caller's directory (and its filesystem) busy.
        let _ = std::env::set_current_dir("/");
    }
    let handed_fd = handed_over_fd(&req.mountpoint);
    let mountpoint = match handed_fd {
        Some(Ok(_)) => req.mountpoint.clone(),
        Some(Err(msg)) => {
            readiness.fail(&msg);
            return 1;
        }
        None => {
            match check_mountpoint_within(&req.mountpoint, req.options.nonempty, req.options.mount_timeout) {
                Ok(p) => p,
                Err(msg) => {
                    readiness.fail(&msg);
                    return 1;
                }
            }
        }
    };
    let handed_fd = handed_fd.and_then(Result::ok);
    if let Err(msg) = check_cache_dir(&req.options) {
        readiness.fail(&msg);
        return 1;
    }
    if !req.foreground && !readiness.is_daemon() {
        return spawn_daemon(&mountpoint, req.options.mount_timeout);
    }
    let target = match &req.options.log_file {
        Some(path) => match LogTarget::file(path) {
            Ok(t) => t,
            Err(e) => {
                readiness.fail(&format!("cannot open logfile {}: {e}", path.display()));
                return 1;
            }
        },
        None if readiness.is_daemon() => LogTarget::Syslog,
        None => LogTarget::Stderr,
    };
    logging::init(req.options.log_level, target);

    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("rossfs-io")
        .worker_threads(req.options.io_threads)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            readiness.fail(&format!("cannot start the I/O runtime: {e}"));
            return 1;
        }
    };
    let store = match rt.block_on(ObjectStore::new(&req.options, &req.source)) {
        Ok(s) => Arc::new(s),
        Err(msg) => {
            readiness.fail(&msg);
            return 1;
        }
    };
    if let Err(e) = rt.block_on(store.check_access(&req.source.prefix)) {
        readiness.fail(&format!(
            "cannot mount {}: {}",
            req.source_spec,
            e.mount_hint(store.bucket(), store.endpoint())
        ));
        return 1;
    }
    let mime_required = req.options.mime_file != MountOptions::default().mime_file;
    let mime = match crate::fileio::MimeTypes::load(&req.options.mime_file, mime_required) {
        Ok(m) => m,
        Err(msg) => {
            readiness.fail(&msg);
            return 1;
        }
    };
    let fs = {
        let _in_runtime = rt.enter();
        S3Filesystem::new(store.clone(), &req.source, &req.options, mime)
    };
    if let Some(addr) = req.options.metrics_addr {
        let listener = match rt.block_on(tokio::net::TcpListener::bind(addr)) {
            Ok(l) => l,
            Err(e) => {
                readiness.fail(&format!(
                    "cannot serve metrics on {addr}: {e} (choose a free port with metrics_addr=)"
                ));
                return 1;
            }
        };
        if !addr.ip().is_loopback() {
            tracing::warn!("metrics are served on {addr}, reachable from other hosts");
        }
        let fs_for_metrics = fs.clone();
        rt.spawn(crate::metrics::serve(
            listener,
            Arc::new(move || fs_for_metrics.gauges()),
        ));
    }
    {
        // Aborts that failed (server unreachable) are retried until the parts are gone.
        let store = store.clone();
        rt.spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(3)).await;
                if store.pending_abort_count() > 0 {
                    store.retry_aborts().await;
                }
            }
        });
    }
    let adapter = FuseAdapter::new(fs.clone(), rt.handle().clone(), req.options.direct_io);

    let mut config = Config::default();
    config.acl = if req.options.allow_other {
        SessionACL::All
    } else {
        SessionACL::Owner
    };
    config.n_threads = Some(req.options.fuse_threads);
    // Each FUSE thread gets its own descriptor (opened from /dev/fuse); a handed-over one is
    // shared instead: whoever hands it over may run rossfs where /dev/fuse cannot be opened.
    config.clone_fd = handed_fd.is_none();
    let opened = match handed_fd {
        // SAFETY: the caller handed this descriptor to us (checked to be open in handed_over_fd).
        Some(fd) => Session::from_fd(
            adapter,
            unsafe { OwnedFd::from_raw_fd(fd) },
            config.acl,
            config.clone(),
        )
        .map_err(|e| format!("FUSE handshake on /dev/fd/{fd} failed: {e} (was it mounted with fd={fd}?)")),
        None => open_session(adapter, &mountpoint, &req, &config),
    };
    let session = match opened {
        Ok(s) => s,
        Err(msg) => {
            readiness.fail(&msg);
            return 1;
        }
    };
    fs.set_kernel_cache(Box::new(KernelNotifier(session.notifier())));
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<std::io::Result<()>>();
    let session_thread = std::thread::Builder::new()
        .name("fuse-session".into())
        .spawn(move || {
            let r = session.run();
            let _ = done_tx.send(r);
        });
    if let Err(e) = session_thread {
        readiness.fail(&format!("cannot start the FUSE session thread: {e}"));
        return 1;
    }

    // The mount answers once a stat of its root goes through the FUSE threads. A handed-over
    // descriptor has no path here: the handshake was the proof.
    let answered = match handed_fd {
        Some(_) => Ok(None),
        None => std::fs::metadata(&mountpoint).map(Some),
    };
    match answered {
        Ok(root) => {
            if let Some(root) = root {
                set_read_ahead(
                    std::os::unix::fs::MetadataExt::dev(&root),
                    req.options.read_ahead_kb,
                    req.options.read_ahead_asked,
                );
            }
            tracing::info!("mounted {} at {}", req.source_spec, mountpoint.display());
            readiness.ready();
        }
        Err(e) => {
            readiness.fail(&format!(
                "the mount at {} does not answer: {e}",
                mountpoint.display()
            ));
            let _ = unmount(&mountpoint);
            return 1;
        }
    }

    let fs_for_signals = fs.clone();
    let store_for_shutdown = store.clone();
    let mountpoint_for_signals = mountpoint.clone();
    let code = rt.block_on(async move {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!("cannot watch SIGTERM: {e}");
                return 1;
            }
        };
        let mut int = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!("cannot watch SIGINT: {e}");
                return 1;
            }
        };
        let mut usr1 = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!("cannot watch SIGUSR1, no statistics on demand: {e}");
                None
            }
        };
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        let mut done_rx = done_rx;
        let ended = loop {
            tokio::select! {
                Some(()) = async { match hup.as_mut() { Some(s) => s.recv().await, None => std::future::pending().await } } => {
                    crate::logging::reopen();
                }
                r = &mut done_rx => break Some(r),
                _ = term.recv() => break None,
                _ = int.recv() => break None,
                Some(()) = async { match usr1.as_mut() { Some(s) => s.recv().await, None => std::future::pending().await } } => {
                    tracing::info!("statistics: {}", fs_for_signals.stats());
                }
            }
        };
        let session_result = match ended {
            Some(r) => r.unwrap_or(Ok(())),
            None => {
                tracing::info!("signal received: flushing open files and unmounting");
                let failed = fs_for_signals.flush_all().await;
                if failed > 0 {
                    tracing::error!("{failed} file(s) could not be uploaded before shutdown");
                }
                if handed_fd.is_some() {
                    // Not our mount to remove: whoever mounted it unmounts it.
                } else if let Err(e) = unmount(&mountpoint_for_signals) {
                    tracing::error!("unmount failed: {e}");
                }
                match tokio::time::timeout(Duration::from_secs(5), done_rx).await {
                    Ok(r) => r.unwrap_or(Ok(())),
                    Err(_) => {
                        tracing::warn!(
                            "files are still open on the detached mount after 5 s; exiting: what \
                             was written to them so far is uploaded next, anything written after \
                             that is lost"
                        );
                        Ok(())
                    }
                }
            }
        };
        let failed = fs_for_signals.flush_all().await;
        let leftover = store_for_shutdown.retry_aborts().await;
        if leftover > 0 {
            tracing::error!(
                "{leftover} abandoned multipart upload(s) could not be aborted; remove them with 'rossfs BUCKET --abort-uploads 0'"
            );
        }
        if failed > 0 {
            tracing::error!("{failed} file(s) with unsaved data could not be uploaded");
            return 1;
        }
        match session_result {
            Ok(()) => 0,
            Err(e) => {
                tracing::error!("FUSE session ended with an error: {e}");
                1
            }
        }
    });
    tracing::info!("unmounted {}", mountpoint.display());
    code
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape_mountinfo("/mnt/with\\040space"), "/mnt/with space");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
    }

    #[test]
    fn flags_for_fusermount_take_the_later_of_a_pair_and_refuse_what_needs_root() {
        let opts = MountOptions::parse(&["exec,noexec,atime,noatime,async,nodiratime,sync,dirsync,relatime"])
            .unwrap();
        assert_eq!(
            fusermount_flags(&opts).unwrap(),
            vec![
                MountOption::NoExec,
                MountOption::NoAtime,
                MountOption::Sync,
                MountOption::DirSync
            ]
        );
        let opts = MountOptions::parse(&["noexec,exec,nosuid,nodev"]).unwrap();
        assert_eq!(fusermount_flags(&opts).unwrap(), vec![MountOption::Exec]);
        for needs_root in ["suid", "dev"] {
            let opts = MountOptions::parse(&[needs_root]).unwrap();
            assert!(fusermount_flags(&opts).unwrap_err().contains("needs root"));
        }
    }

    #[test]
    fn kernel_flags_for_root_take_the_later_of_a_pair() {
        let flags = |o: &str| mount_flags(&MountOptions::parse(&[o]).unwrap());
        let base = libc::MS_NOSUID | libc::MS_NODEV;
        assert_eq!(flags("exec"), base);
        assert_eq!(flags("suid,nosuid"), base);
        assert_eq!(flags("nosuid,suid"), libc::MS_NODEV);
        assert_eq!(flags("dev,nodev"), base);
        assert_eq!(flags("noatime,atime"), base);
        assert_eq!(flags("atime,noatime"), base | libc::MS_NOATIME);
        assert_eq!(flags("noatime,relatime"), base | libc::MS_RELATIME);
        assert_eq!(flags("sync,async"), base);
        assert_eq!(
            flags("async,sync,noexec,ro"),
            base | libc::MS_SYNCHRONOUS | libc::MS_NOEXEC | libc::MS_RDONLY
        );
    }

    #[test]
    fn mountpoint_errors_name_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        assert!(check_mountpoint(&missing, false)
            .unwrap_err()
            .contains("mkdir -p"));
        let empty = dir.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        assert!(check_mountpoint(&empty, false).is_ok());
        let file = dir.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        assert!(check_mountpoint(&file, false)
            .unwrap_err()
            .contains("not a directory"));
        assert!(check_mountpoint(Path::new("/proc"), true)
            .unwrap_err()
            .contains("already mounted"));
        // It holds `file` and `empty`: refused unless nonempty.
        let e = check_mountpoint(dir.path(), false).unwrap_err();
        assert!(e.contains("is not empty") && e.contains("-o nonempty"), "{e}");
        assert!(check_mountpoint(dir.path(), true).is_ok());
    }
}
