//! etcd `benchmark`'s watch workloads over raw `Watch` streams, and the watchers `compare`
//! keeps open while it puts.
//!
//! - `watch-latency` (etcd's, in the form with `--streams` / `--watchers-per-stream` /
//!   `--put-total`, which etcd's tool has since 3.6; 3.4's took `--total` and one watcher per
//!   client): every watcher watches one random key, one putter puts it at `--put-rate`, and
//!   each event's latency is measured at each watcher. etcd measures from the put's
//!   acknowledgement (an event that came first counts 0); we report that and, beside it, the
//!   latency from the put being sent, which has no such floor.
//! - `watch` (etcd 3.4's): watchers created one after another on each stream, their creation
//!   latency reported, then puts to the watched keys and the rate at which events arrive.
//! - [`Watchers`]: watchers that read everything they are sent, for `compare`'s puts with
//!   watchers open.
//!
//! Streams are spread over connections as etcd's tool spreads them: stream `i` uses client
//! `i % --clients`, and client `c` is connection `c % --conns`; connections are dialled round
//! robin over the endpoints (all to the leader with `--target-leader`).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use raftkv_proto::etcdserverpb::kv_client::KvClient;
use raftkv_proto::etcdserverpb::watch_client::WatchClient;
use raftkv_proto::etcdserverpb::watch_request::RequestUnion;
use raftkv_proto::etcdserverpb::{
    PutRequest, RangeRequest, WatchCreateRequest, WatchRequest, WatchResponse,
};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch as signal};
use tokio::task::JoinHandle;
// tonic's own re-export of tokio-stream: the same crate the workspace pins, without another
// entry in raftkv-bench's dependencies.
use tonic::codegen::tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

use crate::stats::{Recorder, Report};
use crate::workload::{self, KeyGen, Rng};

/// Largest answer a watch client decodes: a catch-up answer may carry 1,000 revisions
/// (etcd puts no byte bound on it), far beyond tonic's default 4 MiB.
const MAX_ANSWER: usize = 1 << 30;
/// Requests queued for one stream before `send` waits.
const REQUEST_QUEUE: usize = 1024;

/// The connection that stream (or put client) `i` uses: etcd's `clients[i % clients]`,
/// where client `c` is connection `c % conns`.
pub fn stream_conn(i: usize, clients: usize, conns: usize) -> usize {
    (i % clients.max(1)) % conns.max(1)
}

/// The endpoint etcd's tool dials for its `n`-th connection: round robin.
pub fn conn_endpoint(n: usize, endpoints: usize) -> usize {
    n % endpoints.max(1)
}

/// golang.org/x/time/rate's token bucket, which etcd's tool paces its puts with: `rate`
/// tokens a second, at most `burst` saved, full at the start. A rate of 0 is no limit.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Option<Duration>,
}

impl TokenBucket {
    pub fn new(rate: u64, burst: u64) -> Self {
        let burst = burst.max(1) as f64;
        Self {
            rate: rate as f64,
            burst,
            tokens: burst,
            last: None,
        }
    }

    /// Takes a token at `now` (time since any fixed origin) and returns how long to wait
    /// before acting on it (tokens taken ahead of time are owed, as with `rate.Wait`).
    pub fn take(&mut self, now: Duration) -> Duration {
        if self.rate <= 0.0 {
            return Duration::ZERO;
        }
        let last = self.last.unwrap_or(now);
        let elapsed = now.saturating_sub(last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.last = Some(now.max(last));
        self.tokens -= 1.0;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate)
        }
    }
}

/// A [`TokenBucket`] shared by tasks.
pub struct Limiter {
    origin: Instant,
    bucket: Mutex<TokenBucket>,
}

impl Limiter {
    pub fn new(rate: u64, burst: u64) -> Self {
        Self {
            origin: Instant::now(),
            bucket: Mutex::new(TokenBucket::new(rate, burst)),
        }
    }

    pub async fn wait(&self) {
        let wait = self
            .bucket
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take(self.origin.elapsed());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

/// One open watch stream.
pub struct Stream {
    /// Kept open for the stream's life: etcd ends a stream whose client closed its side.
    requests: mpsc::Sender<WatchRequest>,
    responses: tonic::Streaming<WatchResponse>,
}

/// A create request as clientv3 sends it.
pub fn create_request(key: &[u8], range_end: &[u8], prev_kv: bool) -> WatchRequest {
    WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
            key: key.to_vec().into(),
            range_end: range_end.to_vec().into(),
            prev_kv,
            ..Default::default()
        })),
    }
}

