//! The etcd v3 API's logic, independent of transport: the gRPC services call it, and so does
//! an embedding program through [`crate::Server::api`] (no network in between).

use std::sync::Arc;

use raftkv_proto::etcdserverpb::alarm_request::AlarmAction;
use raftkv_proto::etcdserverpb::{
    AlarmMember, AlarmRequest, AlarmResponse, AlarmType, CompactionRequest, CompactionResponse,
    DeleteRangeRequest, DeleteRangeResponse, HashKvRequest, HashKvResponse, HashResponse, Member,
    PutRequest, PutResponse, RangeRequest, RangeResponse, ResponseHeader, StatusResponse,
    TxnRequest, TxnResponse, WatchRequest, WatchResponse,
};
use raftkv_proto::raftkvpb::{
    ChangeMembersRequest, ChangeMembersResponse, Command, command, command_response,
};
use raftkv_raft::error::EtcdError;
use raftkv_raft::node::hex;
use raftkv_raft::trace;
use raftkv_raft::{NodeError, RaftNode};
use raftkv_storage::MvccError;
use raftkv_storage::mvcc::auth::permit::Access;
use raftkv_storage::mvcc::validate;
use tracing::Instrument;

/// The version reported by `Maintenance/Status`: the etcd API level served, with raftkv's
/// own version as build metadata (ignored by semver comparisons).
pub const VERSION: &str = concat!("3.4.23+raftkv.", env!("CARGO_PKG_VERSION"));

/// The etcd server version `/version` reports: the API level alone, as clients such as
/// etcd3gw parse it into integers.
pub const ETCD_VERSION: &str = "3.4.23";

/// The etcd API of one member.
#[derive(Clone)]
pub struct EtcdApi {
    node: Arc<RaftNode>,
    watch: Arc<crate::watch::WatchHub>,
    watch_config: crate::watch::WatchConfig,
    client_metrics: Arc<crate::metrics::ClientMetrics>,
    /// `--bcrypt-cost`: the cost new passwords are hashed at.
    bcrypt_cost: u32,
    /// `--auth-token`: the tokens Authenticate hands out and requests are checked against.
    tokens: crate::token_provider::TokenProvider,
    /// Turns to read the whole store for a client: Hash and HashKV share one, and each
    /// Snapshot holds one of [`SNAPSHOT_STREAMS`] from its build to its stream's end. A
    /// turn goes with the work to the blocking thread, so a client that gives up and asks
    /// again cannot set several whole-store reads (or several store-sized files) going
    /// behind its back.
    pub(crate) turns: WholeStoreTurns,
}

/// Snapshot builds and streams served at once; more wait for a turn.
pub const SNAPSHOT_STREAMS: usize = 2;

/// How long a Snapshot stream may wait for its client to take the next piece before it is
/// ended with an error (`--raftkv-snapshot-stall-timeout`): a client that stops reading
/// would otherwise hold one of the [`SNAPSHOT_STREAMS`] turns, and a store-sized file, for
/// as long as it keeps its connection open.
pub const SNAPSHOT_STALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// See [`EtcdApi`]'s `turns`.
#[derive(Clone)]
pub(crate) struct WholeStoreTurns {
    pub(crate) hash: Arc<tokio::sync::Semaphore>,
    pub(crate) snapshot: Arc<tokio::sync::Semaphore>,
    /// See [`SNAPSHOT_STALL_TIMEOUT`].
    pub(crate) snapshot_stall: std::time::Duration,
}

impl Default for WholeStoreTurns {
    fn default() -> Self {
        Self {
            hash: Arc::new(tokio::sync::Semaphore::new(1)),
            snapshot: Arc::new(tokio::sync::Semaphore::new(SNAPSHOT_STREAMS)),
            snapshot_stall: SNAPSHOT_STALL_TIMEOUT,
        }
    }
}

/// Waits for a turn from `turns` (never closed, so an error is a member going away).
pub(crate) async fn take_turn(
    turns: &Arc<tokio::sync::Semaphore>,
) -> Result<tokio::sync::OwnedSemaphorePermit, NodeError> {
    turns
        .clone()
        .acquire_owned()
        .await
        .map_err(|_| NodeError::STOPPED)
}

