//! Auto compaction under faults: a 3-member cluster compacts on its own all through a
//! seeded schedule of kills, pauses, partitions and slow links while the chaos clients run
//! (`chaos::client`). Even seeds run `--auto-compaction-mode=periodic` with a retention of
//! one second; odd seeds `--auto-compaction-mode=revision` keeping 50 revisions, looking
//! every half second (a hidden flag; etcd's is fixed at five minutes).
//!
//! What it checks, beside the chaos run's own linearizability and minority checks:
//!
//! - **Nothing inside the retention is compacted.** A prober reads acknowledged puts at
//!   their own revision on any member while the faults run. Periodic: a put called at time
//!   `c` gets a revision above any revision a member had applied before `c`, and the
//!   compactor compacts only at a revision it sampled at least a retention earlier, so until
//!   `c` plus a retention a read at that revision must answer, and with the put's value.
//!   Revision: the leader compacts at its revision minus the retention, and a linearizable
//!   read after a refusal sees at least that revision, so a refused revision must lie more
//!   than the retention below what that read sees.
//! - **It keeps compacting through the faults** (leader changes, restarts, snapshots):
//!   several compactions complete, and once the writers stop the leader compacts up to the
//!   last revision (minus the retention, in revision mode).
//! - **Every member ends with the same compaction point and the same history after it**
//!   (HashKV at the last revision: equal hash and compact revision), so a compaction reaches
//!   members through the log, snapshots and restarts alike.
//! - Every acknowledged put at or above that point still reads back; below it, a read is
//!   refused as compacted.
//! - **The value log gives space back through it all.** Members run with 4 KiB value
//!   segments, so the run fills many; compaction leaves them dead or mostly dead, and each
//!   snapshot moves the live values out of mostly dead ones and removes the dead (some must
//!   be moved and some removed; the checks above hold over the moved values).
//! - **Watchers miss nothing silently.** One watcher per member follows the chaos keys from
//!   the first revision, resuming after every break; a resume the server answers with a
//!   compaction (canceled, with its compact revision) is where it may skip revisions, and it
//!   goes on from the compact revision. Each stream is ordered, without duplicates, atomic per
//!   revision, its prev_kvs right wherever it saw the key's previous change; every
//!   acknowledged put is in it at its revision with its value, or inside an announced gap.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use raftkv_proto::etcdserverpb::kv_client::KvClient;
use raftkv_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use raftkv_proto::etcdserverpb::{HashKvRequest, RangeRequest};

use crate::chaos::{
    CLIENTS, PROXIED_FAULTS, Rng, Shared, channel, check_minorities, client, final_reads, inject,
    running,
};
use crate::chaos_watch::{Compaction, Watchers, check_stream, write_sentinel};
use crate::fixture::{Cluster, Options, Server};
use crate::linearizable::{self, Input, Op};

const RETENTION: Duration = Duration::from_secs(1);
/// The revision mode's retention, and how often it looks.
const REVISIONS: i64 = 50;
const REVISION_INTERVAL: Duration = Duration::from_millis(500);

/// Which of etcd's two schedules a run uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Periodic,
    Revision,
}
/// Slack for the instant between a member's start and its first sample.
const SLACK: Duration = Duration::from_millis(10);
const COMPACTED: &str = "required revision has been compacted";

/// What the prober saw.
#[derive(Default)]
struct Probed {
    /// Reads answered with the put's value.
    read: usize,
    violations: Vec<String>,
}

