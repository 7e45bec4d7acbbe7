//! The Raft network: openraft's `RaftNetworkV2` over the tonic `Peer` service.
//!
//! One gRPC channel per peer, created lazily and reused by every RPC to it (HTTP/2
//! multiplexes them). Appends are pipelined on a bidirectional `StreamAppend` call; a full
//! snapshot streams the file in chunks while the call is in flight. Every unary RPC carries
//! openraft's soft TTL as its gRPC deadline. `https://` peer URLs are dialed over TLS
//! (rustls) with the member's peer certificate as the client certificate.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::io;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use hyper_util::rt::TokioIo;
use openraft::error::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory, RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, StreamAppendResult,
    TransferLeaderRequest, TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::{OptionalSend, base::BoxFuture, base::BoxStream};
use raftkv_proto::raftkvpb::peer_client::PeerClient;
use raftkv_proto::raftkvpb::{ClusterInfoRequest, RaftMessage, SnapshotChunk};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio_rustls::rustls::{self, pki_types::ServerName};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use crate::admission::{self, Refused};
use crate::metrics::{NodeMetrics, PeerTraffic};
use crate::state_machine::{Snapshot, SnapshotFile};
use crate::types::{LogId, Member, TypeConfig, Vote, decode, encode_unbounded};

/// Metadata every peer request carries: the sender's cluster and member id (hex), so that a
/// member refuses messages meant for another cluster (etcd checks the same in a header).
pub const CLUSTER_ID_HEADER: &str = "raftkv-cluster-id";
/// See [`CLUSTER_ID_HEADER`].
pub const MEMBER_ID_HEADER: &str = "raftkv-member-id";

/// On a forwarded write's answer: the log index the leader applied it at, so the follower
/// answers its client once it has applied it too.
pub const APPLIED_INDEX_HEADER: &str = "raftkv-applied-index";

/// Puts [`APPLIED_INDEX_HEADER`] on an answer.
pub fn set_applied_index(md: &mut tonic::metadata::MetadataMap, index: u64) {
    if let Ok(v) = index.to_string().parse() {
        md.insert(APPLIED_INDEX_HEADER, v);
    }
}

/// [`APPLIED_INDEX_HEADER`] of an answer: `None` when absent or not a decimal `u64` (a
/// peer's bytes are checked like a client's; the wait it starts is bounded by the request's
/// deadline).
pub fn applied_index(md: &tonic::metadata::MetadataMap) -> Option<u64> {
    let v = md.get(APPLIED_INDEX_HEADER)?.to_str().ok()?;
    if v.is_empty() || v.len() > 20 || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse().ok()
}

/// A channel to a peer whose requests carry this member's ids.
pub type PeerChannel = InterceptedService<Channel, Stamp>;

/// Adds [`CLUSTER_ID_HEADER`] and [`MEMBER_ID_HEADER`] once the ids are known.
#[derive(Clone, Default)]
pub struct Stamp {
    ids: Arc<OnceLock<(u64, u64)>>,
}

impl tonic::service::Interceptor for Stamp {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some((cluster, member)) = self.ids.get() {
            let md = req.metadata_mut();
            if let Ok(v) = format!("{cluster:016x}").parse() {
                md.insert(CLUSTER_ID_HEADER, v);
            }
            if let Ok(v) = format!("{member:016x}").parse() {
                md.insert(MEMBER_ID_HEADER, v);
            }
        }
        if let Some(id) = crate::trace::current_request_id()
            && let Ok(v) = format!("{id:x}").parse()
        {
            req.metadata_mut()
                .insert(crate::trace::REQUEST_ID_HEADER, v);
        }
        Ok(req)
    }
}

/// Bytes of snapshot file per chunk.
const SNAPSHOT_CHUNK: usize = 1 << 20;

/// How long a follower has to answer before a snapshot file is written for it.
const SNAPSHOT_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Channels to peers, shared by the Raft network and the node's own peer calls.
#[derive(Clone, Default)]
pub struct Channels {
    inner: Arc<Mutex<HashMap<String, Channel>>>,
    connect_timeout: Duration,
    stamp: Stamp,
    moved: Moved,
    /// The TLS client side for `https://` peer URLs.
    tls: Option<Arc<rustls::ClientConfig>>,
}

