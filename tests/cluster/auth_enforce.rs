//! Permissions enforced as etcd enforces them: one etcdctl session against a 3-member
//! raftkv cluster and a 3-member etcd cluster, commands spread over the members (so tokens
//! made on one member and checks made by every member as it applies are exercised), and the
//! transcripts compared once ids, ports and tokens are masked.
//!
//! The session makes users and roles with key, prefix and from-key permissions, enables
//! auth, then tries allowed and forbidden gets, puts (with `--prev-kv`), deletes, txns (every
//! branch), watches, lease revokes (the lease's keys), root-only calls (user and role
//! management, hash, defragment) and the JSON gateway with a token, as different users; it
//! changes the permissions, a password and a user under them, and disables auth again.
//!
//! A second test does the same with the common name of a verified client certificate as the
//! user (`--client-cert-auth`), on TLS.

use std::path::Path;
use std::process::Output;

use crate::etcdctl::transcript;
use crate::fixture::{Cluster, Options, Server, assert_no_differences, etcdctl};

/// (member, arguments, stdin) of each scripted command.
pub(crate) type Step = (usize, &'static [&'static str], Option<&'static str>);

const SETUP: &[Step] = &[
    (0, &["put", "foo/a", "1"], None),
    (1, &["put", "bar/b", "2"], None),
    (2, &["put", "other", "3"], None),
    (
        0,
        &["user", "add", "root:rootpw", "--interactive=false"],
        None,
    ),
    (
        1,
        &["user", "add", "alice:apw", "--interactive=false"],
        None,
    ),
    (2, &["user", "add", "bob:bpw", "--interactive=false"], None),
    (0, &["role", "add", "reader"], None),
    (1, &["role", "add", "writer"], None),
    (
        2,
        &[
            "role",
            "grant-permission",
            "reader",
            "read",
            "foo/",
            "--prefix",
        ],
        None,
    ),
    (
        0,
        &[
            "role",
            "grant-permission",
            "writer",
            "readwrite",
            "bar/",
            "--prefix",
        ],
        None,
    ),
    (
        1,
        &["role", "grant-permission", "writer", "write", "foo/w"],
        None,
    ),
    (2, &["user", "grant-role", "alice", "reader"], None),
    (0, &["user", "grant-role", "bob", "writer"], None),
    // Nobody named, before auth is on: allowed.
    (1, &["get", "other"], None),
    (2, &["auth", "enable"], None),
    (0, &["auth", "enable"], None),
];

