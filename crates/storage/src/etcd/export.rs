//! raftkv snapshot → etcd snapshot: the way back to etcd. The file written is a bbolt
//! database laid out as etcd 3.4's backend (the buckets [`super`] reads) with the SHA-256
//! trailer `snapshot save` appends, so the real `etcdctl snapshot restore` takes it:
//! every version keeps its revision, create revision, version and lease, and the
//! compaction, the leases and the auth store come along.
//!
//! raftkv keeps one revision per version; etcd's key bucket also numbers the changes
//! within a revision (the sub-revision, in the order a txn made them). The export numbers
//! them in key order: etcd uses the sub only to order a revision's events.
//!
//! The export streams. The key bucket is ordered by revision while the snapshot holds
//! versions by key, so the versions go through an external sort: runs of up to
//! [`RUN_BYTES`] are sorted in memory and spilled next to the destination, then merged
//! straight into a [`BoltWriter`] that writes pages as they fill. A snapshot that fits in
//! one run is never spilled. Memory is one run, the merge's read buffers, and the writer's
//! per-leaf index (about a hundredth of the data), not the file.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use prost::Message;
use raftkv_proto::mvccpb::KeyValue;
use sha2::{Digest, Sha256};

use super::bolt_writer::BoltWriter;
use super::{encode_lease, revision_bytes};
use crate::error::SnapshotError;
use crate::mvcc::encoding::Record;

/// Bytes of versions (encoded, with their bookkeeping) sorted in memory before a run is
/// spilled to disk.
pub(crate) const RUN_BYTES: usize = 64 << 20;

/// Read buffer shared by all runs of a merge (each gets a share, within bounds).
const MERGE_BUFFERS: usize = 32 << 20;

/// Bookkeeping counted per version beside its encoded bytes.
const VERSION_COST: usize = 48;

/// What an export wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exported {
    /// etcd's current revision when it opens the file: its last version's revision, or the
    /// compaction's if later (etcd has no other record of it).
    pub revision: i64,
    /// The raftkv snapshot's revision (etcd's is lower only if the newest revisions left
    /// no version, which compaction does not do in raftkv).
    pub source_revision: i64,
    /// Versions in the key bucket.
    pub versions: u64,
    /// Leases.
    pub leases: u64,
    /// Bytes written, trailer included.
    pub bytes: u64,
}

/// Writes the raftkv snapshot at `src` (verified in full first) as an etcd snapshot at
/// `dest` (through `dest.part`, fsynced, renamed).
pub fn export(src: &Path, dest: &Path) -> Result<Exported, SnapshotError> {
    export_with(src, dest, RUN_BYTES)
}

/// [`export`] with runs of `run_bytes` (tests force many runs). A failed export leaves
/// neither `dest` nor its `.part` file.
pub(crate) fn export_with(
    src: &Path,
    dest: &Path,
    run_bytes: usize,
) -> Result<Exported, SnapshotError> {
    let mut part = dest.as_os_str().to_owned();
    part.push(".part");
    let part = PathBuf::from(part);
    let exported = export_through(src, dest, &part, run_bytes);
    if exported.is_err() {
        let _ = std::fs::remove_file(&part);
    }
    exported
}

