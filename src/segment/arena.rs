//! The arena that anonymous objects are carved from, and [`Region`], the
//! handle every shared object holds on its bytes.
//!
//! Like Python's `multiprocessing.heap`, small objects share large anonymous
//! segments instead of each getting a mapping of its own. The bookkeeping is
//! process-local, and two rules keep processes from ever handing out the
//! same bytes twice:
//! - a forked child starts a fresh arena of its own: its fork handler drops
//!   the copy of its parent's (a child made without the handlers, by a raw
//!   `clone`, finds that the copy was set up by another pid);
//! - a block that was alive when the process forked may still be used by the
//!   child, so when it is freed it is not reused (its memory returns to the
//!   system with its whole chunk). A fork epoch, bumped by a `pthread_atfork`
//!   handler, tells such blocks apart.
//!
//! The arena's lock is held across every fork (by the same handlers), so the
//! child's copy is owned by the forking thread. It is a `std` mutex: a pure
//! futex word that the child can release, unlike `parking_lot`'s, whose
//! global parking table may still list parent threads that do not exist in
//! the child.

use std::alloc::Layout;
use std::collections::HashMap;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use super::header::Contents;
use super::{ElemType, ObjectKind, Segment};
use crate::error::Result;
use crate::poison;
use crate::sys;

/// Size of one arena chunk.
const CHUNK_SIZE: usize = 1 << 20;
/// Requests larger than this get a segment of their own.
const LARGE: usize = CHUNK_SIZE / 4;
/// Every block is a multiple of this, and at least this aligned, so that two
/// objects never share a cache line and a hot counter in one process never
/// slows down an unrelated object in another (false sharing). 128 rather
/// than 64 bytes because x86's spatial prefetcher fetches lines in pairs
/// (crossbeam's `CachePadded` makes the same choice).
const GRAIN: usize = 128;

static ARENA: Mutex<Option<Arena>> = Mutex::new(None);

/// The arena guard held across a fork by the forking thread.
static HELD_FOR_FORK: sys::HeldAcrossFork<MutexGuard<'static, Option<Arena>>> =
    sys::HeldAcrossFork::new();

/// Locks the arena. Nothing panics while holding it, so poison is ignored.
fn arena() -> MutexGuard<'static, Option<Arena>> {
    poison::locked(&ARENA)
}
static FORK_EPOCH: AtomicU64 = AtomicU64::new(0);

/// Freed blocks of one size: their chunk and offset.
type FreeBlocks = Vec<(Arc<Segment>, usize)>;

struct Arena {
    pid: u32,
    /// The chunk being carved, and the offset of its first free byte.
    current: Option<(Arc<Segment>, usize)>,
    /// Freed blocks by (size, align), ready for reuse.
    free: HashMap<(usize, usize), FreeBlocks>,
}

/// A block of an arena chunk, owned by one object.
struct Block {
    chunk: Arc<Segment>,
    offset: usize,
    key: (usize, usize),
    pid: u32,
    epoch: u64,
}

impl Drop for Block {
    fn drop(&mut self) {
        let mut arena = arena();
        let Some(arena) = arena.as_mut() else { return };
        if arena.pid == self.pid
            && self.pid == sys::cached_pid()
            && self.epoch == FORK_EPOCH.load(Ordering::Relaxed)
        {
            arena
                .free
                .entry(self.key)
                .or_default()
                .push((self.chunk.clone(), self.offset));
        }
    }
}

/// What keeps a region's memory alive; only its `Drop` matters.
enum Backing {
    Block { _block: Block },
    Segment { segment: Segment },
}

/// Shared memory owned by one object: a block of the arena, or a segment of
/// its own. Cloning it (and [`sub`](Region::sub)) shares the memory, which
/// is released when the last clone is dropped.
#[derive(Clone)]
pub(crate) struct Region {
    _owner: Arc<Backing>,
    ptr: NonNull<u8>,
}

// SAFETY: a Region is a pointer into a mapping kept alive by `_owner`; the
// bytes behind it are shared memory that every user reaches only through
// process-shared locks, atomics or raw pointer accesses, never through `&mut`
// references that could alias across threads.
unsafe impl Send for Region {}
// SAFETY: as above.
unsafe impl Sync for Region {}

