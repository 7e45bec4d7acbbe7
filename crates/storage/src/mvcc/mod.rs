//! etcd's MVCC key-value model on sled.
//!
//! The store keeps every version of every key, stamped with a global revision that starts at
//! 1 and grows by one per write transaction that changes something; deletes write tombstones;
//! compaction drops versions no read can need any more. See `encoding` for the sled layout.
//!
//! Concurrency: one writer at a time (`apply`, serialised by a mutex — the Raft state
//! machine applies entries in order anyway) and lock-free readers. A reader fixes the
//! revision it reads at before it starts and ignores versions above it, so a batch being
//! written for the next revision cannot be half-seen; compaction's physical deletes and
//! restores wait for snapshot builders through `compaction_gate` (`gate`).
//!
//! - `encoding` — sled key and value layout.
//! - `range` — reads: `Range` with etcd's range_end conventions, filters, sort, limit.
//! - `apply` — writes: Put, DeleteRange, Txn, Compact, with a write overlay so a txn reads
//!   its own writes.
//! - `validate` — etcd's request checks that run before a request is proposed.
//! - `auth` — the auth store: users, roles, permissions, the enabled flag, auth revision.
//! - `lease` — the lease table: leases granted, their TTLs, the keys attached to them.
//! - `history` — the changes in revision order (an index kept with the records) and the
//!   [`WatchSink`] that applied writes are handed to.
//! - `hash` — HashKV and Hash for etcd's corruption check: CRC-32 over the records.
//! - `latest` — the writer's memory of recently written keys' newest versions (what a put
//!   carries over), so a put need not read them back from sled; with `seen`, a filter of
//!   every key the store may hold, so a put of a new key reads nothing.

mod apply;
pub mod auth;
mod compaction;
pub(crate) mod encoding;
mod gate;
mod hash;
mod history;
mod latest;
pub mod lease;
pub(crate) mod merge;
pub mod metrics;
mod range;
mod relocate;
mod seen;
mod sorted_history;
pub mod validate;

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};

use raftkv_proto::etcdserverpb::ResponseHeader;

use crate::error::MvccError;
use crate::values::{Position, ValueLog, ValuePtr};
use encoding::{META_ALARMS, META_COMPACTED, META_POINT, StoredValue, decode_i64};

pub use compaction::Compactor;
pub use gate::CompactionPin;
pub use hash::KvHash;
pub use history::{
    HistoryBatch, HistoryBatcher, HistoryLimits, WatchSink, decode_group, encode_group,
};
pub use merge::MergeCounts;
pub use range::RangeEnd;

/// Tuning for the sled database under the store.
#[derive(Debug, Clone)]
pub struct MvccConfig {
    /// sled page-cache budget in bytes. sled 0.34 holds well beyond it (its page table,
    /// node fragments: about 1.4 bytes of RSS per byte of budget here). A put inserts into
    /// the leaf that holds its key's newest versions, so the leaves written under a steady
    /// load are about one per key written; when they do not fit, nearly every insert reads
    /// its leaf back from the file and decodes it. 64 MiB (the budget on 2026-12-05) held the
    /// leaves of 10,000 keys with hundreds of versions each: 100 clients' puts over 90 s
    /// ran 12-15 % faster than with 16 MiB, for about 70 MiB more RSS per member
    /// (docs/benchmarks.md, "sled's cache against the hot set"). Back to 16 MiB on
    /// 2026-12-06: with values of 64 bytes or more in the value log, records are ~30 bytes
    /// and the hot set's leaves ~6 MB, while 64 MiB of such small items took ~380 MiB of
    /// RSS per member after 1M keys (230-240 with 16 MiB, at the same put rate). The
    /// operating system's page cache holds the files either way.
    pub cache_capacity: u64,
    /// How often sled writes dirty pages in the background (ms); `None` (the default) leaves
    /// it to sled's full buffers and explicit flushes. Durability of the data does not rest
    /// on it: the Raft log is the write-ahead log, replayed from the applied index, and a
    /// log prefix is purged only once a Raft snapshot has flushed sled past it
    /// ([`MvccStore::persist`]). A timed flush
    /// costs a sync_file_range wait that competed with the log's fdatasync on every write.
    pub flush_every_ms: Option<u64>,
    /// The size of a new value log segment (tests use small ones to make many).
    pub value_segment_bytes: u64,
}

impl Default for MvccConfig {
    fn default() -> Self {
        Self {
            cache_capacity: 16 << 20,
            flush_every_ms: None,
            value_segment_bytes: crate::values::SEGMENT_BYTES,
        }
    }
}

/// The Raft layer's bookkeeping stored atomically with the data it describes: opaque bytes
/// to this crate (the raft crate serialises its log id and membership into them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppliedState {
    /// The last applied log id, if any entry was applied.
    pub applied: Option<Vec<u8>>,
    /// The last membership config applied, if any.
    pub membership: Option<Vec<u8>>,
    /// The log index of the entry being applied (0 where unknown). Not stored: it names the
    /// simple tokens an Authenticate entry makes ("<prefix>.<index>", as etcd's).
    pub index: u64,
}

/// Active alarms: (member id, etcd `AlarmType` number), sorted.
pub type Alarms = Vec<(u64, i32)>;

/// What a snapshot takes from one instant of the store besides the data.
#[derive(Debug, Clone)]
pub struct SnapshotPoint {
    /// The revision.
    pub revision: i64,
    /// The Raft layer's applied state.
    pub applied: AppliedState,
    /// Active alarms.
    pub alarms: Alarms,
    /// The lease table.
    pub leases: Vec<(i64, lease::LeaseInfo)>,
    /// The auth table.
    pub auth: auth::SharedAuth,
}

/// A [`SnapshotPoint`] whose versions compaction leaves in place while it is held (see
/// [`MvccStore::pin_snapshot_point`]).
#[derive(Debug)]
pub struct PinnedPoint {
    /// The point.
    pub point: SnapshotPoint,
    /// The compacted revision at that point.
    pub compacted: i64,
    _pin: CompactionPin,
}

