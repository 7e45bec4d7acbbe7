//! `watch`'s arguments as etcdctl 3.4 reads them: the key and range end, the command after
//! `--`, `ETCDCTL_WATCH_KEY` / `ETCDCTL_WATCH_RANGE_END`, and in interactive mode each
//! stdin line split as etcdctl's `argify` splits it and its flags parsed as pflag parses
//! them, with their error messages.

use raftkv_client::WatchOptions;
use raftkv_proto::etcdserverpb::WatchCreateRequest;

use crate::print::go_quote_bytes;

pub const BAD_ARGS_NUM: &str = "bad number of arguments";
const CONFLICT_ENV: &str = "bad number of arguments (found conflicting environment key)";
const NO_COMMAND: &str = "bad number of arguments (found separator --, but no commands)";

/// The watch flags a request is built from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Flags {
    pub prefix: bool,
    pub rev: i64,
    pub prev_kv: bool,
}

/// The key and range end (`ETCDCTL_WATCH_KEY` and `ETCDCTL_WATCH_RANGE_END`) from the
/// environment; empty when unset.
#[derive(Debug, Clone, Default)]
pub struct Env {
    pub key: String,
    pub range_end: String,
}

impl Env {
    /// `ETCDCTL_WATCH_KEY` and `ETCDCTL_WATCH_RANGE_END`.
    pub fn from_process() -> Self {
        let var = |name| std::env::var(name).unwrap_or_default();
        Self {
            key: var("ETCDCTL_WATCH_KEY"),
            range_end: var("ETCDCTL_WATCH_RANGE_END"),
        }
    }

    /// etcdctl's check before anything else: a range end needs a key.
    pub fn check(&self) -> Result<(), String> {
        if self.key.is_empty() && !self.range_end.is_empty() {
            return Err(format!(
                "ETCDCTL_WATCH_KEY is empty but got ETCDCTL_WATCH_RANGE_END={}",
                go_quote_bytes(self.range_end.as_bytes())
            ));
        }
        Ok(())
    }

    /// The environment's key and range end before `args`, as etcdctl puts them.
    fn prepend(&self, args: Vec<String>) -> Vec<String> {
        if self.key.is_empty() {
            return args;
        }
        let mut all = vec![self.key.clone()];
        if !self.range_end.is_empty() {
            all.push(self.range_end.clone());
        }
        all.extend(args);
        all
    }
}

/// What etcdctl keeps of the arguments when a command follows `--`: everything before the
/// last occurrence of the command's first word (so `watch foo -- echo echo` watches
/// `[foo, echo)`, as etcdctl does).
fn cut_at_command(mut watch_args: Vec<String>, exec: &[String]) -> Vec<String> {
    if let Some(first) = exec.first()
        && let Some(at) = watch_args.iter().rposition(|a| a == first)
    {
        watch_args.truncate(at);
    }
    watch_args
}

/// The command line's watch arguments and command: `raw` is every argument after `watch`
/// as given (to find `--`), `before` and `after` the positional arguments before and after
/// `--`. Errors are etcdctl's (exit code 128).
pub fn from_command_line(
    raw: &[String],
    before: &[String],
    after: &[String],
    env: &Env,
) -> Result<(Vec<String>, Vec<String>), String> {
    let separator = raw.iter().position(|a| a == "--");
    if separator.is_some_and(|at| at + 1 == raw.len()) {
        return Err(NO_COMMAND.into());
    }
    if separator.is_none() && raw.is_empty() && env.key.is_empty() {
        return Err(BAD_ARGS_NUM.into());
    }
    if !env.key.is_empty() && !before.is_empty() {
        return Err(CONFLICT_ENV.into());
    }
    let mut positional = before.to_vec();
    positional.extend(after.iter().cloned());
    let watch_args = env.prepend(positional);
    if separator.is_none() {
        return Ok((watch_args, Vec::new()));
    }
    Ok((cut_at_command(watch_args, after), after.to_vec()))
}

