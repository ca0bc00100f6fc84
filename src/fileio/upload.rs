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
            .slice(0, len, store.buffers())
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
                let source = staging
                    .part_source(start, end, store.buffers())
                    .map_err(|e| StoreError::local("UploadPart", key, e))?;
                let body = source
                    .load(store.buffers())
                    .await
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
    store.abort_or_queue(key, upload_id).await;
}

/// A multipart upload fed while the file is still being written sequentially: each part is
/// sent as soon as the writer has filled it, a bounded number at a time, so closing a large
/// file only waits for the last parts. Dropping it without [`StreamingUpload::finish`] leaves
/// the upload to be aborted by [`StreamingUpload::abort`].
#[derive(Debug)]
pub struct StreamingUpload {
    key: String,
    upload_id: String,
    part_size: u64,
    parallel: usize,
    /// Parts `[0, parts_started)` have been handed to a task.
    parts_started: u64,
    done: Vec<(i32, String)>,
    /// Bytes of uploaded parts moved out of the page cache (see
    /// [`crate::fileio::staging::evict_uploaded`]).
    evicted: std::sync::Arc<std::sync::atomic::AtomicU64>,
    inflight: std::collections::VecDeque<tokio::task::JoinHandle<Result<(i32, String), StoreError>>>,
    /// The metadata the object was created with (to know whether it must be corrected).
    pub sent: PutOptions,
}

impl StreamingUpload {
    /// Starts a multipart upload of `key`.
    pub async fn start(
        store: &ObjectStore,
        key: &str,
        put: PutOptions,
        part_size: u64,
        parallel: usize,
    ) -> Result<Self, StoreError> {
        let upload_id = store.create_multipart(key, &put).await?;
        Ok(Self {
            key: key.to_string(),
            upload_id,
            part_size,
            parallel: parallel.max(1),
            parts_started: 0,
            done: Vec::new(),
            evicted: Default::default(),
            inflight: Default::default(),
            sent: put,
        })
    }

    /// The key being uploaded.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Bytes already handed to part uploads.
    pub fn covered(&self) -> u64 {
        self.parts_started * self.part_size
    }

    /// Bytes of uploaded parts already moved out of the page cache.
    pub fn evicted(&self) -> u64 {
        self.evicted.load(std::sync::atomic::Ordering::Relaxed)
    }

    async fn reap_one(&mut self) -> Result<(), StoreError> {
        if let Some(task) = self.inflight.pop_front() {
            let part = task
                .await
                .map_err(|e| StoreError::local("UploadPart", &self.key, e))??;
            self.done.push(part);
        }
        Ok(())
    }

    /// Sends every complete part of `staging` not sent yet, waiting for a free slot when
    /// `parallel` parts are already in flight.
    pub async fn send_full_parts(
        &mut self,
        store: &std::sync::Arc<ObjectStore>,
        staging: &Staging,
    ) -> Result<(), StoreError> {
        while (self.parts_started + 1) * self.part_size <= staging.len() {
            while self.inflight.len() >= self.parallel {
                self.reap_one().await?;
            }
            let start = self.parts_started * self.part_size;
            let source = staging
                .part_source(start, start + self.part_size, store.buffers())
                .map_err(|e| StoreError::local("UploadPart", &self.key, e))?;
            self.parts_started += 1;
            let number = self.parts_started as i32;
            let (store, key, id) = (store.clone(), self.key.clone(), self.upload_id.clone());
            let evicted = self.evicted.clone();
            self.inflight.push_back(tokio::spawn(async move {
                let spilled = source.spill_range();
                let body = source
                    .load(store.buffers())
                    .await
                    .map_err(|e| StoreError::local("UploadPart", &key, e))?;
                let etag = store.upload_part(&key, &id, number, body).await?;
                if let Some((file, start, end)) = spilled {
                    // Page cache housekeeping, not part of the upload: nobody waits for it.
                    tokio::task::spawn_blocking(move || {
                        match crate::fileio::staging::evict_uploaded(&file, start, end) {
                            Ok(()) => {
                                evicted.fetch_add(end - start, std::sync::atomic::Ordering::Relaxed);
                            }
                            Err(e) => {
                                tracing::debug!("cannot move an uploaded part out of the page cache: {e}")
                            }
                        }
                    });
                }
                Ok((number, etag))
            }));
        }
        Ok(())
    }

    /// Sends the rest of `staging` as the last part and completes the upload.
    pub async fn finish(
        mut self,
        store: &std::sync::Arc<ObjectStore>,
        staging: &Staging,
    ) -> Result<Option<String>, StoreError> {
        let result = async {
            self.send_full_parts(store, staging).await?;
            let start = self.covered();
            if start < staging.len() || self.parts_started == 0 {
                let body = staging
                    .slice(start, staging.len(), store.buffers())
                    .map_err(|e| StoreError::local("UploadPart", &self.key, e))?;
                let number = (self.parts_started + 1) as i32;
                let etag = store
                    .upload_part(&self.key, &self.upload_id, number, body)
                    .await?;
                self.parts_started += 1;
                self.done.push((number, etag));
            }
            while !self.inflight.is_empty() {
                self.reap_one().await?;
            }
            let mut parts = std::mem::take(&mut self.done);
            parts.sort_by_key(|(n, _)| *n);
            store.complete_multipart(&self.key, &self.upload_id, parts).await
        }
        .await;
        if result.is_err() {
            abort(store, &self.key, &self.upload_id).await;
        }
        result
    }

    /// Abandons the upload: cancels parts in flight and aborts it so no parts stay behind.
    pub async fn abort(mut self, store: &ObjectStore) {
        for task in self.inflight.drain(..) {
            task.abort();
        }
        abort(store, &self.key, &self.upload_id).await;
    }
}
