//! The fast path: a Rust client on the same machine sends its requests and
//! reads its answers through shared memory instead of its socket.
//!
//! # Design
//!
//! The socket stays for everything it is good at: authentication, telling
//! either side that the other is gone, requests and answers too large for
//! the area, and every client that is not a Rust client on a `unix:`
//! address (Python's, remote ones). After authentication (and
//! `_multiproc_hold`), a Rust client asks for an area with a private
//! request, [`setup_request`] (`(None, '_multiproc_fastpath', (1,), {})`);
//! the server answers `('#RETURN', (1, REQUEST_CAP, ANSWER_CAP))` in a frame
//! that carries two descriptors (`SCM_RIGHTS`): a memory file of
//! [`AREA_LEN`] bytes, sealed against shrinking and growing (a client can
//! never make the server's mapping fault), and one end of a socket pair,
//! the server's doorbell. Any other answer (a server without the fast
//! path, or one out of descriptors) leaves the client on its socket.
//!
//! The area is one request slot and one answer slot, each with its
//! control words on a cache line of its own ([`Control`]). A call:
//!
//! 1. the client writes the pickled request (the same bytes as a frame's)
//!    and its length, then publishes the next sequence number
//!    (`request_seq`); if the server said it is going to sleep
//!    (`server_asleep`), it sends one byte on the doorbell;
//! 2. the server (whose loop polls the doorbells beside the sockets, and
//!    spins a little over the areas after serving) sees a new sequence
//!    number, **copies the request out** before looking at it (the client
//!    may rewrite it meanwhile), bounds its length, and serves it as it
//!    would a frame;
//! 3. the server writes the answer and its length, then publishes the
//!    sequence number in `answer_seq`, and wakes the client (`FUTEX_WAKE`)
//!    if it said it sleeps (`client_asleep`); an answer larger than the
//!    slot goes on the socket, `answer_len` saying so;
//! 4. the client spins a little for the answer, then waits on the futex in
//!    slices, looking at its socket between them: a server that died
//!    closed it, and the call fails with `ManagerGone`, never hangs.
//!
//! Both sleep flags follow the store-then-load order of Dekker's
//! algorithm (sequentially consistent atomics on both sides), so a wake-up
//! is never lost. How long each side spins is the server's choice: it
//! spins only while there are CPUs for it and its busy clients, and it
//! tells the clients how long to spin (`client_spin_ns`), so that with more
//! busy clients than CPUs nobody burns a CPU another one needs.
//!
//! What a client can do to the server through its area is what it can do
//! through its socket: send requests. The server never trusts the area:
//! every length is bounded before use, the bytes are copied before they
//! are decoded, the area's size cannot change under it, and a request it
//! cannot take (a length beyond the slot) ends that client's connection
//! only. The doorbell is a socket of the server's own (never a descriptor
//! whose blocking mode a client could change), read without waiting.
//! A client that dies mid-call leaves an area that is freed with its
//! connection; a forked child never uses its parent's area (each process
//! has its own connection, see `client`), nor even has it: the mapping is
//! not inherited, and the doorbell is made inert in the child with the
//! socket.

use std::io;
use std::mem::ManuallyDrop;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use memmap2::{Advice, MmapOptions, MmapRaw};

use super::pickle;
use super::PyValue;
use crate::conn::auth::HANDSHAKE_TIMEOUT;
use crate::conn::{frame, Connection};
use crate::error::{Error, Result};
use crate::sys;

/// The version of the area's layout, in the setup request and answer.
const VERSION: i64 = 1;
/// The bytes of the control words at the start of the area.
const CONTROL_LEN: usize = 4096;
/// The largest request that travels through the area.
pub(crate) const REQUEST_CAP: usize = 64 << 10;
/// The largest answer that travels through the area.
pub(crate) const ANSWER_CAP: usize = 64 << 10;
/// The area: control words, the request slot, the answer slot.
pub(crate) const AREA_LEN: usize = CONTROL_LEN + REQUEST_CAP + ANSWER_CAP;
/// `answer_len` of an answer that comes on the socket instead.
const ON_SOCKET: u32 = u32::MAX;
/// The longest a waiting client sleeps before it looks at its socket.
const SLICE: Duration = Duration::from_millis(50);
/// The most a client is told to spin (the server may say less).
const CLIENT_SPIN_MAX: Duration = Duration::from_micros(50);

