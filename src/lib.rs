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
//! [`Kv`] handle calls the same logic in-process, without the network. A program that talks
//! to members over the network uses [`Client`].
//!
//! - [`Member`], [`Kv`] (KV, leases, locks, elections), [`Watch`], [`Observe`],
//!   [`IntoBytes`], [`Error`] — the embedding API, with its configuration ([`ServerConfig`]
//!   around [`NodeConfig`]).
//! - [`Client`] (crate [`client`]) — the async client of a cluster's endpoints, with TLS
//!   ([`Client::with_tls`]) and credentials ([`Client::with_credentials`]).
//! - [`proto`], [`lock_proto`], [`election_proto`] — the etcd v3 messages both take and
//!   return.

#![deny(missing_docs)]

pub use raftkv_client as client;
pub use raftkv_client::Client;
pub use raftkv_proto::etcdserverpb as proto;
pub use raftkv_proto::mvccpb::{Event, KeyValue};
/// etcd's `Election` messages ([`Kv::campaign`] and the rest).
pub use raftkv_proto::v3electionpb as election_proto;
/// etcd's `Lock` messages ([`Kv::lock`], [`Kv::unlock`]).
pub use raftkv_proto::v3lockpb as lock_proto;
pub use raftkv_raft::NodeConfig;
pub use raftkv_server::ServerConfig;
/// TLS on `https://` client URLs ([`ServerConfig::client_tls`]).
pub use raftkv_server::tls::ClientTls;
/// TLS on an `https://` peer URL and towards `https://` peers ([`ServerConfig::peer_tls`]).
pub use raftkv_server::tls::PeerTls;
/// gRPC status codes, as [`Error::code`] gives them.
pub use tonic::Code;

use raftkv_raft::NodeError;

use raftkv_proto::etcdserverpb::watch_request::RequestUnion;
use raftkv_proto::etcdserverpb::{
    DeleteRangeRequest, DeleteRangeResponse, LeaseGrantRequest, LeaseGrantResponse,
    LeaseRevokeRequest, LeaseRevokeResponse, LeaseTimeToLiveRequest, LeaseTimeToLiveResponse,
    PutRequest, PutResponse, RangeRequest, RangeResponse, TxnRequest, TxnResponse,
    WatchCancelRequest, WatchCreateRequest, WatchProgressRequest, WatchRequest, WatchResponse,
};
use raftkv_proto::v3electionpb::{
    CampaignRequest, CampaignResponse, LeaderKey, LeaderRequest, LeaderResponse, ProclaimRequest,
    ProclaimResponse, ResignRequest, ResignResponse,
};
use raftkv_proto::v3lockpb::{LockRequest, LockResponse, UnlockRequest, UnlockResponse};
use tokio::sync::mpsc;

/// What the embedding API fails with.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The member could not start (its configuration, data dir or ports).
    #[error("{0}")]
    Start(String),
    /// A request was refused or could not be served, with etcd's code and exact message.
    #[error("{message}")]
    Request {
        /// The gRPC code etcd answers with.
        code: Code,
        /// etcd's message.
        message: String,
    },
}

impl Error {
    /// The gRPC code of a request's error.
    pub fn code(&self) -> Option<Code> {
        match self {
            Error::Request { code, .. } => Some(*code),
            Error::Start(_) => None,
        }
    }
}

impl Error {
    fn from_status(status: tonic::Status) -> Self {
        Error::Request {
            code: status.code(),
            message: status.message().to_string(),
        }
    }
}

impl From<NodeError> for Error {
    fn from(e: NodeError) -> Self {
        let status = tonic::Status::from(e);
        Error::Request {
            code: status.code(),
            message: status.message().to_string(),
        }
    }
}

/// A member running inside this program.
pub struct Member {
    server: raftkv_server::Server,
}

impl Member {
    /// Starts a member (bootstrapping, joining or restarting as its data dir says) and serves
    /// the etcd API on its client URLs.
    pub async fn start(config: ServerConfig) -> Result<Self, Error> {
        let server = raftkv_server::Server::start(config)
            .await
            .map_err(|e| Error::Start(format!("{e:#}")))?;
        Ok(Self { server })
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
    ) -> Result<PutResponse, Error> {
        let req = PutRequest {
            key: key.into_bytes(),
            value: value.into_bytes(),
            ..Default::default()
        };
        Ok(self.api.put(req).await?)
    }

