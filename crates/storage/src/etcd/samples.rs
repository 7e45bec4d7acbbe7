//! An etcd-like snapshot built with [`super::bolt_writer`], laid out as etcd 3.4 lays out
//! its backend, for tests and fuzz seeds. It is what a session like this leaves behind:
//!
//! ```text
//! rev 2  put a=1            rev 5  put a=2
//! rev 3  put b=x --lease 10 rev 6  del c
//! rev 4  txn: put c, put d  rev 7  put e=1 --lease 99 (a lease the file does not hold)
//! compaction at 3 (finished), optionally one at 5 scheduled but not finished
//! auth: user root (role root), role root and role reader (read on /r/), enabled
//! ```

use bytes::Bytes;
use prost::Message;
use raftkv_proto::authpb::{Permission, Role, User, permission};
use raftkv_proto::mvccpb::KeyValue;

use super::bolt_writer::{BucketData, write};
pub use super::seal;
use super::{encode_lease, revision_bytes};

fn kv(key: &str, create: i64, modified: i64, version: i64, value: &str, lease: i64) -> Vec<u8> {
    KeyValue {
        key: Bytes::copy_from_slice(key.as_bytes()),
        create_revision: create,
        mod_revision: modified,
        version,
        value: Bytes::copy_from_slice(value.as_bytes()),
        lease,
    }
    .encode_to_vec()
}

/// The `key` bucket's entries of the session above: (revision bytes, encoded KeyValue).
pub fn versions() -> Vec<(Vec<u8>, Vec<u8>)> {
    let tomb = KeyValue {
        key: Bytes::from_static(b"c"),
        ..Default::default()
    }
    .encode_to_vec();
    vec![
        (revision_bytes(2, 0, false), kv("a", 2, 2, 1, "1", 0)),
        (revision_bytes(3, 0, false), kv("b", 3, 3, 1, "x", 0x10)),
        (revision_bytes(4, 0, false), kv("c", 4, 4, 1, "1", 0)),
        (revision_bytes(4, 1, false), kv("d", 4, 4, 1, "1", 0)),
        (revision_bytes(5, 0, false), kv("a", 2, 5, 2, "2", 0)),
        (revision_bytes(6, 0, true), tomb),
        (revision_bytes(7, 0, false), kv("e", 7, 7, 1, "1", 0x99)),
    ]
}

/// The buckets of the session, with `key` as given (to build damaged variants).
pub fn buckets_with(keys: Vec<(Vec<u8>, Vec<u8>)>, scheduled: Option<i64>) -> Vec<BucketData> {
    // Remaining TTL 0: never checkpointed.
    let lease = |id: i64, ttl: i64| ((id as u64).to_be_bytes().to_vec(), encode_lease(id, ttl, 0));
    let root_user = User {
        name: Bytes::from_static(b"root"),
        password: Bytes::from_static(
            b"$2a$10$abcdefghijklmnopqrstuu5Zx1QOJl1R0r8B0dR2mTbH6yV0cS7ZC",
        ),
        roles: vec!["root".into()],
        options: None,
    };
    let role = |name: &'static str, perms: Vec<Permission>| {
        (
            name.as_bytes().to_vec(),
            Role {
                name: Bytes::from_static(name.as_bytes()),
                key_permission: perms,
            }
            .encode_to_vec(),
        )
    };
    let reader = vec![Permission {
        perm_type: permission::Type::Read as i32,
        key: Bytes::from_static(b"/r/"),
        range_end: Bytes::from_static(b"/r0"),
    }];
    let mut meta = vec![
        (b"consistent_index".to_vec(), 42u64.to_be_bytes().to_vec()),
        (b"finishedCompactRev".to_vec(), revision_bytes(3, 0, false)),
    ];
    meta.push((
        b"scheduledCompactRev".to_vec(),
        revision_bytes(scheduled.unwrap_or(3), 0, false),
    ));
    vec![
        (b"alarm".to_vec(), vec![]),
        (
            b"auth".to_vec(),
            vec![
                (b"authEnabled".to_vec(), vec![1]),
                (b"authRevision".to_vec(), 5u64.to_be_bytes().to_vec()),
            ],
        ),
        (
            b"authRoles".to_vec(),
            vec![role("reader", reader), role("root", vec![])],
        ),
        (
            b"authUsers".to_vec(),
            vec![(b"root".to_vec(), root_user.encode_to_vec())],
        ),
        (
            b"cluster".to_vec(),
            vec![(b"clusterVersion".to_vec(), b"3.4.0".to_vec())],
        ),
        (b"key".to_vec(), keys),
        (b"lease".to_vec(), vec![lease(0x10, 60)]),
        (
            b"members".to_vec(),
            vec![(b"8e9e05c52164694d".to_vec(), br#"{"id":1}"#.to_vec())],
        ),
        (b"members_removed".to_vec(), vec![]),
        (b"meta".to_vec(), meta),
    ]
}

/// The session's snapshot as `etcdctl snapshot save` leaves it: the bbolt file, then the
/// SHA-256 of it.
pub fn snapshot(scheduled: Option<i64>) -> Vec<u8> {
    seal(write(&buckets_with(versions(), scheduled), 4096))
}
