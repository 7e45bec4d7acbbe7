//! Every etcd 3.4 member flag, as the `raftkv` command line reads it: etcd's names, help
//! texts (the doc comments) and defaults, in the sections of `etcd --help`, and Go's flag
//! syntax on top of clap:
//!
//! - `-flag` and `--flag` are the same flag; values as `--flag value` or `--flag=value`
//!   ([`go_args`] rewrites single dashes before clap sees them).
//! - a boolean flag is `--flag` or `--flag=true|false` (`--flag false` is an error, as in Go);
//! - a repeated flag keeps its last value; a value may start with `-`;
//! - numbers, durations and URL lists as [`crate::go_values`] parses them.
//!
//! Which flags raftkv implements, ignores (with a log line) or refuses: `flag_policy`.

// The flags' doc comments are etcd's help text as `etcd --help` prints it, not Markdown.
#![allow(rustdoc::invalid_html_tags, rustdoc::broken_intra_doc_links)]

use std::ffi::OsString;
use std::time::Duration;

use clap::{ArgAction, Args, Command};

use crate::go_values::{
    Urls, parse_bool, parse_cors, parse_duration, parse_int, parse_u32, parse_uint, parse_urls,
};

/// A member's flags: etcd 3.4's, plus raftkv's `--log-format`.
#[derive(Debug, Clone, Args)]
pub struct MemberFlags {
    /// etcd's "Member" flags.
    #[command(flatten)]
    pub member: Member,
    /// etcd's "Clustering" flags.
    #[command(flatten)]
    pub clustering: Clustering,
    /// etcd's "Security" flags (TLS, CORS).
    #[command(flatten)]
    pub security: Security,
    /// etcd's "Auth" flags.
    #[command(flatten)]
    pub auth: Auth,
    /// etcd's "Profiling and Monitoring" flags.
    #[command(flatten)]
    pub monitoring: Monitoring,
    /// etcd's logging flags, and raftkv's `--log-format`.
    #[command(flatten)]
    pub logging: Logging,
    /// etcd's v2 proxy flags.
    #[command(flatten)]
    pub proxy: Proxy,
    /// etcd's "Experimental feature" flags.
    #[command(flatten)]
    pub experimental: Experimental,
    /// etcd's "Unsafe feature" flags.
    #[command(flatten)]
    pub unsafe_flags: Unsafe,
    /// Flags etcd 3.4 accepts and ignores.
    #[command(flatten)]
    pub ignored: Ignored,
}

/// etcd's "Member" section.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Member")]
pub struct Member {
    /// Path to the server configuration file (etcd's YAML). Note that if a configuration file is provided, other command line flags and environment variables will be ignored.
    #[arg(long)]
    pub config_file: Option<String>,
    /// Human-readable name for this member.
    #[arg(long, default_value = "default")]
    pub name: String,
    /// Path to the data directory [default: <name>.raftkv].
    #[arg(long)]
    pub data_dir: Option<String>,
    /// Path to the dedicated wal directory.
    #[arg(long, default_value = "")]
    pub wal_dir: String,
    /// Number of committed transactions to trigger a snapshot to disk.
    #[arg(long, default_value = "100000", value_parser = parse_uint)]
    pub snapshot_count: u64,
    /// Time (in milliseconds) of a heartbeat interval.
    #[arg(long, default_value = "100", value_parser = parse_uint)]
    pub heartbeat_interval: u64,
    /// Time (in milliseconds) for an election to timeout. See tuning documentation for details.
    #[arg(long, default_value = "1000", value_parser = parse_uint)]
    pub election_timeout: u64,
    /// Whether to fast-forward initial election ticks on boot for faster election.
    #[arg(long, default_value_t = true)]
    pub initial_election_tick_advance: bool,
    /// List of URLs to listen on for peer traffic.
    #[arg(long, default_value = "http://localhost:2380", value_parser = parse_urls)]
    pub listen_peer_urls: Urls,
    /// List of URLs to listen on for client traffic.
    #[arg(long, default_value = "http://localhost:2379", value_parser = parse_urls)]
    pub listen_client_urls: Urls,
    /// Maximum number of snapshot files to retain (0 is unlimited).
    #[arg(long, default_value = "5", value_parser = parse_uint)]
    pub max_snapshots: u64,
    /// Maximum number of wal files to retain (0 is unlimited).
    #[arg(long, default_value = "5", value_parser = parse_uint)]
    pub max_wals: u64,
    /// Raise alarms when backend size exceeds the given quota (0 defaults to low space quota).
    #[arg(long, default_value = "0", value_parser = parse_int)]
    pub quota_backend_bytes: i64,
    /// BackendBatchInterval is the maximum time before commit the backend transaction.
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    pub backend_batch_interval: Duration,
    /// BackendBatchLimit is the maximum operations before commit the backend transaction.
    #[arg(long, default_value = "0", value_parser = parse_int)]
    pub backend_batch_limit: i64,
    /// Maximum number of operations permitted in a transaction.
    #[arg(long, default_value = "128", value_parser = parse_uint)]
    pub max_txn_ops: u64,
    /// Maximum client request size in bytes the server will accept.
    #[arg(long, default_value = "1572864", value_parser = parse_uint)]
    pub max_request_bytes: u64,
    /// Maximum concurrent streams that each client can open at a time.
    #[arg(long, default_value = "4294967295", value_parser = parse_u32)]
    pub max_concurrent_streams: u32,
    /// Minimum duration interval that a client should wait before pinging server.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub grpc_keepalive_min_time: Duration,
    /// Frequency duration of server-to-client ping to check if a connection is alive (0 to disable).
    #[arg(long, default_value = "2h", value_parser = parse_duration)]
    pub grpc_keepalive_interval: Duration,
    /// Additional duration of wait before closing a non-responsive connection (0 to disable).
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    pub grpc_keepalive_timeout: Duration,
    /// Enable GRPC gateway.
    #[arg(long, default_value_t = true, hide = true)]
    pub enable_grpc_gateway: bool,
}

