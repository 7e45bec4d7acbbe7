//! `txn`: etcdctl's transaction syntax (compares, a blank line, success requests, a blank
//! line, failure requests) and its simple and json printers.

use std::io::BufRead;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use raftkv_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use raftkv_proto::etcdserverpb::request_op::Request;
use raftkv_proto::etcdserverpb::response_op::Response;
use raftkv_proto::etcdserverpb::{Compare, RequestOp, TxnRequest, TxnResponse};

use crate::kv::{DelArgs, GetArgs, PutArgs};
use crate::print::{Printer, json};

/// Reads a txn from `input`; with `interactive`, prompts on stdout as etcdctl does.
///
/// As etcdctl: each line is parsed as it is read, so the first bad line is the error; a
/// line is trimmed of white space at both ends, and an empty one ends its section; input
/// that ends before a section's empty line (or inside a line) is Go's `io.EOF` error, and
/// nothing is sent.
pub fn read(input: &mut dyn BufRead, interactive: bool) -> anyhow::Result<TxnRequest> {
    Ok(TxnRequest {
        compare: section(input, interactive, "compares:", parse_compare)?,
        success: section(
            input,
            interactive,
            "success requests (get, put, del):",
            parse_op,
        )?,
        failure: section(
            input,
            interactive,
            "failure requests (get, put, del):",
            parse_op,
        )?,
    })
}

/// One section of a txn: lines parsed by `parse` up to an empty one.
fn section<T>(
    input: &mut dyn BufRead,
    interactive: bool,
    prompt: &str,
    parse: impl Fn(&str) -> anyhow::Result<T>,
) -> anyhow::Result<Vec<T>> {
    if interactive {
        println!("{prompt}");
    }
    let mut parsed = Vec::new();
    loop {
        let mut line = String::new();
        if input.read_line(&mut line)? == 0 || !line.ends_with('\n') {
            bail!("EOF");
        }
        let line = line.trim();
        if line.is_empty() {
            return Ok(parsed);
        }
        parsed.push(parse(line)?);
    }
}

/// Parses `target("key") op "value"`, e.g. `value("foo") = "bar"`, `mod("foo") > "3"`.
pub fn parse_compare(line: &str) -> anyhow::Result<Compare> {
    let malformed = || anyhow::anyhow!("malformed comparison: {line}");
    let (target, rest) = line.split_once('(').ok_or_else(malformed)?;
    let rest = rest.trim_start();
    let (key, rest) = take_quoted(rest).ok_or_else(malformed)?;
    let rest = rest.strip_prefix(')').ok_or_else(malformed)?.trim_start();
    let (op, rest) = rest.split_once(char::is_whitespace).ok_or_else(malformed)?;
    let (value, _) = take_quoted(rest.trim_start()).ok_or_else(malformed)?;
    let result = match op {
        "=" => CompareResult::Equal,
        "!=" => CompareResult::NotEqual,
        ">" => CompareResult::Greater,
        "<" => CompareResult::Less,
        _ => bail!("malformed comparison: {line} (unknown op {op})"),
    };
    let int = || {
        value
            .parse::<i64>()
            .map_err(|_| anyhow::anyhow!("invalid txn compare request: {line}"))
    };
    let (target, union) = match target {
        "ver" | "version" => (CompareTarget::Version, TargetUnion::Version(int()?)),
        "c" | "create" => (CompareTarget::Create, TargetUnion::CreateRevision(int()?)),
        "m" | "mod" => (CompareTarget::Mod, TargetUnion::ModRevision(int()?)),
        "val" | "value" => (
            CompareTarget::Value,
            TargetUnion::Value(value.clone().into_bytes().into()),
        ),
        "lease" => (
            CompareTarget::Lease,
            TargetUnion::Lease(
                i64::from_str_radix(&value, 16)
                    .map_err(|_| anyhow::anyhow!("invalid txn compare request: {line}"))?,
            ),
        ),
        other => bail!("malformed comparison: {line} (unknown target {other})"),
    };
    Ok(Compare {
        result: result as i32,
        target: target as i32,
        key: key.into_bytes().into(),
        target_union: Some(union),
        range_end: Default::default(),
    })
}

/// A Go-quoted string at the start of `s`, and what follows it.
fn take_quoted(s: &str) -> Option<(String, &str)> {
    let mut chars = s.char_indices();
    if chars.next()?.1 != '"' {
        return None;
    }
    let mut out = String::new();
    let mut escaped = false;
    for (i, c) in chars {
        if escaped {
            out.push(match c {
                'n' => '\n',
                't' => '\t',
                'r' => '\r',
                other => other,
            });
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == '"' {
            return Some((out, &s[i + 1..]));
        } else {
            out.push(c);
        }
    }
    None
}

/// Splits a request line into arguments: whitespace-separated, double quotes group.
fn argify(line: &str) -> anyhow::Result<Vec<String>> {
    let mut args = Vec::new();
    let mut rest = line.trim_start();
    while !rest.is_empty() {
        if rest.starts_with('"') {
            let (arg, after) = take_quoted(rest)
                .with_context(|| format!("invalid quoted argument in {line:?}"))?;
            args.push(arg);
            rest = after.trim_start();
        } else {
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            args.push(rest[..end].to_string());
            rest = rest[end..].trim_start();
        }
    }
    Ok(args)
}

#[derive(Parser)]
#[command(no_binary_name = true)]
struct OpLine {
    #[command(subcommand)]
    op: Op,
}

#[derive(Subcommand)]
enum Op {
    Put(PutArgs),
    Get(GetArgs),
    Del(DelArgs),
}

/// Parses one request line (`put k v`, `get k --prefix`, `del k`).
pub fn parse_op(line: &str) -> anyhow::Result<RequestOp> {
    let args = argify(line)?;
    let parsed = OpLine::try_parse_from(&args)
        .map_err(|_| anyhow::anyhow!("invalid txn request: {line}"))?;
    let request = match parsed.op {
        Op::Put(put) => {
            // etcdctl reads a missing value from stdin, which its txn reader has already
            // taken in: nothing is there.
            let value = put.value(|| Ok(String::new()))?;
            Request::RequestPut(put.request(value)?)
        }
        Op::Get(get) => Request::RequestRange(get.request()?),
        Op::Del(del) => Request::RequestDeleteRange(del.request()?),
    };
    Ok(RequestOp {
        request: Some(request),
    })
}

/// `txn` output in `printer`'s format (simple or json).
pub fn format(printer: &Printer, resp: &TxnResponse) -> anyhow::Result<String> {
    match printer.format.as_str() {
        "json" => Ok(format!("{}\n", json::txn(resp))),
        "simple" => {
            let mut out = String::from(if resp.succeeded {
                "SUCCESS\n"
            } else {
                "FAILURE\n"
            });
            for op in &resp.responses {
                out.push('\n');
                match &op.response {
                    Some(Response::ResponsePut(r)) => out.push_str(&printer.put(r)),
                    Some(Response::ResponseRange(r)) => out.push_str(&printer.get(r, false)),
                    Some(Response::ResponseDeleteRange(r)) => out.push_str(&printer.del(r)),
                    other => out.push_str(&format!("unexpected response {other:?}\n")),
                }
            }
            Ok(out)
        }
        other => bail!("{other} not supported as output format for txn"),
    }
}