/// An interactive `watch` line's arguments (after the word `watch`): watch arguments,
/// command and flags. Errors are etcdctl's (they end it, with exit code 128).
pub fn from_line(args: &[String], env: &Env) -> Result<(Vec<String>, Vec<String>, Flags), String> {
    let separator = args.iter().position(|a| a == "--");
    if separator.is_some_and(|at| at + 1 == args.len()) {
        return Err(NO_COMMAND.into());
    }
    let (flags, positional) = parse_flags(args)?;
    if separator.is_none() && env.key.is_empty() && positional.is_empty() {
        return Err(BAD_ARGS_NUM.into());
    }
    if separator.is_none() && !positional.is_empty() && !env.key.is_empty() {
        return Err(CONFLICT_ENV.into());
    }
    let exec = separator.map_or_else(Vec::new, |at| args[at + 1..].to_vec());
    let watch_args = env.prepend(positional);
    Ok((cut_at_command(watch_args, &exec), exec, flags))
}

/// The create request for the watch arguments (key, and range end if there are exactly
/// two) and flags, as etcdctl's `getWatchChan` builds it.
pub fn request(watch_args: &[String], flags: Flags) -> Result<WatchCreateRequest, String> {
    let Some(key) = watch_args.first() else {
        return Err(BAD_ARGS_NUM.into());
    };
    let mut options = WatchOptions::new().start_revision(flags.rev);
    if watch_args.len() == 2 {
        if flags.prefix {
            return Err("`range_end` and `--prefix` are mutually exclusive".into());
        }
        options = options.range_end(watch_args[1].clone().into_bytes());
    }
    if flags.prefix {
        options = options.prefix();
    }
    if flags.prev_kv {
        options = options.prev_kv();
    }
    Ok(options.request(key.clone().into_bytes()))
}

/// pflag's parse of a line's arguments against watch's own flags (`-i/--interactive`,
/// `--prefix`, `--rev`, `--prev-kv`): the flags and the positional arguments (those after
/// `--` included). Errors are pflag's messages.
pub fn parse_flags(args: &[String]) -> Result<(Flags, Vec<String>), String> {
    let mut flags = Flags::default();
    let mut positional = Vec::new();
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        if arg.len() < 2 || !arg.starts_with('-') {
            positional.push(arg.clone());
            continue;
        }
        if arg == "--" {
            positional.extend(rest.cloned());
            break;
        }
        if let Some(long) = arg.strip_prefix("--") {
            if long.starts_with(['-', '=']) {
                return Err(format!("bad flag syntax: {arg}"));
            }
            let (name, value) = match long.split_once('=') {
                Some((name, value)) => (name, Some(value.to_string())),
                None => (long, None),
            };
            let flag = format!("--{name}");
            match name {
                "interactive" | "prefix" | "prev-kv" => {
                    let on = match value {
                        Some(v) => parse_bool(&v).map_err(|e| {
                            format!("invalid argument {} for {} flag: {e}", q(&v), q(&flag))
                        })?,
                        None => true,
                    };
                    match name {
                        "prefix" => flags.prefix = on,
                        "prev-kv" => flags.prev_kv = on,
                        _ => {}
                    }
                }
                "rev" => {
                    let value = match value {
                        Some(v) => v,
                        None => rest
                            .next()
                            .cloned()
                            .ok_or_else(|| format!("flag needs an argument: {arg}"))?,
                    };
                    flags.rev = parse_int(&value).map_err(|e| {
                        format!("invalid argument {} for {} flag: {e}", q(&value), q(&flag))
                    })?;
                }
                "help" => return Err("pflag: help requested".into()),
                _ => return Err(format!("unknown flag: --{name}")),
            }
            continue;
        }
        // Shorthands: only -i (a bool) is watch's own; -h asks for help.
        let mut shorts = &arg[1..];
        while let Some(c) = shorts.chars().next() {
            let after = &shorts[c.len_utf8()..];
            match c {
                'i' if shorts.len() > 2 && after.starts_with('=') => {
                    let value = &after[1..];
                    parse_bool(value).map_err(|e| {
                        format!(
                            "invalid argument {} for \"-i, --interactive\" flag: {e}",
                            q(value)
                        )
                    })?;
                    shorts = "";
                }
                'i' => shorts = after,
                'h' => return Err("pflag: help requested".into()),
                c => return Err(format!("unknown shorthand flag: '{c}' in -{shorts}")),
            }
        }
    }
    Ok((flags, positional))
}

