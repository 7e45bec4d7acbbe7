//! etcd's corruption checks (`etcdserver/corrupt.go`), over the peer service's `HashKV`
//! (etcd's peer `/members/hashkv`):
//!
//! - `--experimental-initial-corrupt-check`: a restarting member hashes its store (HashKV at
//!   its revision) and asks every other member for the hash at that revision before it
//!   starts Raft. A hash that differs where the compacted revision is the same is a
//!   mismatch, and the member refuses to start ("<id> found data inconsistency with peers");
//!   a peer that is behind, compacted past it, or unreachable is only logged.
//! - `--experimental-corrupt-check-time`: every interval the leader hashes its store, asks
//!   its followers at that revision, waits for a linearizable read, and hashes again. Its
//!   own two hashes differing at one revision, a follower ahead of it (revision or compacted
//!   revision), or a follower at the same compacted revision with another hash raises the
//!   CORRUPT alarm (member id 0, as etcd 3.4.23 raises it: which member is damaged is not
//!   known), and writes are refused until `alarm disarm` (`raftkv_storage` applies that).
//!
//! HashKV is a function of the applied history (see `raftkv_storage::mvcc` `hash`), so
//! members that applied the same log agree at every revision whatever their restarts.

use std::time::Duration;

use raftkv_proto::etcdserverpb::alarm_request::AlarmAction;
use raftkv_proto::etcdserverpb::{AlarmRequest, AlarmType, HashKvRequest, HashKvResponse};
use raftkv_proto::raftkvpb::{Command, command};
use raftkv_storage::MvccStore;
use raftkv_storage::mvcc::KvHash;
use std::sync::{Arc, Weak};
use tracing::{info, warn};

use super::RaftNode;
use super::routing::with_deadline;
use crate::error::NodeError;
use crate::network::Channels;
use crate::types::{Member, StoredMembership, decode};

/// Why a peer gave no hash.
enum NoHash {
    /// The revision asked is above the peer's (etcd's `ErrFutureRev`): the peer is behind.
    Future,
    /// The peer compacted past the revision asked (etcd's `ErrCompacted`): this member is.
    Compacted,
    /// No URL of the peer answered.
    Failed(String),
}

impl std::fmt::Display for NoHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Future => f.write_str("mvcc: required revision is a future revision"),
            Self::Compacted => f.write_str("mvcc: required revision has been compacted"),
            Self::Failed(why) => f.write_str(why),
        }
    }
}

/// One other member's answer.
struct PeerHash {
    id: u64,
    urls: Vec<String>,
    answer: Result<HashKvResponse, NoHash>,
}

/// etcd's member id form (`types.ID`: hex without padding).
fn id_text(id: u64) -> String {
    format!("{id:x}")
}

/// HashKV of `store` at `revision` (0: its current one), on a blocking thread that keeps
/// `held` (a turn to hash, say) until the hash is done, even if the caller gives up.
pub(crate) async fn hash_off_runtime<H: Send + 'static>(
    store: &Arc<MvccStore>,
    revision: i64,
    held: H,
) -> Result<KvHash, NodeError> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || {
        let _held = held;
        store.hash_kv(revision)
    })
    .await
    .map_err(|e| NodeError::internal(format!("hashing the store: {e}")))?
    .map_err(NodeError::from)
}

/// Asks every member in `members` but `me` for its HashKV at `revision`, trying its peer
/// URLs in turn until one answers, each call within `timeout` (etcd's `getPeerHashKVs`).
async fn peer_hashes(
    channels: &Channels,
    me: u64,
    members: &[(u64, Member)],
    revision: i64,
    timeout: Duration,
) -> Vec<PeerHash> {
    let mut answers = Vec::new();
    for (id, member) in members {
        if *id == me || member.peer_urls.is_empty() {
            continue;
        }
        let mut last = NoHash::Failed("no peer URL".to_string());
        let mut answer = None;
        for url in &member.peer_urls {
            let one = Member {
                name: member.name.clone(),
                peer_urls: vec![url.clone()],
                client_urls: vec![],
            };
            let result = match channels.peer(&one) {
                Err(e) => Err(NoHash::Failed(e.to_string())),
                Ok(mut client) => {
                    let call = client.hash_kv(with_deadline(HashKvRequest { revision }, timeout));
                    match tokio::time::timeout(timeout, call).await {
                        Err(_) => Err(NoHash::Failed("timed out".to_string())),
                        Ok(Ok(resp)) => Ok(resp.into_inner()),
                        Ok(Err(status)) => Err(no_hash(&status)),
                    }
                }
            };
            match result {
                Ok(resp) => {
                    answer = Some(resp);
                    break;
                }
                Err(e) => {
                    warn!(
                        local_member_id = %id_text(me),
                        requested_revision = revision,
                        remote_peer_endpoint = %url,
                        error = %e,
                        "failed hash kv request"
                    );
                    last = e;
                }
            }
        }
        answers.push(PeerHash {
            id: *id,
            urls: member.peer_urls.clone(),
            answer: answer.ok_or(last),
        });
    }
    answers
}

