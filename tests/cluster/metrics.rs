//! `/metrics`, read with the Prometheus reference parser (the official Python client's): a
//! 3-member raftkv cluster is scraped before and after some puts, and every metric that etcd's
//! Grafana dashboard and alert rules read must be there, with etcd's type and help text (as a
//! real 3-member etcd scraped in the same test has them), and must move as etcd's do.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::fixture::{Cluster, Options, Server, etcdctl_ok, free_port};

/// What etcd's dashboard (Documentation/op-guide/grafana.json) and alert rules
/// (etcd3_alert.rules.yml) read, as sample names.
const DASHBOARD: &[&str] = &[
    "etcd_server_has_leader",
    "etcd_server_leader_changes_seen_total",
    "etcd_server_proposals_failed_total",
    "etcd_server_proposals_committed_total",
    "etcd_server_proposals_applied_total",
    "etcd_server_proposals_pending",
    "etcd_server_quota_backend_bytes",
    "etcd_disk_wal_fsync_duration_seconds_bucket",
    "etcd_disk_backend_commit_duration_seconds_bucket",
    "etcd_mvcc_db_total_size_in_bytes",
    "etcd_mvcc_db_total_size_in_use_in_bytes",
    "etcd_network_client_grpc_received_bytes_total",
    "etcd_network_client_grpc_sent_bytes_total",
    "etcd_network_peer_sent_bytes_total",
    "etcd_network_peer_received_bytes_total",
    "etcd_network_peer_round_trip_time_seconds_bucket",
    "grpc_server_started_total",
    "grpc_server_handled_total",
    "process_resident_memory_bytes",
];

/// A parsed scrape: families (type, help) and samples.
pub(crate) struct Scrape {
    families: BTreeMap<String, (String, String)>,
    samples: Vec<(String, BTreeMap<String, String>, f64)>,
}

impl Scrape {
    /// The sum of the samples called `name` whose labels include `labels`.
    pub(crate) fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|(n, l, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.get(*k).map(String::as_str) == Some(v))
            })
            .map(|(_, _, v)| *v)
            .sum()
    }

    fn has(&self, name: &str) -> bool {
        self.samples.iter().any(|(n, _, _)| n == name)
    }
}

/// GET `http://addr/metrics`: (content type, body).
fn get(addr: &str, path: &str) -> (String, String) {
    let out = Command::new("curl")
        .args(["-s", "-D", "-", &format!("http://{addr}{path}")])
        .output()
        .expect("curl (scripts/setup installs it)");
    let text = String::from_utf8_lossy(&out.stdout).replace("\r\n", "\n");
    let (head, body) = text.split_once("\n\n").unwrap_or((&text, ""));
    let content_type = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-type: ")
                .map(str::to_owned)
        })
        .unwrap_or_default();
    let status = head.lines().next().unwrap_or_default().to_string();
    (format!("{status} / {content_type}"), body.to_string())
}

