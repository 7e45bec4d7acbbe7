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

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use raftkv_proto::etcdserverpb::kv_client::KvClient;
use raftkv_proto::etcdserverpb::lease_client::LeaseClient;
use raftkv_proto::etcdserverpb::{
    LeaseGrantRequest, LeaseKeepAliveRequest, LeaseTimeToLiveRequest, PutRequest, RangeRequest,
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
