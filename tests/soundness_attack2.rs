//! Fifth-round attack on the soundness of the safe API: a thread that
//! ends while it holds a cell's robust lock through a leaked guard, and
//! queue items decoded from bytes a peer writes meanwhile.

mod common;

use std::time::Duration;

use common::{join, static_child, wait_until, watchdog, TempName};
use multiproc::{Error, Queue, RawValue, RecoverableLockError, Value};

const LIMIT: Duration = Duration::from_secs(30);

/// A guard leaked by a thread (`Box::leak` is safe) keeps its borrow of
/// the value for as long as the value lives, but the robust lock is
/// released by the kernel when the thread ends: the next locker would get
/// a second `&mut` to the same memory while the first is alive. The
/// process must stop at that thread's end instead (as std aborts when
/// soundness cannot be kept), never hand out the second reference.
#[test]
fn a_thread_ending_with_a_leaked_guard_never_lets_the_lock_be_recovered() {
    watchdog("thread ending with a leaked guard", LIMIT, || {
        let p = static_child(|| {
            let v = Value::new(0u64).unwrap();
            std::thread::scope(|s| {
                let first: &mut u64 = s
                    .spawn(|| &mut **Box::leak(Box::new(v.lock().unwrap())))
                    .join()
                    .unwrap();
                match v.lock_recovering() {
                    Err(RecoverableLockError::OwnerDied(mut second)) => {
                        // Two live `&mut u64` to one location.
                        *second = 1;
                        *first = 2;
                        multiproc::process::exit(3);
                    }
                    _ => multiproc::process::exit(4),
                }
            });
        });
        assert_eq!(
            join(&p, LIMIT),
            -libc::SIGABRT,
            "the lock of a leaked guard was handed out again"
        );
    });
}

/// Another process that can open a named queue may write into it at any
/// time, lock or no lock. A `String` item is checked to be UTF-8 as it is
/// decoded: it must be decoded from bytes that cannot change between that
/// check and the copy into the `String`, or a peer flipping a byte in
/// between makes a safe `get` return a `String` that is not UTF-8.
#[test]
fn a_string_decoded_while_a_peer_writes_its_frame_is_utf8_or_an_error() {
    use std::sync::atomic::{AtomicU8, Ordering::Relaxed};
    watchdog("string decoded while a peer writes", LIMIT, || {
        let name = TempName::new("sound2-utf8");
        // As long as a frame decoded in place may be (checking it takes
        // long enough for the peer to come between), in a ring of exactly
        // one frame (a 4-byte length, a 2-byte varint, the text): every
        // frame lies where the first does.
        let item = "a".repeat(4000);
        let q = Queue::<String>::create(&name, 0, 4 + 2 + item.len()).unwrap();
        q.put(item.clone()).unwrap();
        let path = format!("/dev/shm/{}{}", multiproc::segment::PREFIX, &*name);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .unwrap();
        let map = memmap2::MmapRaw::map_raw(&file).unwrap();
        let byte = move |at: usize| {
            assert!(at < map.len());
            // SAFETY: a byte of the mapping, which the closure keeps alive;
            // every process here reaches it atomically or through the
            // queue's own copies.
            unsafe { AtomicU8::from_ptr(map.as_mut_ptr().wrapping_add(at)) }
        };
        let first = (0..file.metadata().unwrap().len() as usize - 64)
            .find(|&at| (at..at + 64).all(|at| byte(at).load(Relaxed) == b'a'))
            .expect("the payload is in the segment");
        // A byte near the start of the payload: checked first, copied first.
        let target = first + 8;
        let running = RawValue::new(0u32).unwrap();
        let flag = running.clone();
        let peer = static_child(move || {
            flag.set(1);
            while flag.get() == 1 {
                match byte(target).load(Relaxed) {
                    b'a' => byte(target).store(0xff, Relaxed),
                    0xff => byte(target).store(b'a', Relaxed),
                    _ => std::hint::spin_loop(),
                }
            }
        });
        assert!(wait_until(LIMIT, || running.get() == 1));
        let mut broken = 0;
        for _ in 0..20_000 {
            if broken > 0 {
                break;
            }
            match q.get() {
                Ok(s) => broken += usize::from(std::str::from_utf8(s.as_bytes()).is_err()),
                Err(Error::Deserialize(_)) => {}
                Err(e) => panic!("{e}"),
            }
            q.put(item.clone()).unwrap();
        }
        running.set(0);
        assert_eq!(join(&peer, LIMIT), 0);
        assert_eq!(
            broken, 0,
            "strings that are not UTF-8 came out of the queue"
        );
    });
}

