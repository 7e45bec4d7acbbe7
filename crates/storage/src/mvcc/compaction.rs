//! Compaction's physical deletes, off the apply path.
//!
//! Applying a compaction only stores its revision (`META_COMPACTED`) and takes it in memory:
//! from then on every read below it is refused, and reads at or above it never see what it
//! drops. The versions it drops and its history index entries are removed afterwards, a
//! batch at a time, by [`MvccStore::compaction_step`] (the [`Compactor`] thread runs it),
//! as etcd's backend removes a compaction's keys in batches after the apply answered. A
//! compaction of a few hundred thousand revisions held every write behind it for seconds
//! when the removal ran inside the apply.
//!
//! Each batch runs under the writer lock and holds the compaction gate (so no snapshot
//! build or hash that pinned an older point loses a version it reads): a put, a relocation
//! of values, a merge or a restore never interleaves with one batch, and applies wait for a
//! batch no longer than for a large put. A batch looks at 256 records and removes each
//! with its own sled operation, in the walk's order (a key's tombstone after its older
//! versions; sled recovers a prefix of its operations), and the thread pauses 10 ms between
//! batches, as etcd's does, and at least nine times as long as the batch took. Between
//! batches the walk keeps its place; a snapshot replacing the contents, or a newer
//! compaction, starts it again from the first key. The removal is idempotent, and leftovers of one not finished (a crash, or a
//! snapshot built meanwhile and installed elsewhere) are invisible at or above the
//! compacted revision; hashes filter them out (`hash`). The revision the removal last
//! finished is stored (`META_COMPACT_DONE`), so a store that opens with a compaction
//! unfinished finishes it; a store from before this key, or filled by a snapshot, walks
//! once.

use std::ops::Bound;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant};

use super::MvccStore;
use super::encoding::{
    META_COMPACT_DONE, META_SPACE, Record, decode_i64, lower_bound, split_record_key,
    stored_len_at, value_ptr,
};
use crate::error::MvccError;
use crate::values::ValuePtr;

/// Records looked at per batch at most, removed or not (tests use 3, so their
/// compactions take several batches). Each removal is its own sled operation: a sled batch
/// takes a lock that every other sled read and write of the process waits for, and a batch
/// of 1,000 removals held them all for tens of milliseconds.
const BATCH: usize = if cfg!(test) { 3 } else { 256 };
/// History index entries removed per batch at most.
const HISTORY_BATCH: usize = if cfg!(test) { 3 } else { 1_000 };
/// The compactor thread's pause between two batches (etcd's backend pauses 10 ms too), so
/// that the applies and reads of a busy member are not crowded out of the cores.
const PAUSE: Duration = Duration::from_millis(10);
/// And at least this many times as long as the batch took: the thread takes a tenth of a
/// core at most. With three members and the client on two cores, removals that took a
/// quarter of a core each doubled the puts' p99 while they ran (docs/benchmarks.md).
const WORK_SHARE: u32 = 9;

/// Where the removal is, kept between batches.
#[derive(Debug, Default)]
pub(crate) struct Walk {
    /// The compaction revision it removes for, and the store's replacement count when it
    /// started: if either changed, it starts again.
    target: i64,
    replacements: u64,
    /// When the compaction it removes for was applied (or the store opened with it
    /// unfinished).
    since: Option<Instant>,
    /// The last record key looked at.
    after: Option<sled::IVec>,
    /// The encoded key prefix whose newest version at or below `target` was seen: its
    /// older versions go.
    settled: Vec<u8>,
    /// That version, if a tombstone, and its size: it goes once its older versions have
    /// (in their batch or a later one), never before them, or a read between two batches
    /// would find the key alive again.
    tombstone: Option<(sled::IVec, usize)>,
    /// Every version is done; only the history index is left.
    versions_done: bool,
}

impl Walk {
    /// Whether this walk removes for compaction revision `target` over the contents as of
    /// `replacements` (else it starts again).
    fn is_for(&self, target: i64, replacements: u64) -> bool {
        self.target == target && self.replacements == replacements
    }
}

/// The state of compaction's physical deletes in a store.
#[derive(Debug, Default)]
pub(crate) struct Removal {
    walk: Mutex<Walk>,
    /// The compaction revision whose removal last finished (0: none known).
    done: Mutex<i64>,
    finished: Condvar,
    /// Set when there is work, so the thread need not wait for its next look.
    wake: Arc<Wake>,
    /// When the last compaction was applied.
    applied: Mutex<Option<Instant>>,
}

