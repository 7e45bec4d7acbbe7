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
    _dir: tempfile::TempDir,
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
        let dir = tempfile::Builder::new()
            .prefix(&format!("raftkv-bench-{}-", server.name()))
            .tempdir()?;
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
        for i in 0..size {
            let data: PathBuf = dir.path().join(format!("m{i}"));
            let log = std::fs::File::create(dir.path().join(format!("m{i}.log")))?;
            let child = Command::new(bin)
                .args(["--name", &format!("m{i}")])
                .arg("--data-dir")
                .arg(&data)
                .args(["--listen-client-urls", &client(i)])
                .args(["--advertise-client-urls", &client(i)])
                .args(["--listen-peer-urls", &peer(i)])
                .args(["--initial-advertise-peer-urls", &peer(i)])
                .args(["--initial-cluster", &initial])
                .args(["--initial-cluster-token", "bench"])
                .args(["--initial-cluster-state", "new"])
                .args(&tls_flags)
                .args(flags)
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()
                .with_context(|| format!("cannot start {}", bin.display()))?;
            children.push(child);
        }
        let cluster = Self {
            server,
            children,
            client_endpoints: (0..size)
                .map(|i| format!("127.0.0.1:{}", ports[2 * i]))
                .collect(),
            _dir: dir,
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
