//! One block's tokens: the seed problem's run-length idea, generalised to bytes.
//!
//! A block is a sequence of self-delimiting tokens. Each starts with a varint `h`:
//!
//! - `h` even — a **literal**: `h >> 1` bytes (at least one) follow and are copied out.
//! - `h` odd — a **repeat**: a unit of `k = h >> 1` bytes (at least one), then a varint count
//!   `c ≥ 2`, then the unit itself; it stands for the unit written `c` times.
//!
//! The seed problem fixes one unit length for a whole string because its cuts are anchored
//! at the front. Here every repeat is anchored where its repetition starts and carries its
//! own unit length, so one block can hold runs of zeros, of 3-byte and of 200-byte units at
//! any alignment. For each run the encoder takes the unit that encodes it shortest: the
//! smallest period found, since a repeat costs its unit once.
//!
//! Finding runs: a hash table maps every 4-byte sequence seen to its latest position; when
//! the sequence at `p` was last seen at `q`, the text may have period `d = p - q` from `q`
//! on. The encoder measures how far that period holds (eight bytes at a time) and, if it
//! covers two or more whole units and saves bytes, emits the literal before it and a repeat.
//! Incompressible stretches are skipped with a growing stride, as LZ4 does, so random data
//! costs little. Everything found is verified against the bytes, so a stale or colliding
//! table entry can cost compression, never correctness.

use crate::{DecodeError, varint};

/// Bits of the hash table index.
const HASH_BITS: u32 = 14;
/// Bytes hashed to find candidate periods (so units shorter than this are found through the
/// repetition of longer sequences, e.g. "abab" for the unit "ab").
const MIN_MATCH: usize = 4;
/// After `2^SKIP_SHIFT` fruitless positions the stride grows by one byte, and so on: runs are
/// long, so a coarse look still lands in them, and the search walks back to where they begin.
const SKIP_SHIFT: u32 = 3;
/// How much of a shared (non-periodic) stretch is scanned again after stepping over it.
const SHARED_MARGIN: usize = 8;
/// A repeat must save at least this many bytes over leaving its bytes in a literal, which
/// also pays for the literal split it causes.
const MIN_SAVING: usize = 4;

/// Reusable encoder state: the hash table of recent positions.
pub(crate) struct Encoder {
    /// Latest position (as a wrapping `u32`) at which each hashed 4-byte sequence was seen.
    table: Vec<u32>,
}

impl Encoder {
    pub(crate) fn new() -> Self {
        Self {
            table: vec![0; 1 << HASH_BITS],
        }
    }

    /// Appends the tokens of `input[start..end]` to `out`, unless they would take `budget`
    /// bytes or more; then returns `false` and leaves `out` with unspecified extra bytes
    /// (the caller truncates it and stores the block raw).
    pub(crate) fn encode(
        &mut self,
        input: &[u8],
        start: usize,
        end: usize,
        out: &mut Vec<u8>,
        budget: usize,
    ) -> bool {
        let limit = out.len() + budget;
        let mut lit_start = start;
        let mut p = start;
        let mut misses = 0usize;
        while p + MIN_MATCH <= end {
            let seq = read_u32(input, p);
            let slot = hash(seq);
            let seen = self.table[slot];
            self.table[slot] = p as u32;
            let d = (p as u32).wrapping_sub(seen) as usize;
            let stride = 1 + (misses >> SKIP_SHIFT);
            if d == 0 || d > p - start || read_u32(input, p - d) != seq {
                misses += 1;
                p += stride;
                continue;
            }
            // Two whole units need the period to hold for about a unit past p (less the
            // stride, whose skipped bytes the run may have started in). Most candidates in
            // text that merely shares substrings fail this at once, in O(1).
            let need = d.saturating_sub(stride);
            if need > 8
                && (p + need > end
                    || read_u64(input, p + need - 8) != read_u64(input, p + need - 8 - d))
            {
                misses += 1;
                p += stride;
                continue;
            }
            // The text has period d over [p - d, p + m); with a stride above one the run
            // may have begun earlier, so walk its start back to the pending literal.
            let m = MIN_MATCH + common_prefix(input, p + MIN_MATCH, p + MIN_MATCH - d, end);
            let mut unit_start = p - d;
            while unit_start > lit_start && input[unit_start - 1] == input[unit_start - 1 + d] {
                unit_start -= 1;
            }
            let unit_start = unit_start.max(lit_start);
            let count = (p + m - unit_start) / d;
            let covered = count * d;
            let cost = varint::len((d as u64) << 1 | 1) + varint::len(count as u64) + d;
            if count < 2 || covered < cost + MIN_SAVING {
                // Text that merely shares a stretch with earlier text (records with the same
                // fields) fails here again at every position of the stretch: step over most
                // of it. A run starting inside it is still found from its far end, by the
                // walk back above.
                misses += 1;
                p += stride.max(m.saturating_sub(SHARED_MARGIN));
                continue;
            }
            misses = 0;
            emit_literal(out, &input[lit_start..unit_start]);
            varint::put(out, (d as u64) << 1 | 1);
            varint::put(out, count as u64);
            out.extend_from_slice(&input[unit_start..unit_start + d]);
            if out.len() >= limit {
                return false;
            }
            p = unit_start + covered;
            lit_start = p;
            // Remember where the run ended, so a run that resumes after a short break
            // (or a longer unit spanning this one) is still found.
            if p >= start + MIN_MATCH && p + MIN_MATCH <= end {
                let q = p - 1;
                self.table[hash(read_u32(input, q))] = q as u32;
            }
        }
        emit_literal(out, &input[lit_start..end]);
        out.len() < limit
    }
}

