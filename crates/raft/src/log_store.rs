//! openraft's `RaftLogStorage` over raftkv-storage's write-ahead log.
//!
//! Entries and the vote are bincode-encoded openraft values; the WAL sees opaque bytes with
//! a (term, index) id. Durability: `append` queues the entries and returns at once (so
//! openraft replicates them to followers while the leader's own fdatasync runs); it reports
//! `IOFlushed` only from the WAL's callback, which runs after the fdatasync covering them.
//!
//! openraft issue #2118 (in-flight log IO marked flushed on `become_leader`) does not bite
//! here: 0.10.0-alpha.37 makes the new leader's progress update wait for the previously
//! accepted IO to be flushed, and our WAL is strictly FIFO (one flush worker, one file
//! sequence), so the candidate's `save_vote`, which returns only after its own fdatasync,
//! also covers every append queued before it.

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use openraft::storage::{IOFlushed, LogState, RaftLogStorage};
use openraft::{OptionalSend, RaftLogReader};
use raftkv_storage::log::{FlushCallback, LogId as WalLogId, RaftLogStore};

use crate::types::{Entry, LogId, TypeConfig, Vote, decode, encode};

/// The Raft log of one member (cheap to clone: a handle).
#[derive(Clone)]
pub struct LogStore {
    wal: Arc<RaftLogStore>,
}

impl LogStore {
    /// Wraps an opened WAL.
    pub fn new(wal: Arc<RaftLogStore>) -> Self {
        Self { wal }
    }

    /// Runs blocking WAL work (waits for fdatasync) off the async executor.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&RaftLogStore) -> io::Result<T> + Send + 'static,
    ) -> io::Result<T> {
        let wal = self.wal.clone();
        tokio::task::spawn_blocking(move || f(&wal))
            .await
            .map_err(|e| io::Error::other(format!("log task failed: {e}")))?
    }
}

pub(crate) fn to_wal(id: &LogId) -> WalLogId {
    WalLogId {
        term: id.leader_id.term,
        index: id.index,
    }
}

fn from_wal(id: WalLogId) -> LogId {
    LogId::new_term_index(id.term, id.index)
}

fn bounds(range: impl RangeBounds<u64>) -> (u64, u64) {
    let from = match range.start_bound() {
        Bound::Included(&n) => n,
        Bound::Excluded(&n) => n.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let to = match range.end_bound() {
        Bound::Included(&n) => n.saturating_add(1),
        Bound::Excluded(&n) => n,
        Bound::Unbounded => u64::MAX,
    };
    (from, to)
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        let (from, to) = bounds(range);
        let raw = self.wal.read(from, to)?;
        raw.iter()
            .map(|(_, bytes)| decode::<Entry>(bytes))
            .collect()
    }

    /// What replication sends in one message: at most [`crate::REPLICATION_BATCH_BYTES`] of
    /// entries (one larger entry goes alone). openraft's batches are otherwise bounded only by
    /// count, and 60 entries of 1.4 MB overflowed the peer message limit: a follower that had
    /// missed them never caught up.
    async fn limited_get_log_entries(
        &mut self,
        start: u64,
        end: u64,
    ) -> Result<Vec<Entry>, io::Error> {
        let raw = self
            .wal
            .read_limited(start, end, crate::REPLICATION_BATCH_BYTES)?;
        raw.iter()
            .map(|(_, bytes)| decode::<Entry>(bytes))
            .collect()
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        self.wal.vote().map(|bytes| decode(&bytes)).transpose()
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let state = self.wal.state();
        let last_purged = state.purged.map(from_wal);
        let last = state.last.map(from_wal).or(last_purged);
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        let bytes = encode(vote)?;
        self.blocking(move |wal| wal.save_vote(bytes)).await
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<TypeConfig>,
    ) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let encoded = entries
            .into_iter()
            .map(|e| Ok((to_wal(&e.log_id), encode(&e)?)))
            .collect::<io::Result<Vec<_>>>()?;
        self.wal.append(
            encoded,
            FlushCallback::new(move |res| callback.io_completed(res)),
        )?;
        Ok(())
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let from = last_log_id.map_or(0, |id| id.index + 1);
        if self.wal.state().last.is_none_or(|last| last.index < from) {
            return Ok(());
        }
        self.blocking(move |wal| wal.truncate_from(from)).await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        let id = to_wal(&log_id);
        self.blocking(move |wal| wal.purge_upto(id)).await
    }
}
