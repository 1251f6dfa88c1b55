//! The Rust client of the managed layer against a hostile, slow or dying
//! server (a fake one in this process, speaking just enough of the
//! protocol), and under concurrency of its own: every answer gives a clear
//! error, never a panic, a hang or unbounded memory.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::pickle::{s, P};
use common::watchdog;
use multiproc::conn::{Address, Connection, Listener};
use multiproc::manager::{Manager, PyValue, Transport};
use multiproc::Error;

const LIMIT: Duration = Duration::from_secs(120);
const KEY: &[u8] = b"client attack key";

/// A pickle (protocol 2) of `(kind, result)`.
fn reply(kind: &str, result: P) -> Vec<u8> {
    let mut out = vec![0x80, 2];
    P::Tuple(vec![s(kind), result]).write(&mut out);
    out.push(b'.');
    out
}

/// A pickle (protocol 2) whose body (after `PROTO 2`) is `body`, then `STOP`.
fn raw(body: &[u8]) -> Vec<u8> {
    [&[0x80, 2][..], body, b"."].concat()
}

/// `Token(typeid, address, ident)` as CPython pickles it (protocol 2).
fn token(typeid: P, address: P, ident: P) -> P {
    let mut out = b"cmultiprocessing.managers\nToken\n)\x81".to_vec();
    P::Tuple(vec![typeid, address, ident]).write(&mut out);
    out.push(b'b');
    P::Raw(out)
}

/// What a fake server does with one request of a call (not one of the
/// connection's first requests, nor `create`, `incref`, `decref`).
#[derive(Clone)]
enum Act {
    /// Sends these frames' bytes as they are (headers included).
    Send(Vec<u8>),
    /// Never answers (keeps the connection open).
    Stall,
    /// Sends these bytes, then closes the connection.
    SendClose(Vec<u8>),
    /// Grants a fast-path area (as multiproc's server does), and never
    /// serves it.
    Grant,
}

/// One frame (a 4-byte big-endian header, then `bytes`).
fn frame(bytes: &[u8]) -> Vec<u8> {
    [&(bytes.len() as u32).to_be_bytes()[..], bytes].concat()
}

/// A fake manager server on a fresh Unix socket: it answers each
/// connection's first requests as multiproc's server does (without a
/// fast-path area) if `holds`, as CPython's does otherwise; `create` with
/// object `1`; `incref` and `decref` with `None` (recording them); any
/// other request as `act` says.
struct Fake {
    address: Address,
    path: std::path::PathBuf,
    /// The methods of the requests it got, in order.
    seen: Arc<Mutex<Vec<String>>>,
    /// Stops the accept loop at the next connection.
    stop: Arc<AtomicBool>,
}

const METHODS: [&str; 9] = [
    "accept_connection",
    "_multiproc_hold",
    "_multiproc_fastpath",
    "_multiproc_batch",
    "number_of_objects",
    "create",
    "incref",
    "decref",
    "shutdown",
];

static FAKES: AtomicU32 = AtomicU32::new(0);

impl Fake {
    fn start(holds: bool, act: impl Fn(&str, &[u8]) -> Act + Send + Sync + 'static) -> Fake {
        Fake::start_with(holds, |_| None, act)
    }

