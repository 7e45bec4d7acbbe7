//! The `json` output format: Go's encoding/json of etcd's responses, as etcdctl prints them
//! (zero values left out, bytes as base64, `<`, `>` and `&` escaped).

use raftkv_proto::etcdserverpb::{
    DeleteRangeResponse, Member, PutResponse, RangeResponse, ResponseHeader, StatusResponse,
    TxnResponse,
};
use raftkv_proto::mvccpb::KeyValue;

/// Go's encoding/json of a PutResponse.
pub fn put(resp: &PutResponse) -> String {
    let mut fields = vec![header_field(&resp.header)];
    if let Some(kv) = &resp.prev_kv {
        fields.push(format!("\"prev_kv\":{}", key_value(kv)));
    }
    format!("{{{}}}", fields.join(","))
}

/// Go's encoding/json of a RangeResponse.
pub fn range(resp: &RangeResponse) -> String {
    let mut fields = vec![header_field(&resp.header)];
    if !resp.kvs.is_empty() {
        let kvs: Vec<String> = resp.kvs.iter().map(key_value).collect();
        fields.push(format!("\"kvs\":[{}]", kvs.join(",")));
    }
    if resp.more {
        fields.push("\"more\":true".into());
    }
    if resp.count != 0 {
        fields.push(format!("\"count\":{}", resp.count));
    }
    format!("{{{}}}", fields.join(","))
}

/// Go's encoding/json of a DeleteRangeResponse.
pub fn del(resp: &DeleteRangeResponse) -> String {
    let mut fields = vec![header_field(&resp.header)];
    if resp.deleted != 0 {
        fields.push(format!("\"deleted\":{}", resp.deleted));
    }
    if !resp.prev_kvs.is_empty() {
        let kvs: Vec<String> = resp.prev_kvs.iter().map(key_value).collect();
        fields.push(format!("\"prev_kvs\":[{}]", kvs.join(",")));
    }
    format!("{{{}}}", fields.join(","))
}

/// Go's encoding/json of a TxnResponse (oneof responses as `{"Response":{"ResponsePut":…}}`).
pub fn txn(resp: &TxnResponse) -> String {
    use raftkv_proto::etcdserverpb::response_op::Response;
    let mut fields = vec![header_field(&resp.header)];
    if resp.succeeded {
        fields.push("\"succeeded\":true".into());
    }
    if !resp.responses.is_empty() {
        let ops: Vec<String> = resp
            .responses
            .iter()
            .map(|op| match &op.response {
                Some(Response::ResponsePut(r)) => {
                    format!("{{\"Response\":{{\"ResponsePut\":{}}}}}", put(r))
                }
                Some(Response::ResponseRange(r)) => {
                    format!("{{\"Response\":{{\"ResponseRange\":{}}}}}", range(r))
                }
                Some(Response::ResponseDeleteRange(r)) => {
                    format!("{{\"Response\":{{\"ResponseDeleteRange\":{}}}}}", del(r))
                }
                Some(Response::ResponseTxn(r)) => {
                    format!("{{\"Response\":{{\"ResponseTxn\":{}}}}}", txn(r))
                }
                None => "{}".into(),
            })
            .collect();
        fields.push(format!("\"responses\":[{}]", ops.join(",")));
    }
    format!("{{{}}}", fields.join(","))
}

/// Go's encoding/json of a header: zero fields left out.
pub fn header_field(h: &Option<ResponseHeader>) -> String {
    format!("\"header\":{}", header_object(&h.unwrap_or_default()))
}

/// Go's encoding/json of clientv3's WatchResponse (a struct without json tags around etcd's
/// header and events: `Header`, `Events` — `null` when Go's slice is nil —,
/// `CompactRevision`, `Canceled`, `Created`, none left out).
pub fn watch(view: &super::WatchView) -> String {
    let events = match &view.events {
        None => "null".to_string(),
        Some(events) => {
            let events: Vec<String> = events.iter().map(event).collect();
            format!("[{}]", events.join(","))
        }
    };
    format!(
        "{{\"Header\":{},\"Events\":{},\"CompactRevision\":{},\"Canceled\":{},\"Created\":{}}}",
        header_object(&view.header),
        events,
        view.compact_revision,
        view.canceled,
        view.created
    )
}

