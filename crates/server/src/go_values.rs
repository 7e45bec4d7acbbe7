//! Flag values as etcd reads them — Go's `flag` package and etcd's `pkg/flags` — so that a
//! value etcd accepts means the same here: booleans (`strconv.ParseBool`), integers
//! (`strconv.ParseUint(s, 0, 64)`: `0x10`, `0o17`, `017`, `1_000`), durations
//! (`time.ParseDuration`: `1m30s`, `100ms`, `0`) and URL lists (`types.NewURLs`). Written by
//! hand because each is a few lines of Go's exact grammar, which no crate reproduces.

use std::time::Duration;

/// `strconv.ParseBool`; refused with the reason Go's `flag` package gives ("parse error").
pub fn parse_bool(s: &str) -> Result<bool, String> {
    match s {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err("parse error".into()),
    }
}

/// An unsigned integer in Go's syntax (`strconv.ParseUint(s, 0, 64)`).
pub fn parse_uint(s: &str) -> Result<u64, String> {
    let (radix, digits) = radix_and_digits(s).ok_or_else(|| "parse error".to_string())?;
    u64::from_str_radix(&digits, radix).map_err(|e| match e.kind() {
        std::num::IntErrorKind::PosOverflow => "value out of range".to_string(),
        _ => "parse error".to_string(),
    })
}

/// A signed integer in Go's syntax (`strconv.ParseInt(s, 0, 64)`).
pub fn parse_int(s: &str) -> Result<i64, String> {
    let (negative, rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let magnitude = parse_uint(rest)?;
    let limit = if negative {
        i64::MIN.unsigned_abs()
    } else {
        i64::MAX as u64
    };
    if magnitude > limit {
        return Err("value out of range".into());
    }
    Ok(if negative {
        0i64.wrapping_sub_unsigned(magnitude)
    } else {
        magnitude as i64
    })
}

/// A 32-bit unsigned integer, with the message etcd's `--max-concurrent-streams` gives.
pub fn parse_u32(s: &str) -> Result<u32, String> {
    let value = parse_uint(s).map_err(|e| format!("strconv.ParseUint: parsing {s:?}: {e}"))?;
    u32::try_from(value)
        .map_err(|_| format!("strconv.ParseUint: parsing {s:?}: value out of range"))
}

/// Go's base prefixes and digit separators: `0x1f`, `0o17`, `017`, `0b101`, `1_000`.
fn radix_and_digits(s: &str) -> Option<(u32, String)> {
    let lower = s.to_ascii_lowercase();
    let (radix, rest, prefixed) = if let Some(rest) = lower.strip_prefix("0x") {
        (16, rest, true)
    } else if let Some(rest) = lower.strip_prefix("0o") {
        (8, rest, true)
    } else if let Some(rest) = lower.strip_prefix("0b") {
        (2, rest, true)
    } else if lower.len() > 1 && lower.starts_with('0') {
        (8, &lower[1..], true)
    } else {
        (10, lower.as_str(), false)
    };
    // Underscores only between digits (or right after a base prefix), as Go allows.
    let bad_underscore =
        rest.ends_with('_') || rest.contains("__") || (rest.starts_with('_') && !prefixed);
    let digits: String = rest.chars().filter(|c| *c != '_').collect();
    if digits.is_empty() || bad_underscore || digits.starts_with(['+', '-']) {
        return None;
    }
    Some((radix, digits))
}

/// A duration in Go's syntax (`time.ParseDuration`): a sequence of decimal numbers, each with
/// an optional fraction and a unit (`ns`, `us`/`µs`, `ms`, `s`, `m`, `h`), or just `0`.
/// Negative durations are refused (no flag takes one). Other refusals give the reason Go's
/// `flag` package gives for any bad duration ("parse error").
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    match signed_nanos(s) {
        Ok(n) if n < 0 => Err(format!("negative duration {s:?} is not allowed")),
        Ok(n) => Ok(Duration::from_nanos(n as u64)),
        Err(_) => Err("parse error".into()),
    }
}

/// A duration in Go's syntax, negative ones too, in nanoseconds; errors in Go's words
/// (`time: unknown unit "x" in duration "5x"`).
pub fn parse_signed_duration(s: &str) -> Result<i64, String> {
    signed_nanos(s).map_err(|e| match e {
        DurationError::Invalid => format!("time: invalid duration {s:?}"),
        DurationError::MissingUnit => format!("time: missing unit in duration {s:?}"),
        DurationError::UnknownUnit(u) => format!("time: unknown unit {u:?} in duration {s:?}"),
    })
}

enum DurationError {
    Invalid,
    MissingUnit,
    UnknownUnit(String),
}