/// How long one side spins for the other before it sleeps, adapted to
/// what spinning gets. A spin that caught the other side doubles (and is
/// at least four times that wait); one that missed halves, down to none.
/// A machine with CPUs to spare keeps both sides spinning (a call then
/// costs no system call); on a busy one, where the other side is often not
/// running at all, spinning soon stops wasting its share of a CPU on it.
/// Without a spin, one wait in [`PROBE_EVERY`](Self::PROBE_EVERY) spins
/// for the whole allowed time all the same: when both sides sleep, each
/// one's waits include the other's wake-up, so only a probe long enough
/// to cover one can find out that spinning would pay again.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Spin {
    ns: u32,
    /// Waits in a row without a spin, to know when to probe.
    idle: u32,
}

impl Spin {
    /// The shortest spin worth doing.
    const FLOOR_NS: u32 = 2_000;
    /// One wait in this many probes when the spin is none.
    const PROBE_EVERY: u32 = 32;

    pub(crate) const fn new() -> Spin {
        Spin {
            ns: 10_000,
            idle: 0,
        }
    }

    /// How long to spin for the next wait, at most `max`.
    pub(crate) fn budget(&mut self, max: Duration) -> Duration {
        if self.ns == 0 {
            self.idle += 1;
            if self.idle < Self::PROBE_EVERY {
                return Duration::ZERO;
            }
            self.idle = 0;
            return max;
        }
        Duration::from_nanos(u64::from(self.ns)).min(max)
    }

    /// The spin caught the other side after `waited`.
    pub(crate) fn caught(&mut self, waited: Duration, max: Duration) {
        let ns = |d: Duration| d.as_nanos().min(u128::from(u32::MAX)) as u32;
        self.ns = self
            .ns
            .saturating_mul(2)
            .max(ns(waited).saturating_mul(4))
            .max(Self::FLOOR_NS)
            .min(ns(max));
    }

    /// The spin ran out before the other side came.
    pub(crate) fn missed(&mut self) {
        self.ns = if self.ns / 2 < Self::FLOOR_NS {
            0
        } else {
            self.ns / 2
        };
    }
}

/// The control words, each group written by one side only, on cache lines
/// of their own. In shared memory: reached through atomics only.
#[repr(C, align(64))]
struct Line([AtomicU32; 16]);

#[repr(C)]
struct Control {
    /// Written by the client: `[request_seq, request_len]`.
    request: Line,
    /// Written by the client: `[client_asleep]`.
    client: Line,
    /// Written by the server: `[answer_seq, answer_len]`.
    answer: Line,
    /// Written by the server: `[server_asleep, client_spin_ns]`.
    server: Line,
}

const _: () = assert!(std::mem::size_of::<Control>() <= CONTROL_LEN);

/// The private request that asks for an area,
/// `(None, '_multiproc_fastpath', (1,), {})`, pickled (protocol 2) as
/// written here: the server recognises these bytes exactly, so a request
/// no other client sends costs it no decoding.
pub(crate) const SETUP_REQUEST: &[u8] =
    b"\x80\x02(NX\x13\x00\x00\x00_multiproc_fastpath(J\x01\x00\x00\x00t}t.";

/// [`SETUP_REQUEST`].
pub(crate) fn setup_request() -> &'static [u8] {
    SETUP_REQUEST
}

/// The answer that grants an area (the descriptors travel with it).
fn setup_answer() -> Vec<u8> {
    let answer = PyValue::Tuple(vec![
        "#RETURN".into(),
        PyValue::Tuple(vec![
            PyValue::Int(VERSION),
            PyValue::Int(REQUEST_CAP as i64),
            PyValue::Int(ANSWER_CAP as i64),
        ]),
    ]);
    pickle::dumps(&answer, &PyValue::None)
}

/// The answer that refuses one: the client stays on its socket.
pub(crate) fn refusal() -> Vec<u8> {
    pickle::dumps(
        &PyValue::Tuple(vec!["#RETURN".into(), PyValue::None]),
        &PyValue::None,
    )
}