    /// [`start`](Fake::start), with `first(method)` answering the
    /// connection's first requests (and `number_of_objects`) when it says.
    fn start_with(
        holds: bool,
        first: impl Fn(&str) -> Option<Act> + Send + Sync + 'static,
        act: impl Fn(&str, &[u8]) -> Act + Send + Sync + 'static,
    ) -> Fake {
        let path = std::env::temp_dir().join(format!(
            "multiproc-client-attack-{}-{}.sock",
            std::process::id(),
            FAKES.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_file(&path);
        let address = Address::Unix(path.clone());
        let listener = Listener::bind(&address, Some(KEY)).unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (act, first) = (Arc::new(act), Arc::new(first));
        {
            let (seen, stop) = (seen.clone(), stop.clone());
            std::thread::spawn(move || {
                while let Ok(conn) = listener.accept() {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let (seen, act, first) = (seen.clone(), act.clone(), first.clone());
                    std::thread::spawn(move || serve(conn, holds, &seen, &*first, &*act));
                }
            });
        }
        Fake {
            address,
            path,
            seen,
            stop,
        }
    }

    fn connect(&self) -> multiproc::Result<Manager> {
        Manager::connect_with(self.address.clone(), KEY, Transport::Auto)
    }

    fn seen(&self, method: &str) -> usize {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|m| *m == method)
            .count()
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop.
        let _ = std::os::unix::net::UnixStream::connect(&self.path);
        let _ = std::fs::remove_file(&self.path);
    }
}

fn serve(
    mut conn: Connection,
    holds: bool,
    seen: &Mutex<Vec<String>>,
    first: &(dyn Fn(&str) -> Option<Act> + Send + Sync),
    act: &(dyn Fn(&str, &[u8]) -> Act + Send + Sync),
) {
    while let Ok(request) = conn.recv_bytes() {
        let method = METHODS
            .iter()
            .find(|m| request.windows(m.len()).any(|w| w == m.as_bytes()))
            .copied()
            .unwrap_or("call");
        seen.lock().unwrap().push(method.to_string());
        let standard = match method {
            "accept_connection" | "_multiproc_fastpath" | "incref" | "decref" | "shutdown" => {
                Some(reply("#RETURN", P::None))
            }
            "_multiproc_hold" if holds => Some(reply("#RETURN", P::None)),
            "_multiproc_hold" => Some(reply("#TRACEBACK", s("no such method"))),
            "number_of_objects" => Some(reply("#RETURN", P::Int(0))),
            "create" => Some(reply(
                "#RETURN",
                P::Tuple(vec![s("1"), P::Tuple(Vec::new())]),
            )),
            _ => None,
        };
        let todo = match first(method) {
            Some(a) => a,
            None => match standard {
                Some(bytes) => Act::Send(frame(&bytes)),
                None => act(method, &request),
            },
        };
        match todo {
            Act::Send(bytes) => {
                if std::io::Write::write_all(&mut &raw_socket(&conn), &bytes).is_err() {
                    return;
                }
            }
            Act::Stall => loop {
                std::thread::park();
            },
            Act::Grant => grant_area(&conn),
            Act::SendClose(bytes) => {
                let _ = std::io::Write::write_all(&mut &raw_socket(&conn), &bytes);
                return;
            }
        }
    }
}

/// Grants a fast-path area on `conn`: a sealed memory file of an area's
/// size and a doorbell, in one frame with the answer that grants them.
fn grant_area(conn: &Connection) {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    const AREA_LEN: u64 = 4096 + (128 << 10);
    // SAFETY: memfd_create only makes a new descriptor.
    let fd = unsafe {
        libc::memfd_create(
            c"area".as_ptr(),
            libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
        )
    };
    assert!(fd >= 0);
    // SAFETY: `fd` is new, and ours alone.
    let memfd = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    memfd.set_len(AREA_LEN).unwrap();
    // SAFETY: sealing a descriptor of ours.
    let r = unsafe {
        libc::fcntl(
            fd,
            libc::F_ADD_SEALS,
            libc::F_SEAL_SHRINK | libc::F_SEAL_GROW,
        )
    };
    assert_eq!(r, 0);
    let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    // The doorbell stays open for as long as the test runs.
    std::mem::forget(ours);
    let grant: &[u8] =
        b"\x80\x02X\x07\x00\x00\x00#RETURN(K\x01J\x00\x00\x01\x00J\x00\x00\x01\x00t\x86.";
    common::fastpath::send_frame_with_fds(conn, grant, &[memfd.as_raw_fd(), theirs.as_raw_fd()]);
}

/// The connection's socket, to write raw bytes on (past its framing).
fn raw_socket(conn: &Connection) -> std::fs::File {
    let fd = std::os::fd::AsRawFd::as_raw_fd(conn);
    // SAFETY: a duplicate of the connection's socket, closed when the
    // `File` is dropped.
    let dup = unsafe { libc::dup(fd) };
    assert!(dup >= 0);
    // SAFETY: `dup` is ours alone.
    unsafe { std::os::fd::FromRawFd::from_raw_fd(dup) }
}

/// A call on a dict proxy of a fake server that answers `answer`: what it
/// gives, within `limit`.
fn get_answered<V: serde::Serialize + serde::de::DeserializeOwned>(
    holds: bool,
    answer: Act,
) -> multiproc::Result<Option<V>> {
    let fake = Fake::start(holds, move |_, _| answer.clone());
    let m = fake.connect()?;
    let d = m.dict::<i64, V>()?;
    d.get(&1)
}

/// Answers of every hostile shape to one call: each is a clear error (or
/// a value, where the answer is one), at once, without a panic.
#[test]
fn hostile_answers_give_clear_errors() {
    let nested = |n: usize| {
        let mut b = b"X\x07\x00\x00\x00#RETURN".to_vec();
        b.extend(std::iter::repeat_n(b']', n));
        b.extend(std::iter::repeat_n(b'a', n - 1));
        b.push(0x86);
        frame(&raw(&b))
    };
    // A list that contains itself: `l = []; l.append(l)`.
    let itself = frame(&raw(b"X\x07\x00\x00\x00#RETURN]q\x00h\x00a\x86"));
    // A memo bomb: each list holds the one before twice, 60 times.
    let bomb = {
        let mut b = b"X\x07\x00\x00\x00#RETURN]q\x00".to_vec();
        for _ in 0..60 {
            b.extend(b"(h\x00h\x00lq\x00");
        }
        b.push(0x86);
        frame(&raw(&b))
    };
    let proxy = |t: P| frame(&reply("#PROXY", P::Tuple(vec![P::Tuple(Vec::new()), t])));
    // A value nested `n` deep as the result of a `kind` reply.
    let deep_reply = |kind: &str, n: usize| {
        let mut b = vec![b'X'];
        b.extend((kind.len() as u32).to_le_bytes());
        b.extend(kind.as_bytes());
        b.extend(std::iter::repeat_n(b']', n));
        b.extend(std::iter::repeat_n(b'a', n - 1));
        b.push(0x86);
        frame(&raw(&b))
    };
    // `#ERROR` of `KeyError(<a list nested n deep>)`.
    let deep_error = |n: usize| {
        let mut b = b"X\x06\x00\x00\x00#ERRORcbuiltins\nKeyError\n".to_vec();
        b.extend(std::iter::repeat_n(b']', n));
        b.extend(std::iter::repeat_n(b'a', n - 1));
        b.extend(b"\x85R\x86");
        frame(&raw(&b))
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("deep traceback", deep_reply("#TRACEBACK", 490)),
        ("deep error", deep_error(490)),
        ("deep unknown kind", deep_reply("#WHAT", 490)),
        ("huge 8-byte length", {
            let mut b = vec![0xff; 4];
            b.extend((1u64 << 40).to_be_bytes());
            b
        }),
        ("2 GiB length", 0x7fff_ffffu32.to_be_bytes().to_vec()),
        ("negative length", 0x8000_0000u32.to_be_bytes().to_vec()),
        ("truncated then closed", {
            let mut b = 1000u32.to_be_bytes().to_vec();
            b.extend([0x80; 10]);
            b
        }),
        ("empty frame", frame(b"")),
        ("garbage", frame(b"\x00\x01\x02garbage")),
        ("no stop", frame(&[0x80, 2, b'N'])),
        ("deep", nested(100_000)),
        ("at the limit", nested(490)),
        ("itself", itself),
        ("bomb", bomb),
        (
            "wrong type",
            frame(&reply("#RETURN", P::List(vec![P::Int(1)]))),
        ),
        ("three-tuple", {
            let mut b = vec![0x80, 2];
            P::Tuple(vec![s("#RETURN"), P::None, P::None]).write(&mut b);
            b.push(b'.');
            frame(&b)
        }),
        ("kind an int", {
            let mut b = vec![0x80, 2];
            P::Tuple(vec![P::Int(1), P::None]).write(&mut b);
            b.push(b'.');
            frame(&b)
        }),
        ("unknown kind", frame(&reply("#WHAT", P::None))),
        ("error of an int", frame(&reply("#ERROR", P::Int(5)))),
        (
            "error of a list",
            frame(&reply("#ERROR", P::List(vec![s("x"); 3]))),
        ),
        (
            "traceback of a dict",
            frame(&reply("#TRACEBACK", P::Dict(vec![(s("a"), P::None)]))),
        ),
        ("proxy of an int", frame(&reply("#PROXY", P::Int(1)))),
        ("proxy of ()", frame(&reply("#PROXY", P::Tuple(Vec::new())))),
        ("unknown typeid", proxy(token(s("NoSuch"), s("/x"), s("1")))),
        ("typeid an int", proxy(token(P::Int(1), s("/x"), s("1")))),
        ("bad ident", proxy(token(s("dict"), s("/x"), s("zz")))),
        (
            "ident too long",
            proxy(token(s("dict"), s("/x"), s("1ffffffffffffffffff"))),
        ),
        ("negative ident", proxy(token(s("dict"), s("/x"), s("-1")))),
        (
            "absurd address",
            proxy(token(s("dict"), P::List(vec![P::Int(-1); 1000]), s("2"))),
        ),
        (
            "a dict proxy",
            proxy(token(s("dict"), s("/nowhere"), s("3"))),
        ),
        (
            "a list proxy",
            proxy(token(
                s("list"),
                P::Tuple(vec![s("host"), P::Int(99999)]),
                s("4"),
            )),
        ),
    ];
    watchdog("hostile answers", LIMIT, || {
        for holds in [true, false] {
            for (name, answer) in &cases {
                if std::env::var("ONLY").is_ok_and(|o| o != *name) {
                    continue;
                }
                let started = Instant::now();
                let act = if name.ends_with("closed") {
                    Act::SendClose(answer.clone())
                } else {
                    Act::Send(answer.clone())
                };
                let r = std::thread::scope(|s| {
                    s.spawn(|| {
                        if *name == "at the limit" {
                            get_answered::<PyValue>(holds, act).map(|v| v.map(|_| 0))
                        } else {
                            get_answered::<i64>(holds, act)
                        }
                    })
                    .join()
                });
                let r = r.unwrap_or_else(|_| panic!("{name}: the client panicked"));
                assert!(
                    started.elapsed() < Duration::from_secs(10),
                    "{name}: {:?}",
                    started.elapsed()
                );
                let shown = format!("{r:?}");
                eprintln!("{holds} {name}: {}", &shown[..shown.len().min(200)]);
                if *name == "at the limit" {
                    assert!(
                        matches!(&r, Ok(Some(_)))
                            || matches!(&r, Err(Error::Deserialize(m)) if m.contains("stack")),
                        "{name}: {r:?}"
                    );
                } else {
                    assert!(r.is_err(), "{name}: {r:?}");
                }
            }
        }
    });
}

/// A list nested `n` deep, around an int.
fn nested_value(n: usize) -> PyValue {
    (0..n).fold(PyValue::Int(7), |v, _| PyValue::List(vec![v]))
}

/// A value nested as deep as the server stores, read back on a thread
/// with the default stack of a spawned thread (2 MiB): the client
/// decodes it, or says it cannot on that stack (and a `pop` puts it
/// back); it never overflows the stack, which aborts the process. (In a
/// debug build, converting an answer took about 6 KiB of stack a level:
/// 480 levels overflowed.) On a larger stack, it reads back whole.
#[test]
fn a_deep_value_reads_back_on_a_spawned_threads_stack() {
    watchdog("deep value", LIMIT, || {
        let m = Manager::start().unwrap();
        let d = m.dict::<i64, PyValue>().unwrap();
        let l = m.list::<PyValue>().unwrap();
        let depth = (400..=multiproc::manager::MAX_DEPTH)
            .rev()
            .step_by(10)
            .find(|&n| d.set(1, nested_value(n)).is_ok())
            .expect("the server stores a value 400 levels deep");
        l.append(nested_value(depth)).unwrap();
        let deep = nested_value(depth);
        let ok_or_no_stack = |r: &multiproc::Result<PyValue>| match r {
            Ok(v) => *v == deep,
            Err(Error::Deserialize(m)) => m.contains("stack"),
            Err(_) => false,
        };
        std::thread::scope(|s| {
            s.spawn(|| {
                let got = d.get(&1).map(|v| v.expect("stored"));
                assert!(ok_or_no_stack(&got), "get: {got:?}");
                eprintln!("{depth} levels on 2 MiB: read back whole: {}", got.is_ok());
                let popped = l.pop(0);
                assert!(ok_or_no_stack(&popped), "pop: {popped:?}");
                if popped.is_err() {
                    assert_eq!(l.len().unwrap(), 1, "the value was put back");
                }
            })
            .join()
            .expect("the reader did not panic");
        });
        let big = std::thread::Builder::new().stack_size(64 << 20);
        let (got, len) = std::thread::scope(|s| {
            big.spawn_scoped(s, || (d.get(&1), l.len()))
                .unwrap()
                .join()
                .unwrap()
        });
        assert!(got.unwrap() == Some(deep.clone()));
        assert!(matches!(len, Ok(0 | 1)));
    });
}

/// A server that takes the key and answers the connection's first
/// requests, but never the first call `connect` makes: `connect` says
/// the server does not answer (its documented 20 s), rather than wait
/// for ever; as CPython's server (the server-level call on a short
/// connection of its own) and as multiproc's (on the long connection, or
/// through the fast-path area it granted).
#[test]
fn connect_to_a_server_that_never_answers_fails_in_time() {
    watchdog("connect to a mute server", LIMIT, || {
        std::thread::scope(|s| {
            for (holds, area) in [(true, false), (false, false), (true, true)] {
                s.spawn(move || {
                    let fake = Fake::start_with(
                        holds,
                        move |method| match method {
                            "number_of_objects" => Some(Act::Stall),
                            "_multiproc_fastpath" if area => Some(Act::Grant),
                            _ => None,
                        },
                        |_, _| Act::Stall,
                    );
                    let started = Instant::now();
                    let r = fake.connect();
                    let took = started.elapsed();
                    assert!(
                        matches!(r, Err(Error::ManagerGone(_))),
                        "holds {holds}: {r:?}"
                    );
                    assert!(took < Duration::from_secs(40), "holds {holds}: {took:?}");
                    // Through the area, the request never came on the socket.
                    assert_eq!(fake.seen("number_of_objects"), usize::from(!area));
                });
            }
        });
    });
}

/// Many threads share one proxy (and so one connection): each makes
/// mixed calls, clones the proxy and drops its clones, and reads back
/// proxies nested in a list that other threads clear and refill. Every
/// call answers its own caller, every proxy read back works, and once all
/// are dropped the server holds nothing.
#[test]
fn threads_sharing_proxies_and_nested_ones_keep_counts_right() {
    watchdog("shared proxies", LIMIT, || {
        let m = Manager::start().unwrap();
        let d = m.dict::<u32, u64>().unwrap();
        let nested = m.list::<multiproc::manager::DictProxy<u32, u64>>().unwrap();
        nested.append(m.dict().unwrap()).unwrap();
        std::thread::scope(|s| {
            for t in 0..6u32 {
                let (d, nested, m) = (&d, &nested, &m);
                s.spawn(move || {
                    for i in 0..150u32 {
                        let key = t * 1000 + i;
                        let mine = d.clone();
                        mine.set(key, u64::from(key)).unwrap();
                        assert_eq!(d.get(&key).unwrap(), Some(u64::from(key)));
                        assert_eq!(d.increment(&(t + 100_000), 1).unwrap(), u64::from(i) + 1);
                        drop(mine);
                        match t % 3 {
                            // A reader: whatever it reads back is alive.
                            0 => {
                                if let Ok(inner) = nested.get(0) {
                                    inner.set(key, 1).unwrap();
                                    assert_eq!(inner.get(&key).unwrap(), Some(1));
                                }
                            }
                            // A writer: replaces the nested dict.
                            1 => {
                                let fresh = m.dict::<u32, u64>().unwrap();
                                let _ = nested.pop(0);
                                nested.append(fresh.clone()).unwrap();
                                drop(fresh);
                            }
                            _ => {
                                let _ = nested.to_vec();
                                let _ = d.len().unwrap();
                            }
                        }
                    }
                });
            }
        });
        for t in 0..6u32 {
            assert_eq!(d.get(&(t + 100_000)).unwrap(), Some(150));
        }
        drop((d, nested));
        assert_eq!(m.number_of_objects().unwrap(), 0);
    });
}

/// A manager shut down while other threads call its proxies: each call
/// answers or gives `ManagerGone`, none hangs or panics; the proxies are
/// dropped afterwards without hanging, and a proxy used after the
/// shutdown says `ManagerGone` at once.
#[test]
fn shutdown_while_threads_call_fails_them_cleanly() {
    watchdog("shutdown under callers", LIMIT, || {
        for transport in [Transport::Auto, Transport::Socket] {
            let mut m = Manager::start().unwrap();
            let other = Manager::connect_with(m.address().clone(), m.authkey(), transport).unwrap();
            let d = other.dict::<u32, u32>().unwrap();
            let calls = AtomicU32::new(0);
            std::thread::scope(|s| {
                for t in 0..4u32 {
                    let (d, calls) = (&d, &calls);
                    s.spawn(move || {
                        let mut mine = Vec::new();
                        loop {
                            calls.fetch_add(1, Ordering::SeqCst);
                            let r = d.set(t, 1).and_then(|()| {
                                mine.push(d.clone());
                                d.get(&t)
                            });
                            match r {
                                Ok(v) => assert_eq!(v, Some(1)),
                                Err(Error::ManagerGone(_)) => break,
                                Err(e) => panic!("{e:?}"),
                            }
                        }
                        let started = Instant::now();
                        drop(mine);
                        assert!(started.elapsed() < Duration::from_secs(10));
                    });
                }
                assert!(common::wait_until(LIMIT, || calls.load(Ordering::SeqCst) > 200));
                m.shutdown().unwrap();
            });
            let started = Instant::now();
            assert!(matches!(d.len(), Err(Error::ManagerGone(_))));
            assert!(matches!(other.dict::<u8, u8>(), Err(Error::ManagerGone(_))));
            drop(d);
            drop(other);
            assert!(started.elapsed() < Duration::from_secs(10));
        }
    });
}

/// A proxy of one manager's object stored in another manager's container
/// must not come back as a proxy of some other object of the second
/// manager (its ids are its own): it is refused, or reads back as the
/// first manager's object.
#[test]
fn a_proxy_of_another_manager_is_not_taken_for_one_of_this_one() {
    watchdog("foreign proxy", LIMIT, || {
        let a = Manager::start().unwrap();
        let b = Manager::start().unwrap();
        let theirs = a.dict::<u32, u32>().unwrap();
        theirs.set(1, 111).unwrap();
        // B's objects, one of which may have the id of A's dict.
        let ours: Vec<_> = (0..4).map(|_| b.dict::<u32, u32>().unwrap()).collect();
        for d in &ours {
            d.set(1, 222).unwrap();
        }
        let l = b.list::<multiproc::manager::DictProxy<u32, u32>>().unwrap();
        let stored = l.append(theirs.clone());
        eprintln!("stored: {stored:?}");
        if stored.is_ok() {
            let back = l.get(0).unwrap();
            let seen = back.get(&1);
            eprintln!("read back: {seen:?}");
            assert!(
                !matches!(seen, Ok(Some(222))),
                "A's proxy read back as one of B's objects"
            );
        }
    });
}

/// Relays every connection made to `front` to `back`, both ways, each
/// direction until its end; `answered` is called once each client has
/// sent its first bytes (its answer to the server's challenge: it then
/// waits for the server's welcome, in the middle of its handshake),
/// before they are passed on.
fn relay(
    front: std::os::unix::net::UnixListener,
    back: std::path::PathBuf,
    answered: impl Fn() + Send + Sync + 'static,
) {
    use std::io::{Read as _, Write as _};
    use std::os::unix::net::UnixStream;
    let answered = Arc::new(answered);
    std::thread::spawn(move || {
        while let Ok((client, _)) = front.accept() {
            let Ok(server) = UnixStream::connect(&back) else {
                return;
            };
            let (mut from_server, mut to_client) =
                (server.try_clone().unwrap(), client.try_clone().unwrap());
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut from_server, &mut to_client);
                let _ = to_client.shutdown(std::net::Shutdown::Write);
            });
            let answered = answered.clone();
            let (mut from_client, mut to_server) = (client, server);
            std::thread::spawn(move || {
                let mut first = [0; 4096];
                let n = from_client.read(&mut first).unwrap_or(0);
                answered();
                if to_server.write_all(&first[..n]).is_ok() && n > 0 {
                    let _ = std::io::copy(&mut from_client, &mut to_server);
                }
                let _ = to_server.shutdown(std::net::Shutdown::Write);
            });
        }
    });
}

