//! Shared-memory segments: anonymous ones inherited by forked children, and
//! named ones that unrelated processes open.
//!
//! Every segment starts with a [header](SegmentInfo) that says what it holds,
//! so that opening a segment as the wrong type is an error and not garbage.
//! Named segments are files `multiproc.NAME` in `/dev/shm`. They are built
//! under a temporary name and linked into place only once fully initialised,
//! so an opener sees either nothing or a complete segment, even when the
//! creator dies half-way.

mod arena;
mod header;
mod place;
mod registry;

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use memmap2::{MmapOptions, MmapRaw};

use crate::error::{Error, Result};
use crate::{poison, sys};

pub(crate) use arena::Region;
pub(crate) use header::ElemType;
pub use header::{ObjectKind, SegmentInfo};
pub(crate) use place::{place, shared_constructors, Placement, SharedObject};
pub use registry::{clean, list, ListedSegment};

use header::{Contents, Header, ATTACH_SLOTS, DATA_OFFSET};

/// File-name prefix of every named segment of this crate in `/dev/shm`.
pub const PREFIX: &str = "multiproc.";
/// Prefix (after [`PREFIX`]) of segments still being built.
const TMP_TAG: &str = "~tmp-";
const MAX_NAME_LEN: usize = 200;

/// A mapped shared-memory segment.
///
/// As a public type it is a block of raw shared bytes, like Python's
/// `multiprocessing.shared_memory.SharedMemory`: reach them through
/// [`as_ptr`](Segment::as_ptr), atomics or your own synchronisation, never
/// through a long-lived `&[u8]` (another process may write them at any time).
/// The typed objects of this crate ([`Value`](crate::cell::Value),
/// [`Lock`](crate::sync::Lock), …) are built on it.
///
/// A named segment outlives every process that maps it until it is
/// [unlinked](Segment::unlink); an anonymous one lives while any process
/// maps it.
pub struct Segment {
    map: MmapRaw,
    name: Option<String>,
    /// Its entry in this process's list of named segments ([`NAMED`]).
    named: Option<u64>,
}

/// A named segment that this process maps, and where this process is
/// recorded in its header.
struct Named {
    id: u64,
    /// The address of its header, mapped while the entry is listed (the
    /// segment takes it out before it unmaps).
    header: usize,
    /// Where, and the pid then: a forked child's copy of the list says
    /// where its parent is recorded, until the child records itself.
    recorded: Option<(Attached, u32)>,
}

/// The named segments this process maps, so that a forked child, which
/// maps them too, records itself in their headers: a child that goes on
/// using one after its parent ended (killed: its exit hook would wait
/// for the child) keeps it from being called stale. Held across every
/// fork, as the arena is.
static NAMED: Mutex<Vec<Named>> = Mutex::new(Vec::new());

static HELD_NAMED: sys::HeldAcrossFork<MutexGuard<'static, Vec<Named>>> =
    sys::HeldAcrossFork::new();

/// The crate's `prepare` handler's part for segments: the arena, then
/// the list of named segments.
pub(crate) fn prepare_fork() {
    arena::prepare_fork();
    let named = poison::locked(&NAMED);
    // SAFETY: this thread holds the list's lock, just taken.
    unsafe { HELD_NAMED.put(named) };
}

/// The `parent` handler's part for segments.
pub(crate) fn after_fork() {
    // SAFETY: a handler of the fork whose `prepare_fork` put it.
    drop(unsafe { HELD_NAMED.take() });
    arena::after_fork();
}

/// Whether the byte at `at`, in a mapping of this process, can be read: a
/// named segment's file shrunk under its mappings (any process of the
/// user may do that to a file in `/dev/shm`) has no page behind its
/// header, and touching it is a `SIGBUS`. The kernel reads it here, and
/// says `EFAULT` instead (or `EPERM`, where a sandbox forbids the call:
/// then the header is left alone too).
fn readable(at: usize) -> bool {
    let mut byte = 0u8;
    let local = libc::iovec {
        iov_base: std::ptr::from_mut(&mut byte).cast(),
        iov_len: 1,
    };
    let remote = libc::iovec {
        iov_base: at as *mut libc::c_void,
        iov_len: 1,
    };
    let me = sys::getpid() as libc::pid_t;
    // SAFETY: reads one byte of this process's memory into `byte`; a bad
    // address is an error, not a fault.
    unsafe { libc::process_vm_readv(me, &local, 1, &remote, 1, 0) == 1 }
}

