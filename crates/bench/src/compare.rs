//! `raftkv-bench compare`: the same workloads against a real etcd 3.4 cluster and a raftkv
//! cluster of the same size, in one run on this machine, then a Markdown section (between
//! markers in `docs/benchmarks.md`) and a PNG plot. With `--tls` both servers run with TLS
//! and certificate authentication on both ports, the workloads dial with a client
//! certificate, and the section has markers of its own, so both runs live in the file.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use raftkv_codec::samples::Corpus;
use raftkv_proto::etcdserverpb::kv_client::KvClient;
use raftkv_proto::etcdserverpb::{PutRequest, RangeRequest};
use serde::Serialize;

use crate::certs::Certs;
use crate::cluster::{Cluster, Server};
use crate::lease;
use crate::plot::{self, Panel, Series};
use crate::stats::Report;
use crate::watch::{self, LatencyOptions, Watchers};
use crate::workload::{self, KeyGen, Options, Workload};

/// What `compare` runs.
#[derive(Debug, Clone)]
pub struct Plan {
    pub raftkv_bin: PathBuf,
    pub etcd_bin: PathBuf,
    pub sizes: Vec<usize>,
    /// Requests in workload (a), one client.
    pub sequential_total: u64,
    /// Requests in workloads (b) and (c).
    pub total: u64,
    /// Requests in workloads (b-k) and (c-k), with Kubernetes-like Pod values (0: skip
    /// (a-k), (b-k) and (c-k)).
    pub pod_total: u64,
    /// Keys loaded for the memory comparison (0: skip it).
    pub memory_keys: u64,
    /// Rounds of the workloads other than (d) and (e) (and memory), the servers alternating
    /// which goes first; each figure is the median of its rounds. At least 1.
    pub rounds: usize,
    /// Watchers in workload (d), watch latency (0: skip it).
    pub watch_latency_watchers: usize,
    /// Puts in workload (d).
    pub watch_put_total: usize,
    /// Puts per second in workload (d).
    pub watch_put_rate: u64,
    /// Watchers open during workload (e)'s puts (0: skip it).
    pub put_watchers: usize,
    /// Keep-alives in workload (f), lease keep-alive (0: skip it).
    pub lease_keepalive_total: u64,
    /// Grants in workload (g), lease grant (0: skip it).
    pub lease_grant_total: u64,
    /// Extra member flags for both servers.
    pub flags: Vec<String>,
    /// TLS with certificate authentication on both ports of both servers.
    pub tls: bool,
    pub markdown: PathBuf,
    pub plot: PathBuf,
    pub json: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize)]
struct Row {
    size: usize,
    server: &'static str,
    id: &'static str,
    /// The round it ran in, from 0 (a median over rounds: the number of rounds).
    round: usize,
    report: Report,
}

#[derive(Debug, Clone, Serialize)]
struct Memory {
    server: &'static str,
    size: usize,
    keys: u64,
    load: Report,
    rss_bytes: Vec<u64>,
}

/// What the watch workloads saw beside their latencies.
#[derive(Debug, Clone, Serialize)]
struct WatchNote {
    server: &'static str,
    size: usize,
    id: &'static str,
    watchers: usize,
    /// Events the watchers should have had.
    expected_events: u64,
    received_events: u64,
    /// (e): events received while the puts ran, a second.
    events_per_sec: f64,
    /// (e): how long after the last put every watcher had its event (None: not within the
    /// limit).
    level_after_ms: Option<f64>,
    error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
struct Results {
    /// Each workload's figures: the medians over the rounds where there were several.
    rows: Vec<Row>,
    /// Every round's own rows (empty with one round: `rows` holds them).
    by_round: Vec<Row>,
    memory: Vec<Memory>,
    watch: Vec<WatchNote>,
    flags: Vec<String>,
    tls: bool,
}

/// Workload (d)'s watchers per stream, and (e)'s streams.
const WATCHERS_PER_STREAM: usize = 100;
const PUT_WATCH_STREAMS: usize = 10;
/// How long events may still arrive after the last put of (d) or (e).
const EVENT_TIMEOUT: Duration = Duration::from_secs(120);

const BEGIN: &str = "<!-- raftkv-bench compare: begin -->";
const END: &str = "<!-- raftkv-bench compare: end -->";
/// The markers of the `--tls` run's section.
const TLS_BEGIN: &str = "<!-- raftkv-bench compare --tls: begin -->";
const TLS_END: &str = "<!-- raftkv-bench compare --tls: end -->";

/// The markers of the plan's section.
fn markers(plan: &Plan) -> (&'static str, &'static str) {
    if plan.tls {
        (TLS_BEGIN, TLS_END)
    } else {
        (BEGIN, END)
    }
}

fn opts(endpoints: &[String], conns: usize, clients: usize, total: u64, leader: bool) -> Options {
    Options {
        endpoints: endpoints.to_vec(),
        conns,
        clients,
        total,
        duration: None,
        rate: 0,
        target_leader: leader,
        progress: false,
        timeout: Duration::from_secs(10),
    }
}

/// Puts of 8-byte keys and 256-byte values over `key_space` keys (compare's and scale's).
pub(crate) fn puts(key_space: u64, sequential: bool) -> Workload {
    Workload::Put(KeyGen {
        key_size: 8,
        val_size: 256,
        key_space,
        sequential,
    })
}

async fn workloads(plan: &Plan, cluster: &Cluster, size: usize) -> Result<Vec<Row>> {
    let eps = &cluster.client_endpoints;
    let server = cluster.server.name();
    let mut rows = Vec::new();
    let mut push = |id: &'static str, report: Report| {
        log(server, size, id, &report);
        rows.push(Row {
            size,
            server,
            id,
            round: 0,
            report,
        });
    };
    // Warm up connections and the leader's caches, not measured.
    workload::run(&opts(eps, 1, 1, 200, true), &puts(200, true)).await?;
    push(
        "a",
        workload::run(
            &opts(eps, 1, 1, plan.sequential_total, true),
            &puts(u64::MAX, true),
        )
        .await?,
    );
    push(
        "b",
        workload::run(&opts(eps, 10, 100, plan.total, true), &puts(10_000, false)).await?,
    );
    let leader = workload::find_leader(eps).await?;
    let channel = workload::connect_channel(&leader, None).await?;
    KvClient::new(channel)
        .put(PutRequest {
            key: b"bench-range-key".to_vec().into(),
            value: vec![b'v'; 256].into(),
            ..Default::default()
        })
        .await?;
    let range = |serializable| Workload::Range {
        key: b"bench-range-key".to_vec(),
        end: Vec::new(),
        limit: 0,
        serializable,
    };
    push(
        "c",
        workload::run(&opts(eps, 10, 100, plan.total, false), &range(false)).await?,
    );
    let mut report = workload::run(&opts(eps, 10, 100, plan.total, false), &range(true)).await?;
    report.workload = "range, serializable".into();
    push("c-s", report);
    if plan.pod_total > 0 {
        // (a), (b) and (c) again with ~1.5 KB Kubernetes-like Pod objects under
        // `/registry/pods/...` keys instead of 8-byte keys and 256-byte values.
        let items = pod_items(POD_ITEMS.max(plan.sequential_total));
        let pods = |sequential| Workload::PutItems {
            items: items.clone(),
            sequential,
        };
        let mut report =
            workload::run(&opts(eps, 1, 1, plan.sequential_total, true), &pods(true)).await?;
        report.workload = "put, pods".into();
        push("a-k", report);
        let mut report =
            workload::run(&opts(eps, 10, 100, plan.pod_total, true), &pods(false)).await?;
        report.workload = "put, pods".into();
        push("b-k", report);
        let (key, value) = &items[0];
        KvClient::new(workload::connect_channel(&leader, None).await?)
            .put(PutRequest {
                key: key.clone(),
                value: value.clone(),
                ..Default::default()
            })
            .await?;
        let pod_range = Workload::Range {
            key: key.to_vec(),
            end: Vec::new(),
            limit: 0,
            serializable: false,
        };
        let mut report =
            workload::run(&opts(eps, 10, 100, plan.pod_total, false), &pod_range).await?;
        report.workload = "range, pod".into();
        push("c-k", report);
    }
    Ok(rows)
}