fn refused(e: MvccError) -> NodeError {
    NodeError::from(e)
}

fn learner_refusal() -> NodeError {
    NodeError::Etcd(EtcdError::LearnerRpc)
}

impl EtcdApi {
    /// The API over a running member (watchers get etcd's default settings).
    pub fn new(node: Arc<RaftNode>) -> Self {
        Self::with_watch_config(node, crate::watch::WatchConfig::default())
    }

    /// The API over a running member, its watch streams set up by `watch_config`.
    pub fn with_watch_config(node: Arc<RaftNode>, watch_config: crate::watch::WatchConfig) -> Self {
        let watch = crate::watch::WatchHub::start(node.store().clone());
        Self {
            node,
            watch,
            watch_config,
            client_metrics: Arc::default(),
            bcrypt_cost: crate::auth::BCRYPT_COST,
            tokens: Default::default(),
            turns: WholeStoreTurns::default(),
        }
    }

    /// The API hashing new passwords at `cost` (`--bcrypt-cost`; etcd's default 10, and as
    /// etcd, a cost outside bcrypt's 4..=31 falls back to it with a warning).
    pub fn with_bcrypt_cost(mut self, cost: u32) -> Self {
        self.bcrypt_cost = if (4..=31).contains(&cost) {
            cost
        } else {
            tracing::warn!(
                given = cost,
                "use default bcrypt cost instead of the invalid given cost"
            );
            crate::auth::BCRYPT_COST
        };
        self
    }

    /// The API ending a Snapshot stream whose client took nothing for `stall`
    /// (`--raftkv-snapshot-stall-timeout`; [`SNAPSHOT_STALL_TIMEOUT`] by default).
    pub fn with_snapshot_stall_timeout(mut self, stall: std::time::Duration) -> Self {
        self.turns.snapshot_stall = stall;
        self
    }

    /// The cost new passwords are hashed at.
    pub fn bcrypt_cost(&self) -> u32 {
        self.bcrypt_cost
    }

    /// The API handing out and checking `tokens` (`--auth-token`; simple by default).
    pub fn with_token_provider(mut self, tokens: crate::token_provider::TokenProvider) -> Self {
        self.tokens = tokens;
        self
    }

    /// The token provider (`--auth-token`).
    pub fn token_provider(&self) -> &crate::token_provider::TokenProvider {
        &self.tokens
    }

    /// The API with the client port's counters set up as `metrics` (`--metrics`).
    pub fn with_client_metrics(mut self, metrics: crate::metrics::ClientMetrics) -> Self {
        self.client_metrics = Arc::new(metrics);
        self
    }

    /// What the client port counts (gRPC calls, bytes, health checks), for `/metrics`.
    pub fn client_metrics(&self) -> &Arc<crate::metrics::ClientMetrics> {
        &self.client_metrics
    }

    /// The member's watchers.
    pub fn watch_hub(&self) -> &Arc<crate::watch::WatchHub> {
        &self.watch
    }

