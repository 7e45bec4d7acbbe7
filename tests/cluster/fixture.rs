//! The shared cluster fixture: N member processes on fresh loopback ports, started with
//! etcd's flags — so the same fixture runs raftkv or the real etcd 3.4 — plus SIGKILL,
//! SIGTERM, SIGSTOP/SIGCONT, restart, and the real etcdctl.
//!
//! Clusters run one at a time (a global lock): the machine has two cores, and fault timings
//! mean nothing when several clusters compete for them.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use raftkv_proto::etcdserverpb::StatusRequest;
use raftkv_proto::etcdserverpb::maintenance_client::MaintenanceClient;

/// Which server a cluster runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Server {
    /// This repository's `raftkv` binary.
    Raftkv,
    /// Debian's `etcd` 3.4.
    Etcd,
}

static ONE_CLUSTER_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Builds the `raftkv` and `raftkvctl` binaries once per test run (a no-op when they are up
/// to date) and returns the directory they are in.
///
/// The build names the whole workspace and its tests, so that Cargo resolves dependency
/// features as `cargo test --workspace` (`scripts/test`) just did and reuses everything it
/// built: `cargo build -p raftkvctl` alone resolved other features and recompiled about a
/// hundred crates on a fresh machine (133 s of CI).
fn built_bins() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args([
                "build",
                "--quiet",
                "--workspace",
                "--tests",
                "--bin",
                "raftkv",
                "--bin",
                "raftkvctl",
            ])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("running cargo build for the raftkv and raftkvctl binaries");
        assert!(status.success(), "building raftkv and raftkvctl failed");
        // target/<profile>/deps/cluster-xxxx -> target/<profile>/
        let exe = std::env::current_exe().expect("test binary path");
        exe.parent()
            .and_then(Path::parent)
            .expect("target dir")
            .to_path_buf()
    })
}

/// The `raftkv` binary, built on first use.
pub fn raftkv_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| built_bins().join("raftkv"))
}

/// The `raftkvctl` binary, built on first use.
pub fn raftkvctl_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| built_bins().join("raftkvctl"))
}

/// Runs raftkvctl with `args`.
pub fn raftkvctl(args: &[&str]) -> Output {
    Command::new(raftkvctl_bin())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("raftkvctl ran")
}

/// A port on 127.0.0.1 that is free now and was not handed out before in this process.
/// Ports come from 10000..30000, below Linux's ephemeral range (32768..60999), so outgoing
/// connections (etcdctl's, the members' own) never hold one of them.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let _ = NEXT.compare_exchange(
        0,
        10_000 + (std::process::id() % 2_000) * 10,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    loop {
        let port = NEXT.fetch_add(1, Ordering::SeqCst);
        let port = 10_000 + (port - 10_000) % 20_000;
        if TcpListener::bind(("127.0.0.1", port as u16)).is_ok() {
            return port as u16;
        }
    }
}

/// One member process.
pub struct Member {
    pub name: String,
    pub client_port: u16,
    pub peer_port: u16,
    /// The peer port other members dial: `peer_port`, or the fault proxy's in front of it.
    pub advertise_port: u16,
    /// A second client port serving `https://`, with [`Options::secure_client`].
    pub secure_port: Option<u16>,
    /// `https` with [`Options::secure_peer`], else `http`.
    pub peer_scheme: &'static str,
    pub data_dir: PathBuf,
    child: Option<Child>,
    args: Vec<String>,
    server: Server,
    log: PathBuf,
    nofile: Option<(u64, u64)>,
    env: Vec<(String, String)>,
}

impl Member {
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    /// The `https://` client URL, with [`Options::secure_client`].
    pub fn secure_url(&self) -> Option<String> {
        self.secure_port.map(|p| format!("https://127.0.0.1:{p}"))
    }

    pub fn peer_url(&self) -> String {
        format!("{}://127.0.0.1:{}", self.peer_scheme, self.peer_port)
    }

    pub fn advertise_url(&self) -> String {
        format!("{}://127.0.0.1:{}", self.peer_scheme, self.advertise_port)
    }

