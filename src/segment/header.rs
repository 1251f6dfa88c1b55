//! The header at the start of every segment, and its validation.

use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::error::{Error, Result};
use crate::sys;

/// `b"MPROCSEG"` read as a little-endian integer.
pub(crate) const MAGIC: u64 = u64::from_le_bytes(*b"MPROCSEG");
/// Bumped whenever the layout of the header or of any object state changes.
pub(crate) const LAYOUT_VERSION: u32 = 6;
/// Where the data area starts: the header rounded up to a cache line.
pub(crate) const DATA_OFFSET: usize = 256;
/// How many opener pids a segment records.
pub(crate) const ATTACH_SLOTS: usize = 16;

const STATE_CREATING: u32 = 0;
const STATE_READY: u32 = 1;
const TYPE_NAME_LEN: usize = 64;
/// Alignments above a page make no sense for shared state.
const MAX_ALIGN: u32 = 4096;

/// Declares [`ObjectKind`] and its conversion from the header's `u32`,
/// both from one list, so that a new kind is one line here.
macro_rules! object_kinds {
    ($($(#[$doc:meta])* $kind:ident = $value:literal,)*) => {
        /// What a segment holds.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        #[repr(u32)]
        pub enum ObjectKind {
            $($(#[$doc])* $kind = $value,)*
        }

        impl ObjectKind {
            fn from_u32(v: u32) -> Option<Self> {
                match v {
                    $($value => Some(ObjectKind::$kind),)*
                    _ => None,
                }
            }
        }
    };
}

// The numbers are written in segment headers: never reuse or change one.
object_kinds! {
    /// Raw bytes ([`Segment`](crate::segment::Segment)).
    Bytes = 1,
    /// An arena holding many anonymous objects.
    Arena = 2,
    /// A [`Lock`](crate::sync::Lock).
    Lock = 3,
    /// An [`RLock`](crate::sync::RLock).
    RLock = 4,
    /// A [`Value`](crate::cell::Value).
    Value = 5,
    /// An [`Array`](crate::cell::Array).
    Array = 6,
    /// A [`RawValue`](crate::cell::RawValue).
    RawValue = 7,
    /// A [`RawArray`](crate::cell::RawArray).
    RawArray = 8,
    /// An [`Event`](crate::sync::Event).
    Event = 9,
    /// A [`Semaphore`](crate::sync::Semaphore).
    Semaphore = 10,
    /// A [`BoundedSemaphore`](crate::sync::BoundedSemaphore).
    BoundedSemaphore = 11,
    /// A [`Condition`](crate::sync::Condition).
    Condition = 12,
    /// A [`Barrier`](crate::sync::Barrier).
    Barrier = 13,
    /// A [`Queue`](crate::queue::Queue) or [`SimpleQueue`](crate::queue::SimpleQueue).
    Queue = 14,
    /// A [`JoinableQueue`](crate::queue::JoinableQueue).
    JoinableQueue = 15,
}

impl fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Describes an element type well enough to refuse a mismatched open.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ElemType {
    pub(crate) name: &'static str,
    pub(crate) size: u32,
    pub(crate) align: u32,
    /// FNV-1a of the full type name, size and alignment.
    pub(crate) tag: u64,
}

impl ElemType {
    pub(crate) fn of<T>() -> Self {
        let name = std::any::type_name::<T>();
        let size = std::mem::size_of::<T>() as u32;
        let align = std::mem::align_of::<T>() as u32;
        let mut tag: u64 = 0xcbf2_9ce4_8422_2325;
        for b in name
            .bytes()
            .chain(size.to_le_bytes())
            .chain(align.to_le_bytes())
        {
            tag = (tag ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
        ElemType {
            name,
            size,
            align,
            tag,
        }
    }

    /// The element type of objects that hold no elements (locks, raw bytes).
    pub(crate) fn none() -> Self {
        Self::of::<()>()
    }
}

/// The `#[repr(C)]` header at offset 0 of every segment.
///
/// Written once by the creator before the segment becomes visible; after
/// that only `state` and `attached` change, and only atomically.
#[repr(C)]
pub(crate) struct Header {
    magic: u64,
    version: u32,
    state: AtomicU32,
    total_size: u64,
    data_size: u64,
    pub(super) len: u64,
    elem_tag: u64,
    kind: u32,
    elem_size: u32,
    elem_align: u32,
    creator_pid: u32,
    elem_name: [u8; TYPE_NAME_LEN],
    /// Pids of processes that opened the segment by name (0 = free slot).
    pub(crate) attached: [AtomicU32; ATTACH_SLOTS],
    /// Processes that opened it by name while every slot was taken, not
    /// yet closed. One killed leaves it too high: the segment is then never
    /// called stale (its name must be unlinked by hand), never called dead
    /// while in use.
    pub(crate) unrecorded: AtomicU32,
}

const _: () = assert!(std::mem::size_of::<Header>() <= DATA_OFFSET);

/// What a segment holds, as its creator declares it in the header.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Contents {
    pub(crate) kind: ObjectKind,
    pub(crate) elem: ElemType,
    /// Number of elements for the cells (1 for a single value); the
    /// object's own measure for other kinds (barrier parties, queue bytes).
    pub(crate) len: u64,
    /// Size of the data area after the header.
    pub(crate) data_size: usize,
}

impl Contents {
    pub(crate) fn total_size(&self) -> usize {
        DATA_OFFSET + self.data_size
    }
}

impl Header {
    /// Writes a fresh header, state "creating".
    ///
    /// # Safety
    /// `at` must point to at least `DATA_OFFSET` writable bytes that no other
    /// process reads yet, aligned for `Header`.
    pub(crate) unsafe fn write(at: *mut Header, contents: &Contents) {
        let mut elem_name = [0u8; TYPE_NAME_LEN];
        let mut n = contents.elem.name.len().min(TYPE_NAME_LEN - 1);
        while !contents.elem.name.is_char_boundary(n) {
            n -= 1;
        }
        elem_name[..n].copy_from_slice(&contents.elem.name.as_bytes()[..n]);
        let header = Header {
            magic: MAGIC,
            version: LAYOUT_VERSION,
            state: AtomicU32::new(STATE_CREATING),
            total_size: contents.total_size() as u64,
            data_size: contents.data_size as u64,
            len: contents.len,
            elem_tag: contents.elem.tag,
            kind: contents.kind as u32,
            elem_size: contents.elem.size,
            elem_align: contents.elem.align,
            creator_pid: sys::getpid(),
            elem_name,
            attached: Default::default(),
            unrecorded: AtomicU32::new(0),
        };
        // SAFETY: valid, aligned and unshared per the caller.
        unsafe { at.write(header) };
    }

    /// Publishes the segment: everything written before is visible to any
    /// process that sees the state "ready".
    pub(crate) fn mark_ready(&self) {
        self.state.store(STATE_READY, Ordering::Release);
    }

    /// The header's bytes, as [`SegmentInfo::parse_header`] reads them.
    /// The pids of `attached` change while other processes open and close
    /// the segment: they are loaded atomically, never copied as bytes (a
    /// plain copy racing with an attach would be a data race).
    pub(crate) fn to_bytes(&self) -> [u8; DATA_OFFSET] {
        let mut bytes = [0u8; DATA_OFFSET];
        let att = std::mem::offset_of!(Header, attached);
        // SAFETY: the fields before `attached` have no padding between them
        // (checked below) and do not change after publication (`state`
        // last changed when it was published, before `self` was reachable).
        unsafe {
            std::ptr::copy_nonoverlapping(
                std::ptr::from_ref(self).cast::<u8>(),
                bytes.as_mut_ptr(),
                att,
            )
        };
        for (i, pid) in self.attached.iter().enumerate() {
            let at = att + 4 * i;
            bytes[at..at + 4].copy_from_slice(&pid.load(Ordering::Relaxed).to_ne_bytes());
        }
        let at = std::mem::offset_of!(Header, unrecorded);
        bytes[at..at + 4].copy_from_slice(&self.unrecorded.load(Ordering::Relaxed).to_ne_bytes());
        bytes
    }
}

// `to_bytes` copies the fields before `attached` as bytes: no padding there.
const _: () = assert!(
    std::mem::offset_of!(Header, attached)
        == std::mem::offset_of!(Header, elem_name) + TYPE_NAME_LEN
        && std::mem::offset_of!(Header, elem_name) == 64
);

/// What a segment's header says, checked for internal consistency.
#[derive(Clone, Debug)]
pub struct SegmentInfo {
    /// What the segment holds.
    pub kind: ObjectKind,
    /// The element type's name as the creator's compiler spelled it.
    pub elem_name: String,
    /// Element size in bytes.
    pub elem_size: u32,
    /// Element alignment.
    pub elem_align: u32,
    /// Number of elements for the cells; parties for a barrier, ring bytes
    /// for a queue.
    pub len: u64,
    /// Total size of the segment in bytes, header included.
    pub total_size: u64,
    /// Size of the data area.
    pub data_size: u64,
    /// Pid of the process that created it.
    pub creator_pid: u32,
    /// Pids of processes that opened it by name and have not closed it.
    pub attached_pids: Vec<u32>,
    /// How many more processes opened it by name, past the slots that
    /// record pids, and have not closed it (or were killed).
    pub unrecorded_openers: u32,
    pub(crate) elem_tag: u64,
}

impl SegmentInfo {
    /// Reads and checks the header at the start of `bytes`, the whole
    /// content of a segment called `name` (used in error messages).
    ///
    /// # Errors
    /// [`Error::Truncated`], [`Error::Corrupt`], [`Error::VersionMismatch`] or
    /// [`Error::NotInitialised`], each naming what is wrong.
    pub fn parse(name: &str, bytes: &[u8]) -> Result<SegmentInfo> {
        Self::parse_header(
            name,
            &bytes[..bytes.len().min(DATA_OFFSET)],
            bytes.len() as u64,
        )
    }

    /// Like [`parse`](Self::parse), from the first bytes of a segment and its size.
    pub(crate) fn parse_header(name: &str, bytes: &[u8], size: u64) -> Result<SegmentInfo> {
        if bytes.len() < std::mem::size_of::<Header>() {
            return Err(Error::Truncated {
                name: name.into(),
                size,
                needed: DATA_OFFSET as u64,
            });
        }
        let u32_at = |off: usize| u32::from_ne_bytes(bytes[off..off + 4].try_into().unwrap());
        let u64_at = |off: usize| u64::from_ne_bytes(bytes[off..off + 8].try_into().unwrap());
        let corrupt = |what: String| Error::Corrupt {
            name: name.into(),
            what,
        };
        if u64_at(std::mem::offset_of!(Header, magic)) != MAGIC {
            return Err(corrupt("bad magic number".into()));
        }
        let version = u32_at(std::mem::offset_of!(Header, version));
        if version != LAYOUT_VERSION {
            return Err(Error::VersionMismatch {
                name: name.into(),
                found: version,
                expected: LAYOUT_VERSION,
            });
        }
        let creator_pid = u32_at(std::mem::offset_of!(Header, creator_pid));
        let state = u32_at(std::mem::offset_of!(Header, state));
        if state != STATE_READY {
            if state != STATE_CREATING {
                return Err(corrupt(format!("unknown init state {state}")));
            }
            return Err(Error::NotInitialised {
                name: name.into(),
                creator_pid,
                creator_alive: sys::pid_alive(creator_pid),
            });
        }
        let total_size = u64_at(std::mem::offset_of!(Header, total_size));
        let data_size = u64_at(std::mem::offset_of!(Header, data_size));
        if total_size > size {
            return Err(Error::Truncated {
                name: name.into(),
                size,
                needed: total_size,
            });
        }
        if total_size < size {
            return Err(corrupt(format!(
                "header says {total_size} bytes, segment has {size}"
            )));
        }
        if data_size.checked_add(DATA_OFFSET as u64) != Some(total_size) {
            return Err(corrupt(format!(
                "data size {data_size} does not fit total size {total_size}"
            )));
        }
        let kind_raw = u32_at(std::mem::offset_of!(Header, kind));
        let kind = ObjectKind::from_u32(kind_raw)
            .ok_or_else(|| corrupt(format!("unknown object kind {kind_raw}")))?;
        let elem_size = u32_at(std::mem::offset_of!(Header, elem_size));
        let elem_align = u32_at(std::mem::offset_of!(Header, elem_align));
        if !elem_align.is_power_of_two() || elem_align > MAX_ALIGN {
            return Err(corrupt(format!("element alignment {elem_align}")));
        }
        // What `len` measures is the object's own business: its opener
        // checks that an object of that length fits the data area.
        let len = u64_at(std::mem::offset_of!(Header, len));
        let name_off = std::mem::offset_of!(Header, elem_name);
        let raw_name = &bytes[name_off..name_off + TYPE_NAME_LEN];
        let end = raw_name
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(TYPE_NAME_LEN);
        let elem_name = std::str::from_utf8(&raw_name[..end])
            .map_err(|_| corrupt("element type name is not UTF-8".into()))?
            .to_owned();
        let att = std::mem::offset_of!(Header, attached);
        let attached_pids = (0..ATTACH_SLOTS)
            .map(|i| u32_at(att + 4 * i))
            .filter(|&p| p != 0)
            .collect();
        let unrecorded_openers = u32_at(std::mem::offset_of!(Header, unrecorded));
        Ok(SegmentInfo {
            unrecorded_openers,
            kind,
            elem_name,
            elem_size,
            elem_align,
            len,
            total_size,
            data_size,
            creator_pid,
            attached_pids,
            elem_tag: u64_at(std::mem::offset_of!(Header, elem_tag)),
        })
    }

    /// Checks that the segment holds what the opener expects.
    pub(crate) fn expect(&self, name: &str, kind: ObjectKind, elem: &ElemType) -> Result<()> {
        if self.kind != kind {
            return Err(Error::KindMismatch {
                name: name.into(),
                found: self.kind,
                expected: kind,
            });
        }
        if self.elem_tag != elem.tag || self.elem_size != elem.size || self.elem_align != elem.align
        {
            return Err(Error::TypeMismatch {
                name: name.into(),
                found: self.elem_name.clone(),
                found_size: self.elem_size,
                found_align: self.elem_align,
                expected: elem.name.into(),
                expected_size: elem.size,
                expected_align: elem.align,
            });
        }
        Ok(())
    }

    /// Whether any process that created or opened the segment still
    /// exists (or may: one opened it past the recorded ones).
    pub fn in_use(&self) -> bool {
        self.unrecorded_openers > 0
            || std::iter::once(&self.creator_pid)
                .chain(&self.attached_pids)
                .any(|&p| sys::pid_alive(p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header_bytes(contents: &Contents) -> Vec<u8> {
        let mut buf = vec![0u64; contents.total_size().div_ceil(8)];
        let p = buf.as_mut_ptr() as *mut Header;
        // SAFETY: `buf` is large enough for the header, 8-aligned and private.
        unsafe { Header::write(p, contents) };
        // SAFETY: `p` now points at the header just written, which nothing
        // else references.
        unsafe { (*p).mark_ready() };
        let bytes: &[u8] = bytemuck::cast_slice(&buf);
        bytes[..contents.total_size()].to_vec()
    }

    fn contents() -> Contents {
        Contents {
            kind: ObjectKind::Array,
            elem: ElemType::of::<i32>(),
            len: 10,
            data_size: 64,
        }
    }

    #[test]
    fn kinds_read_back_as_written() {
        let kinds: Vec<_> = (0..64).filter_map(ObjectKind::from_u32).collect();
        assert_eq!(kinds.len(), 15);
        assert!(kinds
            .iter()
            .all(|&k| ObjectKind::from_u32(k as u32) == Some(k)));
        assert_eq!(
            ObjectKind::from_u32(ObjectKind::JoinableQueue as u32).unwrap(),
            ObjectKind::JoinableQueue
        );
    }

    #[test]
    fn round_trip() {
        let info = SegmentInfo::parse("t", &header_bytes(&contents())).unwrap();
        assert_eq!(info.kind, ObjectKind::Array);
        assert_eq!(info.elem_name, "i32");
        assert_eq!(info.len, 10);
        assert_eq!(info.creator_pid, std::process::id());
        info.expect("t", ObjectKind::Array, &ElemType::of::<i32>())
            .unwrap();
    }

    #[test]
    fn mismatches_are_named() {
        let info = SegmentInfo::parse("t", &header_bytes(&contents())).unwrap();
        let e = info
            .expect("t", ObjectKind::Array, &ElemType::of::<f64>())
            .unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("i32") && msg.contains("f64"), "{msg}");
        let e = info
            .expect("t", ObjectKind::Lock, &ElemType::of::<i32>())
            .unwrap_err();
        assert!(matches!(e, Error::KindMismatch { .. }), "{e}");
        // Same size and alignment, different type: still refused.
        let e = info
            .expect("t", ObjectKind::Array, &ElemType::of::<u32>())
            .unwrap_err();
        assert!(matches!(e, Error::TypeMismatch { .. }), "{e}");
    }

    #[test]
    #[cfg_attr(miri, ignore = "asks the kernel whether the creator lives")]
    fn damage_is_reported() {
        let good = header_bytes(&contents());
        let e = SegmentInfo::parse("t", &good[..100]).unwrap_err();
        assert!(matches!(e, Error::Truncated { .. }), "{e}");
        let e = SegmentInfo::parse("t", &good[..good.len() - 1]).unwrap_err();
        assert!(matches!(e, Error::Truncated { .. }), "{e}");
        let mut bad = good.clone();
        bad[0] ^= 1;
        assert!(matches!(
            SegmentInfo::parse("t", &bad),
            Err(Error::Corrupt { .. })
        ));
        let mut bad = good.clone();
        bad[std::mem::offset_of!(Header, version)] = 9;
        assert!(matches!(
            SegmentInfo::parse("t", &bad),
            Err(Error::VersionMismatch { .. })
        ));
        let mut bad = good.clone();
        bad[std::mem::offset_of!(Header, state)] = STATE_CREATING as u8;
        assert!(matches!(
            SegmentInfo::parse("t", &bad),
            Err(Error::NotInitialised { .. })
        ));
        let mut bad = good.clone();
        bad[std::mem::offset_of!(Header, data_size)] = 200;
        assert!(matches!(
            SegmentInfo::parse("t", &bad),
            Err(Error::Corrupt { .. })
        ));
        let mut bad = good;
        bad[std::mem::offset_of!(Header, kind)] = 200;
        assert!(matches!(
            SegmentInfo::parse("t", &bad),
            Err(Error::Corrupt { .. })
        ));
    }

    /// A header read while another thread records openers in it: the pids
    /// are loaded atomically, so this is no data race (Miri checks), and
    /// every snapshot parses.
    #[test]
    fn reading_a_header_while_openers_attach_is_race_free() {
        let contents = contents();
        let mut buf = vec![0u64; contents.total_size().div_ceil(8)];
        let p = buf.as_mut_ptr().cast::<Header>();
        // SAFETY: `buf` is large enough, 8-aligned and private.
        unsafe { Header::write(p, &contents) };
        // SAFETY: initialised just above; shared below only through `&`.
        let header = unsafe { &*p };
        header.mark_ready();
        let rounds = if cfg!(miri) { 50 } else { 10_000 };
        std::thread::scope(|s| {
            s.spawn(|| {
                for i in 0..rounds {
                    header.attached[i % ATTACH_SLOTS].store(i as u32 + 1, Ordering::Relaxed);
                }
            });
            for _ in 0..rounds {
                let info = SegmentInfo::parse_header(
                    "t",
                    &header.to_bytes(),
                    contents.total_size() as u64,
                );
                assert_eq!(info.unwrap().len, 10);
            }
        });
    }
}
