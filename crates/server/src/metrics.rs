//! `/metrics`: a member's measurements in Prometheus text format, with etcd 3.4's metric names,
//! help texts, types and labels, so that etcd's Grafana dashboard and alert rules work on a
//! raftkv cluster unchanged.
//!
//! - [`ClientMetrics`] — what the client port counts: every gRPC call by service, method and
//!   code (`grpc_server_*`, as go-grpc-prometheus counts them, pre-initialised for every
//!   method served), message bytes in and out, and `/health` answers.
//! - [`GrpcMetricsLayer`] — the tower layer that does that counting on the client port.
//! - [`render`] — one scrape: the node's, the store's and the port's values.
//!
//! What each etcd name means here, where raftkv differs (see docs/operations.md):
//! `etcd_disk_backend_commit_duration_seconds` times each run of committed entries written
//! into the store (raftkv has no separate batched backend commit); the WAL's fsync histogram
//! comes from its flush worker's totals; peer round trips are heartbeat round trips.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};

use axum::body::Bytes;
use http_body::Frame;
use raftkv_metrics::{Counter, Exposition, Histogram};
use tonic::body::Body;

use crate::api::EtcdApi;

/// gRPC codes by number, with go-grpc-prometheus' label text.
const CODES: [&str; 17] = [
    "OK",
    "Canceled",
    "Unknown",
    "InvalidArgument",
    "DeadlineExceeded",
    "NotFound",
    "AlreadyExists",
    "PermissionDenied",
    "ResourceExhausted",
    "FailedPrecondition",
    "Aborted",
    "OutOfRange",
    "Unimplemented",
    "Internal",
    "Unavailable",
    "DataLoss",
    "Unauthenticated",
];

/// The methods the client port serves: (service, method, go-grpc-prometheus type), sorted
/// (a call's method is found by binary search, and the scrape lists them in order). etcd
/// 3.4's scrape of a fresh member lists the same apart from Lock and Election, which etcd
/// registers after its series are filled in (raftkv lists them from the start).
const METHODS: &[(&str, &str, &str)] = &[
    ("etcdserverpb.Auth", "AuthDisable", "unary"),
    ("etcdserverpb.Auth", "AuthEnable", "unary"),
    ("etcdserverpb.Auth", "Authenticate", "unary"),
    ("etcdserverpb.Auth", "RoleAdd", "unary"),
    ("etcdserverpb.Auth", "RoleDelete", "unary"),
    ("etcdserverpb.Auth", "RoleGet", "unary"),
    ("etcdserverpb.Auth", "RoleGrantPermission", "unary"),
    ("etcdserverpb.Auth", "RoleList", "unary"),
    ("etcdserverpb.Auth", "RoleRevokePermission", "unary"),
    ("etcdserverpb.Auth", "UserAdd", "unary"),
    ("etcdserverpb.Auth", "UserChangePassword", "unary"),
    ("etcdserverpb.Auth", "UserDelete", "unary"),
    ("etcdserverpb.Auth", "UserGet", "unary"),
    ("etcdserverpb.Auth", "UserGrantRole", "unary"),
    ("etcdserverpb.Auth", "UserList", "unary"),
    ("etcdserverpb.Auth", "UserRevokeRole", "unary"),
    ("etcdserverpb.Cluster", "MemberAdd", "unary"),
    ("etcdserverpb.Cluster", "MemberList", "unary"),
    ("etcdserverpb.Cluster", "MemberPromote", "unary"),
    ("etcdserverpb.Cluster", "MemberRemove", "unary"),
    ("etcdserverpb.Cluster", "MemberUpdate", "unary"),
    ("etcdserverpb.KV", "Compact", "unary"),
    ("etcdserverpb.KV", "DeleteRange", "unary"),
    ("etcdserverpb.KV", "Put", "unary"),
    ("etcdserverpb.KV", "Range", "unary"),
    ("etcdserverpb.KV", "Txn", "unary"),
    ("etcdserverpb.Lease", "LeaseGrant", "unary"),
    ("etcdserverpb.Lease", "LeaseKeepAlive", "bidi_stream"),
    ("etcdserverpb.Lease", "LeaseLeases", "unary"),
    ("etcdserverpb.Lease", "LeaseRevoke", "unary"),
    ("etcdserverpb.Lease", "LeaseTimeToLive", "unary"),
    ("etcdserverpb.Maintenance", "Alarm", "unary"),
    ("etcdserverpb.Maintenance", "Defragment", "unary"),
    ("etcdserverpb.Maintenance", "Hash", "unary"),
    ("etcdserverpb.Maintenance", "HashKV", "unary"),
    ("etcdserverpb.Maintenance", "MoveLeader", "unary"),
    ("etcdserverpb.Maintenance", "Snapshot", "server_stream"),
    ("etcdserverpb.Maintenance", "Status", "unary"),
    ("etcdserverpb.Watch", "Watch", "bidi_stream"),
    ("grpc.health.v1.Health", "Check", "unary"),
    ("grpc.health.v1.Health", "Watch", "server_stream"),
    ("v3electionpb.Election", "Campaign", "unary"),
    ("v3electionpb.Election", "Leader", "unary"),
    ("v3electionpb.Election", "Observe", "server_stream"),
    ("v3electionpb.Election", "Proclaim", "unary"),
    ("v3electionpb.Election", "Resign", "unary"),
    ("v3lockpb.Lock", "Lock", "unary"),
    ("v3lockpb.Lock", "Unlock", "unary"),
];

