//! The `simple` output format: etcdctl's default lines.

use raftkv_proto::etcdserverpb::{DeleteRangeResponse, PutResponse, RangeResponse};
use raftkv_proto::mvccpb::KeyValue;

/// Bytes as text, or as `\xNN` escapes with `--hex`.
pub fn text(bytes: &[u8], hex: bool) -> String {
    if hex {
        let mut out = String::with_capacity(bytes.len() * 4);
        for b in bytes {
            out.push_str(&format!("\\x{b:02x}"));
        }
        out
    } else {
        String::from_utf8_lossy(bytes).into_owned()
    }
}

/// A key line and a value line (only the value with `--print-value-only`).
fn kv(out: &mut String, kv: &KeyValue, value_only: bool, hex: bool) {
    if !value_only {
        out.push_str(&text(&kv.key, hex));
        out.push('\n');
    }
    out.push_str(&text(&kv.value, hex));
    out.push('\n');
}

/// `put`: OK, then the previous key and value with `--prev-kv`.
pub fn put(resp: &PutResponse, hex: bool) -> String {
    let mut out = "OK\n".to_string();
    if let Some(prev) = &resp.prev_kv {
        kv(&mut out, prev, false, hex);
    }
    out
}

/// `get`: each key and value.
pub fn range(resp: &RangeResponse, value_only: bool, hex: bool) -> String {
    let mut out = String::new();
    for each in &resp.kvs {
        kv(&mut out, each, value_only, hex);
    }
    out
}

/// `watch`: each event's type, then its previous key and value (with `--prev-kv`), then
/// its key and value.
pub fn watch(view: &super::WatchView, hex: bool) -> String {
    let mut out = String::new();
    for event in view.events() {
        out.push_str(&super::event_type(event));
        out.push('\n');
        if let Some(prev) = &event.prev_kv {
            kv(&mut out, prev, false, hex);
        }
        kv(&mut out, &event.kv.clone().unwrap_or_default(), false, hex);
    }
    out
}

/// `del`: the count, then the previous keys and values with `--prev-kv`.
pub fn del(resp: &DeleteRangeResponse, hex: bool) -> String {
    let mut out = format!("{}\n", resp.deleted);
    for prev in &resp.prev_kvs {
        kv(&mut out, prev, false, hex);
    }
    out
}

/// etcdctl's simple lines for an Auth command's answer.
pub fn auth(answer: &super::AuthAnswer) -> String {
    use super::AuthAnswer::*;
    match answer {
        UserAdd(name, _) => format!("User {name} created\n"),
        UserDelete(name, _) => format!("User {name} deleted\n"),
        UserGet(name, r) => {
            let roles: String = r.roles.iter().map(|role| format!(" {role}")).collect();
            format!("User: {name}\nRoles:{roles}\n")
        }
        UserList(r) => r.users.iter().map(|u| format!("{u}\n")).collect(),
        UserPasswd(_) => "Password updated\n".into(),
        UserGrantRole(user, role, _) => format!("Role {role} is granted to user {user}\n"),
        UserRevokeRole(user, role, _) => format!("Role {role} is revoked from user {user}\n"),
        RoleAdd(name, _) => format!("Role {name} created\n"),
        RoleDelete(name, _) => format!("Role {name} deleted\n"),
        RoleGet(name, r) => role_get(name, &r.perm),
        RoleList(r) => r.roles.iter().map(|role| format!("{role}\n")).collect(),
        RoleGrantPermission(name, _) => format!("Role {name} updated\n"),
        RoleRevokePermission(role, key, end, _) => match end.as_str() {
            "" => format!("Permission of key {key} is revoked from role {role}\n"),
            "\0" => {
                format!("Permission of range [{key}, <open ended> is revoked from role {role}\n")
            }
            end => format!("Permission of range [{key}, {end}) is revoked from role {role}\n"),
        },
    }
}

/// `role get`: the keys and ranges a role may read, then those it may write.
fn role_get(name: &str, perms: &[raftkv_proto::authpb::Permission]) -> String {
    use raftkv_proto::authpb::permission::Type;
    let mut out = format!("Role {name}\n");
    for (title, kinds) in [
        ("KV Read:", [Type::Read, Type::Readwrite]),
        ("KV Write:", [Type::Write, Type::Readwrite]),
    ] {
        out.push_str(title);
        out.push('\n');
        for perm in perms
            .iter()
            .filter(|p| kinds.iter().any(|k| *k as i32 == p.perm_type))
        {
            out.push_str(&permission(perm));
        }
    }
    out
}

/// One permission line of `role get`: a key, or a range (open ended with range end `\0`),
/// marked as a prefix when its range end is the key's prefix end.
fn permission(perm: &raftkv_proto::authpb::Permission) -> String {
    let key = String::from_utf8_lossy(&perm.key);
    if perm.range_end.is_empty() {
        return format!("\t{key}\n");
    }
    let end = String::from_utf8_lossy(&perm.range_end);
    let mut line = if perm.range_end.as_ref() == b"\0" {
        format!("\t[{key}, <open ended>")
    } else {
        format!("\t[{key}, {end})")
    };
    if crate::kv::prefix_end(&perm.key) == perm.range_end.as_ref() {
        line.push_str(&format!(" (prefix {key})"));
    }
    line.push('\n');
    line
}
