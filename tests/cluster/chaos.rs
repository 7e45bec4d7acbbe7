//! Proof under faults: clients run random put / get / delete / compare-and-swap on a few
//! keys while a seeded schedule of faults hits the cluster — kill -9 (leader, follower,
//! majority, everyone), SIGSTOP pauses, partitions through the fault proxies (leader
//! isolated, minority / majority, bridge), slow links, and a rolling restart. Afterwards:
//! the history is linearizable (`linearizable.rs`), no member of a minority acknowledged a
//! write, and every member converges to the same revision and data.
//!
//! Throughout, a hostile client and peer (`hostile`) send what issue 11 found could stop a
//! member — over-nested and malformed txns, oversized puts, oversized and malformed watch
//! requests, half-sent bodies, forged votes — beside deep txns that are valid and must
//! survive every kill and restart; and no member may refuse a message or an answer from a
//! correct peer (the logs are checked).
//!
//! Half the values the clients write are long enough to go to the value log, so the kills
//! also cover the applied point lagging the values' fdatasync.
//!
//! One of the clients speaks etcd's JSON gateway instead of gRPC (`chaos_gateway`); its
//! operations join the same history.
//!
//! Watchers on every member follow the chaos keys throughout (`chaos_watch`): their
//! streams are checked for order, duplicates, atomicity, prev_kv, resumption without a gap,
//! and against the acknowledged writes and the MVCC history.
//!
//! `RAFTKV_SEED=<n>` replays one schedule; `RAFTKV_SOAK=<minutes>` runs seed after seed.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use raftkv_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use raftkv_proto::etcdserverpb::kv_client::KvClient;
use raftkv_proto::etcdserverpb::request_op::Request as OpRequest;
use raftkv_proto::etcdserverpb::{
    Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
};
use tonic::transport::{Channel, Endpoint};

use crate::fixture::{Cluster, Options, Server, etcdctl, etcdctl_ok, free_port};
use crate::linearizable::{self, Input, Op, Output};

pub(crate) const KEYS: usize = 4;
pub(crate) const CLIENTS: usize = 6;

/// Seeded: the schedule and the clients' choices (rand's small generator).
pub(crate) struct Rng(rand::rngs::SmallRng);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        use rand::SeedableRng;
        Self(rand::rngs::SmallRng::seed_from_u64(seed))
    }
    pub(crate) fn below(&mut self, n: usize) -> usize {
        use rand::RngExt;
        self.0.random_range(0..n.max(1))
    }
}

/// One fault, applied and then healed.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Fault {
    KillLeader,
    KillFollower,
    KillMajority,
    KillAll,
    PauseLeader,
    PauseFollower,
    IsolateLeader,
    PartitionMinority,
    Bridge,
    SlowLinks,
    RollingRestart,
    /// Membership change under load: add a learner, start it, promote it once it caught
    /// up, remove a follower (etcd's replace-a-member procedure).
    ReplaceFollower,
}

/// Faults for clusters behind the fault proxies.
pub(crate) const PROXIED_FAULTS: [Fault; 11] = [
    Fault::KillLeader,
    Fault::KillFollower,
    Fault::KillMajority,
    Fault::KillAll,
    Fault::PauseLeader,
    Fault::PauseFollower,
    Fault::IsolateLeader,
    Fault::PartitionMinority,
    Fault::Bridge,
    Fault::SlowLinks,
    Fault::RollingRestart,
];

/// Faults for the membership schedule (members come and go, so no proxies and no
/// kill-a-majority: a removed member must not count towards one).
const MEMBERSHIP_FAULTS: [Fault; 5] = [
    Fault::ReplaceFollower,
    Fault::KillLeader,
    Fault::KillFollower,
    Fault::PauseLeader,
    Fault::RollingRestart,
];

pub(crate) fn running(cluster: &Cluster) -> Vec<usize> {
    (0..cluster.members.len())
        .filter(|&i| cluster.members[i].is_running())
        .collect()
}

/// A window during which `members` were cut off from any majority.
#[derive(Debug, Clone)]
pub(crate) struct Minority {
    members: Vec<usize>,
    from: u64,
    to: u64,
}

pub(crate) struct Shared {
    pub(crate) history: Mutex<Vec<(Op, usize, i64)>>,
    pub(crate) epoch: Instant,
    pub(crate) stop: std::sync::atomic::AtomicBool,
}

impl Shared {
    pub(crate) fn now(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }
}

pub(crate) async fn channel(endpoint: &str) -> Option<Channel> {
    Endpoint::from_shared(format!("http://{endpoint}"))
        .ok()?
        .connect_timeout(Duration::from_millis(300))
        .timeout(Duration::from_secs(1))
        .connect()
        .await
        .ok()
}

/// A txn nested `levels` deep whose innermost level puts `key`.
fn deep_txn(levels: usize, key: &str) -> TxnRequest {
    crate::fixture::nested_txn(levels, vec![crate::fixture::put_op(key, "deep")])
}