/// Counts for one method.
#[derive(Debug)]
struct MethodCounts {
    started: Counter,
    received: Counter,
    sent: Counter,
    handled: [Counter; 17],
    /// Time from the call's start to its status, with `--metrics extensive`.
    handling: Histogram,
}

impl Default for MethodCounts {
    fn default() -> Self {
        Self {
            started: Counter::default(),
            received: Counter::default(),
            sent: Counter::default(),
            handled: Default::default(),
            // go-grpc-prometheus' buckets (client_golang's DefBuckets).
            handling: Histogram::new(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
        }
    }
}

/// What the client port counts (one per member, shared by its listeners).
#[derive(Debug)]
pub struct ClientMetrics {
    methods: Vec<MethodCounts>,
    received_bytes: Counter,
    sent_bytes: Counter,
    /// `/health` answers that said healthy.
    pub health_success: Counter,
    /// `/health` answers that said unhealthy.
    pub health_failures: Counter,
    /// `--metrics extensive`: the handling-time histograms are written too.
    extensive: bool,
}

impl Default for ClientMetrics {
    fn default() -> Self {
        Self::new(false)
    }
}

impl ClientMetrics {
    /// Counters for a client port; `extensive` as `--metrics extensive` asks.
    pub fn new(extensive: bool) -> Self {
        Self {
            extensive,
            methods: METHODS.iter().map(|_| MethodCounts::default()).collect(),
            received_bytes: Counter::default(),
            sent_bytes: Counter::default(),
            health_success: Counter::default(),
            health_failures: Counter::default(),
        }
    }

    /// The method a gRPC path names, if it is one the port serves (an unknown path creates
    /// no counters: a client cannot grow the scrape).
    fn method(&self, path: &str) -> Option<usize> {
        let (service, method) = path.strip_prefix('/')?.split_once('/')?;
        METHODS
            .binary_search_by(|(s, m, _)| (*s, *m).cmp(&(service, method)))
            .ok()
    }
}

/// Counts the gRPC calls of a tonic server into [`ClientMetrics`], and answers a request
/// message over the port's limit as grpc-go does.
///
/// go-grpc-prometheus counts a unary call from its interceptor, which grpc-go runs only once
/// the request is received and decoded, so a unary call whose request never arrives whole
/// (over the size limit, or cut off) is not counted at all; streams count from their start.
/// A message over the limit is refused by tonic with `OutOfRange` ("decoded message length
/// too large"); grpc-go answers `ResourceExhausted` "grpc: received message larger than max
/// (N vs. M)", and clients see that, so the layer answers with grpc-go's status.
#[derive(Clone)]
pub struct GrpcMetricsLayer {
    metrics: Arc<ClientMetrics>,
    /// The largest request message the port's services accept, in bytes.
    max_message: usize,
}

impl GrpcMetricsLayer {
    /// Counts into `metrics`, for services that accept messages up to `max_message` bytes.
    pub fn new(metrics: Arc<ClientMetrics>, max_message: usize) -> Self {
        Self {
            metrics,
            max_message,
        }
    }
}

impl<S> tower::Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetricsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcMetricsService {
            inner,
            metrics: self.metrics.clone(),
            max_message: self.max_message,
        }
    }
}