/// A process forked (by `fork` itself) while another thread of its
/// parent is in the handshake of its first connection to a manager keeps
/// no live copy of that connection: once the parent has exited, its
/// server sees the connection end (and gives back its references) though
/// the child lives on. (The socket was made inert in forked children only
/// once authenticated.)
#[test]
fn a_child_forked_during_the_handshake_does_not_keep_the_connection_open() {
    use multiproc::{RawValue, Semaphore};
    watchdog("forked during the handshake", LIMIT, || {
        let dir = std::env::temp_dir();
        let pid = std::process::id();
        let front_path = dir.join(format!("client-attack-front-{pid}.sock"));
        let back_path = dir.join(format!("client-attack-back-{pid}.sock"));
        let _ = std::fs::remove_file(&front_path);
        let listener = Listener::bind(&Address::Unix(back_path.clone()), Some(KEY)).unwrap();
        let front = std::os::unix::net::UnixListener::bind(&front_path).unwrap();
        let in_handshake = Semaphore::new(0).unwrap();
        let forked = Semaphore::new(0).unwrap();
        let grandchild = RawValue::<u32>::new(0).unwrap();
        {
            let (in_handshake, forked) = (in_handshake.clone(), forked.clone());
            let first = AtomicBool::new(true);
            relay(front, back_path.clone(), move || {
                // The long connection's handshake waits for the fork.
                if first.swap(false, Ordering::SeqCst) {
                    in_handshake.release().unwrap();
                    assert!(forked.acquire_timeout(LIMIT));
                }
            });
        }
        let client = {
            let address = Address::Unix(front_path.clone());
            let (in_handshake, forked, grandchild) =
                (in_handshake.clone(), forked.clone(), grandchild.clone());
            common::static_child(move || {
                let forker = std::thread::spawn(move || {
                    assert!(in_handshake.acquire_timeout(LIMIT));
                    let pid = common::fork_idle_child();
                    grandchild.atomic().store(pid, Ordering::SeqCst);
                    forked.release().unwrap();
                });
                let m = Manager::connect(address, KEY).unwrap();
                forker.join().unwrap();
                drop(m);
            })
        };
        let mut conn = listener.accept().unwrap();
        // As CPython's server: no `_multiproc_hold`, so server-level
        // calls come on short connections.
        conn.recv_bytes_timeout(LIMIT).unwrap();
        conn.send_bytes(&reply("#RETURN", P::None)).unwrap();
        conn.recv_bytes_timeout(LIMIT).unwrap();
        conn.send_bytes(&reply("#TRACEBACK", s("no such method")))
            .unwrap();
        let mut short = listener.accept().unwrap();
        short.recv_bytes_timeout(LIMIT).unwrap();
        short.send_bytes(&reply("#RETURN", P::Int(0))).unwrap();
        drop(short);
        assert_eq!(common::join(&client, LIMIT), 0);
        let ended = conn.recv_bytes_timeout(Duration::from_secs(10));
        let pid = grandchild.atomic().load(Ordering::SeqCst);
        // SAFETY: signalling the process the test's child forked.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        let _ = std::fs::remove_file(&front_path);
        let _ = std::fs::remove_file(&back_path);
        assert!(
            matches!(ended, Err(Error::ConnectionClosed)),
            "the connection of a process that exited is still open: {ended:?}"
        );
    });
}

