//! Running a workload: connections spread over the endpoints, clients spread over the
//! connections, each client issuing one request at a time, an optional total rate limit,
//! and a stop after `--total` requests or `--duration`. The lease requests live in
//! [`crate::lease`].

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use raftkv_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use raftkv_proto::etcdserverpb::kv_client::KvClient;
use raftkv_proto::etcdserverpb::lease_client::LeaseClient;
use raftkv_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use raftkv_proto::etcdserverpb::request_op::Request as OpRequest;
use raftkv_proto::etcdserverpb::{
    Compare, PutRequest, RangeRequest, RequestOp, StatusRequest, TxnRequest,
};
use tokio::sync::Mutex;
use tonic::transport::{Channel, Endpoint};

use crate::lease;
use crate::stats::{Recorder, Report};

/// Connection and pacing options shared by every workload.
#[derive(Debug, Clone)]
pub struct Options {
    /// `host:port` or URLs.
    pub endpoints: Vec<String>,
    /// gRPC connections (HTTP/2), spread over the endpoints.
    pub conns: usize,
    /// Concurrent clients, spread over the connections.
    pub clients: usize,
    /// Stop after this many requests (unless `duration` is set).
    pub total: u64,
    /// Stop after this long instead.
    pub duration: Option<Duration>,
    /// Total requests per second across clients (0: unlimited).
    pub rate: u64,
    /// Only connect to the leader.
    pub target_leader: bool,
    /// Draw a progress bar on a terminal.
    pub progress: bool,
    /// Per-request timeout.
    pub timeout: Duration,
}

/// What each request does.
#[derive(Debug, Clone)]
pub enum Workload {
    /// `put`: one key per request.
    Put(KeyGen),
    /// `put` of prepared items (a corpus's keys and values, e.g. Kubernetes-like Pods): one
    /// item per request, picked at random or in turn.
    PutItems {
        items: Arc<[(Bytes, Bytes)]>,
        sequential: bool,
    },
    /// `range`: one range request for `key`..`end`.
    Range {
        key: Vec<u8>,
        end: Vec<u8>,
        limit: i64,
        serializable: bool,
    },
    /// `txn-put`: a txn of `ops` puts.
    TxnPut { keys: KeyGen, ops: usize },
    /// `mixed`: a linearizable get with probability `read_ratio`, else a put.
    Mixed { keys: KeyGen, read_ratio: f64 },
    /// `lease-keepalive`: each client grants one lease of `ttl` seconds before the clock
    /// starts, then each request is one keep-alive of it on a stream of its own.
    LeaseKeepAlive { ttl: i64 },
    /// `lease-grant`: each request grants a new lease of `ttl` seconds (left to expire).
    LeaseGrant { ttl: i64 },
}

impl Workload {
    /// The name used in reports.
    pub fn name(&self) -> &'static str {
        match self {
            Workload::Put(_) | Workload::PutItems { .. } => "put",
            Workload::Range { .. } => "range",
            Workload::TxnPut { .. } => "txn-put",
            Workload::Mixed { .. } => "mixed",
            Workload::LeaseKeepAlive { .. } => "lease-keepalive",
            Workload::LeaseGrant { .. } => "lease-grant",
        }
    }
}

/// How keys and values are made: etcd `benchmark`'s scheme (the key number as a varint in
/// a zeroed `key_size`-byte buffer), random or sequential over `key_space` keys.
#[derive(Debug, Clone)]
pub struct KeyGen {
    pub key_size: usize,
    pub val_size: usize,
    pub key_space: u64,
    pub sequential: bool,
}

impl KeyGen {
    pub(crate) fn key(&self, n: u64) -> Vec<u8> {
        let mut key = vec![0u8; self.key_size.max(1)];
        // Zig-zag varint of n (Go's binary.PutVarint), truncated to the key size.
        let mut z = (n << 1) ^ ((n as i64 >> 63) as u64);
        for b in key.iter_mut() {
            let byte = (z & 0x7f) as u8;
            z >>= 7;
            *b = if z == 0 { byte } else { byte | 0x80 };
            if z == 0 {
                break;
            }
        }
        key
    }

    pub(crate) fn pick(&self, seq: u64, rng: &mut Rng) -> u64 {
        let space = self.key_space.max(1);
        if self.sequential {
            seq % space
        } else {
            rng.below(space)
        }
    }
}