/// Members whose peer URLs a `member update` changed while this member led. openraft keeps
/// a leader's replication streams (and the network client each was made with) across a
/// membership change, so a stream would go on dialing the old URL; each RPC checks here
/// first. A stream made afterwards is given the current URLs, so its entry is dropped then.
#[derive(Clone, Default)]
struct Moved {
    members: Arc<Mutex<HashMap<u64, Member>>>,
    /// How many entries `members` holds: RPCs skip the lock while it is 0.
    count: Arc<std::sync::atomic::AtomicUsize>,
}

impl Moved {
    fn get(&self, id: u64) -> Option<Member> {
        if self.count.load(std::sync::atomic::Ordering::Acquire) == 0 {
            return None;
        }
        let members = self.members.lock().unwrap_or_else(|e| e.into_inner());
        members.get(&id).cloned()
    }

    /// The first peer URL member `id` moved to, if it moved.
    fn url(&self, id: u64) -> Option<String> {
        self.get(id).and_then(|m| m.peer_urls.first().cloned())
    }

    fn set(&self, id: u64, member: Option<Member>) {
        let mut members = self.members.lock().unwrap_or_else(|e| e.into_inner());
        match member {
            Some(m) => members.insert(id, m),
            None => members.remove(&id),
        };
        self.count
            .store(members.len(), std::sync::atomic::Ordering::Release);
    }
}

impl Channels {
    /// A channel cache whose connections give up after `connect_timeout`.
    pub fn new(connect_timeout: Duration) -> Self {
        Self {
            inner: Arc::default(),
            connect_timeout,
            stamp: Stamp::default(),
            moved: Moved::default(),
            tls: None,
        }
    }

    /// Dials `https://` peer URLs with `tls` (without it they cannot be dialed).
    pub fn with_tls(mut self, tls: Option<Arc<rustls::ClientConfig>>) -> Self {
        self.tls = tls;
        self
    }

    /// Notes that member `id` now has `member`'s peer URLs (a committed `member update`), so
    /// that this member's existing streams to it dial them from now on.
    pub fn member_moved(&self, id: u64, member: &Member) {
        self.moved.set(id, Some(member.clone()));
    }

    /// Stamps every request from now on with this member's cluster and member id.
    pub fn set_ids(&self, cluster: u64, member: u64) {
        let _ = self.stamp.ids.set((cluster, member));
    }

    /// The channel to `url`, created on first use (connecting lazily).
    pub fn get(&self, url: &str) -> Result<Channel, tonic::transport::Error> {
        let mut map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(channel) = map.get(url) {
            return Ok(channel.clone());
        }
        let endpoint = Endpoint::from_shared(url.to_string())?
            .connect_timeout(self.connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(5))
            .keep_alive_timeout(Duration::from_secs(5));
        let channel = if url.starts_with("https://") {
            endpoint.connect_with_connector_lazy(tls_connector(self.tls.clone()))
        } else {
            endpoint.connect_lazy()
        };
        map.insert(url.to_string(), channel.clone());
        Ok(channel)
    }

    /// A `Peer` client for a member, through its first peer URL.
    pub fn peer(&self, member: &Member) -> Result<PeerClient<PeerChannel>, io::Error> {
        let url = member
            .peer_urls
            .first()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "member has no peer URL"))?;
        let channel = self
            .get(url)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        Ok(PeerClient::with_interceptor(channel, self.stamp.clone())
            .max_decoding_message_size(crate::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(crate::MAX_MESSAGE_BYTES))
    }
}

type TlsConnect = std::pin::Pin<
    Box<
        dyn Future<Output = io::Result<TokioIo<tokio_rustls::client::TlsStream<TcpStream>>>> + Send,
    >,
>;

/// The connector of `https://` peer channels: TCP to the URL's host and port, then a TLS
/// handshake naming that host, with `tls` (this member's certificate, the CA it trusts).
/// tonic bounds the whole of it by the channel's connect timeout.
fn tls_connector(
    tls: Option<Arc<rustls::ClientConfig>>,
) -> impl tower::Service<
    http::Uri,
    Response = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>,
    Error = io::Error,
    Future = TlsConnect,
