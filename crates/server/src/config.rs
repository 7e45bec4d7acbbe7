//! A member's configuration: where its flags come from, with etcd's precedence, and the
//! checked [`ServerConfig`] they become.
//!
//! As etcd 3.4 (`etcdmain/config.go`): the command line is parsed first; then, if
//! `--config-file` (or `ETCD_CONFIG_FILE`) names a file, that file alone configures the member
//! and every other flag and `ETCD_*` variable is ignored; otherwise `ETCD_*` variables fill in
//! the flags the command line left unset (`env`). Flags raftkv does not implement
//! are refused or logged by `flag_policy`.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::FromArgMatches;
use clap::parser::ValueSource;
use raftkv_raft::node::compactor::AutoCompaction;
use raftkv_raft::{ClusterState, MAX_REQUEST_BYTES_LIMIT, NodeConfig};

pub use crate::flags::MemberFlags;
use crate::go_values::{parse_url, split_host_port};
pub use raftkv_raft::config::{DEFAULT_MAX_REQUEST_BYTES, DEFAULT_MAX_TXN_OPS};

/// etcd's `--initial-cluster` default.
const DEFAULT_INITIAL_CLUSTER: &str = "default=http://localhost:2380";
/// etcd's largest `--election-timeout` (ms).
const MAX_ELECTION_TIMEOUT_MS: u64 = 50_000;

/// A line to log once logging is set up (flags are read before it is).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// `true` for a warning, `false` for information.
    pub warn: bool,
    /// The line.
    pub message: String,
}

impl Notice {
    /// An informational line.
    pub fn info(message: String) -> Self {
        Self {
            warn: false,
            message,
        }
    }

    /// A warning.
    pub fn warn(message: String) -> Self {
        Self {
            warn: true,
            message,
        }
    }

    /// Logs the line.
    pub fn log(&self) {
        if self.warn {
            tracing::warn!("{}", self.message);
        } else {
            tracing::info!("{}", self.message);
        }
    }
}

/// A member's flags, wherever they came from, and what to log about them.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The flags in effect.
    pub flags: MemberFlags,
    /// Lines for the log: the config file in use, environment variables used or not
    /// recognized, flags raftkv ignores.
    pub notices: Vec<Notice>,
}

/// Reads a member's flags as etcd does, from `args` (the whole command line in Go's syntax,
/// program name first) and the process environment `env`; refuses flags raftkv cannot honour.
pub fn load(args: &[OsString], env: &[(String, String)]) -> anyhow::Result<Loaded> {
    let command = MemberFlags::command();
    let matches = command
        .clone()
        .try_get_matches_from(args)
        .map_err(|e| anyhow::anyhow!("{}", crate::env::clap_reason(&e)))?;
    let cli = MemberFlags::from_arg_matches(&matches)?;
    let env_config_file = env
        .iter()
        .find(|(k, _)| k == "ETCD_CONFIG_FILE")
        .map(|(_, v)| v.clone());
    let config_file = cli
        .member
        .config_file
        .clone()
        .filter(|p| !p.is_empty())
        .or(env_config_file.filter(|p| !p.is_empty()));
    let (flags, mut notices) = match config_file {
        Some(path) => from_config_file(&command, &path)?,
        None => from_command_line_and_env(&command, args, &matches, env)?,
    };
    notices.extend(crate::flag_policy::check(&flags)?);
    Ok(Loaded { flags, notices })
}

fn from_config_file(
    command: &clap::Command,
    path: &str,
) -> anyhow::Result<(MemberFlags, Vec<Notice>)> {
    let notice = Notice::info(format!(
        "Loading server configuration from {path:?}. Other configuration command line flags and environment variables will be ignored if provided."
    ));
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading the config file {path}"))?;
    let mut args: Vec<OsString> = vec!["raftkv".into()];
    args.extend(
        crate::config_file::args_from_yaml(&text, command)
            .with_context(|| format!("config file {path}"))?,
    );
    let matches = command
        .clone()
        .try_get_matches_from(args)
        .map_err(|e| anyhow::anyhow!("config file {path}: {}", crate::env::clap_reason(&e)))?;
    Ok((MemberFlags::from_arg_matches(&matches)?, vec![notice]))
}

