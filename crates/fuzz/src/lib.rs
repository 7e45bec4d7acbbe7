//! raftkv-fuzz: one fuzz target per decoder of bytes raftkv takes from a client, a peer, a
//! file or the disk, and a driver that runs them on the stable toolchain.
//!
//! Every target takes arbitrary bytes and must neither panic nor break an invariant of the
//! decoder it exercises (what decodes encodes back to the same thing; a refused input is an
//! error value; what a state machine accepts applies without a storage failure). Each comes
//! with seeds built from the same messages and files the tests use.
//!
//! - [`targets`] — the targets and their seeds.
//! - [`driver`] — a mutation fuzzer (bit flips, splices, length tweaks, interesting values)
//!   for any toolchain: `cargo test -p raftkv-fuzz` runs every target for a bounded time
//!   (`RAFTKV_FUZZ_SECONDS`, default 2 per target); `raftkv-fuzz run <target> --seconds N`
//!   runs one for longer.
//! - The coverage-guided way, libFuzzer on the stable toolchain with LLVM's sanitizer
//!   coverage: `scripts/fuzz [target] [seconds]` (the `libfuzzer` feature and binary).

#![deny(missing_docs)]

pub mod driver;
pub mod targets;

pub use targets::{Target, find, targets};
