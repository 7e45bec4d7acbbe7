//! openraft's `RaftStateMachine` over the MVCC store, and snapshots.
//!
//! Every entry is applied in one sled batch together with its log id (and, for membership
//! entries, the membership), so after a crash the store knows exactly where to resume.
//!
//! A Raft snapshot is the store itself, as etcd's is its backend: taking one (every
//! `--snapshot-count` entries) records the applied point and flushes sled
//! ([`MvccStore::persist`]), after which the log may be purged up to 5,000 entries before
//! that point (etcd's `SnapshotCatchUpEntries`, `--raftkv-snapshot-catchup-entries`). No
//! file is written then. A file is written only when one is needed: when the leader sends a
//! snapshot to a follower whose log it purged, of the store as it is at that moment
//! (pinned between two applies, written while applies go on). It is kept and sent again to
//! whoever needs one next, until a newer snapshot is taken past it. A follower restores a
//! received file and deletes it.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::{Stream, StreamExt};
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, RaftSnapshotBuilder};
use raftkv_proto::raftkvpb::CommandResponse;
use raftkv_storage::snapshot;
use raftkv_storage::{AppliedState, MvccStore, PinnedPoint};
use tracing::{info, warn};

use crate::metrics::NodeMetrics;
use crate::space::Space;
use crate::types::{
    LogId, Refusal, Response, SnapshotMeta, StoredMembership, TypeConfig, decode, encode,
};

/// An entry whose apply takes this long is logged (etcd's threshold).
const SLOW_APPLY: std::time::Duration = std::time::Duration::from_millis(100);

/// openraft's snapshot data: a file received from the leader, or a point of this member's
/// store that is written to a file when it is sent (see the module doc).
#[derive(Debug, Clone)]
pub struct SnapshotFile {
    source: Source,
}

#[derive(Debug, Clone)]
enum Source {
    File(PathBuf),
    Pending(Arc<Pending>),
}

/// A point of the store, pinned against compaction until it is written out.
struct Pending {
    store: Arc<MvccStore>,
    point: PinnedPoint,
    meta: SnapshotMeta,
    /// Where the file is written (this member's snapshot dir).
    dir: PathBuf,
    files: Arc<Mutex<Files>>,
    metrics: Arc<NodeMetrics>,
}

/// What the snapshot dir holds and what a sent file must cover.
#[derive(Debug, Default)]
struct Files {
    /// The point of the last snapshot taken (or of the store when it opened): the leader's
    /// log may be purged up to it, so a snapshot sent must reach at least that far.
    taken: Option<LogId>,
    /// The last file written for a follower, kept so that the next follower (or the next
    /// attempt, after a failed transfer) is sent it again while it still covers `taken`
    /// rather than a new one written: with a million keys a file takes many seconds.
    sent: Option<(SnapshotMeta, PathBuf)>,
}

impl Files {
    /// Keeps `file` as the last one written, deleting the one it replaces.
    fn keep(&mut self, meta: SnapshotMeta, file: PathBuf) {
        if let Some((_, old)) = self.sent.replace((meta, file)) {
            let _ = std::fs::remove_file(old);
        }
    }

    /// Forgets (and deletes) the last file written if it no longer covers `taken`.
    fn drop_stale(&mut self) {
        if self
            .sent
            .as_ref()
            .is_some_and(|(meta, _)| meta.last_log_id < self.taken)
            && let Some((_, old)) = self.sent.take()
        {
            let _ = std::fs::remove_file(old);
        }
    }
}

/// A snapshot: its data plus openraft's metadata for it.
pub type Snapshot = openraft::alias::SnapshotOf<TypeConfig, SnapshotFile>;

/// Names the files written for followers apart.
static WRITTEN: AtomicU64 = AtomicU64::new(0);

impl SnapshotFile {
    /// A snapshot file at `path` (one received from the leader).
    pub fn file(path: PathBuf) -> Self {
        Self {
            source: Source::File(path),
        }
    }

    /// The snapshot as an open file, to be read from its start. A pending point is written
    /// out first, on a thread of its own at the lowest CPU priority, and kept as the last
    /// file sent (see `Files`); its pin on compaction goes as soon as it is written.
    pub async fn open(self) -> io::Result<std::fs::File> {
        let pending = match self.source {
            Source::File(path) => return std::fs::File::open(path),
            Source::Pending(pending) => pending,
        };
        let (done, written) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("raftkv-snapshot".into())
            .spawn(move || {
                lowest_priority();
                let _ = done.send(pending.write());
            })?;
        written
            .await
            .map_err(|_| io::Error::other("the snapshot writer thread ended without a result"))?
    }

