//! Round trips and compression ratios through the public API.

use proptest::prelude::*;
use raftkv_codec::{compress, decompress, samples};

const MIB: usize = 1 << 20;

fn round_trip(input: &[u8]) -> usize {
    let frame = compress(input);
    assert_eq!(
        decompress(&frame, usize::MAX).expect("own frame decodes"),
        input
    );
    frame.len()
}

#[test]
fn empty_and_tiny_inputs() {
    for len in 0..80 {
        round_trip(&samples::random(len, 7));
        round_trip(&samples::zeros(len));
    }
}

#[test]
fn block_boundaries() {
    let block = 1 << raftkv_codec::BLOCK_EXPONENT;
    for len in [block - 1, block, block + 1, 2 * block, 3 * block + 17] {
        round_trip(&samples::repeated_units(len, 3));
        round_trip(&samples::random(len, 3));
    }
}

#[test]
fn zeros_shrink_at_least_100x() {
    let size = round_trip(&samples::zeros(MIB));
    assert!(MIB / size >= 100, "1 MiB of zeros -> {size} bytes");
}

#[test]
fn repeated_units_shrink_at_least_10x() {
    let size = round_trip(&samples::repeated_units(MIB, 11));
    assert!(MIB / size >= 10, "1 MiB of repeated units -> {size} bytes");
}

#[test]
fn every_unit_length_up_to_256_shrinks_10x() {
    // One unit length at a time, so no single k hides behind the others.
    for k in 1..=256usize {
        let unit = samples::random(k, k as u64);
        let input: Vec<u8> = unit.iter().cycle().take(64 * k.max(64)).copied().collect();
        let size = round_trip(&input);
        assert!(
            input.len() >= 10 * size,
            "k = {k}: {} -> {size}",
            input.len()
        );
    }
}

#[test]
fn random_bytes_expand_less_than_one_percent() {
    let size = round_trip(&samples::random(MIB, 5));
    assert!(size * 100 < MIB * 101, "1 MiB random -> {size} bytes");
}

#[test]
fn etcd_records_never_expand() {
    for (len, seed) in [(100, 1), (4 << 10, 2), (MIB, 3), (3 * MIB, 4)] {
        let input = samples::etcd_records(len, seed);
        let size = round_trip(&input);
        assert!(
            size < input.len(),
            "{} bytes of records -> {size}",
            input.len()
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn any_bytes_round_trip(input in proptest::collection::vec(any::<u8>(), 0..5000)) {
        let frame = compress(&input);
        prop_assert_eq!(decompress(&frame, usize::MAX).unwrap(), input);
    }

    #[test]
    fn structured_bytes_round_trip(
        parts in proptest::collection::vec(
            (proptest::collection::vec(any::<u8>(), 1..40), 1usize..300, 0u8..4),
            0..40,
        )
    ) {
        // Units of a small alphabet repeated a random number of times: many near-misses.
        let mut input = Vec::new();
        for (unit, reps, mask) in parts {
            let unit: Vec<u8> = unit.iter().map(|b| b & (mask | 0xf0)).collect();
            for _ in 0..reps {
                input.extend_from_slice(&unit);
            }
        }
        let frame = compress(&input);
        prop_assert_eq!(decompress(&frame, usize::MAX).unwrap(), input);
    }
}

#[test]
fn the_snapshot_corpora_are_what_their_docs_say() {
    use raftkv_codec::samples::Corpus;
    for corpus in Corpus::ALL {
        assert_eq!(Corpus::from_name(corpus.name()), Some(corpus));
        // The same item for the same seed; different items differ.
        assert_eq!(corpus.item(5, 1), corpus.item(5, 1));
        assert_ne!(corpus.item(5, 1), corpus.item(6, 1));
        let items: Vec<_> = (0..500).map(|i| corpus.item(i, 1)).collect();
        let mean = items.iter().map(|(_, v)| v.len()).sum::<usize>() / items.len();
        match corpus {
            Corpus::Pods => {
                assert!((1500..2200).contains(&mean), "pods: {mean} bytes");
                for (key, value) in &items {
                    assert!(key.starts_with("/registry/pods/"));
                    assert!(value.starts_with(br#"{"kind":"Pod""#) && value.ends_with(b"}"));
                }
            }
            Corpus::Config => assert!(items.iter().all(|(_, v)| (1..=60).contains(&v.len()))),
            Corpus::Repetitive => assert!(items.iter().all(|(_, v)| v.len() == 256)),
        }
    }
}
