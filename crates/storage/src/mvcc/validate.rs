//! etcd's request checks, run before a request is proposed (etcd 3.4's
//! `etcdserver/api/v3rpc/key.go`): a refused request changes nothing and never reaches the log.
//!
//! [`check_command`] is the one gate into the log, for a client's request and for a command a
//! follower forwards alike. [`check_structure`] is what the state machine re-checks when it
//! applies an entry: only the rules that do not depend on a member's flags, so every member
//! refuses the same entries.

use std::collections::HashSet;

use prost::Message;
use raftkv_proto::codec::MAX_TXN_DEPTH;
use raftkv_proto::etcdserverpb::alarm_request::AlarmAction;
use raftkv_proto::etcdserverpb::request_op::Request;
use raftkv_proto::etcdserverpb::{
    AlarmRequest, AlarmType, DeleteRangeRequest, LeaseCheckpointRequest, LeaseGrantRequest,
    PutRequest, RangeRequest, RequestOp, TxnRequest,
};
use raftkv_proto::raftkvpb::{Command, command};

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

/// Checks a Txn request as etcd does: operation counts against `max_ops` (etcd's
/// `checkTxnRequest`: a nested txn gets what its parent left of the budget, so nesting spends
/// it), every nested request, then that no branch writes a key twice.
pub fn check_txn(req: &TxnRequest, max_ops: usize) -> Result<(), MvccError> {
    check_txn_ops(req, max_ops, 1)?;
    check_intervals(&req.success)?;
    check_intervals(&req.failure)?;
    Ok(())
}

/// A command about to enter the log, whoever proposes it: the checks of its request, then its
/// size against `max_request_bytes` (etcd checks the size when it proposes).
pub fn check_command(
    cmd: &Command,
    max_request_bytes: usize,
    max_txn_ops: usize,
) -> Result<(), MvccError> {
    match &cmd.op {
        Some(command::Op::Put(r)) => check_put(r)?,
        Some(command::Op::DeleteRange(r)) => check_delete(r)?,
        Some(command::Op::Txn(r)) => check_txn(r, max_txn_ops)?,
        Some(command::Op::Compaction(_)) => {}
        Some(command::Op::Alarm(r)) => check_alarm(r)?,
        Some(command::Op::LeaseGrant(r)) => check_lease_grant(r)?,
        Some(command::Op::LeaseRevoke(_)) => {}
        Some(command::Op::LeaseCheckpoint(r)) => check_lease_checkpoint(r)?,
        Some(command::Op::Auth(r)) => super::auth::check_command(r)?,
        None => return Err(MvccError::EmptyCommand),
    }
    check_size(cmd, max_request_bytes)
}

/// The size part of [`check_command`], for a caller that has checked the request itself.
pub fn check_size(cmd: &Command, max_request_bytes: usize) -> Result<(), MvccError> {
    if cmd.encoded_len() > max_request_bytes {
        return Err(MvccError::RequestTooLarge);
    }
    Ok(())
}

/// The checks of [`check_command`] that do not depend on flags (keys present, every op set,
/// nesting within [`MAX_TXN_DEPTH`]): what the state machine verifies again before applying
/// a committed entry, since a member cannot know who put it in the log.
pub fn check_structure(cmd: &Command) -> Result<(), MvccError> {
    match &cmd.op {
        Some(command::Op::Put(r)) => check_put(r),
        Some(command::Op::DeleteRange(r)) => check_delete(r),
        Some(command::Op::Txn(r)) => check_txn_ops(r, usize::MAX, 1),
        Some(command::Op::Compaction(_)) => Ok(()),
        Some(command::Op::Alarm(r)) => check_alarm(r),
        Some(command::Op::LeaseGrant(r)) => check_lease_grant(r),
        Some(command::Op::LeaseRevoke(_)) => Ok(()),
        Some(command::Op::LeaseCheckpoint(r)) => check_lease_checkpoint(r),
        Some(command::Op::Auth(r)) => super::auth::check_command(r),
        None => Err(MvccError::EmptyCommand),
    }
}

/// etcd's largest lease TTL (seconds): `lease.MaxLeaseTTL`.
pub const MAX_LEASE_TTL: i64 = 9_000_000_000;
/// Most leases in one checkpoint entry (etcd's `maxLeaseCheckpointBatchSize`).
pub const MAX_CHECKPOINT_BATCH: usize = 1000;

/// A grant as it may enter the log: its id already chosen (0 is "no lease"; etcd takes a
/// client's negative id as it is), its TTL raised to the minimum and at most etcd's maximum.
pub fn check_lease_grant(req: &LeaseGrantRequest) -> Result<(), MvccError> {
    if req.ttl > MAX_LEASE_TTL {
        return Err(MvccError::LeaseTtlTooLarge);
    }
    if req.id == 0 || req.ttl < 1 {
        return Err(MvccError::BadLease);
    }
    Ok(())
}

/// A checkpoint as it may enter the log: bounded, with remaining TTLs in range.
pub fn check_lease_checkpoint(req: &LeaseCheckpointRequest) -> Result<(), MvccError> {
    let valid = req.checkpoints.len() <= MAX_CHECKPOINT_BATCH
        && req
            .checkpoints
            .iter()
            .all(|c| c.id != 0 && (0..=MAX_LEASE_TTL).contains(&c.remaining_ttl));
    if valid {
        Ok(())
    } else {
        Err(MvccError::BadLease)
    }
}

/// An alarm change as it may enter the log: raise or clear a NOSPACE or CORRUPT alarm
/// (a GET is answered without the log).
pub fn check_alarm(req: &AlarmRequest) -> Result<(), MvccError> {
    let action_ok = matches!(
        req.action(),
        AlarmAction::Activate | AlarmAction::Deactivate
    );
    let alarm_ok = matches!(req.alarm(), AlarmType::Nospace | AlarmType::Corrupt)
        && AlarmType::try_from(req.alarm).is_ok();
    if action_ok && alarm_ok && AlarmAction::try_from(req.action).is_ok() {
        Ok(())
    } else {
        Err(MvccError::BadAlarm)
    }
}

/// Whether a command takes space etcd's NOSPACE alarm withholds: a put, or a txn with a put
/// directly in one of its branches (etcd's quota cost; puts in nested txns are not counted,
/// nor are deletes and compactions, which free space).
pub fn consumes_space(cmd: &Command) -> bool {
    let puts = |ops: &[RequestOp]| {
        ops.iter()
            .any(|op| matches!(op.request, Some(Request::RequestPut(_))))
    };
    match &cmd.op {
        Some(command::Op::Put(_) | command::Op::LeaseGrant(_)) => true,
        Some(command::Op::Txn(t)) => puts(&t.success) || puts(&t.failure),
        _ => false,
    }
}

fn check_txn_ops(req: &TxnRequest, budget: usize, depth: usize) -> Result<(), MvccError> {
    let ops = req
        .compare
        .len()
        .max(req.success.len())
        .max(req.failure.len());
    // Beyond MAX_TXN_DEPTH levels the log could not hold the txn (see raftkv-proto's codec);
    // etcd's own budget refuses such nesting at its default --max-txn-ops already.
    if ops > budget || depth > MAX_TXN_DEPTH {
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
            Some(Request::RequestTxn(r)) => check_txn_ops(r, budget - ops, depth + 1)?,
            // etcd: "empty op / nil entry".
            None => return Err(MvccError::KeyNotFound),
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
