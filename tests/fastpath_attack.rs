//! An adversarial review of the Manager's fast path (`src/manager/fast.rs`):
//! each test tries to break one of the properties the fast path must keep,
//! with real processes, real areas and a real server.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::fastpath::*;
use common::procfs;
use common::{join, static_child, wait_until, watchdog, Rng};
use multiproc::manager::{Manager, Transport};
use multiproc::Error;

const LIMIT: Duration = Duration::from_secs(60);

/// This process's descriptors that are sockets whose other end process
/// `pid` made (its connections to the server, and its areas' doorbells).
fn sockets_to(pid: u32) -> Vec<i32> {
    let mut fds: Vec<i32> = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    fds.sort_unstable();
    fds.into_iter()
        .filter(|&fd| {
            // SAFETY: a zeroed ucred, which getsockopt fills.
            let mut cred: libc::ucred = unsafe { std::mem::zeroed() };
            let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
            // SAFETY: getsockopt writes at most `len` bytes into `cred`.
            let r = unsafe {
                libc::getsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    libc::SO_PEERCRED,
                    (&raw mut cred).cast(),
                    &mut len,
                )
            };
            r == 0 && cred.pid as u32 == pid
        })
        .collect()
}

/// Sends `signal` to process `pid`, which the test started.
fn signal(pid: u32, signal: i32) {
    // SAFETY: signalling a process this test started.
    assert_eq!(unsafe { libc::kill(pid as i32, signal) }, 0);
}

/// A server stopped (`SIGSTOP`) until this is dropped, even by a failed
/// assertion: a stopped server would otherwise outlive the test.
struct Stopped(u32);

impl Stopped {
    fn new(pid: u32) -> Stopped {
        signal(pid, libc::SIGSTOP);
        assert!(wait_until(LIMIT, || procfs::stopped(pid)), "stopped");
        Stopped(pid)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        signal(self.0, libc::SIGCONT);
    }
}

/// Sets its flag when dropped, even by a failed assertion: the threads
/// that wait for it stop, and the scope that waits for them ends.
struct SetOnDrop<'a>(&'a AtomicBool);

impl Drop for SetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// A child forked (by another thread) while its parent is in the middle of
/// a call through its area holds nothing of the parent's connection: not
/// its socket, not its doorbell, not its area mapped. (It kept the area
/// mapped, and its doorbell open, for as long as it lived: the parent's
/// connection state, whose lock the calling thread held at the fork, is
/// never dropped in the child.) The child then makes its own connection,
/// and both calls are answered.
#[test]
fn a_child_forked_mid_request_holds_nothing_of_its_parents_connection() {
    watchdog("fork mid-request", LIMIT, || {
        alone(|| {
            let before = areas_mapped();
            let m = Manager::start().unwrap();
            let server = m.server_pid().unwrap();
            let d = m.dict::<u32, u32>().unwrap();
            d.set(0, 7).unwrap();
            let parents = new_areas(&before, &areas_mapped());
            assert_eq!(parents.len(), 1, "the parent's area");
            assert_eq!(sockets_to(server).len(), 2, "its socket and doorbell");
            let theirs = d.clone();
            std::thread::scope(|s| {
                // Inside the scope: a failed assertion lets the server go
                // on before the scope waits for the caller.
                let stopped = Stopped::new(server);
                let (tid_tx, tid_rx) = std::sync::mpsc::channel();
                let d = &d;
                let caller = s.spawn(move || {
                    tid_tx.send(procfs::gettid()).unwrap();
                    d.get(&0).unwrap()
                });
                let tid = tid_rx.recv().unwrap();
                // Asleep on its area's futex: the call is under way.
                assert!(wait_until(LIMIT, || procfs::thread_blocked_in_futex(
                    std::process::id(),
                    tid
                )));
                let kid = static_child(move || {
                    let kept = sockets_to(server);
                    let mapped = areas_mapped().contains(&parents[0]);
                    // Served once the server runs again, on its own.
                    theirs.set(1, 1).unwrap();
                    assert_eq!(theirs.get(&0).unwrap(), Some(7));
                    assert!(
                        kept.is_empty() && !mapped,
                        "the parent's sockets kept: {kept:?}; its area mapped: {mapped}"
                    );
                });
                drop(stopped);
                assert_eq!(join(&kid, LIMIT), 0);
                assert_eq!(caller.join().unwrap(), Some(7));
            });
            assert_eq!(d.get(&1).unwrap(), Some(1));
        });
    });
}

