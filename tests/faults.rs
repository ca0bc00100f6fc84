//! Never lose data: rossfs behind a fault-injecting proxy (500, 503 SlowDown, resets, delays,
//! cut bodies, a server that goes away), plus `kill -9` and SIGTERM of the daemon.
//!
//! Every operation either succeeds (after retries) or its syscall returns an error; success is
//! never reported for data that is not stored, the bucket (read directly, not through the
//! proxy) only ever holds the old or the new content, abandoned multipart uploads are aborted,
//! a HEAD or LIST failure is never taken for "absent", and the same mount works again once the
//! fault heals. `fault_matrix` prints the fault x operation table at its end.

mod common;
mod fault_proxy;

use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::os::fd::IntoRawFd;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::process::Stdio;
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use aws_sdk_s3::primitives::ByteStream;
use common::*;
use fault_proxy::{Fault, FaultProxy, Match};

/// Options of every mount behind the proxy: few attempts, short timeouts, 5 MiB parts.
const FAULT_OPTS: [&str; 4] = [
    "retries=3",
    "connect_timeout=2",
    "readwrite_timeout=3",
    "multipart_size=5",
];
/// Longer than `readwrite_timeout=3`: one attempt times out.
const OVER_TIMEOUT: Duration = Duration::from_secs(4);
/// Size of the multipart-sized writes (three parts of 5, 5 and 2 MiB).
const LARGE: usize = 12 * 1024 * 1024 + 123;

fn errno_name(e: i32) -> String {
    let name = match e {
        libc::EIO => "EIO",
        libc::ENOENT => "ENOENT",
        libc::ETIMEDOUT => "ETIMEDOUT",
        libc::EAGAIN => "EAGAIN",
        libc::EACCES => "EACCES",
        libc::EEXIST => "EEXIST",
        libc::ENOTCONN => "ENOTCONN",
        libc::ECONNABORTED => "ECONNABORTED",
        libc::EBADF => "EBADF",
        libc::EINVAL => "EINVAL",
        libc::ENOSPC => "ENOSPC",
        libc::EPERM => "EPERM",
        _ => return format!("errno {e}"),
    };
    name.to_string()
}

/// What a syscall (or a short sequence of them) came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Ok,
    Err(i32),
}

impl Outcome {
    fn of<T>(r: std::io::Result<T>) -> Outcome {
        match r {
            Ok(_) => Outcome::Ok,
            Err(e) => Outcome::Err(e.raw_os_error().unwrap_or(-1)),
        }
    }

    fn of_ref<T>(r: &std::io::Result<T>) -> Outcome {
        match r {
            Ok(_) => Outcome::Ok,
            Err(e) => Outcome::Err(e.raw_os_error().unwrap_or(-1)),
        }
    }

    fn label(self) -> String {
        match self {
            Outcome::Ok => "ok".into(),
            Outcome::Err(e) => errno_name(e),
        }
    }
}

/// `close(2)` of a file, with its result (where a failed upload shows).
fn close_file(f: fs::File) -> Outcome {
    let fd = f.into_raw_fd();
    // SAFETY: fd is an open descriptor we own; close consumes it.
    if unsafe { libc::close(fd) } == 0 {
        Outcome::Ok
    } else {
        Outcome::Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(-1))
    }
}

/// The fault matrix, filled by every test of this file and printed by `fault_matrix`.
static MATRIX: Mutex<Vec<(String, String, String)>> = Mutex::new(Vec::new());

fn record(fault: &str, op: &str, outcome: &str) {
    eprintln!("fault matrix: {fault:<34} | {op:<16} | {outcome}");
    MATRIX.lock().unwrap_or_else(|p| p.into_inner()).push((
        fault.to_string(),
        op.to_string(),
        outcome.to_string(),
    ));
}

// ---------------------------------------------------------------------------------------------
// Bucket access that bypasses the proxy
// ---------------------------------------------------------------------------------------------

async fn put(bucket: &str, key: &str, body: Vec<u8>) {
    put_object(&s3_client().await, bucket, key, body).await
}

/// The object's content, or `None` if it does not exist.
async fn get_opt(bucket: &str, key: &str) -> Option<Vec<u8>> {
    let client = s3_client().await;
    match client.get_object().bucket(bucket).key(key).send().await {
        Ok(out) => Some(out.body.collect().await.expect("read body").into_bytes().to_vec()),
        Err(e) => {
            let text = aws_sdk_s3::error::DisplayErrorContext(&e).to_string();
            assert!(text.contains("NoSuchKey"), "GetObject {bucket}/{key}: {text}");
            None
        }
    }
}

async fn mode_metadata(bucket: &str, key: &str) -> Option<u32> {
    let client = s3_client().await;
    let h = client
        .head_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .unwrap_or_else(|e| panic!("HEAD {key}: {}", aws_sdk_s3::error::DisplayErrorContext(e)));
    h.metadata()
        .and_then(|m| m.get("mode"))
        .and_then(|v| v.parse::<u32>().ok())
}

async fn pending_uploads(bucket: &str) -> Vec<String> {
    let client = s3_client().await;
    let out = client
        .list_multipart_uploads()
        .bucket(bucket)
        .send()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "ListMultipartUploads: {}",
                aws_sdk_s3::error::DisplayErrorContext(e)
            )
        });
    out.uploads()
        .iter()
        .map(|u| u.key().unwrap_or("?").to_string())
        .collect()
}

