//! Typed cells in shared memory: [`Value`] and [`Array`] with a robust lock,
//! [`RawValue`] and [`RawArray`] without one (atomics for integers).
//!
//! Element types are [`bytemuck::Pod`]: plain bytes with no pointers,
//! references or handles, which mean nothing in another process.
//!
//! # What cannot go into shared memory
//! Every bit pattern of an element must be a valid value, since another
//! process (or a scribble on a named segment) may write any bytes; and it
//! may own nothing, since no drop runs in shared memory. So the compiler
//! refuses a `bool` or a `char` (most bit patterns are invalid),
//! ```compile_fail,E0277
//! let v = multiproc::Value::new(true);
//! ```
//! ```compile_fail,E0277
//! let a = multiproc::Array::from_slice(&['a', 'b']);
//! ```
//! an enum (its discriminant has invalid values),
//! ```compile_fail,E0277
//! #[derive(Clone, Copy)]
//! #[repr(u8)]
//! enum Colour { Red, Green }
//! let v = multiproc::RawValue::new(Colour::Red);
//! ```
//! a reference or a type that owns memory (an address means nothing in
//! another process),
//! ```compile_fail,E0277
//! static X: u32 = 5;
//! let v = multiproc::Value::new(&X);
//! ```
//! ```compile_fail,E0277
//! let v = multiproc::Value::new(String::from("no"));
//! ```
//! ```compile_fail,E0277
//! let v = multiproc::RawArray::from_slice(&[Box::new(1u32)]);
//! ```
//! ```compile_fail,E0277
//! let v = multiproc::RawValue::new(std::ptr::null::<u8>());
//! ```
//! ```compile_fail,E0277
//! let f: fn() = || {};
//! let v = multiproc::Value::new(f);
//! ```
//! or a type with interior mutability of its own (a process-local atomic
//! or cell; [`RawValue::atomic`] gives an element's atomic twin instead):
//! ```compile_fail,E0277
//! let v = multiproc::RawValue::new(std::sync::atomic::AtomicU32::new(0));
//! ```
//! ```compile_fail,E0277
//! let v = multiproc::Array::from_slice(&[std::cell::Cell::new(0u8)]);
//! ```
//! and a struct with padding (uninitialised bytes), which `Pod`'s derive
//! rejects:
//! ```compile_fail
//! #[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
//! #[repr(C)]
//! struct Padded {
//!     tag: u8,
//!     value: u32,
//! }
//! ```
//! A guard gives access only while it lives, on the thread that locked:
//! it cannot outlive its value,
//! ```compile_fail,E0597
//! let guard;
//! {
//!     let v = multiproc::Value::new(0u64)?;
//!     guard = v.lock()?;
//! }
//! # Ok::<(), multiproc::Error>(())
//! ```
//! nor lend its cells for longer than it lives,
//! ```compile_fail,E0505
//! let v = multiproc::Array::from_slice(&[1u8, 2])?;
//! let guard = v.lock()?;
//! let cells: &[u8] = &guard;
//! drop(guard);
//! assert_eq!(cells[0], 1);
//! # Ok::<(), multiproc::Error>(())
//! ```
//! nor be shared with another thread,
//! ```compile_fail,E0277
//! let v = multiproc::Value::new(0u64)?;
//! let guard = v.lock()?;
//! std::thread::scope(|s| {
//!     s.spawn(|| *guard + 1);
//! });
//! # Ok::<(), multiproc::Error>(())
//! ```
//! nor go to another thread (the lock belongs to the thread that took it).
//! ```compile_fail,E0277
//! let v = multiproc::Array::from_slice(&[1u8, 2])?;
//! let guard = v.lock()?;
//! std::thread::spawn(move || guard[0] = 3);
//! # Ok::<(), multiproc::Error>(())
//! ```
//! An element's atomic twin lives no longer than its cell:
//! ```compile_fail,E0505
//! let v = multiproc::RawValue::new(0u32)?;
//! let hits = v.atomic();
//! drop(v);
//! hits.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
//! # Ok::<(), multiproc::Error>(())
//! ```

