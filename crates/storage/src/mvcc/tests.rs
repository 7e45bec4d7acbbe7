//! MVCC rules, one test per rule. Expected values were checked against a real etcd 3.4.23
//! (Debian `etcd-server`) where noted "etcd:", with the etcdctl session that shows them.

use std::sync::Mutex;

use bytes::Bytes;
use proptest::prelude::*;
use raftkv_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use raftkv_proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use raftkv_proto::etcdserverpb::request_op::Request;
use raftkv_proto::etcdserverpb::response_op::Response;
use raftkv_proto::etcdserverpb::{
    CompactionRequest, Compare, DeleteRangeRequest, PutRequest, RangeRequest, RangeResponse,
    RequestOp, TxnRequest, TxnResponse,
};
use raftkv_proto::mvccpb::KeyValue;
use raftkv_proto::raftkvpb::{Command, CommandResponse, command, command_response};

use super::validate::{DEFAULT_MAX_TXN_OPS, check_put, check_txn};
use super::*;

struct Fixture {
    store: MvccStore,
    _dir: tempfile::TempDir,
}

fn open() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = MvccStore::open(dir.path(), &MvccConfig::default()).unwrap();
    Fixture { store, _dir: dir }
}

fn cmd(op: command::Op) -> Command {
    Command {
        op: Some(op),
        ..Default::default()
    }
}

impl Fixture {
    /// Applies `op` as a run of one entry, and records its point as the value log's syncer
    /// would shortly after (`apply` records it at once only when no value is unsynced;
    /// `record_applied` syncs them). Tests of the lagging point use the store directly.
    /// A compaction's physical deletes run to the end before it returns, as the
    /// compactor thread would run them shortly after (tests of the batches step them).
    fn apply(&self, op: command::Op) -> Result<command_response::Op, MvccError> {
        let compaction = matches!(op, command::Op::Compaction(_));
        let r = self.store.apply(&cmd(op), &AppliedState::default());
        self.store.record_applied().unwrap();
        if compaction {
            self.store.finish_compaction().unwrap();
        }
        Ok(r?.op.unwrap())
    }

    /// Applies a compaction at `rev` and leaves its physical deletes to be stepped.
    fn compact_later(&self, rev: i64) {
        let op = command::Op::Compaction(CompactionRequest {
            revision: rev,
            physical: false,
        });
        self.store
            .apply(&cmd(op), &AppliedState::default())
            .unwrap();
        self.store.record_applied().unwrap();
    }

    fn put(&self, key: &str, value: &str) -> i64 {
        match self.apply(command::Op::Put(put_req(key, value))).unwrap() {
            command_response::Op::Put(r) => r.header.unwrap().revision,
            other => panic!("{other:?}"),
        }
    }

    fn put_with(
        &self,
        req: PutRequest,
    ) -> Result<raftkv_proto::etcdserverpb::PutResponse, MvccError> {
        match self.apply(command::Op::Put(req))? {
            command_response::Op::Put(r) => Ok(r),
            other => panic!("{other:?}"),
        }
    }

    fn del(
        &self,
        key: &str,
        end: &[u8],
        prev_kv: bool,
    ) -> raftkv_proto::etcdserverpb::DeleteRangeResponse {
        let req = DeleteRangeRequest {
            key: b(key),
            range_end: Bytes::copy_from_slice(end),
            prev_kv,
        };
        match self.apply(command::Op::DeleteRange(req)).unwrap() {
            command_response::Op::DeleteRange(r) => r,
            other => panic!("{other:?}"),
        }
    }

    fn txn(&self, req: TxnRequest) -> TxnResponse {
        match self.apply(command::Op::Txn(req)).unwrap() {
            command_response::Op::Txn(r) => r,
            other => panic!("{other:?}"),
        }
    }

    fn compact(&self, rev: i64) -> Result<(), MvccError> {
        self.apply(command::Op::Compaction(CompactionRequest {
            revision: rev,
            physical: true,
        }))
        .map(|_| ())
    }

    fn range(&self, req: RangeRequest) -> Result<RangeResponse, MvccError> {
        self.store.range(&req)
    }

    fn get(&self, key: &str) -> Option<KeyValue> {
        self.range(RangeRequest {
            key: b(key),
            ..Default::default()
        })
        .unwrap()
        .kvs
        .pop()
    }

    fn keys(&self, req: RangeRequest) -> Vec<String> {
        self.range(req)
            .unwrap()
            .kvs
            .iter()
            .map(|kv| s(&kv.key))
            .collect()
    }
}

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn s(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn put_req(key: &str, value: &str) -> PutRequest {
    PutRequest {
        key: b(key),
        value: b(value),
        ..Default::default()
    }
}

fn prefix_end(key: &str) -> Bytes {
    let mut end = key.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Bytes::from(end);
        }
    }
    Bytes::from_static(&[0])
}

fn op_put(key: &str, value: &str) -> RequestOp {
    RequestOp {
        request: Some(Request::RequestPut(put_req(key, value))),
    }
}

fn op_get(key: &str) -> RequestOp {
    RequestOp {
        request: Some(Request::RequestRange(RangeRequest {
            key: b(key),
            ..Default::default()
        })),
    }
}

fn op_del(key: &str, end: &str) -> RequestOp {
    RequestOp {
        request: Some(Request::RequestDeleteRange(DeleteRangeRequest {
            key: b(key),
            range_end: b(end),
            prev_kv: false,
        })),
    }
}

fn op_txn(t: TxnRequest) -> RequestOp {
    RequestOp {
        request: Some(Request::RequestTxn(t)),
    }
}

fn cmp_value(key: &str, result: CompareResult, value: &str) -> Compare {
    Compare {
        result: result as i32,
        target: CompareTarget::Value as i32,
        key: b(key),
        target_union: Some(TargetUnion::Value(b(value))),
        range_end: Bytes::new(),
    }
}

fn cmp_int(key: &str, target: CompareTarget, result: CompareResult, v: i64) -> Compare {
    let target_union = match target {
        CompareTarget::Version => TargetUnion::Version(v),
        CompareTarget::Create => TargetUnion::CreateRevision(v),
        CompareTarget::Mod => TargetUnion::ModRevision(v),
        CompareTarget::Lease => TargetUnion::Lease(v),
        CompareTarget::Value => unreachable!(),
    };
    Compare {
        result: result as i32,
        target: target as i32,
        key: b(key),
        target_union: Some(target_union),
        range_end: Bytes::new(),
    }
}

#[test]
fn revisions_start_at_one_and_bump_once_per_write() {
    let f = open();
    assert_eq!(f.store.revision(), 1);
    assert_eq!(f.put("a", "1"), 2);
    assert_eq!(f.put("b", "2"), 3);
    // A delete that matches nothing changes nothing: no bump, header shows the current one.
    let r = f.del("nothing", b"", false);
    assert_eq!((r.deleted, r.header.unwrap().revision), (0, 3));
    assert_eq!(f.store.revision(), 3);
    // A multi-key write is one revision.
    let r = f.del("a", b"c", false);
    assert_eq!((r.deleted, r.header.unwrap().revision), (2, 4));
}

#[test]
fn create_mod_version_follow_etcd() {
    let f = open();
    f.put("k", "v1"); // rev 2
    f.put("k", "v2"); // rev 3
    let kv = f.get("k").unwrap();
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (2, 3, 2));
    f.del("k", b"", false); // rev 4
    assert!(f.get("k").is_none());
    f.put("k", "v3"); // rev 5: a new life, version restarts
    let kv = f.get("k").unwrap();
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (5, 5, 1));
    assert_eq!(kv.value, b("v3"));
}

#[test]
fn reads_at_old_revisions_see_history() {
    let f = open();
    f.put("k", "v1"); // 2
    f.put("k", "v2"); // 3
    f.del("k", b"", false); // 4
    f.put("k", "v3"); // 5
    let at = |rev| {
        f.range(RangeRequest {
            key: b("k"),
            revision: rev,
            ..Default::default()
        })
        .unwrap()
    };
    assert!(at(1).kvs.is_empty());
    assert_eq!(at(2).kvs[0].value, b("v1"));
    assert_eq!(at(3).kvs[0].value, b("v2"));
    assert!(at(4).kvs.is_empty());
    assert_eq!(at(5).kvs[0].value, b("v3"));
    // etcd: header.revision is the current revision, even for a read at an older one.
    assert_eq!(at(2).header.unwrap().revision, 5);
    // etcd: `get k --rev 100` -> "etcdserver: mvcc: required revision is a future revision"
    let err = f.range(RangeRequest {
        key: b("k"),
        revision: 6,
        ..Default::default()
    });
    assert!(matches!(err, Err(MvccError::FutureRevision)));
}

#[test]
fn range_end_conventions() {
    let f = open();
    for k in ["a", "ab", "abc", "b", "b\u{0}", "c"] {
        f.put(k, "x");
    }
    let r = |key: &str, end: &[u8]| {
        f.keys(RangeRequest {
            key: b(key),
            range_end: Bytes::copy_from_slice(end),
            ..Default::default()
        })
    };
    assert_eq!(r("ab", b""), ["ab"]); // empty end: the key alone
    assert_eq!(r("ab", b"b"), ["ab", "abc"]); // [key, end)
    assert_eq!(r("b", b"\0"), ["b", "b\u{0}", "c"]); // "\0": every key >= key
    assert_eq!(r("\0", b"\0"), ["a", "ab", "abc", "b", "b\u{0}", "c"]); // everything
    assert_eq!(r("a", &prefix_end("a")), ["a", "ab", "abc"]); // --prefix
    assert!(r("c", b"a").is_empty()); // end before key: nothing
}

#[test]
fn prefix_with_0xff_bytes() {
    // etcd's prefix end drops trailing 0xff bytes before incrementing: "a\xff" -> "b".
    let f = open();
    let keys: [&[u8]; 5] = [b"a", b"a\xff", b"a\xff\xff", b"a\xff\x00", b"b"];
    for k in keys {
        f.store
            .apply(
                &cmd(command::Op::Put(PutRequest {
                    key: Bytes::copy_from_slice(k),
                    ..Default::default()
                })),
                &AppliedState::default(),
            )
            .unwrap();
    }
    let got = |key: &[u8], end: &[u8]| -> Vec<Vec<u8>> {
        f.range(RangeRequest {
            key: Bytes::copy_from_slice(key),
            range_end: Bytes::copy_from_slice(end),
            ..Default::default()
        })
        .unwrap()
        .kvs
        .iter()
        .map(|kv| kv.key.to_vec())
        .collect()
    };
    // --prefix "a\xff": end "b"
    assert_eq!(
        got(b"a\xff", b"b"),
        [&b"a\xff"[..], b"a\xff\x00", b"a\xff\xff"]
    );
    // --prefix "\xff": end "\0" (every key >= "\xff")
    assert!(got(b"\xff", b"\0").is_empty());
    assert_eq!(got(b"a\xff\xff", b"\0"), [&b"a\xff\xff"[..], b"b"]);
}

#[test]
fn limit_count_more_keys_only_count_only() {
    let f = open();
    for k in ["k1", "k2", "k3", "k4"] {
        f.put(k, "v");
    }
    let all = |extra: RangeRequest| {
        f.range(RangeRequest {
            key: b("k"),
            range_end: prefix_end("k"),
            ..extra
        })
        .unwrap()
    };
    let r = all(RangeRequest {
        limit: 2,
        ..Default::default()
    });
    assert_eq!((r.kvs.len(), r.count, r.more), (2, 4, true));
    let r = all(RangeRequest {
        limit: 4,
        ..Default::default()
    });
    assert_eq!((r.kvs.len(), r.count, r.more), (4, 4, false));
    let r = all(RangeRequest {
        keys_only: true,
        ..Default::default()
    });
    assert!(
        r.kvs
            .iter()
            .all(|kv| kv.value.is_empty() && kv.version == 1)
    );
    let r = all(RangeRequest {
        count_only: true,
        ..Default::default()
    });
    assert_eq!((r.kvs.len(), r.count), (0, 4));
}

