//! raftkv-server: a raftkv member as an etcd v3 gRPC server, and the `raftkv` binary.
//!
//! - [`config`] — where a member's configuration comes from (flags, `ETCD_*` variables or
//!   `--config-file`, with etcd's precedence) and the checked [`ServerConfig`].
//! - [`flags`] — every etcd 3.4 member flag with etcd's help text, in Go's flag syntax;
//!   [`go_values`] parses Go's values (durations, URLs, booleans), `env` the `ETCD_*`
//!   variables, `config_file` etcd's YAML, and `flag_policy` says which flags raftkv
//!   ignores (with a log line) or refuses.
//! - [`api`] — the etcd API's logic over a running member ([`EtcdApi`]), shared by the gRPC
//!   services and by embedding programs.
//! - `services` — the KV, Watch, Maintenance and Cluster gRPC services.
//! - `auth` — etcd's Auth service (users, roles, permissions and Authenticate, through the
//!   log) and the permission checks made at the API edge; writes are checked as they apply
//!   (`raftkv_storage::mvcc::auth::permit`).
//! - [`caller`] — the credentials of each request (token, certificate common name).
//! - [`token_provider`] — `--auth-token`: simple tokens, [`jwt`] tokens, or none.
//! - [`watch`] — etcd's Watch on this member: the watcher hub and the stream protocol.
//! - [`local`] — `raftkv local --size N`: a local cluster of member processes.
//! - [`tls`] — TLS on `https://` client, peer and metrics URLs (`--cert-file`,
//!   `--peer-cert-file` ...), certificates re-read when their files change.
//! - [`logging`] — tracing setup (`--log-level`, `--log-format`).
//!
//! [`Server::start`] runs a member; [`run`] runs one until a shutdown future resolves, the way
//! the binary does with SIGTERM / Ctrl-C.

#![deny(missing_docs)]

mod access;
pub mod api;
mod auth;
pub mod caller;
pub mod concurrency;
pub mod config;
mod config_file;
pub mod env;
mod flag_policy;
pub mod flags;
pub mod go_values;
mod grpc_health;
mod http;
pub mod json_stream;
pub mod jwt;
pub mod local;
pub mod logging;
pub mod metrics;
mod services;
pub mod tls;
pub mod token_provider;
pub mod watch;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use raftkv_proto::etcdserverpb::cluster_server::ClusterServer;
use raftkv_proto::etcdserverpb::kv_server::KvServer;
use raftkv_proto::etcdserverpb::maintenance_server::MaintenanceServer;
use raftkv_raft::RaftNode;
use raftkv_raft::serve::{self, MessageBudget, ServeLimits};
use tokio::net::TcpListener;
use tracing::info;

pub use api::EtcdApi;
pub use config::ServerConfig;

/// gRPC framing allowance on top of `--max-request-bytes`, as etcd adds.
const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;
/// HTTP/2 flow-control window of one client stream, and of one client connection.
const CLIENT_STREAM_WINDOW: u32 = 128 << 10;
const CLIENT_CONNECTION_WINDOW: u32 = 1 << 20;

/// A running member: Raft, the peer service and the client (etcd API) service.
pub struct Server {
    api: EtcdApi,
    stop_clients: tokio::sync::watch::Sender<bool>,
    client_tasks: Vec<tokio::task::JoinHandle<()>>,
    client_addrs: Vec<std::net::SocketAddr>,
}

