//! Installing a snapshot into a store that already holds most of it.
//!
//! A follower sent a snapshot is usually a member that was down or slow for a while: its
//! store holds the snapshot's history up to some revision, and the snapshot adds what came
//! after (and drops what the leader's compactions dropped since). Loading the whole snapshot
//! into a fresh tree (`Restore`) costs two sled inserts per version, about 16 s for a million
//! keys on the reference VM, where etcd's follower swaps in the file it received. A merge
//! instead walks the snapshot's versions and the store's records side by side (both in store
//! order) and writes only what differs, in the live tree:
//!
//! - a version above the store's revision is inserted, its history written as groups at
//!   the end (`sorted_history`: versions come in key order, the index is in revision
//!   order); one it holds costs a read; one at or below its revision that it lacks or holds
//!   otherwise means the store is not a prefix of the snapshot's history (Raft makes it
//!   one; a data dir from elsewhere would not be), and the merge is undone and the
//!   snapshot restored instead;
//! - a record above the store's recorded point is left from a crash part-way through a run
//!   of writes (its history or lease index entry may be missing), so it is not trusted: it
//!   is removed as the walk meets it (readers never look above the store's revision), and
//!   history entries above the point go first;
//! - a record at or below it that the snapshot lacks (one the leader's compactions dropped)
//!   is removed in the batch that moves the point, so no reader at the old revision misses
//!   it and none at the new one sees it (their keys are held in memory until then: one
//!   entry per version the store holds and the snapshot does not, up to
//!   [`MAX_HELD_BYTES`] with the lease index changes; a merge that would hold more is
//!   undone and the snapshot restored instead);
//! - the lease index follows each key's newest version, and loses the entries of leases
//!   the snapshot does not hold; leases, auth, alarms and the point go in that same batch;
//! - history entries below the new compacted revision go afterwards, as a compaction's do.
//!
//! Crash safety: the merge first records the store's point with a marker, `META_MERGING`,
//! and flushes. Until the batch that moves the point (and clears the marker), everything
//! the merge wrote is above that point (for a store that holds a prefix of the leader's
//! history, as Raft makes it: the versions it already has are only read). So if the merge does not finish (a crash, or an
//! error, which drops it), every record and history entry above the point is removed again
//! when the store opens (or on drop), which gives back the store as it was.

use std::sync::MutexGuard;
use std::sync::atomic::Ordering;

use super::encoding::{
    HISTORY_SPACE, META_POINT, META_SPACE, Record, StoredValue, decode_i64, decode_prefix,
    lower_bound, record_key, split_record_key, value_ptr,
};
use super::{MvccStore, gate, lease, seen};
use crate::error::MvccError;

/// Bound on what a merge holds in memory until its last batch: the keys of the records it
/// drops and the lease index entries it changes. A merge that would hold more (a store
/// with far more history than the snapshot keeps) is undone and the snapshot restored
/// instead, whose memory does not grow with the store (tests use a small bound).
pub(crate) const MAX_HELD_BYTES: usize = if cfg!(test) { 8 << 10 } else { 256 << 20 };

/// What each held entry costs beside its key's bytes (the vector's slot, the allocation).
const HELD_ENTRY_COST: usize = 48;

/// Set while a merge writes (value: the store's revision before it, i64 BE).
pub(crate) const META_MERGING: &[u8] = b"\x02merging";

/// What a merge did, for the install's log line.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MergeCounts {
    /// Versions the store already held, byte for byte.
    pub kept: u64,
    /// Versions written (missing, or held with other bytes).
    pub written: u64,
    /// Records above the store's recorded point (left by a crash), removed.
    pub removed: u64,
    /// Records at or below the snapshot's revision that it does not hold (dropped by the
    /// leader's compactions), removed with the point.
    pub dropped: u64,
}

/// A snapshot being merged into the live tree (see [`MvccStore::begin_merge`]).
pub(crate) struct Merge<'a> {
    store: &'a MvccStore,
    _writer: MutexGuard<'a, ()>,
    _gate: gate::GateWrite<'a>,
    tree: sled::Tree,
    /// The store's records, read alongside the snapshot's versions.
    local: sled::Iter,
    /// The next record of `local` not yet matched or passed.
    next_local: Option<(sled::IVec, sled::IVec)>,
    /// The snapshot's revision.
    revision: i64,
    /// The store's revision before the merge (recorded with the marker).
    before: i64,
    /// Set when the store turned out not to hold a prefix of the snapshot's history (a
    /// version it should hold is missing or differs), or when the merge would hold more
    /// than [`MAX_HELD_BYTES`]; the merge stops and is undone, and the snapshot is restored
    /// instead (see `snapshot::install`).
    pub(crate) restore_instead: bool,
    /// Bytes held in `stale` and `lease_index` (with [`HELD_ENTRY_COST`] each).
    held: usize,
    /// The encoded prefix of the last snapshot key seen.
    last_prefix: Vec<u8>,
    /// The encoded prefix of the last store key passed.
    local_prefix: Vec<u8>,
    in_use: u64,
    seen: seen::Seen,
    /// Lease index entries to insert (`true`) or remove, written with the point.
    lease_index: Vec<(Vec<u8>, bool)>,
    /// Records at or below the snapshot's revision that it does not hold, removed with the
    /// point.
    stale: Vec<sled::IVec>,
    /// The value log frames those records point at.
    stale_values: Vec<crate::values::ValuePtr>,
    /// The history of the versions written above the store's revision, written as groups
    /// before the point moves (see `sorted_history`).
    history: super::sorted_history::HistorySorter,
    counts: MergeCounts,
    done: bool,
}