/// Keeps this process (and the processes it starts from now on) on one CPU.
fn on_one_cpu() {
    // SAFETY: a zeroed cpu_set_t is an empty set; CPU_SET adds CPU 0.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: CPU 0 is within the set's bits.
    unsafe { libc::CPU_SET(0, &mut set) };
    // SAFETY: the set lives across the call.
    let r = unsafe { libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) };
    assert_eq!(r, 0, "sched_setaffinity");
}

/// On one CPU, a client and its server can never catch each other
/// spinning: whichever spins holds the CPU the other needs to answer. The
/// fast path must then cost no more than the socket.
#[test]
fn on_one_cpu_the_fast_path_is_no_slower_than_the_socket() {
    const CALLS: u32 = 3000;
    watchdog("one CPU", LIMIT, || {
        alone(|| {
            on_one_cpu();
            let m = Manager::start().unwrap();
            let s =
                Manager::connect_with(m.address().clone(), m.authkey(), Transport::Socket).unwrap();
            let time = |m: &Manager| {
                let d = m.dict::<u32, u64>().unwrap();
                d.set(0, 0).unwrap();
                let start = Instant::now();
                for _ in 0..CALLS {
                    d.increment(&0, 1).unwrap();
                }
                start.elapsed()
            };
            let (mut fast, mut socket) = (Duration::MAX, Duration::MAX);
            for _ in 0..3 {
                fast = fast.min(time(&m));
                socket = socket.min(time(&s));
            }
            eprintln!("one CPU: fast {fast:?}, socket {socket:?} for {CALLS} calls");
            // Spinning that starved the peer would cost many times this.
            assert!(
                fast <= 2 * socket,
                "fast {fast:?}, socket {socket:?} for {CALLS} calls"
            );
        });
    });
}

/// Threads of one process sharing a client, calling through its area
/// while the server is stopped (`SIGSTOP`) and then killed: every call
/// fails with `ManagerGone` (none hangs, none is answered wrongly), and so
/// do the calls made after.
#[test]
fn a_server_stopped_then_killed_mid_call_gives_every_thread_manager_gone() {
    const THREADS: usize = 4;
    watchdog("stopped then killed", LIMIT, || {
        let m = Manager::start().unwrap();
        let server = m.server_pid().unwrap();
        let path = m.address().clone();
        let d = m.dict::<u32, u64>().unwrap();
        d.set(0, 0).unwrap();
        let calls = std::sync::atomic::AtomicU64::new(0);
        std::thread::scope(|s| {
            let workers: Vec<_> = (0..THREADS)
                .map(|_| {
                    s.spawn(|| loop {
                        match d.increment(&0, 1) {
                            Ok(_) => calls.fetch_add(1, Ordering::Relaxed),
                            Err(e) => return e,
                        };
                    })
                })
                .collect();
            assert!(wait_until(LIMIT, || calls.load(Ordering::Relaxed) > 100));
            signal(server, libc::SIGSTOP);
            assert!(wait_until(LIMIT, || procfs::stopped(server)));
            // Every worker is in a call now, which the server will not answer.
            signal(server, libc::SIGKILL);
            for w in workers {
                let e = w.join().unwrap();
                assert!(matches!(e, Error::ManagerGone(_)), "{e}");
            }
        });
        assert!(matches!(d.get(&0), Err(Error::ManagerGone(_))));
        drop(d);
        drop(m);
        if let multiproc::conn::Address::Unix(p) = path {
            let _ = std::fs::remove_file(p);
        }
    });
}

/// Requests and answers of every size around the area's slots (64 KiB):
/// each goes through the area or on the socket, whole.
#[test]
fn requests_and_answers_around_the_slot_size_arrive_whole() {
    const SLOT: usize = 64 << 10;
    watchdog("slot sizes", LIMIT, || {
        let m = Manager::start().unwrap();
        let d = m.dict::<u32, String>().unwrap();
        for n in (SLOT - 80..SLOT + 16).chain([0, 1, SLOT / 2, 2 * SLOT, 3 * SLOT + 7]) {
            let v: String = (0..n).map(|i| (b'a' + (i % 26) as u8) as char).collect();
            d.set(n as u32, v.clone()).unwrap();
            assert_eq!(
                d.get(&(n as u32)).unwrap().as_deref(),
                Some(v.as_str()),
                "{n}"
            );
            // The answer of `pop` carries the value; the next call still
            // gets its own answer.
            assert_eq!(d.pop(&(n as u32)).unwrap(), v, "{n}");
            assert_eq!(d.len().unwrap(), 0, "{n}");
        }
    });
}

