//! The S3 side: a local Garage started for the run (or an external server), and the raw
//! aws-sdk-s3 client used to prepare data, poll for durability, verify content and measure the
//! no-filesystem ceiling. Client settings follow rossfs's own (`src/store`): path-style
//! requests, static credentials, checksums only when required.

use std::collections::HashMap;
use std::fs;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_credential_types::Credentials;
use aws_sdk_s3::config::{BehaviorVersion, Region, RequestChecksumCalculation};
use aws_sdk_s3::error::DisplayErrorContext;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    BucketLocationConstraint, CompletedMultipartUpload, CompletedPart, CreateBucketConfiguration,
};
use aws_sdk_s3::Client;
use futures::{StreamExt, TryStreamExt};
use tempfile::TempDir;

use super::data;

pub const GARAGE_VERSION: &str = "2.5.0";
const GARAGE_REGION: &str = "garage";
const POLL: Duration = Duration::from_millis(25);

/// Where the S3 server is and how to sign for it.
#[derive(Clone, Debug)]
pub struct Endpoint {
    pub url: String,
    pub access_key: String,
    pub secret_key: String,
    pub region: String,
}

/// A Garage started for this run; killed (and its directory removed) on drop.
pub struct Garage {
    child: Child,
    _dir: TempDir,
    pub endpoint: Endpoint,
    pub bin: PathBuf,
}

impl Drop for Garage {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn garage_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("GARAGE_BIN") {
        return PathBuf::from(bin);
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    let cache = std::env::var_os("ROSSFS_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(home).join(".cache/rossfs"));
    cache.join(format!("garage-{GARAGE_VERSION}/bin/garage"))
}

fn random_hex(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    // SAFETY: getrandom into a buffer we own.
    let got = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), n, 0) };
    assert_eq!(got, n as isize, "getrandom");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn free_ports() -> (u16, u16) {
    let a = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    let b = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    (a.local_addr().unwrap().port(), b.local_addr().unwrap().port())
}