/// A mapping of an area, which a forked child never inherits
/// (`MADV_DONTFORK`): a child forked while another thread was in the
/// middle of a call keeps its copy of the connection's state, which it
/// never drops, and kept the area mapped with it for as long as it lived.
struct Area {
    map: ManuallyDrop<MmapRaw>,
    /// The process that mapped it, the only one that unmaps it: in a
    /// forked child, its addresses are not the area's (and may be a
    /// mapping of the child's own by the time the copy is dropped).
    pid: u32,
}

impl Area {
    fn map(fd: &impl AsRawFd) -> io::Result<Area> {
        let map = MmapOptions::new().len(AREA_LEN).map_raw(fd)?;
        map.advise(Advice::DontFork)?;
        Ok(Area {
            map: ManuallyDrop::new(map),
            pid: sys::cached_pid(),
        })
    }

    fn control(&self) -> &Control {
        // SAFETY: the mapping is AREA_LEN bytes, page-aligned (so aligned
        // for `Control`), alive as long as `self`; `Control` is atomics
        // only, for which any bytes are valid and which another process
        // may change at any time.
        unsafe { &*self.map.as_ptr().cast::<Control>() }
    }

    fn request_slot(&self) -> *mut u8 {
        // SAFETY: CONTROL_LEN is within the mapping.
        unsafe { self.map.as_mut_ptr().add(CONTROL_LEN) }
    }

    fn answer_slot(&self) -> *mut u8 {
        // SAFETY: CONTROL_LEN + REQUEST_CAP is within the mapping.
        unsafe { self.map.as_mut_ptr().add(CONTROL_LEN + REQUEST_CAP) }
    }
}

/// What the server found in an area.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Taken {
    /// No new request.
    Nothing,
    /// A request (copied out) with this sequence number.
    Request(u32),
    /// A request the server will not take (its length is beyond the slot):
    /// the client ends.
    Bad,
}

/// The server's side of one client's area.
pub(crate) struct ServerArea {
    area: Area,
    /// The server's end of the doorbell.
    doorbell: OwnedFd,
    /// The sequence number of the last request taken.
    seen: u32,
    /// Which area this is, of all the server made (see [`ServerArea::serial`]).
    serial: u64,
}

/// How many areas the server has made.
static AREAS_MADE: AtomicU64 = AtomicU64::new(0);

impl ServerArea {
    /// A new area, and what the client gets of it: the memory file and its
    /// end of the doorbell.
    pub(crate) fn create() -> io::Result<(ServerArea, OwnedFd, OwnedFd)> {
        let memfd = sys::sealed_memfd("multiproc-manager-fastpath", AREA_LEN)?;
        let area = Area::map(&memfd)?;
        let (doorbell, theirs) = sys::socketpair()?;
        let server = ServerArea {
            area,
            doorbell,
            seen: 0,
            serial: AREAS_MADE.fetch_add(1, Ordering::Relaxed),
        };
        server.set_client_spin(CLIENT_SPIN_MAX);
        Ok((server, memfd, theirs))
    }

    /// The frame (header included) that grants the area.
    pub(crate) fn grant_frame() -> Vec<u8> {
        let mut out = Vec::new();
        // A small frame always has a header.
        let _ = frame::push(&mut out, &setup_answer());
        out
    }

    /// The server's end of the doorbell, to poll.
    pub(crate) fn doorbell(&self) -> &OwnedFd {
        &self.doorbell
    }

    /// A number no other area of this server has: what its doorbell is,
    /// for the server's [`Poller`](crate::sys::Poller).
    pub(crate) fn serial(&self) -> u64 {
        self.serial
    }

    /// Whether the client published a request not yet taken.
    pub(crate) fn pending(&self) -> bool {
        self.area.control().request.0[0].load(Ordering::SeqCst) != self.seen
    }

