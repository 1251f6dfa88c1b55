//! The crate's `pthread_atfork` handlers, in one place because their order
//! is one: every fork takes the standard streams, then the process
//! registries (`process`), then the arena and the list of named segments
//! (`segment`), then the list of
//! listeners' marks (`sys::prepare_fork_marks`, whose copies a child makes
//! inert), and releases them after.
//!
//! Two registrations:
//! - **the handlers** that hold those locks across every fork, and the
//!   exit hook, registered by [`ready`] at the first use of anything they
//!   protect, all in one `pthread_atfork` call. Registered then rather
//!   than at load, their `prepare` runs before the `prepare` handlers of
//!   the libraries set up before it (handlers run in reverse order of
//!   registration), such as an allocator's (jemalloc registers its own at
//!   its first allocation): a thread that holds a stream or the arena
//!   while it allocates is waited for before the allocator's locks are
//!   taken, not after, which would deadlock. Their `prepare` first waits
//!   for any one-time installation under way (see below), before it takes
//!   a lock;
//! - **the fork gate**, registered when the program is loaded (an ELF
//!   constructor, before `main` and before any thread), so that every
//!   fork runs it, after the `prepare` handlers of everything set up
//!   later. It keeps forks out of the crate's one-time installations
//!   ([`sys::InstallOnce`]), and takes the locks itself in a fork that
//!   missed the handlers.
//!
//! The gap the gate closes: glibc runs each `prepare` handler with its
//! atfork lock released, so a thread can register the handlers while a
//! fork in another thread is inside a `prepare` handler of some other
//! library; that fork then runs none of the new handlers (neither before
//! nor after the fork). If the registering thread went on to take a
//! registry before that fork happened, the child would find it held by a
//! thread it does not have. With the gate, such a fork either passed the
//! gate before the registration began (which waits for it to be done) or
//! reaches it after, finds the handlers registered and their `prepare`
//! not run, and runs it there (late, after the `prepare` handlers of the
//! libraries set up after load: the order that the lazy registration
//! avoids otherwise, taken only in this rare case).
//!
//! Where the gate is registered late (the crate in a library loaded with
//! `dlopen` while other threads run) or not at all (a platform without
//! `.init_array`), forks that begin before its registration are as
//! without it: the handlers' lazy registration alone, exposed to that
//! gap.

use std::cell::Cell;

use crate::error::{Error, Result};
use crate::{manager, process, segment, sys};

/// Whether the handlers and the exit hook are registered (not a `Once`:
/// see [`sys::InstallOnce`]).
static HANDLERS: sys::InstallOnce = sys::InstallOnce::new();

thread_local! {
    /// Whether the handlers' `prepare` ran in the fork this thread is
    /// making (set by it, taken by the gate's).
    static PREPARED: Cell<bool> = const { Cell::new(false) };
    /// Whether the gate took the locks for the fork this thread is making.
    static TAKEN_AT_GATE: Cell<bool> = const { Cell::new(false) };
}

sys::run_at_load!(REGISTER_GATE = register_gate);

/// Registers the fork gate, before `main`: nothing else (no allocation of
/// the crate's, no panic). Should it fail (no memory), forks are as
/// without it.
extern "C" fn register_gate() {
    // Miri, which may run constructors, cannot fork.
    if cfg!(miri) {
        return;
    }
    let _ = sys::at_fork(gate_prepare, gate_parent, gate_child);
}

/// Registers, once, the handlers that make the crate's process-local
/// state safe across a fork from any thread, and the exit hook that joins
/// children. Called before the first use of anything they protect: a
/// start, a registry, the arena (one atomic load once done).
pub(crate) fn ready() -> Result<()> {
    HANDLERS
        .run(|| {
            // The exit hook first: run twice (after a fork between the
            // two), it finds nothing the second time.
            sys::at_exit(process::exit_hook)?;
            sys::at_fork(prepare, after_fork_in_parent, after_fork_in_child)
        })
        .map_err(|e| Error::io("pthread_atfork/atexit", e))
}

extern "C" fn prepare() {
    // Not with the locks held, at the gate: the panic header's
    // installation waits for the panic hook's lock, whose holder (a
    // panicking thread) may be waiting for the standard error stream.
    sys::wait_for_installations();
    take_locks();
    PREPARED.set(true);
}

/// The streams and registries, then the arena, as in every fork (and as
/// `sys::fork`, which takes the streams before it forks).
fn take_locks() {
    process::prepare_fork();
    segment::prepare_fork();
    sys::prepare_fork_marks();
}

extern "C" fn after_fork_in_parent() {
    sys::after_fork_marks_in_parent();
    segment::after_fork();
    process::after_fork_in_parent();
}

extern "C" fn after_fork_in_child() {
    sys::after_fork_marks_in_child();
    segment::after_fork_in_child();
    process::after_fork_in_child();
    manager::after_fork_in_child();
    // Registered in the parent, so in this process too (whatever the
    // parent's `HANDLERS` said when it forked).
    HANDLERS.mark_installed();
}

extern "C" fn gate_prepare() {
    let prepared = PREPARED.replace(false);
    loop {
        sys::fork_gate_enter();
        if prepared || TAKEN_AT_GATE.get() || !HANDLERS.is_installed() {
            return;
        }
        // A fork whose `prepare` loop began before the handlers were
        // registered runs none of them: the locks are taken here instead,
        // outside the gate (a thread may hold one of them while its
        // installation waits for the gate to empty).
        sys::fork_gate_leave();
        take_locks();
        TAKEN_AT_GATE.set(true);
    }
}

extern "C" fn gate_parent() {
    if TAKEN_AT_GATE.replace(false) {
        after_fork_in_parent();
    }
    sys::fork_gate_leave();
}

extern "C" fn gate_child() {
    sys::fork_gate_child();
    if TAKEN_AT_GATE.replace(false) {
        after_fork_in_child();
    }
}
