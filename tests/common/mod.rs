//! Shared harness for the integration tests: one S3 server per test process, S3 client
//! helpers, and real FUSE mounts of `rossfs` against that server.
//!
//! Every test file starts with `mod common;`. Not every file uses every helper, hence the
//! crate-wide `dead_code` allowance below.
//!
//! # The S3 server
//!
//! [`server()`] starts a single-node Garage the first time it is called in a test process and
//! hands out the same instance afterwards. Garage gets its own temporary directory (data,
//! metadata, generated config, log) and loopback ports picked at start; a port clash with a
//! concurrently starting test binary is detected and retried with fresh ports. The Garage
//! child is started from a dedicated thread that lives as long as the process, with
//! `PR_SET_PDEATHSIG = SIGKILL`, so it dies with the test process however that ends (the
//! signal is tied to the thread that forked, which is why it must not be a test thread). A
//! normal exit additionally kills it and removes its directory.
//!
//! Set `ROSSFS_TEST_ENDPOINT` (with `ROSSFS_TEST_ACCESS_KEY`, `ROSSFS_TEST_SECRET_KEY` and
//! optionally `ROSSFS_TEST_REGION`, default `us-east-1`) to run against an existing server such
//! as MinIO or AWS instead. The Garage binary comes from `$GARAGE_BIN`, else from the cache
//! that `scripts/install-garage.sh` fills. `ROSSFS_TEST_GARAGE_LOG` overrides Garage's
//! `RUST_LOG` (default `info`).
//!
//! # Mounts
//!
//! [`Mount::mount`] runs the real `rossfs` binary (which daemonizes and returns once the mount
//! answers) on a fresh temporary mountpoint. [`Mount::unmount`] unmounts and waits until the
//! mount is gone and the daemon has exited, so everything it was going to upload is in the
//! bucket. Dropping a `Mount` detaches it lazily.
#![allow(dead_code)]

use std::ffi::OsString;
use std::fs;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use aws_credential_types::Credentials;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{BehaviorVersion, Region};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{BucketLocationConstraint, CreateBucketConfiguration};
use aws_sdk_s3::Client;
use tempfile::TempDir;

/// Version of Garage the harness expects; must match `scripts/install-garage.sh`.
pub const GARAGE_VERSION: &str = "2.5.0";
/// The region Garage is configured to expect in request signatures.
pub const GARAGE_REGION: &str = "garage";

/// How long Garage may take to answer S3 requests after it was started.
const SERVER_READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How often a port clash with another process is retried before giving up.
const SERVER_START_ATTEMPTS: u32 = 5;
/// Upper bound for `rossfs` to mount and for a mount to go away after `fusermount3 -u`.
const MOUNT_TIMEOUT: Duration = Duration::from_secs(60);
/// Upper bound for the daemon to exit once its mount is gone.
const DAEMON_EXIT_TIMEOUT: Duration = Duration::from_secs(60);
/// Interval between two checks of something the harness is waiting for.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

// ---------------------------------------------------------------------------------------------
// S3 server
// ---------------------------------------------------------------------------------------------

/// Where the tests' S3 server listens and how to authenticate to it.
#[derive(Debug)]
pub struct S3Server {
    /// Base URL, e.g. `http://127.0.0.1:39211`.
    pub endpoint: String,
    pub access_key: String,
    pub secret_key: String,
    pub region: String,
    /// Config file of the Garage we started; `None` for an external server.
    garage_config: Option<PathBuf>,
}

impl S3Server {
    /// A `garage -c <config>` command for administering the harness's own Garage, or `None`
    /// when the tests run against an external server.
    pub fn garage_cli(&self) -> Option<Command> {
        let config = self.garage_config.as_ref()?;
        let mut cmd = Command::new(garage_bin());
        cmd.arg("-c").arg(config);
        Some(cmd)
    }

    /// True when the server is the Garage started by this harness.
    pub fn is_local_garage(&self) -> bool {
        self.garage_config.is_some()
    }
}

