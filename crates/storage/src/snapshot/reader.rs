//! Verifying, describing and restoring snapshot files.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use sha2::{Digest, Sha256};

use super::blocks;
use super::columns::Row;
use super::{
    FOOTER_LEN, FOOTER_MAGIC, FORMAT_VERSION, MAGIC, MAX_FRAME, MAX_HEADER_BODY, SnapshotInfo,
    SnapshotMeta, TRAILER_LEN,
};
use crate::error::SnapshotError;
use crate::mvcc::encoding::Record;
use crate::mvcc::{MergeCounts, MvccStore};

/// Reads and fully verifies a snapshot file (checksums, structure, every block) and returns
/// its status. A file that is not a raftkv snapshot, or is damaged, is an error.
pub fn read_info(path: &Path) -> Result<SnapshotInfo, SnapshotError> {
    walk(path, &mut |_| Ok(()))
}

/// Replaces the contents of `store` with the snapshot at `path` (verified in full before
/// anything is written) and returns its status. The Raft state (applied log id,
/// membership) comes along: this is how a member installs a snapshot from its leader.
pub fn restore(path: &Path, store: &MvccStore) -> Result<SnapshotInfo, SnapshotError> {
    let options = RestoreOptions {
        keep_raft_state: true,
        skip_hash_check: false,
    };
    restore_with(path, store, &options)
}

/// How [`restore_with`] treats the file.
#[derive(Debug, Clone, Copy)]
pub struct RestoreOptions {
    /// Keep the snapshot's applied log id and membership. `false` for a backup restored into
    /// a *new* cluster, which starts its own log and membership (`snapshot restore`).
    pub keep_raft_state: bool,
    /// Do not require the SHA-256 trailer (a file copied out of a data dir rather than saved
    /// through `snapshot save`); the header, block and footer checks still apply.
    pub skip_hash_check: bool,
}

/// [`restore`] with options.
pub fn restore_with(
    path: &Path,
    store: &MvccStore,
    options: &RestoreOptions,
) -> Result<SnapshotInfo, SnapshotError> {
    if options.skip_hash_check {
        check_magic(path)?;
    } else {
        verify_trailer(path)?;
    }
    let mut load = Load::Fresh(Box::new(store.begin_restore()?));
    let mut info = load_rows(path, &mut load)?;
    if !options.keep_raft_state {
        // A new cluster: new member ids, so the old members' alarms mean nothing there.
        info.meta.applied.clear();
        info.meta.membership.clear();
        info.meta.alarms.clear();
    }
    load.finish(&info.meta)?;
    Ok(info)
}

/// Installs a snapshot from the leader, as [`restore`] does, and returns what it merged.
/// A store that holds records (a follower that fell behind) has the snapshot merged into
/// it, which writes only the versions it lacks (see `mvcc::merge`); an empty one is
/// restored. Either way the store ends as the snapshot describes it.
pub fn install(
    path: &Path,
    store: &MvccStore,
) -> Result<(SnapshotInfo, Option<MergeCounts>), SnapshotError> {
    verify_trailer(path)?;
    let revision = {
        let mut file = BufReader::new(File::open(path)?);
        let total_size = file.get_ref().metadata()?.len();
        read_header(&mut file, total_size)?.1.revision
    };
    // A merge needs a store behind the snapshot (Raft never installs one behind what it
    // applied); an empty one is restored.
    let mut load = if store.size_in_use() > 0 && revision >= store.revision() {
        Load::Merge(Box::new(store.begin_merge(revision)?))
    } else {
        Load::Fresh(Box::new(store.begin_restore()?))
    };
    let walked = load_rows(path, &mut load).and_then(|info| {
        load.rows_done()?;
        Ok(info)
    });
    let info = match walked {
        Ok(info) => info,
        Err(_) if matches!(&load, Load::Merge(m) if m.restore_instead) => {
            // The store does not hold a prefix of the snapshot's history (Raft makes it so;
            // a data dir from elsewhere would not), or the merge would hold too much in
            // memory: the merge is undone as it drops, and the snapshot is restored instead.
            drop(load);
            let mut fresh = Load::Fresh(Box::new(store.begin_restore()?));
            let info = load_rows(path, &mut fresh)?;
            fresh.finish(&info.meta)?;
            return Ok((info, None));
        }
        Err(e) => return Err(e),
    };
    if meta_revision_differs(&load, info.meta.revision) {
        return Err(SnapshotError::Corrupt("the header changed".to_string()));
    }
    let merged = load.finish(&info.meta)?;
    Ok((info, merged))
}

