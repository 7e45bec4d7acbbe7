//! Members in etcd's form.

use std::collections::BTreeSet;

use raftkv_proto::etcdserverpb::Member as PbMember;

use crate::types::Member;

/// 16 hex digits, as etcd shows member ids.
pub fn hex(id: u64) -> String {
    format!("{id:016x}")
}

/// A member in etcd's form.
pub fn pb_member(id: u64, m: &Member, is_learner: bool) -> PbMember {
    PbMember {
        id,
        name: m.name.clone(),
        peer_ur_ls: m.peer_urls.clone(),
        client_ur_ls: m.client_urls.clone(),
        is_learner,
    }
}

/// Every member, voters and learners, as etcd lists them.
pub(super) fn members_of(membership: &openraft::Membership<u64, Member>) -> Vec<PbMember> {
    let voters: BTreeSet<u64> = membership.voter_ids().collect();
    membership
        .nodes()
        .map(|(id, m)| pb_member(*id, m, !voters.contains(id)))
        .collect()
}
