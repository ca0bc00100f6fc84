//! Credentials from an s3fs/ossfs-style password file, re-read when the file changes.
//!
//! The file holds `ACCESS_KEY:SECRET` or `BUCKET:ACCESS_KEY:SECRET` lines (`#` comments and blank
//! lines ignored); a bucket-specific line wins over a generic one. Like s3fs, a file readable by
//! group or others is refused. The provider stats the file on each credential request and
//! re-reads it when its modification time or size changed, so rotated keys take effect without a
//! remount. Secrets live only inside [`aws_credential_types::Credentials`], whose `Debug` redacts
//! them; no error message here quotes a line of the file. [`ReloadingChain`] does the same for the
//! standard AWS chain and its shared profile files.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use aws_credential_types::provider::{self, error::CredentialsError, future, ProvideCredentials};
use aws_credential_types::Credentials;

/// Why a password file cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PasswdFileError {
    /// Could not open or stat it.
    #[error("cannot read passwd_file {path}: {reason}")]
    Unreadable {
        /// The file.
        path: String,
        /// The OS error.
        reason: String,
    },
    /// Not a regular file.
    #[error("passwd_file {path} is a directory or special file, not a regular file: give the file that holds ACCESS_KEY:SECRET")]
    NotAFile {
        /// The path.
        path: String,
    },
    /// Group or others may read it.
    #[error("passwd_file {path} is readable by group or others (mode {mode:o}); run: chmod 600 {path}")]
    TooOpen {
        /// The file.
        path: String,
        /// Its permission bits.
        mode: u32,
    },
    /// No usable line.
    #[error("passwd_file {path} has no line for bucket '{bucket}': write ACCESS_KEY:SECRET or {bucket}:ACCESS_KEY:SECRET")]
    NoEntry {
        /// The file.
        path: String,
        /// The bucket.
        bucket: String,
    },
    /// A line has the wrong shape (its number is given, never its content).
    #[error(
        "passwd_file {path} line {line} is malformed: expected ACCESS_KEY:SECRET or BUCKET:ACCESS_KEY:SECRET"
    )]
    Malformed {
        /// The file.
        path: String,
        /// 1-based line number.
        line: usize,
    },
}

/// Parses the file's text and picks the keys for `bucket`.
pub fn parse_passwd(text: &str, bucket: &str, path: &str) -> Result<(String, String), PasswdFileError> {
    let mut generic = None;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let parts: Vec<&str> = line.split(':').collect();
        match parts.as_slice() {
            [ak, sk] if !ak.is_empty() && !sk.is_empty() => {
                if generic.is_none() {
                    generic = Some((ak.to_string(), sk.to_string()));
                }
            }
            [b, ak, sk] if !b.is_empty() && !ak.is_empty() && !sk.is_empty() => {
                if *b == bucket {
                    return Ok((ak.to_string(), sk.to_string()));
                }
            }
            _ => {
                return Err(PasswdFileError::Malformed {
                    path: path.to_string(),
                    line: i + 1,
                });
            }
        }
    }
    generic.ok_or_else(|| PasswdFileError::NoEntry {
        path: path.to_string(),
        bucket: bucket.to_string(),
    })
}

/// Modification time (ns) and size of the file, to notice a rewrite.
pub type FileStamp = (i64, u64);

/// Reads and checks the file (permissions, then content); returns the keys and the stamp.
pub fn load_passwd_file(path: &Path, bucket: &str) -> Result<((String, String), FileStamp), PasswdFileError> {
    let shown = path.display().to_string();
    let meta = std::fs::metadata(path).map_err(|e| PasswdFileError::Unreadable {
        path: shown.clone(),
        reason: e.to_string(),
    })?;
    if !meta.is_file() {
        return Err(PasswdFileError::NotAFile { path: shown });
    }
    let mode = meta.mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(PasswdFileError::TooOpen { path: shown, mode });
    }
    let text = std::fs::read_to_string(path).map_err(|e| PasswdFileError::Unreadable {
        path: shown.clone(),
        reason: e.to_string(),
    })?;
    let keys = parse_passwd(&text, bucket, &shown)?;
    Ok((
        keys,
        (meta.mtime_nsec() + meta.mtime() * 1_000_000_000, meta.len()),
    ))
}

/// A credentials provider backed by a password file, reloaded on change.
#[derive(Debug)]
pub struct PasswdFileProvider {
    path: PathBuf,
    bucket: String,
    cached: Mutex<Option<(FileStamp, Credentials)>>,
    /// The version of the file last found unusable (warned about once, not at every request).
    warned: Mutex<Option<Option<FileStamp>>>,
}

impl PasswdFileProvider {
    /// Checks the file now, so a bad file fails the mount before it starts.
    pub fn new(path: PathBuf, bucket: &str) -> Result<Self, PasswdFileError> {
        let ((ak, sk), stamp) = load_passwd_file(&path, bucket)?;
        let creds = Credentials::new(ak, sk, None, None, "passwd_file");
        Ok(Self {
            path,
            bucket: bucket.to_string(),
            cached: Mutex::new(Some((stamp, creds))),
            warned: Mutex::new(None),
        })
    }