/// See [`GrpcMetricsLayer`].
#[derive(Clone)]
pub struct GrpcMetricsService<S> {
    inner: S,
    metrics: Arc<ClientMetrics>,
    max_message: usize,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// What the request and the response side of one call share.
#[derive(Default)]
struct CallState {
    /// A whole request message has arrived.
    received: AtomicBool,
    /// The length a request message declared, when it was over the limit (0: none was).
    oversized: AtomicU64,
}

impl<S, B> tower::Service<http::Request<Body>> for GrpcMetricsService<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<B>>,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<tower::BoxError>,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let grpc = req
            .headers()
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
        let method = grpc
            .then(|| self.metrics.method(req.uri().path()))
            .flatten();
        let Some(method) = method else {
            let fut = self.inner.call(req);
            return Box::pin(async move { Ok(fut.await?.map(Body::new)) });
        };
        let metrics = self.metrics.clone();
        let started = std::time::Instant::now();
        let unary = METHODS[method].2 == "unary";
        if !unary {
            metrics.methods[method].started.inc();
        }
        let call = Arc::new(CallState::default());
        let max_message = self.max_message;
        let req = req.map(|body| {
            let mut counted = Counted::new(body, metrics.clone(), method, Direction::In);
            counted.call = Some((call.clone(), max_message, unary));
            Body::new(counted)
        });
        let fut = self.inner.call(req);
        Box::pin(async move {
            let (mut parts, body) = fut.await?.into_parts();
            let mut counted = Counted::new(Body::new(body), metrics, method, Direction::Out);
            counted.started = started;
            counted.answers = Some((call.clone(), max_message));
            if unary && !call.received.load(Ordering::Acquire) {
                // Refused before its request arrived: grpc-go never ran the interceptor.
                counted.uncounted = true;
                counted.finished = true;
            }
            // A trailers-only answer (an error before any message) carries its status here.
            counted.translate(&mut parts.headers);
            if let Some(code) = grpc_status(&parts.headers) {
                counted.finish(code);
            }
            Ok(http::Response::from_parts(parts, Body::new(counted)))
        })
    }
}

/// The code in a `grpc-status` header or trailer (an unknown number counts as Unknown).
fn grpc_status(headers: &http::HeaderMap) -> Option<usize> {
    let code: usize = headers.get("grpc-status")?.to_str().ok()?.parse().ok()?;
    Some(if code < CODES.len() { code } else { 2 })
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    In,
    Out,
}

/// A body whose gRPC messages (5-byte prefix, then the message) are counted as they pass;
/// the response side also records the call's code from its trailers, or Canceled if the
/// body is dropped before them (the client went away).
struct Counted {
    inner: Body,
    metrics: Arc<ClientMetrics>,
    method: usize,
    direction: Direction,
    /// When the call started (for the handling time).
    started: std::time::Instant,
    /// Prefix bytes of the next message still to come (0..5), and its length so far.
    prefix_seen: usize,
    prefix_len: u32,
    /// Message bytes still to come of the current message.
    remaining: u64,
    /// The current message is over the limit: it is not counted when (if ever) it ends.
    skipping: bool,
    finished: bool,
    /// Request side: the call's shared state, the port's message limit, and whether the
    /// method is unary.
    call: Option<(Arc<CallState>, usize, bool)>,
    /// Response side: the call's shared state and the port's message limit (a stream's
    /// request can be over it after the response began).
    answers: Option<(Arc<CallState>, usize)>,
    /// Response side: the call is not counted (see [`GrpcMetricsLayer`]).
    uncounted: bool,
}

impl Counted {
    fn new(inner: Body, metrics: Arc<ClientMetrics>, method: usize, direction: Direction) -> Self {
        Self {
            inner,
            metrics,
            method,
            direction,
            started: std::time::Instant::now(),
            prefix_seen: 0,
            prefix_len: 0,
            remaining: 0,
            skipping: false,
            finished: direction == Direction::In,
            call: None,
            answers: None,
            uncounted: false,
        }
    }

