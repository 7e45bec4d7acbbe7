//! Hashes of the store for etcd's corruption check (`Maintenance/HashKV` and `Hash`).
//!
//! Members that applied the same log hold the same versions, so the same hash at the same
//! revision; a member whose records differ (a lost or damaged write) gives another. The
//! number is CRC-32 (IEEE) over our own records, so it is not etcd's number (etcd hashes its
//! bbolt pages' keys and values with CRC-32C); only members of one cluster are compared.
//!
//! **HashKV at `rev`** (with `c` the compacted revision) covers, in store order (user key
//! ascending, then newest version first), every version record of revision in `(c, rev]`,
//! and for each key the version compaction kept — its newest at or below `c` — if it is
//! still the key's newest at or below `rev` and not a tombstone (etcd's `kvindex.Keep(rev)`
//! filter). Each version is fed as stored: the encoded sled key (escaped user key, inverted
//! revision) and the encoded record (kind, create revision, version, lease, value; see
//! `encoding`). Versions a half-finished compaction left below `c` are filtered out the same
//! way, so they cannot make a member differ.
//!
//! **Hash** covers what HashKV covers at the current revision, then the compacted revision,
//! the lease table (id, granted TTL, checkpointed remainder), the alarms and the auth table
//! (users, roles, permissions, auth revision): the replicated state that is not history. It leaves out what differs between members legitimately: the
//! applied Raft log id and membership, and derived indexes (history, lease attachments).
//!
//! Both stream over sled's iterator (memory does not grow with the store) and hold off
//! compaction's deletes while they read, as snapshot builds do. Callers on an async runtime
//! run them on a blocking thread.

use super::MvccStore;
use super::encoding::{META_SPACE, Record, lower_bound, split_record_key};
use crate::error::MvccError;

/// A `HashKV` answer's numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvHash {
    /// The hash of the history up to the requested revision.
    pub hash: u32,
    /// The store's revision when the hash was taken (etcd's `header.revision`).
    pub revision: i64,
    /// The compacted revision the hash starts above.
    pub compact_revision: i64,
}

impl MvccStore {
    /// etcd's `HashByRev`: the hash of the versions up to `rev` (0: the current revision).
    /// A revision at or below the compacted one, or above the current one, is refused with
    /// etcd's errors.
    pub fn hash_kv(&self, rev: i64) -> Result<KvHash, MvccError> {
        let _gate = self.compaction_read_guard();
        let compact_revision = self.compacted_revision();
        let revision = self.revision();
        if rev > 0 && rev <= compact_revision {
            return Err(MvccError::Compacted);
        }
        if rev > revision {
            return Err(MvccError::FutureRevision);
        }
        let at = if rev <= 0 { revision } else { rev };
        let mut hasher = crc32fast::Hasher::new();
        self.hash_versions(&mut hasher, at, compact_revision)?;
        Ok(KvHash {
            hash: hasher.finalize(),
            revision,
            compact_revision,
        })
    }

    /// etcd's `Hash`: the hash of the whole replicated state at the current revision (see the
    /// module doc for what it covers), and that revision.
    pub fn hash_all(&self) -> Result<(u32, i64), MvccError> {
        // The point and the compacted revision of one instant, held against compaction.
        let pinned = self.pin_snapshot_point()?;
        let (point, compacted) = (&pinned.point, pinned.compacted);
        let mut hasher = crc32fast::Hasher::new();
        self.hash_versions(&mut hasher, point.revision, compacted)?;
        hasher.update(b"compacted");
        hasher.update(&compacted.to_be_bytes());
        hasher.update(b"leases");
        for (id, info) in &point.leases {
            hasher.update(&id.to_be_bytes());
            hasher.update(&info.ttl.to_be_bytes());
            hasher.update(&info.remaining.to_be_bytes());
        }
        hasher.update(b"alarms");
        for (member, alarm) in &point.alarms {
            hasher.update(&member.to_be_bytes());
            hasher.update(&alarm.to_be_bytes());
        }
        // The auth table as stored: users and roles sorted by name, so equal tables encode
        // alike (passwords are hashed before they are proposed, so every member holds the
        // same bytes).
        hasher.update(b"auth");
        hasher.update(&point.auth.encode());
        Ok((hasher.finalize(), point.revision))
    }

    /// Feeds every version HashKV at `rev` covers, above compacted revision `compacted`.
    fn hash_versions(
        &self,
        hasher: &mut crc32fast::Hasher,
        rev: i64,
        compacted: i64,
    ) -> Result<(), MvccError> {
        // Encoded prefix of the key whose newest version at or below `rev` was already seen.
        let mut settled: Vec<u8> = Vec::new();
        for item in self.tree().range(lower_bound(b"")..vec![META_SPACE]) {
            let (raw_key, raw_value) = item?;
            let (prefix, version_rev) = split_record_key(&raw_key)?;
            if version_rev > rev {
                continue;
            }
            let newest = settled.as_slice() != prefix;
            if newest {
                settled.clear();
                settled.extend_from_slice(prefix);
            }
            let covered = version_rev > compacted
                || (newest && Record::decode(&raw_value, false)? != Record::Tombstone);
            if covered {
                hasher.update(&raw_key);
                // As encoded with the value inline: where a value lies differs by member.
                if super::encoding::value_ptr(&raw_value)?.is_some() {
                    let key = super::encoding::decode_prefix(prefix)?;
                    hasher.update(&self.inline_record(&raw_value, &key, version_rev)?);
                } else {
                    hasher.update(&raw_value);
                }
            }
        }
        Ok(())
    }
}