#[test]
fn sorting_and_revision_filters() {
    let f = open();
    f.put("a", "3"); // 2
    f.put("b", "1"); // 3
    f.put("c", "2"); // 4
    f.put("a", "4"); // 5: a is now version 2, mod 5
    let sorted = |order: SortOrder, target: SortTarget, limit: i64| {
        f.keys(RangeRequest {
            key: b("\0"),
            range_end: Bytes::from_static(b"\0"),
            sort_order: order as i32,
            sort_target: target as i32,
            limit,
            ..Default::default()
        })
    };
    assert_eq!(
        sorted(SortOrder::Descend, SortTarget::Key, 0),
        ["c", "b", "a"]
    );
    assert_eq!(
        sorted(SortOrder::Ascend, SortTarget::Value, 0),
        ["b", "c", "a"]
    );
    assert_eq!(
        sorted(SortOrder::Descend, SortTarget::Mod, 0),
        ["a", "c", "b"]
    );
    assert_eq!(
        sorted(SortOrder::Descend, SortTarget::Create, 0),
        ["c", "b", "a"]
    );
    // Ties keep key order: versions are (a:2, b:1, c:1).
    assert_eq!(
        sorted(SortOrder::Ascend, SortTarget::Version, 0),
        ["b", "c", "a"]
    );
    // Target other than KEY with order NONE sorts ascending (etcd: `--sort-by=MODIFY`).
    assert_eq!(sorted(SortOrder::None, SortTarget::Mod, 0), ["b", "c", "a"]);
    // Sort happens before the limit.
    assert_eq!(sorted(SortOrder::Descend, SortTarget::Key, 1), ["c"]);
    let filtered = f.range(RangeRequest {
        key: b("\0"),
        range_end: Bytes::from_static(b"\0"),
        min_mod_revision: 3,
        max_create_revision: 3,
        ..Default::default()
    });
    let r = filtered.unwrap();
    assert_eq!(
        r.kvs.iter().map(|kv| s(&kv.key)).collect::<Vec<_>>(),
        ["a", "b"]
    );
    // etcd: count is taken before the revision filters.
    assert_eq!(r.count, 3);
}

#[test]
fn put_options() {
    let f = open();
    // ignore_value / ignore_lease on a missing key: "etcdserver: key not found".
    let missing = PutRequest {
        key: b("k"),
        ignore_value: true,
        ..Default::default()
    };
    assert!(matches!(f.put_with(missing), Err(MvccError::KeyNotFound)));
    assert_eq!(f.store.revision(), 1, "a refused put changes nothing");
    f.put("k", "v1");
    let r = f
        .put_with(PutRequest {
            key: b("k"),
            ignore_value: true,
            prev_kv: true,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(r.prev_kv.unwrap().value, b("v1"));
    let kv = f.get("k").unwrap();
    assert_eq!((kv.value, kv.version), (b("v1"), 2));
    // A lease that was never granted: "requested lease not found".
    let leased = PutRequest {
        key: b("k"),
        value: b("v"),
        lease: 7,
        ..Default::default()
    };
    assert!(matches!(f.put_with(leased), Err(MvccError::LeaseNotFound)));
    // Validation before proposing.
    assert!(matches!(
        check_put(&put_req("", "v")),
        Err(MvccError::EmptyKey)
    ));
    let both = PutRequest {
        key: b("k"),
        value: b("v"),
        ignore_value: true,
        ..Default::default()
    };
    assert!(matches!(check_put(&both), Err(MvccError::ValueProvided)));
}

#[test]
fn delete_range_prev_kvs() {
    let f = open();
    f.put("p/1", "a");
    f.put("p/2", "b");
    f.put("q", "c");
    let r = f.del("p/", &prefix_end("p/"), true);
    assert_eq!(r.deleted, 2);
    assert_eq!(
        r.prev_kvs.iter().map(|kv| s(&kv.value)).collect::<Vec<_>>(),
        ["a", "b"]
    );
    assert_eq!(
        f.keys(RangeRequest {
            key: b("\0"),
            range_end: Bytes::from_static(b"\0"),
            ..Default::default()
        }),
        ["q"]
    );
}

#[test]
fn txn_reads_its_own_writes_and_stamps_every_header() {
    // etcd: `put a 1; put b 2`, then txn `value("a") = "1"` success: put a 3; get a; del b;
    // get zz  -> succeeded, every inner header {"revision":4}, the get shows mod_revision 4.
    let f = open();
    f.put("a", "1");
    f.put("b", "2");
    let r = f.txn(TxnRequest {
        compare: vec![cmp_value("a", CompareResult::Equal, "1")],
        success: vec![op_put("a", "3"), op_get("a"), op_del("b", ""), op_get("zz")],
        failure: vec![op_put("x", "1")],
    });
    assert!(r.succeeded);
    assert_eq!(r.header.unwrap().revision, 4);
    let Some(Response::ResponseRange(get_a)) = &r.responses[1].response else {
        panic!()
    };
    assert_eq!(
        (get_a.kvs[0].mod_revision, get_a.kvs[0].version, get_a.count),
        (4, 2, 1)
    );
    assert_eq!(get_a.kvs[0].value, b("3"));
    for op in &r.responses {
        let rev = match op.response.as_ref().unwrap() {
            Response::ResponseRange(x) => x.header.unwrap().revision,
            Response::ResponsePut(x) => x.header.unwrap().revision,
            Response::ResponseDeleteRange(x) => x.header.unwrap().revision,
            Response::ResponseTxn(x) => x.header.unwrap().revision,
        };
        assert_eq!(rev, 4);
    }
    assert!(f.get("b").is_none());
    assert!(f.get("x").is_none());
}

#[test]
fn txn_inner_headers_follow_the_revision_as_each_op_ran() {
    // etcd: txn with failure branch `get foo2; put y 3` at revision 12 -> the range's header
    // says 12, the put's 13, the txn's 13; a nested txn's header is empty.
    let f = open();
    f.put("a", "1"); // 2
    let r = f.txn(TxnRequest {
        compare: vec![],
        success: vec![
            op_get("a"),
            op_del("none", ""),
            op_put("b", "2"),
            op_get("a"),
            op_txn(TxnRequest::default()),
        ],
        failure: vec![],
    });
    let revs: Vec<i64> = r
        .responses
        .iter()
        .map(|op| match op.response.as_ref().unwrap() {
            Response::ResponseRange(x) => x.header.unwrap().revision,
            Response::ResponsePut(x) => x.header.unwrap().revision,
            Response::ResponseDeleteRange(x) => x.header.unwrap().revision,
            Response::ResponseTxn(x) => x.header.unwrap().revision,
        })
        .collect();
    assert_eq!(revs, [2, 2, 3, 3, 0]);
    assert_eq!(r.header.unwrap().revision, 3);
}

#[test]
fn txn_failure_branch_and_read_only_txn() {
    let f = open();
    f.put("a", "1");
    // etcd: failed compare with an empty failure branch -> header only, no bump.
    let r = f.txn(TxnRequest {
        compare: vec![cmp_value("a", CompareResult::Equal, "2")],
        success: vec![op_put("a", "x")],
        failure: vec![],
    });
    assert!(!r.succeeded && r.responses.is_empty());
    assert_eq!((r.header.unwrap().revision, f.store.revision()), (2, 2));
    let r = f.txn(TxnRequest {
        compare: vec![],
        success: vec![op_get("a")],
        failure: vec![],
    });
    assert!(r.succeeded);
    assert_eq!(f.store.revision(), 2, "read-only txn does not bump");
}

#[test]
fn compares_on_missing_keys_and_ranges() {
    let f = open();
    f.put("r/1", "x"); // 2
    f.put("r/2", "y"); // 3
    let succeeded = |cmp: Compare| {
        f.txn(TxnRequest {
            compare: vec![cmp],
            ..Default::default()
        })
        .succeeded
    };
    // Value compares on a missing key are always false, even NOT_EQUAL.
    assert!(!succeeded(cmp_value(
        "missing",
        CompareResult::NotEqual,
        "x"
    )));
    // Other targets compare against zero.
    assert!(succeeded(cmp_int(
        "missing",
        CompareTarget::Version,
        CompareResult::Equal,
        0
    )));
    assert!(succeeded(cmp_int(
        "missing",
        CompareTarget::Create,
        CompareResult::Less,
        1
    )));
    assert!(succeeded(cmp_int(
        "r/1",
        CompareTarget::Mod,
        CompareResult::Equal,
        2
    )));
    assert!(succeeded(cmp_int(
        "r/1",
        CompareTarget::Lease,
        CompareResult::Equal,
        0
    )));
    // Over a range every key must pass.
    let mut over_range = cmp_int("r/", CompareTarget::Create, CompareResult::Greater, 1);
    over_range.range_end = prefix_end("r/");
    assert!(succeeded(over_range.clone()));
    over_range.target_union = Some(TargetUnion::CreateRevision(2));
    assert!(!succeeded(over_range));
}

#[test]
fn nested_txn_compares_see_the_state_before_the_txn() {
    let f = open();
    f.put("a", "1");
    let inner = TxnRequest {
        // Sees a = "1" although the outer txn put "2" first.
        compare: vec![cmp_value("a", CompareResult::Equal, "1")],
        success: vec![op_put("inner", "then")],
        failure: vec![op_put("inner", "else")],
    };
    let r = f.txn(TxnRequest {
        compare: vec![],
        success: vec![op_put("a", "2"), op_txn(inner)],
        failure: vec![],
    });
    assert!(r.succeeded);
    assert_eq!(f.get("inner").unwrap().value, b("then"));
}

#[test]
fn txn_validation() {
    // etcd: `txn` with 129 puts -> "etcdserver: too many operations in txn request".
    let many = TxnRequest {
        success: (0..129).map(|i| op_put(&format!("k{i}"), "v")).collect(),
        ..Default::default()
    };
    assert!(matches!(
        check_txn(&many, DEFAULT_MAX_TXN_OPS),
        Err(MvccError::TooManyOps)
    ));
    let dup = TxnRequest {
        success: vec![op_put("k", "1"), op_put("k", "2")],
        ..Default::default()
    };
    assert!(matches!(check_txn(&dup, 128), Err(MvccError::DuplicateKey)));
    let put_and_delete = TxnRequest {
        success: vec![op_put("k/1", "1"), op_del("k/", "k0")],
        ..Default::default()
    };
    assert!(matches!(
        check_txn(&put_and_delete, 128),
        Err(MvccError::DuplicateKey)
    ));
    // The same key on both branches is fine, and so is the same key in both branches of a
    // nested txn.
    let branches = TxnRequest {
        success: vec![op_put("k", "1")],
        failure: vec![op_put("k", "2")],
        ..Default::default()
    };
    check_txn(&branches, 128).unwrap();
    let nested = TxnRequest {
        success: vec![op_put("k", "1")],
        failure: vec![op_put("k", "2")],
        ..Default::default()
    };
    check_txn(
        &TxnRequest {
            success: vec![op_txn(nested.clone())],
            ..Default::default()
        },
        128,
    )
    .unwrap();
    // But not a put beside a nested txn that puts the same key.
    let clash = TxnRequest {
        success: vec![op_put("k", "0"), op_txn(nested)],
        ..Default::default()
    };
    assert!(matches!(
        check_txn(&clash, 128),
        Err(MvccError::DuplicateKey)
    ));
    let empty_compare = TxnRequest {
        compare: vec![cmp_value("", CompareResult::Equal, "")],
        ..Default::default()
    };
    assert!(matches!(
        check_txn(&empty_compare, 128),
        Err(MvccError::EmptyKey)
    ));
}

/// `levels` txns nested through their success branch, the innermost holding `inner`.
fn nested(levels: usize, inner: Vec<RequestOp>) -> TxnRequest {
    let mut txn = TxnRequest {
        success: inner,
        ..Default::default()
    };
    for _ in 1..levels {
        txn = TxnRequest {
            success: vec![op_txn(txn)],
            ..Default::default()
        };
    }
    txn
}

#[test]
fn nesting_spends_the_txn_op_budget() {
    // etcd's checkTxnRequest hands a nested txn what its parent left of --max-txn-ops: with
    // 128, 128 levels of one op each pass and a 129th op does not; an empty 129th level
    // (no ops to spend) passes. Checked against etcd 3.4.23 by tests/cluster/hostile.rs.
    let put = || vec![op_put("k", "v")];
    check_txn(&nested(128, put()), DEFAULT_MAX_TXN_OPS).unwrap();
    assert!(matches!(
        check_txn(&nested(129, put()), DEFAULT_MAX_TXN_OPS),
        Err(MvccError::TooManyOps)
    ));
    check_txn(&nested(129, vec![]), DEFAULT_MAX_TXN_OPS).unwrap();
    // Two ops at the top leave 126 for the level below.
    let wide = TxnRequest {
        success: vec![op_put("a", "1"), op_txn(nested(126, put()))],
        ..Default::default()
    };
    check_txn(&wide, DEFAULT_MAX_TXN_OPS).unwrap();
    let wide = TxnRequest {
        success: vec![op_put("a", "1"), op_txn(nested(127, put()))],
        ..Default::default()
    };
    assert!(matches!(
        check_txn(&wide, DEFAULT_MAX_TXN_OPS),
        Err(MvccError::TooManyOps)
    ));
    // Whatever --max-txn-ops says, nothing deeper than the log can hold gets in.
    let limit = raftkv_proto::codec::MAX_TXN_DEPTH;
    check_txn(&nested(limit, put()), 100_000).unwrap();
    assert!(matches!(
        check_txn(&nested(limit + 1, put()), 100_000),
        Err(MvccError::TooManyOps)
    ));
    // etcd: an op with no request in it is "key not found".
    let empty_op = TxnRequest {
        success: vec![RequestOp { request: None }],
        ..Default::default()
    };
    assert!(matches!(
        check_txn(&empty_op, 128),
        Err(MvccError::KeyNotFound)
    ));
}

#[test]
fn malformed_commands_are_refusals_not_damage() {
    let f = open();
    let before = f.store.revision();
    let refused = f.store.apply(&Command::default(), &AppliedState::default());
    assert!(matches!(refused, Err(MvccError::EmptyCommand)));
    let empty_key = f.apply(command::Op::Put(put_req("", "v")));
    assert!(matches!(empty_key, Err(MvccError::EmptyKey)));
    let hole = f.apply(command::Op::Txn(TxnRequest {
        success: vec![RequestOp { request: None }],
        ..Default::default()
    }));
    assert!(matches!(hole, Err(MvccError::KeyNotFound)));
    assert_eq!(f.store.revision(), before);
}

#[test]
fn the_deepest_txn_allowed_decodes_applies_and_drops_on_a_small_stack() {
    use prost::Message;
    let limit = raftkv_proto::codec::MAX_TXN_DEPTH;
    // tokio's worker threads have 2 MiB stacks; the apply path runs on one.
    std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(move || {
            let f = open();
            let cmd = Command {
                op: Some(command::Op::Txn(nested(limit, vec![op_put("deep", "v")]))),
                ..Default::default()
            };
            let bytes = cmd.encode_to_vec();
            let back: Command = raftkv_proto::codec::decode_bounded(&bytes).unwrap();
            super::validate::check_command(&back, usize::MAX, usize::MAX).unwrap();
            let resp = f.store.apply(&back, &AppliedState::default()).unwrap();
            let resp_bytes = resp.encode_to_vec();
            let resp_back: CommandResponse =
                raftkv_proto::codec::decode_bounded(&resp_bytes).unwrap();
            assert_eq!(resp_back, resp);
            assert_eq!(f.get("deep").unwrap().value, b("v"));
            drop((back, resp, resp_back));
        })
        .unwrap()
        .join()
        .unwrap();
}

#[test]
fn compaction_rules() {
    let f = open();
    f.put("k", "v1"); // 2
    f.put("k", "v2"); // 3
    f.put("gone", "x"); // 4
    f.del("gone", b"", false); // 5
    f.put("k", "v3"); // 6
    // etcd: compact beyond the current revision -> future revision.
    assert!(matches!(f.compact(7), Err(MvccError::FutureRevision)));
    f.compact(5).unwrap();
    // etcd: compacting again at or below -> "required revision has been compacted".
    assert!(matches!(f.compact(5), Err(MvccError::Compacted)));
    assert!(matches!(f.compact(3), Err(MvccError::Compacted)));
    let at = |rev| {
        f.range(RangeRequest {
            key: b("\0"),
            range_end: Bytes::from_static(b"\0"),
            revision: rev,
            ..Default::default()
        })
    };
    assert!(matches!(at(4), Err(MvccError::Compacted)));
    // At the compacted revision itself the view is intact: k = v2 (rev 3), gone deleted.
    let r = at(5).unwrap();
    assert_eq!(
        r.kvs
            .iter()
            .map(|kv| (s(&kv.key), s(&kv.value)))
            .collect::<Vec<_>>(),
        [("k".into(), "v2".into())]
    );
    assert_eq!(f.get("k").unwrap().value, b("v3"));
    // Physically: versions 2 of k and the tombstoned key are gone, 3 and 6 of k remain.
    let records = f
        .store
        .tree()
        .scan_prefix([super::encoding::RECORD_SPACE])
        .count();
    assert_eq!(records, 2);
    assert_eq!(f.store.compacted_revision(), 5);
}

#[test]
fn state_survives_reopen_with_applied_state() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = MvccStore::open(dir.path(), &MvccConfig::default()).unwrap();
        let applied = AppliedState {
            applied: Some(b"log-7".to_vec()),
            membership: Some(b"m".to_vec()),
            index: 7,
        };
        store
            .apply(&cmd(command::Op::Put(put_req("k", "v"))), &applied)
            .unwrap();
        store
            .apply(
                &cmd(command::Op::Compaction(CompactionRequest {
                    revision: 2,
                    physical: true,
                })),
                &applied,
            )
            .unwrap();
        store.flush().unwrap();
    }
    let store = MvccStore::open(dir.path(), &MvccConfig::default()).unwrap();
    assert_eq!((store.revision(), store.compacted_revision()), (2, 2));
    let state = store.applied_state().unwrap();
    assert_eq!(state.applied.as_deref(), Some(&b"log-7"[..]));
    assert_eq!(
        store
            .range(&RangeRequest {
                key: b("k"),
                ..Default::default()
            })
            .unwrap()
            .kvs[0]
            .value,
        b("v")
    );
}

