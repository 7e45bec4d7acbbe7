//! Reads: the keys live at a revision in a key range, and etcd's `Range` on top of them.

use std::collections::BTreeMap;

use bytes::Bytes;
use raftkv_proto::etcdserverpb::RangeRequest;
use raftkv_proto::etcdserverpb::RangeResponse;
use raftkv_proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use raftkv_proto::mvccpb::KeyValue;

use super::MvccStore;
use super::encoding::{
    META_SPACE, after_versions, decode_parts, decode_prefix, lower_bound, split_record_key,
};
use crate::error::MvccError;

/// After skipping this many old versions of one key, seek past them instead of stepping.
const RESEEK_AFTER: usize = 16;

/// The upper end of a key range, from etcd's `range_end` conventions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RangeEnd {
    /// Empty `range_end`: the key alone.
    Key,
    /// `range_end` = `"\0"`: every key `>=` the key.
    Unbounded,
    /// Every key in `[key, end)`.
    Below(Vec<u8>),
}

impl RangeEnd {
    /// Decodes a request's `range_end`.
    pub fn from_request(range_end: &[u8]) -> Self {
        match range_end {
            [] => RangeEnd::Key,
            [0] => RangeEnd::Unbounded,
            end => RangeEnd::Below(end.to_vec()),
        }
    }

    /// Whether `candidate` lies in the range that starts at `key`.
    pub fn contains(&self, key: &[u8], candidate: &[u8]) -> bool {
        match self {
            RangeEnd::Key => candidate == key,
            RangeEnd::Unbounded => candidate >= key,
            RangeEnd::Below(end) => candidate >= key && candidate < end.as_slice(),
        }
    }
}

/// Pending writes of a transaction, at its write revision: `None` marks a delete.
pub(crate) type Overlay = BTreeMap<Vec<u8>, Option<KeyValue>>;

impl MvccStore {
    /// Calls `visit` with every key live at revision `rev` in the range, in ascending key
    /// order, until it returns `false`. Values are left empty unless `with_values`.
    ///
    /// `Err(Compacted)` if `rev` is compacted once it has read (what it visited is then to
    /// be dropped): reads that do not hold the writer lock run beside compaction, and one
    /// past `rev` meanwhile may have removed versions from under the scan, which then found
    /// an older version or none. Compaction stores its revision before it removes
    /// anything, so that shows here (`compacted_after_read`). Under the writer lock (a
    /// write's reads, at the current revision) it never fires.
    pub(crate) fn scan(
        &self,
        key: &[u8],
        end: &RangeEnd,
        rev: i64,
        with_values: bool,
        visit: &mut dyn FnMut(KeyValue) -> bool,
    ) -> Result<(), MvccError> {
        let start = lower_bound(key);
        let stop = match end {
            RangeEnd::Key => after_versions(&start),
            RangeEnd::Unbounded => vec![META_SPACE],
            RangeEnd::Below(end) if end.as_slice() <= key => return Ok(()),
            RangeEnd::Below(end) => lower_bound(end),
        };
        let mut iter = self.tree().range(start..stop.clone());
        // Encoded prefix of the key whose visible version was already found.
        let mut settled: Vec<u8> = Vec::new();
        let mut skipped = 0;
        while let Some(item) = iter.next() {
            let (raw_key, raw_value) = item?;
            let (prefix, version_rev) = split_record_key(&raw_key)?;
            if !settled.is_empty() && settled == prefix {
                skipped += 1;
                if skipped > RESEEK_AFTER {
                    iter = self.tree().range(after_versions(prefix)..stop.clone());
                    skipped = 0;
                }
                continue;
            }
            if version_rev > rev {
                continue; // written after the revision we read at
            }
            settled.clear();
            settled.extend_from_slice(prefix);
            skipped = 0;
            if let Some((create_revision, version, lease, stored)) = decode_parts(&raw_value)? {
                let key = decode_prefix(prefix)?;
                let value = if with_values {
                    match self.load_value(stored, &key, version_rev) {
                        Ok(value) => value,
                        // A compaction passed the revision read at, and the segment of a
                        // version it dropped went meanwhile: refused as compacted, as the
                        // read would be below.
                        Err(_) if rev < self.compacted_after_read() => {
                            return Err(MvccError::Compacted);
                        }
                        Err(e) => return Err(e),
                    }
                } else {
                    Vec::new()
                };
                let kv = KeyValue {
                    key: Bytes::from(key),
                    create_revision,
                    mod_revision: version_rev,
                    version,
                    value: Bytes::from(value),
                    lease,
                };
                if !visit(kv) {
                    break;
                }
            }
        }
        if rev < self.compacted_after_read() {
            return Err(MvccError::Compacted);
        }
        Ok(())
    }

    /// The latest live version of `key` at revision `rev`.
    pub(crate) fn get_at(&self, key: &[u8], rev: i64) -> Result<Option<KeyValue>, MvccError> {
        self.latest_at(key, rev, true)
    }

    /// The same without its value (left empty): what a put carries over.
    pub(crate) fn get_meta_at(&self, key: &[u8], rev: i64) -> Result<Option<KeyValue>, MvccError> {
        self.latest_at(key, rev, false)
    }