/// The `child` handler's part: records the child in a free slot of each
/// named segment it inherited, or in one whose process has ended, or else
/// counts it past the slots, as [`Segment::attach`] does for an opener.
pub(crate) fn after_fork_in_child() {
    // SAFETY: a handler of the fork whose `prepare_fork` put it.
    if let Some(mut named) = unsafe { HELD_NAMED.take() } {
        let me = sys::getpid();
        for entry in named.iter_mut() {
            entry.recorded = None;
            if !readable(entry.header) {
                continue;
            }
            // SAFETY: listed, so mapped (inherited with the parent's
            // mappings), and its page is there; a header starts every
            // segment.
            let header = unsafe { &*(entry.header as *const Header) };
            let take = |i: usize, cur: u32| {
                header.attached[i]
                    .compare_exchange(cur, me, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
            };
            // A free slot; else one whose process has surely ended (a
            // plain `kill`, which reads no file and allocates nothing).
            let slot = (0..ATTACH_SLOTS).find(|&i| take(i, 0)).or_else(|| {
                (0..ATTACH_SLOTS).find(|&i| {
                    let cur = header.attached[i].load(Ordering::Relaxed);
                    let ended =
                        sys::kill(cur, 0).is_err_and(|e| e.raw_os_error() == Some(libc::ESRCH));
                    cur != 0 && ended && take(i, cur)
                })
            });
            entry.recorded = Some(match slot {
                Some(i) => (Attached::Slot(i), me),
                // Counted past the slots, as an opener is (see `attach`):
                // else, once its parent let go and the recorded users
                // ended, the segment would look stale while it uses it.
                None => {
                    header.unrecorded.fetch_add(1, Ordering::AcqRel);
                    (Attached::Unrecorded, me)
                }
            });
        }
    }
    arena::after_fork_in_child();
}

/// Where an opener is recorded in a segment's header.
#[derive(Clone, Copy, Debug)]
enum Attached {
    /// In this slot of pids.
    Slot(usize),
    /// Counted among the openers past the slots.
    Unrecorded,
}

impl std::fmt::Debug for Segment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Segment")
            .field("name", &self.name)
            .field("len", &self.len())
            .finish()
    }
}

/// [`Error::NoSpace`] when `e` says memory ran out (a full filesystem, a
/// file too large, or no memory or address space left: `ENOMEM`, as from
/// an `mmap` under `RLIMIT_AS`); else an I/O error of `op`.
fn no_space_or(size: usize, op: &str, e: io::Error) -> Error {
    match e.raw_os_error() {
        Some(sys::errno::ENOSPC | sys::errno::EFBIG | sys::errno::ENOMEM) => {
            Error::NoSpace { size, source: e }
        }
        _ => Error::io(op, e),
    }
}

impl Segment {
    /// Creates an anonymous segment of `size` bytes (zeroed), shared with
    /// the children this process forks afterwards.
    ///
    /// # Errors
    /// [`Error::NoSpace`] when the memory cannot be reserved or mapped.
    pub fn anonymous(size: usize) -> Result<Segment> {
        Self::create_anonymous(&bytes_contents(size)?, |_| Ok(()))
    }

