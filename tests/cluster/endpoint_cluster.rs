//! `etcdctl endpoint status|health|hashkv --cluster` against raftkv and a real etcd.
//!
//! With `--cluster` etcdctl dials the client URLs it reads from MemberList, and for status
//! and hashkv grpc-go then sends the whole URL (`http://127.0.0.1:2379`) as the HTTP/2
//! `:authority` (health goes through clientv3's resolver, which strips the scheme). h2
//! resets such a stream unless the client port repairs the authority first
//! (`raftkv_raft::h2_authority`). The outputs of a
//! 3-member raftkv and a 3-member etcd are compared once what legitimately differs between
//! two clusters is masked: ports, member and cluster ids, which member leads, sizes, terms,
//! Raft indexes and times (store revisions are compared). Still different, and masked:
//! the version (raftkv's Status says `3.4.23+raftkv.0.1.0`) and HashKV's hash (raftkv's CRC
//! is not over etcd's bbolt bytes).

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::fixture::{Cluster, Options, Server, assert_no_differences, etcdctl, etcdctl_ok};

/// The commands compared, each run with the first member's endpoint only.
const COMMANDS: &[&[&str]] = &[
    &["endpoint", "status", "--cluster", "-w", "json"],
    &["endpoint", "status", "--cluster", "-w", "table"],
    &["endpoint", "status", "--cluster"],
    &["endpoint", "health", "--cluster"],
    &["endpoint", "health", "--cluster", "-w", "json"],
    &["endpoint", "health", "--cluster", "-w", "table"],
    &["endpoint", "hashkv", "--cluster"],
    &["endpoint", "hashkv", "--cluster", "-w", "json"],
];

/// What a cluster's members are called in masked output: by the order the fixture
/// started them.
struct Names {
    ports: Vec<u16>,
    ids: Vec<u64>,
}

impl Names {
    fn label(&self, i: usize) -> String {
        format!("<m{}>", i + 1)
    }

    /// Ports and hex ids (as tables print them) replaced by member labels; decimal ids are
    /// JSON numbers, mapped by [`Names::id`].
    fn text(&self, text: &str) -> String {
        let mut out = text.to_string();
        for (i, port) in self.ports.iter().enumerate() {
            out = out.replace(
                &format!("127.0.0.1:{port}"),
                &format!("127.0.0.1:{}", self.label(i)),
            );
        }
        for (i, id) in self.ids.iter().enumerate() {
            out = out.replace(&format!("{id:x}"), &format!("id{}", self.label(i)));
        }
        out
    }

    /// A member id as a JSON value, by label.
    fn id(&self, value: &Value) -> Value {
        match self.ids.iter().position(|id| value.as_u64() == Some(*id)) {
            Some(i) => Value::from(format!("id{}", self.label(i))),
            None => Value::from(format!("unknown id {value}")),
        }
    }
}

async fn names(cluster: &Cluster) -> Names {
    let mut ids = Vec::new();
    for i in 0..cluster.members.len() {
        ids.push(cluster.member_id(i).await);
    }
    Names {
        ports: cluster.members.iter().map(|m| m.client_port).collect(),
        ids,
    }
}

