//! Importing etcd snapshots: what the sample session left is what the store holds, and a
//! damaged or crafted file changes nothing.

use bytes::Bytes;
use raftkv_proto::etcdserverpb::RangeRequest;
use raftkv_proto::mvccpb::KeyValue;

use super::samples::{buckets_with, seal, snapshot, versions};
use super::*;
use crate::error::MvccError;
use crate::mvcc::MvccConfig;

struct Fixture {
    store: MvccStore,
    dir: tempfile::TempDir,
}

fn open() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = MvccStore::open(&dir.path().join("db"), &MvccConfig::default()).unwrap();
    Fixture { store, dir }
}

impl Fixture {
    fn file(&self, bytes: &[u8]) -> std::path::PathBuf {
        let path = self.dir.path().join("etcd.db");
        std::fs::write(&path, bytes).unwrap();
        path
    }

    fn range(&self, key: &str, end: &str, rev: i64) -> Result<Vec<KeyValue>, MvccError> {
        let req = RangeRequest {
            key: Bytes::copy_from_slice(key.as_bytes()),
            range_end: Bytes::copy_from_slice(end.as_bytes()),
            revision: rev,
            ..Default::default()
        };
        Ok(self.store.range(&req)?.kvs)
    }
}

fn kv(key: &str, create: i64, modified: i64, version: i64, value: &str, lease: i64) -> KeyValue {
    KeyValue {
        key: Bytes::copy_from_slice(key.as_bytes()),
        create_revision: create,
        mod_revision: modified,
        version,
        value: Bytes::copy_from_slice(value.as_bytes()),
        lease,
    }
}

#[test]
fn every_version_lease_and_user_comes_across() {
    let f = open();
    let path = f.file(&snapshot(None));
    let imported = restore(&path, &f.store, false).unwrap();
    assert_eq!(
        imported,
        Imported {
            revision: 7,
            compact_revision: 3,
            keys: 4,
            versions: 7,
            leases: 1,
            users: 1,
            roles: 2,
        }
    );
    assert_eq!(f.store.revision(), 7);
    assert_eq!(f.store.compacted_revision(), 3);
    assert_eq!(
        f.range("a", "z", 0).unwrap(),
        vec![
            kv("a", 2, 5, 2, "2", 0),
            kv("b", 3, 3, 1, "x", 0x10),
            kv("d", 4, 4, 1, "1", 0),
            kv("e", 7, 7, 1, "1", 0x99),
        ]
    );
    // History above the compaction is there; below it is refused as etcd refuses it.
    assert_eq!(
        f.range("a", "z", 4).unwrap(),
        vec![
            kv("a", 2, 2, 1, "1", 0),
            kv("b", 3, 3, 1, "x", 0x10),
            kv("c", 4, 4, 1, "1", 0),
            kv("d", 4, 4, 1, "1", 0),
        ]
    );
    assert!(matches!(f.range("a", "z", 2), Err(MvccError::Compacted)));
    // The lease the file holds, with b attached; e keeps its lease id, attached to
    // nothing (etcd's restore cannot attach it either).
    assert_eq!(
        f.store.leases(),
        vec![(
            0x10,
            LeaseInfo {
                ttl: 60,
                remaining: 0
            }
        )]
    );
    assert_eq!(f.store.lease_keys(0x10).unwrap(), vec![Bytes::from("b")]);
    assert!(f.store.lease_keys(0x99).unwrap().is_empty());
    let auth = f.store.auth();
    assert!(auth.enabled);
    assert_eq!(auth.revision, 5);
    assert_eq!(auth.users.keys().collect::<Vec<_>>(), ["root"]);
    assert_eq!(auth.roles.keys().collect::<Vec<_>>(), ["reader", "root"]);
    assert_eq!(auth.roles["reader"].key_permission[0].key, "/r/");
}

#[test]
fn a_scheduled_compaction_is_finished_as_etcd_finishes_it() {
    let f = open();
    let path = f.file(&snapshot(Some(5)));
    let imported = restore(&path, &f.store, false).unwrap();
    assert_eq!(imported.compact_revision, 5);
    assert_eq!(f.store.compacted_revision(), 5);
    // a@2 is gone (a@5 is a's newest version at or below 5); c@4 stays (c's newest at or
    // below 5, deleted only at 6), and so does every version above 5.
    assert_eq!(imported.versions, 6);
    assert_eq!(imported.keys, 4);
    assert!(matches!(f.range("a", "z", 4), Err(MvccError::Compacted)));
    assert_eq!(f.range("a", "", 5).unwrap(), vec![kv("a", 2, 5, 2, "2", 0)]);
}

