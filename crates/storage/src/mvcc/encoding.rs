//! How MVCC records are laid out in sled.
//!
//! One sled tree holds everything. Writes go in with plain inserts (a sled batch seals and
//! writes out sled's log buffer each time: about ten times the bytes), and the point they
//! reach — revision, applied log id, membership — is one key, so it changes atomically:
//!
//! - `0x01 | escaped user key | 0x00 0x01 | !revision (u64 BE)` → a [`Record`] (a put's
//!   value inline, or a pointer to it in the value log: see [`decode_parts`]). Escaping
//!   writes `0x00` as `0x00 0xFF`, so encoded keys sort exactly like the user keys, a key's
//!   versions sit together, and the inverted revision puts the newest version first.
//! - `0x02 | name` → metadata (see `META_*`).
//! - `0x03 | revision (u64 BE) | tag` → the history index, which reads changes in revision
//!   order (watch catch-up) without scanning the keyspace. Three forms:
//!   `0x02` (a *group*) → every change of a run of applied writes from `revision` on, in
//!   order, each as (revision − the group's, n, user key) — one insert per run of entries
//!   instead of one per change (see [`encode_history_group`]); `0x00 | n (u32 BE)` → the
//!   user key of the n-th change a write made (etcd's sub-revision order; stores written
//!   before groups existed); `0x01 | user key` for changes indexed from records (a store
//!   written before the index existed, versions a follower's merge adds), which keep key
//!   order. A restore writes groups too, sorted outside sled (`sorted_history`), a
//!   revision's changes numbered in key order. Groups never overlap: each ends at or below
//!   the applied point stored right after it.
//!
//! Everything read back from disk is decoded with checks: damage is an error, never a panic.

use crate::error::MvccError;
use crate::values::ValuePtr;

/// First byte of every version record key.
pub(crate) const RECORD_SPACE: u8 = 0x01;
/// First byte of every metadata key.
pub(crate) const META_SPACE: u8 = 0x02;

/// First byte of every history index key.
pub(crate) const HISTORY_SPACE: u8 = 0x03;
/// Marks a store whose history index covers every record (value: `1`).
pub(crate) const META_HISTORY: &[u8] = b"\x02history";

/// The history index key of the `n`-th change written at `revision` (the form stores wrote
/// before groups; kept to test that they are still read).
#[cfg(test)]
pub(crate) fn history_key(revision: i64, n: u32) -> [u8; 14] {
    let mut out = [0u8; 14];
    out[0] = HISTORY_SPACE;
    out[1..9].copy_from_slice(&(revision as u64).to_be_bytes());
    out[9] = 0x00;
    out[10..].copy_from_slice(&n.to_be_bytes());
    out
}

/// The history index key of `key`'s change at `revision`, indexed from a record.
pub(crate) fn history_key_of_record(revision: i64, key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(10 + key.len());
    out.push(HISTORY_SPACE);
    out.extend_from_slice(&(revision as u64).to_be_bytes());
    out.push(0x01);
    out.extend_from_slice(key);
    out
}

/// The tag of a history group key.
pub(crate) const HISTORY_GROUP: u8 = 0x02;

/// The history index key of a group of changes starting at `first` (see
/// [`encode_history_group`]).
pub(crate) fn history_group_key(first: i64) -> [u8; 10] {
    let mut out = [0u8; 10];
    out[0] = HISTORY_SPACE;
    out[1..9].copy_from_slice(&(first as u64).to_be_bytes());
    out[9] = HISTORY_GROUP;
    out
}

/// One change in the history: its revision, its place among the revision's changes, the key.
pub(crate) type HistoryEntry = (i64, u32, bytes::Bytes);

