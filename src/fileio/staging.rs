//! Local staging of a file's whole content while it is being written.
//!
//! Content starts in memory and moves to an anonymous (already unlinked) file in the staging
//! directory once it grows past the memory limit, so a crash leaves nothing behind on disk and
//! a large write does not hold its size in RAM. Reads and writes at any offset are allowed;
//! writing past the end fills the gap with zeros, as a sparse local file would.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;

use crate::buffer_pool::{BufferPool, PooledBuffer};

/// Where and how much to stage.
#[derive(Clone, Debug)]
pub struct StagingConfig {
    /// Bytes kept in memory before spilling to disk (0: always disk).
    pub memory_limit: u64,
    /// Directory for spill files.
    pub dir: PathBuf,
}

/// A file's content being written.
#[derive(Debug)]
pub enum Staging {
    /// Held in memory.
    Memory(Vec<u8>),
    /// Spilled to an unlinked local file of `len` bytes.
    Disk {
        /// The file (shared with writes running on a blocking thread).
        file: Arc<File>,
        /// Logical length.
        len: u64,
    },
}

impl Drop for Staging {
    /// Closing the last descriptor of a spill file frees its blocks and cached pages, which is
    /// blocking work for a large file. The staging's reference goes to a blocking thread of
    /// the runtime, or to a thread of its own when dropped outside the runtime (a FUSE thread
    /// answering a `release`), so the file is closed there when that is the last reference
    /// (usually: an upload task may still hold one, and the handover races with the caller
    /// dropping its own), and neither the async threads nor the FUSE threads wait for it.
    fn drop(&mut self) {
        if let Staging::Disk { file, .. } = self {
            let file = file.clone();
            match tokio::runtime::Handle::try_current() {
                Ok(rt) => drop(rt.spawn_blocking(move || drop(file))),
                // Should the thread not start, the closure and the file are dropped here.
                Err(_) => drop(
                    std::thread::Builder::new()
                        .name("rossfs-close".into())
                        .spawn(move || drop(file)),
                ),
            }
        }
    }
}

/// A range of staged bytes, taken under the file's lock and loaded after: content in memory
/// is copied at once, a spill file's is read by [`StagedRange::load`] on a blocking thread.
#[derive(Debug)]
pub enum StagedRange {
    /// Already in memory.
    Ready(Bytes),
    /// `[start, end)` of a spill file.
    File(Arc<File>, u64, u64),
}

impl StagedRange {
    /// The bytes; a spill file is read on a blocking thread, not an async one, into a buffer
    /// of `buffers` (upload parts) or one of its own (`None`: a read).
    pub async fn load(self, buffers: Option<&Arc<BufferPool>>) -> io::Result<Bytes> {
        match self {
            StagedRange::Ready(b) => Ok(b),
            range => {
                let buffers = buffers.cloned();
                tokio::task::spawn_blocking(move || range.load_blocking(buffers.as_ref()))
                    .await
                    .map_err(io::Error::other)?
            }
        }
    }

    /// [`Self::load`] on the calling thread, which a spill file blocks.
    pub fn load_blocking(self, buffers: Option<&Arc<BufferPool>>) -> io::Result<Bytes> {
        match self {
            StagedRange::Ready(b) => Ok(b),
            StagedRange::File(file, start, end) => {
                let len = (end - start) as usize;
                read_range(&file, start, len, buffer_for(buffers, len)).map(PooledBuffer::freeze)
            }
        }
    }

    /// The spill file range these bytes come from, if they are in one.
    pub fn spill_range(&self) -> Option<(Arc<File>, u64, u64)> {
        match self {
            StagedRange::Ready(_) => None,
            StagedRange::File(file, start, end) => Some((file.clone(), *start, *end)),
        }
    }
}

/// An empty buffer with room for `len` bytes: from `buffers`, or of its own.
fn buffer_for(buffers: Option<&Arc<BufferPool>>, len: usize) -> PooledBuffer {
    buffers.map_or_else(|| PooledBuffer::unpooled(len), |b| b.take(len))
}

/// Runs blocking file work that changes staged content from async code. On the multi-thread
/// runtime the calling worker first hands its other tasks to a fresh worker
/// (`block_in_place`), so they do not wait for the disk; unlike a move to a blocking thread
/// there is no await, so the change cannot be cut short halfway by a dropped future. Outside
/// that runtime (a test's current-thread runtime, a FUSE thread) it just runs.
fn off_the_runtime<R>(work: impl FnOnce() -> R) -> R {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(rt) if rt.runtime_flavor() == RuntimeFlavor::MultiThread => tokio::task::block_in_place(work),
        _ => work(),
    }
}

