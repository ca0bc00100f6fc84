//! CI smoke run of the benchmark harness (`benches/fsbench`): every workload at tiny sizes,
//! once, through the debug `rossfs` binary of this build and through the raw S3 client. Fails
//! on a wrong checksum, a mount failure or any other error of the harness. The full benchmark
//! (`cargo bench --bench fsbench`) is not part of CI.
//!
//! Runs against a Garage the harness starts itself (`$GARAGE_BIN`, as `scripts/test.sh` sets),
//! or against the server named by `ROSSFS_TEST_ENDPOINT` and friends. Needs root (it drops the
//! page cache) and /dev/fuse, like the other mount tests.

#[allow(dead_code)]
#[path = "../benches/fsbench/mod.rs"]
mod fsbench;

#[test]
fn benchmark_smoke_run_passes() {
    let out = tempfile::TempDir::with_prefix("fsbench-smoke-").expect("temp dir");
    let report = out.path().join("smoke.md");
    let mut args: Vec<String> = vec![
        "fsbench".into(),
        "--smoke".into(),
        "--peers".into(),
        "rossfs,raw".into(),
        "--rossfs-bin".into(),
        env!("CARGO_BIN_EXE_rossfs").into(),
        "--output".into(),
        report.display().to_string(),
    ];
    if let Ok(endpoint) = std::env::var("ROSSFS_TEST_ENDPOINT") {
        args.extend(["--endpoint".into(), endpoint]);
        for (var, flag) in [
            ("ROSSFS_TEST_ACCESS_KEY", "--access-key"),
            ("ROSSFS_TEST_SECRET_KEY", "--secret-key"),
            ("ROSSFS_TEST_REGION", "--region"),
        ] {
            if let Ok(v) = std::env::var(var) {
                args.extend([flag.into(), v]);
            }
        }
    }
    let started = std::time::Instant::now();
    match fsbench::run(args) {
        Ok(path) => {
            let text = std::fs::read_to_string(&path).expect("read the report");
            for w in ["W1", "W2", "W3", "W4", "W5", "W6", "W7", "W8"] {
                assert!(
                    text.contains(&format!("| {w} |")),
                    "no {w} row in the report:\n{text}"
                );
            }
            eprintln!("smoke run passed in {:.1} s", started.elapsed().as_secs_f64());
        }
        Err(e) => panic!("benchmark smoke run failed: {e}"),
    }
}

/// What an interrupted run leaves: nothing. The cleanup detaches mounts below the run's
/// scratch directories (a mount point with a space in its name too, escaped in mountinfo)
/// before it removes them, so it never deletes through a mount.
#[test]
fn an_interrupted_run_unmounts_and_removes_its_scratch_directories() {
    use fsbench::interrupt::{clean_up, is_mount_point, scratch_dir};
    let dir = scratch_dir("fsbench-cleanup-test-").expect("scratch dir");
    let root = dir.path().to_path_buf();
    let mounts = [root.join("mnt"), root.join("deep/er/with space")];
    for m in &mounts {
        std::fs::create_dir_all(m).expect("mountpoint");
        let ok = std::process::Command::new("mount")
            .args(["-t", "ramfs", "fsbench-cleanup-test"])
            .arg(m)
            .status()
            .expect("run mount");
        assert!(ok.success(), "mount -t ramfs {} (needs root)", m.display());
        std::fs::write(m.join("data"), b"kept in the mount").expect("write into the mount");
        assert!(is_mount_point(m), "{} is mounted", m.display());
    }
    // A mount inside the inner one, detached before it.
    let nested = mounts[1].join("inner");
    std::fs::create_dir(&nested).expect("nested mountpoint");
    let ok = std::process::Command::new("mount")
        .args(["-t", "ramfs", "fsbench-cleanup-test"])
        .arg(&nested)
        .status()
        .expect("run mount");
    assert!(ok.success());
    std::fs::write(root.join("garage.log"), b"log").expect("write a file");

    clean_up(std::slice::from_ref(&root));

    for m in mounts.iter().chain([&nested]) {
        assert!(!is_mount_point(m), "{} is still mounted", m.display());
    }
    assert!(!root.exists(), "{} is still there", root.display());
}
