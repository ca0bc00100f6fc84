//! rossfs as the system sees it: `mount -t fuse.rossfs`, fstab lines with `mount MOUNTPOINT`
//! and `mount -a`, `umount`, the mount(8) helper's option filtering and exit codes, and the
//! Debian package (build, install, man page, a mount through the installed helper, removal).
//!
//! mount(8) finds its helper only at `/sbin/mount.fuse.rossfs`, so these tests install a
//! symlink there to `mount-helper/mount.fuse.rossfs` (or the package does) and point it at the
//! binary under test with `ROSSFS_BIN`; mount(8) run by root passes its environment on. Tests
//! that use `/sbin/mount.fuse.rossfs` or dpkg take a lock (an flock, so also across test
//! processes), and every test removes what it installed, also when it fails. fstab lines live
//! in a test file given to `mount -T`, never in /etc/fstab.

mod common;

use std::fs;
use std::io::ErrorKind;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use std::thread;
use std::time::{Duration, Instant};

use common::*;
use tempfile::TempDir;

/// Where mount(8) looks for the helper of type `fuse.rossfs`.
const HELPER_PATH: &str = "/sbin/mount.fuse.rossfs";
/// Upper bound for one command (mount, umount, dpkg, the package build) and for a daemon to
/// exit after its unmount.
const DEADLINE: Duration = Duration::from_secs(90);
const POLL: Duration = Duration::from_millis(20);
/// PATH as systemd gives it to mount units: no cargo, no target directory.
const SYSTEM_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn repo_helper() -> PathBuf {
    repo().join("mount-helper/mount.fuse.rossfs")
}

/// Serialises the tests that put something at [`HELPER_PATH`] or run dpkg, across threads and
/// across test processes (an flock on a file in the temp dir; released when dropped).
struct SbinLock(#[allow(dead_code)] fs::File);

fn sbin_lock() -> SbinLock {
    let path = std::env::temp_dir().join("rossfs-test-mount-helper.lock");
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
        panic!("flock {}: {}", path.display(), std::io::Error::last_os_error());
    }
    SbinLock(file)
}

/// True if `HELPER_PATH` is a symlink to this repository's helper (ours, perhaps left behind
/// by a killed run).
fn helper_link_is_ours() -> bool {
    fs::read_link(HELPER_PATH).is_ok_and(|target| target == repo_helper())
}

/// Makes sure nothing is at `HELPER_PATH`, removing only a symlink of ours; anything else is
/// someone's installation, which a test must not overwrite.
fn clear_helper_path() {
    if helper_link_is_ours() {
        fs::remove_file(HELPER_PATH).expect("remove a stale helper symlink");
    }
    if let Ok(meta) = fs::symlink_metadata(HELPER_PATH) {
        panic!(
            "{HELPER_PATH} exists ({:?}) and is not this repository's helper: is the rossfs \
             package installed? Remove it (dpkg -r rossfs) before running these tests",
            meta.file_type()
        );
    }
}

/// `/sbin/mount.fuse.rossfs` -> the repository's helper, for as long as this lives.
struct HelperLink {
    _lock: SbinLock,
}

impl HelperLink {
    fn install() -> HelperLink {
        let lock = sbin_lock();
        clear_helper_path();
        std::os::unix::fs::symlink(repo_helper(), HELPER_PATH)
            .unwrap_or_else(|e| panic!("symlink {HELPER_PATH}: {e}"));
        HelperLink { _lock: lock }
    }
}

impl Drop for HelperLink {
    fn drop(&mut self) {
        if helper_link_is_ours() {
            let _ = fs::remove_file(HELPER_PATH);
        }
    }
}

/// A temporary mountpoint that is detached when dropped if a test left it mounted.
struct MountDir(Option<TempDir>);

impl MountDir {
    fn new() -> MountDir {
        MountDir(Some(TempDir::with_prefix("rossfs-pkg-mnt-").expect("mountpoint")))
    }

