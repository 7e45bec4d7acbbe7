//! Disk space on the data dir, and what a member does as it runs out (etcd's NOSPACE).
//!
//! A full disk used to stop a member: the WAL's fdatasync or a store write failed, openraft
//! treats any storage error as fatal, writes answered "server stopped" (some of them applied
//! all the same), and only a restart helped. Now the member keeps clear of the edge:
//!
//! - below [`Space::reserve`] free, it raises etcd's NOSPACE alarm through the log (so every
//!   member refuses writes that take space, with etcd's "database space exceeded", while
//!   reads, deletes and compactions go on) and refuses such writes itself until the alarm
//!   is applied;
//! - below a quarter of the reserve it also stops taking appends that carry entries (the
//!   leader retries them later), so the entries already on their way cannot fill the disk;
//! - it postpones policy snapshots that might not fit;
//! - once twice the reserve is free again, it clears its alarm by itself (etcd waits for an
//!   operator's `alarm disarm`, which works here too).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::disk;

/// Free space on a member's data dir, refreshed by [`Space::refresh`].
#[derive(Debug)]
pub struct Space {
    dirs: Vec<PathBuf>,
    reserve: u64,
    available: AtomicU64,
}

impl Space {
    /// Watches the file system holding `dir`, keeping `reserve` bytes in hand.
    pub fn new(dir: &Path, reserve: u64) -> Self {
        Self::watching(&[dir], reserve)
    }

    /// Watches the file systems holding `dirs` (the data dir, and a `--wal-dir` elsewhere),
    /// keeping `reserve` bytes in hand on each: what is free is the least free on any.
    pub fn watching(dirs: &[&Path], reserve: u64) -> Self {
        let space = Self {
            dirs: dirs.iter().map(|d| d.to_path_buf()).collect(),
            reserve,
            available: AtomicU64::new(u64::MAX),
        };
        space.refresh();
        space
    }

    /// The reserve this member keeps for entries in flight, the alarm itself and applying.
    pub fn reserve(&self) -> u64 {
        self.reserve
    }

    /// Measures again; returns the bytes free. A failed measurement keeps the last one.
    pub fn refresh(&self) -> u64 {
        // A directory not made yet (a new `--wal-dir`) is measured where it will be.
        let least = self
            .dirs
            .iter()
            .filter_map(|d| d.ancestors().find_map(|a| disk::available_bytes(a).ok()))
            .min();
        if let Some(bytes) = least {
            self.available.store(bytes, Ordering::Relaxed);
        }
        self.available()
    }

    /// Bytes free at the last measurement.
    pub fn available(&self) -> u64 {
        self.available.load(Ordering::Relaxed)
    }

    /// Below the reserve: raise NOSPACE and refuse writes that take space.
    pub fn is_low(&self) -> bool {
        self.available() < self.reserve
    }

    /// Below a quarter of the reserve: take no more entries.
    pub fn is_critical(&self) -> bool {
        self.available() < self.reserve / 4
    }

    /// Twice the reserve free: the alarm may go.
    pub fn recovered(&self) -> bool {
        self.available() > self.reserve.saturating_mul(2)
    }

    /// Whether `bytes` can be written and the reserve still kept.
    pub fn has_room_for(&self, bytes: u64) -> bool {
        self.available() > bytes.saturating_add(self.reserve)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_follow_the_reserve() {
        let dir = tempfile::tempdir().unwrap();
        let free = Space::new(dir.path(), 0).available();
        assert!(free > 0 && free < u64::MAX);
        let roomy = Space::new(dir.path(), 1);
        assert!(!roomy.is_low() && !roomy.is_critical() && roomy.recovered());
        assert!(roomy.has_room_for(0));
        let tight = Space::new(dir.path(), free.saturating_mul(2).max(1 << 40));
        assert!(tight.is_low() && !tight.recovered());
        assert!(!tight.has_room_for(0));
        // A directory not made yet is measured where it will be made.
        let later = dir.path().join("not/yet");
        let both = Space::watching(&[dir.path(), later.as_path()], 0);
        assert!(both.available() > 0 && both.available() < u64::MAX);
    }
}