/// A restore into a fresh tree or a merge into the live one.
enum Load<'a> {
    Fresh(Box<crate::mvcc::Restore<'a>>),
    Merge(Box<crate::mvcc::merge::Merge<'a>>),
}

impl Load<'_> {
    fn add(&mut self, rows: &[Row]) -> Result<(), crate::error::MvccError> {
        match self {
            Load::Fresh(r) => r.add(rows),
            Load::Merge(m) => m.add(rows),
        }
    }

    /// Every row is in: a merge passes the store's records after the snapshot's last key.
    fn rows_done(&mut self) -> Result<(), crate::error::MvccError> {
        match self {
            Load::Fresh(_) => Ok(()),
            Load::Merge(m) => m.rows_done(),
        }
    }

    fn finish(self, meta: &SnapshotMeta) -> Result<Option<MergeCounts>, SnapshotError> {
        Ok(match self {
            Load::Fresh(r) => {
                (*r).finish(meta)?;
                None
            }
            Load::Merge(m) => Some((*m).finish(meta)?),
        })
    }
}

fn meta_revision_differs(load: &Load<'_>, revision: i64) -> bool {
    matches!(load, Load::Merge(m) if m.revision() != revision)
}

/// Decodes the verified file's blocks on a thread of their own and hands their versions to
/// `load` as they come (decoding was about a quarter of a restore's time).
fn load_rows(path: &Path, load: &mut Load<'_>) -> Result<SnapshotInfo, SnapshotError> {
    let (blocks, decoded) = std::sync::mpsc::sync_channel::<Vec<Row>>(DECODED_AHEAD);
    let (walked, added) = std::thread::scope(|scope| {
        let decoder = scope.spawn(move || {
            walk_verified(path, &mut |rows| {
                // The receiver goes only when a write failed: its error is the one reported.
                blocks
                    .send(rows)
                    .map_err(|_| SnapshotError::Io(io::Error::other("restore stopped")))
            })
        });
        let mut added = Ok(());
        for rows in &decoded {
            added = load.add(&rows);
            if added.is_err() {
                break;
            }
        }
        drop(decoded);
        let walked = decoder.join().unwrap_or_else(|_| {
            Err(SnapshotError::Corrupt(
                "the snapshot decoder panicked".to_string(),
            ))
        });
        (walked, added)
    });
    added?;
    walked
}

/// Decoded blocks a restore queues ahead of its writes. A block holds about
/// [`super::BLOCK_BYTES`] of keys and values (at most [`super::MAX_BLOCK_DECODED`]), and
/// one more is being decoded and one written, so a restore holds at most four.
const DECODED_AHEAD: usize = 2;

fn check_magic(path: &Path) -> Result<(), SnapshotError> {
    let mut magic = [0u8; 8];
    let mut file = File::open(path)?;
    if file.read_exact(&mut magic).is_err() || &magic != MAGIC {
        return Err(SnapshotError::NotASnapshot);
    }
    Ok(())
}

/// Verifies the file at `path` in full and hands its versions to `on_rows`, block by block,
/// in store order (key ascending, newest version first).
pub(crate) fn walk(
    path: &Path,
    on_rows: &mut dyn FnMut(Vec<Row>) -> Result<(), SnapshotError>,
) -> Result<SnapshotInfo, SnapshotError> {
    verify_trailer(path)?;
    walk_verified(path, on_rows)
}

