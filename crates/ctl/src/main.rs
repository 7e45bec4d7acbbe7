//! `raftkvctl`: etcdctl 3.4's commands, flags and output, for raftkv (and etcd).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use raftkv_client::{Client, Connection};

mod alarm;
mod auth;
mod cluster;
mod elect;
mod env;
mod go_flags;
mod kv;
mod lease;
mod lock;
mod mirror;
mod parse_errors;
mod print;
mod prompt;
mod snapshot;
mod txn;
mod watch;

use kv::{DelArgs, GetArgs, PutArgs};
use print::Printer;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A command line client for raftkv and etcd (etcdctl 3.4's commands and flags).
#[derive(Parser)]
#[command(name = "raftkvctl", disable_version_flag = true)]
struct Cli {
    /// gRPC endpoints.
    #[arg(
        long,
        global = true,
        default_value = "127.0.0.1:2379",
        value_delimiter = ','
    )]
    endpoints: Vec<String>,
    /// Dial timeout for client connections.
    #[arg(long, global = true, default_value = "2s", value_parser = parse_duration)]
    dial_timeout: Duration,
    /// Timeout for short running commands (excluding dial timeout).
    #[arg(long, global = true, default_value = "5s", value_parser = parse_duration)]
    command_timeout: Duration,
    /// Set the output format (fields, json, protobuf, simple, table).
    #[arg(
        short = 'w',
        long = "write-out",
        global = true,
        default_value = "simple"
    )]
    write_out: String,
    /// Print byte strings as hex encoded strings.
    #[arg(long, global = true)]
    hex: bool,
    /// Keepalive time for client connections (accepted for etcdctl compatibility).
    #[arg(long, global = true, default_value = "2s", value_parser = parse_duration)]
    keepalive_time: Duration,
    /// Keepalive timeout for client connections (accepted for etcdctl compatibility).
    #[arg(long, global = true, default_value = "6s", value_parser = parse_duration)]
    keepalive_timeout: Duration,
    /// Accept insecure SRV records describing cluster endpoints (accepted for etcdctl
    /// compatibility; raftkvctl has no DNS discovery).
    #[arg(
        long,
        global = true,
        default_value_t = true,
        action = clap::ArgAction::Set,
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        value_parser = go_flags::bool_value
    )]
    insecure_discovery: bool,
    /// Domain name to query for SRV records describing cluster endpoints (refused:
    /// raftkvctl has no DNS discovery; name the endpoints).
    #[arg(short = 'd', long, global = true)]
    discovery_srv: Option<String>,
    /// Service name to query when using DNS discovery (refused, as --discovery-srv).
    #[arg(long, global = true)]
    discovery_srv_name: Option<String>,
    /// Enable client-side debug logging (the flags in use, as etcdctl prints them; raftkvctl
    /// has no gRPC debug log to add).
    #[arg(long, global = true)]
    debug: bool,
    /// Verify certificates of TLS-enabled secure servers using this CA bundle.
    #[arg(long = "cacert", id = "tls_cacert", value_name = "FILE", global = true)]
    cacert: Option<std::path::PathBuf>,
    /// Identify secure client using this TLS certificate file.
    #[arg(long = "cert", id = "tls_cert", value_name = "FILE", global = true)]
    cert: Option<std::path::PathBuf>,
    /// Identify secure client using this TLS key file.
    #[arg(long = "key", id = "tls_key", value_name = "FILE", global = true)]
    key: Option<std::path::PathBuf>,
    /// Skip server certificate verification (CAUTION: this option should be enabled only
    /// for testing purposes).
    #[arg(long, global = true)]
    insecure_skip_tls_verify: bool,
    /// Disable transport security for client connections.
    #[arg(
        long,
        global = true,
        default_value_t = true,
        action = clap::ArgAction::Set,
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        value_parser = go_flags::bool_value
    )]
    insecure_transport: bool,
    /// username[:password] for authentication (prompt if password is not supplied).
    #[arg(long, global = true, value_name = "USER")]
    user: Option<String>,
    /// password for authentication (if this option is used, --user option shouldn't include
    /// password).
    #[arg(long, global = true, value_name = "PASSWORD")]
    password: Option<String>,
    /// The TLS configuration the flags above make (set once they are parsed).
    #[arg(skip)]
    tls: Option<std::sync::Arc<raftkv_client::tls::ClientConfig>>,
    /// The client of the flags above, made when a command first needs it.
    #[arg(skip)]
    client: tokio::sync::OnceCell<Client>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Puts the given key into the store.
    Put(PutArgs),
    /// Alarm related commands.
    #[command(subcommand)]
    Alarm(alarm::AlarmCommand),
    /// Defragments the storage of the members with given endpoints (a raftkv member has
    /// nothing to defragment and answers at once).
    Defrag(alarm::DefragArgs),
    /// Gets the key or a range of keys.
    Get(GetArgs),
    /// Removes the specified key or range of keys [key, range_end).
    Del(DelArgs),
    /// Txn processes all the requests in one transaction (read from standard input).
    Txn {
        /// Input transaction in interactive mode.
        #[arg(short, long)]
        interactive: bool,
    },
    /// Watches events stream on keys or prefixes.
    Watch(watch::WatchArgs),
    /// Lease related commands.
    #[command(subcommand)]
    Lease(lease::LeaseCommand),
    /// Acquires a named lock.
    Lock(lock::LockArgs),
    /// Observes and participates in leader election.
    Elect(elect::ElectArgs),
    /// Compacts the event history in the store.
    Compaction {
        revision: i64,
        /// Wait for the compaction to be physically applied.
        #[arg(long)]
        physical: bool,
    },
    /// Makes a mirror at the destination etcd cluster.
    MakeMirror(mirror::MirrorArgs),
    /// Membership commands.
    #[command(subcommand)]
    Member(MemberCommand),
    /// Endpoint related commands.
    #[command(subcommand)]
    Endpoint(EndpointCommand),
    /// Transfers leadership to another member.
    MoveLeader { target: String },
    /// Manages raftkv node snapshots.
    #[command(subcommand)]
    Snapshot(SnapshotCommand),
    /// User related commands.
    #[command(subcommand)]
    User(auth::UserCommand),
    /// Role related commands.
    #[command(subcommand)]
    Role(auth::RoleCommand),
    /// Enable or disable authentication.
    #[command(subcommand)]
    Auth(auth::AuthCommand),
    /// Prints the version of raftkvctl.
    Version {
        /// Arguments: ignored, as etcdctl ignores them.
        #[arg(hide = true)]
        ignored: Vec<String>,
    },
}

