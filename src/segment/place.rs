//! Placing a shared object: the one way every type of this crate that
//! lives in shared memory is made anonymously, created by name, opened, or
//! created unless it exists.
//!
//! A type says what it is once, in its own file, by implementing
//! [`SharedObject`]; [`place`] does the rest, and [`shared_constructors!`]
//! writes the type's public constructors from it. A new primitive is that
//! file plus one line in the list of kinds (`object_kinds!` in
//! `header.rs`).

use std::alloc::Layout;
use std::io;
use std::ptr::NonNull;

use super::header::{Contents, DATA_OFFSET};
use super::{ElemType, ObjectKind, Region, Segment};
use crate::error::{Error, Result};

/// Where a shared object is made or found, with what its creator gives
/// (`A`, the type's [`SharedObject::Args`]).
#[derive(Clone, Copy, Debug)]
pub(crate) enum Placement<'n, A> {
    /// A new anonymous object from the arena, shared with the children the
    /// process forks afterwards.
    Anonymous(A),
    /// A new named segment; fails if the name exists.
    Create(&'n str, A),
    /// An existing named segment.
    Open(&'n str),
    /// The named segment, created from `A` if it does not exist.
    CreateOrOpen(&'n str, A),
}

/// A type that lives in shared memory: the state in a segment (or in a
/// block of the arena) and the process-local handle built on it.
///
/// The header of a named segment records [`KIND`](Self::KIND),
/// [`elem`](Self::elem) and the object's length, and an opener finds them
/// there; so no two types may share a kind unless their memory is laid
/// out alike.
pub(crate) trait SharedObject: Sized {
    /// What the creator gives: initial contents, parties, sizes.
    type Args<'a>
    where
        Self: 'a;

    /// What the segment header says the object is.
    const KIND: ObjectKind;

    /// The element type the header records, so that an opener that
    /// expects another is refused. None for most.
    fn elem() -> ElemType {
        ElemType::none()
    }

    /// The length the header records for an object made from `args`:
    /// elements for the cells, the object's own measure for others
    /// (barrier parties, ring bytes); 0 (the default) for none. An error if
    /// `args` are unfit.
    fn len(args: &Self::Args<'_>) -> Result<u64> {
        let _ = args;
        Ok(0)
    }

    /// The memory of an object of length `len` (from the header, when
    /// opening); an error if there can be no such object.
    fn layout(len: u64) -> Result<Layout>;

    /// Fills a new object.
    ///
    /// # Safety
    /// `at` points to zeroed memory of `layout(len(&args))`, aligned for
    /// it, that no other thread or process uses yet.
    unsafe fn init(at: NonNull<u8>, args: Self::Args<'_>) -> Result<()>;

    /// The handle on an object of length `len`; `Err` says what is wrong
    /// with an object whose length (read from a header) makes no sense.
    ///
    /// # Safety
    /// `region` holds at least `layout(len)` bytes, filled by
    /// [`init`](Self::init) of this type: by this process, or by the one
    /// that created a segment whose header says this kind and element type
    /// and says that its creator finished.
    unsafe fn from_region(region: Region, len: u64) -> std::result::Result<Self, String>;
}

/// Makes or finds a shared object.
///
/// # Errors
/// Those of the type's [`len`](SharedObject::len) and
/// [`layout`](SharedObject::layout), and of the segment: see
/// [`Segment::create`] and [`Segment::open`]. [`Error::Corrupt`] if an
/// opened object's length does not fit its segment or makes no sense.
pub(crate) fn place<T: SharedObject>(how: Placement<'_, T::Args<'_>>) -> Result<T> {
    let (region, len, name) = match how {
        Placement::Anonymous(args) => {
            let len = T::len(&args)?;
            let region = Region::anonymous(T::layout(len)?)?;
            // SAFETY: a fresh zeroed block of `layout(len)`, this thread's alone.
            unsafe { T::init(region.start(), args)? };
            (region, len, "")
        }
        Placement::Create(name, args) => {
            let len = T::len(&args)?;
            // SAFETY: `create_named` hands `init` the zeroed data area of a
            // segment that nobody else can see yet, of `layout(len)`.
            let seg = Segment::create_named(name, &contents::<T>(len)?, |at| unsafe {
                T::init(at, args)
            })?;
            (Region::from_segment(seg), len, name)
        }
        Placement::Open(name) => {
            let (region, len) = opened::<T>(Segment::open_named(name, T::KIND, &T::elem())?)?;
            (region, len, name)
        }
        Placement::CreateOrOpen(name, args) => {
            let len = T::len(&args)?;
            // SAFETY: as for `Create`.
            let seg = Segment::create_or_open_named(name, &contents::<T>(len)?, |at| unsafe {
                T::init(at, args)
            })?;
            // An existing segment may have another length than asked for.
            let (region, len) = opened::<T>(seg)?;
            (region, len, name)
        }
    };
    // SAFETY: `region` holds `layout(len)` bytes, filled by `T::init`
    // above, or (opened) in a segment whose header says `T::KIND` and
    // `T::elem()`, that its creator published only after `T::init`
    // returned, and whose data area fits `layout(len)` and is aligned
    // for it (`opened`).
    unsafe { T::from_region(region, len) }.map_err(|what| Error::Corrupt {
        name: name.into(),
        what,
    })
}

/// The header of a new segment for an object of length `len`.
fn contents<T: SharedObject>(len: u64) -> Result<Contents> {
    let layout = T::layout(len)?;
    // The data area of a segment is aligned to DATA_OFFSET bytes.
    if layout.align() > DATA_OFFSET {
        let e = io::Error::new(io::ErrorKind::InvalidInput, "alignment above 256 bytes");
        return Err(Error::io("named shared object", e));
    }
    Ok(Contents {
        kind: T::KIND,
        elem: T::elem(),
        len,
        data_size: layout.size(),
    })
}

/// The memory and length of an object in an opened segment, checked to
/// fit: the length comes from the header, which another process wrote.
fn opened<T: SharedObject>(seg: Segment) -> Result<(Region, u64)> {
    let info = seg.info()?;
    let needed = T::layout(info.len)?;
    // No creator makes one (see `contents`), but a header may say so.
    if needed.align() > DATA_OFFSET {
        return Err(Error::Corrupt {
            name: seg.name().unwrap_or_default().into(),
            what: format!(
                "a {} aligned to {} bytes, in a data area aligned to {DATA_OFFSET}",
                T::KIND,
                needed.align()
            ),
        });
    }
    if needed.size() as u64 > info.data_size {
        return Err(Error::Corrupt {
            name: seg.name().unwrap_or_default().into(),
            what: format!(
                "a {} of length {} needs {} data bytes, the segment has {}",
                T::KIND,
                info.len,
                needed.size(),
                info.data_size
            ),
        });
    }
    Ok((Region::from_segment(seg), info.len))
}

/// Writes the public constructors of a [`SharedObject`], each an inherent
/// method with its documentation, so that callers need no trait:
/// `create`, `open` and `create_or_open`, and with `anonymous: NAME` the
/// anonymous constructor `NAME` taking the same arguments as `create`.
///
/// `args(..) => expr` are the creating constructors' parameters (after the
/// name) and the [`SharedObject::Args`] made of them. The documentation is
/// written from `noun` and three phrases that may be empty: `made` says
/// what a new object holds (" holding `value` permits"), `errors` lists
/// the type's own errors for bad arguments (ending with a space), and
/// `kept` what an existing one keeps when `create_or_open` finds it.
macro_rules! shared_constructors {
    (
        impl [$($generics:tt)*] $ty:ty as $noun:literal {
            args($($arg:ident: $arg_ty:ty),*) => $args:expr,
            made: $made:literal,
            errors: $errors:literal,
            kept: $kept:literal,
            anonymous: $anonymous:ident,
        }
    ) => {
        impl<$($generics)*> $ty {
            #[doc = concat!(
                "A new anonymous ", $noun, $made,
                ", shared with the children this process forks afterwards."
            )]
            ///
            /// # Errors
            #[doc = concat!(
                $errors,
                "[`Error::NoSpace`](crate::Error::NoSpace) or an I/O error if shared ",
                "memory cannot be had."
            )]
            pub fn $anonymous($($arg: $arg_ty),*) -> $crate::Result<Self> {
                $crate::segment::place($crate::segment::Placement::Anonymous($args))
            }
        }

        $crate::segment::shared_constructors! {
            impl [$($generics)*] $ty as $noun {
                args($($arg: $arg_ty),*) => $args,
                made: $made,
                errors: $errors,
                kept: $kept,
            }
        }
    };
    (
        impl [$($generics:tt)*] $ty:ty as $noun:literal {
            args($($arg:ident: $arg_ty:ty),*) => $args:expr,
            made: $made:literal,
            errors: $errors:literal,
            kept: $kept:literal,
        }
    ) => {
        impl<$($generics)*> $ty {
            #[doc = concat!(
                "Creates a named ", $noun, $made,
                ", which unrelated processes can [`open`](Self::open)."
            )]
            ///
            /// # Errors
            #[doc = concat!(
                $errors,
                "[`Error::AlreadyExists`](crate::Error::AlreadyExists) if the name is ",
                "taken; [`Error::InvalidName`](crate::Error::InvalidName); ",
                "[`Error::NoSpace`](crate::Error::NoSpace) if shared memory is short."
            )]
            pub fn create(name: &str, $($arg: $arg_ty),*) -> $crate::Result<Self> {
                $crate::segment::place($crate::segment::Placement::Create(name, $args))
            }

            #[doc = concat!("Opens a named ", $noun, ".")]
            ///
            /// # Errors
            /// [`Error::NotFound`](crate::Error::NotFound) if there is no such
            /// name; [`Error::KindMismatch`](crate::Error::KindMismatch) or
            /// [`Error::TypeMismatch`](crate::Error::TypeMismatch) if it holds
            /// another kind of object or another element type;
            /// [`Error::Corrupt`](crate::Error::Corrupt) or another header error
            /// if it is damaged.
            pub fn open(name: &str) -> $crate::Result<Self> {
                $crate::segment::place($crate::segment::Placement::Open(name))
            }

            #[doc = concat!(
                "Opens a named ", $noun, ", creating it", $made,
                " if it does not exist.", $kept
            )]
            ///
            /// # Errors
            /// As for [`create`](Self::create) and [`open`](Self::open).
            pub fn create_or_open(name: &str, $($arg: $arg_ty),*) -> $crate::Result<Self> {
                $crate::segment::place($crate::segment::Placement::CreateOrOpen(name, $args))
            }
        }
    };
}

