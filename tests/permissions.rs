//! POSIX permission emulation seen by non-root processes: allow_other, mp_umask, umask, uid=,
//! gid=, supplementary groups, chmod/chown rules and the stored metadata dialect.
//!
//! Each step that must run as another user forks a child that drops to that user's uid, gid
//! and supplementary groups (what `setpriv --reuid --regid --groups` does) and performs one
//! system call; the child's exit code is the errno (0 for success), so the tests assert errnos,
//! not messages. No account needs to exist in /etc/passwd.

mod common;

use std::ffi::CString;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use aws_sdk_s3::primitives::ByteStream;
use common::*;

/// A user to run steps as.
#[derive(Clone, Copy, Debug)]
struct User {
    uid: u32,
    gid: u32,
    groups: &'static [u32],
}

/// uid 1000, primary group 1000, supplementary member of group 3000 (the fsGroup case).
const U1000: User = User {
    uid: 1000,
    gid: 1000,
    groups: &[3000],
};
/// uid 2000, no supplementary groups.
const U2000: User = User {
    uid: 2000,
    gid: 2000,
    groups: &[],
};

/// One system call to make as a user.
#[derive(Clone, Copy, Debug)]
enum Op<'a> {
    /// stat(2).
    Stat(&'a Path),
    /// opendir(3) and one readdir(3): entering a directory.
    List(&'a Path),
    /// open O_RDONLY and read one byte.
    Read(&'a Path),
    /// open O_WRONLY|O_CREAT|O_TRUNC with the mode, write, close (close reports the upload).
    Write(&'a Path, u32),
    /// open O_WRONLY (no O_TRUNC), write at offset 0, close.
    Overwrite(&'a Path),
    /// chmod(2).
    Chmod(&'a Path, u32),
    /// chown(2); `u32::MAX` leaves that id unchanged.
    Chown(&'a Path, u32, u32),
    /// truncate(2) to this length.
    Truncate(&'a Path, i64),
    /// open O_WRONLY, fallocate(2) mode 0 of its first byte (no change of size), close.
    Fallocate(&'a Path),
}

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_encoded_bytes()).expect("path without NUL")
}

/// Runs `op` as `user` in a forked child; returns the errno (0 on success).
fn run_as(user: User, op: Op<'_>) -> i32 {
    let path = match op {
        Op::Stat(p)
        | Op::List(p)
        | Op::Read(p)
        | Op::Write(p, _)
        | Op::Overwrite(p)
        | Op::Chmod(p, _)
        | Op::Chown(p, _, _)
        | Op::Truncate(p, _)
        | Op::Fallocate(p) => cpath(p),
    };
    let groups: Vec<libc::gid_t> = user.groups.to_vec();
    // SAFETY: the child makes only async-signal-safe libc calls on memory prepared before the
    // fork, then leaves with _exit.
    unsafe {
        let pid = libc::fork();
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            // Drop descriptors inherited from other test threads (files open on other mounts),
            // or this child could keep a mount busy while another test unmounts it.
            libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
            let err = || *libc::__errno_location();
            if libc::setgroups(groups.len(), groups.as_ptr()) != 0
                || libc::setresgid(user.gid, user.gid, user.gid) != 0
                || libc::setresuid(user.uid, user.uid, user.uid) != 0
            {
                libc::_exit(120);
            }
            libc::umask(0o022);
            // Writes `data` at offset 0 of the descriptor `fd` just opened, then closes it (the
            // close reports the upload): the errno of the first step that failed, or 0.
            let write_at_start = |fd: libc::c_int, data: &[u8]| {
                if fd < 0 {
                    return err();
                }
                if libc::pwrite(fd, data.as_ptr().cast(), data.len(), 0) < 0 {
                    let write_errno = err();
                    libc::close(fd);
                    return write_errno;
                }
                if libc::close(fd) != 0 {
                    err()
                } else {
                    0
                }
            };
            let rc = match op {
                Op::Stat(_) => {
                    let mut st: libc::stat = std::mem::zeroed();
                    if libc::stat(path.as_ptr(), &mut st) == 0 {
                        0
                    } else {
                        err()
                    }
                }
                Op::List(_) => {
                    let d = libc::opendir(path.as_ptr());
                    if d.is_null() {
                        err()
                    } else {
                        libc::readdir(d);
                        libc::closedir(d);
                        0
                    }
                }
                Op::Read(_) => {
                    let fd = libc::open(path.as_ptr(), libc::O_RDONLY);
                    if fd < 0 {
                        err()
                    } else {
                        let mut b = [0u8; 1];
                        let n = libc::read(fd, b.as_mut_ptr().cast(), 1);
                        let e = if n < 0 { err() } else { 0 };
                        libc::close(fd);
                        e
                    }
                }
                Op::Write(_, mode) => write_at_start(
                    libc::open(
                        path.as_ptr(),
                        libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC,
                        mode,
                    ),
                    b"written as a user\n",
                ),
                Op::Overwrite(_) => write_at_start(libc::open(path.as_ptr(), libc::O_WRONLY), b"over"),
                Op::Chmod(_, mode) => {
                    if libc::chmod(path.as_ptr(), mode) == 0 {
                        0
                    } else {
                        err()
                    }
                }
                Op::Chown(_, uid, gid) => {
                    if libc::chown(path.as_ptr(), uid, gid) == 0 {
                        0
                    } else {
                        err()
                    }
                }
                Op::Truncate(_, len) => {
                    if libc::truncate(path.as_ptr(), len) == 0 {
                        0
                    } else {
                        err()
                    }
                }
                Op::Fallocate(_) => {
                    let fd = libc::open(path.as_ptr(), libc::O_WRONLY);
                    if fd < 0 {
                        err()
                    } else {
                        let rc = libc::fallocate(fd, 0, 0, 1);
                        let e = if rc != 0 { err() } else { 0 };
                        if libc::close(fd) != 0 && e == 0 {
                            err()
                        } else {
                            e
                        }
                    }
                }
            };
            libc::_exit(rc);
        }
        let mut status = 0;
        assert_eq!(libc::waitpid(pid, &mut status, 0), pid);
        assert!(libc::WIFEXITED(status), "child did not exit normally");
        let code = libc::WEXITSTATUS(status);
        assert_ne!(code, 120, "could not switch to {user:?}");
        code
    }
}

fn mode_of(p: &Path) -> u32 {
    fs::metadata(p)
        .unwrap_or_else(|e| panic!("stat {}: {e}", p.display()))
        .mode()
        & 0o7777
}

async fn stored_metadata(bucket: &str, key: &str) -> std::collections::HashMap<String, String> {
    let c = s3_client().await;
    let h = c
        .head_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .expect("HeadObject");
    h.metadata().cloned().unwrap_or_default()
}

#[test]
fn mount_root_follows_allow_other_and_mp_umask() {
    let bucket = block_on(new_bucket("root"));
    let m = Mount::mount(&bucket, &[]);
    assert_eq!(mode_of(m.path()), 0o700);
    assert_eq!(
        run_as(U1000, Op::List(m.path())),
        libc::EACCES,
        "no allow_other: others stay out"
    );
    assert_eq!(run_as(U1000, Op::Stat(&m.path().join("x"))), libc::EACCES);
    m.unmount();

    let m = Mount::mount(&bucket, &["allow_other", "mp_umask=007", "gid=3000"]);
    assert_eq!(mode_of(m.path()), 0o770);
    assert_eq!(fs::metadata(m.path()).unwrap().gid(), 3000);
    assert_eq!(
        run_as(U1000, Op::List(m.path())),
        0,
        "a member of the root's group enters"
    );
    assert_eq!(run_as(U2000, Op::List(m.path())), libc::EACCES, "others do not");
    m.unmount();

    let m = Mount::mount(&bucket, &["allow_other", "mp_umask=077"]);
    assert_eq!(mode_of(m.path()), 0o700);
    assert_eq!(run_as(U1000, Op::List(m.path())), libc::EACCES);
    m.unmount();

    let m = Mount::mount(&bucket, &["allow_other"]);
    assert_eq!(mode_of(m.path()), 0o777);
    assert_eq!(run_as(U2000, Op::List(m.path())), 0);
    m.unmount();
}

#[test]
fn objects_without_metadata_use_defaults_and_overrides() {
    let bucket = block_on(new_bucket("defaults"));
    block_on(async {
        put_object(
            &s3_client().await,
            &bucket,
            "plain.txt",
            b"console upload".to_vec(),
        )
        .await
    });

    let m = Mount::mount(&bucket, &["allow_other"]);
    let f = m.path().join("plain.txt");
    let meta = fs::metadata(&f).unwrap();
    assert_eq!((meta.mode() & 0o7777, meta.uid(), meta.gid()), (0o640, 0, 0));
    assert_eq!(run_as(U1000, Op::Read(&f)), libc::EACCES);
    m.unmount();

    let m = Mount::mount(&bucket, &["allow_other", "umask=022"]);
    let f = m.path().join("plain.txt");
    assert_eq!(mode_of(&f), 0o755);
    assert_eq!(run_as(U1000, Op::Read(&f)), 0);
    m.unmount();

    let m = Mount::mount(&bucket, &["allow_other", "uid=1000", "gid=1001"]);
    let f = m.path().join("plain.txt");
    let meta = fs::metadata(&f).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid(), meta.mode() & 0o7777),
        (1000, 1001, 0o640)
    );
    assert_eq!(run_as(U1000, Op::Read(&f)), 0);
    assert_eq!(run_as(U2000, Op::Read(&f)), libc::EACCES);
    m.unmount();

    let m = Mount::mount(&bucket, &["allow_other", "file_mode=0604", "dir_mode=0711"]);
    assert_eq!(mode_of(&m.path().join("plain.txt")), 0o604);
    assert_eq!(run_as(U2000, Op::Read(&m.path().join("plain.txt"))), 0);
    m.unmount();
}

#[test]
fn chmod_under_umask_is_stored_but_presentation_stays() {
    let bucket = block_on(new_bucket("umask133"));
    block_on(async { put_object(&s3_client().await, &bucket, "f", b"f".to_vec()).await });
    let m = Mount::mount(&bucket, &["allow_other", "umask=133"]);
    let f = m.path().join("f");
    assert_eq!(mode_of(&f), 0o644);
    fs::set_permissions(&f, fs::Permissions::from_mode(0o777)).unwrap();
    assert_eq!(mode_of(&f), 0o644);
    let meta = block_on(stored_metadata(&bucket, "f"));
    assert_eq!(meta.get("mode").map(String::as_str), Some("33279"), "{meta:?}");
    // The copy kept the object's content.
    assert_eq!(fs::read(&f).unwrap(), b"f");
    m.unmount();
}

#[test]
fn subpath_mount_with_umask_000_shows_everything_0777() {
    let bucket = block_on(new_bucket("subpath"));
    block_on(async {
        let c = s3_client().await;
        put_object(&c, &bucket, "a/b/x", b"x".to_vec()).await;
        put_object(&c, &bucket, "a/b/d/y", b"y".to_vec()).await;
        c.put_object()
            .bucket(&bucket)
            .key("a/b/z")
            .metadata("mode", "33152")
            .body(ByteStream::from_static(b"z"))
            .send()
            .await
            .unwrap();
    });
    let m = Mount::mount(&format!("{bucket}:/a/b"), &["allow_other", "umask=000"]);
    for p in ["", "x", "d", "d/y", "z"] {
        assert_eq!(mode_of(&m.path().join(p)), 0o777, "{p:?}");
    }
    assert_eq!(run_as(U2000, Op::Read(&m.path().join("d/y"))), 0);
    m.unmount();
}

#[test]
fn supplementary_groups_count() {
    let bucket = block_on(new_bucket("groups"));
    block_on(async {
        s3_client()
            .await
            .put_object()
            .bucket(&bucket)
            .key("shared.txt")
            .metadata("mode", "33184")
            .metadata("uid", "0")
            .metadata("gid", "3000")
            .body(ByteStream::from_static(b"for group 3000"))
            .send()
            .await
            .unwrap();
    });
    let m = Mount::mount(&bucket, &["allow_other"]);
    let f = m.path().join("shared.txt");
    let meta = fs::metadata(&f).unwrap();
    assert_eq!((meta.mode() & 0o7777, meta.gid()), (0o640, 3000));
    assert_eq!(
        run_as(U1000, Op::Read(&f)),
        0,
        "member of 3000 through a supplementary group"
    );
    assert_eq!(run_as(U2000, Op::Read(&f)), libc::EACCES);
    assert_eq!(
        run_as(U1000, Op::Write(&f, 0o644)),
        libc::EACCES,
        "group has no write bit"
    );
    m.unmount();
}

#[test]
fn chown_and_chmod_follow_posix_rules() {
    let bucket = block_on(new_bucket("chown"));
    // Written by another client before the mount lists the root (it would show only after
    // the TTL otherwise).
    block_on(async { put_object(&s3_client().await, &bucket, "implicit/leaf", b"l".to_vec()).await });
    let m = Mount::mount(&bucket, &["allow_other"]);
    let f = m.path().join("owned-by-1000");
    assert_eq!(run_as(U1000, Op::Write(&f, 0o644)), 0);
    let meta = fs::metadata(&f).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid(), meta.mode() & 0o7777),
        (1000, 1000, 0o644)
    );
    assert_eq!(
        run_as(U1000, Op::Chown(&f, 2000, u32::MAX)),
        libc::EPERM,
        "non-root chown"
    );
    assert_eq!(
        run_as(U2000, Op::Chmod(&f, 0o777)),
        libc::EPERM,
        "chmod by a non-owner"
    );
    assert_eq!(
        run_as(U1000, Op::Chown(&f, u32::MAX, 4000)),
        libc::EPERM,
        "chgrp to a foreign group"
    );
    assert_eq!(
        run_as(U1000, Op::Chown(&f, u32::MAX, 3000)),
        0,
        "owner chgrp to its own group"
    );
    assert_eq!(run_as(U1000, Op::Chmod(&f, 0o640)), 0, "owner chmod");
    let meta = fs::metadata(&f).unwrap();
    assert_eq!((meta.gid(), meta.mode() & 0o7777), (3000, 0o640));
    let stored = block_on(stored_metadata(&bucket, "owned-by-1000"));
    assert_eq!(stored.get("gid").map(String::as_str), Some("3000"));
    assert_eq!(stored.get("mode").map(String::as_str), Some("33184"));
    // Root may give the file away.
    std::os::unix::fs::chown(&f, Some(2000), None).unwrap();
    assert_eq!(
        block_on(stored_metadata(&bucket, "owned-by-1000"))
            .get("uid")
            .map(String::as_str),
        Some("2000")
    );
    // Directories: a chmod of an implicit directory creates its marker with the new mode.
    fs::set_permissions(m.path().join("implicit"), fs::Permissions::from_mode(0o705)).unwrap();
    let stored = block_on(stored_metadata(&bucket, "implicit/"));
    assert_eq!(
        stored.get("mode").map(String::as_str),
        Some(&*(0o040705u32).to_string())
    );
    m.unmount();
}

#[test]
fn files_written_by_a_user_keep_their_attributes() {
    let bucket = block_on(new_bucket("keep"));
    let m = Mount::mount(&bucket, &["allow_other"]);
    let f = m.path().join("mine");
    assert_eq!(run_as(U1000, Op::Write(&f, 0o600)), 0);
    let before = fs::metadata(&f).unwrap();
    assert_eq!(
        (before.mode() & 0o7777, before.uid(), before.gid()),
        (0o600, 1000, 1000)
    );
    assert_eq!(run_as(U2000, Op::Read(&f)), libc::EACCES);
    let stored = block_on(stored_metadata(&bucket, "mine"));
    assert_eq!(stored.get("mode").map(String::as_str), Some("33152"));
    assert_eq!(stored.get("uid").map(String::as_str), Some("1000"));
    assert_eq!(stored.get("gid").map(String::as_str), Some("1000"));
    let mtime = stored.get("mtime").expect("mtime metadata");
    let (secs, frac) = mtime.split_once('.').expect("sec.nsec");
    assert_eq!(frac.len(), 9, "{mtime}");
    assert_eq!(secs.parse::<i64>().unwrap(), before.mtime());
    m.unmount();

    let m = Mount::mount(&bucket, &["allow_other"]);
    let after = fs::metadata(m.path().join("mine")).unwrap();
    assert_eq!(
        (
            after.mode(),
            after.uid(),
            after.gid(),
            after.mtime(),
            after.mtime_nsec()
        ),
        (
            before.mode(),
            before.uid(),
            before.gid(),
            before.mtime(),
            before.mtime_nsec()
        )
    );
    assert_eq!(run_as(U1000, Op::Read(&m.path().join("mine"))), 0);
    m.unmount();
}

#[test]
fn setgid_directories_pass_their_group_on() {
    let bucket = block_on(new_bucket("setgid"));
    let m = Mount::mount(&bucket, &["allow_other"]);
    let d = m.path().join("team");
    fs::create_dir(&d).unwrap();
    std::os::unix::fs::chown(&d, None, Some(3000)).unwrap();
    fs::set_permissions(&d, fs::Permissions::from_mode(0o2777)).unwrap();
    assert_eq!(run_as(U2000, Op::Write(&d.join("f"), 0o644)), 0);
    let f = fs::metadata(d.join("f")).unwrap();
    assert_eq!(
        (f.uid(), f.gid()),
        (2000, 3000),
        "new file takes the directory's group"
    );
    fs::create_dir(d.join("sub")).unwrap();
    let sub = fs::metadata(d.join("sub")).unwrap();
    assert_eq!(
        (sub.gid(), sub.mode() & 0o2000),
        (3000, 0o2000),
        "new directory inherits setgid"
    );
    m.unmount();
}

#[test]
fn touch_with_a_fractional_time_round_trips_to_the_nanosecond() {
    let bucket = block_on(new_bucket("touch"));
    let m = Mount::mount(&bucket, &[]);
    let f = m.path().join("t");
    fs::write(&f, b"t").unwrap();
    let status = std::process::Command::new("touch")
        .arg("-d")
        .arg("@1600000000.123456789")
        .arg(&f)
        .status()
        .expect("run touch");
    assert!(status.success());
    let meta = fs::metadata(&f).unwrap();
    assert_eq!((meta.mtime(), meta.mtime_nsec()), (1_600_000_000, 123_456_789));
    let stored = block_on(stored_metadata(&bucket, "t"));
    assert_eq!(
        stored.get("mtime").map(String::as_str),
        Some("1600000000.123456789")
    );
    m.unmount();
    let m = Mount::mount(&bucket, &[]);
    let meta = fs::metadata(m.path().join("t")).unwrap();
    assert_eq!((meta.mtime(), meta.mtime_nsec()), (1_600_000_000, 123_456_789));
    m.unmount();
}

/// Requests of one S3 operation the mount has made so far (0 before the first).
fn s3_requests(port: u16, op: &str) -> f64 {
    requests(&scrape(port), op)
}

#[test]
fn attribute_changes_that_change_nothing_stored_cost_no_request() {
    let bucket = block_on(new_bucket("noop-attr"));
    // An object another tool wrote, with no POSIX metadata: its mode and owner are the mount's
    // defaults, so setting them to what is shown must still store them.
    block_on(async {
        let c = s3_client().await;
        put_object(&c, &bucket, "plain", b"p".to_vec()).await;
        put_object(&c, &bucket, "bare", b"b".to_vec()).await;
    });
    let port = free_port();
    let m = Mount::mount(&bucket, &[&format!("metrics_addr=127.0.0.1:{port}")]);
    let d = m.path().join("made-here");
    fs::create_dir(&d).unwrap();
    let copies = s3_requests(port, "CopyObject");
    let ctime = fs::metadata(&d).unwrap().ctime_nsec();
    let ctime_s = fs::metadata(&d).unwrap().ctime();

    // What tar does for every directory it extracts, as root: chown to the owner it has.
    std::os::unix::fs::chown(&d, Some(0), Some(0)).unwrap();
    fs::set_permissions(&d, fs::Permissions::from_mode(mode_of(&d))).unwrap();
    assert_eq!(
        s3_requests(port, "CopyObject"),
        copies,
        "no-op chown and chmod made a copy"
    );
    let after = fs::metadata(&d).unwrap();
    assert!(
        (after.ctime(), after.ctime_nsec()) > (ctime_s, ctime),
        "ctime moves on a no-op chown, as on a local disk"
    );
    // A real change is stored, at once.
    fs::set_permissions(&d, fs::Permissions::from_mode(0o700)).unwrap();
    assert_eq!(s3_requests(port, "CopyObject"), copies + 1.0);
    let stored = block_on(stored_metadata(&bucket, "made-here/"));
    assert_eq!(
        stored.get("mode").map(String::as_str),
        Some(&*(0o040700u32).to_string())
    );

    // Defaults are not stored values: a chmod and chown to them writes them.
    let plain = m.path().join("plain");
    let shown = fs::metadata(&plain).unwrap();
    fs::set_permissions(&plain, fs::Permissions::from_mode(shown.mode() & 0o7777)).unwrap();
    std::os::unix::fs::chown(&plain, Some(shown.uid()), Some(shown.gid())).unwrap();
    let stored = block_on(stored_metadata(&bucket, "plain"));
    assert_eq!(
        stored.get("mode").map(String::as_str),
        Some(&*(shown.mode()).to_string()),
        "chmod to the default mode is stored: {stored:?}"
    );
    assert_eq!(
        stored.get("uid").map(String::as_str),
        Some(&*shown.uid().to_string())
    );
    // ... and once stored, doing it again is free.
    let copies = s3_requests(port, "CopyObject");
    std::os::unix::fs::chown(&plain, Some(shown.uid()), Some(shown.gid())).unwrap();
    assert_eq!(s3_requests(port, "CopyObject"), copies);
    // chown(path, -1, -1) of a file with no set-ID bit to clear: nothing to store, also
    // for an object with no POSIX metadata, and nothing to upload again for a staged file.
    let bare = m.path().join("bare");
    std::os::unix::fs::chown(&bare, None, None).unwrap();
    let mut open = fs::OpenOptions::new()
        .append(true)
        .open(m.path().join("plain"))
        .unwrap();
    open.write_all(b"+").unwrap();
    open.sync_all().unwrap();
    let puts = s3_requests(port, "PutObject");
    std::os::unix::fs::chown(m.path().join("plain"), None, None).unwrap();
    drop(open);
    assert_eq!(
        s3_requests(port, "CopyObject"),
        copies,
        "chown(-1, -1) made a copy"
    );
    assert_eq!(
        s3_requests(port, "PutObject"),
        puts,
        "chown(-1, -1) made the file upload again"
    );
    m.unmount();
}

/// A truncate to the length a file has moves its mtime and ctime, as on ext4, and costs one
/// metadata copy: not a download and an upload of the content.
#[test]
fn a_truncate_to_the_same_length_moves_the_times_without_a_download() {
    let bucket = block_on(new_bucket("same-len"));
    let body = vec![7u8; 3 << 20];
    block_on(async { put_object(&s3_client().await, &bucket, "big", body.clone()).await });
    let port = free_port();
    let m = Mount::mount(&bucket, &[&format!("metrics_addr=127.0.0.1:{port}")]);
    let p = m.path().join("big");
    let before = fs::metadata(&p).unwrap();
    assert_eq!(before.len(), body.len() as u64);
    let (gets, puts, copies) = (
        s3_requests(port, "GetObject"),
        s3_requests(port, "PutObject"),
        s3_requests(port, "CopyObject"),
    );
    let c = CString::new(p.to_str().unwrap()).unwrap();
    // SAFETY: truncate(2) on a valid NUL-terminated path.
    assert_eq!(unsafe { libc::truncate(c.as_ptr(), body.len() as i64) }, 0);
    let after = fs::metadata(&p).unwrap();
    assert_eq!(after.len(), body.len() as u64);
    assert!(
        (after.mtime(), after.mtime_nsec()) > (before.mtime(), before.mtime_nsec()),
        "mtime moves"
    );
    assert_eq!(s3_requests(port, "GetObject"), gets, "the content was downloaded");
    assert_eq!(
        s3_requests(port, "PutObject"),
        puts,
        "the content was uploaded again"
    );
    assert_eq!(s3_requests(port, "CopyObject"), copies + 1.0);
    assert_eq!(
        block_on(async { get_object(&s3_client().await, &bucket, "big").await }),
        body
    );
    m.unmount();
    let m = Mount::mount(&bucket, &[]);
    let stored = fs::metadata(m.path().join("big")).unwrap();
    assert_eq!(
        (stored.mtime(), stored.len()),
        (after.mtime(), body.len() as u64),
        "the new mtime is stored"
    );
    m.unmount();
}

/// A write by someone other than root clears the set-user-ID bit, and the set-group-ID bit of
/// a group-executable file, as on ext4: through the page cache and through `direct_io`
/// (rossfs clears them; the kernel leaves it to the filesystem). Root keeps them;
/// set-group-ID without group execute stays for a writer in the file's group (also as a
/// supplementary group) and goes for anyone else. The new modes are stored.
#[test]
fn a_write_by_another_user_clears_set_id_bits() {
    let bucket = block_on(new_bucket("setid-write"));
    for opts in [&[][..], &["direct_io"][..]] {
        let m = Mount::mount(&bucket, &[&["allow_other"], opts].concat());
        // name, mode before, mode after, the file's group, the writer
        let cases = [
            ("suid", 0o4777, 0o777, 0, U2000),
            ("sgid-x", 0o2777, 0o777, 0, U2000),
            ("sgid-nox", 0o2767, 0o767, 0, U2000),
            ("sgid-nox-member", 0o2767, 0o2767, 3000, U1000),
            ("both-member", 0o6767, 0o2767, 3000, U1000),
            ("both", 0o6777, 0o777, 0, U2000),
        ];
        for (name, before, _, group, _) in cases {
            let p = m.path().join(name);
            fs::write(&p, b"root's").unwrap();
            std::os::unix::fs::chown(&p, None, Some(group)).unwrap();
            fs::set_permissions(&p, fs::Permissions::from_mode(before)).unwrap();
        }
        let by_root = m.path().join("by-root");
        fs::write(&by_root, b"root's").unwrap();
        fs::set_permissions(&by_root, fs::Permissions::from_mode(0o4777)).unwrap();
        fs::OpenOptions::new()
            .write(true)
            .open(&by_root)
            .unwrap()
            .write_all(b"r")
            .unwrap();
        assert_eq!(
            mode_of(&by_root) & 0o7777,
            0o4777,
            "{opts:?}: root's write kept S_ISUID"
        );
        for (name, before, after, _, by) in cases {
            let p = m.path().join(name);
            assert_eq!(run_as(by, Op::Overwrite(&p)), 0, "{opts:?} {name}");
            assert_eq!(
                mode_of(&p) & 0o7777,
                after,
                "{opts:?} {name}: {before:o} after a write by {by:?}"
            );
        }
        m.unmount();
        let m = Mount::mount(&bucket, &[]);
        for (name, _, after, _, _) in cases {
            assert_eq!(
                mode_of(&m.path().join(name)) & 0o7777,
                after,
                "{opts:?} {name} stored"
            );
        }
        for (name, _, _, _, _) in cases {
            fs::remove_file(m.path().join(name)).unwrap();
        }
        fs::remove_file(m.path().join("by-root")).unwrap();
        m.unmount();
    }
}

/// A chown clears the set-user-ID bit of a file, and its set-group-ID bit if the group may
/// execute, whoever makes it and also when it names no new owner, `chown(path, -1, -1)` (a
/// directory keeps both); a truncate by someone other than root clears them too, root's
/// keeps them; a set-group-ID bit without group execute goes only for a caller outside the
/// file's group: as on ext4. The new modes are stored. (The kernel leaves this to rossfs,
/// which spares a GETATTR before every chown and a GETXATTR before every write.)
#[test]
fn a_chown_or_a_truncate_clears_set_id_bits() {
    let bucket = block_on(new_bucket("setid-chown"));
    let m = Mount::mount(&bucket, &["allow_other"]);
    // name, mode, what changes it, the mode after
    #[derive(Clone, Copy)]
    enum By {
        RootChown,
        RootChownToNoOne,
        OwnerChownToNoOne,
        UserChgrp,
        UserTruncate,
        MemberTruncate,
        RootTruncate,
        UserFallocate,
    }
    let cases = [
        ("chown-suid", 0o4755, By::RootChown, 0o755),
        ("chown-sgid-x", 0o2755, By::RootChown, 0o755),
        ("chown-sgid-nox", 0o2745, By::RootChown, 0o2745),
        ("chown-both", 0o6755, By::RootChown, 0o755),
        ("chown-none-both", 0o6755, By::RootChownToNoOne, 0o755),
        ("chown-none-nox", 0o6745, By::RootChownToNoOne, 0o2745),
        ("chown-none-owner", 0o6750, By::OwnerChownToNoOne, 0o750),
        ("chgrp-by-owner", 0o6750, By::UserChgrp, 0o750),
        ("trunc-user", 0o6777, By::UserTruncate, 0o777),
        ("trunc-user-nox", 0o6767, By::UserTruncate, 0o767),
        ("trunc-member-nox", 0o6767, By::MemberTruncate, 0o2767),
        ("chgrp-by-owner-nox", 0o6740, By::UserChgrp, 0o2740),
        ("trunc-root", 0o6777, By::RootTruncate, 0o6777),
        ("fallocate-user", 0o6777, By::UserFallocate, 0o777),
    ];
    for (name, mode, by, _) in cases {
        let p = m.path().join(name);
        fs::write(&p, b"twelve bytes").unwrap();
        if matches!(by, By::UserChgrp | By::OwnerChownToNoOne) {
            std::os::unix::fs::chown(&p, Some(U2000.uid), Some(U2000.gid)).unwrap();
        }
        if matches!(by, By::MemberTruncate) {
            std::os::unix::fs::chown(&p, None, Some(3000)).unwrap();
        }
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
        assert_eq!(mode_of(&p) & 0o7777, mode, "{name}: set up");
    }
    let dir = m.path().join("sgid-dir");
    fs::create_dir(&dir).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o6775)).unwrap();
    std::os::unix::fs::chown(&dir, Some(1000), Some(1000)).unwrap();
    std::os::unix::fs::chown(&dir, None, None).unwrap();
    assert_eq!(
        mode_of(&dir) & 0o7777,
        0o6775,
        "a directory keeps its bits on chown"
    );
    for (name, _, by, after) in cases {
        let p = m.path().join(name);
        match by {
            By::RootChown => std::os::unix::fs::chown(&p, Some(1000), Some(1000)).unwrap(),
            // chown(path, -1, -1): no owner changes, the bits go all the same.
            By::RootChownToNoOne => std::os::unix::fs::chown(&p, None, None).unwrap(),
            By::OwnerChownToNoOne => {
                assert_eq!(run_as(U2000, Op::Chown(&p, u32::MAX, u32::MAX)), 0, "{name}");
            }
            By::UserChgrp => {
                assert_eq!(run_as(U2000, Op::Chown(&p, u32::MAX, U2000.gid)), 0, "{name}");
            }
            By::UserTruncate => assert_eq!(run_as(U2000, Op::Truncate(&p, 3)), 0, "{name}"),
            By::MemberTruncate => assert_eq!(run_as(U1000, Op::Truncate(&p, 3)), 0, "{name}"),
            By::UserFallocate => assert_eq!(run_as(U2000, Op::Fallocate(&p)), 0, "{name}"),
            By::RootTruncate => fs::File::options()
                .write(true)
                .open(&p)
                .unwrap()
                .set_len(3)
                .unwrap(),
        }
        assert_eq!(mode_of(&p) & 0o7777, after, "{name}");
    }
    m.unmount();
    let m = Mount::mount(&bucket, &[]);
    for (name, _, by, after) in cases {
        let p = m.path().join(name);
        assert_eq!(mode_of(&p) & 0o7777, after, "{name}: stored");
        if matches!(by, By::UserTruncate | By::MemberTruncate | By::RootTruncate) {
            assert_eq!(fs::read(&p).unwrap(), b"twe", "{name}: truncated");
        }
    }
    assert_eq!(mode_of(&m.path().join("sgid-dir")) & 0o7777, 0o6775);
    m.unmount();
}

