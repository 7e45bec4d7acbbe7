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
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use crate::auth::{Generation, TokenCache, TokenInterceptor};
use crate::tls::ClientConfig;
use crate::{Error, TlsConfig};

/// The channel of a [`Connection`]'s service clients: the connection, with the client's
/// token (if it has one) added to every request.
pub type AuthChannel = InterceptedService<Channel, TokenInterceptor>;

/// The largest response accepted (a range of many large values, a snapshot chunk).
const MAX_RESPONSE_BYTES: usize = 64 << 20;

/// A cluster's client endpoints, and how long to wait for them: etcdctl's `--endpoints`,
/// `--dial-timeout` and `--command-timeout`; credentials with
/// [`Client::with_credentials`]. Cheap to clone (clones share the token); connects per call.
#[derive(Debug, Clone)]
pub struct Client {
    endpoints: Vec<String>,
    dial_timeout: Duration,
    command_timeout: Duration,
    require_leader: bool,
    /// TLS for endpoints without a scheme and for `https://` ones (see [`Client::with_tls`]).
    tls: Option<Arc<ClientConfig>>,
    /// The user's credentials and token (see [`Client::with_credentials`]).
    auth: Option<Arc<TokenCache>>,
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
            auth: None,
        }
    }

    /// The same client, authenticating as `user` with `password` (clientv3's `Username` and
    /// `Password`): the first connection asks `Auth/Authenticate` for a token, every request
    /// carries it, and a call refused for its token gets a new one and is sent once more
    /// (see [`crate::auth`]). As with clientv3, an empty name or password means no
    /// credentials: requests then carry no token.
    pub fn with_credentials(mut self, user: &str, password: &str) -> Self {
        self.auth = TokenCache::new(user, password);
        self
    }

    /// The user the client authenticates as, if it has credentials.
    pub fn user(&self) -> Option<&str> {
        self.auth.as_deref().map(TokenCache::user)
    }

    /// Gets a token now, from the first endpoint that gives one, as clientv3 does when it
    /// dials (`getToken`); calls would otherwise get it when they first connect. Without
    /// credentials, or when the server's authentication is off, there is nothing to get and
    /// nothing fails. Fails with the last refusal a member answered (etcd's
    /// `authentication failed, invalid user ID or password`, say), or if none answered, the
    /// last endpoint's error.
    pub async fn authenticate(&self) -> Result<(), Error> {
        if self.auth.as_ref().is_none_or(|auth| auth.is_settled()) {
            return Ok(());
        }
        let mut refusal = None;
        let mut last = Error::NoEndpoints;
        for endpoint in &self.endpoints {
            match self.connect_one(endpoint).await {
                Ok(_) => return Ok(()),
                Err(e @ Error::Status(_)) => refusal = Some(e),
                Err(e) => last = e,
            }
        }
        Err(refusal.unwrap_or(last))
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

    /// A connection to one member, within the dial timeout; with credentials, a token is
    /// asked for first if the client has none yet.
    pub async fn connect_one(&self, endpoint: &str) -> Result<Connection, Error> {
        let mut connection =
            Connection::connect_with_tls(endpoint, self.dial_timeout, self.tls.clone()).await?;
        if let Some(auth) = &self.auth {
            auth.ensure(&connection.channel, self.dial_timeout).await?;
            connection.auth = Some(auth.clone());
        }
        Ok(connection)
    }

    /// With credentials, a new token through `connection`: before a stream opens on it, as
    /// clientv3's stream interceptor gets one before every stream (a stream cannot be sent
    /// again after a refusal, and a token the member forgot would refuse it).
    pub(crate) async fn renew_token(&self, connection: &Connection) -> Result<(), Error> {
        match &self.auth {
            Some(auth) => auth.renew(&connection.channel, self.command_timeout).await,
            None => Ok(()),
        }
    }

    /// Runs `call` once on `connection`, and once more if the member refused its token, as
    /// clientv3's retry interceptor does: with credentials, after getting a new token (if
    /// that fails, its error is the answer); without, as it was (the member told a client
    /// without a token that its auth revision is old: it checks again).
    pub(crate) async fn call_on<T, F, Fut>(
        &self,
        connection: &Connection,
        call: &mut F,
    ) -> Result<T, Error>
    where
        F: FnMut(Connection) -> Fut,
        Fut: Future<Output = Result<T, tonic::Status>>,
    {
        let seen = self.token_generation();
        let status = match call(connection.clone()).await {
            Ok(value) => return Ok(value),
            Err(status) => status,
        };
        match crate::auth::after_refusal(&status, self.auth.is_some()) {
            None => return Err(Error::Status(status)),
            Some(true) => self.refresh_token(connection, seen).await?,
            Some(false) => {}
        }
        call(connection.clone()).await.map_err(Error::Status)
    }

    fn token_generation(&self) -> Generation {
        self.auth.as_ref().map_or(0, |auth| auth.generation())
    }

    async fn refresh_token(&self, connection: &Connection, seen: Generation) -> Result<(), Error> {
        match &self.auth {
            Some(auth) => {
                auth.refresh(&connection.channel, seen, self.command_timeout)
                    .await
            }
            None => Ok(()),
        }
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

    /// Runs `call` on the member at `endpoint` alone (Status, HashKV of one member…), within
    /// the command timeout, sent again once if the member refused its token.
    pub async fn on<T, F, Fut>(&self, endpoint: &str, mut call: F) -> Result<T, Error>
    where
        F: FnMut(Connection) -> Fut,
        Fut: Future<Output = Result<T, tonic::Status>>,
    {
        let connection = self.connect_one(endpoint).await?;
        let attempt = self.call_on(&connection, &mut call);
        match tokio::time::timeout(self.command_timeout, attempt).await {
            Err(_) => Err(Error::Timeout),
            Ok(result) => result,
        }
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
            let attempt = self.call_on(&connection, &mut call);
            match tokio::time::timeout(self.command_timeout, attempt).await {
                Err(_) => return Err(Error::Timeout),
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(Error::Status(status)))
                    if retry_unavailable && status.code() == tonic::Code::Unavailable =>
                {
                    last = Error::Status(status);
                }
                Ok(Err(e)) => return Err(e),
            }
        }
        Err(last)
    }
}

