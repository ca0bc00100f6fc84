//! rossfs against s3fs, rclone and the raw S3 client, on the same server and bucket in one run.
//!
//! ```sh
//! cargo build --release --bin rossfs && cargo bench --bench fsbench -- [OPTIONS]
//! cargo bench --bench fsbench -- --smoke          # every workload at tiny sizes, < 1 min
//! ```
//!
//! See `benches/README.md` for the workloads, the fairness rules (fresh mount per workload,
//! page cache dropped, writes timed until durable in the bucket, content verified) and the
//! options. The entry point is [`run`], shared by the bench binary and `tests/bench_smoke.rs`.

mod data;
pub mod interrupt;
mod mounts;
mod report;
mod s3;
mod workloads;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use clap::Parser;

use mounts::{MountConfig, Mounted, Peer, Usage};
use report::Results;
use s3::{Endpoint, S3};

const WORKLOADS: [&str; 8] = ["W1", "W2", "W3", "W4", "W5", "W6", "W7", "W8"];

const DEFAULT_S3FS_OPTS: &str =
    "parallel_count=5,multipart_size=10,max_stat_cache_size=200000,stat_cache_expire=60";
const DEFAULT_RCLONE_ARGS: &str = "--vfs-cache-mode writes --vfs-write-back 0s --s3-chunk-size 10M \
     --s3-upload-concurrency 5 --dir-cache-time 60s --attr-timeout 60s --use-server-modtime \
     --s3-disable-checksum";

#[derive(Parser, Debug)]
#[command(
    name = "fsbench",
    about = "Benchmark rossfs against s3fs, rclone and the raw S3 client on one S3 server"
)]
pub struct Args {
    /// Every workload at tiny sizes, one repetition, rossfs and raw only (unless --peers);
    /// exits non-zero on any failure.
    #[arg(long)]
    smoke: bool,
    /// Workloads to run, e.g. W1,W5 (default: all).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Repetitions of each workload (default 3, smoke 1).
    #[arg(long)]
    reps: Option<usize>,
    /// Repetitions for single workloads, overriding --reps, e.g. W5=1,W7=1.
    #[arg(long, value_delimiter = ',')]
    reps_for: Vec<String>,
    /// Contenders (default rossfs,s3fs,rclone,raw; smoke rossfs,raw).
    #[arg(long, value_delimiter = ',')]
    peers: Vec<String>,
    /// S3 endpoint of an existing server (env FSBENCH_ENDPOINT); default: start a local Garage.
    #[arg(long)]
    endpoint: Option<String>,
    /// Access key for --endpoint (env FSBENCH_ACCESS_KEY, else AWS_ACCESS_KEY_ID).
    #[arg(long)]
    access_key: Option<String>,
    /// Secret key for --endpoint (env FSBENCH_SECRET_KEY, else AWS_SECRET_ACCESS_KEY).
    #[arg(long)]
    secret_key: Option<String>,
    /// Signing region (env FSBENCH_REGION; default us-east-1, Garage: garage).
    #[arg(long)]
    region: Option<String>,
    /// Existing bucket to use (env FSBENCH_BUCKET); all keys go under a fresh run prefix that
    /// is removed afterwards. Default: create a bucket.
    #[arg(long)]
    bucket: Option<String>,
    /// rossfs binary (default target/release/rossfs, built if missing).
    #[arg(long)]
    rossfs_bin: Option<PathBuf>,
    /// Markdown report (default benches/results/<date>.md, or <date>-smoke.md).
    #[arg(long)]
    output: Option<PathBuf>,
    /// W6 directory sizes (default 1000,10000,100000; smoke 200).
    #[arg(long, value_delimiter = ',')]
    w6_sizes: Vec<usize>,
    /// Size of the large files of W1-W4 and W8 in MiB (default 1024; smoke 8).
    #[arg(long)]
    big_mib: Option<u64>,
    /// Extra -o options for rossfs (default: none, the documented defaults).
    #[arg(long, default_value = "")]
    rossfs_opts: String,
    /// Extra -o options for s3fs.
    #[arg(long, default_value = DEFAULT_S3FS_OPTS)]
    s3fs_opts: String,
    /// Extra arguments for `rclone mount`, space-separated.
    #[arg(long, default_value = DEFAULT_RCLONE_ARGS)]
    rclone_args: String,
    /// Do not drop the page cache before each workload (for non-root runs; unfair).
    #[arg(long)]
    no_drop_caches: bool,
    /// Seconds a write may take to become durable, or a command to finish (default 900).
    #[arg(long, default_value_t = 900)]
    timeout: u64,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

/// Sizes of one run.
#[derive(Clone, Debug)]
pub struct Sizes {
    pub big: u64,
    pub w3_4k: usize,
    pub w3_256k: usize,
    pub w4_small: usize,
    pub w5_files: usize,
    pub w6: Vec<usize>,
    pub tree: [usize; 3],
    pub tree_files: usize,
    pub w7_files: usize,
    pub w7_bytes: u64,
}

impl Sizes {
    fn full() -> Sizes {
        Sizes {
            big: 1 << 30,
            w3_4k: 300,
            w3_256k: 150,
            w4_small: 5,
            w5_files: 1000,
            w6: vec![1000, 10_000, 100_000],
            tree: [10, 10, 10],
            tree_files: 4,
            w7_files: 8000,
            w7_bytes: 130_000_000,
        }
    }

