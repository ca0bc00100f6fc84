//! `rossfs BUCKET /dev/fd/N`: serving a FUSE connection that a privileged parent opened and
//! mounted (what a CSI node plugin does). The test plays the parent: it opens `/dev/fuse`,
//! mounts it with `mount(2)`, starts `rossfs -f` with the descriptor inherited as N (where
//! rossfs cannot open `/dev/fuse` itself), uses the mount, unmounts it with `umount2(2)` and
//! expects rossfs to exit on its own.

mod common;

use std::ffi::CString;
use std::fs;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use common::*;
use tempfile::TempDir;

/// Upper bound for anything the test waits for (the first answer, the daemon's exit).
const DEADLINE: Duration = Duration::from_secs(60);

fn cstring(s: &str) -> CString {
    CString::new(s).expect("no NUL byte")
}

/// Runs `f` on a helper thread and gives up after `limit`: a FUSE request blocks for as long
/// as the daemon does not answer, and a stuck test should fail, not hang.
fn within<T: Send + 'static>(limit: Duration, what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(limit) {
        Ok(v) => v,
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("{what} did not finish within {limit:?}"),
        Err(mpsc::RecvTimeoutError::Disconnected) => panic!("{what} failed (see the panic above)"),
    }
}

/// The parent's side of a handover: a mounted FUSE connection and the rossfs serving it.
/// Dropping it detaches the mount and kills rossfs, whatever state the test left.
struct Handover {
    mountpoint: Option<TempDir>,
    scratch: TempDir,
    child: Option<Child>,
}

impl Handover {
    fn path(&self) -> &Path {
        self.mountpoint.as_ref().expect("mountpoint").path()
    }

    fn stderr(&self) -> String {
        fs::read_to_string(self.scratch.path().join("rossfs.stderr")).unwrap_or_default()
    }

