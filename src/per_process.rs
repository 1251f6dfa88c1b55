//! [`PerProcess`]: a value each process makes for itself on first use (a
//! connection: a forked child never shares its parent's socket), safe
//! against a fork from another thread.

use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::{Mutex, TryLockError};

use crate::waiter::ProcessKey;

/// One value per process, made on its first use in each process and
/// reached through a lock of that process's own.
///
/// Fork-safe: a child forked while another thread of its parent held the
/// parent's lock (in the middle of a round trip) never touches that lock;
/// it makes a slot of its own, found by its [`ProcessKey`] (not its pid: a
/// descendant may get the pid of the process that made a slot, once that
/// one has died, and the lock may be held by a thread of the dead one). The parent's slot is kept
/// until the `PerProcess` is dropped (another thread may still be reading
/// it), and the child's copy of its value is dropped at once if that lock
/// was free (closing the child's copy of a socket, so that the peer sees
/// the parent's connection end with the parent), or else never (a thread
/// of the parent was inside that lock at the fork, and may have left the
/// value half changed).
pub(crate) struct PerProcess<T> {
    /// This process's slot (a `Box` leaked into the pointer).
    current: AtomicPtr<Slot<T>>,
    /// Slots of the processes this one was forked from, freed on drop.
    retired: AtomicPtr<Slot<T>>,
}

struct Slot<T> {
    process: ProcessKey,
    value: Mutex<Option<T>>,
    /// The next slot in [`PerProcess::retired`].
    next: AtomicPtr<Slot<T>>,
}

impl<T> Slot<T> {
    fn boxed(process: ProcessKey) -> *mut Slot<T> {
        Box::into_raw(Box::new(Slot {
            process,
            value: Mutex::new(None),
            next: AtomicPtr::new(std::ptr::null_mut()),
        }))
    }
}

// SAFETY: the slots are reached only through their `Mutex`, which makes a
// `T: Send` shareable; the pointers are owned by the `PerProcess`.
unsafe impl<T: Send> Sync for PerProcess<T> {}
// SAFETY: as above; the slots move with the `PerProcess`.
unsafe impl<T: Send> Send for PerProcess<T> {}

impl<T> PerProcess<T> {
    /// No slot yet in any process.
    pub(crate) const fn new() -> PerProcess<T> {
        PerProcess {
            current: AtomicPtr::new(std::ptr::null_mut()),
            retired: AtomicPtr::new(std::ptr::null_mut()),
        }
    }

    /// This process's value (`None` until the caller makes one), behind a
    /// lock no other process ever took.
    pub(crate) fn get(&self) -> &Mutex<Option<T>> {
        &self.slot().value
    }

    fn slot(&self) -> &Slot<T> {
        loop {
            let seen = self.current.load(Ordering::Acquire);
            // SAFETY: a non-null pointer here came from `Box::into_raw`
            // and is freed only when `self` is dropped (see `retired`).
            if let Some(slot) = unsafe { seen.as_ref() } {
                if slot.process.is_current() {
                    return slot;
                }
            }
            let mine = Slot::boxed(ProcessKey::current());
            match self
                .current
                .compare_exchange(seen, mine, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => {
                    if !seen.is_null() {
                        self.retire(seen);
                    }
                    // SAFETY: just made, freed only with `self`.
                    return unsafe { &*mine };
                }
                // Another thread of this process made one first.
                // SAFETY: `mine` was never shared.
                Err(_) => drop(unsafe { Box::from_raw(mine) }),
            }
        }
    }

    /// Keeps a parent's slot until `self` is dropped, dropping this
    /// process's copy of its value now if nobody held its lock at the fork.
    fn retire(&self, old: *mut Slot<T>) {
        // SAFETY: retired slots live until `self` is dropped.
        let slot = unsafe { &*old };
        // Never waits: the lock may be held by a thread that was not forked.
        if let Ok(mut value) = slot.value.try_lock() {
            value.take();
        }
        let mut head = self.retired.load(Ordering::Acquire);
        loop {
            slot.next.store(head, Ordering::Relaxed);
            match self
                .retired
                .compare_exchange(head, old, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return,
                Err(now) => head = now,
            }
        }
    }
}

