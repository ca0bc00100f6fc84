//! Credentials and observability on a real mount: rotated keys picked up without a remount,
//! secrets never in logs or metrics, the Prometheus endpoint, traffic attributed to the calling
//! process, incomplete multipart uploads listed and aborted.

mod common;

use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use std::thread;
use std::time::{Duration, Instant};

use common::*;

/// Runs the harness's Garage CLI and returns its stdout.
fn garage(args: &[&str]) -> String {
    let mut cmd = server()
        .garage_cli()
        .expect("these tests manage keys on the local Garage");
    let out = cmd.args(args).output().expect("run garage");
    assert!(
        out.status.success(),
        "garage {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Gives `bucket` (created through S3, so only aliased for the default key) a global alias,
/// so other keys can address it by name.
fn make_global(bucket: &str) {
    let list = garage(&["bucket", "list"]);
    let id = list
        .lines()
        .find(|l| l.split_whitespace().any(|w| w.ends_with(&format!(":{bucket}"))))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("bucket {bucket} not in:\n{list}"))
        .to_string();
    garage(&["bucket", "alias", &id, bucket]);
}

/// Creates a key allowed to read and write `bucket`; returns (id, secret).
fn new_key(name: &str, bucket: &str) -> (String, String) {
    let out = garage(&["key", "create", &format!("{name}-{}", std::process::id())]);
    let field = |label: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(label))
            .map(|v| v.trim().to_string())
            .unwrap_or_else(|| panic!("no {label} in garage output:\n{out}"))
    };
    let (id, secret) = (field("Key ID:"), field("Secret key:"));
    garage(&[
        "bucket", "allow", "--read", "--write", "--owner", bucket, "--key", &id,
    ]);
    (id, secret)
}

fn write_keys(path: &Path, id: &str, secret: &str) {
    // Written beside and renamed over, as a secret rotation tool would.
    let tmp = path.with_extension("new");
    fs::write(&tmp, format!("{id}:{secret}\n")).unwrap();
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o600)).unwrap();
    fs::rename(&tmp, path).unwrap();
}

#[test]
fn rotated_passwd_file_keys_are_used_without_a_remount() {
    if !server().is_local_garage() {
        eprintln!("skipped: needs the local Garage to create and revoke keys");
        return;
    }
    let bucket = block_on(new_bucket("rotate"));
    make_global(&bucket);
    let (old_id, old_secret) = new_key("rotate-old", &bucket);
    let dir = tempfile::tempdir().unwrap();
    let passwd = dir.path().join("passwd");
    write_keys(&passwd, &old_id, &old_secret);
    let m = Mount::mount(&bucket, &[&format!("passwd_file={}", passwd.display())]);
    fs::write(m.path().join("before"), b"with the old key").unwrap();

    // A long-lived writer keeps its file open across the rotation.
    let mut open = fs::File::create(m.path().join("across")).unwrap();
    open.write_all(b"part one;").unwrap();

    let (new_id, new_secret) = new_key("rotate-new", &bucket);
    write_keys(&passwd, &new_id, &new_secret);
    fs::write(m.path().join("after"), b"with the new key").unwrap();
    // The old key is revoked: everything must go on working with the new one.
    garage(&["key", "delete", "--yes", &old_id]);
    fs::write(m.path().join("revoked"), b"old key gone").unwrap();
    open.write_all(b"part two").unwrap();
    open.sync_all().expect("fsync after the rotation");
    drop(open);
    assert_eq!(fs::read(m.path().join("before")).unwrap(), b"with the old key");
    let keys = block_on(async { list_keys(&s3_client().await, &bucket, "").await });
    assert_eq!(keys, vec!["across", "after", "before", "revoked"]);
    let across = block_on(async { get_object(&s3_client().await, &bucket, "across").await });
    assert_eq!(across, b"part one;part two");
    m.unmount();
}

