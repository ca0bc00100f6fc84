//! The lean request path: small, frequent S3 requests sent as one signed HTTP/1.1 request each,
//! without the SDK's orchestrator.
//!
//! A cold `ls -l` of a large directory is one HEAD per entry, and on a 2-core machine its speed
//! is the CPU each HEAD costs. Profiles showed half of rossfs's CPU per HEAD in the SDK's generic
//! machinery (interceptors, endpoint and auth-scheme resolution, type-erased config bags), not in
//! HTTP or signing. [`LeanClient`] does only what such a request needs: it builds the URL
//! (path-style or virtual-hosted, as the SDK would), signs it with SigV4 (`aws-sigv4`, the SDK's own
//! signer, with the same credentials provider, so rotation works the same), sends it over a pooled
//! keep-alive connection (hyper, rustls with the system roots plus `ca_bundle=`; connections that
//! acknowledge at once, see `quick_ack`), and retries transient failures with capped
//! exponential backoff and jitter like the SDK's standard mode.
//! Upload bodies are sent as `UNSIGNED-PAYLOAD`, over HTTP and HTTPS alike (S3 and the
//! compatible servers accept it; every header is still signed): hashing a 10 MiB part costs
//! more CPU than sending it, and on 2 cores that CPU is taken from throughput (a 1 GiB write:
//! 203 -> 257 MiB/s, rossfs CPU 2.06 -> 1.19 s). `sdk_requests` has the SDK hash them.
//! Listing pages (`ListObjectsV2`) and copies (`CopyObject`, for chmod/chown/touch and rename)
//! take this path too, their XML answers read by `xml_answers`.
//! Answers become the same [`StoreError`]s the SDK path produces. Configurations it does not
//! cover (an ARN as bucket name, an endpoint URL it cannot parse) keep using the SDK.

use std::time::{Duration, SystemTime};

use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_sigv4::http_request::{
    sign, PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest, SigningSettings,
    UriPathNormalizationMode,
};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;

use super::quick_ack::QuickAckConnector;
use super::StoreError;

/// Characters escaped in a key's URL path: everything but unreserved characters and `/`.
const KEY_PATH: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'/')
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Characters escaped in a query value: everything but unreserved characters.
pub(super) const QUERY_VALUE: &percent_encoding::AsciiSet = &KEY_PATH.add(b'/');

/// How long an idle pooled connection is kept (S3 itself closes idle ones after about 20 s).
const POOL_IDLE: Duration = Duration::from_secs(15);

/// What the lean client needs from the mount options.
pub(super) struct LeanSettings<'a> {
    /// Endpoint URL (`http[s]://host[:port][/path]`).
    pub endpoint: &'a str,
    /// Bucket name.
    pub bucket: &'a str,
    /// Signing region.
    pub region: &'a str,
    /// Path-style addressing asked for.
    pub path_style: bool,
    /// Attempts per request.
    pub attempts: u32,
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// Timeout of one attempt.
    pub attempt_timeout: Duration,
    /// Extra trusted certificates (PEM), from `ca_bundle=`.
    pub ca_pem: Option<&'a [u8]>,
}

/// An answer from the server (after retries).
pub(super) struct LeanResponse {
    /// HTTP status.
    pub status: u16,
    /// Response headers.
    pub headers: http::HeaderMap,
    /// Response body (empty for HEAD).
    pub body: Bytes,
}

/// Signed requests to one bucket over a pooled connection set.
pub(super) struct LeanClient {
    http: Client<hyper_rustls::HttpsConnector<QuickAckConnector>, Full<Bytes>>,
    /// `scheme://authority` requests go to.
    origin: String,
    /// Path before the key: `/bucket/` (path-style) or `/` (virtual-hosted), after any endpoint path.
    key_prefix: String,
    region: String,
    credentials: SharedCredentialsProvider,
    attempts: u32,
    attempt_timeout: Duration,
    endpoint: String,
}

