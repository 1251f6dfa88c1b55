//! The `multiproc` command-line tool's shared code: the OS baselines that
//! `multiproc bench` and the criterion benches (`cargo bench`) measure the
//! `multiproc` library against. Not part of the library: a crate that
//! depends on `multiproc` compiles none of it.

#![warn(missing_docs)]

pub mod baseline;