/// A passwd file that becomes unusable (here: malformed) keeps the mount on its last good
/// keys, with one warning for that version of the file, not one per request.
#[test]
fn a_broken_passwd_file_keeps_the_last_keys_with_one_warning() {
    let server = server();
    let bucket = block_on(new_bucket("badpasswd"));
    let dir = tempfile::tempdir().unwrap();
    let passwd = dir.path().join("passwd");
    write_keys(&passwd, &server.access_key, &server.secret_key);
    let log = dir.path().join("rossfs.log");
    let m = Mount::mount(
        &bucket,
        &[
            &format!("passwd_file={}", passwd.display()),
            &format!("logfile={}", log.display()),
        ],
    );
    fs::write(&passwd, "no colon on this line\n").unwrap();
    for i in 0..5 {
        fs::write(m.path().join(format!("f{i}")), b"still writing").unwrap();
    }
    let keys = block_on(async { list_keys(&s3_client().await, &bucket, "").await });
    assert_eq!(keys, vec!["f0", "f1", "f2", "f3", "f4"]);
    m.unmount();
    let text = fs::read_to_string(&log).unwrap();
    let warnings = text.matches("keeping the previous keys").count();
    assert_eq!(
        warnings, 1,
        "one warning for the broken file, got {warnings}:\n{text}"
    );
}