/// Clients killed (`SIGKILL`) at arbitrary moments of their calls, each
/// holding objects of its own and proxies nested in a shared one, while
/// another client is served: the others go on, every reference the killed
/// ones held is given back, and the areas they had are all freed (more of
/// them than the server's most at once, so that one not freed would leave
/// later clients without any).
#[test]
fn clients_killed_mid_call_leak_neither_references_nor_areas() {
    const KILLED: u64 = 24;
    const CONNECTIONS: usize = 300;
    watchdog("killed clients", 2 * LIMIT, || {
        let m = Manager::start().unwrap();
        let (address, key) = (m.address().clone(), m.authkey().to_vec());
        let shared = m.dict::<u32, u64>().unwrap();
        shared.set(0, 0).unwrap();
        let baseline = m.number_of_objects().unwrap();
        let calls = multiproc::RawValue::<u64>::new(0).unwrap();
        for round in 0..KILLED {
            let (address, key, theirs) = (address.clone(), key.clone(), shared.clone());
            let counted = calls.clone();
            let kid = static_child(move || {
                let m = Manager::connect(address, &key).unwrap();
                let mut mine = Vec::new();
                loop {
                    // Objects of its own, and one that the shared dict
                    // holds too.
                    let l = m.list::<u32>().unwrap();
                    l.append(1).unwrap();
                    mine.push(l);
                    theirs.increment(&1, 1).unwrap();
                    counted.atomic().fetch_add(1, Ordering::SeqCst);
                    if mine.len() > 8 {
                        mine.remove(0);
                    }
                }
            });
            let seen = calls.get();
            assert!(wait_until(LIMIT, || calls.get() > seen + round % 5));
            kid.kill().unwrap();
            join(&kid, LIMIT);
            shared.increment(&0, 1).unwrap();
        }
        assert_eq!(shared.get(&0).unwrap(), Some(KILLED));
        assert!(
            wait_until(LIMIT, || m.number_of_objects().unwrap() == baseline),
            "{} objects left of {baseline}",
            m.number_of_objects().unwrap()
        );
        // More connections with an area than the server has at once, each
        // ended in turn.
        for _ in 0..CONNECTIONS {
            let c = Manager::connect(address.clone(), &key).unwrap();
            assert!(c.number_of_objects().unwrap() >= baseline);
        }
        alone(move || {
            let before = areas_mapped();
            let c = Manager::connect(address, &key).unwrap();
            c.number_of_objects().unwrap();
            assert_eq!(new_areas(&before, &areas_mapped()).len(), 1, "an area");
        });
    });
}

/// Threads of one process calling through its area without pause while
/// another thread forks children one after another (each fork lands in
/// the middle of some call): every child finds nothing of its parent's
/// connection, makes its own, and every call of every process counts.
#[test]
fn forks_from_one_thread_while_others_call_share_nothing() {
    const THREADS: u32 = 3;
    const CHILDREN: u32 = 16;
    watchdog("fork storm", LIMIT, || {
        alone(|| {
            let m = Manager::start().unwrap();
            let server = m.server_pid().unwrap();
            let d = m.dict::<u32, u64>().unwrap();
            d.set(0, 0).unwrap();
            let parents = areas_mapped();
            assert_eq!(parents.len(), 1);
            let stop = AtomicBool::new(false);
            let mut codes = Vec::new();
            let counts: Vec<u64> = std::thread::scope(|s| {
                let workers: Vec<_> = (0..THREADS)
                    .map(|t| {
                        let (d, stop) = (&d, &stop);
                        s.spawn(move || {
                            let mut n = 0;
                            while !stop.load(Ordering::Relaxed) {
                                d.increment(&(100 + t), 1).unwrap();
                                n += 1;
                            }
                            n
                        })
                    })
                    .collect();
                for c in 0..CHILDREN {
                    let (theirs, parents) = (d.clone(), parents.clone());
                    let kid = static_child(move || {
                        let kept = sockets_to(server);
                        let mapped = areas_mapped();
                        for _ in 0..20 {
                            theirs.increment(&c, 1).unwrap();
                        }
                        assert!(
                            kept.is_empty() && !mapped.iter().any(|a| parents.contains(a)),
                            "kept {kept:?}, mapped {mapped:?} of {parents:?}"
                        );
                    });
                    // Asserted once the workers stop (a failure here would
                    // leave them calling, and the scope waiting for them).
                    codes.push(join(&kid, LIMIT));
                }
                stop.store(true, Ordering::Relaxed);
                workers.into_iter().map(|w| w.join().unwrap()).collect()
            });
            assert!(
                codes.iter().all(|&c| c == 0),
                "children's exit codes: {codes:?}"
            );
            for (t, n) in counts.into_iter().enumerate() {
                assert_eq!(d.get(&(100 + t as u32)).unwrap(), Some(n));
            }
            for c in 0..CHILDREN {
                assert_eq!(d.get(&c).unwrap(), Some(20));
            }
        });
    });
}

