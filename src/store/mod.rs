//! The object-store client: the only module that talks S3.
//!
//! [`ObjectStore`] wraps one `aws_sdk_s3::Client` bound to one bucket and offers the handful of
//! operations the filesystem needs (HEAD, LIST, ranged GET, PUT, multipart, DELETE), each
//! returning plain data ([`ObjectInfo`], [`ListPage`]) or a [`StoreError`] that keeps the S3 error
//! code. Retries (standard mode, exponential backoff with jitter), connect and per-attempt
//! timeouts, and checksum policy (only when the server requires one: some S3 implementations
//! reject aws-chunked uploads with checksum trailers) are configured here once, from the mount
//! options. Nothing above this layer sees an SDK type.

mod credentials;
mod error;
mod lean;
mod quick_ack;
mod xml_answers;

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::BehaviorVersion;
use aws_sdk_s3::config::{Region, RequestChecksumCalculation, ResponseChecksumValidation};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};

pub use credentials::{load_passwd_file, parse_passwd, PasswdFileError, PasswdFileProvider, ReloadingChain};
pub use error::StoreError;

use crate::buffer_pool::BufferPool;
use crate::options::{MountOptions, MountSource};

/// Characters escaped in `x-amz-copy-source` (everything but unreserved characters and `/`).
const COPY_SOURCE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'/')
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Standard headers saying how an object's content is to be served, which S3 keeps beside
/// `Content-Type`. A copy with `REPLACE` (a chmod) or a new PUT of the content would drop them,
/// so every rewrite of an existing object sends back the ones it had.
pub const CONTENT_HEADERS: [&str; 5] = [
    "cache-control",
    "content-disposition",
    "content-encoding",
    "content-language",
    "expires",
];

/// The [`CONTENT_HEADERS`] among an object's headers (`header` looks one up by lower-case
/// name). An `aws-chunked` content encoding says how an upload was sent, not what the content
/// is; a server that kept it would try to decode a rewrite's plain body as chunks, so it is
/// left out.
pub(crate) fn content_headers_from(header: impl Fn(&str) -> Option<String>) -> Vec<(String, String)> {
    CONTENT_HEADERS
        .iter()
        .filter_map(|&name| {
            let mut value = header(name)?;
            if name == "content-encoding" {
                value = value
                    .split(',')
                    .map(str::trim)
                    .filter(|t| !t.is_empty() && !t.eq_ignore_ascii_case("aws-chunked"))
                    .collect::<Vec<_>>()
                    .join(", ");
            }
            (!value.is_empty()).then(|| (name.to_string(), value))
        })
        .collect()
}

/// What a HEAD (or a LIST entry) tells about one object.
#[derive(Debug, Clone, Default)]
pub struct ObjectInfo {
    /// Full key.
    pub key: String,
    /// Content length.
    pub size: u64,
    /// ETag as the server sent it (with quotes).
    pub etag: Option<String>,
    /// `Last-Modified`.
    pub last_modified: Option<SystemTime>,
    /// `Content-Type` (HEAD only).
    pub content_type: Option<String>,
    /// User metadata (`x-amz-meta-*`), names lower-cased without the prefix (HEAD only).
    pub metadata: HashMap<String, String>,
    /// The [`CONTENT_HEADERS`] it has, in that order (HEAD only).
    pub content_headers: Vec<(String, String)>,
}

/// One page of a delimited listing.
#[derive(Debug, Clone, Default)]
pub struct ListPage {
    /// Objects directly under the prefix (no metadata: LIST does not return it).
    pub objects: Vec<ObjectInfo>,
    /// Common prefixes ("sub-directories"), each ending in the delimiter.
    pub prefixes: Vec<String>,
    /// Token (or marker, for v1) of the next page; `None` on the last page.
    pub next: Option<String>,
}

/// Headers written with a new object.
#[derive(Debug, Clone, Default)]
pub struct PutOptions {
    /// `Content-Type`.
    pub content_type: String,
    /// User metadata, names without the `x-amz-meta-` prefix.
    pub metadata: HashMap<String, String>,
    /// [`CONTENT_HEADERS`] kept from the object this one replaces or copies.
    pub content_headers: Vec<(String, String)>,
}

/// Server-side encryption asked for on every upload and copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Encryption {
    /// SSE-S3 (`AES256`).
    S3Managed,
    /// SSE-KMS with this key id.
    Kms(String),
}

/// The longest the mount's first request waits for an answer, per attempt.
pub const STARTUP_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(15);

/// Largest object a single CopyObject may copy on S3.
const MAX_SINGLE_COPY: u64 = 5 * 1024 * 1024 * 1024;
/// Largest object a single CopyObject may copy on Alibaba OSS.
const OSS_MAX_SINGLE_COPY: u64 = 1024 * 1024 * 1024;
/// Part size of multipart copies (when the single-copy limit is not smaller).
const COPY_PART: u64 = 512 * 1024 * 1024;
/// Most parts one multipart upload may have.
pub const MAX_PARTS: u64 = 10_000;

/// Whether two ETags name the same version: equal but for their quotes (some servers list
/// ETags without them).
pub fn etags_match(a: &str, b: &str) -> bool {
    a.trim_matches('"') == b.trim_matches('"')
}

/// Part size of a multipart copy of `size` bytes for a single-copy limit of `limit`: at most
/// [`COPY_PART`] and the limit (so a server that refuses large copies gets parts it accepts),
/// at least S3's 5 MiB minimum, and large enough for the parts to fit S3's 10,000.
fn copy_part_size(size: u64, limit: u64) -> u64 {
    const MIN_PART: u64 = 5 * 1024 * 1024;
    COPY_PART
        .min(limit)
        .max(MIN_PART)
        .max(size.div_ceil(MAX_PARTS).next_multiple_of(1024 * 1024))
}

/// Decodes listing keys when the server URL-encoded them.
struct KeyDecoder(bool);

impl KeyDecoder {
    /// `encoding-type=url` is form encoding: AWS S3 and MinIO write a space as `+` and a literal
    /// `+` as `%2B`; servers that write a space as `%20` (Garage) also escape `+`, so turning
    /// every `+` into a space before percent-decoding is right for both.
    fn key(&self, k: &str) -> String {
        if self.0 {
            let spaced = k.replace('+', " ");
            percent_encoding::percent_decode_str(&spaced)
                .decode_utf8_lossy()
                .into_owned()
        } else {
            k.to_string()
        }
    }