/// etcd's "Clustering" section.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Clustering")]
pub struct Clustering {
    /// List of this member's peer URLs to advertise to the rest of the cluster.
    #[arg(long, default_value = "http://localhost:2380", value_parser = parse_urls)]
    pub initial_advertise_peer_urls: Urls,
    /// Initial cluster configuration for bootstrapping.
    #[arg(long, default_value = "default=http://localhost:2380")]
    pub initial_cluster: String,
    /// Initial cluster state ('new' or 'existing').
    #[arg(long, default_value = "new", value_parser = ["new", "existing"])]
    pub initial_cluster_state: String,
    /// Initial cluster token for the etcd cluster during bootstrap. Specifying this can protect you from unintended cross-cluster interaction when running multiple clusters.
    #[arg(long, default_value = "etcd-cluster")]
    pub initial_cluster_token: String,
    /// List of this member's client URLs to advertise to the public. The client URLs advertised should be accessible to machines that talk to etcd cluster. etcd client libraries parse these URLs to connect to the cluster.
    #[arg(long, default_value = "http://localhost:2379", value_parser = parse_urls)]
    pub advertise_client_urls: Urls,
    /// Discovery URL used to bootstrap the cluster.
    #[arg(long, default_value = "")]
    pub discovery: String,
    /// Expected behavior ('exit' or 'proxy') when discovery services fails. "proxy" supports v2 API only.
    #[arg(long, default_value = "proxy", value_parser = ["proxy", "exit"])]
    pub discovery_fallback: String,
    /// HTTP proxy to use for traffic to discovery service.
    #[arg(long, default_value = "")]
    pub discovery_proxy: String,
    /// DNS srv domain used to bootstrap the cluster.
    #[arg(long, default_value = "")]
    pub discovery_srv: String,
    /// Suffix to the dns srv name queried when bootstrapping.
    #[arg(long, default_value = "")]
    pub discovery_srv_name: String,
    /// Reject reconfiguration requests that would cause quorum loss.
    #[arg(long, default_value_t = true)]
    pub strict_reconfig_check: bool,
    /// Enable to run an additional Raft election phase.
    #[arg(long)]
    pub pre_vote: bool,
    /// Auto compaction retention length. 0 means disable auto compaction.
    #[arg(long, default_value = "0")]
    pub auto_compaction_retention: String,
    /// Interpret 'auto-compaction-retention' one of: periodic|revision. 'periodic' for duration based retention, defaulting to hours if no time unit is provided (e.g. '5m'). 'revision' for revision number based retention.
    #[arg(long, default_value = "periodic")]
    pub auto_compaction_mode: String,
    /// Accept etcd V2 client requests.
    #[arg(long)]
    pub enable_v2: bool,
}

