//! The HTTP side of the client port, differentially: the same curl session against a raftkv
//! cluster and a real etcd cluster — `/health`, `/version` and the JSON gateway under `/v3/`
//! and `/v3beta/` — with status lines, content types and bodies compared (member and cluster
//! ids and terms masked; the text of a JSON syntax error, which comes from
//! each server's own JSON decoder, masked too).

use std::process::Command;

use crate::fixture::{Cluster, Options, Server};

/// `"<field>":"<digits>"` with the digits replaced.
fn mask_field(text: &str, field: &str) -> String {
    let needle = format!("\"{field}\":\"");
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find(&needle) {
        out.push_str(&rest[..at + needle.len()]);
        rest = &rest[at + needle.len()..];
        let end = rest.find('"').unwrap_or(rest.len());
        out.push_str("<masked>");
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// One curl call: `method path [body]` → "status line / content type / body".
pub(crate) fn curl(endpoint: &str, method: &str, path: &str, body: Option<&str>) -> String {
    curl_for(endpoint, method, path, body, None)
}

/// Like [`curl`], for a stream that is read for `seconds` at most.
fn curl_for(
    endpoint: &str,
    method: &str,
    path: &str,
    body: Option<&str>,
    seconds: Option<&str>,
) -> String {
    let mut cmd = Command::new("curl");
    if let Some(seconds) = seconds {
        cmd.args(["-N", "--max-time", seconds]);
    }
    cmd.args([
        "-s",
        "-i",
        "-X",
        method,
        &format!("http://{endpoint}{path}"),
    ]);
    if let Some(body) = body {
        cmd.args([
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            body,
        ]);
    }
    let out = cmd.output().expect("curl (scripts/setup installs it)");
    let text = String::from_utf8_lossy(&out.stdout).replace("\r\n", "\n");
    let (head, body) = text.split_once("\n\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines.next().unwrap_or_default().trim().to_string();
    let content_type = lines
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-type:")
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_default();
    // etcd ends an error body with an HTTP trailer (Grpc-Trailer-Content-Type), which curl
    // prints after the body; raftkv sends no trailer (hyper sends them only to a client that
    // asked with "TE: trailers"), so it is left out here.
    let body = body.split("Grpc-Trailer-").next().unwrap_or_default();
    let mut body = body.to_string();
    for field in ["cluster_id", "member_id", "raft_term"] {
        body = mask_field(&body, field);
    }
    format!("{method} {path}\n{status}\ncontent-type: {content_type}\n{body}\n")
}

fn session(endpoint: &str) -> Vec<String> {
    let mut t = Vec::new();
    let mut call = |method: &str, path: &str, body: Option<&str>| {
        let line = curl(endpoint, method, path, body);
        t.push(match body {
            Some(b) => format!("{b}\n{line}"),
            None => line,
        });
    };
    call("GET", "/version", None);
    call("POST", "/version", None);
    call("GET", "/health", None);
    call("POST", "/health", None);
    // foo = Zm9v, bar = YmFy, baz = YmF6, fop = Zm9w
    call(
        "POST",
        "/v3/kv/put",
        Some(r#"{"key":"Zm9v","value":"YmFy"}"#),
    );
    call(
        "POST",
        "/v3/kv/put",
        Some(r#"{"key":"Zm9v","value":"YmF6","prev_kv":true}"#),
    );
    call("POST", "/v3/kv/range", Some(r#"{"key":"Zm9v"}"#));
    call("POST", "/v3beta/kv/range", Some(r#"{"key":"Zm9v"}"#));
    call(
        "POST",
        "/v3/kv/range",
        Some(r#"{"key":"Zm9v","range_end":"Zm9w","count_only":true}"#),
    );
    call("POST", "/v3/kv/range", Some(r#"{"key":"bm9uZQ=="}"#));
    call("POST", "/v3/kv/range", Some(r#"{}"#));
    call(
        "POST",
        "/v3/kv/txn",
        Some(
            r#"{"compare":[{"key":"Zm9v","result":"EQUAL","target":"VALUE","value":"YmF6"}],"success":[{"request_put":{"key":"Zm9v","value":"YmFy"}}],"failure":[{"request_range":{"key":"Zm9v"}}]}"#,
        ),
    );
    call(
        "POST",
        "/v3/kv/txn",
        Some(
            r#"{"compare":[{"key":"Zm9v","result":"EQUAL","target":"VALUE","value":"YmF6"}],"success":[{"request_put":{"key":"Zm9v","value":"YmFy"}}],"failure":[{"request_range":{"key":"Zm9v"}}]}"#,
        ),
    );
    call("POST", "/v3/kv/put", Some(r#"{"key":"","value":"YmFy"}"#));
    // The Auth service's paths (auth stays disabled: raftkv does not enforce permissions yet).
    for (path, body) in [
        ("/v3/auth/role/add", r#"{"name":"r1"}"#),
        ("/v3/auth/role/add", r#"{"name":"r1"}"#),
        (
            "/v3/auth/role/grant",
            r#"{"name":"r1","perm":{"permType":"READWRITE","key":"Zm9v","range_end":"Zm9w"}}"#,
        ),
        ("/v3/auth/role/get", r#"{"role":"r1"}"#),
        ("/v3/auth/user/add", r#"{"name":"u1","password":"pw"}"#),
        ("/v3/auth/user/grant", r#"{"user":"u1","role":"r1"}"#),
        ("/v3/auth/user/get", r#"{"name":"u1"}"#),
        ("/v3/auth/user/list", "{}"),
        ("/v3/auth/role/list", "{}"),
        (
            "/v3/auth/user/changepw",
            r#"{"name":"u1","password":"pw2"}"#,
        ),
        ("/v3/auth/authenticate", r#"{"name":"u1","password":"pw2"}"#),
        ("/v3/auth/enable", "{}"),
        ("/v3/auth/user/revoke", r#"{"name":"u1","role":"r1"}"#),
        (
            "/v3/auth/role/revoke",
            r#"{"role":"r1","key":"Zm9v","range_end":"Zm9w"}"#,
        ),
        ("/v3/auth/user/delete", r#"{"name":"u1"}"#),
        ("/v3/auth/role/delete", r#"{"role":"r1"}"#),
        ("/v3/auth/user/get", r#"{"name":"u1"}"#),
        ("/v3/auth/disable", "{}"),
    ] {
        call("POST", path, Some(body));
    }
    call(
        "POST",
        "/v3/lease/grant",
        Some(r#"{"TTL":"60","ID":"4660"}"#),
    );
    call(
        "POST",
        "/v3/lease/grant",
        Some(r#"{"TTL":"60","ID":"4660"}"#),
    );
    call(
        "POST",
        "/v3/kv/put",
        Some(r#"{"key":"bGVhc2Vk","value":"dg==","lease":"4660"}"#),
    );
    call(
        "POST",
        "/v3/kv/put",
        Some(r#"{"key":"eA==","lease":"999"}"#),
    );
    call(
        "POST",
        "/v3/kv/lease/timetolive",
        Some(r#"{"ID":"4660","keys":true}"#),
    );
    call("POST", "/v3/lease/timetolive", Some(r#"{"ID":"4661"}"#));
    call("POST", "/v3/lease/leases", Some("{}"));
    call("POST", "/v3/lease/revoke", Some(r#"{"ID":"4660"}"#));
    call("POST", "/v3/kv/lease/revoke", Some(r#"{"ID":"4660"}"#));
    call(
        "POST",
        "/v3/kv/deleterange",
        Some(r#"{"key":"Zm9v","prev_kv":true}"#),
    );
    call("POST", "/v3/kv/compaction", Some(r#"{"revision":"3"}"#));
    call(
        "POST",
        "/v3/kv/range",
        Some(r#"{"key":"Zm9v","revision":"2"}"#),
    );
    call("POST", "/v3/kv/compaction", Some(r#"{"revision":"100"}"#));
    call("POST", "/v3/lock/lock", Some(r#"{"name":"bG9jaw=="}"#));
    call("POST", "/v3/election/leader", Some(r#"{"name":"ZWw="}"#));
    // A remaining TTL depends on when the call ran.
    for line in t
        .iter_mut()
        .filter(|l| l.contains(r#""ID":"4660","keys":true"#))
    {
        *line = mask_field(line, "TTL");
    }
    // The lock's key ends with the lease the server granted for it.
    for line in t.iter_mut().filter(|l| l.contains("/v3/lock/lock")) {
        *line = mask_field(line, "key");
    }
    // Streams: a watch from the revision after the compaction (catch-up, then open until
    // curl gives up), a watch from now with a progress request (asked on the catching-up
    // watch, etcd 3.4.23 answers ahead of the events still to come, etcd #15220; raftkv
    // waits as later etcd releases do, see watch::a_progress_answer_never_runs_ahead_of_events),
    // a keep-alive stream of two requests (it ends after the last answer), and an
    // election's observer.
    let stream = |path: &str, body: &str, seconds: &str| {
        format!(
            "{body}\n{}",
            curl_for(endpoint, "POST", path, Some(body), Some(seconds))
        )
    };
    t.push(stream(
        "/v3/watch",
        r#"{"create_request":{"key":"Zm9v","start_revision":"4","prev_kv":true}}"#,
        "2",
    ));
    t.push(stream(
        "/v3/watch",
        r#"{"create_request":{"key":"Zm9v"}}{"progress_request":{}}"#,
        "2",
    ));
    t.push(curl(
        endpoint,
        "POST",
        "/v3/lease/grant",
        Some(r#"{"TTL":"60","ID":"4662"}"#),
    ));
    t.push(stream(
        "/v3/lease/keepalive",
        r#"{"ID":"4662"} {"ID":"4662"}"#,
        "5",
    ));
    t.push(stream("/v3/lease/keepalive", r#"{"ID":"404"}"#, "5"));
    t.push(curl(
        endpoint,
        "POST",
        "/v3/election/campaign",
        Some(r#"{"name":"ZWw=","lease":"4662","value":"djE="}"#),
    ));
    t.push(stream("/v3/election/observe", r#"{"name":"ZWw="}"#, "2"));
    t.push(stream("/v3/watch", "", "2"));
    // A JSON syntax error: the status and code are compared, the decoder's words are not.
    let bad = curl(endpoint, "POST", "/v3/kv/range", Some(r#"{"key":"#));
    let masked: String = bad
        .lines()
        .map(|l| {
            if l.starts_with('{') {
                let code = l.find("\"code\":").map(|at| &l[at..]).unwrap_or("no code");
                format!("<decoder message> {code}")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    t.push(masked);
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_gateway_health_and_version_match_real_etcd() {
    let mut transcripts = Vec::new();
    for server in [Server::Raftkv, Server::Etcd] {
        let cluster = Cluster::start(server, 3, Options::default()).await;
        let endpoint = cluster.members[0].endpoint();
        transcripts.push(
            tokio::task::spawn_blocking(move || session(&endpoint))
                .await
                .unwrap(),
        );
    }
    let (ours, reference) = (&transcripts[0], &transcripts[1]);
    let differences: Vec<String> = ours
        .iter()
        .zip(reference)
        .filter(|(o, r)| o != r)
        .map(|(o, r)| format!("--- etcd\n{r}--- raftkv\n{o}"))
        .collect();
    eprintln!("{}", reference.join("\n"));
    assert_eq!(ours.len(), reference.len());
    crate::fixture::assert_no_differences(&differences);
}

/// The python etcd3gw client (gateway only) in the virtualenv `scripts/setup` makes.
fn etcd3gw_session(endpoint: &str) -> String {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = root.join("target/py/bin/python");
    let script = root.join("tests/cluster/py/etcd3gw_session.py");
    let out = Command::new(&python)
        .arg(&script)
        .arg(endpoint)
        .output()
        .unwrap_or_else(|e| panic!("{} (scripts/setup makes it): {e}", python.display()));
    format!(
        "{}exit {:?}\n{}",
        String::from_utf8_lossy(&out.stdout),
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_etcd3gw_client_works_against_raftkv_as_against_etcd() {
    let mut outputs = Vec::new();
    for server in [Server::Raftkv, Server::Etcd] {
        let cluster = Cluster::start(server, 3, Options::default()).await;
        let endpoint = cluster.members[1].endpoint();
        outputs.push(
            tokio::task::spawn_blocking(move || etcd3gw_session(&endpoint))
                .await
                .unwrap(),
        );
    }
    eprintln!("{}", outputs[1]);
    assert!(
        outputs[1].contains("exit Some(0)"),
        "etcd3gw failed against etcd: {}",
        outputs[1]
    );
    assert_eq!(
        outputs[0], outputs[1],
        "raftkv (left) and etcd (right) differ"
    );
}

/// A member answer's `"members":[…]` replaced by how many there are (ids and ports differ
/// between the clusters, and members come in id order).
fn mask_members(text: &str) -> String {
    let Some(at) = text.find("\"members\":[") else {
        return text.to_string();
    };
    let end = text.rfind(']').unwrap_or(text.len());
    let count = text[at..end].matches("\"ID\":").count();
    format!("{}\"members\":<{count}>{}", &text[..at], &text[end + 1..])
}

/// A snapshot stream's body summed up: how its first and last lines are built, and the
/// size of the last blob (etcd's last part is the 32-byte SHA-256 alone).
fn snapshot_shape(text: &str) -> String {
    let (head, body) = text.split_once("\n\n").unwrap_or((text, ""));
    let mut head: Vec<String> = head
        .lines()
        .filter(|l| l.starts_with("HTTP/") || l.to_ascii_lowercase().starts_with("content-type:"))
        .map(str::to_ascii_lowercase)
        .collect();
    head.sort();
    let lines: Vec<&str> = body.lines().filter(|l| !l.is_empty()).collect();
    let shape = |line: &str| -> String {
        let value: serde_json::Value = serde_json::from_str(line).unwrap_or_default();
        let result = &value["result"];
        let keys: Vec<&String> = result
            .as_object()
            .map(|o| o.keys().collect())
            .unwrap_or_default();
        // raftkv's file is its own format (compressed): only the SHA-256 part's size is
        // etcd's.
        let blob = result["blob"].as_str().unwrap_or("").len();
        let blob = if blob == 44 {
            "44".to_string()
        } else {
            format!("non-empty: {}", blob > 0)
        };
        format!("keys {keys:?}, blob of {blob} base64 characters")
    };
    format!(
        "{}\nfirst: {}\nlast: {}\nmore than one part: {}\n",
        head.join("\n"),
        lines.first().map_or("none".into(), |l| shape(l)),
        lines.last().map_or("none".into(), |l| shape(l)),
        lines.len() > 1
    )
}

/// The maintenance and cluster paths of the gateway, against a cluster's leader.
async fn maintenance_session(cluster: &Cluster) -> Vec<String> {
    let leader = cluster.leader().await.expect("a leader");
    let endpoint = cluster.members[leader].endpoint();
    let mut ids = Vec::new();
    for i in 0..cluster.members.len() {
        ids.push(cluster.member_id(i).await);
    }
    let leader_id = ids[leader];
    let other_id = ids[(leader + 1) % ids.len()];
    let other = (leader + 1) % cluster.members.len();
    let other_url = cluster.members[other].advertise_url();
    let learner_url = format!("http://127.0.0.1:{}", crate::fixture::free_port());
    // Members named by role (which index leads differs between runs).
    let role = |i: usize| match i {
        _ if i == leader => "leader",
        _ if i == other => "other",
        _ => "third",
    };
    let ports: Vec<(String, String)> = cluster
        .members
        .iter()
        .enumerate()
        .map(|(i, m)| (m.advertise_url(), format!("<{} peer>", role(i))))
        .chain([(learner_url.clone(), "<learner>".to_string())])
        .collect();
    let names: Vec<String> = (0..ids.len())
        .map(|i| format!("<{} id>", role(i)))
        .collect();
    tokio::task::spawn_blocking(move || {
        let mut t = Vec::new();
        let mut learner_id = String::new();
        let mut call = |path: &str, body: &str| -> String {
            let answer = curl(&endpoint, "POST", path, Some(body));
            let mut line = format!("{body}\n{}", mask_members(&answer));
            line = crate::etcdctl::mask_number_after(&line, "\"hash\":");
            for (id, name) in ids.iter().zip(&names) {
                line = line.replace(&id.to_string(), name);
            }
            for (url, name) in &ports {
                line = line.replace(url, name);
            }
            t.push(line);
            answer
        };
        let leader = format!("{leader_id}");
        let other = format!("{other_id}");
        call("/v3/maintenance/alarm", "{}");
        call(
            "/v3/maintenance/alarm",
            &format!(r#"{{"action":"ACTIVATE","memberID":"{leader}","alarm":"NOSPACE"}}"#),
        );
        call("/v3/maintenance/alarm", r#"{"action":"GET"}"#);
        call(
            "/v3/maintenance/alarm",
            &format!(r#"{{"action":"DEACTIVATE","memberID":"{leader}","alarm":"NOSPACE"}}"#),
        );
        call("/v3beta/maintenance/alarm", r#"{"action":"GET"}"#);
        call("/v3/maintenance/defragment", "{}");
        call("/v3beta/maintenance/defragment", "");
        call("/v3/maintenance/hash", "{}");
        call("/v3/maintenance/hash", r#"{"revision":"1"}"#);
        call("/v3/maintenance/hashkv", "{}");
        call("/v3/maintenance/transfer-leadership", r#"{"targetID":"1"}"#);
        call(
            "/v3/maintenance/transfer-leadership",
            &format!(r#"{{"targetID":"{leader}"}}"#),
        );
        call(
            "/v3/cluster/member/update",
            r#"{"ID":"1","peerURLs":["http://127.0.0.1:1"]}"#,
        );
        call(
            "/v3/cluster/member/update",
            &format!(r#"{{"ID":"{other}","peerURLs":["{other_url}"]}}"#),
        );
        let added = call(
            "/v3/cluster/member/add",
            &format!(r#"{{"peerURLs":["{learner_url}"],"isLearner":true}}"#),
        );
        if let Some(body) = added.lines().find(|l| l.starts_with('{')) {
            let value: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
            learner_id = value["member"]["ID"].as_str().unwrap_or("").to_string();
        }
        call(
            "/v3/cluster/member/promote",
            &format!(r#"{{"ID":"{learner_id}"}}"#),
        );
        call(
            "/v3/cluster/member/remove",
            &format!(r#"{{"ID":"{learner_id}"}}"#),
        );
        call("/v3/cluster/member/remove", r#"{"ID":"1"}"#);
        call("/v3beta/cluster/member/promote", r#"{"ID":"1"}"#);
        // The learner's id is random.
        for line in t.iter_mut().filter(|_| !learner_id.is_empty()) {
            *line = line.replace(&learner_id, "<learner id>");
        }
        let snapshot = curl_raw(&endpoint, "/v3/maintenance/snapshot", "{}");
        t.push(format!("snapshot\n{}", snapshot_shape(&snapshot)));
        t
    })
    .await
    .expect("the session ran")
}

/// curl's whole answer (status line, headers, body) to a POST.
fn curl_raw(endpoint: &str, path: &str, body: &str) -> String {
    let out = Command::new("curl")
        .args([
            "-s",
            "-i",
            "-X",
            "POST",
            &format!("http://{endpoint}{path}"),
        ])
        .args([
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            body,
        ])
        .output()
        .expect("curl");
    String::from_utf8_lossy(&out.stdout).replace("\r\n", "\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_maintenance_and_cluster_paths_match_real_etcd() {
    let mut transcripts = Vec::new();
    for server in [Server::Raftkv, Server::Etcd] {
        let cluster = Cluster::start(server, 3, Options::default()).await;
        crate::fixture::etcdctl_ok(&cluster.endpoints(), &["put", "k", "v"]);
        // etcd adds a member only once every member has been connected for 5 s.
        tokio::time::sleep(std::time::Duration::from_secs(6)).await;
        transcripts.push(maintenance_session(&cluster).await);
    }
    let (ours, reference) = (&transcripts[0], &transcripts[1]);
    let differences: Vec<String> = ours
        .iter()
        .zip(reference)
        .filter(|(o, r)| o != r)
        .map(|(o, r)| format!("--- etcd\n{r}--- raftkv\n{o}"))
        .collect();
    eprintln!("{}", reference.join("\n"));
    assert_eq!(ours.len(), reference.len());
    crate::fixture::assert_no_differences(&differences);
}
