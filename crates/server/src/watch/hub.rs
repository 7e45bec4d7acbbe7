//! The member's watcher registry: which watcher wants which keys, who is caught up, and the
//! catch-up of those who are not (etcd's synced / unsynced / victim scheme).
//!
//! - A **synced** watcher is level with the store: the store hands each applied write's
//!   events to the hub ([`WatchSink`]), which queues the matching ones for the watcher's
//!   stream at once. Nothing here may block: the store's writer lock is held.
//! - An **unsynced** watcher started in the past, or its stream could not take an event
//!   (its queue full, or over its byte budget: the client reads slowly), or a snapshot
//!   replaced the store. A background task reads its events — from the newest revisions
//!   held in memory ([`super::recent`]) when it can, else from the store's history
//!   (revision ordered, at most 1,000 revisions and 3 MiB per read) — queues them when
//!   the stream has room, and moves it back to synced once it is level. A slow watcher
//!   therefore costs neither apply, nor writes, nor other watchers anything, and what it
//!   has pending is bounded by its stream's budget.
//! - A watcher whose next revision falls below the compacted revision is cancelled with
//!   `compact_revision` set, as etcd does.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use bytes::Bytes;
use raftkv_proto::mvccpb::Event;
use raftkv_proto::mvccpb::event::EventType;
use raftkv_storage::mvcc::{HistoryLimits, RangeEnd, WatchSink};
use raftkv_storage::{MvccError, MvccStore};
use tokio::sync::{Notify, mpsc};

use super::answer::SharedEvents;
use super::recent::Recent;

/// Queued deliveries one stream may hold (etcd's `chanBufLen`).
pub(crate) const STREAM_QUEUE: usize = 128;
/// Event bytes one stream may have queued before its watchers are moved aside.
const STREAM_BYTES: usize = 16 << 20;
/// Watchers one catch-up round reads for (etcd's `maxWatchersPerSync`).
const WATCHERS_PER_ROUND: usize = 512;
/// One catch-up read for one watcher: etcd's 1,000 revisions, and (where etcd has no
/// bound) at most the revision that reaches 3 MiB, so that an answer stays within the
/// 4 MiB that gRPC clients accept by default unless one revision alone is larger.
const CATCH_UP: HistoryLimits = HistoryLimits {
    revisions: 1000,
    bytes: 3 << 20,
};
/// How often unsynced watchers are retried when nothing wakes the catch-up task.
const CATCH_UP_EVERY: Duration = Duration::from_millis(100);
/// Watchers and key bytes the whole hub holds at most (a bound against a flood of
/// watch requests; etcd has none).
const HUB_WATCHERS: usize = 1_000_000;
const HUB_KEY_BYTES: usize = 256 << 20;

/// What a watcher wants.
#[derive(Debug, Clone)]
pub struct WatchSpec {
    /// The key (etcd's empty key was already made `"\0"`).
    pub key: Bytes,
    /// The range's end.
    pub end: RangeEnd,
    /// NOPUT: leave out put events.
    pub no_put: bool,
    /// NODELETE: leave out delete events.
    pub no_delete: bool,
}

impl WatchSpec {
    fn wants_key(&self, key: &[u8]) -> bool {
        self.end.contains(&self.key, key)
    }

    fn wants(&self, event: &Event) -> bool {
        let put = event.r#type == EventType::Put as i32;
        !(put && self.no_put || !put && self.no_delete)
    }

    /// The watcher's share of `events`, given the positions of those whose keys it watches
    /// (in order): `all` (made once, shared with every other watcher that takes them all)
    /// when it takes every event, else a copy of those it takes; `None` when it takes none.
    fn select(
        &self,
        events: &[Event],
        keyed: &[usize],
        all: &mut Option<SharedEvents>,
    ) -> Option<SharedEvents> {
        let filtered = self.no_put || self.no_delete;
        if !keyed.is_empty()
            && keyed.len() == events.len()
            && (!filtered || events.iter().all(|e| self.wants(e)))
        {
            return Some(
                all.get_or_insert_with(|| SharedEvents::new(events.to_vec()))
                    .clone(),
            );
        }
        let mine: Vec<Event> = keyed
            .iter()
            .map(|&i| &events[i])
            .filter(|e| self.wants(e))
            .cloned()
            .collect();
        (!mine.is_empty()).then(|| SharedEvents::new(mine))
    }

    fn key_bytes(&self) -> usize {
        self.key.len()
            + match &self.end {
                RangeEnd::Below(end) => end.len(),
                _ => 0,
            }
    }
}