impl std::fmt::Debug for LeanClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeanClient")
            .field("origin", &self.origin)
            .field("key_prefix", &self.key_prefix)
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

/// True when `bucket` can be a DNS label of a virtual-hosted URL (the SDK's rule, dots excluded).
fn virtual_hostable(bucket: &str) -> bool {
    let b = bucket.as_bytes();
    (3..=63).contains(&b.len())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// Where requests for `bucket` go: (`scheme://authority`, path before the key). `None` when the
/// endpoint or bucket is of a kind only the SDK handles.
fn addressing(endpoint: &str, bucket: &str, path_style: bool) -> Option<(String, String)> {
    if bucket.is_empty() || bucket.contains([':', '/']) {
        return None;
    }
    let uri: http::Uri = endpoint.parse().ok()?;
    let scheme = uri.scheme_str()?;
    if scheme != "http" && scheme != "https" {
        return None;
    }
    let authority = uri.authority()?.as_str();
    if authority.contains('@') {
        return None;
    }
    let base = uri.path().trim_end_matches('/');
    if uri.query().is_some() {
        return None;
    }
    let host_is_ip = uri
        .host()
        .is_some_and(|h| h.parse::<std::net::IpAddr>().is_ok() || h.starts_with('['));
    if path_style || host_is_ip || !virtual_hostable(bucket) {
        let bucket = percent_encoding::utf8_percent_encode(bucket, KEY_PATH);
        Some((format!("{scheme}://{authority}"), format!("{base}/{bucket}/")))
    } else {
        Some((format!("{scheme}://{bucket}.{authority}"), format!("{base}/")))
    }
}

/// The rustls configuration: the system's roots plus the PEM certificates of `ca_bundle=`.
fn tls_config(ca_pem: Option<&[u8]>) -> Result<rustls::ClientConfig, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        // A system certificate rustls cannot parse is skipped, as the SDK's client does.
        let _ = roots.add(cert);
    }
    if let Some(pem) = ca_pem {
        for cert in CertificateDer::pem_slice_iter(pem) {
            let cert = cert.map_err(|e| format!("ca_bundle holds an unreadable certificate: {e}"))?;
            roots
                .add(cert)
                .map_err(|e| format!("ca_bundle holds a certificate rustls refuses: {e}"))?;
        }
    }
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup failed: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

