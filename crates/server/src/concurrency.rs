//! etcd 3.4's server-side `Lock` (v3lock) and `Election` (v3election) services' logic.
//!
//! etcd runs clientv3's concurrency recipes inside the member, over an in-process client; this
//! runs the same recipes over the member's own [`EtcdApi`] — every step is an ordinary Txn,
//! Range, DeleteRange, LeaseGrant or Watch, so a lock or a leadership is nothing but a key
//! under `name/` attached to a lease, and ownership is decided by creation revision:
//!
//! - the key is `name/` + the lease id in Go's `%x` (lowercase hex, `-` for a negative id);
//! - it is created in one Txn only if absent, so the same lease asking again gets its own key
//!   (and its creation revision) back;
//! - the owner is the key of the prefix with the lowest creation revision; the others wait for
//!   the deletion of the newest key created before theirs, then look again (no herd: each
//!   waiter watches one predecessor);
//! - a lease of 0 gets a new 60 s lease that nobody keeps alive (etcd's session is orphaned at
//!   once), so such a lock or leadership lapses after 60 s, as in etcd.
//!
//! Errors reach clients as gRPC code Unknown with etcd's text, as they do from etcd (its
//! handlers return plain errors). A request that is cancelled while it waits removes its key,
//! as clientv3 does when its context ends.

use bytes::Bytes;
use raftkv_proto::etcdserverpb::{
    Compare, DeleteRangeRequest, LeaseGrantRequest, PutRequest, RangeRequest, RangeResponse,
    RequestOp, ResponseHeader, TxnRequest, TxnResponse, WatchCreateRequest, WatchRequest,
    WatchResponse, compare, range_request, request_op, response_op, watch_request,
};
use raftkv_proto::mvccpb::{KeyValue, event::EventType};
use raftkv_proto::v3electionpb::{
    CampaignRequest, CampaignResponse, LeaderKey, LeaderRequest, LeaderResponse, ProclaimRequest,
    ProclaimResponse, ResignRequest, ResignResponse,
};
use raftkv_proto::v3lockpb::{LockRequest, LockResponse, UnlockRequest, UnlockResponse};
use raftkv_raft::NodeError;
use tokio::sync::mpsc;
use tonic::{Code, Status};

use crate::api::EtcdApi;

/// clientv3's `defaultSessionTTL`: the TTL of the lease a lock or campaign without one gets.
pub const SESSION_TTL: i64 = 60;

/// etcd's `ErrMissingLeaderKey`.
pub const MISSING_LEADER_KEY: &str = "\"leader\" field must be provided";
/// clientv3 concurrency's `ErrElectionNotLeader`.
pub const NOT_LEADER: &str = "election: not leader";
/// clientv3 concurrency's `ErrElectionNoLeader`.
pub const NO_LEADER: &str = "election: no leader";
/// clientv3's `waitDelete` when its watch ends without the delete.
const LOST_WATCHER: &str = "lost watcher waiting for delete";
/// clientv3's `ErrCompacted` as an in-process watch reports it.
const COMPACTED: &str = "etcdserver: mvcc: required revision has been compacted";

/// The key a lease holds under `prefix`: Go's `fmt.Sprintf("%s%x", prefix, lease)`.
pub fn lease_key(prefix: &[u8], lease: i64) -> Bytes {
    let hex = if lease < 0 {
        format!("-{:x}", lease.unsigned_abs())
    } else {
        format!("{lease:x}")
    };
    let mut key = Vec::with_capacity(prefix.len() + hex.len());
    key.extend_from_slice(prefix);
    key.extend_from_slice(hex.as_bytes());
    key.into()
}

/// `name` + `/`: the prefix of a lock's or an election's keys.
fn prefix_of(name: &[u8]) -> Bytes {
    let mut prefix = Vec::with_capacity(name.len() + 1);
    prefix.extend_from_slice(name);
    prefix.push(b'/');
    prefix.into()
}

/// clientv3's range end for a prefix.
fn prefix_end(key: &[u8]) -> Bytes {
    let mut end = key.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end.into();
        }
    }
    Bytes::from_static(&[0])
}

/// An error as etcd's lock and election handlers return it: code Unknown, the message kept.
fn unknown(e: NodeError) -> Status {
    let status = Status::from(e);
    Status::new(Code::Unknown, status.message().to_owned())
}