impl MvccStore {
    /// Starts installing a snapshot at `revision` by merging it into the live tree (see
    /// `merge`). Writers wait until [`Merge::finish`].
    pub(crate) fn begin_merge(&self, revision: i64) -> Result<Merge<'_>, MvccError> {
        let writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let gate = self.compaction_gate.write();
        let tree = self.tree();
        let before = self.revision();
        // The point is recorded with the marker, so that everything above it is the merge's.
        let state = self.point().state.clone();
        let mut batch = sled::Batch::default();
        batch.insert(META_POINT, self.point_record(before, &state)?);
        batch.insert(META_MERGING, &before.to_be_bytes());
        tree.apply_batch(batch)?;
        tree.flush()?;
        // Anything above the point is left from a crash part-way through a run of writes
        // (a record may have survived without its history or lease index entry), so it is
        // not trusted: its history entries go now, its records as the walk meets them.
        super::history::remove_history(&tree, before.saturating_add(1), i64::MAX)?;
        let local = tree.range(lower_bound(b"")..vec![META_SPACE]);
        let mut merge = Merge {
            store: self,
            _writer: writer,
            _gate: gate,
            tree,
            local,
            next_local: None,
            revision,
            before,
            restore_instead: false,
            held: 0,
            last_prefix: Vec::new(),
            local_prefix: Vec::new(),
            in_use: 0,
            seen: seen::Seen::default(),
            lease_index: Vec::new(),
            stale: Vec::new(),
            stale_values: Vec::new(),
            history: super::sorted_history::HistorySorter::new(self.dir.clone(), "merge"),
            counts: MergeCounts::default(),
            done: false,
        };
        merge.advance()?;
        Ok(merge)
    }
}

