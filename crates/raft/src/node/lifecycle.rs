//! A member's life: start (open the data dir, bootstrap or join, start Raft and the peer
//! service), the background tasks that publish it and watch its disk, and shutdown.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Weak};
use std::time::Duration;

use openraft::SnapshotPolicy;
use openraft::error::RaftError;
use openraft::rt::WatchReceiver;
use raftkv_proto::raftkvpb::{ClusterInfoRequest, Command, MemberInfo};
use raftkv_storage::layout::{self, Identity};
use raftkv_storage::log::{LogConfig, RaftLogStore};

use raftkv_storage::{MvccConfig, MvccStore};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{info, warn};

/// Most entries in one AppendEntries (openraft's default is 300); replication also stops a
/// message at [`crate::REPLICATION_BATCH_BYTES`]. A follower catching up on its log takes
/// it in fewer, larger messages, each one WAL write and fdatasync.
const MAX_PAYLOAD_ENTRIES: u64 = 4096;

use super::routing::IfCallFails;
use super::{RaftNode, hex};
use crate::config::{ClusterState, NodeConfig, cluster_id, member_id};
use crate::error::NodeError;
use crate::log_store::LogStore;
use crate::metrics::NodeMetrics;
use crate::network::{Channels, NetworkFactory};
use crate::peer_service::PeerService;
use crate::space::Space;
use crate::state_machine::StateMachine;
use crate::types::{Member, Raft, StoredMembership, decode};

