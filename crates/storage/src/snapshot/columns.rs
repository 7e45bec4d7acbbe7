//! The columnar layout of one snapshot block, before the codec compresses it.
//!
//! ```text
//! varint n                          records in the block
//! n × varint shared-prefix length   with the previous key in the block
//! n × varint suffix length
//! n × varint revision delta         zigzag, against the previous record (the first: 0)
//! n × u8     kind                   0 put, 1 tombstone
//! n × varint revision - create      (0 for tombstones)
//! n × varint version                (0 for tombstones)
//! n × varint lease
//! n × varint value shared-prefix length  with the previous put's value in the block
//! n × varint value suffix length
//! key suffixes, concatenated
//! value suffixes, concatenated
//! ```
//!
//! Grouping like with like is what gives the unit-repetition codec runs to fold: a column
//! of equal versions or leases, equal value lengths (a repeated 2-byte unit), or revision
//! deltas of a bulk load all become single repeat tokens. Keys and values are stored as
//! the part that differs from their predecessor: sorted keys share long prefixes, and so do
//! the values of similar objects (`{"kind":"Pod","apiVersion":"v1",...`).

use super::{BLOCK_RECORDS, MAX_BLOCK_DECODED};
use crate::mvcc::encoding::{Record, get_varint, put_varint};

/// One stored version of one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Row {
    pub key: Vec<u8>,
    pub revision: i64,
    pub record: Record,
}

/// Encodes rows (in store order) into a block's raw bytes.
pub(crate) fn encode(rows: &[Row]) -> Vec<u8> {
    let mut out = Vec::with_capacity(rows.iter().map(|r| r.key.len() + 24).sum::<usize>());
    put_varint(&mut out, rows.len() as u64);
    let mut prev: &[u8] = &[];
    for row in rows {
        put_varint(&mut out, shared_prefix(prev, &row.key) as u64);
        prev = &row.key;
    }
    let mut prev: &[u8] = &[];
    for row in rows {
        put_varint(
            &mut out,
            (row.key.len() - shared_prefix(prev, &row.key)) as u64,
        );
        prev = &row.key;
    }
    let mut prev_rev = 0i64;
    for row in rows {
        put_varint(&mut out, zigzag(row.revision.wrapping_sub(prev_rev)));
        prev_rev = row.revision;
    }
    for row in rows {
        out.push(matches!(row.record, Record::Tombstone) as u8);
    }
    let put_field = |out: &mut Vec<u8>, f: &dyn Fn(&Row) -> u64| {
        for row in rows {
            put_varint(out, f(row));
        }
    };
    put_field(&mut out, &|row| match &row.record {
        Record::Put {
            create_revision, ..
        } => row.revision.wrapping_sub(*create_revision) as u64,
        Record::Tombstone => 0,
    });
    put_field(&mut out, &|row| match &row.record {
        Record::Put { version, .. } => *version as u64,
        Record::Tombstone => 0,
    });
    put_field(&mut out, &|row| match &row.record {
        Record::Put { lease, .. } => *lease as u64,
        Record::Tombstone => 0,
    });
    // Values: shared prefix with the previous put's value, then the rest.
    let values: Vec<&[u8]> = rows
        .iter()
        .map(|row| match &row.record {
            Record::Put { value, .. } => value.as_slice(),
            Record::Tombstone => &[],
        })
        .collect();
    let mut value_shared = Vec::with_capacity(rows.len());
    let mut prev: &[u8] = &[];
    for (row, value) in rows.iter().zip(&values) {
        if matches!(row.record, Record::Put { .. }) {
            value_shared.push(shared_prefix(prev, value));
            prev = value;
        } else {
            value_shared.push(0);
        }
    }
    for &shared in &value_shared {
        put_varint(&mut out, shared as u64);
    }
    for (value, &shared) in values.iter().zip(&value_shared) {
        put_varint(&mut out, (value.len() - shared) as u64);
    }
    let mut prev: &[u8] = &[];
    for row in rows {
        out.extend_from_slice(&row.key[shared_prefix(prev, &row.key)..]);
        prev = &row.key;
    }
    for (value, &shared) in values.iter().zip(&value_shared) {
        out.extend_from_slice(&value[shared..]);
    }
    out
}

