//! `user ...`, `role ...` and `auth enable | disable`: etcdctl 3.4's auth management commands,
//! their argument errors and exit codes; the printers are in `print` (`AuthAnswer`).

use anyhow::anyhow;
use clap::{ArgAction, Subcommand};
use raftkv_client::Connection;
use raftkv_proto::authpb::{Permission, UserAddOptions, permission};
use raftkv_proto::etcdserverpb::*;

use crate::print::{AuthAnswer, Printer};
use crate::{Cli, bad_args, bad_feature, read, write};

/// A Go boolean flag (`--name`, `--name=false`), default true.
#[derive(clap::Args, Clone, Copy)]
pub struct Interactive {
    /// Read password from stdin instead of interactive terminal (false: from stdin).
    #[arg(
        long,
        action = ArgAction::Set,
        num_args = 0..=1,
        require_equals = true,
        default_value_t = true,
        default_missing_value = "true"
    )]
    interactive: bool,
}

#[derive(Subcommand)]
pub enum UserCommand {
    /// Adds a new user.
    Add {
        args: Vec<String>,
        #[command(flatten)]
        interactive: Interactive,
        /// Supply password from the command line flag.
        #[arg(long, default_value = "")]
        new_user_password: String,
        /// Create a user without password (CN based auth only).
        #[arg(long)]
        no_password: bool,
    },
    /// Deletes a user.
    Delete { args: Vec<String> },
    /// Gets detailed information of a user.
    Get {
        args: Vec<String>,
        /// Show permissions of roles granted to the user.
        #[arg(long)]
        detail: bool,
    },
    /// Lists all users.
    List { args: Vec<String> },
    /// Changes password of user.
    Passwd {
        args: Vec<String>,
        #[command(flatten)]
        interactive: Interactive,
    },
    /// Grants a role to a user.
    GrantRole { args: Vec<String> },
    /// Revokes a role from a user.
    RevokeRole { args: Vec<String> },
}

#[derive(Subcommand)]
pub enum RoleCommand {
    /// Adds a new role.
    Add { args: Vec<String> },
    /// Deletes a role.
    Delete { args: Vec<String> },
    /// Gets detailed information of a role.
    Get { args: Vec<String> },
    /// Lists all roles.
    List { args: Vec<String> },
    /// Grants a key to a role.
    GrantPermission {
        args: Vec<String>,
        /// Grant a prefix permission.
        #[arg(long)]
        prefix: bool,
        /// Grant a permission of keys that are greater than or equal to the given key.
        #[arg(long)]
        from_key: bool,
    },
    /// Revokes a key from a role.
    RevokePermission {
        args: Vec<String>,
        /// Revoke a prefix permission.
        #[arg(long)]
        prefix: bool,
        /// Revoke a permission of keys that are greater than or equal to the given key.
        #[arg(long)]
        from_key: bool,
    },
}

#[derive(Subcommand)]
pub enum AuthCommand {
    /// Enables authentication.
    Enable { args: Vec<String> },
    /// Disables authentication.
    Disable { args: Vec<String> },
}

/// Fails with etcdctl's ExitBadArgs and `message` unless there are `n` arguments.
fn need(args: &[String], n: usize, message: &str) -> anyhow::Result<()> {
    if args.len() == n {
        Ok(())
    } else {
        Err(bad_args(anyhow!("{message}")))
    }
}

/// Go's `fmt.Scanf("%s", &password)` on stdin: the first word of the input (empty if none).
fn scan_word() -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    Ok(line
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string())
}

/// etcdctl's `readPasswordInteractive`: the password asked for twice on the terminal.
async fn ask_password(name: &str) -> anyhow::Result<String> {
    let ask = |prompt: String| async move {
        crate::prompt::ask(&prompt)
            .await
            .map_err(|e| bad_args(anyhow!("failed to ask password: {e:#}")))
    };
    let first = ask(format!("Password of {name}: ")).await?;
    if first.is_empty() {
        return Err(bad_args(anyhow!("empty password")));
    }
    let second = ask(format!("Type password of {name} again for confirmation: ")).await?;
    if first != second {
        return Err(bad_args(anyhow!("given passwords are different")));
    }
    Ok(first)
}