    /// Gives a refusal of an oversized request grpc-go's code and words (see
    /// [`GrpcMetricsLayer`]), in the headers or trailers that carry the call's status.
    fn translate(&self, headers: &mut http::HeaderMap) {
        let Some((call, limit)) = &self.answers else {
            return;
        };
        let declared = call.oversized.load(Ordering::Acquire);
        if declared == 0 || grpc_status(headers) != Some(tonic::Code::OutOfRange as usize) {
            return;
        }
        let status = tonic::Status::resource_exhausted(format!(
            "grpc: received message larger than max ({declared} vs. {limit})"
        ));
        headers.remove("grpc-message");
        headers.remove("grpc-status-details-bin");
        // Only fails for a message that cannot be encoded; this one always can.
        let _ = status.add_header(headers);
    }

    /// A request message has arrived whole.
    fn received_whole(&mut self) {
        if std::mem::take(&mut self.skipping) {
            return;
        }
        let counts = &self.metrics.methods[self.method];
        counts.received.inc();
        if let Some((call, _, unary)) = &self.call
            && !call.received.swap(true, Ordering::AcqRel)
            && *unary
        {
            counts.started.inc();
        }
    }

    fn finish(&mut self, code: usize) {
        if !self.finished {
            self.finished = true;
            let counts = &self.metrics.methods[self.method];
            counts.handled[code].inc();
            if self.metrics.extensive {
                counts.handling.observe_duration(self.started.elapsed());
            }
        }
    }

    /// Walks `data` through the message framing, counting each answer as it starts and each
    /// request once it is whole.
    fn count(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if self.remaining > 0 {
                let take = (self.remaining as usize).min(data.len());
                self.remaining -= take as u64;
                self.bytes().add(take as u64);
                data = &data[take..];
                if self.remaining == 0 && self.direction == Direction::In {
                    self.received_whole();
                }
                continue;
            }
            // In the prefix: a flag byte, then a 4-byte big-endian length.
            if self.prefix_seen > 0 {
                self.prefix_len = (self.prefix_len << 8) | u32::from(data[0]);
            }
            self.prefix_seen += 1;
            data = &data[1..];
            if self.prefix_seen == 5 {
                self.remaining = u64::from(self.prefix_len);
                self.prefix_seen = 0;
                self.prefix_len = 0;
                match (self.direction, &self.call) {
                    (Direction::Out, _) if !self.uncounted => {
                        self.metrics.methods[self.method].sent.inc();
                    }
                    (Direction::In, Some((call, limit, _))) if self.remaining > *limit as u64 => {
                        call.oversized.store(self.remaining, Ordering::Release);
                        self.skipping = true;
                    }
                    (Direction::In, _) if self.remaining == 0 => self.received_whole(),
                    _ => {}
                }
            }
        }
    }

    fn bytes(&self) -> &Counter {
        match self.direction {
            Direction::In => &self.metrics.received_bytes,
            Direction::Out => &self.metrics.sent_bytes,
        }
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.finish(1); // Canceled
    }
}

impl http_body::Body for Counted {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let mut polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &mut polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let data = data.clone();
                    self.count(&data);
                } else if let Some(trailers) = frame.trailers_mut() {
                    self.translate(trailers);
                    let code = grpc_status(trailers).unwrap_or(2);
                    self.finish(code);
                }
            }
            Poll::Ready(Some(Err(_))) => self.finish(2),
            Poll::Ready(None) => self.finish(0),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// One scrape of a member, in Prometheus text format.
pub fn render(api: &EtcdApi) -> String {
    let mut e = Exposition::new();
    server(&mut e, api);
    disk(&mut e, api);
    mvcc(&mut e, api);
    network(&mut e, api);
    grpc(&mut e, api.client_metrics());
    process(&mut e);
    own(&mut e, api);
    e.render()
}

/// raftkv's own, where it has more to say than etcd's names.
fn own(e: &mut Exposition, api: &EtcdApi) {
    let m = api.node().metrics();
    e.histogram(
        "raftkv_apply_duration_seconds",
        "Time to apply each committed entry to the store (stalls show here).",
        &[],
        &m.apply_entry,
    );
    e.histogram(
        "raftkv_snapshot_build_duration_seconds",
        "Time to take each Raft snapshot (the store flushed up to the applied point).",
        &[],
        &m.snapshot_build,
    );
    e.histogram(
        "raftkv_snapshot_write_duration_seconds",
        "Time to write each snapshot file sent to a follower.",
        &[],
        &m.snapshot_write,
    );
    e.gauge(
        "raftkv_snapshot_bytes",
        "Size of the last snapshot file sent to a follower.",
        &[],
        m.snapshot_bytes.get() as f64,
    );
    e.counter(
        "raftkv_read_index_reads_total",
        "Linearizable reads that waited for a read index on this member.",
        &[],
        m.read_index_reads.get() as f64,
    );
    e.counter(
        "raftkv_read_index_rounds_total",
        "ReadIndex rounds this member ran; each answers every linearizable read waiting when it began (raftkv_read_index_reads_total / this is the sharing).",
        &[],
        m.read_index_rounds.get() as f64,
    );
    e.gauge(
        "raftkv_snapshot_raw_bytes",
        "Size of the last snapshot file's body before the codec (raftkv_snapshot_bytes / this is the codec's ratio).",
        &[],
        m.snapshot_raw_bytes.get() as f64,
    );
}

