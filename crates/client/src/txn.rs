//! A transaction builder: `Txn::new().when([..]).then([..]).otherwise([..])`.

use bytes::Bytes;
use raftkv_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use raftkv_proto::etcdserverpb::request_op::Request;
use raftkv_proto::etcdserverpb::{
    DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
};

/// One compare of a txn's `when`.
#[derive(Debug, Clone, PartialEq)]
pub struct Compare(pub raftkv_proto::etcdserverpb::Compare);

impl Compare {
    fn new(key: impl Into<Bytes>, result: CompareResult, target: TargetUnion) -> Self {
        let kind = match target {
            TargetUnion::Version(_) => CompareTarget::Version,
            TargetUnion::CreateRevision(_) => CompareTarget::Create,
            TargetUnion::ModRevision(_) => CompareTarget::Mod,
            TargetUnion::Value(_) => CompareTarget::Value,
            TargetUnion::Lease(_) => CompareTarget::Lease,
        };
        Self(raftkv_proto::etcdserverpb::Compare {
            result: result as i32,
            target: kind as i32,
            key: key.into(),
            target_union: Some(target),
            range_end: Bytes::new(),
        })
    }

    /// The key's value equals `value` (false if the key does not exist).
    pub fn value_equals(key: impl Into<Bytes>, value: impl Into<Bytes>) -> Self {
        Self::new(key, CompareResult::Equal, TargetUnion::Value(value.into()))
    }

    /// The key's version (0 if it does not exist) compares to `version` as `result` says.
    pub fn version(key: impl Into<Bytes>, result: CompareResult, version: i64) -> Self {
        Self::new(key, result, TargetUnion::Version(version))
    }

    /// The key's create revision compares to `revision` as `result` says.
    pub fn create_revision(key: impl Into<Bytes>, result: CompareResult, revision: i64) -> Self {
        Self::new(key, result, TargetUnion::CreateRevision(revision))
    }

    /// The key's mod revision compares to `revision` as `result` says.
    pub fn mod_revision(key: impl Into<Bytes>, result: CompareResult, revision: i64) -> Self {
        Self::new(key, result, TargetUnion::ModRevision(revision))
    }
}

/// One op of a txn branch.
#[derive(Debug, Clone, PartialEq)]
pub struct TxnOp(pub RequestOp);

impl TxnOp {
    /// Puts `value` at `key`.
    pub fn put(key: impl Into<Bytes>, value: impl Into<Bytes>) -> Self {
        Self(RequestOp {
            request: Some(Request::RequestPut(PutRequest {
                key: key.into(),
                value: value.into(),
                ..Default::default()
            })),
        })
    }

    /// Reads `key`.
    pub fn get(key: impl Into<Bytes>) -> Self {
        Self(RequestOp {
            request: Some(Request::RequestRange(RangeRequest {
                key: key.into(),
                ..Default::default()
            })),
        })
    }

    /// Deletes `key`.
    pub fn delete(key: impl Into<Bytes>) -> Self {
        Self(RequestOp {
            request: Some(Request::RequestDeleteRange(DeleteRangeRequest {
                key: key.into(),
                ..Default::default()
            })),
        })
    }

    /// Runs a nested txn.
    pub fn txn(txn: Txn) -> Self {
        Self(RequestOp {
            request: Some(Request::RequestTxn(txn.into_request())),
        })
    }
}

/// A transaction: if every compare of `when` holds, the `then` ops run, else the
/// `otherwise` ops; all in one revision.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Txn(TxnRequest);

impl Txn {
    /// An empty txn (no compares: `then` runs).
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds compares.
    pub fn when(mut self, compares: impl IntoIterator<Item = Compare>) -> Self {
        self.0.compare.extend(compares.into_iter().map(|c| c.0));
        self
    }

    /// Adds ops for when every compare holds.
    pub fn then(mut self, ops: impl IntoIterator<Item = TxnOp>) -> Self {
        self.0.success.extend(ops.into_iter().map(|o| o.0));
        self
    }

    /// Adds ops for when a compare does not hold.
    pub fn otherwise(mut self, ops: impl IntoIterator<Item = TxnOp>) -> Self {
        self.0.failure.extend(ops.into_iter().map(|o| o.0));
        self
    }

    /// The request as it goes on the wire.
    pub fn into_request(self) -> TxnRequest {
        self.0
    }

    /// Whether every branch only reads (a read-only txn may be sent again).
    pub(crate) fn is_read_only(&self) -> bool {
        fn reads(req: &TxnRequest) -> bool {
            req.success
                .iter()
                .chain(&req.failure)
                .all(|op| match &op.request {
                    Some(Request::RequestRange(_)) | None => true,
                    Some(Request::RequestTxn(t)) => reads(t),
                    _ => false,
                })
        }
        reads(&self.0)
    }
}

impl From<TxnRequest> for Txn {
    fn from(req: TxnRequest) -> Self {
        Self(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_etcds_request() {
        let txn = Txn::new()
            .when([Compare::value_equals("k", "v")])
            .then([TxnOp::put("k", "w")])
            .otherwise([TxnOp::get("k")]);
        assert!(!txn.is_read_only());
        let req = txn.into_request();
        assert_eq!(req.compare[0].target, CompareTarget::Value as i32);
        assert_eq!(req.compare[0].result, CompareResult::Equal as i32);
        assert_eq!(req.success.len(), 1);
        assert_eq!(req.failure.len(), 1);
        assert!(Txn::new().then([TxnOp::get("a")]).is_read_only());
    }
}
