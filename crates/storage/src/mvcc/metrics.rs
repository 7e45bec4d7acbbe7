//! What the store counts for `/metrics`: etcd's `etcd_mvcc_{range,put,delete,txn}_total`,
//! "seen by this member" — every member counts the writes it applies and the reads it serves.

use raftkv_metrics::{Counter, Histogram};

/// Operation counts since the store opened.
#[derive(Debug)]
pub struct StoreCounts {
    /// Ranges served, alone or inside a txn.
    pub ranges: Counter,
    /// Puts applied, alone or inside a txn.
    pub puts: Counter,
    /// Delete-ranges applied, alone or inside a txn.
    pub deletes: Counter,
    /// Txns applied or served read-only. etcd counts an MVCC transaction that did more than
    /// one range/put/delete (compares included); raftkv counts each Txn request once.
    pub txns: Counter,
    /// Values moved out of mostly dead value segments (given back to their records inline).
    pub values_moved: Counter,
    /// Value segments removed once no record pointed into them.
    pub segments_removed: Counter,
    /// Versions (records) compactions removed (etcd's
    /// `etcd_debugging_mvcc_db_compaction_keys_total`).
    pub compacted_keys: Counter,
    /// Milliseconds each batch of a compaction's removal held the writer (etcd's
    /// `etcd_debugging_mvcc_db_compaction_pause_duration_milliseconds`, its buckets).
    pub compaction_pause: Histogram,
    /// Milliseconds from a compaction's apply to the end of its removal (etcd's
    /// `etcd_debugging_mvcc_db_compaction_total_duration_milliseconds`, its buckets).
    pub compaction_total: Histogram,
}

impl Default for StoreCounts {
    fn default() -> Self {
        Self {
            ranges: Counter::default(),
            puts: Counter::default(),
            deletes: Counter::default(),
            txns: Counter::default(),
            values_moved: Counter::default(),
            segments_removed: Counter::default(),
            compacted_keys: Counter::default(),
            compaction_pause: Histogram::exponential(1.0, 2.0, 13),
            compaction_total: Histogram::exponential(100.0, 2.0, 14),
        }
    }
}
