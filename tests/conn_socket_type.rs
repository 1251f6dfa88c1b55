//! `Connection::from_socket` takes stream sockets only: a datagram or
//! sequenced-packet socket, a file or a pipe is a clear error, since the
//! message framing reads a byte stream.

use std::net::{TcpListener, TcpStream};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::net::{UnixDatagram, UnixStream};

use multiproc::{Connection, Error};

fn refused(fd: OwnedFd, what: &str) {
    match Connection::from_socket(fd) {
        Err(Error::InvalidArgument(message)) => {
            assert!(message.contains(what), "{message}");
        }
        other => panic!("{what}: {other:?}"),
    }
}

#[test]
fn a_unix_stream_socket_carries_messages() {
    let (a, b) = UnixStream::pair().unwrap();
    let mut a = Connection::from_socket(a.into()).unwrap();
    let mut b = Connection::from_socket(b.into()).unwrap();
    a.send_bytes(b"over a stream").unwrap();
    assert_eq!(b.recv_bytes().unwrap(), b"over a stream");
}

#[test]
fn a_tcp_socket_carries_messages() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server, _) = listener.accept().unwrap();
    let mut a = Connection::from_socket(client.into()).unwrap();
    let mut b = Connection::from_socket(server.into()).unwrap();
    b.send(&42u32).unwrap();
    assert_eq!(a.recv::<u32>().unwrap(), 42);
}

#[test]
fn a_datagram_socket_is_refused() {
    let (a, _b) = UnixDatagram::pair().unwrap();
    refused(a.into(), "SOCK_DGRAM");
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    refused(udp.into(), "SOCK_DGRAM");
}

/// Two fresh descriptors a call just made, owned.
fn owned(fds: [libc::c_int; 2]) -> (OwnedFd, OwnedFd) {
    // SAFETY: the call that made them succeeded: fresh, ours alone.
    let first = unsafe { OwnedFd::from_raw_fd(fds[0]) };
    // SAFETY: as for the first; the two are distinct.
    let second = unsafe { OwnedFd::from_raw_fd(fds[1]) };
    (first, second)
}

#[test]
fn a_seqpacket_socket_is_refused() {
    let mut fds = [0; 2];
    // SAFETY: `fds` is a valid out-array of two ints.
    let r = unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_SEQPACKET, 0, fds.as_mut_ptr()) };
    assert_eq!(r, 0, "{}", std::io::Error::last_os_error());
    let (a, _b) = owned(fds);
    refused(a, "SOCK_SEQPACKET");
}

#[test]
fn a_regular_file_is_refused() {
    let path = std::env::temp_dir().join(format!("multiproc-from-socket-{}", std::process::id()));
    let file = std::fs::File::create(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    refused(file.into(), "no socket");
}

#[test]
fn a_pipe_is_refused() {
    let mut fds = [0; 2];
    // SAFETY: `fds` is a valid out-array of two ints.
    let r = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(r, 0, "{}", std::io::Error::last_os_error());
    let (read, write) = owned(fds);
    refused(read, "no socket");
    refused(write, "no socket");
}