/// What the hub queues for a stream.
#[derive(Debug)]
pub enum Delivery {
    /// Events for one watcher; `revision` is the header's (the write's, or the store's
    /// revision when read from history).
    Events {
        /// The hub's id of the watcher.
        watcher: u64,
        /// The response header's revision.
        revision: i64,
        /// Whole revisions, in order; their bytes count against the stream's budget
        /// until it takes them. Shared by every watcher that takes the same events.
        events: SharedEvents,
    },
    /// The watcher was cancelled because its next revision was compacted.
    Compacted {
        /// The hub's id of the watcher.
        watcher: u64,
        /// The compacted revision.
        compact_revision: i64,
    },
    /// A progress notice at `revision`, queued behind every event up to it: for one
    /// watcher (the periodic notice), or for the stream (`None`: the answer to a progress
    /// request).
    Progress {
        /// The hub's id of the watcher, if it is for one.
        watcher: Option<u64>,
        /// The response header's revision.
        revision: i64,
    },
}

/// What became of a stream's progress request (see [`WatchHub::progress_all`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressAsked {
    /// Queued behind the events: the answer comes as a [`Delivery::Progress`].
    Queued,
    /// A watcher is catching up or the stream is full: ask again later.
    Later,
    /// No watcher of the stream is left: answer now at this revision.
    Now(i64),
}

/// What a stream's two queue ends share.
struct QueueShared {
    /// Event bytes queued and not yet sent.
    queued: AtomicUsize,
    /// A delivery was refused for want of room: once the stream has drained to half, it
    /// wakes the catch-up task at once instead of leaving its watchers to the next
    /// 100 ms round (etcd retries its victims every 10 ms).
    blocked: AtomicBool,
    wake: Arc<Notify>,
    /// The hub's count of open streams, which this one leaves when both its ends are gone.
    open: Arc<AtomicUsize>,
}

impl Drop for QueueShared {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The sending side of one stream's queue, shared by its watchers.
#[derive(Clone)]
pub struct StreamQueue {
    tx: mpsc::Sender<Delivery>,
    shared: Arc<QueueShared>,
}

/// The receiving side: the stream task takes deliveries and returns their bytes.
pub struct StreamInbox {
    rx: mpsc::Receiver<Delivery>,
    shared: Arc<QueueShared>,
}

impl StreamInbox {
    /// The next delivery; `None` once every queue handle is gone.
    pub async fn recv(&mut self) -> Option<Delivery> {
        let delivery = self.rx.recv().await?;
        let shared = &self.shared;
        let mut queued = shared.queued.load(Ordering::Acquire);
        if let Delivery::Events { events, .. } = &delivery {
            let bytes = events.budget();
            queued = shared.queued.fetch_sub(bytes, Ordering::AcqRel) - bytes;
        }
        if shared.blocked.load(Ordering::Acquire)
            && self.rx.len() <= STREAM_QUEUE / 2
            && queued <= STREAM_BYTES / 2
            && shared.blocked.swap(false, Ordering::AcqRel)
        {
            shared.wake.notify_one();
        }
        Some(delivery)
    }
}

/// Why a delivery was not queued.
enum Refused {
    /// The stream has no room now: move the watcher aside and retry later.
    Full,
    /// The stream is gone.
    Closed,
}

impl StreamQueue {
    fn offer(&self, delivery: Delivery) -> Result<(), Refused> {
        let bytes = match &delivery {
            Delivery::Events { events, .. } => events.budget(),
            Delivery::Compacted { .. } | Delivery::Progress { .. } => 0,
        };
        let shared = &self.shared;
        if bytes > 0 && shared.queued.load(Ordering::Acquire) >= STREAM_BYTES {
            shared.blocked.store(true, Ordering::Release);
            return Err(Refused::Full);
        }
        shared.queued.fetch_add(bytes, Ordering::AcqRel);
        self.tx.try_send(delivery).map_err(|e| {
            shared.queued.fetch_sub(bytes, Ordering::AcqRel);
            match e {
                mpsc::error::TrySendError::Full(_) => {
                    shared.blocked.store(true, Ordering::Release);
                    Refused::Full
                }
                mpsc::error::TrySendError::Closed(_) => Refused::Closed,
            }
        })
    }

    fn has_room(&self) -> bool {
        let room =
            self.tx.capacity() > 0 && self.shared.queued.load(Ordering::Acquire) < STREAM_BYTES;
        if !room {
            self.shared.blocked.store(true, Ordering::Release);
        }
        room
    }
}

struct Watcher {
    spec: WatchSpec,
    /// Synced: the lowest revision it takes (above the hub's for a future start).
    /// Unsynced: the next revision to read from history.
    next: i64,
    synced: bool,
    queue: StreamQueue,
}

#[derive(Default)]
struct HubState {
    /// The last revision handed to the hub (or restored).
    rev: i64,
    next_id: u64,
    watchers: HashMap<u64, Watcher>,
    /// Synced single-key watchers by key.
    /// (A set: when a burst moves thousands of one key's watchers aside, each leaves in
    /// O(log n), where a list made the burst O(n²) under the lock that apply waits for.)
    by_key: HashMap<Bytes, BTreeSet<u64>>,
    /// Synced range watchers.
    ranged: HashSet<u64>,
    unsynced: BTreeSet<u64>,
    /// Where the next catch-up round starts choosing among the unsynced.
    cursor: u64,
    key_bytes: usize,
}

impl HubState {
    fn add_synced(&mut self, id: u64) {
        let w = &self.watchers[&id];
        if w.spec.end == RangeEnd::Key {
            self.by_key
                .entry(w.spec.key.clone())
                .or_default()
                .insert(id);
        } else {
            self.ranged.insert(id);
        }
    }

