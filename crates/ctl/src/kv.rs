//! `put`, `get` and `del`: etcdctl 3.4's flags turned into requests, and its three printers
//! (simple, json, fields) for the responses.

use anyhow::bail;
use raftkv_proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use raftkv_proto::etcdserverpb::{
    DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse, RangeRequest, RangeResponse,
    ResponseHeader, TxnResponse,
};
use raftkv_proto::mvccpb::KeyValue;

/// etcdctl's range end for `--prefix`: the key with its last byte below 0xff incremented
/// (trailing 0xff bytes dropped), or `"\0"` (every key) when there is no such byte.
pub fn prefix_end(key: &[u8]) -> Vec<u8> {
    let mut end = key.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// `put`'s arguments and flags (shared by the `put` command and `put` lines in a txn).
#[derive(Debug, Clone, clap::Args)]
pub struct PutArgs {
    /// The key.
    pub key: String,
    /// The value (read from standard input when omitted).
    pub value: Option<String>,
    /// Return the previous key-value pair before modification.
    #[arg(long)]
    pub prev_kv: bool,
    /// Updates the key using its current value.
    #[arg(long)]
    pub ignore_value: bool,
    /// Updates the key using its current lease.
    #[arg(long)]
    pub ignore_lease: bool,
}

impl PutArgs {
    /// The Put request, with `value` (the argument, or what stdin gave).
    pub fn request(&self, value: String) -> PutRequest {
        PutRequest {
            key: self.key.clone().into_bytes().into(),
            value: value.into_bytes().into(),
            prev_kv: self.prev_kv,
            ignore_value: self.ignore_value,
            ignore_lease: self.ignore_lease,
            ..Default::default()
        }
    }
}

/// `get`'s arguments and flags.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct GetArgs {
    /// The key, or the start of the range.
    pub key: String,
    /// The end of the range [key, range_end).
    pub range_end: Option<String>,
    /// Get keys with matching prefix.
    #[arg(long)]
    pub prefix: bool,
    /// Get keys that are greater than or equal to the given key using byte compare.
    #[arg(long)]
    pub from_key: bool,
    /// Maximum number of results.
    #[arg(long, default_value_t = 0)]
    pub limit: i64,
    /// Specify the kv revision.
    #[arg(long, default_value_t = 0)]
    pub rev: i64,
    /// Sort target; CREATE, KEY, MODIFY, VALUE, or VERSION.
    #[arg(long, default_value = "")]
    pub sort_by: String,
    /// Order of results; ASCEND or DESCEND (ASCEND by default).
    #[arg(long, default_value = "")]
    pub order: String,
    /// Get only the keys.
    #[arg(long)]
    pub keys_only: bool,
    /// Only write values when using the "simple" output format.
    #[arg(long)]
    pub print_value_only: bool,
    /// Linearizable(l) or Serializable(s).
    #[arg(long, default_value = "l")]
    pub consistency: String,
}

impl GetArgs {
    /// The Range request etcdctl sends for these arguments.
    pub fn request(&self) -> anyhow::Result<RangeRequest> {
        let (key, end) = key_range(
            &self.key,
            self.range_end.as_deref(),
            self.prefix,
            self.from_key,
        )?;
        let order = match self.order.to_uppercase().as_str() {
            "ASCEND" => SortOrder::Ascend,
            "DESCEND" => SortOrder::Descend,
            "" => SortOrder::None,
            _ => bail!("bad sort order {}", self.order),
        };
        let target = match self.sort_by.to_uppercase().as_str() {
            "CREATE" => SortTarget::Create,
            "KEY" | "" => SortTarget::Key,
            "MODIFY" => SortTarget::Mod,
            "VALUE" => SortTarget::Value,
            "VERSION" => SortTarget::Version,
            _ => bail!("bad sort target {}", self.sort_by),
        };
        // clientv3: ascending by key is the server's natural order, sent as "no sort".
        let order = if target == SortTarget::Key && order == SortOrder::Ascend {
            SortOrder::None
        } else {
            order
        };
        let serializable = match self.consistency.as_str() {
            "l" | "" => false,
            "s" => true,
            other => bail!("unknown consistency flag {other:?}"),
        };
        Ok(RangeRequest {
            key: key.into(),
            range_end: end.into(),
            limit: self.limit,
            revision: self.rev,
            sort_order: order as i32,
            sort_target: target as i32,
            serializable,
            keys_only: self.keys_only,
            ..Default::default()
        })
    }
}