impl Merge<'_> {
    /// The revision of the snapshot being merged.
    pub(crate) fn revision(&self) -> i64 {
        self.revision
    }

    /// Merges versions, in store order.
    pub(crate) fn add(&mut self, rows: &[crate::snapshot::Row]) -> Result<(), MvccError> {
        for row in rows {
            let raw_key = record_key(&row.key, row.revision);
            let raw_record = row.record.encode();
            self.in_use += (raw_key.len() + raw_record.len()) as u64;
            let prefix = &raw_key[..raw_key.len() - 8];
            if prefix != self.last_prefix.as_slice() {
                // The key's newest version: every store record before the key is passed,
                // and the lease index follows the newest version on both sides.
                self.pass_before(prefix)?;
                let held = match &self.next_local {
                    Some((k, v)) if split_record_key(k)?.0 == prefix => lease_of_raw(v)?,
                    _ => 0,
                };
                let lease = match &row.record {
                    Record::Put { lease, .. } => *lease,
                    Record::Tombstone => 0,
                };
                if held != lease {
                    if held != 0 {
                        self.hold_lease_entry(lease::lease_key_index(held, &row.key), false)?;
                    }
                    if lease != 0 {
                        self.hold_lease_entry(lease::lease_key_index(lease, &row.key), true)?;
                    }
                }
                self.seen.insert(&row.key);
                self.last_prefix = prefix.to_vec();
                self.local_prefix = prefix.to_vec();
            }
            self.pass_before(&raw_key)?;
            match &self.next_local {
                Some((k, v)) if k.as_ref() == raw_key.as_slice() => {
                    if !same_version(v, &row.key, row.revision, &row.record, &raw_record) {
                        self.restore_instead = true;
                        return Err(MvccError::Corrupt(format!(
                            "the store holds {:02x?} at revision {} otherwise than a snapshot",
                            row.key, row.revision
                        )));
                    }
                    self.counts.kept += 1;
                    self.advance()?;
                }
                // At or below the store's revision the store should hold it: above its
                // compacted revision every version, and at or below it every version the
                // snapshot's compaction (never behind the store's, under Raft) kept. A
                // version written there would also be indexed inside the history the store
                // holds, where a group kept whole across a compaction may stand.
                _ if row.revision <= self.before => {
                    self.restore_instead = true;
                    return Err(MvccError::Corrupt(format!(
                        "the store lacks {:02x?} at revision {}, which a snapshot holds",
                        row.key, row.revision
                    )));
                }
                _ => {
                    self.tree.insert(raw_key, raw_record)?;
                    // Above everything the index holds: written as groups at the end.
                    self.history.push(row.revision, &row.key)?;
                    self.counts.written += 1;
                }
            }
        }
        Ok(())
    }

    /// Passes the store's records before `bound` (none of them is in the snapshot).
    fn pass_before(&mut self, bound: &[u8]) -> Result<(), MvccError> {
        while let Some((k, v)) = &self.next_local {
            if k.as_ref() >= bound {
                break;
            }
            let (k, v) = (k.clone(), v.clone());
            let (prefix, _) = split_record_key(&k)?;
            if prefix != self.local_prefix.as_slice() {
                // The newest version of a key the snapshot does not hold at all: its lease
                // index entry goes.
                let held = lease_of_raw(&v)?;
                if held != 0 {
                    let key = decode_prefix(prefix)?;
                    self.hold_lease_entry(lease::lease_key_index(held, &key), false)?;
                }
                self.local_prefix = prefix.to_vec();
            }
            self.hold(k.len())?;
            self.stale_values.extend(value_ptr(&v).ok().flatten());
            self.stale.push(k);
            self.advance()?;
        }
        Ok(())
    }

    /// Counts `bytes` more held until the last batch; past [`MAX_HELD_BYTES`] the merge
    /// stops, to be undone and replaced by a restore.
    fn hold(&mut self, bytes: usize) -> Result<(), MvccError> {
        self.held = self
            .held
            .saturating_add(bytes.saturating_add(HELD_ENTRY_COST));
        if self.held > MAX_HELD_BYTES {
            self.restore_instead = true;
            return Err(MvccError::Corrupt(format!(
                "a merge would hold over {MAX_HELD_BYTES} bytes of keys to drop until its last batch"
            )));
        }
        Ok(())
    }

    fn hold_lease_entry(&mut self, key: Vec<u8>, insert: bool) -> Result<(), MvccError> {
        self.hold(key.len())?;
        self.lease_index.push((key, insert));
        Ok(())
    }

    /// Moves to the store's next record at or below its point, removing those above it
    /// (left by a crash; no reader looks above the store's revision).
    fn advance(&mut self) -> Result<(), MvccError> {
        loop {
            self.next_local = self.local.next().transpose()?;
            match &self.next_local {
                Some((k, v)) if split_record_key(k)?.1 > self.before => {
                    self.tree.remove(k)?;
                    self.store
                        .note_live(None, value_ptr(v).ok().flatten().as_ref());
                    self.counts.removed += 1;
                }
                _ => return Ok(()),
            }
        }
    }

    /// Passes the store's records after the snapshot's last key (none of them is in it).
    pub(crate) fn rows_done(&mut self) -> Result<(), MvccError> {
        self.pass_before(&[META_SPACE])
    }

    /// Writes the history of the versions written so far, as groups: all above the store's
    /// revision (so above every entry its index holds) and at most the snapshot's. Undone
    /// with the versions if the merge stops before its point.
    fn write_history(&mut self) -> Result<(), MvccError> {
        let history = std::mem::replace(
            &mut self.history,
            super::sorted_history::HistorySorter::new(self.store.dir.clone(), "merge"),
        );
        let tree = &self.tree;
        history.write_groups(|first, group| {
            tree.insert(super::encoding::history_group_key(first), group)?;
            Ok(())
        })
    }

    /// Writes the snapshot's metadata with its point, makes it durable, and removes the
    /// versions its compactions dropped.
    pub(crate) fn finish(
        mut self,
        meta: &crate::snapshot::SnapshotMeta,
    ) -> Result<MergeCounts, MvccError> {
        self.rows_done()?;
        // History entries above the snapshot (of the records removed above it).
        super::history::remove_history(&self.tree, self.revision.saturating_add(1), i64::MAX)?;
        self.write_history()?;
        let mut batch = sled::Batch::default();
        for (key, insert) in self.lease_index.drain(..) {
            if insert {
                batch.insert(key, &[][..]);
            } else {
                batch.remove(key);
            }
        }
        let leases: std::collections::BTreeSet<i64> = meta.leases.iter().map(|l| l.0).collect();
        for item in self
            .tree
            .range(vec![lease::LEASE_SPACE]..vec![lease::LEASE_SPACE + 1])
        {
            let (raw_key, _) = item?;
            batch.remove(raw_key);
        }
        // The index is checked where it is read (a key put again without its lease keeps its
        // entry until the lease goes), but the entries of leases revoked since are dropped.
        for item in self
            .tree
            .range(vec![lease::LEASE_KEY_SPACE]..vec![lease::LEASE_KEY_SPACE + 1])
        {
            let (raw_key, _) = item?;
            if !leases.contains(&lease::indexed_lease(&raw_key)?) {
                batch.remove(raw_key);
            }
        }
        let durable = self.store.sync_values()?;
        let state = super::snapshot_metadata(meta, &mut batch, durable.as_ref());
        batch.remove(META_MERGING);
        self.counts.dropped = self.stale.len() as u64;
        // Versions the leader's compactions did not drop (a store that holds a prefix of
        // the leader's history, as Raft makes it, has none): their history entries would
        // name records that are gone.
        let mut unindexed = Vec::new();
        for key in self.stale.drain(..) {
            let (prefix, rev) = split_record_key(&key)?;
            if rev > meta.compact_revision {
                unindexed.push((rev, decode_prefix(prefix)?));
            }
            batch.remove(key);
        }
        super::history::remove_history_entries(&self.tree, &mut batch, &unindexed)?;
        // Readers at the old revision must not see the batch's removals as that revision.
        let replacing = self.store.replacing();
        self.tree.apply_batch(batch)?;
        self.store
            .note_dropped(&std::mem::take(&mut self.stale_values));
        // From here the store is at the snapshot's point (or, after a failed flush, may come
        // back there): nothing may be undone, and readers move to it at once (a reader at the
        // old revision would miss the versions the batch dropped).
        self.done = true;
        let store = self.store;
        let compacted_before = store.compacted_revision();
        store.adopt_snapshot(meta, state, std::mem::take(&mut self.seen), replacing);
        self.tree.flush()?;
        if meta.compact_revision > compacted_before {
            // As a compaction does, once no watch can start below it.
            store.remove_history_below(meta.compact_revision)?;
        }
        store.in_use.store(self.in_use, Ordering::Relaxed);
        Ok(self.counts)
    }
}

