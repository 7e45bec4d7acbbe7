//! etcd's snapshot files: a bbolt database as etcd's backend holds it, usually followed by
//! the SHA-256 trailer that `snapshot save` appends. Their status as `etcdctl snapshot
//! status` reports it, and their import into a raftkv store (`raftkvctl snapshot restore`
//! of an etcd file).
//!
//! What etcd 3.4 keeps in the buckets read here (`mvcc/kvstore.go`, `lease/lessor.go`,
//! `auth/store.go`):
//!
//! - `key`: revision (main u64 BE, `_`, sub u64 BE, then `t` for a tombstone) → an encoded
//!   `mvccpb.KeyValue` (only the key, for a tombstone).
//! - `meta`: `finishedCompactRev` and `scheduledCompactRev`, each a revision as above.
//! - `lease`: id (u64 BE) → an encoded `leasepb.Lease` (id, TTL, remaining TTL).
//! - `auth`: `authEnabled` (one byte, 1 when on) and `authRevision` (u64 BE); `authUsers`:
//!   name → `authpb.User`; `authRoles`: name → `authpb.Role`.
//!
//! The members, cluster and alarm buckets are not imported: the restored members form a
//! new cluster, as `etcdctl snapshot restore` makes one.
//!
//! Every field is checked before it is used, with the bounds raftkv's own snapshots have;
//! an import either completes or leaves the store as it was.

pub mod bolt;
pub mod bolt_writer;
mod export;
#[doc(hidden)]
pub mod samples;

use std::collections::BTreeSet;
use std::fs::File;
use std::io::Read;
use std::path::Path;

use prost::Message;
use raftkv_proto::authpb::{Role, User};
use raftkv_proto::mvccpb::KeyValue;
use raftkv_proto::raftkvpb::AuthState;
use sha2::{Digest, Sha256};

use crate::error::SnapshotError;
use crate::mvcc::MvccStore;
use crate::mvcc::auth::AuthTable;
use crate::mvcc::encoding::Record;
use crate::mvcc::lease::LeaseInfo;
use crate::mvcc::validate::MAX_LEASE_TTL;
use crate::snapshot::{MAX_VERSION_BYTES, Row, SnapshotMeta};
use bolt::{Bolt, Bucket};

pub use bolt::looks_like_bolt;
pub use export::{Exported, export};

/// What `etcdctl snapshot status` reports of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdStatus {
    /// CRC-32C of every bucket name, key and value, in order.
    pub hash: u32,
    /// The main revision of the last key in the `key` bucket.
    pub revision: i64,
    /// Keys in all buckets.
    pub total_key: u64,
    /// bbolt's size: pages up to the high-water mark.
    pub total_size: u64,
}

/// What an import brought in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Imported {
    /// The store's revision afterwards (etcd's current revision).
    pub revision: i64,
    /// The compacted revision.
    pub compact_revision: i64,
    /// Keys live at `revision`.
    pub keys: u64,
    /// Versions stored (live, historical and tombstones).
    pub versions: u64,
    /// Leases.
    pub leases: u64,
    /// Users.
    pub users: u64,
    /// Roles.
    pub roles: u64,
}

/// Reads the status of an etcd snapshot as `etcdctl snapshot status` computes it. Every
/// page is checked on the way; the SHA-256 trailer is not (etcdctl does not either).
pub fn status(path: &Path) -> Result<EtcdStatus, SnapshotError> {
    let db = Bolt::open(path)?;
    let mut reached = db.reached();
    let buckets = db.buckets(&mut reached)?;
    let mut crc = Crc32c::default();
    let (mut revision, mut total_key) = (0i64, 0u64);
    for bucket in &buckets {
        crc.update(&bucket.name);
        let is_key = bucket.name == b"key";
        db.for_each(bucket, &mut reached, &mut |e| {
            crc.update(e.key);
            crc.update(e.value);
            if is_key {
                revision = parse_revision(e.key, "key bucket")?.main;
            }
            total_key += 1;
            Ok(())
        })?;
    }
    Ok(EtcdStatus {
        hash: crc.finish(),
        revision,
        total_key,
        total_size: db.size(),
    })
}