fn create_revision_is(key: &Bytes, revision: i64) -> Compare {
    Compare {
        result: compare::CompareResult::Equal as i32,
        target: compare::CompareTarget::Create as i32,
        key: key.clone(),
        range_end: Bytes::new(),
        target_union: Some(compare::TargetUnion::CreateRevision(revision)),
    }
}

fn put_op(key: &Bytes, value: Bytes, lease: i64) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestPut(PutRequest {
            key: key.clone(),
            value,
            lease,
            ..Default::default()
        })),
    }
}

fn get_op(range: RangeRequest) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestRange(range)),
    }
}

fn get_key(key: &Bytes) -> RangeRequest {
    RangeRequest {
        key: key.clone(),
        ..Default::default()
    }
}

fn delete_op(key: &Bytes) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestDeleteRange(
            DeleteRangeRequest {
                key: key.clone(),
                ..Default::default()
            },
        )),
    }
}

/// clientv3's `WithFirstCreate` / `WithLastCreate` over `prefix`: the key with the lowest
/// (highest) creation revision, below `max_create_revision` when it is not 0.
fn by_creation(prefix: &Bytes, order: range_request::SortOrder, max_create: i64) -> RangeRequest {
    RangeRequest {
        key: prefix.clone(),
        range_end: prefix_end(prefix),
        limit: 1,
        sort_order: order as i32,
        sort_target: range_request::SortTarget::Create as i32,
        max_create_revision: max_create,
        ..Default::default()
    }
}

/// The kvs of the `index`th answer of a txn, if it is a range.
fn range_kvs(resp: &TxnResponse, index: usize) -> &[KeyValue] {
    match resp.responses.get(index).and_then(|r| r.response.as_ref()) {
        Some(response_op::Response::ResponseRange(RangeResponse { kvs, .. })) => kvs,
        _ => &[],
    }
}

fn missing_kv() -> Status {
    Status::new(
        Code::Unknown,
        "raftkv: the key the txn compared was not in its answer",
    )
}

/// What to undo if a wait is abandoned: clientv3 deletes a waiting lock's key, and resigns a
/// campaign, when the caller's context ends. Dropped while armed (the client went away, or a
/// deadline passed), it does so on a new task.
struct Cleanup {
    api: EtcdApi,
    key: Bytes,
    /// `Some(rev)`: resign (delete only if the key's creation revision is still `rev`).
    resign_at: Option<i64>,
    armed: bool,
}

impl Cleanup {
    fn new(api: &EtcdApi, key: &Bytes, resign_at: Option<i64>) -> Self {
        Self {
            api: api.clone(),
            key: key.clone(),
            resign_at,
            armed: true,
        }
    }

    fn disarm(mut self) {
        self.armed = false;
    }

    async fn undo(api: EtcdApi, key: Bytes, resign_at: Option<i64>) {
        let result = match resign_at {
            Some(rev) => api.resign_at(&key, rev).await.map(drop),
            None => api.delete_key(&key).await.map(drop),
        };
        if let Err(e) = result {
            tracing::debug!(key = ?key, error = %e, "could not remove an abandoned lock or campaign key");
        }
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            // As whoever took the lock or campaigned (dropped inside the request's scope).
            handle.spawn(crate::caller::scope(
                crate::caller::current(),
                Self::undo(self.api.clone(), self.key.clone(), self.resign_at),
            ));
        }
    }
}

/// A watch served by this member to itself.
struct LocalWatch {
    _requests: mpsc::Sender<Result<WatchRequest, Status>>,
    answers: mpsc::Receiver<Result<WatchResponse, Status>>,
}

impl LocalWatch {
    /// Watches `key` (to `range_end`, if not empty) from `revision` on.
    async fn open(
        api: &EtcdApi,
        key: Bytes,
        range_end: Bytes,
        revision: i64,
    ) -> Result<Self, Status> {
        let (requests, rx) = mpsc::channel(1);
        let create = WatchRequest {
            request_union: Some(watch_request::RequestUnion::CreateRequest(
                WatchCreateRequest {
                    key,
                    range_end,
                    start_revision: revision,
                    ..Default::default()
                },
            )),
        };
        requests
            .send(Ok(create))
            .await
            .map_err(|_| Status::new(Code::Unknown, LOST_WATCHER))?;
        let answers = api.watch(tokio_stream::wrappers::ReceiverStream::new(rx), false);
        Ok(Self {
            _requests: requests,
            answers,
        })
    }