/// Opens a stream on `channel` with `first` as its first request.
pub async fn open(channel: Channel, first: WatchRequest) -> Result<Stream> {
    let (tx, rx) = mpsc::channel(REQUEST_QUEUE);
    // etcd's gRPC server (grpc-go) sends a watch stream's response headers only with its
    // first answer, and tonic's `watch` waits for those headers: the first request must be
    // queued before, or neither side ever moves.
    tx.send(first)
        .await
        .map_err(|_| anyhow!("watch request queue closed"))?;
    let mut client = WatchClient::new(channel).max_decoding_message_size(MAX_ANSWER);
    let responses = client
        .watch(ReceiverStream::new(rx))
        .await
        .map_err(|s| anyhow!("cannot open a watch stream: {}", s.message()))?
        .into_inner();
    Ok(Stream {
        requests: tx,
        responses,
    })
}

async fn dial(
    endpoints: &[String],
    conns: usize,
    timeout: Option<Duration>,
) -> Result<Vec<Channel>> {
    let mut channels = Vec::with_capacity(conns);
    for n in 0..conns {
        let ep = &endpoints[conn_endpoint(n, endpoints.len())];
        channels.push(workload::connect_channel(ep, timeout).await?);
    }
    Ok(channels)
}

fn clock_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
}

fn random_bytes(rng: &mut Rng, n: usize) -> Vec<u8> {
    (0..n).map(|_| rng.below(256) as u8).collect()
}

fn stream_error(status: tonic::Status) -> String {
    format!("watch stream failed: {}", status.message())
}

/// Waits until `stop` is set (or its sender is gone).
async fn stopped(stop: &mut signal::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

fn spawn_progress(done: Arc<AtomicU64>, total: u64, what: &'static str) -> Option<JoinHandle<()>> {
    std::io::stderr().is_terminal().then(|| {
        let started = Instant::now();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                workload::draw_progress(done.load(Ordering::Relaxed), total, None, started, what);
            }
        })
    })
}

fn end_progress(progress: Option<JoinHandle<()>>) {
    if let Some(p) = progress {
        p.abort();
        eprintln!();
    }
}

// ---------------------------------------------------------------------------------------
// watch-latency

/// What `watch-latency` runs.
#[derive(Debug, Clone)]
pub struct LatencyOptions {
    pub endpoints: Vec<String>,
    pub conns: usize,
    pub clients: usize,
    pub streams: usize,
    pub watchers_per_stream: usize,
    pub put_total: usize,
    /// Puts per second (etcd's limiter: this many may go at once at the start).
    pub put_rate: u64,
    pub key_size: usize,
    pub val_size: usize,
    pub prev_kv: bool,
    /// Every connection to the leader (`--target-leader`).
    pub target_leader: bool,
    /// Only the putter to the leader (compare: watchers on every member).
    pub put_to_leader: bool,
    /// Per put.
    pub timeout: Duration,
    /// How long events may still arrive after the last put before they count as missing.
    pub drain: Duration,
    pub progress: bool,
}

/// What `watch-latency` measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LatencyReport {
    pub watchers: usize,
    pub put_total: usize,
    /// The putter's requests.
    pub put: Report,
    /// Each event at each watcher, from its put being sent; `errors` are events that never
    /// arrived, `requests_per_sec` is events a second.
    pub from_issue: Report,
    /// etcd's measure: from the put's acknowledgement (an event that came first counts 0).
    pub from_ack: Report,
    pub expected_events: u64,
    pub received_events: u64,
    /// Events that were not from one of our puts (none, unless someone else writes the key).
    pub unexpected_events: u64,
}

impl LatencyReport {
    pub fn text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{} watchers, {} puts: {} of {} events received ({} unexpected)\n",
            self.watchers,
            self.put_total,
            self.received_events,
            self.expected_events,
            self.unexpected_events
        );
        let _ = writeln!(out, "Put summary:\n{}", self.put.text());
        let _ = writeln!(
            out,
            "Watch events summary (from each put's acknowledgement, as etcd measures; 0 if the \
             event came first):\n{}",
            self.from_ack.text()
        );
        let _ = write!(
            out,
            "Watch events summary (from each put being sent):\n{}",
            self.from_issue.text()
        );
        out
    }
}

/// Put times, shared by the putter and the readers: nanoseconds since `origin`, plus one
/// (0: not yet).
struct Stamps {
    origin: Instant,
    sent: Vec<AtomicU64>,
    acked: Vec<AtomicU64>,
    /// The key's version before the first put.
    base_version: i64,
    received: Arc<AtomicU64>,
}

impl Stamps {
    fn stamp(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.origin).as_nanos() as u64 + 1
    }
}

/// Which put an event comes from: one key, one putter, so the key's version counts the puts.
pub fn put_index(version: i64, base_version: i64, put_total: usize) -> Option<usize> {
    let k = version.checked_sub(base_version)?.checked_sub(1)?;
    usize::try_from(k).ok().filter(|&k| k < put_total)
}