fn q(s: &str) -> String {
    go_quote_bytes(s.as_bytes())
}

/// Go's `strconv.ParseBool`.
fn parse_bool(s: &str) -> Result<bool, String> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        _ => Err(format!(
            "strconv.ParseBool: parsing {}: invalid syntax",
            q(s)
        )),
    }
}

/// Go's `strconv.ParseInt(s, 0, 64)`: a sign, then decimal, `0x` hex, `0o` / `0` octal or
/// `0b` binary digits, with `_` between digits.
fn parse_int(s: &str) -> Result<i64, String> {
    let syntax = || format!("strconv.ParseInt: parsing {}: invalid syntax", q(s));
    let range = || format!("strconv.ParseInt: parsing {}: value out of range", q(s));
    let (negative, unsigned) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let lower = unsigned.to_ascii_lowercase();
    let (base, digits, prefixed) = if let Some(d) = lower.strip_prefix("0x") {
        (16, d, true)
    } else if let Some(d) = lower.strip_prefix("0o") {
        (8, d, true)
    } else if let Some(d) = lower.strip_prefix("0b") {
        (2, d, true)
    } else if lower.len() > 1 && lower.starts_with('0') {
        (8, &lower[1..], true)
    } else {
        (10, lower.as_str(), false)
    };
    if digits.is_empty() {
        return Err(syntax());
    }
    // Underscores only between digits (or right after a base prefix).
    let mut last = if prefixed { '0' } else { '^' };
    let mut value: u128 = 0;
    for c in digits.chars() {
        if c == '_' {
            if last != '0' {
                return Err(syntax());
            }
            last = '_';
            continue;
        }
        let d = c.to_digit(base).ok_or_else(syntax)?;
        last = '0';
        value = (value * u128::from(base) + u128::from(d)).min(u128::from(u64::MAX) + 1);
    }
    if last == '_' {
        return Err(syntax());
    }
    let limit = if negative {
        1u128 << 63
    } else {
        (1u128 << 63) - 1
    };
    if value > limit {
        return Err(range());
    }
    Ok(if negative {
        (value as i128).wrapping_neg() as i64
    } else {
        value as i64
    })
}

/// Why a line could not be split.
#[derive(Debug, PartialEq, Eq)]
pub enum ArgifyError {
    /// A double-quoted word that Go cannot unquote (etcdctl exits with `invalid syntax`).
    Syntax,
    /// etcdctl's single-quote handling slices a word by the number of words; out of bounds
    /// it panics with this runtime error.
    Panic(String),
}

/// Go's `\s`: ASCII space, tab, newline, form feed, carriage return.
fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\x0c' | '\r')
}

