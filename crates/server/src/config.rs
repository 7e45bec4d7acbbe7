//! The `raftkv` member's flags, named and defaulted as etcd's, and the plain config they
//! become.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use raftkv_raft::{ClusterState, NodeConfig};

pub use raftkv_raft::config::{DEFAULT_MAX_REQUEST_BYTES, DEFAULT_MAX_TXN_OPS};

/// A member's flags (etcd's names; the doc comments are the help text).
#[derive(Debug, Clone, Args)]
pub struct MemberFlags {
    /// Human-readable name for this member.
    #[arg(long, default_value = "default")]
    pub name: String,
    /// Path to the data directory [default: <name>.raftkv].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// List of URLs to listen on for client traffic.
    #[arg(long, default_value = "http://127.0.0.1:2379", value_delimiter = ',')]
    pub listen_client_urls: Vec<String>,
    /// List of this member's client URLs to advertise to the rest of the cluster.
    #[arg(long, default_value = "http://127.0.0.1:2379", value_delimiter = ',')]
    pub advertise_client_urls: Vec<String>,
    /// List of URLs to listen on for peer traffic.
    #[arg(long, default_value = "http://127.0.0.1:2380", value_delimiter = ',')]
    pub listen_peer_urls: Vec<String>,
    /// List of this member's peer URLs to advertise to the rest of the cluster.
    #[arg(long, default_value = "http://127.0.0.1:2380", value_delimiter = ',')]
    pub initial_advertise_peer_urls: Vec<String>,
    /// Initial cluster configuration for bootstrapping: name=url,name=url,...
    #[arg(long, default_value = "default=http://127.0.0.1:2380")]
    pub initial_cluster: String,
    /// Initial cluster state ('new' or 'existing').
    #[arg(long, default_value = "new")]
    pub initial_cluster_state: String,
    /// Initial cluster token for the cluster during bootstrap.
    #[arg(long, default_value = "etcd-cluster")]
    pub initial_cluster_token: String,
    /// Time (in milliseconds) of a heartbeat interval.
    #[arg(long, default_value_t = 100)]
    pub heartbeat_interval: u64,
    /// Time (in milliseconds) for an election to timeout.
    #[arg(long, default_value_t = 1000)]
    pub election_timeout: u64,
    /// Number of committed transactions to trigger a snapshot to disk.
    #[arg(long, default_value_t = 100_000)]
    pub snapshot_count: u64,
    /// Maximum client request size in bytes the server will accept.
    #[arg(long, default_value_t = DEFAULT_MAX_REQUEST_BYTES)]
    pub max_request_bytes: usize,
    /// Maximum number of operations permitted in a transaction.
    #[arg(long, default_value_t = 128)]
    pub max_txn_ops: usize,
    /// Log level: debug, info, warn, error (RUST_LOG overrides it).
    #[arg(long, default_value = "info")]
    pub log_level: String,
    /// Log format: text or json.
    #[arg(long, default_value = "text")]
    pub log_format: String,
}

/// Everything a member runs with (built from flags, or by hand when embedding).
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Consensus settings.
    pub node: NodeConfig,
    /// Addresses the client (etcd API) service listens on.
    pub listen_client: Vec<String>,
    /// Address the peer service listens on.
    pub listen_peer: String,
    /// `--max-concurrent-streams`: HTTP/2 streams one client connection may open at once.
    pub max_concurrent_streams: u32,
    /// `--grpc-keepalive-interval`: how often the server pings an idle client connection.
    pub grpc_keepalive_interval: Duration,
    /// `--grpc-keepalive-timeout`: how long it waits for the ping's answer before closing.
    pub grpc_keepalive_timeout: Duration,
}

impl ServerConfig {
    /// A config around consensus settings, listening where `node` advertises, with etcd's
    /// default request limits (for embedding; the binary uses [`ServerConfig::from_flags`]).
    pub fn new(node: NodeConfig) -> Self {
        Self {
            listen_client: node.client_urls.clone(),
            listen_peer: node.peer_urls.first().cloned().unwrap_or_default(),
            node,
            max_concurrent_streams: u32::MAX,
            grpc_keepalive_interval: Duration::from_secs(2 * 3600),
            grpc_keepalive_timeout: Duration::from_secs(20),
        }
    }