/// Latency from stamp `from` to stamp `arrived` (both [`Stamps`] values); an event that
/// arrived before `from` (or before `from` was stamped, `from` = 0) counts 0, as etcd's tool
/// counts it.
pub fn since(arrived: u64, from: u64) -> Duration {
    if from == 0 {
        Duration::ZERO
    } else {
        Duration::from_nanos(arrived.saturating_sub(from))
    }
}

#[derive(Default)]
struct LatencyOut {
    from_issue: Recorder,
    from_ack: Recorder,
    received: u64,
    unexpected: u64,
    error: Option<String>,
}

async fn latency_reader(
    mut stream: Stream,
    watchers: usize,
    put_total: usize,
    ready: oneshot::Sender<Result<(), String>>,
    stamps: Arc<Stamps>,
    mut stop: signal::Receiver<bool>,
) -> LatencyOut {
    let mut out = LatencyOut::default();
    let mut ready = Some(ready);
    let mut counts: HashMap<i64, usize> = HashMap::with_capacity(watchers);
    let mut created = 0;
    let mut complete = 0;
    while complete < watchers {
        let next = tokio::select! {
            biased;
            m = stream.responses.message() => m,
            _ = stopped(&mut stop) => break,
        };
        let resp = match next {
            Ok(Some(resp)) => resp,
            Ok(None) => {
                out.error = Some("the server ended a watch stream".into());
                break;
            }
            Err(status) => {
                out.error = Some(stream_error(status));
                break;
            }
        };
        let arrived = stamps.stamp(Instant::now());
        if resp.created {
            if resp.canceled {
                out.error = Some(format!("watch refused: {}", resp.cancel_reason));
                break;
            }
            counts.insert(resp.watch_id, 0);
            created += 1;
            if created == watchers
                && let Some(r) = ready.take()
            {
                let _ = r.send(Ok(()));
            }
            continue;
        }
        if resp.canceled {
            out.error = Some(format!(
                "watcher {} cancelled: {} (compact revision {})",
                resp.watch_id, resp.cancel_reason, resp.compact_revision
            ));
            break;
        }
        let mut n = 0;
        for event in &resp.events {
            let version = event.kv.as_ref().map_or(0, |kv| kv.version);
            let Some(k) = put_index(version, stamps.base_version, put_total) else {
                out.unexpected += 1;
                continue;
            };
            let sent = stamps.sent[k].load(Ordering::SeqCst);
            if sent == 0 {
                out.unexpected += 1; // an event for a put not sent yet: cannot be ours
                continue;
            }
            out.from_issue.ok(since(arrived, sent));
            out.from_ack
                .ok(since(arrived, stamps.acked[k].load(Ordering::SeqCst)));
            n += 1;
            let count = counts.entry(resp.watch_id).or_default();
            *count += 1;
            if *count == put_total {
                complete += 1;
            }
        }
        out.received += n;
        stamps.received.fetch_add(n, Ordering::Relaxed);
    }
    if let Some(r) = ready.take() {
        let _ = r.send(Err(out.error.clone().unwrap_or_else(|| {
            "a watch stream ended before its watchers were created".into()
        })));
    }
    out
}

/// Waits for every stream's watchers to be created.
async fn all_ready(
    readies: Vec<oneshot::Receiver<Result<(), String>>>,
    limit: Duration,
) -> Result<()> {
    let deadline = tokio::time::Instant::now() + limit;
    for ready in readies {
        match tokio::time::timeout_at(deadline, ready).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => bail!("{e}"),
            Ok(Err(_)) => bail!("a watch stream's reader stopped"),
            Err(_) => bail!("watchers were not all created within {limit:?}"),
        }
    }
    Ok(())
}

