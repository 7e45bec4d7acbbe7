//! Snapshot files: round trips through restore, the etcdctl-compatible trailer, snapshots
//! taken while writes continue, and damaged or foreign files.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use proptest::prelude::*;
use raftkv_proto::etcdserverpb::{CompactionRequest, DeleteRangeRequest, PutRequest, RangeRequest};
use raftkv_proto::mvccpb::KeyValue;
use raftkv_proto::raftkvpb::{Command, command};
use raftkv_storage::snapshot::{self, SnapshotInfo};
use raftkv_storage::{AppliedState, MvccConfig, MvccStore, SnapshotError};
use sha2::{Digest, Sha256};

/// Tracks the peak of live heap bytes on each thread, so the bomb tests can check what a
/// hostile file made the reader allocate.
mod peak {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    pub struct Tracking;

    thread_local! {
        static LIVE: Cell<isize> = const { Cell::new(0) };
        static PEAK: Cell<isize> = const { Cell::new(0) };
    }

    fn add(delta: isize) {
        let _ = LIVE.try_with(|live| {
            live.set(live.get() + delta);
            let _ = PEAK.try_with(|peak| peak.set(peak.get().max(live.get())));
        });
    }

    unsafe impl GlobalAlloc for Tracking {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            add(layout.size() as isize);
            unsafe { System.alloc(layout) }
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            add(-(layout.size() as isize));
            unsafe { System.dealloc(ptr, layout) }
        }
        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            add(new_size as isize - layout.size() as isize);
            unsafe { System.realloc(ptr, layout, new_size) }
        }
    }

    /// Runs `f` and returns its result with the most heap bytes it held at once.
    pub fn measure<T>(f: impl FnOnce() -> T) -> (T, usize) {
        let base = LIVE.with(Cell::get);
        PEAK.with(|p| p.set(base));
        let out = f();
        (out, (PEAK.with(Cell::get) - base).max(0) as usize)
    }
}

#[global_allocator]
static ALLOCATOR: peak::Tracking = peak::Tracking;

fn open(dir: &Path) -> MvccStore {
    MvccStore::open(dir, &MvccConfig::default()).unwrap()
}

/// Applies `op`; a compaction's deletes run to the end before it returns (a `physical`
/// compaction's answer waits for them).
fn apply(store: &MvccStore, op: command::Op) {
    let compaction = matches!(op, command::Op::Compaction(_));
    let applied = AppliedState {
        applied: Some(b"applied-id".to_vec()),
        membership: Some(b"members".to_vec()),
        index: 3,
    };
    store
        .apply(
            &Command {
                op: Some(op),
                ..Default::default()
            },
            &applied,
        )
        .unwrap();
    if compaction {
        store.finish_compaction().unwrap();
    }
}

fn put(store: &MvccStore, key: &str, value: &str) {
    apply(
        store,
        command::Op::Put(PutRequest {
            key: Bytes::copy_from_slice(key.as_bytes()),
            value: Bytes::copy_from_slice(value.as_bytes()),
            ..Default::default()
        }),
    );
}

fn all_at(store: &MvccStore, revision: i64) -> Vec<KeyValue> {
    store
        .range(&RangeRequest {
            key: Bytes::from_static(b"\0"),
            range_end: Bytes::from_static(b"\0"),
            revision,
            ..Default::default()
        })
        .unwrap()
        .kvs
}

/// A store with history: overwrites, deletes, a compaction, binary keys.
fn loaded(dir: &Path) -> MvccStore {
    let store = open(dir);
    for i in 0..3000 {
        put(
            &store,
            &format!("/registry/pods/ns-{:02}/pod-{i:05}", i % 7),
            &format!("{{\"n\":{i},\"pad\":\"{}\"}}", "x".repeat(i % 40)),
        );
    }
    for i in (0..3000).step_by(3) {
        put(
            &store,
            &format!("/registry/pods/ns-{:02}/pod-{i:05}", i % 7),
            "updated",
        );
    }
    apply(
        &store,
        command::Op::DeleteRange(DeleteRangeRequest {
            key: Bytes::from_static(b"/registry/pods/ns-03/"),
            range_end: Bytes::from_static(b"/registry/pods/ns-030"),
            prev_kv: false,
        }),
    );
    apply(
        &store,
        command::Op::Compaction(CompactionRequest {
            revision: 2500,
            physical: true,
        }),
    );
    apply(
        &store,
        command::Op::Put(PutRequest {
            key: Bytes::from_static(b"\x00\xff\x00"),
            value: Bytes::from_static(b"\x00"),
            ..Default::default()
        }),
    );
    put(&store, "last", "one");
    store
}

