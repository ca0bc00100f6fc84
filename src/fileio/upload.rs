//! Uploading a staged file: one PUT up to the part size, multipart above it.
//!
//! Multipart uploads read each part from the staging area only when a slot is free, keep
//! `parallel` parts in flight, and are aborted on any failure so no orphaned parts stay in the
//! bucket. The caller gets the ETag of the new object, or the error that stopped it.

use futures::stream::{self, StreamExt, TryStreamExt};

use super::Staging;
use crate::store::{ObjectStore, PutOptions, StoreError};

/// Uploads `staging` as `key`; returns the new ETag.
pub async fn upload(
    store: &ObjectStore,
    key: &str,
    staging: &Staging,
    put: &PutOptions,
    part_size: u64,
    parallel: usize,
) -> Result<Option<String>, StoreError> {
    let len = staging.len();
    if len <= part_size {
        let body = staging
            .slice(0, len)
            .map_err(|e| StoreError::local("PutObject", key, e))?;
        return store.put(key, body, put).await;
    }
    let upload_id = store.create_multipart(key, put).await?;
    let parts = len.div_ceil(part_size);
    let result: Result<Vec<(i32, String)>, StoreError> = stream::iter(0..parts)
        .map(|i| {
            let start = i * part_size;
            let end = len.min(start + part_size);
            let upload_id = upload_id.as_str();
            async move {
                let body = staging
                    .slice(start, end)
                    .map_err(|e| StoreError::local("UploadPart", key, e))?;
                let number = (i + 1) as i32;
                let etag = store.upload_part(key, upload_id, number, body).await?;
                Ok::<_, StoreError>((number, etag))
            }
        })
        .buffer_unordered(parallel.max(1))
        .try_collect()
        .await;
    let mut done = match result {
        Ok(done) => done,
        Err(e) => {
            abort(store, key, &upload_id).await;
            return Err(e);
        }
    };
    done.sort_by_key(|(n, _)| *n);
    match store.complete_multipart(key, &upload_id, done).await {
        Ok(etag) => Ok(etag),
        Err(e) => {
            abort(store, key, &upload_id).await;
            Err(e)
        }
    }
}

async fn abort(store: &ObjectStore, key: &str, upload_id: &str) {
    if let Err(e) = store.abort_multipart(key, upload_id).await {
        tracing::error!(
            "could not abort the failed multipart upload of {key} (id {upload_id}): {e}; \
                         run 'rossfs --abort-uploads' to remove its parts"
        );
    }
}