/// An etcd-semantics multi-version key-value store.
pub struct MvccStore {
    db: sled::Db,
    /// sled's directory, and the newest blob file (by log sequence number, its name) that
    /// [`MvccStore::persist`] fsynced.
    dir: std::path::PathBuf,
    blobs_synced: Mutex<i64>,
    /// The tree holding records and metadata; a restore swaps in a new one.
    tree: RwLock<sled::Tree>,
    /// Current revision: the revision of the last write, or 1 for an empty store.
    revision: AtomicI64,
    /// Compacted revision (0 if never compacted).
    compacted: AtomicI64,
    /// Serialises writers.
    writer: Mutex<()>,
    /// Recently written keys' newest versions; used and updated only under `writer`.
    latest: Mutex<latest::Latest>,
    /// Compaction's physical deletes and restores take it for writing; snapshot builders
    /// and hashes pin it for reading.
    compaction_gate: std::sync::Arc<gate::Gate>,
    /// Compaction's physical deletes, run after its apply (`compaction`).
    removal: compaction::Removal,
    /// The applied state of the last write, and whether it is not yet stored (writes made
    /// by [`MvccStore::apply_unrecorded`] since the last recording write).
    point: Mutex<Point>,
    /// Active alarms (member id, etcd `AlarmType`), sorted; stored under `META_ALARMS`.
    alarms: Mutex<Vec<(u64, i32)>>,
    /// The lease table (`lease`), as stored.
    leases: Mutex<lease::Leases>,
    /// The auth table (`auth`), as stored; a change swaps in a new one.
    auth: RwLock<auth::SharedAuth>,
    /// This member's simple tokens (in memory only; see `auth::tokens`).
    tokens: auth::tokens::SimpleTokens,
    /// Where applied writes' events go (the member's watch hub), once one is set.
    sink: RwLock<Option<std::sync::Arc<dyn WatchSink>>>,
    /// Bytes of the version records (encoded key + record), see [`MvccStore::size_in_use`].
    in_use: AtomicU64,
    /// Operation counts for `/metrics`.
    counts: metrics::StoreCounts,
    /// The value log: put values of [`VALUE_LOG_MIN`] bytes or more, which their records
    /// point at (see "Values out of sled" in docs/architecture.md).
    values: Arc<ValueLog>,
    /// Bytes of frames each value segment holds that a record points at; a segment with
    /// none, older than the recorded durable frame's, is removed by [`MvccStore::persist`]
    /// once sled's flush made its records' removal durable, and one with less than half
    /// its size has its values moved inline first (`relocate`). Rebuilt when the store
    /// opens.
    live: Mutex<BTreeMap<u64, u64>>,
    /// Segments a walk of `relocate` could not empty, with their live bytes then.
    stuck: Mutex<BTreeMap<u64, u64>>,
    /// The thread that fdatasyncs the value log (see [`Syncer`]); stopped when the store
    /// drops. A store dropped leaves its point where it was last recorded, as a crash
    /// would: the log's replay covers the rest.
    _syncer: Syncer,
    /// Bumped when a snapshot starts replacing the contents (a restore's tree swap, a
    /// merge's last batch) and again once the store has its revisions: odd meanwhile. Reads
    /// that may run then go through [`MvccStore::consistent`].
    replacements: AtomicU64,
    /// Run at the start of [`MvccStore::adopt_snapshot`], inside the window readers wait
    /// out (a test reads there).
    #[cfg(test)]
    pub(crate) while_replacing: Mutex<Option<Box<dyn FnMut() + Send>>>,
}

/// Held while a snapshot replaces the contents, from the first change readers can see to
/// the store taking the snapshot's revision and compacted revision (see
/// [`MvccStore::consistent`]).
pub(crate) struct Replacing<'a>(&'a MvccStore);

impl Drop for Replacing<'_> {
    fn drop(&mut self) {
        std::sync::atomic::fence(Ordering::SeqCst);
        self.0.replacements.fetch_add(1, Ordering::SeqCst);
    }
}

/// The in-memory applied point.
#[derive(Debug, Default)]
pub(crate) struct Point {
    pub(crate) state: AppliedState,
    pub(crate) unrecorded: bool,
    /// Changes applied since the last history group was stored, in order; they are stored
    /// as one group just before the next applied point (see `history`). Readers of the
    /// history take them from here meanwhile.
    pub(crate) history: Vec<encoding::HistoryEntry>,
    /// Key bytes in `history`.
    pub(crate) history_bytes: usize,
    /// Runs applied whose values were not yet durable when they ended, oldest first: the
    /// point is recorded for the newest one the value log's fdatasync has covered (see
    /// [`MvccStore::record_durable`]).
    pub(crate) pending: VecDeque<Pending>,
    /// Counts changes to `state` (each applied entry), so that a point recorded for a
    /// pending run knows whether it covers everything applied.
    pub(crate) applied_seq: u64,
    /// The value log's durable frame stored with the last point written.
    pub(crate) values: Option<ValuePtr>,
}

/// A run of writes applied, waiting for its values to be durable before its point is.
#[derive(Debug)]
pub(crate) struct Pending {
    /// Where the value log ended after the run.
    end: Position,
    /// The revision and applied state after it.
    revision: i64,
    state: AppliedState,
    /// `Point::applied_seq` after it.
    seq: u64,
}

/// Runs held pending at most (a stalled fdatasync must not grow memory without bound): past
/// it the oldest is forgotten, which only means a point is recorded for a later run.
const PENDING_MAX: usize = 1024;

/// Values this long or longer go to the value log; shorter ones stay in their records
/// (a pointer and a frame header would outweigh them). This crate's tests send every
/// non-empty value there, so that every path runs with values in the log; empty ones keep
/// the inline form tested.
pub(crate) const VALUE_LOG_MIN: usize = if cfg!(test) { 1 } else { 64 };

/// How often the syncer fdatasyncs the value log while values are appended: the lag of the
/// recorded point behind the applied one. Each sync costs about 75 us of CPU
/// (docs/benchmarks.md), so 100 a second is under 1 % of a core.
const SYNC_EVERY: std::time::Duration = std::time::Duration::from_millis(10);

