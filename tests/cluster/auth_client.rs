//! The client side of authentication beside etcdctl's: on a 3-member cluster with `root`, a
//! user whose role reads and writes the prefix `p/` only, a user whose name holds a colon,
//! and `auth enable`, one session of puts, gets, deletes, txns, watches, leases, locks and
//! auth calls — as root, as the limited user, without a user, with wrong passwords, with
//! `--user name:pw`, `--user name --password pw`, and a password typed at the prompt — run
//! by etcdctl and by raftkvctl; the transcripts (exit codes, stdout, stderr) must match once
//! ids, terms, ports, lease ids and times are masked.
//!
//! The session takes the server as a parameter: etcdctl and raftkvctl are compared on a real
//! etcd, then etcdctl on raftkv with etcdctl on etcd (but for what raftkv does differently on
//! purpose, listed in [`DELIBERATE`]) and raftkvctl with etcdctl on raftkv.

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::etcdctl::{mask, transcript};
use crate::fixture::{Cluster, Options, Server, assert_no_differences, etcdctl, raftkvctl_bin};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tool {
    Etcdctl,
    Raftkvctl,
}

const ROOT: &str = "--user=root:rootpw";
const ALICE: &str = "--user=alice:alicepw";

/// Users, a prefix role and `auth enable`, made with etcdctl (the tool under test starts on
/// a cluster made the same way each time).
fn set_up(endpoint: &str) {
    let steps: &[&[&str]] = &[
        &["put", "k", "v"],
        &["put", "p/1", "one"],
        &["user", "add", "root:rootpw", "--interactive=false"],
        &["user", "add", "alice:alicepw", "--interactive=false"],
        // A name with a colon: only --password can name it on the command line.
        &[
            "user",
            "add",
            "col:on",
            "--interactive=false",
            "--new-user-password=colpw",
        ],
        &["role", "add", "prefix"],
        &[
            "role",
            "grant-permission",
            "prefix",
            "readwrite",
            "p/",
            "--prefix",
        ],
        &["user", "grant-role", "alice", "prefix"],
        &["user", "grant-role", "col:on", "prefix"],
        &["auth", "enable"],
    ];
    for args in steps {
        let out = etcdctl(endpoint, args, None);
        assert!(out.status.success(), "set-up {args:?}: {out:?}");
    }
}

/// Runs `tool` with `--endpoints` and `args`, feeding it `stdin` (empty if none).
fn run(tool: Tool, endpoints: &str, args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = match tool {
        Tool::Etcdctl => {
            let mut cmd = Command::new("etcdctl");
            cmd.env("ETCDCTL_API", "3");
            cmd
        }
        Tool::Raftkvctl => Command::new(raftkvctl_bin()),
    };
    cmd.arg(format!("--endpoints={endpoints}")).args(args);
    crate::fixture::run_with_stdin(cmd, stdin)
}

/// A tool that runs until killed (a watch): started, read until `lines` lines of stdout came
/// (or it ended, or 20 s passed), then killed.
fn run_for_lines(tool: Tool, endpoints: &str, args: &[&str], lines: usize) -> String {
    let mut cmd = match tool {
        Tool::Etcdctl => Command::new("etcdctl"),
        Tool::Raftkvctl => Command::new(raftkvctl_bin()),
    };
    let mut child = cmd
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoints}"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting the tool");
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut out = String::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    for _ in 0..lines {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => out += &(line + "\n"),
            Err(_) => break,
        }
    }
    let ended = child.try_wait().ok().flatten();
    let _ = child.kill();
    let _ = child.wait();
    let mut stderr = String::new();
    if let Some(mut err) = child.stderr.take() {
        let _ = err.read_to_string(&mut stderr);
    }
    let status = match ended {
        Some(status) => format!("exit {}", status.code().unwrap_or(-1)),
        None => "stopped".into(),
    };
    format!(
        "$ {} ({status})\n{}{}",
        args.join(" "),
        mask(&out),
        mask(&stderr)
    )
}

/// What differs between two clusters beyond `transcript`'s masks: client ports, lease ids,
/// the directory, a lease's seconds left and health-check times.
struct Masks {
    endpoints: Vec<String>,
    leases: Vec<String>,
    /// The cluster's directory, where files go.
    dir: String,
}

/// The id in `lease ID granted with TTL(...)`.
fn lease_granted(output: &Output) -> Option<String> {
    let text = String::from_utf8_lossy(&output.stdout);
    let rest = text.strip_prefix("lease ")?;
    let (id, rest) = rest.split_once(' ')?;
    rest.starts_with("granted").then(|| id.to_string())
}

