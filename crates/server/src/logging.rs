//! Logging: `tracing` to stderr, stdout or files (etcd's `--log-outputs`), filtered by
//! `RUST_LOG` or `--log-level`, as text or JSON.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::writer::BoxMakeWriter;

use crate::flags::Logging;

/// Where log lines go: etcd's `--log-outputs` targets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// etcd's `default` and `stderr`.
    Stderr,
    /// `stdout`.
    Stdout,
    /// Any other target of `--logger=zap`: a file, appended to (created if missing).
    File(std::path::PathBuf),
}

/// The streams `--logger=capnslog` can write to.
const CAPNSLOG_OUTPUTS: [&str; 3] = ["default", "stderr", "stdout"];

impl Output {
    /// The targets of `--log-outputs` (or of the deprecated `--log-output` when only it is
    /// set), refused with etcd's messages where etcd refuses them: capnslog writes to one of
    /// default, stderr and stdout; zap to any number of targets, files included, but
    /// "default" only alone. The deprecated flag is not checked (etcd starts with any value
    /// there); what raftkv cannot follow of it logs to stderr ([`Output::ignored`]).
    pub fn from_flags(logging: &Logging) -> Result<Vec<Output>, String> {
        if logging.log_outputs == "default" && logging.log_output != "default" {
            return Ok(vec![match logging.log_output.trim() {
                "stdout" => Output::Stdout,
                _ => Output::Stderr,
            }]);
        }
        let mut targets: Vec<&str> = logging.log_outputs.split(',').map(str::trim).collect();
        targets.sort_unstable();
        targets.dedup();
        if logging.logger == "capnslog" {
            if targets.len() != 1 {
                let quoted: Vec<String> = targets.iter().map(|t| format!("{t:?}")).collect();
                return Err(format!(
                    "--logger=capnslog supports only 1 value in '--log-outputs', got [{}]",
                    quoted.join(" ")
                ));
            }
            if !CAPNSLOG_OUTPUTS.contains(&targets[0]) {
                return Err(format!(
                    "unknown log-output {:?} (only supports \"default\", \"stderr\", \"stdout\")",
                    targets[0]
                ));
            }
        } else if targets.len() > 1 && targets.contains(&"default") {
            return Err("multi logoutput for \"default\" is not supported yet".into());
        }
        Ok(targets
            .into_iter()
            .map(|t| match t {
                "default" | "stderr" => Output::Stderr,
                "stdout" => Output::Stdout,
                path => Output::File(path.into()),
            })
            .collect())
    }

    /// Whether the deprecated `--log-output` names a target raftkv does not follow.
    pub fn ignored(logging: &Logging) -> bool {
        logging.log_outputs == "default" && !CAPNSLOG_OUTPUTS.contains(&logging.log_output.trim())
    }
}

/// The levels etcd 3.4 takes in `--log-level` (lower case only; it panics on any other).
const LEVELS: [&str; 7] = ["debug", "info", "warn", "error", "dpanic", "panic", "fatal"];

/// etcd's checks of the logging flags before it starts ("error verifying flags, ..."). An
/// unknown `--log-level` stops etcd with a panic ("unknown level ..."); raftkv stops with
/// the same words rather than run with a filter that logs nothing.
pub fn verify(logging: &Logging) -> Result<(), String> {
    if !matches!(logging.logger.as_str(), "zap" | "capnslog") {
        return Err(format!("unknown logger option {:?}", logging.logger));
    }
    if !LEVELS.contains(&logging.log_level.as_str()) {
        return Err(format!("unknown level {:?}", logging.log_level));
    }
    Output::from_flags(logging).map(drop)
}

/// Writes each log line to every target.
struct Tee(Vec<Sink>);

enum Sink {
    Stderr,
    Stdout,
    File(std::fs::File),
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Tee {
    type Writer = TeeWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        TeeWriter(&self.0)
    }
}

struct TeeWriter<'a>(&'a [Sink]);

impl std::io::Write for TeeWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.write_all(buf)?;
        Ok(buf.len())
    }

    /// Every target gets the whole line; a target that fails (a full disk) does not keep it
    /// from the others.
    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        let mut result = Ok(());
        for sink in self.0 {
            let written = match sink {
                Sink::Stderr => std::io::stderr().lock().write_all(buf),
                Sink::Stdout => std::io::stdout().lock().write_all(buf),
                Sink::File(file) => (&*file).write_all(buf),
            };
            result = result.and(written);
        }
        result
    }

    fn flush(&mut self) -> std::io::Result<()> {
        for sink in self.0 {
            match sink {
                Sink::Stderr => std::io::stderr().flush()?,
                Sink::Stdout => std::io::stdout().flush()?,
                Sink::File(_) => {}
            }
        }
        Ok(())
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
    let outputs = Output::from_flags(logging).map_err(anyhow::Error::msg)?;
    init_with(level(logging), &logging.log_format, &outputs)
}

