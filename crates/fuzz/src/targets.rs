//! The fuzz targets: each a function over arbitrary bytes, with seeds.

use std::cell::RefCell;
use std::path::PathBuf;

use bytes::Bytes;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, StreamAppendResult,
    TransferLeaderRequest, VoteRequest, VoteResponse,
};
use prost::{Message, Name};
use raftkv_proto::codec::decode_bounded;
use raftkv_proto::etcdserverpb::{
    AlarmRequest, CompactionRequest, Compare, DeleteRangeRequest, MemberAddRequest, PutRequest,
    RangeRequest, RequestOp, TxnRequest, request_op,
};
use raftkv_proto::raftkvpb::{ChangeMembersRequest, Command, CommandResponse, MemberInfo, command};
use raftkv_raft::admission;
use raftkv_raft::types::{Entry, LogId, Member, Request, SnapshotMeta, TypeConfig, Vote};
use raftkv_storage::mvcc::validate;
use raftkv_storage::{AppliedState, MvccConfig, MvccStore};

/// A fuzz target.
pub struct Target {
    /// Its name (`raftkv-fuzz run <name>`, `scripts/fuzz <name>`).
    pub name: &'static str,
    /// What it decodes.
    pub about: &'static str,
    /// Runs one input; panics on a bug.
    pub run: fn(&[u8]),
    /// Seed inputs.
    pub seeds: fn() -> Vec<Vec<u8>>,
}

/// Every target.
pub fn targets() -> &'static [Target] {
    &[
        Target {
            name: "grpc_message",
            about: "client and peer gRPC messages through raftkv-proto's bounded codec",
            run: grpc_message,
            seeds: grpc_message_seeds,
        },
        Target {
            name: "command_apply",
            about: "a log entry's command: decode, the checks, and apply to a store",
            run: command_apply,
            seeds: command_seeds,
        },
        Target {
            name: "auth_record",
            about: "the auth table's stored record (and snapshot section): decode, bounds, round trip",
            run: auth_record,
            seeds: auth_record_seeds,
        },
        Target {
            name: "history_group",
            about: "a history index group as a member reads it back from its store",
            run: history_group,
            seeds: history_group_seeds,
        },
        Target {
            name: "raft_message",
            about: "peer Raft messages and answers (bincode) and the admission checks",
            run: raft_message,
            seeds: raft_message_seeds,
        },
        Target {
            name: "wal_chunk",
            about: "a WAL segment file from disk: recovery, every entry read back, an append and a reopen",
            run: wal_chunk,
            seeds: wal_chunk_seeds,
        },
        Target {
            name: "value_segment",
            about: "a value segment file from disk: recovery from a recorded durable frame, a pointer read, an append and a reopen",
            run: value_segment,
            seeds: value_segment_seeds,
        },
        Target {
            name: "snapshot_file",
            about: "a snapshot file: full verification, then restore into a store",
            run: snapshot_file,
            seeds: snapshot_seeds,
        },
        Target {
            name: "etcd_snapshot",
            about: "an etcd snapshot file (bbolt): status as etcdctl reads it, then the import into a store",
            run: etcd_snapshot,
            seeds: etcd_snapshot_seeds,
        },
        Target {
            name: "codec_frame",
            about: "a unit-repetition codec frame",
            run: codec_frame,
            seeds: codec_seeds,
        },
        Target {
            name: "message_framing",
            about: "gRPC message framing through the serving budget, in any chunking",
            run: message_framing,
            seeds: framing_seeds,
        },
        Target {
            name: "gateway_json",
            about: "JSON gateway request bodies: the stream splitter in any chunking, then the decoders",
            run: gateway_json,
            seeds: gateway_json_seeds,
        },
        Target {
            name: "cert_common_name",
            about: "a certificate's DER, read for its subject common name (the user, the allowed CN) and its alternative names",
            run: cert_common_name,
            seeds: cert_common_name_seeds,
        },
        Target {
            name: "h2_authority",
            about: "client HTTP/2 byte streams through the :authority repair (frames, HPACK)",
            run: h2_authority,
            seeds: h2_authority_seeds,
        },
        Target {
            name: "jwt_token",
            about: "a JWT from a request header: taken apart, claims checked, verified (HS256, ES256)",
            run: jwt_token,
            seeds: jwt_token_seeds,
        },
        Target {
            name: "jwt_key",
            about: "a JWT key file: PEM, PKCS#1 / PKCS#8 / SEC1 / SPKI / certificate DER, into ring keys",
            run: jwt_key,
            seeds: jwt_key_seeds,
        },
    ]
}

/// The target called `name`.
pub fn find(name: &str) -> Option<&'static Target> {
    targets().iter().find(|t| t.name == name)
}

// ---- grpc_message -------------------------------------------------------------------------

/// Decodes `bytes` as `M` the way the gRPC codec does; what decodes must encode and decode
/// back to itself.
fn round_trip<M: Message + Name + Default + PartialEq + std::fmt::Debug>(bytes: &[u8]) {
    if let Ok(msg) = decode_bounded::<M>(bytes) {
        let again = decode_bounded::<M>(&msg.encode_to_vec())
            .unwrap_or_else(|e| panic!("{} re-encoded does not decode: {e}", M::NAME));
        assert_eq!(again, msg, "{} changed in a round trip", M::NAME);
    }
}

fn grpc_message(data: &[u8]) {
    let Some((&which, bytes)) = data.split_first() else {
        return;
    };
    match which % 26 {
        0 => round_trip::<RangeRequest>(bytes),
        1 => round_trip::<PutRequest>(bytes),
        2 => round_trip::<DeleteRangeRequest>(bytes),
        3 => round_trip::<TxnRequest>(bytes),
        4 => round_trip::<CompactionRequest>(bytes),
        5 => round_trip::<Command>(bytes),
        6 => round_trip::<CommandResponse>(bytes),
        7 => round_trip::<ChangeMembersRequest>(bytes),
        8 => round_trip::<MemberInfo>(bytes),
        9 => round_trip::<AlarmRequest>(bytes),
        10 => round_trip::<raftkv_proto::etcdserverpb::WatchRequest>(bytes),
        11 => round_trip::<raftkv_proto::etcdserverpb::WatchResponse>(bytes),
        12 => round_trip::<raftkv_proto::etcdserverpb::LeaseGrantRequest>(bytes),
        13 => round_trip::<raftkv_proto::etcdserverpb::LeaseKeepAliveRequest>(bytes),
        14 => round_trip::<raftkv_proto::etcdserverpb::LeaseTimeToLiveResponse>(bytes),
        15 => round_trip::<raftkv_proto::v3lockpb::LockRequest>(bytes),
        16 => round_trip::<raftkv_proto::v3electionpb::CampaignRequest>(bytes),
        17 => round_trip::<raftkv_proto::v3electionpb::ProclaimRequest>(bytes),
        18 => round_trip::<raftkv_proto::v3electionpb::LeaderResponse>(bytes),
        19 => round_trip::<raftkv_proto::etcdserverpb::HashKvRequest>(bytes),
        20 => round_trip::<raftkv_proto::etcdserverpb::MemberUpdateRequest>(bytes),
        21 => round_trip::<raftkv_proto::etcdserverpb::AuthUserAddRequest>(bytes),
        22 => round_trip::<raftkv_proto::etcdserverpb::AuthRoleGrantPermissionRequest>(bytes),
        23 => round_trip::<raftkv_proto::etcdserverpb::AuthRoleGetResponse>(bytes),
        // A peer's answer to the corruption checks.
        24 => round_trip::<raftkv_proto::etcdserverpb::HashKvResponse>(bytes),
        _ => round_trip::<raftkv_proto::grpc_health_v1::HealthCheckRequest>(bytes),
    }
}

fn tagged(tag: u8, bytes: Vec<u8>) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend(bytes);
    out
}

fn put(key: &str, value: &str) -> PutRequest {
    PutRequest {
        key: Bytes::copy_from_slice(key.as_bytes()),
        value: Bytes::copy_from_slice(value.as_bytes()),
        ..Default::default()
    }
}

