//! The Raft log and vote: a write-ahead log of preallocated segment files ([`crate::wal`]).
//!
//! The files, their records and recovery are `wal.rs`'s. What is here: a synchronous API
//! over it for openraft's log store, an append that reports durability through a callback,
//! and the pacer.
//!
//! Durability contract: `append` writes the entries (into the page cache) and queues a
//! *synced* flush; `on_flushed` runs after the fdatasync that covers them. Under load that
//! flush may be held back briefly by this layer's pacer (adaptive group commit, see
//! [`RaftLogStore::append`]): with many writers, one fdatasync per flush's time instead of
//! one per append cut the leader's CPU per write by about 30 % and raised 100-client put/s
//! by about as much. `save_vote`, `truncate_from` and `purge_upto` wait for their own synced
//! flush before returning.

use std::fmt;
use std::io;
use std::path::Path;
use std::sync::mpsc::sync_channel;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::wal::Wal;

/// The largest entry payload accepted, in bytes. Larger lengths in a record are treated as
/// damage: they are refused before anything is allocated for them.
pub const MAX_ENTRY_BYTES: usize = 64 << 20;

/// A log position: the term of the leader that wrote it and its index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct LogId {
    /// Term of the leader that created the entry.
    pub term: u64,
    /// Position in the log, from 1.
    pub index: u64,
}

impl fmt::Display for LogId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.term, self.index)
    }
}

/// The WAL flush worker's cumulative counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlushStats {
    /// Flush batches that ended in an fsync.
    pub syncs: u64,
    /// Time spent in those fsyncs, in microseconds.
    pub sync_us: u64,
    /// The latest fsync's time, in microseconds.
    pub last_sync_us: u64,
    /// Bytes written.
    pub write_bytes: u64,
}

/// Runs a closure when a flush completes.
pub struct FlushCallback(Box<dyn FnOnce(io::Result<()>) + Send>);

impl FlushCallback {
    /// Wraps `f`, which receives the flush's outcome.
    pub fn new(f: impl FnOnce(io::Result<()>) + Send + 'static) -> Self {
        Self(Box::new(f))
    }
}

impl FlushCallback {
    /// Runs the closure with the flush's outcome.
    pub(crate) fn call(self, res: io::Result<()>) {
        (self.0)(res)
    }
}

/// Tuning for the log.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// The longest an append's fdatasync may be held back so that more appends share it
    /// (adaptive group commit, see [`RaftLogStore::append`]). Appends are held back only
    /// while they arrive faster than one per this interval, and then for no longer than
    /// the recent flushes took, so a lone writer never waits. Zero turns holding off.
    pub max_linger: Duration,
    /// Payload bytes of the newest entries kept in memory for reads (older ones are read
    /// from the segment files).
    pub cache_bytes: usize,
    /// The size of a segment file, allocated when it is created (purge unlinks whole
    /// segments).
    pub chunk_bytes: usize,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            max_linger: Duration::from_micros(400),
            cache_bytes: 64 << 20,
            chunk_bytes: 64 << 20,
        }
    }
}

/// Where the log stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LogState {
    /// The last entry's id (or the last purged one if the log is empty).
    pub last: Option<LogId>,
    /// Everything up to and including this id has been purged.
    pub purged: Option<LogId>,
}

/// The Raft log and vote of one member.
pub struct RaftLogStore {
    shared: Arc<Shared>,
    pacer: Option<std::thread::JoinHandle<()>>,
}

/// What the store and its pacer thread share.
///
/// Lock order: `log`, then `pacing`. Flush callbacks run on the WAL's flush worker and
/// take only `pacing` (a thread holding `log` may be waiting for that worker: its queue is
/// bounded by bytes).
struct Shared {
    log: Mutex<Wal>,
    pace: Arc<Pace>,
    max_linger: Duration,
}

