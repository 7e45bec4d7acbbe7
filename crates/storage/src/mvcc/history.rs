//! The store's history in revision order, for watchers.
//!
//! Every write indexes the keys it changed, in the order it changed them. The changes of a
//! run of writes (the entries the state machine applies before it stores the applied point)
//! are held in memory and stored as one *group* (`0x03 | first revision | 0x02`, see
//! `encoding`) just before the point — one sled insert per run instead of one per change,
//! which under 100 writing clients (runs of ~20 entries) was worth about a tenth of the put
//! rate. Readers take the held changes as well, so nothing applied is missing from the
//! history. A crash before the point is stored can leave groups above it; opening the store
//! drops them, and replaying the log writes them again. Reading the changes between two
//! revisions then costs one record lookup per change, never a scan of the keyspace.
//! Compaction drops the index below the compacted revision (keeping a group that reaches
//! it whole); a restored snapshot (or a store written before the index existed) is indexed
//! from its records, and stores written before groups keep their one entry per change.
//!
//! Each applied write is also handed, as etcd events, to the [`WatchSink`] if one is set:
//! that is how watchers that are caught up get events without reading the store.

use std::sync::Arc;

use bytes::Bytes;
use raftkv_proto::mvccpb::{Event, KeyValue, event::EventType};

use super::MvccStore;
use super::encoding::{
    HISTORY_GROUP, HISTORY_SPACE, HistoryEntry, META_HISTORY, META_SPACE, Record,
    decode_history_group, decode_prefix, encode_history_group, history_bound,
    history_key_of_record, history_revision, lower_bound, record_key, split_record_key,
};
use crate::error::MvccError;

/// Receives each applied write's events as the store applies it.
///
/// Called with the store's writer lock held, so in revision order and never concurrently:
/// an implementation must not block (hand events on, or note that a receiver fell behind).
pub trait WatchSink: Send + Sync {
    /// The write that made `revision` changed these keys (in the order it changed them).
    fn applied(&self, revision: i64, events: &[Event]);
    /// The store's contents were replaced by a snapshot at `revision` (events in between
    /// were not handed on; they are in the history).
    fn replaced(&self, revision: i64);
}

/// Changes read from the history by [`MvccStore::history`].
#[derive(Debug, Default)]
pub struct HistoryBatch {
    /// Events of whole revisions, in revision order, each revision's in write order.
    pub events: Vec<Event>,
    /// The first revision not read yet: `to + 1` once everything up to `to` was read.
    pub next: i64,
}

/// Limits on one [`MvccStore::history`] read; it always ends on a revision boundary.
#[derive(Debug, Clone, Copy)]
pub struct HistoryLimits {
    /// At most this many distinct revisions with events (etcd sends at most 1,000 per batch).
    pub revisions: usize,
    /// Stop after the revision that reaches this many key and value bytes.
    pub bytes: usize,
}

/// Builds a [`HistoryBatch`] within [`HistoryLimits`]: whole revisions in order, counting
/// only revisions with an event taken, and ending before the first change of another
/// revision once past the limits. The store's history read and the watch hub's read of the
/// newest revisions it holds both cut their batches with it, so they cut alike.
#[derive(Debug)]
pub struct HistoryBatcher {
    batch: HistoryBatch,
    limits: HistoryLimits,
    revisions: usize,
    bytes: usize,
    last_rev: i64,
}

impl HistoryBatcher {
    /// An empty batch whose `next` is `next` unless the limits end it earlier.
    pub fn new(limits: HistoryLimits, next: i64) -> Self {
        Self {
            batch: HistoryBatch {
                events: Vec::new(),
                next,
            },
            limits,
            revisions: 0,
            bytes: 0,
            last_rev: 0,
        }
    }

    /// Whether a change at `rev` (taken or not) may still be looked at: `false` at a
    /// revision boundary past the limits, and the batch then ends before `rev`.
    pub fn admits(&mut self, rev: i64) -> bool {
        let full = self.revisions >= self.limits.revisions || self.bytes >= self.limits.bytes;
        if rev != self.last_rev && full {
            self.batch.next = rev;
            return false;
        }
        true
    }

