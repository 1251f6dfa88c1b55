//! `multiproc manager serve`.

use std::path::PathBuf;

use clap::Subcommand;
use multiproc::conn::Address;

#[derive(Subcommand)]
pub enum Action {
    /// Serve managed dicts, lists and namespaces until a client shuts the server down.
    Serve {
        /// Where to listen: unix:PATH or tcp:HOST:PORT (port 0: any free port).
        #[arg(long)]
        listen: String,
        /// A file holding the authkey that clients must know (its bytes, as they are).
        #[arg(long)]
        authkey_file: PathBuf,
    },
}

pub fn run(action: Action) -> multiproc::Result<()> {
    let Action::Serve {
        listen,
        authkey_file,
    } = action;
    let address: Address = listen.parse()?;
    let key = std::fs::read(&authkey_file).map_err(|e| {
        multiproc::Error::InvalidArgument(format!("authkey file {}: {e}", authkey_file.display()))
    })?;
    if key.is_empty() {
        return Err(multiproc::Error::InvalidArgument(
            "the authkey file is empty".into(),
        ));
    }
    multiproc::manager::serve(&address, &key, |bound| println!("serving on {bound}"))?;
    Ok(())
}