    fn remove_synced(&mut self, id: u64) {
        let Some(w) = self.watchers.get(&id) else {
            return;
        };
        if w.spec.end == RangeEnd::Key {
            if let Some(ids) = self.by_key.get_mut(&w.spec.key) {
                ids.remove(&id);
                if ids.is_empty() {
                    self.by_key.remove(&w.spec.key);
                }
            }
        } else {
            self.ranged.remove(&id);
        }
    }

    fn unsync(&mut self, id: u64, next: i64) {
        self.remove_synced(id);
        if let Some(w) = self.watchers.get_mut(&id) {
            w.synced = false;
            w.next = next;
            self.unsynced.insert(id);
        }
    }

    fn remove(&mut self, id: u64) {
        self.remove_synced(id);
        self.unsynced.remove(&id);
        if let Some(w) = self.watchers.remove(&id) {
            self.key_bytes -= w.spec.key_bytes();
        }
    }
}

/// The member's watchers.
pub struct WatchHub {
    store: Arc<MvccStore>,
    state: Mutex<HubState>,
    /// Wakes the catch-up task (shared with it, so that it waits without keeping the hub,
    /// and through the hub the store, alive).
    wake: Arc<Notify>,
    /// Streams whose queue is open (for `/metrics`).
    open_streams: Arc<AtomicUsize>,
    /// The newest revisions' events while watchers are registered (taken after `state`).
    recent: Mutex<Recent>,
    /// Catch-up reads served from `recent`, and from the store's history (for `/metrics`).
    reads_from_memory: AtomicU64,
    reads_from_store: AtomicU64,
}

/// Why a watcher was not registered.
#[derive(Debug, PartialEq, Eq)]
pub enum RegisterError {
    /// The hub holds as many watchers (or key bytes) as it may.
    Full,
}

impl WatchHub {
    /// A hub over `store`, receiving its applied writes, with its catch-up task running
    /// until the hub is dropped.
    pub fn start(store: Arc<MvccStore>) -> Arc<Self> {
        let hub = Arc::new(Self {
            store: store.clone(),
            state: Mutex::new(HubState::default()),
            wake: Arc::new(Notify::new()),
            open_streams: Arc::default(),
            recent: Mutex::new(Recent::new(0)),
            reads_from_memory: AtomicU64::new(0),
            reads_from_store: AtomicU64::new(0),
        });
        // The sink holds the hub weakly: the store outlives it otherwise.
        let sink = Arc::new(HubSink(Arc::downgrade(&hub)));
        let rev = store.set_watch_sink(sink);
        // A write applied since may have reached the hub already.
        let mut state = hub.lock();
        state.rev = state.rev.max(rev);
        drop(state);
        tokio::spawn(catch_up_task(Arc::downgrade(&hub), hub.wake.clone()));
        hub
    }