async fn password(name: &str, interactive: Interactive) -> anyhow::Result<String> {
    if interactive.interactive {
        ask_password(name).await
    } else {
        scan_word()
    }
}

/// etcdctl's `permRange`: the key and range end of `grant-permission` / `revoke-permission`
/// from the key arguments and `--prefix` / `--from-key`.
fn perm_range(args: &[String], prefix: bool, from_key: bool) -> anyhow::Result<(String, String)> {
    let exclusive = || {
        bad_args(anyhow!(
            "--from-key and --prefix flags are mutually exclusive"
        ))
    };
    let key = &args[0];
    if key.is_empty() {
        if prefix && from_key {
            return Err(exclusive());
        }
        let end = if prefix || from_key { "\0" } else { "" };
        return Ok(("\0".into(), end.into()));
    }
    let end = match (args.len(), prefix, from_key) {
        (1, true, true) => return Err(exclusive()),
        (1, true, false) => {
            String::from_utf8_lossy(&crate::kv::prefix_end(key.as_bytes())).into_owned()
        }
        (1, false, true) => "\0".into(),
        (1, false, false) => String::new(),
        (_, true, _) => {
            return Err(bad_args(anyhow!(
                "unexpected endkey argument with --prefix flag"
            )));
        }
        (_, _, true) => {
            return Err(bad_args(anyhow!(
                "unexpected endkey argument with --from-key flag"
            )));
        }
        _ => args[1].clone(),
    };
    Ok((key.clone(), end))
}

/// clientv3's `StrToPermissionType`.
fn permission_type(s: &str) -> anyhow::Result<permission::Type> {
    match s.to_ascii_uppercase().as_str() {
        "READ" => Ok(permission::Type::Read),
        "WRITE" => Ok(permission::Type::Write),
        "READWRITE" => Ok(permission::Type::Readwrite),
        _ => Err(bad_args(anyhow!("invalid permission type: {s}"))),
    }
}

/// An Auth change, sent as etcdctl sends writes.
macro_rules! change {
    ($cli:expr, $method:ident, $req:expr) => {{
        let req = $req;
        write($cli, |c: Connection| {
            let req = req.clone();
            async move { c.auth().$method(req).await }
        })
        .await?
    }};
}

/// An Auth read (clientv3 retries these on another endpoint).
macro_rules! lookup {
    ($cli:expr, $method:ident, $req:expr) => {{
        let req = $req;
        read($cli, |c: Connection| {
            let req = req.clone();
            async move { c.auth().$method(req).await }
        })
        .await?
    }};
}

fn show(printer: &Printer, answer: &AuthAnswer) -> anyhow::Result<()> {
    print!("{}", printer.auth(answer).map_err(bad_feature)?);
    Ok(())
}

