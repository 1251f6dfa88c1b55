//! The Manager's fast path (requests and answers through a shared-memory
//! area per connection) across real processes: used when it can be, the
//! socket when it cannot, and a server that trusts nothing a client writes
//! in its area.

mod common;

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::fastpath::*;
use common::{join, static_child, wait_until, watchdog};
use multiproc::conn::{Address, Connection};
use multiproc::manager::{Manager, Transport};
use multiproc::Error;

const LIMIT: Duration = Duration::from_secs(60);

fn socket_path(m: &Manager) -> std::path::PathBuf {
    match m.address() {
        Address::Unix(p) => p.clone(),
        Address::Tcp(_) => unreachable!(),
    }
}

#[test]
fn calls_go_through_shared_memory_and_large_ones_over_the_socket() {
    watchdog("fast path", LIMIT, || {
        alone(|| {
            let before = areas_mapped();
            let m = Manager::start().unwrap();
            let d = m.dict::<String, String>().unwrap();
            d.set("a".into(), "b".into()).unwrap();
            assert_eq!(d.get(&"a".into()).unwrap().as_deref(), Some("b"));
            let mine = new_areas(&before, &areas_mapped());
            assert_eq!(mine.len(), 1, "one area: {mine:?}");
            // A request over the area's slot, then an answer over it.
            let big = "x".repeat(200_000);
            d.set("big".into(), big.clone()).unwrap();
            assert_eq!(d.get(&"big".into()).unwrap(), Some(big));
            assert_eq!(d.len().unwrap(), 2);
            // Forced onto the socket: no area for that connection.
            let before = areas_mapped();
            let s =
                Manager::connect_with(m.address().clone(), m.authkey(), Transport::Socket).unwrap();
            let d = s.dict::<u32, u32>().unwrap();
            d.set(1, 2).unwrap();
            assert_eq!(d.get(&1).unwrap(), Some(2));
            assert_eq!(areas_mapped(), before, "no new area");
        });
    });
}

#[test]
fn a_forked_child_never_uses_its_parents_area() {
    watchdog("fork", LIMIT, || {
        alone(|| {
            let before = areas_mapped();
            let m = Manager::start().unwrap();
            let d = m.dict::<u32, u32>().unwrap();
            d.set(0, 0).unwrap();
            let parents = new_areas(&before, &areas_mapped());
            assert_eq!(parents.len(), 1);
            let theirs = d.clone();
            let kid = static_child(move || {
                for i in 1..100 {
                    theirs.set(i, i).unwrap();
                }
                let now = areas_mapped();
                assert!(
                    !now.contains(&parents[0]),
                    "the parent's area is unmapped here"
                );
                assert_eq!(new_areas(&before, &now).len(), 1, "one of its own");
            });
            assert_eq!(join(&kid, LIMIT), 0);
            assert_eq!(d.len().unwrap(), 100);
            assert_eq!(d.get(&99).unwrap(), Some(99));
        });
    });
}

#[test]
fn a_dead_server_gives_manager_gone_never_a_hang() {
    watchdog("dead server", LIMIT, || {
        let m = Manager::start().unwrap();
        let path = socket_path(&m);
        let d = m.dict::<u32, u32>().unwrap();
        d.set(1, 1).unwrap();
        let pid = m.server_pid().unwrap();
        // SAFETY: signalling the server process this test started.
        assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGKILL) }, 0);
        let e = loop {
            // Until the kill lands, calls may still be answered.
            match d.get(&1) {
                Ok(_) => std::thread::yield_now(),
                Err(e) => break e,
            }
        };
        assert!(matches!(e, Error::ManagerGone(_)), "{e}");
        drop(d);
        drop(m);
        let _ = std::fs::remove_file(path);
    });
}

#[test]
fn a_client_killed_mid_request_disturbs_no_one() {
    watchdog("killed clients", LIMIT, || {
        let m = Manager::start().unwrap();
        let d = m.dict::<u32, u64>().unwrap();
        d.set(0, 0).unwrap();
        for round in 0..5u64 {
            let theirs = d.clone();
            let busy = static_child(move || loop {
                theirs.increment(&1, 1).unwrap();
            });
            assert!(wait_until(LIMIT, || d.get(&1).unwrap().unwrap_or(0) > round * 10));
            std::thread::sleep(Duration::from_micros(round * 300));
            busy.kill().unwrap();
            join(&busy, LIMIT);
            d.increment(&0, 1).unwrap();
        }
        assert_eq!(d.get(&0).unwrap(), Some(5));
        // Every killed client's references went with its connection.
        assert!(wait_until(LIMIT, || m.number_of_objects().unwrap() == 1));
    });
}