    /// Creates a named segment of `size` bytes (zeroed).
    ///
    /// # Errors
    /// [`Error::InvalidName`], [`Error::AlreadyExists`], [`Error::NoSpace`].
    ///
    /// # Example
    /// ```
    /// use multiproc::segment::Segment;
    /// let name = format!("doc-seg-{}", std::process::id());
    /// let seg = Segment::create(&name, 4096)?;
    /// let other = Segment::open(&name)?; // another process would do this
    /// // SAFETY: both mappings are live; nobody else writes the segment.
    /// unsafe { seg.as_ptr().write(42) };
    /// assert_eq!(unsafe { other.as_ptr().read() }, 42);
    /// Segment::unlink(&name)?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn create(name: &str, size: usize) -> Result<Segment> {
        Self::create_named(name, &bytes_contents(size)?, |_| Ok(()))
    }

    /// Opens the named segment made by [`create`](Segment::create).
    ///
    /// # Errors
    /// [`Error::NotFound`], or a header error if it is not a byte segment.
    pub fn open(name: &str) -> Result<Segment> {
        Self::open_named(name, ObjectKind::Bytes, &ElemType::none())
    }

    /// Opens the named segment, creating it with `size` bytes if it does not exist.
    ///
    /// # Errors
    /// As for [`create`](Segment::create) and [`open`](Segment::open).
    pub fn create_or_open(name: &str, size: usize) -> Result<Segment> {
        Self::create_or_open_named(name, &bytes_contents(size)?, |_| Ok(()))
    }

    /// Removes the name of a segment. Processes that have it mapped keep
    /// using it; its memory is freed when the last of them unmaps it.
    ///
    /// # Errors
    /// [`Error::NotFound`] if there is no such segment.
    pub fn unlink(name: &str) -> Result<()> {
        let path = path_for(name)?;
        // Under an exclusive lock of the file, as `clean` removes a name:
        // a `clean` never finds the name it looked at given to another
        // segment before it removes it.
        let file = open_existing(&path, false).ok();
        if let Some(file) = &file {
            lock_file(file, sys::FileLock::Exclusive);
        }
        std::fs::remove_file(path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => Error::NotFound(name.into()),
            _ => Error::io(format!("unlink segment {name:?}"), e),
        })
    }

    /// The segment's name, `None` if anonymous.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// Size of the usable area in bytes (the header not included).
    pub fn len(&self) -> usize {
        self.map.len() - DATA_OFFSET
    }

    /// Whether the usable area is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Start of the usable area, aligned to 256 bytes. Valid while `self` lives.
    pub fn as_ptr(&self) -> *mut u8 {
        // SAFETY: every mapping is at least DATA_OFFSET bytes long.
        unsafe { self.map.as_mut_ptr().add(DATA_OFFSET) }
    }

    fn header(&self) -> &Header {
        // SAFETY: the mapping starts with an initialised Header (written by the
        // creator before publication) and is page-aligned; the fields that can
        // change after publication are atomics.
        unsafe { &*(self.map.as_ptr() as *const Header) }
    }

    /// Builds a new anonymous segment: `init` gets the zeroed data area.
    pub(crate) fn create_anonymous(
        contents: &Contents,
        init: impl FnOnce(NonNull<u8>) -> Result<()>,
    ) -> Result<Segment> {
        let fd = sys::memfd("multiproc").map_err(|e| Error::io("memfd_create", e))?;
        Self::build(File::from(fd), contents, init, None)
    }

    /// Builds a new named segment and publishes it under `name`.
    pub(crate) fn create_named(
        name: &str,
        contents: &Contents,
        init: impl FnOnce(NonNull<u8>) -> Result<()>,
    ) -> Result<Segment> {
        Self::publish_named(name, contents, init, || {
            Some(Err(Error::AlreadyExists(name.into())))
        })
    }

    /// Builds a new named segment and publishes it under `name`; while the
    /// name is taken, asks `taken` what to return instead (`None`: try to
    /// publish again, the name having gone meanwhile).
    fn publish_named(
        name: &str,
        contents: &Contents,
        init: impl FnOnce(NonNull<u8>) -> Result<()>,
        mut taken: impl FnMut() -> Option<Result<Segment>>,
    ) -> Result<Segment> {
        let path = path_for(name)?;
        let (tmp, file) = temporary_file(contents.total_size())?;
        let built = Self::build(file, contents, init, Some(name)).and_then(|mut seg| {
            crate::fork_handlers::ready()?;
            loop {
                // link() never replaces an existing name: creation is exclusive.
                match std::fs::hard_link(&tmp, &path) {
                    Ok(()) => break,
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                        if let Some(instead) = taken() {
                            return instead;
                        }
                    }
                    // ENOSPC: a tmpfs out of inodes (a link takes one).
                    Err(e) => {
                        return Err(no_space_or(
                            contents.total_size(),
                            &format!("publish segment {name:?}"),
                            e,
                        ))
                    }
                }
            }
            // The creator is recorded as such; its children in slots.
            seg.list(None);
            Ok(seg)
        });
        let _ = std::fs::remove_file(&tmp);
        built
    }

    fn build(
        file: File,
        contents: &Contents,
        init: impl FnOnce(NonNull<u8>) -> Result<()>,
        name: Option<&str>,
    ) -> Result<Segment> {
        let size = contents.total_size();
        sys::reserve(&file, size).map_err(|e| no_space_or(size, "reserve shared memory", e))?;
        let map = MmapOptions::new()
            .len(size)
            .map_raw(&file)
            .map_err(|e| no_space_or(size, "mmap", e))?;
        let header = map.as_mut_ptr() as *mut Header;
        // SAFETY: the mapping is fresh, page-aligned, `size >= DATA_OFFSET`
        // bytes long and not yet visible to any other process.
        unsafe { Header::write(header, contents) };
        let seg = Segment {
            map,
            name: name.map(Into::into),
            named: None,
        };
        init(NonNull::new(seg.as_ptr()).expect("mapping is non-null"))?;
        seg.header().mark_ready();
        Ok(seg)
    }

    /// Opens a named segment and checks that it holds `kind` of `elem`.
    pub(crate) fn open_named(name: &str, kind: ObjectKind, elem: &ElemType) -> Result<Segment> {
        let path = path_for(name)?;
        // The name may be given to another segment between the open and
        // the look that follows it; that one is opened then. Each turn
        // of the loop is another process's progress.
        loop {
            if let Some(seg) = Self::open_path(name, &path, kind, elem)? {
                return Ok(seg);
            }
        }
    }

    /// One try of [`open_named`](Segment::open_named): `None` if `path` no
    /// longer named the segment opened once this process was recorded in it.
    fn open_path(
        name: &str,
        path: &std::path::Path,
        kind: ObjectKind,
        elem: &ElemType,
    ) -> Result<Option<Segment>> {
        let mut file = open_existing(path, true).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => Error::NotFound(name.into()),
            _ => Error::io(format!("open segment {name:?}"), e),
        })?;
        let (info, size) = read_info(name, &mut file)?;
        info.expect(name, kind, elem)?;
        let map = MmapOptions::new()
            .len(size as usize)
            .map_raw(&file)
            .map_err(|e| no_space_or(size as usize, "mmap", e))?;
        let mut seg = Segment {
            map,
            name: Some(name.into()),
            named: None,
        };
        crate::fork_handlers::ready()?;
        // Recorded under a shared lock of the file, and kept only if the
        // name still names it then: a `clean` that found the segment
        // stale either removed its name before (this process then drops
        // it, and finds the name gone or another segment's) or finds this
        // process recorded (see `registry::clean`).
        let locked = lock_file(&file, sys::FileLock::Shared);
        let recorded = seg.attach();
        seg.list(recorded);
        let still = names(path, &file);
        if locked {
            sys::unlock_file(&file);
        }
        Ok(still.then_some(seg))
    }

    /// Opens `name`, or creates it from `contents` and `init` if it does not exist.
    pub(crate) fn create_or_open_named(
        name: &str,
        contents: &Contents,
        init: impl FnOnce(NonNull<u8>) -> Result<()>,
    ) -> Result<Segment> {
        let open = || match Self::open_named(name, contents.kind, &contents.elem) {
            Err(Error::NotFound(_)) => None,
            other => Some(other),
        };
        if let Some(opened) = open() {
            return opened;
        }
        // Another process may create it in between (then it is opened),
        // and unlink it again before it is opened (then this one tries
        // again): each turn of that loop is another process's progress.
        Self::publish_named(name, contents, init, open)
    }

    /// What the segment's header says.
    ///
    /// # Errors
    /// A header error if the segment was damaged since it was opened.
    pub fn info(&self) -> Result<SegmentInfo> {
        let bytes = self.header().to_bytes();
        SegmentInfo::parse_header(self.name().unwrap_or(""), &bytes, self.map.len() as u64)
    }

    /// Lists the segment among this process's named ones ([`NAMED`]),
    /// recorded as `recorded` in its header.
    fn list(&mut self, recorded: Option<(Attached, u32)>) {
        static IDS: AtomicU64 = AtomicU64::new(0);
        let id = IDS.fetch_add(1, Ordering::Relaxed);
        poison::locked(&NAMED).push(Named {
            id,
            header: self.map.as_ptr() as usize,
            recorded,
        });
        self.named = Some(id);
    }

    /// Records this process in a free (or dead) slot of the header, so that
    /// `multiproc shm clean` knows the segment is in use.
    fn attach(&self) -> Option<(Attached, u32)> {
        let me = sys::getpid();
        for (i, slot) in self.header().attached.iter().enumerate() {
            let cur = slot.load(Ordering::Relaxed);
            if (cur == 0 || !sys::pid_alive(cur))
                && slot
                    .compare_exchange(cur, me, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
            {
                return Some((Attached::Slot(i), me));
            }
        }
        // Every slot belongs to a live process; they may all end before
        // this one, which is then the segment's only user: counted, so
        // that `clean` never takes it for a stale one.
        self.header().unrecorded.fetch_add(1, Ordering::AcqRel);
        Some((Attached::Unrecorded, me))
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        // Out of the list before the mapping goes (a fork meanwhile would
        // have the child write to a header no longer mapped).
        let Some(id) = self.named else {
            return;
        };
        let recorded = {
            let mut named = poison::locked(&NAMED);
            match named.iter().position(|n| n.id == id) {
                Some(at) => named.swap_remove(at).recorded,
                None => None,
            }
        };
        // A forked child's entry says where the child is recorded (if it
        // could be); an entry of another process's never comes here.
        let Some((how, pid)) = recorded.filter(|&(_, pid)| pid == sys::getpid()) else {
            return;
        };
        let header = self.header();
        match how {
            Attached::Slot(slot) => {
                let _ = header.attached[slot].compare_exchange(
                    pid,
                    0,
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                );
            }
            Attached::Unrecorded => {
                let _ = header
                    .unrecorded
                    .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| n.checked_sub(1));
            }
        }
    }
}

