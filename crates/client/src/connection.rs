//! Endpoints, connections and failover.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use raftkv_proto::etcdserverpb::auth_client::AuthClient;
use raftkv_proto::etcdserverpb::cluster_client::ClusterClient;
use raftkv_proto::etcdserverpb::kv_client::KvClient;
use raftkv_proto::etcdserverpb::lease_client::LeaseClient;
use raftkv_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use raftkv_proto::etcdserverpb::watch_client::WatchClient;
use tonic::transport::{Channel, Endpoint};

use crate::tls::ClientConfig;
use crate::{Error, TlsConfig};

/// The largest response accepted (a range of many large values, a snapshot chunk).
const MAX_RESPONSE_BYTES: usize = 64 << 20;

/// A cluster's client endpoints, and how long to wait for them: etcdctl's `--endpoints`,
/// `--dial-timeout` and `--command-timeout`. Cheap to clone; connects per call.
#[derive(Debug, Clone)]
pub struct Client {
    endpoints: Vec<String>,
    dial_timeout: Duration,
    command_timeout: Duration,
    require_leader: bool,
    /// TLS for endpoints without a scheme and for `https://` ones (see [`Client::with_tls`]).
    tls: Option<Arc<ClientConfig>>,
}

impl Client {
    /// A client of `endpoints` (`host:port` or URLs), with etcdctl's timeouts (2 s to dial,
    /// 5 s per call).
    pub fn new<I, S>(endpoints: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            dial_timeout: Duration::from_secs(2),
            command_timeout: Duration::from_secs(5),
            require_leader: false,
            tls: None,
        }
    }

    /// The same client over TLS, as clientv3 with a TLS config: `https://` endpoints and
    /// endpoints without a scheme use `tls`; `http://` endpoints stay plaintext. (Without a
    /// TLS config, `https://` endpoints still use TLS, trusting the system's CAs.)
    pub fn with_tls(self, tls: &TlsConfig) -> Result<Self, Error> {
        Ok(self.with_rustls(tls.client_config()?))
    }

    /// [`Client::with_tls`] with a configuration already built
    /// ([`TlsConfig::client_config`]).
    pub fn with_rustls(mut self, tls: Arc<ClientConfig>) -> Self {
        self.tls = Some(tls);
        self
    }

    /// The same client with other timeouts.
    pub fn with_timeouts(mut self, dial: Duration, command: Duration) -> Self {
        self.dial_timeout = dial;
        self.command_timeout = command;
        self
    }

    /// The same client, with watch streams that require a leader (or not): etcd's
    /// `hasleader` metadata, which clientv3's `WithRequireLeader` (and so etcdctl) sets. A
    /// member without a leader then ends the stream with `etcdserver: no leader` instead of
    /// keeping it open.
    pub fn require_leader(mut self, require: bool) -> Self {
        self.require_leader = require;
        self
    }

    /// Whether watch streams require a leader (see [`Client::require_leader`]).
    pub fn requires_leader(&self) -> bool {
        self.require_leader
    }

    /// The endpoints, in the order they are tried.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// How long a call may take.
    pub fn command_timeout(&self) -> Duration {
        self.command_timeout
    }

    /// A connection to one member, within the dial timeout.
    pub async fn connect_one(&self, endpoint: &str) -> Result<Connection, Error> {
        Connection::connect_with_tls(endpoint, self.dial_timeout, self.tls.clone()).await
    }

    /// A connection to the first endpoint that answers.
    pub async fn connect(&self) -> Result<Connection, Error> {
        self.connect_from(0).await.map(|(_, connection)| connection)
    }

    /// A connection to the first endpoint that answers, trying them in order from `first`
    /// (wrapping around); with the index of the one that answered.
    pub(crate) async fn connect_from(&self, first: usize) -> Result<(usize, Connection), Error> {
        let mut last = Error::NoEndpoints;
        let n = self.endpoints.len();
        for i in (0..n).map(|k| (first + k) % n) {
            match self.connect_one(&self.endpoints[i]).await {
                Ok(connection) => return Ok((i, connection)),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Runs `call` as clientv3 runs a read: on the endpoints in turn, moving past one that
    /// cannot be reached or answers `Unavailable` (no leader, stopping…), within the
    /// command timeout.
    pub async fn read<T, F, Fut>(&self, call: F) -> Result<T, Error>
    where
        F: FnMut(Connection) -> Fut,
        Fut: Future<Output = Result<T, tonic::Status>>,
    {
        self.failover(true, call).await
    }

    /// Runs `call` as clientv3 runs a write: moving to the next endpoint only when one
    /// cannot be reached (the request never left); an answer, even an error, is final.
    pub async fn write<T, F, Fut>(&self, call: F) -> Result<T, Error>
    where
        F: FnMut(Connection) -> Fut,
        Fut: Future<Output = Result<T, tonic::Status>>,
    {
        self.failover(false, call).await
    }

    async fn failover<T, F, Fut>(&self, retry_unavailable: bool, mut call: F) -> Result<T, Error>
    where
        F: FnMut(Connection) -> Fut,
        Fut: Future<Output = Result<T, tonic::Status>>,
    {
        let mut last = Error::NoEndpoints;
        for endpoint in &self.endpoints {
            let connection = match self.connect_one(endpoint).await {
                Ok(connection) => connection,
                Err(e) => {
                    last = e;
                    continue;
                }
            };
            match tokio::time::timeout(self.command_timeout, call(connection)).await {
                Err(_) => return Err(Error::Timeout),
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(status))
                    if retry_unavailable && status.code() == tonic::Code::Unavailable =>
                {
                    last = Error::Status(status);
                }
                Ok(Err(status)) => return Err(Error::Status(status)),
            }
        }
        Err(last)
    }
}

/// A connection to one member.
#[derive(Clone)]
pub struct Connection {
    channel: Channel,
    endpoint: String,
}

impl Connection {
    /// Connects to `endpoint` (`host:port` or a URL) within `dial_timeout`.
    pub async fn connect(endpoint: &str, dial_timeout: Duration) -> Result<Self, Error> {
        Self::connect_with_tls(endpoint, dial_timeout, None).await
    }

    /// [`Connection::connect`], over TLS as [`Client::with_tls`] says when `tls` is given.
    pub async fn connect_with_tls(
        endpoint: &str,
        dial_timeout: Duration,
        tls: Option<Arc<ClientConfig>>,
    ) -> Result<Self, Error> {
        let (url, tls) = match endpoint.split_once("://") {
            Some(("https", _)) => (
                endpoint.to_string(),
                Some(match tls {
                    Some(tls) => tls,
                    None => TlsConfig::new().client_config()?,
                }),
            ),
            Some(_) => (endpoint.to_string(), None),
            None if tls.is_some() => (format!("https://{endpoint}"), tls),
            None => (format!("http://{endpoint}"), None),
        };
        let target = Endpoint::from_shared(url)
            .map_err(|e| Error::InvalidEndpoint {
                endpoint: endpoint.to_string(),
                reason: e.to_string(),
            })?
            .connect_timeout(dial_timeout)
            .tcp_nodelay(true);
        let unreachable = |reason: String| Error::Unreachable {
            endpoint: endpoint.to_string(),
            reason,
        };
        let connect = target.connect_with_connector(crate::tls::connector(tls));
        match tokio::time::timeout(dial_timeout, connect).await {
            Ok(Ok(channel)) => Ok(Self {
                channel,
                endpoint: endpoint.to_string(),
            }),
            Ok(Err(e)) => Err(unreachable(e.to_string())),
            Err(_) => Err(unreachable("context deadline exceeded".into())),
        }
    }

    /// The endpoint this connection talks to.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The KV service.
    pub fn kv(&self) -> KvClient<Channel> {
        KvClient::new(self.channel.clone()).max_decoding_message_size(MAX_RESPONSE_BYTES)
    }

    /// The Maintenance service.
    pub fn maintenance(&self) -> MaintenanceClient<Channel> {
        MaintenanceClient::new(self.channel.clone()).max_decoding_message_size(MAX_RESPONSE_BYTES)
    }

    /// The Watch service (for a raw stream; [`Client::watch`] and [`Client::watch_session`]
    /// are the typed way).
    pub fn watch(&self) -> WatchClient<Channel> {
        WatchClient::new(self.channel.clone()).max_decoding_message_size(MAX_RESPONSE_BYTES)
    }

    /// The Lease service (for a raw call; the `lease_*` calls of [`Client`] are the typed way).
    pub fn lease(&self) -> LeaseClient<Channel> {
        LeaseClient::new(self.channel.clone()).max_decoding_message_size(MAX_RESPONSE_BYTES)
    }

    /// The Cluster service.
    pub fn cluster(&self) -> ClusterClient<Channel> {
        ClusterClient::new(self.channel.clone()).max_decoding_message_size(MAX_RESPONSE_BYTES)
    }

    /// The Auth service: users, roles and permissions.
    pub fn auth(&self) -> AuthClient<Channel> {
        AuthClient::new(self.channel.clone()).max_decoding_message_size(MAX_RESPONSE_BYTES)
    }
}