/// Encodes the changes of a group keyed by `first` (the first entry's revision); the entries
/// are in (revision, n) order, none below `first`.
pub(crate) fn encode_history_group(first: i64, entries: &[HistoryEntry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(entries.iter().map(|(_, _, k)| k.len() + 6).sum::<usize>());
    for (rev, n, key) in entries {
        put_varint(&mut out, (rev - first) as u64);
        put_varint(&mut out, u64::from(*n));
        put_varint(&mut out, key.len() as u64);
        out.extend_from_slice(key);
    }
    out
}

/// One change of a decoded group, its key borrowed from the group: (revision, n, user key).
pub(crate) type GroupEntry<'a> = (i64, u32, &'a [u8]);

/// Decodes a group keyed by `first`, checking every length against what is there and that
/// the entries are in strictly increasing (revision, n) order: damage is an error.
pub(crate) fn decode_history_group(
    first: i64,
    raw: &[u8],
) -> Result<Vec<GroupEntry<'_>>, MvccError> {
    let bad = || MvccError::Corrupt(format!("malformed history group at revision {first}"));
    let mut out = Vec::new();
    let mut pos = 0;
    let mut last: Option<(i64, u32)> = None;
    while pos < raw.len() {
        let delta = get_varint(raw, &mut pos).ok_or_else(bad)?;
        let n = get_varint(raw, &mut pos).ok_or_else(bad)?;
        let len = get_varint(raw, &mut pos).ok_or_else(bad)?;
        let rev = i64::try_from(delta)
            .ok()
            .and_then(|d| first.checked_add(d))
            .ok_or_else(bad)?;
        let n = u32::try_from(n).map_err(|_| bad())?;
        let len = usize::try_from(len).map_err(|_| bad())?;
        let end = pos
            .checked_add(len)
            .filter(|&e| e <= raw.len())
            .ok_or_else(bad)?;
        if last.is_some_and(|l| l >= (rev, n)) {
            return Err(bad());
        }
        last = Some((rev, n));
        out.push((rev, n, &raw[pos..end]));
        pos = end;
    }
    Ok(out)
}

/// The first history index key at or after `revision` (for revisions ≥ 0).
pub(crate) fn history_bound(revision: i64) -> [u8; 9] {
    let mut out = [0u8; 9];
    out[0] = HISTORY_SPACE;
    out[1..].copy_from_slice(&(revision.max(0) as u64).to_be_bytes());
    out
}

/// The revision of a history index key, checking its shape.
pub(crate) fn history_revision(raw: &[u8]) -> Result<i64, MvccError> {
    let well_formed = raw.len() >= 10
        && raw[0] == HISTORY_SPACE
        && ((raw[9] == 0x00 && raw.len() == 14)
            || raw[9] == 0x01
            || (raw[9] == HISTORY_GROUP && raw.len() == 10));
    if !well_formed {
        return Err(MvccError::Corrupt(format!(
            "malformed history key {raw:02x?}"
        )));
    }
    let rev: [u8; 8] = raw[1..9].try_into().expect("8 bytes");
    Ok(u64::from_be_bytes(rev) as i64)
}

/// The applied point: revision, applied log id and membership (see [`encode_point`]).
pub(crate) const META_POINT: &[u8] = b"\x02point";
/// Compacted revision (i64 BE).
pub(crate) const META_COMPACTED: &[u8] = b"\x02compacted";
/// The compaction revision whose physical deletes last finished (i64 BE; see `compaction`).
pub(crate) const META_COMPACT_DONE: &[u8] = b"\x02compact-done";
/// The active alarms: (member id u64, alarm type i32), big endian, one after another.
pub(crate) const META_ALARMS: &[u8] = b"\x02alarms";