#[derive(Subcommand)]
enum MemberCommand {
    /// Lists all members in the cluster.
    List {
        /// Arguments: ignored, as etcdctl ignores them.
        #[arg(hide = true)]
        ignored: Vec<String>,
    },
    /// Adds a member into the cluster.
    Add {
        name: String,
        /// Comma separated peer URLs for the new member.
        #[arg(long, value_delimiter = ',')]
        peer_urls: Vec<String>,
        /// Indicates if the new member is raft learner.
        #[arg(long)]
        learner: bool,
    },
    /// Removes a member from the cluster.
    Remove { id: String },
    /// Promotes a non-voting member in the cluster.
    Promote { id: String },
    /// Updates a member in the cluster.
    Update {
        id: String,
        /// Comma separated peer URLs for the updated member.
        #[arg(long, value_delimiter = ',')]
        peer_urls: Vec<String>,
    },
}

#[derive(Subcommand)]
enum EndpointCommand {
    /// Prints out the status of endpoints specified in `--endpoints` flag.
    Status {
        /// Use all endpoints from the cluster member list.
        #[arg(long)]
        cluster: bool,
        /// Arguments: ignored, as etcdctl ignores them.
        #[arg(hide = true)]
        ignored: Vec<String>,
    },
    /// Checks the healthiness of endpoints specified in `--endpoints` flag.
    Health {
        /// Use all endpoints from the cluster member list.
        #[arg(long)]
        cluster: bool,
        /// Arguments: ignored, as etcdctl ignores them.
        #[arg(hide = true)]
        ignored: Vec<String>,
    },
    /// Prints the KV history hash for each endpoint in --endpoints.
    Hashkv {
        /// Use all endpoints from the cluster member list.
        #[arg(long)]
        cluster: bool,
        /// Maximum revision to hash (default: all revisions).
        #[arg(long, default_value_t = 0)]
        rev: i64,
        /// Arguments: ignored, as etcdctl ignores them.
        #[arg(hide = true)]
        ignored: Vec<String>,
    },
}

