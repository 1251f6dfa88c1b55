//! Edge cases of the shared layer, connections, processes and the pool,
//! side by side with what CPython's `multiprocessing` does with them.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use common::watchdog;
use multiproc::{Condition, Error, Pipe};

const LIMIT: Duration = Duration::from_secs(60);

/// Whether `e` is the error of an end closed by this process (Python's
/// `OSError: handle is closed`), not the peer's end of the stream.
fn closed_here(e: &Error) -> bool {
    matches!(e, Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotConnected)
}

/// A receive on an end this process closed (by `close`, or by a framing
/// error) is not the peer's end of file: a loop that stops at
/// `ConnectionClosed` would take it for the peer's clean end. Python
/// raises `OSError: handle is closed` (or, after a message over the
/// limit, refuses the connection) rather than `EOFError`; here every
/// receive says so as `send`, `poll` and `recv_bytes_timeout` do.
#[test]
fn receiving_on_an_end_closed_here_is_not_the_peers_end() {
    watchdog("closed receive", LIMIT, || {
        let (_a, mut b) = Pipe(true).unwrap();
        b.close();
        assert!(closed_here(&b.recv_bytes().unwrap_err()));
        assert!(closed_here(&b.recv::<u8>().unwrap_err()));
        assert!(closed_here(&b.recv_bytes_into(&mut [0; 4]).unwrap_err()));
        assert!(closed_here(
            &b.recv_bytes_timeout(Duration::ZERO).unwrap_err()
        ));
        assert!(closed_here(&b.poll(Some(Duration::ZERO)).unwrap_err()));
        assert!(closed_here(&b.send_bytes(b"x").unwrap_err()));
        // The peer still sends, but a message over the limit closed this
        // end: what follows is refused, not an end of file.
        let (mut a, mut b) = Pipe(true).unwrap();
        b.set_max_message(3);
        a.send_bytes(b"too long").unwrap();
        a.send_bytes(b"ok").unwrap();
        assert!(matches!(b.recv_bytes(), Err(Error::MessageTooLarge { .. })));
        assert!(closed_here(&b.recv_bytes().unwrap_err()));
        // A one-way pipe's writer, once closed, is closed first (Python
        // checks that before the direction).
        let (_r, mut w) = Pipe(false).unwrap();
        w.close();
        assert!(closed_here(&w.recv_bytes().unwrap_err()));
    });
}

/// Python's `wait_for(predicate, 0)` (or a timeout already spent) returns
/// the predicate's `False` without waiting, the lock held throughout, as
/// `wait_for_async` does: it is no wait, so it needs no waiter's place.
/// It used to take one, and failed with `TooManyWaiters` while every
/// place was taken.
#[test]
fn wait_for_with_a_spent_timeout_does_not_wait() {
    watchdog("spent wait_for", LIMIT, || {
        let cond = Condition::new().unwrap();
        let entered = AtomicUsize::new(0);
        std::thread::scope(|s| {
            let waiters: Vec<_> = (0..Condition::MAX_WAITERS)
                .map(|_| {
                    s.spawn(|| {
                        let mut g = cond.lock().unwrap();
                        entered.fetch_add(1, SeqCst);
                        g.wait_timeout(LIMIT).unwrap()
                    })
                })
                .collect();
            // Each counted itself holding the lock, and let it go only
            // inside its wait: once every one has counted and the lock is
            // ours, every place is taken.
            let counted =
                common::wait_until(LIMIT, || entered.load(SeqCst) == Condition::MAX_WAITERS);
            let mut g = cond.lock().unwrap();
            let full = g.wait_timeout(Duration::ZERO);
            let spent = g.wait_for(|| false, Some(Duration::ZERO));
            // The waiters go before any assertion, which would otherwise
            // leave them waiting.
            g.notify_all();
            drop(g);
            for w in waiters {
                w.join().unwrap();
            }
            assert!(counted, "the waiters never all came");
            assert!(matches!(full, Err(Error::TooManyWaiters { .. })));
            assert!(!spent.unwrap());
        });
    });
}

/// A message that holds more than the value asked for is not that value:
/// postcard carries no types, so a peer that sends a `u32` to a receiver
/// of `u8` (300 encodes as two bytes) was read as 172, the second byte
/// dropped. Python's pickle names the type, and cannot be misread so.
#[test]
fn a_message_longer_than_its_value_is_refused() {
    let (mut a, mut b) = Pipe(true).unwrap();
    a.send(&300u32).unwrap();
    assert!(matches!(b.recv::<u8>(), Err(Error::Deserialize(_))));
    // The message is consumed, and the connection goes on.
    a.send(&(7u8, String::from("rest"))).unwrap();
    assert!(matches!(b.recv::<u8>(), Err(Error::Deserialize(_))));
    a.send(&300u32).unwrap();
    assert_eq!(b.recv::<u32>().unwrap(), 300);
}
