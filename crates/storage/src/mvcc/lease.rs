//! etcd's lease table, as the log leaves it on every member: which leases exist, the TTL
//! each was granted, the remaining TTL of its last checkpoint, and which keys are attached.
//!
//! Expiry is not decided here. The leader's lessor (raft crate) times leases and proposes a
//! revoke for each that runs out, so every member deletes the same keys at the same
//! revision. This module only applies grants, revokes and checkpoints.
//!
//! Layout (see `encoding`):
//! - `0x04 | id (u64 BE)` → varint granted TTL, varint remaining TTL of the last checkpoint
//!   (0: none).
//! - `0x05 | id (u64 BE) | user key` → empty: `key` was put with lease `id`. The index is a
//!   superset of the truth: a put without the lease, or a delete, leaves the entry (finding
//!   the previous lease of every changed key would cost a read per write); whoever reads
//!   it checks the key's latest version still names the lease, and a revoke removes the
//!   lease's entries with it.
//!
//! Lease changes are stored in one sled batch together with the applied point, so a crash
//! cannot leave a lease revoked (or granted) while the log entry that did it is replayed
//! again: replay finds exactly the table the entry was first applied to.

use std::collections::BTreeMap;

use crate::error::MvccError;
use crate::mvcc::encoding::{get_varint, put_varint};

/// First byte of every lease record key.
pub(crate) const LEASE_SPACE: u8 = 0x04;
/// First byte of every lease attachment index key.
pub(crate) const LEASE_KEY_SPACE: u8 = 0x05;

/// One lease as the table holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseInfo {
    /// The TTL it was granted (seconds).
    pub ttl: i64,
    /// The remaining TTL of its last checkpoint (seconds; 0: none).
    pub remaining: i64,
}

/// The leases, by id.
pub type Leases = BTreeMap<i64, LeaseInfo>;

/// The record key of lease `id`.
pub(crate) fn lease_key(id: i64) -> [u8; 9] {
    let mut out = [0u8; 9];
    out[0] = LEASE_SPACE;
    out[1..].copy_from_slice(&(id as u64).to_be_bytes());
    out
}

/// The index key saying `key` was put with lease `id`.
pub(crate) fn lease_key_index(id: i64, key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(9 + key.len());
    out.push(LEASE_KEY_SPACE);
    out.extend_from_slice(&(id as u64).to_be_bytes());
    out.extend_from_slice(key);
    out
}

/// The lease id of an index key, checking its shape.
pub(crate) fn indexed_lease(raw: &[u8]) -> Result<i64, MvccError> {
    match raw.get(1..9) {
        Some(id) if raw[0] == LEASE_KEY_SPACE => {
            Ok(u64::from_be_bytes(id.try_into().expect("8 bytes")) as i64)
        }
        _ => Err(MvccError::Corrupt(format!(
            "malformed lease index key {raw:02x?}"
        ))),
    }
}

/// The first index key of lease `id`, and the first after its entries.
pub(crate) fn lease_index_bounds(id: i64) -> (Vec<u8>, Vec<u8>) {
    let start = lease_key_index(id, b"");
    let end = match (id as u64).checked_add(1) {
        Some(next) => {
            let mut end = vec![LEASE_KEY_SPACE];
            end.extend_from_slice(&next.to_be_bytes());
            end
        }
        None => vec![LEASE_KEY_SPACE + 1],
    };
    (start, end)
}

/// Encodes a lease record.
pub(crate) fn encode_lease(info: &LeaseInfo) -> Vec<u8> {
    let mut out = Vec::with_capacity(20);
    put_varint(&mut out, info.ttl as u64);
    put_varint(&mut out, info.remaining as u64);
    out
}

/// Decodes a lease record key and value, checking both.
pub(crate) fn decode_lease(raw_key: &[u8], raw: &[u8]) -> Result<(i64, LeaseInfo), MvccError> {
    let bad = || MvccError::Corrupt(format!("malformed lease record {raw_key:02x?}"));
    if raw_key.len() != 9 || raw_key[0] != LEASE_SPACE {
        return Err(bad());
    }
    let id = u64::from_be_bytes(raw_key[1..].try_into().expect("8 bytes")) as i64;
    let mut pos = 0;
    let ttl = get_varint(raw, &mut pos).ok_or_else(bad)? as i64;
    let remaining = get_varint(raw, &mut pos).ok_or_else(bad)? as i64;
    if pos != raw.len() || id == 0 || ttl < 0 || remaining < 0 {
        return Err(bad());
    }
    Ok((id, LeaseInfo { ttl, remaining }))
}

/// Reads every lease record of `tree`.
pub(crate) fn load(tree: &sled::Tree) -> Result<Leases, MvccError> {
    let mut leases = Leases::new();
    for item in tree.range(vec![LEASE_SPACE]..vec![LEASE_SPACE + 1]) {
        let (k, v) = item?;
        let (id, info) = decode_lease(&k, &v)?;
        leases.insert(id, info);
    }
    Ok(leases)
}

