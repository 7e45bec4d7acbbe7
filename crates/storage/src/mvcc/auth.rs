//! etcd's auth store as the log leaves it on every member: users (name, bcrypt hash, roles,
//! options), roles with their key permissions, the enabled flag and etcd's auth revision.
//!
//! Every change is an [`AuthCommand`] applied in log order with etcd 3.4's rules
//! (`auth/store.go`): the same refusals, in the same order, and the auth revision bumped by
//! exactly the changes that bump etcd's. Passwords arrive already hashed (the proposing
//! member hashes them), so neither the log nor this table ever holds one in plaintext.
//!
//! Layout: the whole table is one record, `0x02auth` → an encoded [`AuthState`], written in
//! one sled batch with the applied point, so a crash never separates a change from the log
//! entry that made it. Auth changes are rare and the table is bounded ([`MAX_STATE_BYTES`]
//! and the per-field bounds below), so rewriting it per change costs little and keeps the
//! record, the snapshot section and the in-memory copy the same bytes.

use std::collections::BTreeMap;
use std::sync::Arc;

use prost::Message;
use raftkv_proto::authpb::{Permission, Role, User, UserAddOptions, permission};
use raftkv_proto::raftkvpb::{AuthCommand, AuthState, auth_command};

use crate::error::MvccError;

/// The record key of the auth table.
pub(crate) const META_AUTH: &[u8] = b"\x02auth";

/// etcd's name of the superuser and of its role.
pub const ROOT: &str = "root";
/// Longest user or role name, in bytes.
pub const MAX_NAME_BYTES: usize = 512;
/// Longest permission key or range end, in bytes.
pub const MAX_PERM_KEY_BYTES: usize = 4096;
/// Longest password hash accepted in a command (a bcrypt hash is 60 bytes).
pub const MAX_HASH_BYTES: usize = 128;
/// Most users.
pub const MAX_USERS: usize = 10_000;
/// Most roles.
pub const MAX_ROLES: usize = 10_000;
/// Most roles granted to one user.
pub const MAX_USER_ROLES: usize = 1_000;
/// Most permissions of one role.
pub const MAX_ROLE_PERMISSIONS: usize = 1_000;
/// Largest encoded auth table: a change that would grow it past this is refused.
pub const MAX_STATE_BYTES: usize = 16 << 20;

/// The auth table: what etcd's auth bucket holds.
#[derive(Debug, Clone, PartialEq)]
pub struct AuthTable {
    /// Whether authentication is enabled.
    pub enabled: bool,
    /// etcd's auth revision: 1 for a new store, +1 per change.
    pub revision: u64,
    /// Users by name.
    pub users: BTreeMap<String, User>,
    /// Roles by name.
    pub roles: BTreeMap<String, Role>,
}

impl Default for AuthTable {
    fn default() -> Self {
        Self {
            enabled: false,
            revision: 1,
            users: BTreeMap::new(),
            roles: BTreeMap::new(),
        }
    }
}

/// A shared, immutable view of the table (a change swaps in a new one).
pub type SharedAuth = Arc<AuthTable>;

impl AuthTable {
    /// The table as stored and carried in snapshots.
    pub fn to_state(&self) -> AuthState {
        AuthState {
            enabled: self.enabled,
            revision: self.revision,
            users: self.users.values().cloned().collect(),
            roles: self.roles.values().cloned().collect(),
        }
    }

    /// The encoded record.
    pub fn encode(&self) -> Vec<u8> {
        self.to_state().encode_to_vec()
    }

