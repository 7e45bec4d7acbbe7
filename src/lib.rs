//! raftkv: an embeddable, etcd-compatible Raft key-value store.
//!
//! This facade crate is what an embedding program depends on. Today it re-exports the
//! snapshot codec; the embedding API (start a member from a config, get a local KV handle,
//! shut it down) joins it with the raft and server crates. The workspace layout is described
//! in `docs/architecture.md` and the README.
//!
//! - [`codec`] — unit-repetition compression used by snapshot files.

#![deny(missing_docs)]

pub use raftkv_codec as codec;