/// etcd's "Security" section.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Security")]
pub struct Security {
    /// Path to the client server TLS cert file.
    #[arg(long, default_value = "")]
    pub cert_file: String,
    /// Path to the client server TLS key file.
    #[arg(long, default_value = "")]
    pub key_file: String,
    /// Enable client cert authentication.
    #[arg(long)]
    pub client_cert_auth: bool,
    /// Path to the client certificate revocation list file.
    #[arg(long, default_value = "")]
    pub client_crl_file: String,
    /// Allowed TLS hostname for client cert authentication.
    #[arg(long, default_value = "")]
    pub client_cert_allowed_hostname: String,
    /// Path to the client server TLS trusted CA cert file.
    #[arg(long, default_value = "")]
    pub trusted_ca_file: String,
    /// Client TLS using generated certificates.
    #[arg(long)]
    pub auto_tls: bool,
    /// Path to the peer server TLS cert file.
    #[arg(long, default_value = "")]
    pub peer_cert_file: String,
    /// Path to the peer server TLS key file.
    #[arg(long, default_value = "")]
    pub peer_key_file: String,
    /// Enable peer client cert authentication.
    #[arg(long)]
    pub peer_client_cert_auth: bool,
    /// Path to the peer server TLS trusted CA file.
    #[arg(long, default_value = "")]
    pub peer_trusted_ca_file: String,
    /// Required CN for client certs connecting to the peer endpoint.
    #[arg(long, default_value = "")]
    pub peer_cert_allowed_cn: String,
    /// Allowed TLS hostname for inter peer authentication.
    #[arg(long, default_value = "")]
    pub peer_cert_allowed_hostname: String,
    /// Peer TLS using self-generated certificates if --peer-key-file and --peer-cert-file are not provided.
    #[arg(long)]
    pub peer_auto_tls: bool,
    /// Path to the peer certificate revocation list file.
    #[arg(long, default_value = "")]
    pub peer_crl_file: String,
    /// Comma-separated list of supported TLS cipher suites between client/server and peers (empty will be auto-populated by Go).
    #[arg(long, default_value = "")]
    pub cipher_suites: String,
    /// Comma-separated whitelist of origins for CORS, or cross-origin resource sharing, (empty or * means allow all).
    #[arg(long, default_value = "*", value_parser = parse_cors)]
    pub cors: String,
    /// Acceptable hostnames from HTTP client requests, if server is not secure (empty or * means allow all).
    #[arg(long, default_value = "*")]
    pub host_whitelist: String,
}

/// etcd's "Auth" section.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Auth")]
pub struct Auth {
    /// Specify a v3 authentication token type and its options ('simple' or 'jwt').
    #[arg(long, default_value = "simple")]
    pub auth_token: String,
    /// Specify the cost / strength of the bcrypt algorithm for hashing auth passwords. Valid values are between 4 and 31.
    #[arg(long, default_value = "10", value_parser = parse_uint)]
    pub bcrypt_cost: u64,
    /// Time (in seconds) of the auth-token-ttl.
    #[arg(long, default_value = "300", value_parser = parse_uint)]
    pub auth_token_ttl: u64,
}

/// etcd's "Profiling and Monitoring" section.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Profiling and Monitoring")]
pub struct Monitoring {
    /// Enable runtime profiling data via HTTP server. Address is at client URL + "/debug/pprof/"
    #[arg(long)]
    pub enable_pprof: bool,
    /// Set level of detail for exported metrics, specify 'extensive' to include histogram metrics.
    #[arg(long, default_value = "basic")]
    pub metrics: String,
    /// List of URLs to listen on for the metrics and health endpoints.
    #[arg(long, default_value = "", value_parser = parse_urls)]
    pub listen_metrics_urls: Urls,
}

