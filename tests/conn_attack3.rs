//! Sixth-round attack on connections: readiness with part of a message
//! buffered, SIGPIPE on a one-way pipe, `wait` with `Duration::MAX`, and
//! listeners binding one Unix path at once.

mod common;

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use common::watchdog;
use multiproc::conn::{frame, wait};
use multiproc::{Connection, Error, Pipe};

const LIMIT: Duration = Duration::from_secs(30);

/// A timed receive that gave up with part of a message buffered leaves
/// nothing a receive could return: `poll` and `wait` then wait for the
/// peer (their timeout) instead of saying "ready" at once, which made a
/// loop of `poll` and timed receives spin while a peer sent slowly. More
/// bytes, a whole message or the peer's end make it ready again.
#[test]
fn part_of_a_message_buffered_is_not_ready() {
    watchdog("part of a message buffered", LIMIT, || {
        let (raw, ours) = UnixStream::pair().unwrap();
        let (other_raw, other) = UnixStream::pair().unwrap();
        let mut conn = Connection::from_socket(ours.into()).unwrap();
        let other = Connection::from_socket(other.into()).unwrap();
        (&raw).write_all(&frame::header(6).unwrap()).unwrap();
        (&raw).write_all(b"abc").unwrap();
        let r = conn.recv_bytes_timeout(Duration::from_millis(1));
        assert!(matches!(r, Err(Error::Timeout)), "{r:?}");

        let wait_for = Duration::from_millis(50);
        let t = Instant::now();
        assert!(!conn.poll(Some(wait_for)).unwrap(), "poll");
        assert!(
            t.elapsed() >= wait_for,
            "poll returned after {:?}",
            t.elapsed()
        );
        assert!(!conn.poll(Some(Duration::ZERO)).unwrap());
        let t = Instant::now();
        let ready = wait(&[&conn, &other], Some(wait_for)).unwrap();
        assert!(ready.is_empty(), "{ready:?}");
        assert!(
            t.elapsed() >= wait_for,
            "wait returned after {:?}",
            t.elapsed()
        );

        // The other connection's message is reported with it.
        (&other_raw).write_all(&frame::header(0).unwrap()).unwrap();
        assert_eq!(wait(&[&conn, &other], None).unwrap(), [1]);
        // New bytes of the message are something to read, as in Python.
        (&raw).write_all(b"d").unwrap();
        assert!(conn.poll(Some(Duration::ZERO)).unwrap());
        assert_eq!(
            wait(&[&conn, &other], Some(Duration::ZERO)).unwrap(),
            [0, 1]
        );
        (&raw).write_all(b"ef").unwrap();
        assert_eq!(conn.recv_bytes_timeout(LIMIT).unwrap(), b"abcdef");

        // A whole message buffered behind the one received is ready,
        // though the descriptor has nothing more.
        let mut two = Vec::new();
        frame::push(&mut two, b"one").unwrap();
        frame::push(&mut two, b"two").unwrap();
        (&raw).write_all(&two).unwrap();
        assert_eq!(conn.recv_bytes().unwrap(), b"one");
        assert!(conn.poll(Some(Duration::ZERO)).unwrap());
        assert_eq!(
            wait(&[&conn, &other], Some(Duration::ZERO)).unwrap(),
            [0, 1]
        );
        assert_eq!(conn.recv_bytes().unwrap(), b"two");

        // Part of a message and the peer's end: ready (the receive says
        // the connection closed).
        (&raw).write_all(&frame::header(6).unwrap()).unwrap();
        let r = conn.recv_bytes_timeout(Duration::from_millis(1));
        assert!(matches!(r, Err(Error::Timeout)), "{r:?}");
        drop(raw);
        assert!(conn.poll(None).unwrap());
        let r = conn.recv_bytes();
        assert!(matches!(r, Err(Error::ConnectionClosed)), "{r:?}");
        drop(other_raw);
    });
}

/// Sending on a one-way pipe whose reader is gone is
/// `ConnectionClosed`, as on a socket, in a process that gave SIGPIPE its
/// default action back (many command-line programs do, to end quietly in
/// a shell pipeline): the write killed it. The thread's signal mask is
/// as before, and no SIGPIPE is left pending.
/// Whether SIGPIPE is in the calling thread's signal mask, and whether
/// one is pending.
fn sigpipe_held_and_pending() -> (bool, bool) {
    // SAFETY: `sigset_t` is plain data, valid when zeroed.
    let mut mask: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let mut pending: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: no new mask, and a valid set for the old one.
    let r = unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, std::ptr::null(), &mut mask) };
    assert_eq!(r, 0);
    // SAFETY: a valid set to write.
    assert_eq!(unsafe { libc::sigpending(&mut pending) }, 0);
    // SAFETY: an initialised set and a signal number.
    let held = unsafe { libc::sigismember(&mask, libc::SIGPIPE) } == 1;
    // SAFETY: as above.
    let pending = unsafe { libc::sigismember(&pending, libc::SIGPIPE) } == 1;
    (held, pending)
}

