//! [ipc-channel](::ipc_channel) (Servo's inter-process channels: bincode
//! over Unix `SOCK_SEQPACKET` sockets, large messages through shared
//! memory) beside [`Queue`](multiproc::Queue) and [`Pipe`](fn@multiproc::conn::Pipe).
//!
//! Channels made before a fork work in the child: the sockets are
//! inherited. Its ends are `Send` but not `Sync`, hence the mutexes.

use std::sync::{Mutex, MutexGuard, PoisonError};

use anyhow::Result;
use ipc_channel::ipc::{self, IpcBytesReceiver, IpcBytesSender, IpcReceiver, IpcSender};

use crate::baseline::{BenchPayload, BenchPingPong, BenchStream};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One `IpcSender<u64>`/`IpcReceiver<u64>` channel: one message per item.
pub struct IpcChannelStream {
    tx: Mutex<IpcSender<u64>>,
    rx: Mutex<IpcReceiver<u64>>,
}

impl IpcChannelStream {
    /// A new channel.
    ///
    /// # Errors
    /// If the channel cannot be made.
    pub fn new() -> Result<Self> {
        let (tx, rx) = ipc::channel()?;
        Ok(IpcChannelStream {
            tx: Mutex::new(tx),
            rx: Mutex::new(rx),
        })
    }
}

impl BenchStream for IpcChannelStream {
    fn produce(&self, i: u64) {
        let _ = lock(&self.tx).send(i);
    }
    fn consume(&self) -> u64 {
        lock(&self.rx).recv().unwrap_or(u64::MAX)
    }
}

/// Two `u64` channels, one each way.
pub struct IpcChannelPingPong {
    ping: IpcChannelStream,
    pong: IpcChannelStream,
}

impl IpcChannelPingPong {
    /// Two new channels.
    ///
    /// # Errors
    /// If a channel cannot be made.
    pub fn new() -> Result<Self> {
        Ok(IpcChannelPingPong {
            ping: IpcChannelStream::new()?,
            pong: IpcChannelStream::new()?,
        })
    }
}

impl BenchPingPong for IpcChannelPingPong {
    fn answer(&self) {
        let v = self.ping.consume();
        self.pong.produce(v);
    }
    fn ask(&self) {
        self.ping.produce(7);
        self.pong.consume();
    }
}

/// A bytes channel (`IpcBytesSender`/`IpcBytesReceiver`): a fresh `Vec`
/// per message, as the caller gets it.
pub struct IpcChannelBytes {
    tx: Mutex<IpcBytesSender>,
    rx: Mutex<IpcBytesReceiver>,
}

impl IpcChannelBytes {
    /// A new bytes channel.
    ///
    /// # Errors
    /// If the channel cannot be made.
    pub fn new() -> Result<Self> {
        let (tx, rx) = ipc::bytes_channel()?;
        Ok(IpcChannelBytes {
            tx: Mutex::new(tx),
            rx: Mutex::new(rx),
        })
    }
}

impl BenchPayload for IpcChannelBytes {
    fn send_payload(&self, msg: &[u8]) {
        let _ = lock(&self.tx).send(msg);
    }
    fn recv_payload(&self, check: &mut dyn FnMut(&[u8])) -> Option<()> {
        let msg = lock(&self.rx).recv().ok()?;
        check(&msg);
        Some(())
    }
}
