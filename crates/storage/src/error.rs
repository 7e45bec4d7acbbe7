//! Errors of the storage layer.
//!
//! [`MvccError`]'s `Display` is etcd's exact message for every case a client can see, so the
//! server maps it to a gRPC status without rewording (see [`MvccError::code`]).

use std::io;

/// Which gRPC status code etcd uses for an error, without depending on a gRPC library here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// `InvalidArgument`
    InvalidArgument,
    /// `OutOfRange`
    OutOfRange,
    /// `NotFound`
    NotFound,
    /// `Internal`
    Internal,
    /// `ResourceExhausted`
    ResourceExhausted,
    /// `FailedPrecondition`
    FailedPrecondition,
    /// `PermissionDenied`
    PermissionDenied,
    /// `Unauthenticated`
    Unauthenticated,
    /// `Unknown`: an error etcd's gRPC layer does not translate.
    Unknown,
    /// `DataLoss`
    DataLoss,
}

/// An etcd request that the MVCC store refuses, or a storage failure.
#[derive(Debug, thiserror::Error)]
pub enum MvccError {
    /// A read or compaction below the compacted revision.
    #[error("etcdserver: mvcc: required revision has been compacted")]
    Compacted,
    /// A read or compaction above the current revision.
    #[error("etcdserver: mvcc: required revision is a future revision")]
    FutureRevision,
    /// An empty key.
    #[error("etcdserver: key is not provided")]
    EmptyKey,
    /// `ignore_value` / `ignore_lease` on a key that does not exist.
    #[error("etcdserver: key not found")]
    KeyNotFound,
    /// A lease id that does not exist.
    #[error("etcdserver: requested lease not found")]
    LeaseNotFound,
    /// A grant with a TTL above etcd's maximum.
    #[error("etcdserver: too large lease TTL")]
    LeaseTtlTooLarge,
    /// A lease command no client request produces (an id or TTL out of range).
    #[error("raftkv: malformed lease command")]
    BadLease,
    /// A grant naming a lease id that exists.
    #[error("etcdserver: lease already exists")]
    LeaseExist,
    /// A txn with more operations than `--max-txn-ops` allows.
    #[error("etcdserver: too many operations in txn request")]
    TooManyOps,
    /// A request larger than `--max-request-bytes`.
    #[error("etcdserver: request is too large")]
    RequestTooLarge,
    /// A write refused while a NOSPACE alarm is up (or this member's disk is nearly full).
    #[error("etcdserver: mvcc: database space exceeded")]
    NoSpace,
    /// A write applied while a CORRUPT alarm is up: etcd's corrupt applier refuses puts,
    /// deletes, txns, compactions, lease grants and revokes until the alarm is disarmed.
    #[error("etcdserver: corrupt cluster")]
    CorruptCluster,
    /// An alarm request that is not a raise or clear of a known alarm.
    #[error("raftkv: invalid alarm request")]
    BadAlarm,
    /// A command with no operation in it (only a hostile peer sends one).
    #[error("raftkv: command without an operation")]
    EmptyCommand,
    /// A txn that writes one key twice (or puts a key it also deletes).
    #[error("etcdserver: duplicate key given in txn request")]
    DuplicateKey,
    /// `ignore_value` with a value.
    #[error("etcdserver: value is provided")]
    ValueProvided,
    /// `ignore_lease` with a lease.
    #[error("etcdserver: lease is provided")]
    LeaseProvided,
    /// An auth request without a user name.
    #[error("etcdserver: user name is empty")]
    UserEmpty,
    /// UserAdd of a name that exists.
    #[error("etcdserver: user name already exists")]
    UserAlreadyExist,
    /// A user that does not exist.
    #[error("etcdserver: user name not found")]
    UserNotFound,
    /// RoleAdd of a name that exists.
    #[error("etcdserver: role name already exists")]
    RoleAlreadyExist,
    /// A role that does not exist.
    #[error("etcdserver: role name not found")]
    RoleNotFound,
    /// RoleAdd without a name.
    #[error("etcdserver: role name is empty")]
    RoleEmpty,
    /// AuthEnable without a `root` user.
    #[error("etcdserver: root user does not exist")]
    RootUserNotExist,
    /// AuthEnable while `root` lacks the `root` role.
    #[error("etcdserver: root user does not have root role")]
    RootRoleNotExist,
    /// UserRevokeRole of a role the user does not have.
    #[error("etcdserver: role is not granted to the user")]
    RoleNotGranted,
    /// RoleRevokePermission of a permission the role does not have.
    #[error("etcdserver: permission is not granted to the role")]
    PermissionNotGranted,
    /// Deleting `root` (user or role), or revoking `root` from `root`, while auth is on.
    #[error("etcdserver: invalid auth management")]
    InvalidAuthMgmt,
    /// Authenticate while auth is off.
    #[error("etcdserver: authentication is not enabled")]
    AuthNotEnabled,
    /// Authenticate with an unknown user or a wrong password.
    #[error("etcdserver: authentication failed, invalid user ID or password")]
    AuthFailed,
    /// A request the caller's roles do not allow, or an admin request by a non-root user.
    #[error("etcdserver: permission denied")]
    PermissionDenied,
    /// A token this member does not know (unknown, expired, or of a deleted user).
    #[error("etcdserver: invalid auth token")]
    InvalidAuthToken,
    /// A request made under an auth revision older than the table's when it was applied:
    /// the auth store changed meanwhile (clients authenticate again and retry).
    #[error("etcdserver: revision of auth store is old")]
    AuthOldRevision,
    /// Authenticate with a password for a user added with `--no-password` (etcd's
    /// `ErrNoPasswordUser`, which its gRPC layer does not translate).
    #[error("auth: authentication failed, password was given for no password user")]
    NoPasswordUser,
    /// An auth change past one of raftkv's bounds on the auth store (names, counts, size).
    #[error("raftkv: auth store limit exceeded: {0}")]
    AuthLimit(&'static str),
    /// An auth command no client request produces (a malformed hash, an unknown
    /// permission type, no operation).
    #[error("raftkv: malformed auth command")]
    BadAuth,
    /// sled failed.
    #[error("storage failure: {0}")]
    Sled(#[from] sled::Error),
    /// Bytes on disk that do not decode: the store is damaged.
    #[error("corrupt store: {0}")]
    Corrupt(String),
}

impl MvccError {
    /// The gRPC code etcd answers this error with.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Compacted | Self::FutureRevision => ErrorCode::OutOfRange,
            Self::LeaseNotFound => ErrorCode::NotFound,
            Self::LeaseExist
            | Self::UserAlreadyExist
            | Self::UserNotFound
            | Self::RoleAlreadyExist
            | Self::RoleNotFound
            | Self::RootUserNotExist
            | Self::RootRoleNotExist
            | Self::RoleNotGranted
            | Self::PermissionNotGranted
            | Self::AuthNotEnabled => ErrorCode::FailedPrecondition,
            Self::PermissionDenied => ErrorCode::PermissionDenied,
            Self::InvalidAuthToken => ErrorCode::Unauthenticated,
            Self::NoPasswordUser => ErrorCode::Unknown,
            Self::LeaseTtlTooLarge => ErrorCode::OutOfRange,
            Self::NoSpace => ErrorCode::ResourceExhausted,
            Self::CorruptCluster => ErrorCode::DataLoss,
            Self::Sled(_) | Self::Corrupt(_) => ErrorCode::Internal,
            _ => ErrorCode::InvalidArgument,
        }
    }