/// Runs one `user` command.
pub async fn user(cli: &Cli, printer: &Printer, command: UserCommand) -> anyhow::Result<()> {
    let answer = match command {
        UserCommand::Add {
            args,
            interactive,
            new_user_password,
            no_password,
        } => {
            need(
                &args,
                1,
                "user add command requires user name as its argument",
            )?;
            let (name, password) = if no_password {
                (args[0].clone(), String::new())
            } else if !new_user_password.is_empty() {
                (args[0].clone(), new_user_password)
            } else if let Some((name, password)) = args[0].split_once(':') {
                if name.is_empty() {
                    return Err(bad_args(anyhow!("empty user name is not allowed")));
                }
                (name.to_string(), password.to_string())
            } else {
                (args[0].clone(), password(&args[0], interactive).await?)
            };
            let req = AuthUserAddRequest {
                name: name.clone(),
                password,
                options: Some(UserAddOptions { no_password }),
            };
            let resp = change!(cli, user_add, req);
            AuthAnswer::UserAdd(name, resp.header)
        }
        UserCommand::Delete { args } => {
            need(
                &args,
                1,
                "user delete command requires user name as its argument",
            )?;
            let name = args[0].clone();
            let resp = change!(
                cli,
                user_delete,
                AuthUserDeleteRequest { name: name.clone() }
            );
            AuthAnswer::UserDelete(name, resp.header)
        }
        UserCommand::Get { args, detail } => {
            need(
                &args,
                1,
                "user get command requires user name as its argument",
            )?;
            let name = args[0].clone();
            let resp = lookup!(cli, user_get, AuthUserGetRequest { name: name.clone() });
            if !detail {
                return show(printer, &AuthAnswer::UserGet(name, resp));
            }
            println!("User: {name}");
            for role in resp.roles {
                println!();
                let req = AuthRoleGetRequest { role: role.clone() };
                let resp = lookup!(cli, role_get, req);
                show(printer, &AuthAnswer::RoleGet(role, resp))?;
            }
            return Ok(());
        }
        UserCommand::List { args } => {
            need(&args, 0, "user list command requires no arguments")?;
            AuthAnswer::UserList(lookup!(cli, user_list, AuthUserListRequest {}))
        }
        UserCommand::Passwd { args, interactive } => {
            need(
                &args,
                1,
                "user passwd command requires user name as its argument",
            )?;
            let password = password(&args[0], interactive).await?;
            let req = AuthUserChangePasswordRequest {
                name: args[0].clone(),
                password,
            };
            AuthAnswer::UserPasswd(change!(cli, user_change_password, req).header)
        }
        UserCommand::GrantRole { args } => {
            let why = "user grant command requires user name and role name as its argument";
            need(&args, 2, why)?;
            let (user, role) = (args[0].clone(), args[1].clone());
            let req = AuthUserGrantRoleRequest {
                user: user.clone(),
                role: role.clone(),
            };
            AuthAnswer::UserGrantRole(user, role, change!(cli, user_grant_role, req).header)
        }
        UserCommand::RevokeRole { args } => {
            let why = "user revoke-role requires user name and role name as its argument";
            need(&args, 2, why)?;
            let (name, role) = (args[0].clone(), args[1].clone());
            let req = AuthUserRevokeRoleRequest {
                name: name.clone(),
                role: role.clone(),
            };
            AuthAnswer::UserRevokeRole(name, role, change!(cli, user_revoke_role, req).header)
        }
    };
    show(printer, &answer)
}

/// Runs one `role` command.
pub async fn role(cli: &Cli, printer: &Printer, command: RoleCommand) -> anyhow::Result<()> {
    let answer = match command {
        RoleCommand::Add { args } => {
            need(
                &args,
                1,
                "role add command requires role name as its argument",
            )?;
            let name = args[0].clone();
            let resp = change!(cli, role_add, AuthRoleAddRequest { name: name.clone() });
            AuthAnswer::RoleAdd(name, resp.header)
        }
        RoleCommand::Delete { args } => {
            need(
                &args,
                1,
                "role delete command requires role name as its argument",
            )?;
            let role = args[0].clone();
            let resp = change!(
                cli,
                role_delete,
                AuthRoleDeleteRequest { role: role.clone() }
            );
            AuthAnswer::RoleDelete(role, resp.header)
        }
        RoleCommand::Get { args } => {
            need(
                &args,
                1,
                "role get command requires role name as its argument",
            )?;
            let role = args[0].clone();
            let resp = lookup!(cli, role_get, AuthRoleGetRequest { role: role.clone() });
            AuthAnswer::RoleGet(role, resp)
        }
        RoleCommand::List { args } => {
            need(&args, 0, "role list command requires no arguments")?;
            AuthAnswer::RoleList(lookup!(cli, role_list, AuthRoleListRequest {}))
        }
        RoleCommand::GrantPermission {
            args,
            prefix,
            from_key,
        } => {
            if args.len() < 3 {
                return Err(bad_args(anyhow!(
                    "role grant command requires role name, permission type, and key [endkey] as its argument"
                )));
            }
            let kind = permission_type(&args[1])?;
            let (key, range_end) = perm_range(&args[2..], prefix, from_key)?;
            let req = AuthRoleGrantPermissionRequest {
                name: args[0].clone(),
                perm: Some(Permission {
                    perm_type: kind as i32,
                    key: key.into_bytes().into(),
                    range_end: range_end.into_bytes().into(),
                }),
            };
            let resp = change!(cli, role_grant_permission, req);
            AuthAnswer::RoleGrantPermission(args[0].clone(), resp.header)
        }
        RoleCommand::RevokePermission {
            args,
            prefix,
            from_key,
        } => {
            if args.len() < 2 {
                return Err(bad_args(anyhow!(
                    "role revoke-permission command requires role name and key [endkey] as its argument"
                )));
            }
            let (key, range_end) = perm_range(&args[1..], prefix, from_key)?;
            let req = AuthRoleRevokePermissionRequest {
                role: args[0].clone(),
                key: key.into_bytes().into(),
                range_end: range_end.clone().into_bytes().into(),
            };
            let resp = change!(cli, role_revoke_permission, req);
            AuthAnswer::RoleRevokePermission(
                args[0].clone(),
                args[1].clone(),
                range_end,
                resp.header,
            )
        }
    };
    show(printer, &answer)
}

