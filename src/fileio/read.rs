//! Reading an object through ranged GETs, with read-ahead for sequential readers.
//!
//! The first read of a handle fetches exactly the bytes asked for, so reading 4 KiB of a huge
//! object transfers about 4 KiB. When a read continues where an earlier one ended, the reader
//! switches to streaming: a window of chunks (256 KiB doubling to 8 MiB) is fetched ahead,
//! several at once. The kernel sends read-ahead requests concurrently and they may arrive out
//! of order, so any read inside the window (or just behind it) is served from it; only a read
//! far outside the window counts as random access, which drops the window and fetches just
//! that range. Every chunk holds its size in the mount-wide [`ReadBudget`] until it is dropped,
//! so many readers share `max_memory=` instead of each taking its full window; a reader whose
//! next chunk does not fit waits for the chunks it already has.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::task::JoinHandle;

use crate::store::{ObjectStore, StoreError};

const FIRST_CHUNK: u64 = 256 * 1024;
const MAX_CHUNK: u64 = 8 * 1024 * 1024;
/// Chunks behind the latest read are kept this long, for reads arriving out of order.
const KEEP_BEHIND: u64 = 4 * 1024 * 1024;
/// A read this far ahead of the window still counts as sequential (skipped bytes are cheap).
const SKIP_AHEAD: u64 = 2 * 1024 * 1024;

/// The end of a read-ahead chunk of up to `size` bytes from `start`: the next multiple of
/// `size`. Servers store objects in blocks (Garage and MinIO 1 MiB, S3 multipart parts of whole
/// MiB) and read a block whole for any range that touches it; with the window's chunks on
/// multiples of their size (256 KiB doubling to 8 MiB), a streaming reader's GETs touch each
/// block once, instead of two GETs sharing a block at every boundary (9 blocks for each
/// 8 MiB otherwise). Only the first chunks after a start mid-block come out shorter.
fn aligned_end(start: u64, size: u64) -> u64 {
    (start / size + 1) * size
}

enum ChunkData {
    Pending(JoinHandle<Result<Bytes, StoreError>>),
    Ready(Bytes),
}

struct Chunk {
    start: u64,
    end: u64,
    data: ChunkData,
    /// Budget held until the chunk is dropped.
    _budget: Option<tokio::sync::OwnedSemaphorePermit>,
}

/// Memory for read-ahead shared by every open file (counted in KiB).
#[derive(Debug, Clone)]
pub struct ReadBudget {
    kib: Arc<tokio::sync::Semaphore>,
    total_kib: usize,
}

impl ReadBudget {
    /// A budget of `bytes`.
    pub fn new(bytes: u64) -> Self {
        let total_kib = (bytes / 1024).clamp(1, tokio::sync::Semaphore::MAX_PERMITS as u64) as usize;
        Self {
            kib: Arc::new(tokio::sync::Semaphore::new(total_kib)),
            total_kib,
        }
    }

    fn try_take(&self, bytes: u64) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let kib = bytes.div_ceil(1024).min(u32::MAX as u64) as u32;
        self.kib.clone().try_acquire_many_owned(kib).ok()
    }

    /// Bytes held by read-ahead (chunks fetched or in flight) right now.
    pub fn held(&self) -> u64 {
        (self.total_kib.saturating_sub(self.kib.available_permits()) as u64) * 1024
    }
}

/// Read state of one open handle on one object version.
pub struct ObjectReader {
    store: Arc<ObjectStore>,
    budget: ReadBudget,
    key: String,
    /// The ETag of the version being read: every GET asks for it (`If-Match`).
    etag: Option<String>,
    size: u64,
    max_inflight: usize,
    /// Contiguous chunks, ascending, ending at `next_fetch`.
    chunks: VecDeque<Chunk>,
    next_fetch: u64,
    chunk_size: u64,
    /// End of the furthest read served so far (`None` before the first read).
    last_end: Option<u64>,
}

impl std::fmt::Debug for ObjectReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectReader")
            .field("key", &self.key)
            .field("next_fetch", &self.next_fetch)
            .finish()
    }
}

