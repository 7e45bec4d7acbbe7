//! `raftkv local --size 3|5`: a local cluster of separate member processes on etcd's
//! Procfile ports (2379/2380, 22379/22380, 32379/32380, …), each member's log lines
//! prefixed with its name, all stopped (SIGTERM, then SIGKILL) on Ctrl-C. The data lives
//! under `--data-dir`, so running it again brings the same cluster back.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Flags of `raftkv local`.
#[derive(Debug, Clone, Args)]
pub struct LocalFlags {
    /// Number of members (an odd number keeps the quorum math simple: 3 or 5).
    #[arg(long, default_value_t = 3)]
    pub size: usize,
    /// Directory holding every member's data directory.
    #[arg(long, default_value = "raftkv-local")]
    pub data_dir: PathBuf,
    /// Host the members listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Passed to every member.
    #[arg(long, default_value_t = 100)]
    pub heartbeat_interval: u64,
    /// Passed to every member.
    #[arg(long, default_value_t = 1000)]
    pub election_timeout: u64,
}

/// Member `i` (from 1): its name and client / peer ports, as in etcd's Procfile.
pub fn member_ports(i: usize) -> (String, u16, u16) {
    let base = if i == 1 { 0 } else { i as u16 * 10_000 };
    (format!("infra{i}"), base + 2379, base + 2380)
}

/// Runs the local cluster until Ctrl-C or SIGTERM.
pub async fn run(flags: LocalFlags) -> anyhow::Result<()> {
    if !(1..=6).contains(&flags.size) {
        bail!("--size must be between 1 and 6 (ports above 62380 do not fit the Procfile scheme)");
    }
    std::fs::create_dir_all(&flags.data_dir)
        .with_context(|| format!("creating {}", flags.data_dir.display()))?;
    let exe = std::env::current_exe().context("locating the raftkv binary")?;
    let host = &flags.host;
    let cluster: Vec<String> = (1..=flags.size)
        .map(|i| {
            let (name, _, peer) = member_ports(i);
            format!("{name}=http://{host}:{peer}")
        })
        .collect();
    let mut children: Vec<(String, Child)> = Vec::new();
    let mut endpoints = Vec::new();
    for i in 1..=flags.size {
        let (name, client, peer) = member_ports(i);
        let data_dir = flags.data_dir.join(format!("{name}.raftkv"));
        let mut cmd = Command::new(&exe);
        cmd.arg("--name")
            .arg(&name)
            .arg("--data-dir")
            .arg(&data_dir)
            .arg("--listen-client-urls")
            .arg(format!("http://{host}:{client}"))
            .arg("--advertise-client-urls")
            .arg(format!("http://{host}:{client}"))
            .arg("--listen-peer-urls")
            .arg(format!("http://{host}:{peer}"))
            .arg("--initial-advertise-peer-urls")
            .arg(format!("http://{host}:{peer}"))
            .arg("--initial-cluster")
            .arg(cluster.join(","))
            .arg("--initial-cluster-token")
            .arg("raftkv-local")
            .arg("--initial-cluster-state")
            .arg("new")
            .arg("--heartbeat-interval")
            .arg(flags.heartbeat_interval.to_string())
            .arg("--election-timeout")
            .arg(flags.election_timeout.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().with_context(|| format!("starting {name}"))?;
        prefix_lines(&name, child.stdout.take());
        prefix_lines(&name, child.stderr.take());
        endpoints.push(format!("{host}:{client}"));
        children.push((name, child));
    }
    eprintln!(
        "raftkv local: {} members, data in {}",
        flags.size,
        flags.data_dir.display()
    );
    for (i, (name, _)) in children.iter().enumerate() {
        eprintln!(
            "  {name}: client {} peer http://{host}:{}",
            endpoints[i],
            member_ports(i + 1).2
        );
    }
    eprintln!(
        "try: ETCDCTL_API=3 etcdctl --endpoints={} endpoint status -w table",
        endpoints.join(",")
    );
    eprintln!("Ctrl-C stops every member.");

    // A member that exits (or is killed) is reported; the others keep running, as with
    // etcd's goreman Procfile, so failover can be tried by hand.
    let watch_exits = async {
        let mut reported = vec![false; children.len()];
        loop {
            for (i, (name, child)) in children.iter_mut().enumerate() {
                if !reported[i]
                    && let Ok(Some(status)) = child.try_wait()
                {
                    eprintln!("raftkv local: {name} exited ({status})");
                    reported[i] = true;
                }
            }
            if reported.iter().all(|r| *r) {
                return "every member exited".to_string();
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let reason = tokio::select! {
        _ = crate::shutdown_signal() => "stop requested".to_string(),
        why = watch_exits => why,
    };
    eprintln!("raftkv local: {reason}; stopping every member");
    for (_, child) in &children {
        if let Some(pid) = child.id() {
            // SIGTERM: each member finishes in-flight requests and hands off leadership.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
        }
    }
    for (name, child) in children.iter_mut() {
        match tokio::time::timeout(Duration::from_secs(10), child.wait()).await {
            Ok(_) => {}
            Err(_) => {
                eprintln!("raftkv local: {name} did not stop in 10 s; killing it");
                let _ = child.kill().await;
            }
        }
    }
    Ok(())
}

fn prefix_lines(name: &str, pipe: Option<impl tokio::io::AsyncRead + Unpin + Send + 'static>) {
    let Some(pipe) = pipe else { return };
    let name = name.to_string();
    tokio::spawn(async move {
        let mut lines = BufReader::new(pipe).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            eprintln!("{name:>7} | {line}");
        }
    });
}