#[test]
fn hostile_areas_cost_their_client_only() {
    watchdog("hostile areas", LIMIT, || {
        let m = Manager::start().unwrap();
        let d = m.dict::<u32, u32>().unwrap();
        d.set(1, 1).unwrap();
        let raw = RawArea::open(&m, false).expect("an area");
        // Its size is sealed: the server's mapping can never fault.
        let truncate = |len| {
            // SAFETY: a plain syscall on a descriptor we own.
            unsafe { libc::ftruncate(raw.memfd.as_raw_fd(), len) }
        };
        assert_eq!(truncate(0), -1);
        assert_eq!(truncate(1 << 30), -1);
        // A second area on the same connection is refused.
        raw.conn_send(SETUP);
        assert!(recv_fds(&raw.conn).is_empty(), "one area per connection");
        // Garbage in the area: an error answer, through the area.
        raw.request(&[0xff; 10], 10);
        assert!(wait_until(LIMIT, || raw
            .word(ANSWER_SEQ)
            .load(Ordering::SeqCst)
            == raw.word(REQUEST_SEQ).load(Ordering::SeqCst)));
        let answer = raw.read_answer();
        assert!(answer.windows(10).any(|w| w == b"#TRACEBACK"), "{answer:?}");
        // Bytes changing under the server while others are served.
        let stop = AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| {
                let mut i = 0u32;
                while !stop.load(Ordering::Relaxed) {
                    i = i.wrapping_add(1);
                    let req = common_request(i);
                    raw.request(&req, (req.len() as u32) ^ (i & 3));
                    // A flood on the doorbell too.
                    for _ in 0..16 {
                        raw.ring();
                    }
                }
            });
            for i in 0..500 {
                d.set(2, i).unwrap();
                assert_eq!(d.get(&1).unwrap(), Some(1));
            }
            stop.store(true, Ordering::Relaxed);
        });
        // A length beyond the slot ends that client's connection only.
        raw.request(b"", u32::MAX);
        let mut conn = raw.conn_take();
        assert!(matches!(conn.recv_bytes(), Err(Error::ConnectionClosed)));
        assert_eq!(d.get(&1).unwrap(), Some(1));
        assert_eq!(m.number_of_objects().unwrap(), 1);
    });
}

/// A well-formed request `(None, 'number_of_objects', (), {})`, or every
/// so often a few of its bytes flipped.
fn common_request(i: u32) -> Vec<u8> {
    let mut req = b"\x80\x02(NX\x11\x00\x00\x00number_of_objects)}t.".to_vec();
    if i % 3 == 0 {
        let at = (i as usize / 3) % req.len();
        req[at] ^= (i >> 8) as u8 | 1;
    }
    req
}

impl RawArea {
    fn conn_send(&self, bytes: &[u8]) {
        let mut frame = (bytes.len() as u32).to_be_bytes().to_vec();
        frame.extend(bytes);
        // SAFETY: a write of a valid buffer on our own socket.
        let n = unsafe {
            libc::send(
                self.conn.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                libc::MSG_NOSIGNAL,
            )
        };
        assert_eq!(n as usize, frame.len());
    }

    fn conn_take(self) -> Connection {
        let fd = self.conn.as_raw_fd();
        // SAFETY: a new descriptor for the same socket, owned by the result.
        let dup = unsafe { libc::dup(fd) };
        assert!(dup >= 0);
        // SAFETY: `dup` is ours alone.
        Connection::from_socket(unsafe { OwnedFd::from_raw_fd(dup) }).unwrap()
    }
}

