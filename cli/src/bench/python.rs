//! The same workloads in Python's `multiprocessing` (`python/bench.py`,
//! compiled in), one scenario per `python3` run.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Result;

/// The script: `python3 -c SCRIPT SCENARIO N` prints its figure (and, for
/// the managed scenarios, the server's CPU time per operation).
const PYTHON_SCRIPT: &str = include_str!("../../python/bench.py");

pub(super) fn python_available() -> bool {
    Command::new("python3")
        .args(["-c", "import multiprocessing"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs one scenario of the Python script; `None` (with a warning) if it fails.
pub(super) fn run_python(scenario: &str, n: u64) -> Result<Option<f64>> {
    let mut child = Command::new("python3")
        .args(["-c", PYTHON_SCRIPT, scenario, &n.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(300);
    while child.try_wait()?.is_none() {
        if Instant::now() > deadline {
            child.kill()?;
            child.wait()?;
            eprint!(" (python timed out)");
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut numbers = text.split_whitespace().map(str::parse::<f64>);
    // An optional second number is the Python server's CPU time per operation.
    if let Some(Ok(cpu)) = numbers.clone().nth(1) {
        eprint!(" (python server CPU {cpu:.2} us/op)");
    }
    match numbers.next() {
        Some(Ok(v)) if out.status.success() => Ok(Some(v)),
        _ => {
            eprint!(
                " (python failed: {})",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            Ok(None)
        }
    }
}
