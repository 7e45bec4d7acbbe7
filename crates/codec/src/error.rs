//! Why a frame could not be decoded.

/// A frame that `decompress` refuses. Every malformed input maps to one of these; none panics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The frame ends before a field it announces.
    #[error("frame is truncated")]
    Truncated,
    /// The first four bytes are not the codec's magic.
    #[error("not a raftkv-codec frame (bad magic)")]
    BadMagic,
    /// A format version this build does not read.
    #[error("unsupported frame version {0}")]
    UnsupportedVersion(u8),
    /// Flag bits this build does not know.
    #[error("unsupported frame flags {0:#04x}")]
    UnsupportedFlags(u8),
    /// A block size outside the range the format allows.
    #[error("invalid block size exponent {0}")]
    BadBlockSize(u8),
    /// The trailing CRC-32 does not match the frame's bytes.
    #[error("checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    ChecksumMismatch {
        /// The CRC-32 the frame carries.
        stored: u32,
        /// The CRC-32 of the bytes it covers.
        computed: u32,
    },
    /// A varint longer than ten bytes or larger than 64 bits.
    #[error("malformed varint")]
    VarintOverflow,
    /// The header claims more data than the frame's blocks could hold.
    #[error("frame claims {claimed} bytes, more than its blocks can describe")]
    LengthExceedsFrame {
        /// The decompressed length the header claims.
        claimed: u64,
    },
    /// The header claims more than the caller allows.
    #[error("frame claims {claimed} bytes, more than the {limit} allowed")]
    TooLarge {
        /// The decompressed length the header claims.
        claimed: u64,
        /// The caller's bound.
        limit: u64,
    },
    /// A block kind byte this build does not know.
    #[error("unknown block kind {0}")]
    UnknownBlockKind(u8),
    /// A literal run or repeat unit of length zero.
    #[error("literal or unit of length zero")]
    ZeroLength,
    /// A repeat count below two (a count of one would be a literal, zero is meaningless).
    #[error("invalid repeat count {0}")]
    BadRepeatCount(u64),
    /// The tokens of a block describe more bytes than the block holds.
    #[error("tokens overflow their block")]
    BlockOverflow,
    /// The tokens of a block describe fewer bytes than the block holds.
    #[error("tokens end before their block is full")]
    BlockUnderflow,
    /// Bytes left over between the last block and the checksum.
    #[error("trailing bytes after the last block")]
    TrailingBytes,
}