/// A chmod of the mount root takes effect for the mount's life (a bucket root has no object to
/// store it in; the next mount starts again from allow_other and mp_umask=), and the kernel
/// checks other users against it.
#[test]
fn chmod_of_the_mount_root_takes_effect() {
    let bucket = block_on(new_bucket("rootchmod"));
    let m = Mount::mount(&bucket, &["allow_other"]);
    assert_eq!(mode_of(m.path()) & 0o7777, 0o777);
    assert_eq!(run_as(U2000, Op::List(m.path())), 0);
    fs::set_permissions(m.path(), fs::Permissions::from_mode(0o750)).unwrap();
    assert_eq!(mode_of(m.path()) & 0o7777, 0o750);
    assert_eq!(run_as(U2000, Op::List(m.path())), libc::EACCES);
    fs::set_permissions(m.path(), fs::Permissions::from_mode(0o1777)).unwrap();
    assert_eq!(mode_of(m.path()) & 0o7777, 0o1777);
    assert_eq!(run_as(U2000, Op::Write(&m.path().join("mine"), 0o644)), 0);
    m.unmount();
    let m = Mount::mount(&bucket, &["allow_other"]);
    assert_eq!(
        mode_of(m.path()) & 0o7777,
        0o777,
        "a new mount starts from allow_other"
    );
    m.unmount();
}
