//! The history index of a restore or a merge, written as groups.
//!
//! A restore (or a follower's merge) takes versions in key order; the history index is in
//! revision order. Each version once had its own index entry (`0x03 | revision | 0x01 |
//! key`: one sled insert, as many as the records themselves). A group (see `encoding`)
//! takes one insert for up to [`HISTORY_GROUP_ENTRIES`] changes, but may only be written
//! once every change in its range is known, since groups never overlap. So the (revision,
//! key) pairs go through an external sort (`crate::sort`: sorted runs spilled beside the
//! store past [`RUN_BYTES`], merged at the end) and come out cut into groups at revision
//! boundaries. A revision's changes are numbered in key order: a snapshot does not keep
//! the order a write made them in (the per-change form was read in key order too).

use std::io::{self, BufRead, Write};
use std::path::PathBuf;

use bytes::Bytes;

use super::encoding::{HistoryEntry, encode_history_group};
use super::{HISTORY_GROUP_BYTES, HISTORY_GROUP_ENTRIES};
use crate::error::MvccError;
use crate::sort::{ExternalSort, Spill, at_end};

/// Bytes of pairs held in memory before a run is spilled (about 270,000 Pod-sized keys;
/// tests spill far sooner).
const RUN_BYTES: usize = if cfg!(test) { 2 << 10 } else { 24 << 20 };

/// Bookkeeping counted per pair beside its key's bytes.
const PAIR_COST: usize = 48;

/// The longest key a run file may name (a bound on what reading one allocates; a
/// snapshot's keys are far shorter).
const MAX_SPILLED_KEY: usize = 64 << 20;

/// One change: `key` changed at `revision`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Pair {
    revision: i64,
    key: Bytes,
}

impl Spill for Pair {
    fn memory(&self) -> usize {
        self.key.len() + PAIR_COST
    }

    fn write_to(&self, out: &mut impl Write) -> io::Result<()> {
        out.write_all(&self.revision.to_le_bytes())?;
        out.write_all(&(self.key.len() as u64).to_le_bytes())?;
        out.write_all(&self.key)
    }

    fn read_from(input: &mut impl BufRead) -> io::Result<Option<Self>> {
        if at_end(input)? {
            return Ok(None);
        }
        let mut head = [0u8; 16];
        input.read_exact(&mut head)?;
        let revision = i64::from_le_bytes(head[..8].try_into().expect("8 bytes"));
        let len = usize::try_from(u64::from_le_bytes(head[8..].try_into().expect("8 bytes")))
            .ok()
            .filter(|&len| len <= MAX_SPILLED_KEY)
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    "a restore's history run names an oversized key",
                )
            })?;
        let mut key = vec![0u8; len];
        input.read_exact(&mut key)?;
        Ok(Some(Pair {
            revision,
            key: Bytes::from(key),
        }))
    }
}

/// (revision, key) pairs collected in any order and written back as history groups in
/// revision order (see the module).
pub(crate) struct HistorySorter {
    pairs: ExternalSort<Pair>,
}

impl HistorySorter {
    /// A sorter whose runs go to `dir`, named after `name` (unlinked as soon as open).
    pub(crate) fn new(dir: PathBuf, name: &str) -> Self {
        Self {
            pairs: ExternalSort::new(dir, &format!("{name}.history"), RUN_BYTES),
        }
    }

    /// Adds `key`'s change at `revision`.
    pub(crate) fn push(&mut self, revision: i64, key: &[u8]) -> Result<(), MvccError> {
        self.pairs
            .push(Pair {
                revision,
                key: Bytes::copy_from_slice(key),
            })
            .map_err(io_error)
    }

    /// Hands every pair back in (revision, key) order, as groups: `write(first revision,
    /// encoded group)` for each.
    pub(crate) fn write_groups(
        self,
        mut write: impl FnMut(i64, Vec<u8>) -> Result<(), MvccError>,
    ) -> Result<(), MvccError> {
        let mut cutter = GroupCutter::default();
        for pair in self.pairs.finish().map_err(io_error)? {
            let Pair { revision, key } = pair.map_err(io_error)?;
            if let Some((first, group)) = cutter.push(revision, key) {
                write(first, group)?;
            }
        }
        if let Some((first, group)) = cutter.finish() {
            write(first, group)?;
        }
        Ok(())
    }
}

fn io_error(e: io::Error) -> MvccError {
    if e.kind() == io::ErrorKind::InvalidData || e.kind() == io::ErrorKind::UnexpectedEof {
        MvccError::Corrupt(format!("a restore's history run: {e}"))
    } else {
        MvccError::Sled(sled::Error::Io(e))
    }
}

/// Cuts changes, given in (revision, key) order, into groups at revision boundaries.
#[derive(Default)]
struct GroupCutter {
    entries: Vec<HistoryEntry>,
    bytes: usize,
}

