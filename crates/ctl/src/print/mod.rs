//! How responses are printed: one module per output format etcdctl knows (`-w simple`,
//! `json`, `fields`, `table`), and [`Printer`], which picks one for a command's response.

pub mod fields;
pub mod json;
pub mod simple;
pub mod table;

use anyhow::bail;
use raftkv_proto::etcdserverpb::{DeleteRangeResponse, PutResponse, RangeResponse};

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
