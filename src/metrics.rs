//! Metrics: counters and latency histograms per FUSE operation and per S3 request type, bytes
//! moved, errors by S3 code, retries, cache hits, and which processes cause the traffic.
//!
//! One process-wide registry ([`global`]) is fed by the FUSE adapter (every operation, with the
//! calling pid kept in a task-local for the S3 requests made on its behalf) and by the object
//! store (every request). [`render`] writes the Prometheus text format; `-o metrics_addr=` serves
//! it over HTTP. Labels never carry secrets: only operation names, S3 error codes and process
//! command names (the top callers, the rest folded into `other`).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// Upper bounds (seconds) of the latency histogram buckets.
const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Callers listed by name; the rest are summed as `other`.
const TOP_CALLERS: usize = 20;
/// Distinct pids remembered (their command names).
const MAX_PIDS: usize = 4096;

tokio::task_local! {
    /// The pid of the process whose FUSE request the current task serves.
    pub static CALLER_PID: u32;
}

#[derive(Default, Clone)]
struct OpStats {
    count: u64,
    errors: u64,
    buckets: [u64; BUCKETS.len()],
    sum: f64,
}

impl OpStats {
    fn observe(&mut self, elapsed: Duration, failed: bool) {
        let secs = elapsed.as_secs_f64();
        self.count += 1;
        self.sum += secs;
        if failed {
            self.errors += 1;
        }
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                self.buckets[i] += 1;
            }
        }
    }
}

/// The registry.
#[derive(Default)]
pub struct Metrics {
    fuse: Mutex<HashMap<&'static str, OpStats>>,
    s3: Mutex<HashMap<&'static str, OpStats>>,
    s3_errors: Mutex<HashMap<(&'static str, String), u64>>,
    attempts: Mutex<HashMap<String, u64>>,
    callers: Mutex<HashMap<u32, (String, u64)>>,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    stat_cache_hits: AtomicU64,
    negative_cache_hits: AtomicU64,
    lookup_misses: AtomicU64,
}

/// The process-wide registry.
pub fn global() -> &'static Metrics {
    static M: OnceLock<Metrics> = OnceLock::new();
    M.get_or_init(Metrics::default)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The command name of a process, from /proc.
fn comm_of(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".to_string())
}

impl Metrics {
    /// A FUSE operation finished.
    pub fn fuse_op(&self, op: &'static str, elapsed: Duration, failed: bool) {
        lock(&self.fuse).entry(op).or_default().observe(elapsed, failed);
    }

    /// An S3 request finished (after its retries).
    pub fn s3_request(&self, op: &'static str, key: &str, elapsed: Duration, failed: bool) {
        lock(&self.s3).entry(op).or_default().observe(elapsed, failed);
        if let Ok(pid) = CALLER_PID.try_with(|p| *p) {
            let comm = {
                let mut callers = lock(&self.callers);
                if callers.len() >= MAX_PIDS && !callers.contains_key(&pid) {
                    // Forget the quietest half to stay bounded.
                    let mut counts: Vec<u64> = callers.values().map(|v| v.1).collect();
                    counts.sort_unstable();
                    let cut = counts[counts.len() / 2];
                    callers.retain(|_, v| v.1 > cut);
                }
                let entry = callers.entry(pid).or_insert_with(|| (comm_of(pid), 0));
                entry.1 += 1;
                entry.0.clone()
            };
            tracing::debug!(op, key, pid, comm = %comm, "S3 request on behalf of a process");
        }
    }

    /// An S3 request failed with `code` (the S3 error code, or the kind of failure).
    pub fn s3_error(&self, op: &'static str, code: &str) {
        *lock(&self.s3_errors).entry((op, code.to_string())).or_default() += 1;
    }

    /// One attempt of an S3 request was sent (retries are attempts beyond the first).
    pub fn s3_attempt(&self, op: &str) {
        *lock(&self.attempts).entry(op.to_string()).or_default() += 1;
    }

    /// Bytes received from the object store.
    pub fn add_bytes_in(&self, n: u64) {
        self.bytes_in.fetch_add(n, Ordering::Relaxed);
    }