/// The control words: four cache lines of sixteen.
const CONTROL_WORDS: usize = 4 * 16;

/// Hostile clients that scribble every control word of their areas, and
/// their requests' bytes and lengths, with arbitrary values while the
/// server reads them (valid requests with bytes flipped among them, and
/// lengths past the slot that end such a client, which then opens
/// another): another client's calls all succeed, none waits long, and
/// what the hostile clients made is given back with their connections.
#[test]
fn scribbled_areas_cost_their_clients_only() {
    watchdog("scribbled areas", LIMIT, || {
        let m = Manager::start().unwrap();
        let d = m.dict::<u32, u32>().unwrap();
        d.set(1, 1).unwrap();
        let baseline = m.number_of_objects().unwrap();
        let stop = AtomicBool::new(false);
        let opened = std::thread::scope(|s| {
            let scribbler = s.spawn(|| {
                let mut noise = Rng(0x9e37_79b9_7f4a_7c15);
                let mut raw = RawArea::open(&m, true).expect("an area");
                let mut opened = 1;
                let create =
                    common::pickle::request(None, "create", vec![common::pickle::s("dict")]);
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let r = noise.next();
                    match r % 4 {
                        0 => {
                            let at = (r >> 8) as usize % CONTROL_WORDS;
                            raw.word(4 * at).store((r >> 32) as u32, Ordering::Relaxed);
                        }
                        1 => {
                            let mut req = create.clone();
                            let at = (r >> 8) as usize % req.len();
                            if r & 0x10000 != 0 {
                                req[at] ^= (r >> 24) as u8 | 1;
                            }
                            raw.request(&req, req.len() as u32);
                        }
                        2 => {
                            // A length anywhere up to past the slot.
                            let len = (r >> 32) as u32 % (SLOT as u32 + SLOT as u32 / 64);
                            let bytes: Vec<u8> = (0..64).map(|k| (r >> (k % 56)) as u8).collect();
                            raw.request(&bytes, len);
                        }
                        _ => {
                            // The request's bytes change under the server.
                            let at = (r >> 8) as usize % SLOT;
                            let byte = raw.map.wrapping_add(CONTROL_LEN + at);
                            // SAFETY: one byte inside the request slot.
                            unsafe { byte.write_volatile((r >> 40) as u8) };
                            raw.ring();
                        }
                    }
                    if i % 256 == 0 && raw.ended() {
                        raw = RawArea::open(&m, true).expect("an area");
                        opened += 1;
                    }
                }
                opened
            });
            let _stop = SetOnDrop(&stop);
            for i in 0..2000 {
                let start = Instant::now();
                d.set(2, i).unwrap();
                assert_eq!(d.get(&1).unwrap(), Some(1));
                assert!(start.elapsed() < Duration::from_secs(5), "call {i} waited");
            }
            stop.store(true, Ordering::Relaxed);
            scribbler.join().unwrap()
        });
        eprintln!("scribbled areas: {opened} opened");
        assert!(
            wait_until(LIMIT, || m.number_of_objects().unwrap() == baseline),
            "{} objects, {baseline} before",
            m.number_of_objects().unwrap()
        );
    });
}

