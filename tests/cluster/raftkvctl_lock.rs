//! `raftkvctl lock` / `elect` beside etcdctl's, and raftkv-client's `Session`, `Mutex` and
//! `Election` beside themselves on a real etcd.
//!
//! The command transcripts are run by etcdctl and by raftkvctl, each against a fresh raftkv
//! cluster and a fresh etcd cluster, and compared with etcdctl's on etcd; lease ids (in
//! keys, hex and decimal), cluster and member ids and terms are masked, revisions are not
//! (every run starts from revision 1 and does the same writes). The contention scenarios
//! mix the tools (an etcdctl holder with a raftkvctl waiter and the reverse: they share
//! keys), and check the order of acquisition. Every process started is stopped by its PID.

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};

use raftkv_client::proto::{RangeRequest, RangeResponse, ResponseHeader};
use raftkv_client::{
    Client, ConcurrencyError, Election, Mutex, Session, SessionOptions, Txn, lease_hex,
};

use crate::etcdctl::mask;
use crate::fixture::{Cluster, Options, Server, assert_no_differences, raftkvctl_bin};

/// How long a scenario waits for a state it expects before failing (not a timing check:
/// the states come within seconds).
const PATIENCE: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tool {
    Etcdctl,
    Raftkvctl,
}

fn command(tool: Tool, endpoint: &str, args: &[&str]) -> Command {
    let mut cmd = match tool {
        Tool::Etcdctl => {
            let mut cmd = Command::new("etcdctl");
            cmd.env("ETCDCTL_API", "3");
            cmd
        }
        Tool::Raftkvctl => Command::new(raftkvctl_bin()),
    };
    cmd.env_remove("ETCD_LOCK_KEY")
        .env_remove("ETCD_LOCK_REV")
        .arg(format!("--endpoints={endpoint}"))
        .args(args);
    cmd
}

/// A tool process: its output collected as it comes; interrupted by PID, and killed if it
/// still runs when dropped.
struct Running {
    child: Child,
    out: Arc<StdMutex<Vec<u8>>>,
    err: Arc<StdMutex<Vec<u8>>>,
    code: Option<i32>,
}

fn collect(mut from: impl Read + Send + 'static) -> Arc<StdMutex<Vec<u8>>> {
    let into = Arc::new(StdMutex::new(Vec::new()));
    let sink = into.clone();
    std::thread::spawn(move || {
        let mut chunk = [0u8; 4096];
        while let Ok(n) = from.read(&mut chunk) {
            if n == 0 {
                break;
            }
            sink.lock()
                .expect("output buffer")
                .extend_from_slice(&chunk[..n]);
        }
    });
    into
}

impl Running {
    fn start(mut cmd: Command) -> Running {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {cmd:?}: {e}"));
        let out = collect(child.stdout.take().expect("piped stdout"));
        let err = collect(child.stderr.take().expect("piped stderr"));
        Running {
            child,
            out,
            err,
            code: None,
        }
    }

    fn stdout(&self) -> Vec<u8> {
        self.out.lock().expect("output buffer").clone()
    }

    fn stderr(&self) -> Vec<u8> {
        self.err.lock().expect("output buffer").clone()
    }

    fn running(&mut self) -> bool {
        match self.child.try_wait().expect("polling a tool") {
            None => true,
            Some(status) => {
                self.code = Some(status.code().unwrap_or(-1));
                false
            }
        }
    }