/// Runs `watch-latency`.
pub async fn latency(o: &LatencyOptions) -> Result<LatencyReport> {
    if o.conns == 0 || o.clients == 0 {
        bail!("--conns and --clients must be at least 1");
    }
    if o.streams == 0 || o.watchers_per_stream == 0 || o.put_total == 0 {
        bail!("--streams, --watchers-per-stream and --put-total must be at least 1");
    }
    if o.key_size == 0 {
        bail!("--key-size must be at least 1");
    }
    if o.endpoints.is_empty() {
        bail!("no endpoints");
    }
    let leader = if o.target_leader || o.put_to_leader {
        Some(workload::find_leader(&o.endpoints).await?)
    } else {
        None
    };
    let endpoints = match (&leader, o.target_leader) {
        (Some(l), true) => vec![l.clone()],
        _ => o.endpoints.clone(),
    };
    let channels = dial(&endpoints, o.conns, None).await?;
    // etcd's tool dials the putter after the watchers' connections: the next endpoint.
    let put_endpoint = leader
        .clone()
        .unwrap_or_else(|| endpoints[conn_endpoint(o.conns, endpoints.len())].clone());
    let mut kv = KvClient::new(workload::connect_channel(&put_endpoint, Some(o.timeout)).await?);
    let mut rng = Rng::new(clock_seed());
    let key = random_bytes(&mut rng, o.key_size);
    let value = random_bytes(&mut rng, o.val_size);
    let base_version = kv
        .range(RangeRequest {
            key: key.clone().into(),
            ..Default::default()
        })
        .await
        .map_err(|s| anyhow!("reading the watched key: {}", s.message()))?
        .into_inner()
        .kvs
        .first()
        .map_or(0, |kv| kv.version);
    let received = Arc::new(AtomicU64::new(0));
    let stamps = Arc::new(Stamps {
        origin: Instant::now(),
        sent: (0..o.put_total).map(|_| AtomicU64::new(0)).collect(),
        acked: (0..o.put_total).map(|_| AtomicU64::new(0)).collect(),
        base_version,
        received: received.clone(),
    });
    let watchers = o.streams * o.watchers_per_stream;
    let (stop_tx, stop_rx) = signal::channel(false);
    let mut readers = Vec::with_capacity(o.streams);
    let mut readies = Vec::with_capacity(o.streams);
    let create = create_request(&key, &[], o.prev_kv);
    for i in 0..o.streams {
        let channel = channels[stream_conn(i, o.clients, o.conns)].clone();
        let stream = open(channel, create.clone()).await?;
        let (ready_tx, ready_rx) = oneshot::channel();
        readies.push(ready_rx);
        let requests = stream.requests.clone();
        readers.push(tokio::spawn(latency_reader(
            stream,
            o.watchers_per_stream,
            o.put_total,
            ready_tx,
            stamps.clone(),
            stop_rx.clone(),
        )));
        for _ in 1..o.watchers_per_stream {
            requests
                .send(create.clone())
                .await
                .map_err(|_| anyhow!("a watch stream closed while creating watchers"))?;
        }
    }
    all_ready(
        readies,
        Duration::from_secs(60) + Duration::from_millis(watchers as u64),
    )
    .await?;

    let expected = (watchers * o.put_total) as u64;
    let progress = if o.progress {
        spawn_progress(received.clone(), expected, "events")
    } else {
        None
    };
    let limiter = Limiter::new(o.put_rate, o.put_rate);
    let mut puts = Recorder::new();
    let started = Instant::now();
    for k in 0..o.put_total {
        limiter.wait().await;
        let t0 = Instant::now();
        stamps.sent[k].store(stamps.stamp(t0), Ordering::SeqCst);
        let put = kv
            .put(PutRequest {
                key: key.clone().into(),
                value: value.clone().into(),
                ..Default::default()
            })
            .await;
        let t1 = Instant::now();
        if let Err(status) = put {
            end_progress(progress);
            bail!(
                "put for the watch latency benchmark failed: {}",
                status.message()
            );
        }
        stamps.acked[k].store(stamps.stamp(t1), Ordering::SeqCst);
        puts.ok(t1 - t0);
    }
    let put_report = puts.report("put", started.elapsed());
    let drain = o.drain;
    let timer = tokio::spawn(async move {
        tokio::time::sleep(drain).await;
        let _ = stop_tx.send(true);
    });
    let mut all = LatencyOut::default();
    for reader in readers {
        let out = reader.await.context("watch reader failed")?;
        all.from_issue.merge(&out.from_issue);
        all.from_ack.merge(&out.from_ack);
        all.received += out.received;
        all.unexpected += out.unexpected;
        if all.error.is_none() {
            all.error = out.error;
        }
    }
    timer.abort();
    let elapsed = started.elapsed();
    end_progress(progress);
    let missing = expected.saturating_sub(all.received);
    let why = match &all.error {
        Some(e) => format!("{missing} events never arrived: {e}"),
        None => format!(
            "{missing} events had not arrived {:.0} s after the last put",
            drain.as_secs_f64()
        ),
    };
    all.from_issue.errors(missing, || why.clone());
    all.from_ack.errors(missing, || why);
    Ok(LatencyReport {
        watchers,
        put_total: o.put_total,
        put: put_report,
        from_issue: all.from_issue.report("watch event, from put sent", elapsed),
        from_ack: all.from_ack.report("watch event, from put acked", elapsed),
        expected_events: expected,
        received_events: all.received,
        unexpected_events: all.unexpected,
    })
}

// ---------------------------------------------------------------------------------------
// watch

/// What `watch` runs.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    pub endpoints: Vec<String>,
    pub conns: usize,
    pub clients: usize,
    pub streams: usize,
    pub watch_per_stream: usize,
    pub watched_key_total: usize,
    /// Puts per second over all put clients (0: no limit).
    pub put_rate: u64,
    pub put_total: usize,
    pub key_size: usize,
    pub key_space_size: u64,
    pub sequential_keys: bool,
    pub target_leader: bool,
    /// Per put.
    pub timeout: Duration,
    /// How long events may still arrive after the last put before they count as missing.
    pub drain: Duration,
    pub progress: bool,
}