fn from_command_line_and_env(
    command: &clap::Command,
    args: &[OsString],
    cli: &clap::ArgMatches,
    env: &[(String, String)],
) -> anyhow::Result<(MemberFlags, Vec<Notice>)> {
    let from_env = crate::env::flags_from_env(command, cli, env)?;
    let mut all = args.to_vec();
    all.extend(from_env.args);
    let matches = command
        .clone()
        .try_get_matches_from(all)
        .map_err(|e| anyhow::anyhow!("{}", crate::env::clap_reason(&e)))?;
    let set = |id: &str| matches.value_source(id) == Some(ValueSource::CommandLine);
    if set("listen_client_urls") && !set("advertise_client_urls") {
        bail!("--advertise-client-urls is required when --listen-client-urls is set explicitly");
    }
    Ok((MemberFlags::from_arg_matches(&matches)?, from_env.notices))
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
    pub grpc_keepalive_interval: Option<Duration>,
    /// `--grpc-keepalive-timeout`: how long it waits for the ping's answer before closing.
    pub grpc_keepalive_timeout: Option<Duration>,
    /// `--experimental-watch-progress-notify-interval`: how often watchers that asked for
    /// progress notifications get one.
    pub watch_progress_notify_interval: Duration,
    /// raftkv's own `--raftkv-snapshot-stall-timeout`: how long a Snapshot stream waits for
    /// its client to take the next piece before it ends with an error.
    pub snapshot_stall_timeout: Duration,
    /// `--enable-grpc-gateway`: serve etcd's JSON gateway under `/v3/` on the client URLs.
    pub enable_grpc_gateway: bool,
    /// `--listen-metrics-urls`: extra HTTP listeners serving only `/metrics` and `/health`.
    pub listen_metrics: Vec<String>,
    /// `--metrics extensive`: also time every gRPC call (`grpc_server_handling_seconds`).
    pub metrics_extensive: bool,
    /// `--cors`: origins allowed to call the HTTP side (comma-separated; empty or `*`: all).
    pub cors: String,
    /// `--host-whitelist`: `Host` values the HTTP side answers (comma-separated; empty or
    /// `*`: all).
    pub host_whitelist: String,
    /// `--cert-file`, `--key-file`, `--trusted-ca-file`, `--client-cert-auth` ...: TLS on the
    /// `https://` client URLs and metrics URLs (empty: none, and such URLs are refused).
    pub client_tls: crate::tls::ClientTls,
    /// `--auth-token`: `simple`, `jwt,<options>` or empty (read and checked at start,
    /// [`crate::token_provider::TokenProvider`]).
    pub auth_token: String,
    /// `--auth-token-ttl`: how long a simple token lives past its last use.
    pub auth_token_ttl: Duration,
    /// `--bcrypt-cost`: the cost passwords are hashed at.
    pub bcrypt_cost: u32,
    /// `--peer-cert-file`, `--peer-key-file`, `--peer-trusted-ca-file` ...: TLS on an
    /// `https://` peer URL, and for dialing `https://` peers.
    pub peer_tls: crate::tls::PeerTls,
    /// `--cipher-suites`: Go's names of the TLS 1.2 suites both ports may use (empty: all).
    pub cipher_suites: Vec<String>,
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
            grpc_keepalive_interval: Some(Duration::from_secs(2 * 3600)),
            grpc_keepalive_timeout: Some(Duration::from_secs(20)),
            watch_progress_notify_interval: Duration::from_secs(600),
            snapshot_stall_timeout: crate::api::SNAPSHOT_STALL_TIMEOUT,
            enable_grpc_gateway: true,
            listen_metrics: Vec::new(),
            metrics_extensive: false,
            cors: "*".into(),
            host_whitelist: "*".into(),
            client_tls: Default::default(),
            auth_token: "simple".into(),
            auth_token_ttl: Duration::from_secs(300),
            bcrypt_cost: crate::auth::BCRYPT_COST,
            peer_tls: Default::default(),
            cipher_suites: Vec::new(),
        }
    }

    /// A config from flags, checked as etcd checks them.
    pub fn from_flags(flags: &MemberFlags) -> anyhow::Result<Self> {
        let m = &flags.member;
        let c = &flags.clustering;
        let data_dir = PathBuf::from(match m.data_dir.as_deref() {
            Some(dir) if !dir.is_empty() => dir.to_string(),
            _ => format!("{}.raftkv", m.name),
        });
        let wal_dir = wal_dir(&m.wal_dir, &data_dir);
        check_timing(m.heartbeat_interval, m.election_timeout)?;
        let max_request_bytes = check_max_request_bytes(m.max_request_bytes)?;
        if flags
            .experimental
            .experimental_enable_lease_checkpoint_persist
            && !flags.experimental.experimental_enable_lease_checkpoint
        {
            bail!(
                "setting experimental-enable-lease-checkpoint-persist requires experimental-enable-lease-checkpoint"
            );
        }
        for url in m.listen_client_urls.as_slice() {
            check_listen_url(url)?;
        }
        for url in flags.monitoring.listen_metrics_urls.as_slice() {
            check_listen_url(url)?;
        }
        let [listen_peer] = m.listen_peer_urls.as_slice() else {
            bail!(
                "--listen-peer-urls: raftkv listens for peers on exactly one URL (got {:?})",
                m.listen_peer_urls.as_slice()
            );
        };
        check_listen_url(listen_peer)?;
        for url in c.initial_advertise_peer_urls.as_slice() {
            host_port(url)?;
        }
        for url in c.advertise_client_urls.as_slice() {
            host_port(url)?;
        }
        let cipher_suites = crate::tls::cipher::parse_flag(&flags.security.cipher_suites);
        crate::tls::cipher::provider(&cipher_suites)?;
        let mut node = NodeConfig::new(&m.name, data_dir);
        node.wal_dir = wal_dir;
        node.peer_urls = c.initial_advertise_peer_urls.0.clone();
        node.client_urls = c.advertise_client_urls.0.clone();
        node.initial_cluster = parse_initial_cluster(&initial_cluster(flags))?;
        node.initial_cluster_state = match c.initial_cluster_state.as_str() {
            "existing" => ClusterState::Existing,
            _ => ClusterState::New,
        };
        node.initial_cluster_token = c.initial_cluster_token.clone();
        node.heartbeat_interval = Duration::from_millis(m.heartbeat_interval);
        node.election_timeout = Duration::from_millis(m.election_timeout);
        node.snapshot_count = m.snapshot_count;
        node.snapshot_catchup_entries = flags.experimental.raftkv_snapshot_catchup_entries;
        node.max_request_bytes = max_request_bytes;
        node.max_txn_ops = usize::try_from(m.max_txn_ops).unwrap_or(usize::MAX);
        node.strict_reconfig_check = c.strict_reconfig_check;
        // etcd: 0 is its default quota, a negative value none.
        node.quota_backend_bytes = match m.quota_backend_bytes {
            q if q < 0 => None,
            0 => Some(raftkv_raft::config::DEFAULT_QUOTA_BACKEND_BYTES),
            q => Some(q as u64),
        };
        node.auto_compaction =
            auto_compaction(&c.auto_compaction_mode, &c.auto_compaction_retention)
                .map_err(anyhow::Error::msg)?;
        if let Some(every) =
            unless_zero(flags.experimental.raftkv_auto_compaction_revision_interval)
        {
            node.auto_compaction_revision_interval = every;
        }
        match flags.experimental.raftkv_value_segment_bytes {
            0 => {}
            n if (4 << 10..=1 << 30).contains(&n) => node.value_segment_bytes = n,
            n => {
                bail!("--raftkv-value-segment-bytes must be between 4096 and 1073741824 (got {n})")
            }
        }
        node.lease_checkpoint_interval = flags
            .experimental
            .experimental_enable_lease_checkpoint
            .then(|| {
                unless_zero(flags.experimental.raftkv_lease_checkpoint_interval)
                    .unwrap_or(LEASE_CHECKPOINT_INTERVAL)
            });
        node.initial_corrupt_check = flags.experimental.experimental_initial_corrupt_check;
        node.corrupt_check_interval =
            unless_zero(flags.experimental.experimental_corrupt_check_time);
        // etcd: 5 s plus two election timeouts; capped so that a client's default 5 s
        // command timeout sees our error rather than its own.
        node.request_timeout =
            (Duration::from_secs(2) + node.election_timeout * 2).min(Duration::from_millis(3500));
        Ok(Self {
            node,
            listen_client: m.listen_client_urls.0.clone(),
            listen_peer: listen_peer.clone(),
            // grpc-go: 0 streams means no limit.
            max_concurrent_streams: match m.max_concurrent_streams {
                0 => u32::MAX,
                n => n,
            },
            grpc_keepalive_interval: unless_zero(m.grpc_keepalive_interval),
            grpc_keepalive_timeout: unless_zero(m.grpc_keepalive_timeout),
            // etcd keeps its default for 0.
            watch_progress_notify_interval: unless_zero(
                flags
                    .experimental
                    .experimental_watch_progress_notify_interval,
            )
            .unwrap_or(Duration::from_secs(600)),
            snapshot_stall_timeout: unless_zero(flags.experimental.raftkv_snapshot_stall_timeout)
                .unwrap_or(crate::api::SNAPSHOT_STALL_TIMEOUT),
            enable_grpc_gateway: m.enable_grpc_gateway,
            listen_metrics: flags.monitoring.listen_metrics_urls.0.clone(),
            metrics_extensive: flags.monitoring.metrics == "extensive",
            cors: flags.security.cors.clone(),
            host_whitelist: flags.security.host_whitelist.clone(),
            client_tls: crate::tls::ClientTls {
                cert_file: flags.security.cert_file.clone(),
                key_file: flags.security.key_file.clone(),
                trusted_ca_file: flags.security.trusted_ca_file.clone(),
                client_cert_auth: flags.security.client_cert_auth,
                auto_tls: flags.security.auto_tls,
                crl_file: flags.security.client_crl_file.clone(),
                allowed_hostname: flags.security.client_cert_allowed_hostname.clone(),
            },
            auth_token: flags.auth.auth_token.clone(),
            auth_token_ttl: Duration::from_secs(flags.auth.auth_token_ttl),
            bcrypt_cost: u32::try_from(flags.auth.bcrypt_cost).unwrap_or(u32::MAX),
            peer_tls: crate::tls::PeerTls {
                cert_file: flags.security.peer_cert_file.clone(),
                key_file: flags.security.peer_key_file.clone(),
                trusted_ca_file: flags.security.peer_trusted_ca_file.clone(),
                client_cert_auth: flags.security.peer_client_cert_auth,
                auto_tls: flags.security.peer_auto_tls,
                crl_file: flags.security.peer_crl_file.clone(),
                allowed_cn: flags.security.peer_cert_allowed_cn.clone(),
                allowed_hostname: flags.security.peer_cert_allowed_hostname.clone(),
                skip_client_san_verify: flags
                    .experimental
                    .experimental_peer_skip_client_san_verification,
            },
            cipher_suites,
        })
    }
}

