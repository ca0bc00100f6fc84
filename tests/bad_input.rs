//! Bad input, table-driven: malformed and conflicting options, endpoints that are not URLs or
//! cannot be reached, bucket names S3 rejects, unusable passwd files and mountpoints. Each must
//! end in one line `rossfs: ...` naming the cause and the fix and a non-zero exit, never a
//! panic, never a secret. Object keys no POSIX name can hold must be skipped in listings with one
//! warning each. Both tests print their table in Markdown (the README's troubleshooting section).

mod common;

use std::ffi::{CStr, CString};
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

use std::time::{Duration, Instant};

use common::*;

/// How a case runs the mount command.
enum Run {
    /// `try_mount(bucket_spec, opts)` (a fresh mountpoint, the harness's passwd file).
    Opts(String, Vec<String>),
    /// `mount_command` with this mountpoint and passwd file.
    Custom {
        spec: String,
        mountpoint: PathBuf,
        passwd: PathBuf,
        opts: Vec<String>,
    },
}

struct Case {
    /// The input, as the README shows it.
    input: String,
    run: Run,
    /// Substrings the message must contain (cause and fix).
    expect: Vec<&'static str>,
}

fn opts_case(input: &str, bucket: &str, opts: &[&str], expect: &[&'static str]) -> Case {
    Case {
        input: input.to_string(),
        run: Run::Opts(bucket.to_string(), opts.iter().map(|s| s.to_string()).collect()),
        expect: expect.to_vec(),
    }
}

/// Runs a mount command bounded in time; detaches any mount it made.
fn run_custom(spec: &str, mountpoint: &Path, passwd: &Path, opts: &[String]) -> Output {
    let refs: Vec<&str> = opts.iter().map(String::as_str).collect();
    let mut cmd = mount_command(spec, mountpoint, passwd, &refs);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = cmd.spawn().expect("run rossfs");
    let out = child.wait_with_output().expect("wait for rossfs");
    if out.status.success() && is_mounted(mountpoint) {
        let _ = std::process::Command::new("fusermount3")
            .arg("-u")
            .arg("-z")
            .arg(mountpoint)
            .status();
    }
    out
}

fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn write_mode(path: &Path, text: &str, mode: u32) -> PathBuf {
    fs::write(path, text).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    path.to_path_buf()
}

#[test]
fn bad_input_gives_one_clear_line_and_a_nonzero_exit() {
    let bucket = block_on(new_bucket("bad-input"));
    let server = server();
    let scratch = tempfile::tempdir().unwrap();
    let s = scratch.path();
    let good_passwd = write_passwd_file(s, &server.access_key, &server.secret_key);
    let empty_mnt = s.join("mnt");
    fs::create_dir(&empty_mnt).unwrap();
    let b = bucket.as_str();

    let mut cases: Vec<Case> = Vec::new();
    // Every option with a malformed value.
    for (opt, expect) in [
        ("url=", &["url", "needs a value"][..]),
        ("region=", &["region", "needs a value"]),
        (
            "use_path_request_style=yes",
            &["use_path_request_style", "takes no value"],
        ),
        ("passwd_file=", &["passwd_file", "needs a value"]),
        ("ro=1", &["'ro'", "takes no value"]),
        ("allow_other=yes", &["allow_other", "takes no value"]),
        ("uid=abc", &["uid=abc", "whole number"]),
        ("gid=-1", &["gid=-1", "whole number"]),
        ("umask=999", &["umask=999", "octal"]),
        ("mp_umask=abc", &["mp_umask=abc", "octal"]),
        ("file_mode=99999", &["file_mode=99999", "octal"]),
        ("dir_mode=0x755", &["dir_mode=0x755", "octal"]),
        (
            "max_stat_cache_size=many",
            &["max_stat_cache_size=many", "whole number"],
        ),
        (
            "stat_cache_expire=soon",
            &["stat_cache_expire=soon", "whole number"],
        ),
        (
            "disable_noobj_cache=1",
            &["disable_noobj_cache", "takes no value"],
        ),
        ("listobjectsv1=yes", &["listobjectsv1", "takes no value"]),
        ("cache_dir=", &["cache_dir", "needs a value"]),
        (
            "cache_dir=/nonexistent/rossfs-cache",
            &["cache_dir", "/nonexistent/rossfs-cache"],
        ),
        (
            "dbglevel=loud",
            &["dbglevel=loud", "err, warn, info, debug, trace"],
        ),
        (
            "logfile=/nonexistent/dir/rossfs.log",
            &["logfile", "/nonexistent/dir/rossfs.log"],
        ),
        ("multipart_size=4", &["multipart_size=4", "5 to 5120"]),
        ("multipart_size=big", &["multipart_size=big", "whole number"]),
        ("parallel_count=0", &["parallel_count=0", "1 to 64"]),
        (
            "max_dirty_memory=lots",
            &["max_dirty_memory=lots", "whole number"],
        ),
        ("retries=0", &["retries=0", "retries=1"]),
        ("retries=-3", &["retries=-3", "whole number"]),
        ("connect_timeout=0", &["connect_timeout=0", "1 or more"]),
        ("mount_timeout=0", &["mount_timeout=0", "1 or more"]),
        (
            "readwrite_timeout=forever",
            &["readwrite_timeout=forever", "whole number"],
        ),
        ("fuse_threads=0", &["fuse_threads=0", "1 to 64"]),
        ("io_threads=0", &["io_threads=0", "1 to 256"]),
        ("hardlink_errno=eio", &["hardlink_errno=eio", "enotsup or eperm"]),
        ("storage_class=cheap", &["storage_class=cheap", "STANDARD"]),
        ("use_sse=aes", &["use_sse=aes", "kmsid:"]),
        ("use_sse=custom", &["use_sse=custom", "no SSE-C", "kmsid:"]),
        ("endpoint=eu-west-1", &["endpoint=eu-west-1", "region=eu-west-1"]),
        ("sse_kms_key_id=", &["sse_kms_key_id", "needs a value"]),
        ("mime=/nonexistent/mime.types", &["/nonexistent/mime.types"]),
        ("ca_bundle=/nonexistent/ca.pem", &["/nonexistent/ca.pem"]),
        (
            "default_permissions=0",
            &["default_permissions", "takes no value"],
        ),
        ("nosuid=1", &["nosuid", "takes no value"]),
        ("no_such_option", &["unknown option 'no_such_option'", "--help"]),
    ] {
        cases.push(opts_case(&format!("-o {opt}"), b, &[opt], expect));
    }
    // Conflicting options.
    cases.push(opts_case(
        "-o use_sse=kmsid:key-a,sse_kms_key_id=key-b",
        b,
        &["use_sse=kmsid:key-a", "sse_kms_key_id=key-b"],
        &["key-a", "key-b"],
    ));
    cases.push(opts_case(
        "-o use_sse,use_sse=kmsid:key-a (SSE-S3 and SSE-KMS)",
        b,
        &["use_sse", "use_sse=kmsid:key-a"],
        &["use_sse"],
    ));
    // Endpoints that are not URLs, or cannot be reached.
    for (url, expect) in [
        ("not-a-url", &["url=not-a-url", "http://"][..]),
        ("ftp://example.com", &["ftp://example.com", "http://"]),
        ("http://", &["is not an http:// or https:// URL"]),
        ("s3.amazonaws.com", &["s3.amazonaws.com", "https://"]),
    ] {
        cases.push(opts_case(
            &format!("-o url={url}"),
            b,
            &[&format!("url={url}")],
            expect,
        ));
    }
    let port = closed_port();
    cases.push(opts_case(
        "-o url=http://127.0.0.1:PORT (nothing listens)",
        b,
        &[&format!("url=http://127.0.0.1:{port}")],
        &["cannot reach", "refused", "check url="],
    ));
    cases.push(opts_case(
        "-o url=http://no-such-host.invalid:9000",
        b,
        &["url=http://no-such-host.invalid:9000", "connect_timeout=2"],
        &["no-such-host.invalid", "url="],
    ));
    // Bucket names.
    for (spec, expect) in [
        (
            "Bad_Bucket",
            &["Bad_Bucket", "not a valid bucket name", "lowercase"][..],
        ),
        ("ab", &["'ab'", "3-63"]),
        ("bucket-", &["bucket-", "not a valid bucket name"]),
        (&*"b".repeat(64), &["not a valid bucket name"]),
        (":/prefix", &["names no bucket"]),
        ("bucket:/a/../b", &["'..'", "BUCKET:/dir/subdir"]),
        ("bucket_with_underscore", &["bucket_with_underscore"]),
        ("no-such-bucket-rossfs", &["NoSuchBucket", "create it"]),
    ] {
        cases.push(opts_case(&format!("bucket `{spec}`"), spec, &[], expect));
    }
    // passwd files.
    let missing = s.join("no-such-passwd");
    let empty = write_mode(&s.join("empty"), "", 0o600);
    let malformed = write_mode(&s.join("malformed"), "just-one-field\n", 0o600);
    let too_many = write_mode(&s.join("too-many"), "a:b:c:d\n", 0o600);
    let line = format!("{}:{}\n", server.access_key, server.secret_key);
    let group = write_mode(&s.join("group-readable"), &line, 0o640);
    let world = write_mode(&s.join("world-readable"), &line, 0o604);
    let other_bucket = write_mode(
        &s.join("other-bucket"),
        &format!("some-other-bucket:{}:{}\n", server.access_key, server.secret_key),
        0o600,
    );
    let dir_passwd = s.join("passwd-dir");
    fs::create_dir(&dir_passwd).unwrap();
    for (label, path, expect) in [
        (
            "passwd_file missing",
            &missing,
            &["cannot read passwd_file", "no-such-passwd"][..],
        ),
        ("passwd_file empty", &empty, &["passwd_file", "ACCESS_KEY:SECRET"]),
        (
            "passwd_file malformed (one field)",
            &malformed,
            &["line 1", "malformed", "ACCESS_KEY:SECRET"],
        ),
        (
            "passwd_file malformed (four fields)",
            &too_many,
            &["line 1", "malformed"],
        ),
        (
            "passwd_file mode 0640",
            &group,
            &["readable by group or others", "chmod 600"],
        ),
        (
            "passwd_file mode 0604",
            &world,
            &["readable by group or others", "chmod 600"],
        ),
        (
            "passwd_file only for another bucket",
            &other_bucket,
            &["no line for bucket", "ACCESS_KEY:SECRET"],
        ),
        (
            "passwd_file is a directory",
            &dir_passwd,
            &["passwd_file", "passwd-dir", "directory"],
        ),
    ] {
        cases.push(Case {
            input: label.to_string(),
            run: Run::Custom {
                spec: bucket.clone(),
                mountpoint: empty_mnt.clone(),
                passwd: path.clone(),
                opts: Vec::new(),
            },
            expect: expect.to_vec(),
        });
    }
    // Mountpoints.
    let file_mnt = s.join("a-file");
    fs::write(&file_mnt, b"x").unwrap();
    let live = Mount::mount(&bucket, &[]);
    let dead = Mount::mount(&bucket, &[]);
    for pid in dead.daemon_pids() {
        // SAFETY: killing the daemon of a mount we made, to leave a dead mount behind.
        unsafe { libc::kill(*pid, libc::SIGKILL) };
    }
    let start = Instant::now();
    while fs::read_dir(dead.path()).is_ok() && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let hung = Mount::mount(&bucket, &[]);
    let signal_hung = |sig| {
        for pid in hung.daemon_pids() {
            // SAFETY: stopping (and resuming) the daemon of a mount we made: it hangs meanwhile.
            unsafe { libc::kill(*pid, sig) };
        }
    };
    signal_hung(libc::SIGSTOP);
    cases.push(Case {
        input: "mountpoint is a mount that hangs (its daemon stopped), mount_timeout=2".into(),
        run: Run::Custom {
            spec: bucket.clone(),
            mountpoint: hung.path().to_path_buf(),
            passwd: good_passwd.clone(),
            opts: vec!["mount_timeout=2".into()],
        },
        expect: vec!["does not answer within 2 s", "umount -l"],
    });
    for (label, mnt, expect) in [
        (
            "mountpoint missing",
            s.join("no-such-dir"),
            &["does not exist", "mkdir -p"][..],
        ),
        ("mountpoint is a file", file_mnt.clone(), &["not a directory"]),
        (
            "mountpoint already mounted",
            live.path().to_path_buf(),
            &["already mounted", "umount"],
        ),
        (
            "mountpoint is a dead mount (daemon killed)",
            dead.path().to_path_buf(),
            &["umount"],
        ),
    ] {
        cases.push(Case {
            input: label.to_string(),
            run: Run::Custom {
                spec: bucket.clone(),
                mountpoint: mnt,
                passwd: good_passwd.clone(),
                opts: Vec::new(),
            },
            expect: expect.to_vec(),
        });
    }

    let mut table = vec![
        "| input | exit | message |".to_string(),
        "|---|---|---|".to_string(),
    ];
    let mut failures = Vec::new();
    for case in &cases {
        let out = match &case.run {
            Run::Opts(spec, opts) => {
                let refs: Vec<&str> = opts.iter().map(String::as_str).collect();
                try_mount(spec, &refs)
            }
            Run::Custom {
                spec,
                mountpoint,
                passwd,
                opts,
            } => run_custom(spec, mountpoint, passwd, opts),
        };
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        let code = out.status.code();
        let shown = stderr
            .replace(&bucket, "BUCKET")
            .replace(&server.endpoint, "http://ENDPOINT")
            .replace(&port.to_string(), "PORT")
            .replace(&s.display().to_string(), "DIR")
            .replace('|', "\\|");
        table.push(format!(
            "| {} | {} | {} |",
            case.input.replace('|', "\\|"),
            code.map_or("signal".into(), |c| c.to_string()),
            shown.replace('\n', "<br>")
        ));
        let mut problems = Vec::new();
        if code == Some(0) || code.is_none() {
            problems.push(format!("exit status {:?}, expected non-zero", out.status));
        }
        if stderr.contains("panicked") {
            problems.push("panicked".into());
        }
        if stderr.contains(&server.secret_key) {
            problems.push("the secret key is in the message".into());
        }
        if !stderr.starts_with("rossfs: ") || stderr.lines().count() != 1 {
            problems.push("not one line starting with 'rossfs: '".into());
        }
        for e in &case.expect {
            if !stderr.contains(e) {
                problems.push(format!("message lacks {e:?}"));
            }
        }
        if !problems.is_empty() {
            failures.push(format!(
                "{}: {} -- stderr: {stderr}",
                case.input,
                problems.join("; ")
            ));
        }
    }
    live.unmount();
    drop(dead);
    signal_hung(libc::SIGCONT);
    hung.unmount();
    eprintln!("\nBAD INPUT TABLE\n\n{}\n", table.join("\n"));
    assert!(
        failures.is_empty(),
        "{} of {} bad inputs were not handled as required:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

/// Directory entries as readdir(3) returns them, including `.` and `..`.
fn raw_entries(dir: &Path) -> std::io::Result<Vec<Vec<u8>>> {
    let c = CString::new(dir.as_os_str().as_bytes()).unwrap();
    // SAFETY: plain libc directory iteration over a valid path; the handle is closed below.
    unsafe {
        let d = libc::opendir(c.as_ptr());
        if d.is_null() {
            return Err(std::io::Error::last_os_error());
        }
        let mut out = Vec::new();
        loop {
            *libc::__errno_location() = 0;
            let e = libc::readdir(d);
            if e.is_null() {
                let err = *libc::__errno_location();
                libc::closedir(d);
                if err != 0 {
                    return Err(std::io::Error::from_raw_os_error(err));
                }
                return Ok(out);
            }
            out.push(CStr::from_ptr((*e).d_name.as_ptr()).to_bytes().to_vec());
        }
    }
}

#[test]
fn awkward_keys_are_skipped_with_one_warning_and_never_break_a_listing() {
    let bucket = block_on(new_bucket("awkward-keys"));
    let long = "n".repeat(300);
    let keys: Vec<(String, &str)> = vec![
        ("ok.txt".into(), "plain key"),
        ("a//b".into(), "`a//b` (empty segment)"),
        ("./x".into(), "`./x`"),
        ("../x".into(), "`../x`"),
        ("sub/./y".into(), "`sub/./y`"),
        (format!("seg/{long}"), "a 300-byte segment"),
        ("ctl/bell\u{7}name".into(), "control character (BEL)"),
        ("ctl/tab\tname".into(), "control character (TAB)"),
        ("ctl/new\nline".into(), "control character (LF)"),
        ("ctl/plain".into(), "plain key next to them"),
        ("dir/".into(), "`dir/` object with a body"),
        ("dir/inside".into(), "a file inside it"),
        ("same".into(), "file `same` ..."),
        ("same/child".into(), "... and directory `same/`"),
    ];
    block_on(async {
        let c = s3_client().await;
        for (k, _) in &keys {
            let body = if k == "dir/" {
                b"a body".to_vec()
            } else {
                b"data".to_vec()
            };
            put_object(&c, &bucket, k, body).await;
        }
    });
    let logdir = tempfile::tempdir().unwrap();
    let log = logdir.path().join("rossfs.log");
    let m = Mount::mount(&bucket, &[&format!("logfile={}", log.display())]);
    let p = m.path();
    let list = |rel: &str| -> Result<Vec<String>, String> {
        let mut names: Vec<String> = raw_entries(&p.join(rel))
            .map_err(|e| format!("readdir {rel:?}: {e}"))?
            .into_iter()
            .map(|n| String::from_utf8_lossy(&n).into_owned())
            .collect();
        names.sort();
        Ok(names)
    };
    let mut rows = vec![
        "| key in the bucket | in the mount |".to_string(),
        "|---|---|".to_string(),
    ];
    let mut failures = Vec::new();
    let mut check = |what: &str, ok: bool, outcome: String| {
        rows.push(format!(
            "| {what} | {} |",
            outcome.replace('|', "\\|").replace('\n', "\\n")
        ));
        if !ok {
            failures.push(format!("{what}: {outcome}"));
        }
    };
    // Listed twice: the second listing must not warn again.
    for round in 0..2 {
        let root = list("");
        let root_ok = root.as_ref().is_ok_and(|r| {
            r.iter().filter(|n| *n == ".").count() == 1
                && r.iter().filter(|n| *n == "..").count() == 1
                && r.contains(&"ok.txt".to_string())
                && r.contains(&"dir".to_string())
                && r.contains(&"same".to_string())
                && !r.iter().any(String::is_empty)
        });
        if round == 0 {
            check(
                "root listing (has `./x`, `../x`, `a//b`)",
                root_ok,
                format!("{root:?}"),
            );
        }
    }
    let a = list("a");
    check(
        "`a//b`",
        a.as_ref().is_ok_and(|v| v == &[".", ".."]),
        format!("`a` lists {a:?}"),
    );
    let sub = list("sub");
    check(
        "`sub/./y`",
        sub.as_ref().is_ok_and(|v| v == &[".", ".."]),
        format!("`sub` lists {sub:?}"),
    );
    let seg = list("seg");
    check(
        "300-byte segment",
        seg.as_ref().is_ok_and(|v| v == &[".", ".."]),
        format!("`seg` lists {seg:?}"),
    );
    let ctl = list("ctl");
    let ctl_ok = ctl.as_ref().is_ok_and(|v| v.contains(&"plain".to_string()));
    check(
        "control characters (BEL, TAB, LF)",
        ctl_ok,
        format!("`ctl` lists {ctl:?}"),
    );
    if let Ok(names) = &ctl {
        for n in names.iter().filter(|n| *n != "." && *n != ".." && *n != "plain") {
            let st = fs::metadata(p.join("ctl").join(n));
            check(
                &format!("control-character name {n:?} shown"),
                st.is_ok(),
                format!("stat: {:?}", st.map(|m| m.len())),
            );
        }
    }
    let dir_meta = fs::metadata(p.join("dir"));
    let dir_list = list("dir");
    check(
        "`dir/` with a body",
        dir_meta.as_ref().is_ok_and(|m| m.is_dir())
            && dir_list.as_ref().is_ok_and(|v| v.contains(&"inside".to_string())),
        format!("is_dir {:?}, lists {dir_list:?}", dir_meta.map(|m| m.is_dir())),
    );
    let same_meta = fs::metadata(p.join("same"));
    let same_list = list("same");
    check(
        "file `same` and directory `same/`",
        same_meta.as_ref().is_ok_and(|m| m.is_dir())
            && same_list.as_ref().is_ok_and(|v| v.contains(&"child".to_string())),
        format!("is_dir {:?}, lists {same_list:?}", same_meta.map(|m| m.is_dir())),
    );
    // Listing again must not repeat warnings.
    for d in ["", "a", "sub", "seg", "ctl", "dir", "same"] {
        let _ = list(d);
    }
    drop(m);
    let text = fs::read_to_string(&log).unwrap_or_default();
    check("daemon log", !text.contains("panicked"), "no panic".into());
    let warnings: Vec<&str> = text.lines().filter(|l| l.contains("WARN")).collect();
    let long_key = format!("key=\"seg/{}", &long[..40]);
    for needle in [
        "key=\"a//\"",
        "key=\"./\"",
        "key=\"../\"",
        long_key.as_str(),
        "key=\"sub/./\"",
    ] {
        let n = warnings.iter().filter(|l| l.contains(needle)).count();
        check(
            &format!("warnings naming {needle:?}"),
            n == 1,
            format!("{n} warning(s)"),
        );
    }
    eprintln!(
        "\nAWKWARD KEYS TABLE\n\n{}\n\nwarnings:\n{}\n",
        rows.join("\n"),
        warnings.join("\n")
    );
    assert!(
        failures.is_empty(),
        "awkward keys mishandled:\n{}",
        failures.join("\n")
    );
}