#[test]
fn round_trip_keeps_every_revision_and_the_applied_state() {
    let src_dir = tempfile::tempdir().unwrap();
    let store = loaded(src_dir.path());
    let file = src_dir.path().join("snap.db");
    let info = snapshot::build(&store, &file).unwrap();
    assert_eq!(info.meta.revision, store.revision());
    assert_eq!(info.meta.compact_revision, 2500);
    assert_eq!(info.meta.applied, b"applied-id");
    assert_eq!(info.key_count, all_at(&store, 0).len() as u64);
    assert_eq!(snapshot::read_info(&file).unwrap(), info);

    let dst_dir = tempfile::tempdir().unwrap();
    let restored = open(dst_dir.path());
    put(&restored, "stale", "key from before the restore");
    let restored_info = snapshot::restore(&file, &restored).unwrap();
    assert_eq!(restored_info, info);
    assert_eq!(
        (restored.revision(), restored.compacted_revision()),
        (store.revision(), 2500)
    );
    for rev in [0, 2500, 3000, 4000, store.revision()] {
        assert_eq!(
            all_at(&restored, rev),
            all_at(&store, rev),
            "at revision {rev}"
        );
    }
    assert_eq!(
        restored.applied_state().unwrap().membership.as_deref(),
        Some(&b"members"[..])
    );
    // The same history: the same hashes and bytes in use (the stale key is gone).
    assert_eq!(restored.hash_kv(0).unwrap(), store.hash_kv(0).unwrap());
    assert_eq!(
        restored.hash_kv(3000).unwrap(),
        store.hash_kv(3000).unwrap()
    );
    assert_eq!(restored.hash_all().unwrap(), store.hash_all().unwrap());
    assert_eq!(restored.size_in_use(), store.size_in_use());
    // The restored contents are what a reopen finds.
    drop(restored);
    let reopened = open(dst_dir.path());
    assert_eq!(all_at(&reopened, 0), all_at(&store, 0));
    assert_eq!(reopened.revision(), store.revision());
    assert_eq!(reopened.size_in_use(), store.size_in_use());
}

#[test]
fn file_ends_with_the_sha256_that_etcdctl_checks() {
    let dir = tempfile::tempdir().unwrap();
    let store = loaded(dir.path());
    let file = dir.path().join("snap.db");
    let info = snapshot::build(&store, &file).unwrap();
    let bytes = std::fs::read(&file).unwrap();
    // etcdctl snapshot save: size % 512 == 32, last 32 bytes = SHA-256 of the rest.
    assert_eq!(bytes.len() % 512, 32);
    let (body, trailer) = bytes.split_at(bytes.len() - 32);
    assert_eq!(Sha256::digest(body).as_slice(), trailer);
    assert_eq!(info.total_size, bytes.len() as u64);
    assert_eq!(info.hash, crc32fast::hash(body));
    // The codec pays off on this layout.
    assert!(
        info.total_size < info.raw_size,
        "{} >= {}",
        info.total_size,
        info.raw_size
    );
}

#[test]
fn empty_store_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let file = dir.path().join("empty.db");
    let info = snapshot::build(&store, &file).unwrap();
    assert_eq!(
        (info.meta.revision, info.key_count, info.record_count),
        (1, 0, 0)
    );
    let other = tempfile::tempdir().unwrap();
    let restored = open(other.path());
    snapshot::restore(&file, &restored).unwrap();
    assert!(all_at(&restored, 0).is_empty());
}

#[test]
fn snapshot_while_writes_continue_is_a_consistent_cut() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(loaded(dir.path()));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (store, stop) = (store.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                put(
                    &store,
                    &format!("/registry/pods/ns-{:02}/pod-{:05}", i % 7, i % 3000),
                    &format!("during-{i}"),
                );
                i += 1;
            }
            i
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(20));
    let file = dir.path().join("live.db");
    let info: SnapshotInfo = snapshot::build(&store, &file).unwrap();
    stop.store(true, Ordering::Relaxed);
    let writes = writer.join().unwrap();
    assert!(
        writes > 0 && store.revision() > info.meta.revision,
        "writes went on during the build"
    );
    let other = tempfile::tempdir().unwrap();
    let restored = open(other.path());
    snapshot::restore(&file, &restored).unwrap();
    assert_eq!(all_at(&restored, 0), all_at(&store, info.meta.revision));
}

