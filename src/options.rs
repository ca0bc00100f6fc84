//! Mount options: the `-o name[=value]` vocabulary of s3fs/ossfs, parsed into [`MountOptions`].
//!
//! This module owns the meaning of every option, its default and its validation. It knows nothing
//! about S3 or FUSE: the rest of the crate reads the typed fields. A malformed or unknown option
//! is a [`OptionError`] whose message names the option and says how to fix it.

use std::path::PathBuf;
use std::time::Duration;

/// Where in the object store the mount's root lives: `BUCKET` or `BUCKET:/PREFIX`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountSource {
    /// The bucket name.
    pub bucket: String,
    /// Key prefix of the mount root, empty or ending in `/` (e.g. `data/2024/`).
    pub prefix: String,
}

impl MountSource {
    /// Parses `BUCKET`, `BUCKET:/PREFIX` or `BUCKET:PREFIX`.
    pub fn parse(spec: &str) -> Result<Self, OptionError> {
        let (bucket, prefix) = match spec.split_once(':') {
            Some((b, p)) => (b, p),
            None => (spec, ""),
        };
        if bucket.is_empty() {
            return Err(OptionError::new(format!(
                "the source '{spec}' names no bucket; use BUCKET or BUCKET:/PREFIX"
            )));
        }
        validate_bucket_name(bucket)?;
        let trimmed = prefix.trim_matches('/');
        if trimmed.split('/').any(|s| s == "." || s == "..")
            || (!trimmed.is_empty() && trimmed.split('/').any(str::is_empty))
        {
            return Err(OptionError::new(format!(
                "the prefix '{prefix}' in '{spec}' has an empty, '.' or '..' segment; \
                 use a plain path such as BUCKET:/dir/subdir"
            )));
        }
        let prefix = if trimmed.is_empty() {
            String::new()
        } else {
            format!("{trimmed}/")
        };
        Ok(Self {
            bucket: bucket.to_string(),
            prefix,
        })
    }
}

/// Rejects bucket names no S3 implementation accepts, before any request is made.
fn validate_bucket_name(bucket: &str) -> Result<(), OptionError> {
    let ok_chars = bucket
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '.' | '_'));
    let ok_ends = bucket.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && bucket.chars().last().is_some_and(|c| c.is_ascii_alphanumeric());
    if !(3..=63).contains(&bucket.len()) || !ok_chars || !ok_ends {
        return Err(OptionError::new(format!(
            "'{bucket}' is not a valid bucket name: use 3-63 characters of lowercase letters, \
             digits, '-' and '.', starting and ending with a letter or digit"
        )));
    }
    Ok(())
}

/// Log verbosity, as s3fs's `dbglevel=`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogLevel {
    /// Only errors (`crit`, `err`, `error`).
    Error,
    /// Errors and warnings (`warn`), the default.
    Warn,
    /// Informational messages (`info`).
    Info,
    /// Debug output, including every retry (`debug`, `dbg`).
    Debug,
    /// Everything, including each FUSE request (`trace`).
    Trace,
}

