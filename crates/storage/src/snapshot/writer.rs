//! Building a snapshot file from a live store.

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::Path;

use sha2::{Digest, Sha256};

use super::blocks::{self, BlockStages};
use super::columns::Row;
use super::{BLOCK_BYTES, BLOCK_RECORDS, FOOTER_MAGIC, MAGIC, SnapshotInfo, SnapshotMeta};
use crate::error::SnapshotError;
use crate::mvcc::encoding::{META_SPACE, Record, decode_prefix, lower_bound, split_record_key};
use crate::mvcc::{MvccStore, PinnedPoint};

/// Writes a snapshot of `store` at its current revision to `path` and returns its status.
///
/// Writes may continue meanwhile: the snapshot takes the revision and applied state
/// together, then reads only versions at or below that revision (compaction's deletes wait
/// until it is done). The file is written beside `path`, fsynced, then renamed into place.
pub fn build(store: &MvccStore, path: &Path) -> Result<SnapshotInfo, SnapshotError> {
    build_with(store, path, BlockStages::default())
}

/// [`build`] with the blocks encoded by `stages` (to measure what each stage contributes, or
/// to write format 4 for an older build).
pub fn build_with(
    store: &MvccStore,
    path: &Path,
    stages: BlockStages,
) -> Result<SnapshotInfo, SnapshotError> {
    write(store, path, stages, true)
}

/// [`build`] for a file that is streamed to a client and deleted (`Maintenance.Snapshot`):
/// not fsynced, since nothing needs it to survive a crash, and the client that saves it
/// syncs its own copy.
pub fn build_scratch(store: &MvccStore, path: &Path) -> Result<SnapshotInfo, SnapshotError> {
    write(store, path, BlockStages::default(), false)
}

/// [`build_scratch`] of a point pinned earlier ([`MvccStore::pin_snapshot_point`]): the
/// file holds the store as it was then, whatever was written since (a Raft snapshot sent to
/// a follower, whose point was fixed between two applies).
pub fn build_scratch_at(
    store: &MvccStore,
    pinned: &PinnedPoint,
    path: &Path,
) -> Result<SnapshotInfo, SnapshotError> {
    write_at(store, pinned, path, BlockStages::default(), false)
}

fn write(
    store: &MvccStore,
    path: &Path,
    stages: BlockStages,
    durable: bool,
) -> Result<SnapshotInfo, SnapshotError> {
    let pinned = store.pin_snapshot_point()?;
    write_at(store, &pinned, path, stages, durable)
}

fn write_at(
    store: &MvccStore,
    pinned: &PinnedPoint,
    path: &Path,
    stages: BlockStages,
    durable: bool,
) -> Result<SnapshotInfo, SnapshotError> {
    let point = pinned.point.clone();
    let revision = point.revision;
    let meta = SnapshotMeta {
        revision,
        compact_revision: pinned.compacted,
        applied: point.applied.applied.unwrap_or_default(),
        membership: point.applied.membership.unwrap_or_default(),
        alarms: point.alarms,
        leases: point.leases,
        auth: (*point.auth).clone(),
    };
    let tmp = path.with_extension("part");
    let file = File::create(&tmp)?;
    let mut out = Hashing::new(BufWriter::with_capacity(1 << 20, file));

    write_header(&mut out, &meta, stages.format_version())?;
    let (records, keys, raw_size, blocks) = std::thread::scope(|scope| {
        let mut compressors = Compressors::start(scope, stages);
        let counts = write_blocks(store, revision, &mut out, &mut compressors);
        compressors.stop();
        counts
    })?;
    out.write_all(&0u32.to_le_bytes())?;

    // Pad so that padding + footer + trailer brings the size to 32 mod 512.
    let before_pad = out.len + super::FOOTER_LEN as u64;
    let pad = (512 - before_pad % 512) % 512;
    out.write_all(&vec![0u8; pad as usize])?;
    let mut footer = Vec::with_capacity(super::FOOTER_LEN);
    footer.extend_from_slice(FOOTER_MAGIC);
    for n in [records, keys, raw_size, blocks] {
        footer.extend_from_slice(&n.to_le_bytes());
    }
    footer.extend_from_slice(&crc32fast::hash(&footer).to_le_bytes());
    out.write_all(&footer)?;

    let hash = out.crc.clone().finalize();
    let digest = out.sha.clone().finalize();
    let mut inner = out.inner;
    inner.write_all(&digest)?;
    let file = inner.into_inner().map_err(|e| e.into_error())?;
    if durable {
        file.sync_all()?;
    }
    drop(file);
    fs::rename(&tmp, path)?;
    if let Some(dir) = path
        .parent()
        .filter(|d| durable && !d.as_os_str().is_empty())
    {
        File::open(dir)?.sync_all()?;
    }
    let total_size = fs::metadata(path)?.len();
    Ok(SnapshotInfo {
        meta,
        key_count: keys,
        record_count: records,
        raw_size,
        total_size,
        hash,
    })
}

