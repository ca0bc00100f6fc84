//! Stress: 16 workers doing mixed create/write/append/read/rename/unlink/list/stat on one mount
//! for a bounded time (`ROSSFS_STRESS_SECS`, default 40). Each worker owns a directory and keeps
//! the expected content of every file it wrote; every read is checked byte for byte (length and
//! checksum), a watchdog fails the test if no worker makes progress for 30 s, and the daemon's
//! resident memory is sampled against a bound. At the end the bucket itself (read through the
//! S3 API) must hold exactly the expected files.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use futures::StreamExt;

const WORKERS: usize = 16;
/// No worker at all may stall this long.
const STALL_LIMIT: Duration = Duration::from_secs(30);
/// A single worker may not stall longer than this.
const WORKER_STALL_LIMIT: Duration = Duration::from_secs(60);
/// The daemon's resident memory must stay below this.
const RSS_LIMIT_KIB: u64 = 512 * 1024;

/// Small, fast PRNG (xorshift64*), one per worker.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            out.extend_from_slice(&self.next().to_le_bytes());
        }
        out.truncate(len);
        out
    }
}

/// FNV-1a 64: the checksum kept for every file.
fn checksum(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Expected {
    len: usize,
    sum: u64,
}

impl Expected {
    fn of(data: &[u8]) -> Self {
        Self {
            len: data.len(),
            sum: checksum(data),
        }
    }
}

#[derive(Default)]
struct Counts {
    ops: BTreeMap<&'static str, u64>,
    bytes_written: u64,
    bytes_read: u64,
}

struct Shared {
    stop: AtomicBool,
    failed: Mutex<Option<String>>,
    progress: Vec<AtomicU64>,
    started: Instant,
    total_ops: AtomicU64,
}

impl Shared {
    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn fail(&self, msg: String) {
        let mut f = self.failed.lock().unwrap_or_else(|p| p.into_inner());
        if f.is_none() {
            *f = Some(msg);
        }
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn size_for(rng: &mut Rng) -> usize {
    match rng.below(100) {
        0 => 5 * 1024 * 1024 + rng.below(1 << 20) as usize, // multipart (multipart_size=5)
        1..=10 => 256 * 1024 + rng.below(768 * 1024) as usize,
        11..=15 => 0,
        _ => rng.below(64 * 1024) as usize,
    }
}

fn read_all(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut f = fs::File::open(path)?;
    let mut out = Vec::new();
    f.read_to_end(&mut out)?;
    Ok(out)
}

/// One worker: random operations in its own directory until told to stop.
fn worker(id: usize, dir: PathBuf, shared: Arc<Shared>) -> (BTreeMap<String, Expected>, Counts) {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ ((id as u64 + 1) << 17) ^ std::process::id() as u64);
    let mut files: BTreeMap<String, Expected> = BTreeMap::new();
    let mut counts = Counts::default();
    let mut serial = 0u64;
    let ctx = |op: &str, name: &str| format!("worker {id}: {op} {name}");
    while !shared.stop.load(Ordering::SeqCst) {
        let names: Vec<String> = files.keys().cloned().collect();
        let pick = |rng: &mut Rng| names.get(rng.below(names.len() as u64) as usize).cloned();
        let roll = rng.below(100);
        let result: Result<&'static str, String> = (|| {
            match roll {
                // create a new file
                0..=19 => {
                    serial += 1;
                    let name = format!("f{serial}");
                    let len = size_for(&mut rng);
                    let data = rng.bytes(len);
                    fs::write(dir.join(&name), &data)
                        .map_err(|e| format!("{}: {e}", ctx("create", &name)))?;
                    counts.bytes_written += data.len() as u64;
                    files.insert(name, Expected::of(&data));
                    Ok("create")
                }
                // overwrite an existing file
                20..=29 => {
                    let Some(name) = pick(&mut rng) else {
                        return Ok("skip");
                    };
                    let len = size_for(&mut rng);
                    let data = rng.bytes(len);
                    fs::write(dir.join(&name), &data)
                        .map_err(|e| format!("{}: {e}", ctx("overwrite", &name)))?;
                    counts.bytes_written += data.len() as u64;
                    files.insert(name, Expected::of(&data));
                    Ok("overwrite")
                }
                // append to a small file (read, verify, append)
                30..=37 => {
                    let Some(name) = pick(&mut rng) else {
                        return Ok("skip");
                    };
                    let exp = files[&name];
                    if exp.len > 1 << 20 {
                        return Ok("skip");
                    }
                    let mut data =
                        read_all(&dir.join(&name)).map_err(|e| format!("{}: {e}", ctx("read", &name)))?;
                    if Expected::of(&data) != exp {
                        return Err(format!(
                            "{}: content is {} bytes (sum {:x}), expected {} bytes (sum {:x})",
                            ctx("read before append", &name),
                            data.len(),
                            checksum(&data),
                            exp.len,
                            exp.sum
                        ));
                    }
                    let len = 1 + rng.below(32 * 1024) as usize;
                    let extra = rng.bytes(len);
                    let mut f = fs::OpenOptions::new()
                        .append(true)
                        .open(dir.join(&name))
                        .map_err(|e| format!("{}: {e}", ctx("open append", &name)))?;
                    f.write_all(&extra)
                        .map_err(|e| format!("{}: {e}", ctx("append", &name)))?;
                    f.sync_all()
                        .map_err(|e| format!("{}: {e}", ctx("fsync", &name)))?;
                    drop(f);
                    data.extend_from_slice(&extra);
                    counts.bytes_written += extra.len() as u64;
                    files.insert(name, Expected::of(&data));
                    Ok("append")
                }
                // read and verify
                38..=64 => {
                    let Some(name) = pick(&mut rng) else {
                        return Ok("skip");
                    };
                    let data =
                        read_all(&dir.join(&name)).map_err(|e| format!("{}: {e}", ctx("read", &name)))?;
                    let exp = files[&name];
                    if Expected::of(&data) != exp {
                        return Err(format!(
                            "{}: read {} bytes (sum {:x}), expected {} bytes (sum {:x})",
                            ctx("read", &name),
                            data.len(),
                            checksum(&data),
                            exp.len,
                            exp.sum
                        ));
                    }
                    counts.bytes_read += data.len() as u64;
                    Ok("read")
                }
                // rename, to a new name or over an existing one
                65..=74 => {
                    let Some(from) = pick(&mut rng) else {
                        return Ok("skip");
                    };
                    let to = if rng.below(4) == 0 {
                        match pick(&mut rng) {
                            Some(t) if t != from => t,
                            _ => return Ok("skip"),
                        }
                    } else {
                        serial += 1;
                        format!("r{serial}")
                    };
                    fs::rename(dir.join(&from), dir.join(&to))
                        .map_err(|e| format!("{}: {e}", ctx("rename", &format!("{from} -> {to}"))))?;
                    let exp = files.remove(&from).expect("known file");
                    files.insert(to, exp);
                    Ok("rename")
                }
                // unlink
                75..=84 => {
                    let Some(name) = pick(&mut rng) else {
                        return Ok("skip");
                    };
                    fs::remove_file(dir.join(&name)).map_err(|e| format!("{}: {e}", ctx("unlink", &name)))?;
                    files.remove(&name);
                    Ok("unlink")
                }
                // list and compare
                85..=94 => {
                    let mut listed: Vec<String> = fs::read_dir(&dir)
                        .and_then(|d| {
                            d.map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
                                .collect()
                        })
                        .map_err(|e| format!("{}: {e}", ctx("list", "")))?;
                    listed.sort();
                    let expected: Vec<String> = files.keys().cloned().collect();
                    if listed != expected {
                        return Err(format!(
                            "{}: listed {listed:?}, expected {expected:?}",
                            ctx("list", "")
                        ));
                    }
                    Ok("list")
                }
                // stat and compare the size
                _ => {
                    let Some(name) = pick(&mut rng) else {
                        return Ok("skip");
                    };
                    let meta =
                        fs::metadata(dir.join(&name)).map_err(|e| format!("{}: {e}", ctx("stat", &name)))?;
                    if meta.len() as usize != files[&name].len {
                        return Err(format!(
                            "{}: size {} expected {}",
                            ctx("stat", &name),
                            meta.len(),
                            files[&name].len
                        ));
                    }
                    Ok("stat")
                }
            }
        })();
        match result {
            Ok(kind) => {
                *counts.ops.entry(kind).or_default() += 1;
                shared.total_ops.fetch_add(1, Ordering::Relaxed);
                shared.progress[id].store(shared.now_ms(), Ordering::SeqCst);
            }
            Err(msg) => {
                shared.fail(msg);
                break;
            }
        }
    }
    (files, counts)
}