    /// The canonical path, as mount(8) and /proc/self/mountinfo show it.
    fn path(&self) -> PathBuf {
        let dir = self.0.as_ref().expect("mountpoint").path();
        fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf())
    }
}

impl Drop for MountDir {
    fn drop(&mut self) {
        let Some(dir) = self.0.take() else { return };
        if is_mounted(dir.path()) {
            let _ = Command::new("umount").arg("-l").arg(dir.path()).status();
        }
        if is_mounted(dir.path()) {
            eprintln!("leaving {} behind: still mounted", dir.path().display());
            std::mem::forget(dir);
        }
    }
}

/// A bucket with a seed object under `data/`, and a passwd file for it.
struct Scene {
    bucket: String,
    scratch: TempDir,
    passwd: PathBuf,
}

impl Scene {
    fn new(tag: &str) -> Scene {
        let server = server();
        let bucket = block_on(new_bucket(tag));
        let client = block_on(s3_client());
        block_on(put_object(&client, &bucket, "data/seed.txt", b"seed\n".to_vec()));
        let scratch = TempDir::with_prefix("rossfs-pkg-").expect("scratch dir");
        let passwd = write_passwd_file(scratch.path(), &server.access_key, &server.secret_key);
        Scene {
            bucket,
            scratch,
            passwd,
        }
    }

    /// The server options every mount here needs.
    fn options(&self) -> String {
        base_options(&self.passwd)
    }

    fn object(&self, key: &str) -> Vec<u8> {
        block_on(async { get_object(&s3_client().await, &self.bucket, key).await })
    }
}

/// `program` with stdin closed and the caller's AWS credentials removed, so that only the
/// options under test decide.
fn command(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut cmd = Command::new(program);
    cmd.stdin(Stdio::null());
    for var in [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

/// `mount ARGS...` running the helper from this repository and the binary under test.
fn mount(args: &[&str]) -> Command {
    let mut cmd = command("mount");
    cmd.args(args).env("ROSSFS_BIN", rossfs_bin());
    cmd
}

/// `mount -t fuse.rossfs SOURCE MNT -o OPTS`.
fn mount_t(source: &str, mnt: &Path, opts: &str) -> Command {
    mount(&["-t", "fuse.rossfs", source, mnt.to_str().unwrap(), "-o", opts])
}

/// Runs `cmd` to completion within [`DEADLINE`], output captured through files.
fn run(cmd: Command) -> Output {
    let dir = TempDir::with_prefix("rossfs-pkg-out-").expect("output dir");
    run_with_deadline(cmd, dir.path(), DEADLINE)
}

/// Runs `cmd` and panics with its output unless it exits 0.
fn run_ok(cmd: Command) -> Output {
    let shown = format!("{cmd:?}");
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{shown} failed with {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The filesystem type and source of the mount at `path`.
fn mount_entry(path: &Path) -> Option<(String, String)> {
    let table = fs::read_to_string("/proc/self/mountinfo").ok()?;
    table.lines().rev().find_map(|line| {
        let fields: Vec<&str> = line.split(' ').collect();
        let sep = fields.iter().position(|f| *f == "-")?;
        if Path::new(fields.get(4)?) != path {
            return None;
        }
        Some((fields.get(sep + 1)?.to_string(), fields.get(sep + 2)?.to_string()))
    })
}

/// Pids of processes running `exe` with `mountpoint` among their arguments.
fn daemons(exe: &Path, mountpoint: &Path) -> Vec<libc::pid_t> {
    let exe = fs::canonicalize(exe).unwrap_or_else(|_| exe.to_path_buf());
    let wanted = mountpoint.as_os_str().as_encoded_bytes();
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<libc::pid_t>().ok())
        .filter(|pid| {
            fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|p| p == exe)
                && fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|c| c.split(|&b| b == 0).any(|arg| arg == wanted))
        })
        .collect()
}

fn alive(pid: libc::pid_t) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
    })
}

