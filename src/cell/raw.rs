//! [`RawValue`] and [`RawArray`]: shared cells without a lock.

use std::alloc::Layout;
use std::marker::PhantomData;
use std::ops::RangeBounds;
use std::ptr::NonNull;
use std::sync::atomic;

use bytemuck::Pod;

use super::{array_layout, resolve, too_large, Init};
use crate::error::{Error, Result};
use crate::segment::{
    place, shared_constructors, ElemType, ObjectKind, Placement, Region, SharedObject,
};

/// Integer types with a same-sized atomic twin, for lock-free counters in
/// shared memory through [`RawValue::atomic`] and [`RawArray::atomic`].
///
/// Sealed: implemented for the integers of 1 to 8 bytes only. Other
/// processes and [`RawValue::get`] copy an element in atomic pieces of its
/// whole size, and an atomic twin of another make (two `AtomicU16` for a
/// 4-byte pair, or no atomic at all) would race with them:
/// ```compile_fail,E0277
/// use std::sync::atomic::AtomicU16;
/// #[derive(Clone, Copy)]
/// #[repr(C, align(4))]
/// struct Pair([u16; 2]);
/// // SAFETY: two `u16`, no padding; any bits are a valid pair.
/// unsafe impl bytemuck::Zeroable for Pair {}
/// // SAFETY: as above.
/// unsafe impl bytemuck::Pod for Pair {}
/// #[repr(C, align(4))]
/// struct AtomicPair([AtomicU16; 2]);
/// // SAFETY: the size, alignment and bit validity of `Pair`.
/// unsafe impl multiproc::cell::AtomicElement for Pair {
///     type Atomic = AtomicPair;
/// }
/// ```
///
/// # Safety
/// `Atomic` must be the `std::sync::atomic` integer of `Self`'s size,
/// alignment and bit validity, so that it accesses the element as one
/// atomic access of that size, as the copies of [`RawValue::get`] do.
pub unsafe trait AtomicElement: Pod + sealed::Sealed {
    /// The `std::sync::atomic` type of the same width.
    type Atomic: Send + Sync;
}

macro_rules! atomic_elements {
    ($($t:ty => $a:ty),* $(,)?) => {$(
        const _: () = assert!(
            std::mem::size_of::<$t>() == std::mem::size_of::<$a>()
                && std::mem::align_of::<$t>() == std::mem::align_of::<$a>()
        );
        // SAFETY: the assertion above checks size and alignment; std documents
        // each atomic integer as having the representation of its integer.
        unsafe impl AtomicElement for $t {
            type Atomic = $a;
        }
        impl sealed::Sealed for $t {}
    )*};
}

mod sealed {
    /// Only this crate says which elements have an atomic twin.
    pub trait Sealed {}
}

atomic_elements!(
    u8 => atomic::AtomicU8, i8 => atomic::AtomicI8,
    u16 => atomic::AtomicU16, i16 => atomic::AtomicI16,
    u32 => atomic::AtomicU32, i32 => atomic::AtomicI32,
    u64 => atomic::AtomicU64, i64 => atomic::AtomicI64,
    usize => atomic::AtomicUsize, isize => atomic::AtomicIsize,
);

/// Which way [`piecewise`] copies.
#[derive(Clone, Copy)]
enum Direction {
    /// From shared memory into the local bytes.
    Load,
    /// From the local bytes into shared memory.
    Store,
}

/// The widest atomic access, at most 8 bytes, that an element's size is a
/// multiple of: an element of 1, 2, 4 or 8 bytes is one piece. Raw cells
/// start 8-byte aligned ([`raw_layout`]) and lie at multiples of their size,
/// so every piece is aligned for its width.
const fn piece(size: usize) -> usize {
    1 << (size | 8).trailing_zeros()
}

/// The layout of `len` raw cells: their array's, at least 8-byte aligned.
fn raw_layout<T>(len: u64) -> Result<std::alloc::Layout> {
    array_layout::<T>(len)?
        .align_to(8)
        .map_err(|_| too_large(len))
}

