//! raftkv-codec: unit-repetition compression, the codec of raftkv's snapshot files.
//!
//! It starts from the "string compression" problem: cut a string from the front into units
//! of `k` characters, write each run of `c > 1` equal units as `c` followed by the unit, and
//! find the `k` that gives the shortest result. [`shortest_compressed_len`] solves exactly
//! that problem. [`compress`] and [`decompress`] carry the idea over to arbitrary bytes, with
//! a self-describing, checksummed frame that round-trips every input.
//!
//! Modules:
//! - `seed` — the problem itself, exact, in O(n log n) with a suffix array.
//! - `block` — one block's tokens (literal runs and unit repeats) and the encoder that finds
//!   the repeats.
//! - `frame` — magic, version, lengths, raw-or-tokens blocks and the CRC-32 around them.
//! - [`varint`] — LEB128 integers used by both (and by raftkv-storage's columns).
//! - `error` — [`DecodeError`], every way a frame can be refused.
//! - [`samples`] — the deterministic inputs the tests and benchmarks measure.
//!
//! The byte format is documented in `docs/snapshot-format.md` (codec section). No `unsafe`.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod block;
mod error;
mod frame;
pub mod samples;
mod seed;
pub mod varint;

pub use error::DecodeError;
pub use frame::{BLOCK_EXPONENT, MAGIC, VERSION, compress, decompress};
pub use seed::shortest_compressed_len;