    /// Decodes a stored or snapshotted record, checking every bound and the order.
    pub fn decode(raw: &[u8]) -> Result<Self, MvccError> {
        let bad = |what: &str| MvccError::Corrupt(format!("auth record: {what}"));
        if raw.len() > MAX_STATE_BYTES {
            return Err(bad("too large"));
        }
        let state: AuthState = raftkv_proto::codec::decode_bounded(raw)
            .map_err(|e| MvccError::Corrupt(format!("auth record: {e}")))?;
        if state.revision == 0 || state.users.len() > MAX_USERS || state.roles.len() > MAX_ROLES {
            return Err(bad("out of range"));
        }
        let mut table = AuthTable {
            enabled: state.enabled,
            revision: state.revision,
            ..Default::default()
        };
        for user in state.users {
            let name = String::from_utf8(user.name.to_vec()).map_err(|_| bad("user name"))?;
            let roles_ok = user.roles.len() <= MAX_USER_ROLES
                && user.roles.windows(2).all(|w| w[0] < w[1])
                && user.roles.iter().all(|r| name_ok(r));
            if !name_ok(&name) || !roles_ok || user.password.len() > MAX_HASH_BYTES {
                return Err(bad("user"));
            }
            if table
                .users
                .last_key_value()
                .is_some_and(|(k, _)| *k >= name)
            {
                return Err(bad("users out of order"));
            }
            table.users.insert(name, user);
        }
        for role in state.roles {
            let name = String::from_utf8(role.name.to_vec()).map_err(|_| bad("role name"))?;
            let perms_ok = role.key_permission.len() <= MAX_ROLE_PERMISSIONS
                && role.key_permission.iter().all(permission_ok);
            if !name_ok(&name) || !perms_ok {
                return Err(bad("role"));
            }
            if table
                .roles
                .last_key_value()
                .is_some_and(|(k, _)| *k >= name)
            {
                return Err(bad("roles out of order"));
            }
            table.roles.insert(name, role);
        }
        Ok(table)
    }

    /// Reads the table of `tree` (a new one if none was stored).
    pub(crate) fn load(tree: &sled::Tree) -> Result<Self, MvccError> {
        match tree.get(META_AUTH)? {
            Some(raw) => Self::decode(&raw),
            None => Ok(Self::default()),
        }
    }

    /// etcd's `hasRootRole`.
    pub fn has_root_role(user: &User) -> bool {
        user.roles.iter().any(|r| r == ROOT)
    }

    /// Applies `cmd`: the changed table, `None` for an accepted request that changes
    /// nothing (etcd answers it without touching its bucket), or etcd's refusal.
    pub fn apply(&self, cmd: &AuthCommand) -> Result<Option<AuthTable>, MvccError> {
        check_command(cmd)?;
        let mut next = self.clone();
        let changed = match cmd.op.as_ref().ok_or(MvccError::BadAuth)? {
            auth_command::Op::Enable(_) => next.enable()?,
            auth_command::Op::Disable(_) => next.disable(),
            auth_command::Op::UserAdd(r) => {
                next.user_add(&r.name, &r.hashed_password, r.options)?
            }
            auth_command::Op::UserDelete(r) => next.user_delete(&r.name)?,
            auth_command::Op::UserChangePassword(r) => {
                next.user_mut(&r.name)?.password = r.hashed_password.clone();
                true
            }
            auth_command::Op::UserGrantRole(r) => next.user_grant_role(&r.user, &r.role)?,
            auth_command::Op::UserRevokeRole(r) => next.user_revoke_role(&r.name, &r.role)?,
            auth_command::Op::RoleAdd(r) => next.role_add(&r.name)?,
            auth_command::Op::RoleDelete(r) => next.role_delete(&r.role)?,
            auth_command::Op::RoleGrantPermission(r) => {
                let perm = r.perm.as_ref().ok_or(MvccError::BadAuth)?;
                next.role_grant_permission(&r.name, perm)?
            }
            auth_command::Op::RoleRevokePermission(r) => {
                next.role_revoke_permission(&r.role, &r.key, &r.range_end)?
            }
            auth_command::Op::Authenticate(r) => {
                self.authenticate(&r.name)?;
                false
            }
        };
        if !changed {
            return Ok(None);
        }
        // AuthEnable is the one change etcd makes without a new auth revision.
        if !matches!(cmd.op, Some(auth_command::Op::Enable(_))) {
            next.revision += 1;
        }
        if next.to_state().encoded_len() > MAX_STATE_BYTES {
            return Err(MvccError::AuthLimit("auth store size"));
        }
        Ok(Some(next))
    }

    /// etcd's `authStore.Authenticate` as applied (the password was checked by the member
    /// that proposed it): auth on, the user there, and not a user without a password.
    fn authenticate(&self, name: &str) -> Result<(), MvccError> {
        if !self.enabled {
            return Err(MvccError::AuthNotEnabled);
        }
        let user = self.users.get(name).ok_or(MvccError::AuthFailed)?;
        if user.options.is_some_and(|o| o.no_password) {
            return Err(MvccError::AuthFailed);
        }
        Ok(())
    }

