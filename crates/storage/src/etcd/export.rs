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
//! The whole database is built in memory before it is written (about twice the data's
//! size); a streamed writer is not done.

use std::io::Write;
use std::path::Path;

use bytes::Bytes;
use prost::Message;
use raftkv_proto::mvccpb::KeyValue;

use super::bolt_writer::{self, BucketData};
use super::{encode_lease, revision_bytes, seal};
use crate::error::SnapshotError;
use crate::mvcc::encoding::Record;

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
    let mut versions: Vec<(i64, Vec<u8>, Record)> = Vec::new();
    let info = crate::snapshot::walk(src, &mut |rows| {
        versions.extend(rows.into_iter().map(|r| (r.revision, r.key, r.record)));
        Ok(())
    })?;
    let meta = &info.meta;
    // What etcd will take as its revision: the last version's, or the compaction's.
    let revision = versions
        .iter()
        .map(|v| v.0)
        .max()
        .unwrap_or(0)
        .max(meta.compact_revision);
    versions.sort_unstable_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
    let mut keys = Vec::with_capacity(versions.len());
    let mut sub = 0i64;
    for i in 0..versions.len() {
        sub = if i > 0 && versions[i - 1].0 == versions[i].0 {
            sub + 1
        } else {
            0
        };
        let (main, key, record) = &versions[i];
        let key = Bytes::copy_from_slice(key);
        let (tombstone, kv) = match record {
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
                    create_revision: *create_revision,
                    mod_revision: *main,
                    version: *version,
                    value: Bytes::copy_from_slice(value),
                    lease: *lease,
                },
            ),
        };
        keys.push((revision_bytes(*main, sub, tombstone), kv.encode_to_vec()));
    }
    let version_count = keys.len() as u64;
    drop(versions);

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
    let mut buckets: Vec<BucketData> = vec![
        (
            b"auth".to_vec(),
            vec![
                (b"authEnabled".to_vec(), vec![u8::from(auth.enabled)]),
                (
                    b"authRevision".to_vec(),
                    auth.revision.to_be_bytes().to_vec(),
                ),
            ],
        ),
        (
            b"authRoles".to_vec(),
            auth.roles
                .iter()
                .map(|(name, role)| (name.as_bytes().to_vec(), role.encode_to_vec()))
                .collect(),
        ),
        (
            b"authUsers".to_vec(),
            auth.users
                .iter()
                .map(|(name, user)| (name.as_bytes().to_vec(), user.encode_to_vec()))
                .collect(),
        ),
        (b"key".to_vec(), keys),
        (b"lease".to_vec(), leases),
        (b"meta".to_vec(), meta_bucket),
    ];
    buckets.sort_by(|a, b| a.0.cmp(&b.0));
    let file = seal(bolt_writer::write(&buckets, 4096));
    drop(buckets);

    let mut part = dest.as_os_str().to_owned();
    part.push(".part");
    let part = std::path::PathBuf::from(part);
    let mut out = std::fs::File::create(&part)?;
    out.write_all(&file)?;
    out.sync_all()?;
    drop(out);
    std::fs::rename(&part, dest)?;
    if let Some(dir) = dest.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(Exported {
        revision,
        source_revision: meta.revision,
        versions: version_count,
        leases: lease_count,
        bytes: file.len() as u64,
    })
}
