//! Local clusters for the comparison: N member processes of `raftkv` or Debian's `etcd`,
//! started with the same etcd flags on fresh loopback ports (`https://` ones with TLS on
//! both ports when given [`Certs`]), stopped (SIGKILL) on drop.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::certs::Certs;
use crate::workload::find_leader;

/// Which server runs the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Server {
    Raftkv,
    Etcd,
}

impl Server {
    /// Of two things, the one for this server (its binary, its figures): etcd's first.
    pub fn pick<'a, T: ?Sized>(self, etcd: &'a T, raftkv: &'a T) -> &'a T {
        match self {
            Server::Etcd => etcd,
            Server::Raftkv => raftkv,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Server::Raftkv => "raftkv",
            Server::Etcd => "etcd",
        }
    }
}

/// A running cluster.
pub struct Cluster {
    pub server: Server,
    children: Vec<Child>,
    pub client_endpoints: Vec<String>,
    /// How each member was started (its binary, arguments and log), to restart it.
    launch: Vec<(PathBuf, Vec<std::ffi::OsString>, PathBuf)>,
    dir: tempfile::TempDir,
}

/// Starts one member, appending to its log.
fn spawn(bin: &Path, args: &[std::ffi::OsString], log: &Path) -> Result<Child> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)?;
    Command::new(bin)
        .args(args)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("cannot start {}", bin.display()))
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl Cluster {
    /// Starts `size` members of `server` (`bin` is its executable) and waits for a leader.
    /// With `tls`, both ports serve TLS and ask for certificates signed by its CA (the
    /// workloads must then dial with [`crate::workload::use_tls`]).
    pub async fn start(
        server: Server,
        bin: &Path,
        size: usize,
        flags: &[String],
        tls: Option<&Certs>,
    ) -> Result<Self> {
        let mut dir = tempfile::Builder::new()
            .prefix(&format!("raftkv-bench-{}-", server.name()))
            .tempdir()?;
        if std::env::var_os("RAFTKV_BENCH_KEEP").is_some() {
            eprintln!("keeping {}", dir.path().display());
            dir.disable_cleanup(true);
        }
        let mut ports = Vec::new();
        while ports.len() < size * 2 {
            let p = free_port()?;
            if !ports.contains(&p) {
                ports.push(p);
            }
        }
        let scheme = if tls.is_some() { "https" } else { "http" };
        let peer = |i: usize| format!("{scheme}://127.0.0.1:{}", ports[2 * i + 1]);
        let client = |i: usize| format!("{scheme}://127.0.0.1:{}", ports[2 * i]);
        let tls_flags = tls.map(Certs::member_flags).unwrap_or_default();
        let initial: Vec<String> = (0..size).map(|i| format!("m{i}={}", peer(i))).collect();
        let initial = initial.join(",");
        let mut children = Vec::new();
        let mut launch = Vec::new();
        for i in 0..size {
            let data: PathBuf = dir.path().join(format!("m{i}"));
            let log = dir.path().join(format!("m{i}.log"));
            let mut args: Vec<std::ffi::OsString> = Vec::new();
            let mut arg = |a: &str| args.push(a.into());
            for a in [
                "--name",
                &format!("m{i}"),
                "--data-dir",
                data.to_str().context("data dir path")?,
                "--listen-client-urls",
                &client(i),
                "--advertise-client-urls",
                &client(i),
                "--listen-peer-urls",
                &peer(i),
                "--initial-advertise-peer-urls",
                &peer(i),
                "--initial-cluster",
                &initial,
                "--initial-cluster-token",
                "bench",
                "--initial-cluster-state",
                "new",
            ] {
                arg(a);
            }
            for a in tls_flags.iter().chain(flags) {
                arg(a);
            }
            children.push(spawn(bin, &args, &log)?);
            launch.push((bin.to_path_buf(), args, log));
        }
        let cluster = Self {
            server,
            children,
            launch,
            client_endpoints: (0..size)
                .map(|i| format!("127.0.0.1:{}", ports[2 * i]))
                .collect(),
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if find_leader(&cluster.client_endpoints).await.is_ok() {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "{} cluster of {size} elected no leader in 30 s",
                    server.name()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(cluster)
    }

    /// Stops member `i` (SIGKILL), keeping its data dir.
    pub fn kill(&mut self, i: usize) {
        let _ = self.children[i].kill();
        let _ = self.children[i].wait();
    }

    /// Starts member `i` again with its data dir and flags.
    pub fn restart(&mut self, i: usize) -> Result<()> {
        let (bin, args, log) = &self.launch[i];
        self.children[i] = spawn(bin, args, log)?;
        Ok(())
    }

    /// Member `i`'s data dir.
    pub fn data_dir(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("m{i}"))
    }

    /// Member `i`'s log (its stdout and stderr).
    pub fn log_path(&self, i: usize) -> PathBuf {
        self.launch[i].2.clone()
    }

    /// A path for a scratch file beside the members' data dirs (removed with them).
    pub fn scratch_path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Bytes each member has caused to be written to storage so far: `write_bytes` of
    /// Linux's `/proc/<pid>/io`, counted as the page cache is dirtied (a page dirtied again
    /// before it is written back counts once), so what its files cost the disk.
    pub fn bytes_written(&self) -> Result<Vec<u64>> {
        self.children
            .iter()
            .map(|c| {
                let io = std::fs::read_to_string(format!("/proc/{}/io", c.id()))?;
                io.lines()
                    .find_map(|l| l.strip_prefix("write_bytes:"))
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .context("no write_bytes in /proc io")
            })
            .collect()
    }

    /// Resident set size of each member, in bytes (Linux `/proc`).
    pub fn rss(&self) -> Result<Vec<u64>> {
        self.children
            .iter()
            .map(|c| {
                let status = std::fs::read_to_string(format!("/proc/{}/status", c.id()))?;
                let kb = status
                    .lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                    .context("no VmRSS in /proc status")?;
                Ok(kb * 1024)
            })
            .collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
