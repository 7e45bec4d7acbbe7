//! Value segments: append-only files that hold put values outside sled.
//!
//! "Values out of sled" (docs/architecture.md). sled 0.34 rewrites a whole leaf every ten
//! changes and at every split, so a put costs sled CPU in proportion to the bytes its leaf
//! holds. With the values kept here, a record in sled holds only its metadata and a
//! [`ValuePtr`] (the store puts values of 64 bytes or more here; `mvcc`).
//!
//! # Files
//!
//! `val-<seq, 16 hex digits>.seg`, numbered from 1; older ones may be gone once their values
//! live elsewhere, but from the durable one on there are no gaps. Each is allocated ahead
//! of its frames, a sixteenth of the segment size at a time (so an fdatasync seldom has to
//! persist a new file size, and a new segment does not take 64 MiB of a small disk at
//! once), so the bytes after the last frame read as zeros. A segment holds frames back to
//! back, with room for a 4-byte length field kept after the last, and one the writer left
//! for the next ends with the continuation mark there.
//!
//! ```text
//! u32 LE  value length + 1 (0: no more frames; u32::MAX: continued in the next segment)
//! u32 LE  key length
//! u64 LE  revision of the write that stored the value
//! u32 LE  CRC-32 of the 16 bytes above, the key and the value
//! key
//! value
//! ```
//!
//! The key and revision name the record that points at the frame, so a walk over a segment
//! finds the records its values belong to (what moving a segment's live values needs). A
//! [`ValuePtr`] names a frame: segment, offset, the key's and the value's length and the
//! frame's CRC. A read checks them, the key and the revision against the frame, so a
//! damaged file, a pointer from another store or one into a frame since cut off is an
//! error, never another value.
//!
//! # Durability
//!
//! [`ValueLog::append`] writes into the page cache from the caller. [`ValueLog::sync`]
//! makes everything appended so far durable (callers that arrive while one syncs share the
//! next fdatasync; after a write or a sync fails, the log takes no more appends and every
//! later sync fails, as the WAL does), and [`ValueLog::durable`] is the last frame that is.
//! The store is to record its applied point only up to that frame, and to store the
//! frame's pointer with the point.
//!
//! # Recovery
//!
//! [`ValueLog::open`] is given the last durable frame the store recorded. That frame is
//! checked against its segment first; a mismatch is damage and the open fails with nothing
//! changed. Frames before it were synced before the store recorded it, so they are trusted
//! (a read still checks each one). Frames after it are walked, and the first one that is
//! not whole (its length runs past the segment, its CRC fails, or its length field is zero)
//! ends the log: whatever is not zero in the rest of that segment is zeroed (so opening
//! reads the rest of the last segment once) and later segments are removed. Those frames
//! can only belong to writes above the store's recorded point, which the Raft log's replay
//! writes again. Lengths are checked before anything is allocated.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use raftkv_codec::varint;

use crate::wal::{numbered_path, parse_numbered, preallocate_or_full, sync_dir};

/// Bytes before a frame's key: the lengths, the revision and the CRC.
pub const FRAME_HEADER: u64 = 20;
/// The segment size the store uses (the WAL's).
pub const SEGMENT_BYTES: u64 = 64 << 20;
/// A frame length field that says the log goes on in the next segment.
const CONTINUED: u32 = u32::MAX;
/// Bytes the writer keeps free after every frame, for that mark. (A segment with fewer
/// left is taken as continued; the writer before segments grew could leave one. No store
/// held values here before this writer, so no segment of that kind exists.)
const MARK: u64 = 4;
/// Bytes zeroed at once when a torn tail is cut off.
const ZERO_CHUNK: usize = 1 << 20;
/// Bytes read at once by [`ValueLog::frames`] (more when one frame's header and key need it).
const WALK_WINDOW: u64 = 64 << 10;

/// A place in the value log: a segment and an offset in it. Positions order as the frames
/// were appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Position {
    /// The segment's sequence number (0 only before the first segment exists).
    pub seq: u64,
    /// Bytes from the segment's start.
    pub offset: u64,
}

/// Where a value lies: what a record keeps instead of the value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ValuePtr {
    /// The segment.
    pub seq: u64,
    /// The frame's offset in it.
    pub offset: u64,
    /// The key's length.
    pub key_len: u32,
    /// The value's length.
    pub len: u32,
    /// The frame's CRC.
    pub crc: u32,
}

impl ValuePtr {
    /// The position just after the frame.
    pub fn end(&self) -> Position {
        Position {
            seq: self.seq,
            offset: self.offset.saturating_add(self.frame_len()),
        }
    }

    /// The frame's length.
    pub fn frame_len(&self) -> u64 {
        FRAME_HEADER + u64::from(self.key_len) + u64::from(self.len)
    }

    /// Appends the pointer as five LEB128 varints.
    pub fn encode(&self, out: &mut Vec<u8>) {
        for v in [
            self.seq,
            self.offset,
            u64::from(self.key_len),
            u64::from(self.len),
            u64::from(self.crc),
        ] {
            varint::put(out, v);
        }
    }

    /// Decodes a pointer from the front of `raw`; returns it and the bytes after it, or
    /// `None` for anything malformed (a varint over 10 bytes, a length or CRC over 32 bits).
    pub fn decode(raw: &[u8]) -> Option<(Self, &[u8])> {
        let mut pos = 0;
        let mut next = || varint::get(raw, &mut pos).ok();
        let (seq, offset) = (next()?, next()?);
        let (key_len, len, crc) = (next()?, next()?, next()?);
        let ptr = ValuePtr {
            seq,
            offset,
            key_len: u32::try_from(key_len).ok()?,
            len: u32::try_from(len).ok()?,
            crc: u32::try_from(crc).ok()?,
        };
        Some((ptr, &raw[pos..]))
    }
}

/// The frame header of a value: its length + 1, the key's length, the revision, and the
/// CRC over them, the key and the value. The caller has checked that both lengths fit.
fn frame_header(revision: i64, key: &[u8], value: &[u8]) -> [u8; FRAME_HEADER as usize] {
    let mut header = [0u8; FRAME_HEADER as usize];
    header[..4].copy_from_slice(&(value.len() as u32 + 1).to_le_bytes());
    header[4..8].copy_from_slice(&(key.len() as u32).to_le_bytes());
    header[8..16].copy_from_slice(&revision.to_le_bytes());
    let mut crc = crc32fast::Hasher::new();
    crc.update(&header[..16]);
    crc.update(key);
    crc.update(value);
    header[16..].copy_from_slice(&crc.finalize().to_le_bytes());
    header
}

