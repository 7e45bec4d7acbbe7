//! Writes: Put, DeleteRange, Txn and Compact, applied as the Raft state machine applies a
//! log entry — each in one atomic sled batch together with the Raft layer's applied state.

use std::sync::atomic::Ordering;

use bytes::Bytes;
use raftkv_proto::etcdserverpb::alarm_request::AlarmAction;
use raftkv_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use raftkv_proto::etcdserverpb::request_op::Request;
use raftkv_proto::etcdserverpb::response_op::Response;
use raftkv_proto::etcdserverpb::{
    AlarmMember, AlarmRequest, AlarmResponse, AlarmType, CompactionRequest, CompactionResponse,
    Compare, DeleteRangeRequest, DeleteRangeResponse, LeaseCheckpointRequest,
    LeaseCheckpointResponse, LeaseGrantRequest, LeaseGrantResponse, LeaseRevokeResponse,
    PutRequest, PutResponse, RangeRequest, ResponseOp, TxnRequest, TxnResponse,
};
use raftkv_proto::mvccpb::{Event, KeyValue, event::EventType};
use raftkv_proto::raftkvpb::{Command, CommandResponse, auth_command, command, command_response};

use super::auth::tokens::SimpleTokens;

use super::encoding::{
    META_ALARMS, META_COMPACTED, META_POINT, Record, encode_put, encode_put_at, record_key,
    stored_len_at, value_ptr,
};
use super::history::delete_event;
use super::latest::Newest;
use super::lease::{
    LeaseInfo, encode_lease, indexed_key, lease_index_bounds, lease_key, lease_key_index,
};
use super::range::Overlay;
use super::{AppliedState, MvccStore};
use crate::error::MvccError;

/// Whether etcd's corrupt applier refuses `cmd`: Put, DeleteRange, Txn, Compaction,
/// LeaseGrant and LeaseRevoke (alarms, auth changes and lease checkpoints still apply).
fn refused_while_corrupt(cmd: &Command) -> bool {
    matches!(
        cmd.op,
        Some(
            command::Op::Put(_)
                | command::Op::DeleteRange(_)
                | command::Op::Txn(_)
                | command::Op::Compaction(_)
                | command::Op::LeaseGrant(_)
                | command::Op::LeaseRevoke(_)
        )
    )
}

impl MvccStore {
    /// Applies one command and stores `applied` with the new revision (the applied point).
    ///
    /// A refused request (key not found, compacted revision …) still records `applied`,
    /// since the entry was applied — with no effect — and returns the refusal. Any other
    /// error is a storage failure.
    pub fn apply(
        &self,
        cmd: &Command,
        applied: &AppliedState,
    ) -> Result<CommandResponse, MvccError> {
        self.apply_inner(cmd, applied, true)
    }

    /// Applies one command like [`MvccStore::apply`], but leaves storing the revision and
    /// `applied` to a later [`MvccStore::record_applied`] (or any recording write), so that a
    /// run of commands costs one metadata write instead of one each. Readers see the write
    /// at once; compactions are always recorded.
    pub fn apply_unrecorded(
        &self,
        cmd: &Command,
        applied: &AppliedState,
    ) -> Result<CommandResponse, MvccError> {
        self.apply_inner(cmd, applied, false)
    }

