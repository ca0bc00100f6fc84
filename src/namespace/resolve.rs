//! Deciding what a path is, from the bucket.
//!
//! A lookup miss sends a HEAD of `key` and a one-key listing of `key/` at the same time (one
//! round trip). Rules, in order: anything under `key/` makes a directory (explicit when `key/`
//! itself exists, then its metadata is read; implicit otherwise) and wins over a file `key`;
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
    ObjectState {
        attr: pres.from_object(kind, &stored, info.size, info.last_modified, now),
        etag: info.etag.clone(),
        content_type: info.content_type.clone(),
        foreign_meta: attr::foreign_metadata(&info.metadata),
        dir_marker: (kind == NodeKind::Dir).then(|| info.key.clone()),
    }
}

/// State of a directory that exists only because keys live under it.
pub fn implicit_dir_state(pres: &Presentation, mount_time: SystemTime) -> ObjectState {
    ObjectState {
        attr: pres.implicit_dir(mount_time),
        etag: None,
        content_type: None,
        foreign_meta: Default::default(),
        dir_marker: None,
    }
}

/// What `key` (a store key without trailing slash) is; `Ok(None)` if nothing is there.
pub async fn resolve_key(
    store: &ObjectStore,
    pres: &Presentation,
    key: &str,
    mount_time: SystemTime,
) -> Result<Option<ObjectState>, StoreError> {
    let dir_prefix = format!("{key}/");
    let (head, list) = tokio::join!(store.head(key), store.list(&dir_prefix, false, None, 1));
    let list = list?;
    let now = SystemTime::now();
    if let Some(first) = list.objects.first() {
        if head.as_ref().is_ok_and(|h| h.is_some()) {
            tracing::warn!(
                key,
                "both a file and a directory of this name exist; showing the directory"
            );
        }
        if first.key == dir_prefix {
            if let Some(info) = store.head(&dir_prefix).await? {
                return Ok(Some(state_from_head(&info, pres, now)));
            }
        }
        return Ok(Some(implicit_dir_state(pres, mount_time)));
    }
    if !list.prefixes.is_empty() {
        return Ok(Some(implicit_dir_state(pres, mount_time)));
    }
    Ok(head?.map(|info| state_from_head(&info, pres, now)))
}
