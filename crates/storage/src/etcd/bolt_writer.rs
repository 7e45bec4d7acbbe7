//! Writes a bbolt file from sorted buckets, in the layout [`super::bolt`] reads and bbolt
//! 1.3 (and so `etcdctl snapshot status`) accepts: two meta pages, an empty freelist page,
//! then each bucket's B+tree (leaf pages packed full, a value too large for a page on
//! overflow pages, branch pages above them) and the root bucket's tree last.
//!
//! [`BoltWriter`] streams: pages go to the sink as they fill, and the meta pages, which
//! name the root and the high-water page, are written over the first two pages at the
//! end. What it holds in memory is one leaf's items and, per bucket, the first key and page
//! of each leaf (for the branch pages above them): about a hundredth of the data with
//! etcd's 17-byte revision keys and 256-byte values. [`write`] builds a whole file in memory
//! (tests, fuzz seeds, samples).

use std::io::{self, Seek, SeekFrom, Write};

use super::bolt::{
    BRANCH_PAGE, BUCKET_LEAF, ELEMENT, FREELIST_PAGE, LEAF_PAGE, MAGIC, META_PAGE, META_SUMMED,
    PAGE_HEADER, VERSION, fnv64a,
};

/// A bucket: its name and its keys (ascending, no duplicates) with their values.
pub type BucketData = (Vec<u8>, Vec<(Vec<u8>, Vec<u8>)>);

/// One leaf element: its flags, key and value.
type Item = (u32, Vec<u8>, Vec<u8>);

/// A bbolt file written page by page into `out`: [`BoltWriter::bucket`] for each bucket in
/// name order, then [`BoltWriter::finish`].
pub struct BoltWriter<W: Write + Seek> {
    out: W,
    page_size: usize,
    next_id: u64,
    /// Each bucket written so far: its name and its header (root page, sequence).
    roots: Vec<(Vec<u8>, Vec<u8>)>,
}

