//! Where a member keeps its files under `--data-dir` (shared by the server, which runs a
//! member, and `raftkvctl snapshot restore`, which prepares one).
//!
//! ```text
//! <data-dir>/member/db        MVCC state (sled)
//! <data-dir>/member/wal       Raft log and vote (or --wal-dir, elsewhere)
//! <data-dir>/member/snap      snapshot files
//! <data-dir>/member/identity  member and cluster ids, written once bootstrapped or joined
//! ```

use std::io;
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

/// A member's identity, as its identity file keeps it: its own id and its cluster's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    /// The member's id.
    pub member: u64,
    /// The cluster's id.
    pub cluster: u64,
}

/// Reads the identity file of `data_dir`; `None` if there is none. A damaged file is an
/// `InvalidData` error (and no more than a few kilobytes of it are read).
pub fn read_identity(data_dir: &Path) -> io::Result<Option<Identity>> {
    use std::io::Read;
    let path = identity_file(data_dir);
    let file = match std::fs::File::open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let damaged = || {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} is damaged", path.display()),
        )
    };
    let mut text = String::new();
    file.take(4096)
        .read_to_string(&mut text)
        .map_err(|_| damaged())?;
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
    };
    match (text.lines().next(), field("member "), field("cluster ")) {
        (Some("raftkv member v1"), Some(member), Some(cluster)) => {
            Ok(Some(Identity { member, cluster }))
        }
        _ => Err(damaged()),
    }
}

/// Writes the identity file of `data_dir` durably, once: an existing one is kept.
pub fn write_identity(data_dir: &Path, identity: Identity) -> io::Result<()> {
    let path = identity_file(data_dir);
    if path.exists() {
        return Ok(());
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(
        &tmp,
        format!(
            "raftkv member v1\nmember {:016x}\ncluster {:016x}\n",
            identity.member, identity.cluster
        ),
    )?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_round_trips_and_damage_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_identity(dir.path()).unwrap(), None);
        std::fs::create_dir_all(member_dir(dir.path())).unwrap();
        let id = Identity {
            member: 0x8e9e05c52164694d,
            cluster: 0xcdf818194e3a8c32,
        };
        write_identity(dir.path(), id).unwrap();
        assert_eq!(read_identity(dir.path()).unwrap(), Some(id));
        std::fs::write(identity_file(dir.path()), vec![b'x'; 1 << 20]).unwrap();
        let err = read_identity(dir.path()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }
}
