//! Membership: etcd's member add / remove / promote / update with its policy (`--strict-reconfig-check`
//! included), members publishing their names and client URLs, members joining, and
//! leadership transfer.

use std::collections::{BTreeMap, BTreeSet};

use openraft::error::{ChangeMembershipError, ClientWriteError, RaftError};
use openraft::rt::WatchReceiver;
use openraft::{ChangeMembers, Precondition};
use raftkv_proto::raftkvpb::{
    ChangeMembersRequest, ChangeMembersResponse, ClusterInfoRequest, MemberInfo,
    change_members_request,
};
use tokio::time::Instant;
use tracing::{info, warn};

use super::convert::pb_member;
use super::routing::{IfCallFails, pause_before_retry};
use super::{RaftNode, hex};
use crate::config::member_id_at;
use crate::error::{EtcdError, NodeError};
use crate::types::Member;

/// A planned membership change (`None`: nothing to change) and the member it adds.
type Planned = (
    Option<ChangeMembers<u64, Member>>,
    Option<raftkv_proto::etcdserverpb::Member>,
);

impl RaftNode {
    /// Adds, removes or promotes a member (on the leader, wherever it was asked).
    pub async fn change_members(
        &self,
        req: ChangeMembersRequest,
    ) -> Result<ChangeMembersResponse, NodeError> {
        let deadline = Instant::now() + self.config.request_timeout * 2;
        self.on_leader(
            deadline,
            IfCallFails::Unknown,
            || self.change_members_as_leader(req.clone()),
            |mut leader, _| {
                let req = req.clone();
                async move {
                    leader
                        .change_members(req)
                        .await
                        .map(tonic::Response::into_inner)
                }
            },
        )
        .await
    }

    pub(super) async fn change_members_as_leader(
        &self,
        req: ChangeMembersRequest,
    ) -> Result<ChangeMembersResponse, NodeError> {
        if !self.is_leader().await {
            return Err(NodeError::NotLeader);
        }
        let op = req.op.ok_or_else(|| {
            NodeError::Remote(tonic::Status::invalid_argument("empty membership request"))
        })?;
        // A voter added to a lone voter: see `add_to_lone_voter`.
        let current = self.membership_config();
        if let change_members_request::Op::Add(add) = &op
            && !add.is_learner
            && super::voters_of(current.membership()).len() == 1
        {
            let (change, added) = self.plan_change(current.membership(), &op)?;
            if let (Some(change), Some(member)) = (change, &added) {
                self.add_to_lone_voter(change, member.id).await?;
            }
            return Ok(ChangeMembersResponse {
                member: added,
                members: self.members(),
            });
        }
        // The change is planned against the membership it is proposed on (see
        // `apply_membership`): planned again if another change lands first.
        let mut added = None;
        let committed = self
            .apply_membership(|membership| {
                let (change, member) = self.plan_change(membership, &op)?;
                added = member;
                Ok(change)
            })
            .await?;
        // Only `member update` sets nodes here.
        if let Some(ChangeMembers::SetNodes(moved)) = &committed {
            for (id, member) in moved {
                self.channels.member_moved(*id, member);
            }
        }
        Ok(ChangeMembersResponse {
            member: added,
            members: self.members(),
        })
    }