/// A new anonymous spill file in `dir` holding `data`. Blocking.
fn spill_file(dir: &std::path::Path, data: &[u8]) -> io::Result<File> {
    std::fs::create_dir_all(dir)?;
    let file = tempfile::tempfile_in(dir).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot create a staging file in {}: {e}", dir.display()),
        )
    })?;
    file.write_all_at(data, 0)?;
    Ok(file)
}

/// Moves bytes `[start, end)` of a spill file out of the page cache once they are uploaded:
/// writes them to the disk, waits for that, and drops the now clean pages. The content stays
/// in the file (a read or a whole-file upload gets it back from the disk), and a long
/// sequential write reuses the pages it freed instead of taking fresh ones for its whole size:
/// on a virtual machine, the first touch of a page the guest had not used lately costs a
/// fault in the host, and that copy into fresh pages was 60% of rossfs's CPU writing 2 GiB.
/// Blocking: run it on a blocking thread.
pub fn evict_uploaded(file: &File, start: u64, end: u64) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    if end <= start {
        // Both calls would read a length of 0 as "to the end of the file".
        return Ok(());
    }
    let (Ok(offset), Ok(len)) = (
        libc::off64_t::try_from(start),
        libc::off64_t::try_from(end - start),
    ) else {
        return Err(io::Error::from_raw_os_error(libc::EFBIG));
    };
    let fd = file.as_raw_fd();
    let flags =
        libc::SYNC_FILE_RANGE_WAIT_BEFORE | libc::SYNC_FILE_RANGE_WRITE | libc::SYNC_FILE_RANGE_WAIT_AFTER;
    // SAFETY: plain system calls on a file descriptor this `File` keeps open.
    if unsafe { libc::sync_file_range(fd, offset, len, flags) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    match unsafe { libc::posix_fadvise(fd, offset, len, libc::POSIX_FADV_DONTNEED) } {
        0 => Ok(()),
        e => Err(io::Error::from_raw_os_error(e)),
    }
}

/// `len` bytes of `file` from `offset` (an error if the file is shorter), read into `out`
/// (empty, with room for them) without zero-filling it first: parts are 10 MiB and more, and
/// the zeroes cost as much CPU as the copy out of the page cache (profile of a 1 GiB write:
/// memset 6% of rossfs).
fn read_range(file: &File, offset: u64, len: usize, mut out: PooledBuffer) -> io::Result<PooledBuffer> {
    use std::os::fd::AsRawFd;
    let buf = out.vec_mut();
    buf.clear();
    buf.reserve(len);
    while buf.len() < len {
        let at = offset + buf.len() as u64;
        let Ok(at) = libc::off_t::try_from(at) else {
            return Err(io::Error::from_raw_os_error(libc::EFBIG));
        };
        // SAFETY: pread writes at most `len - buf.len()` bytes into the vector's spare
        // capacity, which starts at `buf.len()` and holds at least that many; nothing reads
        // the bytes before pread has written them.
        let n = unsafe {
            libc::pread(
                file.as_raw_fd(),
                buf.as_mut_ptr().add(buf.len()).cast(),
                len - buf.len(),
                at,
            )
        };
        match n {
            0 => return Err(io::Error::from(io::ErrorKind::UnexpectedEof)),
            n if n < 0 => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
            // SAFETY: pread initialized these `n` bytes (n <= the spare capacity asked for).
            n => unsafe { buf.set_len(buf.len() + n as usize) },
        }
    }
    Ok(out)
}

impl Staging {
    /// Staging holding `data`.
    pub fn from_vec(data: Vec<u8>, cfg: &StagingConfig) -> io::Result<Self> {
        let mut s = Staging::Memory(Vec::new());
        if data.len() as u64 > cfg.memory_limit {
            s.spill(cfg)?;
        }
        s.write_at(cfg, 0, &data)?;
        Ok(s)
    }

