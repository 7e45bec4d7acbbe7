//! The newest revisions' events, held in memory while watchers are registered, so that a
//! watcher moved aside for a moment (its stream's queue was full) catches up from here
//! rather than from the store's history, which costs an index read and a record lookup per
//! change. etcd keeps a moved-aside watcher's pending events in memory for the same reason.
//!
//! The events are the ones the store hands the hub as each write is applied, so a read here
//! returns what [`MvccStore::history`](raftkv_storage::MvccStore::history) would for the
//! same revisions (a test compares the two); revisions no longer held are read from the
//! store as before.

use std::collections::VecDeque;
use std::sync::Arc;

use raftkv_proto::mvccpb::Event;
use raftkv_storage::mvcc::{HistoryBatch, HistoryBatcher, HistoryLimits};

/// Revisions held at most.
const RECENT_REVISIONS: usize = 65_536;
/// Event bytes (counted as the stream budget counts them) held at most.
const RECENT_BYTES: usize = 16 << 20;
/// Revisions one read copies out under the lock at most (the rest waits for the next read).
const READ_REVISIONS: usize = 4096;

/// Events of the contiguous revisions `first .. first + len`, oldest first.
pub(crate) struct Recent {
    revisions: VecDeque<Arc<[Event]>>,
    first: i64,
    bytes: usize,
}

/// Revisions copied out of [`Recent`]: the events of `first`, `first + 1`, ….
pub(crate) struct RecentSlice {
    first: i64,
    revisions: Vec<Arc<[Event]>>,
}

impl Recent {
    /// Holds nothing; the next revision expected is `next`.
    pub(crate) fn new(next: i64) -> Self {
        Self {
            revisions: VecDeque::new(),
            first: next,
            bytes: 0,
        }
    }

    /// Forgets everything; the next revision expected is `next`.
    pub(crate) fn clear(&mut self, next: i64) {
        self.revisions.clear();
        self.first = next;
        self.bytes = 0;
    }

    /// Whether anything is held.
    pub(crate) fn is_empty(&self) -> bool {
        self.revisions.is_empty()
    }

    /// The revision after the newest held (or the one expected next).
    fn end(&self) -> i64 {
        self.first + self.revisions.len() as i64
    }

    /// Takes revision `rev`'s events. A revision that does not follow the newest held
    /// starts over from it (nothing in between is claimed).
    pub(crate) fn push(&mut self, rev: i64, events: &[Event]) {
        if rev != self.end() {
            self.clear(rev);
        }
        self.bytes += super::hub::event_bytes(events);
        self.revisions.push_back(events.into());
        while self.revisions.len() > RECENT_REVISIONS || self.bytes > RECENT_BYTES {
            let Some(oldest) = self.revisions.pop_front() else {
                break;
            };
            self.bytes -= super::hub::event_bytes(&oldest);
            self.first += 1;
        }
    }

    /// The held revisions from `from` up to `to` (at most [`READ_REVISIONS`] of them), or
    /// `None` unless every revision from `from` to `to` is held.
    pub(crate) fn slice(&self, from: i64, to: i64) -> Option<RecentSlice> {
        if from < self.first || from > to || to >= self.end() {
            return None;
        }
        let start = (from - self.first) as usize;
        let count = ((to - from + 1) as usize).min(READ_REVISIONS);
        Some(RecentSlice {
            first: from,
            revisions: self
                .revisions
                .range(start..start + count)
                .cloned()
                .collect(),
        })
    }
}

impl RecentSlice {
    /// The events of keys `wanted` accepts, within `limits`, cut as the store's history
    /// read cuts them (the same [`HistoryBatcher`]).
    pub(crate) fn batch(
        &self,
        limits: HistoryLimits,
        wanted: &dyn Fn(&[u8]) -> bool,
    ) -> HistoryBatch {
        let mut batcher = HistoryBatcher::new(limits, self.first + self.revisions.len() as i64);
        for (i, events) in self.revisions.iter().enumerate() {
            let rev = self.first + i as i64;
            for event in events.iter() {
                if !batcher.admits(rev) {
                    return batcher.finish();
                }
                if event.kv.as_ref().is_some_and(|kv| wanted(&kv.key)) {
                    batcher.push(rev, event.clone());
                }
            }
        }
        batcher.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use raftkv_proto::etcdserverpb::request_op::Request;
    use raftkv_proto::etcdserverpb::{DeleteRangeRequest, PutRequest, RequestOp, TxnRequest};
    use raftkv_proto::raftkvpb::{Command, command};
    use raftkv_storage::mvcc::WatchSink;
    use raftkv_storage::{AppliedState, MvccConfig, MvccStore};
    use std::sync::Mutex;

    type KeyFilter<'a> = &'a dyn Fn(&[u8]) -> bool;

    /// Hands every applied write to a [`Recent`], as the hub does.
    struct Feed(Mutex<Recent>);

    impl WatchSink for Feed {
        fn applied(&self, revision: i64, events: &[Event]) {
            self.0.lock().unwrap().push(revision, events);
        }
        fn replaced(&self, revision: i64) {
            self.0.lock().unwrap().clear(revision + 1);
        }
    }

    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
    }

