//! Logging: `tracing` to stderr, filtered by `RUST_LOG` or `--log-level`, as text or JSON.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. `level` is used when `RUST_LOG` is unset; `format` is
/// `text` or `json`.
pub fn init(level: &str, format: &str) -> anyhow::Result<()> {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(format!("{level},openraft=error,sled=warn,raft_log=warn,chunked_wal=warn,h2=warn,tower=warn,hyper=warn")))
        .map_err(|e| anyhow::anyhow!("invalid --log-level {level:?}: {e}"))?;
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let result = match format {
        "text" => builder.with_target(false).try_init(),
        "json" => builder.json().try_init(),
        other => anyhow::bail!("invalid --log-format {other:?} (want text or json)"),
    };
    result.map_err(|e| anyhow::anyhow!("installing the logger: {e}"))
}
