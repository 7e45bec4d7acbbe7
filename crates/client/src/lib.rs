//! raftkv-client: an async Rust client for the etcd v3 API, raftkv's or etcd's — what a
//! program would otherwise take the `etcd-client` crate for. `raftkvctl` (crate
//! `raftkvctl`) is a command line on top of it.
//!
//! - [`Client`] — the endpoints of a cluster, with clientv3's failover: reads move past an
//!   endpoint that cannot be reached or answers `Unavailable`, writes only past one that
//!   cannot be reached (a write is never sent twice). Typed calls for KV, Cluster and
//!   Maintenance; [`Client::connect_one`] for a call to one member.
//! - [`Txn`] — a transaction builder: compares, then the ops of each branch.
//! - Watches: [`Client::watch`] gives a [`WatchStream`] of one watcher's answers;
//!   [`Client::watch_session`] a [`WatchSession`], one stream of many watchers as clientv3
//!   multiplexes them. [`WatchOptions`] says what a watcher wants; sessions put fragmented
//!   answers back together and, when their member goes away, create their watchers again on
//!   another one from where they left off. [`WatchResponseExt`] reads an answer as
//!   clientv3 does (progress notification, the error of a canceled watch).
//! - Leases: [`Client::lease_grant`], [`Client::lease_revoke`],
//!   [`Client::lease_time_to_live`], [`Client::lease_leases`], [`Client::lease_keep_alive_once`],
//!   and [`LeaseKeepAlive`] streams from [`Client::lease_keep_alive`]; [`Client::put_with_lease`].
//! - Concurrency recipes (clientv3's `concurrency` package): a [`Session`] keeps a lease
//!   alive; a [`Mutex`] and an [`Election`] over it use etcd's keys and requests, so they
//!   share locks and elections with etcdctl and clientv3 programs. See [`concurrency`].
//! - Authentication: [`Client::with_credentials`] — a user and password; the client gets a
//!   token from `Auth/Authenticate`, sends it with every request and gets a new one when a
//!   member refuses it, as clientv3 does; see [`auth`].
//! - [`TlsConfig`] — TLS for `https://` endpoints (a CA, a client certificate, or none
//!   verified), given with [`Client::with_tls`]; see [`tls`].
//! - [`Error`] — what a call can fail with; [`Error::code`] and the message are etcd's.
//!
//! ```no_run
//! # async fn demo() -> Result<(), raftkv_client::Error> {
//! use raftkv_client::{Client, Compare, Txn, TxnOp};
//! let client = Client::new(["127.0.0.1:2379", "127.0.0.1:22379"]);
//! client.put("greeting", "hello").await?;
//! let kv = client.get("greeting").await?;
//! let swapped = client
//!     .txn(
//!         Txn::new()
//!             .when([Compare::value_equals("greeting", "hello")])
//!             .then([TxnOp::put("greeting", "bye")]),
//!     )
//!     .await?;
//! # let _ = (kv, swapped);
//! use raftkv_client::WatchOptions;
//! let mut watch = client.watch("greeting", WatchOptions::new().prev_kv()).await?;
//! while let Some(answer) = watch.next().await {
//!     for event in answer?.events {
//!         println!("{:?} {:?}", event.r#type(), event.kv);
//!     }
//! }
//! # Ok(())
//! # }
//! ```

#![deny(missing_docs)]

pub mod auth;
#[cfg(test)]
mod auth_tests;
pub mod concurrency;
mod connection;
mod error;
mod lease;
mod ops;
pub mod tls;
mod txn;
mod watch;

pub use concurrency::{
    ConcurrencyError, Election, Mutex, Observe, Session, SessionOptions, lease_hex,
};
pub use connection::{AuthChannel, Client, Connection};
pub use error::Error;
pub use lease::{LEASE_NOT_FOUND, LeaseKeepAlive, lease_not_found};
pub use tls::TlsConfig;
pub use txn::{Compare, Txn, TxnOp};
pub use watch::{
    BROADCAST_WATCH_ID, WatchOptions, WatchResponseExt, WatchSession, WatchStream, prefix_end,
};

/// The etcd v3 API's messages, as this client sends and receives them.
pub use raftkv_proto::etcdserverpb as proto;
/// `Event`, as watches return it.
pub use raftkv_proto::mvccpb::Event;
/// `KeyValue`, as ranges and watches return it.
pub use raftkv_proto::mvccpb::KeyValue;