fn flag(b: bool) -> f64 {
    if b { 1.0 } else { 0.0 }
}

fn server(e: &mut Exposition, api: &EtcdApi) {
    let node = api.node();
    let status = node.status();
    let m = node.metrics();
    let c = api.client_metrics();
    e.gauge(
        "etcd_server_has_leader",
        "Whether or not a leader exists. 1 is existence, 0 is not.",
        &[],
        flag(status.leader != 0),
    );
    e.gauge(
        "etcd_server_is_leader",
        "Whether or not this member is a leader. 1 if is, 0 otherwise.",
        &[],
        flag(status.leader == node.id()),
    );
    e.gauge(
        "etcd_server_is_learner",
        "Whether or not this member is a learner. 1 if is, 0 otherwise.",
        &[],
        flag(status.is_learner),
    );
    e.counter(
        "etcd_server_leader_changes_seen_total",
        "The number of leader changes seen.",
        &[],
        m.leader_changes.get() as f64,
    );
    // etcd's committed and applied "totals" are the Raft indexes, hence gauges.
    e.gauge(
        "etcd_server_proposals_committed_total",
        "The total number of consensus proposals committed.",
        &[],
        status.commit_index as f64,
    );
    e.gauge(
        "etcd_server_proposals_applied_total",
        "The total number of consensus proposals applied.",
        &[],
        status.applied_index as f64,
    );
    e.gauge(
        "etcd_server_proposals_pending",
        "The current number of pending proposals to commit.",
        &[],
        m.proposals_pending.get() as f64,
    );
    e.counter(
        "etcd_server_proposals_failed_total",
        "The total number of failed proposals seen.",
        &[],
        m.proposals_failed.get() as f64,
    );
    e.counter(
        "etcd_server_slow_apply_total",
        "The total number of slow apply requests (likely overloaded from slow disk).",
        &[],
        m.slow_applies.get() as f64,
    );
    e.counter(
        "etcd_server_read_indexes_failed_total",
        "The total number of failed read indexes seen.",
        &[],
        m.read_indexes_failed.get() as f64,
    );
    // As etcd: the quota in force (its 2 GiB default included), negative when disabled.
    let quota = node.config().quota_backend_bytes.map_or(-1.0, |q| q as f64);
    e.gauge(
        "etcd_server_quota_backend_bytes",
        "Current backend storage quota size in bytes.",
        &[],
        quota,
    );
    e.counter(
        "etcd_server_health_success",
        "The total number of successful health checks",
        &[],
        c.health_success.get() as f64,
    );
    e.counter(
        "etcd_server_health_failures",
        "The total number of failed health checks",
        &[],
        c.health_failures.get() as f64,
    );
    e.gauge(
        "etcd_server_version",
        "Which version is running. 1 for 'server_version' label with current version.",
        &[("server_version", crate::api::VERSION)],
        1.0,
    );
    let id = format!("{:x}", node.id());
    e.gauge(
        "etcd_server_id",
        "Server or member ID in hexadecimal format. 1 for 'server_id' label with current ID.",
        &[("server_id", &id)],
        1.0,
    );
}

fn disk(e: &mut Exposition, api: &EtcdApi) {
    let m = api.node().metrics();
    e.histogram(
        "etcd_disk_wal_fsync_duration_seconds",
        "The latency distributions of fsync called by WAL.",
        &[],
        &m.wal_fsync,
    );
    e.gauge(
        "etcd_disk_wal_write_bytes_total",
        "Total number of bytes written in WAL.",
        &[],
        m.wal_write_bytes.get() as f64,
    );
    e.histogram(
        "etcd_disk_backend_commit_duration_seconds",
        "The latency distributions of commit called by backend.",
        &[],
        &m.backend_commit,
    );
}