/// etcd's "Logging" section (and its deprecated logging flags), plus raftkv's `--log-format`.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Logging")]
pub struct Logging {
    /// Specify 'zap' for structured logging or 'capnslog'. (raftkv: see --log-format.)
    #[arg(long, default_value = "capnslog")]
    pub logger: String,
    /// Specify 'stdout' or 'stderr' to skip journald logging even when running under systemd, or list of comma separated output targets.
    #[arg(long, default_value = "default")]
    pub log_outputs: String,
    /// Configures log level. Only supports debug, info, warn, error, panic, or fatal (RUST_LOG overrides it).
    #[arg(long, default_value = "info")]
    pub log_level: String,
    /// raftkv: log format, text or json (in a config file: log-format).
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
    /// Enable debug-level logging for etcd. [WARN] Will be deprecated in v3.5. Use '--log-level=debug' instead.
    #[arg(long)]
    pub debug: bool,
    /// Specify a particular log level for each etcd package (eg: 'etcdmain=CRITICAL,etcdserver=DEBUG').
    #[arg(long, default_value = "")]
    pub log_package_levels: String,
    /// Deprecated alias of --log-outputs.
    #[arg(long, default_value = "default", hide = true)]
    pub log_output: String,
}

/// etcd's "v2 Proxy" section.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "v2 Proxy (to be deprecated in v4)")]
pub struct Proxy {
    /// Proxy mode setting ('off', 'readonly' or 'on').
    #[arg(long, default_value = "off", value_parser = ["off", "readonly", "on"])]
    pub proxy: String,
    /// Time (in milliseconds) an endpoint will be held in a failed state.
    #[arg(long, default_value = "5000", value_parser = parse_uint)]
    pub proxy_failure_wait: u64,
    /// Time (in milliseconds) of the endpoints refresh interval.
    #[arg(long, default_value = "30000", value_parser = parse_uint)]
    pub proxy_refresh_interval: u64,
    /// Time (in milliseconds) for a dial to timeout.
    #[arg(long, default_value = "1000", value_parser = parse_uint)]
    pub proxy_dial_timeout: u64,
    /// Time (in milliseconds) for a write to timeout.
    #[arg(long, default_value = "5000", value_parser = parse_uint)]
    pub proxy_write_timeout: u64,
    /// Time (in milliseconds) for a read to timeout.
    #[arg(long, default_value = "0", value_parser = parse_uint)]
    pub proxy_read_timeout: u64,
}

/// etcd's "Experimental feature" section.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Experimental feature")]
pub struct Experimental {
    /// Enable to check data corruption before serving any client/peer traffic.
    #[arg(long)]
    pub experimental_initial_corrupt_check: bool,
    /// Duration of time between cluster corruption check passes.
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    pub experimental_corrupt_check_time: Duration,
    /// Serve v2 requests through the v3 backend under a given prefix.
    #[arg(long, default_value = "")]
    pub experimental_enable_v2v3: String,
    /// ExperimentalBackendFreelistType specifies the type of freelist that boltdb backend uses(array and map are supported types).
    #[arg(long, default_value = "array")]
    pub experimental_backend_bbolt_freelist_type: String,
    /// ExperimentalEnableLeaseCheckpoint enables primary lessor to persist lease remainingTTL to prevent indefinite auto-renewal of long lived leases.
    #[arg(long)]
    pub experimental_enable_lease_checkpoint: bool,
    /// Persist lease remainingTTL checkpoints (requires --experimental-enable-lease-checkpoint).
    #[arg(long, hide = true)]
    pub experimental_enable_lease_checkpoint_persist: bool,
    /// raftkv's own: the time between a lease's checkpoints (etcd's fixed 5 minutes when 0).
    #[arg(long, hide = true, default_value = "0s", value_parser = parse_duration)]
    pub raftkv_lease_checkpoint_interval: Duration,
    /// raftkv's own: how often --auto-compaction-mode=revision looks (etcd's fixed 5 minutes
    /// when 0).
    #[arg(long, hide = true, default_value = "0s", value_parser = parse_duration)]
    pub raftkv_auto_compaction_revision_interval: Duration,
    /// raftkv's own: entries kept in the log behind a snapshot, for followers a little
    /// behind to catch up from (etcd 3.4's fixed 5,000).
    #[arg(long, hide = true, default_value_t = raftkv_raft::config::SNAPSHOT_CATCHUP_ENTRIES, value_parser = parse_uint)]
    pub raftkv_snapshot_catchup_entries: u64,
    /// raftkv's own: the size of a new value log segment, between 4 KiB and 1 GiB (64 MiB
    /// when 0; tests use small ones).
    #[arg(long, hide = true, default_value_t = 0, value_parser = parse_uint)]
    pub raftkv_value_segment_bytes: u64,
    /// raftkv's own: how long a Snapshot stream waits for its client to take the next piece
    /// before it ends with an error and gives up its turn (30 s when 0; etcd waits forever).
    #[arg(long, hide = true, default_value = "0s", value_parser = parse_duration)]
    pub raftkv_snapshot_stall_timeout: Duration,
    /// ExperimentalCompactionBatchLimit sets the maximum revisions deleted in each compaction batch.
    #[arg(long, default_value = "1000", value_parser = parse_int)]
    pub experimental_compaction_batch_limit: i64,
    /// Skip verification of SAN field in client certificate for peer connections.
    #[arg(long)]
    pub experimental_peer_skip_client_san_verification: bool,
    /// Duration of periodical watch progress notification.
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    pub experimental_watch_progress_notify_interval: Duration,
    /// Warning is generated if requests take more than this duration.
    #[arg(long, default_value = "100ms", value_parser = parse_duration)]
    pub experimental_warning_apply_duration: Duration,
}

