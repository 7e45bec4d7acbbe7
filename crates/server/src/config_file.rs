//! `--config-file`: etcd's YAML configuration (`embed.ConfigFromFile`), turned into the
//! flags it stands for so that each value is checked exactly as on the command line.
//!
//! etcd reads the file as YAML → JSON → Go structs, which fixes its format: keys are the flag
//! names, matched case-insensitively; unknown keys are ignored; durations are integers of
//! nanoseconds; URL lists are one comma-separated string; `cipher-suites` and `log-outputs`
//! are YAML lists; a number or boolean where a string is expected is taken as its text; TLS
//! settings sit in `client-transport-security` / `peer-transport-security` objects. raftkv
//! also reads `log-format`.

use std::any::TypeId;
use std::ffi::OsString;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Arg, Command};
use serde_json::Value;

use crate::go_values::Urls;

/// Flags with no key in etcd's YAML (their keys are ignored, as etcd ignores them).
const NOT_IN_YAML: &[&str] = &[
    "config-file",
    "client-crl-file",
    "client-cert-allowed-hostname",
    "peer-crl-file",
    "peer-cert-allowed-cn",
    "peer-cert-allowed-hostname",
    "experimental-peer-skip-client-san-verification",
    // Only inside the `*-transport-security` objects:
    "cert-file",
    "key-file",
    "client-cert-auth",
    "trusted-ca-file",
    "auto-tls",
    "peer-cert-file",
    "peer-key-file",
    "peer-client-cert-auth",
    "peer-trusted-ca-file",
    "peer-auto-tls",
];

/// Keys whose values are YAML lists of strings.
const LISTS: &[&str] = &["cipher-suites", "log-outputs", "log-output"];

/// The keys of a `*-transport-security` object.
const SECURITY_KEYS: &[&str] = &[
    "cert-file",
    "key-file",
    "client-cert-auth",
    "trusted-ca-file",
    "auto-tls",
];

/// The `--flag=value` arguments a config file's text stands for, given the member `command`.
pub fn args_from_yaml(text: &str, command: &Command) -> anyhow::Result<Vec<OsString>> {
    let doc: Value = serde_yaml_ng::from_str(text).context("error converting YAML to JSON")?;
    let map = match doc {
        Value::Object(map) => map,
        Value::Null => return Ok(Vec::new()),
        other => bail!("want a mapping of etcd's keys, found {}", describe(&other)),
    };
    let mut args = Vec::new();
    for (key, value) in map {
        let key = key.to_lowercase();
        match key.as_str() {
            "client-transport-security" => security(&key, "", &value, command, &mut args)?,
            "peer-transport-security" => security(&key, "peer-", &value, command, &mut args)?,
            _ if NOT_IN_YAML.contains(&key.as_str()) => {}
            _ => {
                if let Some(arg) = flag(command, &key) {
                    push(&mut args, &key, arg, &key, &value)?;
                }
            }
        }
    }
    Ok(args)
}

/// A `client-transport-security` / `peer-transport-security` object, as the TLS flags.
fn security(
    key: &str,
    prefix: &str,
    value: &Value,
    command: &Command,
    args: &mut Vec<OsString>,
) -> anyhow::Result<()> {
    let map = match value {
        Value::Null => return Ok(()),
        Value::Object(map) => map,
        other => bail!("{key}: want an object, found {}", describe(other)),
    };
    for (sub, value) in map {
        let sub = sub.to_lowercase();
        if !SECURITY_KEYS.contains(&sub.as_str()) {
            continue;
        }
        let name = format!("{prefix}{sub}");
        if let Some(arg) = flag(command, &name) {
            push(args, &format!("{key}.{sub}"), arg, &name, value)?;
        }
    }
    Ok(())
}

fn flag<'a>(command: &'a Command, name: &str) -> Option<&'a Arg> {
    command.get_arguments().find(|a| a.get_long() == Some(name))
}

/// The JSON type a flag's key takes in etcd's YAML.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Bool,
    Number,
    /// `time.Duration`: integer nanoseconds.
    Duration,
    Text,
    Urls,
}

impl Kind {
    fn of(arg: &Arg) -> Kind {
        let t = arg.get_value_parser().type_id();
        if t == TypeId::of::<bool>() {
            Kind::Bool
        } else if t == TypeId::of::<Duration>() {
            Kind::Duration
        } else if t == TypeId::of::<u64>() || t == TypeId::of::<i64>() || t == TypeId::of::<u32>() {
            Kind::Number
        } else if t == TypeId::of::<Urls>() {
            Kind::Urls
        } else {
            Kind::Text
        }
    }

    fn want(self) -> &'static str {
        match self {
            Kind::Bool => "a boolean",
            Kind::Number => "a number",
            Kind::Duration => "a duration in integer nanoseconds",
            Kind::Text => "a string",
            Kind::Urls => "a comma-separated string of URLs",
        }
    }
}

