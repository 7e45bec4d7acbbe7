//! The Auth service's management calls beside etcd's: one etcdctl session (users, roles,
//! permissions with keys, ranges, prefixes and from-key, role grants and revokes, and the
//! errors around them, in every output format etcdctl has for them) run against a raftkv
//! cluster and a real etcd cluster, transcripts compared once ids and terms are masked; then
//! the same session by raftkvctl against raftkv, compared with etcdctl's.
//!
//! The session enables auth only where etcd refuses it (no root user yet);
//! `auth_enforce` covers auth switched on. A second test checks the table is replicated
//! state: caught up by a member that was down, and kept across kill -9 of the whole cluster.

use std::process::Command;

use crate::etcdctl::transcript;
use crate::fixture::{
    Cluster, Options, Server, assert_no_differences, etcdctl, raftkvctl_bin, run_with_stdin,
};

/// (arguments, stdin) of each command of the session.
const SESSION: &[(&[&str], Option<&str>)] = &[
    (&["put", "k", "v"], None),
    (&["user", "list"], None),
    (&["role", "list"], None),
    (&["user", "add", "alice:pw", "--interactive=false"], None),
    (&["user", "add", "alice:pw", "--interactive=false"], None),
    (&["user", "add", ":pw", "--interactive=false"], None),
    (&["user", "add", "bob", "--no-password"], None),
    (
        &["user", "add", "carol", "--interactive=false"],
        Some("secret\n"),
    ),
    (
        &["user", "add", "dave:x", "--interactive=false", "-w", "json"],
        None,
    ),
    (&["user", "list"], None),
    (&["user", "list", "-w", "json"], None),
    (&["user", "list", "-w", "fields"], None),
    (&["user", "get", "alice"], None),
    (&["user", "get", "alice", "-w", "json"], None),
    (&["user", "get", "nobody"], None),
    (&["user", "get"], None),
    (&["role", "add", "r1"], None),
    (&["role", "add", "r1"], None),
    (&["role", "add", ""], None),
    (&["role", "add", "r2", "-w", "json"], None),
    (&["role", "add", "r3", "-w", "fields"], None),
    (&["role", "list"], None),
    (&["role", "list", "-w", "json"], None),
    (&["role", "list", "-w", "fields"], None),
    (&["role", "grant-permission", "r1", "read", "foo"], None),
    (
        &["role", "grant-permission", "r1", "write", "foo", "bar"],
        None,
    ),
    (
        &["role", "grant-permission", "r1", "readwrite", "foo", "baz"],
        None,
    ),
    (
        &["role", "grant-permission", "r1", "readwrite", "foo"],
        None,
    ),
    (
        &[
            "role",
            "grant-permission",
            "r1",
            "readwrite",
            "pre",
            "--prefix",
        ],
        None,
    ),
    (
        &[
            "role",
            "grant-permission",
            "r1",
            "read",
            "from",
            "--from-key",
        ],
        None,
    ),
    (
        &["role", "grant-permission", "r1", "read", "a", "-w", "json"],
        None,
    ),
    (&["role", "grant-permission", "r1", "bogus", "foo"], None),
    (&["role", "grant-permission", "nope", "read", "foo"], None),
    (&["role", "grant-permission", "r1", "read"], None),
    (&["role", "get", "r1"], None),
    (&["role", "get", "r1", "-w", "json"], None),
    (&["role", "get", "r1", "-w", "fields"], None),
    (&["role", "get", "r2"], None),
    (&["role", "get", "nope"], None),
    (&["role", "revoke-permission", "r1", "foo"], None),
    (&["role", "revoke-permission", "r1", "foo", "bar"], None),
    (&["role", "revoke-permission", "r1", "foo", "bar"], None),
    (
        &["role", "revoke-permission", "r1", "pre", "--prefix"],
        None,
    ),
    (
        &["role", "revoke-permission", "r1", "from", "--from-key"],
        None,
    ),
    (&["role", "revoke-permission", "nope", "a"], None),
    (
        &["role", "revoke-permission", "r1", "a", "-w", "json"],
        None,
    ),
    (&["role", "get", "r1"], None),
    (&["user", "grant-role", "alice", "r1"], None),
    (&["user", "grant-role", "alice", "r1"], None),
    (&["user", "grant-role", "alice", "r2", "-w", "json"], None),
    (&["user", "grant-role", "alice", "nope"], None),
    (&["user", "grant-role", "nobody", "r1"], None),
    (&["user", "grant-role", "bob", "root"], None),
    (&["user", "get", "alice"], None),
    (&["user", "get", "alice", "--detail"], None),
    (&["user", "get", "alice", "-w", "json"], None),
    (&["user", "get", "bob"], None),
    (&["user", "revoke-role", "alice", "r1"], None),
    (&["user", "revoke-role", "alice", "r1"], None),
    (&["user", "revoke-role", "nobody", "r1"], None),
    (
        &["user", "passwd", "alice", "--interactive=false"],
        Some("newpw\n"),
    ),
    (
        &["user", "passwd", "nobody", "--interactive=false"],
        Some("x\n"),
    ),
    // Deleting a role takes it from its users.
    (&["role", "delete", "r2"], None),
    (&["user", "get", "alice"], None),
    (&["role", "delete", "r2"], None),
    (&["role", "delete", "r3", "-w", "json"], None),
    (&["user", "delete", "alice"], None),
    (&["user", "delete", "alice"], None),
    (&["user", "delete", "dave", "-w", "json"], None),
    (&["auth", "enable"], None),
    (&["user", "add", "root:rootpw", "--interactive=false"], None),
    (&["role", "get", "root"], None),
    (&["auth", "disable"], None),
    (&["auth", "disable", "-w", "json"], None),
    (&["user", "delete", "root"], None),
    (&["user", "list"], None),
    (&["role", "list"], None),
    (&["get", "k", "-w", "json"], None),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tool {
    Etcdctl,
    Raftkvctl,
}

fn run(tool: Tool, endpoint: &str, args: &[&str], stdin: Option<&str>) -> std::process::Output {
    match tool {
        Tool::Etcdctl => etcdctl(endpoint, args, stdin),
        Tool::Raftkvctl => {
            let mut cmd = Command::new(raftkvctl_bin());
            cmd.arg(format!("--endpoints={endpoint}")).args(args);
            run_with_stdin(cmd, stdin)
        }
    }
}

fn session(tool: Tool, endpoint: &str) -> Vec<String> {
    SESSION
        .iter()
        .map(|(args, stdin)| {
            let out = run(tool, endpoint, args, *stdin);
            transcript(&args.join(" "), &out)
        })
        .collect()
}

async fn transcript_of(server: Server, tool: Tool) -> Vec<String> {
    let cluster = Cluster::start(server, 3, Options::default()).await;
    // One member: headers name the member that answered.
    let endpoint = cluster.members[0].endpoint();
    tokio::task::block_in_place(|| session(tool, &endpoint))
}

fn differences(want: &[String], got: &[String], what: &str) -> Vec<String> {
    want.iter()
        .zip(got)
        .filter(|(w, g)| w != g)
        .map(|(w, g)| format!("--- {what}: want\n{w}--- got\n{g}"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_management_matches_etcd_with_etcdctl_and_raftkvctl() {
    let reference = transcript_of(Server::Etcd, Tool::Etcdctl).await;
    let ours = transcript_of(Server::Raftkv, Tool::Etcdctl).await;
    let mut diffs = differences(&reference, &ours, "etcdctl on etcd / on raftkv");
    let ctl = transcript_of(Server::Raftkv, Tool::Raftkvctl).await;
    diffs.extend(differences(&ours, &ctl, "etcdctl / raftkvctl on raftkv"));
    assert_no_differences(&diffs);
}

/// The auth table is replicated state: a member that was down while it changed catches up
/// (by a Raft snapshot once the log it missed is compacted away), and the whole cluster
/// killed at once comes back with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_table_survives_snapshot_catch_up_and_restart() {
    let options = Options {
        snapshot_count: Some(20),
        ..Options::default()
    };
    let mut cluster = Cluster::start(Server::Raftkv, 3, options).await;
    cluster.kill(2);
    // If member 2 led, the others elect a new leader first: a write forwarded to a leader
    // that just died is answered "request timed out" (outcome unknown), which
    // is not what this test is about.
    cluster
        .wait_healthy(std::time::Duration::from_secs(30))
        .await;
    let first = cluster.members[0].endpoint();
    let views = |cluster: &Cluster| -> Vec<String> {
        cluster
            .members
            .iter()
            .map(|m| {
                let mut view = String::new();
                for args in [
                    &["user", "list"][..],
                    &["user", "get", "alice"],
                    &["role", "get", "reader", "-w", "json"],
                    &["user", "get", "nopw"],
                ] {
                    let out = etcdctl(&m.endpoint(), args, None);
                    view += &transcript(&args.join(" "), &out);
                }
                // Headers name the member that answered (masked by `transcript`).
                view.lines()
                    .map(|l| crate::etcdctl::mask_number_after(l, "\"revision\":") + "\n")
                    .collect()
            })
            .collect()
    };
    tokio::task::block_in_place(|| {
        for args in [
            &["user", "add", "alice:pw", "--interactive=false"][..],
            &["user", "add", "nopw", "--no-password"],
            &["role", "add", "reader"],
            &[
                "role",
                "grant-permission",
                "reader",
                "read",
                "pre/",
                "--prefix",
            ],
            &[
                "role",
                "grant-permission",
                "reader",
                "readwrite",
                "k",
                "--from-key",
            ],
            &["user", "grant-role", "alice", "reader"],
            &["user", "grant-role", "nopw", "reader"],
        ] {
            let out = etcdctl(&first, args, None);
            assert!(out.status.success(), "{args:?}: {out:?}");
        }
        // Past --snapshot-count, so the log the stopped member missed is compacted away.
        for i in 0..60 {
            let out = etcdctl(&first, &["put", &format!("k{i}"), "v"], None);
            assert!(out.status.success());
        }
    });
    cluster.restart(2);
    cluster
        .wait_healthy(std::time::Duration::from_secs(30))
        .await;
    let caught_up = tokio::task::block_in_place(|| views(&cluster));
    assert!(caught_up[0].contains("Roles: reader"), "{}", caught_up[0]);
    assert_eq!(caught_up[2], caught_up[0], "the member that was down");
    cluster.kill_and_restart_all().await;
    let restarted = tokio::task::block_in_place(|| views(&cluster));
    assert_eq!(restarted, caught_up, "after kill -9 of every member");
}