/// Asserts that `path` is a rossfs mount of `source`, and returns the daemon serving it.
fn assert_mounted(path: &Path, source: &str, exe: &Path) -> Vec<libc::pid_t> {
    match mount_entry(path) {
        Some((fstype, src)) => {
            assert_eq!(fstype, "fuse.rossfs", "type of the mount at {}", path.display());
            assert_eq!(src, source, "source of the mount at {}", path.display());
        }
        None => panic!("{} is not mounted", path.display()),
    }
    let pids = daemons(exe, path);
    assert!(
        !pids.is_empty(),
        "no {} process serves {}",
        exe.display(),
        path.display()
    );
    pids
}

/// `umount PATH`, then wait until the mount is gone and its daemon has exited (having uploaded
/// whatever it still held).
fn umount_and_wait(path: &Path, daemons: &[libc::pid_t]) {
    run_ok({
        let mut cmd = command("umount");
        cmd.arg(path);
        cmd
    });
    let started = Instant::now();
    while is_mounted(path) || daemons.iter().any(|&pid| alive(pid)) {
        assert!(
            started.elapsed() < DEADLINE,
            "{} still mounted or its daemon still running {DEADLINE:?} after umount",
            path.display()
        );
        thread::sleep(POLL);
    }
}

fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn mount_t_fuse_rossfs_writes_reads_and_umount_uploads() {
    let scene = Scene::new("pkg-mount-t");
    let _helper = HelperLink::install();
    let mnt = MountDir::new();
    let source = format!("{}:/data", scene.bucket);
    // Options for mount(8) and systemd ride along and must not reach rossfs.
    let opts = format!("{},allow_other,_netdev,nofail", scene.options());
    run_ok(mount_t(&source, &mnt.path(), &opts));
    let pids = assert_mounted(&mnt.path(), &source, &rossfs_bin());

    assert_eq!(
        fs::read(mnt.path().join("seed.txt")).expect("read seed.txt"),
        b"seed\n"
    );
    fs::write(mnt.path().join("new.txt"), b"written through mount -t\n").expect("write new.txt");
    assert_eq!(
        fs::read(mnt.path().join("new.txt")).expect("read new.txt"),
        b"written through mount -t\n"
    );

    umount_and_wait(&mnt.path(), &pids);
    assert_eq!(scene.object("data/new.txt"), b"written through mount -t\n");
}

#[test]
fn fstab_lines_mount_by_mountpoint_and_with_mount_a() {
    let scene = Scene::new("pkg-fstab");
    let _helper = HelperLink::install();
    let (data, whole) = (MountDir::new(), MountDir::new());
    let source = format!("{}:/data", scene.bucket);
    let fstab = scene.scratch.path().join("fstab");
    fs::write(
        &fstab,
        format!(
            "# test fstab for rossfs\n\
             {source} {data} fuse.rossfs _netdev,nofail,defaults,allow_other,x-systemd.automount,\
             x-systemd.mount-timeout=30,{opts} 0 0\n\
             {bucket} {whole} fuse.rossfs noauto,_netdev,users,{opts} 0 0\n",
            data = data.path().display(),
            whole = whole.path().display(),
            bucket = scene.bucket,
            opts = scene.options(),
        ),
    )
    .expect("write the test fstab");
    let fstab = fstab.to_str().unwrap();

    // `mount MOUNTPOINT` with the line found in the fstab.
    run_ok(mount(&["-T", fstab, data.path().to_str().unwrap()]));
    let pids = assert_mounted(&data.path(), &source, &rossfs_bin());
    fs::write(data.path().join("via-fstab.txt"), b"fstab\n").expect("write through the fstab mount");
    umount_and_wait(&data.path(), &pids);
    assert_eq!(scene.object("data/via-fstab.txt"), b"fstab\n");

    // `mount -a` mounts every line without noauto, and leaves mounted ones alone.
    run_ok(mount(&["-T", fstab, "-a"]));
    let pids = assert_mounted(&data.path(), &source, &rossfs_bin());
    assert!(!is_mounted(&whole.path()), "mount -a mounted a noauto line");
    assert_eq!(
        fs::read(data.path().join("via-fstab.txt")).expect("read back"),
        b"fstab\n"
    );
    run_ok(mount(&["-T", fstab, "-a"]));
    assert_eq!(
        daemons(&rossfs_bin(), &data.path()),
        pids,
        "a second mount -a mounted again"
    );

    // A noauto line still mounts when named; `users` (mount(8)'s business) is dropped.
    run_ok(mount(&["-T", fstab, whole.path().to_str().unwrap()]));
    let whole_pids = assert_mounted(&whole.path(), &scene.bucket, &rossfs_bin());
    assert_eq!(
        fs::read(whole.path().join("data/seed.txt")).expect("read"),
        b"seed\n"
    );

    umount_and_wait(&whole.path(), &whole_pids);
    umount_and_wait(&data.path(), &pids);
}

