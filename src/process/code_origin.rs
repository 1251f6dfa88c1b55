//! Which loaded object holds some code, for a child that is handed a
//! function's address (a pool worker, a fork server's child).

use crate::sys;

/// Which loaded object (executable or shared library) holds some code:
/// its load address and path, as the dynamic loader knows them.
///
/// A function's address is valid in a forked helper (a pool worker, a
/// fork server's child) only if the helper has the same object at the
/// same place: its memory is a copy of a process as it was when the pool
/// or the fork server was created, so code that the process loaded later
/// (`dlopen`) is missing there, or something else is. The parent sends
/// the identity of the object that holds the address, and the child calls
/// the address only if its own object there matches
/// ([`holds`](CodeOrigin::holds)): the same file mapped at the same
/// address is the same code.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub(crate) struct CodeOrigin {
    base: usize,
    path: Vec<u8>,
}

impl CodeOrigin {
    /// The object that holds the code at address `addr` in this process,
    /// if the loader knows one.
    pub(crate) fn of(addr: usize) -> Option<CodeOrigin> {
        let object = sys::loaded_object(addr)?;
        Some(CodeOrigin {
            base: object.base,
            path: object.path,
        })
    }

    /// Whether this process has this object, at the same place, holding
    /// `addr`: then the code at `addr` is the same as where it came from.
    pub(crate) fn holds(&self, addr: usize) -> bool {
        CodeOrigin::of(addr).as_ref() == Some(self)
    }

    /// The object's path, as the loader names it.
    pub(crate) fn path(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.path)
    }
}
