//! Fourth-round attack on starting processes through the fork server and
//! by spawn: what the server, a child or the caller can get wrong.

mod common;

use std::time::Duration;

use common::{fill_descriptors, lower_nofile, watchdog};
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

fn wait_gate(name: String) {
    multiproc::Event::open(&name).unwrap().wait();
}

/// More children than the descriptor limit lets a process (and its fork
/// server) keep track of: every start either succeeds or is an error at
/// once, never a hang, no child is lost, and the server keeps serving
/// once the children are gone.
#[test]
fn forkserver_children_past_the_descriptor_limit_fail_cleanly() {
    watchdog("forkserver past the descriptor limit", LIMIT, || {
        let name = format!("test-gate-{}", std::process::id());
        let gate = multiproc::Event::create(&name).unwrap();
        let mut p = Process::new(move || {
            lower_nofile(64);
            // Opened before the descriptors run out: how many are left once
            // a start is refused depends on how many this process inherited.
            let open_gate = multiproc::Event::open(&name).unwrap();
            let mut started = Vec::new();
            let mut refused = 0;
            for _ in 0..60 {
                let mut c = Process::forkserver(wait_gate, name.clone());
                match c.start() {
                    Ok(()) => started.push(c),
                    Err(_) => refused += 1,
                }
            }
            assert!(refused > 0, "60 children fitted in 64 descriptors?");
            open_gate.set();
            for c in &started {
                assert_eq!(c.join_timeout(LIMIT).unwrap(), Some(0));
            }
            drop(started);
            let mut after = Process::forkserver(wait_gate, name.clone());
            after.start().unwrap();
            assert_eq!(after.join_timeout(LIMIT).unwrap(), Some(0));
        });
        p.start().unwrap();
        let code = p.join_timeout(LIMIT).unwrap();
        drop(gate);
        let _ = multiproc::segment::Segment::unlink(&format!("test-gate-{}", std::process::id()));
        assert_eq!(code, Some(0));
    });
}

fn never_runs(_: ()) {
    multiproc::process::exit(3);
}

/// This test binary's `main` (libtest's) never calls `spawn_init`, so a
/// spawned copy of it would run the program again from the start (here,
/// the tests) instead of the entry: the start is refused at once, as
/// Python refuses to start a process while the program is bootstrapping.
#[test]
fn spawn_without_spawn_init_is_refused_before_anything_runs() {
    watchdog("spawn without spawn_init", LIMIT, || {
        let mut p = Process::spawn(multiproc::entry!(never_runs), ())
            // Were the child started, it would run no test and exit 0.
            .exec_args(["no-test-is-called-this"]);
        let started = p.start();
        let code = started.as_ref().ok().map(|()| p.join_timeout(LIMIT));
        assert!(
            matches!(started, Err(multiproc::Error::InvalidArgument(_))),
            "{started:?}, then {code:?}"
        );
    });
}

/// A process with no descriptor to spare still waits for, polls and
/// reaps its children, forked or from the fork server (a join that needs a
/// descriptor could never free the ones the children hold).
#[test]
fn a_process_out_of_descriptors_still_joins_its_children() {
    watchdog("join out of descriptors", LIMIT, || {
        let name = format!("test-nofd-{}", std::process::id());
        let gate = multiproc::Event::create(&name).unwrap();
        let mut p = Process::new(move || {
            lower_nofile(64);
            let open_gate = multiproc::Event::open(&name).unwrap();
            let gate_name = name.clone();
            // Daemons: a failed check must not leave them waiting for the gate.
            let mut forked = Process::new(move || wait_gate(gate_name)).daemon(true);
            forked.start().unwrap();
            let mut served = Process::forkserver(wait_gate, name.clone()).daemon(true);
            served.start().unwrap();
            let held = fill_descriptors();
            for c in [&forked, &served] {
                assert_eq!(c.join_timeout(Duration::ZERO).unwrap(), None);
                assert!(c.is_alive());
            }
            open_gate.set();
            assert_eq!(forked.join().unwrap(), 0);
            assert_eq!(served.join_timeout(LIMIT).unwrap(), Some(0));
            assert_eq!(served.exitcode(), Some(0));
            drop(held);
        });
        p.start().unwrap();
        let code = p.join_timeout(LIMIT).unwrap();
        p.kill().unwrap();
        drop(gate);
        let _ = multiproc::segment::Segment::unlink(&format!("test-nofd-{}", std::process::id()));
        assert_eq!(code, Some(0));
    });
}