impl Server {
    /// Binds the listen URLs, starts the member and serves the etcd API.
    pub async fn start(config: ServerConfig) -> anyhow::Result<Self> {
        match serve::raise_open_file_limit() {
            Ok(limit) => info!(limit, "open file limit"),
            Err(e) => tracing::warn!(error = %e, "could not raise the open file limit"),
        }
        // etcd builds its token provider before it serves; a bad --auth-token stops it.
        let tokens = token_provider::TokenProvider::start(&config.auth_token)?;
        let peer_addr = config::resolve(&config.listen_peer).await?;
        let peer_listener = TcpListener::bind(peer_addr)
            .await
            .with_context(|| format!("listening for peers on {}", config.listen_peer))?;
        let provider = Arc::new(tls::cipher::provider(&config.cipher_suites)?);
        let mut node_config = config.node.clone();
        // Peer TLS from the flags, unless an embedding program set the node's own.
        if node_config.peer_tls.accept.is_none() && node_config.peer_tls.dial.is_none() {
            node_config.peer_tls = config.peer_tls.node_tls(
                &config.listen_peer,
                peer_listener.local_addr()?,
                &config.node.data_dir,
                provider.clone(),
            )?;
        }
        let (client_tls, client_tls_config) = client_tls(&config, &provider)?;
        let mut client_listeners = Vec::new();
        for url in &config.listen_client {
            let addr = config::resolve(url).await?;
            let tls = config::is_https(url)
                .then(|| client_tls_config.clone())
                .flatten();
            client_listeners.push((
                TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("listening for clients on {url}"))?,
                tls,
            ));
        }
        let mut metrics_listeners = Vec::new();
        for url in &config.listen_metrics {
            let addr = config::resolve(url).await?;
            let listener = TcpListener::bind(addr)
                .await
                .with_context(|| format!("listening for metrics on {url}"))?;
            let tls = if config::is_https(url) {
                Some(metrics_tls(&client_tls, &listener, &provider)?)
            } else {
                None
            };
            metrics_listeners.push((listener, tls));
        }
        let node = RaftNode::start(node_config, peer_listener)
            .await
            .map_err(|e| anyhow::anyhow!("starting member: {e}"))?;
        info!(
            member = %raftkv_raft::node::hex(node.id()),
            cluster = %raftkv_raft::node::hex(node.cluster_id()),
            name = %config.node.name,
            "member started"
        );
        let api = EtcdApi::with_watch_config(
            node,
            watch::WatchConfig {
                progress_notify_interval: config.watch_progress_notify_interval,
                max_request_bytes: config.node.max_request_bytes,
            },
        )
        .with_client_metrics(metrics::ClientMetrics::new(config.metrics_extensive))
        .with_bcrypt_cost(config.bcrypt_cost)
        .with_snapshot_stall_timeout(config.snapshot_stall_timeout)
        .with_token_provider(tokens);
        api.node().store().tokens().set_ttl(config.auth_token_ttl);
        let (stop_clients, stop_rx) = tokio::sync::watch::channel(false);
        let max_message = config.node.max_request_bytes + GRPC_OVERHEAD_BYTES;
        let limits = ServeLimits::new(max_message);
        let budget = MessageBudget::new(&limits);
        let mut client_tasks = Vec::new();
        let mut client_addrs = Vec::new();
        let mut secure_addrs = Vec::new();
        for (listener, tls) in client_listeners {
            client_addrs.push(listener.local_addr()?);
            if tls.is_some() {
                secure_addrs.push(listener.local_addr()?);
            }
            let api = api.clone();
            let mut stop = stop_rx.clone();
            // etcd checks the Host of HTTP requests only on connections without TLS.
            let access =
                access::Access::new(&config.cors, &config.host_whitelist).secure(tls.is_some());
            let incoming = serve::client_incoming_tls(listener, &limits, tls.map(Into::into));
            let gateway_on = config.enable_grpc_gateway;
            let mut server = tonic::transport::Server::builder()
                .accept_http1(true)
                .tcp_nodelay(true)
                // Small flow-control windows bound what a stalled sender can park in
                // HTTP/2 buffers; a 1.5 MiB put still needs only a few window updates.
                .initial_stream_window_size(CLIENT_STREAM_WINDOW)
                .initial_connection_window_size(CLIENT_CONNECTION_WINDOW)
                .max_concurrent_streams(config.max_concurrent_streams)
                .http2_keepalive_interval(config.grpc_keepalive_interval)
                .http2_keepalive_timeout(config.grpc_keepalive_timeout)
                .layer(budget.layer())
                .layer(metrics::GrpcMetricsLayer::new(
                    api.client_metrics().clone(),
                    max_message,
                ))
                .layer(access::AccessLayer(Arc::new(access)))
                .layer(caller::CredentialsLayer {
                    cert_auth: config.client_tls.client_cert_auth,
                });
            client_tasks.push(tokio::spawn(async move {
                let grpc = tonic::service::Routes::new(
                    KvServer::new(api.clone()).max_decoding_message_size(max_message),
                )
                .add_service(watch::WatchService::new(api.clone(), max_message))
                .add_service(
                    MaintenanceServer::new(api.clone()).max_decoding_message_size(max_message),
                )
                .add_service(
                    raftkv_proto::etcdserverpb::lease_server::LeaseServer::new(api.clone())
                        .max_decoding_message_size(max_message),
                )
                .add_service(
                    raftkv_proto::v3lockpb::lock_server::LockServer::new(api.clone())
                        .max_decoding_message_size(max_message),
                )
                .add_service(
                    raftkv_proto::v3electionpb::election_server::ElectionServer::new(api.clone())
                        .max_decoding_message_size(max_message),
                )
                .add_service(ClusterServer::new(api.clone()).max_decoding_message_size(max_message))
                .add_service(
                    raftkv_proto::etcdserverpb::auth_server::AuthServer::new(api.clone())
                        .max_decoding_message_size(max_message),
                )
                .add_service(
                    raftkv_proto::grpc_health_v1::health_server::HealthServer::new(
                        grpc_health::HealthService::new(stop.clone()),
                    )
                    .max_decoding_message_size(max_message),
                );
                // HTTP/1.1 (health, version, the JSON gateway) on the same listener, as etcd.
                let routes = tonic::service::Routes::from(http::routes(
                    &api,
                    grpc.into_axum_router(),
                    gateway_on,
                ));
                let result = server
                    .add_routes(routes)
                    .serve_with_incoming_shutdown(incoming, async move {
                        let _ = stop.wait_for(|s| *s).await;
                    })
                    .await;
                if let Err(e) = result {
                    tracing::error!(error = %e, "client service stopped");
                }
            }));
        }
        // `--listen-metrics-urls`: /metrics and /health only, over HTTP/1.1 as etcd serves them
        // (and HTTP/2 on an https:// URL, which etcd's ALPN prefers).
        for (listener, tls) in metrics_listeners {
            let routes = http::metrics_routes(&api);
            let mut stop = stop_rx.clone();
            let stopped = async move {
                let _ = stop.wait_for(|s| *s).await;
            };
            let Some(tls) = tls else {
                client_tasks.push(tokio::spawn(async move {
                    let result = axum::serve(listener, routes)
                        .with_graceful_shutdown(stopped)
                        .await;
                    if let Err(e) = result {
                        tracing::error!(error = %e, "metrics listener stopped");
                    }
                }));
                continue;
            };
            let incoming = serve::client_incoming_tls(listener, &limits, Some(tls));
            client_tasks.push(tokio::spawn(async move {
                let result = tonic::transport::Server::builder()
                    .accept_http1(true)
                    .add_routes(tonic::service::Routes::from(routes))
                    .serve_with_incoming_shutdown(incoming, stopped)
                    .await;
                if let Err(e) = result {
                    tracing::error!(error = %e, "metrics listener stopped");
                }
            }));
        }
        // etcd's readiness lines, once the member has joined and published itself.
        let mut published = api.node().published();
        let addrs = client_addrs.clone();
        tokio::spawn(async move {
            if published.wait_for(|p| *p).await.is_err() {
                return; // stopped first
            }
            info!("ready to serve client requests");
            for addr in addrs {
                if secure_addrs.contains(&addr) {
                    info!("serving client requests on {addr}");
                } else {
                    info!(
                        "serving insecure client requests on {addr}, this is strongly discouraged!"
                    );
                }
            }
        });
        Ok(Self {
            api,
            stop_clients,
            client_tasks,
            client_addrs,
        })
    }

    /// The etcd API of this member, for calls without the network.
    pub fn api(&self) -> &EtcdApi {
        &self.api
    }

    /// The member underneath.
    pub fn node(&self) -> &Arc<RaftNode> {
        self.api.node()
    }

    /// The addresses the client service is bound to.
    pub fn client_addrs(&self) -> &[std::net::SocketAddr] {
        &self.client_addrs
    }

    /// Graceful stop: stop accepting clients and let in-flight requests finish, hand
    /// leadership to another member if this one leads, then stop Raft and flush.
    pub async fn shutdown(self) {
        let _ = self.stop_clients.send(true);
        // In-flight requests get three seconds; a client service still running then is
        // ended, so that nothing holds the member once this returns.
        for mut task in self.client_tasks {
            if tokio::time::timeout(Duration::from_secs(3), &mut task)
                .await
                .is_err()
            {
                task.abort();
                let _ = task.await;
            }
        }
        self.api.node().transfer_leadership().await;
        self.api.node().shutdown().await;
        info!("member stopped");
    }
}

