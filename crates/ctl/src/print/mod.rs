//! How responses are printed: one module per output format etcdctl knows (`-w simple`,
//! `json`, `fields`, `table`), and [`Printer`], which picks one for a command's response.

pub mod fields;
pub mod json;
pub mod simple;
pub mod table;

use anyhow::bail;
use raftkv_proto::etcdserverpb::{DeleteRangeResponse, PutResponse, RangeResponse};

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
    }
}