impl LogLevel {
    /// The `tracing` filter directive for this level.
    pub fn directive(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

/// What `link(2)` answers, since object storage has no hard links.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HardlinkErrno {
    /// `ENOTSUP`, as s3fs and ossfs 1.x (default).
    Enotsup,
    /// `EPERM`, what POSIX names for "filesystem does not support hard links".
    Eperm,
}

/// Every option a mount takes, with its default filled in.
#[derive(Clone, Debug)]
pub struct MountOptions {
    /// S3 endpoint URL (`url=`); `None` means the SDK's default for the region.
    pub endpoint: Option<String>,
    /// Signing region (`region=`); `None` means from the environment, else `us-east-1`.
    pub region: Option<String>,
    /// Path-style requests (`use_path_request_style`), needed by most self-hosted servers.
    pub path_style: bool,
    /// File with `AK:SK` or `BUCKET:AK:SK` lines (`passwd_file=`).
    pub passwd_file: Option<PathBuf>,
    /// Read-only mount (`ro`).
    pub read_only: bool,
    /// Let other users into the mount (`allow_other`).
    pub allow_other: bool,
    /// Mount over a directory that has entries, hiding them (`nonempty`).
    pub nonempty: bool,
    /// Number of entries in the stat cache (`max_stat_cache_size=`).
    pub max_stat_cache_size: u64,
    /// How long cached attributes are trusted, here and in the kernel (`stat_cache_expire=`).
    pub stat_cache_expire: Duration,
    /// Remember names that do not exist (on unless `disable_noobj_cache`).
    pub negative_cache: bool,
    /// Use ListObjects (v1) instead of ListObjectsV2 (`listobjectsv1`).
    pub list_objects_v1: bool,
    /// Reads and writes bypass the kernel page cache (`direct_io`).
    pub direct_io: bool,
    /// Send every request through the AWS SDK, not the lean path (`sdk_requests`).
    pub sdk_only: bool,
    /// Where write staging files live (`cache_dir=`); default: the system temp dir.
    pub cache_dir: Option<PathBuf>,
    /// Log verbosity (`dbglevel=`).
    pub log_level: LogLevel,
    /// Log file (`logfile=`); without it a daemon logs to syslog, `-f` to stderr.
    pub log_file: Option<PathBuf>,
    /// Present every inode as owned by this uid (`uid=`).
    pub uid: Option<u32>,
    /// Present every inode as owned by this gid (`gid=`).
    pub gid: Option<u32>,
    /// Present permission bits as `0777 & !umask` (`umask=`).
    pub umask: Option<u32>,
    /// The mount root's bits are `0777 & !mp_umask` with `allow_other` (`mp_umask=`).
    pub mp_umask: Option<u32>,
    /// Permission bits of files without mode metadata (`file_mode=`, default 0640).
    pub file_mode: u32,
    /// Permission bits of directories without mode metadata (`dir_mode=`, default 0750).
    pub dir_mode: u32,
    /// Part size of multipart uploads in bytes (`multipart_size=`, in MiB as s3fs).
    pub multipart_size: u64,
    /// Parts uploaded or ranges fetched at once per file (`parallel_count=`).
    pub parallel_count: usize,
    /// Largest object copied with one CopyObject, in bytes (`singlepart_copy_limit=` MiB, as
    /// s3fs); larger ones are copied in parts. `None`: the server's limit (5 GiB, 1 GiB on
    /// Alibaba OSS).
    pub singlepart_copy_limit: Option<u64>,
    /// Bytes of a file staged in memory before spilling to `cache_dir` (`max_dirty_memory=` MiB).
    pub memory_staging_limit: u64,
    /// Attempts per request before an error is returned (`retries=`).
    pub retries: u32,
    /// TCP connect timeout (`connect_timeout=` seconds).
    pub connect_timeout: Duration,
    /// Timeout of one request attempt (`readwrite_timeout=` seconds).
    pub readwrite_timeout: Duration,
    /// Longest the mount command waits for its daemon to be ready (`mount_timeout=` seconds;
    /// 60 by default, so it fails with its own message before systemd's 90 s stop a mount unit).
    pub mount_timeout: Duration,
    /// FUSE threads reading requests from the kernel (`fuse_threads=`).
    pub fuse_threads: usize,
    /// Threads running S3 requests and file operations (`io_threads=`).
    pub io_threads: usize,
    /// Kernel read-ahead of the mount in KiB (`read_ahead_kb=`; 0 keeps the kernel's own).
    pub read_ahead_kb: u32,
    /// `read_ahead_kb=` was given (a failure to apply it is then a warning, not a note).
    pub read_ahead_asked: bool,
    /// Errno for `link(2)` (`hardlink_errno=enotsup|eperm`).
    pub hardlink_errno: HardlinkErrno,
    /// Extra kernel mount flags passed through (`nosuid`, `nodev`, `noexec`, ...).
    pub kernel_flags: Vec<String>,
    /// Storage class of uploaded objects (`storage_class=`).
    pub storage_class: Option<String>,
    /// SSE-S3 on every upload and copy (`use_sse`).
    pub use_sse: bool,
    /// SSE-KMS with this key (`sse_kms_key_id=`).
    pub sse_kms_key_id: Option<String>,
    /// File mapping extensions to content types (`mime=`, default `/etc/mime.types`).
    pub mime_file: PathBuf,
    /// Address of the Prometheus metrics endpoint (`metrics_addr=`).
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Extra PEM certificates to trust besides the system roots (`ca_bundle=`).
    pub ca_bundle: Option<PathBuf>,
    /// Memory for read-ahead shared by all open files (`max_memory=` MiB).
    pub max_memory: u64,
}

impl Default for MountOptions {
    fn default() -> Self {
        Self {
            endpoint: None,
            region: None,
            path_style: false,
            passwd_file: None,
            read_only: false,
            allow_other: false,
            nonempty: false,
            max_stat_cache_size: 100_000,
            stat_cache_expire: Duration::from_secs(60),
            negative_cache: true,
            list_objects_v1: false,
            direct_io: false,
            sdk_only: false,
            cache_dir: None,
            log_level: LogLevel::Warn,
            log_file: None,
            uid: None,
            gid: None,
            umask: None,
            mp_umask: None,
            file_mode: 0o640,
            dir_mode: 0o750,
            multipart_size: 10 * 1024 * 1024,
            parallel_count: 5,
            singlepart_copy_limit: None,
            memory_staging_limit: 8 * 1024 * 1024,
            retries: 5,
            connect_timeout: Duration::from_secs(10),
            readwrite_timeout: Duration::from_secs(120),
            mount_timeout: Duration::from_secs(60),
            fuse_threads: 2,
            io_threads: default_io_threads(),
            read_ahead_kb: 1024,
            read_ahead_asked: false,
            hardlink_errno: HardlinkErrno::Enotsup,
            kernel_flags: Vec::new(),
            storage_class: None,
            use_sse: false,
            sse_kms_key_id: None,
            mime_file: PathBuf::from("/etc/mime.types"),
            metrics_addr: None,
            ca_bundle: None,
            max_memory: 128 * 1024 * 1024,
        }
    }
}

/// A bad `-o` option or source; the message names it and the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct OptionError(pub String);

impl OptionError {
    fn new(msg: impl Into<String>) -> Self {
        Self(msg.into())
    }
}

/// One row of the option reference: name, value form, meaning and the ossfs/s3fs equivalent.
pub struct OptionDoc {
    /// Option name as written after `-o`.
    pub name: &'static str,
    /// Form of the value, empty for flags.
    pub value: &'static str,
    /// What it does.
    pub help: &'static str,
}

/// Every option rossfs accepts; `--help` and the README table are generated from this list.
pub const OPTION_DOCS: &[OptionDoc] = &[
    OptionDoc { name: "url", value: "URL", help: "S3 endpoint, e.g. http://127.0.0.1:3900 or https://oss-cn-hangzhou.aliyuncs.com (alias: endpoint)" },
    OptionDoc { name: "region", value: "NAME", help: "signing region (default: AWS_REGION, else us-east-1)" },
    OptionDoc { name: "use_path_request_style", value: "", help: "path-style requests (http://host/bucket/key), for MinIO, Garage, Ceph" },
    OptionDoc { name: "passwd_file", value: "PATH", help: "credentials file, lines AK:SK or BUCKET:AK:SK, must not be readable by group/others; default: the AWS credential chain (env, profile, web identity, IMDS)" },
    OptionDoc { name: "ro", value: "", help: "read-only mount; writes fail with EROFS" },
    OptionDoc { name: "allow_other", value: "", help: "let users other than the mounter in (kernel still checks modes)" },
    OptionDoc { name: "uid", value: "N", help: "show every file and directory as owned by uid N" },
    OptionDoc { name: "gid", value: "N", help: "show every file and directory as owned by gid N" },
    OptionDoc { name: "umask", value: "OOO", help: "show permission bits as 0777 & ~OOO (presentation only)" },
    OptionDoc { name: "mp_umask", value: "OOO", help: "mount root shows 0777 & ~OOO (with allow_other; without it the root is 0700)" },
    OptionDoc { name: "file_mode", value: "OOO", help: "mode of files without mode metadata (default 0640)" },
    OptionDoc { name: "dir_mode", value: "OOO", help: "mode of directories without mode metadata (default 0750)" },
    OptionDoc { name: "max_stat_cache_size", value: "N", help: "entries in the stat cache (default 100000)" },
    OptionDoc { name: "stat_cache_expire", value: "SECS", help: "how long attributes and names are cached, also by the kernel (default 60)" },
    OptionDoc { name: "disable_noobj_cache", value: "", help: "do not cache the absence of a name nor the contents of directories (both are on by default)" },
    OptionDoc { name: "listobjectsv1", value: "", help: "list with ListObjects v1 instead of ListObjectsV2" },
    OptionDoc { name: "sdk_requests", value: "", help: "send every request through the AWS SDK (default: HEAD, GET, LIST, PUT, UploadPart, CopyObject and DELETE take a lighter signed HTTP path; for comparison, or a server it does not suit)" },
    OptionDoc { name: "cache_dir", value: "DIR", help: "where files being written are staged once past max_dirty_memory (default: system temp dir)" },
    OptionDoc { name: "direct_io", value: "", help: "reads and writes bypass the kernel page cache (faster single streaming passes; nothing is kept for the next open)" },
    OptionDoc { name: "max_memory", value: "MIB", help: "memory for read-ahead shared by all open files (default 128)" },
    OptionDoc { name: "max_dirty_memory", value: "MIB", help: "bytes of one file staged in memory before spilling to cache_dir (default 8)" },
    OptionDoc { name: "multipart_size", value: "MIB", help: "part size of multipart uploads (default 10, min 5)" },
    OptionDoc { name: "parallel_count", value: "N", help: "parts uploaded at once per file (default 5)" },
    OptionDoc { name: "singlepart_copy_limit", value: "MIB", help: "largest object a rename or attribute change copies with one CopyObject; larger ones are copied in parts (default 5120, the S3 limit; 1024 on Alibaba OSS endpoints)" },
    OptionDoc { name: "retries", value: "N", help: "attempts per S3 request (default 5)" },
    OptionDoc { name: "connect_timeout", value: "SECS", help: "TCP connect timeout (default 10)" },
    OptionDoc { name: "readwrite_timeout", value: "SECS", help: "timeout of one request attempt (default 120)" },
    OptionDoc { name: "mount_timeout", value: "SECS", help: "longest the mount command waits for the daemon to be ready; past it the daemon is stopped and the mount fails (default 60, under systemd's 90 s for a mount unit)" },
    OptionDoc { name: "hardlink_errno", value: "enotsup|eperm", help: "what link(2) returns (default enotsup; directories always eperm)" },
    OptionDoc { name: "storage_class", value: "CLASS", help: "storage class of uploaded objects (e.g. STANDARD_IA)" },
    OptionDoc { name: "use_sse", value: "", help: "server-side encryption SSE-S3 on every upload and copy (use_sse=kmsid:ID for SSE-KMS)" },
    OptionDoc { name: "sse_kms_key_id", value: "ID", help: "server-side encryption SSE-KMS with this key" },
    OptionDoc { name: "mime", value: "PATH", help: "extension to Content-Type map (default /etc/mime.types)" },
    OptionDoc { name: "ca_bundle", value: "PATH", help: "PEM certificates to trust in addition to the system roots (private CA, self-signed endpoint)" },
    OptionDoc { name: "metrics_addr", value: "IP:PORT", help: "serve Prometheus metrics (per operation, per S3 request type, top calling processes) at http://IP:PORT/metrics" },
    OptionDoc { name: "dbglevel", value: "LEVEL", help: "log level: err, warn (default), info, debug, trace" },
    OptionDoc { name: "logfile", value: "PATH", help: "log to this file (default: syslog when daemonized, stderr with -f)" },
    OptionDoc { name: "fuse_threads", value: "N", help: "threads reading FUSE requests (default 2)" },
    OptionDoc { name: "io_threads", value: "N", help: "threads running S3 requests and file operations (default: half the CPUs, at least 1)" },
    OptionDoc { name: "read_ahead_kb", value: "KIB", help: "kernel read-ahead of the mount, set as root (default 1024; 0 keeps the kernel's 128)" },
    OptionDoc { name: "nosuid, nodev, noexec, suid, dev, exec, noatime, atime", value: "", help: "kernel mount flags, passed through" },
    OptionDoc { name: "nonempty", value: "", help: "mount over a directory that has entries (hidden while mounted); refused otherwise" },
    OptionDoc { name: "default_permissions, rw", value: "", help: "accepted for compatibility (permissions are always checked by the kernel)" },
];

/// Option names that would carry a key or secret (refused without echoing the value).
fn looks_like_credential(name: &str) -> bool {
    let n = name.to_ascii_lowercase().replace('-', "_");
    n.contains("secret")
        || n.contains("access_key")
        || n.contains("accesskey")
        || n.contains("password")
        || n.contains("session_token")
        || matches!(n.as_str(), "ak" | "sk" | "passwd" | "key" | "token" | "aws_key")
}

fn parse_u32(name: &str, value: &str) -> Result<u32, OptionError> {
    value.parse::<u32>().map_err(|_| {
        OptionError::new(format!(
            "option '{name}={value}': '{value}' is not a whole number"
        ))
    })
}

fn parse_u64(name: &str, value: &str) -> Result<u64, OptionError> {
    value.parse::<u64>().map_err(|_| {
        OptionError::new(format!(
            "option '{name}={value}': '{value}' is not a whole number"
        ))
    })
}

fn parse_octal_mode(name: &str, value: &str) -> Result<u32, OptionError> {
    match u32::from_str_radix(value, 8) {
        Ok(v) if v <= 0o7777 => Ok(v),
        _ => Err(OptionError::new(format!(
            "option '{name}={value}': expected an octal mode such as 022 or 0750"
        ))),
    }
}

fn parse_secs(name: &str, value: &str) -> Result<Duration, OptionError> {
    let secs = parse_u64(name, value)?;
    Ok(Duration::from_secs(secs))
}

/// [`parse_secs`] of a timeout, which cannot be 0.
fn parse_timeout(name: &str, value: Option<&str>) -> Result<Duration, OptionError> {
    let secs = parse_secs(name, require_value(name, value)?)?;
    if secs.is_zero() {
        return Err(OptionError::new(format!(
            "option '{name}=0': use 1 or more seconds"
        )));
    }
    Ok(secs)
}

fn require_value<'a>(name: &str, value: Option<&'a str>) -> Result<&'a str, OptionError> {
    match value {
        Some(v) if !v.is_empty() => Ok(v),
        _ => Err(OptionError::new(format!(
            "option '{name}' needs a value: write -o {name}=VALUE"
        ))),
    }
}

