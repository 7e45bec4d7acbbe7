//! `raftkv-bench scale`: issue 18's scale rows beside etcd. For each key count, a 3-member
//! cluster of each server (default flags, a backend quota large enough for the data) is
//! loaded with that many 256-byte values by 100 clients; then, one after another:
//!
//! - the resident set and the data dir's disk use of every member;
//! - `snapshot save` from the leader (the Maintenance.Snapshot stream into a file, fsynced);
//! - a follower killed and started again, timed until it answers a serializable read at
//!   the leader's revision (its restart);
//! - the same follower killed again while [`CATCH_UP_WRITES`] overwrites go through the
//!   leader — more than the default `--snapshot-count` of both (100,000), so the leader has
//!   snapshotted and shortened its log past the follower — then started again and timed
//!   until it has the leader's revision (its catch-up from a snapshot).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use raftkv_proto::etcdserverpb::SnapshotRequest;
use raftkv_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use tokio::io::AsyncWriteExt;

use crate::cluster::{Cluster, Server};
use crate::compare::puts;
use crate::workload::{self, Options, connect_channel, find_leader};

/// Overwrites put while the follower is down for the catch-up: above both servers' default
/// `--snapshot-count` (100,000), so each leader snapshots and truncates its log meanwhile.
pub const CATCH_UP_WRITES: u64 = 120_000;

/// What to run.
pub struct Plan {
    pub raftkv_bin: PathBuf,
    pub etcd_bin: PathBuf,
    pub keys: Vec<u64>,
}

struct Figures {
    load_per_sec: f64,
    load_errors: u64,
    rss: Vec<u64>,
    disk: Vec<u64>,
    save_secs: f64,
    save_bytes: u64,
    restart_secs: f64,
    catch_up_secs: f64,
}

fn opts(endpoints: &[String], total: u64) -> Options {
    Options {
        endpoints: endpoints.to_vec(),
        conns: 10,
        clients: 100,
        total,
        duration: None,
        rate: 0,
        target_leader: true,
        progress: false,
        timeout: Duration::from_secs(30),
    }
}

/// Bytes a directory tree takes on disk (allocated blocks, so sparse and preallocated
/// files count as the file system counts them).
pub(crate) fn disk_used(dir: &Path) -> Result<u64> {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))? {
            let entry = entry?;
            // A member may remove a file (a WAL segment, a snapshot part) meanwhile.
            let meta = match entry.metadata() {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                other => other?,
            };
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                total += meta.blocks() * 512;
            }
        }
    }
    Ok(total)
}

/// Saves a snapshot from `endpoint` into `path` (fsynced); returns its size.
async fn save(endpoint: &str, path: &Path) -> Result<u64> {
    // raftkv builds the whole file before its first piece (etcd streams as it reads), so
    // the first piece of a few million keys' snapshot can take longer than 10 s.
    let channel = connect_channel(endpoint, Some(Duration::from_secs(300))).await?;
    let mut stream = MaintenanceClient::new(channel)
        .snapshot(SnapshotRequest {})
        .await?
        .into_inner();
    let mut file = tokio::fs::File::create(path).await?;
    let mut bytes = 0u64;
    while let Some(part) = stream.message().await? {
        file.write_all(&part.blob).await?;
        bytes += part.blob.len() as u64;
    }
    file.sync_all().await?;
    Ok(bytes)
}