/// A Raft snapshot sent to a follower is written from a point pinned earlier, between two
/// applies: writes and a compaction that came after the pin must not show in the file, and
/// the compaction's deletes wait until the file is written.
#[test]
fn a_pinned_point_written_later_is_the_store_as_it_was_then() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(loaded(dir.path()));
    let pinned = store.pin_snapshot_point().unwrap();
    let at = pinned.point.revision;
    let expected = all_at(&store, at);
    for i in 0..3000 {
        put(
            &store,
            &format!("/registry/pods/ns-{:02}/pod-{i:05}", i % 7),
            "after the pin",
        );
    }
    // A compaction above the pinned revision: applied (the writer lock is free again once
    // the deletes are done), but its deletes wait for the pin.
    let compacted = Arc::new(AtomicBool::new(false));
    let compaction = {
        let (store, compacted) = (store.clone(), compacted.clone());
        std::thread::spawn(move || {
            let revision = store.revision();
            apply(
                &store,
                command::Op::Compaction(CompactionRequest {
                    revision,
                    physical: true,
                }),
            );
            compacted.store(true, Ordering::SeqCst);
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(100));
    assert!(
        !compacted.load(Ordering::SeqCst),
        "the compaction removed versions under a pin"
    );
    let file = dir.path().join("sent.part");
    let info = snapshot::build_scratch_at(&store, &pinned, &file).unwrap();
    assert_eq!(info.meta.revision, at);
    drop(pinned);
    compaction.join().unwrap();
    assert!(compacted.load(Ordering::SeqCst));
    let other = tempfile::tempdir().unwrap();
    let restored = open(other.path());
    snapshot::restore(&file, &restored).unwrap();
    assert_eq!(all_at(&restored, 0), expected);
    assert_eq!(restored.revision(), at);
}

fn build_sample() -> (tempfile::TempDir, std::path::PathBuf, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    for i in 0..200 {
        put(&store, &format!("k{i:04}"), &format!("value {i}"));
    }
    let file = dir.path().join("s.db");
    snapshot::build(&store, &file).unwrap();
    let bytes = std::fs::read(&file).unwrap();
    (dir, file, bytes)
}

#[test]
fn damaged_and_foreign_files_are_refused() {
    let (dir, file, clean) = build_sample();
    // Every single-byte flip is caught (SHA-256, then the structure).
    for at in (0..clean.len()).step_by(7) {
        let mut bad = clean.clone();
        bad[at] ^= 0x01;
        std::fs::write(&file, &bad).unwrap();
        assert!(snapshot::read_info(&file).is_err(), "flip at {at}");
    }
    // Truncated.
    std::fs::write(&file, &clean[..clean.len() - 100]).unwrap();
    assert!(matches!(
        snapshot::read_info(&file),
        Err(SnapshotError::ChecksumMismatch)
    ));
    // Not ours: an etcd (bbolt) snapshot starts with a bbolt page, not our magic.
    let mut bbolt = vec![0u8; 4096 * 4 + 32];
    bbolt[16..20].copy_from_slice(&0xED0CDAEDu32.to_le_bytes());
    std::fs::write(&file, &bbolt).unwrap();
    assert!(matches!(
        snapshot::read_info(&file),
        Err(SnapshotError::NotASnapshot)
    ));
    std::fs::write(&file, b"").unwrap();
    assert!(matches!(
        snapshot::read_info(&file),
        Err(SnapshotError::NotASnapshot)
    ));
    // A failed restore leaves the store as it was.
    std::fs::write(&file, &clean[..clean.len() - 1]).unwrap();
    let target = open(&dir.path().join("target"));
    put(&target, "keep", "me");
    assert!(snapshot::restore(&file, &target).is_err());
    assert_eq!(all_at(&target, 0).len(), 1);
}

/// A snapshot file with a real (format 5) header and the given blocks as stored (kind byte
/// first), every checksum correct, so only the bounds can refuse what the blocks hold.
fn forge(frames: &[Vec<u8>]) -> (tempfile::TempDir, std::path::PathBuf) {
    let (dir, file, clean) = build_sample();
    let body_len = u32::from_le_bytes(clean[12..16].try_into().unwrap()) as usize;
    let mut out = clean[..16 + body_len + 4].to_vec();
    for frame in frames {
        out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        out.extend_from_slice(frame);
    }
    out.extend_from_slice(&0u32.to_le_bytes());
    let footer_len = 8 + 4 * 8 + 4;
    let pad = (512 - (out.len() + footer_len) % 512) % 512;
    out.resize(out.len() + pad, 0);
    let mut footer = b"RKVSEND1".to_vec();
    footer.extend_from_slice(&[0u8; 32]);
    footer.extend_from_slice(&crc32fast::hash(&footer).to_le_bytes());
    out.extend_from_slice(&footer);
    let digest = Sha256::digest(&out);
    out.extend_from_slice(&digest);
    std::fs::write(&file, &out).unwrap();
    (dir, file)
}

/// A format 5 block holding `payload` as block kind `kind` (1 codec, 2 zstd, 3 codec then
/// zstd).
fn block(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![kind];
    out.extend_from_slice(payload);
    out
}

fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

#[test]
fn decompression_bombs_are_refused_within_bounded_memory() {
    // A codec frame of 1 MiB blocks of one repeat token each, claiming 1 GiB.
    let mut frame = b"RKVC".to_vec();
    frame.extend_from_slice(&[1, 0, 20]);
    varint(1 << 30, &mut frame);
    for _ in 0..1024 {
        let mut tokens = Vec::new();
        varint(3, &mut tokens);
        varint(1 << 20, &mut tokens);
        tokens.push(b'x');
        frame.push(1);
        frame.extend_from_slice(&(tokens.len() as u32).to_le_bytes());
        frame.extend_from_slice(&tokens);
    }
    let crc = crc32fast::hash(&frame);
    frame.extend_from_slice(&crc.to_le_bytes());
    // As a block of its own, and wrapped in zstd (which must give back only the small
    // frame for the codec to refuse).
    let wrapped = zstd::bulk::compress(&frame, 3).unwrap();
    for stored in [block(1, &frame), block(3, &wrapped)] {
        let (_dir, file) = forge(&[stored]);
        let (result, peak) = peak::measure(|| snapshot::read_info(&file));
        assert!(matches!(result, Err(SnapshotError::Block(_))), "{result:?}");
        assert!(peak < 8 << 20, "reading a 1 GiB claim held {peak} bytes");
        eprintln!("a frame claiming 1 GiB: refused holding at most {peak} bytes");
    }

    // A zstd frame of 96 MiB of zeros (a few KiB on disk), past what any block decodes to:
    // refused from its header, before the output is allocated.
    let zeros = zstd::bulk::compress(&vec![0u8; 96 << 20], 1).unwrap();
    for kind in [2, 3] {
        let (_dir, file) = forge(&[block(kind, &zeros)]);
        let (result, peak) = peak::measure(|| snapshot::read_info(&file));
        assert!(
            matches!(&result, Err(SnapshotError::Corrupt(m)) if m.contains("larger")),
            "{result:?}"
        );
        assert!(
            peak < 8 << 20,
            "reading a 96 MiB zstd claim held {peak} bytes"
        );
    }

    // Columns whose keys share a 1 MiB prefix with the one before: 1 MiB of raw bytes
    // standing for 4 GiB of keys.
    let rows = 4096usize;
    let mut raw = Vec::new();
    varint(rows as u64, &mut raw);
    for i in 0..rows {
        varint(if i == 0 { 0 } else { 1 << 20 }, &mut raw); // shared prefix
    }
    for i in 0..rows {
        varint(if i == 0 { 1 << 20 } else { 0 }, &mut raw); // suffix length
    }
    for i in 0..rows {
        varint(if i == 0 { 2 } else { 1 }, &mut raw); // revision deltas (zigzag: +1, -1)
    }
    raw.extend(std::iter::repeat_n(1u8, rows)); // tombstones
    for _ in 0..5 {
        raw.extend(std::iter::repeat_n(0u8, rows)); // distance, version, lease, value columns
    }
    raw.extend(std::iter::repeat_n(b'k', 1 << 20));
    let (_dir, file) = forge(&[block(1, &raftkv_codec::compress(&raw))]);
    let (result, peak) = peak::measure(|| snapshot::read_info(&file));
    assert!(
        matches!(result, Err(SnapshotError::Corrupt(_))),
        "{result:?}"
    );
    assert!(
        peak < 200 << 20,
        "decoding 4 GiB of shared prefixes held {peak} bytes"
    );
    eprintln!("columns standing for 4 GiB of keys: refused holding at most {peak} bytes");
}

/// Re-seals a damaged body with a correct SHA-256, so the structural checks must catch it.
fn reseal(bytes: &mut [u8]) {
    let n = bytes.len() - 32;
    let digest = Sha256::digest(&bytes[..n]);
    bytes[n..].copy_from_slice(&digest);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn resealed_damage_never_panics(edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6)) {
        let (dir, file, mut bytes) = build_sample();
        for (at, value) in edits {
            let n = bytes.len() - 32;
            bytes[at % n] = value;
        }
        reseal(&mut bytes);
        std::fs::write(&file, &bytes).unwrap();
        let _ = snapshot::read_info(&file);
        let target = open(&dir.path().join("t"));
        let _ = snapshot::restore(&file, &target);
    }
}

