//! `raftkv-bench soak`: issue 18's stall row. A cluster of etcd, then one of raftkv, each
//! under workload (b) — 100 clients over 10 connections putting 256-byte values over 10,000
//! random keys to the leader — for a fixed time (10 minutes by default, long enough for
//! dozens of snapshots at etcd's default `--snapshot-count`), then what stalled:
//!
//! - puts slower than 50 ms as the client saw them, the p99.9 and the slowest;
//! - from every member's `/metrics`, scraped before and after: slow applies
//!   (`etcd_server_slow_apply_total`, ≥ 100 ms, etcd's "apply request took too long"), WAL
//!   fsyncs and backend commits over 64 ms (their histograms' buckets: 50 ms is no bucket
//!   bound), and snapshots taken;
//! - the lines of every member's log that say something "took too long";
//! - the put rate minute by minute, what the members caused to be written to disk per put
//!   (Linux `/proc/<pid>/io`) and what their data dirs take at the end: where a rate falls
//!   as the store grows, and what its files cost.
//!
//! The result is a Markdown section between markers in `docs/benchmarks.md`.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::cluster::{Cluster, Server};
use crate::compare::{self, puts};
use crate::stats::{Report, STALL_MICROS};
use crate::workload::{self, Options};

/// What `soak` runs.
#[derive(Debug, Clone)]
pub struct Plan {
    pub raftkv_bin: PathBuf,
    pub etcd_bin: PathBuf,
    pub size: usize,
    pub duration: Duration,
    pub flags: Vec<String>,
    /// The Markdown file whose marked section is replaced (None: print only).
    pub markdown: Option<PathBuf>,
}

/// One server's run.
#[derive(Debug, Clone)]
struct Soak {
    server: &'static str,
    report: Report,
    /// Differences of the members' counters over the run, summed over members.
    slow_applies: f64,
    slow_fsyncs: f64,
    fsyncs: f64,
    slow_commits: f64,
    commits: f64,
    snapshots: f64,
    /// Log lines with "took too long", over all members.
    too_long_lines: usize,
    /// Bytes the members caused to be written to storage over the run, summed.
    bytes_written: u64,
    /// What the members' data dirs take on disk at the end, summed.
    disk_used: u64,
}

const BEGIN: &str = "<!-- raftkv-bench soak: begin -->";
const END: &str = "<!-- raftkv-bench soak: end -->";

/// The histograms' bucket bound the stall counts use (etcd's buckets: 1 ms doubling).
const SLOW_BUCKET: &str = "0.064";

/// The backend quota both servers run with unless the flags name one: 8 GiB, the largest
/// etcd's docs suggest. With etcd's default of 2 GiB, a 10-minute run at ~11,500 put/s
/// on this machine had every etcd put fail after ~8 minutes (1.8 M of them, fast; its data
/// dirs then held ~2.4 GB a member), which is the default quota's size: the run then measured
/// refusals, not stalls.
const QUOTA_FLAG: &str = "--quota-backend-bytes=8589934592";

/// The member flags of a soak: the plan's, and [`QUOTA_FLAG`] unless they set a quota.
fn member_flags(plan: &Plan) -> Vec<String> {
    let mut flags = plan.flags.clone();
    if !flags.iter().any(|f| f.starts_with("--quota-backend-bytes")) {
        flags.push(QUOTA_FLAG.to_string());
    }
    flags
}

/// The window of the put rate shown over time.
const RATE_WINDOW: Duration = Duration::from_secs(60);