/// A thread that fdatasyncs the value log every [`SYNC_EVERY`] while it has unsynced frames,
/// so that the applied point can follow the values without the apply path waiting for a
/// disk (a failed sync fails the log, and every later sync with it: the next point that
/// must be recorded reports it).
struct Syncer {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Syncer {
    fn start(values: Arc<ValueLog>) -> Result<Self, MvccError> {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let stopping = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("value-sync".into())
            .spawn(move || {
                let (flag, wake) = &*stopping;
                let mut stopped = flag.lock().unwrap_or_else(|e| e.into_inner());
                loop {
                    stopped = wake
                        .wait_timeout(stopped, SYNC_EVERY)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                    if *stopped {
                        return;
                    }
                    drop(stopped);
                    if values.has_unsynced() {
                        let _ = values.sync();
                    }
                    stopped = flag.lock().unwrap_or_else(|e| e.into_inner());
                }
            })
            .map_err(|e| MvccError::Sled(sled::Error::Io(e)))?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        let (flag, wake) = &*self.stop;
        *flag.lock().unwrap_or_else(|e| e.into_inner()) = true;
        wake.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A value log error as the store reports it: a frame that does not match its record is
/// damage; anything else a storage failure.
pub(crate) fn values_error(e: std::io::Error) -> MvccError {
    if e.kind() == std::io::ErrorKind::InvalidData {
        MvccError::Corrupt(e.to_string())
    } else {
        MvccError::Sled(sled::Error::Io(e))
    }
}

/// Changes (or their key bytes) held for one history group before it is stored even
/// within a run: bounds the group's size and the memory held. (Tests store groups within
/// runs far more often.)
pub(crate) const HISTORY_GROUP_ENTRIES: usize = if cfg!(test) { 64 } else { 4096 };
pub(crate) const HISTORY_GROUP_BYTES: usize = 1 << 20;

impl MvccStore {
    /// Opens (or creates) the store in directory `path`.
    pub fn open(path: &Path, config: &MvccConfig) -> Result<Self, MvccError> {
        let sled_config = sled::Config::new()
            .path(path)
            .cache_capacity(config.cache_capacity)
            .flush_every_ms(config.flush_every_ms);
        let db = open_waiting_for_lock(&sled_config)?;
        let name = match db.get(ACTIVE_TREE)? {
            Some(name) => name.to_vec(),
            None => b"mvcc".to_vec(),
        };
        // A restore cut short by a crash leaves its half-written tree, and one that had just
        // swapped in its tree the old one: every store tree but the active one goes.
        for other in db.tree_names() {
            if other.starts_with(b"mvcc") && other.as_ref() != name.as_slice() {
                db.drop_tree(other)?;
            }
        }
        let tree = db.open_tree(name)?;
        Self::index_history_if_missing(&tree)?;
        merge::recover(&tree)?;
        let (revision, state, durable) = match tree.get(META_POINT)? {
            Some(raw) => {
                let (revision, applied, membership, durable) = encoding::decode_point(&raw)?;
                (
                    revision,
                    AppliedState {
                        applied,
                        membership,
                        index: 0,
                    },
                    durable,
                )
            }
            None => (1, AppliedState::default(), None),
        };
        // Values past the recorded durable frame belong to writes above the point (the
        // log's replay writes them again); a recorded frame that does not match is damage.
        let values = Arc::new(
            ValueLog::open(&path.join(VALUES_DIR), config.value_segment_bytes, durable)
                .map_err(values_error)?,
        );
        // History stored above the applied point is from writes a crash left unrecorded:
        // replaying the log writes it again (perhaps grouped otherwise), so it goes.
        history::remove_history(&tree, revision.saturating_add(1), i64::MAX)?;
        let compacted = match tree.get(META_COMPACTED)? {
            Some(raw) => decode_i64(&raw)?,
            None => 0,
        };
        let compaction_done = compaction::load_done(&tree)?;
        let alarms = match tree.get(META_ALARMS)? {
            Some(raw) => encoding::decode_alarms(&raw)
                .ok_or_else(|| MvccError::Corrupt("alarms record".into()))?,
            None => Vec::new(),
        };
        let leases = lease::load(&tree)?;
        let auth = auth::AuthTable::load(&tree)?;
        let (in_use, seen, live) = scan_records(&tree)?;
        let syncer = Syncer::start(Arc::clone(&values))?;
        Ok(Self {
            db,
            dir: path.to_path_buf(),
            blobs_synced: Mutex::new(-1),
            tree: RwLock::new(tree),
            revision: AtomicI64::new(revision),
            compacted: AtomicI64::new(compacted),
            writer: Mutex::new(()),
            latest: Mutex::new(latest::Latest::with_seen(seen)),
            compaction_gate: Default::default(),
            removal: compaction::Removal::new(compaction_done),
            point: Mutex::new(Point {
                state,
                values: durable,
                ..Point::default()
            }),
            alarms: Mutex::new(alarms),
            leases: Mutex::new(leases),
            auth: RwLock::new(std::sync::Arc::new(auth)),
            tokens: auth::tokens::SimpleTokens::default(),
            sink: RwLock::new(None),
            in_use: AtomicU64::new(in_use),
            counts: metrics::StoreCounts::default(),
            values,
            live: Mutex::new(live),
            stuck: Mutex::default(),
            _syncer: syncer,
            replacements: AtomicU64::new(0),
            #[cfg(test)]
            while_replacing: Mutex::new(None),
        })
    }

    /// Operation counts since the store opened (for `/metrics`).
    pub fn counts(&self) -> &metrics::StoreCounts {
        &self.counts
    }

    /// The active alarms: (member id, etcd `AlarmType` number), sorted.
    pub fn alarms(&self) -> Vec<(u64, i32)> {
        self.alarms
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Whether any member has raised an alarm of type `alarm`.
    pub fn has_alarm(&self, alarm: i32) -> bool {
        self.alarms
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .any(|(_, a)| *a == alarm)
    }

    pub(crate) fn set_alarms(&self, alarms: Vec<(u64, i32)>) {
        *self.alarms.lock().unwrap_or_else(|e| e.into_inner()) = alarms;
    }

    pub(crate) fn lease_table(&self) -> MutexGuard<'_, lease::Leases> {
        self.leases.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every lease: id, granted TTL and last checkpointed remaining TTL, by id.
    pub fn leases(&self) -> Vec<(i64, lease::LeaseInfo)> {
        self.lease_table()
            .iter()
            .map(|(&id, &info)| (id, info))
            .collect()
    }

    /// Lease `id`, if it exists.
    pub fn lease(&self, id: i64) -> Option<lease::LeaseInfo> {
        self.lease_table().get(&id).copied()
    }

    /// The keys attached to lease `id` now, in key order.
    pub fn lease_keys(&self, id: i64) -> Result<Vec<bytes::Bytes>, MvccError> {
        self.read_now(|rev| self.lease_keys_at(id, rev))
    }

    fn lease_keys_at(&self, id: i64, rev: i64) -> Result<Vec<bytes::Bytes>, MvccError> {
        let mut keys = Vec::new();
        let (start, end) = lease::lease_index_bounds(id);
        for item in self.tree().range(start..end) {
            let (raw, _) = item?;
            let key = lease::indexed_key(&raw)?;
            if self.get_at(key, rev)?.is_some_and(|kv| kv.lease == id) {
                keys.push(bytes::Bytes::copy_from_slice(key));
            }
        }
        Ok(keys)
    }

    /// The auth table now.
    pub fn auth(&self) -> auth::SharedAuth {
        self.auth.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// This member's simple tokens.
    pub fn tokens(&self) -> &auth::tokens::SimpleTokens {
        &self.tokens
    }

    pub(crate) fn set_auth(&self, table: auth::AuthTable) {
        *self.auth.write().unwrap_or_else(|e| e.into_inner()) = std::sync::Arc::new(table);
    }

    /// The current revision.
    pub fn revision(&self) -> i64 {
        self.revision.load(Ordering::Acquire)
    }

    /// The compacted revision (0 if never compacted).
    pub fn compacted_revision(&self) -> i64 {
        self.compacted.load(Ordering::Acquire)
    }

    /// The compacted revision as a reader checks it once it has read: a compaction stores
    /// its revision and then a fence before it removes anything, so a reader that met a
    /// removal sees the revision here (the fences pair up; sled's own synchronisation
    /// would order it too).
    pub(crate) fn compacted_after_read(&self) -> i64 {
        std::sync::atomic::fence(Ordering::SeqCst);
        self.compacted.load(Ordering::SeqCst)
    }

    /// The applied log id and membership last stored with the data.
    /// That includes writes applied but not yet recorded (see [`MvccStore::apply_unrecorded`]).
    pub fn applied_state(&self) -> Result<AppliedState, MvccError> {
        Ok(self.point().state.clone())
    }

    pub(crate) fn point(&self) -> MutexGuard<'_, Point> {
        self.point.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Notes `state` as applied without storing it (the caller holds the writer lock).
    pub(crate) fn note_unrecorded(&self, state: &AppliedState) {
        let mut point = self.point();
        point.state.update(state);
        point.unrecorded = true;
        point.applied_seq += 1;
    }

    /// Ends a run of writes (the caller holds the writer lock; `state` is the last entry's):
    /// records the point at once if every value the store appended is durable, else holds
    /// the run pending and records the point of the newest pending run the value log's
    /// syncer has covered, if any. The recorded point thus lags the applied one by about
    /// [`SYNC_EVERY`] under load; a crash replays the log from it, as for any unrecorded
    /// run.
    pub(crate) fn end_run(&self, rev: i64, state: &AppliedState) -> Result<(), MvccError> {
        if !self.values.has_unsynced() {
            return self.record(rev, state);
        }
        self.note_unrecorded(state);
        {
            let end = self.values.end();
            let mut point = self.point();
            if point.pending.len() >= PENDING_MAX {
                point.pending.pop_front();
            }
            let pending = Pending {
                end,
                revision: rev,
                state: point.state.clone(),
                seq: point.applied_seq,
            };
            point.pending.push_back(pending);
        }
        self.record_durable()
    }

    /// Records the point of the newest pending run whose values are durable (the caller
    /// holds the writer lock), with the changes held for the history stored first.
    fn record_durable(&self) -> Result<(), MvccError> {
        let durable = self.values.durable();
        let covered = durable.map_or(Position::default(), |d| d.end());
        let mut point = self.point();
        let mut ready = None;
        while point.pending.front().is_some_and(|p| p.end <= covered) {
            ready = point.pending.pop_front();
        }
        let Some(ready) = ready else {
            return Ok(());
        };
        self.store_history_group(&mut point)?;
        let value = encoding::encode_point(
            ready.revision,
            ready.state.applied.as_deref(),
            ready.state.membership.as_deref(),
            durable.as_ref(),
        );
        self.tree().insert(META_POINT, value)?;
        point.values = durable;
        point.unrecorded = ready.seq != point.applied_seq;
        Ok(())
    }

    /// The applied point record for revision `rev` after `state` (the caller holds the
    /// writer lock and stores the returned value under [`META_POINT`], alone or in a batch).
    /// The changes held for the history are stored first, as one group.
    pub(crate) fn point_record(
        &self,
        rev: i64,
        state: &AppliedState,
    ) -> Result<Vec<u8>, MvccError> {
        // A point stored at once covers every value appended: they go to disk first.
        let durable = self.sync_values()?;
        let mut point = self.point();
        self.store_history_group(&mut point)?;
        point.state.update(state);
        point.unrecorded = false;
        point.applied_seq += 1;
        point.pending.clear();
        point.values = durable;
        Ok(encoding::encode_point(
            rev,
            point.state.applied.as_deref(),
            point.state.membership.as_deref(),
            durable.as_ref(),
        ))
    }

    /// Makes every value appended so far durable, and returns the last durable frame.
    pub(crate) fn sync_values(&self) -> Result<Option<ValuePtr>, MvccError> {
        if self.values.has_unsynced() {
            self.values.sync().map_err(values_error)
        } else {
            Ok(self.values.durable())
        }
    }

    /// Holds a write's changes for the next history group (the caller holds the writer
    /// lock), storing the group at once if it is full.
    pub(crate) fn note_history(
        &self,
        entries: impl IntoIterator<Item = encoding::HistoryEntry>,
    ) -> Result<(), MvccError> {
        let mut point = self.point();
        for entry in entries {
            point.history_bytes += entry.2.len();
            point.history.push(entry);
        }
        if point.history.len() >= HISTORY_GROUP_ENTRIES
            || point.history_bytes >= HISTORY_GROUP_BYTES
        {
            self.store_history_group(&mut point)?;
        }
        Ok(())
    }

    /// Stores the held changes as one group (before any applied point that covers them, so
    /// that sled's recovered prefix never has a point without its history).
    fn store_history_group(&self, point: &mut Point) -> Result<(), MvccError> {
        let Some(first) = point.history.first().map(|e| e.0) else {
            return Ok(());
        };
        let value = encoding::encode_history_group(first, &point.history);
        self.tree()
            .insert(encoding::history_group_key(first), value)?;
        point.history.clear();
        point.history_bytes = 0;
        Ok(())
    }

    /// The held changes of revisions `from..=to` (see [`MvccStore::history`]).
    pub(crate) fn held_history(&self, from: i64, to: i64) -> Vec<encoding::HistoryEntry> {
        self.point()
            .history
            .iter()
            .filter(|e| (from..=to).contains(&e.0))
            .cloned()
            .collect()
    }

    /// Stores the applied point for revision `rev` after `state`: one insert, atomic, and
    /// (sled recovers a prefix of its log) covering every write inserted before it.
    pub(crate) fn record(&self, rev: i64, state: &AppliedState) -> Result<(), MvccError> {
        let value = self.point_record(rev, state)?;
        self.tree().insert(META_POINT, value)?;
        Ok(())
    }

    /// Stores the revision and applied state of every [`MvccStore::apply_unrecorded`] write
    /// so far. Until then a crash leaves sled at the last recorded point, and replaying the
    /// log from there rewrites the same records (a write's records are keyed by its revision
    /// and reads never look above the recorded revision).
    pub fn record_applied(&self) -> Result<(), MvccError> {
        let _writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        if !self.point().unrecorded {
            return Ok(());
        }
        self.record(self.revision(), &AppliedState::default())
    }

    /// Records `state` without changing data (for Raft entries that carry no command, such
    /// as blank and membership entries).
    pub fn set_applied_state(&self, state: &AppliedState) -> Result<(), MvccError> {
        let _writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        self.record(self.revision(), state)
    }

    /// The revision, applied state, alarms and leases of the same instant (no write in
    /// between).
    pub fn snapshot_point(&self) -> Result<SnapshotPoint, MvccError> {
        let _writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        self.point_locked()
    }

    /// [`MvccStore::snapshot_point`]; the caller holds the writer lock.
    fn point_locked(&self) -> Result<SnapshotPoint, MvccError> {
        Ok(SnapshotPoint {
            revision: self.revision(),
            applied: self.applied_state()?,
            alarms: self.alarms(),
            leases: self.leases(),
            auth: self.auth(),
        })
    }

    /// Writes sled's state to disk with an fsync (sled's own flush; used when a restore or a
    /// shutdown ends). What survives is the recorded point and everything below it (their
    /// values were synced before the point was recorded); writes above it are the log's to
    /// replay. [`MvccStore::persist`] records the point first.
    pub fn flush(&self) -> Result<(), MvccError> {
        self.db.flush()?;
        Ok(())
    }

    /// Bytes sled and the value log use on disk.
    pub fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0) + self.values.size_on_disk()
    }

    /// Notes that a record pointing at `added` was stored and one pointing at `removed`
    /// dropped or replaced (see `live`).
    pub(crate) fn note_live(&self, added: Option<&ValuePtr>, removed: Option<&ValuePtr>) {
        if added.is_none() && removed.is_none() {
            return;
        }
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(ptr) = added {
            *live.entry(ptr.seq).or_default() += ptr.frame_len();
        }
        if let Some(ptr) = removed
            && let Some(bytes) = live.get_mut(&ptr.seq)
        {
            *bytes = bytes.saturating_sub(ptr.frame_len());
            if *bytes == 0 {
                live.remove(&ptr.seq);
            }
        }
    }

    /// Notes that the records pointing at `removed` were dropped.
    pub(crate) fn note_dropped(&self, removed: &[ValuePtr]) {
        for ptr in removed {
            self.note_live(None, Some(ptr));
        }
    }

    /// Value segments no record points at, older than the durable frame's (what
    /// [`MvccStore::persist`] may remove once sled's flush made that durable).
    fn dead_segments(&self) -> Vec<u64> {
        let live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        let recorded = self.point().values.map_or(0, |p| p.seq);
        self.values
            .segments()
            .into_iter()
            .filter(|seq| *seq < recorded && !live.contains_key(seq))
            .collect()
    }

    /// Removes `dead` segments (from [`MvccStore::dead_segments`], after a flush).
    fn remove_dead(&self, dead: &[u64]) -> Result<(), MvccError> {
        for &seq in dead {
            self.values.remove_segment(seq).map_err(values_error)?;
            self.counts.segments_removed.inc();
        }
        Ok(())
    }

    /// A put's value as stored: inline, or read from the value log (checked against `key`
    /// and `revision`).
    pub(crate) fn load_value(
        &self,
        stored: StoredValue<'_>,
        key: &[u8],
        revision: i64,
    ) -> Result<Vec<u8>, MvccError> {
        match stored {
            StoredValue::Inline(value) => Ok(value.to_vec()),
            StoredValue::At(ptr) => match self.values.read(&ptr, key, revision) {
                Ok(value) => Ok(value),
                Err(e) => {
                    // The record may have been given its value inline since it was read
                    // (`relocate`), and its segment removed: the record as it is now.
                    let raw_key = encoding::record_key(key, revision);
                    if let Ok(Some(raw)) = self.tree().get(raw_key)
                        && let Ok(Some((_, _, _, StoredValue::Inline(value)))) =
                            encoding::decode_parts(&raw)
                    {
                        return Ok(value.to_vec());
                    }
                    Err(values_error(e))
                }
            },
        }
    }

    /// Decodes the record of `key` at `revision`, its value read from the value log if it
    /// lies there (with `with_value = false` the value is left empty).
    pub(crate) fn decode_record(
        &self,
        raw: &[u8],
        key: &[u8],
        revision: i64,
        with_value: bool,
    ) -> Result<encoding::Record, MvccError> {
        Ok(match encoding::decode_parts(raw)? {
            None => encoding::Record::Tombstone,
            Some((create_revision, version, lease, stored)) => encoding::Record::Put {
                create_revision,
                version,
                lease,
                value: if with_value {
                    self.load_value(stored, key, revision)?
                } else {
                    Vec::new()
                },
            },
        })
    }

    /// The record of `key` at `revision` as it is encoded with its value inline: what
    /// members compare (hashes, a merge), whichever of them keeps the value in its log.
    pub(crate) fn inline_record<'a>(
        &self,
        raw: &'a [u8],
        key: &[u8],
        revision: i64,
    ) -> Result<std::borrow::Cow<'a, [u8]>, MvccError> {
        match encoding::decode_parts(raw)? {
            Some((create_revision, version, lease, StoredValue::At(ptr))) => {
                let value = self.load_value(StoredValue::At(ptr), key, revision)?;
                Ok(std::borrow::Cow::Owned(encoding::encode_put(
                    create_revision,
                    version,
                    lease,
                    &value,
                )))
            }
            _ => Ok(std::borrow::Cow::Borrowed(raw)),
        }
    }

