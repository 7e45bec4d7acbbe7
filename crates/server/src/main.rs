//! `raftkv`: run one member (etcd's flags), or `raftkv local --size 3` for a local cluster.

use clap::{Parser, Subcommand};
use raftkv_server::config::{MemberFlags, ServerConfig};
use raftkv_server::local::LocalFlags;

/// An etcd-compatible Raft key-value store.
#[derive(Parser)]
#[command(name = "raftkv", version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    member: MemberFlags,
}

#[derive(Subcommand)]
enum Command {
    /// Start a local cluster of member processes (ports like etcd's Procfile) until Ctrl-C.
    Local(LocalFlags),
}

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Some(Command::Local(flags)) => runtime.block_on(raftkv_server::local::run(flags)),
        None => {
            raftkv_server::logging::init(&cli.member.log_level, &cli.member.log_format)?;
            let config = ServerConfig::from_flags(&cli.member)?;
            runtime.block_on(raftkv_server::run(config, raftkv_server::shutdown_signal()))
        }
    }
}