/// The S3 server shared by all tests of this process, started on first use.
pub fn server() -> &'static S3Server {
    // A failed start is remembered too, so that every later test fails at once with the same
    // message instead of trying (and waiting) again.
    static SERVER: OnceLock<Result<S3Server, String>> = OnceLock::new();
    let started = SERVER.get_or_init(|| {
        std::panic::catch_unwind(|| external_server().unwrap_or_else(start_garage)).map_err(|panic| {
            panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".to_string())
        })
    });
    match started {
        Ok(server) => server,
        Err(message) => panic!("the test S3 server is unavailable: {message}"),
    }
}

fn external_server() -> Option<S3Server> {
    let endpoint = std::env::var("ROSSFS_TEST_ENDPOINT").ok()?;
    let required = |name: &str| {
        std::env::var(name)
            .unwrap_or_else(|_| panic!("ROSSFS_TEST_ENDPOINT is set, so {name} must be set too"))
    };
    Some(S3Server {
        endpoint: endpoint.trim_end_matches('/').to_string(),
        access_key: required("ROSSFS_TEST_ACCESS_KEY"),
        secret_key: required("ROSSFS_TEST_SECRET_KEY"),
        region: std::env::var("ROSSFS_TEST_REGION").unwrap_or_else(|_| "us-east-1".to_string()),
        garage_config: None,
    })
}

/// Root of the cache `scripts/install-garage.sh` installs into.
fn rossfs_cache() -> PathBuf {
    if let Some(dir) = std::env::var_os("ROSSFS_CACHE") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| OsString::from("/root"));
    PathBuf::from(home).join(".cache").join("rossfs")
}

/// The Garage binary: `$GARAGE_BIN`, else the one `scripts/install-garage.sh` built.
pub fn garage_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("GARAGE_BIN") {
        let bin = PathBuf::from(bin);
        assert!(
            is_executable(&bin),
            "GARAGE_BIN={} is not an executable file",
            bin.display()
        );
        return bin;
    }
    let bin = rossfs_cache()
        .join(format!("garage-{GARAGE_VERSION}"))
        .join("bin")
        .join("garage");
    assert!(
        is_executable(&bin),
        "Garage {GARAGE_VERSION} not found at {}: run scripts/install-garage.sh (or set \
         GARAGE_BIN, or ROSSFS_TEST_ENDPOINT to use another S3 server)",
        bin.display()
    );
    bin
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// `n` random bytes from the kernel, hex encoded.
fn random_hex(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .expect("read /dev/urandom");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Loopback ports that were free a moment ago. They are held at the same time so that they
/// differ; another process may still grab one before Garage binds it, which
/// [`start_garage`] detects and retries.
fn free_ports<const N: usize>() -> [u16; N] {
    let listeners: Vec<TcpListener> = (0..N)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral loopback port"))
        .collect();
    std::array::from_fn(|i| listeners[i].local_addr().unwrap().port())
}

/// The Garage we started, for the exit handler.
static GARAGE_PROCESS: Mutex<Option<(libc::pid_t, TempDir)>> = Mutex::new(None);

extern "C" fn stop_garage_at_exit() {
    let Ok(mut guard) = GARAGE_PROCESS.lock() else {
        return;
    };
    let Some((pid, dir)) = guard.take() else {
        return;
    };
    // SAFETY: plain syscalls on a pid we started; the keeper thread reaps it.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let deadline = Instant::now() + Duration::from_secs(5);
    while unsafe { libc::kill(pid, 0) } == 0 && Instant::now() < deadline {
        thread::sleep(POLL_INTERVAL);
    }
    drop(dir);
}

enum Startup {
    Ready(S3Server),
    /// One of the ports was taken between picking it and Garage binding it. Garage aborts
    /// when that happens to the RPC port but keeps running without S3 API otherwise.
    PortClash(String),
    /// Garage exited before it was ready; carries its log tail.
    Exited(ExitStatus, String),
    Failed(String),
}

const GARAGE_DIR_PREFIX: &str = "rossfs-garage-";
/// File in each Garage temp dir naming the test process that owns it.
const OWNER_FILE: &str = "owner.pid";

/// Remove Garage dirs left behind by test processes that were killed (SIGKILL skips the exit
/// handler; `PR_SET_PDEATHSIG` still took their Garage down).
fn remove_stale_garage_dirs() {
    let Ok(entries) = fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let is_ours = entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with(GARAGE_DIR_PREFIX));
        let owner = fs::read_to_string(entry.path().join(OWNER_FILE))
            .ok()
            .and_then(|pid| pid.trim().parse::<libc::pid_t>().ok());
        if let (true, Some(pid)) = (is_ours, owner) {
            if !process_alive(pid) {
                let _ = fs::remove_dir_all(entry.path());
            }
        }
    }
}