/// etcdctl's `argify`: the words of a line as its regular expression
/// `"(?:[^"\\]|\\.)*"|'[^']*'|[^'"\s]\S*[^'"\s]?` finds them, double-quoted words unquoted
/// as Go's `%q` scan does, and single-quoted ones cut as etcdctl cuts them (`word[1 :
/// number of words - 1]`, a slip for the word's own length that etcdctl has).
pub fn argify(line: &str) -> Result<Vec<String>, ArgifyError> {
    let chars: Vec<char> = line.chars().collect();
    let mut words: Vec<String> = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' {
            let mut j = i + 1;
            let mut end = None;
            while j < chars.len() {
                match chars[j] {
                    '\\' if j + 1 < chars.len() && chars[j + 1] != '\n' => j += 2,
                    '\\' => break,
                    '"' => {
                        end = Some(j);
                        break;
                    }
                    _ => j += 1,
                }
            }
            match end {
                Some(j) => {
                    words.push(chars[i..=j].iter().collect());
                    i = j + 1;
                }
                None => i += 1,
            }
        } else if c == '\'' {
            match chars[i + 1..].iter().position(|&c| c == '\'') {
                Some(k) => {
                    let j = i + 1 + k;
                    words.push(chars[i..=j].iter().collect());
                    i = j + 1;
                }
                None => i += 1,
            }
        } else if is_space(c) {
            i += 1;
        } else {
            let mut j = i + 1;
            while j < chars.len() && !is_space(chars[j]) {
                j += 1;
            }
            words.push(chars[i..j].iter().collect());
            i = j;
        }
    }
    let count = words.len();
    words
        .into_iter()
        .map(|word| {
            if word.starts_with('\'') {
                let bytes = word.as_bytes();
                let high = count as isize - 1;
                if high < 1 {
                    return Err(ArgifyError::Panic(format!(
                        "slice bounds out of range [1:{high}]"
                    )));
                }
                if high as usize > bytes.len() {
                    return Err(ArgifyError::Panic(format!(
                        "slice bounds out of range [:{high}] with length {}",
                        bytes.len()
                    )));
                }
                Ok(String::from_utf8_lossy(&bytes[1..high as usize]).into_owned())
            } else if word.starts_with('"') {
                unquote(&word[1..word.len() - 1])
                    .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
                    .ok_or(ArgifyError::Syntax)
            } else {
                Ok(word)
            }
        })
        .collect()
}