    /// The next answer with events (or `None` when the watch has ended without an error).
    async fn next(&mut self) -> Result<Option<WatchResponse>, Status> {
        loop {
            let Some(answer) = self.answers.recv().await else {
                return Ok(None);
            };
            let answer = answer.map_err(|s| Status::new(Code::Unknown, s.message().to_owned()))?;
            if answer.canceled {
                if answer.compact_revision != 0 {
                    return Err(Status::new(Code::Unknown, COMPACTED));
                }
                return Err(Status::new(Code::Unknown, answer.cancel_reason));
            }
            if !answer.events.is_empty() {
                return Ok(Some(answer));
            }
        }
    }
}

impl EtcdApi {
    /// clientv3's `NewSession(WithLease(lease))` as etcd's handlers use it: the lease given,
    /// or a new 60 s one for 0 (not checked to exist: a put under it will be).
    async fn session_lease(&self, lease: i64) -> Result<i64, Status> {
        if lease != 0 {
            return Ok(lease);
        }
        let granted = self
            .lease_grant(LeaseGrantRequest {
                ttl: SESSION_TTL,
                id: 0,
            })
            .await
            .map_err(unknown)?;
        Ok(granted.id)
    }

    async fn txn_unknown(&self, req: TxnRequest) -> Result<TxnResponse, Status> {
        self.txn(req).await.map_err(unknown)
    }

    async fn delete_key(&self, key: &Bytes) -> Result<Option<ResponseHeader>, Status> {
        let resp = self
            .delete_range(DeleteRangeRequest {
                key: key.clone(),
                ..Default::default()
            })
            .await
            .map_err(unknown)?;
        Ok(resp.header)
    }

