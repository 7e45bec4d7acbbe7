//! Proposals: a write from any member goes to the leader, which checks it as it would a
//! client's and puts it in the log.

use openraft::error::{ClientWriteError, RaftError};
use raftkv_proto::raftkvpb::{Command, CommandResponse, command_response};
use raftkv_storage::mvcc::validate;
use tokio::time::Instant;

use super::RaftNode;
use super::routing::{IfCallFails, with_deadline};
use crate::error::NodeError;
use crate::types::Request;

/// Counts a proposal as pending while it lives (a cancelled request's too).
struct Pending<'a>(&'a crate::metrics::NodeMetrics);

impl<'a> Pending<'a> {
    fn new(metrics: &'a crate::metrics::NodeMetrics) -> Self {
        metrics.proposals_pending.inc();
        Self(metrics)
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        self.0.proposals_pending.dec();
    }
}

impl RaftNode {
    /// Applies a write through Raft and returns etcd's response. From a follower the write is
    /// forwarded to the leader. A write whose outcome is unknown fails with "request timed
    /// out" or "leader changed" — never with an error that claims it was not applied.
    pub async fn write(&self, cmd: Command) -> Result<CommandResponse, NodeError> {
        self.admit(&cmd)?;
        let pending = Pending::new(&self.metrics);
        let result = self.write_admitted(cmd).await;
        if matches!(&result, Err(e) if !matches!(e, NodeError::Refused(_))) {
            self.metrics.proposals_failed.inc();
        }
        drop(pending);
        result
    }

    async fn write_admitted(&self, cmd: Command) -> Result<CommandResponse, NodeError> {
        let deadline = Instant::now() + self.config.request_timeout;
        let (answer, index) = self
            .on_leader(
                deadline,
                IfCallFails::Unknown,
                // Here the answer comes once this member applied it.
                || async {
                    let (answer, _) = self.propose(cmd.clone(), deadline).await?;
                    Ok((answer, None))
                },
                |mut leader, left| {
                    let request = with_deadline(cmd.clone(), left);
                    async move {
                        let response = leader.forward(request).await?;
                        let index = crate::network::applied_index(response.metadata());
                        Ok((response.into_inner(), index))
                    }
                },
            )
            .await?;
        // As in etcd, a write answers once the member that took it has applied it, so the
        // client's next serializable read or watch there sees it. A leader that named no
        // index (none is sent for a refusal) leaves nothing to wait for.
        if let Some(index) = index {
            let remaining = deadline.saturating_duration_since(Instant::now());
            self.raft
                .wait(Some(remaining))
                .applied_index_at_least(Some(index), "a forwarded write")
                .await
                .map_err(|_| NodeError::TIMEOUT)?;
        }
        Ok(answer)
    }

    /// A write forwarded by a follower, on the leader: checked as a client's request (a peer
    /// is no more trusted than a client to put only well-formed commands in the log), then
    /// proposed. The answer, and the log index it was applied at.
    pub(super) async fn write_as_leader(
        &self,
        cmd: Command,
    ) -> Result<(CommandResponse, Option<u64>), NodeError> {
        if !self.is_leader().await {
            return Err(NodeError::NotLeader);
        }
        validate::check_command(&cmd, self.config.max_request_bytes, self.config.max_txn_ops)?;
        self.admit(&cmd)?;
        self.propose(cmd, Instant::now() + self.config.request_timeout)
            .await
    }

    /// Proposes `cmd` on this member, which should lead; the state machine's answer and the
    /// log index this member applied it at.
    async fn propose(
        &self,
        cmd: Command,
        deadline: Instant,
    ) -> Result<(CommandResponse, Option<u64>), NodeError> {
        match tokio::time::timeout_at(deadline, self.raft.client_write(Request(cmd))).await {
            Err(_) => Err(NodeError::TIMEOUT),
            Ok(Ok(resp)) => {
                tracing::debug!(index = resp.log_id.index, "committed and applied");
                let answer = resp.data.0.map_err(NodeError::Refused)?;
                if let Some(command_response::Op::LeaseGrant(g)) = &answer.op {
                    self.lease_granted(g.id, g.ttl);
                }
                Ok((answer, Some(resp.log_id.index)))
            }
            // Not proposed: safe to send again to whoever leads now.
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_)))) => {
                Err(NodeError::NotLeader)
            }
            Ok(Err(RaftError::APIError(ClientWriteError::LogEntryDiscarded(_)))) => {
                Err(NodeError::LEADER_CHANGED)
            }
            Ok(Err(RaftError::APIError(e))) => Err(NodeError::internal(e)),
            // Raft stopped with the entry possibly in the log and replicated: the rest of the
            // cluster may still commit it, so the outcome is unknown.
            Ok(Err(RaftError::Fatal(_))) => Err(NodeError::TIMEOUT),
        }
    }

    /// Whether this member leads now.
    pub(super) async fn is_leader(&self) -> bool {
        self.raft.current_leader().await == Some(self.id)
    }

    /// Refuses a write that takes space while a NOSPACE alarm is up, or while this member's
    /// own disk is below its reserve (before its alarm has gone through the log).
    fn admit(&self, cmd: &Command) -> Result<(), NodeError> {
        use raftkv_proto::etcdserverpb::AlarmType;
        if validate::consumes_space(cmd)
            && (self.space.is_low() || self.store.has_alarm(AlarmType::Nospace as i32))
        {
            return Err(NodeError::from(raftkv_storage::MvccError::NoSpace));
        }
        Ok(())
    }
}