/// The TLS settings of the client URLs (after `--auto-tls`) and their server
/// configuration, checked as etcd's `configureClientListeners`: an `https://` URL needs
/// `--cert-file` and `--key-file`; an `http://` one ignores them (with etcd's warnings).
/// No configuration when no client URL is `https://`.
fn client_tls(
    config: &ServerConfig,
    provider: &Arc<tokio_rustls::rustls::crypto::CryptoProvider>,
) -> anyhow::Result<(
    tls::ClientTls,
    Option<Arc<tokio_rustls::rustls::ServerConfig>>,
)> {
    let mut tls = config.client_tls.clone();
    if tls.auto_tls {
        if tls.is_empty() {
            let hosts: Vec<&str> = config
                .listen_client
                .iter()
                .filter_map(|u| config::host_port(u).ok())
                .collect();
            let dir = config.node.data_dir.join("fixtures").join("client");
            // etcd replaces the whole client TLS info with the self-signed one.
            tls = tls::ClientTls::self_cert(&dir, &hosts)
                .context("could not get client self-signed certs")?;
        } else {
            tracing::warn!("ignoring client auto TLS since certs given");
        }
    }
    for url in &config.listen_client {
        if config::is_https(url) {
            if tls.is_empty() {
                anyhow::bail!(
                    "TLS key/cert (--cert-file, --key-file) must be provided for client url {url} with HTTPS scheme"
                );
            }
            continue;
        }
        if !tls.is_empty() {
            tracing::warn!(
                "The scheme of client url {url} is HTTP while peer key/cert files are presented. Ignored key/cert files."
            );
        }
        if tls.client_cert_auth {
            tracing::warn!(
                "The scheme of client url {url} is HTTP while client cert auth (--client-cert-auth) is enabled. Ignored client cert auth for this url."
            );
        }
    }
    if !config.listen_client.iter().any(|u| config::is_https(u)) {
        return Ok((tls, None));
    }
    let server = tls.server_config_with(provider.clone(), &[b"h2", b"http/1.1"])?;
    Ok((tls, Some(server)))
}

