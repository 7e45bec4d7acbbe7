use bytes::Bytes;
use raftkv_proto::authpb::{Permission, UserAddOptions, permission};
use raftkv_proto::etcdserverpb::{
    AuthDisableRequest, AuthEnableRequest, AuthRoleAddRequest, AuthRoleDeleteRequest,
    AuthRoleGrantPermissionRequest, AuthRoleRevokePermissionRequest, AuthUserDeleteRequest,
    AuthUserGrantRoleRequest, AuthUserRevokeRoleRequest, PutRequest,
};
use raftkv_proto::raftkvpb::{
    AuthCommand, AuthUserAdd, AuthUserChangePassword, Command, auth_command, command,
    command_response,
};

use super::*;
use crate::mvcc::{AppliedState, MvccConfig, MvccStore};

fn apply(store: &MvccStore, op: auth_command::Op) -> Result<(), MvccError> {
    let cmd = Command {
        op: Some(command::Op::Auth(AuthCommand { op: Some(op) })),
        ..Default::default()
    };
    store.apply(&cmd, &AppliedState::default()).map(|_| ())
}

fn user_add(name: &str, hash: &str) -> auth_command::Op {
    auth_command::Op::UserAdd(AuthUserAdd {
        name: name.into(),
        hashed_password: Bytes::copy_from_slice(hash.as_bytes()),
        options: None,
    })
}

fn grant_role(user: &str, role: &str) -> auth_command::Op {
    auth_command::Op::UserGrantRole(AuthUserGrantRoleRequest {
        user: user.into(),
        role: role.into(),
    })
}

fn role_add(name: &str) -> auth_command::Op {
    auth_command::Op::RoleAdd(AuthRoleAddRequest { name: name.into() })
}

fn perm(role: &str, kind: permission::Type, key: &str, end: &str) -> auth_command::Op {
    auth_command::Op::RoleGrantPermission(AuthRoleGrantPermissionRequest {
        name: role.into(),
        perm: Some(Permission {
            perm_type: kind as i32,
            key: Bytes::copy_from_slice(key.as_bytes()),
            range_end: Bytes::copy_from_slice(end.as_bytes()),
        }),
    })
}

fn store(dir: &std::path::Path) -> MvccStore {
    MvccStore::open(dir, &MvccConfig::default()).unwrap()
}

/// The refusals and revision bumps of etcd 3.4's auth store, in its order.
#[test]
fn etcd_rules_and_auth_revision() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    assert_eq!(s.auth().revision, 1, "a new store is at auth revision 1");
    let err = |op| apply(&s, op).unwrap_err().to_string();
    assert_eq!(err(user_add("", "h")), "etcdserver: user name is empty");
    apply(&s, user_add("alice", "h1")).unwrap();
    assert_eq!(
        err(user_add("alice", "h")),
        "etcdserver: user name already exists"
    );
    assert_eq!(err(role_add("")), "etcdserver: role name is empty");
    apply(&s, role_add("r")).unwrap();
    assert_eq!(err(role_add("r")), "etcdserver: role name already exists");
    assert_eq!(
        err(grant_role("bob", "r")),
        "etcdserver: user name not found"
    );
    assert_eq!(
        err(grant_role("alice", "x")),
        "etcdserver: role name not found"
    );
    apply(&s, grant_role("alice", "r")).unwrap();
    let rev = s.auth().revision;
    apply(&s, grant_role("alice", "r")).unwrap();
    assert_eq!(
        s.auth().revision,
        rev,
        "granting a held role changes nothing"
    );
    assert_eq!(
        err(auth_command::Op::UserRevokeRole(
            AuthUserRevokeRoleRequest {
                name: "alice".into(),
                role: "x".into(),
            }
        )),
        "etcdserver: role is not granted to the user"
    );
    // The root role need not exist to be granted.
    assert_eq!(
        err(auth_command::Op::Enable(AuthEnableRequest {})),
        "etcdserver: root user does not exist"
    );
    apply(&s, user_add("root", "h")).unwrap();
    assert_eq!(
        err(auth_command::Op::Enable(AuthEnableRequest {})),
        "etcdserver: root user does not have root role"
    );
    apply(&s, grant_role("root", "root")).unwrap();
    let rev = s.auth().revision;
    apply(&s, auth_command::Op::Enable(AuthEnableRequest {})).unwrap();
    assert!(s.auth().enabled);
    assert_eq!(
        s.auth().revision,
        rev,
        "etcd's AuthEnable keeps the auth revision"
    );
    assert_eq!(
        err(auth_command::Op::UserDelete(AuthUserDeleteRequest {
            name: "root".into()
        })),
        "etcdserver: invalid auth management"
    );
    assert_eq!(
        err(auth_command::Op::UserRevokeRole(
            AuthUserRevokeRoleRequest {
                name: "root".into(),
                role: "root".into(),
            }
        )),
        "etcdserver: invalid auth management"
    );
    apply(&s, auth_command::Op::Disable(AuthDisableRequest {})).unwrap();
    assert_eq!(s.auth().revision, rev + 1);
    apply(&s, auth_command::Op::Disable(AuthDisableRequest {})).unwrap();
    assert_eq!(
        s.auth().revision,
        rev + 1,
        "disabling twice changes nothing"
    );
    // Role delete takes the role from every user.
    apply(
        &s,
        auth_command::Op::RoleDelete(AuthRoleDeleteRequest { role: "r".into() }),
    )
    .unwrap();
    assert!(s.auth().users["alice"].roles.is_empty());
    assert_eq!(
        err(auth_command::Op::UserChangePassword(
            AuthUserChangePassword {
                name: "nobody".into(),
                hashed_password: Bytes::from_static(b"h"),
            }
        )),
        "etcdserver: user name not found"
    );
    assert_eq!(s.revision(), 1, "auth changes leave the key-value revision");
}

