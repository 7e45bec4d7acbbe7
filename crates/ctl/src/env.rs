//! etcdctl's environment variables: every global flag can be given as `ETCDCTL_<FLAG>`
//! (`ETCDCTL_ENDPOINTS`, `ETCDCTL_CACERT`, `ETCDCTL_USER`, `ETCDCTL_WRITE_OUT`, …), as etcd's
//! `pkg/flags.SetPflagsFromEnv` reads them when a command makes its client:
//!
//! - a variable with a non-empty value sets its flag, unless the flag is on the command
//!   line; a value the flag cannot take is ignored (etcdctl drops that error);
//! - a variable whose flag is also on the command line stops etcdctl (`conflicting
//!   environment variable ... is shadowed by corresponding command-line flag`, exit 1), even
//!   when the variable is empty;
//! - any other `ETCDCTL_*` variable — unknown, or empty — gets a warning line and changes
//!   nothing (`watch` also knows `ETCDCTL_WATCH_KEY` and `ETCDCTL_WATCH_RANGE_END`).
//!
//! `ETCDCTL_API` is read (and removed) by etcdctl's `main` before any of this; raftkvctl
//! speaks only v3 and ignores it. The commands that make no client (`version`, `snapshot
//! status`, `snapshot restore`, `snapshot export`) read no variable, as etcdctl's.

use std::collections::HashSet;
use std::path::PathBuf;

use clap::ArgMatches;
use clap::parser::ValueSource;

use crate::Cli;

/// etcdctl 3.4's global flags: its name, and the id of raftkvctl's argument for it.
const GLOBAL_FLAGS: &[(&str, &str)] = &[
    ("endpoints", "endpoints"),
    ("debug", "debug"),
    ("write-out", "write_out"),
    ("hex", "hex"),
    ("dial-timeout", "dial_timeout"),
    ("command-timeout", "command_timeout"),
    ("keepalive-time", "keepalive_time"),
    ("keepalive-timeout", "keepalive_timeout"),
    ("insecure-transport", "insecure_transport"),
    ("insecure-discovery", "insecure_discovery"),
    ("insecure-skip-tls-verify", "insecure_skip_tls_verify"),
    ("cert", "tls_cert"),
    ("key", "tls_key"),
    ("cacert", "tls_cacert"),
    ("user", "user"),
    ("password", "password"),
    ("discovery-srv", "discovery_srv"),
    ("discovery-srv-name", "discovery_srv_name"),
];

/// `watch`'s own names, which it reads itself (see `watch::args`).
const WATCH_FLAGS: &[&str] = &["watch-key", "watch-range-end"];

/// The variable of flag `name`: etcd's `FlagToEnv`.
fn variable(name: &str) -> String {
    format!("ETCDCTL_{}", name.replace('-', "_").to_uppercase())
}

/// What reading the environment came to.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Go on; these warning lines (without etcd's timestamp prefix) were due.
    Go(Vec<String>),
    /// Stop with this message (after these warnings), as etcdctl's fatal log line does.
    Conflict(Vec<String>, String),
}

/// Sets `cli`'s global flags from `environ` (the process environment, in order) as etcdctl
/// does; `matches` tells which flags were on the command line, `watch` whether the command
/// is `watch`.
pub(crate) fn apply(
    cli: &mut Cli,
    matches: &ArgMatches,
    environ: &[(String, String)],
    watch: bool,
) -> Outcome {
    let value_of = |key: &str| {
        environ
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    };
    let mut already_set = HashSet::new();
    let mut used = HashSet::new();
    for &(name, id) in GLOBAL_FLAGS {
        let key = variable(name);
        if matches.value_source(id) == Some(ValueSource::CommandLine) {
            already_set.insert(key);
            continue;
        }
        if let Some(value) = value_of(&key).filter(|v| !v.is_empty()) {
            used.insert(key);
            set(cli, name, value);
        }
    }
    if watch {
        for name in WATCH_FLAGS {
            let key = variable(name);
            if value_of(&key).is_some_and(|v| !v.is_empty()) {
                used.insert(key);
            }
        }
    }
    let mut warnings = Vec::new();
    for (key, value) in environ {
        if used.contains(key) {
            continue;
        }
        if already_set.contains(key) {
            return Outcome::Conflict(
                warnings,
                format!(
                    "conflicting environment variable {key:?} is shadowed by corresponding \
                     command-line flag (either unset environment variable or disable flag)"
                ),
            );
        }
        if key.starts_with("ETCDCTL_") {
            warnings.push(format!("unrecognized environment variable {key}={value}"));
        }
    }
    Outcome::Go(warnings)
}

