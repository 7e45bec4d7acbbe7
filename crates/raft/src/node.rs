//! A running member: storage opened, Raft started, the peer service listening, and the API
//! the etcd services call — writes (forwarded to the leader from followers), linearizable
//! read barriers (a read index from the leader), membership changes and status.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{ChangeMembershipError, ClientWriteError, RaftError};
use openraft::rt::WatchReceiver;
use openraft::{ChangeMembers, ReadPolicy, SnapshotPolicy};
use raftkv_proto::etcdserverpb::Member as PbMember;
use raftkv_proto::raftkvpb::{
    ChangeMembersRequest, ChangeMembersResponse, ClusterInfoRequest, Command, CommandResponse,
    MemberInfo, ReadIndexRequest, change_members_request,
};
use raftkv_storage::log::{LogConfig, RaftLogStore};
use raftkv_storage::mvcc::validate;
use raftkv_storage::{MvccConfig, MvccStore, layout};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::config::{ClusterState, NodeConfig, cluster_id, member_id, member_id_at};
use crate::error::NodeError;
use crate::log_store::LogStore;
use crate::network::{Channels, NetworkFactory};
use crate::peer_service::PeerService;
use crate::space::Space;
use crate::state_machine::StateMachine;
use crate::types::{Member, Raft, Request, StoredMembership, decode};

/// Status of one member, for `Maintenance/Status`.
#[derive(Debug, Clone, Default)]
pub struct NodeStatus {
    /// The leader this member knows (0 if none).
    pub leader: u64,
    /// Current term.
    pub term: u64,
    /// Committed log index.
    pub commit_index: u64,
    /// Applied log index.
    pub applied_index: u64,
    /// Whether this member is a learner.
    pub is_learner: bool,
}

/// A running member.
pub struct RaftNode {
    id: u64,
    cluster_id: u64,
    config: NodeConfig,
    raft: Raft,
    store: Arc<MvccStore>,
    channels: Channels,
    space: Arc<Space>,
    /// Turns true once this member's name and client URLs are in the cluster's membership
    /// and a leader is known (etcd's "published ... to cluster").
    published: watch::Sender<bool>,
    stop_peer: watch::Sender<bool>,
    peer_task: tokio::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl RaftNode {
    /// Starts a member: opens (or creates) its data, starts Raft, serves the peer service on
    /// `peer_listener`, and bootstraps or joins the cluster if the data dir is new. A data
    /// dir that already holds a member ignores the bootstrap settings, as etcd does.
    pub async fn start(
        config: NodeConfig,
        peer_listener: TcpListener,
    ) -> Result<Arc<Self>, NodeError> {
        let member_dir = layout::member_dir(&config.data_dir);
        std::fs::create_dir_all(&member_dir).map_err(internal)?;
        let channels = Channels::new(config.heartbeat_interval.max(Duration::from_millis(50)) * 5);
        let identity = read_identity(&layout::identity_file(&config.data_dir))?;
        let wal_dir = layout::wal_dir(&config.data_dir);
        let wal_existed = wal_dir.exists();
        let store = Arc::new(
            MvccStore::open(&layout::db_dir(&config.data_dir), &MvccConfig::default())
                .map_err(internal)?,
        );
        check_data_dir(&config.data_dir, identity, wal_existed, &store)?;
        let (id, cluster_id, bootstrap) = match identity {
            Some((id, cluster_id)) => (id, cluster_id, None),
            None => match config.initial_cluster_state {
                ClusterState::New => {
                    let members = initial_members(&config)?;
                    let cid = cluster_id(members.keys().copied());
                    (config.member_id(), cid, Some(members))
                }
                ClusterState::Existing => {
                    let (id, cid) = join_info(&config, &channels).await?;
                    (id, cid, None)
                }
            },
        };

        channels.set_ids(cluster_id, id);
        let wal = Arc::new(RaftLogStore::open(&wal_dir, &LogConfig::default()).map_err(internal)?);
        let space = Arc::new(Space::new(
            &config.data_dir,
            space_reserve(config.max_request_bytes),
        ));
        let sm = StateMachine::open(store.clone(), &layout::snap_dir(&config.data_dir))
            .map_err(internal)?
            .with_space(space.clone());
        let raft_config = openraft::Config {
            cluster_name: format!("{cluster_id:016x}"),
            heartbeat_interval: millis(config.heartbeat_interval),
            // A follower campaigns once it has heard nothing for openraft's leader lease
            // (election_timeout_max) plus a random election timeout in [min, max]: with these
            // it waits between 1.0 and 1.2 times --election-timeout, as an etcd follower
            // waits between 1 and 2 times it.
            election_timeout_min: millis(config.election_timeout) * 2 / 5,
            election_timeout_max: millis(config.election_timeout) * 3 / 5,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_count.max(1)),
            max_in_snapshot_log_to_keep: 0,
            enable_pre_vote: Some(true),
            // A member that led before a restart must win a new election (and commit a
            // blank entry in its new term) before it serves: the state machine is not
            // flushed on apply and the commit index is not persisted, so a restored leader
            // would answer reads from a stale state machine with a stale read index. Found
            // by the chaos tests (kill -9 of every member, then a read missing a write the
            // same member had acknowledged); etcd members also always restart as followers.
            enable_leader_restore: Some(false),
            ..Default::default()
        }
        .validate()
        .map_err(|e| NodeError::Internal(format!("invalid raft config: {e}")))?;
        let raft = Raft::new(
            id,
            Arc::new(raft_config),
            NetworkFactory::new(channels.clone()),
            LogStore::new(wal),
            sm.clone(),
        )
        .await
        .map_err(|e| NodeError::Internal(e.to_string()))?;

        if let Some(members) = bootstrap {
            match raft.initialize(members).await {
                Ok(()) => {
                    info!(member = %hex(id), cluster = %hex(cluster_id), "bootstrapped a new cluster")
                }
                Err(RaftError::APIError(openraft::error::InitializeError::NotAllowed(_))) => {}
                Err(e) => return Err(NodeError::Internal(format!("bootstrap failed: {e}"))),
            }
        }
        write_identity(&layout::identity_file(&config.data_dir), id, cluster_id)?;

        let (stop_peer, stop_rx) = watch::channel(false);
        let node = Arc::new(Self {
            id,
            cluster_id,
            config,
            raft: raft.clone(),
            store,
            channels,
            space: space.clone(),
            published: watch::channel(false).0,
            stop_peer,
            peer_task: tokio::sync::Mutex::new(None),
        });
        let service = PeerService::new(Arc::downgrade(&node), raft, sm, id, cluster_id, space);
        let task = tokio::spawn(service.serve(peer_listener, stop_rx));
        *node.peer_task.lock().await = Some(task);
        tokio::spawn(publish_self(Arc::downgrade(&node)));
        tokio::spawn(watch_space(Arc::downgrade(&node)));
        Ok(node)
    }

