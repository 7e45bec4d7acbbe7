//! External sorting with bounded memory: items pushed in any order come back in order.
//!
//! Items are held in memory up to a byte bound, then sorted and spilled as a *run* to an
//! unnamed file (created beside the data and unlinked at once, so nothing is left behind
//! whatever happens to the process); at the end the runs and what is still held are
//! merged. Past [`MAX_RUNS`] runs, those so far are merged into one first, so the files
//! open at once stay few whatever the input's size. Input that fits in one run is never
//! spilled. Memory is one run, plus the merge's read buffers ([`MERGE_BUFFERS`] shared).
//!
//! Users: the export to etcd's format (versions from key order into revision order) and a
//! restore's history index (the same, as (revision, key) pairs).
//!
//! A run file is this process's own, written and read back once, but what is read back
//! is checked all the same ([`Spill::read_from`] bounds every length): damage is an
//! `InvalidData` error, never a panic nor an allocation sized by a length read off it.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Seek, SeekFrom, Write};
use std::path::PathBuf;

/// Runs merged at once at most.
const MAX_RUNS: usize = 64;

/// Read buffer shared by all runs of a merge (each gets a share, within bounds).
const MERGE_BUFFERS: usize = 32 << 20;

/// Run files this process has named (the `n` of their names).
static RUNS_MADE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// An item that can be spilled to a run file and read back.
pub(crate) trait Spill: Ord + Sized {
    /// Bytes the item holds in memory, its bookkeeping included (counted against the bound).
    fn memory(&self) -> usize;
    /// Writes the item.
    fn write_to(&self, out: &mut impl Write) -> io::Result<()>;
    /// Reads one item as [`Spill::write_to`] wrote it; `None` at the end of the file, which
    /// may come only between items. Damage is an `InvalidData` error.
    fn read_from(input: &mut impl BufRead) -> io::Result<Option<Self>>;
}

/// Whether `input` is at its end (nothing more to read).
pub(crate) fn at_end(input: &mut impl BufRead) -> io::Result<bool> {
    Ok(input.fill_buf()?.is_empty())
}

/// Items collected for sorting (see the module).
pub(crate) struct ExternalSort<T> {
    /// Where run files are created (and at once unlinked).
    dir: PathBuf,
    /// The start of their names, unique to this sort among those that share `dir`.
    prefix: String,
    run_bytes: usize,
    held: Vec<T>,
    held_bytes: usize,
    /// Spilled runs, each rewound to its start.
    runs: Vec<File>,
}

impl<T: Spill> ExternalSort<T> {
    /// A sort holding up to `run_bytes` in memory, spilling to files
    /// `<dir>/<prefix>.run-<pid>-<n>` (unlinked once open).
    pub(crate) fn new(dir: PathBuf, prefix: &str, run_bytes: usize) -> Self {
        Self {
            dir,
            prefix: prefix.to_string(),
            run_bytes,
            held: Vec::new(),
            held_bytes: 0,
            runs: Vec::new(),
        }
    }

    /// Adds an item, spilling a run if the bound is reached.
    pub(crate) fn push(&mut self, item: T) -> io::Result<()> {
        self.held_bytes += item.memory();
        self.held.push(item);
        if self.held_bytes >= self.run_bytes {
            self.spill()?;
        }
        Ok(())
    }

    /// Sorts what is held and writes it as a run.
    fn spill(&mut self) -> io::Result<()> {
        if self.runs.len() >= MAX_RUNS {
            let merged = self.merged(Vec::new())?;
            let one = self.write_run(merged)?;
            self.runs = vec![one];
        }
        let mut held = std::mem::take(&mut self.held);
        self.held_bytes = 0;
        held.sort_unstable();
        let run = self.write_run(held.into_iter().map(Ok))?;
        self.runs.push(run);
        Ok(())
    }

    /// Writes `items` (sorted) to a new unnamed file, rewound.
    fn write_run(&mut self, items: impl Iterator<Item = io::Result<T>>) -> io::Result<File> {
        // A name no file has: `<prefix>.run-<pid>-<n>`, the next n on a clash (a file a
        // crash left between its creation and its unlinking, perhaps by a process of the
        // same id).
        let mut attempts = 0;
        let (file, path) = loop {
            let path = self.dir.join(format!(
                "{}.run-{}-{}",
                self.prefix,
                std::process::id(),
                RUNS_MADE.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            ));
            match std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(file) => break (file, path),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempts < 1000 => {
                    attempts += 1;
                }
                Err(e) => return Err(e),
            }
        };
        std::fs::remove_file(&path)?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        for item in items {
            item?.write_to(&mut out)?;
        }
        let mut file = out.into_inner().map_err(|e| e.into_error())?;
        file.seek(SeekFrom::Start(0))?;
        Ok(file)
    }

    /// Every item, in order.
    pub(crate) fn finish(mut self) -> io::Result<Merged<T>> {
        let mut held = std::mem::take(&mut self.held);
        held.sort_unstable();
        self.merged(held)
    }

    /// The runs so far (taken) merged with `held` (sorted).
    fn merged(&mut self, held: Vec<T>) -> io::Result<Merged<T>> {
        let share = (MERGE_BUFFERS / (self.runs.len() + 1)).clamp(16 << 10, 1 << 20);
        let mut sources = Vec::with_capacity(self.runs.len() + 1);
        for file in self.runs.drain(..) {
            sources.push(Source::Run(BufReader::with_capacity(share, file)));
        }
        sources.push(Source::Memory(held.into_iter()));
        let mut heap = BinaryHeap::with_capacity(sources.len());
        for (i, source) in sources.iter_mut().enumerate() {
            if let Some(item) = source.next()? {
                heap.push(Reverse((item, i)));
            }
        }
        Ok(Merged { sources, heap })
    }
}