/// The hostile side of a chaos run: client requests that must be refused (and never reach
/// the chaos keys), deep txns that must be taken, forged peer messages, and snapshot
/// clients that take one piece and read no more, at random members, until the run stops.
/// Returns how many were sent, how many were taken that should have been refused, and the
/// last stalled snapshot streams (still open, so that the end of the run checks that they
/// hold no turn).
async fn hostile(
    endpoints: Vec<String>,
    peer_ports: Vec<u16>,
    seed: u64,
    shared: Arc<Shared>,
) -> (usize, Vec<String>, Vec<SnapshotStream>) {
    use raftkv_proto::raftkvpb::RaftMessage;
    use raftkv_proto::raftkvpb::peer_client::PeerClient;
    use raftkv_raft::types::{Vote, encode};
    let mut rng = Rng::new(seed ^ 0x0bad);
    let (mut sent, mut wrongly_taken, mut stalled) = (0, Vec::new(), Vec::new());
    while !shared.stop.load(std::sync::atomic::Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(50 + rng.below(150) as u64)).await;
        let i = rng.below(endpoints.len());
        let case = rng.below(8);
        sent += 1;
        if case == 6 {
            if let Some(stream) = stalled_snapshot(&endpoints[i]).await {
                stalled.push(stream);
                if stalled.len() > 4 {
                    stalled.remove(0);
                }
            }
            continue;
        }
        if case == 4 {
            // A forged vote with the largest term, straight at a peer port.
            let Ok(channel) = Endpoint::from_shared(format!("http://127.0.0.1:{}", peer_ports[i]))
                .map(|e| e.connect_timeout(Duration::from_millis(300)))
            else {
                continue;
            };
            let Ok(channel) = channel.connect().await else {
                continue;
            };
            let vote = openraft::raft::VoteRequest::<raftkv_raft::types::TypeConfig> {
                vote: Vote::new(u64::MAX, 0xdead),
                last_log_id: None,
                leadership_transfer: false,
            };
            let msg = RaftMessage {
                data: encode(&vote).expect("encodes").into(),
            };
            if PeerClient::new(channel).vote(msg).await.is_ok() {
                wrongly_taken.push("a vote with term 2^64-1".into());
            }
            continue;
        }
        let Some(c) = channel(&endpoints[i]).await else {
            continue;
        };
        if case == 5 {
            // A watch whose create request is over the message limit: the stream must end
            // with an error, never create the watch.
            if watch_request_answered(c, oversized_watch_request()).await {
                wrongly_taken.push("a 3 MB watch request".into());
            }
            continue;
        }
        if case == 7 {
            // A watch request that is not protobuf (a length running past its end): the same.
            if watch_request_answered(c, MALFORMED_WATCH_REQUEST.to_vec()).await {
                wrongly_taken.push("a malformed watch request".into());
            }
            continue;
        }
        let mut kv = KvClient::new(c).max_encoding_message_size(8 << 20);
        let (what, result) = match case {
            0 => (
                "a txn 300 levels deep",
                kv.txn(deep_txn(300, "k0")).await.map(|_| ()),
            ),
            1 => (
                "an op with no request",
                kv.txn(TxnRequest {
                    success: vec![RequestOp { request: None }],
                    ..Default::default()
                })
                .await
                .map(|_| ()),
            ),
            2 => (
                "a 3 MB put",
                kv.put(PutRequest {
                    key: "k1".into(),
                    value: vec![7u8; 3 << 20].into(),
                    ..Default::default()
                })
                .await
                .map(|_| ()),
            ),
            _ => {
                // Valid and deep: taken (or timed out) — it lands outside the chaos keys and
                // must decode again on every member after whatever the schedule does.
                let _ = kv.txn(deep_txn(128, "hostile/deep")).await;
                continue;
            }
        };
        if result.is_ok() {
            wrongly_taken.push(what.to_string());
        }
    }
    (sent, wrongly_taken, stalled)
}

/// `raftkv_watch_catch_up_reads_total` summed over the running members: (memory, store).
fn catch_up_reads(cluster: &Cluster) -> (u64, u64) {
    let (mut memory, mut store) = (0, 0);
    for i in running(cluster) {
        let out = std::process::Command::new("curl")
            .args([
                "-s",
                &format!("http://{}/metrics", cluster.members[i].endpoint()),
            ])
            .output()
            .expect("curl (scripts/setup installs it)");
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let Some(rest) = line.strip_prefix("raftkv_watch_catch_up_reads_total{source=\"")
            else {
                continue;
            };
            let count: u64 = rest
                .rsplit(' ')
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            if rest.starts_with("memory") {
                memory += count;
            } else {
                store += count;
            }
        }
    }
    (memory, store)
}

type SnapshotStream = tonic::Streaming<raftkv_proto::etcdserverpb::SnapshotResponse>;

/// A Snapshot stream on a connection with small HTTP/2 windows that has taken its first
/// piece (and is then left unread), or `None` if the member did not answer in time.
async fn stalled_snapshot(endpoint: &str) -> Option<SnapshotStream> {
    use raftkv_proto::etcdserverpb::SnapshotRequest;
    use raftkv_proto::etcdserverpb::maintenance_client::MaintenanceClient;
    let channel = Endpoint::from_shared(format!("http://{endpoint}"))
        .ok()?
        .connect_timeout(Duration::from_millis(300))
        .initial_stream_window_size(65_535)
        .initial_connection_window_size(65_535)
        .connect()
        .await
        .ok()?;
    tokio::time::timeout(Duration::from_secs(5), async move {
        let mut stream = MaintenanceClient::new(channel)
            .snapshot(SnapshotRequest {})
            .await
            .ok()?
            .into_inner();
        stream.message().await.ok().flatten()?;
        Some(stream)
    })
    .await
    .ok()
    .flatten()
}

/// Bytes written once at the start of a run under `hostile/blob-*`, random so that no codec
/// folds them: a snapshot then outgrows what a stalled client's windows and the member's
/// queue take, so a stalled snapshot stream really waits (and must give its turn up).
async fn write_blobs(endpoint: &str, seed: u64) {
    let mut kv = KvClient::new(channel(endpoint).await.expect("connection for the blobs"))
        .max_encoding_message_size(8 << 20);
    let mut rng = Rng::new(seed ^ 0xb10b);
    for i in 0..4 {
        let value: Vec<u8> = (0..256 * 1024).map(|_| rng.below(256) as u8).collect();
        kv.put(PutRequest {
            key: format!("hostile/blob-{i}").into_bytes().into(),
            value: value.into(),
            ..Default::default()
        })
        .await
        .expect("blob put before any fault");
    }
}

