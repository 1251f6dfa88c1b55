//! Thin wrappers over the operating system: the one place that knows which OS
//! this is. Everything above calls these functions and never `libc` directly
//! for anything platform-specific.

mod deadline;
#[cfg(target_os = "linux")]
mod descriptors;
mod events;
#[cfg(target_os = "linux")]
mod linux;

pub(crate) use deadline::Deadline;
#[cfg(target_os = "linux")]
pub(crate) use descriptors::release_inherited;
pub(crate) use events::*;
#[cfg(target_os = "linux")]
pub(crate) use linux::*;

#[cfg(not(target_os = "linux"))]
compile_error!("multiproc supports Linux only for now; OS specifics live in src/sys");