/// A connection to one member; from a client with credentials, its service clients send
/// the client's token.
#[derive(Clone)]
pub struct Connection {
    channel: Channel,
    endpoint: String,
    auth: Option<Arc<TokenCache>>,
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
                auth: None,
            }),
            Ok(Err(e)) => Err(unreachable(e.to_string())),
            Err(_) => Err(unreachable("context deadline exceeded".into())),
        }
    }

    /// The endpoint this connection talks to.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The channel with the token interceptor, for a service client.
    fn authed(&self) -> AuthChannel {
        InterceptedService::new(
            self.channel.clone(),
            TokenInterceptor::new(self.auth.clone()),
        )
    }

    /// The KV service.
    pub fn kv(&self) -> KvClient<AuthChannel> {
        KvClient::new(self.authed()).max_decoding_message_size(MAX_RESPONSE_BYTES)
    }

    /// The Maintenance service.
    pub fn maintenance(&self) -> MaintenanceClient<AuthChannel> {
        MaintenanceClient::new(self.authed()).max_decoding_message_size(MAX_RESPONSE_BYTES)
    }

    /// The Watch service (for a raw stream; [`Client::watch`] and [`Client::watch_session`]
    /// are the typed way).
    pub fn watch(&self) -> WatchClient<AuthChannel> {
        WatchClient::new(self.authed()).max_decoding_message_size(MAX_RESPONSE_BYTES)
    }

    /// The Lease service (for a raw call; the `lease_*` calls of [`Client`] are the typed way).
    pub fn lease(&self) -> LeaseClient<AuthChannel> {
        LeaseClient::new(self.authed()).max_decoding_message_size(MAX_RESPONSE_BYTES)
    }

    /// The Cluster service.
    pub fn cluster(&self) -> ClusterClient<AuthChannel> {
        ClusterClient::new(self.authed()).max_decoding_message_size(MAX_RESPONSE_BYTES)
    }

    /// The Auth service: users, roles and permissions.
    pub fn auth(&self) -> AuthClient<AuthChannel> {
        AuthClient::new(self.authed()).max_decoding_message_size(MAX_RESPONSE_BYTES)
    }
}
