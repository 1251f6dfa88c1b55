//! Fourth-round attack on starting processes through the fork server and
//! by spawn: what the server, a child or the caller can get wrong.

mod common;

use std::time::Duration;

use common::watchdog;
use multiproc::Process;

/// Just over a connection's default message limit.
const LARGE: usize = (64 << 20) + 16;
const LIMIT: Duration = Duration::from_secs(60);

/// A string, which serde copies whole (a `Vec<u8>` goes a byte at a time).
fn check_len(v: String) {
    if v.len() != LARGE || v.bytes().any(|b| b != b'x') {
        multiproc::process::exit(2);
    }
}

/// Arguments larger than a connection's default message limit (64 MiB)
/// reach a fork server's child whole, as any argument does in Python: the
/// order is the crate's own message, not a peer's.
#[test]
fn a_forkserver_child_gets_arguments_over_the_default_message_limit() {
    watchdog("large forkserver arguments", LIMIT, || {
        let mut p = Process::forkserver(check_len, "x".repeat(LARGE));
        let started = p.start();
        assert!(started.is_ok(), "{started:?}");
        assert_eq!(p.join_timeout(LIMIT).unwrap(), Some(0));
    });
}