fn op(request: request_op::Request) -> RequestOp {
    RequestOp {
        request: Some(request),
    }
}

fn sample_txn(depth: usize) -> TxnRequest {
    let mut txn = TxnRequest {
        compare: vec![Compare {
            key: "k".into(),
            result: 0,
            target: 3,
            target_union: Some(raftkv_proto::etcdserverpb::compare::TargetUnion::Value(
                "v".into(),
            )),
            range_end: Bytes::new(),
        }],
        success: vec![
            op(request_op::Request::RequestPut(put("a", "1"))),
            op(request_op::Request::RequestRange(RangeRequest {
                key: "a".into(),
                range_end: "b".into(),
                ..Default::default()
            })),
        ],
        failure: vec![op(request_op::Request::RequestDeleteRange(
            DeleteRangeRequest {
                key: "x".into(),
                range_end: vec![0].into(),
                prev_kv: true,
            },
        ))],
    };
    for _ in 1..depth {
        txn = TxnRequest {
            success: vec![op(request_op::Request::RequestTxn(txn))],
            ..Default::default()
        };
    }
    txn
}

fn sample_commands() -> Vec<Command> {
    let cmd = |op| Command {
        op: Some(op),
        ..Default::default()
    };
    let as_caller = |op, user: &str, auth_revision| Command {
        op: Some(op),
        caller: Some(raftkv_proto::raftkvpb::Caller {
            user: user.into(),
            auth_revision,
        }),
    };
    vec![
        as_caller(command::Op::Put(put("key", "value")), "root", 5),
        as_caller(command::Op::Put(put("pre/x", "value")), "cn-only", 1),
        as_caller(
            command::Op::DeleteRange(DeleteRangeRequest {
                key: "a".into(),
                range_end: "\0".into(),
                prev_kv: true,
            }),
            "",
            0,
        ),
        cmd(command::Op::Put(put("key", "value"))),
        cmd(command::Op::DeleteRange(DeleteRangeRequest {
            key: "a".into(),
            range_end: "z".into(),
            prev_kv: true,
        })),
        cmd(command::Op::Txn(sample_txn(1))),
        cmd(command::Op::Txn(sample_txn(3))),
        cmd(command::Op::Compaction(CompactionRequest {
            revision: 2,
            physical: false,
        })),
        cmd(command::Op::Alarm(AlarmRequest {
            action: 1,
            member_id: 7,
            alarm: 1,
        })),
        cmd(command::Op::LeaseGrant(
            raftkv_proto::etcdserverpb::LeaseGrantRequest { ttl: 60, id: 7 },
        )),
        cmd(command::Op::Put(PutRequest {
            lease: 7,
            ..put("leased", "v")
        })),
        cmd(command::Op::LeaseCheckpoint(
            raftkv_proto::etcdserverpb::LeaseCheckpointRequest {
                checkpoints: vec![raftkv_proto::etcdserverpb::LeaseCheckpoint {
                    id: 7,
                    remaining_ttl: 30,
                }],
            },
        )),
        cmd(command::Op::LeaseRevoke(
            raftkv_proto::etcdserverpb::LeaseRevokeRequest { id: 7 },
        )),
    ]
    .into_iter()
    .chain(auth_commands().into_iter().map(|op| {
        cmd(command::Op::Auth(raftkv_proto::raftkvpb::AuthCommand {
            op: Some(op),
        }))
    }))
    .collect()
}

/// A session of auth changes: users (one without a password), roles, permissions of each
/// form, grants, AuthEnable and the changes it forbids, AuthDisable.
fn auth_commands() -> Vec<raftkv_proto::raftkvpb::auth_command::Op> {
    use raftkv_proto::authpb::{Permission, UserAddOptions};
    use raftkv_proto::etcdserverpb::*;
    use raftkv_proto::raftkvpb::auth_command::Op;
    use raftkv_proto::raftkvpb::{AuthUserAdd, AuthUserChangePassword};
    // A bcrypt hash's shape; the store never checks a hash, only its length.
    let hash = Bytes::from_static(b"$2b$10$abcdefghijklmnopqrstuuN2a3HiMqVp9yQyYgIyzZ6vWdjlOqkS");
    let perm = |perm_type, key: &str, end: &[u8]| Permission {
        perm_type,
        key: Bytes::copy_from_slice(key.as_bytes()),
        range_end: Bytes::copy_from_slice(end),
    };
    let grant = |name: &str, perm| {
        Op::RoleGrantPermission(AuthRoleGrantPermissionRequest {
            name: name.into(),
            perm: Some(perm),
        })
    };
    vec![
        Op::UserAdd(AuthUserAdd {
            name: "root".into(),
            hashed_password: hash.clone(),
            options: None,
        }),
        Op::UserAdd(AuthUserAdd {
            name: "cn-only".into(),
            hashed_password: Bytes::new(),
            options: Some(UserAddOptions { no_password: true }),
        }),
        Op::RoleAdd(AuthRoleAddRequest { name: "r".into() }),
        grant("r", perm(0, "key", b"")),
        grant("r", perm(1, "a", b"z")),
        grant("r", perm(2, "pre/", b"pre0")),
        grant("r", perm(0, "from", b"\0")),
        Op::UserGrantRole(AuthUserGrantRoleRequest {
            user: "cn-only".into(),
            role: "r".into(),
        }),
        Op::UserGrantRole(AuthUserGrantRoleRequest {
            user: "root".into(),
            role: "root".into(),
        }),
        Op::Enable(AuthEnableRequest {}),
        Op::UserDelete(AuthUserDeleteRequest {
            name: "root".into(),
        }),
        Op::UserChangePassword(AuthUserChangePassword {
            name: "root".into(),
            hashed_password: hash,
        }),
        Op::RoleRevokePermission(AuthRoleRevokePermissionRequest {
            role: "r".into(),
            key: "a".into(),
            range_end: "z".into(),
        }),
        Op::UserRevokeRole(AuthUserRevokeRoleRequest {
            name: "cn-only".into(),
            role: "r".into(),
        }),
        Op::Authenticate(raftkv_proto::raftkvpb::AuthAuthenticate {
            name: "root".into(),
            token_prefix: "abcdefghijklmnop".into(),
        }),
        Op::Authenticate(raftkv_proto::raftkvpb::AuthAuthenticate {
            name: "cn-only".into(),
            token_prefix: "bad prefix!".into(),
        }),
        Op::Disable(AuthDisableRequest {}),
        Op::RoleDelete(AuthRoleDeleteRequest { role: "r".into() }),
    ]
}