    /// This member's id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The cluster's id.
    pub fn cluster_id(&self) -> u64 {
        self.cluster_id
    }

    /// The member's configuration.
    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    /// The MVCC store (reads go to it directly once a barrier allows).
    pub fn store(&self) -> &Arc<MvccStore> {
        &self.store
    }

    /// The Raft handle (metrics, tests).
    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    /// Current term.
    pub fn term(&self) -> u64 {
        self.raft.metrics().borrow_watched().current_term
    }

    /// The membership as this member knows it (a shared handle, no copy).
    fn membership_config(&self) -> Arc<crate::types::StoredMembership> {
        self.raft
            .metrics()
            .borrow_watched()
            .membership_config
            .clone()
    }

    /// Whether this member is a voter in the membership it knows.
    pub fn is_voter(&self) -> bool {
        self.membership_config()
            .membership()
            .voter_ids()
            .any(|v| v == self.id)
    }

    /// Whether this member is a learner (refuses client requests other than serializable
    /// reads, as etcd's learners do).
    pub fn is_learner(&self) -> bool {
        self.membership_config()
            .membership()
            .learner_ids()
            .any(|l| l == self.id)
    }

    /// Status for `Maintenance/Status`.
    pub fn status(&self) -> NodeStatus {
        let m = self.raft.metrics().borrow_watched().clone();
        NodeStatus {
            leader: m.current_leader.unwrap_or(0),
            term: m.current_term,
            commit_index: m
                .cluster_committed
                .as_ref()
                .or(m.local_committed.as_ref())
                .map_or(0, |c| c.index),
            applied_index: m.last_applied.as_ref().map_or(0, |a| a.index),
            is_learner: self.is_learner(),
        }
    }

    /// The members, as etcd lists them.
    pub fn members(&self) -> Vec<PbMember> {
        members_of(self.membership_config().membership())
    }

    /// Waits until a leader is known, or the deadline passes.
    ///
    /// An election settles within about 1.2 election timeouts, so a member that has known no
    /// leader for twice that answers "no leader" rather than holding the request until its
    /// deadline.
    async fn leader(&self, deadline: Instant) -> Result<u64, NodeError> {
        let deadline = deadline.min(Instant::now() + self.config.election_timeout * 2);
        let mut rx = self.raft.metrics();
        loop {
            if let Some(leader) = rx.borrow_watched().current_leader {
                return Ok(leader);
            }
            if tokio::time::timeout_at(deadline, rx.changed())
                .await
                .is_err()
            {
                return Err(NodeError::NoLeader);
            }
            // A closed channel means Raft stopped; the next borrow shows the last state.
            if *self.stop_peer.borrow() {
                return Err(NodeError::Stopped);
            }
        }
    }

    fn member(&self, id: u64) -> Option<Member> {
        self.membership_config().membership().get_node(&id).cloned()
    }