    fn apply_inner(
        &self,
        cmd: &Command,
        applied: &AppliedState,
        record: bool,
    ) -> Result<CommandResponse, MvccError> {
        let _writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        // Whoever put the entry in the log, a malformed one is refused alike on every member
        // (and recorded as applied), never treated as a damaged store.
        if let Err(e) = super::validate::check_structure(cmd) {
            self.settle(record, self.revision(), applied)?;
            return Err(e);
        }
        // etcd's corrupt applier: while a CORRUPT alarm is up, every member refuses the
        // writes it names (in log order, so alike everywhere) until the alarm is disarmed.
        if refused_while_corrupt(cmd) && self.has_alarm(AlarmType::Corrupt as i32) {
            self.settle(record, self.revision(), applied)?;
            return Err(MvccError::CorruptCluster);
        }
        if let Some(command::Op::Compaction(req)) = &cmd.op {
            return self.compact(req, applied);
        }
        if let Some(command::Op::Alarm(req)) = &cmd.op {
            return self.alarm(req, applied);
        }
        if let Some(command::Op::LeaseGrant(req)) = &cmd.op {
            return self.lease_grant(req, applied, record);
        }
        if let Some(command::Op::LeaseCheckpoint(req)) = &cmd.op {
            return self.lease_checkpoint(req, applied);
        }
        if let Some(caller) = &cmd.caller
            && let Err(e) = self.permit(caller, cmd)
        {
            self.settle(record, self.revision(), applied)?;
            return Err(e);
        }
        if let Some(command::Op::Auth(req)) = &cmd.op {
            return self.auth_change(req, applied);
        }
        self.counts.txns.inc();
        let read_rev = self.revision();
        let mut txn = WriteTxn::new(self, read_rev, true);
        let result = match &cmd.op {
            Some(command::Op::Put(req)) => txn.put(req).map(command_response::Op::Put),
            Some(command::Op::DeleteRange(req)) => {
                txn.delete_range(req).map(command_response::Op::DeleteRange)
            }
            Some(command::Op::Txn(req)) => {
                self.counts.txns.inc();
                let mut path = Vec::new();
                txn.compare_path(req, &mut path)?;
                txn.txn(req, &mut path.into_iter())
                    .map(command_response::Op::Txn)
            }
            Some(command::Op::LeaseRevoke(req)) => txn
                .revoke(req.id)
                .map(|()| command_response::Op::LeaseRevoke(LeaseRevokeResponse::default())),
            Some(
                command::Op::Compaction(_)
                | command::Op::Alarm(_)
                | command::Op::LeaseGrant(_)
                | command::Op::LeaseCheckpoint(_)
                | command::Op::Auth(_),
            ) => {
                unreachable!("handled above")
            }
            None => Err(MvccError::EmptyCommand),
        };
        let new_rev = if txn.changes.is_empty() || result.is_err() {
            read_rev
        } else {
            read_rev + 1
        };
        let mut response = match result {
            Ok(op) => op,
            Err(e) if e.is_request_error() => {
                self.settle(record, new_rev, applied)?;
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        // Plain inserts, then the applied point: a crash in between leaves records above
        // the stored revision, invisible to reads, which replaying the log rewrites as they
        // were (same keys, same revision, same values).
        // Each change goes in with its history index entry, in the order the write made
        // them (etcd's sub-revision order, which watchers see).
        // The filter of held keys learns the new keys before their records go in, so that
        // it holds every key with a live version whatever fails part-way.
        {
            let mut latest = self.latest_cache();
            for (key, change) in &txn.changes {
                if change.is_some() {
                    latest.note_held(key);
                }
            }
        }
        let tree = self.tree();
        let watched = self.has_sink();
        let mut events = Vec::with_capacity(if watched { txn.order.len() } else { 0 });
        let mut newest = Vec::with_capacity(txn.order.len());
        let mut history = Vec::with_capacity(txn.order.len());
        for (n, key) in txn.order.iter().enumerate() {
            let change = txn.changes.get(key).and_then(Option::as_ref);
            // Encoded from the change's value itself: one copy of the value per record. A
            // value of `VALUE_LOG_MIN` bytes or more goes to the value log, and the record
            // points at it (sled rewrites whole leaves, so it costs sled nothing then).
            let (raw_record, ptr) = match change {
                Some(kv) if kv.value.len() >= super::VALUE_LOG_MIN => {
                    match self.values.append(new_rev, key, &kv.value) {
                        Ok(ptr) => (
                            encode_put_at(kv.create_revision, kv.version, kv.lease, &ptr),
                            Some(ptr),
                        ),
                        // Too large for a segment, or no room to grow one (a full disk):
                        // nothing was written, and the value is kept inline. After a failed
                        // write or sync the log takes nothing more, and the store fails.
                        Err(_) if !self.values.is_failed() => (
                            encode_put(kv.create_revision, kv.version, kv.lease, &kv.value),
                            None,
                        ),
                        Err(e) => return Err(super::values_error(e)),
                    }
                }
                Some(kv) => (
                    encode_put(kv.create_revision, kv.version, kv.lease, &kv.value),
                    None,
                ),
                None => (Record::Tombstone.encode(), None),
            };
            let raw_key = record_key(key, new_rev);
            // Each record decoded once: the new one's pointer is known, the replaced one's
            // read here.
            let stored = raw_key.len() + stored_len_at(&raw_record, ptr.as_ref());
            // A replay after a crash rewrites a record that may already be there.
            let before = tree.insert(raw_key.as_slice(), raw_record)?;
            let replaced = before.as_deref().and_then(|v| value_ptr(v).ok().flatten());
            let removed = before
                .as_deref()
                .map_or(0, |v| raw_key.len() + stored_len_at(v, replaced.as_ref()));
            self.note_in_use(stored, removed);
            self.note_live(ptr.as_ref(), replaced.as_ref());
            history.push((new_rev, n as u32, Bytes::copy_from_slice(key)));
            if let Some(kv) = change
                && kv.lease != 0
            {
                tree.insert(lease_key_index(kv.lease, key), &[][..])?;
            }
            newest.push((key, change.map(Newest::of)));
            if watched {
                events.push(match change {
                    Some(kv) => Event {
                        r#type: EventType::Put as i32,
                        kv: Some(kv.clone()),
                        prev_kv: None,
                    },
                    None => delete_event(Bytes::copy_from_slice(key), new_rev),
                });
            }
        }
        drop(tree);
        // Held for the run's history group, which goes in before the applied point.
        self.note_history(history)?;
        if let Some(revoked) = txn.revoked {
            // The lease and its index go with the applied point, atomically (see `lease`).
            let mut batch = sled::Batch::default();
            batch.remove(&lease_key(revoked.id)[..]);
            for raw in &revoked.index {
                batch.remove(raw.as_slice());
            }
            batch.insert(META_POINT, self.point_record(new_rev, applied)?);
            self.tree().apply_batch(batch)?;
            self.lease_table().remove(&revoked.id);
        } else {
            self.settle(record, new_rev, applied)?;
        }
        self.revision.store(new_rev, Ordering::Release);
        let mut latest = self.latest_cache();
        for (key, newest) in newest {
            latest.set(key, newest);
        }
        drop(latest);
        if new_rev != read_rev {
            self.notify_applied(new_rev, &events);
        }
        set_header_revisions(&mut response, new_rev);
        Ok(CommandResponse { op: Some(response) })
    }

    /// Runs a transaction that only reads (every branch holds ranges only) at the current
    /// revision, without going through the log. A write in it is refused.
    pub fn txn_read_only(&self, req: &TxnRequest) -> Result<TxnResponse, MvccError> {
        self.read_now(|rev| self.txn_read_only_at(req, rev))
    }

    fn txn_read_only_at(&self, req: &TxnRequest, read_rev: i64) -> Result<TxnResponse, MvccError> {
        // Not under the writer lock: the newest-version cache is not to be touched.
        let mut txn = WriteTxn::new(self, read_rev, false);
        let mut path = Vec::new();
        txn.compare_path(req, &mut path)?;
        let resp = txn.txn(req, &mut path.into_iter())?;
        if !txn.changes.is_empty() {
            return Err(MvccError::Corrupt(
                "txn_read_only given a txn that writes".into(),
            ));
        }
        let mut op = command_response::Op::Txn(resp);
        set_header_revisions(&mut op, read_rev);
        match op {
            command_response::Op::Txn(resp) => Ok(resp),
            _ => unreachable!("built as a txn response above"),
        }
    }

    /// Stores the applied point at `rev` (`record`), or only notes it as applied.
    fn settle(&self, record: bool, rev: i64, applied: &AppliedState) -> Result<(), MvccError> {
        if record {
            self.end_run(rev, applied)
        } else {
            self.note_unrecorded(applied);
            Ok(())
        }
    }

    fn compact(
        &self,
        req: &CompactionRequest,
        applied: &AppliedState,
    ) -> Result<CommandResponse, MvccError> {
        let current = self.revision();
        let mut batch = sled::Batch::default();
        batch.insert(META_POINT, self.point_record(current, applied)?);
        let refusal = if req.revision <= self.compacted_revision() {
            Some(MvccError::Compacted)
        } else if req.revision > current {
            Some(MvccError::FutureRevision)
        } else {
            None
        };
        if let Some(refusal) = refusal {
            self.tree().apply_batch(batch)?;
            return Err(refusal);
        }
        batch.insert(META_COMPACTED, &req.revision.to_be_bytes());
        self.tree().apply_batch(batch)?;
        self.compacted.store(req.revision, Ordering::SeqCst);
        // Before any removal: a reader that meets one sees the revision (see
        // `compacted_after_read`).
        std::sync::atomic::fence(Ordering::SeqCst);
        // The versions it drops go afterwards, in batches (`compaction`).
        self.removal.compacted();
        Ok(CommandResponse {
            op: Some(command_response::Op::Compaction(CompactionResponse {
                header: Self::header(current),
            })),
        })
    }

    /// Grants a lease (its id chosen before it was proposed); the revision does not move.
    /// A plain insert, then the applied point as for a put (with `record`, else left to a
    /// later recording write): one `sled::Batch` per grant made sled seal and write out its
    /// log buffer for each, which held 100 clients' grants to about half their put rate. A
    /// crash between the two leaves the lease stored with the point before its entry; the
    /// replayed grant then finds it and is refused (`LeaseExist`), which changes nothing, so
    /// the store ends as if it had been applied once.
    ///
    /// Unlike a put's records, a lease on disk is seen whatever the point (leases load
    /// whole), so the entries of the run before the grant must not be replayed with it
    /// there: one that was refused for want of the lease (a put with it, its revoke) would
    /// succeed and the member would go its own way. The run's point is therefore stored
    /// first, and sled recovers a prefix of its log: a lease on disk comes with a point at
    /// least at the entry before its grant.
    fn lease_grant(
        &self,
        req: &LeaseGrantRequest,
        applied: &AppliedState,
        record: bool,
    ) -> Result<CommandResponse, MvccError> {
        let rev = self.revision();
        let exists = self.lease_table().contains_key(&req.id);
        if exists {
            self.settle(record, rev, applied)?;
            return Err(MvccError::LeaseExist);
        }
        let info = LeaseInfo {
            ttl: req.ttl,
            remaining: 0,
        };
        // Whether or not this entry ends its run: with the point lagging the values, the
        // run's earlier entries may be unrecorded either way.
        if self.point().unrecorded {
            self.record(rev, &AppliedState::default())?;
        }
        self.tree()
            .insert(&lease_key(req.id)[..], encode_lease(&info))?;
        self.lease_table().insert(req.id, info);
        self.settle(record, rev, applied)?;
        Ok(CommandResponse {
            op: Some(command_response::Op::LeaseGrant(LeaseGrantResponse {
                header: Self::header(rev),
                id: req.id,
                ttl: req.ttl,
                error: String::new(),
            })),
        })
    }

    /// Stores the remaining TTLs of a checkpoint (leases revoked since are skipped).
    fn lease_checkpoint(
        &self,
        req: &LeaseCheckpointRequest,
        applied: &AppliedState,
    ) -> Result<CommandResponse, MvccError> {
        let rev = self.revision();
        let mut table = self.lease_table();
        let mut batch = sled::Batch::default();
        let mut updated = Vec::new();
        for cp in &req.checkpoints {
            if let Some(info) = table.get(&cp.id) {
                let info = LeaseInfo {
                    ttl: info.ttl,
                    remaining: cp.remaining_ttl.max(0),
                };
                batch.insert(&lease_key(cp.id)[..], encode_lease(&info));
                updated.push((cp.id, info));
            }
        }
        batch.insert(META_POINT, self.point_record(rev, applied)?);
        self.tree().apply_batch(batch)?;
        table.extend(updated);
        Ok(CommandResponse {
            op: Some(command_response::Op::LeaseCheckpoint(
                LeaseCheckpointResponse {
                    header: Self::header(rev),
                },
            )),
        })
    }

    /// Changes the auth store (etcd's auth applier): the table and the applied point in one
    /// batch; the key-value revision does not move. A refusal records the applied point only.
    fn auth_change(
        &self,
        req: &raftkv_proto::raftkvpb::AuthCommand,
        applied: &AppliedState,
    ) -> Result<CommandResponse, MvccError> {
        let rev = self.revision();
        let current = self.auth();
        let mut batch = sled::Batch::default();
        let outcome = current.apply(req);
        if let Ok(Some(next)) = &outcome {
            batch.insert(super::auth::META_AUTH, next.encode());
        }
        batch.insert(META_POINT, self.point_record(rev, applied)?);
        self.tree().apply_batch(batch)?;
        if let Some(next) = outcome? {
            self.set_auth(next);
        }
        // The tokens follow the table: etcd's token provider is told in the same places.
        let mut token = String::new();
        match &req.op {
            Some(auth_command::Op::Authenticate(r)) if !r.token_prefix.is_empty() => {
                token = SimpleTokens::token(&r.token_prefix, applied.index);
                self.tokens.assign(token.clone(), &r.name);
            }
            Some(auth_command::Op::UserDelete(r)) => self.tokens.invalidate_user(&r.name),
            Some(auth_command::Op::UserChangePassword(r)) => self.tokens.invalidate_user(&r.name),
            Some(auth_command::Op::Disable(_)) => self.tokens.clear(),
            _ => {}
        }
        Ok(CommandResponse {
            op: Some(command_response::Op::Auth(
                raftkv_proto::raftkvpb::AuthCommandResponse {
                    header: Self::header(rev),
                    token,
                },
            )),
        })
    }

    /// Raises or clears an alarm (etcd's alarm store): the alarms and the applied point in
    /// one batch; the revision does not move. The answer lists the alarm raised (also when
    /// it was up already) or cleared (none if it was not up), as etcd's does.
    fn alarm(
        &self,
        req: &AlarmRequest,
        applied: &AppliedState,
    ) -> Result<CommandResponse, MvccError> {
        let alarm = (req.member_id, req.alarm);
        let mut alarms = self.alarms();
        let changed = match req.action() {
            AlarmAction::Activate => {
                if !alarms.contains(&alarm) {
                    alarms.push(alarm);
                    alarms.sort_unstable();
                }
                Some(alarm)
            }
            AlarmAction::Deactivate => {
                let before = alarms.len();
                alarms.retain(|a| *a != alarm);
                (alarms.len() < before).then_some(alarm)
            }
            AlarmAction::Get => None,
        };
        let mut batch = sled::Batch::default();
        batch.insert(META_ALARMS, super::encoding::encode_alarms(&alarms));
        batch.insert(META_POINT, self.point_record(self.revision(), applied)?);
        self.tree().apply_batch(batch)?;
        self.set_alarms(alarms);
        Ok(CommandResponse {
            op: Some(command_response::Op::Alarm(AlarmResponse {
                header: Self::header(self.revision()),
                alarms: changed
                    .map(|(member_id, alarm)| AlarmMember { member_id, alarm })
                    .into_iter()
                    .collect(),
            })),
        })
    }
}

/// One write transaction: reads see the store at `read_rev` plus its own pending changes.
struct WriteTxn<'a> {
    store: &'a MvccStore,
    read_rev: i64,
    changes: Overlay,
    /// The changed keys in the order the transaction first changed them.
    order: Vec<Vec<u8>>,
    /// A lease this write revokes.
    revoked: Option<Revoked>,
    /// Whether this runs under the writer lock, so the newest-version cache may be used.
    cached: bool,
}

/// A lease being revoked: its id and every index entry it has.
struct Revoked {
    id: i64,
    index: Vec<Vec<u8>>,
}

impl<'a> WriteTxn<'a> {
    /// A write at `read_rev` + 1; `cached` only under the store's writer lock.
    fn new(store: &'a MvccStore, read_rev: i64, cached: bool) -> Self {
        Self {
            store,
            read_rev,
            changes: Overlay::new(),
            order: Vec::new(),
            revoked: None,
            cached,
        }
    }

