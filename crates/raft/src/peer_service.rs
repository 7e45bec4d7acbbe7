//! The server side of the `Peer` service: Raft RPCs handed to openraft, and the
//! leader-side handlers of forwarded writes, read indexes and membership changes.

use std::pin::Pin;
use std::sync::Weak;
use std::sync::atomic::{AtomicU64, Ordering};

use futures_util::{Stream, StreamExt};
use openraft::raft::{AppendEntriesRequest, TransferLeaderRequest, VoteRequest};
use raftkv_proto::raftkvpb::peer_server::{Peer, PeerServer};
use raftkv_proto::raftkvpb::{
    ChangeMembersRequest, ChangeMembersResponse, ClusterInfoRequest, ClusterInfoResponse, Command,
    CommandResponse, MemberInfo, RaftMessage, ReadIndexRequest, ReadIndexResponse, SnapshotChunk,
};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::{Request, Response, Status, Streaming};

use crate::node::RaftNode;
use crate::state_machine::{Snapshot, SnapshotFile, StateMachine};
use crate::types::{Raft, SnapshotMeta, TypeConfig, Vote, decode, encode_unbounded};

/// The `Peer` service of one member.
pub(crate) struct PeerService {
    node: Weak<RaftNode>,
    raft: Raft,
    sm: StateMachine,
    transfers: AtomicU64,
}

impl PeerService {
    pub(crate) fn new(node: Weak<RaftNode>, raft: Raft, sm: StateMachine) -> Self {
        Self {
            node,
            raft,
            sm,
            transfers: AtomicU64::new(0),
        }
    }

    /// Serves on `listener` until `stop` turns true.
    pub(crate) async fn serve(self, listener: TcpListener, mut stop: watch::Receiver<bool>) {
        // serve_with_incoming does not apply the builder's tcp_nodelay: set it per stream,
        // or Nagle's algorithm meets delayed ACKs and small replies wait ~40 ms.
        let incoming = tokio_stream::StreamExt::map(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            |conn| {
                conn.inspect(|s| {
                    let _ = s.set_nodelay(true);
                })
            },
        );
        let svc = PeerServer::new(self)
            .max_decoding_message_size(crate::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(crate::MAX_MESSAGE_BYTES);
        let result = tonic::transport::Server::builder()
            .tcp_nodelay(true)
            .add_service(svc)
            .serve_with_incoming_shutdown(incoming, async move {
                let _ = stop.wait_for(|s| *s).await;
            })
            .await;
        if let Err(e) = result {
            tracing::error!(error = %e, "peer service stopped");
        }
    }

    fn node(&self) -> Result<std::sync::Arc<RaftNode>, Status> {
        self.node
            .upgrade()
            .ok_or_else(|| Status::unavailable("etcdserver: server stopped"))
    }
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
impl Peer for PeerService {
    async fn vote(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let rpc: VoteRequest<TypeConfig> = request(req.get_ref())?;
        reply(self.raft.vote(rpc).await)
    }

    async fn pre_vote(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let rpc: VoteRequest<TypeConfig> = request(req.get_ref())?;
        reply(self.raft.pre_vote(rpc).await)
    }

    async fn append_entries(
        &self,
        req: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        let rpc: AppendEntriesRequest<TypeConfig> = request(req.get_ref())?;
        reply(self.raft.append_entries(rpc).await)
    }

    async fn transfer_leader(
        &self,
        req: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        let rpc: TransferLeaderRequest<TypeConfig> = request(req.get_ref())?;
        reply(self.raft.handle_transfer_leader(rpc).await)
    }

    type StreamAppendStream = MessageStream;

    async fn stream_append(
        &self,
        req: Request<Streaming<RaftMessage>>,
    ) -> Result<Response<Self::StreamAppendStream>, Status> {
        // Requests are decoded as they arrive; an undecodable one ends the input.
        let input = tokio_stream::StreamExt::map_while(req.into_inner(), |item| {
            item.ok()
                .and_then(|msg| decode::<AppendEntriesRequest<TypeConfig>>(&msg.data).ok())
        });
        let output = self.raft.stream_append(input).map(|result| {
            let result = result.map_err(|e| e.to_string());
            Ok(RaftMessage {
                data: encode_unbounded(&result).into(),
            })
        });
        Ok(Response::new(Box::pin(output)))
    }

    async fn install_snapshot(
        &self,
        req: Request<Streaming<SnapshotChunk>>,
    ) -> Result<Response<RaftMessage>, Status> {
        let mut chunks = req.into_inner();
        let first = chunks
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("empty snapshot stream"))?;
        let (vote, meta): (Vote, SnapshotMeta) = decode(&first.header)
            .map_err(|e| Status::invalid_argument(format!("bad snapshot header: {e}")))?;
        let n = self.transfers.fetch_add(1, Ordering::Relaxed);
        let path = self.sm.incoming_path().with_extension(format!("{n}.part"));
        let io = |e: std::io::Error| Status::internal(format!("writing snapshot: {e}"));
        let mut file = tokio::fs::File::create(&path).await.map_err(io)?;
        while let Some(chunk) = chunks.message().await? {
            file.write_all(&chunk.data).await.map_err(io)?;
        }
        file.sync_all().await.map_err(io)?;
        drop(file);
        let snapshot = Snapshot {
            meta,
            snapshot: SnapshotFile { path: path.clone() },
        };
        let result = self.raft.install_full_snapshot(vote, snapshot).await;
        let _ = tokio::fs::remove_file(&path).await; // installed files were moved already
        reply(result)
    }

    async fn forward(&self, req: Request<Command>) -> Result<Response<CommandResponse>, Status> {
        let node = self.node()?;
        node.write_as_leader(req.into_inner())
            .await
            .map(Response::new)
    }

    async fn read_index(
        &self,
        _req: Request<ReadIndexRequest>,
    ) -> Result<Response<ReadIndexResponse>, Status> {
        let node = self.node()?;
        let index = node.read_index_as_leader().await?;
        Ok(Response::new(ReadIndexResponse { index }))
    }

    async fn change_members(
        &self,
        req: Request<ChangeMembersRequest>,
    ) -> Result<Response<ChangeMembersResponse>, Status> {
        let node = self.node()?;
        node.change_members_as_leader(req.into_inner())
            .await
            .map(Response::new)
    }

    async fn publish(
        &self,
        req: Request<MemberInfo>,
    ) -> Result<Response<ChangeMembersResponse>, Status> {
        let node = self.node()?;
        node.publish_as_leader(req.into_inner())
            .await
            .map(Response::new)
    }

    async fn cluster_info(
        &self,
        req: Request<ClusterInfoRequest>,
    ) -> Result<Response<ClusterInfoResponse>, Status> {
        let node = self.node()?;
        let (cluster_id, member_id) = node.cluster_info(req.get_ref())?;
        Ok(Response::new(ClusterInfoResponse {
            cluster_id,
            member_id,
        }))
    }
}