/// Encodes alarms for [`META_ALARMS`] (and snapshot headers).
pub(crate) fn encode_alarms(alarms: &[(u64, i32)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(alarms.len() * 12);
    for (member, alarm) in alarms {
        out.extend_from_slice(&member.to_be_bytes());
        out.extend_from_slice(&alarm.to_be_bytes());
    }
    out
}

/// Decodes what [`encode_alarms`] wrote; `None` if it is not a whole number of alarms.
pub(crate) fn decode_alarms(raw: &[u8]) -> Option<Vec<(u64, i32)>> {
    if !raw.len().is_multiple_of(12) {
        return None;
    }
    Some(
        raw.chunks_exact(12)
            .map(|c| {
                (
                    u64::from_be_bytes(c[..8].try_into().expect("8 bytes")),
                    i32::from_be_bytes(c[8..].try_into().expect("4 bytes")),
                )
            })
            .collect(),
    )
}

/// Appends the escaped `key` and its terminator: the prefix shared by all versions of `key`.
pub(crate) fn key_prefix(key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() + 12);
    out.push(RECORD_SPACE);
    for &b in key {
        out.push(b);
        if b == 0 {
            out.push(0xff);
        }
    }
    out.extend_from_slice(&[0x00, 0x01]);
    out
}

/// The sled key of `key` at `revision`.
pub(crate) fn record_key(key: &[u8], revision: i64) -> Vec<u8> {
    let mut out = key_prefix(key);
    out.extend_from_slice(&(!(revision as u64)).to_be_bytes());
    out
}

/// The smallest encoded key after every version of `key` (`prefix` from [`key_prefix`]).
pub(crate) fn after_versions(prefix: &[u8]) -> Vec<u8> {
    let mut out = prefix.to_vec();
    let last = out.len() - 1;
    out[last] = 0x02;
    out
}

/// The smallest encoded key of any version of any user key `>= key`.
pub(crate) fn lower_bound(key: &[u8]) -> Vec<u8> {
    key_prefix(key)
}

/// Splits a record key into (encoded prefix, revision), checking its shape.
pub(crate) fn split_record_key(raw: &[u8]) -> Result<(&[u8], i64), MvccError> {
    if raw.len() < 11 || raw[0] != RECORD_SPACE || raw[raw.len() - 10..raw.len() - 8] != [0, 1] {
        return Err(MvccError::Corrupt(format!(
            "malformed record key {raw:02x?}"
        )));
    }
    let (prefix, rev) = raw.split_at(raw.len() - 8);
    let rev = !u64::from_be_bytes(rev.try_into().expect("8 bytes"));
    Ok((prefix, rev as i64))
}

/// The user key of an encoded prefix (as returned by [`split_record_key`]).
pub(crate) fn decode_prefix(prefix: &[u8]) -> Result<Vec<u8>, MvccError> {
    let body = &prefix[1..prefix.len() - 2];
    let mut out = Vec::with_capacity(body.len());
    let mut i = 0;
    while i < body.len() {
        let b = body[i];
        out.push(b);
        if b == 0 {
            if body.get(i + 1) != Some(&0xff) {
                return Err(MvccError::Corrupt(format!(
                    "bad escape in key {prefix:02x?}"
                )));
            }
            i += 1;
        }
        i += 1;
    }
    Ok(out)
}

/// One version of one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Record {
    /// The key holds a value from this revision on.
    Put {
        create_revision: i64,
        version: i64,
        lease: i64,
        value: Vec<u8>,
    },
    /// The key was deleted at this revision.
    Tombstone,
}

const KIND_PUT: u8 = 0;
const KIND_TOMBSTONE: u8 = 1;
/// A put whose value lies in the value log: the same fields, then a [`ValuePtr`] and
/// nothing after it.
const KIND_PUT_AT: u8 = 2;

/// The encoded [`Record::Put`] of these fields, written straight from the value (an apply
/// encodes from the request's value without first copying it into a `Record`).
pub(crate) fn encode_put(create_revision: i64, version: i64, lease: i64, value: &[u8]) -> Vec<u8> {
    // The kind byte and three varints of at most 10 bytes each.
    let mut out = Vec::with_capacity(1 + 3 * 10 + value.len());
    out.push(KIND_PUT);
    put_varint(&mut out, create_revision as u64);
    put_varint(&mut out, version as u64);
    put_varint(&mut out, lease as u64);
    out.extend_from_slice(value);
    out
}

