//! `watch` in raftkvctl beside etcdctl's, and raftkv-client's watch API, differentially:
//! the same watch session run by both tools at once against a 3-member raftkv cluster and
//! against a real etcd 3-member cluster — all four transcripts must match once ids and
//! terms are masked — and the same library watch transcript against both servers.

use std::io::Write;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use raftkv_client::proto::{WatchCreateRequest, WatchResponse};
use raftkv_client::{
    BROADCAST_WATCH_ID, Client, Error, Event, Txn, TxnOp, WatchOptions, WatchResponseExt,
    WatchSession,
};

use crate::etcdctl::{mask, mask_number_after, transcript};
use crate::fixture::{
    Cluster, Options, Server, assert_no_differences, etcdctl, etcdctl_ok, raftkvctl_bin,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tool {
    Etcdctl,
    Raftkvctl,
}

const TOOLS: [Tool; 2] = [Tool::Etcdctl, Tool::Raftkvctl];

/// One watch invocation: arguments, environment, and stdin to write at the start.
struct Spec {
    args: &'static [&'static str],
    env: &'static [(&'static str, &'static str)],
    stdin: &'static str,
}

const fn spec(args: &'static [&'static str]) -> Spec {
    Spec {
        args,
        env: &[],
        stdin: "",
    }
}

/// A tool left running (a live watch): fed more stdin, then killed and read by `finish`.
struct Running {
    command: String,
    child: Child,
    stdin: ChildStdin,
    protobuf: bool,
}

