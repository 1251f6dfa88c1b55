//! The manager server's event loop: accepts clients, runs their
//! handshakes, reads their frames and sends the answers, serving every
//! connection from one thread; what a command does is `objects`' business.

use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd};
use std::time::{Duration, Instant};

use super::fast::{self, ServerArea, Spin, Taken};
use super::limits::MAX_WORK;
use super::objects::{Answer, Objects, Session, MAX_FRAME};
use super::refs;
use crate::conn::auth::{Handshake, Side, HANDSHAKE_MAX, HANDSHAKE_TIMEOUT};
use crate::conn::{frame, Connection, Listener, READ_CHUNK};
use crate::sys;

/// How long a shutting-down server tries to deliver the last responses.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// When a server that starts shutting down now stops delivering responses
/// (a constant grace: the sum cannot overflow).
fn shutdown_deadline() -> Instant {
    Instant::now() + SHUTDOWN_GRACE
}
/// The longest the loop waits in a blocking receive on its one client.
const RECV_TIMEOUT: Duration = Duration::from_millis(100);
/// How often the server checks that the process that started it is alive.
const PARENT_CHECK: Duration = Duration::from_secs(1);
/// Responses queued for one client beyond which the server stops reading
/// its requests until they are sent: a client that sends without reading
/// costs the server bounded memory.
const OUT_LIMIT: usize = 1 << 20;
/// Responses queued for all clients together beyond which the server reads
/// no requests until they drain, and ends the connections whose responses
/// have not moved for [`STALLED`]: a client that stops reading, on
/// thousands of connections, would otherwise have the server hold one
/// whole answer (up to a frame) per connection.
const TOTAL_OUT_LIMIT: usize = 256 << 20;
/// How long a connection's queued responses may stay unread, while the
/// server holds more than [`TOTAL_OUT_LIMIT`], before it ends.
const STALLED: Duration = Duration::from_secs(2);
/// Bytes of partly received requests the server holds for all clients
/// together, beyond what each connection holds freely ([`IN_FREE`]): a
/// connection whose request is larger than [`READ_CHUNK`] is read only
/// once it is granted what receiving it whole may take of this (see
/// [`grant_reads`]); the others wait, and the connections holding part of
/// it that do not send the rest end (see [`end_stalled_reads`]). Without
/// it, clients that send most of a request and never the rest would have
/// the server hold a frame's worth each, on any number of connections.
const TOTAL_IN_LIMIT: usize = 256 << 20;
/// The bytes of a receive buffer not counted in [`TOTAL_IN_LIMIT`]: what a
/// buffer grows to for requests up to [`READ_CHUNK`] (reads of that much,
/// doubling), with room to spare. (What only the connections' number
/// bounds, as their sockets' buffers in the kernel are.)
const IN_FREE: usize = 4 * READ_CHUNK;
/// The least a connection holding part of [`TOTAL_IN_LIMIT`] must receive
/// every [`STALLED`] while others wait for it: one that trickles a byte
/// now and then holds it as surely as one that sends nothing.
const IN_PROGRESS: usize = READ_CHUNK;
/// The most clients with a fast-path area at once; others stay on their
/// sockets (each area is memory and two descriptors of the server's).
const FAST_MAX: usize = 256;
/// How long the server goes on serving fast-path areas before it looks at
/// its sockets again (a socket client waits at most about this long more).
const FAST_TURN: Duration = Duration::from_micros(200);
/// How long the server spins over its fast-path areas for the next request
/// after serving one, while it has a CPU to itself.
const SERVER_SPIN: Duration = Duration::from_micros(50);
/// Beyond this many connections, those with nothing to do rest (see
/// [`restful`]): the kernel alone watches their sockets, and a round of
/// the loop walks only the others. (Up to it, a round walks them all: what
/// a resting connection costs to wake and put back to rest is more than
/// what a few idle ones cost a round.)
const REST_FROM: usize = 16;
/// How long a connection must have had nothing served before it rests: a
/// busy client between two requests would otherwise be put to rest and
/// woken again for each of them (out of the served list into `resting`,
/// and back in its place, a request: with many busy clients, a walk of
/// the list and a move of its tail each time).
const REST_AFTER: Duration = Duration::from_millis(2);
/// A fast-path client that made a request this recently counts as busy
/// (for whether spinning pays).
const BUSY: Duration = Duration::from_millis(2);

/// One client connection of the event loop.
struct Peer {
    /// Its number, which a waiting call's reply finds it by.
    id: u64,
    conn: Connection,
    /// Until the client has proved it knows the key: the handshake, and the
    /// moment it must be over.
    handshake: Option<(Handshake, Instant)>,
    /// Encoded responses not yet sent, and how much of them was.
    out: Vec<u8>,
    sent: usize,
    /// Bytes of responses sent, ever, and, while the server holds too many
    /// unsent ones, the count seen last and since when it has not moved.
    sent_total: u64,
    stall: Option<(u64, Instant)>,
    /// What of [`TOTAL_IN_LIMIT`] it was granted to receive its next
    /// request (a large one) in; it was refused it this turn (`starved`: its
    /// socket is not read until it is granted); and, while others wait,
    /// what it had received when last seen to make progress, and when.
    grant: usize,
    starved: bool,
    in_stall: Option<(usize, Instant)>,
    /// What it is to the objects (the references it holds).
    session: Session,
    /// A call of it waits on a queue: nothing more of it is served (its
    /// client waits for the reply) until the reply is queued.
    parked: bool,
    /// It sent more while its call waited (which a client that waits for
    /// its reply does not): its socket is no longer watched until then.
    sent_while_parked: bool,
    /// Close once `out` is sent (after a failed handshake).
    closing: bool,
    /// Its last turn ended before every buffered frame was served: serve
    /// it again without waiting for its socket.
    more: bool,
    /// Gone: its references are released and it is dropped.
    dead: bool,
    /// When it was last served (see [`REST_AFTER`]).
    served: Instant,
    /// Its fast-path area (see `fast`), once it asked for one.
    fast: Option<ServerArea>,
    /// The sequence number of its waiting call, if that came through the
    /// area (its reply goes there too).
    parked_fast: Option<u32>,
    /// When its last request through the area came.
    last_fast: Option<Instant>,
}