/// Sending on a one-way pipe whose reader is gone is
/// `ConnectionClosed`, as on a socket, in a process that gave SIGPIPE its
/// default action back (many command-line programs do, to end quietly in
/// a shell pipeline): the write killed it. The thread's signal mask is
/// as before, and no SIGPIPE is left pending.
#[test]
fn a_send_to_a_gone_pipe_reader_raises_no_sigpipe() {
    let p = common::static_child(|| {
        // SAFETY: this child's own disposition of SIGPIPE.
        let old = unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
        assert_ne!(old, libc::SIG_ERR);
        let (reader, mut writer) = Pipe::simplex().unwrap();
        drop(reader);
        let r = writer.send_bytes(b"to nobody");
        assert!(matches!(r, Err(Error::ConnectionClosed)), "{r:?}");
        let r = writer.send_bytes(&vec![1; 1 << 20]);
        assert!(matches!(r, Err(Error::ConnectionClosed)), "{r:?}");
        let r = common::current_thread().block_on(writer.send_bytes_async(b"async"));
        assert!(matches!(r, Err(Error::ConnectionClosed)), "{r:?}");
        assert_eq!(sigpipe_held_and_pending(), (false, false));
    });
    assert_eq!(
        common::join(&p, LIMIT),
        0,
        "the child died (-13: of SIGPIPE)"
    );
}

/// `wait` on no connection with a timeout too long for the clock
/// (`Duration::MAX`) is the wait without a timeout, an error at once:
/// it slept for ever.
#[test]
fn a_wait_on_nothing_with_duration_max_is_an_error() {
    watchdog("wait on nothing for ever", LIMIT, || {
        for timeout in [None, Some(Duration::MAX)] {
            let r = wait(&[], timeout);
            assert!(matches!(r, Err(Error::InvalidArgument(_))), "{r:?}");
        }
        let r = wait(&[], Some(Duration::from_nanos(1)));
        assert!(matches!(&r, Ok(v) if v.is_empty()), "{r:?}");
    });
}

/// Two listeners binding one Unix path at once, over a stale socket file
/// or none: exactly one of them gets it, and clients reach that one; the
/// other is `AddrInUse`. Before, one in a hundred rounds both succeeded:
/// one took the other's fresh file for a stale one (it refuses
/// connections between its bind and its listen, or was bound just after
/// the stale file was probed) and removed it, and that other listened on
/// a file no longer there, unreachable, without an error.
#[test]
fn two_listeners_binding_one_path_at_once_never_both_get_it() {
    use multiproc::conn::{connect, Address, Listener};
    /// The socket path, removed however the test ends.
    struct Removed(std::path::PathBuf);
    impl Drop for Removed {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    let path = std::env::temp_dir().join(format!("conn-attack3-race-{}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let _removed = Removed(path.clone());
    let address = Address::Unix(path.clone());
    watchdog("binding one path at once", LIMIT, || {
        for round in 0..2000 {
            if round % 2 == 0 {
                // A stale socket file: bound, and its socket closed.
                drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
            }
            let (won, lost): (Vec<_>, Vec<_>) = common::two_binds_at_once(&address)
                .into_iter()
                .partition(Result::is_ok);
            let lost: Vec<Error> = lost.into_iter().map(Result::unwrap_err).collect();
            assert_eq!(won.len(), 1, "round {round}: {lost:?}");
            let in_use = match &lost[0] {
                Error::Io { source, .. } => source.kind() == std::io::ErrorKind::AddrInUse,
                _ => false,
            };
            assert!(in_use, "round {round}: {lost:?}");
            let won: Vec<Listener> = won.into_iter().map(Result::unwrap).collect();
            let client = connect(&address, None).unwrap();
            drop(won[0].accept().unwrap());
            drop(client);
            drop(won);
            assert!(!path.exists(), "round {round}: the winner's file stayed");
        }
    });
}

/// A second listener binding the path of a live one fails with
/// `AddrInUse`, and the live one never hears of it: its next accept is
/// the next real client. Before, the second's liveness probe was a
/// connection in the first's queue: with a key, that accept failed
/// (`AuthenticationFailed`, ending a `listener.accept()?` loop whenever
/// a second copy of a program started); without, it returned a
/// connection already at its end.
#[test]
fn a_second_bind_at_a_live_path_is_no_client_of_the_first() {
    use multiproc::conn::{connect, Address, Listener};
    let path = std::env::temp_dir().join(format!("conn-attack3-live-{}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let address = Address::Unix(path.clone());
    watchdog("a second bind at a live path", LIMIT, || {
        for key in [Some(&b"key"[..]), None] {
            let live = Listener::bind(&address, key).unwrap();
            for _ in 0..3 {
                let r = Listener::bind(&address, key);
                assert!(
                    matches!(&r, Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::AddrInUse),
                    "{r:?}"
                );
            }
            let client = std::thread::spawn({
                let address = address.clone();
                move || {
                    let mut c = connect(&address, key).unwrap();
                    c.send_bytes(b"a real client").unwrap();
                    c
                }
            });
            let mut accepted = live.accept().unwrap();
            assert_eq!(accepted.recv_bytes().unwrap(), b"a real client");
            drop(client.join().unwrap());
            drop(live);
            assert!(!path.exists());
        }
    });
}
