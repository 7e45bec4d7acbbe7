//! JWT tokens (`--auth-token jwt,...`) as etcd 3.4 hands them out and checks them: a
//! 3-member raftkv cluster and a 3-member etcd cluster started with the same keys (made by
//! openssl at run time), the same etcdctl and gateway session on each, transcripts compared
//! once ids, ports and tokens are masked.
//!
//! The session makes users and roles, enables auth and tries allowed and forbidden calls as
//! each user; through the JSON gateway it authenticates on member 0 and uses the token on
//! members 1 and 2, then tries a token signed with another key, one whose claims were
//! swapped, one from before an auth change ("revision of auth store is old"), and — on
//! raftkv — the token etcd signed at the same point with the same key. Member 2 is then
//! restarted with the public key only: it checks tokens made elsewhere, and Authenticate
//! there fails as etcd's does.
//!
//! A second test lets a token expire (a short `ttl`, ES256 keys); a third starts both
//! servers with bad options and keys and compares the messages they stop with.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use raftkv_server::token_provider::TokenProvider;

use crate::auth_enforce::{Step, masked, masks, run, steps};
use crate::etcdctl::transcript;
use crate::fixture::{Cluster, Options, Server, assert_no_differences, raftkv_bin};

/// Key files made by openssl for one test.
struct Keys {
    dir: tempfile::TempDir,
}

