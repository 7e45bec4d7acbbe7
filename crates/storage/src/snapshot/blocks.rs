//! One body block's bytes in the file: its columns, encoded by the stages that made it
//! smallest (format 5 on; up to format 4 every block was a raftkv-codec frame).
//!
//! ```text
//! block (format 5): kind | payload
//!   kind 1: raftkv-codec frame of the columns
//!   kind 2: zstd frame of the columns
//!   kind 3: zstd frame of a raftkv-codec frame of the columns
//!   kind 4: zstd frame of the columns with the values split (`columns::ValueLayout::Split`)
//! ```
//!
//! A zstd frame must record its content size, and that size must be within the block bounds
//! of the stage it decodes to, before anything is allocated for it; the output buffer is
//! exactly that size and zstd fails rather than write past it, so a frame cannot make the
//! reader allocate more than a legitimate block.

use super::columns::{self, Row, ValueLayout};
use super::{MAX_BLOCK_RAW, MAX_CODEC_FRAME};
use crate::error::SnapshotError;
use crate::mvcc::encoding::Record;

const KIND_CODEC: u8 = 1;
const KIND_ZSTD: u8 = 2;
const KIND_CODEC_ZSTD: u8 = 3;
const KIND_SPLIT_ZSTD: u8 = 4;

/// zstd's level for the general-purpose stage: 3 is zstd's default, the level operators use
/// for etcd snapshots (`zstd -3`).
pub const ZSTD_LEVEL: i32 = 3;

/// Which stages encode a snapshot's blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BlockStages {
    /// Per block, the smallest of the ones below that may pay (the default).
    #[default]
    Smallest,
    /// The unit-repetition codec only: format 4, readable by older builds.
    CodecOnly,
    /// zstd over the columns, no codec (format 5).
    ZstdOnly,
    /// The codec, then zstd over its frame (format 5).
    CodecThenZstd,
    /// The values split into structure and scalars, then zstd (format 5).
    SplitThenZstd,
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

/// One block as the file stores it, and the length of its columns before compression
/// (what the footer's raw byte count adds up).
pub(crate) struct Encoded {
    pub stored: Vec<u8>,
    pub raw_len: usize,
}

/// Encodes one block's rows as `stages` say, as the file stores it for the format
/// [`BlockStages::format_version`] names.
pub(crate) fn encode(rows: &[Row], stages: BlockStages) -> std::io::Result<Encoded> {
    let with_kind = |kind: u8, payload: &[u8]| {
        let mut out = Vec::with_capacity(payload.len() + 1);
        out.push(kind);
        out.extend_from_slice(payload);
        out
    };
    let raw = columns::encode(rows, ValueLayout::Shared);
    let raw_len = raw.len();
    let stored = match stages {
        BlockStages::CodecOnly => raftkv_codec::compress(&raw),
        BlockStages::ZstdOnly => with_kind(KIND_ZSTD, &zstd(&raw)?),
        BlockStages::CodecThenZstd => {
            with_kind(KIND_CODEC_ZSTD, &zstd(&raftkv_codec::compress(&raw))?)
        }
        BlockStages::SplitThenZstd => {
            let split = columns::encode(rows, ValueLayout::Split);
            // Split parts are longer than the values (a quote per scalar): a block near
            // the bound may not fit split, and is stored as zstd of the plain columns.
            if split.len() > MAX_BLOCK_RAW {
                with_kind(KIND_ZSTD, &zstd(&raw)?)
            } else {
                return Ok(Encoded {
                    stored: with_kind(KIND_SPLIT_ZSTD, &zstd(&split)?),
                    raw_len: split.len(),
                });
            }
        }
        BlockStages::Smallest => {
            // The codec alone is cheap and always a candidate. zstd is tried over what may
            // pay: for objects of one shape (most value bytes look like JSON), over the split
            // values, whose structure repeats and whose scalars do not; otherwise over the
            // codec's frame, and also over the plain columns when the codec folded enough
            // that zstd could find something different there.
            let codec = raftkv_codec::compress(&raw);
            let mut candidates = Vec::with_capacity(3);
            let split = structured(rows)
                .then(|| columns::encode(rows, ValueLayout::Split))
                // (Only where the reader's bound on a block's columns allows.)
                .filter(|split| split.len() <= MAX_BLOCK_RAW);
            if let Some(split) = split {
                candidates.push((KIND_SPLIT_ZSTD, zstd(&split)?, split.len()));
            } else {
                candidates.push((KIND_CODEC_ZSTD, zstd(&codec)?, raw_len));
                if codec.len() + codec.len() / 16 < raw_len {
                    candidates.push((KIND_ZSTD, zstd(&raw)?, raw_len));
                }
            }
            candidates.push((KIND_CODEC, codec, raw_len));
            let best = candidates
                .into_iter()
                .min_by_key(|(_, stored, _)| stored.len())
                .expect("the codec is always a candidate");
            return Ok(Encoded {
                stored: with_kind(best.0, &best.1),
                raw_len: best.2,
            });
        }
    };
    Ok(Encoded { stored, raw_len })
}

