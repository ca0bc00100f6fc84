//! Errors of the object store, and how each one reads to a person and to POSIX.
//!
//! Every failed S3 request becomes a [`StoreError`] that keeps the server's status and error code
//! (`403 InvalidAccessKeyId`, `404 NoSuchBucket`, ...). [`StoreError::errno`] is what a syscall
//! returns for it; [`StoreError::mount_hint`] is the one-line cause-and-fix shown when a mount
//! fails. Messages never contain credentials: the SDK's error text holds no secrets, and we add
//! none.

use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;

/// A failed object-store operation.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The key does not exist (404 on an object, `NoSuchKey`).
    #[error("{op} {key}: not found")]
    NotFound {
        /// Operation name, e.g. `HeadObject`.
        op: &'static str,
        /// The key asked for.
        key: String,
    },
    /// The server answered with an error status.
    #[error(
        "{op} {key}: {status} {code}{}{}",
        if message.is_empty() { String::new() } else { format!(" ({message})") },
        match bucket_region { Some(r) => format!(" (the bucket's region is {r})"), None => String::new() }
    )]
    Service {
        /// Operation name.
        op: &'static str,
        /// The key (or prefix) the request was about.
        key: String,
        /// HTTP status.
        status: u16,
        /// S3 error code (`AccessDenied`, `NoSuchBucket`, ...), or the status text when the
        /// response had no body (HEAD).
        code: String,
        /// The server's message, if any.
        message: String,
        /// The bucket's region when the server named it (`x-amz-bucket-region`, sent with a
        /// `301 PermanentRedirect` or a region error by AWS S3 and most of its imitators).
        bucket_region: Option<String>,
    },
    /// No answer within the configured time.
    #[error("{op} {key}: timed out talking to {endpoint}")]
    Timeout {
        /// Operation name.
        op: &'static str,
        /// The key.
        key: String,
        /// The endpoint that did not answer.
        endpoint: String,
    },
    /// The endpoint could not be reached (refused, reset, DNS failure).
    #[error("{op} {key}: cannot reach {endpoint}: {detail}")]
    Unreachable {
        /// Operation name.
        op: &'static str,
        /// The key.
        key: String,
        /// The endpoint.
        endpoint: String,
        /// What the connector said.
        detail: String,
    },
    /// Anything else: no credentials, a malformed response, a local I/O error while staging.
    #[error("{op} {key}: {detail}")]
    Other {
        /// Operation name.
        op: &'static str,
        /// The key.
        key: String,
        /// Description.
        detail: String,
    },
}

impl StoreError {
    /// Converts an SDK error into a [`StoreError`], keeping the S3 code and message.
    pub fn from_sdk<E>(err: SdkError<E, HttpResponse>, op: &'static str, key: &str, endpoint: &str) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let key = key.to_string();
        match &err {
            SdkError::ServiceError(se) => {
                let status = se.raw().status().as_u16();
                let code = se.err().code().unwrap_or("").to_string();
                let message = se.err().message().unwrap_or("").to_string();
                Self::from_status(op, &key, status, code, message)
                    .with_bucket_region(se.raw().headers().get(BUCKET_REGION_HEADER))
            }
            SdkError::TimeoutError(_) => StoreError::Timeout {
                op,
                key,
                endpoint: endpoint.to_string(),
            },
            SdkError::DispatchFailure(df) => {
                if df.is_timeout() {
                    StoreError::Timeout {
                        op,
                        key,
                        endpoint: endpoint.to_string(),
                    }
                } else if df.is_io() {
                    StoreError::Unreachable {
                        op,
                        key,
                        endpoint: endpoint.to_string(),
                        detail: innermost_cause(&err),
                    }
                } else {
                    StoreError::Other {
                        op,
                        key,
                        detail: DisplayErrorContext(&err).to_string(),
                    }
                }
            }
            _ => StoreError::Other {
                op,
                key,
                detail: DisplayErrorContext(&err).to_string(),
            },
        }
    }

    /// The error for an answer with an error `status` and the S3 `code` and `message` of its
    /// body (empty when there was none, as for HEAD).
    pub fn from_status(op: &'static str, key: &str, status: u16, code: String, message: String) -> Self {
        let key = key.to_string();
        if status == 404 && (code.is_empty() || code == "NoSuchKey" || code == "NotFound") {
            return StoreError::NotFound { op, key };
        }
        let code = if code.is_empty() {
            status_text(status).to_string()
        } else {
            code
        };
        StoreError::Service {
            op,
            key,
            status,
            code,
            message,
            bucket_region: None,
        }
    }

