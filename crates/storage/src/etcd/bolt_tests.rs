//! The bbolt reader: files from the writer read back whole, and damaged or crafted files
//! refused without a panic, a loop or an allocation past the file.

use std::path::Path;

use proptest::prelude::*;

use super::bolt::{Bolt, MAX_DEPTH};
use super::bolt_writer::{BucketData, write};
use crate::error::SnapshotError;

fn read_all(path: &Path) -> Result<Vec<BucketData>, SnapshotError> {
    let db = Bolt::open(path)?;
    let mut reached = db.reached();
    let mut out = Vec::new();
    for bucket in db.buckets(&mut reached)? {
        let mut items = Vec::new();
        db.for_each(&bucket, &mut reached, &mut |e| {
            // The offset a walk reports reads the same value back.
            assert_eq!(db.read_at(e.value_offset, e.value.len()).unwrap(), e.value);
            items.push((e.key.to_vec(), e.value.to_vec()));
            Ok(())
        })?;
        out.push((bucket.name.clone(), items));
    }
    Ok(out)
}

fn sample() -> Vec<BucketData> {
    let many: Vec<_> = (0..3000u32)
        .map(|i| {
            (
                format!("k{i:06}").into_bytes(),
                vec![b'v'; (i % 97) as usize],
            )
        })
        .collect();
    vec![
        (b"big".to_vec(), vec![(b"one".to_vec(), vec![7u8; 20_000])]),
        (b"empty".to_vec(), vec![]),
        (b"many".to_vec(), many),
    ]
}

fn file_of(bytes: &[u8]) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    std::fs::write(&path, bytes).unwrap();
    (dir, path)
}

#[test]
fn reads_back_what_was_written_at_any_page_size() {
    for page_size in [1024, 4096, 16384] {
        let (_dir, path) = file_of(&write(&sample(), page_size));
        assert_eq!(read_all(&path).unwrap(), sample(), "page size {page_size}");
        let db = Bolt::open(&path).unwrap();
        assert_eq!(db.size(), std::fs::metadata(&path).unwrap().len());
    }
}

#[test]
fn a_trailer_after_the_pages_is_ignored() {
    let mut bytes = write(&sample(), 4096);
    bytes.extend_from_slice(&[0xAB; 32]);
    let (_dir, path) = file_of(&bytes);
    assert_eq!(read_all(&path).unwrap(), sample());
    assert_eq!(Bolt::open(&path).unwrap().size() + 32, bytes.len() as u64);
}

/// Rewrites meta page `id`'s transaction id and high-water mark, with a valid checksum.
fn set_meta(bytes: &mut [u8], page_size: usize, id: usize, txid: u64, high_water: u64) {
    let meta = &mut bytes[id * page_size + 16..id * page_size + 16 + 64];
    meta[40..48].copy_from_slice(&high_water.to_le_bytes());
    meta[48..56].copy_from_slice(&txid.to_le_bytes());
    let sum = super::bolt::fnv64a(&meta[..56]);
    meta[56..64].copy_from_slice(&sum.to_le_bytes());
}

#[test]
fn the_newer_valid_meta_wins_and_a_damaged_one_is_passed_over() {
    let mut bytes = write(&sample(), 4096);
    let pages = (bytes.len() / 4096) as u64;
    // Meta 1 made the newer one, naming a high-water mark past the file: it is the one
    // used, so the file is refused.
    set_meta(&mut bytes, 4096, 1, 3, pages + 100);
    let (_dir, path) = file_of(&bytes);
    match Bolt::open(&path) {
        Err(SnapshotError::Corrupt(m)) => assert!(m.contains("high-water"), "{m}"),
        other => panic!("the newer meta was not used: {other:?}"),
    }
    // Its checksum damaged: meta 0 is used, and the file reads back whole.
    bytes[4096 + 16 + 16] ^= 0xFF;
    std::fs::write(&path, &bytes).unwrap();
    assert_eq!(read_all(&path).unwrap(), sample());
    // Both damaged: refused.
    bytes[16 + 16] ^= 0xFF;
    std::fs::write(&path, &bytes).unwrap();
    assert!(matches!(Bolt::open(&path), Err(SnapshotError::Corrupt(_))));
}

