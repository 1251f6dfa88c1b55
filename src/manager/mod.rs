//! The managed layer: a Manager server process that owns dicts, lists and
//! namespaces, served to any number of processes through proxies over an
//! authenticated Unix socket (Python's `multiprocessing.Manager`).
//!
//! Each operation is a round trip to the server, so the managed layer is
//! flexible (any serde type, any number of processes, unrelated ones
//! included) but slow next to the shared layer. The server keeps values in
//! a dynamic model of Python's basic types ([`Value`]), so that it can
//! compare, sort and update them atomically itself.

mod client;
mod limits;
mod protocol;
mod server;
mod value;

pub use client::{DictProxy, ListProxy, Manager, NamespaceProxy};
pub use limits::{MAX_DEPTH, MAX_WORK};

use crate::conn::{Address, Listener};

/// Runs a manager server in this process, listening at `address` for
/// clients with `authkey` (what `multiproc manager serve` does), until a
/// client asks it to shut down; then the process exits. `ready` is called
/// with the bound address (for `tcp:…:0`, with the port the OS chose).
///
/// # Errors
/// If it cannot listen at `address`.
pub fn serve(
    address: &Address,
    authkey: &[u8],
    ready: impl FnOnce(&Address),
) -> crate::Result<std::convert::Infallible> {
    let listener = Listener::bind(address, Some(authkey))?;
    ready(listener.address());
    server::serve(listener, None)
}
pub use value::{from_value, to_value, ConvertError, ProxyRef, Value};
