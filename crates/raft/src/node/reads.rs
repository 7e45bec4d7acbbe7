//! Linearizable reads: a read index from the leader, then this member's own store once it
//! has applied that far.
//!
//! Reads share read indexes as etcd's do (its `linearizableReadLoop`): every read waiting
//! when a round starts is answered by that round's one ReadIndex, and reads that arrive
//! while a round is out wait for the next. A round starts only after each read it answers
//! arrived, so the index it returns is one the read may use; under many clients this is
//! one ReadIndex (and one heartbeat round on the leader) per round instead of one per read.
//! A read with no other in flight runs its own round at once, without the hand-off.

use std::sync::Weak;
use std::sync::atomic::{AtomicUsize, Ordering};

use openraft::ReadPolicy;
use openraft::error::RaftError;
use raftkv_proto::raftkvpb::ReadIndexRequest;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use super::RaftNode;
use super::routing::{IfCallFails, with_deadline};
use crate::error::NodeError;

/// A read waiting for a round's read index.
pub(super) type ReadWaiter = oneshot::Sender<Result<u64, NodeError>>;

impl RaftNode {
    /// Waits until a read on this member's store is linearizable: the leader confirms it
    /// still leads (ReadIndex) and this member has applied up to the read index.
    pub async fn read_barrier(&self) -> Result<(), NodeError> {
        let deadline = Instant::now() + self.config.request_timeout;
        self.metrics.read_index_reads.inc();
        let reading = Reading::start(&self.reads_in_flight);
        let index = if reading.alone {
            // No other read in flight: nothing to share, so no hand-off to the read loop
            // (one client reading one request after another pays none).
            self.metrics.read_index_rounds.inc();
            let result = self.read_index_round().await;
            if result.is_err() {
                self.metrics.read_indexes_failed.inc();
            }
            result?
        } else {
            let (waiter, answer) = oneshot::channel();
            self.reads.send(waiter).map_err(|_| NodeError::STOPPED)?;
            match tokio::time::timeout_at(deadline, answer).await {
                Err(_) => return Err(NodeError::TIMEOUT),
                // The read loop ended: the member is stopping.
                Ok(Err(_)) => return Err(NodeError::STOPPED),
                Ok(Ok(index)) => index?,
            }
        };
        tracing::debug!(index, "read index: waiting to have applied it");
        // On the leader this holds already (ensure_linearizable waits for the apply).
        let remaining = deadline.saturating_duration_since(Instant::now());
        self.raft
            .wait(Some(remaining))
            .applied_index_at_least(Some(index), "read index")
            .await
            .map(|_| ())
            .map_err(|_| NodeError::TIMEOUT)
    }

    /// One round: a read index from the leader (this member's own if it leads), within
    /// the request timeout.
    async fn read_index_round(&self) -> Result<u64, NodeError> {
        let deadline = Instant::now() + self.config.request_timeout;
        self.on_leader(
            deadline,
            IfCallFails::Retry,
            || self.read_index_as_leader(),
            |mut leader, left| {
                let request = with_deadline(ReadIndexRequest {}, left);
                async move {
                    leader
                        .read_index(request)
                        .await
                        .map(|r| r.into_inner().index)
                }
            },
        )
        .await
    }

    /// Waits (at most the request timeout) until this member has applied log index `index`.
    pub async fn wait_applied(&self, index: u64) -> Result<(), NodeError> {
        self.raft
            .wait(Some(self.config.request_timeout))
            .applied_index_at_least(Some(index), "an auth token's entry")
            .await
            .map(|_| ())
            .map_err(|_| NodeError::TIMEOUT)
    }

    /// The read index, on the leader (the peer service's ReadIndex).
    pub(super) async fn read_index_as_leader(&self) -> Result<u64, NodeError> {
        match tokio::time::timeout(
            self.config.request_timeout,
            self.raft.ensure_linearizable(ReadPolicy::ReadIndex),
        )
        .await
        {
            Err(_) => Err(NodeError::TIMEOUT),
            Ok(Ok(read)) => Ok(read.index()),
            Ok(Err(RaftError::APIError(_))) => Err(NodeError::NotLeader),
            Ok(Err(RaftError::Fatal(_))) => Err(NodeError::STOPPED),
        }
    }
}

/// A read barrier in flight, counted while it lives (however it ends).
struct Reading<'a> {
    count: &'a AtomicUsize,
    /// No other barrier was in flight when this one began.
    alone: bool,
}

impl<'a> Reading<'a> {
    fn start(count: &'a AtomicUsize) -> Self {
        let alone = count.fetch_add(1, Ordering::AcqRel) == 0;
        Self { count, alone }
    }
}

impl Drop for Reading<'_> {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The member's read loop: takes every read waiting, runs one round for them all, answers
/// them, and again, until the member stops.
pub(super) async fn read_loop(
    node: Weak<RaftNode>,
    mut waiting: mpsc::UnboundedReceiver<ReadWaiter>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let first = tokio::select! {
            waiter = waiting.recv() => match waiter {
                Some(waiter) => waiter,
                None => return,
            },
            _ = stop.wait_for(|stopped| *stopped) => return,
        };
        let mut round = vec![first];
        while let Ok(waiter) = waiting.try_recv() {
            round.push(waiter);
        }
        // Reads that gave up (timed out, or their client went away) need no index.
        round.retain(|waiter| !waiter.is_closed());
        if round.is_empty() {
            continue;
        }
        let Some(node) = node.upgrade() else { return };
        node.metrics.read_index_rounds.inc();
        let result = tokio::select! {
            result = node.read_index_round() => result,
            _ = stop.wait_for(|stopped| *stopped) => Err(NodeError::STOPPED),
        };
        if result.is_err() {
            node.metrics.read_indexes_failed.inc();
        }
        drop(node);
        for waiter in round {
            let _ = waiter.send(result.clone());
        }
        if *stop.borrow() {
            return;
        }
    }
}