impl Peer {
    fn queue(&mut self, message: &[u8]) {
        // Answers over a frame's limit were replaced by an error
        // (`Objects::answer`); should one ever not fit a header, the
        // connection ends rather than carry a broken frame.
        if frame::push(&mut self.out, message).is_err() {
            self.closing = true;
        }
    }

    /// Sends what the socket takes now.
    fn flush(&mut self) {
        while self.sent < self.out.len() {
            match sys::send_nowait(&self.conn, &self.out[self.sent..]) {
                Ok(n) => {
                    self.sent += n;
                    self.sent_total += n as u64;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(_) => {
                    self.dead = true;
                    return;
                }
            }
        }
        self.out.clear();
        self.sent = 0;
        // A large answer's memory goes back once it is sent: an idle
        // connection would keep it for ever.
        if self.out.capacity() > 2 * READ_CHUNK {
            self.out.shrink_to(READ_CHUNK);
        }
        if self.closing {
            self.dead = true;
        }
    }

    fn pending(&self) -> bool {
        self.sent < self.out.len()
    }

    fn unsent(&self) -> usize {
        self.out.len() - self.sent
    }

    /// What its receive buffer takes of [`TOTAL_IN_LIMIT`]: what it was
    /// granted, or what the buffer takes beyond [`IN_FREE`] if more.
    fn held(&self) -> usize {
        self.conn
            .read_buffer_size()
            .saturating_sub(IN_FREE)
            .max(self.grant)
    }
}

/// What receiving a request of `frame` bytes (header included) may take
/// of [`TOTAL_IN_LIMIT`]: the receive buffer grows by reads of
/// [`READ_CHUNK`], doubling, to at most twice the request and two reads.
fn in_need(frame: usize) -> usize {
    frame.saturating_mul(2).saturating_add(2 * READ_CHUNK)
}

/// Grants what of [`TOTAL_IN_LIMIT`] is left to the connections whose next
/// request is larger than [`READ_CHUNK`] (oldest connection first), and
/// gives back the grants of those whose large request was received (and
/// the buffer's memory with it); whether one was refused (it is
/// `starved`: its socket is not read until it is granted).
fn grant_reads(peers: &mut [Peer]) -> bool {
    let mut total = 0;
    let mut wanting = false;
    for p in peers.iter_mut() {
        p.starved = false;
        // Idle (nothing buffered) with a small buffer, the common case,
        // costs a few loads.
        if p.grant > 0 || p.conn.buffered_len() > 0 || p.conn.read_buffer_size() > IN_FREE {
            let want = p
                .conn
                .next_frame_len()
                .filter(|&f| f > READ_CHUNK)
                .map_or(0, in_need);
            // (Not while what it holds takes most of it: the small
            // requests behind a large one are served first.)
            let size = p.conn.read_buffer_size();
            if want == 0 && size > IN_FREE.max(2 * p.conn.buffered_len()) {
                p.conn.trim_read_buffer(READ_CHUNK);
            }
            p.grant = p.grant.min(want);
            p.starved = want > p.grant;
            wanting |= p.starved;
        }
        total += p.held();
    }
    if !wanting {
        return false;
    }
    let mut refused = false;
    for p in peers.iter_mut().filter(|p| p.starved) {
        let Some(want) = p.conn.next_frame_len().map(in_need) else {
            continue;
        };
        let held = p.held();
        if total - held + want <= TOTAL_IN_LIMIT {
            total = total - held + want;
            p.grant = want;
            p.starved = false;
        } else {
            refused = true;
        }
    }
    refused
}

/// While a connection waits for [`TOTAL_IN_LIMIT`] (`waiting`), ends the
/// connections holding part of it that have received less than
/// [`IN_PROGRESS`] for [`STALLED`].
fn end_stalled_reads(peers: &mut [Peer], waiting: bool, now: Instant) {
    for p in peers.iter_mut() {
        if !waiting || p.held() == 0 {
            p.in_stall = None;
            continue;
        }
        let have = p.conn.buffered_len();
        match p.in_stall {
            Some((mark, since)) if (mark..mark + IN_PROGRESS).contains(&have) => {
                if now.duration_since(since) >= STALLED {
                    p.dead = true;
                }
            }
            _ => p.in_stall = Some((have, now)),
        }
    }
}

/// While the clients' unsent responses together exceed
/// [`TOTAL_OUT_LIMIT`], ends the connections whose responses have not
/// moved for [`STALLED`].
fn end_stalled(peers: &mut [Peer], now: Instant) {
    let total: usize = peers.iter().map(Peer::unsent).sum();
    if total <= TOTAL_OUT_LIMIT {
        for p in peers.iter_mut() {
            p.stall = None;
        }
        return;
    }
    for p in peers.iter_mut().filter(|p| p.pending()) {
        match p.stall {
            Some((sent, since)) if sent == p.sent_total => {
                if now.duration_since(since) >= STALLED {
                    p.dead = true;
                }
            }
            _ => p.stall = Some((p.sent_total, now)),
        }
    }
}

/// The signals that stop a server: Ctrl-C at a standalone one, SIGTERM,
/// its terminal closing.
pub(super) const STOP_SIGNALS: [i32; 3] = [sys::SIGINT, sys::SIGTERM, sys::SIGHUP];

/// Holds [`STOP_SIGNALS`] in this thread from before a server makes its
/// socket file until [`event_loop`] has them remove it: one sent between
/// is delivered then, and the file removed.
pub(super) fn hold_stop_signals() -> Option<sys::SignalsHeld> {
    sys::SignalsHeld::new(&STOP_SIGNALS)
        .inspect_err(|e| log::warn!("manager server: cannot hold stop signals: {e}"))
        .ok()
}

/// Serves clients until one asks for a shutdown (or, with `parent`, until
/// that process is gone); then removes the socket file and exits. `held`
/// (see [`hold_stop_signals`]) is let go once a stop signal removes the
/// socket file.
///
/// One thread runs an event loop over every connection: it never blocks on
/// a client, so a slow or hostile one (including one that stalls in the
/// handshake) delays no one else. One thread is also what makes the server
/// safe to fork from a multithreaded program: a thread created in a forked
/// child can deadlock on a lock another parent thread held at the fork.
pub(crate) fn event_loop(
    listener: Listener,
    parent: Option<u32>,
    registry: HashMap<String, String>,
    held: Option<sys::SignalsHeld>,
) -> ! {
    sys::flush_stdio();
    refs::start();
    let mut objects = Objects::new(super::pickle::token_address(listener.address()), registry);
    let mut next_peer = 0u64;
    let mut peers: Vec<Peer> = Vec::new();
    // The connections at rest, by number (see `REST_FROM`), and the round's
    // others while the resting are taken out of them.
    let mut resting: HashMap<u64, Peer> = HashMap::new();
    let mut spare: Vec<Peer> = Vec::new();
    let mut stopping: Option<Instant> = None;
    let mut checked = Instant::now();
    let mut pfds: Vec<sys::PollFd> = Vec::new();
    // What each of `pfds` is, for the poller (see `wait_keys`).
    let mut keys: Vec<u64> = Vec::new();
    let mut poller = sys::Poller::default();
    let exit = |listener: &Listener| -> ! {
        listener.remove_socket_file();
        sys::exit_now(0)
    };
    // Ended by a signal (Ctrl-C at a standalone server, SIGTERM, its
    // terminal closing), the server still removes its socket file (and
    // exits 0 after Ctrl-C, on TCP as well).
    if let Err(e) = sys::remove_socket_on_signal(listener.socket_file(), &STOP_SIGNALS) {
        log::warn!("manager server: a signal will leave the socket file behind: {e}");
    }
    drop(held);
    // Without it, a single client is served through poll (see below).
    let fast_single = sys::signal_on_connect(&listener).is_ok();
    // Every readiness accepts the whole queue: a connection left queued
    // would wait for the next readiness or signal, which may never come.
    if let Err(e) = listener.set_nonblocking(true) {
        log::error!("manager server: {e}");
        sys::exit_now(1);
    }
    let mut accepting = Accepting::default();
    // Once, not every round: the listener's `as_raw_fd` claims its socket
    // file's mark for the process calling it, which costs two `getpid`s.
    let listening_fd = listener.as_raw_fd();
    // Fast-path areas only for clients on this machine (see `fast`).
    let unix = matches!(listener.address(), crate::conn::Address::Unix(_));
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut request = Vec::new();
    let mut spin = FastSpin::new();
    loop {
        let now = Instant::now();
        accepting.resume_after(now);
        if now.duration_since(checked) >= PARENT_CHECK {
            checked = now;
            if parent.is_some_and(|p| std::os::unix::process::parent_id() != p) {
                exit(&listener);
            }
        }
        // Handshakes past their deadline end; so does a shutdown's grace.
        for p in &mut peers {
            if p.handshake.as_ref().is_some_and(|(_, d)| *d <= now) {
                p.dead = true;
            }
        }
        end_stalled(&mut peers, now);
        if release_dead(&mut peers, &mut objects) {
            accepting.resume();
        }
        deliver_woken(&mut peers, &mut objects, now);
        let mut queued: usize = peers.iter().map(Peer::unsent).sum();
        let over = queued > TOTAL_OUT_LIMIT;
        let starving = grant_reads(&mut peers);
        // (Past the answers' total, the server reads from no one.)
        end_stalled_reads(&mut peers, starving && !over, now);
        if let Some(deadline) = stopping {
            if deadline <= now || peers.iter().all(|p| !p.pending()) {
                exit(&listener);
            }
        }
        // One client, and nothing else to do: wait in a blocking receive on
        // its socket, whose wake-up costs less than poll's (a fifth of a
        // round trip on these machines). A new connection interrupts it
        // (SIGIO), and the socket's receive timeout bounds it.
        if let ([p], true) = (peers.as_mut_slice(), resting.is_empty()) {
            let idle = p.handshake.is_none()
                && !p.pending()
                && !p.closing
                && !p.dead
                && !p.more
                && !p.parked
                && p.fast.is_none();
            if fast_single && idle && stopping.is_none() && !sys::take_connect_signal() {
                match p.conn.read_some() {
                    Ok(false) => {}
                    Ok(true) => {
                        if serve_peer(p, &mut objects, false, unix, true) {
                            stopping = Some(shutdown_deadline());
                        }
                        p.flush();
                        continue;
                    }
                    Err(_) => p.dead = true,
                }
            }
        }
        // The fast-path areas: served until they are idle for a spin's
        // time, or for one turn if they keep the server busy.
        let mut fast_busy = false;
        if stopping.is_none() && !over {
            let turn = fast_turn(
                &mut peers,
                &mut objects,
                &mut request,
                cpus,
                &mut spin,
                &mut queued,
            );
            if turn.shutdown {
                stopping = Some(shutdown_deadline());
            }
            // A request served may have woken a waiting call: the loop goes
            // round at once to answer it (its poll seeing first whether
            // that call's client is gone), rather than sleep up to
            // `PARENT_CHECK` with the answer undelivered.
            fast_busy = turn.busy || (turn.served && peers.iter().any(|p| p.parked));
        }
        // Answers too large for an area may have been queued meanwhile.
        let over = queued > TOTAL_OUT_LIMIT;
        let mut timeout = PARENT_CHECK;
        for (_, d) in peers.iter().filter_map(|p| p.handshake.as_ref()) {
            timeout = timeout.min(d.saturating_duration_since(now));
        }
        let parked = objects.next_deadline();
        for d in stopping
            .iter()
            .chain(&accepting.paused_until)
            .chain(&parked)
        {
            timeout = timeout.min(d.saturating_duration_since(now));
        }
        if over || starving {
            // Until what is queued (or received) drains, or the stalled
            // connections end.
            timeout = timeout.min(STALLED / 4);
        } else if peers
            .iter()
            .any(|p| p.more && !p.parked && p.out.len() < OUT_LIMIT)
        {
            timeout = Duration::ZERO;
        }
        // Stopping with every answer delivered: exit at the loop's top,
        // without waiting out the grace.
        if stopping.is_some() && peers.iter().all(|p| !p.pending()) {
            timeout = Duration::ZERO;
        }
        // About to sleep: each fast-path client is told to ring the
        // doorbell, then its area is looked at once more (a request
        // published before the flag was seen would otherwise wait).
        let fast_peers = peers.iter().filter(|p| p.fast.is_some()).count();
        if fast_busy {
            timeout = Duration::ZERO;
        } else if !timeout.is_zero() && stopping.is_none() {
            let mut waiting = false;
            for a in peers.iter().filter_map(|p| p.fast.as_ref()) {
                a.set_asleep(true);
            }
            for p in &peers {
                if let Some(a) = &p.fast {
                    waiting |= fast_servable(p) && a.pending();
                }
            }
            // (Not served until what is queued drains.)
            if waiting && !over {
                timeout = Duration::ZERO;
            }
        }
        pfds.clear();
        keys.clear();
        let listening = stopping.is_none() && accepting.paused_until.is_none();
        pfds.push(sys::pollfd_for(
            if listening { listening_fd } else { -1 },
            true,
            false,
        ));
        for p in &peers {
            // A waiting call's socket is watched too, so that a client that
            // is gone (killed while it waited) is seen to be and its call
            // dropped, rather than take an item from the queue when one
            // comes.
            let watch = !p.parked || !p.sent_while_parked;
            let read = stopping.is_none()
                && (!over || p.handshake.is_some())
                && !p.closing
                && !p.starved
                && watch
                && p.out.len() < OUT_LIMIT;
            pfds.push(sys::pollfd_for(p.conn.as_raw_fd(), read, p.pending()));
        }
        for a in peers.iter().filter_map(|p| p.fast.as_ref()) {
            pfds.push(sys::pollfd_for(a.doorbell().as_raw_fd(), true, false));
        }
        wait_keys(&peers, &mut keys);
        let polled = poller.wait(&mut pfds, &keys, sys::Deadline::after(timeout));
        let doorbells = &pfds[1 + peers.len()..];
        for (p, pfd) in peers.iter_mut().filter(|p| p.fast.is_some()).zip(doorbells) {
            if let Some(a) = &p.fast {
                a.set_asleep(false);
                if sys::ready(pfd) && !a.drain_doorbell() {
                    hung_up(p);
                }
            }
        }
        debug_assert_eq!(pfds.len(), 1 + peers.len() + fast_peers);
        if polled.is_err() {
            // Only EINVAL or ENOMEM: nothing to wait on now; try again.
            // (The woken connections the poller hands back, if any, wait
            // for its next round: it keeps them until taken.)
            std::thread::sleep(Duration::from_millis(10));
            continue;
        }
        // When the wait ended: what serving a connection stamps it with.
        let woke = Instant::now();
        for (p, pfd) in peers.iter_mut().zip(&pfds[1..]) {
            if sys::revents_writable(pfd) {
                p.flush();
            }
            let readable = sys::revents_readable(pfd);
            if readable && p.parked && !p.dead {
                match p.conn.read_some() {
                    Ok(true) => p.sent_while_parked = true,
                    Ok(false) => {}
                    Err(_) => p.dead = true,
                }
                continue;
            }
            // Past the total, sockets are not watched for reading but in
            // handshakes (whose messages are small): one readable hung up.
            if readable && over && p.handshake.is_none() {
                p.dead = true;
                continue;
            }
            // So is one waiting for what it may receive in.
            if readable && p.starved {
                p.dead = true;
                continue;
            }
            let unserved = p.more && p.out.len() < OUT_LIMIT;
            if (readable || unserved) && stopping.is_none() {
                serve_turn(
                    p,
                    &mut objects,
                    readable,
                    unix,
                    &mut queued,
                    &mut stopping,
                    woke,
                );
            }
        }
        // Resting connections that have something to say (or hung up) are
        // served now, and join the others in their place (the order they
        // came, which read grants and the out-of-descriptors rule follow).
        // Past the answers' total, they are not read: the next round
        // watches them as the others.
        for key in poller.woken() {
            let Some(mut p) = resting.remove(&(key >> 1)) else {
                continue;
            };
            if stopping.is_none() && queued <= TOTAL_OUT_LIMIT {
                serve_turn(
                    &mut p,
                    &mut objects,
                    true,
                    unix,
                    &mut queued,
                    &mut stopping,
                    woke,
                );
            }
            let at = peers.partition_point(|q| q.id < p.id);
            peers.insert(at, p);
        }
        if sys::ready(&pfds[0]) {
            accepting.accept_all(&listener, &mut peers, &mut next_peer);
        }
        // Past the answers' total, none rests: one woken by a request it
        // may not be served now would be put back to rest, and woken at
        // once by the same request, round after round (the loop would
        // never sleep until the answers drained). Listed, it is not
        // watched for reading meanwhile.
        let rest = peers.len() + resting.len() > REST_FROM;
        if rest && stopping.is_none() && queued <= TOTAL_OUT_LIMIT {
            put_to_rest(&mut peers, &mut spare, &mut resting, &mut poller, woke);
        }
    }
}

/// Serves one connection's turn after the poll (`read`: its socket is
/// readable) unless the answers' total keeps it from it, sends what its
/// socket takes of the answers, and counts them in `queued`; a request
/// for a shutdown starts one (`stopping`). A connection served is stamped
/// `now` (see [`REST_AFTER`]).
fn serve_turn(
    p: &mut Peer,
    objects: &mut Objects,
    read: bool,
    unix: bool,
    queued: &mut usize,
    stopping: &mut Option<Instant>,
    now: Instant,
) {
    let requests = *queued <= TOTAL_OUT_LIMIT;
    if (!requests && p.handshake.is_none()) || p.dead || p.parked {
        return;
    }
    p.served = now;
    let before = p.unsent();
    if serve_peer(p, objects, read, unix, requests) {
        *stopping = Some(shutdown_deadline());
    }
    p.flush();
    *queued = (*queued + p.unsent()).saturating_sub(before);
}

/// Whether a connection has nothing to do but wait for its client: past
/// its handshake, with no answer to send, nothing of a request received,
/// no call waiting and no fast-path area (which the loop serves itself),
/// and nothing served for [`REST_AFTER`] before `now`.
fn restful(p: &Peer, now: Instant) -> bool {
    now.saturating_duration_since(p.served) >= REST_AFTER
        && p.handshake.is_none()
        && !p.pending()
        && !p.closing
        && !p.dead
        && !p.more
        && !p.parked
        && !p.starved
        && p.grant == 0
        && p.fast.is_none()
        && p.conn.buffered_len() == 0
        && p.conn.read_buffer_size() <= IN_FREE
}

/// Moves the connections with nothing to do (see [`restful`]) at `now`
/// from `peers` to `resting`, their sockets left to the poller (`spare`:
/// a buffer to sort them in, kept for its memory).
fn put_to_rest(
    peers: &mut Vec<Peer>,
    spare: &mut Vec<Peer>,
    resting: &mut HashMap<u64, Peer>,
    poller: &mut sys::Poller,
    now: Instant,
) {
    if !peers.iter().any(|p| restful(p, now)) {
        return;
    }
    std::mem::swap(peers, spare);
    for mut p in spare.drain(..) {
        if restful(&p, now) && poller.rest(p.conn.as_raw_fd(), p.id << 1) {
            // (Stale marks would count against it once it is back.)
            p.stall = None;
            p.in_stall = None;
            resting.insert(p.id, p);
        } else {
            peers.push(p);
        }
    }
}

/// What each descriptor the loop waits on is, in its order: the listener,
/// each peer's connection, each fast-path area's doorbell. A key names one
/// open file for as long as the server runs (a peer's number, an area's),
/// so that the poller registers a descriptor number anew once it belongs
/// to another.
fn wait_keys(peers: &[Peer], keys: &mut Vec<u64>) {
    keys.push(0);
    keys.extend(peers.iter().map(|p| p.id << 1));
    let areas = peers.iter().filter_map(|p| p.fast.as_ref());
    keys.extend(areas.map(|a| a.serial() << 1 | 1));
}

/// How long the server stops accepting after running out of descriptors,
/// unless a connection closes first.
const ACCEPT_PAUSE: Duration = Duration::from_secs(1);

/// Whether the listener is watched: out of descriptors, a queued
/// connection keeps it readable while `accept` keeps failing, so the loop
/// stops watching it until a connection closes (or [`ACCEPT_PAUSE`]).
#[derive(Default)]
struct Accepting {
    paused_until: Option<Instant>,
    /// The pause was logged (once: a client may cause it at will).
    logged: bool,
}

impl Accepting {
    fn resume(&mut self) {
        self.paused_until = None;
    }

