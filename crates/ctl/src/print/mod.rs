//! How responses are printed: one module per output format etcdctl knows (`-w simple`,
//! `json`, `fields`, `table`, and `protobuf` for watch), and [`Printer`], which picks one for
//! a command's response.

pub mod fields;
pub mod json;
pub mod protobuf;
pub mod simple;
pub mod table;

use anyhow::bail;
use raftkv_proto::etcdserverpb::{
    AuthRoleGetResponse, AuthRoleListResponse, AuthUserGetResponse, AuthUserListResponse,
    DeleteRangeResponse, PutResponse, RangeResponse, ResponseHeader,
};
use raftkv_proto::mvccpb::Event;

/// An Auth command's answer with what its printers need of the command line (etcdctl's
/// `display.UserAdd(name, resp)` and the like).
#[derive(Debug, Clone)]
pub enum AuthAnswer {
    /// `user add`.
    UserAdd(String, Option<ResponseHeader>),
    /// `user delete`.
    UserDelete(String, Option<ResponseHeader>),
    /// `user get` (without `--detail`).
    UserGet(String, AuthUserGetResponse),
    /// `user list`.
    UserList(AuthUserListResponse),
    /// `user passwd`.
    UserPasswd(Option<ResponseHeader>),
    /// `user grant-role`: user, role.
    UserGrantRole(String, String, Option<ResponseHeader>),
    /// `user revoke-role`: user, role.
    UserRevokeRole(String, String, Option<ResponseHeader>),
    /// `role add`.
    RoleAdd(String, Option<ResponseHeader>),
    /// `role delete`.
    RoleDelete(String, Option<ResponseHeader>),
    /// `role get` (and each role of `user get --detail`).
    RoleGet(String, AuthRoleGetResponse),
    /// `role list`.
    RoleList(AuthRoleListResponse),
    /// `role grant-permission`.
    RoleGrantPermission(String, Option<ResponseHeader>),
    /// `role revoke-permission`: role, key as given, range end.
    RoleRevokePermission(String, String, String, Option<ResponseHeader>),
}

impl AuthAnswer {
    /// The answer's header.
    pub fn header(&self) -> Option<ResponseHeader> {
        match self {
            Self::UserAdd(_, h)
            | Self::UserDelete(_, h)
            | Self::UserPasswd(h)
            | Self::UserGrantRole(_, _, h)
            | Self::UserRevokeRole(_, _, h)
            | Self::RoleAdd(_, h)
            | Self::RoleDelete(_, h)
            | Self::RoleGrantPermission(_, h)
            | Self::RoleRevokePermission(_, _, _, h) => *h,
            Self::UserGet(_, r) => r.header,
            Self::UserList(r) => r.header,
            Self::RoleGet(_, r) => r.header,
            Self::RoleList(r) => r.header,
        }
    }
}

/// How Go quotes a string: `%q` (fields) or encoding/json (json).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quoting {
    /// `%q`: control characters and DEL as `\xNN`.
    Printf,
    /// encoding/json: control characters, `<`, `>` and `&` as `\u00NN`.
    Json,
}