fn grpc_message_seeds() -> Vec<Vec<u8>> {
    let mut seeds = vec![
        tagged(
            0,
            RangeRequest {
                key: "a".into(),
                range_end: vec![0].into(),
                limit: 10,
                revision: 3,
                ..Default::default()
            }
            .encode_to_vec(),
        ),
        tagged(1, put("k", "v").encode_to_vec()),
        tagged(
            21,
            raftkv_proto::etcdserverpb::AuthUserAddRequest {
                name: "alice".into(),
                password: "pw".into(),
                options: Some(raftkv_proto::authpb::UserAddOptions { no_password: false }),
            }
            .encode_to_vec(),
        ),
        tagged(
            22,
            raftkv_proto::etcdserverpb::AuthRoleGrantPermissionRequest {
                name: "r".into(),
                perm: Some(raftkv_proto::authpb::Permission {
                    perm_type: 2,
                    key: "pre/".into(),
                    range_end: "pre0".into(),
                }),
            }
            .encode_to_vec(),
        ),
        tagged(3, sample_txn(4).encode_to_vec()),
        tagged(
            10,
            raftkv_proto::etcdserverpb::WatchRequest {
                request_union: Some(
                    raftkv_proto::etcdserverpb::watch_request::RequestUnion::CreateRequest(
                        raftkv_proto::etcdserverpb::WatchCreateRequest {
                            key: "a".into(),
                            range_end: "b".into(),
                            start_revision: 3,
                            filters: vec![1],
                            prev_kv: true,
                            watch_id: 7,
                            ..Default::default()
                        },
                    ),
                ),
            }
            .encode_to_vec(),
        ),
        tagged(
            7,
            ChangeMembersRequest {
                op: Some(raftkv_proto::raftkvpb::change_members_request::Op::Add(
                    MemberAddRequest {
                        peer_ur_ls: vec!["http://127.0.0.1:2380".into()],
                        is_learner: true,
                    },
                )),
            }
            .encode_to_vec(),
        ),
        tagged(
            7,
            ChangeMembersRequest {
                op: Some(raftkv_proto::raftkvpb::change_members_request::Op::Update(
                    raftkv_proto::etcdserverpb::MemberUpdateRequest {
                        id: 9,
                        peer_ur_ls: vec!["http://127.0.0.1:2381".into()],
                    },
                )),
            }
            .encode_to_vec(),
        ),
        tagged(
            19,
            raftkv_proto::etcdserverpb::HashKvRequest { revision: 7 }.encode_to_vec(),
        ),
        tagged(
            24,
            raftkv_proto::etcdserverpb::HashKvResponse {
                header: Some(raftkv_proto::etcdserverpb::ResponseHeader {
                    cluster_id: 1,
                    member_id: 2,
                    revision: 9,
                    raft_term: 3,
                }),
                hash: 0xdead_beef,
                compact_revision: -1,
            }
            .encode_to_vec(),
        ),
        tagged(
            20,
            raftkv_proto::etcdserverpb::MemberUpdateRequest {
                id: 9,
                peer_ur_ls: vec!["http://127.0.0.1:2381".into(), "http://b:2".into()],
            }
            .encode_to_vec(),
        ),
        tagged(
            8,
            MemberInfo {
                id: 3,
                name: "m".into(),
                peer_urls: vec!["http://a:1".into()],
                client_urls: vec![],
            }
            .encode_to_vec(),
        ),
    ];
    seeds.extend(
        sample_commands()
            .into_iter()
            .map(|c| tagged(5, c.encode_to_vec())),
    );
    seeds.push(tagged(
        12,
        raftkv_proto::etcdserverpb::LeaseGrantRequest { ttl: 5, id: -3 }.encode_to_vec(),
    ));
    seeds.push(tagged(
        13,
        raftkv_proto::etcdserverpb::LeaseKeepAliveRequest { id: 1 << 60 }.encode_to_vec(),
    ));
    seeds.push(tagged(
        15,
        raftkv_proto::v3lockpb::LockRequest {
            name: "lock".into(),
            lease: -5,
        }
        .encode_to_vec(),
    ));
    seeds.push(tagged(
        25,
        raftkv_proto::grpc_health_v1::HealthCheckRequest {
            service: "etcdserverpb.KV".into(),
        }
        .encode_to_vec(),
    ));
    seeds.push(tagged(
        16,
        raftkv_proto::v3electionpb::CampaignRequest {
            name: "vote".into(),
            lease: 0x1a,
            value: "me".into(),
        }
        .encode_to_vec(),
    ));
    let leader = raftkv_proto::v3electionpb::LeaderKey {
        name: "vote".into(),
        key: "vote/1a".into(),
        rev: 21,
        lease: 0x1a,
    };
    seeds.push(tagged(
        17,
        raftkv_proto::v3electionpb::ProclaimRequest {
            leader: Some(leader),
            value: "again".into(),
        }
        .encode_to_vec(),
    ));
    seeds.push(tagged(
        18,
        raftkv_proto::v3electionpb::LeaderResponse {
            header: None,
            kv: Some(raftkv_proto::mvccpb::KeyValue {
                key: "vote/1a".into(),
                value: "me".into(),
                create_revision: 21,
                mod_revision: 22,
                version: 2,
                lease: 0x1a,
            }),
        }
        .encode_to_vec(),
    ));
    seeds.push(tagged(
        14,
        raftkv_proto::etcdserverpb::LeaseTimeToLiveResponse {
            header: None,
            id: 9,
            ttl: 3,
            granted_ttl: 5,
            keys: vec!["k".into(), "l".into()],
        }
        .encode_to_vec(),
    ));
    seeds
}

// ---- command_apply ------------------------------------------------------------------------

thread_local! {
    /// One store for a whole run (opening sled per input would dominate).
    static STORE: RefCell<Option<(MvccStore, tempfile::TempDir)>> = const { RefCell::new(None) };
}

fn with_store(f: impl FnOnce(&MvccStore)) {
    STORE.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            let dir = tempfile::tempdir().expect("temp dir");
            let config = MvccConfig {
                cache_capacity: 8 << 20,
                ..MvccConfig::default()
            };
            let store = MvccStore::open(dir.path(), &config).expect("store opens");
            *slot = Some((store, dir));
        }
        f(&slot.as_ref().expect("opened above").0);
    });
}

fn command_apply(data: &[u8]) {
    let Ok(cmd) = decode_bounded::<Command>(data) else {
        return;
    };
    // The client-edge checks and the state machine's must agree on what is malformed.
    let edge = validate::check_command(&cmd, usize::MAX, usize::MAX);
    let structure = validate::check_structure(&cmd);
    if structure.is_err() {
        assert!(
            edge.is_err(),
            "the edge let in what the state machine refuses"
        );
    }
    with_store(|store| {
        let before = store.revision();
        match store.apply(&cmd, &AppliedState::default()) {
            Ok(_) => assert!(store.revision() - before <= 1, "one revision per command"),
            Err(e) => {
                assert!(e.is_request_error(), "a command damaged the store: {e}");
                assert_eq!(
                    store.revision(),
                    before,
                    "a refused command changed the revision"
                );
            }
        }
    });
}

fn command_seeds() -> Vec<Vec<u8>> {
    sample_commands()
        .into_iter()
        .map(|c| c.encode_to_vec())
        .collect()
}

// ---- auth_record --------------------------------------------------------------------------

/// The auth table's record as a member reads it from its store or a snapshot: what decodes
/// is within every bound and encodes back to the same table.
fn auth_record(data: &[u8]) {
    use raftkv_storage::mvcc::auth::{AuthTable, MAX_ROLES, MAX_USERS};
    if let Ok(table) = AuthTable::decode(data) {
        assert!(table.users.len() <= MAX_USERS && table.roles.len() <= MAX_ROLES);
        let again = AuthTable::decode(&table.encode()).expect("own record decodes");
        assert_eq!(again, table, "the auth table changed in a round trip");
    }
}

/// The table after each step of the auth session, as stored.
fn auth_record_seeds() -> Vec<Vec<u8>> {
    use raftkv_storage::mvcc::auth::AuthTable;
    let mut table = AuthTable::default();
    let mut seeds = vec![table.encode()];
    for op in auth_commands() {
        let cmd = raftkv_proto::raftkvpb::AuthCommand { op: Some(op) };
        if let Ok(Some(next)) = table.apply(&cmd) {
            table = next;
            seeds.push(table.encode());
        }
    }
    seeds
}

// ---- history_group ------------------------------------------------------------------------

/// A history group read back from the store (the first 8 bytes are the revision it is keyed
/// by): what decodes names changes at or after that revision in strictly increasing order,
/// and encodes to a group that decodes to the same changes.
fn history_group(data: &[u8]) {
    use raftkv_storage::mvcc::{decode_group, encode_group};
    let Some((head, raw)) = data.split_first_chunk::<8>() else {
        return;
    };
    let first = i64::from_le_bytes(*head);
    let Ok(entries) = decode_group(first, raw) else {
        return;
    };
    assert!(entries.iter().all(|(rev, _, _)| *rev >= first));
    assert!(
        entries
            .windows(2)
            .all(|w| (w[0].0, w[0].1) < (w[1].0, w[1].1)),
        "changes out of order"
    );
    if let Some(start) = entries.first().map(|e| e.0) {
        let again = decode_group(start, &encode_group(&entries)).expect("own group decodes");
        assert_eq!(again, entries, "a group changed in a round trip");
    }
}