/// Distinct Pods in workloads (a-k) and (b-k) (at least (a)'s puts, so that each of its
/// puts creates a key).
const POD_ITEMS: u64 = 10_000;

/// Items `0..n` of the Kubernetes-like corpus (`raftkv_codec::samples::Corpus::Pods`).
fn pod_items(n: u64) -> std::sync::Arc<[(bytes::Bytes, bytes::Bytes)]> {
    (0..n)
        .map(|i| {
            let (key, value) = Corpus::Pods.item(i, 1);
            (
                bytes::Bytes::from(key.into_bytes()),
                bytes::Bytes::from(value),
            )
        })
        .collect()
}

fn log(server: &str, size: usize, id: &str, report: &Report) {
    eprintln!(
        "  {server} x{size} {id}: {:.0} req/s, p50 {:.3} ms, p99 {:.3} ms, errors {}",
        report.requests_per_sec, report.latency_ms.p50, report.latency_ms.p99, report.errors
    );
}

/// (d) watch latency and (e) puts with watchers open.
async fn watch_workloads(
    plan: &Plan,
    cluster: &Cluster,
    size: usize,
) -> Result<(Vec<Row>, Vec<WatchNote>)> {
    let eps = &cluster.client_endpoints;
    let server = cluster.server.name();
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    let mut push = |id: &'static str, report: Report| {
        log(server, size, id, &report);
        rows.push(Row {
            size,
            server,
            id,
            round: 0,
            report,
        });
    };
    if plan.watch_latency_watchers > 0 {
        let streams = plan.watch_latency_watchers.div_ceil(WATCHERS_PER_STREAM);
        let r = watch::latency(&LatencyOptions {
            endpoints: eps.clone(),
            conns: 10,
            clients: 10,
            streams,
            watchers_per_stream: WATCHERS_PER_STREAM.min(plan.watch_latency_watchers),
            put_total: plan.watch_put_total,
            put_rate: plan.watch_put_rate,
            key_size: 32,
            val_size: 32,
            prev_kv: false,
            target_leader: false,
            put_to_leader: true,
            timeout: Duration::from_secs(10),
            drain: EVENT_TIMEOUT,
            progress: false,
        })
        .await?;
        notes.push(WatchNote {
            server,
            size,
            id: "d",
            watchers: r.watchers,
            expected_events: r.expected_events,
            received_events: r.received_events,
            events_per_sec: r.from_issue.requests_per_sec,
            level_after_ms: None,
            error: r.from_issue.first_error.clone(),
        });
        push("d", r.from_issue);
        push("d-ack", r.from_ack);
        push("d-put", r.put);
    }
    if plan.put_watchers > 0 {
        // The same puts as (b), first with no watchers, then with watchers of every key.
        let mut none =
            workload::run(&opts(eps, 10, 100, plan.total, true), &puts(10_000, false)).await?;
        none.workload = "put, no watchers".into();
        push("e0", none);
        let per_stream = plan.put_watchers.div_ceil(PUT_WATCH_STREAMS);
        // clientv3's WithPrefix on the empty prefix: "\0" up to the end of the keyspace.
        let watchers = Watchers::open(
            eps,
            PUT_WATCH_STREAMS,
            PUT_WATCH_STREAMS,
            per_stream,
            b"\0",
            b"\0",
        )
        .await?;
        let before = watchers.received();
        let started = Instant::now();
        let mut with =
            workload::run(&opts(eps, 10, 100, plan.total, true), &puts(10_000, false)).await?;
        let during = watchers.received() - before;
        let seconds = started.elapsed().as_secs_f64();
        let revision = leader_revision(eps).await?;
        let level = watchers.level_with(revision, EVENT_TIMEOUT).await;
        let received = watchers.received() - before;
        let error = watchers.close().await;
        let total = (per_stream * PUT_WATCH_STREAMS) as u64;
        with.workload = format!("put, {total} watchers");
        notes.push(WatchNote {
            server,
            size,
            id: "e",
            watchers: total as usize,
            expected_events: with.total * total,
            received_events: received,
            events_per_sec: during as f64 / seconds.max(1e-9),
            level_after_ms: level.map(|d| d.as_secs_f64() * 1000.0),
            error,
        });
        push("e", with);
    }
    Ok((rows, notes))
}

/// (f) lease keep-alive and (g) lease grant. They run last on each cluster, so the leases
/// they leave behind expire (a Raft write each) only once the cluster is gone.
async fn lease_workloads(plan: &Plan, cluster: &Cluster, size: usize) -> Result<Vec<Row>> {
    let eps = &cluster.client_endpoints;
    let server = cluster.server.name();
    let mut rows = Vec::new();
    let mut push = |id: &'static str, report: Report| {
        log(server, size, id, &report);
        rows.push(Row {
            size,
            server,
            id,
            round: 0,
            report,
        });
    };
    if plan.lease_keepalive_total > 0 {
        // etcd's tool over all the endpoints it is given: followers pass keep-alives on.
        let keepalive = Workload::LeaseKeepAlive {
            ttl: lease::KEEPALIVE_TTL,
        };
        let o = opts(eps, 10, 100, plan.lease_keepalive_total, false);
        push("f", workload::run(&o, &keepalive).await?);
    }
    if plan.lease_grant_total > 0 {
        // A grant is a Raft write: to the leader, as the puts of (b).
        let grant = Workload::LeaseGrant {
            ttl: lease::KEEPALIVE_TTL,
        };
        let o = opts(eps, 10, 100, plan.lease_grant_total, true);
        push("g", workload::run(&o, &grant).await?);
    }
    Ok(rows)
}

/// The leader's store revision (every acknowledged write is at or below it).
async fn leader_revision(eps: &[String]) -> Result<i64> {
    let leader = workload::find_leader(eps).await?;
    let channel = workload::connect_channel(&leader, None).await?;
    let header = KvClient::new(channel)
        .range(RangeRequest {
            key: b"\0".to_vec().into(),
            limit: 1,
            ..Default::default()
        })
        .await?
        .into_inner()
        .header;
    header
        .map(|h| h.revision)
        .context("a range answer without a header")
}

async fn memory(plan: &Plan, cluster: &Cluster, size: usize) -> Result<Memory> {
    let eps = &cluster.client_endpoints;
    let load = workload::run(
        &opts(eps, 10, 100, plan.memory_keys, true),
        &puts(plan.memory_keys, true),
    )
    .await?;
    // Let background work (compaction of the write path, GC) settle before sampling.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let rss = cluster.rss()?;
    eprintln!(
        "  {} x{size} memory after {} keys: {:?} MiB (load {:.0} put/s, {} errors)",
        cluster.server.name(),
        plan.memory_keys,
        rss.iter().map(|b| b >> 20).collect::<Vec<_>>(),
        load.requests_per_sec,
        load.errors
    );
    Ok(Memory {
        server: cluster.server.name(),
        size,
        keys: plan.memory_keys,
        load,
        rss_bytes: rss,
    })
}

