//! Leases under the chaos schedule. One lease is kept alive through whichever member
//! answers (every quarter TTL, as clientv3's keep-alive does), with keys attached; another
//! is never kept alive. Afterwards:
//!
//! - the kept lease's keys are there exactly while the lease is (they vanish only with it);
//! - if the kept lease is gone, there was a stretch of at least its TTL in which no
//!   keep-alive sent was acknowledged (a renewal acknowledged at time a was made by the
//!   leader after it was sent at s, so the lease lives until at least s + TTL): expiry
//!   only by running out, never while kept alive;
//! - the unrenewed lease has expired and its key is gone on every member.
//!
//! Beside them a granter grants a fresh lease (long TTL, an ID of its choosing) through the
//! members in turn all through the schedule, so grants are committed while members are
//! killed, paused, cut off and restarted (a grant is applied without a batch: a crash can
//! leave the lease stored without the applied point, and the replay must end the same).
//! Afterwards every member holds the same set of these leases, every acknowledged grant is
//! in it, nothing that was never sent is, and each acknowledged lease has the TTL it was
//! granted with.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use raftkv_proto::etcdserverpb::kv_client::KvClient;
use raftkv_proto::etcdserverpb::lease_client::LeaseClient;
use raftkv_proto::etcdserverpb::{
    LeaseGrantRequest, LeaseKeepAliveRequest, LeaseLeasesRequest, LeaseTimeToLiveRequest,
    PutRequest, RangeRequest,
};
use tonic::transport::{Channel, Endpoint};

/// TTL of the kept lease (seconds).
const KEPT_TTL: u64 = 4;
/// TTL of the lease nobody keeps alive.
const LAPSING_TTL: u64 = 2;
const KEPT_KEYS: [&str; 2] = ["lease/a", "lease/b"];
const LAPSING_KEY: &str = "lease/x";

pub async fn channel(endpoint: &str) -> Option<Channel> {
    Endpoint::from_shared(format!("http://{endpoint}"))
        .ok()?
        .connect_timeout(Duration::from_millis(300))
        .timeout(Duration::from_secs(2))
        .connect()
        .await
        .ok()
}