#[test]
fn status_is_what_etcdctl_computes() {
    let f = open();
    let bytes = snapshot(None);
    let path = f.file(&bytes);
    let status = status(&path).unwrap();
    // Keys in all buckets: 2 auth, 2 roles, 1 user, 1 cluster, 7 versions, 1 lease,
    // 1 member, 3 meta.
    assert_eq!(status.total_key, 18);
    assert_eq!(status.revision, 7);
    assert_eq!(status.total_size, bytes.len() as u64 - 32);
    // The hash is CRC-32C over names, keys and values in order (the known answer for the
    // CRC-32C check string, then the fold itself).
    let mut crc = Crc32c::default();
    crc.update(b"123456789");
    assert_eq!(crc.finish(), 0xE306_9283);
    let mut crc = Crc32c::default();
    for (name, items) in buckets_with(versions(), None) {
        crc.update(&name);
        for (k, v) in items {
            crc.update(&k);
            crc.update(&v);
        }
    }
    assert_eq!(status.hash, crc.finish());
}

#[test]
fn a_compaction_at_a_deletion_drops_the_key_entirely() {
    // Compacted at 6, where c was deleted: c's tombstone and every older c go (etcd keeps
    // no trace of c), the rest as at 6.
    let f = open();
    let path = f.file(&snapshot(Some(6)));
    let imported = restore(&path, &f.store, false).unwrap();
    assert_eq!(imported.compact_revision, 6);
    assert_eq!(imported.versions, 4); // a@5, b@3, d@4, e@7
    assert_eq!(f.range("c", "", 6).unwrap(), vec![], "c is not live at 6");
    assert!(matches!(f.range("c", "", 5), Err(MvccError::Compacted)));
}

#[test]
fn a_negative_lease_id_is_a_lease_as_in_etcd() {
    let f = open();
    let mut keys = versions();
    keys[0].1 = kv("a", 2, 2, 1, "1", -5).encode_to_vec();
    let path = f.file(&seal(bolt_writer::write(&buckets_with(keys, None), 4096)));
    restore(&path, &f.store, false).unwrap();
    assert_eq!(f.range("a", "", 4).unwrap()[0].lease, -5);
}

#[test]
fn only_bolt_files_are_taken_for_etcd_snapshots() {
    let f = open();
    let path = f.file(&snapshot(None));
    assert!(looks_like_bolt(&path).unwrap());
    restore(&path, &f.store, false).unwrap();
    let own = f.dir.path().join("own.snap");
    crate::snapshot::build(&f.store, &own).unwrap();
    assert!(!looks_like_bolt(&own).unwrap());
    // A raftkv snapshot whose revision's low half reads as bbolt's magic at byte 16 is
    // still raftkv's: page 0 of a bbolt file starts with its id, 0.
    let mut bytes = std::fs::read(&own).unwrap();
    bytes[16..20].copy_from_slice(&bolt::MAGIC.to_le_bytes());
    std::fs::write(&own, &bytes).unwrap();
    assert!(!looks_like_bolt(&own).unwrap());
}

#[test]
fn the_trailer_is_checked_as_etcdctl_checks_it() {
    let f = open();
    let mut bytes = snapshot(None);
    let path = f.file(&bytes[..bytes.len() - 32]);
    assert!(matches!(
        restore(&path, &f.store, false),
        Err(SnapshotError::MissingHash)
    ));
    // A database file copied from a data dir restores with --skip-hash-check.
    restore(&path, &f.store, true).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    let path = f.file(&bytes);
    assert!(matches!(
        restore(&path, &f.store, false),
        Err(SnapshotError::ChecksumMismatch)
    ));
}

