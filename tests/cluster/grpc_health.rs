//! The gRPC health service on the client port (`grpc.health.v1.Health`, what
//! `grpc_health_probe` and Kubernetes' `grpc` probes call), beside a real etcd: the same
//! answers to Check and Watch for the empty name and for unknown names, with auth on too.

use std::time::Duration;

use raftkv_proto::grpc_health_v1::HealthCheckRequest;
use raftkv_proto::grpc_health_v1::health_client::HealthClient;

use crate::fixture::{Cluster, Options, Server, etcdctl_ok, grpc_server_counts};

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
    grpc_server_counts(endpoint, "grpc.health.v1.Health")
        .into_iter()
        .filter(|l| {
            l.starts_with("grpc_server_started_total")
                || (l.starts_with("grpc_server_handled_total")
                    && l.contains("grpc_method=\"Check\""))
        })
        .collect()
}

/// A Check whose name is past the server's message limit (hostile input): its status, the
/// health calls counted after it, and whether the service answers SERVING after it.
async fn oversized(endpoint: &str) -> (String, Vec<String>, bool) {
    let mut health = HealthClient::connect(format!("http://{endpoint}"))
        .await
        .expect("connect")
        .max_encoding_message_size(8 << 20);
    let refused = health
        .check(HealthCheckRequest {
            service: "x".repeat(3 << 20),
        })
        .await
        .map_or_else(
            |s| format!("{:?}: {}", s.code(), s.message()),
            |_| "ok".into(),
        );
    let counts = counted(endpoint);
    let after = health
        .check(HealthCheckRequest::default())
        .await
        .is_ok_and(|r| r.into_inner().status == 1);
    (refused, counts, after)
}

async fn session(server: Server) -> (Vec<String>, (String, Vec<String>, bool)) {
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
    // An oversized request is refused with grpc-go's status, is not counted (the unary
    // interceptor never ran), and changes nothing.
    assert_eq!(raftkv_oversized, etcd_oversized);
    assert!(
        etcd_oversized
            .0
            .starts_with("ResourceExhausted: grpc: received message larger"),
        "{etcd_oversized:?}"
    );
    assert!(etcd_oversized.2, "{etcd_oversized:?}");
}