#[test]
fn permissions_kept_sorted_updated_and_revoked() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    apply(&s, role_add("r")).unwrap();
    use permission::Type::*;
    apply(&s, perm("r", Read, "b", "")).unwrap();
    apply(&s, perm("r", Write, "a", "c")).unwrap();
    apply(&s, perm("r", Readwrite, "b", "")).unwrap(); // updates the type
    let perms = &s.auth().roles["r"].key_permission;
    let got: Vec<_> = perms
        .iter()
        .map(|p| (p.perm_type, p.key.clone(), p.range_end.clone()))
        .collect();
    assert_eq!(
        got,
        [
            (
                Write as i32,
                Bytes::from_static(b"a"),
                Bytes::from_static(b"c")
            ),
            (Readwrite as i32, Bytes::from_static(b"b"), Bytes::new()),
        ]
    );
    let revoke = |key: &str, end: &str| {
        auth_command::Op::RoleRevokePermission(AuthRoleRevokePermissionRequest {
            role: "r".into(),
            key: Bytes::copy_from_slice(key.as_bytes()),
            range_end: Bytes::copy_from_slice(end.as_bytes()),
        })
    };
    assert_eq!(
        apply(&s, revoke("a", "")).unwrap_err().to_string(),
        "etcdserver: permission is not granted to the role"
    );
    apply(&s, revoke("a", "c")).unwrap();
    assert_eq!(s.auth().roles["r"].key_permission.len(), 1);
    assert_eq!(
        apply(&s, perm("nope", Read, "a", ""))
            .unwrap_err()
            .to_string(),
        "etcdserver: role name not found"
    );
}

#[test]
fn malformed_and_oversized_commands_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let before = s.auth();
    let long = "x".repeat(MAX_NAME_BYTES + 1);
    assert!(matches!(
        apply(&s, user_add(&long, "h")),
        Err(MvccError::AuthLimit(_))
    ));
    assert!(matches!(
        apply(&s, user_add("a", &"h".repeat(MAX_HASH_BYTES + 1))),
        Err(MvccError::BadAuth)
    ));
    let mut bad = perm("r", permission::Type::Read, "a", "");
    if let auth_command::Op::RoleGrantPermission(r) = &mut bad {
        r.perm.as_mut().unwrap().perm_type = 9;
    }
    assert!(matches!(apply(&s, bad), Err(MvccError::BadAuth)));
    let empty = Command {
        op: Some(command::Op::Auth(AuthCommand { op: None })),
        ..Default::default()
    };
    assert!(s.apply(&empty, &AppliedState::default()).is_err());
    assert_eq!(*s.auth(), *before);
    // Records that do not decode, or break the bounds, are refused as corrupt.
    assert!(AuthTable::decode(&[0xff, 0xff]).is_err());
    let table = AuthTable {
        revision: 0,
        ..Default::default()
    };
    assert!(AuthTable::decode(&table.encode()).is_err());
}

