//! The `fields` output format: etcdctl's `"Name" : value` lines.

use raftkv_proto::etcdserverpb::{DeleteRangeResponse, PutResponse, RangeResponse, ResponseHeader};
use raftkv_proto::mvccpb::KeyValue;

pub fn header(h: &Option<ResponseHeader>) -> String {
    let h = h.unwrap_or_default();
    format!(
        "\"ClusterID\" : {}\n\"MemberID\" : {}\n\"Revision\" : {}\n\"RaftTerm\" : {}\n",
        h.cluster_id, h.member_id, h.revision, h.raft_term
    )
}

pub fn kv(prefix: &str, kv: &KeyValue) -> String {
    format!(
        "\"{prefix}Key\" : {}\n\"{prefix}CreateRevision\" : {}\n\"{prefix}ModRevision\" : {}\n\"{prefix}Version\" : {}\n\"{prefix}Value\" : {}\n\"{prefix}Lease\" : {}\n",
        quote(&kv.key),
        kv.create_revision,
        kv.mod_revision,
        kv.version,
        quote(&kv.value),
        kv.lease
    )
}

/// Go's `%q` of bytes, as etcdctl prints keys and values in this format.
pub fn quote(bytes: &[u8]) -> String {
    super::go_quote_bytes(bytes)
}

/// `put`.
pub fn put(resp: &PutResponse) -> String {
    let mut out = header(&resp.header);
    if let Some(prev) = &resp.prev_kv {
        out.push_str(&kv("Prev", prev));
    }
    out
}

/// `get`.
pub fn range(resp: &RangeResponse) -> String {
    let mut out = header(&resp.header);
    for each in &resp.kvs {
        out.push_str(&kv("", each));
    }
    out.push_str(&format!(
        "\"More\" : {}\n\"Count\" : {}\n",
        resp.more, resp.count
    ));
    out
}

/// `watch`: the header, then each event's type, previous key-value and key-value.
pub fn watch(view: &super::WatchView) -> String {
    let mut out = header(&Some(view.header));
    for event in view.events() {
        out.push_str(&format!("\"Type\" : {}\n", super::event_type(event)));
        if let Some(prev) = &event.prev_kv {
            out.push_str(&kv("Prev", prev));
        }
        out.push_str(&kv("", &event.kv.clone().unwrap_or_default()));
    }
    out
}

/// `del`.
pub fn del(resp: &DeleteRangeResponse) -> String {
    let mut out = header(&resp.header);
    out.push_str(&format!("\"Deleted\" : {}\n", resp.deleted));
    for prev in &resp.prev_kvs {
        out.push_str(&kv("Prev", prev));
    }
    out
}

/// etcdctl's fields for an Auth response; `None` where etcdctl has no fields printer
/// (`user get`, `user list`).
pub fn auth(answer: &super::AuthAnswer) -> Option<String> {
    use super::AuthAnswer::*;
    let mut out = header(&answer.header());
    match answer {
        UserGet(..) | UserList(_) => return None,
        RoleGet(_, r) => {
            for p in &r.perm {
                let kind = raftkv_proto::authpb::permission::Type::try_from(p.perm_type)
                    .map_or_else(|_| p.perm_type.to_string(), |t| t.as_str_name().to_string());
                out.push_str(&format!("\"PermType\" :  {kind}\n"));
                out.push_str(&format!("\"Key\" : {}\n", quote(&p.key)));
                out.push_str(&format!("\"RangeEnd\" : {}\n", quote(&p.range_end)));
            }
        }
        RoleList(r) => {
            out.push_str("\"Roles\" :");
            for role in &r.roles {
                out.push(' ');
                out.push_str(&super::go_quote_bytes(role.as_bytes()));
            }
            out.push('\n');
        }
        _ => {}
    }
    Some(out)
}
