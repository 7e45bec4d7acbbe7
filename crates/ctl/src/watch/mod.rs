//! `watch`: etcdctl 3.4's watch command — `watch KEY [RANGE_END]`, `--prefix`, `--rev`,
//! `--prev-kv`, `-i` (one `watch ...` or `progress` request per stdin line), `-- COMMAND`
//! (run per event with `ETCD_WATCH_*` set), `ETCDCTL_WATCH_KEY` /
//! `ETCDCTL_WATCH_RANGE_END` — with its output in every format and its messages.
//!
//! The watchers share one [`WatchSession`]; [`Watchers`] reads its answers as clientv3 hands
//! them to etcdctl: no created answers, a progress request's answer to every watcher, a
//! canceled watch's last answer with its error, and clientv3's made-up answer for a watch
//! that fails (repeated for each later watch that ends while the stream lives, as clientv3
//! does).

mod args;

use std::collections::{BTreeMap, VecDeque};
use std::io::{BufRead, Write};
use std::process::Stdio;

use anyhow::anyhow;
use raftkv_client::{BROADCAST_WATCH_ID, Client, Error, WatchResponseExt, WatchSession};
use raftkv_proto::etcdserverpb::WatchResponse;
use raftkv_proto::mvccpb::Event;

use crate::print::{Printer, WatchView, event_type, go_quote_bytes};
use crate::{Exit, bad_args, bad_feature};

/// `watch`'s flags and arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct WatchArgs {
    /// Interactive mode.
    #[arg(short, long)]
    pub interactive: bool,
    /// Watch on a prefix if prefix is set.
    #[arg(long)]
    pub prefix: bool,
    /// Revision to start watching.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub rev: i64,
    /// Get the previous key-value pair before the event happens.
    #[arg(long)]
    pub prev_kv: bool,
    /// The key or prefix, and the range end.
    pub args: Vec<String>,
    /// A command to run for each event, after `--` (with ETCD_WATCH_REVISION,
    /// ETCD_WATCH_EVENT_TYPE, ETCD_WATCH_KEY and ETCD_WATCH_VALUE set).
    #[arg(last = true)]
    pub exec: Vec<String>,
}

/// etcdctl's exit when its watch ends (ExitInterrupted).
fn canceled_by_the_server() -> anyhow::Error {
    Exit(5, "watch is canceled by the server".into()).into()
}

/// Runs `watch` with the global `-w` format and `--hex`.
/// The client (`cli`'s) is made once the arguments are checked, as etcdctl makes it.
pub async fn run(
    cli: &crate::Cli,
    format: &str,
    hex: bool,
    watch: WatchArgs,
) -> anyhow::Result<()> {
    let env = args::Env::from_process();
    env.check().map_err(|e| bad_args(anyhow!(e)))?;
    if watch.interactive {
        let printer = Printer::for_watch(format, hex).map_err(bad_feature)?;
        // etcdctl's watches fail instead of waiting on a member without a leader.
        let client = cli.client().await?.require_leader(true);
        let session = client.watch_session().await?;
        return interactive(client, session, printer, env).await;
    }
    // Everything after the word `watch` as given, to find `--` as etcdctl does.
    let raw: Vec<String> = std::env::args()
        .skip(1)
        .skip_while(|a| a != "watch")
        .skip(1)
        .collect();
    let (watch_args, exec) = args::from_command_line(&raw, &watch.args, &watch.exec, &env)
        .map_err(|e| bad_args(anyhow!(e)))?;
    let printer = Printer::for_watch(format, hex).map_err(bad_feature)?;
    let client = cli.client().await?.require_leader(true);
    let mut session = client.watch_session().await?;
    let flags = args::Flags {
        prefix: watch.prefix,
        rev: watch.rev,
        prev_kv: watch.prev_kv,
    };
    let request = args::request(&watch_args, flags).map_err(|e| bad_args(anyhow!(e)))?;
    session.create(request)?;
    let mut watchers = Watchers::new(printer);
    watchers.pending.push_back(exec);
    while !watchers.is_empty() {
        match session.next().await {
            Some(Ok(answer)) => watchers.answer(answer)?,
            Some(Err(e)) => watchers.fail(&e)?,
            None => watchers.fail(&Error::WatchClosed)?,
        }
    }
    Err(canceled_by_the_server())
}