/// etcd's "Unsafe feature" section. CAUTIOUS with unsafe flag! It may break the guarantees
/// given by the consensus protocol!
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Unsafe feature")]
pub struct Unsafe {
    /// Force to create a new one-member cluster.
    #[arg(long)]
    pub force_new_cluster: bool,
    /// Disables fsync, unsafe, will cause data loss.
    #[arg(long, hide = true)]
    pub unsafe_no_fsync: bool,
}

/// The flags etcd 3.4 still accepts and ignores (`etcdmain/config.go` `ignored`): each takes
/// an optional `=value`, and its use logs `flag "-name" is no longer supported - ignoring.`
#[derive(Debug, Clone, Args)]
pub struct Ignored {
    #[arg(long, hide = true, num_args = 0..=1, require_equals = true, default_missing_value = "")]
    cluster_active_size: Option<String>,
    #[arg(long, hide = true, num_args = 0..=1, require_equals = true, default_missing_value = "")]
    cluster_remove_delay: Option<String>,
    #[arg(long, hide = true, num_args = 0..=1, require_equals = true, default_missing_value = "")]
    cluster_sync_interval: Option<String>,
    #[arg(long, hide = true, num_args = 0..=1, require_equals = true, default_missing_value = "")]
    config: Option<String>,
    #[arg(long, hide = true, num_args = 0..=1, require_equals = true, default_missing_value = "")]
    force: Option<String>,
    #[arg(long, hide = true, num_args = 0..=1, require_equals = true, default_missing_value = "")]
    max_result_buffer: Option<String>,
    #[arg(long, hide = true, num_args = 0..=1, require_equals = true, default_missing_value = "")]
    max_retry_attempts: Option<String>,
    #[arg(long, hide = true, num_args = 0..=1, require_equals = true, default_missing_value = "")]
    peer_heartbeat_interval: Option<String>,
    #[arg(long, hide = true, num_args = 0..=1, require_equals = true, default_missing_value = "")]
    peer_election_timeout: Option<String>,
    #[arg(long, hide = true, num_args = 0..=1, require_equals = true, default_missing_value = "")]
    retry_interval: Option<String>,
    #[arg(long, hide = true, num_args = 0..=1, require_equals = true, default_missing_value = "")]
    snapshot: Option<String>,
    #[arg(long, hide = true, num_args = 0..=1, require_equals = true, default_missing_value = "")]
    v: Option<String>,
    #[arg(long, hide = true, num_args = 0..=1, require_equals = true, default_missing_value = "")]
    vv: Option<String>,
    #[arg(long = "test.coverprofile", hide = true, num_args = 0..=1, require_equals = true, default_missing_value = "")]
    test_coverprofile: Option<String>,
    #[arg(long = "test.outputdir", hide = true, num_args = 0..=1, require_equals = true, default_missing_value = "")]
    test_outputdir: Option<String>,
}