impl Drop for Merge<'_> {
    fn drop(&mut self) {
        if !self.done {
            // Abandoned part-way: the store goes back to its point. If this fails the marker
            // stays and the store is undone when it next opens; until then nothing reads
            // above the store's revision, and an install error stops Raft on this member.
            let _ = undo(&self.tree, self.before);
        }
    }
}

/// Whether the store's record `raw` of `key` at `revision` holds the snapshot's version
/// (`record`, encoded `encoded`). A value in the value log is compared through its
/// pointer's lengths and frame CRC, computed from the snapshot's value, without reading
/// the frame: a catch-up walks every version the follower holds, and a read each would
/// cost a syscall. (A damaged frame is found where it is read, as any is.)
fn same_version(raw: &[u8], key: &[u8], revision: i64, record: &Record, encoded: &[u8]) -> bool {
    match (super::encoding::decode_parts(raw), record) {
        (
            Ok(Some((create, version, lease, StoredValue::At(ptr)))),
            Record::Put {
                create_revision,
                version: v,
                lease: l,
                value,
            },
        ) => {
            (create, version, lease) == (*create_revision, *v, *l)
                && ptr.len as usize == value.len()
                && ptr.key_len as usize == key.len()
                && crate::values::frame_crc(revision, key, value) == Some(ptr.crc)
        }
        _ => raw == encoded,
    }
}

/// The lease of a stored record (0 for a tombstone or none).
fn lease_of_raw(raw: &[u8]) -> Result<i64, MvccError> {
    Ok(match Record::decode(raw, false)? {
        Record::Put { lease, .. } => lease,
        Record::Tombstone => 0,
    })
}

/// Removes every record and history entry above `before` and the marker.
fn undo(tree: &sled::Tree, before: i64) -> Result<(), MvccError> {
    // In batches of bounded size; the marker goes last, so an undo cut short runs again.
    let above = tree
        .range(lower_bound(b"")..vec![META_SPACE])
        .filter_map(|item| match item {
            Ok((raw_key, _)) => match split_record_key(&raw_key) {
                Ok((_, rev)) if rev <= before => None,
                Ok(_) => Some(Ok(raw_key)),
                Err(e) => Some(Err(e)),
            },
            Err(e) => Some(Err(e.into())),
        });
    super::history::remove_batched(tree, above)?;
    super::history::remove_history(tree, before.saturating_add(1), i64::MAX)?;
    tree.remove(META_MERGING)?;
    tree.flush()?;
    Ok(())
}

/// Undoes, when the store opens, a merge that did not reach its point.
pub(crate) fn recover(tree: &sled::Tree) -> Result<(), MvccError> {
    if let Some(raw) = tree.get(META_MERGING)? {
        undo(tree, decode_i64(&raw)?)?;
    }
    Ok(())
}

