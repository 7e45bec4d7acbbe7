//! Snapshot files: a point-in-time export of the MVCC state (format in
//! `docs/snapshot-format.md`).
//!
//! ```text
//! header   magic "RKVSNAP1" | u32 version | u32 body length | body | u32 CRC-32
//!          body: revision, compact revision, applied (opaque), membership (opaque),
//!                alarms (version 2 on), leases (version 3 on: id, TTL, remaining TTL,
//!                each an i64 LE, in id order), auth (version 4 on: the auth table's
//!                record, an encoded raftkvpb.AuthState)
//! blocks   (u32 frame length | block)* | u32 0
//!          block: up to version 4 a raftkv-codec frame; from version 5 a kind byte and the
//!          columns encoded by the codec, zstd, or both (`blocks`), whichever is smallest
//! padding  zeros, so that the file ends up 32 mod 512 bytes long
//! footer   magic "RKVSEND1" | records | live keys | raw body bytes | blocks | u32 CRC-32
//! trailer  SHA-256 of every byte before it
//! ```
//!
//! Each block holds up to [`BLOCK_RECORDS`] versions in key order (newest version of a key
//! first), laid out in columns so the codec finds runs: shared-prefix and suffix lengths,
//! revision deltas, kinds, create-revision distances, versions, leases, value lengths, then
//! the key suffixes and the values. The SHA-256 trailer after the padding is what the real
//! `etcdctl snapshot save` checks, so a raftkv member can stream this file to it.
//!
//! - `blocks` — one block's stages: the codec, zstd, the codec then zstd, or the values
//!   split into structure and scalars (`split`) then zstd.
//! - `writer` — builds a file from a store while writes continue.
//! - `reader` — verifies a file, reports its status, restores it into a store.

mod blocks;
mod columns;
pub(crate) mod reader;
mod split;
mod writer;

pub(crate) use columns::Row;

pub use blocks::{BlockStages, ZSTD_LEVEL};
pub(crate) use reader::walk;
pub use reader::{RestoreOptions, install, read_info, restore, restore_with};
pub use writer::{build, build_scratch, build_scratch_at, build_with};

/// First bytes of every snapshot file.
pub const MAGIC: &[u8; 8] = b"RKVSNAP1";
/// First bytes of the footer.
pub const FOOTER_MAGIC: &[u8; 8] = b"RKVSEND1";
/// The format this build writes; it also reads versions 1 (no alarms in the header), 2
/// (no leases), 3 (no auth table: a new, empty one) and 4 (every block a raftkv-codec
/// frame, which [`BlockStages::CodecOnly`] still writes).
pub const FORMAT_VERSION: u32 = 5;
/// Most versions in one body block.
pub const BLOCK_RECORDS: usize = 4096;
/// A block is closed once the keys and values in it reach this many bytes (or it holds
/// [`BLOCK_RECORDS`] versions), so building and reading a block take bounded memory.
pub const BLOCK_BYTES: usize = 4 << 20;
/// The largest key plus value of one version: nothing larger fits in a Raft log entry.
pub const MAX_VERSION_BYTES: usize = 64 << 20;
/// The most key and value bytes a block may decode to: a block closes on the version that
/// takes it past [`BLOCK_BYTES`]. Reading refuses more before allocating it.
pub const MAX_BLOCK_DECODED: usize = BLOCK_BYTES + MAX_VERSION_BYTES;
/// The most bytes a block's columns may decompress to: its keys and values plus at most
/// 96 bytes of varint columns per version.
pub const MAX_BLOCK_RAW: usize = MAX_BLOCK_DECODED + BLOCK_RECORDS * 96;
/// Footer size: magic, four u64 counters, CRC-32.
pub(crate) const FOOTER_LEN: usize = 8 + 4 * 8 + 4;
/// SHA-256 trailer size.
pub(crate) const TRAILER_LEN: usize = 32;
/// Largest header body accepted when reading: applied state and membership are small, the
/// lease table takes 24 bytes a lease (64 MiB: 2.7 million leases). A body is also never
/// longer than the file that holds it.
pub(crate) const MAX_HEADER_BODY: usize = 64 << 20;
/// Largest block frame accepted when reading: a raw block plus the codec's overhead (a byte
/// per 64 KiB block, header and checksum), and zstd's over that (a kind byte, and at most
/// 3 bytes per 128 KiB block plus its frame header, for incompressible data).
pub(crate) const MAX_FRAME: usize = MAX_CODEC_FRAME + (MAX_CODEC_FRAME >> 15) + 64;
/// Largest raftkv-codec frame of one block's columns.
pub(crate) const MAX_CODEC_FRAME: usize = MAX_BLOCK_RAW + (MAX_BLOCK_RAW >> 16) + 64;

/// What a snapshot captures besides the data.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SnapshotMeta {
    /// The store revision of the snapshot.
    pub revision: i64,
    /// The compacted revision at that point.
    pub compact_revision: i64,
    /// The Raft layer's applied log id (opaque).
    pub applied: Vec<u8>,
    /// The Raft layer's membership (opaque).
    pub membership: Vec<u8>,
    /// Active alarms: (member id, etcd `AlarmType` number). Version 2 on.
    pub alarms: Vec<(u64, i32)>,
    /// The lease table: id, granted TTL, last checkpointed remaining TTL. Version 3 on.
    pub leases: Vec<(i64, crate::mvcc::lease::LeaseInfo)>,
    /// The auth table: users, roles, permissions, enabled flag, auth revision. Version 4 on.
    pub auth: crate::mvcc::auth::AuthTable,
}

/// A snapshot file's status, for `raftkvctl snapshot status` and the raft layer.
#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotInfo {
    /// Header fields.
    pub meta: SnapshotMeta,
    /// Keys live at the snapshot's revision.
    pub key_count: u64,
    /// Versions stored (live, historical and tombstones).
    pub record_count: u64,
    /// Size of the body before compression.
    pub raw_size: u64,
    /// Size of the file.
    pub total_size: u64,
    /// CRC-32 of every byte before the SHA-256 trailer.
    pub hash: u32,
}
