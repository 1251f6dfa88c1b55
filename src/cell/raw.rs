//! [`RawValue`] and [`RawArray`]: shared cells without a lock.

use std::marker::PhantomData;
use std::ops::RangeBounds;
use std::sync::atomic;

use bytemuck::Pod;

use super::{array_layout, resolve};
use crate::error::{Error, Result};
use crate::segment::{place, ElemType, ObjectKind, ObjectLayout, Placement, Region};

/// Integer types with a same-sized atomic twin, for lock-free counters in
/// shared memory through [`RawValue::atomic`] and [`RawArray::atomic`].
///
/// # Safety
/// `Atomic` must have the same size, alignment and bit validity as `Self`.
pub unsafe trait AtomicElement: Pod {
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
    )*};
}

atomic_elements!(
    u8 => atomic::AtomicU8, i8 => atomic::AtomicI8,
    u16 => atomic::AtomicU16, i16 => atomic::AtomicI16,
    u32 => atomic::AtomicU32, i32 => atomic::AtomicI32,
    u64 => atomic::AtomicU64, i64 => atomic::AtomicI64,
    usize => atomic::AtomicUsize, isize => atomic::AtomicIsize,
);

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
    fn place(how: Placement<'_>, kind: ObjectKind, init: &[T], zeroed_len: usize) -> Result<Self> {
        let len = if init.is_empty() {
            zeroed_len
        } else {
            init.len()
        };
        let object = ObjectLayout {
            kind,
            elem: ElemType::of::<T>(),
            len: len as u64,
            layout_for: array_layout::<T>,
        };
        let (data, len) = place(how, &object, |at| {
            // SAFETY: `at` is fresh memory for `len >= init.len()` elements.
            unsafe {
                std::ptr::copy_nonoverlapping(init.as_ptr(), at.as_ptr().cast::<T>(), init.len())
            };
            Ok(())
        })?;
        Ok(RawCells {
            data,
            len: len as usize,
            _elem: PhantomData,
        })
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

    fn read(&self, index: usize) -> Result<T> {
        // SAFETY: in bounds; a volatile read of plain data, which another
        // process may be writing (documented as possibly torn).
        Ok(unsafe { self.ptr(index)?.read_volatile() })
    }

    fn write(&self, index: usize, value: T) -> Result<()> {
        // SAFETY: as for `read`.
        unsafe { self.ptr(index)?.write_volatile(value) };
        Ok(())
    }

    fn atomic(&self, index: usize) -> Result<&T::Atomic>
    where
        T: AtomicElement,
    {
        // SAFETY: in bounds and aligned for T, which has the atomic's layout
        // (AtomicElement); the memory lives as long as `self`, and other
        // processes reach it only through the same atomics or volatile access.
        Ok(unsafe { &*self.ptr(index)?.cast::<T::Atomic>() })
    }
}

/// One plain-data value in shared memory with no lock (Python's
/// `multiprocessing.RawValue`).
///
/// [`get`](RawValue::get) and [`set`](RawValue::set) are unsynchronised
/// volatile accesses: a value wider than the machine word may be read torn
/// while another process writes it. For integers, [`atomic`](RawValue::atomic)
/// gives the std atomic type over the same memory: a lock-free counter shared
/// by processes.
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

impl<T: Pod> RawValue<T> {
    /// A new anonymous value.
    ///
    /// # Errors
    /// If shared memory cannot be allocated.
    pub fn new(init: T) -> Result<Self> {
        Self::place(Placement::Anonymous, init)
    }

    /// Creates a named value.
    ///
    /// # Errors
    /// As for [`Value::create`](super::Value::create).
    pub fn create(name: &str, init: T) -> Result<Self> {
        Self::place(Placement::Create(name), init)
    }

    /// Opens a named value.
    ///
    /// # Errors
    /// As for [`Value::open`](super::Value::open).
    pub fn open(name: &str) -> Result<Self> {
        Self::place(Placement::Open(name), T::zeroed())
    }

    /// Opens a named value, creating it with `init` if it does not exist.
    ///
    /// # Errors
    /// As for [`Value::create_or_open`](super::Value::create_or_open).
    pub fn create_or_open(name: &str, init: T) -> Result<Self> {
        Self::place(Placement::CreateOrOpen(name), init)
    }