/// Decodes a block's raw bytes; `None` if they are malformed in any way, or would decode to
/// more than [`BLOCK_RECORDS`] versions or [`MAX_BLOCK_DECODED`] bytes of keys and values
/// (shared prefixes let a few raw bytes stand for a long key or value in every row, so the
/// bound is checked on what each row would allocate, before it does).
pub(crate) fn decode(raw: &[u8]) -> Option<Vec<Row>> {
    let mut pos = 0;
    let n = usize::try_from(get_varint(raw, &mut pos)?).ok()?;
    // Every record takes at least 9 bytes of columns: refuse counts the block cannot hold.
    if n > raw.len() / 9 + 1 || n > BLOCK_RECORDS {
        return None;
    }
    let mut budget = MAX_BLOCK_DECODED;
    let mut spend = |bytes: usize| -> Option<()> {
        budget = budget.checked_sub(bytes)?;
        Some(())
    };
    let column =
        |pos: &mut usize| -> Option<Vec<u64>> { (0..n).map(|_| get_varint(raw, pos)).collect() };
    let shared = column(&mut pos)?;
    let suffix = column(&mut pos)?;
    let deltas = column(&mut pos)?;
    let kinds = raw.get(pos..pos.checked_add(n)?)?.to_vec();
    pos += n;
    let distance = column(&mut pos)?;
    let versions = column(&mut pos)?;
    let leases = column(&mut pos)?;
    let value_shared = column(&mut pos)?;
    let value_lens = column(&mut pos)?;

    let mut rows = Vec::with_capacity(n);
    let mut key: Vec<u8> = Vec::new();
    let mut revision = 0i64;
    let mut suffix_pos = pos;
    let suffix_total: usize = suffix
        .iter()
        .try_fold(0usize, |acc, &s| acc.checked_add(usize::try_from(s).ok()?))?;
    let mut value_pos = suffix_pos.checked_add(suffix_total)?;
    let mut prev_value: Vec<u8> = Vec::new();
    for i in 0..n {
        let shared = usize::try_from(shared[i]).ok()?;
        let len = usize::try_from(suffix[i]).ok()?;
        if shared > key.len() {
            return None;
        }
        spend(shared.checked_add(len)?)?;
        key.truncate(shared);
        key.extend_from_slice(raw.get(suffix_pos..suffix_pos.checked_add(len)?)?);
        suffix_pos += len;
        revision = revision.wrapping_add(unzigzag(deltas[i]));
        let record = match kinds[i] {
            1 => Record::Tombstone,
            0 => {
                let shared = usize::try_from(value_shared[i]).ok()?;
                let value_len = usize::try_from(value_lens[i]).ok()?;
                if shared > prev_value.len() {
                    return None;
                }
                spend(shared.checked_add(value_len)?)?;
                let mut value = prev_value[..shared].to_vec();
                value.extend_from_slice(raw.get(value_pos..value_pos.checked_add(value_len)?)?);
                value_pos += value_len;
                prev_value.clone_from(&value);
                Record::Put {
                    create_revision: revision.wrapping_sub(distance[i] as i64),
                    version: versions[i] as i64,
                    lease: leases[i] as i64,
                    value,
                }
            }
            _ => return None,
        };
        rows.push(Row {
            key: key.clone(),
            revision,
            record,
        });
    }
    (value_pos == raw.len()).then_some(rows)
}

fn shared_prefix(a: &[u8], b: &[u8]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn row_strategy() -> impl Strategy<Value = Row> {
        (
            proptest::collection::vec(0u8..4, 0..8),
            1i64..1_000_000,
            proptest::option::of((
                0i64..1000,
                1i64..50,
                0i64..3,
                proptest::collection::vec(any::<u8>(), 0..20),
            )),
        )
            .prop_map(|(key, revision, put)| Row {
                key,
                revision,
                record: match put {
                    None => Record::Tombstone,
                    Some((back, version, lease, value)) => Record::Put {
                        create_revision: revision - back,
                        version,
                        lease,
                        value,
                    },
                },
            })
    }

    proptest! {
        #[test]
        fn blocks_round_trip(mut rows in proptest::collection::vec(row_strategy(), 0..60)) {
            rows.sort_by(|a, b| a.key.cmp(&b.key).then(b.revision.cmp(&a.revision)));
            prop_assert_eq!(decode(&encode(&rows)), Some(rows));
        }

        #[test]
        fn garbage_blocks_never_panic(raw in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode(&raw);
        }
    }
}