    /// What `op` changes in `membership`, with etcd's checks, and the member it adds;
    /// `None` when it changes nothing.
    fn plan_change(
        &self,
        membership: &openraft::Membership<u64, Member>,
        op: &change_members_request::Op,
    ) -> Result<Planned, NodeError> {
        let voters = super::voters_of(membership);
        let mut added = None;
        let change = match op.clone() {
            change_members_request::Op::Add(add) => {
                let urls = add.peer_ur_ls.clone();
                if urls.is_empty() {
                    return Err(EtcdError::NoPeerUrls.into());
                }
                if membership
                    .nodes()
                    .any(|(_, m)| m.peer_urls.iter().any(|u| urls.contains(u)))
                {
                    return Err(EtcdError::PeerUrlsExist.into());
                }
                self.may_add(membership, &voters, add.is_learner)?;
                // As etcd: a member added at runtime hashes its URLs with the time, so the
                // same URLs added again after a removal get a new id.
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                let id = member_id_at(&urls, now);
                if membership.get_node(&id).is_some() {
                    return Err(EtcdError::MemberIdExists.into());
                }
                let member = Member {
                    name: String::new(),
                    peer_urls: urls,
                    client_urls: vec![],
                };
                added = Some(pb_member(id, &member, add.is_learner));
                if add.is_learner {
                    ChangeMembers::AddNodes(BTreeMap::from([(id, member)]))
                } else {
                    ChangeMembers::AddVoters(BTreeMap::from([(id, member)]))
                }
            }
            change_members_request::Op::Remove(remove) => {
                if membership.get_node(&remove.id).is_none() {
                    return Err(EtcdError::MemberNotFound.into());
                }
                if voters.contains(&remove.id) {
                    if voters.len() == 1 {
                        return Err(EtcdError::NotEnoughStartedMembers.into());
                    }
                    self.may_remove(membership, &voters, remove.id)?;
                    // With retain = false (apply_membership), a removed voter leaves the
                    // node list too.
                    ChangeMembers::RemoveVoters(BTreeSet::from([remove.id]))
                } else {
                    ChangeMembers::RemoveNodes(BTreeSet::from([remove.id]))
                }
            }
            change_members_request::Op::Promote(promote) => {
                if membership.get_node(&promote.id).is_none() {
                    return Err(EtcdError::MemberNotFound.into());
                }
                if voters.contains(&promote.id) {
                    return Err(EtcdError::NotALearner.into());
                }
                if !self.learner_in_sync(promote.id) {
                    return Err(EtcdError::LearnerNotReady.into());
                }
                self.may_promote(membership, &voters)?;
                ChangeMembers::AddVoterIds(BTreeSet::from([promote.id]))
            }
            change_members_request::Op::Update(update) => {
                return Ok((self.updated_peer_urls(membership, update)?, None));
            }
        };
        Ok((Some(change), added))
    }

    /// `member add` of a voter to a one-member cluster. etcd commits the change under the old
    /// configuration (a quorum of one) and answers at once; openraft's joint consensus needs
    /// the new member too, which is not running yet (etcd's way is add, then start), so the
    /// call hung. Here the change is left to complete in the background, and the answer comes
    /// once the joint configuration is in this member's log — the log of the whole old
    /// configuration, so nobody can lead without it.
    /// Until the new member starts, the cluster has no quorum, as in etcd. If this member
    /// restarts first, the new member's `publish` finishes the change.
    async fn add_to_lone_voter(
        &self,
        change: ChangeMembers<u64, Member>,
        id: u64,
    ) -> Result<(), NodeError> {
        let raft = self.raft.clone();
        tokio::spawn(async move {
            match raft.change_membership(change, false).await {
                Ok(_) => info!(member = %hex(id), "added member is now a voter"),
                Err(e) => warn!(member = %hex(id), error = %e, "adding a member did not complete"),
            }
        });
        self.raft
            .wait(Some(self.config.request_timeout))
            .metrics(
                |m| m.membership_config.membership().get_node(&id).is_some(),
                "membership change in the log",
            )
            .await
            .map(|_| ())
            .map_err(|_| NodeError::TIMEOUT)
    }

    /// `member update`: the member's new peer URLs (its name and client URLs stay), as
    /// etcd's `ConfChangeUpdateNode` checks them — the member must exist and no other member
    /// may use any of the URLs. `None` when nothing changes. The leader's replication to it
    /// is rebuilt with the new URLs once the change is applied (channels are per URL).
    fn updated_peer_urls(
        &self,
        membership: &openraft::Membership<u64, Member>,
        update: raftkv_proto::etcdserverpb::MemberUpdateRequest,
    ) -> Result<Option<ChangeMembers<u64, Member>>, NodeError> {
        let Some(current) = membership.get_node(&update.id) else {
            return Err(EtcdError::MemberNotFound.into());
        };
        let taken = membership.nodes().any(|(id, m)| {
            *id != update.id && m.peer_urls.iter().any(|u| update.peer_ur_ls.contains(u))
        });
        if taken {
            return Err(EtcdError::PeerUrlsExist.into());
        }
        if current.peer_urls == update.peer_ur_ls {
            return Ok(None);
        }
        let updated = Member {
            peer_urls: update.peer_ur_ls,
            ..current.clone()
        };
        info!(member = %hex(update.id), peer_urls = ?updated.peer_urls, "updating a member's peer URLs");
        Ok(Some(ChangeMembers::SetNodes(BTreeMap::from([(
            update.id, updated,
        )]))))
    }