/// Proxies given by value to `extend`, `update` (and so `set_many`,
/// `list_from`, `dict_from`), the only ones of their objects: the objects
/// are stored, as Python's `l.extend([m.dict()])` stores them. (Each item
/// was dropped, and its object freed, once encoded, before the request
/// that stores it was sent: `ReferenceError`.)
#[test]
fn proxies_moved_into_extend_or_update_are_stored() {
    use multiproc::manager::DictProxy;
    watchdog("moved into extend", LIMIT, || {
        let m = Manager::start().unwrap();
        let l = m.list::<DictProxy<u32, u32>>().unwrap();
        let fresh = || {
            let d = m.dict::<u32, u32>().unwrap();
            d.set(1, 7).unwrap();
            d
        };
        let r = l.extend([fresh(), fresh()]);
        assert!(r.is_ok(), "extend: {r:?}");
        let d = m.dict::<u32, DictProxy<u32, u32>>().unwrap();
        let r = d.update([(1, fresh())]);
        assert!(r.is_ok(), "update: {r:?}");
        let r = m.list_from([fresh()]);
        assert!(r.is_ok(), "list_from: {r:?}");
        drop(r);
        let r = m.dict_from([(1, fresh())]);
        assert!(r.is_ok(), "dict_from: {r:?}");
        assert_eq!(l.get(1).unwrap().get(&1).unwrap(), Some(7));
        assert_eq!(d.get(&1).unwrap().unwrap().get(&1).unwrap(), Some(7));
        drop((l, d, r));
        assert!(common::wait_until(LIMIT, || m.number_of_objects().unwrap() == 0));
        // A batch that fails to convert after a proxy: nothing is sent,
        // and the proxy's object is freed all the same.
        type Item = Result<DictProxy<u32, u32>, Option<()>>;
        let l = m.list::<Item>().unwrap();
        let r = l.extend([Ok(fresh()), Err(Some(()))]);
        assert!(matches!(r, Err(Error::Serialize(_))), "{r:?}");
        assert_eq!(m.number_of_objects().unwrap(), 1);
        // Many at once.
        let many = m.list::<DictProxy<u32, u32>>().unwrap();
        many.extend((0..2000).map(|_| m.dict().unwrap())).unwrap();
        assert_eq!(many.len().unwrap(), 2000);
        assert_eq!(m.number_of_objects().unwrap(), 2002);
    });
}