/// The CRC of the frame that would hold `key`'s `value` stored at `revision`: what a
/// [`ValuePtr`] to it carries, so a value can be checked against a pointer without reading
/// the frame (a merge compares a snapshot's versions with the store's this way).
pub fn frame_crc(revision: i64, key: &[u8], value: &[u8]) -> Option<u32> {
    if value.len() as u64 + 1 >= u64::from(CONTINUED) || key.len() as u64 >= u64::from(u32::MAX) {
        return None;
    }
    let header = frame_header(revision, key, value);
    Some(u32::from_le_bytes(
        header[16..].try_into().expect("4 bytes"),
    ))
}

fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    numbered_path(dir, "val-", ".seg", seq)
}

/// A segment's number from its file name; 0 and `u64::MAX` are never written.
fn parse_segment_name(name: &str) -> Option<u64> {
    parse_numbered(name, "val-", ".seg").filter(|&seq| seq != 0 && seq != u64::MAX)
}

fn damaged(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

/// A frame as [`ValueLog::frames`] finds it: where it lies and the record it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameRef {
    /// A pointer to it, as a record that holds its value keeps it.
    pub ptr: ValuePtr,
    /// The revision of the version it holds.
    pub revision: i64,
    /// The key.
    pub key: Vec<u8>,
}

/// The appending end.
struct Writer {
    /// The segment appended to (0 before the first).
    seq: u64,
    file: Option<Arc<File>>,
    /// That segment's size (allocated so far).
    size: u64,
    /// The size it may grow to: the log's segment size (or its size, if larger), or its
    /// size for a segment the walk at open called continued.
    cap: u64,
    /// Where the next frame goes.
    offset: u64,
    /// The last frame appended.
    last: Option<ValuePtr>,
    /// Files written to since the last sync.
    unsynced: Vec<Arc<File>>,
}

/// A segment file and its size (allocated in steps of a sixteenth of the segment size as
/// frames arrive, so a new segment does not take a whole segment's space at once; a read
/// never looks past it).
#[derive(Clone)]
struct Segment {
    file: Arc<File>,
    size: u64,
}

/// The value log: one directory of segments.
pub struct ValueLog {
    dir: PathBuf,
    segment_bytes: u64,
    /// Every segment, for reads.
    files: RwLock<BTreeMap<u64, Segment>>,
    writer: Mutex<Writer>,
    /// Held while syncing, so that callers queue for the next fdatasync.
    syncing: Mutex<()>,
    /// The last frame known durable (set after a sync; never held across one).
    durable: Mutex<Option<ValuePtr>>,
    /// Set when a write or an fdatasync failed: the kernel may have dropped the pages it
    /// could not write and a retry would succeed without them, and a part-written frame may
    /// lie past the end, so the log takes no more appends and no sync is trusted again.
    failed: AtomicBool,
}

