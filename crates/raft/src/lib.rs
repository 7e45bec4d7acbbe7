//! raftkv-raft: consensus for raftkv on openraft (`=0.10.0-alpha.37`, kept inside this crate
//! so its alpha API never leaks into the others).
//!
//! - [`types`] — the openraft type configuration (one leader per term, u64 member ids,
//!   etcd commands as payloads) and the bincode encoding of Raft values.
//! - [`log_store`] — `RaftLogStorage` over raftkv-storage's WAL: flushed means fdatasynced.
//! - [`state_machine`] — `RaftStateMachine` over the MVCC store; snapshots as files.
//! - [`network`] — `RaftNetworkV2` over the tonic `Peer` service, one channel per peer,
//!   pipelined appends, snapshots streamed in chunks.
//! - `peer_service` — the server side of `Peer`.
//! - [`node`] — a running member: start/bootstrap/join, writes (forwarded to the leader),
//!   linearizable read barriers, membership changes, status, shutdown.
//! - [`config`] — the member's consensus settings and the ids derived from them.
//! - [`error`] — [`NodeError`], and its one mapping to a gRPC status with etcd's messages.

#![deny(missing_docs)]

pub mod config;
pub mod error;
pub mod log_store;
pub mod network;
pub mod node;
mod peer_service;
pub mod state_machine;
pub mod types;

pub use config::{ClusterState, NodeConfig};
pub use error::NodeError;
pub use node::{NodeStatus, RaftNode};
pub use state_machine::StateMachine;

/// Largest gRPC message between members (a batch of entries or a snapshot chunk).
pub const MAX_MESSAGE_BYTES: usize = 64 << 20;
