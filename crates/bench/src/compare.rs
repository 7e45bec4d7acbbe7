//! `raftkv-bench compare`: the same workloads against a real etcd 3.4 cluster and a raftkv
//! cluster of the same size, in one run on this machine, then a Markdown section (between
//! markers in `docs/benchmarks.md`) and a PNG plot.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use raftkv_proto::etcdserverpb::PutRequest;
use raftkv_proto::etcdserverpb::kv_client::KvClient;
use serde::Serialize;

use crate::cluster::{Cluster, Server};
use crate::plot::{self, Panel, Series};
use crate::stats::Report;
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
    /// Keys loaded for the memory comparison (0: skip it).
    pub memory_keys: u64,
    /// Extra member flags for both servers.
    pub flags: Vec<String>,
    pub markdown: PathBuf,
    pub plot: PathBuf,
    pub json: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize)]
struct Row {
    size: usize,
    server: &'static str,
    id: &'static str,
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

#[derive(Debug, Clone, Serialize)]
struct Results {
    rows: Vec<Row>,
    memory: Vec<Memory>,
    flags: Vec<String>,
}

const BEGIN: &str = "<!-- raftkv-bench compare: begin -->";
const END: &str = "<!-- raftkv-bench compare: end -->";

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

fn puts(key_space: u64, sequential: bool) -> Workload {
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
        eprintln!(
            "  {server} x{size} {id}: {:.0} req/s, p50 {:.3} ms, p99 {:.3} ms, errors {}",
            report.requests_per_sec, report.latency_ms.p50, report.latency_ms.p99, report.errors
        );
        rows.push(Row {
            size,
            server,
            id,
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
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{leader}"))?
        .connect()
        .await?;
    KvClient::new(channel)
        .put(PutRequest {
            key: b"bench-range-key".to_vec().into(),
            value: vec![b'v'; 256].into(),
            ..Default::default()
        })
        .await?;
    let range = Workload::Range {
        key: b"bench-range-key".to_vec(),
        end: Vec::new(),
        limit: 0,
        serializable: false,
    };
    push(
        "c",
        workload::run(&opts(eps, 10, 100, plan.total, false), &range).await?,
    );
    Ok(rows)
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
        memory: Vec::new(),
        flags: plan.flags.clone(),
    };
    for &size in &plan.sizes {
        for server in [Server::Etcd, Server::Raftkv] {
            let bin = match server {
                Server::Etcd => &plan.etcd_bin,
                Server::Raftkv => &plan.raftkv_bin,
            };
            eprintln!("== {} cluster of {size}", server.name());
            let cluster = Cluster::start(server, bin, size, &plan.flags).await?;
            results.rows.extend(workloads(plan, &cluster, size).await?);
            drop(cluster);
            if plan.memory_keys > 0 && size == plan.sizes[0] {
                let cluster = Cluster::start(server, bin, size, &plan.flags).await?;
                results.memory.push(memory(plan, &cluster, size).await?);
            }
        }
    }
    if let Some(path) = &plan.json {
        std::fs::write(path, serde_json::to_string_pretty(&results)?)?;
    }
    draw(plan, &results)?;
    let section = markdown(plan, &results);
    splice(&plan.markdown, &section)?;
    println!("{section}");
    Ok(())
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
    let _ = writeln!(md, "{BEGIN}");
    let _ = writeln!(
        md,
        "Written by `raftkv-bench compare` (run `scripts/compare-etcd`): etcd {} and raftkv, \
         same client, same machine, one run, fsync on for both, {flags}. Keys 8 bytes, values \
         256 bytes. (a) sequential put, 1 client, {} puts to the leader; (b) 100 clients over \
         10 connections to the leader, {} puts over 10,000 random keys; (c) linearizable range \
         of one key, 100 clients over 10 connections spread over all members, {} requests.\n",
        etcd_version(&plan.etcd_bin),
        plan.sequential_total,
        plan.total,
        plan.total
    );
    let _ = writeln!(
        md,
        "| members | bar | etcd | raftkv | raftkv / etcd | holds |\n|---:|---|---:|---:|---:|---|"
    );
    for &size in &plan.sizes {
        let get = |server, id| find(results, size, server, id);
        if let (Some(e), Some(r)) = (get("etcd", "a"), get("raftkv", "a")) {
            let _ = writeln!(
                md,
                "| {size} | (a) put p50 ≤ etcd's | {:.3} ms | {:.3} ms | {} | {} |",
                e.latency_ms.p50,
                r.latency_ms.p50,
                ratio(r.latency_ms.p50, e.latency_ms.p50),
                verdict(r.latency_ms.p50 <= e.latency_ms.p50)
            );
        }
        if let (Some(e), Some(r)) = (get("etcd", "b"), get("raftkv", "b")) {
            let _ = writeln!(
                md,
                "| {size} | (b) put/s ≥ etcd's | {:.0} | {:.0} | {} | {} |",
                e.requests_per_sec,
                r.requests_per_sec,
                ratio(r.requests_per_sec, e.requests_per_sec),
                verdict(r.requests_per_sec >= e.requests_per_sec)
            );
            let _ = writeln!(
                md,
                "| {size} | (b) put p99 ≤ etcd's | {:.3} ms | {:.3} ms | {} | {} |",
                e.latency_ms.p99,
                r.latency_ms.p99,
                ratio(r.latency_ms.p99, e.latency_ms.p99),
                verdict(r.latency_ms.p99 <= e.latency_ms.p99)
            );
        }
        if let (Some(e), Some(r)) = (get("etcd", "c"), get("raftkv", "c")) {
            let _ = writeln!(
                md,
                "| {size} | (c) get/s ≥ etcd's | {:.0} | {:.0} | {} | {} |",
                e.requests_per_sec,
                r.requests_per_sec,
                ratio(r.requests_per_sec, e.requests_per_sec),
                verdict(r.requests_per_sec >= e.requests_per_sec)
            );
        }
    }
    let mem = |server: &str| results.memory.iter().find(|m| m.server == server);
    if let (Some(e), Some(r)) = (mem("etcd"), mem("raftkv")) {
        let max = |m: &Memory| m.rss_bytes.iter().copied().max().unwrap_or(0) as f64 / 1048576.0;
        let _ = writeln!(
            md,
            "| {} | RSS per member after {} keys ≤ etcd's (largest member) | {:.0} MiB | {:.0} MiB | {} | {} |",
            e.size,
            e.keys,
            max(e),
            max(r),
            ratio(max(r), max(e)),
            verdict(max(r) <= max(e))
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
    let _ = writeln!(md, "{END}");
    md
}

fn etcd_version(bin: &Path) -> String {
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
    let titles = [
        ("a", "(a) sequential put, 1 client"),
        ("b", "(b) put, 100 clients"),
        ("c", "(c) linearizable get, 100 clients"),
    ];
    let panels: Vec<Panel> = titles
        .iter()
        .map(|(id, title)| Panel {
            title: title.to_string(),
            series: results
                .rows
                .iter()
                .filter(|r| r.id == *id)
                .map(|r| Series {
                    label: format!("{} x{}", r.server, r.size),
                    report: &r.report,
                    colour: usize::from(r.server == "raftkv"),
                    hollow: Some(&r.size) != plan.sizes.first(),
                })
                .collect(),
        })
        .collect();
    plot::latency_percentiles(
        &plan.plot,
        "raftkv vs etcd: latency percentiles (lower is better)",
        &panels,
    )
}

/// Replaces the section between the markers in `path` (appends it if there is none).
fn splice(path: &Path, section: &str) -> Result<()> {
    let old = std::fs::read_to_string(path).unwrap_or_default();
    let new = match (old.find(BEGIN), old.find(END)) {
        (Some(b), Some(e)) if b < e => {
            format!(
                "{}{}{}",
                &old[..b],
                section.trim_end(),
                &old[e + END.len()..]
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

    #[test]
    fn splice_replaces_only_the_marked_section() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.md");
        std::fs::write(&path, "# head\n\nbefore\n").unwrap();
        splice(&path, &format!("{BEGIN}\none\n{END}\n")).unwrap();
        std::fs::write(&path, std::fs::read_to_string(&path).unwrap() + "\nafter\n").unwrap();
        splice(&path, &format!("{BEGIN}\ntwo\n{END}\n")).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            text,
            format!("# head\n\nbefore\n{BEGIN}\ntwo\n{END}\n\nafter\n")
        );
        std::fs::write(&path, format!("{END}\n{BEGIN}\n")).unwrap();
        assert!(splice(&path, "x").is_err());
    }
}
