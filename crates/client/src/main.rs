//! `raftkvctl`: etcdctl's commands, flags and output, for raftkv (and etcd). Today:
//! `snapshot save | status | restore` and `version`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use raftkv_client::{Client, snapshot};

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
    /// Set the output format (fields, json, simple, table).
    #[arg(
        short = 'w',
        long = "write-out",
        global = true,
        default_value = "simple"
    )]
    write_out: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Manages raftkv node snapshots.
    #[command(subcommand)]
    Snapshot(SnapshotCommand),
    /// Prints the version of raftkvctl.
    Version,
}

#[derive(Subcommand)]
enum SnapshotCommand {
    /// Stores a snapshot of one member to a file.
    Save { filename: PathBuf },
    /// Gets the status (hash, revision, keys, size) of a snapshot file.
    Status { filename: PathBuf },
    /// Restores a snapshot into the data directory of a member of a new cluster.
    Restore(RestoreArgs),
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
    /// Initial cluster configuration for restore bootstrap.
    #[arg(long, default_value = "default=http://127.0.0.1:2380")]
    initial_cluster: String,
    /// Initial cluster token for the cluster during restore bootstrap.
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

fn main() -> ExitCode {
    let cli = Cli::parse();
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
            eprintln!("Error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Version => {
            println!("raftkvctl version: {}", env!("CARGO_PKG_VERSION"));
            println!("API version: 3.4");
        }
        Command::Snapshot(SnapshotCommand::Save { filename }) => {
            if cli.endpoints.len() != 1 {
                anyhow::bail!(
                    "snapshot must be requested to one selected node, not multiple {:?}",
                    cli.endpoints
                );
            }
            let client = Client::connect(&cli.endpoints, cli.dial_timeout).await?;
            snapshot::save(&client, &filename).await?;
            println!("Snapshot saved at {}", filename.display());
        }
        Command::Snapshot(SnapshotCommand::Status { filename }) => {
            let info = snapshot::status(&filename)?;
            print!("{}", snapshot::format_status(&info, &cli.write_out)?);
        }
        Command::Snapshot(SnapshotCommand::Restore(args)) => {
            let flags = snapshot::RestoreFlags {
                name: args.name,
                data_dir: args.data_dir,
                initial_cluster: args.initial_cluster,
                initial_cluster_token: args.initial_cluster_token,
                initial_advertise_peer_urls: args.initial_advertise_peer_urls,
                skip_hash_check: args.skip_hash_check,
            };
            let (dir, info) = snapshot::restore(&args.filename, &flags)?;
            eprintln!(
                "restored snapshot (revision {}, {} keys) into {}; start the member with the same --name, --initial-cluster and --initial-cluster-token",
                info.meta.revision,
                info.key_count,
                dir.display()
            );
        }
    }
    Ok(())
}
