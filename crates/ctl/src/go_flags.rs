//! Boolean flags as etcdctl (Go's pflag) takes them: `--prefix`, and also `--prefix=true`,
//! `--prefix=false`, `--hex=1`, `--keys-only=T`, … — any `strconv.ParseBool` spelling after
//! `=`. clap's switches take no value, so the command line is rewritten before clap reads
//! it: a true value becomes the bare switch, a false one is dropped, and any other value is
//! refused with pflag's message.

use std::collections::HashSet;
use std::ffi::OsString;

use clap::{ArgAction, Command};

/// Go's `strconv.ParseBool`.
pub(crate) fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

/// `parse_bool` as a clap value parser, for the booleans that default to true
/// (`--insecure-transport[=false]`).
pub(crate) fn bool_value(s: &str) -> Result<bool, String> {
    parse_bool(s).ok_or_else(|| {
        format!("strconv.ParseBool: parsing {s:?}: invalid syntax (want true or false)")
    })
}

/// The long names of the flags in scope (the root's and those of the subcommands named so
/// far): switches, and flags whose value may be the next argument; and the short names of
/// the latter.
#[derive(Default, Clone)]
struct Names {
    switches: HashSet<String>,
    valued: HashSet<String>,
    valued_short: HashSet<char>,
}

/// Adds `command`'s own flags to `names`.
fn collect(command: &Command, names: &mut Names) {
    for arg in command.get_arguments() {
        let switch = matches!(arg.get_action(), ArgAction::SetTrue);
        let next_is_value = arg.get_action().takes_values() && !arg.is_require_equals_set();
        if let Some(long) = arg.get_long() {
            if switch {
                names.switches.insert(long.to_string());
            } else if next_is_value {
                names.valued.insert(long.to_string());
            }
        }
        if let Some(short) = arg.get_short().filter(|_| next_is_value) {
            names.valued_short.insert(short);
        }
    }
}

/// `args` (the program name first) with `--switch=value` rewritten for clap; `Err` with
/// pflag's message for a value that is not a boolean.
pub(crate) fn normalize(args: Vec<OsString>, command: &Command) -> Result<Vec<OsString>, String> {
    let mut names = Names::default();
    collect(command, &mut names);
    // The command whose subcommands a plain argument may name, until one does not.
    let mut current = Some(command);
    let mut out = Vec::with_capacity(args.len());
    let mut args = args.into_iter();
    out.extend(args.next());
    let mut value_next = false;
    let mut rest = false;
    for arg in args {
        let text = arg.to_str().map(str::to_string);
        if rest || std::mem::take(&mut value_next) {
            out.push(arg);
            continue;
        }
        let Some(text) = text else {
            out.push(arg);
            continue;
        };
        if text == "--" {
            rest = true;
        } else if let Some(flag) = text.strip_prefix("--") {
            match flag.split_once('=') {
                Some((name, value)) if names.switches.contains(name) => {
                    match parse_bool(value) {
                        Some(true) => out.push(OsString::from(format!("--{name}"))),
                        Some(false) => {}
                        None => {
                            return Err(format!(
                                "invalid argument {value:?} for \"--{name}\" flag: \
                                 strconv.ParseBool: parsing {value:?}: invalid syntax"
                            ));
                        }
                    }
                    continue;
                }
                Some(_) => {}
                None => value_next = names.valued.contains(flag),
            }
        } else if let Some(short) = text.strip_prefix('-') {
            // `-w json`: the value is the next argument; `-wjson` holds its own.
            let mut chars = short.chars();
            if let (Some(c), None) = (chars.next(), chars.next()) {
                value_next = names.valued_short.contains(&c);
            }
        } else {
            current = current.and_then(|c| c.find_subcommand(&text));
            if let Some(sub) = current {
                collect(sub, &mut names);
            }
        }
        out.push(arg);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    fn run(args: &[&str]) -> Result<Vec<String>, String> {
        let args = args.iter().map(OsString::from).collect();
        normalize(args, &crate::Cli::command()).map(|v| {
            v.into_iter()
                .map(|a| a.into_string().expect("utf-8"))
                .collect()
        })
    }

    #[test]
    fn switches_take_go_booleans() {
        assert_eq!(
            run(&[
                "ctl",
                "--hex=true",
                "get",
                "a",
                "--prefix=1",
                "--keys-only=false"
            ]),
            Ok(vec![
                "ctl".into(),
                "--hex".into(),
                "get".into(),
                "a".into(),
                "--prefix".into()
            ])
        );
        assert_eq!(
            run(&["ctl", "get", "a", "--prefix=yes"]),
            Err(
                "invalid argument \"yes\" for \"--prefix\" flag: strconv.ParseBool: parsing \
                 \"yes\": invalid syntax"
                    .into()
            )
        );
    }

    #[test]
    fn values_and_what_follows_a_double_dash_are_left_alone() {
        let args = [
            "ctl",
            "--user",
            "--prefix=true",
            "-w",
            "--hex=false",
            "put",
            "--",
            "k",
            "--prev-kv=false",
        ];
        assert_eq!(run(&args), Ok(args.iter().map(|a| a.to_string()).collect()));
        // A flag with `=` holds its own value; the next argument is read again.
        assert_eq!(
            run(&["ctl", "--user=x", "--hex=T", "version"]),
            Ok(vec![
                "ctl".into(),
                "--user=x".into(),
                "--hex".into(),
                "version".into()
            ])
        );
    }

    /// Checks every command path below `command` (with `names` in scope so far).
    fn check_scopes(command: &Command, mut names: Names, path: &str, switches: &mut usize) {
        collect(command, &mut names);
        let both: Vec<_> = names.switches.intersection(&names.valued).collect();
        assert!(both.is_empty(), "{path}: {both:?}");
        *switches += names.switches.len();
        for sub in command.get_subcommands() {
            let path = format!("{path} {}", sub.get_name());
            check_scopes(sub, names.clone(), &path, switches);
        }
    }

    #[test]
    fn no_name_is_both_a_switch_and_a_valued_flag_in_one_command() {
        let mut switches = 0;
        check_scopes(
            &crate::Cli::command(),
            Names::default(),
            "ctl",
            &mut switches,
        );
        assert!(switches > 100, "{switches}");
        // make-mirror's --prefix takes a value, get's is a switch.
        assert_eq!(
            run(&["ctl", "make-mirror", "--prefix=true", "d:1"]),
            Ok(vec![
                "ctl".into(),
                "make-mirror".into(),
                "--prefix=true".into(),
                "d:1".into()
            ])
        );
        assert_eq!(
            run(&["ctl", "member", "add", "--learner=t", "n"]),
            Ok(vec![
                "ctl".into(),
                "member".into(),
                "add".into(),
                "--learner".into(),
                "n".into()
            ])
        );
    }
}