/// Runs the plan and writes its outputs.
pub async fn run(plan: &Plan) -> Result<()> {
    let mut results = Results {
        rows: Vec::new(),
        by_round: Vec::new(),
        memory: Vec::new(),
        watch: Vec::new(),
        flags: plan.flags.clone(),
        tls: plan.tls,
    };
    // Dropped (with the keys) once both servers are done.
    let certs = if plan.tls {
        let certs = Certs::make()?;
        workload::use_tls(certs.client_config()?);
        Some(certs)
    } else {
        None
    };
    let rounds = plan.rounds.max(1);
    for &size in &plan.sizes {
        for round in 0..rounds {
            for server in round_order(round) {
                let bin = server.pick(&plan.etcd_bin, &plan.raftkv_bin);
                if rounds > 1 {
                    eprintln!(
                        "== {} cluster of {size}, round {} of {rounds}",
                        server.name(),
                        round + 1
                    );
                } else {
                    eprintln!("== {} cluster of {size}", server.name());
                }
                let cluster =
                    Cluster::start(server, bin, size, &plan.flags, certs.as_ref()).await?;
                let mut rows = workloads(plan, &cluster, size).await?;
                if size == plan.sizes[0] && round == 0 {
                    let (watch_rows, notes) = watch_workloads(plan, &cluster, size).await?;
                    rows.extend(watch_rows);
                    results.watch.extend(notes);
                }
                rows.extend(lease_workloads(plan, &cluster, size).await?);
                drop(cluster);
                results
                    .rows
                    .extend(rows.into_iter().map(|row| Row { round, ..row }));
                if plan.memory_keys > 0 && size == plan.sizes[0] && round == 0 {
                    let cluster =
                        Cluster::start(server, bin, size, &plan.flags, certs.as_ref()).await?;
                    results.memory.push(memory(plan, &cluster, size).await?);
                }
            }
        }
    }
    if rounds > 1 {
        results.by_round = std::mem::take(&mut results.rows);
        results.rows = medians(&results.by_round);
    }
    if let Some(path) = &plan.json {
        std::fs::write(path, serde_json::to_string_pretty(&results)?)?;
    }
    draw(plan, &results)?;
    let section = markdown(plan, &results);
    let (begin, end) = markers(plan);
    splice(&plan.markdown, &section, begin, end)?;
    println!("{section}");
    Ok(())
}

/// Which server goes first in `round` (from 0): etcd in even rounds, raftkv in odd ones, so
/// that a machine that slows down or speeds up over a run favours neither.
fn round_order(round: usize) -> [Server; 2] {
    if round.is_multiple_of(2) {
        [Server::Etcd, Server::Raftkv]
    } else {
        [Server::Raftkv, Server::Etcd]
    }
}

/// One row per workload, server and size: every figure the median of its rounds' figures
/// (of an even count, the mean of the middle two), errors and requests summed, the
/// histogram and the stall episodes of the round whose rate is the median one. `round` is
/// the number of rounds it was taken over.
fn medians(by_round: &[Row]) -> Vec<Row> {
    let mut out: Vec<Row> = Vec::new();
    for row in by_round {
        if out
            .iter()
            .any(|o| (o.size, o.server, o.id) == (row.size, row.server, row.id))
        {
            continue;
        }
        let same: Vec<&Report> = by_round
            .iter()
            .filter(|r| (r.size, r.server, r.id) == (row.size, row.server, row.id))
            .map(|r| &r.report)
            .collect();
        let median = |f: &dyn Fn(&Report) -> f64| {
            let mut v: Vec<f64> = same.iter().map(|r| f(r)).collect();
            v.sort_by(f64::total_cmp);
            let n = v.len();
            if !n.is_multiple_of(2) {
                v[n / 2]
            } else {
                (v[n / 2 - 1] + v[n / 2]) / 2.0
            }
        };
        let rate = median(&|r| r.requests_per_sec);
        // The round nearest the median rate lends its histogram and episodes.
        let middle = same
            .iter()
            .min_by(|a, b| {
                (a.requests_per_sec - rate)
                    .abs()
                    .total_cmp(&(b.requests_per_sec - rate).abs())
            })
            .expect("a row has at least its own round");
        let mut report = (*middle).clone();
        report.requests_per_sec = rate;
        report.seconds = median(&|r| r.seconds);
        report.total = same.iter().map(|r| r.total).sum();
        report.errors = same.iter().map(|r| r.errors).sum();
        report.first_error = same.iter().find_map(|r| r.first_error.clone());
        report.over_stall = same.iter().map(|r| r.over_stall).sum();
        let l = &mut report.latency_ms;
        l.avg = median(&|r| r.latency_ms.avg);
        l.stddev = median(&|r| r.latency_ms.stddev);
        l.min = median(&|r| r.latency_ms.min);
        l.max = median(&|r| r.latency_ms.max);
        l.p50 = median(&|r| r.latency_ms.p50);
        l.p90 = median(&|r| r.latency_ms.p90);
        l.p95 = median(&|r| r.latency_ms.p95);
        l.p99 = median(&|r| r.latency_ms.p99);
        l.p999 = median(&|r| r.latency_ms.p999);
        out.push(Row {
            size: row.size,
            server: row.server,
            id: row.id,
            round: same.len(),
            report,
        });
    }
    out
}

/// raftkv's figure over etcd's in each round, lowest and highest: " (0.81–1.12 by round)",
/// or nothing with one round.
fn round_spread(
    results: &Results,
    size: usize,
    id: &str,
    figure: &dyn Fn(&Report) -> f64,
) -> String {
    let of = |server: &str, round: usize| {
        results
            .by_round
            .iter()
            .find(|r| (r.size, r.server, r.id, r.round) == (size, server, id, round))
            .map(|r| figure(&r.report))
    };
    let ratios: Vec<f64> = (0..)
        .map_while(|round| Some((of("etcd", round)?, of("raftkv", round)?)))
        .filter(|&(e, _)| e > 0.0)
        .map(|(e, r)| r / e)
        .collect();
    if ratios.len() < 2 {
        return String::new();
    }
    let lo = ratios.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = ratios.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!(" ({lo:.2}–{hi:.2} by round)")
}

fn find<'a>(results: &'a Results, size: usize, server: &str, id: &str) -> Option<&'a Report> {
    results
        .rows
        .iter()
        .find(|r| r.size == size && r.server == server && r.id == id)
        .map(|r| &r.report)
}

fn ratio(ours: f64, theirs: f64) -> String {
    if theirs > 0.0 {
        format!("{:.2}", ours / theirs)
    } else {
        "–".into()
    }
}

fn fraction(part: f64, whole: f64) -> f64 {
    if whole > 0.0 { part / whole } else { 0.0 }
}

fn watchers_of(results: &Results, server: &str, id: &str) -> usize {
    results
        .watch
        .iter()
        .find(|n| n.server == server && n.id == id)
        .map_or(0, |n| n.watchers)
}

fn verdict(ok: bool) -> &'static str {
    if ok { "yes" } else { "**no**" }
}

