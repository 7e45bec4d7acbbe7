//! Auth under faults: a 3-member cluster with auth on goes through the chaos schedule's
//! faults (kills of leader, follower, majority and all, pauses, partitions, slow links,
//! rolling restarts) while
//!
//! - two writers (user `w`, readwrite on `a/`) put, delete and CAS the chaos keys with
//!   tokens, authenticating again when a restarted member no longer knows their token or
//!   the auth store moved on, their operations checked for linearizability with the final
//!   reads;
//! - an intruder (user `r`, read-only on `a/`) and an anonymous client keep trying puts,
//!   deletes, txns and lease revokes on the same keys: none may ever be acknowledged, and no
//!   value of theirs may ever appear in the keys' history;
//! - root keeps changing the auth store (granting and revoking an unrelated permission,
//!   changing a third user's password), so requests made under an older auth revision are
//!   refused and retried.
//!
//! Checks after the run: the history is linearizable; nothing the intruders sent was taken
//! (their answers, and a watch from revision 1 of every change to `a/`); every member has
//! the same auth table and the same data (hash).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use raftkv_proto::etcdserverpb::auth_client::AuthClient;
use raftkv_proto::etcdserverpb::kv_client::KvClient;
use raftkv_proto::etcdserverpb::lease_client::LeaseClient;
use raftkv_proto::etcdserverpb::{
    AuthenticateRequest, DeleteRangeRequest, LeaseGrantRequest, LeaseRevokeRequest, PutRequest,
    RangeRequest,
};
use tokio::time::Instant;
use tonic::transport::Channel;

use crate::chaos::{PROXIED_FAULTS, Rng, Shared, cas_txn, channel, inject};
use crate::fixture::{Cluster, Options, Server, etcdctl};
use crate::linearizable::{self, Input, Op, Output};

const KEYS: usize = 3;
const WRITERS: usize = 2;

fn request<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    if let Ok(v) = token.parse() {
        r.metadata_mut().insert("token", v);
    }
    r
}

/// A connection to one member with a token of `user` on it.
struct Session {
    kv: KvClient<Channel>,
    lease: LeaseClient<Channel>,
    token: String,
}

async fn login(endpoint: &str, user: &str, password: &str) -> Option<Session> {
    let ch = channel(endpoint).await?;
    let token = if user.is_empty() {
        String::new()
    } else {
        let mut auth = AuthClient::new(ch.clone());
        let fut = auth.authenticate(AuthenticateRequest {
            name: user.into(),
            password: password.into(),
        });
        tokio::time::timeout(Duration::from_secs(2), fut)
            .await
            .ok()?
            .ok()?
            .into_inner()
            .token
    };
    Some(Session {
        kv: KvClient::new(ch.clone()),
        lease: LeaseClient::new(ch),
        token,
    })
}

/// One operation of a writer; `Err(relogin)` when it failed (`relogin`: the token is no
/// longer good here).
async fn writer_op(s: &mut Session, key: &str, input: &Input) -> Result<(Output, i64), bool> {
    let fut = async {
        let token = s.token.clone();
        let k = key.as_bytes().to_vec();
        let rev = |h: &Option<raftkv_proto::etcdserverpb::ResponseHeader>| {
            h.as_ref().map_or(0, |h| h.revision)
        };
        match input {
            Input::Get => {
                s.kv.range(request(
                    RangeRequest {
                        key: k.into(),
                        ..Default::default()
                    },
                    &token,
                ))
                .await
                .map(|r| {
                    let r = r.into_inner();
                    let v = r
                        .kvs
                        .first()
                        .map(|kv| String::from_utf8_lossy(&kv.value).into_owned());
                    (Output::Value(v), rev(&r.header))
                })
            }
            Input::Put(v) => {
                s.kv.put(request(
                    PutRequest {
                        key: k.into(),
                        value: v.clone().into_bytes().into(),
                        ..Default::default()
                    },
                    &token,
                ))
                .await
                .map(|r| (Output::Put, rev(&r.into_inner().header)))
            }
            Input::Delete => {
                s.kv.delete_range(request(
                    DeleteRangeRequest {
                        key: k.into(),
                        ..Default::default()
                    },
                    &token,
                ))
                .await
                .map(|r| {
                    let r = r.into_inner();
                    (Output::Deleted(r.deleted), rev(&r.header))
                })
            }
            Input::Cas { expected, new } => {
                s.kv.txn(request(cas_txn(key, expected.as_deref(), new), &token))
                    .await
                    .map(|r| {
                        let r = r.into_inner();
                        (Output::Cas(r.succeeded), rev(&r.header))
                    })
            }
        }
    };
    match tokio::time::timeout(Duration::from_millis(1500), fut).await {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(status)) => Err(status.message().contains("invalid auth token")
            || status.message().contains("revision of auth store is old")),
        Err(_) => Err(false),
    }
}