impl ObjectReader {
    /// A reader of the version `etag` (when known) of `key`, `size` bytes long.
    pub fn new(
        store: Arc<ObjectStore>,
        budget: ReadBudget,
        key: String,
        etag: Option<String>,
        size: u64,
        max_inflight: usize,
    ) -> Self {
        Self {
            store,
            budget,
            key,
            etag,
            size,
            max_inflight: max_inflight.clamp(1, 8),
            chunks: VecDeque::new(),
            next_fetch: 0,
            chunk_size: FIRST_CHUNK,
            last_end: None,
        }
    }

    /// Goes on reading at `key` (the object moved there), the version `etag`: what was
    /// fetched ahead is dropped.
    pub fn retarget(&mut self, key: String, etag: Option<String>) {
        self.drop_window();
        self.last_end = None;
        self.key = key;
        self.etag = etag;
    }

    /// The key read.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The version read, when known.
    pub fn etag(&self) -> Option<&str> {
        self.etag.as_deref()
    }

    fn window_start(&self) -> u64 {
        self.chunks.front().map_or(self.next_fetch, |c| c.start)
    }

    fn drop_window(&mut self) {
        for c in self.chunks.drain(..) {
            if let ChunkData::Pending(task) = c.data {
                task.abort();
            }
        }
        self.chunk_size = FIRST_CHUNK;
    }

    /// Chunks not handed to a read yet, fetched or still in flight (a chunk is awaited, and
    /// counted as read, only when a read reaches it): at most `max_inflight`, so a reader slower
    /// than the network (a pager, a consumer working between reads) holds that many chunks of
    /// the shared budget ahead of it, not all of it.
    fn pending(&self) -> usize {
        self.chunks
            .iter()
            .filter(|c| matches!(c.data, ChunkData::Pending(_)))
            .count()
    }

    /// Starts fetching ahead while there is room in flight and in the budget.
    fn fill(&mut self, must_reach: u64) {
        while self.next_fetch < self.size && self.pending() < self.max_inflight {
            let start = self.next_fetch;
            let end = self.size.min(aligned_end(start, self.chunk_size));
            // Beyond what the current read needs, read-ahead must fit in the shared budget.
            let budget = self.budget.try_take(end - start);
            if budget.is_none() && start >= must_reach {
                break;
            }
            let (store, key, etag) = (self.store.clone(), self.key.clone(), self.etag.clone());
            let task = tokio::spawn(async move { store.get_range(&key, start, end, etag.as_deref()).await });
            self.chunks.push_back(Chunk {
                start,
                end,
                data: ChunkData::Pending(task),
                _budget: budget,
            });
            self.next_fetch = end;
            self.chunk_size = (self.chunk_size * 2).min(MAX_CHUNK);
        }
    }