/// Every member serves a whole snapshot, while the stalled snapshot clients of the run are
/// still connected: none of them keeps a turn.
async fn snapshots_served(cluster: &Cluster, stalled: Vec<SnapshotStream>, seed: u64) {
    use raftkv_proto::etcdserverpb::SnapshotRequest;
    use raftkv_proto::etcdserverpb::maintenance_client::MaintenanceClient;
    for i in running(cluster) {
        let endpoint = cluster.members[i].endpoint();
        let whole = tokio::time::timeout(Duration::from_secs(60), async {
            let mut maintenance = MaintenanceClient::new(channel(&endpoint).await?);
            let mut stream = maintenance
                .snapshot(SnapshotRequest {})
                .await
                .ok()?
                .into_inner();
            let mut bytes = 0usize;
            while let Some(piece) = stream.message().await.ok()? {
                bytes += piece.blob.len();
            }
            Some(bytes)
        })
        .await;
        assert!(
            matches!(whole, Ok(Some(b)) if b > 1 << 20),
            "seed {seed}: member {i} served no whole snapshot beside {} stalled clients: {whole:?}",
            stalled.len()
        );
    }
    drop(stalled);
}

/// A watch request that is not protobuf: a length running past the message's end.
const MALFORMED_WATCH_REQUEST: [u8; 4] = [0x0a, 0x64, 0x0a, 0x01];

/// A watch create request over the gRPC message limit (3 MiB of key).
fn oversized_watch_request() -> Vec<u8> {
    use prost::Message;
    use raftkv_proto::etcdserverpb::watch_request::RequestUnion;
    use raftkv_proto::etcdserverpb::{WatchCreateRequest, WatchRequest};
    WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
            key: vec![b'k'; 3 << 20].into(),
            ..Default::default()
        })),
    }
    .encode_to_vec()
}

/// Whether a member answered a watch stream whose one request is `request`, sent as raw
/// bytes (the client's encoder has no size limit). For a request over the message limit
/// or one that is not protobuf, the member must end the stream with an error. A stream
/// cut by a fault counts as refused.
async fn watch_request_answered(channel: Channel, request: Vec<u8>) -> bool {
    let mut grpc = tonic::client::Grpc::new(channel);
    let answer = tokio::time::timeout(Duration::from_secs(5), async move {
        grpc.ready().await.ok()?;
        let mut stream = grpc
            .streaming(
                tonic::Request::new(tokio_stream::iter([request])),
                http::uri::PathAndQuery::from_static("/etcdserverpb.Watch/Watch"),
                crate::hostile::RawCodec,
            )
            .await
            .ok()?
            .into_inner();
        stream.message().await.ok().flatten()
    })
    .await;
    matches!(answer, Ok(Some(_)))
}

/// Log lines that mean a member refused something a correct peer sent.
const FALSE_REFUSALS: [&str; 2] = ["ending a peer's append stream", "refused a peer's answer"];

/// What the corruption checks log on a mismatch (`raftkv_raft::node` `corruption`): the
/// faults here never damage a store, so each would be a false alarm.
const FALSE_CORRUPTION: [&str; 6] = [
    "found data inconsistency with peers",
    "found different hash values from remote peer",
    "found hash mismatch",
    "revision from follower must be less than or equal to leader's",
    "same compact revision then hashes must match",
    "raising the CORRUPT alarm",
];