/// Copies one element between shared memory at `at` and `local`, in
/// [`piece`]-sized atomic accesses (acquire loads, release stores): another
/// process or thread may copy the same element at the same time, which can
/// tear it between pieces, never within one.
///
/// # Safety
/// `at` is valid for `local.len()` bytes of shared memory for the duration
/// of the call, and a multiple of `piece(local.len())`; every access to
/// those bytes is made by this function with the same `local.len()`, or
/// (for an [`AtomicElement`], whose one piece is the whole element) through
/// its atomic type: never a non-atomic access, never another piece size.
#[inline]
unsafe fn piecewise(at: *mut u8, local: &mut [u8], direction: Direction) {
    use atomic::Ordering::{Acquire, Release};
    let unit = piece(local.len());
    for (k, bytes) in local.chunks_exact_mut(unit).enumerate() {
        // SAFETY: piece k, `unit` bytes at `k * unit`, lies inside the
        // `local.len()` bytes that `at` is valid for (per the caller).
        let p = unsafe { at.add(k * unit) };
        macro_rules! piece {
            ($atomic:ty, $int:ty) => {{
                // SAFETY: `p` is valid for `unit` bytes for the call; `unit`
                // divides its address (per the caller), so it is aligned for
                // the atomic of that width; per the caller, nothing accesses
                // it non-atomically or at another width.
                let a = unsafe { <$atomic>::from_ptr(p.cast::<$int>()) };
                match direction {
                    Direction::Load => bytes.copy_from_slice(&a.load(Acquire).to_ne_bytes()),
                    Direction::Store => a.store(
                        <$int>::from_ne_bytes(bytes.try_into().expect("one piece")),
                        Release,
                    ),
                }
            }};
        }
        match unit {
            8 => piece!(atomic::AtomicU64, u64),
            4 => piece!(atomic::AtomicU32, u32),
            2 => piece!(atomic::AtomicU16, u16),
            _ => piece!(atomic::AtomicU8, u8),
        }
    }
}

/// Reads the element at `at` with [`piecewise`].
///
/// # Safety
/// `at` is an element of a raw cell object (placed with [`raw_layout`], in
/// shared memory that stays mapped during the call, reached only as
/// [`piecewise`] requires).
#[inline]
unsafe fn load<T: Pod>(at: *mut T) -> T {
    let mut value = T::zeroed();
    // SAFETY: per the caller.
    unsafe {
        piecewise(
            at.cast(),
            bytemuck::bytes_of_mut(&mut value),
            Direction::Load,
        )
    };
    value
}

/// Writes the element at `at` with [`piecewise`].
///
/// # Safety
/// As for [`load`].
#[inline]
unsafe fn store<T: Pod>(at: *mut T, mut value: T) {
    // SAFETY: per the caller.
    unsafe {
        piecewise(
            at.cast(),
            bytemuck::bytes_of_mut(&mut value),
            Direction::Store,
        )
    };
}

/// `len` elements of `T` in shared memory with no lock.
struct RawCells<T> {
    data: Region,
    len: usize,
    _elem: PhantomData<T>,
}

impl<T> Clone for RawCells<T> {
    fn clone(&self) -> Self {
        RawCells {
            data: self.data.clone(),
            len: self.len,
            _elem: PhantomData,
        }
    }
}

impl<T: Pod> RawCells<T> {
    fn from_region(data: Region, len: u64) -> Self {
        RawCells {
            data,
            len: len as usize,
            _elem: PhantomData,
        }
    }

    fn ptr(&self, index: usize) -> Result<*mut T> {
        if index >= self.len {
            return Err(Error::OutOfBounds {
                index,
                len: self.len,
            });
        }
        // SAFETY: `index < len`, inside the object's memory.
        Ok(unsafe { self.data.as_ptr::<T>().add(index) })
    }

    #[inline]
    fn read(&self, index: usize) -> Result<T> {
        // SAFETY: an element of the object, mapped while `self` lives.
        Ok(unsafe { load(self.ptr(index)?) })
    }

