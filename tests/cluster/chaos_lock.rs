//! Locks under the chaos schedule. Contenders take etcd's server-side lock (`v3lock.Lock`)
//! through rotating members, each under a lease it keeps alive while it waits and holds,
//! and give it back with `Unlock` (or lose it when their lease runs out in an outage).
//! Afterwards, from the MVCC history of the lock's keys:
//!
//! - every lock granted at revision H was held at H: the holder's key was alive then and
//!   was the oldest key under the lock's prefix (so no two holders ever overlap, whatever
//!   kills, pauses and partitions did meanwhile) — a holder whose key was already gone at H
//!   (its lease ran out while it waited) is counted, not failed, as etcd answers the same;
//! - once every contender has stopped, the prefix empties (unlocked, revoked or expired).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use raftkv_proto::etcdserverpb::kv_client::KvClient;
use raftkv_proto::etcdserverpb::lease_client::LeaseClient;
use raftkv_proto::etcdserverpb::watch_client::WatchClient;
use raftkv_proto::etcdserverpb::watch_request::RequestUnion;
use raftkv_proto::etcdserverpb::{
    LeaseGrantRequest, LeaseKeepAliveRequest, LeaseRevokeRequest, PutRequest, RangeRequest,
    WatchCreateRequest, WatchRequest,
};
use raftkv_proto::mvccpb::event::EventType;
use raftkv_proto::v3lockpb::lock_client::LockClient;
use raftkv_proto::v3lockpb::{LockRequest, UnlockRequest};
use tokio::sync::mpsc;

use crate::chaos_lease::{channel, on_any};

const NAME: &str = "chaoslock";
const PREFIX: &str = "chaoslock/";
const PREFIX_END: &str = "chaoslock0";
/// Written after the run: every history read ends with it.
const SENTINEL: &str = "chaoslock/~end";
const CONTENDERS: usize = 3;
/// TTL of each contender's lease (seconds); kept alive every second.
const TTL: i64 = 3;

/// A lock granted: the key, and the header revision of the answer.
#[derive(Debug, Clone)]
struct Granted {
    contender: usize,
    key: String,
    revision: i64,
}