/// Waits (polling) until no multipart upload is pending in `bucket`; returns what is left.
fn wait_no_uploads(bucket: &str, timeout: Duration) -> Vec<String> {
    let start = Instant::now();
    loop {
        let left = block_on(pending_uploads(bucket));
        if left.is_empty() || start.elapsed() > timeout {
            return left;
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// A mount of `bucket` whose S3 traffic goes through `proxy`.
fn mount_via(proxy: &FaultProxy, bucket: &str, extra: &[&str]) -> FMount {
    let dir = tempfile::TempDir::with_prefix("rossfs-faultlog-").expect("log dir");
    let log = dir.path().join("rossfs.log");
    let url = format!("url={}", proxy.url());
    let logfile = format!("logfile={}", log.display());
    let mut opts: Vec<&str> = vec![&url, &logfile];
    opts.extend(FAULT_OPTS);
    opts.extend(extra);
    FMount {
        m: Mount::mount(bucket, &opts),
        log,
        _dir: dir,
    }
}

/// A mount behind the proxy, with its log file.
struct FMount {
    m: Mount,
    log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl std::ops::Deref for FMount {
    type Target = Mount;
    fn deref(&self) -> &Mount {
        &self.m
    }
}

impl FMount {
    fn unmount(self) {
        self.m.unmount()
    }

    fn log_count(&self, needle: &str) -> usize {
        fs::read_to_string(&self.log)
            .unwrap_or_default()
            .matches(needle)
            .count()
    }

    /// Waits until the needles together occur more than `before` times in the log.
    fn wait_logs(&self, needles: &[&str], before: usize, timeout: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if needles.iter().map(|n| self.log_count(n)).sum::<usize>() > before {
                return true;
            }
            thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

fn log_tail(m: &FMount) -> String {
    let text = fs::read_to_string(&m.log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// What the daemon logs when the last handle of a file whose upload failed goes away.
const DISCARDED: &str = "discarding staged data";
/// What it logs when the retry at release stores the data after all.
const STORED_LATER: &str = "succeeded on a later attempt";

// ---------------------------------------------------------------------------------------------
// The matrix
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    /// Overwrite a small object (100 KiB), the fault active at close().
    WriteSmall,
    /// Overwrite with 12 MiB (multipart), the fault active at close().
    WriteLarge,
    /// fsync() under the fault, then close() after it healed.
    FsyncThenHeal,
    /// Read a 1 MiB object nobody looked at yet.
    Read,
    /// List a directory nobody listed yet.
    List,
    /// stat() of an existing object nobody looked at yet.
    Stat,
    /// chmod of a file (the metadata copy under the fault).
    Chmod,
}

const ALL_OPS: [Op; 7] = [
    Op::WriteSmall,
    Op::WriteLarge,
    Op::FsyncThenHeal,
    Op::Read,
    Op::List,
    Op::Stat,
    Op::Chmod,
];

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::WriteSmall => "write 100K",
            Op::WriteLarge => "write 12M (mpu)",
            Op::FsyncThenHeal => "fsync, heal",
            Op::Read => "read 1M",
            Op::List => "readdir",
            Op::Stat => "stat",
            Op::Chmod => "chmod",
        }
    }
}

/// What a row requires of an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// Must succeed (the fault is within the retry budget or does not concern it).
    Succeed,
    /// Must fail with an error (never report success).
    Fail,
    /// Either, as long as nothing is lost or wrong.
    Either,
}

/// How the fault is applied around an operation.
#[derive(Clone)]
enum Apply {
    None,
    Faults(Vec<Fault>),
    ServerDown,
}

struct Row {
    name: &'static str,
    apply: fn() -> Apply,
    ops: &'static [Op],
    expect: fn(Op) -> Expect,
}

fn rows() -> Vec<Row> {
    vec![
        Row {
            name: "none (baseline)",
            apply: || Apply::None,
            ops: &ALL_OPS,
            expect: |_| Expect::Succeed,
        },
        Row {
            name: "500 InternalError x2",
            apply: || Apply::Faults(vec![Fault::error500().times(2)]),
            ops: &ALL_OPS,
            expect: |_| Expect::Succeed,
        },
        Row {
            name: "503 SlowDown x2",
            apply: || Apply::Faults(vec![Fault::slow_down().times(2)]),
            ops: &ALL_OPS,
            expect: |_| Expect::Succeed,
        },
        Row {
            name: "503 SlowDown 50%",
            apply: || Apply::Faults(vec![Fault::slow_down().fraction(0.5)]),
            ops: &ALL_OPS,
            expect: |_| Expect::Either,
        },
        Row {
            name: "reset x1",
            apply: || Apply::Faults(vec![Fault::reset().times(1)]),
            ops: &ALL_OPS,
            expect: |_| Expect::Succeed,
        },
        Row {
            name: "500 InternalError always",
            apply: || Apply::Faults(vec![Fault::error500()]),
            ops: &ALL_OPS,
            expect: |_| Expect::Fail,
        },
        Row {
            name: "503 SlowDown always",
            apply: || Apply::Faults(vec![Fault::slow_down()]),
            ops: &ALL_OPS,
            expect: |_| Expect::Fail,
        },
        Row {
            name: "reset always",
            apply: || Apply::Faults(vec![Fault::reset()]),
            ops: &ALL_OPS,
            expect: |_| Expect::Fail,
        },
        Row {
            name: "delay 4s (> timeout 3s) x1",
            apply: || Apply::Faults(vec![Fault::delay(OVER_TIMEOUT).times(1)]),
            ops: &ALL_OPS,
            expect: |_| Expect::Succeed,
        },
        Row {
            name: "delay 4s always",
            apply: || Apply::Faults(vec![Fault::delay(OVER_TIMEOUT)]),
            ops: &[Op::WriteSmall],
            expect: |_| Expect::Fail,
        },
        Row {
            name: "cut response x1",
            apply: || Apply::Faults(vec![Fault::cut_body().times(1)]),
            ops: &ALL_OPS,
            expect: |_| Expect::Either,
        },
        Row {
            name: "server down (refused)",
            apply: || Apply::ServerDown,
            ops: &ALL_OPS,
            expect: |_| Expect::Fail,
        },
        Row {
            name: "500 on UploadPart always",
            apply: || Apply::Faults(vec![Fault::error500().on(Match::upload_part())]),
            ops: &ALL_OPS,
            expect: |op| match op {
                Op::WriteLarge => Expect::Fail,
                _ => Expect::Succeed,
            },
        },
        Row {
            name: "500 on CompleteMultipart always",
            apply: || Apply::Faults(vec![Fault::error500().on(Match::complete_multipart())]),
            ops: &[Op::WriteSmall, Op::WriteLarge],
            expect: |op| match op {
                Op::WriteLarge => Expect::Fail,
                _ => Expect::Succeed,
            },
        },
        Row {
            name: "500 on HEAD always",
            apply: || Apply::Faults(vec![Fault::error500().on(Match::head_object())]),
            ops: &ALL_OPS,
            expect: |op| match op {
                Op::Stat | Op::Read => Expect::Fail,
                Op::WriteSmall | Op::WriteLarge | Op::FsyncThenHeal | Op::List => Expect::Succeed,
                Op::Chmod => Expect::Either,
            },
        },
        Row {
            name: "500 on LIST always",
            apply: || Apply::Faults(vec![Fault::error500().on(Match::list_objects())]),
            ops: &ALL_OPS,
            expect: |op| match op {
                Op::Stat | Op::Read | Op::List => Expect::Fail,
                Op::WriteSmall | Op::WriteLarge | Op::FsyncThenHeal => Expect::Succeed,
                Op::Chmod => Expect::Either,
            },
        },
        Row {
            name: "503 SlowDown on CopyObject always",
            apply: || Apply::Faults(vec![Fault::slow_down().on(Match::copy_object())]),
            ops: &[Op::Chmod, Op::WriteSmall],
            expect: |op| match op {
                Op::Chmod => Expect::Fail,
                _ => Expect::Succeed,
            },
        },
    ]
}

struct RowRun<'a> {
    proxy: &'a FaultProxy,
    apply: Apply,
}

impl RowRun<'_> {
    fn activate(&self) {
        match &self.apply {
            Apply::None => {}
            Apply::Faults(faults) => {
                self.proxy.clear();
                for f in faults {
                    self.proxy.add(f.clone());
                }
            }
            Apply::ServerDown => self.proxy.stop_server(),
        }
    }

    fn heal(&self) {
        self.proxy.clear();
        self.proxy.start_server();
    }
}

/// Runs one operation of a row; returns its outcome and panics on any safety violation.
fn run_op(row: &str, run: &RowRun, m: &FMount, bucket: &str, op: Op, seed: u64) -> Outcome {
    let ctx = format!("[{row} / {}]", op.name());
    match op {
        Op::WriteSmall | Op::WriteLarge | Op::FsyncThenHeal => {
            let key = match op {
                Op::WriteSmall => "ws.bin",
                Op::WriteLarge => "wl.bin",
                _ => "wf.bin",
            };
            let old = pattern(5000, seed);
            block_on(put(bucket, key, old.clone()));
            let len = match op {
                Op::WriteLarge => LARGE,
                Op::WriteSmall => 100 * 1024,
                _ => 200 * 1024,
            };
            let new = pattern(len, seed + 1);
            let path = m.path().join(key);
            let mut f = fs::OpenOptions::new()
                .write(true)
                .truncate(true)
                .open(&path)
                .unwrap_or_else(|e| panic!("{ctx} open {key} before the fault: {e}"));
            f.write_all(&new)
                .unwrap_or_else(|e| panic!("{ctx} write {key} before the fault: {e}"));
            run.activate();
            let outcome = if op == Op::FsyncThenHeal {
                let o = Outcome::of(f.sync_all());
                run.heal();
                if o == Outcome::Ok {
                    let stored = block_on(get_opt(bucket, key));
                    assert!(
                        stored.as_deref() == Some(&new[..]),
                        "{ctx} fsync succeeded but the bucket does not hold the data"
                    );
                }
                let closed = close_file(f);
                assert_eq!(
                    closed,
                    Outcome::Ok,
                    "{ctx} close() after the fault healed must upload the data kept staged; log:\n{}",
                    log_tail(m)
                );
                let stored = block_on(get_opt(bucket, key));
                assert!(
                    stored.as_deref() == Some(&new[..]),
                    "{ctx} data lost: close() after the heal succeeded but the bucket holds {:?} bytes",
                    stored.map(|s| s.len())
                );
                o
            } else {
                let discarded = m.log_count(DISCARDED) + m.log_count(STORED_LATER);
                let o = close_file(f);
                if o != Outcome::Ok {
                    // The kernel's RELEASE follows close() and tries the upload once more (it
                    // may meet the fault again, or not): wait for its outcome, so it cannot race
                    // with what follows.
                    assert!(
                        m.wait_logs(&[DISCARDED, STORED_LATER], discarded, Duration::from_secs(40)),
                        "{ctx} the release after the failed close never finished; log:\n{}",
                        log_tail(m)
                    );
                }
                run.heal();
                let stored = block_on(get_opt(bucket, key)).unwrap_or_default();
                if o == Outcome::Ok {
                    assert!(
                        stored == new,
                        "{ctx} close() succeeded but the bucket holds {} bytes, not the {} written",
                        stored.len(),
                        new.len()
                    );
                } else if stored != old && stored != new {
                    let prefix = new.starts_with(&stored);
                    let head = block_on(async {
                        let c = s3_client().await;
                        c.head_object()
                            .bucket(bucket)
                            .key(key)
                            .send()
                            .await
                            .map(|h| (h.content_length(), h.e_tag().map(str::to_string)))
                    });
                    thread::sleep(Duration::from_secs(3));
                    let later = block_on(get_opt(bucket, key)).unwrap_or_default();
                    let msg = format!(
                        "{ctx} partial object: after close() failed ({}) a GET of the bucket returned {} \
                         bytes that are neither the old ({}) nor the new ({}) content (a prefix of the \
                         new: {prefix}; HEAD right after: {head:?}; 3 s later the object has {} bytes, \
                         == new: {})\nlog:\n{}",
                        o.label(),
                        stored.len(),
                        old.len(),
                        new.len(),
                        later.len(),
                        later == new,
                        log_tail(m),
                    ) + &format!(
                        "\nrequests the proxy saw (POST/DELETE):\n{}",
                        run.proxy
                            .seen()
                            .iter()
                            .filter(|r| r.method == "POST" || r.method == "DELETE")
                            .map(|r| format!("  {} {} -> {:?}", r.method, r.target, r.fault))
                            .collect::<Vec<_>>()
                            .join("\n")
                    );
                    panic!("{msg}");
                }
                o
            };
            outcome
        }
        Op::Read => {
            let content = pattern(1024 * 1024 + 7, seed);
            block_on(put(bucket, "r.bin", content.clone()));
            run.activate();
            let got = fs::read(m.path().join("r.bin"));
            run.heal();
            if let Ok(data) = &got {
                assert!(
                    *data == content,
                    "{ctx} read returned {} wrong bytes instead of an error",
                    data.len()
                );
            }
            Outcome::of(got)
        }
        Op::List => {
            let mut expected = BTreeSet::new();
            for i in 0..5 {
                block_on(put(bucket, &format!("ld/e{i}"), b"x".to_vec()));
                expected.insert(format!("e{i}"));
            }
            run.activate();
            let got = fs::read_dir(m.path().join("ld")).and_then(|d| {
                d.map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
                    .collect()
            });
            run.heal();
            if let Ok(names) = &got {
                let names: &BTreeSet<String> = names;
                assert_eq!(
                    *names, expected,
                    "{ctx} listing succeeded but is incomplete or wrong"
                );
            }
            Outcome::of(got)
        }
        Op::Stat => {
            block_on(put(bucket, "st.bin", pattern(4321, seed)));
            run.activate();
            let got = fs::metadata(m.path().join("st.bin"));
            run.heal();
            match &got {
                Ok(meta) => assert_eq!(meta.len(), 4321, "{ctx} wrong size"),
                Err(e) => assert_ne!(
                    e.raw_os_error(),
                    Some(libc::ENOENT),
                    "{ctx} an existing object was reported absent (ENOENT) because a request failed"
                ),
            }
            // Healed: the same mount sees it (no "absent" was cached).
            let again = fs::metadata(m.path().join("st.bin"));
            assert!(
                again.as_ref().is_ok_and(|m| m.len() == 4321),
                "{ctx} after the fault healed stat still fails: {again:?}"
            );
            Outcome::of(got)
        }
        Op::Chmod => {
            let body = pattern(3000, seed);
            block_on(put(bucket, "cm.bin", body.clone()));
            let path = m.path().join("cm.bin");
            fs::metadata(&path).unwrap_or_else(|e| panic!("{ctx} stat before the fault: {e}"));
            // Stored attributes first, so that the mount knows what the object holds.
            fs::set_permissions(&path, fs::Permissions::from_mode(0o644))
                .unwrap_or_else(|e| panic!("{ctx} chmod before the fault: {e}"));
            run.activate();
            let got = fs::set_permissions(&path, fs::Permissions::from_mode(0o600));
            run.heal();
            let stored_mode = block_on(mode_metadata(bucket, "cm.bin")).map(|m| m & 0o7777);
            if got.is_ok() {
                assert_eq!(
                    stored_mode,
                    Some(0o600),
                    "{ctx} chmod succeeded but was not stored"
                );
            } else {
                assert_ne!(
                    stored_mode,
                    Some(0o600),
                    "{ctx} chmod failed but the bucket has the new mode (harmless, but unexpected)"
                );
                let shown = fs::metadata(&path).map(|m| m.permissions().mode() & 0o7777);
                assert_ne!(
                    shown.ok(),
                    Some(0o600),
                    "{ctx} chmod failed but the mount shows the new mode"
                );
                // The same chmod again, the server healed: stored (not taken for a no-op).
                fs::set_permissions(&path, fs::Permissions::from_mode(0o600))
                    .unwrap_or_else(|e| panic!("{ctx} chmod retried after the fault: {e}"));
                assert_eq!(
                    block_on(mode_metadata(bucket, "cm.bin")).map(|m| m & 0o7777),
                    Some(0o600),
                    "{ctx} chmod retried after a failure was not stored"
                );
            }
            assert_eq!(
                block_on(get_opt(bucket, "cm.bin")).as_deref(),
                Some(&body[..]),
                "{ctx} chmod changed the content"
            );
            Outcome::of(got)
        }
    }
}

/// After a row: the same mount works again, and no multipart upload was left behind.
fn check_healed(row: &str, m: &FMount, bucket: &str, seed: u64) {
    let data = pattern(70_000, seed + 99);
    let path = m.path().join("healed.bin");
    let written = fs::write(&path, &data);
    assert!(
        written.is_ok(),
        "[{row}] after the fault healed, a write through the same mount fails: {written:?}; log:\n{}",
        log_tail(m)
    );
    assert_eq!(
        block_on(get_opt(bucket, "healed.bin")).as_deref(),
        Some(&data[..])
    );
    assert_eq!(fs::read(&path).unwrap(), data);
    let names: Vec<_> = fs::read_dir(m.path())
        .unwrap_or_else(|e| panic!("[{row}] readdir after the heal: {e}"))
        .collect();
    assert!(!names.is_empty());
    let left = wait_no_uploads(bucket, Duration::from_secs(10));
    assert!(
        left.is_empty(),
        "[{row}] abandoned multipart uploads were not aborted: {left:?}; log:\n{}",
        log_tail(m)
    );
}

fn run_row(row: &Row, index: usize) -> Vec<(String, Outcome, Expect)> {
    let bucket = block_on(new_bucket(&format!("matrix-{index}")));
    let proxy = FaultProxy::start(&server().endpoint);
    // Each operation writes its objects through the S3 API and then uses them through the
    // mount, as another client would: without `disable_noobj_cache` the mount trusts the
    // directory contents it listed for the TTL and would not see them yet.
    let m = mount_via(&proxy, &bucket, &["disable_noobj_cache"]);
    let run = RowRun {
        proxy: &proxy,
        apply: (row.apply)(),
    };
    let mut results = Vec::new();
    for (i, &op) in row.ops.iter().enumerate() {
        let seed = (index * 100 + i) as u64;
        let started = Instant::now();
        let outcome = run_op(row.name, &run, &m, &bucket, op, seed);
        let expect = (row.expect)(op);
        let took = started.elapsed().as_secs_f32();
        results.push((format!("{} ({took:.1}s)", outcome.label()), outcome, expect));
        record(row.name, op.name(), &format!("{} ({took:.1}s)", outcome.label()));
        match (expect, outcome) {
            (Expect::Succeed, Outcome::Err(e)) => panic!(
                "[{} / {}] should succeed after retries but failed with {}; log:\n{}",
                row.name,
                op.name(),
                errno_name(e),
                log_tail(&m)
            ),
            (Expect::Fail, Outcome::Ok) => panic!(
                "[{} / {}] reported success although every attempt failed",
                row.name,
                op.name()
            ),
            (_, Outcome::Err(e)) => assert!(
                matches!(e, libc::EIO | libc::ETIMEDOUT | libc::EAGAIN),
                "[{} / {}] failed with {}, expected EIO, ETIMEDOUT or EAGAIN",
                row.name,
                op.name(),
                errno_name(e)
            ),
            _ => {}
        }
    }
    check_healed(row.name, &m, &bucket, index as u64 * 100);
    m.unmount();
    results
}

#[test]
fn fault_matrix() {
    let rows = rows();
    let queue = Mutex::new((0..rows.len()).collect::<Vec<_>>());
    let failures = Mutex::new(Vec::new());
    thread::scope(|s| {
        for _ in 0..3 {
            s.spawn(|| loop {
                let Some(i) = queue.lock().unwrap().pop() else {
                    return;
                };
                let row = &rows[i];
                if let Err(panic) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_row(row, i)))
                {
                    let msg = panic
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_default();
                    record(row.name, "(row)", "FAILED");
                    failures.lock().unwrap().push(format!("{}: {msg}", row.name));
                }
            });
        }
    });
    print_matrix();
    let failures = failures.into_inner().unwrap();
    assert!(
        failures.is_empty(),
        "fault matrix failures:\n{}",
        failures.join("\n---\n")
    );
}