    /// Serves one `Watch` stream in-process (the JSON gateway, locks and elections, the
    /// embedding API): etcd's answers to `requests` come out of the returned channel.
    /// `require_leader`: clientv3's `WithRequireLeader` (see [`crate::watch::serve`]).
    pub fn watch<S>(
        &self,
        requests: S,
        require_leader: bool,
    ) -> tokio::sync::mpsc::Receiver<Result<WatchResponse, tonic::Status>>
    where
        S: futures_util::Stream<Item = Result<WatchRequest, tonic::Status>>
            + Send
            + Unpin
            + 'static,
    {
        let mut answers = self.watch_answers(requests, require_leader);
        // One answer in hand at most: a slow reader holds the stream back as before.
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    answer = answers.recv() => {
                        let Some(answer) = answer else { return };
                        let answer = answer.map(crate::watch::WatchAnswer::into_response);
                        if tx.send(answer).await.is_err() {
                            return;
                        }
                    }
                    // The reader went away: dropping `answers` ends the stream.
                    () = tx.closed() => return,
                }
            }
        });
        rx
    }

    /// Serves one `Watch` stream as the gRPC service sends it: events shared by many
    /// watchers come as they are, encoded once (see [`crate::watch::WatchAnswer`]).
    pub fn watch_answers<S>(
        &self,
        requests: S,
        require_leader: bool,
    ) -> tokio::sync::mpsc::Receiver<Result<crate::watch::WatchAnswer, tonic::Status>>
    where
        S: futures_util::Stream<Item = Result<WatchRequest, tonic::Status>>
            + Send
            + Unpin
            + 'static,
    {
        crate::watch::serve(self.clone(), self.watch_config, requests, require_leader)
    }

    /// The member underneath.
    pub fn node(&self) -> &Arc<RaftNode> {
        &self.node
    }

    /// Resolves once this member has known no leader at three election-timeout checks in a
    /// row: etcd's `monitorLeader`, which then ends every stream opened with clientv3's
    /// `WithRequireLeader` ("etcdserver: no leader").
    pub async fn leader_lost(self) {
        let election = self
            .node
            .config()
            .election_timeout
            .max(std::time::Duration::from_millis(10));
        let mut check = tokio::time::interval_at(tokio::time::Instant::now() + election, election);
        let mut leaderless = 0;
        loop {
            check.tick().await;
            if self.node.has_leader() {
                leaderless = 0;
            } else {
                leaderless += 1;
            }
            if leaderless >= 3 {
                return;
            }
        }
    }

    /// Runs one client request in a span that names it, this member and its term, under a
    /// new request id that follows the request to the leader (see raftkv-raft's `trace`).
    async fn traced<T>(
        &self,
        method: &'static str,
        work: impl std::future::Future<Output = Result<T, NodeError>>,
    ) -> Result<T, NodeError> {
        let id = trace::new_request_id(self.node.id());
        let span = tracing::debug_span!(
            "request",
            request = %format!("{id:x}"),
            member = %hex(self.node.id()),
            term = self.node.term(),
            method
        );
        let result = trace::with_request_id(id, work.instrument(span.clone())).await;
        if let Err(e) = &result {
            tracing::debug!(parent: &span, error = %e, "refused");
        }
        result
    }

    /// A full header around `revision`.
    pub fn header(&self, revision: i64) -> Option<ResponseHeader> {
        Some(ResponseHeader {
            cluster_id: self.node.cluster_id(),
            member_id: self.node.id(),
            revision,
            raft_term: self.node.term(),
        })
    }

    fn fill(&self, header: &mut Option<ResponseHeader>) {
        let revision = header
            .as_ref()
            .map_or_else(|| self.node.store().revision(), |h| h.revision);
        *header = self.header(revision);
    }

    async fn propose(&self, op: command::Op) -> Result<command_response::Op, NodeError> {
        if self.node.is_learner() {
            return Err(learner_refusal());
        }
        let cmd = Command {
            op: Some(op),
            caller: Some(self.command_caller().await?),
        };
        // The request itself was checked by the caller (put, delete_range, txn, compact).
        validate::check_size(&cmd, self.node.config().max_request_bytes).map_err(refused)?;
        let resp = self.node.write(cmd).await?;
        resp.op
            .ok_or_else(|| NodeError::internal("empty response from the state machine"))
    }

    /// KV/Range.
    pub async fn range(&self, req: RangeRequest) -> Result<RangeResponse, NodeError> {
        self.traced("Range", self.range_here(req)).await
    }

    async fn range_here(&self, req: RangeRequest) -> Result<RangeResponse, NodeError> {
        validate::check_range(&req).map_err(refused)?;
        if !req.serializable {
            if self.node.is_learner() {
                return Err(learner_refusal());
            }
            self.node.read_barrier().await?;
        }
        let auth = self
            .read_permit(|t, c| t.check_op(c, &req.key, &req.range_end, Access::Read))
            .await?;
        let mut resp = self.node.store().range(&req).map_err(refused)?;
        self.read_still_valid(auth)?;
        self.fill(&mut resp.header);
        Ok(resp)
    }

    /// KV/Put.
    pub async fn put(&self, req: PutRequest) -> Result<PutResponse, NodeError> {
        self.traced("Put", self.put_here(req)).await
    }

    async fn put_here(&self, req: PutRequest) -> Result<PutResponse, NodeError> {
        self.check_quota(quota::cost_put(&req)).await?;
        validate::check_put(&req).map_err(refused)?;
        match self.propose(command::Op::Put(req)).await? {
            command_response::Op::Put(mut resp) => {
                self.fill(&mut resp.header);
                Ok(resp)
            }
            other => Err(mismatch(&other)),
        }
    }

    /// KV/DeleteRange.
    pub async fn delete_range(
        &self,
        req: DeleteRangeRequest,
    ) -> Result<DeleteRangeResponse, NodeError> {
        self.traced("DeleteRange", self.delete_range_here(req))
            .await
    }

    async fn delete_range_here(
        &self,
        req: DeleteRangeRequest,
    ) -> Result<DeleteRangeResponse, NodeError> {
        validate::check_delete(&req).map_err(refused)?;
        match self.propose(command::Op::DeleteRange(req)).await? {
            command_response::Op::DeleteRange(mut resp) => {
                self.fill(&mut resp.header);
                Ok(resp)
            }
            other => Err(mismatch(&other)),
        }
    }

    /// KV/Txn. A txn that only reads is served locally (after a read barrier unless every
    /// range in it is serializable), as etcd does.
    pub async fn txn(&self, req: TxnRequest) -> Result<TxnResponse, NodeError> {
        self.traced("Txn", self.txn_here(req)).await
    }

    async fn txn_here(&self, req: TxnRequest) -> Result<TxnResponse, NodeError> {
        // As etcd: every txn, a read-only one too (its cost is 0, refused once over quota).
        self.check_quota(quota::cost_txn(&req)).await?;
        validate::check_txn(&req, self.node.config().max_txn_ops).map_err(refused)?;
        if validate::is_read_only(&req) {
            if !validate::is_serializable(&req) {
                if self.node.is_learner() {
                    return Err(learner_refusal());
                }
                self.node.read_barrier().await?;
            }
            let auth = self
                .read_permit(|t, c| self.node.store().permit_txn(t, c, &req))
                .await?;
            let mut resp = self.node.store().txn_read_only(&req).map_err(refused)?;
            self.read_still_valid(auth)?;
            self.fill(&mut resp.header);
            return Ok(resp);
        }
        match self.propose(command::Op::Txn(req)).await? {
            command_response::Op::Txn(mut resp) => {
                self.fill(&mut resp.header);
                Ok(resp)
            }
            other => Err(mismatch(&other)),
        }
    }

    /// KV/Compact.
    pub async fn compact(&self, req: CompactionRequest) -> Result<CompactionResponse, NodeError> {
        self.traced("Compact", self.compact_here(req)).await
    }

    async fn compact_here(&self, req: CompactionRequest) -> Result<CompactionResponse, NodeError> {
        let (revision, physical) = (req.revision, req.physical);
        match self.propose(command::Op::Compaction(req)).await? {
            command_response::Op::Compaction(mut resp) => {
                // The apply only took the revision; with `physical` the answer waits for
                // this member's deletes, as etcd's does (no deadline there either: the
                // client's own ends the wait).
                while physical && self.node.store().compaction_finished() < revision {
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                }
                self.fill(&mut resp.header);
                Ok(resp)
            }
            other => Err(mismatch(&other)),
        }
    }

    /// Maintenance/Alarm: list (linearizable, as etcd answers it through the log), raise or
    /// clear an alarm. The answer has no header: etcd 3.4's applier builds it without one
    /// and its Maintenance service does not add one.
    pub async fn alarm(&self, req: AlarmRequest) -> Result<AlarmResponse, NodeError> {
        self.traced("Alarm", self.alarm_here(req)).await
    }

    async fn alarm_here(&self, req: AlarmRequest) -> Result<AlarmResponse, NodeError> {
        if req.action() == AlarmAction::Get {
            if self.node.is_learner() {
                return Err(learner_refusal());
            }
            self.node.read_barrier().await?;
            return Ok(AlarmResponse {
                header: None,
                alarms: self
                    .node
                    .store()
                    .alarms()
                    .into_iter()
                    .map(|(member_id, alarm)| AlarmMember { member_id, alarm })
                    .collect(),
            });
        }
        validate::check_alarm(&req).map_err(refused)?;
        // etcd 3.4 lets anyone raise an alarm; a NOSPACE raised by a stranger makes the
        // cluster read-only, so with auth on only root may raise one here.
        if req.action() == AlarmAction::Activate {
            self.require_admin().await?;
        }
        match self.propose(command::Op::Alarm(req)).await? {
            command_response::Op::Alarm(mut resp) => {
                resp.header = None;
                Ok(resp)
            }
            other => Err(mismatch(&other)),
        }
    }

    /// Maintenance/HashKV: etcd's `HashByRev` over this member's store (see
    /// `raftkv_storage::mvcc` `hash`), on a blocking thread since it reads every version,
    /// one hash at a time (see `turns`).
    pub async fn hash_kv(&self, req: HashKvRequest) -> Result<HashKvResponse, NodeError> {
        self.traced("HashKV", async {
            self.require_admin_maintenance().await?;
            let turn = take_turn(&self.turns.hash).await?;
            let store = self.node.store().clone();
            let h = tokio::task::spawn_blocking(move || {
                let _turn = turn;
                store.hash_kv(req.revision)
            })
            .await
            .map_err(|e| NodeError::internal(format!("hashing the store: {e}")))?
            .map_err(refused)?;
            Ok(HashKvResponse {
                header: self.header(h.revision),
                hash: h.hash,
                compact_revision: raftkv_raft::etcd_compact_revision(h.compact_revision),
            })
        })
        .await
    }

    /// Maintenance/Hash: a hash of the member's whole replicated state (see
    /// `raftkv_storage::mvcc` `hash`), on a blocking thread, one hash at a time (see
    /// `turns`).
    pub async fn hash(&self) -> Result<HashResponse, NodeError> {
        self.traced("Hash", async {
            self.require_admin_maintenance().await?;
            let turn = take_turn(&self.turns.hash).await?;
            let store = self.node.store().clone();
            let (hash, revision) = tokio::task::spawn_blocking(move || {
                let _turn = turn;
                store.hash_all()
            })
            .await
            .map_err(|e| NodeError::internal(format!("hashing the store: {e}")))?
            .map_err(refused)?;
            Ok(HashResponse {
                header: self.header(revision),
                hash,
            })
        })
        .await
    }

    /// etcd's quota check (`v3rpc/quota.go`), before a put, txn or lease grant is looked
    /// at: if the store's bytes in use plus the request's estimated `cost` reach
    /// `--quota-backend-bytes`, this member's NOSPACE alarm is raised through the log
    /// (writes that take space are then refused on every member until `alarm disarm`) and
    /// the request is refused with etcd's "database space exceeded".
    async fn check_quota(&self, cost: u64) -> Result<(), NodeError> {
        let Some(quota) = self.node.config().quota_backend_bytes else {
            return Ok(());
        };
        if self.node.store().size_in_use().saturating_add(cost) < quota {
            return Ok(());
        }
        let nospace = AlarmType::Nospace as i32;
        if !self
            .node
            .store()
            .alarms()
            .contains(&(self.node.id(), nospace))
        {
            tracing::warn!(
                quota,
                in_use = self.node.store().size_in_use(),
                "over the backend quota: raising the NOSPACE alarm"
            );
            let raise = Command {
                op: Some(command::Op::Alarm(AlarmRequest {
                    action: AlarmAction::Activate as i32,
                    member_id: self.node.id(),
                    alarm: nospace,
                })),
                ..Default::default()
            };
            // As etcd, the refusal does not wait on the alarm's outcome.
            if let Err(e) = self.node.write(raise).await {
                tracing::debug!(error = %e, "raising the NOSPACE alarm failed");
            }
        }
        Err(refused(MvccError::NoSpace))
    }

    /// Maintenance/Status.
    pub fn status(&self) -> StatusResponse {
        let s = self.node.status();
        let size = self.node.store().size_on_disk() as i64;
        // As etcd lists them: no leader, then each alarm in protobuf's compact text form.
        let mut errors = Vec::new();
        if s.leader == 0 {
            errors.push(NodeError::NO_LEADER.to_string());
        }
        for (member, alarm) in self.node.store().alarms() {
            let name = AlarmType::try_from(alarm).map_or("UNKNOWN", |a| a.as_str_name());
            errors.push(format!("memberID:{member} alarm:{name} "));
        }
        StatusResponse {
            header: self.header(self.node.store().revision()),
            version: VERSION.into(),
            db_size: size,
            leader: s.leader,
            raft_index: s.commit_index,
            raft_term: s.term,
            raft_applied_index: s.applied_index,
            errors,
            db_size_in_use: self.node.store().size_in_use() as i64,
            is_learner: s.is_learner,
        }
    }

    /// Cluster/MemberList.
    pub fn members(&self) -> Vec<Member> {
        self.node.members()
    }

    /// Cluster/MemberAdd, MemberRemove, MemberPromote.
    pub async fn change_members(
        &self,
        req: ChangeMembersRequest,
    ) -> Result<ChangeMembersResponse, NodeError> {
        self.traced("MemberChange", self.change_members_here(req))
            .await
    }

    async fn change_members_here(
        &self,
        req: ChangeMembersRequest,
    ) -> Result<ChangeMembersResponse, NodeError> {
        // etcd's `checkMembershipOperationPermission`.
        self.require_admin().await?;
        self.node.change_members(req).await
    }
}

