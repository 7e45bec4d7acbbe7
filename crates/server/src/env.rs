//! `ETCD_*` environment variables, read as etcd reads them (`pkg/flags` `SetFlagsFromEnv`,
//! `verifyEnv`): `ETCD_` + the flag's name upper-cased with `-` → `_`, each value parsed as
//! the flag would parse it. Read only when no config file is in effect. A variable naming a
//! flag that is also on the command line is an error (not "the flag wins"); a variable that
//! names no flag, or is empty, gets a warning; `ETCDCTL_*` are not ours.

use std::ffi::OsString;

use anyhow::bail;
use clap::parser::ValueSource;
use clap::{ArgMatches, Command};

use crate::config::Notice;
use crate::flags::env_name;

/// What the environment adds to the command line.
#[derive(Debug, Default)]
pub struct FromEnv {
    /// `--flag=value` for each variable used.
    pub args: Vec<OsString>,
    /// One line per variable used, and per variable not recognized.
    pub notices: Vec<Notice>,
}

/// A variable's value the flag refuses: etcd stops while verifying its flags (`error
/// verifying flags, invalid value "abc" for ETCD_SNAPSHOT_COUNT: parse error`, exit 1).
#[derive(Debug)]
pub struct Refused(pub String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

/// Reads `env` against the member `command`, whose command-line parse is `cli`.
pub fn flags_from_env(
    command: &Command,
    cli: &ArgMatches,
    env: &[(String, String)],
) -> anyhow::Result<FromEnv> {
    let mut vars: Vec<&(String, String)> =
        env.iter().filter(|(k, _)| k.starts_with("ETCD_")).collect();
    vars.sort();
    let mut out = FromEnv::default();
    for (key, value) in vars {
        let flag = command.get_arguments().find(|a| {
            a.get_long()
                .is_some_and(|long| env_name(long) == key.as_str())
        });
        let Some(flag) = flag else {
            out.notices.push(unrecognized(key, value));
            continue;
        };
        if cli.value_source(flag.get_id().as_str()) == Some(ValueSource::CommandLine) {
            bail!(
                "conflicting environment variable {key:?} is shadowed by corresponding command-line flag (either unset environment variable or disable flag)"
            );
        }
        if value.is_empty() {
            out.notices.push(unrecognized(key, value));
            continue;
        }
        let long = flag.get_long().unwrap_or_default();
        let arg = format!("--{long}={value}");
        if let Err(e) = command
            .clone()
            .try_get_matches_from(["raftkv", arg.as_str()])
        {
            return Err(Refused(format!(
                "invalid value {value:?} for {key}: {}",
                clap_reason(&e)
            ))
            .into());
        }
        out.notices.push(Notice::info(format!(
            "recognized and used environment variable {key}={value}"
        )));
        out.args.push(arg.into());
    }
    Ok(out)
}

fn unrecognized(key: &str, value: &str) -> Notice {
    Notice::warn(format!("unrecognized environment variable {key}={value}"))
}

/// Why clap refused a value: the value parser's own message when there is one.
pub fn clap_reason(e: &clap::Error) -> String {
    match std::error::Error::source(e) {
        Some(source) => source.to_string(),
        None => {
            let text = e.to_string();
            let first = text.lines().next().unwrap_or_default();
            first.trim_start_matches("error: ").to_string()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flags::MemberFlags;

    fn env(vars: &[(&str, &str)]) -> Vec<(String, String)> {
        vars.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn read(cli: &[&str], vars: &[(&str, &str)]) -> anyhow::Result<FromEnv> {
        let command = MemberFlags::command();
        let matches = command
            .clone()
            .try_get_matches_from(std::iter::once("raftkv").chain(cli.iter().copied()))?;
        flags_from_env(&command, &matches, &env(vars))
    }

    #[test]
    fn variables_become_flags_and_the_rest_is_reported() {
        let out = read(
            &["--name", "n1"],
            &[
                ("ETCD_INITIAL_CLUSTER_TOKEN", "tok"),
                ("ETCD_STRICT_RECONFIG_CHECK", "false"),
                ("ETCD_FOO", "bar"),
                ("ETCD_SNAPSHOT_COUNT", ""),
                ("ETCDCTL_API", "3"),
                ("PATH", "/bin"),
            ],
        )
        .unwrap();
        assert_eq!(
            out.args,
            [
                "--initial-cluster-token=tok",
                "--strict-reconfig-check=false"
            ]
        );
        let lines: Vec<&str> = out.notices.iter().map(|n| n.message.as_str()).collect();
        assert_eq!(
            lines,
            [
                "unrecognized environment variable ETCD_FOO=bar",
                "recognized and used environment variable ETCD_INITIAL_CLUSTER_TOKEN=tok",
                "unrecognized environment variable ETCD_SNAPSHOT_COUNT=",
                "recognized and used environment variable ETCD_STRICT_RECONFIG_CHECK=false",
            ]
        );
    }

    #[test]
    fn a_variable_shadowed_by_a_flag_is_an_error() {
        for value in ["envname", ""] {
            let err = read(&["--name", "flagname"], &[("ETCD_NAME", value)]).unwrap_err();
            assert_eq!(
                err.to_string(),
                "conflicting environment variable \"ETCD_NAME\" is shadowed by corresponding command-line flag (either unset environment variable or disable flag)"
            );
        }
        // Single-dash and `=` forms count as set too.
        assert!(read(&["-name=x"], &[("ETCD_NAME", "y")]).is_err());
    }

    #[test]
    fn a_bad_value_names_the_variable() {
        let err = read(&[], &[("ETCD_SNAPSHOT_COUNT", "abc")]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid value \"abc\" for ETCD_SNAPSHOT_COUNT: parse error"
        );
        assert!(read(&[], &[("ETCD_ENABLE_V2", "yes")]).is_err());
        assert!(read(&[], &[("ETCD_ELECTION_TIMEOUT", "1s")]).is_err());
    }
}