/// Events received in `watch`'s put phase.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Events {
    pub expected: u64,
    pub received: u64,
    /// From the first put to the last expected event (or to giving up).
    pub seconds: f64,
    pub per_sec: f64,
}

/// What `watch` measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WatchReport {
    /// Each watcher's create request to its created answer.
    pub creation: Report,
    /// The put phase's requests (not in etcd's output).
    pub put: Report,
    pub events: Events,
}

impl WatchReport {
    pub fn text(&self) -> String {
        let e = &self.events;
        let mut out = String::new();
        let _ = writeln!(out, "Watch creation summary:\n{}", self.creation.text());
        let _ = writeln!(out, "Put summary:\n{}", self.put.text());
        let _ = writeln!(out, "Watch events received summary:");
        let _ = writeln!(out, "  Total:\t{:.4} secs.", e.seconds);
        let _ = writeln!(out, "  Events:\t{} of {} expected", e.received, e.expected);
        let _ = writeln!(out, "  Events/sec:\t{:.4}", e.per_sec);
        out
    }
}

/// How many watchers each key gets when watcher `i` of `total` watches `watched[i % len]`.
pub fn watchers_per_key(watched: &[Vec<u8>], total: usize) -> HashMap<Vec<u8>, u64> {
    let mut counts = HashMap::new();
    if watched.is_empty() {
        return counts;
    }
    for i in 0..total {
        *counts
            .entry(watched[i % watched.len()].clone())
            .or_default() += 1;
    }
    counts
}

/// Events `put_total` puts produce when put `i` writes `watched[i % len]`.
pub fn expected_events(
    watched: &[Vec<u8>],
    counts: &HashMap<Vec<u8>, u64>,
    put_total: usize,
) -> u64 {
    if watched.is_empty() {
        return 0;
    }
    (0..put_total)
        .map(|i| {
            counts
                .get(&watched[i % watched.len()])
                .copied()
                .unwrap_or(0)
        })
        .sum()
}

/// Creates `n` watchers on a new stream, one after another as clientv3 does (each waits for
/// its created answer), taking keys in turn from the shared `next`.
async fn create_in_turn(
    channel: Channel,
    watched: Arc<Vec<Vec<u8>>>,
    next: Arc<AtomicUsize>,
    n: usize,
) -> Result<(Recorder, Stream)> {
    let mut rec = Recorder::new();
    let mut stream: Option<Stream> = None;
    for _ in 0..n {
        let i = next.fetch_add(1, Ordering::Relaxed);
        let req = create_request(&watched[i % watched.len()], &[], false);
        let t0 = Instant::now();
        let s = match stream.as_mut() {
            Some(s) => {
                s.requests
                    .send(req)
                    .await
                    .map_err(|_| anyhow!("a watch stream closed"))?;
                s
            }
            None => stream.insert(open(channel.clone(), req).await?),
        };
        loop {
            let resp = s
                .responses
                .message()
                .await
                .map_err(|e| anyhow!(stream_error(e)))?
                .context("the server ended a watch stream")?;
            if resp.created {
                if resp.canceled {
                    bail!("watch refused: {}", resp.cancel_reason);
                }
                break;
            }
        }
        rec.ok(t0.elapsed());
    }
    let stream = stream.context("no watchers to create")?;
    Ok((rec, stream))
}

/// Counts events until `remaining` reaches 0 (then stamps `last`) or `stop`.
async fn count_events(
    mut stream: Stream,
    remaining: Arc<AtomicI64>,
    received: Arc<AtomicU64>,
    done: Arc<signal::Sender<Option<Instant>>>,
    mut stop: signal::Receiver<bool>,
) -> Option<String> {
    loop {
        let next = tokio::select! {
            biased;
            m = stream.responses.message() => m,
            _ = stopped(&mut stop) => return None,
        };
        let resp = match next {
            Ok(Some(resp)) => resp,
            Ok(None) => return Some("the server ended a watch stream".into()),
            Err(status) => return Some(stream_error(status)),
        };
        if resp.canceled {
            return Some(format!("watcher cancelled: {}", resp.cancel_reason));
        }
        let n = resp.events.len() as i64;
        if n == 0 {
            continue;
        }
        received.fetch_add(n as u64, Ordering::Relaxed);
        let before = remaining.fetch_sub(n, Ordering::AcqRel);
        if before > 0 && before - n <= 0 {
            done.send_replace(Some(Instant::now()));
        }
    }
}

