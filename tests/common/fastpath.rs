//! The Manager's fast-path area (`src/manager/fast.rs`) as a test's raw
//! client reaches it: its layout, the setup request, and an area mapped
//! and driven by hand, with nothing of the crate's client between.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use multiproc::conn::{connect, Connection};
use multiproc::manager::Manager;

use super::{join, static_child, wait_until};

/// The longest a raw area's call, or a child of [`alone`], may take.
const LIMIT: Duration = Duration::from_secs(60);

/// `(None, '_multiproc_fastpath', (1,), {})`, as the server recognises it.
pub const SETUP: &[u8] = b"\x80\x02(NX\x13\x00\x00\x00_multiproc_fastpath(J\x01\x00\x00\x00t}t.";
/// The area's layout (see `src/manager/fast.rs`).
pub const CONTROL_LEN: usize = 4096;
pub const SLOT: usize = 64 << 10;
pub const AREA_LEN: usize = CONTROL_LEN + 2 * SLOT;
pub const REQUEST_SEQ: usize = 0;
pub const REQUEST_LEN: usize = 4;
pub const ANSWER_SEQ: usize = 128;
pub const ANSWER_LEN: usize = 132;

/// The inodes of this process's mappings of fast-path areas.
pub fn areas_mapped() -> Vec<u64> {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let mut inodes: Vec<u64> = maps
        .lines()
        .filter(|l| l.contains("multiproc-manager-fastpath"))
        .filter_map(|l| l.split_whitespace().nth(4)?.parse().ok())
        .collect();
    inodes.sort_unstable();
    inodes.dedup();
    inodes
}

/// The inodes in `now` that are not in `before`.
pub fn new_areas(before: &[u64], now: &[u64]) -> Vec<u64> {
    now.iter()
        .filter(|i| !before.contains(i))
        .copied()
        .collect()
}

/// Runs `f` in a child process of its own, whose mappings and descriptors
/// change only by what `f` does (the tests of a binary run on threads of
/// one process).
pub fn alone(f: impl FnOnce() + Send + 'static) {
    assert_eq!(join(&static_child(f), LIMIT), 0);
}

/// A client's area reached as raw memory, as a hostile client would.
pub struct RawArea {
    pub conn: Connection,
    pub map: *mut u8,
    pub memfd: OwnedFd,
    pub doorbell: OwnedFd,
}

// SAFETY: the mapping is shared memory reached through atomics and raw
// copies only; any thread may use it.
unsafe impl Sync for RawArea {}
// SAFETY: as above.
unsafe impl Send for RawArea {}

impl RawArea {
    /// Asks for an area on a new authenticated connection (whose
    /// references the server holds if `hold`, as a Rust client's are:
    /// `_multiproc_hold`); `None` if the answer carried no descriptors.
    pub fn open(m: &Manager, hold: bool) -> Option<RawArea> {
        let mut conn = connect(m.address(), Some(m.authkey())).unwrap();
        if hold {
            conn.send_bytes(&super::pickle::request(None, "_multiproc_hold", vec![]))
                .unwrap();
            let held = conn.recv_bytes().unwrap();
            assert!(held.windows(7).any(|w| w == b"#RETURN"), "{held:?}");
        }
        conn.send_bytes(SETUP).unwrap();
        let mut fds = recv_fds(&conn).into_iter();
        let (memfd, doorbell) = (fds.next()?, fds.next()?);
        // SAFETY: mapping a memory file of AREA_LEN bytes, shared.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                AREA_LEN,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                memfd.as_raw_fd(),
                0,
            )
        };
        assert_ne!(map, libc::MAP_FAILED);
        Some(RawArea {
            conn,
            map: map.cast(),
            memfd,
            doorbell,
        })
    }

    /// The control word at byte `at`.
    pub fn word(&self, at: usize) -> &AtomicU32 {
        assert!(at % 4 == 0 && at < CONTROL_LEN);
        // SAFETY: an aligned word inside the mapping, alive with `self`.
        unsafe { &*self.map.wrapping_add(at).cast() }
    }

    /// Writes `bytes` into the request slot and publishes them as `len`
    /// bytes under the next sequence number, ringing the doorbell.
    pub fn request(&self, bytes: &[u8], len: u32) -> u32 {
        // SAFETY: at most a slot's bytes into the request slot.
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                self.map.wrapping_add(CONTROL_LEN),
                bytes.len().min(SLOT),
            )
        };
        self.word(REQUEST_LEN).store(len, Ordering::SeqCst);
        let seq = self.word(REQUEST_SEQ).fetch_add(1, Ordering::SeqCst) + 1;
        self.ring();
        seq
    }

    /// Rings the doorbell.
    pub fn ring(&self) {
        // SAFETY: a one-byte write from a valid buffer.
        unsafe {
            libc::send(
                self.doorbell.as_raw_fd(),
                b"!".as_ptr().cast(),
                1,
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            )
        };
    }

    /// What the answer slot holds now, as long as its length word says.
    pub fn read_answer(&self) -> Vec<u8> {
        let len = (self.word(ANSWER_LEN).load(Ordering::SeqCst) as usize).min(SLOT);
        let mut out = vec![0; len];
        // SAFETY: at most a slot's bytes from the answer slot.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.map.wrapping_add(CONTROL_LEN + SLOT),
                out.as_mut_ptr(),
                len,
            )
        };
        out
    }

    /// Waits for the answer to `seq` and reads it from the answer slot.
    pub fn answer(&self, seq: u32) -> Vec<u8> {
        assert!(wait_until(LIMIT, || self
            .word(ANSWER_SEQ)
            .load(Ordering::SeqCst)
            == seq));
        self.read_answer()
    }

    /// A call through the area: the answer's bytes.
    pub fn call(&self, bytes: &[u8]) -> Vec<u8> {
        let seq = self.request(bytes, bytes.len() as u32);
        self.answer(seq)
    }

    /// Whether the server ended this connection.
    pub fn ended(&self) -> bool {
        self.conn.poll(Some(Duration::ZERO)).unwrap_or(true)
    }
}

