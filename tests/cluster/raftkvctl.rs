//! raftkvctl beside etcdctl: the same put / get / del session run by both tools, against a
//! raftkv cluster and against a real etcd cluster; all four outputs must match once ids and
//! terms are masked.

use std::process::{Command, Stdio};

use crate::etcdctl::mask;
use crate::fixture::{Cluster, Options, Server, etcdctl, raftkvctl_bin};

const SESSION: &[&[&str]] = &[
    &["put", "foo", "bar"],
    &["put", "foo", "baz", "--prev-kv"],
    &["put", "foo", "qux", "--prev-kv", "-w", "json"],
    &["put", "foo2", "v2", "-w", "fields"],
    &["put", "a/1", "1"],
    &["put", "a/2", "2"],
    &["put", "a/3", "with \"quotes\" and \\ too"],
    &["put", "--ignore-value", "a/1"],
    &["put", "--ignore-value", "missing"],
    &["put", "", "empty key"],
    &["get", "foo"],
    &["get", "foo", "--prefix"],
    &["get", "foo", "--prefix", "-w", "json"],
    &["get", "a/", "--prefix", "--limit", "2", "-w", "json"],
    &["get", "a/", "--prefix", "-w", "fields"],
    &[
        "get",
        "a/",
        "--prefix",
        "--sort-by=MODIFY",
        "--order=DESCEND",
    ],
    &["get", "a/", "--prefix", "--sort-by=VALUE"],
    &["get", "a/", "--prefix", "--keys-only"],
    &["get", "a/", "--prefix", "--print-value-only"],
    &["get", "a/1", "a/3"],
    &["get", "--from-key", "b"],
    &["get", "", "--prefix", "--keys-only", "--hex"],
    &["get", "foo", "--rev", "2"],
    &["get", "foo", "--rev", "1000"],
    &["get", "missing"],
    &["get", "missing", "-w", "json"],
    &["get", "foo", "-w", "table"],
    &["get", "foo", "--consistency=s"],
    &["del", "nothing"],
    &["del", "a/", "--prefix", "--prev-kv"],
    &["del", "foo2", "-w", "json"],
    &["del", "--from-key", "f", "--prev-kv", "-w", "fields"],
    &["get", "", "--from-key"],
];

fn run_raftkvctl(endpoints: &str, args: &[&str]) -> std::process::Output {
    Command::new(raftkvctl_bin())
        .arg(format!("--endpoints={endpoints}"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("raftkvctl ran")
}

fn session(endpoints: &str, use_raftkvctl: bool) -> Vec<String> {
    SESSION
        .iter()
        .map(|args| {
            let out = if use_raftkvctl {
                run_raftkvctl(endpoints, args)
            } else {
                etcdctl(endpoints, args, None)
            };
            format!(
                "$ {} (exit {})\n{}{}",
                args.join(" "),
                out.status.code().unwrap_or(-1),
                mask(&String::from_utf8_lossy(&out.stdout)),
                mask(&String::from_utf8_lossy(&out.stderr))
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raftkvctl_matches_etcdctl_on_raftkv_and_on_etcd() {
    let mut runs = Vec::new();
    for server in [Server::Raftkv, Server::Etcd] {
        for use_raftkvctl in [false, true] {
            let cluster = Cluster::start(server, 3, Options::default()).await;
            runs.push((
                format!(
                    "{server:?} with {}",
                    if use_raftkvctl {
                        "raftkvctl"
                    } else {
                        "etcdctl"
                    }
                ),
                session(&cluster.endpoints(), use_raftkvctl),
            ));
        }
    }
    let (reference_name, reference) = &runs[1 + 1]; // etcdctl against etcd
    let mut differences = Vec::new();
    for (name, run) in &runs {
        for (got, want) in run.iter().zip(reference) {
            if got != want {
                differences.push(format!("--- {reference_name}\n{want}--- {name}\n{got}"));
            }
        }
    }
    assert!(
        differences.is_empty(),
        "{} differences:\n{}",
        differences.len(),
        differences.join("\n")
    );
}