/// The encoded put of these fields whose value lies at `ptr` in the value log.
pub(crate) fn encode_put_at(
    create_revision: i64,
    version: i64,
    lease: i64,
    ptr: &ValuePtr,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + 8 * 10);
    out.push(KIND_PUT_AT);
    put_varint(&mut out, create_revision as u64);
    put_varint(&mut out, version as u64);
    put_varint(&mut out, lease as u64);
    ptr.encode(&mut out);
    out
}

/// Where a stored put's value is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StoredValue<'a> {
    /// In the record.
    Inline(&'a [u8]),
    /// In the value log.
    At(ValuePtr),
}

/// A stored put's fields: (create revision, version, lease, value).
pub(crate) type PutParts<'a> = (i64, i64, i64, StoredValue<'a>);

/// Decodes a stored record without copying its value: `None` for a tombstone.
pub(crate) fn decode_parts(raw: &[u8]) -> Result<Option<PutParts<'_>>, MvccError> {
    let bad = || MvccError::Corrupt(format!("malformed record of {} bytes", raw.len()));
    match raw.first() {
        Some(&KIND_TOMBSTONE) if raw.len() == 1 => Ok(None),
        Some(&kind @ (KIND_PUT | KIND_PUT_AT)) => {
            let mut pos = 1;
            let create_revision = get_varint(raw, &mut pos).ok_or_else(bad)? as i64;
            let version = get_varint(raw, &mut pos).ok_or_else(bad)? as i64;
            let lease = get_varint(raw, &mut pos).ok_or_else(bad)? as i64;
            let value = if kind == KIND_PUT {
                StoredValue::Inline(&raw[pos..])
            } else {
                match ValuePtr::decode(&raw[pos..]) {
                    Some((ptr, [])) => StoredValue::At(ptr),
                    _ => return Err(bad()),
                }
            };
            Ok(Some((create_revision, version, lease, value)))
        }
        _ => Err(bad()),
    }
}

/// The value log frame a stored record points at, if it does.
pub(crate) fn value_ptr(raw: &[u8]) -> Result<Option<ValuePtr>, MvccError> {
    Ok(match decode_parts(raw)? {
        Some((_, _, _, StoredValue::At(ptr))) => Some(ptr),
        _ => None,
    })
}

/// The bytes a stored record counts for (see `MvccStore::size_in_use`): as stored, with a
/// value in the value log counted in full, so the figure does not depend on where values
/// lie. A malformed record counts as stored.
pub(crate) fn stored_len(raw: &[u8]) -> usize {
    stored_len_at(raw, value_ptr(raw).ok().flatten().as_ref())
}

/// [`stored_len`] of a record whose pointer (from [`value_ptr`]) the caller already has.
pub(crate) fn stored_len_at(raw: &[u8], ptr: Option<&ValuePtr>) -> usize {
    match ptr {
        // The pointer ends the record: its bytes stand for the value's.
        Some(ptr) => raw.len() - ptr_len(ptr) + ptr.len as usize,
        None => raw.len(),
    }
}

/// Bytes of `ptr` encoded (five LEB128 varints).
fn ptr_len(ptr: &ValuePtr) -> usize {
    let varint_len = |v: u64| (64 - (v | 1).leading_zeros() as usize).div_ceil(7);
    [
        ptr.seq,
        ptr.offset,
        u64::from(ptr.key_len),
        u64::from(ptr.len),
        u64::from(ptr.crc),
    ]
    .into_iter()
    .map(varint_len)
    .sum()
}

impl Record {
    pub(crate) fn encode(&self) -> Vec<u8> {
        match self {
            Record::Tombstone => vec![KIND_TOMBSTONE],
            Record::Put {
                create_revision,
                version,
                lease,
                value,
            } => encode_put(*create_revision, *version, *lease, value),
        }
    }

