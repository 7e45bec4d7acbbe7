//! Leases: grants and revokes through the log, and the leader's lessor, which times every
//! lease and revokes those that run out.
//!
//! What every member knows of a lease is in the store (granted TTL, last checkpointed
//! remaining TTL, attached keys). *When* a lease runs out only the leader decides, as in
//! etcd: it keeps an expiry instant per lease in memory, moves it on each keep-alive, and
//! proposes a revoke for each lease whose instant has passed. The revoke goes through the
//! log like any write, so every member deletes the same keys at the same revision.
//!
//! - **Promotion.** A member that becomes leader gives every lease its remaining TTL (the
//!   granted TTL, or the last checkpoint's) plus one election timeout from the moment it
//!   takes over, as etcd's `Promote` does: no lease expires because an election happened.
//!   It acts as the lessor only once it has applied an entry of its own term, so it knows
//!   every lease granted before it led.
//! - **Checkpoints** (`--experimental-enable-lease-checkpoint`). Every interval (etcd: 5
//!   minutes) the lessor records, through the log, the remaining TTL of each lease that has
//!   more than an interval left, so a new leader goes on from there: a long lease cannot be
//!   kept alive forever by leader changes alone. A renewal clears a recorded remainder
//!   (one more entry), as etcd's does. raftkv always stores checkpoints (etcd's
//!   `--experimental-enable-lease-checkpoint-persist`, the default from etcd 3.6 on), so a
//!   restart keeps them too.
//! - **Demotion.** A member that stops leading drops its instants. A deposed leader that
//!   has not noticed yet may still propose a revoke, but it cannot commit one without a
//!   quorum, which has a newer leader.

use std::collections::HashMap;
use std::time::Duration;

use openraft::rt::WatchReceiver;
use raftkv_proto::etcdserverpb::{
    LeaseCheckpoint, LeaseCheckpointRequest, LeaseRevokeRequest, LeaseTimeToLiveResponse,
};
use raftkv_proto::raftkvpb::{Command, command};
use raftkv_storage::MvccError;
use tokio::time::Instant;

use super::RaftNode;
use crate::error::NodeError;

/// How often the lessor looks for expired leases (etcd's `RevokeExpiredLeases` tick).
pub(super) const EXPIRY_TICK: Duration = Duration::from_millis(500);
/// Revokes proposed per tick at most (etcd: 1,000 a second).
const REVOKES_PER_TICK: usize = 500;
/// A revoke proposed this long ago without taking effect is proposed again.
const REVOKE_RETRY: Duration = Duration::from_secs(3);

/// The leader's timing of leases.
#[derive(Default)]
pub(crate) struct Lessor {
    /// The term this member leads and acts as lessor in (`None`: not the lessor).
    term: Option<u64>,
    /// When each lease runs out.
    expiry: HashMap<i64, Instant>,
    /// Leases whose revoke was proposed, and when.
    revoking: HashMap<i64, Instant>,
    /// When each lease's next checkpoint is due (only with checkpoints on).
    checkpoints: HashMap<i64, Instant>,
    /// Where server-chosen lease ids continue (etcd's `idutil.Generator`).
    next_id: u64,
}

impl RaftNode {
    fn lessor(&self) -> std::sync::MutexGuard<'_, Lessor> {
        self.lessor.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// etcd's smallest lease TTL in seconds: one and a half election timeouts, rounded up.
    pub fn min_lease_ttl(&self) -> i64 {
        let ticks = (self.config.election_timeout.as_millis()
            / self.config.heartbeat_interval.as_millis().max(1)) as u64;
        let min = self.config.heartbeat_interval * (3 * ticks / 2) as u32;
        min.as_secs() as i64 + i64::from(min.subsec_nanos() > 0)
    }

    /// Lease `id` as applied, its TTL raised to today's minimum (a member restarted with a
    /// longer election timeout raises old leases, as etcd's lessor does when it recovers them).
    fn stored_lease(&self, id: i64) -> Option<raftkv_storage::mvcc::lease::LeaseInfo> {
        let mut info = self.store.lease(id)?;
        info.ttl = info.ttl.max(self.min_lease_ttl());
        Some(info)
    }

