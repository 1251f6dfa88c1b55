//! `multiproc shm list|clean`.

use clap::Subcommand;
use multiproc::segment::{self, ListedSegment};

#[derive(Subcommand)]
pub enum Action {
    /// Show every named segment of this crate: name, size, contents, creator, whether in use.
    List,
    /// Remove the segments whose processes are all gone.
    Clean,
}

/// Lists or cleans up, as asked.
pub fn run(action: Action) -> anyhow::Result<()> {
    match action {
        Action::List => {
            let segments = segment::list()?;
            if segments.is_empty() {
                println!("no multiproc segments in /dev/shm");
                return Ok(());
            }
            println!(
                "{:<32} {:>12}  {:<24} {:>8}  STATE",
                "NAME", "BYTES", "HOLDS", "CREATOR"
            );
            for s in &segments {
                print_row(s);
            }
        }
        Action::Clean => {
            let removed = segment::clean()?;
            for s in &removed {
                println!("removed {}", s.name);
            }
            println!("{} stale segment(s) removed", removed.len());
        }
    }
    Ok(())
}

fn print_row(s: &ListedSegment) {
    let (holds, creator) = match &s.info {
        Ok(info) => {
            let holds = match info.kind {
                segment::ObjectKind::Value | segment::ObjectKind::RawValue => {
                    format!("{}<{}>", info.kind, info.elem_name)
                }
                segment::ObjectKind::Array | segment::ObjectKind::RawArray => {
                    format!("{}<{}>[{}]", info.kind, info.elem_name, info.len)
                }
                kind => kind.to_string(),
            };
            (holds, info.creator_pid.to_string())
        }
        Err(e) => (format!("unreadable: {e}"), "?".into()),
    };
    let state = if s.is_stale() {
        "stale (clean removes it)"
    } else if s.info.is_err() {
        "unreadable (kept)"
    } else {
        "in use"
    };
    println!(
        "{:<32} {:>12}  {:<24} {:>8}  {state}",
        s.name, s.size, holds, creator
    );
}
