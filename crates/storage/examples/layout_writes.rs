//! What sled writes to disk, and the CPU it takes, per put (issue 18): the store as it is,
//! beside other key layouts written into a sled tree with the same configuration.
//!
//! In a 10-minute soak raftkv's members caused ~3.5 KB of disk writes per 256-byte put each,
//! etcd's ~1 KB, and raftkv's put rate fell as its store grew. The store keeps a key's
//! versions together (`(key, inverted revision)`), so every put lands in the leaf of its
//! key's newest versions, somewhere in the tree; sled rewrites a leaf every ten changes,
//! splits it past 16 items, and moves the live pages out of any log segment half garbage.
//! etcd's backend keys versions by revision instead, so writes only ever append. This
//! measures the layouts on one workload, so the difference is a figure:
//!
//! - `store`: the real [`MvccStore`], puts applied in runs of ten (one applied-point write per
//!   run, as the state machine does);
//! - `by-revision`: each put's key and record under its revision (appended at the tree's right
//!   edge), plus an index entry `(key, inverted revision)` with no value, and one point write
//!   per run of ten;
//! - `values-apart`: the store's layout (`(key, inverted revision)`, and the history index:
//!   one group of the run's keys per run of ten, as the store writes it), but each record in
//!   the tree holds only its metadata and where its value lies in an append-only file beside
//!   the tree (written through a 64 KiB buffer, fdatasynced at the end), and one point write
//!   per run of ten;
//! - `value-log`: the same, with the values in `raftkv_storage::values` (the value segments
//!   built for this: a CRC-framed `pwrite` per value, and an fdatasync per 1,000 puts, about
//!   every 100 ms at a member's rate under 100 clients: the applied point lags the values, so
//!   they need no sync per run);
//! - `values-grouped`: the same, but the run's values go into sled too, as one item per run
//!   keyed by the run's first revision (so the records and the values they point at are in
//!   one log, which sled recovers as a prefix: no ordering between two files to keep);
//! - `runs-by-revision`: etcd's shape taken further: one item per run of ten holding every
//!   key and record of the run, keyed by the run's first revision, and the index of each
//!   key's revisions in memory only (etcd's `treeIndex`), updated per put; one point write
//!   per run.
//!
//! Reported per layout: bytes the process caused to be written to storage (Linux
//! `/proc/self/io` `write_bytes`, counted as pages are dirtied) per put, including a final
//! flush; the CPU time of every thread of the process per put (`getrusage`, sled's
//! background threads included); what the directory takes on disk; the time taken.
//!
//! `cargo run --release -p raftkv-storage --example layout_writes -- [puts] [keys] [value bytes]
//! [sled cache MiB]` (default 500,000 puts over 10,000 keys, 256-byte values: `raftkv-bench
//! soak`'s workload; the store's default cache).

use std::path::Path;
use std::time::Instant;

use raftkv_proto::etcdserverpb::PutRequest;
use raftkv_proto::raftkvpb::{Command, command};
use raftkv_storage::{AppliedState, MvccConfig, MvccStore};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Puts between two applied-point writes.
const RUN: u64 = 10;
/// Puts between two fdatasyncs of the value log.
const VALUE_SYNC: u64 = 1_000;

