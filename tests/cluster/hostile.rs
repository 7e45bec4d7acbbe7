//! Hostile clients: requests that must be refused with etcd's error (checked against a real
//! etcd), and clients that try to exhaust a member's memory or descriptors. After each, the
//! cluster keeps serving and every member restarts cleanly.

use std::time::Duration;

use bytes::Bytes;
use raftkv_proto::etcdserverpb::kv_client::KvClient;
use raftkv_proto::etcdserverpb::{RequestOp, TxnRequest};

use crate::fixture::{Cluster, Options, Server, etcdctl, etcdctl_ok};

fn nested(levels: usize, inner: Vec<RequestOp>) -> TxnRequest {
    crate::fixture::nested_txn(levels, inner)
}

fn put_op(key: &str) -> Vec<RequestOp> {
    vec![crate::fixture::put_op(key, "v")]
}

/// The outcome of one Txn as `code: message` (or `ok`).
async fn txn_outcome(endpoint: &str, txn: TxnRequest) -> String {
    let mut client = KvClient::connect(format!("http://{endpoint}"))
        .await
        .expect("connect")
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20);
    match client.txn(txn).await {
        Ok(_) => "ok".into(),
        Err(status) => format!("{:?}: {}", status.code(), status.message()),
    }
}

/// The nesting cases of issue 11 case 1, as (name, request).
fn nesting_cases() -> Vec<(&'static str, TxnRequest)> {
    vec![
        ("49 levels", nested(49, put_op("n49"))),
        ("100 levels", nested(100, put_op("n100"))),
        ("128 levels", nested(128, put_op("n128"))),
        ("129 levels with a put", nested(129, put_op("n129"))),
        ("129 levels, the last empty", nested(129, vec![])),
        ("1,000 levels", nested(1000, put_op("n1000"))),
        (
            "an op with no request",
            TxnRequest {
                success: vec![RequestOp { request: None }],
                ..Default::default()
            },
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_txns_get_etcds_answers_and_never_stop_a_member() {
    let mut expected = Vec::new();
    {
        let etcd = Cluster::start(Server::Etcd, 1, Options::default()).await;
        for (name, txn) in nesting_cases() {
            expected.push((name, txn_outcome(&etcd.members[0].endpoint(), txn).await));
        }
    }
    let mut cluster = Cluster::start(Server::Raftkv, 3, Options::default()).await;
    for ((name, txn), (_, want)) in nesting_cases().into_iter().zip(&expected) {
        for i in 0..3 {
            let got = txn_outcome(&cluster.members[i].endpoint(), txn.clone()).await;
            assert_eq!(&got, want, "{name} on member {i}");
        }
    }
    // Every member applied what it accepted, and restarts from its log.
    cluster.kill_and_restart_all().await;
    let keys = etcdctl_ok(
        &cluster.endpoints(),
        &["get", "n", "--prefix", "--keys-only"],
    );
    assert_eq!(
        keys.split_whitespace().collect::<Vec<_>>(),
        ["n100", "n128", "n49"]
    );
    let out = etcdctl(&cluster.endpoints(), &["put", "after", "restart"], None);
    assert!(out.status.success());
    eprintln!("etcd's answers: {expected:#?}");
}

/// Requests over the size limits, on one member: a put over `--max-request-bytes` (etcd's
/// own refusal), a put and a watch request over the gRPC message limit (grpc-go's), then
/// the KV and Watch calls `/metrics` counted, and a put after them.
async fn oversized_session(endpoint: &str) -> Vec<String> {
    use raftkv_proto::etcdserverpb::watch_client::WatchClient;
    use raftkv_proto::etcdserverpb::watch_request::RequestUnion;
    use raftkv_proto::etcdserverpb::{PutRequest, WatchCreateRequest, WatchRequest};

    let mut kv = KvClient::connect(format!("http://{endpoint}"))
        .await
        .expect("connect")
        .max_encoding_message_size(8 << 20);
    let mut out = Vec::new();
    for (name, len) in [("1.6 MiB put", 1_600_000), ("3 MiB put", 3 << 20)] {
        let put = PutRequest {
            key: Bytes::from_static(b"big"),
            value: vec![b'v'; len].into(),
            ..Default::default()
        };
        let answer = kv.put(put).await;
        out.push(format!(
            "{name}: {}",
            answer.map_or_else(
                |s| format!("{:?}: {}", s.code(), s.message()),
                |_| "ok".into()
            )
        ));
    }
    let mut watch = WatchClient::connect(format!("http://{endpoint}"))
        .await
        .expect("connect")
        .max_encoding_message_size(8 << 20);
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let create = |key: Vec<u8>| WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
            key: key.into(),
            ..Default::default()
        })),
    };
    tx.send(create(b"w".to_vec())).await.expect("send");
    let mut stream = watch
        .watch(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("watch")
        .into_inner();
    let created = stream
        .message()
        .await
        .is_ok_and(|m| m.is_some_and(|m| m.created));
    out.push(format!("watch created: {created}"));
    tx.send(create(vec![b'k'; 3 << 20])).await.expect("send");
    let next = tokio::time::timeout(Duration::from_secs(10), stream.message()).await;
    out.push(format!("3 MiB watch request: {}", next_message(next, true)));
    drop(tx);
    for service in ["etcdserverpb.KV", "etcdserverpb.Watch"] {
        out.extend(
            crate::fixture::grpc_server_counts(endpoint, service)
                .into_iter()
                // Watch's handling-time histogram moves only with `--metrics extensive`.
                .filter(|l| !l.starts_with("grpc_server_handling_seconds")),
        );
    }
    out.push(put_after(&mut kv).await);
    out
}