#[derive(Subcommand)]
enum SnapshotCommand {
    /// Stores a snapshot of one member to a file.
    Save { filename: PathBuf },
    /// Gets the status (hash, revision, keys, size) of a snapshot file.
    Status { filename: PathBuf },
    /// Restores a snapshot into the data directory of a member of a new cluster.
    Restore(RestoreArgs),
    /// Writes a raftkv snapshot file as an etcd snapshot that `etcdctl snapshot restore`
    /// takes (every revision, the leases and the auth store kept).
    Export {
        /// The raftkv snapshot file.
        filename: PathBuf,
        /// The etcd snapshot file to write.
        output: PathBuf,
        /// The format to write: `etcd` (etcd 3.4's bbolt backend with its SHA-256 trailer).
        #[arg(long, default_value = "etcd")]
        format: String,
    },
}

#[derive(Args)]
struct RestoreArgs {
    filename: PathBuf,
    /// Human-readable name for this member.
    #[arg(long, default_value = "default")]
    name: String,
    /// Path to the data directory [default: <name>.raftkv].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Path to the WAL directory (use --data-dir if none given). Refused if it exists, as
    /// etcdctl refuses it; a raftkv member writes its WAL when it first starts, where its
    /// own --wal-dir says.
    #[arg(long)]
    wal_dir: Option<PathBuf>,
    /// Initial cluster configuration for restore bootstrap.
    #[arg(long, default_value = "default=http://127.0.0.1:2380")]
    initial_cluster: String,
    /// Initial cluster token for the cluster during restore bootstrap (accepted as etcdctl
    /// takes it; the token matters when the members start, not in the restored data).
    #[arg(long, default_value = "etcd-cluster")]
    initial_cluster_token: String,
    /// List of this member's peer URLs to advertise to the rest of the cluster.
    #[arg(long, default_value = "http://127.0.0.1:2380", value_delimiter = ',')]
    initial_advertise_peer_urls: Vec<String>,
    /// Ignore the SHA-256 trailer (the other checks still apply).
    #[arg(long)]
    skip_hash_check: bool,
}

/// Parses Go-style durations: "300ms", "2s", "1m", "1.5s".
fn parse_duration(s: &str) -> Result<Duration, String> {
    let (number, unit) = s
        .find(|c: char| c.is_ascii_alphabetic())
        .map_or((s, "s"), |i| s.split_at(i));
    let value: f64 = number
        .parse()
        .map_err(|_| format!("invalid duration {s:?}"))?;
    let secs = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(format!("invalid duration unit in {s:?}")),
    };
    Ok(Duration::from_secs_f64(secs))
}

/// An error with etcdctl's exit code for its kind (ExitInvalidInput = 3, ExitBadFeature = 4,
/// ExitBadArgs = 128; everything else ExitError = 1); with an empty message, nothing more is
/// printed.
#[derive(Debug)]
struct Exit(u8, String);

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.1)
    }
}

impl std::error::Error for Exit {}

