//! Deciding what a path is, from the bucket.
//!
//! A name nobody has listed is resolved with one LIST of the prefix `key` (so a miss costs one
//! request), then a HEAD of what it found. Rules, in order: anything under `key/`
//! makes a directory (explicit when `key/` itself exists, then its metadata is read; implicit
//! otherwise) and wins over a file `key`;
//! else the object `key` is a directory, symlink or file by its mode metadata and content type;
//! else the path does not exist. A failed request is an error, never "absent": mistaking a
//! transient error for absence is how s3fs once overwrote objects.

use std::time::SystemTime;

use crate::attr::{self, NodeKind, Presentation};
use crate::namespace::ObjectState;
use crate::store::{ObjectInfo, ObjectStore, StoreError};

/// State of an object found by HEAD, as a file, symlink or directory.
pub fn state_from_head(info: &ObjectInfo, pres: &Presentation, now: SystemTime) -> ObjectState {
    let stored = attr::parse_stored(&info.metadata, &info.key);
    let mut kind = attr::kind_of_object(&stored, info.content_type.as_deref());
    if info.key.ends_with('/') {
        kind = NodeKind::Dir;
        if info.size > 0 {
            tracing::warn!(key = %info.key, "directory object has a body of {} bytes; showing it as a directory", info.size);
        }
    }
    let attr = pres.from_object(kind, &stored, info.size, info.last_modified, now);
    ObjectState {
        bucket_times: Some([attr.mtime, attr.ctime, attr.atime]),
        attr,
        etag: info.etag.clone(),
        content_type: info.content_type.clone(),
        foreign_meta: attr::foreign_metadata(&info.metadata),
        content_headers: info.content_headers.clone(),
        dir_marker: (kind == NodeKind::Dir).then(|| info.key.clone()),
        posix_stored: stored.mode.is_some() && stored.uid.is_some() && stored.gid.is_some(),
    }
}

/// State of a directory that exists only because keys live under it.
pub fn implicit_dir_state(pres: &Presentation, mount_time: SystemTime) -> ObjectState {
    let attr = pres.implicit_dir(mount_time);
    ObjectState {
        bucket_times: Some([attr.mtime, attr.ctime, attr.atime]),
        attr,
        etag: None,
        content_type: None,
        foreign_meta: Default::default(),
        content_headers: Vec::new(),
        dir_marker: None,
        posix_stored: false,
    }
}

/// Keys asked for when resolving one name: enough to reach `key/` past names like `key.txt`.
const NEAR_KEYS: i32 = 100;

/// What `key` (a store key without trailing slash) is; `Ok(None)` if nothing is there.
///
/// One LIST of the prefix `key` answers a miss (the usual case for a name nobody has listed: a
/// create, a probe) in one request: it returns the object `key`, then the marker `key/` and the
/// first key under it if they exist, as only names like `key.txt` or `key-1` sort between.
/// Should those fill the page, a second one-key LIST of `key/` settles the directory. A file or
/// an explicit directory then needs one HEAD for its metadata; an implicit one needs nothing.
pub async fn resolve_key(
    store: &ObjectStore,
    pres: &Presentation,
    key: &str,
    mount_time: SystemTime,
) -> Result<Option<ObjectState>, StoreError> {
    let dir_prefix = format!("{key}/");
    let page = store.list(key, false, None, NEAR_KEYS).await?;
    let file = page.objects.iter().any(|o| o.key == key);
    let mut under = page.objects.iter().filter(|o| o.key.starts_with(&dir_prefix));
    let (mut dir, mut explicit) = match under.next() {
        Some(first) => (true, first.key == dir_prefix),
        None => (false, false),
    };
    let reached = page
        .objects
        .last()
        .is_some_and(|o| o.key.as_str() >= dir_prefix.as_str());
    if !dir && page.next.is_some() && !reached {
        // Many names sort between `key` and `key/`: ask about the directory directly.
        let sub = store.list(&dir_prefix, false, None, 1).await?;
        if let Some(first) = sub.objects.first() {
            dir = true;
            explicit = first.key == dir_prefix;
        }
    }
    let now = SystemTime::now();
    if dir {
        if file {
            tracing::warn!(
                key,
                "both a file and a directory of this name exist; showing the directory"
            );
        }
        if explicit {
            if let Some(info) = store.head(&dir_prefix).await? {
                return Ok(Some(state_from_head(&info, pres, now)));
            }
        }
        return Ok(Some(implicit_dir_state(pres, mount_time)));
    }
    if !file {
        return Ok(None);
    }
    Ok(store
        .head(key)
        .await?
        .map(|info| state_from_head(&info, pres, now)))
}