    /// Current length.
    pub fn len(&self) -> u64 {
        match self {
            Staging::Memory(v) => v.len() as u64,
            Staging::Disk { len, .. } => *len,
        }
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Moves content held in memory to a spill file, on the calling thread (which it blocks
    /// for up to `memory_limit` bytes of writing).
    fn spill(&mut self, cfg: &StagingConfig) -> io::Result<()> {
        if let Staging::Memory(v) = self {
            let file = spill_file(&cfg.dir, v)?;
            let len = v.len() as u64;
            *self = Staging::Disk {
                file: Arc::new(file),
                len,
            };
        }
        Ok(())
    }

    /// Prepares a write ending at `end`, spilling to disk if it will not fit in memory (see
    /// [`off_the_runtime`]). Returns the spill file when the write must go there: the caller
    /// writes it off the async threads (a large write is a copy into the page cache) and then
    /// calls [`Self::grew_to`]. `None`: the content is in memory, use [`Self::write_at`].
    pub fn disk_target(&mut self, cfg: &StagingConfig, end: u64) -> io::Result<Option<Arc<File>>> {
        if end > cfg.memory_limit {
            off_the_runtime(|| self.spill(cfg))?;
        }
        Ok(match self {
            Staging::Memory(_) => None,
            Staging::Disk { file, .. } => Some(file.clone()),
        })
    }

    /// Bytes up to `end` were written to the spill file directly (see [`write_spilled`]).
    pub fn grew_to(&mut self, end: u64) {
        if let Staging::Disk { len, .. } = self {
            *len = (*len).max(end);
        }
    }

    /// Writes `data` at `offset`, growing the content as needed.
    pub fn write_at(&mut self, cfg: &StagingConfig, offset: u64, data: &[u8]) -> io::Result<()> {
        let end = offset
            .checked_add(data.len() as u64)
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EFBIG))?;
        if end > cfg.memory_limit {
            self.spill(cfg)?;
        }
        match self {
            Staging::Memory(v) => {
                let (offset, end) = (offset as usize, end as usize);
                if v.len() < end {
                    v.resize(end, 0);
                }
                v[offset..end].copy_from_slice(data);
            }
            Staging::Disk { file, len } => {
                write_spilled(file, data, offset, *len)?;
                *len = (*len).max(end);
            }
        }
        Ok(())
    }

    /// Bytes `[start, end)` (fewer at the end). Content in memory is copied now, into a
    /// buffer of `buffers` (upload parts) or one of its own (`None`: a read); a spill file's is
    /// left to [`StagedRange::load`].
    pub fn range(&self, start: u64, end: u64, buffers: Option<&Arc<BufferPool>>) -> StagedRange {
        let end = end.min(self.len());
        if start >= end {
            return StagedRange::Ready(Bytes::new());
        }
        match self {
            Staging::Memory(v) => {
                let mut buf = buffer_for(buffers, (end - start) as usize);
                buf.vec_mut().extend_from_slice(&v[start as usize..end as usize]);
                StagedRange::Ready(buf.freeze())
            }
            Staging::Disk { file, .. } => StagedRange::File(file.clone(), start, end),
        }
    }

    /// Sets the length, cutting or zero-filling.
    /// Spilling, and cutting a spill file (which frees its blocks), leave the async threads
    /// (see [`off_the_runtime`]).
    pub fn truncate(&mut self, cfg: &StagingConfig, new_len: u64) -> io::Result<()> {
        if new_len > cfg.memory_limit {
            off_the_runtime(|| self.spill(cfg))?;
        }
        match self {
            Staging::Memory(v) => v.resize(new_len as usize, 0),
            Staging::Disk { file, len } => {
                off_the_runtime(|| file.set_len(new_len))?;
                *len = new_len;
            }
        }
        Ok(())
    }
}

