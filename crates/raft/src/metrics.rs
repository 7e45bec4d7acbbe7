//! What a member measures for `/metrics`, in etcd's terms (the server crate writes them out
//! with etcd's names). One [`NodeMetrics`] per member, shared by the parts that update it:
//!
//! - the node: proposals pending and failed, leader changes, read index rounds;
//! - the state machine: how long each run of applied entries took to write into the store
//!   (etcd's backend commit duration: raftkv's store has no separate batched commit), each
//!   entry's apply and how many took too long, and snapshot builds;
//! - the peer network: bytes sent to and received from each peer, failed sends, and the
//!   round trip of heartbeats (etcd measures its peers' round trip with separate probes);
//! - the WAL's fsyncs, read from its flush worker's counters ([`WalSyncs::poll`]).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use raftkv_metrics::{Counter, Gauge, Histogram};
use raftkv_storage::log::FlushStats;

/// One member's measurements.
#[derive(Debug)]
pub struct NodeMetrics {
    /// Leader changes seen (the first leader counts), as etcd's `leaderChanges`.
    pub leader_changes: Counter,
    /// Proposals from this member not yet answered.
    pub proposals_pending: Gauge,
    /// Proposals from this member that failed (not committed in time, no leader, stopped).
    pub proposals_failed: Counter,
    /// Time to apply each run of committed entries into the store, in seconds.
    pub backend_commit: Histogram,
    /// Entries whose apply took 100 ms or more.
    pub slow_applies: Counter,
    /// Linearizable reads that waited for a read index on this member.
    pub read_index_reads: Counter,
    /// ReadIndex rounds this member ran (each answers every read waiting when it began).
    pub read_index_rounds: Counter,
    /// Rounds that failed (no leader in time, stopping), as etcd's `readIndexFailed`.
    pub read_indexes_failed: Counter,
    /// Time to apply each entry, in seconds (where apply stalls show).
    pub apply_entry: Histogram,
    /// Time to take each Raft snapshot (the store flushed up to the applied point), in
    /// seconds.
    pub snapshot_build: Histogram,
    /// Time to write each snapshot file sent to a follower, in seconds.
    pub snapshot_write: Histogram,
    /// The last snapshot file sent to a follower: its bytes, and its body's before
    /// compression.
    pub snapshot_bytes: Gauge,
    /// See `snapshot_bytes`.
    pub snapshot_raw_bytes: Gauge,
    /// WAL fsync durations, in seconds.
    pub wal_fsync: Histogram,
    /// Bytes written to the WAL.
    pub wal_write_bytes: Gauge,
    peers: Mutex<BTreeMap<u64, std::sync::Arc<PeerTraffic>>>,
    wal: Mutex<WalSyncs>,
}

/// Traffic with one peer.
#[derive(Debug)]
pub struct PeerTraffic {
    /// Message bytes sent to the peer.
    pub sent_bytes: Counter,
    /// Message bytes received from the peer.
    pub received_bytes: Counter,
    /// RPCs to the peer that failed.
    pub sent_failures: Counter,
    /// Heartbeat round trips, in seconds.
    pub round_trip: Histogram,
}

impl Default for PeerTraffic {
    fn default() -> Self {
        Self {
            sent_bytes: Counter::default(),
            received_bytes: Counter::default(),
            sent_failures: Counter::default(),
            // etcd's buckets for etcd_network_peer_round_trip_time_seconds.
            round_trip: Histogram::exponential(0.0001, 2.0, 16),
        }
    }
}

impl Default for NodeMetrics {
    fn default() -> Self {
        Self {
            leader_changes: Counter::default(),
            proposals_pending: Gauge::default(),
            proposals_failed: Counter::default(),
            // etcd's buckets for backend commit and WAL fsync durations.
            backend_commit: Histogram::exponential(0.001, 2.0, 14),
            slow_applies: Counter::default(),
            read_index_reads: Counter::default(),
            read_index_rounds: Counter::default(),
            read_indexes_failed: Counter::default(),
            apply_entry: Histogram::exponential(0.0001, 2.0, 16),
            // etcd's buckets for etcd_disk_backend_snapshot_duration_seconds.
            snapshot_build: Histogram::exponential(0.01, 2.0, 17),
            snapshot_write: Histogram::exponential(0.01, 2.0, 17),
            snapshot_bytes: Gauge::default(),
            snapshot_raw_bytes: Gauge::default(),
            wal_fsync: Histogram::exponential(0.001, 2.0, 14),
            wal_write_bytes: Gauge::default(),
            peers: Mutex::default(),
            wal: Mutex::default(),
        }
    }
}

impl NodeMetrics {
    /// The traffic counters for peer `id` (created on first use).
    pub fn peer(&self, id: u64) -> std::sync::Arc<PeerTraffic> {
        let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        peers.entry(id).or_default().clone()
    }

    /// Every peer traffic has been seen with, by id.
    pub fn peers(&self) -> Vec<(u64, std::sync::Arc<PeerTraffic>)> {
        let peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        peers.iter().map(|(id, t)| (*id, t.clone())).collect()
    }

    /// Takes in the WAL flush worker's counters (called every few milliseconds).
    pub fn note_wal(&self, stats: FlushStats) {
        let mut wal = self.wal.lock().unwrap_or_else(|e| e.into_inner());
        wal.poll(stats, &self.wal_fsync);
        self.wal_write_bytes
            .set(i64::try_from(stats.write_bytes).unwrap_or(i64::MAX));
    }
}

/// Turns the WAL's cumulative fsync counters into histogram observations.
///
/// The flush worker keeps totals (syncs, their summed time) and the last sync's time, not
/// each sync's: a poll that finds one new sync records it exactly; one that finds `n` records
/// the last exactly and the other `n - 1` at their mean. The histogram's sum and count are
/// exact either way; only how the `n - 1` spread over buckets is estimated.
#[derive(Debug, Default)]
struct WalSyncs {
    syncs: u64,
    sync_us: u64,
}

impl WalSyncs {
    fn poll(&mut self, stats: FlushStats, into: &Histogram) {
        let new = stats.syncs.saturating_sub(self.syncs);
        let new_us = stats.sync_us.saturating_sub(self.sync_us);
        self.syncs = stats.syncs;
        self.sync_us = stats.sync_us;
        if new == 0 {
            return;
        }
        let last = stats.last_sync_us.min(new_us);
        into.observe_duration(Duration::from_micros(last));
        if new > 1 {
            let rest = (new_us - last) as f64 / (new - 1) as f64;
            for _ in 1..new.min(10_000) {
                into.observe(rest / 1e6);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wal_syncs_keep_sum_and_count_exact() {
        let h = Histogram::exponential(0.001, 2.0, 14);
        let mut w = WalSyncs::default();
        let stats = |syncs, sync_us, last_sync_us| FlushStats {
            syncs,
            sync_us,
            last_sync_us,
            write_bytes: 0,
        };
        w.poll(stats(1, 1500, 1500), &h);
        assert_eq!(h.count(), 1);
        w.poll(stats(1, 1500, 1500), &h); // nothing new
        assert_eq!(h.count(), 1);
        w.poll(stats(4, 1500 + 600 + 300 + 300, 600), &h);
        assert_eq!(h.count(), 4);
        assert!((h.sum() - 0.0027).abs() < 1e-9, "{}", h.sum());
        // 1.5 ms in the 2 ms bucket; 0.6 and two at 0.3 ms in the 1 ms bucket.
        let c = h.cumulative();
        assert_eq!((c[0].1, c[1].1), (3, 4));
    }
}
