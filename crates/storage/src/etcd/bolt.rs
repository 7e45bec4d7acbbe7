//! A read-only reader of bbolt files (etcd's backend, and what `etcdctl snapshot save`
//! writes), for files from anywhere: every page id, offset, length and count is checked
//! against the file before it is used, every page may be reached once only (so a crafted
//! file cannot make a walk loop or revisit a subtree), and trees are at most
//! [`MAX_DEPTH`] levels deep. Pages are read with positioned reads, one at a time, so
//! memory stays at one page per tree level whatever the file's size.
//!
//! The layout (bbolt 1.3, little-endian as x86 and arm64 write it):
//!
//! ```text
//! page      id u64 | flags u16 | count u16 | overflow u32 | data ((1 + overflow) pages long)
//! meta      (pages 0 and 1) magic u32 | version u32 | page size u32 | flags u32 |
//!           root bucket (root page u64, sequence u64) | freelist u64 | high-water page u64 |
//!           txid u64 | FNV-1a 64 of the 56 bytes before it
//! branch    count × (pos u32 | key size u32 | child page u64), pos from the element
//! leaf      count × (flags u32 | pos u32 | key size u32 | value size u32), value after key
//! bucket    a leaf value with flag 1: root page u64 | sequence u64, and when the root is 0
//!           an inline leaf page right after it
//! ```
//!
//! bbolt itself trusts its file (a bad page id is a crash); that and the lack of a
//! maintained, audited Rust port are why raftkv reads it with this instead of a crate.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::error::SnapshotError;

/// bbolt's magic, in each meta page.
pub const MAGIC: u32 = 0xED0C_DAED;
/// The only bbolt data format there is.
pub(super) const VERSION: u32 = 2;
// The layout, shared with `bolt_writer`.
pub(super) const PAGE_HEADER: usize = 16;
pub(super) const ELEMENT: usize = 16;
/// Meta bytes covered by its checksum.
pub(super) const META_SUMMED: usize = 56;
pub(super) const BRANCH_PAGE: u16 = 0x01;
pub(super) const LEAF_PAGE: u16 = 0x02;
pub(super) const META_PAGE: u16 = 0x04;
pub(super) const FREELIST_PAGE: u16 = 0x10;
pub(super) const BUCKET_LEAF: u32 = 0x01;
/// Deepest tree accepted: a B+tree of two or more keys a page this deep would hold more
/// keys than any file can.
pub const MAX_DEPTH: usize = 64;
/// Smallest and largest page sizes accepted (bbolt uses the OS page size, 4 KiB here).
const MIN_PAGE_SIZE: u32 = 1024;
const MAX_PAGE_SIZE: u32 = 1 << 20;
/// Most bytes one page may span with its overflow pages: the largest version raftkv takes
/// (`snapshot::MAX_VERSION_BYTES`) with room for its key and the page's header. A page is
/// read whole, so this bounds what one read allocates, whatever the file's size.
pub const MAX_PAGE_SPAN: u64 = (crate::snapshot::MAX_VERSION_BYTES as u64) + (2 << 20);

fn corrupt(what: String) -> SnapshotError {
    SnapshotError::Corrupt(format!("bbolt: {what}"))
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// FNV-1a, 64 bits (the meta page's checksum).
pub(super) fn fnv64a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The fields of a valid meta page that reading needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Meta {
    page_size: u32,
    root: u64,
    high_water: u64,
    txid: u64,
}

/// Parses the meta of a page starting at `page[0]`, as bbolt validates it: magic, version
/// and (when not zero) the checksum.
fn parse_meta(page: &[u8]) -> Option<Meta> {
    let m = page.get(PAGE_HEADER..PAGE_HEADER + META_SUMMED + 8)?;
    let checksum = u64_at(m, META_SUMMED);
    if u32_at(m, 0) != MAGIC
        || u32_at(m, 4) != VERSION
        || (checksum != 0 && checksum != fnv64a(&m[..META_SUMMED]))
    {
        return None;
    }
    Some(Meta {
        page_size: u32_at(m, 8),
        root: u64_at(m, 16),
        high_water: u64_at(m, 40),
        txid: u64_at(m, 48),
    })
}

/// Whether the file at `path` starts like a bbolt file: page 0, flagged a meta page, with
/// bbolt's magic and version. (A raftkv snapshot starts with `RKVSNAP1`, never page id 0.)
pub fn looks_like_bolt(path: &Path) -> std::io::Result<bool> {
    let file = File::open(path)?;
    let mut head = [0u8; PAGE_HEADER + 8];
    Ok(file.read_exact_at(&mut head, 0).is_ok()
        && u64_at(&head, 0) == 0
        && u16_at(&head, 8) & META_PAGE != 0
        && u32_at(&head, PAGE_HEADER) == MAGIC
        && u32_at(&head, PAGE_HEADER + 4) == VERSION)
}

/// An open bbolt file.
#[derive(Debug)]
pub struct Bolt {
    file: File,
    meta: Meta,
    page_size: u64,
}

/// One key of a bucket.
#[derive(Debug)]
pub struct Entry<'a> {
    /// The key.
    pub key: &'a [u8],
    /// The value (empty for a nested bucket).
    pub value: &'a [u8],
    /// Where the value starts in the file (see [`Bolt::read_at`]).
    pub value_offset: u64,
    /// Whether this key names a nested bucket rather than holding a value.
    pub is_bucket: bool,
}

