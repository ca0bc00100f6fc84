//! Housekeeping without a mount: listing and aborting incomplete multipart uploads (what
//! `s3fs -u` does). Uploads abandoned by a crash keep their parts, and their storage cost,
//! until aborted; rossfs aborts its own failed uploads, but a `kill -9` cannot.

use std::time::{Duration, SystemTime};

use crate::options::{MountOptions, MountSource};
use crate::store::ObjectStore;

/// Parses an age such as `90`, `90s`, `30m`, `24h` or `7d`.
pub fn parse_age(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not an age: write e.g. 3600, 30m, 24h or 7d"))?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => return Err(format!("'{s}' is not an age: the unit must be s, m, h or d")),
    };
    Ok(Duration::from_secs(secs))
}

/// Lists incomplete uploads under the source's prefix; with `abort_older_than`, aborts those at
/// least that old. Prints one line per upload; returns the exit code.
pub fn run(source: &MountSource, opts: &MountOptions, abort_older_than: Option<Duration>) -> i32 {
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("rossfs: cannot start the I/O runtime: {e}");
            return 1;
        }
    };
    rt.block_on(async {
        let store = match ObjectStore::new(opts, source).await {
            Ok(s) => s,
            Err(msg) => {
                eprintln!("rossfs: {msg}");
                return 1;
            }
        };
        let uploads = match store.list_multipart_uploads(&source.prefix).await {
            Ok(u) => u,
            Err(e) => {
                eprintln!("rossfs: {}", e.mount_hint(store.bucket(), store.endpoint()));
                return 1;
            }
        };
        let now = SystemTime::now();
        let (mut aborted, mut failed) = (0, 0);
        for (key, id, initiated) in &uploads {
            let age = initiated
                .and_then(|t| now.duration_since(t).ok())
                .unwrap_or_default();
            let due = abort_older_than.is_some_and(|limit| age >= limit);
            if due {
                match store.abort_multipart(key, id).await {
                    Ok(()) => {
                        aborted += 1;
                        println!("aborted  {key}  (upload {id}, {}s old)", age.as_secs());
                    }
                    Err(e) => {
                        failed += 1;
                        eprintln!("rossfs: could not abort the upload of {key}: {e}");
                    }
                }
            } else {
                println!("pending  {key}  (upload {id}, {}s old)", age.as_secs());
            }
        }
        println!("{} incomplete upload(s), {aborted} aborted", uploads.len());
        if failed > 0 {
            1
        } else {
            0
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages() {
        assert_eq!(parse_age("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_age("30m").unwrap(), Duration::from_secs(1800));
        assert_eq!(parse_age("24h").unwrap(), Duration::from_secs(86_400));
        assert_eq!(parse_age("7d").unwrap(), Duration::from_secs(604_800));
        assert!(parse_age("soon").is_err() && parse_age("3w").is_err());
    }
}