impl Region {
    /// Allocates `layout` (zeroed) from the arena, or as its own anonymous
    /// segment if it is large.
    pub(crate) fn anonymous(layout: Layout) -> Result<Region> {
        if layout.size() > LARGE || layout.align() > GRAIN {
            return Self::own_segment(layout);
        }
        // Without the fork handlers, blocks alive at a fork could be handed
        // out twice: refuse rather than risk it.
        crate::fork_handlers::ready()?;
        let size = layout.size().max(1).next_multiple_of(GRAIN);
        let key = (size, GRAIN);
        let pid = sys::cached_pid();
        let mut guard = arena();
        let arena = match guard.as_mut() {
            Some(a) if a.pid == pid => a,
            _ => guard.insert(Arena {
                pid,
                current: None,
                free: HashMap::new(),
            }),
        };
        let (chunk, offset, reused) = match arena.free.get_mut(&key).and_then(Vec::pop) {
            Some((chunk, offset)) => (chunk, offset, true),
            None => {
                let fits = matches!(&arena.current, Some((c, next)) if next + size <= c.len());
                if !fits {
                    let contents = Contents {
                        kind: ObjectKind::Arena,
                        elem: ElemType::none(),
                        len: 0,
                        data_size: CHUNK_SIZE,
                    };
                    arena.current = Some((
                        Arc::new(Segment::create_anonymous(&contents, |_| Ok(()))?),
                        0,
                    ));
                }
                let (chunk, next) = arena.current.as_mut().expect("set above");
                let offset = *next;
                *next += size;
                (chunk.clone(), offset, false)
            }
        };
        let epoch = FORK_EPOCH.load(Ordering::Relaxed);
        drop(guard);
        // SAFETY: `offset + size <= chunk.len()`, so the pointer is in bounds.
        let ptr = unsafe { chunk.as_ptr().add(offset) };
        if reused {
            // SAFETY: the block is ours alone now and `size` bytes long.
            unsafe { ptr.write_bytes(0, size) };
        }
        Ok(Region {
            ptr: NonNull::new(ptr).expect("mapping is non-null"),
            _owner: Arc::new(Backing::Block {
                _block: Block {
                    chunk,
                    offset,
                    key,
                    pid,
                    epoch,
                },
            }),
        })
    }

    fn own_segment(layout: Layout) -> Result<Region> {
        // The data area is 256-aligned; pad for anything stricter.
        let pad = layout.align().saturating_sub(256);
        let contents = Contents {
            kind: ObjectKind::Arena,
            elem: ElemType::none(),
            len: 0,
            data_size: layout.size() + pad,
        };
        let seg = Segment::create_anonymous(&contents, |_| Ok(()))?;
        let base = seg.as_ptr();
        // SAFETY: `base + align_offset <= base + pad`, inside the data area.
        let ptr = unsafe { base.add(base.align_offset(layout.align())) };
        Ok(Self::from_segment_at(seg, ptr))
    }

    /// The data area of a segment of its own (named objects).
    pub(crate) fn from_segment(seg: Segment) -> Region {
        let ptr = seg.as_ptr();
        Self::from_segment_at(seg, ptr)
    }

    fn from_segment_at(seg: Segment, ptr: *mut u8) -> Region {
        Region {
            ptr: NonNull::new(ptr).expect("mapping is non-null"),
            _owner: Arc::new(Backing::Segment { segment: seg }),
        }
    }

    /// The same memory from `offset` bytes in.
    ///
    /// # Safety
    /// `offset` must be within the memory this region was created for.
    pub(crate) unsafe fn sub(&self, offset: usize) -> Region {
        Region {
            _owner: self._owner.clone(),
            // SAFETY: in bounds per the caller.
            ptr: unsafe { self.ptr.add(offset) },
        }
    }

    /// The first byte.
    #[inline]
    pub(crate) fn start(&self) -> NonNull<u8> {
        self.ptr
    }

    #[inline]
    pub(crate) fn as_ptr<T>(&self) -> *mut T {
        self.ptr.as_ptr().cast()
    }

    /// For memory in a named segment: the segment's file name in
    /// `/dev/shm` and this region's byte offset in that file.
    pub(crate) fn file_position(&self) -> Option<(String, usize)> {
        match &*self._owner {
            Backing::Segment { segment } => {
                let name = segment.name()?;
                let from_data = self.ptr.as_ptr() as usize - segment.as_ptr() as usize;
                Some((
                    format!("{}{name}", super::PREFIX),
                    super::DATA_OFFSET + from_data,
                ))
            }
            Backing::Block { .. } => None,
        }
    }
}

// The arena's part of the crate's fork handlers (registered by
// `crate::fork_handlers`, which runs them after the process registries'
// `prepare` and before their `parent` and `child` handlers).

/// Before a fork: holding the arena lock across it means no allocation can
/// straddle it, and the child's copy is held by the forking thread.
pub(crate) fn prepare_fork() {
    let guard = arena();
    FORK_EPOCH.fetch_add(1, Ordering::Relaxed);
    // SAFETY: this thread holds the arena lock, just taken.
    unsafe { HELD_FOR_FORK.put(guard) };
}

/// After a fork, in the parent.
pub(crate) fn after_fork() {
    // SAFETY: a handler of the fork whose `prepare_fork` put it.
    drop(unsafe { HELD_FOR_FORK.take() });
}

/// After a fork, in the child (whose copy of the lock is this thread's):
/// the child starts an arena of its own. Its pid alone would not tell it
/// that the copy is not its own: a descendant may get the pid of the
/// process that made it once that one has died, and would hand out again
/// the blocks that process handed out after the fork.
pub(crate) fn after_fork_in_child() {
    // SAFETY: a handler of the fork whose `prepare_fork` put it.
    if let Some(mut arena) = unsafe { HELD_FOR_FORK.take() } {
        *arena = None;
    }
}