/// A refused file leaves the store exactly as it was: every version, the history, the
/// leases, the auth store, the revision and the compaction.
fn refused(f: &Fixture, keys: Vec<(Vec<u8>, Vec<u8>)>, says: &str) {
    let before = (
        everything(f),
        f.store.revision(),
        f.store.compacted_revision(),
    );
    let path = f.file(&seal(bolt_writer::write(&buckets_with(keys, None), 4096)));
    match restore(&path, &f.store, false) {
        Err(SnapshotError::Corrupt(m)) => assert!(m.contains(says), "{m}"),
        other => panic!("expected corrupt ({says}), got {other:?}"),
    }
    let after = (
        everything(f),
        f.store.revision(),
        f.store.compacted_revision(),
    );
    assert_eq!(after, before);
}

#[test]
fn inconsistent_versions_are_refused_and_change_nothing() {
    let f = open();
    let path = f.file(&snapshot(None));
    restore(&path, &f.store, false).unwrap();

    let mut keys = versions();
    // Two versions of "a" at revision 5 (subs 0 and 1).
    let mut dup = keys[4].clone();
    dup.0[16] = 1;
    keys.insert(5, dup);
    refused(&f, keys, "two versions");

    let mut keys = versions();
    keys[0].1 = kv("a", 2, 3, 1, "1", 0).encode_to_vec(); // mod revision not its own
    refused(&f, keys, "revision 2_0: revisions or version out of range");

    let mut keys = versions();
    keys[0].1 = kv("a", 9, 2, 1, "1", 0).encode_to_vec(); // created after it changed
    refused(&f, keys, "revision 2_0: revisions or version out of range");

    let mut keys = versions();
    keys[0].1 = kv("", 2, 2, 1, "1", 0).encode_to_vec();
    refused(&f, keys, "key empty");

    let mut keys = versions();
    keys[0].0.truncate(16);
    refused(&f, keys, "a revision of 16 bytes");

    let mut keys = versions();
    keys[1].1 = vec![0xFF; 8];
    refused(&f, keys, "not a KeyValue");

    let mut keys = versions();
    keys[0].0[..8].copy_from_slice(&u64::MAX.to_be_bytes());
    keys.rotate_left(1); // keep the bucket in order
    refused(&f, keys, "key bucket: revision 18446744073709551615_0");
}

#[test]
fn malformed_leases_and_users_are_refused() {
    let f = open();
    let good = buckets_with(versions(), None);
    let find = |b: &mut Vec<bolt_writer::BucketData>, name: &[u8]| {
        b.iter().position(|(n, _)| n == name).unwrap()
    };
    let mut b = good.clone();
    let i = find(&mut b, b"lease");
    b[i].1[0].1 = vec![0x08, 0x11, 0x10, 0x3c]; // id 0x11 stored under key 0x10
    let path = f.file(&seal(bolt_writer::write(&b, 4096)));
    assert!(matches!(
        restore(&path, &f.store, false),
        Err(SnapshotError::Corrupt(_))
    ));

    let mut b = good.clone();
    let i = find(&mut b, b"authUsers");
    b[i].1[0].0 = b"toor".to_vec(); // a user under another name
    let path = f.file(&seal(bolt_writer::write(&b, 4096)));
    assert!(matches!(
        restore(&path, &f.store, false),
        Err(SnapshotError::Corrupt(_))
    ));

    let mut b = good;
    let i = find(&mut b, b"meta");
    b[i].1[1].1 = revision_bytes(9, 0, false); // compacted past the last revision
    let path = f.file(&seal(bolt_writer::write(&b, 4096)));
    restore(&path, &f.store, false).unwrap();
    // etcd's rule: the revision is the compaction's when that is later.
    assert_eq!(f.store.revision(), 9);
    assert_eq!(f.store.compacted_revision(), 9);
}

/// Every version, lease and user of a store, as reads see them.
type Everything = (
    Vec<KeyValue>,
    Vec<KeyValue>,
    Vec<(i64, LeaseInfo)>,
    AuthTable,
);

fn everything(f: &Fixture) -> Everything {
    (
        f.range("\0", "", 0).unwrap(),
        f.range("\0", "", 4).unwrap(),
        f.store.leases(),
        (*f.store.auth()).clone(),
    )
}