    /// Waits until the `revision` watch of `key` sees it deleted (clientv3's `waitDelete`).
    async fn wait_delete(&self, key: &Bytes, revision: i64) -> Result<(), Status> {
        let mut watch = LocalWatch::open(self, key.clone(), Bytes::new(), revision).await?;
        while let Some(answer) = watch.next().await? {
            if answer
                .events
                .iter()
                .any(|e| e.r#type == EventType::Delete as i32)
            {
                return Ok(());
            }
        }
        Err(Status::new(Code::Unknown, LOST_WATCHER))
    }

    /// Waits until no key under `prefix` created at or below `max_create` is left, one
    /// predecessor at a time (clientv3's `waitDeletes`); the header of the last look.
    async fn wait_deletes(
        &self,
        prefix: &Bytes,
        max_create: i64,
    ) -> Result<Option<ResponseHeader>, Status> {
        loop {
            let newest = self
                .range(by_creation(
                    prefix,
                    range_request::SortOrder::Descend,
                    max_create,
                ))
                .await
                .map_err(unknown)?;
            let Some(kv) = newest.kvs.first() else {
                return Ok(newest.header);
            };
            let revision = newest.header.as_ref().map_or(0, |h| h.revision);
            self.wait_delete(&kv.key, revision).await?;
        }
    }

    /// Lock/Lock: waits until the caller's key is the oldest under `name/`.
    pub async fn lock(&self, req: LockRequest) -> Result<LockResponse, Status> {
        let lease = self.session_lease(req.lease).await?;
        let prefix = prefix_of(&req.name);
        let key = lease_key(&prefix, lease);
        let owner = || get_op(by_creation(&prefix, range_request::SortOrder::Ascend, 0));
        let resp = self
            .txn_unknown(TxnRequest {
                compare: vec![create_revision_is(&key, 0)],
                success: vec![put_op(&key, Bytes::new(), lease), owner()],
                failure: vec![get_op(get_key(&key)), owner()],
            })
            .await?;
        let my_rev = if resp.succeeded {
            resp.header.as_ref().map_or(0, |h| h.revision)
        } else {
            range_kvs(&resp, 0)
                .first()
                .ok_or_else(missing_kv)?
                .create_revision
        };
        match range_kvs(&resp, 1).first() {
            None => {
                return Ok(LockResponse {
                    header: resp.header,
                    key,
                });
            }
            Some(first) if first.create_revision == my_rev => {
                return Ok(LockResponse {
                    header: resp.header,
                    key,
                });
            }
            Some(_) => {}
        }
        let cleanup = Cleanup::new(self, &key, None);
        match self.wait_deletes(&prefix, my_rev - 1).await {
            Ok(header) => {
                cleanup.disarm();
                Ok(LockResponse { header, key })
            }
            Err(e) => {
                cleanup.disarm();
                // clientv3 unlocks before it returns the error.
                let _ = self.delete_key(&key).await;
                Err(e)
            }
        }
    }

    /// Lock/Unlock: deletes the key (a missing key is not an error).
    pub async fn unlock(&self, req: UnlockRequest) -> Result<UnlockResponse, Status> {
        Ok(UnlockResponse {
            header: self.delete_key(&req.key).await?,
        })
    }

    /// Puts `value` on the leader key if it is still the one created at `rev`.
    async fn proclaim_at(
        &self,
        key: &Bytes,
        rev: i64,
        lease: i64,
        value: Bytes,
    ) -> Result<Option<ResponseHeader>, Status> {
        let resp = self
            .txn_unknown(TxnRequest {
                compare: vec![create_revision_is(key, rev)],
                success: vec![put_op(key, value, lease)],
                failure: vec![],
            })
            .await?;
        if !resp.succeeded {
            return Err(Status::new(Code::Unknown, NOT_LEADER));
        }
        Ok(resp.header)
    }

    /// Deletes the leader key if it is still the one created at `rev`.
    async fn resign_at(&self, key: &Bytes, rev: i64) -> Result<Option<ResponseHeader>, Status> {
        let resp = self
            .txn_unknown(TxnRequest {
                compare: vec![create_revision_is(key, rev)],
                success: vec![delete_op(key)],
                failure: vec![],
            })
            .await?;
        Ok(resp.header)
    }

    /// Election/Campaign: waits until the caller's key is the oldest under `name/`.
    pub async fn campaign(&self, req: CampaignRequest) -> Result<CampaignResponse, Status> {
        let lease = self.session_lease(req.lease).await?;
        let prefix = prefix_of(&req.name);
        let key = lease_key(&prefix, lease);
        let resp = self
            .txn_unknown(TxnRequest {
                compare: vec![create_revision_is(&key, 0)],
                success: vec![put_op(&key, req.value.clone(), lease)],
                failure: vec![get_op(get_key(&key))],
            })
            .await?;
        let mut leader_rev = resp.header.as_ref().map_or(0, |h| h.revision);
        if !resp.succeeded {
            let kv = range_kvs(&resp, 0).first().ok_or_else(missing_kv)?;
            leader_rev = kv.create_revision;
            if kv.value != req.value
                && let Err(e) = self
                    .proclaim_at(&key, leader_rev, lease, req.value.clone())
                    .await
            {
                let _ = self.resign_at(&key, leader_rev).await;
                return Err(e);
            }
        }
        let cleanup = Cleanup::new(self, &key, Some(leader_rev));
        let waited = self.wait_deletes(&prefix, leader_rev - 1).await;
        // Only an abandoned campaign resigns; one whose wait failed keeps its key, as in
        // clientv3.
        cleanup.disarm();
        waited?;
        Ok(CampaignResponse {
            header: resp.header,
            leader: Some(LeaderKey {
                name: req.name,
                key,
                rev: leader_rev,
                lease,
            }),
        })
    }

    /// Election/Proclaim: a new value from the leader, refused with "election: not leader"
    /// once its key is gone or re-created.
    pub async fn proclaim(&self, req: ProclaimRequest) -> Result<ProclaimResponse, Status> {
        let leader = req
            .leader
            .ok_or_else(|| Status::new(Code::Unknown, MISSING_LEADER_KEY))?;
        let lease = self.session_lease(leader.lease).await?;
        Ok(ProclaimResponse {
            header: self
                .proclaim_at(&leader.key, leader.rev, lease, req.value)
                .await?,
        })
    }

    /// Election/Resign: deletes the leader key if it is still the caller's (no error if not).
    pub async fn resign(&self, req: ResignRequest) -> Result<ResignResponse, Status> {
        let leader = req
            .leader
            .ok_or_else(|| Status::new(Code::Unknown, MISSING_LEADER_KEY))?;
        // etcd's handler opens a session on the leader's lease first: for 0, that grants one.
        self.session_lease(leader.lease).await?;
        Ok(ResignResponse {
            header: self.resign_at(&leader.key, leader.rev).await?,
        })
    }

    /// Election/Leader: the oldest key under `name/`.
    pub async fn leader(&self, req: LeaderRequest) -> Result<LeaderResponse, Status> {
        let prefix = prefix_of(&req.name);
        let resp = self
            .range(by_creation(&prefix, range_request::SortOrder::Ascend, 0))
            .await
            .map_err(unknown)?;
        let Some(kv) = resp.kvs.into_iter().next() else {
            return Err(Status::new(Code::Unknown, NO_LEADER));
        };
        Ok(LeaderResponse {
            header: resp.header,
            kv: Some(kv),
        })
    }

    /// Election/Observe: every value of every leader in order, as clientv3's `Observe`
    /// yields them. The stream ends (without an error) when a read or watch fails, and
    /// stops working as soon as the receiver is dropped.
    pub fn observe(&self, req: LeaderRequest) -> mpsc::Receiver<Result<LeaderResponse, Status>> {
        let (tx, rx) = mpsc::channel(16);
        let api = self.clone();
        crate::caller::spawn(async move {
            let prefix = prefix_of(&req.name);
            tokio::select! {
                () = api.observe_into(&prefix, &tx) => {}
                () = tx.closed() => {}
            }
        });
        rx
    }

    async fn observe_into(
        &self,
        prefix: &Bytes,
        tx: &mpsc::Sender<Result<LeaderResponse, Status>>,
    ) {
        loop {
            let Ok(first) = self
                .range(by_creation(prefix, range_request::SortOrder::Ascend, 0))
                .await
            else {
                return;
            };
            let (mut header, kv) = match first.kvs.into_iter().next() {
                Some(kv) => (first.header, kv),
                None => {
                    // No leader yet: the first put under the prefix.
                    let from = first.header.as_ref().map_or(0, |h| h.revision);
                    let Ok(mut watch) =
                        LocalWatch::open(self, prefix.clone(), prefix_end(prefix), from).await
                    else {
                        return;
                    };
                    loop {
                        let Ok(Some(answer)) = watch.next().await else {
                            return;
                        };
                        let put = answer
                            .events
                            .into_iter()
                            .find(|e| e.r#type == EventType::Put as i32)
                            .and_then(|e| e.kv);
                        if let Some(kv) = put {
                            let mut header = answer.header;
                            if let Some(h) = header.as_mut() {
                                h.revision = kv.mod_revision;
                            }
                            break (header, kv);
                        }
                    }
                }
            };
            let from = header.as_ref().map_or(0, |h| h.revision) + 1;
            let key = kv.key.clone();
            if tx
                .send(Ok(LeaderResponse {
                    header: header.take(),
                    kv: Some(kv),
                }))
                .await
                .is_err()
            {
                return;
            }
            // That leader's later values, until its key is deleted.
            let Ok(mut watch) = LocalWatch::open(self, key, Bytes::new(), from).await else {
                return;
            };
            'leader: loop {
                let Ok(Some(answer)) = watch.next().await else {
                    return;
                };
                for event in answer.events {
                    if event.r#type == EventType::Delete as i32 {
                        break 'leader;
                    }
                    let item = LeaderResponse {
                        header: answer.header,
                        kv: event.kv,
                    };
                    if tx.send(Ok(item)).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_keys_are_go_hex() {
        assert_eq!(
            &lease_key(b"l/", 0x457e_a22f_cc0e_1406)[..],
            b"l/457ea22fcc0e1406"
        );
        assert_eq!(&lease_key(b"l/", 5)[..], b"l/5");
        assert_eq!(&lease_key(b"l/", -5)[..], b"l/-5");
        assert_eq!(&lease_key(b"", i64::MIN)[..], b"-8000000000000000");
        assert_eq!(&lease_key(b"x/", 0)[..], b"x/0");
    }

    #[test]
    fn prefixes_end_like_clientv3() {
        assert_eq!(&prefix_of(b"lk")[..], b"lk/");
        assert_eq!(&prefix_end(b"lk/")[..], b"lk0");
        assert_eq!(&prefix_end(b"a\xff")[..], b"b");
        assert_eq!(&prefix_end(b"\xff\xff")[..], b"\0");
    }
}