/// `time.ParseDuration`'s value in nanoseconds (within an i64, as Go's).
fn signed_nanos(s: &str) -> Result<i64, DurationError> {
    let (negative, rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if rest == "0" {
        return Ok(0);
    }
    if rest.is_empty() {
        return Err(DurationError::Invalid);
    }
    let mut nanos: u128 = 0;
    let mut rest = rest;
    while !rest.is_empty() {
        let int_len = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let (int_part, after) = rest.split_at(int_len);
        let (frac_part, after) = match after.strip_prefix('.') {
            Some(f) => {
                let len = f.find(|c: char| !c.is_ascii_digit()).unwrap_or(f.len());
                f.split_at(len)
            }
            None => ("", after),
        };
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(DurationError::Invalid);
        }
        let unit_len = after
            .find(|c: char| c == '.' || c.is_ascii_digit())
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        let unit_nanos: u128 = match unit {
            "ns" => 1,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "" => return Err(DurationError::MissingUnit),
            other => return Err(DurationError::UnknownUnit(other.to_string())),
        };
        let whole: u128 = if int_part.is_empty() {
            0
        } else {
            int_part.parse().map_err(|_| DurationError::Invalid)?
        };
        nanos = whole
            .checked_mul(unit_nanos)
            .and_then(|w| nanos.checked_add(w))
            .ok_or(DurationError::Invalid)?;
        // Fraction digits beyond nanoseconds do not change the result (Go truncates too).
        let frac: String = frac_part.chars().take(18).collect();
        if !frac.is_empty() {
            let scale = 10u128.pow(frac.len() as u32);
            let value: u128 = frac.parse().map_err(|_| DurationError::Invalid)?;
            nanos += value * unit_nanos / scale;
        }
        if nanos > i64::MAX as u128 + u128::from(negative) {
            return Err(DurationError::Invalid);
        }
        rest = after;
    }
    let nanos = nanos as i128;
    Ok((if negative { -nanos } else { nanos }) as i64)
}

/// A comma-separated URL list, checked, sorted and de-duplicated as etcd's `UniqueURLs`
/// keeps it (etcd's member ids hash the sorted list).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Urls(pub Vec<String>);

impl Urls {
    /// The URLs.
    pub fn as_slice(&self) -> &[String] {
        &self.0
    }
}

/// Parses a URL list flag value (`types.NewURLs` on the comma-separated parts). An empty
/// value is an empty list.
pub fn parse_urls(s: &str) -> Result<Urls, String> {
    if s.trim().is_empty() {
        return Ok(Urls::default());
    }
    let mut urls = s.split(',').map(parse_url).collect::<Result<Vec<_>, _>>()?;
    urls.sort();
    urls.dedup();
    Ok(Urls(urls))
}

/// `--cors`: `*`, or URLs as [`parse_url`] accepts them (etcd's `UniqueURLsWithExceptions`
/// with `*` excepted), kept comma-separated.
pub fn parse_cors(s: &str) -> Result<String, String> {
    let parts = s
        .split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|p| match p.trim() {
            "*" => Ok("*".to_string()),
            url => parse_url(url),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(parts.join(","))
}

/// One URL as etcd accepts it: scheme `http`, `https`, `unix` or `unixs`, a `host:port`,
/// no path. Returned as Go's `url.URL.String()` renders it (scheme lower-cased), which is
/// what etcd's member ids hash.
pub fn parse_url(s: &str) -> Result<String, String> {
    let s = s.trim();
    let scheme_error = || format!("URL scheme must be http, https, unix, or unixs: {s}");
    let (scheme, rest) = s.split_once("://").ok_or_else(scheme_error)?;
    let scheme = scheme.to_ascii_lowercase();
    if !matches!(scheme.as_str(), "http" | "https" | "unix" | "unixs") {
        return Err(scheme_error());
    }
    let host_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(host_end);
    if !path.is_empty() {
        return Err(format!("URL must not contain a path: {s}"));
    }
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, hp)| hp);
    if split_host_port(host_port).is_none() {
        return Err(format!(
            "URL address does not have the form \"host:port\": {s}"
        ));
    }
    Ok(format!("{scheme}://{authority}"))
}