impl<W: Write + Seek> BoltWriter<W> {
    /// Starts a file in `out` (at its start) with pages of `page_size` bytes.
    pub fn new(mut out: W, page_size: usize) -> io::Result<Self> {
        if !(1024..=(1 << 20)).contains(&page_size) || !page_size.is_power_of_two() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "bbolt pages are a power of two from 1 KiB to 1 MiB here",
            ));
        }
        // The meta pages, written over at the end.
        out.write_all(&vec![0u8; 2 * page_size])?;
        let mut w = Self {
            out,
            page_size,
            next_id: 2,
            roots: Vec::new(),
        };
        w.push(FREELIST_PAGE, 0, &[])?;
        Ok(w)
    }

    /// Appends a page (its header filled in here, overflow pages as needed) and returns its id.
    fn push(&mut self, flags: u16, count: usize, body: &[u8]) -> io::Result<u64> {
        let id = self.next_id;
        let total = (PAGE_HEADER + body.len()).div_ceil(self.page_size).max(1);
        let mut header = [0u8; PAGE_HEADER];
        header[..8].copy_from_slice(&id.to_le_bytes());
        header[8..10].copy_from_slice(&flags.to_le_bytes());
        header[10..12].copy_from_slice(&(count as u16).to_le_bytes());
        header[12..16].copy_from_slice(&((total - 1) as u32).to_le_bytes());
        self.out.write_all(&header)?;
        self.out.write_all(body)?;
        let pad = total * self.page_size - PAGE_HEADER - body.len();
        self.out.write_all(&vec![0u8; pad])?;
        self.next_id += total as u64;
        Ok(id)
    }

    /// Writes the bucket `name` holding `items` (keys ascending, no duplicates). Buckets
    /// must come in ascending name order, as bbolt's root tree is searched.
    pub fn bucket<I>(&mut self, name: &[u8], items: I) -> io::Result<()>
    where
        I: IntoIterator<Item = io::Result<(Vec<u8>, Vec<u8>)>>,
    {
        if self
            .roots
            .last()
            .is_some_and(|(last, _)| last.as_slice() >= name)
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "bbolt buckets must be written in ascending name order",
            ));
        }
        let root = self.tree(items.into_iter().map(|i| i.map(|(k, v)| (0, k, v))))?;
        let mut header = root.to_le_bytes().to_vec();
        header.extend_from_slice(&0u64.to_le_bytes()); // sequence
        self.roots.push((name.to_vec(), header));
        Ok(())
    }

    /// Writes the root bucket's tree and the meta pages; returns the sink (not flushed).
    pub fn finish(mut self) -> io::Result<W> {
        let roots: Vec<_> = std::mem::take(&mut self.roots)
            .into_iter()
            .map(|(name, header)| Ok((BUCKET_LEAF, name, header)))
            .collect();
        let root = self.tree(roots)?;
        let high_water = self.next_id;
        let freelist = 2u64;
        self.out.seek(SeekFrom::Start(0))?;
        for (id, txid) in [(0u64, 2u64), (1, 1)] {
            let mut meta = Vec::with_capacity(META_SUMMED + 8);
            meta.extend_from_slice(&MAGIC.to_le_bytes());
            meta.extend_from_slice(&VERSION.to_le_bytes());
            meta.extend_from_slice(&(self.page_size as u32).to_le_bytes());
            meta.extend_from_slice(&0u32.to_le_bytes());
            meta.extend_from_slice(&root.to_le_bytes());
            meta.extend_from_slice(&0u64.to_le_bytes());
            meta.extend_from_slice(&freelist.to_le_bytes());
            meta.extend_from_slice(&high_water.to_le_bytes());
            meta.extend_from_slice(&txid.to_le_bytes());
            debug_assert_eq!(meta.len(), META_SUMMED);
            let sum = fnv64a(&meta);
            meta.extend_from_slice(&sum.to_le_bytes());
            let mut page = vec![0u8; self.page_size];
            page[..8].copy_from_slice(&id.to_le_bytes());
            page[8..10].copy_from_slice(&META_PAGE.to_le_bytes());
            page[PAGE_HEADER..PAGE_HEADER + meta.len()].copy_from_slice(&meta);
            self.out.write_all(&page)?;
        }
        self.out.seek(SeekFrom::End(0))?;
        Ok(self.out)
    }

    /// Writes the tree of `items` and returns its root page. Leaves are packed greedily
    /// (as many elements as fit, at least one, which may overflow); an empty tree is one
    /// empty leaf.
    fn tree<I>(&mut self, items: I) -> io::Result<u64>
    where
        I: IntoIterator<Item = io::Result<Item>>,
    {
        let room = self.page_size - PAGE_HEADER;
        let mut level: Vec<(Vec<u8>, u64)> = Vec::new();
        let mut chunk: Vec<Item> = Vec::new();
        let mut used = 0;
        for item in items {
            let item = item?;
            let need = ELEMENT + item.1.len() + item.2.len();
            if !chunk.is_empty() && (used + need > room || chunk.len() == u16::MAX as usize) {
                level.push(self.leaf(&chunk)?);
                chunk.clear();
                used = 0;
            }
            used += need;
            chunk.push(item);
        }
        if !chunk.is_empty() || level.is_empty() {
            level.push(self.leaf(&chunk)?);
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
                    self.push(BRANCH_PAGE, chunk.len(), &body)?,
                ));
            }
            level = upper;
        }
        Ok(level[0].1)
    }

    /// Writes one leaf page of `chunk`; returns its first key and its page.
    fn leaf(&mut self, chunk: &[Item]) -> io::Result<(Vec<u8>, u64)> {
        let data: usize = chunk.iter().map(|(_, k, v)| k.len() + v.len()).sum();
        let mut body = Vec::with_capacity(chunk.len() * ELEMENT + data);
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
        let first = chunk.first().map(|c| c.1.clone()).unwrap_or_default();
        Ok((first, self.push(LEAF_PAGE, chunk.len(), &body)?))
    }
}

/// Children per branch page: as many as fit with the longest key of the level.
fn branch_fanout(level: &[(Vec<u8>, u64)], room: usize) -> usize {
    let longest = level.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    (room / (ELEMENT + longest)).clamp(2, u16::MAX as usize)
}

/// A bbolt file holding `buckets` (in name order), with pages of `page_size` bytes, built
/// in memory.
pub fn write(buckets: &[BucketData], page_size: usize) -> Vec<u8> {
    let built = (|| {
        let mut w = BoltWriter::new(io::Cursor::new(Vec::new()), page_size)?;
        for (name, items) in buckets {
            w.bucket(name, items.iter().map(|(k, v)| Ok((k.clone(), v.clone()))))?;
        }
        w.finish()
    })();
    match built {
        Ok(cursor) => cursor.into_inner(),
        // Memory does not fail to take writes; only the arguments can be wrong.
        Err(e) => panic!("bbolt writer: {e}"),
    }
}