fn alarm(store: &MvccStore, member: u64, activate: bool) {
    use raftkv_proto::etcdserverpb::AlarmRequest;
    apply(
        store,
        command::Op::Alarm(AlarmRequest {
            action: if activate { 1 } else { 2 },
            member_id: member,
            alarm: 1,
        }),
    );
}

#[test]
fn alarms_travel_in_snapshots_and_version_1_files_still_read() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir.path().join("a"));
    put(&store, "k", "v");
    alarm(&store, 7, true);
    alarm(&store, 9, true);
    alarm(&store, 9, false);
    assert_eq!(store.alarms(), vec![(7, 1)]);
    assert!(store.has_alarm(1));
    let file = dir.path().join("s.db");
    snapshot::build(&store, &file).unwrap();
    let restored = open(&dir.path().join("b"));
    let info = snapshot::restore(&file, &restored).unwrap();
    assert_eq!(info.meta.alarms, vec![(7, 1)]);
    assert_eq!(restored.alarms(), vec![(7, 1)]);
    // Reopened from disk, the alarm is still up.
    drop(restored);
    assert_eq!(open(&dir.path().join("b")).alarms(), vec![(7, 1)]);
    // A backup restored into a new cluster starts with none.
    let fresh = open(&dir.path().join("c"));
    let options = snapshot::RestoreOptions {
        keep_raft_state: false,
        skip_hash_check: false,
    };
    snapshot::restore_with(&file, &fresh, &options).unwrap();
    assert!(fresh.alarms().is_empty());

    assert_eq!(&std::fs::read(&file).unwrap()[8..12], &5u32.to_le_bytes());

    // The same data as version 4 wrote it (every block a codec frame, no kind byte) ...
    snapshot::build_with(&store, &file, snapshot::BlockStages::CodecOnly).unwrap();
    let bytes = std::fs::read(&file).unwrap();
    assert_eq!(&bytes[8..12], &4u32.to_le_bytes());
    let v4 = open(&dir.path().join("v4"));
    assert_eq!(
        snapshot::restore(&file, &v4).unwrap().meta.alarms,
        vec![(7, 1)]
    );
    assert_eq!(all_at(&v4, 0).len(), 1);
    // ... and as versions 1 and 3 wrote it: no alarms blob (nor version 3's leases blob,
    // empty here, nor version 4's auth table) in the header, or only no auth table.
    let auth_len = 4 + raftkv_storage::mvcc::auth::AuthTable::default()
        .encode()
        .len();
    for (version, cut) in [(1u32, 4 + 12 + 4 + auth_len), (3, auth_len)] {
        std::fs::write(&file, older_format(&bytes, version, cut)).unwrap();
        let old = open(&dir.path().join(format!("v{version}")));
        let info = snapshot::restore(&file, &old).unwrap();
        assert_eq!(info.meta.alarms.is_empty(), version == 1);
        assert_eq!(*old.auth(), Default::default());
        assert_eq!(all_at(&old, 0).len(), 1);
    }
}

