//! The write-ahead log's files: segments preallocated to their full size.
//!
//! Why not the `raft-log` crate any more: its chunk files are opened in append mode and grow
//! with every write, so every `fdatasync` also has to persist the file's new size. On this
//! project's machines (ext4) that made each fdatasync ~50–60 µs slower than one on a file
//! whose size does not change (0.14–0.15 ms against 0.09 ms, `docs/benchmarks.md`), and a
//! quorum write waits for one on the leader and one on a follower. etcd's WAL preallocates
//! its 64 MB segments for the same reason. Preallocating raft-log's files (an LD_PRELOAD
//! experiment) took ~0.13 ms off raftkv's one-client put p50; this log in its place, which
//! also writes from the caller and needs one thread hand-off fewer, took ~0.27 ms off it
//! (about 1.0 → 0.74 ms, 3 members, `docs/benchmarks.md`).
//!
//! # Files
//!
//! `seg-<seq, 16 hex digits>.wal`, numbered from 1 without gaps. Each is created at its full
//! size (`fallocate`, or a sparse `set_len` where the file system has no `fallocate` or no
//! room for a whole segment), so the bytes after the last record read as zeros. A segment
//! holds records back to back:
//!
//! ```text
//! u32 LE  body length (0: no more records in this segment)
//! u32 LE  CRC-32 of the body
//! body    kind (1 byte), then the kind's fields (integers little-endian)
//!   1 start     "rkvwal01", segment seq u64, purged log id?, last log id?   (first record)
//!   2 entry     term u64, index u64, payload (the rest)
//!   3 vote      the vote's bytes (the rest)
//!   4 truncate  index u64: entries from it on are gone
//!   5 purge     term u64, index u64: entries up to it are gone
//! ```
//!
//! (A log id? is a byte 0 for none, or 1 followed by term and index.) A new segment starts
//! with the log's purge point and last id, and the vote right after, so every older segment
//! can be deleted once the log's purge point covers its entries.
//!
//! # Recovery
//!
//! Records are replayed in order; a zero length ends a segment. A record that is not whole
//! (its bytes run past the end of the file, or its checksum fails while one of its 512-byte
//! sectors reads as zeros) can only be the tail of a write that a crash interrupted, so in
//! the last segment it and everything after it is cut off. Any other bad record — a checksum
//! that fails with no zero sector, a length above the largest record, a body that does not
//! decode, an entry out of order, a missing segment — is damage, and opening the log fails
//! rather than drop acknowledged entries. Lengths are checked before anything is allocated.

use std::collections::{BTreeMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Instant;

use crate::log::{FlushCallback, FlushStats, LogId, MAX_ENTRY_BYTES};

/// Bytes before a record's body: its length and checksum.
const HEADER: usize = 8;
/// The largest body a record may have: an entry's payload and its fields.
const MAX_BODY: usize = MAX_ENTRY_BYTES + 64;
/// The start record's magic.
const MAGIC: &[u8; 8] = b"rkvwal01";
/// The unit a torn write is assumed to leave whole or zero.
const SECTOR: u64 = 512;

const START: u8 = 1;
const ENTRY: u8 = 2;
const VOTE: u8 = 3;
const TRUNCATE: u8 = 4;
const PURGE: u8 = 5;

/// A decoded record.
#[derive(Debug, PartialEq)]
enum Record<'a> {
    Start {
        seq: u64,
        purged: Option<LogId>,
        last: Option<LogId>,
    },
    Entry(LogId, &'a [u8]),
    Vote(&'a [u8]),
    Truncate(u64),
    Purge(LogId),
}

fn put_id(out: &mut Vec<u8>, id: LogId) {
    out.extend_from_slice(&id.term.to_le_bytes());
    out.extend_from_slice(&id.index.to_le_bytes());
}

fn put_opt_id(out: &mut Vec<u8>, id: Option<LogId>) {
    match id {
        None => out.push(0),
        Some(id) => {
            out.push(1);
            put_id(out, id);
        }
    }
}

impl Record<'_> {
    /// Appends the record, header included, to `out`.
    fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&[0; HEADER]);
        match self {
            Record::Start { seq, purged, last } => {
                out.push(START);
                out.extend_from_slice(MAGIC);
                out.extend_from_slice(&seq.to_le_bytes());
                put_opt_id(out, *purged);
                put_opt_id(out, *last);
            }
            Record::Entry(id, payload) => {
                out.push(ENTRY);
                put_id(out, *id);
                out.extend_from_slice(payload);
            }
            Record::Vote(vote) => {
                out.push(VOTE);
                out.extend_from_slice(vote);
            }
            Record::Truncate(index) => {
                out.push(TRUNCATE);
                out.extend_from_slice(&index.to_le_bytes());
            }
            Record::Purge(id) => {
                out.push(PURGE);
                put_id(out, *id);
            }
        }
        let body = &out[start + HEADER..];
        let len = body.len() as u32;
        let crc = crc32fast::hash(body);
        out[start..start + 4].copy_from_slice(&len.to_le_bytes());
        out[start + 4..start + HEADER].copy_from_slice(&crc.to_le_bytes());
    }

    /// Decodes a body whose checksum matched; `None` if it is not a valid record.
    fn decode(body: &[u8]) -> Option<Record<'_>> {
        let (&kind, rest) = body.split_first()?;
        let mut r = Fields(rest);
        let record = match kind {
            START => {
                if r.take(MAGIC.len())? != MAGIC {
                    return None;
                }
                let seq = r.u64()?;
                let purged = r.opt_id()?;
                let last = r.opt_id()?;
                r.end()?;
                Record::Start { seq, purged, last }
            }
            ENTRY => Record::Entry(r.id()?, r.0),
            VOTE => Record::Vote(r.0),
            TRUNCATE => {
                let index = r.u64()?;
                r.end()?;
                Record::Truncate(index)
            }
            PURGE => {
                let id = r.id()?;
                r.end()?;
                Record::Purge(id)
            }
            _ => return None,
        };
        Some(record)
    }
}