    /// Waits until its stdout satisfies `ready`; fails if it exits first.
    fn wait_for_output(&mut self, what: &str, ready: impl Fn(&[u8]) -> bool) {
        let deadline = Instant::now() + PATIENCE;
        while !ready(&self.stdout()) {
            let ended = !self.running();
            assert!(
                !ended && Instant::now() < deadline,
                "gave up waiting: {what} (exit {:?}): {:?} {:?}",
                self.code,
                String::from_utf8_lossy(&self.stdout()),
                String::from_utf8_lossy(&self.stderr())
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn interrupt(&self) {
        // SAFETY: kill(2) on the PID of our own child, which has not been reaped yet.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGINT) };
    }

    /// Waits for it to exit (killing it if it does not) and returns exit code, stdout, stderr.
    fn finish(mut self) -> (i32, Vec<u8>, Vec<u8>) {
        let deadline = Instant::now() + PATIENCE;
        while self.running() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        if self.code.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
            panic!(
                "tool did not exit: {:?} {:?}",
                String::from_utf8_lossy(&self.stdout()),
                String::from_utf8_lossy(&self.stderr())
            );
        }
        // Give the reader threads a moment to take the last bytes of the closed pipes.
        std::thread::sleep(Duration::from_millis(100));
        (self.code.unwrap_or(-1), self.stdout(), self.stderr())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.code.is_none() && self.running() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !done() {
        assert!(Instant::now() < deadline, "gave up waiting: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs a tool to its end.
fn run(tool: Tool, endpoint: &str, args: &[&str]) -> (i32, Vec<u8>, Vec<u8>) {
    Running::start(command(tool, endpoint, args)).finish()
}

/// The keys under `prefix` (etcdctl, which both servers answer alike).
fn keys_under(endpoint: &str, prefix: &str) -> Vec<String> {
    let (code, out, err) = run(
        Tool::Etcdctl,
        endpoint,
        &["get", "--prefix", prefix, "--keys-only"],
    );
    assert_eq!(code, 0, "{}", String::from_utf8_lossy(&err));
    String::from_utf8_lossy(&out)
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

fn wait_keys(endpoint: &str, prefix: &str, n: usize) -> Vec<String> {
    let mut keys = Vec::new();
    wait_until(&format!("{n} keys under {prefix}"), || {
        keys = keys_under(endpoint, prefix);
        keys.len() == n
    });
    keys
}

/// The create revision of `key`.
fn create_revision(endpoint: &str, key: &str) -> i64 {
    let (_, out, _) = run(Tool::Etcdctl, endpoint, &["get", key, "-w", "fields"]);
    let out = String::from_utf8_lossy(&out);
    out.lines()
        .find_map(|l| l.strip_prefix("\"CreateRevision\" : "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no create revision for {key}: {out}"))
}

/// Go's base64 (std alphabet, padded) decoded; `None` if it is not base64.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = Vec::new();
    for c in text.trim_end_matches('=').bytes() {
        let v = ALPHABET.iter().position(|&a| a == c)? as u32;
        bits = (bits << 6) | v;
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
        }
    }
    Some(out)
}

/// json's base64 keys as text (`"key":"=<key>"`), so lease ids in them can be masked.
fn decode_json_keys(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find("\"key\":\"") {
        let start = at + "\"key\":\"".len();
        out.push_str(&rest[..start]);
        rest = &rest[start..];
        let end = rest.find('"').unwrap_or(rest.len());
        match base64_decode(&rest[..end]) {
            Some(key) => out.push_str(&format!("={}", String::from_utf8_lossy(&key))),
            None => out.push_str(&rest[..end]),
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// A `-w protobuf` output (one RangeResponse) as readable text (not its size: member and
/// cluster ids differ in varint length from one cluster to the next).
fn decode_protobuf(bytes: &[u8]) -> String {
    match raftkv_proto::codec::decode_bounded::<RangeResponse>(bytes) {
        Ok(resp) => {
            let h = resp.header.unwrap_or_default();
            let kvs: Vec<String> = resp
                .kvs
                .iter()
                .map(|kv| {
                    format!(
                        "key={} create={} mod={} version={} value={:?} \"lease\":{}",
                        String::from_utf8_lossy(&kv.key),
                        kv.create_revision,
                        kv.mod_revision,
                        kv.version,
                        String::from_utf8_lossy(&kv.value),
                        kv.lease
                    )
                })
                .collect();
            format!(
                "protobuf: revision={} kvs=[{}] more={} count={}\n",
                h.revision,
                kvs.join(", "),
                resp.more,
                resp.count
            )
        }
        Err(e) => format!("not protobuf ({e}): {bytes:?}\n"),
    }
}

/// `--hex` output (`\xNN` per byte) as text in brackets, so lease ids in it can be masked.
fn decode_hex_escapes(text: &str) -> String {
    let unescape = |line: &str| -> Option<Vec<u8>> {
        if line.is_empty() || !line.len().is_multiple_of(4) {
            return None;
        }
        line.as_bytes()
            .chunks(4)
            .map(|c| {
                let hex = std::str::from_utf8(c.strip_prefix(b"\\x")?).ok()?;
                u8::from_str_radix(hex, 16).ok()
            })
            .collect()
    };
    let mut out = String::new();
    for line in text.lines() {
        match unescape(line) {
            Some(bytes) => out.push_str(&format!("hex[{}]", String::from_utf8_lossy(&bytes))),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// Lease ids in `text`: after `<name>/` (hex, as lock and election keys hold them) for each
/// of `names`, and after json's and fields' lease labels (decimal); in order of appearance.
fn lease_ids(text: &str, names: &[&str], ids: &mut Vec<i64>) {
    let mut found: Vec<(usize, i64)> = Vec::new();
    for name in names {
        let key = format!("{name}/");
        for (at, _) in text.match_indices(&key) {
            let hex: String = text[at + key.len()..]
                .chars()
                .take_while(|c| c.is_ascii_hexdigit() || *c == '-')
                .collect();
            if let Ok(id) = i64::from_str_radix(&hex, 16) {
                found.push((at, id));
            }
        }
    }
    for label in ["\"lease\":", "\"Lease\" : "] {
        for (at, _) in text.match_indices(label) {
            let digits: String = text[at + label.len()..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            if let Ok(id) = digits.parse() {
                found.push((at, id));
            }
        }
    }
    found.sort();
    for (_, id) in found {
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
}

/// `text` with each lease id (padded hex as etcdctl's lease commands print it, `%x` as keys
/// hold it, decimal) named by its place in `ids`.
fn mask_leases(text: &str, ids: &[i64]) -> String {
    let mut out = text.to_string();
    for (n, id) in ids.iter().enumerate() {
        let name = format!("<L{n}>");
        out = out
            .replace(&format!("{id:016x}"), &name)
            .replace(&lease_hex(*id), &name)
            .replace(&id.to_string(), &name);
    }
    out
}

/// A transcript line set for one command or process, masked.
fn entry(
    title: &str,
    (code, out, err): &(i32, Vec<u8>, Vec<u8>),
    protobuf: bool,
    names: &[&str],
    ids: &mut Vec<i64>,
) -> String {
    let out = if protobuf {
        decode_protobuf(out)
    } else {
        String::from_utf8_lossy(out).into_owned()
    };
    let text = format!(
        "$ {title} (exit {code})\n{}{}",
        mask(&decode_hex_escapes(&decode_json_keys(&out))),
        mask(&String::from_utf8_lossy(err))
    );
    lease_ids(&text, names, ids);
    mask_leases(&text, ids)
}

/// Lock and elect names of the command session.
const NAMES: &[&str] = &["rl-lock", "rl-held", "rl-gone", "rl-elect", "rl-expire"];

/// One-shot lock and elect commands: argument errors, formats, a command run under the lock.
const ONE_SHOT: &[&[&str]] = &[
    &["lock"],
    &["lock", "--ttl", "5"],
    &["-w", "yaml", "lock", "rl-lock"],
    &["-w", "yaml", "lock"],
    &[
        "lock",
        "rl-lock",
        "--",
        "sh",
        "-c",
        "echo key=$ETCD_LOCK_KEY rev=$ETCD_LOCK_REV",
    ],
    &["lock", "--ttl", "5", "rl-lock", "echo", "a", "b"],
    &[
        "lock",
        "rl-lock",
        "--",
        "sh",
        "-c",
        "echo $ETCD_LOCK_KEY; echo oops >&2; exit 3",
    ],
    &["lock", "rl-lock", "--", "sh", "-c", "kill -TERM $$"],
    &["lock", "rl-lock", "raftkv-no-such-command"],
    &["lock", "rl-lock", "./raftkv-no-such-command"],
    &[
        "lock",
        "--ttl",
        "0",
        "rl-lock",
        "--",
        "sh",
        "-c",
        "echo $ETCD_LOCK_REV",
    ],
    &[
        "-w",
        "table",
        "lock",
        "rl-lock",
        "--",
        "echo",
        "table is fine here",
    ],
    &["get", "rl-lock", "--prefix"],
    &["elect"],
    &["elect", "a", "b", "c"],
    &["elect", "rl-elect"],
    &["elect", "-l", "rl-elect", "p"],
    &["elect", "--listen", "rl-elect", "p"],
    &["-w", "yaml", "elect", "rl-elect"],
    &["-w", "yaml", "elect", "-l", "rl-elect", "p"],
];

/// The command session of one tool against one fresh cluster.
fn command_session(tool: Tool, endpoint: &str) -> Vec<String> {
    let mut ids = Vec::new();
    let mut out = Vec::new();
    for args in ONE_SHOT {
        let result = run(tool, endpoint, args);
        out.push(entry(&args.join(" "), &result, false, NAMES, &mut ids));
    }
    // The environment's ETCD_LOCK_KEY wins over the lock's (Go keeps the last duplicate).
    let mut cmd = command(
        tool,
        endpoint,
        &["lock", "rl-lock", "--", "sh", "-c", "echo $ETCD_LOCK_KEY"],
    );
    cmd.env("ETCD_LOCK_KEY", "mine");
    let result = Running::start(cmd).finish();
    out.push(entry(
        "ETCD_LOCK_KEY=mine lock",
        &result,
        false,
        NAMES,
        &mut ids,
    ));
    // Held locks and leadership in every format, released by SIGINT.
    for format in ["simple", "json", "fields", "protobuf"] {
        for args in [
            &["-w", format, "lock", "rl-held"][..],
            &["-w", format, "--hex", "lock", "rl-held"][..],
            &["-w", format, "elect", "rl-elect", "v<&>"][..],
        ] {
            let mut held = Running::start(command(tool, endpoint, args));
            held.wait_for_output("printed the key", |o| {
                if format == "protobuf" {
                    raftkv_proto::codec::decode_bounded::<RangeResponse>(o)
                        .is_ok_and(|r| !r.kvs.is_empty())
                } else {
                    o.ends_with(b"\n")
                }
            });
            held.interrupt();
            let result = held.finish();
            let title = format!("{} + SIGINT", args.join(" "));
            out.push(entry(
                &title,
                &result,
                format == "protobuf",
                NAMES,
                &mut ids,
            ));
        }
    }
    out.push(entry(
        "get rl- --prefix",
        &run(tool, endpoint, &["get", "rl-", "--prefix"]),
        false,
        NAMES,
        &mut ids,
    ));
    // Sessions that end: the lease revoked under a held lock and a leader.
    let mut lock = Running::start(command(tool, endpoint, &["lock", "rl-expire"]));
    let mut lead = Running::start(command(tool, endpoint, &["elect", "rl-expire-e", "x"]));
    lock.wait_for_output("lock held", |o| o.ends_with(b"\n\n"));
    lead.wait_for_output("elected", |o| o.ends_with(b"x\n"));
    for held in [&lock, &lead] {
        let key = String::from_utf8_lossy(&held.stdout())
            .lines()
            .next()
            .unwrap_or_default()
            .to_string();
        let hex = key.rsplit('/').next().unwrap_or_default().to_string();
        let revoked = run(Tool::Etcdctl, endpoint, &["lease", "revoke", &hex]);
        assert_eq!(revoked.0, 0, "{}", String::from_utf8_lossy(&revoked.2));
    }
    let names = [NAMES, &["rl-expire-e"]].concat();
    out.push(entry(
        "lock rl-expire; lease revoked",
        &lock.finish(),
        false,
        &names,
        &mut ids,
    ));
    out.push(entry(
        "elect rl-expire-e x; lease revoked",
        &lead.finish(),
        false,
        &names,
        &mut ids,
    ));
    // Last: it leaves its key to expire with its lease.
    let result = run(tool, endpoint, &["-w", "table", "lock", "rl-gone"]);
    out.push(entry(
        "-w table lock rl-gone",
        &result,
        false,
        NAMES,
        &mut ids,
    ));
    let result = run(
        tool,
        endpoint,
        &["get", "rl-gone", "--prefix", "--keys-only"],
    );
    out.push(entry(
        "get rl-gone --prefix",
        &result,
        false,
        NAMES,
        &mut ids,
    ));
    out
}

/// Compares each run with the first (etcdctl on etcd), transcript entry by entry.
fn differences(runs: &[(String, Vec<String>)]) -> Vec<String> {
    let (reference_name, reference) = &runs[0];
    let mut differences = Vec::new();
    for (name, run) in &runs[1..] {
        if run.len() != reference.len() {
            differences.push(format!(
                "{name}: {} entries, not {}",
                run.len(),
                reference.len()
            ));
        }
        for (want, got) in reference.iter().zip(run) {
            if want != got {
                differences.push(format!("--- {reference_name}\n{want}--- {name}\n{got}"));
            }
        }
    }
    differences
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raftkvctl_lock_and_elect_commands_match_etcdctl_on_raftkv_and_on_etcd() {
    let mut runs = Vec::new();
    for server in [Server::Etcd, Server::Raftkv] {
        for tool in [Tool::Etcdctl, Tool::Raftkvctl] {
            let cluster = Cluster::start(server, 3, Options::default()).await;
            // One member: headers name the member that answered.
            let endpoint = cluster.members[0].endpoint();
            let transcript = tokio::task::block_in_place(|| command_session(tool, &endpoint));
            runs.push((format!("{tool:?} on {server:?}"), transcript));
        }
    }
    let reference = runs[0].1.join("");
    // The reference itself must show what the session is about.
    for expected in [
        "key=rl-lock/<L0> rev=2",
        "Error: exit status 3",
        "Error: signal: terminated",
        "Error: lock takes a lock name argument and an optional command to execute",
        "Error: no proposal argument but -l not set",
        "Error: session expired",
        "Error: elect: session expired",
        "Error: table not supported as output format",
    ] {
        assert!(reference.contains(expected), "{expected}:\n{reference}");
    }
    assert_no_differences(&differences(&runs));
}

/// Who runs which part of a scenario.
#[derive(Debug, Clone, Copy)]
struct Cast {
    holder: Tool,
    waiter: Tool,
    quitter: Tool,
}

/// Lock contention on `lock contended`: A holds it, B waits to run a command, C waits and is
/// interrupted (it leaves the queue), then A is interrupted and B gets the lock. Revisions
/// are given relative to A's key's create revision, so runs on one cluster compare.
fn contention(cast: Cast, endpoint: &str) -> Vec<String> {
    let names = ["contended"];
    let mut ids = Vec::new();
    let mut out = Vec::new();
    let mut a = Running::start(command(cast.holder, endpoint, &["lock", "contended"]));
    a.wait_for_output("A holds the lock", |o| o.ends_with(b"\n\n"));
    let a_key = String::from_utf8_lossy(&a.stdout())
        .lines()
        .next()
        .unwrap_or_default()
        .to_string();
    let base = create_revision(endpoint, &a_key);
    let show_b = "echo got $ETCD_LOCK_KEY $ETCD_LOCK_REV";
    let b_args = ["lock", "contended", "--", "sh", "-c", show_b];
    let mut b = Running::start(command(cast.waiter, endpoint, &b_args));
    wait_keys(endpoint, "contended/", 2);
    let c = Running::start(command(cast.quitter, endpoint, &["lock", "contended"]));
    let queued = wait_keys(endpoint, "contended/", 3);
    out.push(format!("queued: {}", queued.len()));
    c.interrupt();
    let c_result = c.finish();
    let left = keys_under(endpoint, "contended/");
    out.push(format!(
        "after C left: {} keys, A's among them: {}",
        left.len(),
        left.contains(&a_key)
    ));
    // B still waits: it has printed nothing and runs.
    out.push(format!(
        "B before A's release: running {}, output {:?}",
        b.running(),
        String::from_utf8_lossy(&b.stdout())
    ));
    a.interrupt();
    let a_result = a.finish();
    let b_result = b.finish();
    // B's key and revision, relative to A's create revision.
    let b_text = String::from_utf8_lossy(&b_result.1).into_owned();
    let b_rev = b_text
        .split_whitespace()
        .last()
        .and_then(|r| r.parse::<i64>().ok())
        .map_or("none".into(), |r| format!("A+{}", r - base));
    let b_key = b_text.split_whitespace().nth(1).unwrap_or_default();
    out.push(format!(
        "B's key is its own: {}; B's lock revision: {b_rev}",
        !b_key.is_empty() && b_key != a_key
    ));
    out.push(entry(
        "A: lock contended",
        &a_result,
        false,
        &names,
        &mut ids,
    ));
    let b_result = (b_result.0, b_rev.into_bytes(), b_result.2);
    out.push(entry(
        "B: lock contended -- ...",
        &b_result,
        false,
        &names,
        &mut ids,
    ));
    out.push(entry(
        "C: lock contended + SIGINT",
        &c_result,
        false,
        &names,
        &mut ids,
    ));
    out.push(format!(
        "keys left: {:?}",
        keys_under(endpoint, "contended/")
    ));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raftkvctl_lock_contention_interoperates_with_etcdctl() {
    use Tool::{Etcdctl as E, Raftkvctl as R};
    let casts = [
        Cast {
            holder: E,
            waiter: E,
            quitter: E,
        },
        Cast {
            holder: R,
            waiter: R,
            quitter: R,
        },
        Cast {
            holder: R,
            waiter: E,
            quitter: E,
        },
        Cast {
            holder: E,
            waiter: R,
            quitter: R,
        },
        Cast {
            holder: E,
            waiter: E,
            quitter: R,
        },
    ];
    let mut runs = Vec::new();
    for server in [Server::Etcd, Server::Raftkv] {
        let cluster = Cluster::start(server, 3, Options::default()).await;
        let endpoint = cluster.members[0].endpoint();
        for cast in casts {
            let transcript = tokio::task::block_in_place(|| contention(cast, &endpoint));
            runs.push((format!("{cast:?} on {server:?}"), transcript));
        }
    }
    let reference = runs[0].1.join("\n");
    for expected in [
        "B's key is its own: true; B's lock revision: A+4",
        "Error: context canceled",
        "keys left: []",
        "B before A's release: running true, output \"\"",
    ] {
        assert!(reference.contains(expected), "{expected}:\n{reference}");
    }
    assert_no_differences(&differences(&runs));
}

/// Who runs which process of the election scenario.
#[derive(Debug, Clone, Copy)]
struct Voters {
    observer: Tool,
    json_observer: Tool,
    first: Tool,
    second: Tool,
    quitter: Tool,
}

/// An election: an observer from the start; P1 campaigns and leads, P2 waits; a json
/// observer joins (two candidates: its later answers carry the count its first read saw);
/// the leader's value is changed by a put; P3 waits and is interrupted (it resigns); P1 is
/// interrupted and P2 takes over; then P2 is interrupted and the observers.
fn election(voters: Voters, endpoint: &str) -> Vec<String> {
    let names = ["vote"];
    let mut ids = Vec::new();
    let mut out = Vec::new();
    let lines = |r: &Running| String::from_utf8_lossy(&r.stdout()).lines().count();
    // Whether it reads the first leader or watches for it, it prints the same.
    let mut observer = Running::start(command(voters.observer, endpoint, &["elect", "-l", "vote"]));
    let mut p1 = Running::start(command(voters.first, endpoint, &["elect", "vote", "p1"]));
    p1.wait_for_output("P1 elected", |o| o.ends_with(b"p1\n"));
    let mut p2 = Running::start(command(voters.second, endpoint, &["elect", "vote", "p2"]));
    wait_keys(endpoint, "vote/", 2);
    let p1_key = String::from_utf8_lossy(&p1.stdout())
        .lines()
        .next()
        .unwrap_or_default()
        .to_string();
    let json_args = ["-w", "json", "elect", "-l", "vote"];
    let mut json_observer = Running::start(command(voters.json_observer, endpoint, &json_args));
    json_observer.wait_for_output("json observer saw P1", |o| o.ends_with(b"\n"));
    observer.wait_for_output("observer saw P1", |o| o.ends_with(b"p1\n"));
    let put = run(Tool::Etcdctl, endpoint, &["put", &p1_key, "p1-again"]);
    assert_eq!(put.0, 0, "{}", String::from_utf8_lossy(&put.2));
    wait_until("observers saw the new value", || {
        lines(&observer) == 4 && lines(&json_observer) == 2
    });
    let p3 = Running::start(command(voters.quitter, endpoint, &["elect", "vote", "p3"]));
    wait_keys(endpoint, "vote/", 3);
    p3.interrupt();
    let p3_result = p3.finish();
    out.push(format!(
        "after P3 left: {} keys",
        keys_under(endpoint, "vote/").len()
    ));
    out.push(format!(
        "P2 before P1 resigned: running {}, output {:?}",
        p2.running(),
        String::from_utf8_lossy(&p2.stdout())
    ));
    p1.interrupt();
    let p1_result = p1.finish();
    p2.wait_for_output("P2 elected", |o| o.ends_with(b"p2\n"));
    wait_until("observers saw P2", || {
        lines(&observer) == 6 && lines(&json_observer) == 3
    });
    p2.interrupt();
    let p2_result = p2.finish();
    wait_keys(endpoint, "vote/", 0);
    observer.interrupt();
    json_observer.interrupt();
    for (title, result) in [
        ("P1: elect vote p1", p1_result),
        ("P2: elect vote p2", p2_result),
        ("P3: elect vote p3 + SIGINT while waiting", p3_result),
        ("observer: elect -l vote", observer.finish()),
        (
            "json observer: -w json elect -l vote",
            json_observer.finish(),
        ),
    ] {
        out.push(entry(title, &result, false, &names, &mut ids));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raftkvctl_elect_matches_etcdctl_and_interoperates() {
    use Tool::{Etcdctl as E, Raftkvctl as R};
    let all = |t| Voters {
        observer: t,
        json_observer: t,
        first: t,
        second: t,
        quitter: t,
    };
    let mixed = Voters {
        observer: E,
        json_observer: R,
        first: R,
        second: E,
        quitter: R,
    };
    let mut runs = Vec::new();
    for server in [Server::Etcd, Server::Raftkv] {
        for voters in [all(E), all(R), mixed] {
            let cluster = Cluster::start(server, 3, Options::default()).await;
            let endpoint = cluster.members[0].endpoint();
            let transcript = tokio::task::block_in_place(|| election(voters, &endpoint));
            runs.push((format!("{voters:?} on {server:?}"), transcript));
        }
    }
    let reference = runs[0].1.join("\n");
    for expected in [
        "\"count\":2",
        "p1-again",
        "Error: context canceled",
        "after P3 left: 2 keys",
    ] {
        assert!(reference.contains(expected), "{expected}:\n{reference}");
    }
    assert_no_differences(&differences(&runs));
}

/// What the library calls returned, with lease ids named by order of appearance.
struct Book {
    lines: Vec<String>,
    leases: Vec<i64>,
}

impl Book {
    fn lease(&mut self, id: i64) -> String {
        if !self.leases.contains(&id) {
            self.leases.push(id);
        }
        let n = self.leases.iter().position(|l| *l == id).unwrap_or(0);
        format!("<L{n}>")
    }

    fn key(&mut self, key: &str) -> String {
        match key.rsplit_once('/') {
            Some((name, hex)) => match i64::from_str_radix(hex, 16) {
                Ok(id) => format!("{name}/{}", self.lease(id)),
                Err(_) => key.to_string(),
            },
            None => format!("{key:?}"),
        }
    }

    fn note(&mut self, line: String) {
        self.lines.push(line);
    }
}

fn rev(header: Option<&ResponseHeader>) -> i64 {
    header.map_or(-1, |h| h.revision)
}

fn show_leader(book: &mut Book, resp: &RangeResponse) -> String {
    let kv = resp.kvs.first().cloned().unwrap_or_default();
    let key = book.key(&String::from_utf8_lossy(&kv.key));
    format!(
        "rev {} {key}={} create {} mod {} lease {} more {} count {}",
        rev(resp.header.as_ref()),
        String::from_utf8_lossy(&kv.value),
        kv.create_revision,
        kv.mod_revision,
        book.lease(kv.lease),
        resp.more,
        resp.count
    )
}

async fn keys(client: &Client, prefix: &str) -> Vec<String> {
    let resp = client
        .range(RangeRequest {
            key: prefix.as_bytes().to_vec().into(),
            range_end: raftkv_client::prefix_end(prefix.as_bytes()).into(),
            keys_only: true,
            ..Default::default()
        })
        .await
        .expect("range");
    resp.kvs
        .iter()
        .map(|kv| String::from_utf8_lossy(&kv.key).into_owned())
        .collect()
}

/// How long a waiter gets to receive the answer of the txn that created its key before the
/// test cancels it.
const SETTLE: Duration = Duration::from_millis(500);

async fn wait_for_keys(client: &Client, prefix: &str, n: usize) -> Vec<String> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let now = keys(client, prefix).await;
        if now.len() == n {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "{n} keys under {prefix}: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn session(client: &Client, ttl: i64) -> Session {
    Session::with_options(client, SessionOptions::new().ttl(ttl))
        .await
        .expect("session")
}

/// Two sessions contend for a lock; a waiter gives up (by a cancel signal, and by being
/// dropped) and leaves the queue; a revoked lease releases the lock.
async fn mutex_transcript(client: &Client, book: &mut Book) {
    let s1 = session(client, 10).await;
    let s2 = session(client, 10).await;
    let mut m1 = Mutex::new(&s1, "lib-lock");
    m1.lock().await.expect("uncontended lock");
    let m1_key = m1.key().to_string();
    let line = format!(
        "m1 locked {} at rev {}",
        book.key(&m1_key),
        rev(m1.header())
    );
    book.note(line);
    let mut again = Mutex::new(&s1, "lib-lock");
    again.lock().await.expect("relock");
    let line = format!(
        "same session again: {} rev {}",
        book.key(again.key()),
        rev(again.header())
    );
    book.note(line);
    let mut m2 = Mutex::new(&s2, "lib-lock");
    let waiter = tokio::spawn(async move {
        let locked = m2.lock().await;
        (m2, locked)
    });
    wait_for_keys(client, "lib-lock/", 2).await;
    book.note(format!("m2 waits: {}", !waiter.is_finished()));
    // A third session's waiter cancelled by a signal leaves the queue before returning.
    let s3 = session(client, 10).await;
    let mut m3 = Mutex::new(&s3, "lib-lock");
    let (cancel, cancelled) = tokio::sync::oneshot::channel::<()>();
    let quitter = tokio::spawn(async move {
        let locked = m3
            .lock_or_cancel(async move { drop(cancelled.await) })
            .await;
        (m3, locked)
    });
    wait_for_keys(client, "lib-lock/", 3).await;
    // The key is committed; let its txn's answer reach the waiter first (cancelled inside
    // that window, clientv3 and this client return without knowing the key, and leave it).
    tokio::time::sleep(SETTLE).await;
    let _ = cancel.send(());
    let (m3, cancelled) = quitter.await.expect("quitter");
    let left = keys(client, "lib-lock/").await.len();
    book.note(format!(
        "m3 cancelled: {:?} key {:?}; keys left {left}",
        cancelled.map_err(|e| e.to_string()),
        m3.key()
    ));
    // A fourth one's lock future dropped while waiting: a task deletes its key.
    let s4 = session(client, 10).await;
    let mut m4 = Mutex::new(&s4, "lib-lock");
    let dropped = tokio::spawn(async move { m4.lock().await });
    wait_for_keys(client, "lib-lock/", 3).await;
    tokio::time::sleep(SETTLE).await;
    dropped.abort();
    let _ = dropped.await;
    let left = wait_for_keys(client, "lib-lock/", 2).await.len();
    book.note(format!("m4 dropped: keys left {left}"));
    let owns = |m: &Mutex| Txn::new().when([m.is_owner()]);
    let m1_owns = client.txn(owns(&m1)).await.expect("txn").succeeded;
    book.note(format!("m1 owns: {m1_owns}"));
    m1.unlock().await.expect("unlock");
    book.note(format!("m1 unlocked, key now {:?}", m1.key()));
    let (m2, locked) = waiter.await.expect("waiter");
    locked.expect("m2 locked");
    let m2_owns = client.txn(owns(&m2)).await.expect("txn").succeeded;
    let m1_owns = client.txn(owns(&m1)).await.expect("txn").succeeded;
    let line = format!(
        "m2 locked {} at rev {}; owns {m2_owns}; m1 owns {m1_owns}",
        book.key(m2.key()),
        rev(m2.header())
    );
    book.note(line);
    // The holder's lease revoked: the lock passes on, and the holder's session ends.
    let s5 = session(client, 10).await;
    let mut m5 = Mutex::new(&s5, "lib-lock");
    let next = tokio::spawn(async move {
        let locked = m5.lock().await;
        (m5, locked)
    });
    wait_for_keys(client, "lib-lock/", 2).await;
    client.lease_revoke(s2.lease()).await.expect("revoke");
    let (m5, locked) = next.await.expect("next");
    locked.expect("m5 locked");
    let line = format!(
        "after m2's lease was revoked m5 locked {} at rev {}",
        book.key(m5.key()),
        rev(m5.header())
    );
    book.note(line);
    s2.done().await;
    book.note(format!("s2 done: {}", s2.is_done()));
    s5.close().await.expect("close");
    let left = keys(client, "lib-lock/").await;
    book.note(format!("s5 closed: keys left {left:?}"));
    drop((s1, s3, s4));
}

/// A campaign, a waiting candidate, an observer through proclamations and a change of
/// leader; errors of an election that does not lead; a cancelled campaign.
async fn election_transcript(client: &Client, book: &mut Book) {
    let s1 = session(client, 10).await;
    let s2 = session(client, 10).await;
    let mut e1 = Election::new(&s1, "lib-vote");
    let observer = Election::new(&s1, "lib-vote");
    let none = observer
        .leader()
        .await
        .map(|_| ())
        .map_err(|e| e.to_string());
    book.note(format!("leader before any campaign: {none:?}"));
    e1.campaign("a").await.expect("campaign");
    // Observing starts with a read: after the campaign, so it finds one candidate.
    let mut watch = observer.observe();
    let line = format!(
        "e1 leads: {} rev {} header {}",
        book.key(e1.key()),
        e1.rev(),
        rev(e1.header())
    );
    book.note(line);
    let first = watch.next().await.expect("observed");
    let line = format!("observed {}", show_leader(book, &first));
    book.note(line);
    let mut e2 = Election::new(&s2, "lib-vote");
    let candidate = tokio::spawn(async move {
        let won = e2.campaign("b").await;
        (e2, won)
    });
    wait_for_keys(client, "lib-vote/", 2).await;
    let mut late = Election::new(&s2, "lib-vote").observe();
    let joined = late.next().await.expect("observed");
    let line = format!("late observer: {}", show_leader(book, &joined));
    book.note(line);
    e1.proclaim("a2").await.expect("proclaim");
    book.note(format!("proclaimed a2, header {}", rev(e1.header())));
    for w in [&mut watch, &mut late] {
        let seen = w.next().await.expect("observed");
        let line = format!("observed {}", show_leader(book, &seen));
        book.note(line);
    }
    let leader = e1.leader().await.expect("leader");
    let line = format!("leader: {}", show_leader(book, &leader));
    book.note(line);
    // Campaigning again with the same session and another value proclaims it.
    let mut again = Election::new(&s1, "lib-vote");
    again.campaign("a3").await.expect("campaign again");
    let line = format!(
        "same session again: {} rev {} header {}",
        book.key(again.key()),
        again.rev(),
        rev(again.header())
    );
    book.note(line);
    let seen = watch.next().await.expect("observed");
    let line = format!("observed {}", show_leader(book, &seen));
    book.note(line);
    // A third candidate's campaign dropped while waiting: its key is resigned.
    let s3 = session(client, 10).await;
    let mut e3 = Election::new(&s3, "lib-vote");
    let dropped = tokio::spawn(async move { e3.campaign("c").await });
    wait_for_keys(client, "lib-vote/", 3).await;
    tokio::time::sleep(SETTLE).await;
    dropped.abort();
    let _ = dropped.await;
    let left = wait_for_keys(client, "lib-vote/", 2).await.len();
    book.note(format!("e3 dropped: keys left {left}"));
    book.note(format!("e2 waits: {}", !candidate.is_finished()));
    e1.resign().await.expect("resign");
    book.note(format!(
        "e1 resigned, header {}; key {:?}",
        rev(e1.header()),
        e1.key()
    ));
    let seen = watch.next().await.expect("observed");
    let line = format!("observed {}", show_leader(book, &seen));
    book.note(line);
    let (mut e2, won) = candidate.await.expect("candidate");
    won.expect("e2 won");
    let line = format!(
        "e2 leads: {} rev {} header {}",
        book.key(e2.key()),
        e2.rev(),
        rev(e2.header())
    );
    book.note(line);
    let not_leader = e1.proclaim("x").await.map_err(|e| e.to_string());
    book.note(format!("e1 proclaims: {not_leader:?}"));
    e1.resign().await.expect("resign twice is nothing");
    // Another session's key on e2's name: e2 no longer leads by its revision.
    let mut stale = Election::resume(&s2, "lib-vote/", e2.key(), e2.rev() - 1);
    let stale = stale.proclaim("y").await.map_err(|e| e.to_string());
    book.note(format!(
        "resumed with a wrong revision proclaims: {stale:?}"
    ));
    e2.resign().await.expect("resign");
    let none = e2.leader().await.map(|_| ()).map_err(|e| e.to_string());
    book.note(format!("leader after the last resign: {none:?}"));
    let gone = matches!(e2.proclaim("z").await, Err(ConcurrencyError::NotLeader));
    book.note(format!("e2 proclaims after resigning: not leader {gone}"));
    // The observer waits for the next candidate's first put.
    let mut e4 = Election::new(&s3, "lib-vote");
    e4.campaign("d").await.expect("campaign");
    let seen = watch.next().await.expect("observed");
    let line = format!("observed {}", show_leader(book, &seen));
    book.note(line);
    drop((s1, s2, s3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raftkvctl_lock_client_mutex_and_election_answer_alike_on_raftkv_and_on_etcd() {
    let mut runs = Vec::new();
    for server in [Server::Etcd, Server::Raftkv] {
        let cluster = Cluster::start(server, 3, Options::default()).await;
        let client = Client::new(cluster.endpoints().split(','));
        let mut book = Book {
            lines: Vec::new(),
            leases: Vec::new(),
        };
        mutex_transcript(&client, &mut book).await;
        election_transcript(&client, &mut book).await;
        runs.push((format!("{server:?}"), book.lines));
    }
    for expected in [
        "m2 waits: true",
        "m4 dropped: keys left 2",
        "e1 proclaims: Err(\"election: not leader\")",
        "leader after the last resign: Err(\"election: no leader\")",
    ] {
        assert!(
            runs[0].1.iter().any(|l| l.contains(expected)),
            "{expected}: {:?}",
            runs[0].1
        );
    }
    assert_no_differences(&differences(&runs));
}
