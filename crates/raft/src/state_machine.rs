//! openraft's `RaftStateMachine` over the MVCC store, and snapshots as files.
//!
//! Every entry is applied in one sled batch together with its log id (and, for membership
//! entries, the membership), so after a crash the store knows exactly where to resume.
//! Snapshots are raftkv-storage snapshot files in `<data>/snap`; the newest one is kept, the
//! rest deleted once a newer one is durable.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use futures_util::{Stream, StreamExt};
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, RaftSnapshotBuilder};
use raftkv_proto::raftkvpb::CommandResponse;
use raftkv_storage::snapshot;
use raftkv_storage::{AppliedState, MvccStore};
use tracing::{info, warn};

use crate::metrics::NodeMetrics;
use crate::space::Space;
use crate::types::{
    LogId, Refusal, Response, SnapshotMeta, StoredMembership, TypeConfig, decode, encode,
};

/// An entry whose apply takes this long is logged (etcd's threshold).
const SLOW_APPLY: std::time::Duration = std::time::Duration::from_millis(100);

/// A snapshot file on disk, as openraft's snapshot data.
#[derive(Debug, Clone)]
pub struct SnapshotFile {
    /// Path of the file.
    pub path: PathBuf,
}

/// A built snapshot: the file plus openraft's metadata for it.
pub type Snapshot = openraft::alias::SnapshotOf<TypeConfig, SnapshotFile>;

/// The state machine: the MVCC store and the snapshot directory.
#[derive(Clone)]
pub struct StateMachine {
    store: Arc<MvccStore>,
    snap_dir: PathBuf,
    /// The newest durable snapshot.
    current: Arc<Mutex<Option<Snapshot>>>,
    /// Free space on the data dir, when watched: policy snapshots wait for room.
    space: Option<Arc<Space>>,
    /// Apply timings for `/metrics`.
    metrics: Arc<NodeMetrics>,
}

impl StateMachine {
    /// Wraps `store`, keeping snapshots in `snap_dir` (created if needed); picks up the
    /// newest valid snapshot file already there.
    pub fn open(store: Arc<MvccStore>, snap_dir: &Path) -> io::Result<Self> {
        std::fs::create_dir_all(snap_dir)?;
        let mut newest: Option<Snapshot> = None;
        for entry in std::fs::read_dir(snap_dir)? {
            let path = entry?.path();
            if path.extension().is_none_or(|e| e != "snap") {
                // Leftovers of interrupted builds or transfers.
                let _ = std::fs::remove_file(&path);
                continue;
            }
            match snapshot::read_info(&path)
                .map_err(io::Error::other)
                .and_then(|info| meta_of(&info.meta))
            {
                Ok(meta)
                    if newest
                        .as_ref()
                        .is_none_or(|n| n.meta.last_log_id < meta.last_log_id) =>
                {
                    newest = Some(Snapshot {
                        meta,
                        snapshot: SnapshotFile { path },
                    });
                }
                Ok(_) => {}
                Err(e) => warn!(path = %path.display(), error = %e, "ignoring unreadable snapshot"),
            }
        }
        Ok(Self {
            store,
            snap_dir: snap_dir.to_path_buf(),
            current: Arc::new(Mutex::new(newest)),
            space: None,
            metrics: Arc::default(),
        })
    }

    /// Postpones policy snapshots while `space` has no room for one.
    pub fn with_space(mut self, space: Arc<Space>) -> Self {
        self.space = Some(space);
        self
    }

