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
mod protocol;
mod server;
mod value;

pub use client::{DictProxy, ListProxy, Manager, NamespaceProxy};
pub use value::{from_value, to_value, ConvertError, Value};