    /// Decodes a record; with `with_value = false` the value is left empty (keys-only and
    /// count-only reads skip copying it). A record whose value is in the value log is read
    /// with its value only through the store (`MvccStore::decode_record`); here it is
    /// refused.
    pub(crate) fn decode(raw: &[u8], with_value: bool) -> Result<Self, MvccError> {
        Ok(match decode_parts(raw)? {
            None => Record::Tombstone,
            Some((create_revision, version, lease, stored)) => Record::Put {
                create_revision,
                version,
                lease,
                value: match (stored, with_value) {
                    (_, false) => Vec::new(),
                    (StoredValue::Inline(value), true) => value.to_vec(),
                    (StoredValue::At(_), true) => {
                        return Err(MvccError::Corrupt(
                            "a record whose value is in the value log was read without it".into(),
                        ));
                    }
                },
            },
        })
    }
}

/// Appends a LEB128 varint (the codec's, so one encoding serves both crates).
pub(crate) fn put_varint(out: &mut Vec<u8>, v: u64) {
    raftkv_codec::varint::put(out, v);
}

/// Reads a LEB128 varint at `*pos`, advancing it; `None` if truncated or over-long.
pub(crate) fn get_varint(buf: &[u8], pos: &mut usize) -> Option<u64> {
    raftkv_codec::varint::get(buf, pos).ok()
}

/// `revision (i64 BE) | applied | membership [| 1 | values]`: the first two parts each as
/// `0`, or `1 | len (u32 BE) | bytes` (the Raft layer's opaque encodings); the last, when
/// present, the value log's last durable frame (a [`ValuePtr`]) as of the point, which
/// recovery checks the value log against.
pub(crate) fn encode_point(
    revision: i64,
    applied: Option<&[u8]>,
    membership: Option<&[u8]>,
    values: Option<&ValuePtr>,
) -> Vec<u8> {
    let mut out = revision.to_be_bytes().to_vec();
    for part in [applied, membership] {
        match part {
            None => out.push(0),
            Some(bytes) => {
                out.push(1);
                out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
                out.extend_from_slice(bytes);
            }
        }
    }
    if let Some(ptr) = values {
        out.push(1);
        ptr.encode(&mut out);
    }
    out
}

/// The applied point's parts: (revision, applied, membership, value log's durable frame).
pub(crate) type Point = (i64, Option<Vec<u8>>, Option<Vec<u8>>, Option<ValuePtr>);

/// Decodes [`encode_point`]'s output; anything else is damage.
pub(crate) fn decode_point(raw: &[u8]) -> Result<Point, MvccError> {
    let corrupt = |what: &str| MvccError::Corrupt(format!("applied point: {what}"));
    let revision = decode_i64(raw.get(..8).ok_or_else(|| corrupt("too short"))?)?;
    let mut rest = &raw[8..];
    let mut parts = [None, None];
    for part in &mut parts {
        let (&flag, tail) = rest.split_first().ok_or_else(|| corrupt("truncated"))?;
        rest = tail;
        match flag {
            0 => {}
            1 => {
                let len: [u8; 4] = rest
                    .get(..4)
                    .and_then(|b| b.try_into().ok())
                    .ok_or_else(|| corrupt("truncated length"))?;
                let len = u32::from_be_bytes(len) as usize;
                let bytes = rest
                    .get(4..4 + len)
                    .ok_or_else(|| corrupt("truncated part"))?;
                *part = Some(bytes.to_vec());
                rest = &rest[4 + len..];
            }
            other => return Err(corrupt(&format!("flag {other}"))),
        }
    }
    let values = match rest.split_first() {
        None => None,
        Some((1, tail)) => match ValuePtr::decode(tail) {
            Some((ptr, [])) => Some(ptr),
            _ => return Err(corrupt("malformed value log frame")),
        },
        Some(_) => return Err(corrupt("trailing bytes")),
    };
    let [applied, membership] = parts;
    Ok((revision, applied, membership, values))
}