/// A cursor over a record body's fields.
struct Fields<'a>(&'a [u8]);

impl<'a> Fields<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }

    fn id(&mut self) -> Option<LogId> {
        Some(LogId {
            term: self.u64()?,
            index: self.u64()?,
        })
    }

    fn opt_id(&mut self) -> Option<Option<LogId>> {
        match self.take(1)?[0] {
            0 => Some(None),
            1 => Some(Some(self.id()?)),
            _ => None,
        }
    }

    fn end(&self) -> Option<()> {
        self.0.is_empty().then_some(())
    }
}

/// Where an entry's payload is.
#[derive(Debug, Clone, Copy)]
struct Slot {
    id: LogId,
    seq: u64,
    at: u64,
    len: u32,
}

/// Drops the slots of entries from `index` on (a truncate, live or replayed).
fn drop_from(entries: &mut VecDeque<Slot>, index: u64) {
    while entries.back().is_some_and(|s| s.id.index >= index) {
        entries.pop_back();
    }
}

/// Drops the slots of entries up to and including `upto` (a purge, live or replayed).
fn drop_through(entries: &mut VecDeque<Slot>, upto: u64) {
    while entries.front().is_some_and(|s| s.id.index <= upto) {
        entries.pop_front();
    }
}

struct Segment {
    file: Arc<File>,
    /// The highest entry index written to it (0: none).
    max_index: u64,
}

/// A synced flush asked of the worker: the files to sync, then the callback.
struct FlushRequest {
    files: Vec<Arc<File>>,
    done: FlushCallback,
}

/// Counters the flush worker keeps.
#[derive(Default)]
struct Counters {
    syncs: AtomicU64,
    sync_us: AtomicU64,
    last_sync_us: AtomicU64,
    write_bytes: AtomicU64,
    /// Set after a failed write or sync: nothing more is acknowledged (what reached the disk
    /// is unknown, and a later sync could report success for pages that were dropped).
    failed: AtomicBool,
}

/// The log's files and what they hold: entries (their places, the newest also in memory),
/// the vote and the purge point.
pub(crate) struct Wal {
    dir: PathBuf,
    segment_bytes: u64,
    segments: BTreeMap<u64, Segment>,
    /// The segment being written and the offset of its next record.
    seq: u64,
    offset: u64,
    entries: VecDeque<Slot>,
    /// Payloads of the newest entries: `cache[i]` is entry `cache_first + i`'s.
    cache: VecDeque<Vec<u8>>,
    cache_first: u64,
    cache_bytes: usize,
    cache_limit: usize,
    purged: Option<LogId>,
    vote: Option<Vec<u8>>,
    /// Files written since the last flush request.
    dirty: Vec<Arc<File>>,
    /// Encoded records not written yet (written by `write_out`, before any flush).
    buf: Vec<u8>,
    counters: Arc<Counters>,
    tx: Option<mpsc::Sender<FlushRequest>>,
    worker: Option<JoinHandle<()>>,
    /// The directory's lock, held while the log is open.
    lock: Option<File>,
}

fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    numbered_path(dir, "seg-", ".wal", seq)
}