/// The Lease service's logic (etcd's `v3rpc/lease.go` over the node's lessor).
impl EtcdApi {
    fn not_for_learners(&self) -> Result<(), NodeError> {
        if self.node.is_learner() {
            return Err(learner_refusal());
        }
        Ok(())
    }

    /// Lease/LeaseGrant.
    pub async fn lease_grant(
        &self,
        req: raftkv_proto::etcdserverpb::LeaseGrantRequest,
    ) -> Result<raftkv_proto::etcdserverpb::LeaseGrantResponse, NodeError> {
        self.traced("LeaseGrant", async {
            self.check_quota(quota::LEASE_OVERHEAD).await?;
            self.not_for_learners()?;
            let caller = self.command_caller().await?;
            let mut resp = self.node.lease_grant(&req, Some(caller)).await?;
            self.fill(&mut resp.header);
            Ok(resp)
        })
        .await
    }

    /// Lease/LeaseRevoke.
    pub async fn lease_revoke(
        &self,
        req: raftkv_proto::etcdserverpb::LeaseRevokeRequest,
    ) -> Result<raftkv_proto::etcdserverpb::LeaseRevokeResponse, NodeError> {
        self.traced("LeaseRevoke", async {
            self.not_for_learners()?;
            let caller = self.command_caller().await?;
            let mut resp = self.node.lease_revoke(req.id, Some(caller)).await?;
            self.fill(&mut resp.header);
            Ok(resp)
        })
        .await
    }