    fn resume_after(&mut self, now: Instant) {
        if self.paused_until.is_some_and(|t| t <= now) {
            self.resume();
        }
    }

    /// Takes every queued client (until `accept` would block), or pauses;
    /// out of descriptors, ends the oldest connection still in its
    /// handshake (`peers` are in the order they came) to take the next.
    fn accept_all(&mut self, listener: &Listener, peers: &mut Vec<Peer>, next_peer: &mut u64) {
        loop {
            let conn = match listener.accept_unauthenticated() {
                Ok(conn) => conn,
                Err(crate::Error::Io { source, .. }) => match sys::accept_failure(&source) {
                    sys::AcceptFailure::QueueEmpty => return,
                    sys::AcceptFailure::ThisConnection => continue,
                    sys::AcceptFailure::Exhausted => {
                        // Its descriptor for this one: a client that has not
                        // proved it knows the key must not keep the others
                        // out (until its handshake times out, and then
                        // again at once).
                        if let Some(i) = peers.iter().position(|p| p.handshake.is_some()) {
                            drop(peers.remove(i));
                            continue;
                        }
                        if !self.logged {
                            self.logged = true;
                            log::warn!(
                                "manager server: cannot accept clients ({source}); \
                                 paused until a connection closes"
                            );
                        }
                        self.paused_until = Some(Instant::now() + ACCEPT_PAUSE);
                        return;
                    }
                },
                Err(_) => return,
            };
            *next_peer += 1;
            if let Some(peer) = Peer::new(listener, conn, *next_peer) {
                peers.push(peer);
            }
        }
    }
}

impl Peer {
    /// Connection `id` on `conn`, of client process `pid` (if known), as
    /// if past its handshake, with nothing to do; served just now.
    fn past_handshake(id: u64, conn: Connection, pid: Option<u32>) -> Peer {
        Peer {
            id,
            conn,
            handshake: None,
            out: Vec::new(),
            sent: 0,
            sent_total: 0,
            stall: None,
            grant: 0,
            starved: false,
            in_stall: None,
            session: Session {
                pid,
                ..Session::default()
            },
            parked: false,
            sent_while_parked: false,
            closing: false,
            more: false,
            dead: false,
            served: Instant::now(),
            fast: None,
            parked_fast: None,
            last_fast: None,
        }
    }