    /// Takes `event`, a change at `rev` that [`HistoryBatcher::admits`] let in.
    pub fn push(&mut self, rev: i64, event: Event) {
        if rev != self.last_rev {
            self.revisions += 1;
            self.last_rev = rev;
        }
        self.bytes += event
            .kv
            .as_ref()
            .map_or(0, |kv| kv.key.len() + kv.value.len());
        self.batch.events.push(event);
    }

    /// The batch.
    pub fn finish(self) -> HistoryBatch {
        self.batch
    }
}

impl MvccStore {
    /// Sets the receiver of applied writes and returns the revision it starts after (taken
    /// under the writer lock: every later write reaches the sink).
    pub fn set_watch_sink(&self, sink: Arc<dyn WatchSink>) -> i64 {
        let _writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        *self.sink.write().unwrap_or_else(|e| e.into_inner()) = Some(sink);
        self.revision()
    }

    /// Hands a write's events to the sink, if any (the caller holds the writer lock).
    pub(crate) fn notify_applied(&self, revision: i64, events: &[Event]) {
        if let Some(sink) = self.sink.read().unwrap_or_else(|e| e.into_inner()).as_ref() {
            sink.applied(revision, events);
        }
    }

    /// Tells the sink, if any, that a snapshot replaced the contents.
    pub(crate) fn notify_replaced(&self, revision: i64) {
        if let Some(sink) = self.sink.read().unwrap_or_else(|e| e.into_inner()).as_ref() {
            sink.replaced(revision);
        }
    }

    /// Whether a write's events are wanted (building them costs reference counts only, but
    /// a store without watchers skips even that).
    pub(crate) fn has_sink(&self) -> bool {
        self.sink
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }

    /// The changes of revisions `from..=to` to keys that `wanted` accepts, within `limits`.
    ///
    /// `from` must be above the compacted revision's predecessor (the caller checks against
    /// [`MvccStore::compacted_revision`]); `to` at most the current revision.
    ///
    /// A compaction past `from` while it reads may have removed changes it was about to
    /// read, so the batch would lack them without a sign: it then answers
    /// [`MvccError::Compacted`] instead, as it would have before the read.
    pub fn history(
        &self,
        from: i64,
        to: i64,
        limits: HistoryLimits,
        wanted: &mut dyn FnMut(&[u8]) -> bool,
    ) -> Result<HistoryBatch, MvccError> {
        self.consistent(|| self.history_once(from, to, limits, wanted))
    }

