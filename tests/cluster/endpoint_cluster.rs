//! `etcdctl endpoint status|health|hashkv --cluster` against raftkv and a real etcd.
//!
//! With `--cluster` etcdctl dials the client URLs it reads from MemberList, and grpc-go
//! then sends the whole URL (`http://127.0.0.1:2379`) as the HTTP/2 `:authority`. h2 resets
//! such a stream unless the client port repairs the authority first
//! (`raftkv_raft::h2_authority`); so does any `--endpoints=http://…`. The outputs of a
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
