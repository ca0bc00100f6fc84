//! The filesystems under test: how each is mounted (command line, options), how it is
//! unmounted, and what its daemon cost (CPU seconds from /proc/PID/stat, peak RSS from VmHWM).

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::s3::{die_with_parent, Endpoint};

const POLL: Duration = Duration::from_millis(10);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Peer {
    Rossfs,
    S3fs,
    Rclone,
    Raw,
}

impl Peer {
    pub const ALL: [Peer; 4] = [Peer::Rossfs, Peer::S3fs, Peer::Rclone, Peer::Raw];

    pub fn name(self) -> &'static str {
        match self {
            Peer::Rossfs => "rossfs",
            Peer::S3fs => "s3fs",
            Peer::Rclone => "rclone",
            Peer::Raw => "raw",
        }
    }

    pub fn parse(s: &str) -> Result<Peer, String> {
        Peer::ALL
            .into_iter()
            .find(|p| p.name() == s.trim())
            .ok_or_else(|| format!("unknown peer {s:?} (rossfs, s3fs, rclone, raw)"))
    }
}

/// How to mount every filesystem peer against one server and bucket.
pub struct MountConfig {
    pub endpoint: Endpoint,
    pub bucket: String,
    pub rossfs_bin: PathBuf,
    /// Extra `-o` options per peer (the "options a user would set for speed").
    pub rossfs_opts: String,
    pub s3fs_opts: String,
    pub rclone_args: Vec<String>,
    pub drop_caches: bool,
}

impl MountConfig {
    /// The command line of `peer` with secrets elided, for the report.
    pub fn describe(&self, peer: Peer) -> String {
        let (cmd, _) = self.command(peer, Path::new("MNT"), Path::new("SCRATCH"));
        let mut words = vec![cmd.get_program().to_string_lossy().into_owned()];
        words.extend(cmd.get_args().map(|a| a.to_string_lossy().into_owned()));
        words.join(" ")
    }

    fn command(&self, peer: Peer, mnt: &Path, scratch: &Path) -> (Command, PathBuf) {
        let ep = &self.endpoint;
        let passwd = scratch.join("passwd");
        let log = scratch.join("daemon.log");
        let join = |base: String, extra: &str| {
            if extra.is_empty() {
                base
            } else {
                format!("{base},{extra}")
            }
        };
        let mut cmd;
        match peer {
            Peer::Rossfs => {
                cmd = Command::new(&self.rossfs_bin);
                let opts = format!(
                    "url={},use_path_request_style,region={},passwd_file={}",
                    ep.url,
                    ep.region,
                    passwd.display()
                );
                cmd.arg(&self.bucket)
                    .arg(mnt)
                    .arg("-f")
                    .arg("-o")
                    .arg(join(opts, &self.rossfs_opts));
            }
            Peer::S3fs => {
                cmd = Command::new("s3fs");
                let opts = format!(
                    "url={},use_path_request_style,endpoint={},passwd_file={},dbglevel=warn",
                    ep.url,
                    ep.region,
                    passwd.display()
                );
                cmd.arg(&self.bucket)
                    .arg(mnt)
                    .arg("-f")
                    .arg("-o")
                    .arg(join(opts, &self.s3fs_opts));
            }
            Peer::Rclone => {
                cmd = Command::new("rclone");
                cmd.arg("mount")
                    .arg(format!("fsbench:{}", self.bucket))
                    .arg(mnt)
                    .arg("--config")
                    .arg(scratch.join("rclone.conf"))
                    .arg("--cache-dir")
                    .arg(scratch.join("rclone-cache"))
                    .arg("--log-file")
                    .arg(&log)
                    .args(&self.rclone_args)
                    .env("RCLONE_CONFIG_FSBENCH_TYPE", "s3")
                    .env("RCLONE_CONFIG_FSBENCH_PROVIDER", "Other")
                    .env("RCLONE_CONFIG_FSBENCH_ENDPOINT", &ep.url)
                    .env("RCLONE_CONFIG_FSBENCH_REGION", &ep.region)
                    .env("RCLONE_CONFIG_FSBENCH_FORCE_PATH_STYLE", "true")
                    .env("RCLONE_CONFIG_FSBENCH_ACCESS_KEY_ID", &ep.access_key)
                    .env("RCLONE_CONFIG_FSBENCH_SECRET_ACCESS_KEY", &ep.secret_key)
                    // rclone 1.60 fails on a plain-http endpoint when this is set.
                    .env_remove("AWS_CA_BUNDLE");
            }
            Peer::Raw => unreachable!("the raw client is not mounted"),
        }
        for var in [
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN",
            "AWS_PROFILE",
        ] {
            cmd.env_remove(var);
        }
        (cmd, log)
    }