    fn object(&self, o: &aws_sdk_s3::types::Object) -> Option<ObjectInfo> {
        Some(ObjectInfo {
            key: self.key(o.key()?),
            size: o.size().unwrap_or(0).max(0) as u64,
            etag: o.e_tag().map(str::to_string),
            last_modified: o.last_modified().and_then(|t| SystemTime::try_from(*t).ok()),
            ..Default::default()
        })
    }
}

/// The bucket, seen through the S3 API.
#[derive(Debug, Clone)]
pub struct ObjectStore {
    client: aws_sdk_s3::Client,
    bucket: String,
    endpoint: String,
    list_v1: bool,
    storage_class: Option<aws_sdk_s3::types::StorageClass>,
    encryption: Option<Encryption>,
    /// Multipart uploads whose abort failed: (key, upload id), retried until they go.
    pending_aborts: std::sync::Arc<std::sync::Mutex<Vec<(String, String)>>>,
    /// The lean path for HEAD, GET, LIST (v2), PUT, UploadPart, CopyObject and DELETE (`None`: everything goes
    /// through the SDK).
    lean: Option<std::sync::Arc<lean::LeanClient>>,
    /// The server honours `If-Match` on GET (cleared, with one warning, by a server that
    /// answers it with `501 NotImplemented`: reads then go unguarded).
    if_match_works: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Largest object copied with one CopyObject; larger ones are copied in parts.
    single_copy_limit: u64,
    /// Recycled buffers for the bodies of upload parts.
    buffers: std::sync::Arc<BufferPool>,
    /// How long each attempt of the mount's first request waits: `readwrite_timeout`, at most
    /// [`STARTUP_ATTEMPT_TIMEOUT`].
    startup_attempt_timeout: Duration,
}

/// An HTTPS client that trusts the system roots plus the PEM certificates in `path`.
fn https_client_trusting(path: &std::path::Path) -> Result<aws_sdk_s3::config::SharedHttpClient, String> {
    use aws_smithy_http_client::tls;
    let pem = std::fs::read(path).map_err(|e| format!("cannot read ca_bundle {}: {e}", path.display()))?;
    if !pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") {
        return Err(format!(
            "ca_bundle {} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            path.display()
        ));
    }
    let ctx = tls::TlsContext::builder()
        .with_trust_store(
            tls::TrustStore::empty()
                .with_native_roots(true)
                .with_pem_certificate(pem),
        )
        .build()
        .map_err(|e| format!("ca_bundle {} cannot be used: {e}", path.display()))?;
    Ok(aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::rustls(tls::rustls_provider::CryptoMode::AwsLc))
        .tls_context(ctx)
        .build_https())
}

/// Keys from the environment variables Alibaba OSS tools use (`OSS_ACCESS_KEY_ID` and
/// `OSS_ACCESS_KEY_SECRET`, or ossfs's `OSSACCESSKEYID` and `OSSSECRETACCESSKEY`).
fn oss_env_keys() -> Option<(String, String)> {
    let get = |names: &[&str]| {
        names
            .iter()
            .find_map(|n| std::env::var(n).ok().filter(|v| !v.is_empty()))
    };
    Some((
        get(&["OSS_ACCESS_KEY_ID", "OSSACCESSKEYID"])?,
        get(&["OSS_ACCESS_KEY_SECRET", "OSSSECRETACCESSKEY"])?,
    ))
}

/// Applies storage class and encryption to a request builder that creates an object.
macro_rules! write_headers {
    ($req:expr, $store:expr) => {{
        let mut req = $req.set_storage_class($store.storage_class.clone());
        match &$store.encryption {
            Some(Encryption::S3Managed) => {
                req = req.server_side_encryption(aws_sdk_s3::types::ServerSideEncryption::Aes256)
            }
            Some(Encryption::Kms(id)) => {
                req = req
                    .server_side_encryption(aws_sdk_s3::types::ServerSideEncryption::AwsKms)
                    .ssekms_key_id(id)
            }
            None => {}
        }
        req
    }};
}

/// Sets the [`CONTENT_HEADERS`] of `$put` on an SDK request (PutObject, CreateMultipartUpload,
/// CopyObject). The SDK takes `Expires` only as a date; a stored value that is not one (`0`,
/// `-1`) means "already expired" to HTTP caches, and is sent as the epoch, which means the same.
macro_rules! content_headers {
    ($req:expr, $put:expr) => {{
        let get = |name: &str| {
            $put.content_headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
        };
        $req.set_cache_control(get("cache-control"))
            .set_content_disposition(get("content-disposition"))
            .set_content_encoding(get("content-encoding"))
            .set_content_language(get("content-language"))
            .set_expires(get("expires").map(|v| {
                aws_smithy_types::DateTime::from_str(v.trim(), aws_smithy_types::date_time::Format::HttpDate)
                    .unwrap_or(aws_smithy_types::DateTime::from_secs(0))
            }))
    }};
}

