//! raftkv-proto: Rust types and tonic services generated from `proto/`.
//!
//! - [`etcdserverpb`] — the etcd v3 KV, Cluster and Maintenance services and their messages,
//!   wire-compatible with etcd 3.4 (same package, names and field numbers).
//! - [`mvccpb`] — `KeyValue` and `Event`.
//! - [`raftkvpb`] — raftkv's own messages: the command a Raft log entry carries, and the
//!   member-to-member `Peer` service (Raft RPCs, write forwarding, read index).
//!
//! - [`codec`] — the gRPC codec of every generated service (prost behind a nesting bound),
//!   and [`codec::decode_bounded`], the way to decode protobuf from a log entry or a file.
//!
//! Clients use the `*_client` modules, servers implement the traits in the `*_server` ones.

#![allow(
    missing_docs,
    clippy::doc_lazy_continuation,
    clippy::large_enum_variant
)]

pub mod codec;

/// etcd's `mvccpb` package: stored key-value records.
pub mod mvccpb {
    tonic::include_proto!("mvccpb");
}

/// etcd's `etcdserverpb` package: the KV, Cluster and Maintenance services.
pub mod etcdserverpb {
    tonic::include_proto!("etcdserverpb");
}

/// raftkv's own messages, not part of the etcd API.
pub mod raftkvpb {
    tonic::include_proto!("raftkvpb");
}