    /// Mount `peer` on a fresh mountpoint (fresh cache dir), then sync and drop the page cache.
    pub fn mount(&self, peer: Peer) -> Result<Mounted, String> {
        let scratch = super::interrupt::scratch_dir(&format!("fsbench-{}-", peer.name()))?;
        let mnt = scratch.path().join("mnt");
        fs::create_dir(&mnt).map_err(|e| e.to_string())?;
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(scratch.path().join("passwd"))
            .map_err(|e| e.to_string())?;
        writeln!(f, "{}:{}", self.endpoint.access_key, self.endpoint.secret_key)
            .map_err(|e| e.to_string())?;
        drop(f);
        let (mut cmd, log) = self.command(peer, &mnt, scratch.path());
        let out = fs::File::create(scratch.path().join("stderr.log")).map_err(|e| e.to_string())?;
        cmd.stdin(Stdio::null())
            .stdout(out.try_clone().map_err(|e| e.to_string())?)
            .stderr(out);
        die_with_parent(&mut cmd);
        let child = cmd
            .spawn()
            .map_err(|e| format!("start {}: {e}", cmd.get_program().to_string_lossy()))?;
        let mut m = Mounted {
            peer,
            child: Some(child),
            mnt,
            log,
            scratch: Some(scratch),
        };
        let start = Instant::now();
        while !is_mounted(&m.mnt) {
            if let Some(status) = m.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                return Err(format!(
                    "{} exited with {status} before mounting: {}",
                    peer.name(),
                    m.logs()
                ));
            }
            if start.elapsed() > Duration::from_secs(60) {
                return Err(format!("{} did not mount within 60 s: {}", peer.name(), m.logs()));
            }
            std::thread::sleep(POLL);
        }
        // The mount table entry appears before the daemon serves requests.
        fs::metadata(&m.mnt).map_err(|e| format!("stat of the fresh {} mount: {e}", peer.name()))?;
        if self.drop_caches {
            drop_caches()?;
        }
        Ok(m)
    }
}

/// `sync`, then drop the page cache, dentries and inodes.
pub fn drop_caches() -> Result<(), String> {
    // SAFETY: plain syscall.
    unsafe { libc::sync() };
    fs::write("/proc/sys/vm/drop_caches", "3")
        .map_err(|e| format!("drop caches (needs root; or pass --no-drop-caches): {e}"))
}

pub fn is_mounted(path: &Path) -> bool {
    super::interrupt::is_mount_point(path)
}

/// What a daemon used while it was mounted.
#[derive(Clone, Copy, Debug, Default)]
pub struct Usage {
    /// User + system CPU seconds.
    pub cpu: f64,
    /// Peak resident set (VmHWM), KiB.
    pub hwm_kib: u64,
}

impl Usage {
    pub fn add(&mut self, other: Usage) {
        self.cpu += other.cpu;
        self.hwm_kib = self.hwm_kib.max(other.hwm_kib);
    }
}

pub fn proc_usage(pid: u32) -> Option<Usage> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the command: state is field 3, utime 14, stime 15 (1-based over the whole line).
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // SAFETY: plain libc query.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let hwm = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    Some(Usage {
        cpu: (utime + stime) / hz,
        hwm_kib: hwm,
    })
}