> + Clone
+ Send
+ 'static {
    tower::service_fn(move |uri: http::Uri| -> TlsConnect {
        let tls = tls.clone();
        Box::pin(async move {
            let invalid = |m: String| io::Error::new(io::ErrorKind::InvalidInput, m);
            let tls = tls.ok_or_else(|| {
                invalid(format!(
                    "cannot dial {uri}: this member has no peer TLS configuration"
                ))
            })?;
            let host = uri
                .host()
                .ok_or_else(|| invalid(format!("peer URL {uri} has no host")))?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            let port = uri
                .port_u16()
                .ok_or_else(|| invalid(format!("peer URL {uri} has no port")))?;
            let tcp = TcpStream::connect((host.as_str(), port)).await?;
            let _ = tcp.set_nodelay(true);
            let name = ServerName::try_from(host).map_err(|e| invalid(e.to_string()))?;
            let stream = tokio_rustls::TlsConnector::from(tls)
                .connect(name, tcp)
                .await?;
            Ok(TokioIo::new(stream))
        })
    })
}

/// Requests of one append stream whose send time is kept for the heartbeat round trip.
const MAX_TIMED_IN_FLIGHT: usize = 4096;

/// After a failed attempt to open an append stream, the next attempt waits until this long
/// after the failed one began, as etcd's stream reader dials a peer at most every 100 ms.
/// openraft asks for a new stream for every new entry and heartbeat; without this a leader
/// dialed a member that was down once per put (a quarter of its CPU went to connect and
/// close with one of five members down).
const REDIAL_INTERVAL: Duration = Duration::from_millis(100);

/// Creates a [`PeerNetwork`] per target member.
#[derive(Clone)]
pub struct NetworkFactory {
    channels: Channels,
    metrics: Arc<NodeMetrics>,
}

impl NetworkFactory {
    /// A factory over shared channels, counting traffic into `metrics`.
    pub fn new(channels: Channels, metrics: Arc<NodeMetrics>) -> Self {
        Self { channels, metrics }
    }
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerNetwork;

    async fn new_client(&mut self, target: u64, node: &Member) -> PeerNetwork {
        self.channels.moved.set(target, None); // `node` holds the current URLs
        PeerNetwork {
            target,
            client: self.channels.peer(node),
            channels: self.channels.clone(),
            traffic: self.metrics.peer(target),
            redial_at: None,
        }
    }
}

/// The Raft RPCs to one member.
pub struct PeerNetwork {
    target: u64,
    client: Result<PeerClient<PeerChannel>, io::Error>,
    /// For a target's URLs changed since `client` was made (see `Moved`).
    channels: Channels,
    /// Bytes, failures and heartbeat round trips with this peer.
    traffic: Arc<PeerTraffic>,
    /// When the next append stream may be opened, after one failed to open (see
    /// [`REDIAL_INTERVAL`]).
    redial_at: Option<Instant>,
}

/// A peer's answer that fails [`admission`]: treated as a network failure (openraft retries).
fn refused_answer(r: Refused) -> RPCError<TypeConfig> {
    tracing::warn!(error = %r, "refused a peer's answer");
    RPCError::Network(NetworkError::new(&r))
}

fn unreachable<E: std::error::Error + 'static>(e: &E) -> RPCError<TypeConfig> {
    RPCError::Unreachable(Unreachable::new(e))
}

/// Transport failures: a refused or lost connection means "back off"; anything else (a
/// deadline, a reset stream) is worth retrying at once.
fn status_error(status: tonic::Status) -> RPCError<TypeConfig> {
    match status.code() {
        tonic::Code::Unavailable | tonic::Code::Unknown => unreachable(&status),
        _ => RPCError::Network(NetworkError::new(&status)),
    }
}

impl PeerNetwork {
    fn client(&self) -> Result<PeerClient<PeerChannel>, RPCError<TypeConfig>> {
        self.current_client()
            .map_err(|e| unreachable(&io::Error::new(e.kind(), e.to_string())))
    }

    /// The client for the target's current URLs.
    fn current_client(&self) -> Result<PeerClient<PeerChannel>, io::Error> {
        if let Some(moved) = self.channels.moved.get(self.target) {
            return self.channels.peer(&moved);
        }
        self.client
            .as_ref()
            .map(Clone::clone)
            .map_err(|e| io::Error::new(e.kind(), e.to_string()))
    }