/// TLS on an `https://` metrics URL, as etcd's `serveMetrics` sets it up: the client port's
/// certificate and client-certificate policy, and the check of a client certificate's SANs
/// against the connecting address that etcd's plain `NewListener` adds. etcd's ALPN list is
/// `h2` alone, but Go lets a client that offers only `http/1.1` through; listing both does
/// the same with rustls.
fn metrics_tls(
    client_tls: &tls::ClientTls,
    listener: &TcpListener,
    provider: &Arc<tokio_rustls::rustls::crypto::CryptoProvider>,
) -> anyhow::Result<serve::TlsAccept> {
    if client_tls.is_empty() {
        anyhow::bail!(
            "cannot listen on TLS for {}: KeyFile and CertFile are not presented",
            listener.local_addr()?
        );
    }
    Ok(serve::TlsAccept {
        config: client_tls.server_config_with(provider.clone(), &[b"h2", b"http/1.1"])?,
        check: Some(tls::san_check()),
    })
}

/// Runs a member until `shutdown` resolves, then stops it gracefully.
pub async fn run(config: ServerConfig, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let server = Server::start(config).await?;
    shutdown.await;
    info!("shutting down");
    server.shutdown().await;
    Ok(())
}

/// Resolves on SIGTERM or Ctrl-C (SIGINT).
pub async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
