//! raftkv-client: a Rust client for the etcd v3 API (raftkv or etcd), and `raftkvctl`.
//!
//! - [`Client`] — connects to the first reachable endpoint of a list.
//! - [`snapshot`] — `snapshot save | status | restore` for raftkv's snapshot format (the
//!   real etcdctl can save one, but its status and restore read only etcd's bbolt files).
//! - [`kv`] — `put`, `get`, `del`: requests from etcdctl's flags, and its printers.
//! - [`cluster`] — `member`, `move-leader`, `endpoint status | health`.
//! - [`txn`] — `txn`: etcdctl's syntax and printers.
//! - [`output`] — etcdctl's output conventions (sizes, tables).
//!
//! `raftkvctl` has etcdctl 3.4's `put`, `get`, `del`, `txn`, `compaction`, `member list |
//! add | remove | promote`, `move-leader`, `endpoint status | health`, `snapshot save |
//! status | restore` and `version`.

#![deny(missing_docs)]

pub mod cluster;
pub mod kv;
pub mod output;
pub mod snapshot;
pub mod txn;

use std::time::Duration;

use anyhow::{Context, bail};
use raftkv_proto::etcdserverpb::kv_client::KvClient;
use raftkv_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use tonic::transport::{Channel, Endpoint};

/// A connection to one member, chosen from a list of endpoints.
#[derive(Clone)]
pub struct Client {
    channel: Channel,
    endpoint: String,
}

impl Client {
    /// Connects to the first of `endpoints` (`host:port` or URLs) that answers within
    /// `dial_timeout`, as clientv3 tries the endpoints it is given.
    pub async fn connect(endpoints: &[String], dial_timeout: Duration) -> anyhow::Result<Self> {
        let mut last_error = None;
        for endpoint in endpoints {
            let url = if endpoint.contains("://") {
                endpoint.clone()
            } else {
                format!("http://{endpoint}")
            };
            let target = Endpoint::from_shared(url.clone())
                .with_context(|| format!("invalid endpoint {endpoint:?}"))?
                .connect_timeout(dial_timeout)
                .tcp_nodelay(true);
            let attempt = target.connect();
            match tokio::time::timeout(dial_timeout, attempt).await {
                Ok(Ok(channel)) => {
                    return Ok(Self {
                        channel,
                        endpoint: endpoint.clone(),
                    });
                }
                Ok(Err(e)) => last_error = Some(anyhow::anyhow!("{endpoint}: {e}")),
                Err(_) => {
                    last_error = Some(anyhow::anyhow!("{endpoint}: context deadline exceeded"))
                }
            }
        }
        match last_error {
            Some(e) => Err(e),
            None => bail!("no endpoints given"),
        }
    }

    /// Runs `call` against the endpoints in turn, as clientv3 fails over: an endpoint that
    /// cannot be reached is skipped (the request never left), and with `retry_unavailable`
    /// (reads, which are safe to repeat) so is one that answers `Unavailable` (no leader,
    /// stopping…). Writes are never sent twice. Each call is bounded by `command_timeout`.
    pub async fn with_failover<T, F, Fut>(
        endpoints: &[String],
        dial_timeout: Duration,
        command_timeout: Duration,
        retry_unavailable: bool,
        mut call: F,
    ) -> anyhow::Result<T>
    where
        F: FnMut(Client) -> Fut,
        Fut: std::future::Future<Output = Result<T, tonic::Status>>,
    {
        let mut last_error = anyhow::anyhow!("no endpoints given");
        for endpoint in endpoints {
            let client = match Client::connect(std::slice::from_ref(endpoint), dial_timeout).await {
                Ok(client) => client,
                Err(e) => {
                    last_error = e;
                    continue;
                }
            };
            match tokio::time::timeout(command_timeout, call(client)).await {
                Err(_) => bail!("context deadline exceeded"),
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(status))
                    if retry_unavailable && status.code() == tonic::Code::Unavailable =>
                {
                    last_error = anyhow::anyhow!("{}", status.message());
                }
                Ok(Err(status)) => bail!("{}", status.message()),
            }
        }
        Err(last_error)
    }

    /// The endpoint this client talks to.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The underlying channel (for services without a helper here).
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// The KV service.
    pub fn kv(&self) -> KvClient<Channel> {
        KvClient::new(self.channel.clone()).max_decoding_message_size(64 << 20)
    }

    /// The Maintenance service.
    pub fn maintenance(&self) -> MaintenanceClient<Channel> {
        MaintenanceClient::new(self.channel.clone()).max_decoding_message_size(64 << 20)
    }
}