#[test]
fn overlapping_elements_are_refused() {
    // Two leaf elements whose keys and values are the same bytes: bbolt never writes
    // that, and accepting it would let a page hand out its bytes many times over.
    let leaf_element = |pos: u32| {
        let mut e = [0u8; 16];
        e[..4].copy_from_slice(&1u32.to_le_bytes()); // a bucket
        e[4..8].copy_from_slice(&pos.to_le_bytes());
        e[8..12].copy_from_slice(&1u32.to_le_bytes());
        e[12..16].copy_from_slice(&16u32.to_le_bytes());
        e
    };
    let mut data = b"a".to_vec();
    data.extend_from_slice(&9u64.to_le_bytes());
    data.extend_from_slice(&0u64.to_le_bytes());
    // Element 0 at 32 + 0, element 1 pointing 16 bytes back to the same data.
    let p = page(0x02, &[leaf_element(32), leaf_element(16)], &data);
    expect_corrupt(&raw_file(4096, 2, &[p]), "misplaced");
    // The same for a branch: both children's keys on the same bytes.
    let b = page(
        0x01,
        &[branch_element(32, 1, 3), branch_element(16, 1, 4)],
        b"k",
    );
    expect_corrupt(
        &raw_file(4096, 2, &[b, page(0x02, &[], &[]), page(0x02, &[], &[])]),
        "misplaced",
    );
}