    /// The file's path if this is a received file.
    pub fn path(&self) -> Option<&Path> {
        match &self.source {
            Source::File(path) => Some(path),
            Source::Pending(_) => None,
        }
    }
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending")
            .field("revision", &self.point.point.revision)
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl Pending {
    /// Writes the pinned point to a new file in `dir` named `<what>-<pid>-<n>.part` (a
    /// crash's leftover is deleted when the member opens again) and returns its path; a
    /// failed write leaves nothing behind.
    fn write_file(&self, what: &str) -> io::Result<PathBuf> {
        let n = WRITTEN.fetch_add(1, Ordering::Relaxed);
        let path = self
            .dir
            .join(format!("{what}-{}-{n}.part", std::process::id()));
        let started = std::time::Instant::now();
        let info = match snapshot::build_scratch_at(&self.store, &self.point, &path) {
            Ok(info) => info,
            Err(e) => {
                let _ = std::fs::remove_file(&path);
                return Err(io::Error::other(e));
            }
        };
        self.metrics
            .snapshot_write
            .observe_duration(started.elapsed());
        let size = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        self.metrics.snapshot_bytes.set(size(info.total_size));
        self.metrics.snapshot_raw_bytes.set(size(info.raw_size));
        info!(
            revision = info.meta.revision,
            keys = info.key_count,
            bytes = info.total_size,
            took = ?started.elapsed(),
            "snapshot written for a follower"
        );
        Ok(path)
    }

    /// Writes the pinned point to a file, keeps it as the last one sent if it is the newest,
    /// and opens it (see [`SnapshotFile::open`]).
    fn write(&self) -> io::Result<std::fs::File> {
        let path = self.write_file("sending")?;
        let file = std::fs::File::open(&path);
        let mut files = self.files.lock().unwrap_or_else(|e| e.into_inner());
        if file.is_ok()
            && files
                .sent
                .as_ref()
                .is_none_or(|(m, _)| m.last_log_id < self.meta.last_log_id)
        {
            files.keep(self.meta.clone(), path);
            files.drop_stale();
        } else {
            let _ = std::fs::remove_file(&path);
        }
        file
    }
}

/// The state machine: the MVCC store and the snapshot directory.
#[derive(Clone)]
pub struct StateMachine {
    store: Arc<MvccStore>,
    snap_dir: PathBuf,
    /// Free space on the data dir, when watched: policy snapshots wait while it is low.
    space: Option<Arc<Space>>,
    /// Apply timings for `/metrics`.
    metrics: Arc<NodeMetrics>,
    /// The last snapshot's point and the last file sent.
    files: Arc<Mutex<Files>>,
}

impl StateMachine {
    /// Wraps `store`, keeping snapshot files in `snap_dir` (created if needed).
    ///
    /// Files left there are leftovers of interrupted transfers, and deleted; or, in a data
    /// dir of an older raftkv that kept its snapshots as files, the newest snapshot. That
    /// one is restored first if the store is behind it (the log before it is purged), and
    /// the store flushed, so that the store alone covers the purged log from then on.
    pub fn open(store: Arc<MvccStore>, snap_dir: &Path) -> io::Result<Self> {
        std::fs::create_dir_all(snap_dir)?;
        let mut newest: Option<(SnapshotMeta, PathBuf)> = None;
        let mut files = Vec::new();
        for entry in std::fs::read_dir(snap_dir)? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "snap") {
                match snapshot::read_info(&path)
                    .map_err(io::Error::other)
                    .and_then(|info| meta_of(&info.meta))
                {
                    Ok(meta)
                        if newest
                            .as_ref()
                            .is_none_or(|(n, _)| n.last_log_id < meta.last_log_id) =>
                    {
                        newest = Some((meta, path.clone()));
                    }
                    Ok(_) => {}
                    Err(e) => {
                        warn!(path = %path.display(), error = %e, "ignoring unreadable snapshot")
                    }
                }
            }
            files.push(path);
        }
        if let Some((meta, path)) = newest {
            if meta.last_log_id > stored_log_id(&store)? {
                info!(path = %path.display(), "restoring the store from an older raftkv's snapshot file");
                snapshot::restore(&path, &store).map_err(io::Error::other)?;
            }
            store.persist().map_err(io::Error::other)?;
        }
        for path in files {
            let _ = std::fs::remove_file(&path);
        }
        // openraft takes the store's applied point for the last snapshot when it starts.
        let taken = stored_log_id(&store)?;
        Ok(Self {
            store,
            snap_dir: snap_dir.to_path_buf(),
            space: None,
            metrics: Arc::default(),
            files: Arc::new(Mutex::new(Files { taken, sent: None })),
        })
    }

    /// Postpones policy snapshots while `space` is below its reserve.
    pub fn with_space(mut self, space: Arc<Space>) -> Self {
        self.space = Some(space);
        self
    }

    /// Records apply timings into `metrics` (the member's).
    pub fn with_metrics(mut self, metrics: Arc<NodeMetrics>) -> Self {
        self.metrics = metrics;
        self
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
}