    /// Revokes lease `id`: deletes every key attached to it now (etcd deletes them in one
    /// write, in key order), and notes the lease and its index entries for removal.
    fn revoke(&mut self, id: i64) -> Result<(), MvccError> {
        if !self.store.lease_table().contains_key(&id) {
            return Err(MvccError::LeaseNotFound);
        }
        let (start, end) = lease_index_bounds(id);
        let mut index = Vec::new();
        for item in self.store.tree().range(start..end) {
            let (raw, _) = item?;
            let key = indexed_key(&raw)?.to_vec();
            if self
                .store
                .get_at(&key, self.read_rev)?
                .is_some_and(|kv| kv.lease == id)
            {
                self.change(&key, None);
            }
            index.push(raw.to_vec());
        }
        self.revoked = Some(Revoked { id, index });
        Ok(())
    }

    /// Notes a pending change of `key` (a new value, or `None` for a delete).
    fn change(&mut self, key: &[u8], value: Option<KeyValue>) {
        if self.changes.insert(key.to_vec(), value).is_none() {
            self.order.push(key.to_vec());
        }
    }

    fn write_rev(&self) -> i64 {
        self.read_rev + 1
    }

    /// The revision reads see now: the new one once the txn has written something.
    fn current_rev(&self) -> i64 {
        if self.changes.is_empty() {
            self.read_rev
        } else {
            self.write_rev()
        }
    }

