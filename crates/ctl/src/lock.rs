//! `lock <lockname> [exec-command arg1 arg2 ...]`: etcdctl 3.4's lock command on
//! raftkv-client's [`Mutex`], with its output, messages and exit codes.
//!
//! Without a command it prints the lock key (as `get` prints it, in every `-w` format) and
//! holds the lock until SIGINT or SIGTERM, then unlocks; with one it runs the command while
//! holding the lock (`ETCD_LOCK_KEY` and `ETCD_LOCK_REV` in its environment) and unlocks when
//! it ends. A signal while waiting gives up the place in the queue (`context canceled`). The
//! session's lease is left to expire, as etcdctl leaves it. Also home of what `elect` shares
//! with it: the signal wait and the `get` display.

use std::io::Write;
use std::time::Duration;

use anyhow::anyhow;
use raftkv_client::proto::{RangeRequest, RangeResponse};
use raftkv_client::{Mutex, Session, SessionOptions};
use tokio::signal::unix::{Signal, SignalKind, signal};

use crate::print::Printer;
use crate::watch::{exit_text, spawn_text};
use crate::{bad_args, bad_feature};

/// `lock`'s flags and arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct LockArgs {
    /// Timeout for session.
    #[arg(long, default_value_t = 10, allow_negative_numbers = true)]
    pub ttl: i64,
    /// The lock name, then a command to execute while holding the lock (after `--` when
    /// it has flags of its own).
    pub args: Vec<String>,
}

/// Runs `lock` with the global `-w` format and `--hex`.
pub async fn run(
    cli: &crate::Cli,
    dial_timeout: Duration,
    format: &str,
    hex: bool,
    args: LockArgs,
) -> anyhow::Result<()> {
    let Some((name, command)) = args.args.split_first() else {
        return Err(bad_args(anyhow!(
            "lock takes a lock name argument and an optional command to execute"
        )));
    };
    let display = GetDisplay::new(format, hex)?;
    let client = cli.client().await?;
    let options = SessionOptions::new()
        .ttl(args.ttl)
        .first_answer_within(dial_timeout + Duration::from_secs(1));
    let session = Session::with_options(&client, options).await?;
    let mut interrupt = Interrupt::new()?;
    let mut mutex = Mutex::new(&session, name);
    mutex.lock_or_cancel(interrupt.wait()).await?;
    if !command.is_empty() {
        let revision = mutex.header().map_or(0, |h| h.revision);
        let ran = run_command(command, mutex.key(), revision).await;
        let unlocked = mutex.unlock().await;
        ran?;
        return Ok(unlocked?);
    }
    let held = client
        .range(RangeRequest {
            key: mutex.key().as_bytes().to_vec().into(),
            ..Default::default()
        })
        .await?;
    if held.kvs.is_empty() {
        anyhow::bail!("lock lost on init");
    }
    display.show(&held)?;
    tokio::select! {
        _ = interrupt.wait() => Ok(mutex.unlock().await?),
        _ = session.done() => Err(anyhow!("session expired")),
    }
}

/// Runs the command as etcdctl does while it holds the lock: our stdout and stderr, no
/// stdin, `ETCD_LOCK_KEY` and `ETCD_LOCK_REV` unless the environment already has them (Go
/// keeps the last of duplicate variables, and etcdctl puts the environment last). Awaited,
/// so the session's keep-alive goes on meanwhile. A failure reads as Go's `cmd.Run()` error.
async fn run_command(command: &[String], key: &str, revision: i64) -> anyhow::Result<()> {
    let mut cmd = tokio::process::Command::new(&command[0]);
    cmd.args(&command[1..]).stdin(std::process::Stdio::null());
    if std::env::var_os("ETCD_LOCK_KEY").is_none() {
        cmd.env("ETCD_LOCK_KEY", key);
    }
    if std::env::var_os("ETCD_LOCK_REV").is_none() {
        cmd.env("ETCD_LOCK_REV", revision.to_string());
    }
    std::io::stdout().flush()?;
    let status = match cmd.status().await {
        Ok(status) => status,
        Err(e) => anyhow::bail!("{}", spawn_text(&command[0], &e)),
    };
    if status.success() {
        return Ok(());
    }
    anyhow::bail!("{}", exit_text(status))
}

/// SIGINT or SIGTERM, caught from creation on (so neither ends the process) as etcdctl's
/// `signal.Notify` catches them; the first one counts, later ones are ignored.
pub struct Interrupt {
    int: Signal,
    term: Signal,
    fired: bool,
}

impl Interrupt {
    /// Catches SIGINT and SIGTERM from now on.
    pub fn new() -> anyhow::Result<Self> {
        Ok(Self {
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
            fired: false,
        })
    }

    /// Resolves once a signal has come (at once if one came before).
    pub async fn wait(&mut self) {
        if !self.fired {
            tokio::select! {
                _ = self.int.recv() => {}
                _ = self.term.recv() => {}
            }
            self.fired = true;
        }
    }
}

/// etcdctl's `display.Get`, which `lock` and `elect` print with: every output format it
/// knows (`protobuf` is the range answer's wire bytes; `table` fails when something is to be
/// printed, with ExitBadFeature).
pub struct GetDisplay {
    printer: Printer,
}

impl GetDisplay {
    /// Refuses a format etcdctl does not know ("unsupported output format", ExitBadFeature).
    pub fn new(format: &str, hex: bool) -> anyhow::Result<Self> {
        let printer = Printer::for_watch(format, hex).map_err(bad_feature)?;
        Ok(Self { printer })
    }

    /// Prints `resp` and flushes.
    pub fn show(&self, resp: &RangeResponse) -> anyhow::Result<()> {
        let bytes = match self.printer.format.as_str() {
            "table" => return Err(bad_feature(anyhow!("table not supported as output format"))),
            "protobuf" => prost::Message::encode_to_vec(resp),
            _ => self.printer.get(resp, false).into_bytes(),
        };
        let mut stdout = std::io::stdout().lock();
        stdout.write_all(&bytes)?;
        stdout.flush()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    #[test]
    fn command_failures_read_as_gos() {
        let exited = std::process::ExitStatus::from_raw(3 << 8);
        assert_eq!(exit_text(exited), "exit status 3");
        assert_eq!(
            exit_text(std::process::ExitStatus::from_raw(15)),
            "signal: terminated"
        );
        assert_eq!(
            exit_text(std::process::ExitStatus::from_raw(40)),
            "signal: signal 40"
        );
        let missing = std::io::Error::from(std::io::ErrorKind::NotFound);
        assert_eq!(
            spawn_text("nonexist", &missing),
            "exec: \"nonexist\": executable file not found in $PATH"
        );
        assert_eq!(
            spawn_text("./nonexist", &missing),
            "fork/exec ./nonexist: no such file or directory"
        );
    }

    #[test]
    fn formats_are_etcdctls() {
        assert!(GetDisplay::new("protobuf", false).is_ok());
        let unknown = GetDisplay::new("yaml", false).err().expect("refused");
        assert_eq!(unknown.to_string(), "unsupported output format");
        let table = GetDisplay::new("table", false).expect("taken");
        let refused = table.show(&RangeResponse::default()).expect_err("refused");
        assert_eq!(refused.to_string(), "table not supported as output format");
    }
}
