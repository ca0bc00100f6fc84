//! The rest of POSIX on a real mount: rename, symlinks, xattrs, truncate, writes at any offset,
//! unlink of open files, special files, content types; a randomized model test against a local
//! reference file; and real tools (git, tar, rsync, cp -a, sqlite3).

mod common;

use std::ffi::CString;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use std::time::{SystemTime, UNIX_EPOCH};

use aws_sdk_s3::primitives::ByteStream;
use common::*;
use rand::{Rng, SeedableRng};

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("no NUL")
}

fn keys(bucket: &str, prefix: &str) -> Vec<String> {
    block_on(async { list_keys(&s3_client().await, bucket, prefix).await })
}

async fn head(bucket: &str, key: &str) -> aws_sdk_s3::operation::head_object::HeadObjectOutput {
    s3_client()
        .await
        .head_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .expect("HeadObject")
}

/// The ETag of `key` as S3 reports it (quoted; a multipart one ends in `-<parts>"`).
fn etag(bucket: &str, key: &str) -> String {
    block_on(head(bucket, key))
        .e_tag()
        .unwrap_or_default()
        .to_string()
}

fn renameat2(from: &Path, to: &Path, flags: u32) -> std::io::Result<()> {
    let (f, t) = (cpath(from), cpath(to));
    // SAFETY: valid NUL-terminated paths.
    let rc = unsafe { libc::renameat2(libc::AT_FDCWD, f.as_ptr(), libc::AT_FDCWD, t.as_ptr(), flags) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn rename_of_files_follows_posix_and_the_new_extension() {
    let bucket = block_on(new_bucket("renamefile"));
    let mimes = tempfile::tempdir().unwrap();
    let mime_file = mimes.path().join("mime.types");
    fs::write(&mime_file, "text/html html htm\ntext/plain txt\n").unwrap();
    let m = Mount::mount(&bucket, &[&format!("mime={}", mime_file.display())]);
    let p = m.path();
    fs::write(p.join("a.txt"), b"alpha").unwrap();
    assert_eq!(
        block_on(head(&bucket, "a.txt")).content_type(),
        Some("text/plain")
    );
    fs::set_permissions(p.join("a.txt"), fs::Permissions::from_mode(0o604)).unwrap();
    fs::rename(p.join("a.txt"), p.join("b.html")).unwrap();
    assert_eq!(keys(&bucket, ""), vec!["b.html"]);
    let h = block_on(head(&bucket, "b.html"));
    assert_eq!(
        h.content_type(),
        Some("text/html"),
        "Content-Type follows the new name"
    );
    assert_eq!(
        h.metadata().and_then(|m| m.get("mode")).map(String::as_str),
        Some("33156")
    );
    assert_eq!(fs::read(p.join("b.html")).unwrap(), b"alpha");
    assert_eq!(errno_of(fs::metadata(p.join("a.txt"))), libc::ENOENT);

    // Replacing an existing file; NOREPLACE and EXCHANGE.
    fs::write(p.join("c"), b"charlie").unwrap();
    assert_eq!(
        errno_of(renameat2(&p.join("b.html"), &p.join("c"), libc::RENAME_NOREPLACE)),
        libc::EEXIST
    );
    assert_eq!(
        errno_of(renameat2(&p.join("b.html"), &p.join("c"), libc::RENAME_EXCHANGE)),
        libc::EINVAL
    );
    fs::rename(p.join("b.html"), p.join("c")).unwrap();
    assert_eq!(fs::read(p.join("c")).unwrap(), b"alpha");
    assert_eq!(keys(&bucket, ""), vec!["c"]);

    // Into another directory, a file over a directory, a missing source.
    fs::create_dir(p.join("d")).unwrap();
    fs::rename(p.join("c"), p.join("d/c2")).unwrap();
    assert_eq!(keys(&bucket, "d"), vec!["d/", "d/c2"]);
    fs::create_dir(p.join("e")).unwrap();
    assert_eq!(errno_of(fs::rename(p.join("d/c2"), p.join("e"))), libc::EISDIR);
    // Onto its own (non-empty) parent: ENOTEMPTY, as on ext4.
    assert_eq!(errno_of(fs::rename(p.join("d/c2"), p.join("d"))), libc::ENOTEMPTY);
    assert_eq!(errno_of(fs::rename(p.join("nope"), p.join("x"))), libc::ENOENT);

    // A file open for writing is renamed with its staged data; the handle keeps working.
    let mut f = fs::File::create(p.join("open.bin")).unwrap();
    f.write_all(b"first").unwrap();
    fs::rename(p.join("open.bin"), p.join("moved.bin")).unwrap();
    f.write_all(b"+second").unwrap();
    drop(f);
    assert_eq!(fs::read(p.join("moved.bin")).unwrap(), b"first+second");
    assert!(!keys(&bucket, "").contains(&"open.bin".to_string()));
    // A reader opened before the rename keeps reading.
    let mut r = fs::File::open(p.join("moved.bin")).unwrap();
    fs::rename(p.join("moved.bin"), p.join("moved2.bin")).unwrap();
    let mut s = String::new();
    r.read_to_string(&mut s).unwrap();
    assert_eq!(s, "first+second");
    drop(r);
    m.unmount();
}

/// Names read through a directory stream, with `.` and `..` left out.
fn read_stream(dir: *mut libc::DIR) -> Vec<String> {
    let mut names = Vec::new();
    loop {
        // SAFETY: dir is an open stream; the entry is valid until the next readdir.
        let e = unsafe { libc::readdir(dir) };
        if e.is_null() {
            break;
        }
        // SAFETY: d_name is NUL-terminated.
        let name = unsafe { std::ffi::CStr::from_ptr((*e).d_name.as_ptr()) };
        let name = name.to_string_lossy().into_owned();
        if name != "." && name != ".." {
            names.push(name);
        }
    }
    names.sort();
    names
}

/// A directory stream opened before its directory was renamed reads the directory's entries
/// (as on a local disk, where it follows the inode), and leaves the mount's idea of the
/// renamed directory intact.
#[test]
fn a_directory_stream_follows_its_directory_through_a_rename() {
    let bucket = block_on(new_bucket("dirstream"));
    put_objects(&bucket, &[("d/f1", b"1"), ("d/f2", b"2")]);
    let m = Mount::mount(&bucket, &[]);
    let (d, e) = (m.path().join("d"), m.path().join("e"));
    // SAFETY: a valid NUL-terminated path.
    let stream = unsafe { libc::opendir(cpath(&d).as_ptr()) };
    assert!(!stream.is_null(), "opendir: {}", std::io::Error::last_os_error());
    fs::rename(&d, &e).unwrap();
    assert_eq!(read_stream(stream), ["f1", "f2"]);
    // SAFETY: stream is open.
    unsafe { libc::closedir(stream) };
    assert_eq!(fs::read(e.join("f1")).unwrap(), b"1");
    assert_eq!(names_in(&e), ["f1", "f2"]);
    m.unmount();
}

/// A file closed while its directory is being renamed lands under the new name: its upload
/// waits for the move (a close in the middle of the copies used to write to the old prefix,
/// which then came back with only that file in it).
#[test]
fn a_file_closed_during_a_directory_rename_lands_under_the_new_name() {
    let bucket = block_on(new_bucket("closemove"));
    put_many(&bucket, (0..1500).map(|i| format!("d/f{i:04}")), b"x");
    let m = Mount::mount(&bucket, &[]);
    let (d, e) = (m.path().join("d"), m.path().join("e"));
    let mut open = fs::File::create(d.join("late")).unwrap();
    open.write_all(b"written before the move").unwrap();
    let mover = std::thread::spawn(move || fs::rename(&d, &e));
    // Close once the copies have started.
    let start = std::time::Instant::now();
    while keys(&bucket, "e/").is_empty() {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(60),
            "the move never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    open.write_all(b", closed during it").unwrap();
    drop(open);
    mover.join().unwrap().unwrap();
    let all = keys(&bucket, "");
    assert!(
        all.iter().all(|k| k.starts_with("e/")),
        "left under the old name: {:?}",
        all.iter().filter(|k| !k.starts_with("e/")).collect::<Vec<_>>()
    );
    assert_eq!(
        block_on(async { get_object(&s3_client().await, &bucket, "e/late").await }),
        b"written before the move, closed during it"
    );
    m.unmount();
}

#[test]
fn rename_of_directories_moves_the_tree() {
    let bucket = block_on(new_bucket("renamedir"));
    let m = Mount::mount(&bucket, &[]);
    let p = m.path();
    fs::create_dir_all(p.join("src/sub/deep")).unwrap();
    for (i, f) in ["src/a", "src/sub/b", "src/sub/deep/c"].iter().enumerate() {
        fs::write(p.join(f), format!("file {i}")).unwrap();
    }
    block_on(async { put_object(&s3_client().await, &bucket, "src/implicit/x", b"x".to_vec()).await });
    fs::set_permissions(p.join("src"), fs::Permissions::from_mode(0o711)).unwrap();
    fs::rename(p.join("src"), p.join("dst")).unwrap();
    assert_eq!(
        keys(&bucket, ""),
        vec![
            "dst/",
            "dst/a",
            "dst/implicit/x",
            "dst/sub/",
            "dst/sub/b",
            "dst/sub/deep/",
            "dst/sub/deep/c"
        ]
    );
    assert_eq!(fs::read(p.join("dst/sub/deep/c")).unwrap(), b"file 2");
    assert_eq!(fs::metadata(p.join("dst")).unwrap().mode() & 0o7777, 0o711);
    assert_eq!(errno_of(fs::metadata(p.join("src"))), libc::ENOENT);

    // Into its own subtree: EINVAL. Onto a non-empty directory: ENOTEMPTY. Onto a file: ENOTDIR.
    assert_eq!(
        errno_of(fs::rename(p.join("dst"), p.join("dst/sub/inside"))),
        libc::EINVAL
    );
    fs::create_dir(p.join("full")).unwrap();
    fs::write(p.join("full/f"), b"f").unwrap();
    assert_eq!(
        errno_of(fs::rename(p.join("dst"), p.join("full"))),
        libc::ENOTEMPTY
    );
    fs::write(p.join("plainfile"), b"p").unwrap();
    assert_eq!(
        errno_of(fs::rename(p.join("dst"), p.join("plainfile"))),
        libc::ENOTDIR
    );
    // Onto an empty directory: replaces it.
    fs::create_dir(p.join("empty")).unwrap();
    fs::rename(p.join("dst/sub"), p.join("empty")).unwrap();
    assert_eq!(fs::read(p.join("empty/deep/c")).unwrap(), b"file 2");
    assert!(keys(&bucket, "dst/sub").is_empty());
    m.unmount();
}

#[test]
fn symlinks_store_their_target_in_the_body() {
    let bucket = block_on(new_bucket("symlink"));
    block_on(async {
        // A symlink written by s3fs.
        s3_client()
            .await
            .put_object()
            .bucket(&bucket)
            .key("from-s3fs")
            .metadata("mode", "41471")
            .body(ByteStream::from_static(b"target/of/s3fs"))
            .send()
            .await
            .unwrap();
    });
    let m = Mount::mount(&bucket, &[]);
    let p = m.path();
    fs::write(p.join("real"), b"real data").unwrap();
    std::os::unix::fs::symlink("real", p.join("rel")).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", p.join("abs")).unwrap();
    assert_eq!(fs::read_link(p.join("rel")).unwrap(), PathBuf::from("real"));
    assert_eq!(
        fs::read_link(p.join("abs")).unwrap(),
        PathBuf::from("/etc/hostname")
    );
    assert_eq!(fs::read(p.join("rel")).unwrap(), b"real data");
    assert!(fs::symlink_metadata(p.join("rel"))
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(
        fs::read_link(p.join("from-s3fs")).unwrap(),
        PathBuf::from("target/of/s3fs")
    );
    assert_eq!(
        block_on(async { get_object(&s3_client().await, &bucket, "rel").await }),
        b"real"
    );
    let h = block_on(head(&bucket, "rel"));
    assert_eq!(
        h.metadata().and_then(|m| m.get("mode")).map(String::as_str),
        Some("41471")
    );
    assert_eq!(
        errno_of(std::os::unix::fs::symlink("x", p.join("rel"))),
        libc::EEXIST
    );
    m.unmount();
    let m = Mount::mount(&bucket, &[]);
    assert_eq!(
        fs::read_link(m.path().join("rel")).unwrap(),
        PathBuf::from("real")
    );
    m.unmount();
}

fn setxattr(p: &Path, name: &str, value: &[u8], flags: i32) -> std::io::Result<()> {
    let (cp, cn) = (cpath(p), CString::new(name).unwrap());
    // SAFETY: valid pointers for the duration of the call.
    let rc = unsafe {
        libc::setxattr(
            cp.as_ptr(),
            cn.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            flags,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn getxattr(p: &Path, name: &str) -> std::io::Result<Vec<u8>> {
    let (cp, cn) = (cpath(p), CString::new(name).unwrap());
    let mut buf = vec![0u8; 4096];
    // SAFETY: buf is valid for its length.
    let n = unsafe { libc::getxattr(cp.as_ptr(), cn.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    buf.truncate(n as usize);
    Ok(buf)
}

fn listxattr(p: &Path) -> Vec<String> {
    let cp = cpath(p);
    let mut buf = vec![0u8; 4096];
    // SAFETY: buf is valid for its length.
    let n = unsafe { libc::listxattr(cp.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    assert!(n >= 0, "listxattr: {}", std::io::Error::last_os_error());
    buf.truncate(n as usize);
    buf.split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

fn removexattr(p: &Path, name: &str) -> std::io::Result<()> {
    let (cp, cn) = (cpath(p), CString::new(name).unwrap());
    // SAFETY: valid pointers.
    if unsafe { libc::removexattr(cp.as_ptr(), cn.as_ptr()) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[test]
fn user_xattrs_are_stored_in_the_s3fs_format() {
    let bucket = block_on(new_bucket("xattr"));
    let m = Mount::mount(&bucket, &[]);
    let f = m.path().join("f");
    fs::write(&f, b"content").unwrap();
    setxattr(&f, "user.color", b"blue", 0).unwrap();
    setxattr(&f, "user.bin", &[0, 1, 255], 0).unwrap();
    assert_eq!(getxattr(&f, "user.color").unwrap(), b"blue");
    assert_eq!(getxattr(&f, "user.bin").unwrap(), vec![0, 1, 255]);
    assert_eq!(listxattr(&f), vec!["user.bin", "user.color"]);
    assert_eq!(
        errno_of(setxattr(&f, "user.color", b"red", libc::XATTR_CREATE)),
        libc::EEXIST
    );
    assert_eq!(
        errno_of(setxattr(&f, "user.none", b"x", libc::XATTR_REPLACE)),
        libc::ENODATA
    );
    setxattr(&f, "user.color", b"red", libc::XATTR_REPLACE).unwrap();
    assert_eq!(errno_of(getxattr(&f, "user.missing")), libc::ENODATA);
    assert_eq!(errno_of(setxattr(&f, "security.selinux", b"x", 0)), libc::ENOTSUP);
    assert_eq!(errno_of(setxattr(&f, "trusted.x", b"x", 0)), libc::ENOTSUP);
    assert_eq!(
        errno_of(setxattr(&f, "user.big", &vec![b'x'; 3000], 0)),
        libc::E2BIG
    );
    removexattr(&f, "user.bin").unwrap();
    assert_eq!(errno_of(removexattr(&f, "user.bin")), libc::ENODATA);
    let stored = block_on(head(&bucket, "f"));
    let x = stored
        .metadata()
        .and_then(|m| m.get("xattr"))
        .cloned()
        .expect("xattr metadata");
    assert_eq!(x, "%7B%22user.color%22%3A%22cmVk%22%7D");
    assert_eq!(
        fs::read(&f).unwrap(),
        b"content",
        "the metadata copy kept the data"
    );
    // On a directory, and across a remount.
    fs::create_dir(m.path().join("d")).unwrap();
    setxattr(&m.path().join("d"), "user.dir", b"yes", 0).unwrap();
    m.unmount();
    // s3fs may have stored names of other namespaces: they are not listed (getxattr refuses
    // them), and kept when a user name is added.
    let client = block_on(s3_client());
    let stored = "%7B%22user.a%22%3A%22YQ%3D%3D%22%2C%22security.selinux%22%3A%22eA%3D%3D%22%7D";
    block_on(
        client
            .put_object()
            .bucket(&bucket)
            .key("other")
            .metadata("xattr", stored)
            .body(b"o".to_vec().into())
            .send(),
    )
    .unwrap();
    let m = Mount::mount(&bucket, &[]);
    assert_eq!(getxattr(&m.path().join("f"), "user.color").unwrap(), b"red");
    assert_eq!(getxattr(&m.path().join("d"), "user.dir").unwrap(), b"yes");
    let other = m.path().join("other");
    assert_eq!(listxattr(&other), vec!["user.a"]);
    assert_eq!(getxattr(&other, "user.a").unwrap(), b"a");
    assert_eq!(errno_of(getxattr(&other, "security.selinux")), libc::ENOTSUP);
    assert_eq!(errno_of(getxattr(&other, "user.")), libc::EINVAL);
    setxattr(&other, "user.b", b"b", 0).unwrap();
    assert_eq!(listxattr(&other), vec!["user.a", "user.b"]);
    let kept = block_on(head(&bucket, "other"));
    let x = kept
        .metadata()
        .and_then(|m| m.get("xattr"))
        .cloned()
        .unwrap_or_default();
    assert!(x.contains("security.selinux"), "{x}");
    m.unmount();
}

#[test]
fn unlinked_open_files_keep_working_and_leave_nothing_behind() {
    let bucket = block_on(new_bucket("unlinkopen"));
    let m = Mount::mount(&bucket, &[]);
    let p = m.path().join("doomed");
    fs::write(&p, b"0123456789").unwrap();
    let mut r = fs::File::open(&p).unwrap();
    let w = fs::OpenOptions::new().read(true).write(true).open(&p).unwrap();
    fs::remove_file(&p).unwrap();
    assert!(keys(&bucket, "").is_empty(), "the object is gone at once");
    assert_eq!(errno_of(fs::metadata(&p)), libc::ENOENT);
    let mut s = String::new();
    r.read_to_string(&mut s).unwrap();
    assert_eq!(s, "0123456789");
    w.write_all_at(b"AB", 2).unwrap();
    // What fstat says of an unlinked file (after the write, the kernel asks rossfs again).
    assert_eq!(
        w.metadata().unwrap().nlink(),
        0,
        "st_nlink of an unlinked open file"
    );
    let mut buf = [0u8; 10];
    w.read_exact_at(&mut buf, 0).unwrap();
    assert_eq!(&buf, b"01AB456789");
    w.sync_all().unwrap();
    drop(w);
    drop(r);
    assert!(
        keys(&bucket, "").is_empty(),
        "nothing left behind (no .fuse_hidden objects)"
    );
    assert!(fs::read_dir(m.path()).unwrap().next().is_none());

    // Written large after its name is gone (truncated first, as a writer starting over does):
    // no multipart upload is started for it, nor left behind.
    let p = m.path().join("streamed");
    let mut w = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&p)
        .unwrap();
    fs::remove_file(&p).unwrap();
    w.set_len(0).unwrap();
    let chunk = pattern(1 << 20, 3);
    for _ in 0..30 {
        w.write_all(&chunk).unwrap();
    }
    let mut back = vec![0u8; chunk.len()];
    w.read_exact_at(&mut back, 29 << 20).unwrap();
    assert_eq!(back, chunk);
    drop(w);
    assert_eq!(
        pending_uploads(&bucket),
        0,
        "an upload of an unlinked file was left behind"
    );
    assert!(keys(&bucket, "").is_empty());
    m.unmount();
}

/// A name this mount removed, renamed away or turned into a file is not brought back as a
/// directory by what an earlier listing of its parent said it was.
#[test]
fn an_earlier_listing_does_not_bring_back_a_removed_directory() {
    let bucket = block_on(new_bucket("listhint"));
    // Without the negative cache every lookup of a missing name asks the bucket.
    let m = Mount::mount(&bucket, &["disable_noobj_cache"]);
    let p = m.path().join("p");
    for d in ["x", "y", "z"] {
        fs::create_dir_all(p.join(d)).unwrap();
    }
    fs::write(p.join("f"), b"f").unwrap();
    assert_eq!(names_in(&p), vec!["f", "x", "y", "z"]);
    fs::remove_dir(p.join("x")).unwrap();
    assert_eq!(
        errno_of(fs::metadata(p.join("x"))),
        libc::ENOENT,
        "rmdir'd, then found again"
    );
    fs::create_dir(p.join("x")).unwrap();
    fs::rename(p.join("y"), p.join("moved")).unwrap();
    assert_eq!(
        errno_of(fs::metadata(p.join("y"))),
        libc::ENOENT,
        "renamed away, then found again"
    );
    fs::remove_dir(p.join("z")).unwrap();
    fs::write(p.join("z"), b"now a file").unwrap();
    // The kernel forgets its entries: the mount resolves the names again.
    fs::write("/proc/sys/vm/drop_caches", "2").expect("drop caches (tests run as root)");
    assert!(
        fs::metadata(p.join("z")).unwrap().is_file(),
        "a file where a listed directory was"
    );
    assert_eq!(fs::read(p.join("z")).unwrap(), b"now a file");
    assert_eq!(errno_of(fs::metadata(p.join("y"))), libc::ENOENT);
    assert_eq!(names_in(&p), vec!["f", "moved", "x", "z"]);
    m.unmount();
}

/// `truncate(2)` and `chmod(2)` by path while the file is open only for reading: nothing will
/// upload at a close, so the change goes to the bucket at once, and the reader sees it (as on a
/// local disk, where it shares the inode).
#[test]
fn changes_beside_an_open_reader_reach_the_bucket_at_once() {
    let bucket = block_on(new_bucket("readerkeep"));
    let m = Mount::mount(&bucket, &[]);
    let p = m.path().join("f");
    fs::write(&p, b"hello world").unwrap();
    let mut r = fs::File::open(&p).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::truncate(cpath(&p).as_ptr(), 5) }, 0);
    let object = || block_on(async { get_object(&s3_client().await, &bucket, "f").await });
    assert_eq!(
        object(),
        b"hello",
        "the truncate is in the bucket before any close"
    );
    fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
    let h = block_on(head(&bucket, "f"));
    assert_eq!(
        h.metadata().and_then(|m| m.get("mode")).map(String::as_str),
        Some("33152"),
        "the chmod is in the bucket before any close"
    );
    let mut s = String::new();
    r.read_to_string(&mut s).unwrap();
    assert_eq!(s, "hello", "the reader sees the truncated file");
    drop(r);
    assert_eq!(object(), b"hello");
    m.unmount();
    let m = Mount::mount(&bucket, &[]);
    let meta = fs::metadata(m.path().join("f")).unwrap();
    assert_eq!((meta.len(), meta.mode() & 0o7777), (5, 0o600));
    m.unmount();
}

/// Inode numbers: `readdir`'s `d_ino` is the `st_ino` that `stat` shows, a rename keeps it,
/// and a path has the same number after a remount, whatever order it is looked up in (git's
/// index, rsync and backup tools compare them).
#[test]
fn inode_numbers_match_readdir_and_survive_a_remount() {
    use std::collections::BTreeMap;
    use std::os::unix::fs::DirEntryExt;
    let bucket = block_on(new_bucket("inodes"));
    let data: &[u8] = b"data";
    put_objects(
        &bucket,
        &["a/x", "a/y", "b", "c/", "c/deep/z"].map(|key| (key, data)),
    );
    let numbers = |root: &Path, dirs: &[&str]| -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for dir in dirs {
            let entries: Vec<(String, u64)> = fs::read_dir(root.join(dir))
                .unwrap()
                .map(|e| {
                    let e = e.unwrap();
                    (e.file_name().to_string_lossy().into_owned(), e.ino())
                })
                .collect();
            for (name, d_ino) in entries {
                let path = if dir.is_empty() {
                    name
                } else {
                    format!("{dir}/{name}")
                };
                let st_ino = fs::symlink_metadata(root.join(&path)).unwrap().ino();
                assert_eq!(d_ino, st_ino, "{path}: d_ino {d_ino}, st_ino {st_ino}");
                out.insert(path, st_ino);
            }
        }
        out
    };
    let m = Mount::mount(&bucket, &[]);
    let p = m.path();
    fs::create_dir(p.join("made")).unwrap();
    fs::write(p.join("made/new"), b"n").unwrap();
    let dirs = ["", "a", "c", "c/deep", "made"];
    let first = numbers(p, &dirs);
    assert_eq!(first.len(), 9, "{first:?}");
    let distinct: std::collections::BTreeSet<u64> = first.values().copied().collect();
    assert_eq!(distinct.len(), first.len(), "numbers are distinct: {first:?}");
    // A rename keeps the inode (POSIX); its new path shows it in readdir too.
    fs::rename(p.join("a/x"), p.join("a/x2")).unwrap();
    let renamed = numbers(p, &["a"]);
    assert_eq!(renamed.get("a/x2"), first.get("a/x"), "{renamed:?}");
    fs::rename(p.join("a/x2"), p.join("a/x")).unwrap();
    m.unmount();

    // A new mount, paths looked up in the reverse order.
    let m = Mount::mount(&bucket, &[]);
    let p = m.path();
    for (path, ino) in first.iter().rev() {
        let now = fs::symlink_metadata(p.join(path)).unwrap().ino();
        assert_eq!(now, *ino, "{path} changed its number across a remount");
    }
    assert_eq!(numbers(p, &dirs), first);
    m.unmount();
}

/// Objects past `singlepart_copy_limit` (5 GiB on S3, 1 GiB on OSS; 5 MiB here) are copied in
/// parts by every operation that copies: chmod and xattrs rewrite the metadata in place, a file
/// or directory rename moves them, a streamed file gets its final attributes; a copy whose
/// source changed meanwhile is not made from the stale object, and no upload is left behind.
#[test]
fn objects_past_the_single_copy_limit_are_copied_in_parts() {
    let bucket = block_on(new_bucket("bigcopy"));
    let big = pattern(12 << 20, 7);
    put_objects(&bucket, &[("big", &big), ("small", b"tiny")]);
    let m = Mount::mount(&bucket, &["singlepart_copy_limit=5", "multipart_size=5"]);
    let p = m.path();
    let etag = |key: &str| etag(&bucket, key);
    let mode = |key: &str| {
        let h = block_on(head(&bucket, key));
        h.metadata().and_then(|m| m.get("mode")).cloned()
    };
    let object = |key: &str| block_on(async { get_object(&s3_client().await, &bucket, key).await });
    assert!(!etag("big").contains('-'), "put whole: {}", etag("big"));

    // 12 MiB in parts of 5: three UploadPartCopy, so the ETag is a multipart one.
    fs::set_permissions(p.join("big"), fs::Permissions::from_mode(0o600)).unwrap();
    assert!(
        etag("big").ends_with("-3\""),
        "chmod copied in parts: {}",
        etag("big")
    );
    assert_eq!(mode("big").as_deref(), Some("33152"));
    assert!(object("big") == big, "content kept by the chmod");
    fs::set_permissions(p.join("small"), fs::Permissions::from_mode(0o600)).unwrap();
    assert!(!etag("small").contains('-'), "a small object is copied whole");

    setxattr(&p.join("big"), "user.origin", b"camera", 0).unwrap();
    assert!(object("big") == big, "content kept by the setxattr");
    assert_eq!(getxattr(&p.join("big"), "user.origin").unwrap(), b"camera");

    // Changed by another client after this mount read its ETag (and grown, so a copy of the
    // old length would cut it): the copy is refused by the server and redone from the current
    // object, whose content stays.
    let newer = pattern(13 << 20, 8);
    put_objects(&bucket, &[("big", &newer)]);
    fs::set_permissions(p.join("big"), fs::Permissions::from_mode(0o640)).unwrap();
    assert!(object("big") == newer, "the newer content survives the chmod");
    assert_eq!(
        fs::metadata(p.join("big")).unwrap().len(),
        13 << 20,
        "and its size shows"
    );
    assert_eq!(mode("big").as_deref(), Some("33184"));

    // Renames of the file and of a directory holding it.
    fs::rename(p.join("big"), p.join("big2")).unwrap();
    assert!(
        etag("big2").ends_with("-3\""),
        "rename copied in parts: {}",
        etag("big2")
    );
    assert_eq!(mode("big2").as_deref(), Some("33184"));
    fs::create_dir(p.join("d")).unwrap();
    fs::rename(p.join("big2"), p.join("d/big")).unwrap();
    fs::rename(p.join("d"), p.join("e")).unwrap();
    assert_eq!(keys(&bucket, ""), vec!["e/", "e/big", "small"]);
    assert!(object("e/big") == newer, "content moved with the directory");
    assert_eq!(mode("e/big").as_deref(), Some("33184"));

    // A file written in order streams as a multipart upload; a chmod before its close is
    // stored on the object by a copy in parts.
    let mut f = fs::File::create(p.join("streamed")).unwrap();
    for _ in 0..3 {
        f.write_all(&big[..4 << 20]).unwrap();
    }
    f.set_permissions(fs::Permissions::from_mode(0o604)).unwrap();
    drop(f);
    assert_eq!(mode("streamed").as_deref(), Some("33156"));
    assert_eq!(object("streamed").len(), 12 << 20);
    assert_eq!(pending_uploads(&bucket), 0, "no multipart upload left behind");
    m.unmount();
}

/// Headers that say how an object is served (`Cache-Control`, `Content-Disposition`,
/// `Content-Encoding`, `Content-Language`, `Expires`), set by another tool, stay on the object
/// through everything the mount rewrites it for: chmod, chown, touch and xattr changes (copies
/// that replace the metadata), a new content, renames of the file and of its directory, both
/// below and past the single-copy limit (multipart copies). S3 keeps them only if each rewrite
/// sends them again. Checked on both request paths (the lean one and the SDK's).
#[test]
fn serving_headers_stay_through_metadata_changes_rewrites_and_renames() {
    serving_headers_stay(&[]);
    serving_headers_stay(&["sdk_requests"]);
}

fn serving_headers_stay(extra: &[&str]) {
    let bucket = block_on(new_bucket("servehdrs"));
    let served = [
        Some("public, max-age=300".to_string()),
        Some("attachment; filename=\"report.txt\"".to_string()),
        Some("gzip".to_string()),
        Some("de-CH".to_string()),
        Some("Wed, 18 May 2033 03:33:20 GMT".to_string()),
    ];
    // What another tool sets when it replaces an object behind the mount's back.
    let others = [
        Some("no-store".to_string()),
        None,
        None,
        Some("fr".to_string()),
        None,
    ];
    let put = |key: &str, body: &[u8], h: &[Option<String>; 5]| {
        block_on(async {
            s3_client()
                .await
                .put_object()
                .bucket(&bucket)
                .key(key)
                .body(ByteStream::from(body.to_vec()))
                .set_cache_control(h[0].clone())
                .set_content_disposition(h[1].clone())
                .set_content_encoding(h[2].clone())
                .set_content_language(h[3].clone())
                .set_expires(
                    h[4].as_ref()
                        .map(|_| aws_sdk_s3::primitives::DateTime::from_secs(2_000_000_000)),
                )
                .send()
                .await
                .expect("PutObject")
        });
    };
    let big = pattern(12 << 20, 3);
    put("page.gz", b"compressed", &served);
    put("dir/", b"", &served);
    put("dir/big", &big, &served);
    let headers = |key: &str| {
        let h = block_on(head(&bucket, key));
        [
            h.cache_control().map(str::to_string),
            h.content_disposition().map(str::to_string),
            h.content_encoding().map(str::to_string),
            h.content_language().map(str::to_string),
            h.expires_string().map(str::to_string),
        ]
    };
    assert_eq!(headers("page.gz"), served, "the server keeps what the tool set");
    let mut opts = vec!["singlepart_copy_limit=5", "multipart_size=5"];
    opts.extend_from_slice(extra);
    let m = Mount::mount(&bucket, &opts);
    let p = m.path();
    let page = p.join("page.gz");

    fs::set_permissions(&page, fs::Permissions::from_mode(0o640)).unwrap();
    assert_eq!(headers("page.gz"), served, "after chmod");
    std::os::unix::fs::chown(&page, Some(1000), Some(1000)).unwrap();
    assert_eq!(headers("page.gz"), served, "after chown");
    let when = UNIX_EPOCH + std::time::Duration::from_secs(1_600_000_000);
    fs::File::options()
        .write(true)
        .open(&page)
        .unwrap()
        .set_times(fs::FileTimes::new().set_modified(when).set_accessed(when))
        .unwrap();
    assert_eq!(headers("page.gz"), served, "after touch");
    setxattr(&page, "user.note", b"kept", 0).unwrap();
    assert_eq!(headers("page.gz"), served, "after setxattr");
    fs::write(&page, b"compressed again").unwrap();
    assert_eq!(headers("page.gz"), served, "after a new content");
    fs::rename(&page, p.join("moved.gz")).unwrap();
    assert_eq!(headers("moved.gz"), served, "after a rename");

    // Replaced by another tool after the mount read it: the guarded copy of a chmod is refused,
    // and the chmod is made again on top of the new object, with its headers; the file then
    // carries those.
    put("moved.gz", b"other content", &others);
    fs::set_permissions(p.join("moved.gz"), fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(
        headers("moved.gz"),
        others,
        "after a chmod of the replaced object"
    );
    assert!(
        block_on(async { get_object(&s3_client().await, &bucket, "moved.gz").await }) == b"other content"
    );
    fs::rename(p.join("moved.gz"), p.join("again.gz")).unwrap();
    assert_eq!(headers("again.gz"), others, "the file took the new headers");

    // Past the single-copy limit every copy is made in parts.
    let big_path = p.join("dir/big");
    fs::set_permissions(&big_path, fs::Permissions::from_mode(0o600)).unwrap();
    assert!(
        etag(&bucket, "dir/big").ends_with("-3\""),
        "a chmod copied in parts"
    );
    assert_eq!(headers("dir/big"), served, "after a chmod in parts");
    // New content written in order is a multipart upload.
    let newer = pattern(12 << 20, 4);
    fs::write(&big_path, &newer).unwrap();
    assert!(
        etag(&bucket, "dir/big").ends_with("-3\""),
        "the new content was uploaded in parts"
    );
    assert_eq!(headers("dir/big"), served, "after a new content in parts");
    fs::rename(p.join("dir"), p.join("dir2")).unwrap();
    assert_eq!(keys(&bucket, ""), ["again.gz", "dir2/", "dir2/big"]);
    assert_eq!(
        headers("dir2/"),
        served,
        "the directory's marker after its rename"
    );
    assert_eq!(headers("dir2/big"), served, "after a directory rename in parts");
    assert!(block_on(async { get_object(&s3_client().await, &bucket, "dir2/big").await }) == newer);
    m.unmount();
}

/// `rename(2)` over a file that is open: its handles keep reading the replaced content (the
/// old inode), whether they had read some of it or not, while the name shows the new file.
#[test]
fn renaming_over_an_open_file_keeps_its_content_for_its_handles() {
    let bucket = block_on(new_bucket("renameover"));
    let m = Mount::mount(&bucket, &[]);
    let (a, b) = (m.path().join("a"), m.path().join("b"));
    let old = pattern(3 * 1024 * 1024 + 17, 7);
    let new = pattern(2 * 1024 * 1024 + 5, 8);
    fs::write(&b, &old).unwrap();
    fs::write(&a, &new).unwrap();
    let mut untouched = fs::File::open(&b).unwrap();
    let halfway = fs::File::open(&b).unwrap();
    let mut first = vec![0u8; 1024 * 1024];
    halfway.read_exact_at(&mut first, 0).unwrap();
    // A reader of the moved file, part-way through it.
    let moving = fs::File::open(&a).unwrap();
    let mut moved = vec![0u8; 1024 * 1024];
    moving.read_exact_at(&mut moved, 0).unwrap();
    fs::rename(&a, &b).unwrap();
    let mut rest = vec![0u8; new.len() - moved.len()];
    moving.read_exact_at(&mut rest, moved.len() as u64).unwrap();
    moved.extend_from_slice(&rest);
    assert!(moved == new, "a reader of the moved file reads it to the end");
    let mut rest = vec![0u8; old.len() - first.len()];
    halfway.read_exact_at(&mut rest, first.len() as u64).unwrap();
    first.extend_from_slice(&rest);
    assert!(
        first == old,
        "a handle that had read half of b reads the rest of the old b"
    );
    let mut all = Vec::new();
    untouched.read_to_end(&mut all).unwrap();
    assert!(all == old, "a handle that had read nothing reads the old b");
    assert!(fs::read(&b).unwrap() == new);
    drop((untouched, halfway, moving));
    assert_eq!(keys(&bucket, ""), ["b"]);
    assert!(block_on(async { get_object(&s3_client().await, &bucket, "b").await }) == new);
    m.unmount();
}

/// S3 refuses keys over 1024 bytes: a create, mkdir or symlink whose key (the mount's prefix
/// included) would be longer fails with ENAMETOOLONG up front, sending nothing, as a local
/// filesystem does past PATH_MAX. (Garage's LMDB store refuses keys past about 500 bytes
/// itself, so the long keys come from the mount's prefix, which needs no object.)
#[test]
fn keys_longer_than_s3_accepts_are_enametoolong() {
    let bucket = block_on(new_bucket("longkeys"));
    let prefix = ["p", "q", "r"].map(|c| c.repeat(255)).join("/") + "/" + &"s".repeat(100);
    let m = Mount::mount(&format!("{bucket}:/{prefix}/"), &[]);
    // Keys here start with 869 bytes of prefix: a 155-byte name makes 1024, one more is too long.
    assert_eq!(
        errno_of(fs::write(m.path().join("g".repeat(156)), b"x")),
        libc::ENAMETOOLONG
    );
    assert_eq!(
        errno_of(fs::create_dir(m.path().join("d".repeat(255)))),
        libc::ENAMETOOLONG
    );
    assert_eq!(
        errno_of(std::os::unix::fs::symlink("t", m.path().join("s".repeat(255)))),
        libc::ENAMETOOLONG
    );
    assert!(keys(&bucket, "").is_empty(), "nothing was sent");
    assert!(fs::read_dir(m.path()).unwrap().next().is_none());
    m.unmount();
}

/// Peak resident set of a process (`VmHWM`), in bytes.
fn peak_rss(pid: libc::pid_t) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib * 1024
}

/// Appending to an existing object larger than `max_dirty_memory` stages its content on disk
/// in ranged GETs: the daemon's peak memory stays below the object's size, and the result is
/// exact.
#[test]
fn appending_to_a_large_object_stages_it_on_disk_not_in_memory() {
    let bucket = block_on(new_bucket("bigappend"));
    let size = 160 * 1024 * 1024 + 4321;
    let body = pattern(size, 11);
    block_on(async { put_object(&s3_client().await, &bucket, "big", body.clone()).await });
    let m = Mount::mount(&bucket, &[]);
    let pid = m.daemon_pids()[0];
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(m.path().join("big"))
        .unwrap();
    f.write_all(b"tail").unwrap();
    let peak = peak_rss(pid);
    assert!(
        peak < size as u64,
        "staging a {size}-byte object took the daemon to {peak} bytes resident"
    );
    drop(f);
    let stored = block_on(async { get_object(&s3_client().await, &bucket, "big").await });
    assert_eq!(stored.len(), size + 4);
    assert!(stored[..size] == body[..] && &stored[size..] == b"tail");
    m.unmount();
}

#[test]
fn special_files_and_fallocate() {
    let bucket = block_on(new_bucket("special"));
    let m = Mount::mount(&bucket, &["allow_other"]);
    let p = m.path();
    run(Command::new("mkfifo").arg("-m").arg("0640").arg(p.join("fifo")));
    assert!(fs::metadata(p.join("fifo")).unwrap().file_type().is_fifo());
    let h = block_on(head(&bucket, "fifo"));
    assert_eq!(h.content_length(), Some(0));
    assert_eq!(
        h.metadata().and_then(|m| m.get("mode")).map(String::as_str),
        Some(&*(0o010640u32).to_string())
    );
    run(Command::new("mknod")
        .arg(p.join("null"))
        .arg("c")
        .arg("1")
        .arg("3"));
    let meta = fs::metadata(p.join("null")).unwrap();
    assert!(meta.file_type().is_char_device());
    assert_eq!(meta.rdev(), libc::makedev(1, 3));
    // Only root may create device nodes.
    let out = Command::new("setpriv")
        .args(["--reuid=1000", "--regid=1000", "--clear-groups", "mknod"])
        .arg(p.join("null2"))
        .args(["c", "1", "3"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Operation not permitted"),
        "{out:?}"
    );
    // A plain mknod makes an empty regular file.
    run(Command::new("mknod").arg(p.join("reg")).arg("p"));
    fs::remove_file(p.join("reg")).unwrap();

    let f = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(p.join("alloc"))
        .unwrap();
    // SAFETY: fallocate on an open descriptor.
    assert_eq!(
        unsafe { libc::fallocate(std::os::fd::AsRawFd::as_raw_fd(&f), 0, 0, 8192) },
        0
    );
    assert_eq!(f.metadata().unwrap().len(), 8192);
    // SAFETY: as above.
    let rc = unsafe {
        libc::fallocate(
            std::os::fd::AsRawFd::as_raw_fd(&f),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            0,
            4096,
        )
    };
    assert_eq!(rc, -1);
    assert_eq!(
        std::io::Error::last_os_error().raw_os_error(),
        Some(libc::EOPNOTSUPP)
    );
    drop(f);
    assert_eq!(block_on(head(&bucket, "alloc")).content_length(), Some(8192));
    m.unmount();
}

/// One step of the model test, for the failure report.
#[derive(Debug)]
enum Step {
    Write(u64, usize),
    Read(u64, usize),
    Truncate(u64),
    Append(usize),
    Reopen,
    Fsync,
    Rename,
    UnlinkWhileOpen,
}

/// The file under test and its reference twin on local disk.
struct Pair {
    mount_dir: PathBuf,
    local_dir: PathBuf,
    name: String,
    mount_fd: fs::File,
    local_fd: fs::File,
}

impl Pair {
    fn open(mount_dir: &Path, local_dir: &Path, name: &str) -> Pair {
        let o = |d: &Path| {
            fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(d.join(name))
                .unwrap()
        };
        Pair {
            mount_dir: mount_dir.into(),
            local_dir: local_dir.into(),
            name: name.into(),
            mount_fd: o(mount_dir),
            local_fd: o(local_dir),
        }
    }

    fn check(&self, ctx: &str) {
        let ml = self.mount_fd.metadata().unwrap().len();
        let ll = self.local_fd.metadata().unwrap().len();
        assert_eq!(ml, ll, "size differs {ctx}");
        let mut a = vec![0u8; ml as usize];
        let mut b = vec![0u8; ll as usize];
        self.mount_fd.read_exact_at(&mut a, 0).unwrap();
        self.local_fd.read_exact_at(&mut b, 0).unwrap();
        if a != b {
            let first = a.iter().zip(&b).position(|(x, y)| x != y).unwrap_or(0);
            panic!("content differs at byte {first} {ctx}");
        }
    }
}

fn fsx(ops: usize, seed: u64, opts: &[&str]) {
    let bucket = block_on(new_bucket("fsx"));
    let local = tempfile::tempdir().unwrap();
    let mut m = Mount::mount(&bucket, &[&["max_dirty_memory=1"], opts].concat());
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    const MAX_LEN: u64 = 300 * 1024;
    let mut pair = Pair::open(m.path(), local.path(), "model.bin");
    let mut history: Vec<Step> = Vec::new();
    let mut renames = 0;
    for i in 0..ops {
        let step = match rng.random_range(0..100) {
            0..=34 => Step::Write(rng.random_range(0..MAX_LEN), rng.random_range(1..65536)),
            35..=54 => Step::Read(rng.random_range(0..MAX_LEN), rng.random_range(1..65536)),
            55..=64 => Step::Truncate(rng.random_range(0..MAX_LEN)),
            65..=74 => Step::Append(rng.random_range(1..20000)),
            75..=84 => Step::Reopen,
            85..=89 => Step::Fsync,
            90..=95 => Step::Rename,
            _ => Step::UnlinkWhileOpen,
        };
        let ctx = format!("after step {i} {step:?} (seed {seed}; replay with ROSSFS_FSX_SEED={seed})");
        match &step {
            Step::Write(off, len) => {
                let data: Vec<u8> = (0..*len).map(|_| rng.random()).collect();
                pair.mount_fd.write_all_at(&data, *off).unwrap();
                pair.local_fd.write_all_at(&data, *off).unwrap();
            }
            Step::Read(off, len) => {
                let mut a = vec![0u8; *len];
                let mut b = vec![0u8; *len];
                let na = pair.mount_fd.read_at(&mut a, *off).unwrap();
                let nb = pair.local_fd.read_at(&mut b, *off).unwrap();
                assert_eq!(na, nb, "short read differs {ctx}");
                assert!(a[..na] == b[..nb], "read differs {ctx}");
            }
            Step::Truncate(len) => {
                pair.mount_fd.set_len(*len).unwrap();
                pair.local_fd.set_len(*len).unwrap();
            }
            Step::Append(len) => {
                let data: Vec<u8> = (0..*len).map(|_| rng.random()).collect();
                for d in [&pair.mount_dir, &pair.local_dir] {
                    let mut f = fs::OpenOptions::new()
                        .append(true)
                        .open(d.join(&pair.name))
                        .unwrap();
                    f.write_all(&data).unwrap_or_else(|e| panic!("append {ctx}: {e}"));
                }
            }
            Step::Reopen => {
                let (md, ld, name) = (pair.mount_dir.clone(), pair.local_dir.clone(), pair.name.clone());
                drop(pair);
                // A fresh open reads what was uploaded.
                let uploaded = fs::read(md.join(&name)).unwrap();
                assert_eq!(
                    uploaded,
                    fs::read(ld.join(&name)).unwrap(),
                    "reopened content differs {ctx}"
                );
                pair = Pair::open(&md, &ld, &name);
            }
            Step::Fsync => pair
                .mount_fd
                .sync_all()
                .unwrap_or_else(|e| panic!("fsync {ctx}: {e}")),
            Step::Rename => {
                renames += 1;
                let new = format!("model-{renames}.bin");
                fs::rename(pair.mount_dir.join(&pair.name), pair.mount_dir.join(&new))
                    .unwrap_or_else(|e| panic!("rename {ctx}: {e}"));
                fs::rename(pair.local_dir.join(&pair.name), pair.local_dir.join(&new)).unwrap();
                pair.name = new;
            }
            Step::UnlinkWhileOpen => {
                fs::remove_file(pair.mount_dir.join(&pair.name)).unwrap();
                fs::remove_file(pair.local_dir.join(&pair.name)).unwrap();
                // Keep using the unlinked handles for a few operations.
                for _ in 0..3 {
                    let off = rng.random_range(0..MAX_LEN);
                    let data: Vec<u8> = (0..rng.random_range(1..4096)).map(|_| rng.random()).collect();
                    pair.mount_fd.write_all_at(&data, off).unwrap();
                    pair.local_fd.write_all_at(&data, off).unwrap();
                    pair.check(&ctx);
                }
                // Bring the name back with the unlinked file's content.
                let mut content = Vec::new();
                pair.local_fd.read_to_end(&mut content).ok();
                let len = pair.local_fd.metadata().unwrap().len() as usize;
                content.resize(len, 0);
                pair.local_fd.read_exact_at(&mut content, 0).unwrap();
                let (md, ld, name) = (pair.mount_dir.clone(), pair.local_dir.clone(), pair.name.clone());
                drop(pair);
                fs::write(md.join(&name), &content).unwrap();
                fs::write(ld.join(&name), &content).unwrap();
                pair = Pair::open(&md, &ld, &name);
            }
        }
        history.push(step);
        pair.check(&ctx);
    }
    let name = pair.name.clone();
    drop(pair);
    let expected = fs::read(local.path().join(&name)).unwrap();
    m.unmount();
    m = Mount::mount(&bucket, &[]);
    let got = fs::read(m.path().join(&name)).unwrap();
    assert!(got == expected, "content differs after remount (seed {seed})");
    assert_eq!(keys(&bucket, ""), vec![name], "exactly one object remains");
    m.unmount();
    eprintln!(
        "fsx: {ops} operations, seed {seed}, {} steps checked, final size {}",
        history.len(),
        expected.len()
    );
}

/// `ROSSFS_FSX_SEED`, else a fresh seed (printed, to replay a failure).
fn fsx_seed() -> u64 {
    std::env::var("ROSSFS_FSX_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64)
}

/// Short randomized model run for CI; `ROSSFS_FSX_OPS` and `ROSSFS_FSX_SEED` change it.
#[test]
fn randomized_model_test_against_a_local_file() {
    let seed = fsx_seed();
    let ops = std::env::var("ROSSFS_FSX_OPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1500);
    eprintln!("fsx seed {seed} ({ops} operations)");
    fsx(ops, seed, &[]);
}

/// The same on a `direct_io` mount, where every read and write reaches rossfs as the caller
/// made it (no page cache in between).
#[test]
fn randomized_model_test_on_a_direct_io_mount() {
    let seed = fsx_seed();
    eprintln!("fsx seed {seed} (600 operations, direct_io)");
    fsx(600, seed, &["direct_io"]);
}

/// The same with every file staged on disk from its first byte (`max_dirty_memory=0`) and read
/// through rossfs (`direct_io`): reads, truncations and uploads of spilled content.
#[test]
fn randomized_model_test_with_content_staged_on_disk() {
    let seed = fsx_seed();
    eprintln!("fsx seed {seed} (400 operations, direct_io, max_dirty_memory=0)");
    fsx(400, seed, &["direct_io", "max_dirty_memory=0"]);
}

/// The long run: `cargo test --test posix -- --ignored` (100,000 operations).
#[test]
#[ignore]
fn randomized_model_test_long() {
    let seed = std::env::var("ROSSFS_FSX_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(42);
    fsx(100_000, seed, &[]);
}

fn tree_digest(root: &Path) -> Vec<(String, u32, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            let meta = fs::symlink_metadata(e.path()).unwrap();
            let rel = e
                .path()
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if meta.is_dir() {
                out.push((rel, meta.mode() & 0o7777, Vec::new()));
                stack.push(e.path());
            } else if meta.file_type().is_symlink() {
                out.push((
                    rel,
                    0,
                    fs::read_link(e.path()).unwrap().as_os_str().as_bytes().to_vec(),
                ));
            } else {
                out.push((rel, meta.mode() & 0o7777, fs::read(e.path()).unwrap()));
            }
        }
    }
    out.sort();
    out
}

fn make_tree(root: &Path) {
    for d in ["src/core", "src/util", "docs", "empty"] {
        fs::create_dir_all(root.join(d)).unwrap();
    }
    for i in 0..40 {
        let dir = ["src/core", "src/util", "docs", ""][i % 4];
        let body: Vec<u8> = (0..(i * 997 % 20000)).map(|j| (j * 31 + i) as u8).collect();
        fs::write(root.join(dir).join(format!("file{i}.rs")), body).unwrap();
    }
    fs::set_permissions(root.join("docs/file2.rs"), fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink("../src/core/file0.rs", root.join("docs/link")).unwrap();
}

#[test]
fn real_tools_work_on_the_mount() {
    let bucket = block_on(new_bucket("tools"));
    let m = Mount::mount(&bucket, &[]);
    let p = m.path();
    let local = tempfile::tempdir().unwrap();
    let tree = local.path().join("tree");
    make_tree(&tree);

    // tar -x into the mount, tar -c out of it: the same tree.
    let tarball = local.path().join("tree.tar");
    run(Command::new("tar")
        .arg("-cf")
        .arg(&tarball)
        .arg("-C")
        .arg(&tree)
        .arg("."));
    fs::create_dir(p.join("untarred")).unwrap();
    run(Command::new("tar")
        .arg("-xf")
        .arg(&tarball)
        .arg("-C")
        .arg(p.join("untarred")));
    assert_eq!(tree_digest(&p.join("untarred")), tree_digest(&tree));
    let back = local.path().join("back");
    fs::create_dir(&back).unwrap();
    let tar2 = local.path().join("again.tar");
    run(Command::new("tar")
        .arg("-cf")
        .arg(&tar2)
        .arg("-C")
        .arg(p.join("untarred"))
        .arg("."));
    run(Command::new("tar").arg("-xf").arg(&tar2).arg("-C").arg(&back));
    assert_eq!(tree_digest(&back), tree_digest(&tree));

    // cp -a keeps modes and times.
    run(Command::new("cp").arg("-a").arg(&tree).arg(p.join("copied")));
    assert_eq!(tree_digest(&p.join("copied")), tree_digest(&tree));
    let (a, b) = (
        fs::metadata(tree.join("docs/file2.rs")).unwrap(),
        fs::metadata(p.join("copied/docs/file2.rs")).unwrap(),
    );
    assert_eq!(
        (a.mtime(), a.mtime_nsec(), a.mode()),
        (b.mtime(), b.mtime_nsec(), b.mode())
    );

    // rsync -a into the mount, then a checksum dry run reports nothing to do.
    run(Command::new("rsync")
        .arg("-a")
        .arg(format!("{}/", tree.display()))
        .arg(p.join("synced")));
    let diff = run(Command::new("rsync")
        .args(["-a", "--checksum", "--dry-run", "--itemize-changes"])
        .arg(format!("{}/", tree.display()))
        .arg(format!("{}/", p.join("synced").display())));
    assert_eq!(diff.trim(), "", "rsync still sees differences:\n{diff}");

    // git: init, add, commit, status.
    let repo = p.join("repo");
    run(Command::new("cp").arg("-r").arg(&tree).arg(&repo));
    let git = |args: &[&str]| {
        run(Command::new("git")
            .arg("-C")
            .arg(&repo)
            .args([
                "-c",
                "user.name=t",
                "-c",
                "user.email=t@example.invalid",
                "-c",
                "init.defaultBranch=main",
            ])
            .args(args)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("HOME", local.path()))
    };
    git(&["init", "-q"]);
    git(&["add", "-A"]);
    git(&["commit", "-q", "-m", "first"]);
    let status = git(&["status", "--porcelain"]);
    assert_eq!(status.trim(), "", "clean after commit");
    fs::write(repo.join("docs/file2.rs"), b"changed").unwrap();
    assert!(git(&["status", "--porcelain"]).contains("docs/file2.rs"));
    git(&["commit", "-q", "-am", "second"]);
    assert_eq!(git(&["log", "--oneline"]).lines().count(), 2);

    // SQLite with a rollback journal: 1,000 rows in a transaction, read back after remount.
    let db = p.join("app.db");
    let mut sql = String::from("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT);\nBEGIN;\n");
    for i in 0..1000 {
        sql.push_str(&format!("INSERT INTO t(v) VALUES('row {i}');\n"));
    }
    sql.push_str("COMMIT;\n");
    let mut child = Command::new("sqlite3")
        .arg(&db)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("sqlite3 (Debian package sqlite3)");
    child.stdin.take().unwrap().write_all(sql.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "sqlite3: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    m.unmount();
    let m = Mount::mount(&bucket, &[]);
    let count = run(Command::new("sqlite3")
        .arg(m.path().join("app.db"))
        .arg("SELECT count(*), max(v) FROM t;"));
    assert_eq!(count.trim(), "1000|row 999");
    assert_eq!(tree_digest(&m.path().join("untarred")), tree_digest(&tree));
    m.unmount();
}

fn pending_uploads(bucket: &str) -> usize {
    block_on(async {
        let c = s3_client().await;
        c.list_multipart_uploads()
            .bucket(bucket)
            .send()
            .await
            .expect("ListMultipartUploads")
            .uploads()
            .len()
    })
}

fn is_tmpfs(path: &Path) -> bool {
    let c = CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: statfs writes into the zeroed struct it is given.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::statfs(c.as_ptr(), &mut st) }, 0);
    st.f_type == libc::TMPFS_MAGIC
}

/// Size of the largest unlinked file `pid` holds open (rossfs's spill file) and how many of
/// its bytes are in the page cache.
fn spill_file_residency(pid: libc::pid_t) -> Option<(u64, u64)> {
    let mut largest: Option<(u64, u64)> = None;
    for entry in fs::read_dir(format!("/proc/{pid}/fd")).ok()?.flatten() {
        // Only unlinked files are opened: opening a pipe the daemon holds could block.
        let deleted = fs::read_link(entry.path())
            .is_ok_and(|t| t.is_absolute() && t.to_string_lossy().ends_with(" (deleted)"));
        if !deleted {
            continue;
        }
        let Ok(file) = fs::File::open(entry.path()) else {
            continue;
        };
        let Ok(meta) = file.metadata() else { continue };
        let len = meta.len();
        if !meta.is_file() || len == 0 || largest.is_some_and(|(l, _)| l >= len) {
            continue;
        }
        largest = Some((len, resident_bytes(&file)));
    }
    largest
}

/// The system's page size, the unit of `mincore`.
fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as usize }
}

/// How many bytes of `file` are in the page cache.
fn resident_bytes(file: &fs::File) -> u64 {
    use std::os::fd::AsRawFd;
    let len = file.metadata().unwrap().len() as usize;
    if len == 0 {
        return 0;
    }
    // SAFETY: a read-only shared mapping of the whole file, only passed to mincore and
    // unmapped before the file is closed; nothing reads through it.
    unsafe {
        let map = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            0,
        );
        assert_ne!(map, libc::MAP_FAILED, "mmap: {}", std::io::Error::last_os_error());
        let page = page_size();
        let mut pages = vec![0u8; len.div_ceil(page)];
        let rc = libc::mincore(map, len, pages.as_mut_ptr());
        libc::munmap(map, len);
        assert_eq!(rc, 0, "mincore");
        (pages.iter().filter(|&&p| p & 1 == 1).count() * page) as u64
    }
}

#[test]
fn page_cache_is_kept_across_opens_unless_the_mount_uses_direct_io() {
    let bucket = block_on(new_bucket("direct"));
    const LEN: usize = 3 * 1024 * 1024 + 512;
    let content: Vec<u8> = (0..LEN).map(|i| (i * 7 % 251) as u8).collect();
    block_on(async {
        let c = s3_client().await;
        put_object(&c, &bucket, "made-by-s3.bin", content.clone()).await;
    });
    let page = page_size();
    let page_rounded = (LEN.div_ceil(page) * page) as u64;
    // Reads the whole object through `m`, checks it, and opens it again.
    let read_then_reopen = |m: &Mount| {
        let path = m.path().join("made-by-s3.bin");
        assert!(
            fs::read(&path).unwrap() == content,
            "content through {}",
            m.path().display()
        );
        fs::File::open(&path).unwrap()
    };

    // Default: what one open read stays in the page cache for the next open of the unchanged
    // object.
    let m = Mount::mount(&bucket, &[]);
    let again = read_then_reopen(&m);
    assert_eq!(
        resident_bytes(&again),
        page_rounded,
        "a read object stays cached across opens"
    );
    let mut buf = vec![0u8; LEN];
    again.read_exact_at(&mut buf, 0).unwrap();
    assert!(buf == content);
    drop(again);
    m.unmount();

    // direct_io: reads and writes pass straight through, nothing is cached, and the content
    // is the same.
    let m = Mount::mount(&bucket, &["direct_io"]);
    let f = read_then_reopen(&m);
    assert_eq!(
        resident_bytes(&f),
        0,
        "direct_io reads leave nothing in the page cache"
    );
    let mut buf = vec![0u8; 1000];
    f.read_exact_at(&mut buf, LEN as u64 - 1000).unwrap();
    assert!(buf[..] == content[LEN - 1000..], "a read at the end");
    drop(f);
    let written = m.path().join("written.bin");
    fs::write(&written, &content).unwrap();
    let f = fs::File::open(&written).unwrap();
    assert_eq!(
        resident_bytes(&f),
        0,
        "direct_io writes leave nothing in the page cache"
    );
    drop(f);
    let mut f = fs::OpenOptions::new().append(true).open(&written).unwrap();
    f.write_all(b"appended").unwrap();
    drop(f);
    // A shared writable mapping works (the kernel serves it from the page cache).
    let mapped = m.path().join("mapped.bin");
    fs::write(&mapped, vec![0u8; 8192]).unwrap();
    {
        use std::os::fd::AsRawFd;
        let f = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&mapped)
            .unwrap();
        // SAFETY: a shared mapping of the file's 8192 bytes, written and unmapped before the
        // file is closed.
        unsafe {
            let map = libc::mmap(
                std::ptr::null_mut(),
                8192,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                f.as_raw_fd(),
                0,
            );
            assert_ne!(
                map,
                libc::MAP_FAILED,
                "shared mmap on a direct_io mount: {}",
                std::io::Error::last_os_error()
            );
            std::ptr::copy_nonoverlapping(b"mapped".as_ptr(), (map as *mut u8).add(4096), 6);
            assert_eq!(libc::msync(map, 8192, libc::MS_SYNC), 0);
            libc::munmap(map, 8192);
        }
        f.sync_all().unwrap();
    }
    let mut expect_mapped = vec![0u8; 8192];
    expect_mapped[4096..4102].copy_from_slice(b"mapped");
    assert!(
        fs::read(&mapped).unwrap() == expect_mapped,
        "the mapping's write reads back"
    );
    m.unmount();

    let mut expect_written = content.clone();
    expect_written.extend_from_slice(b"appended");
    block_on(async {
        let c = s3_client().await;
        assert!(
            get_object(&c, &bucket, "written.bin").await == expect_written,
            "written.bin in the bucket"
        );
        assert!(
            get_object(&c, &bucket, "mapped.bin").await == expect_mapped,
            "mapped.bin in the bucket"
        );
    });
}

#[test]
fn large_sequential_writes_upload_while_written_and_other_patterns_stay_exact() {
    let bucket = block_on(new_bucket("stream"));
    // Spill files on the build's disk, not a tmpfs /tmp: parts uploaded leave the page cache
    // only where there is a disk to hold them.
    let cache = tempfile::TempDir::with_prefix_in("stream-cache-", env!("CARGO_TARGET_TMPDIR")).unwrap();
    let cache_opt = format!("cache_dir={}", cache.path().display());
    let m = Mount::mount(&bucket, &["multipart_size=5", &cache_opt]);
    let chunk: Vec<u8> = (0..1 << 20)
        .map(|i: u32| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();

    // Sequential: parts go out while the file is still open.
    let mut f = fs::File::create(m.path().join("seq.bin")).unwrap();
    let mut expected = Vec::new();
    for i in 0..40u8 {
        let mut c = chunk.clone();
        c[0] = i;
        f.write_all(&c).unwrap();
        expected.extend_from_slice(&c);
    }
    assert_eq!(
        pending_uploads(&bucket),
        1,
        "a multipart upload is running before close"
    );
    drop(f);
    let closed = std::time::SystemTime::now();
    assert_eq!(pending_uploads(&bucket), 0);
    let got = block_on(async { get_object(&s3_client().await, &bucket, "seq.bin").await });
    assert!(got == expected, "streamed object differs");
    // Times that only writes changed are left to Last-Modified: closing costs no metadata
    // copy of the whole object (a copy would have stored an mtime).
    let h = block_on(head(&bucket, "seq.bin"));
    let meta = h.metadata().cloned().unwrap_or_default();
    assert!(meta.contains_key("mode"), "{meta:?}");
    assert!(!meta.contains_key("mtime"), "{meta:?}");
    let shown = fs::metadata(m.path().join("seq.bin"))
        .unwrap()
        .modified()
        .unwrap();
    let off = closed.duration_since(shown).unwrap_or_else(|e| e.duration());
    assert!(
        off < std::time::Duration::from_secs(30),
        "mtime {shown:?} far from close {closed:?}"
    );

    // dd's pattern: a duplicate of the new descriptor is closed before the first write (a
    // FLUSH that uploads the empty file); the writes after it still stream.
    let mut f = fs::File::create(m.path().join("dup.bin")).unwrap();
    drop(f.try_clone().unwrap());
    let mut expected = Vec::new();
    for i in 0..30u8 {
        let mut c = chunk.clone();
        c[1] = i;
        f.write_all(&c).unwrap();
        expected.extend_from_slice(&c);
    }
    assert_eq!(
        pending_uploads(&bucket),
        1,
        "a multipart upload is running before close, after an early flush"
    );
    drop(f);
    let got = block_on(async { get_object(&s3_client().await, &bucket, "dup.bin").await });
    assert!(got == expected, "object streamed after an early flush differs");

    // A write before the end after streaming began: uploaded whole, exactly.
    let mut f = fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(m.path().join("mixed.bin"))
        .unwrap();
    let mut expected = Vec::new();
    for i in 0..30u8 {
        let mut c = chunk.clone();
        c[2] = i;
        f.write_all(&c).unwrap();
        expected.extend_from_slice(&c);
    }
    // The parts already uploaded leave the page cache (written to the disk first): what the
    // file needs of them now comes back from the disk.
    let pid = m.daemon_pids()[0];
    if !is_tmpfs(cache.path()) {
        let started = std::time::Instant::now();
        loop {
            let (len, resident) = spill_file_residency(pid).expect("rossfs holds a spill file");
            if len == 30 << 20 && resident <= 15 << 20 {
                break;
            }
            assert!(
                started.elapsed() < std::time::Duration::from_secs(60),
                "uploaded parts stay in the page cache: {resident} of {len} bytes resident"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
    let read_back = fs::read(m.path().join("mixed.bin")).unwrap();
    assert!(read_back == expected, "content read while it is written differs");
    f.write_all_at(b"REWRITTEN", 1 << 20).unwrap();
    expected[1 << 20..(1 << 20) + 9].copy_from_slice(b"REWRITTEN");
    f.write_all_at(b"tail", expected.len() as u64).unwrap();
    expected.extend_from_slice(b"tail");
    drop(f);
    let got = block_on(async { get_object(&s3_client().await, &bucket, "mixed.bin").await });
    assert!(got == expected, "object differs after a write before the end");
    assert_eq!(
        pending_uploads(&bucket),
        0,
        "the abandoned streamed upload was aborted"
    );

    // Times set while streaming are the ones stored.
    let f = fs::File::create(m.path().join("timed.bin")).unwrap();
    for _ in 0..25 {
        (&f).write_all(&chunk).unwrap();
    }
    let when = UNIX_EPOCH + std::time::Duration::new(1_500_000_000, 250_000_000);
    f.set_times(fs::FileTimes::new().set_modified(when)).unwrap();
    drop(f);
    let h = block_on(head(&bucket, "timed.bin"));
    assert_eq!(h.content_length(), Some(25 << 20));
    assert_eq!(
        h.metadata().and_then(|m| m.get("mtime")).map(String::as_str),
        Some("1500000000.250000000")
    );
    m.unmount();
}

/// What the mount knew of the directories below a directory it renamed follows them. A chmod
/// of a subdirectory it had looked up writes the subdirectory's new marker: not the deleted
/// old one (ENOENT), nor the marker of a new directory made at the old path, which also
/// survives an `rm -rf` of the renamed tree. And a listing of the directory taken before the
/// rename makes no name appear under the old path afterwards.
#[test]
fn a_renamed_directory_s_subdirectories_keep_their_own_markers() {
    let bucket = block_on(new_bucket("dirmove-markers"));
    let perm = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    let chmod = |p: &Path, mode: u32| fs::set_permissions(p, fs::Permissions::from_mode(mode));
    let m = Mount::mount(&bucket, &[]);
    let (d, e) = (m.path().join("D"), m.path().join("E"));
    fs::create_dir_all(d.join("sub")).unwrap();
    fs::write(d.join("sub/f"), b"f").unwrap();
    assert!(d.join("sub").is_dir());
    fs::rename(&d, &e).unwrap();
    chmod(&e.join("sub"), 0o700).expect("chmod of a subdirectory of the renamed directory");
    assert_eq!(perm(&e.join("sub")), 0o700);
    fs::create_dir_all(d.join("sub")).unwrap();
    chmod(&d.join("sub"), 0o751).unwrap();
    chmod(&e.join("sub"), 0o777).unwrap();
    assert_eq!(perm(&d.join("sub")), 0o751);
    m.unmount();
    let m = Mount::mount(&bucket, &[]);
    let (d, e) = (m.path().join("D"), m.path().join("E"));
    assert_eq!(
        perm(&d.join("sub")),
        0o751,
        "the new D/sub's marker was written over"
    );
    assert_eq!(perm(&e.join("sub")), 0o777);
    assert_eq!(fs::read(e.join("sub/f")).unwrap(), b"f");
    m.unmount();
    let m = Mount::mount(&bucket, &[]);
    let e = m.path().join("E");
    assert!(e.join("sub").is_dir());
    fs::remove_dir_all(&e).unwrap();
    m.unmount();
    let m = Mount::mount(&bucket, &[]);
    let d = m.path().join("D");
    assert_eq!(perm(&d.join("sub")), 0o751, "rm -rf E deleted D/sub's marker");
    m.unmount();

    // Directories made by another tool, listed by name only, then the directory renamed.
    put_objects(&bucket, &[("L/a/x", b"x"), ("L/b/y", b"y"), ("L/f", b"f")]);
    let m = Mount::mount(&bucket, &[]);
    let (l, k) = (m.path().join("L"), m.path().join("K"));
    assert_eq!(names_in(&l), ["a", "b", "f"]);
    fs::rename(&l, &k).unwrap();
    assert!(k.join("a").is_dir());
    fs::create_dir(&l).unwrap();
    fs::create_dir(l.join("b")).expect("mkdir of a name the old listing had");
    assert_eq!(names_in(&l), ["b"]);
    m.unmount();
}

/// A file written here and still open for reading after its upload: renaming it copies the
/// stored object on the server (one CopyObject), instead of uploading the copy kept for the
/// reader again; the reader goes on reading it.
#[test]
fn renaming_a_stored_file_kept_open_by_a_reader_copies_it_on_the_server() {
    let bucket = block_on(new_bucket("mv-kept"));
    let port = free_port();
    let m = Mount::mount(&bucket, &[&format!("metrics_addr=127.0.0.1:{port}")]);
    let (a, b) = (m.path().join("a"), m.path().join("b"));
    let body: Vec<u8> = (0..3u32 << 20).map(|i| (i % 251) as u8).collect();
    let mut w = fs::File::create(&a).unwrap();
    let mut r = fs::File::open(&a).unwrap();
    w.write_all(&body).unwrap();
    drop(w);
    let before = scrape(port);
    fs::rename(&a, &b).unwrap();
    let after = scrape(port);
    let made = |op| requests(&after, op) - requests(&before, op);
    assert_eq!(made("CopyObject"), 1.0, "the stored object is copied");
    assert_eq!(made("PutObject"), 0.0, "the content went up again");
    assert_eq!(made("CreateMultipartUpload"), 0.0, "the content went up again");
    let mut read = Vec::new();
    r.read_to_end(&mut read).unwrap();
    assert!(read == body, "the reader reads what was written");
    drop(r);
    assert_eq!(fs::read(&b).unwrap(), body);
    assert!(!a.exists());
    m.unmount();
}

/// An xattr change made after another client replaced the object (within the stat TTL, so
/// this mount still holds the old ETag): the guarded copy fails, and the change is made again
/// on the other client's object, not dropped while reporting success.
#[test]
fn an_xattr_change_lands_on_an_object_another_client_replaced() {
    let bucket = block_on(new_bucket("xattr-race"));
    put_objects(&bucket, &[("f", b"first")]);
    let m = Mount::mount(&bucket, &[]);
    let f = m.path().join("f");
    setxattr(&f, "user.a", b"1", 0).unwrap();
    // Another client writes new content, keeping the metadata it read (user.a with it).
    let meta = rewrite_keeping_metadata(&bucket, "f", b"second");
    assert!(meta.contains_key("xattr"), "{meta:?}");
    setxattr(&f, "user.b", b"2", 0).expect("setxattr on a replaced object");
    assert_eq!(getxattr(&f, "user.b").unwrap(), b"2");
    assert_eq!(
        getxattr(&f, "user.a").unwrap(),
        b"1",
        "the other client's copy of user.a"
    );
    // Replaced again; a removal is made again on that object too.
    rewrite_keeping_metadata(&bucket, "f", b"third");
    removexattr(&f, "user.a").expect("removexattr on a replaced object");
    m.unmount();
    let m = Mount::mount(&bucket, &[]);
    let f = m.path().join("f");
    assert_eq!(fs::read(&f).unwrap(), b"third");
    assert_eq!(getxattr(&f, "user.b").unwrap(), b"2", "user.b is stored");
    assert_eq!(
        getxattr(&f, "user.a").map_err(|e| e.raw_os_error()),
        Err(Some(libc::ENODATA)),
        "user.a is removed"
    );
    m.unmount();
}

/// A symlink another client pointed elsewhere within the stat TTL reads as its whole new
/// target, not the first bytes of it (as many as the old target had).
#[test]
fn a_symlink_repointed_elsewhere_reads_its_whole_new_target() {
    let bucket = block_on(new_bucket("relink"));
    let m = Mount::mount(&bucket, &[]);
    let l = m.path().join("l");
    std::os::unix::fs::symlink("short", &l).unwrap();
    assert_eq!(fs::read_link(&l).unwrap(), Path::new("short"));
    rewrite_keeping_metadata(&bucket, "l", b"a/much/longer/target");
    assert_eq!(fs::read_link(&l).unwrap(), Path::new("a/much/longer/target"));
    m.unmount();
}

/// What another client does to `key` behind the mount's back: new content, with the user
/// metadata it read (returned).
fn rewrite_keeping_metadata(
    bucket: &str,
    key: &str,
    body: &'static [u8],
) -> std::collections::HashMap<String, String> {
    block_on(async {
        let c = s3_client().await;
        let head = c.head_object().bucket(bucket).key(key).send().await.unwrap();
        let meta = head.metadata().cloned().unwrap_or_default();
        c.put_object()
            .bucket(bucket)
            .key(key)
            .set_metadata(Some(meta.clone()))
            .body(ByteStream::from_static(body))
            .send()
            .await
            .unwrap();
        meta
    })
}
