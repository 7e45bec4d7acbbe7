//! Where a member keeps its files under `--data-dir` (shared by the server, which runs a
//! member, and `raftkvctl snapshot restore`, which prepares one).
//!
//! ```text
//! <data-dir>/member/db        MVCC state (sled)
//! <data-dir>/member/wal       Raft log and vote
//! <data-dir>/member/snap      snapshot files
//! <data-dir>/member/identity  member and cluster ids, written once bootstrapped or joined
//! ```

use std::path::{Path, PathBuf};

/// `<data-dir>/member`.
pub fn member_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("member")
}

/// The MVCC store.
pub fn db_dir(data_dir: &Path) -> PathBuf {
    member_dir(data_dir).join("db")
}

/// The Raft log.
pub fn wal_dir(data_dir: &Path) -> PathBuf {
    member_dir(data_dir).join("wal")
}

/// Snapshot files.
pub fn snap_dir(data_dir: &Path) -> PathBuf {
    member_dir(data_dir).join("snap")
}

/// The identity file.
pub fn identity_file(data_dir: &Path) -> PathBuf {
    member_dir(data_dir).join("identity")
}