    fn current(&self) -> provider::Result {
        let stamp = std::fs::metadata(&self.path)
            .map(|m| (m.mtime_nsec() + m.mtime() * 1_000_000_000, m.len()))
            .ok();
        let mut cached = self.cached.lock().unwrap_or_else(|p| p.into_inner());
        if let (Some((old, creds)), Some(now)) = (cached.as_ref(), stamp) {
            if *old == now {
                return Ok(creds.clone());
            }
        }
        match load_passwd_file(&self.path, &self.bucket) {
            Ok(((ak, sk), stamp)) => {
                let creds = Credentials::new(ak, sk, None, None, "passwd_file");
                tracing::info!(path = %self.path.display(), "passwd_file changed: using the new keys");
                *cached = Some((stamp, creds.clone()));
                Ok(creds)
            }
            Err(e) => match cached.as_ref() {
                // Keep serving the last good keys while the file is being rewritten or broken.
                Some((_, creds)) => {
                    let mut warned = self.warned.lock().unwrap_or_else(|p| p.into_inner());
                    if *warned != Some(stamp) {
                        tracing::warn!("{e}; keeping the previous keys");
                        *warned = Some(stamp);
                    }
                    Ok(creds.clone())
                }
                None => Err(CredentialsError::provider_error(e)),
            },
        }
    }
}

impl ProvideCredentials for PasswdFileProvider {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::ready(self.current())
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn credentials_are_refreshed_ahead_and_kept_through_a_failed_refresh() {
        use std::time::{Duration, SystemTime};
        let now = SystemTime::now();
        let min = |m: u64| Duration::from_secs(60 * m);
        // Keys without expiry, or with more than five minutes left: no refresh.
        assert!(!needs_refresh(None, now, None));
        assert!(!needs_refresh(Some(now + min(30)), now, None));
        // Five minutes or less left: refresh.
        assert!(needs_refresh(Some(now + min(4)), now, None));
        // After a failed refresh: the keys are used until the retry time, then asked again.
        let retry = Some(now + Duration::from_secs(30));
        assert!(!needs_refresh(Some(now + min(4)), now, retry));
        assert!(needs_refresh(
            Some(now + min(4)),
            now + Duration::from_secs(31),
            retry
        ));
        // Expired keys are never used, whatever the retry time.
        assert!(needs_refresh(Some(now - min(1)), now, retry));
    }
    use super::*;

    #[test]
    fn generic_and_bucket_lines() {
        let text = "# comment\n\nAKGEN:SKGEN\nother:AKO:SKO\nmine:AKM:SKM\n";
        assert_eq!(
            parse_passwd(text, "mine", "f").unwrap(),
            ("AKM".into(), "SKM".into())
        );
        assert_eq!(
            parse_passwd(text, "nope", "f").unwrap(),
            ("AKGEN".into(), "SKGEN".into())
        );
    }

    #[test]
    fn malformed_and_empty() {
        assert_eq!(
            parse_passwd("justonefield\n", "b", "f"),
            Err(PasswdFileError::Malformed {
                path: "f".into(),
                line: 1
            })
        );
        assert!(matches!(
            parse_passwd("", "b", "f"),
            Err(PasswdFileError::NoEntry { .. })
        ));
        assert!(matches!(
            parse_passwd("other:a:b\n", "b", "f"),
            Err(PasswdFileError::NoEntry { .. })
        ));
        let e = parse_passwd("a:b:c:SECRETVALUE\n", "b", "f").unwrap_err();
        assert!(!e.to_string().contains("SECRETVALUE"));
    }

    #[test]
    fn group_readable_file_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("passwd");
        std::fs::write(&p, "AK:SK\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(matches!(
            load_passwd_file(&p, "b"),
            Err(PasswdFileError::TooOpen { mode: 0o640, .. })
        ));
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(load_passwd_file(&p, "b").unwrap().0, ("AK".into(), "SK".into()));
    }

    #[test]
    fn provider_reloads_after_rewrite() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("passwd");
        std::fs::write(&p, "AK1:SK1\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        let prov = PasswdFileProvider::new(p.clone(), "b").unwrap();
        assert_eq!(prov.current().unwrap().access_key_id(), "AK1");
        std::fs::write(&p, "AK22:SK22\n").unwrap();
        assert_eq!(prov.current().unwrap().access_key_id(), "AK22");
        assert!(!format!("{prov:?}").contains("SK22"));
    }
}

/// The standard AWS credential chain (environment, shared profile files, web identity, ECS,
/// IMDS) with two changes for a long-running mount: credentials are cached here until they near
/// their expiry, and a rewrite of `~/.aws/credentials` or `~/.aws/config` (or the files named by
/// `AWS_SHARED_CREDENTIALS_FILE` / `AWS_CONFIG_FILE`) rebuilds the chain, so rotated keys are
/// used by the next request without a remount.
pub struct ReloadingChain {
    region: Option<aws_types::region::Region>,
    files: Vec<PathBuf>,
    state: tokio::sync::Mutex<ChainState>,
}