    /// Reads up to `len` bytes at `offset`; fewer only at the end of the object.
    pub async fn read(&mut self, offset: u64, len: u32) -> Result<Bytes, StoreError> {
        let end = self.size.min(offset.saturating_add(len as u64));
        if offset >= end {
            return Ok(Bytes::new());
        }
        let has_window = !self.chunks.is_empty();
        if has_window && offset < self.window_start() {
            if offset + KEEP_BEHIND >= self.window_start() {
                // Just behind the window: an out-of-order read of bytes already dropped.
                return self
                    .store
                    .get_range(&self.key, offset, end, self.etag.as_deref())
                    .await;
            }
            self.drop_window();
        }
        let has_window = !self.chunks.is_empty();
        let in_window = has_window && offset < self.next_fetch.saturating_add(SKIP_AHEAD);
        let continues = !has_window
            && self
                .last_end
                .is_some_and(|e| offset + KEEP_BEHIND >= e && offset <= e.saturating_add(SKIP_AHEAD));
        if !in_window && !continues {
            // Random access (or the very first read): fetch just this range.
            self.drop_window();
            let data = self
                .store
                .get_range(&self.key, offset, end, self.etag.as_deref())
                .await?;
            self.last_end = Some(offset + data.len() as u64);
            return Ok(data);
        }
        if !has_window || offset >= self.next_fetch {
            // Streaming starts (or skips ahead) here.
            self.drop_window();
            self.next_fetch = offset;
        }
        self.fill(end);
        // Usually the whole read lies in one chunk: hand out a slice of it, no copy.
        let mut out = BytesMut::new();
        let mut single: Option<Bytes> = None;
        let mut cur = offset;
        let mut i = 0;
        while cur < end {
            if i >= self.chunks.len() {
                self.fill(end);
                if i >= self.chunks.len() {
                    break; // the object ended early
                }
            }
            if self.chunks[i].end <= cur {
                i += 1;
                continue;
            }
            if let ChunkData::Pending(task) = &mut self.chunks[i].data {
                let fetched = match task.await {
                    Ok(Ok(d)) => d,
                    Ok(Err(e)) => {
                        self.drop_window();
                        self.last_end = None;
                        return Err(e);
                    }
                    Err(join) => {
                        self.drop_window();
                        self.last_end = None;
                        return Err(StoreError::local("GetObject", &self.key, join));
                    }
                };
                self.chunks[i].data = ChunkData::Ready(fetched);
            }
            let chunk = &self.chunks[i];
            let ChunkData::Ready(data) = &chunk.data else {
                break;
            };
            // A gap before this chunk, or nothing left in it: an earlier chunk came back short
            // (the object ended early).
            let Some(from) = cur.checked_sub(chunk.start).map(|f| f as usize) else {
                break;
            };
            if from >= data.len() {
                break;
            }
            let to = ((end.min(chunk.end) - chunk.start) as usize).min(data.len());
            match single.take() {
                None if out.is_empty() => single = Some(data.slice(from..to)),
                first => {
                    if out.is_empty() {
                        out.reserve((end - offset) as usize);
                    }
                    if let Some(first) = first {
                        out.extend_from_slice(&first);
                    }
                    out.extend_from_slice(&data[from..to]);
                }
            }
            cur = chunk.start + to as u64;
            i += 1;
        }
        self.last_end = Some(self.last_end.map_or(cur, |e| e.max(cur)));
        // Forget chunks well behind the furthest read.
        let keep_from = self.last_end.unwrap_or(cur).saturating_sub(KEEP_BEHIND);
        while self.chunks.front().is_some_and(|c| c.end <= keep_from) {
            self.chunks.pop_front();
        }
        self.fill(0);
        Ok(single.unwrap_or_else(|| out.freeze()))
    }
}

impl Drop for ObjectReader {
    fn drop(&mut self) {
        self.drop_window();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The chunks a streaming reader asks for from `start`, up to `until`.
    fn chunks_from(start: u64, until: u64) -> Vec<(u64, u64)> {
        let (mut pos, mut size, mut out) = (start, FIRST_CHUNK, Vec::new());
        while pos < until {
            let end = aligned_end(pos, size);
            out.push((pos, end));
            pos = end;
            size = (size * 2).min(MAX_CHUNK);
        }
        out
    }

    #[test]
    fn read_ahead_chunks_sit_on_multiples_of_their_size() {
        let mib = 1024 * 1024;
        for start in [0, 4096, 128 * 1024, mib, mib + 4096, 3 * mib + 12345, 100 * mib] {
            let chunks = chunks_from(start, start + 64 * mib);
            for &(s, e) in &chunks {
                assert!(e > s, "empty chunk at {s} (start {start})");
                // Never across a 1 MiB block boundary unless it covers whole blocks.
                if s / mib != (e - 1) / mib {
                    assert_eq!((s % mib, e % mib), (0, 0), "chunk {s}..{e} splits blocks");
                }
            }
            // Once grown, every chunk is a whole, aligned 8 MiB.
            let grown: Vec<_> = chunks.iter().filter(|(s, _)| *s >= start + 16 * mib).collect();
            assert!(grown.len() >= 5);
            assert!(grown
                .iter()
                .all(|(s, e)| s % MAX_CHUNK == 0 && e - s == MAX_CHUNK));
        }
        assert_eq!(
            chunks_from(0, 8 * mib),
            vec![
                (0, 256 * 1024),
                (256 * 1024, 512 * 1024),
                (512 * 1024, mib),
                (mib, 2 * mib),
                (2 * mib, 4 * mib),
                (4 * mib, 8 * mib)
            ]
        );
    }
}
