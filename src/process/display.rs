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
/// quotes if it holds a single quote and no double quote.
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
                c if (c as u32) < 0x20 || c as u32 == 0x7f => write!(f, "\\x{:02x}", c as u32)?,
                c => f.write_char(c)?,
            }
        }
        f.write_char(quote)
    }
}