    /// One keep-alive of a LeaseKeepAlive stream: a lease that does not exist (or has run
    /// out) gets TTL 0, as etcd answers; other errors end the stream.
    pub async fn lease_keep_alive(
        &self,
        id: i64,
    ) -> Result<raftkv_proto::etcdserverpb::LeaseKeepAliveResponse, NodeError> {
        self.not_for_learners()?;
        let ttl = match self.node.lease_renew(id).await {
            Ok(ttl) => ttl,
            // Refused here (this member leads) or by the leader for a follower.
            Err(NodeError::Refused(r)) if r.message == MvccError::LeaseNotFound.to_string() => 0,
            Err(NodeError::Remote(s))
                if s.code() == tonic::Code::NotFound
                    && s.message() == MvccError::LeaseNotFound.to_string() =>
            {
                0
            }
            Err(e) => return Err(e),
        };
        Ok(raftkv_proto::etcdserverpb::LeaseKeepAliveResponse {
            header: self.header(self.node.store().revision()),
            id,
            ttl,
        })
    }

    /// Lease/LeaseTimeToLive.
    pub async fn lease_time_to_live(
        &self,
        req: raftkv_proto::etcdserverpb::LeaseTimeToLiveRequest,
    ) -> Result<raftkv_proto::etcdserverpb::LeaseTimeToLiveResponse, NodeError> {
        self.traced("LeaseTimeToLive", async {
            self.not_for_learners()?;
            // etcd 3.4 answers anyone, keys included (CVE-2023-32082); as etcd 3.5.9 fixed
            // it, with auth on the caller must be allowed to read every key of the lease.
            if self.node.store().auth().enabled {
                let store = self.node.store().clone();
                let keys = store.lease_keys(req.id).map_err(refused)?;
                let auth = self
                    .read_permit(|t, c| {
                        keys.iter()
                            .try_for_each(|k| t.check_op(c, k, b"", Access::Read))
                    })
                    .await?;
                self.read_still_valid(auth)?;
            }
            let mut resp = self.node.lease_time_to_live(req.id, req.keys).await?;
            self.fill(&mut resp.header);
            Ok(resp)
        })
        .await
    }