    fn lock(&self) -> MutexGuard<'_, HubState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn recent(&self) -> MutexGuard<'_, Recent> {
        self.recent.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Catch-up reads served from the newest revisions held in memory, and from the
    /// store's history.
    pub fn catch_up_reads(&self) -> (u64, u64) {
        (
            self.reads_from_memory.load(Ordering::Relaxed),
            self.reads_from_store.load(Ordering::Relaxed),
        )
    }

    /// A new stream's queue: its two ends.
    pub fn stream_queue(&self) -> (StreamQueue, StreamInbox) {
        let (tx, rx) = mpsc::channel(STREAM_QUEUE);
        self.open_streams.fetch_add(1, Ordering::Relaxed);
        let shared = Arc::new(QueueShared {
            queued: AtomicUsize::new(0),
            blocked: AtomicBool::new(false),
            wake: self.wake.clone(),
            open: self.open_streams.clone(),
        });
        (
            StreamQueue {
                tx,
                shared: shared.clone(),
            },
            StreamInbox { rx, shared },
        )
    }

    /// The revision the hub has handed on up to.
    pub fn revision(&self) -> i64 {
        self.lock().rev
    }

    /// The store the hub watches.
    pub fn store(&self) -> &Arc<MvccStore> {
        &self.store
    }

    /// Registers a watcher from `start` (0: from the next write) and returns its id and the
    /// hub's revision at that moment.
    pub fn register(
        &self,
        spec: WatchSpec,
        start: i64,
        queue: StreamQueue,
    ) -> Result<(u64, i64), RegisterError> {
        let mut state = self.lock();
        if state.watchers.len() >= HUB_WATCHERS
            || state.key_bytes + spec.key_bytes() > HUB_KEY_BYTES
        {
            return Err(RegisterError::Full);
        }
        let rev = state.rev;
        let id = state.next_id;
        state.next_id += 1;
        state.key_bytes += spec.key_bytes();
        let synced = start == 0 || start > rev;
        state.watchers.insert(
            id,
            Watcher {
                spec,
                next: if synced { start.max(rev + 1) } else { start },
                synced,
                queue,
            },
        );
        if synced {
            state.add_synced(id);
        } else {
            state.unsynced.insert(id);
            drop(state);
            self.wake.notify_one();
        }
        Ok((id, rev))
    }

    /// Removes a watcher (nothing more is queued for it).
    pub fn cancel(&self, id: u64) {
        self.lock().remove(id);
    }

    /// Queues the periodic progress notice of watcher `id` behind the events already
    /// queued for it, if it is synced (etcd's `progress`: a watcher catching up, or whose
    /// stream is full, is getting events and is sent none). Under the hub's lock, where
    /// writes queue their events, so the notice's revision never runs ahead of them.
    pub fn progress(&self, id: u64) {
        let state = self.lock();
        if let Some(w) = state.watchers.get(&id).filter(|w| w.synced) {
            let _ = w.queue.offer(Delivery::Progress {
                watcher: Some(id),
                revision: state.rev,
            });
        }
    }

    /// The answer to a progress request on the stream of `queue`, whose watchers are
    /// `ids`: queued behind their events once every one of them is synced, never before
    /// (etcd 3.4.23 answered at once, ahead of events still to be sent; etcd's fix for
    /// #15220, in later 3.4 releases, waits as this does, and clients such as Kubernetes'
    /// watch cache rely on it).
    pub fn progress_all(&self, queue: &StreamQueue, ids: &[u64]) -> ProgressAsked {
        let state = self.lock();
        let mut any = false;
        for id in ids {
            match state.watchers.get(id) {
                Some(w) if !w.synced => return ProgressAsked::Later,
                Some(_) => any = true,
                None => {} // removed (compacted, closed): nothing to wait for
            }
        }
        if !any {
            return ProgressAsked::Now(state.rev);
        }
        match queue.offer(Delivery::Progress {
            watcher: None,
            revision: state.rev,
        }) {
            Ok(()) | Err(Refused::Closed) => ProgressAsked::Queued,
            Err(Refused::Full) => ProgressAsked::Later,
        }
    }

    /// How many watch streams are open.
    pub fn open_streams(&self) -> usize {
        self.open_streams.load(Ordering::Relaxed)
    }

    /// How many watchers are registered, and how many of them are catching up.
    pub fn counts(&self) -> (usize, usize) {
        let state = self.lock();
        (state.watchers.len(), state.unsynced.len())
    }

    /// Queues a write's events for the synced watchers that want them.
    fn applied(&self, rev: i64, events: &[Event]) {
        let mut state = self.lock();
        state.rev = rev;
        {
            let mut recent = self.recent();
            if !state.watchers.is_empty() {
                recent.push(rev, events);
            } else if !recent.is_empty() {
                recent.clear(rev + 1);
            }
        }
        // Which of the write's events each interested watcher's keys match, as (watcher's
        // slot, event position): a watcher's share then costs what it matched, not a scan
        // of the whole write. Most take every event, and those share one copy (encoded
        // once for all of them).
        let mut ids: Vec<u64> = Vec::new();
        let mut counts: Vec<usize> = Vec::new();
        let mut hits: Vec<(usize, usize)> = Vec::new();
        let mut slot: HashMap<u64, usize> = HashMap::new();
        let mut add = |id: u64, at: usize| {
            let s = *slot.entry(id).or_insert_with(|| {
                ids.push(id);
                counts.push(0);
                ids.len() - 1
            });
            counts[s] += 1;
            hits.push((s, at));
        };
        for (at, event) in events.iter().enumerate() {
            let key = event_key(event);
            if let Some(ids) = state.by_key.get(key) {
                for &id in ids {
                    add(id, at);
                }
            }
            for &id in &state.ranged {
                if state.watchers[&id].spec.wants_key(key) {
                    add(id, at);
                }
            }
        }
        // Stable, so each watcher's positions stay in the write's order (a one-event write,
        // the common case, is already in slot order).
        hits.sort_by_key(|&(s, _)| s);
        let positions: Vec<usize> = hits.into_iter().map(|(_, at)| at).collect();
        let mut from = 0;
        let mut all: Option<SharedEvents> = None;
        let mut moved = false;
        for (id, count) in ids.into_iter().zip(counts) {
            let keyed = &positions[from..from + count];
            from += count;
            let w = &state.watchers[&id];
            if w.next > rev {
                continue; // starts at a later revision
            }
            let Some(events) = w.spec.select(events, keyed, &mut all) else {
                continue;
            };
            match w.queue.offer(Delivery::Events {
                watcher: id,
                revision: rev,
                events,
            }) {
                Ok(()) => {}
                Err(Refused::Full) => {
                    state.unsync(id, rev);
                    moved = true;
                }
                Err(Refused::Closed) => state.remove(id),
            }
        }
        drop(state);
        if moved {
            self.wake.notify_one();
        }
    }

    /// A snapshot replaced the store: every synced watcher catches up from history.
    fn replaced(&self, rev: i64) {
        let mut state = self.lock();
        let next = state.rev + 1;
        let synced: Vec<u64> = state
            .watchers
            .iter()
            .filter(|(_, w)| w.synced)
            .map(|(&id, _)| id)
            .collect();
        for id in synced {
            let from = state.watchers[&id].next.max(next);
            state.unsync(id, from);
        }
        state.rev = rev;
        self.recent().clear(rev + 1);
        drop(state);
        self.wake.notify_one();
    }

    /// One catch-up round for up to [`WATCHERS_PER_ROUND`] unsynced watchers, taken in turn
    /// from where the last round stopped (so none waits behind others whose streams are
    /// full). Watchers that need the same revisions share one history read. Returns
    /// whether any watcher remains unsynced.
    fn catch_up_round(&self) -> Round {
        let (to, chosen) = {
            let mut state = self.lock();
            let cursor = state.cursor;
            let ids: Vec<u64> = state
                .unsynced
                .range(cursor..)
                .chain(state.unsynced.range(..cursor))
                .take(WATCHERS_PER_ROUND)
                .copied()
                .collect();
            if let Some(&last) = ids.last() {
                state.cursor = last + 1;
            }
            let chosen: Vec<Chosen> = ids
                .into_iter()
                .map(|id| {
                    let w = &state.watchers[&id];
                    Chosen {
                        id,
                        spec: w.spec.clone(),
                        next: w.next,
                        queue: w.queue.clone(),
                    }
                })
                .collect();
            (state.rev, chosen)
        };
        let compacted = self.store.compacted_revision();
        let mut outcomes = Vec::with_capacity(chosen.len());
        let mut by_start: HashMap<i64, Vec<Chosen>> = HashMap::new();
        for c in chosen {
            if c.next < compacted {
                let notice = Delivery::Compacted {
                    watcher: c.id,
                    compact_revision: compacted,
                };
                let outcome = match c.queue.offer(notice) {
                    Ok(()) | Err(Refused::Closed) => Outcome::Remove,
                    Err(Refused::Full) => Outcome::Stay,
                };
                outcomes.push((c.id, outcome));
            } else if c.queue.has_room() {
                by_start.entry(c.next).or_default().push(c);
            }
        }
        for (next, group) in by_start {
            outcomes.extend(self.catch_up(next, to, compacted, &group));
        }
        let mut state = self.lock();
        let progressed = outcomes
            .iter()
            .any(|(_, o)| matches!(o, Outcome::Reached(_)));
        for (id, outcome) in outcomes {
            match outcome {
                Outcome::Remove => state.remove(id),
                Outcome::Stay => {}
                Outcome::Reached(next) => {
                    let rev = state.rev;
                    if let Some(w) = state.watchers.get_mut(&id).filter(|w| !w.synced) {
                        w.next = next;
                        if next > rev {
                            w.synced = true;
                            state.unsynced.remove(&id);
                            state.add_synced(id);
                        }
                    }
                }
            }
        }
        if state.unsynced.is_empty() {
            Round::Idle
        } else if progressed {
            Round::Progressed
        } else {
            Round::Stuck
        }
    }

    /// Reads the history from `next` up to `to` once for a group of watchers that all start
    /// there, and queues each one's events. The newest revisions come from memory; the
    /// compacted revision itself from the store (compaction removed the tombstones at it,
    /// and a watcher starting there must not see them).
    fn catch_up(
        &self,
        next: i64,
        to: i64,
        compacted: i64,
        group: &[Chosen],
    ) -> Vec<(u64, Outcome)> {
        let wanted = |key: &[u8]| group.iter().any(|c| c.spec.wants_key(key));
        let held = (next > compacted)
            .then(|| self.recent().slice(next, to))
            .flatten();
        let batch = if let Some(held) = held {
            self.reads_from_memory.fetch_add(1, Ordering::Relaxed);
            held.batch(CATCH_UP, &wanted)
        } else {
            self.reads_from_store.fetch_add(1, Ordering::Relaxed);
            match self
                .store
                .history(next, to, CATCH_UP, &mut |key| wanted(key))
            {
                Ok(batch) => batch,
                // Compacted past `next` while it read: the next round tells them so.
                Err(MvccError::Compacted) => {
                    return group.iter().map(|c| (c.id, Outcome::Stay)).collect();
                }
                Err(e) => {
                    tracing::error!(error = %e, from = next, "reading history for watchers");
                    return group.iter().map(|c| (c.id, Outcome::Stay)).collect();
                }
            }
        };
        let mut all: Option<SharedEvents> = None;
        group
            .iter()
            .map(|c| {
                let keyed: Vec<usize> = (0..batch.events.len())
                    .filter(|&i| c.spec.wants_key(event_key(&batch.events[i])))
                    .collect();
                let Some(events) = c.spec.select(&batch.events, &keyed, &mut all) else {
                    return (c.id, Outcome::Reached(batch.next));
                };
                let outcome = match c.queue.offer(Delivery::Events {
                    watcher: c.id,
                    revision: to,
                    events,
                }) {
                    Ok(()) => Outcome::Reached(batch.next),
                    Err(Refused::Full) => Outcome::Stay,
                    Err(Refused::Closed) => Outcome::Remove,
                };
                (c.id, outcome)
            })
            .collect()
    }
}

/// How a catch-up round ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Round {
    /// No watcher is unsynced.
    Idle,
    /// Some watchers got events and watchers remain: go on after a pause as long as the round
    /// took (etcd's `syncWatchersLoop` yields the time it took).
    Progressed,
    /// Watchers remain and none caught up (their streams are full): wait for a stream to
    /// drain, or 100 ms.
    Stuck,
}

/// An unsynced watcher chosen for a catch-up round.
struct Chosen {
    id: u64,
    spec: WatchSpec,
    next: i64,
    queue: StreamQueue,
}

enum Outcome {
    Remove,
    Stay,
    /// Everything below this revision was queued.
    Reached(i64),
}

/// An event's key (empty if it has none).
fn event_key(event: &Event) -> &[u8] {
    event.kv.as_ref().map(|kv| &kv.key[..]).unwrap_or_default()
}

pub(crate) fn event_bytes(events: &[Event]) -> usize {
    events
        .iter()
        .filter_map(|e| e.kv.as_ref())
        .map(|kv| kv.key.len() + kv.value.len() + 32)
        .sum()
}

struct HubSink(Weak<WatchHub>);

impl WatchSink for HubSink {
    fn applied(&self, revision: i64, events: &[Event]) {
        if let Some(hub) = self.0.upgrade() {
            hub.applied(revision, events);
        }
    }

