//! Linearizable reads: a read index from the leader, then this member's own store once it
//! has applied that far.

use openraft::ReadPolicy;
use openraft::error::RaftError;
use raftkv_proto::raftkvpb::ReadIndexRequest;
use tokio::time::Instant;

use super::RaftNode;
use super::routing::{IfCallFails, with_deadline};
use crate::error::NodeError;

impl RaftNode {
    /// Waits until a read on this member's store is linearizable: the leader confirms it
    /// still leads (ReadIndex) and this member has applied up to the read index.
    pub async fn read_barrier(&self) -> Result<(), NodeError> {
        let deadline = Instant::now() + self.config.request_timeout;
        let index = self
            .on_leader(
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
            .await?;
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