impl ValueLog {
    /// Opens (or creates) the log in `dir`. `durable` is the last frame the store recorded
    /// as durable (`None` if it never recorded one): it is checked against the file, and a
    /// frame that does not match is damage and fails the open, with nothing changed.
    /// Frames after it are walked, and the log is cut at the first that is not whole.
    /// `segment_bytes` is for new segments (existing ones keep their size).
    pub fn open(dir: &Path, segment_bytes: u64, durable: Option<ValuePtr>) -> io::Result<Self> {
        if segment_bytes < FRAME_HEADER * 2 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "value segments too small",
            ));
        }
        if !dir.exists() {
            std::fs::create_dir_all(dir)?;
            if let Some(parent) = dir.parent() {
                sync_dir(parent)?;
            }
        }
        let mut seqs = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            if let Some(seq) = entry.file_name().to_str().and_then(parse_segment_name) {
                seqs.push(seq);
            }
        }
        seqs.sort_unstable();
        let durable_seq = durable.map_or(0, |p| p.seq);
        // Older segments may be gone (their values were moved); from the durable one on, the
        // walk below needs every segment.
        let walked: Vec<u64> = seqs.iter().copied().filter(|&s| s >= durable_seq).collect();
        if let (Some(&first), Some(&last)) = (walked.first(), walked.last())
            && last - first + 1 != walked.len() as u64
        {
            return Err(damaged(format!(
                "{}: value segments {first}..={last} have gaps",
                dir.display()
            )));
        }
        let mut files = BTreeMap::new();
        for &seq in &seqs {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(segment_path(dir, seq))?;
            let size = file.metadata()?.len();
            let file = Arc::new(file);
            files.insert(seq, Segment { file, size });
        }
        // Where the walk starts: after the recorded frame, checked first.
        let mut end = match durable {
            None => Position {
                seq: seqs.first().copied().unwrap_or(0),
                offset: 0,
            },
            Some(ptr) => {
                let segment = files.get(&ptr.seq).ok_or_else(|| {
                    damaged(format!(
                        "{}: value segment {} (recorded durable) is missing",
                        dir.display(),
                        ptr.seq
                    ))
                })?;
                if !frame_matches(segment, &ptr)? {
                    return Err(damaged(format!(
                        "{}: the frame recorded durable does not match its segment",
                        segment_path(dir, ptr.seq).display()
                    )));
                }
                ptr.end()
            }
        };
        let mut last = durable;
        let mut cut = None;
        for (&seq, segment) in files.range(end.seq..) {
            let size = segment.size;
            let from = if seq == end.seq { end.offset } else { 0 };
            let walk = walk_frames(&segment.file, seq, from, size)?;
            last = walk.last.or(last);
            if walk.continued {
                // The next append goes to the next segment, whether or not it exists yet.
                end = Position { seq, offset: size };
            } else {
                // The log ends here: whatever follows is a torn tail.
                end = Position {
                    seq,
                    offset: walk.end,
                };
                cut = Some(seq);
                break;
            }
        }
        if let Some(seq) = cut {
            zero_tail(&files[&seq], end.offset)?;
            let later: Vec<u64> = files.range(seq + 1..).map(|(&s, _)| s).collect();
            for s in later {
                files.remove(&s);
                std::fs::remove_file(segment_path(dir, s))?;
            }
            sync_dir(dir)?;
        }
        // What the walk found whole may be in the page cache only (a process that died, not
        // the machine): make it durable before calling it so.
        for segment in files.range(durable_seq..).map(|(_, s)| s) {
            segment.file.sync_data()?;
        }
        let segment = files.get(&end.seq).cloned();
        let writer = Writer {
            seq: end.seq,
            size: segment.as_ref().map_or(0, |s| s.size),
            // A segment the walk called continued takes nothing more (its mark, or too
            // little room, is where the walk will stop); the one the log ends in grows on.
            cap: segment.as_ref().map_or(0, |s| {
                if end.offset >= s.size {
                    s.size
                } else {
                    s.size.max(segment_bytes)
                }
            }),
            file: segment.map(|s| s.file),
            offset: end.offset,
            last,
            unsynced: Vec::new(),
        };
        Ok(ValueLog {
            dir: dir.to_path_buf(),
            segment_bytes,
            files: RwLock::new(files),
            writer: Mutex::new(writer),
            syncing: Mutex::new(()),
            durable: Mutex::new(last),
            failed: AtomicBool::new(false),
        })
    }

    /// Whether a write or a sync failed (see `failed`). An append that fails while this is
    /// false wrote nothing: its value may be kept elsewhere.
    pub fn is_failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    fn check_failed(&self) -> io::Result<()> {
        if self.failed.load(Ordering::Acquire) {
            return Err(io::Error::other(
                "the value log's disk failed an earlier write or sync",
            ));
        }
        Ok(())
    }

    /// Appends `key`'s `value`, stored by the write at `revision`, and returns where it
    /// lies. It is durable once a [`ValueLog::sync`] that began after this returned has
    /// returned. A frame that cannot fit a segment is refused (`InvalidInput`): its record
    /// keeps the value inline.
    pub fn append(&self, revision: i64, key: &[u8], value: &[u8]) -> io::Result<ValuePtr> {
        let frame = FRAME_HEADER + key.len() as u64 + value.len() as u64;
        if value.len() as u64 + 1 >= u64::from(CONTINUED)
            || key.len() as u64 >= u64::from(u32::MAX)
            || frame + MARK > self.segment_bytes
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "a frame of {frame} bytes does not fit a segment of {}",
                    self.segment_bytes
                ),
            ));
        }
        self.check_failed()?;
        let header = frame_header(revision, key, value);
        let mut w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        if w.file.is_none() || w.offset + frame + MARK > w.cap {
            self.rotate(&mut w)?;
        }
        let needed = w.offset + frame + MARK;
        if needed > w.size {
            self.grow(&mut w, needed)?;
        }
        let file = Arc::clone(w.file.as_ref().expect("a segment after rotate"));
        let mut buf = Vec::with_capacity(frame as usize);
        buf.extend_from_slice(&header);
        buf.extend_from_slice(key);
        buf.extend_from_slice(value);
        if let Err(e) = file.write_all_at(&buf, w.offset) {
            self.failed.store(true, Ordering::Release);
            return Err(e);
        }
        let ptr = ValuePtr {
            seq: w.seq,
            offset: w.offset,
            key_len: key.len() as u32,
            len: value.len() as u32,
            crc: u32::from_le_bytes(header[16..].try_into().expect("4 bytes")),
        };
        w.offset += frame;
        w.last = Some(ptr);
        if !w.unsynced.iter().any(|f| Arc::ptr_eq(f, &file)) {
            w.unsynced.push(file);
        }
        Ok(ptr)
    }

    /// Starts the next segment (its first step allocated), then marks the one before as continued
    /// in it (in that order, so a mark is never found without the segment it names). On an
    /// error the writer is left as it was and the new file removed.
    fn rotate(&self, w: &mut Writer) -> io::Result<()> {
        let seq = w
            .seq
            .checked_add(1)
            .ok_or_else(|| damaged("value segment numbers ran out".to_string()))?;
        let path = segment_path(&self.dir, seq);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)?;
        let mark = |old: &File| -> io::Result<()> {
            if w.offset + 4 <= w.size {
                old.write_all_at(&CONTINUED.to_le_bytes(), w.offset)?;
            }
            Ok(())
        };
        let first = self.grow_step().min(self.segment_bytes);
        let made = preallocate_or_full(&file, first)
            .and_then(|()| file.sync_all())
            .and_then(|()| sync_dir(&self.dir))
            .and_then(|()| w.file.as_deref().map_or(Ok(()), mark));
        if let Err(e) = made {
            // Not left half made for the next try to trip over.
            drop(file);
            let _ = std::fs::remove_file(&path);
            let _ = sync_dir(&self.dir);
            return Err(e);
        }
        if let Some(old) = w.file.take()
            && !w.unsynced.iter().any(|f| Arc::ptr_eq(f, &old))
        {
            w.unsynced.push(old);
        }
        let file = Arc::new(file);
        let segment = Segment {
            file: Arc::clone(&file),
            size: first,
        };
        self.files
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(seq, segment);
        w.seq = seq;
        w.file = Some(file);
        w.size = first;
        w.cap = self.segment_bytes;
        w.offset = 0;
        Ok(())
    }

    /// How much a segment grows by at a time: a sixteenth of the segment size (4 MiB of
    /// 64), so a few members sharing a small disk do not each take a whole segment at once
    /// (the free-space watch sees the log grow as it grows), while an fdatasync still
    /// rarely has to persist a new file size.
    fn grow_step(&self) -> u64 {
        (self.segment_bytes / 16).max(FRAME_HEADER)
    }

    /// Allocates the writer's segment up to at least `needed` bytes (a step at a time, up
    /// to its cap) before a frame is written there; reads see the new size first. Nothing
    /// is written on an error.
    fn grow(&self, w: &mut Writer, needed: u64) -> io::Result<()> {
        let size = w
            .size
            .saturating_add(self.grow_step())
            .max(needed)
            .min(w.cap);
        let file = w.file.as_ref().expect("a segment to grow");
        preallocate_or_full(file, size)?;
        w.size = size;
        if let Some(segment) = self
            .files
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(&w.seq)
        {
            segment.size = size;
        }
        Ok(())
    }

    /// Where the next frame goes: everything before it has been appended.
    pub fn end(&self) -> Position {
        let w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        Position {
            seq: w.seq,
            offset: w.offset,
        }
    }

    /// The last frame known durable (what the store records with its applied point), or
    /// `None` if none is. Never waits for a sync in progress.
    pub fn durable(&self) -> Option<ValuePtr> {
        *self.durable.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes every frame appended before this call durable, and returns the last of them
    /// ([`ValueLog::durable`] from then on). Callers that wait while another syncs find
    /// their frames covered, or share the next fdatasync.
    pub fn sync(&self) -> io::Result<Option<ValuePtr>> {
        let target = self.writer.lock().unwrap_or_else(|e| e.into_inner()).last;
        let _syncing = self.syncing.lock().unwrap_or_else(|e| e.into_inner());
        let durable = self.durable();
        if target.map(|t| t.end()) <= durable.map(|d| d.end()) {
            // Another caller's sync covered these frames meanwhile.
            return Ok(durable);
        }
        self.check_failed()?;
        // Everything appended up to now (at least `target`), and the files it went to.
        let (upto, files) = {
            let mut w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
            (w.last, std::mem::take(&mut w.unsynced))
        };
        if let Err(e) = files.iter().try_for_each(|f| f.sync_data()) {
            self.failed.store(true, Ordering::Release);
            return Err(e);
        }
        *self.durable.lock().unwrap_or_else(|e| e.into_inner()) = upto;
        Ok(upto)
    }

    /// Reads the value `ptr` names, stored for `key` at `revision`, checking all three
    /// against the frame.
    pub fn read(&self, ptr: &ValuePtr, key: &[u8], revision: i64) -> io::Result<Vec<u8>> {
        let mismatch = || {
            damaged(format!(
                "value at {}:{} does not match its record",
                ptr.seq, ptr.offset
            ))
        };
        if key.len() as u64 != u64::from(ptr.key_len) || ptr.len >= CONTINUED - 1 {
            return Err(mismatch());
        }
        let Segment { file, size } = self
            .files
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&ptr.seq)
            .cloned()
            .ok_or_else(|| damaged(format!("value segment {} does not exist", ptr.seq)))?;
        let frame = ptr.frame_len();
        if ptr.offset.checked_add(frame).is_none_or(|end| end > size) {
            return Err(damaged(format!(
                "value at {}:{} ({} bytes) runs past its segment",
                ptr.seq, ptr.offset, frame
            )));
        }
        let mut buf = vec![0u8; frame as usize];
        file.read_exact_at(&mut buf, ptr.offset)?;
        let body = FRAME_HEADER as usize;
        let value = &buf[body + key.len()..];
        if &buf[body..body + key.len()] != key
            || frame_header(revision, key, value)[..] != buf[..body]
            || buf[16..20] != ptr.crc.to_le_bytes()
        {
            return Err(mismatch());
        }
        buf.drain(..body + key.len());
        Ok(buf)
    }

    /// Whether frames were appended since the last sync that returned (what a store's
    /// applied point has to wait for).
    pub fn has_unsynced(&self) -> bool {
        let last = self.writer.lock().unwrap_or_else(|e| e.into_inner()).last;
        last.map(|p| p.end()) > self.durable().map(|d| d.end())
    }

    /// Removes segment `seq`, whose values the store no longer points at. Refused (with
    /// nothing removed) for the segment appended to and for any segment from the durable
    /// frame's on, which recovery walks and the store records: only older segments may go.
    pub fn remove_segment(&self, seq: u64) -> io::Result<()> {
        let durable_seq = self.durable().map_or(0, |d| d.seq);
        let writing = self.writer.lock().unwrap_or_else(|e| e.into_inner()).seq;
        if seq >= durable_seq || seq >= writing {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("value segment {seq} is not older than the durable one ({durable_seq})"),
            ));
        }
        let removed = self
            .files
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&seq);
        if removed.is_some() {
            std::fs::remove_file(segment_path(&self.dir, seq))?;
            sync_dir(&self.dir)?;
        }
        Ok(())
    }

    /// The segments, oldest first.
    pub fn segments(&self) -> Vec<u64> {
        self.files
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .copied()
            .collect()
    }

    /// Segment `seq`'s size (what it has allocated), if it exists.
    pub fn segment_size(&self, seq: u64) -> Option<u64> {
        self.files
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&seq)
            .map(|s| s.size)
    }

    /// Frames of segment `seq` from offset `from` on, as far as their headers and keys:
    /// where each lies and the record it names. Stops after `max` frames or once the frames
    /// found hold `max_bytes` (at least one frame either way, so a caller always moves on).
    /// Values are neither read nor checked here (whoever takes one reads it through
    /// [`ValueLog::read`], which checks it). Also returns where to go on from: `None` once
    /// the frames end (a mark, zeros, the segment's end, or bytes that cannot be a frame). A
    /// segment that does not exist has none. Every length is checked against the segment's
    /// size before it is trusted, so a damaged header costs at most a segment's worth.
    pub fn frames(
        &self,
        seq: u64,
        from: u64,
        max: usize,
        max_bytes: u64,
    ) -> io::Result<(Vec<FrameRef>, Option<u64>)> {
        let Some(Segment { file, size }) = self
            .files
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&seq)
            .cloned()
        else {
            return Ok((Vec::new(), None));
        };
        let (max, max_bytes) = (max.max(1), max_bytes.max(1));
        let mut found = Vec::new();
        let mut taken = 0u64;
        // A window of the file read at once: [start, start + buf.len()).
        let mut buf: Vec<u8> = Vec::new();
        let mut start = 0u64;
        let mut at = from;
        // The bytes [at, at + n) in the window, read again from `at` when they are not all
        // in it (the caller checked that they lie inside the segment).
        let window = |at: u64, n: u64, buf: &mut Vec<u8>, start: &mut u64| -> io::Result<()> {
            if at < *start || at + n > *start + buf.len() as u64 {
                let len = n.max(WALK_WINDOW).min(size - at);
                buf.resize(len as usize, 0);
                file.read_exact_at(buf, at)?;
                *start = at;
            }
            Ok(())
        };
        while found.len() < max && taken < max_bytes {
            if at.checked_add(FRAME_HEADER).is_none_or(|e| e > size) {
                return Ok((found, None));
            }
            window(at, FRAME_HEADER, &mut buf, &mut start)?;
            let h = (at - start) as usize;
            let header = &buf[h..h + FRAME_HEADER as usize];
            let stored = u32::from_le_bytes(header[..4].try_into().expect("4 bytes"));
            if stored == CONTINUED || stored == 0 {
                return Ok((found, None));
            }
            let key_len = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
            let revision = i64::from_le_bytes(header[8..16].try_into().expect("8 bytes"));
            let crc = u32::from_le_bytes(header[16..20].try_into().expect("4 bytes"));
            let end = at + FRAME_HEADER + u64::from(key_len) + u64::from(stored - 1);
            if end > size {
                return Ok((found, None));
            }
            window(at, FRAME_HEADER + u64::from(key_len), &mut buf, &mut start)?;
            let k = (at - start) as usize + FRAME_HEADER as usize;
            found.push(FrameRef {
                ptr: ValuePtr {
                    seq,
                    offset: at,
                    key_len,
                    len: stored - 1,
                    crc,
                },
                revision,
                key: buf[k..k + key_len as usize].to_vec(),
            });
            taken += end - at;
            at = end;
        }
        Ok((found, Some(at)))
    }

    /// Bytes the segments take on disk.
    pub fn size_on_disk(&self) -> u64 {
        use std::os::unix::fs::MetadataExt;
        self.files
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter_map(|s| s.file.metadata().ok())
            .map(|m| m.blocks() * 512)
            .sum()
    }
}