/// A new file to build a named segment in, under a temporary name: this
/// process's pid (so that `clean` can tell a builder that died), a
/// sequence number and random bits. Another user may create files under
/// any free name in `/dev/shm`, and a pid is no secret: a name taken is
/// passed over for another. A file system out of inodes (`ENOSPC`) is
/// [`Error::NoSpace`] for the segment of `size` bytes, as one out of
/// bytes is.
fn temporary_file(size: usize) -> Result<(PathBuf, File)> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let mut tries = 0;
    loop {
        let mut random = [0u8; 8];
        sys::random_bytes(&mut random).map_err(|e| Error::io("getrandom", e))?;
        let tmp = sys::shm_dir().join(format!(
            "{PREFIX}{TMP_TAG}{}-{}-{:016x}",
            sys::getpid(),
            SEQ.fetch_add(1, Ordering::Relaxed),
            u64::from_ne_bytes(random)
        ));
        match OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
        {
            Ok(file) => return Ok((tmp, file)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && tries < 8 => tries += 1,
            Err(e) => return Err(no_space_or(size, &format!("create {}", tmp.display()), e)),
        }
    }
}

/// The header of a raw segment of `size` bytes, which with the header
/// must fit a file's size (and so a `usize`).
fn bytes_contents(size: usize) -> Result<Contents> {
    if size > isize::MAX as usize - DATA_OFFSET {
        return Err(Error::NoSpace {
            size,
            source: io::Error::from_raw_os_error(sys::errno::EFBIG),
        });
    }
    Ok(Contents {
        kind: ObjectKind::Bytes,
        elem: ElemType::none(),
        len: size as u64,
        data_size: size,
    })
}