/// A peer's refusal by etcd's message (as etcd's `getPeerHashKVHTTP` tells them apart).
fn no_hash(status: &tonic::Status) -> NoHash {
    let message = status.message();
    if message.contains("required revision has been compacted") {
        NoHash::Compacted
    } else if message.contains("required revision is a future revision") {
        NoHash::Future
    } else {
        NoHash::Failed(message.to_string())
    }
}

/// The members of the last membership `store` applied (none before the first).
fn applied_members(store: &MvccStore) -> Result<Vec<(u64, Member)>, NodeError> {
    let state = store
        .applied_state()
        .map_err(NodeError::storage("reading the applied membership"))?;
    let Some(bytes) = state.membership else {
        return Ok(Vec::new());
    };
    let stored: StoredMembership = decode(&bytes)
        .map_err(|e| NodeError::internal(format!("decoding the applied membership: {e}")))?;
    Ok(stored
        .membership()
        .nodes()
        .map(|(id, m)| (*id, m.clone()))
        .collect())
}

/// `--experimental-initial-corrupt-check`, before a restarting member starts Raft: its
/// HashKV against every peer's at its revision. Err: a peer at the same compacted revision
/// has another hash (etcd's "found data inconsistency with peers").
pub(super) async fn initial_check(
    store: &Arc<MvccStore>,
    channels: &Channels,
    me: u64,
    timeout: Duration,
) -> Result<(), NodeError> {
    info!(local_member_id = %id_text(me), ?timeout, "starting initial corruption check");
    let local = hash_off_runtime(store, 0, ())
        .await
        .map_err(|e| NodeError::Config(format!("{} failed to fetch hash ({e})", id_text(me))))?;
    let members = applied_members(store)?;
    let local_compacted = crate::etcd_compact_revision(local.compact_revision);
    let mut mismatch = 0;
    for peer in peer_hashes(channels, me, &members, local.revision, timeout).await {
        match peer.answer {
            Ok(resp) => {
                let peer_revision = resp.header.as_ref().map_or(0, |h| h.revision);
                if resp.hash == local.hash {
                    continue;
                }
                if resp.compact_revision == local_compacted {
                    warn!(
                        local_member_id = %id_text(me),
                        local_member_revision = local.revision,
                        local_member_compact_revision = local_compacted,
                        local_member_hash = local.hash,
                        remote_peer_id = %id_text(peer.id),
                        remote_peer_endpoints = ?peer.urls,
                        remote_peer_revision = peer_revision,
                        remote_peer_compact_revision = resp.compact_revision,
                        remote_peer_hash = resp.hash,
                        "found different hash values from remote peer"
                    );
                    mismatch += 1;
                } else {
                    warn!(
                        local_member_id = %id_text(me),
                        local_member_compact_revision = local_compacted,
                        remote_peer_id = %id_text(peer.id),
                        remote_peer_compact_revision = resp.compact_revision,
                        "found different compact revision values from remote peer"
                    );
                }
            }
            Err(behind @ (NoHash::Future | NoHash::Compacted)) => {
                let what = if matches!(behind, NoHash::Future) {
                    "cannot fetch hash from slow remote peer"
                } else {
                    "cannot fetch hash from remote peer; local member is behind"
                };
                warn!(
                    local_member_id = %id_text(me),
                    local_member_revision = local.revision,
                    remote_peer_id = %id_text(peer.id),
                    remote_peer_endpoints = ?peer.urls,
                    "{what}"
                );
            }
            // Logged per URL already, as etcd does.
            Err(NoHash::Failed(_)) => {}
        }
    }
    if mismatch > 0 {
        return Err(NodeError::Config(format!(
            "{} found data inconsistency with peers",
            id_text(me)
        )));
    }
    info!(local_member_id = %id_text(me), "initial corruption checking passed; no corruption");
    Ok(())
}