fn export_through(
    src: &Path,
    dest: &Path,
    part: &Path,
    run_bytes: usize,
) -> Result<Exported, SnapshotError> {
    let mut runs = Runs::new(part);
    let mut pending: Vec<Version> = Vec::new();
    let mut pending_bytes = 0usize;
    let (mut seq, mut last_revision) = (0u64, 0i64);
    let info = crate::snapshot::walk(src, &mut |rows| {
        for row in rows {
            last_revision = last_revision.max(row.revision);
            let key = Bytes::from(row.key);
            let (tombstone, kv) = match row.record {
                Record::Tombstone => (
                    true,
                    KeyValue {
                        key,
                        ..Default::default()
                    },
                ),
                Record::Put {
                    create_revision,
                    version,
                    lease,
                    value,
                } => (
                    false,
                    KeyValue {
                        key,
                        create_revision,
                        mod_revision: row.revision,
                        version,
                        value: Bytes::from(value),
                        lease,
                    },
                ),
            };
            let kv = kv.encode_to_vec();
            pending_bytes += kv.len() + VERSION_COST;
            // The walk goes in key order, so `seq` orders a revision's versions by key.
            pending.push(Version {
                revision: row.revision,
                seq,
                tombstone,
                kv,
            });
            seq += 1;
            if pending_bytes >= run_bytes {
                runs.spill(&mut pending)?;
                pending_bytes = 0;
            }
        }
        Ok(())
    })?;
    let meta = &info.meta;
    let version_count = seq;
    // What etcd will take as its revision: the last version's, or the compaction's.
    let revision = last_revision.max(meta.compact_revision);
    pending.sort_unstable_by_key(|v| (v.revision, v.seq));
    let versions = runs.merged(pending)?;

    let mut leases: Vec<(Vec<u8>, Vec<u8>)> = meta
        .leases
        .iter()
        .map(|(id, l)| {
            (
                (*id as u64).to_be_bytes().to_vec(),
                encode_lease(*id, l.ttl, l.remaining),
            )
        })
        .collect();
    leases.sort_unstable();
    let lease_count = leases.len() as u64;

    let mut meta_bucket = vec![(b"consistent_index".to_vec(), 0u64.to_be_bytes().to_vec())];
    if meta.compact_revision > 0 {
        let c = revision_bytes(meta.compact_revision, 0, false);
        meta_bucket.push((b"finishedCompactRev".to_vec(), c.clone()));
        meta_bucket.push((b"scheduledCompactRev".to_vec(), c));
    }
    let auth = &meta.auth;
    let ok = |items: Vec<(Vec<u8>, Vec<u8>)>| items.into_iter().map(Ok);

    // Read back at the end for the SHA-256 trailer.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(part)?;
    let mut w = BoltWriter::new(BufWriter::with_capacity(1 << 20, file), 4096)?;
    // Buckets in name order: auth, authRoles, authUsers, key, lease, meta.
    w.bucket(
        b"auth",
        ok(vec![
            (b"authEnabled".to_vec(), vec![u8::from(auth.enabled)]),
            (
                b"authRevision".to_vec(),
                auth.revision.to_be_bytes().to_vec(),
            ),
        ]),
    )?;
    w.bucket(
        b"authRoles",
        ok(auth
            .roles
            .iter()
            .map(|(name, role)| (name.as_bytes().to_vec(), role.encode_to_vec()))
            .collect()),
    )?;
    w.bucket(
        b"authUsers",
        ok(auth
            .users
            .iter()
            .map(|(name, user)| (name.as_bytes().to_vec(), user.encode_to_vec()))
            .collect()),
    )?;
    let mut sub = 0i64;
    let mut previous: Option<i64> = None;
    w.bucket(
        b"key",
        versions.map(|v| {
            let v = v?;
            sub = if previous == Some(v.revision) {
                sub + 1
            } else {
                0
            };
            previous = Some(v.revision);
            Ok((revision_bytes(v.revision, sub, v.tombstone), v.kv))
        }),
    )?;
    w.bucket(b"lease", ok(leases))?;
    w.bucket(b"meta", ok(meta_bucket))?;
    let mut out = w.finish()?.into_inner().map_err(|e| e.into_error())?;
    drop(runs);
    let bytes = seal_file(&mut out)?;
    out.sync_all()?;
    drop(out);
    std::fs::rename(part, dest)?;
    if let Some(dir) = dest.parent().filter(|d| !d.as_os_str().is_empty()) {
        File::open(dir)?.sync_all()?;
    }
    Ok(Exported {
        revision,
        source_revision: meta.revision,
        versions: version_count,
        leases: lease_count,
        bytes,
    })
}

/// Appends the SHA-256 of the whole file, as `snapshot save` does; returns the file's size.
fn seal_file(file: &mut File) -> io::Result<u64> {
    file.flush()?;
    file.seek(SeekFrom::Start(0))?;
    let mut sha = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        sha.update(&buf[..n]);
    }
    file.write_all(&sha.finalize())?;
    file.stream_position()
}

/// One version on its way to the key bucket.
struct Version {
    revision: i64,
    /// Its place in the snapshot's (key) order.
    seq: u64,
    tombstone: bool,
    /// The encoded `mvccpb.KeyValue`.
    kv: Vec<u8>,
}