pub(crate) use shared_constructors;

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;

    /// `len` counters, the first set to the creator's value.
    struct Counters {
        region: Region,
        len: u64,
    }

    impl SharedObject for Counters {
        type Args<'a> = (u64, u64);
        const KIND: ObjectKind = ObjectKind::RawArray;

        fn elem() -> ElemType {
            ElemType::of::<u64>()
        }

        fn len(&(len, _): &(u64, u64)) -> Result<u64> {
            if len == 0 {
                return Err(Error::InvalidArgument("no counters".into()));
            }
            Ok(len)
        }

        fn layout(len: u64) -> Result<Layout> {
            Layout::array::<u64>(len as usize).map_err(|_| Error::InvalidArgument("len".into()))
        }

        unsafe fn init(at: NonNull<u8>, (_, first): (u64, u64)) -> Result<()> {
            // SAFETY: fresh memory for at least one u64, per the caller.
            unsafe { at.cast::<u64>().write(first) };
            Ok(())
        }

        unsafe fn from_region(region: Region, len: u64) -> std::result::Result<Self, String> {
            if len == 0 {
                return Err("no counters".into());
            }
            Ok(Counters { region, len })
        }
    }

    impl Counters {
        fn first(&self) -> &AtomicU64 {
            // SAFETY: at least one u64 lives as long as `region`.
            unsafe { &*self.region.as_ptr::<AtomicU64>() }
        }
    }

    #[test]
    #[cfg_attr(miri, ignore = "shared memory is outside Miri")]
    fn every_placement_finds_the_same_object() {
        let name = format!("test-place-{}", std::process::id());
        let anon: Counters = place(Placement::Anonymous((3, 7))).unwrap();
        assert_eq!((anon.len, anon.first().load(Ordering::Relaxed)), (3, 7));
        let made: Counters = place(Placement::Create(&name, (4, 9))).unwrap();
        assert!(matches!(
            place::<Counters>(Placement::Create(&name, (4, 9))),
            Err(Error::AlreadyExists(_))
        ));
        made.first().store(11, Ordering::Relaxed);
        let opened: Counters = place(Placement::Open(&name)).unwrap();
        // The creator's length and contents, not the opener's arguments.
        let found: Counters = place(Placement::CreateOrOpen(&name, (1, 0))).unwrap();
        for c in [&opened, &found] {
            assert_eq!((c.len, c.first().load(Ordering::Relaxed)), (4, 11));
        }
        assert!(matches!(
            place::<Counters>(Placement::Anonymous((0, 0))),
            Err(Error::InvalidArgument(_))
        ));
        Segment::unlink(&name).unwrap();
    }

    /// The length in a header is the creator's word, checked against the
    /// data area before any handle is built on it.
    #[test]
    #[cfg_attr(miri, ignore = "shared memory is outside Miri")]
    fn a_header_length_beyond_the_data_is_refused() {
        use std::io::{Seek, SeekFrom, Write};
        let name = format!("test-place-len-{}", std::process::id());
        let _made: Counters = place(Placement::Create(&name, (4, 0))).unwrap();
        let path = crate::sys::shm_dir().join(format!("{}{name}", super::super::PREFIX));
        let mut file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
        let len_at = std::mem::offset_of!(super::super::header::Header, len);
        file.seek(SeekFrom::Start(len_at as u64)).unwrap();
        file.write_all(&1000u64.to_ne_bytes()).unwrap();
        let e = place::<Counters>(Placement::Open(&name)).err().unwrap();
        assert!(matches!(e, Error::Corrupt { .. }), "{e}");
        Segment::unlink(&name).unwrap();
    }
}