/// Where a bucket's tree is.
#[derive(Debug, Clone)]
enum Root {
    Page(u64),
    /// An inline bucket: its one leaf page, and where that page is in the file.
    Inline(Vec<u8>, u64),
}

/// A top-level bucket.
#[derive(Debug, Clone)]
pub struct Bucket {
    /// Its name.
    pub name: Vec<u8>,
    root: Root,
}

/// Which pages a walk has reached (first page → one past its last overflow page): each
/// page may be reached once. Its size follows the pages read, not what the file claims.
#[derive(Debug, Default)]
pub struct Reached(std::collections::BTreeMap<u64, u64>);

impl Reached {
    fn mark(&mut self, first: u64, count: u64) -> Result<(), SnapshotError> {
        let end = first + count;
        // Spans never overlap, so only the last one starting before `end` can.
        if let Some((_, &e)) = self.0.range(..end).next_back()
            && e > first
        {
            return Err(corrupt(format!("page {first}: multiple references")));
        }
        self.0.insert(first, end);
        Ok(())
    }
}

impl Bolt {
    /// Opens a bbolt file: picks the valid meta page with the higher transaction id, as
    /// bbolt does, and checks that every page up to its high-water mark is in the file.
    pub fn open(path: &Path) -> Result<Self, SnapshotError> {
        let file = File::open(path)?;
        let len = file.metadata()?.len();
        let mut first = vec![0u8; PAGE_HEADER + META_SUMMED + 8];
        file.read_exact_at(&mut first, 0)
            .map_err(|_| SnapshotError::NotASnapshot)?;
        if u32_at(&first, PAGE_HEADER) != MAGIC {
            return Err(SnapshotError::NotASnapshot);
        }
        let meta0 = parse_meta(&first);
        // Without a valid first meta, the second is looked for at bbolt's default size.
        let second_at = meta0.map_or(4096, |m| u64::from(m.page_size));
        let mut second = vec![0u8; first.len()];
        let meta1 = file
            .read_exact_at(&mut second, second_at)
            .ok()
            .and_then(|()| parse_meta(&second));
        let meta = match (meta0, meta1) {
            (Some(a), Some(b)) => {
                if b.txid > a.txid {
                    b
                } else {
                    a
                }
            }
            (Some(m), None) | (None, Some(m)) => m,
            (None, None) => return Err(corrupt("no valid meta page".into())),
        };
        if !(MIN_PAGE_SIZE..=MAX_PAGE_SIZE).contains(&meta.page_size) {
            return Err(corrupt(format!("page size {}", meta.page_size)));
        }
        let page_size = u64::from(meta.page_size);
        if meta.high_water < 3 || meta.high_water.saturating_mul(page_size) > len {
            return Err(corrupt(format!(
                "high-water mark {} pages past the file's {len} bytes",
                meta.high_water
            )));
        }
        if meta.root < 2 || meta.root >= meta.high_water {
            return Err(corrupt(format!("root page {} out of bounds", meta.root)));
        }
        Ok(Self {
            file,
            meta,
            page_size,
        })
    }

    /// bbolt's `Tx.Size`: the bytes up to the high-water mark.
    pub fn size(&self) -> u64 {
        self.meta.high_water * self.page_size
    }

    /// A fresh record of reached pages, for one walk of the whole file.
    pub fn reached(&self) -> Reached {
        Reached::default()
    }

    /// Reads `len` bytes at `offset` (a value found by a walk).
    pub fn read_at(&self, offset: u64, len: usize) -> Result<Vec<u8>, SnapshotError> {
        if offset.saturating_add(len as u64) > self.size() {
            return Err(corrupt(format!("{len} bytes at {offset} past the data")));
        }
        let mut buf = vec![0u8; len];
        self.file.read_exact_at(&mut buf, offset)?;
        Ok(buf)
    }

    /// Reads page `id` and its overflow pages, marking them reached.
    fn page(&self, id: u64, reached: &mut Reached) -> Result<Vec<u8>, SnapshotError> {
        if id < 2 || id >= self.meta.high_water {
            return Err(corrupt(format!("page {id}: out of bounds")));
        }
        let mut header = [0u8; PAGE_HEADER];
        self.file.read_exact_at(&mut header, id * self.page_size)?;
        if u64_at(&header, 0) != id {
            return Err(corrupt(format!(
                "page {id}: header names page {}",
                u64_at(&header, 0)
            )));
        }
        let pages = u64::from(u32_at(&header, 12)) + 1;
        if id + pages > self.meta.high_water {
            return Err(corrupt(format!(
                "page {id}: overflow past the high-water mark"
            )));
        }
        if pages * self.page_size > MAX_PAGE_SPAN {
            return Err(corrupt(format!("page {id}: {pages} pages long")));
        }
        reached.mark(id, pages)?;
        self.read_at(id * self.page_size, (pages * self.page_size) as usize)
    }