/// `del`'s arguments and flags.
#[derive(Debug, Clone, clap::Args)]
pub struct DelArgs {
    /// The key, or the start of the range.
    pub key: String,
    /// The end of the range [key, range_end).
    pub range_end: Option<String>,
    /// Delete keys with matching prefix.
    #[arg(long)]
    pub prefix: bool,
    /// Delete keys that are greater than or equal to the given key using byte compare.
    #[arg(long)]
    pub from_key: bool,
    /// Return deleted key-value pairs.
    #[arg(long)]
    pub prev_kv: bool,
}

impl DelArgs {
    /// The DeleteRange request for these arguments.
    pub fn request(&self) -> anyhow::Result<DeleteRangeRequest> {
        let (key, end) = key_range(
            &self.key,
            self.range_end.as_deref(),
            self.prefix,
            self.from_key,
        )?;
        Ok(DeleteRangeRequest {
            key: key.into(),
            range_end: end.into(),
            prev_kv: self.prev_kv,
        })
    }
}

/// The (key, range_end) pair for a key, an optional range end and `--prefix` / `--from-key`,
/// with etcdctl's conventions (an empty key with either flag means every key).
fn key_range(
    key: &str,
    range_end: Option<&str>,
    prefix: bool,
    from_key: bool,
) -> anyhow::Result<(Vec<u8>, Vec<u8>)> {
    if prefix && from_key {
        bail!("`--prefix` and `--from-key` cannot be set at the same time, choose one");
    }
    let mut key = key.as_bytes().to_vec();
    let mut end = range_end.map(|e| e.as_bytes().to_vec()).unwrap_or_default();
    if prefix {
        end = if key.is_empty() {
            vec![0]
        } else {
            prefix_end(&key)
        };
    }
    if from_key {
        end = vec![0];
    }
    if (prefix || from_key) && key.is_empty() {
        key = vec![0];
    }
    Ok((key, end))
}

/// How responses are printed (`-w`), with `--hex` and `--print-value-only`.
#[derive(Debug, Clone)]
pub struct Printer {
    /// simple, json or fields.
    pub format: String,
    /// `--hex`.
    pub hex: bool,
}

impl Printer {
    /// A printer, refusing formats etcdctl refuses for KV responses.
    pub fn new(format: &str, hex: bool) -> anyhow::Result<Self> {
        match format {
            "simple" | "json" | "fields" => Ok(Self {
                format: format.into(),
                hex,
            }),
            "table" => bail!("table not supported as output format"),
            "protobuf" => bail!("protobuf output is not supported by raftkvctl"),
            other => bail!("unknown output format {other:?}"),
        }
    }

    fn text(&self, bytes: &[u8]) -> String {
        if self.hex {
            let mut out = String::with_capacity(bytes.len() * 4);
            for b in bytes {
                out.push_str(&format!("\\x{b:02x}"));
            }
            out
        } else {
            String::from_utf8_lossy(bytes).into_owned()
        }
    }

    fn simple_kv(&self, out: &mut String, kv: &KeyValue, value_only: bool) {
        if !value_only {
            out.push_str(&self.text(&kv.key));
            out.push('\n');
        }
        out.push_str(&self.text(&kv.value));
        out.push('\n');
    }

    /// `put`'s output.
    pub fn put(&self, resp: &PutResponse) -> String {
        match self.format.as_str() {
            "json" => format!("{}\n", json_put(resp)),
            "fields" => {
                let mut out = fields_header(&resp.header);
                if let Some(kv) = &resp.prev_kv {
                    out.push_str(&fields_kv("Prev", kv));
                }
                out
            }
            _ => {
                let mut out = "OK\n".to_string();
                if let Some(kv) = &resp.prev_kv {
                    self.simple_kv(&mut out, kv, false);
                }
                out
            }
        }
    }

    /// `get`'s output.
    pub fn get(&self, resp: &RangeResponse, value_only: bool) -> String {
        match self.format.as_str() {
            "json" => format!("{}\n", json_range(resp)),
            "fields" => {
                let mut out = fields_header(&resp.header);
                for kv in &resp.kvs {
                    out.push_str(&fields_kv("", kv));
                }
                out.push_str(&format!(
                    "\"More\" : {}\n\"Count\" : {}\n",
                    resp.more, resp.count
                ));
                out
            }
            _ => {
                let mut out = String::new();
                for kv in &resp.kvs {
                    self.simple_kv(&mut out, kv, value_only);
                }
                out
            }
        }
    }

