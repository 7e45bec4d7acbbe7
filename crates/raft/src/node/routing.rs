//! Who leads, and the one way a request reaches the leader.

use std::future::Future;
use std::time::Duration;

use openraft::rt::WatchReceiver;
use raftkv_proto::raftkvpb::peer_client::PeerClient;
use tokio::time::Instant;

use super::RaftNode;
use crate::error::NodeError;
use crate::network::PeerChannel;

/// What [`RaftNode::on_leader`] does when a call to the leader fails in transit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum IfCallFails {
    /// The leader may have taken it (a write, a membership change): the outcome is unknown,
    /// which the client hears as etcd's "request timed out".
    Unknown,
    /// Asking again changes nothing (a read index, a publish): try again.
    Retry,
}

impl RaftNode {
    /// Waits until a leader is known, or the deadline passes.
    ///
    /// An election settles within about 1.2 election timeouts, so a member that has known no
    /// leader for twice that answers "no leader" rather than holding the request until its
    /// deadline.
    pub(super) async fn leader(&self, deadline: Instant) -> Result<u64, NodeError> {
        let deadline = deadline.min(Instant::now() + self.config.election_timeout * 2);
        let mut rx = self.raft.metrics();
        loop {
            if *self.stop_peer.borrow() {
                return Err(NodeError::STOPPED);
            }
            if let Some(leader) = rx.borrow_watched().current_leader {
                return Ok(leader);
            }
            if tokio::time::timeout_at(deadline, rx.changed())
                .await
                .is_err()
            {
                return Err(NodeError::NO_LEADER);
            }
        }
    }

    /// Runs a leader-only request where the leader is: `here` if this member leads, else
    /// `there` with a client to the leader's peer service and the time left. While the
    /// leadership moves — no leader yet, a leader this member cannot name, an answer that the
    /// member asked is not the leader — it waits a moment and tries again, until `deadline`.
    /// A call that fails in transit is retried or reported as of unknown outcome, as
    /// `if_fails` says. Everything else is the answer.
    pub(super) async fn on_leader<T, H, HF, R, RF>(
        &self,
        deadline: Instant,
        if_fails: IfCallFails,
        mut here: H,
        mut there: R,
    ) -> Result<T, NodeError>
    where
        H: FnMut() -> HF,
        HF: Future<Output = Result<T, NodeError>>,
        R: FnMut(PeerClient<PeerChannel>, Duration) -> RF,
        RF: Future<Output = Result<T, tonic::Status>>,
    {
        loop {
            let leader = self.leader(deadline).await?;
            let result = if leader == self.id {
                tracing::debug!("this member leads: serving here");
                here().await
            } else if let Some(target) = self.member(leader) {
                tracing::debug!(leader = %super::hex(leader), "asking the leader");
                let client = self.channels.peer(&target).map_err(NodeError::internal)?;
                let left = deadline.saturating_duration_since(Instant::now());
                match tokio::time::timeout_at(deadline, there(client, left)).await {
                    Err(_) => Err(NodeError::TIMEOUT),
                    Ok(Ok(answer)) => Ok(answer),
                    Ok(Err(status)) => Err(NodeError::from_peer_status(status)),
                }
            } else {
                Err(NodeError::NotLeader)
            };
            match result {
                Err(NodeError::NotLeader) => {
                    tracing::debug!("leadership moved: trying again");
                    pause_before_retry(deadline).await?;
                }
                Err(NodeError::Transport(_)) if if_fails == IfCallFails::Retry => {
                    pause_before_retry(deadline).await?;
                }
                Err(NodeError::Transport(_)) => return Err(NodeError::TIMEOUT),
                other => return other,
            }
        }
    }
}

/// Waits a moment before trying again, or fails with "request timed out" if the deadline
/// would pass.
pub(super) async fn pause_before_retry(deadline: Instant) -> Result<(), NodeError> {
    let wake = Instant::now() + Duration::from_millis(20);
    if wake >= deadline {
        return Err(NodeError::TIMEOUT);
    }
    tokio::time::sleep_until(wake).await;
    Ok(())
}

/// A request to another member, carrying the time left as its gRPC deadline.
pub(super) fn with_deadline<T>(message: T, left: Duration) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(left);
    request
}