/// The pacing state and its wake-ups, shared with flush callbacks (which must not own the
/// log: dropping the last reference to it on the flush worker would make the WAL join
/// its own thread).
struct Pace {
    pacing: Mutex<Pacing>,
    wake: Condvar,
}

impl Pace {
    fn lock(&self) -> MutexGuard<'_, Pacing> {
        self.pacing.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Adaptive group commit: appends' callbacks held back for one shared flush.
#[derive(Default)]
struct Pacing {
    /// Callbacks of appends whose flush is not asked for yet, oldest first.
    pending: Vec<FlushCallback>,
    /// When the oldest of them was appended.
    first_pending: Option<Instant>,
    /// Flushes asked for by the pacer and not completed.
    in_flight: usize,
    /// The previous append, and the moving average of the time between appends.
    last_append: Option<Instant>,
    gap_us: f64,
    /// Moving average of how long a flush took, from being asked for to its callback.
    flush_us: f64,
    /// When the latest paced flush completed.
    last_done: Option<Instant>,
    closed: bool,
}

/// A time fed into the pacing averages, in microseconds, capped at one second.
fn sample_us(d: Duration) -> f64 {
    d.as_micros().min(1_000_000) as f64
}

/// One step of the pacing averages (a 1/8 moving average).
fn average_in(average: &mut f64, sample: f64) {
    *average += (sample - *average) / 8.0;
}

impl Pacing {
    /// Folds one append into the arrival rate; whether it should wait for company.
    fn arrive(&mut self, now: Instant, max_linger: Duration) -> bool {
        match self.last_append.replace(now) {
            Some(prev) => average_in(&mut self.gap_us, sample_us(now.duration_since(prev))),
            None => self.gap_us = sample_us(Duration::MAX),
        }
        // Hold back only when another append is due within the linger (so one is likely
        // to share the flush): a lone or slow writer flushes at once.
        !max_linger.is_zero() && self.gap_us < self.linger(max_linger).as_micros() as f64
    }

    /// How long the oldest pending append may wait: as long as a flush takes (one flush's
    /// worth of appends then shares the next), within the configured bound.
    fn linger(&self, max_linger: Duration) -> Duration {
        Duration::from_micros(self.flush_us as u64).clamp(
            Duration::from_micros(50),
            max_linger.max(Duration::from_micros(50)),
        )
    }

    fn take(&mut self) -> Vec<FlushCallback> {
        self.first_pending = None;
        std::mem::take(&mut self.pending)
    }
}

/// The callbacks of appends that share one flush; every one of them is called exactly once,
/// in order, with the flush's outcome (or an error if the flush never ran).
struct SharedFlush {
    callbacks: Vec<FlushCallback>,
    asked: Instant,
    pace: Arc<Pace>,
    paced: bool,
}

impl SharedFlush {
    fn finish(&mut self, res: &io::Result<()>) {
        // The pacing state first, so the pacer may go on while the callbacks run.
        let mut p = self.pace.lock();
        average_in(&mut p.flush_us, sample_us(self.asked.elapsed()));
        if self.paced {
            p.in_flight = p.in_flight.saturating_sub(1);
            p.last_done = Some(Instant::now());
        }
        drop(p);
        self.pace.wake.notify_all();
        self.paced = false;
        for cb in self.callbacks.drain(..) {
            cb.call(match res {
                Ok(()) => Ok(()),
                Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
            });
        }
    }
}

impl Drop for SharedFlush {
    fn drop(&mut self) {
        if !self.callbacks.is_empty() || self.paced {
            self.finish(&Err(io::Error::other("log flush worker stopped")));
        }
    }
}

impl Shared {
    fn lock_log(&self) -> MutexGuard<'_, Wal> {
        self.log.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Asks for one synced flush covering everything appended so far; the callbacks held
    /// back run after it, before `last` (if any). `log` is held, so flushes are asked for
    /// in the order their data was appended and callbacks run in log order.
    fn flush(
        self: &Arc<Self>,
        log: &mut Wal,
        last: Option<FlushCallback>,
        paced: bool,
    ) -> io::Result<()> {
        let mut callbacks = {
            let mut p = self.pace.lock();
            if paced {
                if p.pending.is_empty() {
                    // A direct flush took them between the pacer's decision and now.
                    return Ok(());
                }
                p.in_flight += 1;
            }
            p.take()
        };
        callbacks.extend(last);
        let flush = FlushCallback::new({
            let mut shared_flush = SharedFlush {
                callbacks,
                asked: Instant::now(),
                pace: self.pace.clone(),
                paced,
            };
            move |res| shared_flush.finish(&res)
        });
        log.flush(flush)
    }