    /// Whether member `id` answered heartbeats within an election timeout (this member
    /// always counts). etcd asks for a link up for 5 s; openraft reports the last answer.
    fn connected(&self, id: u64) -> bool {
        if id == self.id {
            return true;
        }
        let m = self.raft.metrics().borrow_watched().clone();
        m.heartbeat
            .as_ref()
            .and_then(|h| h.get(&id).cloned().flatten())
            .is_some_and(|at| openraft::Instant::elapsed(&*at) < self.config.election_timeout)
    }

    /// `--strict-reconfig-check` for `member add` (etcd's `mayAddMember`): a voter may join
    /// only if the started voters stay a quorum of the grown cluster (a second member of a
    /// one-member cluster excepted), and any member only while every voter is connected.
    fn may_add(
        &self,
        membership: &openraft::Membership<u64, Member>,
        voters: &BTreeSet<u64>,
        is_learner: bool,
    ) -> Result<(), NodeError> {
        if !self.config.strict_reconfig_check {
            return Ok(());
        }
        let started = started_voters(membership, voters, None);
        let members = voters.len() + 1;
        let second_of_one = started == 1 && members == 2;
        if !(is_learner || second_of_one) && started < members / 2 + 1 {
            warn!("not enough started members, rejecting member add");
            return Err(EtcdError::NotEnoughStartedMembers.into());
        }
        if !voters.iter().all(|&v| self.connected(v)) {
            warn!("not healthy for reconfigure, rejecting member add");
            return Err(EtcdError::Unhealthy.into());
        }
        Ok(())
    }

    /// `--strict-reconfig-check` for removing voter `target` (etcd's `mayRemoveMember`):
    /// the started voters left must be a quorum of what is left, and unless the target is
    /// already gone, the connected voters left must be too.
    fn may_remove(
        &self,
        membership: &openraft::Membership<u64, Member>,
        voters: &BTreeSet<u64>,
        target: u64,
    ) -> Result<(), NodeError> {
        if !self.config.strict_reconfig_check {
            return Ok(());
        }
        let members = voters.len() - 1;
        if started_voters(membership, voters, Some(target)) < members / 2 + 1 {
            warn!(member = %hex(target), "not enough started members, rejecting remove member");
            return Err(EtcdError::NotEnoughStartedMembers.into());
        }
        if target != self.id && !self.connected(target) {
            return Ok(());
        }
        let active = voters.iter().filter(|&&v| self.connected(v)).count();
        if active - 1 < 1 + (voters.len() - 1) / 2 {
            warn!(member = %hex(target), "reconfigure breaks active quorum, rejecting remove member");
            return Err(EtcdError::Unhealthy.into());
        }
        Ok(())
    }

    /// `--strict-reconfig-check` for promoting a learner: counting it as a started voter,
    /// the started voters must be a quorum.
    fn may_promote(
        &self,
        membership: &openraft::Membership<u64, Member>,
        voters: &BTreeSet<u64>,
    ) -> Result<(), NodeError> {
        if !self.config.strict_reconfig_check {
            return Ok(());
        }
        let members = voters.len() + 1;
        if started_voters(membership, voters, None) + 1 < members / 2 + 1 {
            return Err(EtcdError::NotEnoughStartedMembers.into());
        }
        Ok(())
    }

    /// Whether a learner is ready to vote, by etcd's rule (`isLearnerReady`): the index it
    /// has acknowledged is at least 90% of the leader's. A learner that has never
    /// acknowledged an append (not started, unreachable, still taking a snapshot) is not,
    /// however short the log is.
    fn learner_in_sync(&self, id: u64) -> bool {
        let m = self.raft.metrics().borrow_watched().clone();
        let last = m.last_log_index.unwrap_or(0);
        let matched = m
            .replication
            .as_ref()
            .and_then(|r| r.get(&id).cloned())
            .flatten();
        matched.is_some_and(|log_id| learner_ready(log_id.index, last))
    }