    /// A new lease id (etcd's scheme: the member id's low 16 bits, then the time in
    /// milliseconds shifted up by 8, counting up from there; never 0, never negative).
    pub fn next_lease_id(&self) -> i64 {
        let mut lessor = self.lessor();
        if lessor.next_id == 0 {
            let ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            lessor.next_id = ((self.id & 0xffff) << 48) | ((ms << 8) & ((1 << 48) - 1));
        }
        lessor.next_id = lessor.next_id.wrapping_add(1);
        let id = (lessor.next_id & (u64::MAX >> 1)) as i64;
        if id == 0 { 1 } else { id }
    }

    /// The term this member leads in, once it has applied an entry of that term.
    pub(super) fn primary_term(&self) -> Option<u64> {
        let metrics = self.raft.metrics();
        let m = metrics.borrow_watched();
        let applied_own = m
            .last_applied
            .as_ref()
            .is_some_and(|a| a.leader_id.term == m.current_term);
        (m.current_leader == Some(self.id) && applied_own).then_some(m.current_term)
    }

    /// Brings the lessor in line with this member's role and the store's leases: promotes
    /// it when this member has become leader, demotes it when not, times new leases and
    /// forgets revoked ones. Returns whether this member is the lessor.
    fn sync_lessor(&self) -> bool {
        let term = self.primary_term();
        let leases = self.store.leases();
        let now = Instant::now();
        let mut lessor = self.lessor();
        let Some(term) = term else {
            lessor.term = None;
            lessor.expiry.clear();
            lessor.revoking.clear();
            lessor.checkpoints.clear();
            return false;
        };
        let extend = if lessor.term != Some(term) {
            lessor.term = Some(term);
            lessor.expiry.clear();
            lessor.revoking.clear();
            lessor.checkpoints.clear();
            self.config.election_timeout
        } else {
            Duration::ZERO
        };
        let interval = self.config.lease_checkpoint_interval;
        let min_ttl = self.min_lease_ttl();
        let mut live = HashMap::with_capacity(leases.len());
        for (id, info) in leases {
            let at = match lessor.expiry.get(&id) {
                Some(at) => *at,
                None => {
                    // Promoted, or a lease granted through another member: timed from now
                    // (etcd's Promote gives the remainder plus the election timeout).
                    let ttl = if info.remaining > 0 {
                        info.remaining
                    } else {
                        info.ttl.max(min_ttl)
                    };
                    let at = now + Duration::from_secs(ttl.max(0) as u64) + extend;
                    schedule_checkpoint(&mut lessor.checkpoints, interval, id, at - now, now);
                    at
                }
            };
            live.insert(id, at);
        }
        lessor.expiry = live;
        let Lessor {
            expiry,
            revoking,
            checkpoints,
            ..
        } = &mut *lessor;
        revoking.retain(|id, _| expiry.contains_key(id));
        checkpoints.retain(|id, _| expiry.contains_key(id));
        true
    }

    /// Every lease this member has applied: on the lessor in the order they run out (as
    /// etcd's `Leases` sorts them), elsewhere by id.
    pub fn lease_ids(&self) -> Vec<i64> {
        let mut ids: Vec<i64> = self.store.leases().into_iter().map(|(id, _)| id).collect();
        let lessor = self.lessor();
        if lessor.term.is_some() {
            ids.sort_by_key(|id| (lessor.expiry.get(id).copied(), *id));
        }
        ids
    }

    /// A lease just granted through this member (the leader): its time starts now.
    pub(super) fn lease_granted(&self, id: i64, ttl: i64) {
        let mut lessor = self.lessor();
        if lessor.term.is_some() {
            let now = Instant::now();
            let left = Duration::from_secs(ttl.max(0) as u64);
            lessor.expiry.insert(id, now + left);
            let interval = self.config.lease_checkpoint_interval;
            schedule_checkpoint(&mut lessor.checkpoints, interval, id, left, now);
        }
    }