fn start_garage() -> S3Server {
    let bin = garage_bin();
    remove_stale_garage_dirs();
    let (tx, rx) = mpsc::channel::<Result<S3Server, String>>();
    // PR_SET_PDEATHSIG fires when the *thread* that forked exits, so Garage is spawned from a
    // thread that never ends instead of from whichever test thread got here first.
    thread::Builder::new()
        .name("garage-keeper".into())
        .spawn(move || keep_garage(&bin, tx))
        .expect("spawn the garage keeper thread");
    match rx.recv() {
        Ok(Ok(server)) => server,
        Ok(Err(message)) => panic!("{message}"),
        Err(_) => panic!("the garage keeper thread died before Garage was ready"),
    }
}

/// Body of the keeper thread: start Garage (retrying port clashes), report, then stay alive.
fn keep_garage(bin: &Path, tx: mpsc::Sender<Result<S3Server, String>>) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("build a tokio runtime for the readiness probe");
    for attempt in 1..=SERVER_START_ATTEMPTS {
        let dir = TempDir::with_prefix(GARAGE_DIR_PREFIX).expect("create Garage's temp dir");
        fs::write(dir.path().join(OWNER_FILE), std::process::id().to_string())
            .expect("write the owner file into Garage's temp dir");
        let (mut child, server) = match spawn_garage(bin, dir.path()) {
            Ok(spawned) => spawned,
            Err(message) => {
                let _ = tx.send(Err(message));
                return;
            }
        };
        let log = dir.path().join("garage.log");
        match runtime.block_on(wait_until_ready(&mut child, server, &log)) {
            Startup::Ready(server) => {
                *GARAGE_PROCESS.lock().unwrap() = Some((child.id() as libc::pid_t, dir));
                // SAFETY: registering a plain extern "C" function without captured state.
                unsafe { libc::atexit(stop_garage_at_exit) };
                let _ = tx.send(Ok(server));
                drop(runtime);
                let status = child.wait();
                let dir_gone = GARAGE_PROCESS.lock().map(|g| g.is_none()).unwrap_or(true);
                if !dir_gone {
                    eprintln!(
                        "rossfs test harness: Garage exited while tests were running \
                         ({status:?}):\n{}",
                        log_tail(&log)
                    );
                }
                loop {
                    thread::park();
                }
            }
            Startup::PortClash(tail) => {
                let _ = child.kill();
                let _ = child.wait();
                if attempt == SERVER_START_ATTEMPTS {
                    let _ = tx.send(Err(format!(
                        "Garage could not bind its ports in {SERVER_START_ATTEMPTS} attempts; \
                         last log tail:\n{tail}"
                    )));
                    return;
                }
                eprintln!("rossfs test harness: a Garage port was taken meanwhile; retrying");
            }
            Startup::Exited(status, tail) => {
                let _ = tx.send(Err(format!(
                    "Garage ({}) exited during startup with {status}; log tail:\n{tail}",
                    bin.display()
                )));
                return;
            }
            Startup::Failed(message) => {
                let _ = child.kill();
                let _ = child.wait();
                let _ = tx.send(Err(message));
                return;
            }
        }
    }
}