    fn latest(&self, key: &[u8]) -> Result<Option<KeyValue>, MvccError> {
        match self.changes.get(key) {
            Some(change) => Ok(change.clone()),
            None => self.store.get_at(key, self.read_rev),
        }
    }

    /// The fields a put carries over from `key`'s newest live version: from this write's
    /// own changes, the writer's cache, or else the store (then remembered).
    fn newest(&self, key: &[u8]) -> Result<Option<Newest>, MvccError> {
        if let Some(change) = self.changes.get(key) {
            return Ok(change.as_ref().map(Newest::of));
        }
        let read = || {
            let kv = self.store.get_meta_at(key, self.read_rev)?;
            Ok::<_, MvccError>(kv.as_ref().map(Newest::of))
        };
        if !self.cached {
            return read();
        }
        if let Some(known) = self.store.latest_cache().get(key) {
            return Ok(known);
        }
        let newest = read()?;
        self.store.latest_cache().set(key, newest);
        Ok(newest)
    }

    fn put(&mut self, req: &PutRequest) -> Result<PutResponse, MvccError> {
        self.store.counts.puts.inc();
        if req.lease != 0 && !self.store.lease_table().contains_key(&req.lease) {
            return Err(MvccError::LeaseNotFound);
        }
        // The previous value is read only when the put needs it; otherwise its newest
        // version's fields are enough.
        let (prev, newest) = if req.prev_kv || req.ignore_value {
            let prev = self.latest(&req.key)?;
            let newest = prev.as_ref().map(Newest::of);
            (prev, newest)
        } else {
            (None, self.newest(&req.key)?)
        };
        if (req.ignore_value || req.ignore_lease) && newest.is_none() {
            return Err(MvccError::KeyNotFound);
        }
        let value = match (&prev, req.ignore_value) {
            (Some(prev), true) => prev.value.clone(),
            _ => req.value.clone(),
        };
        let lease = match (&newest, req.ignore_lease) {
            (Some(prev), true) => prev.lease,
            _ => req.lease,
        };
        let kv = KeyValue {
            key: req.key.clone(),
            create_revision: newest
                .as_ref()
                .map_or(self.write_rev(), |p| p.create_revision),
            mod_revision: self.write_rev(),
            version: newest.as_ref().map_or(1, |p| p.version + 1),
            value,
            lease,
        };
        self.change(&req.key, Some(kv));
        Ok(PutResponse {
            header: None,
            prev_kv: if req.prev_kv { prev } else { None },
        })
    }