    async fn unary<Req, Resp, F, Fut>(
        &self,
        req: &Req,
        option: &RPCOption,
        call: F,
    ) -> Result<Resp, RPCError<TypeConfig>>
    where
        Req: serde::Serialize,
        Resp: serde::de::DeserializeOwned,
        F: FnOnce(PeerClient<PeerChannel>, tonic::Request<RaftMessage>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<RaftMessage>, tonic::Status>>,
    {
        let data = encode_unbounded(req);
        self.traffic.sent_bytes.add(data.len() as u64);
        let mut request = tonic::Request::new(RaftMessage { data: data.into() });
        request.set_timeout(option.soft_ttl());
        let reply = match call(self.client()?, request).await {
            Ok(reply) => reply.into_inner(),
            Err(status) => {
                self.traffic.sent_failures.inc();
                return Err(status_error(status));
            }
        };
        self.traffic.received_bytes.add(reply.data.len() as u64);
        decode::<Result<Resp, String>>(&reply.data)
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?
            .map_err(|remote| {
                unreachable(&io::Error::other(format!(
                    "member {}: {remote}",
                    self.target
                )))
            })
    }
}

impl RaftNetworkV2<TypeConfig> for PeerNetwork {
    type SnapshotData = SnapshotFile;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        let sent = last_sent(&rpc);
        // A heartbeat (no entries) is answered without touching the disk: its round trip
        // is the network's, what etcd's peer probes measure.
        let started = rpc.entries.is_empty().then(Instant::now);
        let resp: AppendEntriesResponse<TypeConfig> = self
            .unary(&rpc, &option, |mut c, r| async move {
                c.append_entries(r).await
            })
            .await?;
        if let Some(started) = started {
            self.traffic.round_trip.observe_duration(started.elapsed());
        }
        admission::append_response(&resp, sent.as_ref()).map_err(refused_answer)?;
        Ok(resp)
    }