pub async fn run(plan: &Plan) -> Result<()> {
    let mut soaks = Vec::new();
    for server in [Server::Etcd, Server::Raftkv] {
        let bin = server.pick(&plan.etcd_bin, &plan.raftkv_bin);
        eprintln!(
            "== {} cluster of {}, {:?} of puts",
            server.name(),
            plan.size,
            plan.duration
        );
        let cluster = Cluster::start(server, bin, plan.size, &member_flags(plan), None).await?;
        let before = scrape_all(&cluster)?;
        let written_before: u64 = cluster.bytes_written()?.iter().sum();
        let opts = Options {
            endpoints: cluster.client_endpoints.clone(),
            conns: 10,
            clients: 100,
            total: u64::MAX,
            duration: Some(plan.duration),
            rate: 0,
            target_leader: true,
            progress: true,
            timeout: Duration::from_secs(10),
        };
        let report = workload::run(&opts, &puts(10_000, false)).await?;
        let after = scrape_all(&cluster)?;
        let written = cluster
            .bytes_written()?
            .iter()
            .sum::<u64>()
            .saturating_sub(written_before);
        let disk_used = (0..plan.size)
            .map(|i| crate::scale::disk_used(&cluster.data_dir(i)))
            .sum::<Result<u64>>()?;
        let grew = |f: &dyn Fn(&Metrics) -> f64| -> f64 {
            after.iter().map(f).sum::<f64>() - before.iter().map(f).sum::<f64>()
        };
        const FSYNC: &str = "etcd_disk_wal_fsync_duration_seconds";
        const COMMIT: &str = "etcd_disk_backend_commit_duration_seconds";
        let soak = Soak {
            server: server.name(),
            slow_applies: grew(&|m| m.value("etcd_server_slow_apply_total")),
            slow_fsyncs: grew(&|m| m.over_slow_bucket(FSYNC)),
            fsyncs: grew(&|m| m.value(&format!("{FSYNC}_count"))),
            slow_commits: grew(&|m| m.over_slow_bucket(COMMIT)),
            commits: grew(&|m| m.value(&format!("{COMMIT}_count"))),
            snapshots: grew(&|m| {
                // etcd's snapshot saves, raftkv's snapshot builds (one of the two is 0).
                m.value("etcd_debugging_snap_save_total_duration_seconds_count")
                    + m.value("raftkv_snapshot_build_duration_seconds_count")
            }),
            too_long_lines: (0..plan.size)
                .map(|i| {
                    std::fs::read_to_string(cluster.log_path(i))
                        .map(|log| log.lines().filter(|l| l.contains("took too long")).count())
                        .unwrap_or(0)
                })
                .sum(),
            bytes_written: written,
            disk_used,
            report,
        };
        eprintln!(
            "  {}: {:.0} put/s, p99.9 {:.3} ms, max {:.3} ms, {} puts over 50 ms, {} slow applies, {} fsyncs over 64 ms",
            soak.server,
            soak.report.requests_per_sec,
            soak.report.latency_ms.p999,
            soak.report.latency_ms.max,
            soak.report.over_stall,
            soak.slow_applies,
            soak.slow_fsyncs
        );
        soaks.push(soak);
    }
    let section = markdown(plan, &soaks);
    if let Some(path) = &plan.markdown {
        compare::splice(path, &section, BEGIN, END)?;
    }
    println!("{section}");
    Ok(())
}

fn markdown(plan: &Plan, soaks: &[Soak]) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "{BEGIN}");
    let flags = format!("default flags but `{}`", member_flags(plan).join(" "));
    let _ = writeln!(
        md,
        "Written by `raftkv-bench soak` (run `scripts/soak-compare`): etcd {} and raftkv, \
         {} members each, one after the other on the same machine, fsync on, {flags}. Workload \
         (b) for {} s each: 100 clients over 10 connections to the leader, 8-byte keys over \
         10,000 random keys, 256-byte values. Stalls: puts slower than {} ms as the client saw \
         them; from every member's `/metrics` over the run, summed over members: slow applies \
         (≥ 100 ms, each also logged as \"took too long\"), WAL fsyncs and backend commits over \
         64 ms (the histograms' nearest bucket bound), snapshots taken. Written per put: what \
         the members caused to be written to storage (Linux `/proc/<pid>/io` `write_bytes`, \
         counted as the page cache is dirtied), summed over members, over the puts; data dirs: \
         what they take on disk at the end, summed.\n",
        compare::etcd_version(&plan.etcd_bin),
        plan.size,
        plan.duration.as_secs(),
        STALL_MICROS / 1000
    );
    let _ = writeln!(
        md,
        "| server | put/s | puts | errors | p99 | p99.9 | max (ms) | puts over {} ms | stall episodes | slow applies | \"took too long\" log lines | fsyncs over 64 ms | backend commits over 64 ms | snapshots | written per put (bytes) | data dirs (MiB) |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        STALL_MICROS / 1000
    );
    for s in soaks {
        let r = &s.report;
        let _ = writeln!(
            md,
            "| {} | {:.0} | {} | {} | {:.3} | {:.3} | {:.3} | {} | {} | {:.0} | {} | {:.0} of {:.0} | {:.0} of {:.0} | {:.0} | {:.0} | {:.0} |",
            s.server,
            r.requests_per_sec,
            r.total,
            r.errors,
            r.latency_ms.p99,
            r.latency_ms.p999,
            r.latency_ms.max,
            r.over_stall,
            r.stalls.len(),
            s.slow_applies,
            s.too_long_lines,
            s.slow_fsyncs,
            s.fsyncs,
            s.slow_commits,
            s.commits,
            s.snapshots,
            s.bytes_written as f64 / r.total.max(1) as f64,
            s.disk_used as f64 / (1024.0 * 1024.0)
        );
    }
    for s in soaks {
        let rates: Vec<String> = s
            .report
            .rate_by_window(RATE_WINDOW)
            .iter()
            .map(|r| format!("{r:.0}"))
            .collect();
        if !rates.is_empty() {
            let _ = writeln!(
                md,
                "\n{}'s put/s, minute by minute: {}.",
                s.server,
                rates.join(", ")
            );
        }
        // A run with refused puts does not measure what the table claims: say why.
        if let Some(error) = s
            .report
            .first_error
            .as_deref()
            .filter(|_| s.report.errors > 0)
        {
            let _ = writeln!(
                md,
                "\n{}'s puts failed {} times; the first: {error}.",
                s.server, s.report.errors
            );
        }
    }
    for s in soaks {
        let mut longest: Vec<_> = s.report.stalls.iter().collect();
        longest.sort_by(|a, b| b.span_ms.total_cmp(&a.span_ms));
        if longest.is_empty() {
            continue;
        }
        let shown: Vec<String> = longest
            .iter()
            .take(LONGEST_SHOWN)
            .map(|e| {
                format!(
                    "{:.1} s in: {:.0} ms, {} puts (slowest {:.0} ms)",
                    e.at_s, e.span_ms, e.requests, e.longest_ms
                )
            })
            .collect();
        let _ = writeln!(
            md,
            "\n{}'s longest stall episodes (puts over {} ms whose times in flight overlap): {}.",
            s.server,
            STALL_MICROS / 1000,
            shown.join("; ")
        );
    }
    let _ = writeln!(md, "{END}");
    md
}