    /// Applies a write through Raft and returns etcd's response. From a follower the write is
    /// forwarded to the leader. A write whose outcome is unknown fails with "request timed
    /// out" or "leader changed" — never with an error that claims it was not applied.
    pub async fn write(&self, cmd: Command) -> Result<CommandResponse, NodeError> {
        self.admit(&cmd)?;
        let deadline = Instant::now() + self.config.request_timeout;
        loop {
            let leader = self.leader(deadline).await?;
            if leader == self.id {
                match tokio::time::timeout_at(
                    deadline,
                    self.raft.client_write(Request(cmd.clone())),
                )
                .await
                {
                    Err(_) => return Err(NodeError::Timeout),
                    Ok(Ok(resp)) => return resp.data.0.map_err(NodeError::Refused),
                    // Not proposed: safe to send again to whoever leads now.
                    Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_)))) => {
                        pause_before_retry(deadline).await?;
                    }
                    Ok(Err(RaftError::APIError(ClientWriteError::LogEntryDiscarded(_)))) => {
                        return Err(NodeError::LeaderChanged);
                    }
                    Ok(Err(RaftError::APIError(e))) => {
                        return Err(NodeError::Internal(e.to_string()));
                    }
                    // Raft stopped with the entry possibly in the log and replicated: the
                    // rest of the cluster may still commit it, so the outcome is unknown.
                    Ok(Err(RaftError::Fatal(_))) => return Err(NodeError::Timeout),
                }
                continue;
            }
            let Some(target) = self.member(leader) else {
                pause_before_retry(deadline).await?;
                continue;
            };
            let mut client = self.channels.peer(&target).map_err(internal)?;
            let mut request = tonic::Request::new(cmd.clone());
            request.set_timeout(deadline.saturating_duration_since(Instant::now()));
            match tokio::time::timeout_at(deadline, client.forward(request)).await {
                Err(_) => return Err(NodeError::Timeout),
                Ok(Ok(resp)) => return Ok(resp.into_inner()),
                Ok(Err(status)) if retryable(&status) => pause_before_retry(deadline).await?,
                Ok(Err(status)) if status.code() == tonic::Code::DeadlineExceeded => {
                    return Err(NodeError::Timeout);
                }
                Ok(Err(status)) if is_transport_error(&status) => return Err(NodeError::Timeout),
                Ok(Err(status)) => return Err(NodeError::Remote(status)),
            }
        }
    }

    /// Refuses a write that takes space while a NOSPACE alarm is up, or while this member's
    /// own disk is below its reserve (before its alarm has gone through the log).
    fn admit(&self, cmd: &Command) -> Result<(), NodeError> {
        use raftkv_proto::etcdserverpb::AlarmType;
        if validate::consumes_space(cmd)
            && (self.space.is_low() || self.store.has_alarm(AlarmType::Nospace as i32))
        {
            return Err(NodeError::from(raftkv_storage::MvccError::NoSpace));
        }
        Ok(())
    }

    /// Turns true once this member has published itself to the cluster (see `published`);
    /// holding it does not keep the member alive.
    pub fn published(&self) -> watch::Receiver<bool> {
        self.published.subscribe()
    }

    /// This member's view of its disk space.
    pub fn space(&self) -> &Arc<Space> {
        &self.space
    }

    /// Applies a write on this member, which must be the leader (the peer service's Forward).
    pub(crate) async fn write_as_leader(
        &self,
        cmd: Command,
    ) -> Result<CommandResponse, tonic::Status> {
        if self.raft.current_leader().await != Some(self.id) {
            return Err(not_leader());
        }
        // A forwarded command passes the same gate as a client's request: a peer is no more
        // trusted than a client to put only well-formed commands in the log.
        validate::check_command(&cmd, self.config.max_request_bytes, self.config.max_txn_ops)
            .map_err(|e| tonic::Status::from(NodeError::from(e)))?;
        self.admit(&cmd)?;
        let timeout = self.config.request_timeout;
        match tokio::time::timeout(timeout, self.raft.client_write(Request(cmd))).await {
            Err(_) => Err(NodeError::Timeout.into()),
            Ok(Ok(resp)) => resp.data.0.map_err(|r| NodeError::Refused(r).into()),
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_)))) => Err(not_leader()),
            Ok(Err(RaftError::APIError(ClientWriteError::LogEntryDiscarded(_)))) => {
                Err(NodeError::LeaderChanged.into())
            }
            Ok(Err(RaftError::APIError(e))) => Err(NodeError::Internal(e.to_string()).into()),
            // As in `write`: proposed, then stopped — the outcome is unknown.
            Ok(Err(RaftError::Fatal(_))) => Err(NodeError::Timeout.into()),
        }
    }

    /// Waits until a read on this member's store is linearizable: the leader confirms it
    /// still leads (ReadIndex) and this member has applied up to the read index.
    pub async fn read_barrier(&self) -> Result<(), NodeError> {
        let deadline = Instant::now() + self.config.request_timeout;
        loop {
            let leader = self.leader(deadline).await?;
            let index = if leader == self.id {
                match tokio::time::timeout_at(
                    deadline,
                    self.raft.ensure_linearizable(ReadPolicy::ReadIndex),
                )
                .await
                {
                    Err(_) => return Err(NodeError::Timeout),
                    Ok(Ok(_)) => return Ok(()), // applied up to the read index already
                    Ok(Err(RaftError::APIError(_))) => {
                        pause_before_retry(deadline).await?;
                        continue;
                    }
                    Ok(Err(RaftError::Fatal(_))) => return Err(NodeError::Stopped),
                }
            } else {
                let Some(target) = self.member(leader) else {
                    pause_before_retry(deadline).await?;
                    continue;
                };
                let mut client = self.channels.peer(&target).map_err(internal)?;
                let mut request = tonic::Request::new(ReadIndexRequest {});
                request.set_timeout(deadline.saturating_duration_since(Instant::now()));
                match client.read_index(request).await {
                    Ok(resp) => resp.into_inner().index,
                    Err(status) if retryable(&status) || is_transport_error(&status) => {
                        pause_before_retry(deadline).await?;
                        continue;
                    }
                    Err(status) if status.code() == tonic::Code::DeadlineExceeded => {
                        return Err(NodeError::Timeout);
                    }
                    Err(status) => return Err(NodeError::Remote(status)),
                }
            };
            let remaining = deadline.saturating_duration_since(Instant::now());
            return match self
                .raft
                .wait(Some(remaining))
                .applied_index_at_least(Some(index), "read index")
                .await
            {
                Ok(_) => Ok(()),
                Err(_) => Err(NodeError::Timeout),
            };
        }
    }

    /// The read index, on the leader (the peer service's ReadIndex).
    pub(crate) async fn read_index_as_leader(&self) -> Result<u64, tonic::Status> {
        match tokio::time::timeout(
            self.config.request_timeout,
            self.raft.ensure_linearizable(ReadPolicy::ReadIndex),
        )
        .await
        {
            Err(_) => Err(NodeError::Timeout.into()),
            Ok(Ok(read)) => Ok(read.index()),
            Ok(Err(RaftError::APIError(_))) => Err(not_leader()),
            Ok(Err(RaftError::Fatal(_))) => Err(NodeError::Stopped.into()),
        }
    }

    /// Adds, removes or promotes a member (forwarded to the leader from followers).
    pub async fn change_members(
        &self,
        req: ChangeMembersRequest,
    ) -> Result<ChangeMembersResponse, NodeError> {
        let deadline = Instant::now() + self.config.request_timeout * 2;
        loop {
            let leader = self.leader(deadline).await?;
            if leader == self.id {
                return match self.change_members_as_leader(req.clone()).await {
                    Err(status) if retryable(&status) => {
                        pause_before_retry(deadline).await?;
                        continue;
                    }
                    other => other.map_err(NodeError::Remote),
                };
            }
            let Some(target) = self.member(leader) else {
                pause_before_retry(deadline).await?;
                continue;
            };
            let mut client = self.channels.peer(&target).map_err(internal)?;
            match client.change_members(req.clone()).await {
                Ok(resp) => return Ok(resp.into_inner()),
                Err(status) if retryable(&status) => pause_before_retry(deadline).await?,
                Err(status) => return Err(NodeError::Remote(status)),
            }
        }
    }

    pub(crate) async fn change_members_as_leader(
        &self,
        req: ChangeMembersRequest,
    ) -> Result<ChangeMembersResponse, tonic::Status> {
        if self.raft.current_leader().await != Some(self.id) {
            return Err(not_leader());
        }
        let membership = self.membership_config().membership().clone();
        let voters: BTreeSet<u64> = membership.voter_ids().collect();
        let membership_error = |code, message: &str| NodeError::Membership {
            code,
            message: message.into(),
        };
        let mut added = None;
        let change = match req.op {
            Some(change_members_request::Op::Add(add)) => {
                let urls = add.peer_ur_ls.clone();
                if urls.is_empty() {
                    return Err(membership_error(
                        tonic::Code::InvalidArgument,
                        "etcdserver: no peer URLs given",
                    )
                    .into());
                }
                if membership
                    .nodes()
                    .any(|(_, m)| m.peer_urls.iter().any(|u| urls.contains(u)))
                {
                    return Err(membership_error(
                        tonic::Code::FailedPrecondition,
                        "etcdserver: Peer URLs already exists",
                    )
                    .into());
                }
                self.may_add(&membership, &voters, add.is_learner)?;
                // As etcd: a member added at runtime hashes its URLs with the time, so the
                // same URLs added again after a removal get a new id.
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                let id = member_id_at(&urls, now);
                if membership.get_node(&id).is_some() {
                    return Err(membership_error(
                        tonic::Code::FailedPrecondition,
                        "etcdserver: member ID already exist",
                    )
                    .into());
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
            Some(change_members_request::Op::Remove(remove)) => {
                if membership.get_node(&remove.id).is_none() {
                    return Err(member_not_found());
                }
                if voters.contains(&remove.id) {
                    if voters.len() == 1 {
                        return Err(not_enough_started().into());
                    }
                    self.may_remove(&membership, &voters, remove.id)?;
                    // With retain = false (apply_membership), a removed voter leaves the
                    // node list too.
                    ChangeMembers::RemoveVoters(BTreeSet::from([remove.id]))
                } else {
                    ChangeMembers::RemoveNodes(BTreeSet::from([remove.id]))
                }
            }
            Some(change_members_request::Op::Promote(promote)) => {
                if membership.get_node(&promote.id).is_none() {
                    return Err(member_not_found());
                }
                if voters.contains(&promote.id) {
                    return Err(membership_error(
                        tonic::Code::FailedPrecondition,
                        "etcdserver: can only promote a learner member",
                    )
                    .into());
                }
                if !self.learner_in_sync(promote.id) {
                    return Err(membership_error(
                        tonic::Code::FailedPrecondition,
                        "etcdserver: can only promote a learner member which is in sync with leader",
                    )
                    .into());
                }
                self.may_promote(&membership, &voters)?;
                ChangeMembers::AddVoterIds(BTreeSet::from([promote.id]))
            }
            None => return Err(tonic::Status::invalid_argument("empty membership request")),
        };
        match (&change, voters.len()) {
            // A lone voter adding a voter: see `add_to_lone_voter`.
            (ChangeMembers::AddVoters(new), 1) => {
                let id = new.keys().next().copied().unwrap_or_default();
                self.add_to_lone_voter(change, id).await?;
            }
            _ => self.apply_membership(change).await?,
        }
        Ok(ChangeMembersResponse {
            member: added,
            members: self.members(),
        })
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
    ) -> Result<(), tonic::Status> {
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
            .map_err(|_| NodeError::Timeout.into())
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
            return Err(not_enough_started());
        }
        if !voters.iter().all(|&v| self.connected(v)) {
            warn!("not healthy for reconfigure, rejecting member add");
            return Err(unhealthy());
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
            return Err(not_enough_started());
        }
        if target != self.id && !self.connected(target) {
            return Ok(());
        }
        let active = voters.iter().filter(|&&v| self.connected(v)).count();
        if active - 1 < 1 + (voters.len() - 1) / 2 {
            warn!(member = %hex(target), "reconfigure breaks active quorum, rejecting remove member");
            return Err(unhealthy());
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
            return Err(not_enough_started());
        }
        Ok(())
    }

    /// Whether a learner has acknowledged appends and is within 100 entries of the leader.
    fn learner_in_sync(&self, id: u64) -> bool {
        let m = self.raft.metrics().borrow_watched().clone();
        let last = m.last_log_index.unwrap_or(0);
        // A learner that has never acknowledged an append (not started, unreachable) is not
        // in sync however short the log is.
        let matched = m
            .replication
            .as_ref()
            .and_then(|r| r.get(&id).cloned())
            .flatten();
        matched.is_some_and(|log_id| last.saturating_sub(log_id.index) <= 100)
    }

    /// Commits a membership change. A change that finds another still in progress (a
    /// member publishing its URLs, say) waits for it and tries again, as etcd serialises
    /// configuration changes; other refusals keep openraft's reason.
    async fn apply_membership(
        &self,
        change: ChangeMembers<u64, Member>,
    ) -> Result<(), tonic::Status> {
        let deadline = Instant::now() + self.config.request_timeout * 2;
        loop {
            let attempt = self.raft.change_membership(change.clone(), false);
            match tokio::time::timeout_at(deadline, attempt).await {
                Err(_) => return Err(NodeError::Timeout.into()),
                Ok(Ok(_)) => return Ok(()),
                Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_)))) => {
                    return Err(not_leader());
                }
                // Another change is in flight, or landed between our read of the membership
                // and the proposal: wait and propose again against the newer one.
                Ok(Err(RaftError::APIError(
                    ClientWriteError::ChangeMembershipError(ChangeMembershipError::InProgress(_))
                    | ClientWriteError::PreconditionFailed(_),
                ))) => {
                    if pause_before_retry(deadline).await.is_err() {
                        return Err(NodeError::Timeout.into());
                    }
                }
                Ok(Err(RaftError::APIError(e))) => {
                    return Err(tonic::Status::failed_precondition(format!(
                        "etcdserver: {e}"
                    )));
                }
                Ok(Err(RaftError::Fatal(_))) => return Err(NodeError::Stopped.into()),
            }
        }
    }

    /// Records a member's name and client URLs in the membership (on the leader).
    pub(crate) async fn publish_as_leader(
        &self,
        info: MemberInfo,
    ) -> Result<ChangeMembersResponse, tonic::Status> {
        if self.raft.current_leader().await != Some(self.id) {
            return Err(not_leader());
        }
        let Some(current) = self.member(info.id) else {
            return Err(member_not_found());
        };
        let updated = Member {
            name: info.name,
            peer_urls: current.peer_urls.clone(),
            client_urls: info.client_urls,
        };
        if updated != current {
            self.apply_membership(ChangeMembers::SetNodes(BTreeMap::from([(
                info.id, updated,
            )])))
            .await?;
        }
        Ok(ChangeMembersResponse {
            member: None,
            members: self.members(),
        })
    }

    /// Answers a joining member: the cluster id, and its id if the cluster knows its URLs.
    pub(crate) fn cluster_info(
        &self,
        req: &ClusterInfoRequest,
    ) -> Result<(u64, u64), tonic::Status> {
        let membership = self.membership_config().membership().clone();
        let found = membership
            .nodes()
            .find(|(_, m)| {
                !m.peer_urls.is_empty() && m.peer_urls.iter().all(|u| req.peer_urls.contains(u))
            })
            .map(|(id, _)| *id);
        match found {
            Some(id) => Ok((self.cluster_id, id)),
            None => Err(tonic::Status::not_found("etcdserver: member not found")),
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
            return Err(NodeError::Membership {
                code: tonic::Code::FailedPrecondition,
                message: "etcdserver: not leader".into(),
            });
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
            return Err(NodeError::Membership {
                code: tonic::Code::NotFound,
                message: "etcdserver: bad leader transferee".into(),
            });
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
            return Err(NodeError::Membership {
                code: tonic::Code::Unavailable,
                message: "etcdserver: request timed out, leader transfer took too long".into(),
            });
        }
        self.raft
            .trigger()
            .transfer_leader(target)
            .await
            .map_err(|_| NodeError::Stopped)?;
        self.raft
            .wait(Some(self.config.request_timeout))
            .current_leader(target, "move leader")
            .await
            .map(|_| ())
            .map_err(|_| NodeError::Timeout)
    }

    /// Stops Raft and the peer service and makes the store durable.
    pub async fn shutdown(&self) {
        let _ = self.stop_peer.send(true);
        let _ = self.raft.shutdown().await;
        if let Some(task) = self.peer_task.lock().await.take() {
            let _ = tokio::time::timeout(Duration::from_secs(2), task).await;
        }
        if let Err(e) = self.store.flush() {
            warn!(error = %e, "flushing the store at shutdown failed");
        }
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

/// etcd's refusal of a reconfiguration that would leave too few started members (etcd
/// sends it as `Unknown`: the error has no gRPC status of its own there).
fn not_enough_started() -> NodeError {
    NodeError::Membership {
        code: tonic::Code::Unknown,
        message: "etcdserver: re-configuration failed due to not enough started members".into(),
    }
}

/// etcd's refusal of a reconfiguration while the quorum is not all connected.
fn unhealthy() -> NodeError {
    NodeError::Membership {
        code: tonic::Code::Unavailable,
        message: "etcdserver: unhealthy cluster".into(),
    }
}

/// etcd's answer for a member id the cluster does not have.
fn member_not_found() -> tonic::Status {
    NodeError::Membership {
        code: tonic::Code::NotFound,
        message: "etcdserver: member not found".into(),
    }
    .into()
}

/// The status a leader-only handler answers on another member: the caller may retry with
/// the current leader, since nothing was proposed.
fn not_leader() -> tonic::Status {
    tonic::Status::failed_precondition("raftkv: not the leader")
}

fn retryable(status: &tonic::Status) -> bool {
    status.code() == tonic::Code::FailedPrecondition && status.message() == "raftkv: not the leader"
}

/// A transport failure (as opposed to an answer from the peer). Whether the request reached
/// the peer is unknown unless the connection was refused.
fn is_transport_error(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled
    ) && !status.message().starts_with("etcdserver:")
}

