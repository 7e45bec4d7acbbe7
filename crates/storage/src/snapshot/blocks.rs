//! One body block's bytes in the file: its columns, encoded by the stages that made it
//! smallest (format 5 on; up to format 4 every block was a raftkv-codec frame).
//!
//! ```text
//! block (format 5): kind | payload
//!   kind 1: raftkv-codec frame of the columns
//!   kind 2: zstd frame of the columns
//!   kind 3: zstd frame of a raftkv-codec frame of the columns
//! ```
//!
//! A zstd frame must record its content size, and that size must be within the block bounds
//! of the stage it decodes to, before anything is allocated for it; the output buffer is
//! exactly that size and zstd fails rather than write past it, so a frame cannot make the
//! reader allocate more than a legitimate block.

use super::{MAX_BLOCK_RAW, MAX_CODEC_FRAME};
use crate::error::SnapshotError;

const KIND_CODEC: u8 = 1;
const KIND_ZSTD: u8 = 2;
const KIND_CODEC_ZSTD: u8 = 3;

/// zstd's level for the general-purpose stage: 3 is zstd's default, the level operators use
/// for etcd snapshots (`zstd -3`).
pub const ZSTD_LEVEL: i32 = 3;

/// Which stages encode a snapshot's blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BlockStages {
    /// Per block, the smallest of the three below (the default).
    #[default]
    Smallest,
    /// The unit-repetition codec only: format 4, readable by older builds.
    CodecOnly,
    /// zstd over the columns, no codec (format 5).
    ZstdOnly,
    /// The codec, then zstd over its frame (format 5).
    CodecThenZstd,
}

impl BlockStages {
    /// The file format these stages need.
    pub fn format_version(self) -> u32 {
        match self {
            BlockStages::CodecOnly => 4,
            _ => super::FORMAT_VERSION,
        }
    }
}

/// Encodes one block's columns (`raw`) as `stages` say, as the file stores it for the
/// format [`BlockStages::format_version`] names.
pub(crate) fn encode(raw: &[u8], stages: BlockStages) -> std::io::Result<Vec<u8>> {
    let with_kind = |kind: u8, payload: &[u8]| {
        let mut out = Vec::with_capacity(payload.len() + 1);
        out.push(kind);
        out.extend_from_slice(payload);
        out
    };
    Ok(match stages {
        BlockStages::CodecOnly => raftkv_codec::compress(raw),
        BlockStages::ZstdOnly => with_kind(KIND_ZSTD, &zstd(raw)?),
        BlockStages::CodecThenZstd => {
            with_kind(KIND_CODEC_ZSTD, &zstd(&raftkv_codec::compress(raw))?)
        }
        BlockStages::Smallest => {
            let codec = raftkv_codec::compress(raw);
            let mut best = (KIND_CODEC, codec.clone());
            let over_codec = zstd(&codec)?;
            if over_codec.len() < best.1.len() {
                best = (KIND_CODEC_ZSTD, over_codec);
            }
            // zstd finds repeats itself: over the plain columns it can do better than over
            // the codec's tokens, but only where the codec folded something is there a
            // difference to find (otherwise its frame is the columns in raw blocks).
            if codec.len() + codec.len() / 16 < raw.len() {
                let plain = zstd(raw)?;
                if plain.len() < best.1.len() {
                    best = (KIND_ZSTD, plain);
                }
            }
            with_kind(best.0, &best.1)
        }
    })
}

fn zstd(data: &[u8]) -> std::io::Result<Vec<u8>> {
    // The bulk compressor records the content size in the frame header, which the reader
    // requires.
    zstd::bulk::compress(data, ZSTD_LEVEL)
}

/// Decodes a block as stored by a file of format `version` into its columns.
pub(crate) fn decode(frame: &[u8], version: u32) -> Result<Vec<u8>, SnapshotError> {
    if version < 5 {
        return Ok(raftkv_codec::decompress(frame, MAX_BLOCK_RAW)?);
    }
    let (&kind, payload) = frame.split_first().ok_or_else(|| corrupt("empty block"))?;
    match kind {
        KIND_CODEC => Ok(raftkv_codec::decompress(payload, MAX_BLOCK_RAW)?),
        KIND_ZSTD => unzstd(payload, MAX_BLOCK_RAW),
        KIND_CODEC_ZSTD => {
            let codec = unzstd(payload, MAX_CODEC_FRAME)?;
            Ok(raftkv_codec::decompress(&codec, MAX_BLOCK_RAW)?)
        }
        other => Err(corrupt(&format!("unknown block kind {other}"))),
    }
}