#[test]
fn ro_and_uid_reach_rossfs() {
    let scene = Scene::new("pkg-options");
    let _helper = HelperLink::install();
    let mnt = MountDir::new();
    let source = format!("{}:/data", scene.bucket);
    let opts = format!("{},ro,uid=1234", scene.options());
    run_ok(mount_t(&source, &mnt.path(), &opts));
    let pids = assert_mounted(&mnt.path(), &source, &rossfs_bin());

    let seed = fs::metadata(mnt.path().join("seed.txt")).expect("stat seed.txt");
    assert_eq!(seed.uid(), 1234, "uid= did not reach rossfs");
    assert_eq!(fs::metadata(mnt.path()).expect("stat root").uid(), 1234);
    let err = fs::write(mnt.path().join("nope.txt"), b"x").expect_err("write on a ro mount");
    assert_eq!(
        err.raw_os_error(),
        Some(libc::EROFS),
        "write on a ro mount: {err}"
    );

    umount_and_wait(&mnt.path(), &pids);
}

#[test]
fn unknown_option_fails_with_rossfs_message_and_mount_exit_code() {
    let scene = Scene::new("pkg-bad-option");
    let _helper = HelperLink::install();
    let mnt = MountDir::new();
    let opts = format!("{},bogus_option", scene.options());
    let out = run(mount_t(&scene.bucket, &mnt.path(), &opts));
    assert_eq!(
        out.status.code(),
        Some(32),
        "mount's code for a failed mount; stderr: {}",
        stderr_of(&out)
    );
    assert!(
        stderr_of(&out).contains("unknown option 'bogus_option'"),
        "rossfs's reason missing: {}",
        stderr_of(&out)
    );
    assert!(!is_mounted(&mnt.path()));

    // Called wrongly, the helper says how to call it and exits 1 (mount's "incorrect invocation").
    let out = run(command(repo_helper()));
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    assert!(stderr_of(&out).contains("usage:"), "{}", stderr_of(&out));
}

/// The page is generated from `rossfs --help`: every -o option shows up with an s3fs/ossfs
/// equivalent, and an option added without a row in option-equivalents.tsv fails the build.
#[test]
fn man_page_lists_every_option_with_its_equivalent() {
    let out = run_ok({
        let mut cmd = command(repo().join("packaging/gen-man.sh"));
        cmd.arg(rossfs_bin());
        cmd
    });
    let roff = String::from_utf8_lossy(&out.stdout);
    let help = run_ok({
        let mut cmd = command(rossfs_bin());
        cmd.arg("--help");
        cmd
    });
    let help = String::from_utf8_lossy(&help.stdout).into_owned();
    let options: Vec<&str> = help
        .lines()
        .skip_while(|l| *l != "Options (-o):")
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .collect();
    assert!(
        options.len() > 20,
        "too few -o options parsed from --help: {options:?}"
    );
    for line in &options {
        let name = line.trim_start().split(['=', ',', ' ']).next().unwrap();
        let roff_name = format!("\\fB{}\\fR", name.replace('-', "\\-"));
        assert!(roff.contains(&roff_name), "rossfs.8 lacks option {name}");
    }
    assert!(
        roff.matches("s3fs/ossfs:").count() >= options.len(),
        "some -o entries lack their s3fs/ossfs equivalent"
    );
}