/// Groups of one, three and twenty changes, two to a revision.
fn history_group_seeds() -> Vec<Vec<u8>> {
    use raftkv_storage::mvcc::encode_group;
    let mut seeds = Vec::new();
    for len in [1usize, 3, 20] {
        let entries: Vec<(i64, u32, Vec<u8>)> = (0..len)
            .map(|i| {
                (
                    7 + (i / 2) as i64,
                    (i % 2) as u32,
                    format!("key/{i}").into_bytes(),
                )
            })
            .collect();
        let mut seed = 7i64.to_le_bytes().to_vec();
        seed.extend(encode_group(&entries));
        seeds.push(seed);
    }
    seeds
}

// ---- raft_message -------------------------------------------------------------------------

fn raft_message(data: &[u8]) {
    use raftkv_raft::types::decode;
    let Some((&which, bytes)) = data.split_first() else {
        return;
    };
    let me = 1;
    match which % 9 {
        0 => {
            if let Ok(req) = decode::<VoteRequest<TypeConfig>>(bytes) {
                let _ = admission::vote_request(&req, me);
            }
        }
        1 => {
            if let Ok(req) = decode::<AppendEntriesRequest<TypeConfig>>(bytes) {
                let _ = admission::append_entries(&req, me);
            }
        }
        2 => {
            if let Ok(req) = decode::<TransferLeaderRequest<TypeConfig>>(bytes) {
                let _ = admission::transfer_leader(&req, me, true);
            }
        }
        3 => {
            if let Ok((vote, meta)) = decode::<(Vote, SnapshotMeta)>(bytes) {
                let _ = admission::snapshot_header(&vote, &meta, me);
            }
        }
        4 => {
            if let Ok(Ok(resp)) = decode::<Result<VoteResponse<TypeConfig>, String>>(bytes) {
                let _ = admission::vote_response(&resp);
            }
        }
        5 => {
            if let Ok(Ok(resp)) = decode::<Result<AppendEntriesResponse<TypeConfig>, String>>(bytes)
            {
                let _ = admission::append_response(&resp, None);
            }
        }
        6 => {
            if let Ok(Ok(result)) = decode::<Result<StreamAppendResult<TypeConfig>, String>>(bytes)
            {
                let _ = admission::stream_result(&result, Some(&LogId::new_term_index(3, 9)));
            }
        }
        7 => {
            if let Ok(Ok(resp)) = decode::<Result<SnapshotResponse<TypeConfig>, String>>(bytes) {
                let _ = admission::snapshot_response(&resp);
            }
        }
        _ => {
            // A log entry as the WAL holds it; what decodes encodes back the same.
            if let Ok(entry) = decode::<Entry>(bytes) {
                let again = raftkv_raft::types::encode(&entry).expect("encodes");
                assert_eq!(decode::<Entry>(&again).expect("decodes"), entry);
            }
        }
    }
}

fn sample_entries() -> Vec<Entry> {
    use std::collections::{BTreeMap, BTreeSet};
    let member = |port: u16| Member {
        name: format!("m{port}"),
        peer_urls: vec![format!("http://127.0.0.1:{port}")],
        client_urls: vec![],
    };
    let membership = openraft::Membership::new(
        vec![BTreeSet::from([1, 2, 3])],
        BTreeMap::from([(1, member(1)), (2, member(2)), (3, member(3))]),
    )
    .expect("valid membership");
    let mut entries = vec![
        Entry {
            log_id: LogId::new_term_index(3, 10),
            payload: openraft::EntryPayload::Blank,
        },
        Entry {
            log_id: LogId::new_term_index(3, 11),
            payload: openraft::EntryPayload::Membership(membership),
        },
    ];
    for (i, cmd) in sample_commands().into_iter().enumerate() {
        entries.push(Entry {
            log_id: LogId::new_term_index(3, 12 + i as u64),
            payload: openraft::EntryPayload::Normal(Request(cmd)),
        });
    }
    entries
}

fn raft_message_seeds() -> Vec<Vec<u8>> {
    use raftkv_raft::types::encode;
    let vote = Vote::new(4, 2);
    let leader = Vote::new_committed(3, 2);
    let entries = sample_entries();
    let meta = SnapshotMeta {
        last_log_id: Some(LogId::new_term_index(3, 9)),
        last_membership: Default::default(),
    };
    let mut seeds = vec![
        tagged(
            0,
            encode(&VoteRequest::<TypeConfig> {
                vote,
                last_log_id: Some(LogId::new_term_index(3, 9)),
                leadership_transfer: false,
            })
            .expect("encodes"),
        ),
        tagged(
            1,
            encode(&AppendEntriesRequest::<TypeConfig> {
                vote: leader,
                prev_log_id: Some(LogId::new_term_index(3, 9)),
                entries: entries.clone(),
                leader_commit: Some(LogId::new_term_index(3, 11)),
            })
            .expect("encodes"),
        ),
        tagged(
            2,
            encode(&TransferLeaderRequest::<TypeConfig>::new(leader, 1, None)).expect("encodes"),
        ),
        tagged(3, encode(&(leader, meta)).expect("encodes")),
        tagged(
            4,
            encode(&Ok::<_, String>(VoteResponse::<TypeConfig> {
                vote,
                vote_granted: true,
                last_log_id: None,
            }))
            .expect("encodes"),
        ),
        tagged(
            6,
            encode(&Ok::<StreamAppendResult<TypeConfig>, String>(Ok(Some(
                LogId::new_term_index(3, 9),
            ))))
            .expect("encodes"),
        ),
    ];
    seeds.extend(
        entries
            .iter()
            .map(|e| tagged(8, encode(e).expect("encodes"))),
    );
    seeds
}

// ---- wal_chunk ----------------------------------------------------------------------------

/// The log configuration the target opens with: small segments, so that an input is a
/// whole segment or more and recovery's cut-and-reallocate stays cheap.
fn wal_config() -> raftkv_storage::log::LogConfig {
    raftkv_storage::log::LogConfig {
        chunk_bytes: 1 << 16,
        ..Default::default()
    }
}

/// The segment file name a fresh WAL writes first.
fn wal_chunk_name() -> &'static PathBuf {
    use std::sync::OnceLock;
    static NAME: OnceLock<PathBuf> = OnceLock::new();
    NAME.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let wal =
            raftkv_storage::log::RaftLogStore::open(dir.path(), &wal_config()).expect("wal opens");
        drop(wal);
        std::fs::read_dir(dir.path())
            .expect("wal dir")
            .filter_map(Result::ok)
            .map(|e| e.file_name())
            .find(|n| n.to_string_lossy().ends_with(".wal"))
            .map(PathBuf::from)
            .expect("a segment file")
    })
}

fn wal_chunk(data: &[u8]) {
    use raftkv_storage::log::{LogId as WalLogId, RaftLogStore};
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join(wal_chunk_name()), data).expect("write segment");
    let Ok(wal) = RaftLogStore::open(dir.path(), &wal_config()) else {
        return;
    };
    let state = wal.state();
    let held = wal.read(0, u64::MAX).expect("a log that opened reads back");
    for (_, bytes) in &held {
        let _ = raftkv_raft::types::decode::<Entry>(bytes);
    }
    if let Some(vote) = wal.vote() {
        let _ = raftkv_raft::types::decode::<Vote>(&vote);
    }
    // The log goes on from what recovery kept: an entry after it survives a reopen, and so
    // does everything recovery kept (a cut tail was really cut, not left to be read again).
    let next = state.last.map_or(Some(1), |l| l.index.checked_add(1));
    let Some(index) = next.filter(|&i| i < u64::MAX) else {
        return;
    };
    let id = WalLogId {
        term: state.last.map_or(1, |l| l.term),
        index,
    };
    wal.append_sync([(id, b"after recovery".to_vec())])
        .expect("an append after recovery");
    let vote = wal.vote();
    drop(wal);
    let again = RaftLogStore::open(dir.path(), &wal_config()).expect("a log it wrote reopens");
    let mut want = held;
    want.push((id, b"after recovery".to_vec()));
    assert_eq!(again.read(0, u64::MAX).expect("reads"), want);
    assert_eq!(again.vote(), vote);
    assert_eq!(again.state().purged, state.purged);
}