#[derive(Debug, Default)]
struct Wake {
    state: Mutex<WakeState>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct WakeState {
    work: bool,
    stop: bool,
}

impl Wake {
    fn lock(&self) -> std::sync::MutexGuard<'_, WakeState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Removal {
    /// The state of a store whose stored finished revision is `done`.
    pub(crate) fn new(done: i64) -> Self {
        Self {
            done: Mutex::new(done),
            ..Self::default()
        }
    }

    fn done(&self) -> std::sync::MutexGuard<'_, i64> {
        self.done.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Notes a compaction applied now, and tells the thread.
    pub(crate) fn compacted(&self) {
        *self.applied.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        self.wake();
    }

    /// Tells the thread there is work.
    pub(crate) fn wake(&self) {
        self.wake.lock().work = true;
        self.wake.changed.notify_all();
    }

    /// Forgets the finished revision: a snapshot filled the store, and its versions may
    /// include what an unfinished removal on its source left.
    pub(crate) fn reset(&self) {
        *self.done() = 0;
        self.wake();
    }
}

/// The finished revision as stored ([`META_COMPACT_DONE`]; 0 without one).
pub(crate) fn load_done(tree: &sled::Tree) -> Result<i64, MvccError> {
    match tree.get(META_COMPACT_DONE)? {
        Some(raw) => decode_i64(&raw),
        None => Ok(0),
    }
}

impl MvccStore {
    /// The compaction revision whose physical deletes last finished on this store.
    pub fn compaction_finished(&self) -> i64 {
        *self.removal.done()
    }

    /// Whether a compaction's physical deletes are still to run.
    pub fn compaction_pending(&self) -> bool {
        self.compacted_revision() > self.compaction_finished()
    }