fn print_matrix() {
    let cells = MATRIX.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let mut faults: Vec<String> = Vec::new();
    let mut ops: Vec<String> = Vec::new();
    for (f, o, _) in &cells {
        if !faults.contains(f) {
            faults.push(f.clone());
        }
        if !ops.contains(o) {
            ops.push(o.clone());
        }
    }
    let mut out = String::from("\nFAULT MATRIX (fault x operation -> outcome; ok = succeeded and verified, errno = the syscall failed and the bucket holds the old content)\n\n");
    out.push_str(&format!("| fault | {} |\n", ops.join(" | ")));
    out.push_str(&format!("|---|{}\n", "---|".repeat(ops.len())));
    for f in &faults {
        let row: Vec<String> = ops
            .iter()
            .map(|o| {
                cells
                    .iter()
                    .find(|(cf, co, _)| cf == f && co == o)
                    .map(|c| c.2.clone())
                    .unwrap_or_else(|| "-".into())
            })
            .collect();
        out.push_str(&format!("| {f} | {} |\n", row.join(" | ")));
    }
    eprintln!("{out}");
}

// ---------------------------------------------------------------------------------------------
// HEAD/LIST failures are never "absent"
// ---------------------------------------------------------------------------------------------

#[test]
fn failed_head_or_list_is_never_taken_for_absent() {
    let bucket = block_on(new_bucket("never-absent"));
    block_on(async {
        put(&bucket, "exists.txt", b"original".to_vec()).await;
        put(&bucket, "implicit/child", b"c".to_vec()).await;
    });
    let proxy = FaultProxy::start(&server().endpoint);
    for (fault, label) in [
        (Fault::error500().on(Match::head_object()), "500 on HEAD always"),
        (
            Fault::slow_down().on(Match::head_object()),
            "503 SlowDown on HEAD always",
        ),
        (Fault::error500().on(Match::list_objects()), "500 on LIST always"),
    ] {
        // A fresh mount per round: nothing is cached yet.
        let m = mount_via(&proxy, &bucket, &["retries=2"]);
        let existing = m.path().join("exists.txt");
        proxy.set(fault);
        // stat of an existing file: an error, not ENOENT.
        let st = fs::metadata(&existing);
        record(label, "stat existing", &Outcome::of_ref(&st).label());
        let err = st.expect_err("stat must fail while HEAD/LIST fail (the file is not cached yet)");
        assert_ne!(
            err.raw_os_error(),
            Some(libc::ENOENT),
            "{label}: existing file reported absent"
        );

        // O_EXCL create of the existing name: must not succeed, must not overwrite.
        let excl = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&existing);
        record(label, "O_EXCL create", &Outcome::of_ref(&excl).label());
        if let Ok(mut f) = excl {
            let _ = f.write_all(b"OVERWRITTEN");
            let closed = close_file(f);
            panic!("{label}: O_CREAT|O_EXCL of an existing file succeeded (close: {closed:?})");
        }

        // A directory that exists only as a prefix.
        let dir = fs::metadata(m.path().join("implicit"));
        record(label, "stat implicit dir", &Outcome::of_ref(&dir).label());
        if let Err(e) = &dir {
            assert_ne!(
                e.raw_os_error(),
                Some(libc::ENOENT),
                "{label}: implicit directory reported absent"
            );
        }
        // A name that does not exist: unknown while listings fail, so not ENOENT then; when
        // only HEAD fails, the directory's listing (which succeeded) proves it absent.
        let missing = fs::metadata(m.path().join("missing.txt"));
        record(label, "stat missing", &Outcome::of_ref(&missing).label());
        let listing_fails = label.contains("LIST");
        match &missing {
            Err(e) if listing_fails => assert_ne!(
                e.raw_os_error(),
                Some(libc::ENOENT),
                "{label}: absence concluded from a failed request"
            ),
            Err(e) => assert_eq!(
                e.raw_os_error(),
                Some(libc::ENOENT),
                "{label}: the listing shows the name is absent"
            ),
            Ok(_) => panic!("{label}: a missing name exists"),
        }
        proxy.clear();
        assert_eq!(
            block_on(get_opt(&bucket, "exists.txt")).as_deref(),
            Some(&b"original"[..]),
            "{label}: the existing object was overwritten"
        );
        // Healed: the same mount finds everything (nothing "absent" was cached).
        assert_eq!(
            fs::read(&existing).unwrap_or_else(|e| panic!("{label}: read after heal: {e}")),
            b"original"
        );
        assert!(fs::metadata(m.path().join("implicit")).unwrap().is_dir());
        assert_eq!(
            fs::metadata(m.path().join("missing.txt"))
                .map_err(|e| e.raw_os_error())
                .err(),
            Some(Some(libc::ENOENT))
        );
        m.unmount();
    }
}