fn start(tool: Tool, endpoints: &str, spec: &Spec) -> Running {
    let mut cmd = match tool {
        Tool::Etcdctl => {
            let mut cmd = Command::new("etcdctl");
            cmd.env("ETCDCTL_API", "3");
            cmd
        }
        Tool::Raftkvctl => Command::new(raftkvctl_bin()),
    };
    cmd.arg(format!("--endpoints={endpoints}"))
        .args(spec.args)
        .envs(spec.env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("starting the watch");
    let mut stdin = child.stdin.take().expect("piped stdin");
    stdin
        .write_all(spec.stdin.as_bytes())
        .expect("writing stdin");
    let env: Vec<String> = spec.env.iter().map(|(k, v)| format!("{k}={v} ")).collect();
    Running {
        command: format!("{}{}", env.concat(), spec.args.join(" ")),
        child,
        stdin,
        protobuf: spec.args.contains(&"protobuf"),
    }
}

impl Running {
    fn feed(&mut self, text: &str) {
        self.stdin
            .write_all(text.as_bytes())
            .expect("feeding stdin");
        self.stdin.flush().expect("flushing stdin");
    }

    /// Kills the tool (a watch runs until it is killed, unless it fails) and returns its
    /// transcript: exit code, masked stdout and stderr; `-w protobuf` output decoded.
    fn finish(mut self) -> String {
        let _ = self.child.kill();
        drop(self.stdin);
        let out = self
            .child
            .wait_with_output()
            .expect("waiting for the watch");
        if !self.protobuf {
            return transcript(&self.command, &out);
        }
        let decoded = raftkv_proto::codec::decode_bounded::<WatchResponse>(&out.stdout)
            .expect("protobuf output");
        format!(
            "$ {} (exit {})\n{}\n{}",
            self.command,
            out.status.code().unwrap_or(-1),
            describe(&decoded),
            mask(&String::from_utf8_lossy(&out.stderr))
        )
    }
}

/// Runs every spec with both tools at once for `secs` seconds; the transcripts per tool.
fn run_all(endpoints: &str, specs: &[Spec], secs: f64) -> [Vec<String>; 2] {
    let running: Vec<Vec<Running>> = TOOLS
        .iter()
        .map(|&tool| specs.iter().map(|s| start(tool, endpoints, s)).collect())
        .collect();
    std::thread::sleep(Duration::from_secs_f64(secs));
    let mut out = running
        .into_iter()
        .map(|runs| runs.into_iter().map(Running::finish).collect());
    [out.next().unwrap(), out.next().unwrap()]
}

const SHOW_EVENT: &str =
    "echo \"$ETCD_WATCH_EVENT_TYPE $ETCD_WATCH_KEY $ETCD_WATCH_VALUE $ETCD_WATCH_REVISION\"";

/// The interactive session's first lines: two watches (one with a command, quoted the way
/// etcdctl's line splitter wants), lines etcdctl refuses, and a progress request.
const INTERACTIVE: &str = concat!(
    "watch a/ --prefix --prev-kv\n",
    "watch foo -- sh -c \"echo \\\"$ETCD_WATCH_EVENT_TYPE $ETCD_WATCH_KEY=$ETCD_WATCH_VALUE\\\"\"\n",
    "\n",
    "bogus line\n",
    "watch\n",
    "watch x y --prefix\n",
    "watch -- echo\n",
    "progress\n",
);

/// The etcdctl-versus-raftkvctl session: live watchers of every form while a scripted set
/// of writes runs, then watches from past revisions and argument errors, then watches
/// canceled by a compaction. Returns (writes, etcdctl transcripts, raftkvctl transcripts).
fn tool_session(eps: &str) -> (Vec<String>, Vec<String>, Vec<String>) {
    let live_specs = [
        spec(&["watch", "--prefix", "a/", "--prev-kv"]),
        spec(&["watch", "a/1", "a/3", "-w", "fields"]),
        spec(&["watch", "--prefix", "", "-w", "json"]),
        spec(&["watch", "foo", "--", "sh", "-c", SHOW_EVENT]),
        Spec {
            args: &["watch", "-i"],
            env: &[],
            stdin: INTERACTIVE,
        },
    ];
    let mut live: Vec<Vec<Running>> = TOOLS
        .iter()
        .map(|&tool| live_specs.iter().map(|s| start(tool, eps, s)).collect())
        .collect();
    std::thread::sleep(Duration::from_millis(2000));
    let writes: &[(&[&str], Option<&str>)] = &[
        (&["put", "foo", "bar"], None),                          // 2
        (&["put", "foo", "baz"], None),                          // 3
        (&["put", "a/1", "1"], None),                            // 4
        (&["put", "a/2", "two words"], None),                    // 5
        (&["txn"], Some("\nput z 3\nput a/3 3\nput c 3\n\n\n")), // 6: one answer, three events
        (&["del", "a/", "--prefix"], None),                      // 7
        (&["put", "b", "4"], None),                              // 8
        (&["put", "foo", "qu\"x"], None),                        // 9
    ];
    let mut written = Vec::new();
    for (args, stdin) in writes {
        let out = etcdctl(eps, args, *stdin);
        written.push(transcript(&format!("etcdctl {}", args.join(" ")), &out));
        std::thread::sleep(Duration::from_millis(100));
    }
    for runs in &mut live {
        runs[4].feed("progress\n");
    }
    std::thread::sleep(Duration::from_millis(1500));
    let mut transcripts: Vec<Vec<String>> = live
        .into_iter()
        .map(|runs| runs.into_iter().map(Running::finish).collect())
        .collect();
    let mut add = |[theirs, ours]: [Vec<String>; 2]| {
        transcripts[0].extend(theirs);
        transcripts[1].extend(ours);
    };
    add(run_all(
        eps,
        &[
            spec(&["watch", "foo", "--rev", "1"]),
            spec(&[
                "watch",
                "--prefix",
                "a/",
                "--rev",
                "1",
                "--prev-kv",
                "-w",
                "json",
            ]),
            spec(&["watch", "a/1", "a/3", "--rev", "2", "-w", "fields"]),
            spec(&["watch", "--prefix", "", "--rev", "5", "-w", "protobuf"]),
            spec(&["watch", "--rev", "9", "foo", "--", "sh", "-c", SHOW_EVENT]),
            spec(&["watch", "--rev", "9", "foo", "--", "sh", "-c", "exit 3"]),
            spec(&["watch", "--rev", "9", "foo", "--hex"]),
            spec(&["watch", "--rev", "9", "foo", "-w", "table"]),
            spec(&["watch", "--rev", "9", "foo", "-w", "yaml"]),
            spec(&["watch", "z", "a"]),
            spec(&["watch", "a/", "b", "--prefix"]),
            spec(&["watch", "foo", "--"]),
            spec(&["watch"]),
            Spec {
                args: &["watch", "--rev", "2"],
                env: &[
                    ("ETCDCTL_WATCH_KEY", "a/"),
                    ("ETCDCTL_WATCH_RANGE_END", "a/3"),
                ],
                stdin: "",
            },
            Spec {
                args: &["watch", "foo"],
                env: &[("ETCDCTL_WATCH_KEY", "foo")],
                stdin: "",
            },
            Spec {
                args: &["watch", "foo"],
                env: &[("ETCDCTL_WATCH_RANGE_END", "z")],
                stdin: "",
            },
        ],
        2.0,
    ));
    written.push(etcdctl_ok(eps, &["compaction", "6", "--physical"]));
    std::thread::sleep(Duration::from_millis(300)); // every member has applied it
    add(run_all(
        eps,
        &[
            spec(&["watch", "foo", "--rev", "2"]),
            spec(&["watch", "foo", "--rev", "5", "-w", "json"]),
            spec(&["watch", "foo", "--rev", "5", "-w", "fields"]),
            spec(&["watch", "--prefix", "", "--rev", "6"]),
            Spec {
                args: &["watch", "-i", "-w", "json"],
                env: &[],
                stdin: "watch b\nwatch z a\nwatch foo --rev 3\n",
            },
        ],
        1.5,
    ));
    let [theirs, ours]: [Vec<String>; 2] = transcripts.try_into().expect("two tools");
    (written, theirs, ours)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raftkvctl_watch_matches_etcdctl_on_raftkv_and_on_etcd() {
    raftkvctl_bin(); // built before any watch starts
    let mut runs = Vec::new();
    for server in [Server::Raftkv, Server::Etcd] {
        let cluster = Cluster::start(server, 3, Options::default()).await;
        let eps = cluster.endpoints();
        let (written, theirs, ours) = tokio::task::spawn_blocking(move || tool_session(&eps))
            .await
            .unwrap();
        runs.push((format!("{server:?} writes"), written.clone(), 0));
        runs.push((format!("{server:?} with etcdctl"), theirs, 1));
        runs.push((format!("{server:?} with raftkvctl"), ours, 1));
    }
    // The references: etcd's writes, and etcdctl against etcd.
    let reference = |kind: usize| runs.iter().rev().find(|r| r.2 == kind).unwrap().clone();
    let mut differences = Vec::new();
    for (name, run, kind) in &runs {
        let (reference_name, want, _) = reference(*kind);
        assert_eq!(run.len(), want.len(), "{name} against {reference_name}");
        for (got, want) in run.iter().zip(&want) {
            if got != want {
                differences.push(format!("--- {reference_name}\n{want}--- {name}\n{got}"));
            }
        }
    }
    assert_no_differences(&differences);
}

/// An answer with ids and terms masked.
fn describe(answer: &WatchResponse) -> String {
    let mut line = format!("{answer:?}");
    for key in ["cluster_id: ", "member_id: ", "raft_term: "] {
        line = mask_number_after(&line, key);
    }
    line
}

/// An event as compared: type, key, value, revisions, version, previous value.
fn event(e: &Event) -> String {
    let kv = e.kv.clone().unwrap_or_default();
    let value = if kv.value.len() > 16 {
        format!("<{} bytes>", kv.value.len())
    } else {
        String::from_utf8_lossy(&kv.value).into_owned()
    };
    let prev = e
        .prev_kv
        .as_ref()
        .map(|p| format!(" prev={}", String::from_utf8_lossy(&p.value)))
        .unwrap_or_default();
    format!(
        "{}{} {}={} c{} m{} v{}{prev}",
        if e.r#type == 1 { "DELETE" } else { "PUT" },
        "",
        String::from_utf8_lossy(&kv.key),
        value,
        kv.create_revision,
        kv.mod_revision,
        kv.version,
    )
}

/// An answer as compared: watch id, flags, revision, events.
fn answer_line(a: &WatchResponse) -> String {
    let events: Vec<String> = a.events.iter().map(event).collect();
    format!(
        "id={} created={} canceled={} compact={} reason={:?} progress={} rev={} [{}]",
        a.watch_id,
        a.created,
        a.canceled,
        a.compact_revision,
        a.cancel_reason,
        a.is_progress_notify(),
        a.header.as_ref().map_or(0, |h| h.revision),
        events.join(", ")
    )
}

/// Every answer of a session until none comes for `quiet`, grouped by watch id but in
/// arrival order for each id: the answers of different watchers may interleave in any order
/// (etcd sends a new watcher's history from a background loop, raftkv at once).
async fn drain(session: &mut WatchSession, quiet: Duration) -> Vec<String> {
    let mut answers = Vec::new();
    while let Ok(Some(answer)) = tokio::time::timeout(quiet, session.next()).await {
        answers.push(answer);
    }
    answers.sort_by_key(|a| a.as_ref().map_or(i64::MAX, |a| a.watch_id));
    answers
        .iter()
        .map(|answer| match answer {
            Ok(answer) => answer_line(answer),
            Err(e) => format!("error: {e}"),
        })
        .collect()
}

/// The library's watch calls, each step's answers as lines: the same against both servers.
async fn library_transcript(server: Server) -> Vec<String> {
    let mut cluster = Cluster::start(server, 3, Options::default()).await;
    let endpoints: Vec<String> = cluster.members.iter().map(|m| m.endpoint()).collect();
    let client =
        Client::new(endpoints).with_timeouts(Duration::from_millis(500), Duration::from_secs(5));
    let quiet = Duration::from_millis(600);
    let mut lines = Vec::new();
    let mut step = |name: &str, answers: Vec<String>| {
        lines.push(format!("## {name}"));
        lines.extend(answers);
    };

    // One watcher: a prefix with previous values; a txn's events come as one answer.
    let mut watch = client
        .watch("a/", WatchOptions::new().prefix().prev_kv())
        .await
        .expect("watch");
    step(
        "created",
        vec![format!(
            "id={} rev={}",
            watch.watch_id(),
            watch.created().header.as_ref().map_or(0, |h| h.revision)
        )],
    );
    client.put("a/1", "1").await.expect("put"); // 2
    client
        .txn(Txn::new().then([
            TxnOp::put("a/1", "11"),
            TxnOp::put("b", "x"),
            TxnOp::put("a/2", "2"),
        ]))
        .await
        .expect("txn"); // 3
    client.delete("a/1").await.expect("delete"); // 4
    let mut answers = Vec::new();
    for _ in 0..3 {
        let answer = watch.next().await.expect("an answer").expect("no error");
        answers.push(answer_line(&answer));
    }
    watch.request_progress().expect("progress");
    let progress = watch.next().await.expect("an answer").expect("no error");
    answers.push(answer_line(&progress));
    watch.cancel().expect("cancel");
    answers.push(format!(
        "after cancel: {:?}",
        watch.next().await.map(|a| a.is_ok())
    ));
    step("prefix, prev_kv, txn, progress, cancel", answers);

    // A session with several watchers: creates answered in order, filters, ranges.
    let mut session = client.watch_session().await.expect("session");
    let create = |key: &str, options: WatchOptions| options.request(key.to_string());
    session
        .create(create(
            "a/",
            WatchOptions::new().prefix().start_revision(1).no_put(),
        ))
        .unwrap();
    session
        .create(create(
            "a/",
            WatchOptions::new()
                .range_end("a/2")
                .start_revision(1)
                .no_delete(),
        ))
        .unwrap();
    session
        .create(create(
            "b",
            WatchOptions::new().from_key().start_revision(3).watch_id(7),
        ))
        .unwrap();
    session
        .create(create("z", WatchOptions::new().range_end("a")))
        .unwrap();
    session
        .create(WatchCreateRequest {
            key: Bytes::from_static(b"q"),
            watch_id: 7,
            ..Default::default()
        })
        .unwrap();
    step(
        "creates, history, refusals",
        drain(&mut session, quiet).await,
    );
    session.request_progress().unwrap();
    step("progress request", drain(&mut session, quiet).await);
    session.cancel(7).unwrap();
    step("cancel 7", drain(&mut session, quiet).await);
    client.put("c", "1").await.expect("put"); // 5: 7 would have had it
    client.put("a/0", "0").await.expect("put"); // 6
    step("writes", drain(&mut session, quiet).await);

    // Fragments: two values of 1 MiB read back from history in one batch over the request
    // limit; the session puts the parts back together.
    client.put("big/1", vec![b'x'; 1 << 20]).await.expect("put"); // 7
    client.put("big/2", vec![b'y'; 1 << 20]).await.expect("put"); // 8
    // A watch is served from its member's applied state: a linearizable read through the
    // first endpoint (the sessions' member) makes sure it has applied the writes.
    client.get("big/2").await.expect("get");
    for fragment in [true, false] {
        let mut options = WatchOptions::new().prefix().start_revision(7);
        if fragment {
            options = options.fragment();
        }
        let mut big = client.watch("big/", options).await.expect("watch");
        let answer = big.next().await.expect("an answer").expect("no error");
        step(&format!("fragment={fragment}"), vec![answer_line(&answer)]);
    }

    // A refused create, and a compaction's cancel.
    let refused = client
        .watch("z", WatchOptions::new().range_end("a"))
        .await
        .err()
        .map(|e| e.to_string());
    step("refused", vec![format!("{refused:?}")]);
    client.compact(5, true).await.expect("compact");
    client.get("big/2").await.expect("get");
    let mut old = client
        .watch("a/", WatchOptions::new().prefix().start_revision(2))
        .await
        .expect("watch");
    let canceled = old.next().await.expect("an answer").expect("no error");
    let error = canceled.cancel_error().map(|e| match e {
        Error::Compacted { compact_revision } => format!("compacted at {compact_revision}: {e}"),
        other => format!("{other}"),
    });
    step(
        "compacted",
        vec![
            answer_line(&canceled),
            format!("{error:?}"),
            format!("then: {:?}", old.next().await.map(|a| a.is_ok())),
        ],
    );

    // Failover: the session's member (the first endpoint, a follower: no election to wait
    // for) is killed; the session goes on on another member from where it was, without
    // losing or repeating an event.
    let leader = cluster.leader().await.expect("a leader");
    let dead = (0..3).find(|&i| i != leader).unwrap();
    let mut order = vec![cluster.members[dead].endpoint()];
    order.extend(
        (0..3)
            .filter(|&i| i != dead)
            .map(|i| cluster.members[i].endpoint()),
    );
    let client =
        Client::new(order).with_timeouts(Duration::from_millis(500), Duration::from_secs(5));
    let mut session = client.watch_session().await.expect("session");
    session
        .watch("f/", &WatchOptions::new().prefix())
        .expect("create");
    let mut answers = drain(&mut session, quiet).await;
    client.put("f/1", "1").await.expect("put"); // 9
    answers.extend(drain(&mut session, quiet).await);
    cluster.kill(dead);
    for i in 2..=4 {
        client
            .put(format!("f/{i}"), "v")
            .await
            .expect("put past a dead member");
    }
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while got.len() < 3 {
        match tokio::time::timeout_at(deadline, session.next()).await {
            Ok(Some(Ok(answer))) => got.extend(answer.events.iter().map(event)),
            other => panic!("{server:?}: no answer after failover: {other:?}"),
        }
    }
    answers.extend(got);
    answers.extend(drain(&mut session, quiet).await);
    step("failover", answers);
    let _ = BROADCAST_WATCH_ID;
    lines
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_api_answers_as_etcd_does() {
    let raftkv = library_transcript(Server::Raftkv).await;
    let etcd = library_transcript(Server::Etcd).await;
    let differences: Vec<String> = raftkv
        .iter()
        .zip(&etcd)
        .filter(|(a, b)| a != b)
        .map(|(a, b)| format!("--- etcd\n{b}\n--- raftkv\n{a}"))
        .collect();
    assert_eq!(
        raftkv.len(),
        etcd.len(),
        "etcd:\n{}\nraftkv:\n{}",
        etcd.join("\n"),
        raftkv.join("\n")
    );
    assert_no_differences(&differences);
}