    fn stream_append<'s, S>(
        &'s mut self,
        input: S,
        _option: RPCOption,
    ) -> BoxFuture<
        's,
        Result<
            BoxStream<'s, Result<StreamAppendResult<TypeConfig>, RPCError<TypeConfig>>>,
            RPCError<TypeConfig>,
        >,
    >
    where
        S: futures_util::Stream<Item = AppendEntriesRequest<TypeConfig>>
            + OptionalSend
            + Unpin
            + 'static,
    {
        Box::pin(async move {
            let mut client = self.client()?;
            // A `member update` of the target ends the stream, so that openraft opens a
            // new one to the new URLs (see `Moved`).
            let (moved, target) = (self.channels.moved.clone(), self.target);
            let dialed = moved.url(target);
            // The furthest log id sent so far: an answer may not acknowledge more.
            let sent: Arc<Mutex<Option<LogId>>> = Arc::default();
            let record = sent.clone();
            let out_traffic = self.traffic.clone();
            let in_traffic = self.traffic.clone();
            // When each request in flight went out, if it was a heartbeat (no entries): answers
            // come one per request, in order, so the front one is the answer's request.
            let in_flight: Arc<Mutex<VecDeque<Option<Instant>>>> = Arc::default();
            let out_flight = in_flight.clone();
            // Nothing more goes out through the old URL once the target moved: an entry
            // sent there after the move would reach the member at its old address.
            let (moved_out, dialed_out) = (moved.clone(), dialed.clone());
            let cut = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let cut_out = cut.clone();
            let outbound = input
                .take_while(move |_| {
                    let same = moved_out.url(target) == dialed_out;
                    if !same {
                        cut_out.store(true, std::sync::atomic::Ordering::Release);
                    }
                    futures_util::future::ready(same)
                })
                .map(move |req| {
                    let mut flight = out_flight.lock().unwrap_or_else(|e| e.into_inner());
                    if flight.len() >= MAX_TIMED_IN_FLIGHT {
                        flight.clear(); // answers lost track of: time none rather than wrongly
                    }
                    flight.push_back(req.entries.is_empty().then(Instant::now));
                    drop(flight);
                    if let Some(last) = last_sent(&req) {
                        let mut sent = record.lock().unwrap_or_else(|e| e.into_inner());
                        if sent.is_none_or(|s| s < last) {
                            *sent = Some(last);
                        }
                    }
                    let data = encode_unbounded(&req);
                    out_traffic.sent_bytes.add(data.len() as u64);
                    RaftMessage { data: data.into() }
                });
            if let Some(at) = self.redial_at.take() {
                tokio::time::sleep_until(at.into()).await;
            }
            let dialing = Instant::now();
            let inbound = match client.stream_append(outbound).await {
                Ok(answers) => answers.into_inner(),
                Err(status) => {
                    self.traffic.sent_failures.inc();
                    self.redial_at = Some(dialing + REDIAL_INTERVAL);
                    return Err(status_error(status));
                }
            };
            let results = inbound.map(move |item| {
                if moved.url(target) != dialed {
                    return Err(unreachable(&io::Error::other("peer URLs changed")));
                }
                let msg = item.map_err(status_error)?;
                in_traffic.received_bytes.add(msg.data.len() as u64);
                let sent_at = in_flight
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .pop_front()
                    .flatten();
                if let Some(at) = sent_at {
                    in_traffic.round_trip.observe_duration(at.elapsed());
                }
                let result = decode::<Result<StreamAppendResult<TypeConfig>, String>>(&msg.data)
                    .map_err(|e| RPCError::Network(NetworkError::new(&e)))?
                    .map_err(|remote| unreachable(&io::Error::other(remote)))?;
                let sent = *sent.lock().unwrap_or_else(|e| e.into_inner());
                admission::stream_result(&result, sent.as_ref()).map_err(refused_answer)?;
                Ok(result)
            });
            // The outbound side ended because the target moved: the answers end with it,
            // and the error tells openraft to open a new stream (to the current URLs),
            // whatever the URLs are by then.
            let moved_error = futures_util::stream::once(async move {
                cut.load(std::sync::atomic::Ordering::Acquire)
                    .then(|| Err(unreachable(&io::Error::other("peer URLs changed"))))
            })
            .filter_map(futures_util::future::ready);
            let results = results.chain(moved_error);
            Ok(Box::pin(results) as BoxStream<'s, _>)
        })
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        let resp = self
            .unary(&rpc, &option, |mut c, r| async move { c.vote(r).await })
            .await?;
        admission::vote_response(&resp).map_err(refused_answer)?;
        Ok(resp)
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        let resp = self
            .unary(&rpc, &option, |mut c, r| async move { c.pre_vote(r).await })
            .await?;
        admission::vote_response(&resp).map_err(refused_answer)?;
        Ok(resp)
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.unary(&req, &option, |mut c, r| async move {
            c.transfer_leader(r).await
        })
        .await
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let mut client = self
            .current_client()
            .map_err(|e| StreamingError::Unreachable(Unreachable::new(&e)))?;
        // A file is written only for a follower that answers: the channel connects lazily,
        // so without this every attempt to reach a member that is down (openraft retries
        // after a backoff) wrote a new file of the whole store, seconds of work each at a
        // million keys. Any answer will do, an error status included; only a transport
        // failure or silence is taken for unreachable.
        if snapshot.snapshot.path().is_none() {
            let mut probe = tonic::Request::new(ClusterInfoRequest::default());
            probe.set_timeout(SNAPSHOT_PROBE_TIMEOUT);
            let answered = tokio::time::timeout(SNAPSHOT_PROBE_TIMEOUT, client.cluster_info(probe))
                .await
                .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no answer"))
                .and_then(|reply| match reply {
                    Err(s)
                        if matches!(
                            s.code(),
                            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded
                        ) =>
                    {
                        Err(io::Error::other(s.message().to_string()))
                    }
                    _ => Ok(()),
                });
            if let Err(e) = answered {
                return Err(StreamingError::Unreachable(Unreachable::new(&e)));
            }
        }
        // Written out here if it is a point of this member's store (its pin on compaction
        // goes once it is written), while applies go on.
        let meta = snapshot.meta;
        let file = snapshot
            .snapshot
            .open()
            .await
            .map(tokio::fs::File::from_std)
            .map_err(|e| StreamingError::Network(NetworkError::new(&e)))?;
        let header = encode_unbounded(&(vote, meta));
        // The first chunk carries the header; then the file, read as the call sends.
        let chunks =
            futures_util::stream::unfold((Some(header), file), |(header, mut file)| async move {
                if let Some(header) = header {
                    return Some((
                        SnapshotChunk {
                            header: header.into(),
                            data: Default::default(),
                        },
                        (None, file),
                    ));
                }
                let mut buf = vec![0u8; SNAPSHOT_CHUNK];
                match file.read(&mut buf).await {
                    Ok(0) | Err(_) => None, // a short file fails the receiver's checksum
                    Ok(n) => {
                        buf.truncate(n);
                        Some((
                            SnapshotChunk {
                                header: Default::default(),
                                data: buf.into(),
                            },
                            (None, file),
                        ))
                    }
                }
            });
        let call = client.install_snapshot(chunks);
        let reply = tokio::select! {
            reply = call => reply.map_err(|s| StreamingError::Network(NetworkError::new(&s)))?,
            closed = cancel => return Err(StreamingError::Closed(closed)),
        };
        let resp = decode::<Result<SnapshotResponse<TypeConfig>, String>>(&reply.into_inner().data)
            .map_err(|e| StreamingError::Network(NetworkError::new(&e)))?
            .map_err(|remote| {
                StreamingError::Unreachable(Unreachable::new(&io::Error::other(remote)))
            })?;
        admission::snapshot_response(&resp)
            .map_err(|r| StreamingError::Network(NetworkError::new(&r)))?;
        Ok(resp)
    }
}

