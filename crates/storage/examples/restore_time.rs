//! How long a snapshot restore takes, and with which sled page cache: fills a store with
//! Kubernetes-like objects, builds a snapshot file, then restores it into fresh stores.
//!
//! `cargo run --release -p raftkv-storage --example restore_time -- [items] [cache MiB...]`
//! (default 100,000 items; caches 64 and 1024 MiB).

use std::time::Instant;

use raftkv_codec::samples::Corpus;
use raftkv_proto::etcdserverpb::PutRequest;
use raftkv_proto::raftkvpb::{Command, command};
use raftkv_storage::snapshot;
use raftkv_storage::{AppliedState, MvccConfig, MvccStore};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let mut args = std::env::args().skip(1);
    let items: u64 = args
        .next()
        .map(|n| n.parse().expect("items: a number"))
        .unwrap_or(100_000);
    let mut caches: Vec<u64> = args.map(|c| c.parse().expect("cache MiB")).collect();
    if caches.is_empty() {
        caches = vec![64, 1024];
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("s.snap");
    {
        let store =
            MvccStore::open(&dir.path().join("src"), &MvccConfig::default()).expect("store");
        let started = Instant::now();
        for i in 0..items {
            let (key, value) = Corpus::Pods.item(i, 1);
            let cmd = Command {
                op: Some(command::Op::Put(PutRequest {
                    key: key.into_bytes().into(),
                    value: value.into(),
                    ..Default::default()
                })),
                ..Default::default()
            };
            store.apply(&cmd, &AppliedState::default()).expect("put");
        }
        eprintln!("filled {items} in {:.1} s", started.elapsed().as_secs_f64());
        let info = snapshot::build(&store, &file).expect("build");
        eprintln!("snapshot {} bytes", info.total_size);
    }
    for cache in caches {
        let target = dir.path().join(format!("restored-{cache}"));
        let config = MvccConfig {
            cache_capacity: cache << 20,
            ..MvccConfig::default()
        };
        let started = Instant::now();
        let store = MvccStore::open(&target, &config).expect("store");
        snapshot::restore(&file, &store).expect("restore");
        store.flush().expect("flush");
        println!(
            "cache {cache} MiB: restore {:.2} s",
            started.elapsed().as_secs_f64()
        );
    }
}
