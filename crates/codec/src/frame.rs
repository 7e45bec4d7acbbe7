//! The self-describing frame around the blocks (format in `docs/snapshot-format.md`).
//!
//! ```text
//! magic "RKVC" | version 1 | flags 0 | block size exponent | varint raw length
//! block* | CRC-32 (little endian) of every byte before it
//! block: kind 0 (raw) + the block's bytes
//!      | kind 1 (tokens) + u32 LE token length + tokens (see `block`)
//! ```
//!
//! Every block but the last holds exactly `2^exponent` input bytes, so the block count and
//! each block's size follow from the raw length. That lets the decoder refuse a frame whose
//! header claims more than its bytes can hold before it allocates anything.

use crate::{DecodeError, block};

/// The first four bytes of every frame.
pub const MAGIC: [u8; 4] = *b"RKVC";
/// The frame format this build writes (and the only one it reads).
pub const VERSION: u8 = 1;
/// Input bytes per block, as a power of two: 64 KiB keeps the hash table and the block in
/// cache, and costs at most five bytes of block header per 64 KiB of incompressible input.
pub const BLOCK_EXPONENT: u8 = 16;
/// Smallest and largest block exponents a frame may declare (1 KiB ..= 1 MiB); the bound
/// caps what one block can make the decoder reserve.
const BLOCK_EXPONENT_RANGE: std::ops::RangeInclusive<u8> = 10..=20;

const KIND_RAW: u8 = 0;
const KIND_TOKENS: u8 = 1;
/// Kind byte plus token length.
const TOKENS_HEADER: usize = 5;
const CHECKSUM_LEN: usize = 4;
/// Magic, version, flags, exponent.
const FIXED_HEADER: usize = 7;
/// The decoder never reserves more than this ahead of the blocks that justify it.
const MAX_UPFRONT_RESERVE: usize = 16 << 20;

/// Compresses `input` into a self-describing frame that `decompress` turns back into it.
///
/// Never fails. Incompressible input grows by at most the header, one byte per 64 KiB block
/// and the 4-byte checksum.
pub fn compress(input: &[u8]) -> Vec<u8> {
    let block_size = 1usize << BLOCK_EXPONENT;
    let mut out = Vec::with_capacity(input.len() / 2 + 32);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&[VERSION, 0, BLOCK_EXPONENT]);
    crate::varint::put(&mut out, input.len() as u64);
    let mut encoder = block::Encoder::new();
    let mut start = 0;
    while start < input.len() {
        let end = (start + block_size).min(input.len());
        let raw_len = end - start;
        let block_at = out.len();
        // Tokens must beat the raw block (kind byte + bytes) to be kept.
        let encoded = raw_len > TOKENS_HEADER && {
            out.push(KIND_TOKENS);
            out.extend_from_slice(&[0; 4]);
            let budget = raw_len - (TOKENS_HEADER - 1);
            encoder.encode(input, start, end, &mut out, budget)
        };
        if encoded {
            let token_len = (out.len() - block_at - TOKENS_HEADER) as u32;
            out[block_at + 1..block_at + TOKENS_HEADER].copy_from_slice(&token_len.to_le_bytes());
        } else {
            out.truncate(block_at);
            out.push(KIND_RAW);
            out.extend_from_slice(&input[start..end]);
        }
        start = end;
    }
    let checksum = crc32fast::hash(&out);
    out.extend_from_slice(&checksum.to_le_bytes());
    out
}

/// Decodes a frame made by `compress`, verifying its checksum and structure first, into at
/// most `max_len` bytes.
///
/// Truncated, corrupted or inconsistent frames return an error; none panics. A frame that
/// claims more than `max_len` bytes is refused before anything is allocated: repeat tokens
/// let a few bytes stand for a megabyte, so no ratio bound could tell a bomb from a run of
/// zeros — only the caller knows how much output is legitimate.
pub fn decompress(frame: &[u8], max_len: usize) -> Result<Vec<u8>, DecodeError> {
    if frame.len() < 4 {
        return Err(DecodeError::Truncated);
    }
    if frame[..4] != MAGIC {
        return Err(DecodeError::BadMagic);
    }
    if frame.len() < FIXED_HEADER + 1 + CHECKSUM_LEN {
        return Err(DecodeError::Truncated);
    }
    if frame[4] != VERSION {
        return Err(DecodeError::UnsupportedVersion(frame[4]));
    }
    if frame[5] != 0 {
        return Err(DecodeError::UnsupportedFlags(frame[5]));
    }
    let exponent = frame[6];
    if !BLOCK_EXPONENT_RANGE.contains(&exponent) {
        return Err(DecodeError::BadBlockSize(exponent));
    }
    let (body, stored) = frame.split_at(frame.len() - CHECKSUM_LEN);
    let stored = u32::from_le_bytes(stored.try_into().expect("split at 4 bytes from the end"));
    let computed = crc32fast::hash(body);
    if stored != computed {
        return Err(DecodeError::ChecksumMismatch { stored, computed });
    }

    let mut pos = FIXED_HEADER;
    let claimed = crate::varint::get(body, &mut pos)?;
    let block_size = 1u64 << exponent;
    // Every block takes at least two bytes of frame (a kind byte and a byte of data or
    // token), so a frame cannot honestly describe more blocks than half its remaining bytes.
    let blocks = claimed.div_ceil(block_size);
    if blocks > ((body.len() - pos) / 2) as u64 {
        return Err(DecodeError::LengthExceedsFrame { claimed });
    }
    let raw_len =
        usize::try_from(claimed).map_err(|_| DecodeError::LengthExceedsFrame { claimed })?;
    if raw_len > max_len {
        return Err(DecodeError::TooLarge {
            claimed,
            limit: max_len as u64,
        });
    }
    let block_size = block_size as usize;
    let mut out = Vec::with_capacity(raw_len.min(MAX_UPFRONT_RESERVE));
    while out.len() < raw_len {
        let want = block_size.min(raw_len - out.len());
        let kind = *body.get(pos).ok_or(DecodeError::Truncated)?;
        pos += 1;
        match kind {
            KIND_RAW => {
                let bytes = body.get(pos..pos + want).ok_or(DecodeError::Truncated)?;
                out.extend_from_slice(bytes);
                pos += want;
            }
            KIND_TOKENS => {
                let len = body.get(pos..pos + 4).ok_or(DecodeError::Truncated)?;
                let len = u32::from_le_bytes(len.try_into().expect("4 bytes")) as usize;
                pos += 4;
                if len > body.len() - pos {
                    return Err(DecodeError::Truncated);
                }
                block::decode(&body[pos..pos + len], want, &mut out)?;
                pos += len;
            }
            other => return Err(DecodeError::UnknownBlockKind(other)),
        }
    }
    if pos != body.len() {
        return Err(DecodeError::TrailingBytes);
    }
    Ok(out)
}
