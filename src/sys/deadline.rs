//! The one way the crate says how long a blocking call may wait.
//!
//! Every timed call turns its `Duration` into a [`Deadline`] once, at its
//! start, with [`Deadline::after`], and every wait below it (futex, robust
//! mutex, `poll`, a process-local condition variable) takes that deadline.
//! A timeout too large to represent on the clock waits forever: it can
//! never overflow, and a retried wait never waits longer than was asked.
//! (Linux's `time_t` and `c_long` are 64 bits wide on every target the
//! crate builds for, so the arithmetic is in `i64`.)

use std::time::Duration;

const NANOS_PER_SEC: i64 = 1_000_000_000;

/// The current time on `CLOCK_MONOTONIC`.
pub(crate) fn monotonic_now() -> libc::timespec {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid out-pointer; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    now
}

/// How long a blocking call may wait: not at all, until an instant on
/// `CLOCK_MONOTONIC`, or forever.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Deadline {
    /// Try once and never sleep: the `try_*` calls, whose failure is "would
    /// block" (`Full`, `Empty`, `WouldBlock`) rather than a timeout.
    Now,
    /// Give up at this instant on the monotonic clock.
    At(libc::timespec),
    /// Wait as long as it takes.
    Never,
}

impl Deadline {
    /// The deadline `timeout` from now; [`Deadline::Never`] if that instant
    /// cannot be represented (`Duration::MAX` and the like).
    pub(crate) fn after(timeout: Duration) -> Deadline {
        Deadline::after_from(&monotonic_now(), timeout)
    }

    /// The deadline `timeout` after `now`.
    fn after_from(now: &libc::timespec, timeout: Duration) -> Deadline {
        let nanos = now.tv_nsec + i64::from(timeout.subsec_nanos());
        let secs = i64::try_from(timeout.as_secs())
            .ok()
            .and_then(|s| s.checked_add(now.tv_sec))
            .and_then(|s| s.checked_add(nanos / NANOS_PER_SEC));
        match secs {
            Some(tv_sec) => Deadline::At(libc::timespec {
                tv_sec,
                tv_nsec: nanos % NANOS_PER_SEC,
            }),
            None => Deadline::Never,
        }
    }

    /// [`after`](Deadline::after) for an optional timeout; `None` waits forever.
    pub(crate) fn within(timeout: Option<Duration>) -> Deadline {
        timeout.map_or(Deadline::Never, Deadline::after)
    }

    /// Whether a wait with this deadline may sleep at all.
    pub(crate) fn may_wait(&self) -> bool {
        !matches!(self, Deadline::Now)
    }

    /// Whether the deadline has come ([`Deadline::Now`] always has).
    pub(crate) fn passed(&self) -> bool {
        self.remaining() == Some(Duration::ZERO)
    }

    /// The time left; `None` for forever.
    pub(crate) fn remaining(&self) -> Option<Duration> {
        match self {
            Deadline::Now => Some(Duration::ZERO),
            Deadline::Never => None,
            Deadline::At(at) => Some(between(&monotonic_now(), at)),
        }
    }

    /// The absolute time to hand to a futex or a timed mutex lock: `None`
    /// for forever, the clock's zero (long past) for [`Deadline::Now`].
    pub(crate) fn timespec(&self) -> Option<libc::timespec> {
        match *self {
            Deadline::Now => Some(libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            }),
            Deadline::At(at) => Some(at),
            Deadline::Never => None,
        }
    }

    /// The earlier of this deadline and `slice` from now, for a sleep that
    /// wakes up now and then to look again.
    pub(crate) fn capped(&self, slice: Duration) -> Deadline {
        self.earlier(Deadline::after(slice))
    }

    /// The deadline of the next sleep of a wait that wakes up at least
    /// every `slice` to look again: the earlier of this deadline and
    /// `slice` from now; `None` if this one has passed, when the wait
    /// must not sleep at all (a sleep until a time already past still
    /// lasts the thread's timer slack, 50 µs by default). One read of
    /// the clock, as [`capped`](Deadline::capped).
    pub(crate) fn next_sleep(&self, slice: Duration) -> Option<Deadline> {
        match self {
            Deadline::Now => None,
            Deadline::Never => Some(Deadline::after(slice)),
            Deadline::At(at) => {
                let now = monotonic_now();
                if (now.tv_sec, now.tv_nsec) >= (at.tv_sec, at.tv_nsec) {
                    None
                } else {
                    Some(self.earlier(Deadline::after_from(&now, slice)))
                }
            }
        }
    }

    /// The earlier of two deadlines.
    pub(crate) fn earlier(self, other: Deadline) -> Deadline {
        match (self, other) {
            (Deadline::Now, _) | (_, Deadline::Never) => self,
            (_, Deadline::Now) | (Deadline::Never, _) => other,
            (Deadline::At(a), Deadline::At(b)) => {
                if (a.tv_sec, a.tv_nsec) <= (b.tv_sec, b.tv_nsec) {
                    self
                } else {
                    other
                }
            }
        }
    }

    /// The time left as `poll(2)` takes it: milliseconds rounded up (so that
    /// a wait never ends before its deadline) and capped at what fits, or
    /// -1 for forever. A caller whose poll times out checks
    /// [`passed`](Deadline::passed) and polls again if it has not.
    pub(crate) fn poll_millis(&self) -> libc::c_int {
        match self.remaining() {
            None => -1,
            Some(left) => left
                .as_micros()
                .div_ceil(1000)
                .min(libc::c_int::MAX as u128) as libc::c_int,
        }
    }
}

