//! etcd's request checks, run by the server before a request is proposed (etcd 3.4's
//! `etcdserver/api/v3rpc/key.go`): a refused request changes nothing and never reaches the log.

use std::collections::HashSet;

use raftkv_proto::etcdserverpb::request_op::Request;
use raftkv_proto::etcdserverpb::{
    DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
};

use super::range::RangeEnd;
use crate::error::MvccError;

/// etcd's default `--max-txn-ops`.
pub const DEFAULT_MAX_TXN_OPS: usize = 128;

/// Checks a Range request.
pub fn check_range(req: &RangeRequest) -> Result<(), MvccError> {
    if req.key.is_empty() {
        return Err(MvccError::EmptyKey);
    }
    Ok(())
}

/// Checks a Put request.
pub fn check_put(req: &PutRequest) -> Result<(), MvccError> {
    if req.key.is_empty() {
        return Err(MvccError::EmptyKey);
    }
    if req.ignore_value && !req.value.is_empty() {
        return Err(MvccError::ValueProvided);
    }
    if req.ignore_lease && req.lease != 0 {
        return Err(MvccError::LeaseProvided);
    }
    Ok(())
}

/// Checks a DeleteRange request.
pub fn check_delete(req: &DeleteRangeRequest) -> Result<(), MvccError> {
    if req.key.is_empty() {
        return Err(MvccError::EmptyKey);
    }
    Ok(())
}

/// Checks a Txn request: operation counts (the largest of compares, success and failure
/// ops, at every level, against `max_ops`), every nested request, then that no branch writes
/// a key twice.
pub fn check_txn(req: &TxnRequest, max_ops: usize) -> Result<(), MvccError> {
    check_txn_shape(req, max_ops)?;
    check_intervals(&req.success)?;
    check_intervals(&req.failure)?;
    Ok(())
}

fn check_txn_shape(req: &TxnRequest, max_ops: usize) -> Result<(), MvccError> {
    let ops = req
        .compare
        .len()
        .max(req.success.len())
        .max(req.failure.len());
    if ops > max_ops {
        return Err(MvccError::TooManyOps);
    }
    if req.compare.iter().any(|c| c.key.is_empty()) {
        return Err(MvccError::EmptyKey);
    }
    for op in req.success.iter().chain(&req.failure) {
        match &op.request {
            Some(Request::RequestRange(r)) => check_range(r)?,
            Some(Request::RequestPut(r)) => check_put(r)?,
            Some(Request::RequestDeleteRange(r)) => check_delete(r)?,
            Some(Request::RequestTxn(r)) => check_txn_shape(r, max_ops)?,
            None => {}
        }
    }
    Ok(())
}

/// A deleted key range.
struct Deleted {
    key: Vec<u8>,
    end: RangeEnd,
}

impl Deleted {
    fn covers(&self, key: &[u8]) -> bool {
        self.end.contains(&self.key, key)
    }
}

/// etcd's `checkIntervals`: within one branch (nested txns included) a key may be put at
/// most once and may not be both put and deleted. The two branches of a nested txn exclude
/// each other, so both may put the same key. Returns the branch's puts and deletes.
fn check_intervals(ops: &[RequestOp]) -> Result<(HashSet<Vec<u8>>, Vec<Deleted>), MvccError> {
    let mut dels: Vec<Deleted> = ops
        .iter()
        .filter_map(|op| match &op.request {
            Some(Request::RequestDeleteRange(d)) => Some(Deleted {
                key: d.key.to_vec(),
                end: RangeEnd::from_request(&d.range_end),
            }),
            _ => None,
        })
        .collect();
    let mut puts: HashSet<Vec<u8>> = HashSet::new();
    for op in ops {
        let Some(Request::RequestTxn(nested)) = &op.request else {
            continue;
        };
        let (puts_then, dels_then) = check_intervals(&nested.success)?;
        let (puts_else, dels_else) = check_intervals(&nested.failure)?;
        for key in &puts_then {
            if puts.contains(key) || dels.iter().any(|d| d.covers(key)) {
                return Err(MvccError::DuplicateKey);
            }
        }
        for key in &puts_else {
            let clash = puts.contains(key) && !puts_then.contains(key);
            if clash || dels.iter().any(|d| d.covers(key)) {
                return Err(MvccError::DuplicateKey);
            }
        }
        puts.extend(puts_then);
        puts.extend(puts_else);
        dels.extend(dels_then);
        dels.extend(dels_else);
    }
    for op in ops {
        let Some(Request::RequestPut(put)) = &op.request else {
            continue;
        };
        let key = put.key.to_vec();
        if puts.contains(&key) || dels.iter().any(|d| d.covers(&key)) {
            return Err(MvccError::DuplicateKey);
        }
        puts.insert(key);
    }
    Ok((puts, dels))
}

/// Whether a txn only reads, in every branch at every level (etcd serves those without the
/// log).
pub fn is_read_only(req: &TxnRequest) -> bool {
    req.success
        .iter()
        .chain(&req.failure)
        .all(|op| match &op.request {
            Some(Request::RequestRange(_)) | None => true,
            Some(Request::RequestTxn(t)) => is_read_only(t),
            _ => false,
        })
}

/// Whether every range in a read-only txn asks for a serializable read.
pub fn is_serializable(req: &TxnRequest) -> bool {
    req.success
        .iter()
        .chain(&req.failure)
        .all(|op| match &op.request {
            Some(Request::RequestRange(r)) => r.serializable,
            Some(Request::RequestTxn(t)) => is_serializable(t),
            _ => true,
        })
}