impl Masks {
    /// Masks the id of a lease `output` says was granted, from here on.
    fn learn_lease(&mut self, output: &Output) {
        if let Some(id) = lease_granted(output) {
            self.leases.push(id);
        }
    }

    fn apply(&self, text: &str) -> String {
        let mut text = text.replace(&self.dir, "<dir>");
        for (i, endpoint) in self.endpoints.iter().enumerate() {
            text = text.replace(endpoint, &format!("<member{i}>"));
        }
        for (i, lease) in self.leases.iter().enumerate() {
            text = text.replace(lease, &format!("<lease{i}>"));
        }
        text.lines()
            .map(|line| mask_after(&mask_after(line, "remaining("), "took = ") + "\n")
            .collect()
    }
}

/// `line` with what follows `key` up to the next `)` or the end hidden.
fn mask_after(line: &str, key: &str) -> String {
    match line.find(key) {
        None => line.to_string(),
        Some(at) => {
            let rest = &line[at + key.len()..];
            let end = rest.find(')').unwrap_or(rest.len());
            format!("{}<masked>{}", &line[..at + key.len()], &rest[end..])
        }
    }
}

/// Runs one command of the session and keeps its masked transcript.
struct Recorder<'a> {
    tool: Tool,
    endpoints: &'a [String],
    masks: Masks,
    out: Vec<String>,
}

impl Recorder<'_> {
    /// `args` against the first member.
    fn step(&mut self, args: &[&str]) -> Output {
        self.step_on(0, args, None)
    }

    /// `args` against the first member, with `stdin`.
    fn step_in(&mut self, args: &[&str], stdin: &str) -> Output {
        self.step_on(0, args, Some(stdin))
    }

    /// `args` against member `i` (every member when `i` is out of range).
    fn step_on(&mut self, i: usize, args: &[&str], stdin: Option<&str>) -> Output {
        let endpoints = match self.endpoints.get(i) {
            Some(endpoint) => endpoint.clone(),
            None => self.endpoints.join(","),
        };
        let output = run(self.tool, &endpoints, args, stdin);
        self.masks.learn_lease(&output);
        let text = transcript(&args.join(" "), &output);
        self.out.push(self.masks.apply(&text));
        output
    }

    /// A watch, read until `lines` lines came.
    fn watch(&mut self, args: &[&str], lines: usize) {
        let text = run_for_lines(self.tool, &self.endpoints[0], args, lines);
        self.out.push(self.masks.apply(&text));
    }

    /// `lease grant 100` as `user`: the lease's id.
    fn grant(&mut self, user: &str) -> String {
        let output = self.step(&[user, "lease", "grant", "100"]);
        let id = lease_granted(&output);
        assert!(id.is_some(), "lease grant: {output:?}");
        id.unwrap_or_default()
    }
}