/// Gives the calling thread (and the threads it starts) the lowest CPU priority, nice 19.
/// Best effort: a failure leaves the priority as it was.
fn lowest_priority() {
    // On Linux the nice value is a thread's own; PRIO_PROCESS with a thread id sets it.
    let tid = unsafe { libc::gettid() };
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 19) };
    if rc != 0 {
        warn!(error = %io::Error::last_os_error(), "cannot lower the snapshot writer's priority");
    }
}

/// The last log id applied to `store`.
fn stored_log_id(store: &MvccStore) -> io::Result<Option<LogId>> {
    match store.applied_state().map_err(io::Error::other)?.applied {
        Some(bytes) => decode(&bytes),
        None => Ok(None),
    }
}

/// openraft's view of a snapshot file's header.
pub(crate) fn meta_of(meta: &snapshot::SnapshotMeta) -> io::Result<SnapshotMeta> {
    meta_of_applied(&meta.applied, &meta.membership)
}

/// openraft's snapshot meta from the stored applied log id and membership (empty: none).
fn meta_of_applied(applied: &[u8], membership: &[u8]) -> io::Result<SnapshotMeta> {
    let last_log_id: Option<LogId> = if applied.is_empty() {
        None
    } else {
        decode(applied)?
    };
    let last_membership: StoredMembership = if membership.is_empty() {
        StoredMembership::default()
    } else {
        decode(membership)?
    };
    Ok(SnapshotMeta {
        last_log_id,
        last_membership,
    })
}

fn meta_of_state(state: &AppliedState) -> io::Result<SnapshotMeta> {
    meta_of_applied(
        state.applied.as_deref().unwrap_or_default(),
        state.membership.as_deref().unwrap_or_default(),
    )
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    type SnapshotData = SnapshotFile;

    /// Takes a snapshot: the store made durable up to the applied point (see the module
    /// doc), on a blocking thread while applies go on. Its data is that point, pinned, to be
    /// written out if this very snapshot is sent (openraft keeps only the meta).
    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        let store = self.store.clone();
        let started = std::time::Instant::now();
        let point = tokio::task::spawn_blocking(move || store.persist())
            .await
            .map_err(io::Error::other)?
            .map_err(io::Error::other)?;
        self.metrics
            .snapshot_build
            .observe_duration(started.elapsed());
        let snap = self.pending(point)?;
        {
            let mut files = self.files();
            files.taken = files.taken.max(snap.meta.last_log_id);
            files.drop_stale();
        }
        info!(
            index = snap.meta.last_log_id.as_ref().map_or(0, |id| id.index),
            took = ?started.elapsed(),
            "snapshot taken"
        );
        Ok(snap)
    }
}

impl StateMachine {
    /// `point` as a snapshot to be written out when it is read.
    fn pending(&self, point: PinnedPoint) -> io::Result<Snapshot> {
        let meta = meta_of_state(&point.point.applied)?;
        Ok(Snapshot {
            meta: meta.clone(),
            snapshot: SnapshotFile {
                source: Source::Pending(Arc::new(Pending {
                    store: self.store.clone(),
                    point,
                    meta,
                    dir: self.snap_dir.clone(),
                    files: self.files.clone(),
                    metrics: self.metrics.clone(),
                })),
            },
        })
    }

    fn files(&self) -> std::sync::MutexGuard<'_, Files> {
        self.files.lock().unwrap_or_else(|e| e.into_inner())
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