/// Waits until `mnt` is mounted by the foreground `child`.
fn wait_mounted(child: &mut std::process::Child, mnt: &Path, why: &str) {
    let start = Instant::now();
    while !is_mounted(mnt) {
        assert!(child.try_wait().unwrap().is_none(), "rossfs -f exited: {why}");
        assert!(start.elapsed() < Duration::from_secs(30), "mount never appeared");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// SIGTERM to a foreground mount; it must flush, unmount and exit 0.
fn stop(mut child: std::process::Child) {
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

/// `rossfs BUCKET MNT -f` with no passwd_file and no AWS keys in the environment, only `env`.
fn mount_with_env_credentials(
    bucket: &str,
    mnt: &Path,
    env: &[(&str, &std::ffi::OsStr)],
    why: &str,
) -> std::process::Child {
    let server = server();
    let mut cmd = Command::new(rossfs_bin());
    cmd.arg(bucket)
        .arg(mnt)
        .arg("-o")
        .arg(format!(
            "url={},use_path_request_style,region={}",
            server.endpoint, server.region
        ))
        .arg("-f")
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_PROFILE")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
        .env("AWS_CONFIG_FILE", "/nonexistent")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .stderr(std::process::Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    wait_mounted(&mut child, mnt, why);
    child
}

#[test]
fn metrics_endpoint_counts_operations_and_names_the_calling_process() {
    let bucket = block_on(new_bucket("metrics"));
    block_on(async {
        let c = s3_client().await;
        for i in 0..30 {
            put_object(&c, &bucket, &format!("crawl/f{i:02}"), b"x".to_vec()).await;
        }
    });
    let port = free_port();
    let m = Mount::mount(&bucket, &[&format!("metrics_addr=127.0.0.1:{port}")]);
    fs::write(m.path().join("written"), vec![7u8; 100_000]).unwrap();
    // A crawler: `ls -l` stats every entry, causing HEAD requests on its behalf.
    let out = Command::new("ls")
        .arg("-l")
        .arg(m.path().join("crawl"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = scrape(port);
    // Attributes come with the listing (READDIRPLUS), not from a lookup per entry.
    assert!(metric(&text, "rossfs_fuse_op_seconds_count{op=\"readdirplus\"}") >= 1.0);
    assert!(metric(&text, "rossfs_s3_request_seconds_count{op=\"PutObject\"}") >= 1.0);
    assert!(metric(&text, "rossfs_s3_request_seconds_count{op=\"HeadObject\"}") >= 30.0);
    assert!(metric(&text, "rossfs_s3_bytes_out_total") >= 100_000.0);
    assert!(
        metric(&text, "rossfs_caller_s3_requests_total{comm=\"ls\"}") >= 30.0,
        "ls caused the crawl"
    );
    assert!(text.contains("rossfs_s3_request_seconds_bucket{op=\"HeadObject\",le=\"+Inf\"}"));
    assert!(text.contains("rossfs_dirty_bytes "));
    assert!(!text.contains(&server().secret_key) && !text.contains(&server().access_key));
    // A warm second crawl is served from the caches.
    Command::new("ls")
        .arg("-l")
        .arg(m.path().join("crawl"))
        .output()
        .unwrap();
    let warm = scrape(port);
    assert!(
        metric(&warm, "rossfs_stat_cache_hits_total")
            + metric(&warm, "rossfs_fuse_op_seconds_count{op=\"getattr\"}")
            > 0.0
    );
    m.unmount();
}

#[test]
fn secrets_never_reach_logs_even_at_trace_level() {
    let bucket = block_on(new_bucket("secrets"));
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("trace.log");
    // Everything at trace level, the SDK's own logging included, in a foreground mount.
    let server = server();
    let mnt = tempfile::tempdir().unwrap();
    let passwd = write_passwd_file(dir.path(), &server.access_key, &server.secret_key);
    let mut cmd = mount_command(
        &bucket,
        mnt.path(),
        &passwd,
        &[&format!("logfile={}", log.display()), "dbglevel=trace"],
    );
    cmd.arg("-f")
        .env("ROSSFS_LOG", "trace")
        .stderr(std::process::Stdio::null());
    let mut child = cmd.spawn().unwrap();
    wait_mounted(&mut child, mnt.path(), "trace-level mount");
    fs::write(mnt.path().join("f"), b"data").unwrap();
    assert_eq!(fs::read(mnt.path().join("f")).unwrap(), b"data");
    let _ = fs::metadata(mnt.path().join("missing"));
    stop(child);
    let text = fs::read_to_string(&log).unwrap();
    assert!(text.len() > 1000, "trace logging produced little output:\n{text}");
    assert!(
        !text.contains(&server.secret_key),
        "the secret key appears in the trace log"
    );

    // A key given as an option is refused without being echoed.
    let out = try_mount(&bucket, &["secret_key=NOTREALLYASECRET0123456789"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("passwd_file") && !err.contains("NOTREALLYASECRET"),
        "{err}"
    );
}

#[test]
fn incomplete_multipart_uploads_are_listed_and_aborted() {
    let bucket = block_on(new_bucket("uploads"));
    let upload_id = block_on(async {
        let c = s3_client().await;
        let up = c
            .create_multipart_upload()
            .bucket(&bucket)
            .key("abandoned.bin")
            .send()
            .await
            .unwrap();
        up.upload_id().unwrap().to_string()
    });
    let server = server();
    let dir = tempfile::tempdir().unwrap();
    let passwd = write_passwd_file(dir.path(), &server.access_key, &server.secret_key);
    let run = |extra: &[&str]| {
        let out = Command::new(rossfs_bin())
            .arg(&bucket)
            .args(extra)
            .arg("-o")
            .arg(base_options(&passwd))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let listed = run(&["--list-uploads"]);
    assert!(
        listed.contains("pending  abandoned.bin") && listed.contains(&upload_id),
        "{listed}"
    );
    let kept = run(&["--abort-uploads", "1d"]);
    assert!(kept.contains("0 aborted"), "too young to abort: {kept}");
    let aborted = run(&["--abort-uploads", "0"]);
    assert!(aborted.contains("aborted  abandoned.bin"), "{aborted}");
    let start = Instant::now();
    loop {
        let left = block_on(async {
            let c = s3_client().await;
            c.list_multipart_uploads()
                .bucket(&bucket)
                .send()
                .await
                .unwrap()
                .uploads()
                .len()
        });
        if left == 0 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "upload still listed after abort"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn tls_trust_options_are_checked_before_mounting() {
    let bucket = block_on(new_bucket("tls"));
    let dir = tempfile::tempdir().unwrap();
    let not_pem = dir.path().join("not.pem");
    fs::write(&not_pem, b"hello").unwrap();
    let out = try_mount(&bucket, &[&format!("ca_bundle={}", not_pem.display())]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("holds no PEM certificate"),
        "{out:?}"
    );
    let out = try_mount(&bucket, &["ca_bundle=/nonexistent/ca.pem"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot read ca_bundle"),
        "{out:?}"
    );
    let out = try_mount(&bucket, &["no_check_certificate"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("ca_bundle=PATH"),
        "{out:?}"
    );
    // A readable bundle is accepted (the system one; the test server speaks plain HTTP).
    let system = Path::new("/etc/ssl/certs/ca-certificates.crt");
    if system.exists() {
        let m = Mount::mount(&bucket, &[&format!("ca_bundle={}", system.display())]);
        fs::write(m.path().join("ok"), b"ok").unwrap();
        m.unmount();
    }
}

#[test]
fn alibaba_oss_environment_variables_are_credentials() {
    let bucket = block_on(new_bucket("ossenv"));
    let server = server();
    let mnt = tempfile::tempdir().unwrap();
    let child = mount_with_env_credentials(
        &bucket,
        mnt.path(),
        &[
            ("OSS_ACCESS_KEY_ID", server.access_key.as_ref()),
            ("OSS_ACCESS_KEY_SECRET", server.secret_key.as_ref()),
        ],
        "the OSS keys were not used",
    );
    fs::write(mnt.path().join("oss"), b"via OSS_* keys").unwrap();
    stop(child);
    assert_eq!(
        block_on(async { get_object(&s3_client().await, &bucket, "oss").await }),
        b"via OSS_* keys"
    );
}

#[test]
fn lookups_in_a_directory_made_elsewhere_cost_one_listing_then_nothing() {
    let bucket = block_on(new_bucket("learned"));
    let client = block_on(s3_client());
    block_on(async {
        put_object(&client, &bucket, "old/", Vec::new()).await;
        put_object(&client, &bucket, "old/kept", b"x".to_vec()).await;
        for i in 0..1005 {
            put_object(&client, &bucket, &format!("big/k{i:04}"), Vec::new()).await;
        }
    });
    let port = free_port();
    let m = Mount::mount(&bucket, &[&format!("metrics_addr=127.0.0.1:{port}")]);
    let before = scrape(port);
    for i in 0..20 {
        fs::write(m.path().join(format!("old/new{i:02}")), b"n").unwrap();
    }
    assert_eq!(fs::read(m.path().join("old/kept")).unwrap(), b"x");
    let after = scrape(port);
    let delta = |op: &str| requests(&after, op) - requests(&before, op);
    assert_eq!(delta("PutObject"), 20.0);
    assert_eq!(
        delta("ListObjectsV2"),
        2.0,
        "one listing page of the root and one of old/ answer every lookup"
    );
    assert_eq!(
        delta("HeadObject"),
        2.0,
        "one HEAD for old/ and one for the file read"
    );
    // Within the TTL the listing is answered from memory, own creates included.
    let mut names: Vec<String> = fs::read_dir(m.path().join("old"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    let mut expected: Vec<String> = (0..20).map(|i| format!("new{i:02}")).collect();
    expected.push("kept".into());
    expected.sort();
    assert_eq!(names, expected);
    let listed = scrape(port);
    assert_eq!(
        requests(&listed, "ListObjectsV2"),
        requests(&after, "ListObjectsV2")
    );
    // A directory larger than one page: each miss is a single request.
    for i in 0..5 {
        assert_eq!(
            errno_of(fs::metadata(m.path().join(format!("big/missing{i}")))),
            libc::ENOENT
        );
    }
    let missed = scrape(port);
    let delta = |op: &str| requests(&missed, op) - requests(&listed, op);
    assert_eq!(
        delta("ListObjectsV2"),
        6.0,
        "first page once, then one LIST per miss"
    );
    assert_eq!(
        delta("HeadObject"),
        1.0,
        "only big/'s marker, none for the misses"
    );
    assert_eq!(fs::metadata(m.path().join("big/k1004")).unwrap().len(), 0);
    m.unmount();
}

#[test]
fn find_over_a_tree_made_elsewhere_lists_it_flat_not_per_directory() {
    let bucket = block_on(new_bucket("walk"));
    let mut expected = vec!["t".to_string()];
    block_on(async {
        let c = s3_client().await;
        // Two explicit directories with a stored mode; every other one is implicit.
        for marker in ["t/a1/", "t/a1/b2/"] {
            c.put_object()
                .bucket(&bucket)
                .key(marker)
                .metadata("mode", (0o040700u32).to_string())
                .body(aws_sdk_s3::primitives::ByteStream::from_static(b""))
                .send()
                .await
                .unwrap();
        }
        for a in 0..5 {
            expected.push(format!("t/a{a}"));
            for b in 0..5 {
                expected.push(format!("t/a{a}/b{b}"));
                for f in 0..3 {
                    let key = format!("t/a{a}/b{b}/f{f}");
                    put_object(&c, &bucket, &key, b"leaf".to_vec()).await;
                    expected.push(key);
                }
            }
        }
    });
    expected.sort();
    let port = free_port();
    let m = Mount::mount(&bucket, &[&format!("metrics_addr=127.0.0.1:{port}")]);
    let before = scrape(port);
    let out = Command::new("find")
        .arg("t")
        .current_dir(m.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let after = scrape(port);
    let mut found: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    found.sort();
    assert_eq!(found, expected);
    let delta = |op: &str| requests(&after, op) - requests(&before, op);
    // Listed one directory at a time this is 1 + 31 LISTs and a HEAD per directory. The walk
    // lists the root, t and t/a0 itself; the flat listing of t answers for the rest, except
    // where the walker got there before it (it runs alongside).
    assert!(
        delta("ListObjectsV2") <= 12.0,
        "{} LISTs for a walk of 31 directories",
        delta("ListObjectsV2")
    );
    assert!(
        delta("HeadObject") <= 12.0,
        "{} HEADs for 31 directories, 2 of them with a marker",
        delta("HeadObject")
    );
    // What the markers store still shows; the implicit directories show the defaults.
    for dir in ["t/a1", "t/a1/b2"] {
        assert_eq!(
            fs::metadata(m.path().join(dir)).unwrap().mode() & 0o7777,
            0o700,
            "{dir}"
        );
    }
    let implicit = fs::metadata(m.path().join("t")).unwrap().mode();
    assert_ne!(implicit & 0o7777, 0o700);
    assert_eq!(fs::metadata(m.path().join("t/a2/b2")).unwrap().mode(), implicit);
    // Own changes keep listings right (the walk's knowledge is not used once the mount
    // changed anything).
    fs::write(m.path().join("t/a3/b3/new"), b"n").unwrap();
    fs::remove_file(m.path().join("t/a3/b3/f0")).unwrap();
    let mut names: Vec<String> = fs::read_dir(m.path().join("t/a3/b3"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["f1", "f2", "new"]);
    m.unmount();
}

/// Kernel requests of type `op` served so far, from a scrape.
fn fuse_ops(text: &str, op: &str) -> f64 {
    op_count(text, "rossfs_fuse_op_seconds", op)
}

#[test]
fn ls_l_gets_attributes_with_the_listing_and_ls_does_not_stat() {
    const ENTRIES: u32 = 2400;
    let bucket = block_on(new_bucket("rdplus"));
    block_on(async {
        let c = s3_client().await;
        for i in 0..ENTRIES {
            let mut put = c.put_object().bucket(&bucket).key(format!("many/f{i:04}"));
            if i.is_multiple_of(10) {
                put = put
                    .metadata("mode", "33152")
                    .metadata("uid", "1234")
                    .metadata("gid", "4321");
            }
            put.body(aws_sdk_s3::primitives::ByteStream::from_static(b"abc"))
                .send()
                .await
                .unwrap();
        }
        for i in 0..1000 {
            put_object(&c, &bucket, &format!("names/n{i:04}"), Vec::new()).await;
        }
    });
    let port = free_port();
    let m = Mount::mount(&bucket, &[&format!("metrics_addr=127.0.0.1:{port}")]);
    fs::metadata(m.path().join("many")).unwrap();
    fs::metadata(m.path().join("names")).unwrap();
    let before = scrape(port);
    let out = Command::new("ls")
        .arg("-ln")
        .arg(m.path().join("many"))
        .env("LC_ALL", "C")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let after = scrape(port);
    let listing = String::from_utf8(out.stdout).unwrap();
    let mut seen = 0;
    for line in listing.lines().filter(|l| !l.starts_with("total")) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let name = fields[fields.len() - 1];
        let i: u32 = name[1..].parse().unwrap();
        let shown = (fields[0], fields[2], fields[3], fields[4]);
        if i.is_multiple_of(10) {
            assert_eq!(shown, ("-rw-------", "1234", "4321", "3"), "{line}");
        } else {
            assert_ne!(shown.0, "-rw-------", "{line}");
            assert_eq!(shown.3, "3", "{line}");
        }
        seen += 1;
    }
    assert_eq!(seen, ENTRIES);
    // The first entries are looked up (the kernel learns from those lookups that the caller
    // stats); the rest arrive with their attributes.
    let delta = |op: &str| fuse_ops(&after, op) - fuse_ops(&before, op);
    assert!(
        delta("lookup") < f64::from(ENTRIES) / 2.0,
        "{} lookups for {ENTRIES} entries",
        delta("lookup")
    );
    assert!(delta("readdirplus") >= 2.0);
    let heads = requests(&after, "HeadObject") - requests(&before, "HeadObject");
    assert_eq!(heads, f64::from(ENTRIES), "one HEAD per entry, for its metadata");

    // Entries sent with the listing hold kernel references like looked-up ones: they stay
    // usable, and removing one works.
    let last = m.path().join(format!("many/f{:04}", ENTRIES - 1));
    fs::remove_file(&last).unwrap();
    assert_eq!(errno_of(fs::metadata(&last)), libc::ENOENT);
    let next_to_last = m.path().join(format!("many/f{:04}", ENTRIES - 2));
    assert_eq!(fs::read(next_to_last).unwrap(), b"abc");

    // Listing by name only (`ls` to a pipe) does not fetch every entry's metadata.
    let out = Command::new("ls").arg(m.path().join("names")).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 1000);
    let named = scrape(port);
    let heads = requests(&named, "HeadObject") - requests(&after, "HeadObject");
    assert_eq!(heads, 0.0, "HEAD requests for a listing by name");
    m.unmount();
}

/// A sequential reader slower than the network (here: one that waits for the mount to go
/// quiet after each read) holds a bounded read-ahead out of the shared `max_memory=` budget,
/// `parallel_count=` chunks ahead of it (and the one it reads, and what it keeps just behind),
/// not the whole budget, which other readers need too. The metrics show what is held.
#[test]
fn a_slow_sequential_reader_holds_a_bounded_share_of_the_read_ahead_budget() {
    const MIB: usize = 1 << 20;
    let bucket = block_on(new_bucket("slow-reader"));
    put_objects(&bucket, &[("big", &vec![b'r'; 128 * MIB])]);
    let port = free_port();
    let m = Mount::mount(
        &bucket,
        &[
            &format!("metrics_addr=127.0.0.1:{port}"),
            "max_memory=96",
            "parallel_count=2",
        ],
    );
    let held = || metric(&scrape(port), "rossfs_read_ahead_bytes") as usize;
    let mut f = fs::File::open(m.path().join("big")).unwrap();
    let mut buf = vec![0u8; MIB];
    let mut most = 0;
    for _ in 0..48 {
        std::io::Read::read_exact(&mut f, &mut buf).unwrap();
        // Until what is held stops changing: the fetches this read started have landed.
        let start = Instant::now();
        let mut last = held();
        loop {
            thread::sleep(Duration::from_millis(20));
            let now = held();
            if now == last || start.elapsed() > Duration::from_secs(5) {
                break;
            }
            last = now;
        }
        most = most.max(last);
    }
    assert!(buf.iter().all(|&b| b == b'r'));
    // Two chunks of 8 MiB ahead, the one being read, up to 4 MiB kept behind; and some slack.
    assert!(
        most <= 36 * MIB,
        "a slow reader held {} MiB of read-ahead",
        most / MIB
    );
    assert!(most >= 8 * MIB, "no read-ahead at all ({most} bytes)");
    drop(f);
    let start = Instant::now();
    while held() != 0 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "read-ahead held after close"
        );
        thread::sleep(Duration::from_millis(20));
    }
    m.unmount();
}

#[test]
fn creating_files_in_a_new_directory_costs_one_put_each() {
    let bucket = block_on(new_bucket("creates"));
    let port = free_port();
    let m = Mount::mount(&bucket, &[&format!("metrics_addr=127.0.0.1:{port}")]);
    fs::create_dir(m.path().join("new")).unwrap();
    let before = scrape(port);
    let count = requests;
    for i in 0..50 {
        fs::write(m.path().join(format!("new/f{i}")), b"small").unwrap();
    }
    let after = scrape(port);
    assert_eq!(count(&after, "PutObject") - count(&before, "PutObject"), 50.0);
    assert_eq!(
        count(&after, "HeadObject") - count(&before, "HeadObject"),
        0.0,
        "no HEAD for new names"
    );
    assert_eq!(
        count(&after, "ListObjectsV2") - count(&before, "ListObjectsV2"),
        0.0,
        "no LIST for new names"
    );
    assert_eq!(fs::read_dir(m.path().join("new")).unwrap().count(), 50);
    m.unmount();
}

/// New keys in `~/.aws/credentials` are used without a remount; while the file is being
/// rewritten (or holds a typo) the keys held go on working.
#[test]
fn rotated_shared_credentials_file_is_used_without_a_remount() {
    if !server().is_local_garage() {
        eprintln!("skipped: needs the local Garage to create and revoke keys");
        return;
    }
    let bucket = block_on(new_bucket("awsfile"));
    make_global(&bucket);
    let (old_id, old_secret) = new_key("awsfile-old", &bucket);
    let dir = tempfile::tempdir().unwrap();
    let creds = dir.path().join("credentials");
    let write = |id: &str, secret: &str| {
        let tmp = dir.path().join("credentials.new");
        fs::write(
            &tmp,
            format!("[default]\naws_access_key_id = {id}\naws_secret_access_key = {secret}\n"),
        )
        .unwrap();
        fs::rename(&tmp, &creds).unwrap();
    };
    write(&old_id, &old_secret);
    let mnt = tempfile::tempdir().unwrap();
    let no_config = dir.path().join("no-config");
    let child = mount_with_env_credentials(
        &bucket,
        mnt.path(),
        &[
            ("AWS_SHARED_CREDENTIALS_FILE", creds.as_os_str()),
            ("AWS_CONFIG_FILE", no_config.as_os_str()),
        ],
        "the profile keys were not used",
    );
    fs::write(mnt.path().join("one"), b"old key").unwrap();
    // Rewritten in place, and caught half-way: the keys held go on working.
    fs::write(&creds, "[default]\naws_access_key_id = \n").unwrap();
    fs::write(mnt.path().join("between"), b"old key still")
        .expect("a write while the credentials file is broken");
    let (new_id, new_secret) = new_key("awsfile-new", &bucket);
    write(&new_id, &new_secret);
    garage(&["key", "delete", "--yes", &old_id]);
    fs::write(mnt.path().join("two"), b"new key").unwrap();
    stop(child);
    let keys = block_on(async { list_keys(&s3_client().await, &bucket, "").await });
    assert_eq!(keys, vec!["between", "one", "two"]);
}

/// `socat` terminating TLS on a free loopback port with a certificate for `localhost` from a
/// fresh private CA, forwarding to the plain-HTTP test server. Killed on drop.
struct TlsFront {
    child: std::process::Child,
    port: u16,
    /// The CA that signed the server's certificate.
    ca: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl TlsFront {
    fn start(upstream: &str) -> TlsFront {
        let dir = tempfile::tempdir().unwrap();
        let p = |name: &str| dir.path().join(name);
        let openssl = |args: &[&str]| {
            let out = Command::new("openssl")
                .current_dir(dir.path())
                .args(args)
                .output()
                .expect("run openssl (scripts/test.sh installs it)");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        // A private CA, and a server certificate for localhost that it signs.
        let subj_ca = ["-subj", "/CN=rossfs test CA"];
        openssl(
            &[
                &["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"][..],
                &subj_ca,
                &["-keyout", "ca.key", "-out", "ca.pem"],
            ]
            .concat(),
        );
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            "key.pem",
            "-out",
            "leaf.csr",
        ]);
        fs::write(
            p("leaf.ext"),
            "basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n",
        )
        .unwrap();
        openssl(&[
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            "leaf.ext",
            "-out",
            "cert.pem",
        ]);
        let (cert, key) = (p("cert.pem"), p("key.pem"));
        let port = free_port();
        let child = Command::new("socat")
            .arg(format!(
                "OPENSSL-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork,verify=0,cert={},key={}",
                cert.display(),
                key.display()
            ))
            .arg(format!("TCP:{upstream}"))
            .spawn()
            .expect("run socat (scripts/test.sh installs it)");
        let front = TlsFront {
            child,
            port,
            ca: p("ca.pem"),
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "socat did not listen on {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        front
    }
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn https_endpoint_signed_by_a_private_ca_carries_every_request_kind() {
    let Some(upstream) = server().endpoint.strip_prefix("http://").map(str::to_string) else {
        eprintln!("skipped: the test server is not plain HTTP");
        return;
    };
    let bucket = block_on(new_bucket("https"));
    let front = TlsFront::start(&upstream);
    let url = format!("url=https://localhost:{}", front.port);

    // The CA is not one the system trusts: the mount is refused, saying why and what to do.
    let out = try_mount(&bucket, &[&url]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("certificate") && err.contains("ca_bundle="), "{err}");

    let port = free_port();
    let m = Mount::mount(
        &bucket,
        &[
            &url,
            &format!("ca_bundle={}", front.ca.display()),
            &format!("metrics_addr=127.0.0.1:{port}"),
        ],
    );
    let small = pattern(3000, 1);
    let large = pattern(23 * 1024 * 1024 + 17, 2);
    fs::create_dir(m.path().join("d")).unwrap();
    fs::write(m.path().join("d/small"), &small).unwrap();
    fs::write(m.path().join("d/large"), &large).unwrap();
    fs::set_permissions(m.path().join("d/small"), fs::Permissions::from_mode(0o604)).unwrap();
    let text = scrape(port);
    assert!(
        requests(&text, "PutObject") >= 1.0,
        "no PutObject over TLS:\n{text}"
    );
    assert!(
        requests(&text, "UploadPart") >= 3.0,
        "not 3 UploadParts over TLS:\n{text}"
    );
    assert!(
        requests(&text, "CopyObject") >= 1.0,
        "chmod sent no CopyObject over TLS:\n{text}"
    );
    m.unmount();

    // A fresh mount reads everything back through TLS: listing, HEADs, ranged GETs.
    let m = Mount::mount(
        &bucket,
        &[
            &url,
            &format!("ca_bundle={}", front.ca.display()),
            &format!("metrics_addr=127.0.0.1:{port}"),
        ],
    );
    let ls = Command::new("ls")
        .arg("-ln")
        .arg(m.path().join("d"))
        .output()
        .unwrap();
    let ls = String::from_utf8_lossy(&ls.stdout);
    assert!(
        ls.lines()
            .any(|l| l.starts_with("-rw----r--") && l.ends_with(" small")),
        "{ls}"
    );
    assert_eq!(fs::read(m.path().join("d/small")).unwrap(), small);
    assert!(
        fs::read(m.path().join("d/large")).unwrap() == large,
        "large file differs"
    );
    fs::remove_file(m.path().join("d/small")).unwrap();
    let text = scrape(port);
    for op in ["ListObjectsV2", "HeadObject", "GetObject", "DeleteObject"] {
        assert!(requests(&text, op) >= 1.0, "no {op} over TLS:\n{text}");
    }
    m.unmount();

    // The same through the SDK alone (`sdk_requests`), which has its own TLS setup.
    let m = Mount::mount(
        &bucket,
        &[&url, &format!("ca_bundle={}", front.ca.display()), "sdk_requests"],
    );
    assert!(
        fs::read(m.path().join("d/large")).unwrap() == large,
        "large file differs (SDK)"
    );
    fs::write(m.path().join("d/sdk"), &small).unwrap();
    assert_eq!(
        fs::metadata(m.path().join("d/sdk")).unwrap().len(),
        small.len() as u64
    );
    fs::set_permissions(m.path().join("d/sdk"), fs::Permissions::from_mode(0o600)).unwrap();
    m.unmount();
    let m = Mount::mount(&bucket, &[&url, &format!("ca_bundle={}", front.ca.display())]);
    assert_eq!(
        fs::metadata(m.path().join("d/sdk")).unwrap().mode() & 0o7777,
        0o600,
        "chmod through the SDK was stored"
    );
    m.unmount();
    assert_eq!(
        block_on(get_object(&block_on(s3_client()), &bucket, "d/sdk")),
        small
    );

    // The bucket holds what was written, as written.
    let client = block_on(s3_client());
    assert_eq!(block_on(get_object(&client, &bucket, "d/large")), large);
    let keys = block_on(list_keys(&client, &bucket, "d/"));
    assert!(
        keys.contains(&"d/large".to_string()) && !keys.contains(&"d/small".to_string()),
        "{keys:?}"
    );
}