    /// The error with the bucket region a response header named (a blank or non-text value
    /// is ignored).
    pub fn with_bucket_region(mut self, region: Option<&str>) -> Self {
        if let StoreError::Service { bucket_region, .. } = &mut self {
            *bucket_region = region
                .map(str::trim)
                .filter(|r| !r.is_empty() && r.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
                .map(str::to_string);
        }
        self
    }

    /// The operation that failed.
    pub fn op(&self) -> &'static str {
        match self {
            StoreError::NotFound { op, .. }
            | StoreError::Service { op, .. }
            | StoreError::Timeout { op, .. }
            | StoreError::Unreachable { op, .. }
            | StoreError::Other { op, .. } => op,
        }
    }

    /// A local failure (staging file I/O) attributed to an operation.
    pub fn local(op: &'static str, key: &str, err: impl std::fmt::Display) -> Self {
        StoreError::Other {
            op,
            key: key.to_string(),
            detail: err.to_string(),
        }
    }

    /// The errno a syscall returns for this error.
    pub fn errno(&self) -> i32 {
        match self {
            StoreError::NotFound { .. } => libc::ENOENT,
            StoreError::Service { status: 403, .. } => libc::EACCES,
            StoreError::Service { status: 416, .. } => libc::EINVAL,
            StoreError::Service { code, .. } if code == "EntityTooLarge" => libc::EFBIG,
            StoreError::Timeout { .. } => libc::ETIMEDOUT,
            _ => libc::EIO,
        }
    }

    /// True for 404 of the object itself (not of the bucket).
    pub fn is_not_found(&self) -> bool {
        matches!(self, StoreError::NotFound { .. })
    }

    /// True for `412 PreconditionFailed`: the object is no longer the version asked for.
    pub fn is_precondition_failed(&self) -> bool {
        matches!(self, StoreError::Service { status: 412, .. }) || self.code() == Some("PreconditionFailed")
    }

    /// The S3 error code, if the server sent one.
    pub fn code(&self) -> Option<&str> {
        match self {
            StoreError::Service { code, .. } => Some(code),
            _ => None,
        }
    }

    /// One line naming the cause and the fix, for a mount that cannot start.
    pub fn mount_hint(&self, bucket: &str, endpoint: &str) -> String {
        match self {
            StoreError::Service {
                code,
                status,
                message,
                bucket_region,
                ..
            } => {
                // Where the server named the bucket's region, that is the value to set.
                let region_fix = match bucket_region {
                    Some(r) => format!(
                        "the bucket is in region '{r}': set region={r}, and url= to an endpoint \
                         of that region if this one serves only its own"
                    ),
                    None => "set region= to the bucket's region".to_string(),
                };
                let said = if message.is_empty() {
                    String::new()
                } else {
                    format!("; the server said: {message}")
                };
                let hint = match code.as_str() {
                    "NoSuchBucket" => format!(
                        "bucket '{bucket}' does not exist at {endpoint} (404 NoSuchBucket): \
                     create it, or check the bucket name and url="
                    ),
                    "InvalidAccessKeyId" => format!(
                        "the server at {endpoint} does not know the access key (403 InvalidAccessKeyId): \
                     check the key id in passwd_file= or AWS_ACCESS_KEY_ID"
                    ),
                    "SignatureDoesNotMatch" => {
                        "the secret key does not match the access key (403 SignatureDoesNotMatch): \
                     check the secret in passwd_file= or AWS_SECRET_ACCESS_KEY, and region="
                            .to_string()
                    }
                    "AccessDenied" => format!(
                        "access to bucket '{bucket}' is denied (403 AccessDenied): check the access key \
                     and secret (passwd_file= or AWS_*), and that they may list and read/write the bucket"
                    ),
                    "AuthorizationHeaderMalformed"
                    | "InvalidRegion"
                    | "IllegalLocationConstraintException" => {
                        format!("the server rejected the signing region ({status} {code}): {region_fix}")
                    }
                    "RequestTimeTooSkewed" => format!(
                        "the server at {endpoint} says this host's clock is wrong ({status} {code}): \
                     signatures are only accepted within 15 minutes of the server's time; set the \
                     clock (for example 'timedatectl set-ntp true', or chrony)"
                    ),
                    "PermanentRedirect" | "301" => match bucket_region {
                        Some(_) => format!(
                            "bucket '{bucket}' is not served by {endpoint} ({status} {code}): \
                             {region_fix}"
                        ),
                        None => format!(
                            "bucket '{bucket}' lives in another region or endpoint ({status} \
                             {code}): set url= and region= to the bucket's"
                        ),
                    },
                    _ => format!(
                        "the server at {endpoint} refused to list bucket '{bucket}' ({status} {code}): \
                     check url=, region= and the credentials"
                    ),
                };
                format!("{hint}{said}")
            }
            StoreError::Timeout { .. } => format!(
                "endpoint {endpoint} did not answer a one-key listing in time, twice: check url= \
                 and that the server is up and reachable from this host (the mount waits {} s \
                 per attempt at most, less with a lower readwrite_timeout=)",
                super::STARTUP_ATTEMPT_TIMEOUT.as_secs()
            ),
            StoreError::Unreachable { detail, .. } if detail.contains("certificate") => format!(
                "the TLS certificate of {endpoint} is not trusted ({detail}): if the server uses a \
                 private CA, give its certificate with ca_bundle=PATH; otherwise check url="
            ),
            StoreError::Unreachable { detail, .. } => format!(
                "cannot reach endpoint {endpoint} ({detail}): check url= and that the server is \
                 running and reachable"
            ),
            StoreError::NotFound { .. } => {
                format!("bucket '{bucket}' was not found at {endpoint} (404): check the bucket name and url=")
            }
            StoreError::Other { detail, .. } => {
                if detail.contains("credentials") || detail.contains("Credentials") {
                    format!(
                        "no usable credentials ({detail}): give passwd_file=PATH with AK:SK, or set \
                         AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or an AWS profile"
                    )
                } else {
                    format!("cannot list bucket '{bucket}' at {endpoint}: {detail}")
                }
            }
        }
    }
}

