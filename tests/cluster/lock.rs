//! etcd's server-side `Lock` and `Election` services, differentially: the same raw gRPC
//! session against a raftkv cluster and a real etcd cluster, through a member that is not
//! necessarily the leader, with identical transcripts (member and cluster ids and terms left
//! out; leases chosen by the client so keys and revisions are the same on both, and the one
//! lease the server grants itself masked).

use std::time::Duration;

use raftkv_proto::etcdserverpb::kv_client::KvClient;
use raftkv_proto::etcdserverpb::lease_client::LeaseClient;
use raftkv_proto::etcdserverpb::{
    LeaseGrantRequest, LeaseRevokeRequest, LeaseTimeToLiveRequest, RangeRequest, ResponseHeader,
};
use raftkv_proto::mvccpb::KeyValue;
use raftkv_proto::v3electionpb::election_client::ElectionClient;
use raftkv_proto::v3electionpb::{
    CampaignRequest, LeaderKey, LeaderRequest, LeaderResponse, ProclaimRequest, ResignRequest,
};
use raftkv_proto::v3lockpb::lock_client::LockClient;
use raftkv_proto::v3lockpb::{LockRequest, UnlockRequest};
use tonic::transport::Channel;

use crate::fixture::{Cluster, Options, Server, assert_no_differences};

fn rev(header: &Option<ResponseHeader>) -> String {
    format!("rev={}", header.as_ref().map_or(-1, |h| h.revision))
}

fn show_kv(kv: &Option<KeyValue>) -> String {
    match kv {
        None => "no kv".into(),
        Some(kv) => format!(
            "{}={} create={} mod={} version={} lease={:x}",
            String::from_utf8_lossy(&kv.key),
            String::from_utf8_lossy(&kv.value),
            kv.create_revision,
            kv.mod_revision,
            kv.version,
            kv.lease
        ),
    }
}

fn show_error(status: &tonic::Status) -> String {
    format!("error {:?}: {}", status.code(), status.message())
}

fn show_leader(r: &LeaderResponse) -> String {
    format!("{} {}", rev(&r.header), show_kv(&r.kv))
}

struct Clients {
    lock: LockClient<Channel>,
    election: ElectionClient<Channel>,
    lease: LeaseClient<Channel>,
    kv: KvClient<Channel>,
}

impl Clients {
    async fn connect(endpoint: &str) -> Self {
        let channel = Channel::from_shared(format!("http://{endpoint}"))
            .expect("endpoint")
            .connect()
            .await
            .expect("connecting");
        Self {
            lock: LockClient::new(channel.clone()),
            election: ElectionClient::new(channel.clone()),
            lease: LeaseClient::new(channel.clone()),
            kv: KvClient::new(channel),
        }
    }

    async fn grant(&mut self, id: i64, ttl: i64) {
        self.lease
            .lease_grant(LeaseGrantRequest { ttl, id })
            .await
            .expect("lease grant");
    }