/// What came next on a watch stream, within `timeout`'s 10 s: an answer, its end, or the
/// error that ended it (its code, and with `message` the status message too).
fn next_message<T>(
    next: Result<Result<Option<T>, tonic::Status>, tokio::time::error::Elapsed>,
    message: bool,
) -> String {
    match next {
        Ok(Ok(Some(_))) => "an answer".to_string(),
        Ok(Ok(None)) => "the stream ended".to_string(),
        Ok(Err(s)) if message => format!("{:?}: {}", s.code(), s.message()),
        Ok(Err(s)) => format!("{:?}", s.code()),
        Err(_) => "no answer in 10 s".to_string(),
    }
}

/// Whether a put still goes through, after what a session sent.
async fn put_after(kv: &mut KvClient<tonic::transport::Channel>) -> String {
    use raftkv_proto::etcdserverpb::PutRequest;
    let after = kv
        .put(PutRequest {
            key: Bytes::from_static(b"after"),
            value: Bytes::from_static(b"v"),
            ..Default::default()
        })
        .await;
    format!("put after: {}", after.is_ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_requests_get_etcds_answers() {
    let etcd = {
        let etcd = Cluster::start(Server::Etcd, 1, Options::default()).await;
        oversized_session(&etcd.members[0].endpoint()).await
    };
    let raftkv = {
        let raftkv = Cluster::start(Server::Raftkv, 1, Options::default()).await;
        oversized_session(&raftkv.members[0].endpoint()).await
    };
    // etcd counts the refused watch stream as ResourceExhausted (the receive error its
    // handler returns) or, in one CI run of 2026-12-04, as Canceled: grpc-go may cancel the
    // stream's context before the handler's receive loop sees the error. The client gets
    // ResourceExhausted either way. raftkv counts what the client gets.
    let watch_handled = |lines: &[String], code: &str| {
        lines.iter().any(|l| {
            l.starts_with("grpc_server_handled_total{")
                && l.contains("grpc_method=\"Watch\"")
                && l.contains(&format!("grpc_code=\"{code}\""))
        })
    };
    assert!(
        watch_handled(&etcd, "ResourceExhausted") || watch_handled(&etcd, "Canceled"),
        "{etcd:#?}"
    );
    assert!(watch_handled(&raftkv, "ResourceExhausted"), "{raftkv:#?}");
    let others = |lines: &[String]| -> Vec<String> {
        lines
            .iter()
            .filter(|l| {
                !(l.starts_with("grpc_server_handled_total{")
                    && l.contains("grpc_method=\"Watch\""))
            })
            .cloned()
            .collect()
    };
    assert_eq!(others(&raftkv), others(&etcd));
    // Not vacuous: each limit refused its request, and the refusals are etcd's.
    let want = [
        "1.6 MiB put: InvalidArgument: etcdserver: request is too large",
        "3 MiB put: ResourceExhausted: grpc: received message larger than max (3145738 vs. 2097152)",
        "watch created: true",
        "put after: true",
    ];
    for line in want {
        assert!(etcd.iter().any(|l| l == line), "{line} not in {etcd:#?}");
    }
    eprintln!("etcd's answers: {etcd:#?}");
}

/// Resident memory of a process, in bytes.
pub fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Opens `n` HTTP/2 connections to `endpoint`, each with one `KV/Put` whose gRPC frame
/// announces `announce` bytes but carries only `sent`; keeps them open until dropped.
async fn half_sent_requests(
    endpoint: &str,
    n: usize,
    announce: u32,
    sent: usize,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut held = Vec::new();
    for _ in 0..n {
        let Ok(tcp) = tokio::net::TcpStream::connect(endpoint).await else {
            continue;
        };
        let Ok((client, conn)) = h2::client::handshake(tcp).await else {
            continue;
        };
        held.push(tokio::spawn(async move {
            let _ = conn.await;
        }));
        let task = tokio::spawn(async move {
            let Ok(mut client) = client.ready().await else {
                return;
            };
            let request = http::Request::post("/etcdserverpb.KV/Put")
                .header("content-type", "application/grpc")
                .header("te", "trailers")
                .body(())
                .expect("request");
            let Ok((_response, mut stream)) = client.send_request(request, false) else {
                return;
            };
            let mut frame = vec![0u8];
            frame.extend_from_slice(&announce.to_be_bytes());
            frame.resize(5 + sent, b'x');
            let mut data = Bytes::from(frame);
            while !data.is_empty() {
                stream.reserve_capacity(data.len());
                match std::future::poll_fn(|cx| stream.poll_capacity(cx)).await {
                    Some(Ok(n)) if n > 0 => {
                        let chunk = data.split_to(n.min(data.len()));
                        if stream.send_data(chunk, false).is_err() {
                            return;
                        }
                    }
                    _ => break,
                }
            }
            // Never finish the request; hold the stream until aborted.
            std::future::pending::<()>().await;
        });
        held.push(task);
    }
    held
}

/// One round of 1,000 half-sent requests against member 0: RSS while they hang (after
/// checking the member still serves a put), then after they are closed.
async fn half_sent_round(cluster: &Cluster, sent: usize) -> (u64, u64) {
    let pid = cluster.members[0].pid().expect("running");
    let endpoint = cluster.members[0].endpoint();
    let held = half_sent_requests(&endpoint, 1000, 2_000_000, sent).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let during = rss(pid);
    let out = etcdctl(&endpoint, &["put", "k", "v"], None);
    assert!(
        out.status.success(),
        "{:?} stopped serving: {}",
        cluster.server,
        String::from_utf8_lossy(&out.stderr)
    );
    for task in held {
        task.abort();
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    (during, rss(pid))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_requests_do_not_exhaust_memory() {
    // (bytes sent of the 2 MB each request announces, raftkv's bound on growth while they
    // hang). etcd, measured in the same run for the report, grows by about 270 MB with
    // 64 KiB sent; with 1 MiB sent it grew by 1.3 GB (2026-12-04; not run each time, as
    // its 1 GB round took a fifth of the test).
    let cases = [(64 << 10, 192u64 << 20), (1 << 20, 640 << 20)];
    for (sent, bound) in cases {
        let servers: &[Server] = if sent == 64 << 10 {
            &[Server::Etcd, Server::Raftkv]
        } else {
            &[Server::Raftkv]
        };
        for &server in servers {
            let cluster = Cluster::start(server, 1, Options::default()).await;
            let before = rss(cluster.members[0].pid().expect("running"));
            let (during, after) = half_sent_round(&cluster, sent).await;
            eprintln!(
                "{server:?}, 1,000 requests announcing 2 MB with {} KiB sent: RSS {} MiB before, {} MiB while they hang, {} MiB after they closed",
                sent >> 10,
                before >> 20,
                during >> 20,
                after >> 20
            );
            if server == Server::Raftkv {
                let grown = during.saturating_sub(before);
                assert!(grown < bound, "grew by {} MiB", grown >> 20);
                // What the allocator keeps after they close is reused, not leaked: a second
                // round needs no more.
                let (again, _) = half_sent_round(&cluster, sent).await;
                eprintln!("Raftkv, second round: {} MiB while they hang", again >> 20);
                assert!(
                    again < during + (64 << 20),
                    "a second round grew to {} MiB",
                    again >> 20
                );
            }
        }
    }
}

/// Opens `n` TCP connections to `endpoint` that never send a byte.
fn idle_connections(endpoint: &str, n: usize) -> Vec<std::net::TcpStream> {
    (0..n)
        .filter_map(|_| std::net::TcpStream::connect(endpoint).ok())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_do_not_lock_clients_out() {
    // The common soft limit of 1,024 open files: a member raises it to the hard limit at
    // start, as etcd does, and keeps serving past 1,100 idle connections.
    let opts = Options {
        nofile: Some((1024, 8192)),
        ..Options::default()
    };
    for server in [Server::Etcd, Server::Raftkv] {
        let cluster = Cluster::start(server, 1, opts.clone()).await;
        let endpoint = cluster.members[0].endpoint();
        let idle = idle_connections(&endpoint, 1100);
        assert_eq!(idle.len(), 1100);
        let out = etcdctl(&endpoint, &["put", "k", "v"], None);
        assert!(
            out.status.success(),
            "{server:?} locked clients out: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        if server == Server::Raftkv {
            assert!(cluster.members[0].log_text().contains("open file limit"));
        }
    }
    // Where the hard limit is the same 1,024, new connections beyond what the member can
    // hold beside its own files are closed at once, with a log line; the member keeps its
    // descriptors for the WAL and the store, and serves again once the idle ones are gone.
    let opts = Options {
        nofile: Some((1024, 1024)),
        ..Options::default()
    };
    let cluster = Cluster::start(Server::Raftkv, 1, opts).await;
    let endpoint = cluster.members[0].endpoint();
    let idle = idle_connections(&endpoint, 1100);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        cluster.members[0]
            .log_text()
            .contains("too many open connections"),
        "{}",
        cluster.members[0].log_tail()
    );
    drop(idle);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let out = etcdctl(&endpoint, &["put", "k", "v"], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The number of threads of process `pid`.
fn threads(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// The client snapshot files in a member's snap dir (built for `Maintenance.Snapshot`).
fn client_snapshot_files(data_dir: &std::path::Path) -> Vec<String> {
    let dir = raftkv_storage::layout::snap_dir(data_dir);
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|name| name.starts_with("client-"))
                .collect()
        })
        .unwrap_or_default()
}

/// Hash, HashKV and Snapshot each read the whole store, and anyone may ask for them while
/// auth is off. Asked for hundreds of times at once and given up after 20 ms, they must not
/// pile up work behind the client's back: the hashes take one turn at a time (a flood costs
/// a thread or two, not one per request), a snapshot build whose client left leaves no
/// file behind (each is the size of the store), and the member keeps serving with the same
/// hash as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_store_requests_given_up_leave_no_work_behind() {
    use raftkv_proto::etcdserverpb::maintenance_client::MaintenanceClient;
    use raftkv_proto::etcdserverpb::{HashKvRequest, HashRequest, PutRequest, SnapshotRequest};
    let cluster = Cluster::start(Server::Raftkv, 1, Options::default()).await;
    let member = &cluster.members[0];
    let pid = member.pid().expect("running");
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", member.endpoint()))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    // A store that takes a while to hash and to snapshot: 4,000 keys of 2 KB.
    let loaders: Vec<_> = (0..16)
        .map(|t| {
            let mut kv = KvClient::new(channel.clone());
            tokio::spawn(async move {
                for i in 0..250 {
                    let value = format!("{t}-{i}-").repeat(300);
                    kv.put(PutRequest {
                        key: format!("key-{t}-{i}").into_bytes().into(),
                        value: value.into_bytes().into(),
                        ..Default::default()
                    })
                    .await
                    .expect("put");
                }
            })
        })
        .collect();
    for l in loaders {
        l.await.expect("loader");
    }
    let mut maintenance = MaintenanceClient::new(channel.clone());
    let before = maintenance
        .hash_kv(HashKvRequest { revision: 0 })
        .await
        .expect("hash")
        .into_inner();
    // (Idle blocking threads from the load may take some of the flood's work without new
    // threads: that can only lower the count below.)
    let threads_before = threads(pid);
    let flood: Vec<_> = (0..200)
        .map(|i| {
            let mut m = MaintenanceClient::new(channel.clone());
            tokio::spawn(async move {
                let give_up = Duration::from_millis(20);
                if i % 2 == 0 {
                    let _ = tokio::time::timeout(give_up, m.hash_kv(HashKvRequest { revision: 0 }))
                        .await;
                } else {
                    let _ = tokio::time::timeout(give_up, m.hash(HashRequest {})).await;
                }
            })
        })
        .collect();
    for f in flood {
        f.await.expect("flood task");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let threads_during = threads(pid);
    assert!(
        threads_during < threads_before + 20,
        "200 abandoned hashes took {threads_before} → {threads_during} threads"
    );
    // Snapshots asked for and dropped before their first piece arrives.
    let flood: Vec<_> = (0..20)
        .map(|_| {
            let mut m = MaintenanceClient::new(channel.clone());
            tokio::spawn(async move {
                let _ =
                    tokio::time::timeout(Duration::from_millis(20), m.snapshot(SnapshotRequest {}))
                        .await;
            })
        })
        .collect();
    for f in flood {
        f.await.expect("flood task");
    }
    // The member still serves: the same hash, a whole snapshot, a write.
    let after = maintenance
        .hash_kv(HashKvRequest {
            revision: before.header.as_ref().expect("header").revision,
        })
        .await
        .expect("hash")
        .into_inner();
    assert_eq!(after.hash, before.hash);
    let mut stream = maintenance
        .snapshot(SnapshotRequest {})
        .await
        .expect("snapshot")
        .into_inner();
    let mut bytes = 0usize;
    while let Some(piece) = stream.message().await.expect("snapshot piece") {
        bytes += piece.blob.len();
    }
    assert!(bytes > 0);
    // By now every abandoned build has at least begun (each names its file as it starts);
    // none may stay once they are over.
    let mut left = client_snapshot_files(&member.data_dir);
    for _ in 0..600 {
        if left.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        left = client_snapshot_files(&member.data_dir);
    }
    assert!(left.is_empty(), "abandoned snapshot files stay: {left:?}");
    let out = tokio::task::block_in_place(|| etcdctl(&member.endpoint(), &["put", "k", "v"], None));
    assert!(out.status.success(), "{out:?}");
}

/// A Snapshot client that stops reading gives up its turn after the stall timeout: clients
/// holding every turn that way do not keep another from its snapshot, and one that reads
/// again finds its stream ended with an error, never cut short as if complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_clients_that_stop_reading_give_up_their_turns() {
    use raftkv_proto::etcdserverpb::maintenance_client::MaintenanceClient;
    use raftkv_proto::etcdserverpb::{PutRequest, SnapshotRequest};
    let options = Options {
        extra_args: vec!["--raftkv-snapshot-stall-timeout=2s".into()],
        ..Options::default()
    };
    let cluster = Cluster::start(Server::Raftkv, 1, options).await;
    let member = &cluster.members[0];
    // Small windows, so that the member can send little before only reading makes room.
    let dial = || async {
        tonic::transport::Endpoint::from_shared(format!("http://{}", member.endpoint()))
            .expect("endpoint")
            .initial_stream_window_size(65_535)
            .initial_connection_window_size(65_535)
            .connect()
            .await
            .expect("connect")
    };
    // 2.4 MB that no codec folds: 300 keys of 8 KB of pseudo-random bytes.
    let mut kv = KvClient::new(dial().await);
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    for i in 0..300 {
        let value: Vec<u8> = (0..8192)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        kv.put(PutRequest {
            key: format!("key-{i}").into_bytes().into(),
            value: value.into(),
            ..Default::default()
        })
        .await
        .expect("put");
    }
    // Each on its own connection: a stream, once built, takes its first piece and then
    // reads no more.
    let mut stalled = Vec::new();
    for _ in 0..raftkv_server::api::SNAPSHOT_STREAMS {
        let mut stream = MaintenanceClient::new(dial().await)
            .snapshot(SnapshotRequest {})
            .await
            .expect("snapshot")
            .into_inner();
        stream
            .message()
            .await
            .expect("first piece")
            .expect("a piece");
        stalled.push(stream);
    }
    // Every turn is held by a client that reads nothing; another client still gets its
    // whole snapshot once the stalled ones have given theirs up.
    let mut maintenance = MaintenanceClient::new(dial().await);
    let whole = tokio::time::timeout(Duration::from_secs(60), async {
        let mut stream = maintenance
            .snapshot(SnapshotRequest {})
            .await
            .expect("snapshot")
            .into_inner();
        let (mut bytes, mut last_remaining) = (0usize, u64::MAX);
        while let Some(piece) = stream.message().await.expect("snapshot piece") {
            bytes += piece.blob.len();
            last_remaining = piece.remaining_bytes;
        }
        (bytes, last_remaining)
    })
    .await
    .expect("a snapshot while two clients sit on their streams");
    assert!(whole.0 > 2_000_000, "{whole:?}");
    assert_eq!(whole.1, 0, "the last piece ends the file");
    // A stalled client that reads again: what was queued, then the error.
    for mut stream in stalled {
        let end = loop {
            match stream.message().await {
                Ok(Some(_)) => continue,
                other => break other,
            }
        };
        let status = end.expect_err("a stalled stream ends with an error, not as complete");
        assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
        assert!(
            status.message().contains("snapshot stream ended"),
            "{status:?}"
        );
    }
}

/// A gRPC codec that sends each message's bytes as they are and hands answers back raw, so
/// a test can put bytes on a stream that no generated client would.
#[derive(Default)]
pub(crate) struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }

    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl tonic::codec::Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(
        &mut self,
        item: Vec<u8>,
        buf: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        use bytes::BufMut;
        buf.put_slice(&item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn decode(
        &mut self,
        buf: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Vec<u8>>, tonic::Status> {
        use bytes::Buf;
        Ok(Some(buf.copy_to_bytes(buf.remaining()).to_vec()))
    }
}

/// One watch stream that creates a watcher, then sends `bad` as its next request: what
/// came back (the created answer, then how the stream ended: its status code), and
/// whether a put still goes through afterwards.
async fn malformed_watch_session(endpoint: &str, bad: &[u8]) -> Vec<String> {
    use prost::Message;
    use raftkv_proto::etcdserverpb::watch_request::RequestUnion;
    use raftkv_proto::etcdserverpb::{WatchCreateRequest, WatchRequest, WatchResponse};

    let channel = tonic::transport::Endpoint::from_shared(format!("http://{endpoint}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("ready");
    let (tx, rx) = tokio::sync::mpsc::channel::<Vec<u8>>(4);
    let create = WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
            key: Bytes::from_static(b"w"),
            ..Default::default()
        })),
    };
    tx.send(create.encode_to_vec()).await.expect("send");
    let mut stream = grpc
        .streaming(
            tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx)),
            http::uri::PathAndQuery::from_static("/etcdserverpb.Watch/Watch"),
            RawCodec,
        )
        .await
        .expect("watch")
        .into_inner();
    let mut out = Vec::new();
    let first = stream.message().await;
    let created = matches!(&first, Ok(Some(bytes))
        if WatchResponse::decode(&bytes[..]).is_ok_and(|r| r.created));
    out.push(format!("watch created: {created}"));
    tx.send(bad.to_vec()).await.expect("send");
    let next = tokio::time::timeout(Duration::from_secs(10), stream.message()).await;
    // The code is etcd's; the message is the decoder's own wording (grpc-go's and prost's
    // differ), so it is left out.
    out.push(format!("malformed request: {}", next_message(next, false)));
    drop(tx);
    let mut kv = KvClient::connect(format!("http://{endpoint}"))
        .await
        .expect("connect");
    out.push(put_after(&mut kv).await);
    out
}