    /// The pacer thread: asks for the flush of held-back appends once no paced flush is
    /// running and a linger has passed since both the oldest held-back append and the end
    /// of the previous paced flush (so under steady load flushes are a flush's time apart,
    /// and each carries every append that came meanwhile).
    fn run_pacer(self: Arc<Self>) {
        loop {
            {
                let mut p = self.pace.lock();
                loop {
                    if p.pending.is_empty() {
                        if p.closed {
                            return;
                        }
                        p = self.pace.wake.wait(p).unwrap_or_else(|e| e.into_inner());
                        continue;
                    }
                    if p.closed {
                        break;
                    }
                    let since = match (p.first_pending, p.last_done) {
                        (Some(a), Some(b)) => a.max(b),
                        (a, b) => a.or(b).unwrap_or_else(Instant::now),
                    };
                    let due = since + p.linger(self.max_linger);
                    let now = Instant::now();
                    if p.in_flight == 0 && now >= due {
                        break;
                    }
                    let wait = if p.in_flight > 0 {
                        self.max_linger.max(Duration::from_millis(1))
                    } else {
                        due - now
                    };
                    p = self
                        .pace
                        .wake
                        .wait_timeout(p, wait)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
            }
            let mut log = self.lock_log();
            // An error here means the flush worker has stopped: the held-back callbacks
            // were handed to the flush and have been answered with the error.
            let _ = self.flush(&mut log, None, true);
        }
    }
}

impl Drop for RaftLogStore {
    fn drop(&mut self) {
        self.shared.pace.lock().closed = true;
        self.shared.pace.wake.notify_all();
        if let Some(pacer) = self.pacer.take() {
            let _ = pacer.join();
        }
    }
}

impl RaftLogStore {
    /// Opens (or creates) the log in directory `dir`, recovering from a crash: an
    /// incomplete record at the tail is cut off; a damaged record anywhere is an error.
    pub fn open(dir: &Path, config: &LogConfig) -> io::Result<Self> {
        crate::legacy_wal::upgrade(dir, config.chunk_bytes as u64, config.cache_bytes)?;
        let log = Wal::open(dir, config.chunk_bytes as u64, config.cache_bytes)?;
        let shared = Arc::new(Shared {
            log: Mutex::new(log),
            pace: Arc::new(Pace {
                pacing: Mutex::new(Pacing::default()),
                wake: Condvar::new(),
            }),
            max_linger: config.max_linger,
        });
        let pacer = std::thread::Builder::new()
            .name("raftkv-wal-pacer".into())
            .spawn({
                let shared = shared.clone();
                move || shared.run_pacer()
            })?;
        Ok(Self {
            shared,
            pacer: Some(pacer),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Wal> {
        self.shared.lock_log()
    }

    /// The flush worker's totals so far (for `/metrics`).
    pub fn flush_stats(&self) -> FlushStats {
        self.lock().stats()
    }

    /// Last and purged log ids.
    pub fn state(&self) -> LogState {
        let log = self.lock();
        LogState {
            last: log.last(),
            purged: log.purged(),
        }
    }

    /// The saved vote, if any.
    pub fn vote(&self) -> Option<Vec<u8>> {
        self.lock().vote().map(<[u8]>::to_vec)
    }

    /// Saves the vote and returns once it is on disk.
    pub fn save_vote(&self, vote: Vec<u8>) -> io::Result<()> {
        let rx = {
            let mut log = self.lock();
            log.save_vote(vote)?;
            self.flush_locked(&mut log)?
        };
        wait(rx)
    }

    /// Appends `entries` (consecutive indexes following the last entry) and asks for a
    /// synced flush; `on_flushed` runs once they are on disk (or the flush failed).
    ///
    /// Group commit: while appends arrive faster than flushes complete (many writers), an
    /// append's flush is held back for at most the time a flush takes, so that the appends
    /// arriving meanwhile share one fdatasync (each costs the disk a cache flush and the
    /// member CPU time). A lone writer's append is flushed at once. Callbacks run in the
    /// order of their appends either way.
    pub fn append(
        &self,
        entries: impl IntoIterator<Item = (LogId, Vec<u8>)>,
        on_flushed: FlushCallback,
    ) -> io::Result<()> {
        let mut log = self.lock();
        log.append(entries)?;
        let now = Instant::now();
        let mut p = self.shared.pace.lock();
        if p.arrive(now, self.shared.max_linger) {
            p.pending.push(on_flushed);
            if p.first_pending.is_none() {
                p.first_pending = Some(now);
                drop(p);
                self.shared.pace.wake.notify_all();
            }
            return Ok(());
        }
        drop(p);
        self.shared.flush(&mut log, Some(on_flushed), false)
    }

    /// Appends and waits until the entries are on disk.
    pub fn append_sync(
        &self,
        entries: impl IntoIterator<Item = (LogId, Vec<u8>)>,
    ) -> io::Result<()> {
        let (tx, rx) = sync_channel(1);
        self.append(
            entries,
            FlushCallback::new(move |r| {
                let _ = tx.send(r);
            }),
        )?;
        wait(rx)
    }

    /// Removes every entry with index `>= index` (a conflicting suffix) and waits for it
    /// to be durable.
    pub fn truncate_from(&self, index: u64) -> io::Result<()> {
        let rx = {
            let mut log = self.lock();
            log.truncate(index)?;
            self.flush_locked(&mut log)?
        };
        wait(rx)
    }

    /// Drops every entry up to and including `upto` (covered by a durable snapshot) and
    /// waits for it to be durable; whole segment files are then unlinked.
    pub fn purge_upto(&self, upto: LogId) -> io::Result<()> {
        let (rx, (purged, segment)) = {
            let mut log = self.lock();
            log.purge(upto)?;
            (self.flush_locked(&mut log)?, log.purge_mark())
        };
        wait(rx)?;
        self.lock().remove_purged(purged, segment)
    }

    /// The entries with index in `[from, to)` that the log holds.
    pub fn read(&self, from: u64, to: u64) -> io::Result<Vec<(LogId, Vec<u8>)>> {
        self.lock().read(from, to, usize::MAX)
    }

    /// The entries with index in `[from, to)`, as many as fit in `max_bytes` together (and at
    /// least one): replication batches are bounded by bytes, not only by count.
    pub fn read_limited(
        &self,
        from: u64,
        to: u64,
        max_bytes: usize,
    ) -> io::Result<Vec<(LogId, Vec<u8>)>> {
        self.lock().read(from, to, max_bytes)
    }

    /// A synced flush of everything so far (held-back appends' callbacks run first, in
    /// order), waited for through the returned channel.
    fn flush_locked(&self, log: &mut Wal) -> io::Result<std::sync::mpsc::Receiver<io::Result<()>>> {
        let (tx, rx) = sync_channel(1);
        self.shared.flush(
            log,
            Some(FlushCallback::new(move |r| {
                let _ = tx.send(r);
            })),
            false,
        )?;
        Ok(rx)
    }
}

fn wait(rx: std::sync::mpsc::Receiver<io::Result<()>>) -> io::Result<()> {
    rx.recv()
        .map_err(|_| io::Error::other("log flush worker stopped"))?
}