    fn smoke() -> Sizes {
        Sizes {
            big: 8 << 20,
            w3_4k: 20,
            w3_256k: 10,
            w4_small: 3,
            w5_files: 50,
            w6: vec![200],
            tree: [3, 3, 3],
            tree_files: 2,
            w7_files: 150,
            w7_bytes: 2_000_000,
        }
    }

    pub fn big_label(&self) -> String {
        if self.big >= 1 << 30 && self.big.is_multiple_of(1 << 30) {
            format!("{} GiB", self.big >> 30)
        } else {
            format!("{} MiB", self.big >> 20)
        }
    }
}

/// Everything a workload needs.
pub struct Ctx {
    rt: tokio::runtime::Runtime,
    pub s3: S3,
    mc: MountConfig,
    pub run: String,
    pub sz: Sizes,
    pub timeout: Duration,
    pub w7: Option<workloads::W7Prep>,
    res: Results,
    /// Usage of the current repetition of the current workload, per peer.
    rep_usage: BTreeMap<Peer, Usage>,
}

impl Ctx {
    pub fn block<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    /// Key prefix (with trailing `/`) private to one workload, peer and repetition.
    pub fn dir(&self, wl: &str, peer: Peer, rep: usize) -> String {
        format!("{}/{wl}/{}-{rep}/", self.run, peer.name())
    }

    pub fn mount(&self, peer: Peer) -> Result<Mounted, String> {
        self.mc.mount(peer)
    }

    /// Where a filesystem contender starts a phase from a fresh mount, the raw client starts
    /// it here: after `sync` and dropped caches, so the server reads its data and metadata
    /// from disk for the raw client exactly as it does for the mounts.
    pub fn cold_start(&self) -> Result<(), String> {
        if self.mc.drop_caches {
            mounts::drop_caches()?;
        }
        Ok(())
    }

    pub fn rec(&mut self, wl: &str, name: &str, unit: &str, higher_better: bool, peer: Peer, v: f64) {
        self.res.record(wl, name, unit, higher_better, peer, v);
    }