fn parse_segment_name(name: &str) -> Option<u64> {
    parse_numbered(name, "seg-", ".wal")
}

/// `<dir>/<prefix><seq as 16 lowercase hex digits><suffix>`: how numbered files are named
/// here (this log's segments, the value segments).
pub(crate) fn numbered_path(dir: &Path, prefix: &str, suffix: &str, seq: u64) -> PathBuf {
    dir.join(format!("{prefix}{seq:016x}{suffix}"))
}

/// The number in a name [`numbered_path`] made, and nothing else.
pub(crate) fn parse_numbered(name: &str, prefix: &str, suffix: &str) -> Option<u64> {
    let hex = name.strip_prefix(prefix)?.strip_suffix(suffix)?;
    if hex.len() != 16 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

/// Makes `file` `len` bytes long with its blocks allocated, so that writes into it change
/// neither its size nor its block map (a sparse file where the file system cannot).
pub(crate) fn preallocate(file: &File, len: u64) -> io::Result<()> {
    allocate(file, len, true)
}

/// [`preallocate`], but a full disk is an error (`ENOSPC`) rather than a sparse file: for
/// the value log, which grows its segments as values arrive and keeps a value inline when
/// it cannot (a sparse extension would only fail at the write, leaving the log failed).
pub(crate) fn preallocate_or_full(file: &File, len: u64) -> io::Result<()> {
    allocate(file, len, false)
}

fn allocate(file: &File, len: u64, sparse_when_full: bool) -> io::Result<()> {
    let len_off = libc::off_t::try_from(len)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "segment too large"))?;
    // SAFETY: fallocate takes a file descriptor this `File` owns and plain integers.
    let r = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len_off) };
    if r == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        // No fallocate here, or no room for a whole segment: a sparse segment still works
        // (its blocks are taken as records arrive, and a write that finds no room fails
        // then, as it would on a growing file). The member's free-space watch raises the
        // NOSPACE alarm long before.
        Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS) => sparse(file, len),
        Some(libc::ENOSPC) if sparse_when_full => sparse(file, len),
        _ => Err(err),
    }
}

/// A sparse extension of `file` to `len` bytes (never shrinks it).
fn sparse(file: &File, len: u64) -> io::Result<()> {
    if file.metadata()?.len() < len {
        file.set_len(len)?;
    }
    Ok(())
}

pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn damaged(path: &Path, at: u64, what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("{}: {what} at offset {at}", path.display()),
    )
}

/// Whether the bytes `[at, end)` of `file` look like a write a crash cut short: one of the
/// 512-byte sectors they touch reads as zeros from its first byte to its last (the part of a
/// sector past the end of the file counts as zeros). The whole sector, not only the record's
/// part of it: zero bytes that a record holds, with other bytes beside them in the same
/// sector, are no sign of a torn write.
fn torn(file: &File, at: u64, end: u64, size: u64) -> io::Result<bool> {
    let mut buf = vec![0u8; SECTOR as usize];
    let mut sector = at / SECTOR * SECTOR;
    while sector < end {
        let n = size.saturating_sub(sector).min(SECTOR) as usize;
        file.read_exact_at(&mut buf[..n], sector)?;
        if buf[..n].iter().all(|&b| b == 0) {
            return Ok(true);
        }
        sector += SECTOR;
    }
    Ok(false)
}

/// What replaying the segments found so far.
#[derive(Default)]
struct Replay {
    entries: VecDeque<Slot>,
    purged: Option<LogId>,
    vote: Option<Vec<u8>>,
    /// Entries up to this index lived in segments that are gone; the purge point must cover
    /// them by the end of the replay.
    gone_upto: u64,
}

impl Replay {
    fn next_index(&self) -> Option<u64> {
        match self.entries.back() {
            Some(last) => Some(last.id.index.saturating_add(1)),
            None if self.purged.is_none() && self.gone_upto == 0 => None,
            None => Some(
                self.purged
                    .map_or(0, |p| p.index)
                    .max(self.gone_upto)
                    .saturating_add(1),
            ),
        }
    }
}

/// Takes the log directory's lock (`LOCK`, the file `raft-log` locked too, so that a
/// raftkv of either kind refuses a directory the other has open).
pub(crate) fn lock_dir(dir: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("LOCK"))?;
    // SAFETY: flock takes a file descriptor this `File` owns and plain integers.
    let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if r != 0 {
        let err = io::Error::last_os_error();
        return Err(io::Error::new(
            err.kind(),
            format!(
                "{}: the log is in use by another process ({err})",
                dir.display()
            ),
        ));
    }
    Ok(file)
}