/// Waits until the member at `endpoint` answers at `target` or later; the time it took
/// from `started`.
async fn until_at(endpoint: &str, target: i64, started: Instant, what: &str) -> Result<f64> {
    loop {
        if crate::catchup::revision(endpoint).await.unwrap_or(0) >= target {
            return Ok(started.elapsed().as_secs_f64());
        }
        if started.elapsed() > Duration::from_secs(1800) {
            bail!("{what}: not at revision {target} in 30 min");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn measure(server: Server, bin: &Path, keys: u64) -> Result<Figures> {
    eprintln!("== {}: {keys} keys", server.name());
    let flags = ["--quota-backend-bytes=8589934592".to_string()];
    let mut cluster = Cluster::start(server, bin, 3, &flags, None).await?;
    let eps = cluster.client_endpoints.clone();
    let load = workload::run(&opts(&eps, keys), &puts(keys, true)).await?;
    // Let background work settle before sampling memory.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let rss = cluster.rss()?;
    let disk = (0..eps.len())
        .map(|i| disk_used(&cluster.data_dir(i)))
        .collect::<Result<Vec<_>>>()?;
    eprintln!(
        "  load {:.0} put/s ({} errors); RSS {:?} MiB; disk {:?} MiB",
        load.requests_per_sec,
        load.errors,
        rss.iter().map(|b| b >> 20).collect::<Vec<_>>(),
        disk.iter().map(|b| b >> 20).collect::<Vec<_>>()
    );

    let leader = find_leader(&eps).await?;
    let file = cluster.scratch_path("scale.snapshot");
    let started = Instant::now();
    let save_bytes = save(&leader, &file).await?;
    let save_secs = started.elapsed().as_secs_f64();
    let _ = std::fs::remove_file(&file);
    eprintln!("  snapshot save {save_secs:.2} s, {save_bytes} bytes");

    let follower = eps
        .iter()
        .rposition(|e| *e != leader)
        .context("a follower")?;
    let target = crate::catchup::revision(&leader).await?;
    cluster.kill(follower);
    let started = Instant::now();
    cluster.restart(follower)?;
    let restart_secs = until_at(&eps[follower], target, started, "restart").await?;
    eprintln!("  follower restart {restart_secs:.2} s");

    cluster.kill(follower);
    let writes = workload::run(&opts(&eps, CATCH_UP_WRITES), &puts(keys, false)).await?;
    if writes.errors > 0 {
        bail!("{} errors among the overwrites", writes.errors);
    }
    let target = crate::catchup::revision(&leader).await?;
    let started = Instant::now();
    cluster.restart(follower)?;
    let catch_up_secs = until_at(&eps[follower], target, started, "catch-up").await?;
    eprintln!("  follower catch-up {catch_up_secs:.2} s (revision {target})");
    Ok(Figures {
        load_per_sec: load.requests_per_sec,
        load_errors: load.errors,
        rss,
        disk,
        save_secs,
        save_bytes,
        restart_secs,
        catch_up_secs,
    })
}

/// Runs etcd then raftkv for each key count; prints one markdown table per count.
pub async fn run(plan: &Plan) -> Result<()> {
    for &keys in &plan.keys {
        let etcd = measure(Server::Etcd, &plan.etcd_bin, keys).await?;
        let raftkv = measure(Server::Raftkv, &plan.raftkv_bin, keys).await?;
        println!("{}", table(keys, &etcd, &raftkv));
    }
    Ok(())
}

fn table(keys: u64, e: &Figures, r: &Figures) -> String {
    let mib = |b: u64| b as f64 / 1048576.0;
    let max = |v: &[u64]| v.iter().copied().max().unwrap_or(0);
    let list = |v: &[u64]| {
        v.iter()
            .map(|b| format!("{:.0}", mib(*b)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut md = format!(
        "{keys} keys of 8 bytes with 256-byte values, 3 members each, default flags \
         (`--quota-backend-bytes` 8 GiB); loaded by 100 clients over 10 connections to the \
         leader. Restart: a follower killed and started again, until it answers a \
         serializable read at the leader's revision. Catch-up: the same follower down while \
         {CATCH_UP_WRITES} overwrites go through the leader (past both servers' \
         `--snapshot-count` of 100,000), then started again, until it has the leader's \
         revision.\n\n\
         | | etcd | raftkv | raftkv / etcd | bar | holds |\n|---|---:|---:|---:|---|---|\n"
    );
    let mut row = |name: &str, ev: f64, rv: f64, unit: &str, bar: Option<(f64, bool)>| {
        let (bar, holds) = match bar {
            // (limit, higher is better)
            Some((limit, higher)) => {
                let ratio = rv / ev;
                let ok = if higher {
                    ratio >= limit
                } else {
                    ratio <= limit
                };
                (
                    format!("{} {limit}", if higher { "≥" } else { "≤" }),
                    if ok { "yes" } else { "**no**" }.to_string(),
                )
            }
            None => ("–".to_string(), "–".to_string()),
        };
        md.push_str(&format!(
            "| {name} | {ev:.2}{unit} | {rv:.2}{unit} | {:.2} | {bar} | {holds} |\n",
            rv / ev
        ));
    };
    row("load, put/s", e.load_per_sec, r.load_per_sec, "", None);
    row(
        "RSS of the largest member, MiB",
        mib(max(&e.rss)),
        mib(max(&r.rss)),
        "",
        Some((0.5, false)),
    );
    row(
        "disk of the largest member's data dir, MiB",
        mib(max(&e.disk)),
        mib(max(&r.disk)),
        "",
        None,
    );
    row(
        "snapshot save from the leader, s",
        e.save_secs,
        r.save_secs,
        "",
        None,
    );
    row(
        "snapshot size, MiB",
        mib(e.save_bytes),
        mib(r.save_bytes),
        "",
        None,
    );
    row(
        "follower restart, s",
        e.restart_secs,
        r.restart_secs,
        "",
        Some((1.0, false)),
    );
    row(
        "follower catch-up from a snapshot, s",
        e.catch_up_secs,
        r.catch_up_secs,
        "",
        Some((1.0, false)),
    );
    md.push_str(&format!(
        "\nPer member: RSS etcd {} / raftkv {} MiB; disk etcd {} / raftkv {} MiB; load errors \
         {} / {}.\n",
        list(&e.rss),
        list(&r.rss),
        list(&e.disk),
        list(&r.disk),
        e.load_errors,
        r.load_errors
    ));
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figures(scale: f64) -> Figures {
        Figures {
            load_per_sec: 10_000.0 * scale,
            load_errors: 0,
            rss: vec![(100.0 * scale) as u64 * 1048576, 10 * 1048576],
            disk: vec![200 * 1048576],
            save_secs: 2.0 * scale,
            save_bytes: 1048576,
            restart_secs: 1.0 * scale,
            catch_up_secs: 3.0 * scale,
        }
    }

    #[test]
    fn the_table_judges_each_bar_by_its_ratio() {
        let md = table(1_000_000, &figures(1.0), &figures(0.4));
        assert!(
            md.contains("| RSS of the largest member, MiB | 100.00 | 40.00 | 0.40 | ≤ 0.5 | yes |"),
            "{md}"
        );
        assert!(
            md.contains("| follower restart, s | 1.00 | 0.40 | 0.40 | ≤ 1 | yes |"),
            "{md}"
        );
        let md = table(1_000_000, &figures(1.0), &figures(2.0));
        assert!(
            md.contains(
                "| follower catch-up from a snapshot, s | 3.00 | 6.00 | 2.00 | ≤ 1 | **no** |"
            ),
            "{md}"
        );
        assert!(
            md.contains("| load, put/s | 10000.00 | 20000.00 | 2.00 | – | – |"),
            "{md}"
        );
    }

    #[test]
    fn disk_use_counts_nested_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("a")).unwrap();
        std::fs::write(dir.path().join("a/f"), vec![1u8; 100_000]).unwrap();
        std::fs::write(dir.path().join("g"), vec![1u8; 10_000]).unwrap();
        let used = disk_used(dir.path()).unwrap();
        assert!(used >= 110_000, "{used}");
    }
}