/// A seeded generator for key choice and read/write mixes (rand's small, fast one).
pub struct Rng(rand::rngs::SmallRng);

impl Rng {
    pub fn new(seed: u64) -> Self {
        use rand::SeedableRng;
        Self(rand::rngs::SmallRng::seed_from_u64(seed))
    }

    pub fn below(&mut self, n: u64) -> u64 {
        use rand::RngExt;
        self.0.random_range(0..n.max(1))
    }

    fn unit(&mut self) -> f64 {
        use rand::RngExt;
        self.0.random()
    }
}

/// TLS for every connection of the run (`--cacert`, `--cert`, `--key`), set once at start.
static TLS: std::sync::OnceLock<Arc<raftkv_client::tls::ClientConfig>> = std::sync::OnceLock::new();

/// Dial every endpoint over TLS with `config`.
pub fn use_tls(config: Arc<raftkv_client::tls::ClientConfig>) {
    let _ = TLS.set(config);
}

fn url(endpoint: &str) -> String {
    if endpoint.contains("://") {
        endpoint.to_string()
    } else if TLS.get().is_some() {
        format!("https://{endpoint}")
    } else {
        format!("http://{endpoint}")
    }
}

async fn connect(endpoint: &str, timeout: Duration) -> Result<Channel> {
    connect_channel(endpoint, Some(timeout)).await
}

/// One gRPC connection; `timeout` bounds each unary call (leave it out for watch streams,
/// which live as long as the run).
pub(crate) async fn connect_channel(endpoint: &str, timeout: Option<Duration>) -> Result<Channel> {
    let mut ep = Endpoint::from_shared(url(endpoint))
        .with_context(|| format!("bad endpoint {endpoint}"))?
        .connect_timeout(Duration::from_secs(3))
        .tcp_nodelay(true);
    if let Some(t) = timeout {
        ep = ep.timeout(t);
    }
    let tls = url(endpoint)
        .starts_with("https://")
        .then(|| TLS.get().cloned())
        .flatten();
    ep.connect_with_connector(raftkv_client::tls::connector(tls))
        .await
        .with_context(|| format!("cannot connect to {endpoint}"))
}

/// The endpoint whose member leads, from each member's `Status`.
pub async fn find_leader(endpoints: &[String]) -> Result<String> {
    for ep in endpoints {
        let Ok(channel) = connect(ep, Duration::from_secs(3)).await else {
            continue;
        };
        let Ok(status) = MaintenanceClient::new(channel)
            .status(StatusRequest {})
            .await
        else {
            continue;
        };
        let status = status.into_inner();
        if status.leader != 0 && status.header.as_ref().map(|h| h.member_id) == Some(status.leader)
        {
            return Ok(ep.clone());
        }
    }
    bail!("no endpoint reports itself as the leader: {endpoints:?}")
}

