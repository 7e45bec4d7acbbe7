//! Which keys the store may hold a version of: a Bloom filter, so that a put of a key the
//! store has never held (every create: a new Kubernetes object, a load, a follower
//! replaying its log) skips the sled iterator that looks for the key's newest version.
//! That read was 45% of applying such a put (`examples/restore_time`'s load, under perf).
//!
//! It answers "certainly not" or "maybe". Every key with a live version in the active tree
//! is in it (a key a transaction put and deleted again leaves only a tombstone, and its
//! answer is "no live version" either way): it is built from the records when the store opens and from the rows of a restore,
//! and each write adds its keys (see `latest`). Compaction and deletes leave keys in it; a
//! stale "maybe" costs only the read it would have cost anyway.
//!
//! It grows in layers, each four times the one before, so it never needs the keys again.
//! Each layer is a blocked Bloom filter: the bits for one key lie in one 64-byte block, so
//! a lookup reads one cache line per layer (three layers at 1M keys). Past [`MAX_BYTES`] it stops growing and answers
//! "maybe" to everything (correct, only slower) until the store is opened or restored again.

use std::hash::BuildHasher;

/// Bound on the filter's memory: over 20 million distinct keys written since the store
/// opened or was restored (deleted keys stay in; tests use a small bound).
pub(crate) const MAX_BYTES: usize = if cfg!(test) { 1 << 20 } else { 64 << 20 };

/// Keys the first layer is sized for.
const FIRST_LAYER_KEYS: usize = 1 << 16;

/// Bits per key: with [`PROBES`] bits set in one block, about 1.5% false "maybe"s.
const BITS_PER_KEY: usize = 10;

/// Bits set per key, all in one block.
const PROBES: u32 = 7;

/// One 512-bit block.
type Block = [u64; 8];

struct Layer {
    blocks: Vec<Block>,
    /// Keys added to this layer, and the most it takes before the next layer starts.
    len: usize,
    capacity: usize,
}

impl Layer {
    fn new(capacity: usize) -> Self {
        let blocks = (capacity * BITS_PER_KEY).div_ceil(512).next_power_of_two();
        Self {
            blocks: vec![[0u64; 8]; blocks],
            len: 0,
            capacity,
        }
    }

    fn bytes(&self) -> usize {
        self.blocks.len() * std::mem::size_of::<Block>()
    }

    /// The block and the bit positions in it for hashes `(h1, h2)`.
    fn probes(&self, (h1, h2): (u64, u64)) -> (usize, impl Iterator<Item = usize> + use<>) {
        let block = (h1 as usize) & (self.blocks.len() - 1);
        (
            block,
            (0..PROBES).map(move |i| ((h2 >> (9 * i)) & 511) as usize),
        )
    }

    fn contains(&self, hashes: (u64, u64)) -> bool {
        let (block, mut bits) = self.probes(hashes);
        let block = &self.blocks[block];
        bits.all(|bit| block[bit / 64] & (1 << (bit % 64)) != 0)
    }

    fn insert(&mut self, hashes: (u64, u64)) {
        let (block, bits) = self.probes(hashes);
        let block = &mut self.blocks[block];
        for bit in bits {
            block[bit / 64] |= 1 << (bit % 64);
        }
        self.len += 1;
    }
}

/// The keys the store may hold (see the module docs).
pub(crate) struct Seen {
    hasher: std::hash::RandomState,
    layers: Vec<Layer>,
    /// Past the bound: everything is "maybe".
    saturated: bool,
}

impl Default for Seen {
    fn default() -> Self {
        Self {
            hasher: std::hash::RandomState::new(),
            layers: vec![Layer::new(FIRST_LAYER_KEYS)],
            saturated: false,
        }
    }
}

impl std::fmt::Debug for Seen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Seen")
            .field("layers", &self.layers.len())
            .field("bytes", &self.bytes())
            .field("saturated", &self.saturated)
            .finish()
    }
}

impl Seen {
    fn hashes(&self, key: &[u8]) -> (u64, u64) {
        let h1 = self.hasher.hash_one(key);
        // A second, independent-looking word for the bit positions (splitmix64's finaliser).
        let mut h2 = h1.wrapping_add(0x9e37_79b9_7f4a_7c15);
        h2 = (h2 ^ (h2 >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        h2 = (h2 ^ (h2 >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (h1, h2 ^ (h2 >> 31))
    }

    /// `false` only if `key` was never added.
    pub(crate) fn may_contain(&self, key: &[u8]) -> bool {
        if self.saturated {
            return true;
        }
        let hashes = self.hashes(key);
        self.layers.iter().any(|layer| layer.contains(hashes))
    }

    /// Adds `key`.
    pub(crate) fn insert(&mut self, key: &[u8]) {
        if self.saturated {
            return;
        }
        let hashes = self.hashes(key);
        if self.layers.iter().any(|layer| layer.contains(hashes)) {
            return; // already in (or a false "maybe": either way `may_contain` says so)
        }
        let full = self
            .layers
            .last()
            .is_none_or(|last| last.len >= last.capacity);
        if full {
            let capacity = self
                .layers
                .last()
                .map_or(FIRST_LAYER_KEYS, |last| last.capacity.saturating_mul(4));
            let needed = (capacity * BITS_PER_KEY).div_ceil(512).next_power_of_two() * 64;
            if self.bytes().saturating_add(needed) > MAX_BYTES {
                self.saturated = true;
                self.layers = Vec::new();
                return;
            }
            self.layers.push(Layer::new(capacity));
        }
        if let Some(last) = self.layers.last_mut() {
            last.insert(hashes);
        }
    }

    /// A filter that answers "maybe" to every key.
    #[cfg(test)]
    pub(crate) fn knowing_nothing() -> Self {
        Self {
            layers: Vec::new(),
            saturated: true,
            ..Self::default()
        }
    }

    /// Memory held by the bits.
    pub(crate) fn bytes(&self) -> usize {
        self.layers.iter().map(Layer::bytes).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn no_key_added_is_ever_denied_and_few_others_pass() {
        let mut seen = Seen::default();
        // Enough keys for two layers.
        let n = FIRST_LAYER_KEYS * 3;
        for i in 0..n {
            seen.insert(format!("/registry/pods/ns/{i}").as_bytes());
        }
        assert_eq!(seen.layers.len(), 2);
        for i in 0..n {
            assert!(seen.may_contain(format!("/registry/pods/ns/{i}").as_bytes()));
        }
        let passed = (0..100_000)
            .filter(|i| seen.may_contain(format!("/registry/other/{i}").as_bytes()))
            .count();
        // About 1.5% for a full layer; one full, one half full.
        assert!(passed < 4_000, "{passed} false maybes in 100,000");
        assert!(passed > 0, "a Bloom filter this full passes some strangers");
    }

    #[test]
    fn past_its_bound_it_says_maybe_to_everything() {
        let mut seen = Seen::default();
        let mut i = 0u64;
        while !seen.saturated {
            seen.insert(&i.to_le_bytes());
            i += 1;
            assert!(seen.bytes() <= MAX_BYTES);
        }
        assert_eq!(seen.bytes(), 0);
        assert!(seen.may_contain(b"never added"));
        seen.insert(b"x");
        assert!(seen.may_contain(b"x"));
    }

    proptest! {
        #[test]
        fn every_added_key_may_be_there(keys in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..300)) {
            let mut seen = Seen::default();
            for key in &keys {
                seen.insert(key);
            }
            for key in &keys {
                prop_assert!(seen.may_contain(key));
            }
        }
    }
}