#[inline]
fn emit_literal(out: &mut Vec<u8>, bytes: &[u8]) {
    if !bytes.is_empty() {
        varint::put(out, (bytes.len() as u64) << 1);
        out.extend_from_slice(bytes);
    }
}

#[inline]
fn read_u32(buf: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]])
}

#[inline]
fn read_u64(buf: &[u8], at: usize) -> u64 {
    let bytes: [u8; 8] = buf[at..at + 8].try_into().expect("slice of length 8");
    u64::from_le_bytes(bytes)
}

#[inline]
fn hash(seq: u32) -> usize {
    (seq.wrapping_mul(2_654_435_761) >> (32 - HASH_BITS)) as usize
}

/// Length of the longest common prefix of `buf[a..end]` and `buf[b..]`, where `b < a`.
/// The two may overlap: that is how a period shorter than eight bytes is measured.
#[inline]
fn common_prefix(buf: &[u8], a: usize, b: usize, end: usize) -> usize {
    let mut n = 0;
    while a + n + 8 <= end {
        let diff = read_u64(buf, a + n) ^ read_u64(buf, b + n);
        if diff != 0 {
            return n + (diff.trailing_zeros() / 8) as usize;
        }
        n += 8;
    }
    while a + n < end && buf[a + n] == buf[b + n] {
        n += 1;
    }
    n
}

/// Decodes one block's `tokens`, appending exactly `want` bytes to `out`.
pub(crate) fn decode(tokens: &[u8], want: usize, out: &mut Vec<u8>) -> Result<(), DecodeError> {
    let end = out.len() + want;
    out.reserve(want);
    let mut pos = 0;
    while pos < tokens.len() {
        let head = varint::get(tokens, &mut pos)?;
        let len = usize::try_from(head >> 1).map_err(|_| DecodeError::BlockOverflow)?;
        if len == 0 {
            return Err(DecodeError::ZeroLength);
        }
        if head & 1 == 0 {
            if len > end - out.len() {
                return Err(DecodeError::BlockOverflow);
            }
            out.extend_from_slice(take(tokens, pos, len)?);
            pos += len;
        } else {
            let count = varint::get(tokens, &mut pos)?;
            if count < 2 {
                return Err(DecodeError::BadRepeatCount(count));
            }
            let total = usize::try_from(count)
                .ok()
                .and_then(|c| c.checked_mul(len))
                .ok_or(DecodeError::BlockOverflow)?;
            if total > end - out.len() {
                return Err(DecodeError::BlockOverflow);
            }
            let unit = take(tokens, pos, len)?;
            pos += len;
            repeat(out, unit, total);
        }
    }
    if out.len() != end {
        return Err(DecodeError::BlockUnderflow);
    }
    Ok(())
}