const SESSION: &[Step] = &[
    // Nobody named.
    (0, &["get", "foo/a"], None),
    (1, &["put", "foo/a", "x"], None),
    (2, &["del", "foo/a"], None),
    // alice: read foo/ only.
    (0, &["--user", "alice:apw", "get", "foo/a"], None),
    (1, &["--user", "alice:apw", "get", "foo/", "--prefix"], None),
    (
        2,
        &["--user", "alice:apw", "get", "foo/", "--from-key"],
        None,
    ),
    (0, &["--user", "alice:apw", "get", "bar/b"], None),
    (1, &["--user", "alice:apw", "get", "", "--prefix"], None),
    (2, &["--user", "alice:apw", "put", "foo/a", "x"], None),
    (0, &["--user", "alice:apw", "del", "foo/a"], None),
    (
        1,
        &["--user", "alice", "--password", "apw", "get", "foo/a"],
        None,
    ),
    (2, &["--user", "alice:wrong", "get", "foo/a"], None),
    (0, &["--user", "nobody:x", "get", "foo/a"], None),
    (
        1,
        &["--user", "alice:apw", "get", "foo/a", "--consistency=s"],
        None,
    ),
    // bob: readwrite bar/, write-only foo/w.
    (2, &["--user", "bob:bpw", "put", "bar/b", "3"], None),
    (0, &["--user", "bob:bpw", "put", "foo/w", "1"], None),
    (
        1,
        &["--user", "bob:bpw", "put", "foo/w", "2", "--prev-kv"],
        None,
    ),
    (2, &["--user", "bob:bpw", "get", "foo/w"], None),
    (0, &["--user", "bob:bpw", "del", "foo/w"], None),
    (1, &["--user", "bob:bpw", "del", "foo/w", "--prev-kv"], None),
    (2, &["--user", "bob:bpw", "put", "bar/c", "1"], None),
    (
        0,
        &["--user", "bob:bpw", "del", "bar/", "--prefix", "--prev-kv"],
        None,
    ),
    (1, &["--user", "bob:bpw", "put", "bar/c", "1"], None),
    // Txns: compares and both branches are checked, whichever runs.
    (
        2,
        &["--user", "bob:bpw", "txn"],
        Some("value(\"bar/c\") = \"1\"\n\nput bar/d 1\n\nget foo/a\n\n"),
    ),
    (
        0,
        &["--user", "bob:bpw", "txn"],
        Some("value(\"bar/c\") = \"1\"\n\nput bar/d 1\n\nget bar/c\n\n"),
    ),
    (
        1,
        &["--user", "bob:bpw", "txn"],
        Some("value(\"foo/a\") = \"1\"\n\nput bar/e 1\n\n\n"),
    ),
    (
        2,
        &["--user", "alice:apw", "txn"],
        Some("value(\"foo/a\") = \"1\"\n\nget foo/a\n\nget foo/\n\n"),
    ),
    (
        0,
        &["--user", "alice:apw", "txn"],
        Some("value(\"foo/a\") = \"1\"\n\nget foo/a\n\nget bar/b\n\n"),
    ),
    // Lock (its key under the lock's name needs write, its wait a watch).
    (
        0,
        &["--user", "bob:bpw", "lock", "bar/lk", "echo", "held"],
        None,
    ),
    (
        1,
        &["--user", "alice:apw", "lock", "bar/lk", "echo", "held"],
        None,
    ),
    (
        2,
        &["--user", "alice:apw", "lock", "foo/lk", "echo", "held"],
        None,
    ),
    // A forbidden watch is cancelled at once (an allowed one would run on).
    (1, &["--user", "alice:apw", "watch", "bar/b"], None),
    (
        2,
        &["--user", "alice:apw", "watch", "bar/", "--prefix"],
        None,
    ),
    (0, &["watch", "foo/a"], None),
    // Root-only calls.
    (1, &["--user", "alice:apw", "user", "list"], None),
    (2, &["--user", "alice:apw", "role", "list"], None),
    (0, &["--user", "alice:apw", "user", "get", "alice"], None),
    (1, &["--user", "alice:apw", "user", "get", "bob"], None),
    (2, &["--user", "alice:apw", "role", "get", "reader"], None),
    (0, &["--user", "alice:apw", "role", "get", "writer"], None),
    (
        1,
        &[
            "--user",
            "alice:apw",
            "user",
            "add",
            "eve:x",
            "--interactive=false",
        ],
        None,
    ),
    (2, &["--user", "alice:apw", "role", "add", "r9"], None),
    (0, &["--user", "alice:apw", "auth", "disable"], None),
    (1, &["--user", "alice:apw", "auth", "enable"], None),
    (2, &["--user", "alice:apw", "endpoint", "hashkv"], None),
    (0, &["--user", "alice:apw", "defrag"], None),
    (1, &["--user", "alice:apw", "alarm", "list"], None),
    (2, &["--user", "root:rootpw", "user", "list"], None),
    (
        0,
        &[
            "--user",
            "root:rootpw",
            "get",
            "",
            "--prefix",
            "--keys-only",
        ],
        None,
    ),
    (1, &["--user", "root:rootpw", "auth", "enable"], None),
    (2, &["--user", "root:rootpw", "role", "get", "writer"], None),
    // Changes under the users' feet.
    (
        0,
        &[
            "--user",
            "root:rootpw",
            "role",
            "revoke-permission",
            "reader",
            "foo/",
            "--prefix",
        ],
        None,
    ),
    (1, &["--user", "alice:apw", "get", "foo/a"], None),
    (
        2,
        &[
            "--user",
            "root:rootpw",
            "role",
            "grant-permission",
            "reader",
            "read",
            "foo/a",
        ],
        None,
    ),
    (0, &["--user", "alice:apw", "get", "foo/a"], None),
    (1, &["--user", "alice:apw", "get", "foo/", "--prefix"], None),
    (
        2,
        &[
            "--user",
            "root:rootpw",
            "user",
            "passwd",
            "alice",
            "--interactive=false",
        ],
        Some("newpw\n"),
    ),
    (0, &["--user", "alice:apw", "get", "foo/a"], None),
    (1, &["--user", "alice:newpw", "get", "foo/a"], None),
    (2, &["--user", "root:rootpw", "user", "delete", "bob"], None),
    (0, &["--user", "bob:bpw", "get", "bar/c"], None),
    (
        1,
        &[
            "--user",
            "root:rootpw",
            "user",
            "revoke-role",
            "root",
            "root",
        ],
        None,
    ),
    (2, &["--user", "root:rootpw", "auth", "disable"], None),
    (0, &["get", "foo/a"], None),
    (1, &["--user", "alice:newpw", "get", "foo/a"], None),
];

