//! A small test runner for the test binaries that have their own `main`
//! (`harness = false` in Cargo.toml): those whose `main` must do something
//! before any test runs, such as calling `spawn_init` (a spawned child is
//! the test binary run again) or becoming a helper process when the binary
//! is run again as one.
//!
//! It takes what `cargo test` passes on (name filters, `--exact`, `--skip`,
//! `--list`, `--ignored`; other libtest options are accepted and ignored),
//! runs the chosen tests one after another, each on its own thread named
//! after it as libtest does (children started with `daemon(true)` die with
//! that thread), and prints libtest's lines. Output is not captured.

use std::io::Write;
use std::process::ExitCode;
use std::time::Instant;

/// One test: a function that passes by returning and fails by panicking.
pub struct Test {
    pub name: &'static str,
    pub run: fn(),
}

/// The [`Test`]s for the functions named, each named by its function.
#[allow(unused_macros)] // used by the harness = false binaries only
macro_rules! tests {
    ($($f:ident),* $(,)?) => {
        [$($crate::common::harness::Test { name: stringify!($f), run: $f }),*]
    };
}
#[allow(unused_imports)]
pub(crate) use tests;

/// libtest's options that take a value in the next argument.
const WITH_VALUE: &[&str] = &[
    "--test-threads",
    "--format",
    "--color",
    "--logfile",
    "--skip",
    "-Z",
    "--shuffle-seed",
];

/// Runs the tests that the command line selects; the exit code says
/// whether all passed (libtest's 101 if not).
pub fn run(tests: &[Test]) -> ExitCode {
    let mut filters = Vec::new();
    let mut skips = Vec::new();
    let (mut exact, mut list, mut only_ignored) = (false, false, false);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--exact" => exact = true,
            "--list" => list = true,
            "--ignored" => only_ignored = true,
            "--skip" => skips.extend(args.next()),
            flag if WITH_VALUE.contains(&flag) => {
                args.next();
            }
            flag if flag.starts_with('-') => {}
            _ => filters.push(arg.clone()),
        }
    }
    let matches = |name: &str, pattern: &str| {
        if exact {
            name == pattern
        } else {
            name.contains(pattern)
        }
    };
    let chosen: Vec<&Test> = tests
        .iter()
        // None of these tests is ignored.
        .filter(|_| !only_ignored)
        .filter(|t| filters.is_empty() || filters.iter().any(|f| matches(t.name, f)))
        .filter(|t| !skips.iter().any(|s| matches(t.name, s)))
        .collect();
    if list {
        for t in &chosen {
            println!("{}: test", t.name);
        }
        return ExitCode::SUCCESS;
    }
    println!("\nrunning {} tests", chosen.len());
    let start = Instant::now();
    let mut failed = Vec::new();
    for t in &chosen {
        print!("test {} ... ", t.name);
        let _ = std::io::stdout().flush();
        let outcome = std::thread::Builder::new()
            .name(t.name.to_owned())
            .spawn(t.run)
            .expect("start a test thread")
            .join();
        match outcome {
            Ok(()) => println!("ok"),
            Err(_) => {
                println!("FAILED");
                failed.push(t.name);
            }
        }
    }
    if !failed.is_empty() {
        println!("\nfailures:");
        for name in &failed {
            println!("    {name}");
        }
    }
    println!(
        "\ntest result: {}. {} passed; {} failed; 0 ignored; 0 measured; {} filtered out; finished in {:.2}s\n",
        if failed.is_empty() { "ok" } else { "FAILED" },
        chosen.len() - failed.len(),
        failed.len(),
        tests.len() - chosen.len(),
        start.elapsed().as_secs_f64(),
    );
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(101)
    }
}