    #[inline]
    fn write(&self, index: usize, value: T) -> Result<()> {
        // SAFETY: as for `read`.
        unsafe { store(self.ptr(index)?, value) };
        Ok(())
    }

    fn atomic(&self, index: usize) -> Result<&T::Atomic>
    where
        T: AtomicElement,
    {
        // SAFETY: in bounds and aligned for T, which has the atomic's layout
        // (AtomicElement); the memory lives as long as `self`, and other
        // processes reach it only through the same atomic or `piecewise`,
        // which copies an integer of at most 8 bytes as one atomic of its
        // width (`piece`).
        Ok(unsafe { &*self.ptr(index)?.cast::<T::Atomic>() })
    }
}

/// One plain-data value in shared memory with no lock (Python's
/// `multiprocessing.RawValue`).
///
/// [`get`](RawValue::get) and [`set`](RawValue::set) take no lock, as in
/// Python, but they are atomic accesses, never a data race: the value is
/// copied in the widest pieces its size allows, up to 8 bytes, each piece
/// one atomic load (acquire) or store (release).
///
/// **What can tear.** A value of 1, 2, 4 or 8 bytes (any integer or float,
/// `[u32; 2]`, `[u8; 4]`, …) is one piece: it is always read as some
/// process wrote it, never mixed. A larger value is read piece by piece
/// while others may write it: a `[u64; 2]` can show one writer's first half
/// and another's second half; a 12-byte value three 4-byte pieces; a
/// `[u8; 3]` three single bytes. Each piece is always whole. Guard such
/// values with a lock ([`Value`](super::Value)) when they must not tear.
///
/// For integers, [`atomic`](RawValue::atomic) gives the std atomic type over
/// the same memory: a lock-free counter shared by processes, which mixes
/// freely with `get` and `set`.
///
/// # Example
/// ```
/// use std::sync::atomic::Ordering;
/// use multiproc::{cell::RawValue, process::Process};
/// let hits = RawValue::new(0u64)?;
/// let theirs = hits.clone(); // another handle on the same memory
/// let mut child = Process::new(move || {
///     theirs.atomic().fetch_add(5, Ordering::Relaxed);
/// });
/// child.start()?;
/// child.join()?;
/// assert_eq!(hits.atomic().load(Ordering::Relaxed), 5);
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct RawValue<T> {
    cells: RawCells<T>,
}

impl<T> Clone for RawValue<T> {
    fn clone(&self) -> Self {
        RawValue {
            cells: self.cells.clone(),
        }
    }
}

impl<T: Pod> SharedObject for RawValue<T> {
    type Args<'a> = T;
    const KIND: ObjectKind = ObjectKind::RawValue;

    fn elem() -> ElemType {
        ElemType::of::<T>()
    }

    fn len(_: &T) -> Result<u64> {
        Ok(1)
    }

    fn layout(len: u64) -> Result<Layout> {
        raw_layout::<T>(len)
    }

    unsafe fn init(at: NonNull<u8>, init: T) -> Result<()> {
        // SAFETY: fresh memory for one element, per the caller.
        unsafe { at.cast::<T>().write(init) };
        Ok(())
    }

    unsafe fn from_region(region: Region, len: u64) -> std::result::Result<Self, String> {
        if len != 1 {
            return Err(format!("a RawValue with {len} elements"));
        }
        Ok(RawValue {
            cells: RawCells::from_region(region, len),
        })
    }
}

shared_constructors! {
    impl[T: Pod] RawValue<T> as "value without a lock" {
        args(init: T) => init,
        made: " holding `init`",
        errors: "",
        kept: " An existing one keeps its own value.",
        anonymous: new,
    }
}

impl<T: Pod> RawValue<T> {
    /// The one element (`from_region` checked there is exactly one).
    #[inline]
    fn ptr(&self) -> *mut T {
        self.cells.data.as_ptr::<T>()
    }