    fn enable(&mut self) -> Result<bool, MvccError> {
        if self.enabled {
            return Ok(false);
        }
        let root = self.users.get(ROOT).ok_or(MvccError::RootUserNotExist)?;
        if !Self::has_root_role(root) {
            return Err(MvccError::RootRoleNotExist);
        }
        self.enabled = true;
        Ok(true)
    }

    fn disable(&mut self) -> bool {
        std::mem::replace(&mut self.enabled, false)
    }

    fn user_mut(&mut self, name: &str) -> Result<&mut User, MvccError> {
        self.users.get_mut(name).ok_or(MvccError::UserNotFound)
    }

    fn user_add(
        &mut self,
        name: &str,
        hash: &bytes::Bytes,
        options: Option<UserAddOptions>,
    ) -> Result<bool, MvccError> {
        if name.is_empty() {
            return Err(MvccError::UserEmpty);
        }
        if self.users.contains_key(name) {
            return Err(MvccError::UserAlreadyExist);
        }
        if self.users.len() >= MAX_USERS {
            return Err(MvccError::AuthLimit("number of users"));
        }
        let user = User {
            name: bytes::Bytes::copy_from_slice(name.as_bytes()),
            password: hash.clone(),
            roles: Vec::new(),
            options: Some(options.unwrap_or_default()),
        };
        self.users.insert(name.to_string(), user);
        Ok(true)
    }

    fn user_delete(&mut self, name: &str) -> Result<bool, MvccError> {
        if self.enabled && name == ROOT {
            return Err(MvccError::InvalidAuthMgmt);
        }
        self.users.remove(name).ok_or(MvccError::UserNotFound)?;
        Ok(true)
    }

    fn user_grant_role(&mut self, name: &str, role: &str) -> Result<bool, MvccError> {
        if !self.users.contains_key(name) {
            return Err(MvccError::UserNotFound);
        }
        if role != ROOT && !self.roles.contains_key(role) {
            return Err(MvccError::RoleNotFound);
        }
        let user = self.user_mut(name)?;
        let Err(at) = user.roles.binary_search_by(|r| r.as_str().cmp(role)) else {
            return Ok(false); // granted already: etcd answers OK and changes nothing
        };
        if user.roles.len() >= MAX_USER_ROLES {
            return Err(MvccError::AuthLimit("roles of a user"));
        }
        user.roles.insert(at, role.to_string());
        Ok(true)
    }

    fn user_revoke_role(&mut self, name: &str, role: &str) -> Result<bool, MvccError> {
        if self.enabled && name == ROOT && role == ROOT {
            return Err(MvccError::InvalidAuthMgmt);
        }
        let user = self.user_mut(name)?;
        let before = user.roles.len();
        user.roles.retain(|r| r != role);
        if user.roles.len() == before {
            return Err(MvccError::RoleNotGranted);
        }
        Ok(true)
    }

    fn role_add(&mut self, name: &str) -> Result<bool, MvccError> {
        if name.is_empty() {
            return Err(MvccError::RoleEmpty);
        }
        if self.roles.contains_key(name) {
            return Err(MvccError::RoleAlreadyExist);
        }
        if self.roles.len() >= MAX_ROLES {
            return Err(MvccError::AuthLimit("number of roles"));
        }
        let role = Role {
            name: bytes::Bytes::copy_from_slice(name.as_bytes()),
            key_permission: Vec::new(),
        };
        self.roles.insert(name.to_string(), role);
        Ok(true)
    }

    fn role_delete(&mut self, name: &str) -> Result<bool, MvccError> {
        if self.enabled && name == ROOT {
            return Err(MvccError::InvalidAuthMgmt);
        }
        self.roles.remove(name).ok_or(MvccError::RoleNotFound)?;
        for user in self.users.values_mut() {
            user.roles.retain(|r| r != name);
        }
        Ok(true)
    }