    /// `del`'s output.
    pub fn del(&self, resp: &DeleteRangeResponse) -> String {
        match self.format.as_str() {
            "json" => format!("{}\n", json_del(resp)),
            "fields" => {
                let mut out = fields_header(&resp.header);
                out.push_str(&format!("\"Deleted\" : {}\n", resp.deleted));
                for kv in &resp.prev_kvs {
                    out.push_str(&fields_kv("Prev", kv));
                }
                out
            }
            _ => {
                let mut out = format!("{}\n", resp.deleted);
                for kv in &resp.prev_kvs {
                    self.simple_kv(&mut out, kv, false);
                }
                out
            }
        }
    }
}

/// Go's encoding/json of a PutResponse.
pub fn json_put(resp: &PutResponse) -> String {
    let mut fields = vec![json_header_field(&resp.header)];
    if let Some(kv) = &resp.prev_kv {
        fields.push(format!("\"prev_kv\":{}", json_kv(kv)));
    }
    format!("{{{}}}", fields.join(","))
}

/// Go's encoding/json of a RangeResponse.
pub fn json_range(resp: &RangeResponse) -> String {
    let mut fields = vec![json_header_field(&resp.header)];
    if !resp.kvs.is_empty() {
        let kvs: Vec<String> = resp.kvs.iter().map(json_kv).collect();
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
pub fn json_del(resp: &DeleteRangeResponse) -> String {
    let mut fields = vec![json_header_field(&resp.header)];
    if resp.deleted != 0 {
        fields.push(format!("\"deleted\":{}", resp.deleted));
    }
    if !resp.prev_kvs.is_empty() {
        let kvs: Vec<String> = resp.prev_kvs.iter().map(json_kv).collect();
        fields.push(format!("\"prev_kvs\":[{}]", kvs.join(",")));
    }
    format!("{{{}}}", fields.join(","))
}

/// Go's encoding/json of a TxnResponse (oneof responses as `{"Response":{"ResponsePut":…}}`).
pub fn json_txn(resp: &TxnResponse) -> String {
    use raftkv_proto::etcdserverpb::response_op::Response;
    let mut fields = vec![json_header_field(&resp.header)];
    if resp.succeeded {
        fields.push("\"succeeded\":true".into());
    }
    if !resp.responses.is_empty() {
        let ops: Vec<String> = resp
            .responses
            .iter()
            .map(|op| match &op.response {
                Some(Response::ResponsePut(r)) => {
                    format!("{{\"Response\":{{\"ResponsePut\":{}}}}}", json_put(r))
                }
                Some(Response::ResponseRange(r)) => {
                    format!("{{\"Response\":{{\"ResponseRange\":{}}}}}", json_range(r))
                }
                Some(Response::ResponseDeleteRange(r)) => {
                    format!(
                        "{{\"Response\":{{\"ResponseDeleteRange\":{}}}}}",
                        json_del(r)
                    )
                }
                Some(Response::ResponseTxn(r)) => {
                    format!("{{\"Response\":{{\"ResponseTxn\":{}}}}}", json_txn(r))
                }
                None => "{}".into(),
            })
            .collect();
        fields.push(format!("\"responses\":[{}]", ops.join(",")));
    }
    format!("{{{}}}", fields.join(","))
}

/// Go's encoding/json of a header: zero fields left out.
pub fn json_header_field(h: &Option<ResponseHeader>) -> String {
    let h = h.unwrap_or_default();
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
    format!("\"header\":{{{}}}", fields.join(","))
}

/// Go's encoding/json of a KeyValue: bytes as base64, zero fields left out.
fn json_kv(kv: &KeyValue) -> String {
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

fn fields_header(h: &Option<ResponseHeader>) -> String {
    let h = h.unwrap_or_default();
    format!(
        "\"ClusterID\" : {}\n\"MemberID\" : {}\n\"Revision\" : {}\n\"RaftTerm\" : {}\n",
        h.cluster_id, h.member_id, h.revision, h.raft_term
    )
}

fn fields_kv(prefix: &str, kv: &KeyValue) -> String {
    format!(
        "\"{prefix}Key\" : {}\n\"{prefix}CreateRevision\" : {}\n\"{prefix}ModRevision\" : {}\n\"{prefix}Version\" : {}\n\"{prefix}Value\" : {}\n\"{prefix}Lease\" : {}\n",
        go_quote(&kv.key),
        kv.create_revision,
        kv.mod_revision,
        kv.version,
        go_quote(&kv.value),
        kv.lease
    )
}

/// Go's `%q` of a string: double quotes, escapes for quotes, backslashes and non-printables.
fn go_quote(bytes: &[u8]) -> String {
    let s = String::from_utf8_lossy(bytes);
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
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

    #[test]
    fn prefix_ends_like_clientv3() {
        assert_eq!(prefix_end(b"a"), b"b");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff\xff"), b"\0");
    }
}
