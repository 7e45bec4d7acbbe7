//! `raftkv-bench`: etcd `benchmark`'s workloads over the etcd v3 API, so it measures raftkv
//! and a real etcd alike, and `compare`, which runs both side by side.

mod catchup;
mod certs;
mod cluster;
mod compare;
mod lease;
mod plot;
mod scale;
mod snapshots;
mod soak;
mod stats;
mod watch;
mod workload;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Result, bail};
use clap::{Args, Parser, Subcommand};

use workload::{KeyGen, Options, Workload};

#[derive(Parser)]
#[command(
    name = "raftkv-bench",
    version,
    about = "Benchmark raftkv or etcd over the etcd v3 API"
)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Args)]
struct Global {
    /// Comma-separated gRPC endpoints.
    #[arg(
        long,
        global = true,
        value_delimiter = ',',
        default_value = "127.0.0.1:2379"
    )]
    endpoints: Vec<String>,
    /// Total number of gRPC connections.
    #[arg(long, global = true, default_value_t = 1)]
    conns: usize,
    /// Total number of concurrent clients.
    #[arg(long, global = true, default_value_t = 1)]
    clients: usize,
    /// Total number of requests.
    #[arg(long, global = true, default_value_t = 10_000)]
    total: u64,
    /// Run for this long instead of --total (e.g. 30s, 2m).
    #[arg(long, global = true, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Maximum requests per second across clients (0 is no limit).
    #[arg(long, global = true, default_value_t = 0)]
    rate: u64,
    /// Connect only to the leader.
    #[arg(long, global = true)]
    target_leader: bool,
    /// Print the report as JSON.
    #[arg(long, global = true)]
    json: bool,
    /// Per-request timeout.
    #[arg(long, global = true, value_parser = parse_duration, default_value = "10s")]
    request_timeout: Duration,
    /// Verify certificates of TLS-enabled secure servers using this CA bundle (with any of
    /// the TLS flags, endpoints without a scheme are dialled over TLS).
    #[arg(long, global = true, value_name = "FILE")]
    cacert: Option<PathBuf>,
    /// Identify secure client using this TLS certificate file.
    #[arg(long, global = true, value_name = "FILE")]
    cert: Option<PathBuf>,
    /// Identify secure client using this TLS key file.
    #[arg(long, global = true, value_name = "FILE")]
    key: Option<PathBuf>,
}

#[derive(Args, Clone)]
struct Keys {
    /// Key size of each request.
    #[arg(long, default_value_t = 8)]
    key_size: usize,
    /// Value size of each request.
    #[arg(long, default_value_t = 8)]
    val_size: usize,
    /// Number of distinct keys.
    #[arg(long, default_value_t = 1)]
    key_space_size: u64,
    /// Use sequential keys instead of random ones.
    #[arg(long)]
    sequential_keys: bool,
}

impl Keys {
    fn generator(&self) -> KeyGen {
        KeyGen {
            key_size: self.key_size,
            val_size: self.val_size,
            key_space: self.key_space_size,
            sequential: self.sequential_keys,
        }
    }
}