/// One client: random operations one at a time, moving to another member after an error.
/// One client of random ops on the chaos keys, through gRPC or (`gateway`) etcd's JSON
/// gateway, moving to the next member after a failure.
pub(crate) async fn client(
    id: usize,
    endpoints: Vec<String>,
    seed: u64,
    shared: Arc<Shared>,
    gateway: bool,
) {
    let mut rng = Rng::new(seed ^ ((id as u64 + 1) * 7919));
    let mut target = id % endpoints.len();
    let mut kv: Option<KvClient<Channel>> = None;
    let mut last_seen: Vec<Option<String>> = vec![None; KEYS];
    let mut n = 0u64;
    while !shared.stop.load(std::sync::atomic::Ordering::Relaxed) {
        if kv.is_none() && !gateway {
            match channel(&endpoints[target]).await {
                Some(c) => kv = Some(KvClient::new(c)),
                None => {
                    target = (target + 1) % endpoints.len();
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            }
        }
        let k = rng.below(KEYS);
        let key = format!("k{k}");
        n += 1;
        // Every other value is long enough for the value log (64 bytes or more), so kills
        // land between a value's fdatasync and the point that covers it; the others stay
        // inline in their records.
        let value = if n.is_multiple_of(2) {
            format!("c{id}-{n}")
        } else {
            format!("c{id}-{n}-{}", "v".repeat(64))
        };
        let input = match rng.below(10) {
            0..=3 => Input::Get,
            4..=6 => Input::Put(value.clone()),
            7 => Input::Delete,
            _ => Input::Cas {
                expected: last_seen[k].clone(),
                new: value.clone(),
            },
        };
        let call = shared.now();
        let result = match kv.as_mut() {
            Some(client) => run_op_rev(client, &key, &input).await,
            None => crate::chaos_gateway::run_op_rev(&endpoints[target], &key, &input).await,
        };
        let ret = shared.now();
        let failed = result.is_none();
        let note = match &result {
            Some((_, r)) => format!("(member {target}, revision {r})"),
            None => format!("(member {target})"),
        };
        let revision = result.as_ref().map_or(0, |(_, r)| *r);
        let output = result.map(|(o, _)| o);
        let op = Op {
            client: id,
            key: key.clone(),
            input: input.clone(),
            output: output.clone().unwrap_or(Output::Unknown),
            call,
            ret: if failed { None } else { Some(ret) },
            note,
        };
        if let Some(Output::Value(v)) = &output {
            last_seen[k] = v.clone();
        }
        // A failed read tells nothing; a failed write may still happen: keep it as unknown.
        if !(failed && input == Input::Get) {
            shared.history.lock().unwrap().push((op, target, revision));
        }
        if failed {
            kv = None;
            target = (target + 1) % endpoints.len();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn run_op(kv: &mut KvClient<Channel>, key: &str, input: &Input) -> Option<Output> {
    run_op_rev(kv, key, input).await.map(|(o, _)| o)
}

/// The outcome and the revision in the response header.
async fn run_op_rev(kv: &mut KvClient<Channel>, key: &str, input: &Input) -> Option<(Output, i64)> {
    let key_bytes = key.as_bytes().to_vec();
    let fut = async {
        match input {
            Input::Get => {
                let r = kv
                    .range(RangeRequest {
                        key: key_bytes.into(),
                        ..Default::default()
                    })
                    .await
                    .ok()?
                    .into_inner();
                let v = r
                    .kvs
                    .first()
                    .map(|kv| String::from_utf8_lossy(&kv.value).into_owned());
                Some((Output::Value(v), rev(&r.header)))
            }
            Input::Put(v) => {
                let r = kv
                    .put(PutRequest {
                        key: key_bytes.into(),
                        value: v.clone().into_bytes().into(),
                        ..Default::default()
                    })
                    .await
                    .ok()?
                    .into_inner();
                Some((Output::Put, rev(&r.header)))
            }
            Input::Delete => {
                let r = kv
                    .delete_range(DeleteRangeRequest {
                        key: key_bytes.into(),
                        ..Default::default()
                    })
                    .await
                    .ok()?
                    .into_inner();
                Some((Output::Deleted(r.deleted), rev(&r.header)))
            }
            Input::Cas { expected, new } => {
                let r = kv
                    .txn(cas_txn(key, expected.as_deref(), new))
                    .await
                    .ok()?
                    .into_inner();
                Some((Output::Cas(r.succeeded), rev(&r.header)))
            }
        }
    };
    tokio::time::timeout(Duration::from_millis(1500), fut)
        .await
        .ok()
        .flatten()
}

/// A compare-and-swap of `key`: put `new` if its value is `expected` (absent for `None`).
pub fn cas_txn(key: &str, expected: Option<&str>, new: &str) -> TxnRequest {
    let key_bytes = key.as_bytes().to_vec();
    let compare = match expected {
        Some(v) => Compare {
            result: CompareResult::Equal as i32,
            target: CompareTarget::Value as i32,
            key: key_bytes.clone().into(),
            target_union: Some(TargetUnion::Value(v.as_bytes().to_vec().into())),
            range_end: Default::default(),
        },
        None => Compare {
            result: CompareResult::Equal as i32,
            target: CompareTarget::Create as i32,
            key: key_bytes.clone().into(),
            target_union: Some(TargetUnion::CreateRevision(0)),
            range_end: Default::default(),
        },
    };
    TxnRequest {
        compare: vec![compare],
        success: vec![RequestOp {
            request: Some(OpRequest::RequestPut(PutRequest {
                key: key_bytes.into(),
                value: new.as_bytes().to_vec().into(),
                ..Default::default()
            })),
        }],
        failure: vec![],
    }
}

/// Member `i`'s id (it is running and healthy when faults start).
fn rev(header: &Option<raftkv_proto::etcdserverpb::ResponseHeader>) -> i64 {
    header.as_ref().map_or(0, |h| h.revision)
}

fn others(n: usize, not: &[usize]) -> Vec<usize> {
    (0..n).filter(|i| !not.contains(i)).collect()
}

/// Applies `fault`, holds it, heals it; returns minority windows it created.
pub(crate) async fn inject(
    cluster: &mut Cluster,
    fault: Fault,
    rng: &mut Rng,
    shared: &Shared,
) -> Vec<Minority> {
    let n = cluster.members.len();
    let hold = Duration::from_millis(800 + rng.below(1200) as u64);
    let live = running(cluster);
    let leader = match cluster.leader().await {
        Some(l) => l,
        None => live[rng.below(live.len())],
    };
    let followers: Vec<usize> = live.iter().copied().filter(|&i| i != leader).collect();
    let follower = followers[rng.below(followers.len())];
    let mut windows = Vec::new();
    match fault {
        Fault::KillLeader | Fault::KillFollower => {
            let victim = if matches!(fault, Fault::KillLeader) {
                leader
            } else {
                follower
            };
            cluster.kill(victim);
            tokio::time::sleep(hold).await;
            cluster.restart(victim);
        }
        Fault::KillMajority | Fault::KillAll => {
            let count = if matches!(fault, Fault::KillAll) {
                n
            } else {
                n / 2 + 1
            };
            let mut victims: Vec<usize> = vec![leader];
            while victims.len() < count {
                let v = rng.below(n);
                if !victims.contains(&v) {
                    victims.push(v);
                }
            }
            let from = shared.now();
            for &v in &victims {
                cluster.kill(v);
            }
            tokio::time::sleep(hold).await;
            // The survivors are a minority until the others are back.
            windows.push(Minority {
                members: others(n, &victims),
                from,
                to: shared.now(),
            });
            for &v in &victims {
                cluster.restart(v);
            }
        }
        Fault::PauseLeader | Fault::PauseFollower => {
            let victim = if matches!(fault, Fault::PauseLeader) {
                leader
            } else {
                follower
            };
            cluster.pause(victim);
            tokio::time::sleep(hold).await;
            cluster.resume(victim);
        }
        Fault::IsolateLeader | Fault::PartitionMinority => {
            let minority: Vec<usize> = if matches!(fault, Fault::IsolateLeader) {
                vec![leader]
            } else {
                // n = 5: the leader and one more; n = 3: the leader alone.
                let mut m = vec![leader];
                if n >= 5 {
                    m.push(follower);
                }
                m
            };
            let mut minority_ids = Vec::new();
            for &m in &minority {
                minority_ids.push(cluster.member_id(m).await);
            }
            let net = cluster.net.as_ref().expect("proxied cluster");
            let from = shared.now();
            net.partition(&minority, &others(n, &minority));
            // The cut is real: the majority elects a leader of its own.
            let majority = others(n, &minority);
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let mut elected = false;
                for &m in &majority {
                    if let Some(status) = cluster.status(m).await {
                        elected |= status.leader != 0 && !minority_ids.contains(&status.leader);
                    }
                }
                if elected {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "the majority {majority:?} elected no leader of its own while cut off from {minority:?}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            tokio::time::sleep(hold).await;
            let to = shared.now();
            let net = cluster.net.as_ref().expect("proxied cluster");
            net.heal();
            windows.push(Minority {
                members: minority,
                from,
                to,
            });
        }
        Fault::Bridge => {
            // Two halves that only the bridge member sees both of.
            let bridge = follower;
            let rest = others(n, &[bridge]);
            let (a, b) = rest.split_at(rest.len() / 2);
            let net = cluster.net.as_ref().expect("proxied cluster");
            net.partition(a, b);
            tokio::time::sleep(hold).await;
            net.heal();
        }
        Fault::SlowLinks => {
            let net = cluster.net.as_ref().expect("proxied cluster");
            for from in 0..n {
                for to in 0..n {
                    if from != to {
                        let ms = 5 + rng.below(60) as u64;
                        net.set(
                            from,
                            to,
                            crate::proxy::Link::Delay(Duration::from_millis(ms)),
                        );
                    }
                }
            }
            tokio::time::sleep(hold).await;
            net.heal();
        }
        Fault::RollingRestart => {
            // docs/operations.md's upgrade procedure: one member at a time, SIGTERM, start
            // again, wait until it is healthy before the next.
            for i in live {
                cluster.stop(i);
                cluster.restart(i);
                cluster.wait_healthy(Duration::from_secs(20)).await;
            }
        }
        Fault::ReplaceFollower => replace_follower(cluster, follower).await,
    }
    windows
}

async fn replace_follower(cluster: &mut Cluster, old: usize) {
    let eps = cluster.live_endpoints();
    let name = format!("m{}", cluster.members.len() + 1);
    let (client, peer) = (free_port(), free_port());
    let added = etcdctl_ok(
        &eps,
        &[
            "member",
            "add",
            &name,
            &format!("--peer-urls=http://127.0.0.1:{peer}"),
            "--learner",
        ],
    );
    let id = added
        .split_whitespace()
        .nth(1)
        .expect("member id")
        .to_string();
    let learner = cluster.spawn_joining(&name, client, peer);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(30);
    let mut refusals = 0;
    loop {
        let out = etcdctl(&cluster.live_endpoints(), &["member", "promote", &id], None);
        if out.status.success() {
            break;
        }
        refusals += 1;
        if Instant::now() >= deadline {
            // Each live member's raft index beside the learner's, and their logs' tails.
            let mut state = String::new();
            for i in running(cluster) {
                let index = cluster.status(i).await.map(|s| s.raft_index);
                let m = &cluster.members[i];
                state += &format!("--- {} (raft index {index:?}):\n{}\n", m.name, m.log_tail());
            }
            // A learner that could not join exits; the fixture still holds its handle.
            let exited = cluster.exited(learner);
            panic!(
                "learner {name} never promoted ({refusals} refusals, its exit: {exited:?}): {}\n{state}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!(
        "chaos: learner {name} promoted after {refusals} refusals in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let old_id = cluster.member_id(old).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = etcdctl(
            &cluster.live_endpoints(),
            &["member", "remove", &format!("{old_id:x}")],
            None,
        );
        if out.status.success() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "removing {old_id:x} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    cluster.kill(old);
}

/// Which faults a schedule draws from.
#[derive(Debug, Clone, Copy)]
pub enum Schedule {
    /// Kills, pauses, partitions, slow links, rolling restarts (members behind proxies).
    Faults,
    /// Membership changes mixed with kills, pauses and rolling restarts.
    Membership,
}

/// Runs one seeded schedule of `rounds` faults on `size` members and checks the outcome.
/// Returns (operations, faults) checked.
pub async fn run_schedule(
    size: usize,
    rounds: usize,
    seed: u64,
    schedule: Schedule,
) -> (usize, usize) {
    eprintln!("chaos: {size} members, {rounds} faults, {schedule:?}, RAFTKV_SEED={seed}");
    let faults_from: &[Fault] = match schedule {
        Schedule::Faults => &PROXIED_FAULTS,
        Schedule::Membership => &MEMBERSHIP_FAULTS,
    };
    let mut cluster = Cluster::start(
        Server::Raftkv,
        size,
        Options {
            heartbeat_ms: 50,
            election_ms: 300,
            // Raft snapshots every 100 entries, with 200 kept behind each, so that the log
            // is purged behind them all through the faults: a member killed, paused or cut
            // off for long comes back through a snapshot file written for it, and a kill -9
            // of everyone restarts from stores flushed at a snapshot plus the log after it.
            // A member just through a snapshot finds the log it needs next still there (a
            // learner with none kept could be sent snapshot after snapshot, never in sync).
            snapshot_count: Some(100),
            catchup_entries: Some(200),
            proxied: matches!(schedule, Schedule::Faults),
            // Lease checkpoints every second, so the kept lease's remainder is recorded and
            // cleared through the log all through the faults.
            extra_args: vec![
                "--experimental-enable-lease-checkpoint".into(),
                "--raftkv-lease-checkpoint-interval=1s".into(),
                // etcd's corruption checks all through the faults: a restarted member
                // compares its hash with its peers' before it starts, and the leader
                // compares every half second. Nothing here damages a store, so any
                // mismatch they report is false (checked at the end).
                "--experimental-initial-corrupt-check".into(),
                "--experimental-corrupt-check-time=500ms".into(),
                // Stalled snapshot clients (the hostile side) give their turns up fast.
                "--raftkv-snapshot-stall-timeout=1s".into(),
            ],
            ..Options::default()
        },
    )
    .await;
    let endpoints: Vec<String> = cluster.members.iter().map(|m| m.endpoint()).collect();
    let shared = Arc::new(Shared {
        history: Mutex::new(Vec::new()),
        epoch: Instant::now(),
        stop: std::sync::atomic::AtomicBool::new(false),
    });
    // A mirror of the `k` keys into a cluster beside, from every member's endpoint, started
    // before the writers so that it follows nearly every change (not in
    // membership runs, which replace the members it was given).
    let mirror = match schedule {
        Schedule::Faults => Some(crate::chaos_mirror::Mirror::start(&cluster).await),
        Schedule::Membership => None,
    };
    // The gRPC clients, and one more through the JSON gateway.
    let clients: Vec<_> = (0..=CLIENTS)
        .map(|id| {
            let gateway = id == CLIENTS;
            tokio::spawn(client(id, endpoints.clone(), seed, shared.clone(), gateway))
        })
        .collect();
    write_blobs(&endpoints[0], seed).await;
    let peer_ports: Vec<u16> = cluster.members.iter().map(|m| m.peer_port).collect();
    let attacker = tokio::spawn(hostile(endpoints.clone(), peer_ports, seed, shared.clone()));
    let watchers = crate::chaos_watch::Watchers::start(&endpoints);
    let leases = crate::chaos_lease::LeaseKeeper::start(&endpoints).await;
    let granter = crate::chaos_lease::Granter::start(&endpoints);
    let locks = crate::chaos_lock::LockContenders::start(&endpoints);
    let mut rng = Rng::new(seed);
    let mut windows = Vec::new();
    let mut faults = Vec::new();
    for _ in 0..rounds {
        tokio::time::sleep(Duration::from_millis(300 + rng.below(500) as u64)).await;
        let mut fault = faults_from[rng.below(faults_from.len())];
        if faults.is_empty() && matches!(schedule, Schedule::Membership) {
            fault = Fault::ReplaceFollower; // every membership run changes membership
        }
        faults.push(fault);
        windows.extend(inject(&mut cluster, fault, &mut rng, &shared).await);
        cluster.wait_healthy(Duration::from_secs(30)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    shared
        .stop
        .store(true, std::sync::atomic::Ordering::Relaxed);
    for c in clients {
        c.await.expect("client task");
    }
    let leased = leases.finish(seed).await;
    let locked = {
        let leader = cluster.leader().await.expect("leader after the run");
        locks
            .finish(&cluster.members[leader].endpoint(), seed)
            .await
    };
    let (hostile_sent, wrongly_taken, stalled) = attacker.await.expect("hostile task");
    assert!(
        wrongly_taken.is_empty(),
        "seed {seed}: the cluster took hostile requests: {wrongly_taken:?}"
    );
    // Final reads of every key, after everything healed, join the history: an acknowledged
    // write that was lost shows up as a violation here.
    let (mut kv, history) = final_reads(&cluster, &shared).await;
    let ops: Vec<Op> = history.iter().map(|(op, _, _)| op.clone()).collect();
    let acknowledged_writes = ops
        .iter()
        .filter(|o| o.input != Input::Get && o.ret.is_some())
        .count();
    let through_gateway = ops
        .iter()
        .filter(|o| o.client == CLIENTS && o.ret.is_some())
        .count();
    eprintln!(
        "chaos: seed {seed}: {} ops ({acknowledged_writes} acknowledged writes, {} unknown, {through_gateway} answered through the JSON gateway), {hostile_sent} hostile requests, faults {faults:?}",
        ops.len(),
        ops.iter().filter(|o| o.ret.is_none()).count()
    );
    assert!(
        through_gateway > 0,
        "seed {seed}: the gateway client got no answer at all"
    );
    // Every acknowledged put is still there at the revision it was acknowledged with.
    let mut lost = Vec::new();
    for (op, target, revision) in &history {
        let (Input::Put(value), Some(_)) = (&op.input, op.ret) else {
            continue;
        };
        let found = kv
            .range(RangeRequest {
                key: op.key.clone().into_bytes().into(),
                revision: *revision,
                ..Default::default()
            })
            .await
            .expect("historical read")
            .into_inner();
        let at = found
            .kvs
            .first()
            .map(|kv| (kv.value.to_vec(), kv.mod_revision));
        if at != Some((value.clone().into_bytes(), *revision)) {
            lost.push(format!(
                "{op:?} acknowledged by member {target} at revision {revision}; there now: {:?}",
                at.map(|(v, r)| (String::from_utf8_lossy(&v).into_owned(), r))
            ));
        }
    }
    assert!(
        lost.is_empty(),
        "seed {seed}: acknowledged writes lost (faults {faults:?}):\n{}",
        lost.join("\n")
    );
    if let Err(v) = linearizable::check(&ops) {
        panic!("seed {seed}: history is not linearizable (faults {faults:?}):\n{v}");
    }
    check_minorities(&history, &windows, seed);
    converge(&cluster, seed).await;
    serving(&cluster, seed).await;
    snapshots_served(&cluster, stalled, seed).await;
    let granted = {
        let leader = cluster.leader().await.expect("leader after the run");
        let live: Vec<String> = running(&cluster)
            .into_iter()
            .map(|i| cluster.members[i].endpoint())
            .collect();
        granter
            .finish(&live, &cluster.members[leader].endpoint(), seed)
            .await
    };
    eprintln!("chaos: seed {seed}: {granted}");
    let watched = check_watchers(&cluster, watchers, &history, seed).await;
    eprintln!("chaos: seed {seed}: {watched}");
    let (memory, store) = catch_up_reads(&cluster);
    eprintln!(
        "chaos: seed {seed}: watch catch-up reads on the members now running (counted since each last started): {memory} from memory, {store} from the store"
    );
    if let Some(mirror) = mirror {
        let leader = cluster.leader().await.expect("leader after the run");
        let mirrored = mirror
            .finish(&cluster.members[leader].endpoint(), seed)
            .await;
        eprintln!("chaos: seed {seed}: {mirrored}");
    }
    eprintln!("chaos: seed {seed}: {leased}");
    eprintln!("chaos: seed {seed}: {locked}");
    let logged = |line: &str| -> usize {
        cluster
            .members
            .iter()
            .map(|m| m.log_text().matches(line).count())
            .sum()
    };
    eprintln!(
        "chaos: seed {seed}: {} snapshots taken, {} snapshot files written for followers, {} installed ({} merged into a follower's store)",
        logged("snapshot taken"),
        logged("snapshot written for a follower"),
        logged("installed snapshot index"),
        logged("snapshot installed (merged)"),
    );
    eprintln!(
        "chaos: seed {seed}: {} snapshot streams ended for a client that took nothing",
        logged("snapshot stream ended"),
    );
    eprintln!(
        "chaos: seed {seed}: {} corruption check passes by leaders ({} comparing no follower), {} initial checks passed on restart",
        logged("finished peer corruption check"),
        logged("number_of_peers_checked=0"),
        logged("initial corruption checking passed"),
    );
    for m in &cluster.members {
        let log = m.log_text();
        for line in FALSE_CORRUPTION {
            assert!(
                !log.contains(line),
                "seed {seed}: {} reported a corruption no fault made ({line}):\n{}",
                m.name,
                m.log_tail()
            );
        }
        for line in FALSE_REFUSALS {
            assert!(
                !log.contains(line),
                "seed {seed}: {} refused a correct peer ({line}):\n{}",
                m.name,
                m.log_tail()
            );
        }
    }
    (ops.len(), faults.len())
}

/// The history so far with a final read of every key from the leader after everything
/// healed (an acknowledged write that was lost shows up in the check as a violation), and
/// a client of the leader.
pub(crate) async fn final_reads(
    cluster: &Cluster,
    shared: &Shared,
) -> (KvClient<Channel>, Vec<(Op, usize, i64)>) {
    let leader = cluster.leader().await.expect("leader after the run");
    let mut kv = KvClient::new(
        channel(&cluster.members[leader].endpoint())
            .await
            .expect("leader connection"),
    );
    let mut history: Vec<(Op, usize, i64)> = shared.history.lock().unwrap().clone();
    for k in 0..KEYS {
        let key = format!("k{k}");
        let call = shared.now();
        let out = run_op(&mut kv, &key, &Input::Get)
            .await
            .expect("final read");
        history.push((
            Op {
                client: usize::MAX,
                key,
                input: Input::Get,
                output: out,
                call,
                ret: Some(shared.now()),
                note: "(final read)".into(),
            },
            leader,
            0,
        ));
    }
    (kv, history)
}

/// A member cut off from every majority never acknowledges a write made wholly inside the
/// cut.
pub(crate) fn check_minorities(history: &[(Op, usize, i64)], windows: &[Minority], seed: u64) {
    for (op, target, _) in history {
        let Some(ret) = op.ret else { continue };
        if op.input == Input::Get {
            continue;
        }
        for w in windows {
            assert!(
                !(w.members.contains(target) && op.call >= w.from && ret <= w.to),
                "seed {seed}: member {target}, in a minority {w:?}, acknowledged {op:?}"
            );
        }
    }
}

/// The watchers' streams (see `chaos_watch`): each on its own, each equal to the history
/// a fresh watch reads from the leader, that history equal to a fresh watch on every
/// member and to range reads at each revision, and every acknowledged put in it.
async fn check_watchers(
    cluster: &Cluster,
    watchers: crate::chaos_watch::Watchers,
    history: &[(Op, usize, i64)],
    seed: u64,
) -> String {
    use crate::chaos_watch::{
        check_against_ranges, check_stream, read_history, without_sentinel, write_sentinel,
    };
    let leader = cluster.leader().await.expect("leader after the run");
    let mut kv = KvClient::new(
        channel(&cluster.members[leader].endpoint())
            .await
            .expect("leader connection"),
    );
    let last = write_sentinel(&mut kv).await;
    let reference = read_history(&cluster.members[leader].endpoint(), last).await;
    let logs = watchers.finish(last, Duration::from_secs(30)).await;
    for (i, log) in logs.iter().enumerate() {
        if let Err(e) = check_stream(&format!("watcher on member {i}"), log, &reference) {
            panic!("seed {seed}: {e}");
        }
        let events = without_sentinel(log.events());
        if events != reference {
            let at = events
                .iter()
                .zip(&reference)
                .position(|(a, b)| a != b)
                .unwrap_or(events.len().min(reference.len()));
            panic!(
                "seed {seed}: watcher on member {i} ({} events, {} resumes) differs from the history ({} events) at event {at}: {:?} vs {:?}",
                events.len(),
                log.resumes(),
                reference.len(),
                events.get(at),
                reference.get(at)
            );
        }
    }
    for i in running(cluster) {
        let fresh = read_history(&cluster.members[i].endpoint(), last).await;
        assert!(
            fresh == reference,
            "seed {seed}: a fresh watch on member {i} reads another history ({} vs {} events)",
            fresh.len(),
            reference.len()
        );
    }
    if let Err(e) = check_against_ranges(&mut kv, &reference).await {
        panic!("seed {seed}: {e}");
    }
    let in_stream: std::collections::HashSet<(i64, &str, &str)> = reference
        .iter()
        .filter(|e| e.1 == 0)
        .map(|e| (e.0, e.2.as_str(), e.3.as_str()))
        .collect();
    for (op, _, revision) in history {
        if let (Input::Put(value), Some(_)) = (&op.input, op.ret) {
            assert!(
                in_stream.contains(&(*revision, op.key.as_str(), value.as_str())),
                "seed {seed}: acknowledged {op:?} at revision {revision} is missing from the watch streams"
            );
        }
    }
    let resumes: usize = logs.iter().map(|l| l.resumes()).sum();
    let progress: usize = logs.iter().map(|l| l.progress.len()).sum();
    assert!(progress > 0, "seed {seed}: no progress answer came");
    format!(
        "{} watchers, {} events each, {resumes} resumes, {progress} progress answers none ahead of its events, streams equal to the MVCC history",
        logs.len(),
        reference.len()
    )
}

/// Every running member answers gRPC's health check with SERVING after the faults.
async fn serving(cluster: &Cluster, seed: u64) {
    use raftkv_proto::grpc_health_v1::HealthCheckRequest;
    use raftkv_proto::grpc_health_v1::health_client::HealthClient;
    for i in running(cluster) {
        let c = channel(&cluster.members[i].endpoint())
            .await
            .unwrap_or_else(|| panic!("seed {seed}: member {i} does not connect"));
        let status = HealthClient::new(c)
            .check(HealthCheckRequest::default())
            .await
            .map(|r| r.into_inner().status);
        assert_eq!(
            status.ok(),
            Some(1),
            "seed {seed}: member {i}'s health check"
        );
    }
}

/// Every member reaches the same revision and the same data.
async fn converge(cluster: &Cluster, seed: u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut seen = Vec::new();
        let live = running(cluster);
        for (i, m) in cluster.members.iter().enumerate() {
            if !live.contains(&i) {
                continue;
            }
            let Some(status) = cluster.status(i).await else {
                break;
            };
            let Some(c) = channel(&m.endpoint()).await else {
                break;
            };
            let Ok(all) = KvClient::new(c)
                .range(RangeRequest {
                    key: vec![0].into(),
                    range_end: vec![0].into(),
                    serializable: true,
                    ..Default::default()
                })
                .await
            else {
                break;
            };
            let all = all.into_inner();
            let data: Vec<(Vec<u8>, Vec<u8>, i64)> = all
                .kvs
                .iter()
                .map(|kv| (kv.key.to_vec(), kv.value.to_vec(), kv.mod_revision))
                .collect();
            seen.push((status.header.map(|h| h.revision), data));
        }
        if seen.len() == live.len() && seen.windows(2).all(|w| w[0] == w[1]) {
            return;
        }
        if Instant::now() > deadline {
            panic!("seed {seed}: members did not converge: {seen:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The seed a test runs: `RAFTKV_SEED` as given (so the seed a run prints replays it), else
/// the clock plus `offset`, so the tests that start together run different schedules.
pub(crate) fn seed(offset: u64) -> u64 {
    std::env::var("RAFTKV_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
                .wrapping_add(offset)
        })
}

/// The hostile client's watch check can fail: a well-formed create request is answered,
/// and the two it sends in a run (over the limit, not protobuf) are not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watch_check_tells_an_answer_from_a_refusal() {
    use prost::Message;
    use raftkv_proto::etcdserverpb::watch_request::RequestUnion;
    use raftkv_proto::etcdserverpb::{WatchCreateRequest, WatchRequest};
    let cluster = Cluster::start(Server::Raftkv, 1, Options::default()).await;
    let endpoint = cluster.members[0].endpoint();
    let dial = || async { channel(&endpoint).await.expect("connect") };
    let create = WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
            key: bytes::Bytes::from_static(b"w"),
            ..Default::default()
        })),
    };
    assert!(watch_request_answered(dial().await, create.encode_to_vec()).await);
    assert!(!watch_request_answered(dial().await, oversized_watch_request()).await);
    assert!(!watch_request_answered(dial().await, MALFORMED_WATCH_REQUEST.to_vec()).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_short_three_members() {
    run_schedule(3, 4, seed(0), Schedule::Faults).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_short_five_members() {
    run_schedule(5, 3, seed(1), Schedule::Faults).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_short_membership_changes() {
    run_schedule(3, 3, seed(2), Schedule::Membership).await;
}

/// `RAFTKV_SOAK=<minutes>`: seed after seed on 3 and 5 members until the time is up; every
/// fourth run is the auto-compaction schedule (`chaos_compaction`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_soak() {
    let Some(minutes) = std::env::var("RAFTKV_SOAK")
        .ok()
        .and_then(|m| m.parse::<f64>().ok())
    else {
        eprintln!("chaos_soak: set RAFTKV_SOAK=<minutes> to run it");
        return;
    };
    let until = Instant::now() + Duration::from_secs_f64(minutes * 60.0);
    let mut base = seed(0);
    let (mut runs, mut ops, mut faults) = (0, 0, 0);
    while Instant::now() < until {
        let size = if runs % 2 == 0 { 3 } else { 5 };
        let schedule = if runs % 3 == 2 {
            Schedule::Membership
        } else {
            Schedule::Faults
        };
        let (o, f) = if runs % 4 == 3 {
            crate::chaos_compaction::run(base, 6).await
        } else {
            run_schedule(size, 6, base, schedule).await
        };
        runs += 1;
        ops += o;
        faults += f;
        base = base.wrapping_add(1);
    }
    eprintln!("chaos_soak: {runs} runs, {ops} operations, {faults} faults checked, no violation");
}
