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
//! - [`serve`] — serving a port to untrusted clients or peers: descriptor limit, accept
//!   loop, connection cap, handshake timeout, and a byte budget for incoming messages.
//! - [`h2_authority`] — repairs the HTTP/2 `:authority` that Go clients send as a whole URL,
//!   which h2 would refuse, in the client port's byte stream.
//! - [`admission`] — the checks every peer message (and every peer's answer) passes before
//!   openraft sees it.
//! - [`disk`] — free space on the data dir's file system.
//! - [`space`] — what a member does as its disk fills (etcd's NOSPACE alarm, raised and
//!   cleared by itself).
//! - [`trace`] — request ids that follow one request across members in the logs.
//! - [`config`] — the member's consensus settings and the ids derived from them.
//! - [`error`] — [`NodeError`], and its one mapping to a gRPC status with etcd's messages.

#![deny(missing_docs)]

pub mod admission;
pub mod config;
pub mod disk;
pub mod error;
pub mod h2_authority;
pub mod log_store;
pub mod metrics;
pub mod network;
pub mod node;
mod peer_service;
pub mod serve;
pub mod space;
pub mod state_machine;
pub mod trace;
pub mod types;

pub use config::{ClusterState, NodeConfig, PeerTls};
pub use error::NodeError;
pub use node::{NodeStatus, RaftNode};
pub use state_machine::StateMachine;

/// The largest `--max-request-bytes` a member accepts: a command of that size, wrapped in a
/// log entry and then in a peer message, must fit both the WAL's entry limit and
/// [`MAX_MESSAGE_BYTES`].
pub const MAX_REQUEST_BYTES_LIMIT: usize = raftkv_storage::log::MAX_ENTRY_BYTES - (1 << 20);

/// Bytes of entries replication puts in one message (a single larger entry goes alone).
pub const REPLICATION_BATCH_BYTES: usize = 16 << 20;

/// Largest gRPC message between members: one batch of entries (at most the WAL's largest
/// entry, or [`REPLICATION_BATCH_BYTES`]) with room for the request around it.
pub const MAX_MESSAGE_BYTES: usize = raftkv_storage::log::MAX_ENTRY_BYTES + (1 << 20);

/// A compacted revision as etcd reports it in HashKV answers: etcd's store starts with
/// `compactMainRev` -1 ("never compacted"), raftkv's with 0.
pub fn etcd_compact_revision(compacted: i64) -> i64 {
    if compacted == 0 { -1 } else { compacted }
}