enum Source<T> {
    Run(BufReader<File>),
    Memory(std::vec::IntoIter<T>),
}

impl<T: Spill> Source<T> {
    fn next(&mut self) -> io::Result<Option<T>> {
        match self {
            Source::Memory(items) => Ok(items.next()),
            Source::Run(file) => T::read_from(file),
        }
    }
}

/// A k-way merge of sorted sources: the items of an [`ExternalSort`] in order.
pub(crate) struct Merged<T> {
    sources: Vec<Source<T>>,
    heap: BinaryHeap<Reverse<(T, usize)>>,
}

impl<T: Spill> Iterator for Merged<T> {
    type Item = io::Result<T>;

    fn next(&mut self) -> Option<Self::Item> {
        let Reverse((item, i)) = self.heap.pop()?;
        match self.sources[i].next() {
            Ok(Some(next)) => self.heap.push(Reverse((next, i))),
            Ok(None) => {}
            Err(e) => {
                self.heap.clear();
                return Some(Err(e));
            }
        }
        Some(Ok(item))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::Just;

    /// A test item: a number and a few bytes.
    #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
    struct Item(u32, Vec<u8>);

    impl Spill for Item {
        fn memory(&self) -> usize {
            self.1.len() + 32
        }

        fn write_to(&self, out: &mut impl Write) -> io::Result<()> {
            out.write_all(&self.0.to_le_bytes())?;
            out.write_all(&[self.1.len() as u8])?;
            out.write_all(&self.1)
        }

        fn read_from(input: &mut impl BufRead) -> io::Result<Option<Self>> {
            if at_end(input)? {
                return Ok(None);
            }
            let mut head = [0u8; 5];
            input.read_exact(&mut head)?;
            let mut bytes = vec![0u8; usize::from(head[4])];
            input.read_exact(&mut bytes)?;
            Ok(Some(Item(
                u32::from_le_bytes(head[..4].try_into().unwrap()),
                bytes,
            )))
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 48, ..Default::default() })]
        /// Whatever the order and the bound (in memory only, a few runs, more than
        /// `MAX_RUNS` runs, which are merged into one on the way), the items come back
        /// sorted, none lost, and no file is left behind.
        #[test]
        fn items_come_back_in_order(
            items in proptest::collection::vec((0u32..500, proptest::collection::vec(0u8..4, 0..6)), 0..400),
            run_bytes in proptest::prop_oneof![Just(1usize), 40usize..2000, Just(1usize << 30)],
        ) {
            let dir = tempfile::tempdir().unwrap();
            let mut sort = ExternalSort::new(dir.path().to_path_buf(), "t", run_bytes);
            let mut want: Vec<Item> = items.into_iter().map(|(n, b)| Item(n, b)).collect();
            for item in &want {
                sort.push(item.clone()).unwrap();
            }
            let got: Vec<Item> = sort.finish().unwrap().map(|i| i.unwrap()).collect();
            want.sort();
            proptest::prop_assert_eq!(got, want);
            proptest::prop_assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        }
    }

    /// Files a crash left under the names the next runs would take are stepped over (and
    /// left alone).
    #[test]
    fn leftover_run_files_are_stepped_over() {
        let dir = tempfile::tempdir().unwrap();
        let next = RUNS_MADE.load(std::sync::atomic::Ordering::Relaxed);
        for n in next..next + 50 {
            let name = format!("left.run-{}-{n}", std::process::id());
            std::fs::write(dir.path().join(name), b"left").unwrap();
        }
        let mut sort = ExternalSort::new(dir.path().to_path_buf(), "left", 1);
        for n in [3u32, 1, 2] {
            sort.push(Item(n, vec![])).unwrap();
        }
        let got: Vec<u32> = sort.finish().unwrap().map(|i| i.unwrap().0).collect();
        assert_eq!(got, [1, 2, 3]);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 50);
    }

    /// A run that reads back damaged stops the merge with its error, whether the damage
    /// is in its first item (read as the merge starts) or a later one.
    #[test]
    fn a_damaged_run_ends_the_merge_with_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let run_of_two = || {
            let mut sort = ExternalSort::new(dir.path().to_path_buf(), "t", 1 << 20);
            sort.push(Item(1, vec![1, 2])).unwrap();
            sort.push(Item(2, vec![3])).unwrap();
            sort.spill().unwrap();
            sort
        };
        let sort = run_of_two();
        sort.runs[0].set_len(5).unwrap();
        assert!(sort.finish().is_err());
        let sort = run_of_two();
        sort.runs[0].set_len(10).unwrap();
        let results: Vec<_> = sort.finish().unwrap().collect();
        assert!(results.iter().any(|r| r.is_err()), "{results:?}");
    }
}