    /// Lease/LeaseLeases: the leases this member has applied.
    pub async fn lease_leases(
        &self,
    ) -> Result<raftkv_proto::etcdserverpb::LeaseLeasesResponse, NodeError> {
        self.not_for_learners()?;
        Ok(raftkv_proto::etcdserverpb::LeaseLeasesResponse {
            header: self.header(self.node.store().revision()),
            leases: self
                .node
                .lease_ids()
                .into_iter()
                .map(|id| raftkv_proto::etcdserverpb::LeaseStatus { id })
                .collect(),
        })
    }
}

fn mismatch(op: &command_response::Op) -> NodeError {
    NodeError::Internal(format!(
        "state machine answered with the wrong response kind: {op:?}"
    ))
}

/// etcd's request cost estimates for the quota check (`etcdserver/quota.go`).
mod quota {
    use raftkv_proto::etcdserverpb::request_op::Request;
    use raftkv_proto::etcdserverpb::{PutRequest, RequestOp, TxnRequest};

    /// A lease's estimated cost.
    pub const LEASE_OVERHEAD: u64 = 64;
    /// A key's metadata's estimated cost.
    const KV_OVERHEAD: u64 = 256;

    pub fn cost_put(req: &PutRequest) -> u64 {
        KV_OVERHEAD + req.key.len() as u64 + req.value.len() as u64
    }