/// `e` with exit `code`, unless it already names its own (as a bad flag value in a txn
/// line does: etcdctl exits on it where it checks it, whatever was being read).
fn exit_with(code: u8, e: anyhow::Error) -> anyhow::Error {
    if e.is::<Exit>() {
        e
    } else {
        Exit(code, format!("{e:#}")).into()
    }
}

fn bad_feature(e: anyhow::Error) -> anyhow::Error {
    exit_with(4, e)
}

fn invalid_input(e: anyhow::Error) -> anyhow::Error {
    exit_with(3, e)
}

fn bad_args(e: anyhow::Error) -> anyhow::Error {
    exit_with(128, e)
}

/// etcdctl's exit when its client cannot be made (ExitBadConnection): `clientv3.New`
/// failed, e.g. the credentials were refused.
const EXIT_BAD_CONNECTION: u8 = 2;
/// etcdctl's exit when `snapshot save` fails, its client included (ExitInterrupted).
const EXIT_INTERRUPTED: u8 = 5;

fn main() -> ExitCode {
    let args = match go_flags::normalize(std::env::args_os().collect(), &Cli::command()) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("Error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let matches = match Cli::command().try_get_matches_from(args) {
        Ok(matches) => matches,
        Err(e) => match parse_errors::answer(&e, &Cli::command()) {
            Some(code) => return code,
            None => e.exit(),
        },
    };
    let mut cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    if makes_client(&cli.command) && !read_environment(&mut cli, &matches) {
        return ExitCode::FAILURE;
    }
    if cli.discovery_srv.is_some() || cli.discovery_srv_name.is_some() {
        eprintln!(
            "Error: raftkvctl has no DNS discovery (--discovery-srv, --discovery-srv-name); \
             name the members with --endpoints"
        );
        return ExitCode::FAILURE;
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("Error: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // An empty message: the command has said everything (etcdctl's bare os.Exit).
            if !e.downcast_ref::<Exit>().is_some_and(|x| x.1.is_empty()) {
                eprintln!("Error: {e:#}");
            }
            match e.downcast_ref::<Exit>() {
                Some(Exit(code, _)) => ExitCode::from(*code),
                None => ExitCode::FAILURE,
            }
        }
    }
}

/// Sets the global flags from `ETCDCTL_*` variables as etcdctl does (see [`env`]), printing
/// its warnings and, with `--debug`, the flags in use; `false` when a variable conflicts
/// with a flag on the command line (the command stops).
fn read_environment(cli: &mut Cli, matches: &clap::ArgMatches) -> bool {
    // etcdctl's main takes ETCDCTL_API out of the environment before flags read it.
    let environ: Vec<(String, String)> = std::env::vars_os()
        .map(|(k, v)| {
            (
                k.to_string_lossy().into_owned(),
                v.to_string_lossy().into_owned(),
            )
        })
        .filter(|(k, _)| k != "ETCDCTL_API")
        .collect();
    let watch = matches!(cli.command, Command::Watch(_));
    let (warnings, conflict) = match env::apply(cli, matches, &environ, watch) {
        env::Outcome::Go(warnings) => (warnings, None),
        env::Outcome::Conflict(warnings, conflict) => (warnings, Some(conflict)),
    };
    for warning in warnings {
        eprintln!("{}", env::log_line('W', &warning));
    }
    if let Some(conflict) = conflict {
        eprintln!("{}", env::log_line('C', &conflict));
        return false;
    }
    // etcdctl prints these as it makes its client; `endpoint health` makes one per
    // endpoint without them.
    let health = matches!(
        cli.command,
        Command::Endpoint(EndpointCommand::Health { .. })
    );
    if cli.debug && !health {
        for line in env::debug_lines(cli, watch) {
            eprintln!("{line}");
        }
    }
    true
}

/// Whether a command makes a client, and so reads etcdctl's `ETCDCTL_*` variables (see
/// [`env`]): every command but `version` and the offline snapshot ones.
fn makes_client(command: &Command) -> bool {
    !matches!(
        command,
        Command::Version { .. }
            | Command::Snapshot(
                SnapshotCommand::Status { .. }
                    | SnapshotCommand::Restore(_)
                    | SnapshotCommand::Export { .. }
            )
    )
}

