//! W1-W8, each once through a mount and once with the raw client. Every function runs one
//! repetition for one peer from a fresh mount (page cache dropped), records its metrics and the
//! daemon's CPU/RSS, verifies what it read or wrote, and removes what it created.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::os::unix::io::IntoRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::data::{self, Checker};
use super::mounts::{run_counted, Mounted, Peer, Usage};
use super::Ctx;

const MIB: f64 = 1024.0 * 1024.0;
pub const SEED_W1: u64 = 1;
pub const SEED_BIG: u64 = 100;
pub const SEED_SMALL: u64 = 200;
pub const SEED_W5: u64 = 5_000_000;
/// Part size and parts in flight of rossfs's uploads; the raw client uses the same.
pub const PART: u64 = 10 * 1024 * 1024;
pub const PARTS_INFLIGHT: usize = 5;
/// Ranged GETs rossfs keeps in flight when prefetching.
pub const READ_INFLIGHT: usize = 5;

pub fn big_key(ctx: &Ctx, i: usize) -> String {
    format!("{}/data/big/b{i}", ctx.run)
}

pub fn small_key(ctx: &Ctx, i: usize) -> String {
    format!("{}/data/small/s{i}", ctx.run)
}

fn io<T>(what: impl std::fmt::Display, r: std::io::Result<T>) -> Result<T, String> {
    r.map_err(|e| format!("{what}: {e}"))
}