/// Checks the magic, the size (32 mod 512) and the SHA-256 trailer.
fn verify_trailer(path: &Path) -> Result<(), SnapshotError> {
    check_magic(path)?;
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    if len % 512 != 32 || len < (MAGIC.len() + FOOTER_LEN + TRAILER_LEN) as u64 {
        return Err(SnapshotError::ChecksumMismatch);
    }
    file.seek(SeekFrom::Start(0))?;
    let mut sha = Sha256::new();
    let mut remaining = len - TRAILER_LEN as u64;
    let mut buf = vec![0u8; 1 << 20];
    while remaining > 0 {
        let n = remaining.min(buf.len() as u64) as usize;
        file.read_exact(&mut buf[..n])?;
        sha.update(&buf[..n]);
        remaining -= n as u64;
    }
    let mut trailer = [0u8; TRAILER_LEN];
    file.read_exact(&mut trailer)?;
    if sha.finalize().as_slice() != trailer {
        return Err(SnapshotError::ChecksumMismatch);
    }
    Ok(())
}

fn walk_verified(
    path: &Path,
    on_rows: &mut dyn FnMut(Vec<Row>) -> Result<(), SnapshotError>,
) -> Result<SnapshotInfo, SnapshotError> {
    let corrupt = |what: &str| SnapshotError::Corrupt(what.to_string());
    let file = File::open(path)?;
    let total_size = file.metadata()?.len();
    let mut r = Counting {
        inner: BufReader::with_capacity(1 << 20, file),
        crc: crc32fast::Hasher::new(),
        read: 0,
    };

    let (version, meta) = read_header(&mut r, total_size)?;

    let (mut records, mut keys, mut raw_size, mut blocks) = (0u64, 0u64, 0u64, 0u64);
    let mut last: Option<(Vec<u8>, i64)> = None;
    loop {
        let mut len = [0u8; 4];
        r.read_exact(&mut len)?;
        let len = u32::from_le_bytes(len) as usize;
        if len == 0 {
            break;
        }
        if len > MAX_FRAME || r.read + len as u64 > total_size {
            return Err(corrupt("block length past the end of the file"));
        }
        let mut frame = vec![0u8; len];
        r.read_exact(&mut frame)?;
        let (rows, raw_len) = blocks::decode(&frame, version)?;
        for row in &rows {
            // Versions must come in store order: key ascending, revision descending.
            let new_key = match &last {
                Some((k, rev)) if *k == row.key => {
                    if row.revision >= *rev {
                        return Err(corrupt("versions out of order"));
                    }
                    false
                }
                Some((k, _)) if *k > row.key => return Err(corrupt("keys out of order")),
                _ => true,
            };
            if row.revision > meta.revision || row.revision < 1 {
                return Err(corrupt("version beyond the snapshot revision"));
            }
            if new_key && matches!(row.record, Record::Put { .. }) {
                keys += 1;
            }
            last = Some((row.key.clone(), row.revision));
        }
        records += rows.len() as u64;
        raw_size += raw_len as u64;
        blocks += 1;
        on_rows(rows)?;
    }
    let hash_before_padding = r.read;
    let footer_at = total_size - (TRAILER_LEN + FOOTER_LEN) as u64;
    if hash_before_padding > footer_at {
        return Err(corrupt("blocks overlap the footer"));
    }
    let mut pad = vec![0u8; (footer_at - hash_before_padding) as usize];
    r.read_exact(&mut pad)?;
    if pad.iter().any(|&b| b != 0) {
        return Err(corrupt("non-zero padding"));
    }
    let mut footer = [0u8; FOOTER_LEN];
    r.read_exact(&mut footer)?;
    let hash = r.crc.clone().finalize();
    let (body, crc) = footer.split_at(FOOTER_LEN - 4);
    if &body[..8] != FOOTER_MAGIC
        || crc32fast::hash(body) != u32::from_le_bytes(crc.try_into().expect("4 bytes"))
    {
        return Err(corrupt("bad footer"));
    }
    let field =
        |i: usize| u64::from_le_bytes(body[8 + 8 * i..16 + 8 * i].try_into().expect("8 bytes"));
    if [field(0), field(1), field(2), field(3)] != [records, keys, raw_size, blocks] {
        return Err(corrupt("footer counts do not match the blocks"));
    }
    Ok(SnapshotInfo {
        meta,
        key_count: keys,
        record_count: records,
        raw_size,
        total_size,
        hash,
    })
}