fn vm_rss_kib(pid: i32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

#[test]
fn sixteen_workers_mixed_operations_every_byte_verified() {
    let secs: u64 = std::env::var("ROSSFS_STRESS_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40);
    let bucket = block_on(new_bucket("stress"));
    let m = Mount::mount(&bucket, &["multipart_size=5"]);
    let pid = *m.daemon_pids().first().expect("daemon pid");
    for i in 0..WORKERS {
        fs::create_dir(m.path().join(format!("w{i}"))).expect("worker dir");
    }
    let shared = Arc::new(Shared {
        stop: AtomicBool::new(false),
        failed: Mutex::new(None),
        progress: (0..WORKERS).map(|_| AtomicU64::new(0)).collect(),
        started: Instant::now(),
        total_ops: AtomicU64::new(0),
    });
    let handles: Vec<_> = (0..WORKERS)
        .map(|i| {
            let (dir, shared) = (m.path().join(format!("w{i}")), shared.clone());
            thread::Builder::new()
                .name(format!("stress-{i}"))
                .spawn(move || worker(i, dir, shared))
                .expect("spawn worker")
        })
        .collect();

    // Watchdog and memory sampling, on this thread.
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut peak_rss = 0u64;
    let mut rss_samples = 0u64;
    let mut max_worker_stall = Duration::ZERO;
    let mut last_total = 0u64;
    let mut last_progress = Instant::now();
    while !shared.stop.load(Ordering::SeqCst) {
        thread::sleep(Duration::from_millis(250));
        if let Some(rss) = vm_rss_kib(pid) {
            rss_samples += 1;
            peak_rss = peak_rss.max(rss);
            if rss > RSS_LIMIT_KIB {
                shared.fail(format!(
                    "daemon VmRSS {rss} KiB exceeds the bound of {RSS_LIMIT_KIB} KiB"
                ));
            }
        }
        let total = shared.total_ops.load(Ordering::Relaxed);
        if total != last_total {
            last_total = total;
            last_progress = Instant::now();
        } else if last_progress.elapsed() > STALL_LIMIT {
            shared.fail(format!(
                "deadlock? no worker made progress for {:?} ({total} operations so far)",
                last_progress.elapsed()
            ));
        }
        let now = shared.now_ms();
        for (i, p) in shared.progress.iter().enumerate() {
            let stall = Duration::from_millis(now.saturating_sub(p.load(Ordering::SeqCst)));
            max_worker_stall = max_worker_stall.max(stall);
            if stall > WORKER_STALL_LIMIT {
                shared.fail(format!("worker {i} made no progress for {stall:?}"));
            }
        }
        if Instant::now() >= deadline {
            shared.stop.store(true, Ordering::SeqCst);
        }
    }
    if shared.failed.lock().unwrap().is_some() {
        // A hung worker would block forever: kill the daemon so every pending call returns.
        let stuck = shared
            .failed
            .lock()
            .unwrap()
            .as_deref()
            .is_some_and(|f| f.contains("progress"));
        if stuck {
            // SAFETY: killing the daemon of our own mount.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
    let mut expected: Vec<BTreeMap<String, Expected>> = Vec::new();
    let mut totals = Counts::default();
    for h in handles {
        let (files, counts) = h.join().expect("worker thread panicked");
        expected.push(files);
        for (k, v) in counts.ops {
            *totals.ops.entry(k).or_default() += v;
        }
        totals.bytes_written += counts.bytes_written;
        totals.bytes_read += counts.bytes_read;
    }
    let elapsed = shared.started.elapsed();
    let total_ops: u64 = totals
        .ops
        .iter()
        .filter(|(k, _)| **k != "skip")
        .map(|(_, v)| v)
        .sum();
    eprintln!(
        "STRESS: {WORKERS} workers, {:.1} s, {total_ops} operations ({:.0}/s): {:?}; {} MiB written, {} MiB \
         read; daemon peak VmRSS {} MiB over {rss_samples} samples (bound {} MiB); longest single-worker \
         stall {:.1} s",
        elapsed.as_secs_f32(),
        total_ops as f64 / elapsed.as_secs_f64(),
        totals.ops,
        totals.bytes_written >> 20,
        totals.bytes_read >> 20,
        peak_rss / 1024,
        RSS_LIMIT_KIB / 1024,
        max_worker_stall.as_secs_f32(),
    );
    if let Some(msg) = shared.failed.lock().unwrap().clone() {
        panic!("stress failed: {msg}");
    }
    assert!(total_ops > 100, "suspiciously few operations: {total_ops}");

    // The bucket itself, after the unmount (everything was closed, so everything is stored).
    m.unmount();
    block_on(async {
        let client = s3_client().await;
        for (i, files) in expected.iter().enumerate() {
            let prefix = format!("w{i}/");
            let mut keys: Vec<String> = list_keys(&client, &bucket, &prefix)
                .await
                .into_iter()
                .filter(|k| *k != prefix)
                .collect();
            keys.sort();
            let want: Vec<String> = files.keys().map(|n| format!("{prefix}{n}")).collect();
            assert_eq!(keys, want, "keys in the bucket under {prefix}");
            futures::stream::iter(files.iter())
                .for_each_concurrent(16, |(name, exp)| {
                    let (client, bucket, key) = (client.clone(), bucket.clone(), format!("{prefix}{name}"));
                    async move {
                        let data = get_object(&client, &bucket, &key).await;
                        assert_eq!(Expected::of(&data), *exp, "object {key} in the bucket");
                    }
                })
                .await;
        }
        let uploads = client
            .list_multipart_uploads()
            .bucket(&bucket)
            .send()
            .await
            .unwrap();
        assert!(
            uploads.uploads().is_empty(),
            "multipart uploads left behind: {:?}",
            uploads.uploads()
        );
    });
}
