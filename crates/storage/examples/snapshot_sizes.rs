//! What each stage of a snapshot's block encoding contributes, on the three corpora of
//! `raftkv_codec::samples::Corpus`: the columnar layout alone, the unit-repetition codec,
//! zstd, the codec then zstd, the values split into structure and scalars then zstd, and
//! the per-block smallest (what `snapshot::build` writes).
//!
//! `cargo run --release -p raftkv-storage --example snapshot_sizes -- [items] [corpus...]`
//! (default 20,000 items of every corpus). Prints a markdown table; `docs/benchmarks.md`
//! holds a run.

use std::time::Instant;

use raftkv_codec::samples::Corpus;
use raftkv_proto::etcdserverpb::PutRequest;
use raftkv_proto::raftkvpb::{Command, command};
use raftkv_storage::snapshot::{self, BlockStages};
use raftkv_storage::{AppliedState, MvccConfig, MvccStore};

// The allocator of the member and raftkvctl, which build and restore snapshots.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let mut args = std::env::args().skip(1);
    let items: u64 = args
        .next()
        .map(|n| n.parse().expect("items: a number"))
        .unwrap_or(20_000);
    let named: Vec<Corpus> = args
        .map(|n| Corpus::from_name(&n).expect("corpus: pods, config or repetitive"))
        .collect();
    let corpora = if named.is_empty() {
        Corpus::ALL.to_vec()
    } else {
        named
    };
    println!(
        "| corpus | items | keys + values | columns (no compression) | codec | zstd -3 | codec, then zstd -3 | split, then zstd -3 | smallest per block (written) | build, smallest | restore, smallest |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for corpus in corpora {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = MvccStore::open(&dir.path().join("db"), &MvccConfig::default()).expect("store");
        let mut data_bytes = 0u64;
        for i in 0..items {
            let (key, value) = corpus.item(i, 1);
            data_bytes += (key.len() + value.len()) as u64;
            let cmd = Command {
                op: Some(command::Op::Put(PutRequest {
                    key: key.into_bytes().into(),
                    value: value.into(),
                    ..Default::default()
                })),
                ..Default::default()
            };
            let applied = AppliedState {
                applied: Some(i.to_be_bytes().to_vec()),
                membership: None,
                index: i,
            };
            store.apply(&cmd, &applied).expect("put");
        }
        let mut sizes = Vec::new();
        let mut columns = 0;
        let mut build_time = 0.0;
        for stages in [
            BlockStages::CodecOnly,
            BlockStages::ZstdOnly,
            BlockStages::CodecThenZstd,
            BlockStages::SplitThenZstd,
            BlockStages::Smallest,
        ] {
            let file = dir.path().join(format!("{stages:?}.snap"));
            let started = Instant::now();
            let info = snapshot::build_with(&store, &file, stages).expect("build");
            build_time = started.elapsed().as_secs_f64();
            if stages == BlockStages::CodecOnly {
                columns = info.raw_size; // the columns as format 4 lays them out
            }
            sizes.push(info.total_size);
        }
        let target =
            MvccStore::open(&dir.path().join("restored"), &MvccConfig::default()).expect("store");
        let started = Instant::now();
        snapshot::restore(&dir.path().join("Smallest.snap"), &target).expect("restore");
        let restore_time = started.elapsed().as_secs_f64();
        let cell =
            |bytes: u64| format!("{} ({:.2})", human(bytes), bytes as f64 / data_bytes as f64);
        println!(
            "| {} | {items} | {} | {} | {} | {} | {} | {} | **{}** | {:.0} ms | {:.0} ms |",
            corpus.name(),
            human(data_bytes),
            cell(columns),
            cell(sizes[0]),
            cell(sizes[1]),
            cell(sizes[2]),
            cell(sizes[3]),
            cell(sizes[4]),
            build_time * 1e3,
            restore_time * 1e3,
        );
    }
}

fn human(bytes: u64) -> String {
    if bytes >= 10 << 20 {
        format!("{:.1} MB", bytes as f64 / 1e6)
    } else {
        format!("{:.0} kB", bytes as f64 / 1e3)
    }
}
