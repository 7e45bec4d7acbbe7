//! The etcd v3 gRPC services (KV, Watch, Lease, Maintenance, Cluster, Lock, Election) over
//! [`EtcdApi`]. Errors become gRPC statuses in one place: `From<NodeError> for tonic::Status`
//! (raftkv-raft's `error`), except Lock's and Election's, which etcd sends as code Unknown.

use std::pin::Pin;

use futures_util::{Stream, StreamExt};
use raftkv_proto::etcdserverpb::cluster_server::Cluster;
use raftkv_proto::etcdserverpb::kv_server::Kv;
use raftkv_proto::etcdserverpb::maintenance_server::Maintenance;
use raftkv_proto::etcdserverpb::*;
use raftkv_proto::raftkvpb::{ChangeMembersRequest, change_members_request};
use tokio::io::AsyncReadExt;
use tonic::{Request, Response, Status};

use crate::api::EtcdApi;

/// Bytes per `Maintenance/Snapshot` message, as etcd sends them.
const SNAPSHOT_CHUNK: usize = 32 * 1024;

#[tonic::async_trait]
impl Kv for EtcdApi {
    async fn range(&self, req: Request<RangeRequest>) -> Result<Response<RangeResponse>, Status> {
        Ok(Response::new(EtcdApi::range(self, req.into_inner()).await?))
    }

    async fn put(&self, req: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        Ok(Response::new(EtcdApi::put(self, req.into_inner()).await?))
    }

    async fn delete_range(
        &self,
        req: Request<DeleteRangeRequest>,
    ) -> Result<Response<DeleteRangeResponse>, Status> {
        Ok(Response::new(
            EtcdApi::delete_range(self, req.into_inner()).await?,
        ))
    }

    async fn txn(&self, req: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        Ok(Response::new(EtcdApi::txn(self, req.into_inner()).await?))
    }

    async fn compact(
        &self,
        req: Request<CompactionRequest>,
    ) -> Result<Response<CompactionResponse>, Status> {
        Ok(Response::new(
            EtcdApi::compact(self, req.into_inner()).await?,
        ))
    }
}

/// clientv3's `WithRequireLeader` ("hasleader" metadata): etcd's interceptor refuses such a
/// stream with "etcdserver: no leader" at once when the member has none. Returns whether the
/// stream asked.
pub(crate) fn require_leader(
    api: &EtcdApi,
    metadata: &tonic::metadata::MetadataMap,
) -> Result<bool, Status> {
    let asked = metadata
        .get("hasleader")
        .is_some_and(|v| v.as_bytes() == b"true");
    if asked && !api.node().has_leader() {
        return Err(raftkv_raft::NodeError::NO_LEADER.into());
    }
    Ok(asked)
}