    fn role_grant_permission(&mut self, name: &str, perm: &Permission) -> Result<bool, MvccError> {
        let role = self.roles.get_mut(name).ok_or(MvccError::RoleNotFound)?;
        let perms = &mut role.key_permission;
        // etcd: the first permission whose key is not below the new one's; the same key and
        // range end update its type, anything else is inserted (kept sorted by key only).
        let at = perms.partition_point(|p| p.key < perm.key);
        match perms.get_mut(at) {
            Some(p) if p.key == perm.key && p.range_end == perm.range_end => {
                p.perm_type = perm.perm_type;
            }
            _ => {
                if perms.len() >= MAX_ROLE_PERMISSIONS {
                    return Err(MvccError::AuthLimit("permissions of a role"));
                }
                let at = perms.partition_point(|p| p.key <= perm.key);
                perms.insert(at, perm.clone());
            }
        }
        Ok(true)
    }

    fn role_revoke_permission(
        &mut self,
        name: &str,
        key: &[u8],
        range_end: &[u8],
    ) -> Result<bool, MvccError> {
        let role = self.roles.get_mut(name).ok_or(MvccError::RoleNotFound)?;
        let before = role.key_permission.len();
        role.key_permission
            .retain(|p| p.key.as_ref() != key || p.range_end.as_ref() != range_end);
        if role.key_permission.len() == before {
            return Err(MvccError::PermissionNotGranted);
        }
        Ok(true)
    }
}

fn name_ok(name: &str) -> bool {
    name.len() <= MAX_NAME_BYTES
}

fn permission_ok(p: &Permission) -> bool {
    permission::Type::try_from(p.perm_type).is_ok()
        && p.key.len() <= MAX_PERM_KEY_BYTES
        && p.range_end.len() <= MAX_PERM_KEY_BYTES
}

/// An auth command as it may enter the log (and as every member checks it again before
/// applying): an operation present, names, keys and hashes within raftkv's bounds, a known
/// permission type. etcd's own refusals (empty names and the like) are left to apply.
pub fn check_command(cmd: &AuthCommand) -> Result<(), MvccError> {
    use auth_command::Op;
    let names: Vec<&str> = match cmd.op.as_ref().ok_or(MvccError::BadAuth)? {
        Op::Enable(_) | Op::Disable(_) => vec![],
        Op::UserAdd(r) => {
            if r.hashed_password.len() > MAX_HASH_BYTES {
                return Err(MvccError::BadAuth);
            }
            vec![&r.name]
        }
        Op::UserChangePassword(r) => {
            if r.hashed_password.len() > MAX_HASH_BYTES {
                return Err(MvccError::BadAuth);
            }
            vec![&r.name]
        }
        Op::UserDelete(r) => vec![&r.name],
        Op::UserGrantRole(r) => vec![&r.user, &r.role],
        Op::UserRevokeRole(r) => vec![&r.name, &r.role],
        Op::RoleAdd(r) => vec![&r.name],
        Op::RoleDelete(r) => vec![&r.role],
        Op::RoleGrantPermission(r) => {
            let perm = r.perm.as_ref().ok_or(MvccError::BadAuth)?;
            if permission::Type::try_from(perm.perm_type).is_err() {
                return Err(MvccError::BadAuth);
            }
            if !permission_ok(perm) {
                return Err(MvccError::AuthLimit("permission key length"));
            }
            vec![&r.name]
        }
        Op::RoleRevokePermission(r) => {
            if r.key.len() > MAX_PERM_KEY_BYTES || r.range_end.len() > MAX_PERM_KEY_BYTES {
                return Err(MvccError::AuthLimit("permission key length"));
            }
            vec![&r.role]
        }
        Op::Authenticate(r) => {
            // An empty prefix: the proposer's provider makes its own token (JWT), none here.
            let prefix_ok = r.token_prefix.len() <= tokens::MAX_PREFIX_BYTES
                && r.token_prefix.bytes().all(|b| b.is_ascii_alphanumeric());
            if !prefix_ok {
                return Err(MvccError::BadAuth);
            }
            vec![&r.name]
        }
    };
    if names.iter().all(|n| name_ok(n)) {
        Ok(())
    } else {
        Err(MvccError::AuthLimit("name length"))
    }
}

pub mod permit;
pub mod tokens;

#[cfg(test)]
mod tests;