    /// Copies a new request, if there is one, into `into`.
    pub(crate) fn take_request(&mut self, into: &mut Vec<u8>) -> Taken {
        let c = self.area.control();
        let seq = c.request.0[0].load(Ordering::Acquire);
        if seq == self.seen {
            return Taken::Nothing;
        }
        self.seen = seq;
        let len = c.request.0[1].load(Ordering::Acquire) as usize;
        if len > REQUEST_CAP {
            return Taken::Bad;
        }
        into.clear();
        into.resize(len, 0);
        // SAFETY: `len` ≤ REQUEST_CAP bytes from the request slot are
        // inside the mapping, and `into` holds that many; the client may
        // write them meanwhile, which only changes what bytes are copied
        // (they are plain bytes, decoded only once copied).
        unsafe { std::ptr::copy_nonoverlapping(self.area.request_slot(), into.as_mut_ptr(), len) };
        Taken::Request(seq)
    }

    /// Publishes the answer to request `seq`; `false` if it is too large
    /// for the slot (then [`answer_on_socket`](Self::answer_on_socket)).
    pub(crate) fn answer(&self, seq: u32, bytes: &[u8]) -> bool {
        if bytes.len() > ANSWER_CAP {
            return false;
        }
        // SAFETY: at most ANSWER_CAP bytes into the answer slot, inside the
        // mapping; `bytes` is the server's own.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.area.answer_slot(), bytes.len())
        };
        self.publish(seq, bytes.len() as u32);
        true
    }

    /// Tells the client that the answer to `seq` comes on the socket: to
    /// be called before that answer is sent.
    pub(crate) fn answer_on_socket(&self, seq: u32) {
        self.publish(seq, ON_SOCKET);
    }

    fn publish(&self, seq: u32, len: u32) {
        let c = self.area.control();
        c.answer.0[1].store(len, Ordering::Relaxed);
        c.answer.0[0].store(seq, Ordering::SeqCst);
        if c.client.0[0].load(Ordering::SeqCst) != 0 {
            sys::futex_wake(&c.answer.0[0], 1);
        }
    }

    /// Says whether the server is about to sleep in poll (then a client
    /// rings the doorbell); once set, the caller looks at
    /// [`pending`](Self::pending) again before it sleeps.
    pub(crate) fn set_asleep(&self, asleep: bool) {
        self.area.control().server.0[0].store(u32::from(asleep), Ordering::SeqCst);
    }

    /// How long the client should spin for an answer before it sleeps.
    pub(crate) fn set_client_spin(&self, spin: Duration) {
        let ns = spin.min(CLIENT_SPIN_MAX).as_nanos() as u32;
        self.area.control().server.0[1].store(ns, Ordering::Relaxed);
    }

    /// Empties the doorbell (a bounded amount, without waiting); `false`
    /// if the client's end is closed or shut down (its hang-up would keep
    /// the doorbell readable, and the server's poll spinning, for as long
    /// as the client lives): the caller takes the area away.
    pub(crate) fn drain_doorbell(&self) -> bool {
        let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 256];
        for _ in 0..4 {
            match sys::recv_nowait(&self.doorbell, &mut buf) {
                Ok(n) if n == buf.len() => {}
                Ok(0) => return false,
                Ok(_) => return true,
                Err(e) => {
                    return matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                    )
                }
            }
        }
        true
    }
}

/// The client's side of its area.
pub(crate) struct ClientArea {
    area: Area,
    doorbell: OwnedFd,
    seq: u32,
    spin: Spin,
}

/// What a call through the area came to.
pub(crate) enum Called {
    /// The answer's bytes.
    Answer(Vec<u8>),
    /// The answer comes on the socket.
    OnSocket,
}