impl LeanClient {
    /// A client for the bucket, or `None` when the configuration is one only the SDK handles.
    pub(super) fn new(
        s: &LeanSettings<'_>,
        credentials: SharedCredentialsProvider,
    ) -> Result<Option<Self>, String> {
        let Some((origin, key_prefix)) = addressing(s.endpoint, s.bucket, s.path_style) else {
            return Ok(None);
        };
        let mut tcp = HttpConnector::new();
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        tcp.set_connect_timeout(Some(s.connect_timeout));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls_config(s.ca_pem)?)
            .https_or_http()
            .enable_http1()
            .wrap_connector(QuickAckConnector(tcp));
        let http = Client::builder(hyper_util::rt::TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE)
            .pool_timer(hyper_util::rt::TokioTimer::new())
            .build(https);
        Ok(Some(Self {
            http,
            origin,
            key_prefix,
            region: s.region.to_string(),
            credentials,
            attempts: s.attempts.max(1),
            attempt_timeout: s.attempt_timeout,
            endpoint: s.endpoint.to_string(),
        }))
    }

    /// The URL of `key` (with an already encoded `query`, which may be empty).
    fn url(&self, key: &str, query: &str) -> String {
        let key = percent_encoding::utf8_percent_encode(key, KEY_PATH);
        if query.is_empty() {
            format!("{}{}{key}", self.origin, self.key_prefix)
        } else {
            format!("{}{}{key}?{query}", self.origin, self.key_prefix)
        }
    }

    /// Sends one request to `key` (`""`: the bucket), retrying transport failures, timeouts,
    /// throttling and 5xx answers; errors name `about` (the key, or a listing's prefix).
    /// Returns the final answer whatever its status; errors are only for no answer.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn send(
        &self,
        op: &'static str,
        method: http::Method,
        key: &str,
        about: &str,
        query: &str,
        headers: &[(String, String)],
        body: Bytes,
    ) -> Result<LeanResponse, StoreError> {
        let url = self.url(key, query);
        let started = std::time::Instant::now();
        let metrics = crate::metrics::global();
        let mut attempt = 0u32;
        let result = loop {
            attempt += 1;
            metrics.s3_attempt(op);
            if attempt > 1 {
                tracing::debug!(op, attempt, "retrying an S3 request");
            }
            metrics.add_bytes_out(body.len() as u64);
            let outcome = self.attempt(op, &method, about, &url, headers, &body).await;
            let retry = match &outcome {
                Ok(r) => matches!(r.status, 429 | 500 | 502 | 503 | 504),
                Err(StoreError::Timeout { .. } | StoreError::Unreachable { .. }) => true,
                Err(_) => false,
            };
            if !retry || attempt >= self.attempts {
                break outcome;
            }
            tokio::time::sleep(backoff(attempt)).await;
        };
        let failed = match &result {
            Ok(r) => r.status >= 300 && !(r.status == 404 && op == "HeadObject"),
            Err(_) => true,
        };
        if let Ok(r) = &result {
            if op == "GetObject" {
                metrics.add_bytes_in(r.body.len() as u64);
            }
        }
        metrics.s3_request(op, &url, started.elapsed(), failed);
        result
    }

    async fn attempt(
        &self,
        op: &'static str,
        method: &http::Method,
        about: &str,
        url: &str,
        headers: &[(String, String)],
        body: &Bytes,
    ) -> Result<LeanResponse, StoreError> {
        let other = |detail: String| StoreError::Other {
            op,
            key: about.to_string(),
            detail,
        };
        let creds = self
            .credentials
            .provide_credentials()
            .await
            .map_err(|e| other(format!("no usable credentials: {e}")))?;
        let identity = creds.into();
        let mut settings = SigningSettings::default();
        settings.percent_encoding_mode = PercentEncodingMode::Single;
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
        let params = aws_sigv4::sign::v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name("s3")
            .time(SystemTime::now())
            .settings(settings)
            .build()
            .map_err(|e| other(format!("cannot sign the request: {e}")))?
            .into();
        let signable = SignableRequest::new(
            method.as_str(),
            url,
            headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            // No SHA-256 of an upload's body (UNSIGNED-PAYLOAD, which S3 accepts over HTTP and
            // HTTPS; the signature still covers every header).
            if !body.is_empty() {
                SignableBody::UnsignedPayload
            } else {
                SignableBody::Bytes(body)
            },
        )
        .map_err(|e| other(format!("cannot sign the request: {e}")))?;
        let (instructions, _) = sign(signable, &params)
            .map_err(|e| other(format!("cannot sign the request: {e}")))?
            .into_parts();
        let mut builder = http::Request::builder().method(method.clone()).uri(url).header(
            http::header::USER_AGENT,
            concat!("rossfs/", env!("CARGO_PKG_VERSION")),
        );
        for (k, v) in headers {
            let value = http::HeaderValue::from_bytes(v.as_bytes())
                .map_err(|_| other(format!("header {k} has a value HTTP cannot carry")))?;
            builder = builder.header(k.as_str(), value);
        }
        if !body.is_empty() || *method == http::Method::PUT || *method == http::Method::POST {
            builder = builder.header(http::header::CONTENT_LENGTH, body.len());
        }
        let mut request = builder
            .body(Full::new(body.clone()))
            .map_err(|e| other(format!("cannot build the request: {e}")))?;
        instructions.apply_to_request_http1x(&mut request);

        let exchange = async {
            let response = self
                .http
                .request(request)
                .await
                .map_err(|e| self.transport_error(op, about, &e))?;
            let (parts, mut incoming) = response.into_parts();
            // Into one buffer of the announced size, freeing each received chunk as it is
            // copied: collecting the chunks first would hold a large range twice. A HEAD
            // announces the object's length but has no body: nothing to set aside.
            let announced = parts
                .headers
                .get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<usize>().ok())
                .filter(|_| *method != http::Method::HEAD)
                .unwrap_or(0);
            let mut buf = bytes::BytesMut::with_capacity(announced.min(64 * 1024 * 1024));
            while let Some(frame) = incoming.frame().await {
                let frame = frame.map_err(|e| StoreError::Unreachable {
                    op,
                    key: about.to_string(),
                    endpoint: self.endpoint.clone(),
                    detail: format!("the response body broke off: {e}"),
                })?;
                if let Ok(data) = frame.into_data() {
                    buf.extend_from_slice(&data);
                }
            }
            let body = buf.freeze();
            Ok(LeanResponse {
                status: parts.status.as_u16(),
                headers: parts.headers,
                body,
            })
        };
        match tokio::time::timeout(self.attempt_timeout, exchange).await {
            Ok(r) => r,
            Err(_) => Err(StoreError::Timeout {
                op,
                key: about.to_string(),
                endpoint: self.endpoint.clone(),
            }),
        }
    }

    fn transport_error(
        &self,
        op: &'static str,
        key: &str,
        e: &hyper_util::client::legacy::Error,
    ) -> StoreError {
        let mut detail = e.to_string();
        let mut cur: &(dyn std::error::Error + 'static) = e;
        while let Some(next) = cur.source() {
            detail = next.to_string();
            cur = next;
        }
        if detail.contains("timed out") {
            return StoreError::Timeout {
                op,
                key: key.to_string(),
                endpoint: self.endpoint.clone(),
            };
        }
        StoreError::Unreachable {
            op,
            key: key.to_string(),
            endpoint: self.endpoint.clone(),
            detail,
        }
    }
}