/// Runs `watch`.
pub async fn watch(o: &WatchOptions) -> Result<WatchReport> {
    if o.key_space_size == 0 {
        bail!("expected positive --key-space-size, got (0)");
    }
    if o.conns == 0 || o.clients == 0 {
        bail!("--conns and --clients must be at least 1");
    }
    if o.streams == 0 || o.watch_per_stream == 0 || o.watched_key_total == 0 {
        bail!("--streams, --watch-per-stream and --watched-key-total must be at least 1");
    }
    if o.endpoints.is_empty() {
        bail!("no endpoints");
    }
    let endpoints = if o.target_leader {
        vec![workload::find_leader(&o.endpoints).await?]
    } else {
        o.endpoints.clone()
    };
    let channels = dial(&endpoints, o.conns, None).await?;
    let keys = KeyGen {
        key_size: o.key_size,
        val_size: 0,
        key_space: o.key_space_size,
        sequential: o.sequential_keys,
    };
    let mut rng = Rng::new(clock_seed());
    let watched: Arc<Vec<Vec<u8>>> = Arc::new(
        (0..o.watched_key_total as u64)
            .map(|i| keys.key(keys.pick(i, &mut rng)))
            .collect(),
    );
    let total_watchers = o.streams * o.watch_per_stream;
    let counts = watchers_per_key(&watched, total_watchers);
    let expected = expected_events(&watched, &counts, o.put_total);

    // Creating the watchers.
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let creators: Vec<_> = (0..o.streams)
        .map(|i| {
            tokio::spawn(create_in_turn(
                channels[stream_conn(i, o.clients, o.conns)].clone(),
                watched.clone(),
                next.clone(),
                o.watch_per_stream,
            ))
        })
        .collect();
    let mut creation = Recorder::new();
    let mut streams = Vec::with_capacity(o.streams);
    for c in creators {
        let (rec, stream) = c.await.context("watch creation task failed")??;
        creation.merge(&rec);
        streams.push(stream);
    }
    let creation = creation.report("watch creation", started.elapsed());

    // Putting the watched keys.
    let remaining = Arc::new(AtomicI64::new(expected as i64));
    let received = Arc::new(AtomicU64::new(0));
    let (done_tx, mut done_rx) = signal::channel(None::<Instant>);
    let done_tx = Arc::new(done_tx);
    let (stop_tx, stop_rx) = signal::channel(false);
    let progress = if o.progress {
        spawn_progress(received.clone(), expected, "events")
    } else {
        None
    };
    let started = Instant::now();
    let readers: Vec<_> = streams
        .into_iter()
        .map(|s| {
            tokio::spawn(count_events(
                s,
                remaining.clone(),
                received.clone(),
                done_tx.clone(),
                stop_rx.clone(),
            ))
        })
        .collect();
    let op = Arc::new(AtomicUsize::new(0));
    // etcd's limiter for these puts saves no burst.
    let limiter = Arc::new(Limiter::new(o.put_rate, 1));
    let putters: Vec<_> = (0..o.clients)
        .map(|c| {
            let mut kv = KvClient::new(channels[stream_conn(c, o.clients, o.conns)].clone());
            let (op, limiter, watched) = (op.clone(), limiter.clone(), watched.clone());
            let (put_total, timeout) = (o.put_total, o.timeout);
            tokio::spawn(async move {
                let mut rec = Recorder::new();
                loop {
                    let i = op.fetch_add(1, Ordering::Relaxed);
                    if i >= put_total {
                        return Ok::<_, anyhow::Error>(rec);
                    }
                    limiter.wait().await;
                    let t0 = Instant::now();
                    let put = kv.put(PutRequest {
                        key: watched[i % watched.len()].clone().into(),
                        value: b"data".to_vec().into(),
                        ..Default::default()
                    });
                    match tokio::time::timeout(timeout, put).await {
                        Ok(Ok(_)) => rec.ok(t0.elapsed()),
                        Ok(Err(status)) => bail!("put failed: {}", status.message()),
                        Err(_) => bail!("put timed out after {timeout:?}"),
                    }
                }
            })
        })
        .collect();
    let mut puts = Recorder::new();
    let mut put_error = None;
    for p in putters {
        match p.await.context("put task failed")? {
            Ok(rec) => puts.merge(&rec),
            Err(e) => put_error = put_error.or(Some(e)),
        }
    }
    let put = puts.report("put", started.elapsed());
    if let Some(e) = put_error {
        end_progress(progress);
        return Err(e);
    }
    let last = if expected == 0 {
        Some(Instant::now())
    } else {
        tokio::time::timeout(o.drain, done_rx.wait_for(Option::is_some))
            .await
            .ok()
            .and_then(|r| r.ok().and_then(|v| *v))
    };
    let _ = stop_tx.send(true);
    let mut error = None;
    for r in readers {
        if let Some(e) = r.await.context("watch reader failed")? {
            error = error.or(Some(e));
        }
    }
    end_progress(progress);
    let seconds = last
        .unwrap_or_else(Instant::now)
        .saturating_duration_since(started)
        .as_secs_f64();
    let got = received.load(Ordering::Relaxed);
    if let Some(e) = error
        && got < expected
    {
        eprintln!("warning: {e}");
    }
    Ok(WatchReport {
        creation,
        put,
        events: Events {
            expected,
            received: got,
            seconds,
            per_sec: if seconds > 0.0 {
                got as f64 / seconds
            } else {
                0.0
            },
        },
    })
}

