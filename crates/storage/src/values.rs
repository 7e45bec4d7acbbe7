//! Value segments: append-only files that hold put values outside sled.
//!
//! This is the first part of "values out of sled" (docs/architecture.md, "Planned, partly
//! built"). sled 0.34 rewrites a whole leaf every ten changes and at every split, so a put
//! costs sled CPU in proportion to the bytes its leaf holds. With the values kept here, a
//! record in sled holds only its metadata and a [`ValuePtr`]. The store does not use this
//! module yet: records are still written with their values inline.
//!
//! # Files
//!
//! `val-<seq, 16 hex digits>.seg`, numbered from 1; older ones may be gone once their values
//! live elsewhere, but from the durable one on there are no gaps. Each is created at its
//! full size, as the WAL's are (an fdatasync then never has to persist a new file size), so
//! the bytes after the last frame read as zeros. A segment holds frames back to back, and
//! one the writer left for the next ends with the continuation mark (or too little room
//! for a frame):
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
//! next fdatasync; after one fails, every later sync fails too, as the WAL's do), and
//! [`ValueLog::durable`] is the position up to which frames are. The store is to record
//! its applied point only up to that position, and to store the position with the point.
//!
//! # Recovery
//!
//! [`ValueLog::open`] is given the durable position the store recorded. Frames before it
//! were synced before the store recorded it, so they are trusted. A read still checks each
//! one. Frames after it are walked, and the first one that is not whole (its length runs
//! past the segment, its CRC fails, or its length field is zero) ends the log: whatever is
//! not zero in the rest of that segment is zeroed (so opening reads the rest of the last
//! segment once) and later segments are removed. Those frames can only belong to
//! writes above the store's recorded point, which the Raft log's replay writes again. A
//! durable position past the end of what the files hold is damage, and opening fails.
//! Lengths are checked before anything is allocated.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use crate::wal::{numbered_path, parse_numbered, preallocate, sync_dir};