/// Bytes of a spilled version before its `KeyValue`: revision, seq, tombstone, length.
const SPILLED_HEADER: usize = 8 + 8 + 1 + 4;

/// The longest `KeyValue` a run may hold: a version's bound plus room for its key and
/// fields. A run file is this export's own, but what it reads back is checked all the same.
const MAX_SPILLED_KV: usize = 2 * crate::snapshot::MAX_VERSION_BYTES;

/// Runs merged at once at most: past it the runs so far are merged into one first, so the
/// files open at once stay few whatever the store's size.
const MAX_RUNS: usize = 64;

/// Sorted runs spilled next to the destination (`<dest>.part.run<N>`), removed when dropped.
struct Runs {
    part: PathBuf,
    files: Vec<PathBuf>,
    /// Run files made so far (names are not reused).
    made: usize,
}

/// Writes `versions` (sorted) as a run file at `path`.
fn write_run(path: &Path, versions: impl Iterator<Item = io::Result<Version>>) -> io::Result<()> {
    let mut out = BufWriter::with_capacity(1 << 20, File::create(path)?);
    for v in versions {
        let v = v?;
        out.write_all(&v.revision.to_le_bytes())?;
        out.write_all(&v.seq.to_le_bytes())?;
        out.write_all(&[u8::from(v.tombstone)])?;
        out.write_all(&(v.kv.len() as u32).to_le_bytes())?;
        out.write_all(&v.kv)?;
    }
    out.flush()
}

impl Runs {
    fn new(part: &Path) -> Self {
        Self {
            part: part.to_path_buf(),
            files: Vec::new(),
            made: 0,
        }
    }

    /// Sorts `pending` and writes it as a run; leaves `pending` empty. Past [`MAX_RUNS`]
    /// runs, those so far are first merged into one.
    fn spill(&mut self, pending: &mut Vec<Version>) -> io::Result<()> {
        if self.files.len() >= MAX_RUNS {
            self.combine()?;
        }
        pending.sort_unstable_by_key(|v| (v.revision, v.seq));
        let path = self.next_path();
        self.files.push(path.clone());
        write_run(&path, pending.drain(..).map(Ok))
    }

    /// Merges every run so far into one.
    fn combine(&mut self) -> io::Result<()> {
        let merged = self.merged(Vec::new())?;
        let path = self.next_path();
        let old = self.files.len();
        self.files.push(path.clone());
        write_run(&path, merged)?;
        for f in self.files.drain(..old) {
            std::fs::remove_file(f)?;
        }
        Ok(())
    }

    /// A new run file's name, `<dest>.part.run<N>`.
    fn next_path(&mut self) -> PathBuf {
        let mut name = self.part.as_os_str().to_owned();
        name.push(format!(".run{}", self.made));
        self.made += 1;
        PathBuf::from(name)
    }

    /// Every version in (revision, key) order: the spilled runs merged with `last` (sorted).
    fn merged(&self, last: Vec<Version>) -> io::Result<Merge> {
        let share = (MERGE_BUFFERS / (self.files.len() + 1)).clamp(16 << 10, 1 << 20);
        let mut sources = Vec::with_capacity(self.files.len() + 1);
        for path in &self.files {
            sources.push(Source::Run(BufReader::with_capacity(
                share,
                File::open(path)?,
            )));
        }
        sources.push(Source::Memory(last.into_iter()));
        let mut merge = Merge {
            heads: Vec::with_capacity(sources.len()),
            heap: BinaryHeap::with_capacity(sources.len()),
            sources,
        };
        for i in 0..merge.sources.len() {
            let head = merge.sources[i].next()?;
            if let Some(v) = &head {
                merge.heap.push(Reverse((v.revision, v.seq, i)));
            }
            merge.heads.push(head);
        }
        Ok(merge)
    }
}

impl Drop for Runs {
    fn drop(&mut self) {
        for f in &self.files {
            let _ = std::fs::remove_file(f);
        }
    }
}

enum Source {
    Run(BufReader<File>),
    Memory(std::vec::IntoIter<Version>),
}