/// Runs `auth enable` or `auth disable`. Like etcdctl, `enable` adds the `root` role and
/// grants it to `root` when the server says it is missing, then tries again.
pub async fn auth(cli: &Cli, command: AuthCommand) -> anyhow::Result<()> {
    match command {
        AuthCommand::Enable { args } => {
            need(
                &args,
                0,
                "auth enable command does not accept any arguments",
            )?;
            loop {
                let enabled = write(cli, |c: Connection| async move {
                    c.auth().auth_enable(AuthEnableRequest {}).await
                })
                .await;
                match enabled {
                    Ok(_) => break,
                    Err(e) if e.to_string() == "etcdserver: root user does not have root role" => {
                        let add = AuthRoleAddRequest {
                            name: "root".into(),
                        };
                        change!(cli, role_add, add);
                        let grant = AuthUserGrantRoleRequest {
                            user: "root".into(),
                            role: "root".into(),
                        };
                        change!(cli, user_grant_role, grant);
                    }
                    Err(e) => return Err(e),
                }
            }
            println!("Authentication Enabled");
        }
        AuthCommand::Disable { args } => {
            need(
                &args,
                0,
                "auth disable command does not accept any arguments",
            )?;
            change!(cli, auth_disable, AuthDisableRequest {});
            println!("Authentication Disabled");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(args: &[&str], prefix: bool, from_key: bool) -> Result<(String, String), String> {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        perm_range(&args, prefix, from_key).map_err(|e| e.to_string())
    }

    /// etcdctl's `permRange` and `rangeEndFromPermFlags`, case for case.
    #[test]
    fn permission_ranges_as_etcdctl_makes_them() {
        let ok = |k: &str, e: &str| Ok((k.to_string(), e.to_string()));
        assert_eq!(range(&["foo"], false, false), ok("foo", ""));
        assert_eq!(range(&["foo", "bar"], false, false), ok("foo", "bar"));
        assert_eq!(range(&["foo"], true, false), ok("foo", "fop"));
        assert_eq!(range(&["foo"], false, true), ok("foo", "\0"));
        assert_eq!(range(&[""], false, false), ok("\0", ""));
        assert_eq!(range(&[""], true, false), ok("\0", "\0"));
        let exclusive = "--from-key and --prefix flags are mutually exclusive";
        assert_eq!(range(&["foo"], true, true), Err(exclusive.into()));
        assert_eq!(range(&[""], true, true), Err(exclusive.into()));
        assert_eq!(
            range(&["a", "b"], true, false),
            Err("unexpected endkey argument with --prefix flag".into())
        );
        assert_eq!(
            range(&["a", "b"], false, true),
            Err("unexpected endkey argument with --from-key flag".into())
        );
    }

    #[test]
    fn permission_types_in_any_case() {
        assert_eq!(
            permission_type("readWrite").unwrap(),
            permission::Type::Readwrite
        );
        assert_eq!(
            permission_type("bogus").unwrap_err().to_string(),
            "invalid permission type: bogus"
        );
    }
}