#[test]
fn bash_completion_offers_option_names_from_help() {
    let script = format!(
        "source {completion}\n\
         complete() {{ COMP_LINE=$1; COMP_POINT=${{#COMP_LINE}}; COMP_WORDS=({bin}); COMP_CWORD=1;\n\
           _rossfs; printf '%s\\n' \"${{COMPREPLY[@]}}\"; echo --; }}\n\
         complete 'rossfs b /mnt -o use_pa'\n\
         complete 'rossfs b /mnt -o url=http://h:9000,passwd_f'\n\
         complete 'rossfs b /mnt -o '\n",
        completion = repo().join("packaging/completions/rossfs.bash").display(),
        bin = rossfs_bin().display(),
    );
    let out = run_ok({
        let mut cmd = command("bash");
        cmd.arg("-c").arg(script);
        cmd
    });
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let answers: Vec<&str> = text.split("--\n").collect();
    assert_eq!(answers[0], "use_path_request_style\n");
    // readline already split the word at the last ':' and hands back only what follows it.
    assert_eq!(answers[1], "9000,passwd_file=\n");
    for name in ["url=", "region=", "ro", "allow_other", "uid=", "dbglevel="] {
        assert!(
            answers[2].lines().any(|l| l == name),
            "'-o ' does not offer {name}: {}",
            answers[2]
        );
    }
}