    /// Bytes sent to the object store.
    pub fn add_bytes_out(&self, n: u64) {
        self.bytes_out.fetch_add(n, Ordering::Relaxed);
    }

    /// A lookup answered from the stat cache.
    pub fn stat_cache_hit(&self) {
        self.stat_cache_hits.fetch_add(1, Ordering::Relaxed);
    }

    /// A lookup answered from the negative cache.
    pub fn negative_cache_hit(&self) {
        self.negative_cache_hits.fetch_add(1, Ordering::Relaxed);
    }

    /// A lookup that had to ask the object store.
    pub fn lookup_miss(&self) {
        self.lookup_misses.fetch_add(1, Ordering::Relaxed);
    }

    /// The processes that caused the most S3 requests, as (command, requests), busiest first.
    pub fn top_callers(&self) -> Vec<(String, u64)> {
        let mut by_comm: HashMap<String, u64> = HashMap::new();
        for (comm, n) in lock(&self.callers).values() {
            *by_comm.entry(comm.clone()).or_default() += n;
        }
        let mut v: Vec<(String, u64)> = by_comm.into_iter().collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        v
    }
}

fn label(s: &str) -> String {
    s.chars()
        .flat_map(|c| match c {
            '\\' => vec!['\\', '\\'],
            '"' => vec!['\\', '"'],
            '\n' => vec!['\\', 'n'],
            c if c.is_control() => vec!['?'],
            c => vec![c],
        })
        .collect()
}

fn render_ops(out: &mut String, name: &str, help: &str, ops: &HashMap<&'static str, OpStats>) {
    let _ = writeln!(out, "# HELP {name}_seconds {help}");
    let _ = writeln!(out, "# TYPE {name}_seconds histogram");
    let mut names: Vec<&&str> = ops.keys().collect();
    names.sort();
    for op in names {
        let s = &ops[*op];
        for (i, b) in BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "{name}_seconds_bucket{{op=\"{op}\",le=\"{b}\"}} {}",
                s.buckets[i]
            );
        }
        let _ = writeln!(
            out,
            "{name}_seconds_bucket{{op=\"{op}\",le=\"+Inf\"}} {}",
            s.count
        );
        let _ = writeln!(out, "{name}_seconds_sum{{op=\"{op}\"}} {}", s.sum);
        let _ = writeln!(out, "{name}_seconds_count{{op=\"{op}\"}} {}", s.count);
    }
    let _ = writeln!(out, "# TYPE {name}_errors_total counter");
    let mut names: Vec<&&str> = ops.keys().collect();
    names.sort();
    for op in names {
        let _ = writeln!(out, "{name}_errors_total{{op=\"{op}\"}} {}", ops[*op].errors);
    }
}