fn main() {
    let mut args = std::env::args().skip(1);
    let mut number = |default: u64| {
        args.next()
            .map(|n| n.parse().expect("a number"))
            .unwrap_or(default)
    };
    let puts = number(500_000);
    let keys = number(10_000).max(1);
    let value_size = usize::try_from(number(256)).expect("value bytes");
    let config = MvccConfig {
        cache_capacity: number(MvccConfig::default().cache_capacity >> 20) << 20,
        ..MvccConfig::default()
    };
    let dir = tempfile::tempdir().expect("temp dir");
    println!(
        "{puts} puts over {keys} random keys, {value_size}-byte values, sled cache {} MiB",
        config.cache_capacity >> 20
    );
    println!("layout\tbytes written per put\tCPU µs per put\tdisk used (MiB)\tseconds");
    for layout in [
        Layout::Store,
        Layout::ByRevision,
        Layout::ValuesApart,
        Layout::ValueLog,
        Layout::ValuesGrouped,
        Layout::RunsByRevision,
    ] {
        let path = dir.path().join(layout.name());
        let before = write_bytes();
        let cpu_before = cpu_seconds();
        let started = Instant::now();
        match layout {
            Layout::Store => fill_store(&path, &config, puts, keys, value_size),
            Layout::ByRevision => fill_by_revision(&path, &config, puts, keys, value_size),
            Layout::ValuesApart => fill_values_apart(&path, &config, puts, keys, value_size),
            Layout::ValueLog => fill_value_log(&path, &config, puts, keys, value_size),
            Layout::ValuesGrouped => fill_values_grouped(&path, &config, puts, keys, value_size),
            Layout::RunsByRevision => fill_runs_by_revision(&path, &config, puts, keys, value_size),
        }
        let seconds = started.elapsed().as_secs_f64();
        let cpu = cpu_seconds() - cpu_before;
        let written = write_bytes().saturating_sub(before);
        println!(
            "{}\t{:.0}\t{:.1}\t{:.1}\t{:.1}",
            layout.name(),
            written as f64 / puts.max(1) as f64,
            cpu * 1e6 / puts.max(1) as f64,
            disk_used(&path) as f64 / (1024.0 * 1024.0),
            seconds
        );
    }
}

#[derive(Clone, Copy)]
enum Layout {
    Store,
    ByRevision,
    ValuesApart,
    ValueLog,
    ValuesGrouped,
    RunsByRevision,
}

impl Layout {
    fn name(self) -> &'static str {
        match self {
            Layout::Store => "store",
            Layout::ByRevision => "by-revision",
            Layout::ValuesApart => "values-apart",
            Layout::ValueLog => "value-log",
            Layout::ValuesGrouped => "values-grouped",
            Layout::RunsByRevision => "runs-by-revision",
        }
    }
}

/// The same sequence of (key, value) for both layouts: 8-byte keys like `raftkv-bench`'s,
/// values of pseudo-random bytes (so no layer could shrink them by compressing).
struct Puts {
    state: u64,
    keys: u64,
    value_size: usize,
}

impl Puts {
    fn new(keys: u64, value_size: usize) -> Self {
        Self {
            state: 0x9e37_79b9_7f4a_7c15,
            keys,
            value_size,
        }
    }

