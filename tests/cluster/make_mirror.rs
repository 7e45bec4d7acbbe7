//! `make-mirror` under load, in both directions between a real etcd and raftkv: raftkvctl
//! mirroring etcd into raftkv, and the real etcdctl mirroring raftkv into etcd (raftkv as the
//! source the real tool reads and watches). Writers keep putting, deleting and writing
//! txns at the source while the mirror runs; once they stop, the destination must hold
//! exactly the source's keys under the prefix, renamed, with the same values — nothing
//! missing, nothing extra, nothing written outside the destination prefix. The fault test
//! kills source members (the one the mirror's watch is on, then the leader) mid-mirror:
//! the mirror must ride through, as etcdctl's does, by resuming its watch elsewhere.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use raftkv_client::{Client, Txn, TxnOp};

use crate::fixture::{Cluster, Options, Server, raftkvctl_bin};

/// Every key and value at `endpoints` (the whole key space).
async fn everything(endpoints: &str) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let client = Client::new(endpoints.split(','));
    let resp = client
        .range(raftkv_client::proto::RangeRequest {
            key: vec![0].into(),
            range_end: vec![0].into(),
            ..Default::default()
        })
        .await
        .expect("range of everything");
    resp.kvs
        .into_iter()
        .map(|kv| (kv.key.to_vec(), kv.value.to_vec()))
        .collect()
}

/// Puts, deletes and txns at the source: `rounds` of them over 40 keys of `/app/`, and a
/// key outside the prefix now and then.
async fn write_load(endpoints: &str, first: u64, rounds: u64) {
    let client = Client::new(endpoints.split(','));
    for r in first..first + rounds {
        one_write(&client, r)
            .await
            .expect("no write fails while no member fails");
    }
}

/// [`write_load`] while members fail: a failed write is skipped (its outcome may be
/// unknown, which does not matter: the destination is compared with what the source holds
/// in the end).
async fn write_load_through_faults(endpoints: &str, first: u64, rounds: u64) {
    let client = Client::new(endpoints.split(','));
    for r in first..first + rounds {
        let _ = one_write(&client, r).await;
    }
}

async fn one_write(client: &Client, r: u64) -> Result<(), raftkv_client::Error> {
    let k = |i: u64| format!("/app/k{:02}", i % 40);
    match r % 5 {
        0 | 1 => {
            client.put(k(r * 7), format!("v{r}")).await?;
        }
        2 => {
            client.delete(k(r * 3)).await?;
        }
        3 => {
            let txn = Txn::new().then([
                TxnOp::put(k(r * 11), format!("t{r}")),
                TxnOp::put(k(r * 13), format!("t{r}")),
                TxnOp::delete(k(r * 17)),
            ]);
            client.txn(txn).await?;
        }
        _ => {
            client.put(format!("/other/{r}"), "x").await?;
        }
    }
    Ok(())
}

/// The source's `/app/` keys renamed to `/copy/`.
fn expected(source: &BTreeMap<Vec<u8>, Vec<u8>>) -> BTreeMap<Vec<u8>, Vec<u8>> {
    source
        .iter()
        .filter_map(|(k, v)| {
            let rest = k.strip_prefix(b"/app/")?;
            Some(([b"/copy/".as_slice(), rest].concat(), v.clone()))
        })
        .collect()
}

/// `tool` (etcdctl or raftkvctl, with the source's endpoints) mirroring `/app/` to `/copy/`
/// at `dest`.
fn start_mirror(dest: &Cluster, mut tool: Command) -> Child {
    tool.args([
        "make-mirror",
        "--prefix",
        "/app/",
        "--dest-prefix",
        "/copy/",
    ])
    .arg(dest.members[0].endpoint())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("make-mirror starts")
}

async fn mirror_under_load(source: &Cluster, dest: &Cluster, tool: Command) {
    // Some keys before the mirror starts (its initial copy), more while it runs (its watch).
    write_load(&source.endpoints(), 0, 120).await;
    let child = start_mirror(dest, tool);
    write_load(&source.endpoints(), 120, 400).await;
    converges(source, dest, child).await;
}

/// Waits until the destination holds the source's `/app/` keys as `/copy/` (the mirror
/// still running), then stops the mirror and fails on any difference.
async fn converges(source: &Cluster, dest: &Cluster, mut child: Child) {
    let want = expected(&everything(&source.endpoints()).await);
    assert!(want.len() > 10, "the load left keys under the prefix");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut got = everything(&dest.endpoints()).await;
    while got != want && Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            let out = child.wait_with_output().expect("output");
            panic!(
                "make-mirror exited ({status}): {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        got = everything(&dest.endpoints()).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    let missing: Vec<_> = want.keys().filter(|k| !got.contains_key(*k)).collect();
    let extra: Vec<_> = got.keys().filter(|k| !want.contains_key(*k)).collect();
    let wrong: Vec<_> = want
        .iter()
        .filter(|(k, v)| got.get(*k).is_some_and(|g| g != *v))
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty() && wrong.is_empty(),
        "destination differs: missing {missing:?}, extra {extra:?}, wrong values {wrong:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn make_mirror_keeps_the_destination_equal_under_load_both_ways() {
    let etcd = Cluster::start(Server::Etcd, 1, Options::default()).await;
    let raftkv = Cluster::start_beside(&etcd, Server::Raftkv, 3, Options::default()).await;

    // etcd → raftkv, by raftkvctl.
    let mut tool = Command::new(raftkvctl_bin());
    tool.arg(format!("--endpoints={}", etcd.endpoints()));
    mirror_under_load(&etcd, &raftkv, tool).await;

    // raftkv → etcd, by the real etcdctl: the destination starts empty again (a fresh
    // prefix would do, but an empty etcd shows nothing else was written).
    let fresh_etcd = Cluster::start_beside(&etcd, Server::Etcd, 1, Options::default()).await;
    let mut tool = Command::new("etcdctl");
    tool.env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={}", raftkv.endpoints()));
    mirror_under_load(&raftkv, &fresh_etcd, tool).await;
    drop(fresh_etcd);
    drop(raftkv);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn make_mirror_rides_through_source_member_kills() {
    let mut raftkv = Cluster::start(Server::Raftkv, 3, Options::default()).await;
    let etcd = Cluster::start_beside(&raftkv, Server::Etcd, 1, Options::default()).await;
    let endpoints = raftkv.endpoints();
    write_load(&endpoints, 0, 100).await;
    let mut tool = Command::new(raftkvctl_bin());
    tool.arg(format!("--endpoints={endpoints}"));
    let child = start_mirror(&etcd, tool);
    write_load(&endpoints, 100, 100).await;

    // The member the mirror's watch is on (the first endpoint that answers), then whichever
    // member leads: killed while writes go on, brought back, writes go on.
    let mut round = 200;
    for victim in [Some(0), None] {
        let i = match victim {
            Some(i) => i,
            None => raftkv.leader().await.expect("a leader"),
        };
        raftkv.kill(i);
        write_load_through_faults(&endpoints, round, 150).await;
        raftkv.restart(i);
        raftkv.wait_healthy(Duration::from_secs(30)).await;
        write_load_through_faults(&endpoints, round + 150, 100).await;
        round += 250;
    }
    converges(&raftkv, &etcd, child).await;
    drop(etcd);
}