// ---------------------------------------------------------------------------------------
// Watchers kept open while something else runs (compare).

/// Watchers that read everything they are sent.
pub struct Watchers {
    total: usize,
    stop: signal::Sender<bool>,
    target: signal::Sender<i64>,
    received: Arc<AtomicU64>,
    /// Watchers that have seen an event at or past the target revision.
    level: Arc<AtomicUsize>,
    readers: Vec<JoinHandle<Option<String>>>,
}

async fn open_reader(
    mut stream: Stream,
    watchers: usize,
    ready: oneshot::Sender<Result<(), String>>,
    received: Arc<AtomicU64>,
    level: Arc<AtomicUsize>,
    mut target: signal::Receiver<i64>,
    mut stop: signal::Receiver<bool>,
) -> Option<String> {
    let mut ready = Some(ready);
    let mut last: HashMap<i64, i64> = HashMap::with_capacity(watchers);
    let mut goal = i64::MAX;
    let error = loop {
        let next = tokio::select! {
            biased;
            _ = stopped(&mut stop) => break None,
            changed = target.changed() => {
                if changed.is_err() {
                    break None;
                }
                goal = *target.borrow_and_update();
                let at = last.values().filter(|&&r| r >= goal).count();
                level.fetch_add(at, Ordering::AcqRel);
                continue;
            }
            m = stream.responses.message() => m,
        };
        let resp = match next {
            Ok(Some(resp)) => resp,
            Ok(None) => break Some("the server ended a watch stream".to_string()),
            Err(status) => break Some(stream_error(status)),
        };
        if resp.created {
            if resp.canceled {
                break Some(format!("watch refused: {}", resp.cancel_reason));
            }
            last.insert(resp.watch_id, 0);
            if last.len() == watchers
                && let Some(r) = ready.take()
            {
                let _ = r.send(Ok(()));
            }
            continue;
        }
        if resp.canceled {
            break Some(format!("watcher cancelled: {}", resp.cancel_reason));
        }
        let Some(top) = resp
            .events
            .iter()
            .filter_map(|e| e.kv.as_ref().map(|kv| kv.mod_revision))
            .max()
        else {
            continue;
        };
        received.fetch_add(resp.events.len() as u64, Ordering::Relaxed);
        let seen = last.entry(resp.watch_id).or_insert(0);
        if *seen < goal && top >= goal {
            level.fetch_add(1, Ordering::AcqRel);
        }
        *seen = (*seen).max(top);
    };
    if let Some(r) = ready.take() {
        let _ = r.send(Err(error.clone().unwrap_or_else(|| {
            "a watch stream ended before its watchers were created".into()
        })));
    }
    error
}

impl Watchers {
    /// Opens `streams` streams of `per_stream` watchers of `key`..`range_end` each, over
    /// `conns` connections dialled round robin over `endpoints`, and waits for every
    /// created answer.
    pub async fn open(
        endpoints: &[String],
        conns: usize,
        streams: usize,
        per_stream: usize,
        key: &[u8],
        range_end: &[u8],
    ) -> Result<Self> {
        if endpoints.is_empty() || conns == 0 || streams == 0 || per_stream == 0 {
            bail!("no watchers to open");
        }
        let channels = dial(endpoints, conns, None).await?;
        let (stop, stop_rx) = signal::channel(false);
        let (target, target_rx) = signal::channel(i64::MAX);
        let received = Arc::new(AtomicU64::new(0));
        let level = Arc::new(AtomicUsize::new(0));
        let create = create_request(key, range_end, false);
        let mut readers = Vec::new();
        let mut readies = Vec::new();
        for i in 0..streams {
            let stream = open(
                channels[stream_conn(i, conns, conns)].clone(),
                create.clone(),
            )
            .await?;
            let (ready_tx, ready_rx) = oneshot::channel();
            readies.push(ready_rx);
            let requests = stream.requests.clone();
            readers.push(tokio::spawn(open_reader(
                stream,
                per_stream,
                ready_tx,
                received.clone(),
                level.clone(),
                target_rx.clone(),
                stop_rx.clone(),
            )));
            for _ in 1..per_stream {
                requests
                    .send(create.clone())
                    .await
                    .map_err(|_| anyhow!("a watch stream closed while creating watchers"))?;
            }
        }
        all_ready(readies, Duration::from_secs(60)).await?;
        Ok(Self {
            total: streams * per_stream,
            stop,
            target,
            received,
            level,
            readers,
        })
    }