impl Ignored {
    /// The ignored flags that were given, by name.
    pub fn given(&self) -> Vec<&'static str> {
        let all = [
            ("cluster-active-size", &self.cluster_active_size),
            ("cluster-remove-delay", &self.cluster_remove_delay),
            ("cluster-sync-interval", &self.cluster_sync_interval),
            ("config", &self.config),
            ("force", &self.force),
            ("max-result-buffer", &self.max_result_buffer),
            ("max-retry-attempts", &self.max_retry_attempts),
            ("peer-heartbeat-interval", &self.peer_heartbeat_interval),
            ("peer-election-timeout", &self.peer_election_timeout),
            ("retry-interval", &self.retry_interval),
            ("snapshot", &self.snapshot),
            ("v", &self.v),
            ("vv", &self.vv),
            ("test.coverprofile", &self.test_coverprofile),
            ("test.outputdir", &self.test_outputdir),
        ];
        all.into_iter()
            .filter(|(_, value)| value.is_some())
            .map(|(name, _)| name)
            .collect()
    }
}

impl MemberFlags {
    /// The command that parses member flags alone, with Go's syntax.
    pub fn command() -> Command {
        go_style(<Self as Args>::augment_args(Command::new("raftkv")))
    }

    /// Every flag at etcd's default.
    pub fn defaults() -> Self {
        let matches = Self::command()
            .try_get_matches_from(["raftkv"])
            .expect("every member flag has a valid default");
        <Self as clap::FromArgMatches>::from_arg_matches(&matches)
            .expect("defaults match the flag types")
    }
}

/// Gives a command's flags Go's syntax: a boolean flag takes an optional `=value`
/// (`strconv.ParseBool`), a repeated flag keeps its last value, and a flag's value may start
/// with `-` (Go takes the next argument as the value whatever it is).
pub fn go_style(command: Command) -> Command {
    command.args_override_self(true).mut_args(|arg| {
        if matches!(arg.get_action(), ArgAction::SetTrue) {
            let unset = arg.get_default_values().is_empty();
            let arg = arg
                .action(ArgAction::Set)
                .value_parser(parse_bool)
                .num_args(0..=1)
                .require_equals(true)
                .default_missing_value("true");
            if unset {
                arg.default_value("false")
            } else {
                arg
            }
        } else if arg.get_action().takes_values() && !arg.is_require_equals_set() {
            arg.allow_hyphen_values(true)
        } else {
            arg
        }
    })
}

/// A refused flag value in the words of Go's `flag` package, as etcd prints it before its
/// usage: `invalid value "abc" for flag -snapshot-count: parse error`, `invalid boolean value
/// "maybe" for -strict-reconfig-check: parse error`, `... -initial-cluster-state: invalid
/// value`. `None` for clap's other errors.
pub fn go_flag_error(e: &clap::Error, command: &Command) -> Option<String> {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    let reason = match e.kind() {
        ErrorKind::ValueValidation => crate::env::clap_reason(e),
        // A value outside a fixed list (etcd's SelectiveStringValue).
        ErrorKind::InvalidValue => "invalid value".to_string(),
        _ => return None,
    };
    let text = |kind| match e.get(kind) {
        Some(ContextValue::String(s)) => Some(s.clone()),
        _ => None,
    };
    let arg = text(ContextKind::InvalidArg)?;
    let value = text(ContextKind::InvalidValue)?;
    let name = arg
        .trim_start_matches('-')
        .split([' ', '[', '='])
        .next()
        .unwrap_or_default()
        .to_string();
    // Booleans are the flags that may stand alone or take `=value` (see `go_style`).
    let boolean = command.get_arguments().any(|a| {
        a.get_long() == Some(name.as_str())
            && a.is_require_equals_set()
            && a.get_num_args()
                .is_some_and(|n| n.min_values() == 0 && n.max_values() == 1)
    });
    Some(if boolean {
        format!("invalid boolean value {value:?} for -{name}: {reason}")
    } else {
        format!("invalid value {value:?} for flag -{name}: {reason}")
    })
}