#[test]
fn auth_table_survives_restart_snapshot_and_restore() {
    let dir = tempfile::tempdir().unwrap();
    let snap = dir.path().join("snap");
    let want = {
        let s = store(&dir.path().join("a"));
        apply(&s, user_add("root", "hash-root")).unwrap();
        apply(
            &s,
            auth_command::Op::UserAdd(AuthUserAdd {
                name: "np".into(),
                hashed_password: Bytes::new(),
                options: Some(UserAddOptions { no_password: true }),
            }),
        )
        .unwrap();
        apply(&s, role_add("reader")).unwrap();
        apply(&s, perm("reader", permission::Type::Read, "k", "l")).unwrap();
        apply(&s, grant_role("root", "root")).unwrap();
        apply(&s, grant_role("np", "reader")).unwrap();
        apply(&s, auth_command::Op::Enable(AuthEnableRequest {})).unwrap();
        s.flush().unwrap();
        (*s.auth()).clone()
    };
    let s = store(&dir.path().join("a"));
    assert_eq!(*s.auth(), want, "reopened");
    assert!(want.enabled && want.users["np"].options.unwrap().no_password);
    crate::snapshot::build(&s, &snap).unwrap();
    let other = store(&dir.path().join("b"));
    apply(&other, user_add("gone", "h")).unwrap(); // replaced by the snapshot's table
    let info = crate::snapshot::restore(&snap, &other).unwrap();
    assert_eq!(info.meta.auth, want);
    assert_eq!(*other.auth(), want);
    drop(other);
    let other = store(&dir.path().join("b"));
    assert_eq!(*other.auth(), want, "restored table is stored");
    // A write after restore still sees the key-value store working.
    let put = Command {
        op: Some(command::Op::Put(PutRequest {
            key: Bytes::from_static(b"k"),
            ..Default::default()
        })),
        ..Default::default()
    };
    other.apply(&put, &AppliedState::default()).unwrap();
}

/// Maintenance Hash covers the auth table: members whose tables differ give different hashes
/// at the same revision, equal tables equal ones.
#[test]
fn hash_covers_the_auth_table() {
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (one, two) = (store(d1.path()), store(d2.path()));
    assert_eq!(one.hash_all().unwrap(), two.hash_all().unwrap());
    apply(&one, role_add("r")).unwrap();
    assert_ne!(one.hash_all().unwrap(), two.hash_all().unwrap());
    apply(&two, role_add("r")).unwrap();
    assert_eq!(one.hash_all().unwrap(), two.hash_all().unwrap());
}

fn caller(user: &str, auth_revision: u64) -> raftkv_proto::raftkvpb::Caller {
    raftkv_proto::raftkvpb::Caller {
        user: user.into(),
        auth_revision,
    }
}

/// etcd's interval rules: a single key needs an interval holding it; a range needs the
/// intervals meeting it to cover it without a gap; "\0" as a range end means no end.
#[test]
fn permissions_cover_keys_and_ranges_as_etcds_interval_tree() {
    use super::permit::Access::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    for op in [
        user_add("root", "h"),
        role_add("root"),
        grant_role("root", "root"),
        user_add("u", "h"),
        role_add("a"),
        role_add("b"),
        perm("a", permission::Type::Read, "k", ""),
        perm("a", permission::Type::Readwrite, "p/", "p0"),
        perm("b", permission::Type::Read, "r/a", "r/m"),
        perm("b", permission::Type::Read, "r/m", "r/z"),
        perm("b", permission::Type::Write, "w/", "\0"),
        grant_role("u", "a"),
        grant_role("u", "b"),
        auth_command::Op::Enable(AuthEnableRequest {}),
    ] {
        apply(&s, op).unwrap();
    }
    let t = s.auth();
    let rev = t.revision;
    let u = caller("u", rev);
    let ok = |key: &str, end: &str, access| t.check_op(&u, key.as_bytes(), end.as_bytes(), access);
    let denied = |r: Result<(), MvccError>| matches!(r, Err(MvccError::PermissionDenied));
    assert!(ok("k", "", Read).is_ok());
    assert!(denied(ok("k", "", Write)));
    assert!(
        denied(ok("k0", "", Read)),
        "a single-key permission is that key only"
    );
    assert!(ok("p/x", "", Write).is_ok());
    assert!(ok("p/", "p0", Read).is_ok(), "the whole prefix");
    assert!(denied(ok("p", "p0", Read)), "starts before the permission");
    assert!(
        ok("r/a", "r/z", Read).is_ok(),
        "two adjacent intervals join"
    );
    assert!(denied(ok("r/a", "r/zz", Read)), "past the end");
    assert!(ok("w/x", "", Write).is_ok());
    assert!(
        ok("w/", "\0", Write).is_ok(),
        "from-key needs a from-key permission"
    );
    assert!(denied(ok("a", "", Write)) && ok("zzz", "\u{7f}\u{7f}", Write).is_ok());
    assert!(denied(ok("", "\0", Read)), "every key");
    // Root may do anything; others' refusals come in etcd's order.
    assert!(t.check_op(&caller("root", rev), b"", b"\0", Write).is_ok());
    assert!(matches!(
        t.check_op(&caller("", 0), b"k", b"", Read),
        Err(MvccError::UserEmpty)
    ));
    assert!(matches!(
        t.check_op(&caller("u", rev - 1), b"k", b"", Read),
        Err(MvccError::AuthOldRevision)
    ));
    assert!(denied(t.check_op(&caller("ghost", rev), b"k", b"", Read)));
    assert!(t.check_admin(&caller("root", 0)).is_ok());
    assert!(denied(t.check_admin(&u)));
    assert!(matches!(
        t.check_admin(&caller("", 0)),
        Err(MvccError::UserEmpty)
    ));
    assert!(matches!(
        t.check_admin(&caller("ghost", rev)),
        Err(MvccError::UserNotFound)
    ));
}