async fn pause_before_retry(deadline: Instant) -> Result<(), NodeError> {
    let wake = Instant::now() + Duration::from_millis(20);
    if wake >= deadline {
        return Err(NodeError::Timeout);
    }
    tokio::time::sleep_until(wake).await;
    Ok(())
}

fn millis(d: Duration) -> u64 {
    d.as_millis().max(1) as u64
}

fn internal(e: impl std::fmt::Display) -> NodeError {
    NodeError::Internal(e.to_string())
}

/// 16 hex digits, as etcd shows member ids.
pub fn hex(id: u64) -> String {
    format!("{id:016x}")
}

/// A member in etcd's form.
pub fn pb_member(id: u64, m: &Member, is_learner: bool) -> PbMember {
    PbMember {
        id,
        name: m.name.clone(),
        peer_ur_ls: m.peer_urls.clone(),
        client_ur_ls: m.client_urls.clone(),
        is_learner,
    }
}

fn members_of(membership: &openraft::Membership<u64, Member>) -> Vec<PbMember> {
    let voters: BTreeSet<u64> = membership.voter_ids().collect();
    membership
        .nodes()
        .map(|(id, m)| pb_member(*id, m, !voters.contains(id)))
        .collect()
}

/// The initial members from `--initial-cluster`, checked against this member's own URLs.
fn initial_members(config: &NodeConfig) -> Result<BTreeMap<u64, Member>, NodeError> {
    let bad = |message: String| NodeError::Internal(message);
    let own = config.initial_cluster.get(&config.name).ok_or_else(|| {
        bad(format!(
            "--initial-cluster has no member named {:?} (--name)",
            config.name
        ))
    })?;
    let mut own_sorted = own.clone();
    own_sorted.sort();
    let mut advertised = config.peer_urls.clone();
    advertised.sort();
    if own_sorted != advertised {
        return Err(bad(format!(
            "--initial-cluster has {}={} but --initial-advertise-peer-urls is {}",
            config.name,
            own.join(","),
            config.peer_urls.join(",")
        )));
    }
    let mut members = BTreeMap::new();
    for (name, urls) in &config.initial_cluster {
        let id = member_id(urls, &config.initial_cluster_token);
        // Every member must bootstrap with the very same membership entry, so client URLs
        // (known only to each member itself) are left out and published after start.
        let member = Member {
            name: name.clone(),
            peer_urls: urls.clone(),
            client_urls: vec![],
        };
        if members.insert(id, member).is_some() {
            return Err(bad(format!(
                "--initial-cluster lists the peer URLs of {name} twice"
            )));
        }
    }
    Ok(members)
}