    /// Whether this member is the lessor now, promoting it first if it has just become
    /// one. Cheap while the term stays the same (keep-alives come at a high rate; the full
    /// reconciliation with the store runs on promotion and on each expiry tick).
    fn lessor_ready(&self) -> bool {
        let term = self.primary_term();
        if term.is_some() && self.lessor().term == term {
            return true;
        }
        self.sync_lessor()
    }

    /// Renews lease `id` on the leader: its full TTL again from now. etcd's answers: the
    /// TTL, or "requested lease not found" for a lease that does not exist or has run out
    /// (its revoke is on its way).
    pub(super) async fn lease_renew_as_leader(&self, id: i64) -> Result<i64, NodeError> {
        if !self.lessor_ready() {
            return Err(NodeError::NotLeader);
        }
        let info = self
            .store
            .lease(id)
            .ok_or(NodeError::from(MvccError::LeaseNotFound))?;
        let now = Instant::now();
        let clear = {
            let mut lessor = self.lessor();
            let expired = lessor.expiry.get(&id).is_some_and(|at| *at <= now);
            if expired || lessor.revoking.contains_key(&id) {
                return Err(NodeError::from(MvccError::LeaseNotFound));
            }
            let left = Duration::from_secs(info.ttl.max(0) as u64);
            lessor.expiry.insert(id, now + left);
            // A recorded remainder no longer holds: clear it (one entry per checkpoint at
            // most, as etcd does), and checkpoint again from here.
            let interval = self.config.lease_checkpoint_interval;
            let clear = interval.is_some() && info.remaining > 0;
            if clear {
                schedule_checkpoint(&mut lessor.checkpoints, interval, id, left, now);
            }
            clear
        };
        if clear {
            let cleared = LeaseCheckpoint {
                id,
                remaining_ttl: 0,
            };
            self.propose_checkpoints(vec![cleared]).await;
        }
        Ok(info.ttl)
    }

    /// etcd's `LeaseTimeToLive` on the leader: the remaining TTL in whole seconds (-1 and
    /// no granted TTL for a lease that does not exist), and the keys if asked.
    pub(super) async fn lease_ttl_as_leader(
        &self,
        id: i64,
        keys: bool,
    ) -> Result<LeaseTimeToLiveResponse, NodeError> {
        if !self.lessor_ready() {
            return Err(NodeError::NotLeader);
        }
        let Some(info) = self.stored_lease(id) else {
            return Ok(LeaseTimeToLiveResponse {
                id,
                ttl: -1,
                ..Default::default()
            });
        };
        let now = Instant::now();
        let at = *self
            .lessor()
            .expiry
            .entry(id)
            .or_insert_with(|| now + Duration::from_secs(info.ttl.max(0) as u64));
        let remaining = at.saturating_duration_since(now).as_secs() as i64;
        let keys = if keys {
            self.store.lease_keys(id).map_err(NodeError::from)?
        } else {
            Vec::new()
        };
        Ok(LeaseTimeToLiveResponse {
            header: None,
            id,
            ttl: remaining,
            granted_ttl: info.ttl,
            keys: keys.into_iter().collect(),
        })
    }

    /// One tick of the lessor: proposes a revoke for every lease that ran out.
    pub(super) fn expired_leases(&self) -> Vec<i64> {
        if !self.sync_lessor() {
            return Vec::new();
        }
        let now = Instant::now();
        let mut lessor = self.lessor();
        let Lessor {
            expiry, revoking, ..
        } = &mut *lessor;
        let mut due: Vec<i64> = expiry
            .iter()
            .filter(|(id, at)| {
                **at <= now
                    && revoking
                        .get(id)
                        .is_none_or(|since| now.duration_since(*since) >= REVOKE_RETRY)
            })
            .map(|(id, _)| *id)
            .collect();
        due.sort_unstable_by_key(|id| expiry[id]);
        due.truncate(REVOKES_PER_TICK);
        for id in &due {
            revoking.insert(*id, now);
        }
        due
    }

