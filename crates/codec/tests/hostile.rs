//! Hostile frames: truncated, bit-flipped and lying input must return `Err`, never panic,
//! and never make the decoder allocate more than the frame honestly describes.
//!
//! A counting global allocator records the largest single allocation made by the decoding
//! thread, so the "lying length" cases check allocation directly rather than trusting the
//! code's intent.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use proptest::prelude::*;
use raftkv_codec::{DecodeError, compress, decompress, samples};

struct Counting;

thread_local! {
    /// Largest allocation this thread made since the last reset (tests run on many threads).
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    // `try_with`: the slot may be gone while the thread is being torn down.
    let _ = LARGEST.try_with(|largest| largest.set(largest.get().max(size)));
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The output bound these tests decode with (what one snapshot block may hold).
const LIMIT: usize = 64 << 20;

/// Largest single allocation made while decoding `frame`.
fn largest_allocation(frame: &[u8]) -> (Result<Vec<u8>, DecodeError>, usize) {
    LARGEST.with(|largest| largest.set(0));
    let result = decompress(frame, LIMIT);
    (result, LARGEST.with(Cell::get))
}

fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A frame with a valid header for `raw_len` and the given body, and a correct checksum, so
/// that the structural checks (not the CRC) are what must catch the lie.
fn forged(raw_len: u64, body: &[u8]) -> Vec<u8> {
    let mut frame = b"RKVC\x01\x00\x10".to_vec();
    varint(raw_len, &mut frame);
    frame.extend_from_slice(body);
    let crc = crc32fast::hash(&frame);
    frame.extend_from_slice(&crc.to_le_bytes());
    frame
}

/// A tokens block: kind 1, u32 length, tokens.
fn tokens_block(tokens: &[u8]) -> Vec<u8> {
    let mut block = vec![1];
    block.extend_from_slice(&(tokens.len() as u32).to_le_bytes());
    block.extend_from_slice(tokens);
    block
}

#[test]
fn claimed_length_of_2_pow_60_is_refused_without_allocating() {
    let frame = forged(1 << 60, &tokens_block(b"\x03\x10\x00"));
    let (result, largest) = largest_allocation(&frame);
    assert_eq!(
        result,
        Err(DecodeError::LengthExceedsFrame { claimed: 1 << 60 })
    );
    assert!(largest < 4096, "allocated {largest} bytes");
}

#[test]
fn lying_repeat_count_is_refused_without_allocating() {
    // One 64 KiB block claimed; its only token repeats one byte 2^62 times.
    let mut tokens = vec![0x03];
    varint(1 << 62, &mut tokens);
    tokens.push(0);
    let frame = forged(1 << 16, &tokens_block(&tokens));
    let (result, largest) = largest_allocation(&frame);
    assert_eq!(result, Err(DecodeError::BlockOverflow));
    assert!(largest <= 1 << 16, "allocated {largest} bytes");
}

#[test]
fn count_of_zero_is_refused() {
    let frame = forged(10, &tokens_block(b"\x03\x00a"));
    assert_eq!(
        decompress(&frame, LIMIT),
        Err(DecodeError::BadRepeatCount(0))
    );
}

#[test]
fn unit_longer_than_the_block_is_refused() {
    // A 10-byte frame body claims a unit of 100 bytes repeated twice.
    let mut tokens = Vec::new();
    varint(100 << 1 | 1, &mut tokens);
    tokens.push(2);
    tokens.extend_from_slice(&[7; 100]);
    let frame = forged(10, &tokens_block(&tokens));
    assert_eq!(decompress(&frame, LIMIT), Err(DecodeError::BlockOverflow));
}

#[test]
fn unit_running_past_the_tokens_is_refused() {
    let frame = forged(40, &tokens_block(b"\x29\x02abc"));
    assert_eq!(decompress(&frame, LIMIT), Err(DecodeError::Truncated));
}

#[test]
fn a_bomb_is_refused_before_anything_is_allocated() {
    // One repeat token per 1 MiB block: a few bytes per megabyte, all structurally valid,
    // claiming 4 GiB. The caller's bound refuses the claim up front.
    let exponent = 20u8;
    let blocks = 4096u64;
    let mut body = Vec::new();
    for _ in 0..blocks {
        let mut tokens = Vec::new();
        varint((1 << 1) | 1, &mut tokens); // a repeat of a 1-byte unit
        varint(1 << exponent, &mut tokens);
        tokens.push(0);
        body.push(1);
        body.extend_from_slice(&(tokens.len() as u32).to_le_bytes());
        body.extend_from_slice(&tokens);
    }
    let mut frame = b"RKVC".to_vec();
    frame.extend_from_slice(&[1, 0, exponent]);
    varint(blocks << exponent, &mut frame);
    frame.extend_from_slice(&body);
    let crc = crc32fast::hash(&frame);
    frame.extend_from_slice(&crc.to_le_bytes());
    assert!(frame.len() < 64 * 1024);
    let (result, largest) = largest_allocation(&frame);
    assert_eq!(
        result,
        Err(DecodeError::TooLarge {
            claimed: blocks << exponent,
            limit: LIMIT as u64
        })
    );
    assert!(largest < 1 << 20, "allocated {largest} bytes");
    // Within the bound the same kind of frame decodes, to exactly what it claims.
    let mut small = b"RKVC".to_vec();
    small.extend_from_slice(&[1, 0, exponent]);
    varint(1 << exponent, &mut small);
    small.extend_from_slice(&body[..body.len() / blocks as usize]);
    let crc = crc32fast::hash(&small);
    small.extend_from_slice(&crc.to_le_bytes());
    assert_eq!(decompress(&small, LIMIT), Ok(vec![0u8; 1 << exponent]));
}

#[test]
fn structural_lies_are_refused() {
    // Raw block shorter than claimed.
    assert_eq!(
        decompress(&forged(5, b"\x00abc"), LIMIT),
        Err(DecodeError::Truncated)
    );
    // Two blocks claimed, four bytes of body: not even two bytes a block.
    assert_eq!(
        decompress(&forged(70_000, b"\x00ab"), LIMIT),
        Err(DecodeError::LengthExceedsFrame { claimed: 70_000 })
    );
    // Unknown block kind.
    assert_eq!(
        decompress(&forged(2, b"\x07ab"), LIMIT),
        Err(DecodeError::UnknownBlockKind(7))
    );
    // Bytes after the last block.
    assert_eq!(
        decompress(&forged(2, b"\x00abX"), LIMIT),
        Err(DecodeError::TrailingBytes)
    );
    // Token length past the end of the frame.
    assert_eq!(
        decompress(&forged(4, b"\x01\xff\x00\x00\x00\x08abcd"), LIMIT),
        Err(DecodeError::Truncated)
    );
    // Tokens that fall short of their block.
    assert_eq!(
        decompress(&forged(4, &tokens_block(b"\x04ab")), LIMIT),
        Err(DecodeError::BlockUnderflow)
    );
    // Header fields.
    let mut frame = compress(b"hello");
    frame[4] = 9;
    assert_eq!(
        decompress(&frame, LIMIT),
        Err(DecodeError::UnsupportedVersion(9))
    );
    assert_eq!(decompress(b"RKV", LIMIT), Err(DecodeError::Truncated));
    assert_eq!(
        decompress(b"PK\x03\x04 a zip file, not ours", LIMIT),
        Err(DecodeError::BadMagic)
    );
}

#[test]
fn every_truncation_of_a_real_frame_is_refused() {
    let input = samples::etcd_records(20_000, 9);
    let frame = compress(&input);
    for cut in 0..frame.len() {
        assert!(decompress(&frame[..cut], LIMIT).is_err(), "cut at {cut}");
    }
}

#[test]
fn every_single_bit_flip_is_detected() {
    let input = samples::repeated_units(3000, 2);
    let frame = compress(&input);
    for byte in 0..frame.len() {
        for bit in 0..8 {
            let mut bad = frame.clone();
            bad[byte] ^= 1 << bit;
            assert!(
                decompress(&bad, LIMIT).is_err(),
                "flip at byte {byte} bit {bit}"
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Arbitrary bodies behind a valid header and checksum: the parser itself must hold.
    #[test]
    fn forged_bodies_never_panic(raw_len in 0u64..300_000, body in proptest::collection::vec(any::<u8>(), 0..300)) {
        let frame = forged(raw_len, &body);
        if let Ok(out) = decompress(&frame, LIMIT) {
            prop_assert_eq!(out.len() as u64, raw_len);
        }
    }

    /// Arbitrary token streams in one block.
    #[test]
    fn forged_tokens_never_panic(raw_len in 1u64..5000, tokens in proptest::collection::vec(any::<u8>(), 1..200)) {
        let frame = forged(raw_len, &tokens_block(&tokens));
        if let Ok(out) = decompress(&frame, LIMIT) {
            prop_assert_eq!(out.len() as u64, raw_len);
        }
    }

    /// Random damage to real frames.
    #[test]
    fn damaged_frames_never_panic(
        seed in any::<u64>(),
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
    ) {
        let input = samples::repeated_units(2000, seed);
        let mut frame = compress(&input);
        for (at, value) in edits {
            let at = at % frame.len();
            frame[at] = value;
        }
        // Damage either is caught or (if it hit nothing the decoder reads) changes nothing.
        if let Ok(out) = decompress(&frame, LIMIT) {
            prop_assert_eq!(out, input);
        }
    }
}