/// A client that hangs up its doorbell (shuts it down, or closes it) after
/// using its area breaks the protocol: its doorbell would stay readable for
/// good and keep the server's poll from ever sleeping. The server ends that
/// client (its socket reads end of file) and goes on serving the others.
#[test]
fn a_hung_up_doorbell_ends_its_client_only() {
    watchdog("doorbell hang-up", LIMIT, || {
        let m = Manager::start().unwrap();
        let d = m.dict::<u32, u32>().unwrap();
        for close in [false, true] {
            let raw = RawArea::open(&m, false).expect("an area");
            let request = common_request(0);
            raw.request(&request, request.len() as u32);
            assert!(wait_until(LIMIT, || raw
                .word(ANSWER_SEQ)
                .load(Ordering::SeqCst)
                == 1));
            if close {
                // The socket closed, its number kept (owned by `raw`).
                let null = std::fs::File::open("/dev/null").unwrap();
                // SAFETY: dup2 onto a descriptor `raw` owns, which stays open.
                let r = unsafe { libc::dup2(null.as_raw_fd(), raw.doorbell.as_raw_fd()) };
                assert!(r >= 0);
            } else {
                // SAFETY: shutdown of a socket `raw` owns.
                unsafe { libc::shutdown(raw.doorbell.as_raw_fd(), libc::SHUT_RDWR) };
            }
            let mut conn = raw.conn_take();
            assert!(
                conn.recv_bytes_timeout(LIMIT).is_err(),
                "the server ends a client whose doorbell hung up"
            );
            d.set(1, 2).unwrap();
            assert_eq!(d.get(&1).unwrap(), Some(2));
        }
    });
}

/// A client process out of descriptors cannot receive its area's two: it
/// stays on its socket, and its calls work.
#[test]
fn a_client_out_of_descriptors_stays_on_its_socket() {
    watchdog("client out of descriptors", LIMIT, || {
        let m = Manager::start().unwrap();
        let (address, key) = (m.address().clone(), m.authkey().to_vec());
        let child = static_child(move || {
            common::lower_nofile(256);
            let mut held = common::fill_descriptors();
            // One for the socket, one to spare: too few for the area's two
            // and what its mapping takes.
            held.truncate(held.len() - 2);
            let result = Manager::connect(address, &key).and_then(|m| {
                let d = m.dict::<u32, u32>()?;
                d.set(1, 1)?;
                d.get(&1)
            });
            std::process::exit(if matches!(result, Ok(Some(1))) { 0 } else { 3 });
        });
        assert_eq!(join(&child, LIMIT), 0);
    });
}