fn write_header(out: &mut impl Write, meta: &SnapshotMeta, version: u32) -> io::Result<()> {
    let mut body = Vec::new();
    body.extend_from_slice(&meta.revision.to_le_bytes());
    body.extend_from_slice(&meta.compact_revision.to_le_bytes());
    let alarms = crate::mvcc::encoding::encode_alarms(&meta.alarms);
    let mut leases = Vec::with_capacity(meta.leases.len() * 24);
    for (id, info) in &meta.leases {
        for n in [*id, info.ttl, info.remaining] {
            leases.extend_from_slice(&n.to_le_bytes());
        }
    }
    let auth = meta.auth.encode();
    for blob in [&meta.applied, &meta.membership, &alarms, &leases, &auth] {
        body.extend_from_slice(&(blob.len() as u32).to_le_bytes());
        body.extend_from_slice(blob);
    }
    let mut header = Vec::with_capacity(body.len() + 20);
    header.extend_from_slice(MAGIC);
    header.extend_from_slice(&version.to_le_bytes());
    header.extend_from_slice(&(body.len() as u32).to_le_bytes());
    header.extend_from_slice(&body);
    let crc = crc32fast::hash(&header);
    header.extend_from_slice(&crc.to_le_bytes());
    out.write_all(&header)
}

/// Reads every version at or below `revision` in store order, sends them in blocks to
/// `compressors`, and writes the encoded blocks to `out` in order; returns the versions,
/// live keys, raw block bytes and blocks.
fn write_blocks<W: Write>(
    store: &MvccStore,
    revision: i64,
    out: &mut W,
    compressors: &mut Compressors,
) -> Result<(u64, u64, u64, u64), SnapshotError> {
    let mut rows: Vec<Row> = Vec::with_capacity(BLOCK_RECORDS);
    let mut block_bytes = 0usize;
    let (mut records, mut keys, mut raw_size, mut blocks) = (0u64, 0u64, 0u64, 0u64);
    // The key being visited, encoded and decoded.
    let (mut cur_prefix, mut cur_key): (Vec<u8>, Vec<u8>) = (Vec::new(), Vec::new());
    for item in store.tree().range(lower_bound(b"")..vec![META_SPACE]) {
        let (raw_key, raw_value) = item.map_err(crate::error::MvccError::from)?;
        let (prefix, version_rev) = split_record_key(&raw_key)?;
        if version_rev > revision {
            continue; // written after the snapshot point
        }
        let new_key = cur_prefix != prefix;
        if new_key {
            cur_prefix.clear();
            cur_prefix.extend_from_slice(prefix);
            cur_key = decode_prefix(prefix)?;
        }
        let record = store.decode_record(&raw_value, &cur_key, version_rev, true)?;
        // The newest version at or below the revision decides whether the key is live.
        if new_key && matches!(record, Record::Put { .. }) {
            keys += 1;
        }
        block_bytes += cur_key.len()
            + match &record {
                Record::Put { value, .. } => value.len(),
                Record::Tombstone => 0,
            };
        rows.push(Row {
            key: cur_key.clone(),
            revision: version_rev,
            record,
        });
        records += 1;
        if rows.len() == BLOCK_RECORDS || block_bytes >= BLOCK_BYTES {
            raw_size += compressors.send(out, std::mem::take(&mut rows))?;
            rows.reserve(BLOCK_RECORDS);
            blocks += 1;
            block_bytes = 0;
        }
    }
    if !rows.is_empty() {
        raw_size += compressors.send(out, rows)?;
        blocks += 1;
    }
    raw_size += compressors.finish(out)?;
    Ok((records, keys, raw_size, blocks))
}