impl RaftNode {
    /// Starts a member: opens (or creates) its data, starts Raft, serves the peer service on
    /// `peer_listener`, and bootstraps or joins the cluster if the data dir is new. A data
    /// dir that already holds a member ignores the bootstrap settings, as etcd does.
    pub async fn start(
        config: NodeConfig,
        peer_listener: TcpListener,
    ) -> Result<Arc<Self>, NodeError> {
        let member_dir = layout::member_dir(&config.data_dir);
        std::fs::create_dir_all(&member_dir)
            .map_err(NodeError::storage("creating the data dir"))?;
        let channels = Channels::new(config.heartbeat_interval.max(Duration::from_millis(50)) * 5)
            .with_tls(config.peer_tls.dial.clone());
        let identity = layout::read_identity(&config.data_dir)
            .map_err(|e| NodeError::Config(e.to_string()))?
            .map(|i| (i.member, i.cluster));
        let wal_dir = config.wal_dir();
        let wal_existed = wal_dir.exists();
        let store = Arc::new(
            MvccStore::open(
                &layout::db_dir(&config.data_dir),
                &MvccConfig {
                    value_segment_bytes: config.value_segment_bytes,
                    ..MvccConfig::default()
                },
            )
            .map_err(NodeError::storage("opening the store"))?,
        );
        check_data_dir(&config.data_dir, &wal_dir, identity, wal_existed, &store)?;
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
        // etcd checks a member that already holds data, before it serves or starts Raft.
        if identity.is_some() && config.initial_corrupt_check {
            super::corruption::initial_check(&store, &channels, id, config.request_timeout).await?;
        }
        let wal = Arc::new(
            RaftLogStore::open(&wal_dir, &LogConfig::default())
                .map_err(NodeError::storage("opening the WAL"))?,
        );
        // The WAL's file system too, when it is another (`--wal-dir`): a full WAL disk
        // would stop the member.
        let space = Arc::new(Space::watching(
            &[config.data_dir.as_path(), wal_dir.as_path()],
            space_reserve(config.max_request_bytes),
        ));
        let metrics = Arc::new(NodeMetrics::default());
        let sm = StateMachine::open(store.clone(), &layout::snap_dir(&config.data_dir))
            .map_err(NodeError::storage("opening the snapshot dir"))?
            .with_space(space.clone())
            .with_metrics(metrics.clone());
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
            // As etcd keeps `SnapshotCatchUpEntries` behind a snapshot: with none kept, a
            // learner or follower that took a snapshot while the leader took the next found
            // the log gone again and was sent snapshot after snapshot, never within reach of
            // the leader (a learner could then not be promoted).
            max_in_snapshot_log_to_keep: config.snapshot_catchup_entries,
            max_payload_entries: MAX_PAYLOAD_ENTRIES,
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
        .map_err(|e| NodeError::Config(format!("invalid raft config: {e}")))?;
        let raft = Raft::new(
            id,
            Arc::new(raft_config),
            NetworkFactory::new(channels.clone(), metrics.clone()),
            LogStore::new(wal.clone()),
            sm.clone(),
        )
        .await
        .map_err(NodeError::internal)?;

        if let Some(members) = bootstrap {
            match raft.initialize(members).await {
                Ok(()) => {
                    info!(member = %hex(id), cluster = %hex(cluster_id), "bootstrapped a new cluster")
                }
                Err(RaftError::APIError(openraft::error::InitializeError::NotAllowed(_))) => {}
                Err(e) => return Err(NodeError::internal(format!("bootstrap failed: {e}"))),
            }
        }
        let identity = Identity {
            member: id,
            cluster: cluster_id,
        };
        layout::write_identity(&config.data_dir, identity)
            .map_err(NodeError::storage("writing the identity file"))?;

        // Compactions' physical deletes run beside the applies (and finish one a restart
        // interrupted).
        let compactor = store
            .start_compactor()
            .map_err(NodeError::storage("starting the compactor thread"))?;
        let (stop_peer, stop_rx) = watch::channel(false);
        let (reads, waiting_reads) = tokio::sync::mpsc::unbounded_channel();
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
            tasks: std::sync::Mutex::new(Vec::new()),
            leader_contact: std::sync::atomic::AtomicU64::new(0),
            started: std::time::Instant::now(),
            lessor: std::sync::Mutex::new(Default::default()),
            metrics,
            reads,
            reads_in_flight: std::sync::atomic::AtomicUsize::new(0),
            compactor: std::sync::Mutex::new(Some(compactor)),
        });
        let peer_tls = node.config.peer_tls.accept.clone();
        let service = PeerService::new(
            Arc::downgrade(&node),
            raft,
            sm,
            id,
            cluster_id,
            space,
            node.metrics.clone(),
        );
        let mut tasks = vec![
            tokio::spawn(service.serve(peer_listener, peer_tls, stop_rx)),
            tokio::spawn(publish_self(Arc::downgrade(&node))),
            tokio::spawn(watch_space(Arc::downgrade(&node))),
            tokio::spawn(super::leases::expire_leases(Arc::downgrade(&node))),
            tokio::spawn(measure(Arc::downgrade(&node), wal)),
            tokio::spawn(super::reads::read_loop(
                Arc::downgrade(&node),
                waiting_reads,
                node.stop_peer.subscribe(),
            )),
        ];
        if let Some(policy) = node.config.auto_compaction {
            tasks.push(tokio::spawn(super::compactor::auto_compact(
                Arc::downgrade(&node),
                policy,
                node.config.auto_compaction_revision_interval,
            )));
        }
        if let Some(every) = node.config.corrupt_check_interval {
            tasks.push(tokio::spawn(super::corruption::monitor(
                Arc::downgrade(&node),
                every,
            )));
        }
        *node.tasks.lock().unwrap_or_else(|e| e.into_inner()) = tasks;
        Ok(node)
    }

    /// Stops Raft, the peer service and the background tasks, and makes the store durable.
    ///
    /// It returns once nothing this member started still runs: the peer service (given two
    /// seconds to finish what it serves) and the background tasks are ended, so the store is
    /// held by nothing but this node, and an embedding program can start a member on the
    /// same data dir as soon as it drops it.
    pub async fn shutdown(&self) {
        let _ = self.stop_peer.send(true);
        let _ = self.raft.shutdown().await;
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        for mut task in tasks {
            if tokio::time::timeout(Duration::from_secs(2), &mut task)
                .await
                .is_err()
            {
                task.abort();
                let _ = task.await;
            }
        }
        // Its batch ends first (a batch is short; the join is off the runtime).
        let compactor = self
            .compactor
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let _ = tokio::task::spawn_blocking(move || drop(compactor)).await;
        if let Err(e) = self.store.flush() {
            warn!(error = %e, "flushing the store at shutdown failed");
        }
    }
}

fn millis(d: Duration) -> u64 {
    d.as_millis().max(1) as u64
}

