//! Other crates doing what multiproc does, behind the same bench traits as
//! the OS baselines: [`raw_sync`](::raw_sync) always; ipc-channel and
//! iceoryx2 with the `peers` feature of multiproc-cli (they are heavy to
//! build).

#[cfg(feature = "peers")]
mod iceoryx2;
#[cfg(feature = "peers")]
mod ipc_channel;
mod raw_sync;

#[cfg(feature = "peers")]
pub use self::iceoryx2::{
    iceoryx2_items_per_sec, iceoryx2_payload_bytes_per_sec, iceoryx2_round_trip_us,
    touch_every_byte, Delivered,
};
#[cfg(feature = "peers")]
pub use self::ipc_channel::{IpcChannelBytes, IpcChannelPingPong, IpcChannelStream};
pub use self::raw_sync::{RawSyncEventPair, RawSyncMutex};