/// `s` in double quotes, escaped as Go's `quoting` does it.
pub fn go_quote(s: &str, quoting: Quoting) -> String {
    if quoting == Quoting::Printf {
        return go_quote_bytes(s.as_bytes());
    }
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '<' | '>' | '&' if quoting == Quoting::Json => {
                out.push_str(&format!("\\u{:04x}", c as u32));
            }
            c if (c as u32) < 0x20 && quoting == Quoting::Json => {
                out.push_str(&format!("\\u{:04x}", c as u32));
            }
            c if (c as u32) < 0x20 || (c as u32 == 0x7f && quoting == Quoting::Printf) => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Go's `%q` of bytes (`strconv.Quote`): `\a \b \f \n \r \t \v`, other control
/// characters and DEL as `\xNN`, C1 controls as `\u00NN`, each byte that is not UTF-8 as
/// `\xNN`.
pub fn go_quote_bytes(bytes: &[u8]) -> String {
    let mut out = String::from("\"");
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\u{7}' => out.push_str("\\a"),
                '\u{8}' => out.push_str("\\b"),
                '\u{c}' => out.push_str("\\f"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                '\u{b}' => out.push_str("\\v"),
                c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                    out.push_str(&format!("\\x{:02x}", c as u32));
                }
                c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out.push('"');
    out
}

/// A watch answer as clientv3 hands it to etcdctl's printers (its `WatchResponse`).
#[derive(Debug, Clone, Default)]
pub struct WatchView {
    /// The header (all zero in an answer clientv3 makes up when a watch fails).
    pub header: ResponseHeader,
    /// The events; `None` is Go's nil slice (json `null`), in the answers clientv3 makes up.
    pub events: Option<Vec<Event>>,
    /// The compaction that canceled the watch.
    pub compact_revision: i64,
    /// The watch is over.
    pub canceled: bool,
    /// A created answer (clientv3 passes none to etcdctl; kept for the json field).
    pub created: bool,
}

impl WatchView {
    /// The events (none for a nil slice).
    pub fn events(&self) -> &[Event] {
        self.events.as_deref().unwrap_or_default()
    }

    /// clientv3's `IsProgressNotify`.
    pub fn is_progress_notify(&self) -> bool {
        self.events().is_empty()
            && !self.canceled
            && !self.created
            && self.compact_revision == 0
            && self.header.revision != 0
    }
}

/// Go's name of an event type (`PUT`, `DELETE`; the number for any other).
pub fn event_type(event: &Event) -> String {
    match event.r#type {
        0 => "PUT".into(),
        1 => "DELETE".into(),
        n => n.to_string(),
    }
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

    /// An Auth command's answer in this format; etcdctl refuses `table` (and `fields` for
    /// `user get` and `user list`) only once it has the answer.
    pub fn auth(&self, answer: &AuthAnswer) -> anyhow::Result<String> {
        let unsupported = || anyhow::anyhow!("{} not supported as output format", self.format);
        match self.format.as_str() {
            "simple" => Ok(simple::auth(answer)),
            "json" => Ok(json::auth(answer)),
            "fields" => fields::auth(answer).ok_or_else(unsupported),
            _ => Err(unsupported()),
        }
    }

    /// A printer for `watch`, which also knows `protobuf` (and takes `table`, to refuse it
    /// at the first answer as etcdctl does).
    pub fn for_watch(format: &str, hex: bool) -> anyhow::Result<Self> {
        match format {
            "simple" | "json" | "fields" | "protobuf" | "table" => Ok(Self {
                format: format.into(),
                hex,
            }),
            _ => bail!("unsupported output format"),
        }
    }

    /// One watch answer's output (bytes: `protobuf` is binary).
    pub fn watch(&self, view: &WatchView) -> anyhow::Result<Vec<u8>> {
        Ok(match self.format.as_str() {
            "json" => format!("{}\n", json::watch(view)).into_bytes(),
            "fields" => fields::watch(view).into_bytes(),
            "protobuf" => protobuf::watch(view),
            "table" => bail!("table not supported as output format"),
            _ => simple::watch(view, self.hex).into_bytes(),
        })
    }

    /// `put`'s output.
    pub fn put(&self, resp: &PutResponse) -> String {
        match self.format.as_str() {
            "json" => format!("{}\n", json::put(resp)),
            "fields" => fields::put(resp),
            _ => simple::put(resp, self.hex),
        }
    }

    /// `get`'s output.
    pub fn get(&self, resp: &RangeResponse, value_only: bool) -> String {
        match self.format.as_str() {
            "json" => format!("{}\n", json::range(resp)),
            "fields" => fields::range(resp),
            _ => simple::range(resp, value_only, self.hex),
        }
    }

    /// `del`'s output.
    pub fn del(&self, resp: &DeleteRangeResponse) -> String {
        match self.format.as_str() {
            "json" => format!("{}\n", json::del(resp)),
            "fields" => fields::del(resp),
            _ => simple::del(resp, self.hex),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_as_go_does() {
        let s = "a\"b\\c\n<&>\u{1}\u{7f}";
        assert_eq!(
            go_quote(s, Quoting::Printf),
            "\"a\\\"b\\\\c\\n<&>\\x01\\x7f\""
        );
        assert_eq!(
            go_quote(s, Quoting::Json),
            "\"a\\\"b\\\\c\\n\\u003c\\u0026\\u003e\\u0001\u{7f}\""
        );
        assert_eq!(
            go_quote_bytes(b"\x07\x08\x0b\x0c\xff\xc2\x85\xc3\xa9"),
            "\"\\a\\b\\v\\f\\xff\\u0085\u{e9}\""
        );
    }
}