    /// Bytes of the version records the store holds: each version's encoded key and record
    /// (value included) as stored, every version kept until compaction, tombstones too. It
    /// grows with writes and shrinks when compaction drops versions, unlike sled's files
    /// (etcd's `dbSizeInUse` is bbolt's pages in use; this is the logical counterpart).
    /// Indexes and metadata, a small share, are not counted.
    pub fn size_in_use(&self) -> u64 {
        self.in_use.load(Ordering::Relaxed)
    }

    /// Notes `added` bytes of records written and `removed` bytes dropped.
    pub(crate) fn note_in_use(&self, added: usize, removed: usize) {
        if added >= removed {
            self.in_use
                .fetch_add((added - removed) as u64, Ordering::Relaxed);
        } else {
            let less = (removed - added) as u64;
            let _ = self
                .in_use
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                    Some(v.saturating_sub(less))
                });
        }
    }

    /// A header with the current revision (the server fills in the cluster fields).
    pub(crate) fn header(revision: i64) -> Option<ResponseHeader> {
        Some(ResponseHeader {
            revision,
            ..Default::default()
        })
    }

    /// Marks the contents as being replaced by a snapshot until the guard drops.
    pub(crate) fn replacing(&self) -> Replacing<'_> {
        self.replacements.fetch_add(1, Ordering::SeqCst);
        std::sync::atomic::fence(Ordering::SeqCst);
        Replacing(self)
    }

    /// Runs `read`, which takes the revision it reads at itself, again until no snapshot
    /// replaced the contents while it ran (a seqlock over [`MvccStore::replacing`]).
    ///
    /// A read does not hold the store's locks, so a snapshot installed meanwhile may drop
    /// versions (a merge's last batch) or swap in a new tree (a restore) before the store
    /// takes the snapshot's revision and compacted revision; a read at the old revision
    /// would then find a key's version gone, or the new tree's, and not be refused. Waits
    /// out a replacement in progress (a batch and a few stores in memory).
    pub(crate) fn consistent<T>(
        &self,
        mut read: impl FnMut() -> Result<T, MvccError>,
    ) -> Result<T, MvccError> {
        loop {
            let before = self.replacements.load(Ordering::SeqCst);
            if before % 2 == 1 {
                std::thread::sleep(std::time::Duration::from_micros(100));
                continue;
            }
            let out = read();
            std::sync::atomic::fence(Ordering::SeqCst);
            if self.replacements.load(Ordering::SeqCst) == before {
                return out;
            }
        }
    }

    /// Runs `read` at the current revision inside [`MvccStore::consistent`], and again at
    /// the new current revision if a compaction passed the one it read at meanwhile: the
    /// compaction may have removed versions from under it, and a read of "now" is never
    /// refused as compacted.
    pub(crate) fn read_now<T>(
        &self,
        mut read: impl FnMut(i64) -> Result<T, MvccError>,
    ) -> Result<T, MvccError> {
        self.consistent(|| {
            loop {
                let rev = self.revision();
                let out = read(rev);
                if rev >= self.compacted_after_read() {
                    return out;
                }
            }
        })
    }

    /// The active tree (a cheap handle; a restore may swap it).
    pub(crate) fn tree(&self) -> sled::Tree {
        self.tree.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The writer's cache of newest versions (see `latest`); callers hold the writer lock.
    pub(crate) fn latest_cache(&self) -> MutexGuard<'_, latest::Latest> {
        self.latest.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Holds off compaction's physical deletes while a snapshot reads old versions.
    pub(crate) fn compaction_read_guard(&self) -> CompactionPin {
        self.compaction_gate.pin()
    }

    /// [`MvccStore::snapshot_point`] with compaction's physical deletes held off until the
    /// pin is dropped, so that the versions the point can see stay readable while writes go
    /// on: what a snapshot of that point is written from, now or later.
    pub fn pin_snapshot_point(&self) -> Result<PinnedPoint, MvccError> {
        let _writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        self.pin_locked()
    }

    /// The point, pinned; the caller holds the writer lock. Everything that takes the gate
    /// for writing (compaction, restore) does so under the writer lock, so the pin is taken
    /// at once, with no write in between.
    fn pin_locked(&self) -> Result<PinnedPoint, MvccError> {
        Ok(PinnedPoint {
            point: self.point_locked()?,
            compacted: self.compacted_revision(),
            _pin: self.compaction_read_guard(),
        })
    }

    /// Makes every write applied so far durable without the log: records the applied point
    /// if the last writes left it unrecorded, then flushes sled (an fsync). Returns that
    /// point, pinned: a restart finds the store at least there, so it can be a Raft
    /// snapshot's point (the log up to it may go).
    pub fn persist(&self) -> Result<PinnedPoint, MvccError> {
        // Segments mostly dead give up their live values first, and go below with the dead.
        self.relocate_sparse()?;
        let (pinned, dead) = {
            let _writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
            if self.point().unrecorded {
                self.record(self.revision(), &AppliedState::default())?;
            }
            (self.pin_locked()?, self.dead_segments())
        };
        self.db.flush()?;
        self.sync_files().map_err(sled::Error::Io)?;
        // No durable record points into them now; new values only go to newer segments.
        self.remove_dead(&dead)?;
        Ok(pinned)
    }

    /// fsyncs what sled's flush leaves short of the disk: sled 0.34 writes its log with
    /// `sync_file_range`, which neither writes the file's metadata (its size as it grows)
    /// nor flushes the device's cache, and writes large nodes to blob files with no sync at
    /// all. An fsync of the log file, of every blob file newer than the last one synced, and
    /// of the directories makes the flush survive a power loss, not only a crash.
    fn sync_files(&self) -> std::io::Result<()> {
        let sync = |path: &Path| match std::fs::File::open(path).and_then(|f| f.sync_all()) {
            // A blob sled collected meanwhile is not needed any more.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            other => other,
        };
        sync(&self.dir.join("db"))?;
        let blobs = self.dir.join("blobs");
        let mut synced = self.blobs_synced.lock().unwrap_or_else(|e| e.into_inner());
        let mut newest = *synced;
        match std::fs::read_dir(&blobs) {
            Ok(entries) => {
                for entry in entries {
                    let entry = entry?;
                    let lsn = entry
                        .file_name()
                        .to_str()
                        .and_then(|n| n.parse::<i64>().ok());
                    if let Some(lsn) = lsn
                        && lsn > *synced
                    {
                        sync(&entry.path())?;
                        newest = newest.max(lsn);
                    }
                }
                sync(&blobs)?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        sync(&self.dir)?;
        *synced = newest;
        Ok(())
    }

    /// Starts replacing the whole contents with a snapshot's: rows go into a fresh tree,
    /// which [`Restore::finish`] swaps in atomically. Writers wait until then.
    pub(crate) fn begin_restore(&self) -> Result<Restore<'_>, MvccError> {
        let writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        // No snapshot or hash may read the old tree at a pinned point while it is replaced.
        let gate = self.compaction_gate.write();
        let name = format!("mvcc-{}", self.db.generate_id()?);
        let tree = self.db.open_tree(&name)?;
        tree.clear()?;
        let history = sorted_history::HistorySorter::new(self.dir.clone(), &name);
        Ok(Restore {
            store: self,
            _writer: writer,
            _gate: gate,
            tree,
            name,
            last_key: None,
            in_use: 0,
            lease_ids: None,
            history: Some(history),
            seen: seen::Seen::default(),
            helper: None,
        })
    }
}

/// Opens sled, waiting up to 2 s while its directory lock is held. sled 0.34 releases the
/// lock of a dropped database only when its background threads end, after `drop` returns
/// (sled issues 1234, 1289), so a store reopened at once in the same process (a restore,
/// a test) could find its own lock still held. Another process holding the store still
/// fails, 2 s later.
fn open_waiting_for_lock(config: &sled::Config) -> Result<sled::Db, MvccError> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        match config.open() {
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            other => return Ok(other?),
        }
    }
}