    fn next_u64(&mut self) -> u64 {
        // xorshift64*
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        self.state.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn next(&mut self) -> (Vec<u8>, Vec<u8>) {
        let key = (self.next_u64() % self.keys).to_be_bytes().to_vec();
        let mut value = Vec::with_capacity(self.value_size + 8);
        while value.len() < self.value_size {
            value.extend_from_slice(&self.next_u64().to_le_bytes());
        }
        value.truncate(self.value_size);
        (key, value)
    }
}

fn fill_store(path: &Path, config: &MvccConfig, puts: u64, keys: u64, value_size: usize) {
    let store = MvccStore::open(path, config).expect("store");
    let mut source = Puts::new(keys, value_size);
    for i in 0..puts {
        let (key, value) = source.next();
        let cmd = Command {
            op: Some(command::Op::Put(PutRequest {
                key: key.into(),
                value: value.into(),
                ..Default::default()
            })),
            ..Default::default()
        };
        store
            .apply_unrecorded(&cmd, &AppliedState::default())
            .expect("put");
        if (i + 1) % RUN == 0 {
            store.record_applied().expect("point");
        }
    }
    store.record_applied().expect("point");
    store.flush().expect("flush");
}

fn fill_by_revision(path: &Path, config: &MvccConfig, puts: u64, keys: u64, value_size: usize) {
    let (db, tree) = open_sled(path, config);
    let mut source = Puts::new(keys, value_size);
    for i in 0..puts {
        let revision = i + 2;
        let (key, value) = source.next();
        // The record as the store encodes one (create and mod revision, version, lease, value)
        // is replaced here by the key, three varint-sized fields and the value: the same bytes
        // to within a few.
        let mut record = Vec::with_capacity(key.len() + value.len() + 24);
        record.push(key.len() as u8);
        record.extend_from_slice(&key);
        record.extend_from_slice(&metadata(revision));
        record.extend_from_slice(&value);
        let mut at = vec![0x01];
        at.extend_from_slice(&revision.to_be_bytes());
        tree.insert(at, record).expect("record");
        let mut index = vec![0x03];
        index.extend_from_slice(&key);
        index.extend_from_slice(&(!revision).to_be_bytes());
        tree.insert(index, &[][..]).expect("index");
        if (i + 1) % RUN == 0 {
            tree.insert(b"\x02point", &revision.to_be_bytes()[..])
                .expect("point");
        }
    }
    db.flush().expect("flush");
}

fn fill_values_apart(path: &Path, config: &MvccConfig, puts: u64, keys: u64, value_size: usize) {
    use std::io::Write;
    let (db, tree) = open_sled(path, config);
    let file = std::fs::File::create(path.join("values.log")).expect("value file");
    let mut values = std::io::BufWriter::with_capacity(64 << 10, file);
    let mut offset = 0u64;
    let mut source = Puts::new(keys, value_size);
    let mut run = Run::default();
    for i in 0..puts {
        let revision = i + 2;
        let (key, value) = source.next();
        values.write_all(&value).expect("value");
        // Metadata (create and mod revision, version, lease) and the value's place.
        let mut record = Vec::with_capacity(24);
        record.extend_from_slice(&metadata(revision));
        record.extend_from_slice(&offset.to_be_bytes()[3..]);
        record.extend_from_slice(&(value.len() as u32).to_be_bytes()[1..]);
        offset += value.len() as u64;
        tree.insert(by_key(&key, revision), record).expect("record");
        run.add(revision, key);
        if (i + 1) % RUN == 0 {
            run.end(&tree);
        }
    }
    run.end(&tree);
    let file = values.into_inner().expect("value buffer");
    file.sync_data().expect("value sync");
    db.flush().expect("flush");
}

fn fill_value_log(path: &Path, config: &MvccConfig, puts: u64, keys: u64, value_size: usize) {
    use raftkv_storage::values::{SEGMENT_BYTES, ValueLog};
    let (db, tree) = open_sled(path, config);
    let values = ValueLog::open(&path.join("values"), SEGMENT_BYTES, None).expect("value log");
    let mut source = Puts::new(keys, value_size);
    let mut run = Run::default();
    for i in 0..puts {
        let revision = i + 2;
        let (key, value) = source.next();
        let ptr = values.append(revision as i64, &key, &value).expect("value");
        // Metadata (create and mod revision, version, lease) and the value's pointer.
        let mut record = Vec::with_capacity(32);
        record.extend_from_slice(&metadata(revision));
        ptr.encode(&mut record);
        tree.insert(by_key(&key, revision), record).expect("record");
        run.add(revision, key);
        if (i + 1) % VALUE_SYNC == 0 {
            values.sync().expect("value sync");
        }
        if (i + 1) % RUN == 0 {
            run.end(&tree);
        }
    }
    values.sync().expect("value sync");
    run.end(&tree);
    db.flush().expect("flush");
}

fn fill_values_grouped(path: &Path, config: &MvccConfig, puts: u64, keys: u64, value_size: usize) {
    let (db, tree) = open_sled(path, config);
    let mut source = Puts::new(keys, value_size);
    let mut run = Run::default();
    let mut values = Vec::new();
    for i in 0..puts {
        let revision = i + 2;
        let (key, value) = source.next();
        let first = run.first.unwrap_or(revision);
        // Metadata, then the value's place: its run's first revision and its place in the run.
        let mut record = Vec::with_capacity(16);
        record.extend_from_slice(&metadata(revision));
        record.extend_from_slice(&first.to_be_bytes()[5..]);
        record.push(run.keys.len() as u8);
        tree.insert(by_key(&key, revision), record).expect("record");
        values.extend_from_slice(&(value.len() as u32).to_be_bytes());
        values.extend_from_slice(&value);
        run.add(revision, key);
        if (i + 1) % RUN == 0 {
            tree.insert(value_group_key(first), std::mem::take(&mut values))
                .expect("values");
            run.end(&tree);
        }
    }
    if let Some(first) = run.first {
        tree.insert(value_group_key(first), values).expect("values");
        run.end(&tree);
    }
    db.flush().expect("flush");
}

fn fill_runs_by_revision(
    path: &Path,
    config: &MvccConfig,
    puts: u64,
    keys: u64,
    value_size: usize,
) {
    let (db, tree) = open_sled(path, config);
    let mut source = Puts::new(keys, value_size);
    // etcd's treeIndex: every key's revisions, in memory only (rebuilt from the runs on open).
    let mut index: std::collections::BTreeMap<Vec<u8>, Vec<u64>> = Default::default();
    let mut first = None;
    let mut rows = Vec::new();
    for i in 0..puts {
        let revision = i + 2;
        let (key, value) = source.next();
        first.get_or_insert(revision);
        rows.push(key.len() as u8);
        rows.extend_from_slice(&key);
        rows.extend_from_slice(&metadata(revision));
        rows.extend_from_slice(&(value.len() as u32).to_be_bytes());
        rows.extend_from_slice(&value);
        index.entry(key).or_default().push(revision);
        if (i + 1) % RUN == 0 {
            if let Some(first) = first.take() {
                tree.insert(value_group_key(first), std::mem::take(&mut rows))
                    .expect("run");
            }
            tree.insert(b"\x02point", &revision.to_be_bytes()[..])
                .expect("point");
        }
    }
    if let Some(first) = first {
        tree.insert(value_group_key(first), rows).expect("run");
    }
    db.flush().expect("flush");
    assert!(index.len() <= keys as usize);
}

/// The store's record key, `0x01 | key | 0x00 0x01 | inverted revision`, with the key
/// unescaped (the store writes a key's zero bytes as `0x00 0xFF`: a few bytes more here).
fn by_key(key: &[u8], revision: u64) -> Vec<u8> {
    let mut at = Vec::with_capacity(key.len() + 11);
    at.push(0x01);
    at.extend_from_slice(key);
    at.extend_from_slice(&[0x00, 0x01]);
    at.extend_from_slice(&(!revision).to_be_bytes());
    at
}

/// The key of an item holding a run's values (or rows), by the run's first revision.
fn value_group_key(first: u64) -> Vec<u8> {
    let mut at = vec![0x04];
    at.extend_from_slice(&first.to_be_bytes());
    at
}

/// The changes of a run of puts, written at its end as the store writes them: one history
/// group (`0x03 | first revision | 0x02` → each change's revision offset, place and key),
/// then the applied point.
#[derive(Default)]
struct Run {
    first: Option<u64>,
    last: u64,
    keys: Vec<Vec<u8>>,
}

impl Run {
    fn add(&mut self, revision: u64, key: Vec<u8>) {
        self.first.get_or_insert(revision);
        self.last = revision;
        self.keys.push(key);
    }

