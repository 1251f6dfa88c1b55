//! Random bytes from the kernel.

use std::io;

use super::syscall_retrying;

/// Fills `buf` with random bytes from the kernel.
pub(crate) fn random_bytes(buf: &mut [u8]) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let rest = &mut buf[done..];
        // SAFETY: `rest` is valid for writes of its length.
        let n = syscall_retrying(|| unsafe {
            libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0)
        })?;
        done += n as usize;
    }
    Ok(())
}
