//! The gRPC health service on the client port (`grpc.health.v1.Health`, what
//! `grpc_health_probe` and Kubernetes' `grpc` probes call), beside a real etcd: the same
//! answers to Check and Watch for the empty name and for unknown names, with auth on too.

use std::time::Duration;

use raftkv_proto::grpc_health_v1::HealthCheckRequest;
use raftkv_proto::grpc_health_v1::health_client::HealthClient;

use crate::fixture::{Cluster, Options, Server, etcdctl_ok};

/// Check and the first Watch message for each name, as text.
async fn answers(endpoint: &str) -> Vec<String> {
    let mut health = HealthClient::connect(format!("http://{endpoint}"))
        .await
        .expect("connect");
    let mut out = Vec::new();
    for service in ["", "etcdserverpb.KV", "grpc.health.v1.Health", "nothing"] {
        let check = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .map(|r| r.into_inner().status)
            .map_err(|s| (s.code(), s.message().to_string()));
        out.push(format!("check {service:?}: {check:?}"));
        let mut stream = health
            .watch(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .expect("watch")
            .into_inner();
        let first = stream.message().await.map(|m| m.map(|m| m.status));
        out.push(format!("watch {service:?}: {first:?}"));
        // The status does not change, so nothing more comes.
        let more = tokio::time::timeout(Duration::from_millis(300), stream.message()).await;
        out.push(format!("watch {service:?}, more: {}", more.is_ok()));
    }
    out
}

/// The health service's non-zero call counts in `/metrics`: calls started, and Check calls
/// handled by code (a Watch is handled when its stream ends, whenever the server notices).
fn counted(endpoint: &str) -> Vec<String> {
    let out = std::process::Command::new("curl")
        .args(["-s", &format!("http://{endpoint}/metrics")])
        .output()
        .expect("curl (scripts/setup installs it)");
    let mut lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("grpc_service=\"grpc.health.v1.Health\""))
        .filter(|l| {
            l.starts_with("grpc_server_started_total")
                || (l.starts_with("grpc_server_handled_total")
                    && l.contains("grpc_method=\"Check\""))
        })
        .filter(|l| !l.ends_with(" 0"))
        .map(|l| {
            // Labels in name order, whatever order the server writes them in.
            let (name, rest) = l.split_once('{').unwrap_or((l, ""));
            let (labels, value) = rest.split_once("} ").unwrap_or((rest, ""));
            let mut labels: Vec<&str> = labels.split(',').collect();
            labels.sort_unstable();
            format!("{name}{{{}}} {value}", labels.join(","))
        })
        .collect();
    lines.sort();
    lines
}

/// A Check whose name is past the server's message limit (hostile input): its code, and
/// whether the service answers SERVING after it.
async fn oversized(endpoint: &str) -> (tonic::Code, bool) {
    let mut health = HealthClient::connect(format!("http://{endpoint}"))
        .await
        .expect("connect")
        .max_encoding_message_size(8 << 20);
    let code = health
        .check(HealthCheckRequest {
            service: "x".repeat(3 << 20),
        })
        .await
        .map_or_else(|s| s.code(), |_| tonic::Code::Ok);
    let after = health
        .check(HealthCheckRequest::default())
        .await
        .is_ok_and(|r| r.into_inner().status == 1);
    (code, after)
}

async fn session(server: Server) -> (Vec<String>, (tonic::Code, bool)) {
    let cluster = Cluster::start(server, 1, Options::default()).await;
    let endpoint = cluster.members[0].endpoint();
    let mut out = answers(&endpoint).await;
    // With auth on, the health service still needs no credentials.
    let endpoints = cluster.endpoints();
    etcdctl_ok(&endpoints, &["user", "add", "root:pw"]);
    etcdctl_ok(&endpoints, &["auth", "enable"]);
    out.push("auth enabled".into());
    out.extend(answers(&endpoint).await);
    out.extend(counted(&endpoint));
    (out, oversized(&endpoint).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_service_answers_as_etcds() {
    let (etcd, etcd_oversized) = session(Server::Etcd).await;
    let (raftkv, raftkv_oversized) = session(Server::Raftkv).await;
    assert_eq!(raftkv, etcd);
    // Not vacuous: the empty name is SERVING (1) on both, and the calls were counted.
    assert!(etcd.contains(&"check \"\": Ok(1)".to_string()), "{etcd:#?}");
    assert!(
        etcd.iter()
            .any(|l| l.starts_with("grpc_server_handled_total")),
        "{etcd:#?}"
    );
    // An oversized request is refused and changes nothing. etcd (grpc-go) answers
    // ResourceExhausted; raftkv's codec, as tonic's, OutOfRange — for every service.
    assert_eq!(etcd_oversized, (tonic::Code::ResourceExhausted, true));
    assert_eq!(raftkv_oversized, (tonic::Code::OutOfRange, true));
}