/// A live mount; unmounted (lazily, if need be) on drop.
pub struct Mounted {
    pub peer: Peer,
    child: Option<Child>,
    mnt: PathBuf,
    log: PathBuf,
    scratch: Option<TempDir>,
}

impl Mounted {
    pub fn root(&self) -> &Path {
        &self.mnt
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    pub fn usage(&self) -> Usage {
        proc_usage(self.pid()).unwrap_or_default()
    }

    fn logs(&self) -> String {
        let mut text = String::new();
        if let Some(s) = &self.scratch {
            let _ = fs::File::open(s.path().join("stderr.log")).and_then(|mut f| f.read_to_string(&mut text));
        }
        if let Ok(log) = fs::read_to_string(&self.log) {
            text.push_str(&log);
        }
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    /// Unmount and wait for the daemon to exit; returns what it used over its whole life.
    pub fn unmount(mut self) -> Result<Usage, String> {
        let usage = self.usage();
        let start = Instant::now();
        loop {
            let out = Command::new("umount")
                .arg(&self.mnt)
                .output()
                .map_err(|e| e.to_string())?;
            if out.status.success() || !is_mounted(&self.mnt) {
                break;
            }
            if start.elapsed() > Duration::from_secs(30) {
                return Err(format!(
                    "umount {}: {}",
                    self.mnt.display(),
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let mut child = self.child.take().expect("child");
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
                let logs = self.logs();
                if !status.success() && self.peer != Peer::Rclone {
                    return Err(format!(
                        "{} exited with {status} after unmount: {logs}",
                        self.peer.name()
                    ));
                }
                return Ok(usage);
            }
            if start.elapsed() > Duration::from_secs(300) {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{} still running 300 s after unmount", self.peer.name()));
            }
            std::thread::sleep(POLL);
        }
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if is_mounted(&self.mnt) {
            let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if is_mounted(&self.mnt) {
            // Never remove a directory tree through a live mount.
            if let Some(s) = self.scratch.take() {
                std::mem::forget(s);
            }
        }
    }
}

/// Output of an external command run under a deadline.
pub struct CmdOut {
    pub elapsed: Duration,
    pub lines: u64,
    pub bytes: u64,
}

/// Run `cmd` with stdout counted (lines and bytes, content dropped), failing on a non-zero
/// exit or after `timeout`.
pub fn run_counted(mut cmd: Command, timeout: Duration) -> Result<CmdOut, String> {
    let what = format!(
        "{} {}",
        cmd.get_program().to_string_lossy(),
        cmd.get_args()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ")
    );
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = cmd.spawn().map_err(|e| format!("{what}: {e}"))?;
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let counter = std::thread::spawn(move || {
        let mut buf = vec![0u8; 1 << 20];
        let (mut lines, mut bytes) = (0u64, 0u64);
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            bytes += n as u64;
            lines += buf[..n].iter().filter(|&&b| b == b'\n').count() as u64;
        }
        (lines, bytes)
    });
    let errs = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    // A watchdog kills the command at the deadline; otherwise wait() returns at its exit,
    // so short commands are timed without polling granularity.
    let pid = child.id() as libc::pid_t;
    let (done, done_rx) = std::sync::mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        let expired = done_rx.recv_timeout(timeout).is_err();
        if expired {
            // SAFETY: the child is not reaped before `done` is sent.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        expired
    });
    let status = child.wait().map_err(|e| e.to_string());
    let elapsed = start.elapsed();
    let _ = done.send(());
    if watchdog.join().unwrap_or(false) {
        return Err(format!("{what}: timed out after {timeout:?}"));
    }
    let status = status?;
    let (lines, bytes) = counter.join().unwrap_or_default();
    let stderr = errs.join().unwrap_or_default();
    if !status.success() {
        return Err(format!("{what}: {status}: {}", stderr.trim()));
    }
    Ok(CmdOut {
        elapsed,
        lines,
        bytes,
    })
}