    fn latest_at(
        &self,
        key: &[u8],
        rev: i64,
        with_values: bool,
    ) -> Result<Option<KeyValue>, MvccError> {
        let mut found = None;
        self.scan(key, &RangeEnd::Key, rev, with_values, &mut |kv| {
            found = Some(kv);
            false
        })?;
        Ok(found)
    }

    /// etcd's `Range` at the current revision.
    pub fn range(&self, req: &RangeRequest) -> Result<RangeResponse, MvccError> {
        self.counts.ranges.inc();
        if req.revision > 0 {
            // A compaction past it meanwhile refuses it (`scan`).
            self.consistent(|| self.range_with(req, self.revision(), None))
        } else {
            self.read_now(|rev| self.range_with(req, rev, None))
        }
    }

    /// `Range` as of store revision `current`, seeing a transaction's pending writes.
    pub(crate) fn range_with(
        &self,
        req: &RangeRequest,
        current: i64,
        overlay: Option<&Overlay>,
    ) -> Result<RangeResponse, MvccError> {
        let rev = if req.revision <= 0 {
            current
        } else {
            req.revision
        };
        if rev > current {
            return Err(MvccError::FutureRevision);
        }
        if rev < self.compacted_revision() {
            return Err(MvccError::Compacted);
        }
        let end = RangeEnd::from_request(&req.range_end);
        let sort_order = SortOrder::try_from(req.sort_order).unwrap_or(SortOrder::None);
        let sort_target = SortTarget::try_from(req.sort_target).unwrap_or(SortTarget::Key);
        let filtered = req.min_mod_revision != 0
            || req.max_mod_revision != 0
            || req.min_create_revision != 0
            || req.max_create_revision != 0;
        // As etcd: fetch everything when results are sorted or filtered afterwards, else one
        // more than the limit so that `more` can be told.
        let fetch = if sort_order != SortOrder::None || filtered || req.limit <= 0 {
            usize::MAX
        } else {
            usize::try_from(req.limit)
                .unwrap_or(usize::MAX)
                .saturating_add(1)
        };
        let with_values = !req.keys_only && !req.count_only;

        let mut kvs = Vec::new();
        let mut count = 0i64;
        match overlay.filter(|o| !o.is_empty() && req.revision <= 0) {
            None => self.scan(&req.key, &end, rev, with_values, &mut |kv| {
                count += 1;
                if !req.count_only && kvs.len() < fetch {
                    kvs.push(kv);
                }
                true
            })?,
            Some(overlay) => {
                let mut merged: BTreeMap<Bytes, KeyValue> = BTreeMap::new();
                self.scan(&req.key, &end, rev, with_values, &mut |kv| {
                    merged.insert(kv.key.clone(), kv);
                    true
                })?;
                for (key, change) in overlay.iter() {
                    if !end.contains(&req.key, key) {
                        continue;
                    }
                    match change {
                        Some(kv) => {
                            let mut kv = kv.clone();
                            if !with_values {
                                kv.value = Bytes::new();
                            }
                            merged.insert(kv.key.clone(), kv);
                        }
                        None => {
                            merged.remove(key.as_slice());
                        }
                    }
                }
                count = merged.len() as i64;
                if !req.count_only {
                    kvs = merged.into_values().take(fetch).collect();
                }
            }
        }

        if filtered {
            kvs.retain(|kv| {
                (req.max_mod_revision == 0 || kv.mod_revision <= req.max_mod_revision)
                    && (req.min_mod_revision == 0 || kv.mod_revision >= req.min_mod_revision)
                    && (req.max_create_revision == 0
                        || kv.create_revision <= req.max_create_revision)
                    && (req.min_create_revision == 0
                        || kv.create_revision >= req.min_create_revision)
            });
        }
        // A target other than KEY with no order means ascending (results come key-sorted).
        let order = match (sort_order, sort_target) {
            (SortOrder::None, SortTarget::Key) => SortOrder::None,
            (SortOrder::None, _) => SortOrder::Ascend,
            (order, _) => order,
        };
        if order != SortOrder::None {
            sort_kvs(&mut kvs, sort_target, order == SortOrder::Descend);
        }
        let mut more = false;
        if req.limit > 0 && kvs.len() as i64 > req.limit {
            kvs.truncate(req.limit as usize);
            more = true;
        }
        Ok(RangeResponse {
            header: Self::header(current),
            kvs,
            more,
            count,
        })
    }
}

/// Stable sort, so equal targets stay in key order.
fn sort_kvs(kvs: &mut [KeyValue], target: SortTarget, descending: bool) {
    let cmp = |a: &KeyValue, b: &KeyValue| match target {
        SortTarget::Key => a.key.cmp(&b.key),
        SortTarget::Version => a.version.cmp(&b.version),
        SortTarget::Create => a.create_revision.cmp(&b.create_revision),
        SortTarget::Mod => a.mod_revision.cmp(&b.mod_revision),
        SortTarget::Value => a.value.cmp(&b.value),
    };
    if descending {
        kvs.sort_by(|a, b| cmp(b, a));
    } else {
        kvs.sort_by(cmp);
    }
}