/// Watch requests that are not protobuf (a length running past the message's end, a
/// field number 0, a group) end their stream with etcd's status code and nothing else:
/// no answer, no watcher, and the member goes on serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_watch_requests_get_etcds_answers() {
    let cases: [(&str, &[u8]); 3] = [
        ("length past the end", &[0x0a, 0x64, 0x0a, 0x01]),
        ("field number 0", &[0x00, 0x01]),
        ("a start group", &[0x0b, 0x0a, 0x00, 0x0c]),
    ];
    let mut expected = Vec::new();
    {
        let etcd = Cluster::start(Server::Etcd, 1, Options::default()).await;
        for (name, bad) in cases {
            expected.push((
                name,
                malformed_watch_session(&etcd.members[0].endpoint(), bad).await,
            ));
        }
    }
    let raftkv = Cluster::start(Server::Raftkv, 1, Options::default()).await;
    for ((name, bad), (_, want)) in cases.into_iter().zip(&expected) {
        let got = malformed_watch_session(&raftkv.members[0].endpoint(), bad).await;
        assert_eq!(&got, want, "{name}");
        // Not vacuous: the watcher was created and the bad request refused.
        assert_eq!(got[0], "watch created: true", "{name}");
        assert!(!got[1].contains("answer"), "{name}: {got:?}");
    }
    eprintln!("etcd's answers: {expected:#?}");
}