/// Checks the SHA-256 trailer as `etcdctl snapshot restore` does: a file whose size is 32
/// more than a multiple of 512 has one, and it must match; a file without one is refused
/// unless `skip` (a database file copied out of a data dir).
pub fn check_hash(path: &Path, skip: bool) -> Result<(), SnapshotError> {
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    if len % 512 != 32 {
        return if skip {
            Ok(())
        } else {
            Err(SnapshotError::MissingHash)
        };
    }
    if skip {
        return Ok(());
    }
    let mut sha = Sha256::new();
    let mut remaining = len - 32;
    let mut buf = vec![0u8; 1 << 20];
    while remaining > 0 {
        let n = remaining.min(buf.len() as u64) as usize;
        file.read_exact(&mut buf[..n])?;
        sha.update(&buf[..n]);
        remaining -= n as u64;
    }
    let mut trailer = [0u8; 32];
    file.read_exact(&mut trailer)?;
    if sha.finalize().as_slice() != trailer {
        return Err(SnapshotError::ChecksumMismatch);
    }
    Ok(())
}

/// A revision as etcd stores it in the `key` bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Revision {
    main: i64,
    sub: i64,
    tombstone: bool,
}

/// A revision as the key bucket's keys (and the meta bucket's compaction marks) store it.
/// Main revision 0 is refused in the key bucket by the caller.
fn parse_revision(raw: &[u8], place: &str) -> Result<Revision, SnapshotError> {
    let tombstone = match raw.len() {
        17 => false,
        18 if raw[17] == b't' => true,
        _ => {
            return Err(corrupt(format!(
                "{place}: a revision of {} bytes",
                raw.len()
            )));
        }
    };
    if raw[8] != b'_' {
        return Err(corrupt(format!("{place}: a revision without its '_'")));
    }
    let word = |at: usize| u64::from_be_bytes(raw[at..at + 8].try_into().expect("8 bytes"));
    let (main, sub) = (word(0), word(9));
    if main > i64::MAX as u64 || sub > i64::MAX as u64 {
        return Err(corrupt(format!("{place}: revision {main}_{sub}")));
    }
    Ok(Revision {
        main: main as i64,
        sub: sub as i64,
        tombstone,
    })
}

fn corrupt(what: String) -> SnapshotError {
    SnapshotError::Corrupt(format!("etcd snapshot: {what}"))
}

/// A revision as etcd's key bucket stores it (and its meta bucket's compaction marks): the
/// main revision (u64 BE), `_`, the sub-revision (u64 BE), then `t` for a deletion.
pub fn revision_bytes(main: i64, sub: i64, tombstone: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(18);
    out.extend_from_slice(&(main as u64).to_be_bytes());
    out.push(b'_');
    out.extend_from_slice(&(sub as u64).to_be_bytes());
    if tombstone {
        out.push(b't');
    }
    out
}

/// Appends the SHA-256 trailer `snapshot save` writes after a bbolt file.
pub fn seal(mut db: Vec<u8>) -> Vec<u8> {
    let digest = Sha256::digest(&db);
    db.extend_from_slice(&digest);
    db
}

/// An encoded `leasepb.Lease` (zero fields left out, as Go's marshaler does).
fn encode_lease(id: i64, ttl: i64, remaining_ttl: i64) -> Vec<u8> {
    EtcdLease {
        id,
        ttl,
        remaining_ttl,
    }
    .encode_to_vec()
}

/// etcd's `leasepb.Lease`.
#[derive(Clone, PartialEq, Message)]
struct EtcdLease {
    #[prost(int64, tag = "1")]
    id: i64,
    #[prost(int64, tag = "2")]
    ttl: i64,
    #[prost(int64, tag = "3")]
    remaining_ttl: i64,
}