/// Write a config into `dir` and start `garage server` on fresh loopback ports.
fn spawn_garage(bin: &Path, dir: &Path) -> Result<(Child, S3Server), String> {
    let [s3_port, rpc_port] = free_ports::<2>();
    let access_key = format!("GK{}", random_hex(12));
    let secret_key = random_hex(32);
    let config = dir.join("garage.toml");
    let text = format!(
        r#"# Generated by the rossfs test harness for one test process.
metadata_dir = "{meta}"
data_dir = "{data}"
db_engine = "lmdb"
replication_factor = 1

rpc_secret = "{rpc_secret}"
rpc_bind_addr = "127.0.0.1:{rpc_port}"
rpc_public_addr = "127.0.0.1:{rpc_port}"

[s3_api]
s3_region = "{GARAGE_REGION}"
api_bind_addr = "127.0.0.1:{s3_port}"
root_domain = ".s3.garage.localhost"
"#,
        meta = dir.join("meta").display(),
        data = dir.join("data").display(),
        rpc_secret = random_hex(32),
    );
    fs::write(&config, text).map_err(|e| format!("write {}: {e}", config.display()))?;
    let log_path = dir.join("garage.log");
    let log = fs::File::create(&log_path).map_err(|e| format!("create garage.log: {e}"))?;
    let log_err = log.try_clone().map_err(|e| format!("dup garage.log: {e}"))?;

    let parent = std::process::id() as libc::pid_t;
    let mut cmd = Command::new(bin);
    cmd.arg("-c")
        .arg(&config)
        .args(["server", "--single-node", "--default-access-key"])
        .env("GARAGE_DEFAULT_ACCESS_KEY", &access_key)
        .env("GARAGE_DEFAULT_SECRET_KEY", &secret_key)
        .env("NO_COLOR", "1")
        .env(
            "RUST_LOG",
            std::env::var("ROSSFS_TEST_GARAGE_LOG").unwrap_or_else(|_| "info".to_string()),
        )
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err);
    // SAFETY: only async-signal-safe syscalls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died before prctl took effect.
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(|e| format!("start {}: {e}", bin.display()))?;
    let server = S3Server {
        endpoint: format!("http://127.0.0.1:{s3_port}"),
        access_key,
        secret_key,
        region: GARAGE_REGION.to_string(),
        garage_config: Some(config),
    };
    Ok((child, server))
}