/// Entries carry their caller; every member checks it as it applies them, so a refused
/// write changes nothing, and the simple tokens follow the entries that make and end them.
#[test]
fn writes_are_checked_as_they_apply_and_tokens_follow_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    for op in [
        user_add("root", "h"),
        role_add("root"),
        grant_role("root", "root"),
        user_add("u", "h"),
        role_add("a"),
        perm("a", permission::Type::Readwrite, "mine/", "mine0"),
        grant_role("u", "a"),
    ] {
        apply(&s, op).unwrap();
    }
    let put = |who: Option<raftkv_proto::raftkvpb::Caller>, key: &str| {
        let cmd = Command {
            op: Some(command::Op::Put(PutRequest {
                key: Bytes::copy_from_slice(key.as_bytes()),
                ..Default::default()
            })),
            caller: who,
        };
        s.apply(&cmd, &AppliedState::default()).map(|_| ())
    };
    // Auth off: anyone, anything.
    put(Some(caller("", 0)), "other").unwrap();
    let enable = Command {
        op: Some(command::Op::Auth(AuthCommand {
            op: Some(auth_command::Op::Enable(AuthEnableRequest {})),
        })),
        caller: Some(caller("", 0)),
    };
    s.apply(&enable, &AppliedState::default()).unwrap();
    let rev = s.auth().revision;
    let before = s.revision();
    assert!(matches!(
        put(Some(caller("", 0)), "mine/a"),
        Err(MvccError::UserEmpty)
    ));
    assert!(matches!(
        put(Some(caller("u", rev)), "other"),
        Err(MvccError::PermissionDenied)
    ));
    assert_eq!(s.revision(), before, "refused writes change nothing");
    put(Some(caller("u", rev)), "mine/a").unwrap();
    // What a member proposes itself carries no caller and is not checked.
    put(None, "other").unwrap();
    // Auth changes need root once auth is on.
    let role = |who| {
        let cmd = Command {
            op: Some(command::Op::Auth(AuthCommand {
                op: Some(role_add("new")),
            })),
            caller: Some(who),
        };
        s.apply(&cmd, &AppliedState::default()).map(|_| ())
    };
    assert!(matches!(
        role(caller("u", rev)),
        Err(MvccError::PermissionDenied)
    ));
    role(caller("root", rev)).unwrap();
    // The change moved the auth revision: a request made before it is refused as stale.
    assert!(matches!(
        put(Some(caller("u", rev)), "mine/b"),
        Err(MvccError::AuthOldRevision)
    ));
    // Authenticate makes "<prefix>.<index>" a token on this member; deleting the user ends it.
    let authenticate = Command {
        op: Some(command::Op::Auth(AuthCommand {
            op: Some(auth_command::Op::Authenticate(
                raftkv_proto::raftkvpb::AuthAuthenticate {
                    name: "u".into(),
                    token_prefix: "abcdefghijklmnop".into(),
                },
            )),
        })),
        caller: Some(caller("", 0)),
    };
    let at = AppliedState {
        index: 42,
        ..Default::default()
    };
    s.apply(&authenticate, &at).unwrap();
    assert_eq!(s.tokens().user("abcdefghijklmnop.42").as_deref(), Some("u"));
    let delete = Command {
        op: Some(command::Op::Auth(AuthCommand {
            op: Some(auth_command::Op::UserDelete(AuthUserDeleteRequest {
                name: "u".into(),
            })),
        })),
        caller: Some(caller("root", s.auth().revision)),
    };
    s.apply(&delete, &AppliedState::default()).unwrap();
    assert_eq!(s.tokens().user("abcdefghijklmnop.42"), None);
    // Authenticate of an unknown user, or a malformed prefix, makes nothing.
    assert!(s.apply(&authenticate, &at).is_err());
    assert!(s.tokens().is_empty());
    // With JWT the entry carries no prefix: it applies and makes no simple token.
    let jwt = Command {
        op: Some(command::Op::Auth(AuthCommand {
            op: Some(auth_command::Op::Authenticate(
                raftkv_proto::raftkvpb::AuthAuthenticate {
                    name: "root".into(),
                    token_prefix: String::new(),
                },
            )),
        })),
        caller: Some(caller("", 0)),
    };
    let answer = s.apply(&jwt, &at).unwrap();
    let Some(command_response::Op::Auth(r)) = answer.op else {
        panic!("{answer:?}")
    };
    assert_eq!(r.token, "");
    assert!(s.tokens().is_empty());
}