/// Go's `net.SplitHostPort`: `host:port` or `[v6]:port`.
pub fn split_host_port(hp: &str) -> Option<(&str, &str)> {
    if let Some(bracketed) = hp.strip_prefix('[') {
        let (host, rest) = bracketed.split_once(']')?;
        let port = rest.strip_prefix(':')?;
        return (!port.contains(':')).then_some((host, port));
    }
    let (host, port) = hp.rsplit_once(':')?;
    (!host.contains(':') && !host.contains(['[', ']'])).then_some((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn booleans_are_gos() {
        for t in ["1", "t", "T", "true", "TRUE", "True"] {
            assert_eq!(parse_bool(t), Ok(true));
        }
        for f in ["0", "f", "F", "false", "FALSE", "False"] {
            assert_eq!(parse_bool(f), Ok(false));
        }
        assert!(parse_bool("yes").is_err());
        assert!(parse_bool("").is_err());
    }

    #[test]
    fn integers_are_gos() {
        assert_eq!(parse_uint("100"), Ok(100));
        assert_eq!(parse_uint("0x10"), Ok(16));
        assert_eq!(parse_uint("0X10"), Ok(16));
        assert_eq!(parse_uint("010"), Ok(8));
        assert_eq!(parse_uint("0o10"), Ok(8));
        assert_eq!(parse_uint("0b101"), Ok(5));
        assert_eq!(parse_uint("1_000"), Ok(1000));
        assert_eq!(parse_uint("0"), Ok(0));
        assert_eq!(parse_uint("-1"), Err("parse error".into()));
        assert_eq!(parse_uint("+1"), Err("parse error".into()));
        assert_eq!(parse_uint("1e9"), Err("parse error".into()));
        assert_eq!(parse_uint("_1"), Err("parse error".into()));
        assert_eq!(parse_uint("1__0"), Err("parse error".into()));
        assert_eq!(parse_uint(""), Err("parse error".into()));
        assert_eq!(
            parse_uint("18446744073709551616"),
            Err("value out of range".into())
        );
        assert_eq!(parse_int("-5"), Ok(-5));
        assert_eq!(parse_int("-9223372036854775808"), Ok(i64::MIN));
        assert!(parse_int("9223372036854775808").is_err());
        assert_eq!(parse_u32("4294967295"), Ok(u32::MAX));
        assert_eq!(
            parse_u32("4294967296"),
            Err("strconv.ParseUint: parsing \"4294967296\": value out of range".into())
        );
    }

    #[test]
    fn durations_are_gos() {
        let ms = Duration::from_millis;
        assert_eq!(parse_duration("5s"), Ok(ms(5000)));
        assert_eq!(parse_duration("100ms"), Ok(ms(100)));
        assert_eq!(parse_duration("2h0m0s"), Ok(ms(7_200_000)));
        assert_eq!(parse_duration("1m30s"), Ok(ms(90_000)));
        assert_eq!(parse_duration("1.5s"), Ok(ms(1500)));
        assert_eq!(parse_duration(".5s"), Ok(ms(500)));
        assert_eq!(parse_duration("1h30m"), Ok(ms(5_400_000)));
        assert_eq!(parse_duration("10us"), Ok(Duration::from_micros(10)));
        assert_eq!(parse_duration("10µs"), Ok(Duration::from_micros(10)));
        assert_eq!(parse_duration("7ns"), Ok(Duration::from_nanos(7)));
        assert_eq!(parse_duration("+5s"), Ok(ms(5000)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        // Go's flag package says only "parse error" (time's own words are for
        // parse_signed_duration).
        assert_eq!(parse_duration("5"), Err("parse error".into()));
        assert_eq!(parse_duration("5d"), Err("parse error".into()));
        assert_eq!(parse_bool("yes"), Err("parse error".into()));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration(".s").is_err());
        assert!(parse_duration("-5s").unwrap_err().contains("negative"));
        assert!(parse_duration("3000000h").is_err());
    }

    #[test]
    fn signed_durations_take_gos_words() {
        assert_eq!(parse_signed_duration("-1.5s"), Ok(-1_500_000_000));
        assert_eq!(parse_signed_duration("5m"), Ok(300_000_000_000));
        assert_eq!(parse_signed_duration("-0"), Ok(0));
        assert_eq!(
            parse_signed_duration("5x").unwrap_err(),
            r#"time: unknown unit "x" in duration "5x""#
        );
        assert_eq!(
            parse_signed_duration("5").unwrap_err(),
            r#"time: missing unit in duration "5""#
        );
        assert_eq!(
            parse_signed_duration("abc").unwrap_err(),
            r#"time: invalid duration "abc""#
        );
        assert_eq!(
            parse_signed_duration("-2562047h47m16.854775808s"),
            Ok(i64::MIN)
        );
        assert!(parse_signed_duration("2562047h47m16.854775808s").is_err());
    }

    #[test]
    fn urls_are_checked_sorted_and_rendered_as_etcd_does() {
        assert_eq!(
            parse_urls(" http://b:2, HTTP://a:1 ,http://b:2").unwrap().0,
            ["http://a:1", "http://b:2"]
        );
        assert_eq!(parse_urls("").unwrap().0, Vec::<String>::new());
        assert_eq!(parse_url("http://[::1]:2380").unwrap(), "http://[::1]:2380");
        assert_eq!(
            parse_url("localhost:2380").unwrap_err(),
            "URL scheme must be http, https, unix, or unixs: localhost:2380"
        );
        assert_eq!(
            parse_url("http://localhost").unwrap_err(),
            "URL address does not have the form \"host:port\": http://localhost"
        );
        assert_eq!(
            parse_url("http://localhost:2380/x").unwrap_err(),
            "URL must not contain a path: http://localhost:2380/x"
        );
        assert!(parse_url("http://localhost:2380/").is_err());
        assert!(parse_url("ftp://a:1").is_err());
        assert!(parse_url("https://a:1").is_ok());
    }
}
