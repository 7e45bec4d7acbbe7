//! Upgrading a log written by raftkv before its own segment files (`wal.rs`): those logs
//! were `raft-log` chunk files (`r-<offset>.wal`). Opening such a directory copies the
//! vote, the purge point and every entry into new segments, then removes the old files.
//!
//! Crash safety: the old files are removed only after the new log is durable and a marker
//! file says so. Opening a directory that has old files and no marker starts the copy again
//! from them (dropping any segments a cut-short copy left); with the marker, only the
//! removal is finished.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use raft_log::RaftLog;
use raft_log::codeq::{Decode, Encode};

use crate::log::{FlushCallback, LogId, MAX_ENTRY_BYTES};
use crate::wal::Wal;

/// Written once the copy is durable; the old files may then go.
const MARKER: &str = "raft-log-copied";

/// Entries copied per append.
const BATCH: u64 = 1024;

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

/// Opaque bytes (an encoded entry, or the encoded vote) with a bounded length: the old
/// format's payload.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Blob(Vec<u8>);

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

/// The `raft-log` type bindings of the old format.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct OldTypes;

/// The old format's flush callback: a channel.
struct Done(std::sync::mpsc::SyncSender<io::Result<()>>);

impl raft_log::Callback for Done {
    fn send(self, res: io::Result<()>) {
        let _ = std::sync::mpsc::SyncSender::send(&self.0, res);
    }
}

impl raft_log::Types for OldTypes {
    type LogId = LogId;
    type LogPayload = Blob;
    type Vote = LogId;
    type Callback = Done;
    type UserData = Blob;

    fn log_index(log_id: &LogId) -> u64 {
        log_id.index
    }

    fn payload_size(payload: &Blob) -> u64 {
        payload.0.len() as u64
    }
}

fn old_config(dir: &Path) -> raft_log::Config {
    let mut c = raft_log::Config::new(dir.to_string_lossy());
    c.wal.flush_batch_wait = Some(Duration::ZERO);
    c.wal.truncate_incomplete_record = Some(true);
    c
}

/// The old format's chunk files in `dir`.
fn old_files(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with("r-") && name.ends_with(".wal") {
            files.push(path);
        }
    }
    Ok(files)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Brings a log directory in the old format over to segments (see the module docs). Does
/// nothing to a directory without old files.
pub(crate) fn upgrade(dir: &Path, segment_bytes: u64, cache_bytes: usize) -> io::Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    let marker = dir.join(MARKER);
    let old = old_files(dir)?;
    if !marker.exists() {
        if old.is_empty() {
            return Ok(());
        }
        copy(dir, segment_bytes, cache_bytes)?;
    }
    // Another process may have finished the removal meanwhile: then this one stops at the
    // lock, or finds nothing left to remove.
    let _lock = crate::wal::lock_dir(dir)?;
    for file in old_files(dir)? {
        std::fs::remove_file(file)?;
    }
    sync_dir(dir)?;
    match std::fs::remove_file(&marker) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    sync_dir(dir)
}