/// Reads acknowledged puts inside the retention at their own revision, on the members in
/// turn, until the run stops.
async fn probe(endpoints: Vec<String>, seed: u64, shared: Arc<Shared>, mode: Mode) -> Probed {
    let mut rng = Rng::new(seed ^ 0xc0ac);
    let mut probed = Probed::default();
    let retention = RETENTION.as_nanos() as u64;
    while !shared.stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(30)).await;
        let now = shared.now();
        let candidates: Vec<(Op, i64)> = {
            let history = shared.history.lock().unwrap();
            let newest = history.iter().map(|(_, _, rev)| *rev).max().unwrap_or(0);
            // Periodic: puts between a third of a retention and nearly a retention old, those a
            // compactor that kept too short a window would remove first. Revision: puts within
            // the retention of the newest acknowledged revision. (Only those are cloned.)
            history
                .iter()
                .filter(|(op, _, rev)| {
                    let age = now.saturating_sub(op.call);
                    matches!(op.input, Input::Put(_))
                        && op.ret.is_some()
                        && *rev > 0
                        && match mode {
                            Mode::Periodic => {
                                age >= retention / 3 && age < retention - retention / 10
                            }
                            Mode::Revision => *rev >= newest - REVISIONS,
                        }
                })
                .map(|(op, _, rev)| (op.clone(), *rev))
                .collect()
        };
        if candidates.is_empty() {
            continue;
        }
        let (op, rev) = &candidates[rng.below(candidates.len())];
        let member = rng.below(endpoints.len());
        let Some(c) = channel(&endpoints[member]).await else {
            continue;
        };
        let mut kv = KvClient::new(c);
        let answer = kv
            .range(RangeRequest {
                key: op.key.clone().into_bytes().into(),
                revision: *rev,
                serializable: true,
                ..Default::default()
            })
            .await;
        let age = Duration::from_nanos(shared.now().saturating_sub(op.call));
        let Input::Put(value) = &op.input else {
            continue;
        };
        match answer {
            Ok(r) => {
                let got = r
                    .into_inner()
                    .kvs
                    .first()
                    .map(|kv| (kv.value.to_vec(), kv.mod_revision));
                if got != Some((value.clone().into_bytes(), *rev)) {
                    probed.violations.push(format!(
                        "member {member} read {op:?} at revision {rev} as {got:?}"
                    ));
                }
                probed.read += 1;
            }
            Err(s) if s.message().contains(COMPACTED) => match mode {
                // (The answer may come after a retention, if the member was paused.)
                Mode::Periodic if age + SLACK < RETENTION => probed.violations.push(format!(
                    "member {member} had compacted revision {rev} of {op:?} {age:?} after the put was sent"
                )),
                Mode::Periodic => {}
                Mode::Revision => {
                    // At least the revision the leader compacted from.
                    let Ok(now) = kv
                        .range(RangeRequest {
                            key: op.key.clone().into_bytes().into(),
                            ..Default::default()
                        })
                        .await
                    else {
                        continue;
                    };
                    let seen = now.into_inner().header.map_or(0, |h| h.revision);
                    if *rev >= seen - REVISIONS {
                        probed.violations.push(format!(
                            "member {member} had compacted revision {rev} of {op:?}, within {REVISIONS} revisions of {seen}"
                        ));
                    }
                }
            },
            // A member behind the revision, down, paused or cut off: nothing to learn.
            Err(_) => {}
        }
    }
    probed
}

/// The watchers' streams after the run (see the module's doc); a summary line.
async fn check_watchers(
    kv: &mut KvClient<tonic::transport::Channel>,
    watchers: Watchers,
    history: &[(Op, usize, i64)],
    seed: u64,
) -> String {
    let last = write_sentinel(kv).await;
    let logs = watchers.finish(last, Duration::from_secs(30)).await;
    // Every value is written once ("c<client>-<n>"): where each acknowledged put landed.
    let acknowledged: std::collections::HashMap<&str, (&str, i64)> = history
        .iter()
        .filter_map(|(op, _, rev)| match (&op.input, op.ret) {
            (Input::Put(v), Some(_)) => Some((v.as_str(), (op.key.as_str(), *rev))),
            _ => None,
        })
        .collect();
    let (mut events, mut gaps, mut skipped) = (0, 0, 0);
    for (i, log) in logs.iter().enumerate() {
        let name = format!("watcher on member {i}");
        if let Err(e) = check_stream(&name, log, &[]) {
            panic!("seed {seed}: {e}");
        }
        let seen = log.events();
        assert!(
            seen.last().is_some_and(|e| e.0 == last),
            "seed {seed}: {name} never reached the sentinel at {last} (last event {:?})",
            seen.last()
        );
        for (rev, kind, key, value, _) in &seen {
            if let (0, Some(&(put_key, put_rev))) = (*kind, acknowledged.get(value.as_str())) {
                assert!(
                    (put_key, put_rev) == (key.as_str(), *rev),
                    "seed {seed}: {name} has {value:?} at {key} {rev}; it was acknowledged at {put_key} {put_rev}"
                );
            }
        }
        let in_stream: std::collections::HashSet<(i64, &str, &str)> = seen
            .iter()
            .filter(|e| e.1 == 0)
            .map(|e| (e.0, e.2.as_str(), e.3.as_str()))
            .collect();
        for (value, &(key, rev)) in &acknowledged {
            if in_stream.contains(&(rev, key, *value)) {
                continue;
            }
            assert!(
                log.skipped_over(rev),
                "seed {seed}: {name} lacks the acknowledged put of {value:?} at {key} {rev}, and no compaction was announced over it (gaps {:?})",
                log.skipped
            );
            skipped += 1;
        }
        events += seen.len();
        gaps += log.skipped.len();
    }
    format!(
        "{} watchers: {events} events, {gaps} compacted resumes, {skipped} acknowledged puts inside announced gaps",
        logs.len()
    )
}