    /// The current value of `key`, if any (linearizable).
    pub async fn get(&self, key: impl IntoBytes) -> Result<Option<KeyValue>, Error> {
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
    pub async fn delete(&self, key: impl IntoBytes) -> Result<i64, Error> {
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
    pub async fn range(&self, req: RangeRequest) -> Result<RangeResponse, Error> {
        Ok(self.api.range(req).await?)
    }

    /// etcd's Txn.
    pub async fn txn(&self, req: TxnRequest) -> Result<TxnResponse, Error> {
        Ok(self.api.txn(req).await?)
    }

    /// Puts `value` at `key`, attached to `lease` (the key goes with the lease).
    pub async fn put_with_lease(
        &self,
        key: impl IntoBytes,
        value: impl IntoBytes,
        lease: i64,
    ) -> Result<PutResponse, Error> {
        let req = PutRequest {
            key: key.into_bytes(),
            value: value.into_bytes(),
            lease,
            ..Default::default()
        };
        Ok(self.api.put(req).await?)
    }

    /// Grants a lease of `ttl` seconds (`id` 0: the member picks the id). etcd's minimum TTL
    /// applies; the answer gives the TTL granted.
    pub async fn lease_grant(&self, ttl: i64, id: i64) -> Result<LeaseGrantResponse, Error> {
        Ok(self.api.lease_grant(LeaseGrantRequest { ttl, id }).await?)
    }

    /// Revokes lease `id`, deleting every key attached to it in one revision.
    pub async fn lease_revoke(&self, id: i64) -> Result<LeaseRevokeResponse, Error> {
        Ok(self.api.lease_revoke(LeaseRevokeRequest { id }).await?)
    }

    /// Renews lease `id` once (through the leader, as a keep-alive is); the TTL it has again,
    /// or 0 if the lease does not exist (any more).
    pub async fn lease_keep_alive(&self, id: i64) -> Result<i64, Error> {
        Ok(self.api.lease_keep_alive(id).await?.ttl)
    }

    /// Lease `id`'s granted and remaining TTL (-1 if it does not exist), with its keys if
    /// `keys`.
    pub async fn lease_time_to_live(
        &self,
        id: i64,
        keys: bool,
    ) -> Result<LeaseTimeToLiveResponse, Error> {
        Ok(self
            .api
            .lease_time_to_live(LeaseTimeToLiveRequest { id, keys })
            .await?)
    }

    /// The ids of the leases this member knows.
    pub async fn leases(&self) -> Result<Vec<i64>, Error> {
        Ok(self
            .api
            .lease_leases()
            .await?
            .leases
            .into_iter()
            .map(|l| l.id)
            .collect())
    }

    /// etcd's `Lock`: waits until this caller holds lock `name`, as long as `lease` lives
    /// (0: a 60 s lease of its own that nobody renews). The answer's key is the proof of
    /// holding (compare its creation revision in a txn to fence writes); [`Kv::unlock`] it.
    pub async fn lock(&self, name: impl IntoBytes, lease: i64) -> Result<LockResponse, Error> {
        let req = LockRequest {
            name: name.into_bytes(),
            lease,
        };
        self.api.lock(req).await.map_err(Error::from_status)
    }

    /// etcd's `Unlock`: deletes the key [`Kv::lock`] answered.
    pub async fn unlock(&self, key: impl IntoBytes) -> Result<UnlockResponse, Error> {
        let req = UnlockRequest {
            key: key.into_bytes(),
        };
        self.api.unlock(req).await.map_err(Error::from_status)
    }

    /// etcd's `Campaign`: waits until this caller leads election `name` with `value`, as
    /// long as `lease` lives. The answer's leader key is what [`Kv::proclaim`] and
    /// [`Kv::resign`] take.
    pub async fn campaign(
        &self,
        name: impl IntoBytes,
        lease: i64,
        value: impl IntoBytes,
    ) -> Result<CampaignResponse, Error> {
        let req = CampaignRequest {
            name: name.into_bytes(),
            lease,
            value: value.into_bytes(),
        };
        self.api.campaign(req).await.map_err(Error::from_status)
    }

    /// etcd's `Proclaim`: a new value from the leader ("election: not leader" once it is not).
    pub async fn proclaim(
        &self,
        leader: LeaderKey,
        value: impl IntoBytes,
    ) -> Result<ProclaimResponse, Error> {
        let req = ProclaimRequest {
            leader: Some(leader),
            value: value.into_bytes(),
        };
        self.api.proclaim(req).await.map_err(Error::from_status)
    }

    /// etcd's `Resign`: gives up leadership (nothing happens if it was already lost).
    pub async fn resign(&self, leader: LeaderKey) -> Result<ResignResponse, Error> {
        let req = ResignRequest {
            leader: Some(leader),
        };
        self.api.resign(req).await.map_err(Error::from_status)
    }

    /// etcd's `Leader`: the current leader's key and value ("election: no leader" if none).
    pub async fn leader(&self, name: impl IntoBytes) -> Result<LeaderResponse, Error> {
        let req = LeaderRequest {
            name: name.into_bytes(),
        };
        self.api.leader(req).await.map_err(Error::from_status)
    }

    /// etcd's `Observe`: the leader's value now, then every later value of every leader, in
    /// order. Drop the stream to stop.
    pub fn observe(&self, name: impl IntoBytes) -> Observe {
        let req = LeaderRequest {
            name: name.into_bytes(),
        };
        Observe {
            answers: self.api.observe(req),
        }
    }

    /// Opens a watch stream on this member, with no watcher yet: etcd's Watch in-process,
    /// from this member's applied state. Drop it to end its watchers.
    pub fn watch_stream(&self) -> Watch {
        let (requests, rx) = mpsc::channel(16);
        let answers = self
            .api
            .watch(tokio_stream::wrappers::ReceiverStream::new(rx), false);
        Watch { requests, answers }
    }

    /// Watches `key` (or the range `[key, range_end)`; `range_end` `"\0"` for every key from
    /// `key`, empty for the key alone) from `start_revision` (0: from the next write).
    pub async fn watch(
        &self,
        key: impl IntoBytes,
        range_end: impl IntoBytes,
        start_revision: i64,
    ) -> Result<Watch, Error> {
        let watch = self.watch_stream();
        watch
            .create(WatchCreateRequest {
                key: key.into_bytes(),
                range_end: range_end.into_bytes(),
                start_revision,
                ..Default::default()
            })
            .await?;
        Ok(watch)
    }
}

/// An in-process watch stream of a [`Member`] (see [`Kv::watch_stream`]): the requests and
/// answers of etcd's `Watch`, many watchers on one stream.
pub struct Watch {
    requests: mpsc::Sender<Result<WatchRequest, tonic::Status>>,
    answers: mpsc::Receiver<Result<WatchResponse, tonic::Status>>,
}

impl Watch {
    async fn send(&self, request: RequestUnion) -> Result<(), Error> {
        self.requests
            .send(Ok(WatchRequest {
                request_union: Some(request),
            }))
            .await
            .map_err(|_| Error::Request {
                code: Code::Unavailable,
                message: "watch stream closed".into(),
            })
    }

    /// Adds a watcher; its `created` answer comes before any of its events.
    pub async fn create(&self, req: WatchCreateRequest) -> Result<(), Error> {
        self.send(RequestUnion::CreateRequest(req)).await
    }

    /// Cancels watcher `watch_id`.
    pub async fn cancel(&self, watch_id: i64) -> Result<(), Error> {
        self.send(RequestUnion::CancelRequest(WatchCancelRequest { watch_id }))
            .await
    }

    /// Asks for a progress answer (the member's current revision).
    pub async fn request_progress(&self) -> Result<(), Error> {
        self.send(RequestUnion::ProgressRequest(WatchProgressRequest {}))
            .await
    }

    /// The next answer: created / canceled notices, events, progress; `None` once the
    /// member stopped.
    pub async fn next(&mut self) -> Option<WatchResponse> {
        self.answers.recv().await?.ok()
    }
}

/// An election's proclamations, in-process (see [`Kv::observe`]).
pub struct Observe {
    answers: mpsc::Receiver<Result<LeaderResponse, tonic::Status>>,
}

impl Observe {
    /// The next proclamation; `None` once the observation ended (the member stopped).
    pub async fn next(&mut self) -> Option<LeaderResponse> {
        self.answers.recv().await?.ok()
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