    /// Commits the membership change `plan` makes of the current membership, and returns it
    /// (`None` when `plan` finds nothing to change). The change is proposed only on the
    /// membership it was planned from (openraft's `LastMembershipLogId` precondition): one
    /// that finds another change still in flight (a member publishing its URLs, say) or landed
    /// meanwhile waits for it and is planned again, as etcd serialises configuration changes.
    /// Planned once and proposed later, a member's `publish` could write back the peer URLs a
    /// `member update` had just changed. Other refusals keep openraft's reason.
    async fn apply_membership(
        &self,
        mut plan: impl FnMut(
            &openraft::Membership<u64, Member>,
        ) -> Result<Option<ChangeMembers<u64, Member>>, NodeError>,
    ) -> Result<Option<ChangeMembers<u64, Member>>, NodeError> {
        let deadline = Instant::now() + self.config.request_timeout * 2;
        loop {
            // Planned first, so a change etcd refuses is refused at once (`--strict-reconfig-check`
            // while a lone voter's addition waits for the new member, say).
            let observed = self.membership_config();
            let Some(change) = plan(observed.membership())? else {
                return Ok(None);
            };
            // Wait out a change still in flight (the bootstrap membership, another member's
            // publish) rather than have openraft refuse — and log an error for — this one.
            if self.membership_change_in_flight() {
                pause_before_retry(deadline).await?;
                continue;
            }
            let unchanged = Precondition::LastMembershipLogId {
                last_membership_log_id: *observed.log_id(),
            };
            let attempt = self
                .raft
                .change_membership_if(change.clone(), false, [unchanged]);
            match tokio::time::timeout_at(deadline, attempt).await {
                Err(_) => return Err(NodeError::TIMEOUT),
                Ok(Ok(_)) => return Ok(Some(change)),
                Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_)))) => {
                    return Err(NodeError::NotLeader);
                }
                // Another change is in flight, or landed between our read of the membership
                // and the proposal: wait and plan again against the newer one.
                Ok(Err(RaftError::APIError(
                    ClientWriteError::ChangeMembershipError(ChangeMembershipError::InProgress(_))
                    | ClientWriteError::PreconditionFailed(_),
                ))) => {
                    pause_before_retry(deadline).await?;
                }
                Ok(Err(RaftError::APIError(e))) => {
                    return Err(NodeError::Remote(tonic::Status::failed_precondition(
                        format!("etcdserver: {e}"),
                    )));
                }
                Ok(Err(RaftError::Fatal(_))) => return Err(NodeError::STOPPED),
            }
        }
    }

    /// Whether the newest membership in the log is not committed yet.
    fn membership_change_in_flight(&self) -> bool {
        let m = self.raft.metrics().borrow_watched().clone();
        m.membership_config.log_id() != m.committed_membership_config.log_id()
    }

    /// Records a member's name and client URLs in the membership (on the leader).
    pub(super) async fn publish_as_leader(
        &self,
        info: MemberInfo,
    ) -> Result<ChangeMembersResponse, NodeError> {
        if !self.is_leader().await {
            return Err(NodeError::NotLeader);
        }
        // The peer URLs stay those of the membership the change is proposed on.
        self.apply_membership(|membership| {
            let Some(current) = membership.get_node(&info.id) else {
                return Err(EtcdError::MemberNotFound.into());
            };
            let updated = Member {
                name: info.name.clone(),
                peer_urls: current.peer_urls.clone(),
                client_urls: info.client_urls.clone(),
            };
            Ok((updated != *current)
                .then(|| ChangeMembers::SetNodes(BTreeMap::from([(info.id, updated)]))))
        })
        .await?;
        Ok(ChangeMembersResponse {
            member: None,
            members: self.members(),
        })
    }

    /// Answers a joining member: the cluster id, and its id if the cluster knows its URLs.
    pub(super) fn cluster_info(&self, req: &ClusterInfoRequest) -> Result<(u64, u64), NodeError> {
        let membership = self.membership_config().membership().clone();
        let found = membership
            .nodes()
            .find(|(_, m)| {
                !m.peer_urls.is_empty() && m.peer_urls.iter().all(|u| req.peer_urls.contains(u))
            })
            .map(|(id, _)| *id);
        match found {
            Some(id) => Ok((self.cluster_id, id)),
            None => Err(EtcdError::MemberNotFound.into()),
        }
    }

    /// Hands leadership to another voter if this member leads, then waits (briefly) for it.
    pub async fn transfer_leadership(&self) {
        let m = self.raft.metrics().borrow_watched().clone();
        if m.current_leader != Some(self.id) {
            return;
        }
        let Some(target) = m
            .membership_config
            .membership()
            .voter_ids()
            .find(|v| *v != self.id)
        else {
            return;
        };
        if self.raft.trigger().transfer_leader(target).await.is_ok() {
            let _ = self
                .raft
                .wait(Some(self.config.election_timeout * 2))
                .metrics(
                    |m| m.current_leader.is_some_and(|l| l != self.id),
                    "leadership handed over",
                )
                .await;
        }
    }

    /// Moves leadership to `target` (etcdctl move-leader); only the leader can.
    ///
    /// Moving to the current leader is a no-op, as in etcd. openraft, asked to transfer to
    /// itself, stopped taking proposals for good (every put then timed out). It also stops
    /// taking them while any transfer is pending, until another member wins an election, so
    /// a transfer is only started toward a voter that answered heartbeats within an election
    /// timeout and holds nearly all of the log — otherwise etcd's timeout error, at once.
    pub async fn move_leader(&self, target: u64) -> Result<(), NodeError> {
        let m = self.raft.metrics().borrow_watched().clone();
        if m.current_leader != Some(self.id) {
            return Err(EtcdError::NotLeader.into());
        }
        if target == self.id {
            return Ok(());
        }
        if !m
            .membership_config
            .membership()
            .voter_ids()
            .any(|v| v == target)
        {
            return Err(EtcdError::BadLeaderTransferee.into());
        }
        let answered = m
            .heartbeat
            .as_ref()
            .and_then(|h| h.get(&target).cloned().flatten())
            .is_some_and(|at| openraft::Instant::elapsed(&*at) < self.config.election_timeout);
        let last = m.last_log_index.unwrap_or(0);
        let caught_up = m
            .replication
            .as_ref()
            .and_then(|r| r.get(&target).cloned().flatten())
            .is_some_and(|matched| last.saturating_sub(matched.index) <= 100);
        if !(answered && caught_up) {
            return Err(EtcdError::LeaderTransferTimeout.into());
        }
        self.raft
            .trigger()
            .transfer_leader(target)
            .await
            .map_err(|_| NodeError::STOPPED)?;
        self.raft
            .wait(Some(self.config.request_timeout))
            .current_leader(target, "move leader")
            .await
            .map(|_| ())
            .map_err(|_| NodeError::TIMEOUT)
    }
}

