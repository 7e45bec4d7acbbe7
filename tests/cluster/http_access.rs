//! The HTTP side's access control against a real etcd: CORS headers (`--cors`), browser
//! preflights (`OPTIONS` on any path), `--host-whitelist`'s refusal of unknown `Host`
//! values (DNS rebinding), and the gateway's error trailer, with the same curl calls against one raftkv member and one etcd
//! member per setting, status lines, the headers that matter and bodies compared.

use std::process::Command;

use crate::fixture::{Cluster, Options, Server, assert_no_differences};

/// `method path` with extra request headers → status line, the access headers, content
/// type, and the body (unless `mask_body`, for bodies holding member ids).
fn call(endpoint: &str, method: &str, path: &str, headers: &[&str], mask_body: bool) -> String {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-i", "-X", method]);
    for h in headers {
        cmd.args(["-H", h]);
    }
    if method == "POST" {
        let body = if path == "/v3/kv/range" {
            r#"{"key":"YQ==","revision":"99999"}"# // a future revision: an error the server gives
        } else {
            r#"{"key":"YQ==","value":"Yg=="}"#
        };
        cmd.args(["--data-binary", body]);
    }
    cmd.arg(format!("http://{endpoint}{path}"));
    let out = cmd.output().expect("curl (scripts/setup installs it)");
    let text = String::from_utf8_lossy(&out.stdout).replace("\r\n", "\n");
    let (head, body) = text.split_once("\n\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines.next().unwrap_or_default().to_string();
    let mut kept: Vec<String> = lines
        .filter_map(|l| {
            let (name, value) = l.split_once(':')?;
            let name = name.to_ascii_lowercase();
            let keep = name.starts_with("access-control-")
                || name == "content-type"
                || name == "x-content-type-options"
                || name == "trailer"
                || name == "transfer-encoding"
                || name == "content-length" && method == "OPTIONS";
            keep.then(|| format!("{name}:{value}"))
        })
        .collect();
    kept.sort();
    // Header names are case-insensitive (Go writes them capitalised, hyper in lower case),
    // the trailer's name in the body too.
    let body = body.replace("Grpc-Trailer-Content-Type:", "grpc-trailer-content-type:");
    let body = if mask_body { "<masked>" } else { &body };
    format!(
        "{method} {path} {headers:?}\n  {status}\n  {}\n  {body:?}",
        kept.join("\n  ")
    )
}

/// The calls, against one member.
fn session(endpoint: &str) -> Vec<String> {
    let mut out = Vec::new();
    for path in [
        "/v3/kv/range",
        "/health",
        "/version",
        "/metrics",
        "/no/such/path",
    ] {
        out.push(call(endpoint, "OPTIONS", path, &[], false));
    }
    out.push(call(endpoint, "GET", "/no/such/path", &[], false));
    // A call the server refuses: the gateway's error with its trailer (hyper sends trailer
    // fields only when the client asks with TE: trailers; Go always does).
    out.push(call(
        endpoint,
        "POST",
        "/v3/kv/range",
        &["TE: trailers"],
        false,
    ));
    for origin in [
        "",
        "Origin: http://a.example:8000",
        "Origin: http://c.example:8000",
    ] {
        let h: Vec<&str> = [origin].into_iter().filter(|h| !h.is_empty()).collect();
        out.push(call(endpoint, "GET", "/health", &h, false));
        out.push(call(endpoint, "GET", "/version", &h, false));
        out.push(call(endpoint, "POST", "/v3/kv/put", &h, true));
        out.push(call(endpoint, "OPTIONS", "/v3/kv/put", &h, false));
    }
    for host in [
        "Host: example.com",
        "Host: example.com:2379",
        "Host: evil.example",
    ] {
        out.push(call(endpoint, "GET", "/health", &[host], false));
        out.push(call(endpoint, "POST", "/v3/kv/put", &[host], true));
    }
    out
}

async fn run(server: Server, flags: &[&str]) -> Vec<String> {
    let cluster = Cluster::start(
        server,
        1,
        Options {
            extra_args: flags.iter().map(|f| f.to_string()).collect(),
            ..Options::default()
        },
    )
    .await;
    let endpoint = cluster.members[0].endpoint();
    tokio::task::spawn_blocking(move || session(&endpoint))
        .await
        .expect("session")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_preflight_and_host_whitelist_match_real_etcd() {
    let mut differences = Vec::new();
    for flags in [
        &[][..],
        &["--cors=http://a.example:8000,http://b.example:8000"][..],
        &["--host-whitelist=example.com,localhost"][..],
    ] {
        let etcd = run(Server::Etcd, flags).await;
        let raftkv = run(Server::Raftkv, flags).await;
        assert_eq!(etcd.len(), raftkv.len());
        for (e, r) in etcd.iter().zip(&raftkv) {
            if e != r {
                differences.push(format!("{flags:?}\netcd:   {e}\nraftkv: {r}"));
            }
        }
    }
    assert_no_differences(&differences);
}