/// Sets flag `name` from `value`; a value the flag cannot take leaves it as it was.
fn set(cli: &mut Cli, name: &str, value: &str) {
    let duration = || crate::parse_duration(value).ok();
    let boolean = || crate::go_flags::parse_bool(value);
    match name {
        "endpoints" => cli.endpoints = value.split(',').map(str::to_string).collect(),
        "debug" => cli.debug = boolean().unwrap_or(cli.debug),
        "write-out" => cli.write_out = value.to_string(),
        "hex" => cli.hex = boolean().unwrap_or(cli.hex),
        "dial-timeout" => cli.dial_timeout = duration().unwrap_or(cli.dial_timeout),
        "command-timeout" => cli.command_timeout = duration().unwrap_or(cli.command_timeout),
        "keepalive-time" => cli.keepalive_time = duration().unwrap_or(cli.keepalive_time),
        "keepalive-timeout" => {
            cli.keepalive_timeout = duration().unwrap_or(cli.keepalive_timeout);
        }
        "insecure-transport" => {
            cli.insecure_transport = boolean().unwrap_or(cli.insecure_transport);
        }
        "insecure-discovery" => {
            cli.insecure_discovery = boolean().unwrap_or(cli.insecure_discovery);
        }
        "insecure-skip-tls-verify" => {
            cli.insecure_skip_tls_verify = boolean().unwrap_or(cli.insecure_skip_tls_verify);
        }
        "cert" => cli.cert = Some(PathBuf::from(value)),
        "key" => cli.key = Some(PathBuf::from(value)),
        "cacert" => cli.cacert = Some(PathBuf::from(value)),
        "user" => cli.user = Some(value.to_string()),
        "password" => cli.password = Some(value.to_string()),
        "discovery-srv" => cli.discovery_srv = Some(value.to_string()),
        "discovery-srv-name" => cli.discovery_srv_name = Some(value.to_string()),
        _ => {}
    }
}

/// `--debug`'s lines: every global flag as its variable with the value in use, in name
/// order, as etcdctl prints them when it makes its client (`watch` adds its two). etcdctl
/// then also turns on gRPC's own debug log, which raftkvctl does not have.
pub(crate) fn debug_lines(cli: &Cli, watch: bool) -> Vec<String> {
    let path = |p: &Option<PathBuf>| {
        p.as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    };
    let text = |s: &Option<String>| s.clone().unwrap_or_default();
    let mut values: Vec<(&str, String)> = vec![
        ("cacert", path(&cli.cacert)),
        ("cert", path(&cli.cert)),
        ("command-timeout", go_duration(cli.command_timeout)),
        ("debug", cli.debug.to_string()),
        ("dial-timeout", go_duration(cli.dial_timeout)),
        ("discovery-srv", text(&cli.discovery_srv)),
        ("discovery-srv-name", text(&cli.discovery_srv_name)),
        ("endpoints", format!("[{}]", cli.endpoints.join(","))),
        ("hex", cli.hex.to_string()),
        ("insecure-discovery", cli.insecure_discovery.to_string()),
        (
            "insecure-skip-tls-verify",
            cli.insecure_skip_tls_verify.to_string(),
        ),
        ("insecure-transport", cli.insecure_transport.to_string()),
        ("keepalive-time", go_duration(cli.keepalive_time)),
        ("keepalive-timeout", go_duration(cli.keepalive_timeout)),
        ("key", path(&cli.key)),
        ("password", text(&cli.password)),
        ("user", text(&cli.user)),
        ("write-out", cli.write_out.clone()),
    ];
    if watch {
        values.extend(WATCH_FLAGS.iter().map(|name| (*name, String::new())));
    }
    values.sort();
    values
        .into_iter()
        .map(|(name, value)| format!("{}={value}", variable(name)))
        .collect()
}

/// Go's `time.Duration.String`: `0s`, `300ms`, `1.5s`, `1m30s`, `2h0m0s`.
fn go_duration(d: std::time::Duration) -> String {
    /// `v / unit` with the remainder as a decimal fraction, trailing zeros dropped.
    fn frac(v: u128, unit: u128) -> String {
        let (whole, rest) = (v / unit, v % unit);
        if rest == 0 {
            return whole.to_string();
        }
        let width = unit.ilog10() as usize;
        let digits = format!("{rest:0width$}");
        format!("{whole}.{}", digits.trim_end_matches('0'))
    }
    let ns = d.as_nanos();
    match ns {
        0 => "0s".into(),
        1..1_000 => format!("{ns}ns"),
        1_000..1_000_000 => format!("{}µs", frac(ns, 1_000)),
        1_000_000..1_000_000_000 => format!("{}ms", frac(ns, 1_000_000)),
        _ => {
            let secs = ns / 1_000_000_000;
            let (h, m) = (secs / 3600, secs / 60 % 60);
            let s = frac(ns % 60_000_000_000, 1_000_000_000);
            match (h, m) {
                (0, 0) => format!("{s}s"),
                (0, m) => format!("{m}m{s}s"),
                (h, m) => format!("{h}h{m}m{s}s"),
            }
        }
    }
}

/// A log line as etcdctl's logger (capnslog) writes it: `2026-12-04 11:41:38.934134 W |
/// pkg/flags: ...`, in UTC.
pub(crate) fn log_line(level: char, message: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs();
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}.{:06} {level} | pkg/flags: {message}",
        rest / 3600,
        rest / 60 % 60,
        rest % 60,
        now.subsec_micros()
    )
}

