//! etcdctl's answers to a command line it cannot parse, for the cases clap finds first.
//!
//! etcdctl (cobra and pflag) and clap refuse the same command lines, but word and exit
//! differently: clap exits 2 with its own text, where etcdctl
//!
//! - names an unknown flag or a bad flag value as pflag does (`unknown flag: --foo`,
//!   `unknown shorthand flag: 'x' in -x`, `invalid argument "abc" for "--rev" flag:
//!   strconv.ParseInt: parsing "abc": invalid syntax`), prints the command's usage on stdout
//!   and the error twice on stderr, and exits 1;
//! - refuses an unknown command (`unknown command "x" for "etcdctl"`, exit 1), but answers an
//!   unknown subcommand of a command group (`lease frob`) with the group's help (exit 0);
//! - checks the number of arguments in each command, with the command's own message and
//!   ExitBadArgs (128): those of the commands whose counts raftkvctl leaves to clap are in
//!   [`ARGUMENT_ERRORS`].
//!
//! Scripts look at the exit code and the first line; the usage text itself is raftkvctl's.

use std::process::ExitCode;

use clap::error::{ContextKind, ContextValue, ErrorKind};

/// etcdctl's `put` with no key, or a key and no value on stdin.
pub(crate) const PUT_ARGUMENTS: &str =
    "put command needs 1 argument and input from stdin or 2 arguments";

/// etcdctl's message for a command given too few arguments, and whether it refuses too many
/// with it too (some commands ignore extra arguments).
const ARGUMENT_ERRORS: &[(&str, &str, bool)] = &[
    (
        "get",
        "get command needs one argument as key and an optional argument as range_end",
        false,
    ),
    (
        "del",
        "del command needs one argument as key and an optional argument as range_end",
        true,
    ),
    ("put", PUT_ARGUMENTS, false),
    ("txn", "txn command does not accept argument", true),
    ("compaction", "compaction command needs 1 argument", true),
    ("member add", "member name not provided", false),
    ("member remove", "member ID is not provided", true),
    ("member update", "member ID is not provided", false),
    ("member promote", "member ID is not provided", true),
    ("snapshot save", "snapshot save expects one argument", true),
    (
        "snapshot status",
        "snapshot status requires exactly one argument",
        true,
    ),
    (
        "snapshot restore",
        "snapshot restore requires exactly one argument",
        true,
    ),
    ("move-leader", "move-leader command needs 1 argument", true),
];

/// Prints what etcdctl prints for `error` and returns its exit code; `None` leaves the error
/// to clap (help, version, and what etcdctl would not refuse either).
pub(crate) fn answer(error: &clap::Error, root: &clap::Command) -> Option<ExitCode> {
    let path = command_path(error);
    match error.kind() {
        ErrorKind::UnknownArgument => {
            let arg = context(error, ContextKind::InvalidArg)?;
            if let Some(flag) = arg.strip_prefix("--") {
                let flag = flag.split_once('=').map_or(flag, |(name, _)| name);
                Some(flag_error(&format!("unknown flag: --{flag}"), root, &path))
            } else if let Some(short) = arg.strip_prefix('-').filter(|s| !s.is_empty()) {
                let letter = short.chars().next().unwrap_or('-');
                Some(flag_error(
                    &format!("unknown shorthand flag: '{letter}' in {arg}"),
                    root,
                    &path,
                ))
            } else {
                // An argument past those the command takes.
                let (_, message, _) = ARGUMENT_ERRORS
                    .iter()
                    .find(|(name, _, refuses_more)| *name == path && *refuses_more)?;
                Some(bad_args(message))
            }
        }
        ErrorKind::MissingRequiredArgument => {
            let (_, message, _) = ARGUMENT_ERRORS.iter().find(|(name, _, _)| *name == path)?;
            Some(bad_args(message))
        }
        ErrorKind::InvalidValue | ErrorKind::ValueValidation => {
            let arg = context(error, ContextKind::InvalidArg)?;
            let value = context(error, ContextKind::InvalidValue).unwrap_or_default();
            let flag = arg.split_whitespace().next()?.to_string();
            if !flag.starts_with('-') {
                return None;
            }
            let reason = reason(error, &value);
            Some(flag_error(
                &format!("invalid argument {value:?} for \"{flag}\" flag: {reason}"),
                root,
                &path,
            ))
        }
        ErrorKind::InvalidSubcommand => {
            let name = context(error, ContextKind::InvalidSubcommand)?;
            if path.is_empty() {
                let message = format!("unknown command {name:?} for \"raftkvctl\"");
                eprintln!("Error: {message}\nRun 'raftkvctl --help' for usage.\nError: {message}");
                Some(ExitCode::FAILURE)
            } else {
                // A command group with an unknown subcommand shows its help.
                print!("{}", help_of(root, &path));
                Some(ExitCode::SUCCESS)
            }
        }
        _ => None,
    }
}

/// The subcommands named in the error's usage line ("Usage: raftkvctl member remove <ID>"
/// gives "member remove"); empty for the top level.
fn command_path(error: &clap::Error) -> String {
    let Some(ContextValue::StyledStr(usage)) = error.get(ContextKind::Usage) else {
        return String::new();
    };
    let usage = usage.to_string();
    let first = usage.lines().next().unwrap_or_default();
    first
        .split_whitespace()
        .skip_while(|w| *w != "raftkvctl")
        .skip(1)
        .take_while(|w| !w.starts_with(['[', '<', '-']))
        .collect::<Vec<_>>()
        .join(" ")
}

fn context(error: &clap::Error, kind: ContextKind) -> Option<String> {
    match error.get(kind)? {
        ContextValue::String(s) => Some(s.clone()),
        ContextValue::Strings(v) => v.first().cloned(),
        ContextValue::StyledStr(s) => Some(s.to_string()),
        _ => None,
    }
}

/// Why a flag's value was refused, in Go's words for a number as pflag gives them.
fn reason(error: &clap::Error, value: &str) -> String {
    use std::error::Error as _;
    let source = error.source();
    if let Some(e) = source.and_then(|s| s.downcast_ref::<std::num::ParseIntError>()) {
        use std::num::IntErrorKind;
        let why = match e.kind() {
            IntErrorKind::PosOverflow | IntErrorKind::NegOverflow => "value out of range",
            _ => "invalid syntax",
        };
        return format!("strconv.ParseInt: parsing {value:?}: {why}");
    }
    source.map_or_else(|| error.kind().to_string(), |s| s.to_string())
}

/// etcdctl's exit for a wrong number of arguments (ExitBadArgs).
fn bad_args(message: &str) -> ExitCode {
    eprintln!("Error: {message}");
    ExitCode::from(128)
}

/// A refused flag as cobra shows it: the command's usage on stdout, the error twice on
/// stderr, exit 1.
fn flag_error(message: &str, root: &clap::Command, path: &str) -> ExitCode {
    print!("{}", help_of(root, path));
    eprintln!("Error: {message}\n\nError: {message}");
    ExitCode::FAILURE
}

/// The help of the command at `path` (the top level's if it names none).
fn help_of(root: &clap::Command, path: &str) -> String {
    let mut command = root.clone();
    for name in path.split_whitespace() {
        match command.find_subcommand(name) {
            Some(sub) => command = sub.clone(),
            None => break,
        }
    }
    command.render_help().to_string()
}
