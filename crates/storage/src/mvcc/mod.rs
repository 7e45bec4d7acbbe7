//! etcd's MVCC key-value model on sled.
//!
//! The store keeps every version of every key, stamped with a global revision that starts at
//! 1 and grows by one per write transaction that changes something; deletes write tombstones;
//! compaction drops versions no read can need any more. See `encoding` for the sled layout.
//!
//! Concurrency: one writer at a time (`apply`, serialised by a mutex — the Raft state
//! machine applies entries in order anyway) and lock-free readers. A reader fixes the
//! revision it reads at before it starts and ignores versions above it, so a batch being
//! written for the next revision cannot be half-seen; compaction's physical deletes wait
//! for snapshot builders through `compaction_gate`.
//!
//! - `encoding` — sled key and value layout.
//! - `range` — reads: `Range` with etcd's range_end conventions, filters, sort, limit.
//! - `apply` — writes: Put, DeleteRange, Txn, Compact, with a write overlay so a txn reads
//!   its own writes.
//! - `validate` — etcd's request checks that run before a request is proposed.

mod apply;
pub(crate) mod encoding;
mod range;
pub mod validate;

use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Mutex, RwLock};

use raftkv_proto::etcdserverpb::ResponseHeader;

use crate::error::MvccError;
use encoding::{META_APPLIED, META_COMPACTED, META_MEMBERSHIP, META_REVISION, decode_i64};

pub use range::RangeEnd;

/// Tuning for the sled database under the store.
#[derive(Debug, Clone)]
pub struct MvccConfig {
    /// sled page-cache budget in bytes.
    pub cache_capacity: u64,
    /// How often sled writes dirty pages in the background (ms). Durability of the data does
    /// not rest on it: the Raft log is the write-ahead log, replayed from the applied index.
    pub flush_every_ms: Option<u64>,
}

impl Default for MvccConfig {
    fn default() -> Self {
        Self {
            cache_capacity: 64 << 20,
            flush_every_ms: Some(500),
        }
    }
}

/// The Raft layer's bookkeeping stored atomically with the data it describes: opaque bytes
/// to this crate (the raft crate serialises its log id and membership into them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppliedState {
    /// The last applied log id, if any entry was applied.
    pub applied: Option<Vec<u8>>,
    /// The last membership config applied, if any.
    pub membership: Option<Vec<u8>>,
}

/// An etcd-semantics multi-version key-value store.
pub struct MvccStore {
    db: sled::Db,
    tree: sled::Tree,
    /// Current revision: the revision of the last write, or 1 for an empty store.
    revision: AtomicI64,
    /// Compacted revision (0 if never compacted).
    compacted: AtomicI64,
    /// Serialises writers.
    writer: Mutex<()>,
    /// Compaction's physical deletes take it for writing; snapshot builders for reading.
    compaction_gate: RwLock<()>,
}

impl MvccStore {
    /// Opens (or creates) the store in directory `path`.
    pub fn open(path: &Path, config: &MvccConfig) -> Result<Self, MvccError> {
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(config.cache_capacity)
            .flush_every_ms(config.flush_every_ms)
            .open()?;
        let tree = db.open_tree("mvcc")?;
        let revision = match tree.get(META_REVISION)? {
            Some(raw) => decode_i64(&raw)?,
            None => 1,
        };
        let compacted = match tree.get(META_COMPACTED)? {
            Some(raw) => decode_i64(&raw)?,
            None => 0,
        };
        Ok(Self {
            db,
            tree,
            revision: AtomicI64::new(revision),
            compacted: AtomicI64::new(compacted),
            writer: Mutex::new(()),
            compaction_gate: RwLock::new(()),
        })
    }

    /// The current revision.
    pub fn revision(&self) -> i64 {
        self.revision.load(Ordering::Acquire)
    }

    /// The compacted revision (0 if never compacted).
    pub fn compacted_revision(&self) -> i64 {
        self.compacted.load(Ordering::Acquire)
    }

    /// The applied log id and membership last stored with the data.
    pub fn applied_state(&self) -> Result<AppliedState, MvccError> {
        Ok(AppliedState {
            applied: self.tree.get(META_APPLIED)?.map(|v| v.to_vec()),
            membership: self.tree.get(META_MEMBERSHIP)?.map(|v| v.to_vec()),
        })
    }

    /// Records `state` without changing data (for Raft entries that carry no command, such
    /// as blank and membership entries).
    pub fn set_applied_state(&self, state: &AppliedState) -> Result<(), MvccError> {
        let _writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let mut batch = sled::Batch::default();
        write_applied(&mut batch, state);
        self.tree.apply_batch(batch)?;
        Ok(())
    }

    /// Writes everything to disk with an fsync (sled's own flush; used when a snapshot or
    /// shutdown needs the state to survive without the log).
    pub fn flush(&self) -> Result<(), MvccError> {
        self.db.flush()?;
        Ok(())
    }

    /// Bytes sled uses on disk.
    pub fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }

    /// A header with the current revision (the server fills in the cluster fields).
    pub(crate) fn header(revision: i64) -> Option<ResponseHeader> {
        Some(ResponseHeader {
            revision,
            ..Default::default()
        })
    }

    pub(crate) fn tree(&self) -> &sled::Tree {
        &self.tree
    }

    /// Holds off compaction's physical deletes while a snapshot reads old versions.
    pub(crate) fn compaction_read_guard(&self) -> std::sync::RwLockReadGuard<'_, ()> {
        self.compaction_gate
            .read()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Sets revision counters after a restore wrote the tree directly.
    pub(crate) fn reload_counters(&self) -> Result<(), MvccError> {
        let revision = match self.tree.get(META_REVISION)? {
            Some(raw) => decode_i64(&raw)?,
            None => 1,
        };
        let compacted = match self.tree.get(META_COMPACTED)? {
            Some(raw) => decode_i64(&raw)?,
            None => 0,
        };
        self.revision.store(revision, Ordering::Release);
        self.compacted.store(compacted, Ordering::Release);
        Ok(())
    }

    /// Removes every record and metadata entry (before installing a snapshot).
    pub(crate) fn clear(&self) -> Result<(), MvccError> {
        self.tree.clear()?;
        self.revision.store(1, Ordering::Release);
        self.compacted.store(0, Ordering::Release);
        Ok(())
    }
}

pub(crate) fn write_applied(batch: &mut sled::Batch, state: &AppliedState) {
    if let Some(applied) = &state.applied {
        batch.insert(META_APPLIED, applied.as_slice());
    }
    if let Some(membership) = &state.membership {
        batch.insert(META_MEMBERSHIP, membership.as_slice());
    }
}

#[cfg(test)]
mod tests;
