//! etcd 3.4's permission checks (`auth/store.go` `isOpPermitted` and `IsAdminPermitted`,
//! `auth/range_perm_cache.go`), over the auth table as the log left it.
//!
//! A user's permissions are the union of its roles' key permissions, each an interval of
//! keys: `[key, range_end)`, a single key when `range_end` is empty, everything from `key`
//! on when `range_end` is `"\0"`. As etcd's `adt` intervals, an empty bound stands above
//! every key. A single key is allowed when some interval holds it; a range only when the
//! intervals meeting it cover it without a gap (etcd's `IntervalTree.Contains`).

use std::borrow::Cow;
use std::cmp::Ordering;

use raftkv_proto::authpb::{Permission, permission};
use raftkv_proto::etcdserverpb::request_op::Request;
use raftkv_proto::etcdserverpb::{DeleteRangeRequest, PutRequest, TxnRequest};
use raftkv_proto::raftkvpb::{Caller, Command, auth_command, command};

use super::{AuthTable, ROOT};
use crate::error::MvccError;

/// What a request does with its keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Range, watch, compare, `prev_kv`.
    Read,
    /// Put, delete.
    Write,
}

impl AuthTable {
    /// etcd's `isOpPermitted`: whether `caller` may `access` the keys `[key, range_end)`.
    /// Allowed while auth is off; refused without a user, under an auth revision older than
    /// the table's, for an unknown user, and outside the user's permissions (root has all).
    pub fn check_op(
        &self,
        caller: &Caller,
        key: &[u8],
        range_end: &[u8],
        access: Access,
    ) -> Result<(), MvccError> {
        if !self.enabled {
            return Ok(());
        }
        if caller.auth_revision == 0 {
            return Err(MvccError::UserEmpty);
        }
        if caller.auth_revision < self.revision {
            return Err(MvccError::AuthOldRevision);
        }
        let user = self
            .users
            .get(&caller.user)
            .ok_or(MvccError::PermissionDenied)?;
        if Self::has_root_role(user) {
            return Ok(());
        }
        let mut intervals: Vec<(&[u8], Cow<'_, [u8]>)> = Vec::new();
        for role in user.roles.iter().filter_map(|r| self.roles.get(r)) {
            for perm in role.key_permission.iter().filter(|p| grants(p, access)) {
                intervals.push(interval_of(perm));
            }
        }
        let allowed = if range_end.is_empty() {
            let point = point_end(key);
            intervals
                .iter()
                .any(|(b, e)| overlaps((key, &point), (b, e)))
        } else {
            // etcd reads a range end of "\0" (from the key on) as no end.
            let end: &[u8] = if range_end == [0] { b"" } else { range_end };
            covers(&mut intervals, key, end)
        };
        if allowed {
            Ok(())
        } else {
            Err(MvccError::PermissionDenied)
        }
    }

    /// etcd's `IsAdminPermitted`: whether `caller` may manage auth, members and the
    /// maintenance calls etcd keeps for root. Allowed while auth is off.
    pub fn check_admin(&self, caller: &Caller) -> Result<(), MvccError> {
        if !self.enabled {
            return Ok(());
        }
        if caller.user.is_empty() {
            return Err(MvccError::UserEmpty);
        }
        let user = self
            .users
            .get(&caller.user)
            .ok_or(MvccError::UserNotFound)?;
        if Self::has_root_role(user) {
            Ok(())
        } else {
            Err(MvccError::PermissionDenied)
        }
    }

    /// etcd's `HasRole`: whether `user` exists and holds `role`.
    pub fn has_role(&self, user: &str, role: &str) -> bool {
        self.users
            .get(user)
            .is_some_and(|u| u.roles.iter().any(|r| r == role))
    }

    /// Whether `user` holds the root role.
    pub fn is_root(&self, user: &str) -> bool {
        self.has_role(user, ROOT)
    }
}

fn grants(perm: &Permission, access: Access) -> bool {
    match permission::Type::try_from(perm.perm_type) {
        Ok(permission::Type::Readwrite) => true,
        Ok(permission::Type::Read) => access == Access::Read,
        Ok(permission::Type::Write) => access == Access::Write,
        Err(_) => false,
    }
}

/// The interval a permission grants (etcd's `getMergedPerms`).
fn interval_of(perm: &Permission) -> (&[u8], Cow<'_, [u8]>) {
    let key = perm.key.as_ref();
    match perm.range_end.as_ref() {
        [] => (key, Cow::Owned(point_end(key))),
        [0] => (key, Cow::Borrowed(&b""[..])),
        end => (key, Cow::Borrowed(end)),
    }
}

/// The end of the interval holding only `key`: `key` followed by a zero byte.
fn point_end(key: &[u8]) -> Vec<u8> {
    let mut end = Vec::with_capacity(key.len() + 1);
    end.extend_from_slice(key);
    end.push(0);
    end
}

/// etcd's `BytesAffineComparable`: the empty bound is above everything.
fn cmp(a: &[u8], b: &[u8]) -> Ordering {
    match (a.is_empty(), b.is_empty()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        (false, false) => a.cmp(b),
    }
}

/// etcd's `Interval.Compare` giving 0: `q` neither lies left of `p` nor right of it.
fn overlaps(q: (&[u8], &[u8]), p: (&[u8], &[u8])) -> bool {
    let left = cmp(q.0, p.0) == Ordering::Less && cmp(q.1, p.0) != Ordering::Greater;
    let right = cmp(q.0, p.1) != Ordering::Less;
    !left && !right
}

/// etcd's `IntervalTree.Contains`: the intervals meeting `[begin, end)`, taken in order of
/// their starts, join without a gap and reach from `begin` (or before) to `end` (or after).
fn covers(intervals: &mut [(&[u8], Cow<'_, [u8]>)], begin: &[u8], end: &[u8]) -> bool {
    intervals.sort_by(|a, b| cmp(a.0, b.0));
    let mut span: Option<(&[u8], &[u8])> = None;
    for (b, e) in intervals.iter() {
        if !overlaps((begin, end), (b, e)) {
            continue;
        }
        span = match span {
            None => Some((b, e)),
            Some((_, max_end)) if cmp(max_end, b) == Ordering::Less => return false,
            Some((min_begin, max_end)) => Some((
                min_begin,
                if cmp(e, max_end) == Ordering::Greater {
                    e
                } else {
                    max_end
                },
            )),
        };
    }
    span.is_some_and(|(min_begin, max_end)| {
        cmp(max_end, end) != Ordering::Less && cmp(min_begin, begin) != Ordering::Greater
    })
}

impl crate::mvcc::MvccStore {
    /// etcd's `authApplierV3`: whether the caller of `cmd` may make it, checked by every
    /// member as it applies the entry, against the auth table at that point of the log.
    /// etcd 3.4 checks nothing on compactions, alarms and lease grants; nor does this.
    ///
    /// Stricter than etcd 3.4 in two places, where it lets a request through that reads or
    /// writes keys the caller has no permission for: the operations of a nested txn are
    /// checked as the top-level ones (etcd 3.4 skips them), and a put or delete inside a txn
    /// is checked as a top-level one (its lease's keys, `prev_kv` needing read).
    pub(crate) fn permit(&self, caller: &Caller, cmd: &Command) -> Result<(), MvccError> {
        let table = self.auth();
        if !table.enabled {
            return Ok(());
        }
        match &cmd.op {
            Some(command::Op::Put(r)) => self.permit_put(&table, caller, r),
            Some(command::Op::DeleteRange(r)) => permit_delete(&table, caller, r),
            Some(command::Op::Txn(r)) => self.permit_txn(&table, caller, r),
            Some(command::Op::LeaseRevoke(r)) => self.permit_lease_keys(&table, caller, r.id),
            Some(command::Op::Auth(a)) => match &a.op {
                Some(auth_command::Op::Authenticate(_)) => Ok(()),
                _ => table.check_admin(caller),
            },
            _ => Ok(()),
        }
    }

    fn permit_put(
        &self,
        table: &AuthTable,
        caller: &Caller,
        r: &PutRequest,
    ) -> Result<(), MvccError> {
        table.check_op(caller, &r.key, b"", Access::Write)?;
        // A lease whose keys the caller may not write is one it may not revoke, so it may
        // not attach more keys to it either (etcd's `checkLeasePuts`).
        self.permit_lease_keys(table, caller, r.lease)?;
        if r.prev_kv {
            table.check_op(caller, &r.key, b"", Access::Read)?;
        }
        Ok(())
    }

    fn permit_lease_keys(
        &self,
        table: &AuthTable,
        caller: &Caller,
        lease: i64,
    ) -> Result<(), MvccError> {
        if lease == 0 || !self.lease_table().contains_key(&lease) {
            return Ok(());
        }
        for key in self.lease_keys(lease)? {
            table.check_op(caller, &key, b"", Access::Write)?;
        }
        Ok(())
    }

    /// The checks of a txn: read on every compare, and each operation of both branches as
    /// if it came alone (nested txns too). Also what a read-only txn served at the API edge
    /// is checked with.
    pub fn permit_txn(
        &self,
        table: &AuthTable,
        caller: &Caller,
        r: &TxnRequest,
    ) -> Result<(), MvccError> {
        for c in &r.compare {
            table.check_op(caller, &c.key, &c.range_end, Access::Read)?;
        }
        for op in r.success.iter().chain(&r.failure) {
            match &op.request {
                Some(Request::RequestRange(q)) => {
                    table.check_op(caller, &q.key, &q.range_end, Access::Read)?
                }
                Some(Request::RequestPut(q)) => self.permit_put(table, caller, q)?,
                Some(Request::RequestDeleteRange(q)) => permit_delete(table, caller, q)?,
                Some(Request::RequestTxn(q)) => self.permit_txn(table, caller, q)?,
                None => {}
            }
        }
        Ok(())
    }
}

fn permit_delete(
    table: &AuthTable,
    caller: &Caller,
    r: &DeleteRangeRequest,
) -> Result<(), MvccError> {
    table.check_op(caller, &r.key, &r.range_end, Access::Write)?;
    if r.prev_kv {
        table.check_op(caller, &r.key, &r.range_end, Access::Read)?;
    }
    Ok(())
}