/// Rewrites Go-style arguments for clap: `-flag` → `--flag`, `-h`/`-help` → `--help`,
/// `-version` → `--version`, leaving flag values and everything from a subcommand on as they
/// are. A stray word where a flag should be is an error, with etcd's message.
pub fn go_args(
    args: impl IntoIterator<Item = OsString>,
    command: &Command,
) -> Result<Vec<OsString>, String> {
    let mut args = args.into_iter();
    let mut out: Vec<OsString> = args.next().into_iter().collect();
    while let Some(arg) = args.next() {
        let Some(text) = arg.to_str() else {
            out.push(arg);
            continue;
        };
        if text == "--" {
            out.push(arg);
            out.extend(args);
            break;
        }
        let flag = text
            .strip_prefix("--")
            .or_else(|| text.strip_prefix('-'))
            .filter(|f| !f.is_empty() && !f.starts_with('-'));
        let Some(flag) = flag else {
            if text == "help" || command.find_subcommand(text).is_some() {
                out.push(arg);
                out.extend(args);
                break;
            }
            return Err(format!("'{text}' is not a valid flag"));
        };
        let (name, value) = match flag.split_once('=') {
            Some((name, value)) => (name, Some(value)),
            None => (flag, None),
        };
        out.push(match (name, value) {
            ("h" | "help", None) => "--help".into(),
            ("V" | "version", None) => "--version".into(),
            _ => format!("--{flag}").into(),
        });
        if value.is_none()
            && takes_separate_value(command, name)
            && let Some(value) = args.next()
        {
            out.push(value);
        }
    }
    Ok(out)
}

/// Whether `--flag` without `=` takes the next argument as its value (every flag but the
/// booleans and etcd's ignored ones).
fn takes_separate_value(command: &Command, flag: &str) -> bool {
    command
        .get_arguments()
        .find(|a| a.get_long() == Some(flag))
        .is_some_and(|a| a.get_action().takes_values() && !a.is_require_equals_set())
}