/// How long from `now` until `at`; zero once `at` has passed.
fn between(now: &libc::timespec, at: &libc::timespec) -> Duration {
    if (now.tv_sec, now.tv_nsec) >= (at.tv_sec, at.tv_nsec) {
        return Duration::ZERO;
    }
    let mut secs = at.tv_sec - now.tv_sec;
    let mut nanos = at.tv_nsec - now.tv_nsec;
    if nanos < 0 {
        secs -= 1;
        nanos += NANOS_PER_SEC;
    }
    Duration::new(secs as u64, nanos as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_too_large_for_the_clock_wait_forever() {
        for t in [
            Duration::MAX,
            Duration::new(u64::MAX, 0),
            Duration::new(i64::MAX as u64, 999_999_999),
        ] {
            assert!(matches!(Deadline::after(t), Deadline::Never), "{t:?}");
        }
        assert_eq!(Deadline::after(Duration::MAX).remaining(), None);
        assert_eq!(Deadline::after(Duration::MAX).poll_millis(), -1);
    }

    #[test]
    fn huge_but_representable_timeouts_stay_in_the_future() {
        let d = Deadline::after(Duration::from_secs(i64::MAX as u64 / 2));
        assert!(matches!(d, Deadline::At(_)));
        assert!(!d.passed());
        assert_eq!(d.poll_millis(), libc::c_int::MAX);
    }

    #[test]
    fn nanoseconds_carry_into_seconds() {
        for nanos in [0, 1, 999_999_999] {
            let Deadline::At(at) = Deadline::after(Duration::new(1, nanos)) else {
                panic!("a representable deadline");
            };
            assert!((0..NANOS_PER_SEC).contains(&at.tv_nsec), "{at:?}");
        }
    }

    #[test]
    fn zero_and_now_have_passed() {
        assert!(Deadline::Now.passed());
        assert!(!Deadline::Now.may_wait());
        assert!(Deadline::after(Duration::ZERO).passed());
        assert!(Deadline::after(Duration::ZERO).may_wait());
        assert!(!Deadline::Never.passed());
        assert_eq!(Deadline::after(Duration::ZERO).poll_millis(), 0);
    }

    #[test]
    fn no_sleep_once_the_deadline_has_passed() {
        assert!(Deadline::Now.next_sleep(Duration::from_secs(1)).is_none());
        assert!(Deadline::after(Duration::ZERO)
            .next_sleep(Duration::from_secs(1))
            .is_none());
        let never = Deadline::Never
            .next_sleep(Duration::from_millis(5))
            .unwrap();
        assert!(never.remaining().unwrap() <= Duration::from_millis(5));
        let far = Deadline::after(Duration::from_secs(3600));
        let near = far.next_sleep(Duration::from_millis(50)).unwrap();
        assert!(near.remaining().unwrap() <= Duration::from_millis(50));
        let soon = Deadline::after(Duration::from_millis(10));
        let next = soon.next_sleep(Duration::from_secs(5)).unwrap();
        assert!(next.remaining().unwrap() <= Duration::from_millis(10));
    }

    #[test]
    fn capped_takes_the_earlier() {
        let far = Deadline::after(Duration::from_secs(3600));
        let near = far.capped(Duration::from_millis(50));
        assert!(near.remaining().unwrap() <= Duration::from_millis(50));
        let soon = Deadline::after(Duration::from_millis(10));
        assert!(
            soon.capped(Duration::from_secs(5)).remaining().unwrap() <= Duration::from_millis(10)
        );
        assert!(Deadline::Never
            .capped(Duration::from_millis(5))
            .remaining()
            .is_some());
        assert!(matches!(
            Deadline::Now.capped(Duration::from_secs(1)),
            Deadline::Now
        ));
    }
}