/// The user key of an index entry of lease `id`.
pub(crate) fn indexed_key(raw: &[u8]) -> Result<&[u8], MvccError> {
    if raw.len() < 9 || raw[0] != LEASE_KEY_SPACE {
        return Err(MvccError::Corrupt(format!(
            "malformed lease index key {raw:02x?}"
        )));
    }
    Ok(&raw[9..])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mvcc::{AppliedState, MvccConfig, MvccStore};
    use bytes::Bytes;
    use raftkv_proto::etcdserverpb::{
        DeleteRangeRequest, LeaseCheckpoint, LeaseCheckpointRequest, LeaseGrantRequest,
        LeaseRevokeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest, request_op,
    };
    use raftkv_proto::raftkvpb::{Command, command, command_response};

    fn apply(store: &MvccStore, op: command::Op) -> Result<command_response::Op, MvccError> {
        let cmd = Command {
            op: Some(op),
            ..Default::default()
        };
        store
            .apply(&cmd, &AppliedState::default())
            .map(|r| r.op.expect("an answer"))
    }

    fn grant(store: &MvccStore, id: i64, ttl: i64) -> Result<command_response::Op, MvccError> {
        apply(
            store,
            command::Op::LeaseGrant(LeaseGrantRequest { ttl, id }),
        )
    }

    fn put(store: &MvccStore, key: &str, lease: i64) -> Result<command_response::Op, MvccError> {
        apply(
            store,
            command::Op::Put(PutRequest {
                key: Bytes::copy_from_slice(key.as_bytes()),
                value: Bytes::from_static(b"v"),
                lease,
                ..Default::default()
            }),
        )
    }

    fn revoke(store: &MvccStore, id: i64) -> Result<command_response::Op, MvccError> {
        apply(store, command::Op::LeaseRevoke(LeaseRevokeRequest { id }))
    }

    fn keys(store: &MvccStore) -> Vec<(String, i64)> {
        let all = store
            .range(&RangeRequest {
                key: Bytes::from_static(b"\0"),
                range_end: Bytes::from_static(b"\0"),
                ..Default::default()
            })
            .unwrap();
        all.kvs
            .iter()
            .map(|kv| (String::from_utf8_lossy(&kv.key).into_owned(), kv.lease))
            .collect()
    }

    #[test]
    fn grant_attach_detach_and_revoke_in_one_revision() {
        let dir = tempfile::tempdir().unwrap();
        let store = MvccStore::open(dir.path(), &MvccConfig::default()).unwrap();
        assert!(matches!(put(&store, "a", 7), Err(MvccError::LeaseNotFound)));
        assert_eq!(store.revision(), 1, "a refused put changes nothing");
        grant(&store, 7, 60).unwrap();
        assert!(matches!(grant(&store, 7, 10), Err(MvccError::LeaseExist)));
        assert_eq!(
            store.lease(7),
            Some(LeaseInfo {
                ttl: 60,
                remaining: 0
            })
        );
        assert_eq!(store.revision(), 1, "a grant does not move the revision");
        for k in ["a", "b", "c", "d"] {
            put(&store, k, 7).unwrap(); // revisions 2..=5
        }
        put(&store, "b", 0).unwrap(); // detached (6)
        apply(
            &store,
            command::Op::DeleteRange(DeleteRangeRequest {
                key: Bytes::from_static(b"c"),
                ..Default::default()
            }),
        )
        .unwrap(); // 7
        // A txn that names the lease on one branch attaches too.
        apply(
            &store,
            command::Op::Txn(TxnRequest {
                success: vec![RequestOp {
                    request: Some(request_op::Request::RequestPut(PutRequest {
                        key: Bytes::from_static(b"e"),
                        lease: 7,
                        ..Default::default()
                    })),
                }],
                ..Default::default()
            }),
        )
        .unwrap(); // 8
        assert_eq!(
            store.lease_keys(7).unwrap(),
            ["a", "d", "e"].map(|k| Bytes::from_static(k.as_bytes()))
        );
        let Ok(command_response::Op::LeaseRevoke(r)) = revoke(&store, 7) else {
            panic!("revoked")
        };
        assert_eq!(
            r.header.unwrap().revision,
            9,
            "every key deleted in one revision"
        );
        assert_eq!(keys(&store), [("b".to_string(), 0)]);
        assert_eq!(store.lease(7), None);
        assert!(matches!(revoke(&store, 7), Err(MvccError::LeaseNotFound)));
        // Revoking a lease with no keys leaves the revision.
        grant(&store, 8, 5).unwrap();
        revoke(&store, 8).unwrap();
        assert_eq!(store.revision(), 9);
        // A negative id (etcd takes a client's as it is) works like any other.
        grant(&store, -5, 5).unwrap();
        put(&store, "n", -5).unwrap();
        assert_eq!(store.lease_keys(-5).unwrap(), [Bytes::from_static(b"n")]);
        revoke(&store, -5).unwrap();
        assert_eq!(keys(&store), [("b".to_string(), 0)]);
        // The index holds nothing of the revoked lease.
        let (start, end) = lease_index_bounds(7);
        assert_eq!(store.tree().range(start..end).count(), 0);
    }

    #[test]
    fn leases_survive_a_restart_and_a_snapshot_with_their_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("snap");
        {
            let store = MvccStore::open(&dir.path().join("a"), &MvccConfig::default()).unwrap();
            grant(&store, 3, 30).unwrap();
            grant(&store, 1 << 40, 90).unwrap();
            put(&store, "x", 3).unwrap();
            put(&store, "y", 1 << 40).unwrap();
            put(&store, "y", 3).unwrap(); // moved to lease 3
            apply(
                &store,
                command::Op::LeaseCheckpoint(LeaseCheckpointRequest {
                    checkpoints: vec![
                        LeaseCheckpoint {
                            id: 3,
                            remaining_ttl: 12,
                        },
                        LeaseCheckpoint {
                            id: 99,
                            remaining_ttl: 1,
                        },
                    ],
                }),
            )
            .unwrap();
            store.flush().unwrap();
        }
        let store = MvccStore::open(&dir.path().join("a"), &MvccConfig::default()).unwrap();
        let want = vec![
            (
                3,
                LeaseInfo {
                    ttl: 30,
                    remaining: 12,
                },
            ),
            (
                1 << 40,
                LeaseInfo {
                    ttl: 90,
                    remaining: 0,
                },
            ),
        ];
        assert_eq!(store.leases(), want);
        assert_eq!(
            store.lease_keys(3).unwrap(),
            ["x", "y"].map(|k| Bytes::from_static(k.as_bytes()))
        );
        assert!(store.lease_keys(1 << 40).unwrap().is_empty());
        crate::snapshot::build(&store, &path).unwrap();
        let other = MvccStore::open(&dir.path().join("b"), &MvccConfig::default()).unwrap();
        grant(&other, 5, 5).unwrap(); // replaced by the snapshot's table
        let info = crate::snapshot::restore(&path, &other).unwrap();
        assert_eq!(info.meta.leases, want);
        assert_eq!(other.leases(), want);
        assert_eq!(
            other.lease_keys(3).unwrap(),
            ["x", "y"].map(|k| Bytes::from_static(k.as_bytes()))
        );
        revoke(&other, 3).unwrap();
        assert!(keys(&other).is_empty());
    }

    #[test]
    fn records_round_trip_and_damage_is_an_error() {
        let info = LeaseInfo {
            ttl: 60,
            remaining: 17,
        };
        let key = lease_key(0x1234);
        assert_eq!(
            decode_lease(&key, &encode_lease(&info)).unwrap(),
            (0x1234, info)
        );
        assert!(decode_lease(&key, &[0xff]).is_err());
        assert!(decode_lease(&key, &[1, 2, 3]).is_err());
        assert!(decode_lease(&key[..5], &encode_lease(&info)).is_err());
        assert!(decode_lease(&lease_key(0), &encode_lease(&info)).is_err());
    }

    #[test]
    fn index_bounds_hold_only_that_lease() {
        let (start, end) = lease_index_bounds(7);
        let mine = lease_key_index(7, b"\xff\xff");
        let next = lease_key_index(8, b"");
        assert!(start <= mine && mine < end && next >= end);
        let (_, end) = lease_index_bounds(i64::MAX);
        assert!(lease_key_index(i64::MAX, b"\xff") < end);
        assert!(lease_key_index(i64::MIN, b"") >= end);
        // etcd takes a client's negative id: -1 is the last in the index.
        let (start, end) = lease_index_bounds(-1);
        assert!(start <= lease_key_index(-1, b"\xff\xff") && lease_key_index(-1, b"\xff") < end);
    }

    /// etcd's order of refusals for a put that needs its key (`ignore_value`) and names an
    /// unknown lease: "lease not found" for a put on its own, "key not found" in a txn
    /// (checked before any op runs), and nothing changes either way.
    #[test]
    fn a_missing_key_and_an_unknown_lease_are_refused_in_etcd_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = MvccStore::open(dir.path(), &MvccConfig::default()).unwrap();
        let both = PutRequest {
            key: Bytes::from_static(b"missing"),
            ignore_value: true,
            lease: 9,
            ..Default::default()
        };
        let alone = apply(&store, command::Op::Put(both.clone()));
        assert!(matches!(alone, Err(MvccError::LeaseNotFound)), "{alone:?}");
        let in_txn = apply(
            &store,
            command::Op::Txn(TxnRequest {
                success: vec![RequestOp {
                    request: Some(request_op::Request::RequestPut(both)),
                }],
                ..Default::default()
            }),
        );
        assert!(matches!(in_txn, Err(MvccError::KeyNotFound)), "{in_txn:?}");
        assert_eq!(store.revision(), 1);
    }
}
