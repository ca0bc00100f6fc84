//! File data: the read path (ranged GETs with sequential prefetch), write staging (memory up
//! to a bound, then an unlinked file under `cache_dir`) and the upload on flush/fsync/close
//! (one PUT for small files, multipart with several parts in flight for large ones).
//!
//! Nothing here knows about inodes or FUSE: the filesystem core owns one [`Staging`] per inode
//! being written and one [`ObjectReader`] per open handle reading from the bucket.

pub mod mime;
mod read;
mod staging;
mod upload;

pub use mime::MimeTypes;
pub use read::{ObjectReader, ReadBudget};
pub use staging::{write_spilled, Staging, StagingConfig};
pub use upload::{upload, StreamingUpload};