/// etcd's checks of flag values that it makes before it starts (its "error verifying flags",
/// which `main` prints as etcd does): the logger and its outputs, the auto-compaction mode.
pub fn verify(flags: &MemberFlags) -> Result<(), String> {
    crate::logging::verify(&flags.logging)?;
    known_compaction_mode(&flags.clustering.auto_compaction_mode)
}

fn known_compaction_mode(mode: &str) -> Result<(), String> {
    match mode {
        "" | "periodic" | "revision" => Ok(()),
        other => Err(format!("unknown auto-compaction-mode {other:?}")),
    }
}

/// etcd's reading of `--auto-compaction-mode` and `--auto-compaction-retention`: a
/// retention that is a whole number is hours (periodic) or revisions (revision); anything
/// else is a Go duration (in revision mode, its nanoseconds are the revisions). `None`: off
/// (a retention of 0). Errors are etcd's messages.
fn auto_compaction(mode: &str, retention: &str) -> Result<Option<AutoCompaction>, String> {
    known_compaction_mode(mode)?;
    let policy = match retention.parse::<i64>() {
        Ok(n) if n >= 0 => match mode {
            "periodic" => {
                AutoCompaction::Periodic(Duration::from_secs((n as u64).saturating_mul(3600)))
            }
            "revision" => AutoCompaction::Revision(n),
            _ => return Ok(None), // etcd reads a number as 0 when the mode is empty
        },
        _ => {
            let nanos = crate::go_values::parse_signed_duration(retention)
                .map_err(|e| format!("error parsing CompactionRetention: {e}"))?;
            if nanos < 0 {
                // etcd would run its compactor with a negative period, without a pause.
                return Err(format!(
                    "error parsing CompactionRetention: negative retention {retention:?}"
                ));
            }
            match mode {
                "periodic" => AutoCompaction::Periodic(Duration::from_nanos(nanos as u64)),
                "revision" => AutoCompaction::Revision(nanos),
                _ if nanos == 0 => return Ok(None),
                _ => return Err(format!("unsupported compaction mode {mode}")),
            }
        }
    };
    Ok(match policy {
        AutoCompaction::Periodic(d) if d.is_zero() => None,
        AutoCompaction::Revision(0) => None,
        p => Some(p),
    })
}