    fn key(i: u64) -> Bytes {
        Bytes::from(format!("k{i:02}"))
    }

    fn put(k: Bytes, v: &str) -> RequestOp {
        RequestOp {
            request: Some(Request::RequestPut(PutRequest {
                key: k,
                value: Bytes::copy_from_slice(v.as_bytes()),
                ..Default::default()
            })),
        }
    }

    /// Random puts, deletes and multi-key txns; then every read of the held revisions, with
    /// several key filters and tight limits, equals the store's own history read.
    #[test]
    fn reads_equal_the_stores_history() {
        let dir = tempfile::tempdir().unwrap();
        let store = MvccStore::open(dir.path(), &MvccConfig::default()).unwrap();
        let feed = Arc::new(Feed(Mutex::new(Recent::new(2))));
        store.set_watch_sink(feed.clone());
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for i in 0..400 {
            let op = match rng.below(4) {
                0 => command::Op::DeleteRange(DeleteRangeRequest {
                    key: key(rng.below(20)),
                    range_end: key(rng.below(20) + 5),
                    ..Default::default()
                }),
                1 => command::Op::Txn(TxnRequest {
                    success: (0..1 + rng.below(4))
                        .map(|_| put(key(rng.below(20)), &"x".repeat(rng.below(40) as usize)))
                        .collect(),
                    ..Default::default()
                }),
                _ => command::Op::Put(PutRequest {
                    key: key(rng.below(20)),
                    value: Bytes::from(format!("v{i}")),
                    ..Default::default()
                }),
            };
            let cmd = Command {
                op: Some(op),
                ..Default::default()
            };
            store.apply(&cmd, &AppliedState::default()).unwrap();
        }
        let recent = feed.0.lock().unwrap();
        let top = store.revision();
        assert_eq!(recent.end(), top + 1, "every revision was handed on");
        assert!(top > 300, "most writes changed something: {top}");
        let filters: [KeyFilter; 3] = [&|_| true, &|k| k == b"k07", &|k| {
            (b"k03".as_slice()..b"k11".as_slice()).contains(&k)
        }];
        for _ in 0..300 {
            let from = 2 + rng.below((top - 1) as u64) as i64;
            let to = from + rng.below((top - from + 1) as u64) as i64;
            let limits = HistoryLimits {
                revisions: 1 + rng.below(30) as usize,
                bytes: 1 + rng.below(2000) as usize,
            };
            for wanted in filters {
                let ours = recent.slice(from, to).expect("held").batch(limits, wanted);
                let theirs = store.history(from, to, limits, &mut |k| wanted(k)).unwrap();
                assert_eq!(ours.next, theirs.next, "{from}..={to} {limits:?}");
                assert_eq!(ours.events, theirs.events, "{from}..={to} {limits:?}");
            }
        }
    }

    #[test]
    fn holds_only_contiguous_revisions_within_its_bounds() {
        let event = |rev: i64, len: usize| Event {
            kv: Some(raftkv_proto::mvccpb::KeyValue {
                key: Bytes::from_static(b"k"),
                mod_revision: rev,
                value: Bytes::from(vec![b'v'; len]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut recent = Recent::new(5);
        assert!(recent.slice(5, 5).is_none(), "nothing held yet");
        for rev in 5..10 {
            recent.push(rev, &[event(rev, 10)]);
        }
        assert_eq!(recent.slice(5, 9).unwrap().revisions.len(), 5);
        assert!(recent.slice(4, 9).is_none(), "below the oldest held");
        assert!(recent.slice(6, 10).is_none(), "past the newest held");
        // A gap starts over: 5..=9 are no longer claimed.
        recent.push(12, &[event(12, 10)]);
        assert!(recent.slice(9, 12).is_none());
        assert_eq!(recent.slice(12, 12).unwrap().revisions.len(), 1);
        // The byte bound drops the oldest.
        let big = RECENT_BYTES / 4;
        for rev in 13..20 {
            recent.push(rev, &[event(rev, big)]);
        }
        assert!(recent.bytes <= RECENT_BYTES);
        assert!(recent.slice(13, 19).is_none());
        assert_eq!(recent.slice(17, 19).unwrap().revisions.len(), 3);
        // A long read is cut at READ_REVISIONS revisions; the batch then ends there.
        let mut recent = Recent::new(1);
        for rev in 1..=(READ_REVISIONS as i64 + 10) {
            recent.push(rev, &[event(rev, 1)]);
        }
        let slice = recent.slice(1, READ_REVISIONS as i64 + 10).unwrap();
        let limits = HistoryLimits {
            revisions: usize::MAX,
            bytes: usize::MAX,
        };
        let batch = slice.batch(limits, &|_| true);
        assert_eq!(batch.events.len(), READ_REVISIONS);
        assert_eq!(batch.next, READ_REVISIONS as i64 + 1);
    }
}