    fn end(&mut self, tree: &sled::Tree) {
        let Some(first) = self.first.take() else {
            return;
        };
        let mut group = Vec::new();
        for (n, key) in self.keys.drain(..).enumerate() {
            group.push(n as u8);
            group.push(0);
            group.push(key.len() as u8);
            group.extend_from_slice(&key);
        }
        let mut at = vec![0x03];
        at.extend_from_slice(&first.to_be_bytes());
        at.push(0x02);
        tree.insert(at, group).expect("history");
        tree.insert(b"\x02point", &self.last.to_be_bytes()[..])
            .expect("point");
    }
}

/// A sled database with the store's configuration, and the tree the rows go in.
fn open_sled(path: &Path, config: &MvccConfig) -> (sled::Db, sled::Tree) {
    let db = sled::Config::new()
        .path(path)
        .cache_capacity(config.cache_capacity)
        .flush_every_ms(config.flush_every_ms)
        .open()
        .expect("sled");
    let tree = db.open_tree("mvcc").expect("tree");
    (db, tree)
}

/// A record's metadata as the store encodes about as many bytes of it: create and mod
/// revision, version 1, no lease.
fn metadata(revision: u64) -> [u8; 8] {
    let mut out = [0u8; 8];
    out[..3].copy_from_slice(&revision.to_be_bytes()[5..]);
    out[3..6].copy_from_slice(&revision.to_be_bytes()[5..]);
    out[6] = 1;
    out
}

/// CPU time of every thread of this process so far, in seconds.
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return 0.0;
    }
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

/// Bytes this process has caused to be written to storage (0 where `/proc` has no answer).
fn write_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/io")
        .ok()
        .and_then(|io| {
            io.lines()
                .find_map(|l| l.strip_prefix("write_bytes:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Bytes a directory tree takes on disk (allocated blocks).
fn disk_used(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else {
                continue;
            };
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                total += meta.blocks() * 512;
            }
        }
    }
    total
}