    /// A snapshot that openraft needs (`force`, at startup for a log purged without one) is
    /// taken whatever the space; one that the snapshot policy asks for waits while the data
    /// dir is below its reserve, since a failed flush stops Raft.
    async fn try_create_snapshot_builder(&mut self, force: bool) -> Option<Self::SnapshotBuilder> {
        if !force && self.space.as_ref().is_some_and(|s| s.is_low()) {
            warn!("postponing a snapshot: the data dir is below its free-space reserve");
            return None;
        }
        Some(self.clone())
    }

    /// Restores the store from a received snapshot file, which the caller deletes (a
    /// pending point, from another member's store in openraft's storage tests, is written
    /// out first).
    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        data: SnapshotFile,
    ) -> Result<(), io::Error> {
        let store = self.store.clone();
        // A pending point (another member's store, in openraft's storage tests) is written
        // to a scratch file of its own first.
        let (path, scratch) = match data.source {
            Source::File(path) => (path, None),
            Source::Pending(pending) => {
                let path = tokio::task::spawn_blocking(move || pending.write_file("installing"))
                    .await
                    .map_err(io::Error::other)??;
                (path.clone(), Some(path))
            }
        };
        // A follower that fell behind has the snapshot merged into its store (only what it
        // lacks is written); an empty store has it restored.
        let restored = tokio::task::spawn_blocking(move || snapshot::install(&path, &store))
            .await
            .map_err(io::Error::other);
        if let Some(scratch) = &scratch {
            let _ = std::fs::remove_file(scratch);
        }
        let (info, merged) = restored?.map_err(io::Error::other)?;
        if meta_of(&info.meta)?.last_log_id != meta.last_log_id {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "snapshot file does not match its meta",
            ));
        }
        match merged {
            Some(m) => info!(
                revision = info.meta.revision,
                keys = info.key_count,
                kept = m.kept,
                written = m.written,
                removed = m.removed,
                dropped = m.dropped,
                "snapshot installed (merged)"
            ),
            None => info!(
                revision = info.meta.revision,
                keys = info.key_count,
                "snapshot installed"
            ),
        }
        // The store is flushed at the snapshot's point, which openraft now takes for its
        // last snapshot (the log up to it may go).
        let mut files = self.files();
        files.taken = files.taken.max(meta.last_log_id);
        files.drop_stale();
        Ok(())
    }

    /// The last file sent to a follower while it still covers the last snapshot taken (see
    /// `Files`); else the store as it is now, pinned between two applies (this runs on
    /// openraft's state machine task): a snapshot at the current applied point, written out
    /// only if it is sent. None before anything was applied.
    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        {
            let mut files = self.files();
            files.drop_stale();
            if let Some((meta, path)) = &files.sent {
                return Ok(Some(Snapshot {
                    meta: meta.clone(),
                    snapshot: SnapshotFile::file(path.clone()),
                }));
            }
        }
        let point = self.store.pin_snapshot_point().map_err(io::Error::other)?;
        if point.point.applied.applied.is_none() {
            return Ok(None);
        }
        Ok(Some(self.pending(point)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raftkv_proto::etcdserverpb::PutRequest;
    use raftkv_proto::raftkvpb::{Command, command};

    fn put_at(store: &MvccStore, key: &str, index: u64) {
        let applied = AppliedState {
            applied: Some(encode(&Some(LogId::new_term_index(2, index))).unwrap()),
            membership: None,
            index,
        };
        let cmd = Command {
            op: Some(command::Op::Put(PutRequest {
                key: key.as_bytes().to_vec().into(),
                value: b"v".to_vec().into(),
                ..Default::default()
            })),
            ..Default::default()
        };
        store.apply(&cmd, &applied).unwrap();
    }

    fn open_store(dir: &Path) -> Arc<MvccStore> {
        Arc::new(MvccStore::open(dir, &Default::default()).unwrap())
    }

    /// An older raftkv kept its snapshots as files and purged the log behind them, with its
    /// store possibly behind the file after a crash. Opened by this one, a store behind the
    /// newest file is restored from it; a store ahead of it is kept; the files go either way.
    #[test]
    fn an_older_data_dirs_snapshot_file_is_restored_if_the_store_is_behind_it() {
        let dir = tempfile::tempdir().unwrap();
        let snap_dir = dir.path().join("snap");
        std::fs::create_dir_all(&snap_dir).unwrap();
        let old = open_store(&dir.path().join("old"));
        for i in 1..=20 {
            put_at(&old, &format!("k{i:02}"), i);
        }
        snapshot::build(
            &old,
            &snap_dir.join("0000000000000002-0000000000000014.snap"),
        )
        .unwrap();
        std::fs::write(snap_dir.join("incoming-1.part"), b"leftover").unwrap();
        // Bytes that are no snapshot, named as a newer one: not trusted, deleted.
        std::fs::write(
            snap_dir.join("0000000000000009-00000000000000ff.snap"),
            b"RKSNAP not a snapshot",
        )
        .unwrap();

        // Behind (empty): restored to the file's point.
        let behind = open_store(&dir.path().join("behind"));
        StateMachine::open(behind.clone(), &snap_dir).unwrap();
        assert_eq!(behind.revision(), 21);
        let applied: Option<LogId> =
            decode(&behind.applied_state().unwrap().applied.unwrap()).unwrap();
        assert_eq!(applied, Some(LogId::new_term_index(2, 20)));
        assert_eq!(std::fs::read_dir(&snap_dir).unwrap().count(), 0);

        // Ahead: kept as it is.
        snapshot::build(
            &old,
            &snap_dir.join("0000000000000002-0000000000000014.snap"),
        )
        .unwrap();
        let ahead = open_store(&dir.path().join("ahead"));
        for i in 1..=30 {
            put_at(&ahead, &format!("a{i:02}"), i);
        }
        StateMachine::open(ahead.clone(), &snap_dir).unwrap();
        assert_eq!(ahead.revision(), 31);
        assert_eq!(std::fs::read_dir(&snap_dir).unwrap().count(), 0);
    }

    /// What is sent is the store at the moment it was asked for, whatever is applied while
    /// the file is written; nothing is left in the snapshot dir.
    #[tokio::test]
    async fn the_current_snapshot_is_the_store_when_asked_for() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(&dir.path().join("db"));
        let mut sm = StateMachine::open(store.clone(), &dir.path().join("snap")).unwrap();
        assert!(sm.get_current_snapshot().await.unwrap().is_none());
        for i in 1..=10 {
            put_at(&store, &format!("k{i:02}"), i);
        }
        let snap = sm.get_current_snapshot().await.unwrap().unwrap();
        assert_eq!(snap.meta.last_log_id, Some(LogId::new_term_index(2, 10)));
        for i in 11..=15 {
            put_at(&store, &format!("k{i:02}"), i);
        }
        let other = open_store(&dir.path().join("other"));
        let mut follower = StateMachine::open(other.clone(), &dir.path().join("snap2")).unwrap();
        // As the network sends it and the follower's peer service receives it.
        let mut sent = snap.snapshot.open().await.unwrap();
        let received = dir.path().join("received.part");
        io::copy(&mut sent, &mut std::fs::File::create(&received).unwrap()).unwrap();
        follower
            .install_snapshot(&snap.meta, SnapshotFile::file(received))
            .await
            .unwrap();
        assert_eq!(other.revision(), 11);
        let files = |d: &str| std::fs::read_dir(dir.path().join(d)).unwrap().count();
        assert_eq!(files("snap2"), 0);
        // The file written is kept, and sent again while no snapshot was taken past it.
        assert_eq!(files("snap"), 1);
        let again = sm.get_current_snapshot().await.unwrap().unwrap();
        assert_eq!(again.meta.last_log_id, Some(LogId::new_term_index(2, 10)));
        assert!(again.snapshot.path().is_some());
        // A snapshot taken now: the store flushed, its point the last applied; the kept
        // file no longer covers it and goes.
        let snap = sm.build_snapshot().await.unwrap();
        assert_eq!(snap.meta.last_log_id, Some(LogId::new_term_index(2, 15)));
        assert_eq!(files("snap"), 0);
        let now = sm.get_current_snapshot().await.unwrap().unwrap();
        assert_eq!(now.meta.last_log_id, Some(LogId::new_term_index(2, 15)));
        assert!(now.snapshot.path().is_none());
    }

    fn nice_of_this_thread() -> i32 {
        let tid = unsafe { libc::gettid() };
        // getpriority returns the nice value (-1 is also a legal one; errno tells them apart,
        // and a thread's own id never fails).
        unsafe { libc::getpriority(libc::PRIO_PROCESS, tid as libc::id_t) }
    }

    #[test]
    fn the_writer_thread_and_the_threads_it_starts_run_at_the_lowest_priority() {
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