impl Wal {
    /// Opens the log in `dir` (creating it if it holds no segment), replaying every segment.
    /// The directory stays locked against other opens until the log is dropped.
    pub(crate) fn open(dir: &Path, segment_bytes: u64, cache_limit: usize) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let lock = lock_dir(dir)?;
        let mut wal = Self::open_locked(dir, segment_bytes, cache_limit)?;
        wal.lock = Some(lock);
        Ok(wal)
    }

    /// [`Wal::open`] for a caller that holds the directory's lock already.
    pub(crate) fn open_locked(
        dir: &Path,
        segment_bytes: u64,
        cache_limit: usize,
    ) -> io::Result<Self> {
        let mut seqs = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let name = entry?.file_name();
            if let Some(seq) = name.to_str().and_then(parse_segment_name) {
                seqs.push(seq);
            }
        }
        seqs.sort_unstable();
        if let Some(w) = seqs.windows(2).find(|w| w[0].checked_add(1) != Some(w[1])) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{}: log segments between {:016x} and {:016x} are missing",
                    dir.display(),
                    w[0],
                    w[1]
                ),
            ));
        }
        let counters = Arc::new(Counters::default());
        let (tx, rx) = mpsc::channel();
        let worker = std::thread::Builder::new()
            .name("raftkv-wal-sync".into())
            .spawn({
                let counters = counters.clone();
                move || sync_worker(rx, counters)
            })?;
        let mut wal = Wal {
            dir: dir.to_path_buf(),
            segment_bytes: segment_bytes.max(4096),
            segments: BTreeMap::new(),
            seq: 0,
            offset: 0,
            entries: VecDeque::new(),
            cache: VecDeque::new(),
            cache_first: 0,
            cache_bytes: 0,
            cache_limit,
            purged: None,
            vote: None,
            dirty: Vec::new(),
            buf: Vec::new(),
            counters,
            tx: Some(tx),
            worker: Some(worker),
            lock: None,
        };
        if seqs.is_empty() {
            wal.start_segment(1)?;
            wal.write_out()?;
            wal.sync_now()?;
            return Ok(wal);
        }
        let mut replay = Replay::default();
        let last = *seqs.last().expect("not empty");
        for (i, &seq) in seqs.iter().enumerate() {
            let (file, end, max_index) = replay_segment(
                &segment_path(dir, seq),
                wal.segment_bytes,
                seq,
                i == 0,
                seq == last,
                &mut replay,
            )?;
            wal.segments.insert(
                seq,
                Segment {
                    file: Arc::new(file),
                    max_index,
                },
            );
            wal.seq = seq;
            wal.offset = end.unwrap_or(0);
            if end.is_none() {
                // The last segment never got its start record to disk: begin it again.
                wal.purged = replay.purged;
                wal.vote = replay.vote.clone();
                wal.entries = replay.entries.clone();
                wal.write_start()?;
                wal.sync_now()?;
            }
        }
        if replay.gone_upto > replay.purged.map_or(0, |p| p.index) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{}: log entries up to {} are missing (a segment before {:016x} is gone)",
                    dir.display(),
                    replay.gone_upto,
                    seqs[0]
                ),
            ));
        }
        wal.entries = replay.entries;
        wal.purged = replay.purged;
        wal.vote = replay.vote;
        wal.cache_first = wal.next_index().unwrap_or(0);
        wal.write_out()?;
        Ok(wal)
    }

    fn next_index(&self) -> Option<u64> {
        match self.entries.back() {
            Some(last) => Some(last.id.index.saturating_add(1)),
            None => self.purged.map(|p| p.index.saturating_add(1)),
        }
    }

    /// The last entry's id, or the purge point if the log holds no entry.
    pub(crate) fn last(&self) -> Option<LogId> {
        self.entries.back().map(|s| s.id).or(self.purged)
    }

    pub(crate) fn purged(&self) -> Option<LogId> {
        self.purged
    }

    pub(crate) fn vote(&self) -> Option<&[u8]> {
        self.vote.as_deref()
    }

    pub(crate) fn stats(&self) -> FlushStats {
        let c = &self.counters;
        FlushStats {
            syncs: c.syncs.load(Ordering::Relaxed),
            sync_us: c.sync_us.load(Ordering::Relaxed),
            last_sync_us: c.last_sync_us.load(Ordering::Relaxed),
            write_bytes: c.write_bytes.load(Ordering::Relaxed),
        }
    }

    fn check(&self) -> io::Result<()> {
        if self.counters.failed.load(Ordering::Acquire) {
            return Err(io::Error::other(
                "the log's disk failed a write or sync; nothing more is accepted",
            ));
        }
        Ok(())
    }

    /// Adds a record to the buffer, moving to a new segment first if it would not fit in this
    /// one (a record larger than a segment gets one to itself, which grows to hold it).
    fn put(&mut self, record: &Record<'_>) -> io::Result<()> {
        let at = self.buf.len();
        record.encode(&mut self.buf);
        let len = (self.buf.len() - at) as u64;
        let end = self.offset + at as u64;
        // Past this segment's start records, and this one would cross its end.
        if end + len > self.segment_bytes && end > self.start_len() {
            let tail = self.buf.split_off(at);
            let moved = self.write_out().and_then(|()| {
                // The segment left behind is complete on disk before the next one exists:
                // recovery accepts a torn tail only in the newest segment.
                self.current().sync_data()?;
                let next = self
                    .seq
                    .checked_add(1)
                    .ok_or_else(|| io::Error::other("the log has used every segment number"))?;
                self.start_segment(next)
            });
            self.failing(moved)?;
            self.buf.extend_from_slice(&tail);
        }
        Ok(())
    }

    /// How many bytes a segment's start and vote records take (a segment holding only those
    /// is never left for a new one).
    fn start_len(&self) -> u64 {
        (HEADER + 1 + 8 + 8 + 17 + 17) as u64
            + self
                .vote
                .as_ref()
                .map_or(0, |v| (HEADER + 1 + v.len()) as u64)
    }

    /// Creates segment `seq` and makes it the one written; its start records are buffered.
    fn start_segment(&mut self, seq: u64) -> io::Result<()> {
        let path = segment_path(&self.dir, seq);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)?;
        preallocate(&file, self.segment_bytes)?;
        // The new name is durable before anything in the file can be acknowledged.
        sync_dir(&self.dir)?;
        let file = Arc::new(file);
        self.segments.insert(
            seq,
            Segment {
                file: file.clone(),
                max_index: 0,
            },
        );
        self.dirty.push(file);
        self.seq = seq;
        self.offset = 0;
        self.write_start_records();
        Ok(())
    }

    fn write_start_records(&mut self) {
        let last = self.last();
        Record::Start {
            seq: self.seq,
            purged: self.purged,
            last,
        }
        .encode(&mut self.buf);
        if let Some(vote) = self.vote.take() {
            Record::Vote(&vote).encode(&mut self.buf);
            self.vote = Some(vote);
        }
    }

    /// Re-writes the start records of the current (empty) segment.
    fn write_start(&mut self) -> io::Result<()> {
        self.offset = 0;
        self.write_start_records();
        let file = self.current().clone();
        self.dirty.push(file);
        self.write_out()
    }

    fn current(&self) -> &Arc<File> {
        &self.segments[&self.seq].file
    }

    /// Writes the buffered records at the current offset (into the page cache; a flush makes
    /// them durable).
    fn write_out(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let file = self.current().clone();
        if let Err(e) = file.write_all_at(&self.buf, self.offset) {
            self.counters.failed.store(true, Ordering::Release);
            return Err(e);
        }
        self.offset += self.buf.len() as u64;
        self.counters
            .write_bytes
            .fetch_add(self.buf.len() as u64, Ordering::Relaxed);
        self.buf.clear();
        if !self.dirty.iter().any(|f| Arc::ptr_eq(f, &file)) {
            self.dirty.push(file);
        }
        Ok(())
    }

    /// Marks the log failed if `res` is an error: what reached the files is then unknown.
    fn failing<T>(&self, res: io::Result<T>) -> io::Result<T> {
        if res.is_err() {
            self.counters.failed.store(true, Ordering::Release);
        }
        res
    }

    /// Appends entries, which must follow the last one (or the purge point) without a gap.
    pub(crate) fn append(
        &mut self,
        entries: impl IntoIterator<Item = (LogId, Vec<u8>)>,
    ) -> io::Result<()> {
        self.check()?;
        // Refused input changes nothing: every entry is checked before any is written.
        let entries: Vec<(LogId, Vec<u8>)> = entries.into_iter().collect();
        let mut expect = self.next_index();
        for (id, payload) in &entries {
            if payload.len() > MAX_ENTRY_BYTES {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "log entry too large",
                ));
            }
            if let Some(next) = expect
                && id.index != next
            {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "log entry {id} does not follow the log's last index {}",
                        next.wrapping_sub(1)
                    ),
                ));
            }
            expect = id.index.checked_add(1);
            if expect.is_none() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "log index overflow",
                ));
            }
        }
        for (id, payload) in entries {
            if self.entries.is_empty() && self.cache.is_empty() {
                self.cache_first = id.index;
            }
            self.put(&Record::Entry(id, &payload))?;
            let at = self.offset + self.buf.len() as u64 - payload.len() as u64;
            self.entries.push_back(Slot {
                id,
                seq: self.seq,
                at,
                len: payload.len() as u32,
            });
            if let Some(s) = self.segments.get_mut(&self.seq) {
                s.max_index = s.max_index.max(id.index);
            }
            self.cache_bytes += payload.len();
            self.cache.push_back(payload);
        }
        self.write_out()?;
        // Keep the newest payloads within the limit (the oldest go; they are on disk).
        while self.cache_bytes > self.cache_limit
            && let Some(p) = self.cache.pop_front()
        {
            self.cache_bytes -= p.len();
            self.cache_first += 1;
        }
        Ok(())
    }

    pub(crate) fn save_vote(&mut self, vote: Vec<u8>) -> io::Result<()> {
        self.check()?;
        if vote.len() > MAX_ENTRY_BYTES {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "vote too large",
            ));
        }
        self.put(&Record::Vote(&vote))?;
        self.vote = Some(vote);
        self.write_out()
    }

    /// Removes every entry with index `>= index`.
    pub(crate) fn truncate(&mut self, index: u64) -> io::Result<()> {
        self.check()?;
        if let Some(p) = self.purged
            && index <= p.index
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("cannot truncate from {index}: entries up to {p} are purged"),
            ));
        }
        self.put(&Record::Truncate(index))?;
        self.write_out()?;
        drop_from(&mut self.entries, index);
        while !self.cache.is_empty() && self.cache_first + self.cache.len() as u64 > index {
            let p = self.cache.pop_back().expect("not empty");
            self.cache_bytes -= p.len();
        }
        if self.cache.is_empty() {
            self.cache_first = self.next_index().unwrap_or(0);
        }
        Ok(())
    }

    /// Drops every entry up to and including `upto`. The files are removed by
    /// [`Wal::remove_purged`] once this is durable.
    pub(crate) fn purge(&mut self, upto: LogId) -> io::Result<()> {
        self.check()?;
        if self.purged.is_some_and(|p| p.index >= upto.index) {
            return Ok(());
        }
        self.put(&Record::Purge(upto))?;
        self.write_out()?;
        self.purged = Some(upto);
        drop_through(&mut self.entries, upto.index);
        while self.cache_first <= upto.index
            && let Some(p) = self.cache.pop_front()
        {
            self.cache_bytes -= p.len();
            self.cache_first += 1;
        }
        if self.cache.is_empty() {
            self.cache_first = self.next_index().unwrap_or(0);
        }
        Ok(())
    }

    /// Unlinks the oldest segments whose entries are all purged (never the one written).
    /// Call only once the purge record is durable.
    ///
    /// `purged` and `before` are what [`Wal::purge_mark`] said when the purge's flush was
    /// asked for: the purge point that flush made durable, and the segment it was written
    /// in. Only segments older than that one go, so the segment holding a durable copy of
    /// the vote and purge point is never removed for a newer one whose start records may
    /// not be on disk yet.
    pub(crate) fn remove_purged(&mut self, purged: u64, before: u64) -> io::Result<()> {
        let removable: Vec<u64> = self
            .segments
            .iter()
            .take_while(|(seq, s)| **seq < before && **seq != self.seq && s.max_index <= purged)
            .map(|(seq, _)| *seq)
            .collect();
        if removable.is_empty() {
            return Ok(());
        }
        for seq in removable {
            self.segments.remove(&seq);
            std::fs::remove_file(segment_path(&self.dir, seq))?;
        }
        // Unlinks reach the disk in order of the numbering (no gap after a crash).
        sync_dir(&self.dir)
    }

    /// The purge point and the segment being written, for [`Wal::remove_purged`].
    pub(crate) fn purge_mark(&self) -> (u64, u64) {
        (self.purged.map_or(0, |p| p.index), self.seq)
    }

    /// Asks the worker for a synced flush of everything written so far; `done` runs after it
    /// (or with an error). Requests complete in the order they were made.
    pub(crate) fn flush(&mut self, done: FlushCallback) -> io::Result<()> {
        self.write_out()?;
        let request = FlushRequest {
            files: std::mem::take(&mut self.dirty),
            done,
        };
        match &self.tx {
            Some(tx) => tx.send(request).map_err(|e| {
                let err = io::Error::other("log flush worker stopped");
                e.0.done
                    .call(Err(io::Error::other("log flush worker stopped")));
                err
            }),
            None => Err(io::Error::other("log flush worker stopped")),
        }
    }

    /// Syncs what is written, on this thread (opening and recovery).
    fn sync_now(&mut self) -> io::Result<()> {
        for f in std::mem::take(&mut self.dirty) {
            f.sync_data()?;
        }
        Ok(())
    }

    /// The entries with index in `[from, to)` that the log holds, as many as fit in
    /// `max_bytes` together (and at least one).
    pub(crate) fn read(
        &self,
        from: u64,
        to: u64,
        max_bytes: usize,
    ) -> io::Result<Vec<(LogId, Vec<u8>)>> {
        let Some(first) = self.entries.front().map(|s| s.id.index) else {
            return Ok(Vec::new());
        };
        let from = from.max(first);
        let mut out = Vec::new();
        let mut total = 0usize;
        let mut i = (from - first) as usize;
        while let Some(slot) = self.entries.get(i) {
            if slot.id.index >= to {
                break;
            }
            total = total.saturating_add(slot.len as usize);
            if total > max_bytes && !out.is_empty() {
                break;
            }
            let payload = match slot.id.index.checked_sub(self.cache_first) {
                Some(c) if (c as usize) < self.cache.len() => self.cache[c as usize].clone(),
                _ => {
                    let mut buf = vec![0u8; slot.len as usize];
                    let seg = self.segments.get(&slot.seq).ok_or_else(|| {
                        io::Error::other(format!("log segment {:016x} is gone", slot.seq))
                    })?;
                    seg.file.read_exact_at(&mut buf, slot.at)?;
                    buf
                }
            };
            out.push((slot.id, payload));
            i += 1;
        }
        Ok(out)
    }
}