/// The proleptic Gregorian date of a count of days since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, FromArgMatches};

    use super::*;

    fn run(args: &[&str], environ: &[(&str, &str)]) -> (Cli, Outcome) {
        let matches = Cli::command().try_get_matches_from(args).expect("parses");
        let mut cli = Cli::from_arg_matches(&matches).expect("parses");
        let environ: Vec<(String, String)> = environ
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let watch = matches!(cli.command, crate::Command::Watch(_));
        let outcome = apply(&mut cli, &matches, &environ, watch);
        (cli, outcome)
    }

    #[test]
    fn variables_set_the_flags_not_on_the_command_line() {
        let (cli, outcome) = run(
            &["raftkvctl", "get", "a", "--hex"],
            &[
                ("ETCDCTL_ENDPOINTS", "127.0.0.1:1,127.0.0.1:2"),
                ("ETCDCTL_WRITE_OUT", "json"),
                ("ETCDCTL_DIAL_TIMEOUT", "7s"),
                ("ETCDCTL_COMMAND_TIMEOUT", "nonsense"),
                ("ETCDCTL_INSECURE_SKIP_TLS_VERIFY", "T"),
                ("ETCDCTL_USER", "root:pw"),
                ("ETCDCTL_CACERT", "/ca.pem"),
                ("PATH", "/bin"),
            ],
        );
        assert_eq!(outcome, Outcome::Go(vec![]));
        assert_eq!(cli.endpoints, ["127.0.0.1:1", "127.0.0.1:2"]);
        assert_eq!(cli.write_out, "json");
        assert_eq!(cli.dial_timeout, std::time::Duration::from_secs(7));
        // A value the flag cannot take is dropped, as etcdctl drops it.
        assert_eq!(cli.command_timeout, std::time::Duration::from_secs(5));
        assert!(cli.insecure_skip_tls_verify && cli.hex);
        assert_eq!(cli.user.as_deref(), Some("root:pw"));
        assert_eq!(cli.cacert, Some(PathBuf::from("/ca.pem")));
    }

    #[test]
    fn a_variable_beside_its_flag_stops_the_command() {
        let before = ["raftkvctl", "--endpoints=127.0.0.1:2", "put", "a", "b"];
        let after = ["raftkvctl", "put", "a", "b", "--endpoints", "127.0.0.1:2"];
        for (args, value) in [(&before[..], "127.0.0.1:1"), (&before, ""), (&after, "x")] {
            let (_, outcome) = run(args, &[("ETCDCTL_FOO", "x"), ("ETCDCTL_ENDPOINTS", value)]);
            assert_eq!(
                outcome,
                Outcome::Conflict(
                    vec!["unrecognized environment variable ETCDCTL_FOO=x".into()],
                    "conflicting environment variable \"ETCDCTL_ENDPOINTS\" is shadowed by \
                     corresponding command-line flag (either unset environment variable or \
                     disable flag)"
                        .into()
                )
            );
        }
    }

    #[test]
    fn unknown_and_empty_variables_are_warned_of() {
        let (cli, outcome) = run(
            &["raftkvctl", "get", "a"],
            &[
                ("ETCDCTL_W", "json"),
                ("ETCDCTL_HEX", ""),
                ("ETCDCTL_WATCH_KEY", "k"),
            ],
        );
        assert_eq!(
            outcome,
            Outcome::Go(vec![
                "unrecognized environment variable ETCDCTL_W=json".into(),
                "unrecognized environment variable ETCDCTL_HEX=".into(),
                "unrecognized environment variable ETCDCTL_WATCH_KEY=k".into(),
            ])
        );
        assert_eq!(cli.write_out, "simple");
        // `watch` reads its own two.
        let (_, outcome) = run(&["raftkvctl", "watch"], &[("ETCDCTL_WATCH_KEY", "k")]);
        assert_eq!(outcome, Outcome::Go(vec![]));
    }

    #[test]
    fn durations_read_as_gos() {
        use std::time::Duration;
        for (d, want) in [
            (Duration::ZERO, "0s"),
            (Duration::from_nanos(12), "12ns"),
            (Duration::from_micros(1500), "1.5ms"),
            (Duration::from_millis(300), "300ms"),
            (Duration::from_secs(2), "2s"),
            (Duration::from_millis(1500), "1.5s"),
            (Duration::from_secs(90), "1m30s"),
            (Duration::from_secs(7200), "2h0m0s"),
            (Duration::from_nanos(3_723_000_000_001), "1h2m3.000000001s"),
        ] {
            assert_eq!(go_duration(d), want, "{d:?}");
        }
    }

    #[test]
    fn log_lines_carry_capnslogs_date() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_791), (2026, 12, 4));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        let line = log_line('W', "x");
        assert_eq!(
            line.len(),
            "2026-12-04 11:41:38.934134 W | pkg/flags: x".len()
        );
        assert!(line.ends_with(" W | pkg/flags: x"), "{line}");
    }
}