    /// The checkpoints due now: each lease's remaining TTL in whole seconds, rounded up (at
    /// most `MAX_CHECKPOINT_BATCH`; the rest stay due for the next tick). Each is scheduled
    /// again an interval later while the lease has more than an interval left.
    pub(super) fn due_checkpoints(&self) -> Vec<LeaseCheckpoint> {
        let Some(interval) = self.config.lease_checkpoint_interval else {
            return Vec::new();
        };
        let now = Instant::now();
        let mut lessor = self.lessor();
        if lessor.term.is_none() {
            return Vec::new();
        }
        let Lessor {
            expiry,
            checkpoints,
            ..
        } = &mut *lessor;
        let mut due: Vec<(Instant, i64)> = checkpoints
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(id, at)| (*at, *id))
            .collect();
        due.sort_unstable();
        due.truncate(raftkv_storage::mvcc::validate::MAX_CHECKPOINT_BATCH);
        let mut out = Vec::with_capacity(due.len());
        for (_, id) in due {
            checkpoints.remove(&id);
            let Some(at) = expiry.get(&id).copied().filter(|at| *at > now) else {
                continue; // gone, or running out: the revoke comes instead
            };
            let left = at - now;
            let remaining = left.as_secs() as i64 + i64::from(left.subsec_nanos() > 0);
            schedule_checkpoint(checkpoints, Some(interval), id, left, now);
            let ttl = self.stored_lease(id).map_or(0, |info| info.ttl);
            if remaining >= ttl {
                continue; // renewed within the last second: nothing to record
            }
            out.push(LeaseCheckpoint {
                id,
                remaining_ttl: remaining,
            });
        }
        out
    }

    /// Proposes lease checkpoints (the leader's, on its own).
    pub(super) async fn propose_checkpoints(&self, checkpoints: Vec<LeaseCheckpoint>) {
        if checkpoints.is_empty() {
            return;
        }
        let count = checkpoints.len();
        let cmd = Command {
            op: Some(command::Op::LeaseCheckpoint(LeaseCheckpointRequest {
                checkpoints,
            })),
            ..Default::default()
        };
        if let Err(e) = self.write(cmd).await {
            tracing::debug!(count, error = %e, "lease checkpoints not recorded; the next ones will be");
        }
    }

    /// Proposes the revoke of an expired lease (the leader's, on its own).
    pub(super) async fn revoke_expired(&self, id: i64) {
        let cmd = Command {
            op: Some(command::Op::LeaseRevoke(LeaseRevokeRequest { id })),
            ..Default::default()
        };
        match self.write(cmd).await {
            Ok(_) => tracing::debug!(lease = %format!("{id:016x}"), "expired lease revoked"),
            Err(e) => {
                tracing::debug!(lease = %format!("{id:016x}"), error = %e, "revoking an expired lease failed; trying again later")
            }
        }
    }
}

/// Schedules lease `id`'s next checkpoint an interval from `now` if it has more than an
/// interval `left` (etcd's `scheduleCheckpointIfNeeded`).
fn schedule_checkpoint(
    checkpoints: &mut HashMap<i64, Instant>,
    interval: Option<Duration>,
    id: i64,
    left: Duration,
    now: Instant,
) {
    if let Some(interval) = interval
        && left.as_secs() > interval.as_secs()
    {
        checkpoints.insert(id, now + interval);
    }
}

/// The lessor's loop: every tick, revoke what ran out, while the member runs.
pub(super) async fn expire_leases(node: std::sync::Weak<RaftNode>) {
    let mut tick = tokio::time::interval(EXPIRY_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(n) = node.upgrade() else { return };
        if *n.stop_peer.borrow() {
            return;
        }
        for id in n.expired_leases() {
            let n = n.clone();
            tokio::spawn(async move { n.revoke_expired(id).await });
        }
        let checkpoints = n.due_checkpoints();
        if !checkpoints.is_empty() {
            let n = n.clone();
            tokio::spawn(async move { n.propose_checkpoints(checkpoints).await });
        }
    }
}