/// `dpkg-query` status of the rossfs package, empty when it is not installed.
fn package_status() -> String {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", "rossfs"])
        .stderr(Stdio::null())
        .output()
        .expect("run dpkg-query");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The package installed by the test; removed again when dropped.
struct InstalledPackage;

impl InstalledPackage {
    fn install(deb: &Path) -> InstalledPackage {
        let mut cmd = command("dpkg");
        cmd.arg("-i").arg(deb).env("DEBIAN_FRONTEND", "noninteractive");
        // Constructed first so that a half-finished install is cleaned up too.
        let installed = InstalledPackage;
        run_ok(cmd);
        installed
    }

    fn remove(self) -> Output {
        let out = run(Self::remove_command());
        std::mem::forget(self);
        out
    }

    fn remove_command() -> Command {
        let mut cmd = command("dpkg");
        cmd.args(["-r", "rossfs"])
            .env("DEBIAN_FRONTEND", "noninteractive");
        cmd
    }
}

impl Drop for InstalledPackage {
    fn drop(&mut self) {
        if !package_status().is_empty() && !package_status().contains("not-installed") {
            let _ = run(Self::remove_command());
        }
    }
}

/// `man` and its formatter, installed from the archive only when missing.
fn ensure_man() {
    let have = |tool: &str| {
        Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {tool}"))
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if have("man") && have("groff") {
        return;
    }
    let mut install = command("apt-get");
    install
        .args(["install", "-y", "--no-install-recommends", "man-db", "groff-base"])
        .env("DEBIAN_FRONTEND", "noninteractive");
    if !run(install).status.success() {
        let mut update = command("apt-get");
        update.arg("update");
        run_ok(update);
        let mut install = command("apt-get");
        install
            .args(["install", "-y", "--no-install-recommends", "man-db", "groff-base"])
            .env("DEBIAN_FRONTEND", "noninteractive");
        run_ok(install);
    }
}

fn render_man(args: &[&str]) -> String {
    let mut cmd = command("man");
    cmd.args(args)
        .env("MANPAGER", "cat")
        .env("PAGER", "cat")
        .env("MANWIDTH", "100");
    let out = run_ok(cmd);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn deb_package_builds_installs_mounts_and_removes() {
    let _lock = sbin_lock();
    let status = package_status();
    assert!(
        status.is_empty() || status.contains("not-installed"),
        "the rossfs package is already installed ({status}); this test installs and removes \
         it, so remove it first (dpkg -r rossfs)"
    );
    clear_helper_path();
    let scene = Scene::new("pkg-deb");

    // Build from the test binary (no release build) with fast compression.
    let out_dir = TempDir::with_prefix("rossfs-deb-").expect("output dir");
    let built = run_ok({
        let mut cmd = command(repo().join("packaging/build-deb.sh"));
        cmd.arg(out_dir.path())
            .env("ROSSFS_DEB_BINARY", rossfs_bin())
            .env("ROSSFS_DEB_COMPRESSION", "gzip");
        cmd
    });
    let deb = PathBuf::from(
        String::from_utf8_lossy(&built.stdout)
            .lines()
            .last()
            .expect("build-deb.sh printed the .deb path")
            .trim(),
    );
    assert!(deb.is_file(), "{} was not built", deb.display());

    let info = run_ok({
        let mut cmd = command("dpkg-deb");
        cmd.arg("--field").arg(&deb).arg("Depends");
        cmd
    });
    assert!(
        String::from_utf8_lossy(&info.stdout).contains("fuse3"),
        "the package must depend on fuse3"
    );

    let package = InstalledPackage::install(&deb);
    for (path, mode) in [
        ("/usr/bin/rossfs", 0o755),
        (HELPER_PATH, 0o755),
        ("/usr/share/man/man8/rossfs.8.gz", 0o644),
        ("/usr/share/bash-completion/completions/rossfs", 0o644),
        ("/usr/share/doc/rossfs/examples/mnt-data.mount", 0o644),
        ("/usr/share/doc/rossfs/README.Debian", 0o644),
    ] {
        let meta = fs::metadata(path).unwrap_or_else(|e| panic!("{path} not installed: {e}"));
        assert_eq!(meta.mode() & 0o7777, mode, "mode of {path}");
        assert_eq!(meta.uid(), 0, "owner of {path}");
    }
    let readme = fs::read_to_string("/usr/share/doc/rossfs/README.Debian").expect("README.Debian");
    assert!(
        readme.contains("PRUNEFS"),
        "README.Debian lacks the updatedb note"
    );

    ensure_man();
    let page = render_man(&["-l", "/usr/share/man/man8/rossfs.8.gz"]);
    for needle in [
        "MOUNT OPTIONS",
        "passwd_file=PATH",
        "s3fs/ossfs:",
        "fuse.rossfs",
        "PRUNEFS",
    ] {
        assert!(
            page.contains(needle),
            "man -l rossfs.8.gz lacks '{needle}':\n{page}"
        );
    }
    assert!(
        render_man(&["8", "rossfs"]).contains("MOUNT OPTIONS"),
        "man 8 rossfs"
    );
    assert!(
        render_man(&["mount.fuse.rossfs"]).contains("MOUNT OPTIONS"),
        "man mount.fuse.rossfs"
    );

    // A mount through the installed helper and binary, with systemd's PATH and no ROSSFS_BIN.
    let mnt = MountDir::new();
    let mut cmd = command("mount");
    cmd.args(["-t", "fuse.rossfs", &scene.bucket, mnt.path().to_str().unwrap()])
        .args(["-o", &format!("{},_netdev", scene.options())])
        .env_remove("ROSSFS_BIN")
        .env("PATH", SYSTEM_PATH);
    run_ok(cmd);
    let pids = assert_mounted(&mnt.path(), &scene.bucket, Path::new("/usr/bin/rossfs"));
    fs::write(mnt.path().join("from-package.txt"), b"deb\n").expect("write through the package's mount");
    assert_eq!(
        fs::read(mnt.path().join("data/seed.txt")).expect("read seed"),
        b"seed\n"
    );
    umount_and_wait(&mnt.path(), &pids);
    assert_eq!(scene.object("from-package.txt"), b"deb\n");

    let removed = package.remove();
    assert!(
        removed.status.success(),
        "dpkg -r rossfs: {}",
        stderr_of(&removed)
    );
    for path in ["/usr/bin/rossfs", HELPER_PATH, "/usr/share/man/man8/rossfs.8.gz"] {
        assert_eq!(
            fs::symlink_metadata(path).map(|_| ()).map_err(|e| e.kind()),
            Err(ErrorKind::NotFound),
            "{path} left behind by dpkg -r"
        );
    }
}