impl Drop for Wal {
    fn drop(&mut self) {
        // Pending flushes still run (and their callbacks) before the worker ends.
        self.tx.take();
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

/// The flush worker: syncs the files each request names (requests queued meanwhile share
/// the sync), then runs their callbacks in order.
fn sync_worker(rx: mpsc::Receiver<FlushRequest>, counters: Arc<Counters>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while let Ok(more) = rx.try_recv() {
            batch.push(more);
        }
        let mut files: Vec<&Arc<File>> = Vec::new();
        for f in batch.iter().flat_map(|r| &r.files) {
            if !files.iter().any(|g| Arc::ptr_eq(g, f)) {
                files.push(f);
            }
        }
        let res = if counters.failed.load(Ordering::Acquire) {
            Err(io::Error::other(
                "the log's disk failed an earlier write or sync",
            ))
        } else if files.is_empty() {
            Ok(())
        } else {
            let started = Instant::now();
            let res = files.iter().try_for_each(|f| f.sync_data());
            let us = started.elapsed().as_micros() as u64;
            counters.syncs.fetch_add(1, Ordering::Relaxed);
            counters.sync_us.fetch_add(us, Ordering::Relaxed);
            counters.last_sync_us.store(us, Ordering::Relaxed);
            if res.is_err() {
                counters.failed.store(true, Ordering::Release);
            }
            res
        };
        for request in batch {
            request.done.call(match &res {
                Ok(()) => Ok(()),
                Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
            });
        }
    }
}

/// Replays one segment into `replay`. Returns the open file, where its records end (`None`
/// if it is the last segment and not even its start record reached the disk) and the
/// highest entry index it holds. A torn tail of the last segment is cut off here.
fn replay_segment(
    path: &Path,
    segment_bytes: u64,
    seq: u64,
    oldest: bool,
    newest: bool,
    replay: &mut Replay,
) -> io::Result<(File, Option<u64>, u64)> {
    let file = OpenOptions::new().read(true).write(true).open(path)?;
    let size = file.metadata()?.len();
    let mut reader = io::BufReader::with_capacity(1 << 20, &file);
    let mut pos = 0u64;
    let mut max_index = 0u64;
    let mut body = Vec::new();
    let mut started = false;
    let cut = loop {
        if size - pos < HEADER as u64 {
            let mut rest = Vec::new();
            reader.read_to_end(&mut rest)?;
            if rest.iter().all(|&b| b == 0) {
                break None;
            }
            break Some(pos);
        }
        let mut header = [0u8; HEADER];
        reader.read_exact(&mut header)?;
        let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) as u64;
        let crc = u32::from_le_bytes(header[4..].try_into().expect("4 bytes"));
        if len == 0 && crc == 0 {
            break None;
        }
        if len == 0 || len > MAX_BODY as u64 {
            // A header split over two sectors, one of them never written, reads this way;
            // a header within one sector that does is damaged.
            if torn(&file, pos, pos + HEADER as u64, size)? {
                break Some(pos);
            }
            return Err(damaged(path, pos, "bad record length"));
        }
        if pos + HEADER as u64 + len > size {
            // Runs past the end of the file: a write cut short.
            break Some(pos);
        }
        body.resize(len as usize, 0);
        reader.read_exact(&mut body)?;
        if crc32fast::hash(&body) != crc {
            if torn(&file, pos, pos + HEADER as u64 + len, size)? {
                break Some(pos);
            }
            return Err(damaged(path, pos, "record checksum mismatch"));
        }
        let record =
            Record::decode(&body).ok_or_else(|| damaged(path, pos, "undecodable record"))?;
        let payload_at = pos + HEADER as u64 + 1 + 16;
        match record {
            Record::Start {
                seq: s,
                purged,
                last,
            } => {
                if started || s != seq {
                    return Err(damaged(path, pos, "misplaced segment start"));
                }
                started = true;
                if oldest {
                    replay.purged = purged;
                    if let Some(last) = last
                        && last.index > purged.map_or(0, |p| p.index)
                    {
                        replay.gone_upto = last.index;
                    }
                }
            }
            _ if !started => return Err(damaged(path, pos, "segment without a start record")),
            Record::Entry(id, payload) => {
                if id.index == u64::MAX || replay.next_index().is_some_and(|next| id.index != next)
                {
                    return Err(damaged(path, pos, &format!("entry {id} out of order")));
                }
                replay.entries.push_back(Slot {
                    id,
                    seq,
                    at: payload_at,
                    len: payload.len() as u32,
                });
                max_index = max_index.max(id.index);
            }
            Record::Vote(vote) => replay.vote = Some(vote.to_vec()),
            Record::Truncate(index) => {
                drop_from(&mut replay.entries, index);
                if replay.entries.is_empty() && replay.gone_upto >= index {
                    replay.gone_upto = index.saturating_sub(1);
                }
            }
            Record::Purge(upto) => {
                if replay.purged.is_none_or(|p| p.index < upto.index) {
                    replay.purged = Some(upto);
                }
                drop_through(&mut replay.entries, upto.index);
            }
        }
        pos += HEADER as u64 + len;
    };
    drop(reader);
    if let Some(at) = cut {
        if !newest {
            return Err(damaged(
                path,
                at,
                "incomplete record before the last segment",
            ));
        }
        pos = at;
    }
    if newest {
        // Zero everything after the last record (a torn record, and whatever a torn write
        // left past a header that reads as zeros), so that records written from here on are
        // never followed by stale ones.
        file.set_len(pos)?;
        preallocate(&file, size.max(segment_bytes))?;
        file.sync_all()?;
    }
    if !started {
        if !newest || pos != 0 {
            return Err(damaged(path, 0, "segment without a start record"));
        }
        return Ok((file, None, 0));
    }
    Ok((file, Some(pos), max_index))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let id = LogId { term: 3, index: 9 };
        for record in [
            Record::Start {
                seq: 7,
                purged: Some(id),
                last: None,
            },
            Record::Entry(id, b"payload"),
            Record::Vote(b"vote"),
            Record::Truncate(5),
            Record::Purge(id),
        ] {
            let mut out = Vec::new();
            record.encode(&mut out);
            let len = u32::from_le_bytes(out[..4].try_into().unwrap()) as usize;
            assert_eq!(len, out.len() - HEADER);
            assert_eq!(Record::decode(&out[HEADER..]), Some(record));
        }
        assert_eq!(Record::decode(&[]), None);
        assert_eq!(Record::decode(&[9, 1, 2]), None);
        assert_eq!(Record::decode(&[TRUNCATE, 1, 2]), None);
        assert_eq!(Record::decode(&[START, b'x']), None);
    }

    #[test]
    fn segment_names() {
        assert_eq!(parse_segment_name("seg-000000000000002a.wal"), Some(42));
        assert_eq!(parse_segment_name("seg-2a.wal"), None);
        assert_eq!(parse_segment_name("r-000000000000000000000.wal"), None);
        // One number, one name: no sign, no capitals.
        assert_eq!(parse_segment_name("seg-+000000000000000.wal"), None);
        assert_eq!(parse_segment_name("seg-FFFFFFFFFFFFFFFF.wal"), None);
        assert_eq!(
            parse_segment_name("seg-ffffffffffffffff.wal"),
            Some(u64::MAX)
        );
    }
}