#[test]
fn export_writes_what_an_import_reads_back_the_same() {
    // etcd's file → raftkv → raftkv's snapshot → etcd's format → raftkv again.
    let first = open();
    let path = first.file(&snapshot(None));
    restore(&path, &first.store, false).unwrap();
    first.store.flush().unwrap();
    let own = first.dir.path().join("own.snap");
    crate::snapshot::build(&first.store, &own).unwrap();
    let exported_path = first.dir.path().join("exported.db");
    let exported = export(&own, &exported_path).unwrap();
    assert_eq!(
        exported,
        Exported {
            revision: 7,
            source_revision: 7,
            versions: 7,
            leases: 1,
            bytes: std::fs::metadata(&exported_path).unwrap().len(),
        }
    );
    assert!(!first.dir.path().join("exported.db.part").exists());
    let status = status(&exported_path).unwrap();
    assert_eq!(status.revision, 7);

    let second = open();
    let imported = restore(&exported_path, &second.store, false).unwrap();
    assert_eq!(imported.revision, 7);
    assert_eq!(imported.compact_revision, 3);
    assert_eq!(everything(&second), everything(&first));
    assert_eq!(
        second.store.lease_keys(0x10).unwrap(),
        vec![Bytes::from("b")]
    );
    assert!(second.store.lease_keys(0x99).unwrap().is_empty());
}

#[test]
fn export_refuses_a_damaged_raftkv_snapshot_and_writes_nothing() {
    let f = open();
    let path = f.file(&snapshot(None));
    restore(&path, &f.store, false).unwrap();
    let own = f.dir.path().join("own.snap");
    crate::snapshot::build(&f.store, &own).unwrap();
    let mut bytes = std::fs::read(&own).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 1;
    std::fs::write(&own, &bytes).unwrap();
    let dest = f.dir.path().join("out.db");
    assert!(export(&own, &dest).is_err());
    assert!(!dest.exists());
    assert!(!f.dir.path().join("out.db.part").exists());
}

#[test]
fn a_spilled_export_writes_the_same_file_and_leaves_no_runs() {
    use raftkv_proto::etcdserverpb::request_op::Request;
    use raftkv_proto::etcdserverpb::{DeleteRangeRequest, PutRequest, RequestOp, TxnRequest};
    use raftkv_proto::raftkvpb::{Command, command};

    use crate::mvcc::AppliedState;

    let f = open();
    let path = f.file(&snapshot(None));
    restore(&path, &f.store, false).unwrap();
    let apply = |op: command::Op| {
        let cmd = Command {
            op: Some(op),
            ..Default::default()
        };
        f.store.apply(&cmd, &AppliedState::default()).unwrap();
    };
    let put = |key: String, len: usize| PutRequest {
        key: Bytes::from(key),
        value: Bytes::from(vec![b'v'; len]),
        ..Default::default()
    };
    // Overwrites, values of many sizes (some over a bbolt page), a transaction's puts in
    // one revision (numbered by key), and a delete of many keys in one revision.
    for i in 0..300 {
        apply(command::Op::Put(put(
            format!("k{:03}", i % 120),
            (i * 37) % 5000,
        )));
    }
    let txn = TxnRequest {
        success: (0..20)
            .rev()
            .map(|i| RequestOp {
                request: Some(Request::RequestPut(put(format!("t{i:02}"), 10))),
            })
            .collect(),
        ..Default::default()
    };
    apply(command::Op::Txn(txn));
    apply(command::Op::DeleteRange(DeleteRangeRequest {
        key: Bytes::from("k050"),
        range_end: Bytes::from("k070"),
        prev_kv: false,
    }));
    f.store.flush().unwrap();
    let own = f.dir.path().join("own.snap");
    crate::snapshot::build(&f.store, &own).unwrap();

    let whole = f.dir.path().join("whole.db");
    let spilled = f.dir.path().join("spilled.db");
    let one_run = super::export::export_with(&own, &whole, super::export::RUN_BYTES).unwrap();
    // Every version its own run: the merge decides the whole order.
    let many_runs = super::export::export_with(&own, &spilled, 1).unwrap();
    assert_eq!(one_run.versions, 7 + 300 + 20 + 20);
    assert_eq!(
        std::fs::read(&whole).unwrap(),
        std::fs::read(&spilled).unwrap()
    );
    assert_eq!(many_runs.bytes, one_run.bytes);
    let left: Vec<_> = std::fs::read_dir(f.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.contains(".part"))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");

    // What etcd would read back is what the store holds.
    let second = open();
    restore(&spilled, &second.store, false).unwrap();
    assert_eq!(everything(&second), everything(&f));
}
