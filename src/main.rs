//! The `rossfs` command: `rossfs BUCKET[:/PREFIX] MOUNTPOINT [-o OPT[,OPT...]]... [-f]`.

use std::path::PathBuf;

use clap::{ArgAction, CommandFactory, FromArgMatches, Parser};

use rossfs::daemon::{self, MountRequest};
use rossfs::options::{MountOptions, MountSource, OPTION_DOCS};

// Every request allocates (headers, signing, buffers) on several threads at once; mimalloc's
// per-thread heaps cost measurably less CPU per request than glibc malloc (a cold `ls -l` of
// 10,000 entries: 10-20% less rossfs CPU).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` (its place in mimalloc's option enum, stable across versions: retired
/// options keep their slots). mimalloc 3 keeps freed memory for a second by default; buffers of
/// reads and uploads come and go much faster, so that second shows up as peak RSS.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
/// Milliseconds before freed memory goes back to the system.
const PURGE_DELAY_MS: std::os::raw::c_long = 10;

/// Mount an S3-compatible bucket (AWS S3, Alibaba OSS, MinIO, Garage, Ceph RGW) as a directory.
#[derive(Parser, Debug)]
#[command(name = "rossfs", version, about, long_about = None)]
struct Cli {
    /// BUCKET, or BUCKET:/PREFIX to mount a sub-path
    source: String,
    /// Directory to mount on (or /dev/fd/N: serve an already-mounted FUSE descriptor)
    #[arg(required_unless_present_any = ["list_uploads", "abort_uploads"])]
    mountpoint: Option<PathBuf>,
    /// Mount options, comma separated; may be repeated (see the list below)
    #[arg(short = 'o', value_name = "OPT[,OPT...]", action = ArgAction::Append)]
    options: Vec<String>,
    /// Stay in the foreground and log to stderr
    #[arg(short = 'f', long = "foreground")]
    foreground: bool,
    /// Instead of mounting: list incomplete multipart uploads under BUCKET[:/PREFIX]
    #[arg(long, conflicts_with = "abort_uploads")]
    list_uploads: bool,
    /// Instead of mounting: abort incomplete multipart uploads at least AGE old (e.g. 24h, 0 for all)
    #[arg(long, value_name = "AGE")]
    abort_uploads: Option<String>,
}

fn options_help() -> String {
    let mut out = String::from("Options (-o):\n");
    for d in OPTION_DOCS {
        let head = if d.value.is_empty() {
            d.name.to_string()
        } else {
            format!("{}={}", d.name, d.value)
        };
        out.push_str(&format!("  {head:<32} {}\n", d.help));
    }
    out.push_str(
        "\nCredentials: passwd_file=, else AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, the AWS profile,\n\
         web identity (IRSA) or instance metadata. Unmount with 'fusermount3 -u MOUNTPOINT' or 'umount'.",
    );
    out
}

fn main() {
    // SAFETY: sets a process-wide allocator option; mimalloc accepts this at any time.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) };
    let matches = Cli::command().after_help(options_help()).get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    let source = match MountSource::parse(&cli.source) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("rossfs: {e}");
            std::process::exit(1);
        }
    };
    let options = match MountOptions::parse(&cli.options) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("rossfs: {e}");
            std::process::exit(1);
        }
    };
    if cli.list_uploads || cli.abort_uploads.is_some() {
        let age = match cli
            .abort_uploads
            .as_deref()
            .map(rossfs::maintenance::parse_age)
            .transpose()
        {
            Ok(a) => a,
            Err(e) => {
                eprintln!("rossfs: --abort-uploads: {e}");
                std::process::exit(1);
            }
        };
        std::process::exit(rossfs::maintenance::run(&source, &options, age));
    }
    let Some(mountpoint) = cli.mountpoint else {
        eprintln!("rossfs: missing MOUNTPOINT: rossfs BUCKET[:/PREFIX] MOUNTPOINT [-o OPTIONS]");
        std::process::exit(1);
    };
    let code = daemon::run(MountRequest {
        source_spec: cli.source,
        source,
        mountpoint,
        options,
        foreground: cli.foreground,
    });
    std::process::exit(code);
}