fn wal_chunk_seeds() -> Vec<Vec<u8>> {
    use raftkv_storage::log::{FlushCallback, LogId as WalLogId, RaftLogStore};
    let dir = tempfile::tempdir().expect("temp dir");
    {
        let wal = RaftLogStore::open(dir.path(), &wal_config()).expect("wal opens");
        wal.save_vote(raftkv_raft::types::encode(&Vote::new(3, 1)).expect("encodes"))
            .expect("vote saved");
        let entries: Vec<_> = sample_entries()
            .iter()
            .map(|e| {
                (
                    WalLogId {
                        term: e.log_id.leader_id.term,
                        index: e.log_id.index,
                    },
                    raftkv_raft::types::encode(e).expect("encodes"),
                )
            })
            .collect();
        let (tx, rx) = std::sync::mpsc::channel();
        wal.append(
            entries,
            FlushCallback::new(move |r| {
                let _ = tx.send(r);
            }),
        )
        .expect("appends");
        rx.recv().expect("flushed").expect("flush ok");
    }
    // The written records, without the zeros the rest of the segment holds.
    let mut bytes = std::fs::read(dir.path().join(wal_chunk_name())).expect("segment");
    let end = bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    bytes.truncate(end);
    vec![bytes]
}

// ---- etcd_snapshot ------------------------------------------------------------------------

fn etcd_snapshot(data: &[u8]) {
    use raftkv_storage::etcd;
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("etcd.db");
    // Half the inputs get a correct SHA-256 trailer (when the size has room for one, as
    // etcdctl looks for it), so that mutations reach the pages rather than the checksum.
    let mut data = data.to_vec();
    if data.len() % 512 == 32 && data[data.len() - 1] & 1 == 0 {
        use sha2::Digest;
        let n = data.len() - 32;
        let digest = sha2::Sha256::digest(&data[..n]);
        data[n..].copy_from_slice(&digest);
    }
    std::fs::write(&file, &data).expect("write file");
    let _ = etcd::status(&file);
    with_store(|store| {
        let before = store.revision();
        match etcd::restore(&file, store, data.len() % 512 != 32) {
            Ok(imported) => assert_eq!(store.revision(), imported.revision),
            // A refused file changes nothing.
            Err(_) => assert_eq!(store.revision(), before),
        }
    });
}

fn etcd_snapshot_seeds() -> Vec<Vec<u8>> {
    use raftkv_storage::etcd::{bolt_writer, samples};
    let mut versions = samples::versions();
    // Enough versions for branch pages, with a value on overflow pages.
    for i in 0..400u64 {
        let main = 8 + i as i64;
        let rev = raftkv_storage::etcd::revision_bytes(main, 0, false);
        let kv = raftkv_proto::mvccpb::KeyValue {
            key: Bytes::from(format!("/pods/{:03}", i % 150)),
            create_revision: main,
            mod_revision: main,
            version: 1,
            value: Bytes::from(vec![b'p'; if i == 7 { 9000 } else { 40 }]),
            lease: 0,
        };
        versions.push((rev, kv.encode_to_vec()));
    }
    vec![
        samples::snapshot(None),
        samples::snapshot(Some(5)),
        samples::seal(bolt_writer::write(
            &samples::buckets_with(versions, None),
            1024,
        )),
        // A database file without a trailer (restored with --skip-hash-check).
        bolt_writer::write(&samples::buckets_with(samples::versions(), None), 1024),
    ]
}

// ---- snapshot_file ------------------------------------------------------------------------

fn snapshot_file(data: &[u8]) {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("s.snap");
    // Half the inputs get a correct SHA-256 trailer, so that mutations inside the file reach
    // the header, block and footer decoders rather than stop at the checksum.
    let mut data = data.to_vec();
    if data.len() > 32 && data[data.len() - 1] & 1 == 0 {
        use sha2::Digest;
        let n = data.len() - 32;
        let digest = sha2::Sha256::digest(&data[..n]);
        data[n..].copy_from_slice(&digest);
    }
    std::fs::write(&file, &data).expect("write file");
    if raftkv_storage::snapshot::read_info(&file).is_err() {
        return;
    }
    with_store(|store| {
        // A file that verifies restores; nothing in it may fail as storage.
        if let Err(e) = raftkv_storage::snapshot::restore(&file, store) {
            panic!("a verified snapshot failed to restore: {e}");
        }
    });
}

fn snapshot_seeds() -> Vec<Vec<u8>> {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = MvccStore::open(&dir.path().join("db"), &MvccConfig::default()).expect("store");
    let mut seeds = Vec::new();
    for (i, cmd) in sample_commands().into_iter().enumerate() {
        let _ = store.apply(&cmd, &AppliedState::default());
        for k in 0..20 {
            let _ = store.apply(
                &Command {
                    op: Some(command::Op::Put(put(
                        &format!("key/{i}/{k:03}"),
                        &format!("{{\"kind\":\"Pod\",\"n\":{k}}}"),
                    ))),
                    ..Default::default()
                },
                &AppliedState::default(),
            );
        }
        let file = dir.path().join(format!("{i}.snap"));
        // Every way a block can be stored: format 4's codec frames, and format 5's codec,
        // zstd, codec-then-zstd and split-then-zstd blocks.
        use raftkv_storage::snapshot::BlockStages;
        let stages = [
            BlockStages::Smallest,
            BlockStages::CodecOnly,
            BlockStages::ZstdOnly,
            BlockStages::CodecThenZstd,
            BlockStages::SplitThenZstd,
        ][i % 5];
        raftkv_storage::snapshot::build_with(&store, &file, stages).expect("builds");
        seeds.push(std::fs::read(&file).expect("read"));
    }
    seeds
}

// ---- codec_frame --------------------------------------------------------------------------

fn codec_frame(data: &[u8]) {
    const LIMIT: usize = 4 << 20;
    if let Ok(raw) = raftkv_codec::decompress(data, LIMIT) {
        assert!(raw.len() <= LIMIT);
        let again = raftkv_codec::compress(&raw);
        assert_eq!(
            raftkv_codec::decompress(&again, LIMIT).expect("own frame"),
            raw
        );
    }
    // The seed problem's solver on the same bytes (lowercase letters only).
    let text: Vec<u8> = data.iter().take(300).map(|b| b'a' + b % 3).collect();
    if let Ok(s) = std::str::from_utf8(&text)
        && !s.is_empty()
    {
        assert!(raftkv_codec::shortest_compressed_len(s) <= s.len());
    }
}

fn codec_seeds() -> Vec<Vec<u8>> {
    let inputs: Vec<Vec<u8>> = vec![
        b"aabbaccc".to_vec(),
        b"ababcdcdababcdcd".repeat(40),
        vec![0u8; 70_000],
        (0..5000u32).flat_map(|i| i.to_le_bytes()).collect(),
        b"{\"kind\":\"Pod\",\"apiVersion\":\"v1\"}".repeat(30),
    ];
    inputs.iter().map(|i| raftkv_codec::compress(i)).collect()
}

// ---- message_framing ----------------------------------------------------------------------

fn message_framing(data: &[u8]) {
    use http_body_util::BodyExt;
    use raftkv_raft::serve::{MessageBudget, ServeLimits};
    // The first bytes choose where the rest is cut into chunks.
    let Some((&cut, rest)) = data.split_first() else {
        return;
    };
    let step = usize::from(cut).max(1);
    let chunks: Vec<Bytes> = rest.chunks(step).map(Bytes::copy_from_slice).collect();
    let limits = ServeLimits {
        max_connections: 1,
        handshake_timeout: std::time::Duration::from_secs(1),
        message_timeout: std::time::Duration::from_secs(5),
        budget_bytes: 1 << 20,
        max_message: 64 << 10,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let budget = MessageBudget::new(&limits);
        let frames = futures_util::stream::iter(
            chunks
                .into_iter()
                .map(|c| Ok::<_, tonic::Status>(http_body::Frame::data(c))),
        );
        let body = tonic::body::Body::new(http_body_util::StreamBody::new(frames));
        let out = budget
            .wrap(body)
            .collect()
            .await
            .expect("a finite body completes");
        // Bytes pass through whole, in order, and the budget is all returned.
        assert_eq!(out.to_bytes(), rest);
        assert_eq!(budget.available(), 1 << 20);
    });
}