/// `bytes` (a current snapshot file) as format `version` wrote it: the last `cut` bytes of
/// the header body dropped, the size kept 32 mod 512 with padding, checksums redone.
fn older_format(bytes: &[u8], version: u32, cut: usize) -> Vec<u8> {
    let body_len = u32::from_le_bytes(bytes[12..16].try_into().unwrap()) as usize;
    let body = &bytes[16..16 + body_len];
    let old_body = &body[..body.len() - cut];
    let mut out = b"RKVSNAP1".to_vec();
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&(old_body.len() as u32).to_le_bytes());
    out.extend_from_slice(old_body);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    let rest = &bytes[16 + body_len + 4..bytes.len() - 32];
    let footer_at = rest.len() - (8 + 4 * 8 + 4);
    out.extend_from_slice(&rest[..footer_at]);
    out.extend(std::iter::repeat_n(0u8, cut));
    out.extend_from_slice(&rest[footer_at..]);
    let digest = Sha256::digest(&out);
    out.extend_from_slice(&digest);
    out
}

#[test]
fn many_blocks_encoded_in_parallel_come_back_in_order() {
    // Over five blocks of versions, alternating JSON objects and plain values in runs, so
    // that blocks of different kinds (split, codec, zstd) are encoded side by side and must
    // still be written in key order.
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir.path().join("a"));
    for i in 0..22_000u32 {
        let value = if (i / 3000) % 2 == 0 {
            format!(
                "{{\"uid\":\"{:08x}\",\"n\":{i}}}",
                i.wrapping_mul(2_654_435_761)
            )
        } else {
            "ab".repeat(1 + i as usize % 20)
        };
        put(&store, &format!("k/{i:06}"), &value);
    }
    let file = dir.path().join("s.db");
    let info = snapshot::build(&store, &file).unwrap();
    assert_eq!(info.record_count, 22_000);
    let restored = open(&dir.path().join("b"));
    snapshot::restore(&file, &restored).unwrap();
    assert_eq!(all_at(&restored, 0), all_at(&store, 0));
    assert_eq!(restored.hash_kv(0).unwrap(), store.hash_kv(0).unwrap());
}

