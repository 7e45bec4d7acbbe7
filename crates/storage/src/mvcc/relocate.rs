//! Moving the live values out of mostly dead value segments.
//!
//! A value segment can go only once no record points into it, and compaction frees a
//! segment's values one by one: a key written once and never again (a ConfigMap beside a
//! stream of Events) would keep its whole segment on disk, and a store whose churn leaves
//! one such value per segment would grow without bound. So before [`MvccStore::persist`]
//! removes dead segments, each segment older than the durable frame's with less than half
//! its size still live has its live values moved: every record that points into it gets
//! its value back inline, the same version in the other form every reader already takes
//! (hashes, merges and snapshots compare records as if inline). The segment is then dead,
//! and the same persist removes it once sled's flush made the records' new form durable.
//!
//! Which records point into a segment is found from the segment itself: each frame names
//! its record (key and revision), and a record is moved only if its pointer is that very
//! frame. A frame that is damaged or not found, or a segment that cannot be read, keeps its
//! records' pointers, and so the segment (walked again only once its live bytes change). Each batch of frames is moved under the writer lock, so a put, a compaction, a
//! merge or a restore never interleaves with one record's move. A reader that took a
//! record's old form before a move and reads its value after the segment went finds the
//! record again (`MvccStore::load_value`).

use super::MvccStore;
use super::encoding::{StoredValue, decode_parts, encode_put, record_key};
use crate::MvccError;

/// Frames looked at per batch (one hold of the writer lock), and the most value bytes a
/// batch reads, so that applies wait for a batch no longer than for a large put.
const BATCH: usize = 256;
const BATCH_BYTES: u64 = 1 << 20;

impl MvccStore {
    /// Segments worth emptying: older than the durable frame's (so never written to again)
    /// and with less than half of their size live. Dead segments are not among them; they
    /// only wait for removal.
    /// A segment a walk could not empty (a damaged frame) is not walked again until its
    /// live bytes change.
    pub(crate) fn sparse_segments(&self) -> Vec<u64> {
        let recorded = self.point().values.map_or(0, |p| p.seq);
        let live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        let mut stuck = self.stuck.lock().unwrap_or_else(|e| e.into_inner());
        stuck.retain(|seq, bytes| live.get(seq) == Some(bytes));
        live.range(..recorded)
            .filter(|&(&seq, &bytes)| {
                !stuck.contains_key(&seq)
                    && self
                        .values
                        .segment_size(seq)
                        .is_some_and(|size| bytes.saturating_mul(2) < size)
            })
            .map(|(&seq, _)| seq)
            .collect()
    }

    /// Gives every record that points into segment `seq` its value inline. Returns how
    /// many records it changed. A value that cannot be read (a damaged frame, a failed
    /// read) stays where it is, and so does its segment: only sled's errors fail this.
    pub(crate) fn relocate_segment(&self, seq: u64) -> Result<usize, MvccError> {
        let mut from = Some(0);
        let mut moved = 0;
        while let Some(at) = from {
            let Ok((frames, next)) = self.values.frames(seq, at, BATCH, BATCH_BYTES) else {
                break;
            };
            from = next;
            let _writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
            let tree = self.tree();
            for frame in frames {
                let raw_key = record_key(&frame.key, frame.revision);
                let Some(raw) = tree.get(&raw_key)? else {
                    continue; // compacted, or replaced by a replay's rewrite
                };
                let Ok(Some((create_revision, version, lease, StoredValue::At(ptr)))) =
                    decode_parts(&raw)
                else {
                    continue;
                };
                if ptr != frame.ptr {
                    continue; // a replay wrote the version again elsewhere
                }
                let Ok(value) = self.values.read(&ptr, &frame.key, frame.revision) else {
                    continue;
                };
                tree.insert(raw_key, encode_put(create_revision, version, lease, &value))?;
                self.note_live(None, Some(&ptr));
                self.counts.values_moved.inc();
                moved += 1;
            }
        }
        Ok(moved)
    }

    /// Empties every sparse segment ([`MvccStore::sparse_segments`]); what
    /// [`MvccStore::persist`] does before it looks for dead ones.
    pub(crate) fn relocate_sparse(&self) -> Result<usize, MvccError> {
        let mut moved = 0;
        for seq in self.sparse_segments() {
            moved += self.relocate_segment(seq)?;
            let live = self.live.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(&bytes) = live.get(&seq) {
                self.stuck
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(seq, bytes);
            }
        }
        Ok(moved)
    }
}
