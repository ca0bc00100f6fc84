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