/// `--experimental-corrupt-check-time`: every `every`, if this member leads, one
/// [`RaftNode::check_hash_kv`].
pub(super) async fn monitor(node: Weak<RaftNode>, every: Duration) {
    if let Some(node) = node.upgrade() {
        info!(local_member_id = %id_text(node.id), interval = ?every, "enabled corruption checking");
    }
    loop {
        tokio::time::sleep(every).await;
        let Some(node) = node.upgrade() else { return };
        if *node.stop_peer.borrow() {
            return;
        }
        if !node.is_leader().await {
            continue;
        }
        if let Err(e) = node.check_hash_kv().await {
            warn!(error = %e, "failed to check hash KV");
        }
    }
}

impl RaftNode {
    /// The leader's pass of etcd's `checkHashKV`: raises the CORRUPT alarm through the log
    /// on any mismatch it finds (see the module doc).
    async fn check_hash_kv(&self) -> Result<(), NodeError> {
        let timeout = self.config.request_timeout;
        let first = hash_off_runtime(&self.store, 0, ()).await?;
        let members: Vec<(u64, Member)> = self
            .membership_config()
            .membership()
            .nodes()
            .map(|(id, m)| (*id, m.clone()))
            .collect();
        let peers = peer_hashes(&self.channels, self.id, &members, first.revision, timeout).await;
        self.read_barrier().await?;
        let second = hash_off_runtime(&self.store, 0, ()).await?;
        let first_compacted = crate::etcd_compact_revision(first.compact_revision);
        let second_compacted = crate::etcd_compact_revision(second.compact_revision);
        let mut corrupt = false;
        if second.hash != first.hash
            && second.revision == first.revision
            && second.compact_revision == first.compact_revision
        {
            warn!(
                revision_1 = first.revision,
                compact_revision_1 = first_compacted,
                hash_1 = first.hash,
                revision_2 = second.revision,
                compact_revision_2 = second_compacted,
                hash_2 = second.hash,
                "found hash mismatch"
            );
            corrupt = true;
        }
        let mut checked = 0;
        for peer in &peers {
            let Ok(resp) = &peer.answer else { continue };
            checked += 1;
            let follower = id_text(peer.id);
            let revision = resp.header.as_ref().map_or(0, |h| h.revision);
            if revision > second.revision {
                warn!(
                    leader_revision = second.revision,
                    follower_revision = revision,
                    follower_peer_id = %follower,
                    "revision from follower must be less than or equal to leader's"
                );
                corrupt = true;
            }
            if resp.compact_revision > second_compacted {
                warn!(
                    leader_compact_revision = second_compacted,
                    follower_compact_revision = resp.compact_revision,
                    follower_peer_id = %follower,
                    "compact revision from follower must be less than or equal to leader's"
                );
                corrupt = true;
            }
            if resp.compact_revision == first_compacted && resp.hash != first.hash {
                warn!(
                    leader_compact_revision = second_compacted,
                    leader_hash = first.hash,
                    follower_compact_revision = resp.compact_revision,
                    follower_hash = resp.hash,
                    follower_peer_id = %follower,
                    "same compact revision then hashes must match"
                );
                corrupt = true;
            }
        }
        info!(
            number_of_peers_checked = checked,
            "finished peer corruption check"
        );
        if corrupt && !self.store.has_alarm(AlarmType::Corrupt as i32) {
            warn!("raising the CORRUPT alarm");
            self.write(Command {
                op: Some(command::Op::Alarm(AlarmRequest {
                    action: AlarmAction::Activate as i32,
                    member_id: 0,
                    alarm: AlarmType::Corrupt as i32,
                })),
                ..Default::default()
            })
            .await?;
        }
        Ok(())
    }
}