#[derive(Default)]
struct ChainState {
    stamps: Vec<Option<FileStamp>>,
    chain: Option<aws_config::default_provider::credentials::DefaultCredentialsChain>,
    cached: Option<Credentials>,
    /// A refresh failed while the cached credentials were still valid: they are used without
    /// asking again until then.
    retry_after: Option<std::time::SystemTime>,
    /// The files changed since the cached credentials were provided: the new chain is asked at
    /// once, and the cached ones stay in use while it gives none (a file half written, a typo).
    stale: bool,
}

/// Credentials are refreshed this long before they expire.
const REFRESH_AHEAD: std::time::Duration = std::time::Duration::from_secs(300);
/// After a failed refresh, still-valid credentials are used this long before the next try.
const REFRESH_RETRY: std::time::Duration = std::time::Duration::from_secs(30);

/// Whether cached credentials expiring at `expiry` (`None`: never) need a refresh at `now`.
fn needs_refresh(
    expiry: Option<std::time::SystemTime>,
    now: std::time::SystemTime,
    retry_after: Option<std::time::SystemTime>,
) -> bool {
    let Some(expiry) = expiry else {
        return false;
    };
    let ahead = expiry
        .duration_since(now)
        .map_or(true, |left| left <= REFRESH_AHEAD);
    ahead && (retry_after.is_none_or(|t| now >= t) || expiry <= now)
}

impl std::fmt::Debug for ReloadingChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadingChain")
            .field("files", &self.files)
            .finish()
    }
}

fn stamp_of(path: &Path) -> Option<FileStamp> {
    std::fs::metadata(path)
        .ok()
        .map(|m| (m.mtime_nsec() + m.mtime() * 1_000_000_000, m.len()))
}

impl ReloadingChain {
    /// A chain for `region`, watching the shared credentials and config files.
    pub fn new(region: Option<aws_types::region::Region>) -> Self {
        let home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/root"));
        let creds = std::env::var_os("AWS_SHARED_CREDENTIALS_FILE")
            .map(PathBuf::from)
            .unwrap_or_else(|| home.join(".aws/credentials"));
        let config = std::env::var_os("AWS_CONFIG_FILE")
            .map(PathBuf::from)
            .unwrap_or_else(|| home.join(".aws/config"));
        Self {
            region,
            files: vec![creds, config],
            state: tokio::sync::Mutex::new(ChainState::default()),
        }
    }

    async fn current(&self) -> provider::Result {
        let stamps: Vec<Option<FileStamp>> = self.files.iter().map(|p| stamp_of(p)).collect();
        let mut state = self.state.lock().await;
        if state.chain.is_none() || state.stamps != stamps {
            if state.chain.is_some() {
                tracing::info!("AWS shared credentials/config changed: reloading the credential chain");
            }
            let mut builder = aws_config::default_provider::credentials::DefaultCredentialsChain::builder();
            if let Some(r) = &self.region {
                builder = builder.region(r.clone());
            }
            state.chain = Some(builder.build().await);
            state.stamps = stamps;
            state.stale = state.cached.is_some();
            state.retry_after = None;
        }
        let now = std::time::SystemTime::now();
        if let Some(c) = &state.cached {
            let current = if state.stale {
                state.retry_after.is_some_and(|t| now < t) && c.expiry().is_none_or(|exp| exp > now)
            } else {
                !needs_refresh(c.expiry(), now, state.retry_after)
            };
            if current {
                return Ok(c.clone());
            }
        }
        let chain = state
            .chain
            .as_ref()
            .ok_or_else(|| CredentialsError::not_loaded("no credential chain"))?;
        match chain.provide_credentials().await {
            Ok(creds) => {
                state.cached = Some(creds.clone());
                state.retry_after = None;
                state.stale = false;
                Ok(creds)
            }
            // The files changed into something that gives no credentials: the keys held work
            // until the files are fixed (a change is picked up at the next request).
            Err(e)
                if state.stale
                    && state
                        .cached
                        .as_ref()
                        .is_some_and(|c| c.expiry().is_none_or(|exp| exp > now)) =>
            {
                tracing::warn!(
                    "the changed AWS shared credentials/config files give no credentials ({e}); \
                     using the previous ones until they do"
                );
                state.retry_after = Some(now + REFRESH_RETRY);
                state.cached.clone().ok_or(e)
            }
            // A blip of the metadata service or STS: the keys held are good until they expire.
            Err(e) => match state.cached.clone() {
                Some(c) if c.expiry().is_some_and(|exp| exp > now) => {
                    tracing::warn!(
                        "refreshing the AWS credentials failed ({e}); using the current ones, \
                         valid until they expire, and trying again in {} s",
                        REFRESH_RETRY.as_secs()
                    );
                    state.retry_after = Some(now + REFRESH_RETRY);
                    Ok(c)
                }
                _ => Err(e),
            },
        }
    }
}

impl ProvideCredentials for ReloadingChain {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::new(self.current())
    }
}
