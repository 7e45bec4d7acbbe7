//! LEB128 variable-length unsigned integers: seven bits a byte, least significant first.

use crate::DecodeError;

/// Longest encoding of a `u64`.
pub const MAX_LEN: usize = 10;

/// Appends `value` to `out`.
#[inline]
pub fn put(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push(value as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Number of bytes `put` writes for `value`.
#[inline]
pub fn len(value: u64) -> usize {
    // One byte per started group of seven bits; zero still takes one byte.
    let bits = 64 - (value | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

/// Reads a varint at `*pos`, advancing it. Fails on a truncated or over-long encoding and on
/// one whose value does not fit in 64 bits.
#[inline]
pub fn get(buf: &[u8], pos: &mut usize) -> Result<u64, DecodeError> {
    let mut value = 0u64;
    for i in 0..MAX_LEN {
        let byte = *buf.get(*pos + i).ok_or(DecodeError::Truncated)?;
        let bits = u64::from(byte & 0x7f);
        if i == MAX_LEN - 1 && bits > 1 {
            return Err(DecodeError::VarintOverflow);
        }
        value |= bits << (7 * i);
        if byte & 0x80 == 0 {
            *pos += i + 1;
            return Ok(value);
        }
    }
    Err(DecodeError::VarintOverflow)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_lengths() {
        for v in [
            0,
            1,
            127,
            128,
            300,
            16_383,
            16_384,
            u32::MAX as u64,
            u64::MAX - 1,
            u64::MAX,
        ] {
            let mut out = Vec::new();
            put(&mut out, v);
            assert_eq!(out.len(), len(v), "{v}");
            let mut pos = 0;
            assert_eq!(get(&out, &mut pos), Ok(v));
            assert_eq!(pos, out.len());
        }
    }

    #[test]
    fn rejects_truncated_and_overflowing() {
        assert_eq!(get(&[0x80], &mut 0), Err(DecodeError::Truncated));
        assert_eq!(get(&[], &mut 0), Err(DecodeError::Truncated));
        let eleven = [0xff; 11];
        assert_eq!(get(&eleven, &mut 0), Err(DecodeError::VarintOverflow));
        // Ten bytes whose last carries more than the 64th bit.
        let mut too_big = [0xff; 10];
        too_big[9] = 0x02;
        assert_eq!(get(&too_big, &mut 0), Err(DecodeError::VarintOverflow));
    }
}