/// Whether splitting the values may pay: most of the block's value bytes are in values that
/// look like JSON objects or arrays.
fn structured(rows: &[Row]) -> bool {
    let (mut json, mut all) = (0usize, 0usize);
    for row in rows {
        if let Record::Put { value, .. } = &row.record {
            all += value.len();
            if matches!(value.first(), Some(b'{' | b'[')) {
                json += value.len();
            }
        }
    }
    json > all / 2
}

fn zstd(data: &[u8]) -> std::io::Result<Vec<u8>> {
    // The bulk compressor records the content size in the frame header, which the reader
    // requires.
    zstd::bulk::compress(data, ZSTD_LEVEL)
}

/// Decodes a block as stored by a file of format `version` into its rows, and the length of
/// its columns before compression.
pub(crate) fn decode(frame: &[u8], version: u32) -> Result<(Vec<Row>, usize), SnapshotError> {
    let (raw, layout) = decompress(frame, version)?;
    let rows = columns::decode(&raw, layout).ok_or_else(|| corrupt("malformed block"))?;
    Ok((rows, raw.len()))
}

/// A stored block's columns, and how they hold the values.
fn decompress(frame: &[u8], version: u32) -> Result<(Vec<u8>, ValueLayout), SnapshotError> {
    if version < 5 {
        let raw = raftkv_codec::decompress(frame, MAX_BLOCK_RAW)?;
        return Ok((raw, ValueLayout::Shared));
    }
    let (&kind, payload) = frame.split_first().ok_or_else(|| corrupt("empty block"))?;
    let raw = match kind {
        KIND_CODEC => raftkv_codec::decompress(payload, MAX_BLOCK_RAW)?,
        KIND_ZSTD => unzstd(payload, MAX_BLOCK_RAW)?,
        KIND_CODEC_ZSTD => {
            let codec = unzstd(payload, MAX_CODEC_FRAME)?;
            raftkv_codec::decompress(&codec, MAX_BLOCK_RAW)?
        }
        KIND_SPLIT_ZSTD => return Ok((unzstd(payload, MAX_BLOCK_RAW)?, ValueLayout::Split)),
        other => return Err(corrupt(&format!("unknown block kind {other}"))),
    };
    Ok((raw, ValueLayout::Shared))
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
    use raftkv_codec::samples::Corpus;

    fn rows_of(corpus: Corpus, n: u64) -> Vec<Row> {
        let mut rows: Vec<Row> = (0..n)
            .map(|i| {
                let (key, value) = corpus.item(i, 1);
                Row {
                    key: key.into_bytes(),
                    revision: i as i64 + 1,
                    record: Record::Put {
                        create_revision: i as i64 + 1,
                        version: 1,
                        lease: 0,
                        value,
                    },
                }
            })
            .collect();
        rows.sort_by(|a, b| a.key.cmp(&b.key));
        rows.dedup_by(|a, b| a.key == b.key);
        rows
    }

    fn with_tombstone(mut rows: Vec<Row>) -> Vec<Row> {
        if let Some(first) = rows.first_mut() {
            first.record = Record::Tombstone;
        }
        rows
    }

    const ALL_STAGES: [BlockStages; 5] = [
        BlockStages::Smallest,
        BlockStages::CodecOnly,
        BlockStages::ZstdOnly,
        BlockStages::CodecThenZstd,
        BlockStages::SplitThenZstd,
    ];

    #[test]
    fn every_stage_choice_round_trips() {
        for rows in [
            Vec::new(),
            rows_of(Corpus::Pods, 300),
            with_tombstone(rows_of(Corpus::Pods, 50)),
            rows_of(Corpus::Config, 2000),
            with_tombstone(rows_of(Corpus::Repetitive, 2000)),
        ] {
            for stages in ALL_STAGES {
                let encoded = encode(&rows, stages).unwrap();
                let (back, raw_len) = decode(&encoded.stored, stages.format_version()).unwrap();
                assert_eq!(back, rows, "{stages:?}");
                assert_eq!(raw_len, encoded.raw_len, "{stages:?}");
            }
        }
    }

    #[test]
    fn the_smallest_choice_is_the_smallest_it_tries() {
        for (corpus, split_wins) in [
            (Corpus::Pods, true),
            (Corpus::Config, false),
            (Corpus::Repetitive, false),
        ] {
            let rows = rows_of(corpus, 2000);
            let smallest = encode(&rows, BlockStages::Smallest).unwrap().stored;
            for stages in ALL_STAGES {
                // The split is only tried where most value bytes look like JSON.
                if stages == BlockStages::SplitThenZstd && !split_wins {
                    continue;
                }
                let other = encode(&rows, stages).unwrap().stored;
                // (Format 4's codec frame has no kind byte.)
                assert!(smallest.len() <= other.len() + 1, "{corpus:?} {stages:?}");
            }
            assert_eq!(smallest[0] == KIND_SPLIT_ZSTD, split_wins, "{corpus:?}");
        }
        // On Kubernetes-like objects zstd wins by far over the codec alone.
        let rows = rows_of(Corpus::Pods, 2000);
        let smallest = encode(&rows, BlockStages::Smallest).unwrap().stored;
        let codec = encode(&rows, BlockStages::CodecOnly).unwrap().stored;
        assert!(smallest.len() * 5 < codec.len());
    }

    #[test]
    fn a_largest_value_of_short_strings_still_fits_when_split() {
        // A value at the size limit made of short JSON strings: split, its parts are a
        // fifth longer than it (a quote per scalar), past the bound on a block's columns.
        // The default choice must then store it otherwise, and every stage must read back.
        let mut value = b"[".to_vec();
        while value.len() < 60 << 20 {
            value.extend_from_slice(br#""ab","#);
        }
        value.extend_from_slice(br#""ab"]"#);
        let rows = vec![Row {
            key: b"/big".to_vec(),
            revision: 1,
            record: Record::Put {
                create_revision: 1,
                version: 1,
                lease: 0,
                value,
            },
        }];
        assert!(columns::encode(&rows, ValueLayout::Split).len() > MAX_BLOCK_RAW);
        for stages in [BlockStages::Smallest, BlockStages::SplitThenZstd] {
            let encoded = encode(&rows, stages).unwrap();
            assert_ne!(encoded.stored[0], KIND_SPLIT_ZSTD, "{stages:?}");
            let (back, _) = decode(&encoded.stored, 5).unwrap();
            assert_eq!(back, rows, "{stages:?}");
        }
    }

    fn zstd_block(kind: u8, payload: &[u8]) -> Vec<u8> {
        let mut block = vec![kind];
        block.extend_from_slice(payload);
        block
    }

    #[test]
    fn hostile_zstd_blocks_are_refused_before_allocating() {
        for kind in [KIND_ZSTD, KIND_CODEC_ZSTD, KIND_SPLIT_ZSTD] {
            // A frame whose recorded size is past the bound: refused from its header.
            let big = zstd::bulk::compress(&vec![0u8; MAX_CODEC_FRAME + 1], 1).unwrap();
            let refused = decode(&zstd_block(kind, &big), 5);
            assert!(
                matches!(&refused, Err(SnapshotError::Corrupt(m)) if m.contains("larger")),
                "{refused:?}"
            );
            // A frame that does not record its size (a streaming encoder's).
            let mut streamed = Vec::new();
            {
                let mut enc = zstd::stream::Encoder::new(&mut streamed, 3).unwrap();
                std::io::Write::write_all(&mut enc, b"hello hello hello").unwrap();
                enc.finish().unwrap();
            }
            let refused = decode(&zstd_block(kind, &streamed), 5);
            assert!(
                matches!(&refused, Err(SnapshotError::Corrupt(m)) if m.contains("size")),
                "{refused:?}"
            );
            // A frame followed by another: the output buffer is the first one's size, so
            // the second cannot grow it.
            let one = zstd::bulk::compress(b"0123456789", 3).unwrap();
            let mut two = one.clone();
            two.extend_from_slice(&one);
            let refused = decode(&zstd_block(kind, &two), 5);
            assert!(
                matches!(&refused, Err(SnapshotError::Corrupt(m)) if m.starts_with("zstd block")),
                "{refused:?}"
            );
        }
        // Truncated, empty, unknown kinds, garbage.
        for stages in [BlockStages::ZstdOnly, BlockStages::SplitThenZstd] {
            let good = encode(&rows_of(Corpus::Pods, 100), stages).unwrap().stored;
            for cut in [1, 2, 5, good.len() / 2, good.len() - 1] {
                assert!(decode(&good[..cut], 5).is_err(), "cut at {cut}");
            }
        }
        assert!(decode(&[], 5).is_err());
        assert!(decode(&[9, 1, 2, 3], 5).is_err());
        assert!(decode(&[KIND_CODEC_ZSTD, 0x28, 0xb5, 0x2f, 0xfd, 0xff], 5).is_err());
    }
}