/// Takes `how` on `file` (see [`sys::FileLock`]), waiting for it up to
/// [`FILE_LOCK_WAIT`]: its holders keep it for a few system calls. False
/// if it could not (a process that keeps it for ever, or a file that
/// takes no lock): the caller goes on without it.
fn lock_file(file: &File, how: sys::FileLock) -> bool {
    let end = sys::Deadline::after(FILE_LOCK_WAIT);
    loop {
        match sys::try_lock_file(file, how) {
            Ok(true) => return true,
            Ok(false) if !end.passed() => std::thread::sleep(Duration::from_micros(50)),
            _ => return false,
        }
    }
}

/// The longest [`lock_file`] waits.
const FILE_LOCK_WAIT: Duration = Duration::from_millis(200);

/// Whether `path` names the file open as `file`.
fn names(path: &std::path::Path, file: &File) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::symlink_metadata(path), file.metadata()) {
        (Ok(named), Ok(open)) => named.dev() == open.dev() && named.ino() == open.ino(),
        _ => false,
    }
}

/// Opens an existing segment file as `shm_open` does: not through a
/// symbolic link, and without waiting (a FIFO or a device put there under
/// a segment's name, `/dev/shm` being writable by every user, would have
/// `open` or the first read wait for ever); [`read_info`] then refuses
/// anything but a regular file.
fn open_existing(path: &std::path::Path, write: bool) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(write)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
}