/// `watch -i`: a request per stdin line, each watch created before the next line is read
/// (clientv3's `Watch` returns once the watcher is created); the first line that cannot be
/// read (the end of the input) ends it.
async fn interactive(
    client: Client,
    session: WatchSession,
    printer: Printer,
    env: args::Env,
) -> anyhow::Result<()> {
    let mut session = Some(session);
    let (tx, mut lines) = tokio::sync::mpsc::unbounded_channel::<Result<String, String>>();
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        let mut stdin = stdin.lock();
        loop {
            let mut line = Vec::new();
            let read = match stdin.read_until(b'\n', &mut line) {
                Ok(_) if line.last() == Some(&b'\n') => {
                    line.pop();
                    Ok(String::from_utf8_lossy(&line).into_owned())
                }
                Ok(_) => Err("EOF".to_string()),
                Err(e) => Err(e.to_string()),
            };
            let last = read.is_err();
            if tx.send(read).is_err() || last {
                return;
            }
        }
    });
    let mut watchers = Watchers::new(printer);
    loop {
        let creating = !watchers.pending.is_empty();
        tokio::select! {
            line = lines.recv(), if !creating => {
                let line = line.unwrap_or_else(|| Err("EOF".into())).map_err(|e| {
                    anyhow::Error::from(Exit(3, format!("Error reading watch request line: {e}")))
                })?;
                watchers.line(&line, &client, &mut session, &env).await?;
            }
            answer = next(&mut session) => match answer {
                Some(Ok(answer)) => watchers.answer(answer)?,
                failed => {
                    let error = failed.and_then(Result::err).unwrap_or(Error::WatchClosed);
                    watchers.fail(&error)?;
                    session = None;
                }
            },
        }
    }
}

async fn next(session: &mut Option<WatchSession>) -> Option<Result<WatchResponse, Error>> {
    match session {
        Some(session) => session.next().await,
        None => std::future::pending().await,
    }
}

/// The session, opened again if the last one ended (as clientv3 opens a new stream).
async fn open<'a>(
    session: &'a mut Option<WatchSession>,
    client: &Client,
) -> anyhow::Result<&'a WatchSession> {
    if session.is_none() {
        *session = Some(client.watch_session().await?);
    }
    Ok(session.as_ref().expect("just opened"))
}

/// The watchers of a session as clientv3 keeps them for etcdctl, each with its command.
struct Watchers {
    printer: Printer,
    /// Commands of the creates not answered yet, in order.
    pending: VecDeque<Vec<String>>,
    /// Created watchers by id.
    live: BTreeMap<i64, Vec<String>>,
    /// The error of a watch the member refused: clientv3 keeps it for the stream and hands
    /// it to every watcher that ends after it, until the stream closes with its last one.
    close_err: Option<String>,
}

impl Watchers {
    fn new(printer: Printer) -> Self {
        Self {
            printer,
            pending: VecDeque::new(),
            live: BTreeMap::new(),
            close_err: None,
        }
    }

    fn is_empty(&self) -> bool {
        self.pending.is_empty() && self.live.is_empty()
    }