/// What a walk over a segment found.
struct Walk {
    /// Where the whole frames end.
    end: u64,
    /// Whether the log goes on in the next segment (the writer's mark, or fewer than 4 bytes
    /// left, which no writer leaves now).
    continued: bool,
    /// The last whole frame.
    last: Option<ValuePtr>,
}

/// Walks whole frames of segment `seq` from `from`, up to the first frame whose length
/// field is zero, runs past `size`, or fails its CRC.
fn walk_frames(file: &File, seq: u64, mut at: u64, size: u64) -> io::Result<Walk> {
    let mut header = [0u8; FRAME_HEADER as usize];
    let mut body = Vec::new();
    let mut last = None;
    let stop = |end, continued, last| {
        Ok(Walk {
            end,
            continued,
            last,
        })
    };
    while at.checked_add(MARK).is_some_and(|e| e <= size) {
        let n = (size - at).min(FRAME_HEADER) as usize;
        header.fill(0);
        file.read_exact_at(&mut header[..n], at)?;
        let stored = u32::from_le_bytes(header[..4].try_into().expect("4 bytes"));
        if stored == CONTINUED {
            return stop(at, true, last);
        }
        if stored == 0 || n < FRAME_HEADER as usize {
            // The end of the log, or a frame that cannot fit: torn.
            return stop(at, false, last);
        }
        let key_len = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
        let len = u64::from(key_len) + u64::from(stored - 1);
        let end = at + FRAME_HEADER + len;
        if end > size {
            return stop(at, false, last);
        }
        body.resize(len as usize, 0);
        file.read_exact_at(&mut body, at + FRAME_HEADER)?;
        let mut crc = crc32fast::Hasher::new();
        crc.update(&header[..16]);
        crc.update(&body);
        let crc = crc.finalize();
        if crc.to_le_bytes() != header[16..] {
            return stop(at, false, last);
        }
        last = Some(ValuePtr {
            seq,
            offset: at,
            key_len,
            len: stored - 1,
            crc,
        });
        at = end;
    }
    stop(at, true, last)
}