/// Voters that have published their name ("started" in etcd), not counting `except`.
fn started_voters(
    membership: &openraft::Membership<u64, Member>,
    voters: &BTreeSet<u64>,
    except: Option<u64>,
) -> usize {
    voters
        .iter()
        .filter(|&&v| Some(v) != except)
        .filter(|v| membership.get_node(v).is_some_and(|m| !m.name.is_empty()))
        .count()
}

/// etcd's readiness rule for promoting a learner: its acknowledged index is at least 90% of
/// the leader's (`readyPercent` in etcdserver/server.go), in integers: 10 × matched ≥ 9 × last.
fn learner_ready(matched: u64, leader_last: u64) -> bool {
    u128::from(matched) * 10 >= u128::from(leader_last) * 9
}

#[cfg(test)]
mod tests {
    use super::learner_ready;

    #[test]
    fn a_learner_is_ready_at_ninety_percent_of_the_leaders_index() {
        assert!(learner_ready(0, 0));
        assert!(learner_ready(9, 10));
        assert!(!learner_ready(8, 10));
        assert!(learner_ready(4_500, 5_000));
        assert!(!learner_ready(4_499, 5_000));
        assert!(learner_ready(u64::MAX, u64::MAX));
        assert!(!learner_ready(0, u64::MAX));
    }
}
