//! A hostile but authenticated peer of the manager server, speaking
//! Python's protocol with pickles written by hand: requests that once cost
//! the server far more than one request may (CPU, memory, objects that
//! outlive the request), each answered now with a clear error or within
//! its bounds, the server serving on.

mod common;

use std::time::Duration;

use common::pickle::{returned_ident, s, P};
use common::watchdog;
use multiproc::conn::Connection;
use multiproc::Process;

const LIMIT: Duration = Duration::from_secs(180);

/// The request `(ident, method, args, {})`, as a value.
fn call(ident: Option<&str>, method: &str, args: Vec<P>) -> P {
    P::Tuple(vec![
        ident.map_or(P::None, s),
        s(method),
        P::Tuple(args),
        P::Raw(b"}".to_vec()),
    ])
}

/// The pickle of one request.
fn request(ident: Option<&str>, method: &str, args: Vec<P>) -> Vec<u8> {
    let mut out = vec![0x80, 2];
    call(ident, method, args).write(&mut out);
    out.push(b'.');
    out
}

/// A list of `n` copies of `item`, written out each time (no memo).
fn repeated(item: &P, n: usize) -> P {
    let mut one = Vec::new();
    item.write(&mut one);
    let mut out = b"](".to_vec();
    for _ in 0..n {
        out.extend(&one);
    }
    out.push(b'e');
    P::Raw(out)
}

/// `_multiproc_batch` of `items` (a list of requests).
fn batch(items: P) -> Vec<u8> {
    request(None, "_multiproc_batch", vec![items])
}

/// A nested proxy of the list `ident`, as CPython pickles a `ListProxy`
/// stored in another object: `RebuildProxy(ListProxy, Token(...),
/// 'pickle', {})`.
fn list_proxy(ident: &str) -> P {
    let mut out = b"cmultiprocessing.managers\nRebuildProxy\n(".to_vec();
    out.extend(b"cmultiprocessing.managers\nListProxy\n");
    out.extend(b"cmultiprocessing.managers\nToken\n)\x81");
    P::Tuple(vec![s("list"), s("/unused"), s(ident)]).write(&mut out);
    out.push(b'b');
    s("pickle").write(&mut out);
    out.extend(b"}tR");
    P::Raw(out)
}

/// Sends one request and reads its reply (undecoded).
fn send(conn: &mut Connection, frame: &[u8]) -> Vec<u8> {
    conn.send_bytes(frame).unwrap();
    conn.recv_bytes().unwrap()
}

/// The start of a reply, for a failure's message.
fn shown(reply: &[u8]) -> String {
    String::from_utf8_lossy(&reply[..reply.len().min(300)]).into_owned()
}

fn has(reply: &[u8], what: &str) -> bool {
    reply.windows(what.len()).any(|w| w == what.as_bytes())
}

/// A new object of `typeid`: its ident (the first run of hex digits after
/// the reply's tag).
fn create(conn: &mut Connection, typeid: &str) -> String {
    let reply = send(conn, &request(None, "create", vec![s(typeid)]));
    assert!(has(&reply, "#RETURN"), "{}", shown(&reply));
    returned_ident(&reply)
}

/// The server's `number_of_objects`.
fn objects(conn: &mut Connection) -> i32 {
    let reply = send(conn, &request(None, "number_of_objects", vec![]));
    // `#RETURN` then the int: BININT1, BININT2 or BININT.
    let at = reply.windows(7).position(|w| w == b"#RETURN").unwrap() + 7;
    let rest = &reply[at..];
    match rest.iter().position(|&b| matches!(b, b'K' | b'M' | b'J')) {
        Some(i) if rest[i] == b'K' => rest[i + 1].into(),
        Some(i) if rest[i] == b'M' => u16::from_le_bytes([rest[i + 1], rest[i + 2]]).into(),
        Some(i) => i32::from_le_bytes(rest[i + 1..i + 5].try_into().unwrap()),
        None => panic!("{}", shown(&reply)),
    }
}

/// A server's socket file, removed when dropped (a failed test's too).
struct Socket(std::path::PathBuf);