/// Asks the members named in `--initial-cluster` for the cluster id and this member's id.
async fn join_info(config: &NodeConfig, channels: &Channels) -> Result<(u64, u64), NodeError> {
    let deadline = Instant::now() + config.request_timeout * 3;
    loop {
        for (name, urls) in &config.initial_cluster {
            if name == &config.name {
                continue;
            }
            let peer = Member {
                name: name.clone(),
                peer_urls: urls.clone(),
                client_urls: vec![],
            };
            let Ok(mut client) = channels.peer(&peer) else {
                continue;
            };
            let mut req = tonic::Request::new(ClusterInfoRequest {
                peer_urls: config.peer_urls.clone(),
            });
            req.set_timeout(Duration::from_secs(2));
            if let Ok(resp) = client.cluster_info(req).await {
                let resp = resp.into_inner();
                return Ok((resp.member_id, resp.cluster_id));
            }
        }
        if Instant::now() >= deadline {
            return Err(NodeError::Internal(
                "could not join: no member of --initial-cluster knows this member's peer URLs (add it with `member add` first)".into(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The free space a member keeps in hand (see [`crate::space`]): room for entries in flight
/// (a few of the largest requests), the alarm entry, and applying what is committed.
fn space_reserve(max_request_bytes: usize) -> u64 {
    (64 << 20) + 4 * max_request_bytes as u64
}

/// Watches the data dir's free space: raises this member's NOSPACE alarm through the log
/// when it drops below the reserve and clears it once twice the reserve is free again.
async fn watch_space(node: std::sync::Weak<RaftNode>) {
    use raftkv_proto::etcdserverpb::alarm_request::AlarmAction;
    use raftkv_proto::etcdserverpb::{AlarmRequest, AlarmType};
    let mut announced = None;
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let Some(node) = node.upgrade() else { return };
        if *node.stop_peer.borrow() {
            return;
        }
        let free = node.space.refresh();
        let mine = (node.id, AlarmType::Nospace as i32);
        let raised = node.store.alarms().contains(&mine);
        let action = if node.space.is_low() && !raised {
            AlarmAction::Activate
        } else if node.space.recovered() && raised {
            AlarmAction::Deactivate
        } else {
            continue;
        };
        if announced != Some(action) {
            match action {
                AlarmAction::Activate => warn!(
                    free,
                    reserve = node.space.reserve(),
                    "disk nearly full: raising the NOSPACE alarm"
                ),
                _ => info!(free, "disk space recovered: clearing the NOSPACE alarm"),
            }
            announced = Some(action);
        }
        let cmd = Command {
            op: Some(raftkv_proto::raftkvpb::command::Op::Alarm(AlarmRequest {
                action: action as i32,
                member_id: node.id,
                alarm: AlarmType::Nospace as i32,
            })),
        };
        if let Err(e) = node.write(cmd).await {
            tracing::debug!(error = %e, "changing the NOSPACE alarm failed; will retry");
        }
    }
}

/// Keeps telling the leader this member's name and client URLs until the membership shows
/// them (etcd's "publish"), so `member list` can show every member's client URLs.
async fn publish_self(node: std::sync::Weak<RaftNode>) {
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let Some(node) = node.upgrade() else { return };
        if *node.stop_peer.borrow() {
            return;
        }
        let wanted = (node.config.name.clone(), node.config.client_urls.clone());
        let leader_known = node
            .raft
            .metrics()
            .borrow_watched()
            .current_leader
            .is_some();
        match node.member(node.id) {
            Some(m) if (m.name.clone(), m.client_urls.clone()) == wanted && leader_known => {
                // etcd's lines, which tools (etcd's own e2e tests among them) wait for.
                info!(
                    "published {{Name:{} ClientURLs:[{}]}} to cluster {:x}",
                    wanted.0,
                    wanted.1.join(" "),
                    node.cluster_id
                );
                info!("enabled capabilities for version 3.4");
                let _ = node.published.send(true);
                return;
            }
            Some(m) if (m.name.clone(), m.client_urls.clone()) == wanted => continue,
            None => continue, // not (yet) a member: nothing to publish
            Some(_) => {}
        }
        let info = MemberInfo {
            id: node.id,
            name: wanted.0,
            peer_urls: node.config.peer_urls.clone(),
            client_urls: wanted.1,
        };
        let Some(leader) = node.raft.metrics().borrow_watched().current_leader else {
            continue;
        };
        let result = if leader == node.id {
            node.publish_as_leader(info).await.map(|_| ())
        } else {
            match node.member(leader).map(|m| node.channels.peer(&m)) {
                Some(Ok(mut client)) => client.publish(info).await.map(|_| ()),
                _ => continue,
            }
        };
        if let Err(e) = result {
            tracing::debug!(error = %e, "publishing member info failed; will retry");
        }
    }
}

/// Refuses a data dir that has lost the part of a member's state that keeps Raft safe: a
/// member whose store shows Raft state but whose identity file is gone, or a voter whose WAL
/// (its log and its vote) is gone, would start with its vote forgotten and could vote twice
/// in one term. etcd starts in the second case and loses writes; raftkv refuses, saying how
/// to recover: replace the member.
fn check_data_dir(
    data_dir: &Path,
    identity: Option<(u64, u64)>,
    wal_existed: bool,
    store: &MvccStore,
) -> Result<(), NodeError> {
    let state = store.applied_state().map_err(internal)?;
    let recover = |id: Option<u64>| {
        let id = id.map_or_else(|| "<its id>".to_string(), |id| format!("{id:x}"));
        format!(
            "to recover, remove this member from the cluster (etcdctl member remove {id}), \
             delete {dir}, add it back (etcdctl member add) and start it with \
             --initial-cluster-state existing",
            dir = data_dir.display()
        )
    };
    let Some((id, cluster)) = identity else {
        if state.applied.is_some() {
            return Err(NodeError::Internal(format!(
                "{} holds a member's data but its identity file is missing, so its Raft state \
                 cannot be trusted; {}",
                data_dir.display(),
                recover(None)
            )));
        }
        return Ok(());
    };
    if wal_existed {
        return Ok(());
    }
    let was_voter = match &state.membership {
        Some(bytes) => decode::<StoredMembership>(bytes)
            .map(|m| m.membership().voter_ids().any(|v| v == id))
            .unwrap_or(true),
        // Bootstrapped (an identity exists) but nothing applied: it may still have voted.
        None => true,
    };
    if was_voter {
        return Err(NodeError::Internal(format!(
            "{} is missing: member {id:x} of cluster {cluster:x} has lost its Raft log and \
             vote, and restarting without them could vote twice in one term; {}",
            layout::wal_dir(data_dir).display(),
            recover(Some(id))
        )));
    }
    Ok(())
}

fn read_identity(path: &Path) -> Result<Option<(u64, u64)>, NodeError> {
    use std::io::Read;
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(internal(e)),
    };
    // Three short lines: read no more than a damaged or replaced file could make us hold.
    let mut text = String::new();
    file.take(4096)
        .read_to_string(&mut text)
        .map_err(|e| NodeError::Internal(format!("{} is damaged: {e}", path.display())))?;
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
    };
    match (text.lines().next(), field("member "), field("cluster ")) {
        (Some("raftkv member v1"), Some(id), Some(cluster)) => Ok(Some((id, cluster))),
        _ => Err(NodeError::Internal(format!(
            "{} is damaged",
            path.display()
        ))),
    }
}

fn write_identity(path: &Path, id: u64, cluster: u64) -> Result<(), NodeError> {
    if path.exists() {
        return Ok(());
    }
    let tmp: PathBuf = path.with_extension("tmp");
    std::fs::write(
        &tmp,
        format!("raftkv member v1\nmember {id:016x}\ncluster {cluster:016x}\n"),
    )
    .map_err(internal)?;
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(internal)?;
    std::fs::rename(&tmp, path).map_err(internal)?;
    Ok(())
}