/// What [`scan_records`] finds.
type Scanned = (u64, seen::Seen, BTreeMap<u64, u64>);

/// Bytes of the version records in `tree` (see [`MvccStore::size_in_use`]), the filter of
/// their keys (see `seen`), and the bytes each value segment holds that they point at (see
/// `MvccStore::live`): one pass over them when the store opens, all kept up to date by
/// writes afterwards.
fn scan_records(tree: &sled::Tree) -> Result<Scanned, MvccError> {
    let mut total = 0u64;
    let mut seen = seen::Seen::default();
    let mut live = BTreeMap::new();
    let mut prefix: Vec<u8> = Vec::new();
    for item in tree.range(encoding::lower_bound(b"")..vec![encoding::META_SPACE]) {
        let (k, v) = item?;
        total += (k.len() + encoding::stored_len(&v)) as u64;
        // A malformed record is found where it is read, as before; counted as pointing
        // nowhere, it keeps no segment.
        if let Ok(Some(ptr)) = encoding::value_ptr(&v) {
            *live.entry(ptr.seq).or_insert(0u64) += ptr.frame_len();
        }
        let (key_prefix, _) = encoding::split_record_key(&k)?;
        if key_prefix != prefix.as_slice() {
            seen.insert(&encoding::decode_prefix(key_prefix)?);
            prefix.clear();
            prefix.extend_from_slice(key_prefix);
        }
    }
    Ok((total, seen, live))
}