/// The contenders of one chaos run.
pub struct LockContenders {
    endpoints: Vec<String>,
    granted: Arc<Mutex<Vec<Granted>>>,
    attempts: Arc<Mutex<usize>>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Keeps `lease` alive every second through rotating members until `stop`.
async fn keep_alive(endpoints: Vec<String>, lease: i64, stop: Arc<AtomicBool>) {
    let mut turn = 0usize;
    while !stop.load(Ordering::Relaxed) {
        let ep = &endpoints[turn % endpoints.len()];
        turn += 1;
        let once = async {
            let c = channel(ep).await?;
            let req = futures_util::stream::iter([LeaseKeepAliveRequest { id: lease }]);
            let mut answers = LeaseClient::new(c)
                .lease_keep_alive(req)
                .await
                .ok()?
                .into_inner();
            answers.message().await.ok()?.map(|r| r.ttl)
        };
        let _ = tokio::time::timeout(Duration::from_secs(1), once).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn contender(
    me: usize,
    endpoints: Vec<String>,
    granted: Arc<Mutex<Vec<Granted>>>,
    attempts: Arc<Mutex<usize>>,
    stop: Arc<AtomicBool>,
) {
    let mut turn = me;
    while !stop.load(Ordering::Relaxed) {
        let deadline = Instant::now() + Duration::from_secs(3);
        let Some(lease) = on_any(&endpoints, deadline, |c| async move {
            let r = LeaseClient::new(c)
                .lease_grant(LeaseGrantRequest { ttl: TTL, id: 0 })
                .await
                .ok()?;
            Some(r.into_inner().id)
        })
        .await
        else {
            continue;
        };
        let keeping = Arc::new(AtomicBool::new(false));
        let keeper = tokio::spawn(keep_alive(endpoints.clone(), lease, keeping.clone()));
        let ep = endpoints[turn % endpoints.len()].clone();
        turn += 1;
        *attempts.lock().unwrap() += 1;
        let locked = async {
            let c = channel(&ep).await?;
            let r = LockClient::new(c)
                .lock(LockRequest {
                    name: NAME.into(),
                    lease,
                })
                .await
                .ok()?;
            Some(r.into_inner())
        };
        if let Ok(Some(r)) = tokio::time::timeout(Duration::from_secs(6), locked).await {
            let key = String::from_utf8_lossy(&r.key).into_owned();
            granted.lock().unwrap().push(Granted {
                contender: me,
                key: key.clone(),
                revision: r.header.map_or(0, |h| h.revision),
            });
            tokio::time::sleep(Duration::from_millis(200 + 100 * me as u64)).await;
            let key = r.key;
            on_any(&endpoints, Instant::now() + Duration::from_secs(2), |c| {
                let key = key.clone();
                async move {
                    LockClient::new(c)
                        .unlock(UnlockRequest { key })
                        .await
                        .ok()
                        .map(|_| ())
                }
            })
            .await;
        }
        keeping.store(true, Ordering::Relaxed);
        let _ = keeper.await;
        on_any(
            &endpoints,
            Instant::now() + Duration::from_secs(2),
            |c| async move {
                LeaseClient::new(c)
                    .lease_revoke(LeaseRevokeRequest { id: lease })
                    .await
                    .ok()
                    .map(|_| ())
            },
        )
        .await;
    }
}

/// One change to a lock key: revision, whether it was a delete, key.
type Change = (i64, bool, String);

/// Every change under the prefix from the first revision up to the sentinel (excluded).
async fn read_history(endpoint: &str) -> Vec<Change> {
    let c = channel(endpoint).await.expect("connecting for history");
    let last = KvClient::new(c.clone())
        .put(PutRequest {
            key: SENTINEL.into(),
            value: "end".into(),
            ..Default::default()
        })
        .await
        .expect("sentinel put")
        .into_inner()
        .header
        .map_or(0, |h| h.revision);
    let (tx, rx) = mpsc::channel(4);
    tx.send(WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
            key: PREFIX.into(),
            range_end: PREFIX_END.into(),
            start_revision: 1,
            ..Default::default()
        })),
    })
    .await
    .expect("queued");
    let mut answers = WatchClient::new(c)
        .max_decoding_message_size(64 << 20)
        .watch(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("watch")
        .into_inner();
    let mut changes: Vec<Change> = Vec::new();
    while changes.last().map_or(0, |c| c.0) < last {
        let answer = tokio::time::timeout(Duration::from_secs(30), answers.next())
            .await
            .expect("lock history stalled")
            .expect("stream open")
            .expect("answer");
        changes.extend(answer.events.iter().map(|e| {
            let kv = e.kv.clone().unwrap_or_default();
            (
                kv.mod_revision,
                e.r#type == EventType::Delete as i32,
                String::from_utf8_lossy(&kv.key).into_owned(),
            )
        }));
    }
    changes.retain(|c| c.2 != SENTINEL);
    changes
}

/// A lock key's life: key, created at, deleted at (`i64::MAX` if still there).
#[derive(Debug, Clone, PartialEq)]
struct Life {
    key: String,
    created: i64,
    deleted: i64,
}

fn lives(changes: &[Change]) -> Vec<Life> {
    let mut open: std::collections::HashMap<String, usize> = Default::default();
    let mut out: Vec<Life> = Vec::new();
    for (revision, deleted, key) in changes {
        match (deleted, open.get(key)) {
            (false, None) => {
                open.insert(key.clone(), out.len());
                out.push(Life {
                    key: key.clone(),
                    created: *revision,
                    deleted: i64::MAX,
                });
            }
            (false, Some(_)) => {} // a later put of a live key keeps its creation
            (true, Some(&i)) => {
                out[i].deleted = *revision;
                open.remove(key);
            }
            (true, None) => {}
        }
    }
    out
}