mod array;
mod locked;
mod raw;
mod value;

pub use array::Array;
pub use locked::{ArrayGuard, CellGuard, ValueGuard};
pub use raw::{AtomicElement, RawArray, RawValue};
pub use value::Value;

use std::alloc::Layout;
use std::ops::{Bound, Range, RangeBounds};

use crate::error::{Error, Result};

/// How new cells are filled: a copy of a slice, or as many zeros.
pub(crate) enum Init<'a, T> {
    Copy(&'a [T]),
    Zeroed(usize),
}

impl<T: bytemuck::Pod> Init<'_, T> {
    fn len(&self) -> usize {
        match self {
            Init::Copy(s) => s.len(),
            Init::Zeroed(n) => *n,
        }
    }

    /// Copies the initial elements into fresh zeroed memory at `at`.
    ///
    /// # Safety
    /// `at` must be valid for writes of `self.len()` elements of `T`, aligned.
    unsafe fn fill(&self, at: *mut T) {
        if let Init::Copy(src) = self {
            // SAFETY: per the caller; `src` is a distinct local slice.
            unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), at, src.len()) };
        }
    }
}

/// The layout of `len` elements of `T`, or an error if it overflows.
fn array_layout<T>(len: u64) -> Result<Layout> {
    usize::try_from(len)
        .ok()
        .and_then(|n| Layout::array::<T>(n).ok())
        .ok_or_else(|| too_large(len))
}

fn too_large(len: u64) -> Error {
    let e = std::io::Error::new(std::io::ErrorKind::InvalidInput, "array too large");
    Error::io(format!("layout of {len} elements"), e)
}

/// Resolves `range` against a length, or names the first index out of bounds.
///
/// A bound one past `usize::MAX` (`..=usize::MAX`, or a start excluding
/// `usize::MAX`) is out of bounds of every array, even one of `usize::MAX`
/// zero-sized elements: it must not saturate back inside.
fn resolve(range: impl RangeBounds<usize>, len: usize) -> Result<Range<usize>> {
    let past = |index: usize| Error::OutOfBounds { index, len };
    let start = match range.start_bound() {
        Bound::Included(&s) => s,
        Bound::Excluded(&s) => s.checked_add(1).ok_or_else(|| past(s))?,
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(&e) => e.checked_add(1).ok_or_else(|| past(e))?,
        Bound::Excluded(&e) => e,
        Bound::Unbounded => len,
    };
    if end > len {
        return Err(Error::OutOfBounds {
            index: end - 1,
            len,
        });
    }
    if start > end {
        return Err(Error::OutOfBounds { index: start, len });
    }
    Ok(start..end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_resolve_or_name_the_bad_index() {
        assert_eq!(resolve(.., 5).unwrap(), 0..5);
        assert_eq!(resolve(1..=2, 5).unwrap(), 1..3);
        assert_eq!(resolve(5.., 5).unwrap(), 5..5);
        assert!(matches!(
            resolve(0..6, 5),
            Err(Error::OutOfBounds { index: 5, len: 5 })
        ));
        assert!(matches!(
            resolve((Bound::Included(4), Bound::Excluded(3)), 5),
            Err(Error::OutOfBounds { index: 4, .. })
        ));
        // One past the largest index is past every length.
        assert!(matches!(
            resolve(usize::MAX..=usize::MAX, usize::MAX),
            Err(Error::OutOfBounds {
                index: usize::MAX,
                ..
            })
        ));
        assert!(matches!(
            resolve((Bound::Excluded(usize::MAX), Bound::Unbounded), usize::MAX),
            Err(Error::OutOfBounds { .. })
        ));
        assert_eq!(
            resolve(usize::MAX - 1..=usize::MAX - 1, usize::MAX).unwrap(),
            usize::MAX - 1..usize::MAX
        );
    }
}
