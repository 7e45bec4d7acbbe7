//! Writes a bbolt file from sorted buckets, in the layout [`super::bolt`] reads and bbolt
//! 1.3 (and so `etcdctl snapshot status`) accepts: two meta pages, an empty freelist page,
//! then each bucket's B+tree (leaf pages packed full, a value too large for a page on
//! overflow pages, branch pages above them) and the root bucket's tree last.
//!
//! The whole file is built in memory: this serves tests and fuzz seeds (and a first
//! export), not files of gigabytes.

use super::bolt::{
    BRANCH_PAGE, BUCKET_LEAF, ELEMENT, FREELIST_PAGE, LEAF_PAGE, MAGIC, META_PAGE, META_SUMMED,
    PAGE_HEADER, VERSION, fnv64a,
};

/// A bucket: its name and its keys (ascending, no duplicates) with their values.
pub type BucketData = (Vec<u8>, Vec<(Vec<u8>, Vec<u8>)>);

struct Pages {
    page_size: usize,
    out: Vec<u8>,
}

impl Pages {
    fn next_id(&self) -> u64 {
        (self.out.len() / self.page_size) as u64
    }

    /// Appends a page (its header filled in here) and returns its id.
    fn push(&mut self, flags: u16, count: usize, mut body: Vec<u8>) -> u64 {
        let id = self.next_id();
        let total = (PAGE_HEADER + body.len()).div_ceil(self.page_size).max(1);
        let mut page = Vec::with_capacity(total * self.page_size);
        page.extend_from_slice(&id.to_le_bytes());
        page.extend_from_slice(&flags.to_le_bytes());
        page.extend_from_slice(&(count as u16).to_le_bytes());
        page.extend_from_slice(&((total - 1) as u32).to_le_bytes());
        page.append(&mut body);
        page.resize(total * self.page_size, 0);
        self.out.extend_from_slice(&page);
        id
    }

    /// Writes the tree of `items` (each a flag, key and value) and returns its root page.
    fn tree(&mut self, items: &[(u32, &[u8], &[u8])]) -> u64 {
        let room = self.page_size - PAGE_HEADER;
        // Leaves: as many elements as fit (at least one, which may overflow).
        let mut level: Vec<(Vec<u8>, u64)> = Vec::new();
        let mut start = 0;
        while start < items.len() || (start == 0 && level.is_empty()) {
            let (mut end, mut used) = (start, 0);
            while end < items.len() {
                let need = ELEMENT + items[end].1.len() + items[end].2.len();
                if end > start && (used + need > room || end - start == u16::MAX as usize) {
                    break;
                }
                used += need;
                end += 1;
            }
            let chunk = &items[start..end];
            let mut body = Vec::new();
            let mut data_at = chunk.len() * ELEMENT;
            for (i, (flags, k, v)) in chunk.iter().enumerate() {
                let pos = data_at - i * ELEMENT;
                body.extend_from_slice(&flags.to_le_bytes());
                body.extend_from_slice(&(pos as u32).to_le_bytes());
                body.extend_from_slice(&(k.len() as u32).to_le_bytes());
                body.extend_from_slice(&(v.len() as u32).to_le_bytes());
                data_at += k.len() + v.len();
            }
            for (_, k, v) in chunk {
                body.extend_from_slice(k);
                body.extend_from_slice(v);
            }
            let first = chunk.first().map(|c| c.1.to_vec()).unwrap_or_default();
            level.push((first, self.push(LEAF_PAGE, chunk.len(), body)));
            start = end;
            if items.is_empty() {
                break;
            }
        }
        // Branches until one page is left.
        while level.len() > 1 {
            let mut upper = Vec::new();
            for chunk in level.chunks(branch_fanout(&level, room)) {
                let mut body = Vec::new();
                let mut data_at = chunk.len() * ELEMENT;
                for (i, (k, child)) in chunk.iter().enumerate() {
                    body.extend_from_slice(&((data_at - i * ELEMENT) as u32).to_le_bytes());
                    body.extend_from_slice(&(k.len() as u32).to_le_bytes());
                    body.extend_from_slice(&child.to_le_bytes());
                    data_at += k.len();
                }
                for (k, _) in chunk {
                    body.extend_from_slice(k);
                }
                upper.push((
                    chunk[0].0.clone(),
                    self.push(BRANCH_PAGE, chunk.len(), body),
                ));
            }
            level = upper;
        }
        level[0].1
    }
}

/// Children per branch page: as many as fit with the longest key of the level.
fn branch_fanout(level: &[(Vec<u8>, u64)], room: usize) -> usize {
    let longest = level.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    (room / (ELEMENT + longest)).clamp(2, u16::MAX as usize)
}

/// A bbolt file holding `buckets` (in name order), with pages of `page_size` bytes.
pub fn write(buckets: &[BucketData], page_size: usize) -> Vec<u8> {
    assert!(page_size >= 1024, "bbolt pages are at least 1 KiB here");
    let mut pages = Pages {
        page_size,
        out: vec![0u8; 2 * page_size],
    };
    let freelist = pages.push(FREELIST_PAGE, 0, Vec::new());
    let mut roots = Vec::new();
    for (name, items) in buckets {
        let items: Vec<_> = items
            .iter()
            .map(|(k, v)| (0u32, k.as_slice(), v.as_slice()))
            .collect();
        let root = pages.tree(&items);
        let mut header = root.to_le_bytes().to_vec();
        header.extend_from_slice(&0u64.to_le_bytes()); // sequence
        roots.push((BUCKET_LEAF, name.clone(), header));
    }
    let roots: Vec<_> = roots
        .iter()
        .map(|(flags, name, header): &(u32, Vec<u8>, Vec<u8>)| {
            (*flags, name.as_slice(), header.as_slice())
        })
        .collect();
    let root = pages.tree(&roots);
    let high_water = pages.next_id();
    for (id, txid) in [(0u64, 2u64), (1, 1)] {
        let mut meta = Vec::new();
        meta.extend_from_slice(&MAGIC.to_le_bytes());
        meta.extend_from_slice(&VERSION.to_le_bytes());
        meta.extend_from_slice(&(page_size as u32).to_le_bytes());
        meta.extend_from_slice(&0u32.to_le_bytes());
        meta.extend_from_slice(&root.to_le_bytes());
        meta.extend_from_slice(&0u64.to_le_bytes());
        meta.extend_from_slice(&freelist.to_le_bytes());
        meta.extend_from_slice(&high_water.to_le_bytes());
        meta.extend_from_slice(&txid.to_le_bytes());
        debug_assert_eq!(meta.len(), META_SUMMED);
        let sum = fnv64a(&meta);
        meta.extend_from_slice(&sum.to_le_bytes());
        let at = id as usize * page_size;
        let page = &mut pages.out[at..at + page_size];
        page[..8].copy_from_slice(&id.to_le_bytes());
        page[8..10].copy_from_slice(&META_PAGE.to_le_bytes());
        page[PAGE_HEADER..PAGE_HEADER + meta.len()].copy_from_slice(&meta);
    }
    pages.out
}
