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
//! versions by key, so the versions go through an external sort (`crate::sort`): runs of
//! up to [`RUN_BYTES`] are sorted in memory and spilled next to the destination, then
//! merged straight into a [`BoltWriter`] that writes pages as they fill. A snapshot that
//! fits in one run is never spilled. Memory is one run, the merge's read buffers, and the
//! writer's per-leaf index (about a hundredth of the data), not the file.

use std::fs::File;
use std::io::{self, BufRead, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use prost::Message;
use raftkv_proto::mvccpb::KeyValue;
use sha2::{Digest, Sha256};

use super::bolt_writer::BoltWriter;
use super::{encode_lease, revision_bytes};
use crate::error::SnapshotError;
use crate::mvcc::encoding::Record;
use crate::sort::{ExternalSort, Spill, at_end};

/// Bytes of versions (encoded, with their bookkeeping) sorted in memory before a run is
/// spilled to disk.
pub(crate) const RUN_BYTES: usize = 64 << 20;

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
    let dir = match part.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = part
        .file_name()
        .map_or_else(|| "export".into(), |n| n.to_string_lossy().into_owned());
    let mut sort = ExternalSort::new(dir, &name, run_bytes);
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
            // The walk goes in key order, so `seq` orders a revision's versions by key.
            sort.push(Version {
                revision: row.revision,
                seq,
                tombstone,
                kv: kv.encode_to_vec(),
            })?;
            seq += 1;
        }
        Ok(())
    })?;
    let meta = &info.meta;
    let version_count = seq;
    // What etcd will take as its revision: the last version's, or the compaction's.
    let revision = last_revision.max(meta.compact_revision);
    let versions = sort.finish()?;

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

/// One version on its way to the key bucket, ordered by (revision, seq).
#[derive(Debug)]
struct Version {
    revision: i64,
    /// Its place in the snapshot's (key) order.
    seq: u64,
    tombstone: bool,
    /// The encoded `mvccpb.KeyValue`.
    kv: Vec<u8>,
}

impl PartialEq for Version {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other).is_eq()
    }
}

impl Eq for Version {}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.revision, self.seq).cmp(&(other.revision, other.seq))
    }
}

/// Bytes of a spilled version before its `KeyValue`: revision, seq, tombstone, length.
const SPILLED_HEADER: usize = 8 + 8 + 1 + 4;

/// The longest `KeyValue` a run may hold: a version's bound plus room for its key and
/// fields. A run file is this export's own, but what it reads back is checked all the same.
const MAX_SPILLED_KV: usize = 2 * crate::snapshot::MAX_VERSION_BYTES;

impl Spill for Version {
    fn memory(&self) -> usize {
        self.kv.len() + VERSION_COST
    }

    fn write_to(&self, out: &mut impl Write) -> io::Result<()> {
        out.write_all(&self.revision.to_le_bytes())?;
        out.write_all(&self.seq.to_le_bytes())?;
        out.write_all(&[u8::from(self.tombstone)])?;
        out.write_all(&(self.kv.len() as u32).to_le_bytes())?;
        out.write_all(&self.kv)
    }

    fn read_from(input: &mut impl BufRead) -> io::Result<Option<Self>> {
        if at_end(input)? {
            return Ok(None);
        }
        let mut header = [0u8; SPILLED_HEADER];
        input.read_exact(&mut header)?;
        let field = |at: usize| u64::from_le_bytes(header[at..at + 8].try_into().expect("8 bytes"));
        let len = u32::from_le_bytes(header[17..21].try_into().expect("4 bytes")) as usize;
        if len > MAX_SPILLED_KV || header[16] > 1 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "a damaged export run file",
            ));
        }
        let mut kv = vec![0u8; len];
        input.read_exact(&mut kv)?;
        Ok(Some(Version {
            revision: field(0) as i64,
            seq: field(8),
            tombstone: header[16] == 1,
            kv,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bytes of one spilled version, as `Version::write_to` writes it.
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
        let mut source = io::Cursor::new(bytes.to_vec());
        let mut read = Vec::new();
        while let Some(v) = Version::read_from(&mut source)? {
            read.push((v.revision, v.seq, v.tombstone, v.kv));
        }
        Ok(read)
    }

    #[test]
    fn a_run_file_reads_back_what_was_written() {
        let versions = [(3i64, 0u64, false, b"abc".to_vec()), (5, 1, true, vec![])];
        let mut bytes = Vec::new();
        for (revision, seq, tombstone, kv) in &versions {
            Version {
                revision: *revision,
                seq: *seq,
                tombstone: *tombstone,
                kv: kv.clone(),
            }
            .write_to(&mut bytes)
            .unwrap();
        }
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
