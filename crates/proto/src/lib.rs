//! raftkv-proto: Rust types and tonic services generated from `proto/`.
//!
//! - [`etcdserverpb`] — the etcd v3 KV, Cluster and Maintenance services and their messages,
//!   wire-compatible with etcd 3.4 (same package, names and field numbers).
//! - [`mvccpb`] — `KeyValue` and `Event`.
//! - [`authpb`] — the auth store's `User`, `Role` and `Permission`.
//! - [`v3lockpb`], [`v3electionpb`] — etcd's `Lock` and `Election` services.
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
    include!(concat!(env!("OUT_DIR"), "/mvccpb.serde.rs"));
}

/// etcd's `authpb` package: users, roles and key permissions of the auth store.
pub mod authpb {
    tonic::include_proto!("authpb");
    include!(concat!(env!("OUT_DIR"), "/authpb.serde.rs"));
}

/// etcd's `etcdserverpb` package: the KV, Cluster and Maintenance services.
pub mod etcdserverpb {
    tonic::include_proto!("etcdserverpb");
    include!(concat!(env!("OUT_DIR"), "/etcdserverpb.serde.rs"));
}

/// etcd's `v3lockpb` package: the `Lock` service (locks held by a key under a lease).
pub mod v3lockpb {
    tonic::include_proto!("v3lockpb");
    include!(concat!(env!("OUT_DIR"), "/v3lockpb.serde.rs"));
}

/// etcd's `v3electionpb` package: the `Election` service (campaign, proclaim, observe).
pub mod v3electionpb {
    tonic::include_proto!("v3electionpb");
    include!(concat!(env!("OUT_DIR"), "/v3electionpb.serde.rs"));
}

/// The gRPC health checking protocol (`grpc.health.v1`), served on the client port as etcd
/// serves it.
pub mod grpc_health_v1 {
    tonic::include_proto!("grpc.health.v1");
}

/// raftkv's own messages, not part of the etcd API.
pub mod raftkvpb {
    tonic::include_proto!("raftkvpb");
}