pub(crate) fn decode_i64(raw: &[u8]) -> Result<i64, MvccError> {
    let bytes: [u8; 8] = raw
        .try_into()
        .map_err(|_| MvccError::Corrupt(format!("metadata integer of {} bytes", raw.len())))?;
    Ok(i64::from_be_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn applied_point_round_trips_and_damage_is_an_error() {
        for (rev, a, m) in [
            (1, None, None),
            (42, Some(&b"log id"[..]), None),
            (7, None, Some(&b"members"[..])),
            (i64::MAX, Some(&b""[..]), Some(&b"m"[..])),
        ] {
            let raw = encode_point(rev, a, m, None);
            let back = decode_point(&raw).unwrap();
            assert_eq!(
                back,
                (rev, a.map(<[u8]>::to_vec), m.map(<[u8]>::to_vec), None)
            );
            for cut in 0..raw.len() {
                assert!(decode_point(&raw[..cut]).is_err(), "prefix of {cut} bytes");
            }
            let mut longer = raw.clone();
            longer.push(0);
            assert!(decode_point(&longer).is_err());
        }
        let mut bad_flag = encode_point(1, None, None, None);
        bad_flag[8] = 9;
        assert!(decode_point(&bad_flag).is_err());
        let mut huge = encode_point(1, Some(b"x"), None, None);
        huge[9..13].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(decode_point(&huge).is_err());
    }

    #[test]
    fn a_point_carries_the_value_logs_durable_frame_and_damage_to_it_is_an_error() {
        let ptr = ValuePtr {
            seq: 3,
            offset: 1 << 40,
            key_len: 7,
            len: 1500,
            crc: u32::MAX,
        };
        let raw = encode_point(9, Some(b"id"), None, Some(&ptr));
        assert_eq!(
            decode_point(&raw).unwrap(),
            (9, Some(b"id".to_vec()), None, Some(ptr))
        );
        for cut in 0..raw.len() {
            if let Ok(p) = decode_point(&raw[..cut]) {
                // Only the cut right before the frame's flag is a whole point (without it).
                assert_eq!(p.3, None, "prefix of {cut} bytes");
                assert_eq!(cut, encode_point(9, Some(b"id"), None, None).len());
            }
        }
        let mut longer = raw.clone();
        longer.push(0);
        assert!(decode_point(&longer).is_err());
        let mut flag = raw.clone();
        flag[encode_point(9, Some(b"id"), None, None).len()] = 2;
        assert!(decode_point(&flag).is_err());
    }

    #[test]
    fn a_put_whose_value_is_in_the_value_log_decodes_only_without_its_value() {
        let ptr = ValuePtr {
            seq: 1,
            offset: 40,
            key_len: 3,
            len: 256,
            crc: 7,
        };
        let raw = encode_put_at(5, 2, 9, &ptr);
        assert_eq!(
            decode_parts(&raw).unwrap(),
            Some((5, 2, 9, StoredValue::At(ptr)))
        );
        assert_eq!(value_ptr(&raw).unwrap(), Some(ptr));
        // Counted as the same put with its value inline would be.
        assert_eq!(stored_len(&raw), encode_put(5, 2, 9, &[0; 256]).len());
        let mut ptr_bytes = Vec::new();
        ptr.encode(&mut ptr_bytes);
        assert_eq!(ptr_len(&ptr), ptr_bytes.len());
        assert_eq!(
            Record::decode(&raw, false).unwrap(),
            Record::Put {
                create_revision: 5,
                version: 2,
                lease: 9,
                value: Vec::new()
            }
        );
        assert!(Record::decode(&raw, true).is_err());
        // Nothing may follow the pointer, and a cut one is refused.
        let mut longer = raw.clone();
        longer.push(0);
        assert!(decode_parts(&longer).is_err());
        for cut in 1..raw.len() {
            assert!(decode_parts(&raw[..cut]).is_err(), "prefix of {cut} bytes");
        }
        let inline = encode_put(5, 2, 9, b"v");
        assert_eq!(value_ptr(&inline).unwrap(), None);
        assert_eq!(stored_len(&inline), inline.len());
    }

    proptest! {
        #[test]
        fn encoded_keys_sort_like_user_keys_then_newest_first(
            a in proptest::collection::vec(prop_oneof![Just(0u8), Just(1), Just(0xff), any::<u8>()], 0..6),
            b in proptest::collection::vec(prop_oneof![Just(0u8), Just(1), Just(0xff), any::<u8>()], 0..6),
            ra in 1i64..1000, rb in 1i64..1000,
        ) {
            let (ka, kb) = (record_key(&a, ra), record_key(&b, rb));
            let expected = a.cmp(&b).then(rb.cmp(&ra));
            prop_assert_eq!(ka.cmp(&kb), expected);
            // Every version of a sorts before after_versions(a) and at or after lower_bound(a).
            prop_assert!(ka < after_versions(&key_prefix(&a)));
            prop_assert!(ka >= lower_bound(&a));
            let (prefix, rev) = split_record_key(&ka).unwrap();
            prop_assert_eq!(rev, ra);
            prop_assert_eq!(decode_prefix(prefix).unwrap(), a);
        }

        #[test]
        fn records_round_trip(create in 0i64..i64::MAX, version in 0i64..1 << 40, lease in 0i64..i64::MAX, value in proptest::collection::vec(any::<u8>(), 0..50)) {
            let r = Record::Put { create_revision: create, version, lease, value };
            prop_assert_eq!(Record::decode(&r.encode(), true).unwrap(), r);
        }

        #[test]
        fn a_pointer_counts_as_its_value_inline(
            seq in any::<u64>(), offset in any::<u64>(), key_len in any::<u32>(),
            len in 0u32..5000, crc in any::<u32>(), create in any::<i64>(), lease in any::<i64>(),
        ) {
            let ptr = ValuePtr { seq, offset, key_len, len, crc };
            let raw = encode_put_at(create, 3, lease, &ptr);
            prop_assert_eq!(stored_len(&raw), encode_put(create, 3, lease, &vec![0; len as usize]).len());
        }

        #[test]
        fn garbage_never_panics(raw in proptest::collection::vec(any::<u8>(), 0..40)) {
            let _ = Record::decode(&raw, true);
            let _ = stored_len(&raw);
            let _ = split_record_key(&raw).map(|(p, _)| decode_prefix(p));
            let _ = history_revision(&raw);
            if let Ok(entries) = decode_history_group(i64::MAX - 3, &raw) {
                prop_assert!(entries.iter().all(|(rev, _, _)| *rev >= i64::MAX - 3));
            }
        }

        #[test]
        fn history_groups_round_trip(
            first in 0i64..1 << 50,
            changes in proptest::collection::vec(
                (0i64..3, 0u32..4, proptest::collection::vec(any::<u8>(), 0..12)), 0..20),
        ) {
            // Strictly increasing (revision, n), as a run of writes makes them.
            let mut entries: Vec<HistoryEntry> = Vec::new();
            let (mut rev, mut n) = (first, 0u32);
            for (step, skip, key) in changes {
                if step > 0 { rev += step; n = 0 } else if !entries.is_empty() { n += 1 + skip }
                entries.push((rev, n, bytes::Bytes::from(key)));
            }
            let raw = encode_history_group(first, &entries);
            let back = decode_history_group(first, &raw).unwrap();
            prop_assert_eq!(back.len(), entries.len());
            for ((r, n, k), (r2, n2, k2)) in back.iter().zip(&entries) {
                prop_assert_eq!((*r, *n, *k), (*r2, *n2, k2.as_ref()));
            }
            // Cut anywhere inside, a group is refused or decodes to a prefix, never more.
            for cut in 0..raw.len() {
                if let Ok(part) = decode_history_group(first, &raw[..cut]) {
                    prop_assert!(part.len() <= entries.len());
                }
            }
        }
    }
}
