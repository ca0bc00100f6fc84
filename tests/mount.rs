//! End-to-end behaviour of a rossfs mount against a real S3 server (Garage), through a real
//! FUSE mount: namespace rules, data integrity, listings, caching and error reporting.

mod common;

use std::ffi::CString;
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::IntoRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use std::time::{Duration, Instant};

use aws_sdk_s3::primitives::ByteStream;
use common::*;

async fn head(bucket: &str, key: &str) -> aws_sdk_s3::operation::head_object::HeadObjectOutput {
    let client = s3_client().await;
    match client.head_object().bucket(bucket).key(key).send().await {
        Ok(h) => h,
        Err(e) => panic!(
            "HeadObject {bucket}/{key}: {}",
            aws_sdk_s3::error::DisplayErrorContext(e)
        ),
    }
}

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn mount_time_errors_exit_nonzero_naming_cause_and_fix() {
    let bucket = block_on(new_bucket("errors"));
    let server = server();

    let out = try_mount("no-such-bucket-here", &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    let err = stderr_of(&out);
    assert!(
        err.contains("NoSuchBucket") && err.contains("does not exist") && err.contains(&server.endpoint),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "one line: {err}");

    // Unknown access key and wrong secret: the S3 code and the server's reason are shown.
    let dir = tempfile::tempdir().expect("tempdir");
    let bad_key = write_passwd_file(dir.path(), "GK000000000000000000000000", &server.secret_key);
    let out = try_mount(&bucket, &[&format!("passwd_file={}", bad_key.display())]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr_of(&out);
    assert!(err.contains("403") && err.contains("passwd_file"), "{err}");
    assert!(
        err.contains("AccessDenied") || err.contains("InvalidAccessKeyId"),
        "{err}"
    );
    let dir2 = tempfile::tempdir().expect("tempdir");
    let bad_secret = write_passwd_file(dir2.path(), &server.access_key, &"0".repeat(64));
    let out = try_mount(&bucket, &[&format!("passwd_file={}", bad_secret.display())]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr_of(&out);
    assert!(
        err.contains("403") && (err.contains("signature") || err.contains("SignatureDoesNotMatch")),
        "{err}"
    );

    // A group-readable passwd file is refused before any request.
    let dir3 = tempfile::tempdir().expect("tempdir");
    let open = write_passwd_file(dir3.path(), &server.access_key, &server.secret_key);
    fs::set_permissions(&open, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let out = try_mount(&bucket, &[&format!("passwd_file={}", open.display())]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr_of(&out);
    assert!(
        err.contains("chmod 600") && !err.contains(&server.secret_key),
        "{err}"
    );

    // Nothing listens: connection refused, naming the URL.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{closed}");
    let out = try_mount(&bucket, &[&format!("url={url}")]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr_of(&out);
    assert!(err.contains("cannot reach") && err.contains(&url), "{err}");

    // Something listens but never answers: a timeout, naming the URL.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://127.0.0.1:{}", silent.local_addr().unwrap().port());
    let out = try_mount(&bucket, &[&format!("url={url}"), "readwrite_timeout=1"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr_of(&out);
    assert!(err.contains("did not answer") && err.contains(&url), "{err}");
    drop(silent);

    // Bad option values and unknown options name the option.
    let out = try_mount(&bucket, &["bogus_option"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr_of(&out).contains("unknown option 'bogus_option'"),
        "{}",
        stderr_of(&out)
    );
    let out = try_mount(&bucket, &["stat_cache_expire=soon"]);
    assert!(
        stderr_of(&out).contains("stat_cache_expire=soon"),
        "{}",
        stderr_of(&out)
    );
}

#[test]
fn mountpoint_missing_not_a_directory_or_busy_is_refused() {
    let bucket = block_on(new_bucket("mountpoint"));
    let server = server();
    let scratch = tempfile::tempdir().unwrap();
    let passwd = write_passwd_file(scratch.path(), &server.access_key, &server.secret_key);

    let missing = scratch.path().join("missing");
    let out = mount_command(&bucket, &missing, &passwd, &[]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr_of(&out).contains("does not exist") && stderr_of(&out).contains("mkdir -p"),
        "{}",
        stderr_of(&out)
    );

    let file = scratch.path().join("file");
    fs::write(&file, b"x").unwrap();
    let out = mount_command(&bucket, &file, &passwd, &[]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr_of(&out).contains("not a directory"), "{}", stderr_of(&out));

    // A directory with entries: they would be hidden, so only with -o nonempty.
    let full = scratch.path().join("full");
    fs::create_dir(&full).unwrap();
    fs::write(full.join("local.txt"), b"here before").unwrap();
    let out = mount_command(&bucket, &full, &passwd, &[]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr_of(&out);
    assert!(
        err.contains("is not empty") && err.contains("-o nonempty"),
        "{err}"
    );
    assert!(!is_mounted(&full));
    let out = run_with_deadline(
        mount_command(&bucket, &full, &passwd, &["nonempty"]),
        scratch.path(),
        Duration::from_secs(60),
    );
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(is_mounted(&full));
    assert!(
        !full.join("local.txt").exists(),
        "the mount does not cover the directory"
    );
    fusermount_u(&full);
    assert_eq!(fs::read(full.join("local.txt")).unwrap(), b"here before");

    let m = Mount::mount(&bucket, &[]);
    let out = mount_command(&bucket, m.path(), &passwd, &[]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr_of(&out);
    assert!(
        err.contains("already mounted") && err.contains("fuse.rossfs"),
        "{err}"
    );
    m.unmount();
}

#[test]
fn mkdir_writes_a_marker_and_rmdir_follows_posix() {
    let bucket = block_on(new_bucket("dirs"));
    let m = Mount::mount(&bucket, &[]);
    let d = m.path().join("made");
    fs::create_dir(&d).unwrap();
    let h = block_on(head(&bucket, "made/"));
    assert_eq!(h.content_length(), Some(0));
    assert_eq!(h.content_type(), Some("application/octet-stream"));
    let meta = h.metadata().cloned().unwrap_or_default();
    let mode: u32 = meta.get("mode").expect("mode metadata").parse().unwrap();
    assert_eq!(mode & 0o170000, 0o040000, "type bits of a directory");
    assert_eq!(meta.get("uid").map(String::as_str), Some("0"));
    assert!(meta.get("mtime").is_some_and(|t| t.contains('.')), "{meta:?}");
    assert!(fs::metadata(&d).unwrap().is_dir());

    assert_eq!(errno_of(fs::create_dir(&d)), libc::EEXIST);
    fs::write(d.join("child"), b"c").unwrap();
    assert_eq!(errno_of(fs::remove_dir(&d)), libc::ENOTEMPTY);
    // A key created by someone else under the prefix also keeps it non-empty.
    fs::remove_file(d.join("child")).unwrap();
    block_on(async { put_object(&s3_client().await, &bucket, "made/deep/x", b"x".to_vec()).await });
    assert_eq!(errno_of(fs::remove_dir(&d)), libc::ENOTEMPTY);
    block_on(async {
        s3_client()
            .await
            .delete_object()
            .bucket(&bucket)
            .key("made/deep/x")
            .send()
            .await
            .unwrap()
    });
    fs::remove_dir(&d).unwrap();
    assert_eq!(errno_of(fs::metadata(&d)), libc::ENOENT);
    assert!(block_on(async { list_keys(&s3_client().await, &bucket, "made").await }).is_empty());

    assert_eq!(errno_of(fs::remove_dir(m.path().join("nothing"))), libc::ENOENT);
    fs::write(m.path().join("plain"), b"p").unwrap();
    assert_eq!(errno_of(fs::remove_dir(m.path().join("plain"))), libc::ENOTDIR);
    assert_eq!(errno_of(fs::remove_file(m.path())), libc::EISDIR);
    m.unmount();
}

#[test]
fn hundred_mib_round_trips_both_ways() {
    let bucket = block_on(new_bucket("big"));
    // Another client's object, there before the mount lists the root.
    let other = pattern(100 << 20, 2);
    block_on(async { put_object(&s3_client().await, &bucket, "through-api.bin", other.clone()).await });
    let m = Mount::mount(&bucket, &[]);
    let data = pattern(100 << 20, 1);
    fs::write(m.path().join("through-mount.bin"), &data).unwrap();
    let got = block_on(async { get_object(&s3_client().await, &bucket, "through-mount.bin").await });
    assert_eq!(got.len(), data.len());
    assert!(
        got == data,
        "object differs from what was written through the mount"
    );
    let h = block_on(head(&bucket, "through-mount.bin"));
    assert_eq!(h.content_length(), Some(100 << 20));

    let read = fs::read(m.path().join("through-api.bin")).unwrap();
    assert!(read == other, "mount read differs from the object");
    m.unmount();
}

#[test]
fn small_files_overwrite_append_and_random_offsets() {
    let bucket = block_on(new_bucket("small"));
    let m = Mount::mount(&bucket, &[]);
    let p = m.path().join("f.txt");
    fs::write(&p, b"hello world").unwrap();
    assert_eq!(fs::read(&p).unwrap(), b"hello world");
    fs::write(&p, b"short").unwrap();
    assert_eq!(
        block_on(async { get_object(&s3_client().await, &bucket, "f.txt").await }),
        b"short"
    );
    let mut f = fs::OpenOptions::new().append(true).open(&p).unwrap();
    f.write_all(b"+more").unwrap();
    drop(f);
    assert_eq!(
        block_on(async { get_object(&s3_client().await, &bucket, "f.txt").await }),
        b"short+more"
    );
    let mut f = fs::OpenOptions::new().read(true).write(true).open(&p).unwrap();
    f.seek(SeekFrom::Start(2)).unwrap();
    f.write_all(b"XY").unwrap();
    f.seek(SeekFrom::Start(20)).unwrap();
    f.write_all(b"Z").unwrap();
    f.sync_all().unwrap();
    let mut expect = b"shXYt+more".to_vec();
    expect.resize(20, 0);
    expect.push(b'Z');
    assert_eq!(
        block_on(async { get_object(&s3_client().await, &bucket, "f.txt").await }),
        expect
    );
    f.set_len(4).unwrap();
    drop(f);
    assert_eq!(fs::read(&p).unwrap(), b"shXY");
    assert_eq!(
        block_on(async { get_object(&s3_client().await, &bucket, "f.txt").await }),
        b"shXY"
    );
    // An empty file is stored as an empty object with the creator's mode.
    let e = m.path().join("empty");
    fs::OpenOptions::new()
        .create(true)
        .write(true)
        .mode_0600()
        .open(&e)
        .unwrap();
    let h = block_on(head(&bucket, "empty"));
    assert_eq!(h.content_length(), Some(0));
    let mode: u32 = h.metadata().and_then(|m| m.get("mode")).unwrap().parse().unwrap();
    assert_eq!(mode, 0o100600);
    assert_eq!(fs::metadata(&e).unwrap().mode() & 0o7777, 0o600);
    m.unmount();
}

trait Mode0600 {
    fn mode_0600(&mut self) -> &mut Self;
}
impl Mode0600 for fs::OpenOptions {
    fn mode_0600(&mut self) -> &mut Self {
        std::os::unix::fs::OpenOptionsExt::mode(self, 0o600)
    }
}

/// A file and a directory of one name whose keys fall on two listing pages (`t/a` on the
/// first, `t/a/` on the second: the thousand `t/a-...` keys sort between them) show the
/// directory, once, as they do when one page holds both; an object with content named like
/// an s3fs marker is a file.
#[test]
fn a_directory_twin_on_the_next_listing_page_wins() {
    let bucket = block_on(new_bucket("twins"));
    put_many(&bucket, (0..1000).map(|i| format!("t/a-{i:04}")), b"x");
    put_objects(
        &bucket,
        &[
            ("t/a", b"file"),
            ("t/a/inside", b"in"),
            ("t/notes_$folder$", b"not a marker"),
        ],
    );
    let m = Mount::mount(&bucket, &[]);
    let t = m.path().join("t");
    let names = names_in(&t);
    assert_eq!(names.len(), 1002, "a once, the a-... keys, notes_$folder$");
    assert_eq!(names.iter().filter(|n| *n == "a").count(), 1);
    assert!(names.contains(&"notes_$folder$".to_string()), "{:?}", &names[..3]);
    assert!(fs::metadata(t.join("a")).unwrap().is_dir(), "the directory wins");
    assert_eq!(fs::read(t.join("a/inside")).unwrap(), b"in");
    assert_eq!(fs::read(t.join("notes_$folder$")).unwrap(), b"not a marker");
    m.unmount();
}

#[test]
fn directory_of_2500_objects_lists_completely_over_three_pages() {
    let bucket = block_on(new_bucket("list"));
    put_many(&bucket, (0..2500).map(|i| format!("many/f{i:05}")), b"x");
    put_objects(&bucket, &[("many/sub/inner", b"i")]);
    for opts in [&[][..], &["listobjectsv1"][..]] {
        let m = Mount::mount(&bucket, opts);
        let names = names_in(&m.path().join("many"));
        assert_eq!(names.len(), 2501, "{opts:?}");
        assert_eq!(names[0], "f00000");
        assert_eq!(names[2499], "f02499");
        assert_eq!(names[2500], "sub");
        // `.` and `..` are there too, once each.
        let c_dir = CString::new(m.path().join("many").to_str().unwrap()).unwrap();
        // SAFETY: plain libc directory iteration on a valid path.
        let (dots, total) = unsafe {
            let d = libc::opendir(c_dir.as_ptr());
            assert!(!d.is_null());
            let (mut dots, mut total) = (0, 0);
            loop {
                let e = libc::readdir(d);
                if e.is_null() {
                    break;
                }
                let name = std::ffi::CStr::from_ptr((*e).d_name.as_ptr()).to_bytes();
                if name == b"." || name == b".." {
                    dots += 1;
                }
                total += 1;
            }
            libc::closedir(d);
            (dots, total)
        };
        assert_eq!((dots, total), (2, 2503));
        let sub = fs::metadata(m.path().join("many/sub")).unwrap();
        assert!(sub.is_dir());
        assert_eq!(fs::metadata(m.path().join("many/f01234")).unwrap().len(), 1);
        m.unmount();
    }
}

#[test]
fn objects_written_through_the_api_appear_after_the_ttl() {
    let bucket = block_on(new_bucket("ttl"));
    let m = Mount::mount(&bucket, &["stat_cache_expire=1"]);
    let p = m.path().join("later.txt");
    assert_eq!(errno_of(fs::metadata(&p)), libc::ENOENT);
    put_objects(&bucket, &[("later.txt", b"v1")]);
    wait_until("the object appears", Duration::from_secs(20), || p.exists());
    assert_eq!(fs::read(&p).unwrap(), b"v1");
    // A change of size shows up too once the attributes expire.
    put_objects(&bucket, &[("later.txt", b"version two")]);
    wait_until("the new size shows", Duration::from_secs(20), || {
        fs::metadata(&p).map(|m| m.len()).unwrap_or(0) == 11
    });
    assert_eq!(fs::read(&p).unwrap(), b"version two");
    // Listings are remembered for the TTL too; a name added through the API shows up in
    // readdir once it expires.
    let names = || names_in(m.path());
    assert_eq!(names(), ["later.txt"]);
    put_objects(&bucket, &[("also.txt", b"x")]);
    wait_until("the new name is listed", Duration::from_secs(20), || {
        names() == ["also.txt", "later.txt"]
    });
    // A program that probes names it does not find between listings (each miss lists the
    // directory again): the kernel's cached listing is not kept once it is older than what
    // the mount learned.
    put_objects(&bucket, &[("third.txt", b"x")]);
    let mut probe = 0;
    wait_until(
        "a probed directory lists the new name",
        Duration::from_secs(20),
        || {
            probe += 1;
            let missing = m.path().join(format!("probe-{probe}"));
            assert_eq!(errno_of(fs::metadata(missing)), libc::ENOENT);
            names() == ["also.txt", "later.txt", "third.txt"]
        },
    );
    m.unmount();
}

/// A directory that exists only because keys live under it (no marker object) stays when its
/// last entry is removed or moved away through the mount, as an empty local directory does;
/// a directory known only by its s3fs `name_$folder$` marker can be removed and renamed.
#[test]
fn implicit_and_legacy_directories_behave_like_local_ones() {
    let bucket = block_on(new_bucket("implicit"));
    put_objects(
        &bucket,
        &[
            ("data/2024/f.csv", b"1"),
            ("top/sub/x", b"2"),
            ("m/n/moved", b"3"),
            ("logs_$folder$", b""),
            ("old_$folder$", b""),
            ("old/inside", b"4"),
        ],
    );
    let m = Mount::mount(&bucket, &[]);
    let root = m.path();
    fs::remove_file(root.join("data/2024/f.csv")).unwrap();
    fs::remove_file(root.join("top/sub/x")).unwrap();
    fs::remove_dir(root.join("top/sub")).unwrap();
    fs::rename(root.join("m/n/moved"), root.join("moved")).unwrap();
    fs::remove_dir(root.join("logs")).unwrap();
    fs::rename(root.join("old"), root.join("new")).unwrap();
    let all = block_on(async { list_keys(&s3_client().await, &bucket, "").await });
    for k in ["data/2024/", "top/", "m/n/", "new/", "new/inside", "moved"] {
        assert!(all.iter().any(|x| x == k), "{k} missing from {all:?}");
    }
    for k in ["logs_$folder$", "old_$folder$", "old/inside"] {
        assert!(!all.iter().any(|x| x == k), "{k} left in {all:?}");
    }
    m.unmount();
    let m = Mount::mount(&bucket, &[]);
    let root = m.path();
    assert_eq!(names_in(root), vec!["data", "m", "moved", "new", "top"]);
    assert!(names_in(&root.join("data/2024")).is_empty());
    assert!(names_in(&root.join("top")).is_empty());
    assert!(names_in(&root.join("m/n")).is_empty());
    assert_eq!(fs::read(root.join("new/inside")).unwrap(), b"4");
    m.unmount();
}

#[test]
fn directories_made_by_other_tools_are_directories() {
    let bucket = block_on(new_bucket("foreign"));
    block_on(async {
        let c = s3_client().await;
        // s3fs style: `dir/` object with application/x-directory and mode metadata.
        c.put_object()
            .bucket(&bucket)
            .key("s3fsdir/")
            .content_type("application/x-directory")
            .metadata("mode", "16872")
            .metadata("uid", "1234")
            .metadata("gid", "4321")
            .body(ByteStream::from_static(b""))
            .send()
            .await
            .unwrap();
        // A directory object without the trailing slash, known only by its content type.
        c.put_object()
            .bucket(&bucket)
            .key("ctdir")
            .content_type("httpd/unix-directory")
            .body(ByteStream::from_static(b""))
            .send()
            .await
            .unwrap();
        // Console style marker with a body: still a directory.
        put_object(&c, &bucket, "bodydir/", b"oops".to_vec()).await;
        // Implicit directories only.
        put_object(&c, &bucket, "imp/a/b/leaf", b"leaf".to_vec()).await;
        // Legacy s3fs marker.
        put_object(&c, &bucket, "legacy_$folder$", Vec::new()).await;
        // A file and a directory of the same name: the directory wins.
        put_object(&c, &bucket, "clash", b"file".to_vec()).await;
        put_object(&c, &bucket, "clash/inside", b"in".to_vec()).await;
        // Keys no POSIX name can hold are skipped, not fatal.
        put_object(&c, &bucket, "bad//double", b"x".to_vec()).await;
        put_object(&c, &bucket, &format!("long/{}", "n".repeat(300)), b"x".to_vec()).await;
        put_object(&c, &bucket, "long/ok", b"x".to_vec()).await;
        put_object(&c, &bucket, "dots/./x", b"x".to_vec()).await;
        put_object(&c, &bucket, "dots/../y", b"x".to_vec()).await;
        put_object(&c, &bucket, "dots/fine", b"x".to_vec()).await;
        // s3sync and rclone metadata on a file.
        c.put_object()
            .bucket(&bucket)
            .key("synced")
            .metadata("permissions", "33261")
            .metadata("owner", "77")
            .metadata("mtime", "1700000000.5")
            .body(ByteStream::from_static(b"s"))
            .send()
            .await
            .unwrap();
    });
    let m = Mount::mount(&bucket, &[]);
    let root = m.path();
    assert_eq!(
        names_in(root),
        vec!["bad", "bodydir", "clash", "ctdir", "dots", "imp", "legacy", "long", "s3fsdir", "synced"]
    );
    for d in [
        "s3fsdir", "ctdir", "bodydir", "imp", "imp/a", "imp/a/b", "legacy", "clash",
    ] {
        assert!(
            fs::metadata(root.join(d)).unwrap().is_dir(),
            "{d} should be a directory"
        );
    }
    let s3fsdir = fs::metadata(root.join("s3fsdir")).unwrap();
    assert_eq!(
        (s3fsdir.mode() & 0o7777, s3fsdir.uid(), s3fsdir.gid()),
        (0o750, 1234, 4321)
    );
    assert_eq!(fs::read(root.join("imp/a/b/leaf")).unwrap(), b"leaf");
    assert_eq!(names_in(&root.join("clash")), vec!["inside"]);
    assert_eq!(names_in(&root.join("long")), vec!["ok"]);
    assert_eq!(names_in(&root.join("dots")), vec!["fine"]);
    assert!(names_in(&root.join("bad")).is_empty());
    let synced = fs::metadata(root.join("synced")).unwrap();
    assert_eq!((synced.mode() & 0o7777, synced.uid()), (0o755, 77));
    assert_eq!(
        (synced.mtime(), synced.mtime_nsec()),
        (1_700_000_000, 500_000_000)
    );
    // Implicit directories show the mount time, not 1970.
    assert!(fs::metadata(root.join("imp")).unwrap().mtime() > 1_700_000_000);
    // Defaults for objects without metadata: 0640 files, 0750 directories.
    assert_eq!(
        fs::metadata(root.join("imp/a/b/leaf")).unwrap().mode() & 0o7777,
        0o640
    );
    assert_eq!(fs::metadata(root.join("imp/a")).unwrap().mode() & 0o7777, 0o750);
    m.unmount();
}

#[test]
fn a_prefix_mount_works_before_the_prefix_exists() {
    let bucket = block_on(new_bucket("prefix"));
    block_on(async { put_object(&s3_client().await, &bucket, "outside.txt", b"o".to_vec()).await });
    let m = Mount::mount(&format!("{bucket}:/team/data"), &[]);
    assert!(names_in(m.path()).is_empty());
    fs::create_dir(m.path().join("sub")).unwrap();
    fs::write(m.path().join("sub/f"), b"inside").unwrap();
    let keys = block_on(async { list_keys(&s3_client().await, &bucket, "").await });
    assert_eq!(keys, vec!["outside.txt", "team/data/sub/", "team/data/sub/f"]);
    m.unmount();
}

#[test]
fn names_links_and_statfs() {
    let bucket = block_on(new_bucket("names"));
    let m = Mount::mount(&bucket, &[]);
    let long = "a".repeat(256);
    assert_eq!(
        errno_of(fs::write(m.path().join(&long), b"x")),
        libc::ENAMETOOLONG
    );
    assert_eq!(errno_of(fs::create_dir(m.path().join(&long))), libc::ENAMETOOLONG);
    assert_eq!(errno_of(fs::metadata(m.path().join(&long))), libc::ENAMETOOLONG);
    let ok = "b".repeat(255);
    fs::write(m.path().join(&ok), b"x").unwrap();
    assert_eq!(fs::read(m.path().join(&ok)).unwrap(), b"x");

    fs::write(m.path().join("src"), b"s").unwrap();
    assert_eq!(
        errno_of(fs::hard_link(m.path().join("src"), m.path().join("dst"))),
        libc::ENOTSUP
    );
    fs::create_dir(m.path().join("d")).unwrap();
    assert_eq!(
        errno_of(fs::hard_link(m.path().join("d"), m.path().join("d2"))),
        libc::EPERM
    );

    let c = CString::new(m.path().to_str().unwrap()).unwrap();
    // SAFETY: statvfs into a zeroed struct on a valid path.
    let st = unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        assert_eq!(libc::statvfs(c.as_ptr(), &mut st), 0);
        st
    };
    assert!(
        st.f_blocks as u128 * st.f_frsize as u128 >= 1u128 << 40,
        "capacity shown should be large"
    );
    assert_eq!(st.f_namemax, 255);
    m.unmount();
}

/// Bytes the daemon has read from sockets and files so far.
fn daemon_rchar(pid: i32) -> u64 {
    let io = fs::read_to_string(format!("/proc/{pid}/io")).expect("read /proc/PID/io");
    io.lines()
        .find_map(|l| l.strip_prefix("rchar: "))
        .and_then(|v| v.trim().parse().ok())
        .expect("rchar line")
}

#[test]
fn reading_4k_of_a_large_object_transfers_about_that() {
    let bucket = block_on(new_bucket("ranged"));
    let data = pattern(64 << 20, 3);
    block_on(async { put_object(&s3_client().await, &bucket, "large.bin", data.clone()).await });
    let m = Mount::mount(&bucket, &[]);
    let pid = *m.daemon_pids().first().expect("daemon pid");
    let mut f = fs::File::open(m.path().join("large.bin")).unwrap();
    let before = daemon_rchar(pid);
    f.seek(SeekFrom::Start(40 << 20)).unwrap();
    let mut buf = vec![0u8; 4096];
    f.read_exact(&mut buf).unwrap();
    let moved = daemon_rchar(pid) - before;
    assert_eq!(&buf[..], &data[40 << 20..(40 << 20) + 4096]);
    assert!(
        moved < 2 << 20,
        "reading 4 KiB moved {moved} bytes into the daemon"
    );
    drop(f);
    m.unmount();
}

/// The kernel read-ahead of the mount at `path`, from its backing device in sysfs.
fn read_ahead_kb(path: &Path) -> u32 {
    let dev = fs::metadata(path).unwrap().dev();
    let knob = format!(
        "/sys/class/bdi/{}:{}/read_ahead_kb",
        libc::major(dev),
        libc::minor(dev)
    );
    fs::read_to_string(&knob)
        .unwrap_or_else(|e| panic!("read {knob}: {e}"))
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn read_ahead_is_raised_for_sequential_readers_and_can_be_kept() {
    let bucket = block_on(new_bucket("readahead"));
    let m = Mount::mount(&bucket, &[]);
    assert_eq!(read_ahead_kb(m.path()), 1024, "the default read_ahead_kb");
    m.unmount();
    let m = Mount::mount(&bucket, &["read_ahead_kb=4096"]);
    assert_eq!(read_ahead_kb(m.path()), 4096);
    m.unmount();
    let m = Mount::mount(&bucket, &["read_ahead_kb=0"]);
    let kept = read_ahead_kb(m.path());
    assert!(
        kept <= 128,
        "read_ahead_kb=0 should keep the kernel's own (at most 128), got {kept}"
    );
    m.unmount();
}

#[test]
fn failed_upload_is_reported_by_fsync_and_close() {
    let bucket = block_on(new_bucket("fail"));
    let m = Mount::mount(&bucket, &["retries=2"]);
    let mut a = fs::File::create(m.path().join("a.bin")).unwrap();
    let b = fs::File::create(m.path().join("b.bin")).unwrap();
    a.write_all(&pattern(100_000, 4)).unwrap();
    let mut b = b;
    b.write_all(b"lost unless reported").unwrap();
    // The bucket disappears under the mount: every upload now fails with NoSuchBucket.
    block_on(async {
        s3_client()
            .await
            .delete_bucket()
            .bucket(&bucket)
            .send()
            .await
            .unwrap()
    });
    assert_eq!(
        errno_of(a.sync_all()),
        libc::EIO,
        "fsync must report the failed upload"
    );
    let fd = b.into_raw_fd();
    // SAFETY: fd is an open descriptor we own; close consumes it.
    let rc = unsafe { libc::close(fd) };
    let err = std::io::Error::last_os_error();
    assert_eq!(rc, -1, "close() must fail when the upload failed");
    assert_eq!(err.raw_os_error(), Some(libc::EIO));
    // A child that writes to a descriptor it inherited and closes it learns of the failure
    // too, whether or not the opener closed its copy first.
    let c = fs::File::create(m.path().join("c.bin")).unwrap().into_raw_fd();
    // SAFETY: the child only makes async-signal-safe calls (write, close, _exit).
    let child = unsafe { libc::fork() };
    assert!(child >= 0, "fork: {}", std::io::Error::last_os_error());
    if child == 0 {
        // SAFETY: c is open in the child; the buffer outlives the call.
        unsafe {
            let msg = b"from the child";
            let wrote = libc::write(c, msg.as_ptr().cast(), msg.len());
            let rc = libc::close(c);
            let code = if wrote != msg.len() as isize {
                2
            } else if rc == -1 && *libc::__errno_location() == libc::EIO {
                0
            } else {
                1
            };
            libc::_exit(code);
        }
    }
    // SAFETY: the parent's copy of c; its close may report the failed upload of the empty file.
    unsafe { libc::close(c) };
    let mut status = 0;
    // SAFETY: child is our child process.
    assert_eq!(unsafe { libc::waitpid(child, &mut status, 0) }, child);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "the child's close must fail with EIO (exit code {} means: 1 close succeeded, 2 write failed)",
        libc::WEXITSTATUS(status)
    );
    drop(a);
    drop(m);
}

#[test]
fn sigterm_flushes_open_files_and_exits_zero() {
    let bucket = block_on(new_bucket("sigterm"));
    let server = server();
    let scratch = tempfile::tempdir().unwrap();
    let mnt = tempfile::tempdir().unwrap();
    let passwd = write_passwd_file(scratch.path(), &server.access_key, &server.secret_key);
    let mut cmd = mount_command(&bucket, mnt.path(), &passwd, &[]);
    cmd.arg("-f").stderr(std::process::Stdio::null());
    let mut child = cmd.spawn().unwrap();
    let start = Instant::now();
    while !is_mounted(mnt.path()) {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "foreground mount never appeared"
        );
        assert!(child.try_wait().unwrap().is_none(), "rossfs -f exited early");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut f = fs::File::create(mnt.path().join("open.txt")).unwrap();
    f.write_all(b"written but not closed").unwrap();
    // SAFETY: sending a signal to our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    drop(f);
    assert!(!is_mounted(mnt.path()));
    let got = block_on(async { get_object(&s3_client().await, &bucket, "open.txt").await });
    assert_eq!(got, b"written but not closed");
}

#[test]
fn unmount_waits_for_nothing_and_data_is_durable() {
    let bucket = block_on(new_bucket("durable"));
    let m = Mount::mount(&bucket, &[]);
    for i in 0..20 {
        fs::write(m.path().join(format!("f{i}")), pattern(1000 + i, i as u64)).unwrap();
    }
    m.unmount();
    let keys = block_on(async { list_keys(&s3_client().await, &bucket, "").await });
    assert_eq!(keys.len(), 20);
    let m = Mount::mount(&bucket, &["ro"]);
    for i in 0..20 {
        assert_eq!(
            fs::read(m.path().join(format!("f{i}"))).unwrap(),
            pattern(1000 + i, i as u64)
        );
    }
    assert_eq!(errno_of(fs::write(m.path().join("new"), b"x")), libc::EROFS);
    assert_eq!(errno_of(fs::create_dir(m.path().join("newdir"))), libc::EROFS);
    assert_eq!(errno_of(fs::remove_file(m.path().join("f1"))), libc::EROFS);
    m.unmount();
}

/// Waits for the `n`-th "statistics:" line in the daemon's log and returns its inode count.
fn nth_stats_inodes(log: &Path, n: usize) -> usize {
    let start = Instant::now();
    loop {
        let text = fs::read_to_string(log).unwrap_or_default();
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("statistics: inodes="))
            .collect();
        if let Some(line) = lines.get(n - 1) {
            let v = line
                .split("inodes=")
                .nth(1)
                .and_then(|r| r.split(' ').next())
                .expect("inodes value");
            return v.parse().expect("inode count");
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no statistics line #{n} in {}",
            log.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn inodes_the_kernel_forgets_are_dropped() {
    let bucket = block_on(new_bucket("forget"));
    put_many(
        &bucket,
        (0..1500).map(|i| format!("walk/d{}/f{i:04}", i % 10)),
        b"w",
    );
    let logdir = tempfile::tempdir().unwrap();
    let log = logdir.path().join("rossfs.log");
    let m = Mount::mount(&bucket, &[&format!("logfile={}", log.display()), "dbglevel=info"]);
    let pid = *m.daemon_pids().first().expect("daemon pid");
    let mut seen = 0;
    for d in 0..10 {
        for e in fs::read_dir(m.path().join(format!("walk/d{d}"))).unwrap() {
            let meta = fs::metadata(e.unwrap().path()).unwrap();
            assert_eq!(meta.len(), 1);
            seen += 1;
        }
    }
    assert_eq!(seen, 1500);
    // SAFETY: signalling the daemon serving our mount.
    unsafe { libc::kill(pid, libc::SIGUSR1) };
    let held = nth_stats_inodes(&log, 1);
    assert!(held > 1500, "the walk should hold every inode, got {held}");
    // Make the kernel drop its dentries and inodes: it sends FORGET for each.
    fs::write("/proc/sys/vm/drop_caches", "2").expect("drop caches (tests run as root)");
    let start = Instant::now();
    let mut round = 2;
    loop {
        // SAFETY: as above.
        unsafe { libc::kill(pid, libc::SIGUSR1) };
        let now = nth_stats_inodes(&log, round);
        if now < 100 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "inodes still held after FORGET: {now}"
        );
        round += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    m.unmount();
}

#[test]
fn relative_mountpoint_and_option_paths_mean_the_callers_directory() {
    // The daemon leaves for `/` so it keeps no directory busy; relative paths must have been
    // resolved against the caller's directory first (they once mounted at /mnt instead).
    let bucket = block_on(new_bucket("relative"));
    let scratch = tempfile::TempDir::with_prefix("rossfs-relative-").unwrap();
    let dir = scratch.path();
    fs::create_dir(dir.join("mnt")).unwrap();
    let server = server();
    write_passwd_file(dir, &server.access_key, &server.secret_key);
    let mut cmd = mount_command(
        &bucket,
        Path::new("mnt"),
        Path::new("passwd"),
        &["logfile=daemon.log"],
    );
    cmd.current_dir(dir);
    let out = run_with_deadline(cmd, dir, Duration::from_secs(60));
    assert!(
        out.status.success(),
        "mount with relative paths failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mnt = dir.join("mnt");
    assert!(is_mounted(&mnt), "not mounted at the caller's ./mnt");
    fs::write(mnt.join("hello"), b"relative").unwrap();
    let client = block_on(s3_client());
    assert_eq!(block_on(get_object(&client, &bucket, "hello")), b"relative");
    assert!(
        dir.join("daemon.log").exists(),
        "logfile=daemon.log was not created in the caller's directory"
    );
    // The daemon's command line says `mnt`, as typed: find it by its bucket.
    let daemons = rossfs_processes_with_arg(std::ffi::OsStr::new(&bucket));
    assert!(!daemons.is_empty(), "no process serves bucket {bucket}");
    for pid in daemons {
        let cwd = fs::read_link(format!("/proc/{pid}/cwd")).unwrap();
        assert_eq!(
            cwd,
            Path::new("/"),
            "the daemon keeps the caller's directory busy"
        );
    }
    fusermount_u(&mnt);
    assert!(!is_mounted(&mnt));
}

/// A user other than root mounts through the setuid fusermount3, which gets the kernel flags
/// the user asked for (`noexec`, `noatime`), and a flag it would drop for such a user (`suid`)
/// fails the mount with the reason. /dev/fuse is made usable by other users for the test
/// (mode 0666, as most distributions ship it) when it is not.
#[test]
fn a_user_other_than_root_mounts_with_the_kernel_flags_asked_for() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    const NOBODY: u32 = 65534;
    struct DevMode(Option<u32>);
    impl Drop for DevMode {
        fn drop(&mut self) {
            if let Some(mode) = self.0 {
                let _ = fs::set_permissions("/dev/fuse", fs::Permissions::from_mode(mode));
            }
        }
    }
    let mode = fs::metadata("/dev/fuse").unwrap().permissions().mode() & 0o7777;
    let _restore = DevMode((mode & 0o006 != 0o006).then_some(mode));
    if mode & 0o006 != 0o006 {
        fs::set_permissions("/dev/fuse", fs::Permissions::from_mode(0o666)).unwrap();
    }
    let bucket = block_on(new_bucket("user-mount"));
    let server = server();
    let scratch = tempfile::TempDir::with_prefix("rossfs-user-").unwrap();
    fs::set_permissions(scratch.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let mnt = scratch.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    let passwd = write_passwd_file(scratch.path(), &server.access_key, &server.secret_key);
    for p in [&mnt, &passwd] {
        std::os::unix::fs::chown(p, Some(NOBODY), Some(NOBODY)).unwrap();
    }
    // Whatever happens below, no mount outlives the test.
    struct Detach<'a>(&'a Path);
    impl Drop for Detach<'_> {
        fn drop(&mut self) {
            if is_mounted(self.0) {
                let _ = std::process::Command::new("umount")
                    .arg("-l")
                    .arg(self.0)
                    .status();
            }
        }
    }
    let _detach = Detach(&mnt);
    let mount_as_nobody = |flags: &str| {
        let mut cmd = mount_command(&bucket, &mnt, &passwd, &[flags]);
        cmd.uid(NOBODY).gid(NOBODY).current_dir("/");
        run_with_deadline(cmd, scratch.path(), Duration::from_secs(60))
    };

    let out = mount_as_nobody("suid");
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    assert!(
        stderr_of(&out).contains("option 'suid' needs root"),
        "{}",
        stderr_of(&out)
    );
    assert!(!is_mounted(&mnt));

    let out = mount_as_nobody("noexec,noatime");
    assert!(
        out.status.success(),
        "mount as uid {NOBODY} failed: {}",
        stderr_of(&out)
    );
    assert!(is_mounted(&mnt));
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let line = info
        .lines()
        .find(|l| l.split(' ').nth(4) == Some(mnt.to_str().unwrap()))
        .expect("the mount in mountinfo");
    let flags: Vec<&str> = line.split(' ').nth(5).unwrap().split(',').collect();
    for want in ["noexec", "noatime", "nosuid", "nodev"] {
        assert!(flags.contains(&want), "no {want} in the mount's flags: {line}");
    }
    assert!(line.contains(" fuse.rossfs "), "{line}");
    fusermount_u(&mnt);
}

/// Times this mount moved forward and the bucket does not hold survive the attribute cache:
/// the mtime of a file uploaded while it was written (its object's Last-Modified is when the
/// upload started, seconds before the last write) and that of a directory whose entries
/// changed (its marker is not rewritten for that). Neither goes back when the attributes are
/// read from the bucket again. An atime set on its own is stored in the bucket.
#[test]
fn times_this_mount_moved_forward_survive_the_attribute_cache() {
    use std::os::unix::fs::MetadataExt;
    let bucket = block_on(new_bucket("times"));
    let m = Mount::mount(&bucket, &["stat_cache_expire=1", "multipart_size=5"]);
    let mtime = |p: &Path| {
        let md = fs::metadata(p).unwrap();
        (md.mtime(), md.mtime_nsec())
    };
    // Streamed: 12 MiB in 2 MiB writes over more than a second (the upload starts at 10 MiB).
    let big = m.path().join("big");
    let mut f = fs::File::create(&big).unwrap();
    for _ in 0..6 {
        f.write_all(&[7u8; 2 << 20]).unwrap();
        std::thread::sleep(Duration::from_millis(300));
    }
    drop(f);
    let file_mtime = mtime(&big);
    // A directory made, then an entry added more than a second later.
    let dir = m.path().join("d");
    fs::create_dir(&dir).unwrap();
    let made = mtime(&dir);
    std::thread::sleep(Duration::from_millis(1100));
    fs::write(dir.join("f"), b"x").unwrap();
    let dir_mtime = mtime(&dir);
    assert!(
        dir_mtime > made,
        "creating d/f did not move d's mtime: {made:?} -> {dir_mtime:?}"
    );
    // An atime set on its own (`touch -a -d 2001-01-01`) is stored.
    let small = m.path().join("small");
    fs::write(&small, b"s").unwrap();
    let probe2 = m.path().join("probe2");
    fs::write(&probe2, b"p").unwrap();
    let probe2_mtime = mtime(&probe2);
    let small_mtime = mtime(&small);
    let path = CString::new(small.as_os_str().as_encoded_bytes()).unwrap();
    let times = [
        libc::timespec {
            tv_sec: 978_307_200,
            tv_nsec: 5,
        },
        libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
    ];
    // SAFETY: a valid path and two timespecs.
    assert_eq!(
        unsafe { libc::utimensat(libc::AT_FDCWD, path.as_ptr(), times.as_ptr(), 0) },
        0
    );
    // Wait until attributes read earlier have expired: a change made through the API to an
    // object listed after the two above shows.
    let probe = m.path().join("probe");
    put_objects(&bucket, &[("probe", b"1")]);
    wait_until("the probe appears", Duration::from_secs(20), || probe.exists());
    put_objects(&bucket, &[("probe", b"22")]);
    wait_until("the probe's new size shows", Duration::from_secs(20), || {
        fs::metadata(&probe).map(|md| md.len()).unwrap_or(0) == 2
    });
    assert_eq!(mtime(&big), file_mtime, "the streamed file's mtime went back");
    assert_eq!(mtime(&dir), dir_mtime, "the directory's mtime went back");
    let md = fs::metadata(&small).unwrap();
    assert_eq!(
        (md.atime(), md.atime_nsec()),
        (978_307_200, 5),
        "the atime set was not kept"
    );
    assert_eq!(mtime(&small), small_mtime);
    assert_eq!(mtime(&probe2), probe2_mtime);
    // Another client sets earlier times (a metadata copy keeps the ETag of the marker and of
    // a single-part file): they show once the attributes expire.
    let client = block_on(s3_client());
    for (key, ty) in [("d/", "application/x-directory"), ("probe2", "text/plain")] {
        block_on(
            client
                .copy_object()
                .bucket(&bucket)
                .key(key)
                .copy_source(format!("{bucket}/{key}"))
                .metadata_directive(aws_sdk_s3::types::MetadataDirective::Replace)
                .content_type(ty)
                .metadata("mtime", "1000000000.000000000")
                .send(),
        )
        .unwrap();
    }
    wait_until(
        "another client's earlier time shows on d",
        Duration::from_secs(20),
        || mtime(&dir) == (1_000_000_000, 0),
    );
    wait_until(
        "another client's earlier time shows on probe2",
        Duration::from_secs(20),
        || mtime(&probe2) == (1_000_000_000, 0),
    );
    m.unmount();
    // Stored in the bucket: a new mount shows it.
    let m = Mount::mount(&bucket, &[]);
    let md = fs::metadata(m.path().join("small")).unwrap();
    assert_eq!(
        (md.atime(), md.atime_nsec()),
        (978_307_200, 5),
        "the atime set was not stored"
    );
}

/// Another client replaces a file (an S3 PUT replaces an object whole) while this mount has it
/// open: a read of the open descriptor never returns bytes of the new version after those of
/// the old one (every ranged GET asks for the version opened, `If-Match`). It fails with EIO,
/// and a new open reads the new version at once, not after the attribute cache expires. A
/// write to a file replaced since this mount last saw it fails too, instead of uploading the
/// other client's version cut to the length this mount knew.
#[test]
fn a_file_replaced_by_another_client_while_open_is_never_read_as_a_mix() {
    let bucket = block_on(new_bucket("replaced"));
    const SIZE: usize = 64 << 20;
    put_objects(
        &bucket,
        &[("big", &vec![b'A'; SIZE]), ("gone", &vec![b'G'; 1 << 20])],
    );
    let m = Mount::mount(&bucket, &[]);
    let p = m.path().join("big");
    let mut f = fs::File::open(&p).unwrap();
    let mut head_bytes = vec![0u8; 64 << 10];
    f.read_exact(&mut head_bytes).unwrap();
    assert!(head_bytes.iter().all(|&b| b == b'A'));
    put_objects(&bucket, &[("big", &vec![b'B'; SIZE])]);
    f.seek(SeekFrom::Start(48 << 20)).unwrap();
    let mut later = vec![0u8; 1 << 20];
    match f.read(&mut later) {
        Err(e) => assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}"),
        Ok(n) => panic!("read {n} bytes of {:?} after bytes of 'A'", char::from(later[0])),
    }
    drop(f);
    let fresh = fs::read(&p).unwrap();
    assert_eq!(fresh.len(), SIZE);
    assert!(
        fresh.iter().all(|&b| b == b'B'),
        "a new open reads the new version"
    );

    // This mount knows version B; another client stores a longer C; an append here fails.
    const LONGER: usize = 80 << 20;
    put_objects(&bucket, &[("big", &vec![b'C'; LONGER])]);
    let mut w = fs::OpenOptions::new().append(true).open(&p).unwrap();
    let wrote = w.write_all(b"x").and_then(|()| w.sync_all());
    assert_eq!(
        wrote.map_err(|e| e.raw_os_error()),
        Err(Some(libc::EIO)),
        "an append to a replaced file"
    );
    drop(w);
    let stored = block_on(head(&bucket, "big"));
    assert_eq!(
        stored.content_length(),
        Some(LONGER as i64),
        "the other client's version stays"
    );

    // Deleted by another client while open here: a read or a write of the descriptor fails
    // with EIO (ENOENT means nothing to read(2) or write(2)).
    let g = m.path().join("gone");
    let mut r = fs::File::open(&g).unwrap();
    let mut w = fs::OpenOptions::new().write(true).open(&g).unwrap();
    block_on(async {
        let c = s3_client().await;
        c.delete_object()
            .bucket(&bucket)
            .key("gone")
            .send()
            .await
            .unwrap();
    });
    let mut buf = vec![0u8; 4096];
    assert_eq!(
        r.read(&mut buf).map_err(|e| e.raw_os_error()),
        Err(Some(libc::EIO)),
        "a read of a deleted object"
    );
    assert_eq!(
        w.write_all(b"x").map_err(|e| e.raw_os_error()),
        Err(Some(libc::EIO)),
        "a write to a deleted object"
    );
    drop((r, w));

    // Open here, replaced there: removing the name still works (the descriptor cannot keep a
    // version the bucket no longer holds).
    assert_eq!(fs::metadata(&p).unwrap().len(), LONGER as u64);
    let open = fs::File::open(&p).unwrap();
    put_objects(&bucket, &[("big", b"D".as_slice())]);
    fs::remove_file(&p).expect("unlink of an open file another client replaced");
    drop(open);
    assert!(!p.exists());
    m.unmount();
}

/// A file another client replaced, then renamed here (the file, or its directory): the rename
/// moves the other client's version, and a descriptor that read the old one fails its next
/// read instead of going on with the new one's bytes. A file renamed over here after another
/// client replaced it keeps, for its open descriptor, what this mount knew of it: not the
/// attributes or the content of the file now at its old name.
#[test]
fn a_replaced_file_renamed_here_is_never_read_as_a_mix() {
    let bucket = block_on(new_bucket("replaced-mv"));
    const SIZE: usize = 32 << 20;
    put_objects(
        &bucket,
        &[
            ("D/big", &vec![b'A'; SIZE]),
            ("f", &vec![b'A'; SIZE]),
            ("R/b", b"bbbbbbbb".as_slice()),
            ("R/a", b"aa".as_slice()),
        ],
    );
    let m = Mount::mount(&bucket, &[]);
    let read_after = |f: &mut fs::File| {
        f.seek(SeekFrom::Start(24 << 20)).unwrap();
        let mut later = vec![0u8; 1 << 20];
        match f.read(&mut later) {
            Err(e) => e.raw_os_error(),
            Ok(n) => panic!("read {n} bytes of {:?} after bytes of 'A'", char::from(later[0])),
        }
    };
    for (from, to) in [("D", "E"), ("f", "g")] {
        let (from, to) = (m.path().join(from), m.path().join(to));
        let file = |dir: &Path| {
            if dir.ends_with("D") || dir.ends_with("E") {
                dir.join("big")
            } else {
                dir.to_path_buf()
            }
        };
        let mut f = fs::File::open(file(&from)).unwrap();
        let mut head_bytes = vec![0u8; 64 << 10];
        f.read_exact(&mut head_bytes).unwrap();
        let key = file(&from)
            .strip_prefix(m.path())
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        put_objects(&bucket, &[(key.as_str(), &vec![b'B'; SIZE])]);
        fs::rename(&from, &to).unwrap();
        assert_eq!(read_after(&mut f), Some(libc::EIO), "{key} renamed");
        drop(f);
        assert!(fs::read(file(&to)).unwrap().iter().all(|&b| b == b'B'));
    }

    // Renamed over while open, after another client replaced it.
    let (a, b) = (m.path().join("R/a"), m.path().join("R/b"));
    assert_eq!(fs::metadata(&b).unwrap().len(), 8);
    let mut open_b = fs::File::open(&b).unwrap();
    put_objects(&bucket, &[("R/b", b"BBBBBBBBBBBB".as_slice())]);
    fs::rename(&a, &b).expect("rename over a file another client replaced");
    assert_eq!(
        open_b.metadata().unwrap().len(),
        8,
        "fstat of the renamed-over file"
    );
    let mut got = Vec::new();
    let read = open_b.read_to_end(&mut got);
    assert!(
        read.is_err() || got.is_empty(),
        "read {got:?} through the renamed-over file"
    );
    drop(open_b);
    assert_eq!(fs::read(&b).unwrap(), b"aa");
    m.unmount();
}