/// An element aligned beyond a segment's data area (256 bytes).
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C, align(4096))]
struct PageAligned([u8; 4096]);

/// The header's tag of an element type: FNV-1a of its name, size and
/// alignment (as the crate writes it).
fn elem_tag(name: &str, size: u32, align: u32) -> u64 {
    let mut tag: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name
        .bytes()
        .chain(size.to_le_bytes())
        .chain(align.to_le_bytes())
    {
        tag = (tag ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    tag
}

/// No creator makes a named object of an element aligned beyond the data
/// area, which is only 256-aligned; a header that says one is there (a
/// peer wrote it) must be refused, not opened into a misaligned `&T`.
#[test]
fn a_header_naming_an_element_aligned_beyond_the_data_area_is_refused() {
    use std::io::{Seek, SeekFrom, Write};
    let name = TempName::new("sound2-align");
    // Room for a `Value<PageAligned>`: a mutex, then the element at 4096.
    let _room = multiproc::Array::create(&name, &[0u8; 8192]).unwrap();
    let path = format!("/dev/shm/{}{}", multiproc::segment::PREFIX, &*name);
    let mut file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    let type_name = std::any::type_name::<PageAligned>();
    let mut elem_name = [0u8; 64];
    elem_name[..type_name.len()].copy_from_slice(type_name.as_bytes());
    // The header's fields from `len` on (`#[repr(C)]`, from offset 32):
    // len, elem_tag, kind (5: Value), elem_size, elem_align; then the
    // element's name at 64.
    let mut fields = Vec::new();
    fields.extend(1u64.to_ne_bytes());
    fields.extend(elem_tag(type_name, 4096, 4096).to_ne_bytes());
    fields.extend(5u32.to_ne_bytes());
    fields.extend(4096u32.to_ne_bytes());
    fields.extend(4096u32.to_ne_bytes());
    file.seek(SeekFrom::Start(32)).unwrap();
    file.write_all(&fields).unwrap();
    file.seek(SeekFrom::Start(64)).unwrap();
    file.write_all(&elem_name).unwrap();
    match Value::<PageAligned>::open(&name) {
        Err(Error::Corrupt { .. }) => {}
        Err(e) => panic!("refused for another reason: {e}"),
        Ok(v) => {
            let at = std::ptr::from_ref(&*v.lock().unwrap()) as usize;
            panic!(
                "opened, its element at {at:#x}, which is {} past a page",
                at % 4096
            );
        }
    }
}

/// A raw segment's size plus its header must not overflow: the sum is a
/// `NoSpace` error, never a panic, nor (wrapped) a small segment whose
/// `len` says it has almost `usize::MAX` bytes.
#[test]
fn a_segment_too_large_for_its_header_is_no_space() {
    use multiproc::segment::Segment;
    let name = TempName::new("sound2-huge");
    for size in [usize::MAX, usize::MAX - 255, isize::MAX as usize] {
        let made = [
            std::panic::catch_unwind(|| Segment::anonymous(size).map(|s| s.len())),
            std::panic::catch_unwind(|| Segment::create(&name, size).map(|s| s.len())),
            std::panic::catch_unwind(|| Segment::create_or_open(&name, size).map(|s| s.len())),
        ];
        for made in made {
            match made {
                Ok(Err(Error::NoSpace { .. })) => {}
                Ok(Err(e)) => panic!("{size} bytes: {e}"),
                Ok(Ok(len)) => panic!("{size} bytes: a segment of {len}"),
                Err(_) => panic!("{size} bytes: a panic"),
            }
        }
    }
}

/// A thread may keep a guard in a thread-local until it ends: the guard is
/// dropped with it (releasing the lock), which is no leak, and must not be
/// taken for one by a check that runs before that thread-local is dropped.
#[test]
fn a_guard_kept_in_a_thread_local_until_the_thread_ends_is_no_leak() {
    use multiproc::cell::ValueGuard;
    use std::cell::RefCell;
    thread_local! {
        static KEPT: RefCell<Option<ValueGuard<'static, u64>>> = const { RefCell::new(None) };
    }
    watchdog("guard kept in a thread-local", LIMIT, || {
        let p = static_child(|| {
            let v: &'static Value<u64> = Box::leak(Box::new(Value::new(0).unwrap()));
            std::thread::spawn(move || {
                KEPT.with(|k| *k.borrow_mut() = Some(v.lock().unwrap()));
            })
            .join()
            .unwrap();
            assert!(v.try_lock().is_ok(), "the thread's guard was dropped");
        });
        assert_eq!(join(&p, LIMIT), 0);
    });
}