/// The Prometheus text exposition of everything, plus `gauges` from the filesystem.
pub fn render(gauges: &[(&str, &str, f64)]) -> String {
    let m = global();
    let mut out = String::new();
    render_ops(
        &mut out,
        "rossfs_fuse_op",
        "FUSE operations by type",
        &lock(&m.fuse),
    );
    let s3 = lock(&m.s3).clone();
    render_ops(
        &mut out,
        "rossfs_s3_request",
        "S3 requests by type (including their retries)",
        &s3,
    );
    let _ = writeln!(
        out,
        "# HELP rossfs_s3_errors_total Failed S3 requests by error code"
    );
    let _ = writeln!(out, "# TYPE rossfs_s3_errors_total counter");
    let mut errs: Vec<((&str, String), u64)> =
        lock(&m.s3_errors).iter().map(|(k, v)| (k.clone(), *v)).collect();
    errs.sort();
    for ((op, code), n) in errs {
        let _ = writeln!(
            out,
            "rossfs_s3_errors_total{{op=\"{op}\",code=\"{}\"}} {n}",
            label(&code)
        );
    }
    let _ = writeln!(
        out,
        "# HELP rossfs_s3_retries_total Attempts beyond the first, by request type"
    );
    let _ = writeln!(out, "# TYPE rossfs_s3_retries_total counter");
    let mut attempts: Vec<(String, u64)> = lock(&m.attempts).iter().map(|(k, v)| (k.clone(), *v)).collect();
    attempts.sort();
    for (op, n) in attempts {
        let requests = s3.get(op.as_str()).map_or(0, |s| s.count);
        let _ = writeln!(
            out,
            "rossfs_s3_retries_total{{op=\"{}\"}} {}",
            label(&op),
            n.saturating_sub(requests)
        );
    }
    for (name, help, v) in [
        (
            "rossfs_s3_bytes_in_total",
            "Bytes received from the object store",
            m.bytes_in.load(Ordering::Relaxed),
        ),
        (
            "rossfs_s3_bytes_out_total",
            "Bytes sent to the object store",
            m.bytes_out.load(Ordering::Relaxed),
        ),
        (
            "rossfs_stat_cache_hits_total",
            "Lookups answered from the stat cache",
            m.stat_cache_hits.load(Ordering::Relaxed),
        ),
        (
            "rossfs_negative_cache_hits_total",
            "Lookups answered from the negative cache",
            m.negative_cache_hits.load(Ordering::Relaxed),
        ),
        (
            "rossfs_lookup_misses_total",
            "Lookups that asked the object store",
            m.lookup_misses.load(Ordering::Relaxed),
        ),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
    }
    let _ = writeln!(
        out,
        "# HELP rossfs_caller_s3_requests_total S3 requests caused by each process (top {TOP_CALLERS})"
    );
    let _ = writeln!(out, "# TYPE rossfs_caller_s3_requests_total counter");
    let callers = m.top_callers();
    let other: u64 = callers.iter().skip(TOP_CALLERS).map(|c| c.1).sum();
    for (comm, n) in callers.iter().take(TOP_CALLERS) {
        let _ = writeln!(
            out,
            "rossfs_caller_s3_requests_total{{comm=\"{}\"}} {n}",
            label(comm)
        );
    }
    if other > 0 {
        let _ = writeln!(out, "rossfs_caller_s3_requests_total{{comm=\"other\"}} {other}");
    }
    for (name, help, v) in gauges {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
    }
    out
}

/// Start of one S3 request, kept in the request's config bag.
#[derive(Debug, Clone)]
struct RequestStart(std::time::Instant);

impl aws_smithy_types::config_bag::Storable for RequestStart {
    type Storer = aws_smithy_types::config_bag::StoreReplace<Self>;
}

/// Attempts made so far for one S3 request.
#[derive(Debug, Clone)]
struct Attempts(u32);

impl aws_smithy_types::config_bag::Storable for Attempts {
    type Storer = aws_smithy_types::config_bag::StoreReplace<Self>;
}

/// Observes every S3 request the SDK makes: latency, attempts (retries), bytes and the process
/// on whose behalf it was made. Error codes are counted by the object store, which sees them
/// typed.
#[derive(Debug)]
pub struct RequestObserver;

fn op_name(cfg: &aws_smithy_types::config_bag::ConfigBag) -> &'static str {
    let name = cfg
        .load::<aws_smithy_runtime_api::client::orchestrator::Metadata>()
        .map(|m| m.name().to_string());
    // Interned: the set of S3 operation names is small and fixed.
    match name.as_deref() {
        Some("GetObject") => "GetObject",
        Some("PutObject") => "PutObject",
        Some("HeadObject") => "HeadObject",
        Some("ListObjectsV2") => "ListObjectsV2",
        Some("ListObjects") => "ListObjects",
        Some("CopyObject") => "CopyObject",
        Some("DeleteObject") => "DeleteObject",
        Some("CreateMultipartUpload") => "CreateMultipartUpload",
        Some("UploadPart") => "UploadPart",
        Some("UploadPartCopy") => "UploadPartCopy",
        Some("CompleteMultipartUpload") => "CompleteMultipartUpload",
        Some("AbortMultipartUpload") => "AbortMultipartUpload",
        Some("ListMultipartUploads") => "ListMultipartUploads",
        _ => "Other",
    }
}