/// etcd's `defaultLeaseCheckpointInterval`.
const LEASE_CHECKPOINT_INTERVAL: Duration = Duration::from_secs(300);

/// etcd's "0 to disable" for the keepalive durations.
fn unless_zero(d: Duration) -> Option<Duration> {
    (!d.is_zero()).then_some(d)
}

/// `--initial-cluster`, or `<name>=<each advertised peer URL>` when only `--name` was
/// changed (`embed.Config.UpdateDefaultClusterFromName`).
fn initial_cluster(flags: &MemberFlags) -> String {
    let c = &flags.clustering;
    if flags.member.name != "default" && c.initial_cluster == DEFAULT_INITIAL_CLUSTER {
        let name = &flags.member.name;
        let urls = c.initial_advertise_peer_urls.as_slice();
        return urls
            .iter()
            .map(|u| format!("{name}={u}"))
            .collect::<Vec<_>>()
            .join(",");
    }
    c.initial_cluster.clone()
}

/// `--wal-dir`: a dedicated directory for the Raft log and vote (etcd's `cfg.WALDir()`),
/// `None` for the data dir's own `member/wal`.
fn wal_dir(wal_dir: &str, data_dir: &Path) -> Option<PathBuf> {
    let own = raftkv_storage::layout::wal_dir(data_dir);
    (!wal_dir.is_empty() && Path::new(wal_dir) != own).then(|| PathBuf::from(wal_dir))
}

