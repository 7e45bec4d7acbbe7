//! The real etcdctl 3.4 against a 3-member raftkv cluster, and the same session against a
//! real etcd 3-member cluster: outputs must match once ids, terms and ports are masked.

use crate::fixture::{Cluster, Options, Server, assert_no_differences, etcdctl, etcdctl_ok};

/// One etcdctl invocation of the scripted session: arguments and optional stdin.
type Step = (&'static [&'static str], Option<&'static str>);

const TXN_SUCCEEDS: &str = "value(\"foo\") = \"baz\"\n\nput x 1\nget foo\ndel fop\n\nput y 2\n\n";
const TXN_FAILS: &str = "mod(\"foo\") > \"1000\"\n\nput never 1\n\nget foo2\nput y 3\n\n";

const SESSION: &[Step] = &[
    (&["put", "foo", "bar"], None),
    (&["put", "foo", "baz", "--prev-kv"], None),
    (&["put", "foo2", "v2"], None),
    (&["put", "fop", "x"], None),
    (&["put", "a/1", "1"], None),
    (&["put", "a/2", "2"], None),
    (&["put", "a/3", "3"], None),
    (&["put", "b", "4"], None),
    (&["put", "a/2", "22"], None),
    (&["get", "foo"], None),
    (&["get", "foo", "--prefix"], None),
    (&["get", "a/", "--prefix", "--limit", "2"], None),
    (&["get", "foo", "--rev", "2"], None),
    (&["get", "--from-key", "a", "--keys-only"], None),
    (
        &[
            "get",
            "a/",
            "--prefix",
            "--sort-by=MODIFY",
            "--order=DESCEND",
        ],
        None,
    ),
    (&["get", "a/", "--prefix", "--sort-by=VALUE"], None),
    (&["get", "a/", "--prefix", "-w", "json"], None),
    (
        &["get", "a/", "--prefix", "--limit", "1", "-w", "json"],
        None,
    ),
    (&["get", "foo", "--print-value-only"], None),
    (&["get", "foo", "-w", "fields"], None),
    (&["get", "missing"], None),
    (&["get", "missing", "-w", "json"], None),
    (&["put", "--ignore-value", "missing"], None),
    (&["txn"], Some(TXN_SUCCEEDS)),
    (&["txn"], Some(TXN_FAILS)),
    (&["txn", "-w", "json"], Some(TXN_FAILS)),
    (&["del", "a/", "--prefix", "--prev-kv"], None),
    (&["del", "nothing"], None),
    (&["del", "b", "-w", "json"], None),
    (&["compaction", "5"], None),
    (&["compaction", "3"], None),
    (&["get", "foo", "--rev", "3"], None),
    (&["get", "foo", "--rev", "1000"], None),
    (&["get", "foo", "--rev", "6", "-w", "json"], None),
    (&["put", "", "x"], None),
    (&["get", "", "--prefix", "--keys-only"], None),
];

/// Hides what legitimately differs between two clusters: ids, terms, ports, timings, and
/// etcdctl's client-side warning logs.
pub(crate) fn mask(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        if line.starts_with("{\"level\"") {
            continue; // clientv3's retry warnings (timestamps, random target names)
        }
        let mut line = line.to_string();
        for key in ["\"cluster_id\":", "\"member_id\":", "\"raft_term\":"] {
            line = mask_number_after(&line, key);
        }
        // -w fields
        for key in ["\"ClusterID\" : ", "\"MemberID\" : ", "\"RaftTerm\" : "] {
            line = mask_number_after(&line, key);
        }
        out.push_str(&line);
        out.push('\n');
    }
    out
}

pub(crate) fn mask_number_after(line: &str, key: &str) -> String {
    let mut out = String::new();
    let mut rest = line;
    while let Some(at) = rest.find(key) {
        out.push_str(&rest[..at + key.len()]);
        rest = &rest[at + key.len()..];
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        out.push_str("<N>");
        rest = &rest[digits..];
    }
    out.push_str(rest);
    out
}

fn run_session(endpoints: &str) -> Vec<String> {
    SESSION
        .iter()
        .map(|(args, stdin)| {
            let out = etcdctl(endpoints, args, *stdin);
            transcript(&format!("etcdctl {}", args.join(" ")), &out)
        })
        .collect()
}

