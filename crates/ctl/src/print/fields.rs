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
