//! Reading an object through ranged GETs, with read-ahead for sequential readers.
//!
//! The first read of a handle fetches exactly the bytes asked for, so reading 4 KiB of a huge
//! object transfers about 4 KiB. When the next read starts where the previous one ended, the
//! reader switches to prefetching: chunks of growing size (256 KiB doubling to 8 MiB) are
//! fetched ahead, several at once. A read elsewhere cancels the prefetch and starts over.
//! Every prefetched chunk holds its size in the mount-wide [`ReadBudget`] until it has been
//! read, so many readers share `max_memory=` instead of each taking its full window; a reader
//! whose next chunk does not fit waits for the chunks it already has.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::task::JoinHandle;

use crate::store::{ObjectStore, StoreError};

const FIRST_CHUNK: u64 = 256 * 1024;
const MAX_CHUNK: u64 = 8 * 1024 * 1024;

struct Chunk {
    start: u64,
    task: JoinHandle<Result<Bytes, StoreError>>,
    /// Budget held until the chunk has been consumed.
    _budget: Option<tokio::sync::OwnedSemaphorePermit>,
}

/// Memory for read-ahead shared by every open file (counted in KiB).
#[derive(Debug, Clone)]
pub struct ReadBudget(Arc<tokio::sync::Semaphore>);

impl ReadBudget {
    /// A budget of `bytes`.
    pub fn new(bytes: u64) -> Self {
        let kib = (bytes / 1024).clamp(1, tokio::sync::Semaphore::MAX_PERMITS as u64) as usize;
        Self(Arc::new(tokio::sync::Semaphore::new(kib)))
    }

    fn try_take(&self, bytes: u64) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let kib = bytes.div_ceil(1024).min(u32::MAX as u64) as u32;
        self.0.clone().try_acquire_many_owned(kib).ok()
    }
}

/// Read state of one open handle on one object version.
pub struct ObjectReader {
    store: Arc<ObjectStore>,
    budget: ReadBudget,
    key: String,
    size: u64,
    max_inflight: usize,
    /// Where the next sequential read would start.
    pos: u64,
    /// Data already fetched, starting at `buf_start`.
    buf_start: u64,
    buf: Bytes,
    queue: VecDeque<Chunk>,
    /// End of the last chunk queued.
    next_fetch: u64,
    chunk: u64,
}

impl std::fmt::Debug for ObjectReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectReader")
            .field("key", &self.key)
            .field("pos", &self.pos)
            .finish()
    }
}

impl ObjectReader {
    /// A reader of `key`, `size` bytes long.
    pub fn new(
        store: Arc<ObjectStore>,
        budget: ReadBudget,
        key: String,
        size: u64,
        max_inflight: usize,
    ) -> Self {
        Self {
            store,
            budget,
            key,
            size,
            max_inflight: max_inflight.clamp(1, 8),
            pos: u64::MAX,
            buf_start: 0,
            buf: Bytes::new(),
            queue: VecDeque::new(),
            next_fetch: 0,
            chunk: FIRST_CHUNK,
        }
    }

    fn reset(&mut self) {
        for c in self.queue.drain(..) {
            c.task.abort();
        }
        self.buf = Bytes::new();
        self.chunk = FIRST_CHUNK;
    }

    fn fill_queue(&mut self) {
        while self.queue.len() < self.max_inflight && self.next_fetch < self.size {
            let start = self.next_fetch;
            let end = self.size.min(start + self.chunk);
            // Beyond the chunk the reader needs next, read-ahead must fit in the shared budget.
            let budget = self.budget.try_take(end - start);
            if budget.is_none() && !self.queue.is_empty() {
                break;
            }
            let (store, key) = (self.store.clone(), self.key.clone());
            let task = tokio::spawn(async move { store.get_range(&key, start, end).await });
            self.queue.push_back(Chunk {
                start,
                task,
                _budget: budget,
            });
            self.next_fetch = end;
            self.chunk = (self.chunk * 2).min(MAX_CHUNK);
        }
    }

    /// Reads up to `len` bytes at `offset`; fewer only at the end of the object.
    pub async fn read(&mut self, offset: u64, len: u32) -> Result<Bytes, StoreError> {
        let end = self.size.min(offset.saturating_add(len as u64));
        if offset >= end {
            return Ok(Bytes::new());
        }
        if offset != self.pos {
            // Random access (or the first read): fetch just this range.
            self.reset();
            let data = self.store.get_range(&self.key, offset, end).await?;
            self.pos = offset + data.len() as u64;
            self.buf_start = self.pos;
            self.next_fetch = self.pos;
            return Ok(data);
        }
        let mut out = BytesMut::with_capacity((end - offset) as usize);
        let mut cur = offset;
        while cur < end {
            let buf_end = self.buf_start + self.buf.len() as u64;
            if cur >= self.buf_start && cur < buf_end {
                let from = (cur - self.buf_start) as usize;
                let to = (end.min(buf_end) - self.buf_start) as usize;
                out.extend_from_slice(&self.buf[from..to]);
                cur = self.buf_start + to as u64;
                continue;
            }
            self.fill_queue();
            let Some(chunk) = self.queue.pop_front() else {
                break;
            };
            let data = match chunk.task.await {
                Ok(Ok(d)) => d,
                Ok(Err(e)) => {
                    self.reset();
                    self.pos = u64::MAX;
                    return Err(e);
                }
                Err(join) => {
                    self.reset();
                    self.pos = u64::MAX;
                    return Err(StoreError::local("GetObject", &self.key, join));
                }
            };
            if data.is_empty() {
                break; // the object is shorter than it was said to be
            }
            self.buf_start = chunk.start;
            self.buf = data;
        }
        self.fill_queue();
        self.pos = cur;
        Ok(out.freeze())
    }
}

impl Drop for ObjectReader {
    fn drop(&mut self) {
        for c in self.queue.drain(..) {
            c.task.abort();
        }
    }
}
