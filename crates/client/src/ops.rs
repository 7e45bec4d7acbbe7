//! The typed calls: KV, Cluster and Maintenance, each with the failover its kind allows.

use bytes::Bytes;
use raftkv_proto::etcdserverpb::{
    AlarmMember, AlarmRequest, AlarmResponse, CompactionRequest, CompactionResponse,
    DefragmentRequest, DefragmentResponse, DeleteRangeRequest, DeleteRangeResponse, HashKvRequest,
    HashKvResponse, MemberAddRequest, MemberAddResponse, MemberListRequest, MemberListResponse,
    MemberPromoteRequest, MemberPromoteResponse, MemberRemoveRequest, MemberRemoveResponse,
    MemberUpdateRequest, MemberUpdateResponse, MoveLeaderRequest, MoveLeaderResponse, PutRequest,
    PutResponse, RangeRequest, RangeResponse, SnapshotRequest, StatusRequest, StatusResponse,
    TxnResponse, alarm_request,
};
use raftkv_proto::mvccpb::KeyValue;

use crate::{Client, Connection, Error, Txn};

impl Client {
    /// Puts `value` at `key`.
    pub async fn put(
        &self,
        key: impl Into<Bytes>,
        value: impl Into<Bytes>,
    ) -> Result<PutResponse, Error> {
        self.put_request(PutRequest {
            key: key.into(),
            value: value.into(),
            ..Default::default()
        })
        .await
    }

    /// KV/Put with every option.
    pub async fn put_request(&self, req: PutRequest) -> Result<PutResponse, Error> {
        self.write(|c| {
            let req = req.clone();
            async move { c.kv().put(req).await.map(tonic::Response::into_inner) }
        })
        .await
    }

    /// The current value of `key` (a linearizable read), if it exists.
    pub async fn get(&self, key: impl Into<Bytes>) -> Result<Option<KeyValue>, Error> {
        let resp = self
            .range(RangeRequest {
                key: key.into(),
                ..Default::default()
            })
            .await?;
        Ok(resp.kvs.into_iter().next())
    }

    /// KV/Range with every option.
    pub async fn range(&self, req: RangeRequest) -> Result<RangeResponse, Error> {
        self.read(|c| {
            let req = req.clone();
            async move { c.kv().range(req).await.map(tonic::Response::into_inner) }
        })
        .await
    }

    /// Deletes `key`; returns how many keys were deleted (0 or 1).
    pub async fn delete(&self, key: impl Into<Bytes>) -> Result<i64, Error> {
        let resp = self
            .delete_range(DeleteRangeRequest {
                key: key.into(),
                ..Default::default()
            })
            .await?;
        Ok(resp.deleted)
    }

    /// KV/DeleteRange with every option.
    pub async fn delete_range(
        &self,
        req: DeleteRangeRequest,
    ) -> Result<DeleteRangeResponse, Error> {
        self.write(|c| {
            let req = req.clone();
            async move {
                c.kv()
                    .delete_range(req)
                    .await
                    .map(tonic::Response::into_inner)
            }
        })
        .await
    }

    /// KV/Txn (retried on another member only if it only reads).
    pub async fn txn(&self, txn: impl Into<Txn>) -> Result<TxnResponse, Error> {
        let txn = txn.into();
        let read_only = txn.is_read_only();
        let req = txn.into_request();
        let call = |c: Connection| {
            let req = req.clone();
            async move { c.kv().txn(req).await.map(tonic::Response::into_inner) }
        };
        if read_only {
            self.read(call).await
        } else {
            self.write(call).await
        }
    }

    /// KV/Compact: drops history below `revision`.
    pub async fn compact(
        &self,
        revision: i64,
        physical: bool,
    ) -> Result<CompactionResponse, Error> {
        self.write(|c| async move {
            c.kv()
                .compact(CompactionRequest { revision, physical })
                .await
                .map(tonic::Response::into_inner)
        })
        .await
    }

    /// Cluster/MemberList.
    pub async fn member_list(&self) -> Result<MemberListResponse, Error> {
        self.read(|c| async move {
            c.cluster()
                .member_list(MemberListRequest {})
                .await
                .map(tonic::Response::into_inner)
        })
        .await
    }

    /// Cluster/MemberAdd.
    pub async fn member_add(
        &self,
        peer_urls: Vec<String>,
        is_learner: bool,
    ) -> Result<MemberAddResponse, Error> {
        self.write(|c| {
            let req = MemberAddRequest {
                peer_ur_ls: peer_urls.clone(),
                is_learner,
            };
            async move {
                c.cluster()
                    .member_add(req)
                    .await
                    .map(tonic::Response::into_inner)
            }
        })
        .await
    }