/// Delay before attempt `attempt + 1`: 100 ms doubling up to 5 s, with full jitter.
fn backoff(attempt: u32) -> Duration {
    let cap = Duration::from_millis(100)
        .saturating_mul(1 << attempt.saturating_sub(1).min(10))
        .min(Duration::from_secs(5));
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    cap.mul_f64(0.5 + f64::from(nanos % 1000) / 2000.0)
}

/// A response header as text.
pub(super) fn header(headers: &http::HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
}

/// What a HEAD answer's headers say about `key`.
pub(super) fn object_info(key: &str, headers: &http::HeaderMap) -> super::ObjectInfo {
    let get = |name: &str| header(headers, name);
    let metadata = headers
        .iter()
        .filter_map(|(name, value)| {
            name.as_str().strip_prefix("x-amz-meta-").map(|n| {
                (
                    n.to_string(),
                    String::from_utf8_lossy(value.as_bytes()).into_owned(),
                )
            })
        })
        .collect();
    super::ObjectInfo {
        key: key.to_string(),
        size: get("content-length")
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0),
        etag: get("etag"),
        last_modified: get("last-modified").and_then(|v| {
            aws_smithy_types::DateTime::from_str(v.trim(), aws_smithy_types::date_time::Format::HttpDate)
                .ok()
                .and_then(|t| SystemTime::try_from(t).ok())
        }),
        content_type: get("content-type"),
        metadata,
        content_headers: super::content_headers_from(get),
    }
}

