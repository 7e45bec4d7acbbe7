//! The Raft log and vote: a write-ahead log on the `raft-log` crate.
//!
//! Why `raft-log` and not our own WAL: it was written for openraft by its author and is used
//! in production (Databend's meta service). It already does what this layer needs —
//! chunked files with a CRC-32 per record, a background worker that batches concurrent
//! flush requests into one `fdatasync` (group commit) and only then runs their callbacks,
//! truncate (conflicting suffix) and purge (prefix, files unlinked only after the purge
//! record is durable), and recovery that truncates an incomplete tail record and refuses
//! a damaged one. What is left here is the fit to raftkv: entries and votes as opaque bytes
//! (the raft crate encodes openraft's types), a bound on entry size checked before any
//! allocation when decoding, and a synchronous API plus an append that reports durability
//! through a callback.
//!
//! Durability contract: `append` queues the entries and a *synced* flush; `on_flushed` runs
//! after the fdatasync that covers them. `save_vote`, `truncate_from` and `purge_upto` wait
//! for their own synced flush before returning.

use std::fmt;
use std::io;
use std::path::Path;
use std::sync::mpsc::sync_channel;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use raft_log::api::raft_log_writer::RaftLogWriter;
use raft_log::codeq::{Decode, Encode};
use raft_log::{Callback, RaftLog};

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

impl Encode for LogId {
    fn encode<W: io::Write>(&self, mut w: W) -> io::Result<usize> {
        Ok(self.term.encode(&mut w)? + self.index.encode(&mut w)?)
    }
}

impl Decode for LogId {
    fn decode<R: io::Read>(mut r: R) -> io::Result<Self> {
        Ok(Self {
            term: u64::decode(&mut r)?,
            index: u64::decode(&mut r)?,
        })
    }
}

/// Opaque bytes (an encoded entry, or the encoded vote) with a bounded length.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Blob(pub Vec<u8>);

impl Encode for Blob {
    fn encode<W: io::Write>(&self, mut w: W) -> io::Result<usize> {
        let len = u32::try_from(self.0.len())
            .ok()
            .filter(|&n| n as usize <= MAX_ENTRY_BYTES)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "log entry too large"))?;
        w.write_all(&len.to_be_bytes())?;
        w.write_all(&self.0)?;
        Ok(4 + self.0.len())
    }
}

impl Decode for Blob {
    fn decode<R: io::Read>(mut r: R) -> io::Result<Self> {
        let mut len = [0u8; 4];
        r.read_exact(&mut len)?;
        let len = u32::from_be_bytes(len) as usize;
        if len > MAX_ENTRY_BYTES {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("log record claims {len} bytes, more than any entry can hold"),
            ));
        }
        let mut buf = vec![0; len];
        r.read_exact(&mut buf)?;
        Ok(Self(buf))
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

impl Callback for FlushCallback {
    fn send(self, res: io::Result<()>) {
        (self.0)(res)
    }
}

/// The `raft-log` type bindings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WalTypes;

impl raft_log::Types for WalTypes {
    type LogId = LogId;
    type LogPayload = Blob;
    /// Unused: the vote is kept as user data, opaque to this layer.
    type Vote = LogId;
    type Callback = FlushCallback;
    type UserData = Blob;

    fn log_index(log_id: &LogId) -> u64 {
        log_id.index
    }

    fn payload_size(payload: &Blob) -> u64 {
        payload.0.len() as u64
    }
}

/// Tuning for the log.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// How long the flush worker waits for more requests to share one fdatasync. Requests
    /// already queued are taken at once; this only bounds the wait on an idle queue. Zero by
    /// default: requests that arrive during one fdatasync share the next one anyway, and a
    /// wait only adds to every sequential write's latency.
    pub group_commit_wait: Duration,
    /// Payload bytes kept in memory for reads (entries not yet synced always are).
    pub cache_bytes: usize,
    /// Close a chunk file after this many bytes (purge unlinks whole chunks).
    pub chunk_bytes: usize,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            group_commit_wait: Duration::ZERO,
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
    inner: Mutex<RaftLog<WalTypes>>,
}

