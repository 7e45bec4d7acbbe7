//! A running member: storage opened, Raft started, the peer service listening, and the API
//! the etcd services call. The node is split by role:
//!
//! - `lifecycle` — start (open the data dir, bootstrap or join, start Raft and the peer
//!   service), the background tasks (publish this member, watch the disk), shutdown.
//! - `routing` — who leads, and `RaftNode::on_leader`: run a request here if this member
//!   leads, else on the leader through the peer service, trying again while leadership
//!   moves, within a deadline. Every leader-only request goes through it.
//! - `writes` — proposals from any member, forwarded ones on the leader, NOSPACE admission.
//! - `reads` — linearizable read barriers (ReadIndex), one per round of waiting reads.
//! - `leases` — lease grants and revokes, and the leader's lessor (expiry, keep-alive,
//!   time-to-live).
//! - `membership` — member add / remove / promote with etcd's policy, publish, joining,
//!   leadership transfer.
//! - `convert` — members in etcd's form.
//! - `compactor` — auto compaction on etcd's schedule (`--auto-compaction-*`), by the leader.
//! - `corruption` — etcd's corruption checks: a restarting member's HashKV against its peers'
//!   (`--experimental-initial-corrupt-check`), and the leader's periodic comparison that
//!   raises the CORRUPT alarm (`--experimental-corrupt-check-time`).
//!
//! The peer service (`crate::peer_service`) reaches the leader-side handlers through its
//! `LeaderSide` trait, which the node implements here; it does not depend on the node.

pub mod compactor;
mod convert;
mod corruption;
mod leases;
mod lifecycle;
mod membership;
mod reads;
mod routing;
mod writes;

use std::sync::Arc;

use openraft::rt::WatchReceiver;
use raftkv_proto::etcdserverpb::Member as PbMember;
use raftkv_proto::raftkvpb::{
    ChangeMembersRequest, ChangeMembersResponse, ClusterInfoRequest, Command, CommandResponse,
    MemberInfo,
};
use raftkv_storage::MvccStore;
use tokio::sync::watch;

use convert::members_of;
pub use convert::{hex, pb_member};
pub(crate) use corruption::hash_off_runtime;

use crate::config::NodeConfig;
use crate::error::NodeError;
use crate::network::Channels;
use crate::peer_service::LeaderSide;
use crate::space::Space;
use crate::types::{Member, Raft};

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
    /// The peer service and the background tasks (publish, disk watch), ended by shutdown.
    tasks: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// When a leader's append (or heartbeat) last reached this member: milliseconds since
    /// `started`, 0 for never.
    leader_contact: std::sync::atomic::AtomicU64,
    started: std::time::Instant,
    /// The leader's timing of leases (`leases`).
    lessor: std::sync::Mutex<leases::Lessor>,
    /// What this member measures for `/metrics`.
    metrics: Arc<crate::metrics::NodeMetrics>,
    /// Linearizable reads waiting for a read index (`reads::read_loop`).
    reads: tokio::sync::mpsc::UnboundedSender<reads::ReadWaiter>,
    /// Read barriers in flight (one alone runs its own round).
    reads_in_flight: std::sync::atomic::AtomicUsize,
    /// The thread running compactions' physical deletes, stopped by shutdown.
    compactor: std::sync::Mutex<Option<raftkv_storage::Compactor>>,
}

impl RaftNode {
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

    /// What this member measures, for `/metrics`.
    pub fn metrics(&self) -> &Arc<crate::metrics::NodeMetrics> {
        &self.metrics
    }

    /// The MVCC store (reads go to it directly once a barrier allows).
    pub fn store(&self) -> &Arc<MvccStore> {
        &self.store
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

    /// A member of the membership this member knows.
    fn member(&self, id: u64) -> Option<Member> {
        self.membership_config().membership().get_node(&id).cloned()
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

    /// Whether this member has a leader now, as etcd's `monitorLeader` sees it: it leads and
    /// a quorum acknowledged it within an election timeout, or it follows a leader whose
    /// appends reached it within one and a half. (openraft keeps naming the last leader
    /// while a member that lost its quorum cannot win an election.)
    pub fn has_leader(&self) -> bool {
        let window = self.config.election_timeout.as_millis() as u64 * 3 / 2;
        let m = self.raft.metrics().borrow_watched().clone();
        match m.current_leader {
            None => false,
            Some(leader) if leader == self.id => {
                use openraft::Instant as _;
                // A sole voter is its own quorum (openraft does not refresh the ack then).
                voters_of(m.membership_config.membership()).len() <= 1
                    || m.last_quorum_acked
                        .as_ref()
                        .is_some_and(|at| at.elapsed().as_millis() as u64 <= window)
            }
            Some(_) => {
                use std::sync::atomic::Ordering;
                let contact = self.leader_contact.load(Ordering::Acquire);
                let now = self.started.elapsed().as_millis() as u64;
                contact != 0 && now.saturating_sub(contact) <= window
            }
        }
    }
}

/// The leader-side handlers the peer service calls.
impl LeaderSide for RaftNode {
    async fn forward(&self, cmd: Command) -> Result<(CommandResponse, Option<u64>), NodeError> {
        self.write_as_leader(cmd).await
    }

    async fn read_index(&self) -> Result<u64, NodeError> {
        self.read_index_as_leader().await
    }

    async fn change_members(
        &self,
        req: ChangeMembersRequest,
    ) -> Result<ChangeMembersResponse, NodeError> {
        self.change_members_as_leader(req).await
    }

    async fn publish(&self, info: MemberInfo) -> Result<ChangeMembersResponse, NodeError> {
        self.publish_as_leader(info).await
    }

    fn cluster_info(&self, req: &ClusterInfoRequest) -> Result<(u64, u64), NodeError> {
        RaftNode::cluster_info(self, req)
    }

    fn is_voter(&self) -> bool {
        RaftNode::is_voter(self)
    }

    async fn lease_renew(&self, id: i64) -> Result<i64, NodeError> {
        self.lease_renew_as_leader(id).await
    }

    async fn lease_time_to_live(
        &self,
        id: i64,
        keys: bool,
    ) -> Result<raftkv_proto::etcdserverpb::LeaseTimeToLiveResponse, NodeError> {
        self.lease_ttl_as_leader(id, keys).await
    }

    fn heard_from_leader(&self) {
        let now = (self.started.elapsed().as_millis() as u64).max(1);
        self.leader_contact
            .store(now, std::sync::atomic::Ordering::Release);
    }
}

/// Voters of `m`, for the checks that count them.
fn voters_of(m: &openraft::Membership<u64, Member>) -> std::collections::BTreeSet<u64> {
    m.voter_ids().collect()
}
