//! The server side of the `Peer` service: Raft RPCs handed to openraft, and the
//! leader-side handlers of forwarded writes, read indexes and membership changes.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use futures_util::{Stream, StreamExt};
use openraft::raft::{AppendEntriesRequest, TransferLeaderRequest, VoteRequest};
use openraft::rt::WatchReceiver;
use raftkv_proto::etcdserverpb::{
    HashKvRequest, HashKvResponse, LeaseKeepAliveRequest, LeaseKeepAliveResponse,
    LeaseTimeToLiveRequest, LeaseTimeToLiveResponse, ResponseHeader,
};
use raftkv_proto::raftkvpb::peer_server::{Peer, PeerServer};
use raftkv_proto::raftkvpb::{
    ChangeMembersRequest, ChangeMembersResponse, ClusterInfoRequest, ClusterInfoResponse, Command,
    CommandResponse, MemberInfo, RaftMessage, ReadIndexRequest, ReadIndexResponse, SnapshotChunk,
};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

use crate::admission::{self, Refused};
use crate::disk;
use crate::error::NodeError;
use crate::metrics::{NodeMetrics, PeerTraffic};
use crate::network::{CLUSTER_ID_HEADER, MEMBER_ID_HEADER};
use crate::serve::{self, MessageBudget, ServeLimits};
use crate::space::Space;
use crate::state_machine::{Snapshot, SnapshotFile, StateMachine};
use crate::trace;
use crate::types::{Raft, SnapshotMeta, TypeConfig, Vote, decode, encode_unbounded};

/// HTTP/2 flow-control windows of the peer port: large enough that a 64 MiB batch of entries
/// streams without waiting on window updates every few hundred kilobytes.
const PEER_STREAM_WINDOW: u32 = 8 << 20;
const PEER_CONNECTION_WINDOW: u32 = 16 << 20;
/// HTTP/2 streams one peer connection may have open at once.
const PEER_MAX_STREAMS: u32 = 256;

/// Free space a received snapshot must leave on the data dir's file system.
const SNAPSHOT_SPACE_RESERVE: u64 = 64 << 20;

/// What the peer service needs of its member: the leader-side handlers of requests other
/// members send to the leader. The node implements it (and so this module does not depend on
/// the node). Errors go back as [`NodeError::to_peer_status`] puts them.
pub(crate) trait LeaderSide: Send + Sync + 'static {
    /// A follower's write, to propose (after the client-edge checks): the answer and the
    /// log index it was applied at here.
    fn forward(
        &self,
        cmd: Command,
    ) -> impl Future<Output = Result<(CommandResponse, Option<u64>), NodeError>> + Send;
    /// A read index for a follower's linearizable read.
    fn read_index(&self) -> impl Future<Output = Result<u64, NodeError>> + Send;
    /// A member add, remove or promote asked of a follower.
    fn change_members(
        &self,
        req: ChangeMembersRequest,
    ) -> impl Future<Output = Result<ChangeMembersResponse, NodeError>> + Send;
    /// A member's name and client URLs.
    fn publish(
        &self,
        info: MemberInfo,
    ) -> impl Future<Output = Result<ChangeMembersResponse, NodeError>> + Send;
    /// A joining member's question: the cluster id, and its own id.
    fn cluster_info(&self, req: &ClusterInfoRequest) -> Result<(u64, u64), NodeError>;
    /// Whether this member is a voter.
    fn is_voter(&self) -> bool;
    /// A follower's keep-alive of lease `id`: its TTL.
    fn lease_renew(&self, id: i64) -> impl Future<Output = Result<i64, NodeError>> + Send;
    /// A follower's time-to-live question.
    fn lease_time_to_live(
        &self,
        id: i64,
        keys: bool,
    ) -> impl Future<Output = Result<LeaseTimeToLiveResponse, NodeError>> + Send;
    /// A leader's append passed admission (for [`crate::RaftNode::has_leader`]).
    fn heard_from_leader(&self);
}