// ---------------------------------------------------------------------------------------------
// A slow answer never brings back what the mount has since changed
// ---------------------------------------------------------------------------------------------

/// A metadata prefetch (started by `stat` of a neighbour in a listing) is out for `victim`
/// while the mount overwrites `victim`; its late answer, describing the replaced content, must
/// not land in the caches: after the kernel forgets its own copy, the size is the new one.
#[test]
fn late_prefetch_answer_does_not_undo_an_overwrite() {
    let bucket = block_on(new_bucket("late-answer"));
    block_on(async {
        put(&bucket, "d/first", b"1".to_vec()).await;
        put(&bucket, "d/src", vec![b's'; 2000]).await;
        put(&bucket, "d/victim", vec![b'v'; 1000]).await;
    });
    let proxy = FaultProxy::start(&server().endpoint);
    let port = free_port();
    let metrics = format!("metrics_addr=127.0.0.1:{port}");
    let m = mount_via(&proxy, &bucket, &[&metrics]);
    let d = m.path().join("d");
    let victim = d.join("victim");
    // The kernel learns `victim`, then `src` is renamed over it: the kernel's entry now names
    // the 2000-byte file and the mount's stat cache has no entry for the path.
    assert_eq!(fs::metadata(&victim).unwrap().len(), 1000);
    fs::rename(d.join("src"), &victim).unwrap();
    // Answers to HEAD of `victim` are held back from now on (the request reaches the server
    // at once: the answer describes the object as it was then).
    proxy.set(Fault::delay(Duration::from_secs(2)).on(Match::head_object().path("victim")));
    let heads = |text: &str| metric(text, "rossfs_s3_request_seconds_count{op=\"HeadObject\"}");
    let names: BTreeSet<String> = fs::read_dir(&d)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, BTreeSet::from(["first".to_string(), "victim".to_string()]));
    let before = heads(&scrape(port));
    let victim_heads = || {
        proxy
            .seen()
            .iter()
            .filter(|s| s.method == "HEAD" && s.target.ends_with("/d/victim"))
            .count()
    };
    let victim_heads_before = victim_heads();
    // Looking up the first listed name prefetches the next one: `victim`, answer held back.
    assert_eq!(fs::metadata(d.join("first")).unwrap().len(), 1);
    let start = Instant::now();
    while victim_heads() == victim_heads_before {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no prefetch of victim was sent"
        );
        thread::sleep(Duration::from_millis(10));
    }
    // Overwrite while that answer is out (the kernel's entry is valid: no lookup needed).
    fs::write(&victim, b"0123456789").unwrap();
    assert_eq!(fs::metadata(&victim).unwrap().len(), 10);
    // Both HEADs answered (the neighbour's and the late one).
    while heads(&scrape(port)) < before + 2.0 {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the held-back HEAD never completed: {} HEADs before, {} now; requests: {:?}",
            before,
            heads(&scrape(port)),
            proxy
                .seen()
                .iter()
                .map(|s| format!("{} {}", s.method, s.target))
                .collect::<Vec<_>>()
        );
        thread::sleep(Duration::from_millis(20));
    }
    proxy.clear();
    // The kernel forgets its dentries and attributes; the mount answers from its caches.
    fs::write("/proc/sys/vm/drop_caches", "2").expect("drop caches (tests run as root)");
    assert_eq!(
        fs::metadata(&victim).unwrap().len(),
        10,
        "the late answer of a HEAD sent before the overwrite replaced the new size"
    );
    assert_eq!(fs::read(&victim).unwrap(), b"0123456789");
    m.unmount();
    assert_eq!(
        block_on(get_opt(&bucket, "d/victim")).as_deref(),
        Some(&b"0123456789"[..])
    );
}

// ---------------------------------------------------------------------------------------------
// Multipart upload abandoned while the server is away
// ---------------------------------------------------------------------------------------------

#[test]
fn multipart_abandoned_while_the_server_is_down_is_aborted_once_it_returns() {
    let bucket = block_on(new_bucket("mpu-outage"));
    block_on(put(&bucket, "big.bin", b"old".to_vec()));
    let proxy = FaultProxy::start(&server().endpoint);
    let m = mount_via(&proxy, &bucket, &[]);
    let new = pattern(LARGE, 7);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(m.path().join("big.bin"))
        .unwrap();
    f.write_all(&new).unwrap();
    // The first part request takes the server down for 3 s: parts and the abort fail.
    proxy.set(
        Fault::go_down(Duration::from_secs(3))
            .on(Match::upload_part())
            .times(1),
    );
    let closed = close_file(f);
    record("server down 3s at first part", "close 12M", &closed.label());
    assert_ne!(closed, Outcome::Ok, "close() succeeded while the server was down");
    assert!(
        proxy.count(&Match::create_multipart()) >= 1,
        "the multipart upload never started"
    );
    // Wait for the server to come back, then for rossfs to clean up.
    let start = Instant::now();
    while proxy.is_down() {
        assert!(start.elapsed() < Duration::from_secs(10));
        thread::sleep(Duration::from_millis(50));
    }
    let stored = block_on(get_opt(&bucket, "big.bin")).unwrap_or_default();
    assert!(
        stored == b"old" || stored == new,
        "partial object after the outage"
    );
    check_same_mount_works(&m, &bucket);
    let left = wait_no_uploads(&bucket, Duration::from_secs(15));
    record(
        "server down 3s at first part",
        "MPU left behind",
        &format!("{}", left.len()),
    );
    assert!(
        left.is_empty(),
        "the multipart upload abandoned during the outage was never aborted ({left:?} still pending \
         15 s after the server came back); log:\n{}",
        log_tail(&m)
    );
    m.unmount();
}

fn check_same_mount_works(m: &FMount, bucket: &str) {
    let data = pattern(10_000, 3);
    fs::write(m.path().join("after.bin"), &data).expect("write through the same mount after the outage");
    assert_eq!(block_on(get_opt(bucket, "after.bin")).as_deref(), Some(&data[..]));
}

// ---------------------------------------------------------------------------------------------
// kill -9 and SIGTERM
// ---------------------------------------------------------------------------------------------

fn fusermount_u(path: &Path) -> (bool, String) {
    let out = std::process::Command::new("fusermount3")
        .arg("-u")
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .expect("run fusermount3");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).trim().to_string(),
    )
}