impl GroupCutter {
    /// Adds a change; returns the group it closed, if any (keyed by its first revision).
    fn push(&mut self, revision: i64, key: Bytes) -> Option<(i64, Vec<u8>)> {
        let closed = match self.entries.last() {
            Some(&(last, _, _))
                if last != revision
                    && (self.entries.len() >= HISTORY_GROUP_ENTRIES
                        || self.bytes >= HISTORY_GROUP_BYTES) =>
            {
                self.finish()
            }
            _ => None,
        };
        let n = match self.entries.last() {
            Some(&(r, n, _)) if r == revision => n + 1,
            _ => 0,
        };
        self.bytes += key.len();
        self.entries.push((revision, n, key));
        closed
    }

    /// The group being built, if it holds anything.
    fn finish(&mut self) -> Option<(i64, Vec<u8>)> {
        let first = self.entries.first()?.0;
        let group = encode_history_group(first, &self.entries);
        self.entries.clear();
        self.bytes = 0;
        Some((first, group))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mvcc::encoding::decode_history_group;

    /// What `write_groups` writes, checking that groups do not overlap and are cut at the
    /// first revision boundary past the bound.
    fn groups_of(sorter: HistorySorter) -> Vec<(i64, u32, Vec<u8>)> {
        let mut out: Vec<(i64, u32, Vec<u8>)> = Vec::new();
        sorter
            .write_groups(|first, raw| {
                let entries = decode_history_group(first, &raw).unwrap();
                assert_eq!(entries[0].0, first);
                if let Some(last) = out.last() {
                    assert!(last.0 < first, "groups overlap");
                }
                if entries.len() > HISTORY_GROUP_ENTRIES {
                    let tail = &entries[HISTORY_GROUP_ENTRIES - 1..];
                    assert!(tail.iter().all(|e| e.0 == tail[0].0), "cut late");
                }
                out.extend(entries.into_iter().map(|(r, n, k)| (r, n, k.to_vec())));
                Ok(())
            })
            .unwrap();
        out
    }

    fn expected(mut pairs: Vec<(i64, Vec<u8>)>) -> Vec<(i64, u32, Vec<u8>)> {
        pairs.sort();
        let mut out: Vec<(i64, u32, Vec<u8>)> = Vec::new();
        for (revision, key) in pairs {
            let n = match out.last() {
                Some(&(r, n, _)) if r == revision => n + 1,
                _ => 0,
            };
            out.push((revision, n, key));
        }
        out
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 48, ..Default::default() })]
        /// Whatever the order pairs come in, in memory or spilled to several runs, they
        /// come back sorted, numbered within each revision and cut into groups that do not
        /// overlap.
        #[test]
        fn pairs_come_back_sorted_as_groups(
            pairs in proptest::collection::vec((1i64..400, proptest::collection::vec(0u8..4, 0..12)), 0..700)
        ) {
            let dir = tempfile::tempdir().unwrap();
            let mut sorter = HistorySorter::new(dir.path().to_path_buf(), "t");
            for (revision, key) in &pairs {
                sorter.push(*revision, key).unwrap();
            }
            let got = groups_of(sorter);
            proptest::prop_assert_eq!(got, expected(pairs));
            proptest::prop_assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        }
    }

    proptest::proptest! {
        /// Whatever bytes a run file holds, reading it ends (an error or the end), never
        /// panics, and never allocates past the key bound.
        #[test]
        fn any_run_file_bytes_read_safely(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
            let mut input = io::Cursor::new(bytes.clone());
            let mut read = 0;
            while let Ok(Some(pair)) = Pair::read_from(&mut input) {
                proptest::prop_assert!(pair.key.len() <= bytes.len());
                read += 1;
                proptest::prop_assert!(read <= bytes.len() / 16);
            }
        }
    }

    /// A run file's pairs read back with their lengths checked: damage is an error.
    #[test]
    fn damaged_pairs_are_errors() {
        let read = |bytes: &[u8]| Pair::read_from(&mut io::Cursor::new(bytes.to_vec()));
        let pair = Pair {
            revision: 3,
            key: Bytes::from_static(b"ab"),
        };
        let mut good = Vec::new();
        pair.write_to(&mut good).unwrap();
        assert_eq!(read(&good).unwrap(), Some(pair));
        assert_eq!(read(&[]).unwrap(), None);
        assert!(read(&good[..5]).is_err(), "cut in its head");
        assert!(read(&good[..17]).is_err(), "cut in its key");
        let mut huge = 1i64.to_le_bytes().to_vec();
        huge.extend_from_slice(&u64::MAX.to_le_bytes());
        assert!(read(&huge).is_err(), "an oversized length");
    }
}