/// A hostile client that has its area's requests answered on its socket
/// (answers larger than the slot) and never reads them, publishing one
/// request after another: the server holds a bounded amount for it, and
/// another client's calls all succeed.
#[test]
fn a_client_that_never_reads_its_answers_costs_the_server_bounded_memory() {
    use common::pickle::{request, returned_ident, P};
    watchdog("unread answers", LIMIT, || {
        let m = Manager::start().unwrap();
        let server = m.server_pid().unwrap();
        let d = m.dict::<u32, u32>().unwrap();
        d.set(1, 1).unwrap();
        let raw = RawArea::open(&m, true).expect("an area");
        let ident =
            returned_ident(&raw.call(&request(None, "create", vec![common::pickle::s("dict")])));
        let big = "x".repeat(60_000);
        for k in 0..40 {
            let answer = raw.call(&request(
                Some(&ident),
                "__setitem__",
                vec![P::Int(k), common::pickle::s(&big)],
            ));
            assert!(answer.windows(7).any(|w| w == b"#RETURN"), "{answer:?}");
        }
        let rss = || {
            let status = std::fs::read_to_string(format!("/proc/{server}/status")).unwrap();
            let line = status
                .lines()
                .find(|l| l.starts_with("VmRSS:"))
                .unwrap()
                .to_owned();
            line.split_whitespace()
                .nth(1)
                .unwrap()
                .parse::<u64>()
                .unwrap()
                << 10
        };
        let before = rss();
        let copy = request(Some(&ident), "copy", vec![]);
        let seq = raw.request(&copy, copy.len() as u32);
        assert!(wait_until(LIMIT, || raw
            .word(ANSWER_SEQ)
            .load(Ordering::SeqCst)
            == seq));
        assert_eq!(
            raw.word(ANSWER_LEN).load(Ordering::SeqCst),
            u32::MAX,
            "on the socket"
        );
        for i in 0..500 {
            raw.request(&copy, copy.len() as u32);
            d.set(2, i).unwrap();
            assert_eq!(d.get(&1).unwrap(), Some(1));
        }
        let grown = rss().saturating_sub(before);
        eprintln!("unread answers: the server grew by {} KiB", grown >> 10);
        assert!(grown < 64 << 20, "the server grew by {grown} bytes");
        drop(raw);
        assert_eq!(d.get(&1).unwrap(), Some(1));
    });
}

/// A pickled float (`BINFLOAT`).
fn float(f: f64) -> common::pickle::P {
    let mut bytes = vec![b'G'];
    bytes.extend(f.to_be_bytes());
    common::pickle::P::Raw(bytes)
}

/// Calls that wait on the server (a queue's `get`) made through the area,
/// with timeouts of zero, a short one, and forever (`inf`, and the largest
/// float): each answer comes back through the area when it is due (one
/// that another area's call woke came only when the server's poll next
/// woke, up to a second later); a
/// client that dies while its call waits forever takes nothing from the
/// queue, and the others are served meanwhile.
#[test]
fn waiting_calls_through_the_area_with_timeouts_from_zero_to_forever() {
    use common::pickle::{request, returned_ident, s, P};
    watchdog("waiting calls", LIMIT, || {
        let m = Manager::start().unwrap();
        let d = m.dict::<u32, u32>().unwrap();
        d.set(1, 1).unwrap();
        let a = RawArea::open(&m, true).expect("an area");
        let b = RawArea::open(&m, true).expect("an area");
        let q = returned_ident(&a.call(&request(None, "create", vec![s("Queue")])));
        let held = b.call(&request(None, "incref", vec![s(&q)]));
        assert!(held.windows(7).any(|w| w == b"#RETURN"), "{held:?}");
        let get = |timeout: P| request(Some(&q), "get", vec![P::Int(1), timeout]);
        let put = |v: i64| request(Some(&q), "put", vec![P::Int(v)]);
        let empty = |answer: &[u8]| answer.windows(5).any(|w| w == b"Empty");
        // Zero, and a short wait: `Empty`, through the area.
        assert!(empty(&a.call(&get(P::Int(0)))));
        let start = Instant::now();
        assert!(empty(&a.call(&get(float(0.05)))));
        assert!(start.elapsed() >= Duration::from_millis(50));
        // Past `threading.TIMEOUT_MAX`, a call that must wait is Python's
        // `OverflowError`, at once.
        for too_long in [float(f64::INFINITY), float(f64::MAX), P::Int(i64::MAX)] {
            let answer = a.call(&get(too_long));
            assert!(
                answer.windows(13).any(|w| w == b"OverflowError"),
                "{answer:?}"
            );
        }
        for forever in [P::None, float(1e9), P::Int(9_000_000_000)] {
            let seq = a.request(&get(forever.clone()), get(forever).len() as u32);
            // Others are served while it waits.
            d.set(2, 2).unwrap();
            assert_eq!(d.get(&1).unwrap(), Some(1));
            let put42 = put(42);
            assert!(b.call(&put42).windows(7).any(|w| w == b"#RETURN"));
            // At once, not at the server's next look at the clock (its
            // poll slept up to a second with the answer undelivered).
            let put_at = Instant::now();
            let answer = a.answer(seq);
            let late = put_at.elapsed();
            assert!(
                late < Duration::from_millis(500),
                "answered {late:?} after the put"
            );
            assert!(answer.windows(7).any(|w| w == b"#RETURN"), "{answer:?}");
            assert!(!empty(&answer));
        }
        // Dead while it waits forever: the item put next stays in the queue.
        a.request(&get(P::None), get(P::None).len() as u32);
        assert_eq!(d.get(&1).unwrap(), Some(1));
        drop(a);
        assert!(b.call(&put(7)).windows(7).any(|w| w == b"#RETURN"));
        let left = b.call(&request(Some(&q), "qsize", vec![]));
        assert!(
            left.windows(2).any(|w| w == b"K\x01")
                || left.windows(5).any(|w| w == b"J\x01\x00\x00\x00"),
            "{left:?}"
        );
    });
}

