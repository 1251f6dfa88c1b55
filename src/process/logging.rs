//! Log lines that say which process wrote them, through the `log` crate,
//! and the records of a process's life that Python's `multiprocessing`
//! logs, with its wording and at its levels.

use std::cell::Cell;
use std::fmt;
use std::io::Write;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU8, Ordering};

use super::current_process;

/// A level of Python's `logging` as `multiprocessing` uses it, for
/// [`log_to_stderr`]: Python's five standard levels and the two that
/// `multiprocessing` adds, `SUBDEBUG` (5) and `SUBWARNING` (25). The
/// numbers are Python's (`level as u8`).
///
/// Records of the `log` crate take the level of the same name (`Trace` is
/// `SubDebug`); this crate's own records of a process's life are `Info`
/// (`child process calling self.run()`, `process shutting down`, `process
/// exiting with exitcode 0`, `calling join() for process Process-1`) and
/// `Debug`, as Python's. Through the `log` crate (to another logger),
/// `SubDebug` is `Trace`, `SubWarning` is `Info` and `Critical` is `Error`,
/// all with the target `multiproc`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum LogLevel {
    /// Python's `multiprocessing.SUBDEBUG` (5).
    SubDebug = 5,
    /// `DEBUG` (10).
    Debug = 10,
    /// `INFO` (20).
    Info = 20,
    /// Python's `multiprocessing.SUBWARNING` (25).
    SubWarning = 25,
    /// `WARNING` (30).
    Warning = 30,
    /// `ERROR` (40).
    Error = 40,
    /// `CRITICAL` (50); no record of the `log` crate is this high, so at
    /// this level [`log_to_stderr`] shows none of them.
    Critical = 50,
}

impl LogLevel {
    const ALL: [LogLevel; 7] = [
        LogLevel::SubDebug,
        LogLevel::Debug,
        LogLevel::Info,
        LogLevel::SubWarning,
        LogLevel::Warning,
        LogLevel::Error,
        LogLevel::Critical,
    ];

    /// The level whose number is `n`, if any.
    fn from_number(n: u8) -> Option<LogLevel> {
        Self::ALL.into_iter().find(|l| *l as u8 == n)
    }

    /// Python's `levelname` for records at this level, as
    /// `multiprocessing.log_to_stderr` prints it (Python 3.12 names no
    /// level 5 or 25).
    fn python_name(self) -> &'static str {
        match self {
            LogLevel::SubDebug => "Level 5",
            LogLevel::Debug => "DEBUG",
            LogLevel::Info => "INFO",
            LogLevel::SubWarning => "Level 25",
            LogLevel::Warning => "WARNING",
            LogLevel::Error => "ERROR",
            LogLevel::Critical => "CRITICAL",
        }
    }

    /// The `log` crate's level for records at this level.
    fn log_level(self) -> log::Level {
        match self {
            LogLevel::SubDebug => log::Level::Trace,
            LogLevel::Debug => log::Level::Debug,
            LogLevel::Info | LogLevel::SubWarning => log::Level::Info,
            LogLevel::Warning => log::Level::Warn,
            LogLevel::Error | LogLevel::Critical => log::Level::Error,
        }
    }

    /// The `log` crate's filter that lets through the records shown at
    /// this level.
    fn log_filter(self) -> log::LevelFilter {
        match self {
            LogLevel::Critical => log::LevelFilter::Off,
            level => level.log_level().to_level_filter(),
        }
    }
}

impl From<log::Level> for LogLevel {
    fn from(level: log::Level) -> LogLevel {
        match level {
            log::Level::Error => LogLevel::Error,
            log::Level::Warn => LogLevel::Warning,
            log::Level::Info => LogLevel::Info,
            log::Level::Debug => LogLevel::Debug,
            log::Level::Trace => LogLevel::SubDebug,
        }
    }
}

