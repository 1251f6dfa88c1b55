//! Adversarial review of `Process` and its start methods, fifth round:
//! names Python's `repr` escapes, names with NUL bytes or thousands of
//! characters, children that close every descriptor they were given, and
//! exit codes outside 0..=255.

mod common;

use std::time::Duration;

use common::{join, watchdog};
use multiproc::process::{current_process, exit, Process};

const LIMIT: Duration = Duration::from_secs(30);

/// Python's `repr(p)` escapes every character that `str.isprintable`
/// rejects (C1 controls, separators other than the space, format
/// characters, private use, unassigned), as `\xhh`, `\uhhhh` or
/// `\Uhhhhhhhh`, and writes the printable ones (an emoji, a combining
/// accent) as they are.
#[test]
fn a_name_python_escapes_prints_as_pythons_repr() {
    // multiprocessing.Process(name='a\x85b\u2028c😀\U000e0001\xa0d\x00e\u0301')
    let p = Process::new(|| {}).with_name("a\u{85}b\u{2028}c\u{1F600}\u{E0001}\u{a0}d\0e\u{301}");
    assert_eq!(
        p.to_string(),
        format!(
            "<Process name='a\\x85b\\u2028c\u{1F600}\\U000e0001\\xa0d\\x00e\u{301}' parent={} initial>",
            std::process::id()
        )
    );
    // Every character Python escapes as `\xhh`: the C0 controls but tab,
    // newline and carriage return (`\t`, `\n`, `\r`), DEL, the C1
    // controls, the no-break space and the soft hyphen.
    let all: String = (0u32..0x100).filter_map(char::from_u32).collect();
    let shown = Process::new(|| {}).with_name(all).to_string();
    for c in (0u32..0x20)
        .filter(|c| ![9, 10, 13].contains(c))
        .chain(0x7f..0xa1)
        .chain([0xad])
    {
        assert!(shown.contains(&format!("\\x{c:02x}")), "{c:#x} in {shown}");
    }
}

fn name_is(expected: String) {
    if current_process().name() != expected {
        exit(3);
    }
}

/// A name with NUL bytes and one of ten thousand characters reach the
/// child intact, forked or through the fork server.
#[test]
fn names_with_nul_bytes_or_ten_thousand_characters_reach_the_child() {
    watchdog("odd names", LIMIT, || {
        for name in ["a\0b\0".to_owned(), "x".repeat(10_000), "\0".into()] {
            let expected = name.clone();
            let mut p = Process::new(move || name_is(expected)).with_name(name.clone());
            p.start().unwrap();
            assert_eq!(join(&p, LIMIT), 0);
            let mut p = Process::forkserver(name_is, name.clone()).with_name(name.clone());
            p.start().unwrap();
            assert_eq!(join(&p, LIMIT), 0);
            assert_eq!(p.name(), name);
        }
    });
}

/// Closes every descriptor of this process, standard streams included.
fn close_everything(code: i32) {
    // SAFETY: close_range takes no pointer.
    unsafe { libc::syscall(libc::SYS_close_range, 0u32, u32::MAX, 0u32) };
    exit(code);
}

/// A child that closes every descriptor it has (its standard streams, and
/// whatever the crate gave it: a fork server's status socket) still ends
/// with its own exit code, and its parent learns it.
#[test]
fn a_child_that_closes_every_descriptor_keeps_its_exit_code() {
    watchdog("closing children", LIMIT, || {
        let mut p = Process::new(|| close_everything(7));
        p.start().unwrap();
        assert_eq!(join(&p, LIMIT), 7);
        let mut p = Process::forkserver(close_everything, 9);
        p.start().unwrap();
        assert_eq!(join(&p, LIMIT), 9);
    });
}

fn exit_with(code: i32) {
    exit(code)
}

/// Exit codes outside 0..=255 are what the kernel keeps of them, the low
/// eight bits, as Python's `sys.exit(256)` gives exit code 0 and
/// `sys.exit(-1)` 255.
#[test]
fn exit_codes_beyond_255_keep_their_low_byte() {
    watchdog("exit codes", LIMIT, || {
        for (code, seen) in [
            (256, 0),
            (257, 1),
            (-1, 255),
            (i32::MIN, 0),
            (i32::MAX, 255),
        ] {
            let mut p = Process::new(move || exit(code));
            p.start().unwrap();
            assert_eq!(join(&p, LIMIT), seen, "fork, exit({code})");
            let mut p = Process::forkserver(exit_with, code);
            p.start().unwrap();
            assert_eq!(join(&p, LIMIT), seen, "forkserver, exit({code})");
        }
    });
}

/// The same, against the newest CPython here (older ones know older
/// Unicode versions, where more characters are unassigned): a name of
/// every character below U+0800 (Latin to Arabic), and a few beyond, prints as `repr` of
/// Python's process does.
#[test]
fn names_print_as_the_newest_cpythons_repr() {
    let name: String = (1u32..0x800)
        .chain([0xfeff, 0xfffd, 0xe000, 0x1f600, 0xe0001, 0x10ffff])
        .filter_map(char::from_u32)
        .collect();
    let code = "import sys, multiprocessing as mp\n\
                name = sys.stdin.buffer.read().decode('utf-8', 'surrogatepass')\n\
                sys.stdout.write(repr(mp.Process(name=name)).split(' parent=')[0])";
    let shown = Process::new(|| {}).with_name(name.clone()).to_string();
    let ours = shown.split(" parent=").next().unwrap();
    if let Some((minor, python)) = common::cpython::pyenv_pythons().pop() {
        let mut command = std::process::Command::new(python);
        command.args(["-c", code]);
        let (status, out, err) = common::run_with_deadline(&mut command, name.as_bytes(), LIMIT);
        assert!(status.success(), "3.{minor}: {err}");
        if out != ours {
            let at = out
                .chars()
                .zip(ours.chars())
                .take_while(|(a, b)| a == b)
                .count();
            let theirs: String = out.chars().skip(at).take(20).collect();
            let mine: String = ours.chars().skip(at).take(20).collect();
            panic!("3.{minor} writes {theirs:?}, we write {mine:?}");
        }
    }
}

/// A handle made in one process and given, unstarted, to a forked child
/// cannot be started there (Python: "can only start a process object
/// created by current process"): its parent would be the wrong process,
/// and the handle's record of who made it would be a lie.
#[test]
fn a_handle_made_by_another_process_does_not_start() {
    watchdog("foreign handle", LIMIT, || {
        let grandchild = Process::new(|| {}).with_name("made by the parent");
        let mut p = Process::new(move || {
            let mut grandchild = grandchild;
            match grandchild.start() {
                Err(multiproc::Error::ProcessState { what, .. })
                    if what.contains("created by the current process") =>
                {
                    // Still the parent's, unstarted: Python's repr says so.
                    if grandchild.to_string().ends_with(" unknown>") {
                        exit(0)
                    }
                    exit(4)
                }
                Err(_) => exit(2),
                Ok(()) => exit(3),
            }
        });
        p.start().unwrap();
        assert_eq!(join(&p, LIMIT), 0);
    });
}