/// The `ETCD_*` variable etcd reads for a flag (`pkg/flags` `FlagToEnv`).
pub fn env_name(flag: &str) -> String {
    format!("ETCD_{}", flag.replace('-', "_").to_uppercase())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::FromArgMatches;

    fn parse(args: &[&str]) -> Result<MemberFlags, String> {
        let command = MemberFlags::command();
        let argv = std::iter::once("raftkv").chain(args.iter().copied());
        let args = go_args(argv.map(OsString::from), &command)?;
        let matches = command
            .try_get_matches_from(args)
            .map_err(|e| e.to_string())?;
        MemberFlags::from_arg_matches(&matches).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_are_etcds() {
        let f = MemberFlags::defaults();
        assert_eq!(f.member.name, "default");
        assert_eq!(f.member.max_concurrent_streams, u32::MAX);
        assert_eq!(f.member.grpc_keepalive_interval, Duration::from_secs(7200));
        assert_eq!(f.member.grpc_keepalive_timeout, Duration::from_secs(20));
        assert!(f.clustering.strict_reconfig_check);
        assert!(!f.clustering.enable_v2);
        assert_eq!(
            f.clustering.initial_advertise_peer_urls.0,
            ["http://localhost:2380"]
        );
        assert_eq!(
            f.clustering.initial_cluster,
            "default=http://localhost:2380"
        );
        assert!(f.monitoring.listen_metrics_urls.0.is_empty());
        assert!(f.ignored.given().is_empty());
    }

    #[test]
    fn single_and_double_dashes_with_or_without_equals() {
        for args in [
            &["--name", "x"][..],
            &["-name", "x"],
            &["--name=x"],
            &["-name=x"],
        ] {
            assert_eq!(parse(args).unwrap().member.name, "x", "{args:?}");
        }
        let f = parse(&["-heartbeat-interval", "0x10", "--snapshot-count=1_000"]).unwrap();
        assert_eq!(f.member.heartbeat_interval, 16);
        assert_eq!(f.member.snapshot_count, 1000);
        // etcd 3.4's fixed SnapshotCatchUpEntries unless set; negative or text is refused.
        let kept = |f: MemberFlags| f.experimental.raftkv_snapshot_catchup_entries;
        assert_eq!(kept(parse(&[]).unwrap()), 5_000);
        assert_eq!(
            kept(parse(&["--raftkv-snapshot-catchup-entries=0"]).unwrap()),
            0
        );
        assert!(parse(&["--raftkv-snapshot-catchup-entries=-1"]).is_err());
        assert!(parse(&["--raftkv-snapshot-catchup-entries=many"]).is_err());
    }

    #[test]
    fn booleans_take_go_syntax() {
        assert!(parse(&["--enable-v2"]).unwrap().clustering.enable_v2);
        assert!(parse(&["-enable-v2=true"]).unwrap().clustering.enable_v2);
        assert!(parse(&["--enable-v2=T"]).unwrap().clustering.enable_v2);
        assert!(!parse(&["--enable-v2=false"]).unwrap().clustering.enable_v2);
        assert!(
            !parse(&["--strict-reconfig-check=false"])
                .unwrap()
                .clustering
                .strict_reconfig_check
        );
        assert!(
            parse(&["--experimental-initial-corrupt-check"])
                .unwrap()
                .experimental
                .experimental_initial_corrupt_check
        );
        // As in Go, `--flag false` leaves `false` as a stray argument.
        assert_eq!(
            parse(&["--enable-v2", "false"]).unwrap_err(),
            "'false' is not a valid flag"
        );
        assert!(parse(&["--enable-v2=yes"]).is_err());
    }

    #[test]
    fn values_and_repeats_as_in_go() {
        // The last of a repeated flag wins; a value may start with a dash.
        let f = parse(&[
            "--name",
            "a",
            "--name",
            "b",
            "--initial-cluster-token",
            "-t",
        ])
        .unwrap();
        assert_eq!(f.member.name, "b");
        assert_eq!(f.clustering.initial_cluster_token, "-t");
        let f = parse(&[
            "--listen-client-urls=http://127.0.0.1:1,http://127.0.0.1:2",
            "--listen-client-urls=http://127.0.0.1:3",
        ])
        .unwrap();
        assert_eq!(f.member.listen_client_urls.0, ["http://127.0.0.1:3"]);
        assert!(parse(&["--heartbeat-interval", "-1"]).is_err());
        assert!(parse(&["--heartbeat-interval", "1e9"]).is_err());
        assert!(parse(&["--backend-batch-interval", "5"]).is_err());
        let f = parse(&[
            "--grpc-keepalive-interval=1m30s",
            "-grpc-keepalive-timeout",
            "100ms",
            "--max-concurrent-streams",
            "100",
        ])
        .unwrap();
        assert_eq!(f.member.grpc_keepalive_interval, Duration::from_secs(90));
        assert_eq!(f.member.grpc_keepalive_timeout, Duration::from_millis(100));
        assert_eq!(f.member.max_concurrent_streams, 100);
        assert!(parse(&["--max-concurrent-streams", "4294967296"]).is_err());
        assert!(parse(&["--initial-cluster-state", "bogus"]).is_err());
        assert!(parse(&["--listen-peer-urls", "localhost:2380"]).is_err());
        assert!(parse(&["--no-such-flag"]).is_err());
        assert_eq!(
            parse(&["stray"]).unwrap_err(),
            "'stray' is not a valid flag"
        );
    }

    #[test]
    fn ignored_flags_take_an_optional_value() {
        let f = parse(&["--snapshot", "-v", "--config=x", "-test.coverprofile=c.out"]).unwrap();
        assert_eq!(
            f.ignored.given(),
            ["config", "snapshot", "v", "test.coverprofile"]
        );
    }

    /// Every flag `etcd --help` (3.4.23, saved in the notes) lists, each given a value of its
    /// type, parses; and so does every flag etcd registers without listing it.
    #[test]
    fn every_etcd_flag_is_accepted() {
        let help = include_str!("../testdata/etcd_help.txt");
        let mut names: Vec<&str> = help
            .lines()
            .filter_map(|l| l.strip_prefix("  --"))
            .map(|l| l.split(' ').next().unwrap_or(l))
            .collect();
        assert_eq!(names.len(), 80, "flags in etcd --help");
        names.extend([
            "config-file",
            "log-output",
            "enable-grpc-gateway",
            "experimental-enable-lease-checkpoint-persist",
            "unsafe-no-fsync",
        ]);
        let command = MemberFlags::command();
        for name in names {
            let arg = command
                .get_arguments()
                .find(|a| a.get_long() == Some(name))
                .unwrap_or_else(|| panic!("--{name} is not a raftkv flag"));
            // Its own default, given explicitly, parses (a boolean as `--flag=false`).
            let default = arg
                .get_default_values()
                .first()
                .and_then(|v| v.to_str())
                .unwrap_or("x");
            parse(&[&format!("--{name}={default}")])
                .unwrap_or_else(|e| panic!("--{name}={default}: {e}"));
        }
    }
}