/// For callers of the `log` crate: `Off` shows nothing of it (it is
/// [`LogLevel::Critical`]).
impl From<log::LevelFilter> for LogLevel {
    fn from(filter: log::LevelFilter) -> LogLevel {
        filter.to_level().map_or(LogLevel::Critical, LogLevel::from)
    }
}

impl fmt::Display for LogLevel {
    /// Python's level name (`INFO`, `Level 5`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.python_name())
    }
}

/// The level given to `log_to_stderr` (0: never called), so that spawned
/// children, fresh programs, install the same logger.
static LEVEL: AtomicU8 = AtomicU8::new(0);

thread_local! {
    /// The Python level of the record this thread is logging, when this
    /// crate logs it (the `log` crate has no `SUBWARNING`).
    static RECORD_LEVEL: Cell<Option<LogLevel>> = const { Cell::new(None) };
}

/// The level a spawned child should log at, if `log_to_stderr` was called.
pub(super) fn inherited_level() -> Option<usize> {
    match LEVEL.load(Ordering::Relaxed) {
        0 => None,
        n => Some(n.into()),
    }
}

/// Installs the logger in a spawned child, or a fork server's, at the
/// level its parent used.
pub(super) fn install_inherited(level: usize) {
    let level = u8::try_from(level)
        .ok()
        .and_then(LogLevel::from_number)
        .unwrap_or(LogLevel::Info);
    let _ = log_to_stderr(level);
}

/// Logs a record of this crate at Python's `level`, with the target
/// `multiproc`.
pub(crate) fn record(level: LogLevel, args: fmt::Arguments<'_>) {
    let log_level = level.log_level();
    if log_level > log::max_level() {
        return;
    }
    RECORD_LEVEL.set(Some(level));
    guarded(|| {
        log::logger().log(
            &log::Record::builder()
                .args(args)
                .level(log_level)
                .target("multiproc")
                .module_path_static(Some(module_path!()))
                .build(),
        );
    });
    RECORD_LEVEL.set(None);
}

/// Runs `log`, a call of the program's logger for a record of this crate,
/// ignoring a panic there (a logger that prints with `println!` to a pipe
/// whose reader has gone panics), as Python's logging reports its
/// handlers' errors and goes on: a record must not end a pool's scheduler
/// thread, nor unwind out of a forked child's start into its parent's
/// code. The panic's payload is leaked (its drop might panic again).
pub(crate) fn guarded(log: impl FnOnce()) {
    if let Err(payload) = catch_unwind(AssertUnwindSafe(log)) {
        std::mem::forget(payload);
    }
}

/// `log::debug!` for a record of this crate, through [`guarded`].
macro_rules! debug_record {
    ($($arg:tt)*) => {
        $crate::process::logging::guarded(|| log::debug!($($arg)*))
    };
}
pub(crate) use debug_record;

/// Python's `util.info`.
pub(crate) fn info(args: fmt::Arguments<'_>) {
    record(LogLevel::Info, args);
}

/// Python's `util.debug`.
pub(crate) fn debug(args: fmt::Arguments<'_>) {
    record(LogLevel::Debug, args);
}

/// Writes `args` and a newline to stderr in one write, as `eprintln!`
/// would, but ignores a failure instead of panicking: a child whose stderr
/// is a closed pipe must still end with its own exit code (a panic while
/// the panic hook prints is an abort, and `SIGABRT` is not the code the
/// parent should see).
pub(crate) fn to_stderr(args: fmt::Arguments<'_>) {
    let line = format!("{args}\n");
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// Writes each record to stderr as `[LEVEL/ProcessName] message`.
struct StderrLogger {
    level: LogLevel,
}

impl StderrLogger {
    /// The Python level of `metadata`'s record.
    fn level_of(metadata: &log::Metadata<'_>) -> LogLevel {
        RECORD_LEVEL
            .get()
            .unwrap_or_else(|| metadata.level().into())
    }
}

impl log::Log for StderrLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        Self::level_of(metadata) >= self.level
    }

    fn log(&self, record: &log::Record<'_>) {
        let level = Self::level_of(record.metadata());
        if level >= self.level {
            // One write per line, so lines from several processes never mix.
            let line = format!("[{level}/{}] {}\n", current_process().name(), record.args());
            let _ = std::io::stderr().lock().write_all(line.as_bytes());
        }
    }

    fn flush(&self) {
        let _ = std::io::stderr().flush();
    }
}