/// Writes `data` at `offset` of a spill file whose content is `len` bytes long. Bytes a
/// failed write (a full disk) left past `len` would show up later inside a hole or an
/// extension: they are cut off.
pub fn write_spilled(file: &File, data: &[u8], offset: u64, len: u64) -> io::Result<()> {
    file.write_all_at(data, offset).inspect_err(|_| {
        if offset + data.len() as u64 > len {
            let _ = file.set_len(len);
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(s: &Staging, offset: u64, size: usize) -> Vec<u8> {
        let range = s.range(offset, offset + size as u64, None);
        range.load_blocking(None).unwrap().to_vec()
    }

    fn part(s: &Staging, start: u64, end: u64, pool: &Arc<BufferPool>) -> Bytes {
        s.range(start, end, Some(pool)).load_blocking(Some(pool)).unwrap()
    }

    #[test]
    fn spills_past_the_limit_and_keeps_content() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = StagingConfig {
            memory_limit: 64 * 1024,
            dir: dir.path().to_path_buf(),
        };
        let mut s = Staging::from_vec(b"hello".to_vec(), &cfg).unwrap();
        assert!(matches!(s, Staging::Memory(_)));
        s.write_at(&cfg, 100_000, b"world").unwrap();
        assert!(matches!(s, Staging::Disk { .. }));
        assert_eq!(s.len(), 100_005);
        assert_eq!(read(&s, 0, 5), b"hello");
        assert_eq!(read(&s, 5, 3), vec![0, 0, 0]);
        let pool = BufferPool::new(1 << 20);
        assert_eq!(&part(&s, 100_000, 100_005, &pool)[..], b"world");
        s.truncate(&cfg, 3).unwrap();
        assert_eq!(read(&s, 0, 100), b"hel");
        // Nothing is left in the staging directory: the spill file is anonymous.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn matches_a_plain_vector_under_random_writes() {
        use rand::{Rng, SeedableRng};
        let dir = tempfile::tempdir().unwrap();
        let cfg = StagingConfig {
            memory_limit: 64 * 1024,
            dir: dir.path().to_path_buf(),
        };
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut model: Vec<u8> = Vec::new();
        let mut s = Staging::from_vec(Vec::new(), &cfg).unwrap();
        let pool = BufferPool::new(1 << 20);
        for _ in 0..500 {
            if rng.random_bool(0.1) {
                let n = rng.random_range(0..150_000u64);
                model.resize(n as usize, 0);
                s.truncate(&cfg, n).unwrap();
            } else {
                let off = rng.random_range(0..140_000u64);
                let data: Vec<u8> = (0..rng.random_range(1..5000)).map(|_| rng.random()).collect();
                let end = off as usize + data.len();
                if model.len() < end {
                    model.resize(end, 0);
                }
                model[off as usize..end].copy_from_slice(&data);
                s.write_at(&cfg, off, &data).unwrap();
            }
            if let (true, Staging::Disk { file, len }) = (rng.random_bool(0.2), &s) {
                // Uploaded parts leave the page cache; the content stays the same.
                let start = rng.random_range(0..=*len);
                let end = rng.random_range(start..=*len);
                evict_uploaded(file, start, end).unwrap();
            }
            assert_eq!(s.len(), model.len() as u64);
            let off = rng.random_range(0..150_000usize);
            let want = model.get(off..).map_or(&[][..], |t| &t[..t.len().min(70_000)]);
            assert_eq!(read(&s, off as u64, 70_000), want, "read at {off}");
            // Upload parts come in recycled buffers: never with bytes of an earlier part.
            let start = rng.random_range(0..=model.len());
            let end = model.len().min(start + rng.random_range(60_000..140_000));
            let bytes = part(&s, start as u64, end as u64, &pool);
            assert_eq!(&bytes[..], &model[start..end], "part {start}..{end}");
            drop(bytes);
        }
        assert!(pool.idle_bytes() > 0, "buffers were recycled");
        assert_eq!(read(&s, 0, model.len()), model);
    }

    #[tokio::test]
    async fn spilling_for_a_large_write_keeps_the_content_and_a_failed_spill_keeps_it_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = StagingConfig {
            memory_limit: 64 * 1024,
            dir: dir.path().to_path_buf(),
        };
        let mut s = Staging::from_vec(b"hello".to_vec(), &cfg).unwrap();
        assert!(s.disk_target(&cfg, 1000).unwrap().is_none());
        let blocked = StagingConfig {
            memory_limit: cfg.memory_limit,
            dir: dir.path().join("not-a-dir").join("spill"),
        };
        std::fs::write(dir.path().join("not-a-dir"), b"").unwrap();
        assert!(s.disk_target(&blocked, 100_000).is_err());
        assert!(matches!(s, Staging::Memory(_)));
        assert_eq!(read(&s, 0, 10), b"hello");
        let file = s.disk_target(&cfg, 100_000).unwrap().unwrap();
        assert!(matches!(s, Staging::Disk { len: 5, .. }));
        file.write_all_at(b"world", 5).unwrap();
        s.grew_to(10);
        assert_eq!(s.range(0, 20, None).load(None).await.unwrap(), &b"helloworld"[..]);
        assert_eq!(read(&s, 3, 4), b"lowo");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn spilling_and_truncating_on_a_runtime_worker_keep_the_content() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = StagingConfig {
            memory_limit: 64 * 1024,
            dir: dir.path().to_path_buf(),
        };
        // On a worker thread of the multi-thread runtime, as the mount's requests run.
        let got = tokio::spawn(async move {
            let mut s = Staging::from_vec(b"hello".to_vec(), &cfg).unwrap();
            let file = s.disk_target(&cfg, 100_000).unwrap().unwrap();
            file.write_all_at(b"world", 5).unwrap();
            s.grew_to(10);
            s.truncate(&cfg, 200_000).unwrap();
            assert_eq!(s.len(), 200_000);
            let got = s.range(0, 12, None).load(None).await.unwrap();
            drop(s);
            got
        })
        .await
        .unwrap();
        assert_eq!(got, &b"helloworld\0\0"[..]);
    }

    #[test]
    fn a_range_past_the_end_of_the_file_is_an_error_not_zeros() {
        let mut f = tempfile::tempfile().unwrap();
        std::io::Write::write_all(&mut f, &[9u8; 5000]).unwrap();
        f.set_len(20_000).unwrap(); // a hole reads as zeros
        let got = read_range(&f, 4000, 16_000, PooledBuffer::unpooled(16_000))
            .unwrap()
            .into_vec();
        assert_eq!(&got[..1000], &[9u8; 1000][..]);
        assert!(got[1000..].iter().all(|&b| b == 0));
        assert_eq!(got.len(), 16_000);
        let short = read_range(&f, 19_000, 2000, PooledBuffer::unpooled(2000)).unwrap_err();
        assert_eq!(short.kind(), io::ErrorKind::UnexpectedEof);
    }
}