/// etcdctl against `endpoint`; a watch that is not refused is stopped after two seconds.
pub(crate) fn run(endpoint: &str, args: &[&str], stdin: Option<&str>) -> Output {
    if args.contains(&"watch") {
        let mut cmd = std::process::Command::new("timeout");
        cmd.args(["2", "etcdctl", &format!("--endpoints={endpoint}")])
            .args(args)
            .env("ETCDCTL_API", "3");
        return crate::fixture::run_with_stdin(cmd, stdin);
    }
    etcdctl(endpoint, args, stdin)
}

/// Replaces each of `names`' values in `text` by its mask.
pub(crate) fn masked(text: &str, names: &[(String, String)]) -> String {
    let mut text = text.to_string();
    for (value, name) in names {
        text = text.replace(value.as_str(), name);
    }
    text
}

pub(crate) fn steps(cluster: &Cluster, steps: &[Step], out: &mut Vec<String>) {
    let names = masks(cluster);
    for (member, args, stdin) in steps {
        let endpoint = cluster.members[*member].endpoint();
        let o = run(&endpoint, args, *stdin);
        let line = transcript(&format!("[{member}] etcdctl {}", args.join(" ")), &o);
        out.push(masked(&line, &names));
    }
}

pub(crate) fn masks(cluster: &Cluster) -> Vec<(String, String)> {
    cluster
        .members
        .iter()
        .enumerate()
        .map(|(i, m)| (m.endpoint(), format!("<member {i}>")))
        .collect()
}

/// The lease steps: bob attaches a key of his to a lease; alice may not revoke it, nor
/// attach a key to it; bob may. Ids masked.
fn lease_steps(cluster: &Cluster, out: &mut Vec<String>) {
    let ep = |i: usize| cluster.members[i].endpoint();
    let granted = etcdctl(
        &ep(0),
        &["--user", "bob:bpw", "lease", "grant", "100"],
        None,
    );
    let text = String::from_utf8_lossy(&granted.stdout).into_owned();
    let id = text
        .split_whitespace()
        .nth(1)
        .unwrap_or_else(|| panic!("lease grant: {granted:?}"))
        .to_string();
    let mut names = masks(cluster);
    names.push((id.clone(), "<lease>".into()));
    let lease = format!("--lease={id}");
    for (member, args) in [
        (
            1,
            vec!["--user", "bob:bpw", "put", "bar/l", "v", lease.as_str()],
        ),
        (
            2,
            vec!["--user", "alice:apw", "lease", "revoke", id.as_str()],
        ),
        (
            0,
            vec!["--user", "alice:apw", "put", "foo/a", "v", lease.as_str()],
        ),
        (
            1,
            vec![
                "--user",
                "root:rootpw",
                "role",
                "grant-permission",
                "reader",
                "write",
                "foo/a",
            ],
        ),
        (
            2,
            vec!["--user", "alice:apw", "put", "foo/a", "v", lease.as_str()],
        ),
        (0, vec!["--user", "bob:bpw", "lease", "revoke", id.as_str()]),
        (1, vec!["--user", "bob:bpw", "get", "bar/l"]),
    ] {
        let o = etcdctl(&ep(member), &args, None);
        let line = transcript(&format!("[{member}] etcdctl {}", args.join(" ")), &o);
        out.push(masked(&line, &names));
    }
}

