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
//! With [`ValueLayout::Split`] (format 5, block kind 4) the values are stored split in two
//! (see [`split`]): the last four entries become
//!
//! ```text
//! n × varint value structure length
//! n × varint value scalars length
//! key suffixes, concatenated
//! value structures, concatenated
//! value scalars, concatenated
//! ```
//!
//! Grouping like with like is what gives the unit-repetition codec runs to fold: a column
//! of equal versions or leases, equal value lengths (a repeated 2-byte unit), or revision
//! deltas of a bulk load all become single repeat tokens. Keys and values are stored as
//! the part that differs from their predecessor: sorted keys share long prefixes, and so do
//! the values of similar objects (`{"kind":"Pod","apiVersion":"v1",...`).

use super::{BLOCK_RECORDS, MAX_BLOCK_DECODED, split};
use crate::mvcc::encoding::{Record, get_varint, put_varint};

/// One stored version of one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Row {
    pub key: Vec<u8>,
    pub revision: i64,
    pub record: Record,
}

/// How a block stores its values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ValueLayout {
    /// Each value as its suffix after the prefix it shares with the previous value.
    Shared,
    /// Each value split into its structure and its scalars ([`split`]).
    Split,
}

/// Encodes rows (in store order) into a block's raw bytes, values as `layout` says.
pub(crate) fn encode(rows: &[Row], layout: ValueLayout) -> Vec<u8> {
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
    let values: Vec<&[u8]> = rows
        .iter()
        .map(|row| match &row.record {
            Record::Put { value, .. } => value.as_slice(),
            Record::Tombstone => &[],
        })
        .collect();
    if layout == ValueLayout::Split {
        let (mut structures, mut scalars) = (Vec::new(), Vec::new());
        let mut lens = Vec::with_capacity(values.len());
        for value in &values {
            let (a, b) = (structures.len(), scalars.len());
            split::split(value, &mut structures, &mut scalars);
            lens.push((structures.len() - a, scalars.len() - b));
        }
        for &(structure, _) in &lens {
            put_varint(&mut out, structure as u64);
        }
        for &(_, scalar) in &lens {
            put_varint(&mut out, scalar as u64);
        }
        put_key_suffixes(&mut out, rows);
        out.extend_from_slice(&structures);
        out.extend_from_slice(&scalars);
        return out;
    }
    // Values: shared prefix with the previous put's value, then the rest.
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
    put_key_suffixes(&mut out, rows);
    for (value, &shared) in values.iter().zip(&value_shared) {
        out.extend_from_slice(&value[shared..]);
    }
    out
}

fn put_key_suffixes(out: &mut Vec<u8>, rows: &[Row]) {
    let mut prev: &[u8] = &[];
    for row in rows {
        out.extend_from_slice(&row.key[shared_prefix(prev, &row.key)..]);
        prev = &row.key;
    }
}

/// Decodes a block's raw bytes; `None` if they are malformed in any way, or would decode to
/// more than [`BLOCK_RECORDS`] versions or [`MAX_BLOCK_DECODED`] bytes of keys and values
/// (shared prefixes let a few raw bytes stand for a long key or value in every row, so the
/// bound is checked on what each row would allocate, before it does).
pub(crate) fn decode(raw: &[u8], layout: ValueLayout) -> Option<Vec<Row>> {
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
    // Shared layout: shared prefix and suffix lengths; split: structure and scalars lengths.
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
    // Split layout: where the scalars start, after every structure.
    let mut scalar_pos = match layout {
        ValueLayout::Shared => 0,
        ValueLayout::Split => value_shared.iter().try_fold(value_pos, |acc, &s| {
            acc.checked_add(usize::try_from(s).ok()?)
        })?,
    };
    let values_end = match layout {
        ValueLayout::Shared => None,
        ValueLayout::Split => Some(value_lens.iter().try_fold(scalar_pos, |acc, &s| {
            acc.checked_add(usize::try_from(s).ok()?)
        })?),
    };
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
            // A tombstone has no value: in the split layout, both its lengths are 0.
            1 if layout == ValueLayout::Split && (value_shared[i], value_lens[i]) != (0, 0) => {
                return None;
            }
            1 => Record::Tombstone,
            0 if layout == ValueLayout::Split => {
                let structure_len = usize::try_from(value_shared[i]).ok()?;
                let scalars_len = usize::try_from(value_lens[i]).ok()?;
                // The parts are slices of `raw`, and a joined value is never longer than
                // its two parts, so this allocation is bounded by the block; the budget
                // counts the value itself (its parts may be longer: a quote per scalar).
                let structure = raw.get(value_pos..value_pos.checked_add(structure_len)?)?;
                let scalars = raw.get(scalar_pos..scalar_pos.checked_add(scalars_len)?)?;
                value_pos += structure_len;
                scalar_pos += scalars_len;
                let mut value = Vec::with_capacity(structure_len + scalars_len);
                split::join(structure, scalars, &mut value)?;
                spend(value.len())?;
                Record::Put {
                    create_revision: revision.wrapping_sub(distance[i] as i64),
                    version: versions[i] as i64,
                    lease: leases[i] as i64,
                    value,
                }
            }
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
    match values_end {
        // Every structure and every scalar used, and nothing after them.
        Some(end) => (scalar_pos == end && end == raw.len()).then_some(rows),
        None => (value_pos == raw.len()).then_some(rows),
    }
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
                proptest::collection::vec(
                    prop_oneof![Just(b'"'), Just(b'\\'), Just(b':'), Just(b'{'), any::<u8>()],
                    0..20,
                ),
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
            for layout in [ValueLayout::Shared, ValueLayout::Split] {
                prop_assert_eq!(decode(&encode(&rows, layout), layout), Some(rows.clone()));
            }
        }

        #[test]
        fn garbage_blocks_never_panic(raw in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode(&raw, ValueLayout::Shared);
            let _ = decode(&raw, ValueLayout::Split);
        }
    }
}