/// Start a single-node Garage on free loopback ports with a generated config and default key,
/// and wait until it answers ListBuckets. Must be called from a thread that outlives the run
/// (the child gets `PR_SET_PDEATHSIG`).
pub fn start_garage(rt: &tokio::runtime::Runtime) -> Result<Garage, String> {
    let bin = garage_bin();
    if !bin.is_file() {
        return Err(format!(
            "Garage not found at {} (run scripts/install-garage.sh, set GARAGE_BIN, or pass \
             --endpoint for another server)",
            bin.display()
        ));
    }
    let mut last = String::new();
    for _attempt in 0..5 {
        let dir = super::interrupt::scratch_dir("fsbench-garage-")?;
        let (s3_port, rpc_port) = free_ports();
        let endpoint = Endpoint {
            url: format!("http://127.0.0.1:{s3_port}"),
            access_key: format!("GK{}", random_hex(12)),
            secret_key: random_hex(32),
            region: GARAGE_REGION.into(),
        };
        let config = dir.path().join("garage.toml");
        fs::write(
            &config,
            format!(
                "metadata_dir = \"{m}\"\ndata_dir = \"{d}\"\ndb_engine = \"lmdb\"\n\
                 replication_factor = 1\nrpc_secret = \"{secret}\"\n\
                 rpc_bind_addr = \"127.0.0.1:{rpc_port}\"\nrpc_public_addr = \"127.0.0.1:{rpc_port}\"\n\
                 [s3_api]\ns3_region = \"{GARAGE_REGION}\"\napi_bind_addr = \"127.0.0.1:{s3_port}\"\n\
                 root_domain = \".s3.garage.localhost\"\n",
                m = dir.path().join("meta").display(),
                d = dir.path().join("data").display(),
                secret = random_hex(32),
            ),
        )
        .map_err(|e| format!("write {}: {e}", config.display()))?;
        let log_path = dir.path().join("garage.log");
        let log = fs::File::create(&log_path).map_err(|e| e.to_string())?;
        let mut cmd = Command::new(&bin);
        cmd.arg("-c")
            .arg(&config)
            .args(["server", "--single-node", "--default-access-key"])
            .env("GARAGE_DEFAULT_ACCESS_KEY", &endpoint.access_key)
            .env("GARAGE_DEFAULT_SECRET_KEY", &endpoint.secret_key)
            .env("RUST_LOG", "warn")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log);
        die_with_parent(&mut cmd);
        let mut child = cmd.spawn().map_err(|e| format!("start {}: {e}", bin.display()))?;
        let client = client(&endpoint);
        let started = Instant::now();
        let ready = loop {
            if let Ok(Some(status)) = child.try_wait() {
                last = format!(
                    "Garage exited with {status}: {}",
                    fs::read_to_string(&log_path).unwrap_or_default()
                );
                break false;
            }
            match rt.block_on(client.list_buckets().send()) {
                Ok(_) => break true,
                Err(e) => last = DisplayErrorContext(e).to_string(),
            }
            if started.elapsed() > Duration::from_secs(60) {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("Garage did not answer within 60 s: {last}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        if ready {
            return Ok(Garage {
                child,
                _dir: dir,
                endpoint,
                bin,
            });
        }
        let _ = child.wait();
        if !last.contains("Address already in use") {
            break;
        }
    }
    Err(last)
}

/// Make `cmd`'s process receive SIGKILL when the spawning thread ends.
pub fn die_with_parent(cmd: &mut Command) {
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
}

pub fn client(ep: &Endpoint) -> Client {
    let creds = Credentials::new(&ep.access_key, &ep.secret_key, None, None, "fsbench");
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(&ep.url)
        .region(Region::new(ep.region.clone()))
        .credentials_provider(creds)
        .force_path_style(true)
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(aws_sdk_s3::config::ResponseChecksumValidation::WhenRequired)
        .build();
    Client::from_conf(config)
}

fn err<E: std::error::Error + Send + Sync + 'static>(what: &str, e: aws_sdk_s3::error::SdkError<E>) -> String
where
    aws_sdk_s3::error::SdkError<E>: std::error::Error,
{
    format!("{what}: {}", DisplayErrorContext(e))
}

/// Metadata pairs (`x-amz-meta-<name>`) of an upload.
pub type Meta = Vec<(&'static str, String)>;
/// Key, body and metadata of one small upload.
pub type PutItem = (String, Vec<u8>, Option<Meta>);

/// The raw client bound to one bucket.
#[derive(Clone)]
pub struct S3 {
    pub client: Client,
    pub bucket: String,
    pub region: String,
}

/// One listed object.
#[derive(Clone, Debug)]
pub struct Listed {
    pub key: String,
    pub size: u64,
}

impl S3 {
    pub async fn create_bucket(&self) -> Result<(), String> {
        let mut req = self.client.create_bucket().bucket(&self.bucket);
        if self.region != "us-east-1" {
            req = req.create_bucket_configuration(
                CreateBucketConfiguration::builder()
                    .location_constraint(BucketLocationConstraint::from(self.region.as_str()))
                    .build(),
            );
        }
        req.send()
            .await
            .map(|_| ())
            .map_err(|e| err(&format!("CreateBucket {}", self.bucket), e))
    }

    pub async fn put(&self, key: &str, body: Vec<u8>, meta: Option<&[(&str, String)]>) -> Result<(), String> {
        let mut req = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .body(ByteStream::from(body));
        for (k, v) in meta.unwrap_or_default() {
            req = req.metadata(*k, v);
        }
        req.send()
            .await
            .map(|_| ())
            .map_err(|e| err(&format!("PutObject {key}"), e))
    }

    /// PUT many small objects with `concurrency` requests in flight.
    pub async fn put_many(&self, items: Vec<PutItem>, concurrency: usize) -> Result<(), String> {
        futures::stream::iter(items)
            .map(|(key, body, meta)| async move { self.put(&key, body, meta.as_deref()).await })
            .buffer_unordered(concurrency)
            .try_collect::<Vec<()>>()
            .await
            .map(|_| ())
    }

    /// Multipart upload of `size` bytes of stream `seed`, parts of `part` bytes, `inflight`
    /// parts at once (rossfs's defaults: 10 MiB, 5). Objects up to one part use one PUT.
    pub async fn upload_generated(
        &self,
        key: &str,
        seed: u64,
        size: u64,
        part: u64,
        inflight: usize,
    ) -> Result<(), String> {
        if size <= part {
            return self.put(key, data::generate(seed, 0, size as usize), None).await;
        }
        let upload = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| err(&format!("CreateMultipartUpload {key}"), e))?;
        let id = upload.upload_id().unwrap_or_default().to_string();
        let parts = size.div_ceil(part);
        let id_ref = &id;
        let result: Result<Vec<CompletedPart>, String> = futures::stream::iter(0..parts)
            .map(|i| async move {
                let start = i * part;
                let len = part.min(size - start) as usize;
                let body = data::generate(seed, start, len);
                let out = self
                    .client
                    .upload_part()
                    .bucket(&self.bucket)
                    .key(key)
                    .upload_id(id_ref)
                    .part_number(i as i32 + 1)
                    .body(ByteStream::from(body))
                    .send()
                    .await
                    .map_err(|e| err(&format!("UploadPart {key} #{}", i + 1), e))?;
                Ok(CompletedPart::builder()
                    .set_e_tag(out.e_tag().map(String::from))
                    .part_number(i as i32 + 1)
                    .build())
            })
            .buffered(inflight)
            .try_collect()
            .await;
        let parts = match result {
            Ok(parts) => parts,
            Err(e) => {
                let _ = self
                    .client
                    .abort_multipart_upload()
                    .bucket(&self.bucket)
                    .key(key)
                    .upload_id(&id)
                    .send()
                    .await;
                return Err(e);
            }
        };
        self.client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(&id)
            .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
            .send()
            .await
            .map(|_| ())
            .map_err(|e| err(&format!("CompleteMultipartUpload {key}"), e))
    }

    pub async fn get(&self, key: &str) -> Result<bytes::Bytes, String> {
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| err(&format!("GetObject {key}"), e))?;
        out.body
            .collect()
            .await
            .map(|b| b.into_bytes())
            .map_err(|e| format!("GetObject {key}: body: {e}"))
    }

    pub async fn get_range(&self, key: &str, start: u64, len: u64) -> Result<bytes::Bytes, String> {
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .range(format!("bytes={start}-{}", start + len - 1))
            .send()
            .await
            .map_err(|e| err(&format!("GetObject {key} range {start}+{len}"), e))?;
        let body = out
            .body
            .collect()
            .await
            .map(|b| b.into_bytes())
            .map_err(|e| format!("GetObject {key}: body: {e}"))?;
        if body.len() as u64 != len {
            return Err(format!(
                "GetObject {key} range {start}+{len}: got {} bytes",
                body.len()
            ));
        }
        Ok(body)
    }

    /// Time until the first body byte of a GET arrives.
    pub async fn first_byte(&self, key: &str) -> Result<Duration, String> {
        let t = Instant::now();
        let mut out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| err(&format!("GetObject {key}"), e))?;
        loop {
            match out.body.next().await {
                Some(Ok(b)) if !b.is_empty() => return Ok(t.elapsed()),
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(format!("GetObject {key}: body: {e}")),
                None => return Err(format!("GetObject {key}: empty body")),
            }
        }
    }

    /// Sequential read the way rossfs prefetches: ranged GETs growing from 256 KiB to 8 MiB (each
    /// ending on a multiple of its size),
    /// up to `inflight` at once, consumed in order and checked against stream `seed`.
    pub async fn read_prefetching(
        &self,
        key: &str,
        seed: u64,
        size: u64,
        inflight: usize,
    ) -> Result<(), String> {
        let mut ranges = Vec::new();
        let (mut pos, mut chunk) = (0u64, 256 * 1024u64);
        while pos < size {
            // Each range ends on a multiple of its size, as rossfs's read-ahead does.
            let len = ((pos / chunk + 1) * chunk - pos).min(size - pos);
            ranges.push((pos, len));
            pos += len;
            chunk = (chunk * 2).min(8 * 1024 * 1024);
        }
        let mut checker = data::Checker::new(seed);
        let mut stream = futures::stream::iter(ranges)
            .map(|(s, l)| self.get_range(key, s, l))
            .buffered(inflight);
        while let Some(part) = stream.next().await {
            checker.update(&part?).map_err(|e| format!("{key}: {e}"))?;
        }
        if checker.pos() != size {
            return Err(format!("{key}: read {} of {size} bytes", checker.pos()));
        }
        Ok(())
    }

    /// Verify size and full content of `key` against stream `seed` (8 MiB ranges, 8 at once).
    pub async fn verify(&self, key: &str, seed: u64, size: u64) -> Result<(), String> {
        match self.head_size(key).await? {
            Some(s) if s == size => {}
            other => return Err(format!("{key}: size {other:?}, expected {size}")),
        }
        if size == 0 {
            return Ok(());
        }
        let chunk = 8 * 1024 * 1024u64;
        futures::stream::iter((0..size.div_ceil(chunk)).map(|i| i * chunk))
            .map(|s| async move {
                let len = chunk.min(size - s);
                let body = self.get_range(key, s, len).await?;
                data::Checker::at(seed, s)
                    .update(&body)
                    .map_err(|e| format!("{key}: {e}"))
            })
            .buffer_unordered(8)
            .try_collect::<Vec<()>>()
            .await
            .map(|_| ())
    }

    pub async fn head_size(&self, key: &str) -> Result<Option<u64>, String> {
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(out) => Ok(Some(out.content_length().unwrap_or(0) as u64)),
            Err(e) => {
                let not_found = e.as_service_error().is_some_and(|s| s.is_not_found());
                if not_found {
                    Ok(None)
                } else {
                    Err(err(&format!("HeadObject {key}"), e))
                }
            }
        }
    }

    /// Every object under `prefix` (recursive), or with `delimiter` the objects and the
    /// number of common prefixes directly under it.
    pub async fn list(&self, prefix: &str, delimiter: Option<&str>) -> Result<(Vec<Listed>, usize), String> {
        let mut out = Vec::new();
        let mut prefixes = 0;
        let mut token: Option<String> = None;
        loop {
            let page = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(prefix)
                .set_delimiter(delimiter.map(String::from))
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(|e| err(&format!("ListObjectsV2 {prefix}"), e))?;
            out.extend(page.contents().iter().map(|o| Listed {
                key: o.key().unwrap_or_default().to_string(),
                size: o.size().unwrap_or(0) as u64,
            }));
            prefixes += page.common_prefixes().len();
            match page.next_continuation_token() {
                Some(t) if page.is_truncated() == Some(true) => token = Some(t.to_string()),
                _ => return Ok((out, prefixes)),
            }
        }
    }

    pub async fn delete(&self, key: &str) -> Result<(), String> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| err(&format!("DeleteObject {key}"), e))
    }

    /// Delete everything under `prefix`, 32 requests at once.
    pub async fn delete_prefix(&self, prefix: &str) -> Result<(), String> {
        let (objects, _) = self.list(prefix, None).await?;
        futures::stream::iter(objects)
            .map(|o| async move { self.delete(&o.key).await })
            .buffer_unordered(32)
            .try_collect::<Vec<()>>()
            .await
            .map(|_| ())
    }

    /// Poll until `key` exists with `size` bytes ("durable").
    pub async fn wait_size(&self, key: &str, size: u64, timeout: Duration) -> Result<(), String> {
        let start = Instant::now();
        loop {
            let got = self.head_size(key).await;
            if matches!(got, Ok(Some(s)) if s == size) {
                return Ok(());
            }
            if start.elapsed() > timeout {
                return Err(format!("{key} not durable after {timeout:?}: last HEAD {got:?}"));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Poll the listing of `prefix` until every expected key exists with its size.
    pub async fn wait_keys(
        &self,
        prefix: &str,
        expected: &HashMap<String, u64>,
        timeout: Duration,
    ) -> Result<(), String> {
        let start = Instant::now();
        loop {
            let (listed, _) = self.list(prefix, None).await?;
            let have: HashMap<&str, u64> = listed.iter().map(|o| (o.key.as_str(), o.size)).collect();
            let missing = expected
                .iter()
                .filter(|(k, s)| have.get(k.as_str()) != Some(s))
                .count();
            if missing == 0 {
                return Ok(());
            }
            if start.elapsed() > timeout {
                return Err(format!(
                    "{missing} of {} objects under {prefix} not durable after {timeout:?}",
                    expected.len()
                ));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Poll the listing of `prefix` until none of `keys` (or, if `None`, no key at all) remains.
    pub async fn wait_gone(
        &self,
        prefix: &str,
        keys: Option<&HashMap<String, u64>>,
        timeout: Duration,
    ) -> Result<(), String> {
        let start = Instant::now();
        loop {
            let (listed, _) = self.list(prefix, None).await?;
            let left = listed
                .iter()
                .filter(|o| keys.is_none_or(|k| k.contains_key(&o.key)))
                .count();
            if left == 0 {
                return Ok(());
            }
            if start.elapsed() > timeout {
                return Err(format!(
                    "{left} objects under {prefix} still present after {timeout:?}"
                ));
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

/// Read a local file fully (for raw uploads of the W7 tree).
pub fn read_local(path: &Path) -> Result<Vec<u8>, String> {
    fs::read(path).map_err(|e| format!("read {}: {e}", path.display()))
}