/// Kills the daemon with SIGKILL while `key` is being uploaded (its upload requests are held
/// back by the proxy), then checks the object, the dead mount's unmount and a new mount.
fn kill_during_upload(key: &str, len: usize, slow: Match, label: &str) {
    let bucket = block_on(new_bucket("kill9"));
    let old = pattern(50_000, 11);
    block_on(put(&bucket, key, old.clone()));
    let proxy = FaultProxy::start(&server().endpoint);
    let m = mount_via(&proxy, &bucket, &["readwrite_timeout=30"]);
    let pids = m.daemon_pids().to_vec();
    assert!(!pids.is_empty(), "no daemon pid found");
    let new = pattern(len, 12);
    proxy.set(Fault::delay(Duration::from_secs(20)).on(slow.clone()));
    let path = m.path().join(key);
    let writer = {
        let (path, new) = (path.clone(), new.clone());
        thread::spawn(move || {
            let mut f = fs::OpenOptions::new().write(true).truncate(true).open(&path)?;
            f.write_all(&new)?;
            match close_file(f) {
                Outcome::Ok => Ok(()),
                Outcome::Err(e) => Err(std::io::Error::from_raw_os_error(e)),
            }
        })
    };
    assert!(
        proxy.wait_for(&slow, 1, Duration::from_secs(30)),
        "the upload never reached the server"
    );
    for pid in &pids {
        // SAFETY: killing the daemon of our own mount.
        unsafe { libc::kill(*pid, libc::SIGKILL) };
    }
    let closed = writer.join().expect("writer thread");
    record(label, "close", &Outcome::of_ref(&closed).label());
    assert!(
        closed.is_err(),
        "close() succeeded although the daemon was killed mid-upload"
    );
    proxy.clear();

    let stored = block_on(get_opt(&bucket, key)).unwrap_or_default();
    let state = if stored == old {
        "old"
    } else if stored == new {
        "new"
    } else {
        "PARTIAL"
    };
    record(label, "object in bucket", state);
    assert_ne!(
        state,
        "PARTIAL",
        "kill -9 left a partial object ({} bytes)",
        stored.len()
    );

    // The dead mount: ENOTCONN, and a plain unmount works.
    assert!(is_mounted(m.path()));
    let dead = fs::read_dir(m.path()).map(|_| ());
    let dead_errno = dead.as_ref().err().and_then(|e| e.raw_os_error());
    assert!(
        matches!(dead_errno, Some(libc::ENOTCONN) | Some(libc::ECONNABORTED)),
        "the dead mount should answer ENOTCONN/ECONNABORTED, got {dead:?}"
    );
    let (ok, err) = fusermount_u(m.path());
    record(label, "fusermount3 -u", if ok { "ok" } else { "FAILED" });
    assert!(ok, "fusermount3 -u of the dead mount failed: {err}");
    assert!(!is_mounted(m.path()));
    drop(m);

    // A new mount (no proxy) sees what the bucket holds.
    // A request the proxy had fully received may still complete after the kill (as on a real
    // server), so the new mount may see the new object: old or complete, never partial.
    let m2 = Mount::mount(&bucket, &[]);
    let seen = fs::read(m2.path().join(key)).expect("read after remount");
    let seen_state = if seen == old {
        "old"
    } else if seen == new {
        "new"
    } else {
        "PARTIAL"
    };
    assert_ne!(
        seen_state,
        "PARTIAL",
        "the new mount sees a partial object ({} bytes)",
        seen.len()
    );
    record(label, "new mount", &format!("consistent ({seen_state})"));
    m2.unmount();
}

#[test]
fn kill_9_during_a_large_write_leaves_the_old_or_the_complete_object() {
    kill_during_upload(
        "big.bin",
        LARGE,
        Match::upload_part(),
        "kill -9 during 12M upload",
    );
}

#[test]
fn kill_9_during_a_small_write_leaves_the_old_or_the_complete_object() {
    kill_during_upload(
        "small.bin",
        300_000,
        Match::put_object(),
        "kill -9 during 300K PUT",
    );
}

#[test]
fn sigterm_flushes_dirty_files_through_transient_errors_and_exits_zero() {
    let bucket = block_on(new_bucket("sigterm-faults"));
    let proxy = FaultProxy::start(&server().endpoint);
    let server = server();
    let scratch = tempfile::tempdir().unwrap();
    let mnt = tempfile::tempdir().unwrap();
    let passwd = write_passwd_file(scratch.path(), &server.access_key, &server.secret_key);
    let url = format!("url={}", proxy.url());
    let mut opts: Vec<&str> = vec![&url];
    opts.extend(FAULT_OPTS);
    let mut cmd = mount_command(&bucket, mnt.path(), &passwd, &opts);
    let err_path = scratch.path().join("stderr");
    cmd.arg("-f")
        .stdout(Stdio::null())
        .stderr(fs::File::create(&err_path).unwrap());
    let mut child = cmd.spawn().unwrap();
    let start = Instant::now();
    while !is_mounted(mnt.path()) {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "rossfs -f never mounted"
        );
        assert!(child.try_wait().unwrap().is_none(), "rossfs -f exited early");
        thread::sleep(Duration::from_millis(20));
    }
    let small = pattern(123_456, 21);
    let large = pattern(LARGE, 22);
    fs::write(mnt.path().join("closed.bin"), b"closed before").unwrap();
    let mut a = fs::File::create(mnt.path().join("small.bin")).unwrap();
    a.write_all(&small).unwrap();
    let mut b = fs::File::create(mnt.path().join("large.bin")).unwrap();
    b.write_all(&large).unwrap();
    // The shutdown flush meets two throttling answers and must retry through them.
    proxy.set(Fault::slow_down().on(Match::method("PUT")).times(2));
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > Duration::from_secs(90) {
            let _ = child.kill();
            panic!("rossfs did not exit within 90 s of SIGTERM");
        }
        thread::sleep(Duration::from_millis(20));
    };
    let stderr = fs::read_to_string(&err_path).unwrap_or_default();
    record(
        "SIGTERM + 503 x2 on PUT",
        "exit code",
        &format!("{:?}", status.code()),
    );
    assert_eq!(status.code(), Some(0), "stderr:\n{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!is_mounted(mnt.path()), "still mounted after SIGTERM");
    drop((a, b));
    assert!(proxy.injected() >= 1, "the transient fault never acted");
    block_on(async {
        assert_eq!(get_opt(&bucket, "small.bin").await.as_deref(), Some(&small[..]));
        assert!(get_opt(&bucket, "large.bin").await.as_deref() == Some(&large[..]));
        assert_eq!(
            get_opt(&bucket, "closed.bin").await.as_deref(),
            Some(&b"closed before"[..])
        );
    });
    record("SIGTERM + 503 x2 on PUT", "dirty files", "all stored");
    assert!(wait_no_uploads(&bucket, Duration::from_secs(5)).is_empty());
}

// ---------------------------------------------------------------------------------------------
// The proxy itself
// ---------------------------------------------------------------------------------------------

#[test]
fn the_proxy_forwards_keep_alive_traffic_and_injects_faults() {
    let bucket = block_on(new_bucket("proxy-selftest"));
    let proxy = FaultProxy::start(&server().endpoint);
    let srv = server();
    let client = {
        let creds = aws_credential_types::Credentials::new(&srv.access_key, &srv.secret_key, None, None, "t");
        let conf = aws_sdk_s3::Config::builder()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .endpoint_url(proxy.url())
            .region(aws_sdk_s3::config::Region::new(srv.region.clone()))
            .credentials_provider(creds)
            .force_path_style(true)
            .retry_config(aws_sdk_s3::config::retry::RetryConfig::disabled())
            .build();
        aws_sdk_s3::Client::from_conf(conf)
    };
    block_on(async {
        let body = pattern(3 << 20, 5);
        for i in 0..5 {
            client
                .put_object()
                .bucket(&bucket)
                .key(format!("k{i}"))
                .body(ByteStream::from(body.clone()))
                .send()
                .await
                .unwrap();
            let got = client
                .get_object()
                .bucket(&bucket)
                .key(format!("k{i}"))
                .send()
                .await
                .unwrap();
            assert_eq!(got.body.collect().await.unwrap().into_bytes().to_vec(), body);
        }
        proxy.set(Fault::slow_down().on(Match::head_object()).times(1));
        let err = client
            .head_object()
            .bucket(&bucket)
            .key("k0")
            .send()
            .await
            .unwrap_err();
        assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(503));
        assert!(client
            .head_object()
            .bucket(&bucket)
            .key("k0")
            .send()
            .await
            .is_ok());
        proxy.set(Fault::error500().on(Match::get_object()).times(1));
        let err = client
            .get_object()
            .bucket(&bucket)
            .key("k0")
            .send()
            .await
            .unwrap_err();
        let text = aws_sdk_s3::error::DisplayErrorContext(&err).to_string();
        assert!(text.contains("InternalError"), "{text}");
        proxy.set(Fault::cut_body().on(Match::get_object()).times(1));
        let cut = match client.get_object().bucket(&bucket).key("k1").send().await {
            Ok(out) => out.body.collect().await.is_err(),
            Err(_) => true,
        };
        assert!(cut, "a cut body must not read as complete");
        proxy.stop_server();
        assert!(client.list_objects_v2().bucket(&bucket).send().await.is_err());
        proxy.start_server();
        let listed = client.list_objects_v2().bucket(&bucket).send().await.unwrap();
        assert_eq!(listed.contents().len(), 5);
    });
    assert!(std::net::TcpStream::connect(proxy.url().trim_start_matches("http://")).is_ok());
    proxy.stop_server();
    let refused = (0..100).any(|_| {
        let r = std::net::TcpStream::connect(proxy.url().trim_start_matches("http://"));
        if r.is_err() {
            return true;
        }
        thread::sleep(Duration::from_millis(20));
        false
    });
    assert!(refused, "a stopped server must refuse connections");
}