/// The JSON gateway: Authenticate, then calls with and without the token in
/// `Authorization` (the token masked).
fn gateway_steps(cluster: &Cluster, out: &mut Vec<String>) {
    let base = |i: usize| format!("http://{}", cluster.members[i].endpoint());
    let curl = |url: String, header: Option<&str>, body: &str| -> String {
        let mut cmd = std::process::Command::new("curl");
        cmd.args(["-sS", "-X", "POST", &url, "-d", body]);
        if let Some(h) = header {
            cmd.args(["-H", h]);
        }
        let o = cmd.output().expect("curl");
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let answer = curl(
        format!("{}/v3/auth/authenticate", base(0)),
        None,
        r#"{"name":"alice","password":"apw"}"#,
    );
    let token = serde_json::from_str::<serde_json::Value>(&answer)
        .ok()
        .and_then(|v| v["token"].as_str().map(str::to_string))
        .unwrap_or_else(|| panic!("gateway authenticate: {answer}"));
    let mask_header = |text: String| {
        let v: serde_json::Value = serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
        match v {
            serde_json::Value::Object(mut map) => {
                if let Some(serde_json::Value::Object(h)) = map.get_mut("header") {
                    for k in ["cluster_id", "member_id", "raft_term"] {
                        h.remove(k);
                    }
                }
                serde_json::Value::Object(map).to_string()
            }
            _ => text,
        }
    };
    out.push(format!(
        "gateway authenticate: token {}\n",
        if token.is_empty() { "empty" } else { "given" }
    ));
    let auth = format!("Authorization: {token}");
    for (member, header, path, body) in [
        (
            0,
            Some(auth.as_str()),
            "/v3/kv/range",
            r#"{"key":"Zm9vL2E="}"#,
        ),
        (
            0,
            Some(auth.as_str()),
            "/v3/kv/range",
            r#"{"key":"YmFyL2I="}"#,
        ),
        (0, None, "/v3/kv/range", r#"{"key":"Zm9vL2E="}"#),
        (
            0,
            Some("Authorization: bogus.5"),
            "/v3/kv/range",
            r#"{"key":"Zm9vL2E="}"#,
        ),
        (
            0,
            Some(auth.as_str()),
            "/v3/kv/put",
            r#"{"key":"Zm9vL2E=","value":"eA=="}"#,
        ),
        (0, Some(auth.as_str()), "/v3/auth/user/list", "{}"),
    ] {
        let text = curl(format!("{}{path}", base(member)), header, body);
        out.push(format!(
            "gateway [{member}] {path} {body} token={}: {}\n",
            header.is_some(),
            mask_header(text).replace(&token, "<token>")
        ));
    }
}

async fn transcript_of(server: Server) -> Vec<String> {
    let cluster = Cluster::start(server, 3, Options::default()).await;
    tokio::task::block_in_place(|| {
        let mut out = Vec::new();
        steps(&cluster, SETUP, &mut out);
        gateway_steps(&cluster, &mut out);
        lease_steps(&cluster, &mut out);
        steps(&cluster, SESSION, &mut out);
        out
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permissions_are_enforced_as_etcd_enforces_them() {
    let etcd = transcript_of(Server::Etcd).await;
    let ours = transcript_of(Server::Raftkv).await;
    assert_eq!(etcd.len(), ours.len());
    let differences: Vec<String> = etcd
        .iter()
        .zip(&ours)
        .filter(|(e, o)| e != o)
        .map(|(e, o)| format!("--- etcd\n{e}--- raftkv\n{o}"))
        .collect();
    assert_no_differences(&differences);
}

/// With `--client-cert-auth`, a verified client certificate's common name is the user when
/// the request carries no token, as with etcd; a token, when given, wins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificates_common_name_is_the_user() {
    let certs = crate::tls::Certs::make();
    let run = |server: Server| {
        let flags = vec![
            format!("--cert-file={}", certs.file("server.crt")),
            format!("--key-file={}", certs.file("server.key")),
            format!("--trusted-ca-file={}", certs.file("ca.crt")),
            "--client-cert-auth".to_string(),
        ];
        let certs = &certs;
        async move {
            let cluster = Cluster::start(
                server,
                1,
                Options {
                    extra_args: flags,
                    secure_client: true,
                    ..Options::default()
                },
            )
            .await;
            let https = cluster.members[0].secure_url().expect("https url");
            tokio::task::block_in_place(|| cert_session(&https, certs.path()))
        }
    };
    let etcd = run(Server::Etcd).await;
    let ours = run(Server::Raftkv).await;
    let differences: Vec<String> = etcd
        .iter()
        .zip(&ours)
        .filter(|(e, o)| e != o)
        .map(|(e, o)| format!("--- etcd\n{e}--- raftkv\n{o}"))
        .collect();
    assert_eq!(etcd.len(), ours.len());
    assert_no_differences(&differences);
}

fn cert_session(https: &str, dir: &Path) -> Vec<String> {
    let file = |name: &str| dir.join(name).display().to_string();
    let ca = format!("--cacert={}", file("ca.crt"));
    // "client.crt" has CN "client"; "root-client.crt" has CN "root".
    let as_client = [
        ca.clone(),
        format!("--cert={}", file("client.crt")),
        format!("--key={}", file("client.key")),
    ];
    let as_root = [
        ca.clone(),
        format!("--cert={}", file("root-client.crt")),
        format!("--key={}", file("root-client.key")),
    ];
    let mut out = Vec::new();
    let mut step = |tls: &[String], args: &[&str], stdin: Option<&str>| {
        let mut all: Vec<&str> = tls.iter().map(String::as_str).collect();
        all.extend_from_slice(args);
        let o = etcdctl(https, &all, stdin);
        let line = transcript(&format!("etcdctl {}", args.join(" ")), &o);
        out.push(line.replace(https, "<https>"));
    };
    step(&as_root, &["put", "k/1", "v"], None);
    step(&as_root, &["put", "other", "v"], None);
    step(
        &as_root,
        &["user", "add", "root:rootpw", "--interactive=false"],
        None,
    );
    step(&as_root, &["user", "add", "client", "--no-password"], None);
    step(&as_root, &["role", "add", "k"], None);
    step(
        &as_root,
        &[
            "role",
            "grant-permission",
            "k",
            "readwrite",
            "k/",
            "--prefix",
        ],
        None,
    );
    step(&as_root, &["user", "grant-role", "client", "k"], None);
    step(&as_root, &["auth", "enable"], None);
    // The certificate names the user: no token needed.
    step(&as_client, &["get", "k/1"], None);
    step(&as_client, &["put", "k/2", "v"], None);
    step(&as_client, &["get", "other"], None);
    step(&as_client, &["put", "other", "x"], None);
    step(&as_client, &["user", "list"], None);
    step(&as_root, &["user", "list"], None);
    step(&as_root, &["get", "other"], None);
    // A user without a password cannot authenticate by password.
    step(&as_client, &["--user", "client:x", "get", "k/1"], None);
    // A token wins over the certificate.
    step(
        &as_root,
        &["--user", "root:rootpw", "get", "k/", "--prefix"],
        None,
    );
    step(&as_client, &["--user", "root:rootpw", "get", "other"], None);
    step(&as_root, &["auth", "disable"], None);
    step(&as_client, &["get", "other"], None);
    out
}
