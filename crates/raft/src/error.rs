//! What can go wrong serving a request, and the one place it becomes a gRPC status with
//! etcd's code and exact message (`../shared/ETCD-COMPAT.md`).

use raftkv_storage::MvccError;

use crate::types::{Refusal, RefusalCode};

/// Why a member could not serve a request.
#[derive(Debug, Clone, thiserror::Error)]
pub enum NodeError {
    /// The request was refused with etcd's error (not applied, or applied with no effect).
    #[error("{}", .0.message)]
    Refused(Refusal),
    /// No leader is known: nothing was proposed.
    #[error("etcdserver: no leader")]
    NoLeader,
    /// Leadership changed while the request was in flight: it may or may not be applied.
    #[error("etcdserver: leader changed")]
    LeaderChanged,
    /// No answer in time: the request may or may not be applied.
    #[error("etcdserver: request timed out")]
    Timeout,
    /// The member is shutting down.
    #[error("etcdserver: server stopped")]
    Stopped,
    /// A membership request that does not fit the cluster (unknown member, …): code and
    /// message as etcd's.
    #[error("{message}")]
    Membership {
        /// gRPC code.
        code: tonic::Code,
        /// etcd's message.
        message: String,
    },
    /// A status passed through from the leader, already in etcd's terms.
    #[error("{}", .0.message())]
    Remote(tonic::Status),
    /// A failure of this member (storage, internal state).
    #[error("{0}")]
    Internal(String),
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
                };
                tonic::Status::new(code, message)
            }
            NodeError::NoLeader
            | NodeError::LeaderChanged
            | NodeError::Timeout
            | NodeError::Stopped => tonic::Status::unavailable(message),
            NodeError::Membership { code, .. } => tonic::Status::new(code, message),
            NodeError::Remote(status) => status,
            NodeError::Internal(_) => tonic::Status::internal(message),
        }
    }
}
