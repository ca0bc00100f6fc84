//! Uploading a staged file: one PUT up to the part size, multipart above it.
//!
//! Multipart uploads read each part from the staging area only when a slot is free, keep
//! `parallel` parts in flight, and are aborted on any failure so no orphaned parts stay in the
//! bucket. The caller gets the ETag of the new object, or the error that stopped it.

use futures::stream::{self, StreamExt, TryStreamExt};

use super::Staging;
use crate::store::{ObjectStore, PutOptions, StoreError, MAX_PARTS};

/// Largest part S3 accepts.
const MAX_PART: u64 = 5 << 30;
/// Parts a streamed upload sends at one part size before the size doubles.
const PARTS_PER_SIZE: u64 = 1_000;

/// Part size for uploading `len` bytes at once: `base`, or more (whole MiB) when `len` would
/// need more than S3's 10,000 parts of `base`.
fn whole_part_size(len: u64, base: u64) -> u64 {
    base.max(len.div_ceil(MAX_PARTS).next_multiple_of(1 << 20))
}

/// Byte range of part `n` (from 0) of a streamed upload, whose size is not known while it is
/// sent: `base` bytes for the first [`PARTS_PER_SIZE`] parts, then twice that for as many, and
/// so on up to S3's 5 GiB. The 10,000 parts S3 allows then hold any object it accepts (its
/// 5 TiB from parts of 10 MiB, the default, up; 97.5% of that from 5 MiB parts), while a file
/// under 1,000 parts (10 GB by default) only ever sends parts of `base`.
fn streamed_part(n: u64, base: u64) -> (u64, u64) {
    let size_at = |block: u64| base.saturating_mul(1 << block.min(32)).min(MAX_PART).max(base);
    let block = n / PARTS_PER_SIZE;
    let start =
        (0..block).map(|b| PARTS_PER_SIZE * size_at(b)).sum::<u64>() + (n % PARTS_PER_SIZE) * size_at(block);
    (start, start + size_at(block))
}

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
            .range(0, len, Some(store.buffers()))
            .load(Some(store.buffers()))
            .await
            .map_err(|e| StoreError::local("PutObject", key, e))?;
        return store.put(key, body, put).await;
    }
    let part_size = whole_part_size(len, part_size);
    let upload_id = store.create_multipart(key, put).await?;
    let parts = len.div_ceil(part_size);
    let result: Result<Vec<(i32, String)>, StoreError> = stream::iter(0..parts)
        .map(|i| {
            let start = i * part_size;
            let end = len.min(start + part_size);
            let upload_id = upload_id.as_str();
            async move {
                let body = staging
                    .range(start, end, Some(store.buffers()))
                    .load(Some(store.buffers()))
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
/// file only waits for the last parts. One dropped without [`StreamingUpload::finish`] or
/// [`StreamingUpload::abort`] cancels its parts in flight and queues the abort of the upload
/// (see [`ObjectStore::queue_abort`]).
#[derive(Debug)]
pub struct StreamingUpload {
    store: std::sync::Arc<ObjectStore>,
    /// Finished or aborted: nothing left to clean up.
    settled: bool,
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
        store: &std::sync::Arc<ObjectStore>,
        key: &str,
        put: PutOptions,
        part_size: u64,
        parallel: usize,
    ) -> Result<Self, StoreError> {
        let upload_id = store.create_multipart(key, &put).await?;
        Ok(Self {
            store: store.clone(),
            settled: false,
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
        streamed_part(self.parts_started, self.part_size).0
    }

    /// Size of the next part to send.
    pub fn part_len(&self) -> u64 {
        let (start, end) = streamed_part(self.parts_started, self.part_size);
        end - start
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
    pub async fn send_full_parts(&mut self, staging: &Staging) -> Result<(), StoreError> {
        let store = self.store.clone();
        loop {
            let (start, end) = streamed_part(self.parts_started, self.part_size);
            // The last part S3 allows is left for `finish`, which sends whatever remains.
            if end > staging.len() || self.parts_started + 1 >= MAX_PARTS {
                return Ok(());
            }
            while self.inflight.len() >= self.parallel {
                self.reap_one().await?;
            }
            let source = staging.range(start, end, Some(store.buffers()));
            self.parts_started += 1;
            let number = self.parts_started as i32;
            let (store, key, id) = (store.clone(), self.key.clone(), self.upload_id.clone());
            let evicted = self.evicted.clone();
            self.inflight.push_back(tokio::spawn(async move {
                let spilled = source.spill_range();
                let body = source
                    .load(Some(store.buffers()))
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
    }

    /// Sends the rest of `staging` as the last part and completes the upload.
    pub async fn finish(mut self, staging: &Staging) -> Result<Option<String>, StoreError> {
        let store = self.store.clone();
        let result = async {
            self.send_full_parts(staging).await?;
            let start = self.covered();
            if start < staging.len() || self.parts_started == 0 {
                let body = staging
                    .range(start, staging.len(), Some(store.buffers()))
                    .load(Some(store.buffers()))
                    .await
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
            // Parts still running would race the abort (and could outlive it, unseen).
            self.cancel_parts();
            abort(&store, &self.key, &self.upload_id).await;
        }
        self.settled = true;
        result
    }

    /// Abandons the upload: cancels parts in flight and aborts it so no parts stay behind.
    pub async fn abort(mut self) {
        self.cancel_parts();
        abort(&self.store, &self.key, &self.upload_id).await;
        self.settled = true;
    }

    fn cancel_parts(&mut self) {
        for task in self.inflight.drain(..) {
            task.abort();
        }
    }
}

impl Drop for StreamingUpload {
    fn drop(&mut self) {
        if !self.settled {
            self.cancel_parts();
            tracing::warn!("the upload of {} was dropped unfinished; aborting it", self.key);
            self.store.queue_abort(&self.key, &self.upload_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{streamed_part, whole_part_size, MAX_PART, MAX_PARTS};

    const MIB: u64 = 1 << 20;
    /// The largest object S3 stores.
    const MAX_OBJECT: u64 = 5 << 40;

    #[test]
    fn whole_uploads_fit_the_part_count() {
        assert_eq!(whole_part_size(100 * MIB, 10 * MIB), 10 * MIB);
        assert_eq!(whole_part_size(10_000 * 10 * MIB, 10 * MIB), 10 * MIB);
        for len in [10_000 * 10 * MIB + 1, 200 << 30, MAX_OBJECT] {
            let part = whole_part_size(len, 10 * MIB);
            assert!(len.div_ceil(part) <= MAX_PARTS, "{len}: {part}");
            assert!(part <= MAX_PART && part.is_multiple_of(MIB), "{len}: {part}");
        }
    }

    #[test]
    fn streamed_parts_are_contiguous_and_reach_the_largest_object() {
        for base in [5 * MIB, 10 * MIB, 64 * MIB] {
            let mut end = 0;
            for n in 0..MAX_PARTS {
                let (s, e) = streamed_part(n, base);
                assert_eq!(s, end, "part {n} of {base}");
                assert!(e - s >= base && e - s <= MAX_PART.max(base), "part {n} of {base}");
                if n < 1_000 {
                    assert_eq!(e - s, base, "the first 1,000 parts keep the base size");
                }
                end = e;
            }
            // 9,999 full parts and the remainder (up to 5 GiB): S3's largest object from
            // parts of 10 MiB up, 97.5% of it from S3's smallest parts (5 MiB).
            let reach = streamed_part(MAX_PARTS - 1, base).0 + MAX_PART;
            let wanted = if base >= 10 * MIB {
                MAX_OBJECT
            } else {
                MAX_OBJECT / 40 * 39
            };
            assert!(reach >= wanted, "{base}: {reach}");
        }
    }
}