fn framing_seeds() -> Vec<Vec<u8>> {
    let frame = |len: usize| {
        let mut out = vec![0u8];
        out.extend_from_slice(&(len as u32).to_be_bytes());
        out.resize(5 + len, 0x5a);
        out
    };
    let mut two = frame(100);
    two.extend(frame(0));
    two.extend(frame(3000));
    vec![
        tagged(7, two),
        tagged(1, frame(10)),
        tagged(200, frame(70_000)),
    ]
}

// ---- h2_authority ------------------------------------------------------------------------

/// What grpc-go (etcdctl 3.4) sent on a connection, captured between it and a real etcd
/// advertising the capture's port: `put` and a `lock` session (bare `host:port` authority,
/// later blocks indexing it), and one connection each of `endpoint status --cluster` and
/// `endpoint hashkv --cluster` (the whole URL as authority, which h2 refuses unrepaired).
const ETCDCTL_STREAMS: [(&str, &[u8]); 4] = [
    (
        "put",
        include_bytes!("../seeds/h2_authority/etcdctl-put.bin"),
    ),
    (
        "lock",
        include_bytes!("../seeds/h2_authority/etcdctl-lock.bin"),
    ),
    (
        "status --cluster",
        include_bytes!("../seeds/h2_authority/etcdctl-status-cluster.bin"),
    ),
    (
        "hashkv --cluster",
        include_bytes!("../seeds/h2_authority/etcdctl-hashkv-cluster.bin"),
    ),
];

/// The first two bytes choose the chunking and the reader's buffer size; the rest is what a
/// client sends. The repair must not depend on either, must leave a non-HTTP/2 stream as it
/// is, and must be idempotent: a repaired stream goes through again unchanged.
fn h2_authority(data: &[u8]) {
    use raftkv_raft::h2_authority::{PREFACE, rewrite_chunks};
    let [cut, read, stream @ ..] = data else {
        return;
    };
    let chunks: Vec<&[u8]> = stream.chunks(usize::from(*cut).max(1)).collect();
    let whole = rewrite_chunks(&[stream], 1 << 16);
    let chunked = rewrite_chunks(&chunks, usize::from(*read).max(1) * 7);
    match (&whole, &chunked) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "the output depends on the chunking"),
        (Err(_), Err(_)) => {}
        _ => panic!("refused in one chunking only: {whole:?} / {chunked:?}"),
    }
    let Ok(out) = whole else {
        return;
    };
    let prefix = stream.len().min(PREFACE.len());
    if stream[..prefix] != PREFACE[..prefix] {
        assert_eq!(out, stream, "not HTTP/2, yet changed");
    }
    let again = rewrite_chunks(&[&out], 1 << 16).expect("a repaired stream is accepted");
    assert_eq!(again, out, "repairing twice changed the stream");
}

/// Header blocks as a client's encoder makes them.
fn h2_block(fields: &[(u8, usize, &[u8], bool)]) -> Vec<u8> {
    use raftkv_raft::h2_authority::{hpack, huffman};
    let mut out = Vec::new();
    for &(kind, index, value, coded) in fields {
        match kind {
            // indexed
            b'i' => hpack::put_integer(&mut out, 0x80, 7, index),
            // size update
            b's' => hpack::put_integer(&mut out, 0x20, 5, index),
            // literal with incremental indexing (i), without (w), never indexed (n)
            _ => {
                let (flags, prefix) = match kind {
                    b'+' => (0x40, 6),
                    b'n' => (0x10, 4),
                    _ => (0x00, 4),
                };
                hpack::put_integer(&mut out, flags, prefix, index);
                if coded {
                    let h = huffman::encode(value);
                    hpack::put_integer(&mut out, 0x80, 7, h.len());
                    out.extend_from_slice(&h);
                } else {
                    hpack::put_string(&mut out, value);
                }
            }
        }
    }
    out
}

fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    out.extend_from_slice(&[kind, flags]);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

// ---- cert_common_name ---------------------------------------------------------------------

/// The subject common name of a client certificate (what `--client-cert-auth` makes the
/// user, what `--peer-cert-allowed-cn` checks) and its alternative names: anything may come
/// out, or nothing, but it never panics and what comes out is no bigger than the
/// certificate.
fn cert_common_name(data: &[u8]) {
    if let Some(name) = raftkv_server::caller::common_name(data) {
        assert!(
            name.len() <= data.len() * 2,
            "a name longer than its certificate"
        );
    }
    // The alternative names (--*-cert-allowed-hostname, the peer SAN check), same reader.
    let names = raftkv_server::tls::x509::alt_names(data);
    let text: usize = names.dns.iter().map(String::len).sum();
    assert!(
        text <= data.len() * 3,
        "names longer than their certificate"
    );
    assert!(
        names.ips.len() <= data.len() / 4,
        "more addresses than bytes"
    );
}

fn cert_common_name_seeds() -> Vec<Vec<u8>> {
    let cert = |cn: Option<&str>, org: Option<&str>| {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(vec!["localhost".into()]).expect("params");
        params.distinguished_name = rcgen::DistinguishedName::new();
        if let Some(org) = org {
            params
                .distinguished_name
                .push(rcgen::DnType::OrganizationName, org);
        }
        if let Some(cn) = cn {
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, cn);
        }
        params.self_signed(&key).expect("cert").der().to_vec()
    };
    vec![
        cert(Some("alice"), None),
        cert(Some("root"), Some("org")),
        cert(None, Some("no common name")),
        cert(Some("ünïcödé"), None),
        Vec::new(),
    ]
}

fn h2_authority_seeds() -> Vec<Vec<u8>> {
    use raftkv_raft::h2_authority::PREFACE;
    let request = |authority: &[u8], coded: bool| {
        h2_block(&[
            (b'i', 3, b"", false),
            (b'i', 6, b"", false),
            (b'w', 4, b"/etcdserverpb.KV/Range", false),
            (b'+', 1, authority, coded),
        ])
    };
    let mut streams: Vec<Vec<u8>> = ETCDCTL_STREAMS.iter().map(|(_, s)| s.to_vec()).collect();
    let mut constructed = PREFACE.to_vec();
    constructed.extend(h2_frame(0x4, 0, 0, &[]));
    constructed.extend(h2_frame(
        0x1,
        0x4,
        1,
        &request(b"http://127.0.0.1:2379", true),
    ));
    constructed.extend(h2_frame(0x0, 0x1, 1, &[0, 0, 0, 0, 2, 10, 0]));
    constructed.extend(h2_frame(0x1, 0x5, 3, &h2_block(&[(b'i', 62, b"", false)])));
    // PADDED | PRIORITY, then a CONTINUATION; a size update; a still-invalid value.
    let block = request(b"http://[::1]:1/x", false);
    let mut padded = vec![2, 0x80, 0, 0, 0, 9];
    padded.extend_from_slice(&block[..4]);
    padded.extend_from_slice(&[0, 0]);
    constructed.extend(h2_frame(0x1, 0x28, 5, &padded));
    constructed.extend(h2_frame(0x9, 0x4, 5, &block[4..]));
    let mut resized = h2_block(&[(b's', 0, b"", false), (b's', 4096, b"", false)]);
    resized.extend(request(b"a b", false));
    constructed.extend(h2_frame(0x1, 0x4, 7, &resized));
    constructed.extend(h2_frame(
        0x1,
        0x4,
        9,
        &h2_block(&[(b'n', 23, b"secret", true)]),
    ));
    streams.push(constructed);
    let mut valid = PREFACE.to_vec();
    valid.extend(h2_frame(0x1, 0x4, 1, &request(b"127.0.0.1:2379", true)));
    valid.extend(h2_frame(0x0, 0x1, 1, &[7; 300]));
    streams.push(valid);
    streams.push(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n".to_vec());
    let mut seeds = Vec::new();
    for stream in streams {
        for (cut, read) in [(255, 255), (1, 1), (9, 2), (40, 100)] {
            let mut seed = vec![cut, read];
            seed.extend_from_slice(&stream);
            seeds.push(seed);
        }
    }
    seeds
}

// ---- gateway_json -------------------------------------------------------------------------

/// The JSON values of `data` as the gateway's stream reader finds them, pushed in `chunk`
/// byte pieces.
fn json_values(data: &[u8], chunk: usize) -> Vec<Vec<u8>> {
    use raftkv_server::json_stream::{JsonValues, Next};
    let mut values = JsonValues::new();
    let mut out = Vec::new();
    let mut take = |values: &mut JsonValues, ended: bool| {
        while let Next::Value(v) = values.next(ended) {
            out.push(v);
        }
    };
    for part in data.chunks(chunk.max(1)) {
        values.push(part);
        take(&mut values, false);
    }
    take(&mut values, true);
    out
}

/// Decodes `bytes` as a gateway request `M`; what decodes must encode and decode back to
/// itself.
fn json_round_trip<M>(bytes: &[u8])
where
    M: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let Ok(msg) = serde_json::from_slice::<M>(bytes) else {
        return;
    };
    let Ok(json) = serde_json::to_vec(&msg) else {
        return;
    };
    let again: M = serde_json::from_slice(&json).expect("the gateway's own JSON decodes again");
    assert_eq!(again, msg, "a JSON round trip changed the request");
}