/// Waits until every running member has compacted up to the last revision (less the
/// retention, in revision mode) and reports the same revision, compact revision and HashKV
/// hash; returns the compact revision.
async fn converge_compacted(cluster: &Cluster, seed: u64, mode: Mode) -> i64 {
    let kept = match mode {
        Mode::Periodic => 0,
        Mode::Revision => REVISIONS,
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut seen = Vec::new();
        for i in running(cluster) {
            let Some(c) = channel(&cluster.members[i].endpoint()).await else {
                break;
            };
            let Ok(r) = MaintenanceClient::new(c)
                .hash_kv(HashKvRequest { revision: 0 })
                .await
            else {
                break;
            };
            let r = r.into_inner();
            seen.push((
                r.header.map_or(0, |h| h.revision),
                r.compact_revision,
                r.hash,
            ));
        }
        if seen.len() == running(cluster).len()
            && seen.windows(2).all(|w| w[0] == w[1])
            && seen[0].0 - kept == seen[0].1
        {
            return seen[0].1;
        }
        assert!(
            Instant::now() < deadline,
            "seed {seed}: members did not all compact up to {kept} below one last revision with one history (revision, compact revision, hash): {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until every running member's compactor has removed what the compaction at
/// `last` (or a later one) dropped, and all hold the same versions (bytes in use, counted
/// afresh by a member that restarted); returns the versions removed since each member
/// last started, summed. Compaction's deletes run after its apply, on each member's own
/// thread, through the kills, pauses and snapshot installs of the run.
async fn converge_removed(cluster: &Cluster, seed: u64, last: i64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let eps: Vec<String> = running(cluster)
            .into_iter()
            .map(|i| cluster.members[i].endpoint())
            .collect();
        let seen = tokio::task::spawn_blocking(move || {
            eps.iter()
                .map(|e| {
                    let s = crate::metrics::scrape(e);
                    (
                        s.value("etcd_debugging_mvcc_compact_revision", &[]),
                        s.value("raftkv_mvcc_compaction_finished_revision", &[]),
                        s.value("etcd_mvcc_db_total_size_in_use_in_bytes", &[]),
                        s.value("etcd_debugging_mvcc_db_compaction_keys_total", &[]),
                    )
                })
                .collect::<Vec<_>>()
        })
        .await
        .expect("scrapes");
        let done = seen
            .iter()
            .all(|&(compacted, finished, _, _)| compacted >= last as f64 && finished == compacted);
        if done && seen.windows(2).all(|w| w[0].2 == w[1].2) {
            return seen.iter().map(|s| s.3).sum();
        }
        assert!(
            Instant::now() < deadline,
            "seed {seed}: compactors did not all finish, or members hold different versions after (compact revision, finished revision, bytes in use, versions removed): {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// One seeded schedule of `rounds` faults (also run by `chaos_soak`).
pub(crate) async fn run(seed: u64, rounds: usize) -> (usize, usize) {
    let mode = if seed.is_multiple_of(2) {
        Mode::Periodic
    } else {
        Mode::Revision
    };
    eprintln!("chaos compaction: 3 members, {rounds} faults, {mode:?}, RAFTKV_SEED={seed}");
    let mut flags = match mode {
        Mode::Periodic => vec![
            "--auto-compaction-mode=periodic".to_string(),
            format!("--auto-compaction-retention={}ms", RETENTION.as_millis()),
        ],
        Mode::Revision => vec![
            "--auto-compaction-mode=revision".to_string(),
            format!("--auto-compaction-retention={REVISIONS}"),
            format!(
                "--raftkv-auto-compaction-revision-interval={}ms",
                REVISION_INTERVAL.as_millis()
            ),
        ],
    };
    // Small value segments: the run fills many, compaction leaves most of them mostly
    // dead, and every snapshot (each 100 entries) moves their live values out and removes
    // them, all through the faults.
    flags.push("--raftkv-value-segment-bytes=4096".to_string());
    let mut cluster = Cluster::start(
        Server::Raftkv,
        3,
        Options {
            heartbeat_ms: 50,
            election_ms: 300,
            snapshot_count: Some(100),
            proxied: true,
            extra_args: flags,
            ..Options::default()
        },
    )
    .await;
    let endpoints: Vec<String> = cluster.members.iter().map(|m| m.endpoint()).collect();
    let shared = Arc::new(Shared {
        history: std::sync::Mutex::new(Vec::new()),
        epoch: Instant::now(),
        stop: std::sync::atomic::AtomicBool::new(false),
    });
    let clients: Vec<_> = (0..CLIENTS)
        .map(|id| tokio::spawn(client(id, endpoints.clone(), seed, shared.clone(), false)))
        .collect();
    let prober = tokio::spawn(probe(endpoints.clone(), seed, shared.clone(), mode));
    let watchers = Watchers::start_with(&endpoints, Compaction::Expected);
    let mut rng = Rng::new(seed);
    let (mut windows, mut faults) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        tokio::time::sleep(Duration::from_millis(300 + rng.below(500) as u64)).await;
        let fault = PROXIED_FAULTS[rng.below(PROXIED_FAULTS.len())];
        faults.push(fault);
        windows.extend(inject(&mut cluster, fault, &mut rng, &shared).await);
        cluster.wait_healthy(Duration::from_secs(30)).await;
    }
    // Past a retention after the last fault, so that the healed leader compacts again.
    tokio::time::sleep(RETENTION * 2).await;
    shared.stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.expect("client task");
    }
    let probed = prober.await.expect("prober task");
    let (mut kv, history) = final_reads(&cluster, &shared).await;
    let ops: Vec<Op> = history.iter().map(|(op, _, _)| op.clone()).collect();
    if let Err(v) = linearizable::check(&ops) {
        panic!("seed {seed}: history is not linearizable (faults {faults:?}):\n{v}");
    }
    check_minorities(&history, &windows, seed);
    assert!(
        probed.violations.is_empty(),
        "seed {seed}: compacted too early or read wrong (faults {faults:?}):\n{}",
        probed.violations.join("\n")
    );
    let watched = check_watchers(&mut kv, watchers, &history, seed).await;
    let last = converge_compacted(&cluster, seed, mode).await;
    let compacted_keys = converge_removed(&cluster, seed, last).await;
    // Every acknowledged put at or above the compaction point reads back; below it the
    // read is refused as compacted.
    let mut wrong = Vec::new();
    for (op, target, rev) in &history {
        let (Input::Put(value), Some(_)) = (&op.input, op.ret) else {
            continue;
        };
        let answer = kv
            .range(RangeRequest {
                key: op.key.clone().into_bytes().into(),
                revision: *rev,
                ..Default::default()
            })
            .await;
        match answer {
            Ok(r) if *rev >= last => {
                let got = r.into_inner().kvs.first().map(|kv| kv.value.to_vec());
                if got.as_deref() != Some(value.as_bytes()) {
                    wrong.push(format!(
                        "{op:?} (member {target}, revision {rev}) reads {got:?}"
                    ));
                }
            }
            Err(s) if *rev < last && s.message().contains(COMPACTED) => {}
            other => wrong.push(format!(
                "{op:?} (member {target}, revision {rev}, compacted at {last}): {other:?}"
            )),
        }
    }
    assert!(
        wrong.is_empty(),
        "seed {seed}: reads at acknowledged revisions after the run:\n{}",
        wrong.join("\n")
    );
    let (moved, removed) = {
        let eps: Vec<String> = cluster.members.iter().map(|m| m.endpoint()).collect();
        tokio::task::spawn_blocking(move || {
            let scrapes: Vec<_> = eps.iter().map(|e| crate::metrics::scrape(e)).collect();
            let sum = |name| scrapes.iter().map(|s| s.value(name, &[])).sum::<f64>();
            (
                sum("raftkv_value_log_values_moved_total"),
                sum("raftkv_value_log_segments_removed_total"),
            )
        })
        .await
        .expect("scrapes")
    };
    let completed: usize = cluster
        .members
        .iter()
        .map(|m| m.log_text().matches("completed auto compaction").count())
        .sum();
    eprintln!(
        "chaos compaction: seed {seed}: {mode:?}, {} ops, faults {faults:?}, {completed} auto compactions completed, last at revision {last}; {} puts inside the retention read back; {watched}; value segments removed {removed}, values moved out of them {moved}, versions removed by compactors {compacted_keys}",
        ops.len(),
        probed.read
    );
    // A run of several seconds with a one-second retention compacts again and again.
    assert!(
        completed >= 3,
        "seed {seed}: only {completed} auto compactions completed"
    );
    assert!(probed.read > 0, "seed {seed}: the prober read nothing back");
    assert!(
        compacted_keys > 0.0,
        "seed {seed}: the compactors removed no version"
    );
    // Counted since each member's last start, so a lower bound.
    assert!(
        removed > 0.0 && moved > 0.0,
        "seed {seed}: on 4 KiB segments, {removed} value segments removed and {moved} values moved out of mostly dead ones"
    );
    (ops.len(), faults.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_auto_compaction() {
    run(crate::chaos::seed(3), 3).await;
}