    fn place(how: Placement<'_>, init: T) -> Result<Self> {
        let cells = RawCells::place(how, ObjectKind::RawValue, &[init], 1)?;
        if cells.len != 1 {
            return Err(Error::Corrupt {
                name: how.name().into(),
                what: format!("a RawValue with {} elements", cells.len),
            });
        }
        Ok(RawValue { cells })
    }

    /// The one element (`place` checked there is exactly one).
    #[inline]
    fn ptr(&self) -> *mut T {
        self.cells.data.as_ptr::<T>()
    }

    /// Reads the value (volatile, unsynchronised).
    #[inline]
    pub fn get(&self) -> T {
        // SAFETY: a valid, aligned T for as long as `self` lives; a volatile
        // read of plain data that another process may be writing.
        unsafe { self.ptr().read_volatile() }
    }

    /// Writes the value (volatile, unsynchronised).
    #[inline]
    pub fn set(&self, value: T) {
        // SAFETY: as for `get`.
        unsafe { self.ptr().write_volatile(value) }
    }

    /// The value as a std atomic, for lock-free updates across processes.
    #[inline]
    pub fn atomic(&self) -> &T::Atomic
    where
        T: AtomicElement,
    {
        // SAFETY: as for `get`, and T has the atomic's layout (AtomicElement).
        unsafe { &*self.ptr().cast::<T::Atomic>() }
    }
}

/// A fixed-length array of plain-data elements in shared memory with no lock
/// (Python's `multiprocessing.RawArray`). Accesses are as for [`RawValue`].
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

impl<T: Pod> RawArray<T> {
    /// A new anonymous array of `len` zeroed elements.
    ///
    /// # Errors
    /// If shared memory cannot be allocated.
    pub fn new(len: usize) -> Result<Self> {
        Self::place(Placement::Anonymous, &[], len)
    }

    /// A new anonymous array holding a copy of `init`.
    ///
    /// # Errors
    /// If shared memory cannot be allocated.
    pub fn from_slice(init: &[T]) -> Result<Self> {
        Self::place(Placement::Anonymous, init, 0)
    }

    /// Creates a named array holding a copy of `init`.
    ///
    /// # Errors
    /// As for [`Array::create`](super::Array::create).
    pub fn create(name: &str, init: &[T]) -> Result<Self> {
        Self::place(Placement::Create(name), init, 0)
    }

    /// Opens a named array.
    ///
    /// # Errors
    /// As for [`Array::open`](super::Array::open).
    pub fn open(name: &str) -> Result<Self> {
        Self::place(Placement::Open(name), &[], 0)
    }

    /// Opens a named array, creating it from `init` if it does not exist.
    ///
    /// # Errors
    /// As for [`Array::create_or_open`](super::Array::create_or_open).
    pub fn create_or_open(name: &str, init: &[T]) -> Result<Self> {
        Self::place(Placement::CreateOrOpen(name), init, 0)
    }

    fn place(how: Placement<'_>, init: &[T], zeroed_len: usize) -> Result<Self> {
        RawCells::place(how, ObjectKind::RawArray, init, zeroed_len).map(|cells| RawArray { cells })
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.cells.len
    }

    /// Whether the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reads element `index` (volatile, unsynchronised).
    ///
    /// # Errors
    /// [`Error::OutOfBounds`].
    pub fn get(&self, index: usize) -> Result<T> {
        self.cells.read(index)
    }

    /// Writes element `index` (volatile, unsynchronised).
    ///
    /// # Errors
    /// [`Error::OutOfBounds`].
    pub fn set(&self, index: usize, value: T) -> Result<()> {
        self.cells.write(index, value)
    }

    /// Copies the elements in `range` out, one volatile read each.
    ///
    /// # Errors
    /// [`Error::OutOfBounds`].
    pub fn read(&self, range: impl RangeBounds<usize>) -> Result<Vec<T>> {
        resolve(range, self.len())?
            .map(|i| self.cells.read(i))
            .collect()
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
