//! How a [`Process`] prints: `Debug` as a struct, `Display` as Python's
//! `repr`.

use std::fmt;
use std::sync::atomic::Ordering;

use super::target::sealed;
use super::Process;
use crate::sys;

impl<'a, T: sealed::Target<'a>> fmt::Debug for Process<'a, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Process")
            .field("name", &self.name)
            .field("pid", &self.pid())
            .field("daemon", &self.daemon)
            .field("exitcode", &self.exitcode())
            .finish()
    }
}

/// Python's `repr` of a process: `<Process name='Process-1' pid=8736
/// parent=8730 started>`, with the state `initial`, `started`, `stopped`
/// (and `exitcode=0`, or `exitcode=-SIGTERM` for a signal) or `unknown` (a
/// copy of the handle in another process), and `daemon` for a daemon.
///
/// # Example
/// ```
/// use multiproc::Process;
/// let mut p = Process::new(|| {}).with_name("quick").daemon(true);
/// p.start()?;
/// p.join()?;
/// let shown = format!("{p}");
/// assert!(shown.starts_with("<Process name='quick' pid="), "{shown}");
/// assert!(shown.ends_with(&format!(" parent={} stopped exitcode=0 daemon>", std::process::id())));
/// # Ok::<(), multiproc::Error>(())
/// ```
impl<'a, T: sealed::Target<'a>> fmt::Display for Process<'a, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let me = sys::getpid();
        let (parent, status, code) = match self.started_by.load(Ordering::Acquire) {
            0 if self.created_by == me => (self.created_by, "initial", None),
            0 => (self.created_by, "unknown", None),
            by if by != me => (by, "unknown", None),
            by => match self.poll() {
                Some(code) => (by, "stopped", Some(code)),
                None => (by, "started", None),
            },
        };
        write!(f, "<{} name={}", self.kind, PyStr(&self.name))?;
        if let Some(pid) = self.pid() {
            write!(f, " pid={pid}")?;
        }
        write!(f, " parent={parent} {status}")?;
        match code.map(|c| (c, sys::signal_name(-c))) {
            Some((_, Some(signal))) => write!(f, " exitcode=-{signal}")?,
            Some((code, None)) => write!(f, " exitcode={code}")?,
            None => {}
        }
        if self.daemon {
            f.write_str(" daemon")?;
        }
        f.write_str(">")
    }
}

/// A string as Python's `repr` writes it: in single quotes, or in double
/// quotes if it holds a single quote and no double quote, with the
/// characters that are not printable escaped.
struct PyStr<'s>(&'s str);

impl fmt::Display for PyStr<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use fmt::Write;
        let quote = if self.0.contains('\'') && !self.0.contains('"') {
            '"'
        } else {
            '\''
        };
        f.write_char(quote)?;
        for c in self.0.chars() {
            match c {
                '\\' => f.write_str("\\\\")?,
                '\n' => f.write_str("\\n")?,
                '\r' => f.write_str("\\r")?,
                '\t' => f.write_str("\\t")?,
                c if c == quote => write!(f, "\\{c}")?,
                c if printable(c) => f.write_char(c)?,
                c => match c as u32 {
                    n @ ..0x100 => write!(f, "\\x{n:02x}")?,
                    n @ ..0x1_0000 => write!(f, "\\u{n:04x}")?,
                    n => write!(f, "\\U{n:08x}")?,
                },
            }
        }
        f.write_char(quote)
    }
}

/// Whether Python's `repr` writes `c` as it is (`str.isprintable`): not a
/// control, format, private-use, unassigned or surrogate character, nor a
/// separator other than the space. Rust's `escape_debug` draws the same
/// line from the same Unicode categories; it also escapes a combining mark
/// at the start of a string, which Python does not, hence the `a` before it.
fn printable(c: char) -> bool {
    if c.is_ascii() {
        return !c.is_ascii_control();
    }
    let mut pair = [0u8; 5];
    pair[0] = b'a';
    let len = 1 + c.encode_utf8(&mut pair[1..]).len();
    std::str::from_utf8(&pair[..len]).is_ok_and(|pair| pair.escape_debug().nth(2).is_none())
}
