//! Logging: `tracing` to stderr (or stdout), filtered by `RUST_LOG` or `--log-level`, as text
//! or JSON.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::writer::BoxMakeWriter;

use crate::flags::Logging;

/// Where log lines go (etcd's `--log-outputs`, as far as raftkv follows it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// etcd's `default` and `stderr`.
    Stderr,
    /// `stdout`.
    Stdout,
}

impl Output {
    /// `--log-outputs` (or the deprecated `--log-output` when only it is set); `None` for
    /// targets raftkv does not write to (files, several targets).
    pub fn from_flags(logging: &Logging) -> Option<Output> {
        let outputs = if logging.log_outputs == "default" {
            &logging.log_output
        } else {
            &logging.log_outputs
        };
        let mut targets: Vec<&str> = outputs.split(',').map(str::trim).collect();
        targets.sort_unstable();
        targets.dedup();
        match targets[..] {
            ["default"] | ["stderr"] => Some(Output::Stderr),
            ["stdout"] => Some(Output::Stdout),
            _ => None,
        }
    }
}

/// The `tracing` level for etcd's `--log-level` (and `--debug`).
pub fn level(logging: &Logging) -> &str {
    if logging.debug {
        return "debug";
    }
    match logging.log_level.as_str() {
        // etcd's levels above error still mean "errors only".
        "panic" | "fatal" | "dpanic" => "error",
        other => other,
    }
}

/// Installs the global subscriber for a member's logging flags.
pub fn init(logging: &Logging) -> anyhow::Result<()> {
    let output = Output::from_flags(logging).unwrap_or(Output::Stderr);
    init_with(level(logging), &logging.log_format, output)
}

/// Installs the global subscriber. `level` is used when `RUST_LOG` is unset; `format` is
/// `text` or `json`.
pub fn init_with(level: &str, format: &str, output: Output) -> anyhow::Result<()> {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(format!("{level},openraft=error,sled=warn,raft_log=warn,chunked_wal=warn,h2=warn,tower=warn,hyper=warn")))
        .map_err(|e| anyhow::anyhow!("invalid --log-level {level:?}: {e}"))?;
    use std::io::IsTerminal;
    let (writer, ansi) = match output {
        Output::Stderr => (
            BoxMakeWriter::new(std::io::stderr),
            std::io::stderr().is_terminal(),
        ),
        Output::Stdout => (
            BoxMakeWriter::new(std::io::stdout),
            std::io::stdout().is_terminal(),
        ),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(ansi);
    let result = match format {
        "text" => builder.with_target(false).try_init(),
        "json" => builder.json().try_init(),
        other => anyhow::bail!("invalid --log-format {other:?} (want text or json)"),
    };
    result.map_err(|e| anyhow::anyhow!("installing the logger: {e}"))
}