    /// Waits until the removal for compaction revision `rev` (or a later one) finished, at
    /// most `timeout`; whether it did (etcd's `physical` compaction waits for this).
    pub fn wait_compaction(&self, rev: i64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut done = self.removal.done();
        while *done < rev {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            done = self
                .removal
                .finished
                .wait_timeout(done, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }

    /// Runs every batch of the pending removal now, on this thread (tests, tools, and a
    /// caller that wants the space back before it goes on).
    pub fn finish_compaction(&self) -> Result<(), MvccError> {
        while self.compaction_step()? {}
        Ok(())
    }

    /// Removes one batch of what compactions dropped; whether more is left. A batch waits
    /// while a snapshot build or a hash holds a point (at most 100 ms, then it answers that
    /// more is left without having removed anything).
    pub fn compaction_step(&self) -> Result<bool, MvccError> {
        let writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let Some(gate) = self.compaction_gate.try_write() else {
            drop(writer);
            self.compaction_gate
                .wait_unpinned(Duration::from_millis(100));
            return Ok(true);
        };
        let target = self.compacted_revision();
        if target <= self.compaction_finished() {
            return Ok(false);
        }
        let replacements = self.replacements.load(Ordering::SeqCst);
        let mut walk = self.removal.walk.lock().unwrap_or_else(|e| e.into_inner());
        if !walk.is_for(target, replacements) {
            *walk = Walk {
                target,
                replacements,
                since: Some(
                    self.removal
                        .applied
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .unwrap_or_else(Instant::now),
                ),
                ..Walk::default()
            };
        }
        if !walk.versions_done {
            let started = Instant::now();
            let outcome = self.remove_versions(&mut walk);
            self.counts
                .compaction_pause
                .observe(started.elapsed().as_secs_f64() * 1000.0);
            outcome?;
            return Ok(true);
        }
        // Only the history index is left: it is not read below the compacted revision, and
        // applies write it only above, so it goes outside the locks.
        let tree = self.tree();
        drop((walk, gate, writer));
        if super::history::remove_some_history_below(&tree, target, HISTORY_BATCH)? {
            return Ok(true);
        }
        let _writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let walk = self.removal.walk.lock().unwrap_or_else(|e| e.into_inner());
        if !walk.is_for(
            self.compacted_revision(),
            self.replacements.load(Ordering::SeqCst),
        ) {
            return Ok(true); // started again on the next step
        }
        self.tree()
            .insert(META_COMPACT_DONE, &target.to_be_bytes())?;
        if let Some(since) = walk.since {
            self.counts
                .compaction_total
                .observe(since.elapsed().as_secs_f64() * 1000.0);
        }
        *self.removal.done() = target;
        self.removal.finished.notify_all();
        Ok(false)
    }

    /// One batch of the walk over the versions (the caller holds the writer lock and the
    /// gate): each key's versions older than its newest at or below the target go, and
    /// that one too if it is a tombstone, after them. The walk moves on only once its batch
    /// is in; a batch cut short by an error is walked again (removals are idempotent), and
    /// what it removed is counted either way.
    fn remove_versions(&self, walk: &mut Walk) -> Result<(), MvccError> {
        let tree = self.tree();
        let start = match &walk.after {
            Some(key) => Bound::Excluded(key.to_vec()),
            None => Bound::Included(lower_bound(b"").to_vec()),
        };
        let (mut removed, mut freed) = (0u64, 0usize);
        // Value log frames of the records removed, no longer pointed at.
        let mut dropped: Vec<ValuePtr> = Vec::new();
        let mut settled = walk.settled.clone();
        let mut tombstone = walk.tombstone.clone();
        let mut after = walk.after.clone();
        let mut scanned = 0;
        let mut finished = true;
        let outcome = (|| -> Result<(), MvccError> {
            for item in tree.range((start, Bound::Excluded(vec![META_SPACE]))) {
                if scanned >= BATCH {
                    finished = false;
                    break;
                }
                let (raw_key, raw_value) = item?;
                scanned += 1;
                let (prefix, version_rev) = split_record_key(&raw_key)?;
                // A record that does not decode keeps no segment's count (it is only
                // dropped).
                let ptr = value_ptr(&raw_value).ok().flatten();
                let size = raw_key.len() + stored_len_at(&raw_value, ptr.as_ref());
                if !settled.is_empty() && settled == prefix {
                    tree.remove(&raw_key)?;
                    removed += 1;
                    freed += size;
                    dropped.extend(ptr);
                } else {
                    // Another key: the last one's versions are all gone, its tombstone may
                    // go.
                    // (Taken: on an error the walk keeps its old state and looks again.)
                    if let Some((key, size)) = tombstone.take() {
                        tree.remove(key)?;
                        removed += 1;
                        freed += size;
                    }
                    if version_rev <= walk.target {
                        // The newest version at or below the target: it stays unless it is
                        // a tombstone.
                        settled.clear();
                        settled.extend_from_slice(prefix);
                        if Record::decode(&raw_value, false)? == Record::Tombstone {
                            tombstone = Some((raw_key.clone(), size));
                        }
                    }
                }
                after = Some(raw_key);
            }
            if finished && let Some((key, size)) = tombstone.take() {
                tree.remove(key)?;
                removed += 1;
                freed += size;
            }
            Ok(())
        })();
        self.counts.compacted_keys.add(removed);
        self.note_in_use(0, freed);
        self.note_dropped(&dropped);
        outcome?;
        walk.settled = settled;
        walk.tombstone = tombstone;
        walk.after = after;
        walk.versions_done = finished;
        Ok(())
    }

    /// Starts the thread that runs compactions' physical deletes for this store; it stops
    /// when the returned handle drops (or the store does).
    pub fn start_compactor(self: &Arc<Self>) -> std::io::Result<Compactor> {
        let store = Arc::downgrade(self);
        let wake = Arc::clone(&self.removal.wake);
        let thread = std::thread::Builder::new()
            .name("compactor".into())
            .spawn(move || run(store, &wake))?;
        Ok(Compactor {
            wake: Arc::clone(&self.removal.wake),
            thread: Some(thread),
        })
    }
}

/// How often the thread looks for work without being told (a store that opened with a
/// removal unfinished, a failed batch to try again).
const LOOK_EVERY: Duration = Duration::from_secs(1);

fn run(store: Weak<MvccStore>, wake: &Wake) {
    loop {
        {
            let mut state = wake.lock();
            if !state.work && !state.stop {
                state = wake
                    .changed
                    .wait_timeout(state, LOOK_EVERY)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
            if state.stop {
                return;
            }
            state.work = false;
        }
        loop {
            let Some(store) = store.upgrade() else {
                return;
            };
            if wake.lock().stop {
                return;
            }
            let started = Instant::now();
            match store.compaction_step() {
                Ok(true) => {
                    drop(store);
                    std::thread::sleep(PAUSE.max(started.elapsed() * WORK_SHARE));
                }
                Ok(false) => break,
                // Tried again at the next look; a disk that fails here fails the applies
                // too, and they report it.
                Err(_) => break,
            }
        }
    }
}

/// The thread of [`MvccStore::start_compactor`]; dropping it stops the thread and waits
/// for its batch to end.
#[derive(Debug)]
pub struct Compactor {
    wake: Arc<Wake>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Compactor {
    fn drop(&mut self) {
        self.wake.lock().stop = true;
        self.wake.changed.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