#[test]
fn a_page_longer_than_any_value_is_refused_before_it_is_read() {
    // A sparse file whose one page claims overflow pages past the largest version: refused
    // from its header, without allocating the span.
    let page_size = 4096u64;
    let pages = super::bolt::MAX_PAGE_SPAN / page_size + 8;
    let mut p = page(0x02, &[], &[]);
    p[12..16].copy_from_slice(&((pages - 1) as u32).to_le_bytes());
    let mut bytes = raw_file(4096, 2, &[p]);
    set_meta(&mut bytes, 4096, 0, 2, 2 + pages);
    set_meta(&mut bytes, 4096, 1, 1, 2 + pages);
    let (_dir, path) = file_of(&bytes);
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.set_len((2 + pages) * page_size).unwrap();
    match read_all(&path) {
        Err(SnapshotError::Corrupt(m)) => assert!(m.contains("pages long"), "{m}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn not_a_bolt_file_and_truncated_files_are_refused() {
    let (_dir, path) = file_of(b"RKVSNAP1 not bolt at all");
    assert!(matches!(
        Bolt::open(&path),
        Err(SnapshotError::NotASnapshot)
    ));
    let bytes = write(&sample(), 4096);
    for len in [0, 20, 4096, 8192, bytes.len() - 4096, bytes.len() - 1] {
        std::fs::write(&path, &bytes[..len]).unwrap();
        assert!(read_all(&path).is_err(), "truncated to {len}");
    }
}

/// A file of raw pages: meta pages naming `root` as the root bucket's page and
/// `pages.len() + 2` as the high-water mark, then `pages` from id 2.
fn raw_file(page_size: usize, root: u64, pages: &[Vec<u8>]) -> Vec<u8> {
    let template = write(&[], page_size);
    let mut out = template[..2 * page_size].to_vec();
    let high_water = 2 + pages.len() as u64;
    for id in 0..2 {
        let meta = &mut out[id * page_size + 16..id * page_size + 16 + 64];
        meta[16..24].copy_from_slice(&root.to_le_bytes());
        meta[40..48].copy_from_slice(&high_water.to_le_bytes());
        meta[56..64].copy_from_slice(&0u64.to_le_bytes()); // no checksum: bbolt accepts 0
    }
    for (i, page) in pages.iter().enumerate() {
        let mut p = page.clone();
        p.resize(page_size, 0);
        p[..8].copy_from_slice(&(2 + i as u64).to_le_bytes());
        out.extend_from_slice(&p);
    }
    out
}

fn page(flags: u16, elements: &[[u8; 16]], data: &[u8]) -> Vec<u8> {
    let mut p = vec![0u8; 8];
    p.extend_from_slice(&flags.to_le_bytes());
    p.extend_from_slice(&(elements.len() as u16).to_le_bytes());
    p.extend_from_slice(&0u32.to_le_bytes());
    for e in elements {
        p.extend_from_slice(e);
    }
    p.extend_from_slice(data);
    p
}

fn branch_element(pos: u32, ksize: u32, child: u64) -> [u8; 16] {
    let mut e = [0u8; 16];
    e[..4].copy_from_slice(&pos.to_le_bytes());
    e[4..8].copy_from_slice(&ksize.to_le_bytes());
    e[8..].copy_from_slice(&child.to_le_bytes());
    e
}

fn walk_root(bytes: &[u8]) -> Result<Vec<BucketData>, SnapshotError> {
    let (_dir, path) = file_of(bytes);
    read_all(&path)
}

fn expect_corrupt(bytes: &[u8], says: &str) {
    match walk_root(bytes) {
        Err(SnapshotError::Corrupt(m)) => assert!(m.contains(says), "{m}"),
        other => panic!("expected corrupt ({says}), got {other:?}"),
    }
}

#[test]
fn a_page_reached_twice_is_refused_so_cycles_end() {
    // Page 2 is a branch whose only child is itself.
    let cycle = page(0x01, &[branch_element(16, 0, 2)], &[]);
    expect_corrupt(&raw_file(4096, 2, &[cycle]), "multiple references");
    // Two children naming the same leaf.
    let leaf = page(0x02, &[], &[]);
    let twice = page(
        0x01,
        &[branch_element(32, 0, 3), branch_element(16, 0, 3)],
        &[],
    );
    expect_corrupt(&raw_file(4096, 2, &[twice, leaf]), "multiple references");
}

#[test]
fn a_chain_deeper_than_any_real_tree_is_refused() {
    let n = MAX_DEPTH + 5;
    let mut pages: Vec<_> = (0..n)
        .map(|i| page(0x01, &[branch_element(16, 0, 3 + i as u64)], &[]))
        .collect();
    pages.push(page(0x02, &[], &[]));
    expect_corrupt(&raw_file(1024, 2, &pages), "too deep");
}

#[test]
fn elements_and_pages_pointing_outside_are_refused() {
    // A child past the high-water mark, and one naming a meta page.
    for child in [99, 0, 1] {
        let p = page(0x01, &[branch_element(16, 0, child)], &[]);
        expect_corrupt(&raw_file(4096, 2, &[p]), "out of bounds");
    }
    // A leaf element whose value runs past its page.
    let mut e = [0u8; 16];
    e[..4].copy_from_slice(&1u32.to_le_bytes()); // a bucket
    e[4..8].copy_from_slice(&16u32.to_le_bytes());
    e[8..12].copy_from_slice(&1u32.to_le_bytes());
    e[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
    expect_corrupt(
        &raw_file(4096, 2, &[page(0x02, &[e], b"b")]),
        "past the page",
    );
    // More elements than the page holds.
    let mut p = page(0x02, &[], &[]);
    p[10..12].copy_from_slice(&u16::MAX.to_le_bytes());
    expect_corrupt(&raw_file(1024, 2, &[p]), "overflow it");
    // A page whose overflow runs past the high-water mark.
    let mut p = page(0x02, &[], &[]);
    p[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
    expect_corrupt(&raw_file(4096, 2, &[p]), "overflow past");
    // A page of no known type, and one whose header names another page.
    expect_corrupt(&raw_file(4096, 2, &[page(0x40, &[], &[])]), "invalid type");
    let mut bytes = raw_file(4096, 2, &[page(0x02, &[], &[])]);
    bytes[2 * 4096] = 9;
    expect_corrupt(&bytes, "header names page 9");
}

#[test]
fn keys_out_of_order_and_values_outside_buckets_are_refused() {
    let mut bytes = write(
        &[(
            b"b".to_vec(),
            vec![
                (b"a".to_vec(), b"1".to_vec()),
                (b"b".to_vec(), b"2".to_vec()),
            ],
        )],
        4096,
    );
    // Swap the two one-byte keys in the bucket's leaf (page 3): "b" then "a".
    let leaf = 3 * 4096;
    let keys_at: Vec<usize> = (leaf..leaf + 4096)
        .filter(|&i| bytes[i] == b'a' && bytes[i + 1] == b'1')
        .collect();
    assert_eq!(keys_at.len(), 1);
    let a = keys_at[0];
    bytes[a] = b'c';
    expect_corrupt(&bytes, "out of order");

    // A plain value in the root bucket.
    let mut e = [0u8; 16];
    e[4..8].copy_from_slice(&16u32.to_le_bytes());
    e[8..12].copy_from_slice(&1u32.to_le_bytes());
    expect_corrupt(
        &raw_file(4096, 2, &[page(0x02, &[e], b"x")]),
        "outside every bucket",
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Any damage to a valid file gives its data back or an error: never a panic.
    #[test]
    fn damaged_files_never_panic(
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        let mut bytes = write(&sample(), 1024);
        for (at, x) in flips {
            let i = at.index(bytes.len());
            bytes[i] ^= x | 1;
        }
        if truncate {
            bytes.truncate(cut.index(bytes.len()));
        }
        let _ = walk_root(&bytes);
    }

    /// Pages of any content (a branch or a leaf, any element table) under valid metas:
    /// every element is parsed and checked, never a panic.
    #[test]
    fn any_pages_never_panic(
        pages in proptest::collection::vec(
            (prop_oneof![Just(0x01u16), Just(0x02u16), any::<u16>()],
             0u16..80,
             proptest::collection::vec(any::<u8>(), 0..1000)),
            1..6,
        ),
    ) {
        let raw: Vec<Vec<u8>> = pages
            .into_iter()
            .map(|(flags, count, body)| {
                let mut p = page(flags, &[], &[]);
                p[10..12].copy_from_slice(&count.to_le_bytes());
                p.extend_from_slice(&body);
                p.truncate(1024);
                p
            })
            .collect();
        let _ = walk_root(&raw_file(1024, 2, &raw));
    }
}
