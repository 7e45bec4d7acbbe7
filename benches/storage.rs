//! Storage hot paths: MVCC apply and range, Raft log append + fdatasync, and snapshot build
//! and restore of 100,000 keys with 256-byte values (sizes printed before the timings).

use std::hint::black_box;
use std::path::Path;

use bytes::Bytes;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use raftkv_proto::etcdserverpb::{PutRequest, RangeRequest};
use raftkv_proto::raftkvpb::{Command, command};
use raftkv_storage::log::{LogConfig, LogId, RaftLogStore};
use raftkv_storage::snapshot;
use raftkv_storage::{AppliedState, MvccConfig, MvccStore};

const SNAPSHOT_KEYS: usize = 100_000;

fn key(i: usize) -> Bytes {
    Bytes::from(format!("/registry/pods/team-{:03}/pod-{i:07}", i % 500))
}

/// A 256-byte Kubernetes-style JSON value with a random uid.
fn value(i: usize) -> Bytes {
    let uid = format!(
        "{:032x}",
        (i as u128).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c834)
    );
    let mut v = format!(
        "{{\"kind\":\"Pod\",\"apiVersion\":\"v1\",\"metadata\":{{\"name\":\"pod-{i:07}\",\"uid\":\"{uid}\",\
         \"resourceVersion\":\"{}\",\"labels\":{{\"app\":\"web\"}}}},\"spec\":{{\"image\":\"nginx:1.25\",\"replicas\":{}}}}}",
        i * 7 + 3,
        i % 5
    );
    while v.len() < 256 {
        v.push(' ');
    }
    v.truncate(256);
    Bytes::from(v)
}

fn put_cmd(i: usize) -> Command {
    Command {
        op: Some(command::Op::Put(PutRequest {
            key: key(i),
            value: value(i),
            ..Default::default()
        })),
        ..Default::default()
    }
}

fn applied(i: usize) -> AppliedState {
    AppliedState {
        applied: Some((i as u64).to_be_bytes().to_vec()),
        membership: None,
        index: i as u64,
    }
}

fn loaded_store(dir: &Path, keys: usize) -> MvccStore {
    let store = MvccStore::open(dir, &MvccConfig::default()).unwrap();
    for i in 0..keys {
        store.apply(&put_cmd(i), &applied(i)).unwrap();
    }
    store
}

fn mvcc(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let store = loaded_store(dir.path(), 10_000);
    let mut g = c.benchmark_group("mvcc");
    let mut i = 0;
    g.bench_function("apply_put_256B", |b| {
        b.iter(|| {
            i += 1;
            store
                .apply(black_box(&put_cmd(i % 10_000)), &applied(i))
                .unwrap()
        })
    });
    g.bench_function("range_one_key", |b| {
        let req = RangeRequest {
            key: key(4242),
            ..Default::default()
        };
        b.iter(|| store.range(black_box(&req)).unwrap())
    });
    g.throughput(Throughput::Elements(100));
    g.bench_function("range_100_keys", |b| {
        let req = RangeRequest {
            key: Bytes::from_static(b"/registry/pods/team-007/"),
            range_end: Bytes::from_static(b"/registry/pods/team-0070"),
            limit: 100,
            ..Default::default()
        };
        b.iter(|| store.range(black_box(&req)).unwrap())
    });
    g.finish();
}

fn log(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let log = RaftLogStore::open(dir.path(), &LogConfig::default()).unwrap();
    let payload = vec![7u8; 300];
    let mut index = 0u64;
    let mut g = c.benchmark_group("log");
    g.bench_function("append_1_fdatasync", |b| {
        b.iter(|| {
            index += 1;
            log.append_sync([(LogId { term: 1, index }, payload.clone())])
                .unwrap()
        })
    });
    g.throughput(Throughput::Elements(16));
    g.bench_function("append_16_fdatasync", |b| {
        b.iter(|| {
            let batch: Vec<_> = (0..16)
                .map(|_| {
                    index += 1;
                    (LogId { term: 1, index }, payload.clone())
                })
                .collect();
            log.append_sync(batch).unwrap()
        })
    });
    g.finish();
}

fn snapshots(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let store = loaded_store(dir.path(), SNAPSHOT_KEYS);
    let file = dir.path().join("bench.snap");
    let info = snapshot::build(&store, &file).unwrap();
    let raw: usize = (0..SNAPSHOT_KEYS)
        .map(|i| key(i).len() + value(i).len())
        .sum();
    println!(
        "snapshot of {} keys: {} bytes of keys+values, body {} bytes before the codec, file {} bytes ({:.2}x smaller than the raw data)",
        info.key_count,
        raw,
        info.raw_size,
        info.total_size,
        raw as f64 / info.total_size as f64
    );
    let mut g = c.benchmark_group("snapshot");
    g.sample_size(10);
    g.throughput(Throughput::Elements(SNAPSHOT_KEYS as u64));
    g.bench_function("build_100k_keys", |b| {
        b.iter(|| snapshot::build(&store, &file).unwrap())
    });
    g.bench_function("restore_100k_keys", |b| {
        b.iter_batched(
            || {
                let target = tempfile::tempdir().unwrap();
                let store = MvccStore::open(target.path(), &MvccConfig::default()).unwrap();
                (target, store)
            },
            |(_target, store)| snapshot::restore(&file, &store).unwrap(),
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(3));
    targets = mvcc, log, snapshots
}
criterion_main!(benches);