    /// An interactive line.
    async fn line(
        &mut self,
        line: &str,
        client: &Client,
        session: &mut Option<WatchSession>,
        env: &args::Env,
    ) -> anyhow::Result<()> {
        let words = match args::argify(line) {
            Ok(words) => words,
            Err(args::ArgifyError::Syntax) => {
                return Err(Exit(3, "invalid syntax".into()).into());
            }
            Err(args::ArgifyError::Panic(message)) => {
                let _ = std::io::stdout().flush();
                eprintln!("panic: runtime error: {message}\n\ngoroutine 1 [running]:");
                std::process::exit(2);
            }
        };
        let Some(first) = words.first() else {
            eprintln!("Invalid command: {line} (watch and progress supported)");
            return Ok(());
        };
        match first.as_str() {
            "watch" => {
                if words.len() < 2 && env.key.is_empty() {
                    eprintln!("Invalid command {line} (command type or key is not provided)");
                    return Ok(());
                }
                let (watch_args, exec, flags) =
                    args::from_line(&words[1..], env).map_err(|e| bad_args(anyhow!(e)))?;
                let request = match args::request(&watch_args, flags) {
                    Ok(request) => request,
                    Err(e) => {
                        eprintln!("Invalid command {line} ({e})");
                        return Ok(());
                    }
                };
                open(session, client).await?.create(request)?;
                self.pending.push_back(exec);
            }
            "progress" => open(session, client).await?.request_progress()?,
            _ => eprintln!("Invalid command {line} (only support watch)"),
        }
        Ok(())
    }

    /// One answer of the session, as clientv3 dispatches it.
    fn answer(&mut self, answer: WatchResponse) -> anyhow::Result<()> {
        if answer.created {
            let exec = self.pending.pop_front().unwrap_or_default();
            if answer.watch_id == BROADCAST_WATCH_ID
                || (answer.canceled && !answer.cancel_reason.is_empty())
            {
                // Refused: clientv3 keeps the reason as the stream's error and ends the
                // watch with it.
                self.close_err = Some(answer.cancel_reason);
                self.closed()?;
            } else {
                self.live.insert(answer.watch_id, exec);
            }
        } else if answer.canceled {
            if let Some(exec) = self.live.remove(&answer.watch_id) {
                // Only a compaction's cancel reaches the watch; either way it ends.
                if answer.compact_revision != 0 {
                    self.deliver(&view(&answer), &answer_error(&answer), &exec)?;
                }
                self.closed()?;
            }
        } else if answer.watch_id == BROADCAST_WATCH_ID && answer.is_progress_notify() {
            let view = view(&answer);
            let execs: Vec<Vec<String>> = self.live.values().cloned().collect();
            for exec in execs {
                self.deliver(&view, "", &exec)?;
            }
        } else if let Some(exec) = self.live.get(&answer.watch_id).cloned() {
            self.deliver(&view(&answer), "", &exec)?;
        }
        self.settle();
        Ok(())
    }

    /// The session ended with `error`: every watch, created or not, ends with it.
    fn fail(&mut self, error: &Error) -> anyhow::Result<()> {
        let ended = self.live.len() + self.pending.len();
        self.live.clear();
        self.pending.clear();
        for _ in 0..ended {
            self.deliver(&made_up(), &error.to_string(), &[])?;
        }
        self.settle();
        Ok(())
    }

    /// A watch has ended: clientv3 hands it the stream's error, if there is one.
    fn closed(&mut self) -> anyhow::Result<()> {
        if let Some(error) = self.close_err.clone() {
            self.deliver(&made_up(), &error, &[])?;
        }
        Ok(())
    }

    /// clientv3 closes the stream when its last watch ends; a new one starts afresh.
    fn settle(&mut self) {
        if self.is_empty() {
            self.close_err = None;
        }
    }