/// Appends `--name=value` for one key, checking the value's YAML type as etcd's JSON
/// decoding would.
fn push(
    args: &mut Vec<OsString>,
    key: &str,
    arg: &Arg,
    name: &str,
    value: &Value,
) -> anyhow::Result<()> {
    let kind = Kind::of(arg);
    let text = match (kind, value) {
        (_, Value::Null) => return Ok(()),
        _ if LISTS.contains(&name) => list(key, value)?,
        (Kind::Bool, Value::Bool(b)) => b.to_string(),
        (Kind::Duration, Value::Number(n)) => match n.as_i64() {
            Some(nanos) => format!("{nanos}ns"),
            None => bail!("{key}: want {}, found {n}", kind.want()),
        },
        (Kind::Number, Value::Number(n)) => n.to_string(),
        (Kind::Text | Kind::Urls, Value::String(s)) => s.clone(),
        // sigs.k8s.io/yaml turns a scalar into text where the field is a string.
        (Kind::Text, Value::Number(n)) => n.to_string(),
        (Kind::Text, Value::Bool(b)) => b.to_string(),
        (_, other) => bail!("{key}: want {}, found {}", kind.want(), describe(other)),
    };
    args.push(format!("--{name}={text}").into());
    Ok(())
}

fn list(key: &str, value: &Value) -> anyhow::Result<String> {
    let items = match value {
        Value::String(s) => return Ok(s.clone()),
        Value::Array(items) => items,
        other => bail!("{key}: want a list of strings, found {}", describe(other)),
    };
    let mut out = Vec::new();
    for item in items {
        match item {
            Value::String(s) => out.push(s.as_str()),
            other => bail!("{key}: want a list of strings, found {}", describe(other)),
        }
    }
    Ok(out.join(","))
}

fn describe(value: &Value) -> &'static str {
    match value {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flags::MemberFlags;

    fn args(yaml: &str) -> anyhow::Result<Vec<String>> {
        let out = args_from_yaml(yaml, &MemberFlags::command())?;
        Ok(out.into_iter().map(|a| a.into_string().unwrap()).collect())
    }

    #[test]
    fn keys_become_flags() {
        let out = args(
            "NAME: y1\n\
             Snapshot-Count: 43\n\
             strict-reconfig-check: false\n\
             grpc-keepalive-interval: 7200000000000\n\
             listen-client-urls: http://127.0.0.1:1,http://127.0.0.1:2\n\
             auto-compaction-retention: 0\n\
             log-outputs: [stderr]\n\
             cipher-suites: []\n\
             bogus-key: 1\n\
             data-dir:\n\
             client-transport-security:\n  cert-file: ''\n  Auto-TLS: false\n\
             peer-transport-security:\n  cert-file: p.crt\n",
        )
        .unwrap();
        let mut out = out;
        out.sort();
        assert_eq!(
            out,
            [
                "--auto-compaction-retention=0",
                "--auto-tls=false",
                "--cert-file=",
                "--cipher-suites=",
                "--grpc-keepalive-interval=7200000000000ns",
                "--listen-client-urls=http://127.0.0.1:1,http://127.0.0.1:2",
                "--log-outputs=stderr",
                "--name=y1",
                "--peer-cert-file=p.crt",
                "--snapshot-count=43",
                "--strict-reconfig-check=false",
            ]
        );
    }

    #[test]
    fn types_are_checked_as_etcd_checks_them() {
        for (yaml, message) in [
            (
                "backend-batch-interval: 5s",
                "backend-batch-interval: want a duration in integer nanoseconds, found a string",
            ),
            (
                "heartbeat-interval: '100'",
                "heartbeat-interval: want a number, found a string",
            ),
            (
                "listen-client-urls: [http://a:1]",
                "listen-client-urls: want a comma-separated string of URLs, found a list",
            ),
            (
                "enable-v2: 'true'",
                "enable-v2: want a boolean, found a string",
            ),
            (
                "log-outputs: [1]",
                "log-outputs: want a list of strings, found a number",
            ),
            ("- a\n- b", "want a mapping of etcd's keys, found a list"),
        ] {
            assert_eq!(args(yaml).unwrap_err().to_string(), message, "{yaml}");
        }
        assert!(
            args("name: [")
                .unwrap_err()
                .to_string()
                .starts_with("error converting YAML to JSON")
        );
        assert!(args("").unwrap().is_empty());
    }

    /// The full example from the research notes (every key etcd 3.4 reads) converts.
    #[test]
    fn etcds_full_example_converts() {
        let out = args(include_str!("../testdata/etcd_config_example.yaml")).unwrap();
        assert!(out.contains(&"--name=y1".to_string()));
        assert!(out.contains(&"--experimental-warning-apply-duration=100000000ns".to_string()));
        assert!(out.contains(&"--proxy=off".to_string()));
    }
}