type KeepAliveStream =
    Pin<Box<dyn Stream<Item = Result<LeaseKeepAliveResponse, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl raftkv_proto::etcdserverpb::lease_server::Lease for EtcdApi {
    type LeaseKeepAliveStream = KeepAliveStream;

    async fn lease_grant(
        &self,
        req: Request<LeaseGrantRequest>,
    ) -> Result<Response<LeaseGrantResponse>, Status> {
        Ok(Response::new(
            EtcdApi::lease_grant(self, req.into_inner()).await?,
        ))
    }

    async fn lease_revoke(
        &self,
        req: Request<LeaseRevokeRequest>,
    ) -> Result<Response<LeaseRevokeResponse>, Status> {
        Ok(Response::new(
            EtcdApi::lease_revoke(self, req.into_inner()).await?,
        ))
    }

    /// One answer per request, in order; the stream ends with the client's, or with an
    /// error other than an unknown lease (which is answered with TTL 0).
    async fn lease_keep_alive(
        &self,
        req: Request<tonic::Streaming<LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        // clientv3's lease client asks for a leader too: refused now without one, ended
        // after three election timeouts without one, as etcd's interceptor does.
        let require_leader = require_leader(self, req.metadata())?;
        let mut requests = req.into_inner();
        let api = self.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        tokio::spawn(async move {
            let leader_lost = api.clone().leader_lost();
            tokio::pin!(leader_lost);
            loop {
                let next = tokio::select! {
                    next = requests.message() => next,
                    () = tx.closed() => return,
                    () = &mut leader_lost, if require_leader => {
                        let _ = tx.send(Err(raftkv_raft::NodeError::NO_LEADER.into())).await;
                        return;
                    }
                };
                let answer = match next {
                    Ok(Some(r)) => api.lease_keep_alive(r.id).await.map_err(Status::from),
                    Ok(None) => return,
                    Err(status) => Err(status),
                };
                let end = answer.is_err();
                if tx.send(answer).await.is_err() || end {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn lease_time_to_live(
        &self,
        req: Request<LeaseTimeToLiveRequest>,
    ) -> Result<Response<LeaseTimeToLiveResponse>, Status> {
        Ok(Response::new(
            EtcdApi::lease_time_to_live(self, req.into_inner()).await?,
        ))
    }

    async fn lease_leases(
        &self,
        _req: Request<LeaseLeasesRequest>,
    ) -> Result<Response<LeaseLeasesResponse>, Status> {
        Ok(Response::new(EtcdApi::lease_leases(self).await?))
    }
}

type SnapshotStream =
    Pin<Box<dyn Stream<Item = Result<SnapshotResponse, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Maintenance for EtcdApi {
    async fn alarm(&self, req: Request<AlarmRequest>) -> Result<Response<AlarmResponse>, Status> {
        Ok(Response::new(EtcdApi::alarm(self, req.into_inner()).await?))
    }

    async fn status(
        &self,
        _req: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        Ok(Response::new(EtcdApi::status(self)))
    }

    async fn defragment(
        &self,
        _req: Request<DefragmentRequest>,
    ) -> Result<Response<DefragmentResponse>, Status> {
        // etcd's authMaintenanceServer: root only, with auth on.
        self.require_admin_maintenance().await?;
        // sled reclaims space by itself; there is nothing to defragment. What compactions
        // dropped and the compactor thread has not removed yet goes first, so the space is
        // given back when the answer comes. etcd 3.4 answers without a header
        // (v3rpc/maintenance.go).
        let store = self.node().store().clone();
        tokio::task::spawn_blocking(move || store.finish_compaction())
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(DefragmentResponse { header: None }))
    }

    async fn hash(&self, _req: Request<HashRequest>) -> Result<Response<HashResponse>, Status> {
        Ok(Response::new(EtcdApi::hash(self).await?))
    }

    async fn hash_kv(
        &self,
        req: Request<HashKvRequest>,
    ) -> Result<Response<HashKvResponse>, Status> {
        Ok(Response::new(
            EtcdApi::hash_kv(self, req.into_inner()).await?,
        ))
    }

    type SnapshotStream = SnapshotStream;

    async fn snapshot(
        &self,
        _req: Request<SnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        self.require_admin_maintenance().await?;
        // A turn from the build to the stream's end: the file is the size of the store.
        let turn = crate::api::take_turn(&self.turns.snapshot).await?;
        let node = self.node().clone();
        let dir = raftkv_storage::layout::snap_dir(&node.config().data_dir);
        let path = dir.join(format!("client-{}-{}.part", std::process::id(), unique()));
        let store = node.store().clone();
        // Built, opened and unlinked on the blocking thread, so that whatever becomes of
        // this request (the client gone, the build failed part-way), no file is left behind:
        // the open file keeps its bytes only while it is streamed, and the turn with it.
        let (info, file, turn) = tokio::task::spawn_blocking(move || {
            let built = raftkv_storage::snapshot::build_scratch(&store, &path)
                .map_err(|e| format!("building snapshot: {e}"))
                .and_then(|info| {
                    std::fs::File::open(&path)
                        .map(|file| (info, file, turn))
                        .map_err(|e| e.to_string())
                });
            let _ = std::fs::remove_file(&path);
            built
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(Status::internal)?;
        let mut file = tokio::fs::File::from_std(file);
        let total = info.total_size;
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<SnapshotResponse, Status>>(4);
        // A client that stops taking pieces gives up its turn (and the file) after `stall`;
        // should it read again, its stream ends with an error, never as if complete.
        let stall = self.turns.snapshot_stall;
        let stalled = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let tail = {
            let stalled = stalled.clone();
            futures_util::stream::once(async move {
                stalled
                    .load(std::sync::atomic::Ordering::Acquire)
                    .then(|| Err(Status::unavailable(stalled_message(stall))))
            })
            .filter_map(std::future::ready)
        };
        tokio::spawn(async move {
            let _turn = turn;
            // The body in 32 KiB pieces, then the 32-byte SHA-256 on its own, as etcd does.
            let body = total.saturating_sub(32);
            let mut sent = 0u64;
            while sent < total {
                let want = if sent < body {
                    (body - sent).min(SNAPSHOT_CHUNK as u64)
                } else {
                    total - sent
                };
                let mut buf = vec![0u8; want as usize];
                if let Err(e) = file.read_exact(&mut buf).await {
                    let error = Status::internal(format!("reading snapshot: {e}"));
                    let _ = tokio::time::timeout(stall, tx.send(Err(error))).await;
                    return;
                }
                sent += want;
                // etcd 3.4 sends no header with any part (v3rpc/maintenance.go).
                let msg = SnapshotResponse {
                    header: None,
                    // etcd counts what is left of the database, not of its checksum.
                    remaining_bytes: body.saturating_sub(sent),
                    blob: buf.into(),
                };
                match tokio::time::timeout(stall, tx.send(Ok(msg))).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => return, // the client went away
                    Err(_) => {
                        stalled.store(true, std::sync::atomic::Ordering::Release);
                        tracing::warn!(
                            sent,
                            total,
                            "{}; its turn and file are given up",
                            stalled_message(stall)
                        );
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx).chain(tail),
        )))
    }

    async fn move_leader(
        &self,
        req: Request<MoveLeaderRequest>,
    ) -> Result<Response<MoveLeaderResponse>, Status> {
        // etcd 3.4 lets anyone move the leader; with auth on, only root may here.
        self.require_admin().await?;
        self.node().move_leader(req.into_inner().target_id).await?;
        // No header, as etcd 3.4 answers (v3rpc/maintenance.go).
        Ok(Response::new(MoveLeaderResponse { header: None }))
    }
}

fn stalled_message(stall: std::time::Duration) -> String {
    format!("raftkv: snapshot stream ended: the client took no data for {stall:?}")
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// etcd's cluster service leaves the revision out of its headers (`ClusterServer.header`).
#[tonic::async_trait]
impl Cluster for EtcdApi {
    async fn member_add(
        &self,
        req: Request<MemberAddRequest>,
    ) -> Result<Response<MemberAddResponse>, Status> {
        let change = ChangeMembersRequest {
            op: Some(change_members_request::Op::Add(req.into_inner())),
        };
        let resp = self.change_members(change).await?;
        Ok(Response::new(MemberAddResponse {
            header: self.header(0),
            member: resp.member,
            members: resp.members,
        }))
    }

    async fn member_remove(
        &self,
        req: Request<MemberRemoveRequest>,
    ) -> Result<Response<MemberRemoveResponse>, Status> {
        let change = ChangeMembersRequest {
            op: Some(change_members_request::Op::Remove(req.into_inner())),
        };
        let resp = self.change_members(change).await?;
        Ok(Response::new(MemberRemoveResponse {
            header: self.header(0),
            members: resp.members,
        }))
    }

    async fn member_update(
        &self,
        req: Request<MemberUpdateRequest>,
    ) -> Result<Response<MemberUpdateResponse>, Status> {
        let change = ChangeMembersRequest {
            op: Some(change_members_request::Op::Update(req.into_inner())),
        };
        let resp = self.change_members(change).await?;
        Ok(Response::new(MemberUpdateResponse {
            header: self.header(0),
            members: resp.members,
        }))
    }

    async fn member_list(
        &self,
        _req: Request<MemberListRequest>,
    ) -> Result<Response<MemberListResponse>, Status> {
        Ok(Response::new(MemberListResponse {
            header: self.header(0),
            members: self.members(),
        }))
    }

    async fn member_promote(
        &self,
        req: Request<MemberPromoteRequest>,
    ) -> Result<Response<MemberPromoteResponse>, Status> {
        let change = ChangeMembersRequest {
            op: Some(change_members_request::Op::Promote(req.into_inner())),
        };
        let resp = self.change_members(change).await?;
        Ok(Response::new(MemberPromoteResponse {
            header: self.header(0),
            members: resp.members,
        }))
    }
}

#[tonic::async_trait]
impl raftkv_proto::v3lockpb::lock_server::Lock for EtcdApi {
    async fn lock(
        &self,
        req: Request<raftkv_proto::v3lockpb::LockRequest>,
    ) -> Result<Response<raftkv_proto::v3lockpb::LockResponse>, Status> {
        Ok(Response::new(EtcdApi::lock(self, req.into_inner()).await?))
    }

    async fn unlock(
        &self,
        req: Request<raftkv_proto::v3lockpb::UnlockRequest>,
    ) -> Result<Response<raftkv_proto::v3lockpb::UnlockResponse>, Status> {
        Ok(Response::new(
            EtcdApi::unlock(self, req.into_inner()).await?,
        ))
    }
}

type ObserveStream = Pin<
    Box<
        dyn Stream<Item = Result<raftkv_proto::v3electionpb::LeaderResponse, Status>>
            + Send
            + 'static,
    >,
>;

#[tonic::async_trait]
impl raftkv_proto::v3electionpb::election_server::Election for EtcdApi {
    async fn campaign(
        &self,
        req: Request<raftkv_proto::v3electionpb::CampaignRequest>,
    ) -> Result<Response<raftkv_proto::v3electionpb::CampaignResponse>, Status> {
        Ok(Response::new(
            EtcdApi::campaign(self, req.into_inner()).await?,
        ))
    }

    async fn proclaim(
        &self,
        req: Request<raftkv_proto::v3electionpb::ProclaimRequest>,
    ) -> Result<Response<raftkv_proto::v3electionpb::ProclaimResponse>, Status> {
        Ok(Response::new(
            EtcdApi::proclaim(self, req.into_inner()).await?,
        ))
    }

    async fn leader(
        &self,
        req: Request<raftkv_proto::v3electionpb::LeaderRequest>,
    ) -> Result<Response<raftkv_proto::v3electionpb::LeaderResponse>, Status> {
        Ok(Response::new(
            EtcdApi::leader(self, req.into_inner()).await?,
        ))
    }

    type ObserveStream = ObserveStream;

    async fn observe(
        &self,
        req: Request<raftkv_proto::v3electionpb::LeaderRequest>,
    ) -> Result<Response<Self::ObserveStream>, Status> {
        let answers = EtcdApi::observe(self, req.into_inner());
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(answers),
        )))
    }

    async fn resign(
        &self,
        req: Request<raftkv_proto::v3electionpb::ResignRequest>,
    ) -> Result<Response<raftkv_proto::v3electionpb::ResignResponse>, Status> {
        Ok(Response::new(
            EtcdApi::resign(self, req.into_inner()).await?,
        ))
    }
}
