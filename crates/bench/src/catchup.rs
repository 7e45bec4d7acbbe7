//! `raftkv-bench catch-up`: how long a follower that missed a load takes to catch up, beside
//! etcd. A 3-member cluster with a low `--snapshot-count` (so the leader snapshots and
//! compacts its log during the load, and the follower must be sent a snapshot rather than
//! the log), one follower killed, the corpus loaded through the leader, then the follower
//! started again and timed until its revision (a serializable read it answers itself)
//! reaches the leader's.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use raftkv_codec::samples::Corpus;
use raftkv_proto::etcdserverpb::RangeRequest;
use raftkv_proto::etcdserverpb::kv_client::KvClient;

use crate::cluster::{Cluster, Server};
use crate::workload::{connect_channel, find_leader};

/// What to run.
pub struct Plan {
    pub raftkv_bin: PathBuf,
    pub etcd_bin: PathBuf,
    pub corpus: Corpus,
    pub items: u64,
    pub snapshot_count: u64,
}

/// The revision member `endpoint` has applied, as it answers a serializable read.
pub(crate) async fn revision(endpoint: &str) -> Result<i64> {
    let channel = connect_channel(endpoint, Some(Duration::from_secs(2))).await?;
    let resp = KvClient::new(channel)
        .range(RangeRequest {
            key: "catch-up-probe".into(),
            serializable: true,
            count_only: true,
            ..Default::default()
        })
        .await?
        .into_inner();
    resp.header
        .map(|h| h.revision)
        .context("an answer without a header")
}

struct Figures {
    load_secs: f64,
    revision: i64,
    catch_up_secs: f64,
}

/// Runs etcd then raftkv; prints a markdown table.
pub async fn run(plan: &Plan) -> Result<()> {
    let mut figures = Vec::new();
    for server in [Server::Etcd, Server::Raftkv] {
        let bin = server.pick(&plan.etcd_bin, &plan.raftkv_bin);
        eprintln!(
            "== {}: {} {} items, --snapshot-count={}",
            server.name(),
            plan.items,
            plan.corpus.name(),
            plan.snapshot_count
        );
        let flags = [
            format!("--snapshot-count={}", plan.snapshot_count),
            "--quota-backend-bytes=8589934592".to_string(),
        ];
        let mut cluster = Cluster::start(server, bin, 3, &flags, None).await?;
        let leader = find_leader(&cluster.client_endpoints).await?;
        let follower = cluster
            .client_endpoints
            .iter()
            .rposition(|e| *e != leader)
            .context("a follower")?;
        let follower_endpoint = cluster.client_endpoints[follower].clone();
        cluster.kill(follower);
        let started = Instant::now();
        crate::snapshots::load(&leader, plan.corpus, plan.items).await?;
        let load_secs = started.elapsed().as_secs_f64();
        let target = revision(&leader).await?;

        let started = Instant::now();
        cluster.restart(follower)?;
        loop {
            if revision(&follower_endpoint).await.unwrap_or(0) >= target {
                break;
            }
            if started.elapsed() > Duration::from_secs(1800) {
                bail!(
                    "{} follower did not reach revision {target} in 30 min",
                    server.name()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let catch_up_secs = started.elapsed().as_secs_f64();
        eprintln!(
            "  load {load_secs:.1} s, revision {target}, follower caught up in {catch_up_secs:.2} s"
        );
        figures.push(Figures {
            load_secs,
            revision: target,
            catch_up_secs,
        });
    }
    let (e, r) = (&figures[0], &figures[1]);
    println!(
        "{} items of the `{}` corpus, 3 members, `--snapshot-count={}`; one follower down during the load:\n",
        plan.items,
        plan.corpus.name(),
        plan.snapshot_count
    );
    println!("| | etcd | raftkv | raftkv / etcd |\n|---|---:|---:|---:|");
    println!(
        "| load through the leader (64 clients) | {:.1} s | {:.1} s | {:.2} |",
        e.load_secs,
        r.load_secs,
        r.load_secs / e.load_secs
    );
    println!(
        "| follower restarted → at the leader's revision ({}, {}) | {:.2} s | {:.2} s | {:.2} |",
        e.revision,
        r.revision,
        e.catch_up_secs,
        r.catch_up_secs,
        r.catch_up_secs / e.catch_up_secs
    );
    Ok(())
}