/// Parses `text` with prometheus_client's parser (it fails the test if the parser refuses).
fn parse(text: &str) -> Scrape {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut child = Command::new(root.join("target/py/bin/python"))
        .arg(root.join("tests/cluster/py/prom_parse.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("target/py (scripts/setup makes it)");
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(text.as_bytes())
        .expect("feeding the parser");
    let out = child.wait_with_output().expect("parser ran");
    assert!(
        out.status.success(),
        "the Prometheus parser refused the scrape: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("parser's JSON");
    let families = json["families"]
        .as_object()
        .expect("families")
        .iter()
        .map(|(name, f)| {
            let field = |k: &str| f[k].as_str().unwrap_or_default().to_string();
            (name.clone(), (field("type"), field("help")))
        })
        .collect();
    let samples = json["samples"]
        .as_array()
        .expect("samples")
        .iter()
        .map(|s| {
            let labels = s[1]
                .as_object()
                .expect("labels")
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect();
            let value = s[2].as_f64().unwrap_or(f64::INFINITY);
            (s[0].as_str().unwrap_or_default().to_string(), labels, value)
        })
        .collect();
    Scrape { families, samples }
}

pub(crate) fn scrape(addr: &str) -> Scrape {
    let (head, body) = get(addr, "/metrics");
    assert_eq!(
        head,
        "HTTP/1.1 200 OK / text/plain; version=0.0.4; charset=utf-8"
    );
    parse(&body)
}

async fn scrape_all(cluster: &Cluster) -> Vec<Scrape> {
    let eps: Vec<String> = cluster.members.iter().map(|m| m.endpoint()).collect();
    tokio::task::spawn_blocking(move || eps.iter().map(|e| scrape(e)).collect())
        .await
        .expect("scrapes")
}

/// An etcd 3-member cluster's scrape, after it has carried a few puts.
async fn etcd_scrape() -> Scrape {
    let etcd = Cluster::start(Server::Etcd, 3, Options::default()).await;
    etcdctl_ok(&etcd.endpoints(), &["put", "k", "v"]);
    // Peer round trips are probed every few seconds.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let ep = etcd.members[0].endpoint();
    tokio::task::spawn_blocking(move || scrape(&ep))
        .await
        .expect("scrape")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_carry_etcds_names_and_move_with_the_cluster() {
    let etcd = etcd_scrape().await;
    // A snapshot every 10 entries, so that the puts below build some.
    let opts = Options {
        snapshot_count: Some(10),
        ..Options::default()
    };
    let mut cluster = Cluster::start(Server::Raftkv, 3, opts).await;
    let leader = cluster.leader().await.expect("a leader");
    // Leader changes are counted by a task polling every 50 ms: wait (at most 10 s) until every
    // member has counted the first leader it saw; the assertions below check it.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let before = loop {
        let now = scrape_all(&cluster).await;
        let counted = now
            .iter()
            .all(|s| s.value("etcd_server_leader_changes_seen_total", &[]) >= 1.0);
        if counted || std::time::Instant::now() > deadline {
            break now;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    // etcd's names, types and help texts: every etcd-style family raftkv writes is one etcd
    // writes too, alike. (A family etcd writes only once a child exists — a send failure —
    // may be missing from its scrape.)
    let mut differences = Vec::new();
    for (name, kind_help) in &before[0].families {
        let ours = ["etcd_", "grpc_", "process_", "os_"]
            .iter()
            .any(|p| name.starts_with(p));
        match etcd.families.get(name) {
            Some(theirs) if theirs != kind_help => {
                differences.push(format!("{name}: etcd {theirs:?}, raftkv {kind_help:?}"))
            }
            None if ours && name != "etcd_network_peer_sent_failures" => {
                differences.push(format!("{name}: not a family etcd writes"))
            }
            _ => {}
        }
    }
    for name in DASHBOARD {
        for (i, s) in before.iter().enumerate() {
            if !s.has(name) {
                differences.push(format!("member {i}: no {name}"));
            }
        }
        if !etcd.has(name) {
            differences.push(format!("etcd itself has no {name} (the list is wrong)"));
        }
    }
    assert!(differences.is_empty(), "{differences:#?}");

    // Call timings only with --metrics extensive.
    assert!(!before[0].has("grpc_server_handling_seconds_bucket"));

    // One leader, seen by all.
    let leaders: f64 = before
        .iter()
        .map(|s| s.value("etcd_server_is_leader", &[]))
        .sum();
    assert_eq!(leaders, 1.0);
    assert_eq!(before[leader].value("etcd_server_is_leader", &[]), 1.0);
    for s in &before {
        // etcd's default quota, 2 GiB.
        assert_eq!(
            s.value("etcd_server_quota_backend_bytes", &[]),
            2147483648.0
        );
        assert_eq!(s.value("etcd_server_has_leader", &[]), 1.0);
        assert!(s.value("etcd_server_leader_changes_seen_total", &[]) >= 1.0);
    }

    // Puts through member 0 move its gRPC counts, and every member's proposals, puts and
    // disk timings.
    const PUTS: usize = 20;
    let ep = cluster.members[0].endpoint();
    tokio::task::spawn_blocking(move || {
        for i in 0..PUTS {
            etcdctl_ok(&ep, &["put", &format!("metrics/{i}"), "v"]);
        }
    })
    .await
    .expect("puts");
    // Followers apply a moment after the leader answers (longer on a loaded machine): scrape
    // until every member shows the puts applied and nothing pending, for at most 15 s; the
    // assertions below then say what is missing, if anything.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let after = loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = scrape_all(&cluster).await;
        let settled = now.iter().zip(&before).all(|(n, b)| {
            let grew = |name: &str| n.value(name, &[]) - b.value(name, &[]);
            grew("etcd_server_proposals_applied_total") >= PUTS as f64
                && grew("raftkv_apply_duration_seconds_count") >= PUTS as f64
                && n.value("etcd_server_proposals_pending", &[]) == 0.0
                && n.value("raftkv_snapshot_build_duration_seconds_count", &[]) >= 1.0
        });
        if settled || std::time::Instant::now() > deadline {
            break now;
        }
    };
    let grew = |name: &str, labels: &[(&str, &str)], i: usize| {
        after[i].value(name, labels) - before[i].value(name, labels)
    };
    let put_ok = [
        ("grpc_method", "Put"),
        ("grpc_service", "etcdserverpb.KV"),
        ("grpc_code", "OK"),
    ];
    assert_eq!(grew("grpc_server_handled_total", &put_ok, 0), PUTS as f64);
    assert_eq!(
        grew("grpc_server_started_total", &[("grpc_method", "Put")], 0),
        PUTS as f64
    );
    assert_eq!(
        grew(
            "grpc_server_msg_received_total",
            &[("grpc_method", "Put")],
            0
        ),
        PUTS as f64
    );
    assert!(grew("etcd_network_client_grpc_received_bytes_total", &[], 0) >= PUTS as f64 * 10.0);
    for (i, now) in after.iter().enumerate() {
        for name in [
            "etcd_server_proposals_committed_total",
            "etcd_server_proposals_applied_total",
            "etcd_mvcc_put_total",
        ] {
            assert!(grew(name, &[], i) >= PUTS as f64, "member {i}: {name}");
        }
        for name in [
            "etcd_disk_wal_fsync_duration_seconds_count",
            "etcd_disk_backend_commit_duration_seconds_count",
        ] {
            assert!(grew(name, &[], i) >= 1.0, "member {i}: {name}");
        }
        assert!(grew("raftkv_apply_duration_seconds_count", &[], i) >= PUTS as f64);
        // Snapshots taken (every 10 entries). Files are written only for a follower that
        // needs one (tests/cluster/faults.rs).
        assert!(now.value("raftkv_snapshot_build_duration_seconds_count", &[]) >= 1.0);
        assert_eq!(now.value("etcd_server_proposals_pending", &[]), 0.0);
        assert!(now.value("etcd_mvcc_db_total_size_in_bytes", &[]) > 0.0);
    }
    // Raft traffic both ways between the leader and each follower, heartbeats timed.
    for i in (0..3).filter(|&i| i != leader) {
        let follower = format!("{:x}", cluster.member_id(i).await);
        let leader_id = format!("{:x}", cluster.member_id(leader).await);
        let to = [("To", follower.as_str())];
        assert!(grew("etcd_network_peer_sent_bytes_total", &to, leader) > 0.0);
        assert!(after[leader].value("etcd_network_peer_round_trip_time_seconds_count", &to) > 0.0);
        let from = [("From", leader_id.as_str())];
        assert!(grew("etcd_network_peer_received_bytes_total", &from, i) > 0.0);
        assert!(
            grew(
                "etcd_network_peer_sent_bytes_total",
                &[("To", &leader_id)],
                i
            ) > 0.0
        );
    }
    // /health counts its answers.
    let ep = cluster.members[1].endpoint();
    let (answer, success, failures) = tokio::task::spawn_blocking(move || {
        let answer = get(&ep, "/health");
        let s = scrape(&ep);
        (
            answer,
            // The parser names a counter's sample with `_total` even where etcd's name
            // lacks it.
            s.value("etcd_server_health_success_total", &[]),
            s.value("etcd_server_health_failures_total", &[]),
        )
    })
    .await
    .expect("health");
    assert!(
        success >= 1.0,
        "{answer:?}: {success} healthy, {failures} not"
    );

    // --listen-metrics-urls: /metrics and /health on a port of their own, nothing else; and
    // --metrics extensive: every call timed.
    let port = free_port();
    cluster.stop(2);
    cluster.push_arg(2, format!("--listen-metrics-urls=http://127.0.0.1:{port}"));
    cluster.push_arg(2, "--metrics=extensive".into());
    cluster.restart(2);
    cluster.wait_healthy(Duration::from_secs(30)).await;
    let addr = format!("127.0.0.1:{port}");
    let client = cluster.members[2].endpoint();
    tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let s = scrape(&addr);
            if s.value("etcd_server_has_leader", &[]) == 1.0 {
                assert!(s.value("etcd_mvcc_db_total_size_in_bytes", &[]) > 0.0);
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no leader on the metrics port"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        assert_eq!(get(&addr, "/health").1, "{\"health\":\"true\"}");
        // A put through member 2, timed.
        etcdctl_ok(&client, &["put", "metrics/timed", "v"]);
        let s = scrape(&addr);
        let put = [("grpc_method", "Put"), ("grpc_type", "unary")];
        assert_eq!(s.value("grpc_server_handling_seconds_count", &put), 1.0);
        assert_eq!(
            s.value(
                "grpc_server_handling_seconds_bucket",
                &[("grpc_method", "Put"), ("le", "+Inf")]
            ),
            1.0
        );
        assert!(get(&addr, "/v3/kv/range").0.starts_with("HTTP/1.1 404"));
    })
    .await
    .expect("metrics port");
}

/// Linearizable reads share ReadIndex rounds: many reads at once on a follower take fewer
/// rounds than reads (one round each, without the sharing), and every one is answered
/// with what the leader wrote before they began.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_linearizable_reads_share_read_index_rounds() {
    use raftkv_proto::etcdserverpb::kv_client::KvClient;
    use raftkv_proto::etcdserverpb::{PutRequest, RangeRequest};

    const READS: usize = 200;
    let cluster = Cluster::start(Server::Raftkv, 3, Options::default()).await;
    let leader = cluster.leader().await.expect("a leader");
    let follower = (leader + 1) % 3;
    let connect = |i: usize| {
        let ep = cluster.members[i].endpoint();
        async move {
            KvClient::new(
                crate::chaos::channel(&ep)
                    .await
                    .expect("connection to a member"),
            )
        }
    };
    connect(leader)
        .await
        .put(PutRequest {
            key: b"shared".to_vec().into(),
            value: b"v1".to_vec().into(),
            ..Default::default()
        })
        .await
        .expect("put on the leader");
    let ep = cluster.members[follower].endpoint();
    let before = tokio::task::spawn_blocking(move || scrape(&ep))
        .await
        .expect("scrape");
    let client = connect(follower).await;
    let reads: Vec<_> = (0..READS)
        .map(|_| {
            let mut client = client.clone();
            tokio::spawn(async move {
                client
                    .range(RangeRequest {
                        key: b"shared".to_vec().into(),
                        ..Default::default()
                    })
                    .await
                    .map(|r| r.into_inner().kvs[0].value.to_vec())
            })
        })
        .collect();
    for read in reads {
        let value = read.await.expect("read task").expect("linearizable read");
        assert_eq!(value, b"v1");
    }
    let ep = cluster.members[follower].endpoint();
    let after = tokio::task::spawn_blocking(move || scrape(&ep))
        .await
        .expect("scrape");
    let grew = |name: &str| after.value(name, &[]) - before.value(name, &[]);
    let (reads, rounds) = (
        grew("raftkv_read_index_reads_total"),
        grew("raftkv_read_index_rounds_total"),
    );
    assert!(reads >= READS as f64, "{reads} reads counted");
    assert!(
        rounds >= 1.0 && rounds < reads,
        "{rounds} ReadIndex rounds for {reads} concurrent reads"
    );
    assert_eq!(
        after.value("etcd_server_read_indexes_failed_total", &[]),
        0.0
    );
    eprintln!("{reads} concurrent linearizable reads on a follower took {rounds} ReadIndex rounds");
}