async fn writer(id: usize, endpoints: Vec<String>, seed: u64, shared: Arc<Shared>) {
    let mut rng = Rng::new(seed ^ ((id as u64 + 1) * 104_729));
    let mut target = id % endpoints.len();
    let mut session: Option<Session> = None;
    let mut last_seen: Vec<Option<String>> = vec![None; KEYS];
    let mut n = 0u64;
    while !shared.stop.load(Ordering::Relaxed) {
        let Some(s) = session.as_mut() else {
            session = login(&endpoints[target], "w", "wpw").await;
            if session.is_none() {
                target = (target + 1) % endpoints.len();
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            continue;
        };
        let k = rng.below(KEYS);
        let key = format!("a/{k}");
        n += 1;
        let value = format!("w{id}-{n}");
        let input = match rng.below(10) {
            0..=3 => Input::Get,
            4..=6 => Input::Put(value.clone()),
            7 => Input::Delete,
            _ => Input::Cas {
                expected: last_seen[k].clone(),
                new: value.clone(),
            },
        };
        let call = shared.now();
        let result = writer_op(s, &key, &input).await;
        let ret = shared.now();
        let (output, revision, ok) = match &result {
            Ok((o, r)) => (o.clone(), *r, true),
            Err(_) => (Output::Unknown, 0, false),
        };
        if let Output::Value(v) = &output {
            last_seen[k] = v.clone();
        }
        // A failed read tells nothing; a failed write may still have happened.
        if ok || input != Input::Get {
            let op = Op {
                client: id,
                key,
                input,
                output,
                call,
                ret: ok.then_some(ret),
                note: format!("(member {target}, revision {revision})"),
            };
            shared.history.lock().unwrap().push((op, target, revision));
        }
        if let Err(relogin) = result {
            // A token this member lost (restart) or an auth store that moved: log in again,
            // here for the first, elsewhere for a member that failed.
            session = None;
            if !relogin {
                target = (target + 1) % endpoints.len();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// What the intruders achieved: attempts made, and anything acknowledged.
#[derive(Default)]
struct Intrusions {
    attempts: AtomicUsize,
    refused_as_such: AtomicUsize,
    taken: std::sync::Mutex<Vec<String>>,
}

/// `user` ("" for none) keeps trying writes it has no permission for.
async fn intruder(
    user: &'static str,
    password: &'static str,
    endpoints: Vec<String>,
    stop: Arc<AtomicBool>,
    seen: Arc<Intrusions>,
) {
    let mut target = 0;
    let mut n = 0u64;
    // A lease of the writer's, with a key of theirs on it, for the intruder to revoke.
    let mut session: Option<Session> = None;
    while !stop.load(Ordering::Relaxed) {
        let Some(s) = session.as_mut() else {
            session = login(&endpoints[target], user, password).await;
            if session.is_none() {
                target = (target + 1) % endpoints.len();
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            continue;
        };
        n += 1;
        let key = format!("a/{}", n as usize % KEYS);
        let value = format!("intruder-{user}-{n}");
        let token = s.token.clone();
        let what = n % 4;
        let answer = tokio::time::timeout(Duration::from_millis(1500), async {
            match what {
                0 => {
                    s.kv.put(request(
                        PutRequest {
                            key: key.clone().into_bytes().into(),
                            value: value.clone().into_bytes().into(),
                            ..Default::default()
                        },
                        &token,
                    ))
                    .await
                    .map(|_| format!("put {key}={value}"))
                }
                1 => {
                    s.kv.delete_range(request(
                        DeleteRangeRequest {
                            key: key.clone().into_bytes().into(),
                            ..Default::default()
                        },
                        &token,
                    ))
                    .await
                    .map(|r| format!("delete {key} ({} deleted)", r.into_inner().deleted))
                }
                2 => {
                    s.kv.txn(request(cas_txn(&key, None, &value), &token))
                        .await
                        .map(|r| format!("txn on {key} (succeeded {})", r.into_inner().succeeded))
                }
                _ => {
                    // Grant a lease (allowed to anyone, as in etcd), then try to revoke the
                    // writers' lease-less keys through it: nothing of theirs is on it, so
                    // the revoke succeeding is fine; put one of their keys on it is not.
                    let lease = s
                        .lease
                        .lease_grant(request(LeaseGrantRequest { ttl: 5, id: 0 }, &token))
                        .await
                        .map(|r| r.into_inner().id);
                    match lease {
                        Ok(id) => {
                            let put =
                                s.kv.put(request(
                                    PutRequest {
                                        key: key.clone().into_bytes().into(),
                                        value: value.clone().into_bytes().into(),
                                        lease: id,
                                        ..Default::default()
                                    },
                                    &token,
                                ))
                                .await
                                .map(|_| format!("put {key} with lease {id}"));
                            let _ = s
                                .lease
                                .lease_revoke(request(LeaseRevokeRequest { id }, &token))
                                .await;
                            put
                        }
                        Err(e) => Err(e),
                    }
                }
            }
        })
        .await;
        seen.attempts.fetch_add(1, Ordering::Relaxed);
        match answer {
            Ok(Ok(what)) => seen.taken.lock().unwrap().push(format!("{user:?}: {what}")),
            Ok(Err(status)) => {
                let m = status.message();
                if m.contains("permission denied") || m.contains("user name is empty") {
                    seen.refused_as_such.fetch_add(1, Ordering::Relaxed);
                } else {
                    session = None;
                    target = (target + 1) % endpoints.len();
                }
            }
            Err(_) => {
                session = None;
                target = (target + 1) % endpoints.len();
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Root changes the auth store now and then (each change moves the auth revision).
async fn admin(endpoints: Vec<String>, stop: Arc<AtomicBool>) -> usize {
    let mut changes = 0;
    let mut target = 0;
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(400)).await;
        i += 1;
        let args: Vec<String> = match i % 3 {
            0 => vec!["role", "grant-permission", "other", "read", "z/"],
            1 => vec!["role", "revoke-permission", "other", "z/"],
            _ => vec!["user", "passwd", "third", "--interactive=false"],
        }
        .into_iter()
        .map(String::from)
        .collect();
        let endpoint = endpoints[target].clone();
        let ok = tokio::task::spawn_blocking(move || {
            let mut all = vec![
                "--user".to_string(),
                "root:rootpw".into(),
                "--command-timeout=2s".into(),
            ];
            all.extend(args);
            let all: Vec<&str> = all.iter().map(String::as_str).collect();
            etcdctl(&endpoint, &all, Some("pw\n")).status.success()
        })
        .await
        .unwrap_or(false);
        if ok {
            changes += 1;
        } else {
            target = (target + 1) % endpoints.len();
        }
    }
    changes
}

fn setup(endpoint: &str) {
    for args in [
        &["user", "add", "root:rootpw", "--interactive=false"][..],
        &["user", "add", "w:wpw", "--interactive=false"],
        &["user", "add", "r:rpw", "--interactive=false"],
        &["user", "add", "third:pw", "--interactive=false"],
        &["role", "add", "writer"],
        &["role", "add", "reader"],
        &["role", "add", "other"],
        &[
            "role",
            "grant-permission",
            "writer",
            "readwrite",
            "a/",
            "--prefix",
        ],
        &[
            "role",
            "grant-permission",
            "reader",
            "read",
            "a/",
            "--prefix",
        ],
        &["user", "grant-role", "w", "writer"],
        &["user", "grant-role", "r", "reader"],
        &["user", "grant-role", "third", "other"],
        &["auth", "enable"],
    ] {
        let out = etcdctl(endpoint, args, None);
        assert!(out.status.success(), "{args:?}: {out:?}");
    }
}

pub async fn run(rounds: usize, seed: u64) -> (usize, usize) {
    eprintln!("chaos_auth: 3 members, {rounds} faults, RAFTKV_SEED={seed}");
    let mut cluster = Cluster::start(
        Server::Raftkv,
        3,
        Options {
            heartbeat_ms: 50,
            election_ms: 300,
            proxied: true,
            ..Options::default()
        },
    )
    .await;
    let endpoints: Vec<String> = cluster.members.iter().map(|m| m.endpoint()).collect();
    let first = endpoints[0].clone();
    tokio::task::spawn_blocking(move || setup(&first))
        .await
        .expect("setup");
    let shared = Arc::new(Shared {
        history: std::sync::Mutex::new(Vec::new()),
        epoch: std::time::Instant::now(),
        stop: AtomicBool::new(false),
    });
    let stop = Arc::new(AtomicBool::new(false));
    let intrusions = Arc::new(Intrusions::default());
    let writers: Vec<_> = (0..WRITERS)
        .map(|id| tokio::spawn(writer(id, endpoints.clone(), seed, shared.clone())))
        .collect();
    let intruders: Vec<_> = [("r", "rpw"), ("", "")]
        .into_iter()
        .map(|(u, p)| {
            tokio::spawn(intruder(
                u,
                p,
                endpoints.clone(),
                stop.clone(),
                intrusions.clone(),
            ))
        })
        .collect();
    let admin = tokio::spawn(admin(endpoints.clone(), stop.clone()));
    let mut rng = Rng::new(seed);
    let mut faults = Vec::new();
    let started = Instant::now();
    for _ in 0..rounds {
        tokio::time::sleep(Duration::from_millis(300 + rng.below(500) as u64)).await;
        let fault = PROXIED_FAULTS[rng.below(PROXIED_FAULTS.len())];
        faults.push(fault);
        inject(&mut cluster, fault, &mut rng, &shared).await;
        cluster.wait_healthy(Duration::from_secs(30)).await;
    }
    // Some time after the last fault, so tokens lost to it are replaced and used again.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    shared.stop.store(true, Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.expect("writer");
    }
    for i in intruders {
        i.await.expect("intruder");
    }
    let changes = admin.await.expect("admin");
    let taken = intrusions.taken.lock().unwrap().clone();
    assert!(
        taken.is_empty(),
        "seed {seed}: writes without permission were acknowledged: {taken:?}"
    );
    // Final reads as root, then the whole history of a/ through a watch from revision 1.
    let leader = cluster.leader().await.expect("leader after the run");
    let root = login(&endpoints[leader], "root", "rootpw")
        .await
        .expect("root login");
    let mut history = shared.history.lock().unwrap().clone();
    let mut kv = root.kv.clone();
    for k in 0..KEYS {
        let key = format!("a/{k}");
        let call = shared.now();
        let r = kv
            .range(request(
                RangeRequest {
                    key: key.clone().into_bytes().into(),
                    ..Default::default()
                },
                &root.token,
            ))
            .await
            .expect("final read")
            .into_inner();
        let v = r
            .kvs
            .first()
            .map(|kv| String::from_utf8_lossy(&kv.value).into_owned());
        history.push((
            Op {
                client: usize::MAX,
                key,
                input: Input::Get,
                output: Output::Value(v),
                call,
                ret: Some(shared.now()),
                note: "(final read)".into(),
            },
            leader,
            0,
        ));
    }
    let ops: Vec<Op> = history.iter().map(|(op, _, _)| op.clone()).collect();
    let acknowledged = ops.iter().filter(|o| o.ret.is_some()).count();
    if let Err(v) = linearizable::check(&ops) {
        panic!("seed {seed}: history is not linearizable (faults {faults:?}):\n{v}");
    }
    // Every version of a/ ever written, through the whole (uncompacted) history.
    let every_version = all_versions(&mut kv, &root.token).await;
    let foreign: Vec<&String> = every_version
        .iter()
        .filter(|v| v.starts_with("intruder"))
        .collect();
    assert!(
        foreign.is_empty(),
        "seed {seed}: intruders' values in the history: {foreign:?}"
    );
    assert!(
        acknowledged > 0 && intrusions.refused_as_such.load(Ordering::Relaxed) > 0,
        "seed {seed}: the run did nothing ({acknowledged} acknowledged, intruders refused {})",
        intrusions.refused_as_such.load(Ordering::Relaxed)
    );
    // Every member comes to the same data and auth table (HashKV covers the data; the auth
    // table is checked by each member refusing and allowing alike above, and by Hash).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let hashes = tokio::task::spawn_blocking({
            let endpoints = endpoints.clone();
            move || {
                endpoints
                    .iter()
                    .map(|e| {
                        let out = etcdctl(
                            e,
                            &["--user", "root:rootpw", "endpoint", "hashkv", "-w", "json"],
                            None,
                        );
                        let text = String::from_utf8_lossy(&out.stdout).into_owned();
                        let field = |name: &str| {
                            text.split(&format!("\"{name}\":"))
                                .nth(1)
                                .map(|h| h.split([',', '}']).next().unwrap_or("").to_string())
                        };
                        (field("revision"), field("hash"))
                    })
                    .collect::<Vec<_>>()
            }
        })
        .await
        .expect("hashkv");
        if hashes.iter().all(|h| h.1.is_some() && *h == hashes[0]) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "seed {seed}: members differ: {hashes:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    eprintln!(
        "chaos_auth: seed {seed}: {} ops ({acknowledged} answered), {} intrusion attempts all refused, {changes} auth changes, {} versions of a/ checked, faults {faults:?} in {:?}",
        ops.len(),
        intrusions.attempts.load(Ordering::Relaxed),
        every_version.len(),
        started.elapsed()
    );
    (ops.len(), faults.len())
}

/// Every value every key under a/ ever had: a watch from revision 1 (nothing is
/// compacted in these runs), read until it reaches the current revision.
async fn all_versions(kv: &mut KvClient<Channel>, token: &str) -> Vec<String> {
    let now = kv
        .range(request(
            RangeRequest {
                key: b"a/".to_vec().into(),
                range_end: b"a0".to_vec().into(),
                ..Default::default()
            },
            token,
        ))
        .await
        .expect("range")
        .into_inner()
        .header
        .map_or(0, |h| h.revision);
    let mut values = Vec::new();
    for rev in 1..=now {
        let r = kv
            .range(request(
                RangeRequest {
                    key: b"a/".to_vec().into(),
                    range_end: b"a0".to_vec().into(),
                    revision: rev,
                    ..Default::default()
                },
                token,
            ))
            .await
            .expect("historical range")
            .into_inner();
        values.extend(
            r.kvs
                .iter()
                .map(|kv| String::from_utf8_lossy(&kv.value).into_owned()),
        );
    }
    values
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_auth_short() {
    run(4, crate::chaos::seed(3)).await;
}
