//! `multiproc manager serve`, run as the command it is.

// The library's test helpers, shared rather than copied.
#[path = "../../tests/common/mod.rs"]
mod common;

use std::time::Duration;

use common::watchdog;

/// Issue 12, also: `multiproc manager serve` refuses an authkey file that
/// other users may read, unless told to (then it warns).
#[test]
fn manager_serve_refuses_a_readable_authkey_file() {
    use std::io::{BufRead, BufReader};
    use std::os::unix::fs::PermissionsExt;
    use std::process::{Command, Stdio};
    watchdog("manager serve", Duration::from_secs(60), || {
        let dir = std::env::temp_dir().join(format!("multiproc-test-key-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let key = dir.join("key");
        std::fs::write(&key, b"secret").unwrap();
        let serve = |extra: &[&str]| {
            Command::new(env!("CARGO_BIN_EXE_multiproc"))
                .args(["manager", "serve", "--listen"])
                .arg(format!("unix:{}", dir.join("sock").display()))
                .arg("--authkey-file")
                .arg(&key)
                .args(extra)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        };
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let out = serve(&[]).wait_with_output().unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("chmod 600"), "{err}");
        // Told to, it serves, with a warning; so it does on a private file.
        for (mode, extra) in [(0o644, &["--allow-readable-authkey"][..]), (0o600, &[])] {
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(mode)).unwrap();
            let mut server = serve(extra);
            let mut line = String::new();
            BufReader::new(server.stdout.take().unwrap())
                .read_line(&mut line)
                .unwrap();
            assert!(line.starts_with("serving on"), "{line}");
            server.kill().unwrap();
            let out = server.wait_with_output().unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(err.contains("warning"), mode == 0o644, "{err}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    });
}