/// Largest encoded `KeyValue` read: a version's key and value plus its four varints.
const MAX_KEY_VALUE_BYTES: usize = MAX_VERSION_BYTES + 64;

/// Decodes a `key` bucket value and checks it against its revision.
fn decode_version(raw: &[u8], rev: Revision) -> Result<(Vec<u8>, Record), SnapshotError> {
    let bad = |what: &str| corrupt(format!("revision {}_{}: {what}", rev.main, rev.sub));
    if raw.len() > MAX_KEY_VALUE_BYTES {
        return Err(bad("value too large"));
    }
    // A KeyValue has no nested messages, so prost's decode is bounded by `raw`.
    let kv = KeyValue::decode(raw).map_err(|_| bad("not a KeyValue"))?;
    if kv.key.is_empty() || kv.key.len() + kv.value.len() > MAX_VERSION_BYTES {
        return Err(bad("key empty or too large"));
    }
    // `Vec::from` takes the buffers prost decoded into, without a copy.
    if rev.tombstone {
        return Ok((Vec::from(kv.key), Record::Tombstone));
    }
    // Any lease id but 0 ("none") is one: etcd takes a client's negative id as raftkv does.
    if kv.mod_revision != rev.main
        || !(1..=rev.main).contains(&kv.create_revision)
        || kv.version < 1
    {
        return Err(bad("revisions or version out of range"));
    }
    Ok((
        Vec::from(kv.key),
        Record::Put {
            create_revision: kv.create_revision,
            version: kv.version,
            lease: kv.lease,
            value: Vec::from(kv.value),
        },
    ))
}

/// One version found on the first pass: its key and where its value is.
struct Found {
    key: Vec<u8>,
    rev: Revision,
    at: u64,
    len: u32,
}

/// Rows handed to the store at a time, or fewer when their keys and values reach
/// [`ROW_BYTES_PER_ADD`] (so a file of large values holds few in memory).
const ROWS_PER_ADD: usize = 1024;
const ROW_BYTES_PER_ADD: usize = crate::snapshot::BLOCK_BYTES;