/// Go's `strconv.Unquote` of a double-quoted string's inside: its bytes, or `None` for an
/// escape Go refuses.
fn unquote(inner: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut chars = inner.chars().peekable();
    let hex = |chars: &mut std::iter::Peekable<std::str::Chars>, n: usize| -> Option<u32> {
        let mut v = 0;
        for _ in 0..n {
            v = v * 16 + chars.next()?.to_digit(16)?;
        }
        Some(v)
    };
    while let Some(c) = chars.next() {
        if c != '\\' {
            let mut buf = [0; 4];
            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            continue;
        }
        let e = chars.next()?;
        let simple = match e {
            'a' => Some(7),
            'b' => Some(8),
            'f' => Some(12),
            'n' => Some(b'\n'),
            'r' => Some(b'\r'),
            't' => Some(b'\t'),
            'v' => Some(11),
            '\\' => Some(b'\\'),
            '"' => Some(b'"'),
            _ => None,
        };
        if let Some(b) = simple {
            out.push(b);
            continue;
        }
        match e {
            'x' => out.push(hex(&mut chars, 2)? as u8),
            '0'..='7' => {
                let mut v = e.to_digit(8)?;
                for _ in 0..2 {
                    v = v * 8 + chars.next()?.to_digit(8)?;
                }
                if v > 255 {
                    return None;
                }
                out.push(v as u8);
            }
            'u' | 'U' => {
                let v = hex(&mut chars, if e == 'u' { 4 } else { 8 })?;
                let c = char::from_u32(v)?;
                let mut buf = [0; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
            _ => return None,
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    /// etcdctl's own table (watch_command_test.go), non-interactive rows: raw arguments
    /// after `watch`, environment, then the watch arguments and command (or the error).
    #[test]
    fn command_lines_resolve_as_etcdctl_resolves_them() {
        type Row<'a> = (
            &'a [&'a str],
            &'a str,
            &'a str,
            Result<(&'a [&'a str], &'a [&'a str]), &'a str>,
        );
        let rows: &[Row] = &[
            (&["foo", "bar"], "", "", Ok((&["foo", "bar"], &[]))),
            (&["foo", "bar", "--"], "", "", Err(NO_COMMAND)),
            (&[], "foo", "bar", Ok((&["foo", "bar"], &[]))),
            (&["foo"], "foo", "", Err(CONFLICT_ENV)),
            (&["foo", "bar"], "foo", "", Err(CONFLICT_ENV)),
            (&["foo", "bar"], "foo", "bar", Err(CONFLICT_ENV)),
            (&["foo"], "", "", Ok((&["foo"], &[]))),
            (&[], "foo", "", Ok((&["foo"], &[]))),
            (&["--rev", "1", "foo"], "", "", Ok((&["foo"], &[]))),
            (&["--rev", "1", "foo"], "foo", "", Err(CONFLICT_ENV)),
            (&["--rev", "1"], "foo", "", Ok((&["foo"], &[]))),
            (&["foo", "--rev", "1"], "", "", Ok((&["foo"], &[]))),
            (
                &["foo", "--", "echo", "Hello", "World"],
                "",
                "",
                Ok((&["foo"], &["echo", "Hello", "World"])),
            ),
            (
                &["foo", "--", "echo", "watch", "event", "received"],
                "",
                "",
                Ok((&["foo"], &["echo", "watch", "event", "received"])),
            ),
            (
                &["foo", "--rev", "1", "--", "echo", "Hello", "World"],
                "",
                "",
                Ok((&["foo"], &["echo", "Hello", "World"])),
            ),
            (
                &[
                    "--rev", "1", "foo", "--", "echo", "watch", "event", "received",
                ],
                "",
                "",
                Ok((&["foo"], &["echo", "watch", "event", "received"])),
            ),
            (
                &["foo", "bar", "--", "echo", "Hello", "World"],
                "",
                "",
                Ok((&["foo", "bar"], &["echo", "Hello", "World"])),
            ),
            (
                &["foo", "--rev", "1", "bar", "--", "echo", "Hello", "World"],
                "",
                "",
                Ok((&["foo", "bar"], &["echo", "Hello", "World"])),
            ),
            (
                &["--rev", "1", "--", "echo", "Hello", "World"],
                "foo",
                "",
                Ok((&["foo"], &["echo", "Hello", "World"])),
            ),
            (
                &["--rev", "1", "--", "echo", "Hello", "World"],
                "foo",
                "bar",
                Ok((&["foo", "bar"], &["echo", "Hello", "World"])),
            ),
            (
                &["foo", "bar", "--rev", "1", "--", "echo", "Hello", "World"],
                "foo",
                "",
                Err(CONFLICT_ENV),
            ),
            (&[], "", "", Err(BAD_ARGS_NUM)),
            (
                &["foo", "--", "echo", "echo"],
                "",
                "",
                Ok((&["foo", "echo"], &["echo", "echo"])),
            ),
        ];
        for (raw, key, range_end, want) in rows {
            let raw = strings(raw);
            // clap's view: positional arguments (flags and their values aside) before and
            // after `--`.
            let sep = raw.iter().position(|a| a == "--").unwrap_or(raw.len());
            let mut before = Vec::new();
            let mut skip = false;
            for a in &raw[..sep] {
                if skip {
                    skip = false;
                } else if a == "--rev" {
                    skip = true;
                } else {
                    before.push(a.clone());
                }
            }
            let after = raw
                .get(sep + 1..)
                .map(<[String]>::to_vec)
                .unwrap_or_default();
            let env = Env {
                key: key.to_string(),
                range_end: range_end.to_string(),
            };
            let got = from_command_line(&raw, &before, &after, &env);
            let want = want
                .map(|(w, e)| (strings(w), strings(e)))
                .map_err(str::to_string);
            assert_eq!(got, want, "{raw:?} {key:?} {range_end:?}");
        }
    }

    /// etcdctl's table, interactive rows.
    #[test]
    fn lines_resolve_as_etcdctl_resolves_them() {
        type Row<'a> = (
            &'a [&'a str],
            &'a str,
            &'a str,
            Result<(&'a [&'a str], &'a [&'a str], Flags), &'a str>,
        );
        let f = |prefix, rev, prev_kv| Flags {
            prefix,
            rev,
            prev_kv,
        };
        let rows: &[Row] = &[
            (&["foo"], "", "", Ok((&["foo"], &[], f(false, 0, false)))),
            (
                &["foo", "bar"],
                "",
                "",
                Ok((&["foo", "bar"], &[], f(false, 0, false))),
            ),
            (
                &[],
                "foo",
                "bar",
                Ok((&["foo", "bar"], &[], f(false, 0, false))),
            ),
            (
                &[],
                "hello world!",
                "bar",
                Ok((&["hello world!", "bar"], &[], f(false, 0, false))),
            ),
            (
                &["foo", "--rev", "1"],
                "",
                "",
                Ok((&["foo"], &[], f(false, 1, false))),
            ),
            (
                &["foo", "--rev", "1", "--", "echo", "Hello", "World"],
                "",
                "",
                Ok((&["foo"], &["echo", "Hello", "World"], f(false, 1, false))),
            ),
            (
                &[
                    "--rev",
                    "5",
                    "--prev-kv",
                    "foo",
                    "--",
                    "echo",
                    "Hello",
                    "World",
                ],
                "",
                "",
                Ok((&["foo"], &["echo", "Hello", "World"], f(false, 5, true))),
            ),
            (
                &["--rev", "1"],
                "foo",
                "",
                Ok((&["foo"], &[], f(false, 1, false))),
            ),
            (&["--rev", "1"], "", "", Err(BAD_ARGS_NUM)),
            (
                &["--rev", "1", "--prefix"],
                "foo",
                "",
                Ok((&["foo"], &[], f(true, 1, false))),
            ),
            (
                &["--rev", "100", "--prefix", "--prev-kv"],
                "foo",
                "",
                Ok((&["foo"], &[], f(true, 100, true))),
            ),
            (&["--rev", "1", "--prefix"], "", "", Err(BAD_ARGS_NUM)),
            (
                &["--", "echo", "Hello", "World"],
                "foo",
                "",
                Ok((&["foo"], &["echo", "Hello", "World"], f(false, 0, false))),
            ),
            (
                &["--", "echo", "Hello", "World"],
                "foo",
                "bar",
                Ok((
                    &["foo", "bar"],
                    &["echo", "Hello", "World"],
                    f(false, 0, false),
                )),
            ),
            (
                &["foo", "bar", "--", "echo", "Hello", "World"],
                "",
                "",
                Ok((
                    &["foo", "bar"],
                    &["echo", "Hello", "World"],
                    f(false, 0, false),
                )),
            ),
            (
                &["--rev", "1", "foo", "bar", "--", "echo", "Hello", "World"],
                "",
                "",
                Ok((
                    &["foo", "bar"],
                    &["echo", "Hello", "World"],
                    f(false, 1, false),
                )),
            ),
            (
                &[
                    "foo",
                    "bar",
                    "--rev",
                    "7",
                    "--prefix",
                    "--prev-kv",
                    "--",
                    "echo",
                    "Hello",
                    "World",
                ],
                "",
                "",
                Ok((
                    &["foo", "bar"],
                    &["echo", "Hello", "World"],
                    f(true, 7, true),
                )),
            ),
            (&["foo", "--"], "", "", Err(NO_COMMAND)),
            (&["foo"], "foo", "", Err(CONFLICT_ENV)),
            (&["foo", "--bogus"], "", "", Err("unknown flag: --bogus")),
            (&["--rev"], "", "", Err("flag needs an argument: --rev")),
            (
                &["--rev", "x", "foo"],
                "",
                "",
                Err(
                    "invalid argument \"x\" for \"--rev\" flag: strconv.ParseInt: parsing \"x\": invalid syntax",
                ),
            ),
            (&["-h"], "", "", Err("pflag: help requested")),
            (
                &["foo", "-w", "json"],
                "",
                "",
                Err("unknown shorthand flag: 'w' in -w"),
            ),
            (&["-iw"], "", "", Err("unknown shorthand flag: 'w' in -w")),
            (
                &["--prefix=maybe", "a"],
                "",
                "",
                Err(
                    "invalid argument \"maybe\" for \"--prefix\" flag: strconv.ParseBool: parsing \"maybe\": invalid syntax",
                ),
            ),
            (
                &["--rev=0x10", "a"],
                "",
                "",
                Ok((&["a"], &[], f(false, 16, false))),
            ),
        ];
        for (args, key, range_end, want) in rows {
            let env = Env {
                key: key.to_string(),
                range_end: range_end.to_string(),
            };
            let got = from_line(&strings(args), &env);
            let want = want
                .map(|(w, e, fl)| (strings(w), strings(e), fl))
                .map_err(str::to_string);
            assert_eq!(got, want, "{args:?} {key:?} {range_end:?}");
        }
    }

    #[test]
    fn lines_split_as_argify_splits_them() {
        let ok = |line: &str, want: &[&str]| assert_eq!(argify(line), Ok(strings(want)), "{line}");
        ok("watch foo --prefix", &["watch", "foo", "--prefix"]);
        ok("  watch\t foo  ", &["watch", "foo"]);
        ok("", &[]);
        ok(
            "watch \"a b\\n\\x41\\101\\u00e9\"",
            &["watch", "a b\nAA\u{e9}"],
        );
        ok("watch \"foo", &["watch", "foo"]);
        ok("watch a\"b c\"", &["watch", "a\"b", "c\""]);
        // etcdctl cuts a single-quoted word at the number of words minus one.
        ok("watch 'abc'", &["watch", ""]);
        ok("watch 'a' 'b' 'cdefghij'", &["watch", "a'", "b'", "cd"]);
        assert_eq!(argify("watch \"a\\qb\""), Err(ArgifyError::Syntax));
        assert_eq!(argify("watch \"a\\'b\""), Err(ArgifyError::Syntax));
        assert_eq!(
            argify("'x'"),
            Err(ArgifyError::Panic("slice bounds out of range [1:0]".into()))
        );
        assert_eq!(
            argify("a b c d e f 'x'"),
            Err(ArgifyError::Panic(
                "slice bounds out of range [:6] with length 3".into()
            ))
        );
    }

    #[test]
    fn integers_parse_as_go_parses_them() {
        assert_eq!(parse_int("12"), Ok(12));
        assert_eq!(parse_int("-0x1f"), Ok(-31));
        assert_eq!(parse_int("010"), Ok(8));
        assert_eq!(parse_int("0o10"), Ok(8));
        assert_eq!(parse_int("0b101"), Ok(5));
        assert_eq!(parse_int("1_000"), Ok(1000));
        assert_eq!(parse_int("0"), Ok(0));
        assert_eq!(parse_int("-9223372036854775808"), Ok(i64::MIN));
        assert!(
            parse_int("9223372036854775808")
                .unwrap_err()
                .ends_with("value out of range")
        );
        for bad in ["", "x", "1_", "_1", "0x", "1__0", "08"] {
            assert!(
                parse_int(bad).unwrap_err().ends_with("invalid syntax"),
                "{bad}"
            );
        }
    }

    #[test]
    fn requests_follow_get_watch_chan() {
        let args = strings(&["a", "z"]);
        let r = request(&args, Flags::default()).unwrap();
        assert_eq!((&r.key[..], &r.range_end[..]), (&b"a"[..], &b"z"[..]));
        assert_eq!(
            request(
                &args,
                Flags {
                    prefix: true,
                    ..Default::default()
                }
            )
            .unwrap_err(),
            "`range_end` and `--prefix` are mutually exclusive"
        );
        let r = request(&strings(&["a", "b", "c"]), Flags::default()).unwrap();
        assert!(r.range_end.is_empty(), "three arguments: the key alone");
        let r = request(
            &strings(&[""]),
            Flags {
                prefix: true,
                rev: 3,
                prev_kv: true,
            },
        )
        .unwrap();
        assert_eq!(
            (&r.key[..], &r.range_end[..], r.start_revision, r.prev_kv),
            (&b"\0"[..], &b"\0"[..], 3, true)
        );
        assert_eq!(request(&[], Flags::default()).unwrap_err(), BAD_ARGS_NUM);
    }
}