impl Drop for RawArea {
    fn drop(&mut self) {
        // SAFETY: unmapping what `open` mapped.
        unsafe { libc::munmap(self.map.cast(), AREA_LEN) };
    }
}

/// Reads one small answer frame, and the descriptors it carries.
pub fn recv_fds(conn: &Connection) -> Vec<OwnedFd> {
    let mut buf = [0u8; 512];
    let mut control = [0u64; 16];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: a zeroed msghdr, then pointed at live buffers.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control) as _;
    // SAFETY: recvmsg writes within the buffers `msg` points at.
    let n = unsafe { libc::recvmsg(conn.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
    assert!(n > 4, "an answer");
    let mut fds = Vec::new();
    // SAFETY: walking the control messages the kernel wrote.
    let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(&msg) };
    while !cmsg.is_null() {
        // SAFETY: a header inside `control`.
        let hdr = unsafe { &*cmsg };
        if hdr.cmsg_type == libc::SCM_RIGHTS {
            // SAFETY: its payload, inside `control`.
            let data = unsafe { libc::CMSG_DATA(cmsg) }.cast::<i32>();
            // SAFETY: CMSG_LEN computes a size.
            let count = (hdr.cmsg_len as usize - unsafe { libc::CMSG_LEN(0) } as usize) / 4;
            for i in 0..count {
                // SAFETY: the `i`th int of the payload, inside `control`.
                let fd = unsafe { data.wrapping_add(i).read_unaligned() };
                // SAFETY: a descriptor the kernel installed for us alone.
                fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
        // SAFETY: the next header or null.
        cmsg = unsafe { libc::CMSG_NXTHDR(&msg, cmsg) };
    }
    fds
}

/// Sends `bytes` as one frame carrying `fds`.
pub fn send_frame_with_fds(conn: &Connection, bytes: &[u8], fds: &[i32]) {
    let mut frame = (bytes.len() as u32).to_be_bytes().to_vec();
    frame.extend(bytes);
    let mut control = [0u64; 8];
    let iov = libc::iovec {
        iov_base: frame.as_mut_ptr().cast(),
        iov_len: frame.len(),
    };
    // SAFETY: a zeroed msghdr, then pointed at live buffers.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = (&raw const iov).cast_mut();
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    let data_len = (fds.len() * 4) as u32;
    // SAFETY: CMSG_SPACE only computes a size.
    msg.msg_controllen = unsafe { libc::CMSG_SPACE(data_len) } as _;
    // SAFETY: `msg` has room for one header of `data_len` bytes.
    let header = unsafe { libc::CMSG_FIRSTHDR(&msg) };
    // SAFETY: CMSG_LEN only computes a size.
    let cmsg_len = unsafe { libc::CMSG_LEN(data_len) } as _;
    // SAFETY: `header` points into `control`, aligned and large enough.
    unsafe {
        header.write(libc::cmsghdr {
            cmsg_len,
            cmsg_level: libc::SOL_SOCKET,
            cmsg_type: libc::SCM_RIGHTS,
        })
    };
    // SAFETY: CMSG_DATA only computes the address of the header's payload.
    let data = unsafe { libc::CMSG_DATA(header) };
    // SAFETY: the payload has room for `fds` (CMSG_SPACE above).
    unsafe { std::ptr::copy_nonoverlapping(fds.as_ptr(), data.cast(), fds.len()) };
    // SAFETY: `msg` points at live buffers for the call.
    let sent = unsafe { libc::sendmsg(conn.as_raw_fd(), &msg, 0) };
    assert_eq!(sent as usize, frame.len());
}