/// Checks every grant against the history: `Err` names the first that was not the owner.
fn check(granted: &[Granted], lives: &[Life]) -> Result<usize, String> {
    let mut lost = 0;
    for g in granted {
        let alive_at = |l: &&Life| l.created <= g.revision && g.revision < l.deleted;
        let Some(mine) = lives.iter().filter(alive_at).find(|l| l.key == g.key) else {
            lost += 1;
            continue;
        };
        let owner = lives
            .iter()
            .filter(alive_at)
            .min_by_key(|l| l.created)
            .expect("mine is alive");
        if owner != mine {
            return Err(format!(
                "contender {} was granted {} at revision {} while {owner:?} was older and alive ({mine:?})",
                g.contender, g.key, g.revision
            ));
        }
    }
    Ok(lost)
}

impl LockContenders {
    pub fn start(endpoints: &[String]) -> Self {
        let granted = Arc::new(Mutex::new(Vec::new()));
        let attempts = Arc::new(Mutex::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..CONTENDERS)
            .map(|me| {
                tokio::spawn(contender(
                    me,
                    endpoints.to_vec(),
                    granted.clone(),
                    attempts.clone(),
                    stop.clone(),
                ))
            })
            .collect();
        Self {
            endpoints: endpoints.to_vec(),
            granted,
            attempts,
            stop,
            tasks,
        }
    }

    /// Stops the contenders (after the cluster healed) and checks the lock's guarantees
    /// through `endpoint`; returns a summary line.
    pub async fn finish(self, endpoint: &str, seed: u64) -> String {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.expect("contender task");
        }
        let granted = self.granted.lock().unwrap().clone();
        let attempts = *self.attempts.lock().unwrap();
        let changes = read_history(endpoint).await;
        let lives = lives(&changes);
        let lost = match check(&granted, &lives) {
            Ok(lost) => lost,
            Err(e) => panic!("seed {seed}: lock holders overlapped: {e}"),
        };
        // Every contender has stopped: unlocked, revoked, or its lease runs out.
        let eps = &self.endpoints;
        let deadline = Instant::now() + Duration::from_secs(TTL as u64 + 30);
        let mut left = Vec::new();
        while Instant::now() < deadline {
            left = on_any(eps, deadline, |c| async move {
                let r = KvClient::new(c)
                    .range(RangeRequest {
                        key: PREFIX.into(),
                        range_end: PREFIX_END.into(),
                        ..Default::default()
                    })
                    .await
                    .ok()?;
                Some(
                    r.into_inner()
                        .kvs
                        .iter()
                        .map(|kv| String::from_utf8_lossy(&kv.key).into_owned())
                        .filter(|k| k != SENTINEL)
                        .collect::<Vec<_>>(),
                )
            })
            .await
            .unwrap_or_default();
            if left.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert!(
            left.is_empty(),
            "seed {seed}: lock keys outlived every contender and their leases: {left:?}"
        );
        format!(
            "lock granted {} times in {attempts} attempts by {CONTENDERS} contenders, never to two holders ({lost} granted after the holder's lease had run out), {} key lives",
            granted.len(),
            lives.len()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn granted(key: &str, revision: i64) -> Granted {
        Granted {
            contender: 0,
            key: key.into(),
            revision,
        }
    }

    #[test]
    fn the_checker_finds_two_holders() {
        let changes: Vec<Change> = vec![
            (2, false, "l/a".into()),
            (3, false, "l/b".into()),
            (5, true, "l/a".into()),
            (6, true, "l/b".into()),
        ];
        let lives = lives(&changes);
        // a holds from 2; b from 5 (a deleted) — fine.
        assert_eq!(
            check(&[granted("l/a", 2), granted("l/b", 5)], &lives),
            Ok(0)
        );
        // b granted at 4, while a was alive and older.
        assert!(check(&[granted("l/b", 4)], &lives).is_err());
        // b granted at 7, after its key was gone: lost, not a violation.
        assert_eq!(check(&[granted("l/b", 7)], &lives), Ok(1));
    }
}
