//! Behavioural parity of the process tools (`Pool`, `Process`, queues,
//! `Pipe`/`Connection`, `Listener`/`connect`) with CPython's
//! `multiprocessing`: each case was run in CPython 3.12 first, and
//! multiproc must do the same, or what its README's "Differences" section
//! says.

mod common;

use std::time::Duration;

use common::{static_child, watchdog};
use multiproc::{Error, Pipe};

const LIMIT: Duration = Duration::from_secs(60);

/// A message larger than a socket connection's default limit (64 MiB).
const BIG: usize = multiproc::conn::DEFAULT_MAX_MESSAGE + (1 << 20);

/// A `Pipe` carries a message of any size, as Python's does
/// (`b.send_bytes(bytes(65 << 20)); a.recv_bytes()` works), one way or
/// both, between a parent and its child. Before, a pipe's end refused a
/// message over 64 MiB with `MessageTooLarge` and closed itself: the
/// message was lost and the pipe dead, with nothing in the README.
#[test]
fn a_pipe_carries_a_message_over_64_mib_as_pythons_does() {
    watchdog("a message over 64 MiB through a pipe", LIMIT, || {
        for duplex in [true, false] {
            let (mut reader, mut writer) = Pipe(duplex).unwrap();
            let child = static_child(move || {
                writer.send_bytes(&vec![7u8; BIG]).unwrap();
                writer.send_bytes(b"after").unwrap();
            });
            let got = reader.recv_bytes().unwrap();
            assert_eq!(got.len(), BIG);
            assert!(got.iter().all(|&b| b == 7));
            assert_eq!(reader.recv_bytes().unwrap(), b"after");
            assert_eq!(child.join().unwrap(), 0);
        }
        // A limit set by the caller still holds (Python's `maxlength`).
        let (mut a, mut b) = Pipe(true).unwrap();
        b.set_max_message(3);
        a.send_bytes(b"four").unwrap();
        assert!(matches!(
            b.recv_bytes(),
            Err(Error::MessageTooLarge { size: 4, limit: 3 })
        ));
    });
}