/// The S3 error code and message of an XML error body (`<Code>`, `<Message>`), if any.
pub(super) fn error_code(body: &[u8]) -> (String, String) {
    let text = String::from_utf8_lossy(body);
    let field = |name: &str| {
        let open = format!("<{name}>");
        let close = format!("</{name}>");
        text.find(&open)
            .and_then(|s| {
                let rest = &text[s + open.len()..];
                rest.find(&close).map(|e| rest[..e].trim().to_string())
            })
            .unwrap_or_default()
    };
    (field("Code"), field("Message"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_style_and_virtual_hosted_urls() {
        assert_eq!(
            addressing("http://127.0.0.1:3900", "demo", false),
            Some(("http://127.0.0.1:3900".into(), "/demo/".into()))
        );
        assert_eq!(
            addressing("https://s3.example.com", "demo", false),
            Some(("https://demo.s3.example.com".into(), "/".into()))
        );
        assert_eq!(
            addressing("https://s3.example.com/base/", "demo", true),
            Some(("https://s3.example.com".into(), "/base/demo/".into()))
        );
        // Not a DNS label: path-style, as the SDK does.
        assert_eq!(
            addressing("https://s3.example.com", "my.bucket", false),
            Some(("https://s3.example.com".into(), "/my.bucket/".into()))
        );
        assert_eq!(addressing("https://s3.example.com", "arn:aws:s3:x", false), None);
        assert_eq!(addressing("ftp://h", "demo", false), None);
        assert_eq!(addressing("not a url", "demo", false), None);
    }

    #[test]
    fn keys_are_encoded_once_with_slashes_kept() {
        let k = percent_encoding::utf8_percent_encode("a b/c+d%é~_.-", KEY_PATH).to_string();
        assert_eq!(k, "a%20b/c%2Bd%25%C3%A9~_.-");
    }

    #[test]
    fn error_bodies_give_code_and_message() {
        let body = b"<?xml version=\"1.0\"?><Error><Code>AccessDenied</Code><Message>no</Message></Error>";
        assert_eq!(error_code(body), ("AccessDenied".into(), "no".into()));
        assert_eq!(error_code(b""), (String::new(), String::new()));
    }

    #[test]
    fn head_headers_become_object_info() {
        let mut h = http::HeaderMap::new();
        h.insert("content-length", "1234".parse().unwrap());
        h.insert("etag", "\"abc\"".parse().unwrap());
        h.insert("last-modified", "Tue, 24 Nov 2026 03:00:00 GMT".parse().unwrap());
        h.insert("content-type", "text/plain".parse().unwrap());
        h.insert("x-amz-meta-mode", "33188".parse().unwrap());
        h.insert("X-Amz-Meta-UID", "1000".parse().unwrap());
        h.insert("cache-control", "no-cache".parse().unwrap());
        h.insert("content-encoding", "aws-chunked, gzip".parse().unwrap());
        h.insert("expires", "0".parse().unwrap());
        let o = object_info("d/k", &h);
        let served = |v: &[(&str, &str)]| -> Vec<(String, String)> {
            v.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect()
        };
        assert_eq!(
            o.content_headers,
            served(&[
                ("cache-control", "no-cache"),
                ("content-encoding", "gzip"),
                ("expires", "0")
            ]),
            "how the upload was sent (aws-chunked) is not kept"
        );
        h.insert("content-encoding", "aws-chunked".parse().unwrap());
        assert_eq!(
            object_info("d/k", &h).content_headers,
            served(&[("cache-control", "no-cache"), ("expires", "0")])
        );
        assert_eq!((o.key.as_str(), o.size), ("d/k", 1234));
        assert_eq!(o.etag.as_deref(), Some("\"abc\""));
        assert_eq!(o.content_type.as_deref(), Some("text/plain"));
        assert_eq!(o.metadata.get("mode").map(String::as_str), Some("33188"));
        assert_eq!(o.metadata.get("uid").map(String::as_str), Some("1000"));
        let t = o
            .last_modified
            .unwrap()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap();
        assert_eq!(t.as_secs(), 1_795_489_200);
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        assert!(backoff(1) <= Duration::from_millis(100));
        assert!(backoff(3) >= Duration::from_millis(200));
        assert!(backoff(30) <= Duration::from_secs(5));
    }
}