    /// Add what the daemon of `m` used since `u0` to this repetition's usage.
    pub fn usage(&mut self, _wl: &str, peer: Peer, m: &Mounted, u0: Usage) {
        let u = workloads::usage_since(m, u0);
        self.rep_usage.entry(peer).or_default().add(u);
    }
}

fn env_or(arg: Option<String>, names: &[&str]) -> Option<String> {
    arg.or_else(|| {
        names
            .iter()
            .find_map(|n| std::env::var(n).ok().filter(|v| !v.is_empty()))
    })
}

fn shell(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .map(|o| {
            let text = if o.stdout.is_empty() { o.stderr } else { o.stdout };
            String::from_utf8_lossy(&text)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_string()
        })
        .unwrap_or_default()
}

/// The command as the user typed it: `cargo bench --bench fsbench -- ...` when run by cargo.
fn command_line() -> String {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let by_cargo = std::env::args().any(|a| a == "--bench");
    if by_cargo {
        format!("cargo bench --bench fsbench -- {}", args.join(" "))
    } else {
        let prog = std::env::args().next().unwrap_or_default();
        format!("{prog} {}", args.join(" "))
    }
}

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The rossfs binary to mount with: --rossfs-bin, else target/release/rossfs (built if
/// missing).
fn rossfs_bin(arg: Option<PathBuf>) -> Result<PathBuf, String> {
    if let Some(bin) = arg {
        return bin
            .canonicalize()
            .map_err(|e| format!("--rossfs-bin {}: {e}", bin.display()));
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest_dir().join("target"));
    let bin = target.join("release/rossfs");
    if !bin.is_file() {
        eprintln!(
            "fsbench: {} missing; cargo build --release --bin rossfs",
            bin.display()
        );
        let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["build", "--release", "--bin", "rossfs"])
            .current_dir(manifest_dir())
            .status()
            .map_err(|e| format!("cargo build: {e}"))?;
        if !status.success() {
            return Err(format!("cargo build --release --bin rossfs: {status}"));
        }
    }
    Ok(bin)
}

/// Install s3fs / rclone with apt-get when they are wanted and missing.
fn ensure_tools(peers: &[Peer]) -> Result<(), String> {
    let missing: Vec<&str> = peers
        .iter()
        .filter_map(|p| match p {
            Peer::S3fs => Some("s3fs"),
            Peer::Rclone => Some("rclone"),
            _ => None,
        })
        .filter(|tool| shell("sh", &["-c", &format!("command -v {tool}")]).is_empty())
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("fsbench: apt-get install {}", missing.join(" "));
    let ok = Command::new("apt-get")
        .args(["install", "-y", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        Ok(())
    } else {
        Err(format!("could not install {} with apt-get", missing.join(" ")))
    }
}

fn today(format: &str) -> String {
    shell("date", &["-u", format])
}

/// Run the benchmark with `args` (argv, program name first). Returns the report's path, or
/// what failed.
pub fn run<I, T>(args: I) -> Result<PathBuf, String>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let args = Args::try_parse_from(args).map_err(|e| e.to_string())?;
    let started = Instant::now();
    let mut sz = if args.smoke { Sizes::smoke() } else { Sizes::full() };
    if !args.w6_sizes.is_empty() {
        sz.w6 = args.w6_sizes.clone();
    }
    if let Some(mib) = args.big_mib {
        sz.big = mib << 20;
    }
    let reps = args.reps.unwrap_or(if args.smoke { 1 } else { 3 }).max(1);
    let mut reps_for = BTreeMap::new();
    for item in &args.reps_for {
        let (w, n) = item
            .split_once('=')
            .and_then(|(w, n)| Some((w.trim().to_ascii_uppercase(), n.trim().parse::<usize>().ok()?)))
            .ok_or_else(|| format!("--reps-for {item:?}: expected W<n>=<reps>"))?;
        reps_for.insert(w, n.max(1));
    }
    let peers: Vec<Peer> = if args.peers.is_empty() {
        if args.smoke {
            vec![Peer::Rossfs, Peer::Raw]
        } else {
            Peer::ALL.to_vec()
        }
    } else {
        let mut p = args
            .peers
            .iter()
            .map(|s| Peer::parse(s))
            .collect::<Result<Vec<_>, _>>()?;
        p.sort();
        p.dedup();
        p
    };
    let selected: Vec<&str> = if args.only.is_empty() {
        WORKLOADS.to_vec()
    } else {
        let mut w = Vec::new();
        for o in &args.only {
            let o = o.trim().to_ascii_uppercase();
            w.push(
                *WORKLOADS
                    .iter()
                    .find(|x| **x == o)
                    .ok_or_else(|| format!("unknown workload {o:?} (W1..W8)"))?,
            );
        }
        // In the order given (heavy workloads last keeps the quick ones if a run is cut short).
        let mut seen = Vec::new();
        w.retain(|x| {
            let first = !seen.contains(x);
            seen.push(*x);
            first
        });
        w
    };
    ensure_tools(&peers)?;
    let rossfs_bin = if peers.contains(&Peer::Rossfs) {
        rossfs_bin(args.rossfs_bin.clone())?
    } else {
        PathBuf::from("rossfs")
    };

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    // The Garage child dies with this thread (PR_SET_PDEATHSIG): keep it on the caller's.
    let (garage, endpoint, server) = match env_or(args.endpoint.clone(), &["FSBENCH_ENDPOINT"]) {
        Some(url) => {
            let ep = Endpoint {
                url: url.trim_end_matches('/').to_string(),
                access_key: env_or(
                    args.access_key.clone(),
                    &["FSBENCH_ACCESS_KEY", "AWS_ACCESS_KEY_ID"],
                )
                .ok_or("--endpoint needs --access-key (or FSBENCH_ACCESS_KEY)")?,
                secret_key: env_or(
                    args.secret_key.clone(),
                    &["FSBENCH_SECRET_KEY", "AWS_SECRET_ACCESS_KEY"],
                )
                .ok_or("--endpoint needs --secret-key (or FSBENCH_SECRET_KEY)")?,
                region: env_or(args.region.clone(), &["FSBENCH_REGION", "AWS_REGION"])
                    .unwrap_or_else(|| "us-east-1".into()),
            };
            let server = format!("external S3 endpoint {}", ep.url);
            (None, ep, server)
        }
        None => {
            let g = s3::start_garage(&rt)?;
            let ep = g.endpoint.clone();
            let server = format!(
                "local single-node Garage {} (lmdb) at {}, started by the harness ({})",
                s3::GARAGE_VERSION,
                ep.url,
                g.bin.display()
            );
            (Some(g), ep, server)
        }
    };
    let stamp = today("+%Y%m%dt%H%M%S");
    let (bucket, own_bucket) = match env_or(args.bucket.clone(), &["FSBENCH_BUCKET"]) {
        Some(b) => (b, false),
        None => (format!("fsbench-{stamp}-{}", std::process::id()), true),
    };
    let s3 = S3 {
        client: s3::client(&endpoint),
        bucket: bucket.clone(),
        region: endpoint.region.clone(),
    };
    if own_bucket {
        rt.block_on(s3.create_bucket())?;
    }
    let mc = MountConfig {
        endpoint: endpoint.clone(),
        bucket: bucket.clone(),
        rossfs_bin: rossfs_bin.clone(),
        rossfs_opts: args.rossfs_opts.clone(),
        s3fs_opts: args.s3fs_opts.clone(),
        rclone_args: args.rclone_args.split_whitespace().map(String::from).collect(),
        drop_caches: !args.no_drop_caches,
    };
    let mut ctx = Ctx {
        rt,
        s3,
        mc,
        run: format!("fsbench-{stamp}"),
        sz,
        timeout: Duration::from_secs(args.timeout),
        w7: None,
        res: Results::default(),
        rep_usage: BTreeMap::new(),
    };

    let mut header = vec![
        format!("date: {} (UTC)", today("+%Y-%m-%d %H:%M")),
        format!(
            "machine: {} cores, {}, {}, {}",
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            report::mem_total(),
            report::cpu_model(),
            shell("uname", &["-sr"])
        ),
        format!("server: {server}; bucket {bucket}"),
        format!("command: {}", command_line()),
        format!(
            "sizes: large files {}, W3 {}x4 KiB + {}x256 KiB, W5 {} files, W6 dirs {:?} + find tree {:?}x{} files, W7 {} files ~{} MB; {reps} repetition(s) each (overrides: {reps_for:?}), median (min-max)",
            ctx.sz.big_label(),
            ctx.sz.w3_4k,
            ctx.sz.w3_256k,
            ctx.sz.w5_files,
            ctx.sz.w6,
            ctx.sz.tree,
            ctx.sz.tree_files,
            ctx.sz.w7_files,
            ctx.sz.w7_bytes / 1_000_000
        ),
    ];
    for p in &peers {
        let line = match p {
            Peer::Raw => format!(
                "raw: aws-sdk-s3 in-process (path-style, static credentials, checksums when required); \
                 PUT multipart {} MiB parts x {} in flight; GET ranged 256 KiB->8 MiB x {} in flight; \
                 small files, listings and trees one request at a time as the mount's callers issue them",
                workloads::PART >> 20,
                workloads::PARTS_INFLIGHT,
                workloads::READ_INFLIGHT
            ),
            Peer::Rossfs => format!(
                "rossfs ({}): `{}`",
                shell(&rossfs_bin.to_string_lossy(), &["--version"]),
                ctx.mc.describe(*p)
            ),
            Peer::S3fs => format!(
                "s3fs ({}): `{}`",
                shell("s3fs", &["--version"]),
                ctx.mc.describe(*p)
            ),
            Peer::Rclone => format!(
                "rclone ({}): `{}`",
                shell("rclone", &["version"]),
                ctx.mc.describe(*p)
            ),
        };
        header.push(line);
    }
    let output = match &args.output {
        Some(p) => p.clone(),
        None => {
            let suffix = if args.smoke { "-smoke" } else { "" };
            manifest_dir()
                .join("benches/results")
                .join(format!("{}{suffix}.md", today("+%Y-%m-%d")))
        }
    };
    if let Some(dir) = output.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let report = ReportSink {
        header,
        peers: peers.clone(),
        output: output.clone(),
        started,
    };
    let outcome = run_workloads(&mut ctx, &selected, &peers, reps, &reps_for, &report);
    // Leave the bucket as found (a local Garage goes away with its data anyway).
    if garage.is_none() {
        let _ = ctx.block(ctx.s3.delete_prefix(&format!("{}/", ctx.run)));
        if own_bucket {
            let _ = ctx.block(ctx.s3.client.delete_bucket().bucket(&bucket).send());
        }
    }
    drop(garage);
    if let Err(e) = outcome {
        ctx.res.failures.push(e);
    }

    let markdown = report.write(&ctx.res)?;
    println!("{markdown}");
    println!("report written to {}", output.display());
    if ctx.res.failures.is_empty() {
        Ok(output)
    } else {
        Err(format!(
            "{} failure(s) (report: {}):\n{}",
            ctx.res.failures.len(),
            output.display(),
            ctx.res.failures.join("\n")
        ))
    }
}

/// Create the data the selected workloads read (once, shared by every peer).
fn prepare(ctx: &mut Ctx, selected: &[&str]) -> Result<(), String> {
    let t = Instant::now();
    let s3 = ctx.s3.clone();
    let run = ctx.run.clone();
    ctx.block(s3.put(&format!("{run}/"), Vec::new(), None))?;
    for d in ["w1", "w5", "w7", "data", "data/big", "data/small", "w6"] {
        ctx.block(s3.put(&format!("{run}/{d}/"), Vec::new(), None))?;
    }
    let bigs = if selected.contains(&"W8") {
        4
    } else if selected.iter().any(|w| ["W2", "W3", "W4"].contains(w)) {
        1
    } else {
        0
    };
    for i in 0..bigs {
        let key = workloads::big_key(ctx, i);
        ctx.block(s3.upload_generated(&key, workloads::SEED_BIG + i as u64, ctx.sz.big, 16 << 20, 8))?;
    }
    if selected.contains(&"W4") {
        for i in 0..ctx.sz.w4_small {
            let key = workloads::small_key(ctx, i);
            let body = data::generate(workloads::SEED_SMALL + i as u64, 0, 1024);
            ctx.block(s3.put(&key, body, None))?;
        }
    }
    if selected.contains(&"W6") {
        for &n in &ctx.sz.w6.clone() {
            let dir = workloads::w6_dir(ctx, n);
            let mut items = vec![(dir.clone(), Vec::new(), None)];
            items.extend((0..n).map(|i| {
                let meta = workloads::w6_owner(i).map(|o| {
                    vec![
                        ("mode", o.mode.to_string()),
                        ("uid", o.uid.to_string()),
                        ("gid", o.gid.to_string()),
                        ("mtime", o.mtime.to_string()),
                    ]
                });
                (format!("{dir}{}", workloads::w6_name(i)), Vec::new(), meta)
            }));
            ctx.block(s3.put_many(items, 64))?;
        }
        let tree = workloads::w6_tree(ctx);
        let (dirs, files) = workloads::tree_keys(ctx.sz.tree, ctx.sz.tree_files);
        let mut items = vec![(tree.clone(), Vec::new(), None)];
        items.extend(dirs.iter().map(|d| (format!("{tree}{d}"), Vec::new(), None)));
        items.extend(
            files
                .iter()
                .map(|f| (format!("{tree}{f}"), vec![b'x'; 100], None)),
        );
        ctx.block(s3.put_many(items, 64))?;
    }
    if selected.contains(&"W7") {
        ctx.w7 = Some(workloads::prepare_w7(ctx.sz.w7_files, ctx.sz.w7_bytes)?);
    }
    eprintln!("fsbench: data prepared in {:.1} s", t.elapsed().as_secs_f64());
    Ok(())
}

/// Where the report goes; rewritten after every workload so a cut-short run leaves its results.
struct ReportSink {
    header: Vec<String>,
    peers: Vec<Peer>,
    output: PathBuf,
    started: Instant,
}

impl ReportSink {
    fn write(&self, res: &Results) -> Result<String, String> {
        let mut header = self.header.clone();
        header.insert(
            5,
            format!(
                "wall time of the run: {:.0} s",
                self.started.elapsed().as_secs_f64()
            ),
        );
        let markdown = res.markdown(&header, &self.peers);
        std::fs::write(&self.output, &markdown)
            .map_err(|e| format!("write {}: {e}", self.output.display()))?;
        Ok(markdown)
    }
}

fn run_workloads(
    ctx: &mut Ctx,
    selected: &[&str],
    peers: &[Peer],
    reps: usize,
    reps_for: &BTreeMap<String, usize>,
    report: &ReportSink,
) -> Result<(), String> {
    prepare(ctx, selected)?;
    for wl in selected {
        let reps = reps_for.get(*wl).copied().unwrap_or(reps);
        let f: fn(&mut Ctx, Peer, usize) -> Result<(), String> = match *wl {
            "W1" => workloads::w1,
            "W2" => workloads::w2,
            "W3" => workloads::w3,
            "W4" => workloads::w4,
            "W5" => workloads::w5,
            "W6" => workloads::w6,
            "W7" => workloads::w7,
            _ => workloads::w8,
        };
        for rep in 0..reps {
            // Rotate the order so no contender always runs first (or last) after preparation.
            let mut order = peers.to_vec();
            order.rotate_left(rep % peers.len());
            for &peer in &order {
                ctx.rep_usage.clear();
                let t = Instant::now();
                let outcome = f(ctx, peer, rep);
                let usage = ctx.rep_usage.remove(&peer);
                match outcome {
                    Ok(()) => {
                        if let Some(u) = usage {
                            ctx.res.record_usage(wl, peer, u);
                        }
                        eprintln!(
                            "fsbench: {wl} {} rep {} ok in {:.1} s",
                            peer.name(),
                            rep + 1,
                            t.elapsed().as_secs_f64()
                        );
                    }
                    Err(e) => {
                        let msg = format!("{wl} {} rep {}: {e}", peer.name(), rep + 1);
                        eprintln!("fsbench: FAILED {msg}");
                        ctx.res.failures.push(msg);
                        // Do not leave a failed repetition's objects to disturb the next.
                        let _ = ctx.block(ctx.s3.delete_prefix(&ctx.dir(&wl.to_lowercase(), peer, rep)));
                    }
                }
            }
        }
        report.write(&ctx.res)?;
    }
    Ok(())
}