impl ClientArea {
    /// Asks for an area on `conn` (an authenticated connection with nothing
    /// under way): `None` if the server grants none; an error leaves the
    /// connection unusable.
    pub(crate) fn setup(conn: &mut Connection) -> Result<Option<ClientArea>> {
        conn.send_bytes(setup_request())?;
        let mut got = Vec::new();
        let mut fds = Vec::new();
        let mut chunk = vec![0u8; 16 << 10];
        // Descriptors the kernel could not give this process (out of
        // descriptors): the answer is read whole all the same, and the
        // connection goes on without an area.
        let mut cut = false;
        // Within the handshake's time, as the connection's first answers:
        // a peer that never answers is no manager (or a stuck one), and
        // its client fails rather than wait for ever.
        // (The descriptor's readiness: nothing of the answer is buffered
        // in `conn`, which read the earlier answers whole and nothing more.)
        let deadline = sys::Deadline::after(HANDSHAKE_TIMEOUT);
        let len = loop {
            let ready = sys::poll_readable(&[conn.as_raw_fd()], deadline)
                .map_err(|e| Error::ManagerGone(format!("fast path setup: {e}")))?;
            if !ready[0] {
                return Err(Error::ManagerGone(format!(
                    "no answer to the fast path setup within {HANDSHAKE_TIMEOUT:?}: not a manager?"
                )));
            }
            let (n, more, lost) = sys::recv_some_fds(conn, &mut chunk, 2, true)
                .map_err(|e| Error::ManagerGone(format!("fast path setup: {e}")))?;
            cut |= lost;
            if n == 0 {
                return Err(Error::ManagerGone(
                    "the server closed the connection".into(),
                ));
            }
            fds.extend(more);
            got.extend_from_slice(&chunk[..n]);
            if let Some((header, len)) = frame::parse_header(&got)? {
                // The answer is read whole and nothing more (a server
                // sends nothing unasked): a server without the fast path
                // answers with an error of its own, and the connection
                // goes on without an area.
                if len > super::objects::MAX_FRAME as u64 {
                    return Err(Error::Deserialize(
                        "a long answer to the fast path setup".into(),
                    ));
                }
                let whole = header + len as usize;
                if got.len() >= whole {
                    if got.len() > whole {
                        return Err(Error::Deserialize(
                            "more than one answer to the fast path setup".into(),
                        ));
                    }
                    break header;
                }
            }
        };
        let mut budget = super::limits::Budget::new(4096, 1 << 16);
        let granted = matches!(
            pickle::loads_answer(&got[len..], &mut budget),
            Ok(PyValue::Tuple(t)) if matches!(t.as_slice(), [PyValue::Str(k), PyValue::Tuple(v)]
                if k == "#RETURN" && v.as_slice() == [
                    PyValue::Int(VERSION),
                    PyValue::Int(REQUEST_CAP as i64),
                    PyValue::Int(ANSWER_CAP as i64),
                ])
        );
        let mut fds = fds.into_iter();
        let (Some(memfd), Some(doorbell), None, true, false) =
            (fds.next(), fds.next(), fds.next(), granted, cut)
        else {
            return Ok(None);
        };
        // The client bounds what it takes from its server too: an area it
        // maps is big enough and can never shrink under it (a fault there
        // would kill this process); one it cannot map (out of memory) it
        // does without.
        if !sys::is_sealed_at_least(&memfd, AREA_LEN) {
            return Ok(None);
        }
        let Ok(area) = Area::map(&memfd) else {
            return Ok(None);
        };
        let seq = area.control().request.0[0].load(Ordering::Relaxed);
        Ok(Some(ClientArea {
            area,
            doorbell,
            seq,
            spin: Spin::new(),
        }))
    }

    /// The client's end of the doorbell (which a forked child makes inert,
    /// as it does the connection's socket).
    pub(crate) fn doorbell(&self) -> &OwnedFd {
        &self.doorbell
    }

    /// Whether a request of `len` bytes travels through the area.
    pub(crate) fn fits(&self, len: usize) -> bool {
        len <= REQUEST_CAP
    }