/// The response header in which S3 names a bucket's region.
pub const BUCKET_REGION_HEADER: &str = "x-amz-bucket-region";

/// The deepest source of an error chain: for a connector error that is the OS error
/// ("Connection refused (os error 111)").
fn innermost_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cur: &(dyn std::error::Error + 'static) = err;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

fn status_text(status: u16) -> &'static str {
    match status {
        301 => "301",
        400 => "BadRequest",
        403 => "Forbidden",
        404 => "NotFound",
        409 => "Conflict",
        412 => "PreconditionFailed",
        416 => "InvalidRange",
        500 => "InternalError",
        503 => "ServiceUnavailable",
        _ => "HttpError",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(status: u16, code: &str) -> StoreError {
        StoreError::Service {
            op: "ListObjectsV2",
            key: String::new(),
            status,
            code: code.into(),
            message: String::new(),
            bucket_region: None,
        }
    }

    #[test]
    fn errno_mapping() {
        assert_eq!(
            StoreError::NotFound {
                op: "HeadObject",
                key: "k".into()
            }
            .errno(),
            libc::ENOENT
        );
        assert_eq!(service(403, "AccessDenied").errno(), libc::EACCES);
        assert_eq!(service(500, "InternalError").errno(), libc::EIO);
        assert_eq!(service(503, "SlowDown").errno(), libc::EIO);
        assert_eq!(
            StoreError::Timeout {
                op: "GetObject",
                key: "k".into(),
                endpoint: "e".into()
            }
            .errno(),
            libc::ETIMEDOUT
        );
    }

    #[test]
    fn mount_hints_name_code_and_fix() {
        let h = service(404, "NoSuchBucket").mount_hint("b1", "http://h");
        assert!(h.contains("NoSuchBucket") && h.contains("'b1'") && h.contains("create it"));
        let h = service(403, "InvalidAccessKeyId").mount_hint("b1", "http://h");
        assert!(h.contains("403 InvalidAccessKeyId") && h.contains("passwd_file"));
        let h = service(403, "SignatureDoesNotMatch").mount_hint("b1", "http://h");
        assert!(h.contains("SignatureDoesNotMatch"));
        let h = service(403, "RequestTimeTooSkewed").mount_hint("b1", "http://h");
        assert!(
            h.contains("403 RequestTimeTooSkewed") && h.contains("clock"),
            "{h}"
        );
        let h = StoreError::Unreachable {
            op: "ListObjectsV2",
            key: String::new(),
            endpoint: "http://127.0.0.1:9".into(),
            detail: "Connection refused".into(),
        }
        .mount_hint("b1", "http://127.0.0.1:9");
        assert!(h.contains("http://127.0.0.1:9") && h.contains("refused"));

        // A redirect or a region error names the region the server gave, when it gave one.
        let moved = service(301, "PermanentRedirect").with_bucket_region(Some("eu-central-1"));
        let h = moved.mount_hint("b1", "https://s3.amazonaws.com");
        assert!(
            h.contains("301 PermanentRedirect") && h.contains("region=eu-central-1"),
            "{h}"
        );
        let h = service(400, "AuthorizationHeaderMalformed")
            .with_bucket_region(Some(" ap-south-1 "))
            .mount_hint("b1", "http://h");
        assert!(h.contains("region=ap-south-1"), "{h}");
        let h = service(301, "PermanentRedirect").mount_hint("b1", "http://h");
        assert!(h.contains("url= and region="), "{h}");
        // A header that is not a region name is not repeated.
        let h = service(301, "PermanentRedirect")
            .with_bucket_region(Some("x y\r\nSet: z"))
            .mount_hint("b1", "http://h");
        assert!(!h.contains("x y") && h.contains("url= and region="), "{h}");
    }
}