    /// Mounts a fresh FUSE connection on a temp dir and hands it to `rossfs BUCKET /dev/fd/N -f`.
    fn start(bucket: &str) -> Handover {
        let server = server();
        let scratch = TempDir::with_prefix("rossfs-fdh-").expect("scratch dir");
        let mountpoint = TempDir::with_prefix("rossfs-fdh-mnt-").expect("mountpoint");
        let passwd = write_passwd_file(scratch.path(), &server.access_key, &server.secret_key);
        let mut handover = Handover {
            mountpoint: Some(mountpoint),
            scratch,
            child: None,
        };

        // std opens with O_CLOEXEC: the descriptor stays private to this process (other test
        // threads may be spawning children) until the pre_exec hook below clears the flag in
        // rossfs's child process only.
        let dev = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/fuse")
            .expect("open /dev/fuse (is the fuse module loaded?)");
        let fd: RawFd = dev.as_raw_fd();
        assert!(fd > 2, "/dev/fuse opened as descriptor {fd}");
        let data = cstring(&format!(
            "fd={fd},rootmode=40000,user_id=0,group_id=0,default_permissions"
        ));
        let source = cstring(bucket);
        let target = cstring(handover.path().to_str().expect("UTF-8 temp path"));
        let fstype = cstring("fuse.rossfs");
        // SAFETY: valid NUL-terminated strings that outlive the call.
        let rc = unsafe {
            libc::mount(
                source.as_ptr(),
                target.as_ptr(),
                fstype.as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV,
                data.as_ptr().cast(),
            )
        };
        assert_eq!(
            rc,
            0,
            "mount(2) of /dev/fuse: {}",
            std::io::Error::last_os_error()
        );
        assert!(
            is_mounted(handover.path()),
            "mount(2) succeeded but no mount shows"
        );

        let stderr = fs::File::create(handover.scratch.path().join("rossfs.stderr")).expect("log file");
        let mut cmd = Command::new(rossfs_bin());
        cmd.arg(bucket)
            .arg(format!("/dev/fd/{fd}"))
            .arg("-f")
            .arg("-o")
            .arg(base_options(&passwd))
            .stdin(Stdio::null())
            .stdout(stderr.try_clone().expect("dup log"))
            .stderr(stderr);
        for var in [
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN",
            "AWS_PROFILE",
        ] {
            cmd.env_remove(var);
        }
        // rossfs runs where /dev/fuse cannot be opened, as in a container that only gets the
        // descriptor: a mount namespace of its own with /dev/null over /dev/fuse, and without
        // its copy of the FUSE mount (which would outlive the parent's unmount).
        let (root, dev_null, dev_fuse) = (cstring("/"), cstring("/dev/null"), cstring("/dev/fuse"));
        let own_copy = target.clone();
        // SAFETY: fcntl, unshare and mount are async-signal-safe system calls; they run in the
        // forked child before exec, on strings allocated before the fork.
        unsafe {
            cmd.pre_exec(move || {
                let flags = libc::fcntl(fd, libc::F_GETFD);
                if flags < 0 || libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::unshare(libc::CLONE_NEWNS) != 0
                    || libc::mount(
                        std::ptr::null(),
                        root.as_ptr(),
                        std::ptr::null(),
                        libc::MS_REC | libc::MS_PRIVATE,
                        std::ptr::null(),
                    ) != 0
                    || libc::mount(
                        dev_null.as_ptr(),
                        dev_fuse.as_ptr(),
                        std::ptr::null(),
                        libc::MS_BIND,
                        std::ptr::null(),
                    ) != 0
                    || libc::umount2(own_copy.as_ptr(), libc::MNT_DETACH) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        handover.child = Some(cmd.spawn().expect("start rossfs"));
        // rossfs holds its own copy now. Closing ours means the connection is aborted, and
        // every waiting request fails instead of hanging, should rossfs die.
        drop(dev);
        handover
    }

    /// Waits until the mount answers a stat of its root; panics with rossfs's stderr if it
    /// exits first or does not answer in time.
    fn wait_until_served(&mut self) {
        let root = self.path().to_path_buf();
        let answered = within(DEADLINE, "the first stat of the handed-over mount", move || {
            fs::metadata(&root)
        });
        if let Err(e) = answered {
            let status = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
            panic!(
                "the handed-over mount does not answer ({e}); rossfs status {status:?}, stderr:\n{}",
                self.stderr()
            );
        }
    }

    /// `umount2(2)` the mount (as its owner, the parent, would) and wait for rossfs to exit.
    fn unmount_and_wait(mut self) -> ExitStatus {
        let target = cstring(self.path().to_str().expect("UTF-8 temp path"));
        // SAFETY: valid NUL-terminated path.
        let rc = unsafe { libc::umount2(target.as_ptr(), 0) };
        assert_eq!(rc, 0, "umount2: {}", std::io::Error::last_os_error());
        assert!(!is_mounted(self.path()), "still mounted after umount2");
        let mut child = self.child.take().expect("rossfs child");
        let stderr = self.stderr();
        wait_with_deadline(
            &mut child,
            DEADLINE,
            "rossfs after its mount was unmounted",
            || stderr.clone(),
        )
    }
}

impl Drop for Handover {
    fn drop(&mut self) {
        let Some(dir) = self.mountpoint.take() else {
            return;
        };
        if is_mounted(dir.path()) {
            if let Some(target) = dir.path().to_str().map(cstring) {
                // SAFETY: valid NUL-terminated path.
                unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
            }
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if is_mounted(dir.path()) {
            // Never let TempDir's recursive removal walk into a live mount.
            eprintln!("leaving {} behind: still mounted", dir.path().display());
            std::mem::forget(dir);
        }
    }
}

/// The filesystem type of the mount at `path`, from /proc/self/mountinfo.
fn fstype_at(path: &Path) -> Option<String> {
    let want = fs::canonicalize(path).unwrap_or_else(|_| PathBuf::from(path));
    let table = fs::read_to_string("/proc/self/mountinfo").ok()?;
    table.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(' ').collect();
        let sep = fields.iter().position(|f| *f == "-")?;
        (Path::new(fields.get(4)?) == want).then(|| fields.get(sep + 1).map(|s| s.to_string()))?
    })
}

#[test]
fn rossfs_serves_a_fuse_descriptor_mounted_by_its_parent() {
    let bucket = block_on(new_bucket("fd-handover"));
    let client = block_on(s3_client());
    block_on(put_object(
        &client,
        &bucket,
        "seed.txt",
        b"from the bucket\n".to_vec(),
    ));

    let mut handover = Handover::start(&bucket);
    handover.wait_until_served();
    let mnt = handover.path().to_path_buf();
    assert_eq!(fstype_at(&mnt).as_deref(), Some("fuse.rossfs"));

    // Existing objects read through the handed-over connection.
    let seed = within(DEADLINE, "reading seed.txt", {
        let p = mnt.join("seed.txt");
        move || fs::read(p)
    })
    .expect("read seed.txt through the mount");
    assert_eq!(seed, b"from the bucket\n");

    // Writes go through it to the bucket when the file is closed.
    let body: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    within(DEADLINE, "writing and reading back", {
        let (dir, body) = (mnt.clone(), body.clone());
        move || {
            fs::create_dir(dir.join("sub")).expect("mkdir through the mount");
            fs::write(dir.join("sub/written.bin"), &body).expect("write through the mount");
            let back = fs::read(dir.join("sub/written.bin")).expect("read back");
            assert!(
                back == body,
                "read back {} bytes that differ from what was written",
                back.len()
            );
            let meta = fs::metadata(dir.join("sub/written.bin")).expect("stat");
            assert_eq!(meta.len(), body.len() as u64);
            assert_eq!(meta.uid(), 0, "owner of a file root created");
            let mut names: Vec<String> = fs::read_dir(&dir)
                .expect("readdir")
                .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            assert_eq!(names, ["seed.txt", "sub"]);
        }
    });
    assert_eq!(block_on(get_object(&client, &bucket, "sub/written.bin")), body);

    // The parent unmounts; rossfs notices the end of the connection and exits cleanly.
    let stderr_path = handover.scratch.path().join("rossfs.stderr");
    let status = handover.unmount_and_wait();
    assert!(
        status.success(),
        "rossfs exited with {status} after the unmount; stderr:\n{}",
        fs::read_to_string(stderr_path).unwrap_or_default()
    );
}

#[test]
fn unusable_descriptors_are_refused_with_the_reason() {
    for (fd, needle) in [("2", "N > 2"), ("notanumber", "N > 2"), ("987", "not open")] {
        let out = Command::new(rossfs_bin())
            .arg("some-bucket")
            .arg(format!("/dev/fd/{fd}"))
            .arg("-f")
            .stdin(Stdio::null())
            .output()
            .expect("run rossfs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "/dev/fd/{fd}: {stderr}");
        assert!(
            stderr.contains(needle),
            "/dev/fd/{fd}: expected '{needle}' in: {stderr}"
        );
    }
}