/// etcd's checks of `--heartbeat-interval` and `--election-timeout` (`embed.Config.Validate`).
fn check_timing(heartbeat: u64, election: u64) -> anyhow::Result<()> {
    if heartbeat == 0 {
        bail!("--heartbeat-interval must be >0 (set to {heartbeat}ms)");
    }
    if election == 0 {
        bail!("--election-timeout must be >0 (set to {election}ms)");
    }
    if 5 * heartbeat > election {
        bail!(
            "--election-timeout[{election}ms] should be at least as 5 times as --heartbeat-interval[{heartbeat}ms]"
        );
    }
    if election > MAX_ELECTION_TIMEOUT_MS {
        bail!(
            "--election-timeout[{election}ms] is too long, and should be set less than {MAX_ELECTION_TIMEOUT_MS}ms"
        );
    }
    Ok(())
}

/// `--max-request-bytes`, at most [`MAX_REQUEST_BYTES_LIMIT`].
fn check_max_request_bytes(bytes: u64) -> anyhow::Result<usize> {
    match usize::try_from(bytes) {
        Ok(b) if b <= MAX_REQUEST_BYTES_LIMIT => Ok(b),
        _ => bail!(
            "--max-request-bytes {bytes} is above raftkv's limit of {MAX_REQUEST_BYTES_LIMIT} bytes: a request must fit, with room to spare, in one log entry and in one message between members"
        ),
    }
}

/// A listen URL: `http://` or `https://`, and an IP address or `localhost` (etcd binds
/// nothing else).
fn check_listen_url(url: &str) -> anyhow::Result<()> {
    let hp = host_port(url)?;
    let (host, _) = split_host_port(hp).with_context(|| format!("URL {url:?} needs a port"))?;
    if host != "localhost" && host.parse::<std::net::IpAddr>().is_err() {
        bail!("expected IP in URL for binding ({url})");
    }
    Ok(())
}

/// Parses `name=url,name=url,...` (a name may appear more than once for several URLs);
/// each name's URLs sorted, as etcd keeps them.
pub fn parse_initial_cluster(s: &str) -> anyhow::Result<BTreeMap<String, Vec<String>>> {
    let parsed = raftkv_storage::bootstrap::parse_initial_cluster(s).map_err(anyhow::Error::msg)?;
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, urls) in parsed {
        let mut checked = Vec::new();
        for url in urls {
            let url = parse_url(&url).map_err(|e| anyhow::anyhow!("--initial-cluster: {e}"))?;
            host_port(&url)?;
            checked.push(url);
        }
        checked.sort();
        checked.dedup();
        out.insert(name, checked);
    }
    Ok(out)
}

/// The `host:port` of an `http://` or `https://` URL (TLS with the port's certificate
/// flags); other schemes are refused with the reason.
pub fn host_port(url: &str) -> anyhow::Result<&str> {
    let Some(rest) = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
    else {
        let scheme = url.split_once("://").map_or("", |(s, _)| s);
        match scheme {
            "unix" | "unixs" => bail!("unsupported URL {url:?}: unix sockets are not supported"),
            _ => bail!("unsupported URL {url:?}: only http:// and https:// URLs are supported"),
        }
    };
    let hp = rest.trim_end_matches('/');
    if hp.is_empty() || !hp.contains(':') {
        bail!("URL {url:?} needs a host and a port");
    }
    Ok(hp)
}

/// Whether a URL is served (or dialed) over TLS.
pub fn is_https(url: &str) -> bool {
    url.starts_with("https://")
}