    /// The costlier branch's puts (nested txns count nothing, as in etcd).
    pub fn cost_txn(req: &TxnRequest) -> u64 {
        let branch = |ops: &[RequestOp]| -> u64 {
            ops.iter()
                .map(|op| match &op.request {
                    Some(Request::RequestPut(put)) => cost_put(put),
                    _ => 0,
                })
                .sum()
        };
        branch(&req.success).max(branch(&req.failure))
    }
}

#[cfg(test)]
mod quota_tests {
    use raftkv_proto::etcdserverpb::request_op::Request;
    use raftkv_proto::etcdserverpb::{PutRequest, RequestOp, TxnRequest};

    use super::quota::{cost_put, cost_txn};

    fn put(key: &str, value: &str) -> RequestOp {
        RequestOp {
            request: Some(Request::RequestPut(PutRequest {
                key: key.as_bytes().to_vec().into(),
                value: value.as_bytes().to_vec().into(),
                ..Default::default()
            })),
        }
    }

    #[test]
    fn costs_are_etcds_estimates() {
        assert_eq!(
            cost_put(&PutRequest {
                key: "k".into(),
                value: "vv".into(),
                ..Default::default()
            }),
            256 + 3
        );
        // The costlier branch; nested txns and other ops count nothing; read-only is 0.
        let nested = RequestOp {
            request: Some(Request::RequestTxn(TxnRequest {
                success: vec![put("big", &"x".repeat(1000))],
                ..Default::default()
            })),
        };
        let txn = TxnRequest {
            success: vec![put("a", "1"), nested],
            failure: vec![put("b", "2"), put("c", "3")],
            ..Default::default()
        };
        assert_eq!(cost_txn(&txn), 2 * (256 + 2));
        assert_eq!(cost_txn(&TxnRequest::default()), 0);
    }
}