/// Blocks encoded beside the store's reading: [`COMPRESSORS`] threads take blocks of rows,
/// and the encoded blocks are written in the order the rows were read. At most
/// [`IN_FLIGHT`] blocks are between reading and writing at once, so memory stays bounded.
struct Compressors {
    work: Option<std::sync::mpsc::SyncSender<(u64, Vec<Row>)>>,
    done: std::sync::mpsc::Receiver<(u64, io::Result<blocks::Encoded>)>,
    ready: std::collections::BTreeMap<u64, blocks::Encoded>,
    sent: u64,
    written: u64,
}

/// Threads encoding blocks while the store is read (a snapshot build is otherwise bound by
/// zstd on one core).
const COMPRESSORS: usize = 2;
/// Most blocks read but not yet written.
const IN_FLIGHT: u64 = 4;

impl Compressors {
    fn start<'scope>(scope: &'scope std::thread::Scope<'scope, '_>, stages: BlockStages) -> Self {
        let (work, jobs) = std::sync::mpsc::sync_channel::<(u64, Vec<Row>)>(COMPRESSORS);
        let jobs = std::sync::Arc::new(std::sync::Mutex::new(jobs));
        let (results, done) = std::sync::mpsc::channel();
        for _ in 0..COMPRESSORS {
            let (jobs, results) = (jobs.clone(), results.clone());
            scope.spawn(move || {
                loop {
                    let job = jobs.lock().unwrap_or_else(|e| e.into_inner()).recv();
                    let Ok((seq, rows)) = job else { return };
                    // A panic would leave the writer waiting for this block forever: it
                    // becomes the block's error instead.
                    let encoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        blocks::encode(&rows, stages)
                    }))
                    .unwrap_or_else(|_| Err(io::Error::other("a snapshot block encoder panicked")));
                    if results.send((seq, encoded)).is_err() {
                        return;
                    }
                }
            });
        }
        Self {
            work: Some(work),
            done,
            ready: Default::default(),
            sent: 0,
            written: 0,
        }
    }

    /// Hands over the next block, first writing what is done (and waiting for it while
    /// [`IN_FLIGHT`] blocks are out); returns the raw bytes of the blocks written.
    fn send(&mut self, out: &mut impl Write, rows: Vec<Row>) -> io::Result<u64> {
        let written = self.write_ready(out, IN_FLIGHT - 1)?;
        let work = self.work.as_ref().expect("not stopped");
        work.send((self.sent, rows))
            .map_err(|_| io::Error::other("a snapshot compressor stopped"))?;
        self.sent += 1;
        Ok(written)
    }

    /// Writes every block still out; returns their raw bytes.
    fn finish(&mut self, out: &mut impl Write) -> io::Result<u64> {
        self.write_ready(out, 0)
    }

    /// Lets the threads end (the scope then joins them).
    fn stop(&mut self) {
        self.work = None;
    }

    /// Writes the done blocks that are next in order, waiting until at most `out_at_most`
    /// are still out.
    fn write_ready(&mut self, out: &mut impl Write, out_at_most: u64) -> io::Result<u64> {
        let mut raw = 0;
        loop {
            while let Some(block) = self.ready.remove(&self.written) {
                out.write_all(&(block.stored.len() as u32).to_le_bytes())?;
                out.write_all(&block.stored)?;
                raw += block.raw_len as u64;
                self.written += 1;
            }
            if self.sent - self.written <= out_at_most {
                return Ok(raw);
            }
            let (seq, block) = self
                .done
                .recv()
                .map_err(|_| io::Error::other("a snapshot compressor stopped"))?;
            self.ready.insert(seq, block?);
        }
    }
}

/// A writer that hashes (SHA-256 and CRC-32) and counts what passes through it.
struct Hashing<W> {
    inner: W,
    sha: Sha256,
    crc: crc32fast::Hasher,
    len: u64,
}

impl<W: Write> Hashing<W> {
    fn new(inner: W) -> Self {
        Self {
            inner,
            sha: Sha256::new(),
            crc: crc32fast::Hasher::new(),
            len: 0,
        }
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.sha.update(&buf[..n]);
        self.crc.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
