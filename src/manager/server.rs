//! The manager server's event loop: accepts clients, runs their
//! handshakes, reads their frames and sends the answers, serving every
//! connection from one thread; what a command does is `objects`' business.

use std::collections::HashMap;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use super::limits::MAX_WORK;
use super::objects::{Answer, Objects, Session, MAX_FRAME};
use super::refs;
use crate::conn::auth::{Handshake, Side, HANDSHAKE_MAX, HANDSHAKE_TIMEOUT};
use crate::conn::{frame, Connection, Listener};
use crate::sys;

/// How long a shutting-down server tries to deliver the last responses.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);
/// The longest the loop waits in a blocking receive on its one client.
const RECV_TIMEOUT: Duration = Duration::from_millis(100);
/// How often the server checks that the process that started it is alive.
const PARENT_CHECK: Duration = Duration::from_secs(1);
/// Responses queued for one client beyond which the server stops reading
/// its requests until they are sent: a client that sends without reading
/// costs the server bounded memory.
const OUT_LIMIT: usize = 1 << 20;

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
                Ok(n) => self.sent += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(_) => {
                    self.dead = true;
                    return;
                }
            }
        }
        self.out.clear();
        self.sent = 0;
        if self.closing {
            self.dead = true;
        }
    }

    fn pending(&self) -> bool {
        self.sent < self.out.len()
    }
}

/// Serves clients until one asks for a shutdown (or, with `parent`, until
/// that process is gone); then removes the socket file and exits.
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
) -> ! {
    sys::flush_stdio();
    refs::start();
    let mut objects = Objects::new(super::pickle::token_address(listener.address()), registry);
    let mut next_peer = 0u64;
    let mut peers: Vec<Peer> = Vec::new();
    let mut stopping: Option<Instant> = None;
    let mut checked = Instant::now();
    let mut pfds: Vec<sys::PollFd> = Vec::new();
    let exit = |listener: &Listener| -> ! {
        listener.remove_socket_file();
        sys::exit_now(0)
    };
    // Without it, a single client is served through poll (see below).
    let fast_single = sys::signal_on_connect(&listener).is_ok();
    // Every readiness accepts the whole queue: a connection left queued
    // would wait for the next readiness or signal, which may never come.
    if let Err(e) = listener.set_nonblocking(true) {
        log::error!("manager server: {e}");
        sys::exit_now(1);
    }
    let mut accepting = Accepting::default();
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
        if release_dead(&mut peers, &mut objects) {
            accepting.resume();
        }
        deliver_woken(&mut peers, &mut objects, now);
        if let Some(deadline) = stopping {
            if deadline <= now || peers.iter().all(|p| !p.pending()) {
                exit(&listener);
            }
        }
        // One client, and nothing else to do: wait in a blocking receive on
        // its socket, whose wake-up costs less than poll's (a fifth of a
        // round trip on these machines). A new connection interrupts it
        // (SIGIO), and the socket's receive timeout bounds it.
        if let [p] = peers.as_mut_slice() {
            let idle = p.handshake.is_none()
                && !p.pending()
                && !p.closing
                && !p.dead
                && !p.more
                && !p.parked;
            if fast_single && idle && stopping.is_none() && !sys::take_connect_signal() {
                match p.conn.read_some() {
                    Ok(false) => {}
                    Ok(true) => {
                        if serve_peer(p, &mut objects, false) {
                            stopping = Some(Instant::now() + SHUTDOWN_GRACE);
                        }
                        p.flush();
                        continue;
                    }
                    Err(_) => p.dead = true,
                }
            }
        }
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
        if peers
            .iter()
            .any(|p| p.more && !p.parked && p.out.len() < OUT_LIMIT)
        {
            timeout = Duration::ZERO;
        }
        pfds.clear();
        let listening = stopping.is_none() && accepting.paused_until.is_none();
        pfds.push(sys::pollfd_for(
            if listening { listener.as_raw_fd() } else { -1 },
            true,
            false,
        ));
        for p in &peers {
            // A waiting call's socket is watched too, so that a client that
            // is gone (killed while it waited) is seen to be and its call
            // dropped, rather than take an item from the queue when one
            // comes.
            let watch = !p.parked || !p.sent_while_parked;
            let read = stopping.is_none() && !p.closing && watch && p.out.len() < OUT_LIMIT;
            pfds.push(sys::pollfd_for(p.conn.as_raw_fd(), read, p.pending()));
        }
        if sys::poll(&mut pfds, sys::Deadline::after(timeout)).is_err() {
            // Only EINVAL or ENOMEM: nothing to wait on now; try again.
            std::thread::sleep(Duration::from_millis(10));
            continue;
        }
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
            let unserved = p.more && p.out.len() < OUT_LIMIT;
            if (readable || unserved) && !p.dead && !p.parked && stopping.is_none() {
                if serve_peer(p, &mut objects, readable) {
                    stopping = Some(Instant::now() + SHUTDOWN_GRACE);
                }
                p.flush();
            }
        }
        if sys::ready(&pfds[0]) {
            accepting.accept_all(&listener, &mut peers, &mut next_peer);
        }
    }
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

    /// Takes every queued client (until `accept` would block), or pauses.
    fn accept_all(&mut self, listener: &Listener, peers: &mut Vec<Peer>, next_peer: &mut u64) {
        loop {
            let conn = match listener.accept_unauthenticated() {
                Ok(conn) => conn,
                Err(crate::Error::Io { source, .. }) => match sys::accept_failure(&source) {
                    sys::AcceptFailure::QueueEmpty => return,
                    sys::AcceptFailure::ThisConnection => continue,
                    sys::AcceptFailure::Exhausted => {
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
    /// A new client's peer, its handshake begun; `None` if that failed
    /// (its connection then closes and the others go on).
    fn new(listener: &Listener, conn: Connection, id: u64) -> Option<Peer> {
        // Only the loop's blocking receive (one client, nothing else to do)
        // waits; this bounds it, for the parent check and for new clients.
        sys::set_recv_timeout(&conn, RECV_TIMEOUT).ok()?;
        let mut peer = Peer {
            id,
            conn,
            handshake: None,
            out: Vec::new(),
            sent: 0,
            session: Session::default(),
            parked: false,
            sent_while_parked: false,
            closing: false,
            more: false,
            dead: false,
        };
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
/// once more first if `read`); whether one of them asked for a shutdown.
fn serve_peer(peer: &mut Peer, objects: &mut Objects, read: bool) -> bool {
    let mut first = read;
    // The work of this turn: frames decoded and steps taken. Beyond a
    // quarter of one request's most, the others get their turn first: a
    // turn is at most about one request's work.
    let mut turn = 0;
    peer.more = false;
    loop {
        if turn >= MAX_WORK / 4 || peer.out.len() >= OUT_LIMIT {
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
            p.queue(&reply);
            p.parked = false;
            p.sent_while_parked = false;
            // What it sent meanwhile is served on its next turn.
            p.more = true;
            p.flush();
        }
    }
}
