//! `put`, `get` and `del`: etcdctl 3.4's flags turned into requests, and its three printers
//! (simple, json, fields) for the responses.

use raftkv_proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use raftkv_proto::etcdserverpb::{DeleteRangeRequest, PutRequest, RangeRequest};

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
    /// Arguments past these: ignored, as etcdctl ignores them.
    #[arg(hide = true)]
    pub ignored: Vec<String>,
    /// Return the previous key-value pair before modification.
    #[arg(long)]
    pub prev_kv: bool,
    /// Updates the key using its current value.
    #[arg(long)]
    pub ignore_value: bool,
    /// Updates the key using its current lease.
    #[arg(long)]
    pub ignore_lease: bool,
    /// Lease ID (in hexadecimal) to attach to the key.
    #[arg(long, default_value = "0")]
    pub lease: String,
}

impl PutArgs {
    /// The value to put, as etcdctl's `getPutOp` takes it: the argument, nothing with
    /// `--ignore-value` (which refuses an argument), or else what `stdin` gives, which must
    /// not be empty. Refusals are its ExitBadArgs (128) errors.
    pub fn value(&self, stdin: impl FnOnce() -> std::io::Result<String>) -> anyhow::Result<String> {
        let bad_args = |message: &str| -> anyhow::Error { crate::Exit(128, message.into()).into() };
        match &self.value {
            Some(_) if self.ignore_value => Err(bad_args(
                "put command needs only 1 argument when 'ignore-value' is set",
            )),
            Some(value) => Ok(value.clone()),
            None if self.ignore_value => Ok(String::new()),
            None => {
                let input = stdin()?;
                if input.is_empty() {
                    return Err(bad_args(crate::parse_errors::PUT_ARGUMENTS));
                }
                Ok(input)
            }
        }
    }

    /// The Put request, with `value` (the argument, or what stdin gave).
    pub fn request(&self, value: String) -> anyhow::Result<PutRequest> {
        let lease = crate::lease::parse_hex(&self.lease)
            .map_err(|e| crate::Exit(128, format!("bad lease ID ({e}), expecting ID in Hex")))?;
        Ok(PutRequest {
            key: self.key.clone().into_bytes().into(),
            value: value.into_bytes().into(),
            prev_kv: self.prev_kv,
            ignore_value: self.ignore_value,
            ignore_lease: self.ignore_lease,
            lease,
        })
    }
}

/// `get`'s arguments and flags.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct GetArgs {
    /// The key, or the start of the range.
    pub key: String,
    /// The end of the range [key, range_end).
    pub range_end: Option<String>,
    /// Arguments past these: ignored, as etcdctl ignores them.
    #[arg(hide = true)]
    pub ignored: Vec<String>,
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
            _ => return Err(bad_feature(format!("bad sort order {}", self.order))),
        };
        let target = match self.sort_by.to_uppercase().as_str() {
            "CREATE" => SortTarget::Create,
            "KEY" | "" => SortTarget::Key,
            "MODIFY" => SortTarget::Mod,
            "VALUE" => SortTarget::Value,
            "VERSION" => SortTarget::Version,
            _ => return Err(bad_feature(format!("bad sort target {}", self.sort_by))),
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
            other => return Err(bad_feature(format!("unknown consistency flag {other:?}"))),
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

/// etcdctl's ExitBadFeature (4), which it gives a bad `--consistency`, `--order` or
/// `--sort-by` wherever the flag is read (a `get` command or a txn's get line).
fn bad_feature(message: String) -> anyhow::Error {
    crate::Exit(4, message).into()
}

/// The (key, range_end) pair for a key, an optional range end and `--prefix` / `--from-key`,
/// with etcdctl's conventions (an empty key with either flag means every key); a
/// combination etcdctl refuses is its ExitBadArgs (128) error, in a txn line too.
fn key_range(
    key: &str,
    range_end: Option<&str>,
    prefix: bool,
    from_key: bool,
) -> anyhow::Result<(Vec<u8>, Vec<u8>)> {
    let bad_args = |message: &str| -> anyhow::Error { crate::Exit(128, message.into()).into() };
    if prefix && from_key {
        return Err(bad_args(
            "`--prefix` and `--from-key` cannot be set at the same time, choose one",
        ));
    }
    if range_end.is_some() && (prefix || from_key) {
        return Err(bad_args(
            "too many arguments, only accept one argument when `--prefix` or `--from-key` is set",
        ));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_ends_like_clientv3() {
        assert_eq!(prefix_end(b"a"), b"b");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff\xff"), b"\0");
    }
}