    /// The process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn spawn(&mut self) {
        let program: &Path = match self.server {
            Server::Raftkv => raftkv_bin(),
            Server::Etcd => Path::new("etcd"),
        };
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("member log");
        let mut command = Command::new(program);
        if let Some((soft, hard)) = self.nofile {
            use std::os::unix::process::CommandExt;
            // SAFETY: setrlimit is async-signal-safe, as pre_exec requires.
            unsafe {
                command.pre_exec(move || {
                    let limit = libc::rlimit {
                        rlim_cur: soft,
                        rlim_max: hard,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let child = command
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("RUST_BACKTRACE", "0")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {:?}: {e}", program));
        self.child = Some(child);
    }

    fn signal(&self, signal: libc::c_int) {
        if let Some(child) = &self.child {
            unsafe { libc::kill(child.id() as libc::pid_t, signal) };
        }
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// The member's whole log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The member's log so far (for failure messages).
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    /// Waits until the member's log holds `line`, for at most `limit`; panics with the
    /// log's tail if it never does.
    pub async fn wait_logged(&self, line: &str, limit: std::time::Duration) {
        let deadline = std::time::Instant::now() + limit;
        while !self.log_text().contains(line) {
            assert!(
                std::time::Instant::now() < deadline,
                "{} never logged {line:?}:\n{}",
                self.name,
                self.log_tail()
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
}

/// Options for starting a cluster. `{name}` in [`Options::extra_args`] stands for each
/// member's name.
#[derive(Debug, Clone)]
pub struct Options {
    pub heartbeat_ms: u64,
    pub election_ms: u64,
    pub snapshot_count: Option<u64>,
    /// raftkv's entries kept behind a snapshot (`--raftkv-snapshot-catchup-entries`). With
    /// a `snapshot_count` and no value here, raftkv members keep none, so that a member a
    /// few snapshots behind is sent one (etcd members keep their fixed 5,000).
    pub catchup_entries: Option<u64>,
    /// Route member-to-member traffic through a fault proxy per member ([`Cluster::net`]).
    pub proxied: bool,
    /// Start members with this (soft, hard) limit on open files.
    pub nofile: Option<(u64, u64)>,
    /// Extra flags for every member.
    pub extra_args: Vec<String>,
    /// Keep members' data dirs under this directory instead of the cluster's temporary one.
    pub data_root: Option<PathBuf>,
    /// Extra environment for every member (RUST_LOG, say).
    pub env: Vec<(String, String)>,
    /// Also listen (and advertise) on an `https://` client URL (TLS flags go in `extra_args`);
    /// the plain `http://` client port stays, for the fixture's own health checks.
    pub secure_client: bool,
    /// Peer URLs are `https://` (the `--peer-*` TLS flags go in `extra_args`).
    pub secure_peer: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            heartbeat_ms: 100,
            election_ms: 1000,
            snapshot_count: None,
            catchup_entries: None,
            proxied: false,
            nofile: None,
            extra_args: Vec::new(),
            data_root: None,
            env: Vec::new(),
            secure_client: false,
            secure_peer: false,
        }
    }
}

/// A running cluster; every process it started is killed when it is dropped.
pub struct Cluster {
    pub members: Vec<Member>,
    pub server: Server,
    pub token: String,
    opts: Options,
    /// The fault proxies, when started with `proxied`.
    pub net: Option<crate::proxy::Net>,
    dir: tempfile::TempDir,
    /// `None` for a cluster started beside another ([`Cluster::start_beside`]).
    _one_at_a_time: Option<MutexGuard<'static, ()>>,
}

impl Cluster {
    /// Starts `n` members of `server` and waits until they agree on a leader.
    pub async fn start(server: Server, n: usize, opts: Options) -> Cluster {
        Self::start_prepared(server, n, opts, |_, _, _| {}).await
    }

    /// Like [`Cluster::start`], but first calls `prepare(member, initial_cluster, token)` for
    /// every member (to restore a snapshot into its data dir, say).
    pub async fn start_prepared(
        server: Server,
        n: usize,
        opts: Options,
        prepare: impl Fn(&Member, &str, &str),
    ) -> Cluster {
        let guard = ONE_CLUSTER_AT_A_TIME
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        Self::start_holding(Some(guard), server, n, opts, prepare).await
    }

    /// Starts a second cluster while `_first` runs (the one-at-a-time lock `_first` holds
    /// covers both): for tests that need two at once, such as a mirror from one to the
    /// other. Drop it before `_first`.
    pub async fn start_beside(
        _first: &Cluster,
        server: Server,
        n: usize,
        opts: Options,
    ) -> Cluster {
        Self::start_holding(None, server, n, opts, |_, _, _| {}).await
    }

    async fn start_holding(
        guard: Option<MutexGuard<'static, ()>>,
        server: Server,
        n: usize,
        opts: Options,
        prepare: impl Fn(&Member, &str, &str),
    ) -> Cluster {
        let dir = tempfile::tempdir().expect("cluster dir");
        let token = format!("test-{}", free_port());
        let mut members: Vec<Member> = (1..=n)
            .map(|i| {
                let peer_port = free_port();
                Member {
                    name: format!("m{i}"),
                    client_port: free_port(),
                    peer_port,
                    advertise_port: if opts.proxied { free_port() } else { peer_port },
                    secure_port: opts.secure_client.then(free_port),
                    peer_scheme: if opts.secure_peer { "https" } else { "http" },
                    data_dir: opts
                        .data_root
                        .as_deref()
                        .unwrap_or(dir.path())
                        .join(format!("m{i}")),
                    child: None,
                    args: vec![],
                    server,
                    log: dir.path().join(format!("m{i}.log")),
                    nofile: opts.nofile,
                    env: opts.env.clone(),
                }
            })
            .collect();
        let net = if opts.proxied {
            Some(crate::proxy::Net::start(
                members.iter().map(|m| m.advertise_port).collect(),
                members.iter().map(|m| m.peer_port).collect(),
            ))
        } else {
            None
        };
        let initial: Vec<String> = members
            .iter()
            .map(|m| format!("{}={}", m.name, m.advertise_url()))
            .collect();
        for m in &mut members {
            m.args = member_args(m, &initial.join(","), "new", &token, &opts);
            prepare(m, &initial.join(","), &token);
        }
        for (i, m) in members.iter_mut().enumerate() {
            m.spawn();
            if let Some(net) = &net {
                net.set_pid(i, m.pid());
            }
        }
        let cluster = Cluster {
            members,
            server,
            token,
            opts,
            net,
            dir,
            _one_at_a_time: guard,
        };
        cluster.wait_healthy(Duration::from_secs(30)).await;
        cluster
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// All client endpoints, comma-separated (etcdctl's --endpoints).
    pub fn endpoints(&self) -> String {
        self.members
            .iter()
            .map(Member::endpoint)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Endpoints of the members currently running.
    pub fn live_endpoints(&self) -> String {
        self.members
            .iter()
            .filter(|m| m.is_running())
            .map(Member::endpoint)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// SIGKILL.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(net) = &self.net {
            net.set_pid(i, None);
        }
    }

    /// kill -9 of every member, then all started again from their data; waits until they
    /// agree on a leader.
    pub async fn kill_and_restart_all(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
        for i in 0..self.members.len() {
            self.restart(i);
        }
        self.wait_healthy(Duration::from_secs(30)).await;
    }

    /// SIGTERM, then wait for the exit; returns the exit code.
    pub fn stop(&mut self, i: usize) -> Option<i32> {
        self.members[i].signal(libc::SIGTERM);
        let mut child = self.members[i].child.take()?;
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Member `i`'s exit code once its process has ended (`Some(None)`: killed by a
    /// signal); `None` while it runs.
    pub fn exited(&mut self, i: usize) -> Option<Option<i32>> {
        let child = self.members[i].child.as_mut()?;
        let status = child.try_wait().ok().flatten()?;
        self.members[i].child = None;
        Some(status.code())
    }

    /// SIGSTOP / SIGCONT.
    pub fn pause(&self, i: usize) {
        self.members[i].signal(libc::SIGSTOP);
    }

    pub fn resume(&self, i: usize) {
        self.members[i].signal(libc::SIGCONT);
    }

    /// Starts a stopped or killed member again with its data.
    /// Adds a flag to member `i`'s command line for its next (re)start.
    pub fn push_arg(&mut self, i: usize, arg: String) {
        self.members[i].args.push(arg);
    }

    pub fn restart(&mut self, i: usize) {
        assert!(!self.members[i].is_running(), "member {i} is running");
        self.members[i].spawn();
        if let Some(net) = &self.net {
            net.set_pid(i, self.members[i].pid());
        }
    }

    /// Gives stopped member `i` a new peer port for its next start (after `member update`
    /// moved it there); its data dir stays.
    pub fn set_peer_port(&mut self, i: usize, port: u16) {
        assert!(!self.members[i].is_running(), "member {i} is running");
        self.members[i].peer_port = port;
        self.members[i].advertise_port = port;
        let initial: Vec<String> = self
            .members
            .iter()
            .map(|m| format!("{}={}", m.name, m.advertise_url()))
            .collect();
        let m = &self.members[i];
        let args = member_args(m, &initial.join(","), "new", &self.token, &self.opts);
        self.members[i].args = args;
    }

    /// Adds a member process that joins with `--initial-cluster-state existing` (after
    /// `member add`); returns its index.
    pub fn spawn_joining(&mut self, name: &str, client_port: u16, peer_port: u16) -> usize {
        let mut m = Member {
            name: name.to_string(),
            client_port,
            peer_port,
            advertise_port: peer_port,
            secure_port: self.opts.secure_client.then(free_port),
            peer_scheme: if self.opts.secure_peer {
                "https"
            } else {
                "http"
            },
            data_dir: self.dir.path().join(name),
            child: None,
            args: vec![],
            server: self.server,
            log: self.dir.path().join(format!("{name}.log")),
            nofile: self.opts.nofile,
            env: self.opts.env.clone(),
        };
        let mut initial: Vec<String> = self
            .members
            .iter()
            .map(|m| format!("{}={}", m.name, m.advertise_url()))
            .collect();
        initial.push(format!("{name}={}", m.peer_url()));
        m.args = member_args(&m, &initial.join(","), "existing", &self.token, &self.opts);
        m.spawn();
        self.members.push(m);
        self.members.len() - 1
    }

    /// Status of member `i`, if it answers within a second.
    pub async fn status(&self, i: usize) -> Option<raftkv_proto::etcdserverpb::StatusResponse> {
        let url = format!("http://{}", self.members[i].endpoint());
        let fut = async {
            let mut client = MaintenanceClient::connect(url).await.ok()?;
            client
                .status(StatusRequest {})
                .await
                .ok()
                .map(|r| r.into_inner())
        };
        tokio::time::timeout(Duration::from_secs(1), fut)
            .await
            .ok()
            .flatten()
    }

    /// Member `i`'s id, as its Status header gives it (waiting up to 2 s for an answer).
    pub async fn member_id(&self, i: usize) -> u64 {
        for _ in 0..20 {
            if let Some(h) = self.status(i).await.and_then(|s| s.header) {
                return h.member_id;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("member {i} does not answer Status");
    }

    /// The index of the member that every running member names as leader.
    pub async fn leader(&self) -> Option<usize> {
        let mut leader_id = None;
        for (i, m) in self.members.iter().enumerate() {
            if !m.is_running() {
                continue;
            }
            let status = self.status(i).await?;
            if status.leader == 0 || leader_id.is_some_and(|l| l != status.leader) {
                return None;
            }
            leader_id = Some(status.leader);
        }
        let leader_id = leader_id?;
        for (i, m) in self.members.iter().enumerate() {
            if m.is_running()
                && self
                    .status(i)
                    .await
                    .and_then(|s| s.header)
                    .is_some_and(|h| h.member_id == leader_id)
            {
                return Some(i);
            }
        }
        None
    }

    /// Waits until every running member names the same leader.
    pub async fn wait_healthy(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if self.leader().await.is_some() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let logs: Vec<String> = self
            .members
            .iter()
            .map(|m| format!("--- {}:\n{}", m.name, m.log_tail()))
            .collect();
        panic!(
            "cluster did not become healthy in {limit:?}\n{}",
            logs.join("\n")
        );
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.resume(i);
            self.kill(i);
        }
    }
}

fn member_args(m: &Member, initial: &str, state: &str, token: &str, opts: &Options) -> Vec<String> {
    let client_urls = std::iter::once(format!("http://127.0.0.1:{}", m.client_port))
        .chain(m.secure_url())
        .collect::<Vec<_>>()
        .join(",");
    let mut args = vec![
        "--name".into(),
        m.name.clone(),
        "--data-dir".into(),
        m.data_dir.display().to_string(),
        "--listen-client-urls".into(),
        client_urls.clone(),
        "--advertise-client-urls".into(),
        client_urls,
        "--listen-peer-urls".into(),
        m.peer_url(),
        "--initial-advertise-peer-urls".into(),
        m.advertise_url(),
        "--initial-cluster".into(),
        initial.to_string(),
        "--initial-cluster-state".into(),
        state.into(),
        "--initial-cluster-token".into(),
        token.into(),
        "--heartbeat-interval".into(),
        opts.heartbeat_ms.to_string(),
        "--election-timeout".into(),
        opts.election_ms.to_string(),
    ];
    if let Some(n) = opts.snapshot_count {
        args.extend(["--snapshot-count".into(), n.to_string()]);
    }
    let catchup = opts
        .catchup_entries
        .or(opts.snapshot_count.map(|_| 0))
        .filter(|_| matches!(m.server, Server::Raftkv));
    if let Some(n) = catchup {
        args.push(format!("--raftkv-snapshot-catchup-entries={n}"));
    }
    // `{name}` in an extra flag is the member's name (its own certificate files, say).
    args.extend(opts.extra_args.iter().map(|a| a.replace("{name}", &m.name)));
    args
}

/// Runs `cmd` to completion, feeding it `stdin` if given (else an empty stdin).
pub fn run_with_stdin(mut cmd: Command, stdin: Option<&str>) -> Output {
    use std::io::Write;
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("starting {cmd:?}: {e}"));
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("piped stdin")
            .write_all(input.as_bytes())
            .expect("writing stdin");
    }
    child.wait_with_output().expect("waiting for the command")
}

/// Runs the real etcdctl (v3 API, installed by scripts/setup) with `args`.
pub fn etcdctl(endpoints: &str, args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new("etcdctl");
    cmd.env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoints}"))
        .args(args);
    run_with_stdin(cmd, stdin)
}

/// Fails the test with every difference listed, if there is any.
pub fn assert_no_differences(differences: &[String]) {
    assert!(
        differences.is_empty(),
        "{} differences:\n{}",
        differences.len(),
        differences.join("\n")
    );
}

/// etcdctl's stdout, asserting success.
pub fn etcdctl_ok(endpoints: &str, args: &[&str]) -> String {
    let out = etcdctl(endpoints, args, None);
    assert!(
        out.status.success(),
        "etcdctl {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A txn nested `levels` deep through its success branch whose innermost level holds
/// `inner` (a put of `key`, say, or nothing).
pub fn nested_txn(
    levels: usize,
    inner: Vec<raftkv_proto::etcdserverpb::RequestOp>,
) -> raftkv_proto::etcdserverpb::TxnRequest {
    use raftkv_proto::etcdserverpb::{RequestOp, TxnRequest, request_op};
    let mut txn = TxnRequest {
        success: inner,
        ..Default::default()
    };
    for _ in 1..levels {
        txn = TxnRequest {
            success: vec![RequestOp {
                request: Some(request_op::Request::RequestTxn(txn)),
            }],
            ..Default::default()
        };
    }
    txn
}

/// A txn op that puts `value` at `key`.
pub fn put_op(key: &str, value: &str) -> raftkv_proto::etcdserverpb::RequestOp {
    use raftkv_proto::etcdserverpb::{PutRequest, RequestOp, request_op};
    RequestOp {
        request: Some(request_op::Request::RequestPut(PutRequest {
            key: key.as_bytes().to_vec().into(),
            value: value.as_bytes().to_vec().into(),
            ..Default::default()
        })),
    }
}

/// The member's non-zero `grpc_server_*` series for `service` in `/metrics`, each with its
/// labels in name order (whatever order the server writes them in), sorted.
pub fn grpc_server_counts(endpoint: &str, service: &str) -> Vec<String> {
    let out = Command::new("curl")
        .args(["-s", &format!("http://{endpoint}/metrics")])
        .output()
        .expect("curl (scripts/setup installs it)");
    let service = format!("grpc_service=\"{service}\"");
    let mut lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("grpc_server_") && l.contains(&service) && !l.ends_with(" 0"))
        .map(|l| {
            let (name, rest) = l.split_once('{').unwrap_or((l, ""));
            let (labels, value) = rest.split_once("} ").unwrap_or((rest, ""));
            let mut labels: Vec<&str> = labels.split(',').collect();
            labels.sort_unstable();
            format!("{name}{{{}}} {value}", labels.join(","))
        })
        .collect();
    lines.sort();
    lines
}

/// The real etcdctl (v3 API) or, with `raftkvctl`, this repository's raftkvctl, for tests
/// that run the same steps through both.
pub fn ctl_command(raftkvctl: bool) -> Command {
    if raftkvctl {
        return Command::new(raftkvctl_bin());
    }
    let mut cmd = Command::new("etcdctl");
    cmd.env("ETCDCTL_API", "3");
    cmd
}