/// Reads and checks the header at the start of `r` (a file of `total_size` bytes): the
/// format version and what the snapshot describes.
fn read_header(r: &mut impl Read, total_size: u64) -> Result<(u32, SnapshotMeta), SnapshotError> {
    let corrupt = |what: &str| SnapshotError::Corrupt(what.to_string());
    let mut fixed = [0u8; 16];
    r.read_exact(&mut fixed)?;
    let version = u32::from_le_bytes(fixed[8..12].try_into().expect("4 bytes"));
    if !(1..=FORMAT_VERSION).contains(&version) {
        return Err(SnapshotError::UnsupportedVersion(version));
    }
    let body_len = u32::from_le_bytes(fixed[12..16].try_into().expect("4 bytes")) as usize;
    if body_len > MAX_HEADER_BODY || body_len as u64 > total_size {
        return Err(corrupt("header too large"));
    }
    let mut body = vec![0u8; body_len];
    r.read_exact(&mut body)?;
    let mut stored_crc = [0u8; 4];
    let mut header_crc = crc32fast::Hasher::new();
    header_crc.update(&fixed);
    header_crc.update(&body);
    r.read_exact(&mut stored_crc)?;
    if header_crc.finalize() != u32::from_le_bytes(stored_crc) {
        return Err(corrupt("header checksum mismatch"));
    }
    let meta = parse_header(&body, version).ok_or_else(|| corrupt("malformed header"))?;
    Ok((version, meta))
}

fn parse_header(body: &[u8], version: u32) -> Option<SnapshotMeta> {
    let revision = i64::from_le_bytes(body.get(0..8)?.try_into().ok()?);
    let compact_revision = i64::from_le_bytes(body.get(8..16)?.try_into().ok()?);
    let mut pos = 16;
    let mut blob = || -> Option<Vec<u8>> {
        let len = u32::from_le_bytes(body.get(pos..pos + 4)?.try_into().ok()?) as usize;
        let out = body.get(pos + 4..(pos + 4).checked_add(len)?)?.to_vec();
        pos += 4 + len;
        Some(out)
    };
    let applied = blob()?;
    let membership = blob()?;
    let alarms = if version >= 2 {
        crate::mvcc::encoding::decode_alarms(&blob()?)?
    } else {
        Vec::new()
    };
    let leases = if version >= 3 {
        let raw = blob()?;
        if !raw.len().is_multiple_of(24) {
            return None;
        }
        let n = |c: &[u8], i: usize| {
            i64::from_le_bytes(c[8 * i..8 * i + 8].try_into().expect("8 bytes"))
        };
        let leases: Vec<_> = raw
            .chunks_exact(24)
            .map(|c| {
                (
                    n(c, 0),
                    crate::mvcc::lease::LeaseInfo {
                        ttl: n(c, 1),
                        remaining: n(c, 2),
                    },
                )
            })
            .collect();
        let ordered = leases.windows(2).all(|w| w[0].0 < w[1].0);
        let valid = leases
            .iter()
            .all(|(id, l)| *id != 0 && l.ttl >= 0 && l.remaining >= 0);
        if !ordered || !valid {
            return None;
        }
        leases
    } else {
        Vec::new()
    };
    let auth = if version >= 4 {
        crate::mvcc::auth::AuthTable::decode(&blob()?).ok()?
    } else {
        crate::mvcc::auth::AuthTable::default()
    };
    if pos != body.len() || revision < 1 || compact_revision < 0 || compact_revision > revision {
        return None;
    }
    Some(SnapshotMeta {
        revision,
        compact_revision,
        applied,
        membership,
        alarms,
        leases,
        auth,
    })
}

/// A reader that keeps the CRC-32 of and counts what it has read.
struct Counting<R> {
    inner: R,
    crc: crc32fast::Hasher,
    read: u64,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.crc.update(&buf[..n]);
        self.read += n as u64;
        Ok(n)
    }
}