fn reject_value(name: &str, value: Option<&str>) -> Result<(), OptionError> {
    match value {
        None => Ok(()),
        Some(v) => Err(OptionError::new(format!(
            "option '{name}' takes no value (got '{name}={v}'); write -o {name}"
        ))),
    }
}

/// `mib` MiB in bytes, or an error naming the option when that does not fit in 64 bits.
fn mib_to_bytes(name: &str, mib: u64) -> Result<u64, OptionError> {
    mib.checked_mul(1024 * 1024)
        .ok_or_else(|| OptionError::new(format!("option '{name}={mib}': too large (it is in MiB)")))
}

/// Half the CPUs, at least one: measured on 2 cores, one I/O thread beside the FUSE threads
/// and the kernel's work costs 15-20% less CPU per request than two (fewer cross-thread
/// wake-ups) and was as fast or faster in every workload (`benches/`).
fn default_io_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1))
}

impl MountOptions {
    /// Makes every path-valued option absolute against the current directory, for a daemon
    /// that will change its directory to `/`.
    pub fn make_paths_absolute(&mut self) -> std::io::Result<()> {
        for path in [
            self.passwd_file.as_mut(),
            self.cache_dir.as_mut(),
            self.log_file.as_mut(),
            self.ca_bundle.as_mut(),
            Some(&mut self.mime_file),
        ]
        .into_iter()
        .flatten()
        {
            if path.is_relative() {
                *path = std::path::absolute(&*path)?;
            }
        }
        Ok(())
    }