/// A server (hostile, or broken) that grants an area whose memory file is
/// shorter than an area, or not sealed against shrinking, never makes its
/// client fault: the client stays on its socket.
#[test]
fn a_short_or_unsealed_area_from_a_server_is_refused() {
    watchdog("hostile server", LIMIT, || {
        for short in [true, false] {
            let path = std::env::temp_dir().join(format!(
                "multiproc-test-fast-{}-{short}.sock",
                std::process::id()
            ));
            let address = Address::Unix(path.clone());
            let key = b"fast path test key".to_vec();
            let listener = multiproc::conn::Listener::bind(&address, Some(&key)).unwrap();
            let child = static_child(move || {
                let result = Manager::connect(address, &key).and_then(|m| m.number_of_objects());
                std::process::exit(if matches!(result, Ok(0)) { 0 } else { 3 });
            });
            let mut conn = listener.accept().unwrap();
            let none: &[u8] = b"\x80\x02X\x07\x00\x00\x00#RETURNN\x86.";
            let zero: &[u8] = b"\x80\x02X\x07\x00\x00\x00#RETURNK\x00\x86.";
            let grant: &[u8] =
                b"\x80\x02X\x07\x00\x00\x00#RETURN(K\x01J\x00\x00\x01\x00J\x00\x00\x01\x00t\x86.";
            while let Ok(request) = conn.recv_bytes() {
                if request.windows(19).any(|w| w == b"_multiproc_fastpath") {
                    // SAFETY: memfd_create only makes a new descriptor.
                    let fd = unsafe { libc::memfd_create(c"short".as_ptr(), libc::MFD_CLOEXEC) };
                    assert!(fd >= 0);
                    // SAFETY: `fd` is new, and ours alone.
                    let memfd = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
                    // Either a page long, or long enough but unsealed.
                    memfd
                        .set_len(if short { 4096 } else { AREA_LEN as u64 })
                        .unwrap();
                    let (_ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
                    send_frame_with_fds(&conn, grant, &[memfd.as_raw_fd(), theirs.as_raw_fd()]);
                } else if request.windows(17).any(|w| w == b"number_of_objects") {
                    conn.send_bytes(zero).unwrap();
                } else {
                    conn.send_bytes(none).unwrap();
                }
            }
            let _ = std::fs::remove_file(&path);
            assert_eq!(join(&child, LIMIT), 0, "short: {short}");
        }
    });
}

/// Audit of issue 12.2 over the fast path: values nested just within,
/// at, and beyond the limit, sent through a client's area (and the
/// socket, for the larger), each get an answer; the server goes on.
#[test]
fn nesting_through_the_area_is_bounded_as_on_the_socket() {
    use multiproc::manager::{PyValue, MAX_DEPTH};
    // The client's conversion recurses per level: a debug build needs more
    // than a spawned thread's 2 MiB for the deepest values a server takes.
    // A value 50,000 deep overflowed even 64 MiB before the conversion
    // refused what no server takes (a client's own crash, found by this
    // audit).
    let big_stack = |f: fn()| {
        std::thread::Builder::new()
            .stack_size(64 << 20)
            .spawn(f)
            .unwrap()
            .join()
            .unwrap()
    };
    watchdog("deep fast", LIMIT, move || {
        big_stack(|| {
            let m = Manager::start().unwrap();
            let l = m.list::<PyValue>().unwrap();
            let nested = |depth: usize| {
                let mut v = PyValue::Int(1);
                for _ in 0..depth - 1 {
                    v = PyValue::List(vec![v]);
                }
                v
            };
            let mut stored = 0;
            for depth in [
                MAX_DEPTH - 2,
                MAX_DEPTH - 1,
                MAX_DEPTH,
                MAX_DEPTH + 1,
                50_000,
            ] {
                match l.append(nested(depth)) {
                    Ok(()) => stored += 1,
                    Err(e) => assert!(
                        format!("{e:?}").contains("Recursion") || format!("{e:?}").contains("deep"),
                        "{depth}: {e:?}"
                    ),
                }
                assert_eq!(l.len().unwrap(), stored, "after {depth}");
            }
            assert!(stored >= 2, "the values within the limit are stored");
            // Every walk of the stored deep values: snapshot, repr, compare,
            // sort, count; then their drop.
            let _ = l.to_vec();
            let _ = format!("{l:?}");
            let _ = l.sort();
            let _ = l.count(&nested(MAX_DEPTH - 1));
            l.clear().unwrap();
            let d = m.dict::<u8, u8>().unwrap();
            d.set(1, 1).unwrap();
            assert_eq!(d.get(&1).unwrap(), Some(1), "still serving");
        })
    });
}

/// More fast-path clients than CPUs (8 on this 2-core machine), each
/// calling in bursts with pauses between them (so that the server goes
/// to sleep and wakes, its `server_asleep` flag set and cleared under
/// the clients' publishes): every call is answered, none is lost (a lost
/// wake-up would hang a client until the watchdog), no client starves.
#[test]
fn more_clients_than_cpus_all_progress() {
    const CLIENTS: u32 = 8;
    const CALLS: u64 = 1500;
    watchdog("many clients", LIMIT, || {
        let m = Manager::start().unwrap();
        let d = m.dict::<u32, u64>().unwrap();
        d.set(0, 0).unwrap();
        let kids: Vec<_> = (0..CLIENTS)
            .map(|i| {
                let theirs = d.clone();
                static_child(move || {
                    for call in 0..CALLS {
                        theirs.increment(&i, 1).unwrap();
                        if call % 50 == 0 {
                            // An idle gap of a few hundred microseconds:
                            // long enough for the server to sleep.
                            std::thread::sleep(Duration::from_micros(100 * u64::from(i % 4)));
                        }
                    }
                })
            })
            .collect();
        for kid in &kids {
            assert_eq!(join(kid, LIMIT), 0);
        }
        for i in 0..CLIENTS {
            assert_eq!(d.get(&i).unwrap(), Some(CALLS), "client {i}");
        }
    });
}
