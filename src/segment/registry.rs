//! Listing and cleaning up this crate's named segments (`multiproc shm`).

use super::{names, open_existing, read_info, SegmentInfo, PREFIX, TMP_TAG};
use crate::error::{Error, Result};
use crate::sys;

/// A named segment found in `/dev/shm`.
#[derive(Debug)]
pub struct ListedSegment {
    /// The name to open it by (for a half-built segment, its temporary name).
    pub name: String,
    /// Size of the file in bytes.
    pub size: u64,
    /// Its header, or why it could not be read.
    pub info: Result<SegmentInfo>,
    /// Whether a process that created or opened it still exists. For a
    /// half-built segment: whether its builder does.
    pub alive: bool,
}

impl ListedSegment {
    /// Whether [`clean`] removes it: every process that used it is gone, or
    /// it is a half-built segment whose builder is gone.
    pub fn is_stale(&self) -> bool {
        !self.alive && (self.info.is_ok() || self.name.starts_with(TMP_TAG))
    }
}

/// Lists this crate's named segments.
///
/// # Errors
/// If `/dev/shm` cannot be read.
pub fn list() -> Result<Vec<ListedSegment>> {
    let dir = sys::shm_dir();
    let entries =
        std::fs::read_dir(dir).map_err(|e| Error::io(format!("read {}", dir.display()), e))?;
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(name) = file_name.to_str().and_then(|n| n.strip_prefix(PREFIX)) else {
            continue;
        };
        // The segment may vanish between listing and opening: skip it then.
        let Ok(mut file) = open_existing(&entry.path(), false) else {
            continue;
        };
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        let info = read_info(name, &mut file).map(|(info, _)| info);
        let alive = match (&info, tmp_builder_pid(name)) {
            (_, Some(pid)) => sys::pid_alive(pid),
            (Ok(info), None) => info.in_use(),
            // A damaged segment of unknown owner is never called dead.
            (Err(_), None) => true,
        };
        out.push(ListedSegment {
            name: name.to_owned(),
            size,
            info,
            alive,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Removes the named segments that no live process created or opened, and
/// half-built ones whose builder died. Returns what it removed. One that a
/// process opens meanwhile is left alone: that process either keeps it,
/// or finds it gone (as if it had opened after the clean).
///
/// # Errors
/// If `/dev/shm` cannot be read.
pub fn clean() -> Result<Vec<ListedSegment>> {
    let mut removed = list()?;
    removed.retain(|s| s.is_stale() && remove_if_stale(&s.name));
    Ok(removed)
}

/// Removes `name`, which [`list`] found stale, if it still is. An opener
/// records itself in a segment under a shared lock of its file, and keeps
/// it only if its name still names it then (see `Segment::open_named`):
/// under an exclusive lock, a last look that finds nobody recorded, then
/// the removal, leave no opener with a segment whose name went meanwhile.
/// A segment that is being opened is left for the next clean.
fn remove_if_stale(name: &str) -> bool {
    let path = sys::shm_dir().join(format!("{PREFIX}{name}"));
    if name.starts_with(TMP_TAG) {
        // Half built: nobody opens it by this name.
        return std::fs::remove_file(path).is_ok();
    }
    let Ok(mut file) = open_existing(&path, false) else {
        return false;
    };
    if !matches!(
        sys::try_lock_file(&file, sys::FileLock::Exclusive),
        Ok(true)
    ) {
        return false;
    }
    let unused = read_info(name, &mut file).is_ok_and(|(info, _)| !info.in_use());
    // The lock goes with `file`, after the removal.
    unused && names(&path, &file) && std::fs::remove_file(&path).is_ok()
}

/// The pid in a temporary name `~tmp-PID-SEQ`.
fn tmp_builder_pid(name: &str) -> Option<u32> {
    name.strip_prefix(TMP_TAG)?.split('-').next()?.parse().ok()
}