#[test]
fn many_versions_of_one_key_are_skipped_efficiently_and_correctly() {
    let f = open();
    for i in 0..100 {
        f.put("hot", &i.to_string());
        f.put(&format!("cold{i:03}"), "x");
    }
    assert_eq!(f.get("hot").unwrap().value, b("99"));
    let r = f
        .range(RangeRequest {
            key: b("\0"),
            range_end: Bytes::from_static(b"\0"),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(r.count, 101);
    let r = f
        .range(RangeRequest {
            key: b("hot"),
            revision: 50,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(r.kvs[0].value, b("24"));
}

/// A model of etcd's semantics for the property test: key -> (create, mod, version, value).
type Model = std::collections::BTreeMap<String, (i64, i64, i64, String)>;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Random puts and deletes against a plain model: every read at every past revision
    /// matches the model's state at that revision.
    #[test]
    fn matches_a_model_at_every_revision(ops in proptest::collection::vec((0u8..3, 0u8..6, 0u8..4), 1..40)) {
        let f = open();
        let mut model = Model::new();
        let mut history = vec![model.clone(), model.clone()]; // revisions 0 and 1
        let mut rev = 1;
        for (kind, key, value) in ops {
            let key = format!("k{key}");
            let value = format!("v{value}");
            if kind < 2 {
                rev += 1;
                prop_assert_eq!(f.put(&key, &value), rev);
                let entry = model.get(&key).map_or((rev, rev, 1, value.clone()), |e| (e.0, rev, e.2 + 1, value.clone()));
                model.insert(key, entry);
            } else {
                let deleted = f.del(&key, b"", false).deleted;
                let existed = model.remove(&key).is_some();
                prop_assert_eq!(deleted, existed as i64);
                if existed { rev += 1; }
            }
            while history.len() <= rev as usize { history.push(model.clone()); }
        }
        for (r, expected) in history.iter().enumerate().skip(1) {
            let got = f.range(RangeRequest { key: b("\0"), range_end: Bytes::from_static(b"\0"), revision: r as i64, ..Default::default() }).unwrap();
            let got: Model = got.kvs.iter().map(|kv| (s(&kv.key), (kv.create_revision, kv.mod_revision, kv.version, s(&kv.value)))).collect();
            prop_assert_eq!(&got, expected, "at revision {}", r);
        }
    }
}

fn applied_at(index: u8, membership: Option<&str>) -> AppliedState {
    AppliedState {
        applied: Some(vec![index]),
        membership: membership.map(|m| m.as_bytes().to_vec()),
        // The log index is not stored (only what an Authenticate entry names a token by).
        index: 0,
    }
}

/// Everything in the store, the history index as the changes it names (however grouped).
fn all_records(store: &MvccStore) -> Vec<(Vec<u8>, Vec<u8>)> {
    let tree = store.tree();
    let mut all: Vec<(Vec<u8>, Vec<u8>)> = tree
        .iter()
        .map(|r| {
            r.map(|(k, v)| (k.to_vec(), store.logical_row(&k, &v)))
                .unwrap()
        })
        .filter(|(k, _)| k[0] != super::encoding::HISTORY_SPACE)
        .collect();
    all.extend(super::history::logical_history(&tree));
    all.sort();
    all
}

#[test]
fn unrecorded_writes_are_visible_and_their_applied_state_is_reported() {
    let f = open();
    f.store
        .set_applied_state(&applied_at(1, Some("m1")))
        .unwrap();
    for (i, key) in ["a", "b", "c"].iter().enumerate() {
        let op = command::Op::Put(put_req(key, "v"));
        f.store
            .apply_unrecorded(&cmd(op), &applied_at(2 + i as u8, None))
            .unwrap();
    }
    assert_eq!(f.store.revision(), 4);
    assert_eq!(f.store.applied_state().unwrap(), applied_at(4, Some("m1")));
    let point = f.store.snapshot_point().unwrap();
    assert_eq!(
        (point.revision, point.applied),
        (4, applied_at(4, Some("m1")))
    );
    // A refused request is applied too (with no effect on the data).
    let refused = PutRequest {
        ignore_value: true,
        ..put_req("missing", "")
    };
    let err = f
        .store
        .apply_unrecorded(&cmd(command::Op::Put(refused)), &applied_at(5, None))
        .unwrap_err();
    assert!(matches!(err, MvccError::KeyNotFound), "{err:?}");
    assert_eq!(f.store.revision(), 4);
    assert_eq!(f.store.applied_state().unwrap().applied, Some(vec![5]));
}

#[test]
fn replaying_unrecorded_writes_after_a_crash_rebuilds_the_same_records() {
    // A member that crashes before `record_applied` reopens at the last recorded point; the
    // Raft log replays the same commands from there and must produce identical records.
    let dir = tempfile::tempdir().unwrap();
    let commands: Vec<Command> = vec![
        cmd(command::Op::Put(put_req("a", "1"))),
        cmd(command::Op::Put(put_req("b", "2"))),
        cmd(command::Op::DeleteRange(DeleteRangeRequest {
            key: Bytes::from_static(b"a"),
            ..Default::default()
        })),
        cmd(command::Op::Put(put_req("b", "3"))),
    ];
    let expected = {
        let reference = tempfile::tempdir().unwrap();
        let store = MvccStore::open(reference.path(), &MvccConfig::default()).unwrap();
        for (i, c) in commands.iter().enumerate() {
            store.apply(c, &applied_at(i as u8 + 1, None)).unwrap();
        }
        store.record_applied().unwrap();
        all_records(&store)
    };
    {
        let store = MvccStore::open(dir.path(), &MvccConfig::default()).unwrap();
        store.apply(&commands[0], &applied_at(1, None)).unwrap();
        store.record_applied().unwrap(); // as the syncer lets the run's end record it
        for (i, c) in commands.iter().enumerate().skip(1) {
            store
                .apply_unrecorded(c, &applied_at(i as u8 + 1, None))
                .unwrap();
        }
        store.flush().unwrap(); // the unrecorded records reached the disk, the metadata not
    }
    let store = MvccStore::open(dir.path(), &MvccConfig::default()).unwrap();
    assert_eq!(store.revision(), 2, "reopens at the recorded revision");
    assert_eq!(store.applied_state().unwrap().applied, Some(vec![1]));
    assert_eq!(
        store.get_at(b"a", 2).unwrap().unwrap().value,
        Bytes::from_static(b"1")
    );
    for (i, c) in commands.iter().enumerate().skip(1) {
        store
            .apply_unrecorded(c, &applied_at(i as u8 + 1, None))
            .unwrap();
    }
    store.record_applied().unwrap();
    assert_eq!(all_records(&store), expected);
    drop(store);
    let store = MvccStore::open(dir.path(), &MvccConfig::default()).unwrap();
    assert_eq!(store.revision(), 5);
    assert_eq!(all_records(&store), expected);
}

/// Found in review: a put with a lease that does not exist yet is refused; the same run
/// then grants the lease. A crash that kept the lease (leases load whole, whatever the
/// point) but not the run's point replayed the put with the lease there, and it succeeded:
/// the member went its own way. The grant now stores the run's point before the lease.
#[test]
fn a_grant_after_an_entry_it_would_have_changed_is_not_replayed_across() {
    use raftkv_proto::etcdserverpb::LeaseGrantRequest;
    let commands = [
        cmd(command::Op::Put(put_req("a", "1"))),
        cmd(command::Op::Put(PutRequest {
            lease: 7,
            ..put_req("b", "2")
        })),
        cmd(command::Op::LeaseGrant(LeaseGrantRequest {
            ttl: 60,
            id: 7,
        })),
    ];
    let expected = {
        let f = open();
        for (i, c) in commands.iter().enumerate() {
            let _ = f.store.apply(c, &applied_at(i as u8 + 1, None));
        }
        f.store.record_applied().unwrap();
        (all_records(&f.store), f.store.revision())
    };
    let dir = tempfile::tempdir().unwrap();
    {
        let store = MvccStore::open(dir.path(), &MvccConfig::default()).unwrap();
        store.apply(&commands[0], &applied_at(1, None)).unwrap();
        store.record_applied().unwrap(); // as the syncer lets the run's end record it
        for (i, c) in commands.iter().enumerate().skip(1) {
            let _ = store.apply_unrecorded(c, &applied_at(i as u8 + 1, None));
        }
        store.flush().unwrap(); // the lease reached the disk, the run's last point did not
    }
    let store = MvccStore::open(dir.path(), &MvccConfig::default()).unwrap();
    // Replay the log from the stored point, as Raft does.
    let from = store.applied_state().unwrap().applied.unwrap()[0] as usize;
    for (i, c) in commands.iter().enumerate().skip(from) {
        let _ = store.apply_unrecorded(c, &applied_at(i as u8 + 1, None));
    }
    store.record_applied().unwrap();
    assert_eq!((all_records(&store), store.revision()), expected);
}

/// A lease grant in a run of entries is an unrecorded write like a put (one sled batch per
/// grant made sled write out its log buffer for each). After a crash that kept the lease
/// but not the point, the replayed grant is refused and the store ends as if applied once.
#[test]
fn an_unrecorded_grant_replayed_after_a_crash_leaves_the_same_store() {
    use raftkv_proto::etcdserverpb::LeaseGrantRequest;
    let grant = cmd(command::Op::LeaseGrant(LeaseGrantRequest {
        ttl: 60,
        id: 7,
    }));
    let leased = cmd(command::Op::Put(PutRequest {
        lease: 7,
        ..put_req("b", "2")
    }));
    let commands = [cmd(command::Op::Put(put_req("a", "1"))), grant, leased];
    let expected = {
        let f = open();
        for (i, c) in commands.iter().enumerate() {
            f.store.apply(c, &applied_at(i as u8 + 1, None)).unwrap();
        }
        f.store.record_applied().unwrap();
        (all_records(&f.store), f.store.lease(7))
    };
    let dir = tempfile::tempdir().unwrap();
    {
        let store = MvccStore::open(dir.path(), &MvccConfig::default()).unwrap();
        store.apply(&commands[0], &applied_at(1, None)).unwrap();
        store
            .apply_unrecorded(&commands[1], &applied_at(2, None))
            .unwrap();
        assert!(store.point().unrecorded, "a grant in a run is not recorded");
        store.flush().unwrap(); // the lease reached the disk, the point did not
    }
    let store = MvccStore::open(dir.path(), &MvccConfig::default()).unwrap();
    assert_eq!(store.applied_state().unwrap().applied, Some(vec![1]));
    assert_eq!(
        store.lease(7),
        expected.1,
        "the lease is back from the disk"
    );
    let replayed = store.apply_unrecorded(&commands[1], &applied_at(2, None));
    assert!(
        matches!(replayed, Err(MvccError::LeaseExist)),
        "{replayed:?}"
    );
    store.apply(&commands[2], &applied_at(3, None)).unwrap();
    store.record_applied().unwrap();
    assert_eq!((all_records(&store), store.lease(7)), expected);
    assert_eq!(store.applied_state().unwrap().applied, Some(vec![3]));
}

/// A Raft snapshot's point: `persist` records what unrecorded writes left, flushes, and
/// returns that point, which a reopened store is at (the log before it may be purged).
#[test]
fn persist_records_the_unrecorded_point_and_the_store_reopens_there() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = MvccStore::open(dir.path(), &MvccConfig::default()).unwrap();
        store
            .apply(
                &cmd(command::Op::Put(put_req("a", "1"))),
                &applied_at(1, None),
            )
            .unwrap();
        for i in 2..=4u8 {
            store
                .apply_unrecorded(
                    &cmd(command::Op::Put(put_req("b", &i.to_string()))),
                    &applied_at(i, Some("m")),
                )
                .unwrap();
        }
        let pinned = store.persist().unwrap();
        assert_eq!(pinned.point.revision, 5);
        assert_eq!(pinned.point.applied.applied, Some(vec![4]));
        assert_eq!(pinned.point.applied.membership, Some(b"m".to_vec()));
        // A large value, for a blob file if sled makes one: synced along.
        store
            .apply(
                &cmd(command::Op::Put(put_req("big", &"x".repeat(1 << 20)))),
                &applied_at(5, None),
            )
            .unwrap();
        drop(pinned);
        store.persist().unwrap();
        let synced = *store.blobs_synced.lock().unwrap();
        let blobs: Vec<i64> = std::fs::read_dir(dir.path().join("blobs"))
            .map(|d| {
                d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        assert!(
            blobs.iter().all(|&lsn| lsn <= synced),
            "{blobs:?} above {synced}"
        );
    }
    let store = MvccStore::open(dir.path(), &MvccConfig::default()).unwrap();
    assert_eq!(store.revision(), 6);
    assert_eq!(store.applied_state().unwrap().applied, Some(vec![5]));
    assert_eq!(
        store.get_at(b"big", 6).unwrap().unwrap().value.len(),
        1 << 20
    );
}

#[test]
fn a_recording_write_stores_the_newest_unrecorded_state_and_keeps_membership() {
    let f = open();
    f.store
        .apply_unrecorded(
            &cmd(command::Op::Put(put_req("a", "1"))),
            &applied_at(7, Some("m7")),
        )
        .unwrap();
    // A blank entry after it records both (its own applied id wins, the membership stays).
    f.store.set_applied_state(&applied_at(8, None)).unwrap();
    let stored = MvccStore::applied_state(&f.store).unwrap();
    assert_eq!(stored, applied_at(8, Some("m7")));
    assert!(!f.store.point().unrecorded);
    let stored = f.store.tree().get(encoding::META_POINT).unwrap().unwrap();
    let (rev, applied, membership, values) = encoding::decode_point(&stored).unwrap();
    assert_eq!(
        (rev, applied, membership),
        (2, Some(vec![8]), Some(b"m7".to_vec()))
    );
    // The put's value went to the value log, synced before the point that covers it.
    assert_eq!(values, f.store.values.durable());
    assert!(values.is_some());
}

// ---- history (watch catch-up) ----

/// A sink that records what it is handed.
#[derive(Default)]
struct Recorder {
    seen: Mutex<Vec<(i64, Vec<raftkv_proto::mvccpb::Event>)>>,
    replaced: Mutex<Vec<i64>>,
}

impl WatchSink for Recorder {
    fn applied(&self, revision: i64, events: &[raftkv_proto::mvccpb::Event]) {
        self.seen.lock().unwrap().push((revision, events.to_vec()));
    }
    fn replaced(&self, revision: i64) {
        self.replaced.lock().unwrap().push(revision);
    }
}

const ALL: HistoryLimits = HistoryLimits {
    revisions: usize::MAX,
    bytes: usize::MAX,
};

/// (revision, type, key, value) of each event, for comparing histories.
fn brief(events: &[raftkv_proto::mvccpb::Event]) -> Vec<(i64, i32, String, String)> {
    events
        .iter()
        .map(|e| {
            let kv = e.kv.as_ref().unwrap();
            (kv.mod_revision, e.r#type, s(&kv.key), s(&kv.value))
        })
        .collect()
}

fn history(f: &Fixture, from: i64) -> Vec<(i64, i32, String, String)> {
    let to = f.store.revision();
    brief(
        &f.store
            .history(from, to, ALL, &mut |_| true)
            .unwrap()
            .events,
    )
}

#[test]
fn history_lists_changes_in_revision_then_write_order() {
    let f = open();
    let recorder = std::sync::Arc::new(Recorder::default());
    assert_eq!(f.store.set_watch_sink(recorder.clone()), 1);
    f.put("b", "1"); // 2
    f.put("a", "2"); // 3
    // A txn putting z before c: etcd's events come in the order the txn wrote them.
    f.txn(TxnRequest {
        success: vec![
            RequestOp {
                request: Some(Request::RequestPut(put_req("z", "3"))),
            },
            RequestOp {
                request: Some(Request::RequestPut(put_req("c", "3"))),
            },
        ],
        ..Default::default()
    }); // 4
    f.del("a", b"c", false); // 5: deletes a and b, in key order
    f.del("nothing", b"", false); // no change, no revision
    let (put, del) = (
        raftkv_proto::mvccpb::event::EventType::Put as i32,
        raftkv_proto::mvccpb::event::EventType::Delete as i32,
    );
    let want = vec![
        (2, put, "b".into(), "1".into()),
        (3, put, "a".into(), "2".into()),
        (4, put, "z".into(), "3".into()),
        (4, put, "c".into(), "3".into()),
        (5, del, "a".into(), "".into()),
        (5, del, "b".into(), "".into()),
    ];
    assert_eq!(history(&f, 1), want);
    assert_eq!(history(&f, 4), want[2..].to_vec());
    // The sink was handed exactly the same events, one call per revision.
    let seen = recorder.seen.lock().unwrap();
    assert_eq!(
        seen.iter().map(|(r, _)| *r).collect::<Vec<_>>(),
        [2, 3, 4, 5]
    );
    let handed: Vec<_> = seen.iter().flat_map(|(_, e)| e.clone()).collect();
    assert_eq!(brief(&handed), want);
    // Events carry the full key-value as of the change.
    let z = f.store.history(4, 4, ALL, &mut |k| k == b"z").unwrap();
    let kv = z.events[0].kv.as_ref().unwrap();
    assert_eq!((kv.create_revision, kv.version), (4, 1));
}

#[test]
fn history_stops_on_revision_boundaries_within_limits() {
    let f = open();
    for i in 0..10 {
        f.put(&format!("k{i}"), "v"); // revisions 2..=11
    }
    let few = HistoryLimits {
        revisions: 3,
        bytes: usize::MAX,
    };
    let batch = f.store.history(2, 11, few, &mut |_| true).unwrap();
    assert_eq!(batch.events.len(), 3);
    assert_eq!(batch.next, 5);
    // Revisions without wanted keys do not count against the limit.
    let batch = f
        .store
        .history(2, 11, few, &mut |k| k == b"k9" || k == b"k0")
        .unwrap();
    assert_eq!(brief(&batch.events).len(), 2);
    assert_eq!(batch.next, 12);
    // A byte limit still returns at least one whole revision.
    let tiny = HistoryLimits {
        revisions: usize::MAX,
        bytes: 1,
    };
    let batch = f.store.history(2, 11, tiny, &mut |_| true).unwrap();
    assert_eq!((batch.events.len(), batch.next), (1, 3));
    // An empty range reads nothing.
    let batch = f.store.history(12, 11, ALL, &mut |_| true).unwrap();
    assert!(batch.events.is_empty());
    assert_eq!(batch.next, 12);
}

/// The writes of the grouping tests: puts, a txn writing two keys, a delete of a range.
fn mixed_writes(n: usize) -> Vec<command::Op> {
    (0..n)
        .map(|i| match i % 7 {
            3 => command::Op::Txn(TxnRequest {
                success: vec![
                    RequestOp {
                        request: Some(Request::RequestPut(put_req(&format!("t{i}"), "x"))),
                    },
                    RequestOp {
                        request: Some(Request::RequestPut(put_req("k1", &format!("{i}")))),
                    },
                ],
                ..Default::default()
            }),
            5 => command::Op::DeleteRange(DeleteRangeRequest {
                key: Bytes::from_static(b"k"),
                range_end: Bytes::from_static(b"k3"),
                ..Default::default()
            }),
            _ => command::Op::Put(put_req(&format!("k{}", i % 4), &format!("{i}"))),
        })
        .collect()
}

/// `writes` applied to `f` as one recorded run, and to `reference` one entry at a time.
fn apply_run_beside(f: &Fixture, reference: &Fixture, writes: Vec<command::Op>) {
    for op in writes {
        reference.apply(op.clone()).unwrap();
        f.store
            .apply_unrecorded(&cmd(op), &AppliedState::default())
            .unwrap();
    }
    f.store.record_applied().unwrap();
}

/// Removing several changes of one group in one batch (a merge dropping versions) writes
/// the group back once, without all of them; per-change entries go one by one.
#[test]
fn several_changes_of_one_group_leave_it_in_one_batch() {
    let f = open();
    for op in mixed_writes(8) {
        f.store
            .apply_unrecorded(&cmd(op), &AppliedState::default())
            .unwrap();
    }
    f.store.record_applied().unwrap();
    f.put("old", "v"); // a group of one, rewritten below as a per-change entry
    let tree = f.store.tree();
    let last = history::logical_history(&tree).pop().unwrap();
    history::remove_history(&tree, f.store.revision(), i64::MAX).unwrap();
    tree.insert(last.0.as_slice(), last.1.as_slice()).unwrap();
    let before = history::logical_history(&tree);
    let rev_of = |k: &[u8]| encoding::history_revision(k).unwrap();
    let drop: Vec<(i64, Vec<u8>)> = [1, 4, before.len() - 1]
        .iter()
        .map(|&i| (rev_of(&before[i].0), before[i].1.clone()))
        .collect();
    let mut batch = sled::Batch::default();
    history::remove_history_entries(&tree, &mut batch, &drop).unwrap();
    tree.apply_batch(batch).unwrap();
    let after = history::logical_history(&tree);
    let expected: Vec<_> = before
        .iter()
        .enumerate()
        .filter(|(i, _)| ![1, 4, before.len() - 1].contains(i))
        .map(|(_, e)| e.clone())
        .collect();
    assert_eq!(after, expected);
}

/// Every change from `from` on, read in steps of at most `revisions` revisions.
fn history_in_steps(f: &Fixture, from: i64, revisions: usize) -> Vec<(i64, i32, String, String)> {
    let to = f.store.revision();
    let limits = HistoryLimits {
        revisions,
        bytes: usize::MAX,
    };
    let (mut next, mut out) = (from, Vec::new());
    while next <= to {
        let batch = f.store.history(next, to, limits, &mut |_| true).unwrap();
        out.extend(brief(&batch.events));
        next = batch.next;
    }
    out
}

/// A run of entries (the state machine applies a batch unrecorded and records the last)
/// stores its changes in the history index as one group, written just before the applied
/// point. Read from any revision, in any steps, before or after it is stored, and across a
/// compaction inside it, the history is what one entry per write gives.
#[test]
fn a_run_of_writes_is_one_history_group_read_from_anywhere_in_it() {
    let (f, reference) = (open(), open());
    let writes = mixed_writes(40);
    for op in &writes {
        reference.apply(op.clone()).unwrap();
    }
    for op in &writes {
        f.store
            .apply_unrecorded(&cmd(op.clone()), &AppliedState::default())
            .unwrap();
    }
    let to = f.store.revision();
    assert_eq!(to, reference.store.revision());
    // Not stored yet: read from what the store holds for the next group.
    assert_eq!(index_entries_below(&f, i64::MAX), 0);
    assert_eq!(history(&f, 1), history(&reference, 1));
    assert_eq!(history_in_steps(&f, 9, 4), history(&reference, 9));
    f.store.record_applied().unwrap();
    assert_eq!(index_entries_below(&f, i64::MAX), 1, "one group");
    for from in 1..=to + 1 {
        assert_eq!(history(&f, from), history(&reference, from), "from {from}");
    }
    assert_eq!(history_in_steps(&f, 9, 3), history(&reference, 9));
    assert_eq!(
        history::logical_history(&f.store.tree()),
        history::logical_history(&reference.store.tree())
    );
    // A compaction inside the group keeps it whole, and watchers from there on see the same.
    let compact = |rev| {
        command::Op::Compaction(CompactionRequest {
            revision: rev,
            ..Default::default()
        })
    };
    f.apply(compact(20)).unwrap();
    reference.apply(compact(20)).unwrap();
    assert_eq!(index_entries_below(&f, i64::MAX), 1);
    assert_eq!(history(&f, 20), history(&reference, 20));
    // A second run; then a compaction past the first group drops it.
    apply_run_beside(&f, &reference, mixed_writes(10));
    let past = to + 3;
    f.apply(compact(past)).unwrap();
    reference.apply(compact(past)).unwrap();
    assert_eq!(index_entries_below(&f, i64::MAX), 1);
    assert_eq!(history(&f, past), history(&reference, past));
}

/// A long run stores groups before its end (every 4,096 changes; 64 in tests), so a crash
/// can leave groups above the stored point. Reopened, the store drops them; replaying the
/// log in other runs then gives the history one entry per write gives (a leftover group
/// would name changes twice).
#[test]
fn groups_above_the_point_are_dropped_after_a_crash() {
    assert_eq!(HISTORY_GROUP_ENTRIES, 64);
    let dir = tempfile::tempdir().unwrap();
    let writes = mixed_writes(420);
    let reference = open();
    for op in &writes {
        reference.apply(op.clone()).unwrap();
    }
    {
        let store = MvccStore::open(dir.path(), &MvccConfig::default()).unwrap();
        store
            .apply(&cmd(writes[0].clone()), &applied_at(1, None))
            .unwrap();
        store.record_applied().unwrap(); // as the syncer lets the run's end record it
        for op in &writes[1..] {
            store
                .apply_unrecorded(&cmd(op.clone()), &applied_at(2, None))
                .unwrap();
        }
        store.flush().unwrap(); // groups of the run reached the disk, the point not
    }
    let f = Fixture {
        store: MvccStore::open(dir.path(), &MvccConfig::default()).unwrap(),
        _dir: dir,
    };
    assert_eq!(f.store.revision(), 2);
    assert_eq!(history(&f, 1), history(&reference, 1)[..1].to_vec());
    for run in writes[1..].chunks(100) {
        for op in run {
            f.store
                .apply_unrecorded(&cmd(op.clone()), &applied_at(2, None))
                .unwrap();
        }
        f.store.record_applied().unwrap();
    }
    assert_eq!(f.store.revision(), reference.store.revision());
    assert_eq!(
        history::logical_history(&f.store.tree()),
        history::logical_history(&reference.store.tree())
    );
    assert_eq!(history_in_steps(&f, 1, 7), history(&reference, 1));
}

/// A store written before groups keeps one history entry per change; it is read as before,
/// and with groups after it.
#[test]
fn history_written_before_groups_is_still_read() {
    let (f, reference) = (open(), open());
    for op in mixed_writes(12) {
        reference.apply(op.clone()).unwrap();
        f.apply(op).unwrap();
    }
    let tree = f.store.tree();
    let per_change = history::logical_history(&tree);
    history::remove_history(&tree, 0, i64::MAX).unwrap();
    for (k, v) in &per_change {
        tree.insert(k.as_slice(), v.as_slice()).unwrap();
    }
    assert_eq!(index_entries_below(&f, i64::MAX), per_change.len());
    apply_run_beside(&f, &reference, mixed_writes(12));
    for from in [1, 5, 12, 13, 20] {
        assert_eq!(history(&f, from), history(&reference, from), "from {from}");
    }
    assert_eq!(history_in_steps(&f, 3, 2), history(&reference, 3));
}

/// Counts history index entries below `rev`.
fn index_entries_below(f: &Fixture, rev: i64) -> usize {
    f.store
        .tree()
        .range(encoding::history_bound(0)..encoding::history_bound(rev))
        .count()
}

#[test]
fn compaction_drops_history_below_it_and_keeps_its_own_revision() {
    let f = open();
    f.put("a", "1"); // 2
    f.put("a", "2"); // 3
    f.put("b", "1"); // 4
    f.del("b", b"", false); // 5
    f.put("c", "1"); // 6
    f.compact(4).unwrap();
    assert_eq!(index_entries_below(&f, 4), 0);
    // The compacted revision's own change stays readable; the tombstone above it too.
    assert_eq!(
        history(&f, 4),
        vec![
            (4, 0, "b".into(), "1".into()),
            (5, 1, "b".into(), "".into()),
            (6, 0, "c".into(), "1".into()),
        ]
    );
    // A tombstone at the compacted revision is gone with its record: skipped, not an error.
    f.compact(5).unwrap();
    assert_eq!(history(&f, 5), vec![(6, 0, "c".into(), "1".into())]);
}

/// A read of "now" that a compaction overtakes is read again at the new revision: never
/// refused as compacted (etcd never refuses a range without a revision), never torn.
#[test]
fn a_read_of_now_overtaken_by_a_compaction_reads_again() {
    let f = open();
    f.put("a", "1"); // 2
    f.put("b", "1"); // 3
    let now = RangeRequest {
        key: b("a"),
        range_end: b("c"),
        ..Default::default()
    };
    let mut revisions = Vec::new();
    let answer = f
        .store
        .read_now(|rev| {
            if revisions.is_empty() {
                f.put("a", "2"); // 4
                f.put("b", "2"); // 5
                f.compact(5).unwrap(); // removes a@2 and b@3, which this read reads at 3
            }
            revisions.push(rev);
            f.store.range_with(&now, rev, None)
        })
        .unwrap();
    assert_eq!(revisions, [3, 5]);
    let values: Vec<String> = answer.kvs.iter().map(|kv| s(&kv.value)).collect();
    assert_eq!(
        (answer.header.unwrap().revision, values),
        (5, vec!["2".into(), "2".into()])
    );
}

/// Found in review: a restore cut short by a crash left its half-written tree, and one
/// cut short just after it swapped in its tree left the old one, for good (only disk
/// space: the data was right). Opening the store drops every store tree but the active one.
#[test]
fn opening_drops_the_trees_a_crashed_restore_left() {
    let dir = tempfile::tempdir().unwrap();
    let snap = dir.path().join("s.snap");
    let store_dir = dir.path().join("db");
    {
        let store = MvccStore::open(&store_dir, &MvccConfig::default()).unwrap();
        store
            .apply(
                &cmd(command::Op::Put(put_req("a", "1"))),
                &AppliedState::default(),
            )
            .unwrap();
        crate::snapshot::build(&store, &snap).unwrap();
        crate::snapshot::restore(&snap, &store).unwrap(); // now in an "mvcc-<id>" tree
        // What crashes would have left: a restore's half-written tree, an old tree.
        for name in ["mvcc-12345", "mvcc"] {
            store.db.open_tree(name).unwrap().insert("x", "y").unwrap();
        }
        store.flush().unwrap();
    }
    let store = MvccStore::open(&store_dir, &MvccConfig::default()).unwrap();
    let names: Vec<String> = store
        .db
        .tree_names()
        .iter()
        .map(|n| s(n))
        .filter(|n| n.starts_with("mvcc"))
        .collect();
    assert_eq!(names, [s(&store.tree().name())]);
    assert_eq!(store.revision(), 2);
    assert_eq!(
        store.get_at(b"a", 2).unwrap().map(|kv| kv.value),
        Some(Bytes::from_static(b"1"))
    );
}

/// Found reading compaction for the read races above: its removals go in batches, and a
/// key's tombstone went in the batch where the walk met it, before the key's older
/// versions. Between two batches — for good after a crash between them — the deleted key
/// read as its older value. Every batch must leave the current answers as they were.
#[test]
fn compaction_never_shows_a_deleted_key_between_its_batches() {
    let f = open();
    for i in 0..6 {
        let key = format!("k{i}");
        for v in 0..=i {
            f.put(&key, &format!("{key}-{v}"));
        }
        if i % 2 == 1 {
            f.del(&key, b"", false);
        }
        if i == 5 {
            f.put("after", "x");
            f.put(&key, "again"); // above the compaction: the tombstone under it goes
        }
    }
    let rev = f.store.revision() - 1;
    let all = || {
        f.range(RangeRequest {
            key: b("\0"),
            range_end: b("\0"),
            ..Default::default()
        })
        .unwrap()
        .kvs
    };
    let want = all();
    let records = || version_records(&f.store);
    let before = records();
    f.compact_later(rev);
    // The apply only took the revision: every version is still there.
    assert_eq!(records(), before);
    assert!(f.store.compaction_pending());
    let mut batches = 0;
    while f.store.compaction_step().unwrap() {
        batches += 1;
        assert_eq!(all(), want, "after batch {batches}");
    }
    assert!(batches > 5, "{batches} batches");
    assert!(!f.store.compaction_pending());
    assert_eq!(f.store.compaction_finished(), rev);
    // Only what compaction keeps is left: each live key's newest version at or below rev,
    // and whatever came after.
    assert_eq!(records(), 5, "records left");
}

/// Version records in the store (every key's every version still stored).
fn version_records(store: &MvccStore) -> usize {
    store
        .tree()
        .range(encoding::lower_bound(b"")..vec![encoding::META_SPACE])
        .count()
}

/// Writes go on between the batches of a compaction's deletes (new versions of the keys
/// being walked, new keys behind and ahead of the walk, deletes, another compaction): the
/// store ends as one whose compactions ran inside their applies, record for record.
#[test]
fn writes_between_the_batches_of_a_compaction_end_as_if_it_ran_at_once() {
    let (stepped, direct) = (open(), open());
    let both = |op: &dyn Fn(&Fixture)| {
        op(&stepped);
        op(&direct);
    };
    for i in 0..40 {
        both(&|f| {
            f.put(&format!("k{:02}", i % 13), &format!("v{i}"));
        });
        if i % 7 == 3 {
            both(&|f| {
                f.del(&format!("k{:02}", i % 11), b"", false);
            });
        }
    }
    let first = stepped.store.revision() - 5;
    stepped.compact_later(first);
    direct.compact(first).unwrap();
    let mut i = 0;
    while stepped.store.compaction_step().unwrap() {
        i += 1;
        both(&|f| {
            f.put(&format!("k{:02}", (i * 5) % 17), &format!("w{i}"));
        });
        if i % 4 == 0 {
            both(&|f| {
                f.del(&format!("k{:02}", (i * 3) % 17), b"", false);
            });
        }
        if i == 6 {
            // A newer compaction while the walk is half-way: it starts again for it.
            let second = stepped.store.revision() - 2;
            stepped.compact_later(second);
            direct.compact(second).unwrap();
        }
    }
    assert!(i > 6, "{i} batches");
    let dump = |f: &Fixture| -> Vec<(Vec<u8>, Vec<u8>)> {
        f.store
            .tree()
            .range(encoding::lower_bound(b"")..vec![encoding::META_SPACE])
            .map(|item| {
                let (k, v) = item.unwrap();
                (k.to_vec(), v.to_vec())
            })
            .collect()
    };
    assert_eq!(dump(&stepped), dump(&direct));
    assert_eq!(
        stepped.store.hash_kv(0).unwrap(),
        direct.store.hash_kv(0).unwrap()
    );
    assert_eq!(stepped.store.size_in_use(), direct.store.size_in_use());
}

/// A store that closes with a compaction's deletes unfinished finishes them after it
/// opens again, and one that finished does not walk again.
#[test]
fn a_compaction_unfinished_at_close_is_finished_after_open() {
    let f = open();
    for i in 0..10 {
        f.put("a", &i.to_string());
    }
    let rev = f.store.revision();
    f.compact_later(rev);
    assert!(f.store.compaction_step().unwrap()); // one batch, not all
    f.store.flush().unwrap();
    let Fixture { store, _dir } = f;
    drop(store);
    let f = Fixture {
        store: MvccStore::open(_dir.path(), &MvccConfig::default()).unwrap(),
        _dir,
    };
    assert_eq!(f.store.compacted_revision(), rev);
    assert!(f.store.compaction_pending());
    f.store.finish_compaction().unwrap();
    assert_eq!(version_records(&f.store), 1);
    f.store.flush().unwrap();
    let Fixture { store, _dir } = f;
    drop(store);
    let store = MvccStore::open(_dir.path(), &MvccConfig::default()).unwrap();
    assert!(!store.compaction_pending());
    assert_eq!(store.compaction_finished(), rev);
}

/// The stored finished revision is read from disk like any record: one of the wrong size
/// is damage the store refuses to open with, never a panic or a guess; a removed one only
/// makes the store walk again.
#[test]
fn a_damaged_compact_done_record_is_refused_and_a_missing_one_walks_again() {
    let f = open();
    for i in 0..4 {
        f.put("a", &i.to_string());
    }
    f.compact(f.store.revision()).unwrap();
    let rev = f.store.compaction_finished();
    assert!(rev > 0);
    let Fixture { store, _dir } = f;
    drop(store);
    // The record as sled holds it, changed with the store closed (sled may still hold the
    // closed store's lock for a moment: wait for it as the store's own open does).
    let set = |value: Option<&[u8]>| {
        let db = super::open_waiting_for_lock(&sled::Config::new().path(_dir.path())).unwrap();
        let tree = db.open_tree(b"mvcc").unwrap();
        match value {
            Some(v) => tree.insert(encoding::META_COMPACT_DONE, v).unwrap(),
            None => tree.remove(encoding::META_COMPACT_DONE).unwrap(),
        };
        db.flush().unwrap();
    };
    for bad in [&b""[..], &b"\x01"[..], &[0u8; 9][..], &[0xffu8; 64][..]] {
        set(Some(bad));
        let reopened = MvccStore::open(_dir.path(), &MvccConfig::default());
        assert!(
            matches!(reopened, Err(MvccError::Corrupt(_))),
            "{bad:?}: {:?}",
            reopened.map(|_| ())
        );
    }
    set(None);
    let store = MvccStore::open(_dir.path(), &MvccConfig::default()).unwrap();
    assert!(store.compaction_pending());
    store.finish_compaction().unwrap();
    assert_eq!(store.compaction_finished(), rev);
    assert_eq!(version_records(&store), 1);
}

/// The deletes wait for a point pinned before the compaction (a snapshot being written
/// reads versions it drops), and the thread runs them once the pin goes; a `physical`
/// caller's wait ends then.
#[test]
fn the_compactor_waits_for_an_older_pin_then_removes() {
    let dir = tempfile::tempdir().unwrap();
    let f = Fixture {
        store: MvccStore::open(dir.path(), &MvccConfig::default()).unwrap(),
        _dir: dir,
    };
    for i in 0..10 {
        f.put("a", &i.to_string());
    }
    let rev = f.store.revision();
    let store = std::sync::Arc::new(f.store);
    let pinned = store.pin_snapshot_point().unwrap();
    let _compactor = store.start_compactor().unwrap();
    store
        .apply(
            &cmd(command::Op::Compaction(CompactionRequest {
                revision: rev,
                physical: false,
            })),
            &AppliedState::default(),
        )
        .unwrap();
    let records = || version_records(&store);
    assert!(!store.wait_compaction(rev, std::time::Duration::from_millis(300)));
    assert_eq!(records(), 10, "removed under a pin");
    drop(pinned);
    assert!(store.wait_compaction(rev, std::time::Duration::from_secs(10)));
    assert_eq!(records(), 1);
}

/// Found by the compaction chaos test: a watcher resumed at the compacted revision, a
/// compaction ran while its catch-up read the history, and the changes it removed were
/// left out of the batch without a sign. The read must answer "compacted" instead.
#[test]
fn a_compaction_during_a_history_read_makes_it_compacted() {
    let f = open();
    for i in 0..6 {
        f.put("a", &i.to_string()); // 2..=7, each superseding the last
    }
    f.compact(2).unwrap();
    let all = HistoryLimits {
        revisions: usize::MAX,
        bytes: usize::MAX,
    };
    let mut compacted = false;
    let read = f.store.history(2, 7, all, &mut |_| {
        if !compacted {
            compacted = true;
            f.compact(6).unwrap(); // removes the puts at 2..=5 from under the read
        }
        true
    });
    assert!(matches!(read, Err(MvccError::Compacted)), "{read:?}");
    // Read again from where compaction now is: whole.
    assert_eq!(
        history(&f, 6),
        vec![
            (6, 0, "a".into(), "4".into()),
            (7, 0, "a".into(), "5".into())
        ]
    );
    // A compaction that stays at or below where the read starts changes nothing it reads.
    let mut once = false;
    let read = f.store.history(7, 7, all, &mut |_| {
        if !once {
            once = true;
            f.compact(7).unwrap();
        }
        true
    });
    assert_eq!(read.unwrap().events.len(), 1);
}

/// The same race for a range at an old revision (and a watcher's previous value, read the
/// same way): a compaction past the revision while the scan runs removes versions from
/// under it, so the scan may find an older version or none, and the answer is "compacted".
#[test]
fn a_compaction_during_a_range_at_an_old_revision_makes_it_compacted() {
    let f = open();
    for round in 0..2 {
        for k in ["a", "b", "c"] {
            f.put(k, &format!("{k}{round}")); // round 0 at 2..=4, round 1 at 5..=7
        }
    }
    let mut seen = Vec::new();
    let mut compacted = false;
    let read = f
        .store
        .scan(b"a", &RangeEnd::Unbounded, 4, true, &mut |kv| {
            if !compacted {
                compacted = true;
                f.compact(7).unwrap(); // removes b's and c's versions at 3 and 4
            }
            seen.push(s(&kv.key));
            true
        });
    // What the scan went on to find depends on whether sled had read the leaf before the
    // removals (here it had: it still lists b and c); whichever, the answer is refused.
    assert_eq!(seen.first().map(String::as_str), Some("a"));
    assert!(matches!(read, Err(MvccError::Compacted)), "{read:?}");
    assert!(matches!(
        f.range(RangeRequest {
            key: b("a"),
            range_end: b("\0"),
            revision: 4,
            ..Default::default()
        }),
        Err(MvccError::Compacted)
    ));
    // A previous value at a compacted revision is left out, as etcd leaves it out.
    assert_eq!(f.store.get_at_revision(b"c", 6).unwrap(), None);
    let kept = f.store.get_at_revision(b"c", 7).unwrap().unwrap();
    assert_eq!(kept.value, "c1".as_bytes());
}

#[test]
fn restored_snapshots_and_older_stores_are_indexed_from_their_records() {
    let f = open();
    for (k, v) in [("a", "1"), ("b", "1"), ("a", "2")] {
        f.put(k, v);
    }
    f.del("b", b"", false);
    // Enough versions that a restore sorts its history index through several spilled
    // files and writes several groups; a delete of many keys makes one revision of many.
    for i in 0..200 {
        f.put(&format!("k{}", i % 37), &i.to_string());
        if i == 120 {
            f.del("k", b"l", false);
        }
    }
    let want = history(&f, 1);
    let revision = f.store.revision();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("snap");
    crate::snapshot::build(&f.store, &path).unwrap();
    let g = open();
    let recorder = std::sync::Arc::new(Recorder::default());
    g.store.set_watch_sink(recorder.clone());
    crate::snapshot::restore(&path, &g.store).unwrap();
    assert_eq!(history(&g, 1), want);
    assert_eq!(*recorder.replaced.lock().unwrap(), [revision]);
    assert!(recorder.seen.lock().unwrap().is_empty());
    // Groups, not one entry per version; read from anywhere, in any steps, the same.
    let entries = index_entries_below(&g, i64::MAX);
    assert!((2..=8).contains(&entries), "{entries} history entries");
    for from in 1..=revision + 1 {
        assert_eq!(history(&g, from), history(&f, from), "from {from}");
    }
    assert_eq!(history_in_steps(&g, 30, 7), history(&f, 30));

    // A store whose index is missing (written before it existed) is indexed when opened.
    let Fixture { store, _dir } = f;
    let tree = store.tree();
    for item in tree.range(encoding::history_bound(0)..) {
        tree.remove(item.unwrap().0).unwrap();
    }
    tree.remove(encoding::META_HISTORY).unwrap();
    drop(tree);
    store.flush().unwrap();
    drop(store);
    let reopened = Fixture {
        store: MvccStore::open(_dir.path(), &MvccConfig::default()).unwrap(),
        _dir,
    };
    assert_eq!(history(&reopened, 1), want);

    // Writes after the restore, then a compaction inside a restored group.
    for i in 0..10 {
        reopened.put(&format!("n{i}"), "v");
        g.put(&format!("n{i}"), "v");
    }
    reopened.compact(150).unwrap();
    g.compact(150).unwrap();
    assert_eq!(history(&g, 150), history(&reopened, 150));
    assert_eq!(history_in_steps(&g, 150, 5), history(&reopened, 150));
    assert_eq!(history(&g, 190).len() as i64, revision + 10 - 190 + 1);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]
    /// What the sink is handed, revision by revision, is what the history reads back.
    #[test]
    fn the_sink_sees_exactly_the_history(ops in proptest::collection::vec((0u8..3, 0u8..6, 0u8..4), 1..40)) {
        let f = open();
        let recorder = std::sync::Arc::new(Recorder::default());
        f.store.set_watch_sink(recorder.clone());
        for (kind, key, value) in ops {
            let key = format!("k{key}");
            match kind {
                0 => { f.put(&key, &format!("v{value}")); }
                1 => { f.del(&key, b"", false); }
                _ => { f.del("k", b"l", false); }
            }
        }
        let handed: Vec<_> = recorder.seen.lock().unwrap().iter().flat_map(|(_, e)| e.clone()).collect();
        prop_assert_eq!(brief(&handed), history(&f, 1));
    }
}

/// Puts, overwrites, deletes and a lease: a history with every kind of record.
fn write_history(f: &Fixture, value_of_b: &str) {
    f.put("a", "1");
    f.put("b", value_of_b);
    f.put("a", "2");
    f.del("b", b"", false);
    f.put("c\0x", "3");
    f.put("b", "4");
}

#[test]
fn equal_histories_hash_equal_at_every_revision_and_after_compaction() {
    let (one, two) = (open(), open());
    write_history(&one, "v");
    write_history(&two, "v");
    let current = one.store.revision();
    for rev in 0..=current {
        assert_eq!(
            one.store.hash_kv(rev).unwrap(),
            two.store.hash_kv(rev).unwrap(),
            "rev {rev}"
        );
    }
    assert_eq!(one.store.hash_all().unwrap(), two.store.hash_all().unwrap());
    // A revision's hash does not move as history grows above it.
    let at_4 = one.store.hash_kv(4).unwrap();
    one.put("d", "5");
    two.put("d", "5");
    assert_eq!(one.store.hash_kv(4).unwrap().hash, at_4.hash);
    assert_eq!(one.store.hash_kv(4).unwrap().revision, current + 1);
    one.compact(5).unwrap();
    two.compact(5).unwrap();
    for rev in 6..=current + 1 {
        let (h1, h2) = (
            one.store.hash_kv(rev).unwrap(),
            two.store.hash_kv(rev).unwrap(),
        );
        assert_eq!(h1, h2, "rev {rev}");
        assert_eq!(h1.compact_revision, 5);
    }
    assert_eq!(one.store.hash_all().unwrap(), two.store.hash_all().unwrap());
}

#[test]
fn a_differing_record_changes_the_hash() {
    let (one, two) = (open(), open());
    write_history(&one, "v");
    write_history(&two, "w");
    // b's value differs at revision 3 only: hashes up to 2 agree, from 3 on they do not.
    assert_eq!(one.store.hash_kv(2).unwrap(), two.store.hash_kv(2).unwrap());
    for rev in 3..=one.store.revision() {
        assert_ne!(
            one.store.hash_kv(rev).unwrap().hash,
            two.store.hash_kv(rev).unwrap().hash,
            "rev {rev}"
        );
    }
    assert_ne!(one.store.hash_all().unwrap(), two.store.hash_all().unwrap());
    // Once compaction has dropped the differing version, the histories agree again.
    one.compact(4).unwrap();
    two.compact(4).unwrap();
    assert_eq!(one.store.hash_kv(0).unwrap(), two.store.hash_kv(0).unwrap());
    // A lease is part of Hash, not of HashKV.
    one.apply(command::Op::LeaseGrant(
        raftkv_proto::etcdserverpb::LeaseGrantRequest { ttl: 60, id: 7 },
    ))
    .unwrap();
    assert_eq!(one.store.hash_kv(0).unwrap(), two.store.hash_kv(0).unwrap());
    assert_ne!(one.store.hash_all().unwrap(), two.store.hash_all().unwrap());
}

#[test]
fn hash_kv_refuses_compacted_and_future_revisions_as_etcd() {
    let f = open();
    write_history(&f, "v");
    let current = f.store.revision();
    assert!(matches!(
        f.store.hash_kv(current + 1),
        Err(MvccError::FutureRevision)
    ));
    assert_eq!(f.store.hash_kv(0).unwrap().revision, current);
    f.compact(4).unwrap();
    // etcd: `rev > 0 && rev <= compactRev` is compacted (the compacted revision too).
    assert!(matches!(f.store.hash_kv(4), Err(MvccError::Compacted)));
    assert!(matches!(f.store.hash_kv(1), Err(MvccError::Compacted)));
    assert_eq!(f.store.hash_kv(5).unwrap().compact_revision, 4);
    assert_eq!(f.store.hash_kv(0).unwrap().compact_revision, 4);
}

#[test]
fn size_in_use_follows_writes_and_compaction_and_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let f = Fixture {
        store: MvccStore::open(dir.path(), &MvccConfig::default()).unwrap(),
        _dir: tempfile::tempdir().unwrap(),
    };
    assert_eq!(f.store.size_in_use(), 0);
    let value = "v".repeat(1000);
    for _ in 0..10 {
        f.put("big", &value);
    }
    let full = f.store.size_in_use();
    assert!(full > 10_000, "{full}");
    f.del("big", b"", false);
    let with_tombstone = f.store.size_in_use();
    assert!(with_tombstone > full);
    assert_eq!(
        f.store.size_in_use(),
        super::scan_records(&f.store.tree()).unwrap().0
    );
    // Compaction drops every version and the tombstone.
    f.compact(f.store.revision()).unwrap();
    assert_eq!(f.store.size_in_use(), 0);
    f.put("small", "x");
    let now = f.store.size_in_use();
    f.store.flush().unwrap();
    drop(f);
    let reopened = MvccStore::open(dir.path(), &MvccConfig::default()).unwrap();
    assert_eq!(reopened.size_in_use(), now);
}

#[test]
fn hashing_while_compacting_does_not_deadlock() {
    let f = std::sync::Arc::new(open());
    for i in 0..200 {
        f.put(&format!("k{}", i % 10), "v");
    }
    let writer = {
        let f = f.clone();
        std::thread::spawn(move || {
            for rev in (10..200).step_by(10) {
                f.compact(rev).unwrap();
                f.put("more", "v");
            }
        })
    };
    for _ in 0..50 {
        f.store.hash_all().unwrap();
        let _ = f.store.hash_kv(0).unwrap();
    }
    writer.join().unwrap();
}

/// One write of the warm/cold comparison below.
fn cache_op(kind: u8, key: u8, flag: u8) -> command::Op {
    let key = format!("k{key}");
    let lease = if flag & 1 == 1 { 7 } else { 0 };
    match kind {
        0 | 1 => command::Op::Put(PutRequest {
            key: b(&key),
            value: b(&format!("v{flag}")),
            lease,
            prev_kv: flag & 2 == 2,
            ignore_value: flag & 4 == 4,
            ignore_lease: flag & 8 == 8,
        }),
        2 => command::Op::DeleteRange(DeleteRangeRequest {
            key: b(&key),
            range_end: if flag & 1 == 1 { b("k4") } else { Bytes::new() },
            prev_kv: flag & 2 == 2,
        }),
        3 => command::Op::Txn(TxnRequest {
            compare: vec![],
            success: vec![
                RequestOp {
                    request: Some(Request::RequestPut(put_req(&key, "t1"))),
                },
                RequestOp {
                    request: Some(Request::RequestDeleteRange(DeleteRangeRequest {
                        key: b(&key),
                        ..Default::default()
                    })),
                },
                RequestOp {
                    request: Some(Request::RequestPut(put_req(&key, "t2"))),
                },
            ],
            failure: vec![],
        }),
        4 => command::Op::LeaseGrant(raftkv_proto::etcdserverpb::LeaseGrantRequest {
            ttl: 60,
            id: 7,
        }),
        5 => command::Op::LeaseRevoke(raftkv_proto::etcdserverpb::LeaseRevokeRequest { id: 7 }),
        _ => command::Op::Compaction(CompactionRequest {
            revision: i64::from(flag),
            physical: true,
        }),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
    /// The writer's newest-version cache and its filter of keys change nothing: a store
    /// that forgets both before every write (so every put reads its key back from sled)
    /// answers every write alike and ends with the same records.
    #[test]
    fn the_newest_version_cache_changes_nothing(ops in proptest::collection::vec((0u8..7, 0u8..5, 0u8..16), 1..60)) {
        let (warm, cold) = (open(), open());
        for (kind, key, flag) in ops {
            let op = cache_op(kind, key, flag);
            cold.store.latest_cache().forget_all();
            let (a, b) = (warm.apply(op.clone()), cold.apply(op));
            prop_assert_eq!(format!("{a:?}"), format!("{b:?}"));
        }
        prop_assert_eq!(all_records(&warm.store), all_records(&cold.store));
    }
}

#[test]
fn keys_held_before_a_reopen_or_a_restore_are_known_to_the_filter() {
    // A put of a key the filter wrongly thought new would start it again at version 1.
    let keys = ["a", "b\0c", "\0", "d\0\0e", "ff"];
    let dir = tempfile::tempdir().unwrap();
    let store = MvccStore::open(dir.path(), &MvccConfig::default()).unwrap();
    let f = Fixture { store, _dir: dir };
    for key in keys {
        f.put(key, "1");
    }
    let created: Vec<i64> = keys
        .iter()
        .map(|k| f.get(k).unwrap().create_revision)
        .collect();
    let Fixture { store, _dir } = f;
    store.flush().unwrap();
    drop(store);
    let store = MvccStore::open(_dir.path(), &MvccConfig::default()).unwrap();
    let f = Fixture { store, _dir };
    for key in keys {
        f.put(key, "2");
        let kv = f.get(key).unwrap();
        assert_eq!(kv.version, 2, "{key:?} after a reopen");
    }
    let snap_dir = tempfile::tempdir().unwrap();
    let path = snap_dir.path().join("snap");
    crate::snapshot::build(&f.store, &path).unwrap();
    let g = open();
    // The target held other keys before: the restore's filter replaces its own.
    g.put("other", "x");
    crate::snapshot::restore(&path, &g.store).unwrap();
    for (key, created) in keys.iter().zip(created) {
        g.put(key, "3");
        let kv = g.get(key).unwrap();
        assert_eq!(
            (kv.version, kv.create_revision),
            (3, created),
            "{key:?} after a restore"
        );
    }
    g.put("other", "y");
    assert_eq!(g.get("other").unwrap().version, 1);
}

/// etcd's corrupt applier: with a CORRUPT alarm up (whoever raised it), puts, deletes, txns,
/// compactions, lease grants and revokes are refused as applied — the entry is recorded and
/// changes nothing — while alarms, auth changes and checkpoints still apply; disarming it
/// lets writes through again. etcd: `etcdserver: corrupt cluster` (DataLoss).
#[test]
fn corrupt_alarm_refuses_writes_until_disarmed() {
    use raftkv_proto::etcdserverpb::alarm_request::AlarmAction;
    use raftkv_proto::etcdserverpb::{
        AlarmRequest, AlarmType, LeaseGrantRequest, LeaseRevokeRequest,
    };
    let f = open();
    f.put("a", "1");
    let granted = f.apply(command::Op::LeaseGrant(LeaseGrantRequest {
        ttl: 60,
        id: 7,
    }));
    assert!(granted.is_ok(), "{granted:?}");
    let alarm = |action: AlarmAction, member_id: u64, kind: AlarmType| {
        command::Op::Alarm(AlarmRequest {
            action: action as i32,
            member_id,
            alarm: kind as i32,
        })
    };
    let corrupt = |action| alarm(action, 0, AlarmType::Corrupt);
    f.apply(corrupt(AlarmAction::Activate)).unwrap();
    let before = f.store.revision();
    let hash = f.store.hash_kv(0).unwrap();
    let refused = [
        command::Op::Put(put_req("a", "2")),
        command::Op::DeleteRange(DeleteRangeRequest {
            key: b("a"),
            ..Default::default()
        }),
        command::Op::Txn(TxnRequest {
            success: vec![RequestOp {
                request: Some(Request::RequestPut(put_req("b", "1"))),
            }],
            ..Default::default()
        }),
        command::Op::Compaction(CompactionRequest {
            revision: before,
            physical: false,
        }),
        command::Op::LeaseGrant(LeaseGrantRequest { ttl: 60, id: 8 }),
        command::Op::LeaseRevoke(LeaseRevokeRequest { id: 7 }),
    ];
    for op in refused {
        let answer = f.apply(op);
        assert!(
            matches!(answer, Err(MvccError::CorruptCluster)),
            "{answer:?}"
        );
        assert!(MvccError::CorruptCluster.is_request_error());
    }
    assert_eq!(
        MvccError::CorruptCluster.to_string(),
        "etcdserver: corrupt cluster"
    );
    assert_eq!(
        MvccError::CorruptCluster.code(),
        crate::error::ErrorCode::DataLoss
    );
    assert_eq!(f.store.revision(), before);
    assert_eq!(f.store.hash_kv(0).unwrap(), hash);
    assert!(f.store.lease(7).is_some() && f.store.lease(8).is_none());
    assert_eq!(f.store.compacted_revision(), 0);
    // A second alarm of another kind, and clearing it, leaves the CORRUPT one in force
    // (etcd 3.4 would lift its corrupt applier here; raftkv follows the alarm list).
    let nospace = |action| alarm(action, 1, AlarmType::Nospace);
    f.apply(nospace(AlarmAction::Activate)).unwrap();
    f.apply(nospace(AlarmAction::Deactivate)).unwrap();
    assert!(matches!(
        f.apply(command::Op::Put(put_req("a", "2"))),
        Err(MvccError::CorruptCluster)
    ));
    f.apply(corrupt(AlarmAction::Deactivate)).unwrap();
    assert_eq!(f.put("a", "2"), before + 1);
}

// ---- values in the value log ----

/// Small value segments, so that a test makes many.
fn small_segments() -> MvccConfig {
    MvccConfig {
        value_segment_bytes: 1024,
        ..MvccConfig::default()
    }
}

fn applied_n(n: usize) -> AppliedState {
    AppliedState {
        applied: Some((n as u32).to_be_bytes().to_vec()),
        ..AppliedState::default()
    }
}

fn applied_index(store: &MvccStore) -> usize {
    let raw = store.applied_state().unwrap().applied.unwrap();
    u32::from_be_bytes(raw.try_into().unwrap()) as usize
}

/// Puts over a few keys with values of varied sizes, and some deletes.
fn value_log_commands(n: usize) -> Vec<Command> {
    (0..n)
        .map(|i| {
            let key = format!("k{}", i % 23);
            if i % 37 == 36 {
                cmd(command::Op::DeleteRange(DeleteRangeRequest {
                    key: b(&key),
                    ..Default::default()
                }))
            } else {
                let value = format!("value-{i}-").repeat(1 + i % 7);
                cmd(command::Op::Put(put_req(&key, &value)))
            }
        })
        .collect()
}

/// Applies `commands[from..]` in runs of `run` entries, as the state machine does (the
/// last of each run ends it); entry `i` is log index `i + 1`.
fn apply_in_runs(store: &MvccStore, commands: &[Command], from: usize, run: usize) {
    let mut i = from;
    while i < commands.len() {
        let end = (i + run).min(commands.len());
        for (j, command) in commands.iter().enumerate().take(end).skip(i) {
            let state = applied_n(j + 1);
            if j + 1 == end {
                store.apply(command, &state).unwrap();
            } else {
                store.apply_unrecorded(command, &state).unwrap();
            }
        }
        i = end;
    }
}

/// What a crash that lost every page of the value log not yet synced leaves: every byte
/// after the frame the stored point names durable is zero (all of it if none).
fn lose_values_after(dir: &Path, durable: Option<crate::values::ValuePtr>) {
    use std::os::unix::fs::FileExt;
    for entry in std::fs::read_dir(dir.join("values")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        let seq = u64::from_str_radix(&name["val-".len()..name.len() - ".seg".len()], 16).unwrap();
        let from = match durable {
            Some(p) if seq < p.seq => continue,
            Some(p) if seq == p.seq => p.end().offset,
            _ => 0,
        };
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        let len = file.metadata().unwrap().len();
        if from < len {
            file.write_all_at(&vec![0u8; (len - from) as usize], from)
                .unwrap();
        }
    }
}

/// The applied point lags the values: a run's point is stored only once the value log's
/// fdatasync covers its values. A crash that loses every value written after the durable
/// frame the stored point names leaves a store that opens at that point, reads every
/// version at or below it, and, the log replayed from there, ends as a store that never
/// crashed (records, history and hash alike).
#[test]
fn a_crash_that_loses_unsynced_values_reopens_at_the_point_and_replays_alike() {
    let commands = value_log_commands(300);
    let reference = open();
    apply_in_runs(&reference.store, &commands, 0, 10);
    reference.store.record_applied().unwrap();
    for crash_after in [40, 155, 300] {
        let dir = tempfile::tempdir().unwrap();
        let durable = {
            let store = MvccStore::open(dir.path(), &small_segments()).unwrap();
            apply_in_runs(&store, &commands[..20], 0, 10);
            // A point with a durable frame, as the syncer lets a run's end store.
            store.record_applied().unwrap();
            apply_in_runs(&store, &commands[..crash_after], 20, 10);
            assert!(store.values.segments().len() > 1 || crash_after < 100);
            // sled keeps everything written (a crash may keep records above the point);
            // the point it keeps names this frame.
            let durable = store.point().values;
            assert!(durable.is_some());
            durable
        };
        lose_values_after(dir.path(), durable);
        let store = MvccStore::open(dir.path(), &small_segments()).unwrap();
        let at = applied_index(&store);
        assert!((20..=crash_after).contains(&at), "reopened at entry {at}");
        let rev = store.revision();
        // Every version at or below the point reads back as the reference holds it.
        let all = |s: &MvccStore, rev: i64| {
            s.range(&RangeRequest {
                key: b("\0"),
                range_end: b("\0"),
                revision: rev,
                ..Default::default()
            })
            .unwrap()
            .kvs
        };
        assert_eq!(
            all(&store, rev),
            all(&reference.store, rev),
            "at entry {at}"
        );
        apply_in_runs(&store, &commands, at, 10);
        store.record_applied().unwrap();
        assert_eq!(all_records(&store), all_records(&reference.store));
        assert_eq!(
            store.hash_kv(0).unwrap().hash,
            reference.store.hash_kv(0).unwrap().hash
        );
        assert_eq!(store.size_in_use(), reference.store.size_in_use());
    }
}

/// A value segment no record points at any more (compaction dropped them) goes with the
/// next `persist`, after sled's flush; so does the mostly dead one of a value written once
/// at the start (moved inline), and every value reads back, before and after a reopen. A snapshot of the store restores into one
/// whose records hold their values inline, with the same hash, and a restore over it
/// removes its segments.
#[test]
fn persist_removes_value_segments_no_record_points_at() {
    let dir = tempfile::tempdir().unwrap();
    let store = MvccStore::open(dir.path(), &small_segments()).unwrap();
    let pinned = "kept-since-the-start-".repeat(3);
    store
        .apply(
            &cmd(command::Op::Put(put_req("pinned", &pinned))),
            &applied_n(1),
        )
        .unwrap();
    let commands = value_log_commands(600);
    apply_in_runs(&store, &commands, 0, 10);
    let compact = cmd(command::Op::Compaction(CompactionRequest {
        revision: store.revision(),
        ..Default::default()
    }));
    store.apply(&compact, &applied_n(601)).unwrap();
    store.finish_compaction().unwrap();
    let before = store.values.segments();
    assert!(before.len() > 20, "{before:?}");
    let hash = store.hash_kv(0).unwrap();
    let values = every_kv;
    let expected = values(&store);
    store.persist().unwrap();
    let after = store.values.segments();
    assert!(after.len() < 6, "{after:?}");
    // The pinned value's segment was mostly dead: its value moved inline, and it went.
    assert!(!after.contains(&before[0]), "{after:?}");
    assert_eq!(values(&store), expected);
    assert_eq!(store.hash_kv(0).unwrap(), hash);
    drop(store);
    let store = MvccStore::open(dir.path(), &small_segments()).unwrap();
    assert_eq!(store.values.segments(), after);
    assert_eq!(values(&store), expected);
    assert_eq!(store.hash_kv(0).unwrap().hash, hash.hash);

    let file = dir.path().join("s.snap");
    crate::snapshot::build(&store, &file).unwrap();
    let fresh = open();
    crate::snapshot::install(&file, &fresh.store).unwrap();
    assert_eq!(fresh.store.hash_all().unwrap(), store.hash_all().unwrap());
    assert!(fresh.store.values.segments().is_empty());
    // A store restored over keeps no segment but the durable frame's.
    crate::snapshot::restore(&file, &store).unwrap();
    assert!(
        store.values.segments().len() <= 1,
        "{:?}",
        store.values.segments()
    );
    assert_eq!(values(&store), expected);
    drop(store);
    let store = MvccStore::open(dir.path(), &small_segments()).unwrap();
    assert_eq!(values(&store), expected);
}

/// Every key's newest version, values included.
fn every_kv(store: &MvccStore) -> Vec<KeyValue> {
    store
        .range(&RangeRequest {
            key: b("\0"),
            range_end: b("\0"),
            ..Default::default()
        })
        .unwrap()
        .kvs
}

/// Whether `key`'s record at `rev` points into the value log.
fn points_at_log(store: &MvccStore, key: &str, rev: i64) -> bool {
    let raw = store
        .tree()
        .get(encoding::record_key(key.as_bytes(), rev))
        .unwrap()
        .expect("the record");
    encoding::value_ptr(&raw).unwrap().is_some()
}

#[test]
fn persist_moves_live_values_out_of_mostly_dead_segments_and_leaves_full_ones() {
    let dir = tempfile::tempdir().unwrap();
    let store = MvccStore::open(dir.path(), &small_segments()).unwrap();
    let mut index = 0;
    let mut put = |store: &MvccStore, key: &str, value: &str| {
        index += 1;
        store
            .apply(
                &cmd(command::Op::Put(put_req(key, value))),
                &applied_n(index),
            )
            .unwrap();
        store.revision()
    };
    // Keys written once, each among churn that compaction frees: one live value per few
    // segments.
    let mut cold = Vec::new();
    for i in 0..30 {
        let value = format!("cold-{i}-").repeat(8);
        cold.push((
            format!("cold{i:02}"),
            put(&store, &format!("cold{i:02}"), &value),
            value,
        ));
        for j in 0..12 {
            put(
                &store,
                &format!("hot{}", j % 3),
                &format!("hot-{i}-{j}-").repeat(9),
            );
        }
    }
    // Then keys written once, one after another: segments that stay full of live values.
    let mut dense = Vec::new();
    for i in 0..40 {
        let value = format!("dense-{i}-").repeat(8);
        dense.push((
            format!("dense{i:02}"),
            put(&store, &format!("dense{i:02}"), &value),
        ));
    }
    for i in 0..12 {
        put(
            &store,
            &format!("hot{}", i % 3),
            &format!("last-{i}-").repeat(9),
        );
    }
    let compact = cmd(command::Op::Compaction(CompactionRequest {
        revision: store.revision(),
        ..Default::default()
    }));
    index += 1;
    store.apply(&compact, &applied_n(index)).unwrap();
    store.finish_compaction().unwrap();
    let before = store.values.segments();
    assert!(before.len() > 40, "{}", before.len());
    let (hash, in_use) = (store.hash_kv(0).unwrap(), store.size_in_use());
    let all = every_kv;
    let expected = all(&store);
    assert_eq!(expected.len(), 73);
    // A reader that took a cold record's pointer before the move.
    let (key, rev, value) = &cold[0];
    let raw = store
        .tree()
        .get(encoding::record_key(key.as_bytes(), *rev))
        .unwrap()
        .unwrap();
    let Ok(Some((_, _, _, encoding::StoredValue::At(old)))) = encoding::decode_parts(&raw) else {
        panic!("a cold value in the log")
    };

    store.persist().unwrap();
    let after = store.values.segments();
    // The dense run's segments (40 values of ~100 bytes on 1 KiB segments) and the
    // newest ones are all that is left.
    assert!(after.len() <= 8, "{after:?}");
    assert!(!after.contains(&old.seq));
    for (key, rev, _) in &cold {
        assert!(!points_at_log(&store, key, *rev), "{key} still in the log");
    }
    let left = dense
        .iter()
        .filter(|(key, rev)| points_at_log(&store, key, *rev))
        .count();
    assert!(left >= 25, "only {left} of 40 dense values left in the log");
    assert_eq!(
        store
            .load_value(encoding::StoredValue::At(old), key.as_bytes(), *rev)
            .unwrap(),
        value.as_bytes(),
        "the old pointer's reader finds the record again"
    );
    assert_eq!(all(&store), expected);
    assert_eq!(store.hash_kv(0).unwrap(), hash);
    assert_eq!(store.size_in_use(), in_use);
    assert_eq!(store.relocate_sparse().unwrap(), 0, "nothing left to move");
    let counted = store.live.lock().unwrap().clone();
    drop(store);
    let store = MvccStore::open(dir.path(), &small_segments()).unwrap();
    assert_eq!(store.values.segments(), after);
    // The live bytes kept up to date through the moves are those counted afresh.
    assert_eq!(*store.live.lock().unwrap(), counted);
    assert_eq!(all(&store), expected);
    assert_eq!(store.hash_kv(0).unwrap().hash, hash.hash);
}