/// Replaces the contents of `store` with the etcd snapshot at `path`: every version of
/// every key with its revisions, version and lease, the compacted revision, the leases
/// with their TTLs, and the auth store. The SHA-256 trailer is checked first
/// ([`check_hash`]), and every version is checked before anything becomes visible: on an
/// error the store is left as it was.
///
/// Two passes keep memory to the keys alone: the first walks the file, checks it and
/// notes each version's key and value offset; the versions are then sorted into the
/// store's order (key, newest first) and the second pass reads each value again by offset.
pub fn restore(
    path: &Path,
    store: &MvccStore,
    skip_hash_check: bool,
) -> Result<Imported, SnapshotError> {
    check_hash(path, skip_hash_check)?;
    let db = Bolt::open(path)?;
    let mut reached = db.reached();
    let buckets = db.buckets(&mut reached)?;
    let named = |name: &[u8]| buckets.iter().find(|b| b.name == name);

    let (finished, scheduled) = match named(b"meta") {
        Some(b) => compaction_marks(&db, b, &mut reached)?,
        None => (0, 0),
    };
    let leases = match named(b"lease") {
        Some(b) => read_leases(&db, b, &mut reached)?,
        None => Vec::new(),
    };
    let auth = read_auth(&db, &named, &mut reached)?;

    let mut found = Vec::new();
    let mut last_main = 0i64;
    if let Some(b) = named(b"key") {
        db.for_each(b, &mut reached, &mut |e| {
            if e.is_bucket {
                return Err(corrupt("key bucket: a nested bucket".into()));
            }
            let rev = parse_revision(e.key, "key bucket")?;
            if rev.main == 0 {
                return Err(corrupt("key bucket: revision 0".into()));
            }
            let (key, _) = decode_version(e.value, rev)?;
            last_main = rev.main;
            found.push(Found {
                key,
                rev,
                at: e.value_offset,
                len: e.value.len() as u32,
            });
            Ok(())
        })?;
    }
    // etcd's current revision: the last version's, or the compaction's if later
    // (`store.restore`: the versions up to it may all have been compacted away).
    let revision = last_main.max(finished).max(1);
    // A compaction etcd had scheduled but not finished, it finishes when it opens the
    // backend; the import finishes it as it writes (below), so it is never half done.
    let compact = if scheduled > finished && scheduled <= revision {
        scheduled
    } else {
        finished
    };
    found.sort_unstable_by(|a, b| a.key.cmp(&b.key).then(b.rev.main.cmp(&a.rev.main)));
    if found
        .windows(2)
        .any(|w| w[0].key == w[1].key && w[0].rev.main == w[1].rev.main)
    {
        return Err(corrupt("two versions of a key at one revision".into()));
    }

    let mut load = store.begin_restore()?;
    load.attach_only(leases.iter().map(|(id, _)| *id).collect::<BTreeSet<_>>());
    let (mut keys, mut versions, mut rows, mut row_bytes) = (0u64, 0u64, Vec::new(), 0usize);
    // The key of the previous version, and whether a version of it at or below the
    // compaction has been kept (every older one is then compacted away).
    let mut previous: Option<(&[u8], bool)> = None;
    for f in &found {
        let same_key = previous.is_some_and(|(k, _)| k == f.key.as_slice());
        let settled = same_key && previous.is_some_and(|(_, s)| s);
        previous = Some((&f.key, settled || f.rev.main <= compact));
        if settled || (f.rev.main <= compact && f.rev.tombstone) {
            // Compacted: older than the key's newest version at or below the compaction,
            // or that version itself when it is a deletion (etcd's `keyIndex.compact`).
            continue;
        }
        // Read again: the file is checked again, not trusted to be what the first pass saw.
        let raw = db.read_at(f.at, f.len as usize)?;
        let (key, record) = decode_version(&raw, f.rev)?;
        if key != f.key {
            return Err(corrupt("the file changed while it was read".into()));
        }
        if !same_key && matches!(record, Record::Put { .. }) {
            keys += 1;
        }
        row_bytes += key.len() + raw.len();
        versions += 1;
        rows.push(Row {
            key,
            revision: f.rev.main,
            record,
        });
        if rows.len() == ROWS_PER_ADD || row_bytes >= ROW_BYTES_PER_ADD {
            load.add(&rows)?;
            rows.clear();
            row_bytes = 0;
        }
    }
    load.add(&rows)?;
    let meta = SnapshotMeta {
        revision,
        compact_revision: compact,
        leases: leases.clone(),
        auth: auth.clone(),
        ..SnapshotMeta::default()
    };
    load.finish(&meta)?;
    Ok(Imported {
        revision,
        compact_revision: compact,
        keys,
        versions,
        leases: leases.len() as u64,
        users: auth.users.len() as u64,
        roles: auth.roles.len() as u64,
    })
}

/// `finishedCompactRev` and `scheduledCompactRev` (0 when absent).
fn compaction_marks(
    db: &Bolt,
    bucket: &Bucket,
    reached: &mut bolt::Reached,
) -> Result<(i64, i64), SnapshotError> {
    let (mut finished, mut scheduled) = (0, 0);
    db.for_each(bucket, reached, &mut |e| {
        let slot = match e.key {
            b"finishedCompactRev" => &mut finished,
            b"scheduledCompactRev" => &mut scheduled,
            _ => return Ok(()),
        };
        *slot = parse_revision(e.value, "meta bucket")?.main;
        Ok(())
    })?;
    Ok((finished, scheduled))
}

