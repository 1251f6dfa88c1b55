//! `multiproc bench --plot FILE`: a chart that cannot be written fails the
//! command before any scenario runs, and a run that fails leaves no file
//! of its own behind.

// The library's test helpers, shared rather than copied.
#[path = "../../tests/common/mod.rs"]
mod common;

use std::process::{Command, Output, Stdio};
use std::time::Duration;

fn bench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_multiproc"))
        .arg("bench")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn a_chart_that_cannot_be_written_fails_before_the_run() {
    common::watchdog("bench --plot", Duration::from_secs(60), || {
        let out = bench(&["--plot", "/nonexistent-multiproc-dir/chart.svg"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(
            stderr.contains("/nonexistent-multiproc-dir/chart.svg"),
            "{stderr}"
        );
        // No scenario started (each prints its progress line first).
        assert!(!stderr.contains("[1/"), "{stderr}");
    });
}

#[test]
fn a_failed_run_leaves_no_chart_of_its_own_and_a_good_one_writes_it() {
    common::watchdog("bench --plot", Duration::from_secs(120), || {
        let dir = std::env::temp_dir().join(format!("multiproc-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let chart = dir.join("chart.svg");
        let chart_arg = chart.to_str().unwrap();
        // A Redis row against a port nothing listens on fails.
        let fails = || {
            let out = bench(&[
                "--quick",
                "--only",
                "redis_dict_set_1client",
                "--redis",
                "redis://127.0.0.1:1/0",
                "--plot",
                chart_arg,
            ]);
            assert!(!out.status.success());
        };
        fails();
        assert!(!chart.exists(), "the failed run left its chart file");
        // A file that was there before is kept as it was.
        std::fs::write(&chart, "before").unwrap();
        fails();
        assert_eq!(std::fs::read_to_string(&chart).unwrap(), "before");
        let good = bench(&["--quick", "--only", "lock_uncontended", "--plot", chart_arg]);
        assert!(
            good.status.success(),
            "{}",
            String::from_utf8_lossy(&good.stderr)
        );
        assert!(std::fs::read_to_string(&chart).unwrap().starts_with("<svg"));
        std::fs::remove_dir_all(&dir).unwrap();
    });
}