/// The session, run by `tool` on a cluster set up by [`set_up`] whose client endpoints are
/// `endpoints` (files it writes go to `dir`); one masked transcript per command.
fn session(tool: Tool, endpoints: &[String], dir: &std::path::Path) -> Vec<String> {
    let dir_text = dir.display().to_string();
    let mut r = Recorder {
        tool,
        endpoints,
        masks: Masks {
            endpoints: endpoints.to_vec(),
            leases: Vec::new(),
            dir: dir_text.clone(),
        },
        out: Vec::new(),
    };
    let file = |name: &str| format!("{dir_text}/{name}");

    // No user: every request needs a token.
    r.step(&["get", "k"]);
    r.step(&["put", "k", "x"]);
    r.step(&["lease", "grant", "100"]);

    // root may do anything.
    r.step(&[ROOT, "put", "k", "v2"]);
    r.step(&[ROOT, "get", "k"]);
    r.step(&[ROOT, "get", "", "--prefix", "-w", "json"]);
    r.step_in(
        &[ROOT, "txn"],
        "value(\"k\") = \"v2\"\n\nput k2 x\n\nput k3 y\n\n",
    );
    r.step(&[ROOT, "del", "k2"]);
    r.step(&[ROOT, "user", "list"]);
    r.step(&[ROOT, "role", "get", "prefix"]);

    // alice reads and writes p/ and nothing else.
    r.step(&[ALICE, "put", "p/2", "two"]);
    r.step(&[ALICE, "get", "p/", "--prefix"]);
    r.step(&[ALICE, "get", "p/", "--prefix", "-w", "json"]);
    r.step(&[ALICE, "get", "k"]);
    r.step(&[ALICE, "get", "", "--prefix"]);
    r.step(&[ALICE, "put", "k", "x"]);
    r.step(&[ALICE, "del", "k"]);
    r.step(&[ALICE, "del", "p/2"]);
    let txn = "value(\"p/1\") = \"one\"\n\nput p/t yes\n\nput p/t no\n\n";
    r.step_in(&[ALICE, "txn"], txn);
    r.step_in(
        &[ALICE, "txn"],
        "value(\"k\") = \"v2\"\n\nput p/t yes\n\n\n",
    );
    // Every branch is checked, not only the one taken.
    let txn = "value(\"p/1\") = \"one\"\n\nput p/t yes\n\nput k no\n\n";
    r.step_in(&[ALICE, "txn"], txn);
    r.step(&[ALICE, "user", "list"]);
    r.step(&[ALICE, "user", "get", "alice"]);
    r.step(&[ALICE, "user", "get", "root"]);
    r.step(&[ALICE, "auth", "disable"]);
    r.step(&[ALICE, "snapshot", "save", &file("alice.db")]);
    // Another member honours the same user; so do all of them together.
    r.step_on(1, &[ALICE, "get", "p/1"], None);
    r.step_on(usize::MAX, &[ALICE, "get", "p/1"], None);

    // The ways to say who one is.
    r.step(&["--user=alice", "--password=alicepw", "get", "p/1"]);
    r.step(&["--user", "alice:alicepw", "get", "p/1"]);
    r.step(&["--user=col:on", "--password=colpw", "get", "p/1"]);
    r.step(&["--user=col:on:colpw", "get", "p/1"]);
    r.step(&["--user=alice:alicepw", "--password=alicepw", "get", "p/1"]);
    r.step(&["--user=alice:wrong", "get", "p/1"]);
    r.step(&["--user=nobody:pw", "put", "p/1", "x"]);
    r.step(&["--user=:alicepw", "get", "p/1"]);
    r.step(&["--user=alice:", "get", "p/1"]);
    r.step(&["--user=", "get", "p/1"]);
    r.step(&["--password=alicepw", "get", "p/1"]);
    // No terminal: the prompt, stty's complaint, and the line read.
    r.step_in(&["--user=alice", "get", "p/1"], "alicepw\n");
    r.step_in(&["--user=alice", "get", "p/1"], "  alicepw  \r\n");
    r.step_in(&["--user=alice", "get", "p/1"], "wrong\n");
    r.step(&["--user=alice", "get", "p/1"]);
    // The password comes first on stdin, then the txn.
    r.step_in(&["--user=alice", "txn"], "alicepw\n\nput p/t prompt\n\n\n");
    // Refused credentials end a command before it starts, once its arguments are checked.
    for args in [
        &["--user=alice:wrong", "watch", "p/1"][..],
        &["--user=alice:wrong", "lease", "grant", "100"],
        &["--user=alice:wrong", "lease", "list"],
        &["--user=alice:wrong", "lock", "p/lk"],
        &["--user=alice:wrong", "endpoint", "status"],
        &["--user=alice:wrong", "endpoint", "health"],
        &["--user=alice:wrong", "member", "list"],
        &["--user=alice:wrong", "compaction", "1"],
        &["--user=alice:wrong", "lease", "grant"],
    ] {
        r.step(args);
    }
    r.step(&["--user=alice:wrong", "snapshot", "save", &file("wrong.db")]);
    r.step(&[ALICE, "endpoint", "health"]);

    // Watches: refused outside the prefix, events inside it.
    r.step(&[ALICE, "watch", "k"]);
    r.step(&[ALICE, "watch", "", "--prefix"]);
    r.watch(&[ROOT, "watch", "k", "--rev", "1"], 6);
    r.watch(&[ALICE, "watch", "p/", "--prefix", "--rev", "1"], 15);
    r.watch(&[ALICE, "watch", "p/1", "--rev", "1", "-w", "json"], 1);

    // Leases: anyone may grant one; revoking deletes its keys, so it needs write access to
    // each of them.
    let roots = r.grant(ROOT);
    let alices = r.grant(ALICE);
    r.step(&[ROOT, "put", "k4", "v", "--lease", &roots]);
    r.step(&[ALICE, "put", "p/l", "v", "--lease", &alices]);
    r.step(&[ALICE, "put", "p/l2", "v", "--lease", &roots]);
    r.step(&[ALICE, "lease", "timetolive", &alices, "--keys"]);
    r.step(&[ALICE, "lease", "timetolive", &roots, "--keys"]);
    r.step(&[ALICE, "lease", "keep-alive", "--once", &alices]);
    r.step(&[ALICE, "lease", "revoke", &roots]);
    r.step(&[ALICE, "lease", "revoke", &alices]);
    r.step(&[ALICE, "get", "p/l"]);
    r.step(&[ROOT, "lease", "revoke", &roots]);
    r.step(&[ROOT, "get", "k4"]);
    r.step(&["lease", "keep-alive", "--once", &alices]);

    // Locks live under their name: the limited user may lock inside its prefix only.
    r.step(&[ALICE, "lock", "p/lk", "echo", "locked"]);
    r.step(&[ALICE, "lock", "lk", "echo", "locked"]);

    // Only root changes passwords (etcd 3.4: even one's own); the old one then fails.
    let passwd = [ALICE, "user", "passwd", "alice", "--interactive=false"];
    r.step_in(&passwd, "newpw\n");
    r.step(&[ALICE, "get", "p/1"]);
    r.step_in(
        &[ROOT, "user", "passwd", "alice", "--interactive=false"],
        "newpw\n",
    );
    r.step(&[ALICE, "get", "p/1"]);
    r.step(&["--user=alice:newpw", "get", "p/1"]);
    r.step(&[ROOT, "get", "p/", "--prefix", "--keys-only"]);
    r.out
}

