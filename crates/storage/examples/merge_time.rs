//! How long a follower's snapshot install takes when its store holds most of the snapshot
//! (the merge, `mvcc/merge.rs`): a store of `keys` keys (256-byte values), a follower
//! restored from a snapshot of it, `behind` more writes on the leader, and the leader's new
//! snapshot installed into the follower.
//!
//! `cargo run --release -p raftkv-storage --example merge_time -- [keys] [behind]`
//! (default 300,000 keys, 30,000 writes behind).

use std::time::Instant;

use raftkv_proto::etcdserverpb::PutRequest;
use raftkv_proto::raftkvpb::{Command, command};
use raftkv_storage::snapshot;
use raftkv_storage::{AppliedState, MvccConfig, MvccStore};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn put(store: &MvccStore, i: u64, round: u64) {
    let mut value = format!("{round:08}-{i:016x}-").into_bytes();
    value.resize(256, b'v');
    let cmd = Command {
        op: Some(command::Op::Put(PutRequest {
            key: format!("/registry/keys/{i:012}").into_bytes().into(),
            value: value.into(),
            ..Default::default()
        })),
        ..Default::default()
    };
    store.apply(&cmd, &AppliedState::default()).expect("put");
}

fn main() {
    let mut args = std::env::args().skip(1);
    let keys: u64 = args.next().map_or(300_000, |n| n.parse().expect("keys"));
    let behind: u64 = args.next().map_or(30_000, |n| n.parse().expect("behind"));
    let dir = tempfile::tempdir().expect("temp dir");
    let config = MvccConfig::default();
    let leader = MvccStore::open(&dir.path().join("leader"), &config).expect("store");
    for i in 0..keys {
        put(&leader, i, 0);
    }
    let first = dir.path().join("first.snap");
    snapshot::build(&leader, &first).expect("build");
    let follower = MvccStore::open(&dir.path().join("follower"), &config).expect("store");
    snapshot::install(&first, &follower).expect("restore");
    for n in 0..behind {
        put(&leader, (n * 7919) % keys, 1);
    }
    let second = dir.path().join("second.snap");
    snapshot::build(&leader, &second).expect("build");
    let started = Instant::now();
    let (_, merged) = snapshot::install(&second, &follower).expect("install");
    println!(
        "{keys} keys, {behind} behind: install {:.2} s, {merged:?}",
        started.elapsed().as_secs_f64()
    );
}