fn gateway_json(data: &[u8]) {
    use raftkv_proto::etcdserverpb::{LeaseGrantRequest, LeaseKeepAliveRequest, WatchRequest};
    let [cut, body @ ..] = data else {
        return;
    };
    let whole = json_values(body, body.len());
    let chunked = json_values(body, usize::from(*cut));
    assert_eq!(whole, chunked, "the values depend on the chunking");
    for value in whole.iter().map(Vec::as_slice).chain([body]) {
        json_round_trip::<RangeRequest>(value);
        json_round_trip::<PutRequest>(value);
        json_round_trip::<TxnRequest>(value);
        json_round_trip::<WatchRequest>(value);
        json_round_trip::<LeaseGrantRequest>(value);
        json_round_trip::<LeaseKeepAliveRequest>(value);
        json_round_trip::<raftkv_proto::etcdserverpb::AuthenticateRequest>(value);
        json_round_trip::<raftkv_proto::etcdserverpb::AuthUserAddRequest>(value);
        json_round_trip::<raftkv_proto::etcdserverpb::AuthRoleGrantPermissionRequest>(value);
    }
}

fn gateway_json_seeds() -> Vec<Vec<u8>> {
    [
        &br#"{"key":"Zm9v","range_end":"Zm9w","limit":"10","revision":"3"}"#[..],
        br#"{"key":"Zm9v","value":"YmFy","lease":"7587862345167512324","prev_kv":true}"#,
        br#"{"compare":[{"target":"VALUE","key":"Zm9v","value":"YmFy"}],"success":[{"request_put":{"key":"Zm9v","value":"YmF6"}}],"failure":[{"request_txn":{"success":[{"request_range":{"key":"YQ=="}}]}}]}"#,
        br#" {"create_request":{"key":"YQ==","filters":["NOPUT"],"prev_kv":true}} {"progress_request":{}}
{"cancel_request":{"watch_id":"1"}}"#,
        br#"{"TTL":"30","ID":"5"}{"ID":5}"#,
        br#"{"name":"alice","password":"p\u00e9"}"#,
        br#"{"name":"bob","password":"x","options":{"no_password":true}}"#,
        br#"{"name":"r","perm":{"permType":"READWRITE","key":"YQ==","range_end":"AA=="}}"#,
        br#"[[[[{"a":"}\"]"}]]]]"#,
    ]
    .iter()
    .map(|json| {
        let mut seed = vec![3];
        seed.extend_from_slice(json);
        seed
    })
    .collect()
}

// ---- jwt_token, jwt_key -------------------------------------------------------------------

/// The instant the JWT targets check tokens at (fixed, so a run replays).
fn jwt_now() -> std::time::SystemTime {
    std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000)
}

/// A P-256 key made by ring, as PKCS#8 DER.
fn ec_pkcs8() -> &'static [u8] {
    use std::sync::OnceLock;
    static KEY: OnceLock<Vec<u8>> = OnceLock::new();
    KEY.get_or_init(|| {
        let rng = ring::rand::SystemRandom::new();
        ring::signature::EcdsaKeyPair::generate_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &rng,
        )
        .expect("ring makes a P-256 key")
        .as_ref()
        .to_vec()
    })
}

fn pem(label: &str, der: &[u8]) -> Vec<u8> {
    use base64::Engine;
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap_or_default())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
    .into_bytes()
}

/// An HS256 and an ES256 provider (keys in files read once), tokens valid for a year.
fn jwt_providers() -> &'static [std::sync::Arc<raftkv_server::jwt::Jwt>] {
    use raftkv_server::token_provider::TokenProvider;
    use std::sync::OnceLock;
    static PROVIDERS: OnceLock<Vec<std::sync::Arc<raftkv_server::jwt::Jwt>>> = OnceLock::new();
    PROVIDERS.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let hmac = dir.path().join("hmac.key");
        let ec = dir.path().join("ec.key");
        std::fs::write(&hmac, b"fuzz secret").expect("write key");
        std::fs::write(&ec, pem("PRIVATE KEY", ec_pkcs8())).expect("write key");
        [
            format!(
                "jwt,sign-method=HS256,priv-key={},ttl=8760h",
                hmac.display()
            ),
            format!("jwt,sign-method=ES256,priv-key={},ttl=8760h", ec.display()),
        ]
        .iter()
        .map(|option| match TokenProvider::from_option(option) {
            Ok(TokenProvider::Jwt(jwt)) => jwt,
            other => panic!("{option}: {other:?}"),
        })
        .collect()
    })
}

/// Any bytes as a token header: checked by each provider without a panic; one that is
/// accepted names its user and revision the same way twice, and only one provider (their
/// methods differ) takes it.
fn jwt_token(data: &[u8]) {
    let token = String::from_utf8_lossy(data);
    let mut accepted = 0;
    for jwt in jwt_providers() {
        if let Ok(claims) = jwt.info(&token, jwt_now()) {
            accepted += 1;
            assert_eq!(jwt.info(&token, jwt_now()), Ok(claims), "checked twice");
            assert_eq!(token.split('.').count(), 3);
        }
    }
    assert!(accepted <= 1, "a token of two methods");
}

fn jwt_token_seeds() -> Vec<Vec<u8>> {
    let mut seeds = Vec::new();
    for jwt in jwt_providers() {
        for (user, revision) in [("root", 1), ("alice", 42), ("<&>", u64::MAX)] {
            let token = jwt.assign(user, revision, jwt_now()).expect("sign");
            let (head, _) = token.rsplit_once('.').unwrap_or_default();
            seeds.push(format!("{head}.").into_bytes());
            seeds.push(format!("Bearer {token}").into_bytes());
            seeds.push(token.into_bytes());
        }
    }
    seeds.push(b"eyJhbGciOiJub25lIn0.eyJ1c2VybmFtZSI6InJvb3QiLCJyZXZpc2lvbiI6MX0.".to_vec());
    seeds.push(b"a.b.c".to_vec());
    seeds
}

/// The first byte picks the method and whether the rest is the private key, the public key
/// or both; loading must not panic, and a key that loads with a signer signs what it then
/// verifies.
fn jwt_key(data: &[u8]) {
    use raftkv_server::jwt::keys;
    use raftkv_server::jwt::method::{Lookup, lookup};
    let [pick, file @ ..] = data else {
        return;
    };
    let names = ["RS256", "PS384", "ES256", "ES384", "HS512"];
    let Lookup::Supported(method) = lookup(names[usize::from(pick % 5)]) else {
        unreachable!("the names are golang-jwt's")
    };
    let (public, private): (&[u8], &[u8]) = match pick / 5 % 3 {
        0 => (&[], file),
        1 => (file, &[]),
        _ => (file, file),
    };
    let Ok(loaded) = keys::load(&method, public, private) else {
        return;
    };
    if let Some(signer) = &loaded.signer {
        match signer.sign(&method, b"message") {
            Ok(signature) => assert!(
                loaded.verifier.verify(&method, b"message", &signature),
                "a key's own signature does not verify"
            ),
            Err(e) => assert_eq!(e, keys::INVALID_KEY, "signing failed otherwise"),
        }
    }
}