/// A member id as etcdctl takes it: hexadecimal.
fn parse_id(s: &str) -> anyhow::Result<u64> {
    u64::from_str_radix(s, 16).map_err(|_| {
        bad_args(anyhow::anyhow!(
            "bad member ID arg ({s:?}), expecting ID in Hex"
        ))
    })
}

/// The endpoints an endpoint command covers: `--endpoints`, or with `--cluster` every
/// member's client URLs.
async fn endpoints_for(cli: &Cli, all: bool) -> anyhow::Result<Vec<String>> {
    if !all {
        return Ok(cli.endpoints.clone());
    }
    // Without credentials, as etcdctl: "MemberList() doesn't need authentication".
    let connection = cli.plain_client().connect().await?;
    cluster::cluster_endpoints(&connection).await
}

/// A read: retried on the next endpoint when one is unreachable or answers Unavailable.
async fn read<T, F, Fut>(cli: &Cli, mut call: F) -> anyhow::Result<T>
where
    F: FnMut(Connection) -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    let resp = cli
        .client()
        .await?
        .read(|c| {
            let fut = call(c);
            async move { fut.await.map(tonic::Response::into_inner) }
        })
        .await?;
    Ok(resp)
}

/// A write: moves to the next endpoint only when one cannot be reached (the request never
/// left); an answer, even an error, is final.
async fn write<T, F, Fut>(cli: &Cli, mut call: F) -> anyhow::Result<T>
where
    F: FnMut(Connection) -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    let resp = cli
        .client()
        .await?
        .write(|c| {
            let fut = call(c);
            async move { fut.await.map(tonic::Response::into_inner) }
        })
        .await?;
    Ok(resp)
}

/// The printer of the auth commands: etcdctl refuses a format they cannot print only once it
/// has the answer (see `Printer::auth`).
fn auth_printer(cli: &Cli) -> Printer {
    Printer {
        format: cli.write_out.clone(),
        hex: cli.hex,
    }
}

impl Cli {
    /// The client of the global flags, its token got at once (clientv3.New, as etcdctl's
    /// `mustClientFromCmd` makes it): refused credentials are etcdctl's ExitBadConnection.
    async fn client(&self) -> anyhow::Result<Client> {
        self.dialed_client(EXIT_BAD_CONNECTION).await
    }

    /// [`Cli::lazy_client`] with its token got now; failing to get it exits with `code`.
    async fn dialed_client(&self, code: u8) -> anyhow::Result<Client> {
        let client = self.lazy_client().await?;
        client
            .authenticate()
            .await
            .map_err(|e| Exit(code, e.to_string()))?;
        Ok(client)
    }

    /// The client of the global flags with the credentials of `--user` and `--password`
    /// (asking for the password first if need be), made once; it gets its token when it
    /// first connects.
    async fn lazy_client(&self) -> anyhow::Result<Client> {
        let make = || async {
            let client = self.plain_client();
            Ok::<_, anyhow::Error>(match self.credentials().await? {
                Some((user, password)) => client.with_credentials(&user, &password),
                None => client,
            })
        };
        self.client.get_or_try_init(make).await.cloned()
    }

    /// etcdctl's `authCfgFromCmd`: no `--user`, no credentials; `--password` given, the
    /// whole of `--user` is the name; else `--user` is `name:password`, or a name alone and
    /// the password is asked for on the terminal. (An empty name or password then means
    /// no credentials, as in clientv3.)
    async fn credentials(&self) -> anyhow::Result<Option<(String, String)>> {
        let user = self.user.as_deref().unwrap_or_default();
        let password = self.password.as_deref().unwrap_or_default();
        if user.is_empty() {
            return Ok(None);
        }
        if !password.is_empty() {
            return Ok(Some((user.to_string(), password.to_string())));
        }
        Ok(Some(match user.split_once(':') {
            Some((name, password)) => (name.to_string(), password.to_string()),
            None => (user.to_string(), prompt::ask("Password: ").await?),
        }))
    }