/// Reads and checks the header of an open segment file; returns it and the file's size.
fn read_info(name: &str, file: &mut File) -> Result<(SegmentInfo, u64)> {
    let meta = file
        .metadata()
        .map_err(|e| Error::io(format!("stat segment {name:?}"), e))?;
    if !meta.is_file() {
        return Err(Error::Corrupt {
            name: name.into(),
            what: format!("not a regular file but {}", kind_of(meta.file_type())),
        });
    }
    let size = meta.len();
    let mut buf = [0u8; DATA_OFFSET];
    let n =
        read_up_to(file, &mut buf).map_err(|e| Error::io(format!("read segment {name:?}"), e))?;
    Ok((SegmentInfo::parse_header(name, &buf[..n], size)?, size))
}

/// What a file that is not a regular file is, for an error.
fn kind_of(t: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_char_device() || t.is_block_device() {
        "a device"
    } else {
        "of an unknown kind"
    }
}

fn read_up_to(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Checks a user-given segment name and returns its path.
fn path_for(name: &str) -> Result<PathBuf> {
    let bad = |reason| {
        Err(Error::InvalidName {
            name: name.into(),
            reason,
        })
    };
    if name.is_empty() {
        return bad("empty");
    }
    if name.len() > MAX_NAME_LEN {
        return bad("longer than 200 bytes");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return bad("only ASCII letters, digits, '.', '_' and '-' are allowed");
    }
    Ok(sys::shm_dir().join(format!("{PREFIX}{name}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        for bad in ["", "a/b", "../x", "sp ace", &"x".repeat(201)] {
            assert!(
                matches!(path_for(bad), Err(Error::InvalidName { .. })),
                "{bad:?}"
            );
        }
        assert!(path_for("ok.name_1-2").is_ok());
    }

    #[test]
    #[cfg_attr(miri, ignore = "memfd and mmap are outside Miri")]
    fn anonymous_bytes_are_zeroed_and_writable() {
        let seg = Segment::anonymous(10_000).unwrap();
        assert_eq!(seg.len(), 10_000);
        assert_eq!(seg.as_ptr() as usize % 256, 0);
        // SAFETY: the segment is 10 000 bytes long, mapped while `seg`
        // lives, and private to this test: nothing else reaches the bytes.
        let bytes = unsafe { std::slice::from_raw_parts_mut(seg.as_ptr(), seg.len()) };
        assert_eq!(bytes[9_999], 0);
        bytes[9_999] = 7;
        assert_eq!(bytes[9_999], 7);
    }
}
