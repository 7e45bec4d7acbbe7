//! raftkvctl's lease commands beside etcdctl's: the same lease session (grant, attach,
//! time-to-live, list, keep-alive once and as a stream, revoke, and the errors around them)
//! run by etcdctl and by raftkvctl against a raftkv cluster, and by both against a real etcd
//! cluster; each tool's transcript must match etcdctl's on the same kind of server once lease
//! ids, cluster/member ids, terms and remaining seconds are masked.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::etcdctl::{mask_number_after, transcript};
use crate::fixture::{
    Cluster, Options, Server, assert_no_differences, etcdctl, raftkvctl_bin, run_with_stdin,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tool {
    Etcdctl,
    Raftkvctl,
}

fn command(tool: Tool, endpoint: &str, args: &[&str]) -> Command {
    let mut cmd = match tool {
        Tool::Etcdctl => {
            let mut cmd = Command::new("etcdctl");
            cmd.env("ETCDCTL_API", "3");
            cmd
        }
        Tool::Raftkvctl => Command::new(raftkvctl_bin()),
    };
    cmd.arg(format!("--endpoints={endpoint}")).args(args);
    cmd
}

fn run(tool: Tool, endpoint: &str, args: &[&str]) -> std::process::Output {
    match tool {
        Tool::Etcdctl => etcdctl(endpoint, args, None),
        Tool::Raftkvctl => run_with_stdin(command(tool, endpoint, args), None),
    }
}

/// The session: `{n}` stands for the n-th lease granted so far (hex, as etcdctl takes it).
const SESSION: &[&[&str]] = &[
    &["lease", "grant", "60"],
    &["lease", "grant", "30", "-w", "json"],
    &["lease", "grant", "5", "-w", "fields"],
    &["lease", "grant", "1"],
    &["lease", "revoke", "{3}", "-w", "json"],
    &["lease", "grant", "abc"],
    &["lease", "grant"],
    &["lease", "grant", "9000000001"],
    &["lease", "revoke", "{1}"],
    &["lease", "revoke", "{1}", "-w", "json"],
    &["lease", "revoke", "{2}", "-w", "fields"],
    &["lease", "revoke", "zz"],
    &["put", "--lease", "{0}", "k1", "v1"],
    &["put", "k2", "v2", "--lease={0}", "-w", "json"],
    &["put", "--lease", "zz", "k3", "v"],
    &["put", "--lease", "1234abcd", "k3", "v"],
    &["get", "k1", "-w", "json"],
    &["get", "k2", "-w", "fields"],
    &["lease", "timetolive", "{0}"],
    &["lease", "timetolive", "{0}", "-w", "json"],
    &["lease", "timetolive", "{0}", "-w", "fields"],
    // A put without the lease detaches the key (one key left: their order is unspecified).
    &["put", "k2", "v3"],
    &["lease", "timetolive", "{0}", "--keys"],
    &["lease", "timetolive", "--keys", "{0}", "-w", "json"],
    &["lease", "timetolive", "{0}", "--keys", "-w", "fields"],
    &["lease", "timetolive", "99999"],
    &["lease", "timetolive", "99999", "-w", "json"],
    &["lease", "timetolive", "99999", "-w", "fields"],
    &["lease", "timetolive", "fffffffffffffffb"],
    &["lease", "timetolive"],
    &["lease", "list"],
    &["lease", "list", "-w", "json"],
    &["lease", "list", "-w", "fields"],
    &["lease", "keep-alive", "--once", "{0}"],
    &["lease", "keep-alive", "--once", "{0}", "-w", "json"],
    &["lease", "keep-alive", "--once", "{0}", "-w", "fields"],
    &["lease", "keep-alive", "--once", "99999"],
    &["lease", "keep-alive", "--once", "99999", "-w", "json"],
    &["lease", "keep-alive", "99999"],
    &["lease", "keep-alive", "99999", "-w", "json"],
    &["lease", "revoke", "{0}"],
    &["get", "k", "--prefix"],
    &["lease", "timetolive", "{0}"],
    &["lease", "revoke", "{0}"],
    &["lease", "list"],
];

/// The lease a grant printed (simple, json or fields), in hex.
fn granted(stdout: &str) -> Option<String> {
    if let Some(rest) = stdout.strip_prefix("lease ") {
        return rest.split_whitespace().next().map(str::to_string);
    }
    for key in ["\"ID\":", "\"ID\" : "] {
        if let Some(at) = stdout.find(key) {
            let digits: String = stdout[at + key.len()..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            let id: i64 = digits.parse().ok()?;
            return Some(format!("{id:016x}"));
        }
    }
    None
}

/// `text` with each granted lease (hex, and decimal as json and fields print it) named by its
/// place, and the seconds a lease has left masked.
fn mask_leases(text: &str, leases: &[String], command: &str) -> String {
    let mut out = text.to_string();
    for (n, hex) in leases.iter().enumerate() {
        let decimal = i64::from_str_radix(hex, 16).expect("hex id").to_string();
        out = out
            .replace(hex.as_str(), &format!("<L{n}>"))
            .replace(&decimal, &format!("<L{n}>"));
    }
    let mut keys = vec!["remaining(", "\"ttl\":"];
    if command.contains("timetolive") {
        keys.push("\"TTL\" : ");
    }
    out.lines()
        .map(|line| {
            let mut line = line.to_string();
            for key in &keys {
                line = mask_number_after(&line, key);
            }
            line + "\n"
        })
        .collect()
}

fn substitute(args: &[&str], leases: &[String]) -> Vec<String> {
    args.iter()
        .map(|a| {
            let mut a = a.to_string();
            for (n, hex) in leases.iter().enumerate() {
                a = a.replace(&format!("{{{n}}}"), hex);
            }
            a
        })
        .collect()
}

fn session(tool: Tool, endpoint: &str) -> Vec<String> {
    let mut leases: Vec<String> = Vec::new();
    let mut out = Vec::new();
    for args in SESSION {
        let real = substitute(args, &leases);
        let real: Vec<&str> = real.iter().map(String::as_str).collect();
        let output = run(tool, endpoint, &real);
        if args[..2] == ["lease", "grant"] && output.status.success() {
            let id = granted(&String::from_utf8_lossy(&output.stdout))
                .unwrap_or_else(|| panic!("no lease in the output of {real:?}"));
            leases.push(id);
        }
        let line = args.join(" ");
        out.push(mask_leases(&transcript(&line, &output), &leases, &line));
    }
    // keep-alive as a stream: answers every TTL/3 seconds until the lease is revoked.
    let line = "lease grant 6 / lease keep-alive {4} / lease revoke {4} after 3 s";
    let grant = run(tool, endpoint, &["lease", "grant", "6"]);
    let id = granted(&String::from_utf8_lossy(&grant.stdout)).expect("a lease");
    leases.push(id.clone());
    let mut keep_alive = command(tool, endpoint, &["lease", "keep-alive", &id]);
    let child = keep_alive
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting keep-alive");
    std::thread::sleep(Duration::from_secs(3));
    let revoke = run(tool, endpoint, &["lease", "revoke", &id]);
    // It ends by itself at its next renewal (within 2 s); killed after 8 s if it does not.
    let started = Instant::now();
    let mut child = child;
    while child.try_wait().expect("polling keep-alive").is_none()
        && started.elapsed() < Duration::from_secs(8)
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    let ended = child.try_wait().expect("polling keep-alive").is_some();
    if !ended {
        let _ = child.kill();
    }
    let kept = child.wait_with_output().expect("keep-alive output");
    let line = format!("{line} (ended by itself: {ended})");
    let line = line.as_str();
    out.push(mask_leases(
        &format!(
            "{}{}",
            transcript(line, &grant),
            transcript("", &kept) + &transcript("", &revoke)
        ),
        &leases,
        line,
    ));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raftkvctl_lease_commands_match_etcdctl_on_raftkv_and_on_etcd() {
    let mut differences = Vec::new();
    for server in [Server::Raftkv, Server::Etcd] {
        let mut runs = Vec::new();
        for tool in [Tool::Etcdctl, Tool::Raftkvctl] {
            let cluster = Cluster::start(server, 3, Options::default()).await;
            // One member for both tools: headers name the member that answered, and a
            // follower's revision may trail the leader's for a moment.
            let endpoint = cluster.members[0].endpoint();
            let transcript = tokio::task::block_in_place(|| session(tool, &endpoint));
            runs.push(transcript);
        }
        for (want, got) in runs[0].iter().zip(&runs[1]) {
            if want != got {
                differences.push(format!(
                    "--- etcdctl on {server:?}\n{want}--- raftkvctl on {server:?}\n{got}"
                ));
            }
        }
    }
    assert_no_differences(&differences);
}

/// raftkv-client's lease calls, as a transcript of what each call returned.
async fn client_transcript(endpoints: &str) -> Vec<String> {
    use raftkv_client::Client;
    let client = Client::new(endpoints.split(','));
    let mut t = Vec::new();
    let picked = client.lease_grant(60, 0).await.expect("grant");
    t.push(format!(
        "grant 60: positive id {}, ttl {}",
        picked.id > 0,
        picked.ttl
    ));
    let mine = client.lease_grant(1, 0x1234).await.expect("grant 0x1234");
    t.push(format!("grant 1 as 0x1234: {:x} ttl {}", mine.id, mine.ttl));
    let again = client.lease_grant(60, 0x1234).await.expect_err("exists");
    t.push(format!("again: {:?} {again}", again.code()));
    let big = client
        .lease_grant(9_000_000_001, 0)
        .await
        .expect_err("too big");
    t.push(format!("too big: {:?} {big}", big.code()));
    client
        .put_with_lease("k", "v", picked.id)
        .await
        .expect("put with lease");
    let kv = client.get("k").await.expect("get").expect("k");
    t.push(format!("k attached: {}", kv.lease == picked.id));
    let missing = client
        .put_with_lease("k2", "v", 0x999)
        .await
        .expect_err("unknown lease");
    t.push(format!(
        "put with unknown lease: not found {}",
        missing.is_lease_not_found()
    ));
    let ttl = client
        .lease_time_to_live(picked.id, true)
        .await
        .expect("ttl");
    t.push(format!(
        "ttl: granted {} left in 55..=60 {} keys {:?}",
        ttl.granted_ttl,
        (55..=60).contains(&ttl.ttl),
        ttl.keys
    ));
    let unknown = client.lease_time_to_live(0x999, true).await.expect("ttl");
    t.push(format!(
        "ttl of unknown: {} {} {:?}",
        unknown.ttl, unknown.granted_ttl, unknown.keys
    ));
    let mut listed: Vec<i64> = client
        .lease_leases()
        .await
        .expect("leases")
        .leases
        .iter()
        .map(|l| l.id)
        .collect();
    listed.sort();
    let mut want = vec![picked.id, 0x1234];
    want.sort();
    t.push(format!("listed the two: {}", listed == want));
    let once = client
        .lease_keep_alive_once(picked.id)
        .await
        .expect("renewed");
    t.push(format!("once: {}", once.ttl));
    let mut stream = client.lease_keep_alive(picked.id).await.expect("stream");
    let first = stream.next().await.expect("answer").expect("renewed");
    stream.keep_alive(picked.id).expect("sent");
    let second = stream.next().await.expect("answer").expect("renewed");
    t.push(format!("stream: {} {}", first.ttl, second.ttl));
    drop(stream);
    client.lease_revoke(picked.id).await.expect("revoke");
    t.push(format!(
        "k after revoke: {:?}",
        client.get("k").await.expect("get")
    ));
    let twice = client.lease_revoke(picked.id).await.expect_err("gone");
    t.push(format!(
        "revoke again: not found {}",
        twice.is_lease_not_found()
    ));
    let gone = client
        .lease_keep_alive_once(picked.id)
        .await
        .expect_err("gone");
    t.push(format!(
        "once after revoke: not found {}",
        gone.is_lease_not_found()
    ));
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_lease_calls_answer_alike_on_raftkv_and_on_etcd() {
    let mut runs = Vec::new();
    for server in [Server::Raftkv, Server::Etcd] {
        let cluster = Cluster::start(server, 3, Options::default()).await;
        runs.push(client_transcript(&cluster.endpoints()).await);
    }
    assert_eq!(runs[0], runs[1], "raftkv (left) and etcd (right)");
    assert!(runs[1].contains(&"once: 60".to_string()), "{:?}", runs[1]);
}