    /// The library client of `--endpoints`, `--dial-timeout`, `--command-timeout` and the
    /// TLS flags, without credentials.
    fn plain_client(&self) -> Client {
        let client = Client::new(self.endpoints.clone())
            .with_timeouts(self.dial_timeout, self.command_timeout);
        match &self.tls {
            Some(tls) => client.with_rustls(tls.clone()),
            None => client,
        }
    }

    /// etcdctl's TLS from `--cacert`, `--cert`, `--key`, `--insecure-transport` and
    /// `--insecure-skip-tls-verify`: TLS when a file is named or transport security is asked
    /// for; verification skipped only then (an `https://` endpoint without either still
    /// uses TLS, verified against the system's CAs, as clientv3 does).
    fn tls(&self) -> anyhow::Result<Option<std::sync::Arc<raftkv_client::tls::ClientConfig>>> {
        use raftkv_client::TlsConfig;
        let named = self.cacert.is_some() || self.cert.is_some() || self.key.is_some();
        let config = if named {
            TlsConfig::from_files(
                self.cacert.as_deref(),
                self.cert.as_deref(),
                self.key.as_deref(),
            )?
        } else if !self.insecure_transport {
            TlsConfig::new()
        } else {
            return Ok(None);
        };
        let config = config.insecure_skip_verify(self.insecure_skip_tls_verify);
        Ok(Some(config.client_config()?))
    }
}