const _: () = assert!(HISTORY_SPACE > META_SPACE && lease::LEASE_SPACE > HISTORY_SPACE);

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use bytes::Bytes;
    use raftkv_proto::etcdserverpb::request_op::Request;
    use raftkv_proto::etcdserverpb::{
        CompactionRequest, DeleteRangeRequest, LeaseGrantRequest, LeaseRevokeRequest, PutRequest,
        RequestOp, TxnRequest,
    };
    use raftkv_proto::raftkvpb::{Command, command};

    use super::super::encoding::{HISTORY_SPACE, history_revision};
    use super::*;
    use crate::mvcc::{AppliedState, MvccConfig};
    use crate::snapshot;

    struct Store {
        store: MvccStore,
        dir: tempfile::TempDir,
    }

    fn open() -> Store {
        let dir = tempfile::tempdir().unwrap();
        let store = MvccStore::open(&dir.path().join("db"), &MvccConfig::default()).unwrap();
        Store { store, dir }
    }

    /// A deterministic history of puts (some with leases), deletes, txns, lease grants and
    /// revokes, and compactions, over a few keys.
    fn history(seed: u64, n: usize) -> Vec<command::Op> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut next = move |m: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % m
        };
        let key = |i: u64| Bytes::from(format!("k{i:02}"));
        let mut ops = Vec::new();
        let mut revision = 1i64;
        let mut leases: Vec<i64> = Vec::new();
        for i in 0..n {
            let op = match next(20) {
                0 => {
                    let id = 100 + i as i64;
                    leases.push(id);
                    command::Op::LeaseGrant(LeaseGrantRequest { ttl: 60, id })
                }
                1 if !leases.is_empty() => {
                    let id = leases.remove(next(leases.len() as u64) as usize);
                    command::Op::LeaseRevoke(LeaseRevokeRequest { id })
                }
                2 if revision > 2 => command::Op::Compaction(CompactionRequest {
                    revision: 1 + next(revision as u64) as i64,
                    physical: false,
                }),
                3..=4 => command::Op::DeleteRange(DeleteRangeRequest {
                    key: key(next(12)),
                    range_end: if next(3) == 0 {
                        key(next(12) + 1)
                    } else {
                        Bytes::new()
                    },
                    prev_kv: false,
                }),
                5 => command::Op::Txn(TxnRequest {
                    success: (0..2)
                        .map(|_| RequestOp {
                            request: Some(Request::RequestPut(PutRequest {
                                key: key(next(12)),
                                value: Bytes::from(format!("t{i}")),
                                ..Default::default()
                            })),
                        })
                        .collect(),
                    ..Default::default()
                }),
                _ => command::Op::Put(PutRequest {
                    key: key(next(12)),
                    value: Bytes::from(format!("v{i}").repeat(1 + next(4) as usize)),
                    lease: if !leases.is_empty() && next(3) == 0 {
                        leases[next(leases.len() as u64) as usize]
                    } else {
                        0
                    },
                    ..Default::default()
                }),
            };
            // Revisions only grow; a compaction at a revision not reached yet is refused,
            // which is fine too.
            revision += 2;
            ops.push(op);
        }
        ops
    }

    fn apply(store: &MvccStore, ops: &[command::Op]) {
        for op in ops {
            let cmd = Command {
                op: Some(op.clone()),
                ..Default::default()
            };
            // A refusal (a compaction past the revision, say) changes nothing, as in etcd.
            if let Err(e) = store.apply(&cmd, &AppliedState::default()) {
                assert!(
                    !matches!(e, MvccError::Corrupt(_) | MvccError::Sled(_)),
                    "{e}"
                );
            }
            // As the compactor thread runs its deletes shortly after.
            if matches!(op, command::Op::Compaction(_)) {
                store.finish_compaction().unwrap();
            }
        }
        // As the value log's syncer lets the last run's point be recorded.
        store.record_applied().unwrap();
    }

    /// Everything in the store's tree, with history entries as (revision, key) at or above
    /// the compacted revision (the only ones read; a restore indexes from records, a write
    /// by its change order), and the store's in-memory figures.
    #[derive(Debug, PartialEq, Eq)]
    struct Dump {
        entries: BTreeMap<Vec<u8>, Vec<u8>>,
        history: BTreeSet<(i64, Vec<u8>)>,
        revision: i64,
        compacted: i64,
        in_use: u64,
        leases: Vec<(i64, lease::LeaseInfo)>,
        /// Each lease's keys (the index is checked where it is read, so stale entries of a
        /// lease are allowed), and index entries of leases that do not exist.
        lease_keys: Vec<(i64, Vec<Bytes>)>,
        orphans: Vec<Vec<u8>>,
    }

    /// What differs between two dumps (the whole dumps are too long to read).
    fn diff(a: &Dump, b: &Dump) -> String {
        let mut out = String::new();
        for (k, v) in &a.entries {
            if b.entries.get(k) != Some(v) {
                out += &format!("left {k:?} = {v:?}, right {:?}\n", b.entries.get(k));
            }
        }
        for (k, v) in &b.entries {
            if !a.entries.contains_key(k) {
                out += &format!("right only {k:?} = {v:?}\n");
            }
        }
        for h in a.history.symmetric_difference(&b.history) {
            out += &format!("history {h:?} on one side\n");
        }
        out += &format!(
            "revision {} {}, compacted {} {}, in_use {} {}, leases {:?} {:?}, keys {:?} {:?}, orphans {:?} {:?}",
            a.revision,
            b.revision,
            a.compacted,
            b.compacted,
            a.in_use,
            b.in_use,
            a.leases,
            b.leases,
            a.lease_keys,
            b.lease_keys,
            a.orphans,
            b.orphans
        );
        out
    }

    fn same(a: &Dump, b: &Dump, what: &str) {
        assert!(a == b, "{what}: {}", diff(a, b));
    }

    fn dump(store: &MvccStore) -> Dump {
        let compacted = store.compacted_revision();
        let (mut entries, mut history) = (BTreeMap::new(), BTreeSet::new());
        let leases = store.leases();
        let mut orphans = Vec::new();
        for item in store.tree().iter() {
            let (k, v) = item.unwrap();
            if k[0] == lease::LEASE_KEY_SPACE {
                let id = lease::indexed_lease(&k).unwrap();
                if !leases.iter().any(|l| l.0 == id) {
                    orphans.push(k.to_vec());
                }
            } else if k[0] == HISTORY_SPACE {
                // Every index key parses; the changes it names are read below, whatever
                // the grouping.
                history_revision(&k).unwrap();
            } else {
                entries.insert(k.to_vec(), store.logical_row(&k, &v));
            }
        }
        for (k, user_key) in crate::mvcc::history::logical_history(&store.tree()) {
            let rev = history_revision(&k).unwrap();
            // At the compacted revision itself a compaction may leave the entry of a
            // tombstone it removed (read as nothing); a restore has none.
            if rev > compacted {
                history.insert((rev, user_key));
            }
        }
        Dump {
            entries,
            history,
            revision: store.revision(),
            compacted,
            in_use: store.size_in_use(),
            lease_keys: leases
                .iter()
                .map(|l| (l.0, store.lease_keys(l.0).unwrap()))
                .collect(),
            leases,
            orphans,
        }
    }

    #[test]
    fn a_merged_snapshot_leaves_the_store_as_a_restore_would() {
        let mut merges = 0;
        let mut dropped = 0;
        for seed in 0..12u64 {
            let ops = history(seed, 240);
            let (behind, later) = (seed as usize * 17 % 200, 40);
            let leader = open();
            apply(&leader.store, &ops[..200]);
            let follower = open();
            apply(&follower.store, &ops[..behind]);
            let file = leader.dir.path().join("s.snap");
            snapshot::build(&leader.store, &file).unwrap();

            let fresh = open();
            let (_, none) = snapshot::install(&file, &fresh.store).unwrap();
            assert_eq!(none, None, "an empty store is restored");
            let (_, merged) = snapshot::install(&file, &follower.store).unwrap();
            if let Some(counts) = merged {
                merges += 1;
                dropped += counts.dropped;
            }
            same(
                &dump(&follower.store),
                &dump(&fresh.store),
                &format!("seed {seed}"),
            );
            // Watchers read the same history from anywhere (the merge's groups sit above
            // the follower's own, overlapping none).
            let to = follower.store.revision();
            for from in (follower.store.compacted_revision().max(1)..=to + 1).step_by(3) {
                assert_eq!(
                    events(&follower.store, from, to),
                    events(&fresh.store, from, to),
                    "seed {seed}, from {from}"
                );
            }
            let records = |d: Dump| {
                d.entries
                    .into_iter()
                    .filter(|(k, _)| k[0] == super::super::encoding::RECORD_SPACE)
                    .collect::<Vec<_>>()
            };
            assert_eq!(
                records(dump(&follower.store)),
                records(dump(&leader.store)),
                "seed {seed}"
            );

            // And both go on alike.
            apply(&leader.store, &ops[200..200 + later]);
            apply(&follower.store, &ops[200..200 + later]);
            apply(&fresh.store, &ops[200..200 + later]);
            same(
                &dump(&follower.store),
                &dump(&fresh.store),
                &format!("seed {seed}, later"),
            );
            assert_eq!(
                records(dump(&follower.store)),
                records(dump(&leader.store)),
                "seed {seed}"
            );

            // Reopened, the merged store is the same.
            let before = dump(&follower.store);
            let Store { store, dir } = follower;
            drop(store);
            let store = MvccStore::open(&dir.path().join("db"), &MvccConfig::default()).unwrap();
            same(&dump(&store), &before, &format!("seed {seed}, reopened"));
        }
        // The seeds take the merge, with versions to drop, and not only restores.
        assert!(merges >= 10, "{merges} merges");
        assert!(dropped > 0, "nothing dropped");
    }

    /// The events of revisions `from..=to`, each revision's in key order (a store applied
    /// entry by entry keeps a txn's own order, a restored one key order).
    fn events(store: &MvccStore, from: i64, to: i64) -> Vec<(i64, Vec<u8>, i32, Vec<u8>)> {
        let limits = crate::mvcc::HistoryLimits {
            revisions: usize::MAX,
            bytes: usize::MAX,
        };
        let mut out: Vec<_> = store
            .history(from, to, limits, &mut |_| true)
            .unwrap()
            .events
            .into_iter()
            .map(|e| {
                let kv = e.kv.unwrap_or_default();
                (
                    kv.mod_revision,
                    kv.key.to_vec(),
                    e.r#type,
                    kv.value.to_vec(),
                )
            })
            .collect();
        out.sort();
        out
    }

    /// Found beside the compaction race (a read overtaken by a compaction): between a
    /// snapshot's removals (a merge's last batch, a restore's tree swap) and the store
    /// taking the snapshot's revision, a read at the old revision found versions gone. A
    /// read run inside that window must answer as before it or as after it.
    #[test]
    fn a_read_while_a_snapshot_goes_in_answers_before_or_after_it() {
        use raftkv_proto::etcdserverpb::RangeRequest;
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::{Arc, Mutex};
        let put = |key: &str, value: &str| {
            command::Op::Put(PutRequest {
                key: Bytes::from(key.to_string()),
                value: Bytes::from(value.to_string()),
                ..Default::default()
            })
        };
        let before = [put("a", "a0"), put("b", "b0"), put("c", "c0")]; // 2..=4
        let leader = open();
        apply(&leader.store, &before);
        // Past the follower: b and c again, and a compaction that drops b0 and c0.
        let after = [
            put("b", "b1"),
            put("c", "c1"),
            command::Op::Compaction(CompactionRequest {
                revision: 6,
                physical: true,
            }),
        ];
        apply(&leader.store, &after);
        let file = leader.dir.path().join("s.snap");
        snapshot::build(&leader.store, &file).unwrap();
        let answer = |store: &MvccStore| -> Vec<String> {
            let all = RangeRequest {
                key: Bytes::from_static(b"\0"),
                range_end: Bytes::from_static(b"\0"),
                ..Default::default()
            };
            let r = store.range(&all).unwrap();
            let mut out = vec![r.header.unwrap().revision.to_string()];
            out.extend(
                r.kvs
                    .iter()
                    .map(|kv| String::from_utf8_lossy(&kv.value).into()),
            );
            out
        };
        for merged in [true, false] {
            let follower = open();
            apply(&follower.store, &before);
            let old = answer(&follower.store);
            assert_eq!(old, ["4", "a0", "b0", "c0"]);
            let (start, started) = std::sync::mpsc::channel::<()>();
            let seen = Arc::new(Mutex::new(None));
            let answered = Arc::new(AtomicBool::new(false));
            *follower.store.while_replacing.lock().unwrap() = Some(Box::new({
                let (start, answered) = (start.clone(), answered.clone());
                move || {
                    start.send(()).unwrap();
                    // Give the read time to answer inside the window (it waits instead).
                    let deadline =
                        std::time::Instant::now() + std::time::Duration::from_millis(300);
                    while !answered.load(Ordering::SeqCst) && std::time::Instant::now() < deadline {
                        std::thread::sleep(std::time::Duration::from_millis(5));
                    }
                }
            }));
            std::thread::scope(|scope| {
                let (seen, answered, store) = (&seen, &answered, &follower.store);
                scope.spawn(move || {
                    started.recv().unwrap();
                    *seen.lock().unwrap() = Some(answer(store));
                    answered.store(true, Ordering::SeqCst);
                });
                if merged {
                    let (_, counts) = snapshot::install(&file, &follower.store).unwrap();
                    assert!(counts.is_some(), "installed by a merge");
                } else {
                    snapshot::restore(&file, &follower.store).unwrap();
                }
            });
            *follower.store.while_replacing.lock().unwrap() = None;
            let seen = seen.lock().unwrap().take().unwrap();
            let new = answer(&follower.store);
            assert_eq!(new, ["6", "a0", "b1", "c1"]);
            assert!(seen == old || seen == new, "merged {merged}: read {seen:?}");
        }
    }

    /// Merges the first `blocks` blocks of `file` into `store` and leaves it unfinished.
    fn merge_part<'a>(store: &'a MvccStore, file: &std::path::Path) -> Merge<'a> {
        let info = snapshot::read_info(file).unwrap();
        let mut merge = store.begin_merge(info.meta.revision).unwrap();
        let mut rows_seen = 0;
        crate::snapshot::reader::walk(file, &mut |rows| {
            if rows_seen == 0 {
                merge.add(&rows).unwrap();
            }
            rows_seen += rows.len();
            Ok(())
        })
        .unwrap();
        assert!(merge.counts.written > 0, "the part merged wrote something");
        merge
    }

    #[test]
    fn an_abandoned_merge_is_undone_and_so_is_one_cut_by_a_crash() {
        let ops = history(7, 240);
        let leader = open();
        apply(&leader.store, &ops);
        let file = leader.dir.path().join("s.snap");
        snapshot::build(&leader.store, &file).unwrap();

        // Dropped part-way (an error): the store is as it was.
        let follower = open();
        apply(&follower.store, &ops[..120]);
        let before = dump(&follower.store);
        drop(merge_part(&follower.store, &file));
        same(&dump(&follower.store), &before, "dropped part-way");
        assert!(follower.store.tree().get(META_MERGING).unwrap().is_none());
        // Dropped after the history of what it wrote went in as groups (just before the
        // point would have moved): those go too.
        let mut merge = merge_part(&follower.store, &file);
        let groups_above = |tree: &sled::Tree| {
            tree.range(super::super::encoding::history_bound(follower.store.revision() + 1)..)
                .keys()
                .filter(|k| k.as_ref().is_ok_and(|k| k[0] == HISTORY_SPACE))
                .count()
        };
        merge.write_history().unwrap();
        assert!(groups_above(&merge.tree) > 0, "no groups written");
        drop(merge);
        same(
            &dump(&follower.store),
            &before,
            "dropped with its groups written",
        );
        assert_eq!(groups_above(&follower.store.tree()), 0);

        // Cut by a crash (nothing of the merge runs again): a copy of the store's files taken
        // part-way, its groups written, once sled has flushed, is undone when it opens.
        let mut merge = merge_part(&follower.store, &file);
        merge.write_history().unwrap();
        merge.tree.flush().unwrap();
        let image = tempfile::tempdir().unwrap();
        copy_dir(&follower.dir.path().join("db"), &image.path().join("db"));
        drop(merge);
        let store = MvccStore::open(&image.path().join("db"), &MvccConfig::default()).unwrap();
        assert!(store.tree().get(META_MERGING).unwrap().is_none());
        same(&dump(&store), &before, "reopened after a crash");
        // And a merge then completes.
        snapshot::install(&file, &store).unwrap();
        let fresh = open();
        snapshot::install(&file, &fresh.store).unwrap();
        same(&dump(&store), &dump(&fresh.store), "merged after the undo");
    }

    #[test]
    fn records_a_crash_left_above_the_point_are_not_trusted() {
        let ops = history(3, 240);
        let leader = open();
        apply(&leader.store, &ops[..200]);
        let file = leader.dir.path().join("s.snap");
        snapshot::build(&leader.store, &file).unwrap();

        // Writes past the recorded point, then a crash that kept their records but lost
        // their history entries (sled keeps a prefix of its log; the entries came after).
        let follower = open();
        apply(&follower.store, &ops[..100]);
        for op in &ops[100..130] {
            let cmd = Command {
                op: Some(op.clone()),
                ..Default::default()
            };
            let _ = follower
                .store
                .apply_unrecorded(&cmd, &AppliedState::default());
        }
        // (Some writes record the point too: a refusal, a lease grant.)
        let point = follower.store.tree().get(META_POINT).unwrap().unwrap();
        let recorded = super::super::encoding::decode_point(&point).unwrap().0;
        assert!(follower.store.revision() > recorded);
        super::super::history::remove_history(&follower.store.tree(), recorded + 1, i64::MAX)
            .unwrap();
        // The crash: a copy of the files once sled has written them (a clean close would
        // record the point).
        follower.store.tree().flush().unwrap();
        let image = tempfile::tempdir().unwrap();
        copy_dir(&follower.dir.path().join("db"), &image.path().join("db"));
        let store = MvccStore::open(&image.path().join("db"), &MvccConfig::default()).unwrap();
        assert_eq!(store.revision(), recorded);

        let (_, merged) = snapshot::install(&file, &store).unwrap();
        let merged = merged.expect("merged");
        assert!(merged.removed > 0, "{merged:?}");
        let fresh = open();
        snapshot::install(&file, &fresh.store).unwrap();
        same(
            &dump(&store),
            &dump(&fresh.store),
            "merged over a crash's leftovers",
        );
    }

    #[test]
    fn a_store_with_another_history_is_restored_instead() {
        let leader = open();
        apply(&leader.store, &history(1, 200));
        let file = leader.dir.path().join("s.snap");
        snapshot::build(&leader.store, &file).unwrap();
        let other = open();
        apply(&other.store, &history(2, 120));
        installs_by_restore(&file, &other.store, "restored over another history");
    }

    /// Installs `file` into `store`, which must take a restore, not a merge, and end as a
    /// fresh store that installed it.
    fn installs_by_restore(file: &std::path::Path, store: &MvccStore, what: &str) {
        let (_, merged) = snapshot::install(file, store).unwrap();
        assert_eq!(merged, None, "{what}: restored, not merged");
        assert!(store.tree().get(META_MERGING).unwrap().is_none());
        let fresh = open();
        snapshot::install(file, &fresh.store).unwrap();
        same(&dump(store), &dump(&fresh.store), what);
    }

    #[test]
    fn a_merge_that_would_hold_too_much_is_restored_instead() {
        // Both hold 400 keys; the leader then deletes and compacts them all away, so the
        // follower's merge would hold every one of their records until its last batch.
        let puts: Vec<command::Op> = (0..400)
            .map(|i| {
                command::Op::Put(PutRequest {
                    key: Bytes::from(format!("stale/{i:04}")),
                    value: Bytes::from_static(b"v"),
                    ..Default::default()
                })
            })
            .collect();
        let leader = open();
        let follower = open();
        apply(&leader.store, &puts);
        apply(&follower.store, &puts);
        apply(
            &leader.store,
            &[
                command::Op::DeleteRange(DeleteRangeRequest {
                    key: Bytes::from_static(b"stale/"),
                    range_end: Bytes::from_static(b"stale0"),
                    prev_kv: false,
                }),
                command::Op::Put(PutRequest {
                    key: Bytes::from_static(b"kept"),
                    value: Bytes::from_static(b"v"),
                    ..Default::default()
                }),
            ],
        );
        let revision = leader.store.revision();
        apply(
            &leader.store,
            &[command::Op::Compaction(CompactionRequest {
                revision,
                physical: true,
            })],
        );
        let file = leader.dir.path().join("s.snap");
        snapshot::build(&leader.store, &file).unwrap();
        const { assert!(400 * (HELD_ENTRY_COST + 8) > MAX_HELD_BYTES) };

        installs_by_restore(&file, &follower.store, "restored instead of merged");
    }

    #[test]
    fn a_damaged_snapshot_changes_nothing_in_a_store_it_would_be_merged_into() {
        let ops = history(5, 240);
        let leader = open();
        apply(&leader.store, &ops[..200]);
        let file = leader.dir.path().join("s.snap");
        snapshot::build(&leader.store, &file).unwrap();
        let follower = open();
        apply(&follower.store, &ops[..120]);
        let before = dump(&follower.store);
        let good = std::fs::read(&file).unwrap();
        // A flipped byte in the body, and the same with the trailer made to match it (a
        // block's own checks must then refuse it), and a file cut short.
        let mut flipped = good.clone();
        flipped[good.len() / 2] ^= 0x40;
        let mut resealed = flipped.clone();
        let body = resealed.len() - 32;
        use sha2::Digest;
        let sum = sha2::Sha256::digest(&resealed[..body]);
        resealed[body..].copy_from_slice(&sum);
        for (what, bytes) in [
            ("flipped", flipped),
            ("resealed", resealed),
            ("cut", good[..good.len() / 3].to_vec()),
        ] {
            let damaged = leader.dir.path().join(format!("{what}.snap"));
            std::fs::write(&damaged, bytes).unwrap();
            assert!(
                snapshot::install(&damaged, &follower.store).is_err(),
                "{what}"
            );
            same(&dump(&follower.store), &before, what);
            assert!(follower.store.tree().get(META_MERGING).unwrap().is_none());
        }
    }

    fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            let target = to.join(entry.file_name());
            if entry.file_type().unwrap().is_dir() {
                copy_dir(&entry.path(), &target);
            } else {
                std::fs::copy(entry.path(), target).unwrap();
            }
        }
    }
}
