//! Where log lines go: stderr in the foreground, a file with `logfile=`, syslog for a daemon.
//!
//! The level comes from `dbglevel=`; the `ROSSFS_LOG` environment variable, if set, overrides it
//! with a full `tracing` filter (e.g. `rossfs=debug,aws_smithy_runtime=info`). Log lines never
//! contain credentials: nothing in rossfs formats a secret, and the SDK redacts its own.

use std::ffi::CString;
use std::io::{self, Write};
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

use tracing::Level;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

use crate::options::LogLevel;

/// Log destination.
#[derive(Debug, Clone)]
pub enum LogTarget {
    /// Standard error (foreground).
    Stderr,
    /// Append to a file (reopened on SIGHUP, for log rotation).
    File(Arc<ReopenableFile>),
    /// The system log (daemon without `logfile=`).
    Syslog,
}

impl LogTarget {
    /// Opens the log file for appending.
    pub fn file(path: &Path) -> io::Result<Self> {
        let f = open_append(path)?;
        let target = Arc::new(ReopenableFile {
            path: path.to_path_buf(),
            file: Mutex::new(Arc::new(f)),
        });
        let _ = LOG_FILE.set(target.clone());
        Ok(LogTarget::File(target))
    }
}

fn open_append(path: &Path) -> io::Result<std::fs::File> {
    std::fs::OpenOptions::new().create(true).append(true).open(path)
}

/// A log file that can be reopened under the same name after logrotate moved it.
#[derive(Debug)]
pub struct ReopenableFile {
    path: std::path::PathBuf,
    file: Mutex<Arc<std::fs::File>>,
}

impl ReopenableFile {
    fn current(&self) -> Arc<std::fs::File> {
        self.file.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

static LOG_FILE: OnceLock<Arc<ReopenableFile>> = OnceLock::new();

/// Reopens `logfile=` (on SIGHUP); a no-op when logging elsewhere.
pub fn reopen() {
    if let Some(f) = LOG_FILE.get() {
        match open_append(&f.path) {
            Ok(new) => {
                *f.file.lock().unwrap_or_else(|p| p.into_inner()) = Arc::new(new);
                tracing::info!("log file {} reopened", f.path.display());
            }
            Err(e) => tracing::error!("cannot reopen log file {}: {e}", f.path.display()),
        }
    }
}

/// One syslog message, sent when dropped.
pub struct SyslogLine {
    priority: libc::c_int,
    buf: Vec<u8>,
}

impl Write for SyslogLine {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for SyslogLine {
    fn drop(&mut self) {
        let text: Vec<u8> = self
            .buf
            .iter()
            .copied()
            .filter(|b| *b != 0 && *b != b'\n')
            .collect();
        if let Ok(msg) = CString::new(text) {
            // SAFETY: both pointers are valid NUL-terminated strings for the duration of the call.
            unsafe { libc::syslog(self.priority, c"%s".as_ptr(), msg.as_ptr()) };
        }
    }
}

/// A writer for one log line.
pub enum LineWriter {
    /// stderr.
    Stderr(io::Stderr),
    /// A file.
    File(Arc<std::fs::File>),
    /// syslog.
    Syslog(SyslogLine),
}

impl Write for LineWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        match self {
            LineWriter::Stderr(s) => s.write(data),
            LineWriter::File(f) => (&**f).write(data),
            LineWriter::Syslog(s) => s.write(data),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            LineWriter::Stderr(s) => s.flush(),
            LineWriter::File(f) => (&**f).flush(),
            LineWriter::Syslog(_) => Ok(()),
        }
    }
}

impl<'a> MakeWriter<'a> for LogTarget {
    type Writer = LineWriter;

    fn make_writer(&'a self) -> Self::Writer {
        self.writer(Level::INFO)
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> Self::Writer {
        self.writer(*meta.level())
    }
}

impl LogTarget {
    fn writer(&self, level: Level) -> LineWriter {
        match self {
            LogTarget::Stderr => LineWriter::Stderr(io::stderr()),
            LogTarget::File(f) => LineWriter::File(f.current()),
            LogTarget::Syslog => {
                let priority = match level {
                    Level::ERROR => libc::LOG_ERR,
                    Level::WARN => libc::LOG_WARNING,
                    Level::INFO => libc::LOG_INFO,
                    _ => libc::LOG_DEBUG,
                };
                LineWriter::Syslog(SyslogLine {
                    priority: priority | libc::LOG_DAEMON,
                    buf: Vec::new(),
                })
            }
        }
    }
}

/// Installs the global subscriber.
pub fn init(level: LogLevel, target: LogTarget) {
    if let LogTarget::Syslog = target {
        // SAFETY: the ident is a static NUL-terminated string.
        unsafe { libc::openlog(c"rossfs".as_ptr(), libc::LOG_PID, libc::LOG_DAEMON) };
    }
    let filter = std::env::var("ROSSFS_LOG")
        .ok()
        .and_then(|f| EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| EnvFilter::new(format!("warn,rossfs={}", level.directive())));
    let ansi = matches!(target, LogTarget::Stderr) && std::io::IsTerminal::is_terminal(&io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(target.clone())
        .with_ansi(ansi)
        .with_target(false);
    let result = if matches!(target, LogTarget::Syslog) {
        builder.without_time().try_init()
    } else {
        builder.try_init()
    };
    if let Err(e) = result {
        eprintln!("rossfs: logging was already set up: {e}");
    }
}