impl Drop for Socket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A server of its own (`manager::serve`, as `multiproc manager serve`
/// runs it; a daemon, killed when the test process exits), its socket,
/// and a connection to it.
fn serve(name: &str) -> (Process<'static>, Socket, Connection) {
    let (server, path, conn) = common::serve_manager(&format!("wire-{name}"), b"wire attack");
    (server, Socket(path), conn)
}

fn stop(server: Process<'static>, socket: Socket, mut conn: Connection) {
    send(&mut conn, &request(None, "shutdown", vec![]));
    server.join().unwrap();
    drop(socket);
}

/// A batch of `create`s made every object (300,000 of them took 1.5 s of
/// the server's CPU and 700 MB), then failed as a whole when its answer
/// outgrew the frame: the client never learnt the idents, and the objects
/// stayed for ever. A batch is a client's several calls on objects it
/// has; `create` in it is refused, item by item, and makes nothing (and
/// so is a dict's `__iter__`, which makes an iterator object).
#[test]
fn a_batch_creates_nothing() {
    watchdog("batch of creates", LIMIT, || {
        let (server, path, mut conn) = serve("creates");
        let before = objects(&mut conn);
        let one = call(None, "create", vec![s("list")]);
        let reply = send(&mut conn, &batch(repeated(&one, 1000)));
        assert!(has(&reply, "#RETURN"), "{}", shown(&reply));
        assert!(!has(&reply, "__len__"), "the batch made objects");
        assert!(has(&reply, "create"), "{}", shown(&reply));
        assert_eq!(objects(&mut conn), before, "the batch made objects");
        // Outside a batch, create goes on working.
        let dict = create(&mut conn, "dict");
        assert_eq!(objects(&mut conn), before + 1);
        // A dict's `__iter__` makes an iterator object: not in a batch
        // either (96,000 of them stayed from one batch that failed).
        let one = call(Some(&dict), "__iter__", vec![]);
        let reply = send(&mut conn, &batch(repeated(&one, 1000)));
        assert!(has(&reply, "#RETURN"), "{}", shown(&reply));
        assert!(!has(&reply, "#PROXY"), "the batch made iterators");
        assert_eq!(objects(&mut conn), before + 1, "the batch made iterators");
        stop(server, path, conn);
    });
}

/// `number_of_objects` (and `debug_info`) first frees unreachable cycles
/// of nested proxies: a walk over every stored value. In a batch, after
/// an `incref` and a `decref` that make a suspect each time, every one
/// walked again: 2000 of them over 42 Mi stored ints held the server (and
/// every other client) for 10 minutes. A batch walks once at most (after
/// it, as any request may).
#[test]
fn counting_objects_in_a_batch_walks_the_values_once() {
    watchdog("batch of counts", LIMIT, || {
        let (server, path, mut conn) = serve("counts");
        let pid = server.pid().unwrap();
        let inner = create(&mut conn, "list");
        let outer = create(&mut conn, "list");
        let extend = request(Some(&outer), "extend", vec![repeated(&P::Int(1), 1 << 20)]);
        for _ in 0..2 {
            assert!(has(&send(&mut conn, &extend), "#RETURN"));
        }
        // `inner` held by `outer` only: its references are all in values.
        let reply = send(
            &mut conn,
            &request(Some(&outer), "append", vec![list_proxy(&inner)]),
        );
        assert!(has(&reply, "#RETURN"), "{}", shown(&reply));
        let reply = send(&mut conn, &request(None, "decref", vec![s(&inner)]));
        assert!(has(&reply, "#RETURN"), "{}", shown(&reply));
        let round = [
            call(None, "incref", vec![s(&inner)]),
            call(None, "decref", vec![s(&inner)]),
            call(None, "number_of_objects", vec![]),
            call(None, "debug_info", vec![]),
        ];
        let mut items = b"](".to_vec();
        for _ in 0..1000 {
            round.iter().for_each(|r| r.write(&mut items));
        }
        items.push(b'e');
        let ticks = common::procfs::cpu_ticks(pid);
        let reply = send(&mut conn, &batch(P::Raw(items)));
        let cpu = Duration::from_millis((common::procfs::cpu_ticks(pid) - ticks) * 10);
        assert!(has(&reply, "#RETURN"), "{}", shown(&reply));
        assert!(
            cpu < Duration::from_secs(2),
            "the batch took {cpu:?} of the server's CPU"
        );
        // Still one object held by the other, both counted.
        assert_eq!(objects(&mut conn), 2);
        stop(server, path, conn);
    });
}

/// A dict iterator's `__next__` with an argument took the next key as if
/// it had none (CPython's refuses, and the key stays for the next call).
#[test]
fn an_iterators_next_takes_no_arguments() {
    watchdog("iterator arguments", LIMIT, || {
        let (server, path, mut conn) = serve("iterator");
        let dict = create(&mut conn, "dict");
        for key in ["a", "b"] {
            let set = request(Some(&dict), "__setitem__", vec![s(key), P::None]);
            assert!(has(&send(&mut conn, &set), "#RETURN"));
        }
        let reply = send(&mut conn, &request(Some(&dict), "__iter__", vec![]));
        assert!(has(&reply, "#PROXY"), "{}", shown(&reply));
        // The iterator's ident: the last run of hex digits in the Token.
        // The iterator's ident: the Token's last str (SHORT_BINUNICODE).
        let at = reply.iter().rposition(|&b| b == 0x8c).unwrap();
        let n = usize::from(reply[at + 1]);
        let it = String::from_utf8(reply[at + 2..at + 2 + n].to_vec()).unwrap();
        // `(ident, '__next__', (), {'x': 1})`.
        let with_kwds = {
            let mut out = vec![0x80, 2];
            P::Tuple(vec![
                s(&it),
                s("__next__"),
                P::Tuple(vec![]),
                P::Raw(b"}X\x01\x00\x00\x00xK\x01s".to_vec()),
            ])
            .write(&mut out);
            out.push(b'.');
            out
        };
        for frame in [request(Some(&it), "__next__", vec![P::Int(1)]), with_kwds] {
            let reply = send(&mut conn, &frame);
            assert!(
                has(&reply, "#ERROR") && has(&reply, "TypeError"),
                "{}",
                shown(&reply)
            );
        }
        let reply = send(&mut conn, &request(Some(&it), "__next__", vec![]));
        assert!(
            has(&reply, "#RETURN") && has(&reply, "a"),
            "{}",
            shown(&reply)
        );
        stop(server, path, conn);
    });
}

/// The request `(ident, method, args, kwds)` with `args` and `kwds` as
/// they are (any values, written ahead).
fn request_raw(ident: Option<&str>, method: &str, args: P, kwds: P) -> Vec<u8> {
    let mut out = vec![0x80, 2];
    P::Tuple(vec![ident.map_or(P::None, s), s(method), args, kwds]).write(&mut out);
    out.push(b'.');
    out
}

/// CPython's server spreads a request's args with `*` and its kwds with
/// `**` when it calls the method: any iterable is args (a str its
/// characters), and anything else fails that call, an `#ERROR` the client
/// raises as the `TypeError` itself, after the object and the method were
/// found (an unknown object or method is still a `#TRACEBACK`).
#[test]
fn args_and_kwds_are_spread_as_cpython_spreads_them() {
    watchdog("args and kwds", LIMIT, || {
        let (server, path, mut conn) = serve("spread");
        let list = create(&mut conn, "list");
        let empty = || P::Raw(b"}".to_vec());
        // A str of one character: that character, appended.
        let reply = send(
            &mut conn,
            &request_raw(Some(&list), "append", s("z"), empty()),
        );
        assert!(has(&reply, "#RETURN"), "{}", shown(&reply));
        let reply = send(
            &mut conn,
            &request(Some(&list), "__getitem__", vec![P::Int(0)]),
        );
        assert!(
            has(&reply, "#RETURN") && has(&reply, "z"),
            "{}",
            shown(&reply)
        );
        for (args, kwds) in [
            (P::None, empty()),
            (P::Int(3), empty()),
            (P::Tuple(vec![P::Int(1)]), P::None),
            (P::Tuple(vec![P::Int(1)]), P::Raw(b"]".to_vec())),
            (P::Tuple(vec![]), P::Raw(b"}K\x01K\x02s".to_vec())),
        ] {
            let reply = send(&mut conn, &request_raw(Some(&list), "append", args, kwds));
            assert!(
                has(&reply, "#ERROR") && has(&reply, "TypeError"),
                "{}",
                shown(&reply)
            );
        }
        // The object and the method are looked up first.
        let reply = send(
            &mut conn,
            &request_raw(Some("12345"), "append", P::None, empty()),
        );
        assert!(
            has(&reply, "#TRACEBACK") && has(&reply, "KeyError"),
            "{}",
            shown(&reply)
        );
        let reply = send(
            &mut conn,
            &request_raw(Some(&list), "nope", P::None, empty()),
        );
        assert!(
            has(&reply, "#TRACEBACK") && has(&reply, "AttributeError"),
            "{}",
            shown(&reply)
        );
        // The server's own calls fail as a whole, as CPython's do.
        let reply = send(&mut conn, &request_raw(None, "dummy", P::None, empty()));
        assert!(has(&reply, "#TRACEBACK"), "{}", shown(&reply));
        let reply = send(&mut conn, &request(Some(&list), "__len__", vec![]));
        assert!(has(&reply, "#RETURN"), "{}", shown(&reply));
        stop(server, path, conn);
    });
}

/// Sorting tuples nested 450 deep that differ only at their innermost
/// item: each comparison asked `!=` of the items and then `<` of the
/// first that differed, one level down, where it asked `!=` again: a walk
/// per level, quadratic in the depth (800 of them took 2 s of CPU in a
/// release build, charged as a tenth of that). One walk now.
#[test]
fn comparing_deep_values_walks_them_once() {
    watchdog("deep sort", LIMIT, || {
        let (server, path, mut conn) = serve("deep-sort");
        let pid = server.pid().unwrap();
        let list = create(&mut conn, "list");
        let mut items = b"](".to_vec();
        for i in 0..800 {
            items.extend([b'K', (i % 7) as u8]);
            items.extend([0x85; 450]);
        }
        items.push(b'e');
        let extend = request(Some(&list), "extend", vec![P::Raw(items)]);
        assert!(has(&send(&mut conn, &extend), "#RETURN"));
        let ticks = common::procfs::cpu_ticks(pid);
        let reply = send(&mut conn, &request(Some(&list), "sort", vec![]));
        let cpu = Duration::from_millis((common::procfs::cpu_ticks(pid) - ticks) * 10);
        assert!(has(&reply, "#RETURN"), "{}", shown(&reply));
        assert!(
            cpu < Duration::from_secs(3),
            "the sort took {cpu:?} of the server's CPU"
        );
        // Sorted by the innermost item: the first is 0 inside.
        let reply = send(
            &mut conn,
            &request(Some(&list), "__getitem__", vec![P::Int(0)]),
        );
        assert!(has(&reply, "K\x00"), "{}", shown(&reply));
        stop(server, path, conn);
    });
}

/// A batch that gives back the last reference to a list and then stores a
/// proxy of it (the proxy came with the request): the list was freed
/// first, its proxy's reference taken only after the batch, so the
/// stored proxy named an object that was gone. A request's proxies hold
/// their objects from the start.
#[test]
fn proxies_in_a_request_hold_their_objects_from_its_start() {
    watchdog("proxy held", LIMIT, || {
        let (server, path, mut conn) = serve("held");
        let outer = create(&mut conn, "list");
        let inner = create(&mut conn, "list");
        let reply = send(
            &mut conn,
            &request(Some(&inner), "append", vec![P::Int(42)]),
        );
        assert!(has(&reply, "#RETURN"));
        let mut items = b"](".to_vec();
        call(None, "decref", vec![s(&inner)]).write(&mut items);
        call(Some(&outer), "append", vec![list_proxy(&inner)]).write(&mut items);
        items.push(b'e');
        let reply = send(&mut conn, &batch(P::Raw(items)));
        assert!(
            has(&reply, "#RETURN") && !has(&reply, "Error"),
            "{}",
            shown(&reply)
        );
        // Held by `outer` only, and there.
        let reply = send(&mut conn, &request(Some(&inner), "__len__", vec![]));
        assert!(has(&reply, "#RETURN"), "{}", shown(&reply));
        assert_eq!(objects(&mut conn), 2);
        // Given back with the value that holds it.
        let reply = send(&mut conn, &request(Some(&outer), "clear", vec![]));
        assert!(has(&reply, "#RETURN"), "{}", shown(&reply));
        assert_eq!(objects(&mut conn), 1);
        stop(server, path, conn);
    });
}

/// The same walk, one request at a time: an `incref` and a `decref` make
/// a suspect, and a `number_of_objects` (or any request, once suspects
/// are many) walked every stored value for it, each time: three cheap
/// requests for a walk over everything the server holds. Walks are spread
/// over the requests served since the last one.
#[test]
fn counting_objects_again_and_again_walks_the_values_seldom() {
    watchdog("counts one by one", LIMIT, || {
        let (server, path, mut conn) = serve("counts-again");
        let pid = server.pid().unwrap();
        let inner = create(&mut conn, "list");
        let outer = create(&mut conn, "list");
        let extend = request(Some(&outer), "extend", vec![repeated(&P::Int(1), 1 << 20)]);
        for _ in 0..4 {
            assert!(has(&send(&mut conn, &extend), "#RETURN"));
        }
        let reply = send(
            &mut conn,
            &request(Some(&outer), "append", vec![list_proxy(&inner)]),
        );
        assert!(has(&reply, "#RETURN"), "{}", shown(&reply));
        assert!(has(
            &send(&mut conn, &request(None, "decref", vec![s(&inner)])),
            "#RETURN"
        ));
        let round = [
            request(None, "incref", vec![s(&inner)]),
            request(None, "decref", vec![s(&inner)]),
            request(None, "number_of_objects", vec![]),
        ];
        let ticks = common::procfs::cpu_ticks(pid);
        for _ in 0..300 {
            for r in &round {
                assert!(has(&send(&mut conn, r), "#RETURN"));
            }
        }
        let cpu = Duration::from_millis((common::procfs::cpu_ticks(pid) - ticks) * 10);
        assert!(
            cpu < Duration::from_secs(4),
            "300 counts took {cpu:?} of the server's CPU"
        );
        // Both held: the one by the other.
        assert_eq!(objects(&mut conn), 2);
        stop(server, path, conn);
    });
}