/// Resolves a listen URL to a socket address; for a name (`localhost`), its first IPv4
/// address, as Go's `net.Listen` picks.
pub async fn resolve(url: &str) -> anyhow::Result<SocketAddr> {
    let hp = host_port(url)?;
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host(hp)
        .await
        .with_context(|| format!("resolving {url}"))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .with_context(|| format!("{url} resolves to no address"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_compaction_flags_are_read_as_etcd_reads_them() {
        let p = auto_compaction;
        let hours = |h: u64| {
            Ok(Some(AutoCompaction::Periodic(Duration::from_secs(
                h * 3600,
            ))))
        };
        assert_eq!(p("periodic", "0"), Ok(None));
        assert_eq!(p("periodic", "1"), hours(1));
        assert_eq!(p("periodic", "+2"), hours(2));
        assert_eq!(p("periodic", "72"), hours(72));
        assert_eq!(
            p("periodic", "5m"),
            Ok(Some(AutoCompaction::Periodic(Duration::from_secs(300))))
        );
        assert_eq!(p("periodic", "0s"), Ok(None));
        assert_eq!(
            p("revision", "1000"),
            Ok(Some(AutoCompaction::Revision(1000)))
        );
        assert_eq!(p("revision", "0"), Ok(None));
        assert_eq!(
            p("revision", "1us"),
            Ok(Some(AutoCompaction::Revision(1000)))
        );
        // etcd's messages (etcd 3.4.23 with the same flags).
        assert_eq!(
            p("foo", "1"),
            Err("unknown auto-compaction-mode \"foo\"".into())
        );
        assert_eq!(
            p("periodic", "abc"),
            Err("error parsing CompactionRetention: time: invalid duration \"abc\"".into())
        );
        assert_eq!(
            p("periodic", "-1"),
            Err("error parsing CompactionRetention: time: missing unit in duration \"-1\"".into())
        );
        assert!(p("periodic", "-1h").is_err());
        assert_eq!(p("", "5"), Ok(None));
        assert_eq!(p("", "5m"), Err("unsupported compaction mode ".into()));
    }

    fn args(list: &[&str]) -> Vec<OsString> {
        let command = MemberFlags::command();
        let argv = std::iter::once("raftkv").chain(list.iter().copied());
        crate::flags::go_args(argv.map(OsString::from), &command).unwrap()
    }

    fn env(vars: &[(&str, &str)]) -> Vec<(String, String)> {
        vars.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn config(list: &[&str]) -> anyhow::Result<ServerConfig> {
        let loaded = load(&args(list), &[])?;
        ServerConfig::from_flags(&loaded.flags)
    }

    #[test]
    fn initial_cluster_parses_like_etcd() {
        let c = parse_initial_cluster(
            "infra1=http://127.0.0.1:2380,infra2=http://127.0.0.1:22380,infra1=http://10.0.0.1:2380",
        )
        .unwrap();
        assert_eq!(c["infra2"], ["http://127.0.0.1:22380"]);
        assert_eq!(
            c["infra1"],
            ["http://10.0.0.1:2380", "http://127.0.0.1:2380"]
        );
        assert!(parse_initial_cluster("infra1").is_err());
        assert_eq!(
            parse_initial_cluster("a=https://x:1").unwrap()["a"],
            ["https://x:1"]
        );
        assert!(parse_initial_cluster("a=unix://x:1").is_err());
        assert!(parse_initial_cluster("a=http://x:1/path").is_err());
        assert!(parse_initial_cluster("").is_err());
    }

    #[test]
    fn defaults_are_etcds_and_give_etcds_ids() {
        let c = config(&[]).unwrap();
        assert_eq!(c.listen_peer, "http://localhost:2380");
        assert_eq!(c.listen_client, ["http://localhost:2379"]);
        assert_eq!(c.node.member_id(), 0x8e9e_05c5_2164_694d);
        assert_eq!(c.node.data_dir, PathBuf::from("default.raftkv"));
        assert_eq!(c.max_concurrent_streams, u32::MAX);
        assert!(c.node.strict_reconfig_check);
    }

    #[test]
    fn implemented_flags_reach_the_config() {
        let c = config(&[
            "-name",
            "n1",
            "--max-concurrent-streams=7",
            "--grpc-keepalive-interval",
            "30s",
            "--grpc-keepalive-timeout=0",
            "--strict-reconfig-check=false",
            "--max-txn-ops=64",
            "--snapshot-count",
            "10",
        ])
        .unwrap();
        assert_eq!(c.max_concurrent_streams, 7);
        assert_eq!(c.grpc_keepalive_interval, Some(Duration::from_secs(30)));
        assert_eq!(c.grpc_keepalive_timeout, None);
        assert!(!c.node.strict_reconfig_check);
        assert_eq!(c.node.max_txn_ops, 64);
        assert_eq!(c.node.snapshot_count, 10);
        // Only --name changed: the initial cluster is this member at its advertised URL.
        assert_eq!(
            c.node.initial_cluster,
            BTreeMap::from([("n1".to_string(), vec!["http://localhost:2380".to_string()])])
        );
        // TLS on both ports.
        let p = config(&[
            "--listen-peer-urls=https://127.0.0.1:2380",
            "--initial-advertise-peer-urls=https://127.0.0.1:2380",
            "--initial-cluster=default=https://127.0.0.1:2380",
            "--peer-cert-file=p.crt",
            "--peer-key-file=p.key",
            "--peer-trusted-ca-file=ca.crt",
            "--peer-client-cert-auth",
            "--peer-crl-file=p.crl",
            "--peer-cert-allowed-cn=member",
            "--experimental-peer-skip-client-san-verification",
            "--client-crl-file=c.crl",
            "--cipher-suites=TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
        ])
        .unwrap();
        assert_eq!(p.listen_peer, "https://127.0.0.1:2380");
        assert_eq!(p.node.peer_urls, ["https://127.0.0.1:2380"]);
        assert_eq!(
            p.peer_tls,
            crate::tls::PeerTls {
                cert_file: "p.crt".into(),
                key_file: "p.key".into(),
                trusted_ca_file: "ca.crt".into(),
                client_cert_auth: true,
                crl_file: "p.crl".into(),
                allowed_cn: "member".into(),
                skip_client_san_verify: true,
                ..Default::default()
            }
        );
        assert_eq!(p.client_tls.crl_file, "c.crl");
        assert_eq!(p.cipher_suites, ["TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"]);
    }

    #[test]
    fn limits_are_checked_with_etcds_messages() {
        let err = |list: &[&str]| config(list).unwrap_err().to_string();
        assert_eq!(
            err(&["--heartbeat-interval=300"]),
            "--election-timeout[1000ms] should be at least as 5 times as --heartbeat-interval[300ms]"
        );
        assert_eq!(
            err(&["--heartbeat-interval=0"]),
            "--heartbeat-interval must be >0 (set to 0ms)"
        );
        assert_eq!(
            err(&["--election-timeout=60000"]),
            "--election-timeout[60000ms] is too long, and should be set less than 50000ms"
        );
        let too_big = (MAX_REQUEST_BYTES_LIMIT + 1).to_string();
        assert!(err(&["--max-request-bytes", &too_big]).contains(&format!(
            "is above raftkv's limit of {MAX_REQUEST_BYTES_LIMIT} bytes"
        )));
        assert!(config(&["--max-request-bytes", &MAX_REQUEST_BYTES_LIMIT.to_string()]).is_ok());
        assert_eq!(
            err(&["--listen-client-urls=http://127.0.0.1:1"]),
            "--advertise-client-urls is required when --listen-client-urls is set explicitly"
        );
        assert_eq!(
            err(&[
                "--listen-client-urls=http://example.com:1",
                "--advertise-client-urls=http://example.com:1"
            ]),
            "expected IP in URL for binding (http://example.com:1)"
        );
        assert!(
            err(&["--listen-peer-urls=unixs://127.0.0.1:1"])
                .contains("unix sockets are not supported")
        );
        assert_eq!(
            err(&["--cipher-suites=TLS_AES_128_GCM_SHA256,BAD"]),
            "unexpected TLS cipher suite \"BAD\""
        );
        let elsewhere = config(&["--data-dir=/d", "--wal-dir=/w"]).expect("taken");
        assert_eq!(elsewhere.node.wal_dir(), PathBuf::from("/w"));
        let own = config(&["--data-dir=/d", "--wal-dir=/d/member/wal"]).expect("taken");
        assert_eq!(own.node.wal_dir, None);
        assert_eq!(own.node.wal_dir(), PathBuf::from("/d/member/wal"));
        // --auth-token is read as the member starts (its key files then).
        assert_eq!(
            config(&["--auth-token=jwt,sign-method=RS256"])
                .unwrap()
                .auth_token,
            "jwt,sign-method=RS256"
        );
    }

    #[test]
    fn environment_fills_in_what_the_command_line_left() {
        let loaded = load(
            &args(&["--name", "n1"]),
            &env(&[
                ("ETCD_INITIAL_CLUSTER_TOKEN", "tok-T"),
                ("ETCD_MAX_CONCURRENT_STREAMS", "9"),
                ("ETCDCTL_API", "3"),
            ]),
        )
        .unwrap();
        assert_eq!(loaded.flags.member.name, "n1");
        assert_eq!(loaded.flags.clustering.initial_cluster_token, "tok-T");
        assert_eq!(loaded.flags.member.max_concurrent_streams, 9);
        // Environment-set URLs count as set for etcd's advertise-client-urls rule.
        let err = load(
            &args(&[]),
            &env(&[("ETCD_LISTEN_CLIENT_URLS", "http://127.0.0.1:1")]),
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("--advertise-client-urls is required")
        );
        let err = load(&args(&["--name", "a"]), &env(&[("ETCD_NAME", "b")])).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("conflicting environment variable \"ETCD_NAME\"")
        );
    }

    #[test]
    fn a_config_file_replaces_flags_and_environment() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("etcd.yaml");
        std::fs::write(
            &path,
            "name: y1\ninitial-cluster-token: tok-yaml\nlisten-peer-urls: http://127.0.0.1:24880\n\
             initial-advertise-peer-urls: http://127.0.0.1:24880\n\
             initial-cluster: y1=http://127.0.0.1:24880\ngrpc-keepalive-timeout: 5000000000\n\
             strict-reconfig-check: false\n",
        )
        .unwrap();
        let path = path.to_str().unwrap();
        for (cli, vars) in [
            (
                vec![
                    "--config-file",
                    path,
                    "--name",
                    "flag",
                    "--snapshot-count=7",
                ],
                vec![("ETCD_NAME", "env")],
            ),
            (
                vec!["--name", "flag"],
                vec![("ETCD_CONFIG_FILE", path), ("ETCD_NAME", "env")],
            ),
        ] {
            let loaded = load(&args(&cli), &env(&vars)).unwrap();
            assert_eq!(loaded.flags.member.name, "y1");
            assert_eq!(loaded.flags.member.snapshot_count, 100_000);
            assert_eq!(
                loaded.notices[0].message,
                format!(
                    "Loading server configuration from {path:?}. Other configuration command line flags and environment variables will be ignored if provided."
                )
            );
            let c = ServerConfig::from_flags(&loaded.flags).unwrap();
            assert_eq!(c.node.member_id(), 0xbc13_6034_1da9_803c);
            assert_eq!(c.grpc_keepalive_timeout, Some(Duration::from_secs(5)));
            assert!(!c.node.strict_reconfig_check);
        }
        // etcd's full example (every key etcd 3.4 reads) configures a member, with the id a
        // real etcd gave it.
        let example = dir.path().join("example.yaml");
        std::fs::write(
            &example,
            include_str!("../testdata/etcd_config_example.yaml"),
        )
        .unwrap();
        let loaded = load(&args(&["--config-file", example.to_str().unwrap()]), &[]).unwrap();
        let c = ServerConfig::from_flags(&loaded.flags).unwrap();
        assert_eq!(c.node.member_id(), 0xbc13_6034_1da9_803c);
        assert_eq!(c.listen_client.len(), 2);
        // TLS in a config file is read like the flags.
        std::fs::write(
            dir.path().join("tls.yaml"),
            "client-transport-security:\n  cert-file: c.crt\n  key-file: c.key\n  client-cert-auth: true\n",
        )
        .unwrap();
        let tls = dir.path().join("tls.yaml");
        let loaded = load(&args(&["--config-file", tls.to_str().unwrap()]), &[]).unwrap();
        let c = ServerConfig::from_flags(&loaded.flags).unwrap();
        assert_eq!(c.client_tls.cert_file, "c.crt");
        assert_eq!(c.client_tls.key_file, "c.key");
        assert!(c.client_tls.client_cert_auth);
        std::fs::write(
            dir.path().join("peer-tls.yaml"),
            "peer-transport-security:\n  cert-file: c.crt\n",
        )
        .unwrap();
        let tls = dir.path().join("peer-tls.yaml");
        let loaded = load(&args(&["--config-file", tls.to_str().unwrap()]), &[]).unwrap();
        let c = ServerConfig::from_flags(&loaded.flags).unwrap();
        assert_eq!(c.peer_tls.cert_file, "c.crt");
        let missing = load(&args(&["--config-file", "/nonexistent.yaml"]), &[]).unwrap_err();
        assert!(format!("{missing:#}").contains("/nonexistent.yaml"));
    }
}