    /// A config from flags, checked.
    pub fn from_flags(flags: &MemberFlags) -> anyhow::Result<Self> {
        let data_dir = flags
            .data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("{}.raftkv", flags.name)));
        let initial_cluster = parse_initial_cluster(&flags.initial_cluster)?;
        let state = match flags.initial_cluster_state.as_str() {
            "new" => ClusterState::New,
            "existing" => ClusterState::Existing,
            other => bail!("invalid --initial-cluster-state {other:?} (want 'new' or 'existing')"),
        };
        if flags.heartbeat_interval == 0 || flags.election_timeout < 5 * flags.heartbeat_interval {
            bail!(
                "--election-timeout[{}ms] should be at least 5 times as --heartbeat-interval[{}ms]",
                flags.election_timeout,
                flags.heartbeat_interval
            );
        }
        for url in flags
            .listen_client_urls
            .iter()
            .chain(&flags.listen_peer_urls)
        {
            host_port(url)?;
        }
        let mut node = NodeConfig::new(&flags.name, data_dir);
        node.peer_urls = flags.initial_advertise_peer_urls.clone();
        node.client_urls = flags.advertise_client_urls.clone();
        node.initial_cluster = initial_cluster;
        node.initial_cluster_state = state;
        node.initial_cluster_token = flags.initial_cluster_token.clone();
        node.heartbeat_interval = Duration::from_millis(flags.heartbeat_interval);
        node.election_timeout = Duration::from_millis(flags.election_timeout);
        node.snapshot_count = flags.snapshot_count;
        node.max_request_bytes = flags.max_request_bytes;
        node.max_txn_ops = flags.max_txn_ops;
        // etcd: 5 s plus two election timeouts; capped so that a client's default 5 s
        // command timeout sees our error rather than its own.
        node.request_timeout =
            (Duration::from_secs(2) + node.election_timeout * 2).min(Duration::from_millis(3500));
        Ok(Self {
            node,
            listen_client: flags.listen_client_urls.clone(),
            listen_peer: flags
                .listen_peer_urls
                .first()
                .cloned()
                .context("--listen-peer-urls is empty")?,
            max_concurrent_streams: u32::MAX,
            grpc_keepalive_interval: Duration::from_secs(2 * 3600),
            grpc_keepalive_timeout: Duration::from_secs(20),
        })
    }
}

/// Parses `name=url,name=url,...` (a name may appear more than once for several URLs).
pub fn parse_initial_cluster(s: &str) -> anyhow::Result<BTreeMap<String, Vec<String>>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, url) = part
            .split_once('=')
            .with_context(|| format!("invalid --initial-cluster entry {part:?} (want name=url)"))?;
        host_port(url)?;
        out.entry(name.to_string())
            .or_default()
            .push(url.to_string());
    }
    if out.is_empty() {
        bail!("--initial-cluster is empty");
    }
    Ok(out)
}

/// The `host:port` of an `http://host:port` URL.
pub fn host_port(url: &str) -> anyhow::Result<&str> {
    let rest = url.strip_prefix("http://").with_context(|| {
        format!("unsupported URL {url:?}: only http:// URLs are supported (no TLS yet)")
    })?;
    let hp = rest.trim_end_matches('/');
    if hp.is_empty() || !hp.contains(':') {
        bail!("URL {url:?} needs a host and a port");
    }
    Ok(hp)
}

/// Resolves a listen URL to a socket address.
pub async fn resolve(url: &str) -> anyhow::Result<SocketAddr> {
    let hp = host_port(url)?;
    tokio::net::lookup_host(hp)
        .await
        .with_context(|| format!("resolving {url}"))?
        .next()
        .with_context(|| format!("{url} resolves to no address"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initial_cluster_parses_like_etcd() {
        let c = parse_initial_cluster("infra1=http://127.0.0.1:2380,infra2=http://127.0.0.1:22380")
            .unwrap();
        assert_eq!(c["infra2"], vec!["http://127.0.0.1:22380".to_string()]);
        assert!(parse_initial_cluster("infra1").is_err());
        assert!(parse_initial_cluster("a=https://x:1").is_err());
        assert!(parse_initial_cluster("").is_err());
    }
}
