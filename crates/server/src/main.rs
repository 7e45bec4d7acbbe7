//! `raftkv`: run one member (etcd's flags, `ETCD_*` variables or `--config-file`), or
//! `raftkv local --size 3` for a local cluster.

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use raftkv_server::config::{self, MemberFlags, ServerConfig};
use raftkv_server::flags;
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
    let command = flags::go_style(Cli::command());
    let args = match flags::go_args(std::env::args_os(), &command) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("raftkv: error verifying flags, {e}. See 'raftkv --help'.");
            std::process::exit(1);
        }
    };
    let matches = command.get_matches_from(&args);
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    if let Some(Command::Local(flags)) = cli.command {
        return runtime.block_on(raftkv_server::local::run(flags));
    }
    let env: Vec<(String, String)> = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect();
    let loaded = config::load(&args, &env)?;
    raftkv_server::logging::init(&loaded.flags.logging)?;
    for notice in &loaded.notices {
        notice.log();
    }
    let config = ServerConfig::from_flags(&loaded.flags)?;
    runtime.block_on(raftkv_server::run(config, raftkv_server::shutdown_signal()))
}
