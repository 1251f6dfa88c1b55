//! `multiproc manager serve`.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use anyhow::{bail, Context as _, Result};
use clap::Subcommand;
use multiproc::conn::Address;

#[derive(Subcommand)]
pub enum Action {
    /// Serve managed objects (dicts, lists, namespaces, queues, values, arrays, events, locks,
    /// semaphores, barriers, conditions) to Rust and Python clients until one shuts the server down.
    Serve {
        /// Where to listen: unix:PATH or tcp:HOST:PORT (port 0: any free port).
        #[arg(long)]
        listen: String,
        /// A file holding the authkey that clients must know (its bytes, as
        /// they are). Refused if other users may read it (as ssh refuses
        /// such private keys): `chmod 600` it.
        #[arg(long)]
        authkey_file: PathBuf,
        /// Use an authkey file that other users may read, with a warning.
        #[arg(long)]
        allow_readable_authkey: bool,
        /// NAME=TYPEID: serve NAME as a typeid creating a TYPEID object
        /// (dict, list, Namespace, Queue, JoinableQueue, Event, Lock, RLock,
        /// Semaphore, BoundedSemaphore or Condition: one made without
        /// arguments), for Python's
        /// remote-manager pattern (`BaseManager.register('NAME')` in the
        /// client, then `m.NAME()`). Repeatable.
        #[arg(long = "object", value_name = "NAME=TYPEID", value_parser = parse_object)]
        objects: Vec<(String, String)>,
    },
}

/// Serves until a client shuts the server down.
pub fn run(action: Action) -> Result<()> {
    let Action::Serve {
        listen,
        authkey_file,
        allow_readable_authkey,
        objects,
    } = action;
    let address: Address = listen.parse()?;
    let file_error = || format!("authkey file {}", authkey_file.display());
    let mode = std::fs::metadata(&authkey_file)
        .with_context(file_error)?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        let why = format!(
            "authkey file {} is readable or writable by others (mode {:o}): \
             anyone who reads the key can read, change and shut down every object",
            authkey_file.display(),
            mode & 0o777
        );
        if !allow_readable_authkey {
            bail!("{why}; chmod 600 it (or pass --allow-readable-authkey)");
        }
        eprintln!("multiproc: warning: {why}");
    }
    let key = std::fs::read(&authkey_file).with_context(file_error)?;
    if key.is_empty() {
        bail!("the authkey file is empty");
    }
    // The server logs what it refuses (such as running out of descriptors).
    let _ = multiproc::process::log_to_stderr(log::LevelFilter::Warn);
    multiproc::manager::serve_registered(&address, &key, &objects, |bound| {
        println!("serving on {bound}")
    })?;
    Ok(())
}

/// `NAME=TYPEID`.
fn parse_object(s: &str) -> Result<(String, String)> {
    match s.split_once('=') {
        Some((name, typeid)) if !name.is_empty() && !typeid.is_empty() => {
            Ok((name.to_string(), typeid.to_string()))
        }
        _ => bail!("expected NAME=TYPEID (such as get_dict=dict), not {s:?}"),
    }
}
