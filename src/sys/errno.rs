//! The error numbers that callers above `sys` match on (`io::Error::raw_os_error`,
//! and the codes of [`mutex_lock`](super::mutex_lock) and
//! [`mutex_unlock`](super::mutex_unlock)), so that no caller names `libc`.

pub(crate) use libc::{
    EBUSY, ECONNRESET, EDEADLK, EFBIG, EINVAL, EIO, ENOMEM, ENOSPC, ENOTRECOVERABLE, EPERM, EPIPE,
    ESRCH, ETIMEDOUT,
};