/// The `len` bytes at `pos`, or `Truncated` if the buffer ends first.
#[inline]
fn take(buf: &[u8], pos: usize, len: usize) -> Result<&[u8], DecodeError> {
    if len > buf.len() - pos {
        return Err(DecodeError::Truncated);
    }
    Ok(&buf[pos..pos + len])
}

/// Appends `unit` repeated to fill `total` bytes (`total` a multiple of `unit.len()`).
#[inline]
fn repeat(out: &mut Vec<u8>, unit: &[u8], total: usize) {
    if let [byte] = unit {
        out.resize(out.len() + total, *byte);
        return;
    }
    let from = out.len();
    out.extend_from_slice(unit);
    let mut filled = unit.len();
    while filled < total {
        // Copy what is written so far: the filled region doubles each round.
        let n = filled.min(total - filled);
        out.extend_from_within(from..from + n);
        filled += n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode_all(input: &[u8]) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        Encoder::new()
            .encode(input, 0, input.len(), &mut out, input.len())
            .then_some(out)
    }

    fn decode_all(tokens: &[u8], want: usize) -> Result<Vec<u8>, DecodeError> {
        let mut out = Vec::new();
        decode(tokens, want, &mut out).map(|()| out)
    }

    #[test]
    fn finds_the_smallest_unit() {
        let input = b"xyzabcabcabcabcabcabcabcabcQ";
        let tokens = encode_all(input).expect("shrinks");
        // literal "xyz", repeat 8 × "abc", literal "Q"
        assert_eq!(tokens, b"\x06xyz\x07\x08abc\x02Q");
        assert_eq!(decode_all(&tokens, input.len()).unwrap(), input);
    }

    #[test]
    fn zeros_become_one_token() {
        let input = vec![0u8; 65536];
        let tokens = encode_all(&input).expect("shrinks");
        assert!(tokens.len() <= 6, "{tokens:?}");
        assert_eq!(decode_all(&tokens, input.len()).unwrap(), input);
    }

    #[test]
    fn long_units_at_any_alignment() {
        let unit: Vec<u8> = (0..200u32).map(|i| (i * 37 % 251) as u8).collect();
        let mut input = b"hdr".to_vec();
        for _ in 0..10 {
            input.extend_from_slice(&unit);
        }
        input.extend_from_slice(b"tail");
        let tokens = encode_all(&input).expect("shrinks");
        assert!(tokens.len() < 230, "{}", tokens.len());
        assert_eq!(decode_all(&tokens, input.len()).unwrap(), input);
    }

    #[test]
    fn decode_rejects_bad_tokens() {
        // A literal claiming more bytes than follow.
        assert_eq!(decode_all(b"\x0aab", 5), Err(DecodeError::Truncated));
        // Zero-length literal and zero-length unit.
        assert_eq!(decode_all(b"\x00", 1), Err(DecodeError::ZeroLength));
        assert_eq!(decode_all(b"\x01\x02", 1), Err(DecodeError::ZeroLength));
        // Counts of zero and one.
        assert_eq!(
            decode_all(b"\x03\x00a", 2),
            Err(DecodeError::BadRepeatCount(0))
        );
        assert_eq!(
            decode_all(b"\x03\x01a", 2),
            Err(DecodeError::BadRepeatCount(1))
        );
        // A unit longer than the block, and a count that overflows it.
        assert_eq!(
            decode_all(b"\x0b\x02abcde", 4),
            Err(DecodeError::BlockOverflow)
        );
        let huge = [
            0x03, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, b'a',
        ];
        assert_eq!(decode_all(&huge, 16), Err(DecodeError::BlockOverflow));
        // Tokens that stop short of the block, or run past it.
        assert_eq!(decode_all(b"\x04ab", 3), Err(DecodeError::BlockUnderflow));
        assert_eq!(
            decode_all(b"\x04ab\x04cd", 3),
            Err(DecodeError::BlockOverflow)
        );
    }
}