/// Commands whose answer from raftkv differs from etcd 3.4's on purpose, and why.
const DELIBERATE: &[(&str, &str)] = &[(
    "$ --user=alice:alicepw lease timetolive <lease1> --keys (",
    "raftkv checks read access to a lease's keys before it lists them, as etcd 3.5.9 does \
     (CVE-2023-32082); etcd 3.4 lists them to anyone",
)];

/// Whether `transcript` is of a command in [`DELIBERATE`].
fn deliberate(transcript: &str) -> bool {
    DELIBERATE
        .iter()
        .any(|(command, _)| transcript.starts_with(command))
}

fn differences(want: &[String], got: &[String], what: &str) -> Vec<String> {
    let mut diffs: Vec<String> = want
        .iter()
        .zip(got)
        .filter(|(w, g)| w != g)
        .map(|(w, g)| format!("--- {what}: want\n{w}--- got\n{g}"))
        .collect();
    if want.len() != got.len() {
        diffs.push(format!("{what}: {} steps, {}", want.len(), got.len()));
    }
    diffs
}

/// A fresh 3-member cluster of `server`, set up, and the session run on it by `tool`.
async fn transcript_of(server: Server, tool: Tool) -> Vec<String> {
    let cluster = Cluster::start(server, 3, Options::default()).await;
    let endpoints: Vec<String> = cluster.members.iter().map(|m| m.endpoint()).collect();
    tokio::task::block_in_place(|| {
        set_up(&endpoints[0]);
        session(tool, &endpoints, cluster.dir())
    })
}

/// One reference session (etcdctl on etcd) against three: raftkvctl on etcd, etcdctl on
/// raftkv (apart from [`DELIBERATE`]), and raftkvctl on raftkv beside etcdctl on raftkv.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_client_matches_etcd_with_etcdctl_and_raftkvctl() {
    let reference = transcript_of(Server::Etcd, Tool::Etcdctl).await;
    // The session proves something only if its commands did what they say.
    let all = reference.concat();
    for expected in [
        "Error: etcdserver: user name is empty",
        "Error: etcdserver: permission denied",
        "Error: etcdserver: authentication failed, invalid user ID or password",
        "(exit 2)",
        "Password: \n",
        "locked\n",
        "watch was canceled (rpc error: code = PermissionDenied desc = etcdserver: permission denied)",
    ] {
        assert!(all.contains(expected), "no {expected:?} in\n{all}");
    }
    let ctl_on_etcd = transcript_of(Server::Etcd, Tool::Raftkvctl).await;
    let mut diffs = differences(&reference, &ctl_on_etcd, "etcdctl / raftkvctl on etcd");
    let ours = transcript_of(Server::Raftkv, Tool::Etcdctl).await;
    let mut on_raftkv = differences(&reference, &ours, "etcdctl on etcd / on raftkv");
    on_raftkv.retain(|d| !deliberate(d.split_once("want\n").map_or("", |(_, w)| w)));
    diffs.extend(on_raftkv);
    let ctl = transcript_of(Server::Raftkv, Tool::Raftkvctl).await;
    diffs.extend(differences(&ours, &ctl, "etcdctl / raftkvctl on raftkv"));
    assert_no_differences(&diffs);
}
