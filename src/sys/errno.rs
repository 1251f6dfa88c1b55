//! The error numbers that callers above `sys` match on (`io::Error::raw_os_error`,
//! and the codes of [`mutex_lock`](super::mutex_lock) and
//! [`mutex_unlock`](super::mutex_unlock)), so that no caller names `libc`.

// Some are for callers that still name `libc` themselves (src/sync,
// src/conn, src/manager, src/process/mod.rs); they switch to these.
#![allow(unused_imports)]

pub(crate) use libc::{
    EAGAIN, EBUSY, ECONNABORTED, ECONNRESET, EDEADLK, EFBIG, EINTR, EINVAL, EIO, ENOMEM, ENOSPC,
    ENOTRECOVERABLE, EPERM, EPIPE, EPROTO, ESRCH, ETIMEDOUT,
};