impl aws_smithy_runtime_api::client::interceptors::Intercept for RequestObserver {
    fn name(&self) -> &'static str {
        "rossfs-request-observer"
    }

    fn read_before_execution(
        &self,
        _ctx: &aws_smithy_runtime_api::client::interceptors::context::BeforeSerializationInterceptorContextRef<'_>,
        cfg: &mut aws_smithy_types::config_bag::ConfigBag,
    ) -> Result<(), aws_smithy_runtime_api::box_error::BoxError> {
        cfg.interceptor_state()
            .store_put(RequestStart(std::time::Instant::now()));
        Ok(())
    }

    fn read_before_attempt(
        &self,
        _ctx: &aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextRef<'_>,
        _rc: &aws_smithy_runtime_api::client::runtime_components::RuntimeComponents,
        cfg: &mut aws_smithy_types::config_bag::ConfigBag,
    ) -> Result<(), aws_smithy_runtime_api::box_error::BoxError> {
        let op = op_name(cfg);
        global().s3_attempt(op);
        let attempt = cfg.load::<Attempts>().map_or(1, |a| a.0 + 1);
        cfg.interceptor_state().store_put(Attempts(attempt));
        if attempt > 1 {
            tracing::debug!(op, attempt, "retrying an S3 request");
        }
        Ok(())
    }

    fn read_before_transmit(
        &self,
        ctx: &aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextRef<'_>,
        _rc: &aws_smithy_runtime_api::client::runtime_components::RuntimeComponents,
        _cfg: &mut aws_smithy_types::config_bag::ConfigBag,
    ) -> Result<(), aws_smithy_runtime_api::box_error::BoxError> {
        let req = ctx.request();
        let len = req
            .headers()
            .get("content-length")
            .and_then(|v| v.parse::<u64>().ok());
        global().add_bytes_out(len.or_else(|| req.body().content_length()).unwrap_or(0));
        Ok(())
    }

    fn read_after_execution(
        &self,
        ctx: &aws_smithy_runtime_api::client::interceptors::context::FinalizerInterceptorContextRef<'_>,
        _rc: &aws_smithy_runtime_api::client::runtime_components::RuntimeComponents,
        cfg: &mut aws_smithy_types::config_bag::ConfigBag,
    ) -> Result<(), aws_smithy_runtime_api::box_error::BoxError> {
        let op = op_name(cfg);
        let elapsed = cfg
            .load::<RequestStart>()
            .map(|s| s.0.elapsed())
            .unwrap_or_default();
        let m = global();
        if let Some(req) = ctx.request() {
            let len = req
                .headers()
                .get("content-length")
                .and_then(|v| v.parse::<u64>().ok());
            m.add_bytes_out(len.or_else(|| req.body().content_length()).unwrap_or(0));
        }
        let status = ctx.response().map(|r| r.status().as_u16());
        if let Some(resp) = ctx.response() {
            if op == "GetObject" {
                let len = resp
                    .headers()
                    .get("content-length")
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0);
                m.add_bytes_in(len);
            }
        }
        let failed = match ctx.output_or_error() {
            Some(Ok(_)) => false,
            // A 404 answer to HEAD is how absence is learned, not a failure.
            Some(Err(_)) => !(status == Some(404) && op == "HeadObject"),
            None => true,
        };
        let path = ctx.request().map(|r| r.uri().to_string()).unwrap_or_default();
        m.s3_request(op, &path, elapsed, failed);
        Ok(())
    }
}

/// Serves `render(gauges())` to every HTTP request on `listener` until the task is dropped.
pub async fn serve(
    listener: tokio::net::TcpListener,
    gauges: std::sync::Arc<dyn Fn() -> Vec<(&'static str, &'static str, f64)> + Send + Sync>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    loop {
        let Ok((mut sock, _)) = listener.accept().await else {
            continue;
        };
        let gauges = gauges.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            let mut read = 0;
            // Read the request head (bounded), then answer whatever was asked.
            while read < buf.len() {
                match tokio::time::timeout(Duration::from_secs(5), sock.read(&mut buf[read..])).await {
                    Ok(Ok(0)) | Err(_) | Ok(Err(_)) => break,
                    Ok(Ok(n)) => {
                        read += n;
                        if buf[..read].windows(4).any(|w| w == b"\r\n\r\n") {
                            break;
                        }
                    }
                }
            }
            let body = render(&gauges());
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = sock.write_all(head.as_bytes()).await;
            let _ = sock.write_all(body.as_bytes()).await;
            let _ = sock.shutdown().await;
        });
    }
}