#[derive(Subcommand)]
enum Cmd {
    /// Benchmark put.
    Put(Keys),
    /// Benchmark range: `range <key> [end-range]`.
    Range {
        /// (Its own id: `key` is the global TLS key file's, and one id with two types
        /// made clap panic on every `range`.)
        #[arg(id = "range_key", value_name = "KEY")]
        key: String,
        end: Option<String>,
        /// Linearizable (l) or serializable (s).
        #[arg(long, default_value = "l")]
        consistency: String,
        /// Maximum keys per response (0 is no limit).
        #[arg(long, default_value_t = 0)]
        limit: i64,
    },
    /// Benchmark txn with puts (an always-true compare, then --txn-ops puts).
    TxnPut {
        #[command(flatten)]
        keys: Keys,
        /// Puts per txn.
        #[arg(long, default_value_t = 1)]
        txn_ops: usize,
    },
    /// Benchmark a mix of linearizable gets and puts over the same keys.
    Mixed {
        #[command(flatten)]
        keys: Keys,
        /// Fraction of requests that are reads (0..=1).
        #[arg(long, default_value_t = 0.5)]
        read_ratio: f64,
    },
    /// Benchmark watch latency: watchers of one key, one putter at --put-rate; each event's
    /// latency at each watcher (etcd's watch-latency).
    WatchLatency {
        /// Total watch streams.
        #[arg(long, default_value_t = 10)]
        streams: usize,
        /// Watchers per stream.
        #[arg(long, default_value_t = 10)]
        watchers_per_stream: usize,
        /// Total number of puts.
        #[arg(long, default_value_t = 1000)]
        put_total: usize,
        /// Puts per second (etcd's limiter: up to this many at once at the start).
        #[arg(long, default_value_t = 100)]
        put_rate: u64,
        /// Size of the watched key.
        #[arg(long, default_value_t = 32)]
        key_size: usize,
        /// Size of the values put.
        #[arg(long, default_value_t = 32)]
        val_size: usize,
        /// Ask for each event's previous key-value.
        #[arg(long)]
        prevkv: bool,
        /// How long events may still arrive after the last put (later ones count as errors).
        #[arg(long, value_parser = parse_duration, default_value = "60s")]
        event_timeout: Duration,
    },
    /// Benchmark watch: watchers created one after another on each stream (creation
    /// latency), then puts to the watched keys (events received per second).
    Watch {
        /// Total watch streams.
        #[arg(long, default_value_t = 10)]
        streams: usize,
        /// Watchers per stream.
        #[arg(long, default_value_t = 100)]
        watch_per_stream: usize,
        /// Total number of keys to be watched.
        #[arg(long, default_value_t = 1)]
        watched_key_total: usize,
        /// Puts per second over all clients (0 is no limit).
        #[arg(long, default_value_t = 0)]
        put_rate: u64,
        /// Number of puts.
        #[arg(long, default_value_t = 1000)]
        put_total: usize,
        /// Size of the watched keys.
        #[arg(long, default_value_t = 32)]
        key_size: usize,
        /// Maximum possible keys.
        #[arg(long, default_value_t = 1)]
        key_space_size: u64,
        /// Use sequential keys instead of random ones.
        #[arg(long)]
        sequential_keys: bool,
        /// How long events may still arrive after the last put.
        #[arg(long, value_parser = parse_duration, default_value = "60s")]
        event_timeout: Duration,
    },
    /// Benchmark lease keep-alive (etcd's lease-keepalive): each client grants one lease,
    /// then sends keep-alives one at a time, each on a stream of its own (clientv3's
    /// KeepAliveOnce); --total keep-alives in all.
    LeaseKeepalive,
    /// Benchmark lease grant: --total grants, each a new lease (one Raft write), left to
    /// expire after --ttl.
    LeaseGrant {
        /// TTL of each lease, in seconds.
        #[arg(long, default_value_t = lease::KEEPALIVE_TTL)]
        ttl: i64,
    },
    /// Snapshot size and speed beside etcd: one corpus loaded into a one-member etcd and a
    /// one-member raftkv, `etcdctl snapshot save` against each, then each restored with its
    /// own tool; prints a markdown table (`scripts/snapshot-compare`).
    SnapshotCompare {
        /// The raftkv member binary.
        #[arg(long, default_value = "target/release/raftkv")]
        raftkv_bin: PathBuf,
        /// The etcd member binary (Debian's etcd-server).
        #[arg(long, default_value = "etcd")]
        etcd_bin: PathBuf,
        /// etcdctl 3.4 (saves both snapshots, restores etcd's).
        #[arg(long, default_value = "etcdctl")]
        etcdctl_bin: PathBuf,
        /// raftkvctl (restores raftkv's); default: the one beside --raftkv-bin.
        #[arg(long)]
        raftkvctl_bin: Option<PathBuf>,
        /// pods (Kubernetes-like objects), config (small values) or repetitive.
        #[arg(long, default_value = "pods", value_parser = parse_corpus)]
        corpus: raftkv_codec::samples::Corpus,
        /// Items of the corpus to load.
        #[arg(long, default_value_t = 20_000)]
        items: u64,
    },
    /// Follower catch-up beside etcd: a 3-member cluster with a low --snapshot-count, one
    /// follower down while the corpus is loaded, then timed from its restart until it has
    /// the leader's revision (`scripts/catch-up-compare`).
    CatchUp {
        /// The raftkv member binary.
        #[arg(long, default_value = "target/release/raftkv")]
        raftkv_bin: PathBuf,
        /// The etcd member binary (Debian's etcd-server).
        #[arg(long, default_value = "etcd")]
        etcd_bin: PathBuf,
        /// pods (Kubernetes-like objects), config (small values) or repetitive.
        #[arg(long, default_value = "pods", value_parser = parse_corpus)]
        corpus: raftkv_codec::samples::Corpus,
        /// Items of the corpus to load while the follower is down.
        #[arg(long, default_value_t = 20_000)]
        items: u64,
        /// `--snapshot-count` of both servers (low, so the follower is sent a snapshot).
        #[arg(long, default_value_t = 10_000)]
        snapshot_count: u64,
    },
    /// Scale beside etcd (issue 18): load N keys into 3 members of each, then RSS, disk,
    /// `snapshot save`, a follower's restart and its catch-up from a snapshot
    /// (`scripts/scale-compare`).
    Scale {
        /// The raftkv member binary.
        #[arg(long, default_value = "target/release/raftkv")]
        raftkv_bin: PathBuf,
        /// The etcd member binary (Debian's etcd-server).
        #[arg(long, default_value = "etcd")]
        etcd_bin: PathBuf,
        /// Key counts, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "1000000")]
        keys: Vec<u64>,
    },
    /// Stalls beside etcd (issue 18): workload (b) for a long time against each, then puts
    /// over 50 ms, slow applies, slow fsyncs and commits, snapshots (`scripts/soak-compare`).
    Soak {
        /// The raftkv member binary.
        #[arg(long, default_value = "target/release/raftkv")]
        raftkv_bin: PathBuf,
        /// The etcd member binary (Debian's etcd-server).
        #[arg(long, default_value = "etcd")]
        etcd_bin: PathBuf,
        /// Members of each cluster.
        #[arg(long, default_value_t = 3)]
        size: usize,
        /// How long the puts run against each server.
        #[arg(long = "for", value_parser = parse_duration, default_value = "10m")]
        run_for: Duration,
        /// Markdown file whose marked section is replaced with the results.
        #[arg(long)]
        markdown: Option<PathBuf>,
        /// Member flags for both servers.
        #[arg(last = true)]
        flags: Vec<String>,
    },
    /// Run the same workloads against etcd and raftkv clusters; write docs and a plot.
    Compare {
        /// The raftkv member binary.
        #[arg(long, default_value = "target/release/raftkv")]
        raftkv_bin: PathBuf,
        /// The etcd member binary (Debian's etcd-server).
        #[arg(long, default_value = "etcd")]
        etcd_bin: PathBuf,
        /// Cluster sizes, in order.
        #[arg(long, value_delimiter = ',', default_value = "3,5")]
        sizes: Vec<usize>,
        /// Puts in the sequential, one-client workload (a).
        #[arg(long, default_value_t = 2_000)]
        sequential_total: u64,
        /// Requests in workloads (b) and (c).
        #[arg(long = "workload-total", default_value_t = 20_000)]
        workload_total: u64,
        /// Requests in workloads (b-k) and (c-k): (b) and (c) with ~1.5 KB Kubernetes-like
        /// Pod objects, run with (a-k), (a) with Pods (0 skips the three).
        #[arg(long, default_value_t = 20_000)]
        pod_total: u64,
        /// Keys loaded before measuring members' memory (0 skips it).
        #[arg(long, default_value_t = 1_000_000)]
        memory_keys: u64,
        /// Rounds of workloads (a)-(c-k), (f) and (g) for each cluster size, the two servers
        /// alternating which goes first; every figure reported is the median of its rounds.
        /// The watch workloads and the memory comparison run in the first round only.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=20))]
        rounds: u64,
        /// Watchers in the watch-latency workload (d), 100 per stream, on the first cluster
        /// size only (0 skips it).
        #[arg(long, default_value_t = 10_000)]
        watch_latency_watchers: usize,
        /// Puts in workload (d).
        #[arg(long, default_value_t = 1_000)]
        watch_put_total: usize,
        /// Puts per second in workload (d). One client puts, one after another: at etcd's
        /// tool's default of 100 neither server keeps up with fsync on (each then runs at its
        /// own put rate, so the faster one delivers more events); at 50 both keep the rate
        /// and deliver the same events.
        #[arg(long, default_value_t = 50)]
        watch_put_rate: u64,
        /// Watchers of every key open during workload (e)'s puts, on 10 streams, on the first
        /// cluster size only (0 skips it).
        #[arg(long, default_value_t = 1_000)]
        put_watchers: usize,
        /// Keep-alives in the lease keep-alive workload (f), 100 clients over 10 connections
        /// spread over all members (0 skips it).
        #[arg(long, default_value_t = 20_000)]
        lease_keepalive_total: u64,
        /// Grants in the lease grant workload (g), 100 clients over 10 connections to the
        /// leader (0 skips it).
        #[arg(long, default_value_t = 10_000)]
        lease_grant_total: u64,
        /// TLS with certificate authentication on the client and peer ports of both servers
        /// (a CA, a member and a client certificate made for the run); the results go to a
        /// section of their own.
        #[arg(long)]
        tls: bool,
        /// Markdown file whose marked section (the plain or the --tls run's) is replaced with
        /// the results.
        #[arg(long, default_value = "docs/benchmarks.md")]
        markdown: PathBuf,
        /// PNG plot of the latency percentiles [default: docs/benchmarks-latency.png, with
        /// --tls docs/benchmarks-latency-tls.png].
        #[arg(long)]
        plot: Option<PathBuf>,
        /// Also write every result as JSON here.
        #[arg(long)]
        json_out: Option<PathBuf>,
        /// Member flags for both servers (e.g. --heartbeat-interval=50).
        #[arg(last = true)]
        flags: Vec<String>,
    },
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map_or((s, "s"), |i| s.split_at(i));
    let n: f64 = num.parse().map_err(|_| format!("invalid duration {s:?}"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => {
            return Err(format!(
                "invalid duration unit in {s:?} (use ms, s, m or h)"
            ));
        }
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("invalid duration {s:?}"));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn parse_corpus(s: &str) -> Result<raftkv_codec::samples::Corpus, String> {
    raftkv_codec::samples::Corpus::from_name(s)
        .ok_or_else(|| format!("unknown corpus {s:?} (pods, config or repetitive)"))
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(cli))
}

async fn run(cli: Cli) -> Result<()> {
    let g = &cli.global;
    if g.cacert.is_some() || g.cert.is_some() || g.key.is_some() {
        let tls = raftkv_client::TlsConfig::from_files(
            g.cacert.as_deref(),
            g.cert.as_deref(),
            g.key.as_deref(),
        )?;
        workload::use_tls(tls.client_config()?);
    }
    let workload = match &cli.command {
        Cmd::SnapshotCompare {
            raftkv_bin,
            etcd_bin,
            etcdctl_bin,
            raftkvctl_bin,
            corpus,
            items,
        } => {
            let plan = snapshots::Plan {
                raftkv_bin: raftkv_bin.clone(),
                etcd_bin: etcd_bin.clone(),
                etcdctl_bin: etcdctl_bin.clone(),
                raftkvctl_bin: raftkvctl_bin
                    .clone()
                    .unwrap_or_else(|| snapshots::sibling(raftkv_bin, "raftkvctl")),
                corpus: *corpus,
                items: *items,
            };
            return snapshots::run(&plan).await;
        }
        Cmd::CatchUp {
            raftkv_bin,
            etcd_bin,
            corpus,
            items,
            snapshot_count,
        } => {
            let plan = catchup::Plan {
                raftkv_bin: raftkv_bin.clone(),
                etcd_bin: etcd_bin.clone(),
                corpus: *corpus,
                items: *items,
                snapshot_count: *snapshot_count,
            };
            return catchup::run(&plan).await;
        }
        Cmd::Scale {
            raftkv_bin,
            etcd_bin,
            keys,
        } => {
            let plan = scale::Plan {
                raftkv_bin: raftkv_bin.clone(),
                etcd_bin: etcd_bin.clone(),
                keys: keys.clone(),
            };
            return scale::run(&plan).await;
        }
        Cmd::Soak {
            raftkv_bin,
            etcd_bin,
            size,
            run_for,
            markdown,
            flags,
        } => {
            let plan = soak::Plan {
                raftkv_bin: raftkv_bin.clone(),
                etcd_bin: etcd_bin.clone(),
                size: *size,
                duration: *run_for,
                flags: flags.clone(),
                markdown: markdown.clone(),
            };
            return soak::run(&plan).await;
        }
        Cmd::Compare {
            raftkv_bin,
            etcd_bin,
            sizes,
            sequential_total,
            workload_total,
            pod_total,
            memory_keys,
            rounds,
            watch_latency_watchers,
            watch_put_total,
            watch_put_rate,
            put_watchers,
            lease_keepalive_total,
            lease_grant_total,
            tls,
            markdown,
            plot,
            json_out,
            flags,
        } => {
            if *tls && (g.cacert.is_some() || g.cert.is_some() || g.key.is_some()) {
                bail!(
                    "compare --tls makes its own certificates: leave out --cacert, --cert and --key"
                );
            }
            let default_plot = if *tls {
                "docs/benchmarks-latency-tls.png"
            } else {
                "docs/benchmarks-latency.png"
            };
            let plan = compare::Plan {
                raftkv_bin: raftkv_bin.clone(),
                etcd_bin: etcd_bin.clone(),
                sizes: sizes.clone(),
                sequential_total: *sequential_total,
                total: *workload_total,
                pod_total: *pod_total,
                memory_keys: *memory_keys,
                rounds: *rounds as usize,
                watch_latency_watchers: *watch_latency_watchers,
                watch_put_total: *watch_put_total,
                watch_put_rate: *watch_put_rate,
                put_watchers: *put_watchers,
                lease_keepalive_total: *lease_keepalive_total,
                lease_grant_total: *lease_grant_total,
                flags: flags.clone(),
                tls: *tls,
                markdown: markdown.clone(),
                plot: plot.clone().unwrap_or_else(|| default_plot.into()),
                json: json_out.clone(),
            };
            return compare::run(&plan).await;
        }
        Cmd::WatchLatency {
            streams,
            watchers_per_stream,
            put_total,
            put_rate,
            key_size,
            val_size,
            prevkv,
            event_timeout,
        } => {
            let report = watch::latency(&watch::LatencyOptions {
                endpoints: g.endpoints.clone(),
                conns: g.conns,
                clients: g.clients,
                streams: *streams,
                watchers_per_stream: *watchers_per_stream,
                put_total: *put_total,
                put_rate: *put_rate,
                key_size: *key_size,
                val_size: *val_size,
                prev_kv: *prevkv,
                target_leader: g.target_leader,
                put_to_leader: false,
                timeout: g.request_timeout,
                drain: *event_timeout,
                progress: !g.json,
            })
            .await?;
            if g.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.text());
            }
            return Ok(());
        }
        Cmd::Watch {
            streams,
            watch_per_stream,
            watched_key_total,
            put_rate,
            put_total,
            key_size,
            key_space_size,
            sequential_keys,
            event_timeout,
        } => {
            let report = watch::watch(&watch::WatchOptions {
                endpoints: g.endpoints.clone(),
                conns: g.conns,
                clients: g.clients,
                streams: *streams,
                watch_per_stream: *watch_per_stream,
                watched_key_total: *watched_key_total,
                put_rate: *put_rate,
                put_total: *put_total,
                key_size: *key_size,
                key_space_size: *key_space_size,
                sequential_keys: *sequential_keys,
                target_leader: g.target_leader,
                timeout: g.request_timeout,
                drain: *event_timeout,
                progress: !g.json,
            })
            .await?;
            if g.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.text());
            }
            return Ok(());
        }
        Cmd::Put(keys) => Workload::Put(keys.generator()),
        Cmd::LeaseKeepalive => Workload::LeaseKeepAlive {
            ttl: lease::KEEPALIVE_TTL,
        },
        Cmd::LeaseGrant { ttl } => {
            if *ttl <= 0 {
                bail!("--ttl must be at least 1");
            }
            Workload::LeaseGrant { ttl: *ttl }
        }
        Cmd::Range {
            key,
            end,
            consistency,
            limit,
        } => {
            let serializable = match consistency.as_str() {
                "l" => false,
                "s" => true,
                other => bail!("unknown consistency {other:?} (use l or s)"),
            };
            Workload::Range {
                key: key.as_bytes().to_vec(),
                end: end.as_deref().unwrap_or("").as_bytes().to_vec(),
                limit: *limit,
                serializable,
            }
        }
        Cmd::TxnPut { keys, txn_ops } => {
            if *txn_ops == 0 {
                bail!("--txn-ops must be at least 1");
            }
            Workload::TxnPut {
                keys: keys.generator(),
                ops: *txn_ops,
            }
        }
        Cmd::Mixed { keys, read_ratio } => {
            if !(0.0..=1.0).contains(read_ratio) {
                bail!("--read-ratio must be between 0 and 1");
            }
            Workload::Mixed {
                keys: keys.generator(),
                read_ratio: *read_ratio,
            }
        }
    };
    let opts = Options {
        endpoints: g.endpoints.clone(),
        conns: g.conns,
        clients: g.clients,
        total: g.total,
        duration: g.duration,
        rate: g.rate,
        target_leader: g.target_leader,
        progress: !g.json,
        timeout: g.request_timeout,
    };
    let report = workload::run(&opts, &workload).await?;
    if g.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.text());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("raftkv-bench").chain(args.iter().copied()))
            .unwrap_or_else(|e| panic!("{args:?}: {e}"))
    }

    #[test]
    fn range_takes_a_key_beside_the_tls_key_flag() {
        let cli = parse(&["range", "foo", "fop", "--key", "client.key"]);
        let Cmd::Range { key, end, .. } = cli.command else {
            panic!("not range");
        };
        assert_eq!((key.as_str(), end.as_deref()), ("foo", Some("fop")));
        assert_eq!(cli.global.key, Some(PathBuf::from("client.key")));
    }

    #[test]
    fn watch_latency_takes_etcds_flags_and_defaults() {
        let cli = parse(&["watch-latency"]);
        let Cmd::WatchLatency {
            streams,
            watchers_per_stream,
            put_total,
            put_rate,
            key_size,
            val_size,
            prevkv,
            event_timeout,
        } = cli.command
        else {
            panic!("not watch-latency");
        };
        assert_eq!(
            (streams, watchers_per_stream, put_total, put_rate),
            (10, 10, 1000, 100)
        );
        assert_eq!((key_size, val_size, prevkv), (32, 32, false));
        assert_eq!(event_timeout, Duration::from_secs(60));
        let cli = parse(&[
            "--endpoints=a:1,b:2",
            "--conns",
            "10",
            "--clients",
            "10",
            "watch-latency",
            "--streams",
            "100",
            "--watchers-per-stream",
            "100",
            "--put-total",
            "50",
            "--put-rate",
            "7",
            "--val-size",
            "256",
            "--prevkv",
        ]);
        assert_eq!(cli.global.endpoints, ["a:1", "b:2"]);
        assert_eq!((cli.global.conns, cli.global.clients), (10, 10));
        let Cmd::WatchLatency {
            streams,
            watchers_per_stream,
            put_total,
            put_rate,
            val_size,
            prevkv,
            ..
        } = cli.command
        else {
            panic!("not watch-latency");
        };
        assert_eq!(
            (
                streams,
                watchers_per_stream,
                put_total,
                put_rate,
                val_size,
                prevkv
            ),
            (100, 100, 50, 7, 256, true)
        );
    }

    #[test]
    fn watch_takes_etcds_flags_and_defaults() {
        let Cmd::Watch {
            streams,
            watch_per_stream,
            watched_key_total,
            put_rate,
            put_total,
            key_size,
            key_space_size,
            sequential_keys,
            ..
        } = parse(&["watch"]).command
        else {
            panic!("not watch");
        };
        assert_eq!(
            (
                streams,
                watch_per_stream,
                watched_key_total,
                put_rate,
                put_total
            ),
            (10, 100, 1, 0, 1000)
        );
        assert_eq!((key_size, key_space_size, sequential_keys), (32, 1, false));
        let Cmd::Watch {
            watched_key_total,
            key_space_size,
            sequential_keys,
            put_rate,
            ..
        } = parse(&[
            "watch",
            "--watched-key-total",
            "100",
            "--key-space-size",
            "1000",
            "--sequential-keys",
            "--put-rate",
            "500",
        ])
        .command
        else {
            panic!("not watch");
        };
        assert_eq!(
            (watched_key_total, key_space_size, sequential_keys, put_rate),
            (100, 1000, true, 500)
        );
    }

    #[test]
    fn compare_watch_workloads_default_on_and_skip_with_zero() {
        let Cmd::Compare {
            watch_latency_watchers,
            watch_put_total,
            put_watchers,
            ..
        } = parse(&["compare"]).command
        else {
            panic!("not compare");
        };
        assert_eq!(
            (watch_latency_watchers, watch_put_total, put_watchers),
            (10_000, 1_000, 1_000)
        );
        let Cmd::Compare {
            watch_latency_watchers,
            put_watchers,
            flags,
            ..
        } = parse(&[
            "compare",
            "--watch-latency-watchers",
            "0",
            "--put-watchers",
            "0",
            "--",
            "--heartbeat-interval=50",
        ])
        .command
        else {
            panic!("not compare");
        };
        assert_eq!((watch_latency_watchers, put_watchers), (0, 0));
        assert_eq!(flags, ["--heartbeat-interval=50"]);
    }

    #[test]
    fn lease_commands_take_etcds_flags_and_defaults() {
        let cli = parse(&["lease-keepalive"]);
        assert!(matches!(cli.command, Cmd::LeaseKeepalive));
        // etcd's lease-keepalive: --total 10000 by default, the global client flags.
        assert_eq!(cli.global.total, 10_000);
        let cli = parse(&[
            "--endpoints=a:1,b:2",
            "--clients=100",
            "--conns=10",
            "lease-keepalive",
            "--total=500",
            "--json",
        ]);
        assert!(matches!(cli.command, Cmd::LeaseKeepalive));
        assert_eq!(
            (cli.global.clients, cli.global.conns, cli.global.total),
            (100, 10, 500)
        );
        assert!(cli.global.json);
        let Cmd::LeaseGrant { ttl } = parse(&["lease-grant"]).command else {
            panic!("not lease-grant");
        };
        assert_eq!(ttl, 100);
        let Cmd::LeaseGrant { ttl } = parse(&["lease-grant", "--ttl", "5"]).command else {
            panic!("not lease-grant");
        };
        assert_eq!(ttl, 5);
    }

    #[test]
    fn compare_lease_workloads_default_on_and_skip_with_zero() {
        let Cmd::Compare {
            lease_keepalive_total,
            lease_grant_total,
            ..
        } = parse(&["compare"]).command
        else {
            panic!("not compare");
        };
        assert_eq!((lease_keepalive_total, lease_grant_total), (20_000, 10_000));
        let Cmd::Compare {
            lease_keepalive_total,
            lease_grant_total,
            ..
        } = parse(&[
            "compare",
            "--lease-keepalive-total",
            "0",
            "--lease-grant-total",
            "0",
        ])
        .command
        else {
            panic!("not compare");
        };
        assert_eq!((lease_keepalive_total, lease_grant_total), (0, 0));
    }

    #[test]
    fn soak_runs_ten_minutes_unless_told_and_passes_member_flags() {
        let Cmd::Soak { run_for, size, .. } = parse(&["soak"]).command else {
            panic!("not soak");
        };
        assert_eq!((run_for, size), (Duration::from_secs(600), 3));
        // `--for`, not the global `--duration` (which the workloads read).
        let cli = parse(&["soak", "--for", "2m", "--", "--snapshot-count=1000"]);
        let Cmd::Soak { run_for, flags, .. } = cli.command else {
            panic!("not soak");
        };
        assert_eq!(run_for, Duration::from_secs(120));
        assert_eq!(flags, ["--snapshot-count=1000"]);
    }

    #[test]
    fn compare_runs_the_pod_workloads_unless_told() {
        let Cmd::Compare { pod_total, .. } = parse(&["compare"]).command else {
            panic!("not compare");
        };
        assert_eq!(pod_total, 20_000);
        let Cmd::Compare { pod_total, .. } = parse(&["compare", "--pod-total", "0"]).command else {
            panic!("not compare");
        };
        assert_eq!(pod_total, 0);
    }

    #[test]
    fn compare_tls_is_off_by_default_and_plots_apart() {
        let Cmd::Compare { tls, plot, .. } = parse(&["compare"]).command else {
            panic!("not compare");
        };
        assert_eq!((tls, plot), (false, None));
        let Cmd::Compare { tls, .. } = parse(&["compare", "--tls", "--sizes", "3"]).command else {
            panic!("not compare");
        };
        assert!(tls);
    }

    #[test]
    fn compare_runs_one_round_unless_told_and_bounds_them() {
        let Cmd::Compare { rounds, .. } = parse(&["compare"]).command else {
            panic!("not compare");
        };
        assert_eq!(rounds, 1);
        let Cmd::Compare { rounds, .. } = parse(&["compare", "--rounds", "3"]).command else {
            panic!("not compare");
        };
        assert_eq!(rounds, 3);
        for bad in ["0", "21", "-1"] {
            assert!(Cli::try_parse_from(["raftkv-bench", "compare", "--rounds", bad]).is_err());
        }
    }

    #[test]
    fn durations_parse_like_etcd_flags() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("5"), Ok(Duration::from_secs(5)));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("-1s").is_err());
    }
}
