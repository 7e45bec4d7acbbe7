//! What can go wrong serving a request: [`NodeError`], etcd's server errors ([`EtcdError`],
//! the one table of their codes and exact messages — etcd keeps them in `errors.go`), and the
//! one mapping to a gRPC status (etcd's `v3rpc/util.go`). The store's refusals keep their
//! own messages in raftkv-storage's `MvccError` (etcd's `mvcc` errors) and reach clients
//! through [`NodeError::Refused`].
//!
//! Between members, errors travel as gRPC statuses tagged with [`ERROR_KIND_HEADER`], so a
//! follower tells "not the leader, retry" from an etcd answer and from a failed connection
//! by type, never by a message's text.

use raftkv_storage::MvccError;

use crate::types::{Refusal, RefusalCode};

/// Metadata on a status a member's peer service answers with, naming the error's kind.
/// A status without it did not come from a member's handler: the call itself failed.
pub const ERROR_KIND_HEADER: &str = "raftkv-error";

/// etcd's server errors that raftkv answers with: gRPC code and exact message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EtcdError {
    /// No leader is known.
    NoLeader,
    /// Leadership changed while the request was in flight (outcome unknown).
    LeaderChanged,
    /// No answer in time (outcome unknown).
    Timeout,
    /// The member is shutting down.
    Stopped,
    /// A request only the leader serves, on another member.
    NotLeader,
    /// A member id the cluster does not have.
    MemberNotFound,
    /// `member add` without peer URLs.
    NoPeerUrls,
    /// `member add` of peer URLs a member has.
    PeerUrlsExist,
    /// `member add` whose id is taken.
    MemberIdExists,
    /// `member promote` of a voter.
    NotALearner,
    /// `member promote` of a learner still behind.
    LearnerNotReady,
    /// `move-leader` to a member that is not a voter.
    BadLeaderTransferee,
    /// `move-leader` to a member that cannot take over now.
    LeaderTransferTimeout,
    /// A reconfiguration that leaves too few started members (`--strict-reconfig-check`).
    NotEnoughStartedMembers,
    /// A reconfiguration while the quorum is not all connected (`--strict-reconfig-check`).
    Unhealthy,
    /// A request a learner does not serve.
    LearnerRpc,
}

impl EtcdError {
    /// etcd's gRPC code and message.
    pub fn parts(self) -> (tonic::Code, &'static str) {
        use tonic::Code;
        match self {
            Self::NoLeader => (Code::Unavailable, "etcdserver: no leader"),
            Self::LeaderChanged => (Code::Unavailable, "etcdserver: leader changed"),
            Self::Timeout => (Code::Unavailable, "etcdserver: request timed out"),
            Self::Stopped => (Code::Unavailable, "etcdserver: server stopped"),
            Self::NotLeader => (Code::FailedPrecondition, "etcdserver: not leader"),
            Self::MemberNotFound => (Code::NotFound, "etcdserver: member not found"),
            Self::NoPeerUrls => (Code::InvalidArgument, "etcdserver: no peer URLs given"),
            Self::PeerUrlsExist => (
                Code::FailedPrecondition,
                "etcdserver: Peer URLs already exists",
            ),
            Self::MemberIdExists => (
                Code::FailedPrecondition,
                "etcdserver: member ID already exist",
            ),
            Self::NotALearner => (
                Code::FailedPrecondition,
                "etcdserver: can only promote a learner member",
            ),
            Self::LearnerNotReady => (
                Code::FailedPrecondition,
                "etcdserver: can only promote a learner member which is in sync with leader",
            ),
            Self::BadLeaderTransferee => (
                Code::FailedPrecondition,
                "etcdserver: bad leader transferee",
            ),
            Self::LeaderTransferTimeout => (
                Code::Unavailable,
                "etcdserver: request timed out, leader transfer took too long",
            ),
            // etcd sends this one as Unknown: the error has no gRPC status of its own there.
            Self::NotEnoughStartedMembers => (
                Code::Unknown,
                "etcdserver: re-configuration failed due to not enough started members",
            ),
            Self::Unhealthy => (Code::Unavailable, "etcdserver: unhealthy cluster"),
            Self::LearnerRpc => (
                Code::Unavailable,
                "etcdserver: rpc not supported for learner",
            ),
        }
    }
}

impl std::fmt::Display for EtcdError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.parts().1)
    }
}

impl std::error::Error for EtcdError {}

/// Why a member could not serve a request.
#[derive(Debug, Clone, thiserror::Error)]
pub enum NodeError {
    /// The store refused the request with etcd's error (not applied, or applied with no
    /// effect, alike on every member).
    #[error("{}", .0.message)]
    Refused(Refusal),
    /// One of etcd's server errors.
    #[error(transparent)]
    Etcd(#[from] EtcdError),
    /// This member is not the leader a leader-only request needs: nothing was proposed, so
    /// the caller retries with the current leader. Never reaches a client.
    #[error("raftkv: not the leader")]
    NotLeader,
    /// A status the leader answered with, already in etcd's terms, passed through.
    #[error("{}", .0.message())]
    Remote(tonic::Status),
    /// A call to another member failed (connection refused or lost, reset, deadline): it
    /// may or may not have reached the member.
    #[error("calling a member failed: {}", .0.message())]
    Transport(tonic::Status),
    /// The member's configuration or data dir cannot be used.
    #[error("{0}")]
    Config(String),
    /// This member's storage failed (its data dir, store, log or snapshots), doing `context`.
    #[error("{context}: {source}")]
    Storage {
        /// What the member was doing.
        context: &'static str,
        /// The failure underneath.
        #[source]
        source: std::sync::Arc<dyn std::error::Error + Send + Sync>,
    },
    /// A failure of this member's storage or Raft (not the request's fault).
    #[error("{0}")]
    Internal(String),
}

impl NodeError {
    /// etcd's "no leader".
    pub const NO_LEADER: NodeError = NodeError::Etcd(EtcdError::NoLeader);
    /// etcd's "leader changed".
    pub const LEADER_CHANGED: NodeError = NodeError::Etcd(EtcdError::LeaderChanged);
    /// etcd's "request timed out".
    pub const TIMEOUT: NodeError = NodeError::Etcd(EtcdError::Timeout);
    /// etcd's "server stopped".
    pub const STOPPED: NodeError = NodeError::Etcd(EtcdError::Stopped);