    /// Sends `request` (which [`fits`](Self::fits)) through the area and
    /// waits for the answer, watching `conn` for the server's end, until
    /// `deadline` if there is one ([`Error::Timeout`]). An error leaves the
    /// connection unusable.
    pub(crate) fn call(
        &mut self,
        conn: &Connection,
        request: &[u8],
        deadline: sys::Deadline,
    ) -> Result<Called> {
        let c = self.area.control();
        // SAFETY: `request` fits the request slot (the caller checked), inside
        // the mapping; only this client writes it.
        unsafe {
            std::ptr::copy_nonoverlapping(request.as_ptr(), self.area.request_slot(), request.len())
        };
        c.request.0[1].store(request.len() as u32, Ordering::Relaxed);
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        c.request.0[0].store(seq, Ordering::SeqCst);
        let asleep = c.server.0[0].load(Ordering::SeqCst) != 0;
        if asleep {
            // A full doorbell already rings; a gone server is seen below.
            let _ = sys::send_nowait(&self.doorbell, &[1]);
        }
        self.wait(conn, seq, !asleep, deadline)?;
        let len = self.area.control().answer.0[1].load(Ordering::Acquire);
        if len == ON_SOCKET {
            return Ok(Called::OnSocket);
        }
        let len = len as usize;
        if len > ANSWER_CAP {
            return Err(Error::Deserialize(format!(
                "the server's answer of {len} bytes overflows its area"
            )));
        }
        let mut out = vec![0; len];
        // SAFETY: `len` ≤ ANSWER_CAP bytes of the answer slot, inside the
        // mapping, into `out`, which holds that many.
        unsafe { std::ptr::copy_nonoverlapping(self.area.answer_slot(), out.as_mut_ptr(), len) };
        Ok(Called::Answer(out))
    }

    /// Waits until the server published the answer to `seq`: spinning as
    /// long as it says, then sleeping on the futex in slices, between which
    /// a closed socket means the server is gone.
    fn wait(
        &mut self,
        conn: &Connection,
        seq: u32,
        awake: bool,
        deadline: sys::Deadline,
    ) -> Result<()> {
        let c = self.area.control();
        let word = &c.answer.0[0];
        let max = Duration::from_nanos(u64::from(c.server.0[1].load(Ordering::Relaxed)))
            .min(CLIENT_SPIN_MAX);
        // A server that was asleep answers after a wake-up: not worth a
        // spin (and on a loaded machine, spinning then takes the CPU it
        // needs to wake up on).
        let spin = if awake {
            self.spin.budget(max)
        } else {
            Duration::ZERO
        };
        if !spin.is_zero() {
            let start = Instant::now();
            let caught = 'spin: loop {
                for _ in 0..64 {
                    if word.load(Ordering::Acquire) == seq {
                        break 'spin true;
                    }
                    std::hint::spin_loop();
                }
                if start.elapsed() >= spin {
                    break false;
                }
            };
            if caught {
                self.spin.caught(start.elapsed(), max);
                return Ok(());
            }
            self.spin.missed();
        }
        self.sleep(conn, seq, deadline)
    }

    /// The sleeping part of [`wait`](Self::wait).
    fn sleep(&self, conn: &Connection, seq: u32, deadline: sys::Deadline) -> Result<()> {
        let c = self.area.control();
        let word = &c.answer.0[0];
        loop {
            c.client.0[0].store(1, Ordering::SeqCst);
            let seen = word.load(Ordering::SeqCst);
            if seen == seq {
                c.client.0[0].store(0, Ordering::Relaxed);
                return Ok(());
            }
            sys::futex_wait(word, seen, sys::Deadline::after(SLICE));
            c.client.0[0].store(0, Ordering::Relaxed);
            if word.load(Ordering::Acquire) == seq {
                return Ok(());
            }
            let mut pfd = [sys::pollfd_for(conn.as_raw_fd(), true, false)];
            let _ = sys::poll(&mut pfd, sys::Deadline::Now);
            if sys::revents_readable(&pfd[0]) && word.load(Ordering::SeqCst) != seq {
                // The server writes on this socket only after it published
                // the answer: it closed it.
                return Err(Error::ManagerGone(
                    "the server closed the connection".into(),
                ));
            }
            if deadline.passed() {
                return Err(Error::Timeout);
            }
        }
    }
}

impl Drop for Area {
    fn drop(&mut self) {
        if sys::cached_pid() == self.pid {
            // SAFETY: dropped once, here, and never used again.
            unsafe { ManuallyDrop::drop(&mut self.map) };
        }
    }
}

impl AsFd for ServerArea {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.doorbell.as_fd()
    }
}