/// An answer nested as deep as a stored value may be, read on threads with
/// small stacks (a pool's, a runtime's): decoded, or refused as too deep
/// for that stack; never a stack overflow.
#[test]
fn a_deep_answer_on_small_stacks_is_decoded_or_refused() {
    let mut b = b"X\x07\x00\x00\x00#RETURN".to_vec();
    // As deep as a value the server stores.
    b.extend(std::iter::repeat_n(b']', 500));
    b.extend(std::iter::repeat_n(b'a', 499));
    b.push(0x86);
    let answer = frame(&raw(&b));
    watchdog("deep answer, small stacks", LIMIT, || {
        for holds in [true, false] {
            for stack in [256 << 10, 512 << 10, 1 << 20] {
                let act = Act::Send(answer.clone());
                let r = std::thread::Builder::new()
                    .stack_size(stack)
                    .spawn(move || get_answered::<PyValue>(holds, act).map(|v| v.is_some()))
                    .unwrap()
                    .join()
                    .expect("no panic");
                assert!(
                    matches!(&r, Ok(true))
                        || matches!(&r, Err(Error::Deserialize(m)) if m.contains("stack")),
                    "{stack}: {r:?}"
                );
            }
        }
    });
}

/// A forked child's first use of an inherited proxy is to store it in
/// another object (it has made no call through it yet, so its connection
/// holds no reference of its own): stored, as a Python child's would be.
#[test]
fn a_child_stores_an_inherited_proxy_before_any_call_through_it() {
    use multiproc::manager::DictProxy;
    watchdog("inherited proxy stored", LIMIT, || {
        let m = Manager::start().unwrap();
        let l = m.list::<DictProxy<u32, u32>>().unwrap();
        let d = m.dict::<u32, u32>().unwrap();
        d.set(1, 5).unwrap();
        let child = {
            let (l, d) = (l.clone(), d.clone());
            common::static_child(move || {
                let r = l.append(d.clone());
                assert!(r.is_ok(), "append: {r:?}");
                let r = l.append(d);
                assert!(r.is_ok(), "append moved: {r:?}");
            })
        };
        assert_eq!(common::join(&child, LIMIT), 0);
        assert_eq!(l.len().unwrap(), 2);
        assert_eq!(l.get(1).unwrap().get(&1).unwrap(), Some(5));
    });
}