    fn delete_range(&mut self, req: &DeleteRangeRequest) -> Result<DeleteRangeResponse, MvccError> {
        self.store.counts.deletes.inc();
        let range = RangeRequest {
            key: req.key.clone(),
            range_end: req.range_end.clone(),
            keys_only: !req.prev_kv,
            ..Default::default()
        };
        let found = self
            .store
            .range_with(&range, self.read_rev, Some(&self.changes))?;
        for kv in &found.kvs {
            self.change(&kv.key, None);
        }
        Ok(DeleteRangeResponse {
            header: None,
            deleted: found.kvs.len() as i64,
            prev_kvs: if req.prev_kv { found.kvs } else { Vec::new() },
        })
    }

    /// Evaluates every compare of `req` and of the txns nested on its chosen branch, all
    /// against the state before the transaction (as etcd does), in execution order, and
    /// checks each put on the chosen branches as etcd's `checkRequestPut` does before any
    /// op runs: a key that `ignore_value` / `ignore_lease` needs must exist, then the lease
    /// must (in that order, unlike a put outside a txn).
    fn compare_path(&self, req: &TxnRequest, path: &mut Vec<bool>) -> Result<(), MvccError> {
        let mut succeeded = true;
        for cmp in &req.compare {
            if !self.compare(cmp)? {
                succeeded = false;
                break;
            }
        }
        path.push(succeeded);
        let ops = if succeeded {
            &req.success
        } else {
            &req.failure
        };
        for op in ops {
            match &op.request {
                Some(Request::RequestTxn(nested)) => self.compare_path(nested, path)?,
                Some(Request::RequestPut(put)) => {
                    if (put.ignore_value || put.ignore_lease)
                        && self.store.get_at(&put.key, self.read_rev)?.is_none()
                    {
                        return Err(MvccError::KeyNotFound);
                    }
                    if put.lease != 0 && !self.store.lease_table().contains_key(&put.lease) {
                        return Err(MvccError::LeaseNotFound);
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn compare(&self, cmp: &Compare) -> Result<bool, MvccError> {
        let range = RangeRequest {
            key: cmp.key.clone(),
            range_end: cmp.range_end.clone(),
            ..Default::default()
        };
        let kvs = self.store.range_with(&range, self.read_rev, None)?.kvs;
        let target = CompareTarget::try_from(cmp.target).unwrap_or(CompareTarget::Version);
        if kvs.is_empty() {
            // A value compare on a missing key is always false; others compare with zero.
            return Ok(
                target != CompareTarget::Value && compare_kv(cmp, target, &KeyValue::default())
            );
        }
        Ok(kvs.iter().all(|kv| compare_kv(cmp, target, kv)))
    }

    fn txn(
        &mut self,
        req: &TxnRequest,
        path: &mut impl Iterator<Item = bool>,
    ) -> Result<TxnResponse, MvccError> {
        let succeeded = path.next().unwrap_or(false);
        let ops = if succeeded {
            &req.success
        } else {
            &req.failure
        };
        let mut responses = Vec::with_capacity(ops.len());
        for op in ops {
            // Each response's header carries the revision the txn was at when that op ran,
            // as etcd's do: reads before the first write see the old revision, everything
            // from the first write on the new one; nested txns carry an empty header.
            let response = match &op.request {
                Some(Request::RequestRange(r)) => {
                    self.store.counts.ranges.inc();
                    let mut resp = self
                        .store
                        .range_with(r, self.read_rev, Some(&self.changes))?;
                    resp.header = MvccStore::header(self.current_rev());
                    Response::ResponseRange(resp)
                }
                Some(Request::RequestPut(r)) => {
                    let mut resp = self.put(r)?;
                    resp.header = MvccStore::header(self.write_rev());
                    Response::ResponsePut(resp)
                }
                Some(Request::RequestDeleteRange(r)) => {
                    let mut resp = self.delete_range(r)?;
                    resp.header = MvccStore::header(self.current_rev());
                    Response::ResponseDeleteRange(resp)
                }
                Some(Request::RequestTxn(r)) => {
                    let mut resp = self.txn(r, path)?;
                    resp.header = Some(Default::default());
                    Response::ResponseTxn(resp)
                }
                None => continue,
            };
            responses.push(ResponseOp {
                response: Some(response),
            });
        }
        Ok(TxnResponse {
            header: None,
            succeeded,
            responses,
        })
    }
}

fn compare_kv(cmp: &Compare, target: CompareTarget, kv: &KeyValue) -> bool {
    let int = |v: i64| match &cmp.target_union {
        Some(TargetUnion::Version(x))
        | Some(TargetUnion::CreateRevision(x))
        | Some(TargetUnion::ModRevision(x))
        | Some(TargetUnion::Lease(x)) => v.cmp(x),
        _ => v.cmp(&0),
    };
    let ordering = match target {
        CompareTarget::Version => int(kv.version),
        CompareTarget::Create => int(kv.create_revision),
        CompareTarget::Mod => int(kv.mod_revision),
        CompareTarget::Lease => int(kv.lease),
        CompareTarget::Value => {
            let empty = Bytes::new();
            let want = match &cmp.target_union {
                Some(TargetUnion::Value(v)) => v,
                _ => &empty,
            };
            kv.value.as_ref().cmp(want.as_ref())
        }
    };
    match CompareResult::try_from(cmp.result).unwrap_or(CompareResult::Equal) {
        CompareResult::Equal => ordering.is_eq(),
        CompareResult::NotEqual => ordering.is_ne(),
        CompareResult::Greater => ordering.is_gt(),
        CompareResult::Less => ordering.is_lt(),
    }
}

/// The top-level header carries the revision the write produced (inner txn responses got
/// theirs as they ran).
fn set_header_revisions(op: &mut command_response::Op, rev: i64) {
    match op {
        command_response::Op::Put(r) => r.header = MvccStore::header(rev),
        command_response::Op::DeleteRange(r) => r.header = MvccStore::header(rev),
        command_response::Op::Txn(r) => r.header = MvccStore::header(rev),
        command_response::Op::Compaction(r) => r.header = MvccStore::header(rev),
        command_response::Op::Alarm(r) => r.header = MvccStore::header(rev),
        command_response::Op::LeaseGrant(r) => r.header = MvccStore::header(rev),
        command_response::Op::LeaseRevoke(r) => r.header = MvccStore::header(rev),
        command_response::Op::LeaseCheckpoint(r) => r.header = MvccStore::header(rev),
        command_response::Op::Auth(r) => r.header = MvccStore::header(rev),
    }
}