impl ObjectStore {
    /// Builds the client from the options: endpoint, region, path style, credentials (the
    /// password file, else the standard AWS chain), retries and timeouts. Makes no request.
    pub async fn new(opts: &MountOptions, source: &MountSource) -> Result<Self, String> {
        let mut loader = aws_config::defaults(BehaviorVersion::latest());
        let region = opts
            .region
            .clone()
            .or_else(|| std::env::var("AWS_REGION").ok())
            .or_else(|| std::env::var("AWS_DEFAULT_REGION").ok())
            // A custom endpoint needs no region lookup through instance metadata.
            .or_else(|| opts.endpoint.as_ref().map(|_| "us-east-1".to_string()));
        if let Some(region) = &region {
            loader = loader.region(Region::new(region.clone()));
        }
        // Credentials are cached by the providers themselves (which notice rotated files), not
        // by the SDK's identity cache, which would keep old keys for up to 15 minutes.
        match &opts.passwd_file {
            Some(path) => {
                let provider =
                    PasswdFileProvider::new(path.clone(), &source.bucket).map_err(|e| e.to_string())?;
                loader = loader.credentials_provider(provider);
            }
            None => match oss_env_keys() {
                // Alibaba OSS users' variables, when the AWS ones are not set.
                Some((ak, sk)) if std::env::var_os("AWS_ACCESS_KEY_ID").is_none() => {
                    loader = loader.credentials_provider(aws_credential_types::Credentials::new(
                        ak,
                        sk,
                        std::env::var("OSS_SESSION_TOKEN").ok(),
                        None,
                        "oss-environment",
                    ));
                }
                _ => {
                    loader =
                        loader.credentials_provider(ReloadingChain::new(region.clone().map(Region::new)));
                }
            },
        }
        let shared = loader.load().await;
        let mut builder = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(opts.path_style)
            .retry_config(
                RetryConfig::standard()
                    .with_max_attempts(opts.retries)
                    .with_initial_backoff(Duration::from_millis(100))
                    .with_max_backoff(Duration::from_secs(5)),
            )
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(opts.connect_timeout)
                    .operation_attempt_timeout(opts.readwrite_timeout)
                    .build(),
            )
            .identity_cache(aws_sdk_s3::config::IdentityCache::no_cache())
            .interceptor(crate::metrics::RequestObserver)
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
        if shared.region().is_none() {
            builder = builder.region(Region::new("us-east-1"));
        }
        if let Some(url) = &opts.endpoint {
            builder = builder.endpoint_url(url.clone());
        }
        if let Some(path) = &opts.ca_bundle {
            builder = builder.http_client(https_client_trusting(path)?);
        }
        let endpoint = opts.endpoint.clone().unwrap_or_else(|| {
            let region = shared
                .region()
                .map(|r| r.to_string())
                .unwrap_or_else(|| "us-east-1".into());
            format!("https://s3.{region}.amazonaws.com")
        });
        let config = builder.build();
        // Parts read back from spill files wait here for the next part: up to a quarter of
        // max_memory (32 MiB by default, three 10 MiB parts).
        let buffers = BufferPool::new((opts.max_memory / 4).try_into().unwrap_or(usize::MAX));
        buffers.spawn_trimmer();
        let lean = match (shared.credentials_provider(), config.region()) {
            (Some(credentials), Some(region)) if !opts.sdk_only => {
                let ca_pem = match &opts.ca_bundle {
                    Some(path) => Some(
                        std::fs::read(path)
                            .map_err(|e| format!("cannot read ca_bundle {}: {e}", path.display()))?,
                    ),
                    None => None,
                };
                let settings = lean::LeanSettings {
                    endpoint: &endpoint,
                    bucket: &source.bucket,
                    region: region.as_ref(),
                    path_style: opts.path_style,
                    attempts: opts.retries,
                    connect_timeout: opts.connect_timeout,
                    attempt_timeout: opts.readwrite_timeout,
                    ca_pem: ca_pem.as_deref(),
                };
                lean::LeanClient::new(&settings, credentials)?.map(std::sync::Arc::new)
            }
            _ => None,
        };
        Ok(Self {
            lean,
            client: aws_sdk_s3::Client::from_conf(config),
            bucket: source.bucket.clone(),
            endpoint,
            list_v1: opts.list_objects_v1,
            storage_class: opts
                .storage_class
                .as_deref()
                .map(aws_sdk_s3::types::StorageClass::from),
            encryption: match (&opts.sse_kms_key_id, opts.use_sse) {
                (Some(id), _) => Some(Encryption::Kms(id.clone())),
                (None, true) => Some(Encryption::S3Managed),
                (None, false) => None,
            },
            pending_aborts: Default::default(),
            if_match_works: std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true)),
            startup_attempt_timeout: opts.readwrite_timeout.min(STARTUP_ATTEMPT_TIMEOUT),
            buffers,
            single_copy_limit: opts.singlepart_copy_limit.unwrap_or_else(|| {
                // OSS refuses CopyObject past 1 GiB (S3 past 5 GiB).
                let oss = opts
                    .endpoint
                    .as_deref()
                    .is_some_and(|e| e.contains(".aliyuncs.com"));
                if oss {
                    OSS_MAX_SINGLE_COPY
                } else {
                    MAX_SINGLE_COPY
                }
            }),
        })
    }

    /// The bucket name.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The endpoint URL, for messages.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The mount's recycled buffers for upload parts.
    pub fn buffers(&self) -> &std::sync::Arc<BufferPool> {
        &self.buffers
    }

    fn err<E>(
        &self,
        e: aws_sdk_s3::error::SdkError<E, aws_smithy_runtime_api::client::orchestrator::HttpResponse>,
        op: &'static str,
        key: &str,
    ) -> StoreError
    where
        E: aws_sdk_s3::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        self.noted(StoreError::from_sdk(e, op, key, &self.endpoint))
    }

    /// Counts and logs a failure (not a 404, which is how absence is learned).
    fn noted(&self, e: StoreError) -> StoreError {
        if !e.is_not_found() {
            tracing::debug!("{e}");
            let code = match &e {
                StoreError::Service { code, .. } => code.as_str(),
                StoreError::Timeout { .. } => "Timeout",
                StoreError::Unreachable { .. } => "Unreachable",
                _ => "Other",
            };
            crate::metrics::global().s3_error(e.op(), code);
        }
        e
    }

    /// One cheap request that proves endpoint, credentials and bucket work: a one-key listing of
    /// the mount prefix, tried at most twice, each attempt bounded by `readwrite_timeout` and
    /// [`STARTUP_ATTEMPT_TIMEOUT`], so an unreachable or hung endpoint fails the mount in well
    /// under a minute (systemd's default for a mount unit is 90 s) instead of twice
    /// `readwrite_timeout`.
    pub async fn check_access(&self, prefix: &str) -> Result<(), StoreError> {
        let quick = aws_sdk_s3::config::Builder::default()
            .retry_config(
                RetryConfig::standard()
                    .with_max_attempts(2)
                    .with_initial_backoff(Duration::from_millis(200)),
            )
            .timeout_config(
                TimeoutConfig::builder()
                    .operation_attempt_timeout(self.startup_attempt_timeout)
                    .build(),
            );
        // One key of the listing, in the version the listings use (`listobjectsv1`: the
        // server may not know version 2 at all).
        macro_rules! one_key {
            ($op:ident, $name:literal) => {
                self.client
                    .$op()
                    .bucket(&self.bucket)
                    .prefix(prefix)
                    .max_keys(1)
                    .customize()
                    .config_override(quick)
                    .send()
                    .await
                    .map(drop)
                    .map_err(|e| self.err(e, $name, prefix))
            };
        }
        if self.list_v1 {
            one_key!(list_objects, "ListObjects")
        } else {
            one_key!(list_objects_v2, "ListObjectsV2")
        }
    }

    /// HEAD of a key: `Ok(None)` only for a real 404; every other failure is an error, never
    /// "absent".
    pub async fn head(&self, key: &str) -> Result<Option<ObjectInfo>, StoreError> {
        if let Some(lean) = &self.lean {
            return self.head_lean(lean, key).await;
        }
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(out) => Ok(Some(ObjectInfo {
                key: key.to_string(),
                size: out.content_length().unwrap_or(0).max(0) as u64,
                etag: out.e_tag().map(str::to_string),
                last_modified: out.last_modified().and_then(|t| SystemTime::try_from(*t).ok()),
                content_type: out.content_type().map(str::to_string),
                metadata: out
                    .metadata()
                    .map(|m| {
                        m.iter()
                            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
                            .collect()
                    })
                    .unwrap_or_default(),
                content_headers: content_headers_from(|name| {
                    match name {
                        "cache-control" => out.cache_control(),
                        "content-disposition" => out.content_disposition(),
                        "content-encoding" => out.content_encoding(),
                        "content-language" => out.content_language(),
                        "expires" => out.expires_string(),
                        _ => None,
                    }
                    .map(str::to_string)
                }),
            })),
            Err(e) => {
                let e = self.err(e, "HeadObject", key);
                if e.is_not_found() {
                    Ok(None)
                } else {
                    Err(e)
                }
            }
        }
    }

    async fn head_lean(&self, lean: &lean::LeanClient, key: &str) -> Result<Option<ObjectInfo>, StoreError> {
        match self
            .lean_call(
                lean,
                "HeadObject",
                http::Method::HEAD,
                key,
                "",
                Vec::new(),
                Bytes::new(),
            )
            .await
        {
            Ok(r) => Ok(Some(lean::object_info(key, &r.headers))),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// One request on the lean path; an answer other than 2xx becomes its [`StoreError`] (counted
    /// and logged like the SDK path's).
    #[allow(clippy::too_many_arguments)]
    async fn lean_call(
        &self,
        lean: &lean::LeanClient,
        op: &'static str,
        method: http::Method,
        key: &str,
        query: &str,
        headers: Vec<(String, String)>,
        body: Bytes,
    ) -> Result<lean::LeanResponse, StoreError> {
        if key.is_empty() {
            // The bucket itself, not an object (the SDK refuses an empty key too).
            return Err(StoreError::local(op, key, "an object key cannot be empty"));
        }
        self.lean_request(lean, op, method, key, key, query, headers, body)
            .await
    }

    /// One request on the lean path to `key` (`""`: the bucket), reported as about `subject`.
    #[allow(clippy::too_many_arguments)]
    async fn lean_request(
        &self,
        lean: &lean::LeanClient,
        op: &'static str,
        method: http::Method,
        key: &str,
        subject: &str,
        query: &str,
        headers: Vec<(String, String)>,
        body: Bytes,
    ) -> Result<lean::LeanResponse, StoreError> {
        let r = lean
            .send(op, method, key, subject, query, &headers, body)
            .await
            .map_err(|e| self.noted(e))?;
        if (200..300).contains(&r.status) {
            return Ok(r);
        }
        let (code, message) = lean::error_code(&r.body);
        let region = r
            .headers
            .get(error::BUCKET_REGION_HEADER)
            .and_then(|v| v.to_str().ok());
        Err(self
            .noted(StoreError::from_status(op, subject, r.status, code, message).with_bucket_region(region)))
    }

    /// The headers of a new object on the lean path: type, user metadata, storage class and
    /// encryption (what `write_headers!` sets on the SDK path).
    fn object_headers(&self, put: &PutOptions) -> Vec<(String, String)> {
        let mut h = vec![("content-type".to_string(), put.content_type.clone())];
        h.extend(put.content_headers.iter().cloned());
        h.extend(
            put.metadata
                .iter()
                .map(|(k, v)| (format!("x-amz-meta-{k}"), v.clone())),
        );
        h.extend(self.placement_headers());
        h
    }

    /// Storage class and encryption headers of every object write on the lean path.
    fn placement_headers(&self) -> Vec<(String, String)> {
        let mut h = Vec::new();
        if let Some(class) = &self.storage_class {
            h.push(("x-amz-storage-class".into(), class.as_str().to_string()));
        }
        match &self.encryption {
            Some(Encryption::S3Managed) => h.push(("x-amz-server-side-encryption".into(), "AES256".into())),
            Some(Encryption::Kms(id)) => {
                h.push(("x-amz-server-side-encryption".into(), "aws:kms".into()));
                h.push(("x-amz-server-side-encryption-aws-kms-key-id".into(), id.clone()));
            }
            None => {}
        }
        h
    }

    /// One page of the listing of `prefix`, grouped by `/` when `delimited`. Keys travel
    /// URL-encoded (a raw key with control characters would make the XML unreadable) and are
    /// decoded here when the server says it encoded them.
    pub async fn list(
        &self,
        prefix: &str,
        delimited: bool,
        token: Option<String>,
        max_keys: i32,
    ) -> Result<ListPage, StoreError> {
        if self.list_v1 {
            return self.list_v1(prefix, delimited, token, max_keys).await;
        }
        if let Some(lean) = &self.lean {
            return self.list_lean(lean, prefix, delimited, token, max_keys).await;
        }
        let out = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .max_keys(max_keys)
            .encoding_type(aws_sdk_s3::types::EncodingType::Url)
            .set_delimiter(delimited.then(|| "/".to_string()))
            .set_continuation_token(token)
            .send()
            .await
            .map_err(|e| self.err(e, "ListObjectsV2", prefix))?;
        let decode = KeyDecoder(out.encoding_type() == Some(&aws_sdk_s3::types::EncodingType::Url));
        let next = match out.is_truncated() {
            Some(true) => out.next_continuation_token().map(str::to_string),
            _ => None,
        };
        Ok(ListPage {
            objects: out.contents().iter().filter_map(|o| decode.object(o)).collect(),
            prefixes: out
                .common_prefixes()
                .iter()
                .filter_map(|p| p.prefix().map(|k| decode.key(k)))
                .collect(),
            next,
        })
    }

    /// [`Self::list`] on the lean path: the same `ListObjectsV2` request, its XML read by
    /// [`xml_answers`] instead of the SDK's deserializer.
    async fn list_lean(
        &self,
        lean: &lean::LeanClient,
        prefix: &str,
        delimited: bool,
        token: Option<String>,
        max_keys: i32,
    ) -> Result<ListPage, StoreError> {
        const OP: &str = "ListObjectsV2";
        let enc = |v: &str| percent_encoding::utf8_percent_encode(v, lean::QUERY_VALUE).to_string();
        let mut query = String::new();
        if let Some(t) = &token {
            query.push_str(&format!("continuation-token={}&", enc(t)));
        }
        if delimited {
            query.push_str("delimiter=%2F&");
        }
        query.push_str(&format!(
            "encoding-type=url&list-type=2&max-keys={max_keys}&prefix={}",
            enc(prefix)
        ));
        let r = self
            .lean_request(
                lean,
                OP,
                http::Method::GET,
                "",
                prefix,
                &query,
                Vec::new(),
                Bytes::new(),
            )
            .await?;
        let raw =
            xml_answers::parse_list_v2(&r.body).map_err(|e| self.noted(StoreError::local(OP, prefix, e)))?;
        let decode = KeyDecoder(raw.url_encoded);
        let objects = raw
            .objects
            .into_iter()
            .map(|mut o| {
                o.key = decode.key(&o.key);
                o
            })
            .collect();
        Ok(ListPage {
            objects,
            prefixes: raw.prefixes.iter().map(|p| decode.key(p)).collect(),
            next: if raw.truncated { raw.next_token } else { None },
        })
    }

    async fn list_v1(
        &self,
        prefix: &str,
        delimited: bool,
        marker: Option<String>,
        max_keys: i32,
    ) -> Result<ListPage, StoreError> {
        let out = self
            .client
            .list_objects()
            .bucket(&self.bucket)
            .prefix(prefix)
            .max_keys(max_keys)
            .encoding_type(aws_sdk_s3::types::EncodingType::Url)
            .set_delimiter(delimited.then(|| "/".to_string()))
            .set_marker(marker)
            .send()
            .await
            .map_err(|e| self.err(e, "ListObjects", prefix))?;
        let decode = KeyDecoder(out.encoding_type() == Some(&aws_sdk_s3::types::EncodingType::Url));
        let objects: Vec<ObjectInfo> = out.contents().iter().filter_map(|o| decode.object(o)).collect();
        let prefixes: Vec<String> = out
            .common_prefixes()
            .iter()
            .filter_map(|p| p.prefix().map(|k| decode.key(k)))
            .collect();
        let next = if out.is_truncated() == Some(true) {
            // v1 gives NextMarker only with a delimiter; otherwise the last key is the marker.
            out.next_marker().map(|m| decode.key(m)).or_else(|| {
                let last_obj = objects.last().map(|o| o.key.clone());
                let last_pre = prefixes.last().cloned();
                last_obj.max(last_pre)
            })
        } else {
            None
        };
        Ok(ListPage {
            objects,
            prefixes,
            next,
        })
    }

    /// Bytes `[start, end)` of an object. Returns fewer bytes only at the end of the object.
    /// With `if_match`, only of the object whose ETag that is: another version (replaced by
    /// another client since) fails with `412 PreconditionFailed` instead of handing out a mix
    /// of two versions' bytes.
    pub async fn get_range(
        &self,
        key: &str,
        start: u64,
        end: u64,
        if_match: Option<&str>,
    ) -> Result<Bytes, StoreError> {
        use std::sync::atomic::Ordering::Relaxed;
        // A quoted entity tag, as S3 expects (some servers list ETags without their quotes).
        let guard = if_match
            .filter(|_| self.if_match_works.load(Relaxed))
            .map(|etag| format!("\"{}\"", etag.trim_matches('"')));
        match self.get_range_once(key, start, end, guard.as_deref()).await {
            Err(StoreError::Service { status: 501, .. }) if guard.is_some() => {
                if self.if_match_works.swap(false, Relaxed) {
                    tracing::warn!(
                        "the server does not take If-Match on GET (501 NotImplemented): reads are \
                         not checked against the version opened, so a file another client \
                         replaces while it is open here may read as a mix of both versions"
                    );
                }
                self.get_range_once(key, start, end, None).await
            }
            other => other,
        }
    }

    async fn get_range_once(
        &self,
        key: &str,
        start: u64,
        end: u64,
        if_match: Option<&str>,
    ) -> Result<Bytes, StoreError> {
        if end <= start {
            return Ok(Bytes::new());
        }
        if let Some(lean) = &self.lean {
            let mut headers = vec![("range".to_string(), format!("bytes={}-{}", start, end - 1))];
            if let Some(etag) = if_match {
                headers.push(("if-match".to_string(), etag.to_string()));
            }
            return match self
                .lean_call(
                    lean,
                    "GetObject",
                    http::Method::GET,
                    key,
                    "",
                    headers,
                    Bytes::new(),
                )
                .await
            {
                Ok(r) => Ok(r.body),
                // Reading at or past the end of an object: nothing to return.
                Err(StoreError::Service { status: 416, .. }) => Ok(Bytes::new()),
                Err(e) => Err(e),
            };
        }
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .range(format!("bytes={}-{}", start, end - 1))
            .set_if_match(if_match.map(str::to_string))
            .send()
            .await;
        let out = match out {
            Ok(o) => o,
            Err(e) => {
                let e = self.err(e, "GetObject", key);
                // Reading at or past the end of an object: nothing to return.
                if let StoreError::Service { status: 416, .. } = e {
                    return Ok(Bytes::new());
                }
                return Err(e);
            }
        };
        // Into one buffer of the expected size: no second copy of large ranges.
        let mut buf = bytes::BytesMut::with_capacity((end - start).min(64 * 1024 * 1024) as usize);
        let mut body = out.body;
        loop {
            match body.try_next().await {
                Ok(Some(chunk)) => buf.extend_from_slice(&chunk),
                Ok(None) => break,
                Err(e) => {
                    return Err(StoreError::local(
                        "GetObject",
                        key,
                        format!("reading the response body failed: {e}"),
                    ))
                }
            }
        }
        Ok(buf.freeze())
    }

    /// PUT of a whole object; returns its ETag.
    pub async fn put(&self, key: &str, body: Bytes, opts: &PutOptions) -> Result<Option<String>, StoreError> {
        if let Some(lean) = &self.lean {
            let headers = self.object_headers(opts);
            let r = self
                .lean_call(lean, "PutObject", http::Method::PUT, key, "", headers, body)
                .await?;
            return Ok(lean::header(&r.headers, "etag"));
        }
        let req = content_headers!(write_headers!(self.client.put_object(), self), opts);
        let out = req
            .bucket(&self.bucket)
            .key(key)
            .content_length(body.len() as i64)
            .content_type(&opts.content_type)
            .set_metadata(Some(opts.metadata.clone()))
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| self.err(e, "PutObject", key))?;
        Ok(out.e_tag().map(str::to_string))
    }

    /// Starts a multipart upload; returns its id.
    pub async fn create_multipart(&self, key: &str, opts: &PutOptions) -> Result<String, StoreError> {
        let req = content_headers!(write_headers!(self.client.create_multipart_upload(), self), opts);
        let out = req
            .bucket(&self.bucket)
            .key(key)
            .content_type(&opts.content_type)
            .set_metadata(Some(opts.metadata.clone()))
            .send()
            .await
            .map_err(|e| self.err(e, "CreateMultipartUpload", key))?;
        out.upload_id().map(str::to_string).ok_or_else(|| {
            StoreError::local("CreateMultipartUpload", key, "the server returned no upload id")
        })
    }

    /// Uploads part `number` (1-based); returns its ETag.
    pub async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        number: i32,
        body: Bytes,
    ) -> Result<String, StoreError> {
        if let Some(lean) = &self.lean {
            let query = format!(
                "partNumber={number}&uploadId={}",
                percent_encoding::utf8_percent_encode(upload_id, lean::QUERY_VALUE)
            );
            let r = self
                .lean_call(
                    lean,
                    "UploadPart",
                    http::Method::PUT,
                    key,
                    &query,
                    Vec::new(),
                    body,
                )
                .await?;
            return lean::header(&r.headers, "etag").ok_or_else(|| {
                StoreError::local("UploadPart", key, "the server returned no ETag for a part")
            });
        }
        let out = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .part_number(number)
            .content_length(body.len() as i64)
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| self.err(e, "UploadPart", key))?;
        out.e_tag()
            .map(str::to_string)
            .ok_or_else(|| StoreError::local("UploadPart", key, "the server returned no ETag for a part"))
    }

    /// Completes a multipart upload from `(part number, etag)` pairs; returns the ETag.
    pub async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: Vec<(i32, String)>,
    ) -> Result<Option<String>, StoreError> {
        let parts = parts
            .into_iter()
            .map(|(n, etag)| CompletedPart::builder().part_number(n).e_tag(etag).build())
            .collect();
        let out = self
            .client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
            .send()
            .await
            .map_err(|e| self.err(e, "CompleteMultipartUpload", key))?;
        Ok(out.e_tag().map(str::to_string))
    }

    /// Aborts a multipart upload so no parts are left behind.
    pub async fn abort_multipart(&self, key: &str, upload_id: &str) -> Result<(), StoreError> {
        self.client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .send()
            .await
            .map_err(|e| self.err(e, "AbortMultipartUpload", key))?;
        Ok(())
    }

    /// Rewrites the metadata of the object `key` of `size` bytes in place (a copy onto itself
    /// with `x-amz-metadata-directive: REPLACE`, in parts past the single-copy limit), guarded
    /// by the ETag read earlier so a concurrent change by someone else is not overwritten;
    /// returns the new ETag.
    pub async fn replace_metadata(
        &self,
        key: &str,
        size: u64,
        put: &PutOptions,
        if_match: Option<&str>,
    ) -> Result<Option<String>, StoreError> {
        self.copy(key, key, size, put, if_match).await
    }

    /// One CopyObject of `src` to `dst` with the headers of `put`, if the source's ETag is
    /// still `if_match`. The copy replaces the object: without the storage class and
    /// encryption headers it would fall back to the bucket's defaults (a chmod must not move a
    /// file out of STANDARD_IA or drop its SSE-KMS key).
    async fn copy_whole(
        &self,
        src: &str,
        dst: &str,
        put: &PutOptions,
        if_match: Option<&str>,
    ) -> Result<Option<String>, StoreError> {
        if let Some(lean) = &self.lean {
            return self.copy_lean(lean, src, dst, Some(put), if_match).await;
        }
        let req = content_headers!(write_headers!(self.client.copy_object(), self), put);
        let out = req
            .bucket(&self.bucket)
            .key(dst)
            .copy_source(self.copy_source(src))
            .set_copy_source_if_match(if_match.map(str::to_string))
            .metadata_directive(aws_sdk_s3::types::MetadataDirective::Replace)
            .content_type(&put.content_type)
            .set_metadata(Some(put.metadata.clone()))
            .send()
            .await
            .map_err(|e| self.err(e, "CopyObject", dst))?;
        Ok(out
            .copy_object_result()
            .and_then(|r| r.e_tag())
            .map(str::to_string))
    }

    /// `CopyObject` of `src` onto `dst` on the lean path: with the new content type and metadata
    /// of `replace` (`REPLACE`), else with the source's (`COPY`); storage class and encryption
    /// as every write; only if the source's ETag is still `if_match`. S3 may report a copy
    /// that failed after it started with status 200 and an `<Error>` body: that is an error
    /// here too. Returns the new ETag.
    async fn copy_lean(
        &self,
        lean: &lean::LeanClient,
        src: &str,
        dst: &str,
        replace: Option<&PutOptions>,
        if_match: Option<&str>,
    ) -> Result<Option<String>, StoreError> {
        const OP: &str = "CopyObject";
        let mut headers = match replace {
            Some(put) => self.object_headers(put),
            None => self.placement_headers(),
        };
        let directive = if replace.is_some() { "REPLACE" } else { "COPY" };
        headers.push(("x-amz-metadata-directive".into(), directive.into()));
        headers.push(("x-amz-copy-source".into(), self.copy_source(src)));
        if let Some(etag) = if_match {
            headers.push(("x-amz-copy-source-if-match".into(), etag.to_string()));
        }
        let r = self
            .lean_call(lean, OP, http::Method::PUT, dst, "", headers, Bytes::new())
            .await?;
        match xml_answers::parse_copy_result(&r.body) {
            Ok(xml_answers::CopyAnswer::Done { etag }) => Ok(etag),
            Ok(xml_answers::CopyAnswer::Failed { code, message }) => {
                Err(self.noted(StoreError::from_status(OP, dst, 500, code, message)))
            }
            Err(e) => Err(self.noted(StoreError::local(OP, dst, e))),
        }
    }

    fn copy_source(&self, key: &str) -> String {
        format!(
            "{}/{}",
            self.bucket,
            percent_encoding::utf8_percent_encode(key, COPY_SOURCE)
        )
    }

    /// Copies `src` (of about `size` bytes, as last seen) to `dst` with new headers, if the
    /// source's ETag is still `if_match`: one CopyObject up to the single-copy limit, a
    /// multipart copy (UploadPartCopy) above. Returns the new ETag.
    pub async fn copy(
        &self,
        src: &str,
        dst: &str,
        size: u64,
        put: &PutOptions,
        if_match: Option<&str>,
    ) -> Result<Option<String>, StoreError> {
        if size > self.single_copy_limit {
            return self.copy_in_parts(src, dst, put, if_match).await;
        }
        self.copy_whole(src, dst, put, if_match).await
    }

    /// A multipart copy of `src` to `dst` (which may be `src` itself) with the headers of
    /// `put`, four parts at a time. The source's size and ETag are read first (a size known
    /// from earlier could be stale, and a copy of fewer bytes than the object holds would cut
    /// it); with `if_match`, a source whose ETag is another fails with `PreconditionFailed`, as
    /// a guarded CopyObject does. Every part is copied only if the ETag is still the one read,
    /// so the parts cannot mix two versions. On failure the upload is aborted. Returns the new
    /// ETag.
    async fn copy_in_parts(
        &self,
        src: &str,
        dst: &str,
        put: &PutOptions,
        if_match: Option<&str>,
    ) -> Result<Option<String>, StoreError> {
        let info = self.head(src).await?.ok_or_else(|| StoreError::NotFound {
            op: "HeadObject",
            key: src.to_string(),
        })?;
        if let Some(want) = if_match {
            if !info.etag.as_deref().is_some_and(|have| etags_match(have, want)) {
                return Err(StoreError::from_status(
                    "UploadPartCopy",
                    src,
                    412,
                    "PreconditionFailed".into(),
                    "the object changed since this mount read it".into(),
                ));
            }
        }
        let guard = info.etag.clone();
        let size = info.size;
        if size <= self.single_copy_limit {
            return self.copy_whole(src, dst, put, guard.as_deref()).await;
        }
        let part = copy_part_size(size, self.single_copy_limit);
        let upload_id = self.create_multipart(dst, put).await?;
        let parts = size.div_ceil(part);
        let copy_source = self.copy_source(src);
        let result: Result<Vec<(i32, String)>, StoreError> = futures::stream::iter(0..parts)
            .map(|i| {
                let (start, end) = (i * part, size.min((i + 1) * part));
                let (copy_source, upload_id) = (copy_source.clone(), upload_id.clone());
                let guard = guard.clone();
                async move {
                    let out = self
                        .client
                        .upload_part_copy()
                        .bucket(&self.bucket)
                        .key(dst)
                        .upload_id(upload_id)
                        .part_number((i + 1) as i32)
                        .copy_source(copy_source)
                        .set_copy_source_if_match(guard)
                        .copy_source_range(format!("bytes={}-{}", start, end - 1))
                        .send()
                        .await
                        .map_err(|e| self.err(e, "UploadPartCopy", dst))?;
                    let etag = out
                        .copy_part_result()
                        .and_then(|r| r.e_tag())
                        .map(str::to_string)
                        .ok_or_else(|| {
                            StoreError::local("UploadPartCopy", dst, "no ETag for a copied part")
                        })?;
                    Ok(((i + 1) as i32, etag))
                }
            })
            .buffer_unordered(4)
            .try_collect()
            .await;
        let completed = match result {
            Ok(mut done) => {
                done.sort_by_key(|(n, _)| *n);
                self.complete_multipart(dst, &upload_id, done).await
            }
            Err(e) => Err(e),
        };
        if completed.is_err() {
            self.abort_or_queue(dst, &upload_id).await;
        }
        completed
    }

    /// Copies `src` to `dst` keeping its content type and user metadata (MetadataDirective COPY;
    /// past the single-copy limit the headers are read first and a multipart copy is made);
    /// returns the copy's ETag when the server gave it. With `if_match`, only a source whose
    /// ETag that is is copied (`PreconditionFailed` otherwise).
    pub async fn copy_as_is(
        &self,
        src: &str,
        dst: &str,
        size: u64,
        if_match: Option<&str>,
    ) -> Result<Option<String>, StoreError> {
        if size > self.single_copy_limit {
            let info = self.head(src).await?.ok_or_else(|| StoreError::NotFound {
                op: "HeadObject",
                key: src.to_string(),
            })?;
            let put = PutOptions {
                content_type: info
                    .content_type
                    .unwrap_or_else(|| "application/octet-stream".into()),
                metadata: info.metadata,
                content_headers: info.content_headers,
            };
            return self
                .copy_in_parts(src, dst, &put, if_match.or(info.etag.as_deref()))
                .await;
        }
        if let Some(lean) = &self.lean {
            return self.copy_lean(lean, src, dst, None, if_match).await;
        }
        let req = write_headers!(self.client.copy_object(), self);
        let out = req
            .bucket(&self.bucket)
            .key(dst)
            .copy_source(self.copy_source(src))
            .set_copy_source_if_match(if_match.map(str::to_string))
            .metadata_directive(aws_sdk_s3::types::MetadataDirective::Copy)
            .send()
            .await
            .map_err(|e| self.err(e, "CopyObject", dst))?;
        Ok(out
            .copy_object_result()
            .and_then(|r| r.e_tag())
            .map(str::to_string))
    }

    /// Multipart uploads in progress under `prefix`: (key, upload id, initiated).
    pub async fn list_multipart_uploads(
        &self,
        prefix: &str,
    ) -> Result<Vec<(String, String, Option<SystemTime>)>, StoreError> {
        let mut out = Vec::new();
        let (mut key_marker, mut id_marker): (Option<String>, Option<String>) = (None, None);
        loop {
            let page = self
                .client
                .list_multipart_uploads()
                .bucket(&self.bucket)
                .prefix(prefix)
                .set_key_marker(key_marker.take())
                .set_upload_id_marker(id_marker.take())
                .send()
                .await
                .map_err(|e| self.err(e, "ListMultipartUploads", prefix))?;
            for u in page.uploads() {
                if let (Some(k), Some(id)) = (u.key(), u.upload_id()) {
                    let initiated = u.initiated().and_then(|t| SystemTime::try_from(*t).ok());
                    out.push((k.to_string(), id.to_string(), initiated));
                }
            }
            if page.is_truncated() != Some(true) {
                return Ok(out);
            }
            key_marker = page.next_key_marker().map(str::to_string);
            id_marker = page.next_upload_id_marker().map(str::to_string);
            if key_marker.is_none() && id_marker.is_none() {
                return Ok(out);
            }
        }
    }

    /// Aborts an upload now, or queues the abort for [`Self::retry_aborts`] if the server cannot
    /// be reached, so no parts are left behind once it is back.
    pub async fn abort_or_queue(&self, key: &str, upload_id: &str) {
        if let Err(e) = self.abort_multipart(key, upload_id).await {
            if e.code() == Some("NoSuchUpload") || e.is_not_found() {
                return; // gone already
            }
            tracing::warn!("could not abort the multipart upload of {key} ({e}); will retry");
            self.queue_abort(key, upload_id);
        }
    }

    /// Queues the abort of an upload for [`Self::retry_aborts`] (where it cannot be awaited).
    pub fn queue_abort(&self, key: &str, upload_id: &str) {
        self.pending_aborts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((key.to_string(), upload_id.to_string()));
    }

    /// Retries queued aborts; returns how many are still pending.
    pub async fn retry_aborts(&self) -> usize {
        let queued: Vec<(String, String)> =
            std::mem::take(&mut *self.pending_aborts.lock().unwrap_or_else(|p| p.into_inner()));
        let mut left = Vec::new();
        for (key, id) in queued {
            match self.abort_multipart(&key, &id).await {
                Ok(()) => tracing::info!("aborted the leftover multipart upload of {key}"),
                // Gone already (completed after all, or aborted by a lifecycle rule).
                Err(e) if e.code() == Some("NoSuchUpload") || e.is_not_found() => {}
                Err(_) => left.push((key, id)),
            }
        }
        let n = left.len();
        self.pending_aborts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(left);
        n
    }

    /// Number of aborts waiting for a retry.
    pub fn pending_abort_count(&self) -> usize {
        self.pending_aborts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    /// Deletes a key (succeeds if it is already gone).
    pub async fn delete(&self, key: &str) -> Result<(), StoreError> {
        if let Some(lean) = &self.lean {
            return match self
                .lean_call(
                    lean,
                    "DeleteObject",
                    http::Method::DELETE,
                    key,
                    "",
                    Vec::new(),
                    Bytes::new(),
                )
                .await
            {
                Ok(_) => Ok(()),
                Err(e) if e.is_not_found() => Ok(()),
                Err(e) => Err(e),
            };
        }
        match self
            .client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => {
                let e = self.err(e, "DeleteObject", key);
                if e.is_not_found() {
                    Ok(())
                } else {
                    Err(e)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{copy_part_size, KeyDecoder, COPY_PART, MAX_PARTS, MAX_SINGLE_COPY, OSS_MAX_SINGLE_COPY};

    #[test]
    fn copy_parts_fit_the_limit_the_minimum_and_the_part_count() {
        const MIB: u64 = 1 << 20;
        for (size, limit) in [
            (6 << 30, MAX_SINGLE_COPY),
            (2 << 30, OSS_MAX_SINGLE_COPY),
            (12 * MIB, 5 * MIB),
            (12 * MIB, 8 * MIB),
            (5 << 40, MAX_SINGLE_COPY),
            (5 << 40, 5 * MIB),
        ] {
            let part = copy_part_size(size, limit);
            assert!(part >= 5 * MIB, "{size} {limit}: {part}");
            assert!(size.div_ceil(part) <= MAX_PARTS, "{size} {limit}: {part}");
            assert!(
                part <= limit.max(size.div_ceil(MAX_PARTS) + MIB),
                "{size} {limit}: {part}"
            );
            assert_eq!(part % MIB, 0, "{size} {limit}: {part}");
        }
        assert_eq!(copy_part_size(6 << 30, MAX_SINGLE_COPY), COPY_PART);
        assert_eq!(copy_part_size(12 * MIB, 5 * MIB), 5 * MIB);
    }

    #[test]
    fn url_encoded_listing_keys_decode_like_a_form() {
        let d = KeyDecoder(true);
        // AWS S3 / MinIO: space as `+`, plus as `%2B`.
        assert_eq!(d.key("docs/annual+report%2Bv2.pdf"), "docs/annual report+v2.pdf");
        assert_eq!(d.key("run+books/"), "run books/");
        // Garage: space as `%20`, plus as `%2B`.
        assert_eq!(d.key("docs%2Fa%20b%2Bc"), "docs/a b+c");
        assert_eq!(d.key("caf%C3%A9"), "café");
        // Without encoding-type=url the key is taken as it is.
        assert_eq!(KeyDecoder(false).key("a+b%20c"), "a+b%20c");
    }
}