/// Whether `ptr`'s frame is whole in `file` as `ptr` describes it (its lengths, its CRC,
/// and a CRC that matches its bytes).
fn frame_matches(segment: &Segment, ptr: &ValuePtr) -> io::Result<bool> {
    let size = segment.size;
    if ptr.len >= CONTINUED - 1
        || ptr
            .offset
            .checked_add(ptr.frame_len())
            .is_none_or(|e| e > size)
    {
        return Ok(false);
    }
    let walk = walk_frames(
        &segment.file,
        ptr.seq,
        ptr.offset,
        ptr.offset + ptr.frame_len(),
    )?;
    Ok(walk.last == Some(*ptr))
}

/// Zeroes whatever is not zero in `file` from `at` on, so that a later walk stops where
/// this one did and no frame a crash left behind can be taken for a new one. Reads the rest
/// of the segment; writes only where it finds bytes (a torn tail), then syncs them.
fn zero_tail(segment: &Segment, at: u64) -> io::Result<()> {
    let (file, size) = (&segment.file, segment.size);
    let mut buf = vec![0u8; ZERO_CHUNK];
    let mut pos = at;
    let mut wrote = false;
    while pos < size {
        let n = (size - pos).min(ZERO_CHUNK as u64) as usize;
        file.read_exact_at(&mut buf[..n], pos)?;
        if buf[..n].iter().any(|&b| b != 0) {
            buf[..n].fill(0);
            file.write_all_at(&buf[..n], pos)?;
            wrote = true;
        }
        pos += n as u64;
    }
    if wrote {
        file.sync_data()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const K: &[u8] = b"key";

    fn value(i: usize) -> Vec<u8> {
        (0..i % 97).map(|j| (i * 31 + j) as u8).collect()
    }

    fn invalid(e: io::Error) -> bool {
        e.kind() == io::ErrorKind::InvalidData
    }

    fn open(dir: &Path, segment_bytes: u64, durable: Option<ValuePtr>) -> ValueLog {
        ValueLog::open(dir, segment_bytes, durable).unwrap()
    }

    fn refused(dir: &Path, segment_bytes: u64, durable: Option<ValuePtr>) -> bool {
        ValueLog::open(dir, segment_bytes, durable)
            .err()
            .is_some_and(invalid)
    }

    /// Overwrites bytes of segment `seq` at `at`.
    fn scribble(dir: &Path, seq: u64, at: u64, bytes: &[u8]) {
        let file = OpenOptions::new()
            .write(true)
            .open(segment_path(dir, seq))
            .unwrap();
        file.write_all_at(bytes, at).unwrap();
    }

    #[test]
    fn segments_grow_as_frames_arrive_and_on_after_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let len = |seq| {
            std::fs::metadata(segment_path(dir.path(), seq))
                .unwrap()
                .len()
        };
        let log = open(dir.path(), 4096, None);
        let mut ptrs = vec![(2, log.append(2, K, &[1; 10]).unwrap())];
        assert_eq!(len(1), 256, "a sixteenth of the segment at first");
        for i in 0..20 {
            ptrs.push((3 + i, log.append(3 + i, K, &[i as u8; 100]).unwrap()));
        }
        let grown = len(1);
        assert!(grown > 256 && grown < 4096, "{grown}");
        assert!(ptrs.iter().all(|(_, p)| p.seq == 1));
        let durable = log.sync().unwrap();
        drop(log);
        let log = open(dir.path(), 4096, durable);
        let end = log.end();
        for i in 0..30 {
            ptrs.push((50 + i, log.append(50 + i, K, &[7; 100]).unwrap()));
        }
        // The log goes on where it ended, growing the segment, then in the next.
        assert_eq!((ptrs[21].1.seq, ptrs[21].1.offset), (end.seq, end.offset));
        assert_eq!(len(1), 4096);
        assert_eq!(ptrs.last().unwrap().1.seq, 2);
        for (rev, ptr) in &ptrs {
            assert!(log.read(ptr, K, *rev).is_ok(), "{ptr:?}");
        }
        let durable = log.sync().unwrap();
        drop(log);
        let log = open(dir.path(), 4096, durable);
        for (rev, ptr) in &ptrs {
            assert!(log.read(ptr, K, *rev).is_ok(), "{ptr:?} after a reopen");
        }
        assert_eq!(log.end(), ptrs.last().unwrap().1.end());
    }

    #[test]
    fn a_walk_in_batches_finds_every_frame_of_a_segment_as_appended() {
        let dir = tempfile::tempdir().unwrap();
        // Frames across several windows of the walk (64 KiB), one segment.
        let log = open(dir.path(), 1 << 20, None);
        let appended: Vec<FrameRef> = (0..900)
            .map(|i| {
                let key = format!("key-{i}").into_bytes();
                let ptr = log.append(i as i64 + 2, &key, &[i as u8; 700]).unwrap();
                FrameRef {
                    ptr,
                    revision: i as i64 + 2,
                    key,
                }
            })
            .collect();
        assert_eq!(log.segments(), vec![1]);
        let walk = |max, max_bytes| {
            let (mut found, mut from) = (Vec::new(), Some(0));
            while let Some(at) = from {
                let (frames, next) = log.frames(1, at, max, max_bytes).unwrap();
                assert!(!frames.is_empty() || next.is_none(), "no progress at {at}");
                assert!(frames.len() <= max.max(1));
                found.extend(frames);
                from = next;
            }
            found
        };
        assert_eq!(walk(usize::MAX, u64::MAX), appended);
        assert_eq!(walk(7, u64::MAX), appended);
        assert_eq!(walk(256, 2000), appended, "two or three frames per batch");
        assert_eq!(walk(0, 0), appended, "one frame per batch at least");
        assert_eq!(log.frames(9, 0, 10, 10).unwrap(), (Vec::new(), None));
        // A damaged header in the middle ends the walk there: what follows is not taken
        // for frames (their records keep their pointers, and so the segment).
        scribble(
            dir.path(),
            1,
            appended[400].ptr.offset + 4,
            &u32::MAX.to_le_bytes(),
        );
        assert_eq!(walk(100, u64::MAX), appended[..400]);
    }

    #[test]
    fn values_read_back_across_segments() {
        let dir = tempfile::tempdir().unwrap();
        let log = open(dir.path(), 512, None);
        let ptrs: Vec<ValuePtr> = (0..200)
            .map(|i| log.append(i as i64 + 2, K, &value(i)).unwrap())
            .collect();
        assert!(log.segments().len() > 10, "{:?}", log.segments());
        for (i, ptr) in ptrs.iter().enumerate() {
            assert_eq!(log.read(ptr, K, i as i64 + 2).unwrap(), value(i));
        }
        assert_eq!(log.end(), ptrs[199].end());
        // A frame that cannot fit a segment is refused, and changes nothing.
        let e = log.append(1000, K, &[7u8; 512]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert_eq!(log.end(), ptrs[199].end());
    }

    #[test]
    fn a_read_checks_the_pointer_against_the_frame() {
        let dir = tempfile::tempdir().unwrap();
        let log = open(dir.path(), 4096, None);
        let a = log.append(5, K, b"alpha").unwrap();
        let b = log.append(6, K, b"bravo!").unwrap();
        assert_eq!(log.read(&a, K, 5).unwrap(), b"alpha");
        let wrong = [
            (
                ValuePtr {
                    crc: a.crc ^ 1,
                    ..a
                },
                5,
            ),
            (
                ValuePtr {
                    len: a.len + 1,
                    ..a
                },
                5,
            ),
            (
                ValuePtr {
                    len: a.len - 1,
                    ..a
                },
                5,
            ),
            (
                ValuePtr {
                    offset: a.offset + 1,
                    ..a
                },
                5,
            ),
            (
                ValuePtr {
                    offset: b.offset,
                    ..a
                },
                5,
            ),
            (ValuePtr { seq: 9, ..a }, 5),
            (
                ValuePtr {
                    offset: u64::MAX - 3,
                    ..a
                },
                5,
            ),
            (ValuePtr { len: u32::MAX, ..a }, 5),
            (
                ValuePtr {
                    len: u32::MAX - 1,
                    ..a
                },
                5,
            ),
            (ValuePtr { key_len: 2, ..a }, 5),
            (a, 6),
        ];
        for (ptr, rev) in wrong {
            let e = log.read(&ptr, K, rev).unwrap_err();
            assert!(invalid(e), "{ptr:?} at {rev}");
        }
        // Another key, of the same length or not.
        assert!(invalid(log.read(&a, b"kex", 5).unwrap_err()));
        assert!(invalid(log.read(&a, b"keys", 5).unwrap_err()));
    }

    #[test]
    fn sync_makes_everything_appended_durable() {
        let dir = tempfile::tempdir().unwrap();
        let log = open(dir.path(), 256, None);
        assert_eq!(log.durable(), None);
        assert_eq!(log.sync().unwrap(), None);
        let mut last = None;
        for i in 0..40 {
            last = Some(log.append(i, K, &value(i as usize)).unwrap());
        }
        assert_eq!(log.durable(), None);
        assert_eq!(log.sync().unwrap(), last);
        assert_eq!(log.durable(), last);
        // Nothing new: the same frame, no sync needed.
        assert_eq!(log.sync().unwrap(), last);
    }

    #[test]
    fn a_reopened_log_goes_on_where_it_ended() {
        let dir = tempfile::tempdir().unwrap();
        let (a, durable, b) = {
            let log = open(dir.path(), 300, None);
            let a = log.append(2, K, b"first").unwrap();
            for i in 0..20 {
                log.append(3 + i, K, &value(i as usize)).unwrap();
            }
            let durable = log.sync().unwrap();
            // Whole but never synced: a process crash keeps it (the page cache does).
            let b = log.append(40, K, b"unsynced").unwrap();
            (a, durable, b)
        };
        let log = open(dir.path(), 300, durable);
        assert_eq!(log.end(), b.end());
        // What the walk found whole it made durable.
        assert_eq!(log.durable(), Some(b));
        assert_eq!(log.read(&a, K, 2).unwrap(), b"first");
        assert_eq!(log.read(&b, K, 40).unwrap(), b"unsynced");
        let c = log.append(41, K, b"next").unwrap();
        assert_eq!((c.seq, c.offset), (b.end().seq, b.end().offset));
    }

    #[test]
    fn a_store_that_never_recorded_a_frame_walks_every_segment() {
        let dir = tempfile::tempdir().unwrap();
        let ptrs: Vec<ValuePtr> = {
            let log = open(dir.path(), 200, None);
            (0..12)
                .map(|i| log.append(i + 2, K, &[i as u8; 70]).unwrap())
                .collect()
        };
        let log = open(dir.path(), 200, None);
        // Two frames fill a segment but for 14 bytes, too few for another: the log ends
        // after the last, and the next append goes to a new segment.
        assert_eq!(log.end(), ptrs[11].end());
        let next = log.append(20, K, &[1; 70]).unwrap();
        assert_eq!((next.seq, next.offset), (ptrs[11].seq + 1, 0));
        assert_eq!(log.durable(), Some(ptrs[11]));
        assert_eq!(log.read(&ptrs[0], K, 2).unwrap(), vec![0u8; 70]);
    }

    #[test]
    fn whole_frames_after_the_durable_frame_are_kept_across_segments() {
        let dir = tempfile::tempdir().unwrap();
        let (durable, ptrs) = {
            let log = open(dir.path(), 200, None);
            log.append(2, K, b"x").unwrap();
            let durable = log.sync().unwrap();
            // Frames that leave room for a header but not for the next frame, so most
            // segments end with the writer's mark; and one exactly full segment (but for
            // the room kept for the mark).
            let mut ptrs = Vec::new();
            for i in 0..30 {
                let len = if i == 10 {
                    (200 - MARK - FRAME_HEADER) as usize - K.len()
                } else {
                    50 + i * 3
                };
                ptrs.push((
                    i as i64 + 3,
                    log.append(i as i64 + 3, K, &vec![i as u8; len]).unwrap(),
                ));
            }
            (durable, ptrs)
        };
        let log = open(dir.path(), 200, durable);
        assert_eq!(log.end(), ptrs.last().unwrap().1.end());
        for (rev, ptr) in &ptrs {
            assert_eq!(log.read(ptr, K, *rev).unwrap().len(), ptr.len as usize);
        }
    }

    #[test]
    fn a_torn_tail_is_cut_at_its_first_bad_frame() {
        let dir = tempfile::tempdir().unwrap();
        let (a, durable, torn, after) = {
            let log = open(dir.path(), 1 << 16, None);
            let a = log.append(2, K, b"kept").unwrap();
            let durable = log.sync().unwrap();
            let torn = log.append(3, K, b"torn by a crash").unwrap();
            let after = log.append(4, K, b"written after it").unwrap();
            (a, durable, torn, after)
        };
        // The crash left one byte of the second frame's value unwritten.
        scribble(dir.path(), torn.seq, torn.offset + FRAME_HEADER + 3, &[0]);
        let log = open(dir.path(), 1 << 16, durable);
        assert_eq!(log.end(), a.end());
        assert_eq!(log.durable(), Some(a));
        assert_eq!(log.read(&a, K, 2).unwrap(), b"kept");
        assert!(invalid(log.read(&torn, K, 3).unwrap_err()));
        // The whole frame after the torn one was zeroed, not left to be found again.
        assert!(invalid(log.read(&after, K, 4).unwrap_err()));
        let again = log.append(3, K, b"replayed").unwrap();
        assert_eq!((again.seq, again.offset), (torn.seq, torn.offset));
        drop(log);
        let log = open(dir.path(), 1 << 16, durable);
        assert_eq!(log.end(), again.end());
        assert_eq!(log.read(&again, K, 3).unwrap(), b"replayed");
    }

    #[test]
    fn segments_after_the_cut_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let (durable, first_lost) = {
            let log = open(dir.path(), 128, None);
            log.append(2, K, b"durable").unwrap();
            let durable = log.sync().unwrap();
            let lost = log.append(3, K, &[1u8; 60]).unwrap();
            for i in 0..10 {
                log.append(4 + i, K, &[2u8; 60]).unwrap();
            }
            assert!(log.segments().len() > 3);
            (durable.unwrap(), lost)
        };
        // The first frame after the durable one never reached the disk.
        scribble(dir.path(), first_lost.seq, first_lost.offset, &[0; 8]);
        let log = open(dir.path(), 128, Some(durable));
        assert_eq!(log.end(), durable.end());
        assert_eq!(log.segments(), vec![durable.seq]);
        assert!(!segment_path(dir.path(), durable.seq + 1).exists());
    }

    #[test]
    fn a_recorded_frame_that_does_not_match_fails_the_open_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (durable, ptrs) = {
            let log = open(dir.path(), 128, None);
            let ptrs: Vec<ValuePtr> = (0..12)
                .map(|i| log.append(2 + i, K, &[3u8; 40]).unwrap())
                .collect();
            (log.sync().unwrap().unwrap(), ptrs)
        };
        assert!(durable.seq >= 5);
        let wrong = [
            // In the middle of a frame, as a position from another store could be.
            ValuePtr {
                offset: durable.offset + 7,
                ..durable
            },
            ValuePtr {
                crc: durable.crc ^ 1,
                ..durable
            },
            ValuePtr {
                len: durable.len + 1,
                ..durable
            },
            ValuePtr {
                offset: 1 << 20,
                ..durable
            },
            // A segment that is not there.
            ValuePtr {
                seq: durable.seq + 5,
                ..durable
            },
        ];
        for ptr in wrong {
            assert!(refused(dir.path(), 128, Some(ptr)), "{ptr:?}");
        }
        // The recorded frame itself damaged.
        scribble(dir.path(), durable.seq, durable.offset + FRAME_HEADER, b"x");
        assert!(refused(dir.path(), 128, Some(durable)));
        scribble(dir.path(), durable.seq, durable.offset + FRAME_HEADER, b"k");
        // Nothing was cut or removed by the refusals.
        let log = open(dir.path(), 128, Some(durable));
        assert_eq!(log.durable(), Some(durable));
        assert_eq!(log.end(), durable.end());
        for (i, ptr) in ptrs.iter().enumerate() {
            assert_eq!(log.read(ptr, K, 2 + i as i64).unwrap(), vec![3u8; 40]);
        }
        drop(log);
        // Segments before the durable one may go (their values moved elsewhere).
        std::fs::remove_file(segment_path(dir.path(), 1)).unwrap();
        drop(open(dir.path(), 128, Some(durable)));
        // A gap after the recorded frame's segment.
        std::fs::remove_file(segment_path(dir.path(), 3)).unwrap();
        assert!(refused(dir.path(), 128, Some(ptrs[2])));
    }

    #[test]
    fn appends_syncs_and_reads_from_several_threads_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(open(dir.path(), 1024, None));
        let stop = Arc::new(AtomicBool::new(false));
        let syncer = {
            let (log, stop) = (Arc::clone(&log), Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut last = None;
                while !stop.load(Ordering::Acquire) {
                    let durable = log.sync().unwrap();
                    // Durable only ever moves on.
                    assert!(durable.map(|d| d.end()) >= last.map(|d: ValuePtr| d.end()));
                    last = durable;
                }
            })
        };
        let writers: Vec<_> = (0..4u8)
            .map(|t| {
                let log = Arc::clone(&log);
                std::thread::spawn(move || {
                    let key = [b'k', t];
                    let mut ptrs = Vec::new();
                    for i in 0..300usize {
                        let rev = (t as i64) << 32 | i as i64;
                        let v = value(i + t as usize);
                        let ptr = log.append(rev, &key, &v).unwrap();
                        assert_eq!(log.read(&ptr, &key, rev).unwrap(), v);
                        ptrs.push((ptr, key, rev, v));
                    }
                    ptrs
                })
            })
            .collect();
        let mut all: Vec<_> = writers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect();
        stop.store(true, Ordering::Release);
        syncer.join().unwrap();
        let last = log.sync().unwrap().unwrap();
        // Frames never overlap, and the last durable frame is the last appended.
        all.sort_by_key(|(p, ..)| (p.seq, p.offset));
        for pair in all.windows(2) {
            assert!(
                pair[0].0.end()
                    <= Position {
                        seq: pair[1].0.seq,
                        offset: pair[1].0.offset
                    }
            );
        }
        assert_eq!(last, all.last().unwrap().0);
        drop(log);
        let log = open(dir.path(), 1024, Some(last));
        for (ptr, key, rev, v) in &all {
            assert_eq!(&log.read(ptr, key, *rev).unwrap(), v);
        }
    }

    #[test]
    fn file_names_outside_the_numbering_are_not_segments() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "val-0000000000000000.seg",
            "val-ffffffffffffffff.seg",
            "val-0000000000000001.seg.tmp",
            "val-000000000000001.seg",
            "val-000000000000000G.seg",
        ] {
            std::fs::write(dir.path().join(name), b"junk").unwrap();
        }
        let log = open(dir.path(), 128, None);
        assert!(log.segments().is_empty());
        let ptr = log.append(2, K, b"v").unwrap();
        assert_eq!(ptr.seq, 1);
    }

    proptest! {
        #[test]
        fn pointers_round_trip(
            seq: u64,
            offset: u64,
            key_len: u32,
            len: u32,
            crc: u32,
            tail: Vec<u8>,
        ) {
            let ptr = ValuePtr { seq, offset, key_len, len, crc };
            let mut raw = Vec::new();
            ptr.encode(&mut raw);
            raw.extend_from_slice(&tail);
            let (back, rest) = ValuePtr::decode(&raw).unwrap();
            prop_assert_eq!(back, ptr);
            prop_assert_eq!(rest, &tail[..]);
        }

        #[test]
        fn any_pointer_bytes_decode_or_refuse(raw: Vec<u8>) {
            if let Some((ptr, rest)) = ValuePtr::decode(&raw) {
                let mut again = Vec::new();
                ptr.encode(&mut again);
                prop_assert!(again.len() + rest.len() <= raw.len());
            }
        }

        #[test]
        fn any_segment_bytes_open_or_refuse(
            data in proptest::collection::vec(any::<u8>(), 0..600),
            durable in proptest::option::of((0u64..700, 0u32..64, 0u32..600, any::<u32>())),
        ) {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(segment_path(dir.path(), 1), &data).unwrap();
            let durable = durable.map(|(offset, key_len, len, crc)| ValuePtr {
                seq: 1,
                offset,
                key_len,
                len,
                crc,
            });
            if let Ok(log) = ValueLog::open(dir.path(), 256, durable) {
                let end = log.end();
                if let Some(d) = durable {
                    prop_assert!(end >= d.end());
                }
                prop_assert!(end.offset <= data.len() as u64);
                let ptr = log.append(9, K, b"after").unwrap();
                prop_assert_eq!(log.read(&ptr, K, 9).unwrap(), b"after");
            }
        }

        #[test]
        fn frames_written_then_torn_anywhere_reopen_to_a_prefix(
            lens in proptest::collection::vec(0usize..90, 1..20),
            synced in 0usize..20,
            tear in 0u64..2000,
        ) {
            let dir = tempfile::tempdir().unwrap();
            let (durable, ptrs) = {
                let log = open(dir.path(), 160, None);
                let mut durable = None;
                let mut ptrs = Vec::new();
                for (i, &len) in lens.iter().enumerate() {
                    ptrs.push(log.append(i as i64, K, &vec![i as u8; len]).unwrap());
                    if i == synced {
                        durable = log.sync().unwrap();
                    }
                }
                (durable, ptrs)
            };
            // A crash tore one byte somewhere after the durable frame.
            let from = durable.map_or(Position { seq: 1, offset: 0 }, |d| d.end());
            let torn = Position { seq: from.seq + tear / 160, offset: tear % 160 };
            if torn >= from && segment_path(dir.path(), torn.seq).exists() {
                scribble(dir.path(), torn.seq, torn.offset, &[0xA5]);
            }
            let log = open(dir.path(), 160, durable);
            // Every frame up to the durable one reads back; the log ends at a frame end.
            let kept = ptrs.iter().filter(|p| p.end() <= log.end()).count();
            for (i, p) in ptrs.iter().enumerate() {
                let read = log.read(p, K, i as i64);
                if i < kept {
                    prop_assert_eq!(read.unwrap(), vec![i as u8; lens[i]]);
                }
                if Some(*p) == durable {
                    prop_assert!(i < kept);
                }
            }
            let next = log.append(99, K, b"next").unwrap();
            prop_assert_eq!(log.read(&next, K, 99).unwrap(), b"next");
        }
    }
}