/// Close `f` and report the error close() returns (an upload failure on some filesystems).
fn close(f: File, what: &Path) -> Result<(), String> {
    let fd = f.into_raw_fd();
    // SAFETY: we own fd.
    if unsafe { libc::close(fd) } != 0 {
        return Err(format!(
            "close {}: {}",
            what.display(),
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

fn in_mount(m: &Mounted, key_prefix: &str) -> PathBuf {
    m.root().join(key_prefix.trim_end_matches('/'))
}

/// Read `path` front to back with 1 MiB reads, checking against stream `seed`.
fn read_checked(path: &Path, seed: u64, size: u64) -> Result<(), String> {
    let mut f = io(path.display(), File::open(path))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut check = Checker::new(seed);
    loop {
        let n = io(path.display(), f.read(&mut buf))?;
        if n == 0 {
            break;
        }
        check
            .update(&buf[..n])
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    if check.pos() != size {
        return Err(format!(
            "{}: read {} of {size} bytes",
            path.display(),
            check.pos()
        ));
    }
    Ok(())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

// ------------------------------------------------------------------------------------------
// W1 sequential write
// ------------------------------------------------------------------------------------------

pub fn w1(ctx: &mut Ctx, peer: Peer, rep: usize) -> Result<(), String> {
    let size = ctx.sz.big;
    let dir = ctx.dir("w1", peer, rep);
    let key = format!("{dir}big.bin");
    let label = format!("seq write {} (durable)", ctx.sz.big_label());
    let (closed, durable) = if peer == Peer::Raw {
        ctx.cold_start()?;
        let t = Instant::now();
        ctx.block(ctx.s3.upload_generated(&key, SEED_W1, size, PART, PARTS_INFLIGHT))?;
        (t.elapsed(), t.elapsed())
    } else {
        ctx.block(ctx.s3.put(&dir, Vec::new(), None))?;
        let m = ctx.mount(peer)?;
        let u0 = m.usage();
        let path = in_mount(&m, &dir).join("big.bin");
        let t = Instant::now();
        let mut f = io(path.display(), File::create(&path))?;
        let mut buf = vec![0u8; 1 << 20];
        let mut off = 0u64;
        while off < size {
            let n = (size - off).min(buf.len() as u64) as usize;
            data::fill(SEED_W1, off, &mut buf[..n]);
            io(path.display(), f.write_all(&buf[..n]))?;
            off += n as u64;
        }
        close(f, &path)?;
        let closed = t.elapsed();
        ctx.block(ctx.s3.wait_size(&key, size, ctx.timeout))?;
        let durable = t.elapsed();
        ctx.usage("W1", peer, &m, u0);
        m.unmount()?;
        (closed, durable)
    };
    ctx.block(ctx.s3.verify(&key, SEED_W1, size))?;
    ctx.rec(
        "W1",
        &label,
        "MiB/s",
        true,
        peer,
        size as f64 / MIB / durable.as_secs_f64(),
    );
    ctx.rec(
        "W1",
        "  same, clock stopped at close() (not durable)",
        "MiB/s",
        true,
        peer,
        size as f64 / MIB / closed.as_secs_f64(),
    );
    ctx.block(ctx.s3.delete_prefix(&dir))
}

// ------------------------------------------------------------------------------------------
// W2 sequential read, W8 four concurrent readers
// ------------------------------------------------------------------------------------------

pub fn w2(ctx: &mut Ctx, peer: Peer, _rep: usize) -> Result<(), String> {
    let size = ctx.sz.big;
    let key = big_key(ctx, 0);
    let secs = if peer == Peer::Raw {
        ctx.cold_start()?;
        let t = Instant::now();
        ctx.block(ctx.s3.read_prefetching(&key, SEED_BIG, size, READ_INFLIGHT))?;
        t.elapsed().as_secs_f64()
    } else {
        let m = ctx.mount(peer)?;
        let u0 = m.usage();
        let path = m.root().join(&key);
        let t = Instant::now();
        read_checked(&path, SEED_BIG, size)?;
        let secs = t.elapsed().as_secs_f64();
        ctx.usage("W2", peer, &m, u0);
        m.unmount()?;
        secs
    };
    let label = format!("seq read {}", ctx.sz.big_label());
    ctx.rec("W2", &label, "MiB/s", true, peer, size as f64 / MIB / secs);
    Ok(())
}

pub fn w8(ctx: &mut Ctx, peer: Peer, _rep: usize) -> Result<(), String> {
    let size = ctx.sz.big;
    let keys: Vec<String> = (0..4).map(|i| big_key(ctx, i)).collect();
    let secs = if peer == Peer::Raw {
        ctx.cold_start()?;
        let s3 = &ctx.s3;
        let t = Instant::now();
        ctx.block(futures::future::try_join_all(keys.iter().enumerate().map(
            |(i, k)| s3.read_prefetching(k, SEED_BIG + i as u64, size, READ_INFLIGHT),
        )))?;
        t.elapsed().as_secs_f64()
    } else {
        let m = ctx.mount(peer)?;
        let u0 = m.usage();
        let paths: Vec<PathBuf> = keys.iter().map(|k| m.root().join(k)).collect();
        let t = Instant::now();
        let results: Vec<Result<(), String>> = std::thread::scope(|s| {
            let handles: Vec<_> = paths
                .iter()
                .enumerate()
                .map(|(i, p)| s.spawn(move || read_checked(p, SEED_BIG + i as u64, size)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|_| Err("reader panicked".into())))
                .collect()
        });
        let secs = t.elapsed().as_secs_f64();
        results.into_iter().collect::<Result<Vec<()>, String>>()?;
        ctx.usage("W8", peer, &m, u0);
        m.unmount()?;
        secs
    };
    let label = format!("4 concurrent seq readers of {} each, total", ctx.sz.big_label());
    ctx.rec("W8", &label, "MiB/s", true, peer, 4.0 * size as f64 / MIB / secs);
    Ok(())
}

// ------------------------------------------------------------------------------------------
// W3 random reads
// ------------------------------------------------------------------------------------------

pub fn w3(ctx: &mut Ctx, peer: Peer, _rep: usize) -> Result<(), String> {
    let size = ctx.sz.big;
    let key = big_key(ctx, 0);
    for (len, ops) in [(4096u64, ctx.sz.w3_4k), (256 * 1024, ctx.sz.w3_256k)] {
        // A fresh mount per read size, so the first phase cannot warm the second; the open is
        // inside the total (some filesystems download the whole object when it is opened).
        let m = if peer == Peer::Raw {
            ctx.cold_start()?;
            None
        } else {
            Some(ctx.mount(peer)?)
        };
        let u0 = m.as_ref().map(|m| m.usage());
        let mut rng = StdRng::seed_from_u64(len);
        let mut lat = Vec::with_capacity(ops);
        let mut buf = vec![0u8; len as usize];
        let start = Instant::now();
        let file = match &m {
            Some(m) => Some(io(&key, File::open(m.root().join(&key)))?),
            None => None,
        };
        for _ in 0..ops {
            let off = rng.random_range(0..(size - len) / 4096) * 4096;
            let t = Instant::now();
            match &file {
                Some(f) => io(&key, f.read_exact_at(&mut buf, off))?,
                None => buf.copy_from_slice(&ctx.block(ctx.s3.get_range(&key, off, len))?),
            }
            lat.push(t.elapsed().as_secs_f64() * 1000.0);
            // Checking costs microseconds; it is outside the per-op latency.
            Checker::at(SEED_BIG, off)
                .update(&buf)
                .map_err(|e| format!("{key}: {e}"))?;
        }
        let total = start.elapsed().as_secs_f64();
        drop(file);
        if let (Some(m), Some(u0)) = (m, u0) {
            ctx.usage("W3", peer, &m, u0);
            m.unmount()?;
        }
        lat.sort_by(|a, b| a.total_cmp(b));
        let name = if len == 4096 { "4 KiB" } else { "256 KiB" };
        let label = format!("random {name} reads ({ops} ops, open included)");
        ctx.rec("W3", &label, "ops/s", true, peer, ops as f64 / total);
        ctx.rec(
            "W3",
            &format!("  {name} p50 latency"),
            "ms",
            false,
            peer,
            percentile(&lat, 0.5),
        );
        ctx.rec(
            "W3",
            &format!("  {name} p99 latency"),
            "ms",
            false,
            peer,
            percentile(&lat, 0.99),
        );
    }
    Ok(())
}

// ------------------------------------------------------------------------------------------
// W4 time to first byte
// ------------------------------------------------------------------------------------------

fn fs_first_byte(path: &Path, seed: u64) -> Result<Duration, String> {
    let t = Instant::now();
    let mut f = io(path.display(), File::open(path))?;
    let mut buf = vec![0u8; 64 * 1024];
    let n = io(path.display(), f.read(&mut buf))?;
    let elapsed = t.elapsed();
    if n == 0 {
        return Err(format!("{}: empty read", path.display()));
    }
    Checker::new(seed)
        .update(&buf[..n])
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(elapsed)
}

pub fn w4(ctx: &mut Ctx, peer: Peer, _rep: usize) -> Result<(), String> {
    let big = big_key(ctx, 0);
    let smalls: Vec<String> = (0..ctx.sz.w4_small).map(|i| small_key(ctx, i)).collect();
    let (large, mut small) = if peer == Peer::Raw {
        ctx.cold_start()?;
        let large = ctx.block(ctx.s3.first_byte(&big))?;
        let mut small = Vec::new();
        for k in &smalls {
            small.push(ctx.block(ctx.s3.first_byte(k))?.as_secs_f64() * 1000.0);
        }
        (large, small)
    } else {
        let m = ctx.mount(peer)?;
        let u0 = m.usage();
        let large = fs_first_byte(&m.root().join(&big), SEED_BIG)?;
        let mut small = Vec::new();
        for (i, k) in smalls.iter().enumerate() {
            let seed = SEED_SMALL + i as u64;
            small.push(fs_first_byte(&m.root().join(k), seed)?.as_secs_f64() * 1000.0);
        }
        ctx.usage("W4", peer, &m, u0);
        m.unmount()?;
        (large, small)
    };
    small.sort_by(|a, b| a.total_cmp(b));
    let label = format!("first byte, {} object (open+read)", ctx.sz.big_label());
    ctx.rec("W4", &label, "ms", false, peer, large.as_secs_f64() * 1000.0);
    let label = format!("first byte, 1 KiB object (median of {})", small.len());
    ctx.rec("W4", &label, "ms", false, peer, percentile(&small, 0.5));
    Ok(())
}

// ------------------------------------------------------------------------------------------
// W5 small files
// ------------------------------------------------------------------------------------------

pub fn w5(ctx: &mut Ctx, peer: Peer, rep: usize) -> Result<(), String> {
    const SIZE: u64 = 4096;
    let n = ctx.sz.w5_files;
    let dir = ctx.dir("w5", peer, rep);
    let names: Vec<String> = (0..n).map(|i| format!("f{i:05}")).collect();
    let expected: HashMap<String, u64> = names.iter().map(|f| (format!("{dir}{f}"), SIZE)).collect();
    let seed = |i: usize| SEED_W5 + i as u64;
    let (create, create_closed, read, delete);
    if peer == Peer::Raw {
        ctx.cold_start()?;
        let t = Instant::now();
        for (i, f) in names.iter().enumerate() {
            ctx.block(ctx.s3.put(
                &format!("{dir}{f}"),
                data::generate(seed(i), 0, SIZE as usize),
                None,
            ))?;
        }
        create = t.elapsed();
        create_closed = create;
        ctx.cold_start()?;
        let t = Instant::now();
        for (i, f) in names.iter().enumerate() {
            let body = ctx.block(ctx.s3.get(&format!("{dir}{f}")))?;
            if body.len() as u64 != SIZE {
                return Err(format!("{dir}{f}: {} bytes", body.len()));
            }
            Checker::new(seed(i)).update(&body)?;
        }
        read = t.elapsed();
        let t = Instant::now();
        for f in &names {
            ctx.block(ctx.s3.delete(&format!("{dir}{f}")))?;
        }
        delete = t.elapsed();
    } else {
        ctx.block(ctx.s3.put(&dir, Vec::new(), None))?;
        let m = ctx.mount(peer)?;
        let u0 = m.usage();
        let base = in_mount(&m, &dir);
        let t = Instant::now();
        for (i, f) in names.iter().enumerate() {
            let path = base.join(f);
            let mut file = io(path.display(), File::create(&path))?;
            io(
                path.display(),
                file.write_all(&data::generate(seed(i), 0, SIZE as usize)),
            )?;
            close(file, &path)?;
        }
        create_closed = t.elapsed();
        ctx.block(ctx.s3.wait_keys(&dir, &expected, ctx.timeout))?;
        create = t.elapsed();
        ctx.usage("W5", peer, &m, u0);
        m.unmount()?;

        let m = ctx.mount(peer)?;
        let u0 = m.usage();
        let base = in_mount(&m, &dir);
        let t = Instant::now();
        for (i, f) in names.iter().enumerate() {
            read_checked(&base.join(f), seed(i), SIZE)?;
        }
        read = t.elapsed();
        let t = Instant::now();
        for f in &names {
            let path = base.join(f);
            io(path.display(), fs::remove_file(&path))?;
        }
        ctx.block(ctx.s3.wait_gone(&dir, Some(&expected), ctx.timeout))?;
        delete = t.elapsed();
        ctx.usage("W5", peer, &m, u0);
        m.unmount()?;
    }
    let rate = |d: Duration| n as f64 / d.as_secs_f64();
    ctx.rec(
        "W5",
        &format!("create {n} x 4 KiB (durable)"),
        "files/s",
        true,
        peer,
        rate(create),
    );
    ctx.rec(
        "W5",
        "  same, clock stopped at last close() (not durable)",
        "files/s",
        true,
        peer,
        rate(create_closed),
    );
    ctx.rec(
        "W5",
        &format!("read {n} x 4 KiB"),
        "files/s",
        true,
        peer,
        rate(read),
    );
    ctx.rec(
        "W5",
        &format!("delete {n} files (durable)"),
        "files/s",
        true,
        peer,
        rate(delete),
    );
    ctx.block(ctx.s3.delete_prefix(&dir))
}

// ------------------------------------------------------------------------------------------
// W6 listings
// ------------------------------------------------------------------------------------------

pub fn w6_dir(ctx: &Ctx, n: usize) -> String {
    format!("{}/w6/n{n}/", ctx.run)
}

pub fn w6_tree(ctx: &Ctx) -> String {
    format!("{}/w6/tree/", ctx.run)
}

/// Directory keys (with trailing `/`) and file keys of the `find` tree, relative to its root.
pub fn tree_keys(levels: [usize; 3], files: usize) -> (Vec<String>, Vec<String>) {
    let (mut dirs, mut keys) = (Vec::new(), Vec::new());
    for a in 0..levels[0] {
        dirs.push(format!("a{a}/"));
        for b in 0..levels[1] {
            dirs.push(format!("a{a}/b{b}/"));
            for c in 0..levels[2] {
                dirs.push(format!("a{a}/b{b}/c{c}/"));
                for f in 0..files {
                    keys.push(format!("a{a}/b{b}/c{c}/f{f}"));
                }
            }
        }
    }
    (dirs, keys)
}

/// Name of the `i`th object of a W6 directory.
pub fn w6_name(i: usize) -> String {
    format!("f{i:06}")
}

/// The s3fs-style attributes a W6 object carries in its metadata.
pub struct W6Owner {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
}

/// Every tenth W6 object carries mode/uid/gid/mtime metadata; the others carry none.
pub fn w6_owner(i: usize) -> Option<W6Owner> {
    i.is_multiple_of(10).then_some(W6Owner {
        mode: 0o100644,
        uid: 1000,
        gid: 1000,
        mtime: 1_700_000_000,
    })
}

fn ls(args: &[&str], path: &Path, timeout: Duration) -> Result<(f64, u64), String> {
    let mut cmd = Command::new("ls");
    cmd.args(args).arg(path).env("LC_ALL", "C");
    let out = run_counted(cmd, timeout)?;
    Ok((out.elapsed.as_secs_f64(), out.lines))
}

/// Seconds of an `ls -l` of `path`, checked to print `n` entries (plus the "total" line).
fn ls_l(what: &str, path: &Path, n: usize, timeout: Duration) -> Result<f64, String> {
    let (secs, lines) = ls(&["-l"], path, timeout)?;
    if lines != n as u64 + 1 {
        return Err(format!(
            "{what} {}: {lines} lines, expected {}",
            path.display(),
            n + 1
        ));
    }
    Ok(secs)
}

/// A warm `ls -l` of `n` empty files named, owned and dated like the objects of the W6
/// directory `key_prefix`, on a ramfs mounted for it: seconds of the second of two runs, or
/// `None` with a warning where ramfs cannot be mounted (a run without root). ramfs
/// keeps everything in the kernel's caches and, like rossfs, has no ACLs, so `ls` makes the
/// same system calls (tmpfs would add two xattr probes per file). The files sit at the same
/// depth below the same kind of path as a mount's, so the path walk costs the same.
fn local_warm_ls(key_prefix: &str, n: usize, timeout: Duration) -> Result<Option<f64>, String> {
    let scratch = super::interrupt::scratch_dir("fsbench-ramfs-")?;
    let mnt = scratch.path().join("mnt");
    io(format!("mkdir {}", mnt.display()), fs::create_dir(&mnt))?;
    let mounted = Command::new("mount")
        .args(["-t", "ramfs", "-o", "mode=0755", "fsbench-floor"])
        .arg(&mnt)
        .status();
    if !matches!(mounted, Ok(s) if s.success()) {
        eprintln!(
            "fsbench: warning: mount -t ramfs {} failed ({mounted:?}): no floor for the warm ls -l",
            mnt.display()
        );
        return Ok(None);
    }
    let dir = mnt.join(key_prefix.trim_end_matches('/'));
    let result = (|| {
        io(format!("mkdir {}", dir.display()), fs::create_dir_all(&dir))?;
        for i in 0..n {
            let path = dir.join(w6_name(i));
            let file = io(format!("create {}", path.display()), File::create(&path))?;
            if let Some(o) = w6_owner(i) {
                use std::os::unix::fs::PermissionsExt;
                let what = format!("set the attributes of {}", path.display());
                let mtime = std::time::UNIX_EPOCH + Duration::from_secs(o.mtime as u64);
                io(&what, file.set_modified(mtime))?;
                io(&what, file.set_permissions(fs::Permissions::from_mode(o.mode)))?;
                io(&what, std::os::unix::fs::fchown(&file, Some(o.uid), Some(o.gid)))?;
            }
        }
        ls_l("ls -l", &dir, n, timeout)?;
        ls_l("warm ls -l", &dir, n, timeout)
    })();
    match Command::new("umount").arg(&mnt).status() {
        Ok(s) if s.success() => result.map(Some),
        other => Err(format!("umount {}: {other:?}", mnt.display())),
    }
}

pub fn w6(ctx: &mut Ctx, peer: Peer, _rep: usize) -> Result<(), String> {
    let sizes = ctx.sz.w6.clone();
    let cmd_timeout = ctx.timeout;
    for &n in &sizes {
        let dir = w6_dir(ctx, n);
        let (cold, warm) = if peer == Peer::Raw {
            ctx.cold_start()?;
            let t = Instant::now();
            let (objs, _) = ctx.block(ctx.s3.list(&dir, Some("/")))?;
            let cold = t.elapsed().as_secs_f64();
            let count = objs.iter().filter(|o| o.key != dir).count();
            if count != n {
                return Err(format!("LIST {dir}: {count} objects, expected {n}"));
            }
            // A client with no filesystem has no warm listing to compare with: its second LIST
            // costs what the first did. The floor of a warm `ls -l` is the same `ls -l` on an
            // in-memory local filesystem, where no request is made at all.
            (cold, local_warm_ls(&dir, n, cmd_timeout)?)
        } else {
            let m = ctx.mount(peer)?;
            let u0 = m.usage();
            let path = in_mount(&m, &dir);
            let cold = ls_l("ls -l", &path, n, cmd_timeout)?;
            let warm = ls_l("warm ls -l", &path, n, cmd_timeout)?;
            ctx.usage("W6", peer, &m, u0);
            m.unmount()?;
            (cold, Some(warm))
        };
        ctx.rec(
            "W6",
            &format!("ls -l of {n} entries, cold"),
            "s",
            false,
            peer,
            cold,
        );
        if let Some(warm) = warm {
            ctx.rec(
                "W6",
                &format!("ls -l of {n} entries, warm"),
                "s",
                false,
                peer,
                warm,
            );
        }
    }
    let n = *sizes.iter().max().expect("at least one W6 size");
    let dir = w6_dir(ctx, n);
    let secs = if peer == Peer::Raw {
        ctx.cold_start()?;
        let t = Instant::now();
        ctx.block(ctx.s3.list(&dir, Some("/")))?;
        t.elapsed().as_secs_f64()
    } else {
        let m = ctx.mount(peer)?;
        let u0 = m.usage();
        let (secs, lines) = ls(&["-f"], &in_mount(&m, &dir), cmd_timeout)?;
        if lines != n as u64 + 2 {
            return Err(format!("ls -f: {lines} lines, expected {}", n + 2));
        }
        ctx.usage("W6", peer, &m, u0);
        m.unmount()?;
        secs
    };
    ctx.rec(
        "W6",
        &format!("ls -f of {n} entries, cold"),
        "s",
        false,
        peer,
        secs,
    );

    let tree = w6_tree(ctx);
    let (dirs, files) = tree_keys(ctx.sz.tree, ctx.sz.tree_files);
    let entries = 1 + dirs.len() + files.len();
    let secs = if peer == Peer::Raw {
        ctx.cold_start()?;
        let t = Instant::now();
        let (objs, _) = ctx.block(ctx.s3.list(&tree, None))?;
        if objs.len() != entries {
            return Err(format!("LIST {tree}: {} keys, expected {entries}", objs.len()));
        }
        t.elapsed().as_secs_f64()
    } else {
        let m = ctx.mount(peer)?;
        let u0 = m.usage();
        let mut cmd = Command::new("find");
        cmd.arg(in_mount(&m, &tree));
        let out = run_counted(cmd, cmd_timeout)?;
        if out.lines != entries as u64 {
            return Err(format!("find: {} entries, expected {entries}", out.lines));
        }
        ctx.usage("W6", peer, &m, u0);
        m.unmount()?;
        out.elapsed.as_secs_f64()
    };
    let label = format!("find over a 3-level tree ({entries} entries), cold");
    ctx.rec("W6", &label, "s", false, peer, secs);
    Ok(())
}

// ------------------------------------------------------------------------------------------
// W7 untar, tar -c, rm -rf
// ------------------------------------------------------------------------------------------

pub fn w7(ctx: &mut Ctx, peer: Peer, rep: usize) -> Result<(), String> {
    let prep = ctx.w7.as_ref().ok_or("W7 tree not prepared")?;
    let (tarball, local_root, tree) = (prep.tarball.clone(), prep.root.clone(), prep.tree.clone());
    let dir = ctx.dir("w7", peer, rep);
    let src = format!("{dir}src/");
    let expected: HashMap<String, u64> = tree
        .files
        .iter()
        .map(|f| (format!("{src}{}", f.rel), f.size))
        .collect();
    let total = tree.total_bytes();
    let n = tree.files.len();
    let (untar, untar_exit, tar_c, rm);
    if peer == Peer::Raw {
        ctx.cold_start()?;
        // The files are read from local disk: bring them back into the page cache, as the
        // mounts get the tarball.
        for f in &tree.files {
            super::s3::read_local(&local_root.join(&f.rel))?;
        }
        let t = Instant::now();
        ctx.block(ctx.s3.put(&src, Vec::new(), None))?;
        for d in &tree.dirs {
            ctx.block(ctx.s3.put(&format!("{src}{d}/"), Vec::new(), None))?;
        }
        for f in &tree.files {
            let body = super::s3::read_local(&local_root.join(&f.rel))?;
            ctx.block(ctx.s3.put(&format!("{src}{}", f.rel), body, None))?;
        }
        untar = t.elapsed();
        untar_exit = untar;
        ctx.cold_start()?;
        let t = Instant::now();
        let (objs, _) = ctx.block(ctx.s3.list(&src, None))?;
        let mut bytes = 0;
        for o in objs.iter().filter(|o| !o.key.ends_with('/')) {
            bytes += ctx.block(ctx.s3.get(&o.key))?.len() as u64;
        }
        tar_c = t.elapsed();
        if bytes != total {
            return Err(format!("raw read {bytes} bytes of the tree, expected {total}"));
        }
        let t = Instant::now();
        let (objs, _) = ctx.block(ctx.s3.list(&src, None))?;
        for o in &objs {
            ctx.block(ctx.s3.delete(&o.key))?;
        }
        rm = t.elapsed();
    } else {
        ctx.block(ctx.s3.put(&dir, Vec::new(), None))?;
        let m = ctx.mount(peer)?;
        // The tarball is read from local disk: bring it back into the page cache.
        io(tarball.display(), fs::read(&tarball))?;
        let u0 = m.usage();
        let target = in_mount(&m, &dir);
        let mut cmd = Command::new("tar");
        cmd.arg("-xf").arg(&tarball).arg("-C").arg(&target);
        let t = Instant::now();
        run_counted(cmd, ctx.timeout)?;
        untar_exit = t.elapsed();
        ctx.block(ctx.s3.wait_keys(&src, &expected, ctx.timeout))?;
        untar = t.elapsed();
        ctx.usage("W7", peer, &m, u0);
        m.unmount()?;

        let m = ctx.mount(peer)?;
        let u0 = m.usage();
        let target = in_mount(&m, &dir);
        // To a pipe, not /dev/null: GNU tar skips reading files when writing to /dev/null.
        let mut cmd = Command::new("tar");
        cmd.arg("-cf").arg("-").arg("-C").arg(&target).arg("src");
        let out = run_counted(cmd, ctx.timeout)?;
        tar_c = out.elapsed;
        if out.bytes < total {
            return Err(format!(
                "tar -c produced {} bytes, less than the {total} of data",
                out.bytes
            ));
        }
        let mut cmd = Command::new("rm");
        cmd.arg("-rf").arg(target.join("src"));
        let t = Instant::now();
        run_counted(cmd, ctx.timeout)?;
        ctx.block(ctx.s3.wait_gone(&src, None, ctx.timeout))?;
        rm = t.elapsed();
        ctx.usage("W7", peer, &m, u0);
        m.unmount()?;
    }
    let mb = total as f64 / 1e6;
    ctx.rec(
        "W7",
        &format!("untar {n} files, {mb:.0} MB (durable)"),
        "s",
        false,
        peer,
        untar.as_secs_f64(),
    );
    ctx.rec(
        "W7",
        "  same, clock stopped when tar exited (not durable)",
        "s",
        false,
        peer,
        untar_exit.as_secs_f64(),
    );
    ctx.rec(
        "W7",
        "tar -c of the tree to a pipe, cold",
        "s",
        false,
        peer,
        tar_c.as_secs_f64(),
    );
    ctx.rec(
        "W7",
        "rm -rf of the tree (durable)",
        "s",
        false,
        peer,
        rm.as_secs_f64(),
    );
    ctx.block(ctx.s3.delete_prefix(&dir))
}

/// Local copy of the W7 tree and its tarball.
pub struct W7Prep {
    pub _dir: tempfile::TempDir,
    pub root: PathBuf,
    pub tarball: PathBuf,
    pub tree: data::Tree,
}

pub fn prepare_w7(files: usize, bytes: u64) -> Result<W7Prep, String> {
    let dir = super::interrupt::scratch_dir("fsbench-w7-")?;
    let tree = data::Tree::generate(files, bytes, 7_000_000);
    let root = dir.path().join("src");
    tree.write_to(&root)?;
    let tarball = dir.path().join("tree.tar");
    let mut cmd = Command::new("tar");
    cmd.arg("-cf").arg(&tarball).arg("-C").arg(dir.path()).arg("src");
    run_counted(cmd, Duration::from_secs(600))?;
    Ok(W7Prep {
        _dir: dir,
        root,
        tarball,
        tree,
    })
}

/// Usage of `m` since `u0`, with the peak RSS so far.
pub fn usage_since(m: &Mounted, u0: Usage) -> Usage {
    let now = m.usage();
    Usage {
        cpu: now.cpu - u0.cpu,
        hwm_kib: now.hwm_kib,
    }
}