#[test]
fn a_restore_that_fails_part_way_leaves_the_store_as_it_was() {
    // Blocks are decoded on one thread while another writes them, so a failure after some
    // blocks were written must still leave the store untouched and usable.
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir.path().join("a"));
    for i in 0..12_000u32 {
        put(
            &store,
            &format!("k/{i:06}"),
            &format!("{:08x}", i.wrapping_mul(97)),
        );
    }
    let file = dir.path().join("s.db");
    let info = snapshot::build(&store, &file).unwrap();
    assert!(info.meta.revision > 0);
    let clean = std::fs::read(&file).unwrap();
    // The first block starts after the fixed header, its body and the body's CRC.
    let body_len = u32::from_le_bytes(clean[12..16].try_into().unwrap()) as usize;
    let first = 16 + body_len + 4;
    let first_len = u32::from_le_bytes(clean[first..first + 4].try_into().unwrap()) as usize;
    let second = first + 4 + first_len;
    let second_len = u32::from_le_bytes(clean[second..second + 4].try_into().unwrap());
    assert!(second_len > 0, "the sample must have at least two blocks");

    let target = open(&dir.path().join("t"));
    put(&target, "keep", "me");
    let before = all_at(&target, 0);
    // (1) The second block's length runs past the end: the first block was handed to the
    // writer already. (2) The footer's counts are wrong: every block was written first.
    let footer = clean.len() - 32 - 44;
    for damage in [(second, 0xFFu8), (footer + 8, 0x55u8)] {
        let mut bad = clean.clone();
        bad[damage.0] ^= damage.1;
        reseal(&mut bad);
        std::fs::write(&file, &bad).unwrap();
        assert!(matches!(
            snapshot::restore(&file, &target),
            Err(SnapshotError::Corrupt(_))
        ));
        assert_eq!(all_at(&target, 0), before);
    }
    // Writers were let go.
    put(&target, "keep", "too");
    assert_eq!(all_at(&target, 0)[0].value, &b"too"[..]);
    // The same store then takes the undamaged file.
    std::fs::write(&file, &clean).unwrap();
    snapshot::restore(&file, &target).unwrap();
    assert_eq!(all_at(&target, 0), all_at(&store, 0));
    assert_eq!(target.hash_kv(0).unwrap(), store.hash_kv(0).unwrap());
}

#[test]
fn a_scratch_build_writes_the_same_file() {
    // `Maintenance.Snapshot` builds without fsync; the bytes must not differ for it.
    let dir = tempfile::tempdir().unwrap();
    let store = loaded(&dir.path().join("a"));
    let (durable, scratch) = (dir.path().join("d.db"), dir.path().join("s.db"));
    let a = snapshot::build(&store, &durable).unwrap();
    let b = snapshot::build_scratch(&store, &scratch).unwrap();
    assert_eq!(a.hash, b.hash);
    assert_eq!(
        std::fs::read(&durable).unwrap(),
        std::fs::read(&scratch).unwrap()
    );
    assert!(!dir.path().join("s.part").exists());
}