/// The first member that answers `f` within 2 s, trying each in turn until `deadline`.
pub async fn on_any<T, F, Fut>(endpoints: &[String], deadline: Instant, mut f: F) -> Option<T>
where
    F: FnMut(Channel) -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    while Instant::now() < deadline {
        for ep in endpoints {
            if let Some(c) = channel(ep).await
                && let Ok(Some(out)) = tokio::time::timeout(Duration::from_secs(2), f(c)).await
            {
                return Some(out);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

async fn grant_with_keys(endpoints: &[String], ttl: u64, keys: &[&str]) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    let id = on_any(endpoints, deadline, |c| async move {
        let r = LeaseClient::new(c)
            .lease_grant(LeaseGrantRequest {
                ttl: ttl as i64,
                id: 0,
            })
            .await
            .ok()?;
        Some(r.into_inner().id)
    })
    .await
    .expect("lease grant");
    for key in keys {
        on_any(endpoints, deadline, |c| async move {
            KvClient::new(c)
                .put(PutRequest {
                    key: key.as_bytes().to_vec().into(),
                    value: "held".into(),
                    lease: id,
                    ..Default::default()
                })
                .await
                .ok()
                .map(|_| ())
        })
        .await
        .expect("put with the lease");
    }
    id
}

/// The lease keeper and what it saw.
pub struct LeaseKeeper {
    endpoints: Vec<String>,
    kept: i64,
    lapsing: i64,
    granted_at: Instant,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Vec<(Instant, Option<i64>)>>,
}

impl LeaseKeeper {
    /// Grants both leases, attaches their keys, and starts keeping the first alive.
    pub async fn start(endpoints: &[String]) -> Self {
        let endpoints = endpoints.to_vec();
        let granted_at = Instant::now();
        let kept = grant_with_keys(&endpoints, KEPT_TTL, &KEPT_KEYS).await;
        let lapsing = grant_with_keys(&endpoints, LAPSING_TTL, &[LAPSING_KEY]).await;
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn({
            let stop = stop.clone();
            let endpoints = endpoints.clone();
            async move {
                // (sent at, answered TTL or None for no answer)
                let mut log = Vec::new();
                let mut turn = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    let sent = Instant::now();
                    let ep = &endpoints[turn % endpoints.len()];
                    turn += 1;
                    let answer = async {
                        let c = channel(ep).await?;
                        let req = futures_util::stream::iter([LeaseKeepAliveRequest { id: kept }]);
                        let mut answers = LeaseClient::new(c)
                            .lease_keep_alive(req)
                            .await
                            .ok()?
                            .into_inner();
                        answers.message().await.ok()?.map(|r| r.ttl)
                    };
                    let ttl = tokio::time::timeout(Duration::from_secs(2), answer)
                        .await
                        .ok()
                        .flatten();
                    log.push((sent, ttl));
                    if ttl.is_some() {
                        // Acknowledged: the next one a quarter TTL after this was sent.
                        let next = sent + Duration::from_secs(KEPT_TTL) / 4;
                        tokio::time::sleep_until(next.into()).await;
                    } else {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
                log
            }
        });
        Self {
            endpoints,
            kept,
            lapsing,
            granted_at,
            stop,
            task,
        }
    }

    /// Stops keeping alive and checks the guarantees; returns a summary line.
    pub async fn finish(self, seed: u64) -> String {
        self.stop.store(true, Ordering::Relaxed);
        let log = self.task.await.expect("keeper task");
        let ended = Instant::now();
        let deadline = ended + Duration::from_secs(30);
        let eps = &self.endpoints;
        let kept = self.kept;
        // Linearizable reads of the keys and the lease (after the run, through any member).
        let keys = on_any(eps, deadline, |c| async move {
            let r = KvClient::new(c)
                .range(RangeRequest {
                    key: "lease/".into(),
                    range_end: "lease0".into(),
                    ..Default::default()
                })
                .await
                .ok()?;
            Some(
                r.into_inner()
                    .kvs
                    .iter()
                    .map(|kv| (String::from_utf8_lossy(&kv.key).into_owned(), kv.lease))
                    .collect::<Vec<_>>(),
            )
        })
        .await
        .expect("reading the lease keys");
        let ttl = on_any(eps, deadline, |c| async move {
            let r = LeaseClient::new(c)
                .lease_time_to_live(LeaseTimeToLiveRequest {
                    id: kept,
                    keys: true,
                })
                .await
                .ok()?;
            Some(r.into_inner())
        })
        .await
        .expect("time to live");
        let alive = ttl.ttl != -1;
        let kept_keys: Vec<&(String, i64)> = keys
            .iter()
            .filter(|(k, _)| KEPT_KEYS.contains(&k.as_str()))
            .collect();
        let acked: Vec<Instant> = log
            .iter()
            .filter(|(_, ttl)| ttl.is_some_and(|t| t > 0))
            .map(|(sent, _)| *sent)
            .collect();
        let refused = log.iter().filter(|(_, ttl)| *ttl == Some(0)).count();
        if alive {
            assert_eq!(
                kept_keys.len(),
                KEPT_KEYS.len(),
                "seed {seed}: the kept lease lives but its keys are gone: {keys:?}"
            );
            assert!(
                kept_keys.iter().all(|(_, l)| *l == kept),
                "seed {seed}: keys detached: {keys:?}"
            );
            assert_eq!(ttl.keys.len(), KEPT_KEYS.len(), "seed {seed}: {ttl:?}");
        } else {
            assert!(
                kept_keys.is_empty(),
                "seed {seed}: the kept lease is gone but its keys are not: {keys:?}"
            );
            // Gone: some stretch of TTL must have had no acknowledged keep-alive.
            let ttl_d = Duration::from_secs(KEPT_TTL);
            let mut points = vec![self.granted_at];
            points.extend(&acked);
            points.push(ended);
            let lapse = points
                .windows(2)
                .any(|w| w[1].duration_since(w[0]) >= ttl_d);
            assert!(
                lapse,
                "seed {seed}: the kept lease expired although every {KEPT_TTL} s had an acknowledged keep-alive"
            );
        }
        // The unrenewed lease has run out (the leader revokes it within its TTL plus a tick
        // once it leads; allow for elections).
        let lapsing = self.lapsing;
        let gone = on_any(eps, deadline, |c| async move {
            let r = LeaseClient::new(c)
                .lease_time_to_live(LeaseTimeToLiveRequest {
                    id: lapsing,
                    keys: false,
                })
                .await
                .ok()?;
            (r.into_inner().ttl == -1).then_some(())
        })
        .await;
        assert!(
            gone.is_some(),
            "seed {seed}: the unrenewed lease never expired"
        );
        let lapsed_key = on_any(eps, deadline, |c| async move {
            let r = KvClient::new(c)
                .range(RangeRequest {
                    key: LAPSING_KEY.into(),
                    ..Default::default()
                })
                .await
                .ok()?;
            Some(r.into_inner().kvs.len())
        })
        .await;
        assert_eq!(
            lapsed_key,
            Some(0),
            "seed {seed}: the expired lease's key remains"
        );
        format!(
            "kept lease {} after {} keep-alives ({} acknowledged, {refused} found it gone), unrenewed lease expired",
            if alive {
                "alive"
            } else {
                "lapsed in an outage"
            },
            log.len(),
            acked.len()
        )
    }
}

/// TTL of the granter's leases: longer than any run, so none expires before the check.
const GRANTED_TTL: i64 = 900;
/// The granter's lease IDs are `GRANTED_BASE + n`, apart from the server-chosen ones.
const GRANTED_BASE: i64 = 0x6772_616e_0000;

/// What became of one grant.
#[derive(Debug)]
enum Grant {
    /// Acknowledged with this ID and TTL.
    Acked(i64, i64),
    /// Refused with an error in the response, or no answer: the outcome is unknown.
    Unknown(String),
}

/// Grants leases all through the schedule (see the module's doc).
pub struct Granter {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Vec<(i64, Grant)>>,
}

impl Granter {
    pub fn start(endpoints: &[String]) -> Self {
        let endpoints = endpoints.to_vec();
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn({
            let stop = stop.clone();
            async move {
                let mut log = Vec::new();
                let mut n = 0i64;
                while !stop.load(Ordering::Relaxed) {
                    let id = GRANTED_BASE + n;
                    let ep = &endpoints[n as usize % endpoints.len()];
                    n += 1;
                    let answer = async {
                        let c = channel(ep)
                            .await
                            .ok_or_else(|| "no connection".to_string())?;
                        LeaseClient::new(c)
                            .lease_grant(LeaseGrantRequest {
                                ttl: GRANTED_TTL,
                                id,
                            })
                            .await
                            .map(|r| r.into_inner())
                            .map_err(|s| s.message().to_string())
                    };
                    let grant = match tokio::time::timeout(Duration::from_secs(2), answer).await {
                        Ok(Ok(r)) if r.error.is_empty() => Grant::Acked(r.id, r.ttl),
                        Ok(Ok(r)) => Grant::Unknown(r.error),
                        Ok(Err(e)) => Grant::Unknown(e),
                        Err(_) => Grant::Unknown("timed out".into()),
                    };
                    log.push((id, grant));
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                log
            }
        });
        Self { stop, task }
    }

    /// Stops granting and checks the grants on every member in `live` (endpoints of the
    /// members running now, converged); `leader` answers the TTL reads. Returns a summary.
    pub async fn finish(self, live: &[String], leader: &str, seed: u64) -> String {
        self.stop.store(true, Ordering::Relaxed);
        let log = self.task.await.expect("granter task");
        let sent: std::collections::BTreeSet<i64> = log.iter().map(|(id, _)| *id).collect();
        let mut acked = std::collections::BTreeSet::new();
        for (id, grant) in &log {
            if let Grant::Acked(got, ttl) = grant {
                assert_eq!(
                    (*got, *ttl),
                    (*id, GRANTED_TTL),
                    "seed {seed}: grant of lease {id:#x} for {GRANTED_TTL} s acknowledged as {got:#x} for {ttl} s"
                );
                acked.insert(*id);
            }
        }
        // Each member's own leases (LeaseLeases answers from the member's applied state).
        // Grants move no revision, so the members' convergence on keys does not say they
        // have applied the last grants: wait until they hold the same set.
        let deadline = Instant::now() + Duration::from_secs(30);
        let sets = loop {
            let mut sets = Vec::new();
            for ep in live {
                let Some(c) = channel(ep).await else { break };
                let Ok(r) = LeaseClient::new(c)
                    .lease_leases(LeaseLeasesRequest {})
                    .await
                else {
                    break;
                };
                let ids: std::collections::BTreeSet<i64> = r
                    .into_inner()
                    .leases
                    .iter()
                    .map(|l| l.id)
                    .filter(|id| (GRANTED_BASE..GRANTED_BASE + log.len() as i64 + 1).contains(id))
                    .collect();
                sets.push(ids);
            }
            let done = sets.len() == live.len()
                && sets.windows(2).all(|w| w[0] == w[1])
                && sets.first().is_some_and(|s| s.is_superset(&acked));
            if done || Instant::now() > deadline {
                break sets;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        assert_eq!(
            sets.len(),
            live.len(),
            "seed {seed}: a member did not list its leases"
        );
        for (i, set) in sets.iter().enumerate() {
            let missing: Vec<String> = acked.difference(set).map(|id| format!("{id:#x}")).collect();
            assert!(
                missing.is_empty(),
                "seed {seed}: member {} lacks acknowledged grants {missing:?}",
                live[i]
            );
            let phantom: Vec<String> = set.difference(&sent).map(|id| format!("{id:#x}")).collect();
            assert!(
                phantom.is_empty(),
                "seed {seed}: member {} holds leases never granted {phantom:?}",
                live[i]
            );
            assert_eq!(
                set, &sets[0],
                "seed {seed}: members {} and {} hold different leases",
                live[0], live[i]
            );
        }
        let c = channel(leader).await.expect("leader connection");
        let mut lease = LeaseClient::new(c);
        for id in &sets[0] {
            let t = lease
                .lease_time_to_live(LeaseTimeToLiveRequest {
                    id: *id,
                    keys: false,
                })
                .await
                .expect("time to live")
                .into_inner();
            assert!(
                t.granted_ttl == GRANTED_TTL && t.ttl > 0 && t.ttl <= GRANTED_TTL,
                "seed {seed}: lease {id:#x} granted for {GRANTED_TTL} s reads {t:?}"
            );
        }
        let unknown: Vec<&str> = log
            .iter()
            .filter_map(|(_, g)| match g {
                Grant::Unknown(e) => Some(e.as_str()),
                Grant::Acked(..) => None,
            })
            .collect();
        let kept_of_unknown = sets[0].len() - acked.len();
        format!(
            "{} grants through the faults: {} acknowledged, {} unknown ({kept_of_unknown} of them applied; first errors {:?}), the same {} leases on all {} members, each with its TTL",
            log.len(),
            acked.len(),
            unknown.len(),
            unknown.iter().take(3).collect::<Vec<_>>(),
            sets[0].len(),
            live.len()
        )
    }
}