/// A directory rename whose deletes of the old keys fail part-way: `rename` fails with EIO,
/// everything is under the new name, what could not be deleted stays under the old one, both
/// show as the bucket holds them, and the old directory keeps its own marker (a chmod of it
/// must not land on the new one).
#[test]
fn a_directory_rename_whose_deletes_fail_leaves_both_names_as_stored() {
    let bucket = block_on(new_bucket("dirmove-fail"));
    let proxy = FaultProxy::start(&server().endpoint);
    let m = mount_via(&proxy, &bucket, &[]);
    let p = m.path();
    fs::create_dir(p.join("src")).unwrap();
    fs::set_permissions(p.join("src"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(p.join("src/a"), b"a").unwrap();
    fs::write(p.join("src/b"), b"b").unwrap();
    assert_eq!(names_in(&p.join("src")), ["a", "b"]);
    proxy.set(Fault::error500().on(Match::method("DELETE").path("/src/b")));
    let errors = m.log_count("deleting the old keys failed");
    assert_eq!(errno_of(fs::rename(p.join("src"), p.join("dst"))), libc::EIO);
    proxy.clear();
    assert_eq!(
        m.log_count("deleting the old keys failed"),
        errors + 1,
        "{}",
        log_tail(&m)
    );
    assert_eq!(names_in(&p.join("dst")), ["a", "b"]);
    assert_eq!(fs::read(p.join("dst/b")).unwrap(), b"b");
    assert_eq!(names_in(&p.join("src")), ["b"]);
    fs::set_permissions(p.join("src"), fs::Permissions::from_mode(0o700)).unwrap();
    assert_eq!(block_on(mode_metadata(&bucket, "src/")), Some(0o40700));
    assert_eq!(block_on(mode_metadata(&bucket, "dst/")), Some(0o40755));
    m.unmount();
}

/// Storage class and encryption options reach every request that writes an object: a PUT, a
/// multipart upload, a rename's copy and, as well, the metadata copy of chmod, chown and touch
/// (a copy that left them out would move the object back to the bucket's defaults).
#[test]
fn storage_class_and_encryption_travel_with_every_write_including_metadata_copies() {
    let bucket = block_on(new_bucket("sclass"));
    block_on(put(&bucket, "foreign.txt", b"from another tool".to_vec()));
    let proxy = FaultProxy::start(&server().endpoint);
    // Copies past 5 MiB are multipart copies: their CreateMultipartUpload carries them too.
    let m = mount_via(
        &proxy,
        &bucket,
        &["storage_class=STANDARD_IA", "use_sse", "singlepart_copy_limit=5"],
    );
    let p = m.path();
    fs::write(p.join("small"), b"one PUT").unwrap();
    fs::write(p.join("large"), pattern(12 << 20, 7)).unwrap();
    fs::set_permissions(p.join("small"), fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::chown(p.join("foreign.txt"), Some(1234), None).unwrap();
    let f = fs::File::options().write(true).open(p.join("large")).unwrap();
    f.set_modified(std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000))
        .unwrap();
    drop(f);
    fs::rename(p.join("small"), p.join("renamed")).unwrap();
    fs::create_dir(p.join("dir")).unwrap();
    fs::set_permissions(p.join("dir"), fs::Permissions::from_mode(0o700)).unwrap();

    let seen = proxy.seen();
    let copies = seen
        .iter()
        .filter(|s| s.headers.iter().any(|h| h == "x-amz-copy-source"))
        .count();
    assert!(
        copies >= 3,
        "expected the metadata copies and the rename's copy, saw {copies}: {seen:#?}"
    );
    // Object writes: PUT without a part number (objects, copies, markers) and the multipart
    // upload's creation (POST ?uploads); parts and the completion carry no such headers in S3.
    let writes: Vec<_> = seen
        .iter()
        .filter(|s| {
            (s.method == "PUT" && !s.target.contains("partNumber="))
                || (s.method == "POST" && s.target.contains("uploads"))
        })
        .collect();
    assert!(writes.len() >= 7, "too few writes seen: {writes:#?}");
    for w in writes {
        for h in ["x-amz-storage-class", "x-amz-server-side-encryption"] {
            assert!(
                w.headers.iter().any(|x| x == h),
                "{} {} lacks {h}: {:?}",
                w.method,
                w.target,
                w.headers
            );
        }
    }
    assert_eq!(fs::read(p.join("renamed")).unwrap(), b"one PUT");
    assert_eq!(
        std::os::unix::fs::MetadataExt::uid(&fs::metadata(p.join("foreign.txt")).unwrap()),
        1234,
        "chown stored"
    );
    m.m.unmount();
}

// ---------------------------------------------------------------------------------------------
// unlink and rename while the close of a new file is uploading it
// ---------------------------------------------------------------------------------------------

/// Writes a new file `rel` and closes it on another thread with the answer to its PUT held back;
/// once the PUT has reached the server, runs `op` (which waits for the upload); returns what
/// the close returned.
fn during_the_put_of_a_new_file(
    proxy: &FaultProxy,
    m: &FMount,
    rel: &str,
    content: &[u8],
    op: impl FnOnce(),
) -> Outcome {
    let put = Match::put_object().path(&format!("/{rel}"));
    let before = proxy.count(&put);
    proxy.set(Fault::delay(Duration::from_millis(1500)).on(put.clone()).times(1));
    let mut f = fs::File::create(m.path().join(rel)).unwrap();
    f.write_all(content).unwrap();
    let closer = thread::spawn(move || close_file(f));
    assert!(
        proxy.wait_for(&put, before + 1, Duration::from_secs(10)),
        "the close of {rel} sent no PUT"
    );
    op();
    let closed = closer.join().unwrap();
    proxy.clear();
    closed
}

#[test]
fn unlink_or_rename_while_a_new_file_uploads_acts_on_the_uploaded_object() {
    let bucket = block_on(new_bucket("close-race"));
    let proxy = FaultProxy::start(&server().endpoint);
    let m = mount_via(&proxy, &bucket, &[]);
    let d = m.path().join("d");
    fs::create_dir(&d).unwrap();

    // rm while the close uploads: the object the close stored is deleted.
    let closed = during_the_put_of_a_new_file(&proxy, &m, "d/gone", b"soon gone", || {
        fs::remove_file(d.join("gone")).unwrap()
    });
    record("PUT held back 1.5s", "rm during close", &closed.label());
    assert_eq!(closed, Outcome::Ok);
    assert_eq!(
        block_on(get_opt(&bucket, "d/gone")),
        None,
        "rm returned 0, but the object uploaded by the close stayed"
    );
    assert_eq!(errno_of(fs::metadata(d.join("gone"))), libc::ENOENT);

    // mv while the close uploads: only the new name holds the data.
    let closed = during_the_put_of_a_new_file(&proxy, &m, "d/tmp", b"final content", || {
        fs::rename(d.join("tmp"), d.join("final")).unwrap()
    });
    record("PUT held back 1.5s", "mv during close", &closed.label());
    assert_eq!(closed, Outcome::Ok);
    assert_eq!(
        block_on(get_opt(&bucket, "d/final")).as_deref(),
        Some(&b"final content"[..])
    );
    assert_eq!(
        block_on(get_opt(&bucket, "d/tmp")),
        None,
        "mv returned 0, but the old name uploaded by the close stayed"
    );
    assert_eq!(fs::read(d.join("final")).unwrap(), b"final content");
    m.unmount();
}

// ---------------------------------------------------------------------------------------------
// A directory rename onto an empty directory that fails
// ---------------------------------------------------------------------------------------------

#[test]
fn a_failed_rename_onto_an_empty_directory_leaves_that_directory() {
    let bucket = block_on(new_bucket("rename-onto"));
    let proxy = FaultProxy::start(&server().endpoint);
    let m = mount_via(&proxy, &bucket, &[]);
    let p = m.path();
    fs::create_dir(p.join("src")).unwrap();
    fs::write(p.join("src/a"), b"a").unwrap();
    fs::create_dir(p.join("target")).unwrap();
    fs::set_permissions(p.join("target"), fs::Permissions::from_mode(0o750)).unwrap();
    proxy.set(Fault::error500().on(Match::copy_object()));
    let renamed = Outcome::of(fs::rename(p.join("src"), p.join("target")));
    record("500 on every copy", "mv dir onto empty dir", &renamed.label());
    assert_ne!(
        renamed,
        Outcome::Ok,
        "the rename succeeded although no copy could"
    );
    proxy.clear();
    let keys = block_on(async { list_keys(&s3_client().await, &bucket, "").await });
    assert!(
        keys.contains(&"target/".to_string()),
        "the failed rename deleted the directory it was to replace: {keys:?}"
    );
    let meta = fs::metadata(p.join("target")).unwrap();
    assert!(meta.is_dir());
    assert_eq!(meta.permissions().mode() & 0o7777, 0o750);
    assert_eq!(fs::read(p.join("src/a")).unwrap(), b"a");
    // Healed: the same rename replaces it, and its marker now carries the moved directory's mode.
    fs::rename(p.join("src"), p.join("target")).unwrap();
    assert_eq!(fs::read(p.join("target/a")).unwrap(), b"a");
    assert_eq!(
        block_on(async { list_keys(&s3_client().await, &bucket, "").await }),
        vec!["target/".to_string(), "target/a".to_string()]
    );
    assert_eq!(
        block_on(mode_metadata(&bucket, "target/")).map(|m| m & 0o7777),
        Some(fs::metadata(p.join("target")).unwrap().permissions().mode() & 0o7777)
    );
    m.unmount();
}

// ---------------------------------------------------------------------------------------------
// After an upload failed for good, the mount shows what the bucket holds
// ---------------------------------------------------------------------------------------------

#[test]
fn after_a_lost_upload_the_mount_shows_and_builds_on_what_the_bucket_holds() {
    let bucket = block_on(new_bucket("lost-upload"));
    block_on(put(&bucket, "t", vec![b'A'; 100]));
    block_on(put(&bucket, "w", vec![b'B'; 100]));
    block_on(put(&bucket, "c", vec![b'C'; 100]));
    let proxy = FaultProxy::start(&server().endpoint);
    let m = mount_via(&proxy, &bucket, &[]);
    let p = m.path();
    assert_eq!(fs::metadata(p.join("t")).unwrap().len(), 100);
    assert_eq!(fs::read(p.join("w")).unwrap(), vec![b'B'; 100]);
    proxy.set(Fault::error500().on(Match::put_object()));

    // truncate(2) by path uploads at once; it fails, and the file stays as stored.
    let c_path = std::ffi::CString::new(p.join("t").as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path; truncate only reads it.
    let truncated = if unsafe { libc::truncate(c_path.as_ptr(), 0) } == 0 {
        Outcome::Ok
    } else {
        Outcome::Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(-1))
    };
    record("500 on every PUT", "truncate by path", &truncated.label());
    assert_ne!(truncated, Outcome::Ok);

    // New content written and closed: the close reports the loss, the release drops it.
    let discarded = m.log_count(DISCARDED);
    let mut f = fs::File::create(p.join("w")).unwrap();
    f.write_all(b"new").unwrap();
    assert_ne!(close_file(f), Outcome::Ok);
    let mut f = fs::File::create(p.join("c")).unwrap();
    f.write_all(b"new").unwrap();
    assert_ne!(close_file(f), Outcome::Ok);
    // A new file whose content was never stored.
    let mut f = fs::File::create(p.join("fresh")).unwrap();
    f.write_all(b"lost").unwrap();
    assert_ne!(close_file(f), Outcome::Ok);
    assert!(
        m.wait_logs(&[DISCARDED], discarded + 2, Duration::from_secs(30)),
        "the releases after the failed closes never finished; log:\n{}",
        log_tail(&m)
    );
    proxy.clear();

    // A chmod first (no stat in between), then an append: both act on the stored file.
    fs::set_permissions(p.join("c"), fs::Permissions::from_mode(0o600)).unwrap();
    let mut f = fs::OpenOptions::new().append(true).open(p.join("c")).unwrap();
    f.write_all(b"+c").unwrap();
    assert_eq!(close_file(f), Outcome::Ok);
    let mut c = vec![b'C'; 100];
    c.extend_from_slice(b"+c");
    assert_eq!(
        block_on(get_opt(&bucket, "c")),
        Some(c),
        "a chmod after the lost upload brought the lost size back"
    );
    assert_eq!(
        block_on(mode_metadata(&bucket, "c")).map(|m| m & 0o7777),
        Some(0o600)
    );

    // The mount (and the kernel) show the bucket again: the old sizes and content, no `fresh`.
    for name in ["t", "w"] {
        wait_until(
            &format!("{name} shown at its stored size"),
            Duration::from_secs(10),
            || fs::metadata(p.join(name)).is_ok_and(|m| m.len() == 100),
        );
    }
    assert_eq!(
        fs::read(p.join("w")).unwrap(),
        vec![b'B'; 100],
        "the lost content is still shown"
    );
    wait_until("the never stored file gone", Duration::from_secs(10), || {
        fs::metadata(p.join("fresh")).is_err_and(|e| e.raw_os_error() == Some(libc::ENOENT))
    });
    assert_eq!(names_in(p), vec!["c", "t", "w"]);

    // Appends build on the stored content, not on the lost sizes.
    for (name, add) in [("t", b"+t".as_slice()), ("w", b"+w".as_slice())] {
        let mut f = fs::OpenOptions::new().append(true).open(p.join(name)).unwrap();
        f.write_all(add).unwrap();
        assert_eq!(close_file(f), Outcome::Ok);
    }
    let mut t = vec![b'A'; 100];
    t.extend_from_slice(b"+t");
    let mut w = vec![b'B'; 100];
    w.extend_from_slice(b"+w");
    assert_eq!(block_on(get_opt(&bucket, "t")), Some(t.clone()));
    assert_eq!(block_on(get_opt(&bucket, "w")), Some(w.clone()));
    assert_eq!(fs::read(p.join("t")).unwrap(), t);
    assert_eq!(fs::read(p.join("w")).unwrap(), w);
    fs::write(p.join("fresh"), b"stored now").unwrap();
    assert_eq!(
        block_on(get_opt(&bucket, "fresh")).as_deref(),
        Some(&b"stored now"[..])
    );
    m.unmount();
}

// ---------------------------------------------------------------------------------------------
// A listing that runs while a new file's upload completes
// ---------------------------------------------------------------------------------------------

#[test]
fn a_listing_overlapping_an_upload_is_not_taken_as_the_whole_directory() {
    let bucket = block_on(new_bucket("list-upload"));
    // Two listing pages: a lookup miss does not make the directory known, a full listing does.
    put_many(&bucket, (0..1001).map(|i| format!("d/k{i:04}")), b"");
    let proxy = FaultProxy::start(&server().endpoint);
    let m = mount_via(&proxy, &bucket, &[]);
    let d = m.path().join("d");
    let mut f = fs::File::create(d.join("zz-new")).unwrap();
    f.write_all(b"new").unwrap();
    // `ls` starts; the answer to its second page (taken by the server before the upload) is
    // held back while the new file's close uploads it.
    let second_page = Match::list_objects().query("continuation-token=");
    proxy.set(
        Fault::delay(Duration::from_millis(1500))
            .on(second_page.clone())
            .times(1),
    );
    let lister = {
        let d = d.clone();
        thread::spawn(move || names_in(&d).len())
    };
    assert!(
        proxy.wait_for(&second_page, 1, Duration::from_secs(10)),
        "the listing never asked for its second page"
    );
    assert_eq!(close_file(f), Outcome::Ok);
    let first = lister.join().unwrap();
    proxy.clear();
    assert_eq!(
        first, 1002,
        "a file of this mount that existed for the whole listing is in it, though its upload \
         landed after the page that would show it was read"
    );
    let names = names_in(&d);
    assert_eq!(
        names.len(),
        1002,
        "a listing taken while the upload completed hides the file afterwards"
    );
    assert!(names.contains(&"zz-new".to_string()));
    assert_eq!(fs::read(d.join("zz-new")).unwrap(), b"new");
    m.unmount();
}

/// A bucket that lives in another region: AWS S3 answers the mount's first listing with `301
/// PermanentRedirect` and names the bucket's region in `x-amz-bucket-region`. The mount fails
/// before it daemonizes, with that region in the fix, and makes no further attempt.
#[test]
fn a_bucket_in_another_region_is_refused_naming_its_region() {
    let bucket = block_on(new_bucket("moved"));
    let proxy = FaultProxy::start(&server().endpoint);
    proxy.set(
        Fault::status(301, "PermanentRedirect")
            .with_header("x-amz-bucket-region", "eu-central-1")
            .on(Match::list_objects()),
    );
    let out = try_mount(&bucket, &[&format!("url={}", proxy.url())]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("301 PermanentRedirect") && err.contains("set region=eu-central-1"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert_eq!(proxy.injected(), 1, "a redirect is not retried");
}

/// A server that does not know ListObjectsV2 (older S3-compatible stores): with
/// `listobjectsv1` the mount makes every listing, the start-up check included, with version 1.
#[test]
fn listobjectsv1_mounts_a_server_without_listobjectsv2() {
    let bucket = block_on(new_bucket("v1only"));
    put_objects(&bucket, &[("d/a", b"a"), ("top", b"t")]);
    let proxy = FaultProxy::start(&server().endpoint);
    proxy.set(Fault::status(400, "InvalidArgument").on(Match::list_objects()));
    let m = mount_via(&proxy, &bucket, &["listobjectsv1"]);
    assert_eq!(names_in(m.path()), ["d", "top"]);
    assert_eq!(names_in(&m.path().join("d")), ["a"]);
    assert_eq!(proxy.injected(), 0, "a ListObjectsV2 request was made");
    m.unmount();
}

/// A server that takes the request and never answers in time: the mount command gives up
/// after `mount_timeout=`, stops its daemon and fails, instead of waiting as long as the
/// daemon's own attempts take (or forever, on a source that never times out).
#[test]
fn a_daemon_not_ready_within_mount_timeout_is_stopped_and_the_mount_fails() {
    let bucket = block_on(new_bucket("stuck"));
    let proxy = FaultProxy::start(&server().endpoint);
    proxy.set(Fault::delay(Duration::from_secs(60)).on(Match::list_objects()));
    let started = Instant::now();
    let out = try_mount(
        &bucket,
        &[
            &format!("url={}", proxy.url()),
            "readwrite_timeout=60",
            "mount_timeout=2",
        ],
    );
    let took = started.elapsed();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("not ready after 2 s") && err.contains("mount_timeout="),
        "{err}"
    );
    assert_eq!(proxy.count(&Match::list_objects()), 1, "{err}");
    // The daemon (the only process whose arguments name this bucket) is gone.
    let alive: Vec<_> = fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| fs::read(e.ok()?.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(&bucket))
        .collect();
    assert!(alive.is_empty(), "still running: {alive:?}");
    // The daemon's own first attempt would end after 15 s.
    assert!(took < Duration::from_secs(12), "the command took {took:?}");
}

/// A server that refuses `If-Match` on GET (`501 NotImplemented`): reads go on without the
/// version check after one warning, instead of failing.
#[test]
fn a_server_without_if_match_on_get_still_serves_reads() {
    let bucket = block_on(new_bucket("no-if-match"));
    let body: Vec<u8> = (0..3 << 20).map(|i: u32| (i % 251) as u8).collect();
    put_objects(&bucket, &[("f", &body), ("g", &body)]);
    let proxy = FaultProxy::start(&server().endpoint);
    let m = mount_via(&proxy, &bucket, &[]);
    let guarded = Match::get_object().header("if-match");
    proxy.set(Fault::status(501, "NotImplemented").on(guarded.clone()));
    assert_eq!(fs::read(m.path().join("f")).unwrap(), body);
    // The reads the kernel had in flight at once may each have met the refusal; later ones
    // leave the header out.
    let refused = proxy.injected();
    assert!(refused >= 1, "the guarded GET never reached the server");
    assert_eq!(fs::read(m.path().join("g")).unwrap(), body);
    assert_eq!(proxy.count(&guarded), refused as usize, "If-Match sent again");
    let log = fs::read_to_string(&m.log).unwrap_or_default();
    assert_eq!(log.matches("does not take If-Match").count(), 1, "{log}");
    m.unmount();
}

/// A file created through a read-only descriptor (`open(O_RDONLY|O_CREAT)`, as flock(1) makes
/// its lock file) is stored at that descriptor's close, so the close reports a failed upload
/// instead of the upload failing later, unseen, at release.
#[test]
fn a_file_created_read_only_is_stored_at_close() {
    use std::os::unix::ffi::OsStrExt;
    let bucket = block_on(new_bucket("rdonly-creat"));
    let proxy = FaultProxy::start(&server().endpoint);
    let m = mount_via(&proxy, &bucket, &[]);
    let create_and_close = |name: &str| {
        let p = std::ffi::CString::new(m.path().join(name).as_os_str().as_bytes()).unwrap();
        // SAFETY: p is a valid path; the descriptor is closed here.
        let fd = unsafe { libc::open(p.as_ptr(), libc::O_RDONLY | libc::O_CREAT, 0o644) };
        assert!(fd >= 0, "open: {}", std::io::Error::last_os_error());
        // SAFETY: as above.
        close_file(unsafe { <fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) })
    };
    proxy.set(Fault::error500().on(Match::put_object()));
    assert_eq!(
        create_and_close("lock"),
        Outcome::Err(libc::EIO),
        "{}",
        log_tail(&m)
    );
    proxy.clear();
    assert_eq!(create_and_close("lock2"), Outcome::Ok);
    let stored = block_on(async { list_keys(&s3_client().await, &bucket, "").await });
    assert!(
        stored.contains(&"lock2".to_string()),
        "stored by the close: {stored:?}"
    );
    m.unmount();
}

/// A truncate whose upload fails changes nothing, as on a disk: not the size the mount shows,
/// not what a descriptor open for reading reads, and not, later, the object in the bucket when
/// that descriptor is closed (the truncated copy used to be uploaded then).
#[test]
fn a_failed_truncate_leaves_the_file_as_it_was() {
    use std::io::Read as _;
    let bucket = block_on(new_bucket("trunc-fail"));
    let proxy = FaultProxy::start(&server().endpoint);
    let m = mount_via(&proxy, &bucket, &[]);
    let p = m.path().join("log");
    fs::write(&p, b"twelve bytes").unwrap();
    let mut reader = fs::File::open(&p).unwrap();
    proxy.set(Fault::error500().on(Match::put_object()));
    // truncate(2) by path: no descriptor open for writing will upload the file later.
    let cpath = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: cpath is a valid NUL-terminated path.
    let rc = unsafe { libc::truncate(cpath.as_ptr(), 0) };
    let truncated = if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    };
    assert_eq!(
        Outcome::of(truncated),
        Outcome::Err(libc::EIO),
        "{}",
        log_tail(&m)
    );
    proxy.clear();
    assert_eq!(fs::metadata(&p).unwrap().len(), 12);
    let mut back = String::new();
    reader.read_to_string(&mut back).unwrap();
    assert_eq!(back, "twelve bytes");
    drop(reader);
    assert_eq!(fs::read(&p).unwrap(), b"twelve bytes");
    m.unmount();
    let size = block_on(async {
        s3_client()
            .await
            .head_object()
            .bucket(&bucket)
            .key("log")
            .send()
            .await
            .unwrap()
            .content_length()
    });
    assert_eq!(size, Some(12), "the failed truncate reached the bucket later");
}

/// Work inside a directory while a rename moves its keys (slowed here: every copy's answer is
/// held back) waits for the move and then lands under the new name, as it would on a disk
/// where the rename is one step: an append to a file opened after the move began, a new file,
/// and an unlink. Before, the append went to the old key and was deleted with it, the new file
/// stayed under the old name (bringing the directory back), and the unlinked file came back
/// from its copy.
#[test]
fn work_inside_a_directory_being_renamed_lands_under_its_new_name() {
    let bucket = block_on(new_bucket("mv-busy"));
    let mut objects: Vec<(String, Vec<u8>)> =
        (0..40).map(|i| (format!("D/k{i:02}"), b"k".to_vec())).collect();
    objects.push(("D/log.txt".into(), b"old\n".to_vec()));
    objects.push(("D/sub/old.txt".into(), b"old".to_vec()));
    let refs: Vec<(&str, &[u8])> = objects.iter().map(|(k, v)| (k.as_str(), v.as_slice())).collect();
    put_objects(&bucket, &refs);
    let proxy = FaultProxy::start(&server().endpoint);
    let m = mount_via(&proxy, &bucket, &[]);
    let (d, e) = (m.path().join("D"), m.path().join("E"));
    assert_eq!(names_in(&d.join("sub")), ["old.txt"]);
    proxy.set(Fault::delay(Duration::from_millis(1500)).on(Match::copy_object()));
    let mover = {
        let (d, e) = (d.clone(), e.clone());
        thread::spawn(move || fs::rename(d, e))
    };
    assert!(
        proxy.wait_for(&Match::copy_object(), 1, Duration::from_secs(20)),
        "the rename copied nothing"
    );
    // While the keys move: open and write (no request waits), unlink (it waits), close (the
    // uploads wait).
    let mut log = fs::OpenOptions::new()
        .append(true)
        .open(d.join("log.txt"))
        .unwrap();
    log.write_all(b"appended\n").unwrap();
    let mut new = fs::File::create(d.join("new.txt")).unwrap();
    new.write_all(b"new").unwrap();
    let unlinker = {
        let old = d.join("sub/old.txt");
        thread::spawn(move || fs::remove_file(old))
    };
    assert_eq!(close_file(log), Outcome::Ok);
    assert_eq!(close_file(new), Outcome::Ok);
    unlinker.join().unwrap().expect("unlink");
    mover.join().unwrap().expect("rename");
    proxy.clear();
    let stored = block_on(async { list_keys(&s3_client().await, &bucket, "").await });
    assert!(
        stored.iter().all(|k| k.starts_with("E/")),
        "left under the old name: {stored:?}"
    );
    assert!(stored.contains(&"E/new.txt".to_string()), "{stored:?}");
    assert!(
        !stored.contains(&"E/sub/old.txt".to_string()),
        "the unlinked file came back"
    );
    assert_eq!(fs::read(e.join("log.txt")).unwrap(), b"old\nappended\n");
    assert_eq!(fs::read(e.join("new.txt")).unwrap(), b"new");
    assert!(!d.exists());
    m.unmount();
}