/// The `Peer` service of one member.
pub(crate) struct PeerService<N> {
    node: Weak<N>,
    raft: Raft,
    sm: StateMachine,
    transfers: AtomicU64,
    /// This member's id and cluster id.
    me: u64,
    cluster_id: u64,
    /// Free space on the data dir: entries are refused when it is nearly gone.
    space: Arc<Space>,
    /// Traffic with the members that call this one, for `/metrics`.
    metrics: Arc<NodeMetrics>,
    /// One HashKV at a time: each reads the whole store, so callers queue for it rather
    /// than take every blocking thread. The hashing thread holds the turn to its end, so a
    /// caller that gives up mid-hash cannot start a second one beside it.
    hashing: Arc<tokio::sync::Semaphore>,
}

impl<N: LeaderSide> PeerService<N> {
    pub(crate) fn new(
        node: Weak<N>,
        raft: Raft,
        sm: StateMachine,
        me: u64,
        cluster_id: u64,
        space: Arc<Space>,
        metrics: Arc<NodeMetrics>,
    ) -> Self {
        Self {
            node,
            raft,
            sm,
            transfers: AtomicU64::new(0),
            me,
            cluster_id,
            space,
            metrics,
            hashing: Arc::new(tokio::sync::Semaphore::new(1)),
        }
    }

    /// The traffic counters of the member that sent `req`, if it names itself and is in the
    /// membership (a stranger's claims create no counters).
    fn sender_traffic<T>(&self, req: &Request<T>) -> Option<Arc<PeerTraffic>> {
        let sender = req
            .metadata()
            .get(MEMBER_ID_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| u64::from_str_radix(v, 16).ok())?;
        let known = self
            .raft
            .metrics()
            .borrow_watched()
            .membership_config
            .membership()
            .get_node(&sender)
            .is_some();
        known.then(|| self.metrics.peer(sender))
    }