/// The last log id an append covers: its last entry's, or else its `prev_log_id`.
fn last_sent(req: &AppendEntriesRequest<TypeConfig>) -> Option<LogId> {
    req.entries.last().map(|e| e.log_id).or(req.prev_log_id)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// A forwarded write's applied index from a peer's answer: only a decimal `u64` is
    /// taken; anything else is no index (and so no wait).
    #[test]
    fn an_applied_index_from_a_peer_is_a_decimal_u64_or_nothing() {
        let mut md = tonic::metadata::MetadataMap::new();
        assert_eq!(applied_index(&md), None);
        set_applied_index(&mut md, 12_345);
        assert_eq!(applied_index(&md), Some(12_345));
        set_applied_index(&mut md, u64::MAX);
        assert_eq!(applied_index(&md), Some(u64::MAX));
        for hostile in [
            "",
            "-1",
            "+5",
            " 5",
            "0x10",
            "18446744073709551616",
            "99999999999999999999999999",
            "1e3",
        ] {
            md.insert(APPLIED_INDEX_HEADER, hostile.parse().unwrap());
            assert_eq!(applied_index(&md), None, "{hostile:?}");
        }
    }

    /// A member whose peer port accepts and drops every connection: each failed attempt to
    /// open an append stream is one accepted connection. Attempts made back to back (as
    /// openraft makes them, one per new entry) dial at most once per `REDIAL_INTERVAL`.
    #[tokio::test]
    async fn failed_stream_opens_redial_at_most_every_interval() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        let acceptor = tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                drop(conn);
            }
        });
        let mut factory = NetworkFactory::new(
            Channels::new(Duration::from_secs(1)),
            Arc::new(NodeMetrics::default()),
        );
        let member = Member {
            name: "down".into(),
            peer_urls: vec![format!("http://127.0.0.1:{port}")],
            client_urls: vec![],
        };
        let mut network = factory.new_client(2, &member).await;
        let window = REDIAL_INTERVAL * 6;
        let started = Instant::now();
        let mut attempts = 0;
        while started.elapsed() < window {
            let input = futures_util::stream::empty::<AppendEntriesRequest<TypeConfig>>();
            let opened = network
                .stream_append(input, RPCOption::new(Duration::from_millis(100)))
                .await;
            assert!(opened.is_err(), "a dropped connection opened a stream");
            attempts += 1;
        }
        let dialed = accepted.load(Ordering::SeqCst);
        acceptor.abort();
        // The window holds at most 6 intervals: a first dial at once and one per interval
        // after it (the last may start just before the window ends).
        assert!(attempts >= 2, "only {attempts} attempts in {window:?}");
        assert!(
            dialed <= 7,
            "{dialed} connections in {window:?} ({attempts} attempts)"
        );
    }
}
