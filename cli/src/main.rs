//! The `multiproc` command: benchmarks, a chaos soak, a manager server and
//! shared-memory housekeeping.

mod bench;
mod manager;
mod shm;
mod soak;

use clap::{Parser, Subcommand};

/// Python's multiprocessing for Rust: measure it, and look after its shared memory.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Measure the shared layer beside the OS limit and Python's multiprocessing.
    Bench(bench::Options),
    /// List or clean up this crate's named shared-memory segments.
    Shm {
        #[command(subcommand)]
        action: shm::Action,
    },
    /// Kill workers at random while they hammer every primitive; check that nothing breaks.
    Soak(soak::Options),
    /// Run a manager server for remote clients.
    Manager {
        #[command(subcommand)]
        action: manager::Action,
    },
}

/// A failed command: its message (with its causes) on stderr, exit code 1.
fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Bench(options) => bench::run(&options),
        Command::Shm { action } => shm::run(action),
        Command::Manager { action } => manager::run(action),
        Command::Soak(options) => soak::run(&options),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("multiproc: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
