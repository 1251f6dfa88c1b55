//! Log lines that say which process wrote them, through the `log` crate.

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::current_process;

/// The level given to `log_to_stderr` (0: never called), so that spawned
/// children, fresh programs, install the same logger.
static LEVEL: AtomicUsize = AtomicUsize::new(0);

/// The level a spawned child should log at, if `log_to_stderr` was called.
pub(super) fn inherited_level() -> Option<usize> {
    match LEVEL.load(Ordering::Relaxed) {
        0 => None,
        n => Some(n - 1),
    }
}

/// Installs the logger in a spawned child at the level its parent used.
pub(super) fn install_inherited(level: usize) {
    let level = log::LevelFilter::iter()
        .nth(level)
        .unwrap_or(log::LevelFilter::Info);
    let _ = log_to_stderr(level);
}

/// Writes each record to stderr as `[LEVEL/ProcessName] message`.
struct StderrLogger {
    level: log::LevelFilter,
}

impl log::Log for StderrLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= self.level
    }

    fn log(&self, record: &log::Record<'_>) {
        if self.enabled(record.metadata()) {
            // One write per line, so lines from several processes never mix.
            let line = format!(
                "[{}/{}] {}\n",
                record.level(),
                current_process().name(),
                record.args()
            );
            let _ = std::io::stderr().lock().write_all(line.as_bytes());
        }
    }

    fn flush(&self) {
        let _ = std::io::stderr().flush();
    }
}

/// Sends the `log` crate's records at `level` or above to stderr as
/// `[LEVEL/ProcessName] message` (Python's `multiprocessing.log_to_stderr`),
/// in this process and in the children it starts afterwards (forked ones
/// inherit it; spawned ones are told).
///
/// # Errors
/// If another logger is already installed.
///
/// # Example
/// ```
/// multiproc::log_to_stderr(log::LevelFilter::Info).ok();
/// log::info!("starting"); // [INFO/MainProcess] starting
/// ```
pub fn log_to_stderr(level: log::LevelFilter) -> Result<(), log::SetLoggerError> {
    log::set_boxed_logger(Box::new(StderrLogger { level }))?;
    log::set_max_level(level);
    LEVEL.store(level as usize + 1, Ordering::Relaxed);
    Ok(())
}