    /// The top-level buckets, in name order.
    pub fn buckets(&self, reached: &mut Reached) -> Result<Vec<Bucket>, SnapshotError> {
        let mut out = Vec::new();
        self.walk(&Root::Page(self.meta.root), 0, reached, &mut |e: Entry<
            '_,
        >| {
            if !e.is_bucket {
                return Err(corrupt("a value outside every bucket".into()));
            }
            // The value holds the bucket header, so `Entry::value` is not empty here.
            out.push(Bucket {
                name: e.key.to_vec(),
                root: bucket_root(e.value, e.value_offset)?,
            });
            Ok(())
        })?;
        Ok(out)
    }

    /// Calls `f` on each key of `bucket` in order (keys strictly ascending, or an error).
    pub fn for_each(
        &self,
        bucket: &Bucket,
        reached: &mut Reached,
        f: &mut dyn FnMut(Entry<'_>) -> Result<(), SnapshotError>,
    ) -> Result<(), SnapshotError> {
        let mut last: Option<Vec<u8>> = None;
        self.walk(&bucket.root, 0, reached, &mut |e: Entry<'_>| {
            if last.as_deref().is_some_and(|l| l >= e.key) {
                return Err(corrupt("keys out of order".into()));
            }
            last = Some(e.key.to_vec());
            let e = if e.is_bucket {
                Entry { value: &[], ..e }
            } else {
                e
            };
            f(e)
        })
    }

    fn walk(
        &self,
        root: &Root,
        depth: usize,
        reached: &mut Reached,
        f: &mut dyn FnMut(Entry<'_>) -> Result<(), SnapshotError>,
    ) -> Result<(), SnapshotError> {
        if depth >= MAX_DEPTH {
            return Err(corrupt("tree too deep".into()));
        }
        let (page, base, inline) = match root {
            Root::Page(id) => (self.page(*id, reached)?, id * self.page_size, false),
            Root::Inline(page, at) => (page.clone(), *at, true),
        };
        let flags = u16_at(&page, 8);
        let count = usize::from(u16_at(&page, 10));
        // bbolt reads a page as a branch only when it is not flagged a leaf.
        let is_branch = flags & BRANCH_PAGE != 0 && flags & LEAF_PAGE == 0;
        if PAGE_HEADER + count * ELEMENT > page.len() {
            return Err(corrupt(format!(
                "page at {base}: {count} elements overflow it"
            )));
        }
        if is_branch && !inline {
            if count == 0 {
                return Err(corrupt(format!("page at {base}: empty branch")));
            }
            let mut next = (PAGE_HEADER + count * ELEMENT) as u64;
            for i in 0..count {
                let elem = PAGE_HEADER + i * ELEMENT;
                let key_at = elem as u64 + u64::from(u32_at(&page, elem));
                let end = key_at + u64::from(u32_at(&page, elem + 4));
                if key_at < next || end > page.len() as u64 {
                    return Err(corrupt(format!("page at {base}: element {i} misplaced")));
                }
                next = end;
                let child = u64_at(&page, elem + 8);
                self.walk(&Root::Page(child), depth + 1, reached, f)?;
            }
            return Ok(());
        }
        if flags & LEAF_PAGE == 0 {
            return Err(corrupt(format!("page at {base}: invalid type {flags:#x}")));
        }
        // bbolt lays each element's key and value out after the element table, in element
        // order, end to end (`node.write`): requiring that keeps a walk's work and what it
        // hands out within the page, where overlapping elements could repeat it many times.
        let mut next = (PAGE_HEADER + count * ELEMENT) as u64;
        for i in 0..count {
            let elem = PAGE_HEADER + i * ELEMENT;
            let flags = u32_at(&page, elem);
            let key_at = elem as u64 + u64::from(u32_at(&page, elem + 4));
            let value_at = key_at + u64::from(u32_at(&page, elem + 8));
            let end = value_at + u64::from(u32_at(&page, elem + 12));
            if end > page.len() as u64 {
                return Err(corrupt(format!(
                    "page at {base}: element {i} past the page"
                )));
            }
            if key_at < next {
                return Err(corrupt(format!("page at {base}: element {i} misplaced")));
            }
            next = end;
            let (key_at, value_at, end) = (key_at as usize, value_at as usize, end as usize);
            let entry = Entry {
                key: &page[key_at..value_at],
                value: &page[value_at..end],
                value_offset: base + value_at as u64,
                is_bucket: flags & BUCKET_LEAF != 0,
            };
            f(entry)?;
        }
        Ok(())
    }
}

/// The tree of the bucket whose header is `value` (at `offset` in the file).
fn bucket_root(value: &[u8], offset: u64) -> Result<Root, SnapshotError> {
    if value.len() < 16 {
        return Err(corrupt("short bucket header".into()));
    }
    match u64_at(value, 0) {
        0 if value.len() < 16 + PAGE_HEADER => Err(corrupt("short inline bucket".into())),
        0 => Ok(Root::Inline(value[16..].to_vec(), offset + 16)),
        root => Ok(Root::Page(root)),
    }
}