/// The value log's directory inside the store's.
const VALUES_DIR: &str = "values";

/// Name of the active tree, kept in sled's default tree.
const ACTIVE_TREE: &[u8] = b"active-tree";

/// A snapshot being loaded into a fresh tree (see [`MvccStore::begin_restore`]).
pub(crate) struct Restore<'a> {
    store: &'a MvccStore,
    _writer: std::sync::MutexGuard<'a, ()>,
    _gate: gate::GateWrite<'a>,
    tree: sled::Tree,
    name: String,
    /// The key of the last row added.
    last_key: Option<Vec<u8>>,
    /// Bytes of the records added (the store's [`MvccStore::size_in_use`] once swapped in).
    in_use: u64,
    /// When set, keys are attached only to these leases (see [`Restore::attach_only`]).
    lease_ids: Option<std::collections::BTreeSet<i64>>,
    /// The history index's (revision, key) pairs, written as groups by `finish` (see
    /// `sorted_history`); `None` once written.
    history: Option<sorted_history::HistorySorter>,
    /// The keys added (the store's filter once swapped in; see `seen`).
    seen: seen::Seen,
    /// The second thread that writes half of each run (see [`Restore::insert_run`]).
    helper: Option<Helper>,
}

/// Runs of sorted entries handed to [`Restore`]'s second writer.
type Run = Vec<(Vec<u8>, Vec<u8>)>;