    /// The keys under `prefix`, oldest first, once they stop changing (an abandoned waiter's
    /// key is removed after its request ends, on both servers).
    async fn keys(&mut self, prefix: &str, expected: usize) -> String {
        let mut last = String::new();
        for _ in 0..50 {
            let resp = self
                .kv
                .range(RangeRequest {
                    key: prefix.as_bytes().to_vec().into(),
                    range_end: prefix_end(prefix).into(),
                    sort_target: 1, // CREATE
                    ..Default::default()
                })
                .await
                .expect("range")
                .into_inner();
            last = resp
                .kvs
                .iter()
                .map(|kv| String::from_utf8_lossy(&kv.key).into_owned())
                .collect::<Vec<_>>()
                .join(",");
            if resp.kvs.len() == expected {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        format!("keys {prefix}: [{last}]")
    }
}

/// The end of `prefix`'s range (the prefixes here are ASCII, never ending in 0xff).
fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    end
}

/// Transcript lines, each also printed as it comes (a hang shows where it is).
#[derive(Default)]
struct Transcript(Vec<String>);

impl Transcript {
    fn push(&mut self, line: String) {
        eprintln!("  {line}");
        self.0.push(line);
    }
}

const WAIT: Duration = Duration::from_millis(600);

/// Whether `task` is still running after `WAIT` (a lock or campaign that must block).
async fn still_waiting<T>(task: &tokio::task::JoinHandle<T>) -> bool {
    tokio::time::sleep(WAIT).await;
    !task.is_finished()
}

async fn lock_session(endpoint: &str) -> Vec<String> {
    let mut c = Clients::connect(endpoint).await;
    let mut t = Transcript::default();
    for id in [0x1a1, 0x1a2, 0x1a3, 0x1a4] {
        c.grant(id, 60).await;
    }
    let lock = |lease: i64| LockRequest {
        name: "lk".into(),
        lease,
    };

    // Uncontended, then the same lease again (the same key back).
    let first = c.lock.lock(lock(0x1a1)).await.expect("lock").into_inner();
    t.push(format!(
        "lock 1a1: {} key={}",
        rev(&first.header),
        String::from_utf8_lossy(&first.key)
    ));
    let again = c.lock.lock(lock(0x1a1)).await.expect("relock").into_inner();
    t.push(format!(
        "lock 1a1 again: {} key={}",
        rev(&again.header),
        String::from_utf8_lossy(&again.key)
    ));

    // A second holder waits until the first unlocks.
    let mut waiter = c.lock.clone();
    let second = tokio::spawn(async move { waiter.lock(lock(0x1a2)).await });
    t.push(format!("1a2 waits: {}", still_waiting(&second).await));
    let unlocked = c
        .lock
        .unlock(UnlockRequest {
            key: first.key.clone(),
        })
        .await
        .expect("unlock")
        .into_inner();
    t.push(format!("unlock 1a1: {}", rev(&unlocked.header)));
    let second = second.await.unwrap().expect("second lock").into_inner();
    t.push(format!(
        "lock 1a2: {} key={}",
        rev(&second.header),
        String::from_utf8_lossy(&second.key)
    ));

    // A revoked holder's lease releases the lock to the next waiter.
    let mut waiter = c.lock.clone();
    let third = tokio::spawn(async move { waiter.lock(lock(0x1a3)).await });
    t.push(format!("1a3 waits: {}", still_waiting(&third).await));
    c.lease
        .lease_revoke(LeaseRevokeRequest { id: 0x1a2 })
        .await
        .expect("revoke");
    let third = third.await.unwrap().expect("third lock").into_inner();
    t.push(format!(
        "lock 1a3 after revoking 1a2: {} key={}",
        rev(&third.header),
        String::from_utf8_lossy(&third.key)
    ));

    // A waiter whose caller gives up leaves no key behind.
    let mut request = tonic::Request::new(lock(0x1a4));
    request.set_timeout(Duration::from_millis(400));
    let abandoned = c.lock.lock(request).await;
    t.push(format!(
        "lock 1a4 with a deadline: {}",
        abandoned.map_or_else(|s| format!("{:?}", s.code()), |_| "acquired".into())
    ));
    t.push(c.keys("lk/", 1).await);

    // Errors: an unknown lease; unlock of a key that is not there.
    t.push(match c.lock.lock(lock(0x999)).await {
        Ok(r) => format!("unknown lease locked {:?}", r.into_inner().key),
        Err(s) => format!("lock with an unknown lease: {}", show_error(&s)),
    });
    let gone = c
        .lock
        .unlock(UnlockRequest {
            key: "lk/404".into(),
        })
        .await
        .expect("unlock of a missing key")
        .into_inner();
    t.push(format!("unlock missing: {}", rev(&gone.header)));

    // Lease 0: the server grants a 60 s lease of its own, kept alive by nobody.
    let own = c
        .lock
        .lock(LockRequest {
            name: "other".into(),
            lease: 0,
        })
        .await
        .expect("lock with lease 0")
        .into_inner();
    let key = String::from_utf8_lossy(&own.key).into_owned();
    let hex = key
        .strip_prefix("other/")
        .expect("under other/")
        .to_string();
    let id = i64::from_str_radix(&hex, 16).expect("hex lease");
    let ttl = c
        .lease
        .lease_time_to_live(LeaseTimeToLiveRequest { id, keys: true })
        .await
        .expect("ttl")
        .into_inner();
    t.push(format!(
        "lock with lease 0: {} key=other/<granted> granted_ttl={} keys={}",
        rev(&own.header),
        ttl.granted_ttl,
        ttl.keys.len()
    ));
    t.0
}

async fn election_session(endpoint: &str) -> Vec<String> {
    let mut c = Clients::connect(endpoint).await;
    let mut t = Transcript::default();
    for id in [0x2b1, 0x2b2] {
        c.grant(id, 60).await;
    }
    let campaign = |lease: i64, value: &str| CampaignRequest {
        name: "el".into(),
        lease,
        value: value.as_bytes().to_vec().into(),
    };
    t.push(
        match c.election.leader(LeaderRequest { name: "el".into() }).await {
            Ok(r) => format!("leader before any: {}", show_leader(&r.into_inner())),
            Err(s) => format!("leader before any: {}", show_error(&s)),
        },
    );

    // An observer from before the first campaign (etcd answers the stream's opening only
    // with its first item, so it runs on a task of its own): its first four items.
    let mut observing = c.election.clone();
    let observer = tokio::spawn(async move {
        let mut seen = Vec::new();
        let mut stream = match observing.observe(LeaderRequest { name: "el".into() }).await {
            Ok(s) => s.into_inner(),
            Err(s) => return vec![format!("observe: {}", show_error(&s))],
        };
        while seen.len() < 4 {
            match tokio::time::timeout(Duration::from_secs(10), stream.message()).await {
                // The header's revision is when the watch delivered the item, which depends
                // on timing in etcd (a catching-up watcher reports the store's revision):
                // only whether it is at least the item's.
                Ok(Ok(Some(r))) => seen.push(format!(
                    "observed: {} header at or after it: {}",
                    show_kv(&r.kv),
                    r.header.as_ref().map_or(-1, |h| h.revision)
                        >= r.kv.as_ref().map_or(0, |kv| kv.mod_revision)
                )),
                other => {
                    seen.push(format!("observer ended: {other:?}"));
                    break;
                }
            }
        }
        seen
    });

    let won = c
        .election
        .campaign(campaign(0x2b1, "v1"))
        .await
        .expect("campaign")
        .into_inner();
    let leader: LeaderKey = won.leader.clone().expect("leader key");
    t.push(format!(
        "campaign 2b1: {} name={} key={} rev={} lease={:x}",
        rev(&won.header),
        String::from_utf8_lossy(&leader.name),
        String::from_utf8_lossy(&leader.key),
        leader.rev,
        leader.lease
    ));
    let now = c
        .election
        .leader(LeaderRequest { name: "el".into() })
        .await
        .expect("leader")
        .into_inner();
    t.push(format!("leader: {}", show_leader(&now)));

    let proclaimed = c
        .election
        .proclaim(ProclaimRequest {
            leader: Some(leader.clone()),
            value: "v2".into(),
        })
        .await
        .expect("proclaim")
        .into_inner();
    t.push(format!("proclaim v2: {}", rev(&proclaimed.header)));
    let mut stale = leader.clone();
    stale.rev -= 1;
    for (what, req) in [
        (
            "proclaim with a stale rev",
            ProclaimRequest {
                leader: Some(stale.clone()),
                value: "x".into(),
            },
        ),
        (
            "proclaim without a leader",
            ProclaimRequest {
                leader: None,
                value: "x".into(),
            },
        ),
    ] {
        t.push(match c.election.proclaim(req).await {
            Ok(r) => format!("{what}: {}", rev(&r.into_inner().header)),
            Err(s) => format!("{what}: {}", show_error(&s)),
        });
    }

    // The same lease campaigning with another value proclaims it and keeps its key.
    let same = c
        .election
        .campaign(campaign(0x2b1, "v3"))
        .await
        .expect("campaign again")
        .into_inner();
    t.push(format!(
        "campaign 2b1 again with v3: {} rev={}",
        rev(&same.header),
        same.leader.as_ref().map_or(0, |l| l.rev)
    ));

    // A second campaigner waits for the first to resign.
    let mut other = c.election.clone();
    let second = tokio::spawn(async move { other.campaign(campaign(0x2b2, "w1")).await });
    t.push(format!("2b2 waits: {}", still_waiting(&second).await));
    t.push(
        match c
            .election
            .resign(ResignRequest {
                leader: Some(stale.clone()),
            })
            .await
        {
            Ok(r) => format!("resign with a stale rev: {}", rev(&r.into_inner().header)),
            Err(s) => format!("resign with a stale rev: {}", show_error(&s)),
        },
    );
    t.push(format!("2b2 still waits: {}", !second.is_finished()));
    let resigned = c
        .election
        .resign(ResignRequest {
            leader: Some(leader.clone()),
        })
        .await
        .expect("resign")
        .into_inner();
    t.push(format!("resign 2b1: {}", rev(&resigned.header)));
    let second = second.await.unwrap().expect("second campaign").into_inner();
    t.push(format!(
        "campaign 2b2: {} key={} rev={}",
        rev(&second.header),
        second
            .leader
            .as_ref()
            .map_or_else(String::new, |l| String::from_utf8_lossy(&l.key)
                .into_owned()),
        second.leader.as_ref().map_or(0, |l| l.rev)
    ));
    t.push(
        match c.election.resign(ResignRequest { leader: None }).await {
            Ok(r) => format!("resign without a leader: {}", rev(&r.into_inner().header)),
            Err(s) => format!("resign without a leader: {}", show_error(&s)),
        },
    );

    // What the observer saw: v1 (the first put), v2, v3, then w1 after the resign.
    for line in observer.await.unwrap() {
        t.push(line);
    }
    t.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_and_election_services_match_real_etcd() {
    let mut transcripts = Vec::new();
    for server in [Server::Raftkv, Server::Etcd] {
        let cluster = Cluster::start(server, 3, Options::default()).await;
        // Through a follower where there is one, so forwarding is part of it.
        let leader = cluster.leader().await.unwrap_or(0);
        let endpoint = cluster.members[(leader + 1) % 3].endpoint();
        let mut t = lock_session(&endpoint).await;
        t.extend(election_session(&endpoint).await);
        transcripts.push(t);
    }
    let (ours, reference) = (&transcripts[0], &transcripts[1]);
    let differences: Vec<String> = ours
        .iter()
        .zip(reference)
        .filter(|(o, r)| o != r)
        .map(|(o, r)| format!("--- etcd\n{r}\n--- raftkv\n{o}"))
        .collect();
    eprintln!("{}", reference.join("\n"));
    assert_eq!(ours.len(), reference.len(), "{ours:#?}\n{reference:#?}");
    assert_no_differences(&differences);
}