/// A peer that takes the key and answers a client's first requests but
/// never the fast path's setup (a stuck server, or no manager) is refused
/// within the handshake's time limit (20 s), as one that does not answer
/// the first requests is: the client's call fails, never hangs.
#[test]
fn a_server_that_never_answers_the_setup_is_refused_in_time() {
    watchdog("unanswered setup", LIMIT, || {
        let path = std::env::temp_dir().join(format!(
            "multiproc-test-fast-attack-{}.sock",
            std::process::id()
        ));
        let address = multiproc::conn::Address::Unix(path.clone());
        let key = b"fast path attack key".to_vec();
        let listener = multiproc::conn::Listener::bind(&address, Some(&key)).unwrap();
        let child = static_child(move || {
            let start = Instant::now();
            let result = Manager::connect(address, &key).and_then(|m| m.number_of_objects());
            assert!(matches!(result, Err(Error::ManagerGone(_))), "{result:?}");
            assert!(
                start.elapsed() < Duration::from_secs(40),
                "{:?}",
                start.elapsed()
            );
        });
        let mut conn = listener.accept().unwrap();
        let none: &[u8] = b"\x80\x02X\x07\x00\x00\x00#RETURNN\x86.";
        // Until the client gives up, and closes its connection.
        while let Ok(request) = conn.recv_bytes() {
            if !request.windows(19).any(|w| w == b"_multiproc_fastpath") {
                conn.send_bytes(none).unwrap();
            }
        }
        let _ = std::fs::remove_file(&path);
        assert_eq!(join(&child, LIMIT), 0);
    });
}

/// More connections asking for an area than the server grants (256): the
/// others stay on their sockets, every call of every connection is
/// answered, and an area given back is granted again.
#[test]
fn more_connections_than_areas_all_work() {
    const CONNECTIONS: usize = 270;
    watchdog("many connections", LIMIT, || {
        alone(|| {
            let m = Manager::start().unwrap();
            let (address, key) = (m.address().clone(), m.authkey().to_vec());
            let d = m.dict::<u32, u32>().unwrap();
            let before = areas_mapped();
            let mut handles: Vec<_> = (0..CONNECTIONS)
                .map(|_| Manager::connect(address.clone(), &key).unwrap())
                .collect();
            for (i, h) in handles.iter().enumerate() {
                h.number_of_objects().unwrap();
                d.set(i as u32, i as u32).unwrap();
            }
            let areas = new_areas(&before, &areas_mapped()).len();
            assert_eq!(areas, 256 - 1, "one is the first connection's");
            for (i, h) in handles.iter().enumerate() {
                assert!(h.number_of_objects().unwrap() >= 1, "{i}");
            }
            assert_eq!(d.len().unwrap(), CONNECTIONS);
            // Given back with its connection, then granted again.
            handles.truncate(10);
            let again = Manager::connect(address, &key).unwrap();
            again.number_of_objects().unwrap();
            assert_eq!(areas_mapped().len(), 10 + 2, "ten kept, the first, the new");
        });
    });
}
