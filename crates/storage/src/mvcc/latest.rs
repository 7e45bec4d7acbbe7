//! What a put needs of a key's newest version, kept in memory for recently written keys.
//!
//! A put stores the previous version's create revision, version + 1 and (with
//! `ignore_lease`) its lease; reading those from sled takes an iterator over the key's
//! versions, which was the largest single cost of applying a put on a follower. The writer
//! remembers instead what each write left as a key's newest version. It is a cache, not an
//! index: a key it does not hold is read from sled as before and then remembered. Beside
//! it, a filter of every key the store may hold (`seen`) answers for keys the store has
//! never held, which no cache of recent keys can: a create needs no read at all.
//!
//! It is touched only under the store's writer lock, in apply order. Every write that
//! changes keys updates it after its records are in; a restored snapshot empties it and
//! brings its own filter; compaction keeps every key's newest version, so it changes
//! nothing here. Its size is bounded: past [`MAX_BYTES`] the cache is emptied and fills
//! again from the writes that follow (the filter has its own bound).

use std::collections::HashMap;

use raftkv_proto::mvccpb::KeyValue;

use super::seen::Seen;

/// Bound on the memory held (keys plus a fixed cost per entry).
pub(crate) const MAX_BYTES: usize = 64 << 20;

/// Per-entry cost counted beside the key's bytes (the map's slot, the key's heap block and
/// the metadata).
const ENTRY_COST: usize = 64;

/// The newest live version's fields that a put carries over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Newest {
    pub(crate) create_revision: i64,
    pub(crate) mod_revision: i64,
    pub(crate) version: i64,
    pub(crate) lease: i64,
}

impl Newest {
    pub(crate) fn of(kv: &KeyValue) -> Self {
        Self {
            create_revision: kv.create_revision,
            mod_revision: kv.mod_revision,
            version: kv.version,
            lease: kv.lease,
        }
    }
}

/// Keys recently written, each with its newest live version (`None`: deleted), and the
/// filter of every key the store may hold.
#[derive(Debug, Default)]
pub(crate) struct Latest {
    map: HashMap<Vec<u8>, Option<Newest>>,
    bytes: usize,
    seen: Seen,
}

impl Latest {
    /// An empty cache beside `seen`, the filter of every key the store holds.
    pub(crate) fn with_seen(seen: Seen) -> Self {
        Self {
            seen,
            ..Self::default()
        }
    }

    /// What the cache knows of `key`: `Some(None)` if its newest version is a delete (or it
    /// was never written), `None` if the key is not held.
    pub(crate) fn get(&self, key: &[u8]) -> Option<Option<Newest>> {
        match self.map.get(key) {
            Some(known) => Some(*known),
            None if !self.seen.may_contain(key) => Some(None),
            None => None,
        }
    }

    /// Notes that the store is about to hold a version of `key` (a write calls this for
    /// each key it puts, before the records go in; a delete leaves a record only for a key
    /// already held).
    pub(crate) fn note_held(&mut self, key: &[u8]) {
        self.seen.insert(key);
    }

    /// Notes `key`'s newest version after a write (or after reading it from the store).
    pub(crate) fn set(&mut self, key: &[u8], newest: Option<Newest>) {
        if let Some(slot) = self.map.get_mut(key) {
            *slot = newest;
            return;
        }
        let cost = key.len().saturating_add(ENTRY_COST);
        if cost > MAX_BYTES / 16 {
            return; // a huge key is not worth the room
        }
        if self.bytes.saturating_add(cost) > MAX_BYTES {
            self.clear();
        }
        self.bytes += cost;
        self.map.insert(key.to_vec(), newest);
    }

    /// Forgets the cached versions (the bound was hit); the filter stays.
    pub(crate) fn clear(&mut self) {
        self.map = HashMap::new();
        self.bytes = 0;
    }

    /// Starts over with `seen` as the filter: the store was opened or replaced by a
    /// snapshot, and `seen` holds every key it has a record of.
    pub(crate) fn reset(&mut self, seen: Seen) {
        self.clear();
        self.seen = seen;
    }

    /// Forgets everything and answers "maybe" for every key, so that every put reads its
    /// key back from sled (tests compare that with the cache and filter at work).
    #[cfg(test)]
    pub(crate) fn forget_all(&mut self) {
        self.reset(Seen::knowing_nothing());
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn newest(rev: i64) -> Option<Newest> {
        Some(Newest {
            create_revision: 2,
            mod_revision: rev,
            version: rev - 1,
            lease: 0,
        })
    }

    #[test]
    fn remembers_updates_and_deletes() {
        let mut latest = Latest::default();
        // Never held: the filter knows without a read.
        assert_eq!(latest.get(b"a"), Some(None));
        latest.note_held(b"a");
        latest.set(b"a", newest(3));
        assert_eq!(latest.get(b"a"), Some(newest(3)));
        latest.set(b"a", None);
        assert_eq!(latest.get(b"a"), Some(None));
        // Cleared, the cache no longer knows; the filter says the store may hold it.
        latest.clear();
        assert_eq!(latest.get(b"a"), None);
        latest.reset(Seen::default());
        assert_eq!(latest.get(b"a"), Some(None));
    }

    #[test]
    fn stays_within_its_bound() {
        let mut latest = Latest::default();
        let key_len = 1000;
        let fits = MAX_BYTES / (key_len + ENTRY_COST);
        for i in 0..fits + 10 {
            let mut key = vec![b'k'; key_len];
            key[..8].copy_from_slice(&(i as u64).to_be_bytes());
            latest.set(&key, newest(5));
            assert!(latest.bytes <= MAX_BYTES);
        }
        // Emptied once when full, then refilled by the writes that followed.
        assert_eq!(latest.len(), 10);
        latest.set(&vec![b'x'; MAX_BYTES / 8], newest(5));
        assert_eq!(latest.len(), 10, "a huge key is not held");
    }
}
