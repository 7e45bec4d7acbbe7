//! raftkv-storage: everything raftkv keeps on disk, with no dependency on openraft (the
//! raft crate adapts these types to openraft's storage traits).
//!
//! - [`mvcc`] — etcd's multi-version key-value model on sled: revisions, tombstones,
//!   history until compaction, Range / Put / DeleteRange / Txn / Compact with etcd's
//!   semantics and errors, and the applied Raft log id stored atomically with the data.
//! - [`log`] — the Raft log and vote: a write-ahead log of preallocated segment files
//!   (`wal.rs`) whose appends are on disk (fdatasync) before they are reported flushed,
//!   with group commit.
//! - [`snapshot`] — point-in-time snapshot files of the MVCC state: header, blocks encoded
//!   with `raftkv-codec`, SHA-256 trailer (the layout `etcdctl snapshot save` accepts).
//! - [`etcd`] — etcd's own snapshot files (bbolt): their status as etcdctl reports it, and
//!   their import into a store, revisions, leases and users kept.
//! - [`values`] — value segments: append-only files for put values outside sled, with
//!   CRC-checked pointers and a durable position; the store keeps values of 64 bytes or more there.
//! - [`layout`] — where a member's files live under `--data-dir`, and its identity file.
//! - [`bootstrap`] — `--initial-cluster`, parsed and checked for the member it describes.
//! - [`error`] — error types; `MvccError` displays etcd's exact messages.

#![deny(missing_docs)]

pub mod bootstrap;
pub mod error;
pub mod etcd;
pub mod layout;
mod legacy_wal;
pub mod log;
pub mod mvcc;
pub mod snapshot;
mod sort;
pub mod values;
mod wal;

pub use error::{ErrorCode, MvccError, SnapshotError};
pub use mvcc::{AppliedState, Compactor, MvccConfig, MvccStore, PinnedPoint};