fn mvcc(e: &mut Exposition, api: &EtcdApi) {
    let status = api.status();
    let store = api.node().store();
    let counts = store.counts();
    for name in [
        "etcd_mvcc_db_total_size_in_bytes",
        "etcd_debugging_mvcc_db_total_size_in_bytes",
    ] {
        e.gauge(
            name,
            "Total size of the underlying database physically allocated in bytes.",
            &[],
            status.db_size as f64,
        );
    }
    e.gauge(
        "etcd_mvcc_db_total_size_in_use_in_bytes",
        "Total size of the underlying database logically in use in bytes.",
        &[],
        status.db_size_in_use as f64,
    );
    for (what, counter) in [
        ("range", &counts.ranges),
        ("put", &counts.puts),
        ("delete", &counts.deletes),
        ("txn", &counts.txns),
    ] {
        e.counter(
            &format!("etcd_mvcc_{what}_total"),
            &format!("Total number of {what}s seen by this member."),
            &[],
            counter.get() as f64,
        );
    }
    e.counter(
        "raftkv_value_log_values_moved_total",
        "Values moved out of mostly dead value log segments, back into their records.",
        &[],
        counts.values_moved.get() as f64,
    );
    e.counter(
        "raftkv_value_log_segments_removed_total",
        "Value log segments removed once no record pointed into them.",
        &[],
        counts.segments_removed.get() as f64,
    );
    e.gauge(
        "etcd_debugging_mvcc_current_revision",
        "The current revision of store.",
        &[],
        store.revision() as f64,
    );
    e.gauge(
        "etcd_debugging_mvcc_compact_revision",
        "The revision of the last compaction in store.",
        &[],
        store.compacted_revision() as f64,
    );
    e.counter(
        "etcd_debugging_mvcc_db_compaction_keys_total",
        "Total number of db keys compacted.",
        &[],
        store.counts().compacted_keys.get() as f64,
    );
    e.histogram(
        "etcd_debugging_mvcc_db_compaction_pause_duration_milliseconds",
        "Bucketed histogram of db compaction pause duration.",
        &[],
        &store.counts().compaction_pause,
    );
    e.histogram(
        "etcd_debugging_mvcc_db_compaction_total_duration_milliseconds",
        "Bucketed histogram of db compaction total duration.",
        &[],
        &store.counts().compaction_total,
    );
    e.gauge(
        "raftkv_mvcc_compaction_finished_revision",
        "The compaction revision whose deletes last finished on this member (below the compact revision while its compactor is removing what it dropped).",
        &[],
        store.compaction_finished() as f64,
    );
    let hub = api.watch_hub();
    let (watchers, unsynced) = hub.counts();
    e.gauge(
        "etcd_debugging_mvcc_watcher_total",
        "Total number of watchers.",
        &[],
        watchers as f64,
    );
    e.gauge(
        "etcd_debugging_mvcc_slow_watcher_total",
        "Total number of unsynced slow watchers.",
        &[],
        unsynced as f64,
    );
    e.gauge(
        "etcd_debugging_mvcc_watch_stream_total",
        "Total number of watch streams.",
        &[],
        hub.open_streams() as f64,
    );
    let (memory, store_reads) = hub.catch_up_reads();
    for (source, reads) in [("memory", memory), ("store", store_reads)] {
        e.counter(
            "raftkv_watch_catch_up_reads_total",
            "Catch-up reads for watchers moved aside, by where the events came from: the newest revisions held in memory, or the store's history.",
            &[("source", source)],
            reads as f64,
        );
    }
}

fn network(e: &mut Exposition, api: &EtcdApi) {
    let c = api.client_metrics();
    e.counter(
        "etcd_network_client_grpc_received_bytes_total",
        "The total number of bytes received from grpc clients.",
        &[],
        c.received_bytes.get() as f64,
    );
    e.counter(
        "etcd_network_client_grpc_sent_bytes_total",
        "The total number of bytes sent to grpc clients.",
        &[],
        c.sent_bytes.get() as f64,
    );
    let me = api.node().id();
    for (id, t) in api.node().metrics().peers() {
        if id == me {
            continue;
        }
        let peer = format!("{id:x}");
        e.counter(
            "etcd_network_peer_sent_bytes_total",
            "The total number of bytes sent to peers.",
            &[("To", &peer)],
            t.sent_bytes.get() as f64,
        );
        e.counter(
            "etcd_network_peer_received_bytes_total",
            "The total number of bytes received from peers.",
            &[("From", &peer)],
            t.received_bytes.get() as f64,
        );
        e.counter(
            "etcd_network_peer_sent_failures_total",
            "The total number of send failures from peers.",
            &[("To", &peer)],
            t.sent_failures.get() as f64,
        );
        e.histogram(
            "etcd_network_peer_round_trip_time_seconds",
            "Round-Trip-Time histogram between peers",
            &[("To", &peer)],
            &t.round_trip,
        );
    }
}