fn markdown(plan: &Plan, results: &Results) -> String {
    let mut md = String::new();
    let flags = if plan.flags.is_empty() {
        "default timing flags".to_string()
    } else {
        format!("flags `{}`", plan.flags.join(" "))
    };
    let (begin, end) = markers(plan);
    let _ = writeln!(md, "{begin}");
    let (script, tls) = if plan.tls {
        (
            "`scripts/compare-etcd --tls`",
            " **TLS on** for both servers, on the client and the peer port (`https://` URLs, \
             one CA made for the run; every member serves one certificate for 127.0.0.1 and \
             localhost on both ports and presents it to its peers; `--client-cert-auth` and \
             `--peer-client-cert-auth`), every workload dialling with a client certificate.",
        )
    } else {
        ("`scripts/compare-etcd`", "")
    };
    let pods = if results.rows.iter().any(|r| r.id == "b-k") {
        format!(
            " (a-k), (b-k), (c-k): (a), (b) and (c) with Kubernetes-like Pod objects instead \
             (`/registry/pods/<namespace>/<name>` keys, ~1.5 KB of JSON values with random \
             uids, hashes, IPs and timestamps: the snapshot section's corpus), (b-k) over {} \
             Pods, {} requests each in (b-k) and (c-k).",
            POD_ITEMS.max(plan.sequential_total),
            plan.pod_total
        )
    } else {
        String::new()
    };
    let rounds = if plan.rounds > 1 {
        format!(
            "one run of {} rounds (each round starts a fresh cluster of each server, the two \
             taking turns to go first; every figure below is the median of its rounds, errors \
             their sum, and a bar's ratio is followed by its lowest and highest in a single \
             round; the watch workloads and the memory row are from the first round)",
            plan.rounds
        )
    } else {
        "one run".to_string()
    };
    let _ = writeln!(
        md,
        "Written by `raftkv-bench compare` (run {script}): etcd {} and raftkv, \
         same client, same machine, {rounds}, fsync on for both, {flags}.{tls} Keys 8 bytes, values \
         256 bytes. (a) sequential put, 1 client, {} puts to the leader; (b) 100 clients over \
         10 connections to the leader, {} puts over 10,000 random keys; (c) linearizable range \
         of one key, 100 clients over 10 connections spread over all members, {} requests; (c-s) \
         the same with serializable reads (each member answers from its own store).{pods} \
         The bars on (a), (b), (c), their 1.5 KB forms and memory are issue 18's: one client's \
         put p50 at most 0.7× etcd's, 100 clients' put/s at least 1.5× and their p99 at most \
         0.8×, linearizable get/s at least 2×, RSS at most 0.5×; the others ask for etcd's \
         figure or better.\n",
        etcd_version(&plan.etcd_bin),
        plan.sequential_total,
        plan.total,
        plan.total
    );
    let first = plan.sizes.first().copied().unwrap_or(0);
    if results.watch.iter().any(|n| n.id == "d") {
        let _ = writeln!(
            md,
            "(d) watch latency, {first} members: {} watchers of one 32-byte key ({} per stream, \
             streams over 10 connections spread over all members), one client putting 32-byte \
             values to the leader, {} puts at up to {}/s (etcd's limiter, which allows a burst of \
             as many at the start; the one client puts one after another, so each server \
             reaches the rate its put latency allows: the (d-put) rows, and every put is an \
             event at each watcher); an event's latency runs from its put being sent to its arrival at a watcher \
             (etcd's tool measures from the put's acknowledgement, which the table below shows \
             as (d-ack), 0 for an event that came first).\n",
            plan.watch_latency_watchers.div_ceil(WATCHERS_PER_STREAM) * WATCHERS_PER_STREAM,
            WATCHERS_PER_STREAM.min(plan.watch_latency_watchers),
            plan.watch_put_total,
            plan.watch_put_rate
        );
    }
    if let Some(n) = results.watch.iter().find(|n| n.id == "e") {
        let _ = writeln!(
            md,
            "(e) workload (b) again, {first} members, first with no watchers, then with {} \
             watchers of every key (key `\\0`, range end `\\0`: clientv3's prefix watch of \
             the empty prefix) on {PUT_WATCH_STREAMS} streams over {PUT_WATCH_STREAMS} connections \
             spread over all members, all reading.\n",
            n.watchers
        );
    }
    if results.rows.iter().any(|r| r.id == "f" || r.id == "g") {
        let _ = writeln!(
            md,
            "(f) lease keep-alive, as etcd's `benchmark lease-keepalive`: 100 clients over 10 \
             connections spread over all members, each grants one lease (TTL {ttl} s), then \
             sends keep-alives one at a time, each on a LeaseKeepAlive stream of its own \
             (clientv3's KeepAliveOnce), {} in all; (g) lease grant (`raftkv-bench \
             lease-grant`): 100 clients over 10 connections to the leader, {} grants of TTL \
             {ttl} s, one Raft write each. A keep-alive answered with TTL 0 counts as an error.\n",
            plan.lease_keepalive_total,
            plan.lease_grant_total,
            ttl = lease::KEEPALIVE_TTL
        );
    }
    let _ = writeln!(
        md,
        "| members | bar | etcd | raftkv | raftkv / etcd | holds |\n|---:|---|---:|---:|---:|---|"
    );
    for &size in &plan.sizes {
        let get = |server, id| find(results, size, server, id);
        kv_rows(&mut md, results, size, ["a", "b", "c"], "");
        if let (Some(e), Some(r)) = (get("etcd", "c-s"), get("raftkv", "c-s")) {
            let _ = writeln!(
                md,
                "| {size} | (c-s) serializable get/s (no bar) | {:.0} | {:.0} | {} | – |",
                e.requests_per_sec,
                r.requests_per_sec,
                ratio(r.requests_per_sec, e.requests_per_sec)
            );
        }
        kv_rows(
            &mut md,
            results,
            size,
            ["a-k", "b-k", "c-k"],
            ", 1.5 KB Pods",
        );
        if let (Some(e), Some(r)) = (get("etcd", "d"), get("raftkv", "d")) {
            let _ = writeln!(
                md,
                "| {size} | (d) watch event p50, {} watchers (no bar) | {:.3} ms | {:.3} ms | {} | – |",
                watchers_of(results, "raftkv", "d"),
                e.latency_ms.p50,
                r.latency_ms.p50,
                ratio(r.latency_ms.p50, e.latency_ms.p50)
            );
            let _ = writeln!(
                md,
                "| {size} | (d) watch event p99 ≤ etcd's | {:.3} ms | {:.3} ms | {} | {} |",
                e.latency_ms.p99,
                r.latency_ms.p99,
                ratio(r.latency_ms.p99, e.latency_ms.p99),
                verdict(r.latency_ms.p99 <= e.latency_ms.p99 && r.errors == 0)
            );
        }
        if let (Some(e0), Some(e), Some(r0), Some(r)) = (
            get("etcd", "e0"),
            get("etcd", "e"),
            get("raftkv", "e0"),
            get("raftkv", "e"),
        ) {
            let watchers = watchers_of(results, "raftkv", "e");
            let _ = writeln!(
                md,
                "| {size} | (e) put/s, no watchers (no bar) | {:.0} | {:.0} | {} | – |",
                e0.requests_per_sec,
                r0.requests_per_sec,
                ratio(r0.requests_per_sec, e0.requests_per_sec)
            );
            let _ = writeln!(
                md,
                "| {size} | (e) put/s, {watchers} watchers open (no bar) | {:.0} | {:.0} | {} | – |",
                e.requests_per_sec,
                r.requests_per_sec,
                ratio(r.requests_per_sec, e.requests_per_sec)
            );
            let (fe, fr) = (
                fraction(e.requests_per_sec, e0.requests_per_sec),
                fraction(r.requests_per_sec, r0.requests_per_sec),
            );
            let _ = writeln!(
                md,
                "| {size} | (e) put/s with {watchers} watchers ≥ 85 % of put/s with none | {:.0} % | {:.0} % | {} | {} |",
                fe * 100.0,
                fr * 100.0,
                ratio(fr, fe),
                verdict(fr >= 0.85)
            );
            let level = |server| {
                results
                    .watch
                    .iter()
                    .find(|n| n.server == server && n.size == size && n.id == "e")
                    .and_then(|n| n.level_after_ms)
            };
            let show = |ms: Option<f64>| {
                ms.map_or(format!("> {} s", EVENT_TIMEOUT.as_secs()), |ms| {
                    format!("{ms:.0} ms")
                })
            };
            let (le, lr) = (level("etcd"), level("raftkv"));
            let _ = writeln!(
                md,
                "| {size} | (e) every watcher has the last put's event, after the puts end (no bar) | {} | {} | {} | – |",
                show(le),
                show(lr),
                match (le, lr) {
                    (Some(e), Some(r)) => ratio(r, e),
                    _ => "–".into(),
                }
            );
        }
        lease_rows(&mut md, results, size);
    }
    let mem = |server: &str| results.memory.iter().find(|m| m.server == server);
    if let (Some(e), Some(r)) = (mem("etcd"), mem("raftkv")) {
        let max = |m: &Memory| m.rss_bytes.iter().copied().max().unwrap_or(0) as f64 / 1048576.0;
        let _ = writeln!(
            md,
            "| {} | RSS per member after {} keys ≤ {} etcd's (largest member) | {:.0} MiB | {:.0} MiB | {} | {} |",
            e.size,
            e.keys,
            times(RSS_BAR),
            max(e),
            max(r),
            ratio(max(r), max(e)),
            verdict(max(r) <= RSS_BAR * max(e))
        );
    }
    let _ = writeln!(
        md,
        "\n![latency percentiles]({})\n",
        plan.plot
            .file_name()
            .map_or("".into(), |f| f.to_string_lossy())
    );
    let _ = writeln!(
        md,
        "| members | server | workload | req/s | errors | avg | p50 | p90 | p95 | p99 | p99.9 | max (ms) |\n\
         |---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for row in &results.rows {
        let (r, l) = (&row.report, &row.report.latency_ms);
        let _ = writeln!(
            md,
            "| {} | {} | ({}) {} | {:.0} | {} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} |",
            row.size,
            row.server,
            row.id,
            r.workload,
            r.requests_per_sec,
            r.errors,
            l.avg,
            l.p50,
            l.p90,
            l.p95,
            l.p99,
            l.p999,
            l.max
        );
    }
    for n in &results.watch {
        let level = match (n.id, n.level_after_ms) {
            ("e", Some(ms)) => format!(
                "; every watcher had the last put's event {:.0} ms after the puts ended",
                ms
            ),
            ("e", None) => format!(
                "; the watchers were not level with the last put {} s after the puts ended",
                EVENT_TIMEOUT.as_secs()
            ),
            _ => String::new(),
        };
        let rate = if n.id == "e" {
            format!(", {:.0} events/s while the puts ran", n.events_per_sec)
        } else {
            String::new()
        };
        let _ = writeln!(
            md,
            "\nWatch ({}), {} x{}: {} watchers received {} of {} events{rate}{level}{}.",
            n.id,
            n.server,
            n.size,
            n.watchers,
            n.received_events,
            n.expected_events,
            n.error
                .as_ref()
                .map_or(String::new(), |e| format!(" (first error: {e})"))
        );
    }
    for m in &results.memory {
        let _ = writeln!(
            md,
            "\nMemory, {} x{}: loaded {} keys at {:.0} put/s ({} errors); RSS per member: {} MiB.",
            m.server,
            m.size,
            m.keys,
            m.load.requests_per_sec,
            m.load.errors,
            m.rss_bytes
                .iter()
                .map(|b| format!("{}", b >> 20))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let _ = writeln!(md, "{end}");
    md
}

/// Issue 18's bars on the put/put/get trio, as a factor of etcd's figure in the same run:
/// one client's put p50 at most 0.7x etcd's, 100 clients' put/s at least 1.5x and their p99
/// at most 0.8x, linearizable get/s at least 2x (and the same with 1.5 KB values).
const P50_BAR: f64 = 0.7;
const PUT_RATE_BAR: f64 = 1.5;
const P99_BAR: f64 = 0.8;
const GET_RATE_BAR: f64 = 2.0;
/// Issue 18's memory bar: the largest member's RSS after the load at most half etcd's.
const RSS_BAR: f64 = 0.5;

/// The bar rows of a put/put/get trio for one cluster size, against issue 18's factors
/// (above). `label` tells the trio apart in the bar's text.
fn kv_rows(md: &mut String, results: &Results, size: usize, ids: [&str; 3], label: &str) {
    let get = |server, id| find(results, size, server, id);
    let spread = |id, figure: &dyn Fn(&Report) -> f64| round_spread(results, size, id, figure);
    let [a, b, c] = ids;
    if let (Some(e), Some(r)) = (get("etcd", a), get("raftkv", a)) {
        let bar = format!("({a}) put p50 ≤ {} etcd's{label}", times(P50_BAR));
        let by_round = spread(a, &|r| r.latency_ms.p50);
        let (e, r) = (e.latency_ms.p50, r.latency_ms.p50);
        latency_row(md, size, &bar, (e, r, P50_BAR), true, &by_round);
    }
    if let (Some(e), Some(r)) = (get("etcd", b), get("raftkv", b)) {
        let bar = format!("({b}) put/s ≥ {} etcd's{label}", times(PUT_RATE_BAR));
        let by_round = spread(b, &|r| r.requests_per_sec);
        rate_row(md, size, &bar, (e, r, PUT_RATE_BAR), false, &by_round);
        let bar = format!("({b}) put p99 ≤ {} etcd's{label}", times(P99_BAR));
        let by_round = spread(b, &|r| r.latency_ms.p99);
        let (e, r) = (e.latency_ms.p99, r.latency_ms.p99);
        latency_row(md, size, &bar, (e, r, P99_BAR), true, &by_round);
    }
    if let (Some(e), Some(r)) = (get("etcd", c), get("raftkv", c)) {
        let bar = format!("({c}) get/s ≥ {} etcd's{label}", times(GET_RATE_BAR));
        let by_round = spread(c, &|r| r.requests_per_sec);
        rate_row(md, size, &bar, (e, r, GET_RATE_BAR), false, &by_round);
    }
}

/// A bar's factor as the table writes it: `1.5×`, `2×`.
fn times(factor: f64) -> String {
    format!("{factor}×")
}

/// The bar rows of (f) and (g) for one cluster size: rates at least etcd's with no errors,
/// the keep-alive p99 at most etcd's.
fn lease_rows(md: &mut String, results: &Results, size: usize) {
    let get = |server, id| find(results, size, server, id);
    let spread = |id, figure: &dyn Fn(&Report) -> f64| round_spread(results, size, id, figure);
    if let (Some(e), Some(r)) = (get("etcd", "f"), get("raftkv", "f")) {
        let by_round = spread("f", &|r| r.requests_per_sec);
        rate_row(
            md,
            size,
            "(f) lease keep-alive/s ≥ etcd's",
            (e, r, 1.0),
            true,
            &by_round,
        );
        let (bar, clean) = ("(f) lease keep-alive p99 ≤ etcd's", r.errors == 0);
        let by_round = spread("f", &|r| r.latency_ms.p99);
        let (e, r) = (e.latency_ms.p99, r.latency_ms.p99);
        latency_row(md, size, bar, (e, r, 1.0), clean, &by_round);
    }
    if let (Some(e), Some(r)) = (get("etcd", "g"), get("raftkv", "g")) {
        let by_round = spread("g", &|r| r.requests_per_sec);
        rate_row(
            md,
            size,
            "(g) lease grant/s ≥ etcd's",
            (e, r, 1.0),
            true,
            &by_round,
        );
    }
}

/// A bar row on requests a second: raftkv's at least `factor` times etcd's (with `clean`,
/// and no errors), from `(etcd, raftkv, factor)`. `by_round` follows the ratio (see
/// [`round_spread`]).
fn rate_row(
    md: &mut String,
    size: usize,
    bar: &str,
    (e, r, factor): (&Report, &Report, f64),
    clean: bool,
    by_round: &str,
) {
    let (e, r, errors) = (e.requests_per_sec, r.requests_per_sec, r.errors);
    let _ = writeln!(
        md,
        "| {size} | {bar} | {e:.0} | {r:.0} | {}{by_round} | {} |",
        ratio(r, e),
        verdict(r >= factor * e && (!clean || errors == 0))
    );
}

/// A bar row on a latency in ms: raftkv's at most `factor` times etcd's (and `also`), from
/// `(etcd, raftkv, factor)`. `by_round` follows the ratio (see [`round_spread`]).
fn latency_row(
    md: &mut String,
    size: usize,
    bar: &str,
    (e, r, factor): (f64, f64, f64),
    also: bool,
    by_round: &str,
) {
    let _ = writeln!(
        md,
        "| {size} | {bar} | {e:.3} ms | {r:.3} ms | {}{by_round} | {} |",
        ratio(r, e),
        verdict(r <= factor * e && also)
    );
}

pub(crate) fn etcd_version(bin: &Path) -> String {
    std::process::Command::new(bin)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .find_map(|l| l.strip_prefix("etcd Version: ").map(str::to_string))
        })
        .unwrap_or_else(|| "3.4".into())
}