    fn history_once(
        &self,
        from: i64,
        to: i64,
        limits: HistoryLimits,
        wanted: &mut dyn FnMut(&[u8]) -> bool,
    ) -> Result<HistoryBatch, MvccError> {
        if from > to {
            return Ok(HistoryBatch {
                events: Vec::new(),
                next: from,
            });
        }
        let mut batcher = HistoryBatcher::new(limits, to + 1);
        // The changes not stored yet, taken first: a group stored meanwhile is then read
        // from sled as well, and skipped here.
        let held = self.held_history(from, to);
        // The last stored change read, by (revision, n).
        let last = std::cell::Cell::new(None::<(i64, u32)>);
        let tree = self.tree();
        let mut take = |rev: i64, n: Option<u32>, user_key: &[u8]| -> Result<bool, MvccError> {
            if rev < from || rev > to {
                return Ok(true);
            }
            if !batcher.admits(rev) {
                return Ok(false);
            }
            if let Some(n) = n {
                last.set(Some((rev, n)));
            }
            if !wanted(user_key) {
                return Ok(true);
            }
            if let Some(event) = self.event_at(&tree, user_key, rev)? {
                batcher.push(rev, event);
            }
            Ok(true)
        };
        'read: {
            for item in history_from(&tree, from, to)? {
                let (raw_key, value) = item?;
                let rev = history_revision(&raw_key)?;
                let more = if raw_key[9] == HISTORY_GROUP {
                    let mut more = true;
                    for (rev, n, user_key) in decode_history_group(rev, &value)? {
                        more = take(rev, Some(n), user_key)?;
                        if !more {
                            break;
                        }
                    }
                    more
                } else if raw_key[9] == 0x00 {
                    let n = u32::from_be_bytes(raw_key[10..14].try_into().expect("4 bytes"));
                    take(rev, Some(n), &value)?
                } else {
                    take(rev, None, &value)?
                };
                if !more {
                    break 'read;
                }
            }
            for (rev, n, user_key) in &held {
                if last.get().is_some_and(|l| l >= (*rev, *n)) {
                    continue; // stored meanwhile, and read above
                }
                if !take(*rev, Some(*n), user_key)? {
                    break 'read;
                }
            }
        }
        // Compaction stores its revision before it removes anything, so a removal this
        // read ran into shows here.
        if self.compacted_after_read() > from {
            return Err(MvccError::Compacted);
        }
        Ok(batcher.finish())
    }

    /// The event of `key`'s change at `rev`; `None` if compaction removed it (a tombstone at
    /// or below the compacted revision).
    fn event_at(
        &self,
        tree: &sled::Tree,
        key: &[u8],
        rev: i64,
    ) -> Result<Option<Event>, MvccError> {
        let Some(raw) = tree.get(record_key(key, rev))? else {
            if rev <= self.compacted_revision() {
                return Ok(None);
            }
            return Err(MvccError::Corrupt(format!(
                "history names {key:02x?} at revision {rev}, which has no record"
            )));
        };
        let record = match self.decode_record(&raw, key, rev, true) {
            Ok(record) => record,
            // Compacted meanwhile, the value's segment gone with the record: only a record
            // no longer there is read as compacted, any other failure is reported.
            Err(_)
                if rev <= self.compacted_revision()
                    && tree.get(record_key(key, rev))?.is_none() =>
            {
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        let key = Bytes::copy_from_slice(key);
        Ok(Some(match record {
            Record::Put {
                create_revision,
                version,
                lease,
                value,
            } => Event {
                r#type: EventType::Put as i32,
                kv: Some(KeyValue {
                    key,
                    create_revision,
                    mod_revision: rev,
                    version,
                    value: Bytes::from(value),
                    lease,
                }),
                prev_kv: None,
            },
            Record::Tombstone => delete_event(key, rev),
        }))
    }

    /// The live version of `key` at revision `rev` (what a watcher's `prev_kv` shows for a
    /// change at `rev + 1`); `None` if there was none or `rev` is compacted, as etcd leaves
    /// `prev_kv` out once its range at `rev` is refused. The compacted revision is looked at
    /// after the read: a compaction meanwhile may have removed the version at `rev` and left
    /// an older one that would read as `rev`'s.
    pub fn get_at_revision(&self, key: &[u8], rev: i64) -> Result<Option<KeyValue>, MvccError> {
        match self.consistent(|| self.get_at(key, rev)) {
            Ok(found) => Ok(found),
            Err(MvccError::Compacted) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Drops history index entries below `rev` (compaction at `rev`).
    pub(crate) fn remove_history_below(&self, rev: i64) -> Result<(), MvccError> {
        remove_history(&self.tree(), 0, rev)
    }

    /// Indexes every record of a store written before the history index existed, once.
    pub(crate) fn index_history_if_missing(tree: &sled::Tree) -> Result<(), MvccError> {
        if tree.get(META_HISTORY)?.is_some() {
            return Ok(());
        }
        let mut batch = sled::Batch::default();
        let mut pending = 0;
        for item in tree.range(lower_bound(b"")..vec![META_SPACE]) {
            let (raw_key, _) = item?;
            let (prefix, rev) = split_record_key(&raw_key)?;
            let key = decode_prefix(prefix)?;
            batch.insert(history_key_of_record(rev, &key), key);
            pending += 1;
            if pending >= 10_000 {
                tree.apply_batch(std::mem::take(&mut batch))?;
                pending = 0;
            }
        }
        batch.insert(META_HISTORY, &[1u8][..]);
        tree.apply_batch(batch)?;
        Ok(())
    }
}

/// The history index entries that may hold changes of revisions `from..=to`, in order: the
/// group that starts below `from` and reaches it, if any, then every entry keyed in
/// `from..=to`.
fn history_from(
    tree: &sled::Tree,
    from: i64,
    to: i64,
) -> Result<impl Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>, MvccError> {
    let start = match straddling_group(tree, from)? {
        Some((key, _)) => key.to_vec(),
        None => history_bound(from).to_vec(),
    };
    Ok(tree.range(start..history_bound(to.saturating_add(1)).to_vec()))
}

/// The group keyed below `rev` that holds a change at or above `rev` (groups never
/// overlap, so only the last one keyed below `rev` can), with its key.
fn straddling_group(
    tree: &sled::Tree,
    rev: i64,
) -> Result<Option<(sled::IVec, sled::IVec)>, MvccError> {
    let Some(item) = tree.range(history_bound(0)..history_bound(rev)).next_back() else {
        return Ok(None);
    };
    let (key, value) = item?;
    if key.get(9) != Some(&HISTORY_GROUP) || key.len() != 10 {
        return Ok(None);
    }
    let first = history_revision(&key)?;
    let reaches = decode_history_group(first, &value)?
        .last()
        .is_some_and(|(last, _, _)| *last >= rev);
    Ok(reaches.then_some((key, value)))
}

/// Where the history entries to drop below revision `to` end: at the group that starts
/// below `to` and reaches it (it stays whole), else at `to`.
fn history_end_below(tree: &sled::Tree, to: i64) -> Result<Vec<u8>, MvccError> {
    Ok(match straddling_group(tree, to)? {
        Some((key, _)) => key.to_vec(),
        None => history_bound(to).to_vec(),
    })
}

/// Drops at most `max` history index entries below revision `to`, one at a time (a group
/// that starts below `to` and reaches it stays whole); whether any may be left. For
/// compaction's removal beside the applies: one sled batch of them would hold every other
/// sled operation of the process for its length.
pub(crate) fn remove_some_history_below(
    tree: &sled::Tree,
    to: i64,
    max: usize,
) -> Result<bool, MvccError> {
    let end = history_end_below(tree, to)?;
    for (removed, item) in tree.range(history_bound(0).to_vec()..end).enumerate() {
        if removed >= max {
            return Ok(true);
        }
        tree.remove(item?.0)?;
    }
    Ok(false)
}

/// Drops the history index entries of revisions `from..to`. A group that starts below
/// `to` and reaches it stays whole (readers skip what lies below where they start); one
/// that starts below `from` and reaches it is cut back to below `from`.
pub(crate) fn remove_history(tree: &sled::Tree, from: i64, to: i64) -> Result<(), MvccError> {
    let end = history_end_below(tree, to)?;
    if from > 0
        && let Some((key, value)) = straddling_group(tree, from)?
        && let Some(kept) = group_without(&key, &value, |rev, _| rev >= from)?
    {
        tree.insert(key, kept)?;
    }
    let keys = tree
        .range(history_bound(from).to_vec()..end)
        .map(|item| item.map(|(raw_key, _)| raw_key).map_err(MvccError::from));
    remove_batched(tree, keys)
}

/// The group stored under `key` re-encoded without the changes `dropped` names, or `None`
/// if it names none of them.
fn group_without(
    key: &[u8],
    value: &[u8],
    dropped: impl Fn(i64, &[u8]) -> bool,
) -> Result<Option<Vec<u8>>, MvccError> {
    let first = history_revision(key)?;
    let entries = decode_history_group(first, value)?;
    if !entries.iter().any(|(rev, _, k)| dropped(*rev, k)) {
        return Ok(None);
    }
    let kept: Vec<HistoryEntry> = entries
        .into_iter()
        .filter(|(rev, _, k)| !dropped(*rev, k))
        .map(|(rev, n, k)| (rev, n, Bytes::copy_from_slice(k)))
        .collect();
    Ok(Some(encode_history_group(first, &kept)))
}

/// Removes the changes `changes` names — (revision, user key) — from the history index,
/// into `batch`: their own entries, and each group holding any of them written back once
/// without all of them.
pub(crate) fn remove_history_entries(
    tree: &sled::Tree,
    batch: &mut sled::Batch,
    changes: &[(i64, Vec<u8>)],
) -> Result<(), MvccError> {
    let set: std::collections::HashSet<(i64, &[u8])> =
        changes.iter().map(|(r, k)| (*r, k.as_slice())).collect();
    let named = |rev: i64, key: &[u8]| set.contains(&(rev, key));
    let mut groups = std::collections::BTreeMap::new();
    for (rev, key) in changes {
        if let Some((group, value)) = straddling_group(tree, *rev)? {
            groups.insert(group, value);
        }
        for item in tree.range(history_bound(*rev)..history_bound(rev + 1)) {
            let (raw, value) = item?;
            if raw.get(9) == Some(&HISTORY_GROUP) {
                groups.insert(raw, value);
            } else if value.as_ref() == key.as_slice() {
                batch.remove(raw);
            }
        }
    }
    for (group, value) in groups {
        if let Some(kept) = group_without(&group, &value, named)? {
            batch.insert(group, kept);
        }
    }
    Ok(())
}

/// Removes `keys` from `tree` in batches of 10,000 (each batch atomic, the whole not).
pub(crate) fn remove_batched(
    tree: &sled::Tree,
    keys: impl Iterator<Item = Result<sled::IVec, MvccError>>,
) -> Result<(), MvccError> {
    let mut batch = sled::Batch::default();
    let mut pending = 0;
    for key in keys {
        batch.remove(key?);
        pending += 1;
        if pending >= 10_000 {
            tree.apply_batch(std::mem::take(&mut batch))?;
            pending = 0;
        }
    }
    tree.apply_batch(batch)?;
    Ok(())
}

/// A history group as the store reads it back from disk, keyed by revision `first`: the
/// changes it names (revision, n, user key), or the damage it holds (for the fuzz target).
pub fn decode_group(first: i64, raw: &[u8]) -> Result<Vec<(i64, u32, Vec<u8>)>, MvccError> {
    Ok(decode_history_group(first, raw)?
        .into_iter()
        .map(|(rev, n, key)| (rev, n, key.to_vec()))
        .collect())
}

/// Encodes changes as a group keyed by the first one's revision, as the store writes them
/// (for the fuzz target's seeds and round trips).
pub fn encode_group(entries: &[(i64, u32, Vec<u8>)]) -> Vec<u8> {
    let first = entries.first().map_or(0, |e| e.0);
    let entries: Vec<HistoryEntry> = entries
        .iter()
        .map(|(rev, n, key)| (*rev, *n, Bytes::copy_from_slice(key)))
        .collect();
    encode_history_group(first, &entries)
}

/// Every change the history index names, whatever its form, in key order then group order,
/// each under the key of its per-change form: stores grouped differently compare equal.
#[cfg(test)]
pub(crate) fn logical_history(tree: &sled::Tree) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    for item in tree.range(history_bound(0)..history_bound(i64::MAX)) {
        let (key, value) = item.unwrap();
        let rev = history_revision(&key).unwrap();
        if key[9] == HISTORY_GROUP {
            for (rev, n, user_key) in decode_history_group(rev, &value).unwrap() {
                out.push((
                    super::encoding::history_key(rev, n).to_vec(),
                    user_key.to_vec(),
                ));
            }
        } else {
            out.push((key.to_vec(), value.to_vec()));
        }
    }
    out
}

/// A delete event as etcd sends it: the key and the tombstone's revision only.
pub(crate) fn delete_event(key: Bytes, rev: i64) -> Event {
    Event {
        r#type: EventType::Delete as i32,
        kv: Some(KeyValue {
            key,
            mod_revision: rev,
            ..Default::default()
        }),
        prev_kv: None,
    }
}

/// Guards the layout assumption the history range relies on.
const _: () = assert!(HISTORY_SPACE > META_SPACE);