/// Waits until MemberList shows every member's client URL (what `--cluster` dials).
fn wait_published(cluster: &Cluster) {
    let eps = cluster.endpoints();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let list = etcdctl_ok(&eps, &["member", "list"]);
        if cluster
            .members
            .iter()
            .all(|m| list.contains(&format!("http://{}", m.endpoint())))
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "client URLs never published:\n{list}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// What still differs from etcd and is accepted (reported in the test's docs): raftkv's
/// Status names itself in the version, after etcd's.
fn known_differences(text: &str) -> String {
    text.replace("3.4.23+raftkv.0.1.0", "3.4.23")
}

/// `endpoint status|hashkv -w json` (`body` names the answer: `Status`, `HashKV`): entries
/// sorted by member, numbers that vary masked, and the leader checked (every entry names the
/// same member) before it is masked.
fn answers_json(text: &str, body: &str, names: &Names, problems: &mut Vec<String>) -> String {
    let Ok(Value::Array(mut entries)) = serde_json::from_str::<Value>(text) else {
        problems.push(format!("not a JSON array: {text}"));
        return text.to_string();
    };
    if body == "Status" {
        let leaders: Vec<Value> = entries.iter().map(|e| e[body]["leader"].clone()).collect();
        let known = leaders
            .first()
            .is_some_and(|l| names.ids.iter().any(|id| l.as_u64() == Some(*id)));
        if leaders.iter().any(|l| l != &leaders[0]) || !known {
            problems.push(format!("members disagree on a leader: {text}"));
        }
    }
    for entry in &mut entries {
        let answer = &mut entry[body];
        // HashKV's hash is masked too: raftkv's is not computed over etcd's bbolt bytes.
        for key in [
            "dbSize",
            "dbSizeInUse",
            "raftIndex",
            "raftTerm",
            "raftAppliedIndex",
            "leader",
            "hash",
        ] {
            if let Some(v) = answer.get_mut(key) {
                *v = Value::from("<N>");
            }
        }
        for key in ["cluster_id", "raft_term"] {
            if let Some(v) = answer["header"].get_mut(key) {
                *v = Value::from("<N>");
            }
        }
        if let Some(v) = answer["header"].get_mut("member_id") {
            *v = names.id(v);
        }
    }
    entries.sort_by_key(|e| e["Endpoint"].to_string());
    serde_json::to_string_pretty(&Value::Array(entries)).expect("serialises")
}

/// Table and simple outputs: one row per member, cells masked by column, rows sorted.
/// `masked` names the columns (0-based) whose values vary between clusters.
fn rows(
    text: &str,
    table: bool,
    masked: &[usize],
    leader_column: Option<usize>,
    problems: &mut Vec<String>,
) -> String {
    let mut header = Vec::new();
    let mut body = Vec::new();
    let mut leaders = 0;
    for line in text.lines() {
        if table && !line.starts_with('|') {
            continue; // borders: their widths follow the masked values
        }
        let cells: Vec<String> = if table {
            line.trim_matches('|')
                .split('|')
                .map(|c| c.trim().to_string())
                .collect()
        } else {
            line.split(", ").map(str::to_string).collect()
        };
        if table && header.is_empty() {
            header = cells;
            continue;
        }
        let mut cells = cells;
        if let Some(c) = leader_column
            && cells.get(c).is_some_and(|v| v == "true")
        {
            leaders += 1;
        }
        for &c in masked.iter().chain(leader_column.iter()) {
            if let Some(v) = cells.get_mut(c) {
                *v = "<N>".into();
            }
        }
        body.push(cells.join(" | "));
    }
    if leader_column.is_some() && leaders != 1 {
        problems.push(format!("{leaders} leaders in:\n{text}"));
    }
    body.sort();
    let mut out = header.join(" | ");
    for row in body {
        out.push('\n');
        out.push_str(&row);
    }
    out
}

/// `endpoint health`: lines sorted (members answer concurrently), times masked.
fn health(text: &str) -> String {
    let mut lines: Vec<String> = text
        .lines()
        .filter(|l| !l.starts_with("{\"level\""))
        .map(|l| match l.find("took = ") {
            Some(at) => format!("{}took = <T>", &l[..at]),
            None => l.to_string(),
        })
        .collect();
    lines.sort();
    lines.join("\n")
}

fn health_json(text: &str, problems: &mut Vec<String>) -> String {
    let Ok(Value::Array(mut entries)) = serde_json::from_str::<Value>(text) else {
        problems.push(format!("not a JSON array: {text}"));
        return text.to_string();
    };
    for entry in &mut entries {
        if let Some(v) = entry.get_mut("took") {
            *v = Value::from("<T>");
        }
    }
    entries.sort_by_key(|e| e["endpoint"].to_string());
    serde_json::to_string_pretty(&Value::Array(entries)).expect("serialises")
}

/// Runs every command against `server`'s cluster; returns the masked transcripts and
/// anything wrong that masking would hide.
async fn transcripts(server: Server) -> (Vec<String>, Vec<String>) {
    let cluster = Cluster::start(server, 3, Options::default()).await;
    wait_published(&cluster);
    let first = cluster.members[0].endpoint();
    etcdctl_ok(&first, &["put", "k", "v"]);
    let names = names(&cluster).await;
    let mut problems = Vec::new();
    let mut out = Vec::new();
    let mut commands: Vec<(String, Vec<&str>)> = COMMANDS
        .iter()
        .map(|args| (first.clone(), args.to_vec()))
        .collect();
    // A single endpoint given as a URL: the same :authority without --cluster.
    commands.push((
        format!("http://{first}"),
        vec!["endpoint", "status", "-w", "json"],
    ));
    for (endpoints, args) in commands {
        let result = etcdctl(&endpoints, &args, None);
        let stdout = known_differences(&names.text(&String::from_utf8_lossy(&result.stdout)));
        let stderr = known_differences(&names.text(&String::from_utf8_lossy(&result.stderr)));
        let json = args.contains(&"json");
        let masked_stdout = match (args[1], json, args.contains(&"table")) {
            ("status", true, _) => answers_json(&stdout, "Status", &names, &mut problems),
            ("hashkv", true, _) => answers_json(&stdout, "HashKV", &names, &mut problems),
            // ENDPOINT, HASH
            ("hashkv", false, _) => rows(&stdout, false, &[1], None, &mut problems),
            // ENDPOINT, ID, VERSION, DB SIZE, IS LEADER, IS LEARNER, RAFT TERM,
            // RAFT INDEX, RAFT APPLIED INDEX, ERRORS
            ("status", false, table) => rows(&stdout, table, &[3, 6, 7, 8], Some(4), &mut problems),
            ("health", true, _) => health_json(&stdout, &mut problems),
            // ENDPOINT, HEALTH, TOOK, ERROR
            ("health", false, true) => rows(&stdout, true, &[2], None, &mut problems),
            _ => health(&stdout),
        };
        out.push(format!(
            "$ etcdctl --endpoints={} {} (exit {})\n{}\n{}",
            names.text(&endpoints),
            args.join(" "),
            result.status.code().unwrap_or(-1),
            masked_stdout,
            health(&stderr)
        ));
    }
    (out, problems)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_commands_with_cluster_match_real_etcd() {
    let (ours, mut problems) = transcripts(Server::Raftkv).await;
    let (reference, etcd_problems) = transcripts(Server::Etcd).await;
    assert_no_differences(&etcd_problems);
    // Shown with --nocapture: what was compared.
    println!("{}", ours.join("\n"));
    for (o, r) in ours.iter().zip(&reference) {
        if o != r {
            problems.push(format!("--- etcd\n{r}\n--- raftkv\n{o}"));
        }
    }
    assert_no_differences(&problems);
}

/// What grpc-go sent on etcdctl connections, captured in front of a real etcd that
/// advertised the capture's port (the fuzz target's seeds): `put` and a `lock` session send
/// the bare `127.0.0.1:12479` (later blocks of the lock session index it); the connections
/// of `endpoint status --cluster` and `endpoint hashkv --cluster` send the whole URL.
const ETCDCTL_STREAMS: [(&str, &[u8], bool); 4] = [
    (
        "put",
        include_bytes!("../../crates/fuzz/seeds/h2_authority/etcdctl-put.bin"),
        false,
    ),
    (
        "lock",
        include_bytes!("../../crates/fuzz/seeds/h2_authority/etcdctl-lock.bin"),
        false,
    ),
    (
        "status --cluster",
        include_bytes!("../../crates/fuzz/seeds/h2_authority/etcdctl-status-cluster.bin"),
        true,
    ),
    (
        "hashkv --cluster",
        include_bytes!("../../crates/fuzz/seeds/h2_authority/etcdctl-hashkv-cluster.bin"),
        true,
    ),
];

/// A connection's server side, read through the repair (or not).
struct Served<S> {
    io: S,
    repair: Option<raftkv_raft::h2_authority::Rewriter>,
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Served<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let this = &mut *self;
        match &mut this.repair {
            Some(r) => r.poll_read(std::pin::Pin::new(&mut this.io), cx, buf),
            None => std::pin::Pin::new(&mut this.io).poll_read(cx, buf),
        }
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Served<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// What h2's server makes of `stream`: the `:authority` of each request it accepts, or the
/// id of each stream it resets with PROTOCOL_ERROR, as they come.
enum Outcome {
    Accepted(Option<String>),
    Refused(u32),
}

/// Replays `stream` to h2's server (read through the repair, or not) and returns the first
/// `n` outcomes. The connection stays open meanwhile: h2 drops requests it has not yet
/// handed out when the client's side ends.
async fn h2_outcomes(stream: &'static [u8], repair: bool, n: usize) -> Vec<Outcome> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut client, server) = tokio::io::duplex(1 << 20);
    let served = Served {
        io: server,
        repair: repair.then(raftkv_raft::h2_authority::Rewriter::new),
    };
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let accepted = tx.clone();
    let server = tokio::spawn(async move {
        let Ok(mut conn) = h2::server::handshake(served).await else {
            return;
        };
        while let Some(Ok((request, mut respond))) = conn.accept().await {
            let authority = request.uri().authority().map(|a| a.to_string());
            let _ = accepted.send(Outcome::Accepted(authority));
            let _ = respond.send_response(http::Response::new(()), true);
        }
    });
    client.write_all(stream).await.expect("written");
    let (mut from_server, _to_server) = tokio::io::split(client);
    let reader = tokio::spawn(async move {
        // The server's frames: RST_STREAM (3) with PROTOCOL_ERROR (1) is a refusal.
        let mut head = [0u8; 9];
        while from_server.read_exact(&mut head).await.is_ok() {
            let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
            let mut payload = vec![0u8; len];
            if from_server.read_exact(&mut payload).await.is_err() {
                break;
            }
            let id = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
            if head[3] == 3 && payload == [0, 0, 0, 1] {
                let _ = tx.send(Outcome::Refused(id));
            }
        }
    });
    let mut outcomes = Vec::new();
    while outcomes.len() < n {
        // A bound so that a regression fails instead of hanging; not a timing claim.
        let next = tokio::time::timeout(Duration::from_secs(30), rx.recv()).await;
        match next {
            Ok(Some(outcome)) => outcomes.push(outcome),
            _ => break,
        }
    }
    server.abort();
    reader.abort();
    outcomes
}

/// h2 itself (the server raftkv runs) takes every request of the captured etcdctl streams
/// once they are repaired — its own HPACK decoder stays in step through the rewritten and
/// the indexed blocks — and, as the control, refuses each one without the repair.
#[tokio::test]
async fn h2_accepts_etcdctl_streams_once_repaired() {
    for (name, stream, whole_url) in ETCDCTL_STREAMS {
        let n = count_headers_frames(stream);
        let repaired = h2_outcomes(stream, true, n).await;
        assert_eq!(repaired.len(), n, "{name}");
        for outcome in &repaired {
            match outcome {
                Outcome::Accepted(a) => assert_eq!(a.as_deref(), Some("127.0.0.1:12479"), "{name}"),
                Outcome::Refused(id) => panic!("{name}: stream {id} refused after the repair"),
            }
        }
        let raw = h2_outcomes(stream, false, n).await;
        assert_eq!(raw.len(), n, "{name}");
        let refused = raw
            .iter()
            .filter(|o| matches!(o, Outcome::Refused(_)))
            .count();
        assert_eq!(
            refused,
            if whole_url { n } else { 0 },
            "{name} without the repair"
        );
    }
}

fn count_headers_frames(stream: &[u8]) -> usize {
    let mut rest = &stream[24..];
    let mut count = 0;
    while rest.len() >= 9 {
        let len = usize::from(rest[0]) << 16 | usize::from(rest[1]) << 8 | usize::from(rest[2]);
        count += usize::from(rest[3] == 0x1);
        rest = &rest[(9 + len).min(rest.len())..];
    }
    count
}
