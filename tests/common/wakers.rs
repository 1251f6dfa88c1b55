//! Hand-made wakers and bounded awaits for the async tests.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

/// Long enough that no healthy wait here comes near it.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// Awaits `f` for at most [`PATIENCE`]; a hang fails the test.
pub async fn patiently<F: Future>(what: &str, f: F) -> F::Output {
    match tokio::time::timeout(PATIENCE, f).await {
        Ok(out) => out,
        Err(_) => panic!("{what}: still pending after {PATIENCE:?}"),
    }
}

/// A waker that counts its wake-ups and lets a thread wait for one.
#[derive(Default)]
pub struct Flag {
    woken: Mutex<usize>,
    cv: Condvar,
}

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        *self.woken.lock().unwrap() += 1;
        self.cv.notify_all();
    }
}

impl Flag {
    pub fn count(&self) -> usize {
        *self.woken.lock().unwrap()
    }
    /// Waits until woken more than `seen` times; whether it was within `limit`.
    pub fn wait_past(&self, seen: usize, limit: Duration) -> bool {
        let end = Instant::now() + limit;
        let mut n = self.woken.lock().unwrap();
        while *n <= seen {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            n = self.cv.wait_timeout(n, left).unwrap().0;
        }
        true
    }
}

/// Polls `f` once with `waker`.
pub fn poll_with<F: Future + ?Sized>(f: Pin<&mut F>, waker: &Waker) -> Poll<F::Output> {
    f.poll(&mut Context::from_waker(waker))
}