    /// Whether this is a refusal of the request (deterministic on every member) rather than
    /// a failure of this member's storage.
    pub fn is_request_error(&self) -> bool {
        !matches!(self, Self::Sled(_) | Self::Corrupt(_))
    }
}

/// A snapshot file that cannot be written or read.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// Reading or writing the file failed.
    #[error("snapshot I/O: {0}")]
    Io(#[from] io::Error),
    /// The file is neither a raftkv snapshot nor an etcd (bbolt) one.
    #[error("not a raftkv or etcd snapshot file (bad magic)")]
    NotASnapshot,
    /// An etcd snapshot without the SHA-256 trailer `snapshot save` appends, restored
    /// without `--skip-hash-check` (etcdctl's message).
    #[error("snapshot missing hash but --skip-hash-check=false")]
    MissingHash,
    /// A format version this build does not read.
    #[error("unsupported snapshot format version {0}")]
    UnsupportedVersion(u32),
    /// The SHA-256 trailer does not match the file.
    #[error("snapshot checksum mismatch: the file is damaged or incomplete")]
    ChecksumMismatch,
    /// The file's structure is inconsistent.
    #[error("corrupt snapshot: {0}")]
    Corrupt(String),
    /// A body block failed to decode.
    #[error("corrupt snapshot block: {0}")]
    Block(#[from] raftkv_codec::DecodeError),
    /// Reading the store or writing into it failed.
    #[error(transparent)]
    Mvcc(#[from] MvccError),
}

impl From<sled::Error> for SnapshotError {
    fn from(e: sled::Error) -> Self {
        Self::Mvcc(MvccError::Sled(e))
    }
}