impl Source {
    fn next(&mut self) -> io::Result<Option<Version>> {
        let r = match self {
            Source::Memory(it) => return Ok(it.next()),
            Source::Run(r) => r,
        };
        let mut header = [0u8; SPILLED_HEADER];
        match r.read_exact(&mut header[..1]) {
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
            other => other?,
        }
        r.read_exact(&mut header[1..])?;
        let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_string());
        let field = |at: usize| u64::from_le_bytes(header[at..at + 8].try_into().expect("8 bytes"));
        let len = u32::from_le_bytes(header[17..21].try_into().expect("4 bytes")) as usize;
        if len > MAX_SPILLED_KV || header[16] > 1 {
            return Err(bad("a damaged export run file"));
        }
        let mut kv = vec![0u8; len];
        r.read_exact(&mut kv)?;
        Ok(Some(Version {
            revision: field(0) as i64,
            seq: field(8),
            tombstone: header[16] == 1,
            kv,
        }))
    }
}

/// A k-way merge of sorted sources by (revision, seq).
struct Merge {
    sources: Vec<Source>,
    heads: Vec<Option<Version>>,
    heap: BinaryHeap<Reverse<(i64, u64, usize)>>,
}

impl Iterator for Merge {
    type Item = io::Result<Version>;

    fn next(&mut self) -> Option<Self::Item> {
        let Reverse((_, _, i)) = self.heap.pop()?;
        let v = self.heads[i].take()?;
        match self.sources[i].next() {
            Ok(head) => {
                if let Some(h) = &head {
                    self.heap.push(Reverse((h.revision, h.seq, i)));
                }
                self.heads[i] = head;
            }
            Err(e) => {
                self.heap.clear();
                return Some(Err(e));
            }
        }
        Some(Ok(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bytes of one spilled version, as `write_run` writes it.
    fn record(revision: i64, seq: u64, tombstone: u8, len: u32, kv: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&revision.to_le_bytes());
        out.extend_from_slice(&seq.to_le_bytes());
        out.push(tombstone);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(kv);
        out
    }

    /// A version read back: revision, seq, tombstone, `KeyValue` bytes.
    type Spilled = (i64, u64, bool, Vec<u8>);

    /// Every version `bytes` holds as a run file, or the first error reading it.
    fn read_run(bytes: &[u8]) -> io::Result<Vec<Spilled>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("run");
        std::fs::write(&path, bytes)?;
        let mut source = Source::Run(BufReader::new(File::open(&path)?));
        let mut read = Vec::new();
        while let Some(v) = source.next()? {
            read.push((v.revision, v.seq, v.tombstone, v.kv));
        }
        Ok(read)
    }

    #[test]
    fn a_run_file_reads_back_what_was_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run");
        let versions = [(3i64, 0u64, false, b"abc".to_vec()), (5, 1, true, vec![])];
        write_run(
            &path,
            versions.iter().map(|(revision, seq, tombstone, kv)| {
                Ok(Version {
                    revision: *revision,
                    seq: *seq,
                    tombstone: *tombstone,
                    kv: kv.clone(),
                })
            }),
        )
        .unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(read_run(&bytes).unwrap(), versions.to_vec());
        assert_eq!(read_run(&[]).unwrap(), vec![]);
    }

    /// A damaged run file (the disk is not trusted either) is an error, never a panic nor
    /// an allocation sized by a length read off it.
    #[test]
    fn a_damaged_run_file_is_an_error() {
        let good = record(7, 0, 0, 3, b"abc");
        let damaged: Vec<(&str, Vec<u8>)> = vec![
            ("length past the bound", record(7, 0, 0, u32::MAX, b"abc")),
            (
                "length one past the bound",
                record(7, 0, 0, MAX_SPILLED_KV as u32 + 1, b""),
            ),
            ("tombstone byte not 0 or 1", record(7, 0, 2, 3, b"abc")),
            ("record cut in its header", good[..10].to_vec()),
            ("record cut in its value", good[..good.len() - 1].to_vec()),
            ("length longer than the file", record(7, 0, 0, 1000, b"abc")),
        ];
        for (what, bytes) in damaged {
            let mut file = good.clone();
            file.extend_from_slice(&bytes);
            assert!(read_run(&file).is_err(), "{what}: read without an error");
        }
    }
}