fn draw(plan: &Plan, results: &Results) -> Result<()> {
    // One panel per workload, a series per server and cluster size; panels of workloads
    // that did not run are left out.
    let by_size = |id: &str, title: &str| Panel {
        title: title.to_string(),
        series: results
            .rows
            .iter()
            .filter(|r| r.id == id)
            .map(|r| Series {
                label: format!("{} x{}", r.server, r.size),
                report: &r.report,
                colour: usize::from(r.server == "raftkv"),
                hollow: Some(&r.size) != plan.sizes.first(),
            })
            .collect(),
    };
    let mut panels: Vec<Panel> = [
        ("a", "(a) sequential put, 1 client"),
        ("b", "(b) put, 100 clients"),
        ("c", "(c) linearizable get, 100 clients"),
        ("a-k", "(a-k) sequential put of 1.5 KB Pods, 1 client"),
        ("b-k", "(b-k) put of 1.5 KB Pods, 100 clients"),
        ("c-k", "(c-k) linearizable get of a Pod, 100 clients"),
    ]
    .iter()
    .map(|(id, title)| by_size(id, title))
    .filter(|panel| !panel.series.is_empty())
    .collect();
    let series = |ids: &[&str]| -> Vec<Series> {
        results
            .rows
            .iter()
            .filter(|r| ids.contains(&r.id))
            .map(|r| Series {
                label: format!("{} x{}, {}", r.server, r.size, r.report.workload),
                report: &r.report,
                colour: usize::from(r.server == "raftkv"),
                hollow: r.id == "e",
            })
            .collect()
    };
    let d = series(&["d"]);
    if !d.is_empty() {
        panels.push(Panel {
            title: format!(
                "(d) watch event, {} watchers",
                watchers_of(results, "raftkv", "d")
            ),
            series: d,
        });
    }
    let e = series(&["e0", "e"]);
    if !e.is_empty() {
        panels.push(Panel {
            title: "(e) put, 100 clients, with watchers".into(),
            series: e,
        });
    }
    for (id, title) in [
        ("f", "(f) lease keep-alive, 100 clients"),
        ("g", "(g) lease grant, 100 clients"),
    ] {
        let panel = by_size(id, title);
        if !panel.series.is_empty() {
            panels.push(panel);
        }
    }
    let title = if plan.tls {
        "raftkv vs etcd, TLS on: latency percentiles (lower is better)"
    } else {
        "raftkv vs etcd: latency percentiles (lower is better)"
    };
    plot::latency_percentiles(&plan.plot, title, &panels)
}