/// The lease API the etcd services call.
impl RaftNode {
    /// etcd's `LeaseGrant`: the id chosen here when the request's is 0, a TTL below the
    /// minimum raised to it, then through the log.
    pub async fn lease_grant(
        &self,
        req: &raftkv_proto::etcdserverpb::LeaseGrantRequest,
        caller: Option<raftkv_proto::raftkvpb::Caller>,
    ) -> Result<raftkv_proto::etcdserverpb::LeaseGrantResponse, NodeError> {
        use raftkv_proto::raftkvpb::command_response;
        if req.ttl > raftkv_storage::mvcc::validate::MAX_LEASE_TTL {
            return Err(NodeError::from(MvccError::LeaseTtlTooLarge));
        }
        let id = if req.id == 0 {
            self.next_lease_id()
        } else {
            req.id
        };
        let grant = raftkv_proto::etcdserverpb::LeaseGrantRequest {
            ttl: req.ttl.max(self.min_lease_ttl()),
            id,
        };
        let cmd = Command {
            op: Some(command::Op::LeaseGrant(grant)),
            caller,
        };
        match self.write(cmd).await?.op {
            Some(command_response::Op::LeaseGrant(resp)) => Ok(resp),
            other => Err(NodeError::internal(format!(
                "a lease grant answered {other:?}"
            ))),
        }
    }

    /// etcd's `LeaseRevoke`, through the log; `caller` is who asked (checked as the entry
    /// is applied, see `raftkvpb::Command::caller`).
    pub async fn lease_revoke(
        &self,
        id: i64,
        caller: Option<raftkv_proto::raftkvpb::Caller>,
    ) -> Result<raftkv_proto::etcdserverpb::LeaseRevokeResponse, NodeError> {
        use raftkv_proto::raftkvpb::command_response;
        let cmd = Command {
            op: Some(command::Op::LeaseRevoke(LeaseRevokeRequest { id })),
            caller,
        };
        match self.write(cmd).await?.op {
            Some(command_response::Op::LeaseRevoke(resp)) => Ok(resp),
            other => Err(NodeError::internal(format!(
                "a lease revoke answered {other:?}"
            ))),
        }
    }

    /// A keep-alive of lease `id`, answered by the leader's lessor (from a follower through
    /// the peer service): its TTL.
    pub async fn lease_renew(&self, id: i64) -> Result<i64, NodeError> {
        use super::routing::{IfCallFails, with_deadline};
        let deadline = Instant::now() + self.config.request_timeout;
        self.on_leader(
            deadline,
            IfCallFails::Retry,
            || self.lease_renew_as_leader(id),
            |mut leader, left| {
                let request = with_deadline(
                    raftkv_proto::etcdserverpb::LeaseKeepAliveRequest { id },
                    left,
                );
                async move {
                    leader
                        .lease_renew(request)
                        .await
                        .map(|r| r.into_inner().ttl)
                }
            },
        )
        .await
    }

    /// etcd's `LeaseTimeToLive`, answered by the leader's lessor.
    pub async fn lease_time_to_live(
        &self,
        id: i64,
        keys: bool,
    ) -> Result<LeaseTimeToLiveResponse, NodeError> {
        use super::routing::{IfCallFails, with_deadline};
        let deadline = Instant::now() + self.config.request_timeout;
        self.on_leader(
            deadline,
            IfCallFails::Retry,
            || self.lease_ttl_as_leader(id, keys),
            |mut leader, left| {
                let request = with_deadline(
                    raftkv_proto::etcdserverpb::LeaseTimeToLiveRequest { id, keys },
                    left,
                );
                async move {
                    leader
                        .lease_time_to_live(request)
                        .await
                        .map(tonic::Response::into_inner)
                }
            },
        )
        .await
    }
}