    /// Events received so far.
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// Waits until every watcher has had an event at `revision` or later; how long that
    /// took, or `None` if it did not happen within `limit`.
    pub async fn level_with(&self, revision: i64, limit: Duration) -> Option<Duration> {
        let started = Instant::now();
        self.target.send_replace(revision);
        while self.level.load(Ordering::Acquire) < self.total {
            if started.elapsed() >= limit {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Some(started.elapsed())
    }

    /// Closes the streams; the first error any of them met.
    pub async fn close(self) -> Option<String> {
        let _ = self.stop.send(true);
        let mut first = None;
        for r in self.readers {
            if let Ok(Some(e)) = r.await {
                first = first.or(Some(e));
            }
        }
        first
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_and_put_clients_spread_like_etcds_tool() {
        // 100 streams, 10 clients, 10 connections: ten streams on each connection.
        let mut per_conn = [0; 10];
        for i in 0..100 {
            per_conn[stream_conn(i, 10, 10)] += 1;
        }
        assert_eq!(per_conn, [10; 10]);
        // More connections than clients: only the first `clients` connections are used.
        assert!((0..100).all(|i| stream_conn(i, 2, 10) < 2));
        // One client: everything on connection 0.
        assert!((0..10).all(|i| stream_conn(i, 1, 1) == 0));
        // Connections dial the endpoints round robin; the putter takes the next one.
        assert_eq!(
            (0..5).map(|n| conn_endpoint(n, 3)).collect::<Vec<_>>(),
            [0, 1, 2, 0, 1]
        );
        assert_eq!(conn_endpoint(10, 3), 1);
    }

    #[test]
    fn token_bucket_starts_full_then_paces() {
        let ms = Duration::from_millis;
        // etcd's watch-latency limiter: rate 100, burst 100.
        let mut b = TokenBucket::new(100, 100);
        for _ in 0..100 {
            assert_eq!(b.take(ms(0)), Duration::ZERO);
        }
        let w = b.take(ms(0));
        assert!((w.as_secs_f64() - 0.010).abs() < 1e-9, "{w:?}");
        let w = b.take(ms(0));
        assert!((w.as_secs_f64() - 0.020).abs() < 1e-9, "{w:?}");
        // After a long pause it holds at most `burst` tokens again.
        let mut b = TokenBucket::new(10, 1);
        assert_eq!(b.take(ms(0)), Duration::ZERO);
        assert!((b.take(ms(0)).as_secs_f64() - 0.1).abs() < 1e-9);
        // Owed tokens are paid back first: the next one is free only once 200 ms passed.
        assert!((b.take(ms(150)).as_secs_f64() - 0.05).abs() < 1e-9);
        assert_eq!(b.take(ms(10_000)), Duration::ZERO);
        assert!((b.take(ms(10_000)).as_secs_f64() - 0.1).abs() < 1e-9);
        // Rate 0: no limit.
        let mut b = TokenBucket::new(0, 1);
        assert!((0..1000).all(|_| b.take(ms(0)).is_zero()));
    }

    #[test]
    fn events_map_to_puts_by_the_keys_version() {
        assert_eq!(put_index(1, 0, 10), Some(0));
        assert_eq!(put_index(10, 0, 10), Some(9));
        assert_eq!(put_index(11, 0, 10), None);
        assert_eq!(put_index(0, 0, 10), None);
        // The key already had 5 versions.
        assert_eq!(put_index(6, 5, 10), Some(0));
        assert_eq!(put_index(5, 5, 10), None);
        assert_eq!(put_index(i64::MIN, 5, 10), None);
    }

    #[test]
    fn latency_from_a_stamp_floors_at_zero() {
        assert_eq!(since(1_000_001, 1), Duration::from_millis(1));
        // The event came before the put's acknowledgement: 0, as etcd's tool counts it.
        assert_eq!(since(5, 10), Duration::ZERO);
        assert_eq!(since(5, 0), Duration::ZERO);
    }

    #[test]
    fn watchers_and_events_per_key_follow_etcds_assignment() {
        let watched = vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()];
        // 10 watchers over 3 keys: a gets 4, b and c 3.
        let counts = watchers_per_key(&watched, 10);
        assert_eq!(counts[&b"a".to_vec()], 4);
        assert_eq!(counts[&b"b".to_vec()], 3);
        assert_eq!(counts[&b"c".to_vec()], 3);
        // 4 puts: a, b, c, a.
        assert_eq!(expected_events(&watched, &counts, 4), 4 + 3 + 3 + 4);
        // A key listed twice (random keys in a small key space) shares its watchers.
        let dup = vec![b"k".to_vec(), b"k".to_vec()];
        let counts = watchers_per_key(&dup, 5);
        assert_eq!(counts[&b"k".to_vec()], 5);
        assert_eq!(expected_events(&dup, &counts, 3), 15);
        // More keys than watchers: puts to unwatched keys make no events.
        let many: Vec<Vec<u8>> = (0..4u8).map(|i| vec![i]).collect();
        let counts = watchers_per_key(&many, 2);
        assert_eq!(expected_events(&many, &counts, 4), 2);
    }
}