/// Installs the global subscriber. `level` is used when `RUST_LOG` is unset; `format` is
/// `text` or `json`; each line goes to every output.
pub fn init_with(level: &str, format: &str, outputs: &[Output]) -> anyhow::Result<()> {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(format!("{level},openraft=error,sled=warn,raft_log=warn,chunked_wal=warn,h2=warn,tower=warn,hyper=warn")))
        .map_err(|e| anyhow::anyhow!("invalid --log-level {level:?}: {e}"))?;
    use std::io::IsTerminal;
    let mut sinks = Vec::with_capacity(outputs.len());
    for output in outputs {
        sinks.push(match output {
            Output::Stderr => Sink::Stderr,
            Output::Stdout => Sink::Stdout,
            Output::File(path) => Sink::File(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| anyhow::anyhow!("opening log output {}: {e}", path.display()))?,
            ),
        });
    }
    // Colours only for a terminal that gets every line alone.
    let ansi = match sinks[..] {
        [Sink::Stderr] => std::io::stderr().is_terminal(),
        [Sink::Stdout] => std::io::stdout().is_terminal(),
        _ => false,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(BoxMakeWriter::new(Tee(sinks)))
        .with_ansi(ansi);
    let result = match format {
        "text" => builder.with_target(false).try_init(),
        "json" => builder.json().try_init(),
        other => anyhow::bail!("invalid --log-format {other:?} (want text or json)"),
    };
    result.map_err(|e| anyhow::anyhow!("installing the logger: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(logger: &str, outputs: &str, deprecated: &str) -> Logging {
        Logging {
            logger: logger.into(),
            log_outputs: outputs.into(),
            log_level: "info".into(),
            log_format: "text".into(),
            debug: false,
            log_package_levels: String::new(),
            log_output: deprecated.into(),
        }
    }

    #[test]
    fn outputs_are_checked_as_etcd_checks_them() {
        let out = |logger, outputs| Output::from_flags(&flags(logger, outputs, "default"));
        assert_eq!(out("capnslog", "default"), Ok(vec![Output::Stderr]));
        assert_eq!(out("capnslog", "stdout"), Ok(vec![Output::Stdout]));
        // etcd 3.4.23's messages for the same flags.
        assert_eq!(
            out("capnslog", "stderr,stdout"),
            Err(
                "--logger=capnslog supports only 1 value in '--log-outputs', got [\"stderr\" \"stdout\"]"
                    .into()
            )
        );
        assert_eq!(
            out("capnslog", "/var/log/etcd.log"),
            Err("unknown log-output \"/var/log/etcd.log\" (only supports \"default\", \"stderr\", \"stdout\")".into())
        );
        assert_eq!(
            out("zap", "default,stderr"),
            Err("multi logoutput for \"default\" is not supported yet".into())
        );
        assert_eq!(
            out("zap", "stderr,/var/log/etcd.log"),
            Ok(vec![
                Output::File("/var/log/etcd.log".into()),
                Output::Stderr
            ])
        );
        assert_eq!(out("zap", "stdout,stdout"), Ok(vec![Output::Stdout]));
        assert_eq!(
            verify(&flags("glog", "default", "default")),
            Err("unknown logger option \"glog\"".into())
        );
        let mut level = flags("capnslog", "default", "default");
        for ok in LEVELS {
            level.log_level = ok.into();
            assert_eq!(verify(&level), Ok(()), "{ok}");
        }
        for bad in ["warning", "DEBUG", "trace", "foo,raftkv=debug"] {
            level.log_level = bad.into();
            assert_eq!(verify(&level), Err(format!("unknown level {bad:?}")));
        }
        // The deprecated flag: followed where it names a stream, else stderr, never refused.
        let old = |value| Output::from_flags(&flags("capnslog", "default", value));
        assert_eq!(old("stdout"), Ok(vec![Output::Stdout]));
        assert_eq!(old("foo"), Ok(vec![Output::Stderr]));
        assert!(Output::ignored(&flags("capnslog", "default", "foo")));
        assert!(!Output::ignored(&flags("capnslog", "default", "stderr")));
    }
}