/// On a server that counts references globally (CPython's), a clone of a
/// proxy whose `incref` failed for want of a descriptor here holds no
/// reference: its drop gives none back (that would free the object under
/// the other proxies), and its first call takes one.
#[test]
fn a_clone_whose_incref_failed_gives_back_no_reference() {
    watchdog("failed incref", LIMIT, || {
        let fake = Fake::start(false, |_, _| Act::Send(frame(&reply("#RETURN", P::Int(0)))));
        let address = fake.address.clone();
        let child = common::static_child(move || {
            let m = Manager::connect(address, KEY).unwrap();
            let d = m.dict::<u32, u32>().unwrap();
            let held = common::fill_descriptors();
            let copy = d.clone();
            drop(held);
            // Its first call takes the reference the clone could not.
            assert_eq!(copy.len().unwrap(), 0);
            drop(copy);
            drop(d);
        });
        assert_eq!(common::join(&child, LIMIT), 0);
        // One reference from `create`, and one per incref that reached
        // the server: as many given back, no more.
        let (increfs, decrefs) = (fake.seen("incref"), fake.seen("decref"));
        assert_eq!(decrefs, increfs + 1, "{increfs} increfs, {decrefs} decrefs");
    });
}

/// A proxy stored in a list, its only other proxy dropped at once: another
/// process reads it back and uses it, and once the list lets it go the
/// object is freed.
#[test]
fn a_stored_proxy_outlives_its_dropped_original_for_another_process() {
    use multiproc::manager::DictProxy;
    watchdog("stored proxy", LIMIT, || {
        let m = Manager::start().unwrap();
        let l = m.list::<DictProxy<u32, u32>>().unwrap();
        {
            let d = m.dict::<u32, u32>().unwrap();
            d.set(1, 9).unwrap();
            l.append(d).unwrap();
        }
        let child = {
            let l = l.clone();
            common::static_child(move || {
                let d = l.get(0).unwrap();
                assert_eq!(d.get(&1).unwrap(), Some(9));
                d.set(2, 10).unwrap();
                l.clear().unwrap();
                // The child's proxy keeps it alive.
                assert_eq!(d.get(&2).unwrap(), Some(10));
            })
        };
        assert_eq!(common::join(&child, LIMIT), 0);
        drop(l);
        assert!(common::wait_until(LIMIT, || m.number_of_objects().unwrap() == 0));
    });
}