impl<T> Drop for PerProcess<T> {
    fn drop(&mut self) {
        // This process's slot (or, in a child that never used it, its
        // parent's), then the retired ones.
        let current = *self.current.get_mut();
        if !current.is_null() {
            // SAFETY: from `Box::into_raw`, and no thread can reach it any
            // more (`self` is being dropped).
            unsafe { free(current) };
        }
        let mut next = *self.retired.get_mut();
        while !next.is_null() {
            // SAFETY: as above, for each retired slot once.
            next = unsafe { free(next) };
        }
    }
}

/// Frees a slot; returns the next one in [`PerProcess::retired`]. A lock
/// still held here was held at the fork by a thread of the parent, which
/// may have left the value half changed (in the middle of a reallocation,
/// say): the value is then leaked, not dropped.
///
/// # Safety
/// `slot` comes from `Box::into_raw`, and nothing else reaches it.
unsafe fn free<T>(slot: *mut Slot<T>) -> *mut Slot<T> {
    // SAFETY: per the caller.
    let mut slot = unsafe { Box::from_raw(slot) };
    if matches!(slot.value.try_lock(), Err(TryLockError::WouldBlock)) {
        std::mem::forget(crate::poison::get_mut(&mut slot.value).take());
    }
    *slot.next.get_mut()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a child forked while another thread held the parent's lock
    /// sees: the parent's slot (another process's, its lock held forever,
    /// even where this one has the pid of the one that made it, once that
    /// one has died), which it must retire without waiting on that lock;
    /// every slot is freed with the `PerProcess` (Miri checks the pointers
    /// and the leaks).
    #[test]
    fn a_process_never_takes_the_lock_of_a_slot_not_its_own() {
        let per: PerProcess<u32> = PerProcess::new();
        let first: *const Slot<u32> = per.slot();
        assert!(std::ptr::eq(first, per.slot()), "one slot per process");
        let parents = Slot::<u32>::boxed(ProcessKey::another());
        // SAFETY: just made; `per` frees it.
        std::mem::forget(unsafe { &*parents }.value.lock().unwrap());
        per.retire(per.current.swap(parents, Ordering::AcqRel));
        let mine = per.slot();
        assert!(mine.process.is_current());
        assert!(mine.value.try_lock().is_ok());
        assert!(!std::ptr::eq(mine, parents) && !std::ptr::eq(mine, first));
    }

    /// A child forked after its parent used its slot (so the parent's pid
    /// is cached) finds that it is not its own.
    #[test]
    #[cfg_attr(miri, ignore = "fork")]
    fn a_forked_child_never_takes_its_parents_slot() {
        let per: PerProcess<u32> = PerProcess::new();
        *per.get().lock().unwrap() = Some(7);
        let parents: *const Slot<u32> = per.slot();
        assert!(std::ptr::eq(parents, per.slot()));
        // SAFETY: the child only reads memory and calls `_exit`.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork");
        if pid == 0 {
            let mine = per.slot();
            let ok = !std::ptr::eq(mine, parents)
                && mine.process.is_current()
                && mine.value.try_lock().is_ok_and(|v| v.is_none());
            // SAFETY: ends the child at once.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        let mut status = 0;
        // SAFETY: waits for our own child.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
        assert_eq!(
            *per.get().lock().unwrap(),
            Some(7),
            "the parent's value stays"
        );
    }

    /// As above for a child made by a raw `clone` system call, which runs
    /// no `pthread_atfork` handler (nor does glibc's `_Fork`): it must
    /// not take the slot (the connection, the fast-path area) of the
    /// process it was cloned from. Cloned from a forked child, which has
    /// one thread (so the clone may allocate: no other thread held the
    /// allocator's lock).
    #[test]
    #[cfg_attr(miri, ignore = "fork")]
    fn a_child_of_a_raw_clone_never_takes_its_parents_slot() {
        let per: PerProcess<u32> = PerProcess::new();
        *per.get().lock().unwrap() = Some(7);
        let wait = |pid: libc::pid_t| {
            let mut status = 0;
            // SAFETY: waits for our own child.
            let waited = unsafe { libc::waitpid(pid, &mut status, 0) } == pid;
            waited && libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0
        };
        // SAFETY: the child makes system calls, allocates (it has one
        // thread) and calls `_exit`.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork");
        if pid == 0 {
            let parents: *const Slot<u32> = per.slot();
            // Found again: known to be this process's.
            let again = std::ptr::eq(parents, per.slot());
            // SAFETY: a fork without the C library (flags: SIGCHLD only);
            // the child returns from the call on its own copy of the stack.
            let raw = unsafe { libc::syscall(libc::SYS_clone, libc::SIGCHLD, 0, 0, 0, 0) };
            if raw == 0 {
                let mine = per.slot();
                let ok = !std::ptr::eq(mine, parents)
                    && mine.process.is_current()
                    && mine.value.try_lock().is_ok_and(|v| v.is_none());
                // SAFETY: ends the child at once.
                unsafe { libc::_exit(if ok { 0 } else { 1 }) };
            }
            let ok =
                again && raw > 0 && wait(raw as libc::pid_t) && std::ptr::eq(parents, per.slot());
            // SAFETY: ends the child at once.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        assert!(wait(pid), "the clone took its parent's slot");
        assert_eq!(*per.get().lock().unwrap(), Some(7));
    }

    /// A value that a thread of the parent was using when the process
    /// forked (its lock held, for ever here) may be half changed, in the
    /// middle of a reallocation, say: it is never dropped, not even with
    /// the `PerProcess` (used here first if `used`: its slot then
    /// retired; else still the current one when dropped). Whether it was.
    fn in_use_at_the_fork_dropped(used: bool) -> bool {
        use std::sync::atomic::AtomicBool;
        struct InUse<'a>(&'a AtomicBool);
        impl Drop for InUse<'_> {
            fn drop(&mut self) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let dropped = AtomicBool::new(false);
        let per: PerProcess<InUse> = PerProcess::new();
        let parents = Slot::<InUse>::boxed(ProcessKey::another());
        // SAFETY: just made; `per` owns it from here.
        let slot = unsafe { &*parents };
        *slot.value.lock().unwrap() = Some(InUse(&dropped));
        // The parent's thread was inside its lock at the fork.
        std::mem::forget(slot.value.lock().unwrap());
        per.current.store(parents, Ordering::Release);
        if used {
            assert!(per.get().try_lock().unwrap().is_none(), "a slot of its own");
        }
        drop(per);
        dropped.load(Ordering::SeqCst)
    }

    #[test]
    fn a_value_in_use_at_the_fork_is_never_dropped() {
        assert!(
            !in_use_at_the_fork_dropped(true),
            "a value in use was dropped"
        );
    }

    /// As above, in a child that drops the `PerProcess` without using it.
    #[test]
    fn a_value_in_use_at_the_fork_is_never_dropped_even_unused_here() {
        assert!(
            !in_use_at_the_fork_dropped(false),
            "a value in use was dropped"
        );
    }

    /// A value made in the parent is dropped in the child that inherits it
    /// (when its lock was free), and the child makes its own.
    #[test]
    fn an_inherited_value_is_dropped_and_remade() {
        let per: PerProcess<u32> = PerProcess::new();
        *per.get().lock().unwrap() = Some(7);
        let parents = Slot::<u32>::boxed(ProcessKey::another());
        // SAFETY: just made; `per` frees it.
        *unsafe { &*parents }.value.lock().unwrap() = Some(8);
        per.retire(per.current.swap(parents, Ordering::AcqRel));
        assert_eq!(*per.get().lock().unwrap(), None);
        // SAFETY: retired, alive until `per` is dropped.
        assert_eq!(*unsafe { &*parents }.value.lock().unwrap(), None);
    }
}