    /// A failure of this member that is not its storage's (Raft, an internal state).
    pub fn internal(e: impl std::fmt::Display) -> Self {
        NodeError::Internal(e.to_string())
    }

    /// A failure of this member's storage while doing `context`, keeping its cause.
    pub fn storage<E>(context: &'static str) -> impl FnOnce(E) -> Self
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        move |e| NodeError::Storage {
            context,
            source: std::sync::Arc::new(e),
        }
    }

    /// The kind a peer status carries in [`ERROR_KIND_HEADER`].
    fn kind(&self) -> &'static str {
        match self {
            NodeError::NotLeader => "not-leader",
            NodeError::Internal(_) | NodeError::Config(_) | NodeError::Storage { .. } => "internal",
            _ => "etcd",
        }
    }

    /// This error as a member's peer service answers it: etcd's status, tagged with its kind.
    pub fn to_peer_status(&self) -> tonic::Status {
        let mut status = tonic::Status::from(self.clone());
        if let Ok(kind) = self.kind().parse() {
            status.metadata_mut().insert(ERROR_KIND_HEADER, kind);
        }
        status
    }

    /// An error status from another member's peer service: "not the leader" by its tag, an
    /// answer (passed through as etcd's) if tagged otherwise, a failed call if untagged.
    pub fn from_peer_status(status: tonic::Status) -> Self {
        let kind = status
            .metadata()
            .get(ERROR_KIND_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        match kind.as_deref() {
            Some("not-leader") => NodeError::NotLeader,
            Some(_) => NodeError::Remote(status),
            None if status.code() == tonic::Code::DeadlineExceeded => NodeError::TIMEOUT,
            None => NodeError::Transport(status),
        }
    }
}

impl From<MvccError> for NodeError {
    fn from(e: MvccError) -> Self {
        if e.is_request_error() {
            NodeError::Refused(Refusal {
                code: e.code().into(),
                message: e.to_string(),
            })
        } else {
            NodeError::Internal(e.to_string())
        }
    }
}

/// The one mapping of raftkv's errors to the gRPC statuses clients see.
impl From<NodeError> for tonic::Status {
    fn from(e: NodeError) -> Self {
        let message = e.to_string();
        match e {
            NodeError::Refused(r) => {
                let code = match r.code {
                    RefusalCode::InvalidArgument => tonic::Code::InvalidArgument,
                    RefusalCode::OutOfRange => tonic::Code::OutOfRange,
                    RefusalCode::NotFound => tonic::Code::NotFound,
                    RefusalCode::Internal => tonic::Code::Internal,
                    RefusalCode::ResourceExhausted => tonic::Code::ResourceExhausted,
                    RefusalCode::FailedPrecondition => tonic::Code::FailedPrecondition,
                    RefusalCode::PermissionDenied => tonic::Code::PermissionDenied,
                    RefusalCode::Unauthenticated => tonic::Code::Unauthenticated,
                    RefusalCode::Unknown => tonic::Code::Unknown,
                    RefusalCode::DataLoss => tonic::Code::DataLoss,
                };
                tonic::Status::new(code, message)
            }
            NodeError::Etcd(e) => tonic::Status::new(e.parts().0, message),
            // Retried before it could reach a client; if it ever does, the leader moved.
            NodeError::NotLeader => tonic::Status::from(NodeError::LEADER_CHANGED),
            NodeError::Remote(status) => status,
            // The member called may have taken the request: as etcd, say "timed out".
            NodeError::Transport(_) => tonic::Status::from(NodeError::TIMEOUT),
            NodeError::Config(_) | NodeError::Internal(_) | NodeError::Storage { .. } => {
                tonic::Status::internal(message)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_statuses_keep_their_kind() {
        let back = NodeError::from_peer_status(NodeError::NotLeader.to_peer_status());
        assert!(matches!(back, NodeError::NotLeader));
        let back = NodeError::from_peer_status(NodeError::TIMEOUT.to_peer_status());
        let status = tonic::Status::from(back);
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert_eq!(status.message(), "etcdserver: request timed out");
        // An etcd message from a failed call is still a failed call: the tag decides.
        let transport = tonic::Status::unavailable("etcdserver: no leader");
        assert!(matches!(
            NodeError::from_peer_status(transport),
            NodeError::Transport(_)
        ));
    }

    #[test]
    fn etcd_errors_have_etcds_codes() {
        let status = tonic::Status::from(NodeError::Etcd(EtcdError::NotEnoughStartedMembers));
        assert_eq!(status.code(), tonic::Code::Unknown);
        let status = tonic::Status::from(NodeError::NO_LEADER);
        assert_eq!(
            (status.code(), status.message()),
            (tonic::Code::Unavailable, "etcdserver: no leader")
        );
    }
}