/// Poll until ListBuckets succeeds with our key, Garage exits, or the timeout passes.
async fn wait_until_ready(child: &mut Child, server: S3Server, log: &Path) -> Startup {
    let probe = client_for(&server, Some(Duration::from_secs(2)));
    let started = Instant::now();
    loop {
        let exited = match child.try_wait() {
            Ok(status) => status,
            Err(e) => return Startup::Failed(format!("waiting for Garage: {e}")),
        };
        if fs::read_to_string(log).is_ok_and(|text| text.contains("Address already in use")) {
            return Startup::PortClash(log_tail(log));
        }
        if let Some(status) = exited {
            return Startup::Exited(status, log_tail(log));
        }
        let last_error = match probe.list_buckets().send().await {
            Ok(_) => return Startup::Ready(server),
            Err(e) => aws_sdk_s3::error::DisplayErrorContext(e).to_string(),
        };
        if started.elapsed() > SERVER_READY_TIMEOUT {
            return Startup::Failed(format!(
                "Garage at {} did not answer ListBuckets within {:?}; last error: {last_error}\n\
                 log tail:\n{}",
                server.endpoint,
                SERVER_READY_TIMEOUT,
                log_tail(log)
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn log_tail(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_else(|e| format!("(cannot read log: {e})"));
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

// ---------------------------------------------------------------------------------------------
// S3 client helpers
// ---------------------------------------------------------------------------------------------

fn client_for(server: &S3Server, operation_timeout: Option<Duration>) -> Client {
    let credentials = Credentials::new(
        &server.access_key,
        &server.secret_key,
        None,
        None,
        "rossfs-test-harness",
    );
    let mut timeouts = TimeoutConfig::builder();
    if let Some(timeout) = operation_timeout {
        timeouts = timeouts.operation_timeout(timeout);
    }
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(&server.endpoint)
        .region(Region::new(server.region.clone()))
        .credentials_provider(credentials)
        .force_path_style(true)
        .timeout_config(timeouts.build())
        .build();
    Client::from_conf(config)
}

/// An S3 client for [`server()`]: path-style, static credentials.
pub async fn s3_client() -> Client {
    client_for(server(), None)
}

/// Create a bucket with a fresh name (`t-<tag>-<pid>-<n>-<random>`) and return the name.
pub async fn new_bucket(tag: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let suffix = format!("-{}-{n}-{}", std::process::id(), random_hex(3));
    // Lowercase alphanumerics with single dashes between them; the whole name must stay
    // within S3's 63 characters.
    let mut tag_part = String::new();
    for c in tag.chars() {
        if c.is_ascii_alphanumeric() {
            tag_part.push(c.to_ascii_lowercase());
        } else if !tag_part.is_empty() && !tag_part.ends_with('-') {
            tag_part.push('-');
        }
    }
    tag_part.truncate(63 - "t-".len() - suffix.len());
    let tag_part = tag_part.trim_end_matches('-');
    let name = if tag_part.is_empty() {
        format!("t{suffix}")
    } else {
        format!("t-{tag_part}{suffix}")
    };

    let server = server();
    let client = s3_client().await;
    let mut request = client.create_bucket().bucket(&name);
    if server.region != "us-east-1" {
        request = request.create_bucket_configuration(
            CreateBucketConfiguration::builder()
                .location_constraint(BucketLocationConstraint::from(server.region.as_str()))
                .build(),
        );
    }
    if let Err(e) = request.send().await {
        panic!(
            "CreateBucket {name} at {}: {}",
            server.endpoint,
            aws_sdk_s3::error::DisplayErrorContext(e)
        );
    }
    name
}

pub async fn put_object(client: &Client, bucket: &str, key: &str, body: impl Into<Vec<u8>>) {
    let body: Vec<u8> = body.into();
    if let Err(e) = client
        .put_object()
        .bucket(bucket)
        .key(key)
        .body(ByteStream::from(body))
        .send()
        .await
    {
        panic!(
            "PutObject {bucket}/{key}: {}",
            aws_sdk_s3::error::DisplayErrorContext(e)
        );
    }
}

/// Stores each `(key, body)` in `bucket` through the S3 API, as another tool would.
pub fn put_objects(bucket: &str, objects: &[(&str, &[u8])]) {
    block_on(async {
        let client = s3_client().await;
        for (key, body) in objects {
            put_object(&client, bucket, key, body.to_vec()).await;
        }
    })
}

/// Stores `body` at each of `keys` in `bucket` through the S3 API, 32 requests at a time (a
/// large directory made by another tool).
pub fn put_many(bucket: &str, keys: impl IntoIterator<Item = String>, body: &[u8]) {
    use futures::stream::{self, StreamExt};
    block_on(async {
        let client = s3_client().await;
        stream::iter(keys)
            .for_each_concurrent(32, |key| {
                let client = &client;
                async move { put_object(client, bucket, &key, body.to_vec()).await }
            })
            .await;
    })
}

/// Polls `done` every 50 ms until it holds; panics naming `what` after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < timeout, "{what}: not within {timeout:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub async fn get_object(client: &Client, bucket: &str, key: &str) -> Vec<u8> {
    let output = match client.get_object().bucket(bucket).key(key).send().await {
        Ok(output) => output,
        Err(e) => panic!(
            "GetObject {bucket}/{key}: {}",
            aws_sdk_s3::error::DisplayErrorContext(e)
        ),
    };
    match output.body.collect().await {
        Ok(data) => data.into_bytes().to_vec(),
        Err(e) => panic!("GetObject {bucket}/{key}: reading the body: {e}"),
    }
}

/// Every key under `prefix`, in listing order, following continuation tokens.
pub async fn list_keys(client: &Client, bucket: &str, prefix: &str) -> Vec<String> {
    let mut keys = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let page = match client
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .set_continuation_token(token.take())
            .send()
            .await
        {
            Ok(page) => page,
            Err(e) => panic!(
                "ListObjectsV2 {bucket} prefix {prefix:?}: {}",
                aws_sdk_s3::error::DisplayErrorContext(e)
            ),
        };
        keys.extend(page.contents().iter().filter_map(|o| o.key().map(String::from)));
        match page.next_continuation_token() {
            Some(next) if page.is_truncated() == Some(true) => token = Some(next.to_string()),
            _ => return keys,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Mounts
// ---------------------------------------------------------------------------------------------

/// The `rossfs` binary built for this test run.
pub fn rossfs_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_rossfs"))
}

/// True if `path` is a mount point in this process's mount namespace.
pub fn is_mounted(path: &Path) -> bool {
    let target = absolute(path);
    let Ok(table) = fs::read("/proc/self/mountinfo") else {
        return false;
    };
    table.split(|&b| b == b'\n').any(|line| {
        line.split(|&b| b == b' ')
            .nth(4)
            .is_some_and(|field| unescape_mountinfo(field) == target)
    })
}

/// `path` made absolute without following a final component that may be a dead mount.
fn absolute(path: &Path) -> PathBuf {
    let path = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir().unwrap().join(path)
    };
    match (path.parent(), path.file_name()) {
        (Some(parent), Some(name)) => fs::canonicalize(parent).map(|p| p.join(name)).unwrap_or(path),
        _ => path,
    }
}

/// Undo the octal escapes (`\040` for a space, ...) of a mountinfo path.
fn unescape_mountinfo(field: &[u8]) -> PathBuf {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        let octal = field
            .get(i + 1..i + 4)
            .filter(|d| field[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal {
            Some(d) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            None => {
                out.push(field[i]);
                i += 1;
            }
        }
    }
    PathBuf::from(OsString::from_vec(out))
}

/// Write `access:secret` to `dir/passwd` with mode 0600 and return its path.
pub fn write_passwd_file(dir: &Path, access_key: &str, secret_key: &str) -> PathBuf {
    let path = dir.join("passwd");
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    writeln!(file, "{access_key}:{secret_key}").expect("write the passwd file");
    path
}

/// The `-o` list every test mount gets: endpoint, path style, region and credentials file.
pub fn base_options(passwd_file: &Path) -> String {
    let server = server();
    format!(
        "url={},use_path_request_style,region={},passwd_file={}",
        server.endpoint,
        server.region,
        passwd_file.display()
    )
}

/// `rossfs <bucket_spec> <mountpoint> -o <base options>[,extra...]`, with stdin closed and
/// any AWS credentials of the caller's environment removed.
pub fn mount_command(
    bucket_spec: &str,
    mountpoint: &Path,
    passwd_file: &Path,
    extra_opts: &[&str],
) -> Command {
    let mut options = base_options(passwd_file);
    for opt in extra_opts {
        options.push(',');
        options.push_str(opt);
    }
    let mut cmd = Command::new(rossfs_bin());
    cmd.arg(bucket_spec)
        .arg(mountpoint)
        .arg("-o")
        .arg(options)
        .stdin(Stdio::null());
    for var in [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

/// Run `cmd` to completion with its output captured in files (not pipes: a daemon that keeps
/// the inherited stderr open would otherwise block the read), bounded by [`MOUNT_TIMEOUT`].
fn run_bounded(cmd: Command, scratch: &Path) -> Output {
    run_with_deadline(cmd, scratch, MOUNT_TIMEOUT)
}

/// Waits for `child` to exit within `deadline`; on timeout kills it and panics with `what` and
/// `details()` (typically its stderr).
pub fn wait_with_deadline(
    child: &mut Child,
    deadline: Duration,
    what: &str,
    details: impl Fn() -> String,
) -> ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait for a child process") {
            return status;
        }
        if started.elapsed() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not finish within {deadline:?}:\n{}", details());
        }
        thread::sleep(POLL_INTERVAL);
    }
}

/// Runs `cmd` to completion within `deadline`, its output captured in files under `dir` (not
/// pipes: a daemon that keeps an inherited stderr open would block a pipe reader).
pub fn run_with_deadline(mut cmd: Command, dir: &Path, deadline: Duration) -> Output {
    let out_path = dir.join("cmd.stdout");
    let err_path = dir.join("cmd.stderr");
    cmd.stdout(fs::File::create(&out_path).expect("create the stdout file"))
        .stderr(fs::File::create(&err_path).expect("create the stderr file"));
    let shown = format!("{cmd:?}");
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("start {shown}: {e}"));
    let status = wait_with_deadline(&mut child, deadline, &shown, || {
        fs::read_to_string(&err_path).unwrap_or_default()
    });
    Output {
        status,
        stdout: fs::read(&out_path).unwrap_or_default(),
        stderr: fs::read(&err_path).unwrap_or_default(),
    }
}

/// `fusermount3 -u <path>` of a mount made outside [`Mount`]; panics with its stderr if it fails.
pub fn fusermount_u(path: &Path) {
    let (ok, stderr) = fusermount_unmount(path, false);
    assert!(ok, "fusermount3 -u {} failed: {}", path.display(), stderr.trim());
}

/// Run `fusermount3 -u [-z] <path>` and return whether it succeeded, with its stderr.
fn fusermount_unmount(path: &Path, lazy: bool) -> (bool, String) {
    let mut cmd = Command::new("fusermount3");
    cmd.arg("-u");
    if lazy {
        cmd.arg("-z");
    }
    match cmd.arg(path).stdin(Stdio::null()).output() {
        Ok(out) => (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ),
        Err(e) => (false, format!("cannot run fusermount3: {e}")),
    }
}

/// Pids of `rossfs` processes whose command line names `mountpoint`.
fn daemons_serving(mountpoint: &Path) -> Vec<libc::pid_t> {
    rossfs_processes_with_arg(mountpoint.as_os_str())
}

/// Pids of `rossfs` processes with `wanted` as one of their arguments (a mountpoint, a bucket).
pub fn rossfs_processes_with_arg(wanted: &std::ffi::OsStr) -> Vec<libc::pid_t> {
    let bin = fs::canonicalize(rossfs_bin()).unwrap_or_else(|_| rossfs_bin());
    let wanted = wanted.as_encoded_bytes();
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<libc::pid_t>().ok())
        .filter(|pid| {
            let proc_dir = PathBuf::from(format!("/proc/{pid}"));
            let exe_matches = fs::read_link(proc_dir.join("exe")).is_ok_and(|exe| exe == bin);
            exe_matches
                && fs::read(proc_dir.join("cmdline"))
                    .is_ok_and(|cmdline| cmdline.split(|&b| b == 0).any(|arg| arg == wanted))
        })
        .collect()
}

/// True while `pid` exists and is not a zombie.
fn process_alive(pid: libc::pid_t) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// A live `rossfs` mount of a bucket on a temporary mountpoint.
pub struct Mount {
    /// `None` once the directory was deliberately leaked because it could not be unmounted
    /// (removing it recursively would delete objects through the mount).
    mountpoint: Option<TempDir>,
    /// Holds the passwd file and the captured output of the mount command.
    scratch: TempDir,
    daemons: Vec<libc::pid_t>,
}

impl Mount {
    /// Mount `bucket_spec` (`bucket` or `bucket:/prefix/`) with the harness's server options
    /// plus `extra_opts` (each one `-o` item such as `ro` or `uid=1000`). Panics with rossfs's
    /// stderr if it exits non-zero or the mount does not show up.
    #[allow(clippy::self_named_constructors)]
    pub fn mount(bucket_spec: &str, extra_opts: &[&str]) -> Mount {
        let server = server();
        let mountpoint = TempDir::with_prefix("rossfs-mnt-").expect("create a mountpoint");
        let scratch = TempDir::with_prefix("rossfs-mount-").expect("create a scratch dir");
        let passwd = write_passwd_file(scratch.path(), &server.access_key, &server.secret_key);
        let cmd = mount_command(bucket_spec, mountpoint.path(), &passwd, extra_opts);
        let output = run_bounded(cmd, scratch.path());
        let mut mount = Mount {
            mountpoint: Some(mountpoint),
            scratch,
            daemons: Vec::new(),
        };
        if !output.status.success() {
            panic!(
                "rossfs {bucket_spec} {} -o ...,{} failed with {}; stderr:\n{}",
                mount.path().display(),
                extra_opts.join(","),
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
        }
        if !is_mounted(mount.path()) {
            panic!(
                "rossfs exited 0 but {} is not a mount point; stderr:\n{}",
                mount.path().display(),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        mount.daemons = daemons_serving(mount.path());
        mount
    }

    /// The mounted directory.
    pub fn path(&self) -> &Path {
        self.mountpoint.as_ref().expect("mountpoint was leaked").path()
    }

    /// Pids of the daemon process(es) serving this mount, as found right after mounting.
    pub fn daemon_pids(&self) -> &[libc::pid_t] {
        &self.daemons
    }

    /// File holding what the daemon wrote to the stderr it inherited (if it kept it).
    pub fn stderr_log(&self) -> PathBuf {
        self.scratch.path().join("cmd.stderr")
    }

    /// `fusermount3 -u`, then wait until the mount is gone and the daemon has exited (so
    /// whatever it flushes at unmount is in the bucket). Panics if any step fails.
    pub fn unmount(self) {
        let path = self.path().to_path_buf();
        let (ok, stderr) = fusermount_unmount(&path, false);
        assert!(ok, "fusermount3 -u {} failed: {}", path.display(), stderr.trim());
        let started = Instant::now();
        while is_mounted(&path) {
            assert!(
                started.elapsed() < MOUNT_TIMEOUT,
                "{} still mounted {MOUNT_TIMEOUT:?} after fusermount3 -u",
                path.display()
            );
            thread::sleep(POLL_INTERVAL);
        }
        let started = Instant::now();
        while let Some(pid) = self.daemons.iter().copied().find(|&p| process_alive(p)) {
            assert!(
                started.elapsed() < DAEMON_EXIT_TIMEOUT,
                "rossfs daemon {pid} still running {DAEMON_EXIT_TIMEOUT:?} after {} was \
                 unmounted",
                path.display()
            );
            thread::sleep(POLL_INTERVAL);
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let Some(dir) = self.mountpoint.take() else {
            return;
        };
        if is_mounted(dir.path()) {
            let (ok, stderr) = fusermount_unmount(dir.path(), true);
            if !ok {
                eprintln!(
                    "fusermount3 -u -z {} failed: {}",
                    dir.path().display(),
                    stderr.trim()
                );
            }
        }
        if is_mounted(dir.path()) {
            // Never let TempDir's recursive removal walk into a live mount.
            eprintln!("leaving {} behind: still mounted", dir.path().display());
            std::mem::forget(dir);
        }
    }
}

/// Run the mount command for `bucket_spec` and return its output, for tests of mount-time
/// failures. Should the mount succeed, it is detached again before this returns (after the
/// exit status was captured) so no mount outlives its temporary mountpoint.
pub fn try_mount(bucket_spec: &str, extra_opts: &[&str]) -> Output {
    let server = server();
    let mountpoint = TempDir::with_prefix("rossfs-mnt-").expect("create a mountpoint");
    let scratch = TempDir::with_prefix("rossfs-mount-").expect("create a scratch dir");
    let passwd = write_passwd_file(scratch.path(), &server.access_key, &server.secret_key);
    let cmd = mount_command(bucket_spec, mountpoint.path(), &passwd, extra_opts);
    let output = run_bounded(cmd, scratch.path());
    // Hand any mount to Mount's Drop, which detaches it (or leaks the dir if it cannot).
    drop(Mount {
        mountpoint: Some(mountpoint),
        scratch,
        daemons: Vec::new(),
    });
    output
}

// ---------------------------------------------------------------------------------------------
// Small helpers shared by the test files
// ---------------------------------------------------------------------------------------------

/// Runs `f` on a runtime shared by the test process (for S3 calls from synchronous tests).
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("test runtime")
    })
    .block_on(f)
}

/// The errno of a failed call; panics if it succeeded.
pub fn errno_of<T: std::fmt::Debug>(r: std::io::Result<T>) -> i32 {
    match r {
        Ok(v) => panic!("expected an error, got Ok({v:?})"),
        Err(e) => e.raw_os_error().unwrap_or_else(|| panic!("no errno in {e}")),
    }
}

/// Deterministic pseudo-random bytes (xorshift), different for each seed.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

// -------------------------------------------------------------------------------------------
// Metrics
// -------------------------------------------------------------------------------------------

/// A loopback TCP port free right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The text of the metrics endpoint of a mount started with `metrics_addr=127.0.0.1:PORT`.
pub fn scrape(port: u16) -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect to the metrics endpoint");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    out
}

/// The count of histogram `series` for `op` in a scrape (0 when it has no sample yet).
pub fn op_count(text: &str, series: &str, op: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{series}_count{{op=\"{op}\"}} ")))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(0.0)
}

/// S3 requests of type `op` the mount made so far, from a scrape.
pub fn requests(text: &str, op: &str) -> f64 {
    op_count(text, "rossfs_s3_request_seconds", op)
}

/// The value of one series (name and labels, exactly) in a metrics scrape.
pub fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.trim().parse().ok()))
        .unwrap_or_else(|| panic!("no series {series} in:\n{text}"))
}

/// The names in directory `dir`, sorted.
pub fn names_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("readdir {}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}
