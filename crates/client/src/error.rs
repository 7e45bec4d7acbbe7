//! What a client call can fail with.

/// A failed call. `Display` is what etcdctl prints after "Error: ".
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// No endpoints were given.
    #[error("no endpoints given")]
    NoEndpoints,
    /// An endpoint that is not `host:port` or a URL.
    #[error("invalid endpoint {endpoint:?}: {reason}")]
    InvalidEndpoint {
        /// The endpoint as given.
        endpoint: String,
        /// Why it does not parse.
        reason: String,
    },
    /// No endpoint could be reached (the last one's reason).
    #[error("{endpoint}: {reason}")]
    Unreachable {
        /// The endpoint tried last.
        endpoint: String,
        /// Why it could not be reached.
        reason: String,
    },
    /// TLS settings that cannot be used (unreadable or malformed files), with etcd's text.
    #[error("{0}")]
    Tls(String),
    /// No answer within the command timeout (clientv3's wording).
    #[error("context deadline exceeded")]
    Timeout,
    /// The server answered with an error: etcd's code and message.
    #[error("{}", .0.message())]
    Status(tonic::Status),
    /// A watch was canceled because the history it needs was compacted away: it may
    /// start again at `compact_revision` at the earliest.
    #[error("etcdserver: mvcc: required revision has been compacted")]
    Compacted {
        /// The revision the store is compacted to.
        compact_revision: i64,
    },
    /// The server refused or ended a watch, with its reason (etcd's
    /// `mvcc: watcher range is empty`, say). Without a reason, clientv3's wording for it.
    #[error("{}", if .reason.is_empty() { "etcdserver: mvcc: required revision is a future revision" } else { .reason.as_str() })]
    WatchCanceled {
        /// The server's cancel reason (empty when it gave none).
        reason: String,
    },
    /// The server ended the watch stream (clientv3 reports the end of the stream as `EOF`),
    /// or a request went to a watch session that had already ended.
    #[error("EOF")]
    WatchClosed,
}

impl Error {
    /// The gRPC code of an error the server answered with.
    pub fn code(&self) -> Option<tonic::Code> {
        match self {
            Error::Status(status) => Some(status.code()),
            _ => None,
        }
    }
}

impl From<tonic::Status> for Error {
    fn from(status: tonic::Status) -> Self {
        Error::Status(status)
    }
}