    /// A new client's peer, its handshake begun; `None` if that failed
    /// (its connection then closes and the others go on).
    fn new(listener: &Listener, conn: Connection, id: u64) -> Option<Peer> {
        // Only the loop's blocking receive (one client, nothing else to do)
        // waits; this bounds it, for the parent check and for new clients.
        sys::set_recv_timeout(&conn, RECV_TIMEOUT).ok()?;
        // A Unix socket's client process, whose increfs end its loans.
        let pid = sys::peer_pid(&conn);
        let mut peer = Peer::past_handshake(id, conn, pid);
        match listener.authkey() {
            None => peer.conn.set_max_message(MAX_FRAME),
            Some(key) => {
                let Ok((handshake, Some(first))) = Handshake::new(key, Side::Server) else {
                    return None;
                };
                peer.conn.set_max_message(HANDSHAKE_MAX);
                peer.queue(&first);
                peer.handshake = Some((handshake, Instant::now() + HANDSHAKE_TIMEOUT));
                peer.flush();
            }
        }
        Some(peer)
    }
}

/// Serves the requests that have arrived whole on one connection (reading
/// once more first if `read`; only its handshake unless `requests`);
/// whether one of them asked for a shutdown.
fn serve_peer(
    peer: &mut Peer,
    objects: &mut Objects,
    read: bool,
    unix: bool,
    requests: bool,
) -> bool {
    let mut first = read;
    // The work of this turn: frames decoded and steps taken. Beyond a
    // quarter of one request's most, the others get their turn first: a
    // turn is at most about one request's work.
    let mut turn = 0;
    peer.more = false;
    loop {
        let more = peer.handshake.is_none() && !requests;
        if more || turn >= MAX_WORK / 4 || peer.out.len() >= OUT_LIMIT {
            peer.more = true;
            break;
        }
        // One read per readiness; then what it brought, frame by frame.
        let frame = match peer.conn.try_recv_frame(std::mem::take(&mut first)) {
            Ok(Some(frame)) => frame,
            Ok(None) => break,
            // Malformed input or a vanished client ends this connection only.
            Err(_) => {
                peer.dead = true;
                break;
            }
        };
        turn += frame.len();
        if let Some((handshake, _)) = &mut peer.handshake {
            let step = handshake.receive(frame);
            if let Some(m) = step.send {
                peer.queue(&m);
            }
            match step.outcome {
                Ok(false) => {}
                Ok(true) => {
                    peer.handshake = None;
                    peer.conn.set_max_message(MAX_FRAME);
                }
                Err(_) => {
                    peer.closing = true;
                    break;
                }
            }
            continue;
        }
        if frame == fast::setup_request() {
            grant_fast(peer, unix);
            continue;
        }
        match objects.answer(frame, &mut peer.session, peer.id) {
            Answer::Reply(reply, shutdown, work) => {
                turn += work;
                peer.queue(&reply);
                if shutdown {
                    return true;
                }
            }
            Answer::Parked => {
                // Its client waits for this reply: what else it sent is
                // served after it (`more`, once woken).
                peer.parked = true;
                break;
            }
        }
    }
    false
}

/// Drops the connections that ended, giving back every reference they
/// held; whether there were any.
fn release_dead(peers: &mut Vec<Peer>, objects: &mut Objects) -> bool {
    let before = peers.len();
    peers.retain_mut(|p| {
        if p.dead {
            objects.release(p.id, &p.session);
        }
        !p.dead
    });
    objects.settle();
    peers.len() < before
}

/// Queues the replies of the waiting calls that are done or timed out.
fn deliver_woken(peers: &mut [Peer], objects: &mut Objects, now: Instant) {
    for (id, reply) in objects.wake(now) {
        if let Some(p) = peers.iter_mut().find(|p| p.id == id) {
            match p.parked_fast.take() {
                Some(seq) => reply_fast(p, seq, &reply),
                None => p.queue(&reply),
            }
            p.parked = false;
            p.sent_while_parked = false;
            // What it sent meanwhile is served on its next turn.
            p.more = true;
            p.flush();
        }
    }
}

/// Grants a client's request for a fast-path area (see `fast`), or refuses
/// it with an answer that leaves the client on its socket: over TCP, when
/// the server has [`FAST_MAX`] areas, has answers of it still to send (the
/// descriptors go with the grant's first byte), or cannot make one.
fn grant_fast(peer: &mut Peer, unix: bool) {
    if unix && peer.fast.is_none() && peer.out.is_empty() && FAST_AREAS.with(|n| n.get()) < FAST_MAX
    {
        if let Ok((area, memfd, theirs)) = ServerArea::create() {
            let grant = ServerArea::grant_frame();
            let fds = [memfd.as_fd(), theirs.as_fd()];
            match sys::send_with_fds_nowait(&peer.conn, &grant, &fds) {
                Ok(n) => {
                    peer.out.extend_from_slice(&grant[n.min(grant.len())..]);
                    peer.fast = Some(area);
                    FAST_AREAS.with(|n| n.set(n.get() + 1));
                    return;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => {
                    peer.dead = true;
                    return;
                }
            }
        }
    }
    peer.queue(&fast::refusal());
}

thread_local! {
    /// How many fast-path areas the server has.
    static FAST_AREAS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

impl Drop for Peer {
    fn drop(&mut self) {
        if self.fast.is_some() {
            FAST_AREAS.with(|n| n.set(n.get().saturating_sub(1)));
        }
    }
}

/// A client hung up its doorbell (which would otherwise stay readable and
/// keep the loop from sleeping). One that never used its area (a client
/// that could not receive its descriptors: the kernel closed the ones it
/// could not give it) goes on without one, on its socket; one that used it
/// broke the protocol, and ends.
fn hung_up(p: &mut Peer) {
    if p.last_fast.is_some() || p.parked_fast.is_some() {
        p.dead = true;
    } else if p.fast.take().is_some() {
        FAST_AREAS.with(|n| n.set(n.get().saturating_sub(1)));
    }
}

/// Whether a fast-path client may be served now.
fn fast_servable(p: &Peer) -> bool {
    p.fast.is_some()
        && !p.parked
        && !p.dead
        && !p.closing
        && p.handshake.is_none()
        && p.out.len() < OUT_LIMIT
}

/// What one turn over the fast-path areas came to.
struct FastTurn {
    /// It ended with requests still coming: poll without waiting.
    busy: bool,
    /// A request asked for a shutdown.
    shutdown: bool,
    /// It served a request.
    served: bool,
}

/// The server's spin over its fast-path areas, kept across turns.
struct FastSpin {
    adaptive: Spin,
    /// When the last request was served.
    last: Option<Instant>,
    /// How long the server spins for the next request after it, and
    /// whether that spin is still on (a turn may end in the middle of it,
    /// to look at the sockets, and the next goes on with it).
    budget: Duration,
    spinning: bool,
}

impl FastSpin {
    fn new() -> FastSpin {
        FastSpin {
            adaptive: Spin::new(),
            last: None,
            budget: Duration::ZERO,
            spinning: false,
        }
    }
}

/// Serves the fast-path areas, one request of each per pass, until none
/// has had a request for a spin's time (no spin when the busy clients and
/// the server would be more than the CPUs: then a spin only takes a CPU
/// from a client) or [`FAST_TURN`] has passed.
fn fast_turn(
    peers: &mut [Peer],
    objects: &mut Objects,
    buf: &mut Vec<u8>,
    cpus: usize,
    state: &mut FastSpin,
    queued: &mut usize,
) -> FastTurn {
    let mut turn = FastTurn {
        busy: false,
        shutdown: false,
        served: false,
    };
    let start = Instant::now();
    let busy = peers
        .iter()
        .filter(|p| p.last_fast.is_some_and(|t| start.duration_since(t) < BUSY))
        .count();
    let max = if busy <= cpus {
        SERVER_SPIN
    } else {
        Duration::ZERO
    };
    for a in peers.iter().filter_map(|p| p.fast.as_ref()) {
        a.set_client_spin(max);
    }
    loop {
        let now = Instant::now();
        let mut served = false;
        for p in peers.iter_mut().filter(|p| fast_servable(p)) {
            // Answers too large for an area are queued on the socket.
            if *queued > TOTAL_OUT_LIMIT {
                return turn;
            }
            let before = p.unsent();
            let fast = serve_fast(p, objects, buf);
            *queued = (*queued + p.unsent()).saturating_sub(before);
            match fast {
                Fast::Nothing => {}
                Fast::Served => {
                    served = true;
                    turn.served = true;
                }
                Fast::Shutdown => {
                    turn.shutdown = true;
                    return turn;
                }
            }
        }
        if served {
            if let (true, Some(t)) = (state.spinning, state.last) {
                state.adaptive.caught(now.saturating_duration_since(t), max);
            }
            state.last = Some(Instant::now());
            state.budget = state.adaptive.budget(max);
            state.spinning = !state.budget.is_zero();
        } else if !state.spinning
            || state
                .last
                .is_none_or(|t| now.saturating_duration_since(t) >= state.budget)
        {
            // Nothing for a spin's time: sleep (the doorbell wakes the
            // server).
            if state.spinning {
                state.adaptive.missed();
                state.spinning = false;
            }
            return turn;
        }
        if now.duration_since(start) >= FAST_TURN {
            turn.busy = true;
            return turn;
        }
        // A pause is tens of nanoseconds: look for a request after each,
        // and at the clock only now and then.
        for _ in 0..32 {
            if peers
                .iter()
                .any(|p| fast_servable(p) && p.fast.as_ref().is_some_and(ServerArea::pending))
            {
                break;
            }
            std::hint::spin_loop();
        }
    }
}

/// What serving one fast-path area came to.
enum Fast {
    Nothing,
    Served,
    Shutdown,
}

/// Serves the request waiting in a client's area, if there is one.
fn serve_fast(p: &mut Peer, objects: &mut Objects, buf: &mut Vec<u8>) -> Fast {
    let Some(area) = p.fast.as_mut() else {
        return Fast::Nothing;
    };
    let seq = match area.take_request(buf) {
        Taken::Nothing => return Fast::Nothing,
        // A length it could not have written through the area: a client
        // that does not follow the protocol ends, as on its socket.
        Taken::Bad => {
            p.dead = true;
            return Fast::Served;
        }
        Taken::Request(seq) => seq,
    };
    p.last_fast = Some(Instant::now());
    match objects.answer(buf, &mut p.session, p.id) {
        Answer::Reply(reply, shutdown, _) => {
            reply_fast(p, seq, &reply);
            if shutdown {
                Fast::Shutdown
            } else {
                Fast::Served
            }
        }
        Answer::Parked => {
            p.parked = true;
            p.parked_fast = Some(seq);
            Fast::Served
        }
    }
}

/// Answers request `seq` of a client's area: through it, or on the socket
/// if the answer is larger than the area's slot.
fn reply_fast(p: &mut Peer, seq: u32, reply: &[u8]) {
    let Some(area) = &p.fast else {
        return;
    };
    if !area.answer(seq, reply) {
        area.answer_on_socket(seq);
        p.queue(reply);
        p.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection past its handshake with nothing to do, last served
    /// `ago` before `now`, and its client's end.
    fn idle_peer(id: u64, now: Instant, ago: Duration) -> (Peer, Connection) {
        let (ours, theirs) = sys::socketpair().unwrap();
        let mut peer = Peer::past_handshake(id, Connection::from_socket(ours).unwrap(), None);
        peer.served = now - ago;
        (peer, Connection::from_socket(theirs).unwrap())
    }

    /// A client between two requests is not put to rest as soon as it was
    /// served (and woken again for its next request, every request), only
    /// once nothing was served for it for `REST_AFTER`.
    #[test]
    fn a_connection_rests_only_once_idle_for_a_while() {
        let now = Instant::now();
        let mut poller = sys::Poller::default();
        let (busy, _a) = idle_peer(1, now, Duration::ZERO);
        let (idle, _b) = idle_peer(2, now, REST_AFTER);
        let mut peers = vec![busy, idle];
        // (A round first: the poller rests descriptors once it waits.)
        let mut pfds: Vec<_> = peers
            .iter()
            .map(|p| sys::pollfd_for(p.conn.as_raw_fd(), true, false))
            .collect();
        poller.wait(&mut pfds, &[2, 4], sys::Deadline::Now).unwrap();
        let (mut spare, mut resting) = (Vec::new(), HashMap::new());
        put_to_rest(&mut peers, &mut spare, &mut resting, &mut poller, now);
        assert_eq!(peers.iter().map(|p| p.id).collect::<Vec<_>>(), [1]);
        assert!(resting.contains_key(&2));
        // Idle long enough, it rests too.
        put_to_rest(
            &mut peers,
            &mut spare,
            &mut resting,
            &mut poller,
            now + REST_AFTER,
        );
        assert!(peers.is_empty());
        assert_eq!(resting.len(), 2);
    }
}