/// Go's encoding/json of an mvccpb.Event: the type as a number (left out for PUT), the
/// key-values left out when absent.
pub fn event(e: &raftkv_proto::mvccpb::Event) -> String {
    let mut fields = Vec::new();
    if e.r#type != 0 {
        fields.push(format!("\"type\":{}", e.r#type));
    }
    if let Some(kv) = &e.kv {
        fields.push(format!("\"kv\":{}", key_value(kv)));
    }
    if let Some(kv) = &e.prev_kv {
        fields.push(format!("\"prev_kv\":{}", key_value(kv)));
    }
    format!("{{{}}}", fields.join(","))
}

/// Go's encoding/json of a ResponseHeader: zero fields left out.
pub fn header_object(h: &ResponseHeader) -> String {
    let mut fields = Vec::new();
    if h.cluster_id != 0 {
        fields.push(format!("\"cluster_id\":{}", h.cluster_id));
    }
    if h.member_id != 0 {
        fields.push(format!("\"member_id\":{}", h.member_id));
    }
    if h.revision != 0 {
        fields.push(format!("\"revision\":{}", h.revision));
    }
    if h.raft_term != 0 {
        fields.push(format!("\"raft_term\":{}", h.raft_term));
    }
    format!("{{{}}}", fields.join(","))
}

/// Go's encoding/json of a KeyValue: bytes as base64, zero fields left out.
pub fn key_value(kv: &KeyValue) -> String {
    let mut fields = Vec::new();
    if !kv.key.is_empty() {
        fields.push(format!("\"key\":\"{}\"", base64(&kv.key)));
    }
    for (name, v) in [
        ("create_revision", kv.create_revision),
        ("mod_revision", kv.mod_revision),
        ("version", kv.version),
    ] {
        if v != 0 {
            fields.push(format!("\"{name}\":{v}"));
        }
    }
    if !kv.value.is_empty() {
        fields.push(format!("\"value\":\"{}\"", base64(&kv.value)));
    }
    if kv.lease != 0 {
        fields.push(format!("\"lease\":{}", kv.lease));
    }
    format!("{{{}}}", fields.join(","))
}

/// Standard base64 with padding, as Go's encoding/json writes []byte.
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

pub fn member(m: &Member) -> String {
    let strings = |v: &[String]| v.iter().map(|s| string(s)).collect::<Vec<_>>().join(",");
    let mut fields = Vec::new();
    if m.id != 0 {
        fields.push(format!("\"ID\":{}", m.id));
    }
    if !m.name.is_empty() {
        fields.push(format!("\"name\":{}", string(&m.name)));
    }
    if !m.peer_ur_ls.is_empty() {
        fields.push(format!("\"peerURLs\":[{}]", strings(&m.peer_ur_ls)));
    }
    if !m.client_ur_ls.is_empty() {
        fields.push(format!("\"clientURLs\":[{}]", strings(&m.client_ur_ls)));
    }
    if m.is_learner {
        fields.push("\"isLearner\":true".into());
    }
    format!("{{{}}}", fields.join(","))
}

/// A JSON string literal (Go's encoding/json escapes `<`, `>` and `&` as well).
pub fn string(s: &str) -> String {
    super::go_quote(s, super::Quoting::Json)
}

/// Go's encoding/json of a HashKVResponse (zero fields left out).
pub fn hash_kv(h: &raftkv_proto::etcdserverpb::HashKvResponse) -> String {
    let mut fields = vec![header_field(&h.header)];
    if h.hash != 0 {
        fields.push(format!("\"hash\":{}", h.hash));
    }
    if h.compact_revision != 0 {
        fields.push(format!("\"compact_revision\":{}", h.compact_revision));
    }
    format!("{{{}}}", fields.join(","))
}

pub fn status(s: &StatusResponse) -> String {
    let mut fields = vec![header_field(&s.header)];
    if !s.version.is_empty() {
        fields.push(format!("\"version\":{}", string(&s.version)));
    }
    for (name, v) in [
        ("dbSize", s.db_size as i128),
        ("leader", s.leader as i128),
        ("raftIndex", s.raft_index as i128),
        ("raftTerm", s.raft_term as i128),
        ("raftAppliedIndex", s.raft_applied_index as i128),
    ] {
        if v != 0 {
            fields.push(format!("\"{name}\":{v}"));
        }
    }
    if !s.errors.is_empty() {
        let errors: Vec<String> = s.errors.iter().map(|e| string(e)).collect();
        fields.push(format!("\"errors\":[{}]", errors.join(",")));
    }
    if s.db_size_in_use != 0 {
        fields.push(format!("\"dbSizeInUse\":{}", s.db_size_in_use));
    }
    if s.is_learner {
        fields.push("\"isLearner\":true".into());
    }
    format!("{{{}}}", fields.join(","))
}

/// Go's encoding/json of an Auth response (etcdctl prints the protobuf message as it is):
/// the header, then the lists, each left out when empty.
pub fn auth(answer: &super::AuthAnswer) -> String {
    use super::AuthAnswer::*;
    let strings = |name: &str, v: &[String]| {
        (!v.is_empty()).then(|| {
            let items: Vec<String> = v.iter().map(|s| string(s)).collect();
            format!("\"{name}\":[{}]", items.join(","))
        })
    };
    let mut fields = vec![header_field(&answer.header())];
    fields.extend(match answer {
        UserGet(_, r) => strings("roles", &r.roles),
        UserList(r) => strings("users", &r.users),
        RoleList(r) => strings("roles", &r.roles),
        RoleGet(_, r) => (!r.perm.is_empty()).then(|| {
            let perms: Vec<String> = r.perm.iter().map(permission).collect();
            format!("\"perm\":[{}]", perms.join(","))
        }),
        _ => None,
    });
    format!("{{{}}}", fields.join(","))
}

/// Go's encoding/json of an authpb.Permission: zero fields left out.
fn permission(p: &raftkv_proto::authpb::Permission) -> String {
    let mut fields = Vec::new();
    if p.perm_type != 0 {
        fields.push(format!("\"permType\":{}", p.perm_type));
    }
    if !p.key.is_empty() {
        fields.push(format!("\"key\":\"{}\"", base64(&p.key)));
    }
    if !p.range_end.is_empty() {
        fields.push(format!("\"range_end\":\"{}\"", base64(&p.range_end)));
    }
    format!("{{{}}}", fields.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_go() {
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"baz"), "YmF6");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b""), "");
    }
}
