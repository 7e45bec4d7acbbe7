//! The `simple` output format: etcdctl's default lines.

use raftkv_proto::etcdserverpb::{DeleteRangeResponse, PutResponse, RangeResponse};
use raftkv_proto::mvccpb::KeyValue;

/// Bytes as text, or as `\xNN` escapes with `--hex`.
pub fn text(bytes: &[u8], hex: bool) -> String {
    if hex {
        let mut out = String::with_capacity(bytes.len() * 4);
        for b in bytes {
            out.push_str(&format!("\\x{b:02x}"));
        }
        out
    } else {
        String::from_utf8_lossy(bytes).into_owned()
    }
}

/// A key line and a value line (only the value with `--print-value-only`).
fn kv(out: &mut String, kv: &KeyValue, value_only: bool, hex: bool) {
    if !value_only {
        out.push_str(&text(&kv.key, hex));
        out.push('\n');
    }
    out.push_str(&text(&kv.value, hex));
    out.push('\n');
}

/// `put`: OK, then the previous key and value with `--prev-kv`.
pub fn put(resp: &PutResponse, hex: bool) -> String {
    let mut out = "OK\n".to_string();
    if let Some(prev) = &resp.prev_kv {
        kv(&mut out, prev, false, hex);
    }
    out
}

/// `get`: each key and value.
pub fn range(resp: &RangeResponse, value_only: bool, hex: bool) -> String {
    let mut out = String::new();
    for each in &resp.kvs {
        kv(&mut out, each, value_only, hex);
    }
    out
}

/// `watch`: each event's type, then its previous key and value (with `--prev-kv`), then
/// its key and value.
pub fn watch(view: &super::WatchView, hex: bool) -> String {
    let mut out = String::new();
    for event in view.events() {
        out.push_str(&super::event_type(event));
        out.push('\n');
        if let Some(prev) = &event.prev_kv {
            kv(&mut out, prev, false, hex);
        }
        kv(&mut out, &event.kv.clone().unwrap_or_default(), false, hex);
    }
    out
}

/// `del`: the count, then the previous keys and values with `--prev-kv`.
pub fn del(resp: &DeleteRangeResponse, hex: bool) -> String {
    let mut out = format!("{}\n", resp.deleted);
    for prev in &resp.prev_kvs {
        kv(&mut out, prev, false, hex);
    }
    out
}