/// Replaces the section between the markers `begin` and `end` in `path` (appends it if
/// there is none).
pub(crate) fn splice(path: &Path, section: &str, begin: &str, end: &str) -> Result<()> {
    let old = std::fs::read_to_string(path).unwrap_or_default();
    let new = match (old.find(begin), old.find(end)) {
        (Some(b), Some(e)) if b < e => {
            format!(
                "{}{}{}",
                &old[..b],
                section.trim_end(),
                &old[e + end.len()..]
            )
        }
        (None, None) => format!("{}\n{section}", old.trim_end()),
        _ => bail!("{}: unbalanced compare markers", path.display()),
    };
    std::fs::write(path, new).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(workload: &str, per_sec: f64, p50: f64, p99: f64) -> Report {
        let mut r = crate::stats::Recorder::new().report(workload, Duration::from_secs(1));
        r.requests_per_sec = per_sec;
        r.latency_ms.p50 = p50;
        r.latency_ms.p99 = p99;
        r
    }

    fn row(size: usize, server: &'static str, id: &'static str, report: Report) -> Row {
        Row {
            size,
            server,
            id,
            round: 0,
            report,
        }
    }

    /// A plain run's results holding `rows` and nothing else.
    fn results(rows: Vec<Row>) -> Results {
        Results {
            rows,
            by_round: vec![],
            memory: vec![],
            watch: vec![],
            flags: vec![],
            tls: false,
        }
    }

    fn note(server: &'static str, id: &'static str, level_after_ms: Option<f64>) -> WatchNote {
        WatchNote {
            server,
            size: 3,
            id,
            watchers: if id == "d" { 10_000 } else { 1_000 },
            expected_events: 10,
            received_events: 10,
            events_per_sec: 5.0,
            level_after_ms,
            error: None,
        }
    }

    fn plan() -> Plan {
        Plan {
            raftkv_bin: "raftkv".into(),
            etcd_bin: "/nonexistent/etcd".into(),
            sizes: vec![3],
            sequential_total: 1,
            total: 1,
            pod_total: 0,
            memory_keys: 0,
            rounds: 1,
            watch_latency_watchers: 10_000,
            watch_put_total: 1_000,
            watch_put_rate: 100,
            put_watchers: 1_000,
            lease_keepalive_total: 20_000,
            lease_grant_total: 10_000,
            flags: vec![],
            tls: false,
            markdown: "b.md".into(),
            plot: "p.png".into(),
            json: None,
        }
    }

    #[test]
    fn watch_rows_carry_ratios_and_verdicts() {
        let plan = plan();
        let results = Results {
            watch: vec![
                note("etcd", "d", None),
                note("raftkv", "d", None),
                note("etcd", "e", Some(80.0)),
                note("raftkv", "e", None),
            ],
            ..results(vec![
                row(3, "etcd", "d", report("watch", 1.0, 20.0, 50.0)),
                row(3, "raftkv", "d", report("watch", 1.0, 10.0, 40.0)),
                row(3, "etcd", "e0", report("put", 10_000.0, 1.0, 1.0)),
                row(3, "etcd", "e", report("put", 2_000.0, 1.0, 1.0)),
                row(3, "raftkv", "e0", report("put", 8_000.0, 1.0, 1.0)),
                row(3, "raftkv", "e", report("put", 6_400.0, 1.0, 1.0)),
            ])
        };
        let md = markdown(&plan, &results);
        assert!(
            md.contains(
                "| 3 | (d) watch event p99 ≤ etcd's | 50.000 ms | 40.000 ms | 0.80 | yes |"
            ),
            "{md}"
        );
        assert!(md.contains("| 3 | (d) watch event p50, 10000 watchers (no bar) | 20.000 ms | 10.000 ms | 0.50 | – |"), "{md}");
        // etcd keeps 20 %, raftkv 80 %: below the 85 % bar.
        assert!(
            md.contains("| 3 | (e) put/s with 1000 watchers ≥ 85 % of put/s with none | 20 % | 80 % | 4.00 | **no** |"),
            "{md}"
        );
        assert!(md.contains("| 80 ms | > 120 s | – | – |"), "{md}");
        assert!(md.starts_with(BEGIN) && md.trim_end().ends_with(END));
    }

    #[test]
    fn lease_rows_carry_ratios_and_verdicts_per_size() {
        let mut plan = plan();
        plan.sizes = vec![3, 5];
        let mut failing = report("lease-keepalive", 30_000.0, 1.0, 4.0);
        failing.errors = 3;
        let results = results(vec![
            row(3, "etcd", "b", report("put", 9_000.0, 10.0, 20.0)),
            row(3, "raftkv", "b", report("put", 9_500.0, 9.0, 25.0)),
            row(
                3,
                "etcd",
                "f",
                report("lease-keepalive", 10_000.0, 8.0, 20.0),
            ),
            row(
                3,
                "raftkv",
                "f",
                report("lease-keepalive", 15_000.0, 5.0, 10.0),
            ),
            row(3, "etcd", "g", report("lease-grant", 8_000.0, 10.0, 30.0)),
            row(3, "raftkv", "g", report("lease-grant", 6_000.0, 12.0, 40.0)),
            row(5, "etcd", "b", report("put", 7_000.0, 12.0, 40.0)),
            row(5, "raftkv", "b", report("put", 5_000.0, 16.0, 45.0)),
            row(
                5,
                "etcd",
                "f",
                report("lease-keepalive", 10_000.0, 8.0, 20.0),
            ),
            // Faster, but some keep-alives failed: the bars do not hold.
            row(5, "raftkv", "f", failing),
        ]);
        let md = markdown(&plan, &results);
        let lines: Vec<&str> = md.lines().filter(|l| l.contains("| (")).collect();
        let at = |needle: &str| {
            lines
                .iter()
                .position(|l| l.contains(needle))
                .unwrap_or_else(|| panic!("no {needle:?} in\n{md}"))
        };
        assert_eq!(
            lines[at("| 3 | (f) lease keep-alive/s")],
            "| 3 | (f) lease keep-alive/s ≥ etcd's | 10000 | 15000 | 1.50 | yes |"
        );
        assert_eq!(
            lines[at("| 3 | (f) lease keep-alive p99")],
            "| 3 | (f) lease keep-alive p99 ≤ etcd's | 20.000 ms | 10.000 ms | 0.50 | yes |"
        );
        assert_eq!(
            lines[at("| 3 | (g) lease grant/s")],
            "| 3 | (g) lease grant/s ≥ etcd's | 8000 | 6000 | 0.75 | **no** |"
        );
        assert_eq!(
            lines[at("| 5 | (f) lease keep-alive/s")],
            "| 5 | (f) lease keep-alive/s ≥ etcd's | 10000 | 30000 | 3.00 | **no** |"
        );
        assert!(lines[at("| 5 | (f) lease keep-alive p99")].ends_with("| **no** |"));
        // No (g) for 5 members: no row rather than an empty one.
        assert!(!md.contains("| 5 | (g)"), "{md}");
        // Each size's lease rows follow its own put rows.
        assert!(at("| 3 | (b) put/s") < at("| 3 | (f) lease keep-alive/s"));
        assert!(at("| 3 | (g) lease grant/s") < at("| 5 | (b) put/s"));
        assert!(at("| 5 | (b) put/s") < at("| 5 | (f) lease keep-alive/s"));
        assert!(md.contains("20000 in all"), "{md}");
        assert!(md.contains("10000 grants of TTL 100 s"), "{md}");
        assert!(
            md.contains("| 5 | raftkv | (f) lease-keepalive | 30000 | 3 |"),
            "{md}"
        );
    }

    #[test]
    fn serializable_gets_have_a_row_without_a_bar() {
        let results = results(vec![
            row(3, "etcd", "c", report("range", 10_000.0, 8.0, 20.0)),
            row(3, "raftkv", "c", report("range", 20_000.0, 4.0, 9.0)),
            row(
                3,
                "etcd",
                "c-s",
                report("range, serializable", 16_000.0, 5.0, 12.0),
            ),
            row(
                3,
                "raftkv",
                "c-s",
                report("range, serializable", 40_000.0, 2.0, 5.0),
            ),
        ]);
        let md = markdown(&plan(), &results);
        assert!(
            md.contains("| 3 | (c-s) serializable get/s (no bar) | 16000 | 40000 | 2.50 | – |"),
            "{md}"
        );
        assert!(
            md.contains("| 3 | raftkv | (c-s) range, serializable | 40000 | 0 |"),
            "{md}"
        );
        let (c, cs) = (
            md.find("| 3 | (c) get/s").unwrap(),
            md.find("| 3 | (c-s)").unwrap(),
        );
        assert!(c < cs, "{md}");
    }

    #[test]
    fn pod_workloads_have_bar_rows_of_their_own() {
        let pods = results(vec![
            row(3, "etcd", "a", report("put", 1_000.0, 0.8, 2.0)),
            row(3, "raftkv", "a", report("put", 1_100.0, 0.6, 1.9)),
            row(3, "etcd", "a-k", report("put, pods", 900.0, 1.0, 2.0)),
            row(3, "raftkv", "a-k", report("put, pods", 800.0, 1.2, 2.5)),
            row(3, "etcd", "b-k", report("put, pods", 8_000.0, 10.0, 20.0)),
            row(3, "raftkv", "b-k", report("put, pods", 12_000.0, 8.0, 16.0)),
            row(3, "etcd", "c-k", report("range, pod", 10_000.0, 8.0, 20.0)),
            row(
                3,
                "raftkv",
                "c-k",
                report("range, pod", 5_000.0, 16.0, 40.0),
            ),
        ]);
        let plan = Plan {
            pod_total: 20_000,
            ..plan()
        };
        let md = markdown(&plan, &pods);
        for line in [
            "| 3 | (a) put p50 ≤ 0.7× etcd's | 0.800 ms | 0.600 ms | 0.75 | **no** |",
            "| 3 | (a-k) put p50 ≤ 0.7× etcd's, 1.5 KB Pods | 1.000 ms | 1.200 ms | 1.20 | **no** |",
            "| 3 | (b-k) put/s ≥ 1.5× etcd's, 1.5 KB Pods | 8000 | 12000 | 1.50 | yes |",
            "| 3 | (b-k) put p99 ≤ 0.8× etcd's, 1.5 KB Pods | 20.000 ms | 16.000 ms | 0.80 | yes |",
            "| 3 | (c-k) get/s ≥ 2× etcd's, 1.5 KB Pods | 10000 | 5000 | 0.50 | **no** |",
            "| 3 | raftkv | (b-k) put, pods | 12000 | 0 |",
            "(a-k), (b-k), (c-k): (a), (b) and (c) with Kubernetes-like Pod objects",
            "(b-k) over 10000 Pods, 20000 requests each in (b-k) and (c-k).",
        ] {
            assert!(md.contains(line), "{line} not in {md}");
        }
        let (a, ak) = (
            md.find("| 3 | (a) put p50").unwrap(),
            md.find("| 3 | (a-k)").unwrap(),
        );
        assert!(a < ak, "{md}");
        // Without them, no Pod rows and no text about them.
        let md = markdown(&plan, &results(vec![]));
        assert!(!md.contains("Pod"), "{md}");
    }

    #[test]
    fn the_memory_bar_is_half_of_etcds_largest_member() {
        let memory = |server, mib: [u64; 3]| Memory {
            server,
            size: 3,
            keys: 1_000_000,
            load: report("put", 10_000.0, 5.0, 10.0),
            rss_bytes: mib.iter().map(|m| m << 20).collect(),
        };
        for (raftkv, line) in [
            (
                [300, 120, 250],
                "| 3 | RSS per member after 1000000 keys ≤ 0.5× etcd's (largest member) | 600 MiB | 300 MiB | 0.50 | yes |",
            ),
            (
                [100, 310, 250],
                "| 3 | RSS per member after 1000000 keys ≤ 0.5× etcd's (largest member) | 600 MiB | 310 MiB | 0.52 | **no** |",
            ),
        ] {
            let results = Results {
                memory: vec![memory("etcd", [580, 600, 590]), memory("raftkv", raftkv)],
                ..results(vec![])
            };
            let md = markdown(&plan(), &results);
            assert!(md.contains(line), "{line} not in {md}");
        }
    }

    #[test]
    fn no_lease_text_when_the_lease_workloads_are_skipped() {
        let md = markdown(&plan(), &results(vec![]));
        assert!(!md.contains("lease"), "{md}");
    }

    #[test]
    fn splice_replaces_only_the_marked_section() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.md");
        std::fs::write(&path, "# head\n\nbefore\n").unwrap();
        splice(&path, &format!("{BEGIN}\none\n{END}\n"), BEGIN, END).unwrap();
        std::fs::write(&path, std::fs::read_to_string(&path).unwrap() + "\nafter\n").unwrap();
        splice(&path, &format!("{BEGIN}\ntwo\n{END}\n"), BEGIN, END).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            text,
            format!("# head\n\nbefore\n{BEGIN}\ntwo\n{END}\n\nafter\n")
        );
        std::fs::write(&path, format!("{END}\n{BEGIN}\n")).unwrap();
        assert!(splice(&path, "x", BEGIN, END).is_err());
    }

    #[test]
    fn the_tls_run_has_a_section_of_its_own() {
        let results = |tls| Results {
            tls,
            ..results(vec![])
        };
        let plain = plan();
        let tls = Plan {
            tls: true,
            ..plan()
        };
        let (plain_md, tls_md) = (
            markdown(&plain, &results(false)),
            markdown(&tls, &results(true)),
        );
        assert!(!plain_md.contains("TLS"), "{plain_md}");
        assert!(tls_md.contains("**TLS on**"), "{tls_md}");
        assert!(tls_md.starts_with(TLS_BEGIN) && tls_md.trim_end().ends_with(TLS_END));
        // Each run replaces its own section and leaves the other's alone.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.md");
        std::fs::write(
            &path,
            format!("{BEGIN}\nold plain\n{END}\n{TLS_BEGIN}\nold tls\n{TLS_END}\n"),
        )
        .unwrap();
        let (b, e) = markers(&tls);
        splice(&path, &tls_md, b, e).unwrap();
        let (b, e) = markers(&plain);
        splice(&path, &plain_md, b, e).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            text,
            format!("{}\n{}\n", plain_md.trim_end(), tls_md.trim_end())
        );
    }

    /// Three rounds of (a)-(c) for both servers, with etcd's and raftkv's figures in each
    /// round given as (put p50, put/s, put p99, get/s).
    fn three_rounds(
        etcd: [(f64, f64, f64, f64); 3],
        raftkv: [(f64, f64, f64, f64); 3],
    ) -> Vec<Row> {
        let mut rows = Vec::new();
        for (round, (e, r)) in etcd.iter().zip(raftkv.iter()).enumerate() {
            for (server, &(p50, put, p99, get)) in [("etcd", e), ("raftkv", r)] {
                rows.push(Row {
                    round,
                    ..row(3, server, "a", report("put", 500.0, p50, p50 * 3.0))
                });
                let mut b = report("put", put, 10.0, p99);
                b.errors = round as u64;
                b.total = 1_000;
                rows.push(Row {
                    round,
                    ..row(3, server, "b", b)
                });
                rows.push(Row {
                    round,
                    ..row(3, server, "c", report("range", get, 5.0, 20.0))
                });
            }
        }
        rows
    }

    #[test]
    fn rounds_give_the_median_of_each_figure_and_the_ratio_by_round() {
        let by_round = three_rounds(
            [
                (1.0, 6_000.0, 40.0, 8_000.0),
                (1.5, 3_000.0, 30.0, 9_500.0),
                (1.2, 5_000.0, 80.0, 7_000.0),
            ],
            [
                (1.1, 5_000.0, 60.0, 9_000.0),
                (1.0, 4_400.0, 45.0, 9_900.0),
                (0.7, 3_000.0, 20.0, 14_000.0),
            ],
        );
        let rows = medians(&by_round);
        assert_eq!(rows.len(), 6, "one row per server and workload");
        let get = |server, id| {
            let r = rows
                .iter()
                .find(|r| r.server == server && r.id == id)
                .unwrap();
            assert_eq!(r.round, 3, "a median row counts its rounds");
            &r.report
        };
        // Each figure is its own median (not the mean, not the median round's).
        assert_eq!(get("etcd", "a").latency_ms.p50, 1.2);
        assert_eq!(get("raftkv", "a").latency_ms.p50, 1.0);
        assert_eq!(get("etcd", "b").requests_per_sec, 5_000.0);
        assert_eq!(get("etcd", "b").latency_ms.p99, 40.0);
        assert_eq!(get("raftkv", "b").requests_per_sec, 4_400.0);
        assert_eq!(get("raftkv", "b").latency_ms.p99, 45.0);
        // Errors and requests are summed over the rounds.
        assert_eq!(get("raftkv", "b").errors, 3);
        assert_eq!(get("raftkv", "b").total, 3_000);
        assert_eq!(get("raftkv", "c").requests_per_sec, 9_900.0);

        let plan = Plan {
            rounds: 3,
            ..plan()
        };
        let results = Results {
            by_round,
            ..results(rows)
        };
        let md = markdown(&plan, &results);
        assert!(md.contains("one run of 3 rounds"), "{md}");
        // (a): ratios 1.10, 0.67, 0.58 by round; medians 1.0 over 1.2.
        assert!(
            md.contains(
                "| 3 | (a) put p50 ≤ 0.7× etcd's | 1.200 ms | 1.000 ms | 0.83 (0.58–1.10 by round) | **no** |"
            ),
            "{md}"
        );
        // (b): 0.83, 1.47, 0.60 by round (its errors do not count: (b) is no clean bar).
        assert!(
            md.contains(
                "| 3 | (b) put/s ≥ 1.5× etcd's | 5000 | 4400 | 0.88 (0.60–1.47 by round) | **no** |"
            ),
            "{md}"
        );
        assert!(
            md.contains(
                "| 3 | (b) put p99 ≤ 0.8× etcd's | 40.000 ms | 45.000 ms | 1.12 (0.25–1.50 by round) | **no** |"
            ),
            "{md}"
        );
        assert!(
            md.contains(
                "| 3 | (c) get/s ≥ 2× etcd's | 8000 | 9900 | 1.24 (1.04–2.00 by round) | **no** |"
            ),
            "{md}"
        );
    }

    #[test]
    fn an_even_number_of_rounds_takes_the_mean_of_the_middle_two_and_one_round_has_no_spread() {
        let mut by_round = Vec::new();
        for (round, put) in [6_000.0, 2_000.0, 5_000.0, 3_000.0].into_iter().enumerate() {
            by_round.push(Row {
                round,
                ..row(3, "raftkv", "b", report("put", put, 1.0, 1.0))
            });
        }
        let rows = medians(&by_round);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].report.requests_per_sec, 4_000.0);
        // With one round there is nothing to spread.
        let one = results(vec![
            row(3, "etcd", "b", report("put", 5_000.0, 1.0, 1.0)),
            row(3, "raftkv", "b", report("put", 4_000.0, 1.0, 1.0)),
        ]);
        assert_eq!(round_spread(&one, 3, "b", &|r| r.requests_per_sec), "");
    }

    #[test]
    fn servers_take_turns_going_first() {
        assert_eq!(round_order(0)[0].name(), "etcd");
        assert_eq!(round_order(1)[0].name(), "raftkv");
        assert_eq!(round_order(2)[0].name(), "etcd");
    }
}