/// One zstd frame that records its content size, at most `limit` bytes of it.
fn unzstd(payload: &[u8], limit: usize) -> Result<Vec<u8>, SnapshotError> {
    let size = match zstd::zstd_safe::get_frame_content_size(payload) {
        Ok(Some(size)) => size,
        Ok(None) => return Err(corrupt("zstd block without its size")),
        Err(_) => return Err(corrupt("malformed zstd block")),
    };
    let size = usize::try_from(size)
        .ok()
        .filter(|&s| s <= limit)
        .ok_or_else(|| corrupt("zstd block larger than a block may be"))?;
    // Into the spare capacity of a Vec, which zstd never grows: it fails rather than write
    // past the recorded size.
    let mut out = Vec::with_capacity(size);
    let written = zstd::bulk::Decompressor::new()
        .and_then(|mut d| d.decompress_to_buffer(payload, &mut out))
        .map_err(|e| corrupt(&format!("zstd block: {e}")))?;
    if written != size {
        return Err(corrupt("zstd block shorter than its recorded size"));
    }
    Ok(out)
}

fn corrupt(what: &str) -> SnapshotError {
    SnapshotError::Corrupt(what.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn columns_like(n: usize) -> Vec<u8> {
        (0..n)
            .flat_map(|i| {
                format!("/registry/pods/ns/pod-{i:06}{{\"uid\":\"{}\"}}", i * 7919).into_bytes()
            })
            .collect()
    }

    #[test]
    fn every_stage_choice_round_trips() {
        for raw in [
            Vec::new(),
            vec![0u8; 100_000],
            columns_like(3000),
            raftkv_codec::samples::random(70_000, 3),
        ] {
            for stages in [
                BlockStages::Smallest,
                BlockStages::CodecOnly,
                BlockStages::ZstdOnly,
                BlockStages::CodecThenZstd,
            ] {
                let stored = encode(&raw, stages).unwrap();
                let back = decode(&stored, stages.format_version()).unwrap();
                assert_eq!(back, raw, "{stages:?}");
            }
        }
    }

    #[test]
    fn the_smallest_choice_is_never_larger_than_the_codec_alone() {
        for raw in [
            columns_like(3000),
            raftkv_codec::samples::repeated_units(200_000, 9),
        ] {
            let smallest = encode(&raw, BlockStages::Smallest).unwrap();
            let codec = encode(&raw, BlockStages::CodecOnly).unwrap();
            assert!(smallest.len() <= codec.len() + 1);
        }
        // On record-like columns zstd wins by far.
        let raw = columns_like(3000);
        let smallest = encode(&raw, BlockStages::Smallest).unwrap();
        assert_ne!(smallest[0], KIND_CODEC);
        assert!(smallest.len() * 3 < encode(&raw, BlockStages::CodecOnly).unwrap().len());
    }

    #[test]
    fn hostile_zstd_blocks_are_refused_before_allocating() {
        // A frame whose recorded size is past the bound: refused from its header.
        let big = zstd::bulk::compress(&vec![0u8; MAX_BLOCK_RAW + 1], 1).unwrap();
        let mut block = vec![KIND_ZSTD];
        block.extend_from_slice(&big);
        assert!(
            matches!(decode(&block, 5), Err(SnapshotError::Corrupt(m)) if m.contains("larger"))
        );
        // A frame that does not record its size (a streaming encoder's).
        let mut streamed = Vec::new();
        {
            let mut enc = zstd::stream::Encoder::new(&mut streamed, 3).unwrap();
            std::io::Write::write_all(&mut enc, b"hello hello hello").unwrap();
            enc.finish().unwrap();
        }
        let mut block = vec![KIND_ZSTD];
        block.extend_from_slice(&streamed);
        assert!(matches!(decode(&block, 5), Err(SnapshotError::Corrupt(m)) if m.contains("size")));
        // A frame followed by another: the output buffer is the first one's size, so the
        // second cannot grow it.
        let one = zstd::bulk::compress(b"0123456789", 3).unwrap();
        let mut block = vec![KIND_ZSTD];
        block.extend_from_slice(&one);
        block.extend_from_slice(&one);
        assert!(decode(&block, 5).is_err());
        // Truncated, empty, unknown kinds, garbage.
        let good = encode(&columns_like(500), BlockStages::ZstdOnly).unwrap();
        for cut in [1, 2, 5, good.len() / 2, good.len() - 1] {
            assert!(decode(&good[..cut], 5).is_err(), "cut at {cut}");
        }
        assert!(decode(&[], 5).is_err());
        assert!(decode(&[9, 1, 2, 3], 5).is_err());
        assert!(decode(&[KIND_CODEC_ZSTD, 0x28, 0xb5, 0x2f, 0xfd, 0xff], 5).is_err());
    }
}