/// A thread that inserts the runs it is sent into one tree and answers each. One thread for
/// the whole restore, rather than one per run, so that its allocator's memory is reused
/// (fresh threads faulted in fresh pages: a tenth of a small restore's time).
struct Helper {
    runs: std::sync::mpsc::SyncSender<Run>,
    done: std::sync::mpsc::Receiver<Result<(), MvccError>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Helper {
    fn start(tree: sled::Tree) -> Result<Self, MvccError> {
        let (runs, todo) = std::sync::mpsc::sync_channel::<Run>(1);
        let (answer, done) = std::sync::mpsc::sync_channel(1);
        let thread = std::thread::Builder::new()
            .name("restore-writer".into())
            .spawn(move || {
                for run in todo {
                    if answer.send(insert_all(&tree, &run)).is_err() {
                        return;
                    }
                }
            })
            .map_err(|e| MvccError::Sled(sled::Error::Io(e)))?;
        Ok(Self {
            runs,
            done,
            thread: Some(thread),
        })
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        // Closing the channel ends the thread once its run is written.
        let (closed, _) = std::sync::mpsc::sync_channel(0);
        drop(std::mem::replace(&mut self.runs, closed));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn insert_all(tree: &sled::Tree, entries: &[(Vec<u8>, Vec<u8>)]) -> Result<(), MvccError> {
    for (key, value) in entries {
        tree.insert(key.as_slice(), value.as_slice())?;
    }
    Ok(())
}

impl Restore<'_> {
    /// Attaches keys only to leases among `ids`. A key of an etcd snapshot may name a lease
    /// the snapshot does not hold; etcd keeps the id in the key but attaches it to nothing
    /// (`mvcc/kvstore.go` `restore`), so a lease granted later with that id must not
    /// revoke the key.
    pub(crate) fn attach_only(&mut self, ids: std::collections::BTreeSet<i64>) {
        self.lease_ids = Some(ids);
    }

    /// Adds versions, in store order. Plain inserts, not batches: the tree becomes the
    /// store's only in `finish`, after a flush, so nothing needs a batch's atomicity, and
    /// sled seals and writes its log buffer for every batch (a restore of 100,000 Pod
    /// objects took 3.2–3.4 s with batches of 10,000 inserts, 2.0–2.2 s without).
    pub(crate) fn add(&mut self, rows: &[crate::snapshot::Row]) -> Result<(), MvccError> {
        let mut records = Vec::with_capacity(rows.len());
        for row in rows {
            let (raw_key, raw_record) = (
                encoding::record_key(&row.key, row.revision),
                row.record.encode(),
            );
            self.in_use += (raw_key.len() + raw_record.len()) as u64;
            records.push((raw_key, raw_record));
            if let Some(history) = &mut self.history {
                history.push(row.revision, &row.key)?;
            }
            // Rows come newest version first: only a key's latest version attaches it (an
            // older one's entry would only be checked and skipped).
            if let encoding::Record::Put { lease, .. } = &row.record
                && *lease != 0
                && self.last_key.as_deref() != Some(row.key.as_slice())
                && self
                    .lease_ids
                    .as_ref()
                    .is_none_or(|ids| ids.contains(lease))
            {
                self.tree
                    .insert(lease::lease_key_index(*lease, &row.key), &[][..])?;
            }
            if self.last_key.as_deref() != Some(row.key.as_slice()) {
                self.seen.insert(&row.key);
                self.last_key = Some(row.key.clone());
            }
        }
        self.insert_run(records)
    }

    /// Writes the history index: every version's (revision, key), sorted, as groups (one
    /// insert per group where it was one per version: a restore of 100,000 Pod objects
    /// went from 1.00–1.32 s to 0.78–0.84 s without these inserts).
    fn write_history(&mut self) -> Result<(), MvccError> {
        let Some(history) = self.history.take() else {
            return Ok(());
        };
        let tree = &self.tree;
        history.write_groups(|first, group| {
            tree.insert(encoding::history_group_key(first), group)?;
            Ok(())
        })
    }

    /// Inserts `run` (sorted), a run of any size on two threads, one half each: the halves
    /// touch disjoint parts of the tree, so the threads rarely meet in sled. With blocks
    /// decoded on a third thread, a restore of 300,000 Pod objects went from 3.9 to 3.0 s
    /// (means of five runs each, `examples/restore_time`).
    fn insert_run(&mut self, mut run: Run) -> Result<(), MvccError> {
        if run.len() < PARALLEL_MIN {
            return insert_all(&self.tree, &run);
        }
        if self.helper.is_none() {
            self.helper = Some(Helper::start(self.tree.clone())?);
        }
        let helper = self.helper.as_ref().expect("just started");
        let high = run.split_off(run.len() / 2);
        let lost = || MvccError::Corrupt("the restore writer stopped".to_string());
        helper.runs.send(high).map_err(|_| lost())?;
        let low = insert_all(&self.tree, &run);
        let high = helper.done.recv().map_err(|_| lost())?;
        low.and(high)
    }

    /// Writes the snapshot's metadata, makes the new tree durable and active, and drops
    /// the old one.
    pub(crate) fn finish(mut self, meta: &crate::snapshot::SnapshotMeta) -> Result<(), MvccError> {
        self.write_history()?;
        let mut batch = sled::Batch::default();
        let durable = self.store.sync_values()?;
        let state = snapshot_metadata(meta, &mut batch, durable.as_ref());
        self.tree.apply_batch(batch)?;
        self.tree.flush()?;
        let db = &self.store.db;
        db.insert(ACTIVE_TREE, self.name.as_bytes())?;
        // From here the new tree is (or, after a failed flush, may come back as) the active
        // one: it must outlive this value whatever happens next.
        self.name.clear();
        db.flush()?;
        let replacing = self.store.replacing();
        let old = std::mem::replace(
            &mut *self.store.tree.write().unwrap_or_else(|e| e.into_inner()),
            self.tree.clone(),
        );
        self.store
            .adopt_snapshot(meta, state, std::mem::take(&mut self.seen), replacing);
        self.store.in_use.store(self.in_use, Ordering::Relaxed);
        // The restore is done; a failure to free the old tree only leaves its space
        // behind (sled reports the I/O error again on the next write).
        let _ = db.drop_tree(old.name());
        // The restored records hold their values inline: no value segment is pointed at,
        // and the new point, durable now, names the durable frame.
        self.store
            .live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        self.store.point().values = durable;
        // Only once the switch would survive a power loss (sled's flush alone would not;
        // see `sync_files`): the old tree coming back would need them.
        let dead = self.store.dead_segments();
        self.store.sync_files().map_err(sled::Error::Io)?;
        self.store.remove_dead(&dead)?;
        Ok(())
    }
}

/// Adds a snapshot's metadata to `batch` (compacted revision, alarms, the history flag,
/// leases, auth and the applied point) and returns the applied state it describes: what a
/// restore and a merge write beside the versions.
pub(crate) fn snapshot_metadata(
    meta: &crate::snapshot::SnapshotMeta,
    batch: &mut sled::Batch,
    values: Option<&ValuePtr>,
) -> AppliedState {
    batch.insert(META_COMPACTED, &meta.compact_revision.to_be_bytes());
    batch.remove(encoding::META_COMPACT_DONE);
    batch.insert(META_ALARMS, encoding::encode_alarms(&meta.alarms));
    batch.insert(encoding::META_HISTORY, &[1u8][..]);
    for (id, info) in &meta.leases {
        batch.insert(&lease::lease_key(*id)[..], lease::encode_lease(info));
    }
    batch.insert(auth::META_AUTH, meta.auth.encode());
    let state = AppliedState {
        applied: Some(meta.applied.clone()).filter(|a| !a.is_empty()),
        membership: Some(meta.membership.clone()).filter(|m| !m.is_empty()),
        index: 0,
    };
    batch.insert(
        META_POINT,
        encoding::encode_point(
            meta.revision,
            state.applied.as_deref(),
            state.membership.as_deref(),
            values,
        ),
    );
    state
}

impl MvccStore {
    /// Takes a snapshot's point as the store's in memory, once its tree holds it (after a
    /// restore or a merge): readers move to its revision; what was applied before is
    /// superseded.
    pub(crate) fn adopt_snapshot(
        &self,
        meta: &crate::snapshot::SnapshotMeta,
        state: AppliedState,
        seen: seen::Seen,
        replacing: Replacing<'_>,
    ) {
        #[cfg(test)]
        if let Some(hook) = self
            .while_replacing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_mut()
        {
            hook();
        }
        self.revision.store(meta.revision, Ordering::Release);
        self.latest_cache().reset(seen);
        // Held history of the replaced contents goes with them.
        let mut point = self.point();
        let values = point.values;
        *point = Point {
            state,
            values,
            ..Point::default()
        };
        drop(point);
        self.compacted
            .store(meta.compact_revision, Ordering::Release);
        // The snapshot's versions may hold what its source's removal had not reached yet.
        self.removal.reset();
        self.set_alarms(meta.alarms.clone());
        *self.lease_table() = meta.leases.iter().copied().collect();
        self.set_auth(meta.auth.clone());
        // Readers go on before the watch hub is told (it takes its own lock).
        drop(replacing);
        self.notify_replaced(meta.revision);
    }
}

/// Fewer entries than this are not worth the second writer (tests use a small number, so
/// their restores take both paths).
const PARALLEL_MIN: usize = if cfg!(test) { 16 } else { 256 };

impl Drop for Restore<'_> {
    fn drop(&mut self) {
        // The second writer first (it joins its thread), so nothing writes into the tree
        // after this.
        drop(self.helper.take());
        if !self.name.is_empty() {
            // Abandoned (an error part-way): the half-written tree is not needed.
            let _ = self.store.db.drop_tree(self.name.as_bytes());
        }
    }
}

#[cfg(test)]
impl MvccStore {
    /// A row of the tree as members compare it: a record with its value inline, the
    /// applied point without the value log's durable frame (where a value lies differs by
    /// store); any other row as stored.
    pub(crate) fn logical_row(&self, key: &[u8], value: &[u8]) -> Vec<u8> {
        if key.first() == Some(&encoding::RECORD_SPACE) {
            let (prefix, rev) = encoding::split_record_key(key).unwrap();
            let user_key = encoding::decode_prefix(prefix).unwrap();
            return self
                .inline_record(value, &user_key, rev)
                .unwrap()
                .into_owned();
        }
        if key == META_POINT {
            let (rev, applied, membership, _) = encoding::decode_point(value).unwrap();
            return encoding::encode_point(rev, applied.as_deref(), membership.as_deref(), None);
        }
        value.to_vec()
    }
}

impl AppliedState {
    /// Replaces the fields `newer` sets (reusing this state's buffers).
    pub(crate) fn update(&mut self, newer: &AppliedState) {
        if newer.applied.is_some() {
            self.applied.clone_from(&newer.applied);
        }
        if newer.membership.is_some() {
            self.membership.clone_from(&newer.membership);
        }
    }
}

#[cfg(test)]
mod tests;
