//! The `multiproc soak` command, briefly: workers killed at random while
//! they use every primitive, and no invariant broken. (CI runs it for 30 s.)

// The library's test helpers, shared rather than copied.
#[path = "../../tests/common/mod.rs"]
mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::watchdog;

#[test]
fn a_short_soak_breaks_no_invariant() {
    watchdog("soak", Duration::from_secs(120), || {
        let out = Command::new(env!("CARGO_BIN_EXE_multiproc"))
            .args(["soak", "--seconds", "3", "--kill-every-ms", "50"])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stdout}\n{stderr}");
        let kills: u64 = stdout
            .lines()
            .find_map(|l| l.strip_prefix("kills survived: "))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no kill count in:\n{stdout}"));
        assert!(kills > 10, "only {kills} kills in 3 s:\n{stdout}");
        assert_eq!(stdout.lines().last(), Some("violations: 0"), "{stdout}");
    });
}