/// Bytes before a frame's key: the lengths, the revision and the CRC.
pub const FRAME_HEADER: u64 = 20;
/// The segment size the store uses (the WAL's).
pub const SEGMENT_BYTES: u64 = 64 << 20;
/// A frame length field that says the log goes on in the next segment.
const CONTINUED: u32 = u32::MAX;
/// Bytes zeroed at once when a torn tail is cut off.
const ZERO_CHUNK: usize = 1 << 20;

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
            offset: self.offset + self.frame_len(),
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
            put_varint(out, v);
        }
    }

    /// Decodes a pointer from the front of `raw`; returns it and the bytes after it, or
    /// `None` for anything malformed (a varint over 10 bytes, a length or CRC over 32 bits).
    pub fn decode(raw: &[u8]) -> Option<(Self, &[u8])> {
        let (seq, raw) = get_varint(raw)?;
        let (offset, raw) = get_varint(raw)?;
        let (key_len, raw) = get_varint(raw)?;
        let (len, raw) = get_varint(raw)?;
        let (crc, raw) = get_varint(raw)?;
        Some((
            ValuePtr {
                seq,
                offset,
                key_len: u32::try_from(key_len).ok()?,
                len: u32::try_from(len).ok()?,
                crc: u32::try_from(crc).ok()?,
            },
            raw,
        ))
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn get_varint(raw: &[u8]) -> Option<(u64, &[u8])> {
    let mut v = 0u64;
    for (i, &b) in raw.iter().enumerate().take(10) {
        let part = u64::from(b & 0x7f);
        if i == 9 && part > 1 {
            return None;
        }
        v |= part << (7 * i);
        if b & 0x80 == 0 {
            return Some((v, &raw[i + 1..]));
        }
    }
    None
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

fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    numbered_path(dir, "val-", ".seg", seq)
}

fn parse_segment_name(name: &str) -> Option<u64> {
    parse_numbered(name, "val-", ".seg")
}

fn damaged(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

/// The appending end.
struct Writer {
    /// The segment appended to (0 before the first).
    seq: u64,
    file: Option<Arc<File>>,
    /// That segment's size.
    size: u64,
    /// Where the next frame goes.
    offset: u64,
    /// Files written to since the last sync.
    unsynced: Vec<Arc<File>>,
}

/// The value log: one directory of segments.
pub struct ValueLog {
    dir: PathBuf,
    segment_bytes: u64,
    /// Every segment, for reads.
    files: RwLock<BTreeMap<u64, Arc<File>>>,
    writer: Mutex<Writer>,
    /// Held while syncing; the position everything before which is durable.
    durable: Mutex<Position>,
    /// Set when an fdatasync failed: the kernel may have dropped the pages it could not
    /// write and a retry would succeed without them, so no later sync is trusted.
    failed: AtomicBool,
}

impl ValueLog {
    /// Opens (or creates) the log in `dir`, trusting frames before `durable` and cutting the
    /// tail after it at the first frame that is not whole. `segment_bytes` is for new
    /// segments (existing ones keep their size).
    pub fn open(dir: &Path, segment_bytes: u64, durable: Position) -> io::Result<Self> {
        if segment_bytes < FRAME_HEADER * 2 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "value segments too small",
            ));
        }
        std::fs::create_dir_all(dir)?;
        let mut seqs = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            if let Some(seq) = entry.file_name().to_str().and_then(parse_segment_name) {
                seqs.push(seq);
            }
        }
        seqs.sort_unstable();
        // Older segments may be gone (their values were moved); from the durable one on, the
        // walk below needs every segment.
        let walked: Vec<u64> = seqs.iter().copied().filter(|&s| s >= durable.seq).collect();
        if let (Some(&first), Some(&last)) = (walked.first(), walked.last())
            && last - first + 1 != walked.len() as u64
        {
            return Err(damaged(format!(
                "{}: value segments {first}..={last} have gaps",
                dir.display()
            )));
        }
        if durable.seq != 0 && !seqs.contains(&durable.seq) {
            return Err(damaged(format!(
                "{}: value segment {} (recorded durable) is missing",
                dir.display(),
                durable.seq
            )));
        }
        let mut files = BTreeMap::new();
        for &seq in &seqs {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(segment_path(dir, seq))?;
            files.insert(seq, Arc::new(file));
        }
        // Walk the frames after the durable position to find the end.
        let mut end = durable;
        if end.seq == 0 {
            end = Position {
                seq: seqs.first().copied().unwrap_or(0),
                offset: 0,
            };
        }
        let mut cut = None;
        for (&seq, file) in files.range(end.seq..) {
            let size = file.metadata()?.len();
            let from = if seq == end.seq { end.offset } else { 0 };
            if from > size {
                return Err(damaged(format!(
                    "{}: recorded durable offset {from} is past the end ({size})",
                    segment_path(dir, seq).display()
                )));
            }
            let (at, continued) = walk_frames(file, from, size)?;
            if continued {
                // The next append goes to the next segment, whether or not it exists yet.
                end = Position { seq, offset: size };
            } else {
                // The log ends here: whatever follows is a torn tail.
                end = Position { seq, offset: at };
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
        for file in files.range(durable.seq..).map(|(_, f)| f) {
            file.sync_data()?;
        }
        let file = files.get(&end.seq).cloned();
        let size = match &file {
            Some(f) => f.metadata()?.len(),
            None => 0,
        };
        let writer = Writer {
            seq: end.seq,
            file,
            size,
            offset: end.offset,
            unsynced: Vec::new(),
        };
        Ok(ValueLog {
            dir: dir.to_path_buf(),
            segment_bytes,
            files: RwLock::new(files),
            writer: Mutex::new(writer),
            durable: Mutex::new(Position {
                seq: end.seq,
                offset: end.offset,
            }),
            failed: AtomicBool::new(false),
        })
    }

    /// Appends `key`'s `value`, stored by the write at `revision`, and returns where it
    /// lies. It is durable once a [`ValueLog::sync`] that began after this returned has
    /// returned. A frame that cannot fit a segment is refused (`InvalidInput`): its record
    /// keeps the value inline.
    pub fn append(&self, revision: i64, key: &[u8], value: &[u8]) -> io::Result<ValuePtr> {
        let frame = FRAME_HEADER + key.len() as u64 + value.len() as u64;
        if value.len() as u64 + 1 >= u64::from(CONTINUED)
            || key.len() as u64 >= u64::from(u32::MAX)
            || frame > self.segment_bytes
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "a frame of {frame} bytes does not fit a segment of {}",
                    self.segment_bytes
                ),
            ));
        }
        let header = frame_header(revision, key, value);
        let mut w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        if w.file.is_none() || w.offset + frame > w.size {
            self.rotate(&mut w)?;
        }
        let file = Arc::clone(w.file.as_ref().expect("a segment after rotate"));
        let mut buf = Vec::with_capacity(frame as usize);
        buf.extend_from_slice(&header);
        buf.extend_from_slice(key);
        buf.extend_from_slice(value);
        file.write_all_at(&buf, w.offset)?;
        let ptr = ValuePtr {
            seq: w.seq,
            offset: w.offset,
            key_len: key.len() as u32,
            len: value.len() as u32,
            crc: u32::from_le_bytes(header[16..].try_into().expect("4 bytes")),
        };
        w.offset += frame;
        if !w.unsynced.iter().any(|f| Arc::ptr_eq(f, &file)) {
            w.unsynced.push(file);
        }
        Ok(ptr)
    }

    /// Starts the next segment, allocated in full, then marks the one before as continued
    /// in it (in that order, so a mark is never found without the segment it names).
    fn rotate(&self, w: &mut Writer) -> io::Result<()> {
        let seq = w.seq + 1;
        let path = segment_path(&self.dir, seq);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)?;
        let made = preallocate(&file, self.segment_bytes)
            .and_then(|()| file.sync_all())
            .and_then(|()| sync_dir(&self.dir));
        if let Err(e) = made {
            // Not left half made for the next try to trip over.
            drop(file);
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
        let file = Arc::new(file);
        if let Some(old) = w.file.take()
            && w.offset + 4 <= w.size
        {
            old.write_all_at(&CONTINUED.to_le_bytes(), w.offset)?;
            if !w.unsynced.iter().any(|f| Arc::ptr_eq(f, &old)) {
                w.unsynced.push(old);
            }
        }
        self.files
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(seq, Arc::clone(&file));
        w.seq = seq;
        w.file = Some(file);
        w.size = self.segment_bytes;
        w.offset = 0;
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

    /// The position before which every frame is durable.
    pub fn durable(&self) -> Position {
        *self.durable.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes every frame appended before this call durable, and returns the new durable
    /// position. Callers that wait while another syncs find their frames covered, or share
    /// the next fdatasync.
    pub fn sync(&self) -> io::Result<Position> {
        let target = self.end();
        let mut durable = self.durable.lock().unwrap_or_else(|e| e.into_inner());
        if *durable >= target {
            return Ok(*durable);
        }
        // Everything appended up to now (at least `target`), and the files it went to.
        let (upto, files) = {
            let mut w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
            (
                Position {
                    seq: w.seq,
                    offset: w.offset,
                },
                std::mem::take(&mut w.unsynced),
            )
        };
        if self.failed.load(Ordering::Acquire) {
            return Err(io::Error::other(
                "the value log's disk failed an earlier sync",
            ));
        }
        if let Err(e) = files.iter().try_for_each(|f| f.sync_data()) {
            self.failed.store(true, Ordering::Release);
            return Err(e);
        }
        *durable = upto;
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
        if key.len() as u64 != u64::from(ptr.key_len) {
            return Err(mismatch());
        }
        let file = self
            .files
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&ptr.seq)
            .cloned()
            .ok_or_else(|| damaged(format!("value segment {} does not exist", ptr.seq)))?;
        let frame = ptr.frame_len();
        let size = file.metadata()?.len();
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

    /// The segments, oldest first.
    pub fn segments(&self) -> Vec<u64> {
        self.files
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .copied()
            .collect()
    }

    /// Bytes the segments take on disk.
    pub fn size_on_disk(&self) -> u64 {
        use std::os::unix::fs::MetadataExt;
        self.files
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter_map(|f| f.metadata().ok())
            .map(|m| m.blocks() * 512)
            .sum()
    }
}

/// Walks whole frames of `file` from `from`. Returns where they end — at the first frame
/// whose length field is zero, runs past `size`, or fails its CRC — and whether the log
/// goes on in the next segment (the writer's mark, or no room left for a frame).
fn walk_frames(file: &File, mut at: u64, size: u64) -> io::Result<(u64, bool)> {
    let mut header = [0u8; FRAME_HEADER as usize];
    let mut body = Vec::new();
    while at + FRAME_HEADER <= size {
        file.read_exact_at(&mut header, at)?;
        let stored = u32::from_le_bytes(header[..4].try_into().expect("4 bytes"));
        if stored == CONTINUED {
            return Ok((at, true));
        }
        if stored == 0 {
            return Ok((at, false));
        }
        let key_len = u64::from(u32::from_le_bytes(
            header[4..8].try_into().expect("4 bytes"),
        ));
        let len = key_len + u64::from(stored - 1);
        let end = at + FRAME_HEADER + len;
        if end > size {
            return Ok((at, false));
        }
        body.resize(len as usize, 0);
        file.read_exact_at(&mut body, at + FRAME_HEADER)?;
        let mut crc = crc32fast::Hasher::new();
        crc.update(&header[..16]);
        crc.update(&body);
        if crc.finalize().to_le_bytes() != header[16..] {
            return Ok((at, false));
        }
        at = end;
    }
    Ok((at, true))
}

/// Zeroes whatever is not zero in `file` from `at` on, so that a later walk stops where
/// this one did and no frame a crash left behind can be taken for a new one. Reads the rest
/// of the segment; writes only where it finds bytes (a torn tail), then syncs them.
fn zero_tail(file: &File, at: u64) -> io::Result<()> {
    let size = file.metadata()?.len();
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

    #[test]
    fn values_read_back_across_segments() {
        let dir = tempfile::tempdir().unwrap();
        let log = ValueLog::open(dir.path(), 512, Position::default()).unwrap();
        let ptrs: Vec<ValuePtr> = (0..200)
            .map(|i| log.append(i as i64 + 2, K, &value(i)).unwrap())
            .collect();
        assert!(log.segments().len() > 10, "{:?}", log.segments());
        for (i, ptr) in ptrs.iter().enumerate() {
            assert_eq!(log.read(ptr, K, i as i64 + 2).unwrap(), value(i));
        }
        assert_eq!(log.end(), ptrs[199].end());
        // A value that cannot fit a segment is refused, and changes nothing.
        let e = log.append(1000, K, &[7u8; 512]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert_eq!(log.end(), ptrs[199].end());
    }

    #[test]
    fn a_read_checks_the_pointer_against_the_frame() {
        let dir = tempfile::tempdir().unwrap();
        let log = ValueLog::open(dir.path(), 4096, Position::default()).unwrap();
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
        let log = ValueLog::open(dir.path(), 256, Position::default()).unwrap();
        assert_eq!(log.durable(), Position::default());
        let mut last = None;
        for i in 0..40 {
            last = Some(log.append(i, K, &value(i as usize)).unwrap());
        }
        assert!(log.durable() < log.end());
        assert_eq!(log.sync().unwrap(), last.unwrap().end());
        assert_eq!(log.durable(), log.end());
        // Nothing new: the same position, no sync needed.
        assert_eq!(log.sync().unwrap(), log.end());
    }

    #[test]
    fn a_reopened_log_goes_on_where_it_ended() {
        let dir = tempfile::tempdir().unwrap();
        let (a, durable, b) = {
            let log = ValueLog::open(dir.path(), 300, Position::default()).unwrap();
            let a = log.append(2, K, b"first").unwrap();
            for i in 0..20 {
                log.append(3 + i, K, &value(i as usize)).unwrap();
            }
            let durable = log.sync().unwrap();
            // Whole but never synced: a process crash keeps it (the page cache does).
            let b = log.append(40, K, b"unsynced").unwrap();
            (a, durable, b)
        };
        let log = ValueLog::open(dir.path(), 300, durable).unwrap();
        assert_eq!(log.end(), b.end());
        assert_eq!(log.read(&a, K, 2).unwrap(), b"first");
        assert_eq!(log.read(&b, K, 40).unwrap(), b"unsynced");
        let c = log.append(41, K, b"next").unwrap();
        assert_eq!((c.seq, c.offset), (b.end().seq, b.end().offset));
    }

    #[test]
    fn whole_frames_after_the_durable_position_are_kept_across_segments() {
        let dir = tempfile::tempdir().unwrap();
        let (durable, ptrs) = {
            let log = ValueLog::open(dir.path(), 200, Position::default()).unwrap();
            log.append(2, K, b"x").unwrap();
            let durable = log.sync().unwrap();
            // Frames that leave room for a header but not for the next frame, so most
            // segments end with the writer's mark; and one exactly full segment.
            let mut ptrs = Vec::new();
            for i in 0..30 {
                let len = if i == 10 {
                    200 - FRAME_HEADER as usize - K.len()
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
        let log = ValueLog::open(dir.path(), 200, durable).unwrap();
        assert_eq!(log.end(), ptrs.last().unwrap().1.end());
        for (rev, ptr) in &ptrs {
            assert_eq!(log.read(ptr, K, *rev).unwrap().len(), ptr.len as usize);
        }
    }

    #[test]
    fn a_torn_tail_is_cut_at_its_first_bad_frame() {
        let dir = tempfile::tempdir().unwrap();
        let (a, durable, torn, after) = {
            let log = ValueLog::open(dir.path(), 1 << 16, Position::default()).unwrap();
            let a = log.append(2, K, b"kept").unwrap();
            let durable = log.sync().unwrap();
            let torn = log.append(3, K, b"torn by a crash").unwrap();
            let after = log.append(4, K, b"written after it").unwrap();
            (a, durable, torn, after)
        };
        // The crash left one byte of the second frame's value unwritten.
        let path = segment_path(dir.path(), torn.seq);
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        file.write_all_at(&[0], torn.offset + FRAME_HEADER + 3)
            .unwrap();
        drop(file);
        let log = ValueLog::open(dir.path(), 1 << 16, durable).unwrap();
        assert_eq!(log.end(), durable);
        assert_eq!(log.read(&a, K, 2).unwrap(), b"kept");
        assert!(invalid(log.read(&torn, K, 3).unwrap_err()));
        // The whole frame after the torn one was zeroed, not left to be found again.
        assert!(invalid(log.read(&after, K, 4).unwrap_err()));
        let again = log.append(3, K, b"replayed").unwrap();
        assert_eq!((again.seq, again.offset), (torn.seq, torn.offset));
        drop(log);
        let log = ValueLog::open(dir.path(), 1 << 16, durable).unwrap();
        assert_eq!(log.end(), again.end());
        assert_eq!(log.read(&again, K, 3).unwrap(), b"replayed");
    }

    #[test]
    fn segments_after_the_cut_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let (durable, first_lost) = {
            let log = ValueLog::open(dir.path(), 128, Position::default()).unwrap();
            log.append(2, K, b"durable").unwrap();
            let durable = log.sync().unwrap();
            let lost = log.append(3, K, &[1u8; 60]).unwrap();
            for i in 0..10 {
                log.append(4 + i, K, &[2u8; 60]).unwrap();
            }
            assert!(log.segments().len() > 3);
            (durable, lost)
        };
        // The first frame after the durable position never reached the disk.
        let path = segment_path(dir.path(), first_lost.seq);
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        file.write_all_at(&[0; 8], first_lost.offset).unwrap();
        drop(file);
        let log = ValueLog::open(dir.path(), 128, durable).unwrap();
        assert_eq!(log.end(), durable);
        assert_eq!(log.segments(), vec![durable.seq]);
        assert!(!segment_path(dir.path(), durable.seq + 1).exists());
    }

    #[test]
    fn damage_at_or_before_the_durable_position_fails_the_open() {
        let dir = tempfile::tempdir().unwrap();
        let durable = {
            let log = ValueLog::open(dir.path(), 128, Position::default()).unwrap();
            for i in 0..12 {
                log.append(2 + i, K, &[3u8; 40]).unwrap();
            }
            log.sync().unwrap()
        };
        assert!(durable.seq >= 5);
        // Segments before the durable one may go (their values moved elsewhere).
        std::fs::remove_file(segment_path(dir.path(), 1)).unwrap();
        drop(ValueLog::open(dir.path(), 128, durable).unwrap());
        // A durable position past the end of its segment.
        let past = Position {
            seq: durable.seq,
            offset: 1 << 20,
        };
        assert!(invalid(
            ValueLog::open(dir.path(), 128, past).err().unwrap()
        ));
        // A durable position in a segment that is gone.
        let gone = Position {
            seq: durable.seq + 5,
            offset: 0,
        };
        assert!(invalid(
            ValueLog::open(dir.path(), 128, gone).err().unwrap()
        ));
        // A gap after the durable segment.
        let early = Position { seq: 2, offset: 0 };
        std::fs::remove_file(segment_path(dir.path(), 3)).unwrap();
        assert!(invalid(
            ValueLog::open(dir.path(), 128, early).err().unwrap()
        ));
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
            durable in 0u64..700,
        ) {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(segment_path(dir.path(), 1), &data).unwrap();
            let at = Position { seq: 1, offset: durable };
            if let Ok(log) = ValueLog::open(dir.path(), 256, at) {
                let end = log.end();
                prop_assert!(end >= at);
                prop_assert!(end.offset <= data.len() as u64);
                let ptr = log.append(9, K, b"after").unwrap();
                prop_assert_eq!(log.read(&ptr, K, 9).unwrap(), b"after");
            }
        }
    }
}