    /// Parses every `-o` argument (each a comma-separated list) into options, in order; later
    /// options win.
    pub fn parse<S: AsRef<str>>(groups: &[S]) -> Result<Self, OptionError> {
        let mut opts = MountOptions::default();
        for group in groups {
            for item in group.as_ref().split(',') {
                let item = item.trim();
                if item.is_empty() {
                    continue;
                }
                opts.apply(item)?;
            }
        }
        opts.validate()?;
        Ok(opts)
    }

    fn apply(&mut self, item: &str) -> Result<(), OptionError> {
        let (name, value) = match item.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (item, None),
        };
        match name {
            "url" | "endpoint" => {
                let v = require_value(name, value)?;
                let host = v.strip_prefix("http://").or_else(|| v.strip_prefix("https://"));
                let authority = host.unwrap_or(v).split(['/', '?', '#']).next().unwrap_or("");
                if authority.contains('@') {
                    // Not echoed: what comes before the '@' is likely a key and its secret.
                    return Err(OptionError::new(format!(
                        "option '{name}' has credentials in the URL (user:secret@host), where every \
                         user can read them (ps, /proc/PID/cmdline); give the URL without them and \
                         put ACCESS_KEY:SECRET in a file with mode 0600 passed as passwd_file=PATH"
                    )));
                }
                let looks_like_region = !v.is_empty()
                    && v.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                    && v.chars().any(|c| c == '-');
                if host.is_none() && name == "endpoint" && looks_like_region {
                    return Err(OptionError::new(format!(
                        "option 'endpoint={v}': rossfs takes endpoint= as the server's URL (like \
                         url=); for the signing region, as s3fs's endpoint= means it, write \
                         region={v}"
                    )));
                }
                if !host.is_some_and(|h| !h.is_empty() && !h.starts_with('/')) {
                    return Err(OptionError::new(format!(
                        "option '{name}={v}' is not an http:// or https:// URL; \
                         write e.g. -o url=https://s3.amazonaws.com"
                    )));
                }
                self.endpoint = Some(v.trim_end_matches('/').to_string());
            }
            "region" => self.region = Some(require_value(name, value)?.to_string()),
            "use_path_request_style" => {
                reject_value(name, value)?;
                self.path_style = true;
            }
            "passwd_file" => self.passwd_file = Some(PathBuf::from(require_value(name, value)?)),
            "ro" => {
                reject_value(name, value)?;
                self.read_only = true;
            }
            "rw" => {
                reject_value(name, value)?;
                self.read_only = false;
            }
            "allow_other" => {
                reject_value(name, value)?;
                self.allow_other = true;
            }
            "max_stat_cache_size" => self.max_stat_cache_size = parse_u64(name, require_value(name, value)?)?,
            "stat_cache_expire" => self.stat_cache_expire = parse_secs(name, require_value(name, value)?)?,
            "disable_noobj_cache" => {
                reject_value(name, value)?;
                self.negative_cache = false;
            }
            "enable_noobj_cache" => {
                reject_value(name, value)?;
                self.negative_cache = true;
            }
            "listobjectsv1" => {
                reject_value(name, value)?;
                self.list_objects_v1 = true;
            }
            "direct_io" => {
                reject_value(name, value)?;
                self.direct_io = true;
            }
            "sdk_requests" => {
                reject_value(name, value)?;
                self.sdk_only = true;
            }
            "cache_dir" => self.cache_dir = Some(PathBuf::from(require_value(name, value)?)),
            "dbglevel" | "debug_level" => {
                let v = require_value(name, value)?;
                self.log_level = match v.to_ascii_lowercase().as_str() {
                    "crit" | "critical" | "err" | "error" => LogLevel::Error,
                    "warn" | "warning" => LogLevel::Warn,
                    "info" => LogLevel::Info,
                    "dbg" | "debug" => LogLevel::Debug,
                    "trace" => LogLevel::Trace,
                    _ => {
                        return Err(OptionError::new(format!(
                            "option 'dbglevel={v}': use one of err, warn, info, debug, trace"
                        )))
                    }
                };
            }
            "logfile" => self.log_file = Some(PathBuf::from(require_value(name, value)?)),
            "uid" => self.uid = Some(parse_u32(name, require_value(name, value)?)?),
            "gid" => self.gid = Some(parse_u32(name, require_value(name, value)?)?),
            "umask" => self.umask = Some(parse_octal_mode(name, require_value(name, value)?)? & 0o777),
            "mp_umask" => self.mp_umask = Some(parse_octal_mode(name, require_value(name, value)?)? & 0o777),
            "file_mode" => self.file_mode = parse_octal_mode(name, require_value(name, value)?)?,
            "dir_mode" => self.dir_mode = parse_octal_mode(name, require_value(name, value)?)?,
            "multipart_size" => {
                let mib = parse_u64(name, require_value(name, value)?)?;
                if !(5..=5 * 1024).contains(&mib) {
                    return Err(OptionError::new(format!(
                        "option 'multipart_size={mib}': S3 parts must be 5 to 5120 MiB"
                    )));
                }
                self.multipart_size = mib * 1024 * 1024;
            }
            "singlepart_copy_limit" => {
                let mib = parse_u64(name, require_value(name, value)?)?;
                if !(5..=5 * 1024).contains(&mib) {
                    return Err(OptionError::new(format!(
                        "option 'singlepart_copy_limit={mib}': S3 copies one object of 5 to 5120 MiB at most"
                    )));
                }
                self.singlepart_copy_limit = Some(mib * 1024 * 1024);
            }
            "parallel_count" => {
                let n = parse_u64(name, require_value(name, value)?)?;
                if !(1..=64).contains(&n) {
                    return Err(OptionError::new(format!(
                        "option 'parallel_count={n}': use 1 to 64"
                    )));
                }
                self.parallel_count = n as usize;
            }
            "max_memory" => {
                let mib = parse_u64(name, require_value(name, value)?)?;
                if mib < 16 {
                    return Err(OptionError::new(format!(
                        "option 'max_memory={mib}': use at least 16 (MiB)"
                    )));
                }
                self.max_memory = mib_to_bytes(name, mib)?;
            }
            "max_dirty_memory" => {
                let mib = parse_u64(name, require_value(name, value)?)?;
                self.memory_staging_limit = mib_to_bytes(name, mib)?;
            }
            "retries" => {
                let n = parse_u32(name, require_value(name, value)?)?;
                if n == 0 {
                    return Err(OptionError::new(
                        "option 'retries=0': at least one attempt is needed; use retries=1 or more",
                    ));
                }
                self.retries = n;
            }
            "connect_timeout" => self.connect_timeout = parse_timeout(name, value)?,
            "readwrite_timeout" => self.readwrite_timeout = parse_timeout(name, value)?,
            "mount_timeout" => self.mount_timeout = parse_timeout(name, value)?,
            "fuse_threads" => {
                let n = parse_u64(name, require_value(name, value)?)?;
                if !(1..=64).contains(&n) {
                    return Err(OptionError::new(format!(
                        "option 'fuse_threads={n}': use 1 to 64"
                    )));
                }
                self.fuse_threads = n as usize;
            }
            "read_ahead_kb" => {
                let n = parse_u64(name, require_value(name, value)?)?;
                if n > 65_536 {
                    return Err(OptionError::new(format!(
                        "option 'read_ahead_kb={n}': use 0 (the kernel's default) to 65536"
                    )));
                }
                self.read_ahead_kb = n as u32;
                self.read_ahead_asked = true;
            }
            "io_threads" => {
                let n = parse_u64(name, require_value(name, value)?)?;
                if !(1..=256).contains(&n) {
                    return Err(OptionError::new(format!("option 'io_threads={n}': use 1 to 256")));
                }
                self.io_threads = n as usize;
            }
            "hardlink_errno" => {
                self.hardlink_errno = match require_value(name, value)? {
                    "enotsup" | "ENOTSUP" => HardlinkErrno::Enotsup,
                    "eperm" | "EPERM" => HardlinkErrno::Eperm,
                    v => {
                        return Err(OptionError::new(format!(
                            "option 'hardlink_errno={v}': use enotsup or eperm"
                        )))
                    }
                }
            }
            "nosuid" | "nodev" | "noexec" | "suid" | "dev" | "exec" | "noatime" | "atime" | "nodiratime"
            | "relatime" | "sync" | "async" | "dirsync" => {
                reject_value(name, value)?;
                self.kernel_flags.push(name.to_string());
            }
            "storage_class" => {
                let v = require_value(name, value)?;
                if !v.chars().all(|c| c.is_ascii_uppercase() || c == '_') {
                    return Err(OptionError::new(format!(
                        "option 'storage_class={v}': use an S3 storage class such as STANDARD, \
                         STANDARD_IA, INTELLIGENT_TIERING, GLACIER_IR"
                    )));
                }
                self.storage_class = Some(v.to_string());
            }
            "use_sse" => match value {
                None | Some("1") => self.use_sse = true,
                Some(v) if v == "custom" || v.starts_with("custom:") => {
                    return Err(OptionError::new(
                        "option 'use_sse=custom': rossfs has no SSE-C (keys the client provides); \
                         use use_sse (SSE-S3) or use_sse=kmsid:KEY_ID (SSE-KMS)",
                    ))
                }
                Some(v) => match v.strip_prefix("kmsid:") {
                    Some(id) if !id.is_empty() => self.set_kms_key(&format!("use_sse={v}"), id)?,
                    _ => {
                        return Err(OptionError::new(format!(
                            "option 'use_sse={v}': write use_sse (SSE-S3) or use_sse=kmsid:KEY_ID (SSE-KMS)"
                        )))
                    }
                },
            },
            "sse_kms_key_id" => {
                let v = require_value(name, value)?;
                self.set_kms_key(&format!("sse_kms_key_id={v}"), v)?;
            }
            "mime" => self.mime_file = PathBuf::from(require_value(name, value)?),
            "ca_bundle" => self.ca_bundle = Some(PathBuf::from(require_value(name, value)?)),
            "no_check_certificate" | "ssl_verify_hostname" => {
                return Err(OptionError::new(format!(
                    "option '{name}': rossfs always verifies TLS certificates; to trust a private \
                     or self-signed CA, give its certificate with ca_bundle=PATH (PEM)"
                )))
            }
            "metrics_addr" => {
                let v = require_value(name, value)?;
                self.metrics_addr = Some(v.parse().map_err(|_| {
                    OptionError::new(format!(
                        "option 'metrics_addr={v}': expected IP:PORT such as 127.0.0.1:9464"
                    ))
                })?);
            }
            "default_permissions" => reject_value(name, value)?,
            "nonempty" => {
                reject_value(name, value)?;
                self.nonempty = true;
            }
            _ if looks_like_credential(name) => {
                return Err(OptionError::new(format!(
                    "option '{name}' would put a credential on the command line, where every user \
                     can read it (ps, /proc/PID/cmdline); write ACCESS_KEY:SECRET into a file with \
                     mode 0600 and pass passwd_file=PATH, or use AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"
                )))
            }
            _ => {
                return Err(OptionError::new(format!(
                    "unknown option '{name}'; see 'rossfs --help' for the list of options"
                )))
            }
        }
        Ok(())
    }

    fn set_kms_key(&mut self, given_as: &str, id: &str) -> Result<(), OptionError> {
        match &self.sse_kms_key_id {
            Some(old) if old != id => Err(OptionError::new(format!(
                "option '{given_as}' names a different SSE-KMS key than an earlier option ('{old}'); give one key"
            ))),
            _ => {
                self.sse_kms_key_id = Some(id.to_string());
                Ok(())
            }
        }
    }

    fn validate(&self) -> Result<(), OptionError> {
        if self.use_sse && self.sse_kms_key_id.is_some() {
            return Err(OptionError::new(
                "options 'use_sse' (SSE-S3) and an SSE-KMS key (use_sse=kmsid: or sse_kms_key_id=) conflict: choose one",
            ));
        }
        if self.memory_staging_limit > 0 && self.memory_staging_limit < 64 * 1024 {
            return Err(OptionError::new(
                "option 'max_dirty_memory' is below 64 KiB; use 0 (always stage on disk) or 1 or more MiB",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_with_and_without_prefix() {
        let s = MountSource::parse("my-bucket").unwrap();
        assert_eq!(s.prefix, "");
        let s = MountSource::parse("my-bucket:/data/2024").unwrap();
        assert_eq!(
            (s.bucket.as_str(), s.prefix.as_str()),
            ("my-bucket", "data/2024/")
        );
        let s = MountSource::parse("my-bucket:data/").unwrap();
        assert_eq!(s.prefix, "data/");
        assert_eq!(MountSource::parse("my-bucket:/").unwrap().prefix, "");
    }

    #[test]
    fn bad_sources_are_refused() {
        for bad in [
            "", ":/x", "UPPER", "ab", "b:/a//c", "b:/../x", "-bucket", "bucket!",
        ] {
            let spec = if bad == "b:/a//c" || bad == "b:/../x" {
                format!("bkt{}", &bad[1..])
            } else {
                bad.to_string()
            };
            assert!(MountSource::parse(&spec).is_err(), "{spec} accepted");
        }
    }

    #[test]
    fn options_parse_with_values_and_flags() {
        let o = MountOptions::parse(&[
            "url=http://127.0.0.1:3900/,use_path_request_style",
            "allow_other,umask=022,uid=1000,stat_cache_expire=5,disable_noobj_cache",
            "multipart_size=16,dbglevel=debug",
        ])
        .unwrap();
        assert_eq!(o.endpoint.as_deref(), Some("http://127.0.0.1:3900"));
        assert!(o.path_style && o.allow_other && !o.negative_cache);
        assert_eq!(o.umask, Some(0o022));
        assert_eq!(o.uid, Some(1000));
        assert_eq!(o.stat_cache_expire, Duration::from_secs(5));
        assert_eq!(o.multipart_size, 16 << 20);
        assert_eq!(o.log_level, LogLevel::Debug);
    }

    #[test]
    fn unknown_and_malformed_options_name_the_option() {
        let e = MountOptions::parse(&["bogus_opt"]).unwrap_err();
        assert!(e.0.contains("unknown option 'bogus_opt'"), "{e}");
        for (bad, needle) in [
            ("uid=abc", "uid=abc"),
            ("umask=999", "umask=999"),
            ("url=ftp://x", "url=ftp://x"),
            ("url", "needs a value"),
            ("ro=1", "takes no value"),
            ("multipart_size=1", "5 to 5120"),
            ("singlepart_copy_limit=6000", "5 to 5120"),
            ("dbglevel=loud", "dbglevel=loud"),
            ("retries=0", "retries=0"),
            ("use_sse=custom", "no SSE-C"),
            ("use_sse=custom:/etc/keys", "no SSE-C"),
            ("endpoint=eu-west-1", "region=eu-west-1"),
            ("max_dirty_memory=17592186044416", "too large"),
            ("max_memory=17592186044417", "too large"),
        ] {
            let e = MountOptions::parse(&[bad]).unwrap_err();
            assert!(e.0.contains(needle), "{bad}: {e}");
        }
    }

    #[test]
    fn readme_documents_every_option() {
        let readme = include_str!("../README.md");
        for doc in OPTION_DOCS {
            for name in doc.name.split(", ") {
                assert!(readme.contains(&format!("`{name}")), "README lacks option {name}");
            }
        }
    }

    #[test]
    fn credentials_on_the_command_line_are_refused_without_echo() {
        for opt in [
            "secret_key=TOPSECRETVALUE",
            "aws_access_key_id=TOPSECRETVALUE",
            "sk=TOPSECRETVALUE",
            "url=https://AKID:TOPSECRETVALUE@s3.example.com",
            "endpoint=http://AKID:TOPSECRETVALUE@127.0.0.1:9000/",
            "url=AKID:TOPSECRETVALUE@s3.example.com",
        ] {
            let e = MountOptions::parse(&[opt]).unwrap_err();
            assert!(e.0.contains("passwd_file"), "{e}");
            assert!(!e.0.contains("TOPSECRETVALUE"), "{e}");
        }
    }

    #[test]
    fn every_documented_option_parses() {
        for doc in OPTION_DOCS {
            for name in doc.name.split(", ") {
                let item = match doc.value {
                    "" => name.to_string(),
                    "URL" => format!("{name}=http://localhost:9000"),
                    "OOO" => format!("{name}=022"),
                    "enotsup|eperm" => format!("{name}=eperm"),
                    "CLASS" => format!("{name}=STANDARD_IA"),
                    "IP:PORT" => format!("{name}=127.0.0.1:9464"),
                    "LEVEL" => format!("{name}=info"),
                    "MIB" => format!("{name}=16"),
                    _ => format!("{name}=7"),
                };
                MountOptions::parse(&[item.as_str()])
                    .unwrap_or_else(|e| panic!("documented option {item} refused: {e}"));
            }
        }
    }
}