/// The initial members from `--initial-cluster`, checked against this member's own URLs.
fn initial_members(config: &NodeConfig) -> Result<BTreeMap<u64, Member>, NodeError> {
    let bad = NodeError::Config;
    raftkv_storage::bootstrap::own_peer_urls(
        &config.initial_cluster,
        &config.name,
        &config.peer_urls,
    )
    .map_err(bad)?;
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
    let mut last_error = None;
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
            match client.cluster_info(req).await {
                Ok(resp) => {
                    let resp = resp.into_inner();
                    return Ok((resp.member_id, resp.cluster_id));
                }
                Err(status) => last_error = Some(format!("{name}: {}", with_causes(&status))),
            }
        }
        if Instant::now() >= deadline {
            // A refused TLS handshake, say, is worth naming: the usual hint would mislead.
            let last = last_error.map_or_else(String::new, |e| format!(" (last answer: {e})"));
            return Err(NodeError::Config(format!(
                "could not join: no member of --initial-cluster knows this member's peer URLs (add it with `member add` first){last}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A peer call's failure with what caused it (a refused TLS handshake shows only as
/// "operation was canceled" or "transport error" without its causes).
fn with_causes(status: &tonic::Status) -> String {
    let mut text = status.message().to_string();
    let mut cause = std::error::Error::source(status);
    while let Some(e) = cause {
        text.push_str(&format!(": {e}"));
        cause = e.source();
    }
    text
}

/// The free space a member keeps in hand (see [`crate::space`]): room for entries in flight
/// (a few of the largest requests), the alarm entry, and applying what is committed.
fn space_reserve(max_request_bytes: usize) -> u64 {
    (64 << 20) + 4 * max_request_bytes as u64
}

/// Watches the data dir's free space: raises this member's NOSPACE alarm through the log
/// when it drops below the reserve and clears it once twice the reserve is free again.
async fn watch_space(node: Weak<RaftNode>) {
    use raftkv_proto::etcdserverpb::alarm_request::AlarmAction;
    use raftkv_proto::etcdserverpb::{AlarmRequest, AlarmType};
    let mut announced = None;
    // Whether this member's NOSPACE alarm is the disk's to clear: one this task raised, or
    // found at start while the store is within its quota. An alarm raised for the quota
    // (`--quota-backend-bytes`) waits for `alarm disarm`, as in etcd.
    let mut disk_raised = None;
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let Some(node) = node.upgrade() else { return };
        if *node.stop_peer.borrow() {
            return;
        }
        let free = node.space.refresh();
        let mine = (node.id, AlarmType::Nospace as i32);
        let raised = node.store.alarms().contains(&mine);
        let within_quota = node
            .config
            .quota_backend_bytes
            .is_none_or(|q| node.store.size_in_use() < q);
        let ours = *disk_raised.get_or_insert(raised && within_quota);
        if !raised {
            disk_raised = Some(false);
        }
        let action = if node.space.is_low() && !raised {
            disk_raised = Some(true);
            AlarmAction::Activate
        } else if node.space.recovered() && raised && ours {
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
            ..Default::default()
        };
        if let Err(e) = node.write(cmd).await {
            tracing::debug!(error = %e, "changing the NOSPACE alarm failed; will retry");
        }
    }
}

/// Feeds `/metrics` what is measured by polling: leader changes (etcd counts each new
/// leader a member sees, the first one included) and the WAL's fsyncs.
async fn measure(node: Weak<RaftNode>, wal: Arc<RaftLogStore>) {
    let mut leader = None;
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let Some(node) = node.upgrade() else { return };
        if *node.stop_peer.borrow() {
            return;
        }
        let now = node.raft.metrics().borrow_watched().current_leader;
        if now.is_some() && now != leader {
            node.metrics.leader_changes.inc();
            leader = now;
        }
        let wal = wal.clone();
        if let Ok(stats) = tokio::task::spawn_blocking(move || wal.flush_stats()).await {
            node.metrics.note_wal(stats);
        }
    }
}

/// Keeps telling the leader this member's name and client URLs until the membership shows
/// them (etcd's "publish"), so `member list` can show every member's client URLs; then logs
/// etcd's readiness lines.
async fn publish_self(node: Weak<RaftNode>) {
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
        let deadline = Instant::now() + node.config.request_timeout;
        let result = node
            .on_leader(
                deadline,
                IfCallFails::Retry,
                || node.publish_as_leader(info.clone()),
                |mut leader, _| {
                    let info = info.clone();
                    async move { leader.publish(info).await.map(tonic::Response::into_inner) }
                },
            )
            .await;
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
    wal_dir: &Path,
    identity: Option<(u64, u64)>,
    wal_existed: bool,
    store: &MvccStore,
) -> Result<(), NodeError> {
    let state = store
        .applied_state()
        .map_err(NodeError::storage("reading the store's applied state"))?;
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
            return Err(NodeError::Config(format!(
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
        return Err(NodeError::Config(format!(
            "{} is missing: member {id:x} of cluster {cluster:x} has lost its Raft log and \
             vote, and restarting without them could vote twice in one term; {}",
            wal_dir.display(),
            recover(Some(id))
        )));
    }
    Ok(())
}