/// Runs `workload` and returns its report.
pub async fn run(opts: &Options, workload: &Workload) -> Result<Report> {
    if opts.conns == 0 || opts.clients == 0 {
        bail!("--conns and --clients must be at least 1");
    }
    if opts.endpoints.is_empty() {
        bail!("no endpoints");
    }
    if matches!(workload, Workload::PutItems { items, .. } if items.is_empty()) {
        bail!("no items to put");
    }
    let endpoints = if opts.target_leader {
        vec![find_leader(&opts.endpoints).await?]
    } else {
        opts.endpoints.clone()
    };
    let mut channels = Vec::with_capacity(opts.conns);
    for i in 0..opts.conns {
        channels.push(connect(&endpoints[i % endpoints.len()], opts.timeout).await?);
    }
    let value: Arc<[u8]> = {
        let size = match workload {
            Workload::Put(k)
            | Workload::TxnPut { keys: k, .. }
            | Workload::Mixed { keys: k, .. } => k.val_size,
            Workload::Range { .. }
            | Workload::PutItems { .. }
            | Workload::LeaseKeepAlive { .. }
            | Workload::LeaseGrant { .. } => 0,
        };
        let mut rng = Rng::new(7);
        (0..size).map(|_| b'a' + rng.below(26) as u8).collect()
    };
    let clients = clients(&channels, opts, workload).await?;
    let issued = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let deadline = opts.duration.map(|d| Instant::now() + d);
    let pacer = (opts.rate > 0).then(|| Arc::new(Pacer::new(opts.rate)));
    let started = Instant::now();
    let progress = (opts.progress && std::io::stderr().is_terminal()).then(|| {
        let done = done.clone();
        let total = if deadline.is_some() { 0 } else { opts.total };
        let duration = opts.duration;
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                draw_progress(
                    done.load(Ordering::Relaxed),
                    total,
                    duration,
                    started,
                    "requests",
                );
            }
        })
    });
    let mut tasks = Vec::with_capacity(opts.clients);
    for (c, mut client) in clients.into_iter().enumerate() {
        let workload = workload.clone();
        let value = value.clone();
        let issued = issued.clone();
        let done = done.clone();
        let pacer = pacer.clone();
        let total = opts.total;
        tasks.push(tokio::spawn(async move {
            let mut rec = Recorder::new();
            let mut rng = Rng::new(c as u64 + 1);
            loop {
                let seq = issued.fetch_add(1, Ordering::Relaxed);
                match deadline {
                    Some(d) if Instant::now() >= d => break,
                    None if seq >= total => break,
                    _ => {}
                }
                if let Some(p) = &pacer {
                    p.wait().await;
                }
                let t0 = Instant::now();
                let result = one_request(&mut client, &workload, &value, seq, &mut rng).await;
                match result {
                    Ok(()) => rec.ok_at(t0.saturating_duration_since(started), t0.elapsed()),
                    Err(status) => rec.error(|| status.message().to_string()),
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
            rec
        }));
    }
    let mut all = Recorder::new();
    for t in tasks {
        all.merge(&t.await.context("client task failed")?);
    }
    let elapsed = started.elapsed();
    if let Some(p) = progress {
        p.abort();
        draw_progress(
            done.load(Ordering::Relaxed),
            opts.total,
            opts.duration,
            started,
            "requests",
        );
        eprintln!();
    }
    Ok(all.report(workload.name(), elapsed))
}

/// One client's stubs on its connection, and what it set up before the clock started.
struct Client {
    kv: KvClient<Channel>,
    lease: LeaseClient<Channel>,
    /// `lease-keepalive`: the lease this client keeps alive.
    lease_id: i64,
    /// Per-request timeout (the channel's own ends at a call's response headers, which a
    /// stream sends before its first message).
    timeout: Duration,
}

/// The clients, spread over `channels`; for `lease-keepalive` each has granted its lease
/// (all at once, as etcd's tool does, but before the measured run starts).
async fn clients(channels: &[Channel], opts: &Options, workload: &Workload) -> Result<Vec<Client>> {
    let mut setups = Vec::with_capacity(opts.clients);
    for c in 0..opts.clients {
        let channel = channels[c % channels.len()].clone();
        let workload = workload.clone();
        let timeout = opts.timeout;
        setups.push(tokio::spawn(async move {
            let mut client = Client {
                kv: KvClient::new(channel.clone()),
                lease: LeaseClient::new(channel),
                lease_id: 0,
                timeout,
            };
            if let Workload::LeaseKeepAlive { ttl } = workload {
                client.lease_id = lease::grant(&mut client.lease, ttl)
                    .await
                    .with_context(|| format!("client {c} cannot grant its lease"))?;
            }
            anyhow::Ok(client)
        }));
    }
    let mut clients = Vec::with_capacity(setups.len());
    for s in setups {
        clients.push(s.await.context("client setup task failed")??);
    }
    Ok(clients)
}

async fn one_request(
    client: &mut Client,
    workload: &Workload,
    value: &Arc<[u8]>,
    seq: u64,
    rng: &mut Rng,
) -> Result<(), tonic::Status> {
    match workload {
        Workload::Put(keys) => {
            let key = keys.key(keys.pick(seq, rng));
            client.kv.put(put_request(key, value)).await?;
        }
        Workload::PutItems { items, sequential } => {
            let n = items.len() as u64;
            let i = if *sequential { seq % n } else { rng.below(n) };
            let (key, value) = &items[i as usize];
            client
                .kv
                .put(PutRequest {
                    key: key.clone(),
                    value: value.clone(),
                    ..Default::default()
                })
                .await?;
        }
        Workload::Range {
            key,
            end,
            limit,
            serializable,
        } => {
            client
                .kv
                .range(RangeRequest {
                    key: key.clone().into(),
                    range_end: end.clone().into(),
                    limit: *limit,
                    serializable: *serializable,
                    ..Default::default()
                })
                .await?;
        }
        Workload::TxnPut { keys, ops } => {
            let success = (0..*ops)
                .map(|i| RequestOp {
                    request: Some(OpRequest::RequestPut(put_request(
                        keys.key(keys.pick(seq.wrapping_mul(*ops as u64) + i as u64, rng)),
                        value,
                    ))),
                })
                .collect();
            // etcd benchmark's txn-put: an always-true compare, then the puts.
            let compare = vec![Compare {
                result: CompareResult::Greater as i32,
                target: CompareTarget::Create as i32,
                key: b"\0".to_vec().into(),
                target_union: Some(TargetUnion::CreateRevision(-1)),
                range_end: Default::default(),
            }];
            client
                .kv
                .txn(TxnRequest {
                    compare,
                    success,
                    failure: vec![],
                })
                .await?;
        }
        Workload::Mixed { keys, read_ratio } => {
            let key = keys.key(keys.pick(seq, rng));
            if rng.unit() < *read_ratio {
                client
                    .kv
                    .range(RangeRequest {
                        key: key.into(),
                        ..Default::default()
                    })
                    .await?;
            } else {
                client.kv.put(put_request(key, value)).await?;
            }
        }
        Workload::LeaseKeepAlive { .. } => {
            lease::keep_alive_once(&mut client.lease, client.lease_id, client.timeout).await?;
        }
        Workload::LeaseGrant { ttl } => {
            lease::grant(&mut client.lease, *ttl).await?;
        }
    }
    Ok(())
}

fn put_request(key: Vec<u8>, value: &Arc<[u8]>) -> PutRequest {
    PutRequest {
        key: key.into(),
        value: value.to_vec().into(),
        ..Default::default()
    }
}

/// Hands out request slots at a fixed total rate.
struct Pacer {
    interval: Mutex<tokio::time::Interval>,
}

impl Pacer {
    fn new(rate: u64) -> Self {
        let mut interval = tokio::time::interval(Duration::from_nanos(1_000_000_000 / rate.max(1)));
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        Self {
            interval: Mutex::new(interval),
        }
    }

    async fn wait(&self) {
        self.interval.lock().await.tick().await;
    }
}

/// One progress line on stderr: `done` of `total` (or of `duration`), counted in `what`.
pub(crate) fn draw_progress(
    done: u64,
    total: u64,
    duration: Option<Duration>,
    started: Instant,
    what: &str,
) {
    let fraction = match duration {
        Some(d) => started.elapsed().as_secs_f64() / d.as_secs_f64().max(1e-9),
        None => done as f64 / total.max(1) as f64,
    }
    .clamp(0.0, 1.0);
    let width = 40;
    let filled = (fraction * width as f64) as usize;
    let mut err = std::io::stderr().lock();
    let _ = write!(
        err,
        "\r[{}{}] {:>3.0}% {done} {what}, {:.1}s",
        "=".repeat(filled),
        " ".repeat(width - filled),
        fraction * 100.0,
        started.elapsed().as_secs_f64()
    );
    let _ = err.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_go_varints_in_a_fixed_size_buffer() {
        let k = KeyGen {
            key_size: 8,
            val_size: 0,
            key_space: 10_000,
            sequential: true,
        };
        assert_eq!(k.key(0), vec![0; 8]);
        assert_eq!(k.key(1), vec![2, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(k.key(300), vec![0xd8, 0x04, 0, 0, 0, 0, 0, 0]);
        // Distinct numbers give distinct keys within the key space.
        let keys: std::collections::HashSet<_> = (0..10_000).map(|n| k.key(n)).collect();
        assert_eq!(keys.len(), 10_000);
        let mut rng = Rng::new(1);
        assert_eq!(k.pick(10_005, &mut rng), 5);
    }

    #[test]
    fn random_picks_stay_in_the_key_space() {
        let k = KeyGen {
            key_size: 8,
            val_size: 0,
            key_space: 7,
            sequential: false,
        };
        let mut rng = Rng::new(3);
        let picks: std::collections::HashSet<_> = (0..1000).map(|s| k.pick(s, &mut rng)).collect();
        assert_eq!(picks.len(), 7);
        assert!(picks.iter().all(|&p| p < 7));
    }
}