    /// etcdctl's `printWatchCh` for one answer: the cancel on stderr, a progress line,
    /// the answer in the output format, then the command for each event.
    fn deliver(&self, view: &WatchView, error: &str, exec: &[String]) -> anyhow::Result<()> {
        if view.canceled {
            eprintln!("watch was canceled ({error})");
        }
        let mut out = Vec::new();
        if view.is_progress_notify() {
            out.extend_from_slice(
                format!("progress notify: {}\n", view.header.revision).as_bytes(),
            );
        }
        let printed = self.printer.watch(view);
        if let Ok(bytes) = &printed {
            out.extend_from_slice(bytes);
        }
        let mut stdout = std::io::stdout().lock();
        stdout.write_all(&out)?;
        stdout.flush()?;
        drop(stdout);
        printed.map_err(bad_feature)?;
        if !exec.is_empty() {
            for event in view.events() {
                run_command(exec, view.header.revision, event);
            }
        }
        Ok(())
    }
}

/// An answer as clientv3 passes it on (events always a slice, possibly empty).
fn view(answer: &WatchResponse) -> WatchView {
    WatchView {
        header: answer.header.unwrap_or_default(),
        events: Some(answer.events.clone()),
        compact_revision: answer.compact_revision,
        canceled: answer.canceled,
        created: answer.created,
    }
}

/// The answer clientv3 makes up for a watch that fails: canceled, nothing else.
fn made_up() -> WatchView {
    WatchView {
        canceled: true,
        ..Default::default()
    }
}

/// clientv3's `Err()` of a canceled answer.
fn answer_error(answer: &WatchResponse) -> String {
    answer
        .cancel_error()
        .map(|e| e.to_string())
        .unwrap_or_default()
}

/// Runs the `--` command for one event as etcdctl does: its output is ours; if it fails,
/// etcdctl says so and exits with 1.
fn run_command(exec: &[String], revision: i64, event: &Event) {
    let kv = event.kv.clone().unwrap_or_default();
    let _ = std::io::stdout().flush();
    let status = std::process::Command::new(&exec[0])
        .args(&exec[1..])
        .env("ETCD_WATCH_REVISION", revision.to_string())
        .env(
            "ETCD_WATCH_EVENT_TYPE",
            go_quote_bytes(event_type(event).as_bytes()),
        )
        .env("ETCD_WATCH_KEY", go_quote_bytes(&kv.key))
        .env("ETCD_WATCH_VALUE", go_quote_bytes(&kv.value))
        .stdin(Stdio::null())
        .status();
    let failure = match status {
        Ok(status) if status.success() => return,
        Ok(status) => exit_text(status),
        Err(e) => spawn_text(&exec[0], &e),
    };
    let quoted: Vec<String> = exec.iter().map(|a| go_quote_bytes(a.as_bytes())).collect();
    eprintln!("command [{}] error ({failure})", quoted.join(" "));
    std::process::exit(1);
}

/// Go's text of a command's failed exit: `exit status N`, or `signal: NAME`.
pub(crate) fn exit_text(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    if let Some(code) = status.code() {
        return format!("exit status {code}");
    }
    let signal = status.signal().unwrap_or(0);
    let name = match signal {
        1 => "hangup",
        2 => "interrupt",
        3 => "quit",
        4 => "illegal instruction",
        5 => "trace/breakpoint trap",
        6 => "aborted",
        7 => "bus error",
        8 => "floating point exception",
        9 => "killed",
        10 => "user defined signal 1",
        11 => "segmentation fault",
        12 => "user defined signal 2",
        13 => "broken pipe",
        14 => "alarm clock",
        15 => "terminated",
        _ => return format!("signal: signal {signal}"),
    };
    format!("signal: {name}")
}

/// Go's text of a command that could not be started.
pub(crate) fn spawn_text(program: &str, error: &std::io::Error) -> String {
    let reason = match error.kind() {
        std::io::ErrorKind::NotFound if !program.contains('/') => {
            return format!(
                "exec: {}: executable file not found in $PATH",
                go_quote_bytes(program.as_bytes())
            );
        }
        std::io::ErrorKind::NotFound => "no such file or directory".to_string(),
        std::io::ErrorKind::PermissionDenied => "permission denied".to_string(),
        _ => error.to_string(),
    };
    format!("fork/exec {program}: {reason}")
}