/// Stall episodes listed under the table, per server.
const LONGEST_SHOWN: usize = 5;

/// One member's `/metrics` scrape: each sample line's name with labels, and its value.
struct Metrics(Vec<(String, f64)>);

impl Metrics {
    fn parse(text: &str) -> Self {
        Metrics(
            text.lines()
                .filter(|l| !l.starts_with('#'))
                .filter_map(|l| {
                    let (name, value) = l.rsplit_once(' ')?;
                    Some((name.to_string(), value.trim().parse().ok()?))
                })
                .collect(),
        )
    }

    /// Observations of histogram `name` above [`SLOW_BUCKET`].
    fn over_slow_bucket(&self, name: &str) -> f64 {
        self.value(&format!("{name}_count"))
            - self.value(&format!("{name}_bucket{{le=\"{SLOW_BUCKET}\"}}"))
    }

    /// The sample named `name` (with its labels as written), 0 if there is none.
    fn value(&self, name: &str) -> f64 {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map_or(0.0, |(_, v)| *v)
    }
}

fn scrape_all(cluster: &Cluster) -> Result<Vec<Metrics>> {
    cluster
        .client_endpoints
        .iter()
        .map(|ep| scrape(ep).map(|text| Metrics::parse(&text)))
        .collect()
}

/// `GET /metrics` on a plain client port (`host:port`), HTTP/1.0.
fn scrape(endpoint: &str) -> Result<String> {
    let mut stream = TcpStream::connect(endpoint)
        .with_context(|| format!("cannot connect to {endpoint} for /metrics"))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "GET /metrics HTTP/1.0\r\nHost: {endpoint}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = Vec::new();
    stream.take(64 << 20).read_to_end(&mut response)?;
    let response = String::from_utf8_lossy(&response);
    let Some((head, body)) = response.split_once("\r\n\r\n") else {
        bail!("no HTTP response from {endpoint}/metrics");
    };
    let status = head.split(' ').nth(1);
    if !head.starts_with("HTTP/1.") || status != Some("200") {
        bail!(
            "{endpoint}/metrics answered {}",
            head.lines().next().unwrap_or("")
        );
    }
    Ok(body.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_read_by_name_and_labels() {
        let m = Metrics::parse(
            "# HELP etcd_server_slow_apply_total x\n\
             # TYPE etcd_server_slow_apply_total counter\n\
             etcd_server_slow_apply_total 3\n\
             etcd_disk_wal_fsync_duration_seconds_bucket{le=\"0.032\"} 90\n\
             etcd_disk_wal_fsync_duration_seconds_bucket{le=\"0.064\"} 97\n\
             etcd_disk_wal_fsync_duration_seconds_bucket{le=\"+Inf\"} 100\n\
             etcd_disk_wal_fsync_duration_seconds_count 100\n\
             etcd_disk_wal_fsync_duration_seconds_sum 1.5e-01\n\
             no_value_here\n\
             etcd_not_a_number abc\n\
             \u{0}\u{ff} 12 junk\n",
        );
        // Lines that are not `name value` are skipped, not trusted.
        assert_eq!(m.value("etcd_not_a_number"), 0.0);
        assert_eq!(m.value("no_value_here"), 0.0);
        assert_eq!(m.value("etcd_server_slow_apply_total"), 3.0);
        assert_eq!(
            m.value("etcd_disk_wal_fsync_duration_seconds_bucket{le=\"0.064\"}"),
            97.0
        );
        assert_eq!(m.value("etcd_disk_wal_fsync_duration_seconds_sum"), 0.15);
        assert_eq!(m.value("etcd_no_such_metric"), 0.0);
        assert_eq!(
            m.over_slow_bucket("etcd_disk_wal_fsync_duration_seconds"),
            3.0
        );
    }

    #[test]
    fn both_servers_get_a_quota_a_long_run_cannot_reach_unless_one_is_given() {
        let mut plan = Plan {
            raftkv_bin: "raftkv".into(),
            etcd_bin: "etcd".into(),
            size: 3,
            duration: Duration::from_secs(600),
            flags: vec!["--snapshot-count=5000".into()],
            markdown: None,
        };
        assert_eq!(
            member_flags(&plan),
            ["--snapshot-count=5000", "--quota-backend-bytes=8589934592"]
        );
        plan.flags.push("--quota-backend-bytes=1073741824".into());
        assert_eq!(
            member_flags(&plan),
            ["--snapshot-count=5000", "--quota-backend-bytes=1073741824"]
        );
    }

    #[test]
    fn the_table_has_a_row_per_server() {
        let mut recorder = crate::stats::Recorder::new();
        // 2 requests a second for two minutes, then 1 a second.
        for s in 0..150u64 {
            for _ in 0..if s < 120 { 2 } else { 1 } {
                recorder.ok_at(Duration::from_secs(s), Duration::from_millis(1));
            }
        }
        let mut report = recorder.report("put", Duration::from_secs(150));
        report.requests_per_sec = 9000.0;
        report.over_stall = 12;
        report.stalls = vec![
            crate::stats::Stall {
                at_s: 3.5,
                span_ms: 80.0,
                longest_ms: 70.0,
                requests: 2,
            },
            crate::stats::Stall {
                at_s: 120.5,
                span_ms: 438.0,
                longest_ms: 430.0,
                requests: 10,
            },
        ];
        let soak = |server| Soak {
            server,
            report: report.clone(),
            slow_applies: 2.0,
            slow_fsyncs: 1.0,
            fsyncs: 500.0,
            slow_commits: 0.0,
            commits: 400.0,
            snapshots: 54.0,
            too_long_lines: 2,
            bytes_written: 270 * 1_500,
            disk_used: 3 << 30,
        };
        let plan = Plan {
            raftkv_bin: "raftkv".into(),
            etcd_bin: "/nonexistent/etcd".into(),
            size: 3,
            duration: Duration::from_secs(600),
            flags: vec![],
            markdown: None,
        };
        let md = markdown(&plan, &[soak("etcd"), soak("raftkv")]);
        assert!(
            md.starts_with(BEGIN) && md.trim_end().ends_with(END),
            "{md}"
        );
        assert!(md.contains("for 600 s each"), "{md}");
        assert!(
            md.contains("default flags but `--quota-backend-bytes=8589934592`"),
            "{md}"
        );
        assert!(
            md.contains("| raftkv | 9000 | 270 | 0 | 1.000 | 1.000 | 1.000 | 12 | 2 | 2 | 2 | 1 of 500 | 0 of 400 | 54 | 1500 | 3072 |"),
            "{md}"
        );
        assert!(
            md.contains("raftkv's longest stall episodes (puts over 50 ms whose times in flight overlap): 120.5 s in: 438 ms, 10 puts (slowest 430 ms); 3.5 s in: 80 ms, 2 puts (slowest 70 ms)."),
            "{md}"
        );
        assert!(!md.contains("puts failed"), "{md}");
        let mut refused = soak("etcd");
        refused.report.errors = 3;
        refused.report.first_error = Some("etcdserver: mvcc: database space exceeded".into());
        let with_errors = markdown(&plan, &[refused]);
        assert!(
            with_errors.contains(
                "etcd's puts failed 3 times; the first: etcdserver: mvcc: database space exceeded."
            ),
            "{with_errors}"
        );
        // Two whole minutes; the last 30 s make no window.
        assert!(
            md.contains("raftkv's put/s, minute by minute: 2, 2."),
            "{md}"
        );
    }
}
