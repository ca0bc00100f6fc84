//! rossfs mounts an S3-compatible bucket as a POSIX-like directory tree through FUSE.
//!
//! # Layers
//!
//! ```text
//!   kernel (FUSE) ──> fuse_adapter ──> filesystem ──┬─> namespace (inodes, listings, caches)
//!                     (thin, spawns     (POSIX ops,  ├─> attr      (metadata <-> stat)
//!                      onto tokio)       handles)    └─> fileio    (ranged reads, staging, upload)
//!                                                              │
//!                                                              └─> store (the only S3 client)
//!   main.rs: CLI ─> options ─> store check ─> daemon ─> FUSE session
//! ```
//!
//! * [`store`] makes every S3 request: retries, timeouts, error mapping to errno and messages.
//! * [`namespace`] maps keys to inodes, applies the directory rules and caches metadata.
//! * [`attr`] reads and writes the s3fs metadata dialect and applies presentation options.
//! * [`fileio`] reads with ranged GETs and prefetch, stages writes, uploads on flush/close.
//! * [`filesystem`] implements the POSIX operations on those layers, as `async fn`s.
//! * [`fuse_adapter`] translates `fuser` requests, never blocking a FUSE thread on the network.
//! * [`options`] parses `-o` options; [`daemon`] runs a mount (preflight, daemonize, signals).
//!
//! # Life of a `read()`
//! The kernel sends READ; the adapter spawns a task that calls [`filesystem::S3Filesystem::read`],
//! which serves staged data if the file is being written, else asks the handle's
//! [`fileio::ObjectReader`]: the first read is one ranged GET of exactly the bytes asked, a
//! sequential follow-up starts prefetching growing chunks in parallel.
//!
//! # Life of a `write()` + `close()`
//! WRITE lands in the inode's [`fileio::Staging`] (memory, then an unlinked file in
//! `cache_dir`). `close()` sends FLUSH: the staged content is uploaded with one PUT, or as a
//! multipart upload with several parts in flight, together with the s3fs metadata. If the
//! upload fails, `close()` returns EIO and the failure is logged at ERROR.

pub mod attr;
pub mod buffer_pool;
pub mod daemon;
pub mod fileio;
pub mod filesystem;
pub mod fuse_adapter;
pub mod logging;
pub mod maintenance;
pub mod metrics;
pub mod namespace;
pub mod options;
pub mod store;
pub mod xattrs;
