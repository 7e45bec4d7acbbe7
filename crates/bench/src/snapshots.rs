//! `raftkv-bench snapshot-compare`: the same corpus (`raftkv_codec::samples::Corpus`) loaded
//! into a one-member etcd and a one-member raftkv, each snapshotted with the real
//! `etcdctl snapshot save` and restored with its own tool (`etcdctl` / `raftkvctl snapshot
//! restore`); file sizes beside etcd's file compressed with zstd at level 3 (what
//! `zstd -3` gives; k3s, rke2 and Gardener compress etcd snapshots this way), and the times.
//! etcd's file is also imported with `raftkvctl snapshot restore` (the offline way from
//! etcd, revisions kept), timed beside etcd's own restore of it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use raftkv_codec::samples::Corpus;
use raftkv_proto::etcdserverpb::PutRequest;
use raftkv_proto::etcdserverpb::kv_client::KvClient;

use crate::cluster::{Cluster, Server};
use crate::workload::connect_channel;

/// What to run.
pub struct Plan {
    pub raftkv_bin: PathBuf,
    pub etcd_bin: PathBuf,
    pub etcdctl_bin: PathBuf,
    pub raftkvctl_bin: PathBuf,
    pub corpus: Corpus,
    pub items: u64,
}

/// One server's figures.
struct Figures {
    load_secs: f64,
    save_secs: f64,
    file_bytes: u64,
    zstd3_bytes: u64,
    restore_secs: f64,
    /// etcd's file restored by `raftkvctl` (only for etcd).
    import_secs: Option<f64>,
}

/// Loads, saves, restores on both servers; prints a markdown table.
pub async fn run(plan: &Plan) -> Result<()> {
    let work = tempfile::Builder::new()
        .prefix("raftkv-bench-snapshots-")
        .tempdir()?;
    let mut figures = Vec::new();
    for server in [Server::Etcd, Server::Raftkv] {
        let bin = server.pick(&plan.etcd_bin, &plan.raftkv_bin);
        eprintln!(
            "== {}: {} {} items",
            server.name(),
            plan.items,
            plan.corpus.name()
        );
        // 1M Pod objects outgrow etcd's default 2 GiB quota: give both 8 GiB (etcd's
        // suggested maximum), so the quota never decides a run.
        let quota = ["--quota-backend-bytes=8589934592".to_string()];
        let cluster = Cluster::start(server, bin, 1, &quota, None).await?;
        let endpoint = cluster.client_endpoints[0].clone();
        let started = Instant::now();
        load(&endpoint, plan.corpus, plan.items).await?;
        let load_secs = started.elapsed().as_secs_f64();

        let file = work.path().join(format!("{}.db", server.name()));
        let started = Instant::now();
        run_tool(
            Command::new(&plan.etcdctl_bin)
                .env("ETCDCTL_API", "3")
                .arg(format!("--endpoints={endpoint}"))
                .args(["--command-timeout=600s", "snapshot", "save"])
                .arg(&file),
        )?;
        let save_secs = started.elapsed().as_secs_f64();
        drop(cluster);

        let bytes = std::fs::read(&file)?;
        let zstd3_bytes = zstd::bulk::compress(&bytes, 3)?.len() as u64;
        let restored = work.path().join(format!("{}-restored", server.name()));
        let tool = match server {
            Server::Etcd => &plan.etcdctl_bin,
            Server::Raftkv => &plan.raftkvctl_bin,
        };
        let started = Instant::now();
        run_tool(
            Command::new(tool)
                .env("ETCDCTL_API", "3")
                .args(["snapshot", "restore"])
                .arg(&file)
                .arg("--data-dir")
                .arg(&restored),
        )?;
        let restore_secs = started.elapsed().as_secs_f64();
        let import_secs = if server == Server::Etcd {
            let imported = work.path().join("etcd-imported");
            let started = Instant::now();
            let said = run_tool(
                Command::new(&plan.raftkvctl_bin)
                    .args(["snapshot", "restore"])
                    .arg(&file)
                    .arg("--data-dir")
                    .arg(&imported),
            )?;
            let secs = started.elapsed().as_secs_f64();
            // Every item must have come across as a live key.
            let keys = format!(", {} keys)", plan.items);
            if !said.contains(&keys) {
                bail!(
                    "the import of etcd's file did not bring {} keys: {said}",
                    plan.items
                );
            }
            eprintln!(
                "  raftkvctl import of etcd's file {secs:.2} s: {}",
                said.trim()
            );
            Some(secs)
        } else {
            None
        };
        eprintln!(
            "  load {load_secs:.1} s, save {save_secs:.2} s, {} bytes (zstd -3: {zstd3_bytes}), restore {restore_secs:.2} s",
            bytes.len()
        );
        figures.push(Figures {
            load_secs,
            save_secs,
            file_bytes: bytes.len() as u64,
            zstd3_bytes,
            restore_secs,
            import_secs,
        });
    }
    print!("{}", table(plan, &figures[0], &figures[1]));
    Ok(())
}