    /// Refuses a request stamped with another cluster's id (a member of another cluster
    /// pointed at ours by mistake), or one whose sender is not who its vote names.
    fn check_origin<T>(&self, req: &Request<T>, voted_for: Option<u64>) -> Result<(), Status> {
        let header = |name: &str| {
            req.metadata()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| u64::from_str_radix(v, 16).ok())
        };
        if let Some(cluster) = header(CLUSTER_ID_HEADER)
            && cluster != self.cluster_id
        {
            return Err(Status::failed_precondition(format!(
                "raftkv: request from cluster {cluster:016x}, this member is in cluster {:016x}",
                self.cluster_id
            )));
        }
        if let (Some(sender), Some(named)) = (header(MEMBER_ID_HEADER), voted_for)
            && sender != named
        {
            return Err(Refused("sender is not the member its vote names").into());
        }
        Ok(())
    }

    /// Serves on `listener` until `stop` turns true.
    pub(crate) async fn serve(
        self,
        listener: TcpListener,
        tls: Option<serve::TlsAccept>,
        mut stop: watch::Receiver<bool>,
    ) {
        let limits = ServeLimits::new(crate::MAX_MESSAGE_BYTES);
        let incoming = serve::peer_incoming(listener, &limits, tls);
        let budget = MessageBudget::new(&limits);
        let svc = PeerServer::new(self)
            .max_decoding_message_size(crate::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(crate::MAX_MESSAGE_BYTES);
        let result = tonic::transport::Server::builder()
            .tcp_nodelay(true)
            .initial_stream_window_size(PEER_STREAM_WINDOW)
            .initial_connection_window_size(PEER_CONNECTION_WINDOW)
            // A member opens a handful of streams to a peer; this bounds a hostile one.
            .max_concurrent_streams(Some(PEER_MAX_STREAMS))
            .http2_keepalive_interval(Some(std::time::Duration::from_secs(10)))
            .http2_keepalive_timeout(Some(std::time::Duration::from_secs(10)))
            .layer(budget.layer())
            .add_service(svc)
            .serve_with_incoming_shutdown(incoming, async move {
                let _ = stop.wait_for(|s| *s).await;
            })
            .await;
        if let Err(e) = result {
            tracing::error!(error = %e, "peer service stopped");
        }
    }

    /// Writes a snapshot's data to `path`, refusing to fill the disk with it.
    async fn receive_snapshot(
        &self,
        chunks: &mut Streaming<SnapshotChunk>,
        path: &std::path::Path,
    ) -> Result<(), Status> {
        let io = |e: std::io::Error| Status::internal(format!("writing snapshot: {e}"));
        let dir = path.parent().unwrap_or(path).to_path_buf();
        let room = disk::available_bytes(&dir)
            .map_err(io)?
            .saturating_sub(SNAPSHOT_SPACE_RESERVE);
        let mut file = tokio::fs::File::create(path).await.map_err(io)?;
        let mut written = 0u64;
        while let Some(chunk) = chunks.message().await? {
            written += chunk.data.len() as u64;
            if written > room {
                return Err(Status::resource_exhausted(
                    "raftkv: not enough disk space for the snapshot",
                ));
            }
            file.write_all(&chunk.data).await.map_err(io)?;
        }
        file.sync_all().await.map_err(io)?;
        Ok(())
    }

    /// Reads the received file through (checksums, structure, bounds) and checks that it is
    /// the snapshot its header announced and that the store has room for it — so that
    /// installing it, where any error stops Raft, cannot fail on its content.
    async fn verify_snapshot(
        &self,
        path: &std::path::Path,
        meta: &SnapshotMeta,
    ) -> Result<(), Status> {
        let file = path.to_path_buf();
        let info = tokio::task::spawn_blocking(move || raftkv_storage::snapshot::read_info(&file))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(|e| Status::invalid_argument(format!("raftkv: bad snapshot: {e}")))?;
        let described = crate::state_machine::meta_of(&info.meta)
            .map_err(|e| Status::invalid_argument(format!("raftkv: bad snapshot: {e}")))?;
        if described.last_log_id != meta.last_log_id
            || described.last_membership != meta.last_membership
        {
            return Err(Refused("snapshot file does not match its header").into());
        }
        let dir = path.parent().unwrap_or(path).to_path_buf();
        let room = disk::available_bytes(&dir)
            .map_err(|e| Status::internal(e.to_string()))?
            .saturating_sub(SNAPSHOT_SPACE_RESERVE);
        if info.raw_size.saturating_mul(2) > room {
            return Err(Status::resource_exhausted(
                "raftkv: not enough disk space to install the snapshot",
            ));
        }
        Ok(())
    }

    /// The span a leader-side handler serves a follower's call in: the client request's id
    /// (or a new one), this member and its term, and who sent it.
    fn leader_span<T>(&self, what: &'static str, req: &Request<T>) -> (tracing::Span, u64) {
        let id = trace::request_id_of(req).unwrap_or_else(|| trace::new_request_id(self.me));
        let from = req
            .metadata()
            .get(MEMBER_ID_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("?")
            .to_string();
        let term = self.raft.metrics().borrow_watched().current_term;
        let span = tracing::debug_span!(
            "peer",
            request = %format!("{id:x}"),
            member = %format!("{:016x}", self.me),
            term,
            call = what,
            from = %from
        );
        tracing::debug!(parent: &span, "serving a follower's call as leader");
        (span, id)
    }

    /// Refuses Raft messages once this member's Raft has stopped (a peer handing leadership
    /// over as the whole cluster shuts down, say): openraft would log each as an error.
    fn running(&self) -> Result<(), Status> {
        match self.raft.metrics().borrow_watched().running_state {
            Ok(()) => Ok(()),
            Err(_) => Err(NodeError::STOPPED.to_peer_status()),
        }
    }

    fn node(&self) -> Result<Arc<N>, Status> {
        self.node
            .upgrade()
            .ok_or_else(|| NodeError::STOPPED.to_peer_status())
    }
}

/// The answer to entries arriving when the disk is nearly full (the leader tries again).
fn disk_nearly_full() -> Status {
    Status::unavailable("raftkv: disk nearly full, not taking entries")
}

/// Answers a Raft RPC: openraft's result, or its fatal error as text.
fn reply<T: serde::Serialize, E: std::fmt::Display>(
    result: Result<T, E>,
) -> Result<Response<RaftMessage>, Status> {
    let result = result.map_err(|e| e.to_string());
    Ok(Response::new(RaftMessage {
        data: encode_unbounded(&result).into(),
    }))
}

fn request<T: serde::de::DeserializeOwned>(msg: &RaftMessage) -> Result<T, Status> {
    decode(&msg.data)
        .map_err(|e| Status::invalid_argument(format!("undecodable raft message: {e}")))
}

type MessageStream = Pin<Box<dyn Stream<Item = Result<RaftMessage, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl<N: LeaderSide> Peer for PeerService<N> {
    async fn vote(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let rpc: VoteRequest<TypeConfig> = request(req.get_ref())?;
        self.check_origin(&req, Some(rpc.vote.leader_id.voted_for))?;
        admission::vote_request(&rpc, self.me)?;
        self.running()?;
        reply(self.raft.vote(rpc).await)
    }

    async fn pre_vote(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let rpc: VoteRequest<TypeConfig> = request(req.get_ref())?;
        self.check_origin(&req, Some(rpc.vote.leader_id.voted_for))?;
        admission::vote_request(&rpc, self.me)?;
        self.running()?;
        reply(self.raft.pre_vote(rpc).await)
    }

    async fn append_entries(
        &self,
        req: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        let rpc: AppendEntriesRequest<TypeConfig> = request(req.get_ref())?;
        self.check_origin(&req, Some(rpc.vote.leader_id.voted_for))?;
        admission::append_entries(&rpc, self.me)?;
        if !rpc.entries.is_empty() && self.space.is_critical() {
            return Err(disk_nearly_full());
        }
        self.running()?;
        if let Some(node) = self.node.upgrade() {
            node.heard_from_leader();
        }
        let traffic = self.sender_traffic(&req);
        let answer = reply(self.raft.append_entries(rpc).await);
        if let (Some(t), Ok(a)) = (&traffic, &answer) {
            t.received_bytes.add(req.get_ref().data.len() as u64);
            t.sent_bytes.add(a.get_ref().data.len() as u64);
        }
        answer
    }

    async fn transfer_leader(
        &self,
        req: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        let rpc: TransferLeaderRequest<TypeConfig> = request(req.get_ref())?;
        self.check_origin(&req, Some(rpc.from_leader().leader_id.voted_for))?;
        let voter = self.node()?.is_voter();
        admission::transfer_leader(&rpc, self.me, voter)?;
        self.running()?;
        reply(self.raft.handle_transfer_leader(rpc).await)
    }

    type StreamAppendStream = MessageStream;

    async fn stream_append(
        &self,
        req: Request<Streaming<RaftMessage>>,
    ) -> Result<Response<Self::StreamAppendStream>, Status> {
        self.check_origin(&req, None)?;
        let traffic = self.sender_traffic(&req);
        let in_traffic = traffic.clone();
        // Requests are decoded and checked as they arrive; one that fails ends the input
        // (openraft answers those already taken, then the stream ends). Skipping one instead
        // would leave a hole the next append claims to follow.
        let me = self.me;
        let space = self.space.clone();
        let node = self.node.clone();
        let input = tokio_stream::StreamExt::map_while(req.into_inner(), move |item| {
            let item = item.ok()?;
            if let Some(t) = &in_traffic {
                t.received_bytes.add(item.data.len() as u64);
            }
            let rpc = decode::<AppendEntriesRequest<TypeConfig>>(&item.data).ok()?;
            if let Err(refused) = admission::append_entries(&rpc, me) {
                tracing::warn!(error = %refused, "ending a peer's append stream");
                return None;
            }
            // Out of disk: end the stream before these entries; the leader tries again.
            if !rpc.entries.is_empty() && space.is_critical() {
                return None;
            }
            if let Some(node) = node.upgrade() {
                node.heard_from_leader();
            }
            Some(rpc)
        });
        let output = self.raft.stream_append(input).map(move |result| {
            let result = result.map_err(|e| e.to_string());
            let data = encode_unbounded(&result);
            if let Some(t) = &traffic {
                t.sent_bytes.add(data.len() as u64);
            }
            Ok(RaftMessage { data: data.into() })
        });
        Ok(Response::new(Box::pin(output)))
    }

    async fn install_snapshot(
        &self,
        req: Request<Streaming<SnapshotChunk>>,
    ) -> Result<Response<RaftMessage>, Status> {
        self.check_origin(&req, None)?;
        // A member whose Raft has stopped refuses before the data comes, as appends do.
        self.running()?;
        let mut chunks = req.into_inner();
        let first = chunks
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("empty snapshot stream"))?;
        let (vote, meta): (Vote, SnapshotMeta) = decode(&first.header)
            .map_err(|e| Status::invalid_argument(format!("bad snapshot header: {e}")))?;
        admission::snapshot_header(&vote, &meta, self.me)?;
        // A sender whose vote is behind ours gets our vote back, as openraft would answer,
        // before a byte of its data is taken (the flushed vote only grows, so this never
        // refuses a sender openraft would accept).
        let (local_vote, committed) = {
            let m = self.raft.metrics().borrow_watched().clone();
            (m.vote, m.local_committed)
        };
        if !matches!(
            vote.partial_cmp(&local_vote),
            Some(std::cmp::Ordering::Greater | std::cmp::Ordering::Equal)
        ) {
            let answer = openraft::raft::SnapshotResponse::<TypeConfig> { vote: local_vote };
            return reply(Ok::<_, String>(answer));
        }
        if let (Some(snap), Some(committed)) = (&meta.last_log_id, &committed)
            && snap > committed
            && snap.index <= committed.index
        {
            return Err(Refused("snapshot contradicts the committed log").into());
        }
        let n = self.transfers.fetch_add(1, Ordering::Relaxed);
        let path = self.sm.incoming_path().with_extension(format!("{n}.part"));
        // The three steps are logged with what they took, as etcd logs its "receiving
        // database snapshot" and "received and saved database snapshot".
        let index = meta.last_log_id.as_ref().map_or(0, |id| id.index);
        let started = std::time::Instant::now();
        tracing::info!(index, "receiving snapshot");
        let received = self.receive_snapshot(&mut chunks, &path).await;
        let took_receiving = started.elapsed();
        let verified = match received {
            Ok(()) => self.verify_snapshot(&path, &meta).await,
            Err(e) => Err(e),
        };
        if let Err(status) = verified {
            let _ = tokio::fs::remove_file(&path).await;
            tracing::warn!(index, error = %status.message(), "refused a snapshot");
            return Err(status);
        }
        let bytes = tokio::fs::metadata(&path).await.map_or(0, |m| m.len());
        tracing::info!(
            index,
            bytes,
            receiving = ?took_receiving,
            verifying = ?(started.elapsed() - took_receiving),
            "received and verified snapshot"
        );
        let snapshot = Snapshot {
            meta,
            snapshot: SnapshotFile::file(path.clone()),
        };
        let installing = std::time::Instant::now();
        let result = self.raft.install_full_snapshot(vote, snapshot).await;
        let _ = tokio::fs::remove_file(&path).await;
        tracing::info!(index, took = ?installing.elapsed(), ok = result.is_ok(), "installed snapshot");
        reply(result)
    }

    async fn forward(&self, req: Request<Command>) -> Result<Response<CommandResponse>, Status> {
        let node = self.node()?;
        let (span, id) = self.leader_span("forward", &req);
        let work = async move {
            let (response, index) = node
                .forward(req.into_inner())
                .await
                .map_err(|e| e.to_peer_status())?;
            let mut response = Response::new(response);
            if let Some(index) = index {
                crate::network::set_applied_index(response.metadata_mut(), index);
            }
            Ok(response)
        };
        trace::with_request_id(id, work.instrument(span)).await
    }

    async fn lease_renew(
        &self,
        req: Request<LeaseKeepAliveRequest>,
    ) -> Result<Response<LeaseKeepAliveResponse>, Status> {
        let node = self.node()?;
        let (span, rid) = self.leader_span("lease_renew", &req);
        let id = req.into_inner().id;
        let work = async move {
            let ttl = node.lease_renew(id).await;
            answer(ttl.map(|ttl| LeaseKeepAliveResponse {
                header: None,
                id,
                ttl,
            }))
        };
        trace::with_request_id(rid, work.instrument(span)).await
    }

    async fn lease_time_to_live(
        &self,
        req: Request<LeaseTimeToLiveRequest>,
    ) -> Result<Response<LeaseTimeToLiveResponse>, Status> {
        let node = self.node()?;
        let (span, rid) = self.leader_span("lease_time_to_live", &req);
        let req = req.into_inner();
        let work = async move { answer(node.lease_time_to_live(req.id, req.keys).await) };
        trace::with_request_id(rid, work.instrument(span)).await
    }

    /// etcd's peer `/members/hashkv`: this member's HashKV at the asked revision, for another
    /// member's corruption check. The hash reads every version, so it runs on a blocking
    /// thread; a compacted or future revision gets etcd's refusal.
    async fn hash_kv(
        &self,
        req: Request<HashKvRequest>,
    ) -> Result<Response<HashKvResponse>, Status> {
        self.check_origin(&req, None)?;
        let revision = req.into_inner().revision;
        let turn = self
            .hashing
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| NodeError::STOPPED.to_peer_status())?;
        let h = crate::node::hash_off_runtime(self.sm.store(), revision, turn)
            .await
            .map_err(|e| e.to_peer_status())?;
        Ok(Response::new(HashKvResponse {
            header: Some(ResponseHeader {
                cluster_id: self.cluster_id,
                member_id: self.me,
                revision: h.revision,
                raft_term: self.raft.metrics().borrow_watched().current_term,
            }),
            hash: h.hash,
            compact_revision: crate::etcd_compact_revision(h.compact_revision),
        }))
    }

    async fn read_index(
        &self,
        req: Request<ReadIndexRequest>,
    ) -> Result<Response<ReadIndexResponse>, Status> {
        let node = self.node()?;
        let (span, id) = self.leader_span("read_index", &req);
        let work = async move {
            let index = node.read_index().await;
            answer(index.map(|index| ReadIndexResponse { index }))
        };
        trace::with_request_id(id, work.instrument(span)).await
    }

    async fn change_members(
        &self,
        req: Request<ChangeMembersRequest>,
    ) -> Result<Response<ChangeMembersResponse>, Status> {
        let node = self.node()?;
        let (span, id) = self.leader_span("change_members", &req);
        let work = async move { answer(node.change_members(req.into_inner()).await) };
        trace::with_request_id(id, work.instrument(span)).await
    }

    async fn publish(
        &self,
        req: Request<MemberInfo>,
    ) -> Result<Response<ChangeMembersResponse>, Status> {
        let node = self.node()?;
        answer(node.publish(req.into_inner()).await)
    }

    async fn cluster_info(
        &self,
        req: Request<ClusterInfoRequest>,
    ) -> Result<Response<ClusterInfoResponse>, Status> {
        let node = self.node()?;
        answer(
            node.cluster_info(req.get_ref())
                .map(|(cluster_id, member_id)| ClusterInfoResponse {
                    cluster_id,
                    member_id,
                }),
        )
    }
}

/// A leader-side handler's result as the peer protocol carries it.
fn answer<T>(result: Result<T, NodeError>) -> Result<Response<T>, Status> {
    result.map(Response::new).map_err(|e| e.to_peer_status())
}