fn grpc(e: &mut Exposition, c: &ClientMetrics) {
    // go-grpc-prometheus' families, every method served pre-initialised (every code too),
    // samples sorted by label values as client_golang writes them.
    let mut order: Vec<usize> = (0..METHODS.len()).collect();
    order.sort_by_key(|&i| (METHODS[i].1, METHODS[i].0));
    let mut codes: Vec<usize> = (0..CODES.len()).collect();
    codes.sort_by_key(|&i| CODES[i]);
    for &code in &codes {
        for &i in &order {
            let (service, method, kind) = METHODS[i];
            e.counter(
                "grpc_server_handled_total",
                "Total number of RPCs completed on the server, regardless of success or failure.",
                &[
                    ("grpc_code", CODES[code]),
                    ("grpc_method", method),
                    ("grpc_service", service),
                    ("grpc_type", kind),
                ],
                c.methods[i].handled[code].get() as f64,
            );
        }
    }
    if c.extensive {
        for &i in &order {
            let (service, method, kind) = METHODS[i];
            e.histogram(
                "grpc_server_handling_seconds",
                "Histogram of response latency (seconds) of gRPC that had been application-level handled by the server.",
                &[
                    ("grpc_method", method),
                    ("grpc_service", service),
                    ("grpc_type", kind),
                ],
                &c.methods[i].handling,
            );
        }
    }
    for (name, help, pick) in [
        (
            "grpc_server_msg_received_total",
            "Total number of RPC stream messages received on the server.",
            (|m: &MethodCounts| m.received.get()) as fn(&MethodCounts) -> u64,
        ),
        (
            "grpc_server_msg_sent_total",
            "Total number of gRPC stream messages sent by the server.",
            |m: &MethodCounts| m.sent.get(),
        ),
        (
            "grpc_server_started_total",
            "Total number of RPCs started on the server.",
            |m: &MethodCounts| m.started.get(),
        ),
    ] {
        for &i in &order {
            let (service, method, kind) = METHODS[i];
            e.counter(
                name,
                help,
                &[
                    ("grpc_method", method),
                    ("grpc_service", service),
                    ("grpc_type", kind),
                ],
                pick(&c.methods[i]) as f64,
            );
        }
    }
}

/// The process collector's families (client_golang's), from /proc, and etcd's `os_fd_*`.
fn process(e: &mut Exposition) {
    let fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count()) as f64;
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct it is given, which lives on this stack.
    let max_fds = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
        limit.rlim_cur as f64
    } else {
        0.0
    };
    e.gauge(
        "os_fd_used",
        "The number of used file descriptors.",
        &[],
        fds,
    );
    e.gauge("os_fd_limit", "The file descriptor limit.", &[], max_fds);
    e.gauge(
        "process_open_fds",
        "Number of open file descriptors.",
        &[],
        fds,
    );
    e.gauge(
        "process_max_fds",
        "Maximum number of open file descriptors.",
        &[],
        max_fds,
    );
    let Some(stat) = proc_stat() else { return };
    e.counter(
        "process_cpu_seconds_total",
        "Total user and system CPU time spent in seconds.",
        &[],
        stat.cpu_seconds,
    );
    e.gauge(
        "process_resident_memory_bytes",
        "Resident memory size in bytes.",
        &[],
        stat.rss_bytes,
    );
    e.gauge(
        "process_virtual_memory_bytes",
        "Virtual memory size in bytes.",
        &[],
        stat.vsize_bytes,
    );
    e.gauge(
        "process_start_time_seconds",
        "Start time of the process since unix epoch in seconds.",
        &[],
        stat.start_seconds,
    );
}

struct ProcStat {
    cpu_seconds: f64,
    rss_bytes: f64,
    vsize_bytes: f64,
    start_seconds: f64,
}