fn read_leases(
    db: &Bolt,
    bucket: &Bucket,
    reached: &mut bolt::Reached,
) -> Result<Vec<(i64, LeaseInfo)>, SnapshotError> {
    let mut leases = Vec::new();
    db.for_each(bucket, reached, &mut |e| {
        let id = <[u8; 8]>::try_from(e.key)
            .map(u64::from_be_bytes)
            .map_err(|_| corrupt("lease bucket: a key not 8 bytes".into()))?;
        let lease = if e.value.len() <= 64 {
            EtcdLease::decode(e.value).ok()
        } else {
            None
        };
        let valid = |l: &EtcdLease| {
            l.id as u64 == id
                && l.id != 0
                && (0..=MAX_LEASE_TTL).contains(&l.ttl)
                && (0..=MAX_LEASE_TTL).contains(&l.remaining_ttl)
        };
        match lease {
            Some(l) if valid(&l) => {
                leases.push((
                    l.id,
                    LeaseInfo {
                        ttl: l.ttl,
                        remaining: l.remaining_ttl,
                    },
                ));
                Ok(())
            }
            _ => Err(corrupt(format!("lease {id:x}: malformed"))),
        }
    })?;
    // Keys are u64 big-endian, so an id with the top bit set sorts last: order as i64.
    leases.sort_unstable_by_key(|(id, _)| *id);
    Ok(leases)
}

fn read_auth<'a>(
    db: &Bolt,
    named: &dyn Fn(&[u8]) -> Option<&'a Bucket>,
    reached: &mut bolt::Reached,
) -> Result<AuthTable, SnapshotError> {
    let mut state = AuthState {
        enabled: false,
        revision: 1,
        users: Vec::new(),
        roles: Vec::new(),
    };
    if let Some(b) = named(b"auth") {
        db.for_each(b, reached, &mut |e| {
            match e.key {
                b"authEnabled" => state.enabled = e.value == [1],
                b"authRevision" => {
                    let rev = <[u8; 8]>::try_from(e.value)
                        .map(u64::from_be_bytes)
                        .map_err(|_| corrupt("auth revision not 8 bytes".into()))?;
                    // A new etcd auth store starts at 1 (`NewAuthStore`).
                    state.revision = rev.max(1);
                }
                _ => {}
            }
            Ok(())
        })?;
    }
    if let Some(b) = named(b"authUsers") {
        db.for_each(b, reached, &mut |e| {
            let user: User = raftkv_proto::codec::decode_bounded(e.value)
                .map_err(|_| corrupt("a malformed user".into()))?;
            if user.name != e.key {
                return Err(corrupt("a user stored under another name".into()));
            }
            state.users.push(user);
            Ok(())
        })?;
    }
    if let Some(b) = named(b"authRoles") {
        db.for_each(b, reached, &mut |e| {
            let role: Role = raftkv_proto::codec::decode_bounded(e.value)
                .map_err(|_| corrupt("a malformed role".into()))?;
            if role.name != e.key {
                return Err(corrupt("a role stored under another name".into()));
            }
            state.roles.push(role);
            Ok(())
        })?;
    }
    // The auth table's own decoder applies every bound raftkv keeps (names, counts, order).
    AuthTable::decode(&state.encode_to_vec()).map_err(|e| corrupt(format!("auth: {e}")))
}

/// CRC-32C (Castagnoli), the hash `etcdctl snapshot status` prints.
struct Crc32c {
    crc: u32,
    table: [u32; 256],
}

impl Default for Crc32c {
    fn default() -> Self {
        let mut table = [0u32; 256];
        for (i, slot) in table.iter_mut().enumerate() {
            let mut c = i as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    (c >> 1) ^ 0x82F6_3B78
                } else {
                    c >> 1
                };
            }
            *slot = c;
        }
        Self { crc: !0, table }
    }
}

impl Crc32c {
    fn update(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.crc = self.table[((self.crc ^ u32::from(b)) & 0xff) as usize] ^ (self.crc >> 8);
        }
    }

    fn finish(&self) -> u32 {
        !self.crc
    }
}

#[cfg(test)]
mod bolt_tests;
#[cfg(test)]
mod tests;