/// Copies the old log into segments and writes the marker, all under raft-log's lock on the
/// directory (the same `LOCK` file `wal.rs` locks), so a second process refuses the
/// directory instead of racing the copy.
fn copy(dir: &Path, segment_bytes: u64, cache_bytes: usize) -> io::Result<()> {
    let old = RaftLog::<OldTypes>::open(Arc::new(old_config(dir)))?;
    // Segments left by a copy that did not finish.
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with("seg-") && name.ends_with(".wal") {
            std::fs::remove_file(path)?;
        }
    }
    let state = old.log_state();
    let purged = state.purged().copied();
    let last = state.last().copied();
    let vote = state.user_data.as_ref().map(|b| b.0.clone());
    let mut wal = Wal::open_locked(dir, segment_bytes, cache_bytes)?;
    if let Some(p) = purged {
        wal.purge(p)?;
    }
    if let Some(vote) = vote {
        wal.save_vote(vote)?;
    }
    if let Some(last) = last {
        let mut from = purged.map_or(0, |p| p.index + 1);
        while from <= last.index {
            let to = from.saturating_add(BATCH).min(last.index + 1);
            let batch = old
                .read(from, to)
                .map(|r| r.map(|(id, blob)| (id, blob.0)))
                .collect::<io::Result<Vec<_>>>()?;
            wal.append(batch)?;
            from = to;
        }
    }
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    wal.flush(FlushCallback::new(move |r| {
        let _ = tx.send(r);
    }))?;
    rx.recv()
        .map_err(|_| io::Error::other("log flush worker stopped"))??;
    if wal.last() != last.or(purged) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{}: copying the old log ended at {:?}, not at its last entry {last:?}",
                dir.display(),
                wal.last()
            ),
        ));
    }
    drop(wal);
    let marker = dir.join(MARKER);
    std::fs::write(
        &marker,
        b"the raft-log files here are copied into seg-*.wal\n",
    )?;
    std::fs::File::open(&marker)?.sync_all()?;
    sync_dir(dir)?;
    drop(old);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft_log::api::raft_log_writer::RaftLogWriter;

    fn id(term: u64, index: u64) -> LogId {
        LogId { term, index }
    }

    /// A log in the old format: a vote, entries 0..300 of term 2, purged up to 40.
    fn write_old(dir: &Path) {
        let mut old = RaftLog::<OldTypes>::open(Arc::new(old_config(dir))).unwrap();
        old.save_user_data(Some(Blob(b"old vote".to_vec())))
            .unwrap();
        old.append((0..300).map(|i| (id(2, i), Blob(format!("e{i}").into_bytes()))))
            .unwrap();
        old.purge(id(2, 40)).unwrap();
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        old.flush(true, Some(Done(tx))).unwrap();
        rx.recv().unwrap().unwrap();
    }

    fn check(wal: &Wal) {
        assert_eq!(wal.vote(), Some(&b"old vote"[..]));
        assert_eq!(wal.purged(), Some(id(2, 40)));
        assert_eq!(wal.last(), Some(id(2, 299)));
        let entries = wal.read(0, u64::MAX, usize::MAX).unwrap();
        assert_eq!(entries.len(), 259);
        for (i, (log_id, payload)) in (41..300).zip(entries) {
            assert_eq!(log_id, id(2, i));
            assert_eq!(payload, format!("e{i}").into_bytes());
        }
    }

    #[test]
    fn an_old_log_is_copied_into_segments_and_its_files_removed() {
        let dir = tempfile::tempdir().unwrap();
        write_old(dir.path());
        assert!(!old_files(dir.path()).unwrap().is_empty());
        upgrade(dir.path(), 1 << 20, 1 << 20).unwrap();
        assert!(old_files(dir.path()).unwrap().is_empty());
        assert!(!dir.path().join(MARKER).exists());
        check(&Wal::open(dir.path(), 1 << 20, 1 << 20).unwrap());
        // A second open has nothing to do.
        upgrade(dir.path(), 1 << 20, 1 << 20).unwrap();
        check(&Wal::open(dir.path(), 1 << 20, 1 << 20).unwrap());
    }

    #[test]
    fn a_copy_cut_short_is_begun_again_and_a_finished_one_only_cleaned_up() {
        // Cut short: a stray segment beside the old files, no marker.
        let dir = tempfile::tempdir().unwrap();
        write_old(dir.path());
        std::fs::write(dir.path().join("seg-0000000000000001.wal"), b"half a copy").unwrap();
        upgrade(dir.path(), 1 << 20, 1 << 20).unwrap();
        check(&Wal::open(dir.path(), 1 << 20, 1 << 20).unwrap());

        // Finished but not cleaned up: the marker and some old files are still there.
        let dir = tempfile::tempdir().unwrap();
        write_old(dir.path());
        copy(dir.path(), 1 << 20, 1 << 20).unwrap();
        assert!(dir.path().join(MARKER).exists());
        upgrade(dir.path(), 1 << 20, 1 << 20).unwrap();
        assert!(old_files(dir.path()).unwrap().is_empty());
        check(&Wal::open(dir.path(), 1 << 20, 1 << 20).unwrap());
    }
}