    /// Reads the value, without a lock: see [what can tear](RawValue).
    #[inline]
    pub fn get(&self) -> T {
        // SAFETY: the one element, mapped while `self` lives.
        unsafe { load(self.ptr()) }
    }

    /// Writes the value, without a lock: see [what can tear](RawValue).
    #[inline]
    pub fn set(&self, value: T) {
        // SAFETY: as for `get`.
        unsafe { store(self.ptr(), value) }
    }

    /// The value as a std atomic, for lock-free updates across processes.
    ///
    /// Integers only: another element (a float, an array, a struct) has
    /// no atomic twin of its make, and is copied with [`get`](Self::get)
    /// and [`set`](Self::set) only.
    /// ```compile_fail,E0277
    /// let v = multiproc::RawValue::new(1.5f64)?;
    /// let _ = v.atomic();
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    #[inline]
    pub fn atomic(&self) -> &T::Atomic
    where
        T: AtomicElement,
    {
        // SAFETY: as for `RawCells::atomic`.
        unsafe { &*self.ptr().cast::<T::Atomic>() }
    }
}

/// A fixed-length array of plain-data elements in shared memory with no lock
/// (Python's `multiprocessing.RawArray`). Each element is accessed as a
/// [`RawValue`] is: atomically in pieces of up to 8 bytes, so an element of
/// 1, 2, 4 or 8 bytes never tears and a larger one can tear between its
/// pieces. [`read`](RawArray::read) copies element by element: the copy is
/// not a snapshot of the whole array.
pub struct RawArray<T> {
    cells: RawCells<T>,
}

impl<T> Clone for RawArray<T> {
    fn clone(&self) -> Self {
        RawArray {
            cells: self.cells.clone(),
        }
    }
}

impl<T: Pod> SharedObject for RawArray<T> {
    type Args<'a> = Init<'a, T>;
    const KIND: ObjectKind = ObjectKind::RawArray;

    fn elem() -> ElemType {
        ElemType::of::<T>()
    }

    fn len(init: &Init<'_, T>) -> Result<u64> {
        Ok(init.len() as u64)
    }

    fn layout(len: u64) -> Result<Layout> {
        raw_layout::<T>(len)
    }

    unsafe fn init(at: NonNull<u8>, init: Init<'_, T>) -> Result<()> {
        // SAFETY: fresh memory for `init.len()` elements, per the caller.
        unsafe { init.fill(at.as_ptr().cast::<T>()) };
        Ok(())
    }

    unsafe fn from_region(region: Region, len: u64) -> std::result::Result<Self, String> {
        Ok(RawArray {
            cells: RawCells::from_region(region, len),
        })
    }
}

shared_constructors! {
    impl[T: Pod] RawArray<T> as "array without a lock" {
        args(init: &[T]) => Init::Copy(init),
        made: " holding a copy of `init`",
        errors: "",
        kept: " An existing one keeps its own length and elements.",
    }
}

impl<T: Pod> RawArray<T> {
    /// A new anonymous array of `len` zeroed elements.
    ///
    /// # Errors
    /// If shared memory cannot be allocated.
    pub fn new(len: usize) -> Result<Self> {
        place(Placement::Anonymous(Init::Zeroed(len)))
    }

    /// A new anonymous array holding a copy of `init`.
    ///
    /// # Errors
    /// If shared memory cannot be allocated.
    pub fn from_slice(init: &[T]) -> Result<Self> {
        place(Placement::Anonymous(Init::Copy(init)))
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.cells.len
    }

    /// Whether the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reads element `index`, without a lock: see [`RawArray`].
    ///
    /// # Errors
    /// [`Error::OutOfBounds`].
    pub fn get(&self, index: usize) -> Result<T> {
        self.cells.read(index)
    }

    /// Writes element `index`, without a lock: see [`RawArray`].
    ///
    /// # Errors
    /// [`Error::OutOfBounds`].
    pub fn set(&self, index: usize, value: T) -> Result<()> {
        self.cells.write(index, value)
    }