/// This process' figures from /proc/self/stat (fields after the command name, which may
/// hold spaces, so the line is split after its last ')').
fn proc_stat() -> Option<ProcStat> {
    let raw = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest = &raw[raw.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Field n of proc(5) is f[n - 3] here (pid and comm are gone).
    let num = |n: usize| f.get(n - 3).and_then(|v| v.parse::<f64>().ok());
    // SAFETY: sysconf only reads a configuration value.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    // SAFETY: as above.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as f64;
    let boot = std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime ")?.trim().parse::<f64>().ok())?;
    Some(ProcStat {
        cpu_seconds: (num(14)? + num(15)?) / ticks,
        vsize_bytes: num(23)?,
        rss_bytes: num(24)? * page,
        start_seconds: boot + num(22)? / ticks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A request body of one unary method, counted as the layer counts it.
    fn request_side(metrics: &Arc<ClientMetrics>, call: &Arc<CallState>) -> Counted {
        let put = metrics
            .method("/etcdserverpb.KV/Put")
            .expect("Put is served");
        let mut counted = Counted::new(Body::empty(), metrics.clone(), put, Direction::In);
        counted.call = Some((call.clone(), 100, true));
        counted
    }

    fn frame(len: u32) -> Vec<u8> {
        let mut bytes = vec![0];
        bytes.extend_from_slice(&len.to_be_bytes());
        bytes
    }

    #[test]
    fn every_served_method_is_found() {
        assert!(
            METHODS
                .windows(2)
                .all(|w| (w[0].0, w[0].1) < (w[1].0, w[1].1))
        );
        let metrics = ClientMetrics::new(false);
        for (i, (service, method, _)) in METHODS.iter().enumerate() {
            assert_eq!(metrics.method(&format!("/{service}/{method}")), Some(i));
        }
        for path in [
            "/etcdserverpb.KV/Nope",
            "/nope/Put",
            "etcdserverpb.KV/Put",
            "/",
        ] {
            assert_eq!(metrics.method(path), None, "{path}");
        }
    }

    #[test]
    fn a_unary_call_counts_once_its_request_is_whole() {
        let metrics = Arc::new(ClientMetrics::new(false));
        let call = Arc::new(CallState::default());
        let mut counted = request_side(&metrics, &call);
        let put = &metrics.methods[counted.method];
        let mut bytes = frame(10);
        bytes.extend_from_slice(&[7; 10]);
        // The header split, then the message in two parts.
        counted.count(&bytes[..3]);
        counted.count(&bytes[3..9]);
        assert_eq!((put.started.get(), put.received.get()), (0, 0));
        counted.count(&bytes[9..]);
        assert_eq!((put.started.get(), put.received.get()), (1, 1));
        assert!(call.received.load(Ordering::Acquire));
        // An empty message is whole at its header.
        let call = Arc::new(CallState::default());
        request_side(&metrics, &call).count(&frame(0));
        assert_eq!((put.started.get(), put.received.get()), (2, 2));
    }

    #[test]
    fn an_oversized_request_is_not_counted_and_gets_grpc_gos_status() {
        let metrics = Arc::new(ClientMetrics::new(false));
        let call = Arc::new(CallState::default());
        let mut counted = request_side(&metrics, &call);
        let method = counted.method;
        counted.count(&frame(101));
        counted.count(&[1; 101]);
        let put = &metrics.methods[method];
        assert_eq!((put.started.get(), put.received.get()), (0, 0));
        assert_eq!(call.oversized.load(Ordering::Acquire), 101);

        let mut answer = Counted::new(Body::empty(), metrics.clone(), method, Direction::Out);
        answer.answers = Some((call.clone(), 100));
        let mut headers = http::HeaderMap::new();
        tonic::Status::out_of_range("Error, decoded message length too large")
            .add_header(&mut headers)
            .expect("encodable");
        answer.translate(&mut headers);
        let status = tonic::Status::from_header_map(&headers).expect("a status");
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert_eq!(
            status.message(),
            "grpc: received message larger than max (101 vs. 100)"
        );
        // Any other status of the call is left as it is.
        let mut headers = http::HeaderMap::new();
        tonic::Status::invalid_argument("etcdserver: request is too large")
            .add_header(&mut headers)
            .expect("encodable");
        answer.translate(&mut headers);
        let status = tonic::Status::from_header_map(&headers).expect("a status");
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
    }
}