    fn replaced(&self, revision: i64) {
        if let Some(hub) = self.0.upgrade() {
            hub.replaced(revision);
        }
    }
}

/// Catches unsynced watchers up: woken when one appears or a full stream drains, again
/// after as long as the last round took while rounds make progress, and every 100 ms
/// while watchers remain whose streams had no room. `Notify` keeps a wake-up that
/// comes while a round runs, so none is lost.
async fn catch_up_task(hub: Weak<WatchHub>, wake: Arc<Notify>) {
    loop {
        let Some(round) = hub.upgrade() else { return };
        let started = std::time::Instant::now();
        let ended = tokio::task::spawn_blocking(move || round.catch_up_round())
            .await
            .unwrap_or(Round::Stuck);
        let wait = match ended {
            Round::Progressed => started
                .elapsed()
                .clamp(Duration::from_millis(1), CATCH_UP_EVERY),
            Round::Stuck => CATCH_UP_EVERY,
            Round::Idle => Duration::from_secs(1), // only to notice that the hub is gone
        };
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raftkv_proto::etcdserverpb::{CompactionRequest, PutRequest};
    use raftkv_proto::raftkvpb::{Command, command};
    use raftkv_storage::{AppliedState, MvccConfig};

    fn put(store: &MvccStore, key: &str, value: &str) {
        let cmd = Command {
            op: Some(command::Op::Put(PutRequest {
                key: Bytes::copy_from_slice(key.as_bytes()),
                value: Bytes::copy_from_slice(value.as_bytes()),
                ..Default::default()
            })),
            ..Default::default()
        };
        store.apply(&cmd, &AppliedState::default()).unwrap();
    }

    fn spec(key: &str, end: RangeEnd) -> WatchSpec {
        WatchSpec {
            key: Bytes::copy_from_slice(key.as_bytes()),
            end,
            no_put: false,
            no_delete: false,
        }
    }

    /// Every (key, revision) delivered for `watcher` until `count` arrived.
    async fn take(inbox: &mut StreamInbox, watcher: u64, count: usize) -> Vec<(String, i64)> {
        let mut got = Vec::new();
        while got.len() < count {
            let delivery = tokio::time::timeout(Duration::from_secs(10), inbox.recv())
                .await
                .expect("deliveries keep coming")
                .expect("queue open");
            if let Delivery::Events {
                watcher: w, events, ..
            } = delivery
            {
                assert_eq!(w, watcher);
                got.extend(events.events().iter().map(|e| {
                    let kv = e.kv.as_ref().unwrap();
                    (
                        String::from_utf8_lossy(&kv.key).into_owned(),
                        kv.mod_revision,
                    )
                }));
            }
        }
        got
    }

    fn apply(store: &MvccStore, op: command::Op) {
        let cmd = Command {
            op: Some(op),
            ..Default::default()
        };
        store.apply(&cmd, &AppliedState::default()).unwrap();
    }

    /// Every delivery in `inbox` now, by watcher (one each expected).
    fn deliveries(inbox: &mut StreamInbox) -> HashMap<u64, SharedEvents> {
        let mut got = HashMap::new();
        while let Ok(delivery) = inbox.rx.try_recv() {
            if let Delivery::Events {
                watcher, events, ..
            } = delivery
            {
                assert!(got.insert(watcher, events).is_none(), "one delivery each");
            }
        }
        got
    }

    fn keys_and_types(events: &SharedEvents) -> Vec<(String, i32)> {
        events
            .events()
            .iter()
            .map(|e| {
                let key = &e.kv.as_ref().unwrap().key;
                (String::from_utf8_lossy(key).into_owned(), e.r#type)
            })
            .collect()
    }

    /// Watchers that take all of a write's events share one copy of them (and so one
    /// encoding); a watcher taking part of them gets its own; live and in catch-up.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn watchers_taking_the_same_events_share_one_copy() {
        use raftkv_proto::etcdserverpb::request_op::Request;
        use raftkv_proto::etcdserverpb::{DeleteRangeRequest, RequestOp, TxnRequest};
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(MvccStore::open(dir.path(), &MvccConfig::default()).unwrap());
        let hub = WatchHub::start(store.clone());
        let (queue, mut inbox) = hub.stream_queue();
        let register =
            |spec: WatchSpec, start: i64| hub.register(spec, start, queue.clone()).unwrap().0;
        let all_a = register(spec("k", RangeEnd::Unbounded), 0);
        let all_b = register(spec("k", RangeEnd::Unbounded), 0);
        let one = register(spec("k1", RangeEnd::Key), 0);
        let deletes = register(
            WatchSpec {
                no_put: true,
                ..spec("k", RangeEnd::Unbounded)
            },
            0,
        );
        let put_op = |key: &str| RequestOp {
            request: Some(Request::RequestPut(PutRequest {
                key: Bytes::copy_from_slice(key.as_bytes()),
                value: Bytes::from_static(b"v"),
                ..Default::default()
            })),
        };
        // One revision, two events.
        apply(
            &store,
            command::Op::Txn(TxnRequest {
                success: vec![put_op("k1"), put_op("k2")],
                ..Default::default()
            }),
        );
        let got = deliveries(&mut inbox);
        assert_eq!(got.len(), 3, "the delete watcher takes none of two puts");
        assert!(got[&all_a].ptr_eq(&got[&all_b]));
        assert_eq!(
            keys_and_types(&got[&all_a]),
            [("k1".into(), 0), ("k2".into(), 0)]
        );
        assert!(!got[&one].ptr_eq(&got[&all_a]));
        assert_eq!(keys_and_types(&got[&one]), [("k1".into(), 0)]);
        // A delete of k1 alone: every watcher takes all of it, and all share it.
        apply(
            &store,
            command::Op::DeleteRange(DeleteRangeRequest {
                key: Bytes::from_static(b"k1"),
                ..Default::default()
            }),
        );
        let got = deliveries(&mut inbox);
        assert_eq!(got.len(), 4);
        for id in [all_b, one, deletes] {
            assert!(got[&id].ptr_eq(&got[&all_a]));
        }
        assert_eq!(keys_and_types(&got[&deletes]), [("k1".into(), 1)]);
        // A put and a delete in one revision: the range watchers share both, the delete
        // watcher and a watcher of the second key each get their own part.
        let two = register(spec("k2", RangeEnd::Key), 0);
        apply(
            &store,
            command::Op::Txn(TxnRequest {
                success: vec![
                    put_op("k3"),
                    RequestOp {
                        request: Some(Request::RequestDeleteRange(DeleteRangeRequest {
                            key: Bytes::from_static(b"k2"),
                            ..Default::default()
                        })),
                    },
                ],
                ..Default::default()
            }),
        );
        let got = deliveries(&mut inbox);
        assert_eq!(got.len(), 4, "the k1 watcher takes nothing");
        assert!(got[&all_a].ptr_eq(&got[&all_b]));
        assert_eq!(
            keys_and_types(&got[&all_a]),
            [("k3".into(), 0), ("k2".into(), 1)]
        );
        assert_eq!(keys_and_types(&got[&deletes]), [("k2".into(), 1)]);
        assert_eq!(keys_and_types(&got[&two]), [("k2".into(), 1)]);
        assert!(!got[&two].ptr_eq(&got[&deletes]));
        hub.cancel(two);
        // Catch-up from the past: a group starting at the same revision reads once, and
        // the two range watchers in it share again.
        let chosen = |id: u64, spec: WatchSpec| Chosen {
            id,
            spec,
            next: 1,
            queue: queue.clone(),
        };
        let (past_a, past_b, past_one) = (100, 101, 102);
        let group = [
            chosen(past_a, spec("k", RangeEnd::Unbounded)),
            chosen(past_b, spec("k", RangeEnd::Unbounded)),
            chosen(past_one, spec("k2", RangeEnd::Key)),
        ];
        let outcomes = hub.catch_up(1, hub.revision(), store.compacted_revision(), &group);
        assert!(
            outcomes
                .iter()
                .all(|(_, o)| matches!(o, Outcome::Reached(5)))
        );
        let got = deliveries(&mut inbox);
        assert!(got[&past_a].ptr_eq(&got[&past_b]));
        assert_eq!(
            keys_and_types(&got[&past_a]),
            [
                ("k1".into(), 0),
                ("k2".into(), 0),
                ("k1".into(), 1),
                ("k3".into(), 0),
                ("k2".into(), 1)
            ]
        );
        assert_eq!(
            keys_and_types(&got[&past_one]),
            [("k2".into(), 0), ("k2".into(), 1)]
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_queue_moves_a_watcher_aside_and_it_catches_up_without_gaps() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(MvccStore::open(dir.path(), &MvccConfig::default()).unwrap());
        let hub = WatchHub::start(store.clone());
        let (queue, mut inbox) = hub.stream_queue();
        let (id, rev) = hub.register(spec("a", RangeEnd::Key), 0, queue).unwrap();
        assert_eq!(rev, 1);
        // Nobody reads: the queue fills at 128 answers, the rest must come from history.
        for i in 0..500 {
            put(&store, "a", &format!("{i}"));
        }
        assert_eq!(hub.counts(), (1, 1), "moved aside, not dropped");
        let got = take(&mut inbox, id, 500).await;
        let want: Vec<_> = (2..502).map(|r| ("a".to_string(), r)).collect();
        assert_eq!(got, want);
        let (memory, from_store) = hub.catch_up_reads();
        assert!(memory > 0, "caught up from the revisions held in memory");
        assert_eq!(from_store, 0, "the store's history was not needed");
        // Level again: the next write comes straight from apply.
        tokio::time::timeout(Duration::from_secs(5), async {
            while hub.counts().1 != 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("synced again");
        put(&store, "a", "last");
        assert_eq!(take(&mut inbox, id, 1).await, [("a".to_string(), 502)]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn revisions_are_held_only_while_watchers_exist_and_until_the_store_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(MvccStore::open(dir.path(), &MvccConfig::default()).unwrap());
        let hub = WatchHub::start(store.clone());
        put(&store, "a", "1");
        assert!(hub.recent().is_empty(), "no watcher, nothing held");
        let (queue, _inbox) = hub.stream_queue();
        let (id, _) = hub.register(spec("a", RangeEnd::Key), 0, queue).unwrap();
        put(&store, "a", "2");
        put(&store, "b", "3");
        assert!(hub.recent().slice(3, 4).is_some());
        // A snapshot replaced the store: what is held no longer describes it.
        hub.replaced(10);
        assert!(hub.recent().is_empty());
        assert!(hub.recent().slice(3, 4).is_none());
        hub.cancel(id);
        put(&store, "a", "4");
        assert!(hub.recent().is_empty(), "the last watcher left");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn past_starts_catch_up_and_compaction_cancels_those_below_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(MvccStore::open(dir.path(), &MvccConfig::default()).unwrap());
        for i in 0..10 {
            put(&store, &format!("k{i}"), "v"); // revisions 2..=11
        }
        let hub = WatchHub::start(store.clone());
        let (queue, mut inbox) = hub.stream_queue();
        let (ranged, _) = hub
            .register(
                spec("k3", RangeEnd::Below(b"k6".to_vec())),
                1,
                queue.clone(),
            )
            .unwrap();
        let got = take(&mut inbox, ranged, 3).await;
        assert_eq!(got, [("k3".into(), 5), ("k4".into(), 6), ("k5".into(), 7)]);
        // Written before the hub existed: only the store has them.
        assert_eq!(hub.catch_up_reads().0, 0);
        assert!(hub.catch_up_reads().1 > 0);
        let compact = Command {
            op: Some(command::Op::Compaction(CompactionRequest {
                revision: 8,
                physical: true,
            })),
            ..Default::default()
        };
        store.apply(&compact, &AppliedState::default()).unwrap();
        let (below, _) = hub
            .register(spec("k", RangeEnd::Unbounded), 7, queue.clone())
            .unwrap();
        let delivery = tokio::time::timeout(Duration::from_secs(5), inbox.recv())
            .await
            .unwrap()
            .unwrap();
        assert!(matches!(
            delivery,
            Delivery::Compacted { watcher, compact_revision: 8 } if watcher == below
        ));
        // At the compacted revision itself: served, as etcd serves it.
        let (at, _) = hub.register(spec("k6", RangeEnd::Key), 8, queue).unwrap();
        assert_eq!(take(&mut inbox, at, 1).await, [("k6".to_string(), 8)]);
        assert_eq!(hub.counts().0, 2, "the compacted watcher is gone");
    }
}