    /// Copies the elements in `range` out, one element at a time.
    ///
    /// # Errors
    /// [`Error::OutOfBounds`].
    pub fn read(&self, range: impl RangeBounds<usize>) -> Result<Vec<T>> {
        let range = resolve(range, self.len())?;
        if std::mem::size_of::<T>() == 0 {
            // Nothing to load, and up to `usize::MAX` of them: one copy of
            // an empty slice, not a loop of that many steps.
            // SAFETY: a dangling pointer is non-null and aligned, and any
            // length of a zero-sized type spans zero bytes; a `Pod` type
            // of no bytes has exactly one value.
            let none = unsafe {
                std::slice::from_raw_parts(NonNull::<T>::dangling().as_ptr(), range.len())
            };
            return Ok(none.to_vec());
        }
        range.map(|i| self.cells.read(i)).collect()
    }

    /// Element `index` as a std atomic.
    ///
    /// # Errors
    /// [`Error::OutOfBounds`].
    pub fn atomic(&self, index: usize) -> Result<&T::Atomic>
    where
        T: AtomicElement,
    {
        self.cells.atomic(index)
    }
}

impl<T> std::fmt::Debug for RawValue<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RawValue<{}> {{ .. }}", std::any::type_name::<T>())
    }
}

impl<T> std::fmt::Debug for RawArray<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "RawArray<{}> {{ len: {} }}",
            std::any::type_name::<T>(),
            self.cells.len
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Memory placed as raw cells are: at least 8-byte aligned.
    #[repr(C, align(128))]
    struct Cells([u64; 4]);

    /// A pointer the test's threads share; they reach it only through
    /// `load` and `store`.
    struct Shared(*mut u8);
    // SAFETY: the pointee outlives the scoped threads and is accessed only
    // atomically (through `piecewise`).
    unsafe impl Sync for Shared {}

    /// Threads store and load the same elements at once: never a data race
    /// (Miri checks every access), and a value of one piece (a `[u32; 2]`)
    /// never tears, while a `[u64; 2]` tears only between its halves.
    #[test]
    fn concurrent_copies_are_atomic_and_tear_only_between_pieces() {
        let rounds = if cfg!(miri) { 300 } else { 300_000 };
        let mut cells = Box::new(Cells([0; 4]));
        let base = Shared(std::ptr::addr_of_mut!(cells.0).cast::<u8>());
        // A `[u32; 2]` at offset 0, a `[u64; 2]` at offset 16.
        let pair = |s: &Shared| s.0.cast::<[u32; 2]>();
        // SAFETY: offset 16 is inside the 32 bytes.
        let wide = |s: &Shared| unsafe { s.0.add(16) }.cast::<[u64; 2]>();
        std::thread::scope(|s| {
            for writer in [0u64, u64::MAX] {
                let base = &base;
                s.spawn(move || {
                    for _ in 0..rounds {
                        // SAFETY: an element of the live box, aligned, only
                        // reached through `load`/`store` with its own size.
                        unsafe { store(pair(base), [writer as u32; 2]) };
                        // SAFETY: as above.
                        unsafe { store(wide(base), [writer; 2]) };
                    }
                });
            }
            let base = &base;
            s.spawn(move || {
                for _ in 0..rounds {
                    // SAFETY: as for the stores above.
                    let p = unsafe { load(pair(base)) };
                    // SAFETY: as above.
                    let w = unsafe { load(wide(base)) };
                    assert_eq!(p[0], p[1], "a value of one piece never tears");
                    assert!(w.iter().all(|&h| h == 0 || h == u64::MAX), "{w:?}");
                }
            });
        });
        drop(cells);
    }

    #[test]
    fn pieces_are_the_widest_access_up_to_8_bytes() {
        assert_eq!(piece(8), 8);
        assert_eq!(piece(16), 8);
        assert_eq!(piece(4), 4);
        assert_eq!(piece(12), 4);
        assert_eq!(piece(2), 2);
        assert_eq!(piece(3), 1);
        assert_eq!(piece(0), 8);
    }
}