    /// Records apply timings into `metrics` (the member's).
    pub fn with_metrics(mut self, metrics: Arc<NodeMetrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// Whether a new snapshot fits beside the current one with the reserve kept: it takes
    /// about as much as the last one (or, the first time, as half the store).
    fn room_for_snapshot(&self) -> bool {
        let Some(space) = &self.space else {
            return true;
        };
        let last = self
            .current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .and_then(|s| std::fs::metadata(&s.snapshot.path).ok())
            .map(|m| m.len());
        let need = last.unwrap_or_else(|| self.store.size_on_disk() / 2);
        space.has_room_for(need.saturating_add(need / 4))
    }

    /// The MVCC store this state machine applies to.
    pub fn store(&self) -> &Arc<MvccStore> {
        &self.store
    }

    /// Where a received snapshot is written before it is installed.
    pub fn incoming_path(&self) -> PathBuf {
        self.snap_dir
            .join(format!("incoming-{}.part", std::process::id()))
    }

    fn set_current(&self, snap: Snapshot) {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(old) = current.replace(snap.clone())
            && old.snapshot.path != snap.snapshot.path
        {
            let _ = std::fs::remove_file(&old.snapshot.path);
        }
    }

    fn file_name(meta: &SnapshotMeta) -> String {
        match &meta.last_log_id {
            Some(id) => format!("{:016x}-{:016x}.snap", id.leader_id.term, id.index),
            None => "0000000000000000-0000000000000000.snap".into(),
        }
    }
}

/// Gives the calling thread (and the threads it starts) the lowest CPU priority, nice 19.
/// Best effort: a failure leaves the priority as it was.
fn lowest_priority() {
    // On Linux the nice value is a thread's own; PRIO_PROCESS with a thread id sets it.
    let tid = unsafe { libc::gettid() };
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 19) };
    if rc != 0 {
        warn!(error = %io::Error::last_os_error(), "cannot lower the snapshot build's priority");
    }
}