fn jwt_key_seeds() -> Vec<Vec<u8>> {
    use raftkv_server::jwt::der::{self, tag};
    let pkcs8 = ec_pkcs8();
    let pair = ring::signature::EcdsaKeyPair::from_pkcs8(
        &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        pkcs8,
        &ring::rand::SystemRandom::new(),
    )
    .expect("ring reads its own key");
    use ring::signature::KeyPair;
    let point = pair.public_key().as_ref();
    let ec_oid = [0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
    let p256 = [0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
    let mut bits = vec![0u8];
    bits.extend_from_slice(point);
    let spki = der::sequence(&[
        &der::sequence(&[
            &der::element(tag::OID, &ec_oid),
            &der::element(tag::OID, &p256),
        ]),
        &der::element(tag::BIT_STRING, &bits),
    ]);
    let mut seeds = Vec::new();
    for pick in [2u8, 7, 12] {
        for file in [
            pem("PRIVATE KEY", pkcs8),
            pem("PUBLIC KEY", &spki),
            pem("EC PRIVATE KEY", pkcs8),
            b"not a key".to_vec(),
        ] {
            let mut seed = vec![pick];
            seed.extend_from_slice(&file);
            seeds.push(seed);
        }
    }
    seeds.push([&[4u8][..], b"hmac secret"].concat());
    seeds
}

// ---- value_segment --------------------------------------------------------------------------

/// Value segments small enough that an input is one whole segment.
const VALUE_SEGMENT_BYTES: u64 = 1 << 12;

/// Input: a byte (0: the store recorded no durable frame; else one follows, as a pointer's
/// varints), then the bytes of the first value segment. Recovery opens it or refuses it; a
/// log that opened takes an append, syncs, reopens from it and reads it back; the segment's
/// bytes are also read as a pointer.
fn value_segment(data: &[u8]) {
    use raftkv_storage::values::{ValueLog, ValuePtr};
    let Some((&flag, rest)) = data.split_first() else {
        return;
    };
    let (durable, segment) = if flag == 0 {
        (None, rest)
    } else {
        let Some((ptr, segment)) = ValuePtr::decode(rest) else {
            return;
        };
        (Some(ValuePtr { seq: 1, ..ptr }), segment)
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("val-0000000000000001.seg");
    std::fs::write(&path, segment).expect("write segment");
    let Ok(log) = ValueLog::open(dir.path(), VALUE_SEGMENT_BYTES, durable) else {
        // A refusal changes nothing.
        assert_eq!(std::fs::read(&path).expect("segment"), segment);
        return;
    };
    if let Some(d) = durable {
        assert!(
            log.end() >= d.end(),
            "the log ends before its durable frame"
        );
    }
    if let Some((ptr, _)) = ValuePtr::decode(segment) {
        let _ = log.read(&ptr, b"k", 7);
    }
    let ptr = log
        .append(7, b"k", b"after recovery")
        .expect("an append after recovery");
    let synced = log.sync().expect("a sync");
    assert_eq!(synced, Some(ptr));
    // The walk that finds each frame's record (moving values out of a segment): bytes
    // before a durable frame were never walked by recovery and may be anything.
    let size = log.segment_size(ptr.seq).expect("the segment");
    let mut from = Some(0);
    let mut found = Vec::new();
    while let Some(at) = from {
        let (frames, next) = log.frames(ptr.seq, at, 3, 200).expect("a walk");
        assert!(frames.len() <= 3 && (next.is_none() || !frames.is_empty()));
        assert!(next.is_none_or(|n| n > at));
        found.extend(frames);
        from = next;
    }
    for (i, frame) in found.iter().enumerate() {
        assert!(frame.ptr.offset + frame.ptr.frame_len() <= size);
        assert_eq!(frame.key.len() as u64, u64::from(frame.ptr.key_len));
        assert!(i == 0 || found[i - 1].ptr.end().offset == frame.ptr.offset);
        let _ = log.read(&frame.ptr, &frame.key, frame.revision);
    }
    if durable.is_none() {
        // Recovery cut the segment at its first bad frame: the walk finds what it kept.
        let last = found.last().expect("the append at least");
        assert_eq!(
            (last.ptr, last.revision, &last.key[..]),
            (ptr, 7, &b"k"[..])
        );
    }
    drop(log);
    let again = ValueLog::open(dir.path(), VALUE_SEGMENT_BYTES, synced).expect("reopens");
    // At the append's end, or at the segment's if no frame fits after it.
    let (end, want) = (again.end(), ptr.end());
    assert!(end == want || (end.seq == want.seq && end.offset - want.offset < 20));
    assert_eq!(
        again.read(&ptr, b"k", 7).expect("reads back"),
        b"after recovery"
    );
    let next = again
        .append(8, b"k", b"next")
        .expect("an append after the reopen");
    assert_eq!(again.read(&next, b"k", 8).expect("reads back"), b"next");
}

fn value_segment_seeds() -> Vec<Vec<u8>> {
    use raftkv_storage::values::ValueLog;
    let dir = tempfile::tempdir().expect("temp dir");
    let durable = {
        let log = ValueLog::open(dir.path(), VALUE_SEGMENT_BYTES, None).expect("opens");
        log.append(2, b"k", b"a value").expect("append");
        log.append(3, b"key", &[0u8; 40]).expect("append");
        let durable = log.sync().expect("sync").expect("a durable frame");
        log.append(4, b"k", b"not yet synced").expect("append");
        durable
    };
    let segment = std::fs::read(dir.path().join("val-0000000000000001.seg")).expect("segment");
    let used = segment.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    let segment = &segment[..(used + 20).min(segment.len())];
    let mut without = vec![0u8];
    without.extend_from_slice(segment);
    let mut with = vec![1u8];
    durable.encode(&mut with);
    with.extend_from_slice(segment);
    vec![without, with]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The captured etcdctl streams reach the server with every `:authority` repaired, each
    /// header block decodable by a decoder that saw only the repaired stream.
    #[test]
    fn etcdctl_streams_are_repaired() {
        use raftkv_raft::h2_authority::{PREFACE, hpack, rewrite_chunks};
        for (name, stream) in ETCDCTL_STREAMS {
            let out = rewrite_chunks(&[stream], 1 << 16).expect("repaired");
            let mut rest = &out[PREFACE.len()..];
            let mut server = hpack::Decoder::new(hpack::DEFAULT_TABLE_SIZE);
            let mut fields = Vec::new();
            let mut requests = 0;
            while rest.len() >= 9 {
                let len =
                    usize::from(rest[0]) << 16 | usize::from(rest[1]) << 8 | usize::from(rest[2]);
                let (kind, flags) = (rest[3], rest[4]);
                let payload = &rest[9..9 + len];
                rest = &rest[9 + len..];
                if kind != 0x1 {
                    continue;
                }
                assert_eq!(
                    flags & 0x2c,
                    0x4,
                    "one frame per block here, no padding or priority"
                );
                server
                    .decode(payload, 1 << 16, &mut fields)
                    .expect("decodes");
                let authority = fields.iter().find(|f| &f.name[..] == b":authority");
                assert_eq!(
                    authority.map(|f| &f.value[..]),
                    Some(&b"127.0.0.1:12479"[..]),
                    "{name}: {fields:?}"
                );
                requests += 1;
            }
            assert!(rest.is_empty());
            assert!(requests >= 1);
        }
    }

    #[test]
    fn every_seed_runs_clean() {
        for target in targets() {
            for seed in (target.seeds)() {
                (target.run)(&seed);
            }
        }
    }
}