impl Keys {
    fn make() -> Self {
        let dir = tempfile::tempdir().expect("key dir");
        for script in [
            "openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out rsa.key",
            "openssl pkey -in rsa.key -pubout -out rsa.pub",
            "openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out other.key",
            "openssl ecparam -name prime256v1 -genkey -noout -out ec.key",
            "openssl ec -in ec.key -pubout -out ec.pub",
            "openssl ecparam -name secp384r1 -genkey -noout -out ec384.key",
            "openssl ec -in ec384.key -pubout -out ec384.pub",
        ] {
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!("{script} 2>&1"))
                .current_dir(dir.path())
                .output()
                .expect("openssl");
            assert!(
                out.status.success(),
                "{script}: {}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
        Self { dir }
    }

    fn file(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    /// The RS256 flag every member starts with.
    fn rs256(&self) -> String {
        format!(
            "--auth-token=jwt,pub-key={},priv-key={},sign-method=RS256",
            self.file("rsa.pub"),
            self.file("rsa.key")
        )
    }
}

const SETUP: &[Step] = &[
    (0, &["put", "foo/a", "1"], None),
    (1, &["put", "bar/b", "2"], None),
    (
        2,
        &["user", "add", "root:rootpw", "--interactive=false"],
        None,
    ),
    (
        0,
        &["user", "add", "alice:apw", "--interactive=false"],
        None,
    ),
    (1, &["user", "add", "bob:bpw", "--interactive=false"], None),
    (2, &["role", "add", "reader"], None),
    (0, &["role", "add", "writer"], None),
    (
        1,
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
        2,
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
    (0, &["user", "grant-role", "alice", "reader"], None),
    (1, &["user", "grant-role", "bob", "writer"], None),
    (2, &["auth", "enable"], None),
];

const SESSION: &[Step] = &[
    (0, &["get", "foo/a"], None),
    (1, &["--user", "alice:apw", "get", "foo/a"], None),
    (2, &["--user", "alice:apw", "get", "foo/", "--prefix"], None),
    (0, &["--user", "alice:apw", "get", "bar/b"], None),
    (1, &["--user", "alice:apw", "put", "foo/a", "x"], None),
    (2, &["--user", "alice:wrong", "get", "foo/a"], None),
    (0, &["--user", "nobody:x", "get", "foo/a"], None),
    (1, &["--user", "bob:bpw", "put", "bar/b", "3"], None),
    (
        2,
        &["--user", "bob:bpw", "get", "bar/b", "--consistency=s"],
        None,
    ),
    (0, &["--user", "bob:bpw", "put", "foo/a", "x"], None),
    // (Not a forbidden range in a branch: etcd 3.4.23 refuses that on the member that got
    // it and applies it on the others, with simple tokens as with JWT.)
    (
        1,
        &["--user", "bob:bpw", "txn"],
        Some("value(\"bar/b\") = \"3\"\n\nput bar/c 1\n\nget bar/b\n\n"),
    ),
    (
        2,
        &["--user", "bob:bpw", "txn"],
        Some("value(\"bar/b\") = \"3\"\n\nput bar/d 1\n\nput foo/x 1\n\n"),
    ),
    (2, &["--user", "alice:apw", "watch", "bar/b"], None),
    (0, &["--user", "alice:apw", "user", "list"], None),
    (1, &["--user", "root:rootpw", "user", "list"], None),
    (2, &["--user", "root:rootpw", "get", "", "--prefix"], None),
];

/// `curl -X POST` of `body` to `url`, with `Authorization: <token>` if given.
fn post(url: &str, token: Option<&str>, body: &str) -> String {
    let mut cmd = std::process::Command::new("curl");
    cmd.args(["-sS", "-X", "POST", url, "-d", body]);
    if let Some(t) = token {
        cmd.args(["-H", &format!("Authorization: {t}")]);
    }
    let o = cmd.output().expect("curl");
    String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr)
}

/// A gateway answer with the member-specific header fields removed.
fn without_ids(text: &str) -> String {
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(serde_json::Value::Object(mut map)) => {
            if let Some(serde_json::Value::Object(h)) = map.get_mut("header") {
                for k in ["cluster_id", "member_id", "raft_term"] {
                    h.remove(k);
                }
            }
            if map.get("token").is_some() {
                map.insert("token".into(), "<token>".into());
            }
            serde_json::Value::Object(map).to_string()
        }
        _ => text.to_string(),
    }
}

/// The gateway's Authenticate on member `i`: the token (panics on refusal).
fn authenticate(cluster: &Cluster, i: usize, user: &str, password: &str) -> String {
    let answer = post(
        &format!(
            "http://{}/v3/auth/authenticate",
            cluster.members[i].endpoint()
        ),
        None,
        &format!(r#"{{"name":"{user}","password":"{password}"}}"#),
    );
    serde_json::from_str::<serde_json::Value>(&answer)
        .ok()
        .and_then(|v| v["token"].as_str().map(str::to_string))
        .filter(|t| t.split('.').count() == 3)
        .unwrap_or_else(|| panic!("authenticate {user} on member {i}: {answer}"))
}

const FOO_A: &str = r#"{"key":"Zm9vL2E="}"#;

/// The gateway calls; `foreign`: a token for alice that etcd signed at the same point
/// (raftkv's run only). Returns the lines and alice's token.
fn gateway_steps(
    cluster: &Cluster,
    keys: &Keys,
    foreign: Option<&str>,
    out: &mut Vec<String>,
) -> String {
    let url = |i: usize, path: &str| format!("http://{}{path}", cluster.members[i].endpoint());
    let mut call = |label: &str, i: usize, path: &str, token: Option<&str>, body: &str| {
        let text = post(&url(i, path), token, body);
        out.push(format!(
            "gateway [{i}] {path} {body} ({label}): {}\n",
            without_ids(&text)
        ));
    };
    let alice = authenticate(cluster, 0, "alice", "apw");
    let bob = authenticate(cluster, 0, "bob", "bpw");
    // A token made on member 0 works on the others.
    for i in 0..3 {
        call("alice", i, "/v3/kv/range", Some(&alice), FOO_A);
    }
    call(
        "alice",
        1,
        "/v3/kv/range",
        Some(&alice),
        r#"{"key":"YmFyL2I="}"#,
    );
    call(
        "bob",
        2,
        "/v3/kv/put",
        Some(&bob),
        r#"{"key":"YmFyL2I=","value":"NA=="}"#,
    );
    call("alice", 1, "/v3/auth/user/list", Some(&alice), "{}");
    // Signed with another key; bob's claims under alice's signature; not a JWT.
    let other = match TokenProvider::from_option(&format!(
        "jwt,priv-key={},sign-method=RS256",
        keys.file("other.key")
    )) {
        Ok(TokenProvider::Jwt(jwt)) => jwt,
        other => panic!("{other:?}"),
    };
    let forged = other.assign("root", 100, SystemTime::now()).expect("sign");
    call("other key", 1, "/v3/kv/range", Some(&forged), FOO_A);
    let a: Vec<&str> = alice.split('.').collect();
    let b: Vec<&str> = bob.split('.').collect();
    let swapped = format!("{}.{}.{}", a[0], b[1], a[2]);
    call("swapped claims", 2, "/v3/kv/range", Some(&swapped), FOO_A);
    call("bogus", 0, "/v3/kv/range", Some("a.b.c"), FOO_A);
    // etcd's token for alice, made with the same key at the same auth revision.
    call(
        "etcd's",
        1,
        "/v3/kv/range",
        Some(foreign.unwrap_or(&alice)),
        FOO_A,
    );
    alice
}

/// An auth change makes older tokens stale everywhere.
fn stale_steps(cluster: &Cluster, alice: &str, out: &mut Vec<String>) {
    let line = {
        let args = ["--user", "root:rootpw", "role", "add", "extra"];
        let o = run(&cluster.members[1].endpoint(), &args, None);
        masked(
            &transcript(&format!("[1] etcdctl {}", args.join(" ")), &o),
            &masks(cluster),
        )
    };
    out.push(line);
    for i in 0..3 {
        let text = post(
            &format!("http://{}/v3/kv/range", cluster.members[i].endpoint()),
            Some(alice),
            FOO_A,
        );
        out.push(format!(
            "gateway [{i}] stale token: {}\n",
            without_ids(&text)
        ));
    }
    let fresh = authenticate(cluster, 2, "alice", "apw");
    let text = post(
        &format!("http://{}/v3/kv/range", cluster.members[0].endpoint()),
        Some(&fresh),
        FOO_A,
    );
    out.push(format!(
        "gateway [0] fresh token from [2]: {}\n",
        without_ids(&text)
    ));
}

/// Member 2 restarted with the public key only.
async fn verify_only_steps(cluster: &mut Cluster, keys: &Keys, out: &mut Vec<String>) {
    cluster.stop(2);
    cluster.push_arg(
        2,
        format!(
            "--auth-token=jwt,pub-key={},sign-method=RS256",
            keys.file("rsa.pub")
        ),
    );
    cluster.restart(2);
    cluster.wait_healthy(Duration::from_secs(30)).await;
    let cluster = &*cluster;
    tokio::task::block_in_place(|| {
        let deadline = Instant::now() + Duration::from_secs(20);
        // Until member 2 serves again (its first answers may be "no leader").
        let token = authenticate(cluster, 0, "alice", "apw");
        loop {
            let text = post(
                &format!("http://{}/v3/kv/range", cluster.members[2].endpoint()),
                Some(&token),
                FOO_A,
            );
            if text.contains("\"kvs\"") || Instant::now() > deadline {
                out.push(format!(
                    "gateway [2] verify-only, token from [0]: {}\n",
                    without_ids(&text)
                ));
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let text = post(
            &format!(
                "http://{}/v3/auth/authenticate",
                cluster.members[2].endpoint()
            ),
            None,
            r#"{"name":"alice","password":"apw"}"#,
        );
        out.push(format!(
            "gateway [2] verify-only authenticate: {}\n",
            without_ids(&text)
        ));
        let verify_only: &[Step] = &[
            (2, &["--user", "alice:apw", "get", "foo/a"], None),
            (0, &["--user", "alice:apw", "get", "foo/a"], None),
            (2, &["--user", "alice:wrong", "get", "foo/a"], None),
        ];
        steps(cluster, verify_only, out);
    });
}

async fn transcript_of(
    server: Server,
    keys: &Keys,
    foreign: Option<&str>,
) -> (Vec<String>, String) {
    let mut cluster = Cluster::start(
        server,
        3,
        Options {
            extra_args: vec![keys.rs256()],
            ..Options::default()
        },
    )
    .await;
    let mut out = Vec::new();
    let alice = tokio::task::block_in_place(|| {
        steps(&cluster, SETUP, &mut out);
        steps(&cluster, SESSION, &mut out);
        let alice = gateway_steps(&cluster, keys, foreign, &mut out);
        stale_steps(&cluster, &alice, &mut out);
        alice
    });
    verify_only_steps(&mut cluster, keys, &mut out).await;
    (out, alice)
}

fn compare(etcd: &[String], ours: &[String]) {
    let differences: Vec<String> = etcd
        .iter()
        .zip(ours)
        .filter(|(e, o)| e != o)
        .map(|(e, o)| format!("--- etcd\n{e}--- raftkv\n{o}"))
        .collect();
    assert_eq!(etcd.len(), ours.len());
    assert_no_differences(&differences);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_tokens_work_as_etcds() {
    let keys = Keys::make();
    let (etcd, etcd_token) = transcript_of(Server::Etcd, &keys, None).await;
    let (ours, _) = transcript_of(Server::Raftkv, &keys, Some(&etcd_token)).await;
    compare(&etcd, &ours);
}

/// `ttl=3s`: a token works until its `exp` second, then is an invalid token; etcdctl, which
/// authenticates again for each command, goes on working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_tokens_expire_after_their_ttl() {
    let keys = Keys::make();
    let flag = format!(
        "--auth-token=jwt,pub-key={},priv-key={},sign-method=ES256,ttl=3s",
        keys.file("ec.pub"),
        keys.file("ec.key")
    );
    let session = |server: Server| {
        let flag = flag.clone();
        async move {
            let cluster = Cluster::start(
                server,
                1,
                Options {
                    extra_args: vec![flag],
                    ..Options::default()
                },
            )
            .await;
            tokio::task::block_in_place(|| {
                let mut out = Vec::new();
                let setup: &[Step] = &[
                    (0, &["put", "k", "v"], None),
                    (0, &["user", "add", "root:r", "--interactive=false"], None),
                    (0, &["role", "add", "root"], None),
                    (0, &["user", "grant-role", "root", "root"], None),
                    (0, &["auth", "enable"], None),
                ];
                steps(&cluster, setup, &mut out);
                let token = authenticate(&cluster, 0, "root", "r");
                let made = Instant::now();
                let range = |out: &mut Vec<String>, label: &str| {
                    let text = post(
                        &format!("http://{}/v3/kv/range", cluster.members[0].endpoint()),
                        Some(&token),
                        r#"{"key":"aw=="}"#,
                    );
                    out.push(format!("{label}: {}\n", without_ids(&text)));
                };
                range(&mut out, "at once");
                // exp is the second of (made + 3 s): past it for certain 3 s after the answer.
                std::thread::sleep(
                    (made + Duration::from_millis(3100)).duration_since(Instant::now()),
                );
                range(&mut out, "after the ttl");
                let after: &[Step] = &[(0, &["--user", "root:r", "get", "k"], None)];
                steps(&cluster, after, &mut out);
                out
            })
        }
    };
    let etcd = session(Server::Etcd).await;
    let ours = session(Server::Raftkv).await;
    compare(&etcd, &ours);
}

/// Bad options and keys stop both servers with the same last message.
#[test]
fn bad_jwt_options_stop_raftkv_and_etcd_with_the_same_message() {
    let keys = Keys::make();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    let peer = crate::fixture::free_port();
    let client = crate::fixture::free_port();
    let base = |data: &str| {
        vec![
            format!("--data-dir={d}/{data}"),
            format!("--listen-peer-urls=http://127.0.0.1:{peer}"),
            format!("--initial-advertise-peer-urls=http://127.0.0.1:{peer}"),
            format!("--initial-cluster=default=http://127.0.0.1:{peer}"),
            format!("--listen-client-urls=http://127.0.0.1:{client}"),
            format!("--advertise-client-urls=http://127.0.0.1:{client}"),
        ]
    };
    let f = |name: &str| keys.file(name);
    for (case, (option, message)) in [
        ("jwt".to_string(), "auth: invalid auth options"),
        ("foo".to_string(), "auth: invalid auth options"),
        (
            "jwt,sign-method=RS256,x".to_string(),
            "auth: invalid auth options",
        ),
        (
            format!(
                "jwt,priv-key={},priv-key={},sign-method=RS256",
                f("rsa.key"),
                f("rsa.key")
            ),
            "auth: invalid auth options",
        ),
        (
            format!("jwt,priv-key={},sign-method=RS256,ttl=5x", f("rsa.key")),
            "auth: invalid auth options",
        ),
        (
            "jwt,priv-key=/nonexistent/k,sign-method=RS256".to_string(),
            "auth: invalid auth options",
        ),
        (
            "jwt,sign-method=RS256".to_string(),
            "auth: missing key data",
        ),
        (
            format!("jwt,priv-key={},sign-method=RS256", f("ec.key")),
            "x509: failed to parse private key (use ParseECPrivateKey instead for this key format)",
        ),
        (
            format!("jwt,priv-key={},sign-method=ES256", f("rsa.key")),
            "key is not a valid ECDSA private key",
        ),
        (
            format!("jwt,pub-key={},sign-method=RS256", f("rsa.key")),
            "x509: malformed tbs certificate",
        ),
        (
            format!("jwt,pub-key={},sign-method=RS256", f("ec.pub")),
            "key is not a valid RSA public key",
        ),
        (
            format!(
                "jwt,priv-key={},pub-key={},sign-method=ES256",
                f("ec.key"),
                f("ec384.pub")
            ),
            "auth: public and private keys don't match",
        ),
        (
            format!("jwt,priv-key={},sign-method=none", f("rsa.key")),
            "unsupported signing method: *jwt.signingMethodNone",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        for (i, program) in [Path::new("etcd"), raftkv_bin()].into_iter().enumerate() {
            let mut args = base(&format!("{case}-{i}"));
            args.push(format!("--auth-token={option}"));
            let (code, out) = crate::tls::run_to_exit(program, &args);
            assert_eq!(code, Some(1), "{program:?} {option}: {out}");
            // etcd's last line: "C | etcdmain: <message>"; raftkv's: "Error: <message>".
            let fatal = out
                .lines()
                .find(|l| l.contains("C | etcdmain: ") || l.starts_with("Error: "))
                .unwrap_or_else(|| panic!("{program:?} {option}: no fatal line in:\n{out}"));
            assert!(
                fatal.ends_with(&format!(": {message}")),
                "{program:?} {option}: want {message:?} in:\n{out}"
            );
        }
    }
}