/// openraft's view of a snapshot file's header.
pub(crate) fn meta_of(meta: &snapshot::SnapshotMeta) -> io::Result<SnapshotMeta> {
    let last_log_id: Option<LogId> = if meta.applied.is_empty() {
        None
    } else {
        decode(&meta.applied)?
    };
    let last_membership: StoredMembership = if meta.membership.is_empty() {
        StoredMembership::default()
    } else {
        decode(&meta.membership)?
    };
    Ok(SnapshotMeta {
        last_log_id,
        last_membership,
    })
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    type SnapshotData = SnapshotFile;

    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        let store = self.store.clone();
        let tmp = self.snap_dir.join("building.part");
        let started = std::time::Instant::now();
        // On a thread of its own at the lowest priority (its encoding threads inherit it),
        // so that it yields the CPU to the member's serving threads: the build reads every
        // version in the store, for seconds, and nothing waits for it but the log's purge.
        // It still slows the member while it runs (docs/benchmarks.md, "Stalls").
        let (done, built) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("raftkv-snapshot".into())
            .spawn(move || {
                lowest_priority();
                let _ = done.send(snapshot::build(&store, &tmp).map(|info| (info, tmp)));
            })?;
        let info = built
            .await
            .map_err(|_| io::Error::other("the snapshot build thread ended without a result"))?
            .map_err(io::Error::other)?;
        let (info, tmp) = info;
        self.metrics
            .snapshot_build
            .observe_duration(started.elapsed());
        let size = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        self.metrics.snapshot_bytes.set(size(info.total_size));
        self.metrics.snapshot_raw_bytes.set(size(info.raw_size));
        let meta = meta_of(&info.meta)?;
        let path = self.snap_dir.join(Self::file_name(&meta));
        std::fs::rename(&tmp, &path)?;
        info!(
            revision = info.meta.revision,
            keys = info.key_count,
            bytes = info.total_size,
            "snapshot built"
        );
        let snap = Snapshot {
            meta,
            snapshot: SnapshotFile { path },
        };
        self.set_current(snap.clone());
        Ok(snap)
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotData = SnapshotFile;
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        let state = self.store.applied_state().map_err(io::Error::other)?;
        let applied: Option<LogId> = match &state.applied {
            Some(bytes) => decode(bytes)?,
            None => None,
        };
        let membership = match &state.membership {
            Some(bytes) => decode(bytes)?,
            None => StoredMembership::default(),
        };
        Ok((applied, membership))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>>
            + Unpin
            + openraft::OptionalSend,
    {
        // Entries handed over together are applied together: all but the last leave their
        // metadata unrecorded, and the last records it for the whole run (one metadata
        // write per run, not per entry; the log stays the write-ahead log).
        let mut run = Vec::new();
        while let Some(item) = entries.next().await {
            run.push(item?);
        }
        let run_started = (!run.is_empty()).then(std::time::Instant::now);
        let last = run.len().saturating_sub(1);
        for (i, (entry, responder)) in run.into_iter().enumerate() {
            let log_id = entry.log_id;
            let applied = Some(encode(&Some(log_id))?);
            let response = match &entry.payload {
                EntryPayload::Blank => {
                    let state = AppliedState {
                        applied,
                        membership: None,
                        index: log_id.index,
                    };
                    self.store
                        .set_applied_state(&state)
                        .map_err(io::Error::other)?;
                    Response(Ok(CommandResponse::default()))
                }
                EntryPayload::Membership(m) => {
                    let stored = StoredMembership::new(Some(log_id), m.clone());
                    let state = AppliedState {
                        applied,
                        membership: Some(encode(&stored)?),
                        index: log_id.index,
                    };
                    self.store
                        .set_applied_state(&state)
                        .map_err(io::Error::other)?;
                    Response(Ok(CommandResponse::default()))
                }
                EntryPayload::Normal(request) => {
                    let state = AppliedState {
                        applied,
                        membership: None,
                        index: log_id.index,
                    };
                    let started = std::time::Instant::now();
                    let applied = if i == last {
                        self.store.apply(&request.0, &state)
                    } else {
                        self.store.apply_unrecorded(&request.0, &state)
                    };
                    let took = started.elapsed();
                    self.metrics.apply_entry.observe_duration(took);
                    if took >= SLOW_APPLY {
                        self.metrics.slow_applies.inc();
                        // etcd logs the same ("apply request took too long").
                        warn!(?took, index = log_id.index, "apply request took too long");
                    }
                    match applied {
                        Ok(resp) => Response(Ok(resp)),
                        Err(e) if e.is_request_error() => Response(Err(Refusal {
                            code: e.code().into(),
                            message: e.to_string(),
                        })),
                        Err(e) => return Err(io::Error::other(e)),
                    }
                }
            };
            if let Some(responder) = responder {
                responder.send(response);
            }
        }
        if let Some(started) = run_started {
            self.metrics
                .backend_commit
                .observe_duration(started.elapsed());
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    /// A snapshot that openraft needs (`force`, for a follower whose log is purged) is built
    /// whatever the space; one that the snapshot policy asks for waits while it may not fit,
    /// since a failed build stops Raft.
    async fn try_create_snapshot_builder(&mut self, force: bool) -> Option<Self::SnapshotBuilder> {
        if !force && !self.room_for_snapshot() {
            warn!("postponing a snapshot: not enough free disk space for it");
            return None;
        }
        Some(self.clone())
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        file: SnapshotFile,
    ) -> Result<(), io::Error> {
        let store = self.store.clone();
        let path = file.path.clone();
        let info = tokio::task::spawn_blocking(move || snapshot::restore(&path, &store))
            .await
            .map_err(io::Error::other)?
            .map_err(io::Error::other)?;
        if meta_of(&info.meta)?.last_log_id != meta.last_log_id {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "snapshot file does not match its meta",
            ));
        }
        let dest = self.snap_dir.join(Self::file_name(meta));
        std::fs::rename(&file.path, &dest)?;
        info!(
            revision = info.meta.revision,
            keys = info.key_count,
            "snapshot installed"
        );
        self.set_current(Snapshot {
            meta: meta.clone(),
            snapshot: SnapshotFile { path: dest },
        });
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        Ok(self
            .current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nice_of_this_thread() -> i32 {
        let tid = unsafe { libc::gettid() };
        // getpriority returns the nice value (-1 is also a legal one; errno tells them apart,
        // and a thread's own id never fails).
        unsafe { libc::getpriority(libc::PRIO_PROCESS, tid as libc::id_t) }
    }

    #[test]
    fn the_build_thread_and_the_threads_it_starts_run_at_the_lowest_priority() {
        let before = nice_of_this_thread();
        let (own, inherited) = std::thread::spawn(|| {
            lowest_priority();
            // The snapshot writer encodes blocks on scoped threads: they must inherit it.
            let inherited = std::thread::scope(|s| s.spawn(nice_of_this_thread).join().unwrap());
            (nice_of_this_thread(), inherited)
        })
        .join()
        .unwrap();
        assert_eq!((own, inherited), (19, 19));
        // The test's own thread (and so the member's other threads) keep theirs.
        assert_eq!(nice_of_this_thread(), before);
    }
}