/// For the fuzzer only (built with `--cfg fuzzing`): an area whose control
/// words and request slot hold `data` (what a hostile client could leave
/// there), read as the server reads it, and what it holds served by a
/// server's object table; the server must take a request or refuse it,
/// never read outside the area, never panic.
#[cfg(fuzzing)]
pub fn fuzz_area(data: &[u8]) {
    use super::objects::{Answer, Objects, Session};
    thread_local! {
        static STATE: std::cell::RefCell<Option<(ServerArea, Objects, Session)>> =
            const { std::cell::RefCell::new(None) };
    }
    STATE.with_borrow_mut(|state| {
        let (area, objects, session) = state.get_or_insert_with(|| {
            let (area, _, _) = ServerArea::create().expect("an area");
            let objects = Objects::new(PyValue::from("/fuzz.sock"), Default::default());
            (area, objects, Session::default())
        });
        // The first 8 bytes over the request's control words (its sequence
        // number and length), the rest over the request slot.
        let (words, bytes) = data.split_at(data.len().min(8));
        let bytes = &bytes[..bytes.len().min(REQUEST_CAP)];
        // SAFETY: at most 8 bytes over the control words and a slot's
        // bytes over the request slot, inside the mapping, from the
        // fuzzer's bytes.
        unsafe {
            std::ptr::copy_nonoverlapping(words.as_ptr(), area.area.map.as_mut_ptr(), words.len())
        };
        // SAFETY: as above.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), area.area.request_slot(), bytes.len())
        };
        // The client's sleep flag, scribbled too (with the sequence
        // number's bytes): the server's wake-up of any word's value.
        let c = area.area.control();
        let flag = c.request.0[0].load(Ordering::Relaxed);
        c.client.0[0].store(flag, Ordering::Relaxed);
        let mut buf = Vec::new();
        match area.take_request(&mut buf) {
            Taken::Request(seq) => {
                assert!(buf.len() <= REQUEST_CAP);
                if buf.windows(8).any(|w| w == b"shutdown") {
                    return;
                }
                if let Answer::Reply(reply, _, _) = objects.answer(&buf, session, 1) {
                    let len = if area.answer(seq, &reply) {
                        reply.len() as u32
                    } else {
                        area.answer_on_socket(seq);
                        ON_SOCKET
                    };
                    let c = area.area.control();
                    assert_eq!(c.answer.0[0].load(Ordering::SeqCst), seq, "answered");
                    assert_eq!(c.answer.0[1].load(Ordering::SeqCst), len, "its length");
                }
            }
            Taken::Bad | Taken::Nothing => {}
        }
        assert!(!area.pending(), "a request taken is not pending");
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manager::limits::Budget;

    /// The setup request is the request it says it is.
    #[test]
    fn the_setup_request_decodes_to_its_call() {
        let mut budget = Budget::new(4096, 1 << 16);
        let v = pickle::loads_answer(SETUP_REQUEST, &mut budget).expect("a pickle");
        assert_eq!(
            v,
            PyValue::Tuple(vec![
                PyValue::None,
                "_multiproc_fastpath".into(),
                PyValue::Tuple(vec![PyValue::Int(VERSION)]),
                PyValue::Dict(Vec::new()),
            ])
        );
    }

    /// A request is copied out whole, once; a length beyond the slot is
    /// refused; an answer too large for its slot is not written.
    #[test]
    fn the_server_bounds_what_it_reads() {
        let (mut server, memfd, _theirs) = ServerArea::create().unwrap();
        let client = Area::map(&memfd).unwrap();
        let c = client.control();
        let mut buf = Vec::new();
        assert_eq!(server.take_request(&mut buf), Taken::Nothing);
        // SAFETY: 3 bytes into the request slot.
        unsafe { std::ptr::copy_nonoverlapping(b"abc".as_ptr(), client.request_slot(), 3) };
        c.request.0[1].store(3, Ordering::Relaxed);
        c.request.0[0].store(7, Ordering::SeqCst);
        assert!(server.pending());
        assert_eq!(server.take_request(&mut buf), Taken::Request(7));
        assert_eq!(buf, b"abc");
        assert!(!server.pending());
        assert_eq!(server.take_request(&mut buf), Taken::Nothing);
        c.request.0[1].store(REQUEST_CAP as u32 + 1, Ordering::Relaxed);
        c.request.0[0].store(8, Ordering::SeqCst);
        assert_eq!(server.take_request(&mut buf), Taken::Bad);
        c.request.0[1].store(u32::MAX, Ordering::Relaxed);
        c.request.0[0].store(9, Ordering::SeqCst);
        assert_eq!(server.take_request(&mut buf), Taken::Bad);
        assert!(!server.answer(9, &vec![0; ANSWER_CAP + 1]));
        assert!(server.answer(9, b"ok"));
        assert_eq!(c.answer.0[0].load(Ordering::SeqCst), 9);
        assert_eq!(c.answer.0[1].load(Ordering::SeqCst), 2);
    }

    /// A client and a server handing calls back and forth, each spinning
    /// as its [`Spin`] says (the client not at all while the server is
    /// asleep, as `ClientArea::wait` does). Each side works `busy` on what
    /// it got; one that slept takes `wake` more to notice the other (a
    /// wake-up; on a loaded machine, the time until it runs again).
    /// Returns, over the last half of `calls`, the share of waits caught
    /// spinning, and the spin wasted per wait.
    fn hand_off(calls: u32, busy: Duration, wake: Duration) -> (f64, Duration) {
        let max = CLIENT_SPIN_MAX;
        let (mut client, mut server) = (Spin::new(), Spin::new());
        let mut server_awake = false;
        let (mut caught, mut waits, mut wasted) = (0u32, 0u32, Duration::ZERO);
        for call in 0..calls {
            let counted = call >= calls / 2;
            let mut wait = |spin: &mut Spin, allowed: bool, other_awake: bool| {
                let budget = if allowed {
                    spin.budget(max)
                } else {
                    Duration::ZERO
                };
                let came = busy + if other_awake { Duration::ZERO } else { wake };
                let hit = !budget.is_zero() && came <= budget;
                if hit {
                    spin.caught(came, max);
                } else if !budget.is_zero() {
                    spin.missed();
                }
                if counted {
                    waits += 1;
                    caught += u32::from(hit);
                    wasted += if hit { Duration::ZERO } else { budget };
                }
                hit
            };
            // The client publishes a request and waits for the answer.
            let client_awake = wait(&mut client, server_awake, server_awake);
            // The server answered and waits for the next request.
            server_awake = wait(&mut server, true, client_awake);
        }
        (f64::from(caught) / f64::from(waits), wasted / waits)
    }

    /// With CPUs to spare (the other side answers in a few microseconds
    /// when it spins, a wake-up later when it slept), both sides end up
    /// spinning, whatever they started from: a call costs no system call.
    /// (A rule that only grew a spin that had caught the other side left
    /// both asleep for good, each call paying a doorbell and a futex wake.)
    #[test]
    fn idle_cpus_bring_both_sides_to_spin() {
        for wake in [5, 20, 45] {
            let (caught, wasted) =
                hand_off(400, Duration::from_micros(2), Duration::from_micros(wake));
            assert_eq!(caught, 1.0, "wake-up of {wake} us: {caught} caught");
            assert_eq!(wasted, Duration::ZERO);
        }
    }

    /// When the other side is not running (a loaded machine: it answers
    /// only after milliseconds), spinning stops but for rare probes: the
    /// CPU goes to whoever can use it.
    #[test]
    fn a_peer_that_is_not_running_is_not_spun_for() {
        let (_, wasted) = hand_off(2000, Duration::from_micros(2), Duration::from_millis(2));
        assert!(
            wasted <= CLIENT_SPIN_MAX / Spin::PROBE_EVERY,
            "{wasted:?} spun in vain per wait"
        );
    }

    /// The client cannot change the area's size under the server.
    #[test]
    fn the_area_is_sealed() {
        let (_server, memfd, _theirs) = ServerArea::create().unwrap();
        // SAFETY: plain syscall on a descriptor we own.
        let r = unsafe { libc::ftruncate(std::os::fd::AsRawFd::as_raw_fd(&memfd), 0) };
        assert_eq!(r, -1);
        // SAFETY: as above.
        let r = unsafe { libc::ftruncate(std::os::fd::AsRawFd::as_raw_fd(&memfd), 1 << 30) };
        assert_eq!(r, -1);
    }
}