/// One command of a session as compared between runs: the command line, its exit code, and
/// its masked stdout and stderr.
pub(crate) fn transcript(command: &str, out: &std::process::Output) -> String {
    format!(
        "$ {command} (exit {})\n{}{}",
        out.status.code().unwrap_or(-1),
        mask(&String::from_utf8_lossy(&out.stdout)),
        mask(&String::from_utf8_lossy(&out.stderr))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_session_matches_real_etcd() {
    let ours = {
        let cluster = Cluster::start(Server::Raftkv, 3, Options::default()).await;
        run_session(&cluster.endpoints())
    };
    let reference = {
        let cluster = Cluster::start(Server::Etcd, 3, Options::default()).await;
        run_session(&cluster.endpoints())
    };
    let mut differences = Vec::new();
    for (o, r) in ours.iter().zip(&reference) {
        if o != r {
            differences.push(format!("--- etcd\n{r}--- raftkv\n{o}"));
        }
    }
    assert_no_differences(&differences);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_list_endpoint_status_health_and_snapshot_save() {
    let cluster = Cluster::start(Server::Raftkv, 3, Options::default()).await;
    let eps = cluster.endpoints();
    etcdctl_ok(&eps, &["put", "k", "v"]);

    // member list: every member, started, with its peer and (published) client URLs.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let list = loop {
        let list = etcdctl_ok(&eps, &["member", "list"]);
        if cluster
            .members
            .iter()
            .all(|m| list.contains(&format!("http://{}", m.endpoint())))
        {
            break list;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "client URLs never published:\n{list}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    for m in &cluster.members {
        let line = list
            .lines()
            .find(|l| l.contains(&format!(", {}, ", m.name)))
            .unwrap_or_else(|| panic!("{} missing:\n{list}", m.name));
        let fields: Vec<&str> = line.split(", ").collect();
        // etcdctl prints ids with %x: up to 16 hex digits, no zero padding.
        assert!(
            u64::from_str_radix(fields[0], 16).is_ok() && fields[0].len() <= 16,
            "hex id: {line}"
        );
        assert_eq!(fields[1], "started");
        assert_eq!(fields[3], m.peer_url());
        assert_eq!(fields[5], "false", "not a learner");
    }

    // endpoint status: one row per endpoint, exactly one leader, same term and index.
    let table = etcdctl_ok(&eps, &["endpoint", "status", "-w", "table"]);
    assert!(table.contains("| ENDPOINT | ID | VERSION | DB SIZE | IS LEADER | IS LEARNER | RAFT TERM | RAFT INDEX | RAFT APPLIED INDEX | ERRORS |")
        || table.lines().nth(1).is_some_and(|h| h.split('|').map(str::trim).collect::<Vec<_>>()[1..11] == ["ENDPOINT", "ID", "VERSION", "DB SIZE", "IS LEADER", "IS LEARNER", "RAFT TERM", "RAFT INDEX", "RAFT APPLIED INDEX", "ERRORS"]),
        "{table}");
    let simple = etcdctl_ok(&eps, &["endpoint", "status"]);
    let leaders = simple
        .lines()
        .filter(|l| l.split(", ").nth(4) == Some("true"))
        .count();
    assert_eq!(leaders, 1, "{simple}");

    // endpoint health: a linearizable read through every member.
    let health = etcdctl(&eps, &["endpoint", "health"], None);
    assert!(health.status.success());
    let text = String::from_utf8_lossy(&health.stderr).to_string()
        + &String::from_utf8_lossy(&health.stdout);
    assert_eq!(
        text.matches("is healthy: successfully committed proposal")
            .count(),
        3,
        "{text}"
    );

    // snapshot save with the real etcdctl: it checks size % 512 == 32 and the SHA-256.
    let file = cluster.dir().join("saved.db");
    let out = etcdctl(
        &cluster.members[1].endpoint(),
        &["snapshot", "save", file.to_str().unwrap()],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let info = raftkv_storage::snapshot::read_info(&file).expect("a raftkv snapshot");
    assert_eq!(info.key_count, 1);
    assert_eq!(std::fs::metadata(&file).unwrap().len() % 512, 32);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_requests_and_txns_get_etcds_errors() {
    let cluster = Cluster::start(Server::Raftkv, 3, Options::default()).await;
    let eps = cluster.endpoints();
    // 1.6 MB value: over --max-request-bytes (1.5 MiB) but under gRPC's limit.
    let big = "x".repeat(1_600_000);
    let out = etcdctl(&eps, &["put", "big"], Some(&big)); // the value comes from stdin
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Error: etcdserver: request is too large")
    );
    // 129 operations in a txn.
    let ops: String = (0..129).map(|i| format!("put k{i} v\n")).collect();
    let out = etcdctl(&eps, &["txn"], Some(&format!("\n{ops}\n\n")));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("Error: etcdserver: too many operations in txn request")
    );
    // Nothing above changed anything.
    assert_eq!(
        etcdctl_ok(&eps, &["get", "", "--from-key", "--keys-only"]),
        ""
    );
}