    /// Cluster/MemberRemove.
    pub async fn member_remove(&self, id: u64) -> Result<MemberRemoveResponse, Error> {
        self.write(|c| async move {
            c.cluster()
                .member_remove(MemberRemoveRequest { id })
                .await
                .map(tonic::Response::into_inner)
        })
        .await
    }

    /// Cluster/MemberPromote.
    pub async fn member_promote(&self, id: u64) -> Result<MemberPromoteResponse, Error> {
        self.write(|c| async move {
            c.cluster()
                .member_promote(MemberPromoteRequest { id })
                .await
                .map(tonic::Response::into_inner)
        })
        .await
    }

    /// Cluster/MemberUpdate: member `id`'s new peer URLs.
    pub async fn member_update(
        &self,
        id: u64,
        peer_urls: Vec<String>,
    ) -> Result<MemberUpdateResponse, Error> {
        self.write(|c| {
            let peer_ur_ls = peer_urls.clone();
            async move {
                c.cluster()
                    .member_update(MemberUpdateRequest { id, peer_ur_ls })
                    .await
                    .map(tonic::Response::into_inner)
            }
        })
        .await
    }

    /// Maintenance/HashKV of one member at `revision` (0: its current revision).
    pub async fn hash_kv_of(&self, endpoint: &str, revision: i64) -> Result<HashKvResponse, Error> {
        self.on(endpoint, |c| async move {
            c.maintenance()
                .hash_kv(HashKvRequest { revision })
                .await
                .map(tonic::Response::into_inner)
        })
        .await
    }

    /// Maintenance/Status of one member.
    pub async fn status_of(&self, endpoint: &str) -> Result<StatusResponse, Error> {
        self.on(endpoint, |c| async move {
            c.maintenance()
                .status(StatusRequest {})
                .await
                .map(tonic::Response::into_inner)
        })
        .await
    }

    /// Maintenance/Defragment of one member (etcd's `Defragment(ctx, endpoint)`).
    pub async fn defragment_of(&self, endpoint: &str) -> Result<DefragmentResponse, Error> {
        self.on(endpoint, |c| async move {
            c.maintenance()
                .defragment(DefragmentRequest {})
                .await
                .map(tonic::Response::into_inner)
        })
        .await
    }

    /// Maintenance/Alarm: the alarms raised (NOSPACE, CORRUPT) and by which members.
    pub async fn alarms(&self) -> Result<Vec<AlarmMember>, Error> {
        let req = AlarmRequest::default();
        Ok(self.alarm(req).await?.alarms)
    }

    /// Maintenance/Alarm with any action (etcdctl's `alarm disarm` deactivates each alarm
    /// `alarms` lists).
    pub async fn alarm(&self, req: AlarmRequest) -> Result<AlarmResponse, Error> {
        let read = req.action() == alarm_request::AlarmAction::Get;
        let call = |c: Connection| async move {
            c.maintenance()
                .alarm(req)
                .await
                .map(tonic::Response::into_inner)
        };
        if read {
            self.read(call).await
        } else {
            self.write(call).await
        }
    }

    /// Maintenance/MoveLeader, sent to whichever endpoint leads; returns the former leader.
    pub async fn move_leader(&self, target: u64) -> Result<(u64, MoveLeaderResponse), Error> {
        for endpoint in self.endpoints() {
            let status = self.status_of(endpoint).await?;
            let member = status.header.map_or(0, |h| h.member_id);
            if member == 0 || member != status.leader {
                continue;
            }
            let moved = self
                .on(endpoint, |c| async move {
                    c.maintenance()
                        .move_leader(MoveLeaderRequest { target_id: target })
                        .await
                        .map(tonic::Response::into_inner)
                })
                .await?;
            return Ok((member, moved));
        }
        Err(Error::Unreachable {
            endpoint: format!("{:?}", self.endpoints()),
            reason: "no leader endpoint given".into(),
        })
    }

    /// Maintenance/Snapshot from the first member that answers: the snapshot's bytes, handed
    /// to `sink` chunk by chunk as they arrive (no overall timeout: snapshots are large).
    pub async fn snapshot(
        &self,
        mut sink: impl FnMut(&[u8]) -> std::io::Result<()>,
    ) -> Result<u64, Error> {
        let connection = self.connect().await?;
        self.renew_token(&connection).await?;
        let mut stream = connection
            .maintenance()
            .snapshot(SnapshotRequest {})
            .await?
            .into_inner();
        let mut total = 0u64;
        while let Some(msg) = stream.message().await? {
            sink(&msg.blob).map_err(|e| Error::Status(tonic::Status::internal(e.to_string())))?;
            total += msg.blob.len() as u64;
        }
        Ok(total)
    }
}