impl RaftLogStore {
    /// Opens (or creates) the log in directory `dir`, recovering from a crash: an
    /// incomplete record at the tail is cut off; a damaged record anywhere is an error.
    pub fn open(dir: &Path, config: &LogConfig) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let mut c = raft_log::Config::new(dir.to_string_lossy());
        c.log_cache_capacity = Some(config.cache_bytes);
        c.wal.flush_batch_wait = Some(config.group_commit_wait);
        c.wal.chunk_max_size = Some(config.chunk_bytes);
        c.wal.truncate_incomplete_record = Some(true);
        let log = RaftLog::open(Arc::new(c))?;
        Ok(Self {
            inner: Mutex::new(log),
        })
    }

    fn lock(&self) -> MutexGuard<'_, RaftLog<WalTypes>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The flush worker's totals so far (for `/metrics`).
    pub fn flush_stats(&self) -> FlushStats {
        let m = self.lock().stat().flush_metrics;
        FlushStats {
            syncs: m.sync_batch_count,
            sync_us: m.sync_us,
            last_sync_us: m.last_sync_us,
            write_bytes: m.write_bytes,
        }
    }

    /// Last and purged log ids.
    pub fn state(&self) -> LogState {
        let log = self.lock();
        let state = log.log_state();
        LogState {
            last: state.last().copied(),
            purged: state.purged().copied(),
        }
    }

    /// The saved vote, if any.
    pub fn vote(&self) -> Option<Vec<u8>> {
        self.lock()
            .log_state()
            .user_data
            .as_ref()
            .map(|b| b.0.clone())
    }

    /// Saves the vote and returns once it is on disk.
    pub fn save_vote(&self, vote: Vec<u8>) -> io::Result<()> {
        let rx = {
            let mut log = self.lock();
            log.save_user_data(Some(Blob(vote)))?;
            Self::flush_locked(&mut log)?
        };
        wait(rx)
    }

    /// Appends `entries` (consecutive indexes following the last entry) and asks for a
    /// synced flush; `on_flushed` runs once they are on disk (or the flush failed).
    pub fn append(
        &self,
        entries: impl IntoIterator<Item = (LogId, Vec<u8>)>,
        on_flushed: FlushCallback,
    ) -> io::Result<()> {
        let mut log = self.lock();
        log.append(entries.into_iter().map(|(id, payload)| (id, Blob(payload))))?;
        log.flush(true, Some(on_flushed))
    }

    /// Appends and waits until the entries are on disk.
    pub fn append_sync(
        &self,
        entries: impl IntoIterator<Item = (LogId, Vec<u8>)>,
    ) -> io::Result<()> {
        let (tx, rx) = sync_channel(1);
        self.append(entries, FlushCallback::new(move |r| Callback::send(tx, r)))?;
        wait(rx)
    }

    /// Removes every entry with index `>= index` (a conflicting suffix) and waits for it
    /// to be durable.
    pub fn truncate_from(&self, index: u64) -> io::Result<()> {
        let rx = {
            let mut log = self.lock();
            log.truncate(index)?;
            Self::flush_locked(&mut log)?
        };
        wait(rx)
    }

    /// Drops every entry up to and including `upto` (covered by a durable snapshot) and
    /// waits for it to be durable; whole chunk files are then unlinked.
    pub fn purge_upto(&self, upto: LogId) -> io::Result<()> {
        let rx = {
            let mut log = self.lock();
            log.purge(upto)?;
            Self::flush_locked(&mut log)?
        };
        wait(rx)
    }

    /// The entries with index in `[from, to)` that the log holds.
    pub fn read(&self, from: u64, to: u64) -> io::Result<Vec<(LogId, Vec<u8>)>> {
        let log = self.lock();
        log.read(from, to)
            .map(|r| r.map(|(id, blob)| (id, blob.0)))
            .collect()
    }

    /// The entries with index in `[from, to)`, as many as fit in `max_bytes` together (and at
    /// least one): replication batches are bounded by bytes, not only by count.
    pub fn read_limited(
        &self,
        from: u64,
        to: u64,
        max_bytes: usize,
    ) -> io::Result<Vec<(LogId, Vec<u8>)>> {
        let log = self.lock();
        let mut out = Vec::new();
        let mut total = 0usize;
        for item in log.read(from, to) {
            let (id, blob) = item?;
            total = total.saturating_add(blob.0.len());
            if total > max_bytes && !out.is_empty() {
                break;
            }
            out.push((id, blob.0));
        }
        Ok(out)
    }

    fn flush_locked(
        log: &mut RaftLog<WalTypes>,
    ) -> io::Result<std::sync::mpsc::Receiver<io::Result<()>>> {
        let (tx, rx) = sync_channel(1);
        log.flush(
            true,
            Some(FlushCallback::new(move |r| Callback::send(tx, r))),
        )?;
        Ok(rx)
    }
}

fn wait(rx: std::sync::mpsc::Receiver<io::Result<()>>) -> io::Result<()> {
    rx.recv()
        .map_err(|_| io::Error::other("log flush worker stopped"))?
}