/// Sends log records at `level` or above to stderr as
/// `[LEVEL/ProcessName] message` (Python's `multiprocessing.log_to_stderr`,
/// with Python's level names), in this process and in the children it
/// starts afterwards (forked ones inherit it; spawned ones are told). The
/// records are those of the `log` crate and this crate's own records of
/// each process's life, with Python's wording: see [`LogLevel`].
///
/// `level` is a [`LogLevel`], or a `log::LevelFilter` for programs that use
/// the `log` crate anyway.
///
/// # Errors
/// If another logger is already installed.
///
/// # Example
/// ```
/// use multiproc::{LogLevel, Process};
///
/// multiproc::log_to_stderr(LogLevel::Info).ok();
/// // [INFO/Process-1] child process calling self.run()
/// // [INFO/Process-1] process shutting down
/// // [INFO/Process-1] process exiting with exitcode 0
/// let mut p = Process::new(|| {});
/// p.start()?;
/// p.join()?;
/// # Ok::<(), multiproc::Error>(())
/// ```
pub fn log_to_stderr(level: impl Into<LogLevel>) -> Result<(), log::SetLoggerError> {
    let level = level.into();
    log::set_boxed_logger(Box::new(StderrLogger { level }))?;
    log::set_max_level(level.log_filter());
    LEVEL.store(level as u8, Ordering::Relaxed);
    // So that this process's exit logs its end (and joins its children),
    // as Python's does once its logger exists.
    let _ = super::ready_for_fork();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use log::Log;

    #[test]
    fn levels_are_pythons() {
        let numbers: Vec<u8> = LogLevel::ALL.iter().map(|l| *l as u8).collect();
        assert_eq!(numbers, [5, 10, 20, 25, 30, 40, 50]);
        assert!(LogLevel::ALL.windows(2).all(|w| w[0] < w[1]));
        let names: Vec<String> = LogLevel::ALL.iter().map(|l| l.to_string()).collect();
        assert_eq!(
            names,
            ["Level 5", "DEBUG", "INFO", "Level 25", "WARNING", "ERROR", "CRITICAL"]
        );
        for level in LogLevel::ALL {
            assert_eq!(LogLevel::from_number(level as u8), Some(level));
        }
        assert_eq!(LogLevel::from_number(0), None);
    }

    #[test]
    fn the_log_crates_levels_convert() {
        assert_eq!(LogLevel::from(log::LevelFilter::Trace), LogLevel::SubDebug);
        assert_eq!(LogLevel::from(log::LevelFilter::Warn), LogLevel::Warning);
        assert_eq!(LogLevel::from(log::LevelFilter::Off), LogLevel::Critical);
        assert_eq!(LogLevel::SubWarning.log_filter(), log::LevelFilter::Info);
        assert_eq!(LogLevel::Critical.log_filter(), log::LevelFilter::Off);
    }

    /// A `SUBWARNING` record of this crate passes a `SubWarning` threshold
    /// that the `log` crate's `info!` records, at the same `log` level, do not.
    #[test]
    fn subwarning_sits_between_info_and_warning() {
        let logger = StderrLogger {
            level: LogLevel::SubWarning,
        };
        let info = log::Metadata::builder().level(log::Level::Info).build();
        let warn = log::Metadata::builder().level(log::Level::Warn).build();
        assert!(!logger.enabled(&info));
        assert!(logger.enabled(&warn));
        RECORD_LEVEL.set(Some(LogLevel::SubWarning));
        assert!(logger.enabled(&info));
        RECORD_LEVEL.set(None);
    }
}
