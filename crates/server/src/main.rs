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
    opt_out_of_transparent_huge_pages();
    let command = flags::go_style(Cli::command());
    let args = flags::go_args(std::env::args_os(), &command).unwrap_or_else(|e| refuse_flags(&e));
    let matches = match command.clone().try_get_matches_from(&args) {
        Ok(matches) => matches,
        Err(e) => match flags::go_flag_error(&e, &command) {
            // Go's flag package: the line, then the usage, exit 2.
            Some(line) => {
                eprintln!("{line}\nRun 'raftkv --help' for the flags.");
                std::process::exit(2);
            }
            None => e.exit(),
        },
    };
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
    let loaded = match config::load(&args, &env) {
        Ok(loaded) => loaded,
        Err(e) => match e.downcast_ref::<raftkv_server::env::Refused>() {
            Some(refused) => refuse_flags(&refused.0),
            None => return Err(e),
        },
    };
    if let Err(e) = config::verify(&loaded.flags) {
        refuse_flags(&e);
    }
    raftkv_server::logging::init(&loaded.flags.logging)?;
    for notice in &loaded.notices {
        notice.log();
    }
    let config = ServerConfig::from_flags(&loaded.flags)?;
    runtime.block_on(raftkv_server::run(config, raftkv_server::shutdown_signal()))
}

/// Stops on flags etcd would refuse, with etcd's "error verifying flags" line (exit 1).
fn refuse_flags(e: &str) -> ! {
    eprintln!("raftkv: error verifying flags, {e}. See 'raftkv --help'.");
    std::process::exit(1);
}

/// Turns transparent huge pages off for this process (and the members `raftkv local` starts,
/// which inherit it). The kernel checks the flag at each page fault, so it covers memory
/// mapped before `main` too.
///
/// mimalloc asks for huge pages on its arenas (`MADV_HUGEPAGE`), so the first touch of arena
/// memory (fresh, or handed back and taken again) faults in and zeroes a whole 2 MiB page,
/// however little of it is then used. Under 100 clients writing 1.5 KB values that zeroing
/// (`clear_page_erms`) was 21% of all three members' CPU; with this off it is under 1%. In
/// 20,000-put runs on fresh members put/s rose 20–45% and the p99 halved; over two-minute
/// runs the difference was within the spread; RSS after 1M keys fell by a fifth
/// (docs/benchmarks.md, "transparent huge pages").
fn opt_out_of_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_THP_DISABLE takes integer arguments only and changes a flag of this
    // process's memory map; it reads or writes no memory of ours. A failure (a kernel without
    // it) leaves the default, which is only slower.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}