async fn run(mut cli: Cli) -> anyhow::Result<()> {
    cli.tls = cli.tls().map_err(bad_args)?;
    // The command's own arguments move out; the global flags stay for the helpers.
    match std::mem::replace(
        &mut cli.command,
        Command::Version {
            ignored: Vec::new(),
        },
    ) {
        Command::Put(put) => {
            let printer = Printer::new(&cli.write_out, cli.hex).map_err(bad_feature)?;
            let value = put.value(|| {
                let mut input = String::new();
                std::io::Read::read_to_string(&mut std::io::stdin(), &mut input)?;
                Ok(input)
            })?;
            let req = put.request(value).map_err(bad_args)?;
            let resp = write(&cli, |c| {
                let req = req.clone();
                async move { c.kv().put(req).await }
            })
            .await?;
            print!("{}", printer.put(&resp));
        }
        Command::Get(get) => {
            let printer = Printer::new(&cli.write_out, cli.hex).map_err(bad_feature)?;
            let req = get.request().map_err(bad_args)?;
            let resp = read(&cli, |c| {
                let req = req.clone();
                async move { c.kv().range(req).await }
            })
            .await?;
            print!("{}", printer.get(&resp, get.print_value_only));
        }
        Command::Del(del) => {
            let printer = Printer::new(&cli.write_out, cli.hex).map_err(bad_feature)?;
            let req = del.request().map_err(bad_args)?;
            let resp = write(&cli, |c| {
                let req = req.clone();
                async move { c.kv().delete_range(req).await }
            })
            .await?;
            print!("{}", printer.del(&resp));
        }
        Command::Version { .. } => {
            println!("raftkvctl version: {}", env!("CARGO_PKG_VERSION"));
            println!("API version: 3.4");
        }
        Command::Txn { interactive } => {
            let printer = Printer::new(&cli.write_out, cli.hex).map_err(bad_feature)?;
            // etcdctl makes its client (asking for a password) before it reads the txn.
            cli.client().await?;
            let stdin = std::io::stdin();
            let req = txn::read(&mut stdin.lock(), interactive).map_err(invalid_input)?;
            let resp = write(&cli, |c| {
                let req = req.clone();
                async move { c.kv().txn(req).await }
            })
            .await?;
            print!("{}", txn::format(&printer, &resp).map_err(bad_feature)?);
        }
        Command::Watch(args) => {
            watch::run(&cli, &cli.write_out, cli.hex, args).await?;
        }
        Command::MakeMirror(args) => mirror::run(&cli, args).await?,
        Command::User(command) => {
            auth::user(&cli, &auth_printer(&cli), command).await?;
        }
        Command::Role(command) => {
            auth::role(&cli, &auth_printer(&cli), command).await?;
        }
        Command::Auth(command) => auth::auth(&cli, command).await?,
        Command::Alarm(command) => alarm::alarm(&cli, command).await?,
        Command::Defrag(args) => alarm::defrag(&cli, args).await?,
        Command::Lease(command) => {
            lease::run(&cli, cli.dial_timeout, &cli.write_out, command).await?;
        }
        Command::Lock(args) => {
            lock::run(&cli, cli.dial_timeout, &cli.write_out, cli.hex, args).await?;
        }
        Command::Elect(args) => {
            elect::run(&cli, cli.dial_timeout, &cli.write_out, cli.hex, args).await?;
        }
        Command::Compaction { revision, physical } => {
            let req = raftkv_proto::etcdserverpb::CompactionRequest { revision, physical };
            write(&cli, |c| async move { c.kv().compact(req).await }).await?;
            println!("compacted revision {revision}");
        }
        Command::Member(MemberCommand::List { .. }) => {
            let client = cli.client().await?.connect().await?;
            let resp = tokio::time::timeout(cli.command_timeout, cluster::member_list(&client))
                .await
                .map_err(|_| anyhow::anyhow!("context deadline exceeded"))??;
            print!(
                "{}",
                cluster::format_members(&resp, &cli.write_out).map_err(bad_feature)?
            );
        }
        Command::Member(MemberCommand::Add {
            name,
            peer_urls,
            learner,
        }) => {
            if peer_urls.is_empty() {
                return Err(bad_args(anyhow::anyhow!("member peer urls not provided")));
            }
            let client = cli.client().await?.connect().await?;
            let out = tokio::time::timeout(
                cli.command_timeout,
                cluster::member_add(&client, &name, peer_urls, learner),
            )
            .await
            .map_err(|_| anyhow::anyhow!("context deadline exceeded"))??;
            print!("{out}");
        }
        Command::Member(MemberCommand::Remove { id }) => {
            let id = parse_id(&id)?;
            let client = cli.client().await?.connect().await?;
            let out =
                tokio::time::timeout(cli.command_timeout, cluster::member_remove(&client, id))
                    .await
                    .map_err(|_| anyhow::anyhow!("context deadline exceeded"))??;
            print!("{out}");
        }
        Command::Member(MemberCommand::Promote { id }) => {
            let id = parse_id(&id)?;
            let client = cli.client().await?.connect().await?;
            let out =
                tokio::time::timeout(cli.command_timeout, cluster::member_promote(&client, id))
                    .await
                    .map_err(|_| anyhow::anyhow!("context deadline exceeded"))??;
            print!("{out}");
        }
        Command::Member(MemberCommand::Update { id, peer_urls }) => {
            let id = parse_id(&id)?;
            if peer_urls.is_empty() {
                anyhow::bail!("member peer urls not provided");
            }
            let client = cli.client().await?.connect().await?;
            let out = tokio::time::timeout(
                cli.command_timeout,
                cluster::member_update(&client, id, peer_urls),
            )
            .await
            .map_err(|_| anyhow::anyhow!("context deadline exceeded"))??;
            print!("{out}");
        }
        Command::Endpoint(EndpointCommand::Hashkv {
            cluster: all, rev, ..
        }) => {
            let endpoints = endpoints_for(&cli, all).await?;
            let (hashes, last_error) =
                cluster::hash_kvs(&cli.client().await?, &endpoints, rev).await;
            print!(
                "{}",
                cluster::format_hash_kvs(&hashes, &cli.write_out).map_err(bad_feature)?
            );
            if let Some(e) = last_error {
                return Err(e.into());
            }
        }
        Command::MoveLeader { target } => {
            let target = parse_id(&target)?;
            let out = cluster::move_leader(&cli.client().await?, target).await?;
            print!("{out}");
        }
        Command::Endpoint(EndpointCommand::Status { cluster: all, .. }) => {
            let endpoints = endpoints_for(&cli, all).await?;
            let (statuses, failed) = cluster::statuses(&cli.client().await?, &endpoints).await;
            print!(
                "{}",
                cluster::format_statuses(&statuses, &cli.write_out).map_err(bad_feature)?
            );
            if failed {
                return Err(Exit(1, String::new()).into());
            }
        }
        Command::Endpoint(EndpointCommand::Health { cluster: all, .. }) => {
            // Credentials first (etcdctl asks for a password before it lists the members);
            // each endpoint then gets its token, or is unhealthy for the refusal.
            let client = cli.lazy_client().await?;
            let endpoints = endpoints_for(&cli, all).await?;
            let results = cluster::health(&client, &endpoints).await;
            let (out, err) =
                cluster::format_health(&results, &cli.write_out).map_err(bad_feature)?;
            print!("{out}");
            eprint!("{err}");
            if results.iter().any(|h| !h.healthy) {
                anyhow::bail!("unhealthy cluster");
            }
        }
        Command::Snapshot(SnapshotCommand::Save { filename }) => {
            if cli.endpoints.len() != 1 {
                anyhow::bail!(
                    "snapshot must be requested to one selected node, not multiple {:?}",
                    cli.endpoints
                );
            }
            // etcdctl exits with ExitInterrupted whatever stops the save.
            let interrupted = |e: anyhow::Error| Exit(EXIT_INTERRUPTED, format!("{e:#}"));
            let client = cli.dialed_client(EXIT_INTERRUPTED).await?;
            let client = client.connect().await.map_err(|e| interrupted(e.into()))?;
            snapshot::save(&client, &filename)
                .await
                .map_err(interrupted)?;
            println!("Snapshot saved at {}", filename.display());
        }
        Command::Snapshot(SnapshotCommand::Status { filename }) => {
            let info = snapshot::status(&filename)?;
            print!("{}", snapshot::format_status(&info, &cli.write_out)?);
        }
        Command::Snapshot(SnapshotCommand::Export {
            filename,
            output,
            format,
        }) => {
            if format != "etcd" {
                anyhow::bail!("unsupported export format {format:?} (supported: etcd)");
            }
            let e = raftkv_storage::etcd::export(&filename, &output)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            if e.revision != e.source_revision {
                eprintln!(
                    "warning: etcd will open the file at revision {} (the snapshot's is {}): no version is left at the newest revisions",
                    e.revision, e.source_revision
                );
            }
            println!(
                "Exported {} versions and {} leases at revision {} to {} ({} bytes)",
                e.versions,
                e.leases,
                e.revision,
                output.display(),
                e.bytes
            );
        }
        Command::Snapshot(SnapshotCommand::Restore(args)) => {
            let flags = snapshot::RestoreFlags {
                name: args.name,
                data_dir: args.data_dir,
                wal_dir: args.wal_dir,
                initial_cluster: args.initial_cluster,
                initial_advertise_peer_urls: args.initial_advertise_peer_urls,
                skip_hash_check: args.skip_hash_check,
            };
            let (dir, restored) = snapshot::restore(&args.filename, &flags)?;
            if let Some(i) = &restored.etcd {
                eprintln!(
                    "imported etcd snapshot: {} versions, compacted at {}, {} leases, {} users, {} roles",
                    i.versions, i.compact_revision, i.leases, i.users, i.roles
                );
            }
            eprintln!(
                "restored snapshot (revision {}, {} keys) into {}; start the member with the same --name, --initial-cluster and --initial-cluster-token",
                restored.revision,
                restored.keys,
                dir.display()
            );
        }
    }
    Ok(())
}