fn table(plan: &Plan, etcd: &Figures, raftkv: &Figures) -> String {
    let mb = |b: u64| format!("{:.2} MB", b as f64 / 1e6);
    let mut out = format!(
        "{} items of the `{}` corpus, one member each, `etcdctl snapshot save` against both:\n\n",
        plan.items,
        plan.corpus.name()
    );
    out += "| | bytes | vs etcd's snapshot + zstd -3 |\n|---|---:|---:|\n";
    let base = etcd.zstd3_bytes as f64;
    for (name, bytes) in [
        ("etcd 3.4 snapshot (bbolt)", etcd.file_bytes),
        ("etcd snapshot + zstd -3", etcd.zstd3_bytes),
        ("**raftkv snapshot**", raftkv.file_bytes),
    ] {
        out += &format!("| {name} | {} | {:.2} |\n", mb(bytes), bytes as f64 / base);
    }
    out += "\n| | etcd | raftkv | raftkv / etcd |\n|---|---:|---:|---:|\n";
    for (name, e, r) in [
        ("load (64 clients)", etcd.load_secs, raftkv.load_secs),
        ("`snapshot save`", etcd.save_secs, raftkv.save_secs),
        ("`snapshot restore`", etcd.restore_secs, raftkv.restore_secs),
    ] {
        out += &format!("| {name} | {e:.2} s | {r:.2} s | {:.2} |\n", r / e);
    }
    if let Some(import) = etcd.import_secs {
        out += &format!(
            "| etcd's file: `etcdctl snapshot restore` / `raftkvctl snapshot restore` (import) | {:.2} s | {import:.2} s | {:.2} |\n",
            etcd.restore_secs,
            import / etcd.restore_secs
        );
    }
    out
}

/// Runs a tool to success and returns what it wrote to stderr.
fn run_tool(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Puts items `0..items` of `corpus`, 64 at a time over 8 connections.
pub(crate) async fn load(endpoint: &str, corpus: Corpus, items: u64) -> Result<()> {
    const CLIENTS: u64 = 64;
    let mut channels = Vec::new();
    for _ in 0..8 {
        channels.push(connect_channel(endpoint, Some(Duration::from_secs(30))).await?);
    }
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let mut kv = KvClient::new(channels[c as usize % channels.len()].clone())
            .max_decoding_message_size(64 << 20);
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= items {
                    return anyhow::Ok(());
                }
                let (key, value) = corpus.item(i, 1);
                kv.put(PutRequest {
                    key: key.into_bytes().into(),
                    value: value.into(),
                    ..Default::default()
                })
                .await?;
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

/// The tool beside `bin` named `name` if there is one, else `name` on the PATH.
pub fn sibling(bin: &Path, name: &str) -> PathBuf {
    let beside = bin.with_file_name(name);
    if beside.exists() {
        beside
    } else {
        PathBuf::from(name)
    }
}
