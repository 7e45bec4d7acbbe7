//! raftkv: an embeddable, etcd-compatible Raft key-value store.
//!
//! Run members as processes (`raftkv`, `raftkv local --size 3`) and talk to them with
//! etcdctl, or embed a member in your own tokio program:
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let mut node = raftkv::NodeConfig::new("solo", "solo.raftkv".into());
//! node.client_urls = vec!["http://127.0.0.1:2379".into()];
//! node.peer_urls = vec!["http://127.0.0.1:2380".into()];
//! node.initial_cluster = [("solo".to_string(), node.peer_urls.clone())].into();
//! let member = raftkv::Member::start(raftkv::ServerConfig::new(node)).await?;
//! let kv = member.kv();
//! kv.put("greeting", "hello").await?;
//! assert_eq!(kv.get("greeting").await?.map(|kv| kv.value.to_vec()), Some(b"hello".to_vec()));
//! member.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! The member still serves the etcd API on its client URLs and talks Raft to its peers; the
//! [`Kv`] handle calls the same logic in-process, without the network.
//!
//! - [`Member`], [`Kv`], [`IntoBytes`] — the embedding API.
//! - [`codec`] — unit-repetition compression used by snapshot files.
//! - [`proto`], [`storage`], [`raft`], [`server`] — the crates underneath, re-exported.

#![deny(missing_docs)]

pub use raftkv_codec as codec;
pub use raftkv_proto as proto;
pub use raftkv_raft as raft;
pub use raftkv_raft::{NodeConfig, NodeError};
pub use raftkv_server as server;
pub use raftkv_server::ServerConfig;
pub use raftkv_storage as storage;

use raftkv_proto::etcdserverpb::{
    DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse, RangeRequest, RangeResponse,
    TxnRequest, TxnResponse,
};
use raftkv_proto::mvccpb::KeyValue;

/// A member running inside this program.
pub struct Member {
    server: raftkv_server::Server,
}

impl Member {
    /// Starts a member (bootstrapping, joining or restarting as its data dir says) and serves
    /// the etcd API on its client URLs.
    pub async fn start(config: ServerConfig) -> anyhow::Result<Self> {
        Ok(Self {
            server: raftkv_server::Server::start(config).await?,
        })
    }

    /// A handle for reads and writes that does not go through the network.
    pub fn kv(&self) -> Kv {
        Kv {
            api: self.server.api().clone(),
        }
    }

    /// This member's id.
    pub fn id(&self) -> u64 {
        self.server.node().id()
    }

    /// Stops gracefully: in-flight requests finish, leadership is handed over, data flushed.
    /// The data directory is released once every [`Kv`] handle is dropped as well.
    pub async fn shutdown(self) {
        self.server.shutdown().await
    }
}

/// In-process access to the etcd KV API of a [`Member`]: the same semantics, errors and
/// consistency as over gRPC (reads are linearizable unless the request says otherwise).
#[derive(Clone)]
pub struct Kv {
    api: raftkv_server::EtcdApi,
}

impl Kv {
    /// Puts `value` at `key`.
    pub async fn put(
        &self,
        key: impl IntoBytes,
        value: impl IntoBytes,
    ) -> Result<PutResponse, NodeError> {
        self.api
            .put(PutRequest {
                key: key.into_bytes(),
                value: value.into_bytes(),
                ..Default::default()
            })
            .await
    }

    /// The current value of `key`, if any (linearizable).
    pub async fn get(&self, key: impl IntoBytes) -> Result<Option<KeyValue>, NodeError> {
        let resp = self
            .api
            .range(RangeRequest {
                key: key.into_bytes(),
                ..Default::default()
            })
            .await?;
        Ok(resp.kvs.into_iter().next())
    }

    /// Deletes `key`; returns how many keys were deleted (0 or 1).
    pub async fn delete(&self, key: impl IntoBytes) -> Result<i64, NodeError> {
        let resp: DeleteRangeResponse = self
            .api
            .delete_range(DeleteRangeRequest {
                key: key.into_bytes(),
                ..Default::default()
            })
            .await?;
        Ok(resp.deleted)
    }

    /// etcd's Range, with every option.
    pub async fn range(&self, req: RangeRequest) -> Result<RangeResponse, NodeError> {
        self.api.range(req).await
    }

    /// etcd's Txn.
    pub async fn txn(&self, req: TxnRequest) -> Result<TxnResponse, NodeError> {
        self.api.txn(req).await
    }
}

/// The byte buffer type of keys and values (`bytes::Bytes`).
pub use bytes::Bytes;

/// Keys and values accepted by [`Kv`]: strings, byte slices, vectors, [`Bytes`].
pub trait IntoBytes {
    /// The bytes.
    fn into_bytes(self) -> Bytes;
}

impl IntoBytes for &str {
    fn into_bytes(self) -> Bytes {
        Bytes::copy_from_slice(self.as_bytes())
    }
}

impl IntoBytes for &[u8] {
    fn into_bytes(self) -> Bytes {
        Bytes::copy_from_slice(self)
    }
}

impl IntoBytes for Vec<u8> {
    fn into_bytes(self) -> Bytes {
        Bytes::from(self)
    }
}

impl IntoBytes for String {
    fn into_bytes(self) -> Bytes {
        Bytes::from(String::into_bytes(self))
    }
}

impl IntoBytes for Bytes {
    fn into_bytes(self) -> Bytes {
        self
    }
}
